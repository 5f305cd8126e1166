/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The byte layouts of signed queries and signed results (docs/SIGNATURES.md):
 * what is signed, and the envelopes carried in client_signature and
 * server_proof. Pure: no clock, no crypto, no allocation. */
#include <stdio.h>
#include <string.h>

#include "tls/sig.h"

const char *amn_sig_alg_name(uint8_t alg) {
  switch (alg) {
  case AMN_SIG_ECDSA_P256_SHA256: return "ecdsa-p256-sha256";
  case AMN_SIG_ECDSA_P384_SHA384: return "ecdsa-p384-sha384";
  case AMN_SIG_ED25519: return "ed25519";
  case AMN_SIG_RSA_PSS_SHA256: return "rsa-pss-sha256";
  default: return NULL;
  }
}

static uint8_t *put_u64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) *p++ = (uint8_t)(v >> (8 * i));
  return p;
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

/* domain (NUL included), alg, u16 method length, method, ts: the common
 * start of both signed messages; NULL when the method is too long. */
static uint8_t *tbs_start(uint8_t *p, const char *domain, uint8_t alg, const char *method, uint64_t ts_ms) {
  size_t dl = strlen(domain) + 1, ml = strlen(method);
  if (ml > AMN_SIG_METHOD_MAX) return NULL;
  memcpy(p, domain, dl);
  p += dl;
  *p++ = alg;
  *p++ = (uint8_t)(ml >> 8);
  *p++ = (uint8_t)ml;
  memcpy(p, method, ml);
  p += ml;
  return put_u64(p, ts_ms);
}

size_t amn_sig_query_tbs(uint8_t *out, uint8_t alg, const char *method, uint64_t ts_ms,
                         const uint8_t nonce[AMN_SIG_NONCE_LEN], const uint8_t query_sha256[32]) {
  uint8_t *p = tbs_start(out, AMN_SIG_QUERY_DOMAIN, alg, method, ts_ms);
  if (!p) return 0;
  memcpy(p, nonce, AMN_SIG_NONCE_LEN);
  p += AMN_SIG_NONCE_LEN;
  memcpy(p, query_sha256, 32);
  return (size_t)(p + 32 - out);
}

size_t amn_sig_proof_tbs(uint8_t *out, uint8_t alg, const char *method, uint64_t ts_ms,
                         const uint8_t query_sha256[32], const uint8_t result_sha256[32]) {
  uint8_t *p = tbs_start(out, AMN_SIG_PROOF_DOMAIN, alg, method, ts_ms);
  if (!p) return 0;
  memcpy(p, query_sha256, 32);
  memcpy(p + 32, result_sha256, 32);
  return (size_t)(p + 64 - out);
}

void amn_sig_query_hdr(uint8_t *out, uint8_t alg, uint64_t ts_ms, const uint8_t nonce[AMN_SIG_NONCE_LEN]) {
  out[0] = AMN_SIG_VERSION;
  out[1] = alg;
  put_u64(out + 2, ts_ms);
  memcpy(out + 10, nonce, AMN_SIG_NONCE_LEN);
}

void amn_sig_proof_hdr(uint8_t *out, uint8_t alg, uint64_t ts_ms) {
  out[0] = AMN_SIG_VERSION;
  out[1] = alg;
  put_u64(out + 2, ts_ms);
}

static const char *parse(const uint8_t *b, size_t len, size_t hdr, amn_sig_env *out) {
  static _Thread_local char why[48];
  memset(out, 0, sizeof *out);
  if (!len) return "empty";
  if (b[0] != AMN_SIG_VERSION) {
    snprintf(why, sizeof why, "unsupported version %u", b[0]);
    return why;
  }
  if (len < 2) return "truncated";
  if (!amn_sig_alg_name(b[1])) {
    snprintf(why, sizeof why, "unknown algorithm %u", b[1]);
    return why;
  }
  if (len <= hdr) return "truncated";
  if (len - hdr > AMN_SIG_MAX_LEN) return "signature longer than 1024 bytes";
  out->alg = b[1];
  out->ts_ms = get_u64(b + 2);
  out->nonce = hdr == AMN_SIG_QUERY_HDR ? b + 10 : NULL;
  out->sig = b + hdr;
  out->sig_len = len - hdr;
  return NULL;
}

const char *amn_sig_query_parse(const uint8_t *b, size_t len, amn_sig_env *out) {
  return parse(b, len, AMN_SIG_QUERY_HDR, out);
}

const char *amn_sig_proof_parse(const uint8_t *b, size_t len, amn_sig_env *out) {
  return parse(b, len, AMN_SIG_PROOF_HDR, out);
}
