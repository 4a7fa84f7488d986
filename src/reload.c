/* reload.c: hot reload in the running process. A new version of the script
 * is loaded into a fresh environment under the load budget, its
 * on_reload(old) runs, and only then does it replace the module; on any
 * failure the old one keeps serving. A reload can put the new module on
 * probation (reload = {rollback_errors =, within =}): that many handler
 * errors within the window bring the previous module back. Modules the
 * script required from its own folder are loaded again each time. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "admin.h"
#include "host.h"
#include "sd.h"
#include "tls.h"

/* End the probation of the module in service: the previous one is let go. */
static void probation_end(hs_server_t *srv) {
  if (srv->lua.prev_module_ref != LUA_NOREF)
    luaL_unref(srv->lua.L, LUA_REGISTRYINDEX, srv->lua.prev_module_ref);
  srv->lua.prev_module_ref = LUA_NOREF;
  srv->lua.probation_until = 0;
  srv->lua.probation_errors = 0;
}

/* A handler error while a freshly reloaded module is on probation: after
 * rollback_errors of them within the window, go back to the previous module.
 * The swap is deferred to the before-sleep pass, outside any handler. */
void hs_reload_probation_error(hs_server_t *srv) {
  if (!srv->lua.probation_until) return;
  if (uv_now(srv->loop) > srv->lua.probation_until) {
    probation_end(srv);
    return;
  }
  if (++srv->lua.probation_errors >= srv->lua.probation_limit)
    hs_script_request_reload(srv, "rollback");
}

/* Go back to the module that served before the last reload. */
static void rollback(hs_server_t *srv) {
  if (srv->lua.prev_module_ref == LUA_NOREF) return;
  luaL_unref(srv->lua.L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  srv->lua.module_ref = srv->lua.prev_module_ref;
  srv->lua.prev_module_ref = LUA_NOREF;
  hs_script_cache_on_message(srv);
  srv->limits = srv->lua.prev_limits;
  srv->framer = srv->lua.prev_framer;
  srv->stats.generation++;
  hs_log(srv, HS_LOG_ERROR,
         "rolled back: the new code raised %d error(s) within its probation of "
         "%llu ms; generation %llu runs the previous code",
         srv->lua.probation_errors, (unsigned long long)srv->lua.probation_window,
         (unsigned long long)srv->stats.generation);
  srv->lua.probation_until = 0;
  srv->lua.probation_errors = 0;
}

void hs_script_request_reload(hs_server_t *srv, const char *trigger) {
  /* A worker's reloads are every worker's: the supervisor runs them. */
  if (hs_worker_forward(srv, trigger) == 0) return;
  if (strcmp(trigger, "rollback") == 0)
    srv->lua.rollback_pending = 1;
  else
    srv->lua.reload_trigger = trigger;
  hs_server_wake(srv);
}

/* Modules the script required from its own folder are loaded again on each
 * reload, so an edit to one of them takes effect. Their package.loaded
 * entries move to a side table (left on the stack) and come back if the
 * reload fails. Modules from elsewhere (the shipped helpers, the system's)
 * stay loaded. */
static int is_local_module(const hs_server_t *srv, const char *name) {
  char rel[256], path[PATH_MAX];
  size_t n = strlen(name);
  if (n == 0 || n >= sizeof rel) return 0;
  for (size_t i = 0; i <= n; i++) rel[i] = name[i] == '.' ? '/' : name[i];
  int w = snprintf(path, sizeof path, "%s/%s.lua", srv->lua.script_dir, rel);
  if (w > 0 && (size_t)w < sizeof path && access(path, F_OK) == 0) return 1;
  w = snprintf(path, sizeof path, "%s/%s/init.lua", srv->lua.script_dir, rel);
  return w > 0 && (size_t)w < sizeof path && access(path, F_OK) == 0;
}

static void forget_local_modules(hs_server_t *srv) {
  lua_State *L = srv->lua.L;
  lua_newtable(L);
  int saved = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = saved + 1;
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) == LUA_TSTRING && is_local_module(srv, lua_tostring(L, -2))) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, saved); /* saved[name] = module */
    } else {
      lua_pop(L, 1);
    }
  }
  /* Clear after the walk: lua_next must not see fields vanish under it. */
  lua_pushnil(L);
  while (lua_next(L, saved)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, loaded);
  }
  lua_pop(L, 1); /* package.loaded; the side table stays */
}

/* Put back what forget_local_modules saved (the table on top), or drop it. */
static void restore_local_modules(hs_server_t *srv, int put_back) {
  lua_State *L = srv->lua.L;
  int saved = lua_gettop(L);
  if (put_back) {
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    while (lua_next(L, saved)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, saved + 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* new.on_reload(old), when the new module has one, under the load budget.
 * Its error or time-out fails the reload: returns -1 with err filled. It
 * does not count as a handler error (nor against a probation). */
static int call_on_reload(hs_server_t *srv, int old_ref, char *err, size_t errlen) {
  lua_State *L = srv->lua.L;
  int top = lua_gettop(L);
  if (!hs_script_get_handler(srv, "on_reload")) return 0;
  lua_pushcfunction(L, hs_script_msgh);
  lua_insert(L, top + 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, old_ref);
  int st = hs_script_load_call(srv, 1, 0, top + 1, "on_reload", err, errlen);
  lua_settop(L, top);
  return st == LUA_OK ? 0 : -1;
}

/* The new module's default TLS settings (*out), with a default certificate
 * checked by loading it. 0, or -1 with err. */
static int new_tls_defaults(hs_server_t *srv, struct hs_tls_opts **out, char *err, size_t errlen) {
  char why[1024];
  if (hs_ltls_defaults(srv, out, err, errlen) != 0) return -1;
  if (!*out || !(*out)->cert) return 0;
  hs_tls_ctx_t *probe = hs_tls_ctx_new(*out, 0, why, sizeof why);
  if (!probe) {
    snprintf(err, errlen, "tls: %s", why);
    hs_tls_opts_free(*out);
    free(*out);
    *out = NULL;
    return -1;
  }
  hs_tls_ctx_unref(probe);
  return 0;
}

/* Load the script again and swap modules only when everything succeeded:
 * the TLS listeners' certificate and key files load, the chunk ran and
 * returned a valid module (whose default TLS settings load), and its
 * on_reload(old) ran. */
/* A reload prepared and waiting for its verdict (with --workers, every
 * worker prepares, and the supervisor commits only when all succeeded).
 * The old module keeps serving meanwhile. */
typedef struct hs_reload_pending {
  int new_ref; /* the new module */
  hs_limits_t new_limits;
  hs_framer_t new_framer;
  int saved_ref; /* local modules' package.loaded entries before the load */
  struct hs_tls_opts *tls_default;
  char trigger[64];
  uint64_t t0;
  char why[240]; /* why this process could not load it */
} hs_reload_pending_t;

static hs_reload_pending_t *pending_of(hs_server_t *srv) { return srv->lua.reload_pending; }

int hs_reload_prepare(hs_server_t *srv, const char *trigger, char *err, size_t errlen) {
  lua_State *L = srv->lua.L;
  if (pending_of(srv)) hs_reload_finish(srv, 0); /* an unanswered one goes */
  hs_reload_pending_t *p = calloc(1, sizeof *p);
  if (!p) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  p->t0 = uv_hrtime();
  snprintf(p->trigger, sizeof p->trigger, "%s", trigger);
  int old_ref = srv->lua.module_ref;
  hs_limits_t old_limits = srv->limits;
  hs_framer_t old_framer = srv->framer;
  int old_style = srv->lua.coro_style;
  /* Keep the old module alive while the new one loads. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, old_ref);
  srv->lua.module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  int r = hs_server_tls_prepare(srv, err, errlen);
  forget_local_modules(srv);
  p->saved_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* the side table */
  if (r == 0) r = hs_script_load(srv, err, errlen);
  if (r == 0) r = new_tls_defaults(srv, &p->tls_default, err, errlen);
  if (r == 0) r = hs_ldict_reload_check(srv, err, errlen);
  if (r == 0) r = call_on_reload(srv, old_ref, err, errlen);
  if (r == 0 && srv->lua.coro_style != old_style) {
    snprintf(err, errlen, "a reload cannot switch between handle and event style");
    r = -1;
  }
  /* The old module serves until the verdict; the new one waits. */
  p->new_ref = srv->lua.module_ref;
  p->new_limits = srv->limits;
  p->new_framer = srv->framer;
  srv->lua.module_ref = old_ref;
  srv->limits = old_limits;
  srv->framer = old_framer;
  srv->lua.coro_style = old_style;
  hs_script_cache_on_message(srv);
  srv->lua.reload_pending = p;
  if (r != 0) {
    snprintf(p->why, sizeof p->why, "%s", err);
    hs_reload_finish(srv, 0);
    return -1;
  }
  return 0;
}

/* Put the prepared module in service (commit), or let it go. */
void hs_reload_finish(hs_server_t *srv, int commit) {
  lua_State *L = srv->lua.L;
  hs_reload_pending_t *p = pending_of(srv);
  if (!p) return;
  srv->lua.reload_pending = NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->saved_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, p->saved_ref);
  restore_local_modules(srv, !commit);
  /* New handshakes use the files as they are now; live ones keep theirs. */
  hs_server_tls_commit(srv, commit);
  if (!commit) {
    if (p->new_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, p->new_ref);
    if (p->tls_default) {
      hs_tls_opts_free(p->tls_default);
      free(p->tls_default);
    }
    srv->stats.reload_failed++;
    hs_admin_reload_done(srv, p->trigger, 0,
                         p->why[0] ? p->why : "refused: another worker could not load it",
                         (double)(uv_hrtime() - p->t0) / 1e6);
    free(p);
    return;
  }
  hs_ltls_set_defaults(srv, p->tls_default);
  hs_ltls_flush(srv);
  int old_ref = srv->lua.module_ref;
  hs_limits_t old_limits = srv->limits;
  hs_framer_t old_framer = srv->framer;
  srv->lua.module_ref = p->new_ref;
  srv->limits = p->new_limits;
  srv->framer = p->new_framer;
  hs_script_cache_on_message(srv);
  /* Probation: keep the old module until the window passes cleanly. */
  probation_end(srv);
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  if (hs_rawfield(L, -1, "reload") == LUA_TTABLE) {
    hs_rawfield(L, -1, "rollback_errors");
    hs_rawfield(L, -2, "within");
    lua_Integer n = lua_tointeger(L, -2), within = lua_tointeger(L, -1);
    lua_pop(L, 2);
    if (n > 0) {
      srv->lua.prev_module_ref = old_ref;
      old_ref = LUA_NOREF;
      srv->lua.prev_limits = old_limits;
      srv->lua.prev_framer = old_framer;
      srv->lua.probation_limit = (int)n;
      srv->lua.probation_window = within > 0 ? (uint64_t)within : 10000;
      srv->lua.probation_until = uv_now(srv->loop) + srv->lua.probation_window;
    }
  }
  lua_pop(L, 2);
  if (old_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, old_ref);
  srv->stats.reload_ok++;
  srv->stats.generation++;
  hs_log(srv, HS_LOG_INFO, "reloaded (%s): generation %llu in %.1f ms", p->trigger,
         (unsigned long long)srv->stats.generation, (double)(uv_hrtime() - p->t0) / 1e6);
  hs_admin_reload_done(srv, p->trigger, 1, "", (double)(uv_hrtime() - p->t0) / 1e6);
  free(p);
  hs_watch_refresh(srv);
}

int hs_script_reload(hs_server_t *srv, const char *trigger) {
  if (strcmp(trigger, "rollback") == 0) {
    rollback(srv);
    return 0;
  }
  char err[2048], status[256];
  uint64_t t0 = uv_hrtime();
  hs_sd_reloading(srv->sd); /* systemd: RELOADING=1, then READY=1 either way */
  if (hs_reload_prepare(srv, trigger, err, sizeof err) != 0) {
    hs_log(srv, HS_LOG_ERROR, "reload (%s) failed in %.1f ms, generation %llu keeps serving: %s",
           trigger, (double)(uv_hrtime() - t0) / 1e6, (unsigned long long)srv->stats.generation,
           err);
    snprintf(status, sizeof status, "reload (%s) failed, generation %llu keeps serving: %.160s",
             trigger, (unsigned long long)srv->stats.generation, err);
    hs_sd_reloaded(srv->sd, 0, status);
    return -1;
  }
  hs_reload_finish(srv, 1);
  snprintf(status, sizeof status, "reloaded (%s): generation %llu", trigger,
           (unsigned long long)srv->stats.generation);
  hs_sd_reloaded(srv->sd, 1, status);
  return 0;
}
