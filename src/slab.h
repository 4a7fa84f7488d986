/* slab.h: size classes for the Lua heap's small objects. Lua tells its
 * allocator the size of every block it frees or resizes, so small blocks
 * need no header: each 16-byte class keeps a free list, and new blocks are
 * cut from 64 KiB chunks. A freed block is kept for the next one of its
 * class; the chunks go back to the system only at hs_slab_destroy. Pure C,
 * no Lua. */
#ifndef HS_SLAB_H
#define HS_SLAB_H

#include <stddef.h>

#define HS_SLAB_MAX 256                         /* larger blocks are malloc's */
#define HS_SLAB_STEP 16                         /* class width (and alignment) */
#define HS_SLAB_CLASSES (HS_SLAB_MAX / HS_SLAB_STEP)
#define HS_SLAB_CHUNK (64 * 1024)

typedef struct hs_slab {
  void *free[HS_SLAB_CLASSES]; /* per class, linked through each block's first word */
  char *bump;                  /* the current chunk's unused tail */
  size_t bump_left;
  void *chunks;                /* every chunk, linked through its first word */
  size_t chunk_bytes;          /* what the chunks hold in all */
} hs_slab_t;

/* The class of a block of n bytes (1..HS_SLAB_MAX). */
static inline size_t hs_slab_class(size_t n) { return (n - 1) / HS_SLAB_STEP; }

/* A block of n bytes, 1 <= n <= HS_SLAB_MAX, 16-byte aligned; NULL when no
 * chunk can be had. */
void *hs_slab_alloc(hs_slab_t *s, size_t n);
/* Give back a block hs_slab_alloc made for n bytes (any n of its class). */
void hs_slab_free(hs_slab_t *s, void *p, size_t n);
/* Free every chunk (every block goes with them). */
void hs_slab_destroy(hs_slab_t *s);

#endif
