/* test_dict.c: the shared dictionary (hs_dict_*): values, expiry, the
 * allocator and LRU eviction, the invariants after random work, and several
 * processes at once: exact counts, and a process killed holding the lock. */
#include "dict.h"
#include "test.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static hs_dict_t *make(size_t bytes) {
  char err[256];
  hs_dict_t *d = hs_dict_create("test", bytes, err, sizeof err);
  if (!d) fprintf(stderr, "hs_dict_create: %s\n", err);
  ASSERT_NOT_NULL(d);
  return d;
}

static void check(hs_dict_t *d) {
  char err[256] = "";
  int r = hs__dict_check(d, err, sizeof err);
  if (r != 0) fprintf(stderr, "invariant broken: %s\n", err);
  ASSERT_EQ(r, 0);
}

static hs_dict_value_t str(const char *s, size_t n) {
  hs_dict_value_t v = {HS_DICT_STR, 0, 0, 0, s, n};
  return v;
}
static hs_dict_value_t num_i(int64_t i) {
  hs_dict_value_t v = {HS_DICT_INT, 0, i, 0, NULL, 0};
  return v;
}
static hs_dict_value_t num_f(double f) {
  hs_dict_value_t v = {HS_DICT_FLOAT, 0, 0, f, NULL, 0};
  return v;
}
static hs_dict_value_t boolean(int b) {
  hs_dict_value_t v = {HS_DICT_BOOL, b, 0, 0, NULL, 0};
  return v;
}

static int set(hs_dict_t *d, const char *k, hs_dict_value_t v, uint64_t ttl) {
  return hs_dict_set(d, HS_DICT_SET, k, strlen(k), &v, ttl, NULL);
}

static int get(hs_dict_t *d, const char *k, hs_dict_value_t *out, char *buf, size_t cap) {
  return hs_dict_get(d, k, strlen(k), out, buf, cap);
}

static int present(hs_dict_t *d, const char *k) {
  hs_dict_value_t v;
  char buf[8];
  return get(d, k, &v, buf, sizeof buf) == 0;
}

static int64_t get_int(hs_dict_t *d, const char *k) {
  hs_dict_value_t v;
  ASSERT_EQ(get(d, k, &v, NULL, 0), 0);
  ASSERT_EQ(v.type, HS_DICT_INT);
  return v.i;
}

static size_t free_space(hs_dict_t *d) {
  size_t n = 0;
  ASSERT_EQ(hs_dict_free_space(d, &n), 0);
  return n;
}

TEST(dict_siphash_matches_the_reference_vectors) {
  uint8_t key[16], msg[15];
  for (int i = 0; i < 16; i++) key[i] = (uint8_t)i;
  for (int i = 0; i < 15; i++) msg[i] = (uint8_t)i;
  ASSERT_EQ(hs__dict_siphash(key, msg, 0), 0x726fdb47dd0e0e31ull);
  ASSERT_EQ(hs__dict_siphash(key, msg, 15), 0xa129ca6149be45e5ull);
}

TEST(dict_create_checks_size_and_name) {
  char err[256], name[80];
  ASSERT_NULL(hs_dict_create("x", HS_DICT_MIN_SIZE - 1, err, sizeof err));
  ASSERT_NOT_NULL(strstr(err, "KiB"));
  ASSERT_NULL(hs_dict_create("x", HS_DICT_MAX_SIZE + 1, err, sizeof err));
  memset(name, 'n', sizeof name);
  name[64] = 0;
  ASSERT_NULL(hs_dict_create(name, HS_DICT_MIN_SIZE, err, sizeof err));
  name[63] = 0;
  hs_dict_t *d = hs_dict_create(name, HS_DICT_MIN_SIZE, err, sizeof err);
  ASSERT_NOT_NULL(d);
  ASSERT_EQ(strcmp(hs_dict_name(d), name), 0);
  ASSERT_EQ(hs_dict_capacity(d), HS_DICT_MIN_SIZE);
  size_t f = free_space(d);
  ASSERT_GT(f, HS_DICT_MIN_SIZE * 9 / 10); /* the header and buckets take little */
  ASSERT_LT(f, HS_DICT_MIN_SIZE);
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_values_keep_their_types) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  char buf[64];
  hs_dict_value_t v;
  ASSERT_EQ(set(d, "s", str("a\0b\xff", 4), 0), 0);
  ASSERT_EQ(set(d, "empty", str("", 0), 0), 0);
  ASSERT_EQ(set(d, "i", num_i(3), 0), 0);
  ASSERT_EQ(set(d, "f", num_f(3.0), 0), 0);
  ASSERT_EQ(set(d, "min", num_i(INT64_MIN), 0), 0);
  ASSERT_EQ(set(d, "negzero", num_f(-0.0), 0), 0);
  ASSERT_EQ(set(d, "inf", num_f(INFINITY), 0), 0);
  ASSERT_EQ(set(d, "t", boolean(1), 0), 0);
  ASSERT_EQ(set(d, "no", boolean(0), 0), 0);
  ASSERT_EQ(get(d, "s", &v, buf, sizeof buf), 0);
  ASSERT_EQ(v.type, HS_DICT_STR);
  ASSERT_MEM_EQ(buf, v.len, "a\0b\xff", 4);
  ASSERT_EQ(get(d, "empty", &v, buf, sizeof buf), 0);
  ASSERT_EQ(v.type, HS_DICT_STR);
  ASSERT_EQ(v.len, 0);
  ASSERT_EQ(get_int(d, "i"), 3);
  ASSERT_EQ(get(d, "f", &v, buf, sizeof buf), 0);
  ASSERT_EQ(v.type, HS_DICT_FLOAT); /* 3.0 is not 3 */
  ASSERT_TRUE(v.f == 3.0);
  ASSERT_EQ(get_int(d, "min"), INT64_MIN);
  ASSERT_EQ(get(d, "negzero", &v, buf, sizeof buf), 0);
  ASSERT_TRUE(v.f == 0.0 && signbit(v.f));
  ASSERT_EQ(get(d, "inf", &v, buf, sizeof buf), 0);
  ASSERT_TRUE(isinf(v.f));
  ASSERT_EQ(get(d, "t", &v, buf, sizeof buf), 0);
  ASSERT_EQ(v.type, HS_DICT_BOOL);
  ASSERT_EQ(v.b, 1);
  ASSERT_EQ(get(d, "no", &v, buf, sizeof buf), 0);
  ASSERT_EQ(v.type, HS_DICT_BOOL);
  ASSERT_EQ(v.b, 0);
  ASSERT_EQ(get(d, "absent", &v, buf, sizeof buf), HS_DICT_ENOTFOUND);
  /* A value changes type in place; a nil deletes. */
  ASSERT_EQ(set(d, "i", str("now a string", 12), 0), 0);
  ASSERT_EQ(get(d, "i", &v, buf, sizeof buf), 0);
  ASSERT_EQ(v.type, HS_DICT_STR);
  hs_dict_value_t nil = {HS_DICT_NIL, 0, 0, 0, NULL, 0};
  ASSERT_EQ(set(d, "i", nil, 0), 0);
  ASSERT_FALSE(present(d, "i"));
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_get_with_a_short_buffer_tells_the_length) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  char big[3000], buf[16];
  memset(big, 'x', sizeof big);
  big[2999] = 'y';
  ASSERT_EQ(set(d, "k", str(big, sizeof big), 0), 0);
  hs_dict_value_t v;
  ASSERT_EQ(get(d, "k", &v, buf, sizeof buf), 0);
  ASSERT_EQ(v.len, sizeof big);
  ASSERT_MEM_STR(buf, sizeof buf, "xxxxxxxxxxxxxxxx");
  char *all = malloc(v.len);
  ASSERT_EQ(get(d, "k", &v, all, v.len), 0);
  ASSERT_MEM_EQ(all, v.len, big, sizeof big);
  free(all);
  hs_dict_destroy(d);
}

TEST(dict_keys_empty_and_too_long_are_refused) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE * 4);
  hs_dict_value_t v = num_i(1), out;
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, "", 0, &v, 0, NULL), HS_DICT_EEMPTYKEY);
  ASSERT_EQ(hs_dict_get(d, "", 0, &out, NULL, 0), HS_DICT_EEMPTYKEY);
  char *key = malloc(HS_DICT_MAX_KEY + 1);
  memset(key, 'k', HS_DICT_MAX_KEY + 1);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, key, HS_DICT_MAX_KEY + 1, &v, 0, NULL), HS_DICT_EKEYLEN);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, key, HS_DICT_MAX_KEY, &v, 0, NULL), 0);
  ASSERT_EQ(hs_dict_get(d, key, HS_DICT_MAX_KEY, &out, NULL, 0), 0);
  ASSERT_EQ(out.i, 1);
  free(key);
  ASSERT_EQ(strcmp(hs_dict_strerror(HS_DICT_EEMPTYKEY), "empty key"), 0);
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_add_and_replace) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  hs_dict_value_t a = str("a", 1), b = str("bb", 2), v;
  char buf[8];
  ASSERT_EQ(hs_dict_set(d, HS_DICT_REPLACE, "k", 1, &a, 0, NULL), HS_DICT_ENOTFOUND);
  ASSERT_FALSE(present(d, "k"));
  ASSERT_EQ(hs_dict_set(d, HS_DICT_ADD, "k", 1, &a, 0, NULL), 0);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_ADD, "k", 1, &b, 0, NULL), HS_DICT_EEXISTS);
  ASSERT_EQ(get(d, "k", &v, buf, sizeof buf), 0);
  ASSERT_MEM_STR(buf, v.len, "a");
  ASSERT_EQ(hs_dict_set(d, HS_DICT_REPLACE, "k", 1, &b, 0, NULL), 0);
  ASSERT_EQ(get(d, "k", &v, buf, sizeof buf), 0);
  ASSERT_MEM_STR(buf, v.len, "bb");
  /* An expired entry counts as absent for add and replace. */
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, "e", 1, &a, 1, NULL), 0);
  sleep_ms(20);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_REPLACE, "e", 1, &b, 0, NULL), HS_DICT_ENOTFOUND);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, "e", 1, &a, 1, NULL), 0);
  sleep_ms(20);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_ADD, "e", 1, &b, 0, NULL), 0);
  ASSERT_EQ(get(d, "e", &v, buf, sizeof buf), 0);
  ASSERT_MEM_STR(buf, v.len, "bb");
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_incr) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  hs_dict_value_t one = num_i(1), half = num_f(0.5), ten = num_i(10), out, v;
  char buf[8];
  ASSERT_EQ(hs_dict_incr(d, "n", 1, &one, NULL, 0, &out, NULL), HS_DICT_ENOTFOUND);
  ASSERT_FALSE(present(d, "n"));
  ASSERT_EQ(hs_dict_incr(d, "n", 1, &one, &ten, 0, &out, NULL), 0);
  ASSERT_EQ(out.type, HS_DICT_INT);
  ASSERT_EQ(out.i, 11);
  ASSERT_EQ(hs_dict_incr(d, "n", 1, &one, &ten, 0, &out, NULL), 0); /* init only when absent */
  ASSERT_EQ(out.i, 12);
  ASSERT_EQ(hs_dict_incr(d, "n", 1, &half, NULL, 0, &out, NULL), 0);
  ASSERT_EQ(out.type, HS_DICT_FLOAT);
  ASSERT_TRUE(out.f == 12.5);
  ASSERT_EQ(get(d, "n", &v, buf, sizeof buf), 0);
  ASSERT_EQ(v.type, HS_DICT_FLOAT);
  /* Integers wrap as Lua's do. */
  hs_dict_value_t max = num_i(INT64_MAX);
  ASSERT_EQ(set(d, "w", max, 0), 0);
  ASSERT_EQ(hs_dict_incr(d, "w", 1, &one, NULL, 0, &out, NULL), 0);
  ASSERT_EQ(out.i, INT64_MIN);
  ASSERT_EQ(set(d, "s", str("12", 2), 0), 0);
  ASSERT_EQ(hs_dict_incr(d, "s", 1, &one, NULL, 0, &out, NULL), HS_DICT_ENOTNUM);
  ASSERT_EQ(set(d, "b", boolean(1), 0), 0);
  ASSERT_EQ(hs_dict_incr(d, "b", 1, &one, &ten, 0, &out, NULL), HS_DICT_ENOTNUM);
  /* It keeps the entry's expiry; init_ttl gives a new one its own. */
  uint64_t left = 0;
  ASSERT_EQ(set(d, "t", num_i(1), 100000), 0);
  ASSERT_EQ(hs_dict_incr(d, "t", 1, &one, NULL, 0, &out, NULL), 0);
  ASSERT_EQ(hs_dict_ttl(d, "t", 1, &left), 0);
  ASSERT_GT(left, 0);
  ASSERT_LE(left, 100000);
  ASSERT_EQ(hs_dict_incr(d, "u", 1, &one, &ten, 50000, &out, NULL), 0);
  ASSERT_EQ(hs_dict_ttl(d, "u", 1, &left), 0);
  ASSERT_GT(left, 0);
  ASSERT_LE(left, 50000);
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_ttl_expire_and_flush_expired) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  uint64_t left = 1;
  size_t n = 0, before = free_space(d);
  ASSERT_EQ(set(d, "forever", num_i(1), 0), 0);
  ASSERT_EQ(hs_dict_ttl(d, "forever", 7, &left), 0);
  ASSERT_EQ(left, 0); /* never expires */
  ASSERT_EQ(set(d, "long", num_i(1), 3600 * 1000), 0);
  ASSERT_EQ(hs_dict_ttl(d, "long", 4, &left), 0);
  ASSERT_GT(left, 3500 * 1000);
  ASSERT_EQ(hs_dict_ttl(d, "absent", 6, &left), HS_DICT_ENOTFOUND);
  for (int i = 0; i < 10; i++) {
    char k[16];
    snprintf(k, sizeof k, "short%d", i);
    ASSERT_EQ(set(d, k, num_i(i), 10), 0);
  }
  ASSERT_EQ(hs_dict_expire(d, "short0", 6, 0), 0);   /* now it never expires */
  ASSERT_EQ(hs_dict_expire(d, "forever", 7, 10), 0); /* and this one will */
  ASSERT_EQ(hs_dict_expire(d, "absent", 6, 10), HS_DICT_ENOTFOUND);
  sleep_ms(60);
  ASSERT_FALSE(present(d, "short1"));
  ASSERT_FALSE(present(d, "forever"));
  ASSERT_TRUE(present(d, "short0"));
  ASSERT_TRUE(present(d, "long"));
  hs_dict_stats_t st;
  ASSERT_EQ(hs_dict_stats(d, &st), 0);
  ASSERT_EQ(st.entries, 10); /* 8 expired ones still hold memory */
  ASSERT_EQ(hs_dict_flush_expired(d, 3, &n), 0);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(hs_dict_flush_expired(d, 0, &n), 0);
  ASSERT_EQ(n, 5);
  ASSERT_EQ(hs_dict_stats(d, &st), 0);
  ASSERT_EQ(st.entries, 2);
  ASSERT_EQ(hs_dict_delete(d, "short0", 6), 0);
  ASSERT_EQ(hs_dict_delete(d, "short0", 6), HS_DICT_ENOTFOUND);
  ASSERT_EQ(hs_dict_delete(d, "long", 4), 0);
  ASSERT_EQ(free_space(d), before);
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_keys_most_recent_first_skipping_expired) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  char buf[256], small[12];
  size_t count, needed;
  ASSERT_EQ(set(d, "a", num_i(1), 0), 0);
  ASSERT_EQ(set(d, "bb", num_i(2), 0), 0);
  ASSERT_EQ(set(d, "gone", num_i(2), 1), 0);
  ASSERT_EQ(set(d, "ccc", num_i(3), 0), 0);
  ASSERT_TRUE(present(d, "a")); /* a is now the most recently used */
  sleep_ms(20);
  ASSERT_EQ(hs_dict_keys(d, 0, buf, sizeof buf, &count, &needed), 0);
  ASSERT_EQ(count, 3);
  ASSERT_EQ(needed, 3 * 4 + 6);
  uint32_t len;
  memcpy(&len, buf, 4);
  ASSERT_MEM_STR(buf + 4, len, "a");
  memcpy(&len, buf + 5, 4);
  ASSERT_MEM_STR(buf + 9, len, "ccc");
  memcpy(&len, buf + 12, 4);
  ASSERT_MEM_STR(buf + 16, len, "bb");
  ASSERT_EQ(hs_dict_keys(d, 2, buf, sizeof buf, &count, &needed), 0);
  ASSERT_EQ(count, 2);
  /* A short buffer: what fits, and how much all would take. */
  ASSERT_EQ(hs_dict_keys(d, 0, small, sizeof small, &count, &needed), 0);
  ASSERT_EQ(count, 2);
  ASSERT_EQ(needed, 18);
  ASSERT_EQ(hs_dict_keys(d, 0, NULL, 0, &count, &needed), 0);
  ASSERT_EQ(count, 0);
  ASSERT_EQ(needed, 18);
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_flush_all_frees_everything) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  size_t empty = free_space(d), count, needed;
  for (int i = 0; i < 100; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    ASSERT_EQ(set(d, k, str("value", 5), 0), 0);
  }
  ASSERT_LT(free_space(d), empty);
  ASSERT_EQ(hs_dict_flush_all(d), 0);
  ASSERT_EQ(free_space(d), empty);
  ASSERT_FALSE(present(d, "k1"));
  ASSERT_EQ(hs_dict_keys(d, 0, NULL, 0, &count, &needed), 0);
  ASSERT_EQ(needed, 0);
  ASSERT_EQ(set(d, "again", num_i(1), 0), 0);
  ASSERT_TRUE(present(d, "again"));
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_freed_memory_merges_back) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE * 4);
  size_t empty = free_space(d);
  char val[300];
  memset(val, 'v', sizeof val);
  /* Mixed sizes, freed in an order that leaves holes to merge. */
  for (int i = 0; i < 400; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    ASSERT_EQ(set(d, k, str(val, (size_t)(i * 7) % sizeof val), 0), 0);
  }
  check(d);
  for (int pass = 0; pass < 3; pass++)
    for (int i = pass; i < 400; i += 3) {
      char k[16];
      snprintf(k, sizeof k, "k%d", i);
      ASSERT_EQ(hs_dict_delete(d, k, strlen(k)), 0);
      if (i % 50 == 0) check(d);
    }
  ASSERT_EQ(free_space(d), empty);
  check(d);
  /* Growing and shrinking one value in place. */
  for (size_t n = 0; n < sizeof val; n += 37) ASSERT_EQ(set(d, "g", str(val, n), 0), 0);
  for (size_t n = sizeof val; n >= 37; n -= 37) ASSERT_EQ(set(d, "g", str(val, n), 0), 0);
  ASSERT_EQ(hs_dict_delete(d, "g", 1), 0);
  ASSERT_EQ(free_space(d), empty);
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_full_evicts_least_recently_used) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  char val[500], k[16];
  memset(val, 'v', sizeof val);
  int forced_at = -1, forcible = 0;
  /* Fill well past the cap; keep k0 and k1 hot by reading them. */
  for (int i = 0; i < 600; i++) {
    snprintf(k, sizeof k, "k%d", i);
    hs_dict_value_t v = str(val, sizeof val);
    ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, k, strlen(k), &v, 0, &forcible), 0);
    if (forcible && forced_at < 0) forced_at = i;
    if (i >= 1) {
      ASSERT_TRUE(present(d, "k0"));
      ASSERT_TRUE(present(d, "k1"));
    }
  }
  ASSERT_GT(forced_at, 50); /* about a hundred 544-byte entries fit */
  ASSERT_LT(forced_at, 130);
  ASSERT_TRUE(present(d, "k0")); /* read at every step: never the coldest */
  ASSERT_TRUE(present(d, "k1"));
  ASSERT_FALSE(present(d, "k2")); /* never read again: among the first to go */
  ASSERT_TRUE(present(d, "k599"));
  ASSERT_TRUE(present(d, "k598"));
  hs_dict_stats_t st;
  ASSERT_EQ(hs_dict_stats(d, &st), 0);
  ASSERT_GT(st.evictions, 400);
  check(d);
  /* Exactly the coldest goes: with all entries the same size, one new entry
   * evicts one old one, the least recently used. */
  size_t count, needed;
  char *keys = malloc(1 << 16);
  ASSERT_EQ(hs_dict_keys(d, 0, keys, 1 << 16, &count, &needed), 0);
  uint32_t len;
  size_t off = 0;
  for (size_t i = 0; i + 1 < count; i++) {
    memcpy(&len, keys + off, 4);
    off += 4 + len;
  }
  memcpy(&len, keys + off, 4);
  char coldest[16] = "";
  memcpy(coldest, keys + off + 4, len < 15 ? len : 15);
  free(keys);
  hs_dict_value_t v = str(val, sizeof val);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, "new", 3, &v, 0, &forcible), 0);
  ASSERT_EQ(forcible, 1);
  ASSERT_FALSE(present(d, coldest));
  ASSERT_TRUE(present(d, "k0"));
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_expired_entries_go_before_live_ones) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  char val[500], k[16];
  memset(val, 'v', sizeof val);
  int forcible = 0, i;
  /* Fill, let every entry expire, then fill with live ones: the live ones
   * take the room of the expired ones and nothing live is evicted. */
  for (i = 0; i < 200 && free_space(d) > 1000; i++) {
    snprintf(k, sizeof k, "e%d", i);
    hs_dict_value_t v = str(val, sizeof val);
    ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, k, strlen(k), &v, 0, NULL), 0);
  }
  for (int j = 0; j < i; j++) {
    snprintf(k, sizeof k, "e%d", j);
    ASSERT_EQ(hs_dict_expire(d, k, strlen(k), 1), 0);
  }
  sleep_ms(20);
  for (int j = 0; j < i - 1; j++) {
    snprintf(k, sizeof k, "l%d", j);
    hs_dict_value_t v = str(val, sizeof val);
    ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, k, strlen(k), &v, 0, &forcible), 0);
    ASSERT_EQ(forcible, 0);
  }
  ASSERT_TRUE(present(d, "l0"));
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_safe_set_does_not_evict) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  char val[500], k[16];
  memset(val, 'v', sizeof val);
  int r = 0, i, forcible = 1;
  for (i = 0; i < 1000 && r == 0; i++) {
    snprintf(k, sizeof k, "k%d", i);
    hs_dict_value_t v = str(val, sizeof val);
    r = hs_dict_set(d, HS_DICT_SET | HS_DICT_SAFE, k, strlen(k), &v, 0, &forcible);
  }
  ASSERT_EQ(r, HS_DICT_ENOMEM);
  ASSERT_EQ(forcible, 0);
  ASSERT_TRUE(present(d, "k0")); /* nothing went */
  hs_dict_value_t v = str(val, sizeof val);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_ADD | HS_DICT_SAFE, "x", 1, &v, 0, NULL), HS_DICT_ENOMEM);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, "x", 1, &v, 0, &forcible), 0);
  ASSERT_EQ(forcible, 1);
  ASSERT_TRUE(present(d, "k0")); /* read above, so k1 was the coldest */
  ASSERT_FALSE(present(d, "k1"));
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_a_value_must_fit_the_dictionary) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  size_t empty = free_space(d);
  char *big = malloc(HS_DICT_MIN_SIZE);
  memset(big, 'b', HS_DICT_MIN_SIZE);
  ASSERT_EQ(set(d, "small", num_i(1), 0), 0);
  hs_dict_value_t v = str(big, HS_DICT_MIN_SIZE);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, "big", 3, &v, 0, NULL), HS_DICT_ETOOBIG);
  ASSERT_TRUE(present(d, "small")); /* a refusal changes nothing */
  /* The largest value that fits an empty dictionary: everything else goes. */
  size_t most = empty - HS_DICT_ENTRY_OVERHEAD - 3;
  v = str(big, most);
  int forcible = 0;
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, "big", 3, &v, 0, &forcible), 0);
  ASSERT_EQ(forcible, 1);
  ASSERT_FALSE(present(d, "small"));
  ASSERT_EQ(free_space(d), 0);
  v = str(big, most + 1);
  ASSERT_EQ(hs_dict_set(d, HS_DICT_SET, "big", 3, &v, 0, NULL), HS_DICT_ETOOBIG);
  free(big);
  check(d);
  hs_dict_destroy(d);
}

/* A small deterministic generator (xorshift), so a failure repeats. */
static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void) {
  rnd_state ^= rnd_state << 13;
  rnd_state ^= rnd_state >> 7;
  rnd_state ^= rnd_state << 17;
  return rnd_state;
}

#define MODEL_KEYS 300
typedef struct model {
  int present;
  size_t len; /* a string of len bytes of fill, or a number when num */
  int num;
  int64_t i;
  char fill;
} model_t;

/* Random work against a model; with evict, entries may vanish (the dict is
 * small) but what is there must be what was last stored. */
static void random_work(size_t bytes, int evict, int steps) {
  hs_dict_t *d = make(bytes);
  model_t *m = calloc(MODEL_KEYS, sizeof *m);
  char *val = malloc(4096), *buf = malloc(4096);
  for (int step = 0; step < steps; step++) {
    int k = (int)(rnd() % MODEL_KEYS), op = (int)(rnd() % 10);
    char key[24];
    int klen = snprintf(key, sizeof key, "key-%d-%s", k, k % 7 ? "x" : "a-longer-one");
    model_t *e = &m[k];
    hs_dict_value_t v, out;
    if (op < 4) { /* set a string */
      size_t len = (size_t)(rnd() % (evict ? 2000 : 600));
      char fill = (char)('a' + rnd() % 26);
      memset(val, fill, len);
      v = str(val, len);
      int kind = op == 0 ? HS_DICT_ADD : op == 1 ? HS_DICT_REPLACE : HS_DICT_SET;
      int r = hs_dict_set(d, kind, key, (size_t)klen, &v, 0, NULL);
      if (!evict) {
        if (kind == HS_DICT_ADD) ASSERT_EQ(r, e->present ? HS_DICT_EEXISTS : 0);
        if (kind == HS_DICT_REPLACE) ASSERT_EQ(r, e->present ? 0 : HS_DICT_ENOTFOUND);
      }
      if (r == 0) *e = (model_t){1, len, 0, 0, fill};
    } else if (op < 6) { /* incr */
      hs_dict_value_t by = num_i((int64_t)(rnd() % 100)), init = num_i(5);
      int r = hs_dict_incr(d, key, (size_t)klen, &by, &init, 0, &out, NULL);
      if (r == HS_DICT_ENOTNUM) {
        ASSERT_TRUE(e->present && !e->num);
      } else {
        ASSERT_EQ(r, 0);
        int64_t kept = (e->present && e->num ? e->i : 5) + by.i, anew = 5 + by.i;
        if (!evict) ASSERT_FALSE(e->present && !e->num);
        if (!evict)
          ASSERT_EQ(out.i, kept);
        else
          ASSERT_TRUE(out.i == kept || out.i == anew); /* anew: it had been evicted */
        *e = (model_t){1, 0, 1, out.i, 0};
      }
    } else if (op < 7) { /* delete */
      int r = hs_dict_delete(d, key, (size_t)klen);
      if (!evict) ASSERT_EQ(r, e->present ? 0 : HS_DICT_ENOTFOUND);
      e->present = 0;
    } else { /* get */
      int r = hs_dict_get(d, key, (size_t)klen, &out, buf, 4096);
      if (!evict) ASSERT_EQ(r, e->present ? 0 : HS_DICT_ENOTFOUND);
      if (r == 0) {
        ASSERT_TRUE(e->present);
        if (e->num) {
          ASSERT_EQ(out.type, HS_DICT_INT);
          ASSERT_EQ(out.i, e->i);
        } else {
          ASSERT_EQ(out.type, HS_DICT_STR);
          ASSERT_EQ(out.len, e->len);
          size_t bad = 0;
          for (size_t j = 0; j < out.len; j++) bad += buf[j] != e->fill;
          ASSERT_EQ(bad, 0);
        }
      } else if (evict) {
        e->present = 0; /* evicted */
      }
    }
    if (step % 500 == 0) check(d);
  }
  check(d);
  free(m);
  free(val);
  free(buf);
  hs_dict_destroy(d);
}

TEST(dict_random_work_matches_a_model) { random_work(4 * 1024 * 1024, 0, 30000); }
TEST(dict_random_work_under_eviction_keeps_values_right) { random_work(96 * 1024, 1, 30000); }

/* ---- several processes ---- */

/* Wait for pid to exit within ms; its exit status, or -1 (then it is
 * killed) when it did not. */
static int wait_for(pid_t pid, long ms) {
  for (long waited = 0;; waited += 5) {
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (waited >= ms) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    sleep_ms(5);
  }
}

/* A child that adds 1 to key n times; exits 0 when every incr worked. */
static pid_t incr_child(hs_dict_t *d, const char *key, long n) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(60); /* never outlive a stuck test */
    hs_dict_value_t one = num_i(1), zero = num_i(0), out;
    int bad = 0;
    for (long i = 0; i < n || n < 0; i++)
      bad |= hs_dict_incr(d, key, strlen(key), &one, &zero, 0, &out, NULL) != 0;
    _exit(bad);
  }
  return pid;
}

TEST(dict_incr_from_four_processes_is_exact) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  pid_t kids[4];
  for (int i = 0; i < 4; i++) kids[i] = incr_child(d, "hits", 10000);
  for (int i = 0; i < 4; i++) ASSERT_EQ(wait_for(kids[i], 30000), 0);
  ASSERT_EQ(get_int(d, "hits"), 40000);
  check(d);
  hs_dict_destroy(d);
}

/* A child takes the lock (marking a change under way when dirty), says so
 * through a pipe, and waits to be killed. */
static pid_t holder_child(hs_dict_t *d, int dirty) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    alarm(60);
    close(fds[0]);
    if (hs__dict_lock(d, dirty) != 0) _exit(1);
    if (write(fds[1], "L", 1) != 1) _exit(1);
    for (;;) pause();
  }
  close(fds[1]);
  char c = 0;
  ASSERT_EQ(read(fds[0], &c, 1), 1);
  close(fds[0]);
  return pid;
}

TEST(dict_a_process_killed_holding_the_lock_does_not_wedge_the_others) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  ASSERT_EQ(set(d, "hits", num_i(100), 0), 0);
  pid_t holder = holder_child(d, 0);
  pid_t kids[3];
  for (int i = 0; i < 3; i++) kids[i] = incr_child(d, "hits", 1000);
  sleep_ms(50); /* they are all waiting on the lock now */
  ASSERT_EQ(kill(holder, SIGKILL), 0);
  ASSERT_EQ(wait_for(holder, 5000), 128 + SIGKILL);
  for (int i = 0; i < 3; i++) ASSERT_EQ(wait_for(kids[i], 30000), 0);
  /* It changed nothing, so nothing was lost. */
  ASSERT_EQ(get_int(d, "hits"), 3100);
  hs_dict_stats_t st;
  ASSERT_EQ(hs_dict_stats(d, &st), 0);
  ASSERT_EQ(st.recoveries, 1);
  ASSERT_EQ(st.resets, 0);
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_a_process_killed_mid_change_leaves_it_empty_and_working) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  size_t empty = free_space(d);
  ASSERT_EQ(set(d, "hits", num_i(100), 0), 0);
  ASSERT_EQ(set(d, "other", str("x", 1), 0), 0);
  pid_t holder = holder_child(d, 1);
  ASSERT_EQ(kill(holder, SIGKILL), 0);
  ASSERT_EQ(wait_for(holder, 5000), 128 + SIGKILL);
  ASSERT_FALSE(present(d, "other")); /* its links could not be trusted */
  ASSERT_EQ(free_space(d), empty);
  pid_t kids[2];
  for (int i = 0; i < 2; i++) kids[i] = incr_child(d, "hits", 1000);
  for (int i = 0; i < 2; i++) ASSERT_EQ(wait_for(kids[i], 30000), 0);
  ASSERT_EQ(get_int(d, "hits"), 2000);
  hs_dict_stats_t st;
  ASSERT_EQ(hs_dict_stats(d, &st), 0);
  ASSERT_EQ(st.recoveries, 1);
  ASSERT_EQ(st.resets, 1);
  check(d);
  hs_dict_destroy(d);
}

TEST(dict_processes_killed_at_random_moments_do_not_stop_the_rest) {
  hs_dict_t *d = make(HS_DICT_MIN_SIZE);
  pid_t kids[3];
  for (int i = 0; i < 3; i++) kids[i] = incr_child(d, "hits", 20000);
  for (int round = 0; round < 10; round++) {
    pid_t victim = incr_child(d, "hits", -1); /* forever */
    sleep_ms(2 + round);
    ASSERT_EQ(kill(victim, SIGKILL), 0);
    ASSERT_EQ(wait_for(victim, 5000), 128 + SIGKILL);
  }
  for (int i = 0; i < 3; i++) ASSERT_EQ(wait_for(kids[i], 60000), 0);
  check(d);
  hs_dict_value_t one = num_i(1), out;
  ASSERT_EQ(hs_dict_incr(d, "hits", 4, &one, &one, 0, &out, NULL), 0);
  hs_dict_destroy(d);
}

const hs_test_t hs_dict_tests[] = {
    TEST_ENTRY(dict_siphash_matches_the_reference_vectors),
    TEST_ENTRY(dict_create_checks_size_and_name),
    TEST_ENTRY(dict_values_keep_their_types),
    TEST_ENTRY(dict_get_with_a_short_buffer_tells_the_length),
    TEST_ENTRY(dict_keys_empty_and_too_long_are_refused),
    TEST_ENTRY(dict_add_and_replace),
    TEST_ENTRY(dict_incr),
    TEST_ENTRY(dict_ttl_expire_and_flush_expired),
    TEST_ENTRY(dict_keys_most_recent_first_skipping_expired),
    TEST_ENTRY(dict_flush_all_frees_everything),
    TEST_ENTRY(dict_freed_memory_merges_back),
    TEST_ENTRY(dict_full_evicts_least_recently_used),
    TEST_ENTRY(dict_expired_entries_go_before_live_ones),
    TEST_ENTRY(dict_safe_set_does_not_evict),
    TEST_ENTRY(dict_a_value_must_fit_the_dictionary),
    TEST_ENTRY(dict_random_work_matches_a_model),
    TEST_ENTRY(dict_random_work_under_eviction_keeps_values_right),
    TEST_ENTRY(dict_incr_from_four_processes_is_exact),
    TEST_ENTRY(dict_a_process_killed_holding_the_lock_does_not_wedge_the_others),
    TEST_ENTRY(dict_a_process_killed_mid_change_leaves_it_empty_and_working),
    TEST_ENTRY(dict_processes_killed_at_random_moments_do_not_stop_the_rest),
    TEST_END,
};
