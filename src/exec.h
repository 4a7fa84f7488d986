/* exec.h: running a program without blocking the loop (exec.c, socket
 * layer). The host layer (lwork.c) gives it an argument vector and limits,
 * and hears of the end through one plain C callback; nothing here knows of
 * Lua. */
#ifndef HS_EXEC_H
#define HS_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "hotsock.h"

typedef struct hs_exec hs_exec_t;

/* What to run and how far it may go. */
typedef struct hs_exec_opts {
  char **argv;       /* argv[0] is the program (looked up in PATH); NULL-terminated */
  const char *cwd;   /* its working directory; NULL: the server's */
  const char *input; /* fed to its stdin, then stdin is closed; NULL: /dev/null */
  size_t input_len;
  uint64_t timeout;  /* ms; after it the process group is killed; 0: none */
  size_t max_output; /* bytes per stream (stdout, stderr); more kills it */
  /* Whether the host may hold n more bytes for a script (max_lua_memory).
   * Asked before the start and before an output buffer grows. */
  int (*room)(void *ud, size_t n);
  void *room_ud;
} hs_exec_opts_t;

/* How it ended. out and err stay valid during the callback only. */
typedef struct hs_exec_result {
  int64_t status;  /* exit status (0 when killed by a signal) */
  int term_signal; /* the signal that ended it, or 0 */
  const char *out; /* what it wrote to stdout (up to max_output) */
  size_t out_len;
  const char *err; /* and to stderr */
  size_t err_len;
  const char *error; /* NULL, or why it did not end on its own: "timeout",
                        "output too large", "not enough memory (max_lua_memory)" */
} hs_exec_result_t;

/* Called once, from a libuv callback, when the process ended and its
 * output is read (or a limit cut it short). Not called after
 * hs_exec_abandon. */
typedef void (*hs_exec_done_cb)(void *data, const hs_exec_result_t *r);

/* Spawn o->argv with stdin, stdout and stderr on pipes, in a process group
 * of its own. NULL with err ("ENOENT: no such file or directory", ...) when
 * it cannot start; the callback is then never called. */
hs_exec_t *hs_exec_start(hs_server_t *srv, const hs_exec_opts_t *o, hs_exec_done_cb cb, void *data,
                         char *err, size_t errlen);

/* Nobody waits for e any more: the callback will not be called. With kill,
 * the process group gets SIGKILL and every handle is closed now (the server
 * is stopping); without, it runs on to its end or its time-out, and e frees
 * itself then. */
void hs_exec_abandon(hs_exec_t *e, int kill);

#endif
