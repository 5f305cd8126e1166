/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the HTTP/3 server's own structures, shared by its files
 * (h3_server.c: the listeners, datagram dispatch, the socket group;
 * h3_server_cid.c: the connection ID table and packet steering;
 * h3_server_token.c: address validation and stateless reset tokens;
 * h3_server_ticket.c: session tickets, ticket identities, 0-RTT anti-replay;
 * h3_server_stream.c: request streams bound to calls;
 * h3_server_conn.c: connection lifecycle and ngtcp2's connection callbacks).
 * Included by transport/h3/h3_server*.c only.
 */
#ifndef AMN_TRANSPORT_H3_SERVER_INT_H
#define AMN_TRANSPORT_H3_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "transport/h3/h3.h"

typedef struct h3_sconn h3_sconn;
#define AMN_H3S_CLOSEBUF 1500
typedef struct h3_cid h3_cid; /* h3_server_cid.c */

enum { SC_HANDSHAKE, SC_OPEN, SC_CLOSING, SC_DRAINING };

/* One request stream (created when its HEADERS begin). */
typedef struct h3_sstream {
  amn_h3_sendbuf sb;            /* first (amn_h3_on_acked): response bytes until acknowledged */
  amn_call *c;                  /* NULL once the call is detached */
  h3_sconn *sc;
  int64_t id;
  bool fin_sent;                /* the final status (trailers) was submitted */
  bool remote_closed;           /* the request ended (FIN) */
  struct h3_sstream *prev, *next;
} h3_sstream;

_Static_assert(offsetof(h3_sstream, sb) == 0, "nghttp3's stream user data starts with its send buffer");

struct h3_sconn {
  amn_h3_conn b;                /* first: ngtcp2/nghttp3 user data */
  amn_h3_listener *l;
  h3_sconn *prev, *next;
  int state;
  h3_sstream *streams;
  size_t nstreams;
  h3_cid *cids;                 /* the IDs that route datagrams to it */
  amn_peer_store peer;
  bool have_peer;
  bool notice_sent, shutdown_sent; /* graceful drain: GOAWAY notice, then final GOAWAY */
  bool counted_hs;              /* counted in l->nhandshaking */
  bool hs_timed_out;            /* closed for handshake_timeout_ms (not a handshake failure) */
  bool uncounted;               /* no longer in the server's connection count (closing / draining) */
  bool early_offered;           /* the ClientHello offered 0-RTT */
  bool peer_from_ticket;        /* `peer` came from the identity cache (resumption) */
  amn_tls_ctx *ctx;             /* credentials of the TLS session */
  ev_timer gtimer;              /* notice -> final GOAWAY */
  ev_timer idle_timer;          /* idle_timeout_ms without a call: GOAWAY, close (PINGs do not count) */
  amn_st_budget budget;         /* what the calls of this connection may hold in memory */
  uint8_t *closebuf;            /* our CONNECTION_CLOSE, repeated during the closing period
                                 * (AMN_H3S_CLOSEBUF bytes, allocated when the connection closes) */
  size_t closelen;
  char addr[64];
};

/* The sockets of one server (one per loop): the last loop to stop closes
 * them all, so that the kernel's SO_REUSEPORT group never changes while
 * other loops still serve connections (datagrams of a connection would
 * land on the wrong socket). */
typedef struct h3_group {
  atomic_int live;
  amn_h3_listener *all;
  /* shared by the loops of the server */
  pthread_mutex_t mu;           /* guards the ticket key */
  uint8_t stek[64];             /* session ticket encryption key (GnuTLS master key) */
  time_t stek_born;
  uint8_t token_secret[32];     /* Retry and NEW_TOKEN tokens */
  uint8_t reset_secret[32];     /* stateless reset tokens */
  amn_h3_replay *replay;        /* 0-RTT ClientHellos seen */
  amn_h3_replay *ids;           /* client identity by session ticket (for 0-RTT) */
  struct {
    atomic_ullong conns_accepted, handshakes_done, handshake_timeouts, handshake_failures, resumed, early_accepted, early_rejected,
        replays_detected, early_calls, retries_sent, retry_tokens_ok, new_tokens_ok, tokens_bad, stateless_resets, stateless_resets_limited,
        version_negotiations, path_validations, key_updates, datagrams_received, datagrams_coalesced;
    atomic_uint handshaking;
    atomic_uint closing; /* connections in their closing or draining period */
  } st;
} h3_group;

#define STAT(l, f)                                     \
  do {                                                 \
    if ((l)->group) atomic_fetch_add(&(l)->group->st.f, 1); \
  } while (0)

struct amn_h3_listener {
  amn_st_loop *loop;
  int fd;
  struct sockaddr_storage local;
  socklen_t local_len;
  ev_io rw;
  amn_h3_sched sched;
  h3_sconn *conns;
  h3_cid **tab;                 /* connection ID hash table (h3_server_cid.c) */
  size_t tabsz, ncid;
  uint8_t *txbuf;
  amn_h3_rx rx;                 /* the receive batch (rx.bufs: AMN_H3_RX_BATCH x AMN_H3_RX_DGRAM) */
  bool draining, stopped;
  uint32_t nhandshaking;        /* connections of this loop in their handshake */
  uint64_t sr_window;           /* start of the current stateless-reset rate window (ns) */
  uint32_t sr_sent;             /* stateless resets sent in it */
  ngtcp2_cid refused[8];        /* the latest clients refused (max_connections): a client's */
  unsigned nrefused;            /* ... second Initial datagram is not a second refusal */
  h3_sconn *hello_sc;           /* whose ClientHello GnuTLS is processing (anti-replay callback) */
  gnutls_anti_replay_t ar;      /* this loop's 0-RTT recording window (the table is the group's) */
  h3_group *group;
  bool group_owner;
  amn_h3_listener *group_next;
};

/* ---- connection IDs and packet steering (h3_server_cid.c) ---- */
/* A new connection ID of ours (random, its first byte the loop's index). 0 or -1. */
int amn_h3s_cid_make(amn_h3_listener *l, uint8_t *id, size_t len);
/* Asks the kernel to steer short-header packets to the socket whose index
 * their destination connection ID names (the group's `nsocks` sockets). */
void amn_h3s_cid_steer(amn_h3_listener *l, unsigned nsocks);
/* The listener's table: created empty (0 or -1), freed (its IDs are gone
 * with their connections). */
int amn_h3s_cid_table_init(amn_h3_listener *l);
void amn_h3s_cid_table_free(amn_h3_listener *l);
/* Routes `id` to sc. 0, or -1 (too long, out of memory). */
int amn_h3s_cid_add(amn_h3_listener *l, h3_sconn *sc, const uint8_t *id, size_t len);
h3_sconn *amn_h3s_cid_find(amn_h3_listener *l, const uint8_t *id, size_t len);
void amn_h3s_cid_del(amn_h3_listener *l, const uint8_t *id, size_t len);
void amn_h3s_cid_del_conn(amn_h3_listener *l, h3_sconn *sc); /* all of sc's */

/* ---- address validation and stateless reset tokens (h3_server_token.c) ---- */
/* The process-wide stateless reset key of servers without a QUIC secret
 * (before the first listener is attached; any thread). */
void amn_h3s_token_init(void);
/* The group's token and stateless reset keys: derived from the server's
 * QUIC secret when it has one, else random; wiped when the group goes. */
void amn_h3s_token_keys(h3_group *g, const amn_st_config *cfg);
void amn_h3s_token_keys_wipe(h3_group *g);
/* The stateless reset token of one of our connection IDs
 * (NGTCP2_STATELESS_RESET_TOKENLEN bytes). 0 or an ngtcp2 error. */
int amn_h3s_reset_token(const amn_h3_listener *l, const ngtcp2_cid *cid, uint8_t *token);
/* The token of an Initial: *tt is what it validated (Retry, NEW_TOKEN, or
 * UNKNOWN: none, or one not ours that is ignored), *ocid the original
 * destination connection ID of a Retry token. 0, or -1 when the Initial is
 * to be refused (INVALID_TOKEN: a bad Retry token). */
int amn_h3s_token_check(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                        ngtcp2_cid *ocid, ngtcp2_token_type *tt);
/* Answers without a connection: a Retry (never larger than 3 x pktlen),
 * a stateless reset (a short-header packet of no connection of ours). */
void amn_h3s_send_retry(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                        size_t pktlen);
void amn_h3s_send_stateless_reset(amn_h3_listener *l, const ngtcp2_version_cid *vc, size_t pktlen,
                                  const struct sockaddr *from, socklen_t fromlen);
/* A NEW_TOKEN token for the client's next connection (handshake done). */
void amn_h3s_send_new_token(h3_sconn *sc);

/* ---- session tickets and 0-RTT (h3_server_ticket.c) ---- */
/* The group's ticket key, anti-replay table and ticket identities (0-RTT
 * is off when the table cannot be had); freed, the key wiped. */
void amn_h3s_ticket_group_init(h3_group *g);
void amn_h3s_ticket_group_free(h3_group *g);
/* The loop's own GnuTLS anti-replay window over the group's table (l->ar),
 * and its end. */
void amn_h3s_ticket_attach(amn_h3_listener *l);
void amn_h3s_ticket_detach(amn_h3_listener *l);
/* A new connection's TLS session: tickets under the current key, 0-RTT
 * with anti-replay, the handshake hook that finds the identity a ticket
 * stands for and remembers the one of each ticket we issue. */
void amn_h3s_ticket_session(h3_sconn *sc);
/* The ClientHello is processed (1-RTT keys): an identity taken from a
 * ticket GnuTLS did not accept is dropped. */
void amn_h3s_ticket_hello_done(h3_sconn *sc);
/* The handshake completed: the client's identity (a resumed session's
 * certificate verified again, and the one the ticket stood for) and the
 * resumption and 0-RTT counters. 0, or -1 to refuse (TLS alert set). */
int amn_h3s_ticket_handshake_done(h3_sconn *sc);
/* A session ticket for resumption and 0-RTT next time. */
void amn_h3s_ticket_send(h3_sconn *sc);

/* ---- request streams (h3_server_stream.c) ---- */
extern const nghttp3_callbacks amn_h3s_h3cbs; /* the HTTP/3 callbacks of a server connection */
/* Keep-alive PINGs while calls are open (an open connection). */
void amn_h3s_update_keepalive(h3_sconn *sc);
/* idle_timeout_ms passed without a call on the connection */
void amn_h3s_idle_cb(struct ev_loop *ev, ev_timer *w, int revents);
/* The connection is over: the calls of its streams end as failed
 * (UNAVAILABLE, `msg`) and nothing of them is sent any more (detach);
 * the server stops: its calls fail and may still send their final status
 * (fail); the streams are freed (free). */
void amn_h3s_streams_detach_all(h3_sconn *sc, const char *msg);
void amn_h3s_streams_fail_all(h3_sconn *sc, const char *msg);
void amn_h3s_streams_free_all(h3_sconn *sc);
/* ngtcp2 callbacks about streams */
int amn_h3s_q_stream_close(ngtcp2_conn *q, uint32_t flags, int64_t id, uint64_t code, void *ud, void *sud);
int amn_h3s_q_stream_reset(ngtcp2_conn *q, int64_t id, uint64_t final, uint64_t code, void *ud, void *sud);
int amn_h3s_q_stop_sending(ngtcp2_conn *q, int64_t id, uint64_t code, void *ud, void *sud);
int amn_h3s_q_extend_remote_bidi(ngtcp2_conn *q, uint64_t max, void *ud);

/* ---- connections (h3_server_conn.c) ---- */
/* A new connection from an Initial the listener admitted (`addr`: the
 * client's address as text). `ocid`: the original destination connection
 * ID when the client came back with our Retry token; `token`: the type of
 * a validated token (Retry or NEW_TOKEN), which lifts the
 * anti-amplification limit. Nothing is kept when it cannot be set up. */
void amn_h3s_conn_new(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                      const char *addr, const uint8_t *pkt, size_t len, const ngtcp2_cid *ocid,
                      ngtcp2_token_type token);
/* A datagram for the connection. */
void amn_h3s_conn_read(h3_sconn *sc, const struct sockaddr *from, socklen_t fromlen, const uint8_t *pkt,
                       size_t len);
/* Graceful shutdown of an open connection: GOAWAY with the maximum ID now,
 * the final one a few RTTs later, then it closes once its streams are done. */
void amn_h3s_conn_shutdown(h3_sconn *sc, const char *why);
/* Immediate close: CONNECTION_CLOSE (unless closing or draining already),
 * then gone. */
void amn_h3s_conn_close_now(h3_sconn *sc, const char *why);
/* Gone at once: calls failed, state freed, `why` logged (debug). */
void amn_h3s_conn_free(h3_sconn *sc, const char *why);

#endif
