/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* cmocka tests of the bench latency histogram (tools/bench_hist.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>

#include <cmocka.h>

#include "bench_hist.h"

static amn_hist *new_hist(void) {
  amn_hist *h = malloc(sizeof *h);
  assert_non_null(h);
  amn_hist_init(h);
  return h;
}

static void test_empty(void **st) {
  amn_hist *h = new_hist();
  assert_int_equal(amn_hist_percentile(h, 0.5), 0);
  assert_true(amn_hist_mean(h) == 0.0);
  free(h);
}

static void test_small_values_exact(void **st) {
  amn_hist *h = new_hist();
  for (uint64_t v = 1; v <= 100; v++) amn_hist_record(h, v);
  assert_int_equal(amn_hist_percentile(h, 0.50), 50);
  assert_int_equal(amn_hist_percentile(h, 0.99), 99);
  assert_int_equal(amn_hist_percentile(h, 1.0), 100);
  assert_int_equal(amn_hist_percentile(h, 0.0), 1);
  assert_true(amn_hist_mean(h) == 50.5);
  free(h);
}

/* Every single value, from 1 ns to ~1 hour, comes back within 1%. */
static void test_relative_error(void **st) {
  for (uint64_t v = 1; v < 3600000000000ull; v = v * 1.013 + 1) {
    amn_hist *h = new_hist();
    amn_hist_record(h, v);
    amn_hist_record(h, v + 1); /* max != v so the clamp does not hide the bucket error */
    amn_hist_record(h, 0);
    uint64_t p = amn_hist_percentile(h, 0.5);
    double err = p > v ? (double)(p - v) / (double)v : (double)(v - p) / (double)v;
    if (err > 0.01) fail_msg("value %llu reported as %llu", (unsigned long long)v, (unsigned long long)p);
    free(h);
  }
}

static void test_percentiles_and_merge(void **st) {
  amn_hist *a = new_hist(), *b = new_hist();
  /* 1000 samples 1..1000 us, split over two histograms */
  for (uint64_t i = 1; i <= 1000; i++) amn_hist_record(i % 2 ? a : b, i * 1000);
  amn_hist_merge(a, b);
  assert_int_equal(a->count, 1000);
  assert_int_equal(a->min, 1000);
  assert_int_equal(a->max, 1000000);
  const double ps[] = {0.5, 0.9, 0.99, 0.999};
  const double want[] = {500e3, 900e3, 990e3, 999e3};
  for (int i = 0; i < 4; i++) {
    double got = (double)amn_hist_percentile(a, ps[i]);
    assert_true(got > want[i] * 0.99 && got < want[i] * 1.01);
  }
  assert_int_equal(amn_hist_percentile(a, 1.0), 1000000);
  free(a);
  free(b);
}

static void test_huge_value(void **st) {
  amn_hist *h = new_hist();
  amn_hist_record(h, UINT64_MAX);
  assert_int_equal(amn_hist_percentile(h, 0.5), UINT64_MAX);
  free(h);
}

/* The buckets tile the whole range: each starts one past the previous end,
 * the first at 0, the last ends at UINT64_MAX >> 1 .. above; a value is in
 * the bucket the histogram files it under. */
static void test_bucket_bounds(void **st) {
  uint64_t prev_hi = 0;
  for (unsigned i = 0; i < AMN_HIST_BUCKETS; i++) {
    uint64_t lo, hi;
    amn_hist_bucket_bounds(i, &lo, &hi);
    assert_true(lo <= hi);
    if (i) assert_true(lo == prev_hi + 1);
    else assert_true(lo == 0);
    prev_hi = hi;
    amn_hist *h = new_hist();
    amn_hist_record(h, lo);
    amn_hist_record(h, hi);
    assert_int_equal(h->b[i], 2);
    free(h);
  }
  assert_true(prev_hi == UINT64_MAX);
}

typedef struct {
  amn_ahist *h;
  uint64_t base;
} rec_arg;

static void *recorder(void *p) {
  rec_arg *a = p;
  for (uint64_t v = 1; v <= 100000; v++) amn_ahist_record(a->h, a->base + v);
  return NULL;
}

/* Four threads record at once: nothing lost, min and max right, and the
 * copy's percentiles as a plain histogram's of the same values. */
static void test_atomic_hist(void **st) {
  amn_ahist *h = calloc(1, sizeof *h);
  amn_hist *plain = new_hist(), *copy = malloc(sizeof *copy);
  assert_non_null(h);
  assert_non_null(copy);
  amn_ahist_read(h, copy);
  assert_int_equal(copy->count, 0);
  pthread_t t[4];
  rec_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (rec_arg){h, (uint64_t)i * 1000000};
    assert_int_equal(pthread_create(&t[i], NULL, recorder, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 4; i++)
    for (uint64_t v = 1; v <= 100000; v++) amn_hist_record(plain, (uint64_t)i * 1000000 + v);
  amn_ahist_read(h, copy);
  assert_int_equal(copy->count, 400000);
  assert_int_equal(copy->min, 1);
  assert_int_equal(copy->max, 3100000);
  for (double p = 0.1; p < 1; p += 0.1) assert_int_equal(amn_hist_percentile(copy, p), amn_hist_percentile(plain, p));
  free(h);
  free(plain);
  free(copy);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_small_values_exact),
      cmocka_unit_test(test_relative_error),
      cmocka_unit_test(test_percentiles_and_merge),
      cmocka_unit_test(test_huge_value),
      cmocka_unit_test(test_bucket_bounds),
      cmocka_unit_test(test_atomic_hist),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
