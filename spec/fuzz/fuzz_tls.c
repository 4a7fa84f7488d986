/* fuzz_tls.c: libFuzzer harness for the TLS layer (src/tls.c) on the
 * server side: the input is what a client sends, fed to an hs_tls_t as
 * socket reads, and driven the way conn.c's tls_input and hs_conn_flush
 * drive it (hs_tls_feed, hs_tls_handshake until done, then hs_tls_read;
 * hs_tls_encrypt to move what OpenSSL wrote into cout, whose bytes are then
 * dropped as if written).
 *
 * Input: a 5-byte header, then the stream.
 *   h[0]      bit 0: one byte per read (else reads that end at the cuts)
 *             bits 1-2: where the stream starts:
 *               0  at the very beginning (a ClientHello, or garbage)
 *               1  after a real ClientHello from an in-memory client, which
 *                  the server has answered: the stream is the client's
 *                  second flight (TLS 1.2: ClientKeyExchange in the clear)
 *               2  after a complete handshake with that client
 *               3  after a complete handshake and a real data record
 *                  (the stream follows the record, both fed as one)
 *             bit 3: the in-memory client stops at TLS 1.2
 *             bit 4: the end of the run is a graceful close (close_notify)
 *   h[1..4]   read boundaries: cut i at h[1+i] * (n + 1) / 256
 *
 * Checked: every call answers one of its documented results; an error has
 * a message and stays fatal; DONE comes once, and then the connection has
 * a version and a cipher; the plaintext read is a prefix of what the real
 * client sent; hs_tls_pending is what cout holds after a flush. Anything
 * else calls abort(). Everything is freed at the end of each run (the leak
 * check is on).
 *
 * The server's certificate and key are made once, in LLVMFuzzerInitialize,
 * written to a temporary directory for hs_tls_ctx_new to read, and the
 * directory is removed at once (the context holds what it read).
 *
 * OpenSSL is the system's library, not instrumented: coverage guides the
 * mutations through tls.c and this file only, so the seeds carry the
 * structure (corpus_tls/: ClientHellos captured from `openssl s_client`,
 * whole, split, byte by byte and truncated; garbage; second flights and
 * records after a real handshake; a close_notify during the handshake).
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (spec/fuzz/CMakeLists.txt,
 * -DHS_FUZZ=ON).
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include "buf.h"
#include "tls.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define HDR 5
#define MESSAGE "GET / HTTP/1.1\r\nHost: fuzz.test\r\n\r\n"

static hs_tls_ctx_t *server_ctx; /* made once, kept for the process */
static hs_tls_ctx_t *client_ctx;

static void fail(const char *what) {
  fprintf(stderr, "fuzz_tls: %s\n", what);
  abort();
}

/* ------------------------------------------------------------------------ */
/* Set-up: a self-signed P-256 certificate for fuzz.test. */

static void write_pem(const char *path, X509 *x, EVP_PKEY *k) {
  FILE *f = fopen(path, "w");
  if (!f) fail("cannot write the certificate");
  int ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
  if (fclose(f) != 0 || ok != 1) fail("cannot write the certificate");
}

static void make_contexts(void) {
  char dir[] = "/tmp/hs_fuzz_tls_XXXXXX", cert[64], key[64], err[512];
  if (!mkdtemp(dir)) fail("mkdtemp");
  snprintf(cert, sizeof cert, "%s/cert.pem", dir);
  snprintf(key, sizeof key, "%s/key.pem", dir);

  EVP_PKEY *k = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  if (!k || !x) fail("key generation");
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 30L * 24 * 3600);
  X509_set_pubkey(x, k);
  X509_NAME *n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz.test", -1, -1, 0);
  X509_set_issuer_name(x, n);
  X509V3_CTX v;
  X509V3_set_ctx_nodb(&v);
  X509V3_set_ctx(&v, x, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v, NID_subject_alt_name, "DNS:fuzz.test");
  if (!e || X509_add_ext(x, e, -1) != 1) fail("subjectAltName");
  X509_EXTENSION_free(e);
  if (X509_sign(x, k, EVP_sha256()) <= 0) fail("signing");
  write_pem(cert, x, NULL);
  write_pem(key, NULL, k);
  X509_free(x);
  EVP_PKEY_free(k);

  /* The server offers ALPN and takes tickets, so those paths run too. */
  hs_tls_opts_t o;
  memset(&o, 0, sizeof o);
  o.cert = cert;
  o.key = key;
  o.alpn = (unsigned char *)"\x02h2\x08http/1.1";
  o.alpn_len = 12;
  server_ctx = hs_tls_ctx_new(&o, 0, err, sizeof err);
  unlink(cert);
  unlink(key);
  rmdir(dir);
  if (!server_ctx) {
    fprintf(stderr, "fuzz_tls: %s\n", err);
    abort();
  }
  memset(&o, 0, sizeof o);
  o.no_verify = 1;
  o.alpn = (unsigned char *)"\x08http/1.1";
  o.alpn_len = 9;
  client_ctx = hs_tls_ctx_new(&o, 1, err, sizeof err);
  if (!client_ctx) {
    fprintf(stderr, "fuzz_tls: %s\n", err);
    abort();
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  make_contexts();
  return 0;
}

/* ------------------------------------------------------------------------ */
/* One connection. */

typedef struct conn {
  hs_pool_t pool;
  hs_tls_t *t;
  hs_buf_t in, out;
  int dones, over;  /* over: closed or aborted, as conn.c would */
  const char *sent; /* what the real client sent, and how much */
  size_t sent_len, seen;
} conn_t;

/* hs_conn_flush: encrypt out (close_notify when closing), then "write"
 * cout. */
static void flush(conn_t *c, int closing) {
  if (hs_tls_encrypt(c->t, &c->out, closing, &c->pool) != 0) {
    if (!c->t->fatal) fail("hs_tls_encrypt failed without a fatal error");
    c->over = 1;
    return;
  }
  if (c->t->done && !c->t->fatal && hs_buf_len(&c->out)) fail("output left unencrypted");
  if (hs_tls_pending(c->t) != hs_buf_len(&c->t->cout)) fail("the write BIO was not drained");
  hs_buf_consume(&c->t->cout, hs_buf_len(&c->t->cout), &c->pool);
}

/* An error: with a message, and the connection marked fatal (tls.h: no
 * more SSL calls but freeing). */
static void check_err(const hs_tls_t *t, const char *err) {
  if (!err[0]) fail("an error without a message");
  if (!t->fatal) fail("an error that is not fatal");
}

/* tls_input: one read's bytes. */
static void input(conn_t *c, const uint8_t *p, size_t n) {
  char err[256];
  if (c->over) return;
  if (hs_tls_feed(c->t, (const char *)p, n) != 0) fail("hs_tls_feed failed");
  if (!c->t->done) {
    err[0] = 0;
    int r = hs_tls_handshake(c->t, err, sizeof err);
    if (r == HS_TLS_ERROR) {
      check_err(c->t, err);
      err[0] = 0;
      if (hs_tls_handshake(c->t, err, sizeof err) != HS_TLS_ERROR) fail("fatal did not stick");
      flush(c, 1); /* tls_failed: hs_conn_close sends what is queued (an alert) */
      c->over = 1;
      return;
    }
    if (r == HS_TLS_OK) {
      if (c->t->done) fail("OK with the handshake done");
      flush(c, 0);
      return;
    }
    if (r != HS_TLS_DONE) fail("an unknown handshake result");
    if (!c->t->done || ++c->dones != 1) fail("DONE twice, or DONE but not done");
    hs_tls_info_t info;
    hs_tls_get_info(c->t, &info);
    if (!info.version || !info.cipher) fail("a handshake without version or cipher");
    if (hs_tls_handshake(c->t, err, sizeof err) != HS_TLS_OK) fail("the handshake after DONE");
  }
  err[0] = 0;
  int r = hs_tls_read(c->t, &c->in, &c->pool, err, sizeof err);
  if (r == HS_TLS_ERROR) {
    check_err(c->t, err);
    c->over = 1; /* hs_conn_abort: nothing more is sent */
    return;
  }
  if (r != HS_TLS_OK && r != HS_TLS_CLOSED) fail("an unknown read result");
  /* The plaintext can only be what the real client sent. */
  size_t n_in = hs_buf_len(&c->in);
  if (n_in) {
    if (c->seen + n_in > c->sent_len || memcmp(hs_buf_peek(&c->in), c->sent + c->seen, n_in))
      fail("plaintext that the client did not send");
    c->seen += n_in;
    /* An echo, as a script might answer. */
    if (hs_buf_append(&c->out, hs_buf_peek(&c->in), n_in, &c->pool) != 0) fail("memory");
    hs_buf_consume(&c->in, n_in, &c->pool);
  }
  flush(c, r == HS_TLS_CLOSED);
  if (r == HS_TLS_CLOSED) c->over = 1;
}

/* Move what `from` wrote into `to` (the in-memory client and the server). */
static void carry(hs_tls_t *from, hs_tls_t *to, hs_pool_t *pool) {
  hs_buf_t none;
  hs_buf_init(&none);
  if (hs_tls_encrypt(from, &none, 0, pool) != 0) fail("carry");
  size_t n = hs_buf_len(&from->cout);
  if (n && hs_tls_feed(to, hs_buf_peek(&from->cout), n) != 0) fail("carry");
  hs_buf_consume(&from->cout, n, pool);
}

/* Bring the server to the stage the header asks for with a real client;
 * what the client sends after (a data record at stage 3) is put in *pre. */
static void prepare(conn_t *c, int stage, int tls12, hs_buf_t *pre) {
  hs_tls_t *cl = hs_tls_new_client(client_ctx, "fuzz.test");
  if (!cl) fail("hs_tls_new_client");
  if (tls12 && SSL_set_max_proto_version(cl->ssl, TLS1_2_VERSION) != 1) fail("max version");
  char err[256];
  hs_buf_t plain;
  hs_buf_init(&plain);
  if (hs_tls_handshake(cl, err, sizeof err) != HS_TLS_OK) fail("client hello");
  carry(cl, c->t, &c->pool);
  int r = hs_tls_handshake(c->t, err, sizeof err);
  if (r != HS_TLS_OK) fail("server hello");
  if (stage == 1) flush(c, 0); /* the server's answer goes out; the client is done with */
  if (stage >= 2) {
    /* The rest of the handshake, for real. */
    for (int i = 0; i < 8 && !(cl->done && c->t->done); i++) {
      carry(c->t, cl, &c->pool);
      if (!cl->done) {
        r = hs_tls_handshake(cl, err, sizeof err);
        if (r == HS_TLS_ERROR) fail(err);
      }
      if (cl->done && hs_tls_read(cl, &plain, &c->pool, err, sizeof err) == HS_TLS_ERROR) fail(err);
      carry(cl, c->t, &c->pool);
      if (!c->t->done) {
        r = hs_tls_handshake(c->t, err, sizeof err);
        if (r == HS_TLS_ERROR) fail(err);
        if (r == HS_TLS_DONE) c->dones++;
      }
    }
    if (!cl->done || !c->t->done || c->dones != 1) fail("the real handshake did not complete");
    flush(c, 0);
    if (stage == 3) {
      hs_buf_t m;
      hs_buf_init(&m);
      if (hs_buf_append(&m, MESSAGE, sizeof MESSAGE - 1, &c->pool) != 0) fail("memory");
      if (hs_tls_encrypt(cl, &m, 0, &c->pool) != 0) fail("client encrypt");
      hs_buf_release(&m, &c->pool);
      if (hs_buf_append(pre, hs_buf_peek(&cl->cout), hs_buf_len(&cl->cout), &c->pool) != 0)
        fail("memory");
      c->sent = MESSAGE;
      c->sent_len = sizeof MESSAGE - 1;
    }
  }
  hs_buf_release(&plain, &c->pool);
  hs_tls_free(cl, &c->pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < HDR) return 0;
  const uint8_t *h = data;
  int bytewise = h[0] & 1, stage = (h[0] >> 1) & 3, tls12 = (h[0] >> 3) & 1,
      closing = (h[0] >> 4) & 1;

  conn_t c;
  memset(&c, 0, sizeof c);
  hs_pool_init(&c.pool, 4);
  hs_buf_init(&c.in);
  hs_buf_init(&c.out);
  c.t = hs_tls_new(server_ctx);
  if (!c.t) fail("hs_tls_new");

  /* The stream: a real record first at stage 3, then the input's bytes. */
  hs_buf_t s;
  hs_buf_init(&s);
  if (stage) prepare(&c, stage, tls12, &s);
  if (hs_buf_append(&s, data + HDR, size - HDR, &c.pool) != 0) fail("memory");
  const uint8_t *p = (const uint8_t *)hs_buf_peek(&s);
  size_t n = hs_buf_len(&s);

  if (bytewise) {
    for (size_t i = 0; i < n && !c.over; i++) input(&c, p + i, 1);
  } else {
    size_t cuts[4];
    for (size_t i = 0; i < 4; i++) cuts[i] = (size_t)h[1 + i] * (n + 1) / 256;
    for (size_t i = 1; i < 4; i++) /* insertion sort */
      for (size_t k = i; k > 0 && cuts[k - 1] > cuts[k]; k--) {
        size_t t = cuts[k];
        cuts[k] = cuts[k - 1];
        cuts[k - 1] = t;
      }
    size_t from = 0;
    for (size_t i = 0; i < 4; i++) {
      if (cuts[i] > from) input(&c, p + from, cuts[i] - from);
      from = cuts[i] > from ? cuts[i] : from;
    }
    if (n > from) input(&c, p + from, n - from);
  }
  if (!c.over) {
    /* The connection ends: a graceful close sends close_notify. */
    if (closing && hs_buf_append(&c.out, "bye", 3, &c.pool) != 0) fail("memory");
    flush(&c, closing);
  }
  hs_buf_release(&s, &c.pool);
  hs_buf_release(&c.in, &c.pool);
  hs_buf_release(&c.out, &c.pool);
  hs_tls_free(c.t, &c.pool);
  hs_pool_free(&c.pool);
  return 0;
}
