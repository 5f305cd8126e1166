/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the server core's structures (loops, calls, handlers), shared
 * by the files of server/ only. The transports see none of this: they are bound
 * through transport/stransport.h.
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
#include "server/metrics.h"
#include "tls/tls.h"
#include "transport/h2/h2io.h"
#include "transport/stransport.h"
#include "util/addr.h"
#include "util/clock.h"
#include "util/dlist.h"
#include "util/mpsc.h"
#include "util/proxy_id.h"

typedef struct amn_srv_loop amn_srv_loop;

/* Cross-thread operations handed to a loop (amn_loop_op.kind). */
enum { AMN_OP_SEND = 1, AMN_OP_FINISH = 2, AMN_OP_RESUME = 3 };

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
  size_t tx_held;                   /* bytes of messages the transport took whole and holds (loop) */
  atomic_bool want_writable;

  amn_srv_loop *sl;
  const amn_st_stream_ops *ops;     /* the binding's stream: what kick and consume act on */
  void *stream;                     /* ... NULL once the stream is gone */
  struct amn_call *cache_next;      /* the loop's cache of freed calls */
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
  bool data_started;                /* headers sent with messages to follow */
  bool trailers_sent;               /* final status submitted */
  bool stream_closed;
  bool fin_pending;                 /* finish processed; trailers after queue drains */
  bool deferred_writable;           /* on the loop's deferred list */
  bool deferred_resume;             /* deliver held messages when the list runs */
  bool deferred_cancel;             /* tell the handler on_cancel(cancel_code) when the list runs */
  amn_status_code cancel_code;
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
  /* memory bounds (call.c: charge): loop thread, except srv_mem's release */
  amn_st_budget *budget;            /* the connection's (NULL: none, or the stream is gone) */
  size_t mem;                       /* charged to the budget: request bytes held + responses queued */
  size_t mem_partial;               /* ... of which the partial request message's buffer */
  size_t srv_mem;                   /* charged to amn_st_config.buffered (whole AMN_ST_BUFFER_UNITs of mem) */
  size_t unary_len;                 /* bytes at unary_msg */
  size_t held_sum;                  /* bytes of the held messages */
  struct amn_call *park_prev, *park_next; /* on budget->parked */
  bool parked;
  /* phases (loop thread): on the loop's hdr_phase list until headers_end;
   * on its progress list while it waits on the client */
  amn_dl_link hdr_link, progress_link;
  /* metrics (loop thread): the method's index in the server's table (past
   * its end: unknown), when the request began, bytes in and out */
  size_t m_method;
  bool m_started;
  int64_t m_t0;
  uint64_t m_in, m_out;
  bool fwd_set;                     /* fwd below holds the call's identity (fwd_cert.c) */
  /* signatures (signature.c): SHA-256 of the Execute query (for the proof) */
  uint8_t q_sha256[32];
  bool q_hashed;
  bool sig_verified;
  /* last: amn_call_new clears only what precedes it (req clears itself) */
  amn_rpc_req req;
  amn_peer_store fwd;               /* the forwarded identity; valid only while fwd_set */
};

typedef struct amn_method_entry {
  char *path;
  amn_handler h;
} amn_method_entry;

struct amn_srv_loop {
  amn_st_loop bl;                   /* what the transport bindings see of this loop */
  amn_server *srv;
  pthread_t thread;
  struct ev_loop *ev;
  amn_clock_fn clock_ns;            /* the calls' clock (deadlines): monotonic, or a test's */
  ev_check tick;                    /* with the monotonic clock: refreshes the loop's coarse clock, */
  bool coarse;                      /* ... which the phase lists use (amn_clock_coarse_ns) */
  amn_ioloop io;
  int lfd;
  ev_io lw;
  ev_async wake;
  amn_mpsc ops;
  ev_timer drain_timer;
  amn_call *writable_list;
  amn_call *call_cache;             /* freed calls kept for reuse (loop thread only) */
  int call_cache_n;
  void *health_watchers;            /* loop-local list of Watch calls */
  /* call.c, the phases of a request: calls whose headers are not complete
   * (header_timeout_ms), and calls that wait on the client (a request
   * message begun, responses queued) ordered by their last progress
   * (stall_timeout_ms); set up on first use */
  amn_dlist hdr_phase;
  amn_dlist progress;
  amn_m_loop m;                     /* the calls' counters of this loop (metrics.h) */
};

struct amn_server {
  amn_server_opts o;
  char *listen_s;
  char *cert_s, *key_s, *ca_s, *crl_s;
  amn_tls_ctx *_Atomic tls;         /* current credentials (amn_server_reload_tls swaps it) */
  const char *const *alpn;          /* protocols of the TLS context (for reloads) */
  pthread_mutex_t tls_lock;         /* serialises reloads */
  amn_tls_ctx **tls_retired;        /* replaced contexts, kept until free (a reader may hold one) */
  size_t ntls_retired;
  amn_authz_policy *_Atomic authz;  /* current policy, NULL = none (amn_server_set_authz_policy) */
  amn_authz_policy **authz_retired; /* replaced policies, kept until free (a call may be reading one) */
  size_t nauthz_retired;
  amn_authorize_fn authorize_fn;    /* the application's callback (amn_server_set_authorize) */
  void *authorize_ud;
  amn_st_config bc;                 /* what the transport bindings see: settings, shared counters */
  /* The server core's settings that amn_server_update may change while the
   * loops run (the others are in bc): relaxed atomic loads where a call
   * begins or a stop starts; o's copies of them are not read after start. */
  struct {
    atomic_size_t max_recv_message, max_send_message;
    atomic_bool access_log;
    _Atomic uint32_t drain_timeout_ms;
  } live;
  int lfd_tcp, lfd_udp;             /* listen_fd, listen_fd_udp given (-1: none): duplicated per loop */
  amn_method_entry *methods;
  size_t nmethods;
  void *health;                     /* health.c state */
  void *reflection;                 /* reflection.c state, NULL when off */
  amn_execute_fn exec_fn;
  void *exec_ud;
  amn_stream_handler stream_h;
  amn_srv_loop *loops;
  int nloops;
  uint16_t port;
  bool started;
  atomic_bool stop_requested;
  atomic_bool stopped;
  pthread_mutex_t stop_lock;
  pthread_cond_t stop_cond;
  atomic_int health_serving;        /* 1 serving, 0 not */
  char host[256];
  /* trusted proxies (fwd_cert.c): parsed entries pointing into proxy_s */
  amn_proxy_id *proxies;
  size_t nproxies;
  char **proxy_s;
  char *fwd_header;                 /* lower-case header name */
  struct amn_sig_replay *replay;    /* signature.c: nonces of signed queries (require_client_signature) */
  struct amn_signer *signer;        /* signature.c: the server's key (sign_results) */
};

/* ---- signed queries and results (signature.c) ---- */
int amn_srv_sig_init(amn_server *s, char *err, size_t errlen);
void amn_srv_sig_free(amn_server *s);
/* Before a QueryRequest reaches its handler: sets q->signature_verified.
 * NULL: hand it over; else the message to end the call with, and *code
 * (AMN_STATUS_OK with "": the call already ended, drop the query). */
const char *amn_srv_sig_check(amn_call *c, amn_query *q, amn_status_code *code);
/* The server_proof of an Execute response (out: AMN_SIG_PROOF_HDR +
 * AMN_SIG_MAX_LEN bytes); 0 when none is made. Any thread. */
size_t amn_srv_sig_proof(amn_call *c, const uint8_t *result, size_t len, uint8_t *out);

/* ---- call core (call.c) ---- */
/* The call core as the transport bindings see it (amn_st_calls); the
 * functions below are its entries. */
extern const amn_st_calls amn_call_binding;
amn_call *amn_call_begin(void *sl, const amn_st_stream_ops *ops, void *stream, const amn_peer_identity *peer,
                         const char *peer_addr, bool early_data);
void amn_call_unref(amn_call *c);
void amn_call_cache_free(amn_srv_loop *sl);
/* Transport events (loop thread). */
void amn_call_on_header(amn_call *c, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen);
void amn_call_on_headers_done(amn_call *c);          /* validates, finds handler, dispatches or answers */
void amn_call_on_data(amn_call *c, const uint8_t *data, size_t len);
void amn_call_on_remote_close(amn_call *c);           /* END_STREAM from the client */
size_t amn_call_on_stream_closed(amn_call *c, amn_status_code why, const char *msg); /* stream gone */
amn_st_step amn_call_step(amn_call *c);
/* Transport pulls data: copies up to `len` bytes of queued messages into
 * buf. Returns bytes copied; *eof set when the queue is empty and the call
 * finished (trailers must follow). Returns -1 (defer) when nothing queued. */
ssize_t amn_call_pull(amn_call *c, uint8_t *buf, size_t len, bool *eof);
/* The front message whole, without a copy (amn_st_calls.take). */
ssize_t amn_call_take(amn_call *c, amn_qmsg **m, bool *eof);
/* Taken bytes acknowledged and freed (amn_st_calls.released). */
void amn_call_released(amn_call *c, size_t acked, size_t freed);
/* What amn_call_pull(c, .., len, ..) would return, without copying. */
ssize_t amn_call_peek(amn_call *c, size_t len, bool *eof);
/* Loop: process cross-thread operations. */
void amn_srv_loop_drain_ops(amn_srv_loop *sl);
void amn_srv_loop_run_writable(amn_srv_loop *sl);
/* Finishes a call from the library itself (errors before dispatch). */
void amn_call_fail(amn_call *c, amn_status_code code, const char *msg);
void amn_call_attach(amn_call *c, amn_st_budget *b);
/* A loop's event loop, write batching, operation queue and wake-up watcher
 * (amn_server_start for each loop; a test or fuzz harness for one loop it
 * drives itself, with its clock). sl->srv and sl->bl's server fields are the
 * caller's. */
void amn_srv_loop_setup(amn_srv_loop *sl, amn_clock_fn clock);
/* The response header block to send now (first message or finish). */
int amn_call_build_headers(amn_call *c, amn_hdr_buf *b, bool trailers_only);
int amn_call_build_trailers(amn_call *c, amn_hdr_buf *b);
bool amn_call_on_loop(const amn_call *c);

/* ---- metrics (metrics.c) ---- */
/* Adds the loops' call counters to `out` (amn_server_get_stats). */
void amn_m_sum_calls(amn_server *s, amn_server_stats *out);
/* The snapshot of amn_server_get_metrics, with the server's stats `st`. */
int amn_m_snapshot(amn_server *s, const amn_server_stats *st, amn_server_metrics **out);

/* ---- forwarded client identity (fwd_cert.c) ---- */
/* Copies and checks the trusted proxies of `o` into `s` (amn_server_new). */
int amn_fwd_setup(amn_server *s, const amn_server_opts *o, char *err, size_t errlen);
void amn_fwd_free(amn_server *s);
/* At the end of a call's request headers, when s->nproxies: from a trusted
 * proxy, the forwarded certificate becomes the call's identity (c->peer).
 * false when it is refused: the call must end with UNAUTHENTICATED and the
 * message written to msg. */
bool amn_fwd_identity(amn_call *c, char *msg, size_t ml);
/* Decodes a forwarded certificate header value (URL-escaped PEM, or base64
 * DER; surrounding white space ignored) into DER. 0 with *der (malloc'd)
 * and *derlen; AMN_EINVAL with the reason in why ("empty", "more than 16384
 * bytes", "PEM block is not a CERTIFICATE", "PEM certificate without its
 * END line", "invalid base64"); AMN_ENOMEM. */
int amn_fwd_cert_decode(const uint8_t *v, size_t len, uint8_t **der, size_t *derlen, char *why, size_t wl);

/* ---- health (health.c) ---- */
void amn_health_register(amn_server *s);
void amn_health_notify_loop(amn_srv_loop *sl);
void amn_health_free(amn_server *s);

/* ---- server reflection (reflection.c) ---- */
int amn_reflection_register(amn_server *s);
void amn_reflection_free(amn_server *s);

/* Current TLS context (NULL in insecure mode); stays allocated until amn_server_free
 * even after a reload replaced it (sessions made from it hold their own reference). */
amn_tls_ctx *amn_server_tls_get(amn_server *s);

const amn_handler *amn_server_find(amn_server *s, const char *path);

/* [h3] The HTTP/3 counters of a started server (zeros otherwise), and a new
 * session ticket key now (tests). */
struct amn_h3_server_stats;
void amn_server_h3_stats(amn_server *s, struct amn_h3_server_stats *out);
#ifdef AMN_TEST_HOOKS /* test builds only (CMake: AMN_BUILD_TESTS) */
void amn_server_h3_rotate_ticket_key(amn_server *s);
#endif

#endif
