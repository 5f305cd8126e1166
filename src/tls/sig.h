/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: signed queries (QueryRequest.client_signature) and signed results
 * (QueryResponse.server_proof). The byte layouts are specified in
 * docs/SIGNATURES.md; this header is their C form.
 *
 * sig_layout.c is pure (no clock, no crypto, no allocation): it builds the
 * bytes that are signed and encodes / parses the envelopes carried in the
 * two fields. sign.c holds the crypto (GnuTLS): a signer made from a private
 * key file, verification against a DER certificate, SHA-256.
 */
#ifndef AMN_TLS_SIG_H
#define AMN_TLS_SIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Envelope version (first byte of both envelopes). */
#define AMN_SIG_VERSION 1
/* Algorithms (second byte of both envelopes, and part of the signed bytes). */
enum {
  AMN_SIG_ECDSA_P256_SHA256 = 1, /* ECDSA on P-256 over SHA-256, DER (r,s) */
  AMN_SIG_ECDSA_P384_SHA384 = 2, /* ECDSA on P-384 over SHA-384, DER (r,s) */
  AMN_SIG_ED25519 = 3,           /* Ed25519 (RFC 8032, pure), 64 bytes */
  AMN_SIG_RSA_PSS_SHA256 = 4,    /* RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 */
};
#define AMN_SIG_NONCE_LEN 16
#define AMN_SIG_MAX_LEN 1024          /* longest signature accepted (RSA 8192) */
#define AMN_SIG_QUERY_HDR 26          /* version, alg, ts (8), nonce (16) */
#define AMN_SIG_PROOF_HDR 10          /* version, alg, ts (8) */
#define AMN_SIG_METHOD_MAX 1024       /* longest method path that may be signed */
/* Domain-separation strings, NUL included in the signed bytes. */
#define AMN_SIG_QUERY_DOMAIN "amaters-net query signature v1"
#define AMN_SIG_PROOF_DOMAIN "amaters-net result proof v1"
/* Longest signed message: domain, alg, method (u16 length + bytes), ts, nonce
 * or hash, hash. */
#define AMN_SIG_TBS_MAX (32 + 1 + 2 + AMN_SIG_METHOD_MAX + 8 + 32 + 32)

/* A parsed client_signature or server_proof (views into the input). */
typedef struct amn_sig_env {
  uint8_t alg;
  uint64_t ts_ms;                     /* unix time, milliseconds */
  const uint8_t *nonce;               /* query envelope only */
  const uint8_t *sig;
  size_t sig_len;
} amn_sig_env;

/* Name of an algorithm ("ecdsa-p256-sha256", ...), or NULL if unknown. */
const char *amn_sig_alg_name(uint8_t alg);

/* The bytes a client signs for one QueryRequest; returns their length, or
 * 0 when the method is longer than AMN_SIG_METHOD_MAX (out holds at least
 * AMN_SIG_TBS_MAX bytes). */
size_t amn_sig_query_tbs(uint8_t *out, uint8_t alg, const char *method, uint64_t ts_ms,
                         const uint8_t nonce[AMN_SIG_NONCE_LEN], const uint8_t query_sha256[32]);
/* The bytes a server signs for one QueryResponse (same return values). */
size_t amn_sig_proof_tbs(uint8_t *out, uint8_t alg, const char *method, uint64_t ts_ms,
                         const uint8_t query_sha256[32], const uint8_t result_sha256[32]);

/* Envelopes: write the header (AMN_SIG_QUERY_HDR / AMN_SIG_PROOF_HDR bytes);
 * the signature follows it. */
void amn_sig_query_hdr(uint8_t *out, uint8_t alg, uint64_t ts_ms, const uint8_t nonce[AMN_SIG_NONCE_LEN]);
void amn_sig_proof_hdr(uint8_t *out, uint8_t alg, uint64_t ts_ms);

/* Parse an envelope. Returns NULL, or the reason it is malformed
 * ("empty", "unsupported version N", "unknown algorithm N", "truncated",
 * "signature longer than 1024 bytes"). */
const char *amn_sig_query_parse(const uint8_t *b, size_t len, amn_sig_env *out);
const char *amn_sig_proof_parse(const uint8_t *b, size_t len, amn_sig_env *out);

/* ---- crypto (sign.c) ---- */

/* A private key that signs, with the algorithm its type implies. Immutable
 * after load; usable from any thread. */
typedef struct amn_signer amn_signer;

/* Loads a PEM private key (PKCS#8 or the key's own format) and derives the
 * algorithm: ECDSA P-256 / P-384, Ed25519, RSA (PSS). Returns 0, or
 * AMN_EIO / AMN_ETLS with the reason in err (another curve or key type). */
int amn_signer_load(amn_signer **out, const char *key_path, char *err, size_t errlen);
void amn_signer_free(amn_signer *s);
uint8_t amn_signer_alg(const amn_signer *s);
/* Signs `tbs`; writes at most AMN_SIG_MAX_LEN bytes to sig. Returns the
 * signature's length, or a negative AMN_E* code. */
int amn_signer_sign(const amn_signer *s, const uint8_t *tbs, size_t tbs_len, uint8_t *sig);

/* Verifies `sig` over `tbs` with the public key of the DER certificate
 * `cert` for algorithm `alg` (the key must be of that algorithm's type and
 * curve). Returns NULL when valid, else the reason ("signature does not
 * verify", "algorithm X does not match the certificate's key", ...). */
const char *amn_sig_verify(const uint8_t *cert, size_t cert_len, uint8_t alg, const uint8_t *tbs, size_t tbs_len,
                           const uint8_t *sig, size_t sig_len);

/* SHA-256 of `len` bytes. */
void amn_sig_sha256(const void *data, size_t len, uint8_t out[32]);
/* Unix time in milliseconds (CLOCK_REALTIME). */
uint64_t amn_sig_now_ms(void);
/* Fills `out` with random bytes (GnuTLS's nonce generator); 0 or AMN_ETLS. */
int amn_sig_random(uint8_t *out, size_t len);

#endif
