/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: client structures shared by the client core (client.c: API,
 * I/O thread; call.c: calls) and the pool (pool.c). Included by src/client/
 * only (and the client's tests);
 * the transports see the client through transport/ctransport.h.
 */
#ifndef AMN_CLIENT_INTERNAL_H
#define AMN_CLIENT_INTERNAL_H

#include <ev.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "amn/client.h"
#include "client/resolve.h"
#include "rpc/msgq.h"
#include "rpc/rpc.h"
#include "tls/tls.h"
#include "transport/ctransport.h"
#include "transport/h2/h2_client.h"
#include "transport/h2/h2io.h"
#include "transport/h3/h3_client.h"
#include "util/addr.h"
#include "util/mpsc.h"

typedef struct amn_client_call amn_client_call;
typedef struct amn_pool_endpoint amn_pool_endpoint;
typedef struct amn_pool_slot amn_pool_slot;
typedef struct amn_pool_target amn_pool_target;

/* The pool as the call core sees it (set by amn_pool_init): the call core
 * (call.c) is below the pool and knows it only through these. */
typedef struct amn_pool_hooks {
  void (*detach)(amn_client_call *c, amn_status_code code); /* the attempt ended: release its slot */
  void (*mark)(amn_client *cl); /* something changed: maintain soon (any I/O-thread context) */
} amn_pool_hooks;

/* Cross-thread operations handed to the I/O thread (amn_loop_op.kind). */
enum { AMN_COP_START = 1, AMN_COP_SEND, AMN_COP_HALF_CLOSE, AMN_COP_CANCEL, AMN_COP_CONNECT };

enum { AMN_CK_UNARY_ASYNC = 1, AMN_CK_UNARY_BLOCKING, AMN_CK_STREAM };

struct amn_client_call {
  amn_loop_op start_op, half_close_op, cancel_op;
  atomic_int refs;          /* I/O side + application side */
  atomic_bool cancel_requested, half_close_requested, closed_flag;
  atomic_size_t queued;
  atomic_bool want_writable;
  amn_client *cl;
  int kind;
  amn_ct_call t;            /* what the transport sees: method, metadata (owned: the strings in md_blob), timeout */
  char *md_blob;
  bool probe;                      /* the pool's health check of a connection: never retried */
  /* pool and retries (I/O thread) */
  const amn_ctransport *tp;        /* transport of the current (or last) attempt; NULL before the first */
  amn_pool_slot *slot;             /* pooled connection of the current attempt */
  amn_pool_endpoint *ep;           /* endpoint of the current attempt (statistics) */
  int attempts;                    /* times the call was started on a connection */
  bool pulled_any;                 /* request bytes were handed to the transport */
  amn_qmsg *replay;                /* unary: the sent request, kept for a retry */

  /* I/O thread state */
  void *stream;                    /* the transport's stream carrying the call (holds a reference), or NULL */
  struct amn_client_call *prev, *next; /* pending list */
  amn_msgq sq;                     /* request messages not yet pulled by the transport */
  bool half_close_queued;          /* END_STREAM after the queue */
  bool done;
  ev_timer deadline;
  bool deadline_armed;
  amn_rpc_resp resp;
  amn_deframer df;
  bool got_headers;
  bool want_peer_cert;             /* keep the server's certificate (verify_proofs) */
  uint8_t *peer_der;               /* ... the DER leaf of the connection that answered */
  size_t peer_der_len;
  uint32_t nmsgs;
  amn_result res;

  /* completion */
  amn_unary_cb cb;
  void *ud;
  amn_cstream_cbs scbs;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool finished;            /* blocking waiter: result ready */
};

struct amn_client {
  amn_client_opts o;
  struct amn_signer *signer;    /* sign.c: the client's key (sign_queries), or NULL */
  char *url_s, *cert_s, *key_s, *ca_s, *sni_s, *dns_s, *crl_s;
  char host[256];
  char authority[300];
  uint16_t port;
  bool tls_on;
  amn_tls_ctx *tls;             /* HTTP/2 (ALPN h2); NULL in insecure mode or HTTP/3 only */
  amn_tls_ctx *tls_h3;          /* HTTP/3 (ALPN h3); NULL unless the transport may be HTTP/3 */
  pthread_t thread;
  bool no_thread;               /* test builds: the loop runs on the test's thread (amn_client_test_no_thread) */
  struct ev_loop *ev;
  amn_ioloop io;
  ev_async wake;
  amn_mpsc ops;
  atomic_bool stopping;
  bool local_ops;               /* ops pushed from the I/O thread itself (drained before blocking) */
  const amn_ctransport *tp;     /* the transport (h2 or h3); NULL: auto (per endpoint, raced) */
  amn_ct_client ct;             /* what the transports see (loop, TLS, timeouts, keepalive, callbacks) */
  const amn_pool_hooks *pool;   /* the pool's hooks for the call core */
  amn_client_call *pending;     /* calls waiting for a ready connection */
  /* amn_client_connect waiters */
  pthread_mutex_t cmu;
  pthread_cond_t ccv;
  int connect_gen;              /* bumps when a connection attempt ends */
  int connect_rc;
  char connect_err[600];
  /* pool (pool.c) */
  amn_pool_endpoint *eps;       /* (entries are never moved nor reused: calls and slots point to them) */
  size_t neps;
  amn_pool_target *tgts;        /* the URLs whose host is a name (resolve.c) */
  size_t ntgts;
  amn_resolver *res;            /* NULL until amn_pool_start, or without names */
  bool pool_active;             /* first call or connect seen: keep pool_min_connections */
  bool pool_dirty;              /* run amn_pool_maintain before the loop blocks */
  ev_idle pool_idle;            /* ... even when that is found out while flushing */
  unsigned rr;                  /* round-robin cursor */
  bool probe_failed;            /* a connection's health check failed: maintain closes it */
  uint64_t rng;                 /* xorshift state (p2c, jitter) */
  ev_timer pool_timer;          /* idle reaping */
  double retry_tokens;          /* retry throttling (grpc retryThrottling: 10 tokens, +0.1 per success) */
  pthread_mutex_t stats_mu;     /* endpoint counters read by amn_client_stats */
  uint64_t retries;             /* calls re-sent (transparent or idempotent) */
  double (*now)(amn_client *);  /* the pool's clock in seconds; NULL: the loop's (a fake one in unit tests) */
};

/* A URL whose host is a name: looked up off the I/O thread (c-ares on the
 * loop), again when the answer's TTL runs out (within dns_refresh_min_ms
 * and dns_refresh_max_ms) and after a connection failure. With
 * spread_addresses each address is an endpoint of its own (added and
 * removed as the answers change); without, the URL is one endpoint that
 * connects to the answer's addresses in turn. I/O thread only. */
struct amn_pool_target {
  amn_client *cl;
  const char *url;              /* the endpoints' (or the first one's) URL as given */
  char *url_own;
  char host[256];               /* the name */
  char authority[300];
  uint16_t port;
  bool resolving;               /* a lookup in flight */
  uint32_t fails;               /* lookups failed in a row */
  double last_start;            /* when the last lookup started (pool clock; < 0: never) */
  ev_timer refresh;
  char addrs[AMN_RESOLVE_MAX_ADDRS][INET6_ADDRSTRLEN]; /* the last good answer */
  size_t naddrs;
  char error[300];              /* "cannot resolve NAME: reason" of the last failed lookup, or "" */
  amn_pool_endpoint *one;       /* without spread_addresses: the URL's endpoint */
};

/* One server URL of the pool (I/O thread; counters also under stats_mu). */
struct amn_pool_endpoint {
  amn_client *cl;
  char *url;
  amn_pool_target *tgt;         /* its name, or NULL (an address in the URL) */
  bool removed;                 /* spread_addresses: its address left the answer: drains, takes no call */
  size_t acur, atried;          /* without spread_addresses: the address of tgt in use, tried in a row */
  amn_ct_endpoint t;            /* what the transports see: host, port, sni, authority, their state */
  amn_pool_slot *slots;
  amn_pool_slot *cursor;        /* where best_slot's bounded scan resumes */
  uint32_t nready, nconnecting, ndraining, inflight;
  bool ejected;                 /* failing: no new connection before the backoff ends */
  uint32_t fails;               /* consecutive connection failures */
  ev_timer retry;               /* end of the backoff */
  ev_tstamp retry_at;
  double last_open;             /* when the last connection attempt to it started (pool clock) */
  /* transport: fixed, or (auto) the one that won the last race, kept until
   * a connection attempt over it fails; NULL: race HTTP/3 against HTTP/2 */
  const amn_ctransport *tp;
  bool racing;                  /* auto: an HTTP/3 attempt has a head start on HTTP/2 */
  bool race_h2;                 /* ... and HTTP/2 joined this race */
  ev_timer race;                /* auto: end of HTTP/3's head start */
  uint64_t calls_started, calls_ok, calls_failed, connects, connect_failures;
  char last_error[200];
};

enum { AMN_SLOT_CONNECTING = 1, AMN_SLOT_READY, AMN_SLOT_DRAINING };
/* One pooled connection: the pool's handle on a transport connection. */
struct amn_pool_slot {
  amn_pool_endpoint *ep;
  const amn_ctransport *tp;     /* its transport */
  void *conn;                   /* the transport's connection (set by open) */
  int st;
  bool unconfirmed;             /* ready for 0-RTT calls, handshake not complete yet (h3) */
  bool probing;                 /* health check in flight: takes no call yet (health_check) */
  bool probe_failed;            /* ... and it failed: maintain closes the slot */
  char probe_why[160];
  uint32_t inflight;
  uint32_t calls;               /* calls given to it (max_calls_per_connection) */
  ev_tstamp idle_since;
  bool closing;                 /* we asked it to close (idle, shutdown) */
  char addr[INET6_ADDRSTRLEN];  /* the address it connects to (a name's endpoint) */
  amn_pool_slot *next;
};

/* ---- call core (call.c) ---- */
/* A new call (one reference: the application's), NULL when the method is
 * not "/..." or out of memory. */
amn_client_call *amn_client_call_new(amn_client *cl, int kind, const char *method, const amn_call_opts *opts);
amn_qmsg *amn_client_msg_new(amn_client_call *c, const uint8_t *p, size_t n); /* a request message */
/* Unary: the one request message, queued and half-closed. */
int amn_client_call_queue_unary(amn_client_call *c, const uint8_t *req, size_t len);
void amn_client_call_arm_deadline(amn_client_call *c); /* I/O thread: its deadline starts (if it has one) */
void amn_client_call_complete(amn_client_call *c, amn_status_code code, const char *msg);
/* Ends the call with a status, resetting its stream (if it has one) first. */
void amn_client_call_cancel(amn_client_call *c, amn_status_code code, const char *msg);
void amn_client_call_unref(amn_client_call *c);
/* Starts the call on conn, a connection of tp (the pool's choice): the
 * stream takes a reference; on failure the call fails at once (retried
 * elsewhere when that is safe, see amn_client_call_fail). */
void amn_client_call_start(amn_client_call *c, const amn_ctransport *tp, void *conn);
/* A failed attempt of a call no transport holds (c->stream NULL). Retried
 * on another connection when that is safe (unprocessed: the server
 * provably never ran it; or idempotent + UNAVAILABLE within max_retries
 * and the retry budget), else completed with code/msg. */
void amn_client_call_fail(amn_client_call *c, amn_status_code code, const char *msg, bool unprocessed);
extern const amn_ct_call_cbs amn_client_call_cbs; /* the transports' view of the calls (cl->ct.call_cbs) */
void amn_client_pending_push(amn_client *cl, amn_client_call *c, bool front); /* takes a reference */
amn_client_call *amn_client_pending_pop(amn_client *cl);
void amn_client_pending_unlink(amn_client *cl, amn_client_call *c); /* (keeps the list's reference) */
void amn_client_fail_pending(amn_client *cl, amn_status_code code, const char *msg);
/* I/O thread: a grpc.health.v1 Check ("" = the server) of the pool, ready
 * to be started on a given connection (amn_client_call_start); `cb` runs
 * once, with the call's result. Never retried. NULL when out of memory. */
amn_client_call *amn_client_call_probe_new(amn_client *cl, uint32_t timeout_ms, amn_unary_cb cb, void *ud);
/* A Health/Check result: 1 SERVING, 0 another status or the call failed,
 * -1 a malformed HealthCheckResponse. */
int amn_health_serving(const amn_result *r);

/* ---- pool (pool.c) ---- */
/* Also sets cl->ct.conn_cbs (the transports report their connections'
 * events to the pool's slots) and cl->pool. */
int amn_pool_init(amn_client *cl, const char *const *urls, size_t n, char *err, size_t errlen);
void amn_pool_free(amn_client *cl);
/* The loop exists: the names' first lookups start (0, or AMN_EINVAL with
 * a bad dns_servers). amn_pool_stop_dns ends them (before the loop goes). */
int amn_pool_start(amn_client *cl, char *err, size_t errlen);
void amn_pool_stop_dns(amn_client *cl);
/* The end of a lookup of t (the resolver's callback; unit tests call it
 * with answers of their own). */
void amn_pool_dns_answer(void *t, const amn_resolve_answer *ans, const char *why);
void amn_pool_kick(amn_client *cl, bool force);  /* new work: maintain now (force: connect even if ejected) */
void amn_pool_maintain(amn_client *cl);          /* dispatch pending calls, open/close connections */
void amn_pool_mark(amn_client *cl);              /* something changed: maintain soon (any I/O-thread context) */
void amn_pool_connect(amn_client *cl);           /* amn_client_connect: connect every endpoint */
void amn_pool_close_all(amn_client *cl, const char *why);
void amn_client_notify_connect(amn_client *cl, int rc, const char *err); /* amn_client_connect waiters */
/* "https://host[:port]" or "http://...": the parts, or an error. */
int amn_client_parse_url(const char *url, bool *tls_on, char *host, size_t hcap, uint16_t *port, char *authority,
                         size_t acap, char *err, size_t errlen);

/* ---- signed queries and results (sign.c) ---- */
int amn_csig_init(amn_client *cl, char *err, size_t errlen);
void amn_csig_free(amn_client *cl);
/* An encoded QueryRequest for `method`: the given signature, or when there
 * is none and the client signs, its own. NULL with *rc on failure. */
uint8_t *amn_csig_request(amn_client *cl, const char *method, const uint8_t *q, size_t ql, const uint8_t *sig,
                          size_t sl, size_t *out_len, int *rc);
/* A stream message re-encoded with the client's signature (ExecuteStream,
 * a QueryRequest without one, a client that signs); NULL: send it as it is
 * (*rc 0), or a failure (*rc). */
uint8_t *amn_csig_stream_msg(amn_client *cl, const char *method, const uint8_t *msg, size_t len, size_t *out_len,
                             int *rc);
/* NULL when `proof` is the server's valid proof of (method, query, result)
 * under the certificate `der`; else the reason. */
const char *amn_csig_check_proof(const uint8_t *der, size_t der_len, const char *method, const uint8_t *q, size_t ql,
                                 const uint8_t *res, size_t rl, const uint8_t *proof, size_t pl);

#endif
