/* main.c: the command line, start-up, and the exit code.
 *
 *   hotsock [options] SCRIPT [ARGS...]
 *
 * Exit codes: 0 clean stop, 1 runtime failure (cannot listen...), 2 bad
 * usage or a script that does not load. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin.h"
#include "host.h"
#include "sd.h"
#include "supervisor.h"
#include "tls.h"
#include "workbench.h"

#define HS_MAX_LISTENERS 64
/* With --workers: each listener's address as printed, and whether it is a
 * unix socket (filled by the supervisor, read by each worker). */
static char w_names[HS_MAX_LISTENERS][128];
static int w_unix[HS_MAX_LISTENERS];
/* --pid-file: written once the listeners are up, removed at exit (NULL in
 * a worker: the pid is the supervisor's). */
static const char *pid_file;
static const char *admin_addr; /* --admin, else the module's admin field */
static int admin_eval;
static int pid_written;

static int write_pid_file(void) {
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  int fd = open(pid_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || write(fd, buf, (size_t)n) != n) {
    hs_logf(HS_LOG_DEBUG, HS_LOG_ERROR, 0, "cannot write pid file %s: %s", pid_file,
            strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  pid_written = 1;
  return 0;
}

static void remove_pid_file(void) {
  if (pid_file && pid_written) unlink(pid_file);
  pid_written = 0;
}

/* Descriptors each client, listener and the rest need beyond max_clients. */
#define HS_FD_MARGIN 32

/* The soft open-file limit goes up to the hard one. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max) return;
  rlim_t soft = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && rl.rlim_max == RLIM_INFINITY) {
    rl.rlim_cur = 1048576; /* Linux's usual nr_open */
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = soft;
  }
}

/* One warning line when max_clients cannot all be served. */
static void check_nofile(const hs_server_t *srv) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
  unsigned long long need = (unsigned long long)srv->limits.max_clients + HS_FD_MARGIN;
  if (need > (unsigned long long)rl.rlim_cur)
    hs_logf(srv->log_level, HS_LOG_WARN, 0,
            "max_clients %zu needs about %llu file descriptors; the limit is %llu (ulimit -n)",
            srv->limits.max_clients, need, (unsigned long long)rl.rlim_cur);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: hotsock [options] SCRIPT [ARGS...]\n"
          "       hotsock test [options] [SCRIPT] TRANSCRIPT...   (hotsock test --help)\n"
          "       hotsock record --listen ADDR --upstream HOST:PORT FILE\n"
          "       hotsock console ADDR                 (the admin console; see --admin)\n"
          "\n"
          "Run a Lua script that serves TCP clients. The script returns a table of\n"
          "handlers; see docs/lua-api.md. Editing the script reloads it live.\n"
          "\n"
          "options:\n"
          "  -l, --listen ADDR       listen on ADDR (repeatable; overrides the script):\n"
          "                          host:port, [v6]:port, :port (all interfaces),\n"
          "                          unix:/path. Port 0 picks a free port.\n"
          "                          tls://host:port is a TLS listener (needs\n"
          "                          --tls-cert and --tls-key).\n"
          "      --tls-cert FILE     certificate chain (PEM) of the tls:// listeners\n"
          "      --tls-key FILE      private key (PEM) of the tls:// listeners\n"
          "      --proxy-protocol    every -l listener expects a PROXY protocol header\n"
          "                          (v1 or v2) from a balancer before the client's bytes\n"
          "      --workers N|auto    serve with N worker processes (auto: one per CPU)\n"
          "      --health ADDR       answer health checks on ADDR in C: HTTP 200 \"up\",\n"
          "                          503 \"draining\" once a stop was asked for\n"
          "      --admin ADDR        serve the admin endpoint on ADDR (unix:/path or a\n"
          "                          loopback port): /metrics, /health, /stats,\n"
          "                          /connections, a status page at /, and a console\n"
          "      --admin-eval        allow the console's eval (unix socket only)\n"
          "      --stop-grace MS     on SIGTERM keep serving MS with health checks failing,\n"
          "                          then stop (default 0)\n"
          "      --check             load and validate the script, then exit\n"
          "      --no-watch          do not reload when the script changes (SIGHUP does)\n"
          "      --log-level LEVEL   debug, info (default), warn or error\n"
          "      --log-file PATH     log to PATH (appended) instead of stderr; the\n"
          "                          listening lines go to both. SIGUSR1 reopens it\n"
          "      --log-format FMT    text (default) or json: one JSON object a line\n"
          "      --pid-file PATH     write the pid to PATH once listening (with\n"
          "                          --workers the supervisor's); removed at exit\n"
          "      --user NAME         once listening, run as user NAME (and its groups);\n"
          "                          needs root. With --workers the workers run as NAME\n"
          "      --group NAME        ... and as group NAME (default: the user's)\n"
          "      --max-clients N     clients served at once (default 10000)\n"
          "      --max-frame BYTES   longest message (default 65536)\n"
          "      --max-inbuf BYTES   unframed input per client (default 1 MiB)\n"
          "      --max-outbuf BYTES  queued output per client (default 8 MiB)\n"
          "      --backlog N         listen backlog (default SOMAXCONN)\n"
          "      --drain-timeout MS  output drain time at shutdown (default 5000)\n"
          "      --handler-budget MS time one event may take (default 100)\n"
          "      --max-lua-memory BYTES  Lua heap cap (default 256 MiB)\n"
          "      --timeout NAME=MS   a client timeout: idle, read, write (default\n"
          "                          60000), frame or first_byte (default 30000);\n"
          "                          0 turns it off. Repeatable, or comma-separated.\n"
          "  -V, --version           print the version\n"
          "  -h, --help              print this help\n"
          "\n"
          "The default address is 127.0.0.1:7000 when neither the script nor -l\n"
          "names one. SIGHUP reloads; SIGUSR2 logs the counters; SIGUSR1 reopens the\n"
          "log file; SIGINT/SIGTERM stop after draining output. At start the soft\n"
          "open-file limit is raised to the hard one; a warning says when it is\n"
          "too low for max_clients. Control bytes in logged text are written \\xNN;\n"
          "under systemd (JOURNAL_STREAM) each line starts with its priority, <6>.\n"
          "Sockets passed by systemd (socket activation: LISTEN_FDS) replace the\n"
          "listen addresses of the script and -l. With NOTIFY_SOCKET (Type=notify)\n"
          "it reports READY=1, RELOADING=1, STOPPING=1 and STATUS=, and pets the\n"
          "watchdog (WatchdogSec=) from its event loop.\n"
          "\n"
          "See hotsock(1) for signals, exit codes and files.\n");
}

enum {
  OPT_CHECK = 256,
  OPT_NO_WATCH,
  OPT_LOG_LEVEL,
  OPT_MAX_CLIENTS,
  OPT_MAX_FRAME,
  OPT_MAX_INBUF,
  OPT_MAX_OUTBUF,
  OPT_BACKLOG,
  OPT_DRAIN,
  OPT_BUDGET,
  OPT_LUA_MEM,
  OPT_TIMEOUT,
  OPT_TLS_CERT,
  OPT_TLS_KEY,
  OPT_PROXY,
  OPT_WORKERS,
  OPT_HEALTH,
  OPT_STOP_GRACE,
  OPT_LOG_FILE,
  OPT_PID_FILE,
  OPT_LOG_FORMAT
};

enum { OPT_USER = 400, OPT_GROUP }; /* --user, --group (sd.c) */
enum { OPT_ADMIN = 500, OPT_ADMIN_EVAL }; /* the admin endpoint (admin.c) */

/* Running as a service (sd.c): --user/--group looked up (a name that does
 * not exist is an error even for --check); unless --check, the sockets
 * systemd passed (LISTEN_FDS) and its notify socket (NOTIFY_SOCKET). 0, or
 * the exit code. */
static int setup_service(hs_sd_t *sd, hs_server_t *srv, const char *user, const char *group) {
  char err[1024];
  hs_sd_init(sd);
  srv->sd = sd;
  if (hs_sd_resolve_user(sd, user, group, err, sizeof err) != 0) {
    fprintf(stderr, "hotsock: %s\n", err);
    return 2;
  }
  if (srv->lua.check_only) return 0; /* binds nothing, tells nobody */
  if (hs_sd_listen_fds(sd, err, sizeof err) != 0) {
    fprintf(stderr, "hotsock: %s\n", err);
    return 1;
  }
  if (hs_sd_notify_open(sd, err, sizeof err) != 0)
    hs_logf(HS_LOG_DEBUG, HS_LOG_WARN, 0, "%s", err);
  return 0;
}

static int parse_size(const char *opt, const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v == 0 || s[0] < '0' || s[0] > '9') {
    fprintf(stderr, "hotsock: %s needs a positive integer, not \"%s\"\n", opt, s);
    return -1;
  }
  *out = (size_t)v;
  return 0;
}

/* A time in ms for an option: positive and at most HS_MAX_MS. */
static int parse_ms(const char *opt, const char *s, size_t *out) {
  if (parse_size(opt, s, out)) return -1;
  if (*out > HS_MAX_MS) {
    fprintf(stderr, "hotsock: %s is at most %llu ms\n", opt, HS_MAX_MS);
    return -1;
  }
  return 0;
}

/* --timeout idle=30000[,frame=0...]: set cli timeouts; -1 on a bad one. */
static int parse_timeouts(const char *arg, hs_timeouts_t *to) {
  static const char *const names[] = {"idle", "read", "write", "frame", "first_byte"};
  const char *p = arg;
  while (*p) {
    const char *eq = strchr(p, '='), *comma = strchr(p, ',');
    if (!comma) comma = p + strlen(p);
    uint64_t *slot = NULL;
    uint64_t *slots[] = {&to->idle, &to->read, &to->write, &to->frame, &to->first_byte};
    for (int i = 0; eq && eq < comma && i < 5; i++)
      if ((size_t)(eq - p) == strlen(names[i]) && strncmp(p, names[i], (size_t)(eq - p)) == 0)
        slot = slots[i];
    char *end = NULL;
    errno = 0;
    int digit = slot && eq[1] >= '0' && eq[1] <= '9'; /* strtoull skips spaces, takes '-' */
    unsigned long long v = digit ? strtoull(eq + 1, &end, 10) : 0;
    if (!digit || errno || end != comma || v > HS_MAX_MS) {
      fprintf(stderr,
              "hotsock: --timeout takes NAME=MS with NAME idle, read, write, "
              "frame or first_byte and MS at most %llu, not \"%s\"\n",
              HS_MAX_MS, arg);
      return -1;
    }
    *slot = v;
    p = *comma ? comma + 1 : comma;
  }
  return 0;
}

static void free_ctxs(hs_tls_ctx_t **ctxs, int n) {
  if (!ctxs) return;
  for (int i = 0; i < n; i++) hs_tls_ctx_unref(ctxs[i]);
  free(ctxs);
}

/* Socket activation (sd.c): the sockets systemd passed replace the listen
 * addresses of -l and of the script. One with the port (TCP) or path (unix)
 * of a listener named there takes that listener's settings (tls,
 * proxy_protocol); one named "health" (FileDescriptorName=health) answers
 * health checks. 0, or -1 (out of memory). */
static int activated_specs(const hs_sd_t *sd, hs_listen_spec_t **specs_io, int *n_io) {
  hs_listen_spec_t *given = *specs_io, *act = calloc((size_t)sd->nfds + 1, sizeof *act);
  if (!act) return -1;
  for (int i = 0; i < sd->nfds; i++) {
    const hs_sd_fd_t *f = &sd->fds[i];
    act[i].fd = f->fd;
    act[i].fd_unix = f->is_unix;
    act[i].health = strcmp(f->label, "health") == 0;
    int ok = (act[i].addr = strdup(f->name)) != NULL;
    for (int j = 0; ok && j < *n_io; j++) {
      if (!given[j].addr || !hs_sd_same_addr(given[j].addr, f)) continue;
      act[i].proxy = given[j].proxy;
      if (given[j].tls)
        ok = (act[i].tls = calloc(1, sizeof *act[i].tls)) != NULL &&
             hs_tls_opts_copy(act[i].tls, given[j].tls) == 0;
      break;
    }
    if (!ok) {
      hs_listen_specs_free(act, i + 1);
      return -1;
    }
  }
  hs_logf(HS_LOG_DEBUG, HS_LOG_INFO, 0,
          "socket activation: serving the %d socket(s) passed by systemd instead of the listen "
          "addresses of the script and -l",
          sd->nfds);
  hs_listen_specs_free(given, *n_io);
  *specs_io = act;
  *n_io = sd->nfds;
  return 0;
}

/* Start-up up to the listeners: the server, the script (loaded), the TLS
 * defaults, the listeners to serve (-l, else the module's listen field,
 * else the default; *specs given means keep those) and their TLS contexts,
 * made now so --check reports a bad certificate or key. 0, or the exit
 * code. */
static int start(hs_server_t *srv, const char **listen, int nlisten, int proxy,
                 const char *health_addr, hs_listen_spec_t **specs_out, int *nspecs_out,
                 hs_tls_ctx_t ***ctxs_out) {
  uv_loop_t *loop = uv_default_loop();
  if (hs_server_init(srv, loop, &hs_host_events) != 0 || hs_script_open(srv) != 0) {
    fprintf(stderr, "hotsock: out of memory at start-up\n");
    return 1;
  }
  /* The heap cap and the budget apply from the first load on. */
  hs_limits_default(&srv->limits);
  if (srv->cli.max_lua_memory) srv->limits.max_lua_memory = srv->cli.max_lua_memory;
  if (srv->cli.handler_budget) srv->limits.handler_budget = srv->cli.handler_budget;
  char err[4096];
  if (hs_script_load(srv, err, sizeof err) != 0) {
    fprintf(stderr, "hotsock: %s\n", err);
    return 2;
  }
  /* The default TLS settings (the module's tls field, --tls-cert/--tls-key):
   * a default certificate must load now, so --check reports a bad one. */
  struct hs_tls_opts *tls_default = NULL;
  if (hs_ltls_defaults(srv, &tls_default, err, sizeof err) != 0) {
    fprintf(stderr, "hotsock: %s: %s\n", srv->lua.script_path, err);
    return 2;
  }
  hs_ltls_set_defaults(srv, tls_default);
  if (hs_ltls_check_defaults(srv, err, sizeof err) != 0) {
    fprintf(stderr, "hotsock: %s\n", err);
    return 2;
  }
  /* The shared dictionaries: made here, before any fork (a worker finds them). */
  if (hs_ldict_setup(srv, err, sizeof err) != 0) {
    fprintf(stderr, "hotsock: %s: dicts: %s\n", srv->lua.script_path, err);
    return 2;
  }
  hs_listen_spec_t *specs = *specs_out;
  int nspecs = *nspecs_out;
  if (specs) {
    /* A worker serves what the supervisor bound. */
  } else if (nlisten) {
    specs = calloc((size_t)nlisten, sizeof *specs);
    if (!specs) return 1;
    for (int i = 0; i < nlisten; i++, nspecs++) {
      const char *a = listen[i];
      if (strncmp(a, "tls://", 6) == 0) {
        if (!(specs[i].tls = calloc(1, sizeof *specs[i].tls))) return 1;
        if (hs_ltls_server_opts(srv, NULL, 0, specs[i].tls, err, sizeof err) != 0) {
          fprintf(stderr,
                  "hotsock: -l %s needs --tls-cert FILE and --tls-key FILE (or the module's tls "
                  "field)\n",
                  a);
          return 2;
        }
        a += 6;
      }
      specs[i].addr = strdup(a);
      specs[i].proxy = proxy;
    }
  } else {
    nspecs = hs_module_listen_addrs(srv, &specs, err, sizeof err);
    if (nspecs < 0) {
      fprintf(stderr, "hotsock: %s: %s\n", srv->lua.script_path, err);
      return 2;
    }
  }
  if (!nspecs) {
    hs_listen_specs_free(specs, 0);
    specs = calloc(2, sizeof *specs);
    if (!specs || !(specs[0].addr = strdup("127.0.0.1:7000"))) return 1;
    nspecs = 1;
  }
  if (!*specs_out && srv->sd && srv->sd->nfds && activated_specs(srv->sd, &specs, &nspecs) != 0)
    return 1;
  if (health_addr && !*specs_out) {
    hs_listen_spec_t *more = realloc(specs, (size_t)(nspecs + 1) * sizeof *specs);
    if (!more) return 1;
    specs = more;
    memset(&specs[nspecs], 0, sizeof *specs);
    if (!(specs[nspecs].addr = strdup(health_addr))) return 1;
    specs[nspecs++].health = 1;
  }
  *specs_out = specs;
  *nspecs_out = nspecs;
  hs_tls_ctx_t **ctxs = calloc((size_t)nspecs, sizeof *ctxs);
  if (!ctxs) return 1;
  for (int i = 0; i < nspecs; i++) {
    if (!specs[i].tls) continue;
    ctxs[i] = hs_tls_ctx_new(specs[i].tls, 0, err, sizeof err);
    if (!ctxs[i]) {
      fprintf(stderr, "hotsock: listener %s: %s\n", specs[i].addr, err);
      free_ctxs(ctxs, nspecs);
      hs_listen_specs_free(specs, nspecs);
      *specs_out = NULL;
      return 2;
    }
  }
  *ctxs_out = ctxs;
  return 0;
}

/* --user / --group: drop to them once everything privileged is done (the
 * listeners bound, the pid and log files open). 0, or -1 (logged). */
static int drop_privileges(hs_sd_t *sd) {
  char err[512];
  if (hs_sd_drop(sd, err, sizeof err) == 0) return 0;
  hs_logf(HS_LOG_DEBUG, HS_LOG_ERROR, 0, "%s", err);
  return -1;
}

/* Listen (or, in a worker, serve the sockets given), run until stopped,
 * and clean up: the exit code. */
static int serve(hs_server_t *srv, hs_listen_spec_t *specs, int nspecs, hs_tls_ctx_t **ctxs,
                 const hs_worker_t *w, int watch) {
  uv_loop_t *loop = srv->loop;
  hs_server_signals(srv);
  hs_supervisor_block_signals(0); /* a worker's were blocked until now */
  int rc = 0;
  for (int i = 0; i < nspecs && !rc; i++) {
    rc = w                  ? hs_server_listen_fd(srv, w->fds[i], w_unix[i], w_names[i], ctxs[i])
         : specs[i].fd > 0 ? hs_sd_listen(srv, specs[i].fd, specs[i].fd_unix, specs[i].addr, ctxs[i])
                           : hs_server_listen(srv, specs[i].addr, ctxs[i]);
    if (rc == 0) {
      ctxs[i] = NULL;                         /* the listener's now */
      srv->listeners->proxy = specs[i].proxy; /* the new listener is the first */
      srv->listeners->health = specs[i].health;
    }
  }
  free_ctxs(ctxs, nspecs);
  hs_listen_specs_free(specs, nspecs);
  if (rc == 0 && admin_addr) {
    char aerr[512];
    if (hs_admin_start(srv, admin_addr, admin_eval, aerr, sizeof aerr) != 0) {
      hs_log(srv, HS_LOG_ERROR, "admin: %s", aerr);
      rc = 1;
    }
  }
  if (rc == 0 && w && hs_worker_attach(srv, w) != 0) rc = 1;
  if (rc == 0 && pid_file && write_pid_file() != 0) rc = 1;
  if (rc == 0 && !w && drop_privileges(srv->sd) != 0) rc = 1; /* --user, --group */
  if (rc != 0) {
    hs_server_abort(srv); /* an hs.connect the chunk made closes too */
    uv_run(loop, UV_RUN_DEFAULT);
    hs_script_close(srv);
    hs_server_free(srv);
    hs_admin_free(srv);
    uv_loop_close(loop);
    return 1;
  }
  if (watch) hs_watch_start(srv);
  hs_sd_start(srv); /* systemd: READY=1, then the status and the watchdog */
  uv_run(loop, UV_RUN_DEFAULT);
  remove_pid_file();
  hs_log(srv, HS_LOG_INFO, "stopped");
  hs_script_close(srv);
  hs_server_free(srv);
  hs_admin_free(srv);
  /* Every handle closed and every connection freed: a clean stop. */
  if (uv_loop_close(loop) != 0) {
    hs_log(srv, HS_LOG_ERROR, "the loop still has open handles at exit (a bug)");
    return 1;
  }
  return srv->exit_code;
}

/* A dead worker's socket for TCP listener l, made again for its restart. */
static int rebind(int l, int *fd, void *arg) {
  char name[128], err[256];
  int is_unix;
  (void)arg;
  if (hs_server_bind_shared(w_names[l], 1, SOMAXCONN, fd, name, sizeof name, &is_unix, err,
                            sizeof err) != 0) {
    hs_logf(HS_LOG_DEBUG, HS_LOG_ERROR, 0, "%s", err);
    return -1;
  }
  return 0;
}

/* The supervisor's STATUS=: clients and generation over every worker. */
static void worker_totals(const void *stats, int n, unsigned long long *clients,
                          unsigned long long *generation) {
  const hs_stats_t *st = stats;
  *clients = *generation = 0;
  for (int i = 0; i < n; i++) {
    *clients += st[i].active;
    if (st[i].generation > *generation) *generation = st[i].generation;
  }
}

/* --workers N: bind the listeners here, let go of this process's server
 * and script, and supervise N workers (supervisor.c); each worker starts
 * its own server and script from the settings as given (proto) and serves
 * its sockets. */
static int supervise(hs_server_t *srv, const hs_server_t *proto, hs_listen_spec_t *specs,
                     int nspecs, hs_tls_ctx_t **ctxs, int nworkers, int watch) {
  char err[512];
  int *fds = calloc((size_t)nspecs * (size_t)nworkers, sizeof *fds);
  char **unix_paths = calloc((size_t)nspecs, sizeof *unix_paths);
  /* Per listener: one socket all workers share (unix, or passed by systemd). */
  int *shared = calloc((size_t)nspecs + 1, sizeof *shared);
  int bound = 0, rc = 0;
  /* From the first listening line on, a signal waits for the supervisor's
   * handlers (hs_supervise) instead of killing it. */
  hs_supervisor_block_signals(1);
  if (!fds || !unix_paths || !shared || nspecs > HS_MAX_LISTENERS) {
    fprintf(stderr, "hotsock: %s\n",
            fds && unix_paths && shared ? "too many listeners for --workers" : "out of memory");
    rc = 1;
  }
  for (int i = 0; i < nspecs && !rc; i++, bound++) {
    if (specs[i].fd > 0) {
      /* Passed by systemd: every worker accepts from it; never unlinked. */
      for (int k = 0; k < nworkers; k++) fds[(size_t)i * (size_t)nworkers + (size_t)k] = specs[i].fd;
      snprintf(w_names[i], sizeof w_names[i], "%s", specs[i].addr);
      w_unix[i] = specs[i].fd_unix;
      shared[i] = 1;
      hs_logf_console(HS_LOG_INFO, "listening on %s%s", w_names[i], specs[i].tls ? " (tls)" : "");
      continue;
    }
    if (hs_server_bind_shared(specs[i].addr, nworkers, srv->limits.backlog,
                              fds + (size_t)i * (size_t)nworkers, w_names[i], sizeof w_names[i],
                              &w_unix[i], err, sizeof err) != 0) {
      hs_log(srv, HS_LOG_ERROR, "%s", err);
      rc = 1;
      break;
    }
    if (w_unix[i]) unix_paths[i] = strdup(w_names[i] + 5);
    shared[i] = w_unix[i];
    hs_logf_console(HS_LOG_INFO, "listening on %s%s", w_names[i], specs[i].tls ? " (tls)" : "");
  }
  /* Workers share the session ticket keys: the secret is made before they
   * are forked. */
  if (!rc && hs_tls_ticket_secret() != 0) {
    fprintf(stderr, "hotsock: no randomness for the TLS ticket keys\n");
    rc = 1;
  }
  if (!rc && pid_file && write_pid_file() != 0) rc = 1;
  /* --user, --group: here, so the workers are forked unprivileged. */
  if (!rc && drop_privileges(proto->sd) != 0) rc = 1;
  /* This process serves nothing itself. */
  free_ctxs(ctxs, nspecs);
  hs_server_abort(srv);
  uv_run(srv->loop, UV_RUN_DEFAULT);
  hs_script_close(srv);
  hs_server_free(srv);
  uv_loop_close(srv->loop);
  hs_stats_t *stats = rc ? NULL
                         : mmap(NULL, sizeof(hs_stats_t) * (size_t)nworkers, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (!rc && stats == MAP_FAILED) {
    fprintf(stderr, "hotsock: shared memory for --workers: %s\n", strerror(errno));
    rc = 1;
  }
  if (!rc) {
    hs_sup_config_t cfg = {nworkers,         nspecs, fds,
                           unix_paths,       stats,  sizeof(hs_stats_t),
                           proto->log_level, 30000,  proto->lua.script_path,
                           rebind,           NULL,   shared,
                           NULL,             NULL,   0};
    cfg.sd = proto->sd; /* systemd: the supervisor is the main process */
    cfg.totals = worker_totals;
    /* Unprivileged, it might not bind a low port again: a dead worker's
     * sockets stay open for its restart. */
    cfg.keep_sockets = proto->sd && proto->sd->dropped;
    hs_worker_t w;
    rc = hs_supervise(&cfg, &w);
    if (rc < 0) {
      /* A worker: an ordinary server on the sockets it was given. */
      pid_file = NULL; /* the supervisor's, not this one's */
      pid_written = 0;
      *srv = *proto;
      hs_sd_become_worker(srv->sd); /* the supervisor notifies systemd */
      free(shared);
      srv->worker_id = w.id;
      srv->nworkers = w.n;
      srv->stats_all = stats;
      hs_listen_spec_t *mine = specs;
      int n = nspecs;
      hs_tls_ctx_t **wctxs = NULL;
      for (int i = 0; i < nspecs; i++) free(unix_paths[i]);
      free(unix_paths);
      srv->lua.source = w.source;
      srv->lua.source_len = w.source_len;
      int r = start(srv, NULL, 0, 0, NULL, &mine, &n, &wctxs);
      if (r) _exit(r); /* the supervisor says so and starts it again */
      r = serve(srv, mine, n, wctxs, &w, watch && w.id == 1);
      free(fds);
      return r;
    }
  }
  remove_pid_file();
  /* Sockets still open (a failed start; after a stop they are closed). */
  for (int i = 0; fds && i < bound; i++)
    for (int k = 0; k < (shared[i] ? 1 : nworkers); k++)
      if (fds[i * nworkers + k] >= 0) close(fds[i * nworkers + k]);
  free(shared);
  for (int i = 0; unix_paths && i < nspecs; i++) free(unix_paths[i]);
  free(unix_paths);
  free(fds);
  hs_listen_specs_free(specs, nspecs);
  return rc;
}

int main(int argc, char **argv) {
  /* hotsock test / hotsock record: the workbench (workbench.c), a Lua
   * program in a plain Lua state of its own; no server is set up here. */
  if (argc > 1 && (strcmp(argv[1], "test") == 0 || strcmp(argv[1], "record") == 0))
    return hs_workbench_main(argc - 1, argv + 1);
  /* hotsock console ADDR: a client of the admin endpoint (console.c). */
  if (argc > 1 && strcmp(argv[1], "console") == 0) return hs_console_main(argc - 1, argv + 1);
  static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                       {"check", no_argument, NULL, OPT_CHECK},
                                       {"no-watch", no_argument, NULL, OPT_NO_WATCH},
                                       {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
                                       {"max-clients", required_argument, NULL, OPT_MAX_CLIENTS},
                                       {"max-frame", required_argument, NULL, OPT_MAX_FRAME},
                                       {"max-inbuf", required_argument, NULL, OPT_MAX_INBUF},
                                       {"max-outbuf", required_argument, NULL, OPT_MAX_OUTBUF},
                                       {"backlog", required_argument, NULL, OPT_BACKLOG},
                                       {"drain-timeout", required_argument, NULL, OPT_DRAIN},
                                       {"handler-budget", required_argument, NULL, OPT_BUDGET},
                                       {"max-lua-memory", required_argument, NULL, OPT_LUA_MEM},
                                       {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                       {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
                                       {"tls-key", required_argument, NULL, OPT_TLS_KEY},
                                       {"proxy-protocol", no_argument, NULL, OPT_PROXY},
                                       {"workers", required_argument, NULL, OPT_WORKERS},
                                       {"health", required_argument, NULL, OPT_HEALTH},
                                       {"stop-grace", required_argument, NULL, OPT_STOP_GRACE},
                                       {"log-file", required_argument, NULL, OPT_LOG_FILE},
                                       {"pid-file", required_argument, NULL, OPT_PID_FILE},
                                       {"admin", required_argument, NULL, OPT_ADMIN},
                                       {"admin-eval", no_argument, NULL, OPT_ADMIN_EVAL},
                                       {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
                                       {"user", required_argument, NULL, OPT_USER},
                                       {"group", required_argument, NULL, OPT_GROUP},
                                       {"version", no_argument, NULL, 'V'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  hs_server_t srv;
  memset(&srv, 0, sizeof srv);
  srv.log_level = HS_LOG_INFO;
  srv.lua.load_budget = 500;
  srv.cli.timeouts = (hs_timeouts_t){HS_UNSET, HS_UNSET, HS_UNSET, HS_UNSET, HS_UNSET};
  const char **listen = calloc((size_t)argc + 1, sizeof *listen);
  int nlisten = 0, watch = 1, proxy = 0, workers_opt = 0, ch;
  const char *health_addr = NULL, *log_file = NULL;
  const char *user = NULL, *group = NULL; /* --user, --group */
  size_t v;
  if (!listen) return 1;
  /* "+": options end at the script; what follows belongs to it. */
  while ((ch = getopt_long(argc, argv, "+l:Vh", opts, NULL)) != -1) {
    switch (ch) {
    case 'l': listen[nlisten++] = optarg; break;
    case OPT_CHECK: srv.lua.check_only = 1; break;
    case OPT_NO_WATCH: watch = 0; break;
    case OPT_LOG_LEVEL:
      srv.log_level = hs_log_parse_level(optarg);
      if (srv.log_level < 0) {
        fprintf(stderr, "hotsock: --log-level is debug, info, warn or error, not \"%s\"\n", optarg);
        return 2;
      }
      break;
    case OPT_MAX_CLIENTS:
      if (parse_size("--max-clients", optarg, &srv.cli.max_clients)) return 2;
      break;
    case OPT_MAX_FRAME:
      if (parse_size("--max-frame", optarg, &srv.cli.max_frame)) return 2;
      break;
    case OPT_MAX_INBUF:
      if (parse_size("--max-inbuf", optarg, &srv.cli.max_inbuf)) return 2;
      break;
    case OPT_MAX_OUTBUF:
      if (parse_size("--max-outbuf", optarg, &srv.cli.max_outbuf)) return 2;
      break;
    case OPT_BACKLOG:
      if (parse_size("--backlog", optarg, &v)) return 2;
      srv.cli.backlog = v > INT_MAX ? INT_MAX : (int)v;
      break;
    case OPT_DRAIN:
      if (parse_ms("--drain-timeout", optarg, &v)) return 2;
      srv.cli.drain_timeout = v;
      break;
    case OPT_BUDGET:
      if (parse_ms("--handler-budget", optarg, &v)) return 2;
      srv.cli.handler_budget = v;
      break;
    case OPT_LUA_MEM:
      if (parse_size("--max-lua-memory", optarg, &srv.cli.max_lua_memory)) return 2;
      break;
    case OPT_TIMEOUT:
      if (parse_timeouts(optarg, &srv.cli.timeouts)) return 2;
      break;
    case OPT_TLS_CERT: srv.lua.cli_tls_cert = optarg; break;
    case OPT_TLS_KEY: srv.lua.cli_tls_key = optarg; break;
    case OPT_PROXY: proxy = 1; break;
    case OPT_HEALTH: health_addr = optarg; break;
    case OPT_LOG_FILE: log_file = optarg; break;
    case OPT_PID_FILE: pid_file = optarg; break;
    case OPT_ADMIN: admin_addr = optarg; break;
    case OPT_ADMIN_EVAL: admin_eval = 1; break;
    case OPT_USER: user = optarg; break;
    case OPT_GROUP: group = optarg; break;
    case OPT_LOG_FORMAT:
      if (hs_log_parse_format(optarg) < 0) {
        fprintf(stderr, "hotsock: --log-format is text or json, not \"%s\"\n", optarg);
        return 2;
      }
      hs_log_set_format(hs_log_parse_format(optarg));
      break;
    case OPT_STOP_GRACE:
      if (parse_ms("--stop-grace", optarg, &v)) return 2;
      srv.cli.stop_grace = v;
      break;
    case OPT_WORKERS:
      if (hs_parse_workers(optarg, &workers_opt) != 0) {
        fprintf(stderr, "hotsock: --workers is a number from 1 to %d or \"auto\", not \"%s\"\n",
                HS_MAX_WORKERS, optarg);
        return 2;
      }
      break;
    case 'V':
      printf("hotsock %s (%s, libuv %s)\n", HS_VERSION, LUA_RELEASE, uv_version_string());
      return 0;
    case 'h': usage(stdout); return 0;
    default: fprintf(stderr, "Try 'hotsock --help'.\n"); return 2;
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "hotsock: no script given\n");
    usage(stderr);
    return 2;
  }
  srv.lua.script_path = argv[optind];
  srv.lua.argc = argc - optind - 1;
  srv.lua.argv = argv + optind + 1;
  FILE *probe = fopen(srv.lua.script_path, "r");
  if (!probe) {
    fprintf(stderr, "hotsock: cannot open script %s: %s\n", srv.lua.script_path, strerror(errno));
    return 2;
  }
  fclose(probe);
  char real[PATH_MAX];
  if (realpath(srv.lua.script_path, real)) {
    char *slash = strrchr(real, '/');
    if (slash) *slash = 0;
    snprintf(srv.lua.script_dir, sizeof srv.lua.script_dir, "%s", real[0] ? real : "/");
  } else {
    snprintf(srv.lua.script_dir, sizeof srv.lua.script_dir, ".");
  }

  /* A peer that goes away mid-write is a normal close, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  if (srv.lua.check_only) {
    pid_file = NULL; /* --check serves nothing: no pid, no log file */
  } else {
    if (log_file) {
      char lerr[PATH_MAX + 128];
      if (hs_log_open(log_file, lerr, sizeof lerr) != 0) {
        fprintf(stderr, "hotsock: --log-file: %s\n", lerr);
        return 2;
      }
    }
    raise_nofile();
  }
  hs_sd_t sd; /* systemd's sockets and notify socket, --user and --group */
  int sd_rc = setup_service(&sd, &srv, user, group);
  if (sd_rc) {
    free(listen);
    return sd_rc;
  }
  hs_server_t proto = srv; /* the settings as given, for each worker's own start */
  hs_listen_spec_t *specs = NULL;
  int nspecs = 0;
  hs_tls_ctx_t **ctxs = NULL;
  int rc = start(&srv, listen, nlisten, proxy, health_addr, &specs, &nspecs, &ctxs);
  free(listen);
  if (rc) return rc;
  char err[512];
  int nworkers = workers_opt;
  if (!nworkers && hs_module_workers(&srv, &nworkers, err, sizeof err) != 0) {
    fprintf(stderr, "hotsock: %s: %s\n", srv.lua.script_path, err);
    free_ctxs(ctxs, nspecs);
    hs_listen_specs_free(specs, nspecs);
    return 2;
  }
  /* The admin endpoint: --admin, else the module's admin field. */
  static char module_admin[256];
  if (!admin_addr) {
    int r = hs_module_admin(&srv, module_admin, sizeof module_admin, &admin_eval, err, sizeof err);
    if (r > 0) admin_addr = module_admin;
    if (r < 0) {
      fprintf(stderr, "hotsock: %s: %s\n", srv.lua.script_path, err);
      free_ctxs(ctxs, nspecs);
      hs_listen_specs_free(specs, nspecs);
      return 2;
    }
  }
  if (admin_addr && hs_admin_check_addr(admin_addr, err, sizeof err) != 0) {
    fprintf(stderr, "hotsock: admin: %s\n", err);
    free_ctxs(ctxs, nspecs);
    hs_listen_specs_free(specs, nspecs);
    return 2;
  }
  if (srv.lua.check_only) {
    /* Every listen address must be one a run could try; nothing is bound. */
    for (int i = 0; i < nspecs; i++) {
      char aerr[512];
      if (hs_server_check_addr(specs[i].addr, aerr, sizeof aerr) != 0) {
        fprintf(stderr, "hotsock: listen: %s\n", aerr);
        free_ctxs(ctxs, nspecs);
        hs_listen_specs_free(specs, nspecs);
        return 2;
      }
    }
    /* In coroutine style each receive names its own framing: there is no
     * module framing to report. */
    char fb[128];
    if (srv.lua.coro_style)
      printf("%s: OK (coroutine style)\n", srv.lua.script_path);
    else
      printf("%s: OK (event style, framing %s)\n", srv.lua.script_path,
             hs_framer_describe(&srv.framer, fb, sizeof fb));
    free_ctxs(ctxs, nspecs);
    hs_listen_specs_free(specs, nspecs);
    /* Let go of what the load made (an hs.connect of the chunk included),
     * so a check ends as cleanly as a stop. */
    hs_server_abort(&srv);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    hs_script_close(&srv);
    hs_server_free(&srv);
    uv_loop_close(srv.loop);
    return 0;
  }
  check_nofile(&srv);
  if (nworkers > 1) return supervise(&srv, &proto, specs, nspecs, ctxs, nworkers, watch);
  return serve(&srv, specs, nspecs, ctxs, NULL, watch);
}
