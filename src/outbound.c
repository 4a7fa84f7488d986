/* outbound.c: connections hotsock makes itself (hs.connect): the connect,
 * a name lookup that does not block the loop, the TLS handshake of a TLS
 * one (driven by conn.c), and the connect deadline's end. Once connected, an outbound connection is
 * an hs_conn_t like any other and conn.c's read and write paths serve it. */
#include <stdlib.h>
#include <string.h>

#include "hotsock.h"
#include "tls.h"

/* A connect under way. Allocated apart from the connection, because a name
 * lookup can outlive it: when the connection finishes first, c is NULL and
 * the callback only frees this. */
typedef struct hs_connect_req {
  uv_connect_t req;
  uv_getaddrinfo_t gai;
  hs_conn_t *c;
} hs_connect_req_t;

/* The connection finishes while its connect is under way: the request's
 * callback will find no connection and only free the request. */
void hs_outbound_forget(hs_conn_t *c) {
  if (!c->creq) return;
  c->creq->c = NULL;
  c->creq = NULL;
}

static void fill_addr(const struct sockaddr *sa, char *out, size_t outlen, char *ip, size_t iplen,
                      int *port) {
  char host[INET6_ADDRSTRLEN] = "?";
  int p = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    uv_ip4_name(a, host, sizeof host);
    p = ntohs(a->sin_port);
    snprintf(out, outlen, "%s:%d", host, p);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(a, host, sizeof host);
    p = ntohs(a->sin6_port);
    snprintf(out, outlen, "[%s]:%d", host, p);
  }
  if (ip) snprintf(ip, iplen, "%s", host);
  if (port) *port = p;
}

static void connect_cb(uv_connect_t *req, int status) {
  hs_connect_req_t *r = hs_container_of(req, hs_connect_req_t, req);
  hs_conn_t *c = r->c;
  free(r);
  if (!c || (c->flags & HS_CONN_FINISHED)) return;
  hs_server_t *srv = c->srv;
  c->creq = NULL;
  if (status < 0) {
    srv->stats.connect_failed++;
    snprintf(c->reason_buf, sizeof c->reason_buf, "%s", uv_strerror(status));
    hs_log_conn(srv, c, HS_LOG_INFO, "connect to %s failed: %s", c->peer, c->reason_buf);
    hs_conn_abort(c, c->reason_buf);
    return;
  }
  c->flags &= ~HS_CONN_CONNECTING;
  c->last_read = c->last_write = uv_now(srv->loop);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getsockname(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
    fill_addr((struct sockaddr *)&ss, c->local, sizeof c->local, NULL, 0, NULL);
  len = sizeof ss;
  if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
    fill_addr((struct sockaddr *)&ss, c->peer, sizeof c->peer, c->peer_ip, sizeof c->peer_ip,
              &c->peer_port);
  hs_log_conn(srv, c, HS_LOG_DEBUG, "connected to %s", c->peer);
  hs_conn_start_reading(c);
  if (c->tls) {
    /* Ready once the handshake is done (conn.c), within the connect's
     * deadline. */
    hs_conn_tls_connect(c);
    return;
  }
  hs_outbound_ready(c);
}

void hs_outbound_ready(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  srv->stats.connects++;
  srv->ev->connected(c);
  if (c->flags & HS_CONN_FINISHED) return;
  if (hs_conn_buffered(c) || (c->flags & (HS_CONN_SHUTDOWN | HS_CONN_FLUSHING)))
    hs_server_mark_dirty(srv, c);
  hs_timers_update(c);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  hs_connect_req_t *r = hs_container_of(req, hs_connect_req_t, gai);
  hs_conn_t *c = r->c;
  if (!c || (c->flags & HS_CONN_FINISHED)) {
    free(r);
    uv_freeaddrinfo(res);
    return;
  }
  hs_server_t *srv = c->srv;
  int rc = status;
  if (rc == 0) {
    struct addrinfo *ai = res;
    while (ai && ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ai = ai->ai_next;
    rc = ai ? uv_tcp_connect(&r->req, &c->h.tcp, ai->ai_addr, connect_cb) : UV_EAI_NONAME;
  }
  uv_freeaddrinfo(res);
  if (rc == 0) return; /* connect_cb takes it from here */
  free(r);
  c->creq = NULL;
  srv->stats.connect_failed++;
  snprintf(c->reason_buf, sizeof c->reason_buf, "%s", uv_strerror(rc));
  hs_log_conn(srv, c, HS_LOG_INFO, "cannot resolve %s: %s", c->peer, c->reason_buf);
  hs_conn_abort(c, c->reason_buf);
}

/* Start an outbound TCP connection to host:port; its framing is f. The
 * connection is in the live list on return, connecting; events.connected or
 * events.closed tells how it went. NULL with err on a failure known at once
 * (UV_* text), or "stopping" while the server stops. */
hs_conn_t *hs_outbound_connect(hs_server_t *srv, const char *host, int port, uint64_t timeout,
                               const hs_framer_t *f, struct hs_tls_ctx *tls, const char *tls_name,
                               char *err, size_t errlen) {
  if (srv->stopping) {
    snprintf(err, errlen, "stopping");
    return NULL;
  }
  struct sockaddr_storage ss;
  int literal = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0 ||
                uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0;
  hs_connect_req_t *r = calloc(1, sizeof *r);
  hs_conn_t *c = r ? hs_conn_new(srv, NULL) : NULL;
  if (!c) {
    free(r);
    snprintf(err, errlen, "not enough memory");
    return NULL;
  }
  c->flags |= HS_CONN_OUTBOUND | HS_CONN_CONNECTING;
  if (tls && !(c->tls = hs_tls_new_client(tls, tls_name ? tls_name : host))) {
    free(r);
    snprintf(err, errlen, "not enough memory");
    hs_conn_discard(c);
    return NULL;
  }
  srv->outbound_mem += sizeof *c; /* given back when it is freed */
  c->framer = *f;
  snprintf(c->peer, sizeof c->peer, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
  snprintf(c->peer_ip, sizeof c->peer_ip, "%s", host);
  c->peer_port = port;
  r->c = c;
  int rc;
  if (literal) {
    rc = uv_tcp_connect(&r->req, &c->h.tcp, (struct sockaddr *)&ss, connect_cb);
  } else {
    char port_s[16];
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port_s, sizeof port_s, "%d", port);
    rc = uv_getaddrinfo(srv->loop, &r->gai, gai_cb, host, port_s, &hints);
  }
  if (rc != 0) {
    free(r);
    snprintf(err, errlen, "%s", uv_strerror(rc));
    hs_conn_discard(c);
    return NULL;
  }
  c->creq = r;
  TAILQ_INSERT_TAIL(&srv->conns, c, link); /* so a stop closes it too */
  c->connect_deadline = uv_now(srv->loop) + (timeout ? timeout : 1);
  hs_timers_update(c);
  return c;
}
