/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Base64 for -bin metadata (src/rpc/codec.c: amn_b64_encode /
 * amn_b64_decode). Input: arbitrary bytes, used both as data to encode and
 * as a received value to decode. Invariants:
 *  - encode gives exactly (len+2)/3*4 characters of the alphabet plus
 *    trailing '=' and decode(encode(x)) == x, also with the padding
 *    stripped;
 *  - decode of any input writes within the documented len*3/4+3 bytes
 *    (exact-size buffer under ASan), fails exactly as documented (checked
 *    by an independent validity test) and otherwise gives floor(n*6/8)
 *    bytes for n data characters; re-encoding and decoding those bytes
 *    gives them back.
 */
#include "fuzz_common.h"
#include "rpc/rpc.h"

static bool in_alphabet(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Independent reading of amn_b64_decode's documented acceptance rule;
 * returns the number of data characters or -1. */
static long reference_valid(const char *s, size_t len) {
  size_t pad = 0;
  while (pad < len && pad < 2 && s[len - 1 - pad] == '=') pad++;
  if (pad && len % 4 != 0) return -1;
  size_t n = len - pad;
  if (n % 4 == 1) return -1;
  for (size_t i = 0; i < n; i++)
    if (!in_alphabet(s[i])) return -1;
  return (long)n;
}

static void round_trip(const uint8_t *d, size_t n) {
  size_t el = (n + 2) / 3 * 4;
  char *e = malloc(el ? el : 1);
  uint8_t *back = malloc(el * 3 / 4 + 3);
  FUZZ_CHECK(e && back);
  FUZZ_CHECK(amn_b64_encode(d, n, e) == el);
  size_t pad = 0;
  for (size_t i = 0; i < el; i++) {
    if (e[i] == '=') pad++;
    else FUZZ_CHECK(pad == 0 && in_alphabet(e[i]));
  }
  FUZZ_CHECK(pad == (3 - n % 3) % 3);
  FUZZ_CHECK(amn_b64_decode(e, el, back) == (long)n && (n == 0 || memcmp(back, d, n) == 0));
  FUZZ_CHECK(amn_b64_decode(e, el - pad, back) == (long)n && (n == 0 || memcmp(back, d, n) == 0));
  free(e);
  free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  round_trip(data, size);
  size_t cap = size * 3 / 4 + 3;
  uint8_t *out = malloc(cap);
  FUZZ_CHECK(out != NULL);
  long r = amn_b64_decode((const char *)data, size, out);
  long ref = reference_valid((const char *)data, size);
  FUZZ_CHECK((r < 0) == (ref < 0));
  if (r >= 0) {
    FUZZ_CHECK(r == ref * 6 / 8);
    round_trip(out, (size_t)r);
  } else {
    FUZZ_CHECK(r == -1);
  }
  free(out);
  return 0;
}
