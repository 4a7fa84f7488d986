/* dict.c: a dictionary shared by processes, inside one mapped region (see
 * dict.h for what it promises).
 *
 * The region, in 8-byte slots:
 *
 *   [ header | hash buckets (uint32_t each) | arena ..................... ]
 *
 * The arena is tiled by blocks. Each starts with a blk_t: its size and the
 * size of the block before it (boundary tags, so freeing merges with both
 * neighbours at once), whether it is in use, and the links of whatever list
 * it is on. A free block is on the free list of its size class (powers of
 * two; a bitmap says which lists are not empty). A block in use is an entry:
 * the blk_t, the key, the value; it is on its hash bucket's chain and on the
 * LRU list (head: most recently used). Every link is a slot number counted
 * from the region's start; 0 means none (slot 0 is the header).
 *
 * Allocation takes the first block that fits from the smallest size class
 * that can hold it (a bounded scan there, else the first block of a bigger
 * class) and splits off the rest when it is big enough to be a block. When
 * nothing fits, entries are taken off the cold end of the LRU list and
 * freed until something does; since freeing merges neighbours, an entry no
 * larger than the arena always fits in the end.
 *
 * The lock: a robust, process-shared mutex. `dirty` is set (with a compiler
 * barrier, so it is stored before the change it announces) just before an
 * operation first changes anything, and cleared when it is done. A process
 * killed in between leaves it set; whoever takes the lock next (EOWNERDEAD)
 * empties the dictionary rather than follow links that may be half made.
 * A wait for the lock looks at it again every LOCK_SLICE_MS (see lock()). */
#include "dict.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define SLOT 8
#define NBINS 32
#define SCAN_LIMIT 32 /* blocks looked at in the smallest fitting size class */
#define DICT_MAGIC 0x3174636964736800ull
#define LOCK_SLICE_MS 20 /* a wait for the lock looks again this often */

/* A block's header: every block has one; an entry's key and value follow. */
typedef struct blk {
  uint32_t size;    /* in slots, this header included */
  uint32_t prev;    /* size of the block just before it (unused for the first) */
  uint8_t used;     /* an entry (1) or free (0) */
  uint8_t type;     /* entry: HS_DICT_* of its value */
  uint16_t klen;    /* entry: key length */
  uint32_t next;    /* free: next in its size class; entry: next in its hash chain */
  uint32_t lprev;   /* free: previous in its size class; entry: LRU neighbour, hotter */
  uint32_t lnext;   /* entry: LRU neighbour, colder */
  uint32_t hash;    /* entry: low 32 bits of the key's hash */
  uint32_t vlen;    /* entry: bytes of value after the key */
  uint64_t expires; /* entry: CLOCK_MONOTONIC ms when it expires; 0 never */
} blk_t;

_Static_assert(sizeof(blk_t) == HS_DICT_ENTRY_OVERHEAD, "entry overhead");
_Static_assert(sizeof(blk_t) % SLOT == 0, "block headers keep slot alignment");

/* The smallest block: a header and one slot. A split leaves no less. */
#define MIN_SLOTS ((uint32_t)(sizeof(blk_t) / SLOT + 1))

/* The region's header. Everything after `lock` is read and written only
 * with it held, except the fields fixed at creation. */
struct hs_dict {
  uint64_t magic;
  pthread_mutex_t lock;
  char name[HS_DICT_NAME_MAX + 1];
  size_t size;          /* bytes asked for */
  size_t mapped;        /* bytes mapped (size rounded up to pages) */
  uint8_t sipkey[16];   /* the hash's key, random per dictionary */
  uint32_t nbuckets;    /* a power of two */
  uint32_t buckets;     /* slot where the bucket array starts */
  uint32_t arena;       /* first slot of the arena */
  uint32_t arena_end;   /* one past its last slot */
  uint32_t lru_head;    /* most recently used entry */
  uint32_t lru_tail;    /* least recently used entry */
  uint32_t bins[NBINS]; /* free lists by size class: sizes [2^i, 2^(i+1)) slots */
  uint32_t binmap;      /* bit i: bins[i] is not empty */
  volatile int dirty;   /* a change is under way (see the top of the file) */
  uint64_t free_slots;  /* slots in free blocks */
  uint64_t entries;     /* entries held */
  uint64_t evictions;   /* unexpired entries evicted */
  uint64_t recoveries;  /* EOWNERDEAD taken over */
  uint64_t resets;      /* ... and found dirty, so emptied */
};

static inline blk_t *at(hs_dict_t *d, uint32_t off) {
  return (blk_t *)((char *)d + (size_t)off * SLOT);
}

static inline uint32_t off_of(hs_dict_t *d, const blk_t *b) {
  return (uint32_t)((size_t)((const char *)b - (const char *)d) / SLOT);
}

static inline uint32_t *bucket(hs_dict_t *d, uint32_t h) {
  return (uint32_t *)((char *)d + (size_t)d->buckets * SLOT) + (h & (d->nbuckets - 1));
}

static inline char *key_of(blk_t *e) { return (char *)(e + 1); }
static inline char *val_of(blk_t *e) { return (char *)(e + 1) + e->klen; }

/* Size class of a block of n slots (n >= 1, n < 2^32). */
static inline int bin_of(uint32_t n) { return 31 - __builtin_clz(n); }

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline int expired(const blk_t *e, uint64_t now) { return e->expires && now >= e->expires; }

/* A change begins: announce it before making it. */
static inline void changing(hs_dict_t *d) {
  if (d->dirty) return;
  d->dirty = 1;
  atomic_signal_fence(memory_order_seq_cst);
}

/* ---- the hash: SipHash-2-4 ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND       \
  do {                 \
    v0 += v1;          \
    v1 = ROTL(v1, 13); \
    v1 ^= v0;          \
    v0 = ROTL(v0, 32); \
    v2 += v3;          \
    v3 = ROTL(v3, 16); \
    v3 ^= v2;          \
    v0 += v3;          \
    v3 = ROTL(v3, 21); \
    v3 ^= v0;          \
    v2 += v1;          \
    v1 = ROTL(v1, 17); \
    v1 ^= v2;          \
    v2 = ROTL(v2, 32); \
  } while (0)

static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

uint64_t hs__dict_siphash(const uint8_t key[16], const void *data, size_t n) {
  uint64_t k0 = le64(key), k1 = le64(key + 8);
  uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
  uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
  const uint8_t *p = data;
  size_t whole = n & ~(size_t)7;
  for (size_t i = 0; i < whole; i += 8) {
    uint64_t m = le64(p + i);
    v3 ^= m;
    SIPROUND;
    SIPROUND;
    v0 ^= m;
  }
  uint64_t b = (uint64_t)n << 56;
  for (size_t i = n & 7; i > 0; i--) b |= (uint64_t)p[whole + i - 1] << (8 * (i - 1));
  v3 ^= b;
  SIPROUND;
  SIPROUND;
  v0 ^= b;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

static uint32_t hash_key(const hs_dict_t *d, const char *key, size_t klen) {
  return (uint32_t)hs__dict_siphash(d->sipkey, key, klen);
}

/* ---- the allocator ---- */

static void fl_push(hs_dict_t *d, blk_t *b) {
  int i = bin_of(b->size);
  uint32_t o = off_of(d, b);
  changing(d);
  b->used = 0;
  b->next = d->bins[i];
  b->lprev = 0;
  if (b->next) at(d, b->next)->lprev = o;
  d->bins[i] = o;
  d->binmap |= 1u << i;
  d->free_slots += b->size;
}

static void fl_pull(hs_dict_t *d, blk_t *b) {
  int i = bin_of(b->size);
  changing(d);
  if (b->lprev)
    at(d, b->lprev)->next = b->next;
  else
    d->bins[i] = b->next;
  if (b->next) at(d, b->next)->lprev = b->lprev;
  if (!d->bins[i]) d->binmap &= ~(1u << i);
  d->free_slots -= b->size;
}

/* Free block b (not on any list), merging it with free neighbours. */
static void release(hs_dict_t *d, blk_t *b) {
  uint32_t o = off_of(d, b);
  changing(d);
  if (o + b->size < d->arena_end && !at(d, o + b->size)->used) {
    blk_t *n = at(d, o + b->size);
    fl_pull(d, n);
    b->size += n->size;
  }
  if (o > d->arena && !at(d, o - b->prev)->used) {
    blk_t *p = at(d, o - b->prev);
    fl_pull(d, p);
    p->size += b->size;
    b = p;
    o = off_of(d, p);
  }
  if (o + b->size < d->arena_end) at(d, o + b->size)->prev = b->size;
  fl_push(d, b);
}

/* Cut block b (in use) down to n slots when the rest can be a block. */
static void split(hs_dict_t *d, blk_t *b, uint32_t n) {
  if (b->size - n < MIN_SLOTS) return;
  uint32_t o = off_of(d, b);
  blk_t *r = at(d, o + n);
  changing(d);
  r->size = b->size - n;
  r->prev = n;
  r->used = 1;
  b->size = n;
  if (o + n + r->size < d->arena_end) at(d, o + n + r->size)->prev = r->size;
  release(d, r);
}

/* A block of n slots, or NULL when no free block is big enough. */
static blk_t *alloc(hs_dict_t *d, uint32_t n) {
  int i = bin_of(n);
  uint32_t higher = d->binmap & ~((2u << i) - 1); /* classes that surely fit */
  blk_t *b = NULL;
  int scanned = 0;
  for (uint32_t o = d->bins[i]; o && !b; o = at(d, o)->next) {
    if (at(d, o)->size >= n)
      b = at(d, o);
    else if (++scanned >= SCAN_LIMIT && higher)
      break;
  }
  if (!b && higher) b = at(d, d->bins[__builtin_ctz(higher)]);
  if (!b) return NULL;
  fl_pull(d, b);
  b->used = 1;
  split(d, b, n);
  return b;
}

/* Slots an entry with klen bytes of key and vbytes of value takes (more
 * than the arena can hold when too big, never wrapping). */
static uint64_t slots_for(size_t klen, size_t vbytes) {
  uint64_t n = ((uint64_t)sizeof(blk_t) + klen + vbytes + SLOT - 1) / SLOT;
  return n < MIN_SLOTS ? MIN_SLOTS : n;
}

static size_t value_bytes(const hs_dict_value_t *v) {
  switch (v->type) {
  case HS_DICT_STR: return v->len;
  case HS_DICT_INT:
  case HS_DICT_FLOAT: return 8;
  case HS_DICT_BOOL: return 1;
  default: return 0;
  }
}

/* ---- entries: the hash chains and the LRU list ---- */

static void lru_unlink(hs_dict_t *d, blk_t *e) {
  changing(d);
  if (e->lprev)
    at(d, e->lprev)->lnext = e->lnext;
  else
    d->lru_head = e->lnext;
  if (e->lnext)
    at(d, e->lnext)->lprev = e->lprev;
  else
    d->lru_tail = e->lprev;
}

static void lru_push(hs_dict_t *d, blk_t *e) {
  uint32_t o = off_of(d, e);
  changing(d);
  e->lprev = 0;
  e->lnext = d->lru_head;
  if (d->lru_head)
    at(d, d->lru_head)->lprev = o;
  else
    d->lru_tail = o;
  d->lru_head = o;
}

static void lru_touch(hs_dict_t *d, blk_t *e) {
  if (d->lru_head == off_of(d, e)) return;
  lru_unlink(d, e);
  lru_push(d, e);
}

/* Take entry e out of its chain and the LRU list and free its block. */
static void remove_entry(hs_dict_t *d, blk_t *e) {
  uint32_t *link = bucket(d, e->hash), o = off_of(d, e);
  changing(d);
  while (*link != o) link = &at(d, *link)->next;
  *link = e->next;
  lru_unlink(d, e);
  d->entries--;
  release(d, e);
}

/* The entry for key, or NULL. One that expired is reclaimed on the way. */
static blk_t *find(hs_dict_t *d, const char *key, size_t klen, uint32_t h, uint64_t now) {
  for (uint32_t o = *bucket(d, h); o; o = at(d, o)->next) {
    blk_t *e = at(d, o);
    if (e->hash != h || e->klen != klen || memcmp(key_of(e), key, klen) != 0) continue;
    if (!expired(e, now)) return e;
    remove_entry(d, e);
    return NULL;
  }
  return NULL;
}

static void write_value(hs_dict_t *d, blk_t *e, const hs_dict_value_t *v) {
  char *p = val_of(e);
  changing(d);
  e->type = (uint8_t)v->type;
  e->vlen = (uint32_t)value_bytes(v);
  switch (v->type) {
  case HS_DICT_STR:
    if (v->len) memcpy(p, v->s, v->len);
    break;
  case HS_DICT_INT: memcpy(p, &v->i, 8); break;
  case HS_DICT_FLOAT: memcpy(p, &v->f, 8); break;
  case HS_DICT_BOOL: p[0] = (char)(v->b != 0); break;
  default: break;
  }
}

static void read_value(blk_t *e, hs_dict_value_t *out, char *buf, size_t cap) {
  const char *p = val_of(e);
  memset(out, 0, sizeof *out);
  out->type = e->type;
  switch (e->type) {
  case HS_DICT_STR:
    out->len = e->vlen;
    if (e->vlen && cap) memcpy(buf, p, e->vlen < cap ? e->vlen : cap);
    out->s = buf;
    break;
  case HS_DICT_INT: memcpy(&out->i, p, 8); break;
  case HS_DICT_FLOAT: memcpy(&out->f, p, 8); break;
  case HS_DICT_BOOL: out->b = p[0] != 0; break;
  default: break;
  }
}

/* Free up to max (0: all) expired entries, coldest first; how many. */
static size_t reclaim_expired(hs_dict_t *d, size_t max, uint64_t now) {
  size_t n = 0;
  for (uint32_t o = d->lru_tail; o && (!max || n < max);) {
    blk_t *e = at(d, o);
    o = e->lprev;
    if (!expired(e, now)) continue;
    remove_entry(d, e);
    n++;
  }
  return n;
}

/* A block of n slots, evicting as needed: first a couple of expired
 * entries at the cold end (cheap, and it keeps them from piling up), then,
 * while nothing fits, the least recently used entry, whatever it is (safe:
 * only expired ones, anywhere). *forced is set when an unexpired entry went. */
static blk_t *alloc_evicting(hs_dict_t *d, uint32_t n, int safe, int *forced, uint64_t now) {
  for (int i = 0; i < 2 && d->lru_tail && expired(at(d, d->lru_tail), now); i++)
    remove_entry(d, at(d, d->lru_tail));
  blk_t *b = alloc(d, n);
  if (b) return b;
  if (safe) {
    reclaim_expired(d, 0, now);
    return alloc(d, n);
  }
  while (!(b = alloc(d, n)) && d->lru_tail) {
    blk_t *t = at(d, d->lru_tail);
    if (!expired(t, now)) {
      *forced = 1;
      d->evictions++;
    }
    remove_entry(d, t);
  }
  return b;
}

/* Make a new entry (key absent). 0 or HS_DICT_ENOMEM. */
static int insert(hs_dict_t *d, const char *key, size_t klen, uint32_t h, const hs_dict_value_t *v,
                  uint64_t expires, int safe, int *forced, uint64_t now) {
  blk_t *e = alloc_evicting(d, (uint32_t)slots_for(klen, value_bytes(v)), safe, forced, now);
  if (!e) return HS_DICT_ENOMEM;
  e->klen = (uint16_t)klen;
  e->hash = h;
  e->expires = expires;
  memcpy(key_of(e), key, klen);
  write_value(d, e, v);
  uint32_t *b = bucket(d, h);
  e->next = *b;
  *b = off_of(d, e);
  lru_push(d, e);
  d->entries++;
  return 0;
}

/* Empty the dictionary: one free block over the whole arena. */
static void reset(hs_dict_t *d, int clear_buckets) {
  changing(d);
  if (clear_buckets) memset(bucket(d, 0), 0, (size_t)d->nbuckets * sizeof(uint32_t));
  d->lru_head = d->lru_tail = 0;
  memset(d->bins, 0, sizeof d->bins);
  d->binmap = 0;
  d->free_slots = 0;
  d->entries = 0;
  blk_t *b = at(d, d->arena);
  b->size = d->arena_end - d->arena;
  b->prev = 0;
  fl_push(d, b);
}

/* ---- the lock ---- */

/* Take the lock. Uncontended: one atomic instruction. Contended: a wait in
 * slices of LOCK_SLICE_MS, each ending with a fresh look at the lock. The
 * kernel's clean-up of a dead process's robust futexes cannot see every
 * case: a waiter killed just after an unlock woke it, while a third process
 * took the lock in between, takes the wake-up with it and leaves the other
 * waiters asleep with the lock free (or, once its owner dies too, owned by
 * nobody). A slice bounds that stall instead of leaving a worker wedged. */
static int lock(hs_dict_t *d) {
  int r = pthread_mutex_trylock(&d->lock);
  while (r == EBUSY || r == ETIMEDOUT) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += LOCK_SLICE_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    r = pthread_mutex_clocklock(&d->lock, CLOCK_MONOTONIC, &until);
  }
  if (r == EOWNERDEAD) {
    /* Its owner died holding it. Mid-change: start over empty. */
    d->recoveries++;
    if (d->dirty) {
      reset(d, 1);
      d->resets++;
    }
    atomic_signal_fence(memory_order_seq_cst);
    d->dirty = 0;
    r = pthread_mutex_consistent(&d->lock);
    if (r != 0) pthread_mutex_unlock(&d->lock);
  }
  return r ? HS_DICT_ELOCK : 0;
}

static void unlock(hs_dict_t *d) {
  atomic_signal_fence(memory_order_seq_cst);
  d->dirty = 0;
  pthread_mutex_unlock(&d->lock);
}

int hs__dict_lock(hs_dict_t *d, int dirty) {
  int r = lock(d);
  if (r == 0 && dirty) changing(d);
  return r;
}

void hs__dict_unlock(hs_dict_t *d) { unlock(d); }

/* ---- the operations ---- */

const char *hs_dict_strerror(int r) {
  switch (r) {
  case HS_DICT_OK: return "ok";
  case HS_DICT_ENOTFOUND: return "not found";
  case HS_DICT_EEXISTS: return "exists";
  case HS_DICT_ENOTNUM: return "not a number";
  case HS_DICT_ENOMEM: return "no memory";
  case HS_DICT_EEMPTYKEY: return "empty key";
  case HS_DICT_EKEYLEN: return "key too long";
  case HS_DICT_ETOOBIG: return "value too large";
  case HS_DICT_ELOCK: return "dictionary lock failed";
  default: return "unknown error";
  }
}

hs_dict_t *hs_dict_create(const char *name, size_t bytes, char *err, size_t errlen) {
  if (!name) name = "";
  if (strlen(name) > HS_DICT_NAME_MAX) {
    snprintf(err, errlen, "a dictionary name is at most %d bytes", HS_DICT_NAME_MAX);
    return NULL;
  }
  if (bytes < HS_DICT_MIN_SIZE || bytes > HS_DICT_MAX_SIZE) {
    snprintf(err, errlen, "a dictionary is %zu KiB to %zu GiB, not %zu bytes",
             HS_DICT_MIN_SIZE >> 10, HS_DICT_MAX_SIZE >> 30, bytes);
    return NULL;
  }
  long page = sysconf(_SC_PAGESIZE);
  size_t pg = page > 0 ? (size_t)page : 4096;
  size_t mapped = (bytes + pg - 1) / pg * pg;
  void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    snprintf(err, errlen, "cannot map %zu bytes: %s", bytes, strerror(errno));
    return NULL;
  }
  hs_dict_t *d = p; /* zeroed by the kernel */
  pthread_mutexattr_t a;
  int r = pthread_mutexattr_init(&a);
  if (r == 0) {
    if (!(r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) &&
        !(r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)))
      r = pthread_mutex_init(&d->lock, &a);
    pthread_mutexattr_destroy(&a);
  }
  if (r != 0) {
    snprintf(err, errlen, "cannot make a process-shared lock: %s", strerror(r));
    munmap(p, mapped);
    return NULL;
  }
  snprintf(d->name, sizeof d->name, "%s", name);
  d->size = bytes;
  d->mapped = mapped;
  if (getrandom(d->sipkey, sizeof d->sipkey, GRND_NONBLOCK) != (ssize_t)sizeof d->sipkey) {
    /* No entropy yet (early boot): the clock and the address, which still
     * differ from one run to the next. */
    uint64_t seed[2] = {now_ms() ^ ((uint64_t)getpid() << 32), (uint64_t)(uintptr_t)d};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    seed[1] ^= (uint64_t)ts.tv_nsec << 20;
    memcpy(d->sipkey, seed, sizeof seed);
  }
  /* One bucket per 256 bytes, a power of two: a few entries per chain when
   * entries average a hundred bytes, for 1.6% of the region. */
  uint32_t nb = 64;
  while ((size_t)nb * 2 <= bytes / 256) nb *= 2;
  uint32_t header = (uint32_t)((sizeof *d + SLOT - 1) / SLOT);
  d->nbuckets = nb;
  d->buckets = header;
  d->arena = header + (uint32_t)(((size_t)nb * sizeof(uint32_t) + SLOT - 1) / SLOT);
  d->arena_end = (uint32_t)(bytes / SLOT);
  reset(d, 0);
  d->dirty = 0;
  d->magic = DICT_MAGIC;
  return d;
}

void hs_dict_destroy(hs_dict_t *d) {
  if (d) munmap(d, d->mapped);
}

const char *hs_dict_name(const hs_dict_t *d) { return d->name; }
size_t hs_dict_capacity(const hs_dict_t *d) { return d->size; }

static int check_key(size_t klen) {
  if (klen == 0) return HS_DICT_EEMPTYKEY;
  if (klen > HS_DICT_MAX_KEY) return HS_DICT_EKEYLEN;
  return 0;
}

int hs_dict_get(hs_dict_t *d, const char *key, size_t klen, hs_dict_value_t *out, char *buf,
                size_t cap) {
  int r = check_key(klen);
  if (r) return r;
  uint32_t h = hash_key(d, key, klen);
  uint64_t now = now_ms();
  if ((r = lock(d))) return r;
  blk_t *e = find(d, key, klen, h, now);
  if (e) {
    lru_touch(d, e);
    read_value(e, out, buf, cap);
  }
  unlock(d);
  return e ? 0 : HS_DICT_ENOTFOUND;
}

static uint64_t expiry(uint64_t now, uint64_t ttl_ms) {
  if (!ttl_ms) return 0;
  if (ttl_ms > UINT64_MAX / 4) ttl_ms = UINT64_MAX / 4;
  return now + ttl_ms;
}

int hs_dict_set(hs_dict_t *d, int op, const char *key, size_t klen, const hs_dict_value_t *v,
                uint64_t ttl_ms, int *forcible) {
  int kind = op & 3, safe = (op & HS_DICT_SAFE) != 0, forced = 0;
  if (forcible) *forcible = 0;
  int r = check_key(klen);
  if (r) return r;
  if (v->type == HS_DICT_STR && v->len > HS_DICT_MAX_VALUE) return HS_DICT_ETOOBIG;
  uint64_t need = slots_for(klen, value_bytes(v));
  if (v->type != HS_DICT_NIL && need > (uint64_t)(d->arena_end - d->arena)) return HS_DICT_ETOOBIG;
  uint32_t h = hash_key(d, key, klen);
  uint64_t now = now_ms();
  if ((r = lock(d))) return r;
  blk_t *e = find(d, key, klen, h, now);
  if (kind == HS_DICT_ADD && e) {
    r = HS_DICT_EEXISTS;
  } else if (kind == HS_DICT_REPLACE && !e) {
    r = HS_DICT_ENOTFOUND;
  } else if (v->type == HS_DICT_NIL) {
    if (e) remove_entry(d, e);
  } else if (e && e->size >= need) {
    /* It fits where it is: overwrite, and give back what is left over. */
    write_value(d, e, v);
    e->expires = expiry(now, ttl_ms);
    split(d, e, (uint32_t)need);
    lru_touch(d, e);
  } else {
    if (e) remove_entry(d, e);
    r = insert(d, key, klen, h, v, expiry(now, ttl_ms), safe, &forced, now);
  }
  unlock(d);
  if (forcible) *forcible = forced;
  return r;
}

static int is_number(int type) { return type == HS_DICT_INT || type == HS_DICT_FLOAT; }

static double as_double(const hs_dict_value_t *v) {
  return v->type == HS_DICT_INT ? (double)v->i : v->f;
}

/* a + b as Lua 5.4 adds them: integers wrap, anything else is a float. */
static hs_dict_value_t add(const hs_dict_value_t *a, const hs_dict_value_t *b) {
  hs_dict_value_t r;
  memset(&r, 0, sizeof r);
  if (a->type == HS_DICT_INT && b->type == HS_DICT_INT) {
    r.type = HS_DICT_INT;
    r.i = (int64_t)((uint64_t)a->i + (uint64_t)b->i);
  } else {
    r.type = HS_DICT_FLOAT;
    r.f = as_double(a) + as_double(b);
  }
  return r;
}

int hs_dict_incr(hs_dict_t *d, const char *key, size_t klen, const hs_dict_value_t *by,
                 const hs_dict_value_t *init, uint64_t init_ttl_ms, hs_dict_value_t *out,
                 int *forcible) {
  int forced = 0;
  if (forcible) *forcible = 0;
  int r = check_key(klen);
  if (r) return r;
  if (!is_number(by->type) || (init && !is_number(init->type))) return HS_DICT_ENOTNUM;
  if (init && slots_for(klen, 8) > (uint64_t)(d->arena_end - d->arena)) return HS_DICT_ETOOBIG;
  uint32_t h = hash_key(d, key, klen);
  uint64_t now = now_ms();
  hs_dict_value_t res;
  memset(&res, 0, sizeof res);
  if ((r = lock(d))) return r;
  blk_t *e = find(d, key, klen, h, now);
  if (!e) {
    if (!init) {
      r = HS_DICT_ENOTFOUND;
    } else {
      res = add(init, by);
      r = insert(d, key, klen, h, &res, expiry(now, init_ttl_ms), 0, &forced, now);
    }
  } else if (!is_number(e->type)) {
    r = HS_DICT_ENOTNUM;
  } else {
    hs_dict_value_t cur;
    read_value(e, &cur, NULL, 0);
    res = add(&cur, by);
    write_value(d, e, &res); /* 8 bytes either way: it stays where it is */
    lru_touch(d, e);
  }
  unlock(d);
  if (r == 0 && out) *out = res;
  if (forcible) *forcible = forced;
  return r;
}

int hs_dict_delete(hs_dict_t *d, const char *key, size_t klen) {
  int r = check_key(klen);
  if (r) return r;
  uint32_t h = hash_key(d, key, klen);
  uint64_t now = now_ms();
  if ((r = lock(d))) return r;
  blk_t *e = find(d, key, klen, h, now);
  if (e) remove_entry(d, e);
  unlock(d);
  return e ? 0 : HS_DICT_ENOTFOUND;
}

int hs_dict_ttl(hs_dict_t *d, const char *key, size_t klen, uint64_t *ms_left) {
  int r = check_key(klen);
  if (r) return r;
  uint32_t h = hash_key(d, key, klen);
  uint64_t now = now_ms();
  if ((r = lock(d))) return r;
  blk_t *e = find(d, key, klen, h, now);
  if (e) *ms_left = e->expires ? e->expires - now : 0;
  unlock(d);
  return e ? 0 : HS_DICT_ENOTFOUND;
}

int hs_dict_expire(hs_dict_t *d, const char *key, size_t klen, uint64_t ttl_ms) {
  int r = check_key(klen);
  if (r) return r;
  uint32_t h = hash_key(d, key, klen);
  uint64_t now = now_ms();
  if ((r = lock(d))) return r;
  blk_t *e = find(d, key, klen, h, now);
  if (e) {
    changing(d);
    e->expires = expiry(now, ttl_ms);
  }
  unlock(d);
  return e ? 0 : HS_DICT_ENOTFOUND;
}

int hs_dict_keys(hs_dict_t *d, size_t max, char *buf, size_t cap, size_t *count, size_t *needed) {
  size_t used = 0, n = 0, total = 0, all = 0;
  int full = 0;
  uint64_t now = now_ms();
  int r = lock(d);
  if (r) return r;
  for (uint32_t o = d->lru_head; o && (!max || n < max);) {
    blk_t *e = at(d, o);
    o = e->lnext;
    if (expired(e, now)) {
      remove_entry(d, e);
      continue;
    }
    size_t sz = 4 + e->klen;
    all += sz;
    n++;
    if (full || used + sz > cap) {
      full = 1;
      continue;
    }
    uint32_t len = e->klen;
    memcpy(buf + used, &len, 4);
    memcpy(buf + used + 4, key_of(e), e->klen);
    used += sz;
    total++;
  }
  unlock(d);
  *count = total;
  *needed = all;
  return 0;
}

int hs_dict_flush_all(hs_dict_t *d) {
  int r = lock(d);
  if (r) return r;
  reset(d, 1);
  unlock(d);
  return 0;
}

int hs_dict_flush_expired(hs_dict_t *d, size_t max, size_t *freed) {
  uint64_t now = now_ms();
  int r = lock(d);
  if (r) return r;
  size_t n = reclaim_expired(d, max, now);
  unlock(d);
  if (freed) *freed = n;
  return 0;
}

int hs_dict_free_space(hs_dict_t *d, size_t *bytes) {
  int r = lock(d);
  if (r) return r;
  *bytes = (size_t)d->free_slots * SLOT;
  unlock(d);
  return 0;
}

int hs_dict_stats(hs_dict_t *d, hs_dict_stats_t *st) {
  int r = lock(d);
  if (r) return r;
  st->capacity = d->size;
  st->free_bytes = (size_t)d->free_slots * SLOT;
  st->entries = (size_t)d->entries;
  st->evictions = d->evictions;
  st->recoveries = d->recoveries;
  st->resets = d->resets;
  unlock(d);
  return 0;
}

/* ---- the invariants, for tests ---- */

#define BAD(...)                        \
  do {                                  \
    snprintf(err, errlen, __VA_ARGS__); \
    unlock(d);                          \
    return -1;                          \
  } while (0)

int hs__dict_check(hs_dict_t *d, char *err, size_t errlen) {
  if (d->magic != DICT_MAGIC) {
    snprintf(err, errlen, "bad magic");
    return -1;
  }
  if (lock(d)) {
    snprintf(err, errlen, "lock failed");
    return -1;
  }
  uint64_t free_slots = 0, free_blocks = 0, used_blocks = 0, blocks = 0;
  uint32_t prev_size = 0;
  int prev_free = 0;
  for (uint32_t o = d->arena; o < d->arena_end;) {
    blk_t *b = at(d, o);
    if (b->size < MIN_SLOTS || b->size > d->arena_end - o)
      BAD("block at %u: size %u out of range", o, b->size);
    if (o > d->arena && b->prev != prev_size)
      BAD("block at %u: prev %u, the block before is %u", o, b->prev, prev_size);
    if (!b->used && prev_free) BAD("block at %u: two free blocks touch", o);
    if (b->used) {
      used_blocks++;
      if (slots_for(b->klen, b->vlen) > b->size) BAD("entry at %u overflows its block", o);
      if (b->klen == 0) BAD("entry at %u has an empty key", o);
      if (hash_key(d, key_of(b), b->klen) != b->hash) BAD("entry at %u: wrong hash", o);
    } else {
      free_slots += b->size;
      free_blocks++;
    }
    prev_free = !b->used;
    prev_size = b->size;
    blocks++;
    o += b->size;
  }
  if (free_slots != d->free_slots)
    BAD("free slots: counted %llu, recorded %llu", (unsigned long long)free_slots,
        (unsigned long long)d->free_slots);
  if (used_blocks != d->entries)
    BAD("entries: counted %llu, recorded %llu", (unsigned long long)used_blocks,
        (unsigned long long)d->entries);
  uint64_t listed = 0;
  for (int i = 0; i < NBINS; i++) {
    if (!!d->bins[i] != !!(d->binmap & (1u << i))) BAD("binmap bit %d is wrong", i);
    uint32_t back = 0;
    for (uint32_t o = d->bins[i]; o; o = at(d, o)->next) {
      blk_t *b = at(d, o);
      if (o < d->arena || o >= d->arena_end) BAD("free list %d: link %u out of the arena", i, o);
      if (b->used || bin_of(b->size) != i) BAD("free list %d: block %u does not belong", i, o);
      if (b->lprev != back) BAD("free list %d: block %u has a wrong back link", i, o);
      back = o;
      if (++listed > blocks) BAD("free list %d loops", i);
    }
  }
  if (listed != free_blocks)
    BAD("free lists hold %llu blocks, the arena %llu", (unsigned long long)listed,
        (unsigned long long)free_blocks);
  uint64_t seen = 0;
  uint32_t back = 0;
  for (uint32_t o = d->lru_head; o; o = at(d, o)->lnext) {
    blk_t *e = at(d, o);
    if (o < d->arena || o >= d->arena_end || !e->used) BAD("LRU: %u is not an entry", o);
    if (e->lprev != back) BAD("LRU: %u has a wrong back link", o);
    back = o;
    if (++seen > used_blocks) BAD("LRU list loops");
  }
  if (back != d->lru_tail) BAD("LRU tail is %u, the list ends at %u", d->lru_tail, back);
  if (seen != used_blocks)
    BAD("LRU holds %llu entries of %llu", (unsigned long long)seen,
        (unsigned long long)used_blocks);
  seen = 0;
  for (uint32_t i = 0; i < d->nbuckets; i++) {
    for (uint32_t o = *bucket(d, i); o; o = at(d, o)->next) {
      blk_t *e = at(d, o);
      if (o < d->arena || o >= d->arena_end || !e->used) BAD("bucket %u: %u is not an entry", i, o);
      if ((e->hash & (d->nbuckets - 1)) != i) BAD("bucket %u: entry %u belongs elsewhere", i, o);
      if (++seen > used_blocks) BAD("hash chains loop");
    }
  }
  if (seen != used_blocks)
    BAD("hash chains hold %llu entries of %llu", (unsigned long long)seen,
        (unsigned long long)used_blocks);
  unlock(d);
  return 0;
}
