/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The outgoing message queue shared by server and client calls (rpc/msgq.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rpc/msgq.h"
#include "rpc/rpc.h"

static amn_qmsg *msg_of(const char *payload) {
  size_t n = strlen(payload);
  amn_qmsg *m = amn_qmsg_new(n, 7);
  assert_non_null(m);
  memcpy(m->data + 5, payload, n);
  return m;
}

/* The bytes a queue of messages must produce: each framed, in order. */
static size_t expect_bytes(const char *const *p, size_t n, uint8_t *out) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(p[i]);
    amn_frame_prefix(out + k, l);
    memcpy(out + k + 5, p[i], l);
    k += 5 + l;
  }
  return k;
}

static void test_new_frames(void **state) {
  (void)state;
  amn_qmsg *m = amn_qmsg_new(300, 3);
  assert_non_null(m);
  assert_int_equal(m->op.kind, 3);
  assert_int_equal(m->len, 305);
  assert_int_equal(m->off, 0);
  assert_null(m->next);
  assert_null(m->call);
  const uint8_t want[5] = {0, 0, 0, 1, 44};
  assert_memory_equal(m->data, want, 5);
  free(m);
  /* a size that cannot be allocated is refused, not wrapped */
  assert_null(amn_qmsg_new(SIZE_MAX, 3));
  assert_null(amn_qmsg_new(SIZE_MAX - 4, 3));
}

/* Every chunk size pulls the same bytes; avail is exact up to its limit. */
static void test_pull_every_chunking(void **state) {
  (void)state;
  const char *p[] = {"", "a", "hello world", "0123456789abcdef0123456789abcdef", "z"};
  uint8_t want[256], got[256];
  size_t total = expect_bytes(p, 5, want);
  for (size_t chunk = 1; chunk <= total + 1; chunk++) {
    amn_msgq q;
    amn_msgq_init(&q);
    assert_true(amn_msgq_empty(&q));
    for (size_t i = 0; i < 5; i++) amn_msgq_push(&q, msg_of(p[i]));
    assert_false(amn_msgq_empty(&q));
    assert_int_equal(amn_msgq_avail(&q, total), total);
    assert_true(amn_msgq_avail(&q, 3) > 3);
    size_t k = 0;
    while (!amn_msgq_empty(&q)) {
      size_t n = amn_msgq_pull(&q, got + k, chunk, NULL);
      assert_true(n > 0 && n <= chunk);
      k += n;
      assert_int_equal(amn_msgq_avail(&q, total), total - k);
    }
    assert_int_equal(k, total);
    assert_memory_equal(got, want, total);
    assert_int_equal(amn_msgq_pull(&q, got, 10, NULL), 0);
    assert_null(q.tail);
  }
}

/* keep: the first fully pulled message is handed out, not freed, and can
 * be put back whole for a retry. */
static void test_keep_and_retry(void **state) {
  (void)state;
  amn_msgq q;
  amn_msgq_init(&q);
  amn_msgq_push(&q, msg_of("request"));
  uint8_t buf[64];
  amn_qmsg *kept = NULL;
  assert_int_equal(amn_msgq_pull(&q, buf, 4, &kept), 4);
  assert_null(kept);
  assert_int_equal(amn_msgq_pull(&q, buf + 4, 64, &kept), 8);
  assert_non_null(kept);
  assert_true(amn_msgq_empty(&q));
  /* a retry sends it again from its first byte */
  amn_msgq_push_front(&q, kept);
  assert_int_equal(amn_msgq_avail(&q, 100), 12);
  uint8_t again[64];
  assert_int_equal(amn_msgq_pull(&q, again, 64, NULL), 12);
  assert_memory_equal(again, buf, 12);
  assert_true(amn_msgq_empty(&q));
  /* push_front before other messages keeps the order */
  amn_msgq_push(&q, msg_of("second"));
  amn_msgq_push_front(&q, msg_of("first"));
  amn_msgq_push(&q, msg_of("third"));
  const char *p[] = {"first", "second", "third"};
  uint8_t want[64];
  size_t total = expect_bytes(p, 3, want);
  assert_int_equal(amn_msgq_pull(&q, buf, 64, NULL), total);
  assert_memory_equal(buf, want, total);
}

static void test_rewind_and_clear(void **state) {
  (void)state;
  amn_msgq q;
  amn_msgq_init(&q);
  amn_msgq_rewind(&q); /* empty: nothing to do */
  amn_msgq_push(&q, msg_of("abcdef"));
  amn_msgq_push(&q, msg_of("gh"));
  uint8_t buf[32];
  assert_int_equal(amn_msgq_pull(&q, buf, 6, NULL), 6);
  assert_int_equal(amn_msgq_avail(&q, 100), 5 + 7);
  amn_msgq_rewind(&q);
  assert_int_equal(amn_msgq_avail(&q, 100), 11 + 7);
  assert_int_equal(amn_msgq_pull(&q, buf, 3, NULL), 3);
  assert_int_equal(amn_msgq_clear(&q), 15); /* unsent bytes dropped */
  assert_true(amn_msgq_empty(&q));
  assert_null(q.tail);
  assert_int_equal(amn_msgq_clear(&q), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_frames),
      cmocka_unit_test(test_pull_every_chunking),
      cmocka_unit_test(test_keep_and_retry),
      cmocka_unit_test(test_rewind_and_clear),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
