/* budget.c: the handler budget. A call into the script that runs past
 * handler_budget (or the load budget) is stopped between two Lua
 * instructions, and the stop cannot be caught: every instruction raises
 * until the call has returned to the host (docs/limits.md).
 *
 * The pieces: the coarse clock of the deadlines; the watch, a CPU-time
 * signal that arms Lua's count hook only once a call is past its deadline;
 * the hook that raises and turns sticky; and the guards of what a stop
 * leaves behind (coroutine.create/wrap/close, xpcall). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "host.h"

#define HOOK_COUNT 1000 /* instructions between budget checks */

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
 * stops in luaG_traceexec before every instruction, a fifth of the
 * instructions of a pipelined Redis command (docs/performance.md). Instead
 * a timer on the loop thread's CPU clock sends SIGPROF after every WATCH_NS
 * of CPU the thread spends (none while it sleeps in epoll_wait). The signal
 * looks at the deadline of the budgeted call under way and, once it has
 * passed, puts the count hook on the threads the call runs on: the main
 * thread and the handle coroutine being resumed (lua_sethook may be called
 * from a signal handler; lua.c stops a script on Ctrl-C that way).
 *
 * The hook raises HOOK_COUNT instructions later, as when every thread had
 * it: a handler that passed its deadline inside one long call into C (a big
 * string.rep, a collection of a big heap) and then ends is let be. A call's
 * deadline counts from its start, so time blocked in a system call (no CPU,
 * no signal) counts once it runs Lua again. Coroutines a script makes are
 * not known to the signal: they keep the count hook they always had, given
 * at coroutine.create/wrap (below). Where the timer cannot be had, every
 * thread has the count hook, as before.
 *
 * What the signal reads is in `watch`: lock-free atomics, written only by
 * the loop thread it interrupts. */
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
      (!srv->lua.budget_tripped && budget_clock() < srv->lua.budget_deadline)) {
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

/* Into a new state: the watch (or the count hook), the table of stopped
 * threads, and the guarded coroutine.create, coroutine.wrap and xpcall
 * (before coro.c guards coroutine.resume and close). */
void hs_budget_open(lua_State *L) {
  if (watch.on == 0) watch.on = watch_start() ? 1 : -1;
  if (watch.on < 0) lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_COUNT);
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
