/* exec.c: run a program without blocking the loop, in the socket layer.
 * uv_spawn starts it in a process group of its own with its stdin, stdout
 * and stderr on pipes; its input is written with uv_write, its output read
 * with uv_read_start into two buffers capped at max_output each. It ends
 * when the process exited and both output pipes reached EOF, or when a
 * limit cut it short (the time-out, the output cap, max_lua_memory): then
 * the process group is killed, the pipes are closed, and the host hears of
 * it through one plain C callback. No Lua here. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"

typedef struct ebuf {
  char *p;
  size_t len, cap;
} ebuf_t;

enum { READ_OUT = 1, READ_ERR = 2 };

struct hs_exec {
  uv_process_t proc;
  uv_pipe_t in, out, err;
  uv_timer_t timer;
  uv_write_t wreq;
  hs_server_t *srv;
  hs_exec_done_cb cb; /* NULL once abandoned */
  void *data;
  int (*room)(void *ud, size_t n);
  void *room_ud;
  size_t max_output;
  char *input; /* our copy, written to stdin */
  size_t input_len;
  ebuf_t obuf, ebuf;
  size_t charged;   /* bytes counted in srv->outbound_mem */
  int handles_open; /* handles not yet closed: freed at 0 */
  int pid;          /* > 0 once spawned */
  int exited;       /* the exit callback ran */
  int reading;      /* READ_OUT | READ_ERR: streams not yet at EOF */
  int done;         /* reported (or abandoned): handles closing */
  int64_t status;
  int term_signal;
  const char *error;
};

/* Count n more bytes held for a script, or give them back (n negative). */
static void charge(hs_exec_t *e, size_t n, int give_back) {
  if (give_back) {
    e->charged -= n;
    e->srv->outbound_mem -= n;
  } else {
    e->charged += n;
    e->srv->outbound_mem += n;
  }
}

/* The last handle is closed: give back what was counted and free it all. */
static void close_cb(uv_handle_t *h) {
  hs_exec_t *e = h->data;
  if (--e->handles_open > 0) return;
  charge(e, e->charged, 1);
  free(e->obuf.p);
  free(e->ebuf.p);
  free(e->input);
  free(e);
}

static void close_handle(hs_exec_t *e, void *h) {
  (void)e;
  if (!uv_is_closing(h)) uv_close(h, close_cb);
}

/* SIGKILL to the process group: the program and the children it left (one
 * that holds stdout open keeps the result from ending). The group's id
 * stays reserved while any member lives, so after the leader's exit it
 * still names this group, or none. */
static void kill_group(hs_exec_t *e) {
  if (e->pid <= 0) return;
  if (uv_kill(-e->pid, SIGKILL) != 0 && !e->exited) uv_process_kill(&e->proc, SIGKILL);
}

/* Stop reading the streams in `which` and close their pipes. */
static void stop_reading(hs_exec_t *e, int which) {
  if ((which & READ_OUT) && (e->reading & READ_OUT)) {
    e->reading &= ~READ_OUT;
    uv_read_stop((uv_stream_t *)&e->out);
    close_handle(e, &e->out);
  }
  if ((which & READ_ERR) && (e->reading & READ_ERR)) {
    e->reading &= ~READ_ERR;
    uv_read_stop((uv_stream_t *)&e->err);
    close_handle(e, &e->err);
  }
}

/* Close every handle; e is freed when the last close callback ran. */
static void close_all(hs_exec_t *e) {
  e->done = 1;
  uv_timer_stop(&e->timer);
  stop_reading(e, READ_OUT | READ_ERR);
  close_handle(e, &e->in);
  close_handle(e, &e->out);
  close_handle(e, &e->err);
  close_handle(e, &e->timer);
  close_handle(e, &e->proc);
}

/* Report once the process exited and both streams are read to their end:
 * the output buffers' memory is given back first (the host copies them),
 * freed after the callback with the rest. */
static void maybe_finish(hs_exec_t *e) {
  if (e->done || !e->exited || e->reading) return;
  close_all(e);
  charge(e, e->obuf.cap + e->ebuf.cap, 1);
  if (!e->cb) return;
  hs_exec_result_t r = {e->status,
                        e->term_signal,
                        e->obuf.p ? e->obuf.p : "",
                        e->obuf.len,
                        e->ebuf.p ? e->ebuf.p : "",
                        e->ebuf.len,
                        e->error};
  hs_exec_done_cb cb = e->cb;
  e->cb = NULL;
  cb(e->data, &r);
}

/* A limit was reached (why): kill the group and stop reading; the report
 * follows the exit. */
static void cut(hs_exec_t *e, const char *why) {
  if (!e->error) e->error = why;
  kill_group(e);
  stop_reading(e, READ_OUT | READ_ERR);
  maybe_finish(e);
}

static void exit_cb(uv_process_t *p, int64_t status, int term_signal) {
  hs_exec_t *e = p->data;
  e->exited = 1;
  e->status = status;
  e->term_signal = term_signal;
  maybe_finish(e);
}

static void timer_cb(uv_timer_t *t) { cut(t->data, "timeout"); }

/* Read into the loop's buffer (the connections' too: each read is consumed
 * before the callback returns). */
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  hs_exec_t *e = h->data;
  (void)suggested;
  buf->base = e->srv->rbuf;
  buf->len = e->srv->rbuf_size;
}

/* Append n bytes to b, up to max_output; growing asks the host for room.
 * 0, or the reason to cut the process short. */
static const char *append(hs_exec_t *e, ebuf_t *b, const char *p, size_t n) {
  const char *why = NULL;
  if (n > e->max_output - b->len) {
    n = e->max_output - b->len;
    why = "output too large";
  }
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4096;
    if (cap < b->len + n) cap = b->len + n;
    if (cap > e->max_output) cap = e->max_output;
    if (!e->room(e->room_ud, cap - b->cap)) return "not enough memory (max_lua_memory)";
    char *q = realloc(b->p, cap);
    if (!q) return "not enough memory";
    charge(e, cap - b->cap, 0);
    b->p = q;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
  return why;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hs_exec_t *e = s->data;
  int which = s == (uv_stream_t *)&e->out ? READ_OUT : READ_ERR;
  if (nread < 0) { /* EOF, or the pipe failed: this stream is done */
    stop_reading(e, which);
    maybe_finish(e);
    return;
  }
  if (nread == 0) return;
  const char *why = append(e, which == READ_OUT ? &e->obuf : &e->ebuf, buf->base, (size_t)nread);
  if (why) cut(e, why);
}

/* stdin is written: close it so the program sees EOF (also on an error,
 * such as a program that exited without reading it). */
static void write_cb(uv_write_t *req, int status) {
  hs_exec_t *e = req->data;
  (void)status;
  close_handle(e, &e->in);
}

hs_exec_t *hs_exec_start(hs_server_t *srv, const hs_exec_opts_t *o, hs_exec_done_cb cb, void *data,
                         char *err, size_t errlen) {
  if (o->input_len > UINT32_MAX) { /* one uv_buf_t carries it */
    snprintf(err, errlen, "stdin too large");
    return NULL;
  }
  size_t need = sizeof(hs_exec_t) + o->input_len;
  if (!o->room(o->room_ud, need)) {
    snprintf(err, errlen, "not enough memory (max_lua_memory)");
    return NULL;
  }
  hs_exec_t *e = calloc(1, sizeof *e);
  char *input = o->input_len ? malloc(o->input_len) : NULL;
  if (!e || (o->input_len && !input)) {
    free(e);
    free(input);
    snprintf(err, errlen, "not enough memory");
    return NULL;
  }
  e->srv = srv;
  e->cb = cb;
  e->data = data;
  e->room = o->room;
  e->room_ud = o->room_ud;
  e->max_output = o->max_output;
  e->input = input;
  e->input_len = o->input_len;
  if (o->input_len) memcpy(input, o->input, o->input_len);
  charge(e, need, 0);
  uv_pipe_init(srv->loop, &e->in, 0);
  uv_pipe_init(srv->loop, &e->out, 0);
  uv_pipe_init(srv->loop, &e->err, 0);
  uv_timer_init(srv->loop, &e->timer);
  e->in.data = e->out.data = e->err.data = e->timer.data = e->proc.data = e->wreq.data = e;
  e->handles_open = 5;

  uv_stdio_container_t stdio[3];
  if (o->input_len) {
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&e->in;
  } else {
    stdio[0].flags = UV_IGNORE; /* /dev/null */
  }
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&e->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&e->err;
  uv_process_options_t po;
  memset(&po, 0, sizeof po);
  po.exit_cb = exit_cb;
  po.file = o->argv[0];
  po.args = o->argv;
  po.cwd = o->cwd;
  po.flags = UV_PROCESS_DETACHED; /* setsid: a time-out kills its children too */
  po.stdio_count = 3;
  po.stdio = stdio;
  int r = uv_spawn(srv->loop, &e->proc, &po);
  if (r != 0) { /* the handles are initialized all the same: close them */
    snprintf(err, errlen, "%s: %s", uv_err_name(r), uv_strerror(r));
    e->cb = NULL;
    close_all(e);
    return NULL;
  }
  e->pid = e->proc.pid;
  e->reading = READ_OUT | READ_ERR;
  if (uv_read_start((uv_stream_t *)&e->out, alloc_cb, read_cb) != 0) stop_reading(e, READ_OUT);
  if (uv_read_start((uv_stream_t *)&e->err, alloc_cb, read_cb) != 0) stop_reading(e, READ_ERR);
  if (o->timeout) uv_timer_start(&e->timer, timer_cb, o->timeout, 0);
  if (o->input_len) {
    uv_buf_t b = uv_buf_init(e->input, (unsigned)e->input_len);
    if (uv_write(&e->wreq, (uv_stream_t *)&e->in, &b, 1, write_cb) != 0) close_handle(e, &e->in);
  } else {
    close_handle(e, &e->in);
  }
  return e;
}

void hs_exec_abandon(hs_exec_t *e, int kill) {
  e->cb = NULL;
  if (!kill || e->done) return;
  kill_group(e);
  close_all(e);
}
