/* fuzz_http1.c: libFuzzer harness for the http framing (HS_FRAME_HTTP,
 * src/http1.c), driven the way a connection drives it.
 *
 * Input: a 6-byte header, then the stream.
 *   h[0]      max_frame: 1 + h[0] * 4 (up to 1021), or 1 << 20 when 255
 *   h[1]      options: bit 0 continue; bits 1..2 max_head (0, 24, 60,
 *             200); bits 3..4 max_line (0, 10, 30, 100); bits 5..6
 *             max_headers (0, 1, 3, 8)
 *   h[2..4]   read boundaries: cut i at h[2+i] * (n + 1) / 256
 *   h[5]      reserved
 *
 * The stream is fed whole, as reads ending at the three cuts, and one byte
 * per read. With the continue option an interim head may come first when
 * a request's body is cut; without it all three ways must give the same
 * requests (head fields, headers, body) and end the same way (the same
 * refusal). With it, the ways must agree once interim heads are left out.
 * Each delivered message is checked: it lies inside the buffer, its head
 * parses again (hs_http1_head with no limits, as the host layer does) with
 * the same header count as any limit allowed, a complete message's body is
 * the head's declared length for Content-Length, and a de-chunked body
 * never exceeds max_frame. Any mismatch calls abort().
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (spec/fuzz/CMakeLists.txt,
 * -DHS_FUZZ=ON).
 */
#include "frame.h"
#include "http1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR 6

typedef struct out {
  char *s;
  size_t n, cap;
  int end;         /* HS_FRAME_MORE, _TOOBIG or _BAD */
  const char *why; /* the refusal */
} out_t;

static void put(out_t *o, const void *p, size_t n) {
  if (o->cap - o->n < n + 1) {
    while (o->cap - o->n < n + 1) o->cap = o->cap ? o->cap * 2 : 256;
    o->s = realloc(o->s, o->cap);
    if (!o->s) abort();
  }
  memcpy(o->s + o->n, p, n);
  o->n += n;
}

static void put_size(out_t *o, size_t v) { put(o, &v, sizeof v); }

static void on_header(void *ud, const char *name, size_t nlen, const char *v, size_t vlen) {
  out_t *o = ud;
  put_size(o, nlen);
  put(o, name, nlen);
  put_size(o, vlen);
  put(o, v, vlen);
}

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "fuzz_http1: %s\n", what);
    abort();
  }
}

/* Record a delivered message m[0, len); interim heads only when keep. */
static void record(out_t *o, const hs_framer_t *f, size_t max, const char *m, size_t len,
                   int keep_interim) {
  hs_http1_limits_t none = {SIZE_MAX, SIZE_MAX, HS_HTTP1_MAX_HEADERS_CAP, SIZE_MAX};
  hs_http1_limits_t lim;
  hs_http1_limits(f, max, &lim);
  hs_http1_req_t req;
  const char *why = NULL;
  out_t h = {0};
  check(hs_http1_head(m, len, &none, &req, on_header, &h, &why) == 0, "a delivered head refused");
  check(req.nheaders <= lim.max_headers, "more headers than max_headers");
  check(req.head_size <= lim.max_head, "a head over max_head");
  if (!req.complete) {
    check(f->http_continue && req.expect_continue && req.body != HS_HTTP1_BODY_NONE,
          "an interim head that was not asked for");
    check(req.head_size == len, "an interim head with more than the head");
    if (!keep_interim) {
      free(h.s);
      return;
    }
  } else {
    size_t body = len - req.head_len;
    check(body <= lim.max_body, "a body over max_frame");
    if (req.body == HS_HTTP1_BODY_LENGTH)
      check(body == req.length, "a body not its Content-Length");
    if (req.body == HS_HTTP1_BODY_NONE) check(body == 0, "a body where none was declared");
  }
  put_size(o, req.complete);
  put_size(o, req.method_len);
  put(o, m, req.method_len);
  put(o, m + req.target_off, req.target_len);
  put_size(o, (size_t)req.minor);
  if (h.n) put(o, h.s, h.n);
  if (req.complete) put(o, m + req.head_len, len - req.head_len);
  put_size(o, 0xfeedu);
  free(h.s);
}

static void drive(const hs_framer_t *f, size_t max, const char *s, size_t n, const size_t *cuts,
                  size_t ncuts, int keep_interim, out_t *o) {
  char *buf = malloc(n + 1);
  size_t have = 0, fed = 0, rounds = 0;
  hs_scan_t scan = {0, 0};
  if (!buf) abort();
  o->end = HS_FRAME_MORE;
  o->why = NULL;
  for (size_t c = 0; c < ncuts; c++) {
    if (cuts[c] < fed) continue;
    memcpy(buf + have, s + fed, cuts[c] - fed);
    have += cuts[c] - fed;
    fed = cuts[c];
    for (;;) {
      hs_frame_t fr = {0, 0, 0, NULL};
      hs_scan_t before = scan;
      int r = hs_frame_next(f, buf, have, max, 0, &scan, &fr);
      check(++rounds < 4 * n + 16, "the framer goes round in circles");
      if (r == HS_FRAME_MORE) break;
      if (r < 0) {
        check(fr.why != NULL, "a refusal without a reason");
        o->end = r;
        o->why = fr.why;
        free(buf);
        return;
      }
      check(fr.consumed <= have, "consumed more than there is");
      if (r == HS_FRAME_SKIP) {
        check(fr.consumed > 0, "a skip of nothing");
      } else {
        check(r == HS_FRAME_OK, "an unknown answer");
        check(fr.off + fr.len <= have, "a frame past the input");
        size_t framed = fr.len;
        hs_frame_join(f, buf, &fr);
        check(fr.off == 0 && fr.len <= framed + (fr.consumed > framed ? 0 : 0) + fr.consumed,
              "join moved the message");
        check(fr.len == framed, "join and the framer disagree on the length");
        record(o, f, max, buf + fr.off, fr.len, keep_interim);
        if (fr.consumed == 0) {
          /* an interim head: the next call must not deliver it again */
          hs_frame_t again = {0, 0, 0, NULL};
          hs_scan_t s2 = scan;
          check(before.left == 0, "an interim head after the head");
          check(hs_frame_next(f, buf, have, max, 0, &s2, &again) == HS_FRAME_MORE,
                "an interim head not followed by waiting");
        }
      }
      if (fr.consumed) {
        memmove(buf, buf + fr.consumed, have - fr.consumed);
        have -= fr.consumed;
        scan = (hs_scan_t){0, 0};
      }
    }
  }
  free(buf);
}

static size_t limit_of(unsigned bits, const size_t *table) { return table[bits & 3]; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HDR) return 0;
  size_t max = data[0] == 255 ? (size_t)1 << 20 : 1 + (size_t)data[0] * 4;
  unsigned o = data[1];
  static const size_t heads[4] = {0, 24, 60, 200}, lines[4] = {0, 10, 30, 100},
                      counts[4] = {0, 1, 3, 8};
  hs_framer_t f;
  hs_framer_http(&f);
  if (hs_framer_set_http(&f, limit_of(o >> 1, heads), limit_of(o >> 3, lines),
                         limit_of(o >> 5, counts), (int)(o & 1)) != 0)
    abort();
  const char *s = (const char *)data + HDR;
  size_t n = size - HDR;
  size_t cuts[4];
  for (int i = 0; i < 3; i++) cuts[i] = (size_t)data[2 + i] * (n + 1) / 256;
  cuts[3] = n;
  /* ascending */
  for (int i = 0; i < 4; i++)
    for (int j = i + 1; j < 4; j++)
      if (cuts[j] < cuts[i]) {
        size_t t = cuts[i];
        cuts[i] = cuts[j];
        cuts[j] = t;
      }
  size_t *bytes = malloc((n + 1) * sizeof *bytes);
  if (!bytes) abort();
  for (size_t i = 0; i < n; i++) bytes[i] = i + 1;
  size_t whole[1] = {n};

  out_t a = {0}, b = {0}, c = {0};
  drive(&f, max, s, n, whole, 1, 0, &a);
  drive(&f, max, s, n, cuts, 4, 0, &b);
  drive(&f, max, s, n, bytes, n, 0, &c);
  check(a.n == b.n && (a.n == 0 || memcmp(a.s, b.s, a.n) == 0), "cut reads differ from whole");
  check(a.n == c.n && (a.n == 0 || memcmp(a.s, c.s, a.n) == 0), "byte reads differ from whole");
  check(a.end == b.end && a.end == c.end, "the ends differ");
  if (a.end != HS_FRAME_MORE) {
    check(strcmp(a.why, b.why) == 0 && strcmp(a.why, c.why) == 0, "the refusals differ");
  }
  free(a.s);
  free(b.s);
  free(c.s);
  free(bytes);
  return 0;
}
