/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* grpc-timeout, percent-encoding and base64 codecs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rpc/rpc.h"

static int parse(const char *s, int64_t *ns) { return amn_grpc_timeout_parse(s, strlen(s), ns); }

static void test_timeout_parse_units(void **state) {
  (void)state;
  static const struct { const char *s; int64_t ns; } ok[] = {
      {"1n", 1},
      {"7u", 7000},
      {"250m", 250000000},
      {"3S", 3000000000LL},
      {"2M", 120000000000LL},
      {"1H", 3600000000000LL},
      {"0S", 0},
      {"00000010m", 10000000},
      {"99999999n", 99999999},
      {"99999999S", 99999999000000000LL},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    int64_t ns = -5;
    assert_int_equal(parse(ok[i].s, &ns), 0);
    assert_true(ns == ok[i].ns);
  }
  /* saturates rather than overflowing */
  int64_t ns = 0;
  assert_int_equal(parse("99999999H", &ns), 0);
  assert_true(ns == INT64_MAX);
  assert_int_equal(parse("99999999M", &ns), 0); /* 6.0e18 still fits */
  assert_true(ns == 5999999940000000000LL);
  assert_int_equal(parse("2562048H", &ns), 0);   /* just above INT64_MAX */
  assert_true(ns == INT64_MAX);
  assert_int_equal(parse("2562047H", &ns), 0);
  assert_true(ns == 2562047LL * 3600000000000LL);
  /* len is honoured (no NUL needed) */
  assert_int_equal(amn_grpc_timeout_parse("5Sxyz", 2, &ns), 0);
  assert_true(ns == 5000000000LL);
}

/* The deadline of any parsed timeout is computed without overflow: the
 * largest legal grpc-timeout (99999999H) saturates instead of wrapping
 * negative (which once left a call's timer armed in a recycled struct). */
static void test_deadline_after(void **state) {
  (void)state;
  int64_t ns = 0;
  assert_int_equal(parse("99999999H", &ns), 0);
  const int64_t nows[] = {0, 1, 123456789012345LL, INT64_MAX / 2, INT64_MAX - 1, INT64_MAX};
  for (size_t i = 0; i < sizeof nows / sizeof nows[0]; i++) {
    int64_t d = amn_deadline_after(nows[i], ns);
    assert_true(d == INT64_MAX);
    assert_true(amn_deadline_left_ms(d, nows[i]) >= 0);
    assert_true(amn_deadline_after(nows[i], 0) == nows[i]);
  }
  assert_true(amn_deadline_after(1000, 5) == 1005);
  assert_true(amn_deadline_after(INT64_MAX - 10, 10) == INT64_MAX);
  assert_true(amn_deadline_after(INT64_MAX - 10, 11) == INT64_MAX);
  assert_true(amn_deadline_after(7, -1) == 7);
  /* time left, rounded up to whole ms, never negative */
  assert_true(amn_deadline_left_ms(5000000, 0) == 5);
  assert_true(amn_deadline_left_ms(5000001, 0) == 6);
  assert_true(amn_deadline_left_ms(5, 10) == 0);
  assert_true(amn_deadline_left_ms(INT64_MAX, 0) == INT64_MAX / 1000000 + 1);
  assert_true(amn_deadline_left_ms(INT64_MAX, 1) == (INT64_MAX - 1) / 1000000 + 1);
}

static void test_timeout_parse_garbage(void **state) {
  (void)state;
  const char *bad[] = {"", "S", "1", "100", "123456789S", "1s", "1h", "1x", "-1S", "+1S", " 1S",
                       "1S ", "1 S", "1.5S", "0x1S", "1SS", "S1", "1\0S"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t ns = 42;
    assert_int_equal(parse(bad[i], &ns), AMN_EINVAL);
    assert_true(ns == 42);
  }
  int64_t ns;
  assert_int_equal(amn_grpc_timeout_parse("1\0S", 3, &ns), AMN_EINVAL);
  assert_int_equal(amn_grpc_timeout_parse(NULL, 0, &ns), AMN_EINVAL);
}

static void test_timeout_format(void **state) {
  (void)state;
  static const struct { int64_t ns; const char *s; } cases[] = {
      {1, "1n"},
      {99999999, "99999999n"},
      {100000000, "100000u"},           /* exact, finest unit that fits */
      {100000001, "100001u"},           /* rounded up */
      {1000000000, "1000000u"},
      {5000000000LL, "5000000u"},
      {99999999000LL, "99999999u"},
      {99999999001LL, "100000m"},       /* 99999999.001 us -> next unit, rounded up */
      {3600000000000LL, "3600000m"},
      {99999999000000000LL, "99999999S"},
      {99999999000000001LL, "1666667M"},
      {INT64_MAX, "2562048H"},
      {0, "1n"},
      {-5, "1n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char out[16];
    memset(out, 'X', sizeof out);
    size_t n = amn_grpc_timeout_format(cases[i].ns, out);
    assert_string_equal(out, cases[i].s);
    assert_int_equal(n, strlen(cases[i].s));
  }
}

/* format -> parse never shortens the timeout and stays within one unit. */
static void test_timeout_round_trip(void **state) {
  (void)state;
  int64_t v = 1;
  uint64_t seed = 12345;
  for (int i = 0; i < 5000; i++) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    int64_t ns = i < 62 ? (v << i) + (i & 1) : (int64_t)(seed >> 1);
    if (ns <= 0) continue;
    char out[16];
    size_t n = amn_grpc_timeout_format(ns, out);
    assert_true(n >= 2 && n <= 9);
    int64_t back;
    assert_int_equal(amn_grpc_timeout_parse(out, n, &back), 0);
    assert_true(back >= ns);
    /* the unit is the finest that fits, so the error is below one unit */
    static const int64_t unit_ns[] = {['n'] = 1, ['u'] = 1000, ['m'] = 1000000, ['S'] = 1000000000,
                                      ['M'] = 60000000000LL, ['H'] = 3600000000000LL};
    int64_t unit = unit_ns[(unsigned char)out[n - 1]];
    assert_true(back == INT64_MAX || back - ns < unit);
  }
}

static void test_pct_encode(void **state) {
  (void)state;
  const char *plain = "hello world ~!";
  char out[64];
  assert_int_equal(amn_pct_encode((const uint8_t *)plain, strlen(plain), NULL, 0), strlen(plain));
  size_t n = amn_pct_encode((const uint8_t *)plain, strlen(plain), out, sizeof out);
  assert_int_equal(n, strlen(plain));
  assert_memory_equal(out, plain, n);

  /* '%', control bytes, UTF-8 (é = C3 A9, ☃ = E2 98 83), DEL */
  const char *in = "50% caf\xc3\xa9\n\xe2\x98\x83\x7f";
  const char *want = "50%25 caf%C3%A9%0A%E2%98%83%7F";
  n = amn_pct_encode((const uint8_t *)in, strlen(in), NULL, 0);
  assert_int_equal(n, strlen(want));
  memset(out, 0, sizeof out);
  assert_int_equal(amn_pct_encode((const uint8_t *)in, strlen(in), out, sizeof out), strlen(want));
  assert_string_equal(out, want);

  /* truncated output: at most cap bytes, never a partial escape */
  memset(out, '#', sizeof out);
  assert_int_equal(amn_pct_encode((const uint8_t *)in, strlen(in), out, 4), strlen(want));
  assert_memory_equal(out, "50##", 4);
  assert_int_equal(out[4], '#');
}

static void test_pct_decode(void **state) {
  (void)state;
  uint8_t out[64];
  const char *enc = "50%25 caf%C3%a9%0A%E2%98%83";
  size_t n = amn_pct_decode(enc, strlen(enc), out);
  const char *want = "50% caf\xc3\xa9\n\xe2\x98\x83";
  assert_int_equal(n, strlen(want));
  assert_memory_equal(out, want, n);

  /* malformed sequences are kept literally */
  static const struct { const char *in, *out; } lit[] = {
      {"100%", "100%"}, {"%4", "%4"}, {"%zz", "%zz"}, {"%%41", "%A"}, {"a%g1b", "a%g1b"},
      {"%", "%"},       {"%%", "%%"}, {"x%2", "x%2"}, {"%41%", "A%"},
  };
  for (size_t i = 0; i < sizeof lit / sizeof lit[0]; i++) {
    n = amn_pct_decode(lit[i].in, strlen(lit[i].in), out);
    assert_int_equal(n, strlen(lit[i].out));
    assert_memory_equal(out, lit[i].out, n);
  }

  /* round trip of every byte value */
  uint8_t all[256];
  for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
  size_t el = amn_pct_encode(all, 256, NULL, 0);
  char *e = malloc(el);
  uint8_t *d = malloc(el);
  assert_int_equal(amn_pct_encode(all, 256, e, el), el);
  for (size_t i = 0; i < el; i++) assert_true(e[i] >= 0x20 && e[i] <= 0x7e);
  assert_int_equal(amn_pct_decode(e, el, d), 256);
  assert_memory_equal(d, all, 256);
  free(e);
  free(d);
}

/* RFC 4648 section 10 test vectors. */
static const char *const rfc_plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const rfc_b64[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
static const char *const rfc_unpadded[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};

static void test_b64_vectors(void **state) {
  (void)state;
  for (size_t i = 0; i < 7; i++) {
    char enc[32];
    uint8_t dec[32];
    size_t pl = strlen(rfc_plain[i]);
    size_t n = amn_b64_encode((const uint8_t *)rfc_plain[i], pl, enc);
    assert_int_equal(n, (pl + 2) / 3 * 4);
    assert_int_equal(n, strlen(rfc_b64[i]));
    assert_memory_equal(enc, rfc_b64[i], n);
    long d = amn_b64_decode(rfc_b64[i], strlen(rfc_b64[i]), dec);
    assert_int_equal(d, (long)pl);
    assert_memory_equal(dec, rfc_plain[i], pl);
    d = amn_b64_decode(rfc_unpadded[i], strlen(rfc_unpadded[i]), dec);
    assert_int_equal(d, (long)pl);
    assert_memory_equal(dec, rfc_plain[i], pl);
  }
}

static void test_b64_binary_round_trip(void **state) {
  (void)state;
  uint8_t in[300], dec[300 * 3 / 4 + 410];
  char enc[404];
  for (int i = 0; i < 300; i++) in[i] = (uint8_t)(255 - i * 13);
  for (size_t len = 0; len <= 300; len++) {
    size_t n = amn_b64_encode(in, len, enc);
    assert_int_equal(amn_b64_decode(enc, n, dec), (long)len);
    assert_memory_equal(dec, in, len);
    size_t u = n; /* unpadded form */
    while (u && enc[u - 1] == '=') u--;
    assert_int_equal(amn_b64_decode(enc, u, dec), (long)len);
    assert_memory_equal(dec, in, len);
  }
  /* full alphabet incl. '+' and '/' */
  const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  long n = amn_b64_decode(alpha, 64, dec);
  assert_int_equal(n, 48);
  assert_int_equal(amn_b64_encode(dec, 48, enc), 64);
  assert_memory_equal(enc, alpha, 64);
}

static void test_b64_malformed(void **state) {
  (void)state;
  const char *bad[] = {"Z",     "Zm9vY",  "Zg=",   "Zg===",  "=",      "==",    "====", "Z===",
                       "Zm9v=", "Zg==Zg", "Zm=v",  "Zm 9v",  "Zm9v\n", "Zm-_",  "Zm9*", "Zm9v Yg==",
                       "Zm\xc3\xa9"};
  uint8_t out[64];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(amn_b64_decode(bad[i], strlen(bad[i]), out), -1);
  assert_int_equal(amn_b64_decode("Zm9v\0", 5, out), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_timeout_parse_units), cmocka_unit_test(test_deadline_after),
      cmocka_unit_test(test_timeout_parse_garbage),
      cmocka_unit_test(test_timeout_format),      cmocka_unit_test(test_timeout_round_trip),
      cmocka_unit_test(test_pct_encode),          cmocka_unit_test(test_pct_decode),
      cmocka_unit_test(test_b64_vectors),         cmocka_unit_test(test_b64_binary_round_trip),
      cmocka_unit_test(test_b64_malformed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
