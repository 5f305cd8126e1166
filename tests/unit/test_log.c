/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Log lines: the JSON format (escaping, fields, one object per line), the
 * text format's quoting of field values, the level changed at run time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "util/log.h"

static char last[4096];
static int nlines;
static void sink(amn_log_level level, const char *line, void *ud) {
  (void)level; (void)ud;
  snprintf(last, sizeof last, "%s", line);
  nlines++;
}

static int setup(void **state) {
  (void)state;
  amn_log_set_sink(sink, NULL);
  amn_log_set_level(AMN_LOG_INFO);
  nlines = 0;
  last[0] = 0;
  return 0;
}
static int teardown(void **state) {
  (void)state;
  amn_log_set_sink(NULL, NULL);
  amn_log_set_format(AMN_LOG_FORMAT_TEXT);
  amn_log_set_level(AMN_LOG_INFO);
  return 0;
}

static const amn_log_field fields[] = {
    {"peer", AMN_LF_STR, "CN=a \"b\",O=c\\d", 0},
    {"method", AMN_LF_STR, "/x\ny\x01\x7f\xc3\xa9\xff", 0},
    {"code", AMN_LF_INT, NULL, -4},
    {"deadline_ms", AMN_LF_NULL, NULL, 0},
    {"transport", AMN_LF_STR, "h2", 0},
};

static void test_json(void **state) {
  (void)state;
  amn_log_set_format(AMN_LOG_FORMAT_JSON);
  amn_log_fields(AMN_LOG_INFO, "access", fields, sizeof fields / sizeof fields[0]);
  assert_int_equal(nlines, 1);
  /* {"time":"YYYY-MM-DDTHH:MM:SS.mmmZ", then the rest exactly */
  assert_memory_equal(last, "{\"time\":\"", 9);
  assert_int_equal(strlen(last) > 9 + 24, 1);
  assert_int_equal(last[9 + 23], 'Z');
  assert_string_equal(last + 9 + 24,
                      "\",\"level\":\"info\",\"source\":\"amaters-net\",\"msg\":\"access\","
                      "\"peer\":\"CN=a \\\"b\\\",O=c\\\\d\",\"method\":\"/x\\u000ay\\u0001\\u007f\xc3\xa9\\ufffd\","
                      "\"code\":-4,\"deadline_ms\":null,\"transport\":\"h2\"}");
  /* library messages too, with their level; a message's quotes escaped */
  amn_log_write(AMN_LOG_WARN, "say \"%s\"", "hi");
  assert_non_null(strstr(last, "\"level\":\"warn\",\"source\":\"amaters-net\",\"msg\":\"say \\\"hi\\\"\"}"));
  amn_log_message(AMN_LOG_ERROR, "prog", "x");
  assert_non_null(strstr(last, "\"level\":\"error\",\"source\":\"prog\",\"msg\":\"x\"}"));
}

/* Values far longer than a line: cut, and the line is still one object. */
static void test_json_long(void **state) {
  (void)state;
  amn_log_set_format(AMN_LOG_FORMAT_JSON);
  static char big[20000];
  memset(big, '"', sizeof big - 1); /* every byte escaped: twice the room */
  amn_log_field f[] = {{"a", AMN_LF_STR, big, 0}, {"b", AMN_LF_STR, big, 0}, {"n", AMN_LF_INT, NULL, INT64_MIN},
                       {"c", AMN_LF_STR, big, 0}, {"z", AMN_LF_NULL, NULL, 0}};
  amn_log_fields(AMN_LOG_INFO, big, f, sizeof f / sizeof f[0]);
  size_t n = strlen(last);
  assert_true(n > 1000);
  assert_string_equal(last + n - strlen(",\"n\":-9223372036854775808,\"c\":\"...\",\"z\":null}"),
                      ",\"n\":-9223372036854775808,\"c\":\"...\",\"z\":null}");
  assert_non_null(strstr(last, "\"msg\":\"\\\"\\\""));
}

static void test_text(void **state) {
  (void)state;
  amn_log_fields(AMN_LOG_INFO, "access", fields, sizeof fields / sizeof fields[0]);
  assert_string_equal(last, "access peer=\"CN=a \\\"b\\\",O=c\\\\d\" method=\"/x\\ny\\x01\\x7f\xc3\xa9\xff\" code=-4 "
                            "deadline_ms=- transport=h2");
  amn_log_message(AMN_LOG_INFO, "prog", "n=%d", 5);
  assert_string_equal(last, "n=5");
}

static void test_level_runtime(void **state) {
  (void)state;
  amn_log_message(AMN_LOG_DEBUG, "prog", "hidden");
  assert_int_equal(nlines, 0);
  amn_log_set_level(AMN_LOG_DEBUG);
  assert_int_equal(amn_log_get_level(), AMN_LOG_DEBUG);
  amn_log_message(AMN_LOG_DEBUG, "prog", "shown");
  assert_int_equal(nlines, 1);
  assert_string_equal(last, "shown");
  amn_log_set_level(AMN_LOG_ERROR);
  amn_log_message(AMN_LOG_WARN, "prog", "hidden");
  assert_int_equal(nlines, 1);
  assert_string_equal(amn_log_level_name(AMN_LOG_WARN), "warn");
  assert_string_equal(amn_log_level_name((amn_log_level)9), "?");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_json, setup, teardown),
      cmocka_unit_test_setup_teardown(test_json_long, setup, teardown),
      cmocka_unit_test_setup_teardown(test_text, setup, teardown),
      cmocka_unit_test_setup_teardown(test_level_runtime, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
