/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the byte pump of one HTTP/2 connection, shared by the server
 * and the client side: non-blocking socket, optional TLS (GnuTLS), an
 * nghttp2 session, libev watchers.
 *
 * Reads decrypt into the loop's shared read buffer and feed nghttp2
 * directly (no per-connection read buffer). Writes are batched: a
 * connection with something to send is marked dirty and flushed once per
 * loop iteration (ev_prepare), coalescing all frames produced meanwhile
 * into few TLS records / one write. One exception per read event: a read
 * is decoded AMN_IO_SLICE bytes at a time, and once a slice has made
 * responses ready they go out before the next slice is decoded, so that
 * the peer works on them while the rest is decoded (many requests in
 * flight on one connection: the two sides no longer take turns).
 */
#ifndef AMN_H2IO_H
#define AMN_H2IO_H

#include <ev.h>
#include <gnutls/gnutls.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>

#include "tls/tls.h"
#include "transport/h2/h2mem.h"

#define AMN_IO_RBUF (64 * 1024)
#define AMN_IO_WBUF_HIGH (256 * 1024) /* stop pulling frames from nghttp2 above this */
#define AMN_IO_SLICE 4096 /* received bytes decoded before a read event's one early write (h2io.c io_read) */
/* After refusing a TLS handshake (server side), the alert is sent, the
 * write side closed, and the peer's bytes drained for at most this long
 * before the socket is closed, so a reset does not destroy the alert. */
#define AMN_IO_REFUSE_LINGER_S 0.5

typedef struct amn_h2io amn_h2io;

/* Per-event-loop context shared by all its connections. */
typedef struct amn_ioloop {
  struct ev_loop *ev;
  ev_prepare prep;
  amn_h2io *dirty;          /* connections to flush before the loop blocks */
  void (*before_flush)(struct amn_ioloop *); /* optional hook (deferred callbacks) */
  void *owner;
  uint8_t rbuf[AMN_IO_RBUF];
} amn_ioloop;

typedef enum { AMN_IO_HANDSHAKE, AMN_IO_OPEN, AMN_IO_CLOSED } amn_io_state;

typedef struct amn_h2io_cbs {
  /* TLS (or plaintext) established: create the nghttp2 session in io->h2.
   * Return 0, or non-zero to close (with a reason already logged). */
  int (*on_ready)(amn_h2io *io);
  /* The connection is closed (fd closed, session deleted). Called once. */
  void (*on_closed)(amn_h2io *io, const char *reason);
} amn_h2io_cbs;

struct amn_h2io {
  amn_ioloop *loop;
  const amn_h2io_cbs *cbs;
  int fd;
  amn_io_state state;
  gnutls_session_t tls;   /* NULL in plaintext (insecure) mode */
  nghttp2_session *h2;
  ev_io rw, ww;
  ev_timer hs_timer;      /* handshake deadline */
  uint8_t *out;           /* pending plaintext not yet accepted by TLS/socket */
  size_t out_off, out_len, out_cap;
  bool idle;              /* set by the owner while no call is in flight: once a
                           * flush has written everything, `out` is freed (it
                           * is allocated again by the next write), so that an
                           * idle connection holds no write buffer */
  bool dirty;
  amn_h2io *next_dirty;
  bool in_callback;       /* guards against freeing while nghttp2 runs */
  bool close_requested;
  char close_reason[160];
  bool is_client;
  const char *peer_name;  /* for logs */
  ev_tstamp last_rx;      /* ev_now() of the last bytes received (keepalive) */
  double linger_s;        /* > 0: after the last frame, half-close and drain the
                           * peer for up to this long before closing (so that a
                           * final GOAWAY is read, not lost to a TCP reset) */
  bool lingering;
};

void amn_ioloop_init(amn_ioloop *l, struct ev_loop *ev);
void amn_ioloop_stop(amn_ioloop *l);

/* Starts a connection on a connected non-blocking fd: TLS handshake when
 * tls != NULL (the session's transport is set to fd here), then on_ready. */
void amn_h2io_start(amn_h2io *io, amn_ioloop *l, const amn_h2io_cbs *cbs, int fd,
                    gnutls_session_t tls, double handshake_timeout_s, bool is_client);
/* Asks for a flush before the loop next blocks. Safe inside nghttp2 callbacks. */
void amn_h2io_mark_dirty(amn_h2io *io);
/* Flushes now (not from inside nghttp2 callbacks). */
void amn_h2io_flush(amn_h2io *io);
/* Closes at the next safe point; `reason` is kept for on_closed. */
void amn_h2io_close(amn_h2io *io, const char *reason);
/* The same after what nghttp2 still has to send (a GOAWAY): then half-close
 * and wait up to linger_s for the peer to close first. */
void amn_h2io_close_linger(amn_h2io *io, const char *reason, double linger_s);

/* Closes a connection's fd (the socket, or a test pipe's end). */
void amn_h2io_close_fd(int fd);

#ifdef AMN_TEST_HOOKS /* test builds only (CMake: AMN_BUILD_TESTS) */
/* The byte stream of every HTTP/2 connection, both bindings, through memory
 * the test controls instead of a socket (NULL, the default: the socket).
 * The connection's fd is then the test's (e.g. an eventfd that is readable
 * while bytes or the end of the stream wait): libev still watches it for
 * readiness; recv, send, shutdown(SHUT_WR) and close go to the hook, for
 * plaintext and under TLS alike (GnuTLS's push/pull functions). recv and
 * send return as recv(2)/send(2) do (-1 with errno EAGAIN: nothing now; 0
 * from recv: the peer's end of stream). `connect`, when set, replaces the
 * client's TCP connect: it returns a connected fd for host:port, or -1 with
 * errno. `mem`, when set, is the allocator of both bindings' nghttp2
 * sessions (allocation-failure tests). `now`, when set, is the bindings'
 * clock in seconds (AMN_H2_NOW: keepalive, PING policy, last_rx) instead of
 * ev_now: a test's fake clock; it then fires the bindings' keepalive timers
 * itself (amn_h2s_test_fire_timers, amn_h2c_test_fire_timers). One branch
 * per I/O call in test builds; none in others. */
typedef struct amn_h2io_test_io {
  ssize_t (*recv)(int fd, void *buf, size_t n);
  ssize_t (*send)(int fd, const void *buf, size_t n);
  void (*shutdown_wr)(int fd);
  void (*close)(int fd);
  int (*connect)(const char *host, uint16_t port);
  nghttp2_mem *mem;
  double (*now)(void);
} amn_h2io_test_io;
extern const amn_h2io_test_io *amn_h2io_test_hook;
#define AMN_H2_MEM (amn_h2io_test_hook && amn_h2io_test_hook->mem ? amn_h2io_test_hook->mem : amn_h2_mem())
#define AMN_H2_NOW(ev) (amn_h2io_test_hook && amn_h2io_test_hook->now ? amn_h2io_test_hook->now() : ev_now(ev))
#else
#define AMN_H2_MEM amn_h2_mem()
#define AMN_H2_NOW(ev) ev_now(ev)
#endif

/* Appends n bytes to the write buffer (growing it) and returns where to
 * write them; NULL when out of memory. For DATA sent without copying
 * through nghttp2 (NGHTTP2_DATA_FLAG_NO_COPY). */
uint8_t *amn_h2io_out_reserve(amn_h2io *io, size_t n);

#include "rpc/rpc.h"
/* Converts a header list for nghttp2 (which copies the strings on submit). */
size_t amn_h2_nv(const amn_hdr_buf *b, nghttp2_nv *nva);

#endif
