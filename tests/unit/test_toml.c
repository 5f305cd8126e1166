/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Unit tests of the internal TOML 1.0 parser (src/util/toml.c): values,
 * DOM walking, line numbers of nodes and of errors, redefinition rules.
 * Conformance against toml-test is in tests/toml. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/toml.h"

static amn_toml_doc *parse(const char *s) {
  char err[256];
  int line = -1;
  amn_toml_doc *d = amn_toml_parse(s, strlen(s), err, sizeof err, &line);
  if (!d) fail_msg("unexpected parse error at line %d: %s\n--- input:\n%s", line, err);
  assert_int_equal(line, 0);
  return d;
}

/* Expects a parse error at `line` whose message contains `needle`. */
static void expect_error(const char *s, size_t len, int line, const char *needle) {
  char err[256] = "";
  int l = -1;
  amn_toml_doc *d = amn_toml_parse(s, len, err, sizeof err, &l);
  if (d) {
    amn_toml_free(d);
    fail_msg("accepted invalid TOML:\n%s", s);
  }
  if (l != line || !strstr(err, needle))
    fail_msg("error at line %d \"%s\"; expected line %d containing \"%s\"", l, err, line, needle);
}
#define EXPECT_ERR(s, line, needle) expect_error((s), strlen(s), (line), (needle))

static const amn_toml_node *path(const amn_toml_doc *d, const char *a, const char *b) {
  const amn_toml_node *n = amn_toml_get(amn_toml_root(d), a);
  assert_non_null(n);
  if (b) {
    n = amn_toml_get(n, b);
    assert_non_null(n);
  }
  return n;
}

static void test_scalars_and_lines(void **state) {
  (void)state;
  amn_toml_doc *d = parse("# comment\n"
                          "s = \"a\\tb\\u00e9\\U0001F600\"  # trailing comment\n"
                          "i = -1_000\n"
                          "h = 0xdead_BEEF\n"
                          "o = 0o755\n"
                          "b = 0b1010\n"
                          "f = 6.626e-34\n"
                          "t = true\n"
                          "\n"
                          "[tab]\n"
                          "lit = 'C:\\path'\n");
  const amn_toml_node *root = amn_toml_root(d);
  assert_int_equal(amn_toml_type_of(root), AMN_TOML_TABLE);
  assert_int_equal(amn_toml_count(root), 8);
  /* keys in insertion order */
  const char *order[] = {"s", "i", "h", "o", "b", "f", "t", "tab"};
  for (size_t i = 0; i < 8; i++) assert_string_equal(amn_toml_key_at(root, i, NULL), order[i]);
  size_t len;
  const amn_toml_node *s = path(d, "s", NULL);
  assert_int_equal(amn_toml_type_of(s), AMN_TOML_STRING);
  assert_string_equal(amn_toml_str(s, &len), "a\tb\xc3\xa9\xf0\x9f\x98\x80");
  assert_int_equal(len, 9);
  assert_int_equal(amn_toml_line(s), 2);
  assert_int_equal(amn_toml_int(path(d, "i", NULL)), -1000);
  assert_int_equal(amn_toml_int(path(d, "h", NULL)), 0xdeadbeef);
  assert_int_equal(amn_toml_int(path(d, "o", NULL)), 0755);
  assert_int_equal(amn_toml_int(path(d, "b", NULL)), 10);
  assert_true(fabs(amn_toml_float(path(d, "f", NULL)) - 6.626e-34) < 1e-45);
  assert_true(amn_toml_bool(path(d, "t", NULL)));
  assert_int_equal(amn_toml_line(path(d, "t", NULL)), 8);
  const amn_toml_node *tab = path(d, "tab", NULL);
  assert_int_equal(amn_toml_line(tab), 10);
  assert_string_equal(amn_toml_str(path(d, "tab", "lit"), NULL), "C:\\path");
  assert_int_equal(amn_toml_line(path(d, "tab", "lit")), 11);
  /* accessors on the wrong type */
  assert_null(amn_toml_str(path(d, "i", NULL), NULL));
  assert_int_equal(amn_toml_int(s), 0);
  assert_null(amn_toml_dt(s));
  assert_null(amn_toml_get(s, "x"));
  assert_null(amn_toml_at(root, 99));
  assert_string_equal(amn_toml_type_name(AMN_TOML_DATETIME_LOCAL), "datetime-local");
  amn_toml_free(d);
}

static void test_integer_limits(void **state) {
  (void)state;
  amn_toml_doc *d = parse("max = 9223372036854775807\nmin = -9223372036854775808\n"
                          "hmax = 0x7fffffffffffffff\nz = +0\n");
  assert_true(amn_toml_int(path(d, "max", NULL)) == INT64_MAX);
  assert_true(amn_toml_int(path(d, "min", NULL)) == INT64_MIN);
  assert_true(amn_toml_int(path(d, "hmax", NULL)) == INT64_MAX);
  assert_int_equal(amn_toml_int(path(d, "z", NULL)), 0);
  amn_toml_free(d);
  EXPECT_ERR("a = 1\nb = 9223372036854775808\n", 2, "does not fit in 64 bits");
  EXPECT_ERR("b = -9223372036854775809\n", 1, "does not fit in 64 bits");
  EXPECT_ERR("b = 0x8000000000000000\n", 1, "does not fit in 64 bits");
  EXPECT_ERR("b = 0b1_0000000000000000000000000000000000000000000000000000000000000000\n", 1, "64 bits");
  EXPECT_ERR("b = 1__0\n", 1, "'_' must be between two digits");
  EXPECT_ERR("b = 1_\n", 1, "'_' must be between two digits");
  EXPECT_ERR("b = 012\n", 1, "leading zeros");
  EXPECT_ERR("b = -0x1\n", 1, "sign is not allowed");
  EXPECT_ERR("b = 0X1\n", 1, "invalid number '0X1'");
}

static void test_floats(void **state) {
  (void)state;
  amn_toml_doc *d = parse("a = inf\nb = -inf\nc = nan\nd = +1.5e+3\ne = 1E2\nf = 0.0\ng = -0.0\nh = 3_1.4_1\n");
  assert_true(isinf(amn_toml_float(path(d, "a", NULL))) && amn_toml_float(path(d, "a", NULL)) > 0);
  assert_true(isinf(amn_toml_float(path(d, "b", NULL))) && amn_toml_float(path(d, "b", NULL)) < 0);
  assert_true(isnan(amn_toml_float(path(d, "c", NULL))));
  assert_true(amn_toml_float(path(d, "d", NULL)) == 1500.0);
  assert_true(amn_toml_float(path(d, "e", NULL)) == 100.0);
  assert_true(signbit(amn_toml_float(path(d, "g", NULL))));
  assert_true(amn_toml_float(path(d, "h", NULL)) == 31.41);
  assert_int_equal(amn_toml_type_of(path(d, "f", NULL)), AMN_TOML_FLOAT);
  amn_toml_free(d);
  EXPECT_ERR("x = 1.\n", 1, "expected a digit");
  EXPECT_ERR("x = .5\n", 1, "invalid value");
  EXPECT_ERR("x = 1e\n", 1, "expected a digit");
  EXPECT_ERR("x = 1.5.5\n", 1, "invalid number");
  EXPECT_ERR("x = infinity\n", 1, "invalid value 'infinity'");
  EXPECT_ERR("x = 1e_5\n", 1, "'_' must be between two digits");
}

static void test_strings(void **state) {
  (void)state;
  amn_toml_doc *d = parse("nul = \"a\\u0000b\"\n"
                          "ml = \"\"\"\n"
                          "one\r\n"
                          "two \\\n"
                          "     three\"\"\"\"\"\n"
                          "lit = '''\n"
                          "raw \\n ''text'''\n"
                          "after = 1\n");
  size_t len;
  const char *s = amn_toml_str(path(d, "nul", NULL), &len);
  assert_int_equal(len, 3);
  assert_memory_equal(s, "a\0b", 3);
  /* first newline trimmed, CRLF -> LF, line-ending backslash, two extra quotes */
  assert_string_equal(amn_toml_str(path(d, "ml", NULL), NULL), "one\ntwo three\"\"");
  assert_string_equal(amn_toml_str(path(d, "lit", NULL), NULL), "raw \\n ''text");
  assert_int_equal(amn_toml_line(path(d, "ml", NULL)), 2);
  assert_int_equal(amn_toml_line(path(d, "lit", NULL)), 6);
  assert_int_equal(amn_toml_line(path(d, "after", NULL)), 8); /* lines counted inside strings */
  amn_toml_free(d);

  EXPECT_ERR("a = 1\nb = \"unterminated\nc = 2\n", 2, "newline in a single-line basic string");
  EXPECT_ERR("a = \"\\q\"\n", 1, "invalid escape");
  EXPECT_ERR("a = \"\\x41\"\n", 1, "invalid escape"); /* TOML 1.1 only */
  EXPECT_ERR("a = \"\\uD800\"\n", 1, "not a Unicode scalar value");
  EXPECT_ERR("a = \"\\U00110000\"\n", 1, "not a Unicode scalar value");
  EXPECT_ERR("a = \"\\u12\"\n", 1, "4 hex digits");
  EXPECT_ERR("a = \"\"\"x\n\ny\n", 1, "unterminated multi-line string");
  EXPECT_ERR("a = '''x''''''\n", 1, "too many quotes");
  EXPECT_ERR("a = \"tab\tok\"\nb = \"bell\a\"\n", 2, "control character U+0007");
  EXPECT_ERR("a = 1\n\n# comment \x7f\n", 3, "control character U+007F");
  EXPECT_ERR("a = 1\r\nb = 2\rc = 3\n", 2, "bare carriage return");
  EXPECT_ERR("a = 1\nb = \"\xc3\x28\"\n", 2, "invalid UTF-8");
  EXPECT_ERR("a = \"\xed\xa0\x80\"\n", 1, "invalid UTF-8");  /* encoded surrogate */
  EXPECT_ERR("a = \"\xc0\xaf\"\n", 1, "invalid UTF-8");      /* overlong */
  EXPECT_ERR("a = \"\xf4\x90\x80\x80\"\n", 1, "invalid UTF-8"); /* > U+10FFFF */
  expect_error("a = \"x\0\"\n", 8, 1, "control character U+0000");
}

static void test_datetimes(void **state) {
  (void)state;
  amn_toml_doc *d = parse("odt = 1979-05-27T07:32:00.999999999999-07:30\n"
                          "z = 1979-05-27 07:32:00z\n"
                          "ldt = 2000-02-29t23:59:60\n"
                          "ld = 1979-05-27\n"
                          "lt = 00:32:00.5\n");
  const amn_toml_datetime *t = amn_toml_dt(path(d, "odt", NULL));
  assert_int_equal(amn_toml_type_of(path(d, "odt", NULL)), AMN_TOML_DATETIME);
  assert_int_equal(t->year, 1979);
  assert_int_equal(t->month, 5);
  assert_int_equal(t->day, 27);
  assert_int_equal(t->hour, 7);
  assert_int_equal(t->nanosecond, 999999999); /* truncated, not rounded */
  assert_int_equal(t->frac_digits, 9);
  assert_int_equal(t->offset_minutes, -450);
  assert_false(t->offset_z);
  assert_true(amn_toml_dt(path(d, "z", NULL))->offset_z);
  assert_int_equal(amn_toml_type_of(path(d, "ldt", NULL)), AMN_TOML_DATETIME_LOCAL);
  assert_int_equal(amn_toml_dt(path(d, "ldt", NULL))->second, 60);
  assert_int_equal(amn_toml_type_of(path(d, "ld", NULL)), AMN_TOML_DATE_LOCAL);
  assert_int_equal(amn_toml_type_of(path(d, "lt", NULL)), AMN_TOML_TIME_LOCAL);
  assert_int_equal(amn_toml_dt(path(d, "lt", NULL))->nanosecond, 500000000);
  amn_toml_free(d);
  EXPECT_ERR("d = 2023-02-29\n", 1, "no such day");
  EXPECT_ERR("d = 1900-02-29\n", 1, "no such day");
  EXPECT_ERR("d = 2023-01-01T10:00\n", 1, "expected HH:MM:SS"); /* seconds required in 1.0 */
  EXPECT_ERR("d = 2023-01-01T24:00:00\n", 1, "out of range");
  EXPECT_ERR("d = 2023-01-01T10:00:00+24:00\n", 1, "offset");
  EXPECT_ERR("d = 2023-01-01T10:00:00.\n", 1, "digits after '.'");
}

static void test_tables_and_arrays(void **state) {
  (void)state;
  amn_toml_doc *d = parse("[a.b.c]\n"      /* a, a.b implicit */
                          "x = 1\n"
                          "[a]\n"          /* implicit -> defined: ok */
                          "y.z = 2\n"      /* dotted table under a */
                          "[a.y.w]\n"      /* sub-table of a dotted table: ok */
                          "[[arr]]\n"
                          "n = 1\n"
                          "[arr.sub]\n"    /* belongs to the last element */
                          "[[arr]]\n"
                          "n = 2\n"
                          "inl = { p.q = 1, r = [1, 'two', {s = 3}] }\n"
                          "m = [\n  1, # comment\n  2,\n]\n"
                          "\"quoted key\".'lit' = true\n"
                          "\"\" = 'empty key'\n");
  const amn_toml_node *a = path(d, "a", NULL);
  assert_int_equal(amn_toml_line(a), 3); /* line of the [a] header */
  assert_int_equal(amn_toml_int(amn_toml_get(amn_toml_get(amn_toml_get(a, "b"), "c"), "x")), 1);
  assert_int_equal(amn_toml_int(amn_toml_get(amn_toml_get(a, "y"), "z")), 2);
  assert_non_null(amn_toml_get(amn_toml_get(a, "y"), "w"));
  const amn_toml_node *arr = path(d, "arr", NULL);
  assert_int_equal(amn_toml_type_of(arr), AMN_TOML_ARRAY);
  assert_int_equal(amn_toml_count(arr), 2);
  const amn_toml_node *e0 = amn_toml_at(arr, 0), *e1 = amn_toml_at(arr, 1);
  assert_non_null(amn_toml_get(e0, "sub"));
  assert_null(amn_toml_get(e1, "sub"));
  assert_int_equal(amn_toml_line(e1), 9);
  const amn_toml_node *inl = amn_toml_get(e1, "inl");
  assert_int_equal(amn_toml_int(amn_toml_get(amn_toml_get(inl, "p"), "q")), 1);
  const amn_toml_node *r = amn_toml_get(inl, "r");
  assert_int_equal(amn_toml_count(r), 3);
  assert_string_equal(amn_toml_str(amn_toml_at(r, 1), NULL), "two");
  assert_int_equal(amn_toml_type_of(amn_toml_at(r, 2)), AMN_TOML_TABLE);
  const amn_toml_node *m = amn_toml_get(e1, "m");
  assert_int_equal(amn_toml_count(m), 2);
  assert_int_equal(amn_toml_line(amn_toml_at(m, 1)), 14);
  assert_true(amn_toml_bool(amn_toml_get(amn_toml_get(e1, "quoted key"), "lit")));
  assert_string_equal(amn_toml_str(amn_toml_get(e1, ""), NULL), "empty key");
  amn_toml_free(d);
}

static void test_redefinitions(void **state) {
  (void)state;
  EXPECT_ERR("a = 1\nb = 2\na = 3\n", 3, "duplicate key 'a'");
  EXPECT_ERR("[t]\nx = 1\n\n[t]\n", 4, "table 't' defined twice (first at line 1)");
  EXPECT_ERR("[t]\nx.y = 1\n[t.x]\n", 3, "already defined with dotted keys");
  EXPECT_ERR("[t.u]\n[t]\nu.v = 1\n", 3, "table defined by a [header]");
  EXPECT_ERR("a = {b = 1}\n[a.c]\n", 2, "inline table");
  EXPECT_ERR("a = {b = 1}\na.c = 2\n", 2, "inline tables cannot be extended");
  EXPECT_ERR("a = {b = {c = 1}, b.d = 2}\n", 1, "inline table");
  EXPECT_ERR("a = [1]\n[[a]]\n", 2, "already an array");
  EXPECT_ERR("a = [{}]\n[a.b]\n", 2, "already an array");
  EXPECT_ERR("[[a]]\n[a]\n", 2, "already an array of tables");
  EXPECT_ERR("[a]\n[[a]]\n", 2, "already a table");
  EXPECT_ERR("[[t.arr]]\n[t]\narr.x = 1\n", 3, "array of tables");
  EXPECT_ERR("a.b = 1\na.b.c = 2\n", 2, "'a.b' is already an integer");
  EXPECT_ERR("a = {x = 1,}\n", 1, "trailing comma");
  EXPECT_ERR("a = {x = 1,\n y = 2}\n", 1, "expected a key");
  EXPECT_ERR("a = {x = 1\n}\n", 1, "one line");
}

static void test_syntax_errors(void **state) {
  (void)state;
  EXPECT_ERR("a = 1\n\n\nb\n", 4, "expected '=' after key 'b'");
  EXPECT_ERR("a = 1 b = 2\n", 1, "expected end of line after value");
  EXPECT_ERR("a =\n", 1, "missing value");
  EXPECT_ERR("[a\nb = 1\n", 1, "expected ']'");
  EXPECT_ERR("[[a]\n", 1, "expected ']]'");
  EXPECT_ERR("[a] x\n", 1, "expected end of line after table header");
  EXPECT_ERR("a = [1, 2\nb = 3\n", 2, "expected ',' or ']'");
  EXPECT_ERR("x = [\n1,\n2,\n,]\n", 4, "invalid value starting with ','");
  EXPECT_ERR("\"\"\"k\"\"\" = 1\n", 1, "multi-line strings cannot be used as keys");
  EXPECT_ERR("a = True\n", 1, "invalid value");
  EXPECT_ERR("\xef\xbb\xbf\xef\xbb\xbf" "a = 1\n", 1, "expected a key");
  /* BOM once is fine */
  amn_toml_doc *d = parse("\xef\xbb\xbf" "a = 1\n");
  amn_toml_free(d);
  /* nesting is bounded */
  char deep[1200];
  strcpy(deep, "a = ");
  for (int i = 0; i < 500; i++) strcat(deep, "[");
  EXPECT_ERR(deep, 1, "nested too deeply");
  /* 128 levels of arrays / inline tables are allowed, whatever they hold
   * (the scalar inside once counted as a level: 128 refused) */
  {
    char s[1200] = "a = ", t[1200] = "b = ";
    for (int i = 0; i < 128; i++) strcat(s, "["), strcat(t, "{k=");
    strcat(s, "1"), strcat(t, "1");
    for (int i = 0; i < 128; i++) strcat(s, "]"), strcat(t, "}");
    amn_toml_free(parse(s));
    amn_toml_free(parse(t));
    memmove(s + 5, s + 4, strlen(s + 4) + 1); /* one more '[' ... */
    strcat(s, "]");
    EXPECT_ERR(s, 1, "nested too deeply (max 128)");
  }
  /* dotted keys and table headers: at most 128 parts (each part is a level
   * of tables; a million of them overflowed the stack when freeing) */
  {
    size_t big = 1000000;
    char *hdr = malloc(2 * big + 3);
    assert_non_null(hdr);
    size_t n = 0;
    hdr[n++] = '[';
    for (size_t i = 0; i < big; i++) hdr[n++] = 'a', hdr[n++] = '.';
    hdr[n - 1] = ']';
    hdr[n] = '\0';
    EXPECT_ERR(hdr, 1, "too many dotted parts (max 128)");
    /* 128 parts are fine, in a header and in a dotted key; 129 are not */
    n = 0;
    hdr[n++] = '[';
    for (int i = 0; i < 128; i++) hdr[n++] = 'a', hdr[n++] = '.';
    hdr[n - 1] = ']';
    hdr[n] = '\0';
    d = parse(hdr);
    amn_toml_free(d);
    strcpy(hdr + n - 1, ".b]");
    EXPECT_ERR(hdr, 1, "too many dotted parts");
    n = 0;
    hdr[n++] = '\n';
    for (int i = 0; i < 129; i++) hdr[n++] = 'k', hdr[n++] = '.';
    strcpy(hdr + n - 1, " = 1");
    EXPECT_ERR(hdr, 2, "too many dotted parts");
    free(hdr);
  }
  /* err/err_line may be NULL */
  assert_null(amn_toml_parse("=", 1, NULL, 0, NULL));
  /* empty document */
  d = parse("");
  assert_int_equal(amn_toml_count(amn_toml_root(d)), 0);
  amn_toml_free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scalars_and_lines), cmocka_unit_test(test_integer_limits),
      cmocka_unit_test(test_floats),            cmocka_unit_test(test_strings),
      cmocka_unit_test(test_datetimes),         cmocka_unit_test(test_tables_and_arrays),
      cmocka_unit_test(test_redefinitions),     cmocka_unit_test(test_syntax_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
