/* dict.h: a dictionary that several processes share (hs.dict). Pure C: no
 * libuv, no Lua.
 *
 * A dictionary lives entirely inside one memory region mapped with
 * mmap(MAP_SHARED | MAP_ANONYMOUS) when it is made, before the workers are
 * forked, so every worker sees the same bytes. Inside the region every link
 * (hash chains, the LRU list, the free lists) is an offset from the region's
 * start, never an address: the layout means the same thing wherever the
 * region is mapped. The handle, hs_dict_t *, is the region's address in
 * this process (the same in every worker, since they inherit the mapping).
 *
 * One process-shared robust mutex guards the region: every operation below
 * is atomic. A process that dies holding it (SIGKILL, a crash) does not
 * wedge the others: the next locker gets EOWNERDEAD, and when the dead one
 * was in the middle of changing something the dictionary is emptied (its
 * links cannot be trusted), otherwise it is kept; either way it is marked
 * consistent and carries on (hs_dict_stats' recoveries counts these). A
 * process killed while it waits for the lock can take a wake-up with it,
 * so a wait looks at the lock again every 20 ms rather than sleep on.
 *
 * Entries (key, value, expiry, links) are allocated inside the region by a
 * boundary-tag allocator with segregated free lists, coalescing on free.
 * When an entry does not fit, the least recently used entries are evicted
 * until it does (a get counts as a use); an eviction of an entry that had
 * not expired is reported through *forcible. Expiry uses CLOCK_MONOTONIC:
 * an expired entry is invisible at once and its memory is reclaimed when an
 * operation meets it, when memory is needed, or by hs_dict_flush_expired.
 *
 * Limits: a dictionary is HS_DICT_MIN_SIZE to HS_DICT_MAX_SIZE bytes (all of
 * it: the header, the hash table and the entries); a key is 1 to
 * HS_DICT_MAX_KEY bytes (an empty key is refused); a string value is at most
 * HS_DICT_MAX_VALUE bytes and must fit in the dictionary when it is empty.
 * Each entry costs HS_DICT_ENTRY_OVERHEAD bytes beside its key and value,
 * rounded up to 8. */
#ifndef HS_DICT_H
#define HS_DICT_H

#include <stddef.h>
#include <stdint.h>

#define HS_DICT_MIN_SIZE ((size_t)64 * 1024)
#define HS_DICT_MAX_SIZE ((size_t)16 * 1024 * 1024 * 1024)
#define HS_DICT_MAX_KEY 65535
#define HS_DICT_MAX_VALUE ((size_t)1024 * 1024 * 1024)
#define HS_DICT_NAME_MAX 63
#define HS_DICT_ENTRY_OVERHEAD 40

typedef struct hs_dict hs_dict_t;

/* Value types: integers and floats are kept apart (Lua 5.4's math.type). */
enum { HS_DICT_NIL = 0, HS_DICT_BOOL, HS_DICT_INT, HS_DICT_FLOAT, HS_DICT_STR };

/* A value going in or coming out. For HS_DICT_STR going in, s and len are
 * the bytes; coming out (hs_dict_get), len is the value's full length and
 * at most the caller's cap bytes of it were copied. */
typedef struct hs_dict_value {
  int type;      /* HS_DICT_* */
  int b;         /* HS_DICT_BOOL */
  int64_t i;     /* HS_DICT_INT */
  double f;      /* HS_DICT_FLOAT */
  const char *s; /* HS_DICT_STR going in */
  size_t len;    /* HS_DICT_STR */
} hs_dict_value_t;

/* Results: 0, or one of these (hs_dict_strerror gives the words scripts
 * see, OpenResty's where it has them). */
enum {
  HS_DICT_OK = 0,
  HS_DICT_ENOTFOUND = -1, /* "not found" */
  HS_DICT_EEXISTS = -2,   /* "exists" (add) */
  HS_DICT_ENOTNUM = -3,   /* "not a number" (incr) */
  HS_DICT_ENOMEM = -4,    /* "no memory" (safe_set/safe_add: no room without evicting) */
  HS_DICT_EEMPTYKEY = -5, /* "empty key" */
  HS_DICT_EKEYLEN = -6,   /* "key too long" */
  HS_DICT_ETOOBIG = -7,   /* "value too large" (for this dictionary, or over HS_DICT_MAX_VALUE) */
  HS_DICT_ELOCK = -8      /* "dictionary lock failed" (the mutex is unrecoverable) */
};
const char *hs_dict_strerror(int r);

/* How a store treats a key that is there (or not). */
enum {
  HS_DICT_SET = 0,     /* store whatever is there */
  HS_DICT_ADD = 1,     /* only when the key is absent (or expired): else HS_DICT_EEXISTS */
  HS_DICT_REPLACE = 2, /* only when the key is present: else HS_DICT_ENOTFOUND */
  HS_DICT_SAFE = 4     /* or'ed in: never evict an unexpired entry (HS_DICT_ENOMEM instead) */
};

/* Map and initialise a dictionary of `bytes` bytes named `name` (for
 * messages). NULL with err filled when the size is out of range or the
 * mapping fails. Memory is committed as it is used. */
hs_dict_t *hs_dict_create(const char *name, size_t bytes, char *err, size_t errlen);
/* Unmap this process's view. The memory goes when the last process that
 * maps it lets go of it; never while another process may be using it is it
 * torn down. */
void hs_dict_destroy(hs_dict_t *d);
const char *hs_dict_name(const hs_dict_t *d);
size_t hs_dict_capacity(const hs_dict_t *d); /* the size it was made with */

/* The value of key into *out (a string's bytes into buf, at most cap of
 * them; out->len says how long it is, so a caller with a short buffer asks
 * again with a bigger one). 0 or HS_DICT_ENOTFOUND (expired counts as
 * absent), or a key error. A hit makes the entry the most recently used. */
int hs_dict_get(hs_dict_t *d, const char *key, size_t klen, hs_dict_value_t *out, char *buf,
                size_t cap);
/* Store v under key as op says (HS_DICT_SET, _ADD, _REPLACE, maybe |
 * HS_DICT_SAFE), expiring ttl_ms from now (0: never). A NIL value deletes
 * the key. *forcible (may be NULL) is set to 1 when entries that had not
 * expired were evicted to make room, else 0. */
int hs_dict_set(hs_dict_t *d, int op, const char *key, size_t klen, const hs_dict_value_t *v,
                uint64_t ttl_ms, int *forcible);
/* Add by (an integer or a float) to the number under key: integer plus
 * integer stays an integer (wrapping like Lua's), anything else becomes a
 * float; the entry keeps its expiry. A missing key: with init (not NULL) it
 * becomes init + by, expiring init_ttl_ms from now (0: never); without,
 * HS_DICT_ENOTFOUND. A value that is not a number: HS_DICT_ENOTNUM. The
 * result goes to *out; *forcible as for hs_dict_set. */
int hs_dict_incr(hs_dict_t *d, const char *key, size_t klen, const hs_dict_value_t *by,
                 const hs_dict_value_t *init, uint64_t init_ttl_ms, hs_dict_value_t *out,
                 int *forcible);
/* Remove key: 0, or HS_DICT_ENOTFOUND when it was not there. */
int hs_dict_delete(hs_dict_t *d, const char *key, size_t klen);
/* Milliseconds key has left (*ms_left 0: it never expires), or
 * HS_DICT_ENOTFOUND. Never 0 for an entry that expires: at least 1. */
int hs_dict_ttl(hs_dict_t *d, const char *key, size_t klen, uint64_t *ms_left);
/* Make key expire ttl_ms from now (0: never), or HS_DICT_ENOTFOUND. */
int hs_dict_expire(hs_dict_t *d, const char *key, size_t klen, uint64_t ttl_ms);
/* The keys that have not expired, most recently used first, at most max
 * of them (0: all), packed into buf as a 4-byte length (host order,
 * unaligned) then the key's bytes, for as many as fit in cap. *count says
 * how many were written, *needed how many bytes all of them take: a caller
 * whose buffer was short asks again with a bigger one. */
int hs_dict_keys(hs_dict_t *d, size_t max, char *buf, size_t cap, size_t *count, size_t *needed);
/* Remove every entry at once. */
int hs_dict_flush_all(hs_dict_t *d);
/* Reclaim expired entries, at most max of them (0: all); *freed (may be
 * NULL) says how many. */
int hs_dict_flush_expired(hs_dict_t *d, size_t max, size_t *freed);
/* Bytes not held by entries (a new entry needs its key, its value and
 * HS_DICT_ENTRY_OVERHEAD of them, in one piece). Expired entries not yet
 * reclaimed still hold theirs. */
int hs_dict_free_space(hs_dict_t *d, size_t *bytes);

typedef struct hs_dict_stats {
  size_t capacity;     /* bytes it was made with */
  size_t free_bytes;   /* as hs_dict_free_space */
  size_t entries;      /* entries held, expired ones not yet reclaimed included */
  uint64_t evictions;  /* unexpired entries evicted to make room */
  uint64_t recoveries; /* locks taken over from a process that died holding it */
  uint64_t resets;     /* of those, how many found it mid-change and emptied it */
} hs_dict_stats_t;
int hs_dict_stats(hs_dict_t *d, hs_dict_stats_t *st);

/* For tests. hs__dict_lock takes the lock (as an operation would; when
 * dirty, it also marks the dictionary as being changed) and hs__dict_unlock
 * lets it go: a test child takes it and is killed holding it.
 * hs__dict_check walks the whole region and checks every invariant (blocks
 * tile the arena, no two free blocks touch, free lists and counters agree,
 * every entry is in its hash chain and the LRU list once): 0, or -1 with err
 * saying what is wrong. hs__dict_siphash is the hash (SipHash-2-4). */
int hs__dict_lock(hs_dict_t *d, int dirty);
void hs__dict_unlock(hs_dict_t *d);
int hs__dict_check(hs_dict_t *d, char *err, size_t errlen);
uint64_t hs__dict_siphash(const uint8_t key[16], const void *p, size_t n);

#endif
