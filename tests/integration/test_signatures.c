/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Signed queries (client_signature) and signed results (server_proof) end
 * to end over loopback mTLS, per transport (AMN_TEST_TRANSPORT=h2|h3):
 * a valid signature with each client key type (ECDSA P-256 from the
 * development PKI; P-384, Ed25519, RSA issued here with certtool by the
 * same CA), and each refusal the server makes (missing, wrong key, tampered
 * bytes, stale timestamp, replayed nonce, malformed), on Execute and on each
 * message of ExecuteStream; proofs the server makes, verified by the client,
 * and a wrong one (supplied by the handler) detected as DATA_LOSS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amn/proto.h"
#include "fixture.h"
#include "tls/sig.h"

static amn_server *g_srv;
static amn_t_counter g_verified = AMN_T_COUNTER_INIT;   /* queries that reached a handler verified */
static amn_t_counter g_unverified = AMN_T_COUNTER_INIT; /* ... unverified */
static amn_signer *g_srv_key;                           /* the server's key, for the handler's forged proofs */

/* Key types issued by the test's CA for clients: files in amn_t_dir. */
static const char *const kinds[] = {"p384", "ed25519", "rsa"};
static amn_tls_opts g_kind_tls[3];
static char g_kind_paths[3][2][300];

static void note_query(const amn_query *q, amn_call *c) {
  assert_true(q->signature_verified == amn_call_signature_verified(c));
  amn_t_counter_add(q->signature_verified ? &g_verified : &g_unverified, 1);
}

/* Execute: echoes; "forge-proof" gets a proof the server's key made over
 * another result, "junk-proof" bytes that are no proof, others the
 * library's proof (when sign_results). */
static void exec(amn_call *c, const amn_query *q, void *ud) {
  (void)ud;
  note_query(q, c);
  if (q->query_len == 11 && memcmp(q->query_bytes, "forge-proof", 11) == 0) {
    uint8_t qh[32], rh[32], tbs[AMN_SIG_TBS_MAX], env[AMN_SIG_PROOF_HDR + AMN_SIG_MAX_LEN];
    amn_sig_sha256(q->query_bytes, q->query_len, qh);
    amn_sig_sha256("something else", 14, rh);
    uint64_t ts = amn_sig_now_ms();
    uint8_t alg = amn_signer_alg(g_srv_key);
    size_t n = amn_sig_proof_tbs(tbs, alg, AMN_METHOD_EXECUTE, ts, qh, rh);
    int sl = amn_signer_sign(g_srv_key, tbs, n, env + AMN_SIG_PROOF_HDR);
    assert_true(sl > 0);
    amn_sig_proof_hdr(env, alg, ts);
    amn_call_reply_query(c, q->query_bytes, q->query_len, env, AMN_SIG_PROOF_HDR + (size_t)sl);
    return;
  }
  if (q->query_len == 10 && memcmp(q->query_bytes, "junk-proof", 10) == 0) {
    amn_call_reply_query(c, q->query_bytes, q->query_len, (const uint8_t *)"\x01\x01junk", 6);
    return;
  }
  amn_call_reply_query(c, q->query_bytes, q->query_len, NULL, 0);
}

static void on_query(amn_call *c, const amn_query *q, void *ud) {
  (void)ud;
  note_query(q, c);
  amn_call_send_query_response(c, q->query_bytes, q->query_len, NULL, 0);
}
static void on_half_close(amn_call *c, void *ud) {
  (void)ud;
  amn_call_finish(c, AMN_STATUS_OK, NULL);
}
static void on_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)ud;
  amn_call_finish(c, why, NULL);
}

static uint32_t g_replay_entries; /* the next server's signature_replay_entries (0: the default) */

static amn_server *start(bool require, bool sign_results, uint32_t window_ms) {
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.listen = "127.0.0.1:0";
  o.tls = amn_t_stls;
  o.threads = 2;
  o.transport = amn_t_transport == AMN_TRANSPORT_H3 ? AMN_TRANSPORT_BOTH : amn_t_transport;
  o.drain_timeout_ms = 3000;
  o.require_client_signature = require;
  o.sign_results = sign_results;
  o.signature_window_ms = window_ms;
  o.signature_replay_entries = g_replay_entries;
  amn_server *s = NULL;
  char err[256] = "";
  int rc = amn_server_new(&s, &o, err, sizeof err);
  if (rc) fprintf(stderr, "server_new: %s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(amn_server_set_execute(s, exec, NULL), 0);
  amn_stream_handler sh = {on_query, on_half_close, on_cancel, NULL, NULL};
  assert_int_equal(amn_server_set_execute_stream(s, &sh), 0);
  assert_int_equal(amn_server_start(s, err, sizeof err), 0);
  return s;
}

static amn_client *client(const amn_tls_opts *tls, bool sign, bool verify) {
  amn_client_opts o;
  amn_client_opts_init(&o);
  char url[64];
  snprintf(url, sizeof url, "https://localhost:%u", amn_server_port(g_srv));
  o.url = url;
  o.tls = tls ? *tls : amn_t_ctls;
  o.transport = amn_t_transport;
  o.connect_timeout_ms = 5000;
  o.sign_queries = sign;
  o.verify_proofs = verify;
  amn_client *c = NULL;
  char err[256] = "";
  int rc = amn_client_new(&c, &o, err, sizeof err);
  if (rc) fprintf(stderr, "client_new: %s\n", err);
  assert_int_equal(rc, 0);
  return c;
}

/* One Execute: its status; the message into msg (when non-NULL). */
static amn_status_code execute(amn_client *c, const char *q, const uint8_t *sig, size_t sig_len, char *msg,
                               size_t msglen) {
  amn_call_opts co = {0};
  co.timeout_ms = 10000;
  amn_result r;
  assert_int_equal(amn_client_execute(c, (const uint8_t *)q, strlen(q), sig, sig_len, &co, &r, NULL, NULL), 0);
  amn_status_code code = r.code;
  if (code == AMN_STATUS_OK) {
    assert_int_equal(r.len, strlen(q));
    assert_memory_equal(r.data, q, r.len);
  }
  if (msg) snprintf(msg, msglen, "%s", r.message ? r.message : "");
  amn_result_free(&r);
  return code;
}

static void expect_refusal(amn_client *c, const char *q, const uint8_t *sig, size_t sig_len, amn_status_code want,
                           const char *want_msg) {
  char msg[256];
  long before = amn_t_counter_get(&g_verified) + amn_t_counter_get(&g_unverified);
  assert_int_equal(execute(c, q, sig, sig_len, msg, sizeof msg), want);
  if (!strstr(msg, want_msg)) fail_msg("message '%s' lacks '%s'", msg, want_msg);
  /* the handler never saw it */
  assert_int_equal(amn_t_counter_get(&g_verified) + amn_t_counter_get(&g_unverified), before);
}

/* A client_signature made by the key at key_path with a chosen timestamp
 * (the library signs with the current time only). */
static size_t sign_at(const char *key_path, const char *method, const char *q, uint64_t ts, uint8_t *env) {
  amn_signer *s = NULL;
  char err[256];
  assert_int_equal(amn_signer_load(&s, key_path, err, sizeof err), 0);
  uint8_t nonce[16], h[32], tbs[AMN_SIG_TBS_MAX];
  assert_int_equal(amn_sig_random(nonce, sizeof nonce), 0);
  amn_sig_sha256(q, strlen(q), h);
  size_t n = amn_sig_query_tbs(tbs, amn_signer_alg(s), method, ts, nonce, h);
  int sl = amn_signer_sign(s, tbs, n, env + AMN_SIG_QUERY_HDR);
  assert_true(sl > 0);
  amn_sig_query_hdr(env, amn_signer_alg(s), ts, nonce);
  amn_signer_free(s);
  return AMN_SIG_QUERY_HDR + (size_t)sl;
}

static int setup(void **st) {
  (void)st;
  if (amn_t_setup("sig") != 0) return -1;
  /* client certificates of the other key types, from the same CA */
  static const char *const gen[] = {"--key-type ecdsa --curve secp384r1", "--key-type ed25519", "--key-type rsa --bits 2048"};
  char tmpl[300];
  snprintf(tmpl, sizeof tmpl, "%s/client.tmpl", amn_t_dir);
  FILE *f = fopen(tmpl, "w");
  if (!f) return -1;
  fputs("cn = \"sig test client\"\ntls_www_client\nsigning_key\nexpiration_days = 2\n", f);
  fclose(f);
  for (int i = 0; i < 3; i++) {
    char *cert = g_kind_paths[i][0], *key = g_kind_paths[i][1], cmd[4096];
    snprintf(cert, 300, "%s/client-%s.pem", amn_t_dir, kinds[i]);
    snprintf(key, 300, "%s/client-%s-key.pem", amn_t_dir, kinds[i]);
    snprintf(cmd, sizeof cmd,
             "certtool --generate-privkey %s --outfile %s >/dev/null 2>&1 && "
             "certtool --generate-certificate --load-privkey %s --load-ca-certificate %s/ca.pem "
             "--load-ca-privkey %s/ca-key.pem --template %s --outfile %s >/dev/null 2>&1 && chmod 600 %s",
             gen[i], key, key, amn_t_dir, amn_t_dir, tmpl, cert, key);
    if (system(cmd) != 0) {
      fprintf(stderr, "certtool failed: %s\n", cmd);
      return -1;
    }
    g_kind_tls[i] = amn_t_ctls;
    g_kind_tls[i].cert_path = cert;
    g_kind_tls[i].key_path = key;
  }
  char err[256];
  if (amn_signer_load(&g_srv_key, amn_t_stls.key_path, err, sizeof err) != 0) return -1;
  return 0;
}

static int teardown(void **st) {
  (void)st;
  amn_signer_free(g_srv_key);
  amn_t_teardown();
  return 0;
}

/* Every key type signs queries the server accepts; the handler sees them verified. */
static void test_valid_each_key_type(void **st) {
  (void)st;
  g_srv = start(true, false, 30000);
  long v0 = amn_t_counter_get(&g_verified);
  amn_client *c = client(NULL, true, false);
  assert_int_equal(execute(c, "p256 query", NULL, 0, NULL, 0), AMN_STATUS_OK);
  amn_client_free(c);
  for (int i = 0; i < 3; i++) {
    c = client(&g_kind_tls[i], true, false);
    char q[64];
    snprintf(q, sizeof q, "%s query", kinds[i]);
    assert_int_equal(execute(c, q, NULL, 0, NULL, 0), AMN_STATUS_OK);
    /* and the signature the application asks for, sent by itself */
    uint8_t sig[AMN_CLIENT_SIGNATURE_MAX];
    int n = amn_client_sign_query(c, AMN_METHOD_EXECUTE, (const uint8_t *)q, strlen(q), sig);
    assert_true(n > AMN_SIG_QUERY_HDR);
    assert_int_equal(sig[1], i == 0 ? AMN_SIG_ECDSA_P384_SHA384 : i == 1 ? AMN_SIG_ED25519 : AMN_SIG_RSA_PSS_SHA256);
    assert_int_equal(execute(c, q, sig, (size_t)n, NULL, 0), AMN_STATUS_OK);
    amn_client_free(c);
  }
  assert_int_equal(amn_t_counter_get(&g_verified) - v0, 7);
  assert_int_equal(amn_t_counter_get(&g_unverified), 0);
  amn_server_free(g_srv);
}

/* Each refusal, with its reason, before the handler. */
static void test_refusals(void **st) {
  (void)st;
  g_srv = start(true, false, 5000);
  amn_client *plain = client(NULL, false, false);
  amn_client *p384 = client(&g_kind_tls[0], true, false);
  /* missing */
  expect_refusal(plain, "q", NULL, 0, AMN_STATUS_UNAUTHENTICATED, "client signature missing");
  /* wrong key: another client's signature over the same query (same
   * algorithm: ECDSA P-256 key of another certificate is not at hand, so
   * P-384 signed, sent on a P-256 connection; and the reverse with an
   * Ed25519 key's signature, alg matching no key) */
  uint8_t sig[AMN_CLIENT_SIGNATURE_MAX];
  int n = amn_client_sign_query(p384, AMN_METHOD_EXECUTE, (const uint8_t *)"q", 1, sig);
  assert_true(n > 0);
  expect_refusal(plain, "q", sig, (size_t)n, AMN_STATUS_UNAUTHENTICATED,
                 "client signature algorithm does not match the certificate's key");
  /* the same algorithm, another key: a P-256 key made here */
  char other_key[300], cmd[600];
  snprintf(other_key, sizeof other_key, "%s/other-p256-key.pem", amn_t_dir);
  snprintf(cmd, sizeof cmd, "certtool --generate-privkey --key-type ecdsa --curve secp256r1 --outfile %s >/dev/null 2>&1",
           other_key);
  assert_int_equal(system(cmd), 0);
  uint8_t env[AMN_SIG_QUERY_HDR + AMN_SIG_MAX_LEN];
  size_t en = sign_at(other_key, AMN_METHOD_EXECUTE, "q", amn_sig_now_ms(), env);
  expect_refusal(plain, "q", env, en, AMN_STATUS_UNAUTHENTICATED, "client signature does not verify");
  /* tampered bytes: a valid signature of "q1" sent with "q2" */
  amn_client *signer = client(NULL, true, false);
  n = amn_client_sign_query(signer, AMN_METHOD_EXECUTE, (const uint8_t *)"q1", 2, sig);
  expect_refusal(plain, "q2", sig, (size_t)n, AMN_STATUS_UNAUTHENTICATED, "client signature does not verify");
  /* ... a signature for another method */
  n = amn_client_sign_query(signer, AMN_METHOD_EXECUTE_STREAM, (const uint8_t *)"q1", 2, sig);
  expect_refusal(plain, "q1", sig, (size_t)n, AMN_STATUS_UNAUTHENTICATED, "client signature does not verify");
  /* ... a flipped bit in the timestamp, in the signature */
  n = amn_client_sign_query(signer, AMN_METHOD_EXECUTE, (const uint8_t *)"q1", 2, sig);
  sig[9] ^= 1;
  expect_refusal(plain, "q1", sig, (size_t)n, AMN_STATUS_UNAUTHENTICATED, "client signature does not verify");
  sig[9] ^= 1;
  sig[n - 3] ^= 0x40;
  expect_refusal(plain, "q1", sig, (size_t)n, AMN_STATUS_UNAUTHENTICATED, "client signature does not verify");
  sig[n - 3] ^= 0x40;
  /* the untouched one is fine, once */
  assert_int_equal(execute(plain, "q1", sig, (size_t)n, NULL, 0), AMN_STATUS_OK);
  /* replayed */
  expect_refusal(plain, "q1", sig, (size_t)n, AMN_STATUS_UNAUTHENTICATED, "client signature replayed");
  /* ... also on another connection */
  expect_refusal(signer, "q1", sig, (size_t)n, AMN_STATUS_UNAUTHENTICATED, "client signature replayed");
  /* stale: 10 s old, 10 s ahead (window 5 s) */
  en = sign_at(amn_t_ctls.key_path, AMN_METHOD_EXECUTE, "q", amn_sig_now_ms() - 10000, env);
  expect_refusal(plain, "q", env, en, AMN_STATUS_UNAUTHENTICATED, "client signature stale");
  en = sign_at(amn_t_ctls.key_path, AMN_METHOD_EXECUTE, "q", amn_sig_now_ms() + 10000, env);
  expect_refusal(plain, "q", env, en, AMN_STATUS_UNAUTHENTICATED, "client signature stale");
  /* within the window: accepted */
  en = sign_at(amn_t_ctls.key_path, AMN_METHOD_EXECUTE, "q", amn_sig_now_ms() - 2000, env);
  assert_int_equal(execute(plain, "q", env, en, NULL, 0), AMN_STATUS_OK);
  /* malformed */
  expect_refusal(plain, "q", (const uint8_t *)"\x02xyz", 4, AMN_STATUS_UNAUTHENTICATED,
                 "client signature malformed: unsupported version 2");
  expect_refusal(plain, "q", (const uint8_t *)"\x01\x07", 2, AMN_STATUS_UNAUTHENTICATED,
                 "client signature malformed: unknown algorithm 7");
  expect_refusal(plain, "q", env, AMN_SIG_QUERY_HDR, AMN_STATUS_UNAUTHENTICATED, "client signature malformed: truncated");
  amn_client_free(plain);
  amn_client_free(p384);
  amn_client_free(signer);
  amn_server_free(g_srv);
}

typedef struct sres {
  amn_t_counter msgs, closed;
  amn_status_code code;
  char msg[256];
} sres;

static void s_msg(amn_cstream *s, const uint8_t *m, size_t len, void *ud) {
  (void)s; (void)m; (void)len;
  amn_t_counter_add(&((sres *)ud)->msgs, 1);
}
static void s_close(amn_cstream *s, const amn_result *r, void *ud) {
  (void)s;
  sres *x = ud;
  x->code = r->code;
  snprintf(x->msg, sizeof x->msg, "%s", r->message ? r->message : "");
  amn_t_counter_add(&x->closed, 1);
}

/* ExecuteStream: every message is signed by the library and verified. */
/* refused: the server is to end the stream at its first message, maybe
 * before the later ones are sent (they are refused, ECLOSED, then) */
static void run_stream(amn_client *c, int nmsgs, sres *x, const uint8_t *first_sig, size_t first_sig_len,
                       bool refused) {
  amn_cstream_cbs cbs = {s_msg, s_close, NULL};
  amn_cstream *s = NULL;
  amn_call_opts co = {0};
  co.timeout_ms = 10000;
  assert_int_equal(amn_client_stream_open(c, AMN_METHOD_EXECUTE_STREAM, &co, &cbs, x, &s), 0);
  for (int i = 0; i < nmsgs; i++) {
    char q[32];
    snprintf(q, sizeof q, "stream %d", i);
    uint8_t buf[AMN_CLIENT_SIGNATURE_MAX + 64];
    size_t n = amn_pair_encode(buf, (const uint8_t *)q, strlen(q), i == 0 ? first_sig : NULL, i == 0 ? first_sig_len : 0);
    int rc = amn_cstream_send(s, buf, n);
    if (rc == AMN_ECLOSED && refused && i > 0) break;
    if (rc != 0) { /* say why the stream ended before its messages were sent */
      amn_t_counter_wait_ge(&x->closed, 1, 10000);
      fail_msg("message %d: amn_cstream_send: %d; the stream ended: %s: %s", i, rc, amn_status_name(x->code), x->msg);
    }
  }
  amn_cstream_close_send(s);
  assert_true(amn_t_counter_wait_ge(&x->closed, 1, 10000));
  amn_cstream_release(s);
}

static void test_stream(void **st) {
  (void)st;
  g_srv = start(true, false, 30000);
  long v0 = amn_t_counter_get(&g_verified);
  amn_client *c = client(&g_kind_tls[1], true, false);
  sres ok = {AMN_T_COUNTER_INIT, AMN_T_COUNTER_INIT, 0, ""};
  run_stream(c, 5, &ok, NULL, 0, false);
  assert_int_equal(ok.code, AMN_STATUS_OK);
  assert_int_equal(amn_t_counter_get(&ok.msgs), 5);
  assert_int_equal(amn_t_counter_get(&g_verified) - v0, 5);
  /* a message whose signature the caller tampered with ends the stream */
  uint8_t sig[AMN_CLIENT_SIGNATURE_MAX];
  int n = amn_client_sign_query(c, AMN_METHOD_EXECUTE_STREAM, (const uint8_t *)"stream 0", 8, sig);
  sig[n - 1] ^= 1;
  sres bad = {AMN_T_COUNTER_INIT, AMN_T_COUNTER_INIT, 0, ""};
  run_stream(c, 3, &bad, sig, (size_t)n, true);
  assert_int_equal(bad.code, AMN_STATUS_UNAUTHENTICATED);
  assert_non_null(strstr(bad.msg, "client signature does not verify"));
  amn_client_free(c);
  /* unsigned: the first message ends it */
  c = client(NULL, false, false);
  sres none = {AMN_T_COUNTER_INIT, AMN_T_COUNTER_INIT, 0, ""};
  run_stream(c, 3, &none, NULL, 0, true);
  assert_int_equal(none.code, AMN_STATUS_UNAUTHENTICATED);
  assert_non_null(strstr(none.msg, "client signature missing"));
  assert_int_equal(amn_t_counter_get(&none.msgs), 0);
  amn_client_free(c);
  amn_server_free(g_srv);
}

/* Proofs: made by the server, verified by the client; wrong ones detected. */
static void test_proofs(void **st) {
  (void)st;
  g_srv = start(false, true, 30000);
  amn_client *c = client(NULL, false, true);
  char msg[256];
  amn_call_opts co = {0};
  co.timeout_ms = 10000;
  amn_result r;
  uint8_t *proof = NULL;
  size_t plen = 0;
  assert_int_equal(amn_client_execute(c, (const uint8_t *)"prove me", 8, NULL, 0, &co, &r, &proof, &plen), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  assert_true(plen > AMN_SIG_PROOF_HDR);
  assert_int_equal(proof[0], 1);
  assert_int_equal(proof[1], AMN_SIG_ECDSA_P256_SHA256);
  amn_result_free(&r);
  free(proof);
  /* the handler's own proof bytes go out unchanged: a proof of another
   * result, and bytes that are no proof */
  assert_int_equal(execute(c, "forge-proof", NULL, 0, msg, sizeof msg), AMN_STATUS_DATA_LOSS);
  assert_string_equal(msg, "server proof does not verify");
  assert_int_equal(execute(c, "junk-proof", NULL, 0, msg, sizeof msg), AMN_STATUS_DATA_LOSS);
  assert_string_equal(msg, "server proof malformed: truncated");
  /* a client that does not verify takes them */
  amn_client *lax = client(NULL, false, false);
  assert_int_equal(execute(lax, "forge-proof", NULL, 0, NULL, 0), AMN_STATUS_OK);
  amn_client_free(lax);
  amn_client_free(c);
  amn_server_free(g_srv);
  /* a server that does not sign: the proof is missing */
  g_srv = start(false, false, 30000);
  c = client(NULL, true, true);
  long u0 = amn_t_counter_get(&g_unverified);
  assert_int_equal(execute(c, "no proof", NULL, 0, msg, sizeof msg), AMN_STATUS_DATA_LOSS);
  assert_string_equal(msg, "server proof missing");
  /* and a signed query the server does not require is not verified */
  assert_int_equal(amn_t_counter_get(&g_unverified) - u0, 1);
  amn_client_free(c);
  amn_server_free(g_srv);
}

/* A nonce table with no free slot refuses with UNAVAILABLE (64 entries:
 * the 65th live nonce has nowhere to go); the nonces in it stay known. */
static void test_replay_table_full(void **st) {
  (void)st;
  g_replay_entries = 64;
  g_srv = start(true, false, 30000);
  g_replay_entries = 0;
  amn_client *c = client(NULL, true, false);
  for (int i = 0; i < 64; i++) {
    char q[16];
    snprintf(q, sizeof q, "n%d", i);
    assert_int_equal(execute(c, q, NULL, 0, NULL, 0), AMN_STATUS_OK);
  }
  expect_refusal(c, "one more", NULL, 0, AMN_STATUS_UNAVAILABLE, "client signature not checked: replay cache full");
  amn_client_free(c);
  amn_server_free(g_srv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_each_key_type),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_stream),
      cmocka_unit_test(test_proofs),
      cmocka_unit_test(test_replay_table_full),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
