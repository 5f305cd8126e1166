/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, server side: the listeners. One UDP socket per event
 * loop (all bound to the same port with SO_REUSEPORT), the datagrams it
 * reads and where each goes: to the connection its destination ID names
 * (h3_server_cid.c), or, for no connection of ours, an answer without
 * state (version negotiation, a stateless reset or a Retry:
 * h3_server_token.c; a refusal) or a new connection (h3_server_conn.c).
 * Also the state the loops of one server share (h3_group: ticket key,
 * token secrets, anti-replay table, counters), graceful and hard stops.
 *
 * The rest of the server side, by concern: h3_server_conn.c (connection
 * lifecycle), h3_server_stream.c (request streams bound to the call core
 * through transport/stransport.h, as h2_server.c does with nghttp2
 * streams), h3_server_token.c (address validation, stateless resets),
 * h3_server_ticket.c (session tickets, 0-RTT and its anti-replay table,
 * h3_replay.c), h3_server_cid.c (connection IDs, packet steering); they
 * share h3_server_int.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transport/h3/h3_server_int.h"
#include "util/addr.h"
#include "util/log.h"

/* ------------------------------------------------------------------ */
/* Datagrams                                                          */
/* ------------------------------------------------------------------ */

static void send_version_negotiation(amn_h3_listener *l, const ngtcp2_version_cid *vc, const struct sockaddr *from,
                                     socklen_t fromlen) {
  uint8_t buf[256], r;
  gnutls_rnd(GNUTLS_RND_NONCE, &r, 1);
  uint32_t sv[2] = {0x1a2a3a4au, NGTCP2_PROTO_VER_V1}; /* a reserved (greasing) version, then v1 */
  ngtcp2_ssize n =
      ngtcp2_pkt_write_version_negotiation(buf, sizeof buf, r, vc->scid, vc->scidlen, vc->dcid, vc->dcidlen, sv, 2);
  if (n <= 0) return;
  STAT(l, version_negotiations); /* before the peer can see it: a test reads the counter once the peer reacted */
  amn_h3_send_one(l->fd, from, fromlen, buf, (size_t)n);
}

/* Refuses a new connection without keeping state: CONNECTION_CLOSE with
 * a transport error `code` and `reason` (may be NULL). */
static void refuse(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                   uint64_t code, const char *reason) {
  uint8_t buf[1500];
  ngtcp2_ssize n = ngtcp2_crypto_write_connection_close(buf, sizeof buf, hd->version, &hd->scid, &hd->dcid, code,
                                                        (const uint8_t *)reason, reason ? strlen(reason) : 0);
  if (n > 0) amn_h3_send_one(l->fd, from, fromlen, buf, (size_t)n);
}

/* The server takes a new connection: not while it stops, nor beyond
 * max_connections (refused without keeping state). */
static bool admit(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                  const char *addr) {
  amn_st_loop *loop = l->loop;
  const amn_st_config *cfg = loop->cfg;
  if (l->draining || loop->stopping) {
    AMN_DEBUG("QUIC connection from %s refused: the server is shutting down", addr);
    refuse(l, hd, from, fromlen, NGTCP2_CONNECTION_REFUSED, "server shutting down");
    return false;
  }
  if (cfg->max_connections && atomic_load(&loop->counters->nconns) >= cfg->max_connections) {
    bool again = false; /* the same client's other Initial datagrams (or retransmissions) */
    for (unsigned i = 0; i < 8 && !again; i++) again = ngtcp2_cid_eq(&l->refused[i], &hd->dcid);
    if (!again) {
      l->refused[l->nrefused++ % 8] = hd->dcid;
      unsigned long long n = atomic_fetch_add(&loop->counters->refused, 1) + 1;
      AMN_WARN("QUIC connection from %s refused: max_connections (%u) reached (%llu refused so far)", addr,
               cfg->max_connections, n);
    }
    refuse(l, hd, from, fromlen, NGTCP2_CONNECTION_REFUSED, "max_connections reached");
    return false;
  }
  return true;
}

/* An Initial for no connection of ours: validate its token, ask for
 * address validation when this loop is busy with handshakes, or start a
 * connection. */
static void on_initial(amn_h3_listener *l, const uint8_t *pkt, size_t len, const struct sockaddr *from,
                       socklen_t fromlen) {
  ngtcp2_pkt_hd hd;
  if (ngtcp2_accept(&hd, pkt, len) != 0) return; /* not an Initial (a 0-RTT packet ahead of it: dropped) */
  ngtcp2_cid ocid;
  ngtcp2_token_type tt;
  if (amn_h3s_token_check(l, &hd, from, fromlen, &ocid, &tt) != 0) {
    refuse(l, &hd, from, fromlen, NGTCP2_INVALID_TOKEN, NULL);
    return;
  }
  if (l->group && tt == NGTCP2_TOKEN_TYPE_UNKNOWN && l->nhandshaking >= l->loop->cfg->quic_retry_threshold) {
    amn_h3s_send_retry(l, &hd, from, fromlen, len);
    return;
  }
  char addr[64];
  amn_addr_text(from, addr, sizeof addr);
  if (admit(l, &hd, from, fromlen, addr))
    amn_h3s_conn_new(l, &hd, from, fromlen, addr, pkt, len, tt == NGTCP2_TOKEN_TYPE_RETRY ? &ocid : NULL, tt);
}

static void on_datagram(amn_h3_listener *l, const uint8_t *pkt, size_t len, const struct sockaddr *from,
                        socklen_t fromlen) {
  ngtcp2_version_cid vc;
  int rv = ngtcp2_pkt_decode_version_cid(&vc, pkt, len, AMN_H3_SCIDLEN);
  if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
    if (len >= 1200) send_version_negotiation(l, &vc, from, fromlen); /* never amplify */
    return;
  }
  if (rv != 0) return;
  h3_sconn *sc = amn_h3s_cid_find(l, vc.dcid, vc.dcidlen);
  if (sc) {
    amn_h3s_conn_read(sc, from, fromlen, pkt, len);
    return;
  }
  if (vc.version == 0) {
    /* a short header; a long one with version 0 is a Version Negotiation
     * packet, which a server drops (RFC 9000 5.2.2, 6.1) */
    if (!(pkt[0] & 0x80)) amn_h3s_send_stateless_reset(l, &vc, len, from, fromlen);
    return;
  }
  on_initial(l, pkt, len, from, fromlen);
}

#ifdef AMN_TEST_HOOKS
void amn_h3s_test_datagram(amn_st_loop *loop, const uint8_t *pkt, size_t len, const struct sockaddr *from,
                           socklen_t fromlen) {
  amn_h3_listener *l = loop->h3;
  if (l && !l->stopped) on_datagram(l, pkt, len, from, fromlen);
}
#endif

static void read_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  amn_h3_listener *l = w->data;
  for (int round = 0; round < 8; round++) { /* bounded: other watchers get their turn */
    amn_h3_rx *rx = &l->rx;
    int n = amn_h3_recv_batch(l->fd, rx);
    if (n < 0) {
      if (n != -ECONNREFUSED) AMN_DEBUG("UDP receive: %s", strerror(-n));
      return;
    }
    if (l->group && rx->datagrams) {
      atomic_fetch_add_explicit(&l->group->st.datagrams_received, rx->datagrams, memory_order_relaxed);
      if (rx->coalesced)
        atomic_fetch_add_explicit(&l->group->st.datagrams_coalesced, rx->coalesced, memory_order_relaxed);
    }
    for (int i = 0; i < n; i++) {
      const uint8_t *pkt;
      size_t len;
      for (size_t off = 0; (len = amn_h3_rx_next(rx, i, &off, &pkt)) != 0;)
        on_datagram(l, pkt, len, (struct sockaddr *)&rx->from[i], rx->msgs[i].msg_hdr.msg_namelen);
    }
    if (n < AMN_H3_RX_BATCH) return;
  }
}

/* ------------------------------------------------------------------ */
/* Listener                                                           */
/* ------------------------------------------------------------------ */

/* A plain bind (no SO_REUSEPORT) fails when another socket holds the port. */
static int probe_free(const struct addrinfo *a) {
  int fd = socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int rc = bind(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

/* A listener on the bound UDP socket fd (which it owns from now on, even
 * when it fails). */
static amn_h3_listener *listener_new(int fd, uint16_t *bound, int *rc, char *err, size_t errlen) {
  amn_h3_listener *l = calloc(1, sizeof *l);
  if (l) {
    l->rx.bufs = malloc((size_t)AMN_H3_RX_BATCH * AMN_H3_RX_DGRAM);
    l->txbuf = malloc(AMN_H3_TX_BUF);
  }
  if (!l || !l->rx.bufs || !l->txbuf || amn_h3s_cid_table_init(l) != 0) {
    if (l) {
      free(l->rx.bufs);
      free(l->txbuf);
      free(l);
    }
    close(fd);
    *rc = amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
    return NULL;
  }
  l->fd = fd;
  l->local_len = sizeof l->local;
  getsockname(fd, (struct sockaddr *)&l->local, &l->local_len);
  *bound = ntohs(l->local.ss_family == AF_INET ? ((struct sockaddr_in *)&l->local)->sin_port
                                                : ((struct sockaddr_in6 *)&l->local)->sin6_port);
  *rc = 0;
  return l;
}

amn_h3_listener *amn_h3s_open(const char *host, uint16_t port, bool first, uint16_t *bound, int *rc, char *err,
                              size_t errlen) {
  amn_h3s_token_init();
  *rc = AMN_EIO;
  struct addrinfo hints = {0}, *res;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char ps[8];
  snprintf(ps, sizeof ps, "%u", port);
  int gai = getaddrinfo(strcmp(host, "*") == 0 || !*host ? NULL : host, ps, &hints, &res);
  if (gai != 0) {
    amn_set_err(err, errlen, AMN_EIO, "cannot resolve listen host '%s': %s", host, gai_strerror(gai));
    return NULL;
  }
  int pe = first && port ? probe_free(res) : 0;
  if (pe) {
    freeaddrinfo(res);
    amn_set_err(err, errlen, AMN_EIO, "cannot bind UDP %s:%u for HTTP/3: %s", host, port, strerror(pe));
    return NULL;
  }
  int fd = socket(res->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    amn_set_err(err, errlen, AMN_EIO, "UDP socket: %s", strerror(errno));
    return NULL;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  amn_h3_udp_setup(fd, res->ai_family, AMN_H3_SOCKBUF_SERVER);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
    int e = errno;
    close(fd);
    freeaddrinfo(res);
    amn_set_err(err, errlen, AMN_EIO, "cannot bind UDP %s:%u for HTTP/3: %s", host, port, strerror(e));
    return NULL;
  }
  freeaddrinfo(res);
  return listener_new(fd, bound, rc, err, errlen);
}

amn_h3_listener *amn_h3s_adopt(int fd, uint16_t *bound, int *rc, char *err, size_t errlen) {
  amn_h3s_token_init();
  *rc = AMN_EIO;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  int fl = getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 ? fcntl(fd, F_GETFL) : -1;
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
    amn_set_err(err, errlen, AMN_EIO, "the given UDP socket: %s", strerror(errno));
    close(fd);
    return NULL;
  }
  amn_h3_udp_setup(fd, ss.ss_family, AMN_H3_SOCKBUF_SERVER);
  return listener_new(fd, bound, rc, err, errlen);
}

void amn_h3s_attach(amn_st_loop *loop, amn_h3_listener *l) {
  l->loop = loop;
  /* loops attach in order and all before any runs: the last one sets the
   * program for the whole group */
  amn_h3s_cid_steer(l, (unsigned)loop->idx + 1);
  loop->h3 = l;
  amn_h3_sched_init(&l->sched, loop->ev);
  ev_io_init(&l->rw, read_cb, l->fd, EV_READ);
  l->rw.data = l;
  ev_io_start(loop->ev, &l->rw);
  amn_h3_listener *first = loop->idx == 0 || !loop->first ? NULL : loop->first->h3;
  if (first && first->group) {
    l->group = first->group;
  } else if ((l->group = calloc(1, sizeof *l->group)) != NULL) {
    h3_group *g = l->group;
    l->group_owner = true;
    amn_h3s_ticket_group_init(g);
    amn_h3s_token_keys(g, loop->cfg);
  }
  if (l->group) {
    l->group_next = l->group->all;
    l->group->all = l;
    atomic_fetch_add(&l->group->live, 1);
    amn_h3s_ticket_attach(l);
  }
}

void amn_h3s_stats(amn_st_loop *first, amn_h3_server_stats *o) {
  memset(o, 0, sizeof *o);
  amn_h3_listener *l = first ? first->h3 : NULL;
  h3_group *g = l ? l->group : NULL;
  if (!g) return;
#define C(f) o->f = atomic_load(&g->st.f)
  C(conns_accepted); C(handshakes_done); C(handshake_timeouts); C(handshake_failures); C(resumed); C(early_accepted); C(early_rejected);
  C(replays_detected); C(early_calls); C(retries_sent); C(retry_tokens_ok); C(new_tokens_ok); C(tokens_bad);
  C(stateless_resets); C(stateless_resets_limited); C(version_negotiations); C(path_validations); C(key_updates);
  C(datagrams_received); C(datagrams_coalesced);
#undef C
  o->handshaking = atomic_load(&g->st.handshaking);
  o->conns_closing = atomic_load(&g->st.closing);
  o->conns_open = atomic_load(&first->counters->nconns); /* HTTP/2 ones too when both run */
}

void amn_h3s_drain_all(amn_st_loop *loop) {
  amn_h3_listener *l = loop->h3;
  if (!l) return;
  l->draining = true;
  for (h3_sconn *sc = l->conns, *next; sc; sc = next) {
    next = sc->next;
    if (sc->state == SC_HANDSHAKE) amn_h3s_conn_close_now(sc, "server stopping");
    else if (sc->state == SC_OPEN) amn_h3s_conn_shutdown(sc, "server stopping");
    else amn_h3s_conn_free(sc, "server stopping"); /* closing or draining: nothing left to say */
  }
}

void amn_h3s_close_all(amn_st_loop *loop) {
  amn_h3_listener *l = loop->h3;
  if (!l) return;
  l->draining = true;
  while (l->conns) {
    h3_sconn *sc = l->conns;
    /* cancel what is left, send the final statuses, then close */
    if (sc->state == SC_OPEN) {
      amn_h3s_streams_fail_all(sc, "server stopped before the call completed");
      amn_h3_write(&sc->b);
    }
    amn_h3s_conn_close_now(sc, "server stopped");
  }
  if (l->stopped) return;
  l->stopped = true;
  ev_io_stop(loop->ev, &l->rw);
  amn_h3_sched_stop(&l->sched);
  /* the last loop closes every socket of the server: the port is free now,
   * clients get "port unreachable" instead of silence */
  if (l->group && atomic_fetch_sub(&l->group->live, 1) == 1) {
    for (amn_h3_listener *x = l->group->all; x; x = x->group_next)
      if (x->fd >= 0) {
        close(x->fd);
        x->fd = -1;
      }
  } else if (!l->group && l->fd >= 0) {
    close(l->fd);
    l->fd = -1;
  }
}

void amn_h3s_free(amn_st_loop *loop) {
  amn_h3_listener *l = loop->h3;
  if (!l) return;
  while (l->conns) amn_h3s_conn_free(l->conns, "server freed");
  if (!l->stopped) {
    ev_io_stop(loop->ev, &l->rw);
    amn_h3_sched_stop(&l->sched);
  }
  if (l->fd >= 0) close(l->fd);
  amn_h3s_ticket_detach(l);
  /* loop 0 owns the group; the others are freed after it but never touch it again */
  if (l->group_owner) {
    amn_h3s_ticket_group_free(l->group);
    amn_h3s_token_keys_wipe(l->group);
    free(l->group);
  }
  amn_h3s_cid_table_free(l);
  free(l->rx.bufs);
  free(l->txbuf);
  loop->h3 = NULL;
  free(l);
}
