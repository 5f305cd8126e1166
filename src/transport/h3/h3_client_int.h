/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the HTTP/3 client's own structures, shared by its files
 * (h3_client.c: connections; h3_client_stream.c: request streams bound to
 * calls; h3_client_ticket.c: session tickets, 0-RTT parameters and tokens
 * kept per endpoint). Included by transport/h3/h3_client*.c only.
 */
#ifndef AMN_TRANSPORT_H3_CLIENT_INT_H
#define AMN_TRANSPORT_H3_CLIENT_INT_H

#include <netdb.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <pthread.h>

#include "transport/h3/h3.h"
#include "transport/h3/h3_client.h"

#define CLIENT_IDLE_TIMEOUT (30 * NGTCP2_SECONDS)

typedef enum { CC_CONNECTING, CC_READY, CC_CLOSED } cc_state;

typedef struct h3c_conn h3c_conn;

/* Per client (its tp_state): counters, the connections, and the hand-off
 * of the test hooks to the I/O thread. */
typedef struct h3c_state {
  pthread_mutex_t mu;           /* guards everything below but `async`, and every h3c_ep */
  pthread_cond_t cv;
  ev_async async;               /* test hooks: run on the I/O thread */
  int op, op_arg, op_rc;
  unsigned op_seq, op_done;
  amn_h3_client_stats st;
  h3c_conn *conns;              /* every connection (I/O thread): the test hooks pick one */
  /* the receive batch, shared by the connections (they all run on the I/O
   * thread, and a read callback finishes its batch before another starts) */
  amn_h3_rx rx;                 /* rx.bufs: AMN_H3_RX_BATCH x AMN_H3_RX_DGRAM */
  uint8_t *txbuf;               /* the packets of one write (what a full socket leaves is copied out) */
  amn_h3_sched sched;           /* flushes the dirty connections before the loop blocks: one
                                   prepare watcher for all of them, not one each */
} h3c_state;

/* Per endpoint (its tp_state): what its next connection reuses. */
typedef struct h3c_ep {
  gnutls_datum_t ticket;        /* last session ticket (gnutls_session_get_data2) */
  uint8_t tp[256];              /* the server's transport parameters of that session, as ngtcp2 */
  size_t tp_len;                /* ... encodes them for 0-RTT (0: none) */
  uint64_t tp_streams_bidi;     /* their request stream limit */
  uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN + 64];
  size_t token_len;             /* last NEW_TOKEN token, 0 if none */
} h3c_ep;

#define SLOT(x) ((x)->tp_state[1]) /* amn_h3c_transport.slot */

/* One call's stream (the handle the core holds). */
typedef struct h3c_stream {
  amn_h3_sendbuf sb;            /* first (amn_h3_on_acked): request bytes until acknowledged */
  amn_ct_call *c;               /* NULL once the call let go of it (cancel, or the end was reported) */
  h3c_conn *cc;
  int64_t id;                   /* -1 while waiting for a stream ID (peer's stream limit) */
  amn_h3_sendbuf resend;        /* 0-RTT request bytes to send again (early data refused) */
  bool early;                   /* opened before the handshake completed (0-RTT) */
  bool started;                 /* its request body began (HEADERS are out) */
  bool yielded;                 /* stepped aside for other streams (see cs_read_data) */
  size_t run_bytes;             /* request bytes given to nghttp3 since it last stepped aside */
  struct h3c_stream *prev, *next; /* cc->live, or cc->waitq */
} h3c_stream;

struct h3c_conn {
  amn_h3_conn b;                /* first: ngtcp2/nghttp3 user data */
  amn_ct_client *tc;
  const amn_ct_conn_cbs *cb;
  const amn_ct_call_cbs *ccb;
  amn_ct_endpoint *ep;
  void *owner;                  /* the pool's handle (NULL once reported closed) */
  h3c_conn *prev, *next;        /* hs->conns */
  h3c_state *hs;
  h3c_ep *he;
  cc_state st;
  bool goaway;                  /* no new calls here */
  bool early;                   /* resuming with 0-RTT: idempotent calls start before the handshake */
  bool early_ready;             /* ... and the owner was told (ready, unconfirmed) */
  bool asked;                   /* closed by a test hook: not a failure */
  bool early_tp;                /* the server's remembered transport parameters are in use */
  bool rx_any;                  /* something came from the server */
  bool got_reset;               /* the server reset the connection (stateless reset) */
  unsigned nyielded;
  h3c_stream *live, *waitq;
  size_t nlive;
  struct addrinfo *ai, *cur;
  ev_io rw;
  ev_timer ct;                  /* connect + handshake deadline */
  ev_timer ka;                  /* keepalive: a silent server is dead */
  ev_tstamp last_rx;            /* when a packet last came from the server */
  ev_tstamp ka_from;            /* keepalive watches silence from here on (at least) */
  char last_err[300];
};

#define HSTAT(cc, f)                      \
  do {                                    \
    pthread_mutex_lock(&(cc)->hs->mu);    \
    (cc)->hs->st.f++;                     \
    pthread_mutex_unlock(&(cc)->hs->mu);  \
  } while (0)

/* ---- streams (h3_client_stream.c) ---- */
extern const nghttp3_callbacks amn_h3c_h3cbs; /* the HTTP/3 callbacks of a client connection */
void *amn_h3c_start_call(void *conn, amn_ct_call *c, amn_ct_end *fail);
void amn_h3c_resume(void *stream);
void amn_h3c_cancel(void *stream);
/* Opens the next waiting stream: 1 opened (or dropped: its call ended
 * meanwhile), 0 none can be opened now. */
int amn_h3c_open_next(h3c_conn *cc);
void amn_h3c_open_waiting(h3c_conn *cc); /* as many as the server allows (ready connection) */
void amn_h3c_update_keepalive(h3c_conn *cc);
/* The connection is over: the calls of its streams fail with UNAVAILABLE
 * (`why`; unprocessed when their request never went out), the streams are freed. */
void amn_h3c_streams_fail_all(h3c_conn *cc, const char *why);
void amn_h3c_streams_resume_yielded(h3c_conn *cc); /* after a flush: the streams that stepped aside go on */
size_t amn_h3c_load(const h3c_conn *cc);         /* its calls: open and waiting streams */
/* ngtcp2 callbacks about streams */
int amn_h3c_q_early_rejected(ngtcp2_conn *q, void *ud);
int amn_h3c_q_stream_close(ngtcp2_conn *q, uint32_t flags, int64_t id, uint64_t code, void *ud, void *sud);
int amn_h3c_q_stream_reset(ngtcp2_conn *q, int64_t id, uint64_t final, uint64_t code, void *ud, void *sud);
int amn_h3c_q_extend_local_bidi(ngtcp2_conn *q, uint64_t max, void *ud);

/* ---- tickets and tokens (h3_client_ticket.c) ---- */
/* What the next connection of cc's endpoint reuses: the session ticket
 * (set on cc's TLS session; true if there was one), the server's 0-RTT
 * transport parameters (*tp_len 0: none), the last NEW_TOKEN token
 * (*token_len 0: none). Counts the attempt. */
bool amn_h3c_ticket_load(h3c_conn *cc, uint8_t *tp, size_t *tp_len, uint8_t *token, size_t *token_len);
/* The handshake completed: the server's transport parameters go with the
 * session ticket for the next 0-RTT (hs->mu held). */
void amn_h3c_ticket_save_params(h3c_ep *he, ngtcp2_conn *q);
/* NewSessionTicket received (a GnuTLS handshake hook). */
int amn_h3c_ticket_hook(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                        const gnutls_datum_t *msg);
int amn_h3c_q_recv_new_token(ngtcp2_conn *q, const uint8_t *token, size_t len, void *ud);
void amn_h3c_endpoint_free(amn_ct_endpoint *ep);

#endif
