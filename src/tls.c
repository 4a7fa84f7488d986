/* tls.c: OpenSSL on the event loop through memory BIOs (see tls.h). No
 * blocking call, no socket and no Lua here: conn.c moves the bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls.h"

struct hs_tls_ctx {
  SSL_CTX *ctx;
};

/* The first OpenSSL error queued, as text, into err; the queue is emptied. */
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

/* A listener's context: the certificate chain and key (PEM) checked
 * against each other, TLS 1.2 at least, no renegotiation, session tickets
 * on (OpenSSL's default) with a session id context so they resume. */
hs_tls_ctx_t *hs_tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen) {
  char what[512];
  if (!cert || !*cert || !key || !*key) {
    snprintf(err, errlen, "a TLS listener needs both a certificate and a key");
    return NULL;
  }
  if (!readable("certificate", cert, err, errlen) || !readable("key", key, err, errlen))
    return NULL;
  hs_tls_ctx_t *t = calloc(1, sizeof *t);
  if (!t) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  ERR_clear_error();
  t->ctx = SSL_CTX_new(TLS_server_method());
  if (!t->ctx) {
    ssl_error_text("TLS context", err, errlen);
    free(t);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS);
  static const unsigned char sid[] = "hotsock";
  SSL_CTX_set_session_id_context(t->ctx, sid, sizeof sid - 1);
  if (SSL_CTX_use_certificate_chain_file(t->ctx, cert) != 1) {
    snprintf(what, sizeof what, "TLS certificate %s", cert);
    ssl_error_text(what, err, errlen);
  } else if (SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1) {
    /* OpenSSL checks the key against the certificate here already. */
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
      snprintf(what, sizeof what, "TLS key %s does not match certificate %s", key, cert);
    else
      snprintf(what, sizeof what, "TLS key %s", key);
    ssl_error_text(what, err, errlen);
  } else if (SSL_CTX_check_private_key(t->ctx) != 1) {
    snprintf(what, sizeof what, "TLS key %s does not match certificate %s", key, cert);
    ssl_error_text(what, err, errlen);
  } else {
    return t;
  }
  SSL_CTX_free(t->ctx);
  free(t);
  return NULL;
}

void hs_tls_ctx_free(hs_tls_ctx_t *ctx) {
  if (!ctx) return;
  SSL_CTX_free(ctx->ctx);
  free(ctx);
}

/* A server-side SSL reading from and writing to two memory BIOs. */
hs_tls_t *hs_tls_new(hs_tls_ctx_t *ctx) {
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
  SSL_set_accept_state(t->ssl);
  return t;
}

void hs_tls_free(hs_tls_t *t, hs_pool_t *pool) {
  if (!t) return;
  SSL_free(t->ssl);
  hs_buf_release(&t->cout, pool);
  free(t);
}

int hs_tls_feed(hs_tls_t *t, const char *p, size_t n) {
  size_t w = 0;
  if (n == 0) return 0;
  return BIO_write_ex(t->rbio, p, n, &w) == 1 && w == n ? 0 : -1;
}

/* SSL_get_error's answer for r: HS_TLS_OK when OpenSSL only wants more
 * input, else HS_TLS_ERROR (marked fatal, err filled). */
static int check(hs_tls_t *t, int r, const char *what, char *err, size_t errlen) {
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return HS_TLS_OK;
  if (e == SSL_ERROR_ZERO_RETURN) return HS_TLS_CLOSED;
  t->fatal = 1;
  if (e == SSL_ERROR_SSL)
    ssl_error_text(what, err, errlen);
  else
    snprintf(err, errlen, "%s: error %d", what, e);
  ERR_clear_error();
  return HS_TLS_ERROR;
}

int hs_tls_handshake(hs_tls_t *t, char *err, size_t errlen) {
  if (t->done) return HS_TLS_OK;
  if (t->fatal) return HS_TLS_ERROR;
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->done = 1;
    return HS_TLS_DONE;
  }
  r = check(t, r, "TLS handshake", err, errlen);
  return r == HS_TLS_CLOSED ? HS_TLS_ERROR : r;
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
}
