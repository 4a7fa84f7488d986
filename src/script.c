/* script.c: the lua_State. Loading and validating the handler module, the one
 * protected door every C->Lua call goes through (with a traceback), the
 * handler budget (a CPU-time signal that arms a count hook, which turns
 * sticky), and the heap
 * cap (through the allocator). */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
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

#define HOOK_COUNT 1000 /* instructions between budget checks */

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

/* The budget's clock, in ns. Coarse (the kernel's tick, a few ms): it is
 * read at the start of every handler call, and a precise clock read there
 * cost a few percent of a small handler; a budget is tens of ms. */
static uint64_t budget_clock(void) {
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
  return uv_hrtime();
}

/* One tick of budget_clock in ns. A call that starts late in a tick reads
 * the tick's start, so its deadline is a tick later than the budget alone:
 * a stop may come up to two ticks late, never early. */
static uint64_t budget_tick(void) {
  static uint64_t tick;
  if (!tick) {
    tick = 1;
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0 &&
        clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0)
      tick = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
  }
  return tick;
}

/* The budget's watch. Handlers run with no hook: under a count hook the VM
 * stops in luaG_traceexec before every instruction, which was 28 % of the
 * instructions of a pipelined Redis command (docs/performance.md). Instead a
 * timer on the loop thread's CPU clock sends SIGPROF after every WATCH_NS of
 * CPU the thread spends (none while it sleeps in epoll_wait). The signal
 * looks at the deadline of the budgeted call under way and, once it has
 * passed, puts the count hook on the threads the call runs on: the main
 * thread and the handle coroutine being resumed (lua_sethook may be called
 * from a signal handler; lua.c stops a script on Ctrl-C that way). The hook
 * raises HOOK_COUNT instructions later, as when every thread had it: a
 * handler that passed its deadline inside one long call into C (a big
 * string.rep, a collection of a big heap) and then ends is let be.
 * Coroutines a script makes are not known to
 * the signal, so they keep the count hook they always had, given at
 * coroutine.create/wrap (below). Where the timer cannot be had, every thread
 * has the count hook, as before. What the signal reads is in `watch`,
 * lock-free atomics, written only by the loop thread it interrupts. A call's
 * deadline counts from its start, so the time it spends blocked in a system
 * call (no CPU, no signal) counts too once it runs Lua again. */
#if ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_POINTER_LOCK_FREE == 2 && defined(SIGEV_THREAD_ID) && \
    defined(CLOCK_THREAD_CPUTIME_ID) && defined(CLOCK_MONOTONIC_COARSE)
#define HAVE_WATCH 1
#endif
#define WATCH_NS 5000000 /* CPU time between looks: a stop comes at most this late */

static struct {
  _Atomic uint64_t deadline;  /* of the budgeted call under way; 0: none */
  _Atomic(lua_State *) main;  /* the main thread it runs on */
  _Atomic(lua_State *) co;    /* the handle coroutine it resumed, or NULL */
  int on;                     /* 1: the timer runs in this process; -1: not to be had */
} watch;

static void budget_hook(lua_State *L, lua_Debug *ar);
static void mark_stopped(hs_server_t *srv, lua_State *L);

#ifdef HAVE_WATCH
static void watch_signal(int sig) {
  int saved = errno;
  (void)sig;
  uint64_t d = atomic_load_explicit(&watch.deadline, memory_order_acquire);
  if (d && budget_clock() >= d) {
    lua_State *m = atomic_load_explicit(&watch.main, memory_order_relaxed);
    lua_State *co = atomic_load_explicit(&watch.co, memory_order_relaxed);
    /* Not again on a hooked thread: that would restart its count, and a
     * loop of slow C calls might never reach it. */
    if (m && !lua_gethookmask(m)) lua_sethook(m, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
    if (co && !lua_gethookmask(co)) lua_sethook(co, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
  }
  errno = saved;
}

/* In a child of fork: timers are not inherited. */
static void watch_forked(void) {
  if (watch.on > 0) watch.on = 0;
}
#endif

/* Start the timer in this process: 1, or 0 when it cannot be had. */
static int watch_start(void) {
#ifdef HAVE_WATCH
  static int atfork;
  if (!atfork && pthread_atfork(NULL, NULL, watch_forked) == 0) atfork = 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = watch_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART; /* reads, writes and waitpid go on; epoll_wait returns EINTR */
  struct sigevent sev;
  memset(&sev, 0, sizeof sev);
  sev.sigev_notify = SIGEV_THREAD_ID;
  sev.sigev_signo = SIGPROF;
  sev._sigev_un._tid = gettid();
  timer_t t;
  struct itimerspec its = {{0, WATCH_NS}, {0, WATCH_NS}};
  sigset_t prof;
  sigemptyset(&prof);
  sigaddset(&prof, SIGPROF);
  /* Unblocked: a mask inherited from whoever started us would silence it. */
  if (atfork && sigaction(SIGPROF, &sa, NULL) == 0 &&
      pthread_sigmask(SIG_UNBLOCK, &prof, NULL) == 0 &&
      timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &t) == 0) {
    if (timer_settime(t, 0, &its, NULL) == 0) return 1;
    timer_delete(t);
  }
#endif
  return 0;
}

/* The hook a thread has between budget stops: none under the watch, except
 * a coroutine the script made; the count hook everywhere without it. */
static void hook_normal(hs_server_t *srv, lua_State *L) {
  int script_co = L != srv->lua.L && hs_coro_conn(L) == NULL;
  if (watch.on > 0 && !script_co) {
    if (lua_gethookmask(L)) lua_sethook(L, NULL, 0, 0);
  } else if (lua_gethookcount(L) != HOOK_COUNT || !lua_gethookmask(L)) {
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
  }
}

/* Count hook: once the deadline passes, every instruction raises, so a pcall
 * in the script cannot swallow the stop: its caller's next instruction raises
 * again, all the way out. The spin may be in a coroutine the handler made
 * (coroutine.wrap); its error ends that coroutine, and a pcall around the
 * resume would let the handler go on, so the threads the call started from
 * (the main thread and a handle coroutine) raise on every instruction too. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
  hs_server_t *srv = hs_server_from_lua(L);
  (void)ar;
  if (srv->lua.budget_depth == 0 ||
      (!srv->lua.budget_tripped &&
       budget_clock() < srv->lua.budget_deadline)) {
    /* No call over its budget: a thread left raising by an earlier stop, a
     * signal about a call that has ended since, or the count hook's look. */
    hook_normal(srv, L);
    return;
  }
  if (!srv->lua.budget_tripped) {
    srv->lua.budget_tripped = 1;
    if (L != srv->lua.L) lua_sethook(srv->lua.L, budget_hook, LUA_MASKCOUNT, 1);
    if (srv->lua.current && srv->lua.current->lua.co && srv->lua.current->lua.co != L)
      lua_sethook(srv->lua.current->lua.co, budget_hook, LUA_MASKCOUNT, 1);
  }
  lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
  mark_stopped(srv, L);
  luaL_error(L, "handler exceeded its time budget of %d ms", (int)srv->lua.budget_ms);
}

void hs_script_budget_start(hs_server_t *srv, uint64_t ms) {
  if (srv->lua.budget_depth++ > 0) return;
  srv->lua.budget_ms = ms;
  srv->lua.budget_tripped = 0;
  srv->lua.budget_deadline = ms ? budget_clock() + budget_tick() + ms * 1000000u : UINT64_MAX;
  if (watch.on == 0) { /* in a child of fork: a timer of its own */
    watch.on = watch_start() ? 1 : -1;
    if (watch.on < 0) lua_sethook(srv->lua.L, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
  }
  if (watch.on > 0) {
    atomic_store_explicit(&watch.main, srv->lua.L, memory_order_relaxed);
    atomic_store_explicit(&watch.deadline, srv->lua.budget_deadline, memory_order_release);
  }
}

/* End a budgeted call; returns 1 when its budget ran out. */
int hs_script_budget_stop(hs_server_t *srv) {
  int tripped = srv->lua.budget_tripped;
  if (--srv->lua.budget_depth > 0) return tripped;
  if (watch.on > 0) {
    atomic_store_explicit(&watch.deadline, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst); /* no new hook from here on */
  }
  if (tripped) srv->lua.budget_tripped = 0;
  /* A hook the signal put on as the call ended, or the stop's. */
  hook_normal(srv, srv->lua.L);
  if (tripped && srv->lua.current && srv->lua.current->lua.co)
    hook_normal(srv, srv->lua.current->lua.co);
  return tripped;
}

/* The handle coroutine a budgeted call is about to resume (coro.c), or the
 * one before, put back after; returns the one it replaces. The coroutine
 * leaving keeps no hook the signal gave it (the next resume would take it
 * off in the middle of a call), unless the stop is under way. */
lua_State *hs_script_watch_co(hs_server_t *srv, lua_State *co) {
  lua_State *prev = atomic_load_explicit(&watch.co, memory_order_relaxed);
  atomic_store_explicit(&watch.co, co, memory_order_relaxed);
  if (prev && prev != co && watch.on > 0 && !srv->lua.budget_tripped && lua_gethookmask(prev))
    lua_sethook(prev, NULL, 0, 0);
  return prev;
}

/* Threads the budget stopped (registry, weak keys). The stop is raised
 * inside the count hook, where Lua turns hooks off, and a coroutine that
 * dies of it keeps them off: its pending <close> handlers would then run
 * with no budget at all. With hooks on, each would raise at its first
 * instruction, so closing such a coroutine skips them (hs_coro_drop,
 * coroutine.close, coroutine.wrap). */
#define STOPPED_THREADS "hotsock.stopped"

static void mark_stopped(hs_server_t *srv, lua_State *L) {
  if (L == srv->lua.L) return;
  if (lua_getfield(L, LUA_REGISTRYINDEX, STOPPED_THREADS) == LUA_TTABLE) {
    lua_pushthread(L);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
}

int hs_script_stopped(lua_State *L, lua_State *co) {
  int st = lua_status(co), stopped = 0;
  if (st == LUA_OK || st == LUA_YIELD) return 0; /* not dead of an error */
  if (lua_getfield(L, LUA_REGISTRYINDEX, STOPPED_THREADS) == LUA_TTABLE) {
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    stopped = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return stopped;
}

/* coroutine.create: the new thread gets the count hook (see the watch,
 * above). Upvalue 1: the original. */
static int hooked_create(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  lua_State *co = lua_tothread(L, -1);
  if (co) hook_normal(hs_server_from_lua(L), co);
  return 1;
}

/* What coroutine.wrap returns: resume the coroutine (upvalue 1) with the
 * original coroutine.resume (upvalue 2) and return what it yields; on an
 * error, close the coroutine (its <close> handlers) unless the budget
 * stopped it, and raise the error with the caller's position, as Lua's
 * own wrap does. */
static int wrap_call(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_rotate(L, 1, 2); /* resume, co, args... */
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  if (lua_toboolean(L, 1)) return lua_gettop(L) - 1;
  int st = lua_status(co);
  if (st != LUA_OK && st != LUA_YIELD && !hs_script_stopped(L, co)) {
    st = lua_resetthread(co); /* its error again, or a <close> handler's */
    lua_settop(L, 0);
    lua_xmove(co, L, 1);
  }
  if (st != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

/* coroutine.wrap. Upvalues: the original coroutine.create and resume. */
static int hooked_wrap(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1); /* co */
  hook_normal(hs_server_from_lua(L), lua_tothread(L, -1));
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushcclosure(L, wrap_call, 2);
  return 1;
}

/* xpcall: Lua calls the message handler where the error is raised, and
 * the budget's stop is raised inside the count hook, where hooks are off:
 * a handler that looped there would never be stopped. The script's handler
 * (upvalue 1) is called through this one, which hands a stop on as it is. */
static int xpcall_msgh(lua_State *L) {
  if (hs_server_from_lua(L)->lua.budget_tripped) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int xpcall_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  (void)ctx;
  return lua_gettop(L);
}

/* Upvalue 1: the original xpcall. */
static int guarded_xpcall(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, xpcall_msgh, 1);
  lua_replace(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, xpcall_done); /* yields pass */
  return lua_gettop(L);
}

static void hook_coroutines(lua_State *L) {
  lua_newtable(L); /* the stopped threads, weak keys */
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, STOPPED_THREADS);
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    lua_getfield(L, -1, "create");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, hooked_create, 1);
    lua_setfield(L, -3, "create");
    lua_getfield(L, -2, "resume"); /* the original create, resume */
    lua_pushcclosure(L, hooked_wrap, 2);
    lua_setfield(L, -2, "wrap");
  }
  lua_pop(L, 1);
  lua_getglobal(L, "xpcall");
  lua_pushcclosure(L, guarded_xpcall, 1);
  lua_setglobal(L, "xpcall");
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
  /* The watch (or the count hook) is what enforces handler_budget: a
   * script may not take the hook away, nor put a finalizer where the hook
   * does not reach. */
  if (watch.on == 0) watch.on = watch_start() ? 1 : -1;
  if (watch.on < 0) lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
  hook_coroutines(L);
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
