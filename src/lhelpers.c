/* lhelpers.c: a package searcher for the Lua helpers built into the binary
 * (see lhelpers.h). Host layer. */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lhelpers.h"

static int search(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (const hs_lua_helper_t *h = hs_lua_helpers; h->name; h++) {
    if (strcmp(h->name, name) != 0) continue;
    /* "=hotsock/resp.lua (built in)": tracebacks name the helper. */
    char chunk[160];
    size_t n = strlen(name);
    if (n > 100) break;
    chunk[0] = '=';
    for (size_t i = 0; i < n; i++) chunk[1 + i] = name[i] == '.' ? '/' : name[i];
    memcpy(chunk + 1 + n, ".lua (built in)", sizeof ".lua (built in)");
    if (luaL_loadbufferx(L, (const char *)h->src, h->len, chunk, "t") != LUA_OK)
      return lua_error(L);
    lua_pushstring(L, chunk + 1);
    return 2;
  }
  lua_pushfstring(L, "no built-in helper '%s'", name);
  return 1;
}

void hs_lhelpers_open(lua_State *L) {
  int top = lua_gettop(L);
  if (lua_getglobal(L, "package") == LUA_TTABLE && lua_getfield(L, -1, "searchers") == LUA_TTABLE) {
    lua_pushcfunction(L, search);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  }
  lua_settop(L, top);
}
