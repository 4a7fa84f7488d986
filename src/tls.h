/* tls.h: TLS on connections, in the socket layer (no Lua).
 *
 * A context (hs_tls_ctx_t) is made from settings (hs_tls_opts_t) the host
 * gives: for a server, a certificate chain and key from PEM files, more
 * certificates chosen by SNI, an ALPN list, a minimum version, cipher
 * lists, client certificates, session tickets with keys that rotate; for a
 * client (outbound), verification against the system's CA store or a CA
 * file, ALPN, and a client certificate. Contexts are counted references: a
 * listener, a cache of the host's, and every connection made from one hold
 * one each, so a reload can put new ones in place while live connections
 * keep theirs.
 *
 * Each TLS connection holds an hs_tls: an SSL with two memory BIOs between
 * libuv and the framer. Ciphertext read from the socket goes into the read
 * BIO and SSL_read yields the plaintext the framer consumes; the
 * connection's plaintext output goes through SSL_write into the write BIO,
 * whose bytes (moved to `cout`) are what hs_conn_flush writes. A plain
 * connection's hs_tls pointer is NULL. */
#ifndef HS_TLS_H
#define HS_TLS_H

#include <stddef.h>

#include "buf.h"

typedef struct hs_tls_ctx hs_tls_ctx_t;

enum { HS_TLS_VERIFY_NONE = 0, HS_TLS_VERIFY_OPTIONAL, HS_TLS_VERIFY_REQUIRED };

/* A certificate chain and its key, both PEM paths. */
typedef struct hs_tls_pair {
  char *cert, *key;
} hs_tls_pair_t;

/* Settings of a context. Every pointer is malloc'd and owned by the struct
 * (hs_tls_opts_free); NULL or 0 is the default. */
typedef struct hs_tls_opts {
  char *cert, *key;     /* server: required; client: a client certificate */
  hs_tls_pair_t *certs; /* server: more certificates, chosen by SNI */
  int ncerts;
  unsigned char *alpn; /* protocols in preference order, wire format */
  size_t alpn_len;
  int min_version;    /* 12 or 13 (TLS 1.2, 1.3); 0: 12 */
  char *ciphers;      /* TLS 1.2 cipher list, OpenSSL syntax */
  char *ciphersuites; /* TLS 1.3 suites */
  int verify_client;  /* server: HS_TLS_VERIFY_* */
  char *ca;           /* server: CA of client certificates; client: CA
                         to verify the server (else the system's) */
  int no_tickets;     /* server: no session tickets */
  int no_verify;      /* client: do not verify the server */
} hs_tls_opts_t;

void hs_tls_opts_free(hs_tls_opts_t *o);
/* A deep copy into dst: 0, or -1 when memory runs out (dst then freed). */
int hs_tls_opts_copy(hs_tls_opts_t *dst, const hs_tls_opts_t *src);

/* One connection's TLS state. */
typedef struct hs_tls {
  struct ssl_st *ssl;
  struct bio_st *rbio; /* ciphertext from the peer, fed by the read path */
  struct bio_st *wbio; /* ciphertext for the peer, drained into cout */
  hs_tls_ctx_t *ctx;   /* a reference */
  hs_buf_t cout;       /* ciphertext waiting for the socket (and, after a
                          STARTTLS, the plaintext sent before it) */
  int done;            /* the handshake completed */
  int fatal;           /* a fatal TLS error: no more SSL calls but freeing */
  int notify_sent;     /* close_notify is queued */
  int upgraded;        /* STARTTLS on a connection the host already saw */
  char *peer_subject, *peer_issuer, *peer_serial; /* the peer's certificate */
  char peer_sha256[65];                           /* hex; "" without one */
} hs_tls_t;

/* What the handshake or a read did. */
enum {
  HS_TLS_OK = 0,     /* go on (maybe more input is needed) */
  HS_TLS_DONE = 1,   /* the handshake has just completed */
  HS_TLS_CLOSED = 2, /* the peer sent close_notify */
  HS_TLS_ERROR = -1  /* a fatal error; err says what */
};

/* A context from settings, for a server or (client set) for outbound
 * connections; every file is read and checked now. NULL with err filled.
 * The caller holds the one reference. */
hs_tls_ctx_t *hs_tls_ctx_new(const hs_tls_opts_t *o, int client, char *err, size_t errlen);
hs_tls_ctx_t *hs_tls_ctx_ref(hs_tls_ctx_t *ctx);
void hs_tls_ctx_unref(hs_tls_ctx_t *ctx);
/* The settings it was made from (to make it again on a reload). */
const hs_tls_opts_t *hs_tls_ctx_opts(const hs_tls_ctx_t *ctx);
int hs_tls_ctx_is_client(const hs_tls_ctx_t *ctx);

/* Session ticket keys: one current, one previous (still accepted, and its
 * tickets renewed); they rotate every HS_TLS_TICKET_ROTATE seconds (on the
 * hour), shared by every server context of the process (so reloads keep
 * them). They are derived from a random secret and the hour, so processes
 * forked after hs_tls_ticket_secret share them (--workers: a ticket from
 * one worker resumes on another). hs_tls_ticket_secret makes the secret
 * now (0, or -1 without randomness); hs_tls_rotate_ticket_keys moves to the
 * next keys now (tests). */
#define HS_TLS_TICKET_ROTATE 3600
int hs_tls_ticket_secret(void);
void hs_tls_rotate_ticket_keys(void);

/* A server connection's state, or NULL when memory runs out. */
hs_tls_t *hs_tls_new(hs_tls_ctx_t *ctx);
/* A client connection's state: name (may be NULL) is sent as SNI (unless
 * it is an IP address) and, when the context verifies, checked against the
 * server's certificate. NULL when memory runs out. */
hs_tls_t *hs_tls_new_client(hs_tls_ctx_t *ctx, const char *name);
void hs_tls_free(hs_tls_t *t, hs_pool_t *pool);

/* Hand ciphertext read from the socket to OpenSSL. 0 or -1 (memory). */
int hs_tls_feed(hs_tls_t *t, const char *p, size_t n);
/* Drive the handshake with what was fed (a client's first call writes its
 * ClientHello): HS_TLS_OK, HS_TLS_DONE or HS_TLS_ERROR. */
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
  const char *sni;     /* the server name the client sent (or we sent) */
  const char *alpn;    /* the protocol agreed, alpn_len bytes, or NULL */
  size_t alpn_len;
  int resumed;
  const char *subject, *issuer, *serial, *sha256; /* the peer's certificate */
} hs_tls_info_t;
void hs_tls_get_info(const hs_tls_t *t, hs_tls_info_t *info);

#endif
