/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Forwarded client identity (server/fwd_cert.c, util/proxy_id.c,
 * amn_tls_verify_client_der): the header value decoder on the forms nginx
 * ($ssl_client_escaped_cert: URL-escaped PEM) and HAProxy
 * (%[ssl_c_der,base64]) send and on bad input with its exact reason; the
 * trusted proxy entries; the verification of a forwarded certificate
 * against the server's CA with the handshake's reasons; the server options. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amn/pki.h"
#include "server/server_internal.h"
#include "tls/pki_internal.h"
#include "util/proxy_id.h"

static char g_tmp[256], g_pki[300], g_other[300];

static const char *P(const char *dir, const char *file) {
  static char bufs[8][400];
  static int i;
  char *b = bufs[i++ % 8];
  snprintf(b, 400, "%s/%s", dir, file);
  return b;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static int setup(void **state) {
  (void)state;
  char err[256];
  snprintf(g_tmp, sizeof g_tmp, "/tmp/amn-fwd-XXXXXX");
  if (!mkdtemp(g_tmp)) return -1;
  snprintf(g_pki, sizeof g_pki, "%s/pki", g_tmp);
  snprintf(g_other, sizeof g_other, "%s/other", g_tmp);
  if (amn_pki_init(g_pki, false, err, sizeof err) || amn_pki_init(g_other, false, err, sizeof err)) return -1;
  time_t now = time(NULL), day = 86400;
  struct {
    const char *name, *cn;
    unsigned eku;
    time_t nb, na;
  } certs[] = {
      {"alice", "alice", AMN_PKI_EKU_CLIENT, now - day, now + day},
      {"expired", "expired", AMN_PKI_EKU_CLIENT, now - 10 * day, now - day},
      {"future", "future", AMN_PKI_EKU_CLIENT, now + day, now + 10 * day},
      {"server-eku", "server-eku", AMN_PKI_EKU_SERVER, now - day, now + day},
  };
  for (size_t i = 0; i < sizeof certs / sizeof certs[0]; i++) {
    char crt[64], key[64];
    snprintf(crt, sizeof crt, "%s.pem", certs[i].name);
    snprintf(key, sizeof key, "%s-key.pem", certs[i].name);
    amn_pki_cert_spec sp = {.cn = certs[i].cn, .eku = certs[i].eku, .not_before = certs[i].nb, .not_after = certs[i].na};
    if (amn_pki_issue_test_cert(P(g_pki, "ca.pem"), P(g_pki, "ca-key.pem"), &sp, P(g_pki, crt), P(g_pki, key), err,
                                sizeof err))
      return -1;
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *b = malloc(65536);
  assert_non_null(b);
  *len = fread(b, 1, 65535, f);
  b[*len] = 0;
  fclose(f);
  return b;
}

/* the DER of a PEM certificate file */
static void der_of(const char *path, gnutls_datum_t *der) {
  size_t n;
  char *pem = slurp(path, &n);
  gnutls_datum_t in = {(unsigned char *)pem, (unsigned)n};
  assert_int_equal(gnutls_pem_base64_decode2("CERTIFICATE", &in, der), 0);
  free(pem);
}

/* percent-escapes every byte outside [A-Za-z0-9-_.~] as nginx's escaped cert does */
static char *url_escape(const char *s) {
  char *o = malloc(strlen(s) * 3 + 1), *p = o;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-_.~", c))
      *p++ = (char)c;
    else
      p += sprintf(p, "%%%02X", c);
  }
  *p = 0;
  return o;
}

static int decode(const char *v, uint8_t **der, size_t *dl, char *why) {
  return amn_fwd_cert_decode((const uint8_t *)v, strlen(v), der, dl, why, 200);
}

static void test_decode_forms(void **state) {
  (void)state;
  gnutls_datum_t want;
  der_of(P(g_pki, "alice.pem"), &want);
  size_t n;
  char *pem = slurp(P(g_pki, "alice.pem"), &n);
  char why[200];
  uint8_t *der;
  size_t dl;
  /* nginx: URL-escaped PEM (%0A line breaks, %2B, %2F, %3D) */
  char *esc = url_escape(pem);
  assert_non_null(strstr(esc, "%0A"));
  assert_int_equal(decode(esc, &der, &dl, why), 0);
  assert_int_equal(dl, want.size);
  assert_memory_equal(der, want.data, dl);
  free(der);
  /* the PEM itself (not escaped), surrounded by white space */
  char *padded = malloc(n + 8);
  sprintf(padded, " \t%s\r\n", pem);
  assert_int_equal(decode(padded, &der, &dl, why), 0);
  assert_memory_equal(der, want.data, want.size);
  free(der);
  /* a chain: only the first certificate (the client's) */
  char *chain = malloc(2 * n + 1);
  size_t cn;
  char *ca = slurp(P(g_pki, "ca.pem"), &cn);
  sprintf(chain, "%s%s", pem, ca);
  char *esc_chain = url_escape(chain);
  assert_int_equal(decode(esc_chain, &der, &dl, why), 0);
  assert_int_equal(dl, want.size);
  assert_memory_equal(der, want.data, dl);
  free(der);
  /* HAProxy: base64 DER on one line */
  char *b64 = malloc(want.size * 2 + 8);
  size_t bl = amn_b64_encode(want.data, want.size, b64);
  b64[bl] = 0;
  assert_int_equal(decode(b64, &der, &dl, why), 0);
  assert_int_equal(dl, want.size);
  assert_memory_equal(der, want.data, dl);
  free(der);
  free(b64), free(esc_chain), free(chain), free(ca), free(padded), free(esc), free(pem);
  gnutls_free(want.data);
}

static void expect_bad(const char *v, size_t len, const char *reason) {
  uint8_t *der = (uint8_t *)"x";
  size_t dl = 7;
  char why[200] = "";
  assert_int_equal(amn_fwd_cert_decode((const uint8_t *)v, len, &der, &dl, why, sizeof why), AMN_EINVAL);
  assert_string_equal(why, reason);
  assert_null(der);
  assert_int_equal(dl, 0);
}

static void test_decode_errors(void **state) {
  (void)state;
  expect_bad("", 0, "empty");
  expect_bad(" %0A%20 ", 8, "empty");
  expect_bad("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 56, "PEM block is not a CERTIFICATE");
  expect_bad("-----BEGIN CERTIFICATE-----\nMIIB", 32, "PEM certificate without its END line");
  expect_bad("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----", 53, "no certificate data");
  expect_bad("MIIB!AAA", 8, "invalid base64");
  expect_bad("%ZZMIIB", 7, "invalid base64"); /* a malformed escape stays literal */
  expect_bad("A", 1, "invalid base64");
  expect_bad("AAAA\0AAA", 8, "invalid base64");
  char *big = malloc(16385);
  memset(big, 'A', 16385);
  expect_bad(big, 16385, "more than 16384 bytes");
  free(big);
}

static void test_proxy_ids(void **state) {
  (void)state;
  char why[200];
  amn_proxy_id p;
  amn_peer_identity id = {.verified = true, .subject = "CN=amaters-lb", .sans = {"lb.test", "127.0.0.1"}, .san_count = 2};
  for (int i = 0; i < 32; i++) id.sha256[i] = (uint8_t)(0xa0 + i);
  char hex[100] = "sha256:", colons[120] = "sha256:";
  for (int i = 0; i < 32; i++) {
    sprintf(hex + strlen(hex), "%02x", id.sha256[i]);
    sprintf(colons + strlen(colons), "%02X%s", id.sha256[i], i < 31 ? ":" : "");
  }
  assert_true(amn_proxy_id_parse(hex, &p, why, sizeof why));
  assert_true(amn_proxy_id_match(&p, &id));
  assert_true(amn_proxy_id_parse(colons, &p, why, sizeof why));
  assert_true(amn_proxy_id_match(&p, &id));
  id.sha256[31] ^= 1;
  assert_false(amn_proxy_id_match(&p, &id));
  assert_true(amn_proxy_id_parse("subject:CN=amaters-lb", &p, why, sizeof why));
  assert_true(amn_proxy_id_match(&p, &id));
  assert_true(amn_proxy_id_parse("subject:CN=amaters-lb2", &p, why, sizeof why));
  assert_false(amn_proxy_id_match(&p, &id));
  assert_true(amn_proxy_id_parse("san:LB.test", &p, why, sizeof why));
  assert_true(amn_proxy_id_match(&p, &id));
  assert_true(amn_proxy_id_parse("san:127.0.0.1", &p, why, sizeof why));
  assert_true(amn_proxy_id_match(&p, &id));
  /* never an unverified identity, nor one that came through a proxy itself */
  id.verified = false;
  assert_false(amn_proxy_id_match(&p, &id));
  id.verified = true;
  amn_peer_identity proxy = {.verified = true};
  id.via = &proxy;
  assert_false(amn_proxy_id_match(&p, &id));
  /* malformed entries */
  assert_false(amn_proxy_id_parse("sha256:abcd", &p, why, sizeof why));
  assert_string_equal(why, "\"sha256:abcd\": a SHA-256 fingerprint is 64 hex digits (pairs may be separated by ':')");
  hex[10] = 'g';
  assert_false(amn_proxy_id_parse(hex, &p, why, sizeof why));
  assert_false(amn_proxy_id_parse("san:", &p, why, sizeof why));
  assert_string_equal(why, "\"san:\": nothing after \"san:\"");
  assert_false(amn_proxy_id_parse("CN=amaters-lb", &p, why, sizeof why));
  assert_string_equal(why, "\"CN=amaters-lb\": expected \"sha256:HEX\", \"subject:DN\" or \"san:NAME\"");
}

static void expect_verify(amn_tls_ctx *ctx, const char *dir, const char *file, int rc, const char *reason) {
  gnutls_datum_t der;
  der_of(P(dir, file), &der);
  amn_peer_store st;
  char why[300] = "";
  assert_int_equal(amn_tls_verify_client_der(ctx, der.data, der.size, &st, why, sizeof why), rc);
  if (rc == 0) {
    assert_true(st.id.verified);
    assert_null(st.id.via);
    amn_peer_store_free(&st);
  } else {
    assert_non_null(strstr(why, reason));
    assert_null(st.blob);
  }
  gnutls_free(der.data);
}

static void test_verify(void **state) {
  (void)state;
  amn_tls_opts o = {.cert_path = P(g_pki, "server.pem"), .key_path = P(g_pki, "server-key.pem"), .ca_path = P(g_pki, "ca.pem")};
  static const char *const alpn[] = {"h2", NULL};
  amn_tls_ctx *ctx;
  char err[256];
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_SERVER, &o, alpn, err, sizeof err), 0);
  gnutls_datum_t der;
  der_of(P(g_pki, "alice.pem"), &der);
  amn_peer_store st;
  char why[300];
  assert_int_equal(amn_tls_verify_client_der(ctx, der.data, der.size, &st, why, sizeof why), 0);
  assert_string_equal(st.id.subject, "CN=alice,O=amaters-net development");
  assert_true(st.id.verified);
  /* the leaf itself is kept (signed queries are verified against its key) */
  assert_int_equal(st.id.cert_der_len, der.size);
  assert_memory_equal(st.id.cert_der, der.data, der.size);
  amn_peer_store_free(&st);
  /* a byte changed in the signature: the chain does not verify */
  der.data[der.size - 3] ^= 0x55;
  assert_int_equal(amn_tls_verify_client_der(ctx, der.data, der.size, &st, why, sizeof why), AMN_ETLS);
  assert_non_null(strstr(why, "client certificate"));
  /* not DER at all */
  assert_int_equal(amn_tls_verify_client_der(ctx, (const uint8_t *)"\x30\x03\x01\x01", 4, &st, why, sizeof why), AMN_ETLS);
  assert_non_null(strstr(why, "client certificate could not be parsed: "));
  gnutls_free(der.data);
  expect_verify(ctx, g_pki, "client.pem", 0, NULL);
  expect_verify(ctx, g_pki, "expired.pem", AMN_ETLS, "client certificate has expired (not after ");
  expect_verify(ctx, g_pki, "future.pem", AMN_ETLS, "client certificate is not yet valid (not before ");
  expect_verify(ctx, g_pki, "server-eku.pem", AMN_ETLS, "client certificate lacks extended key usage clientAuth");
  expect_verify(ctx, g_pki, "server.pem", AMN_ETLS, "client certificate lacks extended key usage clientAuth");
  expect_verify(ctx, g_other, "client.pem", AMN_ETLS, "client certificate not issued by a trusted CA (issuer ");
  amn_tls_ctx_unref(ctx);
}

/* A forwarded certificate the CRL lists is refused as in a handshake; the
 * others of the CA still pass. */
static void test_verify_revoked(void **state) {
  (void)state;
  char err[300];
  assert_int_equal(amn_pki_issue_client(g_pki, "mallory", NULL, NULL, NULL, err, sizeof err), 0);
  bool added = false;
  assert_int_equal(amn_pki_revoke(g_pki, P(g_pki, "mallory.pem"), 86400, &added, err, sizeof err), 0);
  assert_true(added);
  amn_tls_opts o = {.cert_path = P(g_pki, "server.pem"), .key_path = P(g_pki, "server-key.pem"),
                    .ca_path = P(g_pki, "ca.pem"), .crl_path = P(g_pki, "crl.pem")};
  static const char *const alpn[] = {"h2", NULL};
  amn_tls_ctx *ctx;
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_SERVER, &o, alpn, err, sizeof err), 0);
  expect_verify(ctx, g_pki, "mallory.pem", AMN_ETLS, "client certificate revoked (serial ");
  expect_verify(ctx, g_pki, "alice.pem", 0, NULL);
  amn_tls_ctx_unref(ctx);
}

static void test_server_options(void **state) {
  (void)state;
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.tls.cert_path = P(g_pki, "server.pem");
  o.tls.key_path = P(g_pki, "server-key.pem");
  o.tls.ca_path = P(g_pki, "ca.pem");
  const char *good[] = {"san:lb.test", "subject:CN=amaters-lb"}, *bad[] = {"san:lb.test", "lb.test"};
  amn_server *s = NULL;
  char err[300];
  o.trusted_proxies = good;
  o.trusted_proxy_count = 2;
  assert_int_equal(amn_server_new(&s, &o, err, sizeof err), 0);
  amn_server_free(s);
  o.trusted_proxies = bad;
  assert_int_equal(amn_server_new(&s, &o, err, sizeof err), AMN_EINVAL);
  assert_string_equal(err, "trusted_proxies[1] \"lb.test\": expected \"sha256:HEX\", \"subject:DN\" or \"san:NAME\"");
  o.trusted_proxies = good;
  o.forwarded_cert_header = "X-Client-Cert";
  assert_int_equal(amn_server_new(&s, &o, err, sizeof err), AMN_EINVAL);
  assert_string_equal(err, "forwarded_cert_header \"X-Client-Cert\": a lower-case header name (a-z 0-9 - _ .)");
  o.forwarded_cert_header = "x-cert-bin";
  assert_int_equal(amn_server_new(&s, &o, err, sizeof err), AMN_EINVAL);
  o.forwarded_cert_header = NULL;
  o.tls.insecure = true;
  assert_int_equal(amn_server_new(&s, &o, err, sizeof err), AMN_EINVAL);
  assert_string_equal(err, "trusted_proxies needs TLS (an insecure server has no verified peer)");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decode_forms), cmocka_unit_test(test_decode_errors), cmocka_unit_test(test_proxy_ids),
      cmocka_unit_test(test_verify),
      cmocka_unit_test(test_verify_revoked),       cmocka_unit_test(test_server_options),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
