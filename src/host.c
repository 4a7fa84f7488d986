/* host.c: the Lua host layer's side of the door. The socket layer reports
 * events through hs_host_events; each becomes a protected call of a script
 * handler (script.c) or the resume of a handle coroutine (coro.c). */
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lwork.h"

/* Push the handler `name` for c and return 1, or push nothing and return 0.
 * Accepted connections use the module's handlers; an outbound connection
 * only the table given to hs.connect (none in coroutine style). */
int hs_host_handler(hs_server_t *srv, lua_State *L, hs_conn_t *c, const char *name) {
  if (!(c->flags & HS_CONN_OUTBOUND)) {
    if (!hs_script_get_handler(srv, name)) return 0;
    if (L != srv->lua.L) lua_xmove(srv->lua.L, L, 1);
    return 1;
  }
  if (c->lua.handlers_ref == HS_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua.handlers_ref);
  if (hs_rawfield(L, -1, name) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

/* handler(conn [, s]) for c, when the script has it. 1 when it ran. */
static int call_handler(hs_server_t *srv, hs_conn_t *c, const char *name, const char *s) {
  lua_State *L = srv->lua.L;
  if (!lua_checkstack(L, 4) || !hs_host_handler(srv, L, c, name)) return 0;
  hs_lconn_push(L, c);
  if (s) lua_pushstring(L, s);
  hs_script_call(srv, c, s ? 2 : 1, name);
  return 1;
}

static void opened(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  hs_lconn_new(srv, c);
  if (srv->lua.coro_style) {
    c->flags |= HS_CONN_PULL;
    hs_coro_start(srv, c);
  } else {
    call_handler(srv, c, "on_connect", NULL);
  }
}

static void connected(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  hs_conn_t *o = c->lua.owner;
  if (o) {
    if (o->lua.co && o->lua.wait == HS_WAIT_CONNECT && o->lua.wait_on == c &&
        lua_checkstack(o->lua.co, 1)) {
      hs_lconn_push(o->lua.co, c);
      hs_coro_resume(srv, o, 1);
    }
    return;
  }
  call_handler(srv, c, "on_connect", NULL);
}

/* A frame delivered inside a Lua call under way (from a C function the
 * script called), or from an outbound connection: the long way, leaving
 * the stack as it was. */
static int frame_alone(hs_conn_t *c, const hs_framer_t *f, const char *msg, size_t len) {
  hs_server_t *srv = c->srv;
  lua_State *L = srv->lua.L;
  if (!(c->flags & HS_CONN_OUTBOUND)) {
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.on_message_ref) != LUA_TFUNCTION) {
      lua_pop(L, 1);
      return 0; /* no on_message: the message is dropped */
    }
  } else if (!hs_host_handler(srv, L, c, "on_message")) {
    return 0;
  }
  hs_lconn_push(L, c);
  if (hs_lconn_push_frame(c, L, f, msg, len) != 0) {
    lua_pop(L, 2);
    return -1;
  }
  hs_script_call(srv, c, 2, "on_message");
  return 0;
}

static int frame(hs_conn_t *c, const hs_framer_t *f, const char *msg, size_t len) {
  hs_server_t *srv = c->srv;
  if (c->flags & HS_CONN_PULL) {
    hs_conn_t *o = hs_coro_reader(c);
    lua_State *co = o->lua.co;
    if (!co || o->lua.wait != HS_WAIT_READ || o->lua.wait_on != c) return -1;
    if (!lua_checkstack(co, 2) || hs_lconn_push_frame(c, co, f, msg, len) != 0) return -1;
    hs_coro_resume(srv, o, 1);
    return 0;
  }
  lua_State *L = srv->lua.L;
  if (!lua_checkstack(L, 8)) {
    hs_conn_abort(c, "out of memory");
    return -1;
  }
  /* The frames of one dispatch: the message handler, on_message and the
   * box are pushed for the first and stay on the stack until frames_done,
   * so each frame pushes copies. Only from the top, with no Lua call under
   * way. */
  if (srv->lua.batch != c) {
    if (srv->lua.batch || srv->lua.budget_depth > 0 || (c->flags & HS_CONN_OUTBOUND))
      return frame_alone(c, f, msg, len);
    lua_pushcfunction(L, hs_script_msgh);
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.on_message_ref) != LUA_TFUNCTION) {
      lua_pop(L, 2);
      return 0; /* no on_message: the message is dropped */
    }
    hs_lconn_push(L, c);
    srv->lua.batch = c;
    srv->lua.batch_top = lua_gettop(L);
  }
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  if (hs_lconn_push_frame(c, L, f, msg, len) != 0) {
    lua_pop(L, 2);
    return -1;
  }
  hs_script_call_msgh(srv, c, 2, "on_message", srv->lua.batch_top - 2);
  return 0;
}

/* The dispatch of c's frames ended: let go of what frame kept. */
static void frames_done(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  if (srv->lua.batch != c) return;
  lua_settop(srv->lua.L, srv->lua.batch_top - 3); /* msgh, on_message, box */
  srv->lua.batch = NULL;
}

static void read_failed(hs_conn_t *c, const char *why, const char *partial, size_t n) {
  hs_coro_fail_waiter(c->srv, c, why, partial, n, 1);
}

static int frame_error(hs_conn_t *c, const char *why) {
  return call_handler(c->srv, c, "on_frame_error", why);
}

static void drain(hs_conn_t *c) { call_handler(c->srv, c, "on_drain", NULL); }

static int timeout(hs_conn_t *c, hs_timeout_kind_t which) {
  hs_server_t *srv = c->srv;
  if (which == HS_TIMEOUT_ALARM) {
    if (c->lua.co && c->lua.wait == HS_WAIT_SLEEP && lua_checkstack(c->lua.co, 1)) {
      lua_pushboolean(c->lua.co, 1);
      hs_coro_resume(srv, c, 1);
    }
    return 1;
  }
  return call_handler(srv, c, "on_timeout", hs_timeout_name(which));
}

/* What a coroutine woken by a close hears: the peer's end as "closed", a
 * limit or a stop by its own reason. */
static const char *close_reason(const hs_conn_t *c) {
  const char *r = c->reason;
  if (!r || !strcmp(r, "eof") || !strcmp(r, "reset") || !strcmp(r, "closed")) return "closed";
  return r;
}

/* The connection is closed (from the before-sleep pass, once): wake
 * whoever waits on it, run on_close, cut the Lua box loose, and close the
 * outbound connections its coroutine made. */
static void closed(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  lua_State *L = srv->lua.L;
  const char *why = close_reason(c);
  hs_conn_t *o = c->lua.owner;
  if (o) {
    if (o->lua.wait_on == c) {
      const char *p;
      size_t n;
      hs_conn_take_partial(c, &p, &n);
      hs_coro_fail_waiter(srv, c, why, p, n, o->lua.wait == HS_WAIT_READ);
    }
    LIST_REMOVE(c, lua.sibling); /* leave the owner's children */
    c->lua.owner = NULL;
  }
  lua_State *co = c->lua.co;
  if (co && c->lua.wait != HS_WAIT_NONE && lua_checkstack(co, 3)) {
    int read = c->lua.wait == HS_WAIT_READ;
    lua_pushnil(co);
    lua_pushstring(co, why);
    if (read) {
      const char *p = "";
      size_t n = 0;
      if (c->lua.wait_on == c) hs_conn_take_partial(c, &p, &n);
      lua_pushlstring(co, p, n);
    }
    hs_coro_resume(srv, c, read ? 3 : 2);
  }
  if (c->lua.co) hs_coro_drop(srv, c); /* it waits again: abandon it */
  /* Work that still names it (no coroutine was left to wake). */
  if (c->lua.work) {
    hs_work_detach(c->lua.work);
    c->lua.work = NULL;
  }
  call_handler(srv, c, "on_close", c->reason);
  hs_lconn_clear(srv, c);
  if (c->lua.handlers_ref != HS_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, c->lua.handlers_ref);
    c->lua.handlers_ref = HS_NOREF;
  }
  /* Outbound connections made by this one's coroutine end with it. */
  hs_conn_t *k;
  while ((k = LIST_FIRST(&c->lua.children)) != NULL) {
    LIST_REMOVE(k, lua.sibling);
    k->lua.owner = NULL;
    hs_conn_unwant(k);
    hs_conn_close(k, "owner closed");
  }
}

static void before_sleep(hs_server_t *srv) {
  if (srv->lua.rollback_pending) {
    srv->lua.rollback_pending = 0;
    hs_script_reload(srv, "rollback");
  }
  if (srv->lua.reload_trigger) {
    const char *t = srv->lua.reload_trigger;
    srv->lua.reload_trigger = NULL;
    hs_script_reload(srv, t);
  }
  if (srv->lua.exit_requested) {
    srv->lua.exit_requested = 0;
    hs_server_begin_stop(srv, "os.exit");
  }
}

static void stopping(hs_server_t *srv) {
  if (hs_script_get_handler(srv, "on_shutdown")) hs_script_call(srv, NULL, 0, "on_shutdown");
  hs_lhotsock_stop_timers(srv);
}

static void hangup(hs_server_t *srv) { hs_script_request_reload(srv, "SIGHUP"); }

static void report(hs_server_t *srv) { hs_lhotsock_log_stats(srv); }

static void closing(hs_server_t *srv) {
  hs_lhotsock_stop_timers(srv);
  hs_work_close_all(srv); /* kill programs still running, close their handles */
  hs_watch_stop(srv);
  hs_worker_close(srv);
}

void hs_host_request_exit(hs_server_t *srv, int code) {
  srv->exit_code = code;
  srv->lua.exit_requested = 1;
  hs_server_wake(srv);
}

const hs_events_t hs_host_events = {
    .opened = opened,
    .connected = connected,
    .frame = frame,
    .frames_done = frames_done,
    .read_failed = read_failed,
    .frame_error = frame_error,
    .drain = drain,
    .timeout = timeout,
    .closed = closed,
    .before_sleep = before_sleep,
    .stopping = stopping,
    .hangup = hangup,
    .report = report,
    .closing = closing,
    .reload = hs_script_request_reload,
    .conn_state = hs_ladmin_conn_state,
    .conn_show = hs_ladmin_conn_show,
    .eval = hs_ladmin_eval,
    .lua_memory = hs_ladmin_lua_memory,
};
