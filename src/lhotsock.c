/* lhotsock.c: the `hotsock` module: timers, sleep, the client registry,
 * broadcast, logging, counters, the live module and the table that
 * survives reloads; exec, fs and resolve come from lwork.c. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "lwork.h"
#include "tls.h"

#define TIMER_MT "hotsock.timer"

/* A timer made by hs.after / hs.every. It lives in its Lua userdata (the
 * handle the script gets), so its memory counts toward max_lua_memory; the
 * registry keeps the userdata while libuv holds the uv_timer_t, until the
 * close callback. The callback is the userdata's user value. */
typedef struct hs_ltimer {
  uv_timer_t t;
  hs_server_t *srv;
  int box_ref; /* keeps the userdata while libuv holds t */
  int repeat;
  int done;                   /* cancelled, fired once, or stopped */
  LIST_ENTRY(hs_ltimer) link; /* the server's live timers */
} hs_ltimer_t;

static void ltimer_close_cb(uv_handle_t *h) {
  hs_ltimer_t *t = h->data;
  hs_server_t *srv = t->srv;
  int ref = t->box_ref;
  t->box_ref = HS_NOREF;
  luaL_unref(srv->lua.L, LUA_REGISTRYINDEX, ref); /* t may be collected from here on */
}

/* Stop the timer and let libuv go of it; the userdata is released in the
 * close callback. */
static void ltimer_end(hs_ltimer_t *t) {
  if (t->done) return;
  t->done = 1;
  uv_timer_stop(&t->t);
  LIST_REMOVE(t, link);
  t->t.data = t;
  uv_close((uv_handle_t *)&t->t, ltimer_close_cb);
}

/* Cancel every live timer (the server is stopping). */
void hs_lhotsock_stop_timers(hs_server_t *srv) {
  while (!LIST_EMPTY(&srv->lua.timers)) ltimer_end(LIST_FIRST(&srv->lua.timers));
}

static void ltimer_cb(uv_timer_t *h) {
  hs_ltimer_t *t = hs_container_of(h, hs_ltimer_t, t);
  hs_server_t *srv = t->srv;
  lua_State *L = srv->lua.L;
  if (!lua_checkstack(L, 2)) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->box_ref);
  lua_getiuservalue(L, -1, 1); /* the callback */
  lua_remove(L, -2);
  /* One-shot: end it first, so cancel() inside the callback is harmless. */
  if (!t->repeat) ltimer_end(t);
  hs_script_call(srv, NULL, 0, "timer callback");
}

static int start_timer(lua_State *L, int repeat) {
  hs_server_t *srv = hs_server_from_lua(L);
  lua_Number ms = luaL_checknumber(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_argcheck(L, ms >= 0 && ms <= (lua_Number)HS_MAX_MS, 1, "ms must be from 0 to ten years");
  if (repeat) luaL_argcheck(L, ms >= 1, 1, "an every() period must be >= 1 ms");
  if (srv->stopping) {
    lua_pushnil(L);
    lua_pushliteral(L, "stopping");
    return 2;
  }
  /* Every allocation (which may raise) comes before the timer starts. */
  hs_ltimer_t *t = lua_newuserdatauv(L, sizeof *t, 1);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, TIMER_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -1);
  t->box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t->srv = srv;
  t->repeat = repeat;
  uv_timer_init(srv->loop, &t->t);
  uint64_t due = (uint64_t)ms;
  uv_timer_start(&t->t, ltimer_cb, due, repeat ? due : 0);
  LIST_INSERT_HEAD(&srv->lua.timers, t, link);
  return 1;
}

static int hs_after(lua_State *L) { return start_timer(L, 0); }
static int hs_every(lua_State *L) { return start_timer(L, 1); }

static int timer_cancel(lua_State *L) {
  hs_ltimer_t *t = luaL_checkudata(L, 1, TIMER_MT);
  int was = !t->done && t->srv;
  if (was) ltimer_end(t);
  lua_pushboolean(L, was);
  return 1;
}

static int timer_active(lua_State *L) {
  hs_ltimer_t *t = luaL_checkudata(L, 1, TIMER_MT);
  lua_pushboolean(L, !t->done && t->srv);
  return 1;
}

/* The handle coroutine running as L, or raise. MAY_LJMP. */
static hs_conn_t *own_coroutine(lua_State *L, const char *what) {
  hs_conn_t *c = hs_coro_conn(L);
  if (!c || c->lua.co != L) luaL_error(L, "%s works only in a handle(conn) coroutine", what);
  return c;
}

/* hs.sleep(ms): only in a connection's handle coroutine. */
static int hs_sleep(lua_State *L) {
  lua_Number ms = luaL_checknumber(L, 1);
  hs_conn_t *c = own_coroutine(L, "hs.sleep");
  if (!hs_conn_is_open(c)) {
    lua_pushnil(L);
    lua_pushstring(L, c->reason ? c->reason : "closed");
    return 2;
  }
  if (!(ms <= (lua_Number)HS_MAX_MS)) ms = (lua_Number)HS_MAX_MS;
  if (!lua_isyieldable(L))
    return luaL_error(L, "hs.sleep cannot wait here (inside a metamethod or a C function)");
  lua_settop(L, 0);
  hs_timers_set_alarm(c, uv_now(c->srv->loop) + (uint64_t)(ms > 0 ? ms : 0));
  return hs_coro_wait(L, c, HS_WAIT_SLEEP, c);
}

/* hs.connect(host, port [, opts]): an outbound TCP connection. Inside a
 * handle coroutine it yields until connected and returns the connection, or
 * nil, err. Elsewhere it returns the connection at once and its events go to
 * the handlers in opts (on_connect, on_message, on_close, on_drain,
 * on_timeout, on_error). opts.timeout (ms, default 10000) bounds the connect;
 * opts.framing (default "raw") frames its input for on_message. While the
 * server stops, and when the memory it needs would pass max_lua_memory, it
 * returns nil, err. */
static int hs_connect(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  luaL_argcheck(L, port > 0 && port <= 65535, 2, "port must be 1 to 65535");
  int has_opts = !lua_isnoneornil(L, 3);
  if (has_opts) luaL_checktype(L, 3, LUA_TTABLE);
  lua_Integer timeout = 10000;
  hs_framer_t f;
  hs_framer_raw(&f);
  hs_tls_ctx_t *tls = NULL; /* borrowed from the cache */
  char tls_name[256] = "";
  if (has_opts) {
    if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
      int isnum;
      lua_Number v = lua_tonumberx(L, -1, &isnum);
      if (!isnum || !(v > 0 && v <= (lua_Number)HS_MAX_MS))
        return luaL_error(L, "hs.connect: timeout must be a number of ms > 0");
      timeout = (lua_Integer)v;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 3, "framing") != LUA_TNIL) {
      char err[256];
      if (hs_module_parse_framing(L, -1, &f, err, sizeof err) != 0)
        return luaL_error(L, "hs.connect: framing: %s", err);
    }
    lua_pop(L, 1);
    int tt = lua_getfield(L, 3, "tls");
    if (tt != LUA_TNIL && !(tt == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
      char terr[1024], *sni = NULL;
      if (tt != LUA_TBOOLEAN && tt != LUA_TTABLE)
        return luaL_error(L, "hs.connect: tls must be true or a table of settings");
      tls = hs_ltls_client_ctx(srv, L, lua_gettop(L), &sni, terr, sizeof terr);
      if (!tls) {
        lua_pushnil(L);
        lua_pushstring(L, terr);
        return 2;
      }
      size_t n = sni ? strlen(sni) : 0;
      int long_name = n >= sizeof tls_name;
      if (sni && !long_name) memcpy(tls_name, sni, n + 1);
      free(sni);
      if (long_name) return luaL_error(L, "hs.connect: tls.sni is longer than 255 bytes");
    }
    lua_pop(L, 1);
  }
  /* In a handle coroutine: the caller waits, and reads with receive. */
  hs_conn_t *owner = hs_coro_conn(L);
  if (owner && owner->lua.co != L) owner = NULL;
  if (owner && !lua_isyieldable(L))
    return luaL_error(L, "hs.connect cannot wait here (inside a metamethod or a C function)");
  if (owner && !hs_conn_is_open(owner)) {
    lua_pushnil(L);
    lua_pushstring(L, owner->reason ? owner->reason : "closed");
    return 2;
  }
  if (!hs_script_room(srv, sizeof(hs_conn_t) + 512)) {
    lua_pushnil(L);
    lua_pushliteral(L, "not enough memory (max_lua_memory)");
    return 2;
  }
  /* Lua allocations first (they may raise), then the connection. */
  int href = HS_NOREF;
  if (!owner && has_opts) {
    lua_pushvalue(L, 3);
    href = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  int box_ref = hs_lconn_prepare(L);
  char err[256];
  hs_conn_t *c = hs_outbound_connect(srv, host, (int)port, (uint64_t)timeout, &f, tls,
                                     tls_name[0] ? tls_name : NULL, err, sizeof err);
  if (!c) {
    if (href != HS_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, href);
    luaL_unref(L, LUA_REGISTRYINDEX, box_ref);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  c->lua.handlers_ref = href;
  hs_lconn_bind(srv, c, box_ref);
  if (!owner) {
    hs_lconn_push(L, c);
    return 1;
  }
  c->flags |= HS_CONN_PULL;
  c->lua.owner = owner;
  LIST_INSERT_HEAD(&owner->lua.children, c, lua.sibling);
  lua_settop(L, 0);
  return hs_coro_wait(L, owner, HS_WAIT_CONNECT, c);
}

/* hs.worker(): this worker's number, 1..hs.workers(); 1 without --workers. */
static int hs_worker(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  lua_pushinteger(L, srv->worker_id ? srv->worker_id : 1);
  return 1;
}

/* hs.stopping(): a stop was asked for (during stop_grace too). */
static int hs_stopping(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  lua_pushboolean(L, srv->draining || srv->stopping);
  return 1;
}

static int hs_workers(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  lua_pushinteger(L, srv->nworkers ? srv->nworkers : 1);
  return 1;
}

static int hs_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
  return 1;
}

/* A snapshot of the live clients as a list of boxes, built on L (any
 * thread). MAY_LJMP. */
static int push_clients(lua_State *L, hs_server_t *srv) {
  int n = 0;
  hs_conn_t *c;
  lua_createtable(L, (int)(srv->stats.active < 1u << 20 ? srv->stats.active : 0), 0);
  TAILQ_FOREACH(c, &srv->conns, link) {
    if (!hs_conn_is_open(c) || (c->flags & (HS_CONN_OUTBOUND | HS_CONN_UNSEEN))) continue;
    hs_lconn_push(L, c);
    lua_rawseti(L, -2, ++n);
  }
  return n;
}

static int clients_iter(lua_State *L) {
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(2)) + 1;
  lua_pushinteger(L, i);
  lua_replace(L, lua_upvalueindex(2));
  lua_rawgeti(L, lua_upvalueindex(1), i);
  return 1;
}

static int hs_clients(lua_State *L) {
  push_clients(L, hs_server_from_lua(L));
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, clients_iter, 2);
  return 1;
}

/* hs.broadcast(data [, filter]): filter is a function(conn) -> bool or a
 * connection to leave out. Each client's max_outbuf applies. */
static int hs_broadcast(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  int ftype = lua_type(L, 2);
  uint64_t skip = 0;
  if (ftype == LUA_TUSERDATA) {
    hs_conn_t *x = hs_lconn_test(L, 2);
    skip = x ? x->id : 0;
    lua_getfield(L, 2, "id");
    skip = (uint64_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
  } else if (ftype != LUA_TNONE && ftype != LUA_TNIL && ftype != LUA_TFUNCTION) {
    return luaL_argerror(L, 2, "a function or a connection expected");
  }
  int n = push_clients(L, srv);
  int list = lua_gettop(L), sent = 0;
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, list, i);
    hs_conn_t *c = hs_lconn_test(L, -1);
    if (!c || !hs_conn_is_open(c) || c->id == skip) {
      lua_pop(L, 1);
      continue;
    }
    if (ftype == LUA_TFUNCTION) {
      lua_pushvalue(L, 2);
      lua_pushvalue(L, -2);
      lua_call(L, 1, 1);
      int ok = lua_toboolean(L, -1);
      lua_pop(L, 1);
      c = hs_lconn_test(L, -1); /* the filter may have closed it */
      if (!ok || !c || !hs_conn_is_open(c)) {
        lua_pop(L, 1);
        continue;
      }
    }
    lua_pop(L, 1);
    if (c->flags & HS_CONN_SHUTDOWN) continue;
    if (hs_conn_send(c, data, len) != 0) {
      hs_conn_abort(c, "out of memory");
      continue;
    }
    if (hs_conn_check_outbuf(c) == 0) sent++;
  }
  lua_pushinteger(L, sent);
  return 1;
}

/* hs.log.<level>(...): the arguments joined like print() does. */
static int log_at(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  int level = (int)lua_tointeger(L, lua_upvalueindex(1));
  if (level < srv->log_level) return 0;
  luaL_Buffer b;
  int n = lua_gettop(L);
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
    if (i < n) luaL_addchar(&b, ' ');
  }
  luaL_pushresult(&b);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  hs_log_write(level, srv->lua.current ? srv->lua.current->id : 0, s, len);
  return 0;
}

/* The counters hs.stats() reports: hs_stat_fields (metrics.c, shared with
 * the admin endpoint) and the Lua heap. */
typedef struct stat_field {
  const char *k;
  uint64_t v;
} stat_field_t;
#define NSTATS (HS_NSTAT_FIELDS + 2)

static void stat_fields(const hs_server_t *srv, const hs_stats_t *s, stat_field_t f[NSTATS]) {
  hs_stat_field_t all[HS_NSTAT_FIELDS];
  hs_stat_fields(s, all);
  for (size_t i = 0; i < HS_NSTAT_FIELDS; i++) f[i] = (stat_field_t){all[i].name, all[i].value};
  f[HS_NSTAT_FIELDS] = (stat_field_t){"lua_memory", srv->lua.lua_mem};
  f[HS_NSTAT_FIELDS + 1] = (stat_field_t){"lua_memory_limit", srv->limits.max_lua_memory};
}

/* hs.stats(): this process's counters; hs.stats("all"): with --workers,
 * every worker's summed (as each last copied them, in its before-sleep
 * pass), the generation this worker's. */
static int hs_stats(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  stat_field_t f[NSTATS];
  hs_stats_t sum = srv->stats;
  if (!lua_isnoneornil(L, 1)) {
    const char *what = luaL_checkstring(L, 1);
    if (strcmp(what, "all") != 0) return luaL_argerror(L, 1, "\"all\" or nothing");
    if (srv->stats_all) {
      _Static_assert(sizeof(hs_stats_t) % sizeof(uint64_t) == 0, "hs_stats_t is all counters");
      uint64_t *d = (uint64_t *)&sum;
      size_t k = sizeof sum / sizeof *d;
      memset(&sum, 0, sizeof sum);
      for (int w = 0; w < srv->nworkers; w++) {
        const uint64_t *src = w == srv->worker_id - 1 ? (const uint64_t *)&srv->stats
                                                      : (const uint64_t *)&srv->stats_all[w];
        for (size_t i = 0; i < k; i++) d[i] += src[i];
      }
      sum.generation = srv->stats.generation;
    }
  }
  stat_fields(srv, &sum, f);
  lua_createtable(L, 0, NSTATS);
  for (size_t i = 0; i < NSTATS; i++) {
    lua_pushinteger(L, (lua_Integer)f[i].v);
    lua_setfield(L, -2, f[i].k);
  }
  return 1;
}

/* SIGUSR2: the counters as one log line, "stats accepted=3 rejected=0 ...",
 * for an operator (kill -USR2 PID) and for hotsock.test's srv:stats(). */
void hs_lhotsock_log_stats(hs_server_t *srv) {
  stat_field_t f[NSTATS];
  char line[1024];
  size_t off = (size_t)snprintf(line, sizeof line, "stats");
  stat_fields(srv, &srv->stats, f);
  for (size_t i = 0; i < NSTATS && off < sizeof line; i++)
    off += (size_t)snprintf(line + off, sizeof line - off, " %s=%llu", f[i].k,
                            (unsigned long long)f[i].v);
  hs_logf(HS_LOG_DEBUG, HS_LOG_INFO, 0, "%s", line); /* asked for: whatever the level */
}

/* hs.module(): the handler module in service now (after reloads and
 * rollbacks), so a long-running handle coroutine can call the newest code:
 * hs.module().step(conn, msg). nil while the first load runs. */
static int hs_module(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  if (srv->lua.module_ref == LUA_NOREF || srv->lua.module_ref == HS_NOREF)
    lua_pushnil(L);
  else
    lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  return 1;
}

static int hs_reload(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  hs_script_request_reload(srv, "hs.reload");
  return 0;
}

static const luaL_Reg funcs[] = {{"after", hs_after},
                                 {"every", hs_every},
                                 {"sleep", hs_sleep},
                                 {"connect", hs_connect},
                                 {"now", hs_now},
                                 {"clients", hs_clients},
                                 {"broadcast", hs_broadcast},
                                 {"stats", hs_stats},
                                 {"reload", hs_reload},
                                 {"module", hs_module},
                                 {"tls_settings", hs_ltls_settings},
                                 {"dict", hs_ldict_dict},
                                 {"worker", hs_worker},
                                 {"workers", hs_workers},
                                 {"stopping", hs_stopping},
                                 {NULL, NULL}};

int hs_lhotsock_open(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  if (luaL_newmetatable(L, TIMER_MT)) {
    lua_newtable(L);
    lua_pushcfunction(L, timer_cancel);
    lua_setfield(L, -2, "cancel");
    lua_pushcfunction(L, timer_active);
    lua_setfield(L, -2, "active");
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "hotsock.timer"); /* getmetatable(t): no way to add a __gc */
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  hs_lwork_open(L); /* exec, resolve, fs */
  lua_newtable(L);
  const char *levels[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++) {
    lua_pushinteger(L, i);
    lua_pushcclosure(L, log_at, 1);
    lua_setfield(L, -2, levels[i]);
  }
  lua_setfield(L, -2, "log");
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.shared_ref);
  lua_setfield(L, -2, "shared");
  lua_pushliteral(L, HS_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
