/*
 * Internal: client structures shared by the client core (API, calls, I/O
 * thread), the pool and the transports (h2, h3).
 */
#ifndef AMN_CLIENT_INTERNAL_H
#define AMN_CLIENT_INTERNAL_H

#include <ev.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "amn/client.h"
#include "rpc/msgq.h"
#include "rpc/rpc.h"
#include "tls/tls.h"
#include "transport/h2/h2io.h"
#include "util/addr.h"
#include "util/mpsc.h"

typedef struct amn_cconn amn_cconn;
typedef struct amn_ccall amn_ccall;
typedef struct amn_cendpoint amn_cendpoint;
typedef struct amn_cslot amn_cslot;

/* Cross-thread operations handed to the I/O thread (amn_loop_op.kind). */
enum { AMN_COP_START = 1, AMN_COP_SEND, AMN_COP_HALF_CLOSE, AMN_COP_CANCEL, AMN_COP_CONNECT };

enum { AMN_CK_UNARY_ASYNC = 1, AMN_CK_UNARY_BLOCKING, AMN_CK_STREAM };

struct amn_ccall {
  amn_loop_op start_op, half_close_op, cancel_op;
  atomic_int refs;          /* I/O side + application side */
  atomic_bool cancel_requested, half_close_requested, closed_flag;
  atomic_size_t queued;
  atomic_bool want_writable;
  amn_client *cl;
  int kind;
  char *method;
  amn_md *md;               /* request metadata copy */
  size_t md_n;
  char *md_blob;
  int64_t timeout_ns;
  bool idempotent;
  bool probe;                      /* the pool's health check of a connection: never retried */
  /* pool and retries (I/O thread) */
  const struct amn_ctransport *tp; /* transport of the current (or last) attempt; NULL before the first */
  amn_cslot *slot;                 /* pooled connection of the current attempt */
  amn_cendpoint *ep;               /* endpoint of the current attempt (statistics) */
  int attempts;                    /* times the call was started on a connection */
  bool hdr_sent;                   /* request HEADERS went out: the server may have run it */
  bool unprocessed;                /* the server says it never processed the stream (GOAWAY) */
  bool pulled_any;                 /* request bytes were handed to the transport */
  amn_qmsg *replay;                /* unary: the sent request, kept for a retry */

  /* I/O thread state */
  void *conn;                      /* transport connection carrying the stream, or NULL */
  int32_t stream_id;
  struct amn_ccall *prev, *next;   /* pending or live list */
  amn_msgq sq;                     /* request messages not yet pulled by the transport */
  bool half_close_queued;          /* END_STREAM after the queue */
  bool done;
  ev_timer deadline;
  bool deadline_armed;
  amn_rpc_resp resp;
  amn_deframer df;
  bool got_headers;
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
  char *url_s, *cert_s, *key_s, *ca_s, *sni_s;
  char host[256];
  char authority[300];
  uint16_t port;
  bool tls_on;
  amn_tls_ctx *tls;             /* HTTP/2 (ALPN h2); NULL in insecure mode or HTTP/3 only */
  amn_tls_ctx *tls_h3;          /* HTTP/3 (ALPN h3); NULL unless the transport may be HTTP/3 */
  pthread_t thread;
  struct ev_loop *ev;
  amn_ioloop io;
  ev_async wake;
  amn_mpsc ops;
  atomic_bool stopping;
  bool local_ops;               /* ops pushed from the I/O thread itself (drained before blocking) */
  const struct amn_ctransport *tp; /* the transport (h2 or h3); NULL: auto (per endpoint, raced) */
  amn_ccall *pending;           /* calls waiting for a ready connection */
  /* amn_client_connect waiters */
  pthread_mutex_t cmu;
  pthread_cond_t ccv;
  int connect_gen;              /* bumps when a connection attempt ends */
  int connect_rc;
  char connect_err[600];
  /* pool (pool.c) */
  amn_cendpoint *eps;
  size_t neps;
  bool pool_active;             /* first call or connect seen: keep pool_min_connections */
  bool pool_dirty;              /* run amn_pool_maintain before the loop blocks */
  ev_idle pool_idle;            /* ... even when that is found out while flushing */
  unsigned rr;                  /* round-robin cursor */
  bool probe_failed;            /* a connection's health check failed: maintain closes it */
  uint64_t rng;                 /* xorshift state (p2c, jitter) */
  ev_timer pool_timer;          /* idle reaping */
  double retry_tokens;          /* retry throttling (grpc retryThrottling: 10 tokens, +0.1 per success) */
  uint32_t ka_interval_ms;      /* keepalive interval in use (doubled on too_many_pings) */
  pthread_mutex_t stats_mu;     /* endpoint counters read by amn_client_stats */
  uint64_t retries;             /* calls re-sent (transparent or idempotent) */
  void *h3;                     /* [h3] HTTP/3 client state: session ticket, tokens (h3_client.c) */
};

/* One server URL of the pool (I/O thread; counters also under stats_mu). */
struct amn_cendpoint {
  amn_client *cl;
  char *url;
  char host[256];               /* connect to (spread_addresses: one of the name's addresses) */
  char sni[256];                /* the URL's host: TLS server name and certificate check */
  char authority[300];
  uint16_t port;
  amn_cslot *slots;
  amn_cslot *cursor;            /* where best_slot's bounded scan resumes */
  uint32_t nready, nconnecting, ndraining, inflight;
  bool ejected;                 /* failing: no new connection before the backoff ends */
  uint32_t fails;               /* consecutive connection failures */
  ev_timer retry;               /* end of the backoff */
  ev_tstamp retry_at;
  /* transport: fixed, or (auto) the one that won the last race, kept until
   * a connection attempt over it fails; NULL: race HTTP/3 against HTTP/2 */
  const struct amn_ctransport *tp;
  bool racing;                  /* auto: an HTTP/3 attempt has a head start on HTTP/2 */
  bool race_h2;                 /* ... and HTTP/2 joined this race */
  ev_timer race;                /* auto: end of HTTP/3's head start */
  void *h3;                     /* [h3] session ticket, transport parameters, token (h3_client.c) */
  uint64_t calls_started, calls_ok, calls_failed, connects, connect_failures;
  char last_error[200];
};

enum { AMN_SLOT_CONNECTING = 1, AMN_SLOT_READY, AMN_SLOT_DRAINING };
/* One pooled connection: the pool's handle on a transport connection. */
struct amn_cslot {
  amn_cendpoint *ep;
  const struct amn_ctransport *tp; /* its transport */
  void *conn;                   /* the transport's connection (set by open) */
  int st;
  bool unconfirmed;             /* ready for 0-RTT calls, handshake not complete yet (h3) */
  bool probing;                 /* health check in flight: takes no call yet (health_check) */
  bool probe_failed;            /* ... and it failed: maintain closes the slot */
  char probe_why[160];
  uint32_t inflight;
  ev_tstamp idle_since;
  bool closing;                 /* we asked it to close (idle, shutdown) */
  amn_cslot *next;
};

/* ---- client core (client.c) ---- */
void amn_ccall_complete(amn_ccall *c, amn_status_code code, const char *msg);
void amn_ccall_unref(amn_ccall *c);
ssize_t amn_ccall_pull(amn_ccall *c, uint8_t *buf, size_t len, bool *eof);
/* Moves the metadata of the response block just parsed (headers, or the
 * trailers when `trailing`) into the call's result. */
void amn_ccall_take_md(amn_ccall *c, bool trailing);
/* The response stream ended: the final status from what it carried (an
 * idempotent call may be re-sent on UNAVAILABLE, see amn_ccall_fail). */
void amn_ccall_response_ended(amn_ccall *c);
/* What amn_ccall_pull(c, .., len, ..) would return, without copying. */
ssize_t amn_ccall_peek(const amn_ccall *c, size_t len, bool *eof);
void amn_ccall_on_message(amn_ccall *c, uint8_t *msg, size_t len);
/* Response DATA bytes of the call's stream, split anywhere: deframed into
 * messages (amn_ccall_on_message). A bad or oversized message cancels the
 * stream (c->tp->cancel) and completes the call with a status. The body of
 * a non-gRPC response (HTTP status other than 200, or another content-type)
 * is ignored. A completed call ignores further data. */
void amn_ccall_on_data(amn_ccall *c, const uint8_t *data, size_t len);
/* A failed attempt of a call whose transport let go of it (c->conn NULL,
 * no transport callback will touch it again). Retried on another
 * connection when that is safe (unprocessed: the server provably never ran
 * it; or idempotent + UNAVAILABLE within max_retries and the retry
 * budget), else completed with code/msg. */
void amn_ccall_fail(amn_ccall *c, amn_status_code code, const char *msg, bool unprocessed);
void amn_client_notify_connect(amn_client *cl, int rc, const char *err); /* amn_client_connect waiters */
/* Keepalive: how long to wait, after a PING, for something from the server
 * (keepalive_timeout_ms, else the interval, at least 1000 ms). */
uint32_t amn_client_ka_timeout_ms(const amn_client *cl);
void amn_client_pending_push(amn_client *cl, amn_ccall *c, bool front); /* takes a reference */
amn_ccall *amn_client_pending_pop(amn_client *cl);
void amn_client_fail_pending(amn_client *cl, amn_status_code code, const char *msg);
/* I/O thread: a grpc.health.v1 Check ("" = the server) of the pool, ready
 * to be started on a given connection (c->tp->start_call); `cb` runs once,
 * with the call's result. Never retried. NULL when out of memory. */
amn_ccall *amn_ccall_probe_new(amn_client *cl, uint32_t timeout_ms, amn_unary_cb cb, void *ud);
/* A Health/Check result: 1 SERVING, 0 another status or the call failed,
 * -1 a malformed HealthCheckResponse. */
int amn_health_serving(const amn_result *r);

/* ---- pool (pool.c) ---- */
int amn_pool_init(amn_client *cl, const char *const *urls, size_t n, char *err, size_t errlen);
void amn_pool_free(amn_client *cl);
void amn_pool_kick(amn_client *cl, bool force);  /* new work: maintain now (force: connect even if ejected) */
void amn_pool_maintain(amn_client *cl);          /* dispatch pending calls, open/close connections */
void amn_pool_mark(amn_client *cl);              /* something changed: maintain soon (any I/O-thread context) */
void amn_pool_connect(amn_client *cl);           /* amn_client_connect: connect every endpoint */
void amn_pool_close_all(amn_client *cl, const char *why);
void amn_pool_call_detach(amn_ccall *c, amn_status_code code); /* the attempt ended: release its slot */
/* Transport -> pool events for a pooled connection. */
/* The connection takes calls. With s->unconfirmed set (0-RTT), before its
 * handshake is complete: amn_cslot_confirmed follows (or amn_cslot_closed,
 * a failure of the endpoint). */
void amn_cslot_ready(amn_cslot *s);
void amn_cslot_confirmed(amn_cslot *s);
void amn_cslot_goaway(amn_cslot *s, bool error, const char *why);
void amn_cslot_closed(amn_cslot *s, const char *why); /* the slot is freed: do not touch it again */

/* A client transport (all functions run on the client I/O thread). Its
 * connections are pool slots: a connection reports amn_cslot_ready (it
 * takes calls), amn_cslot_goaway, amn_cslot_closed (also when the attempt
 * fails, possibly before open returns); it completes calls with
 * amn_ccall_complete (or amn_ccall_fail when a retry may be safe) and pulls
 * request bytes with amn_ccall_pull. */
typedef struct amn_ctransport {
  const char *name;             /* "HTTP/2", "HTTP/3" */
  amn_transport kind;           /* AMN_TRANSPORT_H2 or _H3 */
  /* Starts a connection to slot->ep and stores it in slot->conn before any
   * event. Keepalive interval: cl->ka_interval_ms. */
  void (*open)(amn_cslot *slot);
  /* Streams the peer lets us have open at once (HTTP/2
   * SETTINGS_MAX_CONCURRENT_STREAMS, QUIC initial_max_streams_bidi). */
  uint32_t (*max_streams)(const void *conn);
  /* Opens the call's stream (takes a reference on success); on failure
   * the call is completed with a status. */
  int (*start_call)(void *conn, amn_ccall *c);
  /* More request data (or the half-close) is queued. */
  void (*resume)(amn_ccall *c);
  /* Cancels the call's stream (h2 RST_STREAM CANCEL, h3 H3_REQUEST_CANCELLED). */
  void (*cancel)(amn_ccall *c);
  /* Closes the connection; its live calls complete with UNAVAILABLE. */
  void (*close)(void *conn, const char *why);
} amn_ctransport;

extern const amn_ctransport amn_h2c_transport; /* transport/h2/h2_client.c */
extern const amn_ctransport amn_h3c_transport; /* transport/h3/h3_client.c */


/* [h3] Releases cl->h3 and the endpoints' HTTP/3 state (I/O thread
 * joined, loop still allocated). NULL-safe. */
void amn_h3c_client_free(amn_client *cl);

#endif
