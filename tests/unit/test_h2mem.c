/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The HTTP/2 sessions' allocator (transport/h2/h2mem.c): small blocks from
 * the C heap, blocks of a page or more from their own mappings, contents
 * kept across realloc in every direction, calloc zeroed, overflowing sizes
 * refused; and a real nghttp2 session set up and torn down on it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "transport/h2/h2mem.h"

static void fill(uint8_t *p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 7);
}

static int same(const uint8_t *p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (uint8_t)(seed + i * 7)) return 0;
  return 1;
}

static void test_small_and_large(void **st) {
  (void)st;
  nghttp2_mem *m = amn_h2_mem();
  uint8_t *s = m->malloc(100, m->mem_user_data);
  assert_non_null(s);
  assert_false(amn_h2_mem_is_mapped(s));
  assert_int_equal((uintptr_t)s % 16, 0);
  fill(s, 100, 1);
  uint8_t *l = m->malloc(16394, m->mem_user_data); /* nghttp2's outbound frame buffer */
  assert_non_null(l);
  assert_true(amn_h2_mem_is_mapped(l));
  assert_int_equal((uintptr_t)l % 16, 0);
  fill(l, 16394, 2); /* the whole block is writable */
  assert_true(same(s, 100, 1));
  assert_true(same(l, 16394, 2));
  /* just under and at the threshold, header included */
  uint8_t *a = m->malloc(AMN_H2MEM_MAP_MIN - 17, m->mem_user_data);
  uint8_t *b = m->malloc(AMN_H2MEM_MAP_MIN - 16, m->mem_user_data);
  assert_false(amn_h2_mem_is_mapped(a));
  assert_true(amn_h2_mem_is_mapped(b));
  m->free(a, m->mem_user_data);
  m->free(b, m->mem_user_data);
  m->free(s, m->mem_user_data);
  m->free(l, m->mem_user_data);
  m->free(NULL, m->mem_user_data);
}

static void test_zeroed(void **st) {
  (void)st;
  nghttp2_mem *m = amn_h2_mem();
  for (size_t n = 16; n <= 65536; n *= 4) {
    /* dirty the heap first, so a small calloc that forgot to clear would show */
    uint8_t *d = m->malloc(n, m->mem_user_data);
    memset(d, 0xa5, n);
    m->free(d, m->mem_user_data);
    uint8_t *z = m->calloc(n / 16, 16, m->mem_user_data);
    assert_non_null(z);
    for (size_t i = 0; i < n; i++) assert_int_equal(z[i], 0);
    m->free(z, m->mem_user_data);
  }
  assert_null(m->calloc(SIZE_MAX / 8, 16, m->mem_user_data)); /* k * n overflows */
  assert_null(m->malloc(SIZE_MAX - 8, m->mem_user_data));
}

static void test_resize(void **st) {
  (void)st;
  nghttp2_mem *m = amn_h2_mem();
  uint8_t *p = m->realloc(NULL, 64, m->mem_user_data);
  assert_non_null(p);
  fill(p, 64, 3);
  p = m->realloc(p, 1000, m->mem_user_data); /* small to small */
  assert_false(amn_h2_mem_is_mapped(p));
  assert_true(same(p, 64, 3));
  fill(p, 1000, 4);
  p = m->realloc(p, 20000, m->mem_user_data); /* small to mapped */
  assert_true(amn_h2_mem_is_mapped(p));
  assert_true(same(p, 1000, 4));
  fill(p, 20000, 5);
  p = m->realloc(p, 40000, m->mem_user_data); /* mapped to mapped */
  assert_true(amn_h2_mem_is_mapped(p));
  assert_true(same(p, 20000, 5));
  p = m->realloc(p, 500, m->mem_user_data); /* mapped to small */
  assert_false(amn_h2_mem_is_mapped(p));
  assert_true(same(p, 500, 5));
  assert_null(m->realloc(p, SIZE_MAX - 4, m->mem_user_data)); /* refused: p stays valid */
  assert_true(same(p, 500, 5));
  m->free(p, m->mem_user_data);
}

static ssize_t no_send(nghttp2_session *s, const uint8_t *d, size_t n, int f, void *ud) {
  (void)s, (void)d, (void)f, (void)ud;
  return (ssize_t)n;
}

/* A server session on it: the connection preface's SETTINGS goes out, a
 * client preface and SETTINGS come in, the session goes away. */
static void test_session(void **st) {
  (void)st;
  nghttp2_session_callbacks *cbs;
  assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
  nghttp2_session_callbacks_set_send_callback(cbs, no_send);
  nghttp2_session *s;
  assert_int_equal(nghttp2_session_server_new3(&s, cbs, NULL, NULL, amn_h2_mem()), 0);
  nghttp2_session_callbacks_del(cbs);
  assert_int_equal(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0), 0);
  assert_int_equal(nghttp2_session_send(s), 0);
  static const uint8_t in[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
  assert_int_equal(nghttp2_session_mem_recv(s, in, sizeof in - 1), (ssize_t)(sizeof in - 1));
  assert_int_equal(nghttp2_session_send(s), 0);
  nghttp2_session_del(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_small_and_large),
      cmocka_unit_test(test_zeroed),
      cmocka_unit_test(test_resize),
      cmocka_unit_test(test_session),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
