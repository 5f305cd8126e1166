/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The crypto of signed queries and signed results (GnuTLS): a signer made
 * from a private key file, verification against a certificate's key, SHA-256,
 * wall-clock milliseconds and random nonces. */
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "amn/common.h"
#include "tls/sig.h"
#include "util/log.h"

struct amn_signer {
  gnutls_privkey_t key;
  uint8_t alg;
};

static gnutls_sign_algorithm_t gnutls_alg(uint8_t alg) {
  switch (alg) {
  case AMN_SIG_ECDSA_P256_SHA256: return GNUTLS_SIGN_ECDSA_SHA256;
  case AMN_SIG_ECDSA_P384_SHA384: return GNUTLS_SIGN_ECDSA_SHA384;
  case AMN_SIG_ED25519: return GNUTLS_SIGN_EDDSA_ED25519;
  case AMN_SIG_RSA_PSS_SHA256: return GNUTLS_SIGN_RSA_PSS_RSAE_SHA256;
  default: return GNUTLS_SIGN_UNKNOWN;
  }
}

/* The algorithm a public key implies (0: none of ours). */
static uint8_t alg_of_pubkey(gnutls_pubkey_t pub) {
  int pk = gnutls_pubkey_get_pk_algorithm(pub, NULL);
  if (pk == GNUTLS_PK_EDDSA_ED25519) return AMN_SIG_ED25519;
  if (pk == GNUTLS_PK_RSA) return AMN_SIG_RSA_PSS_SHA256;
  if (pk != GNUTLS_PK_ECDSA) return 0;
  gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
  gnutls_datum_t x = {NULL, 0}, y = {NULL, 0};
  if (gnutls_pubkey_export_ecc_raw2(pub, &curve, &x, &y, 0) < 0) return 0;
  gnutls_free(x.data);
  gnutls_free(y.data);
  return curve == GNUTLS_ECC_CURVE_SECP256R1 ? AMN_SIG_ECDSA_P256_SHA256
         : curve == GNUTLS_ECC_CURVE_SECP384R1 ? AMN_SIG_ECDSA_P384_SHA384
                                                : 0;
}

int amn_signer_load(amn_signer **out, const char *key_path, char *err, size_t errlen) {
  *out = NULL;
  if (!key_path) return amn_set_err(err, errlen, AMN_EINVAL, "signing needs a private key file");
  gnutls_datum_t d = {NULL, 0};
  if (gnutls_load_file(key_path, &d) < 0)
    return amn_set_err(err, errlen, AMN_EIO, "cannot read key file %s", key_path);
  amn_signer *s = calloc(1, sizeof *s);
  gnutls_pubkey_t pub = NULL;
  int rc = AMN_ETLS;
  if (!s) {
    rc = amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
    goto done;
  }
  if (gnutls_privkey_init(&s->key) < 0 ||
      gnutls_privkey_import_x509_raw(s->key, &d, GNUTLS_X509_FMT_PEM, NULL, 0) < 0) {
    amn_set_err(err, errlen, AMN_ETLS, "key file %s: not a PEM private key", key_path);
    goto done;
  }
  if (gnutls_pubkey_init(&pub) < 0 || gnutls_pubkey_import_privkey(pub, s->key, 0, 0) < 0) {
    amn_set_err(err, errlen, AMN_ETLS, "key file %s: cannot derive its public key", key_path);
    goto done;
  }
  s->alg = alg_of_pubkey(pub);
  if (!s->alg) {
    amn_set_err(err, errlen, AMN_ETLS,
                "key file %s: cannot sign with this key type (ECDSA P-256/P-384, Ed25519 or RSA needed)",
                key_path);
    goto done;
  }
  rc = 0;
done:
  gnutls_pubkey_deinit(pub);
  gnutls_free(d.data);
  if (rc) amn_signer_free(s);
  else *out = s;
  return rc;
}

void amn_signer_free(amn_signer *s) {
  if (!s) return;
  if (s->key) gnutls_privkey_deinit(s->key);
  free(s);
}

uint8_t amn_signer_alg(const amn_signer *s) { return s->alg; }

int amn_signer_sign(const amn_signer *s, const uint8_t *tbs, size_t tbs_len, uint8_t *sig) {
  gnutls_datum_t in = {(unsigned char *)tbs, (unsigned)tbs_len}, o = {NULL, 0};
  if (gnutls_privkey_sign_data2(s->key, gnutls_alg(s->alg), 0, &in, &o) < 0) return AMN_ETLS;
  int n = (int)o.size;
  if (o.size > AMN_SIG_MAX_LEN) n = AMN_ETLS;
  else memcpy(sig, o.data, o.size);
  gnutls_free(o.data);
  return n;
}

const char *amn_sig_verify(const uint8_t *cert, size_t cert_len, uint8_t alg, const uint8_t *tbs, size_t tbs_len,
                           const uint8_t *sig, size_t sig_len) {
  if (!cert || !cert_len) return "no peer certificate to verify against";
  gnutls_pubkey_t pub;
  if (gnutls_pubkey_init(&pub) < 0) return "out of memory";
  const char *why = NULL;
  gnutls_datum_t c = {(unsigned char *)cert, (unsigned)cert_len};
  if (gnutls_pubkey_import_x509_raw(pub, &c, GNUTLS_X509_FMT_DER, 0) < 0) {
    why = "peer certificate unreadable";
  } else if (alg_of_pubkey(pub) != alg) {
    why = "algorithm does not match the certificate's key";
  } else {
    gnutls_datum_t m = {(unsigned char *)tbs, (unsigned)tbs_len}, s = {(unsigned char *)sig, (unsigned)sig_len};
    if (gnutls_pubkey_verify_data2(pub, gnutls_alg(alg), 0, &m, &s) < 0) why = "does not verify";
  }
  gnutls_pubkey_deinit(pub);
  return why;
}

void amn_sig_sha256(const void *data, size_t len, uint8_t out[32]) {
  gnutls_hash_fast(GNUTLS_DIG_SHA256, len ? data : "", len, out);
}

uint64_t amn_sig_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int amn_sig_random(uint8_t *out, size_t len) {
  return gnutls_rnd(GNUTLS_RND_NONCE, out, len) == 0 ? 0 : AMN_ETLS;
}
