/*
 * HTTP/3 transport, server side: one UDP socket per event loop (all bound
 * to the same port with SO_REUSEPORT), QUIC connections found by
 * destination connection ID, nghttp3 request streams mapped onto the
 * transport-independent call core through transport/stransport.h, exactly
 * like the HTTP/2 transport (h2_server.c) does with nghttp2 streams.
 *
 * Around that: address validation (Retry when a loop has many handshakes
 * in progress, NEW_TOKEN tokens that let a returning client skip it),
 * session tickets whose key all loops share (rotated), 0-RTT with a real
 * anti-replay table (h3_replay.c) and a re-verification of the client
 * identity a resumed session carries, stateless resets, version
 * negotiation, client migration, QUIC idle timeout and keep-alive.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <netdb.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "transport/h3/h3_server_int.h"
#include "util/log.h"

static void sc_free(h3_sconn *sc, const char *why);
static void sc_on_error(h3_sconn *sc, int rv);

/* ------------------------------------------------------------------ */
/* ngtcp2 callbacks                                                   */
/* ------------------------------------------------------------------ */

static void start_graceful_shutdown(h3_sconn *sc);

static void hs_done(h3_sconn *sc) {
  if (!sc->counted_hs) return;
  sc->counted_hs = false;
  sc->l->nhandshaking--;
  if (sc->l->group) atomic_fetch_sub(&sc->l->group->st.handshaking, 1);
}

/* The 1-RTT keys exist (the server has its whole first flight): HTTP/3
 * starts now, so that 0-RTT requests can be served (with the identity the
 * ticket stands for, see above). */
static int q_recv_tx_key(ngtcp2_conn *q, ngtcp2_encryption_level level, void *ud) {
  (void)q;
  h3_sconn *sc = ud;
  if (level != NGTCP2_ENCRYPTION_LEVEL_1RTT) return 0;
  /* the session accepts only ALPN h3 (GNUTLS_ALPN_MANDATORY): checked anyway */
  if (!amn_tls_alpn_is(sc->b.tls, "h3")) {
    AMN_INFO("%s: refused: client did not negotiate ALPN h3", sc->addr);
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  amn_h3s_ticket_hello_done(sc);
  int rv = amn_h3_setup_http(&sc->b, true, &amn_h3s_h3cbs, sc);
  if (rv != 0) {
    AMN_WARN("%s: HTTP/3 setup failed: %s", sc->addr, nghttp3_strerror(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

static int q_handshake_completed(ngtcp2_conn *q, void *ud) {
  (void)q;
  h3_sconn *sc = ud;
  hs_done(sc);
  STAT(sc->l, handshakes_done);
  if (!sc->b.h) return NGTCP2_ERR_CALLBACK_FAILURE; /* set up with the 1-RTT keys */
  if (amn_h3s_ticket_handshake_done(sc) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  sc->state = SC_OPEN;
  AMN_DEBUG("%s: mTLS QUIC connection from %s%s", sc->addr, sc->have_peer ? sc->peer.id.subject : "?",
            gnutls_session_is_resumed(sc->b.tls) ? " (resumed)" : "");
  /* a ticket for resumption and 0-RTT next time, a token to skip Retry */
  amn_h3s_ticket_send(sc);
  amn_h3s_send_new_token(sc);
  amn_h3s_update_keepalive(sc);
  if (sc->l->draining) start_graceful_shutdown(sc);
  return 0;
}

static int q_path_validation(ngtcp2_conn *q, uint32_t flags, const ngtcp2_path *path, const ngtcp2_path *old_path,
                             ngtcp2_path_validation_result res, void *ud) {
  (void)q; (void)flags; (void)old_path;
  h3_sconn *sc = ud;
  if (res != NGTCP2_PATH_VALIDATION_RESULT_SUCCESS) return 0;
  STAT(sc->l, path_validations);
  char prev[64];
  snprintf(prev, sizeof prev, "%s", sc->addr);
  amn_h3_addr_text(path->remote.addr, sc->addr, sizeof sc->addr);
  if (strcmp(prev, sc->addr) != 0) AMN_DEBUG("QUIC connection from %s moved to %s", prev, sc->addr);
  return 0;
}

static int q_update_key(ngtcp2_conn *q, uint8_t *rx_secret, uint8_t *tx_secret, ngtcp2_crypto_aead_ctx *rx_aead_ctx,
                        uint8_t *rx_iv, ngtcp2_crypto_aead_ctx *tx_aead_ctx, uint8_t *tx_iv,
                        const uint8_t *current_rx_secret, const uint8_t *current_tx_secret, size_t secretlen,
                        void *ud) {
  h3_sconn *sc = ud;
  int rv = amn_h3_update_key(q, rx_secret, tx_secret, rx_aead_ctx, rx_iv, tx_aead_ctx, tx_iv, current_rx_secret,
                             current_tx_secret, secretlen, ud);
  if (rv == 0 && sc->b.key_gens > 1) {
    STAT(sc->l, key_updates);
    AMN_DEBUG("%s: 1-RTT key update (key phase %u)", sc->addr, sc->b.key_gens - 1);
  }
  return rv;
}

static int q_new_cid(ngtcp2_conn *q, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *ud) {
  (void)q;
  h3_sconn *sc = ud;
  if (amn_h3s_cid_make(sc->l, cid->data, cidlen) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  cid->datalen = cidlen;
  if (amn_h3s_reset_token(sc->l, cid, token) != 0 ||
      amn_h3s_cid_add(sc->l, sc, cid->data, cid->datalen) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

static int q_remove_cid(ngtcp2_conn *q, const ngtcp2_cid *cid, void *ud) {
  (void)q;
  h3_sconn *sc = ud;
  amn_h3s_cid_del(sc->l, cid->data, cid->datalen);
  return 0;
}

static ngtcp2_callbacks g_qcbs;
static pthread_once_t g_qcbs_once = PTHREAD_ONCE_INIT;
static void init_qcbs(void) {
  amn_h3_base_callbacks(&g_qcbs);
  g_qcbs.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  g_qcbs.recv_tx_key = q_recv_tx_key;
  g_qcbs.handshake_completed = q_handshake_completed;
  g_qcbs.path_validation = q_path_validation;
  g_qcbs.update_key = q_update_key;
  g_qcbs.stream_close = amn_h3s_q_stream_close;
  g_qcbs.stream_reset = amn_h3s_q_stream_reset;
  g_qcbs.stream_stop_sending = amn_h3s_q_stop_sending;
  g_qcbs.get_new_connection_id = q_new_cid;
  g_qcbs.remove_connection_id = q_remove_cid;
  g_qcbs.extend_max_remote_streams_bidi = amn_h3s_q_extend_remote_bidi;
}

/* ------------------------------------------------------------------ */
/* Connection lifecycle                                               */
/* ------------------------------------------------------------------ */

static double pto_s(h3_sconn *sc) { return (double)ngtcp2_conn_get_pto(sc->b.q) / NGTCP2_SECONDS; }

/* A connection in its closing or draining period only waits out 3 PTO to
 * answer late packets: it no longer counts against max_connections (a
 * client that closed one may open another at once). */
static void sc_uncount(h3_sconn *sc) {
  if (sc->uncounted) return;
  sc->uncounted = true;
  atomic_fetch_sub(&sc->l->loop->counters->nconns, 1);
  if (sc->l->group) atomic_fetch_add(&sc->l->group->st.closing, 1);
}

static void sc_free(h3_sconn *sc, const char *why) {
  amn_h3_listener *l = sc->l;
  amn_st_loop *loop = l->loop;
  AMN_DEBUG("QUIC connection from %s closed: %s", sc->addr, why);
  hs_done(sc);
  if (l->hello_sc == sc) l->hello_sc = NULL;
  amn_h3s_streams_detach_all(sc, "connection closed");
  ev_timer_stop(loop->ev, &sc->gtimer);
  amn_h3_conn_release(&sc->b); /* nghttp3 first: no callbacks reach the streams below */
  amn_h3s_streams_free_all(sc);
  amn_h3s_cid_del_conn(l, sc);
  if (sc->prev) sc->prev->next = sc->next;
  else l->conns = sc->next;
  if (sc->next) sc->next->prev = sc->prev;
  if (sc->have_peer) amn_peer_store_free(&sc->peer);
  if (!sc->uncounted) atomic_fetch_sub(&loop->counters->nconns, 1);
  else if (l->group) atomic_fetch_sub(&l->group->st.closing, 1);
  free(sc);
  amn_st_conn_gone(loop);
}

/* Closing period (RFC 9000 10.2.1): CONNECTION_CLOSE sent, repeated for
 * late packets, state kept 3 PTO. */
static void sc_start_closing(h3_sconn *sc) {
  if (sc->state >= SC_CLOSING) return;
  amn_h3s_streams_detach_all(sc, "connection closed");
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(sc->b.q, &ps.path, &pi, sc->closebuf, sizeof sc->closebuf,
                                                      &sc->b.err, amn_h3_now());
  if (n <= 0) {
    sc_free(sc, "closed");
    return;
  }
  sc->closelen = (size_t)n;
  amn_h3_send_one(sc->b.fd, ps.path.remote.addr, ps.path.remote.addrlen, sc->closebuf, sc->closelen);
  if (sc->l->draining) { /* stopping: no closing period */
    sc_free(sc, "closed");
    return;
  }
  sc->state = SC_CLOSING;
  sc_uncount(sc);
  ev_timer_stop(sc->b.ev, &sc->b.timer);
  ev_timer_set(&sc->b.timer, 3 * pto_s(sc), 0.);
  ev_timer_start(sc->b.ev, &sc->b.timer);
}

/* Immediate close (server stopping): CONNECTION_CLOSE, then gone. */
static void sc_close_now(h3_sconn *sc, const char *why) {
  if (sc->state < SC_CLOSING && sc->b.q) {
    if (!sc->b.err.error_code && sc->state == SC_OPEN)
      ngtcp2_ccerr_set_application_error(&sc->b.err, NGHTTP3_H3_NO_ERROR, NULL, 0);
    else if (!sc->b.err.error_code)
      ngtcp2_ccerr_set_transport_error(&sc->b.err, NGTCP2_CONNECTION_REFUSED, NULL, 0);
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(sc->b.q, &ps.path, &pi, sc->closebuf, sizeof sc->closebuf,
                                                        &sc->b.err, amn_h3_now());
    if (n > 0) amn_h3_send_one(sc->b.fd, ps.path.remote.addr, ps.path.remote.addrlen, sc->closebuf, (size_t)n);
  }
  sc_free(sc, why);
}

static void sc_on_error(h3_sconn *sc, int rv) {
  if (rv == NGTCP2_ERR_DRAINING) {
    /* the client closed: draining period, nothing more to send */
    if (sc->state == SC_HANDSHAKE) {
      /* a TLS alert: the client refused us (warning); else it gave up */
      const ngtcp2_ccerr *e = ngtcp2_conn_get_ccerr(sc->b.q);
      char m[300];
      amn_h3_describe_peer_close(&sc->b, "the client", m, sizeof m);
      if ((e->error_code & ~(uint64_t)0xff) == NGTCP2_CRYPTO_ERROR)
        AMN_WARN("QUIC connection from %s refused during the handshake: %s", sc->addr, m);
      else
        AMN_DEBUG("QUIC connection from %s closed during the handshake: %s", sc->addr, m);
    }
    amn_h3s_streams_detach_all(sc, "connection closed by the client");
    if (sc->l->draining) { /* stopping: no need to wait out the draining period */
      sc_free(sc, "closed by the client");
      return;
    }
    sc->state = SC_DRAINING;
    sc_uncount(sc);
    ev_timer_stop(sc->b.ev, &sc->b.timer);
    ev_timer_set(&sc->b.timer, 3 * pto_s(sc), 0.);
    ev_timer_start(sc->b.ev, &sc->b.timer);
    return;
  }
  if (rv == NGTCP2_ERR_DROP_CONN) {
    sc_free(sc, "dropped");
    return;
  }
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    sc_free(sc, "idle timeout");
    return;
  }
  if (sc->state == SC_HANDSHAKE) {
    const char *why = amn_h3_tls_reason(&sc->b);
    if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
      /* INFO: a client that gave up, a lost path, or a handshake flood */
      STAT(sc->l, handshake_timeouts);
      AMN_INFO("connection from %s: QUIC handshake timed out (%u ms)", sc->addr,
               sc->l->loop->cfg->handshake_timeout_ms);
      sc_free(sc, "handshake timeout");
      return;
    }
    AMN_WARN("connection from %s refused: %s", sc->addr, why ? why : ngtcp2_strerror(rv));
  } else {
    AMN_DEBUG("QUIC connection from %s failed: %s", sc->addr, ngtcp2_strerror(rv));
  }
  amn_h3_set_liberr(&sc->b, rv);
  sc_start_closing(sc);
}

static void sc_flush(amn_h3_conn *b) {
  h3_sconn *sc = (h3_sconn *)b;
  if (sc->state >= SC_CLOSING) return;
  int rv = amn_h3_write(b);
  if (rv != 0) {
    sc_on_error(sc, rv);
    return;
  }
  /* graceful drain: final GOAWAY sent and every request done */
  if (sc->shutdown_sent && sc->nstreams == 0) sc_close_now(sc, "drained");
}

static void sc_expiry(amn_h3_conn *b) {
  h3_sconn *sc = (h3_sconn *)b;
  if (sc->state >= SC_CLOSING) {
    sc_free(sc, sc->state == SC_CLOSING ? "closing period over" : "draining period over");
    return;
  }
  int rv = ngtcp2_conn_handle_expiry(b->q, amn_h3_now());
  if (rv != 0) {
    sc_on_error(sc, rv);
    return;
  }
  sc_flush(b);
}

static void gtimer_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  h3_sconn *sc = w->data;
  if (sc->state != SC_OPEN) return;
  nghttp3_conn_shutdown(sc->b.h); /* final GOAWAY: later streams are rejected */
  sc->shutdown_sent = true;
  amn_h3_mark_dirty(&sc->b);
}

/* GOAWAY with the maximum ID now, the final one a few RTTs later (in-flight
 * requests still get in), then close once every stream is done. */
static void start_graceful_shutdown(h3_sconn *sc) {
  if (sc->notice_sent || sc->state != SC_OPEN) return;
  sc->notice_sent = true;
  AMN_DEBUG("QUIC connection from %s: GOAWAY (server stopping), %zu request(s) in flight may finish", sc->addr,
            sc->nstreams);
  nghttp3_conn_submit_shutdown_notice(sc->b.h);
  double t = 3 * pto_s(sc);
  ev_timer_init(&sc->gtimer, gtimer_cb, t < 0.05 ? 0.05 : t > 1.0 ? 1.0 : t, 0.);
  sc->gtimer.data = sc;
  ev_timer_start(sc->b.ev, &sc->gtimer);
  amn_h3_mark_dirty(&sc->b);
}

static void sc_read(h3_sconn *sc, const struct sockaddr *from, socklen_t fromlen, const uint8_t *pkt, size_t len) {
  if (sc->state == SC_CLOSING) {
    amn_h3_send_one(sc->b.fd, from, fromlen, sc->closebuf, sc->closelen);
    return;
  }
  if (sc->state == SC_DRAINING) return;
  ngtcp2_path path = {{(struct sockaddr *)&sc->l->local, sc->l->local_len}, {(struct sockaddr *)from, fromlen}, NULL};
  ngtcp2_pkt_info pi = {0};
  int rv = ngtcp2_conn_read_pkt(sc->b.q, &path, &pi, pkt, len, amn_h3_now());
  if (rv != 0) {
    sc_on_error(sc, rv);
    return;
  }
  amn_h3_mark_dirty(&sc->b);
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

/* TLS session of a new connection: mutual TLS (the context's policy),
 * ALPN h3 only, session tickets (sent after the handshake), 0-RTT. */
static int sc_tls_setup(h3_sconn *sc, const amn_st_config *cfg) {
  char err[256];
  unsigned flags = AMN_TLS_QUIC | GNUTLS_NO_AUTO_SEND_TICKET;
  h3_group *g = sc->l->group;
  if (g && g->replay) flags |= GNUTLS_ENABLE_EARLY_DATA; /* 0-RTT needs the anti-replay table */
  sc->ctx = cfg->tls_get(cfg->tls_ud);
  if (amn_tls_session_new(sc->ctx, &sc->b.tls, flags, NULL, err, sizeof err) != 0) {
    AMN_ERROR("%s: TLS session setup failed: %s", sc->addr, err);
    return -1;
  }
  /* this session speaks h3 only, whatever else the context accepts (h2 on TCP) */
  gnutls_datum_t h3 = {(unsigned char *)"h3", 2};
  if (gnutls_alpn_set_protocols(sc->b.tls, &h3, 1, GNUTLS_ALPN_MANDATORY | GNUTLS_ALPN_SERVER_PRECEDENCE) < 0 ||
      ngtcp2_crypto_gnutls_configure_server_session(sc->b.tls) != 0) {
    AMN_ERROR("%s: QUIC TLS session setup failed", sc->addr);
    return -1;
  }
  amn_h3s_ticket_session(sc);
  gnutls_session_set_ptr(sc->b.tls, &sc->b.ref);
  return 0;
}

/* A new connection from an Initial. `ocid`: the original destination
 * connection ID when the client came back with our Retry token; `token`:
 * the type of a validated token (Retry or NEW_TOKEN), which lifts the
 * anti-amplification limit. */
static void sc_new(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                   const uint8_t *pkt, size_t len, const ngtcp2_cid *ocid, ngtcp2_token_type token) {
  amn_st_loop *loop = l->loop;
  const amn_st_config *cfg = loop->cfg;
  char addr[64];
  amn_h3_addr_text(from, addr, sizeof addr);
  if (l->draining || loop->stopping) {
    AMN_DEBUG("QUIC connection from %s refused: the server is shutting down", addr);
    refuse(l, hd, from, fromlen, NGTCP2_CONNECTION_REFUSED, "server shutting down");
    return;
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
    return;
  }
  h3_sconn *sc = calloc(1, sizeof *sc);
  if (!sc) return;
  sc->l = l;
  snprintf(sc->addr, sizeof sc->addr, "%s", addr);
  amn_h3_conn_init(&sc->b, loop->ev, &l->sched, l->fd, l->txbuf, sc_flush, sc_expiry);
  ev_timer_init(&sc->gtimer, gtimer_cb, 0., 0.);
  sc->gtimer.data = sc;
  if (sc_tls_setup(sc, cfg) != 0) {
    if (sc->b.tls) gnutls_deinit(sc->b.tls);
    free(sc);
    return;
  }

  pthread_once(&g_qcbs_once, init_qcbs);
  ngtcp2_cid scid;
  scid.datalen = AMN_H3_SCIDLEN;
  amn_h3s_cid_make(l, scid.data, scid.datalen);
  ngtcp2_settings st;
  ngtcp2_settings_default(&st);
  st.initial_ts = amn_h3_now();
  st.handshake_timeout = (uint64_t)cfg->handshake_timeout_ms * NGTCP2_MILLISECONDS;
  if (token != NGTCP2_TOKEN_TYPE_UNKNOWN) { /* copied by ngtcp2 */
    st.token = hd->token;
    st.tokenlen = hd->tokenlen;
    st.token_type = token;
  }
  ngtcp2_transport_params p;
  ngtcp2_transport_params_default(&p);
  amn_h3_flow_setup(&st, &p, cfg->initial_window_size);
  p.initial_max_streams_bidi = cfg->max_concurrent_streams;
  p.initial_max_streams_uni = 3; /* control + QPACK encoder/decoder */
  p.max_idle_timeout = (uint64_t)cfg->idle_timeout_ms * NGTCP2_MILLISECONDS; /* 0: none */
  p.active_connection_id_limit = 4;
  if (ocid) {
    p.original_dcid = *ocid;
    p.retry_scid = hd->dcid; /* the connection ID our Retry gave the client */
    p.retry_scid_present = 1;
  } else {
    p.original_dcid = hd->dcid;
  }
  p.original_dcid_present = 1;
  p.stateless_reset_token_present = 1;
  amn_h3s_reset_token(l, &scid, p.stateless_reset_token);
  ngtcp2_path path = {{(struct sockaddr *)&l->local, l->local_len}, {(struct sockaddr *)from, fromlen}, NULL};
  int rv = ngtcp2_conn_server_new(&sc->b.q, &hd->scid, &scid, &path, hd->version, &g_qcbs, &st, &p,
                                  &sc->b.mem, sc);
  if (rv != 0) {
    AMN_ERROR("%s: QUIC connection setup failed: %s", addr, ngtcp2_strerror(rv));
    gnutls_deinit(sc->b.tls);
    free(sc);
    return;
  }
  ngtcp2_conn_set_tls_native_handle(sc->b.q, sc->b.tls);
  sc->next = l->conns;
  if (l->conns) l->conns->prev = sc;
  l->conns = sc;
  loop->nconns++;
  atomic_fetch_add(&loop->counters->nconns, 1);
  sc->counted_hs = true;
  l->nhandshaking++;
  if (l->group) atomic_fetch_add(&l->group->st.handshaking, 1);
  STAT(l, conns_accepted);
  if (amn_h3s_cid_add(l, sc, scid.data, scid.datalen) != 0 ||
      amn_h3s_cid_add(l, sc, hd->dcid.data, hd->dcid.datalen) != 0) {
    sc_free(sc, "out of memory");
    return;
  }
  sc_read(sc, from, fromlen, pkt, len);
}

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
  sc_new(l, &hd, from, fromlen, pkt, len, tt == NGTCP2_TOKEN_TYPE_RETRY ? &ocid : NULL, tt);
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
    sc_read(sc, from, fromlen, pkt, len);
    return;
  }
  if (vc.version == 0) {
    amn_h3s_send_stateless_reset(l, &vc, len, from, fromlen);
    return;
  }
  on_initial(l, pkt, len, from, fromlen);
}

static void read_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  amn_h3_listener *l = w->data;
  for (int round = 0; round < 8; round++) { /* bounded: other watchers get their turn */
    int n = amn_h3_recv_batch(l->fd, l->rbuf, l->msgs, l->iov, l->from);
    if (n < 0) {
      if (n != -ECONNREFUSED) AMN_DEBUG("UDP receive: %s", strerror(-n));
      return;
    }
    for (int i = 0; i < n; i++)
      if (l->msgs[i].msg_len)
        on_datagram(l, l->rbuf + (size_t)i * AMN_H3_RX_DGRAM, l->msgs[i].msg_len, (struct sockaddr *)&l->from[i],
                    l->msgs[i].msg_hdr.msg_namelen);
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
  amn_h3_listener *l = calloc(1, sizeof *l);
  if (l) {
    l->rbuf = malloc((size_t)AMN_H3_RX_BATCH * AMN_H3_RX_DGRAM);
    l->txbuf = malloc(AMN_H3_TX_BUF);
  }
  if (!l || !l->rbuf || !l->txbuf || amn_h3s_cid_table_init(l) != 0) {
    if (l) {
      free(l->rbuf);
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
  C(conns_accepted); C(handshakes_done); C(handshake_timeouts); C(resumed); C(early_accepted); C(early_rejected);
  C(replays_detected); C(early_calls); C(retries_sent); C(retry_tokens_ok); C(new_tokens_ok); C(tokens_bad);
  C(stateless_resets); C(version_negotiations); C(path_validations); C(key_updates);
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
    if (sc->state == SC_HANDSHAKE) sc_close_now(sc, "server stopping");
    else if (sc->state == SC_OPEN) start_graceful_shutdown(sc);
    else sc_free(sc, "server stopping"); /* closing or draining: nothing left to say */
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
    sc_close_now(sc, "server stopped");
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
  while (l->conns) sc_free(l->conns, "server freed");
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
  free(l->rbuf);
  free(l->txbuf);
  loop->h3 = NULL;
  free(l);
}
