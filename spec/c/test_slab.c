/* test_slab.c: the size classes of the Lua heap's small blocks (slab.c). */
#include <stdint.h>
#include <string.h>

#include "slab.h"
#include "test.h"

TEST(slab_blocks_are_aligned_and_apart) {
  hs_slab_t s;
  memset(&s, 0, sizeof s);
  char *a = hs_slab_alloc(&s, 1), *b = hs_slab_alloc(&s, 16), *c = hs_slab_alloc(&s, 17);
  ASSERT_NOT_NULL(a);
  ASSERT_NOT_NULL(b);
  ASSERT_NOT_NULL(c);
  ASSERT_EQ((uintptr_t)a % HS_SLAB_STEP, 0);
  ASSERT_EQ((uintptr_t)b % HS_SLAB_STEP, 0);
  ASSERT_EQ((uintptr_t)c % HS_SLAB_STEP, 0);
  /* Each holds its size without touching the others. */
  memset(a, 'a', 1);
  memset(b, 'b', 16);
  memset(c, 'c', 17);
  ASSERT_EQ(a[0], 'a');
  ASSERT_EQ(b[0], 'b');
  ASSERT_EQ(b[15], 'b');
  ASSERT_EQ(c[16], 'c');
  hs_slab_destroy(&s);
}

TEST(slab_reuses_a_freed_block_of_the_same_class) {
  hs_slab_t s;
  memset(&s, 0, sizeof s);
  void *a = hs_slab_alloc(&s, 40);
  hs_slab_free(&s, a, 40);
  ASSERT_EQ(hs_slab_alloc(&s, 33), a); /* 33..48: the same class */
  void *b = hs_slab_alloc(&s, 40);
  ASSERT_NE(b, a);
  hs_slab_free(&s, b, 48);
  ASSERT_NE(hs_slab_alloc(&s, 49), b); /* 49: the next class */
  hs_slab_destroy(&s);
}

TEST(slab_classes_cover_one_to_max) {
  ASSERT_EQ(hs_slab_class(1), 0);
  ASSERT_EQ(hs_slab_class(HS_SLAB_STEP), 0);
  ASSERT_EQ(hs_slab_class(HS_SLAB_STEP + 1), 1);
  ASSERT_EQ(hs_slab_class(HS_SLAB_MAX), HS_SLAB_CLASSES - 1);
}

/* Many blocks of every class, over many chunks: all distinct, all intact,
 * and after freeing them all the same number fits without a new chunk. */
TEST(slab_many_blocks_over_many_chunks) {
  enum { N = 20000 };
  static char *p[N];
  static size_t sz[N];
  hs_slab_t s;
  memset(&s, 0, sizeof s);
  for (size_t i = 0; i < N; i++) {
    sz[i] = 1 + (i * 7919) % HS_SLAB_MAX;
    p[i] = hs_slab_alloc(&s, sz[i]);
    ASSERT_NOT_NULL(p[i]);
    memset(p[i], (int)(i & 0xff), sz[i]);
  }
  size_t chunks = s.chunk_bytes;
  ASSERT_LT(HS_SLAB_CHUNK, chunks + 1);
  for (size_t i = 0; i < N; i++) {
    ASSERT_EQ((unsigned char)p[i][0], (unsigned char)(i & 0xff));
    ASSERT_EQ((unsigned char)p[i][sz[i] - 1], (unsigned char)(i & 0xff));
  }
  for (size_t i = 0; i < N; i++) hs_slab_free(&s, p[i], sz[i]);
  for (size_t i = 0; i < N; i++) ASSERT_NOT_NULL(hs_slab_alloc(&s, sz[i]));
  ASSERT_EQ(s.chunk_bytes, chunks);
  hs_slab_destroy(&s);
  ASSERT_EQ(s.chunk_bytes, 0);
  ASSERT_NULL(s.chunks);
}

const hs_test_t hs_slab_tests[] = {
    TEST_ENTRY(slab_blocks_are_aligned_and_apart),
    TEST_ENTRY(slab_reuses_a_freed_block_of_the_same_class),
    TEST_ENTRY(slab_classes_cover_one_to_max),
    TEST_ENTRY(slab_many_blocks_over_many_chunks),
    TEST_END,
};
