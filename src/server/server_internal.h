/*
 * Internal: server structures shared by the server core (loops, calls,
 * handlers) and the transports that carry calls (h2 today, h3 next).
 */
#ifndef AMN_SERVER_INTERNAL_H
#define AMN_SERVER_INTERNAL_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "amn/server.h"
#include "rpc/msgq.h"
#include "rpc/rpc.h"
#include "tls/tls.h"
#include "transport/h2/h2io.h"
#include "util/addr.h"
#include "util/clock.h"
#include "util/mpsc.h"

typedef struct amn_srv_loop amn_srv_loop;

/* Cross-thread operations handed to a loop (amn_loop_op.kind). */
enum { AMN_OP_SEND = 1, AMN_OP_FINISH = 2, AMN_OP_RESUME = 3 };

/* Operations a transport performs for the call core (loop thread only). */
typedef struct amn_call_transport {
  /* New data queued or finish requested: make the transport pull. */
  void (*kick)(amn_call *c);
  /* Abort the stream with a transport error (h2: RST_STREAM code). */
  void (*reset)(amn_call *c, uint32_t h2_code);
  /* The handler has taken `n` more request bytes: grant the client that
   * much flow-control window again (h2: nghttp2_session_consume). */
  void (*consume)(amn_call *c, size_t n);
} amn_call_transport;

/* A request message held while the handler has paused receiving. */
typedef struct amn_heldmsg {
  struct amn_heldmsg *next;
  uint8_t *msg;
  size_t len;
} amn_heldmsg;

struct amn_call {
  amn_loop_op fin_op;                   /* finish hand-off */
  amn_status_code app_code;         /* written by the finishing thread before the hand-off */
  char *app_msg;
  atomic_int refs;                  /* transport + application */
  atomic_bool cancelled;
  atomic_bool finish_called;
  atomic_size_t queued;             /* bytes queued by the app, not yet taken by the transport */
  atomic_bool want_writable;

  amn_srv_loop *sl;
  const amn_call_transport *tp;
  void *conn;                       /* transport connection; NULL when gone */
  int32_t stream_id;
  struct amn_call *conn_prev, *conn_next; /* connection's call list */
  const amn_handler *h;
  bool dispatched;                  /* handed to a handler (app holds a ref) */
  const char *method;               /* = req.path */
  amn_deframer df;
  uint32_t msgs_in;
  uint8_t *unary_msg;               /* unary request kept until finish */

  int64_t deadline_ns;              /* CLOCK_MONOTONIC absolute; -1 = none */
  ev_timer deadline_timer;

  /* loop-thread state */
  amn_msgq sq;                      /* response messages not yet pulled by the transport */
  bool headers_sent;                /* response HEADERS submitted */
  bool data_started;                /* data provider attached */
  bool trailers_sent;               /* final status submitted */
  bool stream_closed;
  bool fin_pending;                 /* finish processed; trailers after queue drains */
  bool deferred_writable;           /* on the loop's deferred list */
  bool deferred_resume;             /* deliver held messages when the list runs */
  struct amn_call *next_writable;
  amn_loop_op resume_op;                /* resume from another thread */
  atomic_bool resume_pending;
  bool rx_paused;                   /* handler paused receiving */
  bool half_close_held;             /* END_STREAM arrived while messages were held */
  size_t rx_unconsumed;             /* request bytes received but not yet granted back */
  amn_heldmsg *held_head, *held_tail;
  amn_status_code fin_code;
  char *fin_msg;

  pthread_mutex_t md_lock;          /* guards the response metadata below (rare path) */
  amn_rpc_md *imd, *tmd;
  size_t imd_n, tmd_n, imd_cap, tmd_cap;
  amn_md *tmd_view;

  amn_metadata md_pub;              /* view of req.md_view for amn_call_metadata */
  const amn_peer_identity *peer;
  const char *peer_addr;
  bool early_data;
  void *user_data;
  int http_status;                  /* non-zero: answer with this HTTP status (bad request) */
  bool accept_encoding_hdr;         /* add grpc-accept-encoding to the final block */
  /* last: amn_call_new clears only what precedes it (req clears itself) */
  amn_rpc_req req;
};

typedef struct amn_method_entry {
  char *path;
  amn_handler h;
} amn_method_entry;

struct amn_srv_loop {
  amn_server *srv;
  int idx;
  pthread_t thread;
  struct ev_loop *ev;
  amn_clock_fn clock_ns;            /* the calls' clock (deadlines): monotonic, or a test's */
  amn_ioloop io;
  int lfd;
  ev_io lw;
  ev_async wake;
  amn_mpsc ops;
  void *conns;                      /* h2 connection list */
  size_t nconns;
  bool stopping;
  ev_timer drain_timer;
  amn_call *writable_list;
  amn_call *call_cache;             /* freed calls kept for reuse (loop thread only) */
  int call_cache_n;
  void *health_watchers;            /* loop-local list of Watch calls */
};

struct amn_server {
  amn_server_opts o;
  char *listen_s;
  char *cert_s, *key_s, *ca_s;
  amn_tls_ctx *_Atomic tls;         /* current credentials (amn_server_reload_tls swaps it) */
  const char *const *alpn;          /* protocols of the TLS context (for reloads) */
  pthread_mutex_t tls_lock;         /* serialises reloads */
  amn_tls_ctx **tls_retired;        /* replaced contexts, kept until free (a reader may hold one) */
  size_t ntls_retired;
  atomic_uint nrefusing;            /* connections being refused (max_connections) right now */
  atomic_ullong refused;            /* connections refused for max_connections since start */
  amn_method_entry *methods;
  size_t nmethods;
  void *health;                     /* health.c state */
  amn_execute_fn exec_fn;
  void *exec_ud;
  amn_stream_handler stream_h;
  amn_srv_loop *loops;
  int nloops;
  uint16_t port;
  char alt_svc[32];                 /* alt-svc value for HTTP/2 responses (set at start); */
  size_t alt_svc_len;               /* ... 0: none (HTTP/3 not served) */
  bool started;
  atomic_bool stop_requested;
  atomic_bool stopped;
  pthread_mutex_t stop_lock;
  pthread_cond_t stop_cond;
  atomic_int health_serving;        /* 1 serving, 0 not */
  atomic_uint nconns;
  char host[256];
  uint8_t quic_secret[AMN_QUIC_SECRET_LEN]; /* [h3] copy of o.quic_secret */
  bool has_quic_secret;
};

/* ---- call core (call.c) ---- */
amn_call *amn_call_new(amn_srv_loop *sl, const amn_call_transport *tp, void *conn, int32_t stream_id);
void amn_call_unref(amn_call *c);
void amn_call_cache_free(amn_srv_loop *sl);
/* Transport events (loop thread). */
void amn_call_on_headers_done(amn_call *c);          /* validates, finds handler, dispatches or answers */
int amn_call_on_data(amn_call *c, const uint8_t *data, size_t len);
void amn_call_on_remote_close(amn_call *c);           /* END_STREAM from the client */
void amn_call_on_stream_closed(amn_call *c, amn_status_code why, const char *msg); /* stream gone */
/* Transport pulls data: copies up to `len` bytes of queued messages into
 * buf. Returns bytes copied; *eof set when the queue is empty and the call
 * finished (trailers must follow). Returns -1 (defer) when nothing queued. */
ssize_t amn_call_pull(amn_call *c, uint8_t *buf, size_t len, bool *eof);
/* What amn_call_pull(c, .., len, ..) would return, without copying. */
ssize_t amn_call_peek(const amn_call *c, size_t len, bool *eof);
/* Loop: process cross-thread operations. */
void amn_srv_loop_drain_ops(amn_srv_loop *sl);
void amn_srv_loop_run_writable(amn_srv_loop *sl);
/* Finishes a call from the library itself (errors before dispatch). */
void amn_call_fail(amn_call *c, amn_status_code code, const char *msg);
/* The response header block to send now (first message or finish). */
int amn_call_build_headers(amn_call *c, amn_hdr_buf *b, bool trailers_only);
int amn_call_build_trailers(amn_call *c, amn_hdr_buf *b);
bool amn_call_on_loop(const amn_call *c);

/* ---- health (health.c) ---- */
void amn_health_register(amn_server *s);
void amn_health_notify_loop(amn_srv_loop *sl);
void amn_health_free(amn_server *s);

/* ---- h2 transport, server side (transport/h2/h2_server.c) ---- */
void amn_h2s_accept(amn_srv_loop *sl, int fd, const char *peer_addr);
/* Over max_connections: TLS handshake, then GOAWAY "max_connections reached" and close. */
void amn_h2s_refuse(amn_srv_loop *sl, int fd, const char *peer_addr);
/* Current TLS context (NULL in insecure mode); stays allocated until amn_server_free
 * even after a reload replaced it (sessions made from it hold their own reference). */
amn_tls_ctx *amn_server_tls_get(amn_server *s);
void amn_h2s_drain_all(amn_srv_loop *sl);   /* GOAWAY every connection */
void amn_h2s_close_all(amn_srv_loop *sl);   /* hard close */

const amn_handler *amn_server_find(amn_server *s, const char *path);

#endif
