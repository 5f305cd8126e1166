/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Log-linear latency histogram (see bench_hist.h). */
#include "bench_hist.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

void amn_hist_init(amn_hist *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

/* v < 256: bucket v. Otherwise with e = msb(v) - 7 (>= 1), v >> e is in
 * [128, 255]: bucket 256 + (e - 1) * 128 + (v >> e) - 128. */
static unsigned bucket_of(uint64_t v) {
  if (v < 256) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v) - 7u;
  return 256u + (e - 1u) * 128u + (unsigned)(v >> e) - 128u;
}

static uint64_t bucket_mid(unsigned i) {
  if (i < 256) return i;
  unsigned e = (i - 256u) / 128u + 1u;
  uint64_t low = (uint64_t)((i - 256u) % 128u + 128u) << e;
  return low + ((1ull << e) >> 1);
}

void amn_hist_record(amn_hist *h, uint64_t v) {
  h->b[bucket_of(v)]++;
  h->count++;
  h->sum += (double)v;
  if (v < h->min) h->min = v;
  if (v > h->max) h->max = v;
}

void amn_hist_merge(amn_hist *dst, const amn_hist *src) {
  for (unsigned i = 0; i < AMN_HIST_BUCKETS; i++) dst->b[i] += src->b[i];
  dst->count += src->count;
  dst->sum += src->sum;
  if (src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
}

uint64_t amn_hist_percentile(const amn_hist *h, double p) {
  if (!h->count) return 0;
  uint64_t rank = (uint64_t)ceil(p * (double)h->count);
  if (rank < 1) rank = 1;
  if (rank > h->count) rank = h->count;
  uint64_t seen = 0;
  for (unsigned i = 0; i < AMN_HIST_BUCKETS; i++) {
    seen += h->b[i];
    if (seen >= rank) {
      uint64_t v = bucket_mid(i);
      return v < h->min ? h->min : v > h->max ? h->max : v;
    }
  }
  return h->max;
}

double amn_hist_mean(const amn_hist *h) { return h->count ? h->sum / (double)h->count : 0.0; }

void amn_hist_bucket_bounds(unsigned i, uint64_t *lo, uint64_t *hi) {
  if (i < 256) {
    *lo = *hi = i;
    return;
  }
  unsigned e = (i - 256u) / 128u + 1u;
  *lo = (uint64_t)((i - 256u) % 128u + 128u) << e;
  *hi = *lo + (1ull << e) - 1u;
}

void amn_ahist_record(amn_ahist *h, uint64_t v) {
  atomic_fetch_add_explicit(&h->b[bucket_of(v)], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
  while (v > m && !atomic_compare_exchange_weak_explicit(&h->max, &m, v, memory_order_relaxed, memory_order_relaxed)) {
  }
  uint64_t inv = UINT64_MAX - v;
  m = atomic_load_explicit(&h->min_inv, memory_order_relaxed);
  while (inv > m &&
         !atomic_compare_exchange_weak_explicit(&h->min_inv, &m, inv, memory_order_relaxed, memory_order_relaxed)) {
  }
}

void amn_ahist_read(const amn_ahist *src, amn_hist *out) {
  amn_hist_init(out);
  for (unsigned i = 0; i < AMN_HIST_BUCKETS; i++) out->b[i] = atomic_load_explicit(&src->b[i], memory_order_relaxed);
  out->count = atomic_load(&src->count);
  if (out->count) {
    out->max = atomic_load(&src->max);
    out->min = UINT64_MAX - atomic_load(&src->min_inv);
  }
}
