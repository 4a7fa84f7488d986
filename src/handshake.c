/* handshake.c: what comes before a connection's first frame (socket
 * layer, no Lua): the PROXY protocol header a balancer sends first, the TLS
 * handshake (of an accepted client, of an outbound connection, after a
 * STARTTLS), and health checks answered without the host. conn.c's read
 * path hands bytes here until the connection is ready for framing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "conn_int.h"
#include "proxy.h"
#include "tls.h"

/* A TLS handshake did not complete: count and log it, and close the
 * connection (an alert OpenSSL queued is sent first). An outbound one is a
 * failed connect, and why is its reason. */
void hs_conn_tls_failed(hs_conn_t *c, const char *why) {
  hs_server_t *srv = c->srv;
  if ((c->flags & HS_CONN_OUTBOUND) && c->tls->upgraded) {
    snprintf(c->reason_buf, sizeof c->reason_buf, "%s", why);
    hs_log_conn(srv, c, HS_LOG_INFO, "STARTTLS with %s failed: %s", c->peer, why);
    hs_conn_close(c, c->reason_buf);
    return;
  }
  if (c->flags & HS_CONN_OUTBOUND) {
    srv->stats.connect_failed++;
    snprintf(c->reason_buf, sizeof c->reason_buf, "%s", why);
    hs_log_conn(srv, c, HS_LOG_INFO, "TLS connect to %s failed: %s", c->peer, why);
    hs_conn_close(c, c->reason_buf);
    return;
  }
  srv->stats.tls_handshake_failures++;
  hs_log_conn(srv, c, HS_LOG_INFO, "TLS handshake from %s failed: %s; closing", c->peer, why);
  hs_conn_close(c, "TLS handshake failed");
}

/* A handshake just completed: count it, then tell the host what it means
 * for this connection (a new client, an outbound connection ready, or, after
 * STARTTLS, nothing: the next frames are simply decrypted ones). 0 to go on,
 * -1 when the host closed c. */
static int tls_done(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  hs_tls_info_t info;
  hs_tls_get_info(c->tls, &info);
  hs_log_conn(srv, c, HS_LOG_DEBUG, "TLS handshake done (%s, %s%s)", info.version, info.cipher,
              info.resumed ? ", resumed" : "");
  if (c->flags & HS_CONN_OUTBOUND) {
    if (!c->tls->upgraded) hs_outbound_ready(c); /* else it was connected in plaintext */
    hs_timers_update(c);
    return hs_conn_is_open(c) ? 0 : -1;
  }
  srv->stats.tls_handshakes++;
  if (info.resumed) srv->stats.tls_resumed++;
  if (c->flags & HS_CONN_UNSEEN) {
    c->flags &= ~HS_CONN_UNSEEN;
    srv->ev->opened(c);
    if (!hs_conn_is_open(c)) return -1;
  }
  hs_timers_update(c); /* the connection's own deadlines from now on */
  return 0;
}

/* Ciphertext read on a TLS connection: drive the handshake, then decrypt
 * into c->in for the framer. 0 when there is plaintext input or an EOF to
 * dispatch; -1 when there is nothing to dispatch (or c closed). */
int hs_conn_tls_input(hs_conn_t *c, const char *p, size_t n) {
  hs_server_t *srv = c->srv;
  char err[256];
  if (hs_tls_feed(c->tls, p, n) != 0) {
    hs_conn_abort(c, "out of memory");
    return -1;
  }
  if (!c->tls->done) {
    int r = hs_tls_handshake(c->tls, err, sizeof err);
    /* The handshake's next flight leaves now, not at the end of the loop's
     * pass: the peer waits for it (and other handshakes' signing would
     * hold it). An alert or the last flight goes the usual way. */
    if (hs_tls_pending(c->tls)) {
      if (r == HS_TLS_OK)
        hs_conn_flush(c);
      else
        hs_server_mark_dirty(srv, c);
    }
    if (r == HS_TLS_ERROR) {
      hs_conn_tls_failed(c, err);
      return -1;
    }
    if (r != HS_TLS_DONE || tls_done(c) != 0) return -1;
  }
  size_t before = hs_buf_len(&c->in);
  int r = hs_tls_read(c->tls, &c->in, &srv->pool, err, sizeof err);
  if (c->tracer && hs_buf_len(&c->in) > before)
    hs_admin_trace(c, 0, hs_buf_peek(&c->in) + before, hs_buf_len(&c->in) - before);
  if (hs_tls_pending(c->tls)) hs_server_mark_dirty(srv, c);
  if (r == HS_TLS_ERROR) {
    hs_log_conn(srv, c, HS_LOG_INFO, "%s; closing", err);
    hs_conn_abort(c, "TLS error");
    return -1;
  }
  if (r == HS_TLS_CLOSED) { /* close_notify: the peer's end of the stream */
    c->flags |= HS_CONN_EOF;
    hs_conn_stop_reading(c);
  }
  return 0;
}

/* Bytes before the PROXY header is complete: gather them in c->in until
 * the header is whole, then take the client's address from it and carry
 * on with what follows (a TLS handshake, or frames for a new client). 0
 * when there is plaintext input to dispatch; -1 when there is nothing to
 * dispatch (or c closed). */
int hs_conn_proxy_input(hs_conn_t *c, const char *p, size_t n) {
  hs_server_t *srv = c->srv;
  hs_proxy_t h;
  const char *why;
  if (hs_buf_append(&c->in, p, n, &srv->pool) != 0) {
    hs_conn_abort(c, "out of memory");
    return -1;
  }
  long r = hs_proxy_parse(hs_buf_peek(&c->in), hs_buf_len(&c->in), &h, &why);
  if (r == HS_PROXY_MORE) return -1;
  if (r == HS_PROXY_BAD) {
    srv->stats.proxy_failures++;
    hs_log_conn(srv, c, HS_LOG_INFO, "PROXY header from %s refused: %s; closing", c->peer, why);
    hs_conn_abort(c, "bad PROXY header");
    return -1;
  }
  if (!(c->proxy_hdr = malloc((size_t)r))) {
    hs_conn_abort(c, "out of memory");
    return -1;
  }
  memcpy(c->proxy_hdr, hs_buf_peek(&c->in), (size_t)r);
  c->proxy_len = (size_t)r;
  snprintf(c->proxy_peer, sizeof c->proxy_peer, "%s",
           (c->flags & HS_CONN_UNIX) ? c->listener->path : c->peer);
  if (!h.local) {
    c->flags |= HS_CONN_PROXIED;
    snprintf(c->peer, sizeof c->peer, h.family == 6 ? "[%s]:%d" : "%s:%d", h.src_ip, h.src_port);
    snprintf(c->peer_ip, sizeof c->peer_ip, "%s", h.src_ip);
    c->peer_port = h.src_port;
  }
  hs_log_conn(srv, c, HS_LOG_DEBUG, "PROXY v%d: %s via %s", h.version, c->peer, c->proxy_peer);
  hs_buf_consume(&c->in, (size_t)r, &srv->pool);
  c->flags &= ~HS_CONN_PROXY_WAIT;
  if (c->tls) {
    /* What follows the header is the client's TLS handshake. */
    size_t rest = hs_buf_len(&c->in);
    if (rest && hs_tls_feed(c->tls, hs_buf_peek(&c->in), rest) != 0) {
      hs_conn_abort(c, "out of memory");
      return -1;
    }
    hs_buf_consume(&c->in, rest, &srv->pool);
    return hs_conn_tls_input(c, NULL, 0);
  }
  c->flags &= ~HS_CONN_UNSEEN;
  srv->ev->opened(c);
  if (!hs_conn_is_open(c)) return -1;
  hs_timers_update(c);
  return 0;
}

/* A health check: answered at once, then closed the lingering way (the
 * checker's request is read and dropped, so the answer is not lost to a
 * reset). It never reaches the host, nor the client counters. */
void hs_conn_health(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  static const char up[] =
      "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
      "Content-Length: 3\r\nConnection: close\r\n\r\nup\n";
  static const char down[] =
      "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
      "Content-Length: 9\r\nConnection: close\r\n\r\ndraining\n";
  c->flags |= HS_CONN_HEALTH | HS_CONN_UNSEEN;
  TAILQ_INSERT_TAIL(&srv->conns, c, link);
  srv->stats.health_checks++;
  const char *msg = srv->draining ? down : up;
  size_t len = srv->draining ? sizeof down - 1 : sizeof up - 1;
  if (hs_conn_send(c, msg, len) != 0) {
    hs_conn_abort(c, "out of memory");
    return;
  }
  hs_conn_linger_close(c, "health check");
}

/* Start the client side of a handshake: the ClientHello goes out. */
int hs_conn_tls_connect(hs_conn_t *c) {
  char err[256];
  if (hs_tls_handshake(c->tls, err, sizeof err) == HS_TLS_ERROR) {
    hs_conn_tls_failed(c, err);
    return -1;
  }
  hs_server_mark_dirty(c->srv, c);
  hs_timers_update(c);
  return 0;
}

int hs_conn_starttls(hs_conn_t *c, struct hs_tls_ctx *ctx, const char *name, size_t *discarded,
                     char *err, size_t errlen) {
  hs_server_t *srv = c->srv;
  int client = hs_tls_ctx_is_client(ctx);
  *discarded = 0;
  if (!hs_conn_is_open(c) || (c->flags & (HS_CONN_CLOSING | HS_CONN_SHUTDOWN))) {
    snprintf(err, errlen, "the connection is closing");
    return -1;
  }
  if (c->tls) {
    snprintf(err, errlen, "the connection is already TLS");
    return -1;
  }
  if (c->pipe_to || c->pipe_from) {
    snprintf(err, errlen, "a piped connection cannot start TLS");
    return -1;
  }
  if (client != ((c->flags & HS_CONN_OUTBOUND) != 0)) {
    snprintf(err, errlen,
             client ? "client TLS settings on an accepted connection"
                    : "server TLS settings on an outbound connection");
    return -1;
  }
  hs_tls_t *t = client ? hs_tls_new_client(ctx, name) : hs_tls_new(ctx);
  if (!t) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  /* What the script sent before (its "go ahead") leaves in plaintext, ahead
   * of the handshake; what the peer sent after its STARTTLS and before the
   * handshake was not encrypted, so it is dropped (CVE-2011-0411). */
  if (hs_buf_len(&c->out) &&
      hs_buf_append(&t->cout, hs_buf_peek(&c->out), hs_buf_len(&c->out), &srv->pool) != 0) {
    hs_tls_free(t, &srv->pool);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  hs_buf_consume(&c->out, hs_buf_len(&c->out), &srv->pool);
  *discarded = hs_conn_input_len(c);
  hs_conn_consume(c, *discarded);
  c->skip = 0;
  c->tls = t;
  t->upgraded = !(c->flags & (HS_CONN_CONNECTING | HS_CONN_UNSEEN));
  uint64_t to = c->to.first_byte ? c->to.first_byte : c->to.frame;
  c->tls_deadline = to ? uv_now(srv->loop) + to : 0;
  if (*discarded)
    hs_log_conn(srv, c, HS_LOG_INFO,
                "STARTTLS: %zu byte(s) sent in plaintext after it were discarded", *discarded);
  if (client) {
    if (c->flags & HS_CONN_CONNECTING) return 0; /* connect_cb starts the handshake */
    c->connect_deadline = c->tls_deadline;       /* the handshake's, for timers.c */
    hs_conn_tls_connect(c); /* a failure closes c, and the script hears of it so */
    return 0;
  }
  hs_server_mark_dirty(srv, c);
  hs_timers_update(c);
  return 0;
}
