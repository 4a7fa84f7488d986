/* http1.c: HTTP/1.x requests framed in C (see http1.h). The rules are
 * those of lua/hotsock/http.lua's parser (parse_request_line, add_header,
 * body_kind and the chunked body reader), refusal for refusal, so that a
 * script sees the same requests refused with the same words. */
#include "http1.h"

#include <string.h>

/* What the scan awaits once the head is parsed (scan->left & 3). */
#define PH_LENGTH 1  /* a Content-Length body ending at scan->pos */
#define PH_SIZE 2    /* a chunk-size line at scan->pos */
#define PH_TRAILER 3 /* a trailer line (or the blank line) at scan->pos */
#define TRAIL_SHIFT 2
#define TRAIL_MASK 127u
#define TOTAL_SHIFT 9
#define MAX_BODY_CAP ((size_t)1 << 50) /* so that the body count fits beside the rest */

void hs_http1_limits(const hs_framer_t *f, size_t max_frame, hs_http1_limits_t *lim) {
  lim->max_head = f->max_head && f->max_head < max_frame ? f->max_head : max_frame;
  lim->max_line = f->max_line && f->max_line < lim->max_head ? f->max_line : lim->max_head;
  lim->max_headers = f->max_headers ? f->max_headers : HS_HTTP1_MAX_HEADERS;
  lim->max_body = max_frame < MAX_BODY_CAP ? max_frame : MAX_BODY_CAP;
}

static int fail(const char **why, int r, const char *text) {
  *why = text;
  return r;
}

/* Lua's %s in the C locale. */
static int is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* tchar: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  switch (c) {
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~': return 1;
  default: return 0;
  }
}

static int is_token(const char *s, size_t n) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_tchar((unsigned char)s[i])) return 0;
  return 1;
}

static unsigned char lc(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* Is s[0, n) the lower-case word w, ignoring case? */
static int ieq(const char *s, size_t n, const char *w) {
  size_t k = strlen(w);
  if (n != k) return 0;
  for (size_t i = 0; i < n; i++)
    if (lc((unsigned char)s[i]) != (unsigned char)w[i]) return 0;
  return 1;
}

static int hex_digit(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Transfer-Encoding codings, as body_kind sees them: every TE value joined
 * with ", " and split at commas, empty pieces skipped, each trimmed of
 * spaces and tabs. Only how many there are and whether the last is
 * "chunked" matter. */
typedef struct te_state {
  size_t headers; /* TE header lines seen */
  size_t codings;
  int last_chunked;
} te_state_t;

static void te_piece(te_state_t *te, const char *s, size_t n) {
  while (n && (s[0] == ' ' || s[0] == '\t')) s++, n--;
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  te->codings++;
  te->last_chunked = ieq(s, n, "chunked");
}

static void te_value(te_state_t *te, const char *v, size_t n) {
  /* After the first value, the joining ", " leaves a " " in front of the
   * value's first piece: that piece is never empty, even when the value is. */
  int first_counts = te->headers++ > 0;
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && v[i] != ',') continue;
    if (i > start || (start == 0 && first_counts)) te_piece(te, v + start, i - start);
    start = i + 1;
  }
}

/* The request line at p[0, len) (its line end removed). */
static int request_line(const char *p, size_t len, const hs_http1_limits_t *lim,
                        hs_http1_req_t *req, const char **why) {
  if (len > lim->max_line) return fail(why, HS_FRAME_TOOBIG, "request line too long");
  /* ^(%S+) (%S+) HTTP/(%d)%.(%d)$ */
  size_t i = 0;
  while (i < len && !is_space((unsigned char)p[i])) i++;
  size_t mlen = i;
  if (mlen == 0 || i == len || p[i] != ' ')
    return fail(why, HS_FRAME_BAD, "malformed request line");
  size_t ts = ++i;
  while (i < len && !is_space((unsigned char)p[i])) i++;
  size_t tlen = i - ts;
  if (tlen == 0 || i == len || p[i] != ' ')
    return fail(why, HS_FRAME_BAD, "malformed request line");
  i++;
  if (len - i != 8 || memcmp(p + i, "HTTP/", 5) != 0 || p[i + 5] < '0' || p[i + 5] > '9' ||
      p[i + 6] != '.' || p[i + 7] < '0' || p[i + 7] > '9')
    return fail(why, HS_FRAME_BAD, "malformed request line");
  if (!is_token(p, mlen)) return fail(why, HS_FRAME_BAD, "malformed method");
  for (size_t k = ts; k < ts + tlen; k++) {
    unsigned char c = (unsigned char)p[k];
    if (c < 32 || c == 127) return fail(why, HS_FRAME_BAD, "malformed request target");
  }
  if (p[i + 5] != '1') return fail(why, HS_FRAME_BAD, "unsupported HTTP version");
  req->method_len = mlen;
  req->target_off = ts;
  req->target_len = tlen;
  req->minor = p[i + 7] - '0';
  return 0;
}

int hs_http1_head(const char *p, size_t n, const hs_http1_limits_t *lim, hs_http1_req_t *req,
                  hs_http1_header_fn fn, void *ud, const char **why) {
  memset(req, 0, sizeof *req);
  const char *q = memchr(p, '\n', n);
  size_t e = q ? (size_t)(q - p) : n;
  size_t le = e > 0 && p[e - 1] == '\r' ? e - 1 : e;
  int r = request_line(p, le, lim, req, why);
  if (r) return r;
  if (!q) return fail(why, HS_FRAME_BAD, "malformed request line"); /* not a head */
  const char *cl = NULL; /* the first Content-Length value */
  size_t cl_len = 0;
  size_t expects = 0;
  int expect_ok = 0;
  te_state_t te = {0, 0, 0};
  size_t ls = e + 1;
  for (;;) {
    if (ls >= n) break; /* no blank line: an interim head */
    q = memchr(p + ls, '\n', n - ls);
    if (!q) break; /* an unfinished line: not looked at */
    e = (size_t)(q - p);
    le = e > ls && p[e - 1] == '\r' ? e - 1 : e;
    if (le == ls) { /* the blank line */
      req->complete = 1;
      req->head_size = ls;
      req->head_len = e + 1;
      break;
    }
    const char *line = p + ls;
    size_t len = le - ls;
    if (line[0] == ' ' || line[0] == '\t')
      return fail(why, HS_FRAME_BAD, "obsolete header line folding");
    const char *colon = memchr(line, ':', len);
    if (!colon || !is_token(line, (size_t)(colon - line)))
      return fail(why, HS_FRAME_BAD, "malformed header line");
    size_t nlen = (size_t)(colon - line);
    size_t vs = nlen + 1, ve = len;
    while (vs < len && (line[vs] == ' ' || line[vs] == '\t')) vs++;
    while (ve > vs && (line[ve - 1] == ' ' || line[ve - 1] == '\t')) ve--;
    const char *v = line + vs;
    size_t vlen = ve - vs;
    for (size_t k = 0; k < vlen; k++)
      if (v[k] == '\r' || v[k] == '\n' || v[k] == '\0')
        return fail(why, HS_FRAME_BAD, "malformed header value");
    if (req->nheaders >= lim->max_headers) return fail(why, HS_FRAME_BAD, "too many headers");
    req->nheaders++;
    if (nlen == 14 && ieq(line, nlen, "content-length")) {
      if (!cl) {
        cl = v, cl_len = vlen;
      } else if (cl_len != vlen || memcmp(cl, v, vlen) != 0) {
        return fail(why, HS_FRAME_BAD, "conflicting Content-Length headers");
      }
    } else if (nlen == 17 && ieq(line, nlen, "transfer-encoding")) {
      te_value(&te, v, vlen);
    } else if (nlen == 6 && ieq(line, nlen, "expect")) {
      expects++;
      expect_ok = ieq(v, vlen, "100-continue");
    }
    if (fn) fn(ud, line, nlen, v, vlen);
    ls = e + 1;
  }
  if (!req->complete) req->head_size = ls;
  req->expect_continue = req->minor >= 1 && expects == 1 && expect_ok;
  /* body_kind */
  if (te.headers) {
    if (cl) return fail(why, HS_FRAME_BAD, "both Transfer-Encoding and Content-Length");
    if (req->minor == 0) return fail(why, HS_FRAME_BAD, "Transfer-Encoding in an HTTP/1.0 request");
    if (te.codings == 1 && te.last_chunked) {
      req->body = HS_HTTP1_BODY_CHUNKED;
      return 0;
    }
    if (!te.last_chunked) return fail(why, HS_FRAME_BAD, "bad Transfer-Encoding");
    return fail(why, HS_FRAME_BAD, "unsupported Transfer-Encoding");
  }
  if (cl) {
    if (cl_len == 0 || cl_len > 15) return fail(why, HS_FRAME_BAD, "bad Content-Length");
    uint64_t v = 0;
    for (size_t k = 0; k < cl_len; k++) {
      if (cl[k] < '0' || cl[k] > '9') return fail(why, HS_FRAME_BAD, "bad Content-Length");
      v = v * 10 + (uint64_t)(cl[k] - '0');
    }
    if (v) {
      req->body = HS_HTTP1_BODY_LENGTH;
      req->length = v;
    }
  }
  return 0;
}

/* The blank line ending the head at p[0, n) (searched from `from`): the
 * offset of its LF, or n. A line's LF ends the head when the line before
 * it ended right there ("\n\n") or one CR earlier ("\n\r\n"). */
static size_t head_end(const char *p, size_t n, size_t from) {
  if (from < 1) from = 1; /* p[0] is never a blank line's LF: leading ones are skipped */
  while (from < n) {
    const char *q = memchr(p + from, '\n', n - from);
    if (!q) return n;
    size_t e = (size_t)(q - p);
    if (p[e - 1] == '\n' || (p[e - 1] == '\r' && e >= 2 && p[e - 2] == '\n')) return e;
    from = e + 1;
  }
  return n;
}

static int interim(size_t head_size, hs_frame_t *out) {
  out->off = 0, out->len = head_size, out->consumed = 0;
  return HS_FRAME_OK;
}

static void save(hs_scan_t *scan, size_t pos, unsigned ph, size_t ntrail, size_t total) {
  scan->pos = pos;
  scan->left = (total << TOTAL_SHIFT) | (ntrail << TRAIL_SHIFT) | ph;
}

/* Chunks from p[pos]: a chunk-size line (PH_SIZE) or a trailer line
 * (PH_TRAILER) starts there; total body bytes are behind it. */
static int chunks(const hs_http1_limits_t *lim, const char *p, size_t n, size_t pos, unsigned ph,
                  size_t ntrail, size_t total, hs_scan_t *scan, hs_frame_t *out) {
  for (;;) {
    size_t avail = n - pos;
    size_t linemax = ph == PH_SIZE ? HS_HTTP1_CHUNK_LINE : lim->max_line;
    size_t look = avail < linemax + 2 ? avail : linemax + 2;
    const char *q = look ? memchr(p + pos, '\n', look) : NULL;
    if (!q) {
      if (avail >= linemax + 2) {
        out->why = ph == PH_SIZE ? "chunk line too long" : "trailer line too long";
        return HS_FRAME_BAD;
      }
      save(scan, pos, ph, ntrail, total);
      return HS_FRAME_MORE;
    }
    size_t lf = (size_t)(q - p);
    size_t le = lf > pos && p[lf - 1] == '\r' ? lf - 1 : lf;
    if (ph == PH_TRAILER) {
      if (le == pos) { /* the blank line: the body is complete */
        size_t hl = head_end(p, n, 1) + 1;
        out->off = 0, out->len = hl + total, out->consumed = lf + 1;
        return HS_FRAME_OK;
      }
      if (ntrail >= HS_HTTP1_MAX_TRAILERS) {
        out->why = "too many trailer lines";
        return HS_FRAME_BAD;
      }
      ntrail++;
      pos = lf + 1;
      continue;
    }
    /* chunk-size [ chunk-ext ]: ^(%x+)[ \t]*(.*)$, the rest empty or ";..." */
    size_t i = pos;
    while (i < le && hex_digit((unsigned char)p[i]) >= 0) i++;
    size_t j = i;
    while (j < le && (p[j] == ' ' || p[j] == '\t')) j++;
    if (i == pos || (j < le && p[j] != ';')) {
      out->why = "malformed chunk size";
      return HS_FRAME_BAD;
    }
    size_t k = pos;
    while (k < i && p[k] == '0') k++;
    if (i - k > 12) {
      out->why = "body too large";
      return HS_FRAME_TOOBIG;
    }
    uint64_t size = 0;
    for (; k < i; k++) size = size * 16 + (uint64_t)hex_digit((unsigned char)p[k]);
    if (size == 0) {
      ph = PH_TRAILER;
      pos = lf + 1;
      continue;
    }
    if (size > lim->max_body - total) {
      out->why = "body too large";
      return HS_FRAME_TOOBIG;
    }
    size_t data = lf + 1, sz = (size_t)size;
    if (n - data < sz + 2) {
      if (n - data > sz && p[data + sz] != '\r') {
        out->why = "chunk data not followed by CRLF";
        return HS_FRAME_BAD;
      }
      save(scan, pos, PH_SIZE, ntrail, total);
      return HS_FRAME_MORE;
    }
    if (p[data + sz] != '\r' || p[data + sz + 1] != '\n') {
      out->why = "chunk data not followed by CRLF";
      return HS_FRAME_BAD;
    }
    total += sz;
    pos = data + sz + 2;
  }
}

int hs_http1_next(const hs_framer_t *f, const char *p, size_t n, size_t max_frame, hs_scan_t *scan,
                  hs_frame_t *out) {
  hs_http1_limits_t lim;
  hs_http1_limits(f, max_frame, &lim);
  if (scan->left) {
    unsigned ph = (unsigned)(scan->left & 3);
    if (ph == PH_LENGTH) {
      if (n < scan->pos) return HS_FRAME_MORE;
      out->off = 0, out->len = scan->pos, out->consumed = scan->pos;
      return HS_FRAME_OK;
    }
    return chunks(&lim, p, n, scan->pos, ph, (size_t)(scan->left >> TRAIL_SHIFT) & TRAIL_MASK,
                  (size_t)(scan->left >> TOTAL_SHIFT), scan, out);
  }
  if (n == 0) return HS_FRAME_MORE;
  /* Empty lines before a request line are ignored (RFC 9112 2.2). */
  size_t i = 0;
  while (i < n) {
    if (p[i] == '\n')
      i++;
    else if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
      i += 2;
    else
      break;
  }
  if (i) {
    out->off = 0, out->len = 0, out->consumed = i;
    return HS_FRAME_SKIP;
  }
  size_t e = head_end(p, n, scan->pos ? scan->pos : 1);
  if (e == n) {
    scan->pos = n;
    /* Too long already? The request line when no LF ends it in time; the
     * head when more than max_head bytes are here (a blank line still to
     * come takes at most one of them: its CR). */
    if (n > lim.max_line) {
      size_t look = n - lim.max_line >= 2 ? lim.max_line + 2 : n;
      const char *q = memchr(p, '\n', look);
      size_t l = q ? (size_t)(q - p) : look;
      if (q && l > 0 && p[l - 1] == '\r') l--;
      if (l > lim.max_line && (q || look == lim.max_line + 2)) {
        out->why = "request line too long";
        return HS_FRAME_TOOBIG;
      }
    }
    if (n - 1 > lim.max_head) {
      out->why = "request head too large";
      return HS_FRAME_TOOBIG;
    }
    return HS_FRAME_MORE;
  }
  size_t head_size = p[e - 1] == '\r' ? e - 1 : e, head_len = e + 1;
  if (head_size > lim.max_head) {
    const char *q = memchr(p, '\n', e);
    size_t l = (size_t)(q - p);
    if (l > 0 && p[l - 1] == '\r') l--;
    out->why = l > lim.max_line ? "request line too long" : "request head too large";
    return HS_FRAME_TOOBIG;
  }
  hs_http1_req_t req;
  int r = hs_http1_head(p, head_len, &lim, &req, NULL, NULL, &out->why);
  if (r) return r;
  switch (req.body) {
  case HS_HTTP1_BODY_LENGTH: {
    if (req.length > lim.max_body) {
      out->why = "body too large";
      return HS_FRAME_TOOBIG;
    }
    size_t end = head_len + (size_t)req.length;
    if (n >= end) {
      out->off = 0, out->len = end, out->consumed = end;
      return HS_FRAME_OK;
    }
    save(scan, end, PH_LENGTH, 0, 0);
    return f->http_continue && req.expect_continue ? interim(head_size, out) : HS_FRAME_MORE;
  }
  case HS_HTTP1_BODY_CHUNKED:
    r = chunks(&lim, p, n, head_len, PH_SIZE, 0, 0, scan, out);
    if (r == HS_FRAME_MORE && f->http_continue && req.expect_continue)
      return interim(head_size, out);
    return r;
  default: out->off = 0, out->len = head_len, out->consumed = head_len; return HS_FRAME_OK;
  }
}

void hs_http1_join(char *p, hs_frame_t *out) {
  if (out->consumed <= out->len) return; /* not chunked (or an interim head) */
  size_t end = out->consumed;
  size_t pos = head_end(p, end, 1) + 1, w = pos;
  for (;;) {
    const char *q = memchr(p + pos, '\n', end - pos);
    size_t lf = (size_t)(q - p);
    size_t i = pos;
    uint64_t size = 0;
    int d;
    while ((d = hex_digit((unsigned char)p[i])) >= 0) {
      size = size * 16 + (uint64_t)d;
      i++;
    }
    if (size == 0) break;
    memmove(p + w, p + lf + 1, (size_t)size);
    w += (size_t)size;
    pos = lf + 1 + (size_t)size + 2;
  }
  out->off = 0;
  out->len = w;
}
