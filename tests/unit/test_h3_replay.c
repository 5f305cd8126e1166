/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The HTTP/3 server's 0-RTT anti-replay table and identity cache
 * (src/transport/h3/h3_replay.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/h3/h3.h"

static void test_duplicates_within_window(void **st) {
  (void)st;
  amn_h3_replay *t = amn_h3_replay_new(16);
  assert_non_null(t);
  const uint8_t a[] = "binder-a", b[] = "binder-b";
  time_t now = 1000;
  assert_int_equal(amn_h3_replay_add(t, a, sizeof a, now + 10, now), 0);     /* first time: accepted */
  assert_int_equal(amn_h3_replay_add(t, a, sizeof a, now + 10, now + 5), 1); /* again: a replay */
  assert_int_equal(amn_h3_replay_add(t, b, sizeof b, now + 10, now + 5), 0);
  assert_int_equal(amn_h3_replay_add(t, a, sizeof a - 1, now + 10, now + 5), 0); /* a different id */
  assert_int_equal(amn_h3_replay_add(t, a, sizeof a, now + 10, now + 10), 1);    /* still in the window */
  assert_int_equal(amn_h3_replay_count(t), 3);
  /* after their expiry the entries are gone (GnuTLS refuses such old
   * ClientHellos by itself) */
  assert_int_equal(amn_h3_replay_add(t, a, sizeof a, now + 30, now + 11), 0);
  assert_int_equal(amn_h3_replay_add(t, a, sizeof a, now + 30, now + 12), 1);
  assert_int_equal(amn_h3_replay_count(t), 1);
  amn_h3_replay_free(t);
}

static void test_bounded(void **st) {
  (void)st;
  amn_h3_replay *t = amn_h3_replay_new(4);
  char id[16];
  for (int i = 0; i < 4; i++) {
    snprintf(id, sizeof id, "id%d", i);
    assert_int_equal(amn_h3_replay_add(t, (const uint8_t *)id, strlen(id), 110, 100), 0);
  }
  /* full of live entries: it cannot record, so the caller refuses 0-RTT */
  assert_int_equal(amn_h3_replay_add(t, (const uint8_t *)"new", 3, 110, 100), -1);
  /* known ones are still recognised when full */
  assert_int_equal(amn_h3_replay_add(t, (const uint8_t *)"id2", 3, 110, 100), 1);
  assert_int_equal(amn_h3_replay_count(t), 4);
  /* once they expired there is room again */
  assert_int_equal(amn_h3_replay_add(t, (const uint8_t *)"new", 3, 130, 111), 0);
  assert_int_equal(amn_h3_replay_count(t), 1);
  amn_h3_replay_free(t);
}

/* Many entries through a small table over time: the ring wraps, the
 * buckets stay consistent (every live entry is found, expired ones not). */
static void test_wraparound(void **st) {
  (void)st;
  amn_h3_replay *t = amn_h3_replay_new(128);
  char id[32];
  for (int i = 0; i < 10000; i++) {
    time_t now = 1000 + i / 8; /* 16 added per second, living 6 s: <= 96 at once */
    snprintf(id, sizeof id, "hello-%d", i);
    assert_int_equal(amn_h3_replay_add(t, (const uint8_t *)id, strlen(id), now + 5, now), 0);
    if (i >= 8) { /* the one 8 before (1 s ago) is a replay */
      snprintf(id, sizeof id, "hello-%d", i - 8);
      assert_int_equal(amn_h3_replay_add(t, (const uint8_t *)id, strlen(id), now + 5, now), 1);
    }
    if (i >= 64) { /* 8 s ago: expired, accepted again (and recorded) */
      snprintf(id, sizeof id, "hello-%d", i - 64);
      assert_int_equal(amn_h3_replay_add(t, (const uint8_t *)id, strlen(id), now + 5, now), 0);
    }
  }
  assert_true(amn_h3_replay_count(t) <= 96);
  amn_h3_replay_free(t);
}

static int g_freed;
static void free_val(void *p) {
  g_freed++;
  free(p);
}
static bool copy_int(void *dst, const void *val) {
  *(int *)dst = *(const int *)val;
  return true;
}

static void test_cache_mode(void **st) {
  (void)st;
  g_freed = 0;
  amn_h3_replay *t = amn_h3_tcache_new(3, free_val);
  for (int i = 0; i < 3; i++) {
    int *v = malloc(sizeof *v);
    *v = i * 10;
    char id[8];
    snprintf(id, sizeof id, "t%d", i);
    assert_int_equal(amn_h3_tcache_put(t, (const uint8_t *)id, strlen(id), 200, 100, v), 0);
  }
  int got = -1;
  assert_true(amn_h3_tcache_get(t, (const uint8_t *)"t1", 2, 150, copy_int, &got));
  assert_int_equal(got, 10);
  assert_false(amn_h3_tcache_get(t, (const uint8_t *)"zz", 2, 150, copy_int, &got));
  assert_false(amn_h3_tcache_get(t, (const uint8_t *)"t1", 2, 201, copy_int, &got)); /* expired */
  /* full: the oldest goes */
  int *v = malloc(sizeof *v);
  *v = 99;
  assert_int_equal(amn_h3_tcache_put(t, (const uint8_t *)"t3", 2, 200, 100, v), 0);
  assert_int_equal(g_freed, 1);
  assert_false(amn_h3_tcache_get(t, (const uint8_t *)"t0", 2, 150, copy_int, &got));
  assert_true(amn_h3_tcache_get(t, (const uint8_t *)"t3", 2, 150, copy_int, &got));
  assert_int_equal(got, 99);
  /* the same id again keeps the first value */
  v = malloc(sizeof *v);
  *v = 5;
  assert_int_equal(amn_h3_tcache_put(t, (const uint8_t *)"t3", 2, 200, 100, v), 0);
  assert_int_equal(g_freed, 2);
  assert_true(amn_h3_tcache_get(t, (const uint8_t *)"t3", 2, 150, copy_int, &got));
  assert_int_equal(got, 99);
  amn_h3_replay_free(t);
  assert_int_equal(g_freed, 5); /* every value freed once */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_duplicates_within_window),
      cmocka_unit_test(test_bounded),
      cmocka_unit_test(test_wraparound),
      cmocka_unit_test(test_cache_mode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
