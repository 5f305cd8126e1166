/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-net — gRPC server (HTTP/2 over TLS today; HTTP/3 shares this API).
 *
 * Threading model
 *  - The server runs `threads` event loops (default: one per core), each
 *    with its own SO_REUSEPORT listening socket (or sharing the sockets the
 *    application gave: amn_server_opts.listen_fd, listen_fd_udp). A connection and all its
 *    calls belong to one loop for their whole life.
 *  - Handler callbacks (on_message, on_half_close, on_cancel, on_writable)
 *    run on the loop thread of the call. They must not block: long work
 *    (an FHE evaluation) goes to the application's own threads.
 *  - `amn_call_send*`, `amn_call_finish*`, `amn_call_add_*_metadata` and the
 *    accessors may be called from ANY thread. They never block.
 *
 * Call lifetime
 *  - Every call handed to a handler must be finished exactly once with
 *    `amn_call_finish` (or a convenience variant), from any thread, even after
 *    on_cancel. Finishing a cancelled call sends nothing and only releases it.
 *  - After finish returns, the application must not touch the call again.
 */
#ifndef AMN_SERVER_H
#define AMN_SERVER_H

#include "common.h"
#include "pki.h" /* AMN_QUIC_SECRET_LEN, amn_quic_secret_load */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct amn_server amn_server;
typedef struct amn_call amn_call;

/** Server options. Initialise with amn_server_opts_init() then override. */
typedef struct amn_server_opts {
  const char *listen;               /**< "host:port"; default "127.0.0.1:7878" */
  amn_tls_opts tls;                 /**< certificate, key, CA (mTLS always required unless insecure) */
  int threads;                      /**< event loops; 0 = one per online core */
  amn_transport transport;          /**< default AMN_TRANSPORT_H2 */
  size_t max_recv_message;          /**< default AMN_DEFAULT_MAX_MESSAGE */
  size_t max_send_message;          /**< default AMN_DEFAULT_MAX_MESSAGE */
  uint32_t max_concurrent_streams;  /**< per connection; default 1024 */
  uint32_t initial_window_size;     /**< per-stream flow-control window; default 1 MiB */
  uint32_t max_connections;         /**< 0 = unlimited (default 10000) */
  uint32_t idle_timeout_ms;         /**< close idle connections; 0 = never (default 60000) */
  uint32_t keepalive_interval_ms;   /**< server PINGs; 0 = off (default 10000) */
  uint32_t drain_timeout_ms;        /**< graceful stop deadline (default 10000) */
  size_t stream_send_buffer;        /**< per-call queued-bytes bound for backpressure (default 4 MiB) */
  /* Connection lifecycle (HTTP/2). idle_timeout_ms above: a connection
   * without open calls for that long gets GOAWAY(NO_ERROR, "idle timeout")
   * and is closed. keepalive_interval_ms above: a connection on which
   * nothing was received for that long gets a PING; when no answer comes
   * within keepalive_timeout_ms it is closed (logged as a warning).
   * HTTP/3: idle_timeout_ms is the QUIC idle timeout (no packet for that
   * long closes the connection); while a connection has calls the server
   * sends QUIC PINGs every keepalive_interval_ms (so a quiet call is not
   * idle and a dead client is noticed within idle_timeout_ms);
   * handshake_timeout_ms bounds the QUIC handshake. */
  uint32_t handshake_timeout_ms;    /**< handshake deadline per connection: TLS over TCP, QUIC
                                         (default 10000; 0 = the default). A peer that has not
                                         completed it in time is closed and logged. */
  uint32_t keepalive_timeout_ms;    /**< wait for a PING ack; 0 = max(keepalive_interval_ms, 5000) (default 0) */
  /** Ping abuse policy (grpc doc/keepalive.md): a client PING that comes
   *  sooner than ping_min_interval_ms after the previous one (no response
   *  HEADERS/DATA sent in between), or, unless ping_permit_without_calls,
   *  while the connection has no open call, is a strike; the third strike
   *  gets GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") and the connection is
   *  closed. 0 = no policy. Default 5000. */
  uint32_t ping_min_interval_ms;
  bool ping_permit_without_calls;   /**< default true */
  /** HTTP/3: while at least this many QUIC handshakes are in progress on
   *  an event loop, a new connection must first prove its address (a QUIC
   *  Retry: one more round trip) unless it presents an address-validation
   *  token from an earlier connection (NEW_TOKEN). 0 = always; UINT32_MAX =
   *  never. Default 100. */
  uint32_t quic_retry_threshold;
  /** HTTP/3: the server's QUIC secret, 32 bytes (copied by amn_server_new),
   *  or NULL. The stateless reset tokens (RFC 9000 10.3) and the address
   *  validation tokens (Retry, NEW_TOKEN) are derived from it (HKDF-SHA256,
   *  one key per purpose), shared by all the server's event loops.
   *  A server that gets a packet of a connection it does not know (it
   *  restarted, or another server behind the same address got it) answers
   *  with a stateless reset, which the client recognises only when the
   *  token matches the one the connection's server announced: so a
   *  restarted server, and every server behind one address, must use the
   *  same secret; then clients fail over at once instead of waiting for
   *  the idle timeout, and NEW_TOKEN tokens survive restarts. NULL: a random
   *  secret per process (resets are recognised only while the process
   *  runs). amn_quic_secret_load reads (or creates) a secret file. */
  const uint8_t *quic_secret;
  /** Memory bounds, on both transports. A connection's calls may hold at
   *  most max_connection_buffer bytes: request bytes received and not yet
   *  released (a partial message as it grows, a unary request until the call
   *  ends, messages held while a handler paused receiving) plus responses
   *  queued and not yet sent. Flow control enforces it first: the window of
   *  received bytes is granted back to the client only while the connection
   *  holds less than the bound minus its connection window, so a client
   *  that respects flow control is slowed, never failed. A call whose bytes
   *  pass the bound anyway (responses the client does not read) ends with
   *  RESOURCE_EXHAUSTED "connection buffer limit ... reached" and its bytes
   *  are dropped. max_server_buffer bounds all calls of the server together
   *  (counted per call in 64 KiB units): a call whose bytes would pass it
   *  ends the same way ("server buffer limit"). 0 = the defaults:
   *  max_connection_buffer = 2 * max_recv_message + 32 MiB (160 MiB with the
   *  default message size), at least max_recv_message + max_send_message +
   *  1 MiB, which amn_server_new requires; max_server_buffer = 1 GiB, at least
   *  max_connection_buffer. Worst case per connection: max_connection_buffer
   *  plus the transports' fixed state; per server: max_server_buffer (+ 64 KiB
   *  per open call). */
  size_t max_connection_buffer;
  size_t max_server_buffer;
  /** A request's header block must be complete this long after it began
   *  (both transports); otherwise the call ends with DEADLINE_EXCEEDED
   *  "request headers not complete within N ms", so that a client sending
   *  its headers byte by byte cannot hold a stream, and with it the
   *  connection, open. Default 10000; 0 = the default. */
  uint32_t header_timeout_ms;
  /** Minimum progress (both transports): a call that waits on the client
   *  — a request message begun and not complete (unless the handler paused
   *  receiving), or responses queued that the client does not take — and
   *  sees no byte move for this long ends with RESOURCE_EXHAUSTED ("request
   *  stalled: no bytes for N ms", "the client read no response for N ms",
   *  or "no room in the connection's buffer for N ms" when it waited on the
   *  connection's memory bound), and its bytes are dropped. A client that
   *  stops half-way through a message, or never reads, cannot hold memory
   *  or a stream for longer. Default 30000; 0 = the default. */
  uint32_t stall_timeout_ms;
  /** Access log: when a call's stream ends, one line (whatever the log
   *  level) with its fields: "access peer=SUBJECT addr=HOST:PORT
   *  method=PATH transport=h2|h3 status=NAME code=N duration_us=N
   *  bytes_in=N bytes_out=N deadline_ms=N|-" in text format, the same
   *  members in JSON format (amn_log_set_format; deadline_ms null when the
   *  client set none; peer "-" / null without a verified certificate).
   *  bytes_in and bytes_out count the call's gRPC messages with their
   *  5-byte prefixes. Default false. A call forwarded by a trusted proxy
   *  (below) shows the client's subject as peer and ends with the field
   *  via=PROXY-SUBJECT (JSON: "via"); direct calls have no via field. */
  bool access_log;
  /** Sockets the application already bound and hands to the server (e.g.
   *  a service manager's socket activation: amaters-netd takes them from
   *  systemd's LISTEN_FDS), instead of binding `listen` itself. A value
   *  above 2 is a descriptor; 0 (the default) or a negative value: none.
   *  listen_fd: a listening SOCK_STREAM socket (IPv4 or IPv6), served by
   *  HTTP/2 (needs AMN_TRANSPORT_H2 or BOTH); every event loop accepts from
   *  it (each through its own dup of the descriptor; whichever loop is
   *  woken first takes the connection, the others find nothing), so the
   *  loops share it instead of each having its own SO_REUSEPORT socket
   *  (the kernel no longer spreads connections over the loops: a burst of
   *  connections may all go to the loop that woke first).
   *  listen_fd_udp: a bound SOCK_DGRAM socket, served by HTTP/3 (needs
   *  AMN_TRANSPORT_H3 or BOTH); it is served by event loop 0 alone (QUIC
   *  connections are not spread over the loops: the datagrams of one
   *  socket cannot be steered to the loop of their connection), the other
   *  loops serve only HTTP/2. When one is given, every protocol of
   *  `transport` needs its own (amn_server_start fails naming the missing
   *  one) and `listen` is not bound (its port is unused). The server works
   *  on duplicates and closes them at stop: the application keeps (and
   *  closes) its own descriptors; amn_server_port is the bound port. */
  int listen_fd;
  int listen_fd_udp;
  /** Server reflection: grpc.reflection.v1 and v1alpha ServerReflectionInfo,
   *  so that grpcurl, grpcui, grpc_cli or Postman can list the services and
   *  read the descriptors of amaters.v1, grpc.health.v1 and reflection
   *  itself (built into the library). list_services names every registered
   *  service, also those without a built-in descriptor. Default true
   *  (amn_server_opts_init): what reflection tells is public (the .proto
   *  files shipped with the library) and only clients that passed mTLS ask. */
  bool reflection;
  /** Forwarded client identity behind a TLS-terminating proxy (nginx,
   *  HAProxy). The proxy verifies its clients' certificates and connects to
   *  this server with its own client certificate; a call's peer would be
   *  the proxy. When the connection's verified peer matches one of the
   *  trusted_proxy_count entries of trusted_proxies ("sha256:HEX" of the
   *  proxy's certificate, "subject:DN" as amn_peer_identity.subject shows
   *  it, or "san:NAME", a DNS or IP subjectAltName; copied by
   *  amn_server_new, AMN_EINVAL for a malformed one or in insecure mode),
   *  the server takes the client certificate from the request header
   *  forwarded_cert_header (default "x-client-cert"), as URL-escaped PEM
   *  (nginx $ssl_client_escaped_cert) or base64 DER (HAProxy
   *  %[ssl_c_der,base64]); verifies it against the server's CA exactly as
   *  a client certificate in a handshake (chain, dates, clientAuth), and
   *  makes it the call's identity: amn_call_peer returns the client's
   *  identity with `via` pointing at the proxy's. A certificate that cannot
   *  be decoded or is refused ends the call with UNAUTHENTICATED
   *  "forwarded client certificate (x-client-cert header) ...: REASON"
   *  before any handler runs. A call from a trusted proxy without the
   *  header (or with an empty one: the proxy's client sent no certificate)
   *  gets an identity with verified false and `via` set. From any other
   *  peer the header is ignored (logged at debug level): the call's
   *  identity stays the peer's own, so a client connecting directly cannot
   *  claim another identity. The proxy must replace or remove the header
   *  its clients send (see README, "Behind a load balancer"). */
  const char *const *trusted_proxies;
  size_t trusted_proxy_count;
  const char *forwarded_cert_header; /**< lower-case header name; NULL = "x-client-cert" */
  /** Signed queries and signed results (docs/SIGNATURES.md; config
   *  [auth]). require_client_signature: every QueryRequest of Execute and
   *  ExecuteStream (each message of a stream) must carry a client_signature
   *  made with the key of the certificate the client presented
   *  (amn_call_peer's cert_der), at most signature_window_ms away from the
   *  server's clock, with a nonce not seen within the window; otherwise the
   *  call ends with UNAUTHENTICATED and the reason ("client signature
   *  missing", "... stale", "... replayed", "... does not verify", ...)
   *  before the handler runs. The nonces are remembered in one table per
   *  server (signature_replay_entries entries, 24 bytes each, allocated
   *  when the server is created, shared by its loops under a lock); when
   *  it has no free slot for a nonce (see docs/SIGNATURES.md for its
   *  sizing) a query is refused with UNAVAILABLE "... replay cache full".
   *  sign_results: every QueryResponse of Execute whose handler supplies
   *  no proof gets a server_proof made with the server's key
   *  (tls.key_path, loaded once by amn_server_new; a TLS reload does not
   *  change it). Defaults (also for 0): false, 30000, 262144, false. */
  bool require_client_signature;
  uint32_t signature_window_ms;
  uint32_t signature_replay_entries;
  bool sign_results;
} amn_server_opts;

/** Fills `o` with the defaults documented above. */
AMN_API void amn_server_opts_init(amn_server_opts *o);

/**
 * Handler of one method, with raw (serialized) messages.
 * All callbacks run on the call's loop thread; any may be NULL.
 * `msg` passed to on_message is owned by the library. For a unary method
 * (client_streaming false) it stays valid until the call is finished, so a
 * handler may hand it to another thread and read it there without copying.
 * For a client-streaming method it is valid only during on_message (a long
 * stream would otherwise pin all its messages): copy what must outlive it.
 */
typedef struct amn_handler {
  /** A complete request message arrived. */
  void (*on_message)(amn_call *call, const uint8_t *msg, size_t len, void *ud);
  /** The client closed its sending side (no more messages). For unary
   *  methods this comes right after the single on_message. */
  void (*on_half_close)(amn_call *call, void *ud);
  /** The call was cancelled (client RST_STREAM, deadline, connection lost,
   *  server stopping). `why` is the status the call ended with. The handler
   *  must still call amn_call_finish. */
  void (*on_cancel)(amn_call *call, amn_status_code why, void *ud);
  /** Sending is possible again after amn_call_send returned AMN_EAGAIN. */
  void (*on_writable)(amn_call *call, void *ud);
  /** true: client-streaming is allowed (more than one request message).
   *  false: unary request; a second message yields INTERNAL. */
  bool client_streaming;
  void *ud;
} amn_handler;

/** A zero-copy view of a decoded amaters.v1.QueryRequest. The pointers point
 *  into the received message: for Execute they live until the call is
 *  finished; for ExecuteStream only during on_query. */
typedef struct amn_query {
  const uint8_t *query_bytes;
  size_t query_len;
  const uint8_t *client_signature;
  size_t signature_len;
  /** true when the server verified client_signature (require_client_signature:
   *  always true, an unverified query never reaches the handler). */
  bool signature_verified;
} amn_query;

/** Execute handler: one request, answer with amn_call_reply_query (any
 *  thread, any time before the deadline) or amn_call_finish with an error. */
typedef void (*amn_execute_fn)(amn_call *call, const amn_query *q, void *ud);

/** ExecuteStream handler. on_query runs per request message; respond with
 *  amn_call_send_query_response; end with amn_call_finish. */
typedef struct amn_stream_handler {
  void (*on_query)(amn_call *call, const amn_query *q, void *ud);
  void (*on_half_close)(amn_call *call, void *ud);
  void (*on_cancel)(amn_call *call, amn_status_code why, void *ud);
  void (*on_writable)(amn_call *call, void *ud);
  void *ud;
} amn_stream_handler;

/**
 * Creates a server (does not bind yet). Validates options, loads and checks
 * certificates. Returns 0, or AMN_EINVAL / AMN_ETLS / AMN_ENOMEM with a
 * reason in err. Not thread-safe with respect to the same server.
 */
AMN_API int amn_server_new(amn_server **out, const amn_server_opts *opts, char *err, size_t errlen);

/** Registers a raw handler for a full method path ("/pkg.Service/Method").
 *  The handler struct is copied. Must be called before amn_server_start.
 *  Returns AMN_EINVAL for a malformed path, AMN_ESTATE if already started. */
AMN_API int amn_server_register(amn_server *s, const char *path, const amn_handler *h);

/** Registers /amaters.v1.AmateRS/Execute. */
AMN_API int amn_server_set_execute(amn_server *s, amn_execute_fn fn, void *ud);
/** Registers /amaters.v1.AmateRS/ExecuteStream. The struct is copied. */
AMN_API int amn_server_set_execute_stream(amn_server *s, const amn_stream_handler *h);
/** Registers the built-in echo handlers for both methods
 *  (result_bytes = query_bytes, server_proof empty). */
AMN_API int amn_server_use_echo(amn_server *s);

/**
 * Binds the listening sockets and starts the event-loop threads. Returns
 * once the server accepts connections, or an error (AMN_EIO with the
 * reason, e.g. address in use). The grpc.health.v1.Health service is always
 * served, reporting SERVING.
 */
AMN_API int amn_server_start(amn_server *s, char *err, size_t errlen);

/**
 * Reloads the certificate chain, key, CA bundle and CRLs (tls.crl_path) from
 * the paths given at amn_server_new (re-read from disk, checked as at start;
 * the CRLs are also re-read by themselves when their files change, see
 * amn_tls_opts.crl_path) and swaps them in
 * atomically: every handshake that starts afterwards uses the new
 * credentials; established connections are not touched. On failure (a
 * missing, unreadable or mismatched file, an expired certificate) the
 * current credentials stay in use, the reason is logged and written to err,
 * and AMN_ETLS / AMN_EIO / AMN_EINVAL is returned. AMN_ESTATE in insecure
 * mode. Thread-safe (not async-signal-safe: call it from a thread that took
 * SIGHUP with sigwait, as amaters-netd does). Every reload keeps the
 * replaced context allocated until amn_server_free (a few KiB).
 */
AMN_API int amn_server_reload_tls(amn_server *s, char *err, size_t errlen);

/**
 * Applies the settings of `o` that can change while the server runs (a
 * configuration reload: amaters-netd's SIGHUP), and only those:
 *  - tls: the certificate chain, key and CA bundle are loaded from o->tls's
 *    paths (which may differ from the current ones) with its allow_tls12,
 *    and swapped in as amn_server_reload_tls does (new handshakes use them);
 *  - access_log; max_recv_message and max_send_message (calls that begin
 *    afterwards; they must still fit the current max_connection_buffer);
 *  - max_connections (checked at each new connection); drain_timeout_ms;
 *  - idle_timeout_ms, keepalive_interval_ms, keepalive_timeout_ms,
 *    handshake_timeout_ms, quic_retry_threshold (connections opened
 *    afterwards; open ones keep theirs).
 * The other fields are ignored: they need a new server (listen, threads,
 * transport, tls.insecure, the buffers, header and stall timeouts, window and
 * stream limits, the QUIC secret, listen fds). Either every setting is applied
 * or, on an error (a TLS file that does not load, an out-of-range value),
 * none, with the reason in err (AMN_EINVAL / AMN_ETLS / AMN_EIO /
 * AMN_ENOMEM). Each setting is one atomic value read without a lock where it
 * is used: a connection or call that begins during the update may see some
 * settings old and some new. Thread-safe with respect to the server's loops;
 * not to a concurrent amn_server_update / amn_server_reload_tls (call both
 * from one thread).
 */
AMN_API int amn_server_update(amn_server *s, const amn_server_opts *o, char *err, size_t errlen);
/* ------------------------------------------------------------------ */
/* Authorization                                                      */
/* ------------------------------------------------------------------ */

/**
 * An authorization policy: an ordered list of rules (amn_authz_rule in
 * common.h) deciding which client identities may call which methods. For a
 * call, the first rule whose method patterns match the method and whose
 * identity patterns match the client's verified certificate decides: allow
 * or deny. When no rule matches, the call is denied ("no rule matched"). A
 * client without a verified certificate (insecure mode) matches no rule.
 * A policy is immutable once built and may be read from any thread.
 */
typedef struct amn_authz_policy amn_authz_policy;

/**
 * Builds a policy from `n` rules (copied: the caller keeps ownership of
 * `rules` and its strings). Every rule needs a name (unique) and at least one
 * method pattern; patterns must be non-empty, without control characters,
 * at most 1024 bytes; methods start with '/' (or are "*"); fingerprints are
 * 64 hex digits (':' separators allowed). At most 4096 rules of at most 1024
 * patterns per list. n = 0 builds a policy that denies every call. Returns
 * 0, AMN_EINVAL with "rule N ('name'): reason" in err, or AMN_ENOMEM.
 */
AMN_API int amn_authz_policy_new(amn_authz_policy **out, const amn_authz_rule *rules, size_t n, char *err,
                                 size_t errlen);
/** Frees a policy (NULL: no-op). Never free one a server still holds. */
AMN_API void amn_authz_policy_free(amn_authz_policy *p);
/** Number of rules of `p` (0 for NULL). */
AMN_API size_t amn_authz_policy_rule_count(const amn_authz_policy *p);

/**
 * Evaluates the policy for a call of `method` by `peer`: true = allowed.
 * *rule (may be NULL) gets the name of the deciding rule (owned by the
 * policy), or NULL when no rule matched (then false). Pure: no I/O, no
 * logging, no allocation; thread-safe. A NULL policy or method: false.
 */
AMN_API bool amn_authz_check(const amn_authz_policy *p, const char *method, const amn_peer_identity *peer,
                             const char **rule);

/**
 * Installs `policy` on the server (which takes ownership of it), or removes
 * the current one with NULL (then any client certificate the CA issued may
 * call any method, the behaviour without a policy). May be called before or
 * after amn_server_start, from any thread (e.g. on SIGHUP): calls whose
 * headers complete afterwards are judged by the new policy, calls already
 * running are not touched. The swap is atomic; calls read the policy
 * without a lock; a replaced policy stays allocated until amn_server_free
 * (a reader may still hold it). The policy is evaluated once per call on
 * the call's loop thread, after the method was found and before its
 * handler runs, with amn_call_peer's identity. A denied call ends with
 * PERMISSION_DENIED "denied by rule 'NAME'" or "no rule matched", logged at
 * info level ("call M from ADDR (peer SUBJECT) denied: ..."), and counted
 * in the metrics as any call that ended with that status. Returns 0, or
 * AMN_EINVAL (s NULL; the policy is then freed), AMN_ENOMEM (the policy is
 * freed, the previous one stays).
 */
AMN_API int amn_server_set_authz_policy(amn_server *s, amn_authz_policy *policy);

/**
 * The application's authorization decision for a call, asked after the
 * policy (if any) allowed it and before the handler runs, on the call's
 * loop thread: it must not block, and must not finish the call. The call's
 * method, peer (amn_call_peer), address and metadata may be read. Return
 * AMN_STATUS_OK to let the call run, or another status (typically
 * AMN_STATUS_PERMISSION_DENIED) to end it with that status and `msg` (a
 * NUL-terminated message of at most `msglen` bytes written by the callback;
 * left empty: "denied by the application"); the refusal is logged at info
 * level.
 */
typedef amn_status_code (*amn_authorize_fn)(const amn_call *call, char *msg, size_t msglen, void *ud);

/**
 * Sets (or with fn NULL removes) the application's authorization callback.
 * Must be called before amn_server_start (AMN_ESTATE afterwards);
 * AMN_EINVAL if s is NULL. `ud` is passed to every invocation; the
 * application keeps it alive until amn_server_free.
 */
AMN_API int amn_server_set_authorize(amn_server *s, amn_authorize_fn fn, void *ud);

/** A server's counters, both transports (amn_server_get_stats). Totals
 *  count since amn_server_start; "now" values are a snapshot. */
typedef struct amn_server_stats {
  uint32_t connections;          /**< open now, both transports (HTTP/3 ones closing included) */
  uint64_t connections_refused;  /**< refused for max_connections */
  uint64_t buffered_bytes;       /**< bytes calls hold now (max_server_buffer's count: per call,
                                      in whole 64 KiB units) */
  uint64_t buffer_refusals;      /**< calls ended with RESOURCE_EXHAUSTED for a buffer bound */
  /** HTTP/3 (all zero without it). */
  struct {
    uint64_t connections;        /**< QUIC connections created */
    uint64_t handshakes;         /**< ... that completed the handshake */
    uint64_t handshake_timeouts;
    uint64_t handshake_failures; /**< connections closed during the handshake, not for time
                                      (refused certificate, TLS or QUIC error, server stop) */
    uint64_t resumed;            /**< handshakes resumed from a session ticket */
    uint64_t early_accepted;     /**< 0-RTT accepted */
    uint64_t early_rejected;     /**< 0-RTT offered and refused (replay, stale ticket, too late) */
    uint64_t replays_detected;   /**< ClientHellos seen twice by the anti-replay table */
    uint64_t early_calls;        /**< calls whose request came as 0-RTT data */
    uint64_t retries_sent;       /**< Retry packets (address validation) */
    uint64_t retry_tokens_ok;    /**< Initial packets with a valid Retry token */
    uint64_t new_tokens_ok;      /**< Initial packets with a valid NEW_TOKEN token */
    uint64_t tokens_bad;         /**< invalid or expired tokens */
    uint64_t stateless_resets;   /**< sent for packets of unknown connections */
    uint64_t stateless_resets_limited; /**< not sent: over the rate limit (per event loop, at most 100
                                            per 100 ms: a flood of such packets gets few answers) */
    uint64_t version_negotiations; /**< sent for unsupported QUIC versions */
    uint64_t path_validations;   /**< successful validations of a new client address */
    uint64_t key_updates;        /**< 1-RTT key generations installed after the first */
    uint64_t datagrams_received; /**< UDP datagrams read, all loops */
    uint64_t datagrams_coalesced; /**< ... of them that came several per receive (UDP GRO: the
                                       kernel handed a sender's batch over at once; 0 without GRO) */
    uint32_t closing;            /**< connections in their closing or draining period now */
    uint32_t handshaking;        /**< handshakes in progress now */
  } quic;
  /* Calls, both transports (amn_server_get_metrics has them by method,
   * transport and status). */
  uint64_t calls_started;        /**< requests whose method was known (or that ended without one) */
  uint64_t calls_finished;       /**< ... whose stream has ended, with any status */
  uint64_t calls_ok;             /**< ... of those, with status OK */
  uint64_t bytes_in;             /**< request bytes of the calls (gRPC message framing included) */
  uint64_t bytes_out;            /**< response bytes handed to the transports */
  bool draining;                 /**< a stop was requested: the server drains */
} amn_server_stats;

/**
 * Fills `out` with the server's counters. Thread-safe, cheap (atomic reads;
 * HTTP/3 counters are summed over the loops). Before amn_server_start
 * everything is zero. Returns 0, or AMN_EINVAL when an argument is NULL.
 */
AMN_API int amn_server_get_stats(amn_server *s, amn_server_stats *out);

/* ------------------------------------------------------------------ */
/* Metrics: counters by method, transport and status, histograms       */
/* ------------------------------------------------------------------ */

#define AMN_HIST_MAX_BOUNDS 16

/** A histogram as Prometheus exposes one: cumulative buckets. */
typedef struct amn_histogram {
  size_t nbounds;                             /**< finite upper bounds used in `bounds` */
  double bounds[AMN_HIST_MAX_BOUNDS];         /**< ascending upper bounds (seconds or bytes) */
  uint64_t buckets[AMN_HIST_MAX_BOUNDS + 1];  /**< observations <= bounds[i]; buckets[nbounds] (+Inf) = count */
  double sum;                                 /**< sum of the observations */
  uint64_t count;                             /**< number of observations */
} amn_histogram;

/** One method on one transport. */
typedef struct amn_method_metrics {
  const char *method;            /**< "/pkg.Service/Method", or "unknown" (unregistered paths, requests
                                      refused before their method was known): valid until
                                      amn_server_metrics_free */
  amn_transport transport;       /**< AMN_TRANSPORT_H2 or AMN_TRANSPORT_H3 */
  uint64_t started;              /**< calls started (as amn_server_stats.calls_started) */
  uint64_t finished[17];         /**< calls ended, by gRPC status (index = amn_status_code); a call
                                      that ended without its status sent (reset, connection lost,
                                      server stopped) counts under the status the handler heard */
  uint64_t bytes_in, bytes_out;  /**< request and response bytes of the ended calls */
  amn_histogram duration;        /**< seconds from the request's first bytes to the stream's end */
  amn_histogram request_size;    /**< bytes per request message */
  amn_histogram response_size;   /**< bytes per response message */
} amn_method_metrics;

/** One transport's connections and flow control. */
typedef struct amn_transport_metrics {
  amn_transport transport;       /**< AMN_TRANSPORT_H2 or AMN_TRANSPORT_H3 */
  uint32_t handshaking;          /**< connections in their handshake now */
  uint32_t open;                 /**< connections past it now (HTTP/3: not closing) */
  uint32_t closing;              /**< HTTP/3: in their closing or draining period now */
  uint64_t opened;               /**< connections accepted (HTTP/3: QUIC connections created) */
  uint64_t handshakes;           /**< handshakes completed */
  uint64_t handshake_failures;   /**< connections closed during the handshake (not for time) */
  uint64_t handshake_timeouts;   /**< connections closed for handshake_timeout_ms */
  uint64_t recv_stalls;          /**< a call's received bytes waited for room in the connection's
                                      buffer (its flow-control window was held back) */
  uint64_t send_waits;           /**< handlers told on_writable after amn_call_send said AMN_EAGAIN */
  uint64_t stall_timeouts;       /**< calls ended for stall_timeout_ms */
} amn_transport_metrics;

/** Everything amn_server_get_metrics reports. */
typedef struct amn_server_metrics {
  amn_server_stats stats;              /**< as amn_server_get_stats */
  amn_transport_metrics transports[2]; /**< [0] HTTP/2, [1] HTTP/3 */
  amn_histogram quic_rtt;              /**< HTTP/3: smoothed RTT (seconds) of each connection that had an
                                            RTT sample, taken when it ended */
  double quic_min_rtt_sum;             /**< the same connections' minimum RTT, summed (seconds) */
  size_t nmethods;                     /**< entries in methods */
  amn_method_metrics *methods;         /**< every registered method and "unknown", on each transport the
                                            server serves */
} amn_server_metrics;

/**
 * Takes a snapshot of the server's counters into a new object (free it with
 * amn_server_metrics_free). Thread-safe; costs a pass over every loop's
 * counters (relaxed reads: counters of different calls may be a few events
 * apart). Before amn_server_start the counters are zero. Returns 0,
 * AMN_EINVAL, or AMN_ENOMEM.
 */
AMN_API int amn_server_get_metrics(amn_server *s, amn_server_metrics **out);
/** Frees a snapshot of amn_server_get_metrics (NULL is fine). */
AMN_API void amn_server_metrics_free(amn_server_metrics *m);

/**
 * Writes `m` as Prometheus text exposition (format version 0.0.4, the
 * content type "text/plain; version=0.0.4; charset=utf-8") into buf, like
 * snprintf: at most cap - 1 characters and a NUL (when cap > 0). Returns
 * the length of the whole text: when it is >= cap the text was cut, and a
 * buffer of the returned length + 1 holds it. Every metric is named
 * amn_server_*; the names, labels and meanings are listed in the README
 * ("Metrics"). Thread-safe (reads only `m`).
 */
AMN_API size_t amn_metrics_render(const amn_server_metrics *m, char *buf, size_t cap);

/**
 * amn_server_get_metrics and amn_metrics_render in one: the server's
 * metrics text into buf (same return value as amn_metrics_render), or 0
 * when the snapshot could not be taken (out of memory; s NULL).
 */
AMN_API size_t amn_server_metrics_text(amn_server *s, char *buf, size_t cap);

/** Connections refused since start because max_connections was reached
 *  (HTTP/2: each got TLS, then GOAWAY "max_connections reached"; HTTP/3:
 *  its first packet got CONNECTION_CLOSE CONNECTION_REFUSED with the reason
 *  "max_connections reached"). Thread-safe. */
AMN_API uint64_t amn_server_refused_connections(const amn_server *s);

/* ------------------------------------------------------------------ */
/* Admin listener: /metrics and /healthz over plain HTTP/1.1           */
/* ------------------------------------------------------------------ */

typedef struct amn_admin amn_admin;

/**
 * Starts an admin listener for `s` on `bind_address` ("host:port"; port 0
 * = any): a thread of its own serving plain HTTP/1.1, one request per
 * connection, never on the gRPC port. GET (or HEAD) /metrics answers the
 * server's metrics in Prometheus text format 0.0.4
 * (amn_server_metrics_text); GET /healthz answers 200 "ok", or 503
 * "draining" once a stop was requested; other paths 404, other methods
 * 405. No TLS and no authentication: bind it to loopback (or a private
 * interface) and let the scraper reach it there. A client that sends no
 * complete request within 2 s is cut off. Returns 0, AMN_EINVAL (bad
 * address), AMN_EIO (cannot listen: the reason in err) or AMN_ENOMEM. The
 * server must outlive the listener: amn_admin_stop before amn_server_free.
 */
AMN_API int amn_admin_start(amn_admin **out, amn_server *s, const char *bind_address, char *err, size_t errlen);
/** The port the admin listener bound (useful with port 0). */
AMN_API uint16_t amn_admin_port(const amn_admin *a);
/** Stops the listener (waits for a request being served) and frees it. */
AMN_API void amn_admin_stop(amn_admin *a);

/** The TCP port actually bound (useful with port 0). 0 before start. */
AMN_API uint16_t amn_server_port(const amn_server *s);

/** Sets the health status reported for `service` ("" = whole server).
 *  Thread-safe. Watchers are notified. */
AMN_API void amn_server_set_health(amn_server *s, const char *service, bool serving);

/**
 * Graceful stop: health turns NOT_SERVING, listeners close, every connection
 * gets GOAWAY, in-flight calls may finish until drain_timeout_ms, then the
 * remaining calls are cancelled and connections close. Blocks until all
 * loop threads have exited. Thread-safe; calling it twice is harmless.
 * Safe to call from a signal-handling thread, not from a signal handler.
 */
AMN_API void amn_server_stop(amn_server *s);

/** Asks the server to stop without waiting (async-signal-safe). A later
 *  amn_server_wait() returns when stopped. */
AMN_API void amn_server_request_stop(amn_server *s);
/** Blocks until the server has stopped (after amn_server_request_stop or
 *  amn_server_stop from another thread). */
AMN_API void amn_server_wait(amn_server *s);

/** Stops (if needed) and frees the server. All calls must be finished. */
AMN_API void amn_server_free(amn_server *s);

/* ------------------------------------------------------------------ */
/* Calls (server side)                                                */
/* ------------------------------------------------------------------ */

/** Full method path of the call ("/amaters.v1.AmateRS/Execute"). */
AMN_API const char *amn_call_method(const amn_call *c);
/** Verified identity of the client certificate (verified=false under
 *  --insecure). Behind a trusted proxy (amn_server_opts.trusted_proxies)
 *  the identity of the certificate the proxy forwarded, with `via` set to
 *  the proxy's; set once, before the handler sees the call. Valid until the
 *  call is finished. */
AMN_API const amn_peer_identity *amn_call_peer(const amn_call *c);
/** Remote address as text ("127.0.0.1:53122"). */
AMN_API const char *amn_call_peer_addr(const amn_call *c);
/** true when the call's latest QueryRequest carried a client signature the
 *  server verified (amn_server_opts.require_client_signature). */
AMN_API bool amn_call_signature_verified(const amn_call *c);
/** Request metadata (custom headers; "-bin" values decoded). Valid until
 *  finish. Reserved headers (":path", "te", "grpc-*", ...) are excluded. */
AMN_API const amn_metadata *amn_call_metadata(const amn_call *c);
/** Milliseconds left until the client's deadline; -1 when none was set;
 *  0 when already expired. Thread-safe. */
AMN_API int64_t amn_call_deadline_remaining_ms(const amn_call *c);
/** true once the call was cancelled (for polling from worker threads). */
AMN_API bool amn_call_is_cancelled(const amn_call *c);
/** A pointer the handler may attach to the call (e.g. its per-call state);
 *  NULL initially. Not synchronised: set and read it from one thread at a
 *  time (typically the loop thread in callbacks). */
AMN_API void amn_call_set_user_data(amn_call *c, void *p);
AMN_API void *amn_call_get_user_data(const amn_call *c);
/** true when the request arrived as TLS 1.3 / QUIC early data (0-RTT,
 *  HTTP/3 only). The server refuses replayed early data (anti-replay) and
 *  our client sends only calls marked idempotent early, but other clients
 *  may send anything: a handler whose effect must not happen twice should
 *  refuse early requests (e.g. UNAVAILABLE; the client retries). The peer
 *  identity is the verified one of the resumed session. */
AMN_API bool amn_call_is_early_data(const amn_call *c);

/** Adds response-header metadata. Only before the first message is sent.
 *  Returns AMN_ESTATE if headers were already sent. Any thread. */
AMN_API int amn_call_add_initial_metadata(amn_call *c, const char *key, const uint8_t *value, size_t len);
/** Adds trailing metadata sent with the status. Any thread, before finish. */
AMN_API int amn_call_add_trailing_metadata(amn_call *c, const char *key, const uint8_t *value, size_t len);

/**
 * Queues one response message (raw serialized bytes; copied once into the
 * outgoing frame buffer). Any thread; never blocks.
 * Returns 0; AMN_EAGAIN when the call's queued bytes exceed
 * stream_send_buffer (nothing was queued: retry after on_writable);
 * AMN_ECLOSED if the call is cancelled or finished; AMN_ETOOBIG if larger
 * than max_send_message; AMN_ENOMEM when out of memory (nothing was queued:
 * the call goes on, so a handler that cannot answer must finish it, e.g.
 * with RESOURCE_EXHAUSTED, rather than end it OK without the message).
 */
AMN_API int amn_call_send(amn_call *c, const uint8_t *msg, size_t len);

/**
 * Receive-side backpressure. amn_call_pause_recv stops delivering request
 * messages to on_message (on_query): messages that arrive meanwhile are
 * held, and the client is granted no more flow-control window, so it can
 * send at most one window (initial_window_size) more before it must wait.
 * amn_call_resume_recv delivers the held messages (in order, unless the
 * handler pauses again) and re-opens the window. The usual pattern: pause
 * when amn_call_send returns AMN_EAGAIN, resume in on_writable.
 * pause: loop thread only (from a handler callback). resume: any thread.
 * Both are no-ops on a finished or cancelled call.
 */
AMN_API void amn_call_pause_recv(amn_call *c);
AMN_API void amn_call_resume_recv(amn_call *c);

/** Encodes and queues a QueryResponse (result_bytes, server_proof). Same
 *  return values as amn_call_send. */
AMN_API int amn_call_send_query_response(amn_call *c, const uint8_t *result, size_t result_len,
                                 const uint8_t *proof, size_t proof_len);

/**
 * Ends the call with a status (message may be NULL) after all queued
 * messages. Releases the application's hold on the call: do not use `c`
 * afterwards. Any thread. Returns 0, or AMN_ECLOSED if the call had been
 * cancelled (nothing sent; the call is released all the same).
 */
AMN_API int amn_call_finish(amn_call *c, amn_status_code code, const char *message);

/** amn_call_send_query_response + amn_call_finish(OK): the usual answer of
 *  an Execute handler. The response is never refused for backpressure. */
AMN_API int amn_call_reply_query(amn_call *c, const uint8_t *result, size_t result_len,
                         const uint8_t *proof, size_t proof_len);

#ifdef __cplusplus
}
#endif
#endif
