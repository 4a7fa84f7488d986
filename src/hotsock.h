/* hotsock.h: the server, its listeners and connections, and the door between
 * the two layers.
 *
 * The socket layer (server.c, conn.c, timers.c, outbound.c, buf.c, frame.c)
 * listens, accepts, reads, frames, writes and closes. It includes no Lua
 * header and makes no Lua call: it reports what happens through one table of
 * callbacks, hs_events_t, which the Lua host layer (host.c, coro.c, script.c,
 * module.c, lconn.c, lhotsock.c, watch.c; declared in host.h) implements.
 *
 * Everything hangs off hs_server_t: there is no global mutable state, so one
 * loop and one Lua state per thread can come later. */
#ifndef HOTSOCK_H
#define HOTSOCK_H

#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "buf.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "slab.h"

#define HS_VERSION "0.1.0"

/* clang-format reads "(ptr) - x" as a cast: */
/* clang-format off */
#define hs_container_of(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))
/* clang-format on */

typedef struct hs_server hs_server_t;
typedef struct hs_conn hs_conn_t;
struct hs_tls;       /* tls.h: a TLS connection's state */
struct hs_tls_ctx;   /* tls.h: TLS settings made ready (a listener's, a client's) */
struct hs_tls_opts;  /* tls.h: TLS settings as given */
struct hs_tls_cache; /* ltls.c */
struct lua_State;    /* the host layer's; the socket layer only carries the pointer */

/* ------------------------------------------------------------------------
 * Settings and counters
 * ---------------------------------------------------------------------- */

/* Timeouts in ms; 0 turns one off. HS_UNSET: not given on the command line. */
#define HS_UNSET UINT64_MAX
/* The longest time setting accepted (ms; ten years): deadlines are sums of
 * a clock and a setting, which must not wrap. */
#define HS_MAX_MS 315360000000ull
typedef struct hs_timeouts {
  uint64_t idle;       /* nothing read or written */
  uint64_t read;       /* nothing read */
  uint64_t write;      /* queued output made no progress */
  uint64_t frame;      /* a started frame did not complete */
  uint64_t first_byte; /* an accepted client sent nothing since it connected */
} hs_timeouts_t;

/* Settings from the handler module, overridden by the command line. Their
 * defaults are in one place: hs_limits_default (module.c). */
typedef struct hs_limits {
  size_t max_clients;
  size_t max_frame;
  size_t max_inbuf;
  size_t max_outbuf;
  size_t low_water;
  size_t high_water; /* a pipe's source pauses while its target holds more */
  int backlog;
  uint64_t drain_timeout;  /* ms */
  uint64_t stop_grace;     /* ms a stop waits, serving, with health checks failing */
  uint64_t handler_budget; /* ms */
  size_t max_lua_memory;   /* the Lua heap and what the host allocates for scripts */
  hs_timeouts_t timeouts;
} hs_limits_t;
void hs_limits_default(hs_limits_t *l);

/* Counters reported by hs.stats(). */
typedef struct hs_stats {
  uint64_t accepted, rejected, active, closed;
  uint64_t bytes_in, bytes_out, frames_in;
  uint64_t handler_errors, handler_timeouts, oversize_frames;
  uint64_t outbuf_disconnects, timeouts;
  uint64_t reload_ok, reload_failed, generation;
  uint64_t connects, connect_failed;                            /* hs.connect outcomes */
  uint64_t tls_handshakes, tls_handshake_failures, tls_resumed; /* inbound (listeners, STARTTLS) */
  uint64_t proxy_failures; /* a PROXY header missing, malformed or too slow */
  uint64_t health_checks;  /* answered on health listeners */
} hs_stats_t;

/* ------------------------------------------------------------------------
 * The door: what the socket layer reports to the host layer
 * ---------------------------------------------------------------------- */

/* Which deadline of a connection passed. */
typedef enum hs_timeout_kind {
  HS_TIMEOUT_IDLE,
  HS_TIMEOUT_READ,
  HS_TIMEOUT_WRITE,
  HS_TIMEOUT_FRAME,
  HS_TIMEOUT_FIRST_BYTE,
  HS_TIMEOUT_ALARM /* the host's own deadline (hs_conn_set_alarm) */
} hs_timeout_kind_t;
const char *hs_timeout_name(hs_timeout_kind_t k);

/* Every event the socket layer reports. Each is called from a libuv
 * callback or from the before-sleep pass, never from inside another event,
 * except where noted. */
typedef struct hs_events {
  /* An accepted connection is in the live list; start serving it. */
  void (*opened)(hs_conn_t *c);
  /* An outbound connection is connected. (A failed connect closes it.) */
  void (*connected)(hs_conn_t *c);
  /* One frame. msg stays valid for the call; copy it before anything else.
   * Return 0 to go on delivering, -1 to stop (the host closed c). */
  int (*frame)(hs_conn_t *c, const hs_framer_t *f, const char *msg, size_t len);
  /* A dispatch that delivered frames to c ended (push mode); optional. */
  void (*frames_done)(hs_conn_t *c);
  /* A pull read (hs_conn_want) ended without a frame: why is "closed",
   * "timeout" or a frame error; partial is what had arrived. */
  void (*read_failed)(hs_conn_t *c, const char *why, const char *partial, size_t n);
  /* Input broke the framing (push mode). Return 1 when the host answered;
   * the connection then closes lingering. 0: it is reset. */
  int (*frame_error)(hs_conn_t *c, const char *why);
  /* Queued output fell to low_water after being above it. */
  void (*drain)(hs_conn_t *c);
  /* A deadline passed. Return 1 when the host handled it; 0 lets the
   * socket layer log it and close the connection. */
  int (*timeout)(hs_conn_t *c, hs_timeout_kind_t which);
  /* The connection is closed: called once, from the before-sleep pass, in
   * the order the closes happened. c->reason says why. */
  void (*closed)(hs_conn_t *c);
  /* The before-sleep pass starts (reloads are done here). */
  void (*before_sleep)(hs_server_t *srv);
  /* A stop began: listeners are closed, connections not yet. */
  void (*stopping)(hs_server_t *srv);
  /* SIGHUP. */
  void (*hangup)(hs_server_t *srv);
  /* A reload asked for from elsewhere (the admin console). */
  void (*reload)(hs_server_t *srv, const char *trigger);
  /* SIGUSR2: log the counters. */
  void (*report)(hs_server_t *srv);
  /* The server closes every handle so the loop ends: close the host's. */
  void (*closing)(hs_server_t *srv);
  /* The admin endpoint (admin.c) asks what only the host knows; each is
   * called outside any handler. conn_state: what c's script is doing, in
   * a few words ("waiting in receive, 4.2 s left"), or "" when nothing.
   * conn_show: the script's fields on c and, for a coroutine, the Lua
   * stack where it waits. eval: run chunk in the script's state under the
   * handler budget; its results or its error go to out. */
  void (*conn_state)(hs_conn_t *c, char *out, size_t len);
  void (*conn_show)(hs_conn_t *c, hs_out_t *out);
  void (*eval)(hs_server_t *srv, const char *chunk, size_t len, hs_out_t *out);
  /* The Lua heap now, for /metrics and /stats. */
  size_t (*lua_memory)(hs_server_t *srv);
} hs_events_t;

/* ------------------------------------------------------------------------
 * Socket layer: listeners, connections, the server
 * ---------------------------------------------------------------------- */

/* One listening socket. */
typedef struct hs_listener {
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_stream_t stream;
    uv_handle_t handle;
  } h; /* first, so the handle pointer is the listener */
  hs_server_t *srv;
  int is_unix;
  int proxy;                   /* connections begin with a PROXY protocol header (v1 or v2) */
  int no_unlink;               /* a worker's: the supervisor unlinks a unix socket's path */
  int health;                  /* answers health checks itself ("up" / "draining") */
  int admin;                   /* the admin endpoint (admin.c) */
  uint64_t accepted, active, rejected; /* this listener's share of the counters */
  char name[128];              /* the address as printed: "127.0.0.1:43121" */
  char path[108];              /* unix socket path to unlink at exit */
  struct hs_tls_ctx *tls;      /* a TLS listener's context (a reference), or NULL */
  struct hs_tls_ctx *tls_next; /* made again from the files for a reload */
  struct hs_listener *next;
} hs_listener_t;

/* What a connection's coroutine is suspended on (host layer, coro.c). */
typedef enum hs_wait {
  HS_WAIT_NONE = 0, /* running, or no coroutine */
  HS_WAIT_READ,     /* receive on wait_on (itself or an outbound one it made) */
  HS_WAIT_SLEEP,    /* hs.sleep */
  HS_WAIT_CONNECT,  /* hs.connect of wait_on */
  HS_WAIT_WORK      /* hs.exec, hs.fs.*, hs.resolve: lua.work (lwork.c) */
} hs_wait_t;

/* Connection flags (socket layer). */
enum {
  HS_CONN_CLOSING = 1 << 0,      /* close decided; output may still drain */
  HS_CONN_FLUSHING = 1 << 1,     /* closing after queued output is written */
  HS_CONN_EOF = 1 << 2,          /* the peer sent FIN */
  HS_CONN_PAUSED = 1 << 3,       /* hs_conn_pause */
  HS_CONN_READING = 1 << 4,      /* uv_read_start is in effect */
  HS_CONN_DIRTY = 1 << 5,        /* on the server's flush list */
  HS_CONN_PENDING = 1 << 6,      /* on the server's dispatch list */
  HS_CONN_SHUTDOWN = 1 << 7,     /* half-close asked for; FIN after output */
  HS_CONN_FIN_SENT = 1 << 8,     /* uv_shutdown issued */
  HS_CONN_ABOVE_LOW = 1 << 9,    /* buffered output went above low_water */
  HS_CONN_UNIX = 1 << 10,        /* a unix socket */
  HS_CONN_PULL = 1 << 11,        /* frames are delivered only while a read is wanted */
  HS_CONN_DISPATCHING = 1 << 12, /* inside hs_conn_dispatch (no re-entry) */
  HS_CONN_FINISHED = 1 << 13,    /* closed: handles closing, on the closed queue */
  HS_CONN_OUTBOUND = 1 << 14,    /* made by hs_conn_connect */
  HS_CONN_CONNECTING = 1 << 15,  /* the connect is still under way */
  HS_CONN_HELD = 1 << 16,        /* not reading: the pipe target is above high_water */
  HS_CONN_LINGER = 1 << 17,      /* closing: FIN sent after output, input dropped until
                                    the peer's FIN or linger_until */
  HS_CONN_WANT = 1 << 18,        /* pull mode: a read waits for a frame */
  HS_CONN_QUEUED = 1 << 19,      /* on the closed queue: not freed before delivery */
  HS_CONN_BROKEN = 1 << 20,      /* a frame error ended the input (it is being closed) */
  HS_CONN_UNSEEN = 1 << 21,      /* TLS handshake or PROXY header under way: the host has
                                    not heard of it */
  HS_CONN_PROXY_WAIT = 1 << 22,  /* its PROXY protocol header has not arrived yet */
  HS_CONN_PROXIED = 1 << 23,     /* peer, peer_ip, peer_port come from a PROXY header */
  HS_CONN_HEALTH = 1 << 24,      /* a health check: answered by the core, never the script */
  HS_CONN_ADMIN = 1 << 25        /* an admin endpoint client (admin.c), never the script's */
};

LIST_HEAD(hs_conn_children, hs_conn);

/* The host layer's part of a connection: the socket layer never reads it. */
typedef struct hs_conn_lua {
  int box_ref;                      /* registry ref of the Lua userdata box */
  int handlers_ref;                 /* outbound, event style: its handler table */
  int co_ref;                       /* registry ref of the handle coroutine */
  struct lua_State *co;             /* the handle coroutine, while it lives */
  int running;                      /* the coroutine runs now (inside lua_resume) */
  hs_wait_t wait;                   /* what the coroutine waits for */
  hs_conn_t *wait_on;               /* the connection it reads from or connects */
  hs_conn_t *owner;                 /* outbound: the connection whose coroutine made it */
  struct hs_conn_children children; /* outbound connections its coroutine made */
  LIST_ENTRY(hs_conn) sibling;      /* in the owner's children */
  int closed_by_script;             /* conn:close() or conn:abort() ended it */
  struct hs_work *work;             /* HS_WAIT_WORK: the request it waits for */
} hs_conn_lua_t;

/* One client. C owns this memory and frees it only after both the libuv
 * close callbacks and the closed event ran; Lua holds a box pointing here
 * that is cleared in the closed event, so it never reaches freed memory. */
struct hs_conn {
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_stream_t stream;
    uv_handle_t handle;
  } h;                /* first: container_of from the handle */
  uv_timer_t timer;   /* one timer for every deadline */
  uv_write_t wreq;    /* the one write in flight */
  uv_shutdown_t sreq; /* half-close request */
  hs_server_t *srv;
  hs_listener_t *listener;    /* NULL for an outbound connection */
  TAILQ_ENTRY(hs_conn) link;  /* the server's connections, until freed */
  TAILQ_ENTRY(hs_conn) dirty; /* the flush list */
  TAILQ_ENTRY(hs_conn) queue; /* the dispatch list, then the closed queue */
  uint64_t id;
  unsigned flags;
  int handles_open; /* uv handles still to close (stream, timer) */
  /* input */
  hs_framer_t framer;   /* the framing (in pull mode, the wanted read's) */
  hs_scan_t scan;       /* what the framer learned of pending input */
  hs_buf_t in;          /* unframed input the connection owns */
  const char *borrowed; /* during a read: unframed bytes in the loop's buffer */
  size_t borrowed_len;
  size_t max_frame;        /* per-connection copy of the limit */
  uint64_t skip;           /* input bytes still to drop unread (hs_conn_skip) */
  const char *input_error; /* pull mode: a frame error ended the input */
  /* output */
  hs_buf_t out;      /* output gathered, not yet handed to the kernel */
  hs_buf_t inflight; /* output in the write in flight */
  int writing;       /* a uv_write is in flight */
  /* deadlines */
  hs_timeouts_t to;          /* this connection's timeouts */
  uint64_t opened_at;        /* uv_now when accepted (moved on by a handled first_byte timeout) */
  uint64_t accepted_at;      /* uv_now when accepted, for ages (the admin endpoint) */
  uint64_t last_read;        /* uv_now of the last byte read */
  uint64_t last_write;       /* uv_now of the last write progress */
  uint64_t frame_start;      /* uv_now when the pending frame's first byte came; 0 none */
  uint64_t linger_until;     /* HS_CONN_LINGER: when to give up waiting for the peer */
  uint64_t alarm_at;         /* the host's deadline; 0 none */
  uint64_t connect_deadline; /* outbound, while connecting (and its TLS handshake) */
  uint64_t tls_deadline;     /* an inbound TLS handshake must be done by then; 0 never */
  /* identity */
  const char *reason; /* why it closes (static string or reason_buf) */
  char reason_buf[96];
  char peer[64]; /* "ip:port", "[v6]:port" or a path */
  char peer_ip[48];
  int peer_port;
  char local[64];
  char *proxy_hdr; /* the PROXY header it began with (malloc'd), or NULL */
  size_t proxy_len;
  char proxy_peer[128]; /* with one: the balancer's address, the socket's own peer */
  uint64_t bytes_in, bytes_out;
  struct hs_connect_req *creq; /* outbound: the connect under way, or NULL */
  hs_conn_t *pipe_to;          /* bytes read here are sent there, in C */
  hs_conn_t *pipe_from;        /* the connection piping into this one */
  struct hs_tls *tls;          /* TLS state; NULL on a plain connection */
  hs_conn_t *tracer;           /* the admin console that traces its bytes, or NULL */
  struct hs_admin_sess *adm;   /* an admin connection's state (admin.c), or NULL */
  hs_conn_lua_t lua;           /* the host layer's part */
};

TAILQ_HEAD(hs_conn_list, hs_conn);

/* The host layer's part of the server (host.h has the functions). */
typedef struct hs_script {
  struct lua_State *L;
  const char *script_path;
  char script_dir[4096];
  int module_ref;           /* registry ref of the handler module */
  int on_message_ref;       /* its on_message, looked up once per module */
  int shared_ref;           /* registry ref of hs.shared */
  const void *conn_mt;      /* the conn metatable (lconn.c), compared by address */
  int coro_style;           /* the module has handle() */
  size_t lua_mem;           /* bytes the Lua allocator holds */
  hs_slab_t slab;           /* the Lua heap's small blocks (slab.c) */
  int budget_depth;         /* nested protected calls under way */
  uint64_t budget_ms;       /* budget of the outermost call under way */
  int budget_tripped;       /* the budget ran out: every instruction raises */
  uint64_t budget_deadline; /* of the outermost call, budget clock ns (budget.c) */
  hs_conn_t *current;       /* connection whose handler runs now, for logs */
  hs_conn_t *batch;         /* frames of this connection are being delivered (host.c) */
  int batch_top;            /* the stack's top with msgh, on_message and the box on it */
  int argc;                 /* script arguments */
  char **argv;
  int check_only;
  LIST_HEAD(, hs_ltimer) timers; /* live hs.after / hs.every timers */
  LIST_HEAD(, hs_work) work;     /* hs.exec, hs.fs.*, hs.resolve under way */
  struct hs_watch *watch;        /* the script watcher, or NULL */
  const char *source;            /* the first load's source instead of the file, or NULL */
  size_t source_len;
  const char *cli_tls_cert; /* --tls-cert, --tls-key */
  const char *cli_tls_key;
  struct hs_tls_opts *tls_default;          /* the module's tls field and --tls-*; NULL: none */
  struct hs_tls_cache *tls_cache;           /* contexts for STARTTLS and hs.connect (ltls.c) */
  struct hs_dicts *dicts;                   /* the shared dictionaries it declared (ldict.c) */
  struct hs_reload_pending *reload_pending; /* a prepared reload awaiting its verdict */
  uint64_t load_budget;                     /* ms a script load may take */
  const char *reload_trigger;               /* a reload asked for, done before the loop sleeps */
  int rollback_pending;                     /* a rollback asked for, done before reload_trigger */
  int exit_requested;                       /* os.exit: stop before the loop sleeps */
  int prev_module_ref;     /* the module before the last reload, during probation */
  hs_limits_t prev_limits; /* its settings */
  hs_framer_t prev_framer;
  uint64_t probation_until;  /* uv_now; 0 when no probation */
  int probation_errors;      /* errors seen in the window */
  int probation_limit;       /* rollback_errors */
  uint64_t probation_window; /* within, ms */
  char warn_buf[512];        /* a warning being assembled (lua_WarnFunction) */
  size_t warn_len;
} hs_script_t;

/* The server: loop, listeners, connections, counters, and the host's part. */
struct hs_server {
  uv_loop_t *loop;
  const hs_events_t *ev; /* the host layer's callbacks */
  hs_listener_t *listeners;
  hs_listener_t *closed_listeners; /* stopped; freed by hs_server_free */
  struct hs_conn_list conns;       /* every connection not yet freed, oldest first */
  struct hs_conn_list dirty;       /* connections with output to flush */
  struct hs_conn_list pending;     /* connections with input to dispatch */
  struct hs_conn_list closed;      /* closed connections whose event is due */
  uv_prepare_t prepare;            /* the before-sleep pass */
  uv_idle_t idle;                  /* keeps the loop spinning while work is pending */
  uv_signal_t sigint, sigterm, sighup, sigusr1, sigusr2;
  uv_timer_t drain_timer; /* shutdown deadline */
  hs_pool_t pool;         /* blocks for connection buffers */
  char *rbuf;             /* the loop's read buffer */
  size_t rbuf_size;
  hs_limits_t limits; /* effective settings */
  hs_limits_t cli;    /* command-line overrides; 0 (HS_UNSET for timeouts) unset */
  hs_framer_t framer; /* the framing new connections start with */
  int log_level;
  uint64_t next_id;
  hs_stats_t stats;
  size_t outbound_mem; /* bytes held for a script: outbound connections, hs.exec, hs.fs */
  int stopping;        /* a stop began */
  int draining;        /* a stop was asked for: health checks fail (stop_grace) */
  uv_timer_t grace_timer;
  int exit_code;
  uint64_t last_emfile_log; /* ms; accept errors are logged once a second */
  uint64_t last_reject_log; /* ms; max_clients rejections likewise */
  int closing_all;          /* handles are being closed; uv_run will return */
  int worker_id;            /* --workers: this worker's number (1..nworkers); 0 alone */
  int nworkers;
  hs_stats_t *stats_all; /* --workers: every worker's counters, shared; ours is
                            [worker_id - 1], copied in each before-sleep pass */
  int ctl_fd;            /* --workers: the control socket to the supervisor */
  struct hs_sd *sd;      /* systemd: notify socket, watchdog (sd.h); NULL: none */
  uv_timer_t sd_timer;   /* its status and watchdog, from the loop (sd.c) */
  struct hs_admin *admin; /* the admin endpoint (admin.c), or NULL: off */
  hs_script_t lua;       /* the host layer's part */
};

/* log.c wrappers that know the server's level and current connection. */
#define hs_log(srv, level, ...) \
  hs_logf((srv)->log_level, (level), (srv)->lua.current ? (srv)->lua.current->id : 0, __VA_ARGS__)
#define hs_log_conn(srv, c, level, ...) \
  hs_logf((srv)->log_level, (level), (c) ? (c)->id : 0, __VA_ARGS__)

/* server.c */
int hs_server_init(hs_server_t *srv, uv_loop_t *loop, const hs_events_t *ev);
/* tls: the context of a TLS listener, whose reference the listener holds
 * from a 0 return on. */
int hs_server_listen(hs_server_t *srv, const char *addr, struct hs_tls_ctx *tls);
/* The same for a plain listener of the core's own (the admin endpoint),
 * with no "listening on" line: the new listener is srv->listeners. */
int hs_server_listen_quiet(hs_server_t *srv, const char *addr);
/* Whether addr is one hs_server_listen could try (a port up to 65535, an
 * address or a name that resolves, a unix path that fits), without
 * binding: 0, or -1 with err (for --check). */
int hs_server_check_addr(const char *addr, char *err, size_t errlen);
/* A reload reads every TLS listener's certificate and key files again:
 * prepare makes the new contexts (0, or -1 with err naming the listener,
 * and nothing changed); commit puts them in place (ok) or drops them. Live
 * connections keep the context they were made with. */
int hs_server_tls_prepare(hs_server_t *srv, char *err, size_t errlen);
/* --workers: the supervisor binds n listening sockets for addr, one per
 * worker; TCP ones share the port with SO_REUSEPORT, so the kernel spreads
 * connections over the workers' accept queues; a unix one is a single
 * socket all share (fds holds it n times). name gets the address as it is
 * printed. 0, or -1 with err. */
int hs_server_bind_shared(const char *addr, int n, int backlog, int *fds, char *name,
                          size_t namelen, int *is_unix, char *err, size_t errlen);
/* A worker serves a socket made by hs_server_bind_shared. 0 or a libuv
 * error (logged); the listener holds tls's reference from a 0 return on. */
int hs_server_listen_fd(hs_server_t *srv, int fd, int is_unix, const char *name,
                        struct hs_tls_ctx *tls);
void hs_server_tls_commit(hs_server_t *srv, int ok);
void hs_server_begin_stop(hs_server_t *srv, const char *why);
void hs_server_abort(hs_server_t *srv);
void hs_server_stop(hs_server_t *srv);
void hs_server_free(hs_server_t *srv);
int hs_server_signals(hs_server_t *srv);
void hs_server_mark_dirty(hs_server_t *srv, hs_conn_t *c);
void hs_server_mark_pending(hs_server_t *srv, hs_conn_t *c);
void hs_server_wake(hs_server_t *srv); /* run the before-sleep pass soon */

/* conn.c */
hs_conn_t *hs_conn_new(hs_server_t *srv, hs_listener_t *l);
void hs_conn_start(hs_conn_t *c);
void hs_conn_discard(hs_conn_t *c);
int hs_conn_is_open(const hs_conn_t *c);
size_t hs_conn_buffered(const hs_conn_t *c);
int hs_conn_send(hs_conn_t *c, const char *p, size_t n);
/* Queue several buffers; a large total (HS_DIRECT_MIN) with nothing else
 * queued is written at once from them, and only the rest copied. */
#define HS_DIRECT_MIN 8192
int hs_conn_sendv(hs_conn_t *c, const uv_buf_t *b, unsigned n);
int hs_conn_check_outbuf(hs_conn_t *c);
void hs_conn_close(hs_conn_t *c, const char *reason);
void hs_conn_abort(hs_conn_t *c, const char *reason);
void hs_conn_shutdown(hs_conn_t *c);
void hs_conn_pause(hs_conn_t *c);
void hs_conn_start_reading(hs_conn_t *c);
void hs_conn_resume(hs_conn_t *c);
void hs_conn_flush(hs_conn_t *c);
void hs_conn_dispatch(hs_conn_t *c);
void hs_conn_deliver_closed(hs_conn_t *c);
void hs_conn_set_framing(hs_conn_t *c, const hs_framer_t *f);
/* Upgrade a plain connection to TLS in place (STARTTLS): output queued so
 * far goes out in plaintext first; input buffered and not yet framed (bytes
 * the peer pipelined after its STARTTLS) is dropped, *discarded says how
 * much. An outbound connection becomes the client side (name: its SNI and
 * the name checked). 0, or -1 with err. */
int hs_conn_starttls(hs_conn_t *c, struct hs_tls_ctx *ctx, const char *name, size_t *discarded,
                     char *err, size_t errlen);
int hs_conn_pipe(hs_conn_t *from, hs_conn_t *to);
/* Pull mode. hs_conn_read takes one frame framed with f from what is
 * buffered: HS_FRAME_OK with *msg, *len (valid until the connection reads
 * again), HS_FRAME_MORE when none is complete, or a negative frame error
 * (reported and logged; *why says what). hs_conn_want asks for the next
 * frame with f: events.frame or events.read_failed will deliver it. */
int hs_conn_read(hs_conn_t *c, const hs_framer_t *f, const char **msg, size_t *len,
                 const char **why);
void hs_conn_want(hs_conn_t *c);
void hs_conn_unwant(hs_conn_t *c);
/* What is buffered and not framed: taken (consumed) by the caller. */
void hs_conn_take_partial(hs_conn_t *c, const char **p, size_t *n);
/* Drop the next n bytes of input unread, in both modes: what is buffered
 * now, then what arrives, before any framing sees it; they never count
 * against max_frame or max_inbuf. 0, or UV_ECANCELED when a frame error
 * ended the input (the connection closes; its input is dropped anyway). */
int hs_conn_skip(hs_conn_t *c, uint64_t n);
#define HS_LINGER_MS 2000 /* a lingering close waits this long after the last output */

/* timers.c: a connection's deadlines */
void hs_timers_update(hs_conn_t *c);
void hs_timers_set_alarm(hs_conn_t *c, uint64_t at); /* 0 clears it */

/* outbound.c */
/* tls (a client context, or NULL) makes it a TLS connection: connected is
 * reported once its handshake is done, with tls_name as SNI and the name
 * the server's certificate must carry. */
hs_conn_t *hs_outbound_connect(hs_server_t *srv, const char *host, int port, uint64_t timeout,
                               const hs_framer_t *f, struct hs_tls_ctx *tls, const char *tls_name,
                               char *err, size_t errlen);
/* An outbound connection is ready (connected, and its TLS handshake done). */
void hs_outbound_ready(hs_conn_t *c);
/* conn.c: start an outbound connection's TLS handshake (c->tls is set). 0,
 * or -1 when it failed at once (c is closing). */
int hs_conn_tls_connect(hs_conn_t *c);
/* conn.c: answer a health check on c, just accepted, and close it. */
void hs_conn_health(hs_conn_t *c);
void hs_outbound_forget(hs_conn_t *c);

#endif
