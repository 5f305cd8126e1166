/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The check of a TLS configuration's files before use (amn_tls_check_files,
 * amn/pki.h): each one readable, of the right kind, the key matching the
 * certificate; every problem named with its file and its real cause. */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amn/pki.h"
#include "util/log.h"

#define MAX_PEM_FILE (4u << 20) /* larger than any certificate chain or key */

/* Reads a whole file; 0, or AMN_EIO with the cause. */
static int read_file(const char *what, const char *path, gnutls_datum_t *out, char *err, size_t errlen) {
  out->data = NULL;
  out->size = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return amn_set_err(err, errlen, AMN_EIO, "cannot read %s %s: %s", what, path, strerror(errno));
  size_t cap = 4096, len = 0;
  unsigned char *buf = malloc(cap);
  int rc = 0;
  while (buf) {
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0) {
      if (ferror(f)) rc = amn_set_err(err, errlen, AMN_EIO, "cannot read %s %s: %s", what, path, strerror(errno));
      break;
    }
    if (len == cap) {
      if (cap >= MAX_PEM_FILE) {
        rc = amn_set_err(err, errlen, AMN_ETLS, "%s %s is larger than %u bytes: not a PEM file", what, path,
                         MAX_PEM_FILE);
        break;
      }
      unsigned char *nb = realloc(buf, cap * 2);
      if (!nb) break;
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (!buf) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  if (rc) {
    free(buf);
    return rc;
  }
  out->data = buf;
  out->size = (unsigned)len;
  return 0;
}

static bool holds(const gnutls_datum_t *d, const char *marker) {
  size_t ml = strlen(marker);
  for (size_t i = 0; i + ml <= d->size; i++)
    if (memcmp(d->data + i, marker, ml) == 0) return true;
  return false;
}

/* Certificates of a PEM file, or AMN_ETLS naming what the file holds instead. */
static int load_certs(const char *what, const char *path, gnutls_x509_crt_t **crts, unsigned *n, char *err,
                      size_t errlen) {
  gnutls_datum_t d;
  int rc = read_file(what, path, &d, err, errlen);
  if (rc) return rc;
  *crts = NULL;
  *n = 0;
  int r = gnutls_x509_crt_list_import2(crts, n, &d, GNUTLS_X509_FMT_PEM, 0);
  if (r < 0 || *n == 0) {
    if (!holds(&d, "-----BEGIN")) rc = amn_set_err(err, errlen, AMN_ETLS, "%s %s is not a PEM file", what, path);
    else if (holds(&d, "PRIVATE KEY-----") && !holds(&d, "CERTIFICATE-----"))
      rc = amn_set_err(err, errlen, AMN_ETLS, "%s %s holds a private key, not a certificate", what, path);
    else
      rc = amn_set_err(err, errlen, AMN_ETLS, "%s %s holds no valid PEM certificate: %s", what, path,
                       r < 0 ? gnutls_strerror(r) : "none found");
  }
  free(d.data);
  return rc;
}

static void free_certs(gnutls_x509_crt_t *crts, unsigned n) {
  for (unsigned i = 0; i < n; i++) gnutls_x509_crt_deinit(crts[i]);
  gnutls_free(crts);
}

static int load_key(const char *path, gnutls_x509_privkey_t *key, char *err, size_t errlen) {
  gnutls_datum_t d;
  int rc = read_file("key file", path, &d, err, errlen);
  if (rc) return rc;
  int r = gnutls_x509_privkey_init(key);
  if (r >= 0) r = gnutls_x509_privkey_import2(*key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
  if (r < 0) {
    if (!holds(&d, "-----BEGIN")) rc = amn_set_err(err, errlen, AMN_ETLS, "key file %s is not a PEM file", path);
    else if (holds(&d, "ENCRYPTED PRIVATE KEY-----") || r == GNUTLS_E_DECRYPTION_FAILED)
      rc = amn_set_err(err, errlen, AMN_ETLS, "key file %s is encrypted (keys with a passphrase are not supported)",
                       path);
    else if (holds(&d, "CERTIFICATE-----") && !holds(&d, "PRIVATE KEY-----"))
      rc = amn_set_err(err, errlen, AMN_ETLS, "key file %s holds a certificate, not a private key", path);
    else
      rc = amn_set_err(err, errlen, AMN_ETLS, "key file %s holds no valid PEM private key: %s", path,
                       gnutls_strerror(r));
    gnutls_x509_privkey_deinit(*key);
    *key = NULL;
  }
  free(d.data);
  return rc;
}

/* The key belongs to the leaf when their public key identifiers agree. */
static bool key_matches(gnutls_x509_crt_t leaf, gnutls_x509_privkey_t key) {
  unsigned char a[64], b[64];
  size_t al = sizeof a, bl = sizeof b;
  if (gnutls_x509_crt_get_key_id(leaf, 0, a, &al) < 0) return false;
  if (gnutls_x509_privkey_get_key_id(key, 0, b, &bl) < 0) return false;
  return al == bl && memcmp(a, b, al) == 0;
}

int amn_tls_check_files(const amn_tls_opts *o, amn_tls_file *which, char *err, size_t errlen) {
  amn_tls_file w = AMN_TLS_FILE_NONE;
  int rc = 0;
  gnutls_x509_crt_t *crts = NULL, *cas = NULL;
  unsigned ncrts = 0, ncas = 0;
  gnutls_x509_privkey_t key = NULL;
  if (!o) {
    rc = amn_set_err(err, errlen, AMN_EINVAL, "no TLS options");
    goto out;
  }
  bool has_cert = o->cert_path && *o->cert_path, has_key = o->key_path && *o->key_path;
  if (has_cert != has_key) {
    w = has_cert ? AMN_TLS_FILE_KEY : AMN_TLS_FILE_CERT;
    rc = amn_set_err(err, errlen, AMN_EINVAL, has_cert ? "a certificate needs its key file" : "a key needs its certificate file");
    goto out;
  }
  if (has_cert) {
    w = AMN_TLS_FILE_CERT;
    if ((rc = load_certs("certificate file", o->cert_path, &crts, &ncrts, err, errlen))) goto out;
    w = AMN_TLS_FILE_KEY;
    if ((rc = load_key(o->key_path, &key, err, errlen))) goto out;
    if (!key_matches(crts[0], key)) {
      rc = amn_set_err(err, errlen, AMN_ETLS, "key file %s does not match the certificate in %s", o->key_path,
                       o->cert_path);
      goto out;
    }
  }
  w = AMN_TLS_FILE_CA;
  if (!o->ca_path || !*o->ca_path) {
    rc = amn_set_err(err, errlen, AMN_EINVAL, "no CA bundle to verify the peer with");
    goto out;
  }
  if ((rc = load_certs("CA bundle", o->ca_path, &cas, &ncas, err, errlen))) goto out;
  w = AMN_TLS_FILE_NONE;
out:
  free_certs(crts, ncrts);
  free_certs(cas, ncas);
  if (key) gnutls_x509_privkey_deinit(key);
  if (which) *which = rc ? w : AMN_TLS_FILE_NONE;
  return rc;
}
