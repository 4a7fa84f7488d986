/* main.c: the unit test runner. Runs every test of every list, one line per
 * test, then "N passed, N failed"; exits 1 when any test failed.
 * With arguments, runs only the tests whose names are given. */
#include "test.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const hs_test_t hs_buf_tests[];
extern const hs_test_t hs_frame_tests[];
extern const hs_test_t hs_http1_tests[];
extern const hs_test_t hs_conn_tests[];
extern const hs_test_t hs_tls_tests[];
extern const hs_test_t hs_proxy_tests[];
extern const hs_test_t hs_dict_tests[];
extern const hs_test_t hs_slab_tests[];

static const hs_test_t *const lists[] = {hs_buf_tests, hs_frame_tests, hs_http1_tests, hs_conn_tests,
                                         hs_tls_tests, hs_proxy_tests, hs_dict_tests, hs_slab_tests};

/* Where a failing assertion jumps to; set around each test. */
static jmp_buf fail_jmp;

/* Order two operands by value: signed ones below zero first, then all the
 * rest as unsigned numbers; addresses compare as unsigned numbers. */
int hs_test_val_cmp(hs_test_val_t a, hs_test_val_t b) {
  int aneg = a.kind == HS_VAL_INT && a.i < 0;
  int bneg = b.kind == HS_VAL_INT && b.i < 0;
  if (aneg || bneg) {
    if (!bneg) return -1;
    if (!aneg) return 1;
    return (a.i > b.i) - (a.i < b.i);
  }
  uintmax_t au = a.kind == HS_VAL_INT ? (uintmax_t)a.i
                 : a.kind == HS_VAL_UINT ? a.u : (uintmax_t)a.p;
  uintmax_t bu = b.kind == HS_VAL_INT ? (uintmax_t)b.i
                 : b.kind == HS_VAL_UINT ? b.u : (uintmax_t)b.p;
  return (au > bu) - (au < bu);
}

static void print_val(hs_test_val_t v) {
  switch (v.kind) {
  case HS_VAL_INT: fprintf(stderr, "%" PRIdMAX, v.i); break;
  case HS_VAL_UINT: fprintf(stderr, "%" PRIuMAX, v.u); break;
  case HS_VAL_PTR: fprintf(stderr, "0x%" PRIxPTR, v.p); break;
  }
}

/* Print a span as a C string literal, at most 200 bytes of it. */
static void print_mem(const void *p, size_t n) {
  const unsigned char *s = p;
  size_t shown = n < 200 ? n : 200;
  fprintf(stderr, "(%zu) \"", n);
  for (size_t i = 0; i < shown; i++) {
    unsigned char c = s[i];
    if (c == '\n') fputs("\\n", stderr);
    else if (c == '\r') fputs("\\r", stderr);
    else if (c == '"' || c == '\\') fprintf(stderr, "\\%c", c);
    else if (c >= 0x20 && c < 0x7f) fputc(c, stderr);
    else fprintf(stderr, "\\x%02x", c);
  }
  fputs(shown < n ? "\"..." : "\"", stderr);
}

_Noreturn void hs_test_fail_cmp(const char *file, int line, const char *op,
                                const char *ea, const char *eb,
                                hs_test_val_t a, hs_test_val_t b) {
  fprintf(stderr, "%s:%d: assertion failed: %s %s %s\n  left:  ", file, line,
          ea, op, eb);
  print_val(a);
  fputs("\n  right: ", stderr);
  print_val(b);
  fputc('\n', stderr);
  longjmp(fail_jmp, 1);
}

_Noreturn void hs_test_fail_true(const char *file, int line, const char *expr) {
  fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
  longjmp(fail_jmp, 1);
}

_Noreturn void hs_test_fail_mem(const char *file, int line, const char *ea,
                                const char *eb, const void *a, size_t alen,
                                const void *b, size_t blen) {
  fprintf(stderr, "%s:%d: assertion failed: %s equals %s\n  left:  ", file,
          line, ea, eb);
  print_mem(a, alen);
  fputs("\n  right: ", stderr);
  print_mem(b, blen);
  fputc('\n', stderr);
  longjmp(fail_jmp, 1);
}

/* Whether a test named name was asked for on the command line (all are when
 * none was named). */
static int wanted(const char *name, int argc, char **argv) {
  if (argc < 2) return 1;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

/* Run one test; 1 when it passed. Kept apart from main so that no local
 * variable lives across the setjmp. */
static int run_one(const hs_test_t *t) {
  if (setjmp(fail_jmp) != 0) return 0;
  t->fn();
  return 1;
}

int main(int argc, char **argv) {
  int passed = 0, failed = 0;
  setvbuf(stdout, NULL, _IONBF, 0); /* keep lines in order with stderr */
  for (size_t l = 0; l < sizeof lists / sizeof *lists; l++) {
    for (const hs_test_t *t = lists[l]; t->name; t++) {
      if (!wanted(t->name, argc, argv)) continue;
      if (run_one(t)) {
        printf("ok     %s\n", t->name);
        passed++;
      } else {
        printf("FAILED %s\n", t->name);
        failed++;
      }
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
