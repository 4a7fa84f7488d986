/* tls.c: OpenSSL on the event loop through memory BIOs (see tls.h). No
 * blocking call, no socket and no Lua here: conn.c moves the bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls.h"

struct hs_tls_ctx {
  int refs;
  int client;
  unsigned char sid[32]; /* session id context: what a session is valid for */
  SSL_CTX *ctx;          /* the default certificate (a server's), or a client's */
  SSL_CTX **sni;         /* a server's other certificates, one context each */
  int nsni;
  hs_tls_opts_t opts; /* what it was made from */
};

/* ---- settings ---- */

void hs_tls_opts_free(hs_tls_opts_t *o) {
  free(o->cert);
  free(o->key);
  for (int i = 0; i < o->ncerts; i++) {
    free(o->certs[i].cert);
    free(o->certs[i].key);
  }
  free(o->certs);
  free(o->alpn);
  free(o->ciphers);
  free(o->ciphersuites);
  free(o->ca);
  memset(o, 0, sizeof *o);
}

static int dup_str(char **dst, const char *src) {
  *dst = NULL;
  return src && !(*dst = strdup(src)) ? -1 : 0;
}

int hs_tls_opts_copy(hs_tls_opts_t *dst, const hs_tls_opts_t *src) {
  *dst = *src;
  dst->cert = dst->key = dst->ciphers = dst->ciphersuites = dst->ca = NULL;
  dst->certs = NULL;
  dst->ncerts = 0;
  dst->alpn = NULL;
  dst->alpn_len = 0;
  int bad = dup_str(&dst->cert, src->cert) | dup_str(&dst->key, src->key) |
            dup_str(&dst->ciphers, src->ciphers) | dup_str(&dst->ciphersuites, src->ciphersuites) |
            dup_str(&dst->ca, src->ca);
  if (!bad && src->alpn_len) {
    dst->alpn = malloc(src->alpn_len);
    if (dst->alpn) {
      memcpy(dst->alpn, src->alpn, src->alpn_len);
      dst->alpn_len = src->alpn_len;
    } else {
      bad = 1;
    }
  }
  if (!bad && src->ncerts) {
    dst->certs = calloc((size_t)src->ncerts, sizeof *dst->certs);
    if (dst->certs) {
      dst->ncerts = src->ncerts;
      for (int i = 0; i < src->ncerts; i++)
        bad |= dup_str(&dst->certs[i].cert, src->certs[i].cert) |
               dup_str(&dst->certs[i].key, src->certs[i].key);
    } else {
      bad = 1;
    }
  }
  if (bad) hs_tls_opts_free(dst);
  return bad ? -1 : 0;
}

/* ---- errors ---- */

/* The last OpenSSL error queued, as text, into err; the queue is emptied. */
static void ssl_error_text(const char *what, char *err, size_t errlen) {
  unsigned long e = ERR_peek_last_error();
  char buf[256] = "unknown error";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, errlen, "%s: %s", what, buf);
  ERR_clear_error();
}

/* Whether path can be opened for reading; err says why not. */
static int readable(const char *what, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errlen, "TLS %s %s: %s", what, path, strerror(errno));
    return 0;
  }
  fclose(f);
  return 1;
}

/* ---- session ticket keys ---- */

/* The ticket keys come from one random secret and the hour: the key of
 * hour e (hours since 1970) is HMAC-SHA256(secret, what || e). The secret
 * is made once per process, and with --workers by the supervisor before
 * it forks (hs_tls_ticket_secret), so every worker seals and opens tickets
 * with the same keys without talking to the others, and all rotate on the
 * hour. [0] is this hour's key, [1] the one before (still opens tickets,
 * which are then renewed). The loop is single-threaded, so no lock. */
static struct ticket_key {
  unsigned char name[16], aes[32], hmac[32];
  int set;
} ticket_keys[2];
static unsigned char ticket_secret[32];
static int ticket_secret_set;
static long long ticket_hour = -1; /* the hour ticket_keys[0] is for */
static long long ticket_shift;     /* hours added by hs_tls_rotate_ticket_keys */

int hs_tls_ticket_secret(void) {
  if (!ticket_secret_set) {
    if (RAND_bytes(ticket_secret, sizeof ticket_secret) != 1) {
      ERR_clear_error();
      return -1;
    }
    ticket_secret_set = 1;
  }
  return 0;
}

static int derive(unsigned char *out, size_t len, const char *what, long long hour) {
  unsigned char msg[32], md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  size_t n = strlen(what);
  memcpy(msg, what, n);
  for (int i = 0; i < 8; i++)
    msg[n + (size_t)i] = (unsigned char)((unsigned long long)hour >> (56 - 8 * i));
  if (!HMAC(EVP_sha256(), ticket_secret, sizeof ticket_secret, msg, n + 8, md, &mdlen) ||
      mdlen < len) {
    ERR_clear_error();
    return -1;
  }
  memcpy(out, md, len);
  return 0;
}

static void key_for(struct ticket_key *k, long long hour) {
  k->set = derive(k->name, sizeof k->name, "ticket name", hour) == 0 &&
           derive(k->aes, sizeof k->aes, "ticket aes", hour) == 0 &&
           derive(k->hmac, sizeof k->hmac, "ticket hmac", hour) == 0;
}

/* The keys of the hour it is now (plus any shift). */
static void refresh_keys(void) {
  long long hour = (long long)(time(NULL) / HS_TLS_TICKET_ROTATE) + ticket_shift;
  if (hour == ticket_hour) return;
  if (hs_tls_ticket_secret() != 0) {
    ticket_keys[0].set = ticket_keys[1].set = 0; /* no tickets until randomness comes back */
    return;
  }
  key_for(&ticket_keys[0], hour);
  key_for(&ticket_keys[1], hour - 1);
  ticket_hour = hour;
}

void hs_tls_rotate_ticket_keys(void) {
  ticket_shift++;
  refresh_keys();
}

static int ticket_mac_init(EVP_MAC_CTX *hctx, unsigned char *key) {
  static char digest[] = "SHA256";
  OSSL_PARAM params[3];
  params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32);
  params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
  params[2] = OSSL_PARAM_construct_end();
  return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

/* OpenSSL asks for a key to seal a ticket (enc 1) or to open one (enc 0):
 * 1 found, 2 found but old (the ticket is renewed), 0 unknown (a full
 * handshake follows), -1 an error. */
static int ticket_cb(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *ctx,
                     EVP_MAC_CTX *hctx, int enc) {
  refresh_keys();
  if (enc) {
    struct ticket_key *k = &ticket_keys[0];
    if (!k->set || RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
    memcpy(name, k->name, sizeof k->name);
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1) return -1;
    return ticket_mac_init(hctx, k->hmac) ? 1 : -1;
  }
  for (int i = 0; i < 2; i++) {
    struct ticket_key *k = &ticket_keys[i];
    if (!k->set || memcmp(name, k->name, sizeof k->name) != 0) continue;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1) return -1;
    if (!ticket_mac_init(hctx, k->hmac)) return -1;
    /* 2 (renew) for an old key, and always under TLS 1.3: a client uses a
     * 1.3 ticket once (RFC 8446 C.4), so each resumption must leave it a
     * new one or every other connection is a full handshake. */
    return i == 0 && SSL_version(s) != TLS1_3_VERSION ? 1 : 2;
  }
  return 0;
}

/* ---- contexts ---- */

/* A client's ALPN in the list we prefer: the first of ours it offers. With
 * no protocol in common the handshake fails with no_application_protocol
 * (RFC 7301); a client that offers none is not asked. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg) {
  hs_tls_ctx_t *t = arg;
  unsigned char *sel = NULL;
  (void)ssl;
  if (SSL_select_next_proto(&sel, outlen, t->opts.alpn, (unsigned)t->opts.alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* The server name a client asks for picks the certificate: the default one
 * when its names cover it (or when no other's do), else the first other
 * certificate whose names (subjectAltName, else the common name; wildcards
 * in the left-most label) cover it. */
static int sni_cb(SSL *ssl, int *alert, void *arg) {
  hs_tls_ctx_t *t = arg;
  (void)alert;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name || !t->nsni) return SSL_TLSEXT_ERR_OK;
  size_t len = strlen(name);
  X509 *x = SSL_CTX_get0_certificate(t->ctx);
  if (x && X509_check_host(x, name, len, 0, NULL) == 1) return SSL_TLSEXT_ERR_OK;
  for (int i = 0; i < t->nsni; i++) {
    x = SSL_CTX_get0_certificate(t->sni[i]);
    if (x && X509_check_host(x, name, len, 0, NULL) == 1) {
      SSL_set_SSL_CTX(ssl, t->sni[i]);
      break;
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

/* Load a certificate chain and its key into c; 0, or -1 with err. */
static int load_pair(SSL_CTX *c, const char *cert, const char *key, char *err, size_t errlen) {
  char what[512];
  if (!readable("certificate", cert, err, errlen) || !readable("key", key, err, errlen)) return -1;
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(c, cert) != 1) {
    snprintf(what, sizeof what, "TLS certificate %s", cert);
  } else if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) {
    /* OpenSSL checks the key against the certificate here already. */
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
      snprintf(what, sizeof what, "TLS key %s does not match certificate %s", key, cert);
    else
      snprintf(what, sizeof what, "TLS key %s", key);
  } else if (SSL_CTX_check_private_key(c) != 1) {
    snprintf(what, sizeof what, "TLS key %s does not match certificate %s", key, cert);
  } else {
    return 0;
  }
  ssl_error_text(what, err, errlen);
  return -1;
}

/* One SSL_CTX with every setting of t->opts and the pair cert/key (a
 * client's may have none). NULL with err. */
static SSL_CTX *make_ctx(hs_tls_ctx_t *t, const char *cert, const char *key, char *err,
                         size_t errlen) {
  const hs_tls_opts_t *o = &t->opts;
  ERR_clear_error();
  SSL_CTX *c = SSL_CTX_new(t->client ? TLS_client_method() : TLS_server_method());
  if (!c) {
    ssl_error_text("TLS context", err, errlen);
    return NULL;
  }
  char what[512];
  SSL_CTX_set_min_proto_version(c, o->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION);
  if (o->ciphers && SSL_CTX_set_cipher_list(c, o->ciphers) != 1) {
    snprintf(what, sizeof what, "TLS ciphers \"%s\"", o->ciphers);
    goto fail;
  }
  if (o->ciphersuites && SSL_CTX_set_ciphersuites(c, o->ciphersuites) != 1) {
    snprintf(what, sizeof what, "TLS ciphersuites \"%s\"", o->ciphersuites);
    goto fail;
  }
  if (t->client) {
    if (!o->no_verify) {
      SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
      if (o->ca) {
        if (!readable("CA file", o->ca, err, errlen)) goto fail_err;
        if (SSL_CTX_load_verify_locations(c, o->ca, NULL) != 1) {
          snprintf(what, sizeof what, "TLS CA file %s", o->ca);
          goto fail;
        }
      } else if (SSL_CTX_set_default_verify_paths(c) != 1) {
        snprintf(what, sizeof what, "the system's CA store");
        goto fail;
      }
    }
    if (o->alpn_len && SSL_CTX_set_alpn_protos(c, o->alpn, (unsigned)o->alpn_len) != 0) {
      snprintf(what, sizeof what, "TLS alpn");
      goto fail;
    }
    if (cert && load_pair(c, cert, key, err, errlen) != 0) goto fail_err;
    return c;
  }
  SSL_CTX_set_options(c, SSL_OP_CIPHER_SERVER_PREFERENCE | (o->no_tickets ? SSL_OP_NO_TICKET : 0));
  SSL_CTX_set_session_id_context(c, t->sid, sizeof t->sid);
  SSL_CTX_set_timeout(c, HS_TLS_TICKET_ROTATE); /* a ticket outlives no key */
  if (!o->no_tickets) SSL_CTX_set_tlsext_ticket_key_evp_cb(c, ticket_cb);
  if (o->alpn_len) SSL_CTX_set_alpn_select_cb(c, alpn_cb, t);
  if (o->verify_client) {
    STACK_OF(X509_NAME) *names = NULL;
    if (!o->ca) {
      snprintf(err, errlen,
               "TLS verify_client needs ca, the CA file that signs client certificates");
      goto fail_err;
    }
    if (!readable("CA file", o->ca, err, errlen)) goto fail_err;
    if (SSL_CTX_load_verify_locations(c, o->ca, NULL) != 1 ||
        !(names = SSL_load_client_CA_file(o->ca))) {
      snprintf(what, sizeof what, "TLS CA file %s", o->ca);
      goto fail;
    }
    SSL_CTX_set_client_CA_list(c, names); /* c owns names now */
    SSL_CTX_set_verify(
        c,
        SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE |
            (o->verify_client == HS_TLS_VERIFY_REQUIRED ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        NULL);
  }
  if (load_pair(c, cert, key, err, errlen) != 0) goto fail_err;
  return c;
fail:
  ssl_error_text(what, err, errlen);
fail_err:
  SSL_CTX_free(c);
  return NULL;
}

/* The session id context of a server: a session (ticket or cached) made
 * under one set of client-certificate rules must not resume under another,
 * or a client could skip verify_client by resuming a session from a
 * listener that asked for no certificate, or trusted another CA. It is a
 * SHA-256 of the rules and of the CA file's contents (so replacing the CA
 * file on a reload ends the sessions it allowed). 0, or -1 with err. */
static int make_sid(hs_tls_ctx_t *t, char *err, size_t errlen) {
  const hs_tls_opts_t *o = &t->opts;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned len = 0;
  char rule[32];
  int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
  snprintf(rule, sizeof rule, "hotsock verify %d", o->verify_client);
  ok = ok && EVP_DigestUpdate(md, rule, strlen(rule)) == 1;
  if (ok && o->verify_client && o->ca) {
    FILE *f = fopen(o->ca, "rb");
    char buf[4096];
    size_t n;
    if (!f) {
      snprintf(err, errlen, "TLS CA file %s: %s", o->ca, strerror(errno));
      EVP_MD_CTX_free(md);
      return -1;
    }
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0) ok = EVP_DigestUpdate(md, buf, n) == 1;
    fclose(f);
  }
  ok = ok && EVP_DigestFinal_ex(md, t->sid, &len) == 1 && len == sizeof t->sid;
  EVP_MD_CTX_free(md);
  if (!ok) {
    ssl_error_text("TLS session id context", err, errlen);
    return -1;
  }
  return 0;
}

static void ctx_free(hs_tls_ctx_t *t) {
  SSL_CTX_free(t->ctx);
  for (int i = 0; i < t->nsni; i++) SSL_CTX_free(t->sni[i]);
  free(t->sni);
  hs_tls_opts_free(&t->opts);
  free(t);
}

hs_tls_ctx_t *hs_tls_ctx_new(const hs_tls_opts_t *o, int client, char *err, size_t errlen) {
  if (!client && (!o->cert || !*o->cert || !o->key || !*o->key)) {
    snprintf(err, errlen, "a TLS server needs both a certificate and a key");
    return NULL;
  }
  if (client && (o->cert == NULL) != (o->key == NULL)) {
    snprintf(err, errlen, "a TLS client certificate needs both cert and key");
    return NULL;
  }
  hs_tls_ctx_t *t = calloc(1, sizeof *t);
  if (!t || hs_tls_opts_copy(&t->opts, o) != 0) {
    free(t);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  t->refs = 1;
  t->client = client;
  if ((!client && make_sid(t, err, errlen) != 0) ||
      !(t->ctx = make_ctx(t, o->cert, o->key, err, errlen))) {
    ctx_free(t);
    return NULL;
  }
  if (!client && o->ncerts) {
    if (!(t->sni = calloc((size_t)o->ncerts, sizeof *t->sni))) {
      snprintf(err, errlen, "out of memory");
      ctx_free(t);
      return NULL;
    }
    for (; t->nsni < o->ncerts; t->nsni++) {
      const hs_tls_pair_t *p = &o->certs[t->nsni];
      if (!p->cert || !p->key) {
        snprintf(err, errlen, "every TLS certificate needs both cert and key");
        ctx_free(t);
        return NULL;
      }
      if (!(t->sni[t->nsni] = make_ctx(t, p->cert, p->key, err, errlen))) {
        ctx_free(t);
        return NULL;
      }
    }
    SSL_CTX_set_tlsext_servername_callback(t->ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(t->ctx, t);
  }
  return t;
}

hs_tls_ctx_t *hs_tls_ctx_ref(hs_tls_ctx_t *ctx) {
  ctx->refs++;
  return ctx;
}

void hs_tls_ctx_unref(hs_tls_ctx_t *ctx) {
  if (ctx && --ctx->refs == 0) ctx_free(ctx);
}

const hs_tls_opts_t *hs_tls_ctx_opts(const hs_tls_ctx_t *ctx) { return &ctx->opts; }
int hs_tls_ctx_is_client(const hs_tls_ctx_t *ctx) { return ctx->client; }

/* ---- connections ---- */

/* Whether name is an IPv4 or IPv6 address. */
static int is_ip_address(const char *name) {
  unsigned char a[16];
  return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

/* An SSL on two memory BIOs, holding a reference to ctx. */
static hs_tls_t *tls_new(hs_tls_ctx_t *ctx) {
  hs_tls_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  hs_buf_init(&t->cout);
  t->ssl = SSL_new(ctx->ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return NULL;
  }
  /* An empty memory BIO says "retry", not EOF: more may come. */
  BIO_set_mem_eof_return(t->rbio, -1);
  BIO_set_mem_eof_return(t->wbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both now */
  t->ctx = hs_tls_ctx_ref(ctx);
  return t;
}

hs_tls_t *hs_tls_new(hs_tls_ctx_t *ctx) {
  hs_tls_t *t = tls_new(ctx);
  if (t) SSL_set_accept_state(t->ssl);
  return t;
}

hs_tls_t *hs_tls_new_client(hs_tls_ctx_t *ctx, const char *name) {
  hs_tls_t *t = tls_new(ctx);
  if (!t) return NULL;
  SSL_set_connect_state(t->ssl);
  if (name && *name) {
    int is_ip = is_ip_address(name);
    int ok = 1;
    if (!is_ip) ok = SSL_set_tlsext_host_name(t->ssl, name) == 1;
    if (ok && !ctx->opts.no_verify) {
      if (is_ip) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name) == 1;
      } else {
        SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set1_host(t->ssl, name) == 1;
      }
    }
    if (!ok) {
      hs_tls_free(t, NULL);
      ERR_clear_error();
      return NULL;
    }
  }
  return t;
}

void hs_tls_free(hs_tls_t *t, hs_pool_t *pool) {
  if (!t) return;
  SSL_free(t->ssl);
  hs_buf_release(&t->cout, pool);
  hs_tls_ctx_unref(t->ctx);
  free(t->peer_subject);
  free(t->peer_issuer);
  free(t->peer_serial);
  free(t);
}

int hs_tls_feed(hs_tls_t *t, const char *p, size_t n) {
  size_t w = 0;
  if (n == 0) return 0;
  return BIO_write_ex(t->rbio, p, n, &w) == 1 && w == n ? 0 : -1;
}

/* SSL_get_error's answer for r: HS_TLS_OK when OpenSSL only wants more
 * input, HS_TLS_CLOSED at the peer's close_notify, else HS_TLS_ERROR
 * (marked fatal, err filled; a certificate that failed verification says
 * why). */
static int check(hs_tls_t *t, int r, const char *what, char *err, size_t errlen) {
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return HS_TLS_OK;
  if (e == SSL_ERROR_ZERO_RETURN) return HS_TLS_CLOSED;
  t->fatal = 1;
  long v = SSL_get_verify_result(t->ssl);
  if (!t->done && v != X509_V_OK)
    snprintf(err, errlen, "%s: certificate verify failed: %s", what,
             X509_verify_cert_error_string(v));
  else if (e == SSL_ERROR_SSL)
    ssl_error_text(what, err, errlen);
  else
    snprintf(err, errlen, "%s: error %d", what, e);
  ERR_clear_error();
  return HS_TLS_ERROR;
}

/* One line of an X509 name (RFC 2253), malloc'd; NULL when there is none. */
static char *name_text(const X509_NAME *n) {
  BIO *b = BIO_new(BIO_s_mem());
  char *s = NULL;
  if (b && X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253) >= 0) {
    char *p;
    long len = BIO_get_mem_data(b, &p);
    if (len >= 0 && (s = malloc((size_t)len + 1))) {
      memcpy(s, p, (size_t)len);
      s[len] = 0;
    }
  }
  BIO_free(b);
  return s;
}

/* Keep what the script may ask of the peer's certificate. */
static void note_peer(hs_tls_t *t) {
  X509 *x = SSL_get1_peer_certificate(t->ssl);
  if (!x) return;
  t->peer_subject = name_text(X509_get_subject_name(x));
  t->peer_issuer = name_text(X509_get_issuer_name(x));
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  if (hex) t->peer_serial = strdup(hex);
  OPENSSL_free(hex);
  BN_free(bn);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (X509_digest(x, EVP_sha256(), md, &len) == 1 && len == 32)
    for (unsigned i = 0; i < len; i++) snprintf(t->peer_sha256 + 2 * i, 3, "%02x", md[i]);
  X509_free(x);
  ERR_clear_error();
}

int hs_tls_handshake(hs_tls_t *t, char *err, size_t errlen) {
  if (t->done) return HS_TLS_OK;
  if (t->fatal) return HS_TLS_ERROR;
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->done = 1;
    note_peer(t);
    return HS_TLS_DONE;
  }
  r = check(t, r, "TLS handshake", err, errlen);
  if (r == HS_TLS_CLOSED) { /* close_notify before the handshake ended */
    t->fatal = 1;
    snprintf(err, errlen, "TLS handshake: the peer closed it");
    r = HS_TLS_ERROR;
  }
  return r;
}

/* Decrypt every complete record fed so far, growing in by a block at a
 * time. */
int hs_tls_read(hs_tls_t *t, hs_buf_t *in, hs_pool_t *pool, char *err, size_t errlen) {
  if (t->fatal) return HS_TLS_ERROR;
  for (;;) {
    /* A record holds at most 16 KiB; grow only when little room is left. */
    if (hs_buf_space(in) < 4096 && !hs_buf_reserve(in, HS_POOL_BLOCK, pool)) {
      snprintf(err, errlen, "out of memory");
      return HS_TLS_ERROR;
    }
    char *p = in->data + in->wpos;
    size_t got = 0;
    ERR_clear_error();
    int r = SSL_read_ex(t->ssl, p, hs_buf_space(in), &got);
    if (r == 1) {
      hs_buf_commit(in, got);
      continue;
    }
    return check(t, r, "TLS read", err, errlen);
  }
}

/* Move what OpenSSL wrote to the write BIO into cout. */
static int drain_wbio(hs_tls_t *t, hs_pool_t *pool) {
  size_t n;
  while ((n = BIO_ctrl_pending(t->wbio)) > 0) {
    char *p = hs_buf_reserve(&t->cout, n, pool);
    if (!p) return -1;
    int r = BIO_read(t->wbio, p, (int)(n < hs_buf_space(&t->cout) ? n : hs_buf_space(&t->cout)));
    if (r <= 0) return -1;
    hs_buf_commit(&t->cout, (size_t)r);
  }
  return 0;
}

int hs_tls_encrypt(hs_tls_t *t, hs_buf_t *out, int closing, hs_pool_t *pool) {
  if (t->done && !t->fatal) {
    while (hs_buf_len(out)) {
      size_t w = 0;
      ERR_clear_error();
      if (SSL_write_ex(t->ssl, hs_buf_peek(out), hs_buf_len(out), &w) != 1) {
        t->fatal = 1;
        ERR_clear_error();
        return -1;
      }
      hs_buf_consume(out, w, pool);
      /* A block at a time into cout keeps the write BIO small. */
      if (drain_wbio(t, pool) != 0) return -1;
    }
    if (closing && !t->notify_sent) {
      t->notify_sent = 1;
      ERR_clear_error();
      SSL_shutdown(t->ssl); /* queues close_notify; the peer's is not awaited */
      ERR_clear_error();
    }
  }
  return drain_wbio(t, pool);
}

size_t hs_tls_pending(const hs_tls_t *t) {
  return hs_buf_len(&t->cout) + BIO_ctrl_pending(t->wbio);
}

void hs_tls_get_info(const hs_tls_t *t, hs_tls_info_t *info) {
  const unsigned char *alpn = NULL;
  unsigned alpn_len = 0;
  memset(info, 0, sizeof *info);
  if (!t->done) return;
  info->version = SSL_get_version(t->ssl);
  info->cipher = SSL_get_cipher_name(t->ssl);
  info->sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
  if (alpn && alpn_len) {
    info->alpn = (const char *)alpn;
    info->alpn_len = alpn_len;
  }
  info->resumed = SSL_session_reused(t->ssl) == 1;
  info->subject = t->peer_subject;
  info->issuer = t->peer_issuer;
  info->serial = t->peer_serial;
  info->sha256 = t->peer_sha256[0] ? t->peer_sha256 : NULL;
}
