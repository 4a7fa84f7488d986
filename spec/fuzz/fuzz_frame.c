/* fuzz_frame.c: libFuzzer harness for the framers (src/frame.c) driven the
 * way a connection drives them, over an hs_buf_t (src/buf.c).
 *
 * Input: a 12-byte header, then the stream.
 *   h[0]      framer: % 8 -> raw, line, delimiter, length, exact, all, crlf,
 *             L (a line with its end kept)
 *   h[1]      parameter: delimiter length 1 + h[1] % 4; length kind h[1] % 6
 *             (u8 u16be u16le u32be u32le varint), with (h[1] / 6) % 4
 *             header bytes before the prefix and, for varint, max_bytes
 *             (h[1] / 24) % 11 (0: the default, 10); exact n = 1 + h[1]
 *   h[2..3]   max_frame = 1 + (h[2] | h[3] << 8) % 300
 *   h[4..7]   delimiter bytes (the first 1..4 are used)
 *   h[8..11]  read boundaries: cut i at h[8+i] * (n + 1) / 256; and the
 *             slack (h[8] ^ h[11]) % 40 - 8 of padded reads (see conn_feed)
 *
 * The stream is fed whole, as reads ending at the four cuts (padded, so that
 * the buffer compacts and grows), and one byte per read, each followed by
 * eof. All three must give the same frames and
 * end the same way (MORE, or TOOBIG/BAD at the same frame index); raw
 * framing, which cuts where the reads cut, must give the stream back in
 * order. Every frame is also checked against a naive reference framer, no
 * message may exceed max_frame, a header and payload joined by
 * hs_frame_join must be those bytes of the stream, and the framer may never
 * report TOOBIG for a frame that could still fit. Any mismatch calls
 * abort().
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (spec/fuzz/CMakeLists.txt,
 * -DHS_FUZZ=ON).
 */
#include "buf.h"
#include "frame.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HDR 12

/* How a run ended, beyond the frame codes of frame.h: the reference knows
 * whether an incomplete last frame is already certain to be too big. */
#define END_MORE HS_FRAME_MORE
#define END_MORE_BIG 100 /* incomplete, but certainly over max_frame */

/* Frames as positions in the stream: payload at s[start, start+len), and
 * the frame (its header, if any) from s[first]. */
typedef struct run {
  size_t *first; /* frame offsets in the stream */
  size_t *start; /* payload offsets in the stream */
  size_t *len;   /* payload lengths */
  size_t count;  /* frames delivered */
  size_t cap;    /* room in start and len */
  int end;       /* END_MORE, END_MORE_BIG, HS_FRAME_TOOBIG or HS_FRAME_BAD */
} run_t;

/* Everything one input asks for. */
typedef struct job {
  hs_framer_t f;   /* the framer under test */
  size_t max;      /* max_frame */
  const char *s;   /* the stream */
  size_t n;        /* its length */
  size_t cuts[4];  /* read boundaries, ascending, each in [0, n] */
  int slack;       /* free bytes left in the block by a padded read */
} job_t;

static void fail(const char *what, const job_t *j, size_t at) {
  fprintf(stderr, "fuzz_frame: %s (framer %s, max_frame %zu, stream %zu bytes, "
                  "at %zu)\n", what, hs_framer_name(&j->f), j->max, j->n, at);
  abort();
}

static void run_init(run_t *r, size_t cap) {
  r->first = malloc(cap * sizeof *r->first);
  r->start = malloc(cap * sizeof *r->start);
  r->len = malloc(cap * sizeof *r->len);
  if (!r->first || !r->start || !r->len) abort();
  r->count = 0;
  r->cap = cap;
  r->end = END_MORE;
}

static void run_free(run_t *r) {
  free(r->first);
  free(r->start);
  free(r->len);
}

static void run_add(run_t *r, const job_t *j, size_t first, size_t start, size_t len) {
  if (r->count == r->cap) fail("more frames than the stream allows", j, start);
  r->first[r->count] = first;
  r->start[r->count] = start;
  r->len[r->count] = len;
  r->count++;
}

/* Header bytes a frame of f starts with (delivered before its payload). */
static size_t header_of(const hs_framer_t *f) {
  return f->kind == HS_FRAME_LENGTH ? f->header : 0;
}

/* ------------------------------------------------------------------------ */
/* The framer as a connection drives it. */

/* One connection's read side. */
typedef struct conn {
  const job_t *j;  /* the input */
  hs_pool_t pool;  /* the loop's block pool */
  hs_buf_t in;     /* unframed input */
  hs_scan_t scanned; /* the framer's search hint */
  size_t base;     /* stream offset of in's first unread byte */
  int done;        /* an error ended it, or "all" was delivered */
  int pad;         /* start reads into an empty buffer near its end */
  run_t *out;      /* frames seen */
} conn_t;

/* Frame what is buffered until the framer needs more, checking each result
 * against the stream. */
static void conn_frames(conn_t *c, int eof) {
  static const char empty[1];
  const job_t *j = c->j;
  while (!c->done) {
    size_t n = hs_buf_len(&c->in);
    /* Not hs_buf_peek on an empty buffer: NULL + 0, which UBSan reports
     * (spec/c/test_buf.c, buf_peek_on_empty_buffer_is_defined). */
    const char *p = n ? hs_buf_peek(&c->in) : empty;
    if (n && memcmp(p, j->s + c->base, n) != 0) fail("buffer corrupted", j, c->base);
    hs_frame_t fr = {SIZE_MAX, SIZE_MAX, SIZE_MAX, NULL};
    size_t before = c->scanned.pos;
    int r = hs_frame_next(&j->f, p, n, j->max, eof, &c->scanned, &fr);
    if (r == HS_FRAME_MORE) {
      if (c->scanned.pos < before || c->scanned.pos > n) fail("bad scanned hint", j, c->base);
      return;
    }
    if (r == HS_FRAME_TOOBIG || r == HS_FRAME_BAD) {
      c->out->end = r;
      c->done = 1;
      return;
    }
    if (r != HS_FRAME_OK) fail("unknown result", j, c->base);
    if (fr.off > fr.consumed || fr.len > fr.consumed - fr.off || fr.consumed > n)
      fail("frame outside the buffer", j, c->base);
    size_t head = header_of(&j->f), off = fr.off, len = fr.len;
    if (head > off) fail("header overlaps the payload", j, c->base);
    /* As conn.c does: the header moves next to the payload. */
    hs_frame_join(&j->f, (char *)p, &fr); /* p is c->in's, or empty when head is 0 */
    if (fr.len != head + len || fr.off + fr.len != off + len)
      fail("joined frame has the wrong span", j, c->base);
    if (memcmp(p + fr.off, j->s + c->base, head) != 0 ||
        memcmp(p + fr.off + head, j->s + c->base + off, len) != 0)
      fail("joined frame is not the header and the payload", j, c->base);
    if (fr.len > j->max) fail("frame over max_frame", j, c->base);
    run_add(c->out, j, c->base, c->base + off, len);
    if (j->f.kind == HS_FRAME_ALL) {
      if (!eof || fr.consumed != n) fail("\"all\" before eof", j, c->base);
      c->done = 1;
      return;
    }
    if (fr.consumed == 0) fail("a frame that consumes nothing", j, c->base);
    hs_buf_consume(&c->in, fr.consumed, &c->pool);
    c->base += fr.consumed;
    c->scanned = (hs_scan_t){0, 0};
  }
}

/* One read of s[from, to). A padded read into an empty buffer first writes
 * filler that it consumes at once, so the read cursor sits near the end of
 * the block and the reads that follow make the buffer compact or grow. */
static void conn_feed(conn_t *c, size_t from, size_t to) {
  size_t n = to - from;
  if (c->done || n == 0) return;
  if (c->pad && hs_buf_len(&c->in) == 0) {
    long room = (long)HS_POOL_BLOCK - (long)n - c->j->slack;
    size_t fill = room > 0 ? (size_t)room : 1;
    char *w = hs_buf_reserve(&c->in, fill + n, &c->pool);
    if (!w) abort();
    memset(w, '#', fill);
    memcpy(w + fill, c->j->s + from, n);
    hs_buf_commit(&c->in, fill + n);
    hs_buf_consume(&c->in, fill, &c->pool);
  } else if (hs_buf_append(&c->in, c->j->s + from, n, &c->pool) != 0) {
    abort();
  }
  conn_frames(c, 0);
}

/* Feed the stream as reads that end at cuts[0..ncuts) (ascending), padded
 * or not, or one byte per read when bytewise, then eof. */
static void drive(const job_t *j, const size_t *cuts, size_t ncuts, int bytewise,
                  int pad, run_t *out) {
  conn_t c = {.j = j, .pad = pad, .out = out};
  hs_pool_init(&c.pool, 1);
  hs_buf_init(&c.in);
  size_t from = 0;
  if (bytewise) {
    for (; from < j->n; from++) conn_feed(&c, from, from + 1);
  } else {
    for (size_t i = 0; i < ncuts; i++) {
      conn_feed(&c, from, cuts[i]);
      from = cuts[i];
    }
    conn_feed(&c, from, j->n);
  }
  conn_frames(&c, 1);
  hs_buf_release(&c.in, &c.pool);
  hs_pool_free(&c.pool);
}

/* ------------------------------------------------------------------------ */
/* The reference: the framing rules written naively over the whole stream. */

/* Whether s[0, k) is the beginning of d. */
static int is_prefix(const char *s, size_t k, const char *d) {
  return memcmp(s, d, k) == 0;
}

/* The smallest payload the unterminated rest q[0, rem) can still become:
 * everything but a tail that may begin the terminator. */
static size_t min_payload(const char *q, size_t rem, const char *d, size_t dl) {
  for (size_t j = rem >= dl ? rem - dl + 1 : 0; j < rem; j++)
    if (is_prefix(q + j, rem - j, d)) return j;
  return rem;
}

/* Decode a length prefix: 1 with *len and *hdr, 0 when incomplete (with
 * *len the least value it can still have), -1 when malformed (a varint
 * longer than max_bytes, or over 64 bits). */
static int ref_len(hs_len_kind_t k, unsigned max_bytes, const unsigned char *q, size_t rem,
                   uint64_t *len, size_t *hdr) {
  static const size_t width[] = {1, 2, 2, 4, 4};
  static const int big_endian[] = {1, 1, 0, 1, 0};
  if (k != HS_LEN_VARINT) {
    size_t w = width[k];
    uint64_t v = 0;
    for (size_t i = 0; i < w; i++) {
      size_t shift = big_endian[k] ? 8 * (w - 1 - i) : 8 * i;
      if (i < rem) v += (uint64_t)q[i] << shift;
    }
    *len = v;
    *hdr = w;
    return rem >= w;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < max_bytes; i++) {
    if (i == rem) {
      *len = v;
      return 0;
    }
    uint64_t group = q[i] & 0x7f;
    if (i == 9 && group > 1) return -1; /* past bit 63 */
    v += group << (7 * i);
    if (q[i] < 0x80) {
      *len = v;
      *hdr = i + 1;
      return 1;
    }
  }
  return -1; /* max_bytes bytes and still not done */
}

/* Frame the whole stream, as if it all came in one read, then eof. */
static void reference(const job_t *j, run_t *out) {
  const hs_framer_t *f = &j->f;
  size_t pos = 0;
  for (;;) {
    const char *q = j->s + pos;
    size_t rem = j->n - pos;
    switch (f->kind) {
    case HS_FRAME_RAW:
      abort(); /* no frame list to compare */

    case HS_FRAME_RESP:
    case HS_FRAME_HTTP:
      abort(); /* never chosen here: fuzz_resp.c and fuzz_http1.c have their own */

    case HS_FRAME_ALL:
      if (rem > j->max) out->end = HS_FRAME_TOOBIG;
      else run_add(out, j, pos, pos, rem);
      return;

    case HS_FRAME_LINE:
    case HS_FRAME_CRLF:
    case HS_FRAME_DELIM: {
      /* "crlf" is the delimiter CRLF; "L" a line with its LF (and CR). */
      int line = f->kind == HS_FRAME_LINE, keep = line && f->keep_eol;
      const char *d = line ? "\n" : f->kind == HS_FRAME_CRLF ? "\r\n" : f->delim;
      size_t dl = line ? 1 : f->kind == HS_FRAME_CRLF ? 2 : f->delim_len;
      size_t i = 0;
      while (i + dl <= rem && memcmp(q + i, d, dl) != 0) i++;
      if (i + dl > rem) { /* no terminator yet */
        size_t least = min_payload(q, rem, d, dl);
        if (keep)
          least = rem + 1; /* and the LF still to come */
        else if (line && least == rem && rem && q[rem - 1] == '\r')
          least--; /* a CR that may be stripped */
        out->end = least > j->max ? END_MORE_BIG : END_MORE;
        return;
      }
      size_t len = keep ? i + 1 : i;
      if (line && !keep && i > 0 && q[i - 1] == '\r') len--;
      if (len > j->max) {
        out->end = HS_FRAME_TOOBIG;
        return;
      }
      run_add(out, j, pos, pos, len);
      pos += i + dl;
      break;
    }

    case HS_FRAME_LENGTH: {
      /* [header][prefix][payload]; max_frame counts header and payload. */
      uint64_t len = 0;
      size_t hdr = 0, head = f->header;
      if (head > j->max) {
        out->end = rem ? HS_FRAME_TOOBIG : END_MORE;
        return;
      }
      if (rem < head) {
        out->end = END_MORE;
        return;
      }
      unsigned mb = f->len_kind == HS_LEN_VARINT ? f->max_bytes : 0;
      int r = ref_len(f->len_kind, mb, (const unsigned char *)q + head, rem - head, &len, &hdr);
      if (r < 0) {
        out->end = HS_FRAME_BAD;
        return;
      }
      if (r == 0) {
        out->end = len > j->max - head ? END_MORE_BIG : END_MORE;
        return;
      }
      if (len > j->max - head) {
        out->end = HS_FRAME_TOOBIG;
        return;
      }
      if (rem - head - hdr < len) {
        out->end = END_MORE;
        return;
      }
      run_add(out, j, pos, pos + head + hdr, (size_t)len);
      pos += head + hdr + (size_t)len;
      break;
    }

    case HS_FRAME_EXACT:
      if (f->exact > j->max) {
        out->end = HS_FRAME_TOOBIG;
        return;
      }
      if (rem < f->exact) {
        out->end = END_MORE;
        return;
      }
      run_add(out, j, pos, pos, f->exact);
      pos += f->exact;
      break;
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Comparisons. */

/* Two runs of the real framer must agree exactly. */
static void same_runs(const job_t *j, const run_t *a, const run_t *b,
                      const char *what) {
  if (a->end != b->end) fail(what, j, a->count);
  if (a->count != b->count) fail(what, j, a->count < b->count ? a->count : b->count);
  for (size_t i = 0; i < a->count; i++)
    if (a->first[i] != b->first[i] || a->start[i] != b->start[i] || a->len[i] != b->len[i])
      fail(what, j, i);
}

/* The real framer against the reference: the same frames, and an end that
 * the rules allow. TOOBIG may come once it is certain (END_MORE_BIG) or when
 * the frame is complete; how early is left to the unit tests. */
static void matches_reference(const job_t *j, const run_t *got, const run_t *ref) {
  if (got->count != ref->count) fail("frames differ from the reference", j, got->count);
  for (size_t i = 0; i < got->count; i++)
    if (got->first[i] != ref->first[i] || got->start[i] != ref->start[i] ||
        got->len[i] != ref->len[i])
      fail("frame differs from the reference", j, i);
  int ok;
  switch (got->end) {
  case HS_FRAME_MORE: ok = ref->end == END_MORE || ref->end == END_MORE_BIG; break;
  case HS_FRAME_TOOBIG: ok = ref->end == HS_FRAME_TOOBIG || ref->end == END_MORE_BIG; break;
  default: ok = got->end == ref->end; break;
  }
  if (!ok) fail("end differs from the reference", j, got->count);
}

/* Raw framing: the frames are the stream, in order, in non-empty pieces. */
static void raw_is_stream(const job_t *j, const run_t *r) {
  size_t at = 0;
  for (size_t i = 0; i < r->count; i++) {
    if (r->start[i] != at || r->len[i] == 0) fail("raw frames out of order", j, i);
    at += r->len[i];
  }
  if (at != j->n || r->end != END_MORE) fail("raw lost bytes", j, at);
}

/* ------------------------------------------------------------------------ */

/* Read the header into a job; 0 when the input is too short. */
static int parse(const uint8_t *data, size_t size, job_t *j) {
  if (size < HDR) return 0;
  const uint8_t *h = data;
  j->s = (const char *)data + HDR;
  j->n = size - HDR;
  j->max = 1 + (size_t)(h[2] | h[3] << 8) % 300;
  static const char *const kinds[] = {"u8",    "u16be", "u16le",
                                      "u32be", "u32le", "varint"};
  switch (h[0] % 8) {
  case 0: hs_framer_raw(&j->f); break;
  case 1: hs_framer_line(&j->f); break;
  case 2:
    if (hs_framer_delim(&j->f, (const char *)h + 4, 1 + h[1] % 4) != 0) abort();
    break;
  case 3:
    if (hs_framer_length(&j->f, kinds[h[1] % 6]) != 0) abort();
    if (hs_framer_set_header(&j->f, (size_t)(h[1] / 6) % 4) != 0) abort();
    if (h[1] % 6 == HS_LEN_VARINT && (h[1] / 24) % 11 &&
        hs_framer_set_max_bytes(&j->f, (size_t)(h[1] / 24) % 11) != 0)
      abort();
    break;
  case 4:
    if (hs_framer_exact(&j->f, 1 + (size_t)h[1]) != 0) abort();
    break;
  case 5: hs_framer_all(&j->f); break;
  case 6: hs_framer_crlf(&j->f); break;
  default: hs_framer_line_keep(&j->f); break;
  }
  for (size_t i = 0; i < 4; i++) j->cuts[i] = (size_t)h[8 + i] * (j->n + 1) / 256;
  j->slack = (h[8] ^ h[11]) % 40 - 8; /* below 0: the padded read grows */
  for (size_t i = 1; i < 4; i++) /* insertion sort */
    for (size_t k = i; k > 0 && j->cuts[k - 1] > j->cuts[k]; k--) {
      size_t t = j->cuts[k];
      j->cuts[k] = j->cuts[k - 1];
      j->cuts[k - 1] = t;
    }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  job_t j;
  if (!parse(data, size, &j)) return 0;
  /* Every frame but "all" consumes at least one byte: n + 1 is room enough. */
  run_t whole, split, bytes;
  run_init(&whole, j.n + 1);
  run_init(&split, j.n + 1);
  run_init(&bytes, j.n + 1);
  drive(&j, NULL, 0, 0, 0, &whole);
  drive(&j, j.cuts, 4, 0, 1, &split);
  drive(&j, NULL, 0, 1, 0, &bytes);
  if (j.f.kind == HS_FRAME_RAW) {
    raw_is_stream(&j, &whole);
    raw_is_stream(&j, &split);
    raw_is_stream(&j, &bytes);
  } else {
    same_runs(&j, &whole, &split, "split reads give other frames");
    same_runs(&j, &whole, &bytes, "one-byte reads give other frames");
    run_t ref;
    run_init(&ref, j.n + 1);
    reference(&j, &ref);
    matches_reference(&j, &whole, &ref);
    run_free(&ref);
  }
  run_free(&whole);
  run_free(&split);
  run_free(&bytes);
  return 0;
}
