/* lwork.h: work a script waits for without blocking the loop (lwork.c,
 * host layer): hs.exec, hs.fs.*, hs.resolve. */
#ifndef HS_LWORK_H
#define HS_LWORK_H

#include <lua.h>

#include "hotsock.h"

struct hs_work;

/* Put exec, resolve and the fs table into the module table on top of L. */
void hs_lwork_open(lua_State *L);
/* The coroutine waiting on w stopped waiting (its connection closed, it was
 * dropped): the end of w will be told to nobody. */
void hs_work_detach(struct hs_work *w);
/* The server closes every handle: nobody is told of any end any more,
 * running programs are killed and their handles closed. */
void hs_work_close_all(hs_server_t *srv);

#endif
