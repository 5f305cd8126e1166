/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* TLS layer: real TLS handshakes between two threads over a socketpair,
 * with contexts/sessions from tls/tls.h and certificates from the dev PKI
 * and amn_pki_issue_test_cert. Every refusal is checked for its exact
 * reason on the verifying side. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "amn/pki.h"
#include "tls/pki_internal.h"
#include "tls/tls.h"

/* ------------------------------------------------------------------ */
/* Fixture: one PKI directory with good and bad certificates           */
/* ------------------------------------------------------------------ */

static char g_tmp[256];
static char g_pki[300];

static const char *P(const char *file) { /* path in g_pki (ring of buffers) */
  static char bufs[16][400];
  static int i;
  char *b = bufs[i++ % 16];
  snprintf(b, 400, "%s/%s", g_pki, file);
  return b;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

static int issue(const char *ca, const char *name, const char *cn, const char *const *dns, const char *const *ips,
                 unsigned eku, time_t nb, time_t na) {
  char crt[64], key[64], cak[64], err[256];
  snprintf(crt, sizeof crt, "%s.pem", name);
  snprintf(key, sizeof key, "%s-key.pem", name);
  snprintf(cak, sizeof cak, "%s-key.pem", ca);
  char cap[64];
  snprintf(cap, sizeof cap, "%s.pem", ca);
  amn_pki_cert_spec sp = {.cn = cn, .dns = dns, .ips = ips, .eku = eku, .not_before = nb, .not_after = na};
  int rc = amn_pki_issue_test_cert(P(cap), P(cak), &sp, P(crt), P(key), err, sizeof err);
  if (rc) fprintf(stderr, "issue %s: %s\n", name, err);
  return rc;
}

static int setup(void **state) {
  (void)state;
  const char *t = getenv("TMPDIR");
  snprintf(g_tmp, sizeof g_tmp, "%s/amn-tls-XXXXXX", t && *t ? t : "/tmp");
  if (!mkdtemp(g_tmp)) return -1;
  snprintf(g_pki, sizeof g_pki, "%s/pki", g_tmp);
  char err[256];
  amn_log_set_level(AMN_LOG_WARN);
  if (amn_pki_init(g_pki, false, err, sizeof err) != 0) {
    fprintf(stderr, "pki: %s\n", err);
    return -1;
  }
  time_t now = time(NULL), day = 86400;
  static const char *const localhost[] = {"localhost", NULL};
  static const char *const loop_ips[] = {"127.0.0.1", "::1", NULL};
  static const char *const other_dns[] = {"other.example", NULL};
  static const char *const ip_as_dns[] = {"127.0.0.1", "::1", NULL};
  static const char *const wildcard[] = {"*.svc.test", NULL};
  /* another CA with the SAME subject name as ours: only the key differs */
  if (amn_pki_make_ca(P("evil-ca.pem"), P("evil-ca-key.pem"), "amaters-net development CA", now - day, now + day,
                      err, sizeof err) != 0)
    return -1;
  int rc = 0;
  rc |= issue("ca", "cli-expired", "amaters-dev-client", NULL, NULL, AMN_PKI_EKU_CLIENT, now - 10 * day, now - day);
  rc |= issue("ca", "cli-future", "amaters-dev-client", NULL, NULL, AMN_PKI_EKU_CLIENT, now + day, now + 10 * day);
  rc |= issue("ca", "cli-server-eku", "amaters-dev-client", NULL, NULL, AMN_PKI_EKU_SERVER, now - day, now + day);
  rc |= issue("ca", "cli-no-eku", "amaters-dev-client", NULL, NULL, 0, now - day, now + day);
  rc |= issue("evil-ca", "cli-evil", "amaters-dev-client", NULL, NULL, AMN_PKI_EKU_CLIENT, now - day, now + day);
  rc |= issue("ca", "srv-other-name", "other.example", other_dns, NULL, AMN_PKI_EKU_SERVER, now - day, now + day);
  rc |= issue("ca", "srv-ip-as-dns", "localhost", ip_as_dns, NULL, AMN_PKI_EKU_SERVER, now - day, now + day);
  rc |= issue("ca", "srv-wildcard", "wild", wildcard, NULL, AMN_PKI_EKU_SERVER, now - day, now + day);
  rc |= issue("evil-ca", "srv-evil", "localhost", localhost, loop_ips, AMN_PKI_EKU_SERVER, now - day, now + day);
  rc |= issue("ca", "srv-expired", "localhost", localhost, loop_ips, AMN_PKI_EKU_SERVER, now - 10 * day, now - day);
  rc |= issue("ca", "srv-client-eku", "localhost", localhost, loop_ips, AMN_PKI_EKU_CLIENT, now - day, now + day);
  return rc ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  return nftw(g_tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------------ */
/* Two-thread handshake runner                                         */
/* ------------------------------------------------------------------ */

static const char *const ALPN_H2[] = {"h2", NULL};
static const char *const ALPN_H3[] = {"h3", NULL};

typedef struct side {
  /* configuration */
  bool server;
  amn_tls_opts opts;
  const char *const *alpn;
  const char *host;
  /* a plain GnuTLS session instead of amn_tls (no verification, no client
   * certificate request) */
  bool bare;
  const char *bare_prio, *bare_cert, *bare_key, *bare_alpn;
  const char *plaintext; /* client only: send these bytes, no TLS at all */
  /* results */
  int fd;
  int ctx_rc, hs_rc, io_rc;
  char ctx_err[256];
  char reason[256];     /* amn_tls_handshake_error() after a failed handshake */
  char last_error[256]; /* amn_tls_last_error() ("" when NULL) */
  bool alpn_h2;
  int peer_rc;
  amn_peer_store peer;
  gnutls_protocol_t version;
} side;

static int bare_session(side *sd, gnutls_session_t *s, gnutls_certificate_credentials_t *cr) {
  gnutls_certificate_allocate_credentials(cr);
  if (sd->bare_cert &&
      gnutls_certificate_set_x509_key_file2(*cr, sd->bare_cert, sd->bare_key, GNUTLS_X509_FMT_PEM, NULL, 0) < 0)
    return -1;
  gnutls_init(s, sd->server ? GNUTLS_SERVER : GNUTLS_CLIENT);
  gnutls_priority_set_direct(*s, sd->bare_prio ? sd->bare_prio : "NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL);
  gnutls_credentials_set(*s, GNUTLS_CRD_CERTIFICATE, *cr);
  if (!sd->server) gnutls_server_name_set(*s, GNUTLS_NAME_DNS, "localhost", 9);
  if (sd->bare_alpn) {
    gnutls_datum_t p = {(unsigned char *)sd->bare_alpn, (unsigned)strlen(sd->bare_alpn)};
    gnutls_alpn_set_protocols(*s, &p, 1, 0);
  }
  return 0;
}

static void *run_side(void *arg) {
  side *sd = arg;
  amn_tls_ctx *ctx = NULL;
  gnutls_session_t s = NULL;
  gnutls_certificate_credentials_t bare_cr = NULL;
  sd->hs_rc = sd->io_rc = 1; /* "not reached" */
  if (sd->plaintext) {
    ssize_t w = write(sd->fd, sd->plaintext, strlen(sd->plaintext));
    (void)w;
    shutdown(sd->fd, SHUT_WR);
    char buf[256];
    while (read(sd->fd, buf, sizeof buf) > 0) {
    }
    return NULL;
  }
  if (sd->bare) {
    if (bare_session(sd, &s, &bare_cr) != 0) {
      sd->ctx_rc = -1;
      goto done;
    }
  } else {
    sd->ctx_rc = amn_tls_ctx_new(&ctx, sd->server ? AMN_TLS_SERVER : AMN_TLS_CLIENT, &sd->opts,
                                 sd->alpn ? sd->alpn : ALPN_H2, sd->ctx_err, sizeof sd->ctx_err);
    if (sd->ctx_rc) goto done;
    sd->ctx_rc = amn_tls_session_new(ctx, &s, 0, sd->host, sd->ctx_err, sizeof sd->ctx_err);
    amn_tls_ctx_unref(ctx); /* the session keeps the context alive */
    if (sd->ctx_rc) goto done;
  }
  gnutls_transport_set_int(s, sd->fd);
  gnutls_handshake_set_timeout(s, 10000);
  do sd->hs_rc = gnutls_handshake(s);
  while (sd->hs_rc == GNUTLS_E_INTERRUPTED);
  if (sd->hs_rc < 0) {
    snprintf(sd->reason, sizeof sd->reason, "%s", amn_tls_handshake_error(s, sd->hs_rc));
    gnutls_alert_send_appropriate(s, sd->hs_rc);
  } else {
    sd->version = gnutls_protocol_get_version(s);
    sd->alpn_h2 = amn_tls_alpn_is(s, "h2");
    sd->peer_rc = amn_tls_peer_identity(s, &sd->peer);
    /* application data both ways: in TLS 1.3 the client learns here that
     * the server refused its certificate */
    char buf[8] = {0};
    ssize_t r;
    if (sd->server) {
      r = gnutls_record_send(s, "ping", 4);
      if (r == 4) do r = gnutls_record_recv(s, buf, 4); while (r == GNUTLS_E_INTERRUPTED);
      sd->io_rc = (r == 4 && memcmp(buf, "pong", 4) == 0) ? 0 : (int)(r < 0 ? r : -1);
    } else {
      do r = gnutls_record_recv(s, buf, 4); while (r == GNUTLS_E_INTERRUPTED);
      if (r == 4 && memcmp(buf, "ping", 4) == 0) r = gnutls_record_send(s, "pong", 4);
      sd->io_rc = r == 4 ? 0 : (int)(r < 0 ? r : -1);
    }
    if (sd->io_rc < 0) snprintf(sd->reason, sizeof sd->reason, "%s", amn_tls_handshake_error(s, sd->io_rc));
  }
  const char *le = amn_tls_last_error(s);
  snprintf(sd->last_error, sizeof sd->last_error, "%s", le ? le : "");
done:
  shutdown(sd->fd, SHUT_WR); /* the peer sees EOF instead of waiting */
  if (s) gnutls_deinit(s);
  if (bare_cr) gnutls_certificate_free_credentials(bare_cr);
  return NULL;
}

static void run_pair(side *srv, side *cli) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  struct timeval tv = {.tv_sec = 10}; /* bound every blocking read */
  for (int i = 0; i < 2; i++) setsockopt(sv[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  srv->server = true;
  cli->server = false;
  srv->fd = sv[0];
  cli->fd = sv[1];
  pthread_t a, b;
  assert_int_equal(pthread_create(&a, NULL, run_side, srv), 0);
  assert_int_equal(pthread_create(&b, NULL, run_side, cli), 0);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  close(sv[0]);
  close(sv[1]);
}

static amn_tls_opts opts_for(const char *cert, const char *key) {
  char c[64], k[64];
  snprintf(c, sizeof c, "%s.pem", cert);
  snprintf(k, sizeof k, "%s-key.pem", key ? key : cert);
  return (amn_tls_opts){.cert_path = strdup(P(c)), .key_path = strdup(P(k)), .ca_path = strdup(P("ca.pem"))};
}

static void free_side(side *s) {
  free((char *)s->opts.cert_path);
  free((char *)s->opts.key_path);
  free((char *)s->opts.ca_path);
  amn_peer_store_free(&s->peer);
}

/* server with the dev server cert; client with `cli_cert` connecting to `host` */
static void pair(side *srv, side *cli, const char *srv_cert, const char *cli_cert, const char *host) {
  memset(srv, 0, sizeof *srv);
  memset(cli, 0, sizeof *cli);
  srv->opts = opts_for(srv_cert, NULL);
  if (cli_cert) cli->opts = opts_for(cli_cert, NULL);
  cli->host = host;
}

/* The handshake fails and `verifier` names `reason` (via both
 * amn_tls_handshake_error and amn_tls_last_error). */
static void expect_refusal(side *verifier, side *other, const char *reason) {
  assert_int_equal(verifier->ctx_rc, 0);
  assert_int_equal(other->ctx_rc, 0);
  if (!strstr(verifier->reason, reason) || !strstr(verifier->last_error, reason))
    fail_msg("expected '%s', got reason '%s' / last_error '%s' (rc %d)", reason, verifier->reason,
             verifier->last_error, verifier->hs_rc);
  assert_true(verifier->hs_rc < 0);
  /* the other side never gets application data through */
  assert_true(other->hs_rc < 0 || other->io_rc != 0);
}

/* ------------------------------------------------------------------ */
/* Success                                                             */
/* ------------------------------------------------------------------ */

static void der_sha256(const char *pem, uint8_t out[32]) {
  gnutls_datum_t d, der;
  gnutls_x509_crt_t c;
  assert_int_equal(gnutls_load_file(pem, &d), 0);
  gnutls_x509_crt_init(&c);
  assert_int_equal(gnutls_x509_crt_import(c, &d, GNUTLS_X509_FMT_PEM), 0);
  assert_int_equal(gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_DER, &der), 0);
  gnutls_hash_fast(GNUTLS_DIG_SHA256, der.data, der.size, out);
  gnutls_free(d.data);
  gnutls_free(der.data);
  gnutls_x509_crt_deinit(c);
}

static void test_success_identities(void **state) {
  (void)state;
  side srv, cli;
  pair(&srv, &cli, "server", "client", "localhost");
  run_pair(&srv, &cli);
  if (srv.hs_rc != 0 || cli.hs_rc != 0)
    fail_msg("handshake failed: server '%s' '%s', client '%s' '%s'", srv.ctx_err, srv.reason, cli.ctx_err, cli.reason);
  assert_int_equal(srv.io_rc, 0);
  assert_int_equal(cli.io_rc, 0);
  assert_int_equal(srv.version, GNUTLS_TLS1_3);
  assert_true(srv.alpn_h2 && cli.alpn_h2);
  assert_string_equal(srv.last_error, "");
  assert_string_equal(cli.last_error, "");

  /* the server sees the client certificate */
  assert_int_equal(srv.peer_rc, 0);
  assert_true(srv.peer.id.verified);
  assert_string_equal(srv.peer.id.subject, "CN=amaters-dev-client,O=amaters-net development");
  assert_int_equal(srv.peer.id.san_count, 0);
  uint8_t h[32];
  char hex[65];
  der_sha256(P("client.pem"), h);
  assert_memory_equal(srv.peer.id.sha256, h, 32);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
  assert_string_equal(srv.peer.id.sha256_hex, hex);

  /* the client sees the server certificate with its SANs as text */
  assert_int_equal(cli.peer_rc, 0);
  assert_true(cli.peer.id.verified);
  assert_string_equal(cli.peer.id.subject, "CN=localhost,O=amaters-net development");
  assert_int_equal(cli.peer.id.san_count, 3);
  assert_string_equal(cli.peer.id.sans[0], "localhost");
  assert_string_equal(cli.peer.id.sans[1], "127.0.0.1");
  assert_string_equal(cli.peer.id.sans[2], "::1");
  der_sha256(P("server.pem"), h);
  assert_memory_equal(cli.peer.id.sha256, h, 32);
  free_side(&srv);
  free_side(&cli);
}

/* IP literals (v4, v6, bracketed, with zone) match IP SANs; names are case-insensitive */
static void test_success_host_forms(void **state) {
  (void)state;
  static const char *const hosts[] = {"127.0.0.1", "::1", "[::1]", "::1%lo", "LocalHost", "localhost."};
  for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
    side srv, cli;
    pair(&srv, &cli, "server", "client", hosts[i]);
    run_pair(&srv, &cli);
    if (cli.hs_rc != 0 || cli.io_rc != 0 || srv.io_rc != 0) fail_msg("host '%s': %s", hosts[i], cli.reason);
    free_side(&srv);
    free_side(&cli);
  }
}

/* tls.server_name overrides the URL host */
static void test_server_name_override(void **state) {
  (void)state;
  side srv, cli;
  pair(&srv, &cli, "server", "client", "10.1.2.3");
  cli.opts.server_name = "localhost";
  run_pair(&srv, &cli);
  assert_int_equal(cli.hs_rc, 0);
  assert_int_equal(cli.io_rc, 0);
  free_side(&srv);
  free_side(&cli);

  pair(&srv, &cli, "server", "client", "localhost");
  cli.opts.server_name = "other.example";
  run_pair(&srv, &cli);
  expect_refusal(&cli, &srv, "server certificate does not match host 'other.example'");
  free_side(&srv);
  free_side(&cli);
}

static void test_wildcard(void **state) {
  (void)state;
  side srv, cli;
  pair(&srv, &cli, "srv-wildcard", "client", "api.svc.test");
  run_pair(&srv, &cli);
  assert_int_equal(cli.hs_rc, 0);
  assert_int_equal(cli.io_rc, 0);
  free_side(&srv);
  free_side(&cli);
  /* the wildcard covers exactly one label */
  pair(&srv, &cli, "srv-wildcard", "client", "a.b.svc.test");
  run_pair(&srv, &cli);
  expect_refusal(&cli, &srv, "server certificate does not match host 'a.b.svc.test'");
  free_side(&srv);
  free_side(&cli);
}

/* ------------------------------------------------------------------ */
/* Refusals by the server (client certificate)                         */
/* ------------------------------------------------------------------ */

static void test_no_client_certificate(void **state) {
  (void)state;
  side srv, cli;
  pair(&srv, &cli, "server", NULL, NULL);
  cli.bare = true;
  cli.bare_alpn = "h2";
  run_pair(&srv, &cli);
  expect_refusal(&srv, &cli, "no client certificate presented");
  assert_int_equal(srv.hs_rc, GNUTLS_E_CERTIFICATE_REQUIRED);
  free_side(&srv);
  free_side(&cli);
}

static void refuse_client(const char *cert, const char *reason) {
  side srv, cli;
  pair(&srv, &cli, "server", NULL, "localhost");
  /* a bare client: presents the certificate without checking it itself */
  char c[64], k[64];
  snprintf(c, sizeof c, "%s.pem", cert);
  snprintf(k, sizeof k, "%s-key.pem", cert);
  cli.bare = true;
  cli.bare_alpn = "h2";
  cli.bare_cert = P(c);
  cli.bare_key = P(k);
  run_pair(&srv, &cli);
  expect_refusal(&srv, &cli, reason);
  assert_int_equal(srv.hs_rc, GNUTLS_E_CERTIFICATE_ERROR);
  /* the client learns it through a bad_certificate alert */
  assert_int_equal(cli.io_rc, GNUTLS_E_FATAL_ALERT_RECEIVED);
  free_side(&srv);
  free_side(&cli);
}

static void test_client_cert_other_ca(void **state) {
  (void)state;
  refuse_client("cli-evil", "client certificate not issued by a trusted CA (issuer 'CN=amaters-net development CA");
}

static void test_client_cert_expired(void **state) {
  (void)state;
  refuse_client("cli-expired", "client certificate has expired (not after ");
}

static void test_client_cert_not_yet_valid(void **state) {
  (void)state;
  refuse_client("cli-future", "client certificate is not yet valid (not before ");
}

static void test_client_cert_without_client_eku(void **state) {
  (void)state;
  refuse_client("cli-server-eku", "client certificate lacks extended key usage clientAuth");
  refuse_client("cli-no-eku", "client certificate lacks extended key usage clientAuth");
}

/* an amn_tls client does not even start with an expired certificate */
static void test_own_client_cert_expired(void **state) {
  (void)state;
  side srv, cli;
  pair(&srv, &cli, "server", "client", "localhost");
  free((char *)cli.opts.cert_path);
  free((char *)cli.opts.key_path);
  cli.opts.cert_path = strdup(P("cli-expired.pem"));
  cli.opts.key_path = strdup(P("cli-expired-key.pem"));
  /* our own client refuses to start with an expired certificate */
  run_pair(&srv, &cli);
  assert_int_equal(cli.ctx_rc, AMN_ETLS);
  assert_non_null(strstr(cli.ctx_err, "has expired"));
  free_side(&srv);
  free_side(&cli);
}

/* ------------------------------------------------------------------ */
/* Refusals by the client (server certificate)                         */
/* ------------------------------------------------------------------ */

static void refuse_server(const char *srv_cert, const char *host, const char *reason) {
  side srv, cli;
  pair(&srv, &cli, srv_cert, "client", host);
  run_pair(&srv, &cli);
  expect_refusal(&cli, &srv, reason);
  assert_int_equal(cli.hs_rc, GNUTLS_E_CERTIFICATE_ERROR);
  /* the server gets the client's alert */
  assert_int_equal(srv.hs_rc, GNUTLS_E_FATAL_ALERT_RECEIVED);
  assert_non_null(strstr(srv.reason, "peer sent TLS alert"));
  free_side(&srv);
  free_side(&cli);
}

static void test_server_name_mismatch(void **state) {
  (void)state;
  refuse_server("srv-other-name", "localhost", "server certificate does not match host 'localhost'");
  refuse_server("server", "127.0.0.2", "server certificate does not match host '127.0.0.2'");
  refuse_server("server", "::2", "server certificate does not match host '::2'");
  refuse_server("server", "example.com", "server certificate does not match host 'example.com'");
}

/* an IP literal never matches a DNS SAN spelled like that IP */
static void test_ip_compared_as_ip(void **state) {
  (void)state;
  refuse_server("srv-ip-as-dns", "127.0.0.1", "server certificate does not match host '127.0.0.1'");
  refuse_server("srv-ip-as-dns", "[::1]", "server certificate does not match host '::1'");
}

static void test_server_cert_other_ca(void **state) {
  (void)state;
  refuse_server("srv-evil", "localhost", "server certificate not issued by a trusted CA");
}

static void test_server_cert_expired(void **state) {
  (void)state;
  /* our own server refuses to start with an expired certificate ... */
  side srv, cli;
  pair(&srv, &cli, "srv-expired", "client", "localhost");
  run_pair(&srv, &cli);
  assert_int_equal(srv.ctx_rc, AMN_ETLS);
  assert_non_null(strstr(srv.ctx_err, "own certificate"));
  assert_non_null(strstr(srv.ctx_err, "has expired"));
  free_side(&srv);
  free_side(&cli);

  /* ... so a plain GnuTLS server presents it, and our client refuses it */
  pair(&srv, &cli, "server", "client", "localhost");
  srv.bare = true;
  srv.bare_cert = P("srv-expired.pem");
  srv.bare_key = P("srv-expired-key.pem");
  srv.bare_alpn = "h2";
  run_pair(&srv, &cli);
  expect_refusal(&cli, &srv, "server certificate has expired (not after ");
  assert_int_equal(cli.hs_rc, GNUTLS_E_CERTIFICATE_ERROR);
  assert_int_equal(srv.hs_rc, GNUTLS_E_FATAL_ALERT_RECEIVED);
  free_side(&srv);
  free_side(&cli);

  /* control: the same plain server with a valid certificate is accepted */
  pair(&srv, &cli, "server", "client", "localhost");
  srv.bare = true;
  srv.bare_cert = P("server.pem");
  srv.bare_key = P("server-key.pem");
  srv.bare_alpn = "h2";
  run_pair(&srv, &cli);
  assert_int_equal(cli.hs_rc, 0);
  assert_int_equal(cli.io_rc, 0);
  free_side(&srv);
  free_side(&cli);
}

/* a server selecting no ALPN protocol is refused by the client */
static void test_server_without_alpn(void **state) {
  (void)state;
  side srv, cli;
  pair(&srv, &cli, "server", "client", "localhost");
  srv.bare = true;
  srv.bare_cert = P("server.pem");
  srv.bare_key = P("server-key.pem");
  run_pair(&srv, &cli);
  expect_refusal(&cli, &srv, "server selected no ALPN protocol (offered: h2)");
  free_side(&srv);
  free_side(&cli);
}

static void test_server_cert_without_server_eku(void **state) {
  (void)state;
  refuse_server("srv-client-eku", "localhost", "server certificate lacks extended key usage serverAuth");
}

/* ------------------------------------------------------------------ */
/* ALPN, versions, plaintext                                           */
/* ------------------------------------------------------------------ */

static void test_alpn_mismatch(void **state) {
  (void)state;
  side srv, cli;
  pair(&srv, &cli, "server", "client", "localhost");
  cli.alpn = ALPN_H3;
  run_pair(&srv, &cli);
  expect_refusal(&srv, &cli, "no common ALPN protocol");
  free_side(&srv);
  free_side(&cli);

  /* a client sending no ALPN at all is refused too */
  pair(&srv, &cli, "server", NULL, NULL);
  cli.bare = true;
  cli.bare_cert = P("client.pem");
  cli.bare_key = P("client-key.pem");
  run_pair(&srv, &cli);
  expect_refusal(&srv, &cli, "client offered none of the ALPN protocols: h2");
  free_side(&srv);
  free_side(&cli);
}

static void test_tls12(void **state) {
  (void)state;
  /* TLS 1.3 only by default: a TLS 1.2 client is refused */
  side srv, cli;
  pair(&srv, &cli, "server", NULL, NULL);
  cli.bare = true;
  cli.bare_prio = "NORMAL:-VERS-ALL:+VERS-TLS1.2";
  cli.bare_alpn = "h2";
  cli.bare_cert = P("client.pem");
  cli.bare_key = P("client-key.pem");
  run_pair(&srv, &cli);
  expect_refusal(&srv, &cli, "no common TLS version or cipher suite");
  free_side(&srv);
  free_side(&cli);

  /* allowed: the same client works, and its certificate is verified */
  pair(&srv, &cli, "server", NULL, NULL);
  srv.opts.allow_tls12 = true;
  cli.bare = true;
  cli.bare_prio = "NORMAL:-VERS-ALL:+VERS-TLS1.2";
  cli.bare_alpn = "h2";
  cli.bare_cert = P("client.pem");
  cli.bare_key = P("client-key.pem");
  run_pair(&srv, &cli);
  assert_int_equal(srv.hs_rc, 0);
  assert_int_equal(srv.io_rc, 0);
  assert_int_equal(srv.version, GNUTLS_TLS1_2);
  assert_true(srv.peer.id.verified);
  free_side(&srv);
  free_side(&cli);

  /* ... and an expired client certificate is still refused over TLS 1.2 */
  pair(&srv, &cli, "server", NULL, NULL);
  srv.opts.allow_tls12 = true;
  cli.bare = true;
  cli.bare_prio = "NORMAL:-VERS-ALL:+VERS-TLS1.2";
  cli.bare_alpn = "h2";
  cli.bare_cert = P("cli-expired.pem");
  cli.bare_key = P("cli-expired-key.pem");
  run_pair(&srv, &cli);
  expect_refusal(&srv, &cli, "client certificate has expired");
  free_side(&srv);
  free_side(&cli);
}

static void test_plaintext_client(void **state) {
  (void)state;
  side srv, cli;
  pair(&srv, &cli, "server", NULL, NULL);
  cli.plaintext = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  run_pair(&srv, &cli);
  assert_true(srv.hs_rc < 0);
  if (!strstr(srv.reason, "does not speak TLS")) fail_msg("reason: %s (rc %d)", srv.reason, srv.hs_rc);
  free_side(&srv);
  free_side(&cli);
}

/* ------------------------------------------------------------------ */
/* Context creation                                                    */
/* ------------------------------------------------------------------ */

static char g_log[4096];
static void capture(amn_log_level lvl, const char *line, void *ud) {
  (void)ud;
  size_t n = strlen(g_log);
  snprintf(g_log + n, sizeof g_log - n, "%d:%s\n", (int)lvl, line);
}

static void copy_file(const char *from, const char *to, mode_t mode) {
  gnutls_datum_t d;
  char err[256];
  assert_int_equal(gnutls_load_file(from, &d), 0);
  assert_int_equal(amn_pki_write_file(to, d.data, d.size, mode, err, sizeof err), 0);
  gnutls_free(d.data);
}

static void test_key_permission_warning(void **state) {
  (void)state;
  char err[256];
  amn_tls_ctx *ctx = NULL;
  amn_tls_opts o = {.cert_path = P("client.pem"), .key_path = P("loose-key.pem"), .ca_path = P("ca.pem")};
  copy_file(P("client-key.pem"), o.key_path, 0644);
  g_log[0] = '\0';
  amn_log_set_sink(capture, NULL);
  int rc = amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &o, ALPN_H2, err, sizeof err);
  amn_log_set_sink(NULL, NULL);
  assert_int_equal(rc, 0);
  amn_tls_ctx_unref(ctx);
  if (!strstr(g_log, "1:TLS key file") || !strstr(g_log, "loose-key.pem") || !strstr(g_log, "mode 0644"))
    fail_msg("no warning logged: '%s'", g_log);

  /* 0600: silent */
  assert_int_equal(chmod(o.key_path, 0600), 0);
  g_log[0] = '\0';
  amn_log_set_sink(capture, NULL);
  rc = amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &o, ALPN_H2, err, sizeof err);
  amn_log_set_sink(NULL, NULL);
  assert_int_equal(rc, 0);
  amn_tls_ctx_unref(ctx);
  assert_string_equal(g_log, "");
}

static void test_ctx_errors(void **state) {
  (void)state;
  char err[256];
  amn_tls_ctx *ctx = (amn_tls_ctx *)1;
  amn_tls_opts o = {.cert_path = P("client.pem"), .key_path = P("client-key.pem"), .ca_path = P("ca.pem")};

  /* missing files */
  amn_tls_opts m = o;
  m.ca_path = P("nope.pem");
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &m, ALPN_H2, err, sizeof err), AMN_EIO);
  assert_non_null(strstr(err, "nope.pem"));
  m = o;
  m.key_path = P("nope-key.pem");
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &m, ALPN_H2, err, sizeof err), AMN_EIO);
  assert_null(ctx);

  /* a CA bundle without any certificate */
  copy_file(P("client-key.pem"), P("empty-ca.pem"), 0644);
  m = o;
  m.ca_path = P("empty-ca.pem");
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &m, ALPN_H2, err, sizeof err), AMN_ETLS);
  assert_non_null(strstr(err, "holds a private key, not a certificate"));
  amn_tls_file which = AMN_TLS_FILE_NONE;
  assert_int_equal(amn_tls_check_files(&m, &which, err, sizeof err), AMN_ETLS);
  assert_int_equal(which, AMN_TLS_FILE_CA);

  /* key of another certificate */
  m = o;
  m.key_path = P("server-key.pem");
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &m, ALPN_H2, err, sizeof err), AMN_ETLS);
  assert_non_null(strstr(err, "does not match the certificate in"));
  assert_int_equal(amn_tls_check_files(&m, &which, err, sizeof err), AMN_ETLS);
  assert_int_equal(which, AMN_TLS_FILE_KEY);

  /* the files' kinds and their readability, each named */
  m = o;
  m.cert_path = P("client-key.pem");
  assert_int_equal(amn_tls_check_files(&m, &which, err, sizeof err), AMN_ETLS);
  assert_int_equal(which, AMN_TLS_FILE_CERT);
  assert_non_null(strstr(err, "holds a private key, not a certificate"));
  m = o;
  m.key_path = P("client.pem");
  assert_int_equal(amn_tls_check_files(&m, &which, err, sizeof err), AMN_ETLS);
  assert_int_equal(which, AMN_TLS_FILE_KEY);
  assert_non_null(strstr(err, "holds a certificate, not a private key"));
  m = o;
  m.cert_path = g_pki;
  assert_int_equal(amn_tls_check_files(&m, &which, err, sizeof err), AMN_EIO);
  assert_int_equal(which, AMN_TLS_FILE_CERT);
  assert_non_null(strstr(err, "Is a directory"));
  m = o;
  m.ca_path = P("nope.pem");
  assert_int_equal(amn_tls_check_files(&m, &which, err, sizeof err), AMN_EIO);
  assert_int_equal(which, AMN_TLS_FILE_CA);
  assert_non_null(strstr(err, "No such file or directory"));
  assert_int_equal(amn_tls_check_files(&o, &which, err, sizeof err), 0);
  assert_int_equal(which, AMN_TLS_FILE_NONE);

  /* own certificate not yet valid */
  m = o;
  m.cert_path = P("cli-future.pem");
  m.key_path = P("cli-future-key.pem");
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &m, ALPN_H2, err, sizeof err), AMN_ETLS);
  assert_non_null(strstr(err, "is not yet valid"));

  /* arguments */
  m = o;
  m.cert_path = NULL;
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &m, ALPN_H2, err, sizeof err), AMN_EINVAL);
  static const char *const none[] = {NULL};
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &o, none, err, sizeof err), AMN_EINVAL);

  /* a client session needs a name; QUIC sessions are created too */
  assert_int_equal(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &o, ALPN_H3, err, sizeof err), 0);
  assert_int_equal(amn_tls_ctx_role(ctx), AMN_TLS_CLIENT);
  gnutls_session_t s = NULL;
  assert_int_equal(amn_tls_session_new(ctx, &s, 0, NULL, err, sizeof err), AMN_EINVAL);
  assert_int_equal(amn_tls_session_new(ctx, &s, GNUTLS_NONBLOCK | AMN_TLS_QUIC, "localhost", err, sizeof err), 0);
  amn_tls_ctx_unref(ctx); /* the session holds its own reference */
  assert_null(amn_tls_last_error(s));
  assert_false(amn_tls_alpn_is(s, "h3"));
  amn_peer_store ps;
  assert_int_equal(amn_tls_peer_identity(s, &ps), AMN_ETLS);
  /* the transports' pointer slot stays free */
  assert_null(gnutls_session_get_ptr(s));
  gnutls_deinit(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_success_identities),
      cmocka_unit_test(test_success_host_forms),
      cmocka_unit_test(test_server_name_override),
      cmocka_unit_test(test_wildcard),
      cmocka_unit_test(test_no_client_certificate),
      cmocka_unit_test(test_client_cert_other_ca),
      cmocka_unit_test(test_client_cert_expired),
      cmocka_unit_test(test_client_cert_not_yet_valid),
      cmocka_unit_test(test_client_cert_without_client_eku),
      cmocka_unit_test(test_own_client_cert_expired),
      cmocka_unit_test(test_server_name_mismatch),
      cmocka_unit_test(test_ip_compared_as_ip),
      cmocka_unit_test(test_server_cert_other_ca),
      cmocka_unit_test(test_server_cert_expired),
      cmocka_unit_test(test_server_cert_without_server_eku),
      cmocka_unit_test(test_server_without_alpn),
      cmocka_unit_test(test_alpn_mismatch),
      cmocka_unit_test(test_tls12),
      cmocka_unit_test(test_plaintext_client),
      cmocka_unit_test(test_key_permission_warning),
      cmocka_unit_test(test_ctx_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
