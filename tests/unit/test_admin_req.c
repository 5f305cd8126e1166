/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* cmocka tests of the admin listener's request routing (src/server/admin_req.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/admin_req.h"

static amn_admin_route route(const char *s, bool *head) { return amn_admin_route_request(s, strlen(s), head); }

static void test_routes(void **st) {
  (void)st;
  bool head = true;
  assert_int_equal(route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &head), AMN_ADMIN_METRICS);
  assert_false(head);
  assert_int_equal(route("HEAD /metrics?x=1 HTTP/1.0\n\n", &head), AMN_ADMIN_METRICS);
  assert_true(head);
  assert_int_equal(route("GET /healthz HTTP/1.1\r\n", &head), AMN_ADMIN_HEALTHZ);
  assert_int_equal(route("GET  /healthz\tHTTP/1.1\r\n", &head), AMN_ADMIN_HEALTHZ); /* liberal in spaces */
  assert_int_equal(route("GET / HTTP/1.1\r\n", &head), AMN_ADMIN_NOT_FOUND);
  assert_int_equal(route("GET /metricsx HTTP/1.1\r\n", &head), AMN_ADMIN_NOT_FOUND);
  assert_int_equal(route("POST /metrics HTTP/1.1\r\n", &head), AMN_ADMIN_BAD_METHOD);
  assert_int_equal(route("get /metrics HTTP/1.1\r\n", &head), AMN_ADMIN_BAD_METHOD); /* methods are case-sensitive */
}

static void test_bad_requests(void **st) {
  (void)st;
  bool head;
  assert_int_equal(route("GET /metrics\r\n", &head), AMN_ADMIN_BAD_REQUEST);
  assert_int_equal(route("GET /metrics HTTP/2\r\n", &head), AMN_ADMIN_BAD_REQUEST);
  assert_int_equal(route("GET /metrics HTTP/1.o\r\n", &head), AMN_ADMIN_BAD_REQUEST);
  assert_int_equal(route("GET /metrics HTTP/1.10\r\n", &head), AMN_ADMIN_BAD_REQUEST);
  assert_int_equal(route("GET /metrics HTTP/1.1 extra\r\n", &head), AMN_ADMIN_BAD_REQUEST);
  assert_int_equal(route("\r\n", &head), AMN_ADMIN_BAD_REQUEST);
  assert_int_equal(route("GETTINGTOOLONGMETHOD /metrics HTTP/1.1\r\n", &head), AMN_ADMIN_BAD_REQUEST);
  static const char nul[] = "GET /met\0rics HTTP/1.1\r\n";
  assert_int_equal(amn_admin_route_request(nul, sizeof nul - 1, &head), AMN_ADMIN_BAD_REQUEST);
  char longt[400] = "GET /";
  memset(longt + 5, 'a', 300);
  strcpy(longt + 305, " HTTP/1.1\r\n");
  assert_int_equal(route(longt, &head), AMN_ADMIN_BAD_REQUEST);
}

static void test_incomplete_and_too_large(void **st) {
  (void)st;
  bool head;
  assert_int_equal(route("", &head), AMN_ADMIN_INCOMPLETE);
  assert_int_equal(route("GET /metrics HTTP/1.1", &head), AMN_ADMIN_INCOMPLETE);
  static char big[AMN_ADMIN_REQ_MAX];
  memset(big, 'A', sizeof big);
  assert_int_equal(amn_admin_route_request(big, sizeof big, &head), AMN_ADMIN_TOO_LARGE);
  assert_int_equal(amn_admin_route_request(big, sizeof big - 1, &head), AMN_ADMIN_INCOMPLETE);
  assert_false(amn_admin_request_complete("GET / HTTP/1.1\r\n", 16));
  assert_true(amn_admin_request_complete("GET / HTTP/1.1\r\n\r\n", 18));
  assert_true(amn_admin_request_complete("GET / HTTP/1.1\n\n", 16));
  assert_false(amn_admin_request_complete("\r\n\r", 3));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_routes),
      cmocka_unit_test(test_bad_requests),
      cmocka_unit_test(test_incomplete_and_too_large),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
