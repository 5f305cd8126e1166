/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: HTTP/3 transport (gRPC over HTTP/3, grpc/proposal G2) on
 * ngtcp2 1.11 + ngtcp2_crypto_gnutls + nghttp3 1.8 (Debian bookworm-backports).
 *
 * h3_common.c holds what the server (h3_server*.c, h3_server_int.h) and
 * the client (h3_client*.c, h3_client_int.h) share: the per-connection
 * packet pump (ngtcp2 <-> nghttp3 <-> UDP with GSO), the TLS handshake
 * driver that keeps the GnuTLS error code for a precise refusal reason,
 * send buffers that keep response / request bytes until the peer
 * acknowledged them, the stream callbacks both sides use alike, the write
 * batching (a connection with something to send is flushed once per loop
 * iteration), UDP socket setup and the accounting of the transport's own
 * memory. h3_replay.c is the 0-RTT anti-replay table of a server.
 */
#ifndef AMN_H3_H
#define AMN_H3_H

#include <ev.h>
#include <gnutls/gnutls.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "rpc/rpc.h"
#include "transport/stransport.h"

/* ------------------------------------------------------------------ */
/* Server hooks (h3_server*.c), called by server/server.c            */
/* ------------------------------------------------------------------ */

typedef struct amn_client amn_client;
typedef struct amn_h3_listener amn_h3_listener;

/* Opens the UDP socket of one loop bound to host:port (SO_REUSEPORT, so
 * every loop binds the same port; port 0 picks one, returned in *bound).
 * `first` (loop 0): first make sure no other socket holds the port (a plain
 * bind without SO_REUSEPORT), as the TCP listener does. Returns NULL with
 * AMN_EIO/AMN_ENOMEM in *rc and the reason in err. Any thread, before the
 * loop runs. */
amn_h3_listener *amn_h3s_open(const char *host, uint16_t port, bool first, uint16_t *bound, int *rc, char *err,
                              size_t errlen);
/* A listener on a UDP socket the application bound (amn_server_opts.
 * listen_fd_udp): made non-blocking and set up as amn_h3s_open's; the
 * listener owns fd from now on (closed on failure too). */
amn_h3_listener *amn_h3s_adopt(int fd, uint16_t *bound, int *rc, char *err, size_t errlen);
/* Attaches an opened listener to its loop (l->ev exists, the loop thread
 * is not running yet); it is kept in loop->h3. Loops of one server share
 * their socket group state (session ticket key, token secret, anti-replay
 * table, counters) through loop 0 (loop->first), so attach loop 0 first. */
void amn_h3s_attach(amn_st_loop *loop, amn_h3_listener *l);
/* Graceful stop (loop thread): no new connections; every connection gets
 * an HTTP/3 GOAWAY (shutdown notice, then the final one) and closes once
 * its streams are done. */
void amn_h3s_drain_all(amn_st_loop *loop);
/* Hard stop (loop thread): calls left end with UNAVAILABLE, connections
 * close (CONNECTION_CLOSE), the loop's socket stops reading. When the last
 * loop of the server gets here, every socket of the server is closed. */
void amn_h3s_close_all(amn_st_loop *loop);
/* Frees the loop's listener (after the loop thread exited). NULL-safe. */
void amn_h3s_free(amn_st_loop *loop);

/* Counters of a server's HTTP/3 side (all loops), for tests and logs. */
typedef struct amn_h3_server_stats {
  uint64_t conns_accepted;       /* QUIC connections created */
  uint64_t handshakes_done;      /* ... that completed the handshake */
  uint64_t handshake_timeouts;
  uint64_t handshake_failures;   /* closed during the handshake, not for time */
  uint64_t resumed;              /* handshakes resumed from a session ticket */
  uint64_t early_accepted;       /* 0-RTT accepted */
  uint64_t early_rejected;       /* 0-RTT offered but refused (replay, stale, too late) */
  uint64_t replays_detected;     /* ClientHellos seen twice by the anti-replay table */
  uint64_t early_calls;          /* calls whose request came as 0-RTT data */
  uint64_t retries_sent;         /* Retry packets (address validation) */
  uint64_t retry_tokens_ok;      /* Initials with a valid Retry token */
  uint64_t new_tokens_ok;        /* Initials with a valid NEW_TOKEN token */
  uint64_t tokens_bad;           /* invalid / expired tokens */
  uint64_t stateless_resets;     /* sent for packets of unknown connections */
  uint64_t stateless_resets_limited; /* not sent: over the rate limit */
  uint64_t version_negotiations; /* sent for unsupported versions */
  uint64_t path_validations;     /* successful validations of a new client address */
  uint64_t key_updates;          /* 1-RTT key generations installed after the first */
  uint64_t datagrams_received;   /* UDP datagrams read (all loops) */
  uint64_t datagrams_coalesced;  /* ... of them in receives that carried several (UDP GRO) */
  uint32_t conns_open;           /* right now (all the server's connections, HTTP/2 ones too), but */
  uint32_t conns_closing;        /* ... those in their closing or draining period (HTTP/3) */
  uint32_t handshaking;          /* right now */
} amn_h3_server_stats;
/* The counters of the server whose loop 0 is `first` (any thread). */
void amn_h3s_stats(amn_st_loop *first, amn_h3_server_stats *out);
/* Replaces the session ticket encryption key of the server now (as the
 * periodic rotation does, AMN_H3_TICKET_ROTATE_S): tickets issued before
 * no longer resume. */
void amn_h3s_rotate_ticket_key(amn_st_loop *first);

#define AMN_H3_TICKET_ROTATE_S (12 * 3600) /* session ticket key lifetime */
#define AMN_H3_TICKET_LIFETIME_S 7200      /* what a ticket may be used for */
#define AMN_H3_REPLAY_WINDOW_MS 10000      /* 0-RTT ClientHello recording window (RFC 8446 8.2) */
#define AMN_H3_REPLAY_MAX 65536            /* ClientHellos recorded at most: beyond, 0-RTT is refused */
#define AMN_H3_TICKET_IDS_MAX 16384        /* client identities kept by ticket (for 0-RTT) */
#define AMN_H3_NEW_TOKEN_TTL_S (24 * 3600) /* NEW_TOKEN address validation tokens */
#define AMN_H3_RETRY_TOKEN_TTL_S 10        /* Retry tokens */

/* ------------------------------------------------------------------ */
/* Client counters (h3_client.c)                                      */
/* ------------------------------------------------------------------ */

typedef struct amn_h3_client_stats {
  uint64_t connects;             /* connection attempts started */
  uint64_t handshakes;           /* ... completed */
  uint64_t resumed;              /* from a session ticket */
  uint64_t early_attempted;      /* 0-RTT data offered */
  uint64_t early_accepted;
  uint64_t early_rejected;       /* offered but refused: the calls were sent again */
  uint64_t early_calls;          /* calls whose request went out as 0-RTT data */
  uint64_t retries_received;     /* Retry packets (address validation by the server) */
  uint64_t tickets_received;     /* TLS session tickets kept for the next connection */
  uint64_t tokens_received;      /* NEW_TOKEN tokens kept for the next connection */
  uint64_t tokens_sent;          /* connections that presented a token */
  uint64_t key_updates;          /* 1-RTT key generations installed after the first */
  uint64_t migrations;           /* local address changes */
  uint64_t stateless_resets;     /* connections ended by a stateless reset */
  uint64_t datagrams_received;   /* UDP datagrams read */
  uint64_t datagrams_coalesced;  /* ... of them in receives that carried several (UDP GRO) */
} amn_h3_client_stats;
/* (filled by amn_h3c_transport.stats; public as amn_client_quic_stats,
 * amn_client_get_quic_stats in client.c) */

/* Test hook of the UDP send path of every QUIC connection (client and
 * server, h3_common.c): when set, called instead of sendmsg(2) for the
 * packet batches (with a UDP_SEGMENT control message when the kernel is to
 * cut the batch into datagrams, GSO), e.g. to make GSO fail with EIO as
 * some devices do. Set it before any connection exists, reset it to NULL
 * after the last one is gone. */
#ifdef AMN_TEST_HOOKS /* test builds only (CMake: AMN_BUILD_TESTS) */
typedef struct amn_h3_conn amn_h3_conn;
extern ssize_t (*amn_h3_test_sendmsg)(int fd, const struct msghdr *mh, int flags);
/* Sessions in memory (tests/unit/test_h3_binding.c, fuzz/fuzz_h3*.c): the
 * single datagrams (amn_h3_send_one: CONNECTION_CLOSE, Retry, version
 * negotiation, stateless resets) go through amn_h3_test_sendmsg too, as a
 * msghdr with the destination (NULL on a connected socket); when
 * amn_h3_test_clock is set, amn_h3_now() returns its time (ns) in place of
 * CLOCK_MONOTONIC (the libev timers still run on the loop's clock: the
 * test invokes them); amn_h3s_test_datagram hands a datagram to a server
 * loop's listener as its recvmmsg path does (the client's:
 * amn_h3c_test_datagram, h3_client.h). */
extern uint64_t (*amn_h3_test_clock)(void);
/* When set, sees the stream data every connection receives before nghttp3
 * does; returning true takes it away from the connection's nghttp3 (the
 * flow-control credit is granted back as nghttp3 would): a fuzz harness
 * playing the peer with raw streams decodes what it gets itself. */
extern bool (*amn_h3_test_stream_data)(amn_h3_conn *b, int64_t id, const uint8_t *data, size_t len, bool fin);
void amn_h3s_test_datagram(amn_st_loop *loop, const uint8_t *pkt, size_t len, const struct sockaddr *from,
                           socklen_t fromlen);
#endif

/* ------------------------------------------------------------------ */
/* Shared connection machinery (h3_common.c)                          */
/* ------------------------------------------------------------------ */

#define AMN_H3_SCIDLEN 16            /* our connection ID length */
#define AMN_H3_RX_BATCH 16           /* datagrams per recvmmsg */
#define AMN_H3_RX_DGRAM 65536        /* receive buffer per datagram */
#define AMN_H3_TX_MAX_PKTS 64        /* packets per GSO batch (also capped at 64 KiB) */
#define AMN_H3_TX_BUF (AMN_H3_TX_MAX_PKTS * 1500)
#define AMN_H3_MAX_UNACKED (1u << 20) /* sent but unacknowledged bytes kept per stream */
#define AMN_H3_SOCKBUF_SERVER (32u << 20) /* UDP socket buffers asked for (10K clients: BENCHMARKS.md) */
#define AMN_H3_SOCKBUF_CLIENT (4u << 20)
#define AMN_H3_MAX_STREAM_WINDOW (8u << 20) /* flow-control windows grow up to (auto-tuning) */
#define AMN_H3_MAX_CONN_WINDOW (32u << 20)

typedef struct amn_h3_conn amn_h3_conn;

/* Flushes a batch of connections before the loop blocks: one ev_prepare
 * per loop (server listener) or per client (all its connections), at the
 * lowest priority so that it runs after the loop's other prepare work
 * (which may produce data to send). */
typedef struct amn_h3_sched {
  struct ev_loop *ev;
  ev_prepare prep;
  amn_h3_conn *dirty;
} amn_h3_sched;

void amn_h3_sched_init(amn_h3_sched *s, struct ev_loop *ev);
void amn_h3_sched_stop(amn_h3_sched *s);

struct amn_h3_conn {
  ngtcp2_crypto_conn_ref ref;  /* what gnutls_session_set_ptr points to */
  ngtcp2_conn *q;
  nghttp3_conn *h;             /* NULL until 1-RTT (server) / 0-RTT or 1-RTT (client) keys */
  gnutls_session_t tls;
  int tls_rc;                  /* fatal GnuTLS code of a failed handshake, 0 if none */
  int h3_rc;                   /* nghttp3 error that closed the connection, 0 if none */
  struct ev_loop *ev;
  amn_h3_sched *sched;
  void (*flush)(amn_h3_conn *b);   /* writes pending packets (owner-specific errors) */
  void (*on_expiry)(amn_h3_conn *b);
  int fd;
  bool connected;              /* connected socket: no destination address on send */
  struct sockaddr_storage local;
  socklen_t local_len;
  uint8_t *txbuf;              /* AMN_H3_TX_BUF bytes, may be shared by a loop's connections */
  ev_timer timer;              /* ngtcp2 expiry */
  ev_io wev;                   /* socket writable after EAGAIN */
  uint8_t *pend;               /* unsent rest of a batch after EAGAIN */
  size_t pend_len, pend_gso;
  struct sockaddr_storage pend_to;
  socklen_t pend_tolen;
  bool no_gso;
  bool wrote;                  /* the last amn_h3_write sent packets */
  int sock_err;                /* errno of a failed send/recv (client: ECONNREFUSED) */
  unsigned key_gens;           /* update_key calls (1-RTT key generations prepared) */
  ngtcp2_mem mem;              /* this connection's allocators (see amn_h3_mem_usage) */
  nghttp3_mem hmem;
  struct amn_h3_blk *blocks;   /* every block they hold */
  ngtcp2_ccerr err; /* what we tell the peer when closing */
  bool dirty;
  amn_h3_conn *next_dirty;
};

/* Initialises the fields above (not q/h/tls); user_data of the ngtcp2
 * callbacks must be the owner struct whose first member is the conn. */
void amn_h3_conn_init(amn_h3_conn *b, struct ev_loop *ev, amn_h3_sched *sched, int fd, uint8_t *txbuf,
                      void (*flush)(amn_h3_conn *), void (*on_expiry)(amn_h3_conn *));
/* Stops the watchers, unschedules, frees the pending batch, deletes the
 * nghttp3 and ngtcp2 connections and the TLS session. */
void amn_h3_conn_release(amn_h3_conn *b);
void amn_h3_mark_dirty(amn_h3_conn *b);
/* Moves the connection to another socket (the client's rebinding). */
void amn_h3_conn_set_fd(amn_h3_conn *b, int fd);

/* Monotonic time in ngtcp2 units (ns). */
uint64_t amn_h3_now(void);
/* ngtcp2 callbacks shared by both sides. */
void amn_h3_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx);
/* recv_crypto_data: feeds the handshake to GnuTLS and keeps its fatal
 * error code in tls_rc (ngtcp2's own helper only reports "crypto error"). */
int amn_h3_recv_crypto_data(ngtcp2_conn *q, ngtcp2_encryption_level level, uint64_t offset, const uint8_t *data,
                            size_t len, void *user_data);
/* update_key: ngtcp2's, counting the key generations in b->key_gens (one
 * when the handshake completes, one more per key update). */
int amn_h3_update_key(ngtcp2_conn *q, uint8_t *rx_secret, uint8_t *tx_secret, ngtcp2_crypto_aead_ctx *rx_aead_ctx,
                      uint8_t *rx_iv, ngtcp2_crypto_aead_ctx *tx_aead_ctx, uint8_t *tx_iv,
                      const uint8_t *current_rx_secret, const uint8_t *current_tx_secret, size_t secretlen,
                      void *user_data);
/* Sets the ngtcp2 callbacks both sides share (crypto, keys, randomness,
 * stream data into nghttp3, acknowledged offsets, streams the peer's flow
 * control unblocked). The connection object given to ngtcp2 as user data
 * must start with its amn_h3_conn. */
void amn_h3_base_callbacks(ngtcp2_callbacks *cb);

/* Flow control of a new connection: every stream window starts at `win`
 * (the initial_window_size option), the connection's at 16 of them (at
 * most 1 GiB); ngtcp2 widens them (auto-tuning) while the receiver
 * consumes a window within a few round trips, up to
 * AMN_H3_MAX_STREAM_WINDOW / AMN_H3_MAX_CONN_WINDOW (never below where
 * they start). A paused receiver still holds its peer to the window. */
void amn_h3_flow_setup(ngtcp2_settings *st, ngtcp2_transport_params *p, uint64_t win);

/* Creates the nghttp3 connection (server or client) and binds its control
 * and QPACK streams. Returns 0 or a negative ngtcp2/nghttp3 code. */
int amn_h3_setup_http(amn_h3_conn *b, bool server, const nghttp3_callbacks *cbs, void *ud);

/* Writes what ngtcp2/nghttp3 have to send (one pacing quantum) and
 * re-arms the expiry timer. Returns 0, or a negative library error after
 * which the connection must be closed (b->err is set). */
int amn_h3_write(amn_h3_conn *b);
/* Re-arms the expiry timer from ngtcp2_conn_get_expiry. */
void amn_h3_update_timer(amn_h3_conn *b);
/* Sends one datagram (CONNECTION_CLOSE, version negotiation, ...); errors
 * are dropped packets. */
void amn_h3_send_one(int fd, const struct sockaddr *to, socklen_t tolen, const uint8_t *data, size_t len);
/* One receive batch: up to AMN_H3_RX_BATCH messages of AMN_H3_RX_DGRAM
 * bytes each. With UDP GRO (amn_h3_udp_setup asks for it) the kernel may
 * hand over several datagrams of one sender in one message: all of
 * seg[i] bytes but the last, which may be shorter (what a GSO sender cut,
 * or what the receiving side's GRO merged). */
typedef struct amn_h3_rx {
  uint8_t *bufs; /* AMN_H3_RX_BATCH x AMN_H3_RX_DGRAM, owned by the caller */
  struct mmsghdr msgs[AMN_H3_RX_BATCH];
  struct iovec iov[AMN_H3_RX_BATCH];
  struct sockaddr_storage from[AMN_H3_RX_BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl[AMN_H3_RX_BATCH];
  size_t seg[AMN_H3_RX_BATCH]; /* datagram size in message i (its length when it carries one) */
  uint64_t datagrams;          /* received by the last amn_h3_recv_batch */
  uint64_t coalesced;          /* ... of them in messages that carried several */
} amn_h3_rx;
/* Receives up to AMN_H3_RX_BATCH messages with one recvmmsg. Returns the
 * count (0: nothing) or -errno. Truncated messages are dropped (length 0). */
int amn_h3_recv_batch(int fd, amn_h3_rx *rx);
/* The datagram of message i that starts at *off (then *off moves past it):
 * sets *pkt and returns its length, 0 when the message has no more. */
size_t amn_h3_rx_next(const amn_h3_rx *rx, int i, size_t *off, const uint8_t **pkt);
/* Socket options of a QUIC UDP socket: receive/send buffers of `want`
 * bytes (SO_*BUFFORCE when permitted; a warning, once per process, when
 * the kernel caps them: net.core.rmem_max / wmem_max), path MTU discovery
 * on (no fragments), UDP GRO on receive where the kernel has it (several
 * datagrams per received message: amn_h3_rx_next splits them). */
void amn_h3_udp_setup(int fd, int family, int want);

/* Records a local error for CONNECTION_CLOSE. */
void amn_h3_set_liberr(amn_h3_conn *b, int liberr);
/* The name of an HTTP/3 or QPACK application error code (RFC 9114 8.1,
 * RFC 9204 6), e.g. "H3_CLOSED_CRITICAL_STREAM". */
const char *amn_h3_error_name(uint64_t code);
/* Describes the CONNECTION_CLOSE the peer sent (after NGTCP2_ERR_DRAINING). */
void amn_h3_describe_peer_close(amn_h3_conn *b, const char *peer, char *out, size_t cap);
/* The reason of our own failed TLS handshake ("client certificate not
 * issued by a trusted CA", "no client certificate presented", ...). */
const char *amn_h3_tls_reason(amn_h3_conn *b);
/* Frees the connection's TLS session once its handshake is complete (the
 * server, after its session ticket): the 1-RTT keys live in ngtcp2, whose
 * AEAD contexts are GnuTLS cipher handles of their own, and a QUIC peer
 * sends no TLS message after the handshake (no KeyUpdate in QUIC, no
 * post-handshake authentication asked); CRYPTO data that still comes is a
 * PROTOCOL_VIOLATION. An idle connection keeps ~15 KiB less. */
void amn_h3_tls_release(amn_h3_conn *b);

/* Header list conversion (nghttp3 copies the strings on submit). */
size_t amn_h3_nv(const amn_hdr_buf *b, nghttp3_nv *nva);

/* ---- stream callbacks both sides share ----
 * Their user data is the connection, whose first member is its
 * amn_h3_conn; nghttp3's stream user data is a request stream whose first
 * member is its amn_h3_sendbuf (both sides check it at compile time). */

/* Grants n bytes of stream `id` back to the peer (stream and connection
 * flow-control windows). */
void amn_h3_consume(amn_h3_conn *b, int64_t id, size_t n);
/* nghttp3 callbacks: acked_stream_data (the bytes leave the stream's send
 * buffer; a stream that stopped at AMN_H3_MAX_UNACKED resumes),
 * deferred_consume, stop_sending and reset_stream (passed on to ngtcp2). */
int amn_h3_on_acked(nghttp3_conn *h, int64_t id, uint64_t n, void *ud, void *sud);
int amn_h3_on_deferred_consume(nghttp3_conn *h, int64_t id, size_t n, void *ud, void *sud);
int amn_h3_on_stop_sending(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud);
int amn_h3_on_reset_stream(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud);
/* The stream_close part both sides share: nghttp3 closes the stream too
 * (with the peer's application error code, or H3_NO_ERROR). Returns 0, 1
 * when nghttp3 does not know the stream (the caller decides about the
 * peer's stream credit), or NGTCP2_ERR_CALLBACK_FAILURE (b->err set). */
int amn_h3_close_stream(amn_h3_conn *b, uint32_t flags, int64_t id, uint64_t code);

/* The transport's own memory accounting: bytes held by ngtcp2 and nghttp3
 * (each connection allocates through b->mem / b->hmem, which count and
 * keep track of every block: what the libraries lose is freed with the
 * connection) and by the send buffers below, all connections of the
 * process; its peak; and the bytes freed that way (lost by the libraries).
 * The byte counts are kept in test and fuzz builds only (AMN_TEST_HOOKS;
 * 0 otherwise); the blocks are tracked and swept in every build. */
void amn_h3_mem_usage(size_t *cur, size_t *peak);
void amn_h3_mem_reset_peak(void);
size_t amn_h3_mem_swept(void);

/* ------------------------------------------------------------------ */
/* Send buffer of one stream                                          */
/* ------------------------------------------------------------------ */

/* nghttp3 sends application data straight from the memory handed to it
 * and needs it until the peer acknowledged it: chunks live here until
 * amn_h3_sendbuf_ack. A chunk holds copied bytes (data[]) or a whole
 * message taken from the call (msg: no copy). New bytes are taken while
 * less than AMN_H3_MAX_UNACKED are held. */
typedef struct amn_h3_chunk {
  struct amn_h3_chunk *next;
  size_t len;
  const uint8_t *base;         /* the bytes: data, or msg->data + its offset when taken */
  amn_qmsg *msg;               /* taken message (freed with free() after the last ack), or NULL */
  uint8_t data[];
} amn_h3_chunk;

typedef struct amn_h3_sendbuf {
  amn_h3_chunk *head, *tail;
  size_t head_acked;           /* bytes of head already acknowledged */
  size_t unacked;              /* bytes held */
  bool blocked;                /* a fill stopped at AMN_H3_MAX_UNACKED (the stream waits for acks) */
  /* taken messages: `acked` more of their bytes acknowledged, `freed`
   * bytes of them freed (acknowledged whole, or dropped by
   * amn_h3_sendbuf_free); NULL: nobody to tell */
  void (*released)(void *owner, size_t acked, size_t freed);
  void *owner;
} amn_h3_sendbuf;

typedef ssize_t (*amn_h3_pull_fn)(void *call, uint8_t *buf, size_t len, bool *eof);
/* How many of len bytes pull would copy (-1: none), without copying. */
typedef ssize_t (*amn_h3_peek_fn)(void *call, size_t len, bool *eof);

/* Pulls the next bytes of a call into a new chunk, of the size peek says
 * (at most 64 KiB), and points vec at them.
 * Returns the byte count (0 only with *eof), -1 when the call has nothing
 * queued, -2 when AMN_H3_MAX_UNACKED bytes are already held (sb->blocked
 * until half of them are acknowledged), -3 out of memory. */
ssize_t amn_h3_sendbuf_fill(amn_h3_sendbuf *sb, amn_h3_peek_fn peek, amn_h3_pull_fn pull, void *call, bool *eof,
                            nghttp3_vec *vec);
typedef ssize_t (*amn_h3_take_fn)(void *call, amn_qmsg **m, bool *eof);
/* As amn_h3_sendbuf_fill, without a copy: the call's front message itself
 * (amn_st_calls.take) becomes the chunk's bytes. */
ssize_t amn_h3_sendbuf_take(amn_h3_sendbuf *sb, amn_h3_take_fn take, void *call, bool *eof, nghttp3_vec *vec);
/* Appends an already filled chunk (client: request bytes sent again after
 * the server refused 0-RTT) and points vec at it. */
void amn_h3_sendbuf_push(amn_h3_sendbuf *sb, amn_h3_chunk *ch, nghttp3_vec *vec);
/* Takes the oldest chunk out (NULL when empty). */
amn_h3_chunk *amn_h3_sendbuf_pop(amn_h3_sendbuf *sb);
/* n more bytes acknowledged: true when the stream was blocked and may
 * send again (half of AMN_H3_MAX_UNACKED or less held). */
bool amn_h3_sendbuf_ack(amn_h3_sendbuf *sb, uint64_t n);
void amn_h3_sendbuf_free(amn_h3_sendbuf *sb);

/* ------------------------------------------------------------------ */
/* 0-RTT anti-replay table (h3_replay.c)                              */
/* ------------------------------------------------------------------ */

/* A bounded, time-windowed set of ClientHello identifiers (PSK binders),
 * shared by all loops of a server (thread-safe). */
typedef struct amn_h3_replay amn_h3_replay;
amn_h3_replay *amn_h3_replay_new(size_t max_entries);
void amn_h3_replay_free(amn_h3_replay *t);
/* Records `id` until `expires` (seconds, same clock as `now`). Returns 0
 * when it was new, 1 when it is already recorded and not expired (a
 * replay), -1 when the table is full of live entries (the caller must then
 * refuse 0-RTT: it cannot tell). */
int amn_h3_replay_add(amn_h3_replay *t, const uint8_t *id, size_t len, time_t expires, time_t now);
size_t amn_h3_replay_count(amn_h3_replay *t);
/* Cache mode: a value per entry (freed with free_val when it expires, is
 * evicted, or the table goes); when full, the oldest entry goes. */
amn_h3_replay *amn_h3_tcache_new(size_t max_entries, void (*free_val)(void *));
/* Stores val under id until `expires` (takes val; an id already present
 * keeps its value and val is freed). 0, or -1 (val freed). */
int amn_h3_tcache_put(amn_h3_replay *t, const uint8_t *id, size_t len, time_t expires, time_t now, void *val);
/* Finds id (not expired) and lets copy() take what it needs from the value
 * under the table's lock. true when found and copy() returned true. */
bool amn_h3_tcache_get(amn_h3_replay *t, const uint8_t *id, size_t len, time_t now,
                       bool (*copy)(void *dst, const void *val), void *dst);

#endif
