/* test_tls.c: the TLS layer (src/tls.c) with a server and a client hs_tls_t
 * talking to each other in memory: what one side queues in cout is fed to
 * the other with hs_tls_feed, as the socket would carry it, so no loop and
 * no socket take part.
 *
 * The certificates are made by the first test that needs them, with the
 * OpenSSL API (P-256 keys; a CA, leaves signed by it with subjectAltName
 * DNS names, and a second, unknown CA with leaves of its own), written as
 * PEM files into a mkdtemp directory that is removed when the process
 * exits. No key is committed.
 *
 * The session ticket keys are the process's (tls.c); the tests that rotate
 * them make their own tickets first, so the order of the tests does not
 * matter.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, strdup */

#include "test.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

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

/* ------------------------------------------------------------------------ */
/* Certificates. */

enum {
  F_CA,     /* the CA that signs every leaf below but the rogue ones */
  F_SERVER, /* CN=default.test; DNS default.test, localhost, shared.test */
  F_SERVER_KEY,
  F_OTHER, /* CN=other.test; DNS other.test, *.wild.test, shared.test, twice.test */
  F_OTHER_KEY,
  F_CLIENT, /* CN=client one, O=hotsock tests; serial CLIENT_SERIAL */
  F_CLIENT_KEY,
  F_ROGUE_CA,     /* a CA no context trusts */
  F_ROGUE_SERVER, /* CN=default.test, signed by the rogue CA */
  F_ROGUE_SERVER_KEY,
  F_ROGUE_CLIENT, /* CN=rogue client, signed by the rogue CA */
  F_ROGUE_CLIENT_KEY,
  F_GARBAGE, /* not PEM at all */
  F_CHAIN,   /* CN=chain.test (DNS chain.test, twice.test), then its CA, an intermediate */
  F_CHAIN_KEY,
  F_ED25519_KEY, /* a key of another type than every certificate's */
  F_COUNT
};

static const char *const file_names[F_COUNT] = {
    "ca.pem",           "server.pem",       "server.key",       "other.pem",
    "other.key",        "client.pem",       "client.key",       "rogue-ca.pem",
    "rogue-server.pem", "rogue-server.key", "rogue-client.pem", "rogue-client.key",
    "garbage.pem",      "chain.pem",        "chain.key",        "ed25519.key"};

#define CLIENT_SERIAL 0x1234ABCDL
#define CLIENT_SERIAL_HEX "1234ABCD"

static char cert_dir[64]; /* "" until made */
static char paths[F_COUNT][128];
static char client_sha256[65]; /* of F_CLIENT, lowercase hex */
static int certs_ready;

/* Where file f is (certs() must have run). */
static char *P(int f) { return paths[f]; }

/* Remove the files and the directory (atexit). */
static void remove_certs(void) {
  if (!cert_dir[0]) return;
  for (int i = 0; i < F_COUNT; i++) unlink(paths[i]);
  rmdir(cert_dir);
  cert_dir[0] = 0;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX v;
  X509V3_set_ctx_nodb(&v);
  X509V3_set_ctx(&v, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v, nid, value);
  ASSERT_NOT_NULL(e);
  ASSERT_EQ(X509_add_ext(x, e, -1), 1);
  X509_EXTENSION_free(e);
}

/* A certificate for key: a CA (san NULL) or a leaf with subjectAltName san,
 * signed by issuer/issuer_key, or by itself when issuer is NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *org, const char *cn, long serial, X509 *issuer,
                       EVP_PKEY *issuer_key, const char *san) {
  X509 *x = X509_new();
  ASSERT_NOT_NULL(x);
  ASSERT_EQ(X509_set_version(x, 2), 1);
  ASSERT_EQ(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
  ASSERT_NOT_NULL(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
  ASSERT_NOT_NULL(X509_gmtime_adj(X509_getm_notAfter(x), 7 * 24 * 3600));
  ASSERT_EQ(X509_set_pubkey(x, key), 1);
  X509_NAME *n = X509_get_subject_name(x);
  if (org)
    ASSERT_EQ(
        X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)org, -1, -1, 0), 1);
  ASSERT_EQ(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
            1);
  ASSERT_EQ(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n), 1);
  X509 *signer = issuer ? issuer : x;
  if (!san) {
    add_ext(x, signer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, signer, NID_basic_constraints, "CA:FALSE");
    if (*san) add_ext(x, signer, NID_subject_alt_name, san);
  }
  ASSERT_GT(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()), 0);
  return x;
}

static void write_cert(int f, X509 *x) {
  FILE *fp = fopen(P(f), "w");
  ASSERT_NOT_NULL(fp);
  int ok = PEM_write_X509(fp, x);
  ASSERT_EQ(fclose(fp), 0);
  ASSERT_EQ(ok, 1);
}

static void write_key(int f, EVP_PKEY *k) {
  FILE *fp = fopen(P(f), "w");
  ASSERT_NOT_NULL(fp);
  int ok = PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL);
  ASSERT_EQ(fclose(fp), 0);
  ASSERT_EQ(ok, 1);
}

static EVP_PKEY *new_key(void) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  ASSERT_NOT_NULL(k);
  return k;
}

/* A leaf signed by ca/ca_key, written to cert_f and key_f. */
static X509 *leaf(int cert_f, int key_f, const char *org, const char *cn, long serial, X509 *ca,
                  EVP_PKEY *ca_key, const char *san) {
  EVP_PKEY *k = new_key();
  X509 *x = make_cert(k, org, cn, serial, ca, ca_key, san);
  write_cert(cert_f, x);
  write_key(key_f, k);
  EVP_PKEY_free(k);
  return x;
}

/* Make every file once per process. */
static void certs(void) {
  if (certs_ready) return;
  if (!cert_dir[0]) {
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 40) tmp = "/tmp";
    snprintf(cert_dir, sizeof cert_dir, "%s/hs_tls_XXXXXX", tmp);
    ASSERT_NOT_NULL(mkdtemp(cert_dir));
    for (int i = 0; i < F_COUNT; i++)
      snprintf(paths[i], sizeof paths[i], "%s/%s", cert_dir, file_names[i]);
    atexit(remove_certs);
  }
  EVP_PKEY *ca_key = new_key(), *rogue_key = new_key();
  X509 *ca = make_cert(ca_key, "hotsock tests", "hotsock test CA", 1, NULL, NULL, NULL);
  X509 *rogue = make_cert(rogue_key, NULL, "rogue CA", 1, NULL, NULL, NULL);
  write_cert(F_CA, ca);
  write_cert(F_ROGUE_CA, rogue);
  X509_free(leaf(F_SERVER, F_SERVER_KEY, NULL, "default.test", 2, ca, ca_key,
                 "DNS:default.test,DNS:localhost,DNS:shared.test"));
  X509_free(leaf(F_OTHER, F_OTHER_KEY, NULL, "other.test", 3, ca, ca_key,
                 "DNS:other.test,DNS:*.wild.test,DNS:shared.test,DNS:twice.test"));
  /* A leaf under an intermediate CA: the chain file holds both. */
  EVP_PKEY *mid_key = new_key();
  X509 *mid = make_cert(mid_key, "hotsock tests", "hotsock test intermediate", 6, ca, ca_key, NULL);
  X509_free(leaf(F_CHAIN, F_CHAIN_KEY, NULL, "chain.test", 7, mid, mid_key,
                 "DNS:chain.test,DNS:twice.test"));
  FILE *chain = fopen(P(F_CHAIN), "a");
  ASSERT_NOT_NULL(chain);
  int chain_ok = PEM_write_X509(chain, mid);
  ASSERT_EQ(fclose(chain), 0);
  ASSERT_EQ(chain_ok, 1);
  X509_free(mid);
  EVP_PKEY_free(mid_key);
  EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  ASSERT_NOT_NULL(ed);
  write_key(F_ED25519_KEY, ed);
  EVP_PKEY_free(ed);
  X509 *client =
      leaf(F_CLIENT, F_CLIENT_KEY, "hotsock tests", "client one", CLIENT_SERIAL, ca, ca_key, "");
  X509_free(leaf(F_ROGUE_SERVER, F_ROGUE_SERVER_KEY, NULL, "default.test", 4, rogue, rogue_key,
                 "DNS:default.test"));
  X509_free(
      leaf(F_ROGUE_CLIENT, F_ROGUE_CLIENT_KEY, NULL, "rogue client", 5, rogue, rogue_key, ""));
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  ASSERT_EQ(X509_digest(client, EVP_sha256(), md, &len), 1);
  ASSERT_EQ(len, 32);
  for (unsigned i = 0; i < len; i++) snprintf(client_sha256 + 2 * i, 3, "%02x", md[i]);
  X509_free(client);
  X509_free(ca);
  X509_free(rogue);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(rogue_key);
  FILE *fp = fopen(P(F_GARBAGE), "w");
  ASSERT_NOT_NULL(fp);
  fputs("this is not a certificate\n", fp);
  ASSERT_EQ(fclose(fp), 0);
  certs_ready = 1;
}

/* ------------------------------------------------------------------------ */
/* Contexts. The opts point into paths[] and string literals: hs_tls_ctx_new
 * copies them, so they are never freed here. */

static hs_tls_opts_t server_opts(void) {
  certs();
  hs_tls_opts_t o;
  memset(&o, 0, sizeof o);
  o.cert = P(F_SERVER);
  o.key = P(F_SERVER_KEY);
  return o;
}

/* A client that verifies the server against our CA. */
static hs_tls_opts_t client_opts(void) {
  certs();
  hs_tls_opts_t o;
  memset(&o, 0, sizeof o);
  o.ca = P(F_CA);
  return o;
}

static hs_tls_ctx_t *make_ctx(const hs_tls_opts_t *o, int client) {
  char err[512] = "";
  hs_tls_ctx_t *ctx = hs_tls_ctx_new(o, client, err, sizeof err);
  if (!ctx) fprintf(stderr, "  hs_tls_ctx_new: %s\n", err);
  ASSERT_NOT_NULL(ctx);
  ASSERT_EQ(hs_tls_ctx_is_client(ctx), client);
  return ctx;
}

/* hs_tls_ctx_new must fail; its err is returned (static). */
static const char *ctx_error(const hs_tls_opts_t *o, int client) {
  static char err[512];
  strcpy(err, "(not set)");
  hs_tls_ctx_t *ctx = hs_tls_ctx_new(o, client, err, sizeof err);
  if (ctx) hs_tls_ctx_unref(ctx);
  ASSERT_NULL(ctx);
  return err;
}

/* ------------------------------------------------------------------------ */
/* A server and a client in memory. */

typedef struct end {
  hs_tls_t *t;
  int dones;     /* how many times the handshake said DONE (once at most) */
  int failed;    /* HS_TLS_ERROR came, from the handshake or a read */
  int closed;    /* the peer's close_notify came */
  char err[512]; /* why it failed */
  hs_buf_t in;   /* plaintext read */
} end_t;

typedef struct link {
  end_t c, s;
  hs_pool_t pool;
} link_t;

/* A server connection from sctx and a client one from cctx (sending name),
 * neither started. */
static void link_open(link_t *l, hs_tls_ctx_t *sctx, hs_tls_ctx_t *cctx, const char *name) {
  memset(l, 0, sizeof *l);
  hs_pool_init(&l->pool, 8);
  hs_buf_init(&l->c.in);
  hs_buf_init(&l->s.in);
  l->s.t = hs_tls_new(sctx);
  l->c.t = hs_tls_new_client(cctx, name);
  ASSERT_NOT_NULL(l->s.t);
  ASSERT_NOT_NULL(l->c.t);
}

static void link_close(link_t *l) {
  hs_tls_free(l->c.t, &l->pool);
  hs_tls_free(l->s.t, &l->pool);
  hs_buf_release(&l->c.in, &l->pool);
  hs_buf_release(&l->s.in, &l->pool);
  hs_pool_free(&l->pool);
  memset(l, 0, sizeof *l);
}

/* What the connection does with input, as conn.c's tls_input: the
 * handshake until it is done, then reads. */
static void advance(end_t *e, hs_pool_t *pool) {
  if (e->failed) return;
  if (!e->t->done) {
    int r = hs_tls_handshake(e->t, e->err, sizeof e->err);
    ASSERT_TRUE(r == HS_TLS_OK || r == HS_TLS_DONE || r == HS_TLS_ERROR);
    if (r == HS_TLS_ERROR) {
      ASSERT_TRUE(e->err[0] != 0);
      e->failed = 1;
      return;
    }
    if (r != HS_TLS_DONE) {
      ASSERT_EQ(e->t->done, 0);
      return;
    }
    ASSERT_EQ(e->t->done, 1);
    e->dones++;
    ASSERT_EQ(hs_tls_handshake(e->t, e->err, sizeof e->err), HS_TLS_OK); /* no second DONE */
  }
  int r = hs_tls_read(e->t, &e->in, pool, e->err, sizeof e->err);
  ASSERT_TRUE(r == HS_TLS_OK || r == HS_TLS_CLOSED || r == HS_TLS_ERROR);
  if (r == HS_TLS_ERROR) {
    ASSERT_TRUE(e->err[0] != 0);
    e->failed = 1;
  }
  if (r == HS_TLS_CLOSED) e->closed = 1;
}

/* Carry what from has queued to to, as the socket would; the bytes moved. */
static size_t carry(end_t *from, end_t *to, hs_pool_t *pool) {
  hs_buf_t none;
  hs_buf_init(&none);
  ASSERT_EQ(hs_tls_encrypt(from->t, &none, 0, pool), 0); /* the write BIO into cout */
  size_t n = hs_buf_len(&from->t->cout);
  ASSERT_EQ(hs_tls_pending(from->t), n);
  if (n) {
    ASSERT_EQ(hs_tls_feed(to->t, hs_buf_peek(&from->t->cout), n), 0);
    hs_buf_consume(&from->t->cout, n, pool);
  }
  return n;
}

/* Both sides take turns until nothing moves (a bounded number of rounds). */
static void run(link_t *l) {
  for (int round = 0; round < 20; round++) {
    advance(&l->c, &l->pool);
    size_t moved = carry(&l->c, &l->s, &l->pool);
    advance(&l->s, &l->pool);
    moved += carry(&l->s, &l->c, &l->pool);
    if (!moved) return;
  }
  ASSERT_TRUE(!"the two sides were still talking after 20 rounds");
}

/* Run the handshake; both sides must complete it. */
static void shake_ok(link_t *l) {
  run(l);
  if (l->c.failed) fprintf(stderr, "  client: %s\n", l->c.err);
  if (l->s.failed) fprintf(stderr, "  server: %s\n", l->s.err);
  ASSERT_EQ(l->c.failed, 0);
  ASSERT_EQ(l->s.failed, 0);
  ASSERT_EQ(l->c.dones, 1);
  ASSERT_EQ(l->s.dones, 1);
}

/* e sends n bytes of p (then close_notify when closing). */
static void send_bytes(end_t *e, const void *p, size_t n, int closing, hs_pool_t *pool) {
  hs_buf_t out;
  hs_buf_init(&out);
  ASSERT_EQ(hs_buf_append(&out, p, n, pool), 0);
  ASSERT_EQ(hs_tls_encrypt(e->t, &out, closing, pool), 0);
  ASSERT_EQ(hs_buf_len(&out), 0); /* all of it was taken */
  hs_buf_release(&out, pool);
}

/* e has read exactly the string s; its input is emptied. */
static void got(end_t *e, const char *s, hs_pool_t *pool) {
  HS_TEST_MEM(hs_buf_peek(&e->in), hs_buf_len(&e->in), s, strlen(s), "input", s);
  hs_buf_consume(&e->in, hs_buf_len(&e->in), pool);
}

/* A full handshake between new contexts from so and co; the contexts are
 * unref'd (the connections keep theirs). */
static void link_ok(link_t *l, const hs_tls_opts_t *so, const hs_tls_opts_t *co, const char *name) {
  hs_tls_ctx_t *sctx = make_ctx(so, 0), *cctx = make_ctx(co, 1);
  link_open(l, sctx, cctx, name);
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
  shake_ok(l);
}

/* ------------------------------------------------------------------------ */
/* Handshake and data. */

TEST(tls_handshake_and_data_both_ways) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  so.alpn = (unsigned char *)"\x02h2\x08http/1.1";
  so.alpn_len = 12;
  co.alpn = (unsigned char *)"\x08http/1.1";
  co.alpn_len = 9;
  link_t l;
  link_ok(&l, &so, &co, "default.test");

  send_bytes(&l.c, "hello server", 12, 0, &l.pool);
  run(&l);
  got(&l.s, "hello server", &l.pool);
  send_bytes(&l.s, "hello client", 12, 0, &l.pool);
  run(&l);
  got(&l.c, "hello client", &l.pool);

  hs_tls_info_t si, ci;
  hs_tls_get_info(l.s.t, &si);
  hs_tls_get_info(l.c.t, &ci);
  ASSERT_STR(si.version, "TLSv1.3");
  ASSERT_STR(ci.version, "TLSv1.3");
  ASSERT_NOT_NULL(si.cipher);
  ASSERT_EQ(strncmp(si.cipher, "TLS_", 4), 0);
  ASSERT_STR(ci.cipher, si.cipher);
  ASSERT_MEM_STR(si.alpn, si.alpn_len, "http/1.1");
  ASSERT_MEM_STR(ci.alpn, ci.alpn_len, "http/1.1");
  ASSERT_STR(si.sni, "default.test");
  ASSERT_STR(ci.sni, "default.test");
  ASSERT_EQ(si.resumed, 0);
  ASSERT_EQ(ci.resumed, 0);
  /* The client sent no certificate; the server's is what the client saw. */
  ASSERT_NULL(si.subject);
  ASSERT_NULL(si.issuer);
  ASSERT_NULL(si.serial);
  ASSERT_NULL(si.sha256);
  ASSERT_STR(ci.subject, "CN=default.test");
  ASSERT_STR(ci.issuer, "CN=hotsock test CA,O=hotsock tests");
  ASSERT_STR(ci.serial, "02");
  ASSERT_NOT_NULL(ci.sha256);
  ASSERT_EQ(strlen(ci.sha256), 64);
  link_close(&l);
}

TEST(tls_large_data_in_many_records) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  link_t l;
  link_ok(&l, &so, &co, "default.test");
  size_t n = 200 * 1000; /* over a dozen 16 KiB records, more than a pool block */
  char *big = malloc(n);
  ASSERT_NOT_NULL(big);
  for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 23);
  send_bytes(&l.c, big, n, 0, &l.pool);
  run(&l);
  ASSERT_MEM_EQ(hs_buf_peek(&l.s.in), hs_buf_len(&l.s.in), big, n);
  /* Echoed back from what was read. */
  send_bytes(&l.s, hs_buf_peek(&l.s.in), hs_buf_len(&l.s.in), 0, &l.pool);
  hs_buf_consume(&l.s.in, hs_buf_len(&l.s.in), &l.pool);
  run(&l);
  ASSERT_MEM_EQ(hs_buf_peek(&l.c.in), hs_buf_len(&l.c.in), big, n);
  free(big);
  link_close(&l);
}

TEST(tls_client_writes_its_hello_first) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  link_t l;
  link_open(&l, sctx, cctx, "default.test");
  hs_tls_info_t info;
  hs_tls_get_info(l.c.t, &info); /* nothing is known before the handshake */
  ASSERT_NULL(info.version);
  ASSERT_NULL(info.cipher);
  ASSERT_NULL(info.subject);
  ASSERT_EQ(hs_tls_pending(l.c.t), 0);
  ASSERT_EQ(hs_tls_handshake(l.s.t, l.s.err, sizeof l.s.err), HS_TLS_OK); /* waits */
  ASSERT_EQ(hs_tls_pending(l.s.t), 0);
  ASSERT_EQ(hs_tls_handshake(l.c.t, l.c.err, sizeof l.c.err), HS_TLS_OK);
  ASSERT_GT(hs_tls_pending(l.c.t), 0); /* the ClientHello */
  /* Plaintext given before the handshake is done waits in out. */
  hs_buf_t out;
  hs_buf_init(&out);
  ASSERT_EQ(hs_buf_append(&out, "early", 5, &l.pool), 0);
  ASSERT_EQ(hs_tls_encrypt(l.c.t, &out, 0, &l.pool), 0);
  ASSERT_MEM_STR(hs_buf_peek(&out), hs_buf_len(&out), "early");
  shake_ok(&l);
  ASSERT_EQ(hs_tls_encrypt(l.c.t, &out, 0, &l.pool), 0);
  ASSERT_EQ(hs_buf_len(&out), 0);
  run(&l);
  got(&l.s, "early", &l.pool);
  hs_buf_release(&out, &l.pool);
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
  link_close(&l);
}

TEST(tls_close_notify_reads_as_closed) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  link_t l;
  link_ok(&l, &so, &co, "default.test");
  send_bytes(&l.c, "last words", 10, 1, &l.pool); /* data, then close_notify */
  ASSERT_EQ(l.c.t->notify_sent, 1);
  run(&l);
  got(&l.s, "last words", &l.pool);
  ASSERT_EQ(l.s.closed, 1);
  ASSERT_EQ(l.s.failed, 0);
  /* The server may still answer (a half-close), then close too. */
  send_bytes(&l.s, "bye", 3, 1, &l.pool);
  run(&l);
  got(&l.c, "bye", &l.pool);
  ASSERT_EQ(l.c.closed, 1);
  link_close(&l);
}

TEST(tls_version_12_when_the_client_caps_it) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  link_t l;
  link_open(&l, sctx, cctx, "default.test");
  ASSERT_EQ(SSL_set_max_proto_version(l.c.t->ssl, TLS1_2_VERSION), 1);
  shake_ok(&l);
  hs_tls_info_t si;
  hs_tls_get_info(l.s.t, &si);
  ASSERT_STR(si.version, "TLSv1.2");
  ASSERT_HAS(si.cipher, "ECDHE-ECDSA-");
  send_bytes(&l.c, "ping", 4, 0, &l.pool);
  run(&l);
  got(&l.s, "ping", &l.pool);
  link_close(&l);

  /* A server with min_version 13 refuses that client. */
  so.min_version = 13;
  hs_tls_ctx_t *s13 = make_ctx(&so, 0);
  link_open(&l, s13, cctx, "default.test");
  ASSERT_EQ(SSL_set_max_proto_version(l.c.t->ssl, TLS1_2_VERSION), 1);
  run(&l);
  ASSERT_EQ(l.s.failed, 1);
  ASSERT_EQ(l.c.failed, 1);
  ASSERT_HAS(l.s.err, "TLS handshake");
  ASSERT_HAS(l.s.err, "unsupported protocol");
  link_close(&l);
  hs_tls_ctx_unref(s13);
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
}

/* ------------------------------------------------------------------------ */
/* SNI. */

/* The subject of the certificate the client got for name, and the SNI the
 * server saw (static copies). */
static void sni_case(hs_tls_ctx_t *sctx, hs_tls_ctx_t *cctx, const char *name,
                     const char *want_subject, const char *want_sni) {
  link_t l;
  link_open(&l, sctx, cctx, name);
  shake_ok(&l);
  hs_tls_info_t si, ci;
  hs_tls_get_info(l.s.t, &si);
  hs_tls_get_info(l.c.t, &ci);
  ASSERT_STR(ci.subject, want_subject);
  if (want_sni)
    ASSERT_STR(si.sni, want_sni);
  else
    ASSERT_NULL(si.sni);
  link_close(&l);
}

TEST(tls_sni_picks_the_certificate) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_pair_t more[2] = {{P(F_OTHER), P(F_OTHER_KEY)}, {P(F_CHAIN), P(F_CHAIN_KEY)}};
  so.certs = more;
  so.ncerts = 2;
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  /* The client verifies each answer against the name it asked for. */
  sni_case(sctx, cctx, "other.test", "CN=other.test", "other.test");
  sni_case(sctx, cctx, "a.wild.test", "CN=other.test", "a.wild.test");
  sni_case(sctx, cctx, "chain.test", "CN=chain.test", "chain.test");
  sni_case(sctx, cctx, "default.test", "CN=default.test", "default.test");
  sni_case(sctx, cctx, "localhost", "CN=default.test", "localhost");
  /* Covered by more than one: the default first, else the first of certs. */
  sni_case(sctx, cctx, "shared.test", "CN=default.test", "shared.test");
  sni_case(sctx, cctx, "twice.test", "CN=other.test", "twice.test");
  hs_tls_ctx_unref(cctx);
  /* Names no certificate covers, and no name at all: the default one. */
  co.no_verify = 1;
  cctx = make_ctx(&co, 1);
  sni_case(sctx, cctx, "unknown.test", "CN=default.test", "unknown.test");
  sni_case(sctx, cctx, "a.b.wild.test", "CN=default.test", "a.b.wild.test"); /* one label */
  sni_case(sctx, cctx, NULL, "CN=default.test", NULL);
  sni_case(sctx, cctx, "127.0.0.1", "CN=default.test", NULL); /* an address is not sent */
  hs_tls_ctx_unref(cctx);
  hs_tls_ctx_unref(sctx);
}

/* The certificate chosen by SNI has the context's other settings too:
 * ALPN and client certificates. */
TEST(tls_sni_certificate_keeps_the_settings) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_pair_t other = {P(F_OTHER), P(F_OTHER_KEY)};
  so.certs = &other;
  so.ncerts = 1;
  so.alpn = (unsigned char *)"\x02h2\x08http/1.1";
  so.alpn_len = 12;
  so.verify_client = HS_TLS_VERIFY_REQUIRED;
  so.ca = P(F_CA);
  co.alpn = (unsigned char *)"\x08http/1.1\x02h2";
  co.alpn_len = 12;
  co.cert = P(F_CLIENT);
  co.key = P(F_CLIENT_KEY);
  link_t l;
  link_ok(&l, &so, &co, "other.test");
  hs_tls_info_t si, ci;
  hs_tls_get_info(l.s.t, &si);
  hs_tls_get_info(l.c.t, &ci);
  ASSERT_STR(ci.subject, "CN=other.test");
  ASSERT_MEM_STR(si.alpn, si.alpn_len, "h2"); /* the server's order */
  ASSERT_STR(si.subject, "CN=client one,O=hotsock tests");
  link_close(&l);
}

/* ------------------------------------------------------------------------ */
/* ALPN. */

TEST(tls_alpn_without_overlap_fails) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  so.alpn = (unsigned char *)"\x02h2";
  so.alpn_len = 3;
  co.alpn = (unsigned char *)"\x08http/1.1";
  co.alpn_len = 9;
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  link_t l;
  link_open(&l, sctx, cctx, "default.test");
  run(&l);
  ASSERT_EQ(l.s.failed, 1);
  ASSERT_EQ(l.s.dones, 0);
  ASSERT_HAS(l.s.err, "TLS handshake");
  ASSERT_HAS(l.s.err, "no application protocol");
  ASSERT_EQ(l.c.failed, 1); /* the alert reached it */
  ASSERT_EQ(l.c.dones, 0);
  ASSERT_HAS(l.c.err, "no application protocol");
  link_close(&l);
  hs_tls_ctx_unref(cctx);

  /* A client that offers none is served without. */
  co.alpn = NULL;
  co.alpn_len = 0;
  cctx = make_ctx(&co, 1);
  link_open(&l, sctx, cctx, "default.test");
  shake_ok(&l);
  hs_tls_info_t si;
  hs_tls_get_info(l.s.t, &si);
  ASSERT_NULL(si.alpn);
  ASSERT_EQ(si.alpn_len, 0);
  link_close(&l);
  hs_tls_ctx_unref(cctx);
  hs_tls_ctx_unref(sctx);
}

/* ------------------------------------------------------------------------ */
/* Client certificates. */

TEST(tls_client_certificate_required) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  so.verify_client = HS_TLS_VERIFY_REQUIRED;
  so.ca = P(F_CA);
  hs_tls_ctx_t *sctx = make_ctx(&so, 0);

  /* Without a certificate. */
  hs_tls_ctx_t *cctx = make_ctx(&co, 1);
  link_t l;
  link_open(&l, sctx, cctx, "default.test");
  run(&l);
  ASSERT_EQ(l.s.failed, 1);
  ASSERT_EQ(l.s.dones, 0);
  ASSERT_HAS(l.s.err, "TLS handshake");
  ASSERT_HAS(l.s.err, "did not return a certificate");
  ASSERT_EQ(l.c.failed, 1); /* TLS 1.3: after its own Finished, by the alert */
  link_close(&l);
  hs_tls_ctx_unref(cctx);

  /* With one from another CA. */
  co.cert = P(F_ROGUE_CLIENT);
  co.key = P(F_ROGUE_CLIENT_KEY);
  cctx = make_ctx(&co, 1);
  link_open(&l, sctx, cctx, "default.test");
  run(&l);
  ASSERT_EQ(l.s.failed, 1);
  ASSERT_HAS(l.s.err, "certificate verify failed");
  ASSERT_EQ(l.c.failed, 1);
  link_close(&l);
  hs_tls_ctx_unref(cctx);

  /* With one our CA signed. */
  co.cert = P(F_CLIENT);
  co.key = P(F_CLIENT_KEY);
  cctx = make_ctx(&co, 1);
  link_open(&l, sctx, cctx, "default.test");
  shake_ok(&l);
  send_bytes(&l.c, "me", 2, 0, &l.pool);
  run(&l);
  got(&l.s, "me", &l.pool);
  hs_tls_info_t si;
  hs_tls_get_info(l.s.t, &si);
  ASSERT_STR(si.subject, "CN=client one,O=hotsock tests");
  ASSERT_STR(si.issuer, "CN=hotsock test CA,O=hotsock tests");
  ASSERT_STR(si.serial, CLIENT_SERIAL_HEX);
  ASSERT_STR(si.sha256, client_sha256);
  ASSERT_EQ(strlen(si.sha256), 64);
  ASSERT_EQ(strspn(si.sha256, "0123456789abcdef"), 64);
  link_close(&l);
  hs_tls_ctx_unref(cctx);
  hs_tls_ctx_unref(sctx);
}

TEST(tls_client_certificate_optional) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  so.verify_client = HS_TLS_VERIFY_OPTIONAL;
  so.ca = P(F_CA);
  link_t l;
  link_ok(&l, &so, &co, "default.test"); /* none sent: fine */
  hs_tls_info_t si;
  hs_tls_get_info(l.s.t, &si);
  ASSERT_NULL(si.subject);
  ASSERT_NULL(si.sha256);
  link_close(&l);

  co.cert = P(F_CLIENT);
  co.key = P(F_CLIENT_KEY);
  link_ok(&l, &so, &co, "default.test");
  hs_tls_get_info(l.s.t, &si);
  ASSERT_STR(si.subject, "CN=client one,O=hotsock tests");
  link_close(&l);

  /* One that is sent must verify. */
  co.cert = P(F_ROGUE_CLIENT);
  co.key = P(F_ROGUE_CLIENT_KEY);
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  link_open(&l, sctx, cctx, "default.test");
  run(&l);
  ASSERT_EQ(l.s.failed, 1);
  ASSERT_HAS(l.s.err, "certificate verify failed");
  link_close(&l);
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
}

/* ------------------------------------------------------------------------ */
/* The client verifies the server. */

TEST(tls_client_rejects_the_wrong_name) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  link_t l;
  link_open(&l, sctx, cctx, "wrong.test");
  run(&l);
  ASSERT_EQ(l.c.failed, 1);
  ASSERT_EQ(l.c.dones, 0);
  ASSERT_HAS(l.c.err, "certificate verify failed");
  ASSERT_HAS(l.c.err, "hostname mismatch");
  ASSERT_EQ(l.s.failed, 1); /* the alert reached it */
  ASSERT_EQ(l.s.dones, 0);
  link_close(&l);

  /* An address is checked against the certificate's addresses (it has
   * none). */
  link_open(&l, sctx, cctx, "127.0.0.1");
  run(&l);
  ASSERT_EQ(l.c.failed, 1);
  ASSERT_HAS(l.c.err, "IP address mismatch");
  link_close(&l);
  hs_tls_ctx_unref(cctx);

  /* Without verification, any name goes. */
  co.no_verify = 1;
  cctx = make_ctx(&co, 1);
  link_open(&l, sctx, cctx, "wrong.test");
  shake_ok(&l);
  link_close(&l);
  hs_tls_ctx_unref(cctx);
  hs_tls_ctx_unref(sctx);
}

TEST(tls_client_rejects_an_unknown_ca) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  so.cert = P(F_ROGUE_SERVER);
  so.key = P(F_ROGUE_SERVER_KEY);
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  link_t l;
  link_open(&l, sctx, cctx, "default.test");
  run(&l);
  ASSERT_EQ(l.c.failed, 1);
  ASSERT_EQ(l.c.dones, 0);
  ASSERT_HAS(l.c.err, "certificate verify failed");
  ASSERT_EQ(l.s.failed, 1);
  link_close(&l);
  hs_tls_ctx_unref(cctx);

  /* Trusting that CA instead, the same server passes. */
  co.ca = P(F_ROGUE_CA);
  cctx = make_ctx(&co, 1);
  link_open(&l, sctx, cctx, "default.test");
  shake_ok(&l);
  hs_tls_info_t ci;
  hs_tls_get_info(l.c.t, &ci);
  ASSERT_STR(ci.issuer, "CN=rogue CA");
  link_close(&l);
  hs_tls_ctx_unref(cctx);
  hs_tls_ctx_unref(sctx);
}

/* A certificate file with the chain: the client trusts only the root. */
TEST(tls_certificate_chain_from_the_file) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  so.cert = P(F_CHAIN);
  so.key = P(F_CHAIN_KEY);
  link_t l;
  link_ok(&l, &so, &co, "chain.test");
  hs_tls_info_t ci;
  hs_tls_get_info(l.c.t, &ci);
  ASSERT_STR(ci.subject, "CN=chain.test");
  ASSERT_STR(ci.issuer, "CN=hotsock test intermediate,O=hotsock tests");
  link_close(&l);

  /* The same chain as an SNI certificate. */
  so = server_opts();
  hs_tls_pair_t pair = {P(F_CHAIN), P(F_CHAIN_KEY)};
  so.certs = &pair;
  so.ncerts = 1;
  link_ok(&l, &so, &co, "chain.test");
  hs_tls_get_info(l.c.t, &ci);
  ASSERT_STR(ci.subject, "CN=chain.test");
  link_close(&l);
}

/* ------------------------------------------------------------------------ */
/* Session resumption. */

/* A connection from sctx/cctx that resumes sess (NULL: none), capped at TLS
 * 1.2 when tls12. It sends and reads a line both ways, so that the TLS 1.3
 * tickets, which come after the handshake, reach the client, and both sides
 * end with close_notify: OpenSSL marks the session of an SSL freed without
 * it not resumable. Whether it resumed (both sides must agree); *next gets
 * the client's session (when next is not NULL). */
static int session_run(hs_tls_ctx_t *sctx, hs_tls_ctx_t *cctx, SSL_SESSION *sess, int tls12,
                       SSL_SESSION **next) {
  link_t l;
  link_open(&l, sctx, cctx, "default.test");
  if (tls12) ASSERT_EQ(SSL_set_max_proto_version(l.c.t->ssl, TLS1_2_VERSION), 1);
  if (sess) ASSERT_EQ(SSL_set_session(l.c.t->ssl, sess), 1);
  shake_ok(&l);
  send_bytes(&l.s, "hi", 2, 1, &l.pool);
  send_bytes(&l.c, "yo", 2, 1, &l.pool);
  run(&l);
  got(&l.c, "hi", &l.pool);
  got(&l.s, "yo", &l.pool);
  ASSERT_EQ(l.c.closed, 1);
  ASSERT_EQ(l.s.closed, 1);
  hs_tls_info_t si, ci;
  hs_tls_get_info(l.s.t, &si);
  hs_tls_get_info(l.c.t, &ci);
  ASSERT_EQ(si.resumed, ci.resumed);
  ASSERT_STR(si.version, tls12 ? "TLSv1.2" : "TLSv1.3");
  /* A resumed session still knows the server's certificate. */
  ASSERT_STR(ci.subject, "CN=default.test");
  if (next) {
    *next = SSL_get1_session(l.c.t->ssl);
    ASSERT_NOT_NULL(*next);
    ASSERT_EQ(SSL_SESSION_is_resumable(*next), 1);
  }
  int resumed = si.resumed;
  link_close(&l);
  return resumed;
}

/* Rotations of the ticket keys between a ticket and its use: whether it
 * resumed. */
static int resumes_after(int rotations, int tls12) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  SSL_SESSION *sess = NULL;
  ASSERT_EQ(session_run(sctx, cctx, NULL, tls12, &sess), 0);
  for (int i = 0; i < rotations; i++) hs_tls_rotate_ticket_keys();
  int resumed = session_run(sctx, cctx, sess, tls12, NULL);
  SSL_SESSION_free(sess);
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
  return resumed;
}

TEST(tls_ticket_resumes) {
  ASSERT_EQ(resumes_after(0, 0), 1);
  ASSERT_EQ(resumes_after(0, 1), 1);
}

/* The previous key still opens a ticket... */
TEST(tls_ticket_resumes_after_one_rotation) {
  ASSERT_EQ(resumes_after(1, 0), 1);
  ASSERT_EQ(resumes_after(1, 1), 1);
}

/* ...but not the one before it: a full handshake follows. */
TEST(tls_ticket_expires_after_two_rotations) {
  ASSERT_EQ(resumes_after(2, 0), 0);
  ASSERT_EQ(resumes_after(2, 1), 0);
}

/* A ticket sealed with the previous key is renewed: the session the client
 * has after resuming with it outlives one more rotation. */
TEST(tls_ticket_renewed_under_the_new_key) {
  for (int tls12 = 0; tls12 < 2; tls12++) {
    hs_tls_opts_t so = server_opts(), co = client_opts();
    hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
    SSL_SESSION *s0 = NULL, *s1 = NULL;
    ASSERT_EQ(session_run(sctx, cctx, NULL, tls12, &s0), 0);
    hs_tls_rotate_ticket_keys();
    ASSERT_EQ(session_run(sctx, cctx, s0, tls12, &s1), 1);
    hs_tls_rotate_ticket_keys(); /* s0's key is gone now, s1's is the previous */
    ASSERT_EQ(session_run(sctx, cctx, s1, tls12, NULL), 1);
    ASSERT_EQ(session_run(sctx, cctx, s0, tls12, NULL), 0);
    SSL_SESSION_free(s0);
    SSL_SESSION_free(s1);
    hs_tls_ctx_unref(sctx);
    hs_tls_ctx_unref(cctx);
  }
}

/* A chain of resumptions under the current key: each resumed connection
 * leaves the client a fresh ticket, so the next one resumes too (a TLS 1.3
 * client uses a ticket once). */
TEST(tls_ticket_resumption_chains) {
  for (int tls12 = 0; tls12 < 2; tls12++) {
    hs_tls_opts_t so = server_opts(), co = client_opts();
    hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
    SSL_SESSION *sess = NULL, *next = NULL;
    /* A client cache, as real clients keep one: then OpenSSL's client uses
     * a TLS 1.3 ticket only once. */
    hs_tls_t *probe = hs_tls_new_client(cctx, NULL);
    ASSERT_NOT_NULL(probe);
    SSL_CTX_set_session_cache_mode(SSL_get_SSL_CTX(probe->ssl),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    hs_tls_free(probe, NULL);
    ASSERT_EQ(session_run(sctx, cctx, NULL, tls12, &sess), 0);
    for (int i = 0; i < 3; i++) {
      ASSERT_EQ(session_run(sctx, cctx, sess, tls12, &next), 1);
      SSL_SESSION_free(sess);
      sess = next;
    }
    SSL_SESSION_free(sess);
    hs_tls_ctx_unref(sctx);
    hs_tls_ctx_unref(cctx);
  }
}

/* The keys are the process's: a ticket from one context opens on another
 * (a reload's), until the keys rotate twice. */
TEST(tls_ticket_keys_shared_by_contexts) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_ctx_t *s1 = make_ctx(&so, 0), *s2 = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  SSL_SESSION *sess = NULL;
  ASSERT_EQ(session_run(s1, cctx, NULL, 0, &sess), 0);
  ASSERT_EQ(session_run(s2, cctx, sess, 0, NULL), 1);
  hs_tls_ctx_unref(s1); /* the first context is gone, its tickets are not */
  ASSERT_EQ(session_run(s2, cctx, sess, 0, NULL), 1);
  SSL_SESSION_free(sess);
  hs_tls_ctx_unref(s2);
  hs_tls_ctx_unref(cctx);
}

/* A resumed session still knows the client's certificate, without asking
 * for it again. */
TEST(tls_resumed_session_keeps_the_client_certificate) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  so.verify_client = HS_TLS_VERIFY_REQUIRED;
  so.ca = P(F_CA);
  co.cert = P(F_CLIENT);
  co.key = P(F_CLIENT_KEY);
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  for (int tls12 = 0; tls12 < 2; tls12++) {
    SSL_SESSION *sess = NULL;
    ASSERT_EQ(session_run(sctx, cctx, NULL, tls12, &sess), 0);
    link_t l;
    link_open(&l, sctx, cctx, "default.test");
    if (tls12) ASSERT_EQ(SSL_set_max_proto_version(l.c.t->ssl, TLS1_2_VERSION), 1);
    ASSERT_EQ(SSL_set_session(l.c.t->ssl, sess), 1);
    shake_ok(&l);
    hs_tls_info_t si;
    hs_tls_get_info(l.s.t, &si);
    ASSERT_EQ(si.resumed, 1);
    ASSERT_STR(si.subject, "CN=client one,O=hotsock tests");
    ASSERT_STR(si.serial, CLIENT_SERIAL_HEX);
    ASSERT_STR(si.sha256, client_sha256);
    send_bytes(&l.c, "x", 1, 1, &l.pool);
    send_bytes(&l.s, "y", 1, 1, &l.pool);
    run(&l);
    link_close(&l);
    SSL_SESSION_free(sess);
  }
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
}

/* tickets = false (docs/tls.md): TLS 1.2 clients resume by session id from
 * the server's cache, which does not depend on the ticket keys. */
TEST(tls_no_tickets_resumes_tls12_by_session_id) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  so.no_tickets = 1;
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  SSL_SESSION *sess = NULL;
  ASSERT_EQ(session_run(sctx, cctx, NULL, 1, &sess), 0);
  ASSERT_EQ(SSL_SESSION_has_ticket(sess), 0);
  unsigned idlen = 0;
  SSL_SESSION_get_id(sess, &idlen);
  ASSERT_GT(idlen, 0);
  hs_tls_rotate_ticket_keys();
  hs_tls_rotate_ticket_keys();
  ASSERT_EQ(session_run(sctx, cctx, sess, 1, NULL), 1);
  SSL_SESSION_free(sess);
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
}

/* ------------------------------------------------------------------------ */
/* Context errors. */

TEST(tls_ctx_errors) {
  certs();
  hs_tls_opts_t o = server_opts();
  char missing[160];
  snprintf(missing, sizeof missing, "%s/missing.pem", cert_dir);

  o.cert = missing;
  const char *e = ctx_error(&o, 0);
  ASSERT_HAS(e, "missing.pem");
  ASSERT_HAS(e, "No such file");

  o = server_opts();
  o.key = missing;
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "TLS key");
  ASSERT_HAS(e, "missing.pem");

  o = server_opts();
  o.key = P(F_OTHER_KEY);
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "does not match");
  ASSERT_HAS(e, "other.key");

  o = server_opts();
  o.key = P(F_ED25519_KEY); /* another type: OpenSSL files it apart */
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "does not match");
  ASSERT_HAS(e, "ed25519.key");

  o = server_opts();
  o.key = P(F_GARBAGE);
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "TLS key");
  ASSERT_HAS(e, "garbage.pem");

  o = server_opts();
  o.cert = P(F_GARBAGE);
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "TLS certificate");
  ASSERT_HAS(e, "garbage.pem");

  o = server_opts();
  o.verify_client = HS_TLS_VERIFY_REQUIRED;
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "verify_client");
  ASSERT_HAS(e, "ca");

  o.ca = missing;
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "CA file");

  o = server_opts();
  o.ciphers = "NO-SUCH-CIPHER";
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "TLS ciphers \"NO-SUCH-CIPHER\"");

  o = server_opts();
  o.ciphersuites = "TLS_NO_SUCH_SUITE";
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "TLS_NO_SUCH_SUITE");

  o = server_opts();
  o.cert = NULL;
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "certificate and a key");

  /* An SNI certificate is checked like the default one. */
  o = server_opts();
  hs_tls_pair_t pair = {P(F_OTHER), P(F_SERVER_KEY)};
  o.certs = &pair;
  o.ncerts = 1;
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "does not match");
  pair.key = NULL;
  e = ctx_error(&o, 0);
  ASSERT_HAS(e, "both cert and key");

  /* Clients. */
  o = client_opts();
  o.ca = missing;
  e = ctx_error(&o, 1);
  ASSERT_HAS(e, "CA file");
  o = client_opts();
  o.cert = P(F_CLIENT);
  e = ctx_error(&o, 1);
  ASSERT_HAS(e, "both cert and key");
  o.key = P(F_SERVER_KEY);
  e = ctx_error(&o, 1);
  ASSERT_HAS(e, "does not match");
}

TEST(tls_opts_copy_is_deep) {
  certs();
  hs_tls_opts_t o, c;
  memset(&o, 0, sizeof o);
  o.cert = strdup("a.pem");
  o.key = strdup("a.key");
  o.ca = strdup("ca.pem");
  o.ciphers = strdup("HIGH");
  o.ciphersuites = strdup("TLS_AES_128_GCM_SHA256");
  o.alpn = malloc(3);
  ASSERT_NOT_NULL(o.alpn);
  memcpy(o.alpn, "\x02h2", 3);
  o.alpn_len = 3;
  o.certs = calloc(1, sizeof *o.certs);
  ASSERT_NOT_NULL(o.certs);
  o.ncerts = 1;
  o.certs[0].cert = strdup("b.pem");
  o.certs[0].key = strdup("b.key");
  o.min_version = 13;
  o.verify_client = HS_TLS_VERIFY_OPTIONAL;
  ASSERT_EQ(hs_tls_opts_copy(&c, &o), 0);
  ASSERT_TRUE(c.cert != o.cert && c.certs != o.certs && c.alpn != o.alpn);
  ASSERT_TRUE(c.certs[0].cert != o.certs[0].cert);
  hs_tls_opts_free(&o); /* the copy stands alone */
  ASSERT_NULL(o.cert);
  ASSERT_EQ(o.ncerts, 0);
  ASSERT_STR(c.cert, "a.pem");
  ASSERT_STR(c.key, "a.key");
  ASSERT_STR(c.ca, "ca.pem");
  ASSERT_STR(c.ciphers, "HIGH");
  ASSERT_STR(c.ciphersuites, "TLS_AES_128_GCM_SHA256");
  ASSERT_MEM_STR(c.alpn, c.alpn_len, "\x02h2");
  ASSERT_EQ(c.ncerts, 1);
  ASSERT_STR(c.certs[0].cert, "b.pem");
  ASSERT_STR(c.certs[0].key, "b.key");
  ASSERT_EQ(c.min_version, 13);
  ASSERT_EQ(c.verify_client, HS_TLS_VERIFY_OPTIONAL);
  hs_tls_opts_free(&c);

  /* A context keeps its own copy of the settings. */
  hs_tls_opts_t so = server_opts();
  hs_tls_ctx_t *ctx = make_ctx(&so, 0);
  const hs_tls_opts_t *kept = hs_tls_ctx_opts(ctx);
  ASSERT_TRUE(kept->cert != so.cert);
  ASSERT_STR(kept->cert, so.cert);
  ASSERT_STR(kept->key, so.key);
  hs_tls_ctx_unref(ctx);
}

/* ------------------------------------------------------------------------ */
/* Reference counts. */

TEST(tls_ctx_outlives_its_last_unref_while_connections_live) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_pair_t other = {P(F_OTHER), P(F_OTHER_KEY)};
  so.certs = &other;
  so.ncerts = 1;
  so.alpn = (unsigned char *)"\x02h2";
  so.alpn_len = 3;
  co.alpn = (unsigned char *)"\x02h2";
  co.alpn_len = 3;
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  ASSERT_PTR_EQ(hs_tls_ctx_ref(sctx), sctx); /* two references */
  hs_tls_ctx_unref(sctx);                    /* one again */
  link_t l;
  link_open(&l, sctx, cctx, "other.test");
  ASSERT_PTR_EQ(l.s.t->ctx, sctx);
  /* The listener and the cache let go: only the connections hold them.
   * The handshake (its SNI and ALPN callbacks reach into the context) and
   * the data after it must not touch freed memory (ASan). */
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
  shake_ok(&l);
  hs_tls_info_t ci, si;
  hs_tls_get_info(l.c.t, &ci);
  hs_tls_get_info(l.s.t, &si);
  ASSERT_STR(ci.subject, "CN=other.test");
  ASSERT_MEM_STR(si.alpn, si.alpn_len, "h2");
  send_bytes(&l.c, "still here", 10, 1, &l.pool);
  run(&l);
  got(&l.s, "still here", &l.pool);
  ASSERT_STR(hs_tls_ctx_opts(l.s.t->ctx)->cert, P(F_SERVER));
  link_close(&l); /* the last references: the contexts go with them */
}

/* ------------------------------------------------------------------------ */
/* Garbage. */

TEST(tls_garbage_to_a_server_is_an_error) {
  hs_tls_opts_t so = server_opts();
  hs_tls_ctx_t *sctx = make_ctx(&so, 0);
  static const char *const inputs[] = {
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      "\x16\x03\x01\xff\xffzzzzzzzzzz",           /* a record longer than allowed */
      "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", /* a ClientHello too short to parse */
      "\x15\x03\x03\x00\x02\x02\x28",             /* a fatal alert */
  };
  static const size_t lens[] = {27, 15, 10, 7};
  for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
    hs_pool_t pool;
    hs_pool_init(&pool, 2);
    hs_tls_t *t = hs_tls_new(sctx);
    ASSERT_NOT_NULL(t);
    char err[512] = "";
    ASSERT_EQ(hs_tls_feed(t, inputs[i], lens[i]), 0);
    int r = hs_tls_handshake(t, err, sizeof err);
    if (r != HS_TLS_ERROR) fprintf(stderr, "  input %zu\n", i);
    ASSERT_EQ(r, HS_TLS_ERROR);
    ASSERT_EQ(t->fatal, 1);
    ASSERT_EQ(t->done, 0);
    ASSERT_HAS(err, "TLS handshake: ");
    ASSERT_GT(strlen(err), strlen("TLS handshake: "));
    ASSERT_FALSE(strstr(err, "unknown error"));
    /* Fatal from now on; what OpenSSL queued (an alert) can still go. */
    char err2[64] = "";
    ASSERT_EQ(hs_tls_handshake(t, err2, sizeof err2), HS_TLS_ERROR);
    hs_buf_t in, out;
    hs_buf_init(&in);
    hs_buf_init(&out);
    ASSERT_EQ(hs_tls_read(t, &in, &pool, err2, sizeof err2), HS_TLS_ERROR);
    ASSERT_EQ(hs_buf_len(&in), 0);
    ASSERT_EQ(hs_buf_append(&out, "x", 1, &pool), 0);
    ASSERT_EQ(hs_tls_encrypt(t, &out, 1, &pool), 0);
    ASSERT_EQ(hs_buf_len(&out), 1); /* nothing is encrypted */
    ASSERT_EQ(hs_tls_pending(t), hs_buf_len(&t->cout));
    hs_buf_release(&in, &pool);
    hs_buf_release(&out, &pool);
    hs_tls_free(t, &pool);
    hs_pool_free(&pool);
  }
  hs_tls_ctx_unref(sctx);
}

/* A close_notify while the handshake is under way ends it: HS_TLS_ERROR,
 * "a fatal error" (tls.h), so the connection is marked fatal like after any
 * other handshake error and no SSL call follows but freeing. */
TEST(tls_close_notify_during_the_handshake_is_fatal) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  for (int side = 0; side < 2; side++) {
    link_t l;
    link_open(&l, sctx, cctx, "default.test");
    ASSERT_EQ(hs_tls_handshake(l.c.t, l.c.err, sizeof l.c.err), HS_TLS_OK);
    carry(&l.c, &l.s, &l.pool); /* the ClientHello */
    ASSERT_EQ(hs_tls_handshake(l.s.t, l.s.err, sizeof l.s.err), HS_TLS_OK);
    /* A warning-level close_notify alert, in the clear. */
    end_t *e = side ? &l.c : &l.s;
    ASSERT_EQ(hs_tls_feed(e->t, "\x15\x03\x03\x00\x02\x01\x00", 7), 0);
    e->err[0] = 0;
    ASSERT_EQ(hs_tls_handshake(e->t, e->err, sizeof e->err), HS_TLS_ERROR);
    ASSERT_HAS(e->err, "closed");
    ASSERT_EQ(e->t->done, 0);
    ASSERT_EQ(e->t->fatal, 1);
    char err2[128] = "";
    ASSERT_EQ(hs_tls_handshake(e->t, err2, sizeof err2), HS_TLS_ERROR);
    link_close(&l);
  }
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
}

TEST(tls_hello_in_pieces_waits_for_the_rest) {
  hs_tls_opts_t so = server_opts(), co = client_opts();
  hs_tls_ctx_t *sctx = make_ctx(&so, 0), *cctx = make_ctx(&co, 1);
  link_t l;
  link_open(&l, sctx, cctx, "default.test");
  ASSERT_EQ(hs_tls_handshake(l.c.t, l.c.err, sizeof l.c.err), HS_TLS_OK);
  hs_buf_t none;
  hs_buf_init(&none);
  ASSERT_EQ(hs_tls_encrypt(l.c.t, &none, 0, &l.pool), 0);
  const char *p = hs_buf_peek(&l.c.t->cout);
  size_t n = hs_buf_len(&l.c.t->cout);
  ASSERT_GT(n, 10);
  /* One byte at a time: the server waits until the last one. */
  for (size_t i = 0; i + 1 < n; i++) {
    ASSERT_EQ(hs_tls_feed(l.s.t, p + i, 1), 0);
    ASSERT_EQ(hs_tls_handshake(l.s.t, l.s.err, sizeof l.s.err), HS_TLS_OK);
    ASSERT_EQ(hs_tls_pending(l.s.t), 0);
  }
  ASSERT_EQ(hs_tls_feed(l.s.t, p + n - 1, 1), 0);
  hs_buf_consume(&l.c.t->cout, n, &l.pool);
  ASSERT_EQ(hs_tls_handshake(l.s.t, l.s.err, sizeof l.s.err), HS_TLS_OK);
  ASSERT_GT(hs_tls_pending(l.s.t), 0); /* its answer */
  ASSERT_EQ(hs_tls_feed(l.s.t, "", 0), 0);
  carry(&l.s, &l.c, &l.pool);
  shake_ok(&l);
  link_close(&l);
  hs_tls_ctx_unref(sctx);
  hs_tls_ctx_unref(cctx);
}

const hs_test_t hs_tls_tests[] = {
    TEST_ENTRY(tls_handshake_and_data_both_ways),
    TEST_ENTRY(tls_large_data_in_many_records),
    TEST_ENTRY(tls_client_writes_its_hello_first),
    TEST_ENTRY(tls_close_notify_reads_as_closed),
    TEST_ENTRY(tls_version_12_when_the_client_caps_it),
    TEST_ENTRY(tls_sni_picks_the_certificate),
    TEST_ENTRY(tls_sni_certificate_keeps_the_settings),
    TEST_ENTRY(tls_alpn_without_overlap_fails),
    TEST_ENTRY(tls_client_certificate_required),
    TEST_ENTRY(tls_client_certificate_optional),
    TEST_ENTRY(tls_client_rejects_the_wrong_name),
    TEST_ENTRY(tls_client_rejects_an_unknown_ca),
    TEST_ENTRY(tls_certificate_chain_from_the_file),
    TEST_ENTRY(tls_ticket_resumes),
    TEST_ENTRY(tls_ticket_resumes_after_one_rotation),
    TEST_ENTRY(tls_ticket_expires_after_two_rotations),
    TEST_ENTRY(tls_ticket_renewed_under_the_new_key),
    TEST_ENTRY(tls_ticket_resumption_chains),
    TEST_ENTRY(tls_ticket_keys_shared_by_contexts),
    TEST_ENTRY(tls_resumed_session_keeps_the_client_certificate),
    TEST_ENTRY(tls_no_tickets_resumes_tls12_by_session_id),
    TEST_ENTRY(tls_ctx_errors),
    TEST_ENTRY(tls_opts_copy_is_deep),
    TEST_ENTRY(tls_ctx_outlives_its_last_unref_while_connections_live),
    TEST_ENTRY(tls_garbage_to_a_server_is_an_error),
    TEST_ENTRY(tls_close_notify_during_the_handshake_is_fatal),
    TEST_ENTRY(tls_hello_in_pieces_waits_for_the_rest),
    TEST_END};
