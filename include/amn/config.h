/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-net — configuration file (TOML 1.0).
 *
 * Sections and keys (every key optional; defaults in amn_config_init; an
 * annotated example with every key is examples/amaters-net.toml):
 *   [network] bind_address (string "host:port"), max_connections (int),
 *             idle_timeout_ms (int), keep_alive_interval_ms (int),
 *             handshake_timeout_ms (int), header_timeout_ms (int), stall_timeout_ms (int)
 *   [tls]     cert_path, key_path, ca_path (strings), allow_tls12 (bool),
 *             crl_path (string: a CRL file or directory), crl_expired ("refuse"|"warn")
 *   [quic]    max_concurrent_streams (int), initial_window_size (int),
 *             retry_threshold (int), secret_path (string)
 *   [server]  transport ("h2"|"h3"|"both"), threads (int), log_level (string),
 *             drain_timeout_ms (int), max_message_bytes (int),
 *             max_connection_buffer_bytes (int), max_server_buffer_bytes (int),
 *             pki_dir (string), insecure (bool), handler, handler_arg (strings),
 *             reflection (bool), trusted_proxies (array of strings),
 *             forwarded_cert_header (string)
 *   [client]  urls (array of strings), transport ("h2"|"h3"|"auto"),
 *             timeout_ms, connect_timeout_ms, pool_max_connections,
 *             pool_min_connections (ints), lb_policy ("p2c"|"round_robin"),
 *             keep_alive_interval_ms, max_retries (ints), health_check,
 *             spread_addresses (bools), dns_servers (string "IP[:PORT],..."),
 *             dns_refresh_min_ms, dns_refresh_max_ms (ints)
 *   [admin]   bind_address (string "host:port"; the metrics listener, off by default)
 *   [log]     access (bool), format ("text"|"json")
 *   [[auth.rule]]  the authorization policy, one table per rule in order
 *             (first match wins): name (string, unique), action ("allow"|
 *             "deny"), methods (array of patterns, required), and the
 *             identity patterns uri_sans, dns_sans, cns, ous, fingerprints
 *             (arrays of strings; see amn_authz_rule in common.h). No rule
 *             tables: no policy.
 *   [auth]    require_client_signature (bool), signature_window_ms,
 *             signature_replay_entries (ints), sign_results (bool);
 *             [client] also sign_queries, verify_proofs (bools)
 * Unknown sections or keys, wrong types and out-of-range values are errors
 * reported as "FILE:LINE: message naming the key".
 *
 * Value rules (the same for the file and the environment):
 *  - integers are TOML integers (not floats), never negative, and within the
 *    range given next to each field below;
 *  - bind_address is "host:port" with port 1-65535; host is a DNS name, an
 *    IPv4 address, or an IPv6 address in brackets ("[::1]:7878");
 *  - client URLs are "https://host:port" or "http://host:port" (host and
 *    port as above, optional trailing "/"); at least one URL;
 *  - path strings must not be empty; log_level is one of
 *    "error", "warn", "info", "debug";
 *  - client.pool_min_connections <= client.pool_max_connections;
 *  - server.trusted_proxies entries are "sha256:" and 64 hex digits (pairs
 *    may be separated by ':'), "subject:" or "san:" and a non-empty value;
 *    AMATERS_NET_SERVER_TRUSTED_PROXIES is a comma-separated list (a subject
 *    with a comma can only be given in the file);
 *  - server.forwarded_cert_header is a lower-case header name (a-z 0-9 - _ .).
 */
#ifndef AMN_CONFIG_H
#define AMN_CONFIG_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct amn_config {
  struct {
    char *bind_address;            /**< default "127.0.0.1:7878" */
    int64_t max_connections;       /**< 0..10000000, 0 = unlimited; default 10000 */
    int64_t idle_timeout_ms;       /**< 0..2147483647, 0 = never; default 60000 */
    int64_t keep_alive_interval_ms;/**< server PINGs, 0..2147483647, 0 = off; default 10000 */
    int64_t handshake_timeout_ms;  /**< TLS (HTTP/2) or QUIC (HTTP/3) handshake deadline per
                                        connection, 1..2147483647; default 10000 */
    int64_t header_timeout_ms;     /**< a request's headers must be complete this long after
                                        they began, 1..2147483647; default 10000 */
    int64_t stall_timeout_ms;      /**< a call waiting on the client ends when no byte moves for
                                        this long, 1..2147483647; default 30000 */
  } network;
  struct {
    char *cert_path, *key_path, *ca_path; /**< default NULL: dev PKI */
    bool allow_tls12;       /**< also accept TLS 1.2 (default false: TLS 1.3 only) */
    char *crl_path;         /**< CRL file or directory (amn_tls_opts.crl_path); default NULL: none */
    char *crl_expired;      /**< "refuse" (default) | "warn": what an expired CRL does
                                 (amn_tls_opts.crl_expired_warn) */
  } tls;
  struct {
    int64_t max_concurrent_streams; /**< per connection, 1..1000000; default 1024 */
    int64_t initial_window_size;    /**< per-stream window, 1..2147483647; default 1048576 */
    int64_t retry_threshold;        /**< QUIC handshakes in progress per event loop from which a
                                         new client must first prove its address (Retry);
                                         0..4294967295, 0 = always, 4294967295 = never;
                                         default 100 */
    char *secret_path;              /**< file of the server's QUIC secret (stateless reset
                                         tokens, address-validation tokens); default NULL
                                         (see amn_server_opts.quic_secret) */
  } quic;
  struct {
    char *transport;        /**< "h2"|"h3"|"both"; default "both" (amaters-netd: HTTP/2 only when insecure) */
    int64_t threads;        /**< 0..1024; default 0 = one per core */
    char *log_level;        /**< default "info" */
    int64_t drain_timeout_ms;  /**< 0..2147483647; default 10000 */
    int64_t max_message_bytes; /**< 1..2147483647; default 64 MiB */
    int64_t max_connection_buffer_bytes; /**< bytes a connection's calls may hold (see
                                              amn_server_opts.max_connection_buffer); 0 = default */
    int64_t max_server_buffer_bytes;     /**< bytes all calls may hold together; 0 = default (1 GiB) */
    char *pki_dir;          /**< default NULL: amn_pki_default_dir */
    bool insecure;          /**< default false */
    char *handler;          /**< amaters-netd: "echo" or the path of a plug-in (amn/plugin.h);
                                 default NULL = "echo" */
    char *handler_arg;      /**< amaters-netd: the string given to the plug-in's init; default NULL */
    bool reflection;        /**< server reflection (amn_server_opts.reflection); default true */
    char **trusted_proxies; /**< TLS-terminating proxies whose forwarded client certificate
                                 is trusted (amn_server_opts.trusted_proxies): each
                                 "sha256:HEX", "subject:DN" or "san:NAME"; default none */
    size_t trusted_proxy_count; /**< entries in trusted_proxies */
    char *forwarded_cert_header; /**< lower-case request header carrying the client certificate
                                      from a trusted proxy; default NULL: "x-client-cert" */
  } server;
  struct {
    char **urls;                    /**< servers to connect to (the pool spreads calls over them);
                                         default one URL: "https://127.0.0.1:7878" */
    size_t url_count;               /**< number of entries in urls (>= 1) */
    char *transport;                /**< "h2"|"h3"|"auto" (race QUIC against TCP); default "h2" */
    int64_t timeout_ms;             /**< default per-call deadline, 0..2147483647, 0 = none; default 30000 */
    int64_t connect_timeout_ms;     /**< TCP/QUIC connect + TLS handshake, 1..2147483647; default 10000 */
    int64_t pool_max_connections;   /**< connections per URL at most, 1..65535; default 4 */
    int64_t pool_min_connections;   /**< connections per URL kept open, 0..pool_max; default 1 */
    char *lb_policy;                /**< "p2c" (power of two choices) | "round_robin"; default "p2c" */
    int64_t keep_alive_interval_ms; /**< client PINGs, 0..2147483647, 0 = off; default 10000 */
    int64_t max_retries;            /**< retries of a failed call on another connection
                                         (only when safe: idempotent or never sent), 0..100;
                                         default 2 */
    bool health_check;              /**< a failed URL takes calls again only once its
                                         grpc.health.v1 Check answers SERVING; default false */
    bool spread_addresses;          /**< a URL whose name resolves to several addresses is one
                                         endpoint per address; default false */
    char *dns_servers;              /**< "IP[:PORT],..." DNS servers for the URLs' names; default
                                         NULL: the system's (resolv.conf) */
    int64_t dns_refresh_min_ms;     /**< floor of the DNS TTL (and of the lookups connection
                                         failures trigger), 1..2147483647; default 1000 */
    int64_t dns_refresh_max_ms;     /**< ceiling of the DNS TTL, 1..2147483647; default 300000 */
    bool sign_queries;              /**< sign every QueryRequest with the client key
                                         (amn_client_opts.sign_queries); default false */
    bool verify_proofs;             /**< verify the server_proof of every Execute response
                                         (amn_client_opts.verify_proofs); default false */
  } client;
  struct {
    char *bind_address;             /**< "host:port" of the admin HTTP listener (GET /metrics in
                                         Prometheus text format, GET /healthz); default NULL: none.
                                         Not the gRPC port; keep it on loopback unless a scraper
                                         elsewhere must reach it */
  } admin;
  struct {
    bool access;                    /**< one access-log line per call (amn_server_opts.access_log);
                                         default false */
    char *format;                   /**< "text"|"json" (one JSON object per line); default "text"
                                         (see amn_log_set_format) */
  } log;
  struct {                          /**< [auth]: the authorization policy and signed queries and results */
    amn_authz_rule *rules;  /**< the [[auth.rule]] tables in file order (strings owned by the
                                 config; build a policy with amn_authz_policy_new); NULL: none */
    size_t rule_count;
    char **rule_where;      /**< "FILE:LINE" of each rule's table, for messages */
    bool require_client_signature;  /**< default false */
    int64_t signature_window_ms;    /**< 1..86400000; default 30000 */
    int64_t signature_replay_entries; /**< 64..2^30; default 262144 */
    bool sign_results;              /**< default false */
  } auth;
  struct amn_config_origin *origin; /**< internal: where each key got its value (amn_config_where) */
} amn_config;

/** Fills `c` with the defaults (strings heap-allocated). */
AMN_API void amn_config_init(amn_config *c);
/** Frees the strings held by `c`. */
AMN_API void amn_config_free(amn_config *c);

/**
 * Reads `path` into `c` (which must be initialised; keys present in the file
 * replace the current values). On error returns AMN_ECONFIG (or AMN_EIO if
 * the file cannot be read) and writes "path:line: reason" into err; `c` is
 * left unchanged in that case. Not thread-safe for the same `c`.
 * Errors that have no single line (e.g. the file is unreadable) are written
 * as "path: reason". AMN_ENOMEM if memory runs out.
 */
AMN_API int amn_config_load(amn_config *c, const char *path, char *err, size_t errlen);

/**
 * Applies environment overrides AMATERS_NET_<SECTION>_<KEY> (upper case,
 * e.g. AMATERS_NET_NETWORK_MAX_CONNECTIONS) to `c`. A malformed value is an
 * error "env AMATERS_NET_...: reason" (AMN_ECONFIG).
 * Integers are decimal, booleans "true"/"false", strings are taken verbatim;
 * AMATERS_NET_CLIENT_URLS is a comma-separated list. The same value rules as
 * for the file apply; `c` is left unchanged on error. Variables with the
 * prefix that name no key are logged as a warning and otherwise ignored.
 */
AMN_API int amn_config_apply_env(amn_config *c, char *err, size_t errlen);

/**
 * Where key `key` ("section.name", e.g. "tls.cert_path") of `c` got its
 * value, for error messages about that value: "FILE:LINE" when the last
 * amn_config_load that set it did, "env NAME" when amn_config_apply_env
 * did. Writes it into out (NUL-terminated, truncated to cap). Returns 0;
 * AMN_ESTATE when the key still has its default (or was set by hand), or
 * names no key; AMN_EINVAL when an argument is NULL or cap is 0.
 */
AMN_API int amn_config_where(const amn_config *c, const char *key, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
