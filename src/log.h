/* log.h: one-line leveled log to stderr, or to the --log-file. */
#ifndef HS_LOG_H
#define HS_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum hs_log_level {
  HS_LOG_DEBUG = 0,
  HS_LOG_INFO,
  HS_LOG_WARN,
  HS_LOG_ERROR
} hs_log_level_t;

/* Parse "debug", "info", "warn" or "error"; -1 when unknown. */
int hs_log_parse_level(const char *s);
const char *hs_log_level_name(int level);

/* Write one line: "2026-11-25T11:30:00.123Z warn conn 7: message". conn_id 0
 * means no connection. Newlines inside msg are written as "\n" so each entry
 * stays one line, a tab as a space, and other control bytes (and DEL) as
 * "\xNN". When stderr is the journal (JOURNAL_STREAM) a line starts with
 * its syslog priority, "<6>". The minimum level is the caller's business. */
void hs_log_write(int level, uint64_t conn_id, const char *msg, size_t len);

#if defined(__GNUC__)
#define HS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define HS_PRINTF(a, b)
#endif

/* With --workers, a worker's lines say which it is: "... info worker 2: ...". */
void hs_log_set_worker(int id);

/* --log-format: HS_LOG_TEXT (the default) or HS_LOG_JSON, one object per
 * line: {"ts":"2026-11-25T11:30:00.123Z","level":"warn","worker":2,
 * "conn":7,"msg":"message"} ("worker" only with --workers, "conn" only
 * inside a connection's handler). In msg, '"' and '\' are escaped, a
 * newline, CR and tab are written \n, \r, \t, other control bytes (and
 * DEL) \u00XX, well-formed UTF-8 as it is, and a byte that is not valid
 * UTF-8 \u00XX with the byte's value. The journal's "<6>" prefix stays in
 * front of the object (journald strips it). */
enum { HS_LOG_TEXT = 0, HS_LOG_JSON = 1 };
/* "text" or "json"; -1 when unknown. */
int hs_log_parse_format(const char *s);
void hs_log_set_format(int format);
int hs_log_format(void);

/* The last HS_LOG_RECENT warnings and errors, oldest first (for the admin
 * endpoint): how many were copied into out. */
#define HS_LOG_RECENT 16
typedef struct hs_log_recent {
  double at; /* unix time, s */
  int level;
  uint64_t conn;
  char msg[240];
} hs_log_recent_t;
int hs_log_recent(hs_log_recent_t out[HS_LOG_RECENT]);

/* Format and write, when level >= min_level. */
void hs_logf(int min_level, int level, uint64_t conn_id, const char *fmt, ...) HS_PRINTF(4, 5);

/* Always written, on stderr and also in the log file when there is one
 * (the "listening on" lines: whoever started the server reads them). */
void hs_logf_console(int level, const char *fmt, ...) HS_PRINTF(2, 3);

/* --log-file: from now on lines go to path (O_APPEND, made 0644 when
 * missing) instead of stderr. -1 with err filled when it cannot be opened. */
int hs_log_open(const char *path, char *err, size_t errlen);

/* SIGUSR1: open the log file's path again (after logrotate renamed it).
 * 1 when reopened, 0 without --log-file, -1 on failure (logged; the old
 * file is kept). */
int hs_log_reopen(void);

#endif
