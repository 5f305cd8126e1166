/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: certificate revocation lists of a TLS context (amn_tls_opts
 * crl_path). A CRL set is what one reading of crl_path gave: every CRL of
 * the file (PEM with one or more CRLs, or DER) or of the directory's regular
 * files, each verified against the CA certificates of ca_path, with the file
 * it came from. A set is immutable and reference-counted; the context swaps
 * in a new one when the files change (tls.c).
 */
#ifndef AMN_TLS_CRL_H
#define AMN_TLS_CRL_H

#include <gnutls/x509.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct amn_crl_set amn_crl_set;

/* Reads crl_path; every CRL must be signed by one of `cas`. Returns 0 or
 * AMN_EIO (unreadable, an empty directory) / AMN_ETLS (not a CRL, bad
 * signature) / AMN_ENOMEM with the reason, naming the file, in err. */
int amn_crl_set_load(amn_crl_set **out, const char *path, const gnutls_x509_crt_t *cas, unsigned ncas, char *err,
                     size_t errlen);
/* Whether gnutls_x509_crl_verify's status `vr` says the CRL is signed by
 * one of the CAs (its dates are not judged here). */
bool amn_crl_status_ok(unsigned vr);
void amn_crl_set_ref(amn_crl_set *s);
void amn_crl_set_unref(amn_crl_set *s);

/* The file of the CRL that lists `crt` as revoked, or NULL. */
const char *amn_crl_set_revoked(const amn_crl_set *s, gnutls_x509_crt_t crt);

/* The file of a CRL whose next update is before `now` (the earliest), or
 * NULL; *next gets its next update. */
const char *amn_crl_set_expired(const amn_crl_set *s, time_t now, time_t *next);

/* A stamp of the files the set was read from (names, sizes, modification
 * times, inodes), to compare with amn_crl_stamp of the path now. */
uint64_t amn_crl_set_stamp(const amn_crl_set *s);
uint64_t amn_crl_stamp(const char *path);

/* Number of CRLs and of revoked serials in the set (for the log). */
unsigned amn_crl_set_count(const amn_crl_set *s, unsigned *revoked);

/* Whether the expired-CRL condition has been logged for this set (sets the
 * flag; true only the first time). */
bool amn_crl_set_first_expiry_report(amn_crl_set *s);

#endif
