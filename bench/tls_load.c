/* tls_load: the TLS load generator of bench/tls.sh.
 *
 * One thread, one epoll set, non-blocking sockets, OpenSSL on each socket.
 * Two modes:
 *
 *   handshake   every client repeats: connect, full TLS handshake (or a
 *               resumed one with -r), write one line, read its echo, check
 *               it, send close_notify, close. A round is one connection.
 *   throughput  every client connects and handshakes once, then repeats:
 *               write one line (16 KiB by default), read the whole echo,
 *               check it. A round is one echo.
 *
 * With -r (resume) each client keeps the session of its last connection
 * (SSL_get1_session after the echo came back: in TLS 1.3 the server's
 * tickets arrive after the handshake, before the echo) and offers it on
 * the next one (SSL_set_session). OpenSSL's client uses a TLS 1.3 ticket
 * once, so after a resumption with no new ticket from the server the next
 * connection is a full handshake. Every connection counts; `resumed=` says
 * how many were resumed, `tickets=` how many tickets arrived.
 *
 * The server certificate is not verified (the client would otherwise pay
 * for chain verification the server does not do); the protocol still
 * checks the server's handshake signature. Lines end in '\n', so a line
 * echo server and a raw byte echo behind a TLS proxy answer the same.
 *
 * It prints one line of key=value pairs (see --help). Linux only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

enum mode { MODE_HANDSHAKE, MODE_THROUGHPUT };

enum cstate { C_CLOSED, C_CONNECTING, C_HANDSHAKE, C_WRITE, C_READ };

typedef struct client {
  int fd;
  SSL *ssl;
  enum cstate state;
  unsigned events;   /* the epoll mask registered now */
  size_t sent;       /* bytes of this round's line written */
  size_t got;        /* bytes of this round's echo read */
  uint64_t t0;       /* ns: round start (handshake mode: connect start) */
  SSL_SESSION *sess; /* the session to offer on the next connection (-r) */
} client_t;

/* Settings. */
static enum mode mode = MODE_HANDSHAKE;
static const char *host = "127.0.0.1";
static const char *sni = "localhost";
static int port = 8443;
static int nconns = -1, size = -1;
static double duration = 3.0;
static long max_rounds; /* 0: until the duration is over */
static int resume;
static int tls_max = TLS1_3_VERSION;
static int spread_sources = 1; /* handshake mode: connect from 127.0.0.2-251 */

/* State. */
static struct sockaddr_in addr;
static SSL_CTX *ctx;
static int ep = -1;
static char *req;  /* the line: size bytes, the last one '\n' */
static char *rbuf; /* where echoes are read */
static size_t rbuflen;
static client_t *clients;
static uint64_t *lat; /* round latencies in ns */
static size_t nlat, caplat;
static uint64_t rounds, resumed, errors, mismatches, payload;
static uint64_t tickets; /* sessions (TLS 1.3: tickets) the servers handed out */
static volatile sig_atomic_t stop_flag;
static char version[32] = "-", cipher[64] = "-", group[32] = "-", first_error[160] = "";

/* This process's CPU time (user + system), in seconds. */
static double cpu_secs(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: tls_load [options]\n"
          "\n"
          "Load a TLS echo server (lines ending in '\\n') and report handshakes or\n"
          "echo throughput per second.\n"
          "\n"
          "options:\n"
          "  -m, --mode MODE      handshake   a new connection and handshake per line\n"
          "                                   (default)\n"
          "                       throughput  long-lived connections, one line after\n"
          "                                   another\n"
          "  -H, --host ADDR      server IPv4 address (default 127.0.0.1)\n"
          "  -p, --port PORT      server port (default 8443)\n"
          "  -c, --conns N        concurrent clients (default 16; throughput 4)\n"
          "  -s, --size BYTES     bytes per line, '\\n' included (default 64;\n"
          "                       throughput 16384)\n"
          "  -d, --duration SECS  how long to run, fractions allowed (default 3)\n"
          "  -n, --rounds N       stop after N rounds (default: the duration)\n"
          "  -r, --resume         handshake mode: offer the last connection's session\n"
          "  -V, --tls VERSION    highest version offered: 1.2 or 1.3 (default 1.3)\n"
          "      --sni NAME       server name sent (default localhost)\n"
          "      --same-source    connect from one source address (handshake mode\n"
          "                       otherwise spreads over 127.0.0.2-251 when the\n"
          "                       server is 127.0.0.1, against TIME_WAIT exhaustion)\n"
          "  -h, --help           print this help\n"
          "\n"
          "output: one line of key=value pairs\n"
          "  mode conns size resume  the settings\n"
          "  secs                    measured time\n"
          "  rounds rounds_per_s     handshake: connections completed (handshake and\n"
          "                          echo); throughput: echoes\n"
          "  resumed                 connections whose session was resumed\n"
          "  tickets                 sessions the server handed out (TLS 1.3: tickets)\n"
          "  mb_per_s                echoed payload, 10^6 bytes per second\n"
          "  p50_us p99_us           round latency (handshake: connect to echo)\n"
          "  cpu_pct                 this process's CPU time over the run, %% of one CPU\n"
          "  errors mismatches       failed connections; echoes that differed\n"
          "  version cipher group    what the first connection negotiated\n"
          "exit status: 0 when at least one round completed and no echo differed.\n");
}

static void fail(const char *what) {
  perror(what);
  exit(1);
}

static void record(uint64_t ns) {
  rounds++;
  if (nlat == caplat) {
    size_t cap = caplat ? caplat * 2 : 1u << 16;
    if (cap > (1u << 26)) return;
    uint64_t *p = realloc(lat, cap * sizeof *p);
    if (!p) return;
    lat = p;
    caplat = cap;
  }
  lat[nlat++] = ns;
}

static void set_events(client_t *c, unsigned ev) {
  if (c->events == ev) return;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) != 0) fail("epoll_ctl");
  c->events = ev;
}

/* Close the connection; graceful sends close_notify first (one try: the
 * socket is non-blocking and the reply is not awaited). */
static void drop(client_t *c, int graceful) {
  if (c->ssl) {
    if (graceful) SSL_shutdown(c->ssl);
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0) close(c->fd); /* close also leaves the epoll set */
  c->fd = -1;
  c->state = C_CLOSED;
  ERR_clear_error();
}

static void note_error(const char *what) {
  errors++;
  if (!first_error[0]) {
    unsigned long e = ERR_peek_last_error();
    char buf[120] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    snprintf(first_error, sizeof first_error, "%s%s%s", what, e ? ": " : "",
             e ? buf : (errno ? strerror(errno) : ""));
    for (char *p = first_error; *p; p++)
      if (*p == ' ') *p = '_';
  }
}

static int open_client(client_t *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (spread_sources) {
    /* A connection per round leaves a TIME_WAIT socket per round on this
     * side; one source address runs out of ports within seconds. */
    static unsigned next_src;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002u + next_src++ % 250u);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) spread_sources = 0;
  }
  c->fd = fd;
  c->t0 = now_ns();
  c->sent = c->got = 0;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
    close(fd);
    c->fd = -1;
    return -1;
  }
  c->state = C_CONNECTING;
  c->events = EPOLLOUT;
  struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0) fail("epoll_ctl");
  return 0;
}

/* What SSL_get_error says about r: 1 to wait (events set), -1 on failure. */
static int want(client_t *c, int r) {
  switch (SSL_get_error(c->ssl, r)) {
  case SSL_ERROR_WANT_READ: set_events(c, EPOLLIN); return 1;
  case SSL_ERROR_WANT_WRITE: set_events(c, EPOLLOUT); return 1;
  default: return -1;
  }
}

/* OpenSSL hands every new session here (in TLS 1.3, one per ticket); they
 * are only counted: 0 says no reference was kept. */
static int count_session(SSL *ssl, SSL_SESSION *sess) {
  (void)ssl;
  (void)sess;
  tickets++;
  return 0;
}

/* Keep this connection's session for the next one if it can be resumed.
 * OpenSSL's client uses a TLS 1.3 ticket once (RFC 8446, C.4): after a
 * resumption the session is kept only if the server sent a new ticket. */
static void keep_session(client_t *c) {
  SSL_SESSION *s = SSL_get1_session(c->ssl);
  if (c->sess) SSL_SESSION_free(c->sess);
  c->sess = NULL;
  if (s && SSL_SESSION_is_resumable(s))
    c->sess = s;
  else if (s)
    SSL_SESSION_free(s);
}

static void note_params(client_t *c) {
  if (version[0] != '-') return;
  snprintf(version, sizeof version, "%s", SSL_get_version(c->ssl));
  snprintf(cipher, sizeof cipher, "%s", SSL_get_cipher_name(c->ssl));
  int g = SSL_get_negotiated_group(c->ssl);
  const char *gn = g ? OBJ_nid2sn(g) : NULL;
  if (!gn && g) gn = SSL_group_to_name(c->ssl, g);
  snprintf(group, sizeof group, "%s", gn ? gn : "-");
}

/* Drive one client as far as it goes without blocking. 0, or -1 when the
 * connection failed (the caller drops it). */
static int advance(client_t *c) {
  for (;;) {
    switch (c->state) {
    case C_CLOSED: return 0;
    case C_CONNECTING: {
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) {
        errno = err;
        note_error("connect");
        return -1;
      }
      c->ssl = SSL_new(ctx);
      if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) fail("SSL_new");
      SSL_set_tlsext_host_name(c->ssl, sni);
      if (resume && c->sess) SSL_set_session(c->ssl, c->sess);
      SSL_set_connect_state(c->ssl);
      c->state = C_HANDSHAKE;
      break;
    }
    case C_HANDSHAKE: {
      ERR_clear_error();
      int r = SSL_do_handshake(c->ssl);
      if (r != 1) {
        if (want(c, r) > 0) return 0;
        note_error("handshake");
        return -1;
      }
      note_params(c);
      c->state = C_WRITE;
      if (mode == MODE_THROUGHPUT) c->t0 = now_ns();
      break;
    }
    case C_WRITE:
      while (c->sent < (size_t)size) {
        size_t w = 0;
        ERR_clear_error();
        int r = SSL_write_ex(c->ssl, req + c->sent, (size_t)size - c->sent, &w);
        if (r != 1) {
          if (want(c, r) > 0) return 0;
          note_error("write");
          return -1;
        }
        c->sent += w;
      }
      c->state = C_READ;
      break;
    case C_READ:
      while (c->got < (size_t)size) {
        size_t n = 0, room = (size_t)size - c->got;
        ERR_clear_error();
        int r = SSL_read_ex(c->ssl, rbuf, room < rbuflen ? room : rbuflen, &n);
        if (r != 1) {
          if (want(c, r) > 0) return 0;
          note_error(SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ? "closed" : "read");
          return -1;
        }
        if (memcmp(rbuf, req + c->got, n) != 0) mismatches++;
        c->got += n;
      }
      payload += (uint64_t)size;
      record(now_ns() - c->t0);
      if (mode == MODE_HANDSHAKE) {
        if (SSL_session_reused(c->ssl)) resumed++;
        if (resume) keep_session(c);
        drop(c, 1);
        if (stop_flag || (max_rounds && rounds >= (uint64_t)max_rounds)) return 0;
        if (open_client(c) != 0) {
          note_error("socket");
          return 0;
        }
        return 0; /* wait for the connect */
      }
      c->sent = c->got = 0;
      c->t0 = now_ns();
      c->state = C_WRITE;
      if (max_rounds && rounds >= (uint64_t)max_rounds) return 0;
      break;
    }
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static double pct(double p) {
  if (!nlat) return 0;
  size_t i = (size_t)(p * (double)(nlat - 1) + 0.5);
  return (double)lat[i] / 1000.0;
}

static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"mode", required_argument, 0, 'm'},
                                       {"host", required_argument, 0, 'H'},
                                       {"port", required_argument, 0, 'p'},
                                       {"conns", required_argument, 0, 'c'},
                                       {"size", required_argument, 0, 's'},
                                       {"duration", required_argument, 0, 'd'},
                                       {"rounds", required_argument, 0, 'n'},
                                       {"resume", no_argument, 0, 'r'},
                                       {"tls", required_argument, 0, 'V'},
                                       {"sni", required_argument, 0, 1},
                                       {"same-source", no_argument, 0, 2},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "m:H:p:c:s:d:n:rV:h", opts, NULL)) != -1) {
    switch (o) {
    case 'm':
      if (strcmp(optarg, "handshake") == 0)
        mode = MODE_HANDSHAKE;
      else if (strcmp(optarg, "throughput") == 0)
        mode = MODE_THROUGHPUT;
      else {
        fprintf(stderr, "tls_load: unknown mode %s\n", optarg);
        return 2;
      }
      break;
    case 'H': host = optarg; break;
    case 'p': port = atoi(optarg); break;
    case 'c': nconns = atoi(optarg); break;
    case 's': size = atoi(optarg); break;
    case 'd': duration = atof(optarg); break;
    case 'n': max_rounds = atol(optarg); break;
    case 'r': resume = 1; break;
    case 'V':
      if (strcmp(optarg, "1.2") == 0)
        tls_max = TLS1_2_VERSION;
      else if (strcmp(optarg, "1.3") == 0)
        tls_max = TLS1_3_VERSION;
      else {
        fprintf(stderr, "tls_load: --tls takes 1.2 or 1.3\n");
        return 2;
      }
      break;
    case 1: sni = optarg; break;
    case 2: spread_sources = 0; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    usage(stderr);
    return 2;
  }
  if (nconns < 0) nconns = mode == MODE_THROUGHPUT ? 4 : 16;
  if (size < 0) size = mode == MODE_THROUGHPUT ? 16384 : 64;
  if (nconns < 1 || size < 1 || port < 1 || port > 65535 || duration <= 0) {
    fprintf(stderr, "tls_load: bad -c, -s, -p or -d\n");
    return 2;
  }
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    fprintf(stderr, "tls_load: %s is not an IPv4 address\n", host);
    return 2;
  }
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (mode != MODE_HANDSHAKE || (ntohl(addr.sin_addr.s_addr) >> 24) != 127) spread_sources = 0;

  ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) fail("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, tls_max);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* Sessions are kept by hand per client (-r), not in a cache; the
   * callback only counts them. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, count_session);

  req = malloc((size_t)size);
  rbuflen = (size_t)size < 65536 ? (size_t)size : 65536;
  rbuf = malloc(rbuflen);
  clients = calloc((size_t)nconns, sizeof *clients);
  if (!req || !rbuf || !clients) fail("malloc");
  for (int i = 0; i < size - 1; i++) req[i] = (char)('a' + i % 26);
  req[size - 1] = '\n';

  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) fail("epoll_create1");

  double cpu0 = cpu_secs();
  uint64_t start = now_ns();
  uint64_t end = start + (uint64_t)(duration * 1e9);
  for (int i = 0; i < nconns; i++) {
    clients[i].fd = -1;
    if (open_client(&clients[i]) != 0) note_error("socket");
  }
  struct epoll_event evs[256];
  while (!stop_flag) {
    uint64_t t = now_ns();
    if (t >= end) break;
    if (max_rounds && rounds >= (uint64_t)max_rounds) break;
    int ms = (int)((end - t) / 1000000u) + 1;
    int n = epoll_wait(ep, evs, 256, ms < 100 ? ms : 100);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      client_t *c = evs[i].data.ptr;
      if (c->state == C_CLOSED) continue;
      if (advance(c) != 0) {
        drop(c, 0);
        if (!stop_flag && open_client(c) != 0) note_error("socket");
      }
    }
    /* A client with no connection (the socket could not be made) retries. */
    for (int i = 0; i < nconns; i++)
      if (clients[i].state == C_CLOSED && !stop_flag &&
          !(max_rounds && rounds >= (uint64_t)max_rounds))
        if (open_client(&clients[i]) != 0) note_error("socket");
    if (errors > 1000 && rounds == 0) break; /* nothing works: do not spin */
  }
  double secs = (double)(now_ns() - start) / 1e9;
  double cpu = cpu_secs() - cpu0;
  for (int i = 0; i < nconns; i++) {
    drop(&clients[i], 0);
    if (clients[i].sess) SSL_SESSION_free(clients[i].sess);
  }
  qsort(lat, nlat, sizeof *lat, cmp_u64);
  printf(
      "mode=%s conns=%d size=%d resume=%d secs=%.3f rounds=%llu rounds_per_s=%.0f "
      "resumed=%llu tickets=%llu mb_per_s=%.1f p50_us=%.0f p99_us=%.0f cpu_pct=%.0f errors=%llu "
      "mismatches=%llu "
      "version=%s cipher=%s group=%s%s%s\n",
      mode == MODE_HANDSHAKE ? "handshake" : "throughput", nconns, size, resume, secs,
      (unsigned long long)rounds, secs > 0 ? (double)rounds / secs : 0.0,
      (unsigned long long)resumed, (unsigned long long)tickets,
      secs > 0 ? (double)payload / secs / 1e6 : 0.0, pct(0.5), pct(0.99),
      secs > 0 ? cpu / secs * 100 : 0.0, (unsigned long long)errors, (unsigned long long)mismatches,
      version, cipher, group, first_error[0] ? " first_error=" : "", first_error);
  SSL_CTX_free(ctx);
  free(req);
  free(rbuf);
  free(clients);
  free(lat);
  close(ep);
  return rounds > 0 && mismatches == 0 ? 0 : 1;
}
