/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * grpc-message percent-encoding (src/rpc/codec.c: amn_pct_encode /
 * amn_pct_decode). Input: arbitrary bytes (a message to encode, and a
 * header value to decode); the first two bytes also pick a short output
 * capacity. Invariants:
 *  - encode output is printable ASCII (0x20-0x7e), its sizing call (cap 0)
 *    gives the same length, and decode(encode(x)) == x;
 *  - with a smaller capacity, encode writes at most cap bytes (ASan checks
 *    an exact-size buffer), a prefix of the full output that never ends
 *    inside a %XX escape;
 *  - decoding never grows the input; decoding a canonical encoding of the
 *    decoded bytes gives them back.
 */
#include "fuzz_common.h"
#include "rpc/rpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t need = amn_pct_encode(data, size, NULL, 0);
  FUZZ_CHECK(need >= size && need <= 3 * size);
  char *enc = malloc(need ? need : 1);
  FUZZ_CHECK(enc != NULL);
  FUZZ_CHECK(amn_pct_encode(data, size, enc, need) == need);
  for (size_t i = 0; i < need; i++) FUZZ_CHECK(enc[i] >= 0x20 && enc[i] <= 0x7e);
  uint8_t *dec = malloc(need ? need : 1);
  FUZZ_CHECK(dec != NULL);
  size_t dl = amn_pct_decode(enc, need, dec);
  FUZZ_CHECK(dl == size && (size == 0 || memcmp(dec, data, size) == 0));

  /* short capacity: an exact-size buffer so an overrun is an ASan report */
  size_t cap = size >= 2 ? ((size_t)data[0] << 8 | data[1]) % (need + 1) : 0;
  char *part = malloc(cap ? cap : 1);
  FUZZ_CHECK(part != NULL);
  memset(part, 0x7f, cap);
  FUZZ_CHECK(amn_pct_encode(data, size, part, cap) == need);
  size_t w = 0;
  while (w < cap && part[w] != 0x7f) w++;
  FUZZ_CHECK(memcmp(part, enc, w) == 0);
  for (size_t i = w; i < cap; i++) FUZZ_CHECK(part[i] == 0x7f);
  FUZZ_CHECK(w + 2 >= cap);                           /* stops at most 2 bytes short */
  FUZZ_CHECK(w == need || enc[w] == '%' || w == cap); /* never inside an escape */

  /* arbitrary input as a received value */
  uint8_t *raw = malloc(size ? size : 1);
  FUZZ_CHECK(raw != NULL);
  size_t rl = amn_pct_decode((const char *)data, size, raw);
  FUZZ_CHECK(rl <= size);
  size_t need2 = amn_pct_encode(raw, rl, NULL, 0);
  char *enc2 = malloc(need2 ? need2 : 1);
  uint8_t *dec2 = malloc(need2 ? need2 : 1);
  FUZZ_CHECK(enc2 && dec2);
  amn_pct_encode(raw, rl, enc2, need2);
  FUZZ_CHECK(amn_pct_decode(enc2, need2, dec2) == rl && (rl == 0 || memcmp(dec2, raw, rl) == 0));
  free(enc);
  free(dec);
  free(part);
  free(raw);
  free(enc2);
  free(dec2);
  return 0;
}
