/* timers.c: a connection's deadlines (idle, read, write, frame, a
 * coroutine's sleep, a connect, a lingering close) share one uv_timer, armed
 * for the earliest; it fires, does what is due and re-arms itself. */
#include <stdio.h>
#include <string.h>

#include "hotsock.h"

static void timer_cb(uv_timer_t *t);

static uint64_t deadline_of(const hs_conn_t *c, const char **which) {
  uint64_t best = 0;
  const char *w = NULL;
#define CONSIDER(cond, at, name)             \
  do {                                       \
    if (cond) {                              \
      uint64_t t_ = (at);                    \
      if (best == 0 || t_ < best) best = t_, w = (name); \
    }                                        \
  } while (0)
  if (c->flags & HS_CONN_CONNECTING) {
    if (which) *which = "connect";
    return c->connect_deadline;
  }
  uint64_t act = c->last_read > c->last_write ? c->last_read : c->last_write;
  int reading = !(c->flags & (HS_CONN_EOF | HS_CONN_PAUSED));
  if (c->flags & HS_CONN_CLOSING) {
    /* Only the output still draining, or a linger, can time out now. */
    if (c->to.write && hs_conn_buffered(c) > 0) best = c->last_write + c->to.write, w = "write";
    /* The linger runs from when the last output left, so a slow reader
     * still gets all of it (the write timeout bounds that). */
    if ((c->flags & HS_CONN_LINGER) && hs_conn_buffered(c) == 0) {
      uint64_t at = c->last_write + HS_LINGER_MS;
      if (at < c->linger_until) at = c->linger_until;
      if (best == 0 || at < best) best = at, w = "linger";
    }
    if (which) *which = w;
    return best;
  }
  CONSIDER(c->to.idle, act + c->to.idle, "idle");
  CONSIDER(c->to.read && reading, c->last_read + c->to.read, "read");
  CONSIDER(c->to.write && hs_conn_buffered(c) > 0, c->last_write + c->to.write, "write");
  CONSIDER(c->to.frame && c->frame_start, c->frame_start + c->to.frame, "frame");
  CONSIDER(c->wait == HS_WAIT_SLEEP, c->sleep_until, "sleep");
#undef CONSIDER
  if (which) *which = w;
  return best;
}

/* Arm the timer for the earliest deadline. Activity that only moves deadlines
 * later leaves the timer alone: it fires early and re-arms, which is cheaper
 * than restarting a timer on every read. */
void hs_conn_timers_update(hs_conn_t *c) {
  if (c->flags & (HS_CONN_FINISHED)) return;
  uint64_t due = deadline_of(c, NULL);
  if (due == 0) return; /* a running timer finds nothing due and stops */
  uint64_t now = uv_now(c->srv->loop);
  if (uv_is_active((uv_handle_t *)&c->timer)) {
    uint64_t at = uv_timer_get_due_in(&c->timer) + now;
    if (at <= due) return;
  }
  uv_timer_start(&c->timer, timer_cb, due > now ? due - now : 0, 0);
}

static void timer_cb(uv_timer_t *t) {
  hs_conn_t *c = hs_container_of(t, hs_conn_t, timer);
  hs_server_t *srv = c->srv;
  uint64_t now = uv_now(srv->loop);
  const char *which;
  uint64_t due = deadline_of(c, &which);
  if (due == 0) return;
  if (due > now) {
    uv_timer_start(&c->timer, timer_cb, due - now, 0);
    return;
  }
  if (strcmp(which, "linger") == 0) {
    hs_conn_abort(c, c->reason); /* the peer kept sending, or never closed */
    return;
  }
  if (strcmp(which, "connect") == 0) {
    srv->stats.connect_failed++;
    hs_log_conn(srv, c, HS_LOG_INFO, "connect to %s timed out", c->peer);
    hs_conn_abort(c, "connect timeout");
    return;
  }
  if (strcmp(which, "sleep") == 0) {
    c->wait = HS_WAIT_NONE;
    lua_pushboolean(c->co, 1);
    hs_script_resume(srv, c, 1);
  } else {
    srv->stats.timeouts++;
    /* Restart the clock of what fired, so it does not fire again at once. */
    if (which[0] == 'f') c->frame_start = now;
    else if (which[0] == 'w') c->last_write = now;
    else c->last_read = c->last_write = now;
    if ((c->flags & HS_CONN_CORO) && c->wait == HS_WAIT_READ && which[0] != 'w') {
      hs_conn_wake_reader(c, "timeout");
    } else if (hs_conn_handler(c, "on_timeout")) {
      hs_lconn_push(srv, c);
      lua_pushstring(srv->L, which);
      hs_script_call(srv, c, 2, "on_timeout");
    } else {
      snprintf(c->reason_buf, sizeof c->reason_buf, "%s timeout", which);
      hs_log_conn(srv, c, HS_LOG_INFO, "%s timeout (%llu ms); closing", which,
                  (unsigned long long)(which[0] == 'i'   ? c->to.idle
                                       : which[0] == 'r' ? c->to.read
                                       : which[0] == 'w' ? c->to.write
                                                         : c->to.frame));
      if (which[0] == 'w')
        hs_conn_abort(c, c->reason_buf);
      else
        hs_conn_close(c, c->reason_buf);
    }
  }
  if (!(c->flags & HS_CONN_FINISHED)) hs_conn_timers_update(c);
}

