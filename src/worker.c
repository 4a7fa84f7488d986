/* worker.c: a worker's side of --workers (host layer). The supervisor
 * (supervisor.c) coordinates reloads over a control socket: it asks every
 * worker to prepare the new version, and commits only when all did, so
 * every worker runs the same code. A reload asked for in a worker (a save
 * its watcher saw, hs.reload(), a SIGHUP sent to it, a probation's
 * rollback) goes to the supervisor, which runs it everywhere. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "host.h"
#include "supervisor.h"

static uv_poll_t ctl_poll; /* one worker per process */

static void ctl_send(hs_server_t *srv, const char *msg) {
  if (send(srv->ctl_fd, msg, strlen(msg), MSG_NOSIGNAL) < 0)
    hs_log(srv, HS_LOG_WARN, "cannot reach the supervisor: %s", strerror(errno));
}

static void ctl_cb(uv_poll_t *h, int status, int events) {
  hs_server_t *srv = h->data;
  char msg[HS_CTL_MAX + 1];
  (void)events;
  ssize_t n = status < 0 ? -1 : recv(srv->ctl_fd, msg, HS_CTL_MAX, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    /* The supervisor is gone: nobody will restart or reload this worker. */
    uv_poll_stop(h);
    if (!srv->stopping) hs_server_begin_stop(srv, "the supervisor is gone");
    return;
  }
  msg[n] = 0;
  if (strncmp(msg, "prepare ", 8) == 0) {
    char err[HS_CTL_MAX - 16], reply[HS_CTL_MAX];
    if (hs_reload_prepare(srv, msg + 8, err, sizeof err) == 0) {
      ctl_send(srv, "prepared");
    } else {
      snprintf(reply, sizeof reply, "failed %s", err);
      ctl_send(srv, reply);
    }
  } else if (strcmp(msg, "commit") == 0) {
    hs_reload_finish(srv, 1);
  } else if (strcmp(msg, "abort") == 0) {
    hs_reload_finish(srv, 0);
  } else if (strcmp(msg, "rollback") == 0) {
    hs_script_reload(srv, "rollback");
  }
}

int hs_worker_attach(hs_server_t *srv, const hs_worker_t *w) {
  srv->ctl_fd = w->ctl;
  int r = uv_poll_init_socket(srv->loop, &ctl_poll, w->ctl);
  if (r == 0) {
    ctl_poll.data = srv;
    r = uv_poll_start(&ctl_poll, UV_READABLE | UV_DISCONNECT, ctl_cb);
  }
  if (r != 0) {
    hs_log(srv, HS_LOG_ERROR, "worker %d: control socket: %s", w->id, uv_strerror(r));
    return -1;
  }
  uv_unref((uv_handle_t *)&ctl_poll); /* a stop does not wait for it */
  return 0;
}

int hs_worker_forward(hs_server_t *srv, const char *trigger) {
  char msg[128];
  if (!srv->worker_id) return -1;
  if (strcmp(trigger, "rollback") == 0)
    snprintf(msg, sizeof msg, "rollback");
  else
    snprintf(msg, sizeof msg, "reload %s", trigger);
  ctl_send(srv, msg);
  return 0;
}

void hs_worker_close(hs_server_t *srv) {
  if (!srv->worker_id || uv_is_closing((uv_handle_t *)&ctl_poll) || !ctl_poll.data) return;
  uv_close((uv_handle_t *)&ctl_poll, NULL);
}
