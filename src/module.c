/* module.c: the handler module a script returns. Its settings become
 * limits (defaults, then the module, then the command line), its framing a
 * framer; the handler names are checked so a typo is reported, not
 * silently never called. Every field is read raw: no script code runs
 * while C reads the module. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>

#include "host.h"
#include "http1.h"
#include "supervisor.h"
#include "tls.h"

/* t[k] without metamethods. The module and the tables in it are read raw:
 * no script code runs while C looks up a handler or a setting, so a module
 * with a strict __index (one that raises on a missing name) cannot throw
 * outside a protected call. Returns the type pushed. */
int hs_rawfield(lua_State *L, int idx, const char *k) {
  idx = lua_absindex(L, idx);
  lua_pushstring(L, k);
  return lua_rawget(L, idx);
}

static const char *const handler_names[] = {
    "on_connect", "on_message",  "on_close", "on_drain",       "on_timeout", "on_error",
    "on_reload",  "on_shutdown", "handle",   "on_frame_error", NULL};

/* The module's settings; a key one or two edits away from one of these is
 * taken for a typo ("framming"), since it would otherwise be ignored. */
static const char *const setting_names[] = {
    "listen",        "framing",        "max_clients",    "max_frame", "max_inbuf",
    "max_outbuf",    "low_water",      "high_water",     "timeouts",  "backlog",
    "drain_timeout", "handler_budget", "max_lua_memory", "reload",    "workers",
    "tls",           "dicts",          "stop_grace",     "admin",     NULL};

/* Edits (insert, delete, replace, swap two neighbours) from a to b, or 3
 * when more than 2. */
static int edits(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 32 || lb > 32 || (la > lb ? la - lb : lb - la) > 2) return 3;
  int d[33][33];
  for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      int v = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  return d[la][lb] > 2 ? 3 : d[la][lb];
}

/* The setting k is probably a typo of, or NULL. A script may keep its own
 * fields in the module (functions, tables, constants); only names close to
 * a setting's, and not functions, are suspects. */
static const char *near_setting(const char *k) {
  const char *best = NULL;
  int bd = 3;
  for (int i = 0; setting_names[i]; i++) {
    if (strcmp(k, setting_names[i]) == 0) return NULL;
    int e = edits(k, setting_names[i]);
    if (e < bd) bd = e, best = setting_names[i];
  }
  /* One edit, or two in a name long enough that two is still a typo. */
  return best && (bd == 1 || (bd == 2 && strlen(k) >= 7)) ? best : NULL;
}

/* The keys a framing table may have. */
static const char *const framing_keys[] = {"delimiter", "length",   "exact",    "header",
                                           "max_bytes", "http",     "max_head", "max_line",
                                           "max_headers", "continue", NULL};
#define FRAMING_KEYS                                                                       \
  "delimiter, length, exact, header, max_bytes, http, max_head, max_line, max_headers, " \
  "continue"

/* Check that the framing table at idx has only known keys: 0, or -1 with
 * err naming the first other one. lua_next is raw, and keys are never
 * converted in place (that would break the traversal). */
static int check_framing_keys(lua_State *L, int idx, char *err, size_t errlen) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      int known = 0;
      for (int i = 0; framing_keys[i]; i++) known |= strcmp(k, framing_keys[i]) == 0;
      if (!known) {
        snprintf(err, errlen, "unknown framing key \"%s\" (a framing table takes %s)", k,
                 FRAMING_KEYS);
        lua_pop(L, 1);
        return -1;
      }
    } else {
      if (t == LUA_TNUMBER && lua_isinteger(L, -1))
        snprintf(err, errlen, "unknown framing key [%lld] (a framing table takes %s)",
                 (long long)lua_tointeger(L, -1), FRAMING_KEYS);
      else
        snprintf(err, errlen, "unknown framing key of type %s (a framing table takes %s)",
                 luaL_typename(L, -1), FRAMING_KEYS);
      lua_pop(L, 1);
      return -1;
    }
  }
  return 0;
}

/* Read an optional integer option of a length framing (header, max_bytes)
 * and apply it with set: 0, or -1 with err. */
static int framing_option(lua_State *L, int idx, const char *name, hs_framer_t *f,
                          int (*set)(hs_framer_t *, size_t), const char *range, char *err,
                          size_t errlen) {
  int r = 0;
  if (hs_rawfield(L, idx, name) != LUA_TNIL) {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (f->kind != HS_FRAME_LENGTH) {
      snprintf(err, errlen, "%s goes with a length framing ({length = ..., %s = n})", name, name);
      r = -1;
    } else if (!isint || lua_type(L, -1) != LUA_TNUMBER || n < 0 || set(f, (size_t)n) != 0) {
      snprintf(err, errlen, "%s must be %s", name, range);
      r = -1;
    }
  }
  lua_pop(L, 1);
  return r;
}

/* The options of an http framing ({http = "request", max_head = n, ...}):
 * 0, or -1 with err (also for one given with another framing). */
static int http_options(lua_State *L, int idx, hs_framer_t *f, char *err, size_t errlen) {
  static const char *const names[] = {"max_head", "max_line", "max_headers"};
  size_t v[3] = {0, 0, 0};
  for (int i = 0; i < 3; i++) {
    int t = hs_rawfield(L, idx, names[i]);
    if (t != LUA_TNIL) {
      int isint;
      lua_Integer n = lua_tointegerx(L, -1, &isint);
      lua_pop(L, 1);
      if (f->kind != HS_FRAME_HTTP) {
        snprintf(err, errlen, "%s goes with an http framing ({http = \"request\", %s = n})",
                 names[i], names[i]);
        return -1;
      }
      if (t != LUA_TNUMBER || !isint || n <= 0 ||
          (i == 2 && n > HS_HTTP1_MAX_HEADERS_CAP)) {
        if (i == 2)
          snprintf(err, errlen, "max_headers must be an integer from 1 to %d",
                   HS_HTTP1_MAX_HEADERS_CAP);
        else
          snprintf(err, errlen, "%s must be a positive integer", names[i]);
        return -1;
      }
      v[i] = (size_t)n;
    } else {
      lua_pop(L, 1);
    }
  }
  int t = hs_rawfield(L, idx, "continue");
  int cont = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (t != LUA_TNIL && f->kind != HS_FRAME_HTTP) {
    snprintf(err, errlen, "continue goes with an http framing ({http = \"request\", continue = true})");
    return -1;
  }
  if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
    snprintf(err, errlen, "continue must be a boolean");
    return -1;
  }
  if (f->kind == HS_FRAME_HTTP && hs_framer_set_http(f, v[0], v[1], v[2], cont) != 0) {
    snprintf(err, errlen, "bad http framing options");
    return -1;
  }
  return 0;
}

/* Parse a framing spec at idx (a string, a byte count or a table). 0, or -1
 * with err. Used for the module's framing, conn:framing, conn:receive and
 * hs.connect's opts.framing, so they all take the same specs. */
int hs_module_parse_framing(lua_State *L, int idx, hs_framer_t *f, char *err, size_t errlen) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tostring(L, idx);
    /* LuaSocket's receive patterns and Lua 5.4's io.read formats too. */
    if (strcmp(s, "raw") == 0)
      hs_framer_raw(f);
    else if (strcmp(s, "line") == 0 || strcmp(s, "*l") == 0 || strcmp(s, "l") == 0)
      hs_framer_line(f);
    else if (strcmp(s, "L") == 0)
      hs_framer_line_keep(f);
    else if (strcmp(s, "crlf") == 0)
      hs_framer_crlf(f);
    else if (strcmp(s, "*a") == 0 || strcmp(s, "a") == 0)
      hs_framer_all(f);
    else if (strcmp(s, "resp") == 0)
      hs_framer_resp(f);
    else if (strcmp(s, "http") == 0)
      hs_framer_http(f);
    else {
      snprintf(err, errlen,
               "unknown framing \"%s\" (use \"raw\", \"line\", \"crlf\", \"resp\", \"http\", "
               "\"L\", \"*a\", a byte count, or a table {delimiter=}, {length=}, {exact=}, "
               "{http=})",
               s);
      return -1;
    }
    return 0;
  }
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer n = lua_tointeger(L, idx);
    if (!lua_isinteger(L, idx) || n <= 0 || hs_framer_exact(f, (size_t)n) != 0) {
      snprintf(err, errlen, "a byte count must be a positive integer");
      return -1;
    }
    return 0;
  }
  if (lua_type(L, idx) != LUA_TTABLE) {
    snprintf(err, errlen, "framing must be a string or a table, not %s", luaL_typename(L, idx));
    return -1;
  }
  if (check_framing_keys(L, idx, err, errlen) != 0) return -1;
  int found = 0, bad = 0;
  if (hs_rawfield(L, idx, "delimiter") != LUA_TNIL) {
    size_t len;
    const char *d = lua_tolstring(L, -1, &len);
    found++;
    if (!d || lua_type(L, -1) != LUA_TSTRING || hs_framer_delim(f, d, len) != 0) {
      snprintf(err, errlen, "delimiter must be a string of 1 to %d bytes", HS_DELIM_MAX);
      bad = 1;
    }
  }
  lua_pop(L, 1);
  if (!bad && hs_rawfield(L, idx, "length") != LUA_TNIL) {
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    found++;
    if (!k || hs_framer_length(f, k) != 0) {
      snprintf(err, errlen,
               "length must be one of \"u8\", \"u16be\", \"u16le\", "
               "\"u32be\", \"u32le\", \"varint\"");
      bad = 1;
    }
  }
  lua_pop(L, 1);
  if (!bad && hs_rawfield(L, idx, "exact") != LUA_TNIL) {
    int isint;
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    found++;
    if (!isint || n <= 0 || hs_framer_exact(f, (size_t)n) != 0) {
      snprintf(err, errlen, "exact must be a positive integer");
      bad = 1;
    }
  }
  lua_pop(L, 1);
  if (!bad && hs_rawfield(L, idx, "http") != LUA_TNIL) {
    found++;
    if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "request") != 0) {
      snprintf(err, errlen, "http must be \"request\"");
      bad = 1;
    } else if (found == 1) {
      hs_framer_http(f);
    }
  }
  lua_pop(L, 1);
  if (bad) return -1;
  if (found != 1) {
    snprintf(err, errlen, "a framing table needs exactly one of delimiter, length, exact, http");
    return -1;
  }
  if (http_options(L, idx, f, err, errlen) != 0) return -1;
  /* The ranges as literals: formatting them on every conn:framing({...})
   * cost more than the rest of the parse. */
  _Static_assert(HS_HEADER_MAX == 255 && HS_VARINT_MAX == 10, "the ranges below say so");
  if (framing_option(L, idx, "header", f, hs_framer_set_header, "an integer from 0 to 255", err,
                     errlen) != 0)
    return -1;
  if (hs_rawfield(L, idx, "max_bytes") != LUA_TNIL && f->kind == HS_FRAME_LENGTH &&
      f->len_kind != HS_LEN_VARINT) {
    snprintf(err, errlen, "max_bytes goes with length = \"varint\" only");
    lua_pop(L, 1);
    return -1;
  }
  lua_pop(L, 1);
  if (framing_option(L, idx, "max_bytes", f, hs_framer_set_max_bytes, "an integer from 1 to 10",
                     err, errlen) != 0)
    return -1;
  return 0;
}

/* Read a positive integer field; 0 when absent, -1 with err when invalid. */
static int get_size(lua_State *L, int idx, const char *name, size_t *out, int allow_zero, char *err,
                    size_t errlen) {
  int t = hs_rawfield(L, idx, name);
  int r = 0;
  if (t != LUA_TNIL) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 0 || (v == 0 && !allow_zero)) {
      snprintf(err, errlen, "%s must be a %s integer", name,
               allow_zero ? "non-negative" : "positive");
      r = -1;
    } else {
      *out = (size_t)v;
      r = 1;
    }
  }
  lua_pop(L, 1);
  return r;
}

/* Check the module at idx and read its settings into lim and f (which hold
 * defaults on entry). Returns NULL, or err filled with what is wrong. */
static const char *read_module(lua_State *L, int idx, hs_limits_t *lim, hs_framer_t *f, char *err,
                               size_t errlen) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) {
    snprintf(err, errlen, "the script must return a table of handlers, not %s",
             luaL_typename(L, idx));
    return err;
  }
  /* Handlers: functions; unknown on_* names are typos. */
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      int known = 0;
      for (int i = 0; handler_names[i]; i++)
        if (strcmp(k, handler_names[i]) == 0) known = 1;
      if (known && lua_type(L, -1) != LUA_TFUNCTION) {
        snprintf(err, errlen, "%s must be a function, not %s", k, luaL_typename(L, -1));
        lua_pop(L, 2);
        return err;
      }
      const char *near = !known && lua_type(L, -1) != LUA_TFUNCTION ? near_setting(k) : NULL;
      if (near) {
        snprintf(err, errlen, "unknown setting \"%s\" (did you mean %s?)", k, near);
        lua_pop(L, 2);
        return err;
      }
      if (!known && strncmp(k, "on_", 3) == 0) {
        snprintf(err, errlen,
                 "unknown handler \"%s\" (handlers are on_connect, "
                 "on_message, on_close, on_drain, on_timeout, on_error, on_reload, "
                 "on_shutdown, handle)",
                 k);
        lua_pop(L, 2);
        return err;
      }
    }
    lua_pop(L, 1);
  }
  int has_handle = hs_rawfield(L, idx, "handle") == LUA_TFUNCTION;
  int has_msg = hs_rawfield(L, idx, "on_message") == LUA_TFUNCTION;
  int has_conn = hs_rawfield(L, idx, "on_connect") == LUA_TFUNCTION;
  lua_pop(L, 3);
  if (!has_handle && !has_msg && !has_conn) {
    snprintf(err, errlen,
             "the module has no handler: give it handle(conn) "
             "(coroutine style) or on_connect/on_message (event style)");
    return err;
  }
  if (has_handle && has_msg) {
    snprintf(err, errlen, "the module has both handle and on_message: pick one style");
    return err;
  }
  if (hs_rawfield(L, idx, "framing") != LUA_TNIL) {
    char ferr[200];
    if (hs_module_parse_framing(L, -1, f, ferr, sizeof ferr) != 0) {
      snprintf(err, errlen, "framing: %s", ferr);
      lua_pop(L, 1);
      return err;
    }
  }
  lua_pop(L, 1);
  size_t v;
  struct {
    const char *name;
    size_t *dst;
    uint64_t *dst64;
  } sizes[] = {
      {"max_clients", &lim->max_clients, NULL}, {"max_frame", &lim->max_frame, NULL},
      {"max_inbuf", &lim->max_inbuf, NULL},     {"max_outbuf", &lim->max_outbuf, NULL},
      {"low_water", &lim->low_water, NULL},     {"max_lua_memory", &lim->max_lua_memory, NULL},
      {"high_water", &lim->high_water, NULL},   {"drain_timeout", NULL, &lim->drain_timeout},
      {"stop_grace", NULL, &lim->stop_grace},   {"handler_budget", NULL, &lim->handler_budget},
  };
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    int allow0 = strcmp(sizes[i].name, "low_water") == 0 ||
                 strcmp(sizes[i].name, "drain_timeout") == 0 ||
                 strcmp(sizes[i].name, "stop_grace") == 0;
    int r = get_size(L, idx, sizes[i].name, &v, allow0, err, errlen);
    if (r < 0) return err;
    if (r > 0) {
      if (sizes[i].dst)
        *sizes[i].dst = v;
      else
        *sizes[i].dst64 = v;
    }
  }
  if (lim->handler_budget > HS_MAX_MS || lim->drain_timeout > HS_MAX_MS ||
      lim->stop_grace > HS_MAX_MS) {
    snprintf(err, errlen, "%s must be at most %llu ms",
             lim->handler_budget > HS_MAX_MS  ? "handler_budget"
             : lim->drain_timeout > HS_MAX_MS ? "drain_timeout"
                                              : "stop_grace",
             HS_MAX_MS);
    return err;
  }
  int r = get_size(L, idx, "backlog", &v, 0, err, errlen);
  if (r < 0) return err;
  if (r > 0) lim->backlog = v > INT_MAX ? INT_MAX : (int)v;
  int t = hs_rawfield(L, idx, "timeouts");
  if (t == LUA_TTABLE) {
    const char *names[] = {"idle", "read", "write", "frame", "first_byte"};
    uint64_t *dst[] = {&lim->timeouts.idle, &lim->timeouts.read, &lim->timeouts.write,
                       &lim->timeouts.frame, &lim->timeouts.first_byte};
    for (int i = 0; i < 5; i++) {
      r = get_size(L, -1, names[i], &v, 1, err, errlen);
      if (r < 0) {
        lua_pop(L, 1);
        return err;
      }
      if (r > 0 && v > HS_MAX_MS) {
        snprintf(err, errlen, "timeouts.%s must be at most %llu ms", names[i], HS_MAX_MS);
        lua_pop(L, 1);
        return err;
      }
      if (r > 0) *dst[i] = v;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      int ok = 0;
      for (int i = 0; i < 5; i++) ok |= strcmp(k, names[i]) == 0;
      lua_pop(L, 1);
      if (!ok) {
        snprintf(err, errlen, "unknown timeout \"%s\" (idle, read, write, frame, first_byte)", k);
        lua_pop(L, 2);
        return err;
      }
    }
  } else if (t != LUA_TNIL) {
    snprintf(err, errlen, "timeouts must be a table like {idle = 30000}");
    lua_pop(L, 1);
    return err;
  }
  lua_pop(L, 1);
  t = hs_rawfield(L, idx, "reload");
  if (t == LUA_TTABLE) {
    size_t n;
    if (get_size(L, -1, "rollback_errors", &n, 0, err, errlen) < 0 ||
        get_size(L, -1, "within", &n, 0, err, errlen) < 0) {
      lua_pop(L, 1);
      return err;
    }
  } else if (t != LUA_TNIL) {
    snprintf(err, errlen, "reload must be a table like {rollback_errors = 3, within = 10000}");
    lua_pop(L, 1);
    return err;
  }
  lua_pop(L, 1);
  t = hs_rawfield(L, idx, "listen");
  if (t != LUA_TNIL && t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TTABLE) {
    snprintf(err, errlen, "listen must be an address, a port, or a list of them");
    lua_pop(L, 1);
    return err;
  }
  lua_pop(L, 1);
  return NULL;
}

/* The default of every limit, in one place. */
void hs_limits_default(hs_limits_t *l) {
  memset(l, 0, sizeof *l);
  l->max_clients = 10000;
  l->max_frame = 64 * 1024;
  l->max_inbuf = 1024 * 1024;
  l->max_outbuf = 8 * 1024 * 1024;
  l->low_water = 16 * 1024;
  l->high_water = 256 * 1024;
  l->backlog = SOMAXCONN;
  l->drain_timeout = 5000;
  l->handler_budget = 100;
  l->max_lua_memory = 256u * 1024 * 1024;
  l->timeouts.idle = 0;
  l->timeouts.read = 0;
  l->timeouts.write = 60000;
  l->timeouts.frame = 30000;
  l->timeouts.first_byte = 30000;
}

/* Command-line settings win over the module's. */
static void apply_cli(const hs_limits_t *cli, hs_limits_t *l) {
  if (cli->max_clients) l->max_clients = cli->max_clients;
  if (cli->max_frame) l->max_frame = cli->max_frame;
  if (cli->max_inbuf) l->max_inbuf = cli->max_inbuf;
  if (cli->max_outbuf) l->max_outbuf = cli->max_outbuf;
  if (cli->backlog) l->backlog = cli->backlog;
  if (cli->drain_timeout) l->drain_timeout = cli->drain_timeout;
  if (cli->stop_grace) l->stop_grace = cli->stop_grace;
  if (cli->handler_budget) l->handler_budget = cli->handler_budget;
  if (cli->max_lua_memory) l->max_lua_memory = cli->max_lua_memory;
  if (cli->timeouts.idle != HS_UNSET) l->timeouts.idle = cli->timeouts.idle;
  if (cli->timeouts.read != HS_UNSET) l->timeouts.read = cli->timeouts.read;
  if (cli->timeouts.write != HS_UNSET) l->timeouts.write = cli->timeouts.write;
  if (cli->timeouts.frame != HS_UNSET) l->timeouts.frame = cli->timeouts.frame;
  if (cli->timeouts.first_byte != HS_UNSET) l->timeouts.first_byte = cli->timeouts.first_byte;
}

/* Read the module at idx: defaults, then its settings, then cli's (NULL for
 * none). NULL, or err filled and returned. */
const char *hs_module_read(lua_State *L, int idx, const hs_limits_t *cli, hs_limits_t *lim,
                           hs_framer_t *f, char *err, size_t errlen) {
  hs_limits_default(lim);
  hs_framer_raw(f);
  if (read_module(L, idx, lim, f, err, errlen)) return err;
  if (cli) apply_cli(cli, lim);
  return NULL;
}

/* One entry of the module's listen list, at the top of L: a port, an
 * address string, or a table {addr = ..., tls = true | {cert = ..., ...}}.
 * 0, or -1 with err filled. */
static int read_listen_entry(hs_server_t *srv, lua_State *L, int i, hs_listen_spec_t *sp, char *err,
                             size_t errlen) {
  int top = lua_gettop(L);
  int t = lua_type(L, top);
  char why[512];
  if (t == LUA_TTABLE) {
    int at = hs_rawfield(L, top, "addr");
    if (at == LUA_TNUMBER)
      lua_pushfstring(L, "127.0.0.1:%d", (int)lua_tointeger(L, -1));
    else if (at != LUA_TSTRING) {
      snprintf(err, errlen, "listen[%d].addr must be an address or a port", i);
      lua_settop(L, top);
      return -1;
    }
    sp->addr = strdup(lua_tostring(L, -1));
    int pt = hs_rawfield(L, top, "proxy_protocol");
    if (pt != LUA_TNIL && pt != LUA_TBOOLEAN) {
      snprintf(err, errlen, "listen[%d].proxy_protocol must be true or false", i);
      lua_settop(L, top);
      return -1;
    }
    sp->proxy = lua_toboolean(L, -1);
    int ht = hs_rawfield(L, top, "health");
    if (ht != LUA_TNIL && ht != LUA_TBOOLEAN) {
      snprintf(err, errlen, "listen[%d].health must be true or false", i);
      lua_settop(L, top);
      return -1;
    }
    sp->health = lua_toboolean(L, -1);
    int tt = hs_rawfield(L, top, "tls");
    if (tt == LUA_TTABLE || (tt == LUA_TBOOLEAN && lua_toboolean(L, -1))) {
      if (!(sp->tls = calloc(1, sizeof *sp->tls)) ||
          hs_ltls_server_opts(srv, tt == LUA_TTABLE ? L : NULL, -1, sp->tls, why, sizeof why) !=
              0) {
        free(sp->tls);
        sp->tls = NULL;
        snprintf(err, errlen, "listen[%d].tls: %s", i, why);
        lua_settop(L, top);
        return -1;
      }
      if (sp->health) {
        snprintf(err, errlen, "listen[%d]: a health listener is plain (no tls)", i);
        lua_settop(L, top);
        return -1;
      }
    } else if (tt != LUA_TNIL && tt != LUA_TBOOLEAN) {
      snprintf(err, errlen, "listen[%d].tls must be true or a table like {cert = FILE, key = FILE}",
               i);
      lua_settop(L, top);
      return -1;
    }
  } else {
    if (t == LUA_TNUMBER) lua_pushfstring(L, "127.0.0.1:%d", (int)lua_tointeger(L, -1));
    const char *a = lua_tostring(L, -1);
    if (!a) {
      snprintf(err, errlen, "listen[%d] must be an address, a port or a listener table", i);
      lua_settop(L, top);
      return -1;
    }
    if (strncmp(a, "tls://", 6) == 0) {
      snprintf(err, errlen,
               "listen[%d] \"%s\": a TLS listener is a table, {addr = ..., tls = {cert = FILE, "
               "key = FILE}} (or tls = true with the module's tls field)",
               i, a);
      lua_settop(L, top);
      return -1;
    }
    sp->addr = strdup(a);
  }
  lua_settop(L, top);
  if (!sp->addr) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* The listeners the module's listen field names: a port, an address, a
 * listener table, or a list of them. */
int hs_module_listen_addrs(hs_server_t *srv, hs_listen_spec_t **specs, char *err, size_t errlen) {
  lua_State *L = srv->lua.L;
  int top = lua_gettop(L);
  *specs = NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  int t = hs_rawfield(L, -1, "listen");
  if (t == LUA_TNIL) {
    lua_settop(L, top);
    return 0;
  }
  /* A single address, or a single listener table (it has addr). */
  if (t != LUA_TTABLE || hs_rawfield(L, -1, "addr") != LUA_TNIL) {
    if (t == LUA_TTABLE) lua_pop(L, 1);
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1); /* {listen} */
  } else {
    lua_pop(L, 1);
  }
  int tab = lua_gettop(L);
  int count = (int)lua_rawlen(L, tab); /* raw, as every module field */
  hs_listen_spec_t *list = calloc((size_t)count + 1, sizeof *list);
  if (!list) {
    snprintf(err, errlen, "out of memory");
    lua_settop(L, top);
    return -1;
  }
  for (int i = 0; i < count; i++) {
    lua_rawgeti(L, tab, i + 1);
    if (read_listen_entry(srv, L, i + 1, &list[i], err, errlen) != 0) {
      hs_listen_specs_free(list, count);
      lua_settop(L, top);
      return -1;
    }
    lua_settop(L, tab);
  }
  lua_settop(L, top);
  *specs = list;
  return count;
}

void hs_listen_specs_free(hs_listen_spec_t *specs, int n) {
  if (!specs) return;
  for (int i = 0; i < n; i++) {
    free(specs[i].addr);
    if (specs[i].tls) hs_tls_opts_free(specs[i].tls);
    free(specs[i].tls);
  }
  free(specs);
}

int hs_parse_workers(const char *s, int *n) {
  if (strcmp(s, "auto") == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *n = cpus < 1 ? 1 : cpus > HS_MAX_WORKERS ? HS_MAX_WORKERS : (int)cpus;
    return 0;
  }
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 1 || v > HS_MAX_WORKERS) return -1;
  *n = (int)v;
  return 0;
}

/* The module's workers field: a count, or "auto" (one per CPU); 1 when
 * absent. 0, or -1 with err. */
int hs_module_workers(hs_server_t *srv, int *n, char *err, size_t errlen) {
  lua_State *L = srv->lua.L;
  int top = lua_gettop(L);
  *n = 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  int t = lua_type(L, -1) == LUA_TTABLE ? hs_rawfield(L, -1, "workers") : LUA_TNIL;
  int bad = 0;
  if (t == LUA_TNUMBER && lua_isinteger(L, -1)) {
    lua_Integer v = lua_tointeger(L, -1);
    if (v >= 1 && v <= HS_MAX_WORKERS)
      *n = (int)v;
    else
      bad = 1;
  } else if (t == LUA_TSTRING) {
    bad = hs_parse_workers(lua_tostring(L, -1), n) != 0;
  } else if (t != LUA_TNIL) {
    bad = 1;
  }
  lua_settop(L, top);
  if (bad)
    snprintf(err, errlen, "workers must be a number from 1 to %d or \"auto\"", HS_MAX_WORKERS);
  return bad ? -1 : 0;
}

/* The module's admin field: "ADDR", or {addr = "ADDR", eval = true}. 1 with
 * addr filled (and *eval set when the table says so), 0 when absent, -1
 * with err. */
int hs_module_admin(hs_server_t *srv, char *addr, size_t len, int *eval, char *err,
                    size_t errlen) {
  lua_State *L = srv->lua.L;
  int top = lua_gettop(L), r = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  int t = lua_type(L, -1) == LUA_TTABLE ? hs_rawfield(L, -1, "admin") : LUA_TNIL;
  if (t == LUA_TSTRING) {
    snprintf(addr, len, "%s", lua_tostring(L, -1));
    r = 1;
  } else if (t == LUA_TTABLE) {
    int at = hs_rawfield(L, -1, "addr");
    int et = hs_rawfield(L, -2, "eval");
    if (at != LUA_TSTRING || (et != LUA_TNIL && et != LUA_TBOOLEAN)) {
      snprintf(err, errlen, "admin must be an address, or a table {addr = ADDR, eval = true}");
      r = -1;
    } else {
      snprintf(addr, len, "%s", lua_tostring(L, -2));
      if (lua_toboolean(L, -1)) *eval = 1;
      r = 1;
    }
  } else if (t != LUA_TNIL) {
    snprintf(err, errlen, "admin must be an address, or a table {addr = ADDR, eval = true}");
    r = -1;
  }
  lua_settop(L, top);
  return r;
}
