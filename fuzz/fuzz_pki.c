/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * PEM/PKI loading (src/tls/tls.c: amn_tls_ctx_new, which loads the
 * certificate chain, its key and the CA bundle, and checks the leaf's
 * validity dates and the bundle). Input: three parts separated by the line
 * "%%" (certificate chain, key, CA bundle), handed over as in-memory files.
 * GnuTLS does the PEM/DER parsing (it is not instrumented, so coverage
 * guidance only sees our side). Invariants:
 *  - the result is 0 or AMN_ETLS / AMN_EIO with a message; the same input
 *    gives the same result and message again;
 *  - an accepted server context implies that GnuTLS parses the leaf and at
 *    least one CA certificate on its own, and that the leaf is currently
 *    valid; then a client context on the same CA bundle is accepted too;
 *    an accepted client context implies GnuTLS finds a CA certificate.
 */
#include <time.h>

#include <gnutls/x509.h>

#include "fuzz_common.h"
#include "tls/tls.h"

static const char *const alpn[] = {"h2", NULL};

static int make_ctx(amn_tls_role role, const char *cert, const char *key, const char *ca, char *err, size_t errlen) {
  amn_tls_opts o;
  memset(&o, 0, sizeof o);
  o.cert_path = cert;
  o.key_path = key;
  o.ca_path = ca;
  amn_tls_ctx *ctx = NULL;
  int rc = amn_tls_ctx_new(&ctx, role, &o, alpn, err, errlen);
  FUZZ_CHECK(rc == 0 || rc == AMN_ETLS || rc == AMN_EIO);
  FUZZ_CHECK((rc == 0) == (ctx != NULL));
  if (rc == 0) FUZZ_CHECK(amn_tls_ctx_role(ctx) == role);
  else FUZZ_CHECK(err[0] != '\0');
  amn_tls_ctx_unref(ctx);
  return rc;
}

/* GnuTLS on its own: how many certificates the PEM holds (0 if it does not
 * parse), and whether the first is valid now. */
static unsigned inspect(const uint8_t *p, size_t n, bool *leaf_valid) {
  gnutls_datum_t d = {(unsigned char *)(uintptr_t)p, (unsigned)n};
  gnutls_x509_crt_t *list = NULL;
  unsigned cnt = 0;
  *leaf_valid = false;
  if (gnutls_x509_crt_list_import2(&list, &cnt, &d, GNUTLS_X509_FMT_PEM, 0) < 0) return 0;
  if (cnt > 0) {
    time_t now = time(NULL), nb = gnutls_x509_crt_get_activation_time(list[0]),
           na = gnutls_x509_crt_get_expiration_time(list[0]);
    *leaf_valid = (na == (time_t)-1 || now <= na) && (nb == (time_t)-1 || now >= nb);
  }
  for (unsigned i = 0; i < cnt; i++) gnutls_x509_crt_deinit(list[i]);
  gnutls_free(list);
  return cnt;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool quiet;
  if (!quiet) amn_log_set_level(AMN_LOG_ERROR), quiet = true; /* memfds are mode 0777: key warnings */
  if (size > 64 * 1024) return 0;
  const uint8_t *part[3] = {data, data + size, data + size};
  size_t plen[3] = {size, 0, 0};
  for (int k = 0; k < 2; k++) {
    const uint8_t *p = part[k];
    size_t n = plen[k];
    for (size_t i = 0; i + 3 <= n; i++)
      if (memcmp(p + i, "%%\n", 3) == 0 && (i == 0 || p[i - 1] == '\n')) {
        plen[k] = i;
        part[k + 1] = p + i + 3;
        plen[k + 1] = n - i - 3;
        break;
      }
  }
  char path[3][32];
  int fd[3];
  for (int k = 0; k < 3; k++) FUZZ_CHECK((fd[k] = fuzz_memfile(part[k], plen[k], path[k])) >= 0);

  char e1[512] = "", e2[512] = "", e3[512] = "";
  int s1 = make_ctx(AMN_TLS_SERVER, path[0], path[1], path[2], e1, sizeof e1);
  int s2 = make_ctx(AMN_TLS_SERVER, path[0], path[1], path[2], e2, sizeof e2);
  FUZZ_CHECK(s1 == s2 && strcmp(e1, e2) == 0);
  bool valid, ignored;
  if (s1 == 0) {
    FUZZ_CHECK(inspect(part[0], plen[0], &valid) >= 1 && valid);
    FUZZ_CHECK(inspect(part[2], plen[2], &ignored) >= 1);
  }
  int c1 = make_ctx(AMN_TLS_CLIENT, NULL, NULL, path[2], e3, sizeof e3);
  if (s1 == 0) FUZZ_CHECK(c1 == 0);
  if (c1 == 0) FUZZ_CHECK(inspect(part[2], plen[2], &ignored) >= 1);
  for (int k = 0; k < 3; k++) close(fd[k]);
  return 0;
}
