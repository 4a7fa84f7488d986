/* proxy.h: the PROXY protocol header (versions 1 and 2) that HAProxy, nginx
 * and the cloud balancers put before a connection's bytes to pass on the
 * original client's address. Pure C: it looks at a span of bytes and says
 * whether a whole header is there, how long it is and what it says.
 *
 * Version 1 is one text line, at most 107 bytes with its CRLF:
 *   "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n", or "PROXY UNKNOWN...\r\n".
 * Version 2 is binary: a 12-byte signature, a version/command byte, a
 * family/transport byte, a 16-bit length, the addresses, then TLVs
 * (type, 16-bit length, value): ALPN, authority, a unique id, the SSL
 * fields of the client's TLS session, and others. */
#ifndef HS_PROXY_H
#define HS_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define HS_PROXY_V1_MAX 107 /* a version 1 line, CRLF included */
#define HS_PROXY_V2_MIN 16  /* signature, command, family, length */

/* What a header says. Strings point into the parsed bytes (not copied):
 * the caller copies what it keeps before the bytes go. */
typedef struct hs_proxy_span {
  const char *p;
  size_t n; /* 0: absent */
} hs_proxy_span_t;

typedef struct hs_proxy {
  int version; /* 1 or 2 */
  int local;   /* no address given (v1 UNKNOWN, v2 LOCAL or an unknown
                  family): the connection's own addresses stand */
  int family;  /* 4 or 6 when addresses were given (TCP over IPv4/IPv6) */
  char src_ip[46], dst_ip[46];
  int src_port, dst_port;
  /* version 2 TLVs */
  hs_proxy_span_t alpn, authority, unique_id;
  int has_ssl;
  unsigned ssl_client; /* PP2_CLIENT_* bits: 1 SSL, 2 cert on this conn, 4 cert in session */
  uint32_t ssl_verify; /* 0: the client's certificate verified */
  hs_proxy_span_t ssl_version, ssl_cn, ssl_cipher, ssl_sig_alg, ssl_key_alg;
} hs_proxy_t;

/* Results of hs_proxy_parse besides a header's length (> 0). */
enum {
  HS_PROXY_MORE = 0, /* not enough bytes yet to decide */
  HS_PROXY_BAD = -1  /* not a valid header; *why says what (static text) */
};

/* Look for a header at p[0, n): its length in bytes (> 0) with *out filled,
 * HS_PROXY_MORE, or HS_PROXY_BAD. Bytes that cannot begin either version
 * are refused as soon as they are seen. */
long hs_proxy_parse(const char *p, size_t n, hs_proxy_t *out, const char **why);

#endif
