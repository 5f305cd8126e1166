/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Zero-copy QueryRequest/QueryResponse codec, cross-checked against the
 * protobuf-c generated code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "amaters.pb-c.h"
#include "amn/proto.h"

static uint8_t *pattern(size_t n, unsigned seed) {
  uint8_t *p = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 131 + seed);
  return p;
}

static const size_t sizes[] = {0, 1, 2, 127, 128, 300, 16383, 16384, 70000};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* encode -> decode, and encode -> protobuf-c unpack */
static void test_encode_cross(void **state) {
  (void)state;
  for (size_t i = 0; i < NSIZES; i++) {
    for (size_t j = 0; j < NSIZES; j++) {
      size_t l1 = sizes[i], l2 = sizes[j];
      uint8_t *f1 = pattern(l1, 1), *f2 = pattern(l2, 2);
      size_t n = amn_pair_encoded_size(l1, l2);
      uint8_t *buf = malloc(n + 1);
      assert_int_equal(amn_pair_encode(buf, f1, l1, f2, l2), n);

      amn_pair_view v;
      assert_int_equal(amn_pair_decode(buf, n, &v), 0);
      assert_int_equal(v.f1_len, l1);
      assert_int_equal(v.f2_len, l2);
      if (l1) {
        assert_true(v.f1 >= buf && v.f1 + l1 <= buf + n); /* a view, not a copy */
        assert_memory_equal(v.f1, f1, l1);
      }
      if (l2) assert_memory_equal(v.f2, f2, l2);

      Amaters__V1__QueryRequest *q = amaters__v1__query_request__unpack(NULL, n, buf);
      assert_non_null(q);
      assert_int_equal(q->query_bytes.len, l1);
      assert_int_equal(q->client_signature.len, l2);
      if (l1) assert_memory_equal(q->query_bytes.data, f1, l1);
      if (l2) assert_memory_equal(q->client_signature.data, f2, l2);
      /* protobuf-c produces the identical encoding */
      assert_int_equal(amaters__v1__query_request__get_packed_size(q), n);
      uint8_t *again = malloc(n + 1);
      assert_int_equal(amaters__v1__query_request__pack(q, again), n);
      assert_memory_equal(again, buf, n);
      amaters__v1__query_request__free_unpacked(q, NULL);
      free(again);
      free(buf);
      free(f1);
      free(f2);
    }
  }
}

/* protobuf-c pack -> decode (QueryResponse too) */
static void test_decode_cross(void **state) {
  (void)state;
  for (size_t i = 0; i < NSIZES; i++) {
    size_t l1 = sizes[i], l2 = sizes[NSIZES - 1 - i];
    uint8_t *f1 = pattern(l1, 3), *f2 = pattern(l2, 4);
    Amaters__V1__QueryResponse r = AMATERS__V1__QUERY_RESPONSE__INIT;
    r.result_bytes.data = f1;
    r.result_bytes.len = l1;
    r.server_proof.data = f2;
    r.server_proof.len = l2;
    size_t n = amaters__v1__query_response__get_packed_size(&r);
    assert_int_equal(n, amn_pair_encoded_size(l1, l2));
    uint8_t *buf = malloc(n + 1);
    assert_int_equal(amaters__v1__query_response__pack(&r, buf), n);
    amn_pair_view v;
    assert_int_equal(amn_pair_decode(buf, n, &v), 0);
    assert_int_equal(v.f1_len, l1);
    assert_int_equal(v.f2_len, l2);
    if (l1) assert_memory_equal(v.f1, f1, l1);
    if (l2) assert_memory_equal(v.f2, f2, l2);
    free(buf);
    free(f1);
    free(f2);
  }
}

static void test_empty(void **state) {
  (void)state;
  assert_int_equal(amn_pair_encoded_size(0, 0), 0);
  uint8_t out[1] = {0xee};
  assert_int_equal(amn_pair_encode(out, NULL, 0, NULL, 0), 0);
  assert_int_equal(out[0], 0xee);
  amn_pair_view v;
  memset(&v, 0x55, sizeof v);
  assert_int_equal(amn_pair_decode(out, 0, &v), 0);
  assert_null(v.f1);
  assert_null(v.f2);
  assert_int_equal(v.f1_len, 0);
  assert_int_equal(v.f2_len, 0);
  /* an explicitly present empty field */
  const uint8_t e[] = {0x0a, 0x00, 0x12, 0x01, 'z'};
  assert_int_equal(amn_pair_decode(e, sizeof e, &v), 0);
  assert_int_equal(v.f1_len, 0);
  assert_int_equal(v.f2_len, 1);
  assert_int_equal(v.f2[0], 'z');
  /* exact sizes: tag + varint length + data */
  assert_int_equal(amn_pair_encoded_size(127, 0), 129);
  assert_int_equal(amn_pair_encoded_size(128, 0), 131);
  assert_int_equal(amn_pair_encoded_size(0, 16384), 16388);
}

/* Unknown fields of every proto3 wire type are skipped, by us and by
 * protobuf-c alike; a repeated field: last one wins. */
static void test_unknown_fields(void **state) {
  (void)state;
  const uint8_t buf[] = {
      0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, /* f3 varint, 10 bytes */
      0x0a, 0x03, 'a', 'b', 'c',                                        /* f1 */
      0x79, 1, 2, 3, 4, 5, 6, 7, 8,                                     /* f15 fixed64 */
      0xa2, 0x06, 0x02, 0x0a, 0x00,                                     /* f100 bytes */
      0xfd, 0xff, 0xff, 0xff, 0x0f, 9, 9, 9, 9,                         /* f536870911 fixed32 */
      0x12, 0x02, 'x', 'y',                                             /* f2 */
      0x20, 0x00,                                                       /* f4 varint */
      0x0a, 0x02, 'd', 'e',                                             /* f1 again */
  };
  amn_pair_view v;
  assert_int_equal(amn_pair_decode(buf, sizeof buf, &v), 0);
  assert_int_equal(v.f1_len, 2);
  assert_memory_equal(v.f1, "de", 2);
  assert_int_equal(v.f2_len, 2);
  assert_memory_equal(v.f2, "xy", 2);
  Amaters__V1__QueryRequest *q = amaters__v1__query_request__unpack(NULL, sizeof buf, buf);
  assert_non_null(q);
  assert_int_equal(q->query_bytes.len, 2);
  assert_memory_equal(q->query_bytes.data, "de", 2);
  assert_memory_equal(q->client_signature.data, "xy", 2);
  amaters__v1__query_request__free_unpacked(q, NULL);
}

/* Every truncation of a message fails unless it falls on a field boundary. */
static void test_truncated(void **state) {
  (void)state;
  uint8_t *f1 = pattern(200, 5);
  uint8_t buf[220];
  size_t n = amn_pair_encode(buf, f1, 200, (const uint8_t *)"sig", 3);
  assert_int_equal(n, 1 + 2 + 200 + 1 + 1 + 3);
  for (size_t k = 0; k < n; k++) {
    amn_pair_view v;
    int rc = amn_pair_decode(buf, k, &v);
    bool boundary = k == 0 || k == 203;
    assert_int_equal(rc, boundary ? 0 : AMN_EPROTO);
    Amaters__V1__QueryRequest *q = amaters__v1__query_request__unpack(NULL, k, buf);
    assert_int_equal(q != NULL, boundary);
    if (q) amaters__v1__query_request__free_unpacked(q, NULL);
  }
  free(f1);
}

static void test_malformed(void **state) {
  (void)state;
  static const struct { uint8_t b[16]; size_t n; } bad[] = {
      {{0x08, 0x01}, 2},                               /* field 1 as varint */
      {{0x15, 1, 2, 3, 4}, 5},                         /* field 2 as fixed32 */
      {{0x09, 1, 2, 3, 4, 5, 6, 7, 8}, 9},             /* field 1 as fixed64 */
      {{0x1b, 0x1c}, 2},                               /* group start/end (wire 3/4) */
      {{0x1c}, 1},                                     /* group end */
      {{0x1e, 0x00}, 2},                               /* wire type 6 */
      {{0x1f, 0x00}, 2},                               /* wire type 7 */
      {{0x02, 0x00}, 2},                               /* field number 0 */
      {{0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, 12}, /* 11-byte varint */
      {{0x18, 0x80}, 2},                               /* truncated varint */
      {{0x0a, 0x05, 'a'}, 3},                          /* length past the end */
      {{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 'a'}, 11}, /* huge length */
      {{0x22, 0x02, 'a'}, 3},                          /* unknown bytes field past the end */
      {{0x29, 1, 2, 3}, 4},                            /* truncated fixed64 */
      {{0x2d, 1, 2}, 3},                               /* truncated fixed32 */
      {{0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00}, 7}, /* tag beyond 32 bits */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    amn_pair_view v;
    assert_int_equal(amn_pair_decode(bad[i].b, bad[i].n, &v), AMN_EPROTO);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_encode_cross),   cmocka_unit_test(test_decode_cross),
      cmocka_unit_test(test_empty),          cmocka_unit_test(test_unknown_fields),
      cmocka_unit_test(test_truncated),      cmocka_unit_test(test_malformed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
