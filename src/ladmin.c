/* ladmin.c: the host layer's answers to the admin endpoint (admin.c asks
 * through hs_events_t): what a connection's script is doing, its fields
 * and the Lua stack of its coroutine, and the console's eval. Each runs
 * outside any handler; anything that may run script code (a __tostring,
 * the chunk) goes through a protected call under the handler budget. */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "admin.h"
#include "host.h"

#define SHOW_VALUE_MAX 200 /* a field's value is cut there */

void hs_ladmin_conn_state(hs_conn_t *c, char *out, size_t len) {
  hs_server_t *srv = c->srv;
  uint64_t now = uv_now(srv->loop);
  hs_conn_t *o = hs_coro_reader(c);
  char fr[128];
  out[0] = 0;
  if (srv->lua.current == c) {
    snprintf(out, len, "in a handler");
    return;
  }
  if (!o->lua.co) return; /* event style: between handlers */
  if (o != c) {
    /* An outbound connection a coroutine made: is it the one it reads? */
    if (o->lua.wait_on == c && o->lua.wait == HS_WAIT_READ)
      snprintf(out, len, "conn %llu waits in receive for it", (unsigned long long)o->id);
    return;
  }
  switch (c->lua.wait) {
  case HS_WAIT_READ: {
    hs_conn_t *on = c->lua.wait_on ? c->lua.wait_on : c;
    hs_framer_describe(&on->framer, fr, sizeof fr);
    int n = snprintf(out, len, "waiting in receive (%s", fr);
    if (on != c && n > 0 && (size_t)n < len)
      n += snprintf(out + n, len - (size_t)n, ", on conn %llu", (unsigned long long)on->id);
    uint64_t t = on->to.read ? on->to.read : on->to.idle;
    if (t && n > 0 && (size_t)n < len) {
      uint64_t due = on->last_read + t;
      n += snprintf(out + n, len - (size_t)n, ", timeout %llu ms, %.1f s left",
                    (unsigned long long)t, due > now ? (double)(due - now) / 1000 : 0.0);
    }
    if (n > 0 && (size_t)n < len) snprintf(out + n, len - (size_t)n, ")");
    break;
  }
  case HS_WAIT_SLEEP:
    snprintf(out, len, "sleeping (%.1f s left)",
             c->alarm_at > now ? (double)(c->alarm_at - now) / 1000 : 0.0);
    break;
  case HS_WAIT_CONNECT: snprintf(out, len, "waiting in hs.connect"); break;
  case HS_WAIT_WORK: snprintf(out, len, "waiting for hs.exec, hs.fs or hs.resolve"); break;
  default: snprintf(out, len, c->lua.running ? "running" : "suspended"); break;
  }
}

/* A value as show prints it: tostring, cut at SHOW_VALUE_MAX, one line. */
static void put_value(lua_State *L, int idx, hs_out_t *out) {
  size_t n;
  int strv = lua_type(L, idx) == LUA_TSTRING;
  const char *s = luaL_tolstring(L, idx, &n); /* may run a __tostring: protected */
  if (strv) hs_out_put(out, "\"", 1);
  for (size_t i = 0; i < n && i < SHOW_VALUE_MAX; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7f)
      hs_out_printf(out, "\\x%02x", ch);
    else
      hs_out_put(out, s + i, 1);
  }
  if (n > SHOW_VALUE_MAX) hs_out_str(out, "...");
  if (strv) hs_out_put(out, "\"", 1);
  lua_pop(L, 1);
}

typedef struct show_req {
  hs_conn_t *c;
  hs_out_t *out;
} show_req_t;

/* Protected (a show_req_t as light userdata): the script's fields on the
 * connection, then where its coroutine waits. */
static int show_fields(lua_State *L) {
  show_req_t *r = lua_touserdata(L, 1);
  hs_conn_t *c = r->c;
  hs_out_t *out = r->out;
  lua_settop(L, 0);
  if (c->lua.box_ref == HS_NOREF) return 0;
  hs_lconn_push(L, c);                   /* 1: the box */
  if (lua_type(L, 1) == LUA_TUSERDATA && /* 2: its fields */
      lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, 2)) { /* key at 3, value at 4 */
      hs_out_str(out, "field ");
      if (lua_type(L, 3) == LUA_TSTRING) {
        size_t n;
        const char *k = lua_tolstring(L, 3, &n);
        hs_out_put(out, k, n > SHOW_VALUE_MAX ? SHOW_VALUE_MAX : n);
      } else {
        hs_out_str(out, "[");
        put_value(L, 3, out);
        hs_out_str(out, "]");
      }
      hs_out_str(out, " = ");
      put_value(L, 4, out);
      hs_out_str(out, "\n");
      lua_pop(L, 1);
    }
  }
  if (c->lua.co && !c->lua.running) {
    luaL_traceback(L, c->lua.co, NULL, 0);
    const char *tb = lua_tostring(L, -1);
    if (strncmp(tb, "stack traceback:", 16) == 0) tb += 16;
    hs_out_str(out, "coroutine stack:");
    for (; *tb; tb++) {
      if (*tb == '\t')
        hs_out_str(out, "  ");
      else
        hs_out_put(out, tb, 1);
    }
    hs_out_str(out, "\n");
  }
  return 0;
}

/* eval's conn(id): the connection with that id (the script's box), or nil. */
static int eval_conn(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  lua_Integer id = luaL_checkinteger(L, 1);
  hs_conn_t *c;
  TAILQ_FOREACH(c, &srv->conns, link) {
    if ((lua_Integer)c->id == id && hs_conn_is_open(c) && c->lua.box_ref != HS_NOREF &&
        !(c->flags & (HS_CONN_UNSEEN | HS_CONN_ADMIN))) {
      hs_lconn_push(L, c);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

/* Run f (with one light userdata argument, arg; it writes to out itself),
 * or with f NULL the chunk, under the budget; the chunk's results, or the
 * error, go to out. */
static void protected(hs_server_t *srv, lua_CFunction f, void *arg, const char *chunk, size_t len,
                      hs_out_t *out) {
  lua_State *L = srv->lua.L;
  if (!lua_checkstack(L, 8)) {
    hs_out_str(out, "error: out of memory\n");
    return;
  }
  int base = lua_gettop(L);
  lua_pushcfunction(L, hs_script_msgh);
  int st;
  hs_conn_t *prev = srv->lua.current;
  srv->lua.current = NULL;
  if (f) {
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, arg);
    hs_script_budget_start(srv, srv->limits.handler_budget);
    st = lua_pcall(L, 1, 0, base + 1);
  } else {
    /* eval: "return CHUNK" first, as the Lua prompt does, so `eval
     * hs.stats().active` prints a value; then the chunk as it is. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "return ");
    luaL_addlstring(&b, chunk, len);
    luaL_pushresult(&b);
    size_t n;
    const char *ret = lua_tolstring(L, -1, &n);
    st = luaL_loadbufferx(L, ret, n, "=eval", "t");
    lua_remove(L, -2);
    if (st != LUA_OK) {
      lua_pop(L, 1);
      st = luaL_loadbufferx(L, chunk, len, "=eval", "t");
    }
    if (st == LUA_OK) {
      /* Its globals are the script's, with hs (the hotsock module) and
       * conn(id), the connection with that id, at hand. */
      lua_newtable(L);
      if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE)
        lua_getfield(L, -1, "hotsock");
      else
        lua_pushnil(L);
      lua_setfield(L, -3, "hs");
      lua_pop(L, 1);
      lua_pushcfunction(L, eval_conn);
      lua_setfield(L, -2, "conn");
      lua_createtable(L, 0, 2);
      lua_pushglobaltable(L);
      lua_setfield(L, -2, "__index");
      lua_pushglobaltable(L);
      lua_setfield(L, -2, "__newindex");
      lua_setmetatable(L, -2);
      lua_setupvalue(L, -2, 1); /* the chunk's _ENV */
      hs_script_budget_start(srv, srv->limits.handler_budget);
      st = lua_pcall(L, 0, LUA_MULTRET, base + 1);
    } else {
      hs_script_budget_start(srv, 0); /* balanced below */
    }
  }
  int tripped = hs_script_budget_stop(srv);
  srv->lua.current = prev;
  if (st != LUA_OK || tripped) {
    const char *msg = lua_tostring(L, -1);
    hs_out_printf(out, "error: %s\n",
                  tripped ? "it exceeded the handler budget"
                  : msg   ? msg
                          : "(not a string)");
  } else {
    int n = lua_gettop(L) - base - 1;
    for (int i = 1; i <= n; i++) {
      size_t sl;
      /* A result's __tostring runs under no budget here: keep it simple. */
      const char *s = lua_type(L, base + 1 + i) == LUA_TSTRING || lua_isnumber(L, base + 1 + i)
                          ? lua_tolstring(L, base + 1 + i, &sl)
                          : NULL;
      char other[64];
      if (!s) {
        snprintf(other, sizeof other, "%s: %p", luaL_typename(L, base + 1 + i),
                 lua_topointer(L, base + 1 + i));
        if (lua_isnil(L, base + 1 + i)) snprintf(other, sizeof other, "nil");
        if (lua_isboolean(L, base + 1 + i))
          snprintf(other, sizeof other, lua_toboolean(L, base + 1 + i) ? "true" : "false");
        s = other;
        sl = strlen(other);
      }
      hs_out_put(out, s, sl);
      hs_out_str(out, i < n ? "\t" : "\n");
    }
  }
  lua_settop(L, base);
}

void hs_ladmin_conn_show(hs_conn_t *c, hs_out_t *out) {
  show_req_t r = {c, out};
  protected(c->srv, show_fields, &r, NULL, 0, out);
}

void hs_ladmin_eval(hs_server_t *srv, const char *chunk, size_t len, hs_out_t *out) {
  hs_log(srv, HS_LOG_INFO, "admin console: eval %.*s", (int)(len > 200 ? 200 : len), chunk);
  protected(srv, NULL, NULL, chunk, len, out);
}

size_t hs_ladmin_lua_memory(hs_server_t *srv) { return srv->lua.lua_mem; }
