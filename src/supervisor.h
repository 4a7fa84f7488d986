/* supervisor.h: --workers N. The process that started forks N workers and
 * stays as their supervisor: it holds the listening sockets, restarts a
 * worker that dies (with back-off), forwards stop and report signals, and
 * coordinates reloads so that every worker takes a new version or none
 * does. It runs no Lua and no libuv loop (a small poll loop), so forking
 * from it is clean. Each worker is an ordinary single-process server with
 * its own loop and Lua state, serving the sockets it was given. */
#ifndef HS_SUPERVISOR_H
#define HS_SUPERVISOR_H

#include <stddef.h>

#define HS_MAX_WORKERS 256

/* What the supervisor needs to start workers. */
typedef struct hs_sup_config {
  int nworkers;
  int nlisteners;
  int *fds;          /* fds[l * nworkers + w]: listener l's socket for worker w */
  char **unix_paths; /* per listener: the path to unlink at exit, or NULL */
  void *stats;       /* shared: nworkers slots of stats_size bytes */
  size_t stats_size;
  int log_level;
  unsigned reload_timeout_ms; /* a worker that does not answer a reload by then fails it */
  const char *script_path;    /* read at each reload: what a restarted worker loads */
  /* A new socket for TCP listener l (fds of a dead worker are closed so
   * that the kernel sends its share to the others): 0, or -1. NULL for a
   * unix listener's, which all workers share. */
  int (*rebind)(int l, int *fd, void *arg);
  void *rebind_arg;
  const int *shared; /* per listener: 1 when its socket is shared (unix, or passed by
                        systemd) */
  /* systemd (sd.h), or NULL: the supervisor is the service's main process,
   * so it sends READY=1 (once the workers are started), RELOADING=1 and
   * READY=1 around a coordinated reload, STOPPING=1, STATUS= from the
   * workers' counters (totals), and pets the watchdog while every worker
   * answers (each sends "alive" from its loop). */
  struct hs_sd *sd;
  void (*totals)(const void *stats, int n, unsigned long long *clients,
                 unsigned long long *generation);
  int keep_sockets; /* a dead worker's TCP sockets stay open for its restart (no
                       rebind: privileges were dropped) */
} hs_sup_config_t;

/* What a worker is given. */
typedef struct hs_worker {
  int id;   /* 1..n */
  int n;    /* how many */
  int ctl;  /* its end of the control socket (SOCK_SEQPACKET) */
  int *fds; /* per listener, its socket */
  void *stats_slot;
  const char *source; /* after a restart: the script as the others run it */
  size_t source_len;
} hs_worker_t;

/* Start the workers and supervise them until every one has stopped after
 * SIGINT or SIGTERM: returns the exit code for the supervisor. In a worker
 * (after fork) it returns -1 with *w filled; the caller then runs the
 * server. */
int hs_supervise(const hs_sup_config_t *cfg, hs_worker_t *w);

/* Block (or unblock) the signals the supervisor and the workers handle
 * (SIGINT, SIGTERM, SIGHUP, SIGUSR2, SIGCHLD): main blocks them before the
 * listeners are announced; hs_supervise unblocks them in the supervisor
 * once its handlers are in place, a worker once its own are. */
void hs_supervisor_block_signals(int block);

/* Control messages, one per SOCK_SEQPACKET datagram, text:
 *   worker -> supervisor: "reload TRIGGER", "rollback", "prepared",
 *                         "failed ERROR", "alive" (a watchdog heartbeat)
 *   supervisor -> worker: "prepare TRIGGER", "commit", "abort", "rollback" */
#define HS_CTL_MAX 2048

#endif
