/* log.c: one line per entry, with a UTC timestamp, on stderr or in the
 * --log-file (reopened on SIGUSR1). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const int syslog_prio[] = {7, 6, 4, 3}; /* debug, info, warning, err */
static int worker_id;              /* with --workers: this worker's number, on every line */
static int log_fd = STDERR_FILENO; /* the --log-file's descriptor, or stderr */
static char *log_path;             /* the --log-file, or NULL */
static int journal = -1;           /* stderr is the journal; -1: not looked at yet */

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

/* systemd sets JOURNAL_STREAM=DEV:INO to the stream it gave the service;
 * when stderr is still that stream, a line starts with its priority. */
static int stderr_is_journal(void) {
  if (journal < 0) {
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
              (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
  }
  return journal;
}

int hs_log_open(const char *path, char *err, size_t errlen) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
    return -1;
  }
  char *copy = strdup(path);
  if (!copy) {
    close(fd);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (log_fd != STDERR_FILENO) close(log_fd);
  free(log_path);
  log_fd = fd;
  log_path = copy;
  return 0;
}

int hs_log_reopen(void) {
  if (!log_path) return 0;
  int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    /* Keep writing to the file as it was, and say so there. */
    hs_logf(HS_LOG_DEBUG, HS_LOG_ERROR, 0, "cannot reopen log file %s: %s", log_path,
            strerror(errno));
    return -1;
  }
  close(log_fd);
  log_fd = fd;
  return 1;
}

/* Format one entry into line (escaped, cut when very long): its length. */
static size_t format_line(char *line, size_t size, int prio, int level, uint64_t conn_id,
                          const char *msg, size_t len) {
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = 0;
  if (prio) n = snprintf(line, size, "<%d>", syslog_prio[level >= 0 && level < 4 ? level : 3]);
  n += snprintf(line + n, size - (size_t)n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                (int)(tv.tv_usec / 1000), hs_log_level_name(level));
  if (worker_id) n += snprintf(line + n, size - (size_t)n, "worker %d: ", worker_id);
  if (conn_id)
    n += snprintf(line + n, size - (size_t)n, "conn %llu: ", (unsigned long long)conn_id);
  /* One entry is one line and no byte reaches a terminal as a control:
   * a newline is written "\n", a tab a space, other controls (and DEL)
   * "\xNN". Room stays for "...\n". */
  size_t limit = size - 5, o = (size_t)n, i;
  static const char hex[] = "0123456789abcdef";
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)msg[i];
    size_t w = ch == '\n' ? 2 : ch == '\t' ? 1 : (ch < 0x20 || ch == 0x7f) ? 4 : 1;
    if (o + w > limit) break;
    if (ch == '\n') {
      line[o++] = '\\';
      line[o++] = 'n';
    } else if (ch == '\t') {
      line[o++] = ' ';
    } else if (w == 4) {
      line[o++] = '\\';
      line[o++] = 'x';
      line[o++] = hex[ch >> 4];
      line[o++] = hex[ch & 15];
    } else {
      line[o++] = (char)ch;
    }
  }
  if (i < len) {
    memcpy(line + o, "...", 3);
    o += 3;
  }
  line[o++] = '\n';
  return o;
}

static void write_entry(int fd, int level, uint64_t conn_id, const char *msg, size_t len) {
  char line[4096];
  int prio = fd == STDERR_FILENO && stderr_is_journal();
  size_t o = format_line(line, sizeof line, prio, level, conn_id, msg, len);
  /* One write() so lines from one process never interleave. */
  ssize_t w = write(fd, line, o);
  (void)w;
}

void hs_log_write(int level, uint64_t conn_id, const char *msg, size_t len) {
  write_entry(log_fd, level, conn_id, msg, len);
}

static void vlogf(int console, int level, uint64_t conn_id, const char *fmt, va_list ap) {
  char msg[2048];
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  write_entry(log_fd, level, conn_id, msg, (size_t)n);
  if (console && log_fd != STDERR_FILENO)
    write_entry(STDERR_FILENO, level, conn_id, msg, (size_t)n);
}

void hs_logf(int min_level, int level, uint64_t conn_id, const char *fmt, ...) {
  if (level < min_level) return;
  va_list ap;
  va_start(ap, fmt);
  vlogf(0, level, conn_id, fmt, ap);
  va_end(ap);
}

void hs_logf_console(int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlogf(1, level, 0, fmt, ap);
  va_end(ap);
}
