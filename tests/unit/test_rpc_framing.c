/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Deframer: prefix/message split at every byte boundary, batching, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rpc/rpc.h"

#define MAX_MSGS 64

typedef struct collector {
  size_t count;
  uint8_t *msg[MAX_MSGS];
  size_t len[MAX_MSGS];
  bool compressed[MAX_MSGS];
  size_t abort_after; /* return 99 on this message number (1-based); 0 = never */
} collector;

static int collect(void *ud, uint8_t *msg, size_t len, bool compressed) {
  collector *c = ud;
  assert_true(c->count < MAX_MSGS);
  if (len == 0) assert_null(msg);
  else assert_non_null(msg);
  c->msg[c->count] = msg;
  c->len[c->count] = len;
  c->compressed[c->count] = compressed;
  c->count++;
  return c->abort_after && c->count == c->abort_after ? 99 : 0;
}

static void collector_free(collector *c) {
  for (size_t i = 0; i < c->count; i++) free(c->msg[i]);
  memset(c, 0, sizeof *c);
}

/* Builds a stream: frames of the given lengths, bodies filled with a
 * pattern depending on index; flag byte per frame. */
static size_t build_stream(uint8_t *out, const size_t *lens, const uint8_t *flags, size_t n) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    amn_frame_prefix(out + o, lens[i]);
    out[o] = flags ? flags[i] : 0;
    o += 5;
    for (size_t j = 0; j < lens[i]; j++) out[o++] = (uint8_t)(i * 31 + j * 7);
  }
  return o;
}

static void check_msgs(const collector *c, const size_t *lens, const uint8_t *flags, size_t n) {
  assert_int_equal(c->count, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(c->len[i], lens[i]);
    assert_int_equal(c->compressed[i], flags ? flags[i] == 1 : false);
    for (size_t j = 0; j < lens[i]; j++) assert_int_equal(c->msg[i][j], (uint8_t)(i * 31 + j * 7));
  }
}

static void test_prefix(void **state) {
  (void)state;
  uint8_t p[5];
  amn_frame_prefix(p, 0x01020304);
  uint8_t want[5] = {0, 1, 2, 3, 4};
  assert_memory_equal(p, want, 5);
  amn_frame_prefix(p, 0);
  uint8_t zero[5] = {0};
  assert_memory_equal(p, zero, 5);
}

/* Every split of the stream into two chunks, and into three chunks. */
static void test_every_split(void **state) {
  (void)state;
  const size_t lens[] = {3, 0, 7, 1};
  uint8_t s[64];
  size_t n = build_stream(s, lens, NULL, 4);
  for (size_t a = 0; a <= n; a++) {
    for (size_t b = a; b <= n; b++) {
      amn_deframer d;
      collector c = {0};
      amn_deframer_init(&d, 100);
      assert_int_equal(amn_deframer_feed(&d, s, a, collect, &c), 0);
      assert_int_equal(amn_deframer_feed(&d, s + a, b - a, collect, &c), 0);
      assert_int_equal(amn_deframer_feed(&d, s + b, n - b, collect, &c), 0);
      assert_true(amn_deframer_idle(&d));
      check_msgs(&c, lens, NULL, 4);
      collector_free(&c);
      amn_deframer_free(&d);
    }
  }
}

/* One byte at a time; idle only at message boundaries. */
static void test_byte_by_byte(void **state) {
  (void)state;
  const size_t lens[] = {10, 0, 300};
  uint8_t s[400];
  size_t n = build_stream(s, lens, NULL, 3);
  size_t bounds[] = {15, 20, n};
  amn_deframer d;
  collector c = {0};
  amn_deframer_init(&d, 1000);
  assert_true(amn_deframer_idle(&d));
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(amn_deframer_feed(&d, s + i, 1, collect, &c), 0);
    bool boundary = i + 1 == bounds[0] || i + 1 == bounds[1] || i + 1 == bounds[2];
    assert_int_equal(amn_deframer_idle(&d), boundary);
  }
  check_msgs(&c, lens, NULL, 3);
  collector_free(&c);
  amn_deframer_free(&d);
}

static void test_many_in_one_chunk(void **state) {
  (void)state;
  size_t lens[50];
  for (size_t i = 0; i < 50; i++) lens[i] = i % 5 == 0 ? 0 : i;
  uint8_t *s = malloc(50 * 5 + 50 * 50);
  size_t n = build_stream(s, lens, NULL, 50);
  amn_deframer d;
  collector c = {0};
  amn_deframer_init(&d, 49);
  assert_int_equal(amn_deframer_feed(&d, s, n, collect, &c), 0);
  assert_true(amn_deframer_idle(&d));
  check_msgs(&c, lens, NULL, 50);
  collector_free(&c);
  amn_deframer_free(&d);
  free(s);
}

static void test_zero_length_only(void **state) {
  (void)state;
  const uint8_t s[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
  amn_deframer d;
  collector c = {0};
  amn_deframer_init(&d, 0);
  assert_int_equal(amn_deframer_feed(&d, s, sizeof s, collect, &c), 0);
  assert_int_equal(c.count, 2);
  assert_int_equal(c.len[0], 0);
  assert_false(c.compressed[0]);
  assert_true(c.compressed[1]);
  assert_true(amn_deframer_idle(&d));
  amn_deframer_free(&d);
}

static void test_compressed_flag(void **state) {
  (void)state;
  const size_t lens[] = {4, 2, 0};
  const uint8_t flags[] = {1, 0, 1};
  uint8_t s[64];
  size_t n = build_stream(s, lens, flags, 3);
  amn_deframer d;
  collector c = {0};
  amn_deframer_init(&d, 10);
  assert_int_equal(amn_deframer_feed(&d, s, n, collect, &c), 0);
  check_msgs(&c, lens, flags, 3);
  collector_free(&c);
  amn_deframer_free(&d);
}

static void test_bad_flag(void **state) {
  (void)state;
  for (int flag = 2; flag <= 255; flag += 253) {
    const uint8_t good[] = {0, 0, 0, 0, 1, 'x'};
    uint8_t bad[] = {(uint8_t)flag, 0, 0, 0, 1, 'y'};
    amn_deframer d;
    collector c = {0};
    amn_deframer_init(&d, 10);
    assert_int_equal(amn_deframer_feed(&d, good, sizeof good, collect, &c), 0);
    assert_int_equal(amn_deframer_feed(&d, bad, 3, collect, &c), 0); /* prefix incomplete */
    assert_int_equal(amn_deframer_feed(&d, bad + 3, 3, collect, &c), AMN_EPROTO);
    assert_int_equal(c.count, 1);
    collector_free(&c);
    amn_deframer_free(&d);
  }
}

/* Oversize is refused as soon as the prefix is complete, before any body
 * byte arrives and without allocating. */
static void test_oversize(void **state) {
  (void)state;
  amn_deframer d;
  collector c = {0};
  amn_deframer_init(&d, 1000);
  uint8_t p[5];
  amn_frame_prefix(p, 1000);
  assert_int_equal(amn_deframer_feed(&d, p, 5, collect, &c), 0); /* exactly max: fine */
  assert_null(d.buf); /* nothing reserved before the body arrives */
  assert_false(amn_deframer_idle(&d));
  amn_deframer_free(&d);
  assert_null(d.buf);
  assert_true(amn_deframer_idle(&d));

  amn_deframer_init(&d, 1000);
  amn_frame_prefix(p, 1001);
  assert_int_equal(amn_deframer_feed(&d, p, 4, collect, &c), 0);
  assert_int_equal(amn_deframer_feed(&d, p + 4, 1, collect, &c), AMN_ETOOBIG);
  assert_null(d.buf);
  assert_int_equal(c.count, 0);
  /* the status names both sizes */
  char msg[128];
  assert_int_equal(amn_deframer_status(&d, AMN_ETOOBIG, msg, sizeof msg), AMN_STATUS_RESOURCE_EXHAUSTED);
  assert_string_equal(msg, "received message larger than max (1001 vs. 1000 bytes)");
  amn_deframer_free(&d);

  /* 4 GiB - 1 announced with a default limit: refused, nothing allocated */
  amn_deframer_init(&d, AMN_DEFAULT_MAX_MESSAGE);
  const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3};
  assert_int_equal(amn_deframer_feed(&d, huge, sizeof huge, collect, &c), AMN_ETOOBIG);
  assert_null(d.buf);
  amn_deframer_free(&d);
}

/* Each deframer error has one status, the same on server and client. */
static void test_error_status(void **state) {
  (void)state;
  amn_deframer d;
  amn_deframer_init(&d, 10);
  char msg[64];
  assert_int_equal(amn_deframer_status(&d, AMN_EPROTO, msg, sizeof msg), AMN_STATUS_INTERNAL);
  assert_string_equal(msg, "invalid message flag byte");
  assert_int_equal(amn_deframer_status(&d, AMN_ENOMEM, msg, sizeof msg), AMN_STATUS_RESOURCE_EXHAUSTED);
  assert_string_equal(msg, "out of memory for a received message");
  assert_int_equal(amn_deframer_status(&d, 0, msg, sizeof msg), AMN_STATUS_OK);
  assert_string_equal(msg, "");
  assert_int_equal(amn_deframer_status(&d, 1, msg, sizeof msg), AMN_STATUS_OK); /* a callback's own stop */
  /* a small buffer is truncated, never overrun */
  char tiny[8];
  assert_int_equal(amn_deframer_status(&d, AMN_EPROTO, tiny, sizeof tiny), AMN_STATUS_INTERNAL);
  assert_string_equal(tiny, "invalid");
  amn_deframer_free(&d);
}

static void test_callback_abort(void **state) {
  (void)state;
  const size_t lens[] = {1, 2, 3};
  uint8_t s[64];
  size_t n = build_stream(s, lens, NULL, 3);
  amn_deframer d;
  collector c = {.abort_after = 2};
  amn_deframer_init(&d, 10);
  assert_int_equal(amn_deframer_feed(&d, s, n, collect, &c), 99);
  assert_int_equal(c.count, 2); /* the third message was not delivered */
  collector_free(&c);
  amn_deframer_free(&d);
}

/* A partial message is freed by amn_deframer_free (ASan checks leaks). */
/* A large announced message holds memory in proportion to what arrived
 * (at most twice, or one chunk), not to what was announced; the message
 * delivered is still whole and exact. */
static void test_grows_with_received(void **state) {
  (void)state;
  const size_t big = 64u << 20; /* 64 MiB announced */
  amn_deframer d;
  collector c = {0};
  amn_deframer_init(&d, big);
  uint8_t p[5];
  amn_frame_prefix(p, big);
  assert_int_equal(amn_deframer_feed(&d, p, 5, collect, &c), 0);
  uint8_t chunk[1000];
  for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (uint8_t)i;
  assert_int_equal(amn_deframer_feed(&d, chunk, 1, collect, &c), 0);
  assert_int_equal(d.cap, AMN_DEFRAMER_CHUNK); /* one byte sent: one chunk held */
  size_t sent = 1;
  while (sent < 3u << 20) { /* 3 MiB of the 64 */
    assert_int_equal(amn_deframer_feed(&d, chunk, sizeof chunk, collect, &c), 0);
    sent += sizeof chunk;
    assert_true(d.cap <= 2 * sent || d.cap == AMN_DEFRAMER_CHUNK);
    assert_true(d.cap >= sent);
  }
  assert_int_equal(c.count, 0);
  amn_deframer_free(&d);
  /* a message just over one chunk arrives whole and exact, in odd pieces */
  amn_deframer_init(&d, big);
  const size_t n = AMN_DEFRAMER_CHUNK * 3 + 7;
  uint8_t *m = malloc(5 + n);
  amn_frame_prefix(m, n);
  for (size_t i = 0; i < n; i++) m[5 + i] = (uint8_t)(i * 31 + 7);
  for (size_t off = 0; off < 5 + n;) {
    size_t k = off % 9973 + 1;
    if (k > 5 + n - off) k = 5 + n - off;
    assert_int_equal(amn_deframer_feed(&d, m + off, k, collect, &c), 0);
    off += k;
  }
  assert_int_equal(c.count, 1);
  assert_int_equal(c.len[0], n);
  assert_memory_equal(c.msg[0], m + 5, n);
  assert_true(amn_deframer_idle(&d));
  collector_free(&c);
  free(m);
  amn_deframer_free(&d);
}

static void test_partial_free(void **state) {
  (void)state;
  const size_t lens[] = {50};
  uint8_t s[64];
  build_stream(s, lens, NULL, 1);
  amn_deframer d;
  collector c = {0};
  amn_deframer_init(&d, 100);
  assert_int_equal(amn_deframer_feed(&d, s, 20, collect, &c), 0);
  assert_false(amn_deframer_idle(&d));
  assert_int_equal(c.count, 0);
  amn_deframer_free(&d);
  amn_deframer_init(&d, 100);
  assert_int_equal(amn_deframer_feed(&d, s, 3, collect, &c), 0);
  assert_false(amn_deframer_idle(&d)); /* inside the prefix */
  amn_deframer_free(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_prefix), cmocka_unit_test(test_error_status),
               cmocka_unit_test(test_every_split),
      cmocka_unit_test(test_byte_by_byte),    cmocka_unit_test(test_many_in_one_chunk),
      cmocka_unit_test(test_zero_length_only), cmocka_unit_test(test_compressed_flag),
      cmocka_unit_test(test_bad_flag),        cmocka_unit_test(test_oversize),
      cmocka_unit_test(test_callback_abort),  cmocka_unit_test(test_partial_free),
      cmocka_unit_test(test_grows_with_received),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
