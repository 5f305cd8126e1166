/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The envelopes of signed queries and signed results as a server and a
 * client parse them from the peer (src/tls/sig_layout.c:
 * amn_sig_query_parse for client_signature, amn_sig_proof_parse for
 * server_proof), and the verification of the signature bytes they carry
 * (src/tls/sign.c: amn_sig_verify, GnuTLS). Input: one field's bytes.
 * Invariants:
 *  - each parser returns NULL or a reason, and accepts exactly what an
 *    independent reading of docs/SIGNATURES.md accepts: version 1, a known
 *    algorithm (1..4), a header of 26 (query) or 10 (proof) bytes, then 1 to
 *    1024 signature bytes;
 *  - an accepted envelope's fields are those bytes (timestamp big-endian,
 *    nonce and signature views inside the input), and the header written
 *    back by amn_sig_query_hdr / amn_sig_proof_hdr followed by the signature
 *    is the input, byte for byte;
 *  - the signature bytes never verify under a key made for this run (of
 *    each algorithm's own key type when it is ECDSA P-256 or Ed25519): the
 *    verifier refuses with a reason, whatever the bytes.
 */
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <time.h>

#include "fuzz_common.h"
#include "tls/sig.h"

static gnutls_datum_t g_cert[5]; /* by algorithm code: a self-signed certificate of a fresh key */

static void make_cert(gnutls_pk_algorithm_t pk, unsigned bits, gnutls_datum_t *der) {
  gnutls_x509_privkey_t k;
  gnutls_x509_crt_t c;
  FUZZ_CHECK(gnutls_x509_privkey_init(&k) == 0 && gnutls_x509_privkey_generate(k, pk, bits, 0) == 0);
  FUZZ_CHECK(gnutls_x509_crt_init(&c) == 0);
  unsigned char serial[] = {1};
  gnutls_x509_crt_set_version(c, 3);
  gnutls_x509_crt_set_serial(c, serial, 1);
  gnutls_x509_crt_set_activation_time(c, time(NULL) - 60);
  gnutls_x509_crt_set_expiration_time(c, time(NULL) + 86400);
  FUZZ_CHECK(gnutls_x509_crt_set_key(c, k) == 0);
  FUZZ_CHECK(gnutls_x509_crt_sign2(c, c, k, pk == GNUTLS_PK_EDDSA_ED25519 ? GNUTLS_DIG_UNKNOWN : GNUTLS_DIG_SHA256,
                                   0) == 0);
  FUZZ_CHECK(gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_DER, der) == 0);
  gnutls_x509_crt_deinit(c);
  gnutls_x509_privkey_deinit(k);
}

static uint64_t be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static void one(const uint8_t *data, size_t size, bool query) {
  size_t hdr = query ? 26 : 10;
  amn_sig_env e;
  const char *why = query ? amn_sig_query_parse(data, size, &e) : amn_sig_proof_parse(data, size, &e);
  bool want = size > hdr && size - hdr <= 1024 && data[0] == 1 && data[1] >= 1 && data[1] <= 4;
  FUZZ_CHECK((why == NULL) == want);
  if (why) {
    FUZZ_CHECK(why[0] != 0);
    return;
  }
  FUZZ_CHECK(e.alg == data[1] && e.ts_ms == be64(data + 2));
  FUZZ_CHECK(e.sig == data + hdr && e.sig_len == size - hdr);
  FUZZ_CHECK(query ? e.nonce == data + 10 : e.nonce == NULL);
  uint8_t back[26 + 1024];
  if (query) amn_sig_query_hdr(back, e.alg, e.ts_ms, e.nonce);
  else amn_sig_proof_hdr(back, e.alg, e.ts_ms);
  memcpy(back + hdr, e.sig, e.sig_len);
  FUZZ_CHECK(memcmp(back, data, size) == 0);
  /* the bytes do not verify under this run's key of that type */
  uint8_t tbs[AMN_SIG_TBS_MAX], h[32] = {0};
  size_t n = query ? amn_sig_query_tbs(tbs, e.alg, "/amaters.v1.AmateRS/Execute", e.ts_ms, e.nonce, h)
                   : amn_sig_proof_tbs(tbs, e.alg, "/amaters.v1.AmateRS/Execute", e.ts_ms, h, h);
  const gnutls_datum_t *c = &g_cert[e.alg == AMN_SIG_ED25519 ? AMN_SIG_ED25519 : AMN_SIG_ECDSA_P256_SHA256];
  const char *v = amn_sig_verify(c->data, c->size, e.alg, tbs, n, e.sig, e.sig_len);
  FUZZ_CHECK(v != NULL && v[0] != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_cert[1].data) {
    make_cert(GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), &g_cert[AMN_SIG_ECDSA_P256_SHA256]);
    make_cert(GNUTLS_PK_EDDSA_ED25519, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED25519), &g_cert[AMN_SIG_ED25519]);
  }
  one(data, size, true);
  one(data, size, false);
  return 0;
}
