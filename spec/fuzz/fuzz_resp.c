/* fuzz_resp.c: libFuzzer harness for the RESP framer (HS_FRAME_RESP in
 * src/frame.c) and hs_resp_argc / hs_resp_args, driven the way a connection
 * drives them, over an hs_buf_t (src/buf.c).
 *
 * Input: a 7-byte header, then the stream.
 *   h[0..1]   max_frame: 1 << 20 when h[0] has its top bit, else
 *             1 + ((h[0] & 0x7f) << 8 | h[1]) % 300
 *   h[2..5]   read boundaries: cut i at h[2+i] * (n + 1) / 256
 *   h[6]      slack of padded reads (see conn_feed): h[6] % 40 - 8
 *
 * The stream is fed whole, as reads ending at the four cuts (padded, so that
 * the buffer compacts and grows), and one byte per read. All three must give
 * the same commands, skips and arguments, and end the same way. Every answer
 * of the framer, on every buffered span it is shown, is checked against a
 * reference written naively from the rules in frame.h: the result, the
 * bytes consumed, the frame's length, and for an unfinished multibulk
 * command the scan hint (the offset of its first incomplete element and how
 * many elements are left). Each delivered command's arguments, from
 * hs_resp_args with a scratch of exactly the frame's length, must agree
 * with hs_resp_argc and with the reference's. Any mismatch calls abort().
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

#define HDR 7

/* The answers the reference allows the framer to give, as a mask. Only an
 * end that the rules leave open allows more than one: a command certainly
 * too big but not yet complete (TOOBIG now or later), or one over two
 * limits at once. */
#define A_MORE 1
#define A_TOOBIG 2
#define A_BAD 4
#define A_OK 8
#define A_SKIP 16

/* One thing the framer did with the stream: a command or a skip. */
typedef struct event {
  int skip;          /* HS_FRAME_SKIP: no frame, no arguments */
  size_t start;      /* stream offset of the command */
  size_t len;        /* the frame's length (0 for a skip) */
  size_t consumed;   /* bytes dropped */
  long argc;         /* its arguments */
  size_t arg_at;     /* where they are in run.args */
  size_t arg_len;    /* their serialized size */
} event_t;

/* A run: the events in order, the arguments serialized back to back (each
 * a size_t length then the bytes), and how it ended. */
typedef struct run {
  event_t *ev;
  size_t count, cap;
  char *args;
  size_t used, room;
  int end; /* framer: HS_FRAME_MORE, _TOOBIG or _BAD; reference: A_* mask */
} run_t;

/* Everything one input asks for. */
typedef struct job {
  hs_framer_t f;  /* hs_framer_resp */
  size_t max;     /* max_frame */
  const char *s;  /* the stream */
  size_t n;       /* its length */
  size_t cuts[4]; /* read boundaries, ascending, each in [0, n] */
  int slack;      /* free bytes left in the block by a padded read */
} job_t;

static void fail(const char *what, const job_t *j, size_t at) {
  fprintf(stderr, "fuzz_resp: %s (max_frame %zu, stream %zu bytes, at %zu)\n", what,
          j->max, j->n, at);
  abort();
}

static void run_init(run_t *r, size_t cap) {
  r->ev = malloc(cap * sizeof *r->ev);
  r->room = 64;
  r->args = malloc(r->room);
  if (!r->ev || !r->args) abort();
  r->count = 0;
  r->cap = cap;
  r->used = 0;
  r->end = HS_FRAME_MORE;
}

static void run_free(run_t *r) {
  free(r->ev);
  free(r->args);
}

static void args_put(run_t *r, const void *p, size_t n) {
  if (r->room - r->used < n) {
    while (r->room - r->used < n) r->room *= 2;
    r->args = realloc(r->args, r->room);
    if (!r->args) abort();
  }
  if (n) memcpy(r->args + r->used, p, n);
  r->used += n;
}

static void args_put_one(run_t *r, const char *arg, size_t len) {
  args_put(r, &len, sizeof len);
  args_put(r, arg, len);
}

static event_t *run_add(run_t *r, const job_t *j, size_t start) {
  if (r->count == r->cap) fail("more events than the stream allows", j, start);
  event_t *e = &r->ev[r->count++];
  memset(e, 0, sizeof *e);
  e->start = start;
  e->arg_at = r->used;
  return e;
}

/* ------------------------------------------------------------------------ */
/* The reference: the rules of frame.h, written for clarity over a span that
 * starts at a command. */

/* What the reference makes of q[0, rem). */
typedef struct ref {
  int allowed;      /* A_* */
  size_t consumed;  /* A_OK, A_SKIP */
  size_t len;       /* A_OK: the frame's length */
  long argc;        /* A_OK */
  size_t pos, left; /* multibulk, unfinished: the first incomplete element
                       (0, 0 while the header itself is) */
} ref_t;

/* The white space of isspace(3) in the C locale. Redis ends an unquoted
 * word only at space, tab, CR, LF or NUL; frame.h's split counts vertical
 * tab and form feed as white space too, and NUL as an ordinary byte, and
 * this follows frame.h. */
static int ref_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int ref_hex(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Redis's sdssplitargs over q[0, len), in its own shape: one character at a
 * time, c < 0 standing for the end of the line. The words go to out (when
 * not NULL); the count, or -1 for unbalanced quotes. */
static long ref_split(const char *q, size_t len, run_t *out) {
  const unsigned char *s = (const unsigned char *)q;
  size_t i = 0;
  long argc = 0;
  char *word = malloc(len + 1);
  if (!word) abort();
  for (;;) {
    while (i < len && ref_space(s[i])) i++;
    if (i == len) break;
    size_t w = 0;
    int inq = 0, insq = 0, done = 0;
    while (!done) {
      int c = i < len ? s[i] : -1;
      if (inq) {
        if (c == '\\' && i + 3 < len && s[i + 1] == 'x' && ref_hex(s[i + 2]) >= 0 &&
            ref_hex(s[i + 3]) >= 0) {
          word[w++] = (char)(ref_hex(s[i + 2]) * 16 + ref_hex(s[i + 3]));
          i += 3;
        } else if (c == '\\' && i + 1 < len) {
          i++;
          switch (s[i]) {
          case 'n': word[w++] = '\n'; break;
          case 'r': word[w++] = '\r'; break;
          case 't': word[w++] = '\t'; break;
          case 'b': word[w++] = '\b'; break;
          case 'a': word[w++] = '\a'; break;
          default: word[w++] = (char)s[i]; break;
          }
        } else if (c == '"') {
          /* the closing quote must be followed by white space or nothing */
          if (i + 1 < len && !ref_space(s[i + 1])) goto unbalanced;
          done = 1;
        } else if (c < 0) {
          goto unbalanced;
        } else {
          word[w++] = (char)c;
        }
      } else if (insq) {
        if (c == '\\' && i + 1 < len && s[i + 1] == '\'') {
          i++;
          word[w++] = '\'';
        } else if (c == '\'') {
          if (i + 1 < len && !ref_space(s[i + 1])) goto unbalanced;
          done = 1;
        } else if (c < 0) {
          goto unbalanced;
        } else {
          word[w++] = (char)c;
        }
      } else if (c < 0 || ref_space((unsigned char)c)) {
        done = 1;
      } else if (c == '"') {
        inq = 1;
      } else if (c == '\'') {
        insq = 1;
      } else {
        word[w++] = (char)c;
      }
      if (c >= 0) i++;
    }
    if (out) args_put_one(out, word, w);
    argc++;
  }
  free(word);
  return argc;
unbalanced:
  free(word);
  return -1;
}

/* An inline command: a line up to LF, a CR before it stripped. */
static void ref_inline(const char *q, size_t rem, size_t max, run_t *out, ref_t *r) {
  size_t lf = 0;
  while (lf < rem && q[lf] != '\n') lf++;
  if (lf == rem) {
    /* A last CR may yet be stripped; every byte before it is the line's. */
    size_t least = rem > 0 && q[rem - 1] == '\r' ? rem - 1 : rem;
    r->allowed = A_MORE;
    if (least > max) r->allowed |= A_TOOBIG;
    if (least > HS_RESP_MAX_INLINE) r->allowed |= A_BAD;
    return;
  }
  size_t len = lf > 0 && q[lf - 1] == '\r' ? lf - 1 : lf;
  if (len > max || len > HS_RESP_MAX_INLINE) {
    /* Over both limits, either answer is right. */
    r->allowed = (len > max ? A_TOOBIG : 0) | (len > HS_RESP_MAX_INLINE ? A_BAD : 0);
    return;
  }
  size_t mark = out ? out->used : 0;
  long argc = ref_split(q, len, out);
  if (argc < 0) {
    r->allowed = A_BAD;
  } else if (argc == 0) {
    r->allowed = A_SKIP;
    r->consumed = lf + 1;
  } else {
    r->allowed = A_OK;
    r->consumed = lf + 1;
    r->len = len;
    r->argc = argc;
    return;
  }
  if (out) out->used = mark;
}

/* A count or length line at q[0, rem) ("*3\r\n", "$-1\r\n"): its type byte,
 * an optional minus, 1 to 18 digits, CRLF, and a CR among its first 32
 * bytes. 1 with *v and *line (bytes with the CRLF), 0 when more bytes are
 * needed, -1 when it is malformed. */
static int ref_number_line(const char *q, size_t rem, long long *v, size_t *line) {
  size_t cr = 0;
  while (cr < rem && cr < 32 && q[cr] != '\r') cr++;
  if (cr == 32) return -1;
  if (cr + 1 >= rem) return 0;
  if (q[cr + 1] != '\n') return -1;
  size_t i = 1;
  int neg = i < cr && q[i] == '-';
  if (neg) i++;
  if (cr - i < 1 || cr - i > 18) return -1;
  long long x = 0;
  for (; i < cr; i++) {
    if (q[i] < '0' || q[i] > '9') return -1;
    x = x * 10 + (q[i] - '0');
  }
  *v = neg ? -x : x;
  *line = cr + 2;
  return 1;
}

/* A multibulk command: "*N\r\n", then N times "$len\r\n", len bytes, CRLF. */
static void ref_multibulk(const char *q, size_t rem, size_t max, run_t *out,
                          ref_t *r) {
  long long v;
  size_t line;
  r->pos = r->left = 0;
  int got = ref_number_line(q, rem, &v, &line);
  if (got == 0) {
    r->allowed = A_MORE;
    return;
  }
  if (got < 0 || v > HS_RESP_MAX_ARGS) {
    r->allowed = A_BAD;
    return;
  }
  if (v <= 0) {
    r->allowed = A_SKIP;
    r->consumed = line;
    return;
  }
  size_t mark = out ? out->used : 0;
  long long count = v;
  size_t at = line, left = (size_t)v;
  while (left > 0) {
    /* Each element still to come takes at least "$0\r\n\r\n": beyond
     * max_frame, TOOBIG is certain whatever else the bytes say. */
    int big = at + 6 * left > max ? A_TOOBIG : 0;
    r->pos = at, r->left = left;
    if (at > max) {
      r->allowed = A_TOOBIG;
      goto unfinished;
    }
    if (at == rem) {
      r->allowed = A_MORE | big;
      goto unfinished;
    }
    if (q[at] != '$') {
      r->allowed = A_BAD | big;
      goto unfinished;
    }
    got = ref_number_line(q + at, rem - at, &v, &line);
    if (got <= 0 || v < 0 || v > HS_RESP_MAX_BULK) {
      r->allowed = (got == 0 ? A_MORE : A_BAD) | big;
      goto unfinished;
    }
    size_t end = at + line + (size_t)v + 2;
    big = end + 6 * (left - 1) > max ? A_TOOBIG : 0;
    if (end > max) {
      r->allowed = A_TOOBIG; /* the length line says so: no waiting */
      goto unfinished;
    }
    if (end > rem) {
      r->allowed = A_MORE | big;
      goto unfinished;
    }
    if (q[end - 2] != '\r' || q[end - 1] != '\n') {
      r->allowed = A_BAD | big;
      goto unfinished;
    }
    if (out) args_put_one(out, q + at + line, (size_t)v);
    at = end;
    left--;
  }
  r->allowed = A_OK;
  r->consumed = r->len = at;
  r->argc = (long)count;
  return;
unfinished:
  if (out) out->used = mark;
}

/* The reference's answer for q[0, rem), a span starting at a command. */
static void ref_next(const char *q, size_t rem, size_t max, run_t *out, ref_t *r) {
  memset(r, 0, sizeof *r);
  if (rem == 0) r->allowed = A_MORE;
  else if (q[0] == '*') ref_multibulk(q, rem, max, out, r);
  else ref_inline(q, rem, max, out, r);
}

/* The whole stream through the reference, as if it came in one read. */
static void reference(const job_t *j, run_t *out) {
  size_t pos = 0;
  for (;;) {
    ref_t r;
    size_t mark = out->used;
    ref_next(j->s + pos, j->n - pos, j->max, out, &r);
    if (r.allowed != A_OK && r.allowed != A_SKIP) {
      out->end = r.allowed;
      return;
    }
    event_t *e = run_add(out, j, pos);
    e->arg_at = mark;
    e->skip = r.allowed == A_SKIP;
    e->len = r.len;
    e->consumed = r.consumed;
    e->argc = r.argc;
    e->arg_len = out->used - mark;
    pos += r.consumed;
  }
}

/* ------------------------------------------------------------------------ */
/* The framer as a connection drives it. */

/* One connection's read side. */
typedef struct conn {
  const job_t *j;  /* the input */
  hs_pool_t pool;  /* the loop's block pool */
  hs_buf_t in;     /* unframed input */
  hs_scan_t scan;  /* the framer's hint */
  size_t base;     /* stream offset of in's first unread byte */
  int done;        /* an error ended it */
  int pad;         /* start reads into an empty buffer near its end */
  run_t *out;      /* what was seen */
} conn_t;

/* Where hs_resp_args' callback puts arguments, and where they may point. */
typedef struct sink {
  const job_t *j;
  run_t *out;
  const char *lo, *hi;
  long count;
} sink_t;

static void sink_arg(void *ud, const char *arg, size_t len) {
  sink_t *k = ud;
  if (len > 0 && (arg < k->lo || arg > k->hi || len > (size_t)(k->hi - arg)))
    fail("an argument outside the frame or scratch", k->j, (size_t)k->count);
  args_put_one(k->out, arg, len);
  k->count++;
}

/* The arguments of the frame p[0, len): hs_resp_args must agree with
 * hs_resp_argc and with how often it calls back. A multibulk command's are
 * slices of p and get no scratch; an inline one's get exactly len bytes on
 * the heap, so that a write past them is caught. */
static void frame_args(conn_t *c, const char *p, size_t len, event_t *e) {
  const job_t *j = c->j;
  int multi = len > 0 && p[0] == '*';
  char *scratch = multi ? NULL : malloc(len ? len : 1);
  if (!multi && !scratch) abort();
  sink_t k = {j, c->out, multi ? p : scratch, multi ? p + len : scratch + len, 0};
  long argc = hs_resp_argc(p, len);
  long got = hs_resp_args(p, len, scratch, sink_arg, &k);
  free(scratch);
  if (argc <= 0) fail("a delivered command without arguments", j, c->base);
  if (got != argc || k.count != argc) fail("hs_resp_args disagrees with hs_resp_argc", j, c->base);
  e->argc = argc;
  e->arg_len = c->out->used - e->arg_at;
}

/* Frame what is buffered until the framer needs more, checking each answer
 * against the reference for the very same span. */
static void conn_frames(conn_t *c, int eof) {
  static const char empty[1];
  const job_t *j = c->j;
  while (!c->done) {
    size_t n = hs_buf_len(&c->in);
    /* Not hs_buf_peek on an empty buffer: NULL + 0, which UBSan reports. */
    const char *p = n ? hs_buf_peek(&c->in) : empty;
    if (n && memcmp(p, j->s + c->base, n) != 0) fail("buffer corrupted", j, c->base);
    hs_frame_t fr = {SIZE_MAX, SIZE_MAX, SIZE_MAX, NULL};
    size_t before = c->scan.pos;
    int r = hs_frame_next(&j->f, p, n, j->max, eof, &c->scan, &fr);
    ref_t want;
    ref_next(p, n, j->max, NULL, &want);
    int as = r == HS_FRAME_MORE     ? A_MORE
             : r == HS_FRAME_TOOBIG ? A_TOOBIG
             : r == HS_FRAME_BAD    ? A_BAD
             : r == HS_FRAME_OK     ? A_OK
             : r == HS_FRAME_SKIP   ? A_SKIP
                                    : 0;
    if (!(as & want.allowed)) fail("an answer the rules do not allow", j, c->base);
    switch (r) {
    case HS_FRAME_MORE:
      if (c->scan.pos < before || c->scan.pos > n) fail("bad scan hint", j, c->base);
      if (n > 0 && p[0] == '*' && (c->scan.pos != want.pos || c->scan.left != want.left))
        fail("scan hint is not the first incomplete element", j, c->base);
      return;
    case HS_FRAME_TOOBIG:
    case HS_FRAME_BAD:
      if (r == HS_FRAME_BAD && (!fr.why || strncmp(fr.why, "Protocol error: ", 16) != 0))
        fail("BAD without a protocol error", j, c->base);
      c->out->end = r;
      c->done = 1;
      return;
    default:
      break;
    }
    if (fr.consumed != want.consumed || fr.consumed == 0 || fr.consumed > n)
      fail("consumed differs from the reference", j, c->base);
    event_t *e = run_add(c->out, j, c->base);
    e->consumed = fr.consumed;
    if (r == HS_FRAME_SKIP) {
      e->skip = 1;
    } else {
      if (fr.off != 0 || fr.len != want.len) fail("frame differs from the reference", j, c->base);
      if (fr.len > j->max) fail("frame over max_frame", j, c->base);
      e->len = fr.len;
      frame_args(c, p, fr.len, e);
    }
    hs_buf_consume(&c->in, fr.consumed, &c->pool);
    c->base += fr.consumed;
    c->scan = (hs_scan_t){0, 0};
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
/* Comparisons. */

static int same_events(const run_t *a, const event_t *x, const run_t *b,
                       const event_t *y) {
  return x->skip == y->skip && x->start == y->start && x->len == y->len &&
         x->consumed == y->consumed && x->argc == y->argc && x->arg_len == y->arg_len &&
         memcmp(a->args + x->arg_at, b->args + y->arg_at, x->arg_len) == 0;
}

/* The events of two runs, and of a run and the reference, must be equal. */
static void same_runs(const job_t *j, const run_t *a, const run_t *b, const char *what) {
  if (a->count != b->count) fail(what, j, a->count < b->count ? a->count : b->count);
  for (size_t i = 0; i < a->count; i++)
    if (!same_events(a, &a->ev[i], b, &b->ev[i])) fail(what, j, i);
}

/* ------------------------------------------------------------------------ */

/* Read the header into a job; 0 when the input is too short. */
static int parse(const uint8_t *data, size_t size, job_t *j) {
  if (size < HDR) return 0;
  const uint8_t *h = data;
  j->s = (const char *)data + HDR;
  j->n = size - HDR;
  j->max = (h[0] & 0x80) ? (size_t)1 << 20
                         : 1 + (size_t)((h[0] & 0x7f) << 8 | h[1]) % 300;
  hs_framer_resp(&j->f);
  for (size_t i = 0; i < 4; i++) j->cuts[i] = (size_t)h[2 + i] * (j->n + 1) / 256;
  j->slack = h[6] % 40 - 8; /* below 0: the padded read grows */
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
  /* Every command and skip consumes at least one byte. */
  run_t whole, split, bytes, ref;
  run_init(&whole, j.n + 1);
  run_init(&split, j.n + 1);
  run_init(&bytes, j.n + 1);
  run_init(&ref, j.n + 1);
  drive(&j, NULL, 0, 0, 0, &whole);
  drive(&j, j.cuts, 4, 0, 1, &split);
  drive(&j, NULL, 0, 1, 0, &bytes);
  reference(&j, &ref);
  same_runs(&j, &whole, &split, "split reads give other commands");
  same_runs(&j, &whole, &bytes, "one-byte reads give other commands");
  if (whole.end != split.end || whole.end != bytes.end)
    fail("the end depends on how the reads were cut", &j, whole.count);
  same_runs(&j, &whole, &ref, "commands differ from the reference");
  int as = whole.end == HS_FRAME_MORE ? A_MORE : whole.end == HS_FRAME_TOOBIG ? A_TOOBIG : A_BAD;
  if (!(as & ref.end)) fail("end differs from the reference", &j, whole.count);
  run_free(&whole);
  run_free(&split);
  run_free(&bytes);
  run_free(&ref);
  return 0;
}
