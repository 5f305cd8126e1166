/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: TLS contexts (GnuTLS) shared by the HTTP/2 (TCP) and HTTP/3
 * (QUIC) transports. A context holds the credentials and the verification
 * policy; sessions made from it verify the peer strictly, in this order:
 *   - chain up to a certificate of ca_path, no other trust anchors
 *   - validity dates of the leaf, then of the rest of the chain
 *   - extended key usage: server role requires clientAuth on the client's
 *     leaf; client role requires serverAuth on the server's leaf (a leaf
 *     without an EKU extension is refused)
 *   - client role: the name to verify (tls.server_name, else the `host` of
 *     amn_tls_session_new) must match a DNS subjectAltName (a left-most "*."
 *     wildcard matches one label) or, for an IPv4/IPv6 literal, an IP
 *     subjectAltName compared as an address. The subject CN is never used.
 *   - server role: a client certificate is REQUIRED
 *   - ALPN: the server refuses a client offering none of its protocols
 *     (also when it sends no ALPN at all); the client refuses a server that
 *     selects none.
 * A failed verification aborts the handshake; amn_tls_last_error() on the
 * session then names the exact reason (for the one log line).
 *
 * Per-session state (name to verify, failure reason, a context reference)
 * is NOT kept in gnutls_session_set_ptr / gnutls_transport_set_ptr /
 * gnutls_db_set_ptr, which stay free for the transports: it is the private
 * data of a session-local hello extension (gnutls_session_ext_register with
 * TLS id AMN_TLS_STATE_EXT_ID, which never sends nor parses anything), and
 * GnuTLS frees it inside gnutls_deinit(). So a session is released with a
 * plain gnutls_deinit(); it keeps its context alive until then.
 */
#ifndef AMN_TLS_H
#define AMN_TLS_H

#include <gnutls/gnutls.h>
#include <stdbool.h>

#include "amn/common.h"

typedef struct amn_tls_ctx amn_tls_ctx;

typedef enum amn_tls_role { AMN_TLS_SERVER = 0, AMN_TLS_CLIENT = 1 } amn_tls_role;

/* Private-use TLS extension id carrying our per-session state (see above).
 * Never on the wire; must differ from ngtcp2's QUIC transport-parameters
 * ids (0x39, 0xffa5). */
#define AMN_TLS_STATE_EXT_ID 0xff5a

/* Extra flag for amn_tls_session_new (not a gnutls_init flag; stripped
 * before gnutls_init): the session is for QUIC. Forces TLS 1.3 even when
 * allow_tls12, disables the middlebox compatibility mode (RFC 9001 8.4) and
 * adds GNUTLS_NO_END_OF_EARLY_DATA. The caller still configures the session
 * with ngtcp2_crypto_gnutls_configure_{client,server}_session. */
#define AMN_TLS_QUIC (1u << 31)

/* Creates a context: loads cert chain + key (warns via amn log when the key
 * file is group/world accessible), the CA bundle (error when it holds no
 * certificate). Checks that our own leaf certificate is currently valid
 * (error if expired/not yet valid) and matches the key. `alpn` is a
 * NULL-terminated list of protocols ("h2", "h3") offered (client) or
 * accepted (server; a client offering none of them is refused); at least
 * one is required. opts->server_name (client) is copied. Returns 0 or
 * AMN_ETLS/AMN_EIO/AMN_EINVAL with the reason in err. The context is
 * immutable afterwards and may be used from any thread. Reference-counted
 * (new returns refcount 1; ref/unref are thread-safe; unref(NULL) is a
 * no-op). */
int amn_tls_ctx_new(amn_tls_ctx **out, amn_tls_role role, const amn_tls_opts *opts,
                    const char *const *alpn, char *err, size_t errlen);
void amn_tls_ctx_ref(amn_tls_ctx *ctx);
void amn_tls_ctx_unref(amn_tls_ctx *ctx);
amn_tls_role amn_tls_ctx_role(const amn_tls_ctx *ctx);

/* Creates a GnuTLS session bound to the context: credentials, priorities
 * (TLS 1.3 only unless allow_tls12: "NORMAL:-VERS-ALL:+VERS-TLS1.3"), ALPN
 * (GNUTLS_ALPN_MANDATORY on the server), the verification function, and on
 * the client the SNI and the name to verify: ctx's server_name if set, else
 * `host` (a DNS name, or an IP literal, "[v6]" brackets and a "%zone" are
 * stripped; no SNI is sent for an IP). `host` is ignored on the server.
 * `flags` are extra gnutls_init flags (GNUTLS_NONBLOCK, ...) plus
 * AMN_TLS_QUIC; GNUTLS_SERVER/GNUTLS_CLIENT come from the role. The caller
 * sets the transport (fd or QUIC callbacks) and may use
 * gnutls_session_set_ptr freely. Release with gnutls_deinit(). Returns 0 or
 * AMN_ETLS (AMN_EINVAL: client without a name to verify). */
int amn_tls_session_new(amn_tls_ctx *ctx, gnutls_session_t *out, unsigned flags,
                        const char *host, char *err, size_t errlen);

/* Reason of the verification failure on this session, e.g.
 *   "client certificate has expired (not after 2024-01-01T00:00:00Z)"
 *   "client certificate not issued by a trusted CA (issuer 'CN=x')"
 *   "client certificate lacks extended key usage clientAuth"
 *   "server certificate does not match host 'x'"
 *   "client offered none of the ALPN protocols: h2"
 * or the reason recorded by amn_tls_handshake_error() (e.g. "no client
 * certificate presented"), or NULL if neither. Valid while the session
 * lives (until gnutls_deinit). NULL for sessions not made here. */
const char *amn_tls_last_error(gnutls_session_t s);

/* Call when gnutls_handshake() (or ngtcp2's, see ngtcp2_conn_get_tls_error)
 * failed with the fatal code `gnutls_rc`. Returns the one-line reason and
 * records it for amn_tls_last_error(): the verification reason when our
 * verify function refused the peer, else one derived from the code:
 *   "no client certificate presented" (server, CERTIFICATE_REQUIRED /
 *   NO_CERTIFICATE_FOUND), "peer sent TLS alert '<name>'", "no common ALPN
 *   protocol", "no common TLS version or cipher suite" (also what a TLS
 *   1.2-only peer of a TLS 1.3-only side gets), "no common TLS key exchange
 *   or signature algorithm", "peer closed the connection during the TLS
 *   handshake", "peer does not speak TLS (plaintext peer?)", "TLS handshake
 *   timed out", else "TLS handshake failed: <gnutls_strerror>". Never NULL
 *   (for a session not made here: the same text when it is static, else
 *   gnutls_strerror). On a TCP session the caller should then send the alert with
 *   gnutls_alert_send_appropriate(s, gnutls_rc) (ngtcp2 does it for QUIC). */
const char *amn_tls_handshake_error(gnutls_session_t s, int gnutls_rc);

/* Tells the peer why a handshake failed with gnutls code `rc`: the alert
 * certificate_revoked when our verify function refused a revoked
 * certificate (crl_path), else gnutls_alert_send_appropriate(s, rc). Both
 * transports call it on a fatal handshake error. */
void amn_tls_send_alert(gnutls_session_t s, int rc);

/* The TLS alert for a peer our verify function refused on this session:
 * certificate_revoked for a revoked certificate, else certificate_unknown
 * (for a resumed session verified with amn_tls_verify_resumed). */
int amn_tls_refusal_alert(gnutls_session_t s);

/* Whether ctx's CRLs (crl_path; re-read first if the files changed) refuse
 * the certificate `der` (DER): it is listed, or a CRL has expired and the
 * setting is to refuse. false without crl_path. For an identity remembered
 * from an earlier handshake (an HTTP/3 session ticket) before it is trusted
 * again, e.g. for 0-RTT data. Thread-safe. */
bool amn_tls_ctx_refuses_cert(amn_tls_ctx *ctx, const unsigned char *der, size_t len);

/* Fills `out->id` from the peer certificate of a completed handshake:
 * subject (RFC 4514), its first CN and OU, DNS and IP subjectAltNames as
 * text and URI subjectAltNames apart (at most AMN_MAX_SANS of each, other
 * SAN types and names holding a NUL skipped), SHA-256 of the DER leaf (raw and
 * lower-case hex), verified = true when our verify function accepted it.
 * The strings live in one heap block `out->blob`, released by
 * amn_peer_store_free(). Returns 0, AMN_ETLS when there is no peer
 * certificate, AMN_ENOMEM. */
typedef struct amn_peer_store {
  amn_peer_identity id;
  char *blob;   /* backing storage of the strings */
} amn_peer_store;
int amn_tls_peer_identity(gnutls_session_t s, amn_peer_store *out);
/* A deep copy of src into dst (free it with amn_peer_store_free). Returns 0,
 * AMN_EINVAL, AMN_ENOMEM. */
int amn_peer_store_copy(amn_peer_store *dst, const amn_peer_store *src);
void amn_peer_store_free(amn_peer_store *p);

/* Verifies a client certificate that did not come in a handshake (a
 * TLS-terminating proxy forwarded it, server/fwd_cert.c): `der` (the leaf
 * alone, DER) gets the checks a client's chain gets in a handshake on a
 * context of `ctx`'s CA (steps 1-4 above: chain to ca_path, dates, clientAuth
 * extended key usage, anything else GnuTLS finds); no ALPN, no name. On
 * success fills `out` as amn_tls_peer_identity does (verified = true; free it
 * with amn_peer_store_free) and returns 0. Otherwise AMN_ETLS with the reason
 * in `why` (the handshake's wording: "client certificate has expired (not
 * after ...)", "... not issued by a trusted CA ...", "... lacks extended key
 * usage clientAuth", "client certificate could not be parsed: ..."), or
 * AMN_ENOMEM / AMN_EINVAL. Thread-safe (the context is immutable). */
int amn_tls_verify_client_der(amn_tls_ctx *ctx, const uint8_t *der, size_t len, amn_peer_store *out, char *why,
                              size_t wl);
/* The peer's leaf certificate (DER) of a completed handshake, owned by
 * the session: 0, or AMN_ETLS when there is none. */
int amn_tls_peer_cert(gnutls_session_t s, const uint8_t **der, size_t *len);

/* true when ALPN negotiated `proto`. */
bool amn_tls_alpn_is(gnutls_session_t s, const char *proto);

/* A resumed session (TLS 1.3 session ticket) carries the peer certificate
 * chain of the original handshake but GnuTLS does not verify it again:
 * this runs the verification above on it, against the session's current
 * context (CA, dates, EKU, ALPN). Returns 0 (the peer identity then reads
 * verified), or AMN_ETLS with the reason in amn_tls_last_error(). */
int amn_tls_verify_resumed(gnutls_session_t s);

#endif
