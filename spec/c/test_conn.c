/* test_conn.c: the socket layer (server.c, conn.c, timers.c) on a real libuv
 * loop, without Lua. The host layer is replaced by a fake event table that
 * records what it was told; the clients are plain sockets.
 *
 * Each test makes its own loop and server (listening on 127.0.0.1, port 0),
 * drives the loop with uv_run(UV_RUN_NOWAIT) in bounded loops (RUN_UNTIL,
 * run_for) so a failing test cannot hang, and ends with stop_and_close():
 * hs_server_begin_stop, the loop runs out, uv_loop_close(loop) == 0, and
 * every connection that was opened got exactly one closed event.
 *
 * This file, with the socket-layer sources, links without Lua: that the
 * hs_unit target builds at all shows the socket layer makes no Lua call.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, getsockname, shutdown */

#include "hotsock.h"
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 16  /* connections one test may open */
#define MAXF 32  /* frames one test may see */
#define MAXE 32  /* timeouts one test may see */
#define FRAME_KEEP 128

/* Steps of the loop RUN_UNTIL takes before giving up: each is one
 * non-blocking uv_run and a 0.5 ms nap, so this is several seconds. */
#define STEP_CAP 8000

/* What the fake knows of one connection. Index: its id - 1. */
typedef struct rec {
  hs_conn_t *c;          /* valid until its closed event */
  int port;              /* the client's port (c->peer_port) */
  int closed;            /* closed events it got */
  char reason[64];       /* c->reason at the first closed event */
  int drains;            /* drain events */
  size_t drain_buffered; /* hs_conn_buffered(c) at the last drain event */
} rec_t;

typedef struct tctx tctx_t;

/* One test's loop, server and everything the fake events saw. */
struct tctx {
  uv_loop_t loop;
  hs_server_t srv;
  int port; /* the listener's */
  rec_t conns[MAXC];
  int opened;
  /* frames, in order */
  char frame[MAXF][FRAME_KEEP];
  size_t frame_len[MAXF];
  uint64_t frame_id[MAXF];
  int frames;
  /* closed events, in order */
  uint64_t closed_id[MAXC];
  int closed;
  /* timeouts, in order; timeout_ret[i] is what the fake returns at call i */
  hs_timeout_kind_t timeout_kind[MAXE];
  uint64_t timeout_id[MAXE];
  int timeout_open[MAXE]; /* hs_conn_is_open when the event ran */
  int timeout_ret[MAXE];
  int timeouts;
  /* read_failed */
  int read_failed;
  char rf_why[64];
  char rf_partial[FRAME_KEEP];
  size_t rf_partial_len;
  /* the rest */
  int frame_errors, connected, before_sleep, stopping, closing, hangup;
  /* test hooks */
  void (*on_opened)(tctx_t *t, hs_conn_t *c);
  int (*on_frame)(tctx_t *t, hs_conn_t *c, const char *msg, size_t len);
  void (*on_closed)(tctx_t *t, hs_conn_t *c);
  /* scratch for the hooks */
  int closed_during_abort;  /* closed events that ran inside hs_conn_abort */
  int closed_during_again;  /* ... inside the repeated close/abort calls */
  int bs_at_abort;          /* before_sleep passes when the abort happened */
  int bs_at_closed;         /* ... when the closed event ran */
  const char *reason_after_again; /* c->reason after the repeated calls */
  int pipe_rc[2];
};

static tctx_t *ctx_of(hs_server_t *srv) { return hs_container_of(srv, tctx_t, srv); }

static rec_t *rec_of(hs_conn_t *c) {
  tctx_t *t = ctx_of(c->srv);
  if (c->id == 0 || c->id > MAXC) return NULL;
  return &t->conns[c->id - 1];
}

/* ------------------------------------------------------------------------ */
/* The fake host layer. */

static void ev_opened(hs_conn_t *c) {
  tctx_t *t = ctx_of(c->srv);
  rec_t *r = rec_of(c);
  t->opened++;
  if (r) {
    r->c = c;
    r->port = c->peer_port;
  }
  if (t->on_opened) t->on_opened(t, c);
}

static void ev_connected(hs_conn_t *c) { ctx_of(c->srv)->connected++; }

static int ev_frame(hs_conn_t *c, const hs_framer_t *f, const char *msg, size_t len) {
  tctx_t *t = ctx_of(c->srv);
  (void)f;
  if (t->frames < MAXF) {
    size_t keep = len < FRAME_KEEP ? len : FRAME_KEEP;
    memcpy(t->frame[t->frames], msg, keep);
    t->frame_len[t->frames] = len;
    t->frame_id[t->frames] = c->id;
  }
  t->frames++;
  return t->on_frame ? t->on_frame(t, c, msg, len) : 0;
}

static void ev_read_failed(hs_conn_t *c, const char *why, const char *partial, size_t n) {
  tctx_t *t = ctx_of(c->srv);
  t->read_failed++;
  snprintf(t->rf_why, sizeof t->rf_why, "%s", why);
  t->rf_partial_len = n;
  memcpy(t->rf_partial, partial, n < FRAME_KEEP ? n : FRAME_KEEP);
}

static int ev_frame_error(hs_conn_t *c, const char *why) {
  (void)why;
  ctx_of(c->srv)->frame_errors++;
  return 0;
}

static void ev_drain(hs_conn_t *c) {
  rec_t *r = rec_of(c);
  if (r) {
    r->drains++;
    r->drain_buffered = hs_conn_buffered(c);
  }
}

static int ev_timeout(hs_conn_t *c, hs_timeout_kind_t which) {
  tctx_t *t = ctx_of(c->srv);
  int ret = 0;
  if (t->timeouts < MAXE) {
    t->timeout_kind[t->timeouts] = which;
    t->timeout_id[t->timeouts] = c->id;
    t->timeout_open[t->timeouts] = hs_conn_is_open(c);
    ret = t->timeout_ret[t->timeouts];
  }
  t->timeouts++;
  return ret;
}

static void ev_closed(hs_conn_t *c) {
  tctx_t *t = ctx_of(c->srv);
  rec_t *r = rec_of(c);
  if (r) {
    if (r->closed++ == 0)
      snprintf(r->reason, sizeof r->reason, "%s", c->reason ? c->reason : "(null)");
    r->c = NULL; /* not to be touched after this event */
  }
  if (t->closed < MAXC) t->closed_id[t->closed] = c->id;
  t->closed++;
  if (t->on_closed) t->on_closed(t, c);
}

static void ev_before_sleep(hs_server_t *srv) { ctx_of(srv)->before_sleep++; }
static void ev_stopping(hs_server_t *srv) { ctx_of(srv)->stopping++; }
static void ev_hangup(hs_server_t *srv) { ctx_of(srv)->hangup++; }
static void ev_closing(hs_server_t *srv) { ctx_of(srv)->closing++; }

static const hs_events_t fake_events = {
    .opened = ev_opened,
    .connected = ev_connected,
    .frame = ev_frame,
    .read_failed = ev_read_failed,
    .frame_error = ev_frame_error,
    .drain = ev_drain,
    .timeout = ev_timeout,
    .closed = ev_closed,
    .before_sleep = ev_before_sleep,
    .stopping = ev_stopping,
    .hangup = ev_hangup,
    .closing = ev_closing,
};

/* ------------------------------------------------------------------------ */
/* Loop and server. */

static void nap(void) {
  struct timespec ts = {0, 500 * 1000};
  nanosleep(&ts, NULL);
}

static void step(tctx_t *t) {
  uv_run(&t->loop, UV_RUN_NOWAIT);
  nap();
}

/* Run the loop until cond holds, at most STEP_CAP steps; fail if it never did. */
#define RUN_UNTIL(t, cond)                                                     \
  do {                                                                         \
    for (int step_ = 0; !(cond) && step_ < STEP_CAP; step_++) step(t);         \
    ASSERT_TRUE(cond);                                                         \
  } while (0)

/* Run the loop for about ms milliseconds (for "nothing more happens"). */
static void run_for(tctx_t *t, uint64_t ms) {
  uint64_t end = uv_hrtime() + ms * 1000000u;
  for (int i = 0; uv_hrtime() < end && i < STEP_CAP; i++) step(t);
}

/* A fresh loop and a server on it, listening on 127.0.0.1 with an
 * ephemeral port, line framing, no timeouts. Tests change srv.limits before
 * their clients connect (a connection copies them when accepted). */
static tctx_t *setup(void) {
  signal(SIGPIPE, SIG_IGN); /* a write to a gone peer is an error, not a signal */
  tctx_t *t = calloc(1, sizeof *t);
  ASSERT_NOT_NULL(t);
  ASSERT_EQ(uv_loop_init(&t->loop), 0);
  memset(&t->srv, 0, sizeof t->srv); /* srv.lua too: the socket layer reads only lua.current */
  hs_limits_t *l = &t->srv.limits;
  l->max_clients = 100;
  l->max_frame = 64 * 1024;
  l->max_inbuf = 1024 * 1024;
  l->max_outbuf = 64 * 1024 * 1024;
  l->low_water = 16 * 1024;
  l->high_water = 64 * 1024;
  l->backlog = 64;
  l->drain_timeout = 2000;
  memset(&l->timeouts, 0, sizeof l->timeouts); /* all off */
  hs_framer_line(&t->srv.framer);
  ASSERT_EQ(hs_server_init(&t->srv, &t->loop, &fake_events), 0);
  /* No hs_server_signals: a server without signal handling still stops. */
  t->srv.log_level = HS_LOG_ERROR; /* the expected closes and timeouts log at info/warn */
  ASSERT_EQ(hs_server_listen(&t->srv, "127.0.0.1:0", NULL), 0);
  ASSERT_NOT_NULL(t->srv.listeners);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  ASSERT_EQ(uv_tcp_getsockname(&t->srv.listeners->h.tcp, (struct sockaddr *)&ss, &len), 0);
  t->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  ASSERT_GT(t->port, 0);
  return t;
}

/* Stop the server, run the loop until it ends, and check that it closes
 * cleanly and that every connection opened got exactly one closed event. */
static void stop_and_close(tctx_t *t) {
  hs_server_begin_stop(&t->srv, "test");
  int alive = 1;
  for (int i = 0; alive && i < STEP_CAP; i++) {
    alive = uv_run(&t->loop, UV_RUN_NOWAIT);
    if (alive) nap();
  }
  ASSERT_EQ(alive, 0);
  ASSERT_EQ(t->stopping, 1);
  ASSERT_EQ(t->closing, 1);
  ASSERT_TRUE(TAILQ_EMPTY(&t->srv.conns)); /* every connection freed */
  ASSERT_EQ(t->srv.stats.active, 0);
  ASSERT_EQ(uv_loop_close(&t->loop), 0);
  for (int i = 0; i < t->opened && i < MAXC; i++) ASSERT_EQ(t->conns[i].closed, 1);
  ASSERT_EQ(t->closed, t->opened);
  hs_server_free(&t->srv);
  free(t);
}

/* ------------------------------------------------------------------------ */
/* Clients: plain sockets, connected blocking (the kernel completes the
 * handshake from the listen backlog), then non-blocking. */

static int client_port(int fd) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  return ntohs(a.sin_port);
}

/* rcvbuf > 0 sets SO_RCVBUF before connecting (a small window). */
static int client_connect_buf(tctx_t *t, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  if (rcvbuf > 0) ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)t->port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  int fl = fcntl(fd, F_GETFL);
  ASSERT_GE(fl, 0);
  ASSERT_EQ(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
  return fd;
}

static int client_connect(tctx_t *t) { return client_connect_buf(t, 0); }

static void client_send(int fd, const char *s) {
  size_t n = strlen(s);
  ssize_t w = write(fd, s, n);
  ASSERT_EQ(w, (ssize_t)n);
}

static rec_t *rec_for_port(tctx_t *t, int port) {
  for (int i = 0; i < t->opened && i < MAXC; i++)
    if (t->conns[i].port == port) return &t->conns[i];
  return NULL;
}

/* The server's side of the client fd, once accepted and opened. */
static hs_conn_t *conn_for(tctx_t *t, int fd) {
  int port = client_port(fd);
  RUN_UNTIL(t, rec_for_port(t, port) != NULL);
  hs_conn_t *c = rec_for_port(t, port)->c;
  ASSERT_NOT_NULL(c);
  return c;
}

/* Append what fd has for reading now to buf (which holds *len of cap);
 * returns -errno on an error, 0 at EOF, else 1. */
static int client_pull(int fd, char *buf, size_t *len, size_t cap) {
  for (;;) {
    if (*len >= cap) return 1;
    ssize_t r = read(fd, buf + *len, cap - *len);
    if (r > 0) {
      *len += (size_t)r;
      continue;
    }
    if (r == 0) return 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
    return -errno;
  }
}

/* The client's next read, waiting up to 2 s for it: 0 is EOF (a FIN),
 * -ECONNRESET a reset. Bytes that arrive first are skipped. */
static int client_end(int fd) {
  char buf[4096];
  for (int i = 0; i < 100; i++) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 2000) <= 0) return 1; /* nothing came */
    ssize_t r = read(fd, buf, sizeof buf);
    if (r == 0) return 0;
    if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -errno;
  }
  return 1;
}

/* ------------------------------------------------------------------------ */
/* 1. Line framing on a real socket. */

TEST(conn_line_frames_in_order) {
  tctx_t *t = setup();
  int fd = client_connect(t);
  hs_conn_t *c = conn_for(t, fd);
  client_send(fd, "a\nbb\r\nccc");
  RUN_UNTIL(t, t->frames >= 2);
  RUN_UNTIL(t, c->bytes_in == 9);
  run_for(t, 50); /* "ccc" has no terminator yet: it must wait */
  ASSERT_EQ(t->frames, 2);
  client_send(fd, "\n");
  RUN_UNTIL(t, t->frames >= 3);
  run_for(t, 20);
  ASSERT_EQ(t->frames, 3);
  ASSERT_MEM_STR(t->frame[0], t->frame_len[0], "a");
  ASSERT_MEM_STR(t->frame[1], t->frame_len[1], "bb"); /* the CR is stripped */
  ASSERT_MEM_STR(t->frame[2], t->frame_len[2], "ccc");
  for (int i = 0; i < 3; i++) ASSERT_EQ(t->frame_id[i], c->id);
  ASSERT_EQ(t->closed, 0);
  ASSERT_TRUE(hs_conn_is_open(c));
  stop_and_close(t);
  ASSERT_EQ(client_end(fd), 0);
  close(fd);
}

/* ------------------------------------------------------------------------ */
/* 2. A close is queued: the closed event runs once, later, from the
 * before-sleep pass, with the first reason; repeated closes change nothing. */

static int frame_abort_self(tctx_t *t, hs_conn_t *c, const char *msg, size_t len) {
  (void)msg;
  (void)len;
  int before = t->closed;
  t->bs_at_abort = t->before_sleep;
  hs_conn_abort(c, "x");
  t->closed_during_abort = t->closed - before;
  before = t->closed;
  hs_conn_close(c, "y");
  hs_conn_abort(c, "z");
  hs_conn_close(c, "w");
  t->closed_during_again = t->closed - before;
  t->reason_after_again = c->reason;
  return -1;
}

static void closed_close_again(tctx_t *t, hs_conn_t *c) {
  t->bs_at_closed = t->before_sleep;
  hs_conn_close(c, "again");
  hs_conn_abort(c, "again");
}

TEST(conn_closed_once_from_before_sleep) {
  tctx_t *t = setup();
  t->on_frame = frame_abort_self;
  t->on_closed = closed_close_again;
  int fd = client_connect(t);
  hs_conn_t *c = conn_for(t, fd);
  uint64_t id = c->id;
  client_send(fd, "m\nn\n");
  RUN_UNTIL(t, t->closed >= 1);
  run_for(t, 50);
  ASSERT_EQ(t->frames, 1); /* "n" is not delivered to a connection that closed */
  ASSERT_MEM_STR(t->frame[0], t->frame_len[0], "m");
  ASSERT_EQ(t->closed_during_abort, 0); /* queued, not run inside hs_conn_abort */
  ASSERT_EQ(t->closed_during_again, 0);
  ASSERT_NOT_NULL(t->reason_after_again);
  ASSERT_TRUE(strcmp(t->reason_after_again, "x") == 0);
  ASSERT_GT(t->bs_at_closed, t->bs_at_abort); /* a before-sleep pass came between */
  ASSERT_EQ(t->closed, 1);
  ASSERT_EQ(t->conns[id - 1].closed, 1);
  ASSERT_TRUE(strcmp(t->conns[id - 1].reason, "x") == 0);
  ASSERT_EQ(client_end(fd), -ECONNRESET); /* an abort resets */
  stop_and_close(t); /* and no second closed event on the way out */
  close(fd);
}

/* ------------------------------------------------------------------------ */
/* 3. Closed events come in the order the closes happened. */

static int frame_abort_other_close_self(tctx_t *t, hs_conn_t *c, const char *msg,
                                        size_t len) {
  (void)msg;
  (void)len;
  /* The other live connection: the one opened after this one. */
  for (int i = 0; i < t->opened && i < MAXC; i++) {
    hs_conn_t *o = t->conns[i].c;
    if (o && o != c) hs_conn_abort(o, "aborted by A");
  }
  hs_conn_close(c, "closed by A");
  return -1;
}

TEST(conn_closed_in_order_of_closes) {
  tctx_t *t = setup();
  int fa = client_connect(t);
  hs_conn_t *a = conn_for(t, fa);
  int fb = client_connect(t);
  hs_conn_t *b = conn_for(t, fb);
  uint64_t ida = a->id, idb = b->id;
  ASSERT_LT(ida, idb); /* A is first on the server's list: order by list would be A, B */
  t->on_frame = frame_abort_other_close_self;
  client_send(fa, "go\n");
  RUN_UNTIL(t, t->closed >= 2);
  run_for(t, 50);
  ASSERT_EQ(t->closed, 2);
  ASSERT_EQ(t->closed_id[0], idb);
  ASSERT_EQ(t->closed_id[1], ida);
  ASSERT_EQ(t->conns[ida - 1].closed, 1);
  ASSERT_EQ(t->conns[idb - 1].closed, 1);
  ASSERT_TRUE(strcmp(t->conns[idb - 1].reason, "aborted by A") == 0);
  ASSERT_TRUE(strcmp(t->conns[ida - 1].reason, "closed by A") == 0);
  ASSERT_EQ(client_end(fa), 0); /* a close sends a FIN */
  ASSERT_EQ(client_end(fb), -ECONNRESET);
  stop_and_close(t);
  close(fa);
  close(fb);
}

/* ------------------------------------------------------------------------ */
/* 4. Drain: after output went above low_water, the drain event runs once
 * it fell back to low_water. */

#define BIG (16u * 1024 * 1024) /* more than loopback socket buffers hold */

static char pattern_byte(size_t i) { return (char)('a' + (i * 7 + i / 251) % 26); }

TEST(conn_drain_after_output_fell) {
  tctx_t *t = setup();
  t->srv.limits.low_water = 4096;
  int fd = client_connect_buf(t, 64 * 1024);
  hs_conn_t *c = conn_for(t, fd);
  uint64_t id = c->id;
  /* Output that never went above low_water: no drain event. */
  char small[16];
  size_t slen = 0;
  ASSERT_EQ(hs_conn_send(c, "small\n", 6), 0);
  RUN_UNTIL(t, (client_pull(fd, small, &slen, sizeof small), slen >= 6));
  ASSERT_MEM_STR(small, slen, "small\n");
  run_for(t, 20);
  ASSERT_EQ(t->conns[id - 1].drains, 0);
  char *big = malloc(BIG);
  ASSERT_NOT_NULL(big);
  for (size_t i = 0; i < BIG; i++) big[i] = pattern_byte(i);
  ASSERT_EQ(hs_conn_send(c, big, BIG), 0);
  free(big);
  ASSERT_EQ(hs_conn_check_outbuf(c), 0);
  /* The client does not read: the output stays above low_water, no drain. */
  run_for(t, 100);
  ASSERT_TRUE(hs_conn_is_open(c));
  ASSERT_GT(hs_conn_buffered(c), t->srv.limits.low_water);
  ASSERT_EQ(t->conns[id - 1].drains, 0);
  /* Now it reads everything. */
  char *buf = malloc(256 * 1024);
  ASSERT_NOT_NULL(buf);
  size_t total = 0, bad_at = SIZE_MAX;
  for (int i = 0; total < BIG && i < 200000; i++) {
    size_t len = 0;
    int r = client_pull(fd, buf, &len, 256 * 1024);
    for (size_t k = 0; k < len && bad_at == SIZE_MAX; k++)
      if (buf[k] != pattern_byte(total + k)) bad_at = total + k;
    total += len;
    if (r <= 0) break;
    uv_run(&t->loop, UV_RUN_NOWAIT);
    if (len == 0) nap();
  }
  free(buf);
  ASSERT_EQ(total, (size_t)BIG);
  ASSERT_EQ(bad_at, SIZE_MAX);
  RUN_UNTIL(t, t->conns[id - 1].drains >= 1);
  run_for(t, 50);
  ASSERT_EQ(t->conns[id - 1].drains, 1);
  ASSERT_LE(t->conns[id - 1].drain_buffered, t->srv.limits.low_water);
  /* Small output again: it stays below low_water, so no second drain. */
  ASSERT_EQ(hs_conn_send(c, "again\n", 6), 0);
  run_for(t, 50);
  ASSERT_EQ(hs_conn_buffered(c), 0);
  ASSERT_EQ(t->conns[id - 1].drains, 1);
  ASSERT_EQ(t->closed, 0);
  stop_and_close(t);
  ASSERT_EQ(client_end(fd), 0);
  close(fd);
}

/* ------------------------------------------------------------------------ */
/* 5. Timeouts. */

TEST(conn_frame_timeout) {
  tctx_t *t = setup();
  t->srv.limits.timeouts.frame = 100;
  t->timeout_ret[0] = 1; /* the first time the host handles it: the conn stays */
  int fd = client_connect(t);
  hs_conn_t *c = conn_for(t, fd);
  uint64_t id = c->id;
  client_send(fd, "abc"); /* a frame begun, never finished */
  RUN_UNTIL(t, t->closed >= 1);
  run_for(t, 50);
  ASSERT_EQ(t->frames, 0);
  ASSERT_EQ(t->timeouts, 2);
  ASSERT_EQ(t->timeout_kind[0], HS_TIMEOUT_FRAME);
  ASSERT_EQ(t->timeout_kind[1], HS_TIMEOUT_FRAME);
  ASSERT_EQ(t->timeout_id[0], id);
  ASSERT_EQ(t->timeout_id[1], id);
  ASSERT_EQ(t->timeout_open[1], 1); /* returning 1 kept it open */
  ASSERT_EQ(t->closed, 1);
  ASSERT_TRUE(strcmp(t->conns[id - 1].reason, "frame timeout") == 0);
  ASSERT_EQ(client_end(fd), 0); /* a timeout closes, it does not reset */
  stop_and_close(t);
  close(fd);
}

TEST(conn_first_byte_timeout) {
  tctx_t *t = setup();
  t->srv.limits.timeouts.first_byte = 100;
  int quiet = client_connect(t);
  int talker = client_connect(t);
  client_send(talker, "x"); /* one byte, no frame */
  uint64_t qid = conn_for(t, quiet)->id;
  uint64_t tid = conn_for(t, talker)->id;
  RUN_UNTIL(t, t->conns[qid - 1].closed >= 1);
  run_for(t, 300); /* well past the talker's first_byte deadline too */
  ASSERT_EQ(t->timeouts, 1);
  ASSERT_EQ(t->timeout_kind[0], HS_TIMEOUT_FIRST_BYTE);
  ASSERT_EQ(t->timeout_id[0], qid);
  ASSERT_TRUE(strcmp(t->conns[qid - 1].reason, "first_byte timeout") == 0);
  ASSERT_EQ(t->conns[tid - 1].closed, 0);
  ASSERT_TRUE(hs_conn_is_open(t->conns[tid - 1].c));
  ASSERT_EQ(t->closed, 1);
  ASSERT_EQ(client_end(quiet), 0);
  stop_and_close(t);
  close(quiet);
  close(talker);
}

/* ------------------------------------------------------------------------ */
/* 6. A stop reaches every connection, and they end with a FIN. */

TEST(conn_stop_closes_every_connection) {
  tctx_t *t = setup();
  int fd[5];
  for (int i = 0; i < 5; i++) {
    fd[i] = client_connect(t);
    if (i < 3) client_send(fd[i], "hi\n"); /* some talk, some do not */
  }
  for (int i = 0; i < 5; i++) conn_for(t, fd[i]);
  RUN_UNTIL(t, t->frames >= 3); /* all input read: a close then sends no reset */
  ASSERT_EQ(t->opened, 5);
  ASSERT_EQ(t->closed, 0);
  ASSERT_EQ(t->stopping, 0);
  hs_server_begin_stop(&t->srv, "test");
  ASSERT_EQ(t->stopping, 1);
  ASSERT_EQ(t->closed, 0); /* queued: delivered from the before-sleep pass */
  RUN_UNTIL(t, t->closed >= 5);
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(t->conns[i].closed, 1);
    ASSERT_TRUE(strcmp(t->conns[i].reason, "shutdown") == 0);
  }
  stop_and_close(t); /* begin_stop again is a no-op; the loop ends, closes clean */
  for (int i = 0; i < 5; i++) {
    ASSERT_EQ(client_end(fd[i]), 0); /* EOF, not a reset */
    close(fd[i]);
  }
}

/* ------------------------------------------------------------------------ */
/* 7. A stop with two connections piped to each other. */

static void opened_pipe_pair(tctx_t *t, hs_conn_t *c) {
  if (t->opened != 2) return;
  hs_conn_t *first = t->conns[0].c;
  t->pipe_rc[0] = hs_conn_pipe(first, c);
  t->pipe_rc[1] = hs_conn_pipe(c, first);
}

TEST(conn_stop_with_pipe) {
  tctx_t *t = setup();
  t->pipe_rc[0] = t->pipe_rc[1] = -12345;
  t->on_opened = opened_pipe_pair;
  int fa = client_connect(t);
  conn_for(t, fa);
  int fb = client_connect(t);
  conn_for(t, fb);
  ASSERT_EQ(t->pipe_rc[0], 0);
  ASSERT_EQ(t->pipe_rc[1], 0);
  /* The pipe carries bytes both ways, with no frame event. */
  char buf[64];
  size_t len = 0;
  client_send(fa, "ping\n");
  RUN_UNTIL(t, (client_pull(fb, buf, &len, sizeof buf), len >= 5));
  ASSERT_MEM_STR(buf, len, "ping\n");
  len = 0;
  client_send(fb, "pong");
  RUN_UNTIL(t, (client_pull(fa, buf, &len, sizeof buf), len >= 4));
  ASSERT_MEM_STR(buf, len, "pong");
  ASSERT_EQ(t->frames, 0);
  stop_and_close(t); /* both closed once, the loop ends */
  ASSERT_EQ(client_end(fa), 0);
  ASSERT_EQ(client_end(fb), 0);
  close(fa);
  close(fb);
}

/* ------------------------------------------------------------------------ */
/* 8. Pull mode: frames come only when a read asks for them. */

static void opened_pull(tctx_t *t, hs_conn_t *c) {
  (void)t;
  c->flags |= HS_CONN_PULL;
}

TEST(conn_pull_mode) {
  tctx_t *t = setup();
  t->on_opened = opened_pull;
  hs_framer_t line;
  hs_framer_line(&line);
  const char *msg = NULL, *why = NULL;
  size_t len = 0;
  int fd = client_connect(t);
  hs_conn_t *c = conn_for(t, fd);
  /* Nothing sent yet. */
  ASSERT_EQ(hs_conn_read(c, &line, &msg, &len, &why), HS_FRAME_MORE);
  /* A whole line arrives while no read is wanted: it is kept, not delivered. */
  client_send(fd, "one\n");
  RUN_UNTIL(t, c->bytes_in == 4);
  run_for(t, 50);
  ASSERT_EQ(t->frames, 0);
  ASSERT_EQ(hs_conn_read(c, &line, &msg, &len, &why), HS_FRAME_OK);
  ASSERT_MEM_STR(msg, len, "one");
  /* Nothing more buffered: want the next one; it comes as a frame event,
   * and only it (the line after waits for the next read). */
  ASSERT_EQ(hs_conn_read(c, &line, &msg, &len, &why), HS_FRAME_MORE);
  hs_conn_want(c);
  client_send(fd, "two\nthree\n");
  RUN_UNTIL(t, t->frames >= 1);
  RUN_UNTIL(t, c->bytes_in == 14);
  run_for(t, 50);
  ASSERT_EQ(t->frames, 1);
  ASSERT_MEM_STR(t->frame[0], t->frame_len[0], "two");
  ASSERT_EQ(hs_conn_read(c, &line, &msg, &len, &why), HS_FRAME_OK);
  ASSERT_MEM_STR(msg, len, "three");
  /* A wanted read that meets EOF fails with "closed" and the partial bytes. */
  ASSERT_EQ(hs_conn_read(c, &line, &msg, &len, &why), HS_FRAME_MORE);
  hs_conn_want(c);
  client_send(fd, "par");
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  RUN_UNTIL(t, t->read_failed >= 1);
  run_for(t, 50);
  ASSERT_EQ(t->read_failed, 1);
  ASSERT_TRUE(strcmp(t->rf_why, "closed") == 0);
  ASSERT_MEM_STR(t->rf_partial, t->rf_partial_len, "par");
  ASSERT_EQ(t->frames, 1);
  ASSERT_EQ(t->closed, 0); /* a pull reader decides for itself */
  ASSERT_TRUE(hs_conn_is_open(c));
  stop_and_close(t);
  ASSERT_EQ(client_end(fd), 0);
  close(fd);
}

/* A read wanted when what it needs is here already (a whole frame, or the
 * peer's EOF) is delivered without a further read from the socket. */
TEST(conn_want_delivers_what_is_buffered) {
  tctx_t *t = setup();
  t->on_opened = opened_pull;
  hs_framer_t line;
  hs_framer_line(&line);
  const char *msg = NULL, *why = NULL;
  size_t len = 0;
  int fd = client_connect(t);
  hs_conn_t *c = conn_for(t, fd);
  client_send(fd, "one\ntw");
  ASSERT_EQ(shutdown(fd, SHUT_WR), 0);
  RUN_UNTIL(t, (c->flags & HS_CONN_EOF) != 0);
  ASSERT_EQ(t->frames, 0);
  hs_conn_want(c); /* "one" is buffered: it comes as a frame event */
  RUN_UNTIL(t, t->frames >= 1);
  ASSERT_MEM_STR(t->frame[0], t->frame_len[0], "one");
  ASSERT_EQ(t->read_failed, 0);
  hs_conn_want(c); /* only EOF and "tw" are left: the read fails at once */
  RUN_UNTIL(t, t->read_failed >= 1);
  ASSERT_TRUE(strcmp(t->rf_why, "closed") == 0);
  ASSERT_MEM_STR(t->rf_partial, t->rf_partial_len, "tw");
  ASSERT_EQ(hs_conn_read(c, &line, &msg, &len, &why), HS_FRAME_MORE);
  stop_and_close(t);
  close(fd);
}

const hs_test_t hs_conn_tests[] = {
    TEST_ENTRY(conn_line_frames_in_order),
    TEST_ENTRY(conn_closed_once_from_before_sleep),
    TEST_ENTRY(conn_closed_in_order_of_closes),
    TEST_ENTRY(conn_drain_after_output_fell),
    TEST_ENTRY(conn_frame_timeout),
    TEST_ENTRY(conn_first_byte_timeout),
    TEST_ENTRY(conn_stop_closes_every_connection),
    TEST_ENTRY(conn_stop_with_pipe),
    TEST_ENTRY(conn_pull_mode),
    TEST_ENTRY(conn_want_delivers_what_is_buffered),
    TEST_END,
};
