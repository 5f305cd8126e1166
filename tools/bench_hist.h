/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Latency histogram of the bench: log-linear buckets over nanoseconds.
 * Values below 256 are exact; above, every power of two is split into 128
 * equal buckets, so a bucket's midpoint is within 0.4% of any value in it.
 * Fixed size (about 58 KiB), no allocation; not thread-safe (one per thread,
 * merged at the end).
 */
#ifndef AMN_TOOLS_BENCH_HIST_H
#define AMN_TOOLS_BENCH_HIST_H

#include <stdint.h>

#define AMN_HIST_BUCKETS (256 + 56 * 128)

typedef struct amn_hist {
  uint64_t count, min, max;
  double sum;
  uint64_t b[AMN_HIST_BUCKETS];
} amn_hist;

void amn_hist_init(amn_hist *h);
void amn_hist_record(amn_hist *h, uint64_t v);
/** Adds every sample of `src` to `dst`. */
void amn_hist_merge(amn_hist *dst, const amn_hist *src);
/** Nearest-rank percentile (p in 0..1): the midpoint of the bucket holding
 *  the sample of rank ceil(p * count), clamped to [min, max]; 0 if empty. */
uint64_t amn_hist_percentile(const amn_hist *h, double p);
double amn_hist_mean(const amn_hist *h);
/** The values bucket i holds: [*lo, *hi] (i < AMN_HIST_BUCKETS). */
void amn_hist_bucket_bounds(unsigned i, uint64_t *lo, uint64_t *hi);

/** The same histogram, recorded into by several threads at once (relaxed
 *  atomics; no sum, so no mean). Zeroed memory is an empty one (calloc). */
typedef struct amn_ahist {
  _Atomic uint64_t count, max, min_inv; /* min_inv = UINT64_MAX - min, 0 = empty */
  _Atomic uint64_t b[AMN_HIST_BUCKETS];
} amn_ahist;

void amn_ahist_record(amn_ahist *h, uint64_t v);
/** A plain copy of `src` (read when no thread records any more; sum = 0). */
void amn_ahist_read(const amn_ahist *src, amn_hist *out);

#endif
