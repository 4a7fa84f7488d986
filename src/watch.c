/* watch.c: reload when the script, or a module it required from its own
 * folder or a folder below it, changes on disk. Folders are watched rather
 * than files: an
 * editor that saves by writing a temporary file and renaming it over the
 * script (or by moving the script aside and writing a new one) replaces the
 * inode, which a watch on the file would lose; the folder's events name the
 * file whatever inode it has. Events are debounced (~50 ms) so one save gives
 * one reload, and a save caught half-way (the file missing during a rename,
 * or truncated and not yet written) waits for the event that completes it. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#include "host.h"

#define DEBOUNCE_MS 50
#define MAX_CHANGED 8
#define MAX_SUBDIRS 16 /* folders below the script's with modules it loaded */

struct hs_watch;

/* A folder below the script's, holding a module the script loaded
 * (`require "lib.util"` -> lib/util.lua, `require "pkg"` -> pkg/init.lua). */
typedef struct hs_subdir {
  uv_fs_event_t ev;
  struct hs_watch *w;
  char rel[200]; /* "lib", "lib/sub" */
} hs_subdir_t;

typedef struct hs_watch {
  uv_fs_event_t ev;
  uv_timer_t debounce;
  hs_server_t *srv;
  int open_handles;               /* freed when every handle is closed */
  int nchanged;                   /* watched names changed since the last reload */
  char changed[MAX_CHANGED][256]; /* paths relative to the script's folder */
  char file[256];                 /* the script's base name */
  int nsub;                       /* subdirs in use */
  hs_subdir_t sub[MAX_SUBDIRS];
} hs_watch_t;

/* A changed file that is missing or empty: an editor in the middle of a save.
 * Loading it now would fail, and the rest of the save will bring another
 * event. */
static const char *half_saved(hs_watch_t *w, const char *name) {
  char path[4096];
  struct stat st;
  int n = snprintf(path, sizeof path, "%s/%s", w->srv->lua.script_dir, name);
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
  hs_script_request_reload(w->srv, "file change");
}

static int is_loaded(hs_watch_t *w, const char *mod) {
  lua_State *L = w->srv->lua.L;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushstring(L, mod);
  int loaded = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return loaded;
}

/* Whether `name`, a file in the folder rel below the script's ("" for the
 * script's own), is the script or a module it loaded: "x.lua" for module
 * "<rel>.x", "init.lua" for module "<rel>". */
static int watched_name(hs_watch_t *w, const char *rel, const char *name) {
  size_t n = strlen(name), r = strlen(rel);
  if (!*rel && strcmp(name, w->file) == 0) return 1;
  if (n <= 4 || n > 200 || strcmp(name + n - 4, ".lua") != 0) return 0;
  char mod[420];
  for (size_t i = 0; i < r; i++) mod[i] = rel[i] == '/' ? '.' : rel[i];
  if (r && strcmp(name, "init.lua") == 0) {
    mod[r] = 0;
  } else {
    size_t at = r;
    if (r) mod[at++] = '.';
    memcpy(mod + at, name, n - 4);
    mod[at + n - 4] = 0;
  }
  return is_loaded(w, mod);
}

static void changed(hs_watch_t *w, const char *rel, const char *filename) {
  char path[256];
  int k = snprintf(path, sizeof path, "%s%s%s", rel, *rel ? "/" : "", filename);
  if (k < 0 || (size_t)k >= sizeof path) return;
  int seen = 0;
  for (int i = 0; i < w->nchanged && !seen; i++) seen = strcmp(w->changed[i], path) == 0;
  if (!seen && w->nchanged < MAX_CHANGED) memcpy(w->changed[w->nchanged++], path, (size_t)k + 1);
  uv_timer_start(&w->debounce, debounce_cb, DEBOUNCE_MS, 0);
}

static void fs_cb(uv_fs_event_t *h, const char *filename, int events, int status) {
  hs_watch_t *w = h->data;
  (void)events;
  if (status < 0 || !filename || !watched_name(w, "", filename)) return;
  changed(w, "", filename);
}

static void sub_cb(uv_fs_event_t *h, const char *filename, int events, int status) {
  hs_subdir_t *d = h->data;
  (void)events;
  if (status < 0 || !filename || !d->w || !watched_name(d->w, d->rel, filename)) return;
  changed(d->w, d->rel, filename);
}

/* The folder below the script's that holds local module `mod`, into rel
 * ("" when it is the script's own folder); 0, or -1 when the module is not
 * a file under the script's folder. */
static int module_dir(hs_server_t *srv, const char *mod, char *rel, size_t relsz) {
  char path[4096], r[200];
  size_t n = strlen(mod);
  if (n == 0 || n >= sizeof r) return -1;
  for (size_t i = 0; i <= n; i++) r[i] = mod[i] == '.' ? '/' : mod[i];
  int k = snprintf(path, sizeof path, "%s/%s.lua", srv->lua.script_dir, r);
  if (k > 0 && (size_t)k < sizeof path && access(path, F_OK) == 0) {
    char *slash = strrchr(r, '/');
    if (slash)
      *slash = 0;
    else
      r[0] = 0;
    return snprintf(rel, relsz, "%s", r) < (int)relsz ? 0 : -1;
  }
  k = snprintf(path, sizeof path, "%s/%s/init.lua", srv->lua.script_dir, r);
  if (k > 0 && (size_t)k < sizeof path && access(path, F_OK) == 0)
    return snprintf(rel, relsz, "%s", r) < (int)relsz ? 0 : -1;
  return -1;
}

static void watch_subdir(hs_watch_t *w, const char *rel) {
  hs_server_t *srv = w->srv;
  for (int i = 0; i < w->nsub; i++)
    if (strcmp(w->sub[i].rel, rel) == 0) return;
  if (w->nsub == MAX_SUBDIRS) {
    hs_log(srv, HS_LOG_WARN,
           "not watching %s/%s: already %d folders of modules watched; "
           "SIGHUP reloads",
           srv->lua.script_dir, rel, MAX_SUBDIRS);
    return;
  }
  char path[4096];
  int k = snprintf(path, sizeof path, "%s/%s", srv->lua.script_dir, rel);
  if (k < 0 || (size_t)k >= sizeof path) return;
  hs_subdir_t *d = &w->sub[w->nsub];
  snprintf(d->rel, sizeof d->rel, "%s", rel);
  d->w = w;
  uv_fs_event_init(srv->loop, &d->ev);
  d->ev.data = d;
  w->open_handles++;
  w->nsub++;
  int r = uv_fs_event_start(&d->ev, sub_cb, path, 0);
  if (r != 0) {
    hs_log(srv, HS_LOG_WARN, "cannot watch %s for changes (%s); SIGHUP still reloads", path,
           uv_strerror(r));
    d->w = NULL; /* stays allocated, closed with the rest */
  }
  uv_unref((uv_handle_t *)&d->ev);
}

/* After a load: watch the folders below the script's that hold modules it
 * loaded. Folders no longer used stay watched; their events match nothing. */
void hs_watch_refresh(hs_server_t *srv) {
  hs_watch_t *w = srv->lua.watch;
  if (!w) return;
  lua_State *L = srv->lua.L;
  char rel[200];
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING &&
        module_dir(srv, lua_tostring(L, -1), rel, sizeof rel) == 0 && rel[0])
      watch_subdir(w, rel);
  }
  lua_pop(L, 1);
}

static void watch_close_cb(uv_handle_t *h) {
  hs_watch_t *w = h->data;
  if (--w->open_handles == 0) free(w);
}

void hs_watch_stop(hs_server_t *srv) {
  hs_watch_t *w = srv->lua.watch;
  if (!w) return;
  srv->lua.watch = NULL;
  uv_close((uv_handle_t *)&w->ev, watch_close_cb);
  uv_close((uv_handle_t *)&w->debounce, watch_close_cb);
  for (int i = 0; i < w->nsub; i++) {
    w->sub[i].ev.data = w;
    uv_close((uv_handle_t *)&w->sub[i].ev, watch_close_cb);
  }
}

int hs_watch_start(hs_server_t *srv) {
  hs_watch_t *w = calloc(1, sizeof *w);
  if (!w) return UV_ENOMEM;
  const char *base = strrchr(srv->lua.script_path, '/');
  snprintf(w->file, sizeof w->file, "%s", base ? base + 1 : srv->lua.script_path);
  w->srv = srv;
  uv_fs_event_init(srv->loop, &w->ev);
  uv_timer_init(srv->loop, &w->debounce);
  w->ev.data = w->debounce.data = w;
  w->open_handles = 2;
  int r = uv_fs_event_start(&w->ev, fs_cb, srv->lua.script_dir, 0);
  if (r != 0) {
    hs_log(srv, HS_LOG_WARN, "cannot watch %s for changes (%s); SIGHUP still reloads",
           srv->lua.script_dir, uv_strerror(r));
    srv->lua.watch = w;
    hs_watch_stop(srv);
    return r;
  }
  uv_unref((uv_handle_t *)&w->ev);
  uv_unref((uv_handle_t *)&w->debounce);
  srv->lua.watch = w;
  hs_watch_refresh(srv);
  return 0;
}
