/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Transport error / HTTP status -> gRPC status mappings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "rpc/rpc.h"

static void test_h2(void **state) {
  (void)state;
  static const amn_status_code want[] = {
      [0x0] = AMN_STATUS_INTERNAL,           /* NO_ERROR */
      [0x1] = AMN_STATUS_INTERNAL,           /* PROTOCOL_ERROR */
      [0x2] = AMN_STATUS_INTERNAL,           /* INTERNAL_ERROR */
      [0x3] = AMN_STATUS_INTERNAL,           /* FLOW_CONTROL_ERROR */
      [0x4] = AMN_STATUS_INTERNAL,           /* SETTINGS_TIMEOUT */
      [0x5] = AMN_STATUS_INTERNAL,           /* STREAM_CLOSED (no mapping) */
      [0x6] = AMN_STATUS_INTERNAL,           /* FRAME_SIZE_ERROR */
      [0x7] = AMN_STATUS_UNAVAILABLE,        /* REFUSED_STREAM */
      [0x8] = AMN_STATUS_CANCELLED,          /* CANCEL */
      [0x9] = AMN_STATUS_INTERNAL,           /* COMPRESSION_ERROR */
      [0xa] = AMN_STATUS_INTERNAL,           /* CONNECT_ERROR */
      [0xb] = AMN_STATUS_RESOURCE_EXHAUSTED, /* ENHANCE_YOUR_CALM */
      [0xc] = AMN_STATUS_PERMISSION_DENIED,  /* INADEQUATE_SECURITY */
      [0xd] = AMN_STATUS_INTERNAL,           /* HTTP_1_1_REQUIRED */
  };
  for (uint32_t e = 0; e < sizeof want / sizeof want[0]; e++)
    assert_int_equal(amn_status_from_h2_error(e), want[e]);
  assert_int_equal(amn_status_from_h2_error(0xe), AMN_STATUS_INTERNAL);
  assert_int_equal(amn_status_from_h2_error(0xffffffffu), AMN_STATUS_INTERNAL);
  assert_int_equal(amn_status_from_h2_error(0x107), AMN_STATUS_INTERNAL);
}

static void test_h3(void **state) {
  (void)state;
  assert_int_equal(amn_status_from_h3_error(0x10c), AMN_STATUS_CANCELLED);
  assert_int_equal(amn_status_from_h3_error(0x10b), AMN_STATUS_UNAVAILABLE);
  assert_int_equal(amn_status_from_h3_error(0x107), AMN_STATUS_RESOURCE_EXHAUSTED);
  const uint64_t other[] = {0, 7, 8, 0x100, 0x101, 0x102, 0x106, 0x108, 0x10d, 0x110, UINT64_MAX};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
    assert_int_equal(amn_status_from_h3_error(other[i]), AMN_STATUS_INTERNAL);
}

static void test_http(void **state) {
  (void)state;
  assert_int_equal(amn_status_from_http(400), AMN_STATUS_INTERNAL);
  assert_int_equal(amn_status_from_http(401), AMN_STATUS_UNAUTHENTICATED);
  assert_int_equal(amn_status_from_http(403), AMN_STATUS_PERMISSION_DENIED);
  assert_int_equal(amn_status_from_http(404), AMN_STATUS_UNIMPLEMENTED);
  assert_int_equal(amn_status_from_http(429), AMN_STATUS_UNAVAILABLE);
  assert_int_equal(amn_status_from_http(502), AMN_STATUS_UNAVAILABLE);
  assert_int_equal(amn_status_from_http(503), AMN_STATUS_UNAVAILABLE);
  assert_int_equal(amn_status_from_http(504), AMN_STATUS_UNAVAILABLE);
  const int other[] = {0, 100, 201, 204, 301, 302, 402, 405, 415, 418, 500, 501, 505, 999, -1};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
    assert_int_equal(amn_status_from_http(other[i]), AMN_STATUS_UNKNOWN);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_h2), cmocka_unit_test(test_h3),
                                     cmocka_unit_test(test_http)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
