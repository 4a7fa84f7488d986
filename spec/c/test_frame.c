/* test_frame.c: the framers (hs_frame_next and the hs_framer_* builders).
 *
 * Two kinds of tests: direct calls that pin one behaviour, and stream tests
 * that run a simulated connection (an hs_buf_t that accumulates reads, a
 * `scanned` hint reset after each consumed frame, hs_frame_next in a loop
 * after each read) and check that a stream gives the same frames however
 * the reads are cut: whole, one byte at a time, and in two at every offset.
 */
#include "buf.h"
#include "frame.h"
#include "test.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* A byte string that may hold NULs. */
typedef struct span {
  const char *p;
  size_t n;
} span_t;

#define S(lit) {lit, sizeof(lit) - 1}

/* Call the framer on a string literal, from a fresh scan, without eof. */
#define NEXT(f, lit, max, out) next_fresh((f), lit, sizeof(lit) - 1, (max), (out))

static int next_fresh(const hs_framer_t *f, const char *p, size_t n, size_t max,
                      hs_frame_t *out) {
  hs_scan_t scanned = {0, 0};
  return hs_frame_next(f, p, n, max, 0, &scanned, out);
}

/* ------------------------------------------------------------------------ */
/* The simulated connection. */

#define SEEN_FRAMES 64
#define SEEN_BYTES 4096

/* What a connection handed to the script: the frames in order, then how the
 * stream ended (HS_FRAME_MORE when the input simply ran out). */
typedef struct seen {
  size_t count;               /* frames delivered */
  size_t at[SEEN_FRAMES];     /* where frame i starts in data */
  size_t len[SEEN_FRAMES];    /* its length */
  char data[SEEN_BYTES];      /* the payloads, back to back */
  size_t used;                /* bytes of data in use */
  int end;                    /* HS_FRAME_MORE, _TOOBIG or _BAD */
} seen_t;

/* One connection's read side, as conn.c is meant to drive the framer. */
typedef struct sim {
  hs_framer_t f;   /* the current framer */
  size_t max;      /* max_frame */
  hs_pool_t pool;  /* the loop's block pool */
  hs_buf_t in;     /* unframed input */
  hs_scan_t scanned; /* how far the framer searched in.data[rpos...] */
  int done;        /* an error ended the stream, or "all" was delivered */
  seen_t *seen;    /* where frames go */
} sim_t;

static void sim_init(sim_t *s, const hs_framer_t *f, size_t max, seen_t *seen) {
  s->f = *f;
  s->max = max;
  hs_pool_init(&s->pool, 2);
  hs_buf_init(&s->in);
  s->scanned = (hs_scan_t){0, 0};
  s->done = 0;
  memset(seen, 0, sizeof *seen);
  seen->end = HS_FRAME_MORE;
  s->seen = seen;
}

static void sim_close(sim_t *s) {
  hs_buf_release(&s->in, &s->pool);
  hs_pool_free(&s->pool);
}

static void seen_add(seen_t *seen, const char *p, size_t n) {
  ASSERT_LT(seen->count, SEEN_FRAMES);
  ASSERT_LE(seen->used + n, SEEN_BYTES);
  seen->at[seen->count] = seen->used;
  seen->len[seen->count] = n;
  if (n) memcpy(seen->data + seen->used, p, n);
  seen->used += n;
  seen->count++;
}

/* Run the framer over the buffered input until it needs more bytes, checking
 * what every frame it reports claims about the input. */
static void sim_frames(sim_t *s, int eof) {
  static const char empty[1];
  while (!s->done) {
    size_t n = hs_buf_len(&s->in);
    /* Not hs_buf_peek on an empty buffer: NULL + 0, see test_buf.c. */
    const char *p = n ? hs_buf_peek(&s->in) : empty;
    hs_frame_t fr = {SIZE_MAX, SIZE_MAX, SIZE_MAX, NULL};
    size_t before = s->scanned.pos;
    int r = hs_frame_next(&s->f, p, n, s->max, eof, &s->scanned, &fr);
    if (r == HS_FRAME_MORE) {
      ASSERT_GE(s->scanned.pos, before); /* the hint never goes back */
      ASSERT_LE(s->scanned.pos, n);
      return;
    }
    if (r != HS_FRAME_OK) {
      ASSERT_TRUE(r == HS_FRAME_TOOBIG || r == HS_FRAME_BAD);
      s->seen->end = r;
      s->done = 1;
      return;
    }
    ASSERT_LE(fr.len, s->max);
    ASSERT_LE(fr.off, fr.consumed);
    ASSERT_LE(fr.len, fr.consumed - fr.off);
    ASSERT_LE(fr.consumed, n);
    seen_add(s->seen, p + fr.off, fr.len);
    if (s->f.kind == HS_FRAME_ALL) { /* "all" is delivered once, at eof */
      ASSERT_TRUE(eof);
      ASSERT_EQ(fr.consumed, n);
      s->done = 1;
      return;
    }
    ASSERT_GT(fr.consumed, 0);
    hs_buf_consume(&s->in, fr.consumed, &s->pool);
    s->scanned = (hs_scan_t){0, 0};
  }
}

/* One read of n bytes. */
static void sim_feed(sim_t *s, const char *p, size_t n) {
  if (s->done || n == 0) return;
  ASSERT_EQ(hs_buf_append(&s->in, p, n, &s->pool), 0);
  sim_frames(s, 0);
}

/* The peer closed. */
static void sim_eof(sim_t *s) { sim_frames(s, 1); }

/* Run a whole stream through a fresh connection, as reads that end at the
 * given cut offsets (ascending), then eof. */
static void run_cuts(const hs_framer_t *f, size_t max, const char *p, size_t n,
                     const size_t *cuts, size_t ncuts, seen_t *seen) {
  sim_t s;
  sim_init(&s, f, max, seen);
  size_t from = 0;
  for (size_t i = 0; i < ncuts; i++) {
    sim_feed(&s, p + from, cuts[i] - from);
    from = cuts[i];
  }
  sim_feed(&s, p + from, n - from);
  sim_eof(&s);
  sim_close(&s);
}

/* The same stream fed one byte per read. */
static void run_bytewise(const hs_framer_t *f, size_t max, const char *p,
                         size_t n, seen_t *seen) {
  sim_t s;
  sim_init(&s, f, max, seen);
  for (size_t i = 0; i < n; i++) sim_feed(&s, p + i, 1);
  sim_eof(&s);
  sim_close(&s);
}

/* Compare what was seen to the expected frames and end; how says which way
 * the stream was fed, printed only when they differ. Raw framing cuts where
 * the reads cut, so for it only the bytes in order are compared. */
static void check_seen(const hs_framer_t *f, const seen_t *got, const span_t *want,
                       size_t nwant, int want_end, const char *how) {
  int same = got->end == want_end;
  if (f->kind == HS_FRAME_RAW) {
    size_t total = 0;
    for (size_t i = 0; i < nwant; i++) total += want[i].n;
    same = same && got->used == total;
    for (size_t i = 0, o = 0; same && i < nwant; o += want[i].n, i++)
      same = memcmp(got->data + o, want[i].p, want[i].n) == 0;
    for (size_t i = 0; same && i < got->count; i++) same = got->len[i] > 0;
  } else {
    same = same && got->count == nwant;
    for (size_t i = 0; same && i < nwant; i++)
      same = got->len[i] == want[i].n &&
             memcmp(got->data + got->at[i], want[i].p, want[i].n) == 0;
  }
  if (same) return;
  fprintf(stderr, "framer %s, stream fed %s:\n", hs_framer_name(f), how);
  if (f->kind != HS_FRAME_RAW) {
    for (size_t i = 0; i < nwant && i < got->count; i++)
      ASSERT_MEM_EQ(got->data + got->at[i], got->len[i], want[i].p, want[i].n);
    ASSERT_EQ(got->count, nwant);
  }
  ASSERT_EQ(got->end, want_end);
  ASSERT_TRUE(same);
}

/* The core property: fed whole, one byte at a time, or in two reads split at
 * any offset, a stream gives exactly the frames in want and ends with
 * want_end. */
static void check_stream(const hs_framer_t *f, size_t max, const char *p, size_t n,
                         const span_t *want, size_t nwant, int want_end) {
  seen_t seen;
  char how[64];
  run_cuts(f, max, p, n, NULL, 0, &seen);
  check_seen(f, &seen, want, nwant, want_end, "whole");
  run_bytewise(f, max, p, n, &seen);
  check_seen(f, &seen, want, nwant, want_end, "one byte at a time");
  for (size_t cut = 0; cut <= n; cut++) {
    run_cuts(f, max, p, n, &cut, 1, &seen);
    snprintf(how, sizeof how, "in two reads split at %zu of %zu", cut, n);
    check_seen(f, &seen, want, nwant, want_end, how);
  }
}

#define CHECK_STREAM(f, max, lit, want, end)                                   \
  check_stream((f), (max), lit, sizeof(lit) - 1, want,                         \
               sizeof(want) / sizeof *(want), (end))

/* ------------------------------------------------------------------------ */
/* Builders. */

TEST(framer_builders_check_arguments) {
  hs_framer_t f;
  ASSERT_EQ(hs_framer_delim(&f, "", 0), -1);
  char big[HS_DELIM_MAX + 1];
  memset(big, '-', sizeof big);
  ASSERT_EQ(hs_framer_delim(&f, big, HS_DELIM_MAX + 1), -1);
  ASSERT_EQ(hs_framer_delim(&f, big, HS_DELIM_MAX), 0);
  ASSERT_EQ(f.delim_len, HS_DELIM_MAX);
  ASSERT_EQ(hs_framer_exact(&f, 0), -1);
  ASSERT_EQ(hs_framer_exact(&f, 1), 0);
  ASSERT_EQ(f.exact, 1);
  ASSERT_EQ(hs_framer_length(&f, "u24"), -1);
  ASSERT_EQ(hs_framer_length(&f, ""), -1);
  ASSERT_EQ(hs_framer_length(&f, "U8"), -1);
  ASSERT_EQ(hs_framer_length(&f, "varint"), 0);
  ASSERT_EQ(f.len_kind, HS_LEN_VARINT);
}

TEST(framer_names) {
  hs_framer_t f;
  static const char *const kinds[] = {"u8",    "u16be", "u16le",
                                      "u32be", "u32le", "varint"};
  char want[32];
  hs_framer_raw(&f);
  ASSERT_EQ(strcmp(hs_framer_name(&f), "raw"), 0);
  hs_framer_line(&f);
  ASSERT_EQ(strcmp(hs_framer_name(&f), "line"), 0);
  hs_framer_all(&f);
  ASSERT_EQ(strcmp(hs_framer_name(&f), "all"), 0);
  ASSERT_EQ(hs_framer_delim(&f, "\r\n", 2), 0);
  ASSERT_EQ(strcmp(hs_framer_name(&f), "delimiter"), 0);
  ASSERT_EQ(hs_framer_exact(&f, 9), 0);
  ASSERT_EQ(strcmp(hs_framer_name(&f), "exact"), 0);
  for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
    ASSERT_EQ(hs_framer_length(&f, kinds[i]), 0);
    ASSERT_EQ(f.len_kind, i);
    snprintf(want, sizeof want, "length %s", kinds[i]);
    const char *name = hs_framer_name(&f);
    ASSERT_MEM_EQ(name, strlen(name), want, strlen(want));
  }
}

/* ------------------------------------------------------------------------ */
/* Raw. */

TEST(raw_gives_whatever_is_there) {
  hs_framer_t f;
  hs_frame_t fr;
  hs_framer_raw(&f);
  ASSERT_EQ(NEXT(&f, "", 100, &fr), HS_FRAME_MORE);
  ASSERT_EQ(NEXT(&f, "hello\n", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.off, 0);
  ASSERT_EQ(fr.len, 6);
  ASSERT_EQ(fr.consumed, 6);
  /* More than max_frame at once: cut into max_frame pieces, never an error. */
  ASSERT_EQ(NEXT(&f, "hello\n", 4, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 4);
  ASSERT_EQ(fr.consumed, 4);
}

TEST(raw_stream) {
  hs_framer_t f;
  hs_framer_raw(&f);
  static const span_t want[] = {S("hello, "), S("world\n\0x")};
  CHECK_STREAM(&f, 64, "hello, world\n\0x", want, HS_FRAME_MORE);
  CHECK_STREAM(&f, 3, "hello, world\n\0x", want, HS_FRAME_MORE);
}

/* ------------------------------------------------------------------------ */
/* Line. */

TEST(line_strips_cr_before_lf) {
  hs_framer_t f;
  hs_frame_t fr;
  hs_framer_line(&f);
  ASSERT_EQ(NEXT(&f, "abc\r\nrest", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.off, 0);
  ASSERT_EQ(fr.len, 3);
  ASSERT_EQ(fr.consumed, 5);
  ASSERT_EQ(NEXT(&f, "abc\nrest", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 3);
  ASSERT_EQ(fr.consumed, 4);
  ASSERT_EQ(NEXT(&f, "\r\n", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 0);
  ASSERT_EQ(fr.consumed, 2);
  ASSERT_EQ(NEXT(&f, "\n", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 0);
  ASSERT_EQ(fr.consumed, 1);
  /* Only the one CR right before the LF goes. */
  ASSERT_EQ(NEXT(&f, "abc\r\r\n", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 4);
  ASSERT_EQ(fr.consumed, 6);
}

TEST(line_keeps_lone_cr_mid_line) {
  hs_framer_t f;
  hs_frame_t fr;
  static const char in[] = "a\rb\r\n";
  hs_framer_line(&f);
  ASSERT_EQ(NEXT(&f, "a\rb\r\n", 100, &fr), HS_FRAME_OK);
  ASSERT_MEM_STR(in + fr.off, fr.len, "a\rb");
  ASSERT_EQ(fr.consumed, 5);
  ASSERT_EQ(NEXT(&f, "\rx\n", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 2);
}

TEST(line_needs_the_lf) {
  hs_framer_t f;
  hs_frame_t fr;
  hs_framer_line(&f);
  ASSERT_EQ(NEXT(&f, "", 100, &fr), HS_FRAME_MORE);
  ASSERT_EQ(NEXT(&f, "abc", 100, &fr), HS_FRAME_MORE);
  ASSERT_EQ(NEXT(&f, "abc\r", 100, &fr), HS_FRAME_MORE);
  /* eof changes nothing: an unterminated line is not a frame. */
  hs_scan_t scanned = {0, 0};
  ASSERT_EQ(hs_frame_next(&f, "abc", 3, 100, 1, &scanned, &fr), HS_FRAME_MORE);
}

TEST(line_scanned_hint) {
  hs_framer_t f;
  hs_frame_t fr;
  hs_framer_line(&f);
  static const char in[] = "hello\r\nworld\n";
  hs_scan_t scanned = {0, 0};
  ASSERT_EQ(hs_frame_next(&f, in, 3, 100, 0, &scanned, &fr), HS_FRAME_MORE);
  ASSERT_EQ(scanned.pos, 3);
  ASSERT_EQ(hs_frame_next(&f, in, 6, 100, 0, &scanned, &fr), HS_FRAME_MORE);
  ASSERT_EQ(scanned.pos, 6);
  ASSERT_EQ(hs_frame_next(&f, in, sizeof in - 1, 100, 0, &scanned, &fr),
            HS_FRAME_OK);
  ASSERT_MEM_STR(in + fr.off, fr.len, "hello");
  ASSERT_EQ(fr.consumed, 7);
}

TEST(line_crlf_split_across_reads) {
  hs_framer_t f;
  seen_t seen;
  sim_t s;
  hs_framer_line(&f);
  sim_init(&s, &f, 100, &seen);
  sim_feed(&s, "ab\r", 3);
  ASSERT_EQ(seen.count, 0);
  sim_feed(&s, "\ncd", 3);
  ASSERT_EQ(seen.count, 1);
  ASSERT_MEM_STR(seen.data, seen.len[0], "ab");
  sim_feed(&s, "\r", 1);
  sim_feed(&s, "\n", 1);
  ASSERT_EQ(seen.count, 2);
  ASSERT_MEM_STR(seen.data + seen.at[1], seen.len[1], "cd");
  ASSERT_EQ(hs_buf_len(&s.in), 0);
  ASSERT_NULL(s.in.data); /* nothing buffered: no storage held */
  sim_close(&s);
}

TEST(line_of_exactly_max_frame_is_ok) {
  hs_framer_t f;
  hs_frame_t fr;
  hs_framer_line(&f);
  ASSERT_EQ(NEXT(&f, "abcd\r\n", 4, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 4);
  ASSERT_EQ(NEXT(&f, "abcd\n", 4, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 4);
  /* Before the LF arrives, max_frame bytes and a CR are not yet too big. */
  ASSERT_EQ(NEXT(&f, "abcd", 4, &fr), HS_FRAME_MORE);
  ASSERT_EQ(NEXT(&f, "abcd\r", 4, &fr), HS_FRAME_MORE);
  static const span_t want[] = {S("abcd"), S(""), S("wxyz"), S("a\rb")};
  CHECK_STREAM(&f, 4, "abcd\r\n\nwxyz\na\rb\r\n", want, HS_FRAME_MORE);
}

TEST(line_toobig_as_soon_as_certain) {
  hs_framer_t f;
  hs_frame_t fr;
  hs_framer_line(&f);
  /* max_frame + 1 bytes and no LF yet: already too big. */
  ASSERT_EQ(NEXT(&f, "abcde", 4, &fr), HS_FRAME_TOOBIG);
  /* A CR that is not last can no longer be stripped. */
  ASSERT_EQ(NEXT(&f, "abcd\rx", 4, &fr), HS_FRAME_TOOBIG);
  ASSERT_EQ(NEXT(&f, "abcd\r\r", 4, &fr), HS_FRAME_TOOBIG);
  /* Complete but too long, in the same read. */
  ASSERT_EQ(NEXT(&f, "abcde\n", 4, &fr), HS_FRAME_TOOBIG);
  ASSERT_EQ(NEXT(&f, "abcd\r\r\n", 4, &fr), HS_FRAME_TOOBIG);

  /* On a connection, the error comes with the read that makes it certain,
   * long before any LF. */
  seen_t seen;
  sim_t s;
  sim_init(&s, &f, 8, &seen);
  sim_feed(&s, "ok\nabc", 6);
  sim_feed(&s, "defgh", 5);
  ASSERT_EQ(seen.end, HS_FRAME_MORE);
  sim_feed(&s, "i", 1);
  ASSERT_EQ(seen.end, HS_FRAME_TOOBIG);
  ASSERT_EQ(seen.count, 1);
  sim_close(&s);

  static const span_t want[] = {S("one"), S("two")};
  CHECK_STREAM(&f, 4, "one\ntwo\r\nthree\n", want, HS_FRAME_TOOBIG);
  CHECK_STREAM(&f, 4, "one\ntwo\r\nabcd\r\r\n", want, HS_FRAME_TOOBIG);
}

TEST(line_stream) {
  hs_framer_t f;
  hs_framer_line(&f);
  static const span_t want[] = {S("one"),   S("two"), S(""),     S(""),
                                S("three"), S("x\ry"), S("\r\r"), S("\0z")};
  CHECK_STREAM(&f, 64, "one\r\ntwo\n\n\r\nthree\r\nx\ry\n\r\r\r\n\0z\ntail\r",
               want, HS_FRAME_MORE);
}

/* ------------------------------------------------------------------------ */
/* Delimiter. */

TEST(delim_single_byte) {
  hs_framer_t f;
  hs_frame_t fr;
  ASSERT_EQ(hs_framer_delim(&f, ",", 1), 0);
  ASSERT_EQ(NEXT(&f, "ab,cd", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.off, 0);
  ASSERT_EQ(fr.len, 2);
  ASSERT_EQ(fr.consumed, 3);
  ASSERT_EQ(NEXT(&f, ",", 100, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 0);
  ASSERT_EQ(NEXT(&f, "abc", 100, &fr), HS_FRAME_MORE);
  static const span_t want[] = {S("a"), S(""), S("bc"), S("\r\n")};
  CHECK_STREAM(&f, 64, "a,,bc,\r\n,d", want, HS_FRAME_MORE);
}

TEST(delim_nul_byte) {
  hs_framer_t f;
  ASSERT_EQ(hs_framer_delim(&f, "\0", 1), 0);
  static const span_t want[] = {S("a"), S("bc")};
  CHECK_STREAM(&f, 64, "a\0bc\0d", want, HS_FRAME_MORE);
}

TEST(delim_multibyte_straddles_reads) {
  hs_framer_t f;
  seen_t seen;
  sim_t s;
  ASSERT_EQ(hs_framer_delim(&f, "\r\n\r\n", 4), 0);
  sim_init(&s, &f, 100, &seen);
  sim_feed(&s, "HEAD\r", 5);
  sim_feed(&s, "\n\r", 2);
  ASSERT_EQ(seen.count, 0);
  sim_feed(&s, "\nbody", 5);
  ASSERT_EQ(seen.count, 1);
  ASSERT_MEM_STR(seen.data, seen.len[0], "HEAD");
  ASSERT_MEM_STR(hs_buf_peek(&s.in), hs_buf_len(&s.in), "body");
  sim_close(&s);

  /* The hint: a call that saw "ab\r\n\r" and then "ab\r\n\r\n" looks back
   * far enough to find a delimiter that began in the bytes already seen. */
  hs_frame_t fr;
  hs_scan_t scanned = {0, 0};
  static const char in[] = "ab\r\n\r\n";
  ASSERT_EQ(hs_frame_next(&f, in, 5, 100, 0, &scanned, &fr), HS_FRAME_MORE);
  ASSERT_EQ(scanned.pos, 5);
  ASSERT_EQ(hs_frame_next(&f, in, 6, 100, 0, &scanned, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 2);
  ASSERT_EQ(fr.consumed, 6);
}

TEST(delim_partial_delimiter_is_payload) {
  hs_framer_t f;
  ASSERT_EQ(hs_framer_delim(&f, "\r\n\r\n", 4), 0);
  static const span_t want[] = {S("GET / HTTP/1.1\r\nHost: x"), S(""),
                                S("body\r\n\r"), S("\r\n\r")};
  CHECK_STREAM(&f, 64,
               "GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\nbody\r\n\r\r\n\r\n"
               "\r\n\r\r\n\r\n\r\n\r",
               want, HS_FRAME_MORE);
}

TEST(delim_self_overlapping) {
  hs_framer_t f;
  ASSERT_EQ(hs_framer_delim(&f, "aab", 3), 0);
  static const span_t want1[] = {S("a"), S("x"), S("")};
  CHECK_STREAM(&f, 64, "aaabxaabaabaa", want1, HS_FRAME_MORE);
  ASSERT_EQ(hs_framer_delim(&f, "abab", 4), 0);
  static const span_t want2[] = {S("x"), S("aby"), S("")};
  CHECK_STREAM(&f, 64, "xabababyababababa", want2, HS_FRAME_MORE);
}

TEST(delim_max_frame) {
  hs_framer_t f;
  hs_frame_t fr;
  ASSERT_EQ(hs_framer_delim(&f, "\r\n\r\n", 4), 0);
  ASSERT_EQ(NEXT(&f, "abcd\r\n\r\n", 4, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 4);
  ASSERT_EQ(NEXT(&f, "abcde\r\n\r\n", 4, &fr), HS_FRAME_TOOBIG);
  /* A tail that may still become the delimiter is not counted yet. */
  ASSERT_EQ(NEXT(&f, "abcd\r\n\r", 4, &fr), HS_FRAME_MORE);
  ASSERT_EQ(NEXT(&f, "abcd\r\n\rx", 4, &fr), HS_FRAME_TOOBIG);
  ASSERT_EQ(NEXT(&f, "abcdefgh", 4, &fr), HS_FRAME_TOOBIG);
  static const span_t want[] = {S("abcd"), S("")};
  CHECK_STREAM(&f, 4, "abcd\r\n\r\n\r\n\r\nabcde\r\n\r\n", want, HS_FRAME_TOOBIG);
  CHECK_STREAM(&f, 4, "abcd\r\n\r\n\r\n\r\nabcdefgh", want, HS_FRAME_TOOBIG);
}

/* BUG (src/frame.c, HS_FRAME_DELIM): with no delimiter found, the framer
 * treats the last delim_len - 1 bytes as a possible start of the delimiter
 * whatever they are, so TOOBIG comes up to delim_len - 1 bytes late. After
 * "abcdefg" with delimiter "\r\n\r\n" and max_frame 4 the payload is
 * certainly at least 7 bytes ("efg" cannot begin "\r\n\r\n"), yet the
 * framer says MORE until the 8th byte arrives. The header promises TOOBIG
 * "as soon as that is certain". */
TEST(delim_toobig_as_soon_as_certain) {
  hs_framer_t f;
  hs_frame_t fr;
  ASSERT_EQ(hs_framer_delim(&f, "\r\n\r\n", 4), 0);
  ASSERT_EQ(NEXT(&f, "abcdefgh", 4, &fr), HS_FRAME_TOOBIG); /* passes */
  ASSERT_EQ(NEXT(&f, "abcdefg", 4, &fr), HS_FRAME_TOOBIG);  /* got MORE */
  ASSERT_EQ(NEXT(&f, "abcde", 4, &fr), HS_FRAME_TOOBIG);    /* got MORE */
  /* A tail that really may begin the delimiter still waits, rightly. */
  ASSERT_EQ(NEXT(&f, "abcd\r\n\r", 4, &fr), HS_FRAME_MORE);
}

/* ------------------------------------------------------------------------ */
/* Length prefix. */

/* Check one complete frame: its prefix is hdr bytes, its payload follows. */
static void check_len_frame(const char *kind, const char *p, size_t n, size_t hdr,
                            const char *payload, size_t plen) {
  hs_framer_t f;
  hs_frame_t fr;
  ASSERT_EQ(hs_framer_length(&f, kind), 0);
  ASSERT_EQ(next_fresh(&f, p, n, 1000, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.off, hdr); /* the prefix is not delivered */
  ASSERT_EQ(fr.consumed, hdr + plen);
  ASSERT_MEM_EQ(p + fr.off, fr.len, payload, plen);
  /* Every shorter span is incomplete. */
  for (size_t i = 0; i < hdr + plen; i++)
    ASSERT_EQ(next_fresh(&f, p, i, 1000, &fr), HS_FRAME_MORE);
}

TEST(length_each_kind) {
  check_len_frame("u8", "\x03" "abcX", 5, 1, "abc", 3);
  check_len_frame("u16be", "\x00\x03" "abcX", 6, 2, "abc", 3);
  check_len_frame("u16le", "\x03\x00" "abcX", 6, 2, "abc", 3);
  check_len_frame("u32be", "\x00\x00\x00\x03" "abcX", 8, 4, "abc", 3);
  check_len_frame("u32le", "\x03\x00\x00\x00" "abcX", 8, 4, "abc", 3);
  check_len_frame("varint", "\x03" "abcX", 5, 1, "abc", 3);
}

TEST(length_byte_order) {
  static char body[0x203];
  memset(body, 'z', sizeof body);
  char p[4 + sizeof body];
  /* 0x0102 = 258 in u16be; read as u16le the same bytes are 0x0201 = 513. */
  memcpy(p, "\x01\x02", 2);
  memcpy(p + 2, body, sizeof body);
  check_len_frame("u16be", p, 2 + 0x102, 2, body, 0x102);
  check_len_frame("u16le", p, 2 + 0x201, 2, body, 0x201);
  memcpy(p, "\x00\x00\x01\x02", 4);
  memcpy(p + 4, body, sizeof body);
  check_len_frame("u32be", p, 4 + 0x102, 4, body, 0x102);
  memcpy(p, "\x02\x01\x00\x00", 4);
  check_len_frame("u32le", p, 4 + 0x102, 4, body, 0x102);
}

TEST(length_zero_length_frames) {
  static const char *const kinds[] = {"u8",    "u16be", "u16le",
                                      "u32be", "u32le", "varint"};
  static const size_t hdrs[] = {1, 2, 2, 4, 4, 1};
  static const char zeros[12];
  for (size_t k = 0; k < 6; k++) {
    hs_framer_t f;
    hs_frame_t fr;
    ASSERT_EQ(hs_framer_length(&f, kinds[k]), 0);
    ASSERT_EQ(next_fresh(&f, zeros, hdrs[k], 10, &fr), HS_FRAME_OK);
    ASSERT_EQ(fr.off, hdrs[k]);
    ASSERT_EQ(fr.len, 0);
    ASSERT_EQ(fr.consumed, hdrs[k]);
    /* Three empty frames in a row, however they arrive. */
    static const span_t want[] = {S(""), S(""), S("")};
    check_stream(&f, 10, zeros, 3 * hdrs[k], want, 3, HS_FRAME_MORE);
  }
}

TEST(length_varint_multibyte) {
  static char p[2 + 300 + 1];
  memset(p, 'v', sizeof p);
  p[0] = (char)0xac, p[1] = 0x02; /* 300 */
  check_len_frame("varint", p, sizeof p, 2, p + 2, 300);
  /* A non-minimal encoding of 0 is still 0. */
  check_len_frame("varint", "\x80\x80\x00", 3, 3, "", 0);
  /* Ten bytes is the longest a 64-bit value takes. */
  check_len_frame("varint", "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 10, 10,
                  "", 0);
}

TEST(length_varint_too_long_is_bad) {
  hs_framer_t f;
  hs_frame_t fr;
  ASSERT_EQ(hs_framer_length(&f, "varint"), 0);
  /* Nine continuation bytes: may still end well. */
  ASSERT_EQ(NEXT(&f, "\x80\x80\x80\x80\x80\x80\x80\x80\x80", 100, &fr),
            HS_FRAME_MORE);
  /* Ten: no 64-bit value is written like that. */
  ASSERT_EQ(NEXT(&f, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80", 100, &fr),
            HS_FRAME_BAD);
  ASSERT_EQ(NEXT(&f, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 100, &fr),
            HS_FRAME_BAD);
  /* The tenth byte holds only bit 63. */
  ASSERT_EQ(NEXT(&f, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 100, &fr),
            HS_FRAME_BAD);
  /* 2^64 - 1 is well formed, just too big. */
  ASSERT_EQ(NEXT(&f, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 100, &fr),
            HS_FRAME_TOOBIG);
  static const span_t want[] = {S("ab"), S("")};
  CHECK_STREAM(&f, 100,
               "\x02" "ab\x00\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", want,
               HS_FRAME_BAD);
}

TEST(length_toobig_before_body) {
  static const struct {
    const char *kind;
    span_t over;  /* announces max_frame + 1 = 301 */
    span_t exact; /* announces max_frame = 300 */
  } cases[] = {
      {"u16be", S("\x01\x2d"), S("\x01\x2c")},
      {"u16le", S("\x2d\x01"), S("\x2c\x01")},
      {"u32be", S("\x00\x00\x01\x2d"), S("\x00\x00\x01\x2c")},
      {"u32le", S("\x2d\x01\x00\x00"), S("\x2c\x01\x00\x00")},
      {"varint", S("\xad\x02"), S("\xac\x02")},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    hs_framer_t f;
    hs_frame_t fr;
    ASSERT_EQ(hs_framer_length(&f, cases[i].kind), 0);
    /* Only the prefix has arrived, and it is already an error. */
    ASSERT_EQ(next_fresh(&f, cases[i].over.p, cases[i].over.n, 300, &fr),
              HS_FRAME_TOOBIG);
    /* Exactly max_frame waits for the body, then is delivered. */
    ASSERT_EQ(next_fresh(&f, cases[i].exact.p, cases[i].exact.n, 300, &fr),
              HS_FRAME_MORE);
    static char p[4 + 300];
    memcpy(p, cases[i].exact.p, cases[i].exact.n);
    memset(p + cases[i].exact.n, 'q', 300);
    ASSERT_EQ(next_fresh(&f, p, cases[i].exact.n + 300, 300, &fr), HS_FRAME_OK);
    ASSERT_EQ(fr.len, 300);
  }
  hs_framer_t f;
  hs_frame_t fr;
  ASSERT_EQ(hs_framer_length(&f, "u8"), 0);
  ASSERT_EQ(NEXT(&f, "\x05", 4, &fr), HS_FRAME_TOOBIG);
  ASSERT_EQ(NEXT(&f, "\x04", 4, &fr), HS_FRAME_MORE);
  ASSERT_EQ(hs_framer_length(&f, "u32be"), 0);
  ASSERT_EQ(NEXT(&f, "\xff\xff\xff\xff", 65536, &fr), HS_FRAME_TOOBIG);
}

TEST(length_streams) {
  hs_framer_t f;
  static const span_t want[] = {S("abc"), S(""), S("z\n"), S("\0")};
  static const span_t want_big[] = {S("abc")};
  ASSERT_EQ(hs_framer_length(&f, "u8"), 0);
  CHECK_STREAM(&f, 8, "\x03" "abc\x00\x02z\n\x01\x00\x05" "ab", want,
               HS_FRAME_MORE);
  CHECK_STREAM(&f, 8, "\x03" "abc\x09" "123456789", want_big, HS_FRAME_TOOBIG);
  ASSERT_EQ(hs_framer_length(&f, "u16be"), 0);
  CHECK_STREAM(&f, 8, "\x00\x03" "abc\x00\x00\x00\x02z\n\x00\x01\x00\x00",
               want, HS_FRAME_MORE);
  CHECK_STREAM(&f, 8, "\x00\x03" "abc\x01\x00", want_big, HS_FRAME_TOOBIG);
  ASSERT_EQ(hs_framer_length(&f, "u16le"), 0);
  CHECK_STREAM(&f, 8, "\x03\x00" "abc\x00\x00\x02\x00z\n\x01\x00\x00\x05",
               want, HS_FRAME_MORE);
  CHECK_STREAM(&f, 8, "\x03\x00" "abc\x00\x01", want_big, HS_FRAME_TOOBIG);
  ASSERT_EQ(hs_framer_length(&f, "u32be"), 0);
  CHECK_STREAM(&f, 8,
               "\x00\x00\x00\x03" "abc\x00\x00\x00\x00\x00\x00\x00\x02z\n"
               "\x00\x00\x00\x01\x00\x00\x00",
               want, HS_FRAME_MORE);
  CHECK_STREAM(&f, 8, "\x00\x00\x00\x03" "abc\x00\x00\x00\x09", want_big,
               HS_FRAME_TOOBIG);
  ASSERT_EQ(hs_framer_length(&f, "u32le"), 0);
  CHECK_STREAM(&f, 8,
               "\x03\x00\x00\x00" "abc\x00\x00\x00\x00\x02\x00\x00\x00z\n"
               "\x01\x00\x00\x00\x00\x07",
               want, HS_FRAME_MORE);
  CHECK_STREAM(&f, 8, "\x03\x00\x00\x00" "abc\x00\x00\x00\x01", want_big,
               HS_FRAME_TOOBIG);
  ASSERT_EQ(hs_framer_length(&f, "varint"), 0);
  CHECK_STREAM(&f, 8, "\x03" "abc\x80\x00\x02z\n\x01\x00\x85", want,
               HS_FRAME_MORE);
  CHECK_STREAM(&f, 8, "\x03" "abc\x89\x80\x00", want_big, HS_FRAME_TOOBIG);
}

/* ------------------------------------------------------------------------ */
/* Exact. */

TEST(exact_frames) {
  hs_framer_t f;
  hs_frame_t fr;
  ASSERT_EQ(hs_framer_exact(&f, 3), 0);
  ASSERT_EQ(NEXT(&f, "ab", 3, &fr), HS_FRAME_MORE);
  ASSERT_EQ(NEXT(&f, "abcd", 3, &fr), HS_FRAME_OK); /* exactly max_frame */
  ASSERT_EQ(fr.off, 0);
  ASSERT_EQ(fr.len, 3);
  ASSERT_EQ(fr.consumed, 3);
  static const span_t want[] = {S("abc"), S("\r\n\0"), S("ghi")};
  CHECK_STREAM(&f, 3, "abc\r\n\0ghij", want, HS_FRAME_MORE);
  ASSERT_EQ(hs_framer_exact(&f, 1), 0);
  static const span_t want1[] = {S("x"), S("y")};
  CHECK_STREAM(&f, 1, "xy", want1, HS_FRAME_MORE);
}

TEST(exact_over_max_frame_is_toobig_at_once) {
  hs_framer_t f;
  hs_frame_t fr;
  ASSERT_EQ(hs_framer_exact(&f, 5), 0);
  ASSERT_EQ(NEXT(&f, "", 4, &fr), HS_FRAME_TOOBIG); /* nothing received yet */
  ASSERT_EQ(NEXT(&f, "abcdef", 4, &fr), HS_FRAME_TOOBIG);
  static const span_t none[1] = {S("")};
  check_stream(&f, 4, "abcdefghij", 10, none, 0, HS_FRAME_TOOBIG);
}

/* ------------------------------------------------------------------------ */
/* All: everything until the peer closes. */

TEST(all_waits_for_eof) {
  hs_framer_t f;
  hs_frame_t fr;
  hs_scan_t scanned = {0, 0};
  hs_framer_all(&f);
  ASSERT_EQ(hs_frame_next(&f, "abc", 3, 10, 0, &scanned, &fr), HS_FRAME_MORE);
  ASSERT_EQ(hs_frame_next(&f, "abc", 3, 10, 1, &scanned, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.off, 0);
  ASSERT_EQ(fr.len, 3);
  ASSERT_EQ(fr.consumed, 3);
  /* A peer that closes at once sent an empty message. */
  ASSERT_EQ(hs_frame_next(&f, "", 0, 10, 1, &scanned, &fr), HS_FRAME_OK);
  ASSERT_EQ(fr.len, 0);
  ASSERT_EQ(fr.consumed, 0);
  static const span_t want[] = {S("line one\r\nline two\n\0")};
  CHECK_STREAM(&f, 64, "line one\r\nline two\n\0", want, HS_FRAME_MORE);
}

TEST(all_toobig_before_eof) {
  hs_framer_t f;
  hs_frame_t fr;
  hs_scan_t scanned = {0, 0};
  hs_framer_all(&f);
  ASSERT_EQ(hs_frame_next(&f, "abcd", 4, 4, 0, &scanned, &fr), HS_FRAME_MORE);
  ASSERT_EQ(hs_frame_next(&f, "abcd", 4, 4, 1, &scanned, &fr), HS_FRAME_OK);
  ASSERT_EQ(hs_frame_next(&f, "abcde", 5, 4, 0, &scanned, &fr), HS_FRAME_TOOBIG);
  static const span_t none[1] = {S("")};
  check_stream(&f, 4, "abcdefgh", 8, none, 0, HS_FRAME_TOOBIG);
}

/* ------------------------------------------------------------------------ */
/* Switching framers on buffered bytes (conn:framing mid-connection). */

TEST(switching_framers_reframes_buffered_bytes) {
  static const char req[] =
      "POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
  hs_pool_t pool;
  hs_buf_t in;
  hs_framer_t f;
  hs_frame_t fr;
  hs_scan_t scanned = {0, 0};
  hs_pool_init(&pool, 1);
  hs_buf_init(&in);
  ASSERT_EQ(hs_buf_append(&in, req, sizeof req - 1, &pool), 0);
  hs_framer_line(&f);
  static const char *const head[] = {"POST /x HTTP/1.1", "Content-Length: 5", ""};
  for (int i = 0; i < 3; i++) {
    ASSERT_EQ(hs_frame_next(&f, hs_buf_peek(&in), hs_buf_len(&in), 64, 0,
                            &scanned, &fr),
              HS_FRAME_OK);
    ASSERT_MEM_EQ(hs_buf_peek(&in) + fr.off, fr.len, head[i], strlen(head[i]));
    hs_buf_consume(&in, fr.consumed, &pool);
    scanned = (hs_scan_t){0, 0};
  }
  ASSERT_EQ(hs_framer_exact(&f, 5), 0);
  ASSERT_EQ(hs_frame_next(&f, hs_buf_peek(&in), hs_buf_len(&in), 64, 0,
                          &scanned, &fr),
            HS_FRAME_OK);
  ASSERT_MEM_STR(hs_buf_peek(&in) + fr.off, fr.len, "hello");
  hs_buf_consume(&in, fr.consumed, &pool);
  hs_framer_line(&f);
  ASSERT_EQ(hs_frame_next(&f, hs_buf_peek(&in), hs_buf_len(&in), 64, 0,
                          &scanned, &fr),
            HS_FRAME_OK);
  ASSERT_MEM_STR(hs_buf_peek(&in) + fr.off, fr.len, "GET / HTTP/1.1");
  hs_buf_consume(&in, fr.consumed, &pool);
  ASSERT_NULL(in.data);
  ASSERT_EQ(pool.count, 1);
  hs_pool_free(&pool);
}

const hs_test_t hs_frame_tests[] = {
    TEST_ENTRY(framer_builders_check_arguments),
    TEST_ENTRY(framer_names),
    TEST_ENTRY(raw_gives_whatever_is_there),
    TEST_ENTRY(raw_stream),
    TEST_ENTRY(line_strips_cr_before_lf),
    TEST_ENTRY(line_keeps_lone_cr_mid_line),
    TEST_ENTRY(line_needs_the_lf),
    TEST_ENTRY(line_scanned_hint),
    TEST_ENTRY(line_crlf_split_across_reads),
    TEST_ENTRY(line_of_exactly_max_frame_is_ok),
    TEST_ENTRY(line_toobig_as_soon_as_certain),
    TEST_ENTRY(line_stream),
    TEST_ENTRY(delim_single_byte),
    TEST_ENTRY(delim_nul_byte),
    TEST_ENTRY(delim_multibyte_straddles_reads),
    TEST_ENTRY(delim_partial_delimiter_is_payload),
    TEST_ENTRY(delim_self_overlapping),
    TEST_ENTRY(delim_max_frame),
    TEST_ENTRY(delim_toobig_as_soon_as_certain),
    TEST_ENTRY(length_each_kind),
    TEST_ENTRY(length_byte_order),
    TEST_ENTRY(length_zero_length_frames),
    TEST_ENTRY(length_varint_multibyte),
    TEST_ENTRY(length_varint_too_long_is_bad),
    TEST_ENTRY(length_toobig_before_body),
    TEST_ENTRY(length_streams),
    TEST_ENTRY(exact_frames),
    TEST_ENTRY(exact_over_max_frame_is_toobig_at_once),
    TEST_ENTRY(all_waits_for_eof),
    TEST_ENTRY(all_toobig_before_eof),
    TEST_ENTRY(switching_framers_reframes_buffered_bytes),
    TEST_END,
};
