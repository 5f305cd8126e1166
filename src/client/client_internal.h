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
  amn_cconn *conn;
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
  amn_cconn *conn;              /* current connection (NULL when none) */
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

/* ---- h2 transport, client side (transport/h2/h2_client.c) ---- */
/* Starts connecting (I/O thread). */
amn_cconn *amn_h2c_connect(amn_client *cl);
bool amn_h2c_ready(const amn_cconn *cc);
/* Starts a call's stream on a ready connection; 0 or an error status set. */
int amn_h2c_start_call(amn_cconn *cc, amn_ccall *c);
void amn_h2c_resume(amn_ccall *c);
void amn_h2c_cancel(amn_ccall *c, uint32_t h2_code);
void amn_h2c_close(amn_cconn *cc, const char *why);

int amn_split_hostport(const char *s, char *host, size_t hcap, uint16_t *port);

#endif
