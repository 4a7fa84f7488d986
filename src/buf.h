/* buf.h: a growable byte buffer with a read cursor, and a pool of
 * fixed-size blocks so that short-lived buffers cost no malloc.
 * Pure C: no libuv, no Lua. */
#ifndef HS_BUF_H
#define HS_BUF_H

#include <stddef.h>

#define HS_POOL_BLOCK 16384 /* size of one pooled block */

/* A free list of HS_POOL_BLOCK-sized blocks, owned by one loop. */
typedef struct hs_pool {
  void *free;   /* singly linked list through the first word of each block */
  size_t count; /* blocks on the free list */
  size_t max;   /* keep at most this many; the rest go back to malloc */
} hs_pool_t;

/* Bytes live in data[rpos, wpos); [wpos, cap) is free space. */
typedef struct hs_buf {
  char *data;  /* NULL while the buffer owns no storage */
  size_t cap;  /* bytes allocated at data */
  size_t rpos; /* read cursor: first unconsumed byte */
  size_t wpos; /* write cursor: one past the last byte */
} hs_buf_t;

void hs_pool_init(hs_pool_t *pool, size_t max);
void hs_pool_free(hs_pool_t *pool);

void hs_buf_init(hs_buf_t *b);
/* Return the storage (to the pool when it came from there) and empty b. */
void hs_buf_release(hs_buf_t *b, hs_pool_t *pool);

static inline size_t hs_buf_len(const hs_buf_t *b) { return b->wpos - b->rpos; }
static inline const char *hs_buf_peek(const hs_buf_t *b) {
  return b->data ? b->data + b->rpos : "";
}

/* Make room for at least n more bytes and return where to write them, or NULL
 * when memory runs out. Moves unread bytes to the front before growing. */
char *hs_buf_reserve(hs_buf_t *b, size_t n, hs_pool_t *pool);
/* Free space after wpos (0 when the buffer owns no storage). */
static inline size_t hs_buf_space(const hs_buf_t *b) { return b->cap - b->wpos; }
/* Mark n bytes written after a reserve. */
static inline void hs_buf_commit(hs_buf_t *b, size_t n) { b->wpos += n; }
/* Append n bytes; 0 or -1 when memory runs out. */
int hs_buf_append(hs_buf_t *b, const void *p, size_t n, hs_pool_t *pool);
/* Drop n bytes from the front. When the buffer becomes empty the cursors reset,
 * and the storage is released so an idle buffer holds no memory. */
void hs_buf_consume(hs_buf_t *b, size_t n, hs_pool_t *pool);

#endif
