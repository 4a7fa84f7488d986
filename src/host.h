/* host.h: the Lua host layer. It implements the socket layer's events
 * (host.c), owns the lua_State (script.c), the handler module (module.c),
 * the coroutine machinery (coro.c), the Lua faces of connections (lconn.c)
 * and of the `hotsock` module (lhotsock.c), and reloads (reload.c, watch.c).
 * It is the only place that includes a Lua header. */
#ifndef HS_HOST_H
#define HS_HOST_H

#include <lua.h>

#include "hotsock.h"

/* A registry reference slot that holds nothing (luaL_ref never returns 0). */
#define HS_NOREF 0

/* host.c: the events table the socket layer reports through */
extern const hs_events_t hs_host_events;
/* Push the handler `name` for c (the module's, or an outbound connection's
 * own table) onto L and return 1, or push nothing and return 0. */
int hs_host_handler(hs_server_t *srv, lua_State *L, hs_conn_t *c, const char *name);
/* Ask for a stop from inside a script (os.exit): done before the loop sleeps. */
void hs_host_request_exit(hs_server_t *srv, int code);

/* coro.c: handle coroutines, what they wait for, and who may resume them */
void hs_coro_open(lua_State *L);                   /* guards coroutine.resume/close */
int hs_coro_start(hs_server_t *srv, hs_conn_t *c); /* handle(conn) in a new coroutine */
/* The connection whose handle coroutine L is, or NULL. */
hs_conn_t *hs_coro_conn(lua_State *L);
/* Suspend the running handle coroutine L of o until the host resumes it
 * because what it waits for (w, on `on`) happened. Never returns (yields).
 * MAY_LJMP. */
int hs_coro_wait(lua_State *L, hs_conn_t *o, hs_wait_t w, hs_conn_t *on);
/* Resume o's coroutine with nargs values already pushed on it. Only when it
 * waits for something the host gives it. */
void hs_coro_resume(hs_server_t *srv, hs_conn_t *o, int nargs);
/* Resume whoever waits on c (its own coroutine or its owner's) with
 * nil, why (and partial when given). */
void hs_coro_fail_waiter(hs_server_t *srv, hs_conn_t *c, const char *why, const char *partial,
                         size_t n, int with_partial);
/* Let go of o's coroutine, closing its pending to-be-closed variables under
 * the handler budget. Never while it runs. */
void hs_coro_drop(hs_server_t *srv, hs_conn_t *o);
/* The coroutine o waits for a frame on c: c is o itself or an outbound one. */
hs_conn_t *hs_coro_reader(hs_conn_t *c);

/* budget.c: the handler budget around every call into the script */
void hs_budget_open(lua_State *L); /* into a new state, before hs_coro_open */
void hs_script_budget_start(hs_server_t *srv, uint64_t ms);
int hs_script_budget_stop(hs_server_t *srv);
lua_State *hs_script_watch_co(hs_server_t *srv, lua_State *co); /* the coroutine a budgeted call resumes */
int hs_script_stopped(lua_State *L, lua_State *co); /* co died of a budget stop */

/* script.c: the lua_State, the protected door */
int hs_script_open(hs_server_t *srv);
void hs_script_close(hs_server_t *srv);
int hs_script_load(hs_server_t *srv, char *err, size_t errlen);
int hs_script_call(hs_server_t *srv, hs_conn_t *c, int nargs, const char *what);
int hs_script_call_msgh(hs_server_t *srv, hs_conn_t *c, int nargs, const char *what, int msgh);
int hs_script_get_handler(hs_server_t *srv, const char *name);
void hs_script_handler_failed(hs_server_t *srv, hs_conn_t *c, const char *what, int status,
                              int tripped);
int hs_script_load_call(hs_server_t *srv, int nargs, int nres, int base, const char *what,
                        char *err, size_t errlen);
int hs_script_msgh(lua_State *L); /* message handler: the error with a traceback */
/* The file:line a budget stop interrupted, from a traceback ("" if none). */
void hs_script_stopped_at(const char *tb, char *out, size_t outlen);
void hs_script_cache_on_message(hs_server_t *srv); /* after the module changed */

/* reload.c: reload, probation and rollback */
int hs_script_reload(hs_server_t *srv, const char *trigger);
/* The two halves of a reload, for --workers: prepare loads the new version
 * beside the old one, which keeps serving (0, or -1 with err and nothing
 * changed but reload_failed); finish puts it in service or drops it. */
int hs_reload_prepare(hs_server_t *srv, const char *trigger, char *err, size_t errlen);
void hs_reload_finish(hs_server_t *srv, int commit);
void hs_script_request_reload(hs_server_t *srv, const char *trigger);
void hs_reload_probation_error(hs_server_t *srv); /* a handler error */
/* Host memory a script asks for (outbound connections): whether n more
 * bytes fit under max_lua_memory with the Lua heap. */
int hs_script_room(hs_server_t *srv, size_t n);
/* ";dir/?.lua;..." for the helpers shipped with the host (lua/ beside the
 * binary, HOTSOCK_LUA_PATH); the server's state and the workbench's use it. */
void hs_helper_path(char *buf, size_t len);
hs_server_t *hs_server_from_lua(lua_State *L);

/* module.c: the handler module */
int hs_rawfield(lua_State *L, int idx, const char *k); /* t[k], no metamethods */
const char *hs_module_read(lua_State *L, int idx, const hs_limits_t *cli, hs_limits_t *lim,
                           hs_framer_t *f, char *err, size_t errlen);
int hs_module_parse_framing(lua_State *L, int idx, hs_framer_t *f, char *err, size_t errlen);
/* One listener the module (or the command line) asks for: an address, and
 * for a TLS listener its settings. */
typedef struct hs_listen_spec {
  char *addr;
  struct hs_tls_opts *tls; /* NULL: a plain listener */
  int proxy;               /* a PROXY protocol header comes first */
  int health;              /* answers health checks, in C */
  int fd;                  /* > 0: an inherited listening socket (socket activation, sd.c)
                              to serve instead of binding addr */
  int fd_unix;             /* that socket is a unix one */
} hs_listen_spec_t;
/* The module's listen field as specs (*specs and each string malloc'd; see
 * hs_listen_specs_free): how many, or -1 with err filled. */
int hs_module_listen_addrs(hs_server_t *srv, hs_listen_spec_t **specs, char *err, size_t errlen);
void hs_listen_specs_free(hs_listen_spec_t *specs, int n);
/* --workers N|auto and the module's workers field (1 when absent). */
int hs_parse_workers(const char *s, int *n);
int hs_module_workers(hs_server_t *srv, int *n, char *err, size_t errlen);
/* The module's admin field (see module.c): 1 with addr, 0 absent, -1 err. */
int hs_module_admin(hs_server_t *srv, char *addr, size_t len, int *eval, char *err,
                    size_t errlen);

/* worker.c: a worker's side of --workers */
struct hs_worker;
int hs_worker_attach(hs_server_t *srv, const struct hs_worker *w);
/* Hand a reload (or rollback) asked for in this worker to the supervisor,
 * which runs it in every worker: 0 when sent. */
int hs_worker_forward(hs_server_t *srv, const char *trigger);
void hs_worker_close(hs_server_t *srv);

/* ltls.c: TLS settings from Lua tables, the server's defaults, contexts */
/* Read a table of settings at idx over o (fields present replace o's); a
 * client's table may name sni (into *sni, malloc'd). 0, or -1 with err. */
int hs_ltls_read_opts(lua_State *L, int idx, struct hs_tls_opts *o, int client, char **sni,
                      char *err, size_t errlen);
/* The defaults the current module and --tls-* give (*out malloc'd, NULL
 * when there are none). 0, or -1 with err. */
int hs_ltls_defaults(hs_server_t *srv, struct hs_tls_opts **out, char *err, size_t errlen);
void hs_ltls_set_defaults(hs_server_t *srv, struct hs_tls_opts *o); /* takes o; frees the old */
/* A default certificate must load: 0, or -1 with err. */
int hs_ltls_check_defaults(hs_server_t *srv, char *err, size_t errlen);
/* A server's settings: the defaults, then the table at idx (L NULL: none).
 * 0; -1 a malformed table; -2 no certificate. err says what. */
int hs_ltls_server_opts(hs_server_t *srv, lua_State *L, int idx, struct hs_tls_opts *o, char *err,
                        size_t errlen);
/* A context for settings, from the cache (borrowed). NULL with err. */
struct hs_tls_ctx *hs_ltls_ctx(hs_server_t *srv, const struct hs_tls_opts *o, int client, char *err,
                               size_t errlen);
struct hs_tls_ctx *hs_ltls_client_ctx(hs_server_t *srv, lua_State *L, int idx, char **sni,
                                      char *err, size_t errlen);
void hs_ltls_flush(hs_server_t *srv); /* a reload: contexts are made anew */
void hs_ltls_close(hs_server_t *srv);
int hs_ltls_starttls(lua_State *L, hs_conn_t *c);
int hs_ltls_settings(lua_State *L); /* hs.tls_settings */
void hs_ltls_push_info(lua_State *L, const hs_conn_t *c);

/* ldict.c: hs.dict, the dictionaries shared by every worker (dict.c) */
/* Make the dictionaries the module declares in `dicts`; in a worker, find
 * the ones made before it was forked. Once, at start-up, before any fork.
 * 0, or -1 with err. */
int hs_ldict_setup(hs_server_t *srv, char *err, size_t errlen);
/* A reload with the new module in place: dictionaries keep their contents;
 * one the module adds is made when this process serves alone, and one it
 * adds in a worker, or resizes, fails the reload. 0, or -1 with err. */
int hs_ldict_reload_check(hs_server_t *srv, char *err, size_t errlen);
void hs_ldict_close(hs_server_t *srv); /* the mappings stay until the process exits */
int hs_ldict_dict(lua_State *L);       /* hs.dict(name) */

/* lconn.c: the Lua face of a connection */
void hs_lconn_open(lua_State *L);
void hs_lconn_new(hs_server_t *srv, hs_conn_t *c); /* make its box */
int hs_lconn_prepare(lua_State *L);                /* a box to bind later: its ref */
void hs_lconn_bind(hs_server_t *srv, hs_conn_t *c, int ref);
void hs_lconn_push(lua_State *L, hs_conn_t *c);      /* push its box onto L */
void hs_lconn_clear(hs_server_t *srv, hs_conn_t *c); /* cut the box loose */
hs_conn_t *hs_lconn_test(lua_State *L, int idx);
/* Push frame msg onto L: a string, or with RESP framing a table of
 * arguments. 0, or -1 (nothing pushed, c aborted) when the Lua heap has no
 * room for it. */
int hs_lconn_push_frame(hs_conn_t *c, lua_State *L, const hs_framer_t *f, const char *msg,
                        size_t len);

/* ladmin.c: the host's answers to the admin endpoint (hs_events_t) */
void hs_ladmin_conn_state(hs_conn_t *c, char *out, size_t len);
void hs_ladmin_conn_show(hs_conn_t *c, hs_out_t *out);
void hs_ladmin_eval(hs_server_t *srv, const char *chunk, size_t len, hs_out_t *out);
size_t hs_ladmin_lua_memory(hs_server_t *srv);

/* lhotsock.c: the `hotsock` module */
int hs_lhotsock_open(lua_State *L);
void hs_lhotsock_stop_timers(hs_server_t *srv);
void hs_lhotsock_log_stats(hs_server_t *srv); /* SIGUSR2 */

/* watch.c */
int hs_watch_start(hs_server_t *srv);
void hs_watch_stop(hs_server_t *srv);
void hs_watch_refresh(hs_server_t *srv); /* after a load: watch module folders */

#endif
