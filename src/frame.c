/* frame.c: the framers. Each call is given the unconsumed bytes and says where
 * the next frame is; a frame is never copied here. */
#include "frame.h"

#include <string.h>

void hs_framer_raw(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_RAW;
}

void hs_framer_line(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_LINE;
}

void hs_framer_all(hs_framer_t *f) {
  memset(f, 0, sizeof *f);
  f->kind = HS_FRAME_ALL;
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

static const char *const len_names[] = {"u8",    "u16be", "u16le",
                                        "u32be", "u32le", "varint"};

int hs_framer_length(hs_framer_t *f, const char *name) {
  for (int i = 0; i < (int)(sizeof len_names / sizeof *len_names); i++) {
    if (strcmp(name, len_names[i]) == 0) {
      memset(f, 0, sizeof *f);
      f->kind = HS_FRAME_LENGTH;
      f->len_kind = (hs_len_kind_t)i;
      return 0;
    }
  }
  return -1;
}

const char *hs_framer_name(const hs_framer_t *f) {
  switch (f->kind) {
  case HS_FRAME_RAW: return "raw";
  case HS_FRAME_LINE: return "line";
  case HS_FRAME_DELIM: return "delimiter";
  case HS_FRAME_EXACT: return "exact";
  case HS_FRAME_ALL: return "all";
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

/* Decode the length prefix at p[0, n): 1 with *len and *hdr set, 0 when more
 * bytes are needed, HS_FRAME_BAD for a varint longer than 10 bytes or over
 * 64 bits. */
static int decode_len(hs_len_kind_t k, const unsigned char *p, size_t n,
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
    for (size_t i = 0; i < 10; i++) {
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

int hs_frame_next(const hs_framer_t *f, const char *p, size_t n, size_t max_frame,
                  int eof, size_t *scanned, hs_frame_t *out) {
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
    size_t at = find(p, n, *scanned, "\n", 1);
    if (at == n) {
      *scanned = n;
      /* A CR at the very end may belong to a CRLF still on its way. */
      size_t pending = (n && p[n - 1] == '\r') ? n - 1 : n;
      return pending > max_frame ? HS_FRAME_TOOBIG : HS_FRAME_MORE;
    }
    size_t len = (at > 0 && p[at - 1] == '\r') ? at - 1 : at;
    if (len > max_frame) return HS_FRAME_TOOBIG;
    out->off = 0, out->len = len, out->consumed = at + 1;
    return HS_FRAME_OK;
  }

  case HS_FRAME_DELIM: {
    size_t dl = f->delim_len;
    /* The delimiter may straddle what was searched before and what is new. */
    size_t from = *scanned >= dl ? *scanned - (dl - 1) : 0;
    size_t at = find(p, n, from, f->delim, dl);
    if (at == n) {
      *scanned = n;
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
    uint64_t len;
    size_t hdr;
    int r = decode_len(f->len_kind, (const unsigned char *)p, n, &len, &hdr);
    if (r <= 0) return r;
    if (len > max_frame) return HS_FRAME_TOOBIG;
    if (n - hdr < len) return HS_FRAME_MORE;
    out->off = hdr, out->len = (size_t)len, out->consumed = hdr + (size_t)len;
    return HS_FRAME_OK;
  }
  }
  return HS_FRAME_BAD;
}
