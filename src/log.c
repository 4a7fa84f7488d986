/* log.c: one line per entry, with a UTC timestamp, on stderr or in the
 * --log-file (reopened on SIGUSR1); plain text or, with --log-format json,
 * one JSON object per line. The minimum level is never kept here: callers
 * pass it (srv->log_level), so a change made at run time applies at once. */
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
static int log_format = HS_LOG_TEXT; /* --log-format */

void hs_log_set_worker(int id) { worker_id = id; }

int hs_log_parse_format(const char *s) {
  if (strcmp(s, "text") == 0) return HS_LOG_TEXT;
  if (strcmp(s, "json") == 0) return HS_LOG_JSON;
  return -1;
}

void hs_log_set_format(int format) { log_format = format == HS_LOG_JSON ? HS_LOG_JSON : HS_LOG_TEXT; }

int hs_log_format(void) { return log_format; }

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

/* The length of the well-formed UTF-8 sequence at s (n bytes left), or 0
 * when s starts no such sequence: a stray continuation byte, an overlong
 * form, a surrogate, past U+10FFFF, or cut short. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
  if (c >= 0xc2 && c <= 0xdf) len = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;      /* overlong */
    else if (c == 0xed) hi = 0x9f; /* UTF-16 surrogates */
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0) lo = 0x90;      /* overlong */
    else if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
  } else
    return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xbf) return 0;
  return len;
}

/* JSON: msg as the characters of a string (no quotes) into line from o up
 * to limit; returns the new o and sets *done to the bytes of msg taken.
 * '"' and '\' are escaped, newline, CR and tab as \n, \r, \t, other
 * controls (and DEL) as \u00XX; well-formed UTF-8 is copied as it is,
 * and a byte that is not part of any (invalid UTF-8) is written \u00XX
 * with that byte's value, so the line stays valid JSON and the byte is
 * not lost. A character is never cut in half. */
static size_t json_escape(char *line, size_t o, size_t limit, const char *msg, size_t len,
                          size_t *done) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *m = (const unsigned char *)msg;
  size_t i = 0;
  while (i < len) {
    unsigned char ch = m[i];
    size_t take = 1, w;
    char esc = 0;
    if (ch == '"' || ch == '\\') esc = (char)ch;
    else if (ch == '\n') esc = 'n';
    else if (ch == '\r') esc = 'r';
    else if (ch == '\t') esc = 't';
    if (esc) w = 2;
    else if (ch < 0x20 || ch == 0x7f) w = 6;
    else if (ch < 0x80) w = 1;
    else if ((take = utf8_len(m + i, len - i)) != 0) w = take;
    else {
      take = 1;
      w = 6;
    }
    if (o + w > limit) break;
    if (esc) {
      line[o++] = '\\';
      line[o++] = esc;
    } else if (w == 6) {
      memcpy(line + o, "\\u00", 4);
      line[o + 4] = hex[ch >> 4];
      line[o + 5] = hex[ch & 15];
      o += 6;
    } else {
      memcpy(line + o, m + i, take);
      o += take;
    }
    i += take;
  }
  *done = i;
  return o;
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
  if (log_format == HS_LOG_JSON) {
    /* {"ts":"...Z","level":"info","worker":2,"conn":7,"msg":"..."} */
    n += snprintf(line + n, size - (size_t)n,
                  "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\"",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  (int)(tv.tv_usec / 1000), hs_log_level_name(level));
    if (worker_id) n += snprintf(line + n, size - (size_t)n, ",\"worker\":%d", worker_id);
    if (conn_id)
      n += snprintf(line + n, size - (size_t)n, ",\"conn\":%llu", (unsigned long long)conn_id);
    n += snprintf(line + n, size - (size_t)n, ",\"msg\":\"");
    /* Room stays for "...\"}\n". */
    size_t done, o = json_escape(line, (size_t)n, size - 7, msg, len, &done);
    if (done < len) {
      memcpy(line + o, "...", 3);
      o += 3;
    }
    memcpy(line + o, "\"}\n", 3);
    return o + 3;
  }
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

/* The last warnings and errors, for the admin endpoint's /stats. */
static hs_log_recent_t recent[HS_LOG_RECENT];
static unsigned nrecent;

static void remember(int level, uint64_t conn_id, const char *msg, size_t len) {
  if (level < HS_LOG_WARN) return;
  hs_log_recent_t *r = &recent[nrecent++ % HS_LOG_RECENT];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  r->at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
  r->level = level;
  r->conn = conn_id;
  if (len >= sizeof r->msg) len = sizeof r->msg - 1;
  memcpy(r->msg, msg, len);
  r->msg[len] = 0;
}

int hs_log_recent(hs_log_recent_t out[HS_LOG_RECENT]) {
  unsigned n = nrecent < HS_LOG_RECENT ? nrecent : HS_LOG_RECENT;
  for (unsigned i = 0; i < n; i++) out[i] = recent[(nrecent - n + i) % HS_LOG_RECENT];
  return (int)n;
}

void hs_log_write(int level, uint64_t conn_id, const char *msg, size_t len) {
  remember(level, conn_id, msg, len);
  write_entry(log_fd, level, conn_id, msg, len);
}

static void vlogf(int console, int level, uint64_t conn_id, const char *fmt, va_list ap) {
  char msg[2048];
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  remember(level, conn_id, msg, (size_t)n);
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
