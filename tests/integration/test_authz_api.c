/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The authorization and revocation API from C over real sockets (the
 * transport of AMN_TEST_TRANSPORT): a policy object installed, swapped and
 * removed on a running server; the application's callback (its thread, its
 * refusal, never asked when the policy already denied); crl_path on the
 * server and on the client, with amn_pki_issue_client / amn_pki_revoke. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "fixture.h"

static char alice_crt[400], alice_key[400], crl[400];

static amn_server *start(const char *crl_path, amn_authz_policy *p, amn_authorize_fn fn, void *ud) {
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.listen = "127.0.0.1:0";
  o.tls = amn_t_stls;
  o.tls.crl_path = crl_path;
  o.threads = 1;
  o.transport = amn_t_transport == AMN_TRANSPORT_H3 ? AMN_TRANSPORT_BOTH : AMN_TRANSPORT_H2;
  amn_server *s = NULL;
  char err[512];
  int rc = amn_server_new(&s, &o, err, sizeof err);
  if (rc) fail_msg("server_new: %s", err);
  assert_int_equal(amn_server_use_echo(s), 0);
  if (p) assert_int_equal(amn_server_set_authz_policy(s, p), 0);
  if (fn) assert_int_equal(amn_server_set_authorize(s, fn, ud), 0);
  rc = amn_server_start(s, err, sizeof err);
  if (rc) fail_msg("server_start: %s", err);
  if (fn) assert_int_equal(amn_server_set_authorize(s, fn, ud), AMN_ESTATE); /* only before start */
  return s;
}

static amn_client *client(amn_server *s, bool alice, const char *crl_path) {
  amn_client_opts o;
  amn_client_opts_init(&o);
  char url[64];
  snprintf(url, sizeof url, "https://localhost:%u", amn_server_port(s));
  o.url = url;
  o.tls = amn_t_ctls;
  if (alice) o.tls.cert_path = alice_crt, o.tls.key_path = alice_key;
  o.tls.crl_path = crl_path;
  o.transport = amn_t_transport;
  o.connect_timeout_ms = 5000;
  o.max_retries = 0;
  amn_client *c = NULL;
  char err[512];
  if (amn_client_new(&c, &o, err, sizeof err) != 0) fail_msg("client_new: %s", err);
  return c;
}

/* One Execute; returns its status, the message into msg. */
static amn_status_code exec(amn_client *c, const amn_metadata *md, char *msg, size_t cap) {
  amn_call_opts co = {0};
  co.timeout_ms = 5000;
  co.metadata = md;
  amn_result r;
  memset(&r, 0, sizeof r);
  amn_client_execute(c, (const uint8_t *)"q", 1, NULL, 0, &co, &r, NULL, NULL);
  snprintf(msg, cap, "%s", r.message ? r.message : "");
  amn_status_code code = r.code;
  amn_result_free(&r);
  return code;
}

static amn_authz_policy *policy(bool with_rules) {
  static const char *const amaters[] = {"/amaters.v1.AmateRS/*"};
  static const char *const check[] = {"/grpc.health.v1.Health/Check"};
  static const char *const spiffe[] = {"spiffe://amaters/client/*"};
  amn_authz_rule r[] = {
      {.name = "clients", .allow = true, .methods = amaters, .method_count = 1, .uri_sans = spiffe, .uri_san_count = 1},
      {.name = "health", .allow = true, .methods = check, .method_count = 1},
  };
  amn_authz_policy *p = NULL;
  char err[256];
  if (amn_authz_policy_new(&p, r, with_rules ? 2 : 0, err, sizeof err) != 0) fail_msg("policy: %s", err);
  return p;
}

static void test_policy_object(void **st) {
  (void)st;
  amn_server *s = start(NULL, policy(true), NULL, NULL);
  amn_client *a = client(s, true, NULL), *dev = client(s, false, NULL);
  char msg[256];
  assert_int_equal(exec(a, NULL, msg, sizeof msg), AMN_STATUS_OK);
  assert_int_equal(exec(dev, NULL, msg, sizeof msg), AMN_STATUS_PERMISSION_DENIED);
  assert_string_equal(msg, "no rule matched");
  bool serving = false;
  assert_int_equal(amn_client_health(dev, "", 5000, &serving, NULL, NULL, 0), 0); /* the "health" rule */
  assert_true(serving);
  /* swapped while running: an empty policy denies everyone */
  assert_int_equal(amn_server_set_authz_policy(s, policy(false)), 0);
  assert_int_equal(exec(a, NULL, msg, sizeof msg), AMN_STATUS_PERMISSION_DENIED);
  /* removed: any certificate of the CA again */
  assert_int_equal(amn_server_set_authz_policy(s, NULL), 0);
  assert_int_equal(exec(dev, NULL, msg, sizeof msg), AMN_STATUS_OK);
  assert_int_equal(amn_server_set_authz_policy(NULL, policy(true)), AMN_EINVAL); /* freed, no leak */
  amn_client_free(a);
  amn_client_free(dev);
  amn_server_free(s);
}

typedef struct seen {
  amn_t_counter calls;
  pthread_t main;
  bool on_other_thread;
  char cn[64], uri[128];
} seen;

static amn_status_code authorize(const amn_call *call, char *msg, size_t msglen, void *ud) {
  seen *w = ud;
  const amn_peer_identity *id = amn_call_peer(call);
  w->on_other_thread = !pthread_equal(pthread_self(), w->main);
  snprintf(w->cn, sizeof w->cn, "%s", id->cn);
  snprintf(w->uri, sizeof w->uri, "%s", id->uri_san_count ? id->uri_sans[0] : "");
  amn_t_counter_add(&w->calls, 1);
  if (amn_metadata_get(amn_call_metadata(call), "x-deny")) {
    snprintf(msg, msglen, "tenant %s is suspended", id->cn);
    return AMN_STATUS_UNAUTHENTICATED;
  }
  return AMN_STATUS_OK;
}

static void test_callback(void **st) {
  (void)st;
  seen w = {AMN_T_COUNTER_INIT, pthread_self(), false, "", ""};
  amn_server *s = start(NULL, policy(true), authorize, &w);
  amn_client *a = client(s, true, NULL), *dev = client(s, false, NULL);
  char msg[256];
  assert_int_equal(exec(a, NULL, msg, sizeof msg), AMN_STATUS_OK);
  assert_int_equal(amn_t_counter_get(&w.calls), 1); /* once per call */
  assert_true(w.on_other_thread);
  assert_string_equal(w.cn, "alice");
  assert_string_equal(w.uri, "spiffe://amaters/client/alice");
  amn_md e = {"x-deny", (const uint8_t *)"1", 1};
  amn_metadata md = {&e, 1};
  assert_int_equal(exec(a, &md, msg, sizeof msg), AMN_STATUS_UNAUTHENTICATED);
  assert_string_equal(msg, "tenant alice is suspended");
  assert_int_equal(amn_t_counter_get(&w.calls), 2);
  /* the policy denies first: the callback is not asked */
  assert_int_equal(exec(dev, NULL, msg, sizeof msg), AMN_STATUS_PERMISSION_DENIED);
  assert_int_equal(amn_t_counter_get(&w.calls), 2);
  amn_client_free(a);
  amn_client_free(dev);
  amn_server_free(s);
}

static void test_revocation(void **st) {
  (void)st;
  char err[512];
  bool added = false;
  assert_int_equal(amn_pki_revoke(amn_t_dir, alice_crt, 3600, &added, err, sizeof err), 0);
  assert_true(added);
  assert_int_equal(amn_pki_revoke(amn_t_dir, alice_crt, 3600, &added, err, sizeof err), 0);
  assert_false(added); /* already listed */
  amn_server *s = start(crl, NULL, NULL, NULL);
  amn_client *a = client(s, true, NULL), *dev = client(s, false, NULL);
  char msg[512];
  assert_int_equal(exec(a, NULL, msg, sizeof msg), AMN_STATUS_UNAVAILABLE);
  if (!strstr(msg, "revoked")) fail_msg("message: %s", msg);
  assert_int_equal(exec(dev, NULL, msg, sizeof msg), AMN_STATUS_OK);
  amn_client_free(a);
  amn_client_free(dev);
  /* the client side: the server's certificate revoked in another CRL */
  char srv[400];
  snprintf(srv, sizeof srv, "%s", amn_t_stls.cert_path);
  assert_int_equal(amn_pki_revoke(amn_t_dir, srv, 3600, &added, err, sizeof err), 0);
  amn_client *d2 = client(s, false, crl);
  assert_int_equal(exec(d2, NULL, msg, sizeof msg), AMN_STATUS_UNAVAILABLE);
  if (!strstr(msg, "server certificate revoked")) fail_msg("message: %s", msg);
  amn_client_free(d2);
  amn_server_free(s);
  /* a CRL signed by another CA is refused at start */
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.tls = amn_t_stls;
  o.tls.crl_path = amn_t_stls.cert_path; /* not a CRL at all */
  amn_server *bad = NULL;
  assert_int_equal(amn_server_new(&bad, &o, err, sizeof err), AMN_ETLS);
  if (!strstr(err, "holds no PEM CRL")) fail_msg("error: %s", err);
}

int main(void) {
  if (amn_t_setup("authz") != 0) return 1;
  char err[512];
  static const char *const uris[] = {"spiffe://amaters/client/alice", NULL};
  if (amn_pki_issue_client(amn_t_dir, "alice", uris, NULL, NULL, err, sizeof err) != 0) {
    fprintf(stderr, "issue: %s\n", err);
    return 1;
  }
  snprintf(alice_crt, sizeof alice_crt, "%s/alice.pem", amn_t_dir);
  snprintf(alice_key, sizeof alice_key, "%s/alice-key.pem", amn_t_dir);
  snprintf(crl, sizeof crl, "%s/crl.pem", amn_t_dir);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_policy_object),
      cmocka_unit_test(test_callback),
      cmocka_unit_test(test_revocation),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  amn_t_teardown();
  return rc;
}
