/* proxy.c: the PROXY protocol header, versions 1 and 2 (see proxy.h and
 * HAProxy's proxy-protocol.txt). Strict: anything the specification does
 * not allow is refused, since the header decides whose address the script
 * believes. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "proxy.h"

static const char v1_sig[] = "PROXY ";
static const char v2_sig[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* ---- version 1 ---- */

/* The next token of a v1 line, up to a single space or the end: its length,
 * or 0 when empty. */
static size_t token(const char *p, const char *end) {
  size_t k = 0;
  while (p + k < end && p[k] != ' ') k++;
  return k;
}

static int v1_addr(const char *p, size_t n, int family, char *out, size_t outlen) {
  unsigned char bin[16];
  if (n == 0 || n >= outlen || memchr(p, 0, n)) return -1;
  memcpy(out, p, n);
  out[n] = 0;
  return inet_pton(family == 4 ? AF_INET : AF_INET6, out, bin) == 1 ? 0 : -1;
}

/* A port: 1 to 5 digits, no leading zero, at most 65535. */
static int v1_port(const char *p, size_t n, int *port) {
  int v = 0;
  if (n == 0 || n > 5 || (p[0] == '0' && n > 1)) return -1;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    v = v * 10 + (p[i] - '0');
  }
  if (v > 65535) return -1;
  *port = v;
  return 0;
}

static long parse_v1(const char *p, size_t n, hs_proxy_t *out, const char **why) {
  size_t lim = n < HS_PROXY_V1_MAX ? n : HS_PROXY_V1_MAX;
  const char *lf = memchr(p, '\n', lim);
  if (!lf) {
    if (n >= HS_PROXY_V1_MAX) {
      *why = "PROXY v1 line longer than 107 bytes";
      return HS_PROXY_BAD;
    }
    return HS_PROXY_MORE;
  }
  if (lf == p || lf[-1] != '\r') {
    *why = "PROXY v1 line does not end in CRLF";
    return HS_PROXY_BAD;
  }
  long len = (long)(lf - p) + 1;
  const char *s = p + 6, *end = lf - 1; /* after "PROXY ", before CR */
  size_t k = token(s, end);
  out->version = 1;
  if (k == 7 && memcmp(s, "UNKNOWN", 7) == 0) {
    out->local = 1; /* the rest of the line is to be ignored */
    return len;
  }
  if (k != 4 || (memcmp(s, "TCP4", 4) != 0 && memcmp(s, "TCP6", 4) != 0)) {
    *why = "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN";
    return HS_PROXY_BAD;
  }
  out->family = s[3] == '4' ? 4 : 6;
  s += k;
  const char *tok[4];
  size_t tlen[4];
  for (int i = 0; i < 4; i++) {
    if (s >= end || *s != ' ') {
      *why = "PROXY v1 line has too few fields";
      return HS_PROXY_BAD;
    }
    s++;
    tok[i] = s;
    tlen[i] = token(s, end);
    s += tlen[i];
  }
  if (s != end) {
    *why = "PROXY v1 line has too many fields";
    return HS_PROXY_BAD;
  }
  if (v1_addr(tok[0], tlen[0], out->family, out->src_ip, sizeof out->src_ip) != 0 ||
      v1_addr(tok[1], tlen[1], out->family, out->dst_ip, sizeof out->dst_ip) != 0) {
    *why = "PROXY v1 address is not a valid address of its family";
    return HS_PROXY_BAD;
  }
  if (v1_port(tok[2], tlen[2], &out->src_port) != 0 ||
      v1_port(tok[3], tlen[3], &out->dst_port) != 0) {
    *why = "PROXY v1 port is not a number from 0 to 65535";
    return HS_PROXY_BAD;
  }
  return len;
}

/* ---- version 2 ---- */

enum {
  PP2_TYPE_ALPN = 0x01,
  PP2_TYPE_AUTHORITY = 0x02,
  PP2_TYPE_UNIQUE_ID = 0x05,
  PP2_TYPE_SSL = 0x20,
  PP2_SUBTYPE_SSL_VERSION = 0x21,
  PP2_SUBTYPE_SSL_CN = 0x22,
  PP2_SUBTYPE_SSL_CIPHER = 0x23,
  PP2_SUBTYPE_SSL_SIG_ALG = 0x24,
  PP2_SUBTYPE_SSL_KEY_ALG = 0x25,
};

static unsigned u16(const unsigned char *q) { return (unsigned)q[0] << 8 | q[1]; }

/* Walk the TLVs in q[0, n); ssl is set inside a PP2_TYPE_SSL value, whose
 * sub-TLVs follow the same layout. */
static int tlvs(const unsigned char *q, size_t n, hs_proxy_t *out, int ssl, const char **why) {
  while (n > 0) {
    if (n < 3) {
      *why = "PROXY v2 TLV is cut short";
      return -1;
    }
    unsigned type = q[0];
    size_t len = u16(q + 1);
    if (len > n - 3) {
      *why = "PROXY v2 TLV runs past the header";
      return -1;
    }
    hs_proxy_span_t v = {(const char *)q + 3, len};
    hs_proxy_span_t *slot = NULL;
    if (ssl) {
      switch (type) {
      case PP2_SUBTYPE_SSL_VERSION: slot = &out->ssl_version; break;
      case PP2_SUBTYPE_SSL_CN: slot = &out->ssl_cn; break;
      case PP2_SUBTYPE_SSL_CIPHER: slot = &out->ssl_cipher; break;
      case PP2_SUBTYPE_SSL_SIG_ALG: slot = &out->ssl_sig_alg; break;
      case PP2_SUBTYPE_SSL_KEY_ALG: slot = &out->ssl_key_alg; break;
      default: break;
      }
    } else {
      switch (type) {
      case PP2_TYPE_ALPN: slot = &out->alpn; break;
      case PP2_TYPE_AUTHORITY: slot = &out->authority; break;
      case PP2_TYPE_UNIQUE_ID:
        if (len > 128) {
          *why = "PROXY v2 unique id is longer than 128 bytes";
          return -1;
        }
        slot = &out->unique_id;
        break;
      case PP2_TYPE_SSL:
        if (len < 5) {
          *why = "PROXY v2 SSL TLV is cut short";
          return -1;
        }
        out->has_ssl = 1;
        out->ssl_client = q[3];
        out->ssl_verify = (uint32_t)q[4] << 24 | (uint32_t)q[5] << 16 | (uint32_t)q[6] << 8 | q[7];
        if (tlvs(q + 8, len - 5, out, 1, why) != 0) return -1;
        break;
      default: break; /* CRC32C, NOOP, NETNS and the rest: not needed */
      }
    }
    if (slot) *slot = v;
    q += 3 + len;
    n -= 3 + len;
  }
  return 0;
}

static long parse_v2(const char *p, size_t n, hs_proxy_t *out, const char **why) {
  const unsigned char *q = (const unsigned char *)p;
  if (n < HS_PROXY_V2_MIN) return HS_PROXY_MORE;
  unsigned ver = q[12] >> 4, cmd = q[12] & 0xf, fam = q[13];
  if (ver != 2) {
    *why = "PROXY v2 version is not 2";
    return HS_PROXY_BAD;
  }
  if (cmd > 1) {
    *why = "PROXY v2 command is neither LOCAL nor PROXY";
    return HS_PROXY_BAD;
  }
  size_t len = u16(q + 14);
  if (n < HS_PROXY_V2_MIN + len) return HS_PROXY_MORE;
  size_t alen;
  switch (fam >> 4) {
  case 0: alen = 0; break;   /* AF_UNSPEC */
  case 1: alen = 12; break;  /* AF_INET */
  case 2: alen = 36; break;  /* AF_INET6 */
  case 3: alen = 216; break; /* AF_UNIX */
  default: alen = (size_t)-1; break;
  }
  out->version = 2;
  if (cmd == 0) {
    /* LOCAL (the balancer's own connection, e.g. a health check): the
     * family and the whole block are to be ignored. */
    out->local = 1;
    return (long)(HS_PROXY_V2_MIN + len);
  }
  if (alen == (size_t)-1) {
    *why = "PROXY v2 address family is unknown";
    return HS_PROXY_BAD;
  }
  if ((fam & 0xf) > 2) {
    *why = "PROXY v2 transport is unknown";
    return HS_PROXY_BAD;
  }
  if (alen > len) {
    *why = "PROXY v2 addresses run past the header";
    return HS_PROXY_BAD;
  }
  const unsigned char *a = q + HS_PROXY_V2_MIN;
  /* Addresses count only for PROXY over TCP (STREAM) on IPv4 or IPv6;
   * LOCAL (a health check from the balancer itself), UNSPEC, unix and
   * datagram keep the connection's own. */
  if (cmd == 1 && (fam == 0x11 || fam == 0x21)) {
    int v4 = fam == 0x11;
    size_t asz = v4 ? 4 : 16;
    out->family = v4 ? 4 : 6;
    if (!inet_ntop(v4 ? AF_INET : AF_INET6, a, out->src_ip, sizeof out->src_ip) ||
        !inet_ntop(v4 ? AF_INET : AF_INET6, a + asz, out->dst_ip, sizeof out->dst_ip)) {
      *why = "PROXY v2 address cannot be printed";
      return HS_PROXY_BAD;
    }
    out->src_port = (int)u16(a + 2 * asz);
    out->dst_port = (int)u16(a + 2 * asz + 2);
  } else {
    out->local = 1;
  }
  if (tlvs(a + alen, len - alen, out, 0, why) != 0) return HS_PROXY_BAD;
  return (long)(HS_PROXY_V2_MIN + len);
}

long hs_proxy_parse(const char *p, size_t n, hs_proxy_t *out, const char **why) {
  memset(out, 0, sizeof *out);
  *why = NULL;
  size_t k1 = n < 6 ? n : 6, k2 = n < 12 ? n : 12;
  int v1 = memcmp(p, v1_sig, k1) == 0, v2 = memcmp(p, v2_sig, k2) == 0;
  if (!v1 && !v2) {
    *why = "not a PROXY protocol header";
    return HS_PROXY_BAD;
  }
  if (v1 && n < 6) return HS_PROXY_MORE;
  if (v2 && n < 12) return HS_PROXY_MORE;
  return v1 ? parse_v1(p, n, out, why) : parse_v2(p, n, out, why);
}
