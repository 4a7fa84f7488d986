/* server.c: listeners (parse, bind, listen, accept), the per-iteration work
 * done before the loop sleeps (deliver resumed input, flush output), signals,
 * and the orderly stop. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>

#include "hotsock.h"

#define RBUF_SIZE (64 * 1024)

static void prepare_cb(uv_prepare_t *h);
static void idle_cb(uv_idle_t *h) { (void)h; }

int hs_server_init(hs_server_t *srv, uv_loop_t *loop) {
  srv->loop = loop;
  srv->rbuf_size = RBUF_SIZE;
  srv->rbuf = malloc(RBUF_SIZE);
  if (!srv->rbuf) return UV_ENOMEM;
  hs_pool_init(&srv->pool, 256);
  uv_prepare_init(loop, &srv->prepare);
  uv_prepare_start(&srv->prepare, prepare_cb);
  uv_unref((uv_handle_t *)&srv->prepare);
  uv_idle_init(loop, &srv->idle);
  uv_timer_init(loop, &srv->drain_timer);
  uv_unref((uv_handle_t *)&srv->drain_timer);
  return 0;
}

void hs_server_mark_dirty(hs_server_t *srv, hs_conn_t *c) {
  if (c->flags & (HS_CONN_DIRTY | HS_CONN_FINISHED)) return;
  c->flags |= HS_CONN_DIRTY;
  c->dirty_next = srv->dirty;
  srv->dirty = c;
}

void hs_server_mark_pending(hs_server_t *srv, hs_conn_t *c) {
  if (c->flags & (HS_CONN_PENDING | HS_CONN_FINISHED)) return;
  c->flags |= HS_CONN_PENDING;
  c->pending_next = srv->pending;
  srv->pending = c;
  uv_idle_start(&srv->idle, idle_cb); /* do not sleep before it is handled */
}

/* A rollback is kept apart from the other triggers: a SIGHUP or a save in
 * the same loop turn must not replace it. Both run, the rollback first. */
void hs_server_request_reload(hs_server_t *srv, const char *trigger) {
  if (strcmp(trigger, "rollback") == 0)
    srv->rollback_pending = 1;
  else
    srv->reload_trigger = trigger;
  uv_idle_start(&srv->idle, idle_cb);
}

/* Before the loop sleeps: reload if asked, deliver input of connections that
 * were resumed or re-framed, then write out everything gathered during this
 * iteration, one write per connection. */
static void prepare_cb(uv_prepare_t *h) {
  hs_server_t *srv = hs_container_of(h, hs_server_t, prepare);
  if (srv->rollback_pending) {
    srv->rollback_pending = 0;
    hs_script_reload(srv, "rollback");
  }
  if (srv->reload_trigger) {
    const char *t = srv->reload_trigger;
    srv->reload_trigger = NULL;
    hs_script_reload(srv, t);
  }
  hs_conn_t *list = srv->pending;
  srv->pending = NULL;
  while (list) {
    hs_conn_t *c = list;
    list = c->pending_next;
    c->flags &= ~HS_CONN_PENDING;
    hs_conn_dispatch(c);
  }
  while (srv->dirty) {
    hs_conn_t *c = srv->dirty;
    srv->dirty = c->dirty_next;
    c->flags &= ~HS_CONN_DIRTY;
    hs_conn_flush(c);
  }
  if (!srv->pending && !srv->reload_trigger && !srv->rollback_pending)
    uv_idle_stop(&srv->idle);
}

/* Format a socket address as "ip:port" or "[v6]:port". */
static void format_addr(const struct sockaddr *sa, char *out, size_t outlen, char *ip,
                        size_t iplen, int *port) {
  char host[INET6_ADDRSTRLEN] = "?";
  int p = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    uv_ip4_name(in, host, sizeof host);
    p = ntohs(in->sin_port);
    snprintf(out, outlen, "%s:%d", host, p);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(in6, host, sizeof host);
    p = ntohs(in6->sin6_port);
    snprintf(out, outlen, "[%s]:%d", host, p);
  } else {
    snprintf(out, outlen, "?");
  }
  if (ip) snprintf(ip, iplen, "%s", host);
  if (port) *port = p;
}

/* True at most once a second per *last: for log lines that a flood of
 * clients would otherwise repeat. */
static int log_due(hs_server_t *srv, uint64_t *last) {
  uint64_t now = uv_now(srv->loop);
  if (*last != 0 && now - *last < 1000) return 0;
  *last = now;
  return 1;
}

/* Whether the descriptor table is full now that stream's descriptor was
 * accepted. Left full, the next accept fails with EMFILE and libuv's spare
 * descriptor trick drops those clients without telling anyone; refusing the
 * client that took the last descriptor keeps one free, so every client the
 * server cannot take is counted and logged here instead, and service comes
 * back as soon as any descriptor is released. */
static int out_of_descriptors(uv_stream_t *stream) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)stream, &fd) != 0) return 0;
  int probe = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (probe >= 0) {
    close(probe);
    return 0;
  }
  return errno == EMFILE || errno == ENFILE;
}

static void on_connection(uv_stream_t *server, int status) {
  hs_listener_t *l = (hs_listener_t *)server;
  hs_server_t *srv = l->srv;
  if (status < 0) {
    /* libuv's spare descriptor was not there to drop the pending client
     * (or another accept error): say so at most once a second. */
    if (log_due(srv, &srv->last_emfile_log))
      hs_log(srv, HS_LOG_ERROR, "accept on %s failed: %s", l->name, uv_strerror(status));
    return;
  }
  if (srv->stopping) return;
  hs_conn_t *c = hs_conn_new(srv, l);
  if (!c) {
    hs_log(srv, HS_LOG_ERROR, "out of memory accepting a client on %s", l->name);
    return;
  }
  if (uv_accept(server, &c->h.stream) != 0) {
    hs_conn_discard(c); /* nothing to accept after all */
    return;
  }
  if (srv->stats.active >= srv->limits.max_clients) {
    /* Over max_clients: accepted and closed at once, without the script. */
    srv->stats.rejected++;
    if (log_due(srv, &srv->last_reject_log))
      hs_log(srv, HS_LOG_WARN, "max_clients (%zu) reached; rejecting new clients",
             srv->limits.max_clients);
    hs_conn_discard(c);
    return;
  }
  if (out_of_descriptors(&c->h.stream)) {
    srv->stats.rejected++;
    if (log_due(srv, &srv->last_emfile_log))
      hs_log(srv, HS_LOG_ERROR,
             "out of file descriptors (%s); rejecting new clients until some close",
             uv_strerror(UV_EMFILE));
    hs_conn_discard(c);
    return;
  }
  if (!l->is_unix) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
      format_addr((struct sockaddr *)&ss, c->peer, sizeof c->peer, c->peer_ip,
                  sizeof c->peer_ip, &c->peer_port);
    len = sizeof ss;
    if (uv_tcp_getsockname(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
      format_addr((struct sockaddr *)&ss, c->local, sizeof c->local, NULL, 0, NULL);
    uv_tcp_nodelay(&c->h.tcp, 1);
  }
  hs_log_conn(srv, c, HS_LOG_DEBUG, "connected from %s on %s",
              l->is_unix ? l->path : c->peer, l->name);
  hs_conn_start(c);
}

/* Parse "host:port", "[v6]:port", ":port" or a bare port into a sockaddr. */
static int parse_inet(const char *addr, struct sockaddr_storage *ss, char *err,
                      size_t errlen) {
  char host[256];
  const char *port_s;
  if (addr[0] == '[') {
    const char *end = strchr(addr, ']');
    if (!end || end[1] != ':') {
      snprintf(err, errlen, "bad address \"%s\" (expected [v6]:port)", addr);
      return -1;
    }
    size_t hl = (size_t)(end - addr - 1);
    if (hl >= sizeof host) hl = sizeof host - 1;
    memcpy(host, addr + 1, hl);
    host[hl] = 0;
    port_s = end + 2;
  } else {
    const char *colon = strrchr(addr, ':');
    if (!colon) {
      snprintf(host, sizeof host, "127.0.0.1");
      port_s = addr;
    } else {
      size_t hl = (size_t)(colon - addr);
      if (hl >= sizeof host) hl = sizeof host - 1;
      memcpy(host, addr, hl);
      host[hl] = 0;
      port_s = colon + 1;
      if (hl == 0) snprintf(host, sizeof host, "::");
    }
  }
  char *endp;
  long port = strtol(port_s, &endp, 10);
  if (!*port_s || *endp || port < 0 || port > 65535) {
    snprintf(err, errlen, "bad port in \"%s\"", addr);
    return -1;
  }
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0) return 0;
  /* A name: resolve it now, synchronously, at start-up. */
  uv_getaddrinfo_t req;
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  int r = uv_getaddrinfo(uv_default_loop(), &req, NULL, host, NULL, &hints);
  if (r != 0 || !req.addrinfo) {
    snprintf(err, errlen, "cannot resolve \"%s\": %s", host, uv_strerror(r));
    return -1;
  }
  memcpy(ss, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
  if (ss->ss_family == AF_INET) ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
  else ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
  uv_freeaddrinfo(req.addrinfo);
  return 0;
}

/* A unix socket path left by a server that is gone (nobody accepts on it). */
static int stale_unix_socket(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) return 0;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_un un;
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;
  snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
  int r = connect(fd, (struct sockaddr *)&un, sizeof un);
  int e = errno;
  close(fd);
  return r != 0 && e == ECONNREFUSED;
}

static void listener_close_cb(uv_handle_t *h) { free(h->data); }

/* Bind and listen on addr; print "listening on ..." with the real port.
 * Returns 0, or a negative libuv error (logged). */
int hs_server_listen(hs_server_t *srv, const char *addr) {
  char err[512];
  hs_listener_t *l = calloc(1, sizeof *l);
  if (!l) return UV_ENOMEM;
  l->srv = srv;
  int r;
  if (strncmp(addr, "unix:", 5) == 0) {
    const char *path = addr + 5;
    if (!*path || strlen(path) >= sizeof l->path) {
      hs_log(srv, HS_LOG_ERROR, "bad unix socket path in \"%s\"", addr);
      free(l);
      return UV_EINVAL;
    }
    l->is_unix = 1;
    snprintf(l->path, sizeof l->path, "%s", path);
    snprintf(l->name, sizeof l->name, "unix:%s", path);
    uv_pipe_init(srv->loop, &l->h.pipe, 0);
    if (stale_unix_socket(path)) unlink(path);
    r = uv_pipe_bind(&l->h.pipe, path);
  } else {
    struct sockaddr_storage ss;
    if (parse_inet(addr, &ss, err, sizeof err) != 0) {
      hs_log(srv, HS_LOG_ERROR, "%s", err);
      free(l);
      return UV_EINVAL;
    }
    uv_tcp_init(srv->loop, &l->h.tcp);
    r = uv_tcp_bind(&l->h.tcp, (struct sockaddr *)&ss, 0);
    if (r == 0) {
      int len = sizeof ss;
      uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &len);
      format_addr((struct sockaddr *)&ss, l->name, sizeof l->name, NULL, 0, NULL);
    }
  }
  if (r == 0) r = uv_listen(&l->h.stream, srv->limits.backlog, on_connection);
  if (r != 0) {
    hs_log(srv, HS_LOG_ERROR, "cannot listen on %s: %s", addr, uv_strerror(r));
    l->path[0] = 0; /* not ours to unlink */
    l->h.handle.data = l;
    uv_close(&l->h.handle, listener_close_cb);
    return r;
  }
  l->next = srv->listeners;
  srv->listeners = l;
  /* The contract: one line per listener on stderr, whatever the log level. */
  hs_logf(HS_LOG_DEBUG, HS_LOG_INFO, 0, "listening on %s", l->name);
  return 0;
}

static void close_listeners(hs_server_t *srv) {
  while (srv->listeners) {
    hs_listener_t *l = srv->listeners;
    srv->listeners = l->next;
    if (l->is_unix && l->path[0]) unlink(l->path);
    l->h.handle.data = l;
    uv_close(&l->h.handle, listener_close_cb);
  }
}

static void walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Everything is drained (or the drain time is up): close what is left so
 * uv_run returns. */
static void close_all(hs_server_t *srv) {
  if (srv->closing_all) return;
  srv->closing_all = 1;
  hs_lhotsock_stop_timers(srv);
  close_listeners(srv);
  uv_close((uv_handle_t *)&srv->prepare, NULL);
  uv_close((uv_handle_t *)&srv->idle, NULL);
  uv_close((uv_handle_t *)&srv->drain_timer, NULL);
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
  uv_close((uv_handle_t *)&srv->sighup, NULL);
  hs_watch_stop(srv);
  uv_walk(srv->loop, walk_close, NULL);
}

static void drain_timeout_cb(uv_timer_t *t) {
  hs_server_t *srv = hs_container_of(t, hs_server_t, drain_timer);
  int n = 0;
  for (hs_conn_t *c = srv->conns; c; c = c->next) n++;
  if (n)
    hs_log(srv, HS_LOG_WARN, "drain_timeout (%llu ms) passed; dropping %d connection(s)",
           (unsigned long long)srv->limits.drain_timeout, n);
  while (srv->conns) hs_conn_abort(srv->conns, "shutdown");
}

/* Called when the last connection closed during a stop, and by the stop
 * sequence itself. */
void hs_server_stop(hs_server_t *srv) {
  if (!srv->stopping) return;
  if (srv->conns) return;
  close_all(srv);
}

/* SIGINT/SIGTERM: stop accepting, on_shutdown, close every connection after
 * its output drains (up to drain_timeout), then leave the loop. */
static void begin_stop(hs_server_t *srv, int signum) {
  srv->stopping = 1;
  hs_log(srv, HS_LOG_INFO, "%s: stopping (%llu client(s), drain_timeout %llu ms)",
         signum == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)srv->stats.active,
         (unsigned long long)srv->limits.drain_timeout);
  close_listeners(srv);
  if (hs_script_get_handler(srv, "on_shutdown")) hs_script_call(srv, NULL, 0, "on_shutdown");
  hs_lhotsock_stop_timers(srv);
  /* Closing may unlink connections: walk a stable copy of the list. */
  for (hs_conn_t *c = srv->conns, *next; c; c = next) {
    next = c->next;
    hs_conn_close(c, "shutdown");
  }
  if (srv->conns) {
    uv_timer_start(&srv->drain_timer, drain_timeout_cb, srv->limits.drain_timeout, 0);
    uv_ref((uv_handle_t *)&srv->drain_timer);
    /* prepare_cb flushes; keep it running. */
  } else {
    close_all(srv);
  }
}

static void signal_cb(uv_signal_t *h, int signum) {
  hs_server_t *srv = h->data;
  if (signum == SIGHUP) {
    hs_server_request_reload(srv, "SIGHUP");
    return;
  }
  if (srv->stopping) {
    hs_log(srv, HS_LOG_WARN, "second signal: stopping now");
    while (srv->conns) hs_conn_abort(srv->conns, "shutdown");
    close_all(srv);
    return;
  }
  begin_stop(srv, signum);
}

int hs_server_signals(hs_server_t *srv) {
  uv_signal_t *s[] = {&srv->sigint, &srv->sigterm, &srv->sighup};
  int nums[] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(srv->loop, s[i]);
    s[i]->data = srv;
    uv_signal_start(s[i], signal_cb, nums[i]);
    uv_unref((uv_handle_t *)s[i]);
  }
  return 0;
}

void hs_server_free(hs_server_t *srv) {
  free(srv->rbuf);
  srv->rbuf = NULL;
  hs_pool_free(&srv->pool);
}
