/* sd.h: running as a service under systemd (socket layer: no Lua).
 *
 * - Socket activation: the listening sockets systemd (or
 *   systemd-socket-activate) hands over as fds 3.. with LISTEN_PID,
 *   LISTEN_FDS and LISTEN_FDNAMES, as sd_listen_fds(3) reads them.
 * - sd_notify(3) without libsystemd: READY=1, RELOADING=1, STOPPING=1,
 *   STATUS= and the watchdog (WATCHDOG=1), as datagrams to NOTIFY_SOCKET.
 * - --user / --group: the privilege drop once the listeners are up.
 *
 * One hs_sd_t per process (main.c owns it; the server points at it), so
 * there is no global state here. Every function takes NULL or a struct
 * with nothing configured and then does nothing. The notify part makes no
 * libuv call (the supervisor of --workers, which has no loop, uses it);
 * hs_sd_start runs the periodic work on a server's loop. */
#ifndef HS_SD_H
#define HS_SD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#define HS_SD_MAX_FDS 64

/* One inherited listening socket. */
typedef struct hs_sd_fd {
  int fd;
  int is_unix;
  char name[128]; /* the address as printed: "127.0.0.1:7000", "unix:/run/x.sock" */
  char label[64]; /* its LISTEN_FDNAMES entry (FileDescriptorName=), or "" */
  unsigned port;  /* TCP: the port; 0 for a unix socket */
} hs_sd_fd_t;

typedef struct hs_sd {
  /* socket activation */
  int nfds;
  hs_sd_fd_t fds[HS_SD_MAX_FDS];
  /* sd_notify */
  int notify_fd; /* a datagram socket, or -1 */
  struct sockaddr_un notify_addr;
  socklen_t notify_len;
  uint64_t watchdog_usec; /* 0: no watchdog */
  uint64_t next_pet;      /* ms, the caller's clock */
  int worker;             /* a worker of --workers: heartbeats go to the supervisor */
  int ctl_fd;             /* a worker's control socket (for the heartbeats) */
  char status[256];       /* the STATUS= last sent */
  char note[128];         /* appended to the status: a failed reload */
  /* --user / --group */
  int drop; /* a change of user or group was asked for */
  int dropped;
  uid_t uid;
  gid_t gid;
  int set_groups; /* --user: initgroups; --group alone: that group only */
  char user[64];  /* names as logged */
  char group[64];
} hs_sd_t;

/* Nothing configured (no sockets, no notify socket, no drop). */
void hs_sd_init(hs_sd_t *sd);

/* Socket activation: read LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, and
 * unset them (so programs started later do not see them). When LISTEN_PID
 * is this process, sd->fds describes fds 3..3+N-1, each checked to be a
 * listening stream socket (TCP or unix) and made close-on-exec. 0 (sd->nfds
 * says how many; 0 when none were passed), or -1 with err. */
int hs_sd_listen_fds(hs_sd_t *sd, char *err, size_t errlen);
/* Whether a listen address ("host:port", ":port", "port", "[v6]:port",
 * "unix:/path") names inherited socket f: the same port, or the same path. */
int hs_sd_same_addr(const char *addr, const hs_sd_fd_t *f);

/* sd_notify: read NOTIFY_SOCKET ("/path" or "@abstract"), WATCHDOG_USEC and
 * WATCHDOG_PID (the watchdog is ours when it is absent or this pid), open
 * the socket and unset the variables. 0, or -1 with err (a malformed
 * NOTIFY_SOCKET). */
int hs_sd_notify_open(hs_sd_t *sd, char *err, size_t errlen);
/* Send one datagram ("READY=1\nSTATUS=..."): 0, or -1 (nothing to send
 * to, or the send failed; never fatal). */
int hs_sd_notify(hs_sd_t *sd, const char *msg);
/* READY=1 with MAINPID= and the status. */
void hs_sd_ready(hs_sd_t *sd, const char *status);
/* RELOADING=1 with MONOTONIC_USEC= (systemd 253 wants it; 252 ignores it). */
void hs_sd_reloading(hs_sd_t *sd);
/* A reload ended: READY=1 and STATUS=what; a failure is remembered in the
 * status until a reload succeeds. */
void hs_sd_reloaded(hs_sd_t *sd, int ok, const char *what);
void hs_sd_stopping(hs_sd_t *sd);
/* How often hs_sd_tick wants to run (ms): at most 1000 while there is a
 * notify socket, WATCHDOG_USEC/2 with a watchdog, WATCHDOG_USEC/4 in a
 * worker; 0 when it has nothing to do. */
uint64_t hs_sd_tick_ms(const hs_sd_t *sd);
/* Periodic work at now_ms: STATUS=status when it changed (status NULL: no
 * change), WATCHDOG=1 when due and pet is set. In a worker: a heartbeat
 * ("alive") to the supervisor. */
void hs_sd_tick(hs_sd_t *sd, uint64_t now_ms, const char *status, int pet);
/* A worker of --workers after the fork: it notifies nobody (the supervisor
 * is the service's main process) and sends heartbeats on ctl_fd instead. */
void hs_sd_become_worker(hs_sd_t *sd);
void hs_sd_close(hs_sd_t *sd);

/* The server side (sd.c, on the server's loop): READY=1 now, then the
 * status and the watchdog (or a worker's heartbeats) from a timer of the
 * loop, so a loop that is stuck stops petting the watchdog. */
struct hs_server;
void hs_sd_start(struct hs_server *srv);
/* "serving N clients, generation G" plus the note. */
void hs_sd_status_text(const hs_sd_t *sd, uint64_t clients, uint64_t generation, char *buf,
                       size_t len);

/* Serve inherited socket fd (hs_server_listen_fd: it is never unlinked nor
 * bound again) and print its "listening on" line. 0 or a libuv error. */
struct hs_tls_ctx;
int hs_sd_listen(struct hs_server *srv, int fd, int is_unix, const char *name,
                 struct hs_tls_ctx *tls);

/* --user NAME / --group NAME (names or numbers): look them up now. 0, or
 * -1 with err: an unknown user or group, or a change asked for by a
 * process that is not root. */
int hs_sd_resolve_user(hs_sd_t *sd, const char *user, const char *group, char *err, size_t errlen);
/* Drop to them (supplementary groups, then gid, then uid), once; logs
 * "running as user U (uid N), group G (gid M)". 0, or -1 with err. */
int hs_sd_drop(hs_sd_t *sd, char *err, size_t errlen);

#endif
