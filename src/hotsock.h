/* hotsock.h: the server, its listeners and connections, and the functions the
 * C files share. Everything hangs off hs_server_t: there is no global mutable
 * state, so one loop and one Lua state per thread can come later. */
#ifndef HOTSOCK_H
#define HOTSOCK_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "frame.h"
#include "log.h"

#define HS_VERSION "0.1.0"

#define hs_container_of(ptr, type, member) \
  ((type *)((char *)(ptr) - offsetof(type, member)))

typedef struct hs_server hs_server_t;
typedef struct hs_conn hs_conn_t;

/* Timeouts in ms; 0 turns one off. HS_UNSET: not given on the command line. */
#define HS_UNSET UINT64_MAX
/* The longest time setting accepted (ms; ten years): deadlines are sums of
 * a clock and a setting, which must not wrap. */
#define HS_MAX_MS 315360000000ull
typedef struct hs_timeouts {
  uint64_t idle;  /* nothing read or written */
  uint64_t read;  /* nothing read */
  uint64_t write; /* queued output made no progress */
  uint64_t frame; /* a started frame did not complete */
} hs_timeouts_t;

/* Settings from the handler module, overridden by the command line. */
typedef struct hs_limits {
  size_t max_clients;
  size_t max_frame;
  size_t max_inbuf;
  size_t max_outbuf;
  size_t low_water;
  size_t high_water;       /* a pipe's source pauses while its target holds more */
  int backlog;
  uint64_t drain_timeout;  /* ms */
  uint64_t handler_budget; /* ms */
  size_t max_lua_memory;
  hs_timeouts_t timeouts;
} hs_limits_t;

/* One listening socket. */
typedef struct hs_listener {
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_stream_t stream;
    uv_handle_t handle;
  } h;                       /* first, so the handle pointer is the listener */
  hs_server_t *srv;
  int is_unix;
  char name[128];            /* the address as printed: "127.0.0.1:43121" */
  char path[108];            /* unix socket path to unlink at exit */
  struct hs_listener *next;
} hs_listener_t;

/* Counters reported by hs.stats(). */
typedef struct hs_stats {
  uint64_t accepted, rejected, active, closed;
  uint64_t bytes_in, bytes_out, frames_in;
  uint64_t handler_errors, handler_timeouts, oversize_frames;
  uint64_t outbuf_disconnects, timeouts;
  uint64_t reload_ok, reload_failed, generation;
  uint64_t connects, connect_failed; /* hs.connect outcomes */
} hs_stats_t;

/* What a connection's coroutine is suspended on. */
typedef enum hs_wait {
  HS_WAIT_NONE = 0, /* running, or no coroutine */
  HS_WAIT_READ,     /* conn:receive */
  HS_WAIT_SLEEP,    /* hs.sleep */
  HS_WAIT_PEER,     /* receive or connect on an outbound connection it owns */
  HS_WAIT_CONNECT   /* (on the outbound connection) its owner waits for connect */
} hs_wait_t;

/* Connection flags. */
enum {
  HS_CONN_CLOSING = 1 << 0,   /* close decided; no more Lua calls but on_close */
  HS_CONN_FLUSHING = 1 << 1,  /* closing after queued output is written */
  HS_CONN_EOF = 1 << 2,       /* the peer sent FIN */
  HS_CONN_PAUSED = 1 << 3,    /* conn:pause() */
  HS_CONN_READING = 1 << 4,   /* uv_read_start is in effect */
  HS_CONN_DIRTY = 1 << 5,     /* on the server's flush list */
  HS_CONN_PENDING = 1 << 6,   /* on the server's dispatch list */
  HS_CONN_SHUTDOWN = 1 << 7,  /* conn:shutdown() asked for; FIN after output */
  HS_CONN_FIN_SENT = 1 << 8,  /* uv_shutdown issued */
  HS_CONN_ABOVE_LOW = 1 << 9, /* buffered output went above low_water */
  HS_CONN_UNIX = 1 << 10,     /* a unix socket */
  HS_CONN_CORO = 1 << 11,     /* coroutine style */
  HS_CONN_DISPATCHING = 1 << 12, /* inside conn_dispatch (no re-entry) */
  HS_CONN_FINISHED = 1 << 13, /* on_close done, Lua box cleared */
  HS_CONN_OUTBOUND = 1 << 14, /* made by hs.connect */
  HS_CONN_CONNECTING = 1 << 15, /* hs.connect still under way */
  HS_CONN_HELD = 1 << 16,     /* not reading: the pipe target is above high_water */
  HS_CONN_LINGER = 1 << 17    /* closing: FIN sent after output, input dropped until
                                 the peer's FIN or linger_until */
};

/* One client. C owns this memory and frees it only in the close callback;
 * Lua holds a box pointing here that is cleared when the connection closes. */
struct hs_conn {
  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_stream_t stream;
    uv_handle_t handle;
  } h;                      /* first: container_of from the handle */
  uv_timer_t timer;         /* one timer for every timeout deadline */
  uv_write_t wreq;          /* the one write in flight */
  uv_shutdown_t sreq;       /* half-close request */
  hs_server_t *srv;
  hs_listener_t *listener;  /* NULL for an outbound connection */
  hs_conn_t *next, *prev;   /* the server's list of live connections */
  hs_conn_t *dirty_next;    /* the server's flush list */
  hs_conn_t *pending_next;  /* the server's dispatch list */
  uint64_t id;
  unsigned flags;
  int handles_open;         /* uv handles still to close (stream, timer) */
  int box_ref;              /* registry ref of the Lua userdata box */
  int co_ref;               /* registry ref of the handler coroutine */
  lua_State *co;            /* the handler coroutine, while it lives */
  hs_wait_t wait;           /* what the coroutine waits for */
  hs_framer_t framer;       /* event style: the connection's framing */
  hs_framer_t want;         /* coroutine style: what receive waits for */
  hs_scan_t scan;           /* what the framer learned of pending input */
  hs_buf_t in;              /* unframed input the connection owns */
  const char *borrowed;     /* during a read: unframed bytes in the loop's buffer */
  size_t borrowed_len;
  hs_buf_t out;             /* output gathered, not yet handed to the kernel */
  hs_buf_t inflight;        /* output in the write in flight */
  int writing;              /* a uv_write is in flight */
  size_t max_frame;         /* per-connection copy of the limit */
  hs_timeouts_t to;         /* this connection's timeouts */
  uint64_t last_read;       /* uv_now of the last byte read */
  uint64_t last_write;      /* uv_now of the last write progress */
  uint64_t frame_start;     /* uv_now when the pending frame's first byte came; 0 none */
  uint64_t linger_until;    /* HS_CONN_LINGER: when to give up waiting for the peer */
  const char *input_error;  /* coroutine style: a frame error ended the input */
  uint64_t sleep_until;     /* uv_now when hs.sleep ends */
  int co_running;           /* the coroutine is running now (inside lua_resume) */
  const char *reason;       /* why it closes (static string or reason_buf) */
  char reason_buf[96];
  char peer[64];            /* "ip:port", "[v6]:port" or a path */
  char peer_ip[48];
  int peer_port;
  char local[64];
  uint64_t bytes_in, bytes_out;
  /* outbound connections (hs.connect) */
  struct hs_connect_req *creq; /* the connect under way, or NULL */
  uint64_t connect_deadline; /* uv_now; 0 none */
  int handlers_ref;         /* registry ref of its handler table, or LUA_NOREF */
  hs_conn_t *owner;         /* the coroutine-style connection that made it */
  hs_conn_t *children;      /* outbound connections this one's coroutine made */
  hs_conn_t *sibling;       /* next in the owner's children list */
  /* conn:pipe */
  hs_conn_t *pipe_to;       /* bytes read here are sent there, in C */
  hs_conn_t *pipe_from;     /* the connection piping into this one */
};

/* The server: loop, listeners, connections, the Lua state and counters. */
struct hs_server {
  uv_loop_t *loop;
  lua_State *L;
  hs_listener_t *listeners;
  hs_conn_t *conns;          /* live connections, newest first */
  hs_conn_t *dirty;          /* connections with output to flush */
  hs_conn_t *pending;        /* connections with input to dispatch */
  uv_prepare_t prepare;      /* flushes output before the loop sleeps */
  uv_idle_t idle;            /* keeps the loop spinning while work is pending */
  uv_signal_t sigint, sigterm, sighup;
  uv_timer_t drain_timer;    /* shutdown deadline */
  hs_pool_t pool;            /* blocks for connection buffers */
  char *rbuf;                /* the loop's read buffer */
  size_t rbuf_size;
  hs_limits_t limits;        /* effective settings */
  hs_limits_t cli;           /* command-line overrides; 0 (HS_UNSET for timeouts) unset */
  int log_level;
  uint64_t next_id;
  hs_stats_t stats;
  int stopping;              /* SIGINT/SIGTERM received */
  int exit_code;
  uint64_t last_emfile_log;  /* ms; accept errors are logged once a second */
  uint64_t last_reject_log;  /* ms; max_clients rejections likewise */
  hs_conn_t *current;        /* connection whose handler runs now, for logs */

  /* script state */
  const char *script_path;
  char script_dir[4096];
  int module_ref;            /* registry ref of the handler module */
  int shared_ref;            /* registry ref of hs.shared */
  int coro_style;            /* the module has handle() */
  hs_framer_t framer;        /* the module's framing */
  size_t lua_mem;            /* bytes the Lua allocator holds */
  int budget_depth;          /* nested protected calls under way */
  uint64_t budget_ms;        /* budget of the outermost call under way */
  int budget_tripped;        /* the budget ran out: every instruction raises */
  uint64_t budget_deadline;  /* uv_hrtime() ns */
  int argc;                  /* script arguments */
  char **argv;
  int check_only;
  struct hs_ltimer *timers;  /* live hs.after / hs.every timers */
  struct hs_watch *watch;    /* the script watcher, or NULL */
  uint64_t load_budget;      /* ms a script load may take */
  const char *reload_trigger; /* a reload asked for, done before the loop sleeps */
  int rollback_pending;       /* a rollback asked for, done before reload_trigger */
  int prev_module_ref;       /* the module before the last reload, during probation */
  hs_limits_t prev_limits;   /* its settings */
  hs_framer_t prev_framer;
  uint64_t probation_until;  /* uv_now; 0 when no probation */
  int probation_errors;      /* errors seen in the window */
  int probation_limit;       /* rollback_errors */
  uint64_t probation_window; /* within, ms */
  int stop_started;          /* the stop sequence ran */
  int closing_all;           /* handles are being closed; uv_run will return */
};

/* log.c wrappers that know the server's level and current connection. */
#define hs_log(srv, level, ...) \
  hs_logf((srv)->log_level, (level), (srv)->current ? (srv)->current->id : 0, __VA_ARGS__)
#define hs_log_conn(srv, c, level, ...) \
  hs_logf((srv)->log_level, (level), (c) ? (c)->id : 0, __VA_ARGS__)

/* server.c */
int hs_server_init(hs_server_t *srv, uv_loop_t *loop);
int hs_server_listen(hs_server_t *srv, const char *addr);
void hs_server_stop(hs_server_t *srv);
void hs_server_free(hs_server_t *srv);
int hs_server_signals(hs_server_t *srv);

/* watch.c */
int hs_watch_start(hs_server_t *srv);
void hs_watch_stop(hs_server_t *srv);
void hs_watch_refresh(hs_server_t *srv); /* after a load: watch module folders */
void hs_server_mark_dirty(hs_server_t *srv, hs_conn_t *c);
void hs_server_mark_pending(hs_server_t *srv, hs_conn_t *c);
void hs_server_request_reload(hs_server_t *srv, const char *trigger);

/* conn.c */
hs_conn_t *hs_conn_new(hs_server_t *srv, hs_listener_t *l);
void hs_conn_start(hs_conn_t *c);
void hs_conn_discard(hs_conn_t *c);
int hs_conn_send(hs_conn_t *c, const char *p, size_t n);
int hs_conn_check_outbuf(hs_conn_t *c);
void hs_conn_close(hs_conn_t *c, const char *reason);
void hs_conn_abort(hs_conn_t *c, const char *reason);
void hs_conn_drop_coroutine(hs_conn_t *c);
void hs_conn_shutdown(hs_conn_t *c);
void hs_conn_pause(hs_conn_t *c);
void hs_conn_resume(hs_conn_t *c);
void hs_conn_flush(hs_conn_t *c);
void hs_conn_dispatch(hs_conn_t *c);
void hs_conn_set_framing(hs_conn_t *c, const hs_framer_t *f);
int hs_conn_handler(hs_conn_t *c, const char *name);
hs_conn_t *hs_conn_connect(hs_server_t *srv, const char *host, int port, uint64_t timeout,
                           const hs_framer_t *f, int handlers_ref, hs_conn_t *owner,
                           char *err, size_t errlen);
int hs_conn_pipe(hs_conn_t *from, hs_conn_t *to);
void hs_conn_start_reading(hs_conn_t *c);
void hs_conn_resume_waiter(hs_conn_t *c, int nargs);

/* outbound.c */
void hs_conn_forget_connect(hs_conn_t *c);
void hs_conn_timers_update(hs_conn_t *c);
/* Resume a coroutine waiting in receive with nil, err, partial. */
void hs_conn_wake_reader(hs_conn_t *c, const char *err);
#define HS_LINGER_MS 2000 /* a lingering close waits this long after the last output */
size_t hs_conn_buffered(const hs_conn_t *c);
int hs_conn_receive(hs_conn_t *c, lua_State *co, const hs_framer_t *f);
int hs_conn_is_open(const hs_conn_t *c);

/* script.c */
int hs_script_open(hs_server_t *srv);
void hs_script_close(hs_server_t *srv);
int hs_script_load(hs_server_t *srv, char *err, size_t errlen);
int hs_script_call(hs_server_t *srv, hs_conn_t *c, int nargs, const char *what);
int hs_script_get_handler(hs_server_t *srv, const char *name);
int hs_script_resume(hs_server_t *srv, hs_conn_t *c, int nargs);
void hs_script_budget_start(hs_server_t *srv, uint64_t ms);
int hs_script_budget_stop(hs_server_t *srv);
int hs_script_reload(hs_server_t *srv, const char *trigger);
/* module.c: the handler module */
int hs_rawfield(lua_State *L, int idx, const char *k); /* t[k], no metamethods */
const char *hs_module_read(lua_State *L, int idx, const hs_limits_t *cli, hs_limits_t *lim,
                           hs_framer_t *f, char *err, size_t errlen);
const char *hs_script_validate(lua_State *L, int idx, char *err, size_t errlen);
int hs_script_parse_framing(lua_State *L, int idx, hs_framer_t *f, char *err, size_t errlen);
int hs_script_listen_addrs(hs_server_t *srv, char ***addrs);

/* lconn.c */
void hs_lconn_open(lua_State *L);
void hs_lconn_push_new(hs_server_t *srv, hs_conn_t *c);
void hs_lconn_push(hs_server_t *srv, hs_conn_t *c);
void hs_lconn_clear(hs_server_t *srv, hs_conn_t *c);
hs_conn_t *hs_lconn_check(lua_State *L, int idx);
/* Push frame fr of p onto L for the script: a string, or with RESP framing a
 * table of arguments. 0, or -1 (nothing pushed, c aborted) when the Lua heap
 * has no room for it. */
int hs_lconn_push_frame(hs_conn_t *c, lua_State *L, const hs_framer_t *f, const char *p,
                        const hs_frame_t *fr);
hs_conn_t *hs_lconn_test(lua_State *L, int idx);

/* lhotsock.c */
int hs_lhotsock_open(lua_State *L);
void hs_lhotsock_stop_timers(hs_server_t *srv);

/* The server that owns a Lua state (kept in the registry). */
hs_server_t *hs_server_from_lua(lua_State *L);

#endif
