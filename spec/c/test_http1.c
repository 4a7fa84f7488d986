/* test_http1.c: the http framing (HS_FRAME_HTTP, src/http1.c).
 *
 * A stream is driven the way conn.c drives a framer (hs_frame_next over the
 * unconsumed bytes, hs_frame_join, consume; the scan reset after bytes are
 * consumed), fed whole, one byte per read and in two reads at every
 * offset; every way must give the same requests and end the same way. A
 * request is recorded as a script would see it, from hs_http1_head over the
 * delivered message: "METHOD target 1.minor|name: value|...|body" (an
 * interim 100-continue head as "CONTINUE METHOD target ..."), then how the
 * stream ended ("MORE", or the refusal's words with "BAD"/"TOOBIG").
 */
#include "frame.h"
#include "http1.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_MAX 8192
#define ASSERT(x) ASSERT_TRUE(x)
#define ASSERT_STR_EQ(a, b)                            \
  do {                                                 \
    const char *sa_ = (a), *sb_ = (b);                 \
    ASSERT_MEM_EQ(sa_, strlen(sa_), sb_, strlen(sb_)); \
  } while (0)

typedef struct rec {
  char s[OUT_MAX];
  size_t n;
} rec_t;

static void put(rec_t *r, const char *p, size_t n) {
  ASSERT(r->n + n < OUT_MAX);
  memcpy(r->s + r->n, p, n);
  r->n += n;
  r->s[r->n] = 0;
}

static void puts_(rec_t *r, const char *s) { put(r, s, strlen(s)); }

static void on_header(void *ud, const char *name, size_t nlen, const char *v, size_t vlen) {
  rec_t *r = ud;
  puts_(r, "|");
  put(r, name, nlen);
  puts_(r, ": ");
  put(r, v, vlen);
}

/* Record the message m[0, len) of a delivered frame. */
static void record(rec_t *r, const char *m, size_t len) {
  hs_http1_limits_t lim = {SIZE_MAX, SIZE_MAX, HS_HTTP1_MAX_HEADERS_CAP, SIZE_MAX};
  hs_http1_req_t req;
  const char *why = NULL;
  rec_t h = {{0}, 0};
  ASSERT_EQ(hs_http1_head(m, len, &lim, &req, on_header, &h, &why), 0);
  char line[64];
  if (!req.complete) puts_(r, "CONTINUE ");
  put(r, m, req.method_len);
  puts_(r, " ");
  put(r, m + req.target_off, req.target_len);
  snprintf(line, sizeof line, " 1.%d", req.minor);
  puts_(r, line);
  put(r, h.s, h.n);
  if (req.complete) {
    puts_(r, "|");
    put(r, m + req.head_len, len - req.head_len);
  } else {
    ASSERT_EQ(req.head_size, len);
  }
  puts_(r, "\n");
}

/* Feed s[0, n) in reads cut at the offsets in cuts (ascending, ending with
 * n), as conn.c does; record the requests and the end. */
static void drive(const hs_framer_t *f, size_t max, const char *s, size_t n, const size_t *cuts,
                  size_t ncuts, rec_t *r) {
  char *buf = malloc(n + 1);
  size_t have = 0, fed = 0;
  hs_scan_t scan = {0, 0};
  r->n = 0;
  r->s[0] = 0;
  ASSERT(buf);
  for (size_t c = 0; c < ncuts; c++) {
    memcpy(buf + have, s + fed, cuts[c] - fed);
    have += cuts[c] - fed;
    fed = cuts[c];
    for (;;) {
      hs_frame_t fr = {0, 0, 0, NULL};
      int res = hs_frame_next(f, buf, have, max, 0, &scan, &fr);
      if (res == HS_FRAME_MORE) break;
      if (res < 0) {
        puts_(r, res == HS_FRAME_BAD ? "BAD " : "TOOBIG ");
        ASSERT(fr.why != NULL);
        puts_(r, fr.why);
        free(buf);
        return;
      }
      ASSERT(fr.consumed <= have);
      if (res == HS_FRAME_OK) {
        hs_frame_join(f, buf, &fr);
        ASSERT(fr.off + fr.len <= have);
        record(r, buf + fr.off, fr.len);
      } else {
        ASSERT_EQ(res, HS_FRAME_SKIP);
        ASSERT(fr.consumed > 0);
      }
      if (fr.consumed) {
        memmove(buf, buf + fr.consumed, have - fr.consumed);
        have -= fr.consumed;
        scan = (hs_scan_t){0, 0};
      }
    }
  }
  puts_(r, "MORE");
  free(buf);
}

/* Every way of cutting the stream gives want (whole, byte by byte, and two
 * reads at every offset). */
static void check_stream(const hs_framer_t *f, size_t max, const char *s, size_t n,
                         const char *want) {
  rec_t r;
  size_t one[1] = {n};
  drive(f, max, s, n, one, 1, &r);
  ASSERT_STR_EQ(r.s, want);
  size_t *cuts = malloc((n + 1) * sizeof *cuts);
  ASSERT(cuts);
  for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
  drive(f, max, s, n, cuts, n, &r);
  ASSERT_STR_EQ(r.s, want);
  for (size_t k = 0; k <= n; k++) {
    size_t two[2] = {k, n};
    drive(f, max, s, n, two, 2, &r);
    ASSERT_STR_EQ(r.s, want);
  }
  free(cuts);
}

#define STREAM(f, max, lit, want) check_stream((f), (max), lit, sizeof(lit) - 1, want)

static hs_framer_t http(void) {
  hs_framer_t f;
  hs_framer_http(&f);
  return f;
}

TEST(http1_simple_get) {
  hs_framer_t f = http();
  STREAM(&f, 65536, "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y:  v w \t\r\n\r\n",
         "GET /a?b=1 1.1|Host: x|X-Y: v w|\nMORE");
  ASSERT_STR_EQ(hs_framer_name(&f), "http");
}

TEST(http1_pipelined) {
  hs_framer_t f = http();
  STREAM(&f, 65536,
         "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
         "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
         "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
         "3;ext=1\r\nabc\r\n4 ; x\r\ndefg\r\n000\r\nX-Trailer: 1\r\n\r\n"
         "\r\n" /* an empty line between requests */
         "GET /x HTTP/1.0\n\n"
         "PUT /z HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
         "GET /partial HTTP/1.1\r\n",
         "GET / 1.1|Host: x|\n"
         "POST /echo 1.1|Content-Length: 5|hello\n"
         "POST /c 1.1|Transfer-Encoding: chunked|abcdefg\n"
         "GET /x 1.0|\n"
         "PUT /z 1.1|Content-Length: 0|\n"
         "MORE");
}

TEST(http1_chunked_binary_and_empty) {
  hs_framer_t f = http();
  STREAM(&f, 65536,
         "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"
         "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0\r\n\n3\r\r\nab\r\n0\r\n\r\n",
         "POST / 1.1|Transfer-Encoding: Chunked|\n"
         "POST / 1.1|Transfer-Encoding: chunked|0\r\n\n3\r\r\nab\n"
         "MORE");
}

TEST(http1_leading_empty_lines_and_lf_heads) {
  hs_framer_t f = http();
  STREAM(&f, 65536, "\r\n\n\r\nGET / HTTP/1.1\nA: 1\n\r\n", "GET / 1.1|A: 1|\nMORE");
}

TEST(http1_continue_interim) {
  hs_framer_t f = http();
  ASSERT_EQ(hs_framer_set_http(&f, 0, 0, 0, 1), 0);
  const char *head = "POST /e HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-Continue\r\n\r\n";
  size_t hn = strlen(head);
  char s[256];
  snprintf(s, sizeof s, "%shi", head);
  /* the head first, then the body in another read: an interim head first */
  size_t cuts[2] = {hn, hn + 2};
  rec_t r;
  drive(&f, 65536, s, hn + 2, cuts, 2, &r);
  ASSERT_STR_EQ(r.s,
                "CONTINUE POST /e 1.1|Content-Length: 2|Expect: 100-Continue\n"
                "POST /e 1.1|Content-Length: 2|Expect: 100-Continue|hi\nMORE");
  /* all at once: no interim */
  size_t one[1] = {hn + 2};
  drive(&f, 65536, s, hn + 2, one, 1, &r);
  ASSERT_STR_EQ(r.s, "POST /e 1.1|Content-Length: 2|Expect: 100-Continue|hi\nMORE");
  /* chunked too */
  const char *c =
      "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
      "2\r\nok\r\n0\r\n\r\n";
  size_t ch = strstr(c, "2\r\n") - c, cn = strlen(c);
  size_t ccuts[2] = {ch, cn};
  drive(&f, 65536, c, cn, ccuts, 2, &r);
  ASSERT_STR_EQ(r.s,
                "CONTINUE POST /c 1.1|Transfer-Encoding: chunked|Expect: 100-continue\n"
                "POST /c 1.1|Transfer-Encoding: chunked|Expect: 100-continue|ok\nMORE");
  /* without the option, and for HTTP/1.0, and for no body: never */
  hs_framer_t plain = http();
  drive(&plain, 65536, s, hn + 2, cuts, 2, &r);
  ASSERT_STR_EQ(r.s, "POST /e 1.1|Content-Length: 2|Expect: 100-Continue|hi\nMORE");
  const char *g = "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n";
  size_t gc[1] = {strlen(g)};
  drive(&f, 65536, g, strlen(g), gc, 1, &r);
  ASSERT_STR_EQ(r.s, "GET / 1.1|Expect: 100-continue|\nMORE");
  const char *old = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
  size_t oc[1] = {strlen(old)};
  drive(&f, 65536, old, strlen(old), oc, 1, &r);
  ASSERT_STR_EQ(r.s, "MORE");
}

/* One refusal: the stream ends in want, however it is cut. */
#define REFUSE(f, max, lit, want) STREAM((f), (max), lit, want)

TEST(http1_refusals_request_line) {
  hs_framer_t f = http();
  REFUSE(&f, 65536, "GARBAGE\r\n\r\n", "BAD malformed request line");
  REFUSE(&f, 65536, "GET  / HTTP/1.1\r\n\r\n", "BAD malformed request line");
  REFUSE(&f, 65536, "GET / HTTP/1.1 \r\n\r\n", "BAD malformed request line");
  REFUSE(&f, 65536, "GET / HTTP/1.10\r\n\r\n", "BAD malformed request line");
  REFUSE(&f, 65536, "GET\t/ HTTP/1.1\r\n\r\n", "BAD malformed request line");
  REFUSE(&f, 65536, "GET / http/1.1\r\n\r\n", "BAD malformed request line");
  REFUSE(&f, 65536, "\rGET / HTTP/1.1\r\n\r\n", "BAD malformed request line");
  REFUSE(&f, 65536, "G(T / HTTP/1.1\r\n\r\n", "BAD malformed method");
  REFUSE(&f, 65536, "GET /\x01 HTTP/1.1\r\n\r\n", "BAD malformed request target");
  REFUSE(&f, 65536, "GET /\x7f HTTP/1.1\r\n\r\n", "BAD malformed request target");
  REFUSE(&f, 65536, "GET / HTTP/7.0\r\n\r\n", "BAD unsupported HTTP version");
  REFUSE(&f, 65536, "GET / HTTP/2.0\r\n\r\n", "BAD unsupported HTTP version");
}

TEST(http1_refusals_headers) {
  hs_framer_t f = http();
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
         "BAD obsolete header line folding");
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\n\tx: 1\r\n\r\n", "BAD obsolete header line folding");
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\nNo colon here\r\n\r\n", "BAD malformed header line");
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\nA : 1\r\n\r\n", "BAD malformed header line");
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\n: 1\r\n\r\n", "BAD malformed header line");
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\nA\x80: 1\r\n\r\n", "BAD malformed header line");
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\nA: x\ry\r\n\r\n", "BAD malformed header value");
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\nA: x\0y\r\n\r\n", "BAD malformed header value");
  REFUSE(&f, 65536, "GET / HTTP/1.1\r\nA: x\r\r\n\r\n", "BAD malformed header value");
  /* other control bytes in a value pass, as in the Lua parser */
  STREAM(&f, 65536, "GET / HTTP/1.1\r\nA: x\x01y\r\n\r\n", "GET / 1.1|A: x\x01y|\nMORE");
}

TEST(http1_refusals_body_headers) {
  hs_framer_t f = http();
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
         "BAD conflicting Content-Length headers");
  STREAM(&f, 65536, "POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx",
         "POST / 1.1|Content-Length: 1|content-length: 1|x\nMORE");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
         "BAD both Transfer-Encoding and Content-Length");
  REFUSE(&f, 65536, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
         "BAD Transfer-Encoding in an HTTP/1.0 request");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
         "BAD bad Transfer-Encoding");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
         "BAD bad Transfer-Encoding");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", "BAD bad Transfer-Encoding");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
         "BAD unsupported Transfer-Encoding");
  REFUSE(&f, 65536,
         "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
         "BAD unsupported Transfer-Encoding");
  /* joined as the Lua parser joins them: ", chunked" is one coding */
  STREAM(&f, 65536, "POST / HTTP/1.1\r\nTransfer-Encoding: , chunked ,\r\n\r\n0\r\n\r\n",
         "POST / 1.1|Transfer-Encoding: , chunked ,|\nMORE");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n",
         "BAD bad Transfer-Encoding"); /* "chunked, ": the last coding is "" */
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "BAD bad Content-Length");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "BAD bad Content-Length");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", "BAD bad Content-Length");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", "BAD bad Content-Length");
  REFUSE(&f, 65536, "POST / HTTP/1.1\r\nContent-Length: 1234567890123456\r\n\r\n",
         "BAD bad Content-Length");
  STREAM(&f, 65536, "POST / HTTP/1.1\r\nContent-Length: 000\r\n\r\n",
         "POST / 1.1|Content-Length: 000|\nMORE");
}

TEST(http1_refusals_chunks) {
  hs_framer_t f = http();
#define CH "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
  REFUSE(&f, 65536, CH "zz\r\n", "BAD malformed chunk size");
  REFUSE(&f, 65536, CH "\r\n", "BAD malformed chunk size");
  REFUSE(&f, 65536, CH " 3\r\nabc\r\n", "BAD malformed chunk size");
  REFUSE(&f, 65536, CH "3x\r\nabc\r\n", "BAD malformed chunk size");
  REFUSE(&f, 65536, CH "3\r\nabcXY", "BAD chunk data not followed by CRLF");
  REFUSE(&f, 65536, CH "3\r\nabc\rY", "BAD chunk data not followed by CRLF");
  REFUSE(&f, 65536, CH "3\r\nabc\n0\r\n\r\n", "BAD chunk data not followed by CRLF");
  REFUSE(&f, 65536, CH "1234567890abc\r\n", "TOOBIG body too large");
  STREAM(&f, 65536, CH "0000000000000000001\r\nx\r\n0\r\n\r\n",
         "POST / 1.1|Transfer-Encoding: chunked|x\nMORE");
#undef CH
}

TEST(http1_limits) {
  hs_framer_t f = http();
  ASSERT_EQ(hs_framer_set_http(&f, 40, 20, 2, 0), 0);
  STREAM(&f, 100, "GET /123456 HTTP/1.1\r\n\r\n", "GET /123456 1.1|\nMORE"); /* 20 bytes */
  REFUSE(&f, 100, "GET /1234567 HTTP/1.1\r\n\r\n", "TOOBIG request line too long");
  REFUSE(&f, 100, "GET / HTTP/1.1\r\nA: 12345678901234567890\r\n\r\n",
         "TOOBIG request head too large");
  STREAM(&f, 100, "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", "GET / 1.1|A: 1|B: 2|\nMORE");
  REFUSE(&f, 100, "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", "BAD too many headers");
  /* the body: max_frame (which caps the head too) */
  hs_framer_t b = http();
#define D30 "012345678901234567890123456789"
  STREAM(&b, 60, "POST / HTTP/1.1\r\nContent-Length: 60\r\n\r\n" D30 D30,
         "POST / 1.1|Content-Length: 60|" D30 D30 "\nMORE");
  REFUSE(&b, 60, "POST / HTTP/1.1\r\nContent-Length: 61\r\n\r\n", "TOOBIG body too large");
  REFUSE(&b, 60, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\n" D30 "\r\n1f\r\n",
         "TOOBIG body too large");
  STREAM(&b, 60,
         "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\n" D30 "\r\n1E\r\n" D30
         "\r\n0\r\n\r\n",
         "POST / 1.1|Transfer-Encoding: chunked|" D30 D30 "\nMORE");
#undef D30
  /* max_head falls to max_frame when that is lower */
  hs_framer_t g = http();
  REFUSE(&g, 20, "GET / HTTP/1.1\r\nA: 1234\r\n\r\n", "TOOBIG request head too large");
}

TEST(http1_limits_found_early) {
  hs_framer_t f = http();
  ASSERT_EQ(hs_framer_set_http(&f, 64, 16, 0, 0), 0);
  hs_frame_t out = {0, 0, 0, NULL};
  hs_scan_t scan = {0, 0};
  /* a request line with no end in sight: refused before the head ends */
  const char *l = "GET /aaaaaaaaaaaaaaaaaaaaaa";
  ASSERT_EQ(hs_frame_next(&f, l, 17, 1000, 0, &scan, &out), HS_FRAME_MORE);
  ASSERT_EQ(hs_frame_next(&f, l, 18, 1000, 0, &scan, &out), HS_FRAME_TOOBIG);
  ASSERT_STR_EQ(out.why, "request line too long");
  /* a head with no end in sight */
  char h[128];
  memset(h, 'a', sizeof h);
  memcpy(h, "GET / HTTP/1.1\r\nX: ", 19);
  scan = (hs_scan_t){0, 0};
  ASSERT_EQ(hs_frame_next(&f, h, 65, 1000, 0, &scan, &out), HS_FRAME_MORE);
  ASSERT_EQ(hs_frame_next(&f, h, 66, 1000, 0, &scan, &out), HS_FRAME_TOOBIG);
  ASSERT_STR_EQ(out.why, "request head too large");
  /* a chunk-size line or a trailer line that does not end */
  char c[8192];
  const char *ch = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  size_t cn = strlen(ch);
  memcpy(c, ch, cn);
  memset(c + cn, '0', sizeof c - cn);
  scan = (hs_scan_t){0, 0};
  hs_framer_t g = http();
  ASSERT_EQ(hs_frame_next(&g, c, cn + HS_HTTP1_CHUNK_LINE + 1, 100000, 0, &scan, &out),
            HS_FRAME_MORE);
  ASSERT_EQ(hs_frame_next(&g, c, cn + HS_HTTP1_CHUNK_LINE + 2, 100000, 0, &scan, &out),
            HS_FRAME_BAD);
  ASSERT_STR_EQ(out.why, "chunk line too long");
}

TEST(http1_trailers) {
  hs_framer_t f = http();
  char s[4096];
  size_t n =
      (size_t)snprintf(s, sizeof s, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
  for (int i = 0; i < HS_HTTP1_MAX_TRAILERS; i++)
    n += (size_t)snprintf(s + n, sizeof s - n, "T: %d\r\n", i);
  memcpy(s + n, "\r\n", 2);
  check_stream(&f, 65536, s, n + 2, "POST / 1.1|Transfer-Encoding: chunked|\nMORE");
  n += (size_t)snprintf(s + n, sizeof s - n, "T: x\r\n\r\n");
  rec_t r;
  size_t one[1] = {n};
  drive(&f, 65536, s, n, one, 1, &r);
  ASSERT_STR_EQ(r.s, "BAD too many trailer lines");
}

/* The scan keeps what it learned: bytes arriving one at a time are looked
 * at once (the head search resumes where it stopped; a body waits at its
 * end). */
TEST(http1_scan_is_incremental) {
  hs_framer_t f = http();
  const char *s = "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
  size_t hn = strlen(s) - 3;
  hs_scan_t scan = {0, 0};
  hs_frame_t out = {0, 0, 0, NULL};
  for (size_t i = 1; i < hn; i++) {
    ASSERT_EQ(hs_frame_next(&f, s, i, 1000, 0, &scan, &out), HS_FRAME_MORE);
    ASSERT_EQ(scan.pos, i);
    ASSERT_EQ(scan.left, 0);
  }
  ASSERT_EQ(hs_frame_next(&f, s, hn, 1000, 0, &scan, &out), HS_FRAME_MORE);
  ASSERT(scan.left != 0);
  ASSERT_EQ(scan.pos, hn + 3);
  ASSERT_EQ(hs_frame_next(&f, s, hn + 2, 1000, 0, &scan, &out), HS_FRAME_MORE);
  ASSERT_EQ(hs_frame_next(&f, s, hn + 3, 1000, 0, &scan, &out), HS_FRAME_OK);
  ASSERT_EQ(out.len, hn + 3);
  ASSERT_EQ(out.consumed, hn + 3);
}

TEST(http1_describe) {
  hs_framer_t f = http();
  char buf[128];
  ASSERT_STR_EQ(hs_framer_describe(&f, buf, sizeof buf), "http");
  ASSERT_EQ(hs_framer_set_http(&f, 100, 50, 10, 1), 0);
  ASSERT_STR_EQ(hs_framer_describe(&f, buf, sizeof buf),
                "http max_head 100 max_line 50 max_headers 10 continue");
  ASSERT_EQ(hs_framer_set_http(&f, 0, 0, HS_HTTP1_MAX_HEADERS_CAP + 1, 0), -1);
  hs_framer_t l;
  hs_framer_line(&l);
  ASSERT_EQ(hs_framer_set_http(&l, 1, 1, 1, 0), -1);
}

const hs_test_t hs_http1_tests[] = {
    TEST_ENTRY(http1_simple_get),
    TEST_ENTRY(http1_pipelined),
    TEST_ENTRY(http1_chunked_binary_and_empty),
    TEST_ENTRY(http1_leading_empty_lines_and_lf_heads),
    TEST_ENTRY(http1_continue_interim),
    TEST_ENTRY(http1_refusals_request_line),
    TEST_ENTRY(http1_refusals_headers),
    TEST_ENTRY(http1_refusals_body_headers),
    TEST_ENTRY(http1_refusals_chunks),
    TEST_ENTRY(http1_limits),
    TEST_ENTRY(http1_limits_found_early),
    TEST_ENTRY(http1_trailers),
    TEST_ENTRY(http1_scan_is_incremental),
    TEST_ENTRY(http1_describe),
    TEST_END,
};
