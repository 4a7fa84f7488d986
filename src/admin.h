/* admin.h: the admin endpoint (--admin ADDR), served by the socket layer
 * apart from the script: /metrics, /health, /stats, /connections and a
 * status page over HTTP, and a line console (clients, show, kill, trace,
 * reload, log, stats, eval) on the same socket. Its connections are never
 * the script's: not counted, not under max_clients, never framed by the
 * script's framing. What only the host knows (a connection's Lua state,
 * eval) it asks through hs_events_t. No Lua here. */
#ifndef HS_ADMIN_H
#define HS_ADMIN_H

#include "hotsock.h"

/* Whether addr may serve the admin endpoint: a unix socket ("unix:PATH" or
 * an absolute path) or a loopback address ("127.0.0.1:PORT", "[::1]:PORT",
 * "localhost:PORT", a bare port). 0, or -1 with err. Nothing is bound. */
int hs_admin_check_addr(const char *addr, char *err, size_t errlen);

/* Serve the admin endpoint on addr. eval: the console's eval command is
 * allowed (on a unix socket only). With --workers, worker N serves
 * PATH.N, or PORT + N - 1 (a port 0 stays 0). Prints "admin endpoint on
 * ADDR". 0, or -1 with err. */
int hs_admin_start(hs_server_t *srv, const char *addr, int eval, char *err, size_t errlen);
void hs_admin_free(hs_server_t *srv);

/* server.c: c was accepted on an admin listener. */
void hs_admin_accept(hs_conn_t *c);
/* conn.c: one line from an admin connection. 0 to go on, -1 when c closed. */
int hs_admin_frame(hs_conn_t *c, const char *msg, size_t len);
/* conn.c: bytes in (out = 0, as read, after TLS) or out (out = 1, as
 * queued) on c, which a console traces (c->tracer). */
void hs_admin_trace(hs_conn_t *c, int out, const char *p, size_t n);
/* conn.c: c finished: a traced connection's console hears of it; an admin
 * connection stops tracing. */
void hs_admin_finished(hs_conn_t *c);

/* The host: one handler call (or coroutine run) took ns. */
void hs_admin_observe_handler(hs_server_t *srv, const char *name, uint64_t ns);
/* The host: a reload ended (ok, or refused with why), after ms. */
void hs_admin_reload_done(hs_server_t *srv, const char *trigger, int ok, const char *why,
                          double ms);

/* console.c: `hotsock console ADDR [COMMAND...]`, the console's client. */
int hs_console_main(int argc, char **argv);

#endif
