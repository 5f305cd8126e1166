/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-net — gRPC client.
 *
 * A client owns one I/O thread running a libev loop and a pool of
 * connections to the servers named by its URL(s). Every function here is
 * thread-safe: any number of application threads may issue calls through
 * one client at once; the calls are multiplexed as streams over the pool.
 *
 * Pool (HTTP/2 and HTTP/3): each URL is an endpoint with
 * 1..pool_max_connections connections; a call goes to an endpoint chosen by
 * lb_policy (p2c: the less busy of two random endpoints, by calls in
 * flight; or round robin), on its least busy connection. A new connection
 * is opened when the open ones carry as many calls as the server allows
 * (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, QUIC initial_max_streams_bidi);
 * connections without calls above
 * pool_min_connections close after idle_timeout_ms; a connection that got
 * GOAWAY takes no new call and is replaced. An endpoint whose connection
 * fails is ejected and retried after a jittered, capped exponential backoff
 * (calls go to the other endpoints meanwhile; with health_check, it is back
 * only once its Health/Check answers SERVING). A call is re-sent on another
 * connection (at most max_retries times) only when that is safe: whatever
 * it is, when the server provably never processed it (REFUSED_STREAM or
 * H3_REQUEST_REJECTED, a stream above a GOAWAY's last stream id, the
 * connection failed before the request went out); and, for calls marked idempotent, after UNAVAILABLE,
 * within a retry budget (grpc retryThrottling: 10 tokens, a failure costs
 * 1, a success returns 0.1, no retry at 5 or below). A non-idempotent call
 * that may have run is never re-sent. Streams are re-sent only before any
 * message went either way. Deadlines cover all attempts.
 *
 * Transport (amn_client_opts.transport): HTTP/2, HTTP/3, or AUTO: per URL,
 * QUIC races TCP in the happy-eyeballs style (QUIC first; TCP when QUIC
 * has not completed its handshake within 250 ms, or at once when QUIC
 * fails, e.g. ICMP port unreachable); the first connection ready wins, and
 * the URL keeps that transport until a connection attempt over it fails,
 * then races again. AUTO with an http:// URL is HTTP/2 (QUIC needs TLS).
 * Over HTTP/3 each URL keeps its last session ticket and NEW_TOKEN token:
 * the next connection resumes (0-RTT for idempotent calls) and skips the
 * server's address validation.
 *
 * Callbacks (amn_unary_cb, amn_cstream_cbs) run on the client's I/O thread:
 * they must not block and must not call the blocking amn_client_unary().
 */
#ifndef AMN_CLIENT_H
#define AMN_CLIENT_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct amn_client amn_client;
typedef struct amn_cstream amn_cstream;

/** Client options. Initialise with amn_client_opts_init(). */
typedef struct amn_client_opts {
  const char *url;              /**< "https://host:port" ("http://" only with tls.insecure) */
  amn_tls_opts tls;             /**< client certificate, key, CA to verify the server */
  amn_transport transport;      /**< AMN_TRANSPORT_H2 (default), _H3 (https:// only) or _AUTO */
  size_t max_recv_message;      /**< default AMN_DEFAULT_MAX_MESSAGE */
  size_t max_send_message;      /**< default AMN_DEFAULT_MAX_MESSAGE */
  uint32_t connect_timeout_ms;  /**< TCP connect + TLS handshake; default 10000 */
  uint32_t initial_window_size; /**< per-stream receive window; default 1 MiB */
  size_t stream_send_buffer;    /**< per-stream queued-bytes bound (default 4 MiB) */
  /* Several servers (used instead of `url` when url_count > 0); all https://
   * or all http://. Copied. */
  const char *const *urls;
  size_t url_count;
  uint32_t pool_max_connections; /**< per URL, >= 1 (default 4) */
  uint32_t pool_min_connections; /**< per URL kept open once used (default 1; <= max) */
  int lb_policy;                 /**< AMN_LB_P2C (default) or AMN_LB_ROUND_ROBIN */
  uint32_t idle_timeout_ms;      /**< close connections idle this long, above the minimum;
                                      0 = never (default 60000) */
  uint32_t max_retries;          /**< re-sends of a call, when safe (see above); 0 = never (default 2) */
  uint32_t backoff_base_ms;      /**< first reconnect delay of a failed endpoint (default 1000); also the least
                                     time between two connection attempts that new calls trigger
                                     while every endpoint is failing (they fail at once meanwhile) */
  uint32_t backoff_max_ms;       /**< cap of the exponential backoff (default 30000) */
  /** Keepalive: a connection on which nothing arrived for this long gets a
   *  PING; no answer within keepalive_timeout_ms closes it (its calls fail
   *  with UNAVAILABLE, the next call reconnects). 0 = off (default). A
   *  GOAWAY "too_many_pings" doubles the interval. */
  uint32_t keepalive_interval_ms; /**< (HTTP/3: QUIC PINGs; the connection closes when nothing at all
                                      arrived for interval + timeout while calls are open) */
  uint32_t keepalive_timeout_ms; /**< 0 = keepalive_interval_ms (at least 1000) */
  bool keepalive_without_calls;  /**< also PING connections without calls (default false, as grpc) */
  /** An ejected endpoint's new connection first sends grpc.health.v1.Health/Check (service ""):
   *  the endpoint takes calls again only if the server answers SERVING (else it stays ejected,
   *  with the backoff). Default false: a completed handshake is enough. */
  bool health_check;
  /** A URL whose host is a name that resolves to several addresses becomes one endpoint per
   *  address, balanced like several URLs (amn_client_stats names them "URL (address)"), added
   *  and removed (AMN_EP_REMOVED) as the DNS answers change; TLS still verifies the URL's host
   *  name. Default false: the URL is one endpoint whose connections go to the answer's first
   *  address that works (the next one after a failure). At most 256 endpoints in all, removed
   *  ones included. */
  bool spread_addresses;
  /** DNS. A URL's host that is a name (not an IP address) is looked up off the I/O thread
   *  (c-ares on the client's loop; the hosts file first, as /etc/nsswitch.conf says, then DNS),
   *  again when the answer's TTL runs out (but not sooner than dns_refresh_min_ms nor later
   *  than dns_refresh_max_ms) and after a connection to it fails (not more often than
   *  dns_refresh_min_ms). Addresses that appear get connections (new calls go there);
   *  connections to addresses that left the answer drain: their calls in flight finish, they
   *  take no new call. A lookup that fails keeps the last good addresses (and is tried again
   *  with a backoff from dns_refresh_min_ms); a name that never resolved fails calls with
   *  UNAVAILABLE "cannot resolve NAME: reason". IP literals skip DNS. */
  const char *dns_servers;       /**< NULL: the system's (resolv.conf); else "IP[:PORT]" servers,
                                      comma-separated ("127.0.0.1:5353", "[::1]:53"). Copied */
  uint32_t dns_refresh_min_ms;   /**< floor of the TTL and of the lookups a failure triggers
                                      (default 1000) */
  uint32_t dns_refresh_max_ms;   /**< ceiling of the TTL: a name is looked up at least this often
                                      (default 300000) */
  /** Signed queries (docs/SIGNATURES.md): amn_client_execute, and every
   *  message of an ExecuteStream stream that is a QueryRequest without a
   *  client_signature, get one made with the key of tls.key_path (ECDSA
   *  P-256/P-384, Ed25519 or RSA; loaded by amn_client_new). A signature the
   *  caller passes is sent as it is. Default false. */
  bool sign_queries;
  /** Signed results: amn_client_execute checks the response's server_proof
   *  against the certificate of the server that answered; a missing or
   *  invalid proof turns the result into DATA_LOSS with the reason (e.g.
   *  "server proof does not verify"). Default false. */
  bool verify_proofs;
  /** Calls per connection: a connection that was given this many calls takes no more (it
   *  drains and closes once they ended); the next call opens a new connection. 0 = no limit
   *  (default). With 1 and pool_min_connections 0 every call makes its own connection and
   *  handshake (amaters-cli bench --new-connection measures handshakes this way). */
  uint32_t max_calls_per_connection;
  /** HTTP/3: never resume from the session ticket a URL kept: every connection makes a full
   *  handshake, without 0-RTT (tickets are still received and counted). Default false.
   *  HTTP/2 connections always make a full handshake (no TLS session resumption). */
  bool no_resumption;
} amn_client_opts;

enum { AMN_LB_P2C = 0, AMN_LB_ROUND_ROBIN = 1 };

AMN_API void amn_client_opts_init(amn_client_opts *o);

/** Per-call options. A zeroed struct means: no deadline, no metadata. */
typedef struct amn_call_opts {
  uint32_t timeout_ms;        /**< deadline; 0 = none. Sent as grpc-timeout and enforced locally. */
  const amn_metadata *metadata; /**< request metadata (copied) */
  bool idempotent;            /**< the call may be replayed (0-RTT, retries). HTTP/3: on a
                                   resumed connection only such calls go as 0-RTT early data
                                   (sent again after the handshake if the server refuses it);
                                   the others wait for the handshake */
} amn_call_opts;

/** Outcome of a call. Owned by the receiver of an amn_result; release with
 *  amn_result_free (the async callback's result is freed by the library
 *  after the callback returns). */
typedef struct amn_result {
  amn_status_code code;
  char *message;          /**< decoded grpc-message, or "" */
  uint8_t *data;          /**< unary: the response message (serialized); NULL if none */
  size_t len;
  amn_md *initial_md;     /**< response header metadata */
  size_t initial_md_count;
  amn_md *trailing_md;    /**< trailer metadata */
  size_t trailing_md_count;
} amn_result;

AMN_API void amn_result_free(amn_result *r);

/**
 * Creates a client and starts its I/O thread. Connects lazily on the first
 * call (and reconnects after failures). Validates the URL and loads the TLS
 * files now: AMN_EINVAL / AMN_ETLS with a reason.
 */
AMN_API int amn_client_new(amn_client **out, const amn_client_opts *opts, char *err, size_t errlen);

/** Connects now and waits for the TLS + HTTP/2 handshake (the server's
 *  SETTINGS; over HTTP/3 the confirmed QUIC handshake), up to connect_timeout_ms. With several URLs it connects to
 *  every one and returns once the first is ready (or all failed). Returns 0,
 *  or AMN_EIO/AMN_ETLS with the reason. Optional: calls connect by
 *  themselves. */
AMN_API int amn_client_connect(amn_client *c, char *err, size_t errlen);

/** Cancels every call (CANCELLED), closes the connection, joins the I/O
 *  thread and frees the client. Open streams must have been released. */
AMN_API void amn_client_free(amn_client *c);

/**
 * Blocking unary call: sends `req` (serialized message) to `method` and
 * waits for the result (the deadline included). Never call from a client
 * callback. Returns 0 when `out` was filled (check out->code), or a
 * negative AMN_E* code if the call could not be issued.
 */
AMN_API int amn_client_unary(amn_client *c, const char *method, const uint8_t *req, size_t len,
                     const amn_call_opts *opts, amn_result *out);

/** Completion of an asynchronous unary call. `res` is valid during the
 *  callback only. Runs on the client I/O thread. */
typedef void (*amn_unary_cb)(const amn_result *res, void *ud);

/** Asynchronous unary call: returns at once; `cb` runs exactly once (also
 *  on failure, with the status). Returns 0 or AMN_EINVAL/AMN_ENOMEM (then
 *  cb is never called). The request bytes are copied. */
AMN_API int amn_client_unary_async(amn_client *c, const char *method, const uint8_t *req, size_t len,
                           const amn_call_opts *opts, amn_unary_cb cb, void *ud);

/** Execute convenience: encodes a QueryRequest, blocking call, decodes the
 *  QueryResponse: on OK, out->data holds result_bytes (proof in
 *  proof / proof_len when proof is non-NULL; free it with free()). */
AMN_API int amn_client_execute(amn_client *c, const uint8_t *query, size_t query_len,
                       const uint8_t *signature, size_t signature_len,
                       const amn_call_opts *opts, amn_result *out,
                       uint8_t **proof, size_t *proof_len);

/** Longest client_signature amn_client_sign_query writes. */
#define AMN_CLIENT_SIGNATURE_MAX 1050

/** Makes a client_signature (docs/SIGNATURES.md) for a QueryRequest of
 *  `method` carrying `query`, with the key of a client created with
 *  sign_queries, for callers that encode their own requests (e.g. with
 *  amn_client_unary_async); each call draws a new nonce. `out` holds at
 *  least AMN_CLIENT_SIGNATURE_MAX bytes. Returns the signature's length,
 *  AMN_ESTATE when the client does not sign, AMN_EINVAL, or AMN_ETLS.
 *  Thread-safe. */
AMN_API int amn_client_sign_query(amn_client *c, const char *method, const uint8_t *query, size_t query_len,
                                  uint8_t *out);

/* ------------------------------------------------------------------ */
/* Streams                                                            */
/* ------------------------------------------------------------------ */

/** Stream callbacks; run on the client I/O thread. */
typedef struct amn_cstream_cbs {
  /** One response message; `msg` valid during the callback only. */
  void (*on_message)(amn_cstream *s, const uint8_t *msg, size_t len, void *ud);
  /** The call ended (always called exactly once). `res->data` is NULL. */
  void (*on_close)(amn_cstream *s, const amn_result *res, void *ud);
  /** amn_cstream_send may be retried after AMN_EAGAIN. */
  void (*on_writable)(amn_cstream *s, void *ud);
} amn_cstream_cbs;

/** Opens a bidirectional stream to `method`. The cbs struct is copied.
 *  Returns 0 and a stream handle the caller must release with
 *  amn_cstream_release after on_close (or to abandon it, which cancels). */
AMN_API int amn_client_stream_open(amn_client *c, const char *method, const amn_call_opts *opts,
                           const amn_cstream_cbs *cbs, void *ud, amn_cstream **out);

/** Queues one message (copied). Any thread. AMN_EAGAIN when queued bytes
 *  exceed stream_send_buffer (not queued; wait for on_writable);
 *  AMN_ECLOSED after close/cancel; AMN_ETOOBIG above max_send_message;
 *  AMN_ENOMEM when out of memory (not queued). */
AMN_API int amn_cstream_send(amn_cstream *s, const uint8_t *msg, size_t len);

/** Half-closes: no more messages will be sent. Any thread. */
AMN_API int amn_cstream_close_send(amn_cstream *s);

/** Cancels the stream (RST_STREAM CANCEL); on_close gets CANCELLED. */
AMN_API void amn_cstream_cancel(amn_cstream *s);

/** Releases the caller's handle; cancels the stream if still open. After
 *  this no callback for `s` runs once the call returns... except an
 *  on_close already running on the I/O thread. Any thread. */
AMN_API void amn_cstream_release(amn_cstream *s);

/* ------------------------------------------------------------------ */
/* Pool statistics                                                    */
/* ------------------------------------------------------------------ */

typedef enum amn_endpoint_state {
  AMN_EP_IDLE = 0,       /**< no connection (not used yet, or all closed when idle) */
  AMN_EP_CONNECTING = 1, /**< connecting, none ready yet */
  AMN_EP_READY = 2,      /**< at least one connection takes calls */
  AMN_EP_EJECTED = 3,    /**< failing: waiting for the backoff to end */
  AMN_EP_REMOVED = 4,    /**< spread_addresses: its address left the DNS answer; its connections
                              drain (calls in flight finish), it takes no new call */
} amn_endpoint_state;

/** State and counters of one URL of the pool. */
typedef struct amn_endpoint_stats {
  const char *url;           /**< as given; valid while the client lives */
  amn_endpoint_state state;
  uint32_t connections;      /**< ready connections */
  uint32_t connecting;
  uint32_t draining;         /**< got GOAWAY; finishing their calls */
  uint32_t calls_in_flight;
  uint64_t calls_started;    /**< attempts sent to this endpoint (retries included) */
  uint64_t calls_ok;
  uint64_t calls_failed;     /**< attempts that ended with another status */
  uint64_t connects;         /**< connections established */
  uint64_t connect_failures; /**< failed connection attempts (and refusals by GOAWAY) */
  uint32_t consecutive_failures;
  amn_transport transport;   /**< AMN_TRANSPORT_H2 or _H3 in use; 0 while unknown (auto, not
                                  connected yet or racing again after a failure) */
  char last_error[200];      /**< latest connection failure, or "" */
} amn_endpoint_stats;

/** Fills out[0..cap) with the state of each endpoint (in URL order) and
 *  returns the number of endpoints. *retries (when non-NULL) gets the
 *  number of call attempts re-sent so far. Thread-safe. */
AMN_API size_t amn_client_stats(amn_client *c, amn_endpoint_stats *out, size_t cap, uint64_t *retries);

/** A client's HTTP/3 (QUIC) counters, over all its endpoints and
 *  connections, since amn_client_new (amn_client_get_quic_stats). All zero
 *  for a client that never used HTTP/3. */
typedef struct amn_client_quic_stats {
  uint64_t connects;          /**< QUIC connection attempts started */
  uint64_t handshakes;        /**< ... whose handshake completed */
  uint64_t resumed;           /**< handshakes resumed from a session ticket */
  uint64_t early_attempted;   /**< connections that offered 0-RTT data */
  uint64_t early_accepted;    /**< ... and the server accepted it */
  uint64_t early_rejected;    /**< ... and the server refused it (those calls were sent again
                                   as 1-RTT data; counted when the handshake completes) */
  uint64_t early_calls;       /**< calls whose request went out as 0-RTT data */
  uint64_t tickets_received;  /**< TLS session tickets received (kept for the next connection) */
  uint64_t retries_received;  /**< Retry packets (address validation asked by the server) */
  uint64_t tokens_received;   /**< NEW_TOKEN tokens received (kept for the next connection) */
  uint64_t tokens_sent;       /**< connection attempts that presented a token */
  uint64_t key_updates;       /**< 1-RTT key generations installed after the first */
  uint64_t migrations;        /**< local address changes of a live connection */
  uint64_t stateless_resets;  /**< connections ended by the server's stateless reset */
  uint64_t datagrams_received;  /**< UDP datagrams read, all connections */
  uint64_t datagrams_coalesced; /**< ... of them that came several per receive (UDP GRO: the kernel
                                     handed a sender's batch over at once; 0 where it has no GRO) */
} amn_client_quic_stats;

/** Fills `out` with the client's HTTP/3 counters. Thread-safe (a short
 *  lock of the client's I/O state), any thread, also from callbacks.
 *  Returns 0, or AMN_EINVAL when an argument is NULL (then `out` is left
 *  alone). */
AMN_API int amn_client_get_quic_stats(amn_client *c, amn_client_quic_stats *out);

/** Health check via grpc.health.v1.Health/Check for `service` ("" = the
 *  server). Returns 0 and sets *serving, or a negative code; the call's
 *  status is in *status when non-NULL. */
AMN_API int amn_client_health(amn_client *c, const char *service, uint32_t timeout_ms,
                      bool *serving, amn_status_code *status, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
