/* lwork.c: work a script waits for without blocking the loop, in the host
 * layer: hs.exec (a program, run by exec.c), hs.fs.readfile / writefile /
 * appendfile / stat (uv_fs_* on libuv's thread pool) and hs.resolve
 * (uv_getaddrinfo).
 *
 * Each call makes one request (hs_work_t) in the server's list. Inside a
 * handle coroutine the coroutine waits for it (HS_WAIT_WORK, coro.c) and is
 * resumed with the result; elsewhere a callback given by the script is
 * called with it later through the protected door, under the handler
 * budget. A coroutine that stops waiting (its connection closed) detaches
 * the request: its end then only frees it. The memory a request holds
 * counts toward max_lua_memory (srv->outbound_mem), and every Lua
 * allocation of a call comes before the request is made, so an allocation
 * error cannot leak one. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "exec.h"
#include "host.h"
#include "lwork.h"

#define EXEC_TIMEOUT 10000                /* ms */
#define EXEC_MAX_OUTPUT (1024 * 1024)     /* bytes per stream */
#define WRITE_CHUNK (1024u * 1024 * 1024) /* one uv_fs_write at most */
#define NOMEM "not enough memory (max_lua_memory)"

typedef enum { W_EXEC, W_READ, W_WRITE, W_STAT, W_RESOLVE } work_kind_t;

typedef struct hs_work {
  hs_server_t *srv;
  work_kind_t kind;
  const char *what;         /* "hs.exec", ...: names a failing callback in the log */
  hs_conn_t *waiter;        /* the connection whose coroutine waits for it, or NULL */
  int cb_ref;               /* the callback to call with the result, or HS_NOREF */
  int data_ref;             /* writefile / appendfile: the string written, kept alive */
  int detached;             /* nobody is told of the end: it only frees */
  LIST_ENTRY(hs_work) link; /* the server's requests under way */
  size_t charged;           /* bytes counted in srv->outbound_mem */
  hs_exec_t *exec;          /* hs.exec: the program, until it reported */
  uv_fs_t fs;               /* hs.fs: the step under way */
  uv_getaddrinfo_t gai;     /* hs.resolve */
  uv_file fd;               /* hs.fs: the open file, or -1 */
  int err;                  /* hs.fs: the first error (UV_*), or 0 */
  const char *why;          /* hs.fs: an error that is not a UV_* code */
  const char *data;         /* write: the bytes (inside the string data_ref keeps) */
  size_t len, off;          /* write: its length and what is written; read: bytes read */
  char *buf;                /* read: the file's bytes */
  size_t cap;
  uv_stat_t st; /* stat: the answer */
} hs_work_t;

/* ------------------------------------------------------------------------
 * Requests: memory, the list, and telling the end
 * ---------------------------------------------------------------------- */

static void charge(hs_work_t *w, size_t n) {
  w->charged += n;
  w->srv->outbound_mem += n;
}

static void uncharge(hs_work_t *w, size_t n) {
  w->charged -= n;
  w->srv->outbound_mem -= n;
}

/* Whether the Lua heap has room for need more bytes, after a full
 * collection if it takes one (results are pushed outside any protected
 * call, where a refused allocation would end the process). */
static int lua_room(hs_server_t *srv, size_t need) {
  if (hs_script_room(srv, need)) return 1;
  lua_gc(srv->lua.L, LUA_GCCOLLECT);
  return hs_script_room(srv, need);
}

/* max_lua_memory for exec.c's buffers (a plain C callback). */
static int exec_room(void *ud, size_t n) { return hs_script_room(ud, n); }

/* A request for the call running on L; NULL when there is no memory for
 * it. The callback (cb_ref) is already referenced: a Lua allocation, made
 * before this. */
static hs_work_t *work_new(hs_server_t *srv, work_kind_t kind, const char *what, int cb_ref) {
  hs_work_t *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->srv = srv;
  w->kind = kind;
  w->what = what;
  w->cb_ref = cb_ref;
  w->data_ref = HS_NOREF;
  w->fd = -1;
  w->fs.data = w;
  w->gai.data = w;
  charge(w, sizeof *w);
  return w;
}

/* Let go of w: its references, its memory and its place in the list. */
static void work_free(hs_work_t *w, int linked) {
  lua_State *L = w->srv->lua.L;
  if (linked) LIST_REMOVE(w, link);
  if (w->cb_ref != HS_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
  if (w->data_ref != HS_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, w->data_ref);
  free(w->buf);
  uncharge(w, w->charged);
  free(w);
}

/* The request is made: put it in the list, and inside a handle coroutine
 * wait for it (never returns: yields); elsewhere return true at once. */
static int work_started(lua_State *L, hs_work_t *w, hs_conn_t *owner) {
  LIST_INSERT_HEAD(&w->srv->lua.work, w, link);
  if (!owner) {
    lua_pushboolean(L, 1);
    return 1;
  }
  w->waiter = owner;
  owner->lua.work = w;
  lua_settop(L, 0);
  return hs_coro_wait(L, owner, HS_WAIT_WORK, NULL);
}

/* Where to push the result of w: the waiting coroutine, or the main state
 * with the callback already pushed. NULL when nobody is told. */
static lua_State *audience(hs_work_t *w) {
  hs_server_t *srv = w->srv;
  if (w->detached) return NULL;
  hs_conn_t *o = w->waiter;
  if (o) {
    lua_State *co = o->lua.co;
    if (!co || o->lua.running || o->lua.wait != HS_WAIT_WORK || o->lua.work != w ||
        lua_status(co) != LUA_YIELD || !lua_checkstack(co, 4))
      return NULL;
    return co;
  }
  if (w->cb_ref == HS_NOREF || !lua_checkstack(srv->lua.L, 6)) return NULL;
  lua_rawgeti(srv->lua.L, LUA_REGISTRYINDEX, w->cb_ref);
  return srv->lua.L;
}

/* The result of w (nargs values) is pushed on T (from audience, or NULL):
 * free w, then resume the coroutine or call the callback. */
static void tell(hs_work_t *w, lua_State *T, int nargs) {
  hs_server_t *srv = w->srv;
  hs_conn_t *o = w->waiter;
  const char *what = w->what;
  if (o && o->lua.work == w) o->lua.work = NULL; /* ended: nothing to detach */
  work_free(w, 1);
  if (!T) return;
  if (o)
    hs_coro_resume(srv, o, nargs);
  else
    hs_script_call(srv, NULL, nargs, what);
}

void hs_work_detach(hs_work_t *w) {
  w->waiter = NULL;
  w->detached = 1;
  /* A lookup, or a read whose open or stat has not begun, need not run at
   * all (a write still happens: the script asked for it; a close must). */
  uv_fs_type step = w->fs.fs_type;
  if (w->kind == W_RESOLVE) uv_cancel((uv_req_t *)&w->gai);
  if ((w->kind == W_READ || w->kind == W_STAT) && (step == UV_FS_OPEN || step == UV_FS_STAT))
    uv_cancel((uv_req_t *)&w->fs);
}

void hs_work_close_all(hs_server_t *srv) {
  hs_work_t *w, *next;
  for (w = LIST_FIRST(&srv->lua.work); w; w = next) {
    next = LIST_NEXT(w, link);
    if (w->waiter && w->waiter->lua.work == w) w->waiter->lua.work = NULL;
    hs_work_detach(w);
    if (w->kind == W_EXEC && w->exec) { /* it will not call back: free it now */
      hs_exec_abandon(w->exec, 1);
      w->exec = NULL;
      work_free(w, 1);
    }
  }
}

/* ------------------------------------------------------------------------
 * How the caller waits
 * ---------------------------------------------------------------------- */

/* The handle coroutine running as L, when the call should wait in it (no
 * callback given); NULL elsewhere. Raises where it could not yield.
 * MAY_LJMP. */
static hs_conn_t *waiting_owner(lua_State *L, const char *what, int has_cb) {
  hs_conn_t *o = hs_coro_conn(L);
  if (has_cb) return NULL;
  if (!o || o->lua.co != L) {
    /* Not a handle coroutine: nothing would wait, and a result no one
     * asked for would be lost without a word inside some other coroutine. */
    int main = lua_pushthread(L);
    lua_pop(L, 1);
    if (!main)
      luaL_error(L,
                 "%s in a coroutine other than handle's needs a callback "
                 "(it cannot wait here)",
                 what);
    return NULL;
  }
  if (!lua_isyieldable(L))
    luaL_error(L, "%s cannot wait here (inside a metamethod or a C function)", what);
  return o;
}

/* nil, err: the call cannot start (the callback is not called). */
static int refuse(lua_State *L, const char *err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

/* Why a call cannot start now (a stop, its connection closed, no memory),
 * or NULL. */
static const char *cannot_start(hs_server_t *srv, hs_conn_t *owner, size_t need) {
  if (srv->stopping) return "stopping";
  if (owner && !hs_conn_is_open(owner)) return owner->reason ? owner->reason : "closed";
  if (!hs_script_room(srv, need)) return NOMEM;
  return NULL;
}

/* What every call does before its libuv request: check it may start, keep
 * the callback (at cb_idx, 0 for none) and the data to write (at data_idx,
 * 0 for none) referenced, then allocate the request. The Lua allocations
 * (which may raise) come first, so nothing C-side can leak. NULL with
 * nil, err pushed (two results) when it cannot start. */
static hs_work_t *work_begin(lua_State *L, hs_server_t *srv, hs_conn_t *owner, work_kind_t kind,
                             const char *what, int cb_idx, int data_idx) {
  const char *why = cannot_start(srv, owner, sizeof(hs_work_t));
  if (why) {
    refuse(L, why);
    return NULL;
  }
  int cb_ref = HS_NOREF, data_ref = HS_NOREF;
  if (cb_idx) {
    lua_pushvalue(L, cb_idx);
    cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (data_idx) {
    lua_pushvalue(L, data_idx);
    data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  hs_work_t *w = work_new(srv, kind, what, cb_ref);
  if (!w) {
    if (cb_ref != HS_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, cb_ref);
    if (data_ref != HS_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, data_ref);
    refuse(L, "not enough memory");
    return NULL;
  }
  w->data_ref = data_ref;
  return w;
}

/* The error text of an fs or resolver failure: "ENOENT: no such file or
 * directory". */
static void push_uv_error(lua_State *T, int err) {
  lua_pushfstring(T, "%s: %s", uv_err_name(err), uv_strerror(err));
}

/* ------------------------------------------------------------------------
 * hs.exec
 * ---------------------------------------------------------------------- */

/* The result table of a program (stdout and stderr are copied). */
static void push_exec_result(lua_State *T, const hs_exec_result_t *r) {
  lua_createtable(T, 0, 4);
  lua_pushinteger(T, (lua_Integer)r->status);
  lua_setfield(T, -2, "status");
  lua_pushinteger(T, r->term_signal);
  lua_setfield(T, -2, "signal");
  lua_pushlstring(T, r->out, r->out_len);
  lua_setfield(T, -2, "stdout");
  lua_pushlstring(T, r->err, r->err_len);
  lua_setfield(T, -2, "stderr");
}

/* exec.c reports the end: the result, or nil, why, the result so far. */
static void exec_done(void *data, const hs_exec_result_t *r) {
  hs_work_t *w = data;
  w->exec = NULL;
  lua_State *T = audience(w);
  int n = 0;
  if (T && !lua_room(w->srv, r->out_len + r->err_len + 512)) {
    lua_pushnil(T);
    lua_pushliteral(T, NOMEM);
    n = 2;
  } else if (T && r->error) {
    lua_pushnil(T);
    lua_pushstring(T, r->error);
    push_exec_result(T, r);
    n = 3;
  } else if (T) {
    push_exec_result(T, r);
    n = 1;
  }
  tell(w, T, n);
}

/* A number option of opts (at index 2) in (0, max], or def. MAY_LJMP. */
static lua_Number num_opt(lua_State *L, const char *k, lua_Number def, lua_Number max) {
  lua_Number v = def;
  if (lua_getfield(L, 2, k) != LUA_TNIL) {
    int isnum;
    v = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(v > 0 && v <= max))
      return luaL_error(L, "hs.exec: opts.%s must be a number > 0 (at most %I)", k,
                        (lua_Integer)max);
    v = (lua_Number)(uint64_t)(v + 0.999999); /* a fraction rounds up, never to 0 */
  }
  lua_pop(L, 1);
  return v;
}

/* hs.exec(argv [, opts]): run a program. argv is a list {prog, args...}
 * (prog looked up in PATH) or, with opts.shell, a string for /bin/sh -c.
 * opts: stdin (string), timeout (ms, default 10000), max_output (bytes per
 * stream, default 1 MiB), cwd, shell, callback. Inside a handle coroutine
 * (no callback) it waits and returns {status, signal, stdout, stderr} or
 * nil, err [, the result so far]; elsewhere it returns true at once and
 * calls opts.callback with the same values later. */
static int hs_exec(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  int targ = lua_type(L, 1);
  if (targ != LUA_TTABLE && targ != LUA_TSTRING)
    return luaL_argerror(L, 1, "a list {program, args...} or a string expected");
  int has_opts = !lua_isnoneornil(L, 2);
  if (has_opts) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  int shell = 0, has_cb = 0;
  size_t input_len = 0;
  const char *input = NULL, *cwd = NULL;
  lua_Number timeout = EXEC_TIMEOUT, max_output = EXEC_MAX_OUTPUT;
  if (has_opts) {
    lua_getfield(L, 2, "shell");
    shell = lua_toboolean(L, -1);
    lua_getfield(L, 2, "stdin"); /* kept on the stack: 4 */
    if (!lua_isnil(L, -1) && !(input = lua_tolstring(L, -1, &input_len)))
      return luaL_error(L, "hs.exec: opts.stdin must be a string");
    lua_getfield(L, 2, "cwd"); /* 5 */
    if (!lua_isnil(L, -1) && !(cwd = lua_tostring(L, -1)))
      return luaL_error(L, "hs.exec: opts.cwd must be a string");
    lua_getfield(L, 2, "callback"); /* 6 */
    has_cb = !lua_isnil(L, -1);
    if (has_cb && !lua_isfunction(L, -1))
      return luaL_error(L, "hs.exec: opts.callback must be a function");
    timeout = num_opt(L, "timeout", EXEC_TIMEOUT, (lua_Number)HS_MAX_MS);
    max_output = num_opt(L, "max_output", EXEC_MAX_OUTPUT, (lua_Number)SIZE_MAX / 4);
  } else {
    lua_settop(L, 6);
  }
  /* The argument vector: pointers into strings on the stack, in a
   * userdata (Lua memory, so an error below cannot leak it). */
  lua_Integer argc;
  char **argv;
  if (targ == LUA_TSTRING) {
    const char *s = lua_tostring(L, 1);
    if (!shell && strpbrk(s, " \t\n"))
      return luaL_argerror(L, 1,
                           "a string with spaces runs only with opts.shell = true; "
                           "pass a list {program, args...}");
    argc = shell ? 3 : 1;
    argv = lua_newuserdatauv(L, sizeof(char *) * 4, 0);
    argv[0] = shell ? "/bin/sh" : (char *)s;
    argv[1] = shell ? "-c" : NULL;
    argv[2] = shell ? (char *)s : NULL;
  } else {
    if (shell) return luaL_argerror(L, 1, "opts.shell runs a string, not a list");
    argc = luaL_len(L, 1);
    if (argc < 1 || argc > 65536) return luaL_argerror(L, 1, "the list needs 1 to 65536 strings");
    argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(argc + 1), 0);
    int av = lua_gettop(L);
    lua_createtable(L, (int)argc, 0); /* keeps converted numbers alive */
    for (lua_Integer i = 1; i <= argc; i++) {
      int t = lua_geti(L, 1, i);
      if (t != LUA_TSTRING && t != LUA_TNUMBER)
        return luaL_error(L, "hs.exec: argv[%d] must be a string", (int)i);
      argv[i - 1] = (char *)lua_tostring(L, -1);
      lua_rawseti(L, av + 1, i);
    }
  }
  argv[argc] = NULL;
  hs_conn_t *owner = waiting_owner(L, "hs.exec", has_cb);
  hs_work_t *w = work_begin(L, srv, owner, W_EXEC, "hs.exec callback", has_cb ? 6 : 0, 0);
  if (!w) return 2;
  hs_exec_opts_t o = {argv,      cwd, input, input_len, (uint64_t)timeout, (size_t)max_output,
                      exec_room, srv};
  char err[256];
  w->exec = hs_exec_start(srv, &o, exec_done, w, err, sizeof err);
  if (!w->exec) {
    work_free(w, 0);
    return refuse(L, err);
  }
  return work_started(L, w, owner);
}

/* ------------------------------------------------------------------------
 * hs.fs: each call is a chain of uv_fs_* steps, one at a time, on w->fs
 * ---------------------------------------------------------------------- */

static void fs_step(uv_fs_t *req);

/* The chain is over (the file is closed): tell the result. */
static void fs_done(hs_work_t *w) {
  lua_State *T = audience(w);
  int n = 0;
  if (T && (w->err || w->why)) {
    lua_pushnil(T);
    if (w->why)
      lua_pushstring(T, w->why);
    else
      push_uv_error(T, w->err);
    n = 2;
  } else if (T && w->kind == W_READ) {
    uncharge(w, w->cap); /* freed with w, right after the copy */
    if (lua_room(w->srv, w->off + 64)) {
      lua_pushlstring(T, w->buf ? w->buf : "", w->off);
      n = 1;
    } else {
      lua_pushnil(T);
      lua_pushliteral(T, NOMEM);
      n = 2;
    }
  } else if (T && w->kind == W_STAT) {
    const uv_stat_t *st = &w->st;
    lua_createtable(T, 0, 4);
    lua_pushinteger(T, (lua_Integer)st->st_size);
    lua_setfield(T, -2, "size");
    lua_pushnumber(T, (lua_Number)st->st_mtim.tv_sec + (lua_Number)st->st_mtim.tv_nsec / 1e9);
    lua_setfield(T, -2, "mtime");
    lua_pushstring(T, S_ISREG(st->st_mode) ? "file" : S_ISDIR(st->st_mode) ? "directory" : "other");
    lua_setfield(T, -2, "type");
    lua_pushinteger(T, (lua_Integer)(st->st_mode & 07777));
    lua_setfield(T, -2, "mode");
    n = 1;
  } else if (T) {
    lua_pushboolean(T, 1);
    n = 1;
  }
  tell(w, T, n);
}

/* A step could not even be queued (r < 0), or one failed: remember the
 * first error, close the file if it is open, and end. */
static void fs_fail(hs_work_t *w, int r) {
  if (!w->err && !w->why) w->err = r;
  if (w->fd >= 0) {
    uv_file fd = w->fd;
    w->fd = -1;
    if (uv_fs_close(w->srv->loop, &w->fs, fd, fs_step) == 0) return;
    uv_fs_t req; /* could not queue it: close now (a local close is short) */
    uv_fs_close(w->srv->loop, &req, fd, NULL);
    uv_fs_req_cleanup(&req);
  }
  fs_done(w);
}

/* Close the file, then end (the result is what the steps gathered). */
static void fs_close(hs_work_t *w) { fs_fail(w, 0); }

/* Read the next piece of the file into w->buf, growing it (room under
 * max_lua_memory) when full. */
static void fs_read_next(hs_work_t *w) {
  if (w->off == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 4096;
    char *p = hs_script_room(w->srv, cap - w->cap) ? realloc(w->buf, cap) : NULL;
    if (!p) {
      w->why = NOMEM;
      fs_close(w);
      return;
    }
    charge(w, cap - w->cap);
    w->buf = p;
    w->cap = cap;
  }
  size_t n = w->cap - w->off;
  uv_buf_t b = uv_buf_init(w->buf + w->off, (unsigned)(n > WRITE_CHUNK ? WRITE_CHUNK : n));
  int r = uv_fs_read(w->srv->loop, &w->fs, w->fd, &b, 1, -1, fs_step); /* pipes too */
  if (r < 0) fs_fail(w, r);
}

/* Write the next piece of the data (the file's position moves; with
 * O_APPEND each write goes to the end). */
static void fs_write_next(hs_work_t *w) {
  size_t n = w->len - w->off;
  uv_buf_t b = uv_buf_init((char *)w->data + w->off, (unsigned)(n > WRITE_CHUNK ? WRITE_CHUNK : n));
  int r = uv_fs_write(w->srv->loop, &w->fs, w->fd, &b, 1, -1, fs_step);
  if (r < 0) fs_fail(w, r);
}

/* One step of a chain ended: start the next, or end. */
static void fs_step(uv_fs_t *req) {
  hs_work_t *w = req->data;
  ssize_t res = req->result;
  uv_fs_type type = req->fs_type;
  if (type == UV_FS_FSTAT || type == UV_FS_STAT) w->st = req->statbuf;
  uv_fs_req_cleanup(req);
  if (type == UV_FS_CLOSE) {
    if (res < 0 && !w->err && !w->why) w->err = (int)res;
    fs_done(w);
    return;
  }
  if (res < 0) {
    fs_fail(w, (int)res);
    return;
  }
  switch (type) {
  case UV_FS_STAT: fs_done(w); return;
  case UV_FS_OPEN:
    w->fd = (uv_file)res;
    if (w->kind == W_READ) {
      int r = uv_fs_fstat(w->srv->loop, &w->fs, w->fd, fs_step);
      if (r < 0) fs_fail(w, r);
    } else if (w->len == 0) {
      fs_close(w);
    } else {
      fs_write_next(w);
    }
    return;
  case UV_FS_FSTAT: {
    if (w->detached) { /* nobody will read it */
      fs_close(w);
      return;
    }
    /* A regular file's size, plus one byte to see its end in one read. */
    size_t want = S_ISREG(w->st.st_mode) ? (size_t)w->st.st_size + 1 : 4096;
    if (!hs_script_room(w->srv, want) || !(w->buf = malloc(want))) {
      w->why = NOMEM;
      fs_close(w);
      return;
    }
    charge(w, want);
    w->cap = want;
    fs_read_next(w);
    return;
  }
  case UV_FS_READ:
    if (res == 0 || w->detached) {
      fs_close(w);
      return;
    }
    w->off += (size_t)res;
    fs_read_next(w);
    return;
  case UV_FS_WRITE:
    if (res == 0) {
      fs_fail(w, UV_EIO);
      return;
    }
    w->off += (size_t)res;
    if (w->off < w->len)
      fs_write_next(w);
    else
      fs_close(w);
    return;
  default: fs_fail(w, UV_EINVAL); return;
  }
}

/* The common part of the hs.fs functions: path at 1, the callback (if
 * any) at cb_idx. kind says which chain; data at 2 for the writes. */
static int fs_call(lua_State *L, work_kind_t kind, int flags, const char *what, int cb_idx) {
  hs_server_t *srv = hs_server_from_lua(L);
  const char *path = luaL_checkstring(L, 1);
  size_t len = 0;
  if (kind == W_WRITE) luaL_checklstring(L, 2, &len);
  int has_cb = !lua_isnoneornil(L, cb_idx);
  if (has_cb) luaL_checktype(L, cb_idx, LUA_TFUNCTION);
  lua_settop(L, cb_idx);
  hs_conn_t *owner = waiting_owner(L, what, has_cb);
  if (!owner && !has_cb)
    return luaL_error(L, "%s: outside a handle coroutine, give a callback as the last argument",
                      what);
  hs_work_t *w =
      work_begin(L, srv, owner, kind, what, has_cb ? cb_idx : 0, kind == W_WRITE ? 2 : 0);
  if (!w) return 2;
  if (kind == W_WRITE) w->data = lua_tolstring(L, 2, &w->len);
  /* O_NONBLOCK: a FIFO or a device never holds a pool thread waiting for
   * another program (a stop would wait for it); regular files ignore it. */
  int r = kind == W_STAT
              ? uv_fs_stat(srv->loop, &w->fs, path, fs_step)
              : uv_fs_open(srv->loop, &w->fs, path, flags | O_CLOEXEC | O_NONBLOCK, 0666, fs_step);
  if (r < 0) {
    work_free(w, 0);
    lua_pushnil(L);
    push_uv_error(L, r);
    return 2;
  }
  return work_started(L, w, owner);
}

/* hs.fs.readfile(path [, callback]): the file's bytes, or nil, err. */
static int fs_readfile(lua_State *L) { return fs_call(L, W_READ, O_RDONLY, "hs.fs.readfile", 2); }

/* hs.fs.writefile(path, data [, callback]): create or truncate, write;
 * true, or nil, err. */
static int fs_writefile(lua_State *L) {
  return fs_call(L, W_WRITE, O_WRONLY | O_CREAT | O_TRUNC, "hs.fs.writefile", 3);
}

/* hs.fs.appendfile(path, data [, callback]): create if missing, write at
 * the end; true, or nil, err. */
static int fs_appendfile(lua_State *L) {
  return fs_call(L, W_WRITE, O_WRONLY | O_CREAT | O_APPEND, "hs.fs.appendfile", 3);
}

/* hs.fs.stat(path [, callback]): {size, mtime, type, mode}, or nil, err. */
static int fs_stat(lua_State *L) { return fs_call(L, W_STAT, 0, "hs.fs.stat", 2); }

/* ------------------------------------------------------------------------
 * hs.resolve
 * ---------------------------------------------------------------------- */

/* The lookup ended: a list of the addresses (each once), or nil, err. */
static void resolve_done(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  hs_work_t *w = req->data;
  lua_State *T = audience(w);
  int n = 0;
  if (T && status < 0) {
    lua_pushnil(T);
    push_uv_error(T, status);
    n = 2;
  } else if (T) {
    lua_createtable(T, 2, 0);
    int count = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
      char ip[INET6_ADDRSTRLEN];
      if (ai->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
      else if (ai->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
      else
        continue;
      int seen = 0;
      for (int i = 1; i <= count && !seen; i++) {
        lua_rawgeti(T, -1, i);
        seen = strcmp(lua_tostring(T, -1), ip) == 0;
        lua_pop(T, 1);
      }
      if (seen) continue;
      lua_pushstring(T, ip);
      lua_rawseti(T, -2, ++count);
    }
    n = 1;
  }
  uv_freeaddrinfo(res);
  tell(w, T, n);
}

/* hs.resolve(name [, callback]): the addresses of a host name, looked up
 * on libuv's thread pool: {"127.0.0.1", "::1"}, or nil, err. */
static int hs_resolve(lua_State *L) {
  hs_server_t *srv = hs_server_from_lua(L);
  const char *name = luaL_checkstring(L, 1);
  int has_cb = !lua_isnoneornil(L, 2);
  if (has_cb) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  hs_conn_t *owner = waiting_owner(L, "hs.resolve", has_cb);
  if (!owner && !has_cb)
    return luaL_error(L,
                      "hs.resolve: outside a handle coroutine, give a callback as the last "
                      "argument");
  hs_work_t *w = work_begin(L, srv, owner, W_RESOLVE, "hs.resolve callback", has_cb ? 2 : 0, 0);
  if (!w) return 2;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  int r = uv_getaddrinfo(srv->loop, &w->gai, resolve_done, name, NULL, &hints);
  if (r < 0) {
    work_free(w, 0);
    lua_pushnil(L);
    push_uv_error(L, r);
    return 2;
  }
  return work_started(L, w, owner);
}

void hs_lwork_open(lua_State *L) {
  lua_pushcfunction(L, hs_exec);
  lua_setfield(L, -2, "exec");
  lua_pushcfunction(L, hs_resolve);
  lua_setfield(L, -2, "resolve");
  static const luaL_Reg fs[] = {{"readfile", fs_readfile},
                                {"writefile", fs_writefile},
                                {"appendfile", fs_appendfile},
                                {"stat", fs_stat},
                                {NULL, NULL}};
  luaL_newlib(L, fs);
  lua_setfield(L, -2, "fs");
}
