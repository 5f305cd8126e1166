/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Development PKI: files, modes, extensions, chains (checked with the
 * GnuTLS API), idempotence and force, test-certificate issuing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "amn/pki.h"
#include "amn/server.h"
#include "tls/pki_internal.h"

static char g_tmp[256];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static int setup(void **state) {
  (void)state;
  const char *t = getenv("TMPDIR");
  snprintf(g_tmp, sizeof g_tmp, "%s/amn-pki-XXXXXX", t && *t ? t : "/tmp");
  return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  return nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void pathf(char *out, size_t n, const char *dir, const char *file) { snprintf(out, n, "%s/%s", dir, file); }

static mode_t mode_of(const char *p) {
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  return st.st_mode & 07777;
}

static char *slurp(const char *p) {
  gnutls_datum_t d;
  assert_int_equal(gnutls_load_file(p, &d), 0);
  char *s = strndup((char *)d.data, d.size);
  gnutls_free(d.data);
  return s;
}

static gnutls_x509_crt_t load_crt(const char *p) {
  gnutls_datum_t d;
  gnutls_x509_crt_t c;
  assert_int_equal(gnutls_load_file(p, &d), 0);
  assert_int_equal(gnutls_x509_crt_init(&c), 0);
  assert_int_equal(gnutls_x509_crt_import(c, &d, GNUTLS_X509_FMT_PEM), 0);
  gnutls_free(d.data);
  return c;
}

static bool has_eku(gnutls_x509_crt_t c, const char *oid) {
  for (unsigned i = 0;; i++) {
    char buf[128];
    size_t sz = sizeof buf;
    if (gnutls_x509_crt_get_key_purpose_oid(c, i, buf, &sz, NULL) < 0) return false;
    if (strcmp(buf, oid) == 0) return true;
  }
}

/* Verifies `leaf_path` against only `ca_path` for `purpose`; returns the status. */
static unsigned verify_chain(const char *ca_path, const char *leaf_path, const char *purpose) {
  gnutls_x509_trust_list_t tl;
  assert_int_equal(gnutls_x509_trust_list_init(&tl, 0), 0);
  assert_int_equal(gnutls_x509_trust_list_add_trust_file(tl, ca_path, NULL, GNUTLS_X509_FMT_PEM, 0, 0), 1);
  gnutls_x509_crt_t leaf = load_crt(leaf_path);
  gnutls_typed_vdata_st vd = {.type = GNUTLS_DT_KEY_PURPOSE_OID, .data = (unsigned char *)purpose};
  unsigned status = 0xffff;
  assert_int_equal(gnutls_x509_trust_list_verify_crt2(tl, &leaf, 1, &vd, 1, 0, &status, NULL), 0);
  gnutls_x509_crt_deinit(leaf);
  gnutls_x509_trust_list_deinit(tl, 1);
  return status;
}

static void check_key_matches(const char *crt, const char *key) {
  gnutls_certificate_credentials_t cr;
  assert_int_equal(gnutls_certificate_allocate_credentials(&cr), 0);
  assert_int_equal(gnutls_certificate_set_x509_key_file2(cr, crt, key, GNUTLS_X509_FMT_PEM, NULL, 0), 0);
  gnutls_certificate_free_credentials(cr);
}

static void test_init_files_and_modes(void **state) {
  (void)state;
  char dir[512], p[600], err[256] = "";
  snprintf(dir, sizeof dir, "%s/a/b/pki", g_tmp);
  assert_false(amn_pki_exists(dir));
  assert_int_equal(amn_pki_init(dir, false, err, sizeof err), 0);
  assert_true(amn_pki_exists(dir));
  /* every directory we created is 0700 */
  assert_int_equal(mode_of(dir), 0700);
  snprintf(p, sizeof p, "%s/a/b", g_tmp);
  assert_int_equal(mode_of(p), 0700);
  static const char *keys[] = {"ca-key.pem", "server-key.pem", "client-key.pem"};
  static const char *crts[] = {"ca.pem", "server.pem", "client.pem"};
  for (int i = 0; i < 3; i++) {
    pathf(p, sizeof p, dir, keys[i]);
    assert_int_equal(mode_of(p), 0600);
    char *s = slurp(p);
    assert_non_null(strstr(s, "-----BEGIN PRIVATE KEY-----"));
    free(s);
    pathf(p, sizeof p, dir, crts[i]);
    assert_int_equal(mode_of(p), 0644);
    s = slurp(p);
    assert_non_null(strstr(s, "-----BEGIN CERTIFICATE-----"));
    free(s);
  }
  /* exactly the six files: no temporary files left behind */
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  assert_int_equal(n, 6);
}

static void test_certificates(void **state) {
  (void)state;
  char dir[512], ca[600], srv[600], cli[600], err[256] = "";
  snprintf(dir, sizeof dir, "%s/certs", g_tmp);
  assert_int_equal(amn_pki_init(dir, false, err, sizeof err), 0);
  pathf(ca, sizeof ca, dir, "ca.pem");
  pathf(srv, sizeof srv, dir, "server.pem");
  pathf(cli, sizeof cli, dir, "client.pem");
  gnutls_x509_crt_t c = load_crt(ca), s = load_crt(srv), k = load_crt(cli);

  /* CA: basicConstraints CA:TRUE, keyCertSign, self-signed, ECDSA P-256 */
  unsigned is_ca = 0, crit = 0, ku = 0;
  assert_true(gnutls_x509_crt_get_basic_constraints(c, &crit, &is_ca, NULL) >= 0);
  assert_true(is_ca);
  assert_true(crit);
  assert_true(gnutls_x509_crt_get_key_usage(c, &ku, &crit) >= 0);
  assert_true(ku & GNUTLS_KEY_KEY_CERT_SIGN);
  assert_int_equal(gnutls_x509_crt_get_pk_algorithm(c, NULL), GNUTLS_PK_ECDSA);
  gnutls_ecc_curve_t curve;
  assert_int_equal(gnutls_x509_crt_get_pk_ecc_raw(c, &curve, NULL, NULL), 0);
  assert_int_equal(curve, GNUTLS_ECC_CURVE_SECP256R1);
  assert_true(gnutls_x509_crt_check_issuer(c, c));

  /* leaves: CA:FALSE, digitalSignature, right EKU only */
  assert_true(gnutls_x509_crt_get_basic_constraints(s, NULL, &is_ca, NULL) >= 0);
  assert_false(is_ca);
  assert_true(gnutls_x509_crt_get_key_usage(s, &ku, NULL) >= 0);
  assert_true(ku & GNUTLS_KEY_DIGITAL_SIGNATURE);
  assert_false(ku & GNUTLS_KEY_KEY_CERT_SIGN);
  assert_true(has_eku(s, GNUTLS_KP_TLS_WWW_SERVER));
  assert_false(has_eku(s, GNUTLS_KP_TLS_WWW_CLIENT));
  assert_true(has_eku(k, GNUTLS_KP_TLS_WWW_CLIENT));
  assert_false(has_eku(k, GNUTLS_KP_TLS_WWW_SERVER));

  /* chains verify against ca.pem alone, for their purpose */
  assert_int_equal(verify_chain(ca, srv, GNUTLS_KP_TLS_WWW_SERVER), 0);
  assert_int_equal(verify_chain(ca, cli, GNUTLS_KP_TLS_WWW_CLIENT), 0);
  char key[600];
  pathf(key, sizeof key, dir, "server-key.pem");
  check_key_matches(srv, key);
  pathf(key, sizeof key, dir, "client-key.pem");
  check_key_matches(cli, key);

  /* server SANs: localhost, 127.0.0.1, ::1 */
  assert_true(gnutls_x509_crt_check_hostname(s, "localhost"));
  const unsigned char v4[4] = {127, 0, 0, 1}, v6[16] = {[15] = 1};
  assert_true(gnutls_x509_crt_check_ip(s, v4, 4, 0));
  assert_true(gnutls_x509_crt_check_ip(s, v6, 16, 0));
  assert_false(gnutls_x509_crt_check_hostname(s, "example.com"));

  /* client subject */
  char cn[128];
  size_t cnlen = sizeof cn;
  assert_int_equal(gnutls_x509_crt_get_dn_by_oid(k, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &cnlen), 0);
  assert_string_equal(cn, "amaters-dev-client");

  /* SKI / AKI link leaves to the CA; serials are random and distinct */
  unsigned char ski[64], aki[64], sr1[40], sr2[40];
  size_t skil = sizeof ski, akil = sizeof aki, s1 = sizeof sr1, s2 = sizeof sr2;
  assert_int_equal(gnutls_x509_crt_get_subject_key_id(c, ski, &skil, NULL), 0);
  assert_int_equal(gnutls_x509_crt_get_authority_key_id(s, aki, &akil, NULL), 0);
  assert_int_equal(skil, akil);
  assert_memory_equal(ski, aki, skil);
  assert_int_equal(gnutls_x509_crt_get_serial(s, sr1, &s1), 0);
  assert_int_equal(gnutls_x509_crt_get_serial(k, sr2, &s2), 0);
  assert_true(s1 >= 8);
  assert_false(s1 == s2 && memcmp(sr1, sr2, s1) == 0);

  /* valid now, for 825 days */
  time_t now = time(NULL), nb = gnutls_x509_crt_get_activation_time(s), na = gnutls_x509_crt_get_expiration_time(s);
  assert_true(nb <= now && nb > now - 3600);
  assert_true(na - now > 824L * 86400 && na - now <= 825L * 86400);

  gnutls_x509_crt_deinit(c);
  gnutls_x509_crt_deinit(s);
  gnutls_x509_crt_deinit(k);
}

static void test_idempotent_and_force(void **state) {
  (void)state;
  char dir[512], p[600], q[600], err[256] = "";
  snprintf(dir, sizeof dir, "%s/idem", g_tmp);
  assert_int_equal(amn_pki_init(dir, false, err, sizeof err), 0);
  pathf(p, sizeof p, dir, "ca.pem");
  char *ca1 = slurp(p);
  pathf(q, sizeof q, dir, "server.pem");
  char *srv1 = slurp(q);

  /* second run keeps everything */
  assert_int_equal(amn_pki_init(dir, false, err, sizeof err), 0);
  char *ca2 = slurp(p), *srv2 = slurp(q);
  assert_string_equal(ca1, ca2);
  assert_string_equal(srv1, srv2);

  /* a missing leaf is re-issued by the existing CA */
  char cli[600], clik[600];
  pathf(cli, sizeof cli, dir, "client.pem");
  pathf(clik, sizeof clik, dir, "client-key.pem");
  assert_int_equal(unlink(cli), 0);
  assert_int_equal(unlink(clik), 0);
  assert_int_equal(amn_pki_init(dir, false, err, sizeof err), 0);
  char *ca3 = slurp(p);
  assert_string_equal(ca1, ca3);
  assert_int_equal(verify_chain(p, cli, GNUTLS_KP_TLS_WWW_CLIENT), 0);
  assert_int_equal(mode_of(clik), 0600);

  /* a certificate without its key is an error, nothing is overwritten */
  char srvk[600];
  pathf(srvk, sizeof srvk, dir, "server-key.pem");
  assert_int_equal(unlink(srvk), 0);
  err[0] = '\0';
  assert_int_equal(amn_pki_init(dir, false, err, sizeof err), AMN_EIO);
  assert_non_null(strstr(err, "server-key.pem"));
  char *srv3 = slurp(q);
  assert_string_equal(srv1, srv3);
  assert_false(amn_pki_exists(dir));

  /* force re-creates all, with a new CA */
  assert_int_equal(amn_pki_init(dir, true, err, sizeof err), 0);
  assert_true(amn_pki_exists(dir));
  char *ca4 = slurp(p);
  assert_string_not_equal(ca1, ca4);
  assert_int_equal(verify_chain(p, q, GNUTLS_KP_TLS_WWW_SERVER), 0);
  assert_int_equal(verify_chain(p, cli, GNUTLS_KP_TLS_WWW_CLIENT), 0);
  assert_int_equal(mode_of(srvk), 0600);
  free(ca1), free(ca2), free(ca3), free(ca4), free(srv1), free(srv2), free(srv3);
}

static void test_key_mode_despite_umask(void **state) {
  (void)state;
  char dir[512], p[600], err[256] = "";
  snprintf(dir, sizeof dir, "%s/umask", g_tmp);
  mode_t old = umask(0); /* the most permissive umask must not widen key modes */
  int rc = amn_pki_init(dir, false, err, sizeof err);
  umask(old);
  assert_int_equal(rc, 0);
  pathf(p, sizeof p, dir, "client-key.pem");
  assert_int_equal(mode_of(p), 0600);
  assert_int_equal(mode_of(dir), 0700);
}

/* The QUIC secret file: created once (0600, 32 bytes) and then read back
 * the same; another file gives another secret; unsafe files are refused. */
static void test_quic_secret_file(void **state) {
  (void)state;
  char p[600], q[600], err[256] = "";
  uint8_t a[AMN_QUIC_SECRET_LEN], b[AMN_QUIC_SECRET_LEN], c[AMN_QUIC_SECRET_LEN];
  bool created = false;
  pathf(p, sizeof p, g_tmp, "quic-secret.key");
  mode_t old = umask(0);
  int rc = amn_quic_secret_load(p, a, &created, err, sizeof err);
  umask(old);
  if (rc) fail_msg("%s", err);
  assert_true(created);
  assert_int_equal(mode_of(p), 0600);
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal(st.st_size, 32);
  assert_int_equal(amn_quic_secret_load(p, b, &created, err, sizeof err), 0);
  assert_false(created);
  assert_memory_equal(a, b, sizeof a); /* what a restarted daemon gets */
  pathf(q, sizeof q, g_tmp, "linked-secret.key"); /* e.g. a mounted secret */
  assert_int_equal(symlink(p, q), 0);
  assert_int_equal(amn_quic_secret_load(q, c, NULL, err, sizeof err), 0);
  assert_memory_equal(a, c, sizeof a);
  pathf(q, sizeof q, g_tmp, "other-secret.key");
  assert_int_equal(amn_quic_secret_load(q, c, NULL, err, sizeof err), 0);
  assert_memory_not_equal(a, c, sizeof a);

  assert_int_equal(chmod(p, 0640), 0);
  assert_int_equal(amn_quic_secret_load(p, b, NULL, err, sizeof err), AMN_EINVAL);
  assert_non_null(strstr(err, "accessible by group or others (mode 0640): chmod 600 it"));
  assert_int_equal(chmod(p, 0600), 0);
  FILE *f = fopen(q, "w");
  assert_non_null(f);
  fputs("too short", f);
  fclose(f);
  assert_int_equal(chmod(q, 0600), 0);
  assert_int_equal(amn_quic_secret_load(q, b, NULL, err, sizeof err), AMN_EINVAL);
  assert_non_null(strstr(err, "9 bytes (expected 32 to 4096)"));
  pathf(q, sizeof q, g_tmp, "no-such-dir/secret.key");
  assert_int_equal(amn_quic_secret_load(q, b, NULL, err, sizeof err), AMN_EIO);
  assert_non_null(strstr(err, "cannot create the QUIC secret file"));
  assert_int_equal(amn_quic_secret_load(g_tmp, b, NULL, err, sizeof err), AMN_EINVAL);
  assert_non_null(strstr(err, "is not a regular file"));
}

static void test_issue_test_cert(void **state) {
  (void)state;
  char dir[512], ca[600], cak[600], crt[600], key[600], err[256] = "";
  snprintf(dir, sizeof dir, "%s/issue", g_tmp);
  assert_int_equal(mkdir(dir, 0700), 0);
  pathf(ca, sizeof ca, dir, "ca.pem");
  pathf(cak, sizeof cak, dir, "ca-key.pem");
  pathf(crt, sizeof crt, dir, "leaf.pem");
  pathf(key, sizeof key, dir, "leaf-key.pem");
  time_t now = time(NULL);
  assert_int_equal(amn_pki_make_ca(ca, cak, "Test CA", now - 60, now + 86400, err, sizeof err), 0);

  /* expired leaf without any EKU, with a DNS and an IPv6 SAN */
  static const char *const dns[] = {"svc.example", NULL};
  static const char *const ips[] = {"2001:db8::7", NULL};
  amn_pki_cert_spec sp = {.cn = "old", .dns = dns, .ips = ips, .eku = 0, .not_before = now - 10 * 86400,
                          .not_after = now - 86400};
  assert_int_equal(amn_pki_issue_test_cert(ca, cak, &sp, crt, key, err, sizeof err), 0);
  assert_int_equal(mode_of(key), 0600);
  unsigned st = verify_chain(ca, crt, GNUTLS_KP_TLS_WWW_CLIENT);
  assert_true(st & GNUTLS_CERT_EXPIRED);
  assert_false(st & GNUTLS_CERT_SIGNER_NOT_FOUND);
  gnutls_x509_crt_t c = load_crt(crt);
  char buf[64];
  size_t sz = sizeof buf;
  assert_int_equal(gnutls_x509_crt_get_key_purpose_oid(c, 0, buf, &sz, NULL), GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE);
  assert_true(gnutls_x509_crt_check_hostname(c, "svc.example"));
  const unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 7};
  assert_true(gnutls_x509_crt_check_ip(c, v6, 16, 0));
  gnutls_x509_crt_deinit(c);

  /* a valid client leaf verifies; against another CA it does not */
  sp = (amn_pki_cert_spec){.cn = "c", .eku = AMN_PKI_EKU_CLIENT, .not_before = now - 60, .not_after = now + 3600};
  assert_int_equal(amn_pki_issue_test_cert(ca, cak, &sp, crt, key, err, sizeof err), 0);
  assert_int_equal(verify_chain(ca, crt, GNUTLS_KP_TLS_WWW_CLIENT), 0);
  char ca2[600], ca2k[600];
  pathf(ca2, sizeof ca2, dir, "ca2.pem");
  pathf(ca2k, sizeof ca2k, dir, "ca2-key.pem");
  assert_int_equal(amn_pki_make_ca(ca2, ca2k, "Test CA", now - 60, now + 86400, err, sizeof err), 0);
  assert_true(verify_chain(ca2, crt, GNUTLS_KP_TLS_WWW_CLIENT) & GNUTLS_CERT_INVALID);

  /* bad arguments */
  sp.ips = (const char *const[]){"not-an-ip", NULL};
  assert_int_equal(amn_pki_issue_test_cert(ca, cak, &sp, crt, key, err, sizeof err), AMN_EINVAL);
  assert_int_equal(amn_pki_issue_test_cert(ca, "/nonexistent/key.pem", &sp, crt, key, err, sizeof err), AMN_EIO);
}

static void test_default_dir_and_paths(void **state) {
  (void)state;
  char out[4096];
  char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
  setenv("AMATERS_NET_PKI_DIR", "/x/pki", 1);
  assert_int_equal(amn_pki_default_dir(out, sizeof out), 0);
  assert_string_equal(out, "/x/pki");
  unsetenv("AMATERS_NET_PKI_DIR");
  setenv("XDG_DATA_HOME", "/data", 1);
  assert_int_equal(amn_pki_default_dir(out, sizeof out), 0);
  assert_string_equal(out, "/data/amaters-net/pki");
  assert_int_equal(amn_pki_default_dir(out, 8), AMN_EINVAL); /* does not fit */
  unsetenv("XDG_DATA_HOME");
  setenv("HOME", "/home/u", 1);
  assert_int_equal(amn_pki_default_dir(out, sizeof out), 0);
  assert_string_equal(out, "/home/u/.local/share/amaters-net/pki");
  unsetenv("HOME");
  assert_int_equal(amn_pki_default_dir(out, sizeof out), AMN_EINVAL);
  if (home) setenv("HOME", home, 1);
  free(home);

  amn_tls_opts o = {0};
  static char storage[3 * 4096];
  assert_int_equal(amn_pki_paths("/p", "client", &o, storage, sizeof storage), 0);
  assert_string_equal(o.cert_path, "/p/client.pem");
  assert_string_equal(o.key_path, "/p/client-key.pem");
  assert_string_equal(o.ca_path, "/p/ca.pem");
  assert_int_equal(amn_pki_paths("/p", "server", &o, storage, sizeof storage), 0);
  assert_string_equal(o.cert_path, "/p/server.pem");
  assert_int_equal(amn_pki_paths("/p", "admin", &o, storage, sizeof storage), AMN_EINVAL);
  assert_int_equal(amn_pki_paths("/p", "server", &o, storage, 100), AMN_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_files_and_modes), cmocka_unit_test(test_certificates),
      cmocka_unit_test(test_idempotent_and_force), cmocka_unit_test(test_key_mode_despite_umask),
      cmocka_unit_test(test_issue_test_cert),      cmocka_unit_test(test_default_dir_and_paths),
      cmocka_unit_test(test_quic_secret_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
