/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-net — development PKI (like mkcert): a private CA, a server
 * certificate for localhost / 127.0.0.1 / ::1 and one client certificate,
 * all ECDSA P-256, keys written with mode 0600.
 *
 * Files in a PKI directory:
 *   ca.pem  ca-key.pem  server.pem  server-key.pem  client.pem  client-key.pem
 * For development only: production deployments bring their own PKI.
 */
#ifndef AMN_PKI_H
#define AMN_PKI_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The default PKI directory, the same for the daemon and the CLI:
 * $AMATERS_NET_PKI_DIR if set, else $XDG_DATA_HOME/amaters-net/pki, else
 * $HOME/.local/share/amaters-net/pki. Writes at most `cap` bytes
 * (NUL-terminated) into `out`. Returns 0, or AMN_EINVAL if neither HOME nor
 * XDG_DATA_HOME is set or the result does not fit. Thread-safe.
 */
AMN_API int amn_pki_default_dir(char *out, size_t cap);

/**
 * Creates the development PKI in `dir` (created with mode 0700, parents
 * included). Files that already exist are kept unless `force`; if the CA
 * exists but a leaf does not, the leaf is issued by the existing CA.
 * Certificates are valid for 825 days. Returns 0, or AMN_EIO/AMN_ETLS with
 * a reason. Not thread-safe for the same directory.
 */
AMN_API int amn_pki_init(const char *dir, bool force, char *err, size_t errlen);

/**
 * amn_pki_init, with `count` extra names of the server (as mkcert takes
 * them): each an IPv4 or IPv6 address, or a DNS name (letters, digits, '-'
 * and dots; "*.example.com" allowed), added as subject alternative names of
 * the server certificate beside localhost, 127.0.0.1 and ::1. With names,
 * the server certificate and key are issued anew even when they exist
 * (by the CA in `dir`, which is kept unless `force`); the client's are kept.
 * At most 64 names. Returns 0, AMN_EINVAL for a name that is neither (the
 * directory untouched), or AMN_EIO/AMN_ETLS with a reason.
 */
AMN_API int amn_pki_init_names(const char *dir, bool force, const char *const *names, size_t count, char *err,
                               size_t errlen);

/** true when `dir` holds all six files. */
AMN_API bool amn_pki_exists(const char *dir);

/**
 * Fills `o`'s cert/key/ca paths with the files of `dir` for `role`
 * ("server" or "client"). The strings are written into `storage` (at least
 * 3 * 4096 bytes) which must outlive `o`. Returns 0 or AMN_EINVAL.
 */
AMN_API int amn_pki_paths(const char *dir, const char *role, amn_tls_opts *o, char *storage, size_t cap);

/**
 * Issues one more client certificate from the development CA of `dir`
 * (ca.pem, ca-key.pem): subject CN=`name` (1-64 of A-Z a-z 0-9 . _ -),
 * O=amaters-net development, extended key usage clientAuth, the URI
 * subjectAltNames `uris` (e.g. SPIFFE IDs "spiffe://amaters/client/NAME")
 * and DNS ones `dns` (both NULL-terminated lists, or NULL), a fresh ECDSA
 * P-256 key, valid 825 days. Writes OUT/NAME.pem (0644) and
 * OUT/NAME-key.pem (0600) with OUT = out_dir (created 0700 if needed), or
 * `dir` when NULL; never overwrites an existing file (AMN_EIO). Returns 0,
 * or AMN_EINVAL (a bad name, URI or DNS name) / AMN_EIO / AMN_ETLS with the
 * reason. Not thread-safe for the same directory.
 */
AMN_API int amn_pki_issue_client(const char *dir, const char *name, const char *const *uris,
                                 const char *const *dns, const char *out_dir, char *err, size_t errlen);

/**
 * Revokes the certificate in `cert_path` (PEM; it must be issued by the
 * development CA of `dir`): writes DIR/crl.pem (0644, atomically: a
 * running server or client using it as crl_path sees the change), signed by
 * the CA, listing the serials DIR/crl.pem already listed plus this one, CRL
 * number incremented, next update `next_update_s` seconds from now (may be
 * zero or negative: a CRL already expired, for tests). *added (may be NULL)
 * is false when the certificate was already listed (the CRL is re-issued
 * anyway, with the new dates). Returns 0, or AMN_EINVAL / AMN_EIO / AMN_ETLS
 * with the reason. Not thread-safe for the same directory.
 */
AMN_API int amn_pki_revoke(const char *dir, const char *cert_path, int64_t next_update_s, bool *added, char *err,
                           size_t errlen);

/** The file of an amn_tls_opts that amn_tls_check_files found wrong. */
typedef enum amn_tls_file {
  AMN_TLS_FILE_NONE = 0,
  AMN_TLS_FILE_CERT, /**< cert_path */
  AMN_TLS_FILE_KEY,  /**< key_path */
  AMN_TLS_FILE_CA,   /**< ca_path */
} amn_tls_file;

/**
 * Checks the files of `o` before they are used, in the order certificate,
 * key, CA bundle: each can be read; the certificate file holds PEM
 * certificates (leaf first); the key file an unencrypted PEM private key
 * whose public key is the leaf's; the CA bundle at least one PEM
 * certificate. Certificate and key may both be absent (a client without a
 * certificate); the CA bundle is required. On the first problem returns
 * AMN_EIO (cannot read: "cannot read certificate file F: No such file or
 * directory", "... Permission denied", "... Is a directory"), AMN_ETLS
 * (contents: "is not a PEM file", "holds a private key, not a
 * certificate", "key file K does not match the certificate in F", ...) or
 * AMN_EINVAL (a path missing), sets *which (may be NULL) to the file, and
 * writes the reason, naming the file, into err. Returns 0 when all is well
 * (then *which = AMN_TLS_FILE_NONE); AMN_ENOMEM if memory runs out.
 * amn_tls_ctx_new (and so amn_server_new / amn_client_new) runs the same
 * check. Thread-safe.
 */
AMN_API int amn_tls_check_files(const amn_tls_opts *o, amn_tls_file *which, char *err, size_t errlen);

/** Size of a QUIC secret (amn_server_opts.quic_secret) in bytes. */
#define AMN_QUIC_SECRET_LEN 32

/**
 * Reads the QUIC secret file `path` into `out` (AMN_QUIC_SECRET_LEN bytes,
 * derived with HKDF-SHA256 from the file's bytes), creating the file with
 * 32 random bytes and mode 0600 when it does not exist (*created then set
 * true; `created` may be NULL). The file must be a regular file of 32 to
 * 4096 bytes (a symlink to one is followed) that neither group nor others
 * may access (a copy of it lets anyone reset the server's connections). Servers that must recognise
 * each other's resets (restarts, several behind one address) share it.
 * Returns 0, or AMN_EIO / AMN_EINVAL with the reason in err.
 */
AMN_API int amn_quic_secret_load(const char *path, uint8_t out[AMN_QUIC_SECRET_LEN], bool *created, char *err,
                                 size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
