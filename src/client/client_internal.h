/*
 * Internal: client structures shared by the client core (API, calls, I/O
 * thread) and the transports (h2 today, h3 next).
 */
#ifndef AMN_CLIENT_INTERNAL_H
#define AMN_CLIENT_INTERNAL_H

#include <ev.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "amn/client.h"
#include "rpc/rpc.h"
#include "tls/tls.h"
#include "transport/h2/h2io.h"
#include "util/mpsc.h"

typedef struct amn_cconn amn_cconn;
typedef struct amn_ccall amn_ccall;

enum { AMN_COP_START = 1, AMN_COP_SEND, AMN_COP_HALF_CLOSE, AMN_COP_CANCEL, AMN_COP_CONNECT };
typedef struct amn_cop {
  amn_mpsc_node node;
  int kind;
} amn_cop;

/* One framed request message waiting to be sent. */
typedef struct amn_cmsg {
  amn_cop op;
  struct amn_cmsg *next;
  amn_ccall *call;
  size_t len, off;
  uint8_t data[];
} amn_cmsg;

enum { AMN_CK_UNARY_ASYNC = 1, AMN_CK_UNARY_BLOCKING, AMN_CK_STREAM };

struct amn_ccall {
  amn_cop start_op, half_close_op, cancel_op;
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

  /* I/O thread state */
  void *conn;                      /* transport connection carrying the stream, or NULL */
  int32_t stream_id;
  struct amn_ccall *prev, *next;   /* pending or live list */
  amn_cmsg *sq_head, *sq_tail;
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
  amn_tls_ctx *tls;
  pthread_t thread;
  struct ev_loop *ev;
  amn_ioloop io;
  ev_async wake;
  amn_mpsc ops;
  atomic_bool stopping;
  bool local_ops;               /* ops pushed from the I/O thread itself (drained before blocking) */
  const struct amn_ctransport *tp; /* h2 (or h3) */
  void *conn;                   /* current connection (NULL when none) */
  amn_ccall *pending;           /* calls waiting for a ready connection */
  /* amn_client_connect waiters */
  pthread_mutex_t cmu;
  pthread_cond_t ccv;
  int connect_gen;              /* bumps when a connection attempt ends */
  int connect_rc;
  char connect_err[600];
};

/* ---- client core (client.c) ---- */
void amn_ccall_complete(amn_ccall *c, amn_status_code code, const char *msg);
void amn_ccall_unref(amn_ccall *c);
ssize_t amn_ccall_pull(amn_ccall *c, uint8_t *buf, size_t len, bool *eof);
void amn_ccall_on_message(amn_ccall *c, uint8_t *msg, size_t len);
void amn_client_conn_event(amn_client *cl, int rc, const char *err); /* connect attempt result */

/* A client transport (all functions run on the client I/O thread). A
 * connection reports the outcome of its setup with amn_client_conn_event,
 * completes calls with amn_ccall_complete, and pulls request bytes with
 * amn_ccall_pull. */
typedef struct amn_ctransport {
  /* Starts connecting to cl->host:cl->port; sets cl->conn (NULL if it
   * failed at once, after reporting through amn_client_conn_event). */
  void (*connect)(amn_client *cl);
  /* The connection takes new calls. */
  bool (*ready)(const void *conn);
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

int amn_split_hostport(const char *s, char *host, size_t hcap, uint16_t *port);

#endif
