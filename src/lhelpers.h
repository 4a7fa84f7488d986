/* lhelpers.h: the Lua helpers shipped with hotsock (the .lua files of lua/hotsock/),
 * built into the binary (cmake/embed_lua.cmake writes the table), so a
 * binary copied or installed anywhere finds `require "hotsock.resp"`. */
#ifndef HS_LHELPERS_H
#define HS_LHELPERS_H

#include <stddef.h>

typedef struct hs_lua_helper {
  const char *name; /* "hotsock.resp" */
  const unsigned char *src;
  size_t len;
} hs_lua_helper_t;

extern const hs_lua_helper_t hs_lua_helpers[]; /* ends with a NULL name */

struct lua_State;
/* Append a searcher for the built-in helpers to package.searchers: after
 * the file searchers, so a helper on package.path (HOTSOCK_LUA_PATH, the
 * lua/ folder of a source tree) wins, and the built-in copy is what an
 * installed binary uses. */
void hs_lhelpers_open(struct lua_State *L);

#endif
