/* supervisor.c: the supervisor of --workers N (see supervisor.h). A poll
 * loop over a self-pipe for signals and one control socket per worker. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sd.h"
#include "supervisor.h"

typedef struct worker {
  pid_t pid;            /* 0: not running */
  int ctl;              /* the supervisor's end, or -1 */
  long long started;    /* ms */
  long long restart_at; /* ms; 0: none due */
  unsigned backoff;     /* ms before the next restart */
  int answered;         /* in the reload under way */
  int started_once;     /* a start now is a restart */
  long long alive;      /* ms: its last watchdog heartbeat (or its start) */
  int silent;           /* it missed the watchdog's window (logged once) */
} worker_t;

static int sig_pipe[2] = {-1, -1};

static const int sup_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD};
#define NSIGS (int)(sizeof sup_signals / sizeof *sup_signals)

void hs_supervisor_block_signals(int block) {
  sigset_t set;
  sigemptyset(&set);
  for (int k = 0; k < NSIGS; k++) sigaddset(&set, sup_signals[k]);
  sigprocmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

static void block_signals(int block) { hs_supervisor_block_signals(block); }

static void on_signal(int signum) {
  int saved = errno;
  unsigned char b = (unsigned char)signum;
  ssize_t w = write(sig_pipe[1], &b, 1);
  (void)w;
  errno = saved;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct sup {
  const hs_sup_config_t *cfg;
  worker_t w[HS_MAX_WORKERS];
  int stopping; /* a stop was forwarded */
  int stop_signal;
  int reloading; /* a reload is under way */
  char reload_trigger[64];
  long long reload_deadline;
  int reload_queued; /* another was asked for meanwhile */
  char queued_trigger[64];
  int failed; /* in the reload under way */
  char fail_msg[HS_CTL_MAX];
  int fail_worker;
  int exit_code;
  pid_t pid;    /* the supervisor's */
  char *source; /* the script as every worker runs it (a restart loads this) */
  size_t source_len;
  char *next_source; /* as the reload under way read it */
  size_t next_len;
  long long next_tick; /* ms: systemd's status and watchdog are due (sd.c) */
} sup_t;

/* The whole file, malloc'd; NULL when it cannot be read. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t n = 0, cap = 0;
  if (!f) return NULL;
  for (;;) {
    if (n == cap) {
      char *more = realloc(buf, cap ? cap * 2 : 65536);
      if (!more) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = more;
      cap = cap ? cap * 2 : 65536;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

static void block_signals(int block);

static void send_ctl(worker_t *w, const char *msg) {
  if (w->ctl < 0) return;
  ssize_t r = send(w->ctl, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)r; /* a worker that went away is reaped by SIGCHLD */
}

/* In the child after fork: keep only this worker's sockets and its end of
 * the control socket, and put signals back as they were. */
static void become_worker(sup_t *s, int i, int ctl, hs_worker_t *out) {
  const hs_sup_config_t *cfg = s->cfg;
  /* The signals stay blocked until the worker's own handlers are in place
   * (main.c's serve unblocks them), so none is lost or kills it meanwhile. */
  for (int k = 0; k < NSIGS; k++) signal(sup_signals[k], SIG_DFL);
  close(sig_pipe[0]);
  close(sig_pipe[1]);
  for (int k = 0; k < cfg->nworkers; k++)
    if (s->w[k].ctl >= 0) close(s->w[k].ctl);
  static int fds[64];
  for (int l = 0; l < cfg->nlisteners; l++) {
    int mine = cfg->fds[l * cfg->nworkers + i];
    for (int k = 0; k < cfg->nworkers; k++) {
      int fd = cfg->fds[l * cfg->nworkers + k];
      if (fd != mine) close(fd);
    }
    fds[l] = mine;
  }
  /* The supervisor's end: a worker whose supervisor is gone stops. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != s->pid) _exit(0); /* it died before prctl */
  out->source = s->w[i].started_once ? s->source : NULL;
  out->source_len = s->source_len;
  out->id = i + 1;
  out->n = cfg->nworkers;
  out->ctl = ctl;
  out->fds = fds;
  out->stats_slot = (char *)cfg->stats + (size_t)i * cfg->stats_size;
  hs_log_set_worker(out->id);
}

/* Fork worker i. 1 in the parent (or a failure, logged and retried
 * later), 0 in the child. */
static int start_worker(sup_t *s, int i, hs_worker_t *out) {
  worker_t *w = &s->w[i];
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    hs_logf(s->cfg->log_level, HS_LOG_ERROR, 0, "worker %d: socketpair: %s", i + 1,
            strerror(errno));
    w->restart_at = now_ms() + 1000;
    return 1;
  }
  /* A restart: the sockets closed when it died are made again. */
  const hs_sup_config_t *cfg = s->cfg;
  for (int l = 0; l < cfg->nlisteners; l++) {
    int *fd = &cfg->fds[l * cfg->nworkers + i];
    if (*fd >= 0 || cfg->shared[l]) continue;
    if (cfg->rebind(l, fd, cfg->rebind_arg) != 0) {
      hs_logf(cfg->log_level, HS_LOG_ERROR, 0, "worker %d: cannot listen again; retrying in 1 s",
              i + 1);
      close(sv[0]);
      close(sv[1]);
      w->restart_at = now_ms() + 1000;
      return 1;
    }
  }
  /* The stats slot starts clean: a restarted worker's counters begin anew. */
  memset((char *)s->cfg->stats + (size_t)i * s->cfg->stats_size, 0, s->cfg->stats_size);
  block_signals(1);
  pid_t pid = fork();
  if (pid != 0) block_signals(0);
  if (pid < 0) {
    hs_logf(s->cfg->log_level, HS_LOG_ERROR, 0, "worker %d: fork: %s", i + 1, strerror(errno));
    close(sv[0]);
    close(sv[1]);
    w->restart_at = now_ms() + 1000;
    return 1;
  }
  if (pid == 0) {
    close(sv[0]);
    become_worker(s, i, sv[1], out);
    return 0;
  }
  close(sv[1]);
  w->pid = pid;
  w->ctl = sv[0];
  w->started = now_ms();
  w->alive = w->started;
  w->silent = 0;
  w->started_once = 1;
  w->restart_at = 0;
  hs_logf(s->cfg->log_level, HS_LOG_DEBUG, 0, "worker %d started (pid %d)", i + 1, (int)pid);
  return 1;
}

/* Start a coordinated reload: every running worker prepares the new
 * version; the last answer decides (reload_answered). */
static void begin_reload(sup_t *s, const char *trigger) {
  if (s->stopping) return;
  if (s->reloading) {
    s->reload_queued = 1;
    snprintf(s->queued_trigger, sizeof s->queued_trigger, "%s", trigger);
    return;
  }
  char msg[128];
  int n = 0;
  snprintf(msg, sizeof msg, "prepare %s", trigger);
  s->failed = 0;
  s->fail_msg[0] = 0;
  for (int i = 0; i < s->cfg->nworkers; i++) {
    worker_t *w = &s->w[i];
    w->answered = w->pid == 0;
    if (w->pid) {
      send_ctl(w, msg);
      n++;
    }
  }
  if (!n) return;
  free(s->next_source);
  s->next_source = read_file(s->cfg->script_path, &s->next_len);
  s->reloading = 1;
  hs_sd_reloading(s->cfg->sd);
  snprintf(s->reload_trigger, sizeof s->reload_trigger, "%s", trigger);
  s->reload_deadline = now_ms() + s->cfg->reload_timeout_ms;
}

/* A worker answered (or died, or timed out): when all have, commit or
 * abort everywhere. */
static void reload_answered(sup_t *s) {
  for (int i = 0; i < s->cfg->nworkers; i++)
    if (!s->w[i].answered) return;
  const char *verdict = s->failed ? "abort" : "commit";
  for (int i = 0; i < s->cfg->nworkers; i++)
    if (s->w[i].pid) send_ctl(&s->w[i], verdict);
  if (!s->failed && s->next_source) {
    free(s->source);
    s->source = s->next_source;
    s->source_len = s->next_len;
    s->next_source = NULL;
  }
  if (s->failed)
    hs_logf(s->cfg->log_level, HS_LOG_ERROR, 0,
            "reload (%s) failed in worker %d: %s; every worker keeps serving the code it had",
            s->reload_trigger, s->fail_worker, s->fail_msg);
  char status[512];
  if (s->failed)
    snprintf(status, sizeof status,
             "reload (%s) failed in worker %d, every worker keeps its code: %.140s",
             s->reload_trigger, s->fail_worker, s->fail_msg);
  else
    snprintf(status, sizeof status, "reloaded (%s) in every worker", s->reload_trigger);
  hs_sd_reloaded(s->cfg->sd, !s->failed, status);
  s->reloading = 0;
  if (s->reload_queued) {
    s->reload_queued = 0;
    begin_reload(s, s->queued_trigger);
  }
}

static void fail_reload(sup_t *s, int i, const char *why) {
  if (!s->failed) {
    s->failed = 1;
    s->fail_worker = i + 1;
    snprintf(s->fail_msg, sizeof s->fail_msg, "%s", why);
  }
  s->w[i].answered = 1;
}

/* One message from worker i: 1 when there was one to read. */
static int on_ctl_one(sup_t *s, int i) {
  worker_t *w = &s->w[i];
  char msg[HS_CTL_MAX + 1];
  ssize_t n = recv(w->ctl, msg, HS_CTL_MAX, MSG_DONTWAIT);
  if (n <= 0) {
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
      close(w->ctl); /* the worker is going; SIGCHLD reaps it */
      w->ctl = -1;
    }
    return 0;
  }
  msg[n] = 0;
  if (strcmp(msg, "alive") == 0) { /* its loop runs: the watchdog may be petted */
    w->alive = now_ms();
    w->silent = 0;
  } else if (strncmp(msg, "reload ", 7) == 0) {
    begin_reload(s, msg + 7);
  } else if (strcmp(msg, "rollback") == 0) {
    for (int k = 0; k < s->cfg->nworkers; k++)
      if (s->w[k].pid) send_ctl(&s->w[k], "rollback");
  } else if (s->reloading && strcmp(msg, "prepared") == 0) {
    w->answered = 1;
    reload_answered(s);
  } else if (s->reloading && strncmp(msg, "failed ", 7) == 0) {
    fail_reload(s, i, msg + 7);
    reload_answered(s);
  }
  return 1;
}

/* What worker i sent (a few at a time: heartbeats never queue up). */
static void on_ctl(sup_t *s, int i) {
  for (int k = 0; k < 16 && s->w[i].ctl >= 0 && on_ctl_one(s, i); k++) {
  }
}

static void describe_exit(int status, char *out, size_t len) {
  if (WIFEXITED(status))
    snprintf(out, len, "exited with code %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, len, "was killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else
    snprintf(out, len, "stopped");
}

static void reap(sup_t *s) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < s->cfg->nworkers; i++) {
      worker_t *w = &s->w[i];
      if (w->pid != pid) continue;
      w->pid = 0;
      if (w->ctl >= 0) close(w->ctl);
      w->ctl = -1;
      char how[128];
      describe_exit(status, how, sizeof how);
      if (s->reloading && !w->answered) {
        fail_reload(s, i, "the worker died");
        reload_answered(s);
      }
      if (s->stopping) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) s->exit_code = 1;
        hs_logf(s->cfg->log_level, HS_LOG_DEBUG, 0, "worker %d (pid %d) %s", i + 1, (int)pid, how);
        break;
      }
      /* Its own sockets close, so the kernel sends new connections to the
       * others meanwhile instead of queueing them for nobody. */
      for (int l = 0; l < s->cfg->nlisteners; l++) {
        int *fd = &s->cfg->fds[l * s->cfg->nworkers + i];
        if (!s->cfg->shared[l] && !s->cfg->keep_sockets && *fd >= 0) {
          close(*fd);
          *fd = -1;
        }
      }
      /* Died while serving: start it again, waiting longer each time it
       * dies young (10 s of life resets the wait). */
      long long lived = now_ms() - w->started;
      if (lived >= 10000 || w->backoff == 0)
        w->backoff = 100;
      else if (w->backoff < 10000)
        w->backoff = w->backoff * 2 > 10000 ? 10000 : w->backoff * 2;
      w->restart_at = now_ms() + w->backoff;
      hs_logf(s->cfg->log_level, HS_LOG_ERROR, 0,
              "worker %d (pid %d) %s after %lld ms; starting it again in %u ms", i + 1, (int)pid,
              how, lived, w->backoff);
      break;
    }
  }
}

/* systemd: STATUS= from the workers' counters, and WATCHDOG=1 while every
 * running worker's loop answered within half the watchdog's time (a worker
 * starting has that long before its first answer). */
static void sd_tick(sup_t *s, long long now) {
  const hs_sup_config_t *cfg = s->cfg;
  unsigned long long clients = 0, generation = 0;
  char status[256];
  int pet = 1;
  long long window = (long long)(cfg->sd->watchdog_usec / 2000);
  for (int i = 0; cfg->sd->watchdog_usec && i < cfg->nworkers; i++) {
    worker_t *w = &s->w[i];
    if (!w->pid || now - w->alive <= window) continue;
    pet = 0;
    if (!w->silent)
      hs_logf(cfg->log_level, HS_LOG_WARN, 0,
              "worker %d (pid %d) has not answered for %lld ms; the watchdog is not petted",
              i + 1, (int)w->pid, now - w->alive);
    w->silent = 1;
  }
  if (cfg->totals) cfg->totals(cfg->stats, cfg->nworkers, &clients, &generation);
  hs_sd_status_text(cfg->sd, clients, generation, status, sizeof status);
  hs_sd_tick(cfg->sd, (uint64_t)now, s->stopping || s->reloading ? NULL : status, pet);
}

static int running(const sup_t *s) {
  for (int i = 0; i < s->cfg->nworkers; i++)
    if (s->w[i].pid) return 1;
  return 0;
}

/* Stop: the sockets close here first (so no connection waits in a queue
 * nobody will accept from), then every worker drains as one server does. */
static void begin_stop(sup_t *s, int signum) {
  const hs_sup_config_t *cfg = s->cfg;
  if (!s->stopping) {
    s->stopping = 1;
    s->stop_signal = signum;
    hs_sd_stopping(cfg->sd);
    for (int i = 0; i < cfg->nlisteners * cfg->nworkers; i++) {
      int fd = cfg->fds[i];
      if (fd < 0) continue;
      close(fd);
      for (int j = i; j < cfg->nlisteners * cfg->nworkers; j++)
        if (cfg->fds[j] == fd) cfg->fds[j] = -1; /* a unix socket is shared */
    }
    for (int i = 0; i < cfg->nworkers; i++) s->w[i].restart_at = 0;
  }
  for (int i = 0; i < cfg->nworkers; i++)
    if (s->w[i].pid) kill(s->w[i].pid, signum);
}

int hs_supervise(const hs_sup_config_t *cfg, hs_worker_t *out) {
  static sup_t s; /* one per process; static keeps it off the stack */
  memset(&s, 0, sizeof s);
  s.cfg = cfg;
  s.pid = getpid();
  s.source = read_file(cfg->script_path, &s.source_len);
  for (int i = 0; i < cfg->nworkers; i++) s.w[i].ctl = -1;
  if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    hs_logf(cfg->log_level, HS_LOG_ERROR, 0, "supervisor: pipe: %s", strerror(errno));
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int k = 0; k < NSIGS; k++) sigaction(sup_signals[k], &sa, NULL);
  for (int i = 0; i < cfg->nworkers; i++)
    if (start_worker(&s, i, out) == 0) return -1;
  block_signals(0); /* main blocked them before the listening lines */
  hs_logf(cfg->log_level, HS_LOG_INFO, 0, "supervising %d workers (pid %d)", cfg->nworkers,
          (int)getpid());
  {
    /* systemd: the listeners are up and the workers started. */
    char status[256];
    hs_sd_status_text(cfg->sd, 0, 0, status, sizeof status);
    hs_sd_ready(cfg->sd, status);
  }
  struct pollfd pfd[HS_MAX_WORKERS + 1];
  int who[HS_MAX_WORKERS + 1];
  while (!s.stopping || running(&s)) {
    long long now = now_ms(), next = -1;
    for (int i = 0; i < cfg->nworkers; i++) {
      worker_t *w = &s.w[i];
      if (!w->pid && w->restart_at && !s.stopping) {
        if (w->restart_at <= now) {
          if (start_worker(&s, i, out) == 0) return -1;
        } else if (next < 0 || w->restart_at < next) {
          next = w->restart_at;
        }
      }
    }
    uint64_t tick = hs_sd_tick_ms(cfg->sd);
    if (tick) {
      if (now >= s.next_tick) {
        sd_tick(&s, now);
        s.next_tick = now + (long long)tick;
      }
      if (next < 0 || s.next_tick < next) next = s.next_tick;
    }
    if (s.reloading) {
      if (now >= s.reload_deadline) {
        for (int i = 0; i < cfg->nworkers; i++)
          if (!s.w[i].answered) fail_reload(&s, i, "no answer in time");
        reload_answered(&s);
      } else if (next < 0 || s.reload_deadline < next) {
        next = s.reload_deadline;
      }
    }
    int n = 0;
    pfd[n].fd = sig_pipe[0];
    pfd[n].events = POLLIN;
    who[n++] = -1;
    for (int i = 0; i < cfg->nworkers; i++)
      if (s.w[i].ctl >= 0) {
        pfd[n].fd = s.w[i].ctl;
        pfd[n].events = POLLIN;
        who[n++] = i;
      }
    int timeout = next < 0 ? -1 : (int)(next > now ? next - now : 0);
    int r = poll(pfd, (nfds_t)n, timeout);
    if (r < 0 && errno != EINTR) {
      hs_logf(cfg->log_level, HS_LOG_ERROR, 0, "supervisor: poll: %s", strerror(errno));
      break;
    }
    for (int k = 1; r > 0 && k < n; k++)
      if (pfd[k].revents) on_ctl(&s, who[k]);
    if (r > 0 && pfd[0].revents) {
      unsigned char b;
      while (read(sig_pipe[0], &b, 1) == 1) {
        int signum = b;
        if (signum == SIGCHLD) {
          reap(&s);
        } else if (signum == SIGINT || signum == SIGTERM) {
          if (!s.stopping)
            hs_logf(cfg->log_level, HS_LOG_INFO, 0, "%s: stopping %d workers",
                    signum == SIGINT ? "SIGINT" : "SIGTERM", cfg->nworkers);
          begin_stop(&s, signum);
        } else if (signum == SIGHUP) {
          begin_reload(&s, "SIGHUP");
        } else if (signum == SIGUSR2 || signum == SIGUSR1) {
          /* SIGUSR1: every process reopens its --log-file, this one too. */
          if (signum == SIGUSR1 && hs_log_reopen() == 1)
            hs_logf(cfg->log_level, HS_LOG_INFO, 0, "SIGUSR1: log file reopened");
          for (int i = 0; i < cfg->nworkers; i++)
            if (s.w[i].pid) kill(s.w[i].pid, signum);
        }
      }
    }
  }
  reap(&s);
  free(s.source);
  free(s.next_source);
  for (int l = 0; l < cfg->nlisteners; l++)
    if (cfg->unix_paths[l]) unlink(cfg->unix_paths[l]);
  hs_logf(cfg->log_level, HS_LOG_INFO, 0, "stopped");
  return s.exit_code;
}
