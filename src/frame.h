/* frame.h: framers that cut a byte stream into messages. Pure C: they look
 * at a span of bytes and say where the next frame is; they own no memory. */
#ifndef HS_FRAME_H
#define HS_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef enum hs_frame_kind {
  HS_FRAME_RAW = 0, /* whatever is there */
  HS_FRAME_LINE,    /* up to LF, a CR before it stripped (keep_eol: both kept) */
  HS_FRAME_DELIM,   /* up to a delimiter, which is not delivered */
  HS_FRAME_LENGTH,  /* a length prefix and that many bytes */
  HS_FRAME_EXACT,   /* exactly n bytes */
  HS_FRAME_ALL,     /* everything until the peer closes */
  HS_FRAME_RESP,    /* a Redis command: an array of bulk strings, or a line */
  HS_FRAME_CRLF,    /* up to CRLF, which is not delivered; a bare LF is data */
  HS_FRAME_HTTP     /* an HTTP/1.x request: head and whole body (http1.h) */
} hs_frame_kind_t;

typedef enum hs_len_kind {
  HS_LEN_U8 = 0,
  HS_LEN_U16BE,
  HS_LEN_U16LE,
  HS_LEN_U32BE,
  HS_LEN_U32LE,
  HS_LEN_VARINT /* unsigned LEB128, as protobuf writes it: 7 bits a byte, the
                   least significant group first, the high bit set on every
                   byte but the last */
} hs_len_kind_t;

#define HS_DELIM_MAX 64   /* longest delimiter accepted */
#define HS_HEADER_MAX 255 /* most header bytes before a length prefix */
#define HS_VARINT_MAX 10  /* longest varint prefix: 64 bits */

/* Built only by the hs_framer_* functions below, which clear it first: two
 * framers are the same framing when their bytes are (memcmp). */
typedef struct hs_framer {
  hs_frame_kind_t kind;
  hs_len_kind_t len_kind;   /* HS_FRAME_LENGTH */
  size_t exact;             /* HS_FRAME_EXACT */
  size_t delim_len;         /* HS_FRAME_DELIM, HS_FRAME_CRLF */
  char delim[HS_DELIM_MAX]; /* HS_FRAME_DELIM, HS_FRAME_CRLF */
  size_t header;            /* HS_FRAME_LENGTH: bytes before the prefix, delivered */
  unsigned max_bytes;       /* HS_FRAME_LENGTH, varint: longest prefix accepted */
  int keep_eol;             /* HS_FRAME_LINE: deliver the LF (and a CR before it) */
  size_t max_head;          /* HS_FRAME_HTTP: head bytes (0: max_frame) */
  size_t max_line;          /* HS_FRAME_HTTP: request line bytes (0: max_head) */
  size_t max_headers;       /* HS_FRAME_HTTP: header lines (0: HS_HTTP1_MAX_HEADERS) */
  int http_continue;        /* HS_FRAME_HTTP: deliver an interim head for 100-continue */
} hs_framer_t;

/* Where a frame was found: payload at p[off, off+len), and consumed bytes
 * (header, prefix, payload and terminator) to drop from the stream. With a
 * header (a length framing's f->header) the message is the header at
 * p[0, f->header) followed by the payload: hs_frame_join makes it one span.
 * For HS_FRAME_BAD, why says what was wrong (a static string). */
typedef struct hs_frame {
  size_t off;
  size_t len;
  size_t consumed;
  const char *why;
} hs_frame_t;

/* What a framer learned about the bytes it could not frame yet, so that
 * bytes arriving in small reads are looked at once. Reset it to {0, 0}
 * after consuming a frame or switching framers. */
typedef struct hs_scan {
  size_t pos;  /* bytes already searched (line, delimiter), or the offset of
                  the next element of a RESP command */
  size_t left; /* RESP: elements of the command not yet complete; HTTP:
                  what the body still awaits (http1.h) */
} hs_scan_t;

/* Results of hs_frame_next. */
#define HS_FRAME_MORE 0      /* no complete frame yet */
#define HS_FRAME_OK 1        /* *out describes a frame */
#define HS_FRAME_TOOBIG (-1) /* the frame being received exceeds max_frame */
#define HS_FRAME_BAD (-2)    /* malformed input (an over-long varint, bad RESP) */
#define HS_FRAME_SKIP                               \
  2 /* nothing to deliver; drop out->consumed bytes \
       (a RESP empty command or blank inline line, \
       empty lines before an HTTP request) */

/* Look for the next frame in p[0, n). *scan carries what a previous call
 * learned about the same unconsumed bytes (see hs_scan_t). eof says the peer
 * sent its last byte: only HS_FRAME_ALL uses it. A frame whose message
 * (what is delivered: the payload, with a header or a kept end of line)
 * exceeds max_frame gives HS_FRAME_TOOBIG as soon as that is certain,
 * before it is all received (for RESP: the command's bytes on the wire). */
int hs_frame_next(const hs_framer_t *f, const char *p, size_t n, size_t max_frame, int eof,
                  hs_scan_t *scan, hs_frame_t *out);

/* Make the message of a frame that hs_frame_next (with f) found in p one
 * span: a header is moved forward over the length prefix to sit right
 * before the payload (the prefix bytes are overwritten: call it once, for a
 * frame being consumed). Afterwards the message is p[out->off, out->off +
 * out->len). Without a header it changes nothing. An http framing's
 * chunked request is de-chunked here, in place (http1.h). */
void hs_frame_join(const hs_framer_t *f, char *p, hs_frame_t *out);

/* Build framers; return 0, or -1 for an argument out of range. */
void hs_framer_raw(hs_framer_t *f);
void hs_framer_line(hs_framer_t *f);
void hs_framer_line_keep(hs_framer_t *f); /* a line with its LF (and CR): io.read "L" */
void hs_framer_crlf(hs_framer_t *f);
void hs_framer_all(hs_framer_t *f);
void hs_framer_resp(hs_framer_t *f);
void hs_framer_http(hs_framer_t *f); /* HTTP/1.x requests (http1.h) */
/* An http framing only: its limits (0 keeps the default; max_headers at
 * most HS_HTTP1_MAX_HEADERS_CAP) and whether a head that asks for
 * "100-continue" is delivered alone first. */
int hs_framer_set_http(hs_framer_t *f, size_t max_head, size_t max_line, size_t max_headers,
                       int cont);
int hs_framer_delim(hs_framer_t *f, const char *d, size_t len);
int hs_framer_exact(hs_framer_t *f, size_t n);
/* name is one of "u8", "u16be", "u16le", "u32be", "u32le", "varint" */
int hs_framer_length(hs_framer_t *f, const char *name);
/* A length framing only: n header bytes (0 to HS_HEADER_MAX) come before the
 * prefix and are delivered with the payload. */
int hs_framer_set_header(hs_framer_t *f, size_t n);
/* A varint length framing only: a prefix may take n bytes (1 to
 * HS_VARINT_MAX, the default); one more is a malformed frame. */
int hs_framer_set_max_bytes(hs_framer_t *f, size_t n);

/* A short description for logs and errors ("line", "length u16be"...). */
const char *hs_framer_name(const hs_framer_t *f);
/* The name with the options that differ from the defaults ("length varint
 * header 1 max_bytes 4"), written to buf (truncated to len); returns buf. */
const char *hs_framer_describe(const hs_framer_t *f, char *buf, size_t len);

/* The arguments of a RESP frame p[0, len) that hs_frame_next returned.
 * hs_resp_argc counts them. hs_resp_args calls fn for each in order; an
 * inline command's arguments are unquoted into scratch, which must hold
 * len bytes (a multibulk command's point into p, and scratch may be NULL).
 * Both return the count, or -1 for a frame hs_frame_next would refuse. */
typedef void (*hs_resp_arg_fn)(void *ud, const char *arg, size_t len);
long hs_resp_argc(const char *p, size_t len);
long hs_resp_args(const char *p, size_t len, char *scratch, hs_resp_arg_fn fn, void *ud);

#define HS_RESP_MAX_ARGS (1024 * 1024)       /* as Redis: "invalid multibulk length" */
#define HS_RESP_MAX_BULK (512 * 1024 * 1024) /* as Redis: "invalid bulk length" */
#define HS_RESP_MAX_INLINE (64 * 1024)       /* as Redis: "too big inline request" */

#endif
