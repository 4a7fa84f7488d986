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
/* s, cut at SHOW_VALUE_MAX, on one line: control bytes as \xNN. */
static void put_escaped(hs_out_t *out, const char *s, size_t n) {
  for (size_t i = 0; i < n && i < SHOW_VALUE_MAX; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7f)
      hs_out_printf(out, "\\x%02x", ch);
    else
      hs_out_put(out, s + i, 1);
  }
}

static void put_value(lua_State *L, int idx, hs_out_t *out) {
  size_t n;
  int strv = lua_type(L, idx) == LUA_TSTRING;
  const char *s = luaL_tolstring(L, idx, &n); /* may run a __tostring: protected */
  if (strv) hs_out_put(out, "\"", 1);
  put_escaped(out, s, n);
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
        put_escaped(out, k, n);
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

/* Text for the console, where an empty line ends an answer: control bytes
 * but tab and newline as \xNN, and a newline that would make an empty
 * line (or start the answer) as \x0a. */
static void put_text(hs_out_t *out, const char *s, size_t n, int *line_start) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if ((ch < 0x20 && ch != '\t' && ch != '\n') || ch == 0x7f || (ch == '\n' && *line_start)) {
      hs_out_printf(out, "\\x%02x", ch);
      *line_start = 0;
    } else {
      hs_out_put(out, s + i, 1);
      *line_start = ch == '\n';
    }
  }
}

typedef struct eval_req {
  const char *chunk;
  size_t len;
} eval_req_t;

/* Protected (an eval_req_t as light userdata): compile the chunk, give it
 * its environment and run it; its results are left on the stack. Nothing
 * here runs outside the protected call: the script may have put
 * metamethods anywhere. */
static int eval_run(lua_State *L) {
  eval_req_t *r = lua_touserdata(L, 1);
  lua_settop(L, 0);
  /* "return CHUNK" first, as the Lua prompt does, so `eval
   * hs.stats().active` prints a value; then the chunk as it is. */
  lua_pushliteral(L, "return ");
  lua_pushlstring(L, r->chunk, r->len);
  lua_concat(L, 2);
  size_t n;
  const char *ret = lua_tolstring(L, 1, &n);
  if (luaL_loadbufferx(L, ret, n, "=eval", "t") != LUA_OK) {
    lua_settop(L, 0);
    if (luaL_loadbufferx(L, r->chunk, r->len, "=eval", "t") != LUA_OK) return lua_error(L);
  } else {
    lua_remove(L, 1);
  }
  /* Its globals are the script's, with hs (the hotsock module) and
   * conn(id), the connection with that id, at hand. */
  lua_newtable(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE) {
    lua_pushliteral(L, "hotsock");
    lua_rawget(L, -2);
  } else {
    lua_pushnil(L);
  }
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
  lua_setupvalue(L, 1, 1); /* the chunk's _ENV */
  lua_call(L, 0, LUA_MULTRET);
  return lua_gettop(L);
}

/* Run f with one light userdata argument, arg, under the handler budget;
 * its results (show writes to out itself and returns none), or its error,
 * go to out as console text. */
static void protected(hs_server_t *srv, lua_CFunction f, void *arg, hs_out_t *out) {
  lua_State *L = srv->lua.L;
  if (!lua_checkstack(L, 8)) {
    hs_out_str(out, "error: out of memory\n");
    return;
  }
  int base = lua_gettop(L), line_start = 0;
  lua_pushcfunction(L, hs_script_msgh);
  hs_conn_t *prev = srv->lua.current;
  srv->lua.current = NULL;
  lua_pushcfunction(L, f);
  lua_pushlightuserdata(L, arg);
  hs_script_budget_start(srv, srv->limits.handler_budget);
  int st = lua_pcall(L, 1, LUA_MULTRET, base + 1);
  int tripped = hs_script_budget_stop(srv);
  srv->lua.current = prev;
  if (st != LUA_OK || tripped) {
    size_t ml = 0;
    const char *msg = tripped ? "it exceeded the handler budget" : lua_tolstring(L, -1, &ml);
    if (tripped) ml = strlen(msg);
    if (!msg) msg = "(not a string)", ml = strlen(msg);
    hs_out_str(out, "error: ");
    put_text(out, msg, ml, &line_start);
    hs_out_str(out, "\n");
  } else {
    int n = lua_gettop(L) - base - 1;
    for (int i = 1; i <= n; i++) {
      int at = base + 1 + i;
      size_t sl;
      /* Strings and numbers as they are; other values by type (no
       * __tostring: it would run outside the budget). */
      const char *s = lua_type(L, at) == LUA_TSTRING || lua_type(L, at) == LUA_TNUMBER
                          ? lua_tolstring(L, at, &sl)
                          : NULL;
      char other[64];
      if (!s) {
        if (lua_isnil(L, at))
          snprintf(other, sizeof other, "nil");
        else if (lua_isboolean(L, at))
          snprintf(other, sizeof other, lua_toboolean(L, at) ? "true" : "false");
        else
          snprintf(other, sizeof other, "%s: %p", luaL_typename(L, at), lua_topointer(L, at));
        s = other;
        sl = strlen(other);
      }
      put_text(out, s, sl, &line_start);
      hs_out_str(out, i < n ? "\t" : "\n");
      line_start = i == n;
    }
  }
  lua_settop(L, base);
}

void hs_ladmin_conn_show(hs_conn_t *c, hs_out_t *out) {
  show_req_t r = {c, out};
  protected(c->srv, show_fields, &r, out);
}

void hs_ladmin_eval(hs_server_t *srv, const char *chunk, size_t len, hs_out_t *out) {
  /* Every eval is logged, whatever the level. */
  hs_logf(HS_LOG_DEBUG, HS_LOG_WARN, 0, "admin console: eval %.*s", (int)(len > 200 ? 200 : len),
          chunk);
  eval_req_t r = {chunk, len};
  protected(srv, eval_run, &r, out);
}

size_t hs_ladmin_lua_memory(hs_server_t *srv) { return srv->lua.lua_mem; }
