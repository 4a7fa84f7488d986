/* script.c: the lua_State. Loading and validating the handler module, the one
 * protected door every C->Lua call goes through (with a traceback, under the
 * handler budget of budget.c), and the heap cap (through the allocator). */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "admin.h"
#include "host.h"
#include "lhelpers.h"

hs_server_t *hs_server_from_lua(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  return ud;
}

/* The allocator: counts the Lua heap and refuses to pass max_lua_memory.
 * Blocks up to HS_SLAB_MAX bytes (strings of a message, the tables and
 * closures of a handler: most of what a server allocates per message) come
 * from size classes (slab.c), larger ones from malloc. Lua passes the old
 * size of every block it frees or resizes, so either kind is known
 * without a header. */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  hs_server_t *srv = ud;
  hs_slab_t *slab = &srv->lua.slab;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    if (old > HS_SLAB_MAX)
      free(ptr);
    else if (ptr)
      hs_slab_free(slab, ptr, old);
    srv->lua.lua_mem -= old;
    return NULL;
  }
  /* The cap holds while script code runs (inside a budgeted, protected
   * call), where a refusal is a catchable error. Between calls the host's
   * own small pushes (a handler's name, a close reason, a new connection's
   * box) may pass it: refused there, they would end the process. */
  if (nsize > old && srv->lua.budget_depth > 0 && !hs_script_room(srv, nsize - old)) return NULL;
  void *p;
  if (old > HS_SLAB_MAX && nsize > HS_SLAB_MAX) {
    p = realloc(ptr, nsize);
  } else if (old && old <= HS_SLAB_MAX && nsize <= HS_SLAB_MAX &&
             hs_slab_class(old) == hs_slab_class(nsize)) {
    p = ptr; /* the block has room already */
  } else {
    p = nsize <= HS_SLAB_MAX ? hs_slab_alloc(slab, nsize) : malloc(nsize);
    if (p && ptr) {
      memcpy(p, ptr, old < nsize ? old : nsize);
      if (old > HS_SLAB_MAX)
        free(ptr);
      else
        hs_slab_free(slab, ptr, old);
    }
  }
  if (!p) return NULL;
  srv->lua.lua_mem = srv->lua.lua_mem - old + nsize;
  return p;
}

int hs_script_room(hs_server_t *srv, size_t n) {
  size_t cap = srv->limits.max_lua_memory;
  return !cap || srv->lua.lua_mem + srv->outbound_mem + n <= cap;
}

/* Message handler: the error with a traceback. */
int hs_script_msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Push module[name] when it is a function and return 1; else push nothing. */
int hs_script_get_handler(hs_server_t *srv, const char *name) {
  lua_State *L = srv->lua.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  if (hs_rawfield(L, -1, name) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

/* The module changed: look its on_message up once, for every message. */
void hs_script_cache_on_message(hs_server_t *srv) {
  lua_State *L = srv->lua.L;
  if (srv->lua.on_message_ref != HS_NOREF)
    luaL_unref(L, LUA_REGISTRYINDEX, srv->lua.on_message_ref);
  srv->lua.on_message_ref = HS_NOREF;
  if (hs_script_get_handler(srv, "on_message"))
    srv->lua.on_message_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* A handler failed; the error (with traceback) is on top of L. Count it, give
 * it to on_error when the script has one, else log it and close the
 * connection. Pops the error. */
void hs_script_handler_failed(hs_server_t *srv, hs_conn_t *c, const char *what, int status,
                              int tripped) {
  lua_State *L = srv->lua.L;
  srv->stats.handler_errors++;
  if (status == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT, 0);
  hs_reload_probation_error(srv);
  if (tripped) {
    srv->stats.handler_timeouts++;
    hs_log_conn(srv, c, HS_LOG_ERROR, "%s exceeded handler_budget (%llu ms)%s", what,
                (unsigned long long)srv->lua.budget_ms, c ? "; closing" : "");
    lua_pop(L, 1);
    if (c && hs_conn_is_open(c)) hs_conn_abort(c, "handler timeout");
    return;
  }
  if (c && hs_conn_is_open(c) && strcmp(what, "on_error") != 0 && strcmp(what, "on_close") != 0 &&
      hs_host_handler(srv, L, c, "on_error")) {
    lua_insert(L, -2);   /* on_error, err */
    hs_lconn_push(L, c); /* on_error, err, conn */
    lua_insert(L, -2);   /* on_error, conn, err */
    hs_script_call(srv, c, 2, "on_error");
    return;
  }
  hs_log_conn(srv, c, HS_LOG_ERROR, "error in %s: %s%s", what, lua_tostring(L, -1),
              c && hs_conn_is_open(c) ? " (closing this connection)" : "");
  lua_pop(L, 1);
  if (c && hs_conn_is_open(c)) hs_conn_close(c, "handler error");
}

/* The protected door: call the function below nargs arguments on L, under the
 * handler budget, with a traceback on error. c is the connection the call is
 * about (or NULL). Returns the Lua status; errors are handled here. */
int hs_script_call(hs_server_t *srv, hs_conn_t *c, int nargs, const char *what) {
  lua_State *L = srv->lua.L;
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, hs_script_msgh);
  lua_insert(L, base);
  int st = hs_script_call_msgh(srv, c, nargs, what, base);
  lua_remove(L, base);
  return st;
}

/* hs_script_call with hs_script_msgh already at stack index msgh, below the
 * function (the frames of one read share one: host.c). */
int hs_script_call_msgh(hs_server_t *srv, hs_conn_t *c, int nargs, const char *what, int msgh) {
  lua_State *L = srv->lua.L;
  hs_conn_t *prev = srv->lua.current;
  srv->lua.current = c;
  /* Handler time for /metrics: only with the admin endpoint on. */
  uint64_t t0 = srv->admin ? uv_hrtime() : 0;
  hs_script_budget_start(srv, srv->limits.handler_budget);
  int st = lua_pcall(L, nargs, 0, msgh);
  int tripped = hs_script_budget_stop(srv);
  if (t0) hs_admin_observe_handler(srv, what, uv_hrtime() - t0);
  srv->lua.current = prev;
  if (st == LUA_OK && tripped) {
    /* `return pcall(spin)` catches the stop and returns with no instruction
     * left to raise it again; a call over budget is a failure all the same. */
    lua_pushnil(L);
    st = LUA_ERRRUN;
  }
  if (st != LUA_OK) hs_script_handler_failed(srv, c, what, st, tripped);
  return st;
}

/* The file:line where a call stopped by the budget was running: the first Lua
 * frame of the traceback msgh appended. Empty when there is none. */
void hs_script_stopped_at(const char *tb, char *out, size_t outlen) {
  out[0] = 0;
  const char *p = tb ? strstr(tb, "\nstack traceback:") : NULL;
  while (p && (p = strstr(p + 1, "\n\t")) != NULL) {
    const char *frame = p + 2, *end = strstr(frame, ": in ");
    const char *eol = strchr(frame, '\n');
    if (!end || (eol && eol < end)) continue;
    if (strncmp(frame, "[C]", 3) == 0 || strncmp(frame, "(...tail calls...)", 18) == 0) continue;
    size_t n = (size_t)(end - frame);
    if (n >= outlen) n = outlen - 1;
    memcpy(out, frame, n);
    out[n] = 0;
    return;
  }
}

/* Call the function below nargs arguments under the load budget, with the
 * message handler at base (script loads and on_reload). LUA_OK with nres
 * results pushed, or the error status with err filled: where it was
 * stopped when it ran out of time ("file:line: loading took longer than
 * 500 ms (stopped there)"), else the error, after "what: " for on_reload. */
int hs_script_load_call(hs_server_t *srv, int nargs, int nres, int base, const char *what,
                        char *err, size_t errlen) {
  lua_State *L = srv->lua.L;
  hs_script_budget_start(srv, srv->lua.load_budget);
  int st = lua_pcall(L, nargs, nres, base);
  int tripped = hs_script_budget_stop(srv);
  if (st == LUA_OK && tripped) { /* it ends in `return pcall(spin)`: over time all the same */
    lua_pop(L, nres);
    lua_pushnil(L);
    st = LUA_ERRRUN;
  }
  if (st == LUA_OK) return st;
  int chunk = strcmp(what, "loading") == 0;
  if (tripped) {
    char at[256];
    hs_script_stopped_at(lua_tostring(L, -1), at, sizeof at);
    if (!at[0] && chunk) snprintf(at, sizeof at, "%s", srv->lua.script_path);
    snprintf(err, errlen, "%s%s%s took longer than %llu ms (stopped there)", at, at[0] ? ": " : "",
             what, (unsigned long long)srv->lua.load_budget);
  } else {
    const char *msg = lua_tostring(L, -1);
    snprintf(err, errlen, "%s%s%s", chunk ? "" : what, chunk ? "" : ": ",
             msg ? msg : "(error object is not a string)");
  }
  lua_pop(L, 1);
  if (st == LUA_ERRMEM) lua_gc(L, LUA_GCCOLLECT, 0);
  return st;
}

/* Compile and run the script in a fresh environment under the load budget,
 * check what it returns, and on success make it the module. The old module
 * stays in place on any failure. Returns 0, or -1 with err filled. */
int hs_script_load(hs_server_t *srv, char *err, size_t errlen) {
  lua_State *L = srv->lua.L;
  int top = lua_gettop(L);
  lua_pushcfunction(L, hs_script_msgh);
  int base = lua_gettop(L);
  int st;
  if (srv->lua.source) {
    /* A worker started again: the version the others run, not the file. */
    char name[4200];
    snprintf(name, sizeof name, "@%s", srv->lua.script_path);
    st = luaL_loadbufferx(L, srv->lua.source, srv->lua.source_len, name, "t");
    srv->lua.source = NULL; /* once: reloads read the file */
  } else {
    st = luaL_loadfile(L, srv->lua.script_path);
  }
  if (st != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    return -1;
  }
  /* A fresh _ENV that reads through to the globals: what one version of the
   * script sets does not leak into the next. */
  lua_newtable(L);
  lua_newtable(L);
  lua_pushglobaltable(L);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  if (!lua_setupvalue(L, base + 1, 1)) lua_pop(L, 1);
  for (int i = 0; i < srv->lua.argc; i++) lua_pushstring(L, srv->lua.argv[i]);
  if (hs_script_load_call(srv, srv->lua.argc, 1, base, "loading", err, errlen) != LUA_OK) {
    lua_settop(L, top);
    return -1;
  }
  hs_limits_t lim;
  hs_framer_t f;
  char merr[512];
  if (hs_module_read(L, -1, &srv->cli, &lim, &f, merr, sizeof merr)) {
    snprintf(err, errlen, "%s: %s", srv->lua.script_path, merr);
    lua_settop(L, top);
    return -1;
  }
  hs_rawfield(L, -1, "handle");
  srv->lua.coro_style = lua_type(L, -1) == LUA_TFUNCTION;
  lua_pop(L, 1);
  if (srv->lua.module_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  srv->lua.module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  hs_script_cache_on_message(srv);
  srv->limits = lim;
  srv->framer = f;
  lua_settop(L, top);
  return 0;
}

static void set_path(lua_State *L, const char *field, const char *prefix) {
  lua_getglobal(L, "package");
  hs_rawfield(L, -1, field);
  lua_pushfstring(L, "%s;%s", prefix, lua_tostring(L, -1));
  lua_setfield(L, -3, field);
  lua_pop(L, 2);
}

/* Where the originals of the guarded functions are kept (registry keys):
 * not as upvalues, which debug.getupvalue would hand out. */
#define ORIG_SETMETATABLE "hotsock.setmetatable"
#define ORIG_DEBUG_SETMETATABLE "hotsock.debug.setmetatable"

/* setmetatable and debug.setmetatable, refusing a metatable with __gc:
 * Lua runs finalizers with hooks off, so a finalizer written in Lua would
 * run outside the handler budget (a loop in one stalls every client for
 * good). */
static int guarded_setmetatable(lua_State *L, const char *orig) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    int t = lua_rawget(L, 2);
    lua_pop(L, 1);
    if (t != LUA_TNIL)
      return luaL_error(L,
                        "setmetatable: a metatable with __gc is not allowed in hotsock "
                        "scripts (finalizers run outside handler_budget); close "
                        "resources in on_close or with a <close> variable");
  }
  lua_getfield(L, LUA_REGISTRYINDEX, orig);
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

static int no_gc_setmetatable(lua_State *L) { return guarded_setmetatable(L, ORIG_SETMETATABLE); }

static int no_gc_debug_setmetatable(lua_State *L) {
  return guarded_setmetatable(L, ORIG_DEBUG_SETMETATABLE);
}

/* A debug function a script may not have. Upvalue 1: its name. */
static int debug_refused(lua_State *L) {
  return luaL_error(L,
                    "debug.%s is not available in hotsock scripts: it reaches around "
                    "the handler budget and the host's objects (debug.traceback and "
                    "debug.getinfo are)",
                    lua_tostring(L, lua_upvalueindex(1)));
}

/* The script's view of the standard library: setmetatable refuses __gc,
 * the debug library keeps traceback, getinfo and a guarded setmetatable
 * (the rest would reach the hook, upvalues, the registry and metatables a
 * finalizer could be put on), and file handles' metatable is protected. */
static void guard_libraries(lua_State *L) {
  lua_getglobal(L, "setmetatable");
  lua_setfield(L, LUA_REGISTRYINDEX, ORIG_SETMETATABLE);
  lua_pushcfunction(L, no_gc_setmetatable);
  lua_setglobal(L, "setmetatable");
  if (lua_getglobal(L, "debug") == LUA_TTABLE) { /* package.loaded.debug too */
    int dbg = lua_gettop(L);
    lua_getfield(L, dbg, "setmetatable");
    lua_setfield(L, LUA_REGISTRYINDEX, ORIG_DEBUG_SETMETATABLE);
    lua_pushnil(L);
    while (lua_next(L, dbg)) {
      lua_pop(L, 1);
      const char *k = lua_tostring(L, -1);
      if (strcmp(k, "traceback") == 0 || strcmp(k, "getinfo") == 0) continue;
      lua_pushvalue(L, -1); /* k, k */
      if (strcmp(k, "setmetatable") == 0) {
        lua_pushcfunction(L, no_gc_debug_setmetatable);
      } else {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, debug_refused, 1);
      }
      lua_rawset(L, dbg); /* replacing an existing key keeps lua_next valid */
    }
  }
  lua_pop(L, 1);
  if (luaL_getmetatable(L, LUA_FILEHANDLE) == LUA_TTABLE) {
    lua_pushliteral(L, "FILE*");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
}

/* os.exit from a script: log it and stop as SIGTERM does (on_shutdown,
 * queued output drains), then exit with the code given. */
static int script_exit(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  int code = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? 0 : 1) : (int)luaL_optinteger(L, 1, 0);
  hs_log(srv, HS_LOG_WARN, "os.exit(%d) called by the script: stopping as on SIGTERM", code);
  hs_host_request_exit(srv, code);
  return 0;
}

/* Lua's warnings (warn() in a script, an error in a C library's __gc) go
 * to the log, one line per message; "@on"/"@off" control messages are
 * ignored. */
static void warn_to_log(void *ud, const char *msg, int tocont) {
  hs_server_t *srv = ud;
  char *buf = srv->lua.warn_buf;
  size_t *len = &srv->lua.warn_len;
  if (*len == 0 && !tocont && msg[0] == '@') return;
  size_t n = strlen(msg);
  if (n > sizeof srv->lua.warn_buf - *len) n = sizeof srv->lua.warn_buf - *len;
  memcpy(buf + *len, msg, n);
  *len += n;
  if (tocont) return;
  if (HS_LOG_WARN >= srv->log_level)
    hs_log_write(HS_LOG_WARN, srv->lua.current ? srv->lua.current->id : 0, buf, *len);
  *len = 0;
}

/* package.path entries for the helpers shipped with the host, each after a
 * ';': lua/ beside the binary's tree (build tree or install), then
 * HOTSOCK_LUA_PATH. Shared with the workbench's Lua state (workbench.c). */
void hs_helper_path(char *buf, size_t len) {
  char exe[4096];
  size_t sz = sizeof exe;
  int off = 0;
  buf[0] = 0;
  if (uv_exepath(exe, &sz) == 0) {
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    off = snprintf(buf, len, ";%s/../lua/?.lua;%s/../share/hotsock/lua/?.lua", exe, exe);
    if (off < 0 || (size_t)off >= len) off = (int)strlen(buf);
  }
  const char *extra = getenv("HOTSOCK_LUA_PATH");
  if (extra && *extra) snprintf(buf + off, len - (size_t)off, ";%s", extra);
}

/* Create the Lua state: libraries, the hotsock module, package.path with the
 * script's folder and the shipped helpers, and the arg table. */
int hs_script_open(hs_server_t *srv) {
  lua_State *L = lua_newstate(l_alloc, srv);
  if (!L) return -1;
  srv->lua.L = L;
  /* The extra space names the connection a handle coroutine serves; threads
   * start with a copy of the main thread's, so it must say "none" here. */
  *(hs_conn_t **)lua_getextraspace(L) = NULL;
  srv->lua.module_ref = LUA_NOREF;
  srv->lua.prev_module_ref = LUA_NOREF;
  luaL_openlibs(L);
  /* The generational collector: a server makes short-lived strings and
   * tables for every message, and most die young. Measured under callgrind
   * (bench/load, docs/performance.md): 21 % fewer instructions per 16 KiB
   * echo, 1.6 % per pipelined line, 3 % per Redis command, against the
   * incremental one. A script may switch: collectgarbage("incremental"). */
  lua_gc(L, LUA_GCGEN, 0, 0);
  /* The budget (budget.c) is what enforces handler_budget: a script may
   * not take the hook away, nor put a finalizer where the hook does not
   * reach. */
  hs_budget_open(L);
  guard_libraries(L);
  if (lua_getglobal(L, "os") == LUA_TTABLE) {
    lua_pushcfunction(L, script_exit);
    lua_setfield(L, -2, "exit");
  }
  lua_pop(L, 1);
  lua_setwarnf(L, warn_to_log, srv);
  hs_coro_open(L);
  hs_lconn_open(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, hs_lhotsock_open);
  lua_setfield(L, -2, "hotsock");
  lua_pop(L, 1);

  /* Helpers: the script's folder first, then the shipped helpers. */
  char paths[4 * 4096 + 512];
  int off = snprintf(paths, sizeof paths, "%s/?.lua;%s/?/init.lua", srv->lua.script_dir,
                     srv->lua.script_dir);
  hs_helper_path(paths + off, sizeof paths - (size_t)off);
  set_path(L, "path", paths);
  hs_lhelpers_open(L); /* then the helpers built into the binary */

  lua_createtable(L, srv->lua.argc, 1);
  lua_pushstring(L, srv->lua.script_path);
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < srv->lua.argc; i++) {
    lua_pushstring(L, srv->lua.argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");

  lua_newtable(L);
  srv->lua.shared_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

void hs_script_close(hs_server_t *srv) {
  if (srv->lua.L) lua_close(srv->lua.L);
  hs_slab_destroy(&srv->lua.slab); /* after lua_close: every block is back */
  srv->lua.L = NULL;
  hs_ltls_close(srv);
  hs_ldict_close(srv);
}
