/* load: the hotsock load generator for line echo servers.
 *
 * One thread, one epoll set, non-blocking sockets. Every client repeats a
 * round: write a request (pipeline lines of size bytes each, the last byte
 * of each line '\n'), read until the whole echo came back, check it, record
 * the round's latency, and start again. Modes differ only in the request and
 * in what happens between rounds:
 *
 *   rr        one line per round, the connection stays open
 *   pipeline  P lines in one write per round, wait for all P replies
 *   churn     connect, one line, read the reply, close, reconnect
 *   large     like rr with 16 KiB lines and 10 clients (throughput)
 *   idle      open N connections, one round each, then hold them open
 *
 * It prints one line of key=value pairs (see --help), so scripts can pick
 * the fields they want. Linux only (epoll). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
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

enum mode { MODE_RR, MODE_PIPELINE, MODE_CHURN, MODE_LARGE, MODE_IDLE };
static const char *const mode_names[] = {"rr", "pipeline", "churn", "large", "idle"};

enum cstate { C_CLOSED, C_CONNECTING, C_ROUND, C_IDLE };

typedef struct client {
  int fd;
  enum cstate state;
  unsigned events; /* the epoll mask registered now */
  size_t sent;     /* bytes of this round's request written */
  size_t got;      /* bytes of this round's reply read */
  uint64_t t0;     /* ns: round start (churn: connect start) */
} client_t;

/* Settings. */
static enum mode mode = MODE_RR;
static const char *host = "127.0.0.1";
static int port = 7000;
static int nconns = -1, size = -1, pipeline = -1;
static double duration = 5.0, hold = 0.0;
static int verify = 1;
static int spread_sources; /* churn against 127.0.0.1: vary the source address */

/* State. */
static struct sockaddr_storage addr;
static socklen_t addrlen;
static int ep = -1;
static char *req;      /* the request: pipeline lines of size bytes */
static size_t reqlen;  /* pipeline * size */
static client_t *clients;
static uint64_t *lat;  /* round latencies in ns */
static size_t nlat, caplat;
static uint64_t rounds, errors, mismatches;
static int connecting;  /* connects in flight (idle mode ramps up by these) */
static volatile sig_atomic_t stop_flag;

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: load [options]\n"
          "\n"
          "Load a line echo server on TCP and report its throughput and latency.\n"
          "Each client writes a request, reads the whole echo back, checks it, and\n"
          "repeats until the duration is over.\n"
          "\n"
          "options:\n"
          "  -m, --mode MODE      rr        one line per round trip (default)\n"
          "                       pipeline  P lines in one write, wait for all P\n"
          "                       churn     a new connection for every line\n"
          "                       large     rr with 16 KiB lines, 10 clients\n"
          "                       idle      open N connections, echo one line on\n"
          "                                 each, print 'ready', hold them open\n"
          "  -H, --host ADDR      server address (default 127.0.0.1)\n"
          "  -p, --port PORT      server port (default 7000)\n"
          "  -c, --conns N        concurrent clients (default 50; churn and large 10;\n"
          "                       idle 5000)\n"
          "  -s, --size BYTES     bytes per line, '\\n' included (default 64; large\n"
          "                       16384; idle 8)\n"
          "  -P, --pipeline N     lines per write in pipeline mode (default 16)\n"
          "  -d, --duration SECS  how long to run, fractions allowed (default 5)\n"
          "                       (churn against 127.0.0.1 connects from 127.0.0.2-251,\n"
          "                       so TIME_WAIT sockets do not exhaust the ports)\n"
          "  -k, --hold SECS      idle mode: hold the connections this long after\n"
          "                       'ready' (default: until SIGINT/SIGTERM)\n"
          "      --no-verify      do not compare the echo with what was sent\n"
          "  -h, --help           print this help\n"
          "\n"
          "output: one line of key=value pairs\n"
          "  mode conns size pipeline   the settings\n"
          "  secs                       measured time\n"
          "  rounds                     completed round trips (churn: connections)\n"
          "  msgs msgs_per_s            lines echoed, and per second\n"
          "  rounds_per_s               round trips (churn: connections) per second\n"
          "  mb_per_s                   echoed payload, 10^6 bytes per second\n"
          "  p50_us p99_us p999_us      round-trip latency percentiles (churn:\n"
          "                             connect to reply)\n"
          "  errors mismatches          failed connections; echoes that differed\n"
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
    if (cap > (1u << 26)) return; /* 64 Mi samples is plenty */
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

static void drop(client_t *c) {
  if (c->fd >= 0) close(c->fd); /* close also leaves the epoll set */
  if (c->state == C_CONNECTING) connecting--;
  c->fd = -1;
  c->state = C_CLOSED;
}

static int open_client(client_t *c) {
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (spread_sources) {
    /* Connection churn leaves a TIME_WAIT socket per connection on this side;
     * one source address runs out of ports within seconds at these rates.
     * Spread the sources over 127.0.0.2-251 and let connect pick the port. */
    static unsigned next_src;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002u + next_src++ % 250u);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) spread_sources = 0;
  }
  c->fd = fd;
  c->t0 = now_ns();
  c->sent = c->got = 0;
  if (connect(fd, (struct sockaddr *)&addr, addrlen) != 0 && errno != EINPROGRESS) {
    close(fd);
    c->fd = -1;
    return -1;
  }
  c->state = C_CONNECTING;
  connecting++;
  c->events = EPOLLOUT;
  struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0) fail("epoll_ctl");
  return 0;
}

/* Write what is left of the request; wait for writability if the kernel
 * did not take it all. */
static int pump(client_t *c) {
  while (c->sent < reqlen) {
    ssize_t n = send(c->fd, req + c->sent, reqlen - c->sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      return -1;
    }
    c->sent += (size_t)n;
  }
  set_events(c, c->sent < reqlen ? EPOLLIN | EPOLLOUT : EPOLLIN);
  return 0;
}

static int start_round(client_t *c, int keep_t0) {
  c->state = C_ROUND;
  c->sent = c->got = 0;
  if (!keep_t0) c->t0 = now_ns();
  return pump(c);
}

/* The reply came back whole. */
static void round_done(client_t *c, uint64_t now, int measuring) {
  if (measuring) record(now - c->t0);
  if (mode == MODE_IDLE) {
    c->state = C_IDLE;
    set_events(c, EPOLLIN); /* a close from the server shows up as EOF */
    return;
  }
  if (mode == MODE_CHURN) {
    drop(c);
    if (measuring && open_client(c) != 0) errors++;
    return;
  }
  if (measuring && start_round(c, 0) != 0) {
    errors++;
    drop(c);
  }
}

static void on_event(client_t *c, unsigned ev, char *buf, size_t buflen, int measuring) {
  if (c->state == C_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    if ((ev & (EPOLLERR | EPOLLHUP)) ||
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      errors++;
      drop(c);
      return;
    }
    connecting--;
    if (start_round(c, mode == MODE_CHURN) != 0) {
      errors++;
      drop(c);
    }
    return;
  }
  if ((ev & EPOLLOUT) && c->state == C_ROUND && pump(c) != 0) {
    errors++;
    drop(c);
    return;
  }
  if (!(ev & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
  ssize_t n = recv(c->fd, buf, buflen, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0 || c->state != C_ROUND) { /* reset, EOF, or bytes nobody asked for */
    if (n > 0) mismatches++;
    errors++;
    drop(c);
    return;
  }
  size_t got = (size_t)n;
  if (c->got + got > reqlen) {
    mismatches++;
    got = reqlen - c->got;
  } else if (verify && memcmp(buf, req + c->got, got) != 0) {
    mismatches++;
  }
  c->got += got;
  if (c->got == reqlen) round_done(c, now_ns(), measuring);
}

static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_us(double p) {
  if (nlat == 0) return 0;
  size_t i = (size_t)(p * (double)nlat);
  if (i >= nlat) i = nlat - 1;
  return (double)lat[i] / 1000.0;
}

static int resolve(void) {
  struct addrinfo hints, *res;
  char ports[16];
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  snprintf(ports, sizeof ports, "%d", port);
  int r = getaddrinfo(host, ports, &hints, &res);
  if (r != 0) {
    fprintf(stderr, "load: %s: %s\n", host, gai_strerror(r));
    return -1;
  }
  memcpy(&addr, res->ai_addr, res->ai_addrlen);
  addrlen = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}

static int parse_int(const char *s, const char *name, int min) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < min || v > 100000000) {
    fprintf(stderr, "load: bad %s '%s'\n", name, s);
    exit(2);
  }
  return (int)v;
}

static double parse_secs(const char *s, const char *name) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || !(v >= 0) || v > 1e6) {
    fprintf(stderr, "load: bad %s '%s'\n", name, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"mode", required_argument, NULL, 'm'},     {"host", required_argument, NULL, 'H'},
      {"port", required_argument, NULL, 'p'},     {"conns", required_argument, NULL, 'c'},
      {"size", required_argument, NULL, 's'},     {"pipeline", required_argument, NULL, 'P'},
      {"duration", required_argument, NULL, 'd'}, {"hold", required_argument, NULL, 'k'},
      {"no-verify", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "m:H:p:c:s:P:d:k:h", opts, NULL)) != -1) {
    switch (o) {
    case 'm': {
      size_t i;
      for (i = 0; i < sizeof mode_names / sizeof *mode_names; i++)
        if (strcmp(optarg, mode_names[i]) == 0) break;
      if (i == sizeof mode_names / sizeof *mode_names) {
        fprintf(stderr, "load: unknown mode '%s' (rr, pipeline, churn, large, idle)\n", optarg);
        return 2;
      }
      mode = (enum mode)i;
      break;
    }
    case 'H': host = optarg; break;
    case 'p': port = parse_int(optarg, "port", 1); break;
    case 'c': nconns = parse_int(optarg, "conns", 1); break;
    case 's': size = parse_int(optarg, "size", 1); break;
    case 'P': pipeline = parse_int(optarg, "pipeline", 1); break;
    case 'd': duration = parse_secs(optarg, "duration"); break;
    case 'k': hold = parse_secs(optarg, "hold"); break;
    case 'V': verify = 0; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  if (nconns < 0) nconns = mode == MODE_IDLE ? 5000 : (mode == MODE_CHURN || mode == MODE_LARGE) ? 10 : 50;
  if (size < 0) size = mode == MODE_LARGE ? 16384 : mode == MODE_IDLE ? 8 : 64;
  if (pipeline < 0) pipeline = mode == MODE_PIPELINE ? 16 : 1;
  if (mode != MODE_PIPELINE && pipeline != 1) {
    fprintf(stderr, "load: -P needs --mode pipeline\n");
    return 2;
  }
  if (resolve() != 0) return 2;
  if (mode == MODE_CHURN && addr.ss_family == AF_INET &&
      ((struct sockaddr_in *)&addr)->sin_addr.s_addr == htonl(0x7f000001u))
    spread_sources = 1;

  /* Room for many sockets (idle mode), as far as the hard limit allows. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  reqlen = (size_t)size * (size_t)pipeline;
  req = malloc(reqlen);
  clients = calloc((size_t)nconns, sizeof *clients);
  size_t buflen = 1u << 16;
  char *buf = malloc(buflen);
  if (!req || !clients || !buf) fail("malloc");
  for (size_t i = 0; i < reqlen; i++)
    req[i] = (i % (size_t)size == (size_t)size - 1) ? '\n' : (char)('a' + i % 26);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) fail("epoll_create1");
  for (int i = 0; i < nconns; i++) clients[i].fd = -1;

  /* Idle mode opens at most this many at once, so the listen queue holds. */
  int ramp = mode == MODE_IDLE ? 256 : nconns;
  int opened = 0;
  uint64_t start = now_ns();
  uint64_t end = start + (uint64_t)(duration * 1e9);
  int ready = 0;
  struct epoll_event evs[512];
  for (;;) {
    uint64_t now = now_ns();
    if (stop_flag) break;
    if (mode == MODE_IDLE) {
      if (ready && hold > 0 && now >= end) break;
    } else if (now >= end) {
      break;
    }
    while (opened < nconns && connecting < ramp) {
      if (open_client(&clients[opened]) != 0) errors++;
      opened++;
    }
    if (mode == MODE_IDLE && !ready && opened == nconns && connecting == 0) {
      int live = 0, idle = 0;
      for (int i = 0; i < nconns; i++) {
        live += clients[i].fd >= 0;
        idle += clients[i].state == C_IDLE;
      }
      if (idle == live) {
        ready = 1;
        printf("ready conns=%d errors=%llu\n", live, (unsigned long long)errors);
        fflush(stdout);
        end = now + (uint64_t)(hold * 1e9);
      }
    }
    int timeout = 100;
    if (mode != MODE_IDLE || ready) {
      uint64_t left_ms = now < end ? (end - now) / 1000000u + 1 : 0;
      if (left_ms < (uint64_t)timeout) timeout = (int)left_ms;
      if (mode == MODE_IDLE && hold <= 0) timeout = 1000;
    }
    if (mode == MODE_IDLE && !ready && errors > (uint64_t)nconns) break;
    int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof *evs), timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("epoll_wait");
    }
    int measuring = mode == MODE_IDLE || now_ns() < end;
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events, buf, buflen, measuring);
    /* Churn and rr keep the client count up after a failure. */
    if (mode != MODE_IDLE && opened == nconns && measuring) {
      for (int i = 0; i < nconns; i++)
        if (clients[i].state == C_CLOSED && open_client(&clients[i]) != 0) errors++;
      if (errors > 100000 && rounds == 0) {
        fprintf(stderr, "load: cannot reach %s:%d\n", host, port);
        break;
      }
    }
  }
  uint64_t stop = now_ns();
  if (mode != MODE_IDLE && stop > end) stop = end;
  double secs = (double)(stop - start) / 1e9;
  if (secs <= 0) secs = 1e-9;
  for (int i = 0; i < nconns; i++)
    if (clients[i].fd >= 0) close(clients[i].fd);
  qsort(lat, nlat, sizeof *lat, cmp_u64);
  uint64_t msgs = rounds * (uint64_t)pipeline;
  printf("mode=%s conns=%d size=%d pipeline=%d secs=%.3f rounds=%llu msgs=%llu "
         "rounds_per_s=%.0f msgs_per_s=%.0f mb_per_s=%.2f p50_us=%.1f p99_us=%.1f "
         "p999_us=%.1f errors=%llu mismatches=%llu\n",
         mode_names[mode], nconns, size, pipeline, secs, (unsigned long long)rounds,
         (unsigned long long)msgs, (double)rounds / secs, (double)msgs / secs,
         (double)msgs * (double)size / secs / 1e6, pct_us(0.50), pct_us(0.99), pct_us(0.999),
         (unsigned long long)errors, (unsigned long long)mismatches);
  free(lat);
  free(req);
  free(clients);
  free(buf);
  close(ep);
  return rounds > 0 && mismatches == 0 ? 0 : 1;
}
