/* buf.c: byte buffer with a read cursor, backed by a block pool. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

void hs_pool_init(hs_pool_t *pool, size_t max) {
  pool->free = NULL;
  pool->count = 0;
  pool->max = max;
}

void hs_pool_free(hs_pool_t *pool) {
  while (pool->free) {
    void *next = *(void **)pool->free;
    free(pool->free);
    pool->free = next;
  }
  pool->count = 0;
}

static void *pool_get(hs_pool_t *pool) {
  if (pool && pool->free) {
    void *blk = pool->free;
    pool->free = *(void **)blk;
    pool->count--;
    return blk;
  }
  return malloc(HS_POOL_BLOCK);
}

static void pool_put(hs_pool_t *pool, void *blk) {
  if (pool && pool->count < pool->max) {
    *(void **)blk = pool->free;
    pool->free = blk;
    pool->count++;
  } else {
    free(blk);
  }
}

void hs_buf_init(hs_buf_t *b) {
  b->data = NULL;
  b->cap = b->rpos = b->wpos = 0;
}

void hs_buf_release(hs_buf_t *b, hs_pool_t *pool) {
  if (b->data) {
    if (b->cap == HS_POOL_BLOCK)
      pool_put(pool, b->data);
    else
      free(b->data);
  }
  hs_buf_init(b);
}

char *hs_buf_reserve(hs_buf_t *b, size_t n, hs_pool_t *pool) {
  if (b->data && b->cap - b->wpos >= n) return b->data + b->wpos;
  size_t len = b->wpos - b->rpos;
  if (b->data && b->rpos > 0 && b->cap - len >= n) {
    /* Enough room once the unread bytes move to the front. */
    memmove(b->data, b->data + b->rpos, len);
    b->rpos = 0;
    b->wpos = len;
    return b->data + b->wpos;
  }
  if (n > (size_t)-1 / 2 || len > (size_t)-1 / 2 - n) return NULL; /* would overflow */
  size_t need = len + n;
  if (!b->data && need <= HS_POOL_BLOCK) {
    char *blk = pool_get(pool);
    if (!blk) return NULL;
    b->data = blk;
    b->cap = HS_POOL_BLOCK;
    b->rpos = b->wpos = 0;
    return b->data;
  }
  size_t cap = b->cap ? b->cap : HS_POOL_BLOCK;
  while (cap < need) cap *= 2;
  if (cap == HS_POOL_BLOCK) cap += 1; /* only pool blocks have exactly this size */
  char *nd = malloc(cap);
  if (!nd) return NULL;
  if (len) memcpy(nd, b->data + b->rpos, len);
  hs_buf_release(b, pool);
  b->data = nd;
  b->cap = cap;
  b->rpos = 0;
  b->wpos = len;
  return b->data + b->wpos;
}

int hs_buf_append(hs_buf_t *b, const void *p, size_t n, hs_pool_t *pool) {
  if (n == 0) return 0;
  char *dst = hs_buf_reserve(b, n, pool);
  if (!dst) return -1;
  memcpy(dst, p, n);
  b->wpos += n;
  return 0;
}

void hs_buf_consume(hs_buf_t *b, size_t n, hs_pool_t *pool) {
  size_t len = b->wpos - b->rpos;
  if (n >= len) {
    hs_buf_release(b, pool);
    return;
  }
  b->rpos += n;
}
