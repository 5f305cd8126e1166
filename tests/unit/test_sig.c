/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Signed queries and results: the byte layouts against the known answers
 * of docs/SIGNATURES.md (src/tls/sig_layout.c), signing and verification
 * with each key type (src/tls/sign.c), and the server's nonce table
 * (src/server/sig_replay.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amn/common.h"
#include "server/sig_replay.h"
#include "tls/sig.h"

static size_t unhex(const char *h, uint8_t *out) {
  size_t n = 0;
  for (; h[0] && h[1]; h += 2) {
    while (*h == ' ' || *h == '\n') h++;
    unsigned v;
    sscanf(h, "%2x", &v);
    out[n++] = (uint8_t)v;
  }
  return n;
}

static const char *const M = "/amaters.v1.AmateRS/Execute";
static const uint64_t TS = 1700000000000ull;

/* docs/SIGNATURES.md, "The client signature", known-answer example. */
static void test_query_layout(void **st) {
  (void)st;
  uint8_t want[200], got[AMN_SIG_TBS_MAX], nonce[16], h[32];
  size_t wn = unhex("616d61746572732d6e6574207175657279207369676e61747572652076310003"
                    "001b2f616d61746572732e76312e416d61746552532f45786563757465000001"
                    "8bcfe56800000102030405060708090a0b0c0d0e0f2cf24dba5fb0a30e26e83b"
                    "2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                    want);
  assert_int_equal(wn, 117);
  for (int i = 0; i < 16; i++) nonce[i] = (uint8_t)i;
  amn_sig_sha256("hello", 5, h);
  size_t n = amn_sig_query_tbs(got, AMN_SIG_ED25519, M, TS, nonce, h);
  assert_int_equal(n, wn);
  assert_memory_equal(got, want, wn);
  uint8_t hdr[AMN_SIG_QUERY_HDR + 1];
  amn_sig_query_hdr(hdr, AMN_SIG_ED25519, TS, nonce);
  wn = unhex("01030000018bcfe56800000102030405060708090a0b0c0d0e0f", want);
  assert_int_equal(wn, AMN_SIG_QUERY_HDR);
  assert_memory_equal(hdr, want, wn);
  /* parsed back */
  hdr[AMN_SIG_QUERY_HDR] = 0x5a;
  amn_sig_env e;
  assert_null(amn_sig_query_parse(hdr, sizeof hdr, &e));
  assert_int_equal(e.alg, AMN_SIG_ED25519);
  assert_true(e.ts_ms == TS);
  assert_memory_equal(e.nonce, nonce, 16);
  assert_int_equal(e.sig_len, 1);
  assert_int_equal(e.sig[0], 0x5a);
}

/* docs/SIGNATURES.md, "The server proof", known-answer example. */
static void test_proof_layout(void **st) {
  (void)st;
  uint8_t want[200], got[AMN_SIG_TBS_MAX], qh[32], rh[32];
  size_t wn = unhex("616d61746572732d6e657420726573756c742070726f6f662076310001001b2f"
                    "616d61746572732e76312e416d61746552532f457865637574650000018bcfe5"
                    "68002cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b"
                    "9824486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9c"
                    "b8a7",
                    want);
  assert_int_equal(wn, 130);
  amn_sig_sha256("hello", 5, qh);
  amn_sig_sha256("world", 5, rh);
  size_t n = amn_sig_proof_tbs(got, AMN_SIG_ECDSA_P256_SHA256, M, TS, qh, rh);
  assert_int_equal(n, wn);
  assert_memory_equal(got, want, wn);
  uint8_t hdr[AMN_SIG_PROOF_HDR];
  amn_sig_proof_hdr(hdr, AMN_SIG_ECDSA_P256_SHA256, TS);
  wn = unhex("01010000018bcfe56800", want);
  assert_memory_equal(hdr, want, wn);
}

/* Every malformed envelope gets its specific reason. */
static void test_parse_errors(void **st) {
  (void)st;
  uint8_t b[AMN_SIG_QUERY_HDR + AMN_SIG_MAX_LEN + 1];
  memset(b, 0, sizeof b);
  amn_sig_env e;
  assert_string_equal(amn_sig_query_parse(b, 0, &e), "empty");
  b[0] = 2;
  assert_string_equal(amn_sig_query_parse(b, 30, &e), "unsupported version 2");
  b[0] = 1;
  assert_string_equal(amn_sig_query_parse(b, 1, &e), "truncated");
  b[1] = 9;
  assert_string_equal(amn_sig_query_parse(b, 30, &e), "unknown algorithm 9");
  b[1] = AMN_SIG_ECDSA_P384_SHA384;
  assert_string_equal(amn_sig_query_parse(b, AMN_SIG_QUERY_HDR, &e), "truncated");
  assert_null(amn_sig_query_parse(b, AMN_SIG_QUERY_HDR + 1, &e));
  assert_null(amn_sig_query_parse(b, AMN_SIG_QUERY_HDR + AMN_SIG_MAX_LEN, &e));
  assert_string_equal(amn_sig_query_parse(b, sizeof b, &e), "signature longer than 1024 bytes");
  assert_string_equal(amn_sig_proof_parse(b, AMN_SIG_PROOF_HDR, &e), "truncated");
  assert_null(amn_sig_proof_parse(b, AMN_SIG_PROOF_HDR + 1, &e));
  assert_null(e.nonce);
  /* a method longer than the layout allows is not signed */
  char longm[AMN_SIG_METHOD_MAX + 2];
  memset(longm, 'm', sizeof longm - 1);
  longm[sizeof longm - 1] = 0;
  uint8_t tbs[AMN_SIG_TBS_MAX + 8], h[32] = {0};
  assert_int_equal(amn_sig_query_tbs(tbs, 1, longm, TS, h, h), 0);
  longm[AMN_SIG_METHOD_MAX] = 0;
  assert_int_not_equal(amn_sig_query_tbs(tbs, 1, longm, TS, h, h), 0);
}

/* A key of `pk` (bits) written to a PEM file, and a self-signed certificate
 * of it in DER. */
static void make_key(gnutls_pk_algorithm_t pk, unsigned bits, char *path, gnutls_datum_t *der) {
  gnutls_x509_privkey_t k;
  assert_int_equal(gnutls_x509_privkey_init(&k), 0);
  assert_int_equal(gnutls_x509_privkey_generate(k, pk, bits, 0), 0);
  gnutls_datum_t pem;
  assert_int_equal(gnutls_x509_privkey_export2_pkcs8(k, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &pem), 0);
  strcpy(path, "/tmp/amn-test-sig-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, pem.data, pem.size), (ssize_t)pem.size);
  close(fd);
  gnutls_free(pem.data);
  gnutls_x509_crt_t c;
  assert_int_equal(gnutls_x509_crt_init(&c), 0);
  gnutls_x509_crt_set_version(c, 3);
  unsigned char serial[] = {1};
  gnutls_x509_crt_set_serial(c, serial, 1);
  gnutls_x509_crt_set_activation_time(c, time(NULL) - 60);
  gnutls_x509_crt_set_expiration_time(c, time(NULL) + 3600);
  gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, "k", 1);
  assert_int_equal(gnutls_x509_crt_set_key(c, k), 0);
  assert_int_equal(gnutls_x509_crt_sign2(c, c, k, pk == GNUTLS_PK_EDDSA_ED25519 ? GNUTLS_DIG_UNKNOWN : GNUTLS_DIG_SHA256, 0), 0);
  assert_int_equal(gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_DER, der), 0);
  gnutls_x509_crt_deinit(c);
  gnutls_x509_privkey_deinit(k);
}

/* Each key type signs; the signature verifies under its certificate only,
 * for the signed bytes only, with its own algorithm only. */
static void test_sign_verify(void **st) {
  (void)st;
  static const struct {
    gnutls_pk_algorithm_t pk;
    unsigned bits;
    uint8_t alg;
  } kinds[] = {
      {GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), AMN_SIG_ECDSA_P256_SHA256},
      {GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP384R1), AMN_SIG_ECDSA_P384_SHA384},
      {GNUTLS_PK_EDDSA_ED25519, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED25519), AMN_SIG_ED25519},
      {GNUTLS_PK_RSA, 2048, AMN_SIG_RSA_PSS_SHA256},
  };
  char paths[4][64];
  gnutls_datum_t ders[4];
  for (int i = 0; i < 4; i++) make_key(kinds[i].pk, kinds[i].bits, paths[i], &ders[i]);
  uint8_t tbs[AMN_SIG_TBS_MAX], nonce[16] = {7}, h[32];
  amn_sig_sha256("q", 1, h);
  size_t n = amn_sig_query_tbs(tbs, 0, M, TS, nonce, h);
  for (int i = 0; i < 4; i++) {
    amn_signer *s = NULL;
    char err[256] = "";
    assert_int_equal(amn_signer_load(&s, paths[i], err, sizeof err), 0);
    assert_int_equal(amn_signer_alg(s), kinds[i].alg);
    tbs[31] = kinds[i].alg;
    uint8_t sig[AMN_SIG_MAX_LEN];
    int sl = amn_signer_sign(s, tbs, n, sig);
    assert_true(sl > 0);
    assert_null(amn_sig_verify(ders[i].data, ders[i].size, kinds[i].alg, tbs, n, sig, (size_t)sl));
    /* another key's certificate */
    int j = (i + 1) % 4;
    assert_non_null(amn_sig_verify(ders[j].data, ders[j].size, kinds[i].alg, tbs, n, sig, (size_t)sl));
    /* other bytes */
    tbs[n - 1] ^= 1;
    assert_string_equal(amn_sig_verify(ders[i].data, ders[i].size, kinds[i].alg, tbs, n, sig, (size_t)sl),
                        "does not verify");
    tbs[n - 1] ^= 1;
    /* a tampered signature */
    sig[sl / 2] ^= 0x10;
    assert_non_null(amn_sig_verify(ders[i].data, ders[i].size, kinds[i].alg, tbs, n, sig, (size_t)sl));
    sig[sl / 2] ^= 0x10;
    /* another algorithm code for the same key */
    uint8_t other = kinds[i].alg == AMN_SIG_ECDSA_P256_SHA256 ? AMN_SIG_ECDSA_P384_SHA384 : AMN_SIG_ECDSA_P256_SHA256;
    assert_string_equal(amn_sig_verify(ders[i].data, ders[i].size, other, tbs, n, sig, (size_t)sl),
                        "algorithm does not match the certificate's key");
    assert_string_equal(amn_sig_verify(NULL, 0, kinds[i].alg, tbs, n, sig, (size_t)sl),
                        "no peer certificate to verify against");
    amn_signer_free(s);
  }
  for (int i = 0; i < 4; i++) {
    unlink(paths[i]);
    gnutls_free(ders[i].data);
  }
  amn_signer *s = NULL;
  char err[256] = "";
  assert_int_equal(amn_signer_load(&s, "/nonexistent/key.pem", err, sizeof err), AMN_EIO);
  assert_null(s);
}

static void test_replay(void **st) {
  (void)st;
  amn_sig_replay *r = amn_sig_replay_new(64);
  assert_non_null(r);
  uint8_t a[16] = {1}, b[16] = {2};
  assert_int_equal(amn_sig_replay_check(r, a, 2000, 1000), AMN_REPLAY_FRESH);
  assert_int_equal(amn_sig_replay_check(r, a, 2000, 1500), AMN_REPLAY_SEEN);
  assert_int_equal(amn_sig_replay_check(r, b, 2000, 1500), AMN_REPLAY_FRESH);
  assert_int_equal(amn_sig_replay_check(r, a, 3000, 1999), AMN_REPLAY_SEEN);
  /* expired: free again */
  assert_int_equal(amn_sig_replay_check(r, a, 3000, 2000), AMN_REPLAY_FRESH);
  /* full: 64 live nonces, the 65th is not recorded, the known ones still found */
  amn_sig_replay_free(r);
  r = amn_sig_replay_new(64);
  uint8_t n[16] = {0};
  for (int i = 0; i < 64; i++) {
    n[0] = (uint8_t)i, n[15] = 0xee;
    assert_int_equal(amn_sig_replay_check(r, n, 5000, 100), AMN_REPLAY_FRESH);
  }
  n[0] = 200;
  assert_int_equal(amn_sig_replay_check(r, n, 5000, 100), AMN_REPLAY_FULL);
  for (int i = 0; i < 64; i++) {
    n[0] = (uint8_t)i;
    assert_int_equal(amn_sig_replay_check(r, n, 5000, 100), AMN_REPLAY_SEEN);
  }
  n[0] = 200;
  assert_int_equal(amn_sig_replay_check(r, n, 9000, 5000), AMN_REPLAY_FRESH);
  amn_sig_replay_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_query_layout), cmocka_unit_test(test_proof_layout),
      cmocka_unit_test(test_parse_errors), cmocka_unit_test(test_sign_verify),
      cmocka_unit_test(test_replay),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
