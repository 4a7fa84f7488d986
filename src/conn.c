/* conn.c: one client, in the socket layer. Read path (frame, deliver), write
 * path (gather, try first, queue the rest), and the single place where a
 * connection finishes. Everything the script should hear of goes through
 * srv->ev (hotsock.h); nothing here knows of Lua.
 *
 * A close is queued: finish() stops all I/O at once and puts the connection
 * on the server's closed queue; the closed event runs from the before-sleep
 * pass (server.c), never inside another event. The hs_conn_t is freed when
 * both its libuv handles are closed and its closed event has run. */
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "conn_int.h"
#include "hotsock.h"
#include "tls.h"

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void close_cb(uv_handle_t *h);
static void finish(hs_conn_t *c, int reset);

hs_conn_t *hs_conn_new(hs_server_t *srv, hs_listener_t *l) {
  hs_conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->srv = srv;
  c->listener = l;
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
  c->h.handle.data = c;
  c->timer.data = c;
  c->handles_open = 2;
  if (is_unix) c->flags |= HS_CONN_UNIX;
  c->id = ++srv->next_id;
  c->accepted_at = c->opened_at = c->last_read = c->last_write = uv_now(srv->loop);
  return c;
}

/* Close a connection that was never started (accept failed, or over
 * max_clients): nobody above ever saw it. */
void hs_conn_discard(hs_conn_t *c) {
  c->flags |= HS_CONN_CLOSING | HS_CONN_FINISHED;
  uv_close((uv_handle_t *)&c->timer, close_cb);
  uv_close(&c->h.handle, close_cb);
}

int hs_conn_is_open(const hs_conn_t *c) {
  return !(c->flags & (HS_CONN_CLOSING | HS_CONN_FINISHED));
}

size_t hs_conn_buffered(const hs_conn_t *c) {
  return hs_buf_len(&c->out) + hs_buf_len(&c->inflight) + (c->tls ? hs_buf_len(&c->tls->cout) : 0);
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

/* Drop n bytes of input. The storage is kept even when the buffer empties,
 * so a frame just taken stays readable until settle() or the next read. */
static void consume(hs_conn_t *c, size_t n) {
  if (c->borrowed_len) {
    c->borrowed += n;
    c->borrowed_len -= n;
  } else {
    c->in.rpos += n;
  }
  /* What the framer learned stays true of bytes none of which went (an
   * http framing's interim 100-continue head consumes nothing). */
  if (n) c->scan = (hs_scan_t){0, 0};
}

/* Give an empty input buffer's storage back: an idle connection holds none. */
static void settle(hs_conn_t *c) {
  if (hs_buf_len(&c->in) == 0 && c->in.data) hs_buf_release(&c->in, &c->srv->pool);
}

static size_t input_len(const hs_conn_t *c) {
  return c->borrowed_len ? c->borrowed_len : hs_buf_len(&c->in);
}

/* Drop as much of what hs_conn_skip asked for as is buffered. Every path
 * that frames input calls it first, so skipped bytes are never framed,
 * never copied into the connection's buffer and never count against
 * max_frame or max_inbuf. */
static void drop_skipped(hs_conn_t *c) {
  if (!c->skip) return;
  size_t n = input_len(c);
  size_t k = c->skip < n ? (size_t)c->skip : n;
  if (!k) return;
  consume(c, k);
  c->skip -= k;
}

/* A frame of c's input has begun: bytes are buffered, or bytes are still
 * to be skipped (a refused message, which the frame timeout bounds too). */
static int frame_pending(const hs_conn_t *c) { return input_len(c) > 0 || c->skip > 0; }

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  hs_conn_t *c = (hs_conn_t *)h;
  hs_server_t *srv = c->srv;
  (void)suggested;
  settle(c);
  size_t len = hs_buf_len(&c->in);
  /* TLS: ciphertext goes to OpenSSL from there; a PROXY header being
   * gathered is copied to c->in from there. */
  if (len == 0 || c->tls || (c->flags & HS_CONN_PROXY_WAIT)) {
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
  if (c->flags & (HS_CONN_READING | HS_CONN_EOF | HS_CONN_FINISHED | HS_CONN_PAUSED | HS_CONN_HELD |
                  HS_CONN_CONNECTING))
    return;
  if ((c->flags & HS_CONN_CLOSING) && !(c->flags & HS_CONN_LINGER)) return;
  if (uv_read_start(&c->h.stream, alloc_cb, read_cb) == 0) c->flags |= HS_CONN_READING;
}

static void stop_reading(hs_conn_t *c) {
  if (c->flags & HS_CONN_READING) {
    uv_read_stop(&c->h.stream);
    c->flags &= ~HS_CONN_READING;
  }
}

/* Pull mode: end the wanted read without a frame; the partial input goes
 * with it. */
static void read_failed(hs_conn_t *c, const char *why) {
  const char *p;
  size_t n;
  c->flags &= ~HS_CONN_WANT;
  input(c, &p, &n);
  consume(c, n);
  c->srv->ev->read_failed(c, why, p, n);
}

/* Close after the script answered a frame error. Closing a socket whose
 * input was not all read makes the kernel send a reset, which can destroy
 * the answer on its way; so send what is queued and a FIN, then read and
 * drop what the client still sends until it closes too, or HS_LINGER_MS
 * pass. */
static void linger_close(hs_conn_t *c, const char *why) {
  hs_server_t *srv = c->srv;
  c->flags &= ~(HS_CONN_PAUSED | HS_CONN_WANT);
  c->flags |= HS_CONN_CLOSING | HS_CONN_LINGER | HS_CONN_SHUTDOWN;
  hs_conn_start_reading(c);
  c->reason = why;
  c->frame_start = 0;
  c->linger_until = uv_now(srv->loop) + HS_LINGER_MS;
  c->skip = 0;
  consume(c, input_len(c));
  hs_server_mark_dirty(srv, c);
  hs_timers_update(c);
}

/* For the other file of the connection's code (handshake.c). */
void hs_conn_consume(hs_conn_t *c, size_t n) { consume(c, n); }
size_t hs_conn_input_len(const hs_conn_t *c) { return input_len(c); }
void hs_conn_linger_close(hs_conn_t *c, const char *why) { linger_close(c, why); }
void hs_conn_stop_reading(hs_conn_t *c) { stop_reading(c); }

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

static const char *frame_error_text(int r, const char *detail) {
  /* A framer may say which limit (http: "body too large"...). */
  if (detail) return detail;
  return r == HS_FRAME_TOOBIG ? "frame too large" : "malformed frame";
}

/* Input broke the framing: count and log it, then let the host answer. */
static void frame_error(hs_conn_t *c, int r, const char *detail) {
  hs_server_t *srv = c->srv;
  const char *why = frame_error_text(r, detail);
  char name[128];
  if (r == HS_FRAME_TOOBIG) srv->stats.oversize_frames++;
  hs_log_conn(srv, c, HS_LOG_WARN, "%s (framing %s, max_frame %zu); closing", why,
              hs_framer_describe(&c->framer, name, sizeof name), c->max_frame);
  c->flags |= HS_CONN_BROKEN;
  c->skip = 0;
  if (c->flags & HS_CONN_PULL) {
    /* The reader hears of it now or at its next read (and every read
     * after); what it sends before it gives up still goes out, then the
     * connection closes lingering (hs_conn_close). The bad bytes are
     * dropped, never handed over as a partial: how many had arrived when
     * the error became certain depends on how the reads were cut, so the
     * reader gets "" whether it waited or found them buffered. */
    c->input_error = why;
    c->frame_start = 0;
    stop_reading(c);
    consume(c, input_len(c));
    if (c->flags & HS_CONN_WANT) {
      c->flags &= ~HS_CONN_WANT;
      srv->ev->read_failed(c, why, "", 0);
    }
    return;
  }
  /* The host may answer (a "-ERR Protocol error", a 431); what it and
   * earlier handlers queued is then sent before the connection closes.
   * Without an answer the connection is reset at once. */
  if (!(c->flags & HS_CONN_ADMIN) && srv->ev->frame_error(c, why)) {
    if (hs_conn_is_open(c)) linger_close(c, why);
    return;
  }
  hs_conn_abort(c, why);
}

/* A pipe: hand every byte read to the target, with no event. The source
 * stops reading while the target holds more than high_water (it reads
 * again in drain_check), and its EOF half-closes the target. */
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

/* Deliver every complete frame the input holds, one event each, until the
 * connection pauses or closes, or (pull mode) no read is wanted. */
void hs_conn_dispatch(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  int delivered = 0;
  if (c->flags & HS_CONN_FINISHED) return;
  if (c->flags & HS_CONN_LINGER) {
    linger_input(c);
    return;
  }
  if (c->flags & HS_CONN_DISPATCHING) return;
  c->flags |= HS_CONN_DISPATCHING;
  drop_skipped(c); /* while paused too: skipped bytes are not held */
  while (hs_conn_is_open(c) && !(c->flags & HS_CONN_PAUSED)) {
    if (c->pipe_to) {
      pipe_input(c);
      break;
    }
    int pull = (c->flags & HS_CONN_PULL) != 0;
    if (pull && !(c->flags & HS_CONN_WANT)) break;
    const char *p;
    size_t n;
    hs_frame_t fr = {0, 0, 0, NULL};
    int eof = (c->flags & HS_CONN_EOF) != 0;
    input(c, &p, &n);
    int r = hs_frame_next(&c->framer, p, n, c->max_frame, eof, &c->scan, &fr);
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
      if (pull) {
        read_failed(c, "closed");
        continue;
      }
      /* The peer closed: an unterminated last line is still a line. */
      if (c->framer.kind == HS_FRAME_LINE && n > 0) {
        fr.off = 0, fr.len = n <= c->max_frame ? n : c->max_frame, fr.consumed = n;
      } else {
        break;
      }
    }
    delivered = 1;
    hs_frame_join(&c->framer, (char *)p, &fr); /* input is writable: the loop's or c->in's */
    consume(c, fr.consumed);                   /* the bytes stay put until settle() */
    if (pull) c->flags &= ~HS_CONN_WANT;
    if (c->flags & HS_CONN_ADMIN) { /* the core's own line, not the script's */
      if (hs_admin_frame(c, p + fr.off, fr.len) != 0) break;
      continue;
    }
    srv->stats.frames_in++;
    if (srv->ev->frame(c, &c->framer, p + fr.off, fr.len) != 0) break;
  }
  c->flags &= ~HS_CONN_DISPATCHING;
  if (delivered && srv->ev->frames_done) srv->ev->frames_done(c);
  /* Push mode ends the connection at EOF once every complete frame was
   * delivered and its output is flushed; a pull reader decides for itself
   * (its read fails with "closed"). */
  if ((c->flags & (HS_CONN_EOF | HS_CONN_PULL | HS_CONN_PAUSED)) == HS_CONN_EOF &&
      hs_conn_is_open(c) && !c->pipe_to) {
    if (input_len(c))
      hs_log_conn(srv, c, HS_LOG_DEBUG, "peer closed inside a frame (%zu bytes dropped)",
                  input_len(c));
    hs_conn_close(c, "eof");
  }
  if (!c->borrowed_len) settle(c);
  /* Track when the frame now pending began, for the frame timeout. */
  if (!frame_pending(c)) {
    c->frame_start = 0;
  } else if (delivered || c->frame_start == 0) {
    c->frame_start = uv_now(srv->loop);
    hs_timers_update(c);
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
    if (nread == UV_EOF && (c->flags & HS_CONN_PROXY_WAIT)) {
      c->flags |= HS_CONN_EOF;
      stop_reading(c);
      if (c->bytes_in) {
        srv->stats.proxy_failures++;
        hs_log_conn(srv, c, HS_LOG_INFO, "PROXY header from %s cut short; closing", c->peer);
      }
      hs_conn_close(c, "eof");
    } else if (nread == UV_EOF && c->tls && !c->tls->done) {
      /* The peer left during the handshake; a probe that sent nothing is
       * not a failed handshake. */
      c->flags |= HS_CONN_EOF;
      stop_reading(c);
      if (c->bytes_in > c->proxy_len || !(c->flags & HS_CONN_UNSEEN))
        hs_conn_tls_failed(c, "the peer closed the connection");
      else
        hs_conn_close(c, "eof");
    } else if (nread == UV_EOF) {
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
  if (!(c->flags & HS_CONN_ADMIN)) srv->stats.bytes_in += (uint64_t)nread; /* the core's own */
  c->bytes_in += (uint64_t)nread;
  c->last_read = uv_now(srv->loop);
  if (c->tracer && !c->tls && !(c->flags & HS_CONN_PROXY_WAIT))
    hs_admin_trace(c, 0, buf->base, (size_t)nread);
  if (c->flags & HS_CONN_PROXY_WAIT) {
    if (hs_conn_proxy_input(c, buf->base, (size_t)nread) != 0) return;
  } else if (c->tls) {
    if (hs_conn_tls_input(c, buf->base, (size_t)nread) != 0) return;
  } else if (buf->base == srv->rbuf) {
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
    if (!(c->flags & HS_CONN_LINGER)) hs_buf_release(&c->in, &srv->pool);
    return;
  }
  /* A pull reader busy with something else: let TCP hold further input
   * rather than our heap. hs_conn_want reads again. */
  if ((c->flags & (HS_CONN_PULL | HS_CONN_WANT)) == HS_CONN_PULL &&
      hs_buf_len(&c->in) >= HS_POOL_BLOCK)
    stop_reading(c);
  if (hs_buf_len(&c->in) > srv->limits.max_inbuf) {
    hs_log_conn(srv, c, HS_LOG_WARN, "input buffer over max_inbuf (%zu bytes); closing",
                srv->limits.max_inbuf);
    srv->stats.oversize_frames++;
    hs_conn_abort(c, "input too large");
  }
}

/* ---- pull reads ---- */

int hs_conn_read(hs_conn_t *c, const hs_framer_t *f, const char **msg, size_t *len,
                 const char **why) {
  const char *p;
  size_t n;
  hs_frame_t fr = {0, 0, 0, NULL};
  int r;
  if (c->input_error) { /* a frame error ended the input */
    *why = c->input_error;
    return HS_FRAME_BAD;
  }
  drop_skipped(c);
  if (memcmp(&c->framer, f, sizeof *f) != 0) {
    c->framer = *f;
    c->scan = (hs_scan_t){0, 0};
  }
  for (;;) {
    input(c, &p, &n);
    r = hs_frame_next(f, p, n, c->max_frame, (c->flags & HS_CONN_EOF) != 0, &c->scan, &fr);
    if (r != HS_FRAME_SKIP) break;
    consume(c, fr.consumed);
  }
  if (r == HS_FRAME_OK) {
    c->srv->stats.frames_in++;
    hs_frame_join(f, (char *)p, &fr);
    consume(c, fr.consumed);
    *msg = p + fr.off;
    *len = fr.len;
    /* As the read path does: the frame timeout runs only while a frame is
     * pending, from when the next one began (here: now). */
    c->frame_start = frame_pending(c) ? uv_now(c->srv->loop) : 0;
    return r;
  }
  if (r < 0) {
    *why = frame_error_text(r, fr.why);
    frame_error(c, r, fr.why);
    return r;
  }
  return HS_FRAME_MORE;
}

void hs_conn_take_partial(hs_conn_t *c, const char **p, size_t *n) {
  input(c, p, n);
  consume(c, *n);
}

/* Skip n bytes of input: drop what is buffered at once, and leave the rest
 * in c->skip for the read path to drop as it arrives. */
int hs_conn_skip(hs_conn_t *c, uint64_t n) {
  if (c->flags & HS_CONN_BROKEN) return UV_ECANCELED;
  if (n == 0 || !hs_conn_is_open(c)) return 0;
  size_t before = input_len(c);
  c->skip = n > UINT64_MAX - c->skip ? UINT64_MAX : c->skip + n;
  drop_skipped(c);
  if (c->flags & HS_CONN_DISPATCHING) return 0; /* the dispatch ends as below */
  /* The frame timeout now times what comes next: the bytes to skip, or a
   * frame that starts where the skip ended. */
  if (!frame_pending(c)) {
    c->frame_start = 0;
  } else if (c->frame_start == 0 || input_len(c) != before) {
    c->frame_start = uv_now(c->srv->loop);
    hs_timers_update(c);
  }
  /* What is left may hold a frame now that it starts elsewhere. */
  if (input_len(c) && input_len(c) != before) hs_server_mark_pending(c->srv, c);
  return 0;
}

/* Pull mode: wait for the next frame with the framing hs_conn_read set. */
void hs_conn_want(hs_conn_t *c) {
  if (!hs_conn_is_open(c)) return;
  c->flags |= HS_CONN_WANT;
  if (frame_pending(c) && c->frame_start == 0) c->frame_start = uv_now(c->srv->loop);
  if (!c->borrowed_len) settle(c);
  hs_conn_start_reading(c);
  hs_timers_update(c);
  /* What is here already (a complete frame, or the peer's EOF) is
   * delivered from the dispatch list: no read will come for it. */
  if ((c->flags & HS_CONN_EOF) || input_len(c)) hs_server_mark_pending(c->srv, c);
}

void hs_conn_unwant(hs_conn_t *c) { c->flags &= ~HS_CONN_WANT; }

/* ---- output ---- */

static void drain_check(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  size_t b = hs_conn_buffered(c);
  hs_conn_t *from = c->pipe_from;
  if (from && (from->flags & HS_CONN_HELD) && b <= srv->limits.low_water) {
    from->flags &= ~HS_CONN_HELD;
    hs_conn_start_reading(from);
  }
  if (b > srv->limits.low_water) {
    c->flags |= HS_CONN_ABOVE_LOW;
  } else if ((c->flags & HS_CONN_ABOVE_LOW) && hs_conn_is_open(c) && !(c->flags & HS_CONN_UNSEEN)) {
    c->flags &= ~HS_CONN_ABOVE_LOW;
    srv->ev->drain(c);
  }
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status;
}

static void write_cb(uv_write_t *req, int status);

/* Hand gathered output to the kernel: uv_try_write first, and only what it
 * did not take goes into a queued uv_write. Then half-close or finish a
 * graceful close when nothing is left. On a TLS connection the plaintext
 * is encrypted first (with close_notify at the end of a graceful close or
 * a half-close) and the ciphertext is what is written. */
void hs_conn_flush(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  if ((c->flags & (HS_CONN_FINISHED | HS_CONN_CONNECTING)) || c->writing) return;
  hs_buf_t *src = &c->out;
  if (c->tls) {
    int closing = (c->flags & (HS_CONN_FLUSHING | HS_CONN_SHUTDOWN)) != 0;
    if (hs_tls_encrypt(c->tls, &c->out, closing, &srv->pool) != 0) {
      hs_conn_abort(c, "TLS write failed");
      return;
    }
    src = &c->tls->cout;
  }
  size_t n = hs_buf_len(src);
  if (n) {
    uv_buf_t b = uv_buf_init((char *)hs_buf_peek(src), (unsigned)n);
    int r = uv_try_write(&c->h.stream, &b, 1);
    if (r > 0) {
      if (!(c->flags & HS_CONN_ADMIN)) srv->stats.bytes_out += (uint64_t)r;
      c->bytes_out += (uint64_t)r;
      c->last_write = uv_now(srv->loop);
      hs_buf_consume(src, (size_t)r, &srv->pool);
    } else if (r < 0 && r != UV_EAGAIN) {
      hs_conn_abort(c, error_reason(c, r));
      return;
    }
    n = hs_buf_len(src);
    if (n) {
      /* The rest goes out as a queued write; the buffer moves to inflight so
       * new output can gather meanwhile. */
      c->inflight = *src;
      hs_buf_init(src);
      b = uv_buf_init((char *)hs_buf_peek(&c->inflight), (unsigned)n);
      r = uv_write(&c->wreq, &c->h.stream, &b, 1, write_cb);
      if (r) {
        hs_conn_abort(c, error_reason(c, r));
        return;
      }
      c->writing = 1;
      c->last_write = uv_now(srv->loop);
      hs_timers_update(c);
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
    if (c->flags & HS_CONN_LINGER) hs_timers_update(c); /* the linger starts now */
  }
  drain_check(c);
}

static void write_cb(uv_write_t *req, int status) {
  hs_conn_t *c = hs_container_of(req, hs_conn_t, wreq);
  hs_server_t *srv = c->srv;
  c->writing = 0;
  if (c->flags & HS_CONN_FINISHED) return; /* buffers go when it is freed */
  if (status < 0) {
    hs_conn_abort(c, error_reason(c, status));
    return;
  }
  if (!(c->flags & HS_CONN_ADMIN)) srv->stats.bytes_out += hs_buf_len(&c->inflight);
  c->bytes_out += hs_buf_len(&c->inflight);
  c->last_write = uv_now(srv->loop);
  hs_buf_release(&c->inflight, &srv->pool);
  hs_conn_flush(c);
}

/* Queue bytes for the peer; they are written before the loop sleeps. */
int hs_conn_send(hs_conn_t *c, const char *p, size_t n) {
  if (n == 0) return 0;
  if (c->tracer) hs_admin_trace(c, 1, p, n);
  if (hs_buf_append(&c->out, p, n, &c->srv->pool) != 0) return UV_ENOMEM;
  hs_server_mark_dirty(c->srv, c);
  return 0;
}

/* Queue n buffers in order. When their total is large (HS_DIRECT_MIN) and
 * nothing is queued or being written, they go to the kernel at once, from
 * the caller's memory (a Lua string), and only what it did not take is
 * copied: a large message costs no copy into the output buffer, and the
 * write it saves at flush time is the one made here. Small ones gather as
 * hs_conn_send's do. */
int hs_conn_sendv(hs_conn_t *c, const uv_buf_t *b, unsigned n) {
  hs_server_t *srv = c->srv;
  size_t total = 0, skip = 0;
  for (unsigned i = 0; i < n; i++) total += b[i].len;
  if (total == 0) return 0;
  /* A trace can cut its console off midway (over max_outbuf): c->tracer
   * is read again for each buffer. */
  for (unsigned i = 0; i < n && c->tracer; i++) hs_admin_trace(c, 1, b[i].base, b[i].len);
  if (total >= HS_DIRECT_MIN && !c->tls && !c->writing && hs_buf_len(&c->out) == 0 &&
      !(c->flags & (HS_CONN_CONNECTING | HS_CONN_CLOSING | HS_CONN_SHUTDOWN))) {
    int r = uv_try_write(&c->h.stream, b, n);
    if (r > 0) {
      if (!(c->flags & HS_CONN_ADMIN)) srv->stats.bytes_out += (uint64_t)r;
      c->bytes_out += (uint64_t)r;
      c->last_write = uv_now(srv->loop);
      skip = (size_t)r;
    }
    /* An error other than EAGAIN shows again at the flush, which closes. */
  }
  int queued = 0;
  for (unsigned i = 0; i < n; i++) {
    size_t len = b[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    if (hs_buf_append(&c->out, b[i].base + skip, len - skip, &srv->pool) != 0) return UV_ENOMEM;
    skip = 0;
    queued = 1;
  }
  if (queued) hs_server_mark_dirty(srv, c);
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

/* ---- life cycle ---- */

/* Start a freshly accepted connection: into the live list, the opened
 * event, then reading. */
void hs_conn_start(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  TAILQ_INSERT_TAIL(&srv->conns, c, link);
  srv->stats.active++;
  srv->stats.accepted++;
  c->listener->accepted++;
  c->listener->active++;
  /* A TLS client is opened when its handshake completes (tls_input). */
  if (!(c->flags & HS_CONN_UNSEEN)) srv->ev->opened(c);
  if (hs_conn_is_open(c)) {
    hs_conn_start_reading(c);
    hs_timers_update(c);
  }
}

static void maybe_free(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  if (c->handles_open > 0 || (c->flags & HS_CONN_QUEUED)) return;
  if (c->flags & HS_CONN_OUTBOUND) srv->outbound_mem -= sizeof *c;
  /* A discarded connection was never in the list. */
  if (c->link.tqe_prev) TAILQ_REMOVE(&srv->conns, c, link);
  hs_buf_release(&c->in, &srv->pool);
  hs_buf_release(&c->out, &srv->pool);
  hs_buf_release(&c->inflight, &srv->pool);
  if (c->tls) hs_tls_free(c->tls, &srv->pool);
  free(c->proxy_hdr);
  free(c->adm);
  free(c);
  if (srv->stopping && TAILQ_EMPTY(&srv->conns)) hs_server_stop(srv);
}

static void close_cb(uv_handle_t *h) {
  hs_conn_t *c = h->data;
  c->handles_open--;
  maybe_free(c);
}

/* The closed event, from the before-sleep pass (server.c). */
void hs_conn_deliver_closed(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  TAILQ_REMOVE(&srv->closed, c, queue);
  if (!(c->flags & HS_CONN_UNSEEN)) srv->ev->closed(c); /* the host never saw it */
  c->flags &= ~HS_CONN_QUEUED;
  maybe_free(c);
}

/* The one place a connection ends: stop every kind of I/O now, close the
 * handles, unhook pipes, and queue the closed event. */
static void finish(hs_conn_t *c, int reset) {
  hs_server_t *srv = c->srv;
  if (c->flags & HS_CONN_FINISHED) return;
  c->flags |= HS_CONN_CLOSING | HS_CONN_FINISHED | HS_CONN_QUEUED;
  c->flags &= ~(HS_CONN_FLUSHING | HS_CONN_WANT);
  stop_reading(c);
  uv_timer_stop(&c->timer);
  if (c->flags & HS_CONN_DIRTY) {
    TAILQ_REMOVE(&srv->dirty, c, dirty);
    c->flags &= ~HS_CONN_DIRTY;
  }
  if (c->flags & HS_CONN_PENDING) {
    TAILQ_REMOVE(&srv->pending, c, queue);
    c->flags &= ~HS_CONN_PENDING;
  }
  TAILQ_INSERT_TAIL(&srv->closed, c, queue);
  hs_server_wake(srv);
  if (!(c->flags & (HS_CONN_OUTBOUND | HS_CONN_HEALTH | HS_CONN_ADMIN))) {
    srv->stats.active--;
    srv->stats.closed++;
    c->listener->active--;
  }
  if (srv->admin) hs_admin_finished(c);
  if (!c->reason) c->reason = "closed";
  hs_log_conn(srv, c, HS_LOG_DEBUG, "closed: %s", c->reason);
  hs_outbound_forget(c);
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
  uv_close((uv_handle_t *)&c->timer, close_cb);
  if (reset && !(c->flags & (HS_CONN_UNIX | HS_CONN_FIN_SENT | HS_CONN_CONNECTING)) &&
      uv_tcp_close_reset(&c->h.tcp, close_cb) == 0)
    return;
  uv_close(&c->h.handle, close_cb);
}

/* Close after queued output is flushed. Input is no longer read. */
void hs_conn_close(hs_conn_t *c, const char *reason) {
  if (c->flags & HS_CONN_CLOSING) return;
  if (c->input_error) {
    linger_close(c, c->input_error); /* input is left unread: see frame_error */
    return;
  }
  c->flags |= HS_CONN_CLOSING | HS_CONN_FLUSHING;
  c->flags &= ~HS_CONN_WANT;
  c->reason = reason;
  stop_reading(c);
  if (hs_conn_buffered(c) == 0 && !c->tls) {
    finish(c, 0);
  } else {
    hs_timers_update(c); /* the write timeout bounds the wait */
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
  if (!(c->flags & HS_CONN_DISPATCHING) && input_len(c)) hs_server_mark_pending(c->srv, c);
}

/* ---- pipes ---- */

/* What from reads goes to `to`, with backpressure. UV_EINVAL when either
 * end is taken already. */
int hs_conn_pipe(hs_conn_t *from, hs_conn_t *to) {
  if (from == to || from->pipe_to || to->pipe_from) return UV_EINVAL;
  from->pipe_to = to;
  to->pipe_from = from;
  from->flags &= ~HS_CONN_WANT;
  hs_conn_start_reading(from);
  if (input_len(from) || (from->flags & HS_CONN_EOF)) hs_server_mark_pending(from->srv, from);
  return 0;
}
