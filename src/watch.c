/* watch.c: reload when the script, or a module it required from its own
 * folder, changes on disk. The folder is watched rather than the file: an
 * editor that saves by writing a temporary file and renaming it over the
 * script (or by moving the script aside and writing a new one) replaces the
 * inode, which a watch on the file would lose; the folder's events name the
 * file whatever inode it has. Events are debounced (~50 ms) so one save gives
 * one reload, and a save caught half-way (the file missing during a rename,
 * or truncated and not yet written) waits for the event that completes it. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "hotsock.h"

#define DEBOUNCE_MS 50
#define MAX_CHANGED 8

typedef struct hs_watch {
  uv_fs_event_t ev;
  uv_timer_t debounce;
  hs_server_t *srv;
  int open_handles;                  /* freed when both handles closed */
  int nchanged;                      /* watched names changed since the last reload */
  char changed[MAX_CHANGED][256];
  char file[256];                    /* the script's base name */
} hs_watch_t;

/* A changed file that is missing or empty: an editor in the middle of a save.
 * Loading it now would fail, and the rest of the save will bring another
 * event. */
static const char *half_saved(hs_watch_t *w, const char *name) {
  char path[4096];
  struct stat st;
  int n = snprintf(path, sizeof path, "%s/%s", w->srv->script_dir, name);
  if (n < 0 || (size_t)n >= sizeof path) return NULL;
  if (stat(path, &st) != 0) return "missing";
  if (S_ISREG(st.st_mode) && st.st_size == 0) return "empty";
  return NULL;
}

static void debounce_cb(uv_timer_t *t) {
  hs_watch_t *w = t->data;
  int n = w->nchanged;
  w->nchanged = 0;
  for (int i = 0; i < n; i++) {
    const char *why = half_saved(w, w->changed[i]);
    if (why) {
      hs_log(w->srv, HS_LOG_DEBUG, "%s changed but is %s (a save in progress?); not reloading yet",
             w->changed[i], why);
      return;
    }
  }
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
  int seen = 0;
  for (int i = 0; i < w->nchanged && !seen; i++) seen = strcmp(w->changed[i], filename) == 0;
  if (!seen && w->nchanged < MAX_CHANGED)
    snprintf(w->changed[w->nchanged++], sizeof w->changed[0], "%s", filename);
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
