/* admin.c: the admin endpoint (admin.h). One listener, served by the socket
 * layer: a client's first line decides what it is. "GET /path HTTP/1.1"
 * starts an HTTP request (answered, then closed); anything else is a
 * console command, and the connection stays a console until it closes.
 *
 * Admin connections are ordinary hs_conn_t with HS_CONN_ADMIN and
 * HS_CONN_UNSEEN: the write path, output limits and deadlines are the same
 * as a client's, but the host never hears of them, they are not counted,
 * and their lines come here instead of to the script. */
#include "admin.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "conn_int.h"
#include "tls.h"

#define ADMIN_MAX_LINE (64 * 1024) /* a console line (an eval chunk) */
#define ADMIN_MAX_HEADERS 100      /* header lines an HTTP request may send */
#define ADMIN_HANDLERS 24          /* handler names with a histogram */
#define ADMIN_HISTORY 16           /* reloads and errors remembered */
#define ADMIN_MAX_CONNS 16         /* admin connections at once: each may hold max_outbuf */
#define ADMIN_FIRST_BYTE 10000     /* ms a new admin connection has to say something */
#define ADMIN_HTTP_IDLE 10000      /* ms an HTTP request may go quiet before its head is in */

typedef struct reload_rec {
  double at; /* unix time, s */
  char trigger[32];
  int ok;
  double ms;
  char why[240];
} reload_rec_t;

typedef struct hs_admin {
  char addr[128]; /* as served */
  int eval;       /* the console may eval (unix socket only) */
  double started; /* unix time, s */
  hs_hist_t conn_life;
  struct {
    char name[32];
    hs_hist_t h;
  } handlers[ADMIN_HANDLERS];
  int nhandlers;
  reload_rec_t reloads[ADMIN_HISTORY];
  unsigned nreloads; /* ever; the last ADMIN_HISTORY are kept */
  unsigned nconns;   /* admin connections open now */
  uint64_t last_refusal_log;
} hs_admin_t;

typedef struct hs_admin_sess {
  int http;       /* an HTTP request's header lines are being read */
  int head;       /* HEAD: headers only */
  int bad_method; /* a method other than GET/HEAD: 405 */
  int nheaders;
  int bad_host;     /* a Host header that names no loopback address (TCP) */
  int eval_ok;      /* a unix socket and eval allowed */
  int want_reload;  /* answer when the reload it asked for ends */
  unsigned tracing; /* connections it traces */
  char path[256];
} hs_admin_sess_t;

static double wall_now(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void iso_time(double t, char *out, size_t len) {
  time_t s = (time_t)t;
  struct tm tm;
  gmtime_r(&s, &tm);
  size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, len - n, ".%03dZ", (int)((t - (double)s) * 1000) % 1000);
}

/* ------------------------------------------------------------------------
 * Addresses
 * ---------------------------------------------------------------------- */

/* The address as hs_server_listen takes it ("unix:PATH" or "HOST:PORT"). */
static int normalize(const char *addr, char *out, size_t len, char *err, size_t errlen) {
  if (addr[0] == '/') {
    snprintf(out, len, "unix:%s", addr);
  } else if (strncmp(addr, "unix:", 5) == 0) {
    snprintf(out, len, "%s", addr);
  } else {
    const char *colon = strrchr(addr, ':');
    char host[64];
    if (!colon) {
      snprintf(out, len, "127.0.0.1:%s", addr);
      snprintf(host, sizeof host, "127.0.0.1");
    } else {
      size_t hl = (size_t)(colon - addr);
      if (hl >= sizeof host) hl = sizeof host - 1;
      memcpy(host, addr, hl);
      host[hl] = 0;
      if (strcmp(host, "localhost") == 0)
        snprintf(out, len, "127.0.0.1%s", colon);
      else
        snprintf(out, len, "%s", addr);
    }
    unsigned char a[16];
    char h6[64];
    size_t hn = strlen(host);
    int loop4 = strcmp(host, "localhost") == 0 || (inet_pton(AF_INET, host, a) == 1 && a[0] == 127);
    int loop6 = hn > 2 && host[0] == '[' && host[hn - 1] == ']' && hn - 2 < sizeof h6 &&
                (memcpy(h6, host + 1, hn - 2), h6[hn - 2] = 0, inet_pton(AF_INET6, h6, a) == 1) &&
                memcmp(a, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16) == 0;
    if (!loop4 && !loop6) {
      snprintf(err, errlen,
               "the admin endpoint is a unix socket or a loopback address "
               "(unix:PATH, 127.0.0.1:PORT, [::1]:PORT, PORT), not \"%s\"",
               addr);
      return -1;
    }
  }
  return hs_server_check_addr(out, err, errlen);
}

int hs_admin_check_addr(const char *addr, char *err, size_t errlen) {
  char a[256];
  return normalize(addr, a, sizeof a, err, errlen);
}

int hs_admin_start(hs_server_t *srv, const char *addr, int eval, char *err, size_t errlen) {
  char a[256], w[300];
  if (normalize(addr, a, sizeof a, err, errlen) != 0) return -1;
  if (srv->nworkers > 1) {
    /* One endpoint per worker: each reports and controls itself. */
    if (strncmp(a, "unix:", 5) == 0) {
      snprintf(w, sizeof w, "%s.%d", a, srv->worker_id);
    } else {
      char *colon = strrchr(a, ':');
      long port = strtol(colon + 1, NULL, 10);
      *colon = 0;
      snprintf(w, sizeof w, "%s:%ld", a, port ? port + srv->worker_id - 1 : 0);
    }
    memcpy(a, w, sizeof a - 1); /* the names fit: a path of 108, a port of 5 */
    a[sizeof a - 1] = 0;
  }
  hs_admin_t *adm = calloc(1, sizeof *adm);
  if (!adm) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (hs_server_listen_quiet(srv, a) != 0) {
    free(adm);
    snprintf(err, errlen, "cannot serve the admin endpoint on %s", a);
    return -1;
  }
  hs_listener_t *l = srv->listeners; /* the new one is first */
  l->admin = 1;
  adm->eval = eval;
  adm->started = wall_now();
  snprintf(adm->addr, sizeof adm->addr, "%s", l->name);
  srv->admin = adm;
  hs_logf_console(HS_LOG_INFO, "admin endpoint on %s%s", l->name,
                  eval && l->is_unix ? " (eval allowed)" : "");
  if (eval && !l->is_unix)
    hs_log(srv, HS_LOG_WARN, "admin eval is allowed on a unix socket only; off on %s", l->name);
  return 0;
}

void hs_admin_free(hs_server_t *srv) {
  free(srv->admin);
  srv->admin = NULL;
}

/* ------------------------------------------------------------------------
 * What the host reports
 * ---------------------------------------------------------------------- */

void hs_admin_observe_handler(hs_server_t *srv, const char *name, uint64_t ns) {
  hs_admin_t *adm = srv->admin;
  int i;
  for (i = 0; i < adm->nhandlers; i++)
    if (strcmp(adm->handlers[i].name, name) == 0) break;
  if (i == adm->nhandlers) {
    if (i == ADMIN_HANDLERS) return; /* a script with that many kinds of handler */
    snprintf(adm->handlers[i].name, sizeof adm->handlers[i].name, "%s", name);
    adm->nhandlers++;
  }
  hs_hist_observe(&adm->handlers[i].h, hs_hist_handler_bounds, ns);
}

static void send_str(hs_conn_t *c, const char *s) {
  if (hs_conn_send(c, s, strlen(s)) != 0) hs_conn_abort(c, "out of memory");
}

void hs_admin_reload_done(hs_server_t *srv, const char *trigger, int ok, const char *why,
                          double ms) {
  hs_admin_t *adm = srv->admin;
  if (!adm) return;
  reload_rec_t *r = &adm->reloads[adm->nreloads++ % ADMIN_HISTORY];
  r->at = wall_now();
  snprintf(r->trigger, sizeof r->trigger, "%s", trigger ? trigger : "");
  r->ok = ok;
  r->ms = ms;
  snprintf(r->why, sizeof r->why, "%s", why ? why : "");
  /* Consoles that asked for it hear how it went. */
  hs_conn_t *c;
  char line[400];
  if (ok)
    snprintf(line, sizeof line, "reload ok: generation %llu (%.1f ms)\n\n",
             (unsigned long long)srv->stats.generation, ms);
  else
    snprintf(line, sizeof line, "reload failed: %s\n\n", r->why);
  TAILQ_FOREACH(c, &srv->conns, link) {
    if (!(c->flags & HS_CONN_ADMIN) || !c->adm || !c->adm->want_reload || !hs_conn_is_open(c))
      continue;
    c->adm->want_reload = 0;
    send_str(c, line);
  }
}

/* ------------------------------------------------------------------------
 * Connections
 * ---------------------------------------------------------------------- */

void hs_admin_accept(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  hs_listener_t *l = c->listener;
  hs_admin_t *adm = srv->admin;
  if (adm->nconns >= ADMIN_MAX_CONNS) {
    /* Each may hold max_outbuf of answers: their number is bounded. */
    l->rejected++;
    uint64_t now = uv_now(srv->loop);
    if (now - adm->last_refusal_log >= 1000 || !adm->last_refusal_log) {
      adm->last_refusal_log = now;
      hs_log(srv, HS_LOG_WARN, "admin endpoint: %d connections open already; refusing more",
             ADMIN_MAX_CONNS);
    }
    hs_conn_discard(c);
    return;
  }
  adm->nconns++;
  c->flags |= HS_CONN_ADMIN | HS_CONN_UNSEEN;
  c->adm = calloc(1, sizeof *c->adm);
  TAILQ_INSERT_TAIL(&srv->conns, c, link);
  l->accepted++;
  if (!c->adm) {
    hs_conn_abort(c, "out of memory");
    return;
  }
  c->adm->eval_ok = l->is_unix && srv->admin && srv->admin->eval;
  hs_framer_line(&c->framer);
  c->max_frame = ADMIN_MAX_LINE;
  /* A console may sit idle once it has said something; one that stops
   * reading its output is cut off by the write timeout and max_outbuf,
   * like any client. One that says nothing goes after ADMIN_FIRST_BYTE. */
  c->to.idle = c->to.read = 0;
  c->to.first_byte = ADMIN_FIRST_BYTE;
  if (l->is_unix) {
    snprintf(c->peer, sizeof c->peer, "%.63s", l->name);
  } else {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ip[64] = "?";
    memset(&ss, 0, sizeof ss);
    int port = 0;
    if (uv_tcp_getpeername(&c->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
      if (ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
      } else {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
      }
    }
    snprintf(c->peer, sizeof c->peer, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
  }
  hs_conn_start_reading(c);
  hs_timers_update(c);
}

static hs_conn_t *find_conn(hs_server_t *srv, const char *arg) {
  char *end;
  unsigned long long id = strtoull(arg, &end, 10);
  if (end == arg || *end) return NULL;
  hs_conn_t *c;
  TAILQ_FOREACH(c, &srv->conns, link) {
    if (c->id == id && !(c->flags & (HS_CONN_ADMIN | HS_CONN_HEALTH | HS_CONN_FINISHED))) return c;
  }
  return NULL;
}

/* A connection's state, as the socket layer and the host see it. */
static void conn_state(hs_conn_t *c, char *out, size_t len) {
  hs_server_t *srv = c->srv;
  char host[160] = "";
  if (!(c->flags & HS_CONN_UNSEEN) && srv->ev->conn_state)
    srv->ev->conn_state(c, host, sizeof host);
  const char *sock = (c->flags & HS_CONN_FINISHED)     ? "closed"
                     : (c->flags & HS_CONN_LINGER)     ? "closing (lingering)"
                     : (c->flags & HS_CONN_CLOSING)    ? "closing"
                     : (c->flags & HS_CONN_CONNECTING) ? "connecting"
                     : (c->flags & HS_CONN_PROXY_WAIT) ? "PROXY header"
                     : (c->flags & HS_CONN_UNSEEN)     ? "TLS handshake"
                     : (c->flags & HS_CONN_PAUSED)     ? "paused"
                     : (c->flags & HS_CONN_HELD)       ? "held (pipe target full)"
                     : c->pipe_to || c->pipe_from      ? "piping"
                                                       : "";
  if (*sock && *host)
    snprintf(out, len, "%s, %s", sock, host);
  else
    snprintf(out, len, "%s", *sock ? sock : *host ? host : "idle");
}

static uint64_t idle_ms(const hs_conn_t *c, uint64_t now) {
  uint64_t last = c->last_read > c->last_write ? c->last_read : c->last_write;
  return now > last ? now - last : 0;
}

static const char *listener_name(const hs_conn_t *c) {
  return c->listener ? c->listener->name : "outbound";
}

/* Connections the script serves or made, oldest first. */
#define FOREACH_CLIENT(c, srv)          \
  TAILQ_FOREACH(c, &(srv)->conns, link) \
  if (!((c)->flags & (HS_CONN_ADMIN | HS_CONN_HEALTH | HS_CONN_FINISHED)))

/* ------------------------------------------------------------------------
 * Tracing
 * ---------------------------------------------------------------------- */

/* The console that traces c fell behind: cut it off (c carries on). */
static void trace_overflow(hs_conn_t *t, hs_conn_t *c) {
  hs_log_conn(t->srv, t, HS_LOG_WARN,
              "admin console fell behind its trace of conn %llu (over max_outbuf); closing it",
              (unsigned long long)c->id);
  hs_conn_abort(t, "trace output over max_outbuf");
}

void hs_admin_trace(hs_conn_t *c, int out, const char *p, size_t n) {
  hs_conn_t *t = c->tracer;
  if (!t || !hs_conn_is_open(t)) return;
  /* What the dump will take (a line of 78 bytes per 16), checked before it
   * is made: a large send must not be dumped whole first. */
  size_t dump = 80 + (n / 16 + 1) * 78;
  if (n > t->srv->limits.max_outbuf || hs_buf_len(&t->out) + dump > t->srv->limits.max_outbuf) {
    trace_overflow(t, c);
    return;
  }
  hs_out_t o = {&t->out, &t->srv->pool, 0};
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  time_t s = tv.tv_sec;
  localtime_r(&s, &tm);
  hs_out_printf(&o, "trace %02d:%02d:%02d.%06ld conn %llu %s %zu byte%s\n", tm.tm_hour, tm.tm_min,
                tm.tm_sec, (long)tv.tv_usec, (unsigned long long)c->id, out ? "out" : "in", n,
                n == 1 ? "" : "s");
  hs_out_hexdump(&o, p, n);
  if (o.oom) {
    hs_conn_abort(t, "out of memory");
    return;
  }
  hs_server_mark_dirty(t->srv, t);
}

static void untrace(hs_conn_t *traced) {
  hs_conn_t *t = traced->tracer;
  traced->tracer = NULL;
  if (t && t->adm && t->adm->tracing) t->adm->tracing--;
}

void hs_admin_finished(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  if (c->flags & HS_CONN_ADMIN) {
    srv->admin->nconns--;
    if (c->adm && c->adm->tracing) {
      hs_conn_t *x;
      TAILQ_FOREACH(x, &srv->conns, link) if (x->tracer == c) untrace(x);
    }
    return;
  }
  if (!(c->flags & (HS_CONN_OUTBOUND | HS_CONN_HEALTH)))
    hs_hist_observe(&srv->admin->conn_life, hs_hist_conn_bounds,
                    (uv_now(srv->loop) - c->accepted_at) * 1000000u);
  if (c->tracer) {
    hs_conn_t *t = c->tracer;
    char line[200];
    snprintf(line, sizeof line, "trace conn %llu closed: %s\n", (unsigned long long)c->id,
             c->reason ? c->reason : "closed");
    untrace(c);
    if (hs_conn_is_open(t)) send_str(t, line);
  }
}

/* ------------------------------------------------------------------------
 * Answers: stats, metrics, connections
 * ---------------------------------------------------------------------- */

static const char *listener_kind(const hs_listener_t *l) {
  return l->admin ? "admin" : l->health ? "health" : "clients";
}

static size_t lua_memory(hs_server_t *srv) {
  return srv->ev->lua_memory ? srv->ev->lua_memory(srv) : 0;
}

static void metrics(hs_server_t *srv, hs_out_t *o) {
  hs_admin_t *adm = srv->admin;
  hs_stat_field_t f[HS_NSTAT_FIELDS];
  char wl[32] = "", lb[320];
  if (srv->nworkers > 1) snprintf(wl, sizeof wl, "worker=\"%d\"", srv->worker_id);
  const char *wsep = *wl ? "," : "";
  hs_stat_fields(&srv->stats, f);
  for (size_t i = 0; i < HS_NSTAT_FIELDS; i++) {
    const char *suffix = f[i].gauge ? "" : "_total";
    hs_out_printf(o, "# HELP hotsock_%s%s %s\n# TYPE hotsock_%s%s %s\n", f[i].name, suffix,
                  f[i].help, f[i].name, suffix, f[i].gauge ? "gauge" : "counter");
    hs_out_printf(o, "hotsock_%s%s%s%s%s %llu\n", f[i].name, suffix, *wl ? "{" : "", wl,
                  *wl ? "}" : "", (unsigned long long)f[i].value);
  }
  static const struct {
    const char *name, *type, *help;
    int which;
  } per_listener[] = {
      {"hotsock_listener_accepted_total", "counter", "Clients accepted on this listener.", 0},
      {"hotsock_listener_active", "gauge", "Clients connected on this listener now.", 1},
      {"hotsock_listener_rejected_total", "counter", "Clients refused on this listener.", 2},
  };
  for (size_t k = 0; k < sizeof per_listener / sizeof *per_listener; k++) {
    hs_out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", per_listener[k].name, per_listener[k].help,
                  per_listener[k].name, per_listener[k].type);
    for (hs_listener_t *l = srv->listeners; l; l = l->next) {
      if (l->admin || l->health) continue;
      uint64_t v = per_listener[k].which == 0   ? l->accepted
                   : per_listener[k].which == 1 ? l->active
                                                : l->rejected;
      hs_out_printf(o, "%s{listener=\"", per_listener[k].name);
      hs_out_label(o, l->name);
      hs_out_printf(o, "\"%s%s} %llu\n", wsep, wl, (unsigned long long)v);
    }
  }
  hs_out_printf(o,
                "# HELP hotsock_lua_memory_bytes Bytes the Lua heap holds.\n"
                "# TYPE hotsock_lua_memory_bytes gauge\n"
                "hotsock_lua_memory_bytes%s%s%s %zu\n",
                *wl ? "{" : "", wl, *wl ? "}" : "", lua_memory(srv));
  hs_out_printf(o,
                "# HELP hotsock_lua_memory_limit_bytes max_lua_memory.\n"
                "# TYPE hotsock_lua_memory_limit_bytes gauge\n"
                "hotsock_lua_memory_limit_bytes%s%s%s %zu\n",
                *wl ? "{" : "", wl, *wl ? "}" : "", srv->limits.max_lua_memory);
  const reload_rec_t *last =
      adm->nreloads ? &adm->reloads[(adm->nreloads - 1) % ADMIN_HISTORY] : NULL;
  hs_out_printf(o,
                "# HELP hotsock_last_reload_success Whether the last reload was put in service "
                "(1 before any).\n"
                "# TYPE hotsock_last_reload_success gauge\n"
                "hotsock_last_reload_success%s%s%s %d\n",
                *wl ? "{" : "", wl, *wl ? "}" : "", last ? last->ok : 1);
  hs_out_printf(o,
                "# HELP hotsock_last_reload_timestamp_seconds When the last reload ended (0 "
                "before any).\n"
                "# TYPE hotsock_last_reload_timestamp_seconds gauge\n"
                "hotsock_last_reload_timestamp_seconds%s%s%s %.3f\n",
                *wl ? "{" : "", wl, *wl ? "}" : "", last ? last->at : 0.0);
  hs_out_printf(o,
                "# HELP hotsock_start_time_seconds When this process started serving.\n"
                "# TYPE hotsock_start_time_seconds gauge\n"
                "hotsock_start_time_seconds%s%s%s %.3f\n",
                *wl ? "{" : "", wl, *wl ? "}" : "", adm->started);
  hs_out_str(o,
             "# HELP hotsock_handler_seconds Time spent in each kind of handler call.\n"
             "# TYPE hotsock_handler_seconds histogram\n");
  for (int i = 0; i < adm->nhandlers; i++) {
    /* Handler names are the host's own (on_message, handle, timer ...):
     * no escaping is needed, but do it anyway. */
    size_t n = 0;
    const char *s = adm->handlers[i].name;
    n += (size_t)snprintf(lb + n, sizeof lb - n, "handler=\"");
    for (; *s && n + 3 < sizeof lb; s++) {
      if (*s == '"' || *s == '\\') lb[n++] = '\\';
      lb[n++] = *s;
    }
    snprintf(lb + n, sizeof lb - n, "\"%s%s", wsep, wl);
    hs_out_prom_hist(o, "hotsock_handler_seconds", lb, &adm->handlers[i].h, hs_hist_handler_bounds);
  }
  hs_out_str(o,
             "# HELP hotsock_connection_duration_seconds Time from accept to close.\n"
             "# TYPE hotsock_connection_duration_seconds histogram\n");
  hs_out_prom_hist(o, "hotsock_connection_duration_seconds", wl, &adm->conn_life,
                   hs_hist_conn_bounds);
  hs_out_str(o,
             "# HELP hotsock_info Version of hotsock and of its libraries.\n"
             "# TYPE hotsock_info gauge\n");
  hs_out_printf(o, "hotsock_info{version=\"%s\",libuv=\"%s\"%s%s} 1\n", HS_VERSION,
                uv_version_string(), wsep, wl);
}

static void json_bool(hs_out_t *o, int b) { hs_out_str(o, b ? "true" : "false"); }

static void stats_json(hs_server_t *srv, hs_out_t *o) {
  hs_admin_t *adm = srv->admin;
  hs_stat_field_t f[HS_NSTAT_FIELDS];
  char ts[40];
  double now = wall_now();
  iso_time(adm->started, ts, sizeof ts);
  hs_out_printf(o, "{\"version\":\"%s\",\"pid\":%d,\"worker\":%d,\"workers\":%d,\"script\":",
                HS_VERSION, (int)getpid(), srv->worker_id, srv->nworkers > 1 ? srv->nworkers : 1);
  const char *script = srv->lua.script_path ? srv->lua.script_path : "";
  hs_out_json_str(o, script, strlen(script));
  hs_out_printf(o, ",\"started\":\"%s\",\"uptime_seconds\":%.3f,\"log_level\":\"%s\",", ts,
                now - adm->started, hs_log_level_name(srv->log_level));
  hs_out_str(o, "\"draining\":");
  json_bool(o, srv->draining);
  hs_out_str(o, ",\"counters\":{");
  hs_stat_fields(&srv->stats, f);
  for (size_t i = 0; i < HS_NSTAT_FIELDS; i++)
    hs_out_printf(o, "\"%s\":%llu,", f[i].name, (unsigned long long)f[i].value);
  hs_out_printf(o, "\"lua_memory\":%zu,\"lua_memory_limit\":%zu},\"listeners\":[", lua_memory(srv),
                srv->limits.max_lua_memory);
  for (hs_listener_t *l = srv->listeners; l; l = l->next) {
    hs_out_str(o, l == srv->listeners ? "{\"name\":" : ",{\"name\":");
    hs_out_json_str(o, l->name, strlen(l->name));
    hs_out_printf(o,
                  ",\"kind\":\"%s\",\"tls\":%s,\"proxy\":%s,\"accepted\":%llu,\"active\":%llu,"
                  "\"rejected\":%llu}",
                  listener_kind(l), l->tls ? "true" : "false", l->proxy ? "true" : "false",
                  (unsigned long long)l->accepted, (unsigned long long)l->active,
                  (unsigned long long)l->rejected);
  }
  hs_out_str(o, "],\"reloads\":[");
  unsigned first = adm->nreloads > ADMIN_HISTORY ? adm->nreloads - ADMIN_HISTORY : 0;
  for (unsigned i = adm->nreloads; i-- > first;) { /* newest first */
    const reload_rec_t *r = &adm->reloads[i % ADMIN_HISTORY];
    iso_time(r->at, ts, sizeof ts);
    hs_out_printf(o, "%s{\"at\":\"%s\",\"trigger\":", i + 1 == adm->nreloads ? "" : ",", ts);
    hs_out_json_str(o, r->trigger, strlen(r->trigger));
    hs_out_printf(o, ",\"ok\":%s,\"ms\":%.1f,\"message\":", r->ok ? "true" : "false", r->ms);
    hs_out_json_str(o, r->why, strlen(r->why));
    hs_out_str(o, "}");
  }
  hs_out_str(o, "],\"errors\":[");
  hs_log_recent_t rec[HS_LOG_RECENT];
  int nrec = hs_log_recent(rec);
  for (int i = nrec; i-- > 0;) { /* newest first */
    iso_time(rec[i].at, ts, sizeof ts);
    hs_out_printf(
        o, "%s{\"at\":\"%s\",\"level\":\"%s\",\"conn\":%llu,\"message\":", i + 1 == nrec ? "" : ",",
        ts, hs_log_level_name(rec[i].level), (unsigned long long)rec[i].conn);
    hs_out_json_str(o, rec[i].msg, strlen(rec[i].msg));
    hs_out_str(o, "}");
  }
  hs_out_str(o, "],\"handlers\":[");
  for (int i = 0; i < adm->nhandlers; i++) {
    hs_out_printf(o, "%s{\"name\":", i ? "," : "");
    hs_out_json_str(o, adm->handlers[i].name, strlen(adm->handlers[i].name));
    hs_out_printf(o, ",\"calls\":%llu,\"seconds\":%.6f}",
                  (unsigned long long)adm->handlers[i].h.count,
                  (double)adm->handlers[i].h.sum_ns / 1e9);
  }
  hs_out_str(o, "]}\n");
}

static void connections_json(hs_server_t *srv, hs_out_t *o) {
  uint64_t now = uv_now(srv->loop);
  hs_conn_t *c;
  int first = 1;
  char st[256], fr[128];
  hs_out_str(o, "[");
  FOREACH_CLIENT(c, srv) {
    conn_state(c, st, sizeof st);
    hs_framer_describe(&c->framer, fr, sizeof fr);
    hs_out_printf(o, "%s{\"id\":%llu,\"peer\":", first ? "" : ",\n", (unsigned long long)c->id);
    hs_out_json_str(o, c->peer, strlen(c->peer));
    hs_out_str(o, ",\"listener\":");
    hs_out_json_str(o, listener_name(c), strlen(listener_name(c)));
    hs_out_printf(o,
                  ",\"age_ms\":%llu,\"idle_ms\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                  "\"queued\":%zu,\"framing\":",
                  (unsigned long long)(now - c->accepted_at), (unsigned long long)idle_ms(c, now),
                  (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out,
                  hs_conn_buffered(c));
    hs_out_json_str(o, fr, strlen(fr));
    hs_out_str(o, ",\"state\":");
    hs_out_json_str(o, st, strlen(st));
    hs_out_printf(o, ",\"tls\":%s,\"outbound\":%s,\"traced\":%s}", c->tls ? "true" : "false",
                  (c->flags & HS_CONN_OUTBOUND) ? "true" : "false", c->tracer ? "true" : "false");
    first = 0;
  }
  hs_out_str(o, "]\n");
}

/* ------------------------------------------------------------------------
 * The console
 * ---------------------------------------------------------------------- */

static const char console_help[] =
    "commands:\n"
    "  clients           every connection: id, peer, listener, age, idle, bytes, state\n"
    "  show ID           one connection, with the script's fields and where its coroutine waits\n"
    "  kill ID           close a connection now (reset)\n"
    "  trace ID          dump every byte in and out of a connection, live\n"
    "  untrace [ID]      stop tracing one connection, or every one\n"
    "  reload            reload the script; the answer says how it went\n"
    "  log [LEVEL]       show or set the log level (debug, info, warn, error)\n"
    "  stats             the counters\n"
    "  eval LUA          run a chunk in the script's state (unix socket, when allowed)\n"
    "  help, quit\n";

static void clients(hs_server_t *srv, hs_out_t *o) {
  uint64_t now = uv_now(srv->loop);
  hs_conn_t *c;
  char st[256], fr[128];
  FOREACH_CLIENT(c, srv) {
    conn_state(c, st, sizeof st);
    hs_framer_describe(&c->framer, fr, sizeof fr);
    hs_out_printf(o,
                  "id=%llu peer=%s listener=%s age=%.1fs idle=%.1fs in=%llu out=%llu queued=%zu "
                  "framing=%s%s%s state=%s\n",
                  (unsigned long long)c->id, c->peer, listener_name(c),
                  (double)(now - c->accepted_at) / 1000, (double)idle_ms(c, now) / 1000,
                  (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out,
                  hs_conn_buffered(c), fr, c->tls ? " tls" : "", c->tracer ? " traced" : "", st);
  }
}

static void stats_text(hs_server_t *srv, hs_out_t *o) {
  hs_stat_field_t f[HS_NSTAT_FIELDS];
  hs_stat_fields(&srv->stats, f);
  for (size_t i = 0; i < HS_NSTAT_FIELDS; i++)
    hs_out_printf(o, "%s %llu\n", f[i].name, (unsigned long long)f[i].value);
  hs_out_printf(o, "lua_memory %zu\nlua_memory_limit %zu\n", lua_memory(srv),
                srv->limits.max_lua_memory);
}

static void show(hs_conn_t *c, hs_out_t *o) {
  hs_server_t *srv = c->srv;
  uint64_t now = uv_now(srv->loop);
  char st[256], fr[128];
  conn_state(c, st, sizeof st);
  hs_framer_describe(&c->framer, fr, sizeof fr);
  hs_out_printf(o, "id %llu\npeer %s\nlocal %s\nlistener %s\n", (unsigned long long)c->id, c->peer,
                c->local[0] ? c->local : "-", listener_name(c));
  if (c->flags & HS_CONN_PROXIED) hs_out_printf(o, "via %s (PROXY protocol)\n", c->proxy_peer);
  hs_out_printf(o,
                "age %.3fs\nidle %.3fs\nbytes_in %llu\nbytes_out %llu\nqueued %zu\nbuffered_in "
                "%zu\nframing %s\nstate %s\n",
                (double)(now - c->accepted_at) / 1000, (double)idle_ms(c, now) / 1000,
                (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out,
                hs_conn_buffered(c), hs_buf_len(&c->in), fr, st);
  if (c->tls) hs_out_str(o, "tls yes\n");
  if (!(c->flags & HS_CONN_UNSEEN) && srv->ev->conn_show) srv->ev->conn_show(c, o);
}

/* Answer one console line. */
static void console(hs_conn_t *c, char *line) {
  hs_server_t *srv = c->srv;
  hs_out_t o = {&c->out, &srv->pool, 0};
  char *cmd = line, *arg;
  while (*cmd == ' ' || *cmd == '\t') cmd++;
  arg = cmd + strcspn(cmd, " \t");
  if (*arg) *arg++ = 0;
  while (*arg == ' ' || *arg == '\t') arg++;
  if (!*cmd) return; /* an empty line: nothing */
  if (!strcmp(cmd, "help")) {
    hs_out_str(&o, console_help);
  } else if (!strcmp(cmd, "quit") || !strcmp(cmd, "exit")) {
    hs_conn_close(c, "quit");
    return;
  } else if (!strcmp(cmd, "clients")) {
    clients(srv, &o);
  } else if (!strcmp(cmd, "stats")) {
    stats_text(srv, &o);
  } else if (!strcmp(cmd, "show") || !strcmp(cmd, "kill") || !strcmp(cmd, "trace")) {
    hs_conn_t *x = find_conn(srv, arg);
    if (!x) {
      hs_out_printf(&o, "error: no connection \"%s\" (see clients)\n", arg);
    } else if (!strcmp(cmd, "show")) {
      show(x, &o);
    } else if (!strcmp(cmd, "kill")) {
      hs_log(srv, HS_LOG_INFO, "admin console: killing conn %llu (%s)", (unsigned long long)x->id,
             x->peer);
      hs_conn_abort(x, "killed from the admin console");
      hs_out_printf(&o, "killed %llu\n", (unsigned long long)x->id);
    } else if (x->tracer == c) {
      hs_out_printf(&o, "already tracing %llu\n", (unsigned long long)x->id);
    } else {
      if (x->tracer) untrace(x); /* the newer console takes it over */
      x->tracer = c;
      c->adm->tracing++;
      hs_out_printf(&o, "tracing %llu (%s); untrace %llu to stop\n", (unsigned long long)x->id,
                    x->peer, (unsigned long long)x->id);
    }
  } else if (!strcmp(cmd, "untrace")) {
    hs_conn_t *x;
    unsigned n = 0;
    TAILQ_FOREACH(x, &srv->conns, link) {
      if (x->tracer != c) continue;
      if (*arg && strtoull(arg, NULL, 10) != x->id) continue;
      untrace(x);
      n++;
    }
    hs_out_printf(&o, "stopped tracing %u connection%s\n", n, n == 1 ? "" : "s");
  } else if (!strcmp(cmd, "log")) {
    if (*arg) {
      int lv = hs_log_parse_level(arg);
      if (lv < 0) {
        hs_out_printf(&o, "error: the level is debug, info, warn or error, not \"%s\"\n", arg);
      } else {
        srv->log_level = lv;
        hs_logf(HS_LOG_DEBUG, HS_LOG_INFO, 0, "admin console: log level %s", arg);
        hs_out_printf(&o, "log level %s\n", hs_log_level_name(lv));
      }
    } else {
      hs_out_printf(&o, "log level %s\n", hs_log_level_name(srv->log_level));
    }
  } else if (!strcmp(cmd, "reload")) {
    hs_log(srv, HS_LOG_INFO, "admin console: reload asked for");
    c->adm->want_reload = 1;
    srv->ev->reload(srv, "admin console");
    return; /* the answer comes when it is done (hs_admin_reload_done) */
  } else if (!strcmp(cmd, "eval")) {
    if (!c->adm->eval_ok || !srv->ev->eval) {
      hs_out_str(&o, srv->admin->eval ? "error: eval is allowed on a unix socket only\n"
                                      : "error: eval is off (--admin-eval, or admin = {eval = "
                                        "true})\n");
    } else {
      srv->ev->eval(srv, arg, strlen(arg), &o);
    }
  } else {
    hs_out_printf(&o, "error: unknown command \"%s\" (try help)\n", cmd);
  }
  hs_out_str(&o, "\n"); /* an empty line ends every answer */
  if (o.oom) {
    hs_conn_abort(c, "out of memory");
    return;
  }
  hs_server_mark_dirty(srv, c);
  if (hs_conn_buffered(c) > srv->limits.max_outbuf) { /* not the script's: not counted */
    hs_log_conn(srv, c, HS_LOG_WARN, "admin console does not read its answers (over max_outbuf); "
                                     "closing it");
    hs_conn_abort(c, "output buffer full");
  }
}

/* ------------------------------------------------------------------------
 * HTTP
 * ---------------------------------------------------------------------- */

extern const char hs_admin_page[];

static void http_answer(hs_conn_t *c) {
  hs_server_t *srv = c->srv;
  hs_admin_sess_t *s = c->adm;
  hs_buf_t body;
  hs_buf_init(&body);
  hs_out_t o = {&body, &srv->pool, 0};
  int status = 200;
  const char *type = "application/json";
  char path[256];
  snprintf(path, sizeof path, "%s", s->path);
  path[strcspn(path, "?#")] = 0;
  if (s->bad_host) {
    /* A page elsewhere that got its name to resolve to 127.0.0.1 (DNS
     * rebinding) must not read the endpoint through a browser. */
    status = 403;
    type = "text/plain";
    hs_out_str(&o, "the Host header must name a loopback address\n");
  } else if (s->bad_method) {
    status = 405;
    type = "text/plain";
    hs_out_str(&o, "only GET and HEAD\n");
  } else if (!strcmp(path, "/metrics")) {
    type = "text/plain; version=0.0.4; charset=utf-8";
    metrics(srv, &o);
  } else if (!strcmp(path, "/health")) {
    type = "text/plain";
    status = srv->draining ? 503 : 200;
    hs_out_str(&o, srv->draining ? "draining\n" : "up\n");
  } else if (!strcmp(path, "/stats")) {
    stats_json(srv, &o);
  } else if (!strcmp(path, "/connections")) {
    connections_json(srv, &o);
  } else if (!strcmp(path, "/") || !strcmp(path, "/index.html")) {
    type = "text/html; charset=utf-8";
    hs_out_str(&o, hs_admin_page);
  } else {
    status = 404;
    type = "text/plain";
    hs_out_str(&o, "not found: try /, /metrics, /health, /stats or /connections\n");
  }
  if (hs_buf_len(&body) > srv->limits.max_outbuf) {
    /* Tens of thousands of connections: more than a client may be sent. */
    size_t n = hs_buf_len(&body);
    hs_buf_release(&body, &srv->pool);
    status = 503;
    type = "text/plain";
    hs_out_printf(&o, "the answer (%zu bytes) is over max_outbuf (%zu)\n", n,
                  srv->limits.max_outbuf);
  }
  const char *reason = status == 200   ? "OK"
                       : status == 403 ? "Forbidden"
                       : status == 404 ? "Not Found"
                       : status == 405 ? "Method Not Allowed"
                                       : "Service Unavailable";
  hs_out_t h = {&c->out, &srv->pool, o.oom};
  hs_out_printf(&h,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                status, reason, type, hs_buf_len(&body),
                status == 405 ? "Allow: GET, HEAD\r\n" : "");
  if (!s->head) hs_out_put(&h, hs_buf_peek(&body), hs_buf_len(&body));
  hs_buf_release(&body, &srv->pool);
  if (h.oom) {
    hs_conn_abort(c, "out of memory");
    return;
  }
  hs_server_mark_dirty(srv, c);
  hs_conn_linger_close(c, "admin request answered");
}

/* "METHOD TARGET HTTP/1.x": an HTTP request line. */
static int request_line(hs_admin_sess_t *s, const char *line) {
  const char *sp = strchr(line, ' ');
  if (!sp || sp == line) return 0;
  const char *sp2 = strchr(sp + 1, ' ');
  if (!sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0 || strchr(sp2 + 1, ' ')) return 0;
  size_t ml = (size_t)(sp - line), tl = (size_t)(sp2 - sp - 1);
  for (size_t i = 0; i < ml; i++)
    if (line[i] < 'A' || line[i] > 'Z') return 0;
  s->http = 1;
  s->head = ml == 4 && !memcmp(line, "HEAD", 4);
  s->bad_method = !(ml == 3 && !memcmp(line, "GET", 3)) && !s->head;
  if (tl >= sizeof s->path) tl = sizeof s->path - 1;
  memcpy(s->path, sp + 1, tl);
  s->path[tl] = 0;
  return 1;
}

/* A Host header on a TCP endpoint must name a loopback address: localhost,
 * 127.x.x.x or [::1], with or without a port. */
static int loopback_host(const char *v) {
  while (*v == ' ' || *v == '\t') v++;
  char host[128];
  size_t n = strcspn(v, " \t");
  if (n >= sizeof host) return 0;
  memcpy(host, v, n);
  host[n] = 0;
  if (host[0] == '[') {
    char *end = strchr(host, ']');
    if (!end) return 0;
    *end = 0;
    unsigned char a[16];
    return inet_pton(AF_INET6, host + 1, a) == 1 &&
           memcmp(a, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16) == 0;
  }
  char *colon = strchr(host, ':');
  if (colon) *colon = 0;
  if (strcasecmp(host, "localhost") == 0) return 1;
  unsigned char a[4];
  return inet_pton(AF_INET, host, a) == 1 && a[0] == 127;
}

int hs_admin_frame(hs_conn_t *c, const char *msg, size_t len) {
  hs_admin_sess_t *s = c->adm;
  char small[512];
  char *line = len < sizeof small ? small : malloc(len + 1);
  if (!line) {
    hs_conn_abort(c, "out of memory");
    return -1;
  }
  memcpy(line, msg, len);
  line[len] = 0;
  /* A NUL in the line ends it for every command: nothing takes binary. */
  if (s->http) {
    if (len == 0) {
      http_answer(c);
    } else if (++s->nheaders > ADMIN_MAX_HEADERS) {
      hs_conn_abort(c, "too many header lines");
    } else if (len > 5 && strncasecmp(line, "host:", 5) == 0 && !c->listener->is_unix &&
               !loopback_host(line + 5)) {
      s->bad_host = 1;
    }
  } else if (request_line(s, line)) {
    /* The head must come in one go, not a line now and then. */
    c->to.idle = ADMIN_HTTP_IDLE;
    hs_timers_update(c);
  } else {
    console(c, line);
  }
  if (line != small) free(line);
  return hs_conn_is_open(c) && !(c->flags & HS_CONN_CLOSING) ? 0 : -1;
}
