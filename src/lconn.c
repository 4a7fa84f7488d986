/* lconn.c: the Lua face of a connection, metatable "hotsock.conn". Lua holds a
 * small box with a pointer to the hs_conn_t; the connection keeps the box in
 * the registry while it lives and clears the pointer when it finishes, so a
 * stale reference in a script can never reach freed memory. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "host.h"
#include "http1.h"
#include "proxy.h"

#define CONN_MT "hotsock.conn"

typedef struct hs_lbox {
  hs_conn_t *c;         /* NULL once the closed event ran */
  uint64_t id;          /* kept after close, for logs and tables keyed by id */
  int closed_by_script; /* kept after close: methods raise, else return nil, reason */
  char reason[40];      /* kept after close: why it closed */
} hs_lbox_t;

/* Keep in the order of the F_* indexes below. */
static const char *const readonly[] = {"id",       "peer",   "peer_ip",  "peer_port", "local_addr",
                                       "listener", "closed", "outbound", "bytes_in",  "bytes_out",
                                       "tls",      "proxy",  NULL};

/* Make a box for a connection still to come, kept in the registry: its
 * ref. MAY_LJMP (memory), so callers make it before the connection. */
int hs_lconn_prepare(lua_State *L) {
  hs_lbox_t *b = lua_newuserdatauv(L, sizeof *b, 1);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, CONN_MT);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Give c the box made by hs_lconn_prepare. */
void hs_lconn_bind(hs_server_t *srv, hs_conn_t *c, int ref) {
  lua_State *L = srv->lua.L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  hs_lbox_t *b = lua_touserdata(L, -1);
  b->c = c;
  b->id = c->id;
  lua_pop(L, 1);
  c->lua.box_ref = ref;
}

/* Create the box for a new connection and keep it in the registry. */
void hs_lconn_new(hs_server_t *srv, hs_conn_t *c) {
  hs_lconn_bind(srv, c, hs_lconn_prepare(srv->lua.L));
}

/* Push c's box onto L (any thread of the state). */
void hs_lconn_push(lua_State *L, hs_conn_t *c) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua.box_ref);
}

/* The connection's closed event: cut the box loose. Its fields stay
 * readable, and it remembers why the connection closed. */
void hs_lconn_clear(hs_server_t *srv, hs_conn_t *c) {
  lua_State *L = srv->lua.L;
  if (c->lua.box_ref == HS_NOREF) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua.box_ref);
  hs_lbox_t *b = lua_touserdata(L, -1);
  if (b) {
    b->c = NULL;
    b->closed_by_script = c->lua.closed_by_script;
    snprintf(b->reason, sizeof b->reason, "%s", c->reason ? c->reason : "closed");
  }
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, c->lua.box_ref);
  c->lua.box_ref = HS_NOREF;
}

/* The box at idx, or NULL when it is not a conn. As luaL_testudata, but the
 * metatable is compared by address with the one hs_lconn_open made: no
 * registry lookup by name (which interns "hotsock.conn" with a strcmp) on
 * every conn:send. */
static hs_lbox_t *test_box(lua_State *L, int idx) {
  hs_lbox_t *b = lua_touserdata(L, idx);
  if (!b || !lua_getmetatable(L, idx)) return NULL;
  const void *mt = lua_topointer(L, -1);
  lua_pop(L, 1);
  return mt == hs_server_from_lua(L)->lua.conn_mt ? b : NULL;
}

hs_conn_t *hs_lconn_test(lua_State *L, int idx) {
  hs_lbox_t *b = test_box(L, idx);
  return b ? b->c : NULL;
}

/* The open connection at idx. A closed one raises when the script closed
 * it itself (conn:close, conn:abort); one the host closed (the peer, a
 * limit, a timeout, a stop) gives NULL with nil, reason pushed: a client
 * cut off is not a script error. MAY_LJMP. */
static hs_conn_t *check_open(lua_State *L, int idx) {
  hs_lbox_t *b = test_box(L, idx);
  if (!b) luaL_typeerror(L, idx, CONN_MT);
  hs_conn_t *c = b->c;
  if (c && hs_conn_is_open(c)) return c;
  if (c ? c->lua.closed_by_script : b->closed_by_script)
    luaL_error(L, "attempt to use a closed connection");
  const char *r = c ? c->reason : b->reason;
  lua_pushnil(L);
  lua_pushstring(L, r && r[0] ? r : "closed");
  return NULL;
}

/* For methods with no result of their own: return nil, reason when closed. */
#define CHECK_OPEN(c, L, idx)            \
  hs_conn_t *c = check_open((L), (idx)); \
  if (!c) return 2

typedef struct arg_sink {
  lua_State *L;
  lua_Integer i;
} arg_sink_t;

static void push_arg(void *ud, const char *a, size_t n) {
  arg_sink_t *s = ud;
  lua_pushlstring(s->L, a, n);
  lua_rawseti(s->L, -2, ++s->i);
}

/* Whether the Lua heap has room for `need` more bytes under max_lua_memory,
 * after a full collection if it takes one. Pushing a frame happens outside
 * any protected call, where a refused allocation would end the process. */
static int lua_room(hs_server_t *srv, size_t need) {
  if (hs_script_room(srv, need)) return 1;
  lua_gc(srv->lua.L, LUA_GCCOLLECT);
  return hs_script_room(srv, need);
}

/* ---- http framing: a request as one table ---- */

typedef struct http_sink {
  lua_State *L; /* the headers table on top */
  int oom;
} http_sink_t;

/* One header line into the headers table: the name lower-cased, repeated
 * names joined with ", " (Set-Cookie with "\n", as its values may hold
 * commas; a repeated Content-Length is the same value, kept once). */
static void push_header(void *ud, const char *name, size_t nlen, const char *v, size_t vlen) {
  http_sink_t *s = ud;
  lua_State *L = s->L;
  char small[64] = {0}, *key = small;
  if (s->oom) return;
  if (nlen > sizeof small && !(key = malloc(nlen))) {
    s->oom = 1;
    return;
  }
  for (size_t i = 0; i < nlen; i++) {
    unsigned char ch = (unsigned char)name[i];
    key[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  int cookie = nlen == 10 && memcmp(key, "set-cookie", 10) == 0;
  int length = nlen == 14 && memcmp(key, "content-length", 14) == 0;
  lua_pushlstring(L, key, nlen);
  if (key != small) free(key);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushlstring(L, v, vlen);
  } else if (length) {
    lua_pop(L, 2);
    return;
  } else {
    if (cookie)
      lua_pushliteral(L, "\n");
    else
      lua_pushliteral(L, ", ");
    lua_pushlstring(L, v, vlen);
    lua_concat(L, 3);
  }
  lua_rawset(L, -3);
}

/* The message of an http framing (http1.h: [head][body], or a head alone
 * without its blank line for 100-continue) as a table: method, target,
 * path, query (nil without "?"), version ("1.1"), major, minor, headers,
 * body (the whole body, "" for none), or continue = true and no body for
 * the interim head. The head was checked by the framer: this walks it once
 * more for the offsets, with no limits. */
static int push_http(hs_conn_t *c, lua_State *L, const char *m, size_t len) {
  hs_http1_limits_t lim = {SIZE_MAX, SIZE_MAX, HS_HTTP1_MAX_HEADERS_CAP, SIZE_MAX};
  hs_http1_req_t req;
  const char *why;
  /* A header line takes at least 3 bytes ("a:\n"): a key and a value per 3
   * bytes, joined values, and the body, at most. Counted only when that
   * bound does not fit. */
  size_t need = 512 + 2 * len + (len / 3 + 1) * 96;
  if (!lua_checkstack(L, 8)) return -1; /* the request, headers, a key, its values */
  if (!hs_script_room(c->srv, need)) {
    if (hs_http1_head(m, len, &lim, &req, NULL, NULL, &why) != 0 ||
        !lua_room(c->srv, 512 + 2 * len + req.nheaders * 96))
      return -1;
  }
  lua_createtable(L, 0, 10);
  lua_createtable(L, 0, 4);
  http_sink_t sink = {L, 0};
  if (hs_http1_head(m, len, &lim, &req, push_header, &sink, &why) != 0 || sink.oom) {
    lua_pop(L, 2);
    return -1;
  }
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, m, req.method_len);
  lua_setfield(L, -2, "method");
  const char *t = m + req.target_off;
  lua_pushlstring(L, t, req.target_len);
  const char *q = memchr(t, '?', req.target_len);
  if (!q) {
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "path");
  } else {
    lua_pushlstring(L, t, (size_t)(q - t));
    lua_setfield(L, -3, "path");
    lua_pushlstring(L, q + 1, req.target_len - (size_t)(q - t) - 1);
    lua_setfield(L, -3, "query");
  }
  lua_setfield(L, -2, "target");
  if (req.minor == 1)
    lua_pushliteral(L, "1.1");
  else if (req.minor == 0)
    lua_pushliteral(L, "1.0");
  else
    lua_pushfstring(L, "1.%d", req.minor);
  lua_setfield(L, -2, "version");
  lua_pushinteger(L, 1);
  lua_setfield(L, -2, "major");
  lua_pushinteger(L, req.minor);
  lua_setfield(L, -2, "minor");
  if (req.complete) {
    lua_pushlstring(L, m + req.head_len, len - req.head_len);
    lua_setfield(L, -2, "body");
  } else {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "continue");
  }
  return 0;
}

int hs_lconn_push_frame(hs_conn_t *c, lua_State *L, const hs_framer_t *f, const char *m,
                        size_t len) {
  if (f->kind == HS_FRAME_HTTP) {
    if (push_http(c, L, m, len) != 0) goto no_room;
    return 0;
  }
  if (f->kind != HS_FRAME_RESP) {
    if (!lua_room(c->srv, len + 64)) goto no_room;
    lua_pushlstring(L, m, len);
    return 0;
  }
  /* A table slot and a string header per argument, and the bytes. An
   * argument takes at least 2 bytes on the wire (an inline word and its
   * space; "$0\r\n\r\n" takes 6), so there are at most len / 2 + 1; only
   * when that bound does not fit are they counted. */
  size_t need = 64 + (len / 2 + 1) * 64 + len;
  if (!hs_script_room(c->srv, need)) { /* count them before any collection */
    long argc = hs_resp_argc(m, len);
    if (argc < 0 || !lua_room(c->srv, 64 + (size_t)argc * 64 + len)) goto no_room;
  }
  lua_createtable(L, 4, 0); /* most commands; more grow it */
  arg_sink_t sink = {L, 0};
  char small[256], *scratch = small;
  if (m[0] != '*' && len > sizeof small && !(scratch = malloc(len))) {
    lua_pop(L, 1);
    goto no_room;
  }
  hs_resp_args(m, len, scratch, push_arg, &sink);
  if (scratch != small) free(scratch);
  return 0;
no_room:
  hs_log_conn(c->srv, c, HS_LOG_ERROR,
              "no room in the Lua heap for a %zu-byte message (max_lua_memory %zu); closing", len,
              c->srv->limits.max_lua_memory);
  hs_conn_abort(c, "out of memory");
  return -1;
}

#define SEND_CLOSED 1 /* send_value: the connection closed under it */
#define SENDV_MAX 8   /* conn:send's string arguments passed as one vector */

/* Append one value (a string, or a table of strings) to the output: 0, a
 * UV_* error, or SEND_CLOSED when a metamethod closed the connection.
 * MAY_LJMP. */
static int send_value(lua_State *L, hs_conn_t *c, int idx) {
  if (lua_type(L, idx) == LUA_TTABLE) {
    lua_Integer n = luaL_len(L, idx); /* __len may run script code */
    for (lua_Integer i = 1; i <= n; i++) {
      if (!hs_conn_is_open(c)) return SEND_CLOSED;
      lua_rawgeti(L, idx, i);
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      if (!s)
        luaL_error(L, "send: item %d of the table is a %s, not a string", (int)i,
                   luaL_typename(L, -1));
      int r = hs_conn_send(c, s, len);
      lua_pop(L, 1);
      if (r) return r;
    }
    return hs_conn_is_open(c) ? 0 : SEND_CLOSED;
  }
  size_t len;
  const char *s = lua_tolstring(L, idx, &len); /* a number's __tostring is not called */
  if (!s)
    luaL_argerror(L, idx, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, idx)));
  return hs_conn_send(c, s, len);
}

static int conn_send(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  int n = lua_gettop(L);
  if (c->flags & HS_CONN_SHUTDOWN) {
    lua_pushnil(L);
    lua_pushliteral(L, "connection is shut down for writing");
    return 2;
  }
  /* Strings only (the usual call, conn:send(line, "\n")): one call to
   * the socket layer, which may write a large message straight from the
   * strings. Anything else goes value by value below. */
  if (n - 1 <= SENDV_MAX) {
    uv_buf_t v[SENDV_MAX];
    int k = 0;
    while (k < n - 1 && lua_type(L, k + 2) == LUA_TSTRING) {
      size_t len;
      const char *s = lua_tolstring(L, k + 2, &len);
      v[k].base = (char *)s; /* uv_buf_t on unix: a size_t length */
      v[k++].len = len;
    }
    if (k == n - 1) {
      if (hs_conn_sendv(c, v, (unsigned)k) != 0) {
        hs_conn_abort(c, "out of memory");
        lua_pushnil(L);
        lua_pushliteral(L, "out of memory");
        return 2;
      }
      n = 1; /* done: no value left for the loop */
    }
  }
  for (int i = 2; i <= n; i++) {
    int r = send_value(L, c, i);
    if (r == SEND_CLOSED) {
      lua_pushnil(L);
      lua_pushliteral(L, "closed");
      return 2;
    }
    if (r != 0) {
      hs_conn_abort(c, "out of memory");
      lua_pushnil(L);
      lua_pushliteral(L, "out of memory");
      return 2;
    }
  }
  if (hs_conn_check_outbuf(c) != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "output buffer full");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int conn_close(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  c->lua.closed_by_script = 1;
  hs_conn_close(c, "closed");
  return 0;
}

static int conn_abort(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  c->lua.closed_by_script = 1;
  hs_conn_abort(c, "aborted");
  return 0;
}

static int conn_shutdown(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  hs_conn_shutdown(c);
  return 0;
}

static int conn_pause(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  hs_conn_pause(c);
  return 0;
}

static int conn_resume(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  hs_conn_resume(c);
  return 0;
}

static int conn_buffered(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  lua_pushinteger(L, (lua_Integer)hs_conn_buffered(c));
  return 1;
}

static int conn_settimeouts(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *names[] = {"idle", "read", "write", "frame", "first_byte"};
  uint64_t *dst[] = {&c->to.idle, &c->to.read, &c->to.write, &c->to.frame, &c->to.first_byte};
  for (int i = 0; i < 5; i++) {
    if (lua_getfield(L, 2, names[i]) != LUA_TNIL) {
      int isnum;
      lua_Number v = lua_tonumberx(L, -1, &isnum);
      if (!isnum || !(v >= 0 && v <= (lua_Number)HS_MAX_MS))
        return luaL_error(L, "settimeouts: %s must be a number of ms from 0 to %llu", names[i],
                          HS_MAX_MS);
      *dst[i] = (uint64_t)v;
    }
    lua_pop(L, 1);
  }
  if (hs_conn_is_open(c)) hs_timers_update(c); /* a getfield may have closed it */
  return 0;
}

static int conn_framing(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  if (lua_isnoneornil(L, 2)) {
    char name[128];
    lua_pushstring(L, hs_framer_describe(&c->framer, name, sizeof name));
    return 1;
  }
  hs_framer_t f;
  char err[256];
  if (hs_module_parse_framing(L, 2, &f, err, sizeof err) != 0)
    return luaL_error(L, "framing: %s", err);
  if (hs_conn_is_open(c)) hs_conn_set_framing(c, &f);
  return 0;
}

/* conn:receive(pattern). Returns the frame at once when the input already
 * holds one; otherwise waits (yields) until the read path delivers it, or
 * returns nil, err, partial. MAY_LJMP. */
static int conn_receive(lua_State *L) {
  hs_conn_t *c = check_open(L, 1);
  if (!c) {
    lua_pushliteral(L, "");
    return 3;
  }
  hs_conn_t *o = hs_coro_conn(L);
  if (!(c->flags & HS_CONN_PULL) || !o || o->lua.co != L || hs_coro_reader(c) != o)
    return luaL_error(L,
                      "receive works only in the handle(conn) coroutine of this "
                      "connection, or of the one that made it with hs.connect "
                      "(event-style scripts get messages in on_message)");
  hs_framer_t f;
  char err[256];
  if (lua_isnoneornil(L, 2)) {
    hs_framer_line(&f);
  } else if (hs_module_parse_framing(L, 2, &f, err, sizeof err) != 0) {
    return luaL_error(L, "receive: %s", err);
  }
  lua_settop(L, 1);
  const char *msg, *why = NULL;
  size_t len;
  int r = hs_conn_read(c, &f, &msg, &len, &why);
  if (r == HS_FRAME_OK) {
    if (hs_lconn_push_frame(c, L, &f, msg, len) != 0) { /* c is aborted */
      lua_pushnil(L);
      lua_pushliteral(L, "out of memory");
      lua_pushliteral(L, "");
      return 3;
    }
    return 1;
  }
  if (r < 0) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    lua_pushliteral(L, "");
    return 3;
  }
  if ((c->flags & HS_CONN_EOF) || !hs_conn_is_open(c)) {
    const char *p;
    size_t n;
    hs_conn_take_partial(c, &p, &n);
    lua_pushnil(L);
    lua_pushstring(L, hs_conn_is_open(c) ? "closed" : c->reason);
    lua_pushlstring(L, p, n);
    return 3;
  }
  if (!lua_isyieldable(L)) /* before anything waits: nothing to undo */
    return luaL_error(L, "receive cannot wait here (inside a metamethod or a C function)");
  hs_conn_want(c);
  return hs_coro_wait(L, o, HS_WAIT_READ, c);
}

/* conn:skip(n): drop the next n bytes of input unread (those buffered
 * first, then as they arrive); true, or nil, "frame error" when a frame
 * error already ended the input (on_frame_error: the connection closes and
 * drops its input anyway). */
static int conn_skip(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  int isint;
  lua_Integer n = lua_tointegerx(L, 2, &isint);
  if (!isint || lua_type(L, 2) != LUA_TNUMBER || n < 0)
    return luaL_argerror(L, 2, "a non-negative integer byte count expected");
  if (hs_conn_skip(c, (uint64_t)n) != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "frame error");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:starttls([opts]): upgrade to TLS in place (ltls.c). */
static int conn_starttls(lua_State *L) {
  CHECK_OPEN(c, L, 1);
  return hs_ltls_starttls(L, c);
}

static int conn_pipe(lua_State *L) {
  CHECK_OPEN(from, L, 1);
  CHECK_OPEN(to, L, 2);
  if (hs_conn_pipe(from, to) != 0)
    return luaL_error(L, "pipe: a connection can pipe to one other, and be piped to by one");
  return 0;
}

static const luaL_Reg methods[] = {{"send", conn_send},
                                   {"starttls", conn_starttls},
                                   {"close", conn_close},
                                   {"abort", conn_abort},
                                   {"shutdown", conn_shutdown},
                                   {"pause", conn_pause},
                                   {"resume", conn_resume},
                                   {"buffered", conn_buffered},
                                   {"settimeouts", conn_settimeouts},
                                   {"framing", conn_framing},
                                   {"receive", conn_receive},
                                   {"skip", conn_skip},
                                   {"pipe", conn_pipe},
                                   {NULL, NULL}};

/* The read-only fields, in the order of readonly[]: upvalue 2 of __index and
 * __newindex maps each name to its index + 1, so a lookup is one rawget. */
enum {
  F_ID,
  F_PEER,
  F_PEER_IP,
  F_PEER_PORT,
  F_LOCAL,
  F_LISTENER,
  F_CLOSED,
  F_OUTBOUND,
  F_BYTES_IN,
  F_BYTES_OUT,
  F_TLS,
  F_PROXY
};

static void set_span(lua_State *L, const char *k, hs_proxy_span_t v) {
  if (!v.n) return;
  lua_pushlstring(L, v.p, v.n);
  lua_setfield(L, -2, k);
}

/* conn.proxy: nil unless the connection began with a PROXY header, else a
 * new table of what it said (the header is kept and read again here). */
static void push_proxy(lua_State *L, const hs_conn_t *c) {
  hs_proxy_t h;
  const char *why;
  if (!c->proxy_hdr || hs_proxy_parse(c->proxy_hdr, c->proxy_len, &h, &why) <= 0) {
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, h.version);
  lua_setfield(L, -2, "version");
  lua_pushboolean(L, h.local);
  lua_setfield(L, -2, "local");
  lua_pushstring(L, c->proxy_peer);
  lua_setfield(L, -2, "peer");
  if (!h.local) {
    lua_pushfstring(L, h.family == 6 ? "[%s]:%d" : "%s:%d", h.dst_ip, h.dst_port);
    lua_setfield(L, -2, "dst");
    lua_pushstring(L, h.dst_ip);
    lua_setfield(L, -2, "dst_ip");
    lua_pushinteger(L, h.dst_port);
    lua_setfield(L, -2, "dst_port");
  }
  set_span(L, "alpn", h.alpn);
  set_span(L, "authority", h.authority);
  set_span(L, "unique_id", h.unique_id);
  if (h.has_ssl) {
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, (lua_Integer)h.ssl_client);
    lua_setfield(L, -2, "client");
    /* verify is 0 also when no certificate was given: verified only with
     * one (on this connection or in its session) */
    lua_pushboolean(L, h.ssl_verify == 0 && (h.ssl_client & (2 | 4)) != 0);
    lua_setfield(L, -2, "verified");
    set_span(L, "version", h.ssl_version);
    set_span(L, "cn", h.ssl_cn);
    set_span(L, "cipher", h.ssl_cipher);
    set_span(L, "sig_alg", h.ssl_sig_alg);
    set_span(L, "key_alg", h.ssl_key_alg);
    lua_setfield(L, -2, "ssl");
  }
}

static int push_field(lua_State *L, hs_lbox_t *b, int field) {
  hs_conn_t *c = b->c;
  if (field == F_ID) return lua_pushinteger(L, (lua_Integer)b->id), 1;
  if (field == F_CLOSED) return lua_pushboolean(L, !c || !hs_conn_is_open(c)), 1;
  if (!c) return lua_pushnil(L), 1; /* the connection is gone */
  /* A unix client's peer is the socket's path, unless a PROXY header named one. */
  int un = (c->flags & (HS_CONN_UNIX | HS_CONN_PROXIED)) == HS_CONN_UNIX;
  switch (field) {
  case F_PEER: lua_pushstring(L, un ? c->listener->path : c->peer); break;
  case F_PEER_IP: lua_pushstring(L, un ? "unix" : c->peer_ip); break;
  case F_PEER_PORT:
    if (un)
      lua_pushnil(L);
    else
      lua_pushinteger(L, c->peer_port);
    break;
  case F_LOCAL: lua_pushstring(L, un ? c->listener->name : c->local); break;
  case F_LISTENER:
    if (c->listener)
      lua_pushstring(L, c->listener->name);
    else
      lua_pushnil(L);
    break;
  case F_OUTBOUND: lua_pushboolean(L, (c->flags & HS_CONN_OUTBOUND) != 0); break;
  case F_BYTES_IN: lua_pushinteger(L, (lua_Integer)c->bytes_in); break;
  case F_BYTES_OUT: lua_pushinteger(L, (lua_Integer)c->bytes_out); break;
  case F_TLS: hs_ltls_push_info(L, c); break;
  case F_PROXY: push_proxy(L, c); break;
  default: lua_pushnil(L); break;
  }
  return 1;
}

/* The box at index 1, or NULL when it is not a conn: __index and __newindex
 * can be called by hand (debug.getmetatable(conn).__index(42, "id")). Upvalue
 * 3 is the conn metatable. */
static hs_lbox_t *self_box(lua_State *L) {
  if (lua_type(L, 1) != LUA_TUSERDATA || !lua_getmetatable(L, 1)) return NULL;
  int same = lua_rawequal(L, -1, lua_upvalueindex(3));
  lua_pop(L, 1);
  return same ? lua_touserdata(L, 1) : NULL;
}

/* conn.key: a method, a read-only field, or the script's own state. */
static int conn_index(lua_State *L) {
  /* A method first, and with no check of what self is: every method checks
   * its own self when called, and conn:send is looked up for every
   * message. */
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1; /* methods[key] */
  hs_lbox_t *b = self_box(L);
  if (!b) return luaL_typeerror(L, 1, CONN_MT);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) == LUA_TNUMBER) /* fields[key] */
    return push_field(L, b, (int)lua_tointeger(L, -1) - 1);
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) return 1; /* nil */
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

static int conn_newindex(lua_State *L) {
  if (!self_box(L)) return luaL_typeerror(L, 1, CONN_MT);
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *k = lua_tostring(L, 2);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL)
      return luaL_error(L, "conn.%s is read-only", k);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
      return luaL_error(L, "conn.%s is a method and cannot be replaced", k);
    lua_pop(L, 2);
  }
  if (lua_getiuservalue(L, 1, 1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3); /* state[key] = value */
  return 0;
}

static int conn_tostring(lua_State *L) {
  hs_lbox_t *b = luaL_checkudata(L, 1, CONN_MT);
  if (b->c)
    lua_pushfstring(L, "conn %I (%s)", (lua_Integer)b->id,
                    (b->c->flags & HS_CONN_UNIX) ? b->c->listener->path : b->c->peer);
  else
    lua_pushfstring(L, "conn %I (closed)", (lua_Integer)b->id);
  return 1;
}

static int conn_eq(lua_State *L) {
  hs_lbox_t *a = luaL_testudata(L, 1, CONN_MT), *b = luaL_testudata(L, 2, CONN_MT);
  lua_pushboolean(L, a && b && a->id == b->id);
  return 1;
}

void hs_lconn_open(lua_State *L) {
  luaL_newmetatable(L, CONN_MT);
  hs_server_from_lua(L)->lua.conn_mt = lua_topointer(L, -1);
  luaL_newlib(L, methods);
  lua_newtable(L); /* fields: name -> index + 1 */
  for (int i = 0; readonly[i]; i++) {
    lua_pushinteger(L, i + 1);
    lua_setfield(L, -2, readonly[i]);
  }
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -5);
  lua_pushcclosure(L, conn_index, 3); /* methods, fields, metatable */
  lua_setfield(L, -4, "__index");
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, conn_newindex, 3);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, conn_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, conn_eq);
  lua_setfield(L, -2, "__eq");
  lua_pushliteral(L, "hotsock.conn");
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "hotsock.conn"); /* getmetatable(conn): no way to add a __gc */
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}
