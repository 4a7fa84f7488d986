/* ltls.c: TLS as scripts see it (host layer). The tables of TLS settings
 * that the module (its `tls` field and listener tables), conn:starttls and
 * hs.connect take; the server's default settings (the module's `tls` field
 * with --tls-cert/--tls-key over it); a small cache of the contexts made
 * from settings for STARTTLS and outbound connections, emptied on every
 * reload so edited files take effect; and conn.tls. The socket layer
 * (tls.c) makes the contexts and runs the connections. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "tls.h"

/* ---- reading a table of settings ---- */

static int set_str(char **dst, const char *v) {
  char *s = strdup(v);
  if (!s) return -1;
  free(*dst);
  *dst = s;
  return 0;
}

/* alpn: a protocol name or a list of them, into wire format. */
static int read_alpn(lua_State *L, int idx, hs_tls_opts_t *o, char *err, size_t errlen) {
  int n = lua_type(L, idx) == LUA_TSTRING ? 1 : (int)lua_rawlen(L, idx);
  size_t total = 0;
  if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TTABLE) n = 0;
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 1; i <= n; i++) {
      int t = LUA_TSTRING;
      if (lua_type(L, idx) == LUA_TTABLE)
        t = lua_rawgeti(L, idx, i);
      else
        lua_pushvalue(L, idx);
      size_t len = 0;
      const char *p = t == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
      if (!p || len == 0 || len > 255) {
        lua_pop(L, 1);
        snprintf(err, errlen, "alpn must be a protocol name (1 to 255 bytes) or a list of them");
        return -1;
      }
      if (pass == 0) {
        total += 1 + len;
      } else {
        o->alpn[o->alpn_len++] = (unsigned char)len;
        memcpy(o->alpn + o->alpn_len, p, len);
        o->alpn_len += len;
      }
      lua_pop(L, 1);
    }
    if (pass == 0) {
      if (n == 0) {
        snprintf(err, errlen, "alpn must be a protocol name (1 to 255 bytes) or a list of them");
        return -1;
      }
      free(o->alpn);
      o->alpn_len = 0;
      if (!(o->alpn = malloc(total))) {
        snprintf(err, errlen, "out of memory");
        return -1;
      }
    }
  }
  return 0;
}

/* certs: a list of {cert = FILE, key = FILE}. */
static int read_certs(lua_State *L, int idx, hs_tls_opts_t *o, char *err, size_t errlen) {
  int n = lua_type(L, idx) == LUA_TTABLE ? (int)lua_rawlen(L, idx) : 0;
  if (n == 0) {
    snprintf(err, errlen, "certs must be a list of {cert = FILE, key = FILE}");
    return -1;
  }
  hs_tls_pair_t *pairs = calloc((size_t)n, sizeof *pairs);
  if (!pairs) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (int i = 0; i < o->ncerts; i++) {
    free(o->certs[i].cert);
    free(o->certs[i].key);
  }
  free(o->certs);
  o->certs = pairs;
  o->ncerts = n;
  for (int i = 1; i <= n; i++) {
    int ok = lua_rawgeti(L, idx, i) == LUA_TTABLE;
    int top = lua_gettop(L);
    if (ok)
      ok = hs_rawfield(L, top, "cert") == LUA_TSTRING && hs_rawfield(L, top, "key") == LUA_TSTRING;
    if (ok && (set_str(&pairs[i - 1].cert, lua_tostring(L, top + 1)) != 0 ||
               set_str(&pairs[i - 1].key, lua_tostring(L, top + 2)) != 0)) {
      lua_settop(L, top - 1);
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    lua_settop(L, top - 1);
    if (!ok) {
      snprintf(err, errlen, "certs[%d] must be {cert = FILE, key = FILE}", i);
      return -1;
    }
  }
  return 0;
}

/* One field of a settings table (key at -2, value at -1). */
static int read_field(lua_State *L, const char *k, hs_tls_opts_t *o, int client, char **sni,
                      char *err, size_t errlen) {
  int v = lua_gettop(L), t = lua_type(L, v);
  const char *s = t == LUA_TSTRING ? lua_tostring(L, v) : NULL;
  char **str = NULL;
  if (!strcmp(k, "cert"))
    str = &o->cert;
  else if (!strcmp(k, "key"))
    str = &o->key;
  else if (!strcmp(k, "ca"))
    str = &o->ca;
  else if (!strcmp(k, "ciphers"))
    str = &o->ciphers;
  else if (!strcmp(k, "ciphersuites"))
    str = &o->ciphersuites;
  else if (client && sni && !strcmp(k, "sni"))
    str = sni;
  if (str) {
    if (!s || !*s) {
      snprintf(err, errlen, "%s must be a non-empty string", k);
      return -1;
    }
    if (set_str(str, s) != 0) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    return 0;
  }
  if (!strcmp(k, "alpn")) return read_alpn(L, v, o, err, errlen);
  if (!strcmp(k, "min_version")) {
    if (s && (!strcmp(s, "TLSv1.2") || !strcmp(s, "1.2")))
      o->min_version = 12;
    else if (s && (!strcmp(s, "TLSv1.3") || !strcmp(s, "1.3")))
      o->min_version = 13;
    else {
      snprintf(err, errlen, "min_version is \"TLSv1.2\" or \"TLSv1.3\"");
      return -1;
    }
    return 0;
  }
  if (!client && !strcmp(k, "certs")) return read_certs(L, v, o, err, errlen);
  if (!client && !strcmp(k, "verify_client")) {
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, v))
      o->verify_client = HS_TLS_VERIFY_NONE;
    else if (s && !strcmp(s, "none"))
      o->verify_client = HS_TLS_VERIFY_NONE;
    else if (s && !strcmp(s, "optional"))
      o->verify_client = HS_TLS_VERIFY_OPTIONAL;
    else if (s && !strcmp(s, "required"))
      o->verify_client = HS_TLS_VERIFY_REQUIRED;
    else {
      snprintf(err, errlen, "verify_client is \"required\", \"optional\" or \"none\"");
      return -1;
    }
    return 0;
  }
  if ((!client && !strcmp(k, "tickets")) || (client && !strcmp(k, "verify"))) {
    if (t != LUA_TBOOLEAN) {
      snprintf(err, errlen, "%s must be true or false", k);
      return -1;
    }
    if (client)
      o->no_verify = !lua_toboolean(L, v);
    else
      o->no_tickets = !lua_toboolean(L, v);
    return 0;
  }
  snprintf(err, errlen, "unknown TLS setting \"%s\"%s", k,
           client ? " (an outbound connection takes sni, verify, ca, alpn, cert, key, "
                    "min_version, ciphers, ciphersuites)"
                  : " (a server takes cert, key, certs, alpn, min_version, ciphers, "
                    "ciphersuites, verify_client, ca, tickets)");
  return -1;
}

int hs_ltls_read_opts(lua_State *L, int idx, hs_tls_opts_t *o, int client, char **sni, char *err,
                      size_t errlen) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE) {
    snprintf(err, errlen, "TLS settings must be a table");
    return -1;
  }
  int top = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_settop(L, top);
      snprintf(err, errlen, "TLS settings are named fields (cert = ..., key = ...)");
      return -1;
    }
    if (read_field(L, lua_tostring(L, -2), o, client, sni, err, errlen) != 0) {
      lua_settop(L, top);
      return -1;
    }
    lua_settop(L, top + 1); /* the key, for lua_next */
  }
  lua_settop(L, top);
  return 0;
}

/* ---- the server's defaults ---- */

int hs_ltls_defaults(hs_server_t *srv, hs_tls_opts_t **out, char *err, size_t errlen) {
  lua_State *L = srv->lua.L;
  int top = lua_gettop(L);
  *out = NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, srv->lua.module_ref);
  int t = lua_type(L, -1) == LUA_TTABLE ? hs_rawfield(L, -1, "tls") : LUA_TNIL;
  if (t == LUA_TNIL && !srv->lua.cli_tls_cert && !srv->lua.cli_tls_key) {
    lua_settop(L, top);
    return 0;
  }
  hs_tls_opts_t *o = calloc(1, sizeof *o);
  if (!o) {
    lua_settop(L, top);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  char why[512];
  int bad = 0;
  if (t != LUA_TNIL && hs_ltls_read_opts(L, -1, o, 0, NULL, why, sizeof why) != 0) {
    snprintf(err, errlen, "tls: %s", why);
    bad = 1;
  }
  lua_settop(L, top);
  if (!bad && ((srv->lua.cli_tls_cert && set_str(&o->cert, srv->lua.cli_tls_cert) != 0) ||
               (srv->lua.cli_tls_key && set_str(&o->key, srv->lua.cli_tls_key) != 0))) {
    snprintf(err, errlen, "out of memory");
    bad = 1;
  }
  if (bad) {
    hs_tls_opts_free(o);
    free(o);
    return -1;
  }
  *out = o;
  return 0;
}

void hs_ltls_set_defaults(hs_server_t *srv, hs_tls_opts_t *o) {
  if (srv->lua.tls_default) {
    hs_tls_opts_free(srv->lua.tls_default);
    free(srv->lua.tls_default);
  }
  srv->lua.tls_default = o;
}

int hs_ltls_server_opts(hs_server_t *srv, lua_State *L, int idx, hs_tls_opts_t *o, char *err,
                        size_t errlen) {
  memset(o, 0, sizeof *o);
  if (srv->lua.tls_default && hs_tls_opts_copy(o, srv->lua.tls_default) != 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (L && hs_ltls_read_opts(L, idx, o, 0, NULL, err, errlen) != 0) {
    hs_tls_opts_free(o);
    return -1;
  }
  if (!o->cert || !o->key) {
    snprintf(err, errlen,
             "no TLS certificate: give cert and key, the module's tls field, or "
             "--tls-cert FILE --tls-key FILE");
    hs_tls_opts_free(o);
    return -2;
  }
  return 0;
}

/* ---- contexts for STARTTLS and outbound connections ---- */

#define CACHE_SIZE 16

typedef struct hs_tls_cache {
  struct {
    char *key;
    hs_tls_ctx_t *ctx;
  } e[CACHE_SIZE];
  int n;
} hs_tls_cache_t;

/* A string that tells settings apart, malloc'd. */
static char *opts_key(const hs_tls_opts_t *o, int client) {
  const char *strs[] = {o->cert, o->key, o->ca, o->ciphers, o->ciphersuites};
  size_t len = 64 + o->alpn_len * 2;
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
    len += (strs[i] ? strlen(strs[i]) : 0) + 2;
  for (int i = 0; i < o->ncerts; i++) len += strlen(o->certs[i].cert) + strlen(o->certs[i].key) + 4;
  char *k = malloc(len), *p = k;
  if (!k) return NULL;
  p += sprintf(p, "%d|%d|%d|%d|%d|", client, o->min_version, o->verify_client, o->no_tickets,
               o->no_verify);
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
    p += sprintf(p, "%s%c", strs[i] ? strs[i] : "", 1);
  for (size_t i = 0; i < o->alpn_len; i++) p += sprintf(p, "%02x", o->alpn[i]);
  for (int i = 0; i < o->ncerts; i++)
    p += sprintf(p, "%c%s%c%s", 2, o->certs[i].cert, 1, o->certs[i].key);
  return k;
}

hs_tls_ctx_t *hs_ltls_ctx(hs_server_t *srv, const hs_tls_opts_t *o, int client, char *err,
                          size_t errlen) {
  hs_tls_cache_t *cache = srv->lua.tls_cache;
  if (!cache && !(cache = srv->lua.tls_cache = calloc(1, sizeof *cache))) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  char *key = opts_key(o, client);
  if (!key) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  for (int i = 0; i < cache->n; i++)
    if (!strcmp(cache->e[i].key, key)) {
      free(key);
      return cache->e[i].ctx;
    }
  hs_tls_ctx_t *ctx = hs_tls_ctx_new(o, client, err, errlen);
  if (!ctx) {
    free(key);
    return NULL;
  }
  if (cache->n == CACHE_SIZE) { /* the oldest goes; its connections keep it */
    free(cache->e[0].key);
    hs_tls_ctx_unref(cache->e[0].ctx);
    memmove(&cache->e[0], &cache->e[1], sizeof cache->e[0] * (CACHE_SIZE - 1));
    cache->n--;
  }
  cache->e[cache->n].key = key;
  cache->e[cache->n].ctx = ctx;
  cache->n++;
  return ctx;
}

void hs_ltls_flush(hs_server_t *srv) {
  hs_tls_cache_t *cache = srv->lua.tls_cache;
  if (!cache) return;
  for (int i = 0; i < cache->n; i++) {
    free(cache->e[i].key);
    hs_tls_ctx_unref(cache->e[i].ctx);
  }
  cache->n = 0;
}

void hs_ltls_close(hs_server_t *srv) {
  hs_ltls_flush(srv);
  free(srv->lua.tls_cache);
  srv->lua.tls_cache = NULL;
  hs_ltls_set_defaults(srv, NULL);
}

int hs_ltls_check_defaults(hs_server_t *srv, char *err, size_t errlen) {
  const hs_tls_opts_t *o = srv->lua.tls_default;
  char why[1024];
  if (!o || (!o->cert && !o->key)) return 0;
  if (!hs_ltls_ctx(srv, o, 0, why, sizeof why)) {
    snprintf(err, errlen, "tls: %s", why);
    return -1;
  }
  return 0;
}

/* The client settings of hs.connect's tls option at idx (true or a table):
 * a context (borrowed from the cache) and the name to send and check
 * (*sni, malloc'd, or NULL for the host). NULL with err. Raises on a
 * malformed table. */
hs_tls_ctx_t *hs_ltls_client_ctx(hs_server_t *srv, lua_State *L, int idx, char **sni, char *err,
                                 size_t errlen) {
  hs_tls_opts_t o;
  char why[512];
  memset(&o, 0, sizeof o);
  *sni = NULL;
  if (idx && lua_type(L, idx) != LUA_TBOOLEAN &&
      hs_ltls_read_opts(L, idx, &o, 1, sni, why, sizeof why) != 0) {
    hs_tls_opts_free(&o);
    free(*sni);
    *sni = NULL;
    luaL_error(L, "tls: %s", why);
    return NULL;
  }
  hs_tls_ctx_t *ctx = hs_ltls_ctx(srv, &o, 1, err, errlen);
  hs_tls_opts_free(&o);
  if (!ctx) {
    free(*sni);
    *sni = NULL;
  }
  return ctx;
}

/* conn:starttls([opts]) on the open connection c (the box at 1). */
int hs_ltls_starttls(lua_State *L, hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  int client = (c->flags & HS_CONN_OUTBOUND) != 0;
  int has = !lua_isnoneornil(L, 2);
  char err[1024], *sni = NULL;
  if (has) luaL_checktype(L, 2, LUA_TTABLE);
  hs_tls_ctx_t *ctx;
  if (client) {
    ctx = has ? hs_ltls_client_ctx(srv, L, 2, &sni, err, sizeof err)
              : hs_ltls_client_ctx(srv, L, 0, &sni, err, sizeof err);
  } else {
    hs_tls_opts_t o;
    int r = hs_ltls_server_opts(srv, has ? L : NULL, 2, &o, err, sizeof err);
    if (r == -1) return luaL_error(L, "starttls: %s", err); /* a malformed table */
    ctx = NULL;
    if (r == 0) {
      ctx = hs_ltls_ctx(srv, &o, 0, err, sizeof err);
      hs_tls_opts_free(&o);
    }
  }
  size_t discarded = 0;
  int r = ctx ? hs_conn_starttls(c, ctx, client ? (sni ? sni : c->peer_ip) : NULL, &discarded, err,
                                 sizeof err)
              : -1;
  free(sni);
  if (r != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* hs.tls_settings(): the server's default certificate and key, or nil. */
int hs_ltls_settings(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  const hs_tls_opts_t *o = srv->lua.tls_default;
  if (!o || !o->cert || !o->key) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 2);
  lua_pushstring(L, o->cert);
  lua_setfield(L, -2, "cert");
  lua_pushstring(L, o->key);
  lua_setfield(L, -2, "key");
  return 1;
}

/* conn.tls: nil on a plain connection and during a handshake, else a new
 * table of what the handshake settled. */
void hs_ltls_push_info(lua_State *L, const hs_conn_t *c) {
  hs_tls_info_t info;
  if (!c->tls || !c->tls->done) {
    lua_pushnil(L);
    return;
  }
  hs_tls_get_info(c->tls, &info);
  lua_createtable(L, 0, 9);
  const char *names[] = {"version", "cipher", "sni", "subject", "issuer", "serial", "fingerprint"};
  const char *vals[] = {info.version, info.cipher, info.sni,   info.subject,
                        info.issuer,  info.serial, info.sha256};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    if (!vals[i]) continue;
    lua_pushstring(L, vals[i]);
    lua_setfield(L, -2, names[i]);
  }
  if (info.alpn) {
    lua_pushlstring(L, info.alpn, info.alpn_len);
    lua_setfield(L, -2, "alpn");
  }
  lua_pushboolean(L, info.resumed);
  lua_setfield(L, -2, "resumed");
}
