/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The authorization policy (server/authz.c): building, pattern checks, the
 * matcher (method and identity patterns, first match wins), and the
 * [[auth.rule]] tables of the configuration file (util/config_auth.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "amn/config.h"
#include "amn/server.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static amn_peer_identity peer(const char *cn, const char *ou, const char *uri, const char *dns) {
  amn_peer_identity id;
  memset(&id, 0, sizeof id);
  id.verified = true;
  id.subject = "CN=x";
  id.cn = cn ? cn : "";
  id.ou = ou ? ou : "";
  if (uri) id.uri_sans[id.uri_san_count++] = uri;
  if (dns) id.sans[id.san_count++] = dns;
  for (int i = 0; i < 32; i++) id.sha256[i] = 0xee;
  for (int i = 0; i < 32; i++) snprintf(id.sha256_hex + 2 * i, 3, "%02x", 0xee);
  return id;
}

static const char *const all_amaters[] = {"/amaters.v1.AmateRS/*"};
static const char *const health_check[] = {"/grpc.health.v1.Health/Check"};
static const char *const any_method[] = {"*"};
static const char *const spiffe_clients[] = {"spiffe://amaters/client/*"};
static const char *const dns_pat[] = {"*.clients.example"};
static const char *const cn_pat[] = {"ops-*"};
static const char *const ou_pat[] = {"billing"};
static const char *const fp_pat[] = {"00:01:02:03:04:05:06:07:08:09:0A:0B:0C:0D:0E:0F:10:11:12:13:14:15:16:17:18:19:1a:1b:1c:1d:1e:1f"};
static const char *const spiffe_bad[] = {"spiffe://amaters/client/mallory"};

static amn_authz_policy *build(void) {
  amn_authz_rule r[] = {
      {.name = "deny-mallory", .allow = false, .methods = any_method, .method_count = 1, .uri_sans = spiffe_bad,
       .uri_san_count = 1},
      {.name = "health-for-all", .allow = true, .methods = health_check, .method_count = 1},
      {.name = "spiffe-clients", .allow = true, .methods = all_amaters, .method_count = 1,
       .uri_sans = spiffe_clients, .uri_san_count = 1},
      {.name = "dns-clients", .allow = true, .methods = all_amaters, .method_count = 1, .dns_sans = dns_pat,
       .dns_san_count = 1},
      {.name = "ops-cn", .allow = true, .methods = all_amaters, .method_count = 1, .cns = cn_pat, .cn_count = 1},
      {.name = "billing-ou", .allow = true, .methods = all_amaters, .method_count = 1, .ous = ou_pat, .ou_count = 1},
      {.name = "pinned", .allow = true, .methods = any_method, .method_count = 1, .fingerprints = fp_pat,
       .fingerprint_count = 1},
  };
  amn_authz_policy *p = NULL;
  char err[256] = "";
  assert_int_equal(amn_authz_policy_new(&p, r, N(r), err, sizeof err), 0);
  assert_int_equal(amn_authz_policy_rule_count(p), N(r));
  return p;
}

static void expect(const amn_authz_policy *p, const char *method, const amn_peer_identity *id, bool allow,
                   const char *rule) {
  const char *got = "unset";
  bool r = amn_authz_check(p, method, id, &got);
  if (r != allow) fail_msg("%s by %s: got %d (rule %s), want %d", method, id && id->cn ? id->cn : "-", r, got ? got : "-", allow);
  if (rule) assert_string_equal(got, rule);
  else assert_null(got);
}

static void test_outcomes(void **st) {
  (void)st;
  amn_authz_policy *p = build();
  const char *exec = "/amaters.v1.AmateRS/Execute";
  amn_peer_identity a = peer("alice", NULL, "spiffe://amaters/client/alice", NULL);
  expect(p, exec, &a, true, "spiffe-clients");
  expect(p, "/amaters.v1.AmateRS/ExecuteStream", &a, true, "spiffe-clients");
  /* wildcard covers deeper paths too, but not another service */
  expect(p, "/other.Svc/Execute", &a, false, NULL);
  amn_peer_identity m = peer("mallory", NULL, "spiffe://amaters/client/mallory", NULL);
  expect(p, exec, &m, false, "deny-mallory"); /* first match wins: the deny before the wildcard allow */
  expect(p, "/grpc.health.v1.Health/Check", &m, false, "deny-mallory");
  amn_peer_identity nobody = peer("nobody", NULL, "spiffe://other/x", NULL);
  expect(p, "/grpc.health.v1.Health/Check", &nobody, true, "health-for-all");
  expect(p, "/grpc.health.v1.Health/Watch", &nobody, false, NULL);
  expect(p, exec, &nobody, false, NULL);
  amn_peer_identity d = peer("d", NULL, NULL, "Node1.CLIENTS.example"); /* DNS: case-insensitive */
  expect(p, exec, &d, true, "dns-clients");
  amn_peer_identity d2 = peer("d", NULL, NULL, "clients.example"); /* "*." needs something before the dot */
  expect(p, exec, &d2, false, NULL);
  amn_peer_identity c = peer("ops-7", NULL, NULL, NULL);
  expect(p, exec, &c, true, "ops-cn");
  amn_peer_identity cc = peer("OPS-7", NULL, NULL, NULL); /* CN: case-sensitive */
  expect(p, exec, &cc, false, NULL);
  amn_peer_identity o = peer("z", "billing", NULL, NULL);
  expect(p, exec, &o, true, "billing-ou");
  amn_peer_identity f = peer("z", NULL, NULL, NULL);
  f.cn = "zz";
  for (int i = 0; i < 32; i++) snprintf(f.sha256_hex + 2 * i, 3, "%02x", i);
  expect(p, "/any.Thing/At", &f, true, "pinned"); /* the fingerprint, normalised from "AB:..." */
  f.sha256_hex[0] = '1';
  expect(p, "/any.Thing/At", &f, false, NULL);
  /* an unverified peer matches no rule, not even one without identity patterns */
  amn_peer_identity u = peer("x", NULL, NULL, NULL);
  u.verified = false;
  expect(p, "/grpc.health.v1.Health/Check", &u, false, NULL);
  expect(p, exec, NULL, false, NULL);
  expect(NULL, exec, &a, false, NULL);
  amn_authz_policy_free(p);
}

static void test_glob(void **st) {
  (void)st;
  static const struct { const char *pat, *s; bool match; } cases[] = {
      {"*", "", true},         {"*", "/a/b", true},      {"a*", "a", true},        {"a*b", "ab", true},
      {"a*b", "axxb", true},   {"a*b", "axxbx", false},  {"*b*", "abc", true},     {"a**b", "ab", true},
      {"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
      {"/x/*", "/x/", true},   {"/x/*", "/x", false},    {"abc", "abcd", false},   {"abcd", "abc", false},
  };
  for (size_t i = 0; i < N(cases); i++) {
    const char *const m[] = {cases[i].pat};
    const char *const cn[] = {cases[i].pat};
    amn_authz_rule r = {.name = "r", .allow = true, .methods = any_method, .method_count = 1, .cns = cn, .cn_count = 1};
    (void)m;
    amn_authz_policy *p = NULL;
    assert_int_equal(amn_authz_policy_new(&p, &r, 1, NULL, 0), 0);
    amn_peer_identity id = peer(cases[i].s, NULL, NULL, NULL);
    const char *rule;
    bool got = amn_authz_check(p, "/a/b", &id, &rule);
    /* an empty CN never matches (no CN) */
    assert_int_equal(got, cases[i].match && cases[i].s[0] != '\0');
    amn_authz_policy_free(p);
  }
}

static void bad(const amn_authz_rule *r, size_t n, const char *want) {
  amn_authz_policy *p = (amn_authz_policy *)1;
  char err[512] = "";
  assert_int_equal(amn_authz_policy_new(&p, r, n, err, sizeof err), AMN_EINVAL);
  assert_null(p);
  if (!strstr(err, want)) fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_build_errors(void **st) {
  (void)st;
  static const char *const not_path[] = {"amaters.v1.AmateRS/Execute"};
  static const char *const empty[] = {""};
  static const char *const fp_short[] = {"abcd"};
  static const char *const ctl[] = {"/a\n/b"};
  amn_authz_rule r = {.name = "x", .allow = true, .methods = all_amaters, .method_count = 1};
  amn_authz_rule t = r;
  t.name = NULL;
  bad(&t, 1, "a rule needs a name");
  t = r;
  t.method_count = 0;
  bad(&t, 1, "rule 1 ('x'): methods: at least one");
  t = r;
  t.methods = not_path;
  bad(&t, 1, "does not start with '/'");
  t = r;
  t.uri_sans = empty;
  t.uri_san_count = 1;
  bad(&t, 1, "uri_sans: empty pattern");
  t = r;
  t.fingerprints = fp_short;
  t.fingerprint_count = 1;
  bad(&t, 1, "not a SHA-256 fingerprint");
  t = r;
  t.methods = ctl;
  bad(&t, 1, "control character");
  amn_authz_rule two[] = {r, r};
  bad(two, 2, "rule 2 ('x'): a rule of this name is already rule 1");
  /* an empty policy denies everything */
  amn_authz_policy *p = NULL;
  assert_int_equal(amn_authz_policy_new(&p, NULL, 0, NULL, 0), 0);
  amn_peer_identity a = peer("a", NULL, NULL, NULL);
  expect(p, "/x/y", &a, false, NULL);
  amn_authz_policy_free(p);
  amn_authz_policy_free(NULL);
}

/* The [[auth.rule]] tables of a file, and their errors with FILE:LINE. */
static int load(const char *text, amn_config *c, char *err, size_t errlen) {
  char path[] = "/tmp/amn-authz-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  amn_config_init(c);
  int rc = amn_config_load(c, path, err, errlen);
  unlink(path);
  return rc;
}

static void test_config(void **st) {
  (void)st;
  amn_config c;
  char err[1024] = "";
  int rc = load("[tls]\ncrl_path = \"/x/crl.pem\"\ncrl_expired = \"warn\"\n"
                "[[auth.rule]]\nname = \"health\"\naction = \"allow\"\nmethods = [\"/grpc.health.v1.Health/Check\"]\n"
                "[[auth.rule]]\nname = \"clients\"\naction = \"deny\"\nmethods = [\"*\"]\n"
                "uri_sans = [\"spiffe://a/*\"]\ndns_sans = [\"a\"]\ncns = [\"b\"]\nous = [\"c\", \"d\"]\n"
                "fingerprints = [\"" "0001020304050607080900010203040506070809000102030405060708090001" "\"]\n",
                &c, err, sizeof err);
  assert_int_equal(rc, 0);
  assert_string_equal(c.tls.crl_path, "/x/crl.pem");
  assert_string_equal(c.tls.crl_expired, "warn");
  assert_int_equal(c.auth.rule_count, 2);
  assert_string_equal(c.auth.rules[0].name, "health");
  assert_true(c.auth.rules[0].allow);
  assert_false(c.auth.rules[1].allow);
  assert_int_equal(c.auth.rules[1].ou_count, 2);
  assert_string_equal(c.auth.rules[1].ous[1], "d");
  assert_non_null(strstr(c.auth.rule_where[1], ":8"));
  /* the rules survive a copy (the environment's pass) */
  assert_int_equal(amn_config_apply_env(&c, err, sizeof err), 0);
  amn_authz_policy *p = NULL;
  assert_int_equal(amn_authz_policy_new(&p, c.auth.rules, c.auth.rule_count, err, sizeof err), 0);
  amn_authz_policy_free(p);
  amn_config_free(&c);

  static const struct { const char *text, *want; } errs[] = {
      {"[[auth.rule]]\nname = \"a\"\nmethods = [\"*\"]\n", ":1: auth.rule[1]: rule 'a' needs an action"},
      {"[[auth.rule]]\nname = \"a\"\naction = \"maybe\"\nmethods = [\"*\"]\n", ":3: auth.rule[1]: action: invalid value"},
      {"[[auth.rule]]\nname = \"a\"\naction = \"allow\"\n", ":1: auth.rule[1]: rule 'a' needs methods"},
      {"[[auth.rule]]\naction = \"allow\"\nmethods = [\"*\"]\n", ":1: auth.rule[1]: a rule needs a name"},
      {"[[auth.rule]]\nname = \"a\"\naction = \"allow\"\nmethods = \"*\"\n", ":4: auth.rule[1]: methods: expected an array"},
      {"[[auth.rule]]\nname = \"a\"\naction = \"allow\"\nmethods = [\"*\", 3]\n", ":4: auth.rule[1]: methods: element 2"},
      {"[[auth.rule]]\nname = \"a\"\naction = \"allow\"\nmethods = [\"*\"]\nspiffe = [\"x\"]\n", ":5: auth.rule[1]: unknown key 'spiffe'"},
      {"[[auth.rule]]\nname = \"a\"\naction = \"allow\"\nmethods = [\"*\"]\n[[auth.rule]]\nname = \"a\"\naction = \"deny\"\nmethods = [\"*\"]\n",
       ":5: auth.rule[2]: rule name 'a' is already used at"},
      {"[auth]\nrule = 3\n", ":2: auth.rule: expected an array of tables"},
      {"[tls]\ncrl_expired = \"ignore\"\n", ":2: tls.crl_expired: invalid value \"ignore\""},
  };
  for (size_t i = 0; i < N(errs); i++) {
    err[0] = 0;
    assert_int_equal(load(errs[i].text, &c, err, sizeof err), AMN_ECONFIG);
    if (!strstr(err, errs[i].want)) fail_msg("case %zu: error '%s' lacks '%s'", i, err, errs[i].want);
    amn_config_free(&c);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_outcomes),
      cmocka_unit_test(test_glob),
      cmocka_unit_test(test_build_errors),
      cmocka_unit_test(test_config),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
