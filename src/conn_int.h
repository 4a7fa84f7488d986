/* conn_int.h: what conn.c and handshake.c share (socket layer). */
#ifndef HS_CONN_INT_H
#define HS_CONN_INT_H

#include "hotsock.h"

/* conn.c */
void hs_conn_consume(hs_conn_t *c, size_t n); /* drop n bytes of input */
size_t hs_conn_input_len(const hs_conn_t *c); /* unframed bytes */
void hs_conn_linger_close(hs_conn_t *c, const char *why);
void hs_conn_stop_reading(hs_conn_t *c);

/* handshake.c. The input functions return 0 when there is plaintext to
 * dispatch, -1 when there is nothing (or c closed). */
int hs_conn_proxy_input(hs_conn_t *c, const char *p, size_t n);
int hs_conn_tls_input(hs_conn_t *c, const char *p, size_t n);
void hs_conn_tls_failed(hs_conn_t *c, const char *why);

#endif
