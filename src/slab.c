/* slab.c: size classes for the Lua heap's small objects (slab.h). */
#include "slab.h"

#include <stdlib.h>
#include <string.h>

/* A chunk starts with the link to the previous one; blocks follow from
 * the first 16-byte boundary. */
#define CHUNK_HEAD HS_SLAB_STEP

void *hs_slab_alloc(hs_slab_t *s, size_t n) {
  size_t k = hs_slab_class(n);
  void *p = s->free[k];
  if (p) {
    memcpy(&s->free[k], p, sizeof p); /* the next free block */
    return p;
  }
  size_t size = (k + 1) * HS_SLAB_STEP;
  if (s->bump_left < size) {
    /* The old chunk's tail (less than one block of this class) stays unused;
     * smaller classes would fit in it, but a chunk is 64 KiB and the tail
     * at most 240 bytes. */
    char *c = malloc(HS_SLAB_CHUNK);
    if (!c) return NULL;
    memcpy(c, &s->chunks, sizeof s->chunks);
    s->chunks = c;
    s->chunk_bytes += HS_SLAB_CHUNK;
    s->bump = c + CHUNK_HEAD;
    s->bump_left = HS_SLAB_CHUNK - CHUNK_HEAD;
  }
  p = s->bump;
  s->bump += size;
  s->bump_left -= size;
  return p;
}

void hs_slab_free(hs_slab_t *s, void *p, size_t n) {
  size_t k = hs_slab_class(n);
  memcpy(p, &s->free[k], sizeof p);
  s->free[k] = p;
}

void hs_slab_destroy(hs_slab_t *s) {
  void *c = s->chunks;
  while (c) {
    void *next;
    memcpy(&next, c, sizeof next);
    free(c);
    c = next;
  }
  memset(s, 0, sizeof *s);
}
