/* coro.c: the handle coroutines of coroutine-style scripts. Each accepted
 * connection gets one; it waits in conn:receive, hs.sleep, hs.connect or on
 * work (hs.exec, hs.fs.*, hs.resolve: lwork.c), and only the host resumes
 * it, when what it waits for happened. A coroutine the
 * host waits on cannot be resumed or closed by Lua code (coroutine.resume and
 * coroutine.close refuse it), and the host never resumes or resets one that
 * runs. Outbound connections its coroutine made are its children: it reads
 * from them with receive, and they close with it. */
#include <string.h>

#include <lauxlib.h>

#include "admin.h"
#include "host.h"
#include "lwork.h"

/* A handle coroutine's extra space names its connection (NULL in every
 * other thread: new threads copy the main thread's, which is NULL). */
hs_conn_t *hs_coro_conn(lua_State *L) { return *(hs_conn_t **)lua_getextraspace(L); }

hs_conn_t *hs_coro_reader(hs_conn_t *c) { return c->lua.owner ? c->lua.owner : c; }

/* Run o's coroutine with nargs values on its stack until it yields or ends,
 * under the handler budget, and deal with how it stopped. */
static void run(hs_server_t *srv, hs_conn_t *o, int nargs) {
  lua_State *L = srv->lua.L, *co = o->lua.co;
  int nres;
  hs_conn_t *prev = srv->lua.current;
  srv->lua.current = o;
  o->lua.running = 1;
  uint64_t t0 = srv->admin ? uv_hrtime() : 0; /* for /metrics */
  hs_script_budget_start(srv, srv->limits.handler_budget);
  lua_State *prev_co = hs_script_watch_co(srv, co);
  int st = lua_resume(co, L, nargs, &nres);
  hs_script_watch_co(srv, prev_co);
  int tripped = hs_script_budget_stop(srv);
  if (t0) hs_admin_observe_handler(srv, "handle", uv_hrtime() - t0);
  o->lua.running = 0;
  srv->lua.current = prev;
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    if (o->lua.wait == HS_WAIT_NONE) {
      srv->stats.handler_errors++;
      hs_log_conn(srv, o, HS_LOG_ERROR,
                  "handle yielded without waiting on anything (a bare coroutine.yield?); "
                  "closing this connection");
      hs_coro_drop(srv, o);
      if (hs_conn_is_open(o)) hs_conn_close(o, "handler error");
    }
    return;
  }
  if (st == LUA_OK && !tripped) {
    lua_settop(co, 0);
    hs_coro_drop(srv, o);
    if (hs_conn_is_open(o)) hs_conn_close(o, "closed");
    return;
  }
  if (st == LUA_OK) { /* it returned, but over budget (see hs_script_call) */
    lua_settop(co, 0);
    lua_pushliteral(co, "handler exceeded its time budget");
    st = LUA_ERRRUN;
  }
  const char *msg = lua_tostring(co, -1);
  luaL_traceback(L, co, msg ? msg : "(error object is not a string)", 0);
  hs_coro_drop(srv, o);
  hs_script_handler_failed(srv, o, "handle", st, tripped);
  if (hs_conn_is_open(o)) hs_conn_close(o, "handler error");
}

/* Start handle(conn) for c in a new coroutine. 0, or -1 when there was no
 * memory for it (c is closed). */
int hs_coro_start(hs_server_t *srv, hs_conn_t *c) {
  lua_State *L = srv->lua.L;
  if (!lua_checkstack(L, 4)) {
    hs_conn_abort(c, "out of memory");
    return -1;
  }
  if (!hs_script_get_handler(srv, "handle")) { /* the script removed it */
    srv->stats.handler_errors++;
    hs_log_conn(srv, c, HS_LOG_ERROR, "the module has no handle function any more; closing");
    hs_conn_close(c, "handler error");
    return -1;
  }
  lua_State *co = lua_newthread(L);
  c->lua.co = co;
  c->lua.co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  *(hs_conn_t **)lua_getextraspace(co) = c;
  lua_xmove(L, co, 1);
  hs_lconn_push(co, c);
  run(srv, c, 1);
  return 0;
}

/* After a wait: the host resumed us (running is set), or Lua code did
 * through a path the guards below do not cover. */
static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  hs_conn_t *o = hs_coro_conn(L);
  (void)status;
  if (!o || !o->lua.running)
    return luaL_error(L, "a handle coroutine waiting in hotsock was resumed by Lua code");
  return lua_gettop(L) - (int)ctx;
}

int hs_coro_wait(lua_State *L, hs_conn_t *o, hs_wait_t w, hs_conn_t *on) {
  if (!lua_isyieldable(L)) return luaL_error(L, "cannot wait here (not yieldable)");
  o->lua.wait = w;
  o->lua.wait_on = on;
  int base = lua_gettop(L);
  return lua_yieldk(L, 0, (lua_KContext)base, wait_k);
}

void hs_coro_resume(hs_server_t *srv, hs_conn_t *o, int nargs) {
  lua_State *co = o->lua.co;
  if (!co || o->lua.running || o->lua.wait == HS_WAIT_NONE || lua_status(co) != LUA_YIELD) {
    if (co) lua_pop(co, nargs); /* nothing of ours waits: never resume it */
    return;
  }
  /* Woken for another reason than a frame (a close, a timeout): its
   * connection no longer waits for one. */
  if (o->lua.wait == HS_WAIT_READ && o->lua.wait_on) hs_conn_unwant(o->lua.wait_on);
  /* Work it waited for (still set only when woken by something else than
   * its end): that end will be told to nobody. */
  if (o->lua.work) {
    hs_work_detach(o->lua.work);
    o->lua.work = NULL;
  }
  o->lua.wait = HS_WAIT_NONE;
  o->lua.wait_on = NULL;
  run(srv, o, nargs);
}

void hs_coro_fail_waiter(hs_server_t *srv, hs_conn_t *c, const char *why, const char *partial,
                         size_t n, int with_partial) {
  hs_conn_t *o = hs_coro_reader(c);
  lua_State *co = o->lua.co;
  if (!co || o->lua.wait == HS_WAIT_NONE || o->lua.wait_on != c || o->lua.running) return;
  if (!lua_checkstack(co, 3)) return;
  lua_pushnil(co);
  lua_pushstring(co, why);
  if (with_partial) lua_pushlstring(co, partial ? partial : "", n);
  hs_coro_resume(srv, o, with_partial ? 3 : 2);
}

void hs_coro_drop(hs_server_t *srv, hs_conn_t *o) {
  lua_State *co = o->lua.co;
  if (!co || o->lua.running) return;
  *(hs_conn_t **)lua_getextraspace(co) = NULL;
  o->lua.co = NULL;
  if (o->lua.work) { /* abandoned while waiting on work: nobody hears of its end */
    hs_work_detach(o->lua.work);
    o->lua.work = NULL;
  }
  o->lua.wait = HS_WAIT_NONE;
  o->lua.wait_on = NULL;
  lua_State *L = srv->lua.L;
  /* Stopped by the budget: its hooks stay off, and its <close> handlers
   * would each be stopped at their first instruction (budget.c). */
  if (hs_script_stopped(L, co)) {
    luaL_unref(L, LUA_REGISTRYINDEX, o->lua.co_ref);
    o->lua.co_ref = HS_NOREF;
    return;
  }
  /* Pending to-be-closed variables run here: under the budget, like any
   * script code. */
  hs_conn_t *prev = srv->lua.current;
  /* A coroutine that died of an error keeps that error, and resetting it
   * returns it again: only a different one is a <close> handler's own. */
  int st0 = lua_status(co), died = st0 != LUA_OK && st0 != LUA_YIELD;
  if (died && lua_checkstack(L, 2) && lua_gettop(co) > 0) {
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1);
  } else {
    died = 0;
  }
  srv->lua.current = o;
  hs_script_budget_start(srv, srv->limits.handler_budget);
  lua_State *prev_co = hs_script_watch_co(srv, co);
  int st = lua_resetthread(co);
  hs_script_watch_co(srv, prev_co);
  int tripped = hs_script_budget_stop(srv);
  srv->lua.current = prev;
  if (died) {
    if (st != LUA_OK && !tripped && lua_gettop(co) > 0) {
      lua_xmove(co, L, 1);
      if (lua_rawequal(L, -1, -2)) st = LUA_OK; /* the same error: logged already */
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (st != LUA_OK) {
    srv->stats.handler_errors++;
    if (tripped) srv->stats.handler_timeouts++;
    const char *msg = lua_tostring(co, -1);
    hs_log_conn(srv, o, HS_LOG_ERROR, "error closing handle's to-be-closed variables: %s",
                tripped ? "exceeded handler_budget"
                : msg   ? msg
                        : "(not a string)");
  }
  luaL_unref(srv->lua.L, LUA_REGISTRYINDEX, o->lua.co_ref);
  o->lua.co_ref = HS_NOREF;
}

/* coroutine.resume and coroutine.close, guarded: a handle coroutine is the
 * host's to resume. Upvalue 1 is the original function. */
static int guarded(lua_State *L, const char *what) {
  lua_State *co = lua_tothread(L, 1);
  if (co && hs_coro_conn(co)) {
    if (what[0] == 'r') {
      lua_pushboolean(L, 0);
      lua_pushliteral(L,
                      "cannot resume a handle coroutine: hotsock resumes it when what it "
                      "waits for (receive, hs.sleep, hs.connect, hs.exec, hs.fs, "
                      "hs.resolve) is done");
      return 2;
    }
    return luaL_error(L,
                      "cannot close a handle coroutine: hotsock closes it with its "
                      "connection");
  }
  if (co && what[0] == 'c' && hs_script_stopped(L, co)) {
    /* Its <close> handlers are skipped (budget.c): false and its error. */
    lua_pushboolean(L, 0);
    if (lua_gettop(co) > 0) {
      lua_pushvalue(co, -1);
      lua_xmove(co, L, 1);
    } else {
      lua_pushnil(L);
    }
    return 2;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int guarded_resume(lua_State *L) { return guarded(L, "resume"); }
static int guarded_close(lua_State *L) { return guarded(L, "close"); }

void hs_coro_open(lua_State *L) {
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    lua_getfield(L, -1, "resume");
    lua_pushcclosure(L, guarded_resume, 1);
    lua_setfield(L, -2, "resume");
    lua_getfield(L, -1, "close");
    lua_pushcclosure(L, guarded_close, 1);
    lua_setfield(L, -2, "close");
  }
  lua_pop(L, 1);
}
