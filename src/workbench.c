/* workbench.c: `hotsock test` and `hotsock record`.
 *
 * Both are Lua programs (lua/hotsock/workbench.lua) run in a plain Lua state
 * of their own: the standard libraries, LuaSocket from the system, and the
 * same helper path as a server's state (hs_helper_path). Nothing of the
 * server is set up: the servers a test plays against are child processes.
 *
 * The state gets one small module, "hotsock.workbench.sys": the binary's
 * own path (to start servers with the same build) and SIGINT/SIGTERM
 * caught as a flag the Lua loops poll, so a recording is written and a
 * test's server is stopped when the user presses ^C. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "host.h"
#include "lhelpers.h"
#include "workbench.h"

static volatile sig_atomic_t caught;

static void on_signal(int sig) { caught = sig; }

/* sys.trap(): catch SIGINT and SIGTERM from now on (no SA_RESTART: a
 * blocking call returns early). */
static int l_trap(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  (void)L;
  return 0;
}

/* sys.caught() -> "SIGINT" | "SIGTERM" | nil */
static int l_caught(lua_State *L) {
  if (!caught) return 0;
  lua_pushstring(L, caught == SIGINT ? "SIGINT" : "SIGTERM");
  return 1;
}

/* sys.exe() -> the path of this binary, or nil */
static int l_exe(lua_State *L) {
  char exe[4096];
  size_t sz = sizeof exe;
  if (uv_exepath(exe, &sz) != 0) return 0;
  lua_pushlstring(L, exe, sz);
  return 1;
}

static int open_sys(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"trap", l_trap}, {"caught", l_caught}, {"exe", l_exe}, {NULL, NULL}};
  luaL_newlib(L, fns);
  lua_pushstring(L, HS_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}

static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

/* main(cmd, args) of the module on the stack: its result is the exit code. */
static int run(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  lua_getfield(L, 3, "main");
  lua_pushstring(L, argv[0]);
  lua_createtable(L, argc - 1, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 2, 1);
  return 1;
}

int hs_workbench_main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "hotsock %s: out of memory\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error return */
  luaL_openlibs(L);

  char paths[2 * 4096 + 512];
  hs_helper_path(paths, sizeof paths);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s;%s", paths[0] == ';' ? paths + 1 : paths, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);
  hs_lhelpers_open(L); /* the helpers built into the binary, after the files */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open_sys);
  lua_setfield(L, -2, "hotsock.workbench.sys");
  lua_pop(L, 1);
  lua_createtable(L, argc, 1);
  lua_pushfstring(L, "hotsock %s", argv[0]);
  lua_rawseti(L, -2, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");

  /* Loading it (a missing lua/ folder, no LuaSocket) fails with a message
   * of its own; an error in main is a bug and gets a traceback. */
  int rc = 2;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "hotsock.workbench");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "hotsock %s: %s\n", argv[0], lua_tostring(L, -1));
    lua_close(L);
    return 2;
  }
  int mod = lua_gettop(L);
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, run);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  lua_pushvalue(L, mod);
  if (lua_pcall(L, 3, 1, mod + 1) != LUA_OK) {
    fprintf(stderr, "hotsock %s: %s\n", argv[0], lua_tostring(L, -1));
  } else if (lua_isinteger(L, -1)) {
    rc = (int)lua_tointeger(L, -1);
  }
  lua_close(L);
  return rc;
}
