/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The development CA's certificate revocation list (amn_pki_revoke in
 * amn/pki.h, amn_pki_write_crl in tls/pki_internal.h): the serials listed
 * so far plus a new one, re-signed. */
#include <limits.h>
#include <stdio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "amn/pki.h"
#include "tls/crl.h"
#include "tls/pki_internal.h"
#include "util/log.h"

#define CRL_MAX_ENTRIES 100000

typedef struct serial {
  unsigned char b[64];
  size_t n;
  time_t when;
} serial;

/* The serials of the CRL in path (none when the file does not exist), and its number. */
static int read_previous(const char *path, gnutls_x509_crt_t ca, serial **out, size_t *n, unsigned long long *number,
                         char *err, size_t errlen) {
  *out = NULL;
  *n = 0;
  *number = 0;
  if (access(path, F_OK) != 0) return 0;
  gnutls_datum_t d = {NULL, 0};
  gnutls_x509_crl_t crl = NULL;
  int r = gnutls_load_file(path, &d);
  if (r < 0) return amn_set_err(err, errlen, AMN_EIO, "cannot read %s: %s", path, gnutls_strerror(r));
  r = gnutls_x509_crl_init(&crl);
  if (r >= 0) r = gnutls_x509_crl_import(crl, &d, GNUTLS_X509_FMT_PEM);
  gnutls_free(d.data);
  unsigned status = 0;
  if (r >= 0) r = gnutls_x509_crl_verify(crl, &ca, 1, GNUTLS_VERIFY_DISABLE_TIME_CHECKS, &status);
  int rc = 0;
  if (r < 0 || !amn_crl_status_ok(status)) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "%s is not a CRL of this CA: %s", path,
                     r < 0 ? gnutls_strerror(r) : "bad signature");
    goto out;
  }
  int cnt = gnutls_x509_crl_get_crt_count(crl);
  if (cnt < 0 || cnt > CRL_MAX_ENTRIES) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "%s: unreadable list of revoked certificates", path);
    goto out;
  }
  *out = calloc((size_t)cnt + 1, sizeof **out);
  if (!*out) {
    rc = amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
    goto out;
  }
  for (int i = 0; i < cnt; i++) {
    serial *s = &(*out)[i];
    s->n = sizeof s->b;
    if ((r = gnutls_x509_crl_get_crt_serial(crl, i, s->b, &s->n, &s->when)) < 0) {
      rc = amn_set_err(err, errlen, AMN_ETLS, "%s: entry %d: %s", path, i + 1, gnutls_strerror(r));
      goto out;
    }
    *n = (size_t)i + 1;
  }
  unsigned char num[32];
  size_t nl = sizeof num;
  unsigned crit;
  if (gnutls_x509_crl_get_number(crl, num, &nl, &crit) >= 0)
    for (size_t i = 0; i < nl && i < 8; i++) *number = (*number << 8) | num[i];
out:
  if (rc) {
    free(*out);
    *out = NULL;
    *n = 0;
  }
  gnutls_x509_crl_deinit(crl);
  return rc;
}


int amn_pki_write_crl(const char *ca_cert_path, const char *ca_key_path, const char *crl_path,
                      const char *revoke_cert_path, time_t this_update, time_t next_update, bool *added, char *err,
                      size_t errlen) {
  if (added) *added = false;
  gnutls_x509_crt_t ca = NULL, crt = NULL;
  gnutls_x509_privkey_t ca_key = NULL;
  gnutls_x509_crl_t crl = NULL;
  serial *prev = NULL;
  size_t nprev = 0;
  unsigned long long number = 0;
  gnutls_datum_t d = {NULL, 0};
  int rc = amn_pki_load_ca(ca_cert_path, ca_key_path, &ca, &ca_key, err, errlen);
  if (rc) return rc;
  if ((rc = read_previous(crl_path, ca, &prev, &nprev, &number, err, errlen))) goto out;

  serial add = {.n = 0};
  if (revoke_cert_path) {
    int r = gnutls_load_file(revoke_cert_path, &d);
    if (r < 0) {
      rc = amn_set_err(err, errlen, AMN_EIO, "cannot read %s: %s", revoke_cert_path, gnutls_strerror(r));
      goto out;
    }
    GT(gnutls_x509_crt_init(&crt), "x509 init");
    r = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
      rc = amn_set_err(err, errlen, AMN_ETLS, "%s is not a PEM certificate: %s", revoke_cert_path, gnutls_strerror(r));
      goto out;
    }
    unsigned status = 0;
    if (gnutls_x509_crt_verify(crt, &ca, 1, 0, &status) < 0 || (status & (GNUTLS_CERT_SIGNER_NOT_FOUND |
                                                                            GNUTLS_CERT_SIGNATURE_FAILURE))) {
      rc = amn_set_err(err, errlen, AMN_EINVAL, "%s was not issued by the CA %s", revoke_cert_path, ca_cert_path);
      goto out;
    }
    add.n = sizeof add.b;
    GT(gnutls_x509_crt_get_serial(crt, add.b, &add.n), "certificate serial");
    bool listed = false;
    for (size_t i = 0; i < nprev; i++) listed |= prev[i].n == add.n && memcmp(prev[i].b, add.b, add.n) == 0;
    if (listed) add.n = 0;
    else if (added) *added = true;
  }

  GT(gnutls_x509_crl_init(&crl), "CRL init");
  GT(gnutls_x509_crl_set_version(crl, 2), "CRL version");
  GT(gnutls_x509_crl_set_this_update(crl, this_update), "CRL thisUpdate");
  GT(gnutls_x509_crl_set_next_update(crl, next_update), "CRL nextUpdate");
  for (size_t i = 0; i < nprev; i++)
    GT(gnutls_x509_crl_set_crt_serial(crl, prev[i].b, prev[i].n, prev[i].when), "CRL entry");
  if (add.n) GT(gnutls_x509_crl_set_crt_serial(crl, add.b, add.n, time(NULL)), "CRL entry");
  unsigned char num[8];
  number++;
  for (int i = 7; i >= 0; i--, number >>= 8) num[i] = (unsigned char)(number & 0xff);
  size_t skip = 0;
  while (skip < 7 && num[skip] == 0 && !(num[skip + 1] & 0x80)) skip++;
  GT(gnutls_x509_crl_set_number(crl, num + skip, sizeof num - skip), "CRL number");
  unsigned char kid[64];
  size_t kidlen = sizeof kid;
  unsigned crit;
  if (gnutls_x509_crt_get_subject_key_id(ca, kid, &kidlen, &crit) >= 0)
    GT(gnutls_x509_crl_set_authority_key_id(crl, kid, kidlen), "CRL authorityKeyIdentifier");
  GT(gnutls_x509_crl_sign2(crl, ca, ca_key, GNUTLS_DIG_SHA256, 0), "sign CRL");
  gnutls_free(d.data);
  d.data = NULL;
  GT(gnutls_x509_crl_export2(crl, GNUTLS_X509_FMT_PEM, &d), "export CRL");
  rc = amn_pki_write_file(crl_path, d.data, d.size, 0644, err, errlen);
out:
  gnutls_free(d.data);
  free(prev);
  if (crl) gnutls_x509_crl_deinit(crl);
  if (crt) gnutls_x509_crt_deinit(crt);
  gnutls_x509_crt_deinit(ca);
  gnutls_x509_privkey_deinit(ca_key);
  return rc;
}

int amn_pki_revoke(const char *dir, const char *cert_path, int64_t next_update_s, bool *added, char *err,
                   size_t errlen) {
  if (!dir || !cert_path) return amn_set_err(err, errlen, AMN_EINVAL, "revoke: missing argument");
  char ca[PATH_MAX], cak[PATH_MAX], crl[PATH_MAX];
  if (snprintf(ca, sizeof ca, "%s/ca.pem", dir) >= (int)sizeof ca ||
      snprintf(cak, sizeof cak, "%s/ca-key.pem", dir) >= (int)sizeof cak ||
      snprintf(crl, sizeof crl, "%s/crl.pem", dir) >= (int)sizeof crl)
    return amn_set_err(err, errlen, AMN_EINVAL, "path too long");
  time_t now = time(NULL), next = now + (time_t)next_update_s, this_update = now - 300 /* the development PKI backdates 5 minutes for clock skew */;
  if (this_update >= next) this_update = next - 60;
  return amn_pki_write_crl(ca, cak, crl, cert_path, this_update, next, added, err, errlen);
}
