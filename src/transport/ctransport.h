/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the client binding interface, between the client core
 * (src/client/: calls, pool) and a client transport (transport/h2/
 * h2_client.c, transport/h3/h3_client*.c). Included by both, nothing else.
 *
 * The way nghttp2 knows its user (nghttp2_session_callbacks): a transport
 * knows the client core only through the data it is given here and the
 * callbacks it calls; it never calls the core by name nor reads its
 * structures. All of it runs on the client's I/O thread.
 *
 * Handles: a connection is a `void *conn` of the transport, known to the
 * core's pool slot (its `owner`, passed back to the connection callbacks);
 * a call is an amn_ct_call of the core (embedded in its call), carried on
 * a `void *stream` of the transport.
 */
#ifndef AMN_TRANSPORT_CTRANSPORT_H
#define AMN_TRANSPORT_CTRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "amn/common.h"
#include "tls/tls.h"

struct ev_loop;
struct amn_ioloop;
typedef struct amn_ct_call amn_ct_call;

/* What the core gives a transport for one call (read only). */
struct amn_ct_call {
  const char *method;
  const amn_md *md;             /* request metadata */
  size_t md_n;
  int64_t timeout_ns;           /* grpc-timeout; 0: none */
  bool idempotent;              /* a replay is harmless: may go as 0-RTT data */
};

/* How a call's stream ended when it did not end normally. */
typedef struct amn_ct_end {
  amn_status_code code;
  const char *msg;
  bool unprocessed;             /* the server provably never ran it: safe to send elsewhere */
} amn_ct_end;

/* Calls a transport makes about a call (the amn_ct_call it was given). */
typedef struct amn_ct_call_cbs {
  /* Request bytes (a gRPC frame stream) the transport may send: how many
   * of `len` are there without taking them (-1: none yet, and not the
   * end), and taking them. *eof: the request ends after them. */
  ssize_t (*peek)(amn_ct_call *c, size_t len, bool *eof);
  ssize_t (*pull)(amn_ct_call *c, uint8_t *buf, size_t len, bool *eof);
  /* A response header field (of the headers or, later, the trailers). */
  void (*header)(amn_ct_call *c, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen);
  /* The end of the response headers, or of the trailers (`trailing`). */
  void (*headers_end)(amn_ct_call *c, bool trailing);
  /* Response DATA bytes, split anywhere. */
  void (*data)(amn_ct_call *c, const uint8_t *data, size_t len);
  /* The stream lets go of the call (last callback for it; the stream
   * handle is dead): `end` NULL for the normal end of the response, else
   * the failure. */
  void (*closed)(amn_ct_call *c, const amn_ct_end *end);
} amn_ct_call_cbs;

/* Calls a transport makes about a connection (`owner` from open). */
typedef struct amn_ct_conn_cbs {
  /* Takes calls. `unconfirmed` (HTTP/3 0-RTT): only idempotent calls go
   * before the handshake completes, and `confirmed` follows (or `closed`,
   * a failure of the endpoint). */
  void (*ready)(void *owner, bool unconfirmed);
  void (*confirmed)(void *owner);
  /* No new calls here; `error`: the server refused us (not a drain). */
  void (*goaway)(void *owner, bool error, const char *why);
  /* The connection is gone (also when the attempt failed, possibly before
   * open returned); `asked`: closed because the application asked (a
   * test hook), not a failure. The owner is not reached again. */
  void (*closed)(void *owner, const char *why, bool asked);
  /* The server said too_many_pings: the keepalive interval is doubled. */
  void (*too_many_pings)(void *owner);
} amn_ct_conn_cbs;

/* What the core gives a transport for the client (read only but for
 * tp_state, which belongs to the transport; ka_interval_ms changes). */
typedef struct amn_ct_client {
  struct ev_loop *ev;
  struct amn_ioloop *io;        /* batched TCP writes (HTTP/2) */
  amn_tls_ctx *tls;             /* ALPN h2; NULL: plaintext */
  amn_tls_ctx *tls_h3;          /* ALPN h3; NULL unless HTTP/3 may be used */
  const char *server_name;      /* TLS server name override, or NULL: the endpoint's sni */
  uint32_t connect_timeout_ms;
  uint32_t initial_window_size;
  uint32_t ka_interval_ms;      /* keepalive interval in use (0: off; doubled on too_many_pings) */
  uint32_t ka_timeout_ms;       /* how long a PING may go unanswered (keepalive_timeout_ms) */
  bool keepalive_without_calls;
  bool no_resumption;           /* HTTP/3: do not resume from a kept session ticket */
  const amn_ct_conn_cbs *conn_cbs;
  const amn_ct_call_cbs *call_cbs;
  void *tp_state[2];            /* per transport (index amn_ctransport.slot): its client state */
} amn_ct_client;

/* Keepalive: how long to wait, after a PING, for something from the
 * server (ka_timeout_ms, else the interval, at least 1000 ms). */
static inline uint32_t amn_ct_ka_timeout_ms(const amn_ct_client *tc) {
  if (tc->ka_timeout_ms) return tc->ka_timeout_ms;
  return tc->ka_interval_ms < 1000 ? 1000 : tc->ka_interval_ms;
}

/* One server the core connects to. */
typedef struct amn_ct_endpoint {
  char host[256];               /* connect to (spread_addresses: one of the name's addresses) */
  char sni[256];                /* the URL's host: TLS server name and certificate check */
  char authority[300];
  uint16_t port;
  void *tp_state[2];            /* per transport: e.g. HTTP/3 session ticket, token */
} amn_ct_endpoint;

/* A client transport: the operations it offers the core. */
typedef struct amn_ctransport {
  const char *name;             /* "HTTP/2", "HTTP/3" */
  amn_transport kind;           /* AMN_TRANSPORT_H2 or _H3 */
  int slot;                     /* its index in tp_state[] */
  /* Starts a connection to `ep`; stores it in *conn before any callback
   * (a failure may be reported with conn_cbs->closed before it returns). */
  void (*open)(amn_ct_client *tc, amn_ct_endpoint *ep, void *owner, void **conn);
  /* Streams the peer lets us have open at once (HTTP/2
   * SETTINGS_MAX_CONCURRENT_STREAMS, QUIC initial_max_streams_bidi). */
  uint32_t (*max_streams)(const void *conn);
  /* Starts the call on a stream of conn: its handle, or NULL with *fail
   * set (nothing of it reaches the call). */
  void *(*start_call)(void *conn, amn_ct_call *c, amn_ct_end *fail);
  /* More request data (or its end) is there to pull. */
  void (*resume)(void *stream);
  /* The core lets go of the stream: it is reset (h2 RST_STREAM CANCEL, h3
   * H3_REQUEST_CANCELLED); no callback reaches the call again. */
  void (*cancel)(void *stream);
  /* The TLS session of the stream's connection (the server's certificate
   * for verifying signed results), or NULL (plaintext). */
  gnutls_session_t (*session)(void *stream);
  /* Closes the connection; its streams end (call_cbs->closed). */
  void (*close)(void *conn, const char *why);
  /* Release the transport's state of an endpoint, of the client (I/O
   * thread joined, loop still allocated). NULL when it keeps none. */
  void (*endpoint_free)(amn_ct_endpoint *ep);
  void (*client_free)(amn_ct_client *tc);
  /* Counters (thread-safe; zeros before the first connection) and test
   * hooks run on the I/O thread (AMN_CT_OP_*: 0, or AMN_ESTATE with no
   * connection to act on). NULL when the transport has none. */
  void (*stats)(amn_ct_client *tc, void *out);
  int (*test_op)(amn_ct_client *tc, int op, int arg);
} amn_ctransport;

enum { AMN_CT_OP_REBIND = 1, AMN_CT_OP_KEY_UPDATE, AMN_CT_OP_CLOSE, AMN_CT_OP_PEER_CID0 };

#endif
