/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * grpc-timeout parsing and formatting, deadline arithmetic
 * (src/rpc/codec.c). Input: the header value; its first 16 bytes (zero
 * padded) also give two int64 values for the format and deadline checks.
 * Invariants:
 *  - a value is accepted exactly when it is 1-8 ASCII digits and one unit
 *    of H M S m u n (checked by an independent reading), and then gives
 *    digits * unit nanoseconds, saturating at INT64_MAX;
 *  - formatting any timeout gives 2-9 characters that parse back to a
 *    timeout never shorter, and longer by less than 1e-5 of it (or equal
 *    when saturated);
 *  - amn_deadline_after never overflows and never goes backwards;
 *    amn_deadline_left_ms is 0 for a past deadline and otherwise rounds
 *    the time left up to whole milliseconds.
 */
#include "fuzz_common.h"
#include "rpc/rpc.h"

static bool reference_parse(const uint8_t *s, size_t n, int64_t *out) {
  if (n < 2 || n > 9) return false;
  unsigned __int128 v = 0;
  for (size_t i = 0; i + 1 < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  int64_t m;
  switch (s[n - 1]) {
  case 'n': m = 1; break;
  case 'u': m = 1000; break;
  case 'm': m = 1000000; break;
  case 'S': m = 1000000000; break;
  case 'M': m = 60LL * 1000000000; break;
  case 'H': m = 3600LL * 1000000000; break;
  default: return false;
  }
  v *= (unsigned __int128)m;
  *out = v > (unsigned __int128)INT64_MAX ? INT64_MAX : (int64_t)v;
  return true;
}

static void check_format(int64_t ns) {
  char buf[16];
  size_t len = amn_grpc_timeout_format(ns, buf);
  FUZZ_CHECK(len >= 2 && len <= 9 && buf[len] == '\0' && strlen(buf) == len);
  int64_t back = -1;
  FUZZ_CHECK(amn_grpc_timeout_parse(buf, len, &back) == 0);
  int64_t want = ns <= 0 ? 1 : ns;
  FUZZ_CHECK(back >= want);
  FUZZ_CHECK(back - want <= want / 99999 + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int64_t got = -7, ref = -7;
  int rc = amn_grpc_timeout_parse((const char *)data, size, &got);
  bool ok = reference_parse(data, size, &ref);
  FUZZ_CHECK((rc == 0) == ok);
  FUZZ_CHECK(rc == 0 || rc == AMN_EINVAL);
  if (ok) {
    FUZZ_CHECK(got == ref && got >= 0);
    if (got > 0) check_format(got);
  }

  uint8_t pad[16] = {0};
  memcpy(pad, data, size < sizeof pad ? size : sizeof pad);
  fuzz_in in = {pad, sizeof pad};
  int64_t x = (int64_t)fuzz_u64(&in), y = (int64_t)fuzz_u64(&in);
  check_format(x);
  check_format(x < 0 ? -(x + 1) : x);
  int64_t now = x < 0 ? -(x + 1) : x, t = y < 0 ? -(y + 1) : y;
  int64_t dl = amn_deadline_after(now, t);
  FUZZ_CHECK(dl >= now && (dl == INT64_MAX || dl - now == t));
  FUZZ_CHECK(amn_deadline_after(x, y) >= (x < 0 || y < 0 ? x : now));
  int64_t left = amn_deadline_left_ms(dl, now);
  FUZZ_CHECK(left >= 0);
  if (dl > now) {
    int64_t d = dl - now;
    FUZZ_CHECK(left == d / 1000000 + (d % 1000000 != 0));
  } else {
    FUZZ_CHECK(left == 0);
  }
  FUZZ_CHECK(amn_deadline_left_ms(x, y) >= 0);
  FUZZ_CHECK(x > y || amn_deadline_left_ms(x, y) == 0);
  return 0;
}
