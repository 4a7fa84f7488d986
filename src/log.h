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
