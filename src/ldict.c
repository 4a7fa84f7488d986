/* ldict.c: hs.dict(name), the dictionaries shared by every worker of a
 * server, as scripts see them (host layer; the dictionaries themselves are
 * pure C, dict.c).
 *
 * The module declares them: `dicts = { sessions = "16m", hits = 65536 }`.
 * They are made once, at start-up, before any worker is forked, and keep
 * their contents across reloads. A mapping belongs to the process tree, not
 * to one server: the supervisor lets go of its own server before it forks,
 * and each worker starts its server anew, so the mappings this process made
 * or inherited are listed here (`made`) and a worker's start-up finds the
 * ones its module declares there rather than making its own. They are
 * never unmapped before the process exits.
 *
 * The lock of a dictionary is taken and let go inside each dict.c call, and
 * no Lua function is called in between: every Lua value is read (and every
 * buffer a result needs is allocated, which may raise) before the call, and
 * results are pushed after it. A short buffer is detected and the call made
 * again with a big enough one. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "dict.h"
#include "host.h"

#define DICT_MT "hotsock.dict"
#define MAX_DICTS 64 /* dictionaries a module may declare */

/* Every dictionary this process made or inherited from the one that forked
 * it. Process-wide on purpose (see the top of the file). */
static struct {
  hs_dict_t **v;
  int n, cap;
} made;

/* The server's own list: the dictionaries its modules declared. */
typedef struct hs_dicts {
  hs_dict_t **v;
  int n, cap;
} hs_dicts_t;

/* What a Lua handle holds: the dictionary, or NULL until its name is made
 * (a handle taken while the chunk that declares it is still loading). */
typedef struct ldict {
  hs_dict_t *d;
  char name[HS_DICT_NAME_MAX + 1];
} ldict_t;

static hs_dict_t *find_in(hs_dict_t **v, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(hs_dict_name(v[i]), name) == 0) return v[i];
  return NULL;
}

static hs_dict_t *find_dict(hs_server_t *srv, const char *name) {
  hs_dicts_t *reg = srv->lua.dicts;
  return reg ? find_in(reg->v, reg->n, name) : NULL;
}

static int push_ptr(hs_dict_t ***v, int *n, int *cap, hs_dict_t *d) {
  if (*n == *cap) {
    int ncap = *cap ? *cap * 2 : 8;
    hs_dict_t **nv = realloc(*v, (size_t)ncap * sizeof *nv);
    if (!nv) return -1;
    *v = nv;
    *cap = ncap;
  }
  (*v)[(*n)++] = d;
  return 0;
}

/* ---- the module's declarations ---- */

typedef struct decl {
  char name[HS_DICT_NAME_MAX + 1];
  size_t size;
} decl_t;

typedef struct decls {
  decl_t v[MAX_DICTS];
  int n;
  char err[512]; /* empty: all good */
} decls_t;

/* "16m" for 16 MiB and so on: a size as a module would write it. */
static void fmt_size(size_t n, char *out, size_t outlen) {
  if (n % ((size_t)1 << 30) == 0)
    snprintf(out, outlen, "%zug", n >> 30);
  else if (n % ((size_t)1 << 20) == 0)
    snprintf(out, outlen, "%zum", n >> 20);
  else if (n % 1024 == 0)
    snprintf(out, outlen, "%zuk", n >> 10);
  else
    snprintf(out, outlen, "%zu bytes", n);
}

/* A size at idx: a whole number of bytes, or a string of digits with an
 * optional k, m or g (powers of 1024). 0, or -1 with d->err filled. */
static int read_size(lua_State *L, int idx, const char *name, decls_t *d, size_t *out) {
  unsigned long long v = 0;
  int ok = 0;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int isint;
    lua_Integer i = lua_tointegerx(L, idx, &isint);
    ok = isint && i >= 0;
    v = ok ? (unsigned long long)i : 0;
  } else if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len), *p = s;
    while (p < s + len && *p >= '0' && *p <= '9' && v < (1ull << 40))
      v = v * 10 + (unsigned)(*p++ - '0');
    int shift = 0;
    if (p < s + len && (*p == 'k' || *p == 'K'))
      shift = 10, p++;
    else if (p < s + len && (*p == 'm' || *p == 'M'))
      shift = 20, p++;
    else if (p < s + len && (*p == 'g' || *p == 'G'))
      shift = 30, p++;
    ok = p > s && s[0] >= '0' && s[0] <= '9' && p == s + len && v < (1ull << 40);
    v <<= shift;
  }
  char lo[32], hi[32];
  fmt_size(HS_DICT_MIN_SIZE, lo, sizeof lo);
  fmt_size(HS_DICT_MAX_SIZE, hi, sizeof hi);
  if (!ok) {
    snprintf(d->err, sizeof d->err,
             "%s: the size must be a number of bytes or a string such as \"16m\" (k, m, g)", name);
    return -1;
  }
  if (v < HS_DICT_MIN_SIZE || v > HS_DICT_MAX_SIZE) {
    snprintf(d->err, sizeof d->err, "%s: the size must be from %s to %s, not %llu bytes", name, lo,
             hi, v);
    return -1;
  }
  *out = (size_t)v;
  return 0;
}

/* Read the module's dicts into the decls_t given as a light userdata.
 * Runs protected (a memory error cannot escape); problems go to err. */
static int read_decls(lua_State *L) {
  decls_t *d = lua_touserdata(L, 1);
  hs_server_t *srv = hs_server_from_lua(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  int t = lua_type(L, -1) == LUA_TTABLE ? hs_rawfield(L, -1, "dicts") : LUA_TNIL;
  if (t == LUA_TNIL) return 0;
  if (t != LUA_TTABLE) {
    snprintf(d->err, sizeof d->err,
             "must be a table of name = size, such as { sessions = \"16m\" }");
    return 0;
  }
  int tab = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, tab)) {
    size_t n;
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &n) : NULL;
    if (!name || n == 0 || n > HS_DICT_NAME_MAX || strlen(name) != n) {
      snprintf(d->err, sizeof d->err, "a dictionary name is a string of 1 to %d bytes",
               HS_DICT_NAME_MAX);
      return 0;
    }
    if (d->n == MAX_DICTS) {
      snprintf(d->err, sizeof d->err, "at most %d dictionaries", MAX_DICTS);
      return 0;
    }
    decl_t *x = &d->v[d->n];
    memcpy(x->name, name, n + 1);
    if (read_size(L, -1, x->name, d, &x->size) != 0) return 0;
    d->n++;
    lua_pop(L, 1);
  }
  return 0;
}

/* The current module's declarations: 0, or -1 with err. */
static int module_decls(hs_server_t *srv, decls_t *d, char *err, size_t errlen) {
  lua_State *L = srv->lua.L;
  int top = lua_gettop(L);
  memset(d, 0, sizeof *d);
  lua_pushcfunction(L, read_decls);
  lua_pushlightuserdata(L, d);
  int st = lua_pcall(L, 1, 0, 0);
  if (st != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "out of memory");
    lua_settop(L, top);
    return -1;
  }
  lua_settop(L, top);
  if (d->err[0]) {
    snprintf(err, errlen, "%s", d->err);
    return -1;
  }
  return 0;
}

/* Bring the declared dictionaries into the server's list: ones it has, or
 * ones this process made or inherited, when their sizes agree; new ones
 * only when may_make. With dry_run, only check. 0, or -1 with err. */
static int adopt(hs_server_t *srv, const decls_t *dc, int may_make, int dry_run, char *err,
                 size_t errlen) {
  hs_dicts_t *reg = srv->lua.dicts;
  for (int i = 0; i < dc->n; i++) {
    const decl_t *x = &dc->v[i];
    hs_dict_t *d = find_dict(srv, x->name);
    int mine = d != NULL;
    if (!d) d = find_in(made.v, made.n, x->name);
    if (d && hs_dict_capacity(d) != x->size) {
      char has[32], asks[32];
      fmt_size(hs_dict_capacity(d), has, sizeof has);
      fmt_size(x->size, asks, sizeof asks);
      snprintf(err, errlen,
               "dictionary %s: adding or resizing a dictionary takes a restart (it has %s; the "
               "module asks for %s)",
               x->name, has, asks);
      return -1;
    }
    if (!d && !may_make) {
      snprintf(err, errlen,
               "dictionary %s: adding or resizing a dictionary takes a restart (the workers "
               "share only the dictionaries made at start-up)",
               x->name);
      return -1;
    }
    if (dry_run || mine) continue;
    if (!d) {
      char why[256];
      d = hs_dict_create(x->name, x->size, why, sizeof why);
      if (!d) {
        snprintf(err, errlen, "dictionary %s: %s", x->name, why);
        return -1;
      }
      if (push_ptr(&made.v, &made.n, &made.cap, d) != 0) {
        hs_dict_destroy(d);
        snprintf(err, errlen, "out of memory");
        return -1;
      }
    }
    if (push_ptr(&reg->v, &reg->n, &reg->cap, d) != 0) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
  }
  return 0;
}

/* A process that serves alone may make a dictionary at any time; a worker
 * only finds the ones made before the workers were forked. */
static int may_make(const hs_server_t *srv) { return srv->worker_id == 0; }

int hs_ldict_setup(hs_server_t *srv, char *err, size_t errlen) {
  decls_t *dc = malloc(sizeof *dc);
  if (!srv->lua.dicts) srv->lua.dicts = calloc(1, sizeof(hs_dicts_t));
  if (!dc || !srv->lua.dicts) {
    free(dc);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int r = module_decls(srv, dc, err, errlen);
  if (r == 0) r = adopt(srv, dc, may_make(srv), 1, err, errlen);
  if (r == 0) r = adopt(srv, dc, may_make(srv), 0, err, errlen);
  free(dc);
  return r;
}

int hs_ldict_reload_check(hs_server_t *srv, char *err, size_t errlen) {
  char why[1024];
  decls_t *dc = malloc(sizeof *dc);
  if (!srv->lua.dicts) srv->lua.dicts = calloc(1, sizeof(hs_dicts_t));
  if (!dc || !srv->lua.dicts) {
    free(dc);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int r = module_decls(srv, dc, why, sizeof why);
  if (r != 0) snprintf(err, errlen, "dicts: %s", why);
  /* Check them all before making any. */
  if (r == 0) r = adopt(srv, dc, may_make(srv), 1, err, errlen);
  if (r == 0) r = adopt(srv, dc, may_make(srv), 0, err, errlen);
  free(dc);
  return r;
}

void hs_ldict_close(hs_server_t *srv) {
  hs_dicts_t *reg = srv->lua.dicts;
  if (!reg) return;
  free(reg->v);
  free(reg);
  srv->lua.dicts = NULL;
}

/* ---- the Lua face ---- */

/* Whether the script's chunk is running (it is loading), maybe through a
 * module it requires: the chunk of the script file is on the stack. */
static int script_loading(lua_State *L, const hs_server_t *srv) {
  lua_Debug ar;
  const char *path = srv->lua.script_path;
  for (int level = 1; lua_getstack(L, level, &ar); level++)
    if (lua_getinfo(L, "S", &ar) && strcmp(ar.what, "main") == 0 && ar.source[0] == '@' && path &&
        strcmp(ar.source + 1, path) == 0)
      return 1;
  return 0;
}

/* The dictionary of the handle at 1, or raise. MAY_LJMP. */
static hs_dict_t *check_dict(lua_State *L) {
  ldict_t *h = luaL_checkudata(L, 1, DICT_MT);
  if (!h->d) h->d = find_dict(hs_server_from_lua(L), h->name);
  if (!h->d) luaL_error(L, "no dictionary %s (declare it in dicts)", h->name);
  return h->d;
}

static const char *check_key(lua_State *L, size_t *len) { return luaL_checklstring(L, 2, len); }

/* A value to store, at idx. MAY_LJMP. */
static void check_value(lua_State *L, int idx, hs_dict_value_t *v) {
  memset(v, 0, sizeof *v);
  switch (lua_type(L, idx)) {
  case LUA_TNONE:
  case LUA_TNIL: v->type = HS_DICT_NIL; break;
  case LUA_TBOOLEAN:
    v->type = HS_DICT_BOOL;
    v->b = lua_toboolean(L, idx);
    break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      v->type = HS_DICT_INT;
      v->i = (int64_t)lua_tointeger(L, idx);
    } else {
      v->type = HS_DICT_FLOAT;
      v->f = (double)lua_tonumber(L, idx);
    }
    break;
  case LUA_TSTRING:
    v->type = HS_DICT_STR;
    v->s = lua_tolstring(L, idx, &v->len);
    break;
  default: luaL_typeerror(L, idx, "string, number, boolean or nil");
  }
}

/* A number at idx (an integer stays one). MAY_LJMP. */
static void check_number(lua_State *L, int idx, hs_dict_value_t *v) {
  luaL_checktype(L, idx, LUA_TNUMBER);
  check_value(L, idx, v);
}

/* A time to live in seconds at idx (absent: 0, never) as ms, rounded up.
 * MAY_LJMP. */
static uint64_t opt_ttl(lua_State *L, int idx) {
  lua_Number t = luaL_optnumber(L, idx, 0);
  luaL_argcheck(L, t >= 0 && t <= (lua_Number)(HS_MAX_MS / 1000), idx,
                "ttl must be seconds from 0 (never expires) to ten years");
  lua_Number ms = t * 1000;
  uint64_t n = (uint64_t)ms;
  if ((lua_Number)n < ms) n++;
  return n;
}

static void push_value(lua_State *L, const hs_dict_value_t *v, const char *buf) {
  switch (v->type) {
  case HS_DICT_BOOL: lua_pushboolean(L, v->b); break;
  case HS_DICT_INT: lua_pushinteger(L, (lua_Integer)v->i); break;
  case HS_DICT_FLOAT: lua_pushnumber(L, (lua_Number)v->f); break;
  case HS_DICT_STR: lua_pushlstring(L, buf, v->len); break;
  default: lua_pushnil(L); break;
  }
}

/* nil, message */
static int fail(lua_State *L, int r) {
  lua_pushnil(L);
  lua_pushstring(L, hs_dict_strerror(r));
  return 2;
}

/* d:get(key) -> value, or nil (absent or expired), or nil, err. */
static int d_get(lua_State *L) {
  hs_dict_t *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  char small[512], *buf = small;
  size_t cap = sizeof small;
  hs_dict_value_t v;
  int r;
  /* A string longer than the buffer: again, with room for it. */
  while ((r = hs_dict_get(d, key, klen, &v, buf, cap)) == 0 && v.type == HS_DICT_STR &&
         v.len > cap) {
    cap = v.len;
    buf = lua_newuserdatauv(L, cap, 0);
  }
  if (r == HS_DICT_ENOTFOUND) {
    lua_pushnil(L);
    return 1;
  }
  if (r != 0) return fail(L, r);
  push_value(L, &v, buf);
  return 1;
}

/* set, add, replace, safe_set, safe_add: ok, err, forcible. */
static int store(lua_State *L, int op) {
  hs_dict_t *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  hs_dict_value_t v;
  check_value(L, 3, &v);
  uint64_t ttl = opt_ttl(L, 4);
  int forcible = 0;
  int r = hs_dict_set(d, op, key, klen, &v, ttl, &forcible);
  lua_pushboolean(L, r == 0);
  if (r == 0)
    lua_pushnil(L);
  else
    lua_pushstring(L, hs_dict_strerror(r));
  lua_pushboolean(L, forcible);
  return 3;
}

static int d_set(lua_State *L) { return store(L, HS_DICT_SET); }
static int d_add(lua_State *L) { return store(L, HS_DICT_ADD); }
static int d_replace(lua_State *L) { return store(L, HS_DICT_REPLACE); }
static int d_safe_set(lua_State *L) { return store(L, HS_DICT_SET | HS_DICT_SAFE); }
static int d_safe_add(lua_State *L) { return store(L, HS_DICT_ADD | HS_DICT_SAFE); }

/* d:incr(key [, by [, init [, init_ttl]]]) -> new value, nil, forcible; or
 * nil, err ("not found" without init, "not a number"). */
static int d_incr(lua_State *L) {
  hs_dict_t *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  hs_dict_value_t by, init, out;
  if (lua_isnoneornil(L, 3)) {
    memset(&by, 0, sizeof by);
    by.type = HS_DICT_INT;
    by.i = 1;
  } else {
    check_number(L, 3, &by);
  }
  int has_init = !lua_isnoneornil(L, 4);
  if (has_init) check_number(L, 4, &init);
  uint64_t ttl = opt_ttl(L, 5);
  int forcible = 0;
  int r = hs_dict_incr(d, key, klen, &by, has_init ? &init : NULL, ttl, &out, &forcible);
  if (r != 0) return fail(L, r);
  push_value(L, &out, NULL);
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

/* d:delete(key) -> true, or false, err for a bad key. */
static int d_delete(lua_State *L) {
  hs_dict_t *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  int r = hs_dict_delete(d, key, klen);
  if (r == HS_DICT_ENOTFOUND) r = 0;
  lua_pushboolean(L, r == 0);
  if (r == 0) return 1;
  lua_pushstring(L, hs_dict_strerror(r));
  return 2;
}

/* d:ttl(key) -> seconds left (0: never expires), or nil, "not found". */
static int d_ttl(lua_State *L) {
  hs_dict_t *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  uint64_t ms = 0;
  int r = hs_dict_ttl(d, key, klen, &ms);
  if (r != 0) return fail(L, r);
  lua_pushnumber(L, (lua_Number)ms / 1000);
  return 1;
}

/* d:expire(key, ttl) -> true, or nil, "not found". */
static int d_expire(lua_State *L) {
  hs_dict_t *d = check_dict(L);
  size_t klen;
  const char *key = check_key(L, &klen);
  luaL_checknumber(L, 3);
  uint64_t ttl = opt_ttl(L, 3);
  int r = hs_dict_expire(d, key, klen, ttl);
  if (r != 0) return fail(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

/* d:keys([max]) -> a list of the keys that have not expired, most recently
 * used first; at most max (default 1024; 0: all). */
static int d_keys(lua_State *L) {
  hs_dict_t *d = check_dict(L);
  lua_Integer max = luaL_optinteger(L, 2, 1024);
  luaL_argcheck(L, max >= 0, 2, "max must be 0 (all) or more");
  char small[2048], *buf = small;
  size_t cap = sizeof small, count = 0, needed = 0;
  int r;
  for (int tries = 0;; tries++) {
    r = hs_dict_keys(d, (size_t)max, buf, cap, &count, &needed);
    if (r != 0 || needed <= cap || tries == 8) break;
    cap = needed + needed / 4; /* room for a few more that may come meanwhile */
    buf = lua_newuserdatauv(L, cap, 0);
  }
  if (r != 0) return fail(L, r);
  lua_createtable(L, count < (1u << 24) ? (int)count : 0, 0);
  size_t off = 0;
  for (size_t i = 0; i < count; i++) {
    uint32_t len;
    memcpy(&len, buf + off, 4);
    lua_pushlstring(L, buf + off + 4, len);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    off += 4 + (size_t)len;
  }
  return 1;
}

/* d:flush_all(): every entry goes. */
static int d_flush_all(lua_State *L) {
  int r = hs_dict_flush_all(check_dict(L));
  return r ? fail(L, r) : 0;
}

/* d:flush_expired([max]) -> how many expired entries were reclaimed. */
static int d_flush_expired(lua_State *L) {
  hs_dict_t *d = check_dict(L);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, max >= 0, 2, "max must be 0 (all) or more");
  size_t n = 0;
  int r = hs_dict_flush_expired(d, (size_t)max, &n);
  if (r != 0) return fail(L, r);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int d_free_space(lua_State *L) {
  size_t n = 0;
  int r = hs_dict_free_space(check_dict(L), &n);
  if (r != 0) return fail(L, r);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int d_capacity(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)hs_dict_capacity(check_dict(L)));
  return 1;
}

static int d_tostring(lua_State *L) {
  ldict_t *h = luaL_checkudata(L, 1, DICT_MT);
  lua_pushfstring(L, "hotsock.dict: %s", h->name);
  return 1;
}

static const luaL_Reg methods[] = {{"get", d_get},
                                   {"set", d_set},
                                   {"add", d_add},
                                   {"replace", d_replace},
                                   {"safe_set", d_safe_set},
                                   {"safe_add", d_safe_add},
                                   {"incr", d_incr},
                                   {"delete", d_delete},
                                   {"ttl", d_ttl},
                                   {"expire", d_expire},
                                   {"keys", d_keys},
                                   {"flush_all", d_flush_all},
                                   {"flush_expired", d_flush_expired},
                                   {"free_space", d_free_space},
                                   {"capacity", d_capacity},
                                   {NULL, NULL}};

/* hs.dict(name) -> a handle on the dictionary the module declared under
 * name, or nil, "no dictionary NAME (declare it in dicts)". While a chunk
 * loads (the module's dictionaries are made once it has returned) a handle
 * on a name not made yet is given all the same; it raises that error when
 * used if the name is still unknown then. */
int hs_ldict_dict(lua_State *L) {
  size_t n;
  const char *name = luaL_checklstring(L, 1, &n);
  hs_server_t *srv = hs_server_from_lua(L);
  int valid = n > 0 && n <= HS_DICT_NAME_MAX && strlen(name) == n;
  hs_dict_t *d = valid ? find_dict(srv, name) : NULL;
  if (!d && (!valid || !script_loading(L, srv))) {
    lua_pushnil(L);
    lua_pushfstring(L, "no dictionary %s (declare it in dicts)", name);
    return 2;
  }
  ldict_t *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->d = d;
  memcpy(h->name, name, n + 1);
  if (luaL_newmetatable(L, DICT_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, d_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, DICT_MT); /* getmetatable(d): the methods stay as they are */
    lua_setfield(L, -2, "__metatable");
  }
  lua_setmetatable(L, -2);
  return 1;
}
