/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* cmocka tests of the bench latency histogram (tools/bench_hist.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_small_values_exact),
      cmocka_unit_test(test_relative_error),
      cmocka_unit_test(test_percentiles_and_merge),
      cmocka_unit_test(test_huge_value),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
