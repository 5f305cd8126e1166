/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the server side of a transport binding, transport-neutral.
 *
 * A binding (transport/h2/h2_server.c, transport/h3/h3_server.c) knows the
 * server only through this header, the way nghttp2 knows its application
 * only through nghttp2_session_callbacks: the settings and shared counters
 * of the server (amn_st_config), the event loop it serves (amn_st_loop),
 * and the call core as a table of functions (amn_st_calls) over opaque
 * calls. The call core reaches a binding's stream only through the
 * operations the binding gave it (amn_st_stream_ops).
 *
 * Included by the bindings and by server/. Everything here runs on the
 * loop's thread unless said otherwise.
 */
#ifndef AMN_TRANSPORT_STRANSPORT_H
#define AMN_TRANSPORT_STRANSPORT_H

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "amn/common.h"
#include "rpc/msgq.h"
#include "rpc/rpc.h"
#include "tls/tls.h"

typedef struct amn_call amn_call; /* a call of the call core: opaque to a binding */
struct amn_ioloop;                /* transport/h2/h2io.h: the loop's HTTP/2 write batching */

/* What a binding offers the call core for one request stream. */
typedef struct amn_st_stream_ops {
  /* The call has something to send (response headers, messages, the
   * final status): the binding asks amn_st_calls.step what. */
  void (*kick)(void *stream);
  /* The handler has taken n more request bytes: grant the client that much
   * flow-control window again. */
  void (*consume)(void *stream, size_t n);
  amn_transport transport;   /* AMN_TRANSPORT_H2 or AMN_TRANSPORT_H3: the calls' metrics label */
} amn_st_stream_ops;

/* A connection's bound on the bytes its calls hold in memory: request bytes
 * received and not yet released by the handler (partial and held messages,
 * the unary request until the call ends) and responses queued but not yet
 * taken by the binding. One per connection, owned by the binding
 * (amn_st_budget_init), charged by the call core (amn_st_calls.attach).
 * Flow control enforces it first: the window of received bytes is granted
 * back only while `held` is below `grant_below` (the limit minus the
 * connection window the client may still use without a grant), so a client
 * that respects flow control stays under `limit`; a call whose bytes would
 * pass `limit` anyway (responses the client does not read) fails with
 * RESOURCE_EXHAUSTED. Loop thread only. */
typedef struct amn_st_budget {
  size_t held;               /* bytes the connection's calls hold now */
  size_t limit;              /* the hard bound (amn_st_config.conn_buffer_limit) */
  size_t grant_below;        /* window is granted back only while held is below this */
  amn_call *parked;          /* calls whose received bytes wait for room before their window is granted */
} amn_st_budget;

/* The next thing to send on a call's stream (amn_st_calls.step). */
typedef enum amn_st_step {
  AMN_ST_NOTHING = 0,      /* nothing new */
  AMN_ST_HEADERS,          /* response headers, messages follow (pull them) */
  AMN_ST_TRAILERS_ONLY,    /* one header block carrying the final status; nothing follows */
  AMN_ST_MORE_DATA,        /* more messages or the trailers: resume the stream's data source */
} amn_st_step;

/* The call core, as a binding calls it. */
typedef struct amn_st_calls {
  /* A request stream begins. `stream` is the binding's handle that `ops`
   * act on; peer and peer_addr must outlive the call (the connection's).
   * Returns the call, or NULL (out of memory: reset this stream). */
  amn_call *(*begin)(void *loop_ud, const amn_st_stream_ops *ops, void *stream, const amn_peer_identity *peer,
                     const char *peer_addr, bool early_data);
  /* Right after begin: the call's bytes count against this connection's
   * budget (which must outlive the call's stream). Without it, only the
   * server-wide bound applies to the call. */
  void (*attach)(amn_call *c, amn_st_budget *b);
  /* One request header field; then headers_end once the block is complete. */
  void (*header)(amn_call *c, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen);
  void (*headers_end)(amn_call *c);
  /* Request DATA bytes, split anywhere. */
  void (*data)(amn_call *c, const uint8_t *data, size_t len);
  /* The client ended its request (END_STREAM / FIN). */
  void (*remote_close)(amn_call *c);
  /* The stream is gone (reset, connection closed, or done after the final
   * status): the binding forgets the call; `why` is how it ended for the
   * handler. Returns the request bytes that were received but never
   * granted back (held for a paused handler): they still count against
   * the connection's window. */
  size_t (*closed)(amn_call *c, amn_status_code why, const char *msg);
  /* Ends the call with a status from the library (server stopping). */
  void (*fail)(amn_call *c, amn_status_code code, const char *msg);
  /* What to send next; AMN_ST_HEADERS and AMN_ST_TRAILERS_ONLY are
   * answered once, with the block from `headers`. */
  amn_st_step (*step)(amn_call *c);
  int (*headers)(amn_call *c, amn_hdr_buf *b, bool trailers_only);
  /* The trailers, once pull reported eof. */
  int (*trailers)(amn_call *c, amn_hdr_buf *b);
  /* Response bytes (framed messages): how many are ready up to len (-1:
   * none yet, come back after a kick; *eof: the trailers follow them),
   * then the copy. */
  ssize_t (*peek)(amn_call *c, size_t len, bool *eof);
  ssize_t (*pull)(amn_call *c, uint8_t *buf, size_t len, bool *eof);
  /* Response bytes without a copy: the front message itself leaves the
   * call (*m, from its first unsent byte m->data + m->off; the binding
   * frees it with free() once done with it) and the count is returned
   * (-1 and *eof as pull). Its bytes stay charged to the call's memory
   * bounds, and the call waits on the client, until the binding released
   * them: `acked` more bytes reached the client (progress), `freed` bytes
   * of taken messages are gone. */
  ssize_t (*take)(amn_call *c, amn_qmsg **m, bool *eof);
  void (*released)(amn_call *c, size_t acked, size_t freed);
} amn_st_calls;

/* The server's settings and shared counters, the same for every loop. The
 * counters are written by any loop (atomics). */
typedef struct amn_st_config {
  uint32_t max_concurrent_streams;
  uint32_t initial_window_size;
  /* The _Atomic settings may change while the server runs (amn_server_update
   * stores them; a plain read is an atomic load): read them where a
   * connection begins or a timer is set, never cache them at start. */
  _Atomic uint32_t max_connections;          /* 0: no limit */
  _Atomic uint32_t idle_timeout_ms;
  _Atomic uint32_t keepalive_interval_ms;    /* 0: no keepalive */
  _Atomic uint32_t keepalive_timeout_ms;     /* 0: max(interval, 5000) */
  _Atomic uint32_t handshake_timeout_ms;
  uint32_t ping_min_interval_ms;     /* HTTP/2 PING abuse policy; 0: off */
  bool ping_permit_without_calls;
  _Atomic uint32_t quic_retry_threshold;     /* HTTP/3: handshakes in progress per loop before Retry */
  uint8_t quic_secret[32];           /* HTTP/3: tokens and stateless resets ... */
  bool has_quic_secret;              /* ... when configured */
  char alt_svc[32];                  /* HTTP/2 responses carry this alt-svc value */
  size_t alt_svc_len;                /* ... when not 0 */
  /* The current TLS credentials (NULL: plaintext); any thread. */
  amn_tls_ctx *(*tls_get)(void *ud);
  void *tls_ud;
  size_t conn_buffer_limit;          /* amn_st_budget.limit of every connection */
  size_t server_buffer_limit;        /* bound on `buffered`: a call that would pass it fails (RESOURCE_EXHAUSTED) */
  atomic_size_t buffered;            /* bytes all calls hold, counted in whole AMN_ST_BUFFER_UNITs per call */
  atomic_ullong buffer_refusals;     /* calls failed for passing a buffer bound since start */
  atomic_uint nconns;                /* connections open, both transports */
  atomic_uint nrefusing;             /* connections being refused for max_connections */
  atomic_ullong refused;             /* connections refused for max_connections since start */
} amn_st_config;

/* An event counter of one loop: written only by the loop's thread (a
 * relaxed load and store, no locked instruction), read by any thread with a
 * relaxed load (the server's stats and metrics sum the loops). */
typedef _Atomic uint64_t amn_st_ctr;
static inline void amn_st_count(amn_st_ctr *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}
static inline uint64_t amn_st_read(const amn_st_ctr *c) {
  return atomic_load_explicit((amn_st_ctr *)c, memory_order_relaxed);
}

/* Upper bounds of the QUIC RTT histogram (amn_st_conn_counters.rtt). */
#define AMN_ST_RTT_BOUNDS_US 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000
#define AMN_ST_RTT_NBOUNDS 13

/* What the bindings count of their connections, per loop (amn_st_loop.conn):
 * loop thread only, through amn_st_count. */
typedef struct amn_st_conn_counters {
  amn_st_ctr h2_opened;              /* HTTP/2 connections accepted (by the server's listener) */
  amn_st_ctr h2_handshakes;          /* HTTP/2: TLS (or h2c) connections that became ready (ALPN h2, session) */
  amn_st_ctr h2_handshake_failures;  /* ... closed before (TLS refused, no ALPN h2), not for time */
  amn_st_ctr h2_handshake_timeouts;  /* ... closed for handshake_timeout_ms */
  amn_st_ctr h2_closed;              /* HTTP/2 connections gone (refused ones not counted) */
  amn_st_ctr h3_closed;              /* QUIC connections freed */
  /* HTTP/3: the smoothed RTT of each connection that had an RTT sample, taken
   * when it is freed (ngtcp2_conn_get_conn_info): buckets by upper bound
   * (AMN_ST_RTT_BOUNDS_US, then +Inf), sum in ns, count */
  amn_st_ctr rtt[AMN_ST_RTT_NBOUNDS + 1];
  amn_st_ctr rtt_sum_ns;
  amn_st_ctr rtt_count;
  amn_st_ctr rtt_min_sum_ns;         /* the same connections' minimum RTT, summed (ns) */
} amn_st_conn_counters;

/* A binding reports a QUIC connection's RTT (ns) when it is freed. */
static inline void amn_st_count_rtt(amn_st_conn_counters *m, uint64_t smoothed_ns, uint64_t min_ns) {
  static const uint64_t bounds[] = {AMN_ST_RTT_BOUNDS_US};
  size_t i = 0;
  while (i < AMN_ST_RTT_NBOUNDS && smoothed_ns > bounds[i] * 1000) i++;
  amn_st_count(&m->rtt[i], 1);
  amn_st_count(&m->rtt_sum_ns, smoothed_ns);
  amn_st_count(&m->rtt_min_sum_ns, min_ns);
  amn_st_count(&m->rtt_count, 1);
}

/* One event loop of the server, as its bindings see it. */
typedef struct amn_st_loop {
  struct ev_loop *ev;
  struct amn_ioloop *io;             /* HTTP/2 write batching of this loop */
  int idx;                           /* 0 .. loops - 1 */
  struct amn_st_loop *first;         /* loop 0 (HTTP/3 shares its state across the loops through it) */
  const amn_st_config *cfg;
  amn_st_config *counters;           /* the same object: for the atomics */
  const amn_st_calls *calls;
  void *ud;                          /* the server's loop: the first argument of calls->begin */
  bool stopping;                     /* draining: new connections get GOAWAY at once */
  size_t nconns;                     /* connections of this loop, both bindings */
  amn_st_conn_counters conn;         /* the bindings' connection counters of this loop */
  /* When the last connection of a stopping loop is gone, the binding calls
   * this (the loop may end). */
  void (*on_idle)(struct amn_st_loop *l);
  void *h2;                          /* the HTTP/2 binding's state of this loop */
  void *h3;                          /* the HTTP/3 binding's */
} amn_st_loop;

/* The server-wide count takes each call's bytes in whole units of this
 * size (a call holding less is not counted there): small calls never touch
 * the shared counter. */
#define AMN_ST_BUFFER_UNIT (64u * 1024u)

/* A connection's budget, given the connection-level flow-control window
 * the client may use without a grant (HTTP/2: the connection window we
 * announce; HTTP/3: the largest max_data window auto-tuning may reach). */
static inline void amn_st_budget_init(amn_st_budget *b, const amn_st_config *cfg, size_t conn_window) {
  b->held = 0;
  b->parked = NULL;
  b->limit = cfg->conn_buffer_limit ? cfg->conn_buffer_limit : SIZE_MAX;
  b->grant_below = b->limit > conn_window * 2 ? b->limit - conn_window : b->limit / 2;
}

/* A binding tells its loop that a connection is gone. */
static inline void amn_st_conn_gone(amn_st_loop *l) {
  l->nconns--;
  if (l->stopping && l->nconns == 0 && l->on_idle) l->on_idle(l);
}

#endif
