/* frame.c: the framers. Each call is given the unconsumed bytes and says where
 * the next frame is; a frame is never copied here. */
#include "frame.h"
#include "http1.h"

#include <stdio.h>
#include <string.h>

void hs_framer_raw(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_RAW;
}

void hs_framer_line(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_LINE;
}

void hs_framer_line_keep(hs_framer_t *f) {
  hs_framer_line(f);
  f->keep_eol = 1;
}

/* Strict lines: the delimiter framer with CRLF, under its own kind so that
 * logs, --check and the fuzz reference name it. */
void hs_framer_crlf(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_CRLF;
  memcpy(f->delim, "\r\n", 2);
  f->delim_len = 2;
}

void hs_framer_all(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_ALL;
}

void hs_framer_resp(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_RESP;
}

void hs_framer_http(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_HTTP;
}

int hs_framer_set_http(hs_framer_t *f, size_t max_head, size_t max_line, size_t max_headers,
                       int cont) {
  if (f->kind != HS_FRAME_HTTP || max_headers > HS_HTTP1_MAX_HEADERS_CAP) return -1;
  f->max_head = max_head;
  f->max_line = max_line;
  f->max_headers = max_headers;
  f->http_continue = cont != 0;
  return 0;
}

int hs_framer_delim(hs_framer_t *f, const char *d, size_t len) {
  if (len == 0 || len > HS_DELIM_MAX) return -1;
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_DELIM;
  memcpy(f->delim, d, len);
  f->delim_len = len;
  return 0;
}

int hs_framer_exact(hs_framer_t *f, size_t n) {
  if (n == 0) return -1;
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_EXACT;
  f->exact = n;
  return 0;
}

static const char *const len_names[] = {"u8", "u16be", "u16le", "u32be", "u32le", "varint"};

int hs_framer_length(hs_framer_t *f, const char *name) {
  for (int i = 0; i < (int)(sizeof len_names / sizeof *len_names); i++) {
    if (strcmp(name, len_names[i]) == 0) {
      memset(f, 0, sizeof *f);
      f->kind = HS_FRAME_LENGTH;
      f->len_kind = (hs_len_kind_t)i;
      if (f->len_kind == HS_LEN_VARINT) f->max_bytes = HS_VARINT_MAX;
      return 0;
    }
  }
  return -1;
}

int hs_framer_set_header(hs_framer_t *f, size_t n) {
  if (f->kind != HS_FRAME_LENGTH || n > HS_HEADER_MAX) return -1;
  f->header = n;
  return 0;
}

int hs_framer_set_max_bytes(hs_framer_t *f, size_t n) {
  if (f->kind != HS_FRAME_LENGTH || f->len_kind != HS_LEN_VARINT || n < 1 || n > HS_VARINT_MAX)
    return -1;
  f->max_bytes = (unsigned)n;
  return 0;
}

const char *hs_framer_name(const hs_framer_t *f) {
  switch (f->kind) {
  case HS_FRAME_RAW: return "raw";
  case HS_FRAME_LINE: return f->keep_eol ? "L" : "line";
  case HS_FRAME_CRLF: return "crlf";
  case HS_FRAME_DELIM: return "delimiter";
  case HS_FRAME_EXACT: return "exact";
  case HS_FRAME_ALL: return "all";
  case HS_FRAME_RESP: return "resp";
  case HS_FRAME_HTTP: return "http";
  case HS_FRAME_LENGTH:
    switch (f->len_kind) {
    case HS_LEN_U8: return "length u8";
    case HS_LEN_U16BE: return "length u16be";
    case HS_LEN_U16LE: return "length u16le";
    case HS_LEN_U32BE: return "length u32be";
    case HS_LEN_U32LE: return "length u32le";
    case HS_LEN_VARINT: return "length varint";
    }
  }
  return "?";
}

/* The name, then the options a length framing has beyond its defaults, each
 * appended only while buf has room (snprintf truncates and says so). */
const char *hs_framer_describe(const hs_framer_t *f, char *buf, size_t len) {
  int w = snprintf(buf, len, "%s", hs_framer_name(f));
  size_t at = w < 0 ? 0 : (size_t)w;
  if (f->kind == HS_FRAME_LENGTH && f->header && at < len)
    at += (size_t)snprintf(buf + at, len - at, " header %zu", f->header);
  if (f->kind == HS_FRAME_LENGTH && f->len_kind == HS_LEN_VARINT && f->max_bytes != HS_VARINT_MAX &&
      at < len)
    snprintf(buf + at, len - at, " max_bytes %u", f->max_bytes);
  if (f->kind == HS_FRAME_HTTP) {
    if (f->max_head && at < len) at += (size_t)snprintf(buf + at, len - at, " max_head %zu", f->max_head);
    if (f->max_line && at < len) at += (size_t)snprintf(buf + at, len - at, " max_line %zu", f->max_line);
    if (f->max_headers && at < len)
      at += (size_t)snprintf(buf + at, len - at, " max_headers %zu", f->max_headers);
    if (f->http_continue && at < len) snprintf(buf + at, len - at, " continue");
  }
  return buf;
}

/* Decode the length prefix at p[0, n): 1 with *len and *hdr set, 0 when more
 * bytes are needed, HS_FRAME_BAD for a varint longer than max_bytes (at most
 * 10) or over 64 bits. */
static int decode_len(hs_len_kind_t k, unsigned max_bytes, const unsigned char *p, size_t n,
                      uint64_t *len, size_t *hdr) {
  switch (k) {
  case HS_LEN_U8:
    if (n < 1) return 0;
    *len = p[0], *hdr = 1;
    return 1;
  case HS_LEN_U16BE:
    if (n < 2) return 0;
    *len = (uint64_t)p[0] << 8 | p[1], *hdr = 2;
    return 1;
  case HS_LEN_U16LE:
    if (n < 2) return 0;
    *len = (uint64_t)p[1] << 8 | p[0], *hdr = 2;
    return 1;
  case HS_LEN_U32BE:
    if (n < 4) return 0;
    *len = (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
    *hdr = 4;
    return 1;
  case HS_LEN_U32LE:
    if (n < 4) return 0;
    *len = (uint64_t)p[3] << 24 | (uint64_t)p[2] << 16 | (uint64_t)p[1] << 8 | p[0];
    *hdr = 4;
    return 1;
  case HS_LEN_VARINT: {
    uint64_t v = 0;
    if (max_bytes == 0 || max_bytes > HS_VARINT_MAX) max_bytes = HS_VARINT_MAX;
    for (size_t i = 0; i < max_bytes; i++) {
      if (i >= n) return 0;
      uint64_t bits = p[i] & 0x7f;
      if (i == 9 && bits > 1) return HS_FRAME_BAD; /* over 64 bits */
      v |= bits << (7 * i);
      if (!(p[i] & 0x80)) {
        *len = v, *hdr = i + 1;
        return 1;
      }
    }
    return HS_FRAME_BAD;
  }
  }
  return HS_FRAME_BAD;
}

/* Search for delim in p[0, n) starting at from; the offset or n. */
static size_t find(const char *p, size_t n, size_t from, const char *d, size_t dl) {
  if (dl == 1) {
    const char *q = from < n ? memchr(p + from, d[0], n - from) : NULL;
    return q ? (size_t)(q - p) : n;
  }
  while (from + dl <= n) {
    const char *q = memchr(p + from, d[0], n - from - dl + 1);
    if (!q) break;
    size_t at = (size_t)(q - p);
    if (memcmp(q, d, dl) == 0) return at;
    from = at + 1;
  }
  return n;
}

/* ---- RESP (the Redis protocol) ---- */

/* A count or length line ("*3\r\n", "$5\r\n") is short; Redis refuses
 * longer ones too. */
#define RESP_NUM_LINE 32

static int bad(hs_frame_t *out, const char *why) {
  out->why = why;
  return HS_FRAME_BAD;
}

/* Parse the number after the type byte at p[0] of a line ending at p[cr]
 * (the CR). 0 with *v set, -1 when it is not a decimal integer. */
static int resp_number(const char *p, size_t cr, long long *v) {
  size_t i = 1;
  int neg = 0;
  if (i < cr && p[i] == '-') neg = 1, i++;
  if (i == cr || cr - i > 18) return -1;
  long long x = 0;
  for (; i < cr; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    x = x * 10 + (p[i] - '0');
  }
  *v = neg ? -x : x;
  return 0;
}

/* Find the end of a count or length line at p[0, n): 1 with *cr at its CR,
 * 0 when more bytes are needed, HS_FRAME_BAD when it cannot be one. */
static int resp_line(const char *p, size_t n, size_t *cr, hs_frame_t *out) {
  size_t lim = n < RESP_NUM_LINE ? n : RESP_NUM_LINE;
  const char *q = memchr(p, '\r', lim);
  if (!q) return n < RESP_NUM_LINE ? 0 : bad(out, "Protocol error: number line too long");
  size_t at = (size_t)(q - p);
  if (at + 1 >= n) return 0;
  if (p[at + 1] != '\n') return bad(out, "Protocol error: expected CRLF");
  *cr = at;
  return 1;
}

static int is_space(char ch) {
  return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

static int hex_val(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* Split an inline command as Redis does (sdssplitargs): words apart by
 * white space; "double quotes" take \n \r \t \b \a \xHH and \<any>;
 * 'single quotes' take \'; a closing quote must end the word. With out,
 * each word is written there and passed to fn. The count, or -1. */
static long split_inline(const char *p, size_t len, char *out, hs_resp_arg_fn fn, void *ud) {
  size_t i = 0;
  long argc = 0;
  char *w = out;
  for (;;) {
    while (i < len && is_space(p[i])) i++;
    if (i == len) return argc;
    char *start = w;
    int dq = 0, sq = 0;
    for (;;) {
      char ch;
      if (i == len) {
        if (dq || sq) return -1; /* unbalanced quotes */
        break;
      }
      ch = p[i];
      if (dq) {
        if (ch == '\\' && i + 3 < len && p[i + 1] == 'x' && hex_val(p[i + 2]) >= 0 &&
            hex_val(p[i + 3]) >= 0) {
          ch = (char)(hex_val(p[i + 2]) * 16 + hex_val(p[i + 3]));
          i += 3;
        } else if (ch == '\\' && i + 1 < len) {
          i++;
          switch (p[i]) {
          case 'n': ch = '\n'; break;
          case 'r': ch = '\r'; break;
          case 't': ch = '\t'; break;
          case 'b': ch = '\b'; break;
          case 'a': ch = '\a'; break;
          default: ch = p[i]; break;
          }
        } else if (ch == '"') {
          if (i + 1 < len && !is_space(p[i + 1])) return -1;
          i++;
          break;
        }
      } else if (sq) {
        if (ch == '\\' && i + 1 < len && p[i + 1] == '\'') {
          ch = '\'';
          i++;
        } else if (ch == '\'') {
          if (i + 1 < len && !is_space(p[i + 1])) return -1;
          i++;
          break;
        }
      } else if (is_space(ch)) {
        break;
      } else if (ch == '"') {
        dq = 1, i++;
        continue;
      } else if (ch == '\'') {
        sq = 1, i++;
        continue;
      }
      if (w) *w++ = ch;
      i++;
    }
    argc++;
    if (w && fn) fn(ud, start, (size_t)(w - start));
  }
}

/* The next command: a multibulk array ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
 * or, when the input does not start with '*', an inline line. scan keeps
 * where a multibulk command's next element starts and how many are left,
 * so a command that arrives in many reads is parsed once. */
static int resp_next(const char *p, size_t n, size_t max_frame, hs_scan_t *scan, hs_frame_t *out) {
  if (n == 0) return HS_FRAME_MORE;
  if (p[0] != '*') {
    size_t at = find(p, n, scan->pos, "\n", 1);
    if (at == n) {
      scan->pos = n;
      /* A CR at the very end may belong to a CRLF still on its way. */
      size_t pending = p[n - 1] == '\r' ? n - 1 : n;
      if (pending > max_frame) return HS_FRAME_TOOBIG;
      if (pending > HS_RESP_MAX_INLINE) return bad(out, "Protocol error: too big inline request");
      return HS_FRAME_MORE;
    }
    size_t len = (at > 0 && p[at - 1] == '\r') ? at - 1 : at;
    if (len > max_frame) return HS_FRAME_TOOBIG;
    if (len > HS_RESP_MAX_INLINE) return bad(out, "Protocol error: too big inline request");
    long argc = split_inline(p, len, NULL, NULL, NULL);
    if (argc < 0) return bad(out, "Protocol error: unbalanced quotes in request");
    out->off = 0, out->len = len, out->consumed = at + 1;
    return argc == 0 ? HS_FRAME_SKIP : HS_FRAME_OK;
  }
  size_t pos = scan->pos, left = scan->left;
  size_t cr;
  if (pos == 0) {
    long long count;
    int r = resp_line(p, n, &cr, out);
    if (r <= 0) return r;
    if (resp_number(p, cr, &count) != 0 || count > HS_RESP_MAX_ARGS)
      return bad(out, "Protocol error: invalid multibulk length");
    pos = cr + 2;
    if (count <= 0) { /* Redis reads *0 and *-1 as nothing at all */
      out->off = 0, out->len = 0, out->consumed = pos;
      return HS_FRAME_SKIP;
    }
    left = (size_t)count;
  }
  while (left > 0) {
    if (pos > max_frame) return HS_FRAME_TOOBIG;
    if (pos >= n) break;
    if (p[pos] != '$') return bad(out, "Protocol error: expected '$'");
    long long blen;
    int r = resp_line(p + pos, n - pos, &cr, out);
    if (r < 0) return r;
    if (r == 0) break;
    if (resp_number(p + pos, cr, &blen) != 0 || blen < 0 || blen > HS_RESP_MAX_BULK)
      return bad(out, "Protocol error: invalid bulk length");
    size_t end = pos + cr + 2 + (size_t)blen + 2;
    if (end > max_frame) return HS_FRAME_TOOBIG;
    if (end > n) break;
    if (p[end - 2] != '\r' || p[end - 1] != '\n')
      return bad(out, "Protocol error: expected CRLF after a bulk string");
    pos = end;
    left--;
  }
  if (left > 0) {
    scan->pos = pos, scan->left = left;
    return HS_FRAME_MORE;
  }
  out->off = 0, out->len = pos, out->consumed = pos;
  return HS_FRAME_OK;
}

/* Walk the elements of one multibulk command that fills p[0, len), checking
 * it as resp_next does (one pass: no separate validation on the hot path).
 * The count, or -1; fn is only given arguments that lie inside p. */
static long multibulk_args(const char *p, size_t len, hs_resp_arg_fn fn, void *ud) {
  hs_frame_t scratch;
  size_t cr;
  long long count, blen;
  if (resp_line(p, len, &cr, &scratch) != 1 || resp_number(p, cr, &count) != 0 || count <= 0 ||
      count > HS_RESP_MAX_ARGS)
    return -1;
  size_t pos = cr + 2;
  for (long long i = 0; i < count; i++) {
    if (pos >= len || p[pos] != '$' || resp_line(p + pos, len - pos, &cr, &scratch) != 1 ||
        resp_number(p + pos, cr, &blen) != 0 || blen < 0 || blen > HS_RESP_MAX_BULK)
      return -1;
    size_t start = pos + cr + 2, n = (size_t)blen;
    if (n > len - start || len - start - n < 2 || p[start + n] != '\r' || p[start + n + 1] != '\n')
      return -1;
    if (fn) fn(ud, p + start, n);
    pos = start + n + 2;
  }
  return pos == len ? (long)count : -1;
}

long hs_resp_argc(const char *p, size_t len) {
  if (len && p[0] == '*') return multibulk_args(p, len, NULL, NULL);
  return split_inline(p, len, NULL, NULL, NULL);
}

long hs_resp_args(const char *p, size_t len, char *scratch, hs_resp_arg_fn fn, void *ud) {
  if (len && p[0] == '*') return multibulk_args(p, len, fn, ud);
  if (!scratch) return -1;
  return split_inline(p, len, scratch, fn, ud);
}

int hs_frame_next(const hs_framer_t *f, const char *p, size_t n, size_t max_frame, int eof,
                  hs_scan_t *scan, hs_frame_t *out) {
  switch (f->kind) {
  case HS_FRAME_RAW:
    if (n == 0) return HS_FRAME_MORE;
    if (max_frame == 0) return HS_FRAME_TOOBIG; /* no progress is possible */
    out->off = 0;
    out->len = n < max_frame ? n : max_frame;
    out->consumed = out->len;
    return HS_FRAME_OK;

  case HS_FRAME_ALL:
    if (n > max_frame) return HS_FRAME_TOOBIG;
    if (!eof) return HS_FRAME_MORE;
    out->off = 0, out->len = n, out->consumed = n;
    return HS_FRAME_OK;

  case HS_FRAME_LINE: {
    size_t at = find(p, n, scan->pos, "\n", 1);
    if (at == n) {
      scan->pos = n;
      /* Kept, the line will be these bytes and an LF at least. Stripped, a
       * CR at the very end may belong to a CRLF still on its way. */
      if (f->keep_eol) return n && n >= max_frame ? HS_FRAME_TOOBIG : HS_FRAME_MORE;
      size_t pending = (n && p[n - 1] == '\r') ? n - 1 : n;
      return pending > max_frame ? HS_FRAME_TOOBIG : HS_FRAME_MORE;
    }
    size_t len = f->keep_eol ? at + 1 : (at > 0 && p[at - 1] == '\r') ? at - 1 : at;
    if (len > max_frame) return HS_FRAME_TOOBIG;
    out->off = 0, out->len = len, out->consumed = at + 1;
    return HS_FRAME_OK;
  }

  case HS_FRAME_CRLF:
  case HS_FRAME_DELIM: {
    size_t dl = f->delim_len;
    /* The delimiter may straddle what was searched before and what is new. */
    size_t from = scan->pos >= dl ? scan->pos - (dl - 1) : 0;
    size_t at = find(p, n, from, f->delim, dl);
    if (at == n) {
      scan->pos = n;
      /* Only a tail that is itself a prefix of the delimiter may still turn
       * into one; every byte before it is surely part of the frame. */
      size_t tail = dl - 1 < n ? dl - 1 : n;
      while (tail > 0 && memcmp(p + n - tail, f->delim, tail) != 0) tail--;
      return n - tail > max_frame ? HS_FRAME_TOOBIG : HS_FRAME_MORE;
    }
    if (at > max_frame) return HS_FRAME_TOOBIG;
    out->off = 0, out->len = at, out->consumed = at + dl;
    return HS_FRAME_OK;
  }

  case HS_FRAME_EXACT:
    if (f->exact > max_frame) return HS_FRAME_TOOBIG;
    if (n < f->exact) return HS_FRAME_MORE;
    out->off = 0, out->len = f->exact, out->consumed = f->exact;
    return HS_FRAME_OK;

  case HS_FRAME_LENGTH: {
    /* [header][prefix][payload]: the message is the header and the payload,
     * and max_frame counts both. */
    uint64_t len;
    size_t hdr, head = f->header;
    if (head > max_frame) return n ? HS_FRAME_TOOBIG : HS_FRAME_MORE;
    if (n < head) return HS_FRAME_MORE;
    int r = decode_len(f->len_kind, f->max_bytes, (const unsigned char *)p + head, n - head, &len,
                       &hdr);
    if (r == HS_FRAME_BAD) return bad(out, "malformed length prefix");
    if (r <= 0) return r;
    if (len > max_frame - head) return HS_FRAME_TOOBIG;
    if (n - head - hdr < len) return HS_FRAME_MORE;
    out->off = head + hdr, out->len = (size_t)len, out->consumed = head + hdr + (size_t)len;
    return HS_FRAME_OK;
  }

  case HS_FRAME_RESP: return resp_next(p, n, max_frame, scan, out);
  case HS_FRAME_HTTP: return hs_http1_next(f, p, n, max_frame, scan, out);
  }
  out->why = "unknown framing";
  return HS_FRAME_BAD;
}

/* [header][prefix][payload] becomes [.. prefix bytes ..][header][payload]:
 * the header moves forward by the prefix's width (memmove: they may
 * overlap), and the message starts where it now is. */
void hs_frame_join(const hs_framer_t *f, char *p, hs_frame_t *out) {
  if (f->kind == HS_FRAME_HTTP) {
    hs_http1_join(p, out);
    return;
  }
  size_t head = f->kind == HS_FRAME_LENGTH ? f->header : 0;
  if (!head) return;
  memmove(p + out->off - head, p, head);
  out->off -= head;
  out->len += head;
}
