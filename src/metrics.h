/* metrics.h: the counters by name, latency histograms, and the writers the
 * admin endpoint builds its answers with (Prometheus text, JSON). Socket
 * layer: no Lua. */
#ifndef HS_METRICS_H
#define HS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct hs_stats;

/* ---- the counters of hs_stats_t, by name ---- */

typedef struct hs_stat_field {
  const char *name; /* as hs.stats() names it: "accepted" */
  uint64_t value;
  int gauge;        /* a level (active, generation), not a running count */
  const char *help; /* one line for Prometheus' HELP */
} hs_stat_field_t;

#define HS_NSTAT_FIELDS 22
/* Fill f with every counter of s, in a fixed order. */
void hs_stat_fields(const struct hs_stats *s, hs_stat_field_t f[HS_NSTAT_FIELDS]);

/* ---- histograms ---- */

#define HS_HIST_BUCKETS 18 /* upper bounds; one more for +Inf */

typedef struct hs_hist {
  uint64_t counts[HS_HIST_BUCKETS + 1]; /* per bucket, not cumulative */
  uint64_t count;
  uint64_t sum_ns;
} hs_hist_t;

/* The bucket bounds, in ns: from 10 µs to 10 s for handler time. */
extern const uint64_t hs_hist_handler_bounds[HS_HIST_BUCKETS];
/* From 1 ms to 1 day for how long connections last. */
extern const uint64_t hs_hist_conn_bounds[HS_HIST_BUCKETS];

void hs_hist_observe(hs_hist_t *h, const uint64_t *bounds, uint64_t ns);

/* ---- writers into an hs_buf_t (a failed allocation sets *oom) ---- */

typedef struct hs_out {
  hs_buf_t *buf;
  hs_pool_t *pool;
  int oom;
} hs_out_t;

void hs_out_put(hs_out_t *o, const char *s, size_t n);
void hs_out_str(hs_out_t *o, const char *s);
void hs_out_printf(hs_out_t *o, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* s as a JSON string, quotes included: control bytes and bytes that are
 * not valid UTF-8 come out as \u00XX escapes, so the result always parses. */
void hs_out_json_str(hs_out_t *o, const char *s, size_t n);
/* s as a Prometheus label value (no quotes): \\, \" and \n escaped. */
void hs_out_label(hs_out_t *o, const char *s);
/* One histogram in the text exposition format: the _bucket lines
 * (cumulative, le in seconds), _sum and _count. labels: "" or
 * `handler="on_message",worker="2"` (no braces). */
void hs_out_prom_hist(hs_out_t *o, const char *name, const char *labels, const hs_hist_t *h,
                      const uint64_t *bounds);
/* bytes as a hex dump, 16 per line, each line indented and followed by the
 * printable text: "  0000  48 69 0d 0a                ...  |Hi..|" */
void hs_out_hexdump(hs_out_t *o, const char *p, size_t n);

#endif
