/* log.c: one line per entry on stderr, with a UTC timestamp. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static int worker_id; /* with --workers: this worker's number, on every line */

void hs_log_set_worker(int id) { worker_id = id; }

int hs_log_parse_level(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, level_names[i]) == 0) return i;
  if (strcmp(s, "warning") == 0) return HS_LOG_WARN;
  return -1;
}

const char *hs_log_level_name(int level) {
  return level >= 0 && level < 4 ? level_names[level] : "?";
}

void hs_log_write(int level, uint64_t conn_id, const char *msg, size_t len) {
  char line[4096];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   (int)(tv.tv_usec / 1000), hs_log_level_name(level));
  if (worker_id) n += snprintf(line + n, sizeof line - (size_t)n, "worker %d: ", worker_id);
  if (conn_id)
    n += snprintf(line + n, sizeof line - (size_t)n, "conn %llu: ", (unsigned long long)conn_id);
  /* Escape newlines and tabs so one entry is one line; cut very long entries. */
  size_t room = sizeof line - (size_t)n - 5;
  size_t o = (size_t)n;
  for (size_t i = 0; i < len && o < (size_t)n + room; i++) {
    char ch = msg[i];
    if (ch == '\n') {
      line[o++] = '\\';
      line[o++] = 'n';
    } else if (ch == '\t') {
      line[o++] = ' ';
    } else {
      line[o++] = ch;
    }
  }
  if (o >= (size_t)n + room) {
    memcpy(line + o, "...", 3);
    o += 3;
  }
  line[o++] = '\n';
  /* One write() so lines from one process never interleave. */
  ssize_t w = write(STDERR_FILENO, line, o);
  (void)w;
}

void hs_logf(int min_level, int level, uint64_t conn_id, const char *fmt, ...) {
  if (level < min_level) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  hs_log_write(level, conn_id, msg, (size_t)n);
}
