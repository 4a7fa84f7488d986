/* watch.c: reload when the script changes on disk. The script's folder is
 * watched rather than the file, so editors that save by writing a temporary
 * file and renaming it over the script keep being seen; events are debounced
 * (~50 ms) so one save gives one reload. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "hotsock.h"

#define DEBOUNCE_MS 50

typedef struct hs_watch {
  uv_fs_event_t ev;
  uv_timer_t debounce;
  hs_server_t *srv;
  int open_handles; /* freed when both handles closed */
  char file[256];   /* the script's base name */
} hs_watch_t;

static void debounce_cb(uv_timer_t *t) {
  hs_watch_t *w = t->data;
  hs_server_request_reload(w->srv, "file change");
}

/* The script itself, or a module it required from its own folder: a file
 * "name.lua" here whose module "name" is in package.loaded. */
static int watched_name(hs_watch_t *w, const char *name) {
  size_t n = strlen(name);
  if (strcmp(name, w->file) == 0) return 1;
  if (n <= 4 || n > 200 || strcmp(name + n - 4, ".lua") != 0) return 0;
  char mod[200];
  memcpy(mod, name, n - 4);
  mod[n - 4] = 0;
  lua_State *L = w->srv->L;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_getfield(L, -1, mod) != LUA_TNIL;
  lua_pop(L, 2);
  return loaded;
}

static void fs_cb(uv_fs_event_t *h, const char *filename, int events, int status) {
  hs_watch_t *w = h->data;
  (void)events;
  if (status < 0 || !filename || !watched_name(w, filename)) return;
  uv_timer_start(&w->debounce, debounce_cb, DEBOUNCE_MS, 0);
}

static void watch_close_cb(uv_handle_t *h) {
  hs_watch_t *w = h->data;
  if (--w->open_handles == 0) free(w);
}

void hs_watch_stop(hs_server_t *srv) {
  hs_watch_t *w = srv->watch;
  if (!w) return;
  srv->watch = NULL;
  uv_close((uv_handle_t *)&w->ev, watch_close_cb);
  uv_close((uv_handle_t *)&w->debounce, watch_close_cb);
}

int hs_watch_start(hs_server_t *srv) {
  hs_watch_t *w = calloc(1, sizeof *w);
  if (!w) return UV_ENOMEM;
  const char *base = strrchr(srv->script_path, '/');
  snprintf(w->file, sizeof w->file, "%s", base ? base + 1 : srv->script_path);
  w->srv = srv;
  uv_fs_event_init(srv->loop, &w->ev);
  uv_timer_init(srv->loop, &w->debounce);
  w->ev.data = w->debounce.data = w;
  w->open_handles = 2;
  int r = uv_fs_event_start(&w->ev, fs_cb, srv->script_dir, 0);
  if (r != 0) {
    hs_log(srv, HS_LOG_WARN, "cannot watch %s for changes (%s); SIGHUP still reloads",
           srv->script_dir, uv_strerror(r));
    srv->watch = w;
    hs_watch_stop(srv);
    return r;
  }
  uv_unref((uv_handle_t *)&w->ev);
  uv_unref((uv_handle_t *)&w->debounce);
  srv->watch = w;
  return 0;
}
