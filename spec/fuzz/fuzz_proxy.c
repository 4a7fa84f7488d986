/* fuzz_proxy.c: libFuzzer harness for the PROXY protocol header parser
 * (src/proxy.c). The input is the first bytes of a connection.
 *
 * hs_proxy_parse is called on every prefix of the input, the whole input
 * last, each prefix copied to the heap at its exact size so that a read
 * past the bytes given is a sanitizer report. Checked:
 *   - each result is HS_PROXY_MORE (no *why), HS_PROXY_BAD (with a *why),
 *     or a length from 1 to the bytes given (no *why);
 *   - over the prefixes, the results are MORE, then either BAD up to the
 *     whole input, or a header's length L first at the prefix of exactly L
 *     bytes and then L with the same fields for every longer prefix: a
 *     header is neither accepted nor refused before its last byte, and
 *     what follows it changes nothing;
 *   - an accepted header says what its bytes say: every span lies inside
 *     the header (past its 16 fixed bytes); src_ip and dst_ip are
 *     NUL-terminated and parse back with inet_pton for their family; a
 *     version 1 line is exactly "PROXY TCPn src dst sport dport\r\n" made
 *     from the fields, or begins "PROXY UNKNOWN"; a version 2 header is
 *     16 + its length field long, and its address and port bytes are the
 *     fields';
 *   - a version 2 LOCAL header whose bytes are all there is accepted,
 *     whatever its block holds (HAProxy's proxy-protocol.txt: the receiver
 *     "must accept this connection as valid and must use the real
 *     connection endpoints and discard the protocol block including the
 *     family which is ignored").
 * Anything else calls abort().
 *
 * Seeds are in corpus_proxy/ (headers as HAProxy, nginx and the cloud
 * balancers send them, followed by a request, and refusals); proxy.dict
 * holds the words and bytes that headers are made of.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (spec/fuzz/CMakeLists.txt,
 * -DHS_FUZZ=ON).
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char v2_sig[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

static void fail(const char *what, size_t k, long r) {
  fprintf(stderr, "fuzz_proxy: %s (the first %zu bytes, result %ld)\n", what, k, r);
  abort();
}

/* A header's fields with the spans as offsets into the header, so that
 * parses of different copies compare. */
typedef struct span_at {
  size_t off, n;
} span_at_t;

typedef struct fields {
  int version, local, family;
  char src_ip[46], dst_ip[46];
  int src_port, dst_port;
  int has_ssl;
  unsigned ssl_client;
  uint32_t ssl_verify;
  span_at_t spans[8];
} fields_t;

static void spans_of(const hs_proxy_t *h, hs_proxy_span_t s[8]) {
  s[0] = h->alpn;
  s[1] = h->authority;
  s[2] = h->unique_id;
  s[3] = h->ssl_version;
  s[4] = h->ssl_cn;
  s[5] = h->ssl_cipher;
  s[6] = h->ssl_sig_alg;
  s[7] = h->ssl_key_alg;
}

static void fields_of(const hs_proxy_t *h, const char *base, fields_t *f) {
  hs_proxy_span_t s[8];
  memset(f, 0, sizeof *f);
  f->version = h->version;
  f->local = h->local;
  f->family = h->family;
  memcpy(f->src_ip, h->src_ip, sizeof f->src_ip);
  memcpy(f->dst_ip, h->dst_ip, sizeof f->dst_ip);
  f->src_port = h->src_port;
  f->dst_port = h->dst_port;
  f->has_ssl = h->has_ssl;
  f->ssl_client = h->ssl_client;
  f->ssl_verify = h->ssl_verify;
  spans_of(h, s);
  for (int i = 0; i < 8; i++)
    if (s[i].n) f->spans[i] = (span_at_t){(size_t)(s[i].p - base), s[i].n};
}

/* An address field: NUL-terminated inside its array, and an address of the
 * family; its bytes in bin. */
static void check_ip(const char ip[46], int family, unsigned char bin[16], size_t k, long r) {
  if (!memchr(ip, 0, 46)) fail("an address that is not NUL-terminated", k, r);
  if (inet_pton(family == 4 ? AF_INET : AF_INET6, ip, bin) != 1)
    fail("an address that is not one of its family", k, r);
}

static unsigned be16(const unsigned char *q) { return (unsigned)q[0] << 8 | q[1]; }

/* What an accepted header p[0, r) says against its bytes. */
static void check_header(const char *p, long r, const hs_proxy_t *h, size_t k) {
  const unsigned char *q = (const unsigned char *)p;
  size_t n = (size_t)r;
  hs_proxy_span_t s[8];
  spans_of(h, s);
  if (h->local != (h->family == 0)) fail("local and family disagree", k, r);
  if (h->family != 0 && h->family != 4 && h->family != 6) fail("an unknown family", k, r);
  if (h->local && (h->src_ip[0] || h->dst_ip[0] || h->src_port || h->dst_port))
    fail("local with an address", k, r);
  if (h->src_port < 0 || h->src_port > 65535 || h->dst_port < 0 || h->dst_port > 65535)
    fail("a port out of range", k, r);
  if (!h->has_ssl &&
      (h->ssl_client || h->ssl_verify || s[3].n || s[4].n || s[5].n || s[6].n || s[7].n))
    fail("SSL fields without an SSL TLV", k, r);
  if (h->unique_id.n > 128) fail("a unique id over 128 bytes", k, r);

  if (h->version == 1) {
    if (n > HS_PROXY_V1_MAX || n < 8) fail("a v1 line of a wrong length", k, r);
    if (memcmp(p, "PROXY ", 6) != 0 || memcmp(p + n - 2, "\r\n", 2) != 0)
      fail("a v1 line without its signature or CRLF", k, r);
    if (memchr(p, '\n', n - 1)) fail("a v1 line with an LF inside", k, r);
    for (int i = 0; i < 8; i++)
      if (s[i].n) fail("a TLV field from a v1 line", k, r);
    if (h->has_ssl) fail("a TLV field from a v1 line", k, r);
    if (h->local) {
      if (n < 15 || memcmp(p + 6, "UNKNOWN", 7) != 0 || (p[13] != ' ' && p[13] != '\r'))
        fail("local from a v1 line that is not UNKNOWN", k, r);
      return;
    }
    unsigned char a[16];
    check_ip(h->src_ip, h->family, a, k, r);
    check_ip(h->dst_ip, h->family, a, k, r);
    /* The line is exactly what its fields make. */
    char line[256];
    int m = snprintf(line, sizeof line, "PROXY TCP%d %s %s %d %d\r\n", h->family, h->src_ip,
                     h->dst_ip, h->src_port, h->dst_port);
    if (m < 0 || (size_t)m != n || memcmp(line, p, n) != 0)
      fail("a v1 line that is not what its fields say", k, r);
    return;
  }

  if (h->version != 2) fail("a header of neither version", k, r);
  if (n < HS_PROXY_V2_MIN || memcmp(p, v2_sig, 12) != 0) fail("a v2 header too short", k, r);
  if (n != HS_PROXY_V2_MIN + be16(q + 14)) fail("a v2 length that is not 16 + len", k, r);
  if (q[12] >> 4 != 2 || (q[12] & 0xf) > 1) fail("a v2 version or command accepted", k, r);
  for (int i = 0; i < 8; i++)
    if (s[i].n && (s[i].p < p + HS_PROXY_V2_MIN || s[i].p + s[i].n > p + n))
      fail("a span outside the header", k, r);
  if ((q[12] & 0xf) == 0 && !h->local) fail("an address from a LOCAL header", k, r);
  if (h->local) return;
  if (q[13] != (h->family == 4 ? 0x11 : 0x21)) fail("an address from another family", k, r);
  size_t asz = h->family == 4 ? 4 : 16;
  if (n < HS_PROXY_V2_MIN + 2 * asz + 4) fail("addresses past the header", k, r);
  unsigned char a[16];
  check_ip(h->src_ip, h->family, a, k, r);
  if (memcmp(a, q + 16, asz) != 0) fail("a source address that is not the header's", k, r);
  check_ip(h->dst_ip, h->family, a, k, r);
  if (memcmp(a, q + 16 + asz, asz) != 0) fail("a destination that is not the header's", k, r);
  if ((unsigned)h->src_port != be16(q + 16 + 2 * asz) ||
      (unsigned)h->dst_port != be16(q + 16 + 2 * asz + 2))
    fail("ports that are not the header's", k, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  long accepted = 0; /* the header's length once a prefix was accepted */
  int refused = 0;
  fields_t first;
  for (size_t k = 0; k <= size; k++) {
    char *q = malloc(k ? k : 1);
    if (!q) abort();
    if (k) memcpy(q, data, k);
    hs_proxy_t h;
    const char *why = "unset";
    long r = hs_proxy_parse(q, k, &h, &why);

    if (r == HS_PROXY_BAD) {
      if (!why || !why[0]) fail("a refusal without a why", k, r);
    } else if (why) {
      fail("a why without a refusal", k, r);
    }
    if (r < HS_PROXY_BAD || r > (long)k) fail("a result out of range", k, r);

    if (refused) {
      if (r != HS_PROXY_BAD) fail("refused, then not with more bytes", k, r);
    } else if (accepted) {
      fields_t f;
      if (r != accepted) fail("a header whose length changed with more bytes", k, r);
      fields_of(&h, q, &f);
      if (memcmp(&f, &first, sizeof f) != 0) fail("a header whose fields changed", k, r);
    } else if (r == HS_PROXY_BAD) {
      refused = 1;
    } else if (r > 0) {
      if ((size_t)r != k) fail("a header accepted before its last byte", k, r);
      check_header(q, r, &h, k);
      accepted = r;
      fields_of(&h, q, &first);
    }

    /* LOCAL is accepted once all its bytes are there. */
    const unsigned char *u = (const unsigned char *)q;
    if (k >= HS_PROXY_V2_MIN && memcmp(q, v2_sig, 12) == 0 && u[12] == 0x20 &&
        k >= HS_PROXY_V2_MIN + be16(u + 14) && r != (long)(HS_PROXY_V2_MIN + be16(u + 14)))
      fail("a whole LOCAL header not accepted", k, r);
    free(q);
  }
  return 0;
}
