/* http1.h: the HTTP/1.x request framer (HS_FRAME_HTTP) and its head parser.
 * Pure C, socket layer: no libuv, no Lua. frame.c calls hs_http1_next and
 * hs_http1_join for a framer of kind HS_FRAME_HTTP; the host layer
 * (lconn.c) walks a delivered message with hs_http1_head to build the
 * request table.
 *
 * A message is one request: the head (request line, header lines, blank
 * line) followed by the body, whole. A Content-Length body is framed where
 * it lies; a chunked body is de-chunked in place by hs_http1_join (chunk
 * sizes, extensions and trailers dropped), so the message is always
 * [head][body]. With the framer's `cont` option, a head that asks for
 * "Expect: 100-continue" and whose body is not all here yet is first
 * delivered alone, without its blank line (an interim message that consumes
 * nothing), so that the host can answer "100 Continue"; the whole request
 * follows as usual.
 *
 * Refusals: HS_FRAME_BAD or HS_FRAME_TOOBIG with out->why one of the
 * strings below (static), the same words as lua/hotsock/http.lua's
 * parser. */
#ifndef HS_HTTP1_H
#define HS_HTTP1_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

#define HS_HTTP1_MAX_HEADERS 100       /* header lines, by default */
#define HS_HTTP1_MAX_HEADERS_CAP 10000 /* the most max_headers may say */
#define HS_HTTP1_CHUNK_LINE 4096       /* a chunk-size line (with extensions) */
#define HS_HTTP1_MAX_TRAILERS 100      /* trailer lines of a chunked body */

/* Body kinds. */
#define HS_HTTP1_BODY_NONE 0
#define HS_HTTP1_BODY_LENGTH 1
#define HS_HTTP1_BODY_CHUNKED 2

/* The limits a framer applies, from its options and max_frame. */
typedef struct hs_http1_limits {
  size_t max_head;    /* request line and header lines, with their line ends */
  size_t max_line;    /* the request line, without its line end */
  size_t max_headers; /* header lines */
  size_t max_body;    /* body bytes (de-chunked) */
} hs_http1_limits_t;

void hs_http1_limits(const hs_framer_t *f, size_t max_frame, hs_http1_limits_t *lim);

/* What hs_http1_head found in a head. Offsets are from the head's start. */
typedef struct hs_http1_req {
  size_t method_len;             /* the method is p[0, method_len) */
  size_t target_off, target_len; /* the request target */
  int minor;                     /* HTTP/1.minor */
  size_t nheaders;               /* header lines */
  size_t head_size;              /* request line and header lines, line ends included */
  size_t head_len;               /* the same and the blank line: where the body starts */
  int complete;                  /* the blank line was seen (else: an interim head) */
  int body;                      /* HS_HTTP1_BODY_* */
  uint64_t length;               /* HS_HTTP1_BODY_LENGTH: Content-Length */
  int expect_continue;           /* HTTP/1.1 and "Expect: 100-continue" */
} hs_http1_req_t;

/* Called for each header line: the name as sent (not lower-cased) and the
 * value without surrounding spaces and tabs. */
typedef void (*hs_http1_header_fn)(void *ud, const char *name, size_t nlen, const char *value,
                                   size_t vlen);

/* Parse the head at p[0, n): a request line and header lines, each ending
 * in LF (a CR before it is dropped), up to and including the blank line if
 * it is there (a head without one parses with complete = 0). The bytes
 * after the blank line are not looked at. Checks everything the framer
 * refuses (request line, methods, targets, version, obs-fold, names,
 * values, header count, Content-Length and Transfer-Encoding); fn (may be
 * NULL) is called for every header line in order. 0, or HS_FRAME_BAD /
 * HS_FRAME_TOOBIG with *why. */
int hs_http1_head(const char *p, size_t n, const hs_http1_limits_t *lim, hs_http1_req_t *req,
                  hs_http1_header_fn fn, void *ud, const char **why);

/* The framer: as hs_frame_next for a framer of kind HS_FRAME_HTTP. scan:
 * left == 0 while the head is searched (pos: bytes searched), else the low
 * two bits say what is awaited (a Content-Length body ending at pos, a
 * chunk-size line or a trailer line at pos), bits 2..8 count trailer lines
 * and the rest is the body received so far. */
int hs_http1_next(const hs_framer_t *f, const char *p, size_t n, size_t max_frame, hs_scan_t *scan,
                  hs_frame_t *out);

/* Make a chunked request's message one span [head][body] (chunk framing
 * moved out); other messages are left alone. */
void hs_http1_join(char *p, hs_frame_t *out);

#endif
