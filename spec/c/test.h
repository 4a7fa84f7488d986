/* test.h: a tiny unit test runner in the style of libuv's test/runner.
 *
 * A test file defines its tests with TEST(name) and ends with its list:
 *
 *   TEST(buf_append) { ... ASSERT_EQ(hs_buf_len(&b), 5); ... }
 *
 *   const hs_test_t hs_buf_tests[] = {
 *     TEST_ENTRY(buf_append),
 *     TEST_END
 *   };
 *
 * TEST() makes a static function, so a test that is defined but left out of
 * its list is an unused-function warning (an error under -Werror) instead of
 * a test that silently never runs. main.c runs every list, prints one line
 * per test and a closing "N passed, N failed", and exits non-zero on any
 * failure. `hs_unit NAME...` runs only the named tests.
 *
 * A failing assertion prints file:line, the expression and the values, and
 * ends the current test at once (longjmp back to the runner), so assertions
 * also work inside helper functions. Memory a failed test allocated is
 * leaked; the process is about to report failure anyway.
 */
#ifndef HS_TEST_H
#define HS_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct hs_test {
  const char *name; /* printed by the runner */
  void (*fn)(void); /* the test body */
} hs_test_t;

#define TEST(name) static void hs_test_##name(void)
#define TEST_ENTRY(name) {#name, hs_test_##name}
#define TEST_END {NULL, NULL}

/* One operand of ASSERT_EQ, converted without loss and tagged with how to
 * compare and print it. */
typedef struct hs_test_val {
  enum { HS_VAL_INT, HS_VAL_UINT, HS_VAL_PTR } kind;
  intmax_t i;            /* HS_VAL_INT */
  uintmax_t u;           /* HS_VAL_UINT */
  uintptr_t p;           /* HS_VAL_PTR: the address */
} hs_test_val_t;

static inline hs_test_val_t hs_test_val_i(intmax_t v) {
  hs_test_val_t r = {HS_VAL_INT, v, 0, 0};
  return r;
}

static inline hs_test_val_t hs_test_val_u(uintmax_t v) {
  hs_test_val_t r = {HS_VAL_UINT, 0, v, 0};
  return r;
}

static inline hs_test_val_t hs_test_val_addr(uintptr_t v) {
  hs_test_val_t r = {HS_VAL_PTR, 0, 0, v};
  return r;
}

static inline hs_test_val_t hs_test_val_p(const volatile void *v) {
  return hs_test_val_addr((uintptr_t)v);
}

/* A pointer operand taken by address only, so that asserting on a pointer
 * to memory not yet written is not a read of that memory. */
#define HS_TEST_ADDR(x) hs_test_val_addr((uintptr_t)(const volatile void *)(x))

/* Pick the converter from the operand's type: signed integers keep their
 * sign, unsigned ones their full range, anything else is a pointer. */
#define HS_TEST_VAL(x)                                                         \
  _Generic((x),                                                                \
      _Bool: hs_test_val_u,                                                    \
      char: hs_test_val_i,                                                     \
      signed char: hs_test_val_i,                                              \
      short: hs_test_val_i,                                                    \
      int: hs_test_val_i,                                                      \
      long: hs_test_val_i,                                                     \
      long long: hs_test_val_i,                                                \
      unsigned char: hs_test_val_u,                                            \
      unsigned short: hs_test_val_u,                                           \
      unsigned int: hs_test_val_u,                                             \
      unsigned long: hs_test_val_u,                                            \
      unsigned long long: hs_test_val_u,                                       \
      default: hs_test_val_p)(x)

/* Implemented in main.c. The fail functions print and end the test. */
int hs_test_val_cmp(hs_test_val_t a, hs_test_val_t b);
_Noreturn void hs_test_fail_cmp(const char *file, int line, const char *op,
                                const char *ea, const char *eb,
                                hs_test_val_t a, hs_test_val_t b);
_Noreturn void hs_test_fail_true(const char *file, int line, const char *expr);
_Noreturn void hs_test_fail_mem(const char *file, int line, const char *ea,
                                const char *eb, const void *a, size_t alen,
                                const void *b, size_t blen);

/* Operands are compared by mathematical value (an int -1 is less than any
 * size_t, never equal to SIZE_MAX), and each is evaluated once. */
#define HS_TEST_CMP(a, op, b, ea, eb)                                          \
  do {                                                                         \
    hs_test_val_t hs__a = HS_TEST_VAL(a), hs__b = HS_TEST_VAL(b);              \
    if (!(hs_test_val_cmp(hs__a, hs__b) op 0))                                 \
      hs_test_fail_cmp(__FILE__, __LINE__, #op, ea, eb, hs__a, hs__b);         \
  } while (0)

#define ASSERT_EQ(a, b) HS_TEST_CMP(a, ==, b, #a, #b)
#define ASSERT_NE(a, b) HS_TEST_CMP(a, !=, b, #a, #b)
#define ASSERT_LT(a, b) HS_TEST_CMP(a, <, b, #a, #b)
#define ASSERT_LE(a, b) HS_TEST_CMP(a, <=, b, #a, #b)
#define ASSERT_GT(a, b) HS_TEST_CMP(a, >, b, #a, #b)
#define ASSERT_GE(a, b) HS_TEST_CMP(a, >=, b, #a, #b)

/* Two pointers are the same address. */
#define ASSERT_PTR_EQ(a, b)                                                    \
  do {                                                                         \
    hs_test_val_t hs__a = HS_TEST_ADDR(a), hs__b = HS_TEST_ADDR(b);            \
    if (hs__a.p != hs__b.p)                                                    \
      hs_test_fail_cmp(__FILE__, __LINE__, "==", #a, #b, hs__a, hs__b);        \
  } while (0)

#define ASSERT_TRUE(expr)                                                      \
  do {                                                                         \
    if (!(expr)) hs_test_fail_true(__FILE__, __LINE__, #expr);                 \
  } while (0)

#define ASSERT_FALSE(expr)                                                     \
  do {                                                                         \
    if (expr) hs_test_fail_true(__FILE__, __LINE__, "!(" #expr ")");           \
  } while (0)

#define ASSERT_NULL(x)                                                         \
  do {                                                                         \
    hs_test_val_t hs__a = HS_TEST_ADDR(x);                                     \
    if (hs__a.p != 0)                                                          \
      hs_test_fail_cmp(__FILE__, __LINE__, "==", #x, "NULL", hs__a,            \
                       hs_test_val_addr(0));                                   \
  } while (0)

#define ASSERT_NOT_NULL(x)                                                     \
  do {                                                                         \
    hs_test_val_t hs__a = HS_TEST_ADDR(x);                                     \
    if (hs__a.p == 0)                                                          \
      hs_test_fail_cmp(__FILE__, __LINE__, "!=", #x, "NULL", hs__a,            \
                       hs_test_val_addr(0));                                   \
  } while (0)

/* Equal lengths and equal bytes; both spans are printed escaped. */
#define ASSERT_MEM_EQ(a, alen, b, blen)                                        \
  HS_TEST_MEM(a, alen, b, blen, #a, #b)
#define HS_TEST_MEM(a, alen, b, blen, ea, eb)                                  \
  do {                                                                         \
    const void *hs__a = (a), *hs__b = (b);                                     \
    size_t hs__al = (alen), hs__bl = (blen);                                   \
    if (hs__al != hs__bl || (hs__al && memcmp(hs__a, hs__b, hs__al) != 0))     \
      hs_test_fail_mem(__FILE__, __LINE__, ea, eb, hs__a, hs__al, hs__b,       \
                       hs__bl);                                                \
  } while (0)

/* A span against a string literal: ASSERT_MEM_STR(p, n, "abc"). */
#define ASSERT_MEM_STR(a, alen, lit)                                           \
  HS_TEST_MEM(a, alen, lit, sizeof(lit) - 1, #a, #lit)

#endif
