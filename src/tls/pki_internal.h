/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: certificate issuing used by amn_pki_init() and by tests that
 * need unusual certificates (expired, wrong EKU, other CA, ...). All keys
 * are ECDSA P-256, signatures ECDSA-SHA256, files PEM; key files are
 * written with mode 0600 and certificates 0644, each atomically (temporary
 * file + rename; the key is never readable by others, whatever the umask).
 */
#ifndef AMN_TLS_PKI_INTERNAL_H
#define AMN_TLS_PKI_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <gnutls/x509.h>

#define AMN_PKI_EKU_SERVER 1u /* id-kp-serverAuth */
#define AMN_PKI_EKU_CLIENT 2u /* id-kp-clientAuth */

/* What to put in a certificate issued by amn_pki_issue_test_cert(). */
typedef struct amn_pki_cert_spec {
  const char *cn;           /* subject commonName (required); O is "amaters-net development" */
  const char *const *dns;   /* NULL-terminated DNS subjectAltNames, or NULL */
  const char *const *ips;   /* NULL-terminated IPv4/IPv6 literals for IP SANs, or NULL */
  unsigned eku;             /* AMN_PKI_EKU_* bits; 0 = no extendedKeyUsage extension */
  time_t not_before;        /* validity window (UTC seconds) */
  time_t not_after;
  bool is_ca;               /* CA:TRUE + keyCertSign/cRLSign (an intermediate) instead of a leaf */
  const char *const *uris;  /* NULL-terminated URI SANs (SPIFFE IDs), or NULL */
  const char *ou;           /* subject organizationalUnitName, or NULL */
} amn_pki_cert_spec;

/* Creates a self-signed CA (basicConstraints CA:TRUE critical, keyUsage
 * keyCertSign|cRLSign, subjectKeyIdentifier, random 128-bit serial) with
 * subject CN=`cn`, O=amaters-net development, valid [not_before,
 * not_after]; writes cert_path (0644) and key_path (0600, PKCS#8).
 * Returns 0 or AMN_EIO/AMN_ETLS/AMN_EINVAL with a reason. */
int amn_pki_make_ca(const char *cert_path, const char *key_path, const char *cn, time_t not_before,
                    time_t not_after, char *err, size_t errlen);

/* Issues a certificate described by `spec`, signed by the CA in
 * ca_cert_path/ca_key_path (authorityKeyIdentifier = the CA's SKI). Leaves
 * get basicConstraints CA:FALSE and keyUsage digitalSignature. Writes
 * cert_path (0644) and key_path (0600). Returns 0 or AMN_EIO/AMN_ETLS/
 * AMN_EINVAL with a reason. */
int amn_pki_issue_test_cert(const char *ca_cert_path, const char *ca_key_path, const amn_pki_cert_spec *spec,
                            const char *cert_path, const char *key_path, char *err, size_t errlen);

/* Loads a CA certificate and its key (the certificate must be a CA).
 * Returns 0 or AMN_EIO/AMN_ETLS with a reason; nothing to free on error. */
int amn_pki_load_ca(const char *cert_path, const char *key_path, gnutls_x509_crt_t *crt, gnutls_x509_privkey_t *key,
                    char *err, size_t errlen);

/* Writes the CRL of the CA in ca_cert_path/ca_key_path to crl_path: the
 * serials already listed in crl_path (when it exists), plus `crt`'s when not
 * NULL, thisUpdate = this_update, nextUpdate = next_update, CRL number one
 * more than the previous one. *added = false when crt was already listed.
 * crt must be issued by that CA. Returns 0 or AMN_EIO/AMN_ETLS/AMN_EINVAL. */
int amn_pki_write_crl(const char *ca_cert_path, const char *ca_key_path, const char *crl_path,
                      const char *revoke_cert_path, time_t this_update, time_t next_update, bool *added, char *err,
                      size_t errlen);

/* In the PKI files: a GnuTLS call whose failure sets rc (AMN_ETLS, "what:
 * reason" in err/errlen) and jumps to the function's `out` label. */
#define GT(call, what)                                                                     \
  do {                                                                                     \
    int gt_rc_ = (call);                                                                   \
    if (gt_rc_ < 0) {                                                                      \
      rc = amn_set_err(err, errlen, AMN_ETLS, "%s: %s", (what), gnutls_strerror(gt_rc_)); \
      goto out;                                                                            \
    }                                                                                      \
  } while (0)

/* Writes `len` bytes to `path` atomically with exactly `mode` (a temporary
 * file in the same directory, created 0600 with O_EXCL, fchmod, fsync,
 * rename). Returns 0 or AMN_EIO with a reason. */
int amn_pki_write_file(const char *path, const void *data, size_t len, mode_t mode, char *err, size_t errlen);

#endif
