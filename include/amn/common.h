/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-net — common types: gRPC status codes, library error codes,
 * metadata, peer identity, TLS options, logging.
 *
 * Every public symbol of the library starts with `amn_` (types, functions)
 * or `AMN_` (macros, enumerators).
 *
 * Conventions used throughout the public headers:
 *  - Functions returning `int` return 0 on success and a negative `AMN_E*`
 *    code on failure, unless documented otherwise.
 *  - `err`/`errlen` parameters, when given (non-NULL), receive a
 *    NUL-terminated human-readable reason on failure.
 *  - Pointers passed in are borrowed for the duration of the call unless
 *    documented otherwise; the library copies what it keeps.
 */
#ifndef AMN_COMMON_H
#define AMN_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks the library's exported functions: the shared library exports
 *  these and nothing else (everything is built with hidden visibility). */
#if defined(__GNUC__)
#define AMN_API __attribute__((visibility("default")))
#define AMN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define AMN_API
#define AMN_PRINTF(f, a)
#endif

/* Version of the headers (the build reads it from here: CMakeLists.txt).
 * AMN_VERSION_NUMBER is 0xMMmmpp (major, minor, patch) for #if comparisons;
 * amn_version() / amn_version_number() tell the version of the library
 * actually linked, which may differ from these macros with a shared library
 * installed separately. */
#define AMN_VERSION_MAJOR 0
#define AMN_VERSION_MINOR 1
#define AMN_VERSION_PATCH 0
#define AMN_VERSION_STR_(x) #x
#define AMN_VERSION_XSTR_(x) AMN_VERSION_STR_(x)
/** "MAJOR.MINOR.PATCH" of the headers, e.g. "0.1.0". */
#define AMN_VERSION                                                                                             \
  AMN_VERSION_XSTR_(AMN_VERSION_MAJOR) "." AMN_VERSION_XSTR_(AMN_VERSION_MINOR) "." AMN_VERSION_XSTR_(AMN_VERSION_PATCH)
/** The version as one number: (major << 16) | (minor << 8) | patch. */
#define AMN_VERSION_NUMBER ((AMN_VERSION_MAJOR << 16) | (AMN_VERSION_MINOR << 8) | AMN_VERSION_PATCH)
#define AMN_DEFAULT_PORT 7878
/** Default maximum size of one gRPC message (either direction): 64 MiB. */
#define AMN_DEFAULT_MAX_MESSAGE (64u * 1024u * 1024u)

/** gRPC status codes (grpc/grpc doc/statuscodes.md). */
typedef enum amn_status_code {
  AMN_STATUS_OK = 0,
  AMN_STATUS_CANCELLED = 1,
  AMN_STATUS_UNKNOWN = 2,
  AMN_STATUS_INVALID_ARGUMENT = 3,
  AMN_STATUS_DEADLINE_EXCEEDED = 4,
  AMN_STATUS_NOT_FOUND = 5,
  AMN_STATUS_ALREADY_EXISTS = 6,
  AMN_STATUS_PERMISSION_DENIED = 7,
  AMN_STATUS_RESOURCE_EXHAUSTED = 8,
  AMN_STATUS_FAILED_PRECONDITION = 9,
  AMN_STATUS_ABORTED = 10,
  AMN_STATUS_OUT_OF_RANGE = 11,
  AMN_STATUS_UNIMPLEMENTED = 12,
  AMN_STATUS_INTERNAL = 13,
  AMN_STATUS_UNAVAILABLE = 14,
  AMN_STATUS_DATA_LOSS = 15,
  AMN_STATUS_UNAUTHENTICATED = 16,
} amn_status_code;

/** Upper-case name of a status code ("OK", "DEADLINE_EXCEEDED", ...).
 *  Returns "UNKNOWN_CODE" for values outside 0..16. Thread-safe. */
AMN_API const char *amn_status_name(int code);

/** Parses a status name (case-insensitive) or decimal number. Returns the
 *  code, or -1 if `s` is neither. Thread-safe. */
AMN_API int amn_status_from_name(const char *s);

/** Library error codes (negative). */
enum {
  AMN_OK = 0,
  AMN_EINVAL = -1,    /**< invalid argument */
  AMN_ENOMEM = -2,    /**< allocation failed */
  AMN_EAGAIN = -3,    /**< would block / queue full: retry after on_writable */
  AMN_ECLOSED = -4,   /**< call, stream or object already closed */
  AMN_EIO = -5,       /**< socket or file error */
  AMN_ETLS = -6,      /**< TLS setup or handshake failure */
  AMN_EPROTO = -7,    /**< protocol violation by the peer */
  AMN_ETOOBIG = -8,   /**< message larger than the configured maximum */
  AMN_ECONFIG = -9,   /**< configuration error */
  AMN_ESTATE = -10,   /**< operation not valid in the current state */
};

/** Version of the library linked at run time, "MAJOR.MINOR.PATCH" (the
 *  AMN_VERSION it was built with). A static string; thread-safe. An
 *  application built against other headers can compare it with AMN_VERSION. */
AMN_API const char *amn_version(void);
/** The same as a number, (major << 16) | (minor << 8) | patch, to compare
 *  with AMN_VERSION_NUMBER. Thread-safe. */
AMN_API unsigned amn_version_number(void);

/** Short description of an AMN_E* code. Thread-safe. */
AMN_API const char *amn_strerror(int err);

/* ------------------------------------------------------------------ */
/* Metadata                                                           */
/* ------------------------------------------------------------------ */

/**
 * One metadata entry. Keys are lower-case ASCII. For keys ending in "-bin"
 * the value is raw binary: the library base64-encodes it on the wire and
 * decodes it on receipt. Other values must be printable ASCII (0x20-0x7e).
 */
typedef struct amn_md {
  const char *key;
  const uint8_t *value;
  size_t value_len;
} amn_md;

/** A list of metadata entries. */
typedef struct amn_metadata {
  const amn_md *entries;
  size_t count;
} amn_metadata;

/** Returns the first entry with `key` (exact, lower-case) or NULL. */
AMN_API const amn_md *amn_metadata_get(const amn_metadata *md, const char *key);

/* ------------------------------------------------------------------ */
/* Peer identity                                                      */
/* ------------------------------------------------------------------ */

#define AMN_MAX_SANS 16

/** What the TLS layer verified about the peer's certificate. All strings
 *  are NUL-terminated and owned by the object that hands the identity out
 *  (a call, a connection); they live as long as that object. */
typedef struct amn_peer_identity {
  bool verified;                 /**< true when a certificate was verified */
  const char *subject;           /**< RFC 4514 distinguished name */
  const char *sans[AMN_MAX_SANS];/**< DNS names and IP addresses (text) */
  size_t san_count;
  uint8_t sha256[32];            /**< SHA-256 of the DER certificate */
  char sha256_hex[65];           /**< the same, lower-case hex */
  /** NULL when the peer connected directly. A call that came through a
   *  trusted TLS-terminating proxy (amn_server_opts.trusted_proxies) has the
   *  identity of the proxy's client here (the certificate the proxy
   *  forwarded in amn_server_opts.forwarded_cert_header, verified against
   *  the server's CA) and in `via` the proxy's own verified identity. When
   *  the proxy forwarded no certificate, `verified` is false (no subject)
   *  and `via` is set: the proxy's identity is never the caller's. */
  const struct amn_peer_identity *via;
  const char *uri_sans[AMN_MAX_SANS]; /**< URI subjectAltNames (e.g. SPIFFE IDs
                                      "spiffe://amaters/client/a"), in certificate order */
  size_t uri_san_count;
  const char *cn;                /**< the subject's (first) commonName, "" when none */
  const char *ou;                /**< the subject's (first) organizationalUnitName, "" when none */
  const uint8_t *cert_der;       /**< the DER leaf certificate (signed queries are verified
                                      against its key), or NULL */
  size_t cert_der_len;
} amn_peer_identity;

/* ------------------------------------------------------------------ */
/* Authorization rules                                                */
/* ------------------------------------------------------------------ */

/**
 * One rule of an authorization policy (amn_authz_policy_new in server.h;
 * the `[[auth.rule]]` tables of the configuration file). A rule applies to
 * a call when its method matches one of `methods` AND its verified client
 * identity matches the rule's identity patterns: any one of uri_sans,
 * dns_sans, cns, ous, fingerprints matching is enough; a rule with none of
 * them applies to every client with a verified certificate.
 *
 * Patterns: `*` matches any run of characters (also none, also "/" and
 * "."); every other character matches itself, case-sensitively except in
 * dns_sans (ASCII case-insensitive). Examples: "*.clients.example"; the
 * method pattern "/amaters.v1.AmateRS/" and the SPIFFE ID pattern
 * "spiffe://amaters/client/", each followed by a '*'. dns_sans patterns are
 * matched against amn_peer_identity.sans, which holds the IP SANs as text
 * too.
 * fingerprints are SHA-256 of the DER certificate in hex, upper or lower
 * case, with or without ':' between bytes (no wildcards).
 * All strings are borrowed: amn_authz_policy_new copies them.
 */
typedef struct amn_authz_rule {
  const char *name;                /**< required: named in PERMISSION_DENIED and in logs */
  bool allow;                      /**< true: the call runs; false: PERMISSION_DENIED */
  const char *const *methods;      /**< at least one pattern of "/pkg.Service/Method" */
  size_t method_count;
  const char *const *uri_sans;     /**< URI SAN patterns (SPIFFE IDs) */
  size_t uri_san_count;
  const char *const *dns_sans;     /**< DNS SAN patterns */
  size_t dns_san_count;
  const char *const *cns;          /**< subject commonName patterns */
  size_t cn_count;
  const char *const *ous;          /**< subject organizationalUnitName patterns */
  size_t ou_count;
  const char *const *fingerprints; /**< SHA-256 fingerprints (hex) */
  size_t fingerprint_count;
} amn_authz_rule;

/* ------------------------------------------------------------------ */
/* TLS options                                                        */
/* ------------------------------------------------------------------ */

/** TLS settings of a server or client. Paths are PEM files. */
typedef struct amn_tls_opts {
  const char *cert_path;   /**< own certificate chain (leaf first) */
  const char *key_path;    /**< own private key; must not be group/world readable */
  const char *ca_path;     /**< CA bundle used to verify the peer */
  const char *server_name; /**< client: name to verify instead of the URL host */
  bool allow_tls12;        /**< also accept TLS 1.2 (default: TLS 1.3 only) */
  bool insecure;           /**< plaintext (h2c); no TLS at all. Loudly logged. */
  /** Certificate revocation lists: a CRL file (PEM, several CRLs allowed,
   *  or DER) or a directory whose regular files are all CRLs; NULL = no
   *  revocation check. Each CRL must be signed by a CA of ca_path. A peer
   *  whose certificate (or an intermediate of its chain) is listed is
   *  refused during the handshake with the TLS alert certificate_revoked,
   *  and the refusal is logged with the certificate's serial and the CRL
   *  file. The files are checked for changes (modification time, size) at
   *  most once a second, when a handshake verifies a peer, and re-read
   *  when they changed (a bad new CRL is logged and the previous ones stay
   *  in use); amn_server_reload_tls re-reads them too. */
  const char *crl_path;
  /** A CRL whose next update is in the past: false (default) = refuse
   *  every peer until a fresh CRL is installed (logged as an error), true
   *  = only log a warning and keep using it. */
  bool crl_expired_warn;
} amn_tls_opts;

/** Transport selection (HTTP/2 over TCP, HTTP/3 over QUIC, or both); used by
 *  amn_server_opts and amn_client_opts. */
typedef enum amn_transport {
  AMN_TRANSPORT_H2 = 1,
  AMN_TRANSPORT_H3 = 2,
  AMN_TRANSPORT_BOTH = 3,
  AMN_TRANSPORT_AUTO = 4, /**< client only: race QUIC against TCP */
} amn_transport;

/* ------------------------------------------------------------------ */
/* Logging                                                            */
/* ------------------------------------------------------------------ */

typedef enum amn_log_level {
  AMN_LOG_ERROR = 0,
  AMN_LOG_WARN = 1,
  AMN_LOG_INFO = 2,
  AMN_LOG_DEBUG = 3,
} amn_log_level;

/** Log sink: receives one formatted line without trailing newline. May be
 *  called from any library thread concurrently. */
typedef void (*amn_log_fn)(amn_log_level level, const char *line, void *ud);

/** Sets the global log level (default AMN_LOG_INFO). Thread-safe. */
AMN_API void amn_log_set_level(amn_log_level level);
/** Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
AMN_API int amn_log_level_parse(const char *s);
/** Replaces the sink (default: stderr with timestamp). NULL restores the
 *  default. Set it before creating servers or clients. */
AMN_API void amn_log_set_sink(amn_log_fn fn, void *ud);
/** The current log level (amn_log_set_level may change it at any time,
 *  from any thread: the next line is judged by the new level). */
AMN_API amn_log_level amn_log_get_level(void);
/** "error", "warn", "info", "debug" ("?" for other values). */
AMN_API const char *amn_log_level_name(amn_log_level level);

/** How the default sink writes lines (amn_log_set_format). */
typedef enum amn_log_format {
  AMN_LOG_FORMAT_TEXT = 0, /**< "2026-01-02T03:04:05.678Z info  amaters-net: message key=value ..." */
  AMN_LOG_FORMAT_JSON = 1, /**< one JSON object per line: {"time":"...","level":"info",
                                "source":"amaters-net","msg":"...", fields...}; strings escaped
                                (bytes that are not UTF-8 become U+FFFD) */
} amn_log_format;

/** Sets the format of every line (default text). Thread-safe. When stderr
 *  is the journal's stream (systemd sets JOURNAL_STREAM to its device and
 *  inode), every line starts with a syslog priority "<N>" (3 error,
 *  4 warn, 6 info, 7 debug) and text lines carry no timestamp. A sink set
 *  with amn_log_set_sink gets, in text format, the message alone (and its
 *  fields), in JSON format the whole object. */
AMN_API void amn_log_set_format(amn_log_format f);

/** Writes one line in the library's format (the current level, format and
 *  journal rules) with `source` as its origin (a program's name; NULL =
 *  "amaters-net"): for programs whose own messages should look like the
 *  library's. Nothing is written when `level` is above the current level.
 *  Thread-safe. */
AMN_API void amn_log_message(amn_log_level level, const char *source, const char *fmt, ...)
    AMN_PRINTF(3, 4);

#ifdef __cplusplus
}
#endif
#endif
