/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, server side: the life of one QUIC connection. Its
 * creation from a client's Initial (TLS session, transport parameters,
 * the first connection IDs), the ngtcp2 callbacks about the connection
 * (keys, handshake, path validation, key updates, connection IDs), the
 * packets it reads and writes, errors, the closing and draining periods
 * (RFC 9000 10.2), the graceful shutdown with HTTP/3 GOAWAY, and its end.
 */
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/h3/h3_server_int.h"
#include "util/addr.h"
#include "util/log.h"

/* ------------------------------------------------------------------ */
/* ngtcp2 callbacks                                                   */
/* ------------------------------------------------------------------ */

static void hs_done(h3_sconn *sc) {
  if (!sc->counted_hs) return;
  sc->counted_hs = false;
  sc->l->nhandshaking--;
  if (sc->l->group) atomic_fetch_sub(&sc->l->group->st.handshaking, 1);
}

/* The 1-RTT keys exist (the server has its whole first flight): HTTP/3
 * starts now, so that 0-RTT requests can be served (with the identity the
 * ticket stands for: h3_server_ticket.c). */
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
  /* the TLS session has done its part: its ~15 KiB go now, not at close */
  amn_h3_tls_release(&sc->b);
  amn_h3s_send_new_token(sc);
  amn_h3s_update_keepalive(sc);
  if (sc->l->draining) amn_h3s_conn_shutdown(sc, "server stopping");
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
  amn_addr_text(path->remote.addr, sc->addr, sizeof sc->addr);
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
  if (amn_h3s_reset_token(sc->l, cid, token) != 0 || amn_h3s_cid_add(sc->l, sc, cid->data, cid->datalen) != 0)
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

void amn_h3s_conn_free(h3_sconn *sc, const char *why) {
  amn_h3_listener *l = sc->l;
  amn_st_loop *loop = l->loop;
  AMN_DEBUG("QUIC connection from %s closed: %s", sc->addr, why);
  if (sc->counted_hs && !sc->hs_timed_out) STAT(l, handshake_failures);
  hs_done(sc);
  if (l->hello_sc == sc) l->hello_sc = NULL;
  amn_h3s_streams_detach_all(sc, "connection closed");
  amn_st_count(&loop->conn.h3_closed, 1);
  if (sc->b.q) { /* its RTT for the metrics, when it had a sample */
    ngtcp2_conn_info ci;
    ngtcp2_conn_get_conn_info(sc->b.q, &ci);
    if (ci.min_rtt != UINT64_MAX) amn_st_count_rtt(&loop->conn, ci.smoothed_rtt, ci.min_rtt);
  }
  ev_timer_stop(loop->ev, &sc->gtimer);
  ev_timer_stop(loop->ev, &sc->idle_timer);
  amn_h3_conn_release(&sc->b); /* nghttp3 first: no callbacks reach the streams below */
  amn_h3s_streams_free_all(sc);
  amn_h3s_cid_del_conn(l, sc);
  if (sc->prev) sc->prev->next = sc->next;
  else l->conns = sc->next;
  if (sc->next) sc->next->prev = sc->prev;
  if (sc->have_peer) amn_peer_store_free(&sc->peer);
  free(sc->closebuf);
  if (!sc->uncounted) atomic_fetch_sub(&loop->counters->nconns, 1);
  else if (l->group) atomic_fetch_sub(&l->group->st.closing, 1);
  free(sc);
  amn_st_conn_gone(loop);
}

/* The closing or draining period (`state`, RFC 9000 10.2): the connection
 * is kept 3 PTO for late packets, out of the connection count; a stopping
 * server does not wait (the connection goes, `why`). */
static void sc_wait_out(h3_sconn *sc, int state, const char *why) {
  if (sc->l->draining) {
    amn_h3s_conn_free(sc, why);
    return;
  }
  sc->state = state;
  sc_uncount(sc);
  ev_timer_stop(sc->b.ev, &sc->b.timer);
  ev_timer_set(&sc->b.timer, 3 * pto_s(sc), 0.);
  ev_timer_start(sc->b.ev, &sc->b.timer);
}

/* Sends our CONNECTION_CLOSE (sc->b.err), kept in closebuf. Its length,
 * or <= 0 when none could be written. */
static ngtcp2_ssize send_close(h3_sconn *sc) {
  if (!sc->closebuf && !(sc->closebuf = malloc(AMN_H3S_CLOSEBUF))) return -1;
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(sc->b.q, &ps.path, &pi, sc->closebuf, AMN_H3S_CLOSEBUF,
                                                      &sc->b.err, amn_h3_now());
  if (n > 0) amn_h3_send_one(sc->b.fd, ps.path.remote.addr, ps.path.remote.addrlen, sc->closebuf, (size_t)n);
  return n;
}

/* Closing period (RFC 9000 10.2.1): CONNECTION_CLOSE sent, repeated for
 * late packets, state kept 3 PTO. */
static void sc_start_closing(h3_sconn *sc) {
  if (sc->state >= SC_CLOSING) return;
  amn_h3s_streams_detach_all(sc, "connection closed");
  ngtcp2_ssize n = send_close(sc);
  if (n <= 0) {
    amn_h3s_conn_free(sc, "closed");
    return;
  }
  sc->closelen = (size_t)n;
  sc_wait_out(sc, SC_CLOSING, "closed");
}

/* Immediate close (server stopping): CONNECTION_CLOSE, then gone. */
void amn_h3s_conn_close_now(h3_sconn *sc, const char *why) {
  if (sc->state < SC_CLOSING && sc->b.q) {
    if (!sc->b.err.error_code && sc->state == SC_OPEN)
      ngtcp2_ccerr_set_application_error(&sc->b.err, NGHTTP3_H3_NO_ERROR, NULL, 0);
    else if (!sc->b.err.error_code)
      ngtcp2_ccerr_set_transport_error(&sc->b.err, NGTCP2_CONNECTION_REFUSED, NULL, 0);
    send_close(sc);
  }
  amn_h3s_conn_free(sc, why);
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
    sc_wait_out(sc, SC_DRAINING, "closed by the client");
    return;
  }
  if (rv == NGTCP2_ERR_DROP_CONN) {
    amn_h3s_conn_free(sc, "dropped");
    return;
  }
  if (rv == NGTCP2_ERR_IDLE_CLOSE) {
    amn_h3s_conn_free(sc, "idle timeout");
    return;
  }
  if (sc->state == SC_HANDSHAKE) {
    const char *why = amn_h3_tls_reason(&sc->b);
    if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
      /* INFO: a client that gave up, a lost path, or a handshake flood */
      STAT(sc->l, handshake_timeouts);
      sc->hs_timed_out = true;
      AMN_INFO("connection from %s: QUIC handshake timed out (%u ms)", sc->addr,
               sc->l->loop->cfg->handshake_timeout_ms);
      amn_h3s_conn_free(sc, "handshake timeout");
      return;
    }
    AMN_WARN("connection from %s refused: %s", sc->addr, why ? why : ngtcp2_strerror(rv));
  } else if (sc->b.err.type == NGTCP2_CCERR_TYPE_APPLICATION && sc->b.err.error_code) {
    /* an HTTP/3 protocol error of the client (nghttp3 named it) */
    AMN_INFO("QUIC connection from %s closed for an HTTP/3 protocol error: %s (0x%llx)", sc->addr,
             amn_h3_error_name(sc->b.err.error_code), (unsigned long long)sc->b.err.error_code);
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
  if (sc->shutdown_sent && sc->nstreams == 0) amn_h3s_conn_close_now(sc, "drained");
}

static void sc_expiry(amn_h3_conn *b) {
  h3_sconn *sc = (h3_sconn *)b;
  if (sc->state >= SC_CLOSING) {
    amn_h3s_conn_free(sc, sc->state == SC_CLOSING ? "closing period over" : "draining period over");
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

/* idle_timeout_ms without a call (amn_h3s_update_keepalive arms it) */
void amn_h3s_idle_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  h3_sconn *sc = w->data;
  if (sc->nstreams || sc->state != SC_OPEN) return;
  AMN_DEBUG("QUIC connection from %s: no call for %u ms: closing the idle connection", sc->addr,
            sc->l->loop->cfg->idle_timeout_ms);
  amn_h3s_conn_shutdown(sc, "idle timeout");
}

/* GOAWAY with the maximum ID now, the final one a few RTTs later (in-flight
 * requests still get in), then close once every stream is done. */
void amn_h3s_conn_shutdown(h3_sconn *sc, const char *why) {
  if (sc->notice_sent || sc->state != SC_OPEN) return;
  sc->notice_sent = true;
  AMN_DEBUG("QUIC connection from %s: GOAWAY (%s), %zu request(s) in flight may finish", sc->addr, why,
            sc->nstreams);
  nghttp3_conn_submit_shutdown_notice(sc->b.h);
  double t = 3 * pto_s(sc);
  ev_timer_init(&sc->gtimer, gtimer_cb, t < 0.05 ? 0.05 : t > 1.0 ? 1.0 : t, 0.);
  sc->gtimer.data = sc;
  ev_timer_start(sc->b.ev, &sc->gtimer);
  amn_h3_mark_dirty(&sc->b);
}

void amn_h3s_conn_read(h3_sconn *sc, const struct sockaddr *from, socklen_t fromlen, const uint8_t *pkt,
                       size_t len) {
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
void amn_h3s_conn_new(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                      const char *addr, const uint8_t *pkt, size_t len, const ngtcp2_cid *ocid,
                      ngtcp2_token_type token) {
  amn_st_loop *loop = l->loop;
  const amn_st_config *cfg = loop->cfg;
  h3_sconn *sc = calloc(1, sizeof *sc);
  if (!sc) return;
  sc->l = l;
  snprintf(sc->addr, sizeof sc->addr, "%s", addr);
  amn_h3_conn_init(&sc->b, loop->ev, &l->sched, l->fd, l->txbuf, sc_flush, sc_expiry);
  ev_timer_init(&sc->gtimer, gtimer_cb, 0., 0.);
  sc->gtimer.data = sc;
  ev_init(&sc->idle_timer, amn_h3s_idle_cb);
  sc->idle_timer.data = sc;
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
  /* the client may use up to the largest connection window auto-tuning reaches */
  amn_st_budget_init(&sc->budget, cfg, (size_t)st.max_window);
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
    amn_h3s_conn_free(sc, "out of memory");
    return;
  }
  amn_h3s_conn_read(sc, from, fromlen, pkt, len);
}
