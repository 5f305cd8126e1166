/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The QUIC address-validation tokens of the HTTP/3 server
 * (src/transport/h3/h3_server_token.c): the token of an Initial, as
 * amn_h3s_token_check judges it, for arbitrary bytes and for mutations of
 * tokens the server really minted. The server is a real HTTP/3 listener on
 * one loop built by hand (tests/support/h3_mem.h, a fake clock, no socket
 * I/O); each input first makes it mint a Retry token (amn_h3s_send_retry,
 * the Retry packet captured from the send path and decoded) and a NEW_TOKEN
 * token (with the group's key, as amn_h3s_send_new_token does), then
 * presents a candidate token in an Initial's header, from an address, with
 * a destination connection ID, at a time the input chooses.
 * (The stateless-reset token is not parsed by the server: it only derives
 * one per connection ID; ngtcp2 checks them on the client.)
 *
 * Input: mode byte, then parameters (fuzz_in): bits 0-1 the candidate
 * (0 the input's bytes, 1 the Retry token, 2 the NEW_TOKEN token, 3 the
 * input's bytes after the Retry token's magic byte); bit 2 patch the
 * candidate (up to 4 positions XORed, then truncated or extended by the
 * input); bit 3 another client port; bit 4 another client address; bit 5
 * another destination connection ID; bit 6 another QUIC version; then the
 * age (u32 ms) at which it is presented.
 *
 * Invariants (besides no crash, leak, UB): a token is accepted (Retry or
 * NEW_TOKEN) only when its bytes are those of a token the server minted of
 * that type, for that client address, and not older than its lifetime
 * (AMN_H3_RETRY_TOKEN_TTL_S, AMN_H3_NEW_TOKEN_TTL_S); an accepted Retry
 * token also names the destination connection ID the Retry gave (and
 * yields the original one); the Initial is refused (-1) only for a token
 * carrying the Retry magic byte; no token is ever accepted from an input's
 * own bytes.
 */
#include "fuzz_h3.h"

static h3mem g_m;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  amn_server_opts o;
  h3f_init(&o);
  char err[256];
  FUZZ_CHECK(hm_server_new(&g_m, &o, err, sizeof err) == 0);
  FUZZ_CHECK(hm_server_start(&g_m, err, sizeof err) == 0);
  return 0;
}

static struct sockaddr_in client_addr(uint32_t ip, uint16_t port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(ip);
  return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t mode = fuzz_u8(&in);
  amn_h3_listener *l = g_m.l;
  g_m.now = 1000 * NGTCP2_SECONDS; /* every input at the same time: reproducible, and the clock never wraps */
  uint64_t minted_at = g_m.now;

  /* the server mints: a Retry for an Initial from `from` to `odcid` */
  struct sockaddr_in from = client_addr(0xc0000201u, 4433); /* 192.0.2.1 */
  ngtcp2_pkt_hd ih = {0};
  ih.version = NGTCP2_PROTO_VER_V1;
  ih.type = NGTCP2_PKT_INITIAL;
  ih.flags = NGTCP2_PKT_FLAG_LONG_FORM;
  ngtcp2_cid_init(&ih.dcid, (const uint8_t *)"\x11\x22\x33\x44\x55\x66\x77\x88", 8);
  ngtcp2_cid_init(&ih.scid, (const uint8_t *)"\x99\xaa\xbb\xcc", 4);
  amn_h3s_send_retry(l, &ih, (struct sockaddr *)&from, sizeof from, 1200);
  hm_dgram *d = hm_pop(&g_m);
  FUZZ_CHECK(d != NULL && !d->to_server && hm_pop(&g_m) == NULL);
  ngtcp2_pkt_hd rh;
  ngtcp2_ssize hl = ngtcp2_pkt_decode_hd_long(&rh, d->data, d->len);
  FUZZ_CHECK(hl > 0 && rh.type == NGTCP2_PKT_RETRY);
  /* a Retry: the header, the token, a 16-byte integrity tag (RFC 9000 17.2.5) */
  uint8_t retry[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN2];
  FUZZ_CHECK(d->len > (size_t)hl + 16);
  size_t retry_len = d->len - (size_t)hl - 16;
  FUZZ_CHECK(retry_len <= sizeof retry);
  memcpy(retry, d->data + hl, retry_len);
  ngtcp2_cid retry_scid = rh.scid; /* the client's next destination connection ID */
  free(d);
  /* ... and a NEW_TOKEN token for the same client, as amn_h3s_send_new_token */
  uint8_t regular[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];
  ngtcp2_ssize rl = ngtcp2_crypto_generate_regular_token(regular, l->group->token_secret,
                                                         sizeof l->group->token_secret, (struct sockaddr *)&from,
                                                         sizeof from, g_m.now);
  FUZZ_CHECK(rl > 0);
  size_t regular_len = (size_t)rl;

  /* the candidate */
  uint8_t tok[512];
  size_t tl = 0;
  int kind = mode & 3;
  if (kind == 1) {
    memcpy(tok, retry, tl = retry_len);
  } else if (kind == 2) {
    memcpy(tok, regular, tl = regular_len);
  } else {
    if (kind == 3) tok[tl++] = NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2;
    size_t n = fuzz_u8(&in);
    while (n-- && tl < sizeof tok && in.n) tok[tl++] = fuzz_u8(&in);
  }
  if (mode & 4) {
    for (int i = 0; i < 4; i++) {
      uint8_t pos = fuzz_u8(&in), x = fuzz_u8(&in);
      if (tl) tok[pos % tl] ^= x;
    }
    int8_t grow = (int8_t)fuzz_u8(&in);
    if (grow < 0 && (size_t)-grow <= tl) tl -= (size_t)-grow;
    for (; grow > 0 && tl < sizeof tok; grow--) tok[tl++] = fuzz_u8(&in);
  }
  struct sockaddr_in at = from;
  if (mode & 8) at.sin_port = htons((uint16_t)(fuzz_u8(&in) << 8 | fuzz_u8(&in)));
  if (mode & 16) at.sin_addr.s_addr = htonl(fuzz_u32(&in));
  ngtcp2_pkt_hd hd = ih;
  hd.dcid = retry_scid; /* the client came back after the Retry */
  if (mode & 32) {
    uint8_t cl = fuzz_u8(&in) % (NGTCP2_MAX_CIDLEN + 1), cid[NGTCP2_MAX_CIDLEN];
    for (uint8_t i = 0; i < cl; i++) cid[i] = fuzz_u8(&in);
    ngtcp2_cid_init(&hd.dcid, cid, cl);
  }
  if (mode & 64) hd.version = fuzz_u32(&in);
  hd.token = tok;
  hd.tokenlen = tl;
  uint64_t age = (uint64_t)fuzz_u32(&in) * NGTCP2_MILLISECONDS;
  g_m.now += age;

  amn_h3_server_stats s0, s1;
  amn_h3s_stats(&g_m.sl.bl, &s0);
  ngtcp2_cid ocid;
  ngtcp2_token_type tt = (ngtcp2_token_type)-1;
  int rc = amn_h3s_token_check(l, &hd, (struct sockaddr *)&at, sizeof at, &ocid, &tt);
  amn_h3s_stats(&g_m.sl.bl, &s1);
  FUZZ_CHECK(rc == 0 || rc == -1);
  if (rc == -1) FUZZ_CHECK(tl && tok[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2 && s1.tokens_bad == s0.tokens_bad + 1);
  bool same_ip = at.sin_addr.s_addr == from.sin_addr.s_addr;
  if (rc == 0 && tt == NGTCP2_TOKEN_TYPE_RETRY) {
    FUZZ_CHECK(kind != 0 && kind != 3); /* never one of the input's own */
    FUZZ_CHECK(tl == retry_len && memcmp(tok, retry, tl) == 0);
    FUZZ_CHECK(same_ip && at.sin_port == from.sin_port);
    FUZZ_CHECK(ngtcp2_cid_eq(&hd.dcid, &retry_scid) && ngtcp2_cid_eq(&ocid, &ih.dcid));
    FUZZ_CHECK(g_m.now - minted_at <= (uint64_t)AMN_H3_RETRY_TOKEN_TTL_S * NGTCP2_SECONDS);
    FUZZ_CHECK(s1.retry_tokens_ok == s0.retry_tokens_ok + 1);
  } else if (rc == 0 && tt == NGTCP2_TOKEN_TYPE_NEW_TOKEN) {
    FUZZ_CHECK(kind == 2);
    FUZZ_CHECK(tl == regular_len && memcmp(tok, regular, tl) == 0);
    FUZZ_CHECK(same_ip);
    FUZZ_CHECK(g_m.now - minted_at <= (uint64_t)AMN_H3_NEW_TOKEN_TTL_S * NGTCP2_SECONDS);
    FUZZ_CHECK(s1.new_tokens_ok == s0.new_tokens_ok + 1);
  } else if (rc == 0) {
    FUZZ_CHECK(tt == NGTCP2_TOKEN_TYPE_UNKNOWN);
    FUZZ_CHECK(s1.tokens_bad == s0.tokens_bad + (tl ? 1 : 0));
  }
  if (getenv("AMN_FUZZ_VERBOSE"))
    fprintf(stderr, "fuzz_quic_token: kind %d, %zu bytes, age %llu ms: rc %d type %d\n", kind, tl,
            (unsigned long long)(age / NGTCP2_MILLISECONDS), rc, (int)tt);
  return 0;
}
