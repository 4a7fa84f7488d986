/* timers.c: a connection's deadlines (idle, read, write, frame, first byte,
 * the host's alarm, a connect, a lingering close) share one uv_timer, armed
 * for the earliest; it fires, does what is due and re-arms itself. Socket
 * layer: what the script should hear of goes through srv->ev->timeout. */
#include <stdio.h>
#include <string.h>

#include "hotsock.h"
#include "tls.h"

/* What is due when, beyond the timeouts the script can see. */
typedef enum deadline {
  DL_NONE = -1,
  DL_CONNECT = HS_TIMEOUT_ALARM + 1,
  DL_LINGER,
  DL_HANDSHAKE, /* a TLS handshake or a PROXY header did not complete */
} deadline_t;

static const char *const timeout_names[] = {"idle",  "read",       "write",
                                            "frame", "first_byte", "alarm"};

const char *hs_timeout_name(hs_timeout_kind_t k) {
  return (unsigned)k < sizeof timeout_names / sizeof *timeout_names ? timeout_names[k] : "?";
}

static void timer_cb(uv_timer_t *t);

/* The earliest deadline of c (uv_now ms; 0 none) and which it is. */
static uint64_t deadline_of(const hs_conn_t *c, int *which) {
  uint64_t best = 0;
  int w = DL_NONE;
#define CONSIDER(cond, at, kind)                         \
  do {                                                   \
    if (cond) {                                          \
      uint64_t t_ = (at);                                \
      if (best == 0 || t_ < best) best = t_, w = (kind); \
    }                                                    \
  } while (0)
  if (c->flags & HS_CONN_CONNECTING) {
    *which = DL_CONNECT;
    return c->connect_deadline;
  }
  uint64_t act = c->last_read > c->last_write ? c->last_read : c->last_write;
  int reading = !(c->flags & (HS_CONN_EOF | HS_CONN_PAUSED));
  if (c->flags & HS_CONN_CLOSING) {
    /* Only the output still draining, or a linger, can time out now. */
    CONSIDER(c->to.write && hs_conn_buffered(c) > 0, c->last_write + c->to.write, HS_TIMEOUT_WRITE);
    /* The linger runs from when the last output left, so a slow reader
     * still gets all of it (the write timeout bounds that). */
    if ((c->flags & HS_CONN_LINGER) && hs_conn_buffered(c) == 0) {
      uint64_t at = c->last_write + HS_LINGER_MS;
      if (at < c->linger_until) at = c->linger_until;
      CONSIDER(1, at, DL_LINGER);
    }
    *which = w;
    return best;
  }
  if ((c->flags & HS_CONN_PROXY_WAIT) || (c->tls && !c->tls->done)) {
    /* Only the handshake's deadline: an outbound one's is its connect's. */
    uint64_t at = (c->flags & HS_CONN_OUTBOUND) ? c->connect_deadline : c->tls_deadline;
    *which = at ? DL_HANDSHAKE : DL_NONE;
    return at;
  }
  CONSIDER(c->to.idle, act + c->to.idle, HS_TIMEOUT_IDLE);
  CONSIDER(c->to.read && reading, c->last_read + c->to.read, HS_TIMEOUT_READ);
  CONSIDER(c->to.write && hs_conn_buffered(c) > 0, c->last_write + c->to.write, HS_TIMEOUT_WRITE);
  CONSIDER(c->to.frame && c->frame_start, c->frame_start + c->to.frame, HS_TIMEOUT_FRAME);
  CONSIDER(c->to.first_byte && c->bytes_in == 0 && c->listener, c->opened_at + c->to.first_byte,
           HS_TIMEOUT_FIRST_BYTE);
  CONSIDER(c->alarm_at, c->alarm_at, HS_TIMEOUT_ALARM);
#undef CONSIDER
  *which = w;
  return best;
}

/* Arm the timer for the earliest deadline. Activity that only moves deadlines
 * later leaves the timer alone: it fires early and re-arms, which is cheaper
 * than restarting a timer on every read. */
void hs_timers_update(hs_conn_t *c) {
  int which;
  if (c->flags & HS_CONN_FINISHED) return;
  uint64_t due = deadline_of(c, &which);
  if (due == 0) return; /* a running timer finds nothing due and stops */
  uint64_t now = uv_now(c->srv->loop);
  if (uv_is_active((uv_handle_t *)&c->timer)) {
    uint64_t at = uv_timer_get_due_in(&c->timer) + now;
    if (at <= due) return;
  }
  uv_timer_start(&c->timer, timer_cb, due > now ? due - now : 0, 0);
}

void hs_timers_set_alarm(hs_conn_t *c, uint64_t at) {
  c->alarm_at = at;
  if (at) hs_timers_update(c);
}

static uint64_t setting(const hs_conn_t *c, hs_timeout_kind_t k) {
  switch (k) {
  case HS_TIMEOUT_IDLE: return c->to.idle;
  case HS_TIMEOUT_READ: return c->to.read;
  case HS_TIMEOUT_WRITE: return c->to.write;
  case HS_TIMEOUT_FRAME: return c->to.frame;
  case HS_TIMEOUT_FIRST_BYTE: return c->to.first_byte;
  default: return 0;
  }
}

static void timer_cb(uv_timer_t *t) {
  hs_conn_t *c = hs_container_of(t, hs_conn_t, timer);
  hs_server_t *srv = c->srv;
  uint64_t now = uv_now(srv->loop);
  int which;
  uint64_t due = deadline_of(c, &which);
  if (due == 0) return;
  if (due > now) {
    uv_timer_start(&c->timer, timer_cb, due - now, 0);
    return;
  }
  if (which == DL_LINGER) {
    hs_conn_abort(c, c->reason); /* the peer kept sending, or never closed */
    return;
  }
  if (which == DL_HANDSHAKE && (c->flags & HS_CONN_OUTBOUND)) {
    srv->stats.connect_failed++;
    hs_log_conn(srv, c, HS_LOG_INFO, "TLS handshake with %s timed out", c->peer);
    hs_conn_abort(c, "connect timeout (TLS handshake)");
    return;
  }
  if (which == DL_HANDSHAKE && (c->flags & HS_CONN_PROXY_WAIT)) {
    srv->stats.timeouts++;
    srv->stats.proxy_failures++;
    hs_log_conn(srv, c, HS_LOG_INFO, "PROXY header from %s timed out; closing", c->peer);
    hs_conn_abort(c, "PROXY header timeout");
    return;
  }
  if (which == DL_HANDSHAKE) {
    srv->stats.timeouts++;
    srv->stats.tls_handshake_failures++;
    hs_log_conn(srv, c, HS_LOG_INFO, "TLS handshake from %s timed out; closing", c->peer);
    hs_conn_abort(c, "handshake timeout");
    return;
  }
  if (which == DL_CONNECT) {
    srv->stats.connect_failed++;
    hs_log_conn(srv, c, HS_LOG_INFO, "connect to %s timed out", c->peer);
    hs_conn_abort(c, "connect timeout");
    return;
  }
  hs_timeout_kind_t k = (hs_timeout_kind_t)which;
  if (k == HS_TIMEOUT_ALARM) {
    c->alarm_at = 0;
    srv->ev->timeout(c, k);
  } else {
    srv->stats.timeouts++;
    /* Restart the clock of what fired, so it does not fire again at once. */
    if (k == HS_TIMEOUT_FRAME)
      c->frame_start = now;
    else if (k == HS_TIMEOUT_WRITE)
      c->last_write = now;
    else if (k == HS_TIMEOUT_FIRST_BYTE)
      c->opened_at = now;
    else
      c->last_read = c->last_write = now;
    if ((c->flags & HS_CONN_WANT) && k != HS_TIMEOUT_WRITE) {
      /* A pull read that waited too long fails, with what had arrived. */
      const char *p;
      size_t n;
      c->flags &= ~HS_CONN_WANT;
      hs_conn_take_partial(c, &p, &n);
      srv->ev->read_failed(c, "timeout", p, n);
    } else if ((c->flags & HS_CONN_ADMIN) || !srv->ev->timeout(c, k)) {
      snprintf(c->reason_buf, sizeof c->reason_buf, "%s timeout", hs_timeout_name(k));
      hs_log_conn(srv, c, HS_LOG_INFO, "%s timeout (%llu ms); closing", hs_timeout_name(k),
                  (unsigned long long)setting(c, k));
      if (k == HS_TIMEOUT_WRITE)
        hs_conn_abort(c, c->reason_buf);
      else
        hs_conn_close(c, c->reason_buf);
    }
  }
  hs_timers_update(c);
}
