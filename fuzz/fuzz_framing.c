/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The gRPC length-prefixed deframer (src/rpc/framing.c).
 *
 * Input: 4 bytes max_len (taken modulo 1 MiB + 1), 1 byte "abort at message
 * k" (0 = never), 1 byte chunking seed, then the stream. The stream is fed
 * whole, one byte at a time, and in pseudo-random chunks (including empty
 * ones). Invariants:
 *  - every chunking yields the same messages (bytes, length, compressed
 *    flag) and the same result code;
 *  - re-framing the messages gives back the stream: exactly when the
 *    deframer ends idle, else a prefix whose remainder is the pending
 *    partial prefix or message;
 *  - the result is 0, AMN_ETOOBIG (a prefix over max_len), AMN_EPROTO (flag
 *    byte > 1) or the callback's own return value, and no message exceeds
 *    max_len.
 */
#include "fuzz_common.h"
#include "rpc/rpc.h"

typedef struct rec {
  uint8_t *bytes; /* messages re-framed, concatenated */
  size_t len, cap;
  size_t count;
  size_t abort_at; /* return 7 at this message (1-based), 0 = never */
  size_t max_len;
} rec;

static void put(rec *r, const void *p, size_t n) {
  if (r->len + n > r->cap) {
    size_t cap = r->cap ? r->cap : 256;
    while (cap < r->len + n) cap *= 2;
    uint8_t *b = realloc(r->bytes, cap);
    FUZZ_CHECK(b != NULL);
    r->bytes = b;
    r->cap = cap;
  }
  if (n) memcpy(r->bytes + r->len, p, n);
  r->len += n;
}

static int on_msg(void *ud, uint8_t *msg, size_t len, bool compressed) {
  rec *r = ud;
  FUZZ_CHECK((msg == NULL) == (len == 0));
  FUZZ_CHECK(len <= r->max_len);
  uint8_t pfx[5];
  amn_frame_prefix(pfx, len);
  pfx[0] = compressed ? 1 : 0;
  put(r, pfx, 5);
  put(r, msg, len);
  free(msg);
  r->count++;
  return r->count == r->abort_at ? 7 : 0;
}

/* Feeds `s` in chunks chosen by `mode`: 0 whole, 1 bytewise, else random. */
static int run(const uint8_t *s, size_t n, size_t max_len, size_t abort_at, unsigned mode, rec *r) {
  memset(r, 0, sizeof *r);
  r->abort_at = abort_at;
  r->max_len = max_len;
  amn_deframer d;
  amn_deframer_init(&d, max_len);
  int rc = 0;
  size_t off = 0;
  uint32_t x = mode | 1u;
  while (rc == 0 && off < n) {
    size_t take;
    if (mode == 0) {
      take = n;
    } else if (mode == 1) {
      take = 1;
    } else {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      take = x % 4 == 0 ? 0 : x % 23; /* empty chunks too */
      if (take > n - off) take = n - off;
    }
    rc = amn_deframer_feed(&d, s + off, take, on_msg, r);
    off += take;
  }
  FUZZ_CHECK(rc == 0 || rc == AMN_ETOOBIG || rc == AMN_EPROTO || rc == 7);
  FUZZ_CHECK(r->len <= n && memcmp(r->bytes ? (const void *)r->bytes : "", s, r->len) == 0);
  if (rc == 0) {
    size_t rest = n - r->len;
    if (amn_deframer_idle(&d)) {
      FUZZ_CHECK(rest == 0);
    } else if (d.in_msg) {
      FUZZ_CHECK(rest == 5 + d.have && d.have < d.need && d.need <= max_len);
      /* memory follows what arrived, never the announced size */
      FUZZ_CHECK(d.cap >= d.have && d.cap <= d.need);
      FUZZ_CHECK(d.need <= AMN_DEFRAMER_CHUNK ? (d.cap == 0 || d.cap == d.need)
                                              : d.cap <= (2 * d.have > AMN_DEFRAMER_CHUNK ? 2 * d.have : AMN_DEFRAMER_CHUNK));
    } else {
      FUZZ_CHECK(rest == d.hdr_have && rest > 0 && rest < 5);
    }
  }
  amn_deframer_free(&d);
  FUZZ_CHECK(amn_deframer_idle(&d));
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  size_t max_len = fuzz_u32(&in) % ((1u << 20) + 1);
  size_t abort_at = fuzz_u8(&in);
  unsigned seed = fuzz_u8(&in);
  rec a, b, c;
  int ra = run(in.p, in.n, max_len, abort_at, 0, &a);
  int rb = run(in.p, in.n, max_len, abort_at, 1, &b);
  int rcc = run(in.p, in.n, max_len, abort_at, 2 + seed, &c);
  FUZZ_CHECK(ra == rb && ra == rcc);
  FUZZ_CHECK(a.count == b.count && a.count == c.count);
  FUZZ_CHECK(a.len == b.len && a.len == c.len);
  FUZZ_CHECK(a.len == 0 || (memcmp(a.bytes, b.bytes, a.len) == 0 && memcmp(a.bytes, c.bytes, a.len) == 0));
  free(a.bytes);
  free(b.bytes);
  free(c.bytes);
  return 0;
}
