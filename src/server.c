/* server.c: listeners (parse, bind, listen, accept), the per-iteration work
 * done before the loop sleeps (deliver resumed input, flush output), signals,
 * and the orderly stop. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "hotsock.h"
#include "sd.h"
#include "tls.h"

#define RBUF_SIZE (64 * 1024)

static void prepare_cb(uv_prepare_t *h);
static void idle_cb(uv_idle_t *h) { (void)h; }

int hs_server_init(hs_server_t *srv, uv_loop_t *loop, const hs_events_t *ev) {
  srv->loop = loop;
  srv->ev = ev;
  TAILQ_INIT(&srv->conns);
  TAILQ_INIT(&srv->dirty);
  TAILQ_INIT(&srv->pending);
  TAILQ_INIT(&srv->closed);
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
  uv_timer_init(loop, &srv->grace_timer);
  uv_unref((uv_handle_t *)&srv->grace_timer);
  uv_timer_init(loop, &srv->sd_timer); /* started by hs_sd_start (sd.c) */
  uv_unref((uv_handle_t *)&srv->sd_timer);
  uv_signal_t *s[] = {&srv->sigint, &srv->sigterm, &srv->sighup, &srv->sigusr2, &srv->sigusr1};
  for (int i = 0; i < 5; i++) { /* started by hs_server_signals */
    uv_signal_init(loop, s[i]);
    s[i]->data = srv;
    uv_unref((uv_handle_t *)s[i]);
  }
  return 0;
}

void hs_server_mark_dirty(hs_server_t *srv, hs_conn_t *c) {
  if (c->flags & (HS_CONN_DIRTY | HS_CONN_FINISHED)) return;
  c->flags |= HS_CONN_DIRTY;
  TAILQ_INSERT_TAIL(&srv->dirty, c, dirty);
}

void hs_server_mark_pending(hs_server_t *srv, hs_conn_t *c) {
  if (c->flags & (HS_CONN_PENDING | HS_CONN_FINISHED)) return;
  c->flags |= HS_CONN_PENDING;
  TAILQ_INSERT_TAIL(&srv->pending, c, queue);
  hs_server_wake(srv);
}

/* Do not sleep before the before-sleep pass ran again. */
void hs_server_wake(hs_server_t *srv) {
  if (!srv->closing_all) uv_idle_start(&srv->idle, idle_cb);
}

/* Before the loop sleeps (as Redis does in beforeSleep): the host's own
 * work (reloads), then input of connections that were resumed or re-framed,
 * then the closed events in the order the closes happened, then one write
 * per connection of everything gathered in this iteration. Each step can
 * make work for the others (an on_close sends, a flush fails and closes),
 * so it goes round until all is done. */
static void prepare_cb(uv_prepare_t *h) {
  hs_server_t *srv = hs_container_of(h, hs_server_t, prepare);
  hs_conn_t *c;
  if (srv->stats_all) srv->stats_all[srv->worker_id - 1] = srv->stats; /* hs.stats("all") */
  srv->ev->before_sleep(srv);
  for (;;) {
    if ((c = TAILQ_FIRST(&srv->pending)) != NULL) {
      TAILQ_REMOVE(&srv->pending, c, queue);
      c->flags &= ~HS_CONN_PENDING;
      hs_conn_dispatch(c);
    } else if ((c = TAILQ_FIRST(&srv->closed)) != NULL) {
      hs_conn_deliver_closed(c);
    } else if ((c = TAILQ_FIRST(&srv->dirty)) != NULL) {
      TAILQ_REMOVE(&srv->dirty, c, dirty);
      c->flags &= ~HS_CONN_DIRTY;
      hs_conn_flush(c);
    } else {
      break;
    }
  }
  if (!srv->closing_all) uv_idle_stop(&srv->idle);
}

/* Format a socket address as "ip:port" or "[v6]:port". */
static void format_addr(const struct sockaddr *sa, char *out, size_t outlen, char *ip, size_t iplen,
                        int *port) {
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
  if (l->health) {
    hs_conn_health(c); /* answered by the core: never the script, nor max_clients */
    return;
  }
  if (l->admin) {
    if (out_of_descriptors(&c->h.stream)) { /* the last descriptor is for clients */
      l->rejected++;
      hs_conn_discard(c);
      return;
    }
    hs_admin_accept(c); /* likewise: never the script's, nor max_clients */
    return;
  }
  if (srv->stats.active >= srv->limits.max_clients) {
    /* Over max_clients: accepted and closed at once, without the script. */
    srv->stats.rejected++;
    l->rejected++;
    if (log_due(srv, &srv->last_reject_log))
      hs_log(srv, HS_LOG_WARN, "max_clients (%zu) reached; rejecting new clients",
             srv->limits.max_clients);
    hs_conn_discard(c);
    return;
  }
  if (out_of_descriptors(&c->h.stream)) {
    srv->stats.rejected++;
    l->rejected++;
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
      format_addr((struct sockaddr *)&ss, c->peer, sizeof c->peer, c->peer_ip, sizeof c->peer_ip,
                  &c->peer_port);
    len = sizeof ss;
    if (uv_tcp_getsockname(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0)
      format_addr((struct sockaddr *)&ss, c->local, sizeof c->local, NULL, 0, NULL);
    uv_tcp_nodelay(&c->h.tcp, 1);
  }
  if (l->tls) {
    /* The host hears of a TLS client once its handshake is done (conn.c). */
    c->tls = hs_tls_new(l->tls);
    if (!c->tls) {
      hs_log(srv, HS_LOG_ERROR, "out of memory accepting a TLS client on %s", l->name);
      hs_conn_discard(c);
      return;
    }
    c->flags |= HS_CONN_UNSEEN;
  }
  if (l->proxy) c->flags |= HS_CONN_UNSEEN | HS_CONN_PROXY_WAIT;
  if (c->flags & HS_CONN_UNSEEN) {
    /* The PROXY header and the TLS handshake must be done by first_byte,
     * else frame, from the accept. */
    uint64_t t = c->to.first_byte ? c->to.first_byte : c->to.frame;
    c->tls_deadline = t ? c->opened_at + t : 0;
  }
  hs_log_conn(srv, c, HS_LOG_DEBUG, "connected from %s on %s", l->is_unix ? l->path : c->peer,
              l->name);
  hs_conn_start(c);
}

/* Parse "host:port", "[v6]:port", ":port" or a bare port into a sockaddr. */
static int parse_inet(const char *addr, struct sockaddr_storage *ss, char *err, size_t errlen) {
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
  if (ss->ss_family == AF_INET)
    ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
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

int hs_server_tls_prepare(hs_server_t *srv, char *err, size_t errlen) {
  char why[1024];
  for (hs_listener_t *l = srv->listeners; l; l = l->next) {
    if (!l->tls) continue;
    hs_tls_ctx_unref(l->tls_next);
    l->tls_next = hs_tls_ctx_new(hs_tls_ctx_opts(l->tls), 0, why, sizeof why);
    if (!l->tls_next) {
      snprintf(err, errlen, "listener %s: %s", l->name, why);
      hs_server_tls_commit(srv, 0);
      return -1;
    }
  }
  return 0;
}

void hs_server_tls_commit(hs_server_t *srv, int ok) {
  for (hs_listener_t *l = srv->listeners; l; l = l->next) {
    if (!l->tls_next) continue;
    if (ok) {
      hs_tls_ctx_unref(l->tls);
      l->tls = l->tls_next;
    } else {
      hs_tls_ctx_unref(l->tls_next);
    }
    l->tls_next = NULL;
  }
}

/* Bind and listen on addr; print "listening on ..." with the real port.
 * tls, when not NULL, makes it a TLS listener, which holds that reference
 * from a 0 return on. Returns 0, or a negative libuv error (logged). */
static int listen_addr(hs_server_t *srv, const char *addr, struct hs_tls_ctx *tls, int quiet) {
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
  l->tls = tls;
  l->next = srv->listeners;
  srv->listeners = l;
  /* The contract: one line per listener on stderr, whatever the log level. */
  if (!quiet) hs_logf_console(HS_LOG_INFO, "listening on %s%s", l->name, tls ? " (tls)" : "");
  return 0;
}

int hs_server_listen(hs_server_t *srv, const char *addr, struct hs_tls_ctx *tls) {
  return listen_addr(srv, addr, tls, 0);
}

int hs_server_listen_quiet(hs_server_t *srv, const char *addr) {
  return listen_addr(srv, addr, NULL, 1);
}

/* Listening sockets for --workers, made by the supervisor before the
 * workers start (see hotsock.h). */
int hs_server_bind_shared(const char *addr, int n, int backlog, int *fds, char *name,
                          size_t namelen, int *is_unix, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  socklen_t sl;
  int one = 1;
  *is_unix = strncmp(addr, "unix:", 5) == 0;
  for (int i = 0; i < n; i++) fds[i] = -1;
  if (*is_unix) {
    struct sockaddr_un un;
    const char *path = addr + 5;
    memset(&un, 0, sizeof un);
    if (!*path || strlen(path) >= sizeof un.sun_path) {
      snprintf(err, errlen, "bad unix socket path in \"%s\"", addr);
      return -1;
    }
    un.sun_family = AF_UNIX;
    memcpy(un.sun_path, path, strlen(path));
    if (stale_unix_socket(path)) unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&un, sizeof un) != 0 || listen(fd, backlog) != 0) {
      snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
      if (fd >= 0) close(fd);
      return -1;
    }
    for (int i = 0; i < n; i++) fds[i] = fd; /* one socket, shared */
    snprintf(name, namelen, "unix:%s", path);
    return 0;
  }
  if (parse_inet(addr, &ss, err, errlen) != 0) return -1;
  for (int i = 0; i < n; i++) {
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one)) ||
        bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, backlog) != 0) {
      snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
      if (fd >= 0) close(fd);
      for (int j = 0; j < i; j++) close(fds[j]);
      return -1;
    }
    fds[i] = fd;
    if (i == 0) {
      /* Port 0: the others take the port the first one got. */
      sl = sizeof ss;
      getsockname(fd, (struct sockaddr *)&ss, &sl);
      format_addr((struct sockaddr *)&ss, name, namelen, NULL, 0, NULL);
    }
  }
  return 0;
}

int hs_server_listen_fd(hs_server_t *srv, int fd, int is_unix, const char *name,
                        struct hs_tls_ctx *tls) {
  hs_listener_t *l = calloc(1, sizeof *l);
  if (!l) return UV_ENOMEM;
  l->srv = srv;
  l->is_unix = is_unix;
  snprintf(l->name, sizeof l->name, "%s", name);
  /* A unix listener's path names its clients; the supervisor unlinks it. */
  if (is_unix) snprintf(l->path, sizeof l->path, "%s", name + 5);
  l->no_unlink = 1;
  int r = is_unix ? uv_pipe_init(srv->loop, &l->h.pipe, 0) : uv_tcp_init(srv->loop, &l->h.tcp);
  if (r == 0) r = is_unix ? uv_pipe_open(&l->h.pipe, fd) : uv_tcp_open(&l->h.tcp, fd);
  if (r == 0) r = uv_listen(&l->h.stream, srv->limits.backlog, on_connection);
  if (r != 0) {
    hs_log(srv, HS_LOG_ERROR, "cannot serve %s: %s", name, uv_strerror(r));
    l->h.handle.data = l;
    uv_close(&l->h.handle, listener_close_cb);
    return r;
  }
  l->tls = tls;
  l->next = srv->listeners;
  srv->listeners = l;
  hs_log(srv, HS_LOG_DEBUG, "serving %s%s", l->name, tls ? " (tls)" : "");
  return 0;
}

int hs_server_check_addr(const char *addr, char *err, size_t errlen) {
  if (strncmp(addr, "unix:", 5) == 0) {
    struct sockaddr_un un;
    size_t n = strlen(addr + 5);
    if (n == 0 || n >= sizeof un.sun_path) {
      snprintf(err, errlen, "bad unix socket path in \"%s\"", addr);
      return -1;
    }
    return 0;
  }
  struct sockaddr_storage ss;
  return parse_inet(addr, &ss, err, errlen);
}

/* Stop listening. The listeners' memory stays until hs_server_free:
 * connections still closing name them (conn.listener, a unix peer). */
static void close_listeners(hs_server_t *srv) {
  while (srv->listeners) {
    hs_listener_t *l = srv->listeners;
    srv->listeners = l->next;
    if (l->is_unix && l->path[0] && !l->no_unlink) unlink(l->path);
    uv_close(&l->h.handle, NULL);
    l->next = srv->closed_listeners;
    srv->closed_listeners = l;
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
  /* Closed events still due run now: a second signal does not wait for
   * the before-sleep pass, and no connection is left unfreed. */
  hs_conn_t *c;
  while ((c = TAILQ_FIRST(&srv->closed)) != NULL) hs_conn_deliver_closed(c);
  close_listeners(srv);
  uv_close((uv_handle_t *)&srv->prepare, NULL);
  uv_close((uv_handle_t *)&srv->idle, NULL);
  uv_close((uv_handle_t *)&srv->drain_timer, NULL);
  uv_close((uv_handle_t *)&srv->grace_timer, NULL);
  uv_close((uv_handle_t *)&srv->sd_timer, NULL);
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
  uv_close((uv_handle_t *)&srv->sighup, NULL);
  uv_close((uv_handle_t *)&srv->sigusr2, NULL);
  uv_close((uv_handle_t *)&srv->sigusr1, NULL);
  srv->ev->closing(srv);
  uv_walk(srv->loop, walk_close, NULL);
}

/* Reset every connection still open. Closing never unlinks or frees one
 * (that happens after its closed event), so the walk sees them all. */
static void abort_all(hs_server_t *srv) {
  hs_conn_t *c;
  TAILQ_FOREACH(c, &srv->conns, link) hs_conn_abort(c, "shutdown");
}

/* Stop at once without the orderly sequence (start-up failed): reset what
 * is open; the loop ends when everything is freed. */
void hs_server_abort(hs_server_t *srv) {
  srv->stopping = 1;
  close_listeners(srv);
  abort_all(srv);
  if (TAILQ_EMPTY(&srv->conns))
    close_all(srv);
  else
    hs_server_wake(srv); /* the before-sleep pass delivers the closes */
}

static void drain_timeout_cb(uv_timer_t *t) {
  hs_server_t *srv = hs_container_of(t, hs_server_t, drain_timer);
  int n = 0;
  hs_conn_t *c;
  TAILQ_FOREACH(c, &srv->conns, link) n += !(c->flags & HS_CONN_FINISHED);
  if (n)
    hs_log(srv, HS_LOG_WARN, "drain_timeout (%llu ms) passed; dropping %d connection(s)",
           (unsigned long long)srv->limits.drain_timeout, n);
  abort_all(srv);
}

/* Called when the last connection was freed during a stop, and by the stop
 * sequence itself. */
void hs_server_stop(hs_server_t *srv) {
  if (!srv->stopping) return;
  if (!TAILQ_EMPTY(&srv->conns)) return;
  close_all(srv);
}

/* Stop accepting, tell the host (on_shutdown), close every connection after
 * its output drains (up to drain_timeout), then leave the loop. */
static void grace_cb(uv_timer_t *t) {
  hs_server_t *srv = hs_container_of(t, hs_server_t, grace_timer);
  hs_server_begin_stop(srv, "stop_grace over");
}

void hs_server_begin_stop(hs_server_t *srv, const char *why) {
  if (srv->stopping) return;
  if (!srv->draining) hs_sd_stopping(srv->sd); /* systemd: STOPPING=1 */
  if (srv->limits.stop_grace && !srv->draining) {
    /* First the balancers hear of it: health checks fail while everything
     * still serves; the stop proper starts when the grace is over (or at a
     * second signal). */
    srv->draining = 1;
    hs_log(srv, HS_LOG_INFO, "%s: health checks say draining; stopping in %llu ms (stop_grace)",
           why, (unsigned long long)srv->limits.stop_grace);
    uv_timer_start(&srv->grace_timer, grace_cb, srv->limits.stop_grace, 0);
    return;
  }
  uv_timer_stop(&srv->grace_timer);
  srv->draining = 1;
  srv->stopping = 1;
  hs_log(srv, HS_LOG_INFO, "%s: stopping (%llu client(s), drain_timeout %llu ms)", why,
         (unsigned long long)srv->stats.active, (unsigned long long)srv->limits.drain_timeout);
  close_listeners(srv);
  srv->ev->stopping(srv);
  hs_conn_t *c;
  TAILQ_FOREACH(c, &srv->conns, link) hs_conn_close(c, "shutdown");
  if (!TAILQ_EMPTY(&srv->conns)) {
    uv_timer_start(&srv->drain_timer, drain_timeout_cb, srv->limits.drain_timeout, 0);
    uv_ref((uv_handle_t *)&srv->drain_timer);
    hs_server_wake(srv); /* the before-sleep pass delivers the closes */
  } else {
    close_all(srv);
  }
}

static void signal_cb(uv_signal_t *h, int signum) {
  hs_server_t *srv = h->data;
  if (signum == SIGHUP) {
    srv->ev->hangup(srv);
    return;
  }
  if (signum == SIGUSR2) {
    srv->ev->report(srv);
    return;
  }
  if (signum == SIGUSR1) {
    /* logrotate renamed the --log-file: new lines go to a new one. */
    if (hs_log_reopen() == 1) hs_log(srv, HS_LOG_INFO, "SIGUSR1: log file reopened");
    return;
  }
  if (srv->stopping) {
    hs_log(srv, HS_LOG_WARN, "second signal: stopping now");
    abort_all(srv);
    close_all(srv);
    return;
  }
  hs_server_begin_stop(srv, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

int hs_server_signals(hs_server_t *srv) {
  uv_signal_t *s[] = {&srv->sigint, &srv->sigterm, &srv->sighup, &srv->sigusr2, &srv->sigusr1};
  int nums[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR2, SIGUSR1};
  for (int i = 0; i < 5; i++) {
    uv_signal_start(s[i], signal_cb, nums[i]);
    uv_unref((uv_handle_t *)s[i]);
  }
  return 0;
}

void hs_server_free(hs_server_t *srv) {
  while (srv->closed_listeners) {
    hs_listener_t *l = srv->closed_listeners;
    srv->closed_listeners = l->next;
    hs_tls_ctx_unref(l->tls);
    hs_tls_ctx_unref(l->tls_next);
    free(l);
  }
  free(srv->rbuf);
  srv->rbuf = NULL;
  hs_pool_free(&srv->pool);
}
