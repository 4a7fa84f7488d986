/* metrics.c: counters by name, histograms, and the text writers of the
 * admin endpoint (metrics.h). */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "hotsock.h"

void hs_stat_fields(const hs_stats_t *s, hs_stat_field_t f[HS_NSTAT_FIELDS]) {
  const hs_stat_field_t all[HS_NSTAT_FIELDS] = {
      {"accepted", s->accepted, 0, "Clients accepted."},
      {"rejected", s->rejected, 0, "Clients refused (max_clients, out of descriptors)."},
      {"active", s->active, 1, "Clients connected now."},
      {"closed", s->closed, 0, "Client connections closed."},
      {"bytes_in", s->bytes_in, 0, "Bytes read from every connection."},
      {"bytes_out", s->bytes_out, 0, "Bytes written to every connection."},
      {"frames_in", s->frames_in, 0, "Messages framed and handed to the script."},
      {"handler_errors", s->handler_errors, 0, "Handler calls that raised an error."},
      {"handler_timeouts", s->handler_timeouts, 0, "Handler calls stopped by the time budget."},
      {"oversize_frames", s->oversize_frames, 0, "Messages over max_frame or max_inbuf."},
      {"outbuf_disconnects", s->outbuf_disconnects, 0, "Clients cut off over max_outbuf."},
      {"timeouts", s->timeouts, 0, "Connection deadlines that passed."},
      {"reload_ok", s->reload_ok, 0, "Reloads put in service."},
      {"reload_failed", s->reload_failed, 0, "Reloads refused (the old code kept serving)."},
      {"generation", s->generation, 1, "Reload generation of the code in service."},
      {"connects", s->connects, 0, "Outbound connections made by hs.connect."},
      {"connect_failed", s->connect_failed, 0, "Outbound connections that failed."},
      {"tls_handshakes", s->tls_handshakes, 0, "Inbound TLS handshakes completed."},
      {"tls_handshake_failures", s->tls_handshake_failures, 0, "Inbound TLS handshakes failed."},
      {"tls_resumed", s->tls_resumed, 0, "Inbound TLS handshakes that resumed a session."},
      {"proxy_failures", s->proxy_failures, 0, "PROXY headers missing, malformed or too slow."},
      {"health_checks", s->health_checks, 0, "Health checks answered."},
  };
  memcpy(f, all, sizeof all);
}

#define US 1000ull
#define MS 1000000ull
#define S 1000000000ull
const uint64_t hs_hist_handler_bounds[HS_HIST_BUCKETS] = {
    10 * US, 25 * US, 50 * US, 100 * US, 250 * US, 500 * US, 1 * MS, 2500 * US, 5 * MS,
    10 * MS, 25 * MS, 50 * MS, 100 * MS, 250 * MS, 500 * MS, 1 * S,  2500 * MS, 10 * S};
const uint64_t hs_hist_conn_bounds[HS_HIST_BUCKETS] = {
    1 * MS,  10 * MS, 100 * MS, 500 * MS, 1 * S,    5 * S,     10 * S,    30 * S,    60 * S,
    300 * S, 600 * S, 1800 * S, 3600 * S, 7200 * S, 21600 * S, 43200 * S, 86400 * S, 604800 * S};

void hs_hist_observe(hs_hist_t *h, const uint64_t *bounds, uint64_t ns) {
  size_t i = 0;
  while (i < HS_HIST_BUCKETS && ns > bounds[i]) i++;
  h->counts[i]++;
  h->count++;
  h->sum_ns += ns;
}

void hs_out_put(hs_out_t *o, const char *s, size_t n) {
  if (o->oom || n == 0) return;
  if (hs_buf_append(o->buf, s, n, o->pool) != 0) o->oom = 1;
}

void hs_out_str(hs_out_t *o, const char *s) { hs_out_put(o, s, strlen(s)); }

void hs_out_printf(hs_out_t *o, const char *fmt, ...) {
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof small) {
    hs_out_put(o, small, (size_t)n);
    return;
  }
  if (o->oom) return;
  char *p = hs_buf_reserve(o->buf, (size_t)n + 1, o->pool);
  if (!p) {
    o->oom = 1;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  hs_buf_commit(o->buf, (size_t)n);
}

/* The length of the valid UTF-8 sequence at p (1..4), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef)
    len = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4)
    len = 4, min = 0x10000;
  else
    return 0;
  if (n < len) return 0;
  unsigned cp = c & (0xff >> (len + 1));
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

void hs_out_json_str(hs_out_t *o, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t run = 0; /* bytes copied as they are, written in one go */
  hs_out_put(o, "\"", 1);
  for (size_t i = 0; i < n;) {
    unsigned c = p[i];
    size_t k = utf8_len(p + i, n - i);
    if (k > 1 || (k == 1 && c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)) {
      i += k;
      run += k;
      continue;
    }
    hs_out_put(o, (const char *)p + i - run, run);
    run = 0;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      hs_out_put(o, esc, 2);
    } else if (c == '\n') {
      hs_out_put(o, "\\n", 2);
    } else {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      hs_out_put(o, esc, 6);
    }
    i++;
  }
  hs_out_put(o, (const char *)p + n - run, run);
  hs_out_put(o, "\"", 1);
}

void hs_out_label(hs_out_t *o, const char *s) {
  for (; *s; s++) {
    if (*s == '\\')
      hs_out_put(o, "\\\\", 2);
    else if (*s == '"')
      hs_out_put(o, "\\\"", 2);
    else if (*s == '\n')
      hs_out_put(o, "\\n", 2);
    else
      hs_out_put(o, s, 1);
  }
}

void hs_out_prom_hist(hs_out_t *o, const char *name, const char *labels, const hs_hist_t *h,
                      const uint64_t *bounds) {
  const char *sep = *labels ? "," : "";
  uint64_t cum = 0;
  for (size_t i = 0; i < HS_HIST_BUCKETS; i++) {
    cum += h->counts[i];
    hs_out_printf(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, (double)bounds[i] / 1e9,
                  (unsigned long long)cum);
  }
  hs_out_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                (unsigned long long)h->count);
  hs_out_printf(o, "%s_sum%s%s%s %.9f\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
                (double)h->sum_ns / 1e9);
  hs_out_printf(o, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
                (unsigned long long)h->count);
}

void hs_out_hexdump(hs_out_t *o, const char *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  for (size_t off = 0; off < n; off += 16) {
    char line[96];
    size_t k = n - off < 16 ? n - off : 16, w = 0;
    w += (size_t)snprintf(line, sizeof line, "  %04zx  ", off & 0xffff);
    for (size_t i = 0; i < 16; i++) {
      if (i < k) {
        unsigned char c = (unsigned char)p[off + i];
        line[w++] = hex[c >> 4];
        line[w++] = hex[c & 15];
      } else {
        line[w++] = ' ';
        line[w++] = ' ';
      }
      line[w++] = ' ';
      if (i == 7) line[w++] = ' ';
    }
    line[w++] = ' ';
    line[w++] = '|';
    for (size_t i = 0; i < k; i++) {
      unsigned char c = (unsigned char)p[off + i];
      line[w++] = c >= 0x20 && c < 0x7f ? (char)c : '.';
    }
    line[w++] = '|';
    line[w++] = '\n';
    hs_out_put(o, line, w);
  }
}
