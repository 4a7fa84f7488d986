/* tls.h: TLS on accepted connections, in the socket layer (no Lua).
 *
 * A TLS listener holds one hs_tls_ctx (an OpenSSL SSL_CTX: certificate
 * chain and key from PEM files, TLS 1.2 at least, renegotiation refused,
 * session tickets on). Each of its connections holds an hs_tls: an SSL
 * with two memory BIOs between libuv and the framer. Ciphertext read from
 * the socket goes into the read BIO and SSL_read yields the plaintext the
 * framer consumes; the connection's plaintext output goes through SSL_write
 * into the write BIO, whose bytes (moved to `cout`) are what hs_conn_flush
 * writes. A plain connection's hs_tls pointer is NULL. */
#ifndef HS_TLS_H
#define HS_TLS_H

#include <stddef.h>

#include "buf.h"

typedef struct hs_tls_ctx hs_tls_ctx_t;

/* One connection's TLS state. */
typedef struct hs_tls {
  struct ssl_st *ssl;
  struct bio_st *rbio; /* ciphertext from the peer, fed by the read path */
  struct bio_st *wbio; /* ciphertext for the peer, drained into cout */
  hs_buf_t cout;       /* ciphertext waiting for the socket */
  int done;            /* the handshake completed */
  int fatal;           /* a fatal TLS error: no more SSL calls but freeing */
  int notify_sent;     /* close_notify is queued */
} hs_tls_t;

/* What the handshake or a read did. */
enum {
  HS_TLS_OK = 0,     /* go on (maybe more input is needed) */
  HS_TLS_DONE = 1,   /* the handshake has just completed */
  HS_TLS_CLOSED = 2, /* the peer sent close_notify */
  HS_TLS_ERROR = -1  /* a fatal error; err says what */
};

/* A context for a listener from PEM files; NULL with err filled. */
hs_tls_ctx_t *hs_tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen);
void hs_tls_ctx_free(hs_tls_ctx_t *ctx);

/* A connection's state, or NULL when memory runs out. */
hs_tls_t *hs_tls_new(hs_tls_ctx_t *ctx);
void hs_tls_free(hs_tls_t *t, hs_pool_t *pool);

/* Hand ciphertext read from the socket to OpenSSL. 0 or -1 (memory). */
int hs_tls_feed(hs_tls_t *t, const char *p, size_t n);
/* Drive the handshake with what was fed: HS_TLS_OK, HS_TLS_DONE or
 * HS_TLS_ERROR. */
int hs_tls_handshake(hs_tls_t *t, char *err, size_t errlen);
/* Decrypt what was fed into in (plaintext appended): HS_TLS_OK,
 * HS_TLS_CLOSED or HS_TLS_ERROR. */
int hs_tls_read(hs_tls_t *t, hs_buf_t *in, hs_pool_t *pool, char *err, size_t errlen);
/* Encrypt all of out (consumed) once the handshake is done, then queue
 * close_notify when closing is set; move the write BIO's bytes to cout.
 * 0, or -1 on a fatal error or when memory runs out. */
int hs_tls_encrypt(hs_tls_t *t, hs_buf_t *out, int closing, hs_pool_t *pool);
/* Ciphertext produced and not yet taken into cout or written. */
size_t hs_tls_pending(const hs_tls_t *t);

/* What the script sees (valid while t lives; NULL when unknown). */
typedef struct hs_tls_info {
  const char *version; /* "TLSv1.3" */
  const char *cipher;  /* "TLS_AES_256_GCM_SHA384" */
  const char *sni;     /* the server name the client sent */
  const char *alpn;    /* not negotiated yet: NULL */
  size_t alpn_len;
  int resumed;
} hs_tls_info_t;
void hs_tls_get_info(const hs_tls_t *t, hs_tls_info_t *info);

#endif
