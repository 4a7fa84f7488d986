/* sd.c: socket activation, sd_notify and the watchdog, and the privilege
 * drop (see sd.h). The notify protocol is the documented one (one
 * datagram of NAME=VALUE lines to the AF_UNIX socket NOTIFY_SOCKET names);
 * no libsystemd. */
#include "sd.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hotsock.h"
#include "log.h"

#define SD_LISTEN_FDS_START 3

void hs_sd_init(hs_sd_t *sd) {
  memset(sd, 0, sizeof *sd);
  sd->notify_fd = -1;
  sd->ctl_fd = -1;
}

/* ------------------------------------------------------------------------
 * Socket activation
 * ---------------------------------------------------------------------- */

/* A positive decimal number (no sign, no spaces), or -1. */
static long parse_num(const char *s) {
  if (!s || *s < '0' || *s > '9') return -1;
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v > 0x7fffffffUL) return -1;
  return (long)v;
}

/* Describe fd (a listening stream socket) in f: 0, or -1 with err. */
static int inspect_fd(int fd, hs_sd_fd_t *f, char *err, size_t errlen) {
  char who[96];
  if (f->label[0])
    snprintf(who, sizeof who, "socket activation: fd %d (%s)", fd, f->label);
  else
    snprintf(who, sizeof who, "socket activation: fd %d", fd);
  if (fcntl(fd, F_GETFD) < 0) {
    snprintf(err, errlen, "%s is not open (LISTEN_FDS counts it)", who);
    return -1;
  }
  int type = 0, listening = 0, domain = 0;
  socklen_t l = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0) {
    snprintf(err, errlen, "%s is not a socket (%s); hotsock serves listening stream sockets", who,
             strerror(errno));
    return -1;
  }
  if (type != SOCK_STREAM) {
    snprintf(err, errlen,
             "%s is a %s socket, not a listening stream socket (ListenStream=, not %s)", who,
             type == SOCK_DGRAM       ? "datagram"
             : type == SOCK_SEQPACKET ? "seqpacket"
                                      : "non-stream",
             type == SOCK_DGRAM ? "ListenDatagram=" : "ListenSequentialPacket=");
    return -1;
  }
  l = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &l) != 0 || !listening) {
    snprintf(err, errlen,
             "%s is a stream socket that is not listening (Accept=yes is not "
             "supported: hotsock accepts its clients itself)",
             who);
    return -1;
  }
  l = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) != 0 ||
      (domain != AF_INET && domain != AF_INET6 && domain != AF_UNIX)) {
    snprintf(err, errlen,
             "%s is a socket of address family %d; hotsock serves TCP (IPv4, IPv6) "
             "and unix sockets",
             who, domain);
    return -1;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
    snprintf(err, errlen, "%s: getsockname: %s", who, strerror(errno));
    return -1;
  }
  f->fd = fd;
  f->is_unix = domain == AF_UNIX;
  if (domain == AF_UNIX) {
    const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
    size_t n = sl > offsetof(struct sockaddr_un, sun_path)
                   ? sl - offsetof(struct sockaddr_un, sun_path)
                   : 0;
    if (n > sizeof un->sun_path) n = sizeof un->sun_path;
    if (n == 0) {
      snprintf(f->name, sizeof f->name, "unix:(unnamed fd %d)", fd);
    } else if (un->sun_path[0] == 0) { /* abstract: "@name" */
      snprintf(f->name, sizeof f->name, "unix:@%.*s", (int)(n - 1), un->sun_path + 1);
    } else {
      snprintf(f->name, sizeof f->name, "unix:%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
    }
  } else if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    char host[INET6_ADDRSTRLEN] = "?";
    uv_ip4_name(in, host, sizeof host);
    f->port = ntohs(in->sin_port);
    snprintf(f->name, sizeof f->name, "%s:%u", host, f->port);
  } else {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    char host[INET6_ADDRSTRLEN] = "?";
    uv_ip6_name(in6, host, sizeof host);
    f->port = ntohs(in6->sin6_port);
    snprintf(f->name, sizeof f->name, "[%s]:%u", host, f->port);
  }
  /* As sd_listen_fds does: programs this one starts do not inherit them. */
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  return 0;
}

int hs_sd_listen_fds(hs_sd_t *sd, char *err, size_t errlen) {
  const char *pid_s = getenv("LISTEN_PID"), *n_s = getenv("LISTEN_FDS");
  const char *names_s = getenv("LISTEN_FDNAMES");
  char names[4096];
  long pid = parse_num(pid_s), n = parse_num(n_s);
  snprintf(names, sizeof names, "%s", names_s ? names_s : "");
  sd->nfds = 0;
  /* Read once: whatever they said, they are not for our children. */
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  if (!pid_s || !n_s) return 0;
  if (pid != (long)getpid()) return 0; /* meant for another process */
  if (n < 0) {
    snprintf(err, errlen, "socket activation: LISTEN_FDS is \"%s\", not a number", n_s);
    return -1;
  }
  if (n > HS_SD_MAX_FDS) {
    snprintf(err, errlen, "socket activation: %ld sockets passed; at most %d are served", n,
             HS_SD_MAX_FDS);
    return -1;
  }
  char *save = NULL, *label = names[0] ? strtok_r(names, ":", &save) : NULL;
  for (long i = 0; i < n; i++) {
    hs_sd_fd_t *f = &sd->fds[i];
    memset(f, 0, sizeof *f);
    if (label) {
      snprintf(f->label, sizeof f->label, "%s", label);
      label = strtok_r(NULL, ":", &save);
    }
    if (inspect_fd(SD_LISTEN_FDS_START + (int)i, f, err, errlen) != 0) return -1;
  }
  sd->nfds = (int)n;
  return 0;
}

int hs_sd_same_addr(const char *addr, const hs_sd_fd_t *f) {
  if (strncmp(addr, "unix:", 5) == 0) return f->is_unix && strcmp(addr + 5, f->name + 5) == 0;
  if (f->is_unix) return 0;
  const char *port;
  if (addr[0] == '[') {
    const char *end = strchr(addr, ']');
    if (!end || end[1] != ':') return 0;
    port = end + 2;
  } else {
    const char *colon = strrchr(addr, ':');
    port = colon ? colon + 1 : addr;
  }
  long p = parse_num(port);
  return p > 0 && (unsigned long)p == f->port;
}

/* ------------------------------------------------------------------------
 * sd_notify
 * ---------------------------------------------------------------------- */

int hs_sd_notify_open(hs_sd_t *sd, char *err, size_t errlen) {
  const char *path = getenv("NOTIFY_SOCKET");
  const char *wd = getenv("WATCHDOG_USEC"), *wd_pid = getenv("WATCHDOG_PID");
  int rc = 0;
  if (path && *path) {
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof sd->notify_addr.sun_path || n < 2) {
      snprintf(err, errlen, "NOTIFY_SOCKET \"%s\" is neither a path nor @abstract; not notifying",
               path);
      rc = -1;
    } else {
      memset(&sd->notify_addr, 0, sizeof sd->notify_addr);
      sd->notify_addr.sun_family = AF_UNIX;
      memcpy(sd->notify_addr.sun_path, path, n);
      if (path[0] == '@') {
        sd->notify_addr.sun_path[0] = 0; /* abstract: no terminating NUL */
        sd->notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
      } else {
        sd->notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
      }
      sd->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (sd->notify_fd < 0) {
        snprintf(err, errlen, "NOTIFY_SOCKET: socket: %s; not notifying", strerror(errno));
        rc = -1;
      }
    }
  }
  long us = wd ? parse_num(wd) : -1;
  long wpid = wd_pid ? parse_num(wd_pid) : -1;
  if (sd->notify_fd >= 0 && us > 0 && (!wd_pid || wpid == (long)getpid()))
    sd->watchdog_usec = (uint64_t)us;
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  return rc;
}

int hs_sd_notify(hs_sd_t *sd, const char *msg) {
  if (!sd || sd->notify_fd < 0 || sd->worker) return -1;
  ssize_t r = sendto(sd->notify_fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
                     (const struct sockaddr *)&sd->notify_addr, sd->notify_len);
  return r < 0 ? -1 : 0;
}

/* dst = src with control bytes as spaces (one STATUS= line). */
static void one_line(char *dst, size_t len, const char *src) {
  size_t i = 0;
  for (; src[i] && i + 1 < len; i++)
    dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? ' ' : src[i];
  dst[i] = 0;
}

void hs_sd_ready(hs_sd_t *sd, const char *status) {
  if (!sd || sd->notify_fd < 0 || sd->worker) return;
  char msg[512];
  one_line(sd->status, sizeof sd->status, status);
  snprintf(msg, sizeof msg, "READY=1\nMAINPID=%d\nSTATUS=%s", (int)getpid(), sd->status);
  hs_sd_notify(sd, msg);
}

void hs_sd_reloading(hs_sd_t *sd) {
  if (!sd || sd->notify_fd < 0 || sd->worker) return;
  struct timespec ts;
  char msg[256];
  clock_gettime(CLOCK_MONOTONIC, &ts);
  snprintf(sd->status, sizeof sd->status, "reloading");
  snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
           (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
  hs_sd_notify(sd, msg);
}

void hs_sd_reloaded(hs_sd_t *sd, int ok, const char *what) {
  if (!sd || sd->notify_fd < 0 || sd->worker) return;
  char msg[512];
  snprintf(sd->note, sizeof sd->note, "%s", ok ? "" : " (the last reload failed)");
  one_line(sd->status, sizeof sd->status, what);
  snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", sd->status);
  hs_sd_notify(sd, msg);
}

void hs_sd_stopping(hs_sd_t *sd) {
  if (!sd || sd->notify_fd < 0 || sd->worker) return;
  snprintf(sd->status, sizeof sd->status, "stopping");
  hs_sd_notify(sd, "STOPPING=1\nSTATUS=stopping");
}

uint64_t hs_sd_tick_ms(const hs_sd_t *sd) {
  if (!sd) return 0;
  if (sd->worker)
    return sd->watchdog_usec ? (sd->watchdog_usec / 4000 ? sd->watchdog_usec / 4000 : 1) : 0;
  if (sd->notify_fd < 0) return 0;
  uint64_t t = 1000;
  if (sd->watchdog_usec) {
    uint64_t half = sd->watchdog_usec / 2000;
    if (half < 1) half = 1;
    if (half < t) t = half;
  }
  return t;
}

void hs_sd_tick(hs_sd_t *sd, uint64_t now_ms, const char *status, int pet) {
  if (!sd) return;
  if (sd->worker) {
    if (sd->watchdog_usec && sd->ctl_fd >= 0) {
      ssize_t r = send(sd->ctl_fd, "alive", 5, MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)r; /* a supervisor that is gone stops the worker another way */
    }
    return;
  }
  if (sd->notify_fd < 0) return;
  char msg[512], line[256];
  size_t n = 0;
  msg[0] = 0;
  if (sd->watchdog_usec && pet) {
    uint64_t period = sd->watchdog_usec / 2000, tick = hs_sd_tick_ms(sd);
    if (now_ms + tick / 2 >= sd->next_pet) {
      n += (size_t)snprintf(msg + n, sizeof msg - n, "WATCHDOG=1\n");
      sd->next_pet = now_ms + period;
    }
  }
  if (status) {
    one_line(line, sizeof line, status);
    if (strcmp(line, sd->status) != 0) {
      snprintf(sd->status, sizeof sd->status, "%s", line);
      snprintf(msg + n, sizeof msg - n, "STATUS=%s\n", line);
    }
  }
  size_t len = strlen(msg);
  if (len && msg[len - 1] == '\n') msg[len - 1] = 0;
  if (msg[0]) hs_sd_notify(sd, msg);
}

void hs_sd_become_worker(hs_sd_t *sd) {
  if (!sd) return;
  if (sd->notify_fd >= 0) close(sd->notify_fd);
  sd->notify_fd = -1;
  sd->worker = 1;
}

void hs_sd_close(hs_sd_t *sd) {
  if (!sd) return;
  if (sd->notify_fd >= 0) close(sd->notify_fd);
  sd->notify_fd = -1;
}

void hs_sd_status_text(const hs_sd_t *sd, uint64_t clients, uint64_t generation, char *buf,
                       size_t len) {
  snprintf(buf, len, "serving %llu client%s, generation %llu%s", (unsigned long long)clients,
           clients == 1 ? "" : "s", (unsigned long long)generation, sd ? sd->note : "");
}

/* The server's timer: the status and the watchdog, from the loop. */
static void sd_timer_cb(uv_timer_t *t) {
  hs_server_t *srv = t->data;
  char st[256];
  if (srv->sd->worker) {
    hs_sd_tick(srv->sd, uv_now(srv->loop), NULL, 1);
    return;
  }
  hs_sd_status_text(srv->sd, srv->stats.active, srv->stats.generation, st, sizeof st);
  hs_sd_tick(srv->sd, uv_now(srv->loop), srv->stopping ? NULL : st, 1);
}

void hs_sd_start(hs_server_t *srv) {
  hs_sd_t *sd = srv->sd;
  if (!sd) return;
  if (sd->worker) {
    sd->ctl_fd = srv->ctl_fd;
  } else {
    char st[256];
    hs_sd_status_text(sd, srv->stats.active, srv->stats.generation, st, sizeof st);
    hs_sd_ready(sd, st);
  }
  uint64_t t = hs_sd_tick_ms(sd);
  if (!t) return;
  sd->next_pet = 0;
  srv->sd_timer.data = srv;
  uv_timer_start(&srv->sd_timer, sd_timer_cb, t, t);
  sd_timer_cb(&srv->sd_timer); /* the first pet (or heartbeat) now */
}

/* ------------------------------------------------------------------------
 * --user / --group
 * ---------------------------------------------------------------------- */

int hs_sd_resolve_user(hs_sd_t *sd, const char *user, const char *group, char *err, size_t errlen) {
  if (!user && !group) return 0;
  uid_t euid = geteuid();
  gid_t egid = getegid();
  sd->uid = euid;
  sd->gid = egid;
  if (user) {
    struct passwd *pw = getpwnam(user);
    long num = parse_num(user);
    if (!pw && num >= 0) pw = getpwuid((uid_t)num);
    if (!pw) {
      snprintf(err, errlen, "--user %s: no such user", user);
      return -1;
    }
    sd->uid = pw->pw_uid;
    sd->gid = pw->pw_gid;
    snprintf(sd->user, sizeof sd->user, "%s", pw->pw_name);
    sd->set_groups = 1;
  } else {
    struct passwd *pw = getpwuid(euid);
    if (pw)
      snprintf(sd->user, sizeof sd->user, "%s", pw->pw_name);
    else
      snprintf(sd->user, sizeof sd->user, "%u", (unsigned)euid);
  }
  struct group *gr = NULL;
  if (group) {
    gr = getgrnam(group);
    long num = parse_num(group);
    if (!gr && num >= 0) gr = getgrgid((gid_t)num);
    if (!gr) {
      snprintf(err, errlen, "--group %s: no such group", group);
      return -1;
    }
    sd->gid = gr->gr_gid;
  } else {
    gr = getgrgid(sd->gid);
  }
  if (gr)
    snprintf(sd->group, sizeof sd->group, "%s", gr->gr_name);
  else
    snprintf(sd->group, sizeof sd->group, "%u", (unsigned)sd->gid);
  if (euid != 0) {
    if (sd->uid != euid || sd->gid != egid) {
      snprintf(err, errlen,
               "--user/--group: changing to user %s, group %s needs root (running as uid %u, gid "
               "%u)",
               sd->user, sd->group, (unsigned)euid, (unsigned)egid);
      return -1;
    }
    return 0; /* already who was asked for: nothing to drop */
  }
  sd->drop = 1;
  return 0;
}

int hs_sd_drop(hs_sd_t *sd, char *err, size_t errlen) {
  if (!sd || !sd->drop || sd->dropped) return 0;
  if (sd->set_groups ? initgroups(sd->user, sd->gid) != 0 : setgroups(1, &sd->gid) != 0) {
    snprintf(err, errlen, "cannot set the supplementary groups of %s: %s", sd->user,
             strerror(errno));
    return -1;
  }
  if (setgid(sd->gid) != 0) {
    snprintf(err, errlen, "cannot change to group %s (gid %u): %s", sd->group, (unsigned)sd->gid,
             strerror(errno));
    return -1;
  }
  if (setuid(sd->uid) != 0) {
    snprintf(err, errlen, "cannot change to user %s (uid %u): %s", sd->user, (unsigned)sd->uid,
             strerror(errno));
    return -1;
  }
  if (sd->uid != 0 && (setuid(0) == 0 || geteuid() == 0)) {
    snprintf(err, errlen, "changed to user %s but root could be regained", sd->user);
    return -1;
  }
  sd->dropped = 1;
  hs_logf(HS_LOG_DEBUG, HS_LOG_INFO, 0, "running as user %s (uid %u), group %s (gid %u)", sd->user,
          (unsigned)sd->uid, sd->group, (unsigned)sd->gid);
  return 0;
}

/* ------------------------------------------------------------------------
 * Serving an inherited socket
 * ---------------------------------------------------------------------- */

int hs_sd_listen(hs_server_t *srv, int fd, int is_unix, const char *name, struct hs_tls_ctx *tls) {
  int r = hs_server_listen_fd(srv, fd, is_unix, name, tls);
  /* The contract: one line per listener on stderr, as hs_server_listen. */
  if (r == 0) hs_logf_console(HS_LOG_INFO, "listening on %s%s", name, tls ? " (tls)" : "");
  return r;
}
