/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 sessions in memory, for tests/unit/test_h3_binding.c and the
 * HTTP/3 fuzz targets (fuzz/fuzz_h3*.c): the library's HTTP/3 server
 * binding on one server loop built by hand (as amn_server_start builds
 * one, without its thread) and the HTTP/3 client binding under a client
 * built by hand (its I/O loop runs here, as fuzz_h2_client.c does), one
 * thread, never waiting.
 *
 * No datagram goes through a socket: the sockets exist (the server's
 * listener is bound on 127.0.0.1, the client's connected to it) but every
 * send is captured by the test hook amn_h3_test_sendmsg (h3.h) into a queue
 * the harness owns (GSO batches cut into their datagrams), and each is
 * handed to the other side through amn_h3s_test_datagram /
 * amn_h3c_test_datagram, after an optional filter that may drop it,
 * duplicate it or hold it back (reordering). Time is the harness's:
 * amn_h3_test_clock, the server loop's clock and the pool's clock all read
 * hm.now; the libev timers of the connections are invoked by hm_advance
 * when the fake clock passes ngtcp2's expiry (the closing and draining
 * periods once it moved 3 PTO).
 *
 * The harness's own allocations go through HM_MALLOC / HM_FREE so that an
 * allocation-failure test can keep them out of its count.
 */
#ifndef AMN_TESTS_H3_MEM_H
#define AMN_TESTS_H3_MEM_H

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"
#include "client_ops.h"
#include "server/server_internal.h"
#include "transport/h3/h3_client_int.h"
#include "transport/h3/h3_server_int.h"

#ifndef HM_MALLOC
#define HM_MALLOC malloc
#define HM_FREE free
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

typedef struct hm_dgram {
  struct hm_dgram *next;
  bool to_server;
  struct sockaddr_storage to; /* to the client: its local address; to the server: where it comes from */
  socklen_t tolen;
  int fd;                     /* the sender's socket */
  size_t len;
  uint8_t data[];
} hm_dgram;

/* What the filter makes of a datagram. */
enum { HM_PASS, HM_DROP, HM_DUP, HM_HOLD };

typedef struct h3mem {
  uint64_t now; /* ns */
  amn_server *srv;
  amn_srv_loop sl;
  amn_h3_listener *l;
  uint16_t port;
  amn_client *cl;
  char url[64];
  hm_dgram *head, **tail; /* in flight */
  hm_dgram *held;         /* held back: delivered after the next ones (reordering) */
  size_t sent_to_server, sent_to_client, delivered, dropped;
  int (*filter)(struct h3mem *m, const hm_dgram *d); /* NULL: every datagram passes */
  amn_tls_ctx *cli_ctx;   /* set: the clients' TLS context (hm_client_new takes a reference, not its files) */
  void *ud;
} h3mem;

static h3mem *g_hm;

static inline uint64_t hm_clock(void) { return g_hm->now; }
static inline int64_t hm_clock_ns(void) { return (int64_t)g_hm->now; }
static inline double hm_pool_now(amn_client *cl) { (void)cl; return (double)g_hm->now / 1e9; }

static inline void hm_push(h3mem *m, hm_dgram *d) {
  d->next = NULL;
  *m->tail = d;
  m->tail = &d->next;
}

static inline hm_dgram *hm_pop(h3mem *m) {
  hm_dgram *d = m->head;
  if (!d) return NULL;
  m->head = d->next;
  if (!m->head) m->tail = &m->head;
  return d;
}

static inline h3c_conn *hm_cconn_fd(h3mem *m, int fd);

/* The UDP send path of both sides (amn_h3_test_sendmsg). */
static inline ssize_t hm_sendmsg(int fd, const struct msghdr *mh, int flags) {
  (void)flags;
  h3mem *m = g_hm;
  size_t len = 0;
  for (size_t i = 0; i < mh->msg_iovlen; i++) len += mh->msg_iov[i].iov_len;
  size_t gso = len;
  for (struct cmsghdr *cm = mh->msg_controllen ? CMSG_FIRSTHDR((struct msghdr *)mh) : NULL; cm;
       cm = CMSG_NXTHDR((struct msghdr *)mh, cm))
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_SEGMENT) {
      uint16_t seg;
      memcpy(&seg, CMSG_DATA(cm), sizeof seg);
      gso = seg;
    }
  const uint8_t *p = mh->msg_iov[0].iov_base; /* the library sends one iovec */
  bool to_server = fd != m->l->fd;
  for (size_t off = 0; off < len; off += gso) {
    size_t n = len - off < gso ? len - off : gso;
    hm_dgram *d = HM_MALLOC(sizeof *d + n);
    if (!d) abort();
    memset(d, 0, sizeof *d);
    d->to_server = to_server;
    d->fd = fd;
    h3c_conn *cc = to_server ? hm_cconn_fd(m, fd) : NULL;
    if (cc) { /* the client's address now: its socket may be gone when this arrives */
      memcpy(&d->to, &cc->b.local, cc->b.local_len);
      d->tolen = cc->b.local_len;
    } else if (to_server) {
      d->tolen = sizeof d->to;
      if (getsockname(fd, (struct sockaddr *)&d->to, &d->tolen) != 0) d->tolen = 0;
    } else if (mh->msg_name && mh->msg_namelen <= sizeof d->to) {
      memcpy(&d->to, mh->msg_name, mh->msg_namelen);
      d->tolen = mh->msg_namelen;
    }
    d->len = n;
    memcpy(d->data, p + off, n);
    if (to_server) m->sent_to_server++;
    else m->sent_to_client++;
    hm_push(m, d);
  }
  return (ssize_t)len;
}

static inline uint16_t hm_port_of(const struct sockaddr_storage *a) {
  return ntohs(a->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)a)->sin6_port
                                        : ((const struct sockaddr_in *)a)->sin_port);
}

static inline h3c_state *hm_cstate(h3mem *m) { return m->cl ? SLOT(&m->cl->ct) : NULL; }

/* The client's connection whose socket is fd (NULL: gone). */
static inline h3c_conn *hm_cconn_fd(h3mem *m, int fd) {
  h3c_state *hs = hm_cstate(m);
  for (h3c_conn *cc = hs ? hs->conns : NULL; cc; cc = cc->next)
    if (cc->b.fd == fd && cc->b.q) return cc;
  return NULL;
}

static inline void hm_deliver(h3mem *m, hm_dgram *d) {
  m->delivered++;
  if (d->to_server) {
    if (d->tolen) amn_h3s_test_datagram(&m->sl.bl, d->data, d->len, (struct sockaddr *)&d->to, d->tolen);
    return;
  }
  h3c_state *hs = hm_cstate(m);
  for (h3c_conn *cc = hs ? hs->conns : NULL; cc; cc = cc->next)
    if (cc->b.q && hm_port_of(&cc->b.local) == hm_port_of(&d->to)) {
      amn_h3c_test_datagram(&m->cl->ct, cc->b.fd, d->data, d->len, (struct sockaddr *)&m->l->local, m->l->local_len);
      return;
    }
}

/* Hands over what is in flight (the filter decides); new datagrams the
 * deliveries make wait for the next round. true when something moved. */
static inline bool hm_flush_net(h3mem *m) {
  hm_dgram *list = m->head;
  m->head = NULL;
  m->tail = &m->head;
  bool any = list != NULL;
  while (list) {
    hm_dgram *d = list;
    list = d->next;
    int v = m->filter ? m->filter(m, d) : HM_PASS;
    if (v == HM_HOLD) {
      d->next = m->held;
      m->held = d;
      continue;
    }
    if (v == HM_DROP) m->dropped++;
    else hm_deliver(m, d);
    if (v == HM_DUP) hm_deliver(m, d);
    HM_FREE(d);
  }
  if (!any && m->held) { /* held ones go once nothing else is in flight */
    while (m->held) {
      hm_dgram *d = m->held;
      m->held = d->next;
      hm_deliver(m, d);
      HM_FREE(d);
    }
    any = true;
  }
  return any;
}

/* A filter: the path is silent, every datagram is lost. */
static inline int hm_silence(h3mem *m, const hm_dgram *d) {
  (void)m, (void)d;
  return HM_DROP;
}

static inline void hm_drop_all(h3mem *m) {
  hm_dgram *d;
  while ((d = hm_pop(m)) != NULL) HM_FREE(d);
  while ((d = m->held) != NULL) {
    m->held = d->next;
    HM_FREE(d);
  }
}

/* One turn of both loops (their prepare watchers flush the connections),
 * then the datagrams in flight. true when anything moved. */
static inline bool hm_turn(h3mem *m) {
  ev_run(m->sl.ev, EVRUN_NOWAIT);
  if (m->cl) ev_run(m->cl->ev, EVRUN_NOWAIT);
  bool moved = hm_flush_net(m);
  ev_run(m->sl.ev, EVRUN_NOWAIT);
  if (m->cl) ev_run(m->cl->ev, EVRUN_NOWAIT);
  return moved || m->head || m->held;
}

/* Turns until nothing moves (at most `max`). Returns the turns taken. */
static inline int hm_settle(h3mem *m, int max) {
  int i;
  for (i = 0; i < max && hm_turn(m); i++) {
  }
  return i;
}

/* The earliest ngtcp2 expiry of any connection (UINT64_MAX: none). */
static inline uint64_t hm_next_expiry(h3mem *m) {
  uint64_t t = UINT64_MAX;
  for (h3_sconn *sc = m->l->conns; sc; sc = sc->next)
    if (sc->b.q && sc->state < SC_CLOSING) {
      uint64_t e = ngtcp2_conn_get_expiry(sc->b.q);
      if (e < t) t = e;
    }
  h3c_state *hs = hm_cstate(m);
  for (h3c_conn *cc = hs ? hs->conns : NULL; cc; cc = cc->next)
    if (cc->b.q && cc->st != CC_CLOSED) {
      uint64_t e = ngtcp2_conn_get_expiry(cc->b.q);
      if (e < t) t = e;
    }
  return t;
}

/* The clock moves `ns` ahead; the expiry timers now due run (a server
 * connection's closing or draining period ends when the clock moved 3 PTO
 * at once). */
static inline void hm_advance(h3mem *m, uint64_t ns) {
  m->now += ns;
  for (h3_sconn *sc = m->l->conns, *next; sc; sc = next) {
    next = sc->next;
    bool due = sc->state >= SC_CLOSING ? ns >= 3 * ngtcp2_conn_get_pto(sc->b.q)
                                       : sc->b.q && ngtcp2_conn_get_expiry(sc->b.q) <= m->now;
    if (due) ev_invoke(m->sl.ev, &sc->b.timer, EV_TIMER);
  }
  h3c_state *hs = hm_cstate(m);
  for (h3c_conn *cc = hs ? hs->conns : NULL, *next; cc; cc = next) {
    next = cc->next;
    if (cc->b.q && cc->st != CC_CLOSED && ngtcp2_conn_get_expiry(cc->b.q) <= m->now)
      ev_invoke(m->cl->ev, &cc->b.timer, EV_TIMER);
  }
}

/* Jumps to the next expiry (at least 1 ms, at most `cap` ns) and runs it. */
static inline void hm_next_timer(h3mem *m, uint64_t cap) {
  uint64_t t = hm_next_expiry(m);
  uint64_t step = t == UINT64_MAX || t <= m->now ? NGTCP2_MILLISECONDS : t - m->now;
  if (step < NGTCP2_MILLISECONDS) step = NGTCP2_MILLISECONDS;
  if (step > cap) step = cap;
  hm_advance(m, step);
}

/* ---- a peer playing raw streams on one of the bindings' connections ---- */

/* Writes len bytes (then FIN when `fin`) on stream sid of connection b,
 * through its ngtcp2 connection straight into packets of their own, which
 * go in flight to the other side (to_server: b is a client connection).
 * The bytes must stay valid until acknowledged (ngtcp2 keeps pointers).
 * Returns the bytes ngtcp2 took (less when flow or congestion control
 * stops it), or a negative ngtcp2 error. */
static inline ngtcp2_ssize hm_raw_write(h3mem *m, amn_h3_conn *b, bool to_server, int64_t sid, const uint8_t *p, size_t len,
                                 bool fin) {
  size_t off = 0;
  for (int guard = 0; guard < 256; guard++) {
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    uint8_t pkt[1500];
    ngtcp2_vec v = {p ? (uint8_t *)p + off : NULL, len - off};
    ngtcp2_ssize nd = -1;
    uint32_t flags = fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(b->q, &ps.path, &pi, pkt, 1200, &nd, flags, sid, &v, 1, m->now);
    if (n < 0) return off ? (ngtcp2_ssize)off : n;
    if (nd > 0) off += (size_t)nd;
    if (n == 0) break; /* blocked */
    hm_dgram *d = HM_MALLOC(sizeof *d + (size_t)n);
    if (!d) abort();
    memset(d, 0, sizeof *d);
    d->to_server = to_server;
    d->fd = b->fd;
    const struct sockaddr *a = to_server ? (const struct sockaddr *)&b->local : ps.path.remote.addr;
    socklen_t al = to_server ? b->local_len : ps.path.remote.addrlen;
    if (al <= sizeof d->to) {
      memcpy(&d->to, a, al);
      d->tolen = al;
    }
    d->len = (size_t)n;
    memcpy(d->data, pkt, (size_t)n);
    if (to_server) m->sent_to_server++;
    else m->sent_to_client++;
    hm_push(m, d);
    if (off == len && (nd >= 0 || !fin || len == 0)) break;
  }
  ngtcp2_conn_update_pkt_tx_time(b->q, m->now);
  amn_h3_update_timer(b);
  return (ngtcp2_ssize)off;
}

/* ---- certificates: the development PKI in a new temporary directory ---- */

#include <ftw.h>
#include "amn/pki.h"

typedef struct hm_pki {
  char dir[256];      /* the temporary directory (removed by hm_pki_free) */
  amn_tls_opts srv, cli;
  char srv_paths[3 * 4096], cli_paths[3 * 4096];
} hm_pki;

static inline int hm_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

/* 0, or -1 with the reason in err. */
static inline int hm_pki_init(hm_pki *k, char *err, size_t errlen) {
  const char *t = getenv("TMPDIR");
  snprintf(k->dir, sizeof k->dir, "%s/amn-h3mem-XXXXXX", t && *t ? t : "/tmp");
  if (!mkdtemp(k->dir)) {
    snprintf(err, errlen, "mkdtemp: %s", strerror(errno));
    return -1;
  }
  char pki[300];
  snprintf(pki, sizeof pki, "%s/pki", k->dir);
  if (amn_pki_init(pki, false, err, errlen) != 0 ||
      amn_pki_paths(pki, "server", &k->srv, k->srv_paths, sizeof k->srv_paths) != 0 ||
      amn_pki_paths(pki, "client", &k->cli, k->cli_paths, sizeof k->cli_paths) != 0)
    return -1;
  return 0;
}

static inline void hm_pki_free(hm_pki *k) { nftw(k->dir, hm_rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- the server: one loop, its HTTP/3 listener ---- */

/* `o`: the server's options (transport HTTP/3, mTLS); handlers are
 * registered by the caller before hm_server_start. */
static inline int hm_server_new(h3mem *m, const amn_server_opts *o, char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  m->tail = &m->head;
  m->now = 1000 * NGTCP2_SECONDS;
  g_hm = m;
  return amn_server_new(&m->srv, o, err, errlen);
}

static inline int hm_server_start(h3mem *m, char *err, size_t errlen) {
  amn_srv_loop *sl = &m->sl;
  sl->srv = m->srv;
  sl->bl.first = &sl->bl;
  sl->bl.cfg = &m->srv->bc;
  sl->bl.counters = &m->srv->bc;
  sl->bl.calls = &amn_call_binding;
  sl->bl.ud = sl;
  sl->lfd = -1;
  amn_srv_loop_setup(sl, hm_clock_ns); /* as amn_server_start does */
  sl->thread = pthread_self();       /* this thread is the loop */
  int rc = 0;
  m->l = amn_h3s_open("127.0.0.1", 0, true, &m->port, &rc, err, errlen);
  if (!m->l) return rc ? rc : -1;
  amn_h3s_attach(&sl->bl, m->l);
  snprintf(m->url, sizeof m->url, "https://127.0.0.1:%u", m->port);
  amn_h3_test_sendmsg = hm_sendmsg;
  amn_h3_test_clock = hm_clock;
  return 0;
}

/* As amn_server_free does with a started server's loop. */
static inline void hm_server_free(h3mem *m) {
  hm_drop_all(m);
  amn_srv_loop *sl = &m->sl;
  amn_h3s_close_all(&sl->bl);
  hm_drop_all(m);
  amn_srv_loop_drain_ops(sl);
  amn_srv_loop_run_writable(sl);
  amn_call_cache_free(sl);
  ev_ref(sl->ev);
  ev_async_stop(sl->ev, &sl->wake);
  amn_ioloop_stop(&sl->io);
  amn_h3s_free(&sl->bl);
  ev_loop_destroy(sl->ev);
  amn_server_free(m->srv);
  amn_h3_test_sendmsg = NULL;
  amn_h3_test_clock = NULL;
  g_hm = NULL;
}

/* ---- the client, built by hand (as amn_client_new, without its thread) ---- */

static inline void hm_before_flush(amn_ioloop *l) {
  amn_client *cl = l->owner;
  if (cl->pool_dirty) amn_pool_maintain(cl);
}

/* `tls`: the client's certificate, key and CA (copied). NULL, with the
 * reason in err, when it cannot be made. */
static inline amn_client *hm_client_new(h3mem *m, const amn_tls_opts *tls, char *err, size_t errlen) {
  amn_client *cl = calloc(1, sizeof *cl);
  if (!cl) return NULL;
  amn_client_opts_init(&cl->o);
  cl->o.url = m->url;
  cl->o.transport = AMN_TRANSPORT_H3;
  cl->o.tls = *tls;
  cl->o.tls.server_name = "localhost";
  cl->o.max_recv_message = 1u << 20;
  cl->o.max_send_message = 1u << 20;
  cl->o.initial_window_size = 1u << 20;
  cl->o.stream_send_buffer = 4u << 20;
  cl->o.connect_timeout_ms = 10000;
  cl->o.pool_max_connections = 1;
  cl->o.idle_timeout_ms = 0;
  cl->o.backoff_base_ms = 1000;
  cl->o.backoff_max_ms = 1000;
  pthread_mutex_init(&cl->stats_mu, NULL);
  pthread_mutex_init(&cl->cmu, NULL);
  pthread_cond_init(&cl->ccv, NULL);
  cl->now = hm_pool_now;
  if (amn_client_parse_url(cl->o.url, &cl->tls_on, cl->host, sizeof cl->host, &cl->port, cl->authority,
                           sizeof cl->authority, err, errlen) != 0)
    goto fail;
  cl->tp = &amn_h3c_transport;
  static const char *const alpn_h3[] = {"h3", NULL};
  if (m->cli_ctx) {
    amn_tls_ctx_ref(m->cli_ctx);
    cl->tls_h3 = m->cli_ctx;
  } else if (amn_tls_ctx_new(&cl->tls_h3, AMN_TLS_CLIENT, &cl->o.tls, alpn_h3, err, errlen) != 0) {
    goto fail;
  }
  const char *urls[] = {cl->o.url};
  if (amn_pool_init(cl, urls, 1, err, errlen) != 0) goto fail;
  cl->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  if (!cl->ev) goto fail;
  amn_ioloop_init(&cl->io, cl->ev);
  cl->io.owner = cl;
  cl->io.before_flush = hm_before_flush;
  cl->thread = pthread_self(); /* this thread is the I/O thread */
  cl->ct.ev = cl->ev;
  cl->ct.io = &cl->io;
  cl->ct.tls_h3 = cl->tls_h3;
  cl->ct.server_name = cl->o.tls.server_name;
  cl->ct.connect_timeout_ms = cl->o.connect_timeout_ms;
  cl->ct.initial_window_size = cl->o.initial_window_size;
  cl->ct.call_cbs = &amn_client_call_cbs;
  m->cl = cl;
  return cl;
fail:
  if (cl->tls_h3) amn_tls_ctx_unref(cl->tls_h3);
  amn_pool_free(cl);
  pthread_mutex_destroy(&cl->stats_mu);
  pthread_mutex_destroy(&cl->cmu);
  pthread_cond_destroy(&cl->ccv);
  free(cl);
  return NULL;
}

/* As amn_client_free begins: pending calls fail, connections close. */
static inline void hm_client_stop(h3mem *m) {
  amn_client *cl = m->cl;
  atomic_store(&cl->stopping, true);
  amn_client_fail_pending(cl, AMN_STATUS_CANCELLED, "client is shutting down");
  amn_pool_close_all(cl, "client shutting down");
}

static inline void hm_client_free(h3mem *m) {
  amn_client *cl = m->cl;
  for (size_t i = 0; i < cl->neps; i++) amn_h3c_transport.endpoint_free(&cl->eps[i].t);
  amn_h3c_transport.client_free(&cl->ct);
  amn_ioloop_stop(&cl->io);
  ev_loop_destroy(cl->ev);
  amn_tls_ctx_unref(cl->tls_h3);
  amn_pool_free(cl);
  pthread_mutex_destroy(&cl->stats_mu);
  pthread_mutex_destroy(&cl->cmu);
  pthread_cond_destroy(&cl->ccv);
  free(cl);
  m->cl = NULL;
}

#endif
