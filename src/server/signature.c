/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Signed queries and signed results on the server (docs/SIGNATURES.md):
 * the check of a QueryRequest's client_signature against the certificate
 * the client presented (amn_call_peer), its age and its nonce, before the
 * Execute / ExecuteStream handler runs; and the server_proof of an Execute
 * response whose handler supplied none.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amn/proto.h"
#include "server/server_internal.h"
#include "server/sig_replay.h"
#include "tls/sig.h"
#include "util/log.h"

int amn_srv_sig_init(amn_server *s, char *err, size_t errlen) {
  if (!s->o.signature_window_ms) s->o.signature_window_ms = 30000;
  if (!s->o.signature_replay_entries) s->o.signature_replay_entries = 262144;
  if (s->o.require_client_signature) {
    if (s->o.tls.insecure)
      return amn_set_err(err, errlen, AMN_EINVAL, "require_client_signature needs TLS (a client certificate)");
    s->replay = amn_sig_replay_new(s->o.signature_replay_entries);
    if (!s->replay) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory (signature replay table)");
  }
  if (s->o.sign_results) {
    if (s->o.tls.insecure) return amn_set_err(err, errlen, AMN_EINVAL, "sign_results needs the server's TLS key");
    int rc = amn_signer_load(&s->signer, s->o.tls.key_path, err, errlen);
    if (rc) return rc;
  }
  return 0;
}

void amn_srv_sig_free(amn_server *s) {
  amn_sig_replay_free(s->replay);
  s->replay = NULL;
  amn_signer_free(s->signer);
  s->signer = NULL;
}

/* The reason a signed query is refused, or NULL (verified). */
static const char *verify(amn_call *c, const amn_query *q, amn_status_code *code) {
  amn_server *s = c->sl->srv;
  *code = AMN_STATUS_UNAUTHENTICATED;
  if (!q->signature_len) return "missing";
  amn_sig_env e;
  const char *why = amn_sig_query_parse(q->client_signature, q->signature_len, &e);
  if (why) {
    static _Thread_local char buf[96];
    snprintf(buf, sizeof buf, "malformed: %s", why);
    return buf;
  }
  uint64_t now = amn_sig_now_ms(), w = s->o.signature_window_ms;
  if (e.ts_ms + w < now || e.ts_ms > now + w) return "stale (timestamp outside the window)";
  uint8_t h[32], tbs[AMN_SIG_TBS_MAX];
  amn_sig_sha256(q->query_bytes, q->query_len, h);
  size_t n = amn_sig_query_tbs(tbs, e.alg, c->method, e.ts_ms, e.nonce, h);
  const amn_peer_identity *p = c->peer;
  if ((why = amn_sig_verify(p ? p->cert_der : NULL, p ? p->cert_der_len : 0, e.alg, tbs, n, e.sig, e.sig_len))) return why;
  switch (amn_sig_replay_check(s->replay, e.nonce, e.ts_ms + w + 1, now)) {
  case AMN_REPLAY_FRESH: return NULL;
  case AMN_REPLAY_SEEN: return "replayed (nonce already seen)";
  default: *code = AMN_STATUS_UNAVAILABLE; return "not checked: replay cache full";
  }
}

const char *amn_srv_sig_check(amn_call *c, amn_query *q, amn_status_code *code) {
  amn_server *s = c->sl->srv;
  q->signature_verified = false;
  c->sig_verified = false;
  *code = AMN_STATUS_OK;
  if (s->signer && c->method && strcmp(c->method, AMN_METHOD_EXECUTE) == 0) {
    amn_sig_sha256(q->query_bytes, q->query_len, c->q_sha256);
    c->q_hashed = true;
  }
  if (!s->o.require_client_signature) return NULL;
  /* a stream refused earlier: its later messages go nowhere */
  if (atomic_load(&c->finish_called)) return "";
  const char *why = verify(c, q, code);
  if (why) {
    static _Thread_local char msg[160];
    snprintf(msg, sizeof msg, "client signature %s", why);
    return msg;
  }
  *code = AMN_STATUS_OK;
  q->signature_verified = c->sig_verified = true;
  return NULL;
}

size_t amn_srv_sig_proof(amn_call *c, const uint8_t *result, size_t len, uint8_t *out) {
  amn_server *s = c->sl->srv;
  if (!s->signer || !c->q_hashed) return 0;
  uint8_t rh[32], tbs[AMN_SIG_TBS_MAX];
  amn_sig_sha256(result, len, rh);
  uint8_t alg = amn_signer_alg(s->signer);
  uint64_t ts = amn_sig_now_ms();
  size_t n = amn_sig_proof_tbs(tbs, alg, c->method, ts, c->q_sha256, rh);
  int sl = n ? amn_signer_sign(s->signer, tbs, n, out + AMN_SIG_PROOF_HDR) : AMN_EINVAL;
  if (sl <= 0) {
    AMN_WARN("call %s: cannot sign the result (the response goes without a proof)", c->method);
    return 0;
  }
  amn_sig_proof_hdr(out, alg, ts);
  return AMN_SIG_PROOF_HDR + (size_t)sl;
}
