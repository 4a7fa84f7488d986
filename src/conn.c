/* conn.c: one client. Read path (frame, deliver), write path (gather, try
 * first, queue the rest), timeouts, and the single place where a connection
 * finishes. The hs_conn_t is freed only in the libuv close callback. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "hotsock.h"

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void finish(hs_conn_t *c, int reset);

hs_conn_t *hs_conn_new(hs_server_t *srv, hs_listener_t *l) {
  hs_conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->srv = srv;
  c->listener = l;
  c->box_ref = LUA_NOREF;
  c->co_ref = LUA_NOREF;
  c->handlers_ref = LUA_NOREF;
  c->framer = srv->framer;
  c->max_frame = srv->limits.max_frame;
  c->to = srv->limits.timeouts;
  hs_buf_init(&c->in);
  hs_buf_init(&c->out);
  hs_buf_init(&c->inflight);
  int is_unix = l && l->is_unix;
  int r = is_unix ? uv_pipe_init(srv->loop, &c->h.pipe, 0) : uv_tcp_init(srv->loop, &c->h.tcp);
  if (r) {
    free(c);
    return NULL;
  }
  uv_timer_init(srv->loop, &c->timer);
  c->handles_open = 2;
  if (is_unix) c->flags |= HS_CONN_UNIX;
  c->id = ++srv->next_id;
  c->last_read = c->last_write = uv_now(srv->loop);
  return c;
}

static void close_cb(uv_handle_t *h);

/* Close a connection that was never started (accept failed, or over
 * max_clients): no script ever saw it. */
void hs_conn_discard(hs_conn_t *c) {
  c->flags |= HS_CONN_CLOSING | HS_CONN_FINISHED;
  c->h.handle.data = c;
  c->timer.data = c;
  uv_close((uv_handle_t *)&c->timer, close_cb);
  uv_close(&c->h.handle, close_cb);
}

int hs_conn_is_open(const hs_conn_t *c) {
  return !(c->flags & (HS_CONN_CLOSING | HS_CONN_FINISHED));
}

size_t hs_conn_buffered(const hs_conn_t *c) {
  return hs_buf_len(&c->out) + hs_buf_len(&c->inflight);
}

/* Push the handler `name` for c and return 1, or push nothing and return 0.
 * Accepted connections use the module's handlers; an outbound connection
 * only the table given to hs.connect (none in coroutine style). */
int hs_conn_handler(hs_conn_t *c, const char *name) {
  hs_server_t *srv = c ? c->srv : NULL;
  if (!c || !(c->flags & HS_CONN_OUTBOUND)) return c ? hs_script_get_handler(srv, name) : 0;
  if (c->handlers_ref == LUA_NOREF) return 0;
  lua_State *L = srv->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->handlers_ref);
  lua_pushstring(L, name); /* raw, as the module's handlers (script.c) */
  if (lua_rawget(L, -2) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return 1;
  }
  lua_pop(L, 2);
  return 0;
}

/* The coroutine that waits on c's input: its own, or for an outbound
 * connection the one of the connection that made it. */
static hs_conn_t *waiter(hs_conn_t *c) { return c->owner ? c->owner : c; }

/* Resume whoever waits on c with nargs values pushed on its coroutine. */
void hs_conn_resume_waiter(hs_conn_t *c, int nargs) {
  hs_conn_t *o = waiter(c);
  c->wait = HS_WAIT_NONE;
  o->wait = HS_WAIT_NONE;
  hs_script_resume(c->srv, o, nargs);
}

/* ---- input ---- */

/* The unframed bytes: the borrowed slice of the loop's read buffer during a
 * read callback, else the connection's own buffer. */
static void input(const hs_conn_t *c, const char **p, size_t *n) {
  if (c->borrowed_len) {
    *p = c->borrowed;
    *n = c->borrowed_len;
  } else {
    *p = hs_buf_peek(&c->in);
    *n = hs_buf_len(&c->in);
  }
}

static void consume(hs_conn_t *c, size_t n) {
  if (c->borrowed_len) {
    c->borrowed += n;
    c->borrowed_len -= n;
  } else {
    hs_buf_consume(&c->in, n, &c->srv->pool);
  }
  c->scan = (hs_scan_t){0, 0};
}

static size_t input_len(const hs_conn_t *c) {
  return c->borrowed_len ? c->borrowed_len : hs_buf_len(&c->in);
}


static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  hs_conn_t *c = (hs_conn_t *)h;
  hs_server_t *srv = c->srv;
  (void)suggested;
  size_t len = hs_buf_len(&c->in);
  if (len == 0) {
    /* The common case: nothing pending. Read into the loop's buffer and frame
     * from there; only an incomplete tail is copied to the connection. */
    buf->base = srv->rbuf;
    buf->len = srv->rbuf_size;
    return;
  }
  /* A frame is in progress: read after it, growing in doublings past a block. */
  size_t want = len < HS_POOL_BLOCK / 2 ? HS_POOL_BLOCK - len : len;
  char *p = hs_buf_reserve(&c->in, want, &srv->pool);
  buf->base = p;
  buf->len = p ? hs_buf_space(&c->in) : 0;
}

void hs_conn_start_reading(hs_conn_t *c) {
  if (c->flags & (HS_CONN_READING | HS_CONN_EOF | HS_CONN_CLOSING | HS_CONN_PAUSED |
                  HS_CONN_HELD | HS_CONN_CONNECTING))
    return;
  if (uv_read_start(&c->h.stream, alloc_cb, read_cb) == 0) c->flags |= HS_CONN_READING;
}

static void stop_reading(hs_conn_t *c) {
  if (c->flags & HS_CONN_READING) {
    uv_read_stop(&c->h.stream);
    c->flags &= ~HS_CONN_READING;
  }
}

/* Push nil, err, partial onto co, consuming the partial bytes. */
static void push_fail(hs_conn_t *c, lua_State *co, const char *err) {
  const char *p;
  size_t n;
  input(c, &p, &n);
  lua_pushnil(co);
  lua_pushstring(co, err);
  lua_pushlstring(co, p, n);
  consume(c, n);
}

/* Resume a coroutine waiting in receive with nil, err, partial. */
void hs_conn_wake_reader(hs_conn_t *c, const char *err) {
  push_fail(c, waiter(c)->co, err);
  hs_conn_resume_waiter(c, 3);
}

/* Close after on_frame_error answered. Closing a socket whose input was not
 * all read makes the kernel send a reset, which can destroy the answer on
 * its way; so send what is queued and a FIN, then read and drop what the
 * client still sends until it closes too, or HS_LINGER_MS pass. */
static void linger_close(hs_conn_t *c, const char *why) {
  hs_server_t *srv = c->srv;
  c->flags &= ~HS_CONN_PAUSED;
  hs_conn_start_reading(c);
  c->flags |= HS_CONN_CLOSING | HS_CONN_LINGER | HS_CONN_SHUTDOWN;
  c->reason = why;
  c->frame_start = 0;
  c->linger_until = uv_now(srv->loop) + HS_LINGER_MS;
  consume(c, input_len(c));
  hs_server_mark_dirty(srv, c);
  hs_conn_timers_update(c);
}

/* Lingering: drop the input; at the peer's FIN, finish once the output is
 * out (hs_conn_flush finishes a FLUSHING connection). */
static void linger_input(hs_conn_t *c) {
  consume(c, input_len(c));
  if (!(c->flags & HS_CONN_EOF)) return;
  if (hs_conn_buffered(c) == 0 && !c->writing && (c->flags & HS_CONN_FIN_SENT))
    finish(c, 0);
  else
    c->flags |= HS_CONN_FLUSHING;
}

static void frame_error(hs_conn_t *c, int r, const char *detail) {
  hs_server_t *srv = c->srv;
  const char *why = r == HS_FRAME_TOOBIG ? "frame too large"
                    : detail                ? detail
                                            : "malformed frame";
  if (r == HS_FRAME_TOOBIG) srv->stats.oversize_frames++;
  hs_log_conn(srv, c, HS_LOG_WARN, "%s (framing %s, max_frame %zu); closing", why,
              hs_framer_name((c->flags & HS_CONN_CORO) ? &c->want : &c->framer),
              c->max_frame);
  if (c->flags & HS_CONN_CORO) {
    /* The coroutine hears of it from receive, now or at its next call (and
     * every call after); what it sends before it returns still goes out,
     * then the connection closes lingering (hs_conn_close). */
    c->input_error = why;
    c->frame_start = 0;
    stop_reading(c);
    if (c->wait == HS_WAIT_READ) hs_conn_wake_reader(c, why); /* the bad bytes are its partial */
    if (hs_conn_is_open(c)) consume(c, input_len(c));
    return;
  }
  if (!hs_conn_is_open(c)) return;
  /* on_frame_error may answer (a "-ERR Protocol error", a 431); what it and
   * earlier handlers queued is then sent before the connection closes.
   * Without it the connection is reset at once. */
  if (hs_conn_handler(c, "on_frame_error")) {
    hs_lconn_push(srv, c);
    lua_pushstring(srv->L, why);
    hs_script_call(srv, c, 2, "on_frame_error");
    if (hs_conn_is_open(c)) linger_close(c, why);
    return;
  }
  hs_conn_abort(c, why);
}

/* conn:pipe: hand every byte read to the target, in C, with no Lua call. The
 * source stops reading while the target holds more than high_water (it reads
 * again in on_drain_check), and its EOF half-closes the target. */
static void pipe_input(hs_conn_t *c) {
  hs_conn_t *to = c->pipe_to;
  const char *p;
  size_t n;
  input(c, &p, &n);
  if (n) {
    int r = hs_conn_send(to, p, n);
    consume(c, n);
    if (r != 0) {
      hs_conn_abort(to, "out of memory");
      return;
    }
    if (hs_conn_check_outbuf(to) != 0) return; /* the pipe's end closes c too */
    if (hs_conn_buffered(to) > c->srv->limits.high_water) {
      c->flags |= HS_CONN_HELD;
      stop_reading(c);
    }
  }
  if ((c->flags & HS_CONN_EOF) && hs_conn_is_open(c)) {
    hs_conn_shutdown(to);
    /* Both ways done: the peer sent FIN, and so did we. */
    if (c->flags & HS_CONN_FIN_SENT) hs_conn_close(c, "eof");
  }
}

/* Deliver every complete frame the input holds, one Lua call each, until the
 * connection pauses, closes, or (coroutine style) stops waiting for input. */
void hs_conn_dispatch(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  lua_State *L = srv->L;
  int delivered = 0;
  /* Event style: on_message and the conn are looked up once per dispatch
   * and kept at top + 1 and top + 2 for all the messages of this read. */
  int top = lua_gettop(L), handler = -1; /* -1: not looked up yet */
  if (c->flags & HS_CONN_LINGER) {
    linger_input(c);
    return;
  }
  if (c->flags & HS_CONN_DISPATCHING) return;
  c->flags |= HS_CONN_DISPATCHING;
  if (c->pipe_to) {
    pipe_input(c);
    c->flags &= ~HS_CONN_DISPATCHING;
    return;
  }
  while (hs_conn_is_open(c) && !(c->flags & HS_CONN_PAUSED)) {
    int coro = (c->flags & HS_CONN_CORO) != 0;
    if (coro && c->wait != HS_WAIT_READ) break;
    const hs_framer_t *f = coro ? &c->want : &c->framer;
    const char *p;
    size_t n;
    hs_frame_t fr = {0, 0, 0, NULL};
    int eof = (c->flags & HS_CONN_EOF) != 0;
    input(c, &p, &n);
    int r = hs_frame_next(f, p, n, c->max_frame, eof, &c->scan, &fr);
    if (r < 0) {
      frame_error(c, r, fr.why);
      break;
    }
    if (r == HS_FRAME_SKIP) {
      consume(c, fr.consumed);
      continue;
    }
    if (r == HS_FRAME_MORE) {
      if (!eof) break;
      if (coro) {
        hs_conn_wake_reader(c, "closed");
        continue;
      }
      /* The peer closed: an unterminated last line is still a line. */
      if (f->kind == HS_FRAME_LINE && n > 0) {
        fr.off = 0, fr.len = n <= c->max_frame ? n : c->max_frame, fr.consumed = n;
      } else {
        break;
      }
    }
    srv->stats.frames_in++;
    delivered = 1;
    if (coro) {
      if (hs_lconn_push_frame(c, waiter(c)->co, f, p, &fr) != 0) break;
      consume(c, fr.consumed);
      hs_conn_resume_waiter(c, 1);
    } else {
      if (handler < 0) {
        if (!lua_checkstack(L, 8)) {
          hs_conn_abort(c, "out of memory");
          break;
        }
        handler = hs_conn_handler(c, "on_message");
        if (handler) hs_lconn_push(srv, c);
      }
      if (!handler) {
        consume(c, fr.consumed);
        continue;
      }
      lua_pushvalue(L, top + 1);
      lua_pushvalue(L, top + 2);
      if (hs_lconn_push_frame(c, L, f, p, &fr) != 0) {
        lua_pop(L, 2);
        break;
      }
      consume(c, fr.consumed);
      hs_script_call(srv, c, 2, "on_message");
    }
  }
  lua_settop(L, top);
  c->flags &= ~HS_CONN_DISPATCHING;
  /* Event style ends the connection at EOF once every complete frame was
   * delivered and its output is flushed; a coroutine decides for itself
   * (receive returns nil, "closed"). */
  if ((c->flags & (HS_CONN_EOF | HS_CONN_CORO | HS_CONN_PAUSED)) == HS_CONN_EOF &&
      hs_conn_is_open(c)) {
    if (input_len(c))
      hs_log_conn(srv, c, HS_LOG_DEBUG, "peer closed inside a frame (%zu bytes dropped)",
                  input_len(c));
    hs_conn_close(c, "eof");
  }
  /* Track when the frame now pending began, for the frame timeout. */
  if (input_len(c) == 0) {
    c->frame_start = 0;
  } else if (delivered || c->frame_start == 0) {
    c->frame_start = uv_now(srv->loop);
    hs_conn_timers_update(c);
  }
}

static const char *error_reason(hs_conn_t *c, int err) {
  if (err == UV_ECONNRESET || err == UV_EPIPE) return "reset";
  snprintf(c->reason_buf, sizeof c->reason_buf, "%s", uv_strerror(err));
  return c->reason_buf;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hs_conn_t *c = (hs_conn_t *)s;
  hs_server_t *srv = c->srv;
  if (nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF) {
      c->flags |= HS_CONN_EOF;
      stop_reading(c);
      hs_conn_dispatch(c);
    } else if (nread == UV_ENOBUFS) {
      hs_log_conn(srv, c, HS_LOG_ERROR, "out of memory for input; closing");
      hs_conn_abort(c, "out of memory");
    } else {
      hs_conn_abort(c, error_reason(c, (int)nread));
    }
    return;
  }
  srv->stats.bytes_in += (uint64_t)nread;
  c->bytes_in += (uint64_t)nread;
  c->last_read = uv_now(srv->loop);
  if (buf->base == srv->rbuf) {
    c->borrowed = buf->base;
    c->borrowed_len = (size_t)nread;
  } else {
    hs_buf_commit(&c->in, (size_t)nread);
  }
  hs_conn_dispatch(c);
  if (c->borrowed_len) {
    /* Keep the incomplete tail; the loop's buffer is reused by the next read. */
    size_t n = c->borrowed_len;
    const char *p = c->borrowed;
    c->borrowed_len = 0;
    if (hs_conn_is_open(c) && hs_buf_append(&c->in, p, n, &srv->pool) != 0) {
      hs_conn_abort(c, "out of memory");
      return;
    }
  }
  if (!hs_conn_is_open(c)) {
    hs_buf_release(&c->in, &srv->pool);
    return;
  }
  /* A coroutine busy with something else: let TCP hold further input rather
   * than our heap. receive() reads again when it has to wait. */
  if ((c->flags & HS_CONN_CORO) && c->wait != HS_WAIT_READ &&
      hs_buf_len(&c->in) >= HS_POOL_BLOCK)
    stop_reading(c);
  if (hs_buf_len(&c->in) > srv->limits.max_inbuf) {
    hs_log_conn(srv, c, HS_LOG_WARN, "input buffer over max_inbuf (%zu bytes); closing",
                srv->limits.max_inbuf);
    srv->stats.oversize_frames++;
    hs_conn_abort(c, "input too large");
  }
}

/* ---- output ---- */

static void on_drain_check(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  size_t b = hs_conn_buffered(c);
  hs_conn_t *from = c->pipe_from;
  if (from && (from->flags & HS_CONN_HELD) && b <= srv->limits.low_water) {
    from->flags &= ~HS_CONN_HELD;
    hs_conn_start_reading(from);
  }
  if (b > srv->limits.low_water) {
    c->flags |= HS_CONN_ABOVE_LOW;
  } else if ((c->flags & HS_CONN_ABOVE_LOW) && hs_conn_is_open(c)) {
    c->flags &= ~HS_CONN_ABOVE_LOW;
    if (hs_conn_handler(c, "on_drain")) {
      hs_lconn_push(srv, c);
      hs_script_call(srv, c, 1, "on_drain");
    }
  }
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status;
}

static void write_cb(uv_write_t *req, int status);

/* Hand gathered output to the kernel: uv_try_write first, and only what it
 * did not take goes into a queued uv_write. Then half-close or finish a
 * graceful close when nothing is left. */
void hs_conn_flush(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  if ((c->flags & (HS_CONN_FINISHED | HS_CONN_CONNECTING)) || c->writing) return;
  size_t n = hs_buf_len(&c->out);
  if (n) {
    uv_buf_t b = uv_buf_init((char *)hs_buf_peek(&c->out), (unsigned)n);
    int r = uv_try_write(&c->h.stream, &b, 1);
    if (r > 0) {
      srv->stats.bytes_out += (uint64_t)r;
      c->bytes_out += (uint64_t)r;
      c->last_write = uv_now(srv->loop);
      hs_buf_consume(&c->out, (size_t)r, &srv->pool);
    } else if (r < 0 && r != UV_EAGAIN) {
      hs_conn_abort(c, error_reason(c, r));
      return;
    }
    n = hs_buf_len(&c->out);
    if (n) {
      /* The rest goes out as a queued write; the buffer moves to inflight so
       * new output can gather meanwhile. */
      c->inflight = c->out;
      hs_buf_init(&c->out);
      b = uv_buf_init((char *)hs_buf_peek(&c->inflight), (unsigned)n);
      r = uv_write(&c->wreq, &c->h.stream, &b, 1, write_cb);
      if (r) {
        hs_conn_abort(c, error_reason(c, r));
        return;
      }
      c->writing = 1;
      c->last_write = uv_now(srv->loop);
      hs_conn_timers_update(c);
    }
  }
  if (!c->writing) {
    if ((c->flags & HS_CONN_SHUTDOWN) && !(c->flags & HS_CONN_FIN_SENT)) {
      c->flags |= HS_CONN_FIN_SENT;
      uv_shutdown(&c->sreq, &c->h.stream, shutdown_cb);
      if ((c->flags & HS_CONN_EOF) && (c->pipe_to || c->pipe_from) &&
          !(c->flags & HS_CONN_CLOSING)) {
        hs_conn_close(c, "eof"); /* a pipe done both ways */
        return;
      }
    }
    if (c->flags & HS_CONN_FLUSHING) {
      finish(c, 0);
      return;
    }
    if (c->flags & HS_CONN_LINGER) hs_conn_timers_update(c); /* the linger starts now */
  }
  on_drain_check(c);
}

static void write_cb(uv_write_t *req, int status) {
  hs_conn_t *c = hs_container_of(req, hs_conn_t, wreq);
  hs_server_t *srv = c->srv;
  c->writing = 0;
  if (c->flags & HS_CONN_FINISHED) return; /* buffers go in the close callback */
  if (status < 0) {
    hs_conn_abort(c, error_reason(c, status));
    return;
  }
  srv->stats.bytes_out += hs_buf_len(&c->inflight);
  c->bytes_out += hs_buf_len(&c->inflight);
  c->last_write = uv_now(srv->loop);
  hs_buf_release(&c->inflight, &srv->pool);
  hs_conn_flush(c);
}

/* Queue bytes for the peer; they are written when the current event is done. */
int hs_conn_send(hs_conn_t *c, const char *p, size_t n) {
  if (n == 0) return 0;
  if (hs_buf_append(&c->out, p, n, &c->srv->pool) != 0) return UV_ENOMEM;
  hs_server_mark_dirty(c->srv, c);
  return 0;
}

/* Cut off a client whose queued output passed max_outbuf. Returns -1 if so. */
int hs_conn_check_outbuf(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  if (hs_conn_buffered(c) <= srv->limits.max_outbuf) return 0;
  srv->stats.outbuf_disconnects++;
  hs_log_conn(srv, c, HS_LOG_WARN,
              "output buffer over max_outbuf (%zu bytes queued, limit %zu); closing",
              hs_conn_buffered(c), srv->limits.max_outbuf);
  hs_conn_abort(c, "output buffer full");
  return -1;
}

/* ---- coroutine reads ---- */

/* conn:receive. Return the frame at once when the input already holds one;
 * otherwise record what is wanted and yield until the read path resumes us.
 * May raise (lua_yield longjmps), like every lua_* call here. */
int hs_conn_receive(hs_conn_t *c, lua_State *co, const hs_framer_t *f) {
  const char *p;
  size_t n;
  hs_frame_t fr = {0, 0, 0, NULL};
  hs_scan_t scan = {0, 0};
  int eof = (c->flags & HS_CONN_EOF) != 0;
  int r;
  if (c->input_error) { /* a frame error ended the input */
    lua_pushnil(co);
    lua_pushstring(co, c->input_error);
    lua_pushliteral(co, "");
    return 3;
  }
  for (;;) {
    input(c, &p, &n);
    r = hs_frame_next(f, p, n, c->max_frame, eof, &scan, &fr);
    if (r != HS_FRAME_SKIP) break;
    consume(c, fr.consumed);
    scan = (hs_scan_t){0, 0};
  }
  if (r == HS_FRAME_OK) {
    c->srv->stats.frames_in++;
    if (hs_lconn_push_frame(c, co, f, p, &fr) != 0) { /* c is aborted */
      lua_pushnil(co);
      lua_pushliteral(co, "out of memory");
      lua_pushliteral(co, "");
      return 3;
    }
    consume(c, fr.consumed);
    /* As the read path does: the frame timeout runs only while a frame is
     * pending, from when the next one began (here: now). */
    c->frame_start = input_len(c) ? uv_now(c->srv->loop) : 0;
    return 1;
  }
  if (r < 0) {
    const char *why = r == HS_FRAME_TOOBIG ? "frame too large" : fr.why ? fr.why : "malformed frame";
    c->want = *f;
    c->wait = HS_WAIT_NONE;
    frame_error(c, r, fr.why);
    lua_pushnil(co);
    lua_pushstring(co, why);
    lua_pushliteral(co, "");
    return 3;
  }
  if (eof || !hs_conn_is_open(c)) {
    push_fail(c, co, "closed");
    return 3;
  }
  c->want = *f;
  c->scan = scan;
  c->wait = HS_WAIT_READ;
  if (c->owner) c->owner->wait = HS_WAIT_PEER;
  if (n > 0 && c->frame_start == 0) c->frame_start = uv_now(c->srv->loop);
  hs_conn_start_reading(c);
  hs_conn_timers_update(c);
  return lua_yield(co, 0);
}

/* ---- life cycle ---- */

/* Start a freshly accepted connection: on_connect or the handle coroutine,
 * then reading. */
void hs_conn_start(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  lua_State *L = srv->L;
  c->next = srv->conns; /* into the live list */
  if (srv->conns) srv->conns->prev = c;
  srv->conns = c;
  srv->stats.active++;
  srv->stats.accepted++;
  hs_lconn_push_new(srv, c);
  if (srv->coro_style) {
    c->flags |= HS_CONN_CORO;
    lua_State *co = lua_newthread(L);
    c->co = co;
    c->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *(hs_conn_t **)lua_getextraspace(co) = c;
    hs_script_get_handler(srv, "handle");
    lua_xmove(L, co, 1);
    hs_lconn_push(srv, c);
    lua_xmove(L, co, 1);
    hs_script_resume(srv, c, 1);
  } else if (hs_script_get_handler(srv, "on_connect")) {
    hs_lconn_push(srv, c);
    hs_script_call(srv, c, 1, "on_connect");
  }
  if (hs_conn_is_open(c)) {
    hs_conn_start_reading(c);
    hs_conn_timers_update(c);
  }
}

static void close_cb(uv_handle_t *h) {
  hs_conn_t *c = h->data;
  hs_server_t *srv = c->srv;
  if (--c->handles_open > 0) return;
  hs_buf_release(&c->in, &srv->pool);
  hs_buf_release(&c->out, &srv->pool);
  hs_buf_release(&c->inflight, &srv->pool);
  free(c);
  if (srv->stopping && !srv->conns) hs_server_stop(srv);
}

static void list_remove(hs_conn_t **head, hs_conn_t *c, size_t link_off) {
  for (hs_conn_t **pp = head; *pp; pp = (hs_conn_t **)((char *)*pp + link_off)) {
    if (*pp == c) {
      *pp = *(hs_conn_t **)((char *)c + link_off);
      return;
    }
  }
}

/* Let go of the handler coroutine: close its pending to-be-closed variables
 * and drop the reference. Never called while it runs. */
void hs_conn_drop_coroutine(hs_conn_t *c) {
  *(hs_conn_t **)lua_getextraspace(c->co) = NULL;
  lua_resetthread(c->co);
  luaL_unref(c->srv->L, LUA_REGISTRYINDEX, c->co_ref);
  c->co = NULL;
  c->co_ref = LUA_NOREF;
  c->wait = HS_WAIT_NONE;
}

/* The one place a connection ends: wake a waiting coroutine, run on_close
 * exactly once, clear the Lua box, and close the libuv handles. */
static void finish(hs_conn_t *c, int reset) {
  hs_server_t *srv = c->srv;
  if (c->flags & HS_CONN_FINISHED) return;
  c->flags |= HS_CONN_CLOSING | HS_CONN_FINISHED;
  c->flags &= ~HS_CONN_FLUSHING;
  stop_reading(c);
  uv_timer_stop(&c->timer);
  if (c->flags & HS_CONN_DIRTY) {
    list_remove(&srv->dirty, c, offsetof(hs_conn_t, dirty_next));
    c->flags &= ~HS_CONN_DIRTY;
  }
  if (c->flags & HS_CONN_PENDING) {
    list_remove(&srv->pending, c, offsetof(hs_conn_t, pending_next));
    c->flags &= ~HS_CONN_PENDING;
  }
  /* Out of the live list, so hs.clients() and broadcast no longer see it. */
  if (c->prev) c->prev->next = c->next;
  else srv->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = NULL;
  if (!(c->flags & HS_CONN_OUTBOUND)) {
    srv->stats.active--;
    srv->stats.closed++;
  }
  if (!c->reason) c->reason = "closed";
  hs_log_conn(srv, c, HS_LOG_DEBUG, "closed: %s", c->reason);
  hs_conn_forget_connect(c);

  /* An outbound connection its owner's coroutine waits on: wake it. */
  if (c->owner && c->wait != HS_WAIT_NONE) {
    lua_State *co = c->owner->co;
    if (c->wait == HS_WAIT_READ) {
      push_fail(c, co, "closed");
      hs_conn_resume_waiter(c, 3);
    } else {
      lua_pushnil(co);
      lua_pushstring(co, c->reason);
      hs_conn_resume_waiter(c, 2);
    }
  }
  if (c->owner) { /* still linked: leave the owner's list */
    hs_conn_t **pp = &c->owner->children;
    while (*pp && *pp != c) pp = &(*pp)->sibling;
    if (*pp) *pp = c->sibling;
    c->owner = NULL;
    c->sibling = NULL;
  }
  /* Nobody waits on this connection's outbound ones any more. */
  for (hs_conn_t *k = c->children; k; k = k->sibling) k->wait = HS_WAIT_NONE;

  if (c->co && !c->co_running) {
    if (c->wait != HS_WAIT_NONE) {
      hs_wait_t w = c->wait;
      c->wait = HS_WAIT_NONE;
      if (w == HS_WAIT_READ) {
        push_fail(c, c->co, "closed");
        hs_script_resume(srv, c, 3);
      } else {
        lua_pushnil(c->co);
        lua_pushliteral(c->co, "closed");
        hs_script_resume(srv, c, 2);
      }
    }
    /* Still there: it yielded again after the close. Abandon it. */
    if (c->co) hs_conn_drop_coroutine(c);
  }
  if (hs_conn_handler(c, "on_close")) {
    hs_lconn_push(srv, c);
    lua_pushstring(srv->L, c->reason);
    hs_script_call(srv, c, 2, "on_close");
  }
  hs_lconn_clear(srv, c);
  if (c->handlers_ref != LUA_NOREF) {
    luaL_unref(srv->L, LUA_REGISTRYINDEX, c->handlers_ref);
    c->handlers_ref = LUA_NOREF;
  }
  /* Outbound connections made by this one's coroutine end with it. */
  hs_conn_t *k = c->children;
  c->children = NULL;
  while (k) {
    hs_conn_t *next = k->sibling;
    k->owner = NULL;
    k->sibling = NULL;
    hs_conn_close(k, "owner closed");
    k = next;
  }
  /* The other end of a pipe closes once its output is out. */
  if (c->pipe_to) {
    hs_conn_t *to = c->pipe_to;
    c->pipe_to = NULL;
    to->pipe_from = NULL;
    hs_conn_close(to, (to->flags & HS_CONN_EOF) ? "eof" : "pipe closed");
  }
  if (c->pipe_from) {
    hs_conn_t *from = c->pipe_from;
    c->pipe_from = NULL;
    from->pipe_to = NULL;
    from->flags &= ~HS_CONN_HELD;
    hs_conn_close(from, (from->flags & HS_CONN_EOF) ? "eof" : "pipe closed");
  }

  c->h.handle.data = c;
  c->timer.data = c;
  uv_close((uv_handle_t *)&c->timer, close_cb);
  if (reset && !(c->flags & (HS_CONN_UNIX | HS_CONN_FIN_SENT)) &&
      uv_tcp_close_reset(&c->h.tcp, close_cb) == 0)
    return;
  uv_close(&c->h.handle, close_cb);
}

/* Close after queued output is flushed. Input is no longer read. */
void hs_conn_close(hs_conn_t *c, const char *reason) {
  if (c->flags & HS_CONN_CLOSING) return;
  if (c->input_error && !(c->flags & HS_CONN_FINISHED)) {
    linger_close(c, c->input_error); /* input is left unread: see frame_error */
    return;
  }
  c->flags |= HS_CONN_CLOSING | HS_CONN_FLUSHING;
  c->reason = reason;
  stop_reading(c);
  if (hs_conn_buffered(c) == 0) {
    finish(c, 0);
  } else {
    hs_conn_timers_update(c); /* the write timeout bounds the wait */
    hs_server_mark_dirty(c->srv, c);
  }
}

/* Close now; TCP connections get a reset. Queued output is dropped. */
void hs_conn_abort(hs_conn_t *c, const char *reason) {
  if (c->flags & HS_CONN_FINISHED) return;
  if (!(c->flags & HS_CONN_CLOSING)) c->reason = reason;
  finish(c, 1);
}

void hs_conn_shutdown(hs_conn_t *c) {
  c->flags |= HS_CONN_SHUTDOWN;
  hs_server_mark_dirty(c->srv, c);
}

void hs_conn_pause(hs_conn_t *c) {
  c->flags |= HS_CONN_PAUSED;
  stop_reading(c);
}

void hs_conn_resume(hs_conn_t *c) {
  if (!(c->flags & HS_CONN_PAUSED)) return;
  c->flags &= ~HS_CONN_PAUSED;
  hs_conn_start_reading(c);
  if (input_len(c) || (c->flags & HS_CONN_EOF)) hs_server_mark_pending(c->srv, c);
}

void hs_conn_set_framing(hs_conn_t *c, const hs_framer_t *f) {
  c->framer = *f;
  c->scan = (hs_scan_t){0, 0};
  /* Outside a dispatch, bytes already here are framed anew on the next turn. */
  if (!(c->flags & HS_CONN_DISPATCHING) && input_len(c))
    hs_server_mark_pending(c->srv, c);
}

/* ---- pipes ---- */

/* conn:pipe(other): what from reads goes to `to`, with backpressure. */
int hs_conn_pipe(hs_conn_t *from, hs_conn_t *to) {
  if (from == to || from->pipe_to || to->pipe_from) return -1;
  from->pipe_to = to;
  to->pipe_from = from;
  if (input_len(from) || (from->flags & HS_CONN_EOF)) hs_server_mark_pending(from->srv, from);
  return 0;
}
