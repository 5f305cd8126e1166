/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Signed queries and signed results on the client (docs/SIGNATURES.md):
 * the client_signature of each QueryRequest (sign_queries: made with the
 * client's own key), and the check of an Execute response's server_proof
 * against the certificate of the server that answered (verify_proofs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amn/proto.h"
#include "client/client_internal.h"
#include "tls/sig.h"
#include "util/log.h"

int amn_csig_init(amn_client *cl, char *err, size_t errlen) {
  if (!cl->o.sign_queries && !cl->o.verify_proofs) return 0;
  if (!cl->tls_on)
    return amn_set_err(err, errlen, AMN_EINVAL, "signed queries and results need TLS (https://)");
  if (!cl->o.sign_queries) return 0;
  return amn_signer_load(&cl->signer, cl->o.tls.key_path, err, errlen);
}

void amn_csig_free(amn_client *cl) {
  amn_signer_free(cl->signer);
  cl->signer = NULL;
}

/* Writes the client's signature envelope for (method, query) into env;
 * its length, or a negative code. */
static int sign_query(amn_client *cl, const char *method, const uint8_t *q, size_t ql, uint8_t *env) {
  uint8_t nonce[AMN_SIG_NONCE_LEN], h[32], tbs[AMN_SIG_TBS_MAX];
  uint8_t alg = amn_signer_alg(cl->signer);
  uint64_t ts = amn_sig_now_ms();
  amn_sig_sha256(q, ql, h);
  size_t n = amn_sig_random(nonce, sizeof nonce) == 0 ? amn_sig_query_tbs(tbs, alg, method, ts, nonce, h) : 0;
  int l = n ? amn_signer_sign(cl->signer, tbs, n, env + AMN_SIG_QUERY_HDR) : AMN_EINVAL;
  if (l <= 0) return AMN_ETLS;
  amn_sig_query_hdr(env, alg, ts, nonce);
  return AMN_SIG_QUERY_HDR + l;
}

_Static_assert(AMN_CLIENT_SIGNATURE_MAX >= AMN_SIG_QUERY_HDR + AMN_SIG_MAX_LEN, "signature buffer");

int amn_client_sign_query(amn_client *cl, const char *method, const uint8_t *query, size_t query_len, uint8_t *out) {
  if (!cl || !method || !out || (query_len && !query)) return AMN_EINVAL;
  if (!cl->signer) return AMN_ESTATE;
  return sign_query(cl, method, query, query_len, out);
}

uint8_t *amn_csig_request(amn_client *cl, const char *method, const uint8_t *q, size_t ql, const uint8_t *sig,
                          size_t sl, size_t *out_len, int *rc) {
  uint8_t env[AMN_SIG_QUERY_HDR + AMN_SIG_MAX_LEN];
  *rc = 0;
  if (cl->signer && !sl) {
    int l = sign_query(cl, method, q, ql, env);
    if (l < 0) {
      *rc = l;
      return NULL;
    }
    sig = env;
    sl = (size_t)l;
  }
  size_t n = amn_pair_encoded_size(ql, sl);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) {
    *rc = AMN_ENOMEM;
    return NULL;
  }
  amn_pair_encode(buf, q, ql, sig, sl);
  *out_len = n;
  return buf;
}

uint8_t *amn_csig_stream_msg(amn_client *cl, const char *method, const uint8_t *msg, size_t len, size_t *out_len,
                             int *rc) {
  amn_pair_view v;
  *rc = 0;
  if (!cl->signer || strcmp(method, AMN_METHOD_EXECUTE_STREAM) != 0 || amn_pair_decode(msg, len, &v) != 0 || v.f2_len)
    return NULL; /* not ours to sign: sent as it is */
  return amn_csig_request(cl, method, v.f1, v.f1_len, NULL, 0, out_len, rc);
}

const char *amn_csig_check_proof(const uint8_t *der, size_t der_len, const char *method, const uint8_t *q, size_t ql,
                                 const uint8_t *res, size_t rl, const uint8_t *proof, size_t pl) {
  static _Thread_local char why[128];
  if (!pl) return "server proof missing";
  amn_sig_env e;
  const char *r = amn_sig_proof_parse(proof, pl, &e);
  if (r) {
    snprintf(why, sizeof why, "server proof malformed: %s", r);
    return why;
  }
  uint8_t qh[32], rh[32], tbs[AMN_SIG_TBS_MAX];
  amn_sig_sha256(q, ql, qh);
  amn_sig_sha256(res, rl, rh);
  size_t n = amn_sig_proof_tbs(tbs, e.alg, method, e.ts_ms, qh, rh);
  if ((r = amn_sig_verify(der, der_len, e.alg, tbs, n, e.sig, e.sig_len))) {
    snprintf(why, sizeof why, "server proof %s", r);
    return why;
  }
  return NULL;
}
