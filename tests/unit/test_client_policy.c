/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The client's policies (client/policy.c): backoff, p2c, retries, throttling,
 * DNS re-resolution and address changes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "client/policy.h"

static void test_rand(void **st) {
  (void)st;
  uint64_t s = 1, seen[64];
  for (int i = 0; i < 64; i++) {
    seen[i] = amn_policy_rand(&s);
    assert_true(seen[i] != 0);
    for (int j = 0; j < i; j++) assert_true(seen[j] != seen[i]);
  }
}

/* base * 2^(fails-1), capped, with a jitter in [0.8, 1.2). */
static void test_backoff(void **st) {
  (void)st;
  const double base = 0.1, cap = 5.0;
  for (uint32_t fails = 1; fails < 40; fails++) {
    double want = base;
    for (uint32_t i = 1; i < fails && want < cap; i++) want *= 2;
    if (want > cap) want = cap;
    double lo = amn_policy_backoff_s(fails, base, cap, 0);           /* jitter 0.8 */
    double hi = amn_policy_backoff_s(fails, base, cap, 999999);      /* jitter just under 1.2 */
    assert_true(lo > want * 0.8 - 1e-12 && lo < want * 0.8 + 1e-12);
    assert_true(hi < want * 1.2 && hi > want * 1.19);
  }
  assert_true(amn_policy_backoff_s(1, 0.1, 5.0, 500000) > 0.0999 && amn_policy_backoff_s(1, 0.1, 5.0, 500000) < 0.1001);
  /* a huge failure count neither overflows nor exceeds the cap */
  assert_true(amn_policy_backoff_s(UINT32_MAX, 0.1, 5.0, 999999) < 6.0);
}

/* p2c: two distinct candidates, the less loaded wins; every candidate can be drawn. */
static void test_p2c(void **st) {
  (void)st;
  uint32_t loads[5] = {7, 3, 9, 3, 0};
  int chosen[5] = {0};
  uint64_t s = 42;
  for (int i = 0; i < 20000; i++) {
    uint64_t r1 = amn_policy_rand(&s), r2 = amn_policy_rand(&s);
    size_t a = (size_t)(r1 % 5), b = (size_t)(r2 % 4);
    if (b >= a) b++;
    size_t k = amn_policy_p2c(loads, 5, r1, r2);
    assert_true(k == a || k == b);
    assert_true(loads[k] <= loads[a] && loads[k] <= loads[b]);
    chosen[k]++;
  }
  assert_true(chosen[4] > chosen[1] && chosen[1] > 0 && chosen[0] > 0);
  assert_int_equal(chosen[2], 0); /* the most loaded never wins a pair */
  assert_int_equal(amn_policy_p2c(loads, 1, 5, 6), 0);
  uint32_t two[2] = {4, 4};
  assert_int_equal(amn_policy_p2c(two, 2, 1, 0), 1); /* a tie: the first drawn */
}

static void test_retry_rules(void **st) {
  (void)st;
  amn_retry_case k = {.replayable = true, .code = AMN_STATUS_UNAVAILABLE, .attempts = 1, .max_retries = 2};
  /* the server never ran it: always safe, idempotent or not, whatever the bucket */
  k.unprocessed = true;
  assert_true(amn_policy_may_retry(&k, 0));
  k.attempts = 3; /* more than max_retries re-sends */
  assert_false(amn_policy_may_retry(&k, 10));
  k.attempts = 1;
  k.probe = true;
  assert_false(amn_policy_may_retry(&k, 10));
  k.probe = false;
  k.stopping = true;
  assert_false(amn_policy_may_retry(&k, 10));
  k.stopping = false;
  k.cancelled = true;
  assert_false(amn_policy_may_retry(&k, 10));
  k.cancelled = false;
  k.replayable = false; /* a stream that already sent or received */
  assert_false(amn_policy_may_retry(&k, 10));
  k.replayable = true;
  /* it may have run: only idempotent calls, only after UNAVAILABLE, only with tokens */
  k.unprocessed = false;
  assert_false(amn_policy_may_retry(&k, 10));
  k.idempotent = true;
  assert_true(amn_policy_may_retry(&k, 10));
  assert_false(amn_policy_may_retry(&k, 5.0));
  k.code = AMN_STATUS_DEADLINE_EXCEEDED;
  assert_false(amn_policy_may_retry(&k, 10));
}

/* Throttling: each failure takes a token, each success gives 0.1 back,
 * within [0, 10]; below half, idempotent retries stop. */
static void test_throttling(void **st) {
  (void)st;
  double t = AMN_RETRY_TOKENS_MAX;
  amn_retry_case k = {.replayable = true, .idempotent = true, .code = AMN_STATUS_UNAVAILABLE, .attempts = 1,
                      .max_retries = 5};
  int retried = 0;
  for (int i = 0; i < 20; i++) {
    if (amn_policy_may_retry(&k, t)) retried++;
    amn_policy_retry_failure(&t);
  }
  assert_int_equal(retried, 5); /* tokens 10, 9, 8, 7, 6 */
  assert_true(t == 0);
  for (int i = 0; i < 1000; i++) amn_policy_retry_success(&t);
  assert_true(t <= AMN_RETRY_TOKENS_MAX && t > AMN_RETRY_TOKENS_MAX - 0.01);
}

/* The TTL within [floor, ceiling]. */
static void test_dns_refresh(void **st) {
  (void)st;
  assert_true(amn_policy_dns_refresh_s(30, 1000, 300000) == 30.0);
  assert_true(amn_policy_dns_refresh_s(0, 1000, 300000) == 1.0);      /* hosts file, TTL 0: the floor */
  assert_true(amn_policy_dns_refresh_s(86400, 1000, 300000) == 300.0); /* the ceiling */
  assert_true(amn_policy_dns_refresh_s(1, 250, 300000) == 1.0);
  assert_true(amn_policy_dns_refresh_s(5, 2000, 1000) == 2.0);        /* a ceiling below the floor: the floor */
}

/* A failed lookup: from the floor, doubling, capped, jittered. */
static void test_dns_retry(void **st) {
  (void)st;
  for (uint32_t f = 1; f < 30; f++) {
    double want = 0.5;
    for (uint32_t i = 1; i < f && want < 8; i++) want *= 2;
    if (want > 8) want = 8;
    double lo = amn_policy_dns_retry_s(f, 500, 8000, 0), hi = amn_policy_dns_retry_s(f, 500, 8000, 999999);
    assert_true(lo > want * 0.79 && lo < want * 0.81);
    assert_true(hi > want * 1.19 && hi < want * 1.21);
  }
}

/* A failure looks the name up again: not while a lookup runs, not sooner
 * than the floor after the previous one. */
static void test_dns_now(void **st) {
  (void)st;
  assert_true(amn_policy_dns_now(5.0, -1, 1000, false)); /* never looked up */
  assert_false(amn_policy_dns_now(5.0, -1, 1000, true));
  assert_false(amn_policy_dns_now(5.0, 4.5, 1000, false));
  assert_true(amn_policy_dns_now(5.5, 4.5, 1000, false));
  assert_false(amn_policy_dns_now(9.0, 4.5, 1000, true));
}

/* Which addresses drain and which are new. */
static void test_dns_diff(void **st) {
  (void)st;
  char cur[3][46] = {"10.0.0.1", "10.0.0.2", "::1"}, next[4][46] = {"10.0.0.2", "10.0.0.3", "10.0.0.3", "::1"};
  bool keep[3], add[4];
  assert_int_equal(amn_policy_dns_diff((const char(*)[46])cur, 3, (const char(*)[46])next, 4, keep, add), 2);
  assert_false(keep[0]);
  assert_true(keep[1] && keep[2]);
  assert_false(add[0]);
  assert_true(add[1]);
  assert_false(add[2]); /* a repeat of the same answer */
  assert_false(add[3]);
  /* the same set in another order: nothing */
  char same[3][46] = {"::1", "10.0.0.1", "10.0.0.2"};
  assert_int_equal(amn_policy_dns_diff((const char(*)[46])cur, 3, (const char(*)[46])same, 3, keep, add), 0);
  /* an empty answer changes nothing: the last good addresses stay */
  assert_int_equal(amn_policy_dns_diff((const char(*)[46])cur, 3, (const char(*)[46])next, 0, keep, add), 0);
  assert_true(keep[0] && keep[1] && keep[2]);
  /* the first answer: everything is new */
  assert_int_equal(amn_policy_dns_diff((const char(*)[46])cur, 0, (const char(*)[46])same, 3, keep, add), 3);
  assert_true(add[0] && add[1] && add[2]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rand),         cmocka_unit_test(test_backoff),    cmocka_unit_test(test_p2c),
      cmocka_unit_test(test_retry_rules),  cmocka_unit_test(test_throttling),
      cmocka_unit_test(test_dns_refresh),  cmocka_unit_test(test_dns_retry),  cmocka_unit_test(test_dns_now),
      cmocka_unit_test(test_dns_diff),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
