/* test_proxy.c: the PROXY protocol header parser (src/proxy.c).
 *
 * Every header that should be accepted goes through accept_hdr, which
 * checks it the way a connection meets it: each proper prefix, copied to
 * the heap at its exact size (so that the sanitizers catch a read past the
 * bytes given), gives HS_PROXY_MORE; the header alone gives its length;
 * the header followed by a request gives the same length, and the fields
 * are read from that last parse (its spans must lie inside the header).
 * Refusals are checked for a *why that names the fault; the signature
 * tests also pin the byte at which a refusal comes.
 *
 * Version 2 headers are built with the put_* helpers, so that each test
 * shows its bytes field by field.
 */
#include "proxy.h"
#include "test.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Assertions on strings. */

/* s is not NULL and holds the substring sub; prints s when it does not. */
#define ASSERT_HAS(s, sub)                                         \
  do {                                                             \
    const char *hs__s = (s);                                       \
    if (!hs__s || !strstr(hs__s, sub)) {                           \
      fprintf(stderr, "  text: %s\n", hs__s ? hs__s : "(null)");   \
      hs_test_fail_true(__FILE__, __LINE__, #s " contains " #sub); \
    }                                                              \
  } while (0)

/* s is not NULL and equals the string want. */
#define ASSERT_STR(s, want)                                             \
  do {                                                                  \
    const char *hs__s = (s), *hs__w = (want);                           \
    ASSERT_NOT_NULL(hs__s);                                             \
    HS_TEST_MEM(hs__s, strlen(hs__s), hs__w, strlen(hs__w), #s, #want); \
  } while (0)

/* A span against a string literal. */
#define ASSERT_SPAN(s, lit) ASSERT_MEM_STR((s).p, (s).n, lit)

/* A string literal as bytes and length (it may hold NULs). */
#define LIT(lit) lit, sizeof(lit) - 1

/* ------------------------------------------------------------------------ */
/* Parsing as a connection would. */

/* What follows a header on the wire: the first bytes a script reads. */
#define AFTER "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"

/* The header then AFTER, for the parse whose fields accept_hdr returns. */
static char wire[HS_PROXY_V2_MIN + 65535 + sizeof AFTER];

/* Parse a heap copy of p[0, n) that is exactly n bytes long. The fields'
 * spans point into freed memory afterwards: only the result and *why are
 * for the caller. */
static long parse_exact(const void *p, size_t n, const char **why) {
  hs_proxy_t out;
  char *q = malloc(n ? n : 1);
  ASSERT_NOT_NULL(q);
  if (n) memcpy(q, p, n);
  long r = hs_proxy_parse(q, n, &out, why);
  free(q);
  return r;
}

/* Print p[0, n) escaped, for a failing assertion. */
static void print_input(const void *p, size_t n) {
  fprintf(stderr, "  input (%zu) \"", n);
  for (size_t i = 0; i < n && i < 400; i++) {
    unsigned char c = ((const unsigned char *)p)[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      fputc(c, stderr);
    else
      fprintf(stderr, "\\x%02x", c);
  }
  fprintf(stderr, n > 400 ? "\"...\n" : "\"\n");
}

/* A span is absent, or lies inside [lo, lo + n). */
static void span_inside(hs_proxy_span_t s, const char *lo, size_t n) {
  if (s.n == 0) return;
  ASSERT_NOT_NULL(s.p);
  ASSERT_GE((uintptr_t)s.p, (uintptr_t)lo);
  ASSERT_LE((uintptr_t)s.p + s.n, (uintptr_t)lo + n);
}

/* p[0, n) is exactly one valid header: every proper prefix gives MORE (it
 * is neither accepted nor refused early), the header alone gives n, and so
 * does the header followed by AFTER, whose fields are left in *out (its
 * spans point into wire). */
static void accept_hdr(const void *p, size_t n, hs_proxy_t *out) {
  const char *why;
  for (size_t k = 0; k < n; k++) {
    long r = parse_exact(p, k, &why);
    if (r != HS_PROXY_MORE) {
      print_input(p, n);
      fprintf(stderr, "  its first %zu bytes: %s\n", k, why ? why : "accepted");
    }
    ASSERT_EQ(r, HS_PROXY_MORE);
    ASSERT_NULL(why);
  }
  long r = parse_exact(p, n, &why);
  if (r != (long)n) {
    print_input(p, n);
    fprintf(stderr, "  result %ld: %s\n", r, why ? why : "(no why)");
  }
  ASSERT_EQ(r, (long)n);
  ASSERT_NULL(why);

  ASSERT_LE(n + sizeof AFTER - 1, sizeof wire);
  memcpy(wire, p, n);
  memcpy(wire + n, AFTER, sizeof AFTER - 1);
  ASSERT_EQ(hs_proxy_parse(wire, n + sizeof AFTER - 1, out, &why), (long)n);
  ASSERT_NULL(why);
  ASSERT_TRUE(out->version == 1 || out->version == 2);
  ASSERT_EQ(out->local, out->family == 0);
  span_inside(out->alpn, wire, n);
  span_inside(out->authority, wire, n);
  span_inside(out->unique_id, wire, n);
  span_inside(out->ssl_version, wire, n);
  span_inside(out->ssl_cn, wire, n);
  span_inside(out->ssl_cipher, wire, n);
  span_inside(out->ssl_sig_alg, wire, n);
  span_inside(out->ssl_key_alg, wire, n);
}

/* p[0, n) is refused with a *why that holds sub, and bytes after it do not
 * make it acceptable. */
static void refuse(const void *p, size_t n, const char *sub) {
  const char *why;
  long r = parse_exact(p, n, &why);
  if (r != HS_PROXY_BAD || !why || !strstr(why, sub)) print_input(p, n);
  ASSERT_EQ(r, HS_PROXY_BAD);
  ASSERT_HAS(why, sub);

  hs_proxy_t out;
  ASSERT_LE(n + sizeof AFTER - 1, sizeof wire);
  memcpy(wire, p, n);
  memcpy(wire + n, AFTER, sizeof AFTER - 1);
  ASSERT_EQ(hs_proxy_parse(wire, n + sizeof AFTER - 1, &out, &why), HS_PROXY_BAD);
  ASSERT_NOT_NULL(why);
}

/* A header given as a C string (version 1). */
static void refuse_str(const char *line, const char *sub) { refuse(line, strlen(line), sub); }

/* Whether every field of a TLV is absent. */
static void no_tlvs(const hs_proxy_t *h) {
  ASSERT_EQ(h->alpn.n, 0);
  ASSERT_EQ(h->authority.n, 0);
  ASSERT_EQ(h->unique_id.n, 0);
  ASSERT_EQ(h->has_ssl, 0);
  ASSERT_EQ(h->ssl_client, 0);
  ASSERT_EQ(h->ssl_verify, 0);
  ASSERT_EQ(h->ssl_version.n, 0);
  ASSERT_EQ(h->ssl_cn.n, 0);
  ASSERT_EQ(h->ssl_cipher.n, 0);
  ASSERT_EQ(h->ssl_sig_alg.n, 0);
  ASSERT_EQ(h->ssl_key_alg.n, 0);
}

/* No address given: the connection's own stand. */
static void no_addresses(const hs_proxy_t *h) {
  ASSERT_EQ(h->local, 1);
  ASSERT_EQ(h->family, 0);
  ASSERT_STR(h->src_ip, "");
  ASSERT_STR(h->dst_ip, "");
  ASSERT_EQ(h->src_port, 0);
  ASSERT_EQ(h->dst_port, 0);
}

/* ------------------------------------------------------------------------ */
/* Version 1. */

/* line is a valid TCP4/TCP6 header with these fields. */
static void v1_ok(const char *line, int family, const char *src, const char *dst, int sport,
                  int dport) {
  hs_proxy_t h;
  accept_hdr(line, strlen(line), &h);
  ASSERT_EQ(h.version, 1);
  ASSERT_EQ(h.local, 0);
  ASSERT_EQ(h.family, family);
  ASSERT_STR(h.src_ip, src);
  ASSERT_STR(h.dst_ip, dst);
  ASSERT_EQ(h.src_port, sport);
  ASSERT_EQ(h.dst_port, dport);
  no_tlvs(&h);
}

/* line is a valid UNKNOWN header. */
static void v1_unknown_ok(const char *line) {
  hs_proxy_t h;
  accept_hdr(line, strlen(line), &h);
  ASSERT_EQ(h.version, 1);
  no_addresses(&h);
  no_tlvs(&h);
}

#define FF6 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" /* the longest IPv6 text */

TEST(proxy_v1_tcp4) {
  v1_ok("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n", 4, "192.0.2.1", "198.51.100.7", 51234,
        443);
  v1_ok("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", 4, "255.255.255.255",
        "255.255.255.255", 65535, 65535);
  v1_ok("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", 4, "0.0.0.0", "0.0.0.0", 0, 0);
  v1_ok("PROXY TCP4 127.0.0.1 10.0.0.1 1 9\r\n", 4, "127.0.0.1", "10.0.0.1", 1, 9);
}

TEST(proxy_v1_tcp6) {
  v1_ok("PROXY TCP6 2001:db8::1 2001:db8::2 51234 443\r\n", 6, "2001:db8::1", "2001:db8::2", 51234,
        443);
  v1_ok("PROXY TCP6 ::1 :: 0 65535\r\n", 6, "::1", "::", 0, 65535);
  /* As written, not re-printed: upper case and an IPv4 tail stay. */
  v1_ok("PROXY TCP6 2001:DB8::A ::ffff:192.0.2.1 80 8080\r\n", 6, "2001:DB8::A", "::ffff:192.0.2.1",
        80, 8080);
  /* The longest TCP6 line: 104 bytes. */
  v1_ok("PROXY TCP6 " FF6 " " FF6 " 65535 65535\r\n", 6, FF6, FF6, 65535, 65535);
}

TEST(proxy_v1_ports) {
  static const struct {
    const char *text;
    int value;
  } ports[] = {{"0", 0},         {"1", 1},         {"9", 9},        {"10", 10},
               {"443", 443},     {"1024", 1024},   {"9999", 9999},  {"10000", 10000},
               {"65529", 65529}, {"65534", 65534}, {"65535", 65535}};
  for (size_t i = 0; i < sizeof ports / sizeof *ports; i++) {
    char line[128];
    snprintf(line, sizeof line, "PROXY TCP4 192.0.2.1 198.51.100.7 %s %s\r\n", ports[i].text,
             ports[i].text);
    v1_ok(line, 4, "192.0.2.1", "198.51.100.7", ports[i].value, ports[i].value);
  }
}

TEST(proxy_v1_unknown) {
  v1_unknown_ok("PROXY UNKNOWN\r\n");
  /* The rest of the line, whatever it holds, is ignored. */
  v1_unknown_ok("PROXY UNKNOWN 192.0.2.1 198.51.100.7 51234 443\r\n");
  v1_unknown_ok("PROXY UNKNOWN \r\n");
  v1_unknown_ok("PROXY UNKNOWN not an address at all\r\n");
  v1_unknown_ok("PROXY UNKNOWN  two  spaces 99999 01\r\n");
  /* The specification's worst case: exactly 107 bytes. */
  const char *longest = "PROXY UNKNOWN " FF6 " " FF6 " 65535 65535\r\n";
  ASSERT_EQ(strlen(longest), HS_PROXY_V1_MAX);
  v1_unknown_ok(longest);
}

TEST(proxy_v1_107_bytes) {
  /* UNKNOWN and any rest, 107 bytes with the CRLF: the longest line. */
  char line[HS_PROXY_V1_MAX + 1];
  memset(line, 'x', HS_PROXY_V1_MAX);
  memcpy(line, "PROXY UNKNOWN ", 14);
  memcpy(line + HS_PROXY_V1_MAX - 2, "\r\n", 2);
  line[HS_PROXY_V1_MAX] = 0;
  ASSERT_EQ(strlen(line), HS_PROXY_V1_MAX);
  v1_unknown_ok(line);
}

TEST(proxy_v1_over_107) {
  char line[HS_PROXY_V1_MAX + 1];
  const char *why;
  /* 108 bytes with the CRLF. */
  memset(line, 'x', sizeof line);
  memcpy(line, "PROXY UNKNOWN ", 14);
  memcpy(line + HS_PROXY_V1_MAX - 1, "\r\n", 2);
  refuse(line, sizeof line, "107");
  /* No LF at all: more may come until 107 bytes are there, then no more. */
  memset(line, 'x', sizeof line);
  memcpy(line, "PROXY TCP4 ", 11);
  for (size_t k = 0; k < HS_PROXY_V1_MAX; k++) ASSERT_EQ(parse_exact(line, k, &why), HS_PROXY_MORE);
  refuse(line, HS_PROXY_V1_MAX, "107");
  refuse(line, HS_PROXY_V1_MAX + 1, "107");
}

TEST(proxy_v1_no_crlf) {
  const char *why;
  /* A whole line but for its end: not yet a header, nor a refusal. */
  ASSERT_EQ(parse_exact(LIT("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443"), &why), HS_PROXY_MORE);
  ASSERT_EQ(parse_exact(LIT("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r"), &why), HS_PROXY_MORE);
  /* A CR that is not the line's end is part of the last field. */
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\rX\r\n", "PROXY v1");
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\r\n", "PROXY v1");
  /* LF then CR is not CRLF. */
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\n\r", "CRLF");
}

TEST(proxy_v1_bare_lf) {
  const char *why;
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\n", "CRLF");
  refuse_str("PROXY TCP6 ::1 ::1 1 2\n", "CRLF");
  refuse_str("PROXY UNKNOWN\n", "CRLF");
  refuse_str("PROXY \n", "CRLF");
  /* Refused when the LF arrives, not before. */
  ASSERT_EQ(parse_exact(LIT("PROXY UNKNOWN"), &why), HS_PROXY_MORE);
}

TEST(proxy_v1_protocol) {
  static const char *const lines[] = {
      "PROXY TCP5 192.0.2.1 198.51.100.7 51234 443\r\n",
      "PROXY tcp4 192.0.2.1 198.51.100.7 51234 443\r\n",
      "PROXY UDP4 192.0.2.1 198.51.100.7 51234 443\r\n",
      "PROXY TCP 192.0.2.1 198.51.100.7 51234 443\r\n",
      "PROXY TCP44 192.0.2.1 198.51.100.7 51234 443\r\n",
      "PROXY TCP4\t192.0.2.1 198.51.100.7 51234 443\r\n",
      "PROXY  TCP4 192.0.2.1 198.51.100.7 51234 443\r\n",
      "PROXY UNKNOWNX\r\n",
      "PROXY unknown\r\n",
      "PROXY UNKNOW\r\n",
      "PROXY \r\n",
      "PROXY  \r\n",
  };
  for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
    refuse_str(lines[i], "TCP4, TCP6 or UNKNOWN");
}

TEST(proxy_v1_fields) {
  refuse_str("PROXY TCP4\r\n", "too few");
  refuse_str("PROXY TCP4 192.0.2.1\r\n", "too few");
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7\r\n", "too few");
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7 51234\r\n", "too few");
  refuse_str("PROXY TCP6 ::1 ::1 1\r\n", "too few");
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443 80\r\n", "too many");
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7 51234 443 \r\n", "too many");
  refuse_str("PROXY TCP6 ::1 ::1 1 2 3\r\n", "too many");
}

TEST(proxy_v1_double_space) {
  const char *good = "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n";
  hs_proxy_t h;
  accept_hdr(good, strlen(good), &h);
  /* Each single space in turn doubled: after "PROXY" the protocol is
   * empty; further on, an empty field is one field too many. */
  size_t spaces = 0;
  for (size_t i = 0; good[i]; i++) {
    if (good[i] != ' ') continue;
    char line[128];
    snprintf(line, sizeof line, "%.*s %s", (int)i, good, good + i);
    refuse_str(line, i == 5 ? "TCP4, TCP6 or UNKNOWN" : "too many fields");
    spaces++;
  }
  ASSERT_EQ(spaces, 5);
  /* Two of them with the address or a port left out. */
  refuse_str("PROXY TCP4  198.51.100.7 51234 443\r\n", "address");
  refuse_str("PROXY TCP4 192.0.2.1 198.51.100.7  443\r\n", "port");
  /* A leading space is not the signature. */
  refuse_str(" PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n", "not a PROXY");
}

TEST(proxy_v1_bad_address) {
  static const char *const v4[] = {
      "192.0.2",        "192.0.2.1.5",  "256.0.0.1", "192.0.2.-1",  "192.0.2.1/24", "01.2.3.4",
      "1.2.3.04",       "0x7f.0.0.1",   "127.1",     "localhost",   "::1",          "2001:db8::1",
      "::ffff:1.2.3.4", "192.0.2.1:80", "192,0,2,1", "[192.0.2.1]", "192.0.2.1\t",  "x",
  };
  static const char *const v6[] = {
      "192.0.2.1", "2001:db8::1::2",    "2001:db8:::1",    "fe80::1%eth0", "[::1]", "12345::1",
      "g::1",      "1:2:3:4:5:6:7:8:9", "::ffff:01.2.3.4", "localhost",    FF6 "f", "::1/128",
      ":",
  };
  char line[256];
  for (size_t i = 0; i < sizeof v4 / sizeof *v4; i++) {
    snprintf(line, sizeof line, "PROXY TCP4 %s 198.51.100.7 51234 443\r\n", v4[i]);
    refuse_str(line, "address");
    snprintf(line, sizeof line, "PROXY TCP4 192.0.2.1 %s 51234 443\r\n", v4[i]);
    refuse_str(line, "address");
  }
  for (size_t i = 0; i < sizeof v6 / sizeof *v6; i++) {
    snprintf(line, sizeof line, "PROXY TCP6 %s 2001:db8::2 51234 443\r\n", v6[i]);
    refuse_str(line, "address");
    snprintf(line, sizeof line, "PROXY TCP6 2001:db8::1 %s 51234 443\r\n", v6[i]);
    refuse_str(line, "address");
  }
}

/* An address field with a NUL byte in it is not an address of its family:
 * the line is text, and "192.0.2.1\0x" is not "192.0.2.1". */
TEST(proxy_v1_nul_in_address) {
  refuse(LIT("PROXY TCP4 192.0.2.1\0x 198.51.100.7 51234 443\r\n"), "address");
  refuse(LIT("PROXY TCP4 192.0.2.1 198.51.100.7\0 51234 443\r\n"), "address");
  refuse(LIT("PROXY TCP6 ::1\0junk ::1 1 2\r\n"), "address");
}

TEST(proxy_v1_bad_port) {
  static const char *const ports[] = {
      "00", "01", "065535", "0443", "65536", "65540", "99999", "100000", "123456",
      "-1", "+1", "1a",     "a",    "0x1",   "1.0",   "1e3",   "1_000",  "\xd9\xa1",
  };
  char line[256];
  for (size_t i = 0; i < sizeof ports / sizeof *ports; i++) {
    int n = snprintf(line, sizeof line, "PROXY TCP4 192.0.2.1 198.51.100.7 %s 443\r\n", ports[i]);
    refuse(line, (size_t)n, "port");
    n = snprintf(line, sizeof line, "PROXY TCP4 192.0.2.1 198.51.100.7 51234 %s\r\n", ports[i]);
    refuse(line, (size_t)n, "port");
  }
  /* A NUL in a port is not a digit. */
  refuse(LIT("PROXY TCP4 192.0.2.1 198.51.100.7 1\0 443\r\n"), "port");
  refuse(LIT("PROXY TCP4 192.0.2.1 198.51.100.7 51234 4\0003\r\n"), "port");
}

/* ------------------------------------------------------------------------ */
/* The signatures: the first byte that cannot begin either is refused. */

static const char v2_sig[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* sig[0, i) then the byte c, which matches neither signature there: MORE
 * up to and including i bytes, refused at i + 1. */
static void refused_at(const char *sig, size_t i, char c) {
  char buf[64];
  const char *why;
  memcpy(buf, sig, i);
  buf[i] = c;
  memset(buf + i + 1, 'z', sizeof buf - i - 1);
  for (size_t k = 0; k <= i; k++) ASSERT_EQ(parse_exact(buf, k, &why), HS_PROXY_MORE);
  refuse(buf, i + 1, "not a PROXY");
  refuse(buf, sizeof buf, "not a PROXY");
}

TEST(proxy_signature) {
  const char *why;
  ASSERT_EQ(parse_exact("", 0, &why), HS_PROXY_MORE);
  ASSERT_NULL(why);
  for (size_t i = 0; i < 6; i++) {
    refused_at("PROXY ", i, 'x');
    refused_at("PROXY ", i, 0);
    refused_at("PROXY ", i, (char)0xff);
  }
  for (size_t i = 0; i < 12; i++) {
    refused_at(v2_sig, i, 'x');
    refused_at(v2_sig, i, v2_sig[i] ^ 1);
  }
  /* What else a connection may begin with. */
  refused_at("", 0, 'G');       /* GET / HTTP/1.1 */
  refused_at("", 0, 0x16);      /* a TLS record */
  refused_at("", 0, 'S');       /* SSH-2.0 */
  refused_at("", 0, 'p');       /* proxy, in lower case */
  refused_at("", 0, '\n');      /* an empty line */
  refused_at("PROXY", 5, '\r'); /* "PROXY\r\n": no protocol */
  refused_at("PROXY", 5, '\t');
  refused_at("\r\n\r\n", 4, '\r');
  refuse(LIT("GET / HTTP/1.1\r\n\r\n"), "not a PROXY");
  refuse(LIT("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), "not a PROXY");
}

/* ------------------------------------------------------------------------ */
/* Version 2: building headers. */

enum { CMD_LOCAL = 0x20, CMD_PROXY = 0x21 };
enum {
  FAM_UNSPEC = 0x00,
  FAM_TCP4 = 0x11,
  FAM_UDP4 = 0x12,
  FAM_TCP6 = 0x21,
  FAM_UDP6 = 0x22,
  FAM_UNIX_STREAM = 0x31,
  FAM_UNIX_DGRAM = 0x32,
};
enum {
  TLV_ALPN = 0x01,
  TLV_AUTHORITY = 0x02,
  TLV_CRC32C = 0x03,
  TLV_NOOP = 0x04,
  TLV_UNIQUE_ID = 0x05,
  TLV_SSL = 0x20,
  SUB_SSL_VERSION = 0x21,
  SUB_SSL_CN = 0x22,
  SUB_SSL_CIPHER = 0x23,
  SUB_SSL_SIG_ALG = 0x24,
  SUB_SSL_KEY_ALG = 0x25,
  TLV_NETNS = 0x30,
};

typedef struct bytes {
  unsigned char b[1024];
  size_t n;
} bytes_t;

static void put(bytes_t *o, const void *p, size_t n) {
  ASSERT_LE(o->n + n, sizeof o->b);
  if (n) memcpy(o->b + o->n, p, n);
  o->n += n;
}

static void put_u8(bytes_t *o, unsigned v) {
  unsigned char c = (unsigned char)v;
  put(o, &c, 1);
}

static void put_u16(bytes_t *o, unsigned v) {
  put_u8(o, v >> 8 & 0xff);
  put_u8(o, v & 0xff);
}

static void put_u32(bytes_t *o, uint32_t v) {
  put_u16(o, v >> 16);
  put_u16(o, v & 0xffff);
}

static void put_fill(bytes_t *o, int c, size_t n) {
  ASSERT_LE(o->n + n, sizeof o->b);
  memset(o->b + o->n, c, n);
  o->n += n;
}

/* A TLV: type, 16-bit length, value. */
static void put_tlv(bytes_t *o, unsigned type, const void *v, size_t n) {
  put_u8(o, type);
  put_u16(o, (unsigned)n);
  put(o, v, n);
}

#define PUT_TLV_STR(o, type, lit) put_tlv((o), (type), lit, sizeof(lit) - 1)

/* An address in network order. */
static void put_ip(bytes_t *o, int af, const char *text) {
  unsigned char a[16];
  ASSERT_EQ(inet_pton(af, text, a), 1);
  put(o, a, af == AF_INET ? 4 : 16);
}

/* The 16 fixed bytes, with a length field that v2_end fills in. */
static void v2_begin(bytes_t *o, unsigned ver_cmd, unsigned fam) {
  o->n = 0;
  put(o, v2_sig, 12);
  put_u8(o, ver_cmd);
  put_u8(o, fam);
  put_u16(o, 0);
}

/* The length field: what follows the 16 fixed bytes. */
static void v2_end(bytes_t *o) {
  size_t len = o->n - HS_PROXY_V2_MIN;
  ASSERT_LE(len, 65535);
  o->b[14] = (unsigned char)(len >> 8);
  o->b[15] = (unsigned char)len;
}

/* PROXY over TCP4 or TCP6 with these addresses; TLVs may follow. */
static void v2_tcp(bytes_t *o, int af, const char *src, const char *dst, unsigned sport,
                   unsigned dport) {
  v2_begin(o, CMD_PROXY, af == AF_INET ? FAM_TCP4 : FAM_TCP6);
  put_ip(o, af, src);
  put_ip(o, af, dst);
  put_u16(o, sport);
  put_u16(o, dport);
}

static void v2_tcp4(bytes_t *o) { v2_tcp(o, AF_INET, "192.0.2.1", "198.51.100.7", 51234, 443); }

/* The fields of v2_tcp4. */
static void is_tcp4(const hs_proxy_t *h) {
  ASSERT_EQ(h->version, 2);
  ASSERT_EQ(h->local, 0);
  ASSERT_EQ(h->family, 4);
  ASSERT_STR(h->src_ip, "192.0.2.1");
  ASSERT_STR(h->dst_ip, "198.51.100.7");
  ASSERT_EQ(h->src_port, 51234);
  ASSERT_EQ(h->dst_port, 443);
}

/* o is a valid header: accepted with its length; fields in *h. */
static void v2_accept(bytes_t *o, hs_proxy_t *h) {
  v2_end(o);
  accept_hdr(o->b, o->n, h);
  ASSERT_EQ(h->version, 2);
}

static void v2_refuse(bytes_t *o, const char *sub) {
  v2_end(o);
  refuse(o->b, o->n, sub);
}

/* ------------------------------------------------------------------------ */
/* Version 2: addresses. */

TEST(proxy_v2_tcp4) {
  bytes_t o;
  hs_proxy_t h;
  v2_tcp4(&o);
  v2_accept(&o, &h);
  ASSERT_EQ(o.n, 28);
  is_tcp4(&h);
  no_tlvs(&h);

  v2_tcp(&o, AF_INET, "0.0.0.0", "255.255.255.255", 0, 65535);
  v2_accept(&o, &h);
  ASSERT_EQ(h.family, 4);
  ASSERT_STR(h.src_ip, "0.0.0.0");
  ASSERT_STR(h.dst_ip, "255.255.255.255");
  ASSERT_EQ(h.src_port, 0);
  ASSERT_EQ(h.dst_port, 65535);
}

TEST(proxy_v2_tcp6) {
  bytes_t o;
  hs_proxy_t h;
  v2_tcp(&o, AF_INET6, "2001:db8::1", "2001:db8::2", 51234, 443);
  v2_accept(&o, &h);
  ASSERT_EQ(o.n, 52);
  ASSERT_EQ(h.local, 0);
  ASSERT_EQ(h.family, 6);
  ASSERT_STR(h.src_ip, "2001:db8::1");
  ASSERT_STR(h.dst_ip, "2001:db8::2");
  ASSERT_EQ(h.src_port, 51234);
  ASSERT_EQ(h.dst_port, 443);
  no_tlvs(&h);

  v2_tcp(&o, AF_INET6, FF6, "::ffff:192.0.2.1", 65535, 0);
  v2_accept(&o, &h);
  ASSERT_EQ(h.family, 6);
  ASSERT_STR(h.src_ip, FF6);
  ASSERT_STR(h.dst_ip, "::ffff:192.0.2.1");
  ASSERT_EQ(h.src_port, 65535);
  ASSERT_EQ(h.dst_port, 0);

  v2_tcp(&o, AF_INET6, "::", "::1", 1, 2);
  v2_accept(&o, &h);
  ASSERT_STR(h.src_ip, "::");
  ASSERT_STR(h.dst_ip, "::1");
}

/* LOCAL (a balancer's own health check): whatever the family, even one
 * that does not exist, and whatever the length, the header is accepted and
 * no address is taken from it. */
TEST(proxy_v2_local) {
  bytes_t o;
  hs_proxy_t h;
  for (unsigned fam = 0; fam < 256; fam++) {
    v2_begin(&o, CMD_LOCAL, fam);
    v2_accept(&o, &h);
    ASSERT_EQ(o.n, 16);
    no_addresses(&h);
  }
  /* With the address block of the family. */
  v2_begin(&o, CMD_LOCAL, FAM_TCP4);
  put_ip(&o, AF_INET, "192.0.2.1");
  put_ip(&o, AF_INET, "198.51.100.7");
  put_u16(&o, 51234);
  put_u16(&o, 443);
  v2_accept(&o, &h);
  no_addresses(&h);
  v2_begin(&o, CMD_LOCAL, FAM_TCP6);
  put_fill(&o, 0x20, 36);
  v2_accept(&o, &h);
  no_addresses(&h);
  v2_begin(&o, CMD_LOCAL, FAM_UNIX_STREAM);
  put_fill(&o, 0, 216);
  v2_accept(&o, &h);
  no_addresses(&h);
  /* Shorter than the family's addresses. */
  v2_begin(&o, CMD_LOCAL, FAM_TCP4);
  put_fill(&o, 1, 5);
  v2_accept(&o, &h);
  no_addresses(&h);
  v2_begin(&o, CMD_LOCAL, FAM_UNIX_DGRAM);
  put_fill(&o, 1, 100);
  v2_accept(&o, &h);
  no_addresses(&h);
  /* An unknown family or transport, with bytes. */
  v2_begin(&o, CMD_LOCAL, 0x41);
  put_fill(&o, 0xff, 40);
  v2_accept(&o, &h);
  no_addresses(&h);
  v2_begin(&o, CMD_LOCAL, 0x1f);
  put_fill(&o, 0xff, 40);
  v2_accept(&o, &h);
  no_addresses(&h);
}

/* LOCAL discards the whole block (the specification: "the receiver must
 * accept this connection as valid and must use the real connection
 * endpoints and discard the protocol block including the family which is
 * ignored"), so what the bytes after the addresses hold cannot refuse it. */
TEST(proxy_v2_local_ignores_block) {
  static const unsigned fams[] = {FAM_UNSPEC, FAM_TCP4,        FAM_UDP4,      FAM_TCP6,
                                  FAM_UDP6,   FAM_UNIX_STREAM, FAM_UNIX_DGRAM};
  static const size_t alen[] = {0, 12, 12, 36, 36, 216, 216};
  bytes_t o;
  hs_proxy_t h;
  for (size_t i = 0; i < sizeof fams / sizeof *fams; i++) {
    /* A TLV that runs past the header. */
    v2_begin(&o, CMD_LOCAL, fams[i]);
    put_fill(&o, 0, alen[i]);
    put_u8(&o, TLV_NOOP);
    put_u16(&o, 100);
    v2_accept(&o, &h);
    no_addresses(&h);
    /* A cut TLV header. */
    v2_begin(&o, CMD_LOCAL, fams[i]);
    put_fill(&o, 0, alen[i]);
    put_u8(&o, TLV_ALPN);
    v2_accept(&o, &h);
    no_addresses(&h);
    /* An SSL TLV that is too short for its fields. */
    v2_begin(&o, CMD_LOCAL, fams[i]);
    put_fill(&o, 0, alen[i]);
    put_tlv(&o, TLV_SSL, "\x01", 1);
    v2_accept(&o, &h);
    no_addresses(&h);
    /* Bytes of 0xff. */
    v2_begin(&o, CMD_LOCAL, fams[i]);
    put_fill(&o, 0xff, 300);
    v2_accept(&o, &h);
    no_addresses(&h);
  }
}

/* PROXY for what carries no TCP address (UNSPEC, unix sockets, UDP): the
 * connection's own addresses stand; TLVs after the addresses are read. */
TEST(proxy_v2_unspec_unix_udp) {
  static const struct {
    unsigned fam;
    size_t alen;
  } cases[] = {{FAM_UNSPEC, 0},
               {FAM_UDP4, 12},
               {FAM_UDP6, 36},
               {FAM_UNIX_STREAM, 216},
               {FAM_UNIX_DGRAM, 216}};
  bytes_t o;
  hs_proxy_t h;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    v2_begin(&o, CMD_PROXY, cases[i].fam);
    put_fill(&o, 0x41, cases[i].alen);
    v2_accept(&o, &h);
    ASSERT_EQ(o.n, 16 + cases[i].alen);
    no_addresses(&h);
    no_tlvs(&h);

    v2_begin(&o, CMD_PROXY, cases[i].fam);
    put_fill(&o, 0x41, cases[i].alen);
    PUT_TLV_STR(&o, TLV_ALPN, "h2");
    v2_accept(&o, &h);
    no_addresses(&h);
    ASSERT_SPAN(h.alpn, "h2");
    /* The span is the TLV's value, just after the addresses. */
    ASSERT_PTR_EQ(h.alpn.p, wire + 16 + cases[i].alen + 3);
  }
  /* More address bytes than the family needs: the rest are TLVs. */
  v2_begin(&o, CMD_PROXY, FAM_UNSPEC);
  PUT_TLV_STR(&o, TLV_AUTHORITY, "example.com");
  v2_accept(&o, &h);
  no_addresses(&h);
  ASSERT_SPAN(h.authority, "example.com");
}

/* ------------------------------------------------------------------------ */
/* Version 2: TLVs. */

TEST(proxy_v2_alpn_authority) {
  bytes_t o;
  hs_proxy_t h;
  v2_tcp4(&o);
  PUT_TLV_STR(&o, TLV_ALPN, "h2");
  PUT_TLV_STR(&o, TLV_AUTHORITY, "example.com");
  v2_accept(&o, &h);
  is_tcp4(&h);
  ASSERT_SPAN(h.alpn, "h2");
  ASSERT_SPAN(h.authority, "example.com");
  ASSERT_PTR_EQ(h.alpn.p, wire + 28 + 3);
  ASSERT_PTR_EQ(h.authority.p, wire + 28 + 5 + 3);
  ASSERT_EQ(h.unique_id.n, 0);
  ASSERT_EQ(h.has_ssl, 0);

  v2_tcp(&o, AF_INET6, "2001:db8::1", "2001:db8::2", 51234, 443);
  PUT_TLV_STR(&o, TLV_AUTHORITY, "www.example.org");
  PUT_TLV_STR(&o, TLV_ALPN, "http/1.1");
  v2_accept(&o, &h);
  ASSERT_EQ(h.family, 6);
  ASSERT_SPAN(h.alpn, "http/1.1");
  ASSERT_SPAN(h.authority, "www.example.org");
}

TEST(proxy_v2_unique_id) {
  unsigned char id[200];
  for (size_t i = 0; i < sizeof id; i++) id[i] = (unsigned char)(i * 7 + 1);
  static const size_t ok[] = {0, 1, 16, 127, 128};
  bytes_t o;
  hs_proxy_t h;
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    v2_tcp4(&o);
    put_tlv(&o, TLV_UNIQUE_ID, id, ok[i]);
    v2_accept(&o, &h);
    is_tcp4(&h);
    ASSERT_MEM_EQ(h.unique_id.p, h.unique_id.n, id, ok[i]);
  }
  static const size_t bad[] = {129, 130, 200};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    v2_tcp4(&o);
    put_tlv(&o, TLV_UNIQUE_ID, id, bad[i]);
    v2_refuse(&o, "unique id");
    /* Also where it is not the first TLV. */
    v2_tcp4(&o);
    PUT_TLV_STR(&o, TLV_ALPN, "h2");
    put_tlv(&o, TLV_UNIQUE_ID, id, bad[i]);
    v2_refuse(&o, "unique id");
  }
}

TEST(proxy_v2_ssl) {
  bytes_t o, ssl;
  hs_proxy_t h;
  /* A verified client certificate, with every sub-TLV and one unknown. */
  ssl.n = 0;
  put_u8(&ssl, 0x07); /* PP2_CLIENT_SSL | _CERT_CONN | _CERT_SESS */
  put_u32(&ssl, 0);
  PUT_TLV_STR(&ssl, SUB_SSL_VERSION, "TLSv1.3");
  PUT_TLV_STR(&ssl, SUB_SSL_CN, "client.example.com");
  PUT_TLV_STR(&ssl, 0x26, "unknown sub-TLV");
  PUT_TLV_STR(&ssl, SUB_SSL_CIPHER, "TLS_AES_128_GCM_SHA256");
  PUT_TLV_STR(&ssl, SUB_SSL_SIG_ALG, "SHA256");
  PUT_TLV_STR(&ssl, SUB_SSL_KEY_ALG, "RSA2048");
  v2_tcp4(&o);
  PUT_TLV_STR(&o, TLV_ALPN, "h2");
  put_tlv(&o, TLV_SSL, ssl.b, ssl.n);
  PUT_TLV_STR(&o, TLV_AUTHORITY, "example.com");
  v2_accept(&o, &h);
  is_tcp4(&h);
  ASSERT_EQ(h.has_ssl, 1);
  ASSERT_EQ(h.ssl_client, 7);
  ASSERT_EQ(h.ssl_verify, 0);
  ASSERT_SPAN(h.ssl_version, "TLSv1.3");
  ASSERT_SPAN(h.ssl_cn, "client.example.com");
  ASSERT_SPAN(h.ssl_cipher, "TLS_AES_128_GCM_SHA256");
  ASSERT_SPAN(h.ssl_sig_alg, "SHA256");
  ASSERT_SPAN(h.ssl_key_alg, "RSA2048");
  ASSERT_SPAN(h.alpn, "h2");
  ASSERT_SPAN(h.authority, "example.com");
  ASSERT_PTR_EQ(h.ssl_version.p, wire + 28 + 5 + 3 + 5 + 3);

  /* TLS without a certificate: verify is non-zero, big-endian; no sub-TLV
   * at all (the value is exactly its 5 fixed bytes). */
  ssl.n = 0;
  put_u8(&ssl, 0x01);
  put_u32(&ssl, 0x01020304);
  v2_tcp4(&o);
  put_tlv(&o, TLV_SSL, ssl.b, ssl.n);
  v2_accept(&o, &h);
  ASSERT_EQ(h.has_ssl, 1);
  ASSERT_EQ(h.ssl_client, 1);
  ASSERT_EQ(h.ssl_verify, 0x01020304);
  ASSERT_EQ(h.ssl_version.n, 0);
  ASSERT_EQ(h.ssl_cn.n, 0);
  ASSERT_EQ(h.ssl_cipher.n, 0);

  /* A certificate in the session only, that failed verification. */
  ssl.n = 0;
  put_u8(&ssl, 0x05);
  put_u32(&ssl, 0xffffffffu);
  PUT_TLV_STR(&ssl, SUB_SSL_VERSION, "TLSv1.2");
  v2_tcp4(&o);
  put_tlv(&o, TLV_SSL, ssl.b, ssl.n);
  v2_accept(&o, &h);
  ASSERT_EQ(h.ssl_client, 5);
  ASSERT_EQ(h.ssl_verify, 0xffffffffu);
  ASSERT_SPAN(h.ssl_version, "TLSv1.2");

  /* Sub-types outside an SSL TLV, and top-level types inside one, are
   * not those fields. */
  ssl.n = 0;
  put_u8(&ssl, 0x01);
  put_u32(&ssl, 0);
  PUT_TLV_STR(&ssl, TLV_ALPN, "h2");
  PUT_TLV_STR(&ssl, TLV_AUTHORITY, "inner.example");
  v2_tcp4(&o);
  PUT_TLV_STR(&o, SUB_SSL_VERSION, "TLSv1.3");
  PUT_TLV_STR(&o, SUB_SSL_CN, "outer.example");
  put_tlv(&o, TLV_SSL, ssl.b, ssl.n);
  v2_accept(&o, &h);
  ASSERT_EQ(h.has_ssl, 1);
  ASSERT_EQ(h.ssl_version.n, 0);
  ASSERT_EQ(h.ssl_cn.n, 0);
  ASSERT_EQ(h.alpn.n, 0);
  ASSERT_EQ(h.authority.n, 0);
}

TEST(proxy_v2_ssl_short) {
  bytes_t o;
  for (size_t n = 0; n < 5; n++) {
    v2_tcp4(&o);
    put_tlv(&o, TLV_SSL, "\x07\x00\x00\x00\x00", n);
    v2_refuse(&o, "SSL");
    /* Even with bytes after it that would complete it. */
    v2_tcp4(&o);
    put_tlv(&o, TLV_SSL, "\x07\x00\x00\x00\x00", n);
    put_tlv(&o, TLV_NOOP, "\x00\x00\x00\x00\x00", 5);
    v2_refuse(&o, "SSL");
  }
  /* A sub-TLV that runs past the SSL value (not past the header). */
  v2_tcp4(&o);
  put_u8(&o, TLV_SSL);
  put_u16(&o, 5 + 3 + 2);
  put(&o, "\x01\x00\x00\x00\x00", 5);
  put_u8(&o, SUB_SSL_VERSION);
  put_u16(&o, 7);
  put(&o, "TLSv1.3", 7);
  v2_refuse(&o, "PROXY v2 TLV");
  /* A sub-TLV header cut by the end of the SSL value. */
  v2_tcp4(&o);
  put_u8(&o, TLV_SSL);
  put_u16(&o, 5 + 2);
  put(&o, "\x01\x00\x00\x00\x00", 5);
  put_u8(&o, SUB_SSL_VERSION);
  put_u8(&o, 0);
  PUT_TLV_STR(&o, TLV_ALPN, "h2");
  v2_refuse(&o, "cut short");
}

TEST(proxy_v2_unknown_tlvs) {
  bytes_t o;
  hs_proxy_t h;
  unsigned char big[300];
  memset(big, 0xab, sizeof big);
  v2_tcp4(&o);
  put_tlv(&o, TLV_CRC32C, "\xde\xad\xbe\xef", 4); /* not checked */
  put_tlv(&o, TLV_NOOP, "", 0);
  put_tlv(&o, TLV_NOOP, big, 10);
  PUT_TLV_STR(&o, TLV_NETNS, "blue");
  PUT_TLV_STR(&o, 0xe0, "custom");
  PUT_TLV_STR(&o, 0xea, "\x01vpce-0123456789abcdef0"); /* a cloud balancer's own */
  PUT_TLV_STR(&o, 0xf0, "experiment");
  put_tlv(&o, 0xff, big, sizeof big);
  put_tlv(&o, 0x06, "", 0);
  PUT_TLV_STR(&o, TLV_ALPN, "h2");
  put_tlv(&o, 0x00, big, 3);
  v2_accept(&o, &h);
  is_tcp4(&h);
  ASSERT_SPAN(h.alpn, "h2");
  ASSERT_EQ(h.authority.n, 0);
  ASSERT_EQ(h.unique_id.n, 0);
  ASSERT_EQ(h.has_ssl, 0);
  ASSERT_EQ(h.ssl_version.n, 0);
}

TEST(proxy_v2_tlv_past_header) {
  bytes_t o;
  /* One byte more than the header holds. */
  v2_tcp4(&o);
  put_u8(&o, TLV_ALPN);
  put_u16(&o, 3);
  put(&o, "h2", 2);
  v2_refuse(&o, "runs past");
  v2_tcp4(&o);
  PUT_TLV_STR(&o, TLV_ALPN, "h2");
  put_u8(&o, TLV_NOOP);
  put_u16(&o, 0xffff);
  v2_refuse(&o, "runs past");
  /* Its length field ends the header: the value is missing. */
  v2_tcp4(&o);
  put_u8(&o, TLV_AUTHORITY);
  put_u16(&o, 1);
  v2_refuse(&o, "runs past");
  /* A TLV header cut short: one or two bytes left. */
  v2_tcp4(&o);
  put_u8(&o, TLV_ALPN);
  v2_refuse(&o, "cut short");
  v2_tcp4(&o);
  PUT_TLV_STR(&o, TLV_ALPN, "h2");
  put_u8(&o, TLV_NOOP);
  put_u8(&o, 0);
  v2_refuse(&o, "cut short");
  /* The same after IPv6 addresses. */
  v2_tcp(&o, AF_INET6, "::1", "::1", 1, 2);
  put_u8(&o, TLV_NOOP);
  put_u8(&o, 0);
  v2_refuse(&o, "cut short");
}

/* ------------------------------------------------------------------------ */
/* Version 2: the length. */

TEST(proxy_v2_length) {
  static unsigned char big[HS_PROXY_V2_MIN + 65535];
  hs_proxy_t h;
  /* The most a header can be: 16 + 65535 bytes. PROXY over TCP4, then
   * 65535 - 12 = 65523 bytes of TLVs: NOOP 60000, NOOP 5512, ALPN "h2". */
  memcpy(big, v2_sig, 12);
  big[12] = CMD_PROXY;
  big[13] = FAM_TCP4;
  big[14] = big[15] = 0xff;
  memcpy(big + 16, "\xc0\x00\x02\x01\xc6\x33\x64\x07\xc8\x22\x01\xbb", 12);
  size_t at = 16 + 12;
  memset(big + at, 0, sizeof big - at);
  memcpy(big + at, "\x04\xea\x60", 3);
  at += 3 + 60000;
  memcpy(big + at, "\x04\x15\x88", 3);
  at += 3 + 5512;
  memcpy(big + at, "\x01\x00\x02h2", 5);
  ASSERT_EQ(at + 5, sizeof big);
  accept_hdr(big, sizeof big, &h);
  is_tcp4(&h);
  ASSERT_SPAN(h.alpn, "h2");
  ASSERT_PTR_EQ(h.alpn.p, wire + sizeof big - 2);
  /* The same bytes as LOCAL: the same length, no address. */
  big[12] = CMD_LOCAL;
  accept_hdr(big, sizeof big, &h);
  no_addresses(&h);
  /* LOCAL with an unknown family and 65535 bytes of anything. */
  big[13] = 0xf0;
  memset(big + 16, 0x5a, 65535);
  accept_hdr(big, sizeof big, &h);
  no_addresses(&h);
}

/* ------------------------------------------------------------------------ */
/* Version 2: refusals. */

TEST(proxy_v2_bad_version) {
  bytes_t o;
  for (unsigned ver = 0; ver < 16; ver++) {
    if (ver == 2) continue;
    for (unsigned cmd = 0; cmd < 2; cmd++) {
      v2_begin(&o, ver << 4 | cmd, FAM_TCP4);
      put_fill(&o, 1, 12);
      v2_refuse(&o, "version");
    }
  }
}

TEST(proxy_v2_bad_command) {
  bytes_t o;
  for (unsigned cmd = 2; cmd < 16; cmd++) {
    v2_begin(&o, 0x20 | cmd, FAM_TCP4);
    put_fill(&o, 1, 12);
    v2_refuse(&o, "command");
    v2_begin(&o, 0x20 | cmd, FAM_UNSPEC);
    v2_refuse(&o, "command");
  }
}

TEST(proxy_v2_bad_family) {
  bytes_t o;
  for (unsigned fam = 4; fam < 16; fam++)
    for (unsigned tr = 0; tr < 16; tr++) {
      v2_begin(&o, CMD_PROXY, fam << 4 | tr);
      put_fill(&o, 1, 216);
      v2_refuse(&o, "family");
    }
  for (unsigned fam = 0; fam < 4; fam++)
    for (unsigned tr = 3; tr < 16; tr++) {
      v2_begin(&o, CMD_PROXY, fam << 4 | tr);
      put_fill(&o, 1, 216);
      v2_refuse(&o, "transport");
    }
}

TEST(proxy_v2_short_addresses) {
  static const struct {
    unsigned fam;
    size_t alen;
  } cases[] = {{FAM_TCP4, 12}, {FAM_UDP4, 12},         {FAM_TCP6, 36},
               {FAM_UDP6, 36}, {FAM_UNIX_STREAM, 216}, {FAM_UNIX_DGRAM, 216}};
  bytes_t o;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    size_t lens[] = {0, 1, cases[i].alen / 2, cases[i].alen - 1};
    for (size_t j = 0; j < 4; j++) {
      v2_begin(&o, CMD_PROXY, cases[i].fam);
      put_fill(&o, 0x7f, lens[j]);
      v2_refuse(&o, "addresses");
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Every call starts from a clean *out. */

TEST(proxy_out_reset) {
  bytes_t o, ssl;
  hs_proxy_t h;
  const char *why;
  ssl.n = 0;
  put_u8(&ssl, 0x07);
  put_u32(&ssl, 9);
  PUT_TLV_STR(&ssl, SUB_SSL_CN, "client");
  v2_tcp4(&o);
  PUT_TLV_STR(&o, TLV_ALPN, "h2");
  put_tlv(&o, TLV_SSL, ssl.b, ssl.n);
  v2_end(&o);
  ASSERT_EQ(hs_proxy_parse((const char *)o.b, o.n, &h, &why), (long)o.n);
  ASSERT_EQ(h.has_ssl, 1);
  ASSERT_EQ(hs_proxy_parse(LIT("PROXY UNKNOWN\r\n"), &h, &why), 15);
  ASSERT_EQ(h.version, 1);
  no_addresses(&h);
  no_tlvs(&h);
  ASSERT_EQ(hs_proxy_parse((const char *)o.b, o.n, &h, &why), (long)o.n);
  ASSERT_EQ(hs_proxy_parse(LIT("PROXY"), &h, &why), HS_PROXY_MORE);
  ASSERT_NULL(why);
  ASSERT_EQ(h.version, 0);
  ASSERT_EQ(h.has_ssl, 0);
  ASSERT_EQ(h.alpn.n, 0);
  ASSERT_EQ(hs_proxy_parse(LIT("GET /"), &h, &why), HS_PROXY_BAD);
  ASSERT_NOT_NULL(why);
}

const hs_test_t hs_proxy_tests[] = {
    TEST_ENTRY(proxy_v1_tcp4),
    TEST_ENTRY(proxy_v1_tcp6),
    TEST_ENTRY(proxy_v1_ports),
    TEST_ENTRY(proxy_v1_unknown),
    TEST_ENTRY(proxy_v1_107_bytes),
    TEST_ENTRY(proxy_v1_over_107),
    TEST_ENTRY(proxy_v1_no_crlf),
    TEST_ENTRY(proxy_v1_bare_lf),
    TEST_ENTRY(proxy_v1_protocol),
    TEST_ENTRY(proxy_v1_fields),
    TEST_ENTRY(proxy_v1_double_space),
    TEST_ENTRY(proxy_v1_bad_address),
    TEST_ENTRY(proxy_v1_nul_in_address),
    TEST_ENTRY(proxy_v1_bad_port),
    TEST_ENTRY(proxy_signature),
    TEST_ENTRY(proxy_v2_tcp4),
    TEST_ENTRY(proxy_v2_tcp6),
    TEST_ENTRY(proxy_v2_local),
    TEST_ENTRY(proxy_v2_local_ignores_block),
    TEST_ENTRY(proxy_v2_unspec_unix_udp),
    TEST_ENTRY(proxy_v2_alpn_authority),
    TEST_ENTRY(proxy_v2_unique_id),
    TEST_ENTRY(proxy_v2_ssl),
    TEST_ENTRY(proxy_v2_ssl_short),
    TEST_ENTRY(proxy_v2_unknown_tlvs),
    TEST_ENTRY(proxy_v2_tlv_past_header),
    TEST_ENTRY(proxy_v2_length),
    TEST_ENTRY(proxy_v2_bad_version),
    TEST_ENTRY(proxy_v2_bad_command),
    TEST_ENTRY(proxy_v2_bad_family),
    TEST_ENTRY(proxy_v2_short_addresses),
    TEST_ENTRY(proxy_out_reset),
    TEST_END,
};
