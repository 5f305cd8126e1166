/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, client side: connections. A connected UDP socket per
 * connection, an ngtcp2 client connection with mutual TLS (GnuTLS), its
 * setup (every resolved address in turn), handshake, keepalive, errors and
 * close; the client's state (counters, test hooks) and the transport's
 * vtable. Its request streams carry the client core's calls the way the
 * HTTP/2 transport (h2_client.c) does (h3_client_stream.c); what a
 * connection reuses of the last one is kept by h3_client_ticket.c. Bound
 * through the client binding interface (transport/ctransport.h).
 *
 * A connection is ready (takes calls) once the handshake is confirmed
 * (HANDSHAKE_DONE): a server refusing our certificate does so before that,
 * so the refusal is a connect failure with the server's TLS alert.
 *
 * Every connection reports ready, goaway and closed to its owner (the
 * client's pool); calls the server provably never processed (not sent yet,
 * above a GOAWAY's stream ID, refused with H3_REQUEST_REJECTED) end marked
 * unprocessed, to be retried elsewhere.
 *
 * The client keeps, per endpoint (its tp_state), the last session ticket of
 * the server with its transport parameters, and the last NEW_TOKEN token:
 * the next connection resumes the session, skips the server's address
 * validation, and sends the calls marked idempotent as 0-RTT data right
 * away (others wait for the handshake). When the server refuses the early
 * data, those requests are sent again (their bytes are still held in the
 * stream send buffers, nothing of them was acknowledged).
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transport/h3/h3_client_int.h"
#include "util/log.h"

static void cc_closed(h3c_conn *cc, const char *why, bool tell_peer);

/* Takes calls: once ready, or at once while resuming with 0-RTT, until
 * the handshake is confirmed (h3c_start_call sends only idempotent calls
 * early, the others wait for the handshake). */
static bool h3c_ready(const void *p) {
  const h3c_conn *cc = p;
  return cc && !cc->goaway &&
         (cc->st == CC_READY || (cc->st == CC_CONNECTING && cc->early_ready && cc->b.h));
}

/* The server's request stream limit: the calls it takes at once (it
 * raises the limit as streams close). */
static uint32_t h3c_max_streams(const void *p) {
  const h3c_conn *cc = p;
  if (!h3c_ready(cc)) return 0;
  /* before the handshake (0-RTT): the limit remembered with the ticket */
  const ngtcp2_transport_params *rp = ngtcp2_conn_get_handshake_completed(cc->b.q)
                                          ? ngtcp2_conn_get_remote_transport_params(cc->b.q)
                                      : NULL;
  uint64_t n = rp ? rp->initial_max_streams_bidi : cc->he->tp_streams_bidi;
  if (!n) n = 1; /* none known: one call waits for the limit to rise */
  return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}



/* Keepalive (keepalive_interval_ms set): QUIC PINGs go out after an
 * interval without traffic (update_keepalive); when nothing at all came
 * back for the interval plus keepalive_timeout_ms while calls are open
 * (or always, with keepalive_without_calls), the server or the path is
 * gone: the connection closes so its calls fail now, as over HTTP/2.
 * Silence counts from the later of the last packet received and the start
 * of the watch (ka_from: the first call after a period without any, when
 * no PINGs went out). */
static void ka_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)revents;
  h3c_conn *cc = w->data;
  amn_ct_client *tc = cc->tc;
  if (cc->st != CC_READY || !tc->ka_interval_ms) return;
  uint32_t limit_ms = tc->ka_interval_ms + amn_ct_ka_timeout_ms(tc);
  ev_tstamp since = cc->last_rx > cc->ka_from ? cc->last_rx : cc->ka_from;
  double limit = limit_ms / 1000.0, quiet = ev_now(ev) - since;
  if (quiet >= limit - 0.001 && (cc->nlive || tc->keepalive_without_calls)) {
    char why[160];
    snprintf(why, sizeof why, "keepalive: no packet from the server within %u ms (PINGs unanswered)", limit_ms);
    AMN_WARN("connection to %s is dead (%s)", cc->ep->authority, why);
    cc_closed(cc, why, true);
    return;
  }
  /* sleep until the connection could be declared dead, no sooner */
  w->repeat = quiet < limit ? limit - quiet : limit;
  ev_timer_again(ev, w);
}

static void ka_start(h3c_conn *cc) {
  amn_ct_client *tc = cc->tc;
  if (!tc->ka_interval_ms) return;
  ev_timer_init(&cc->ka, ka_cb, 0., (tc->ka_interval_ms + amn_ct_ka_timeout_ms(tc)) / 1000.0);
  cc->ka.data = cc;
  ev_timer_again(tc->ev, &cc->ka);
}


/* ------------------------------------------------------------------ */
/* ngtcp2 callbacks                                                   */
/* ------------------------------------------------------------------ */


static int q_handshake_completed(ngtcp2_conn *q, void *ud) {
  h3c_conn *cc = ud;
  if (!amn_tls_alpn_is(cc->b.tls, "h3")) {
    snprintf(cc->last_err, sizeof cc->last_err, "server did not negotiate ALPN h3");
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  h3c_state *hs = cc->hs;
  bool resumed = gnutls_session_is_resumed(cc->b.tls);
  bool early_ok = (gnutls_session_get_flags(cc->b.tls) & GNUTLS_SFLAGS_EARLY_DATA) != 0;
  pthread_mutex_lock(&hs->mu);
  hs->st.handshakes++;
  if (resumed) hs->st.resumed++;
  if (cc->early) {
    if (early_ok) hs->st.early_accepted++;
    else hs->st.early_rejected++;
  }
  amn_h3c_ticket_save_params(cc->he, q); /* for the next 0-RTT */
  pthread_mutex_unlock(&hs->mu);
  if (cc->early_tp && !early_ok) {
    AMN_DEBUG("HTTP/3: %s refused our 0-RTT data: sending it again", cc->ep->authority);
    int rv = ngtcp2_conn_tls_early_data_rejected(q); /* -> q_early_rejected */
    if (rv != 0) return rv;
  }
  cc->early = false;
  int rv = amn_h3_setup_http(&cc->b, false, &amn_h3c_h3cbs, cc);
  if (rv != 0) {
    snprintf(cc->last_err, sizeof cc->last_err, "HTTP/3 setup failed: %s", nghttp3_strerror(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  /* refused early requests go again now (1-RTT), the others at HANDSHAKE_DONE */
  while (cc->waitq && cc->waitq->resend.head && amn_h3c_open_next(cc)) {
  }
  return 0;
}

static int q_handshake_confirmed(ngtcp2_conn *q, void *ud) {
  (void)q;
  h3c_conn *cc = ud;
  if (cc->st != CC_CONNECTING) return 0;
  ev_timer_stop(cc->tc->ev, &cc->ct);
  cc->st = CC_READY;
  AMN_DEBUG("HTTP/3 connection to %s ready", cc->ep->authority);
  amn_h3c_open_waiting(cc);
  amn_h3c_update_keepalive(cc);
  ka_start(cc);
  if (cc->owner) {
    if (cc->early_ready) cc->cb->confirmed(cc->owner); /* took 0-RTT calls already */
    else cc->cb->ready(cc->owner, false);              /* the pool sends calls */
  }
  cc->early_ready = false;
  return 0;
}

static int q_recv_retry(ngtcp2_conn *q, const ngtcp2_pkt_hd *hd, void *ud) {
  h3c_conn *cc = ud;
  HSTAT(cc, retries_received);
  AMN_DEBUG("HTTP/3: %s asked for address validation (Retry)", cc->ep->authority);
  return ngtcp2_crypto_recv_retry_cb(q, hd, ud);
}


static int q_recv_stateless_reset(ngtcp2_conn *q, const ngtcp2_pkt_stateless_reset *sr, void *ud) {
  (void)q; (void)sr;
  h3c_conn *cc = ud;
  cc->got_reset = true;
  HSTAT(cc, stateless_resets);
  return 0;
}

static int q_update_key(ngtcp2_conn *q, uint8_t *rx_secret, uint8_t *tx_secret, ngtcp2_crypto_aead_ctx *rx_aead_ctx,
                        uint8_t *rx_iv, ngtcp2_crypto_aead_ctx *tx_aead_ctx, uint8_t *tx_iv,
                        const uint8_t *current_rx_secret, const uint8_t *current_tx_secret, size_t secretlen,
                        void *ud) {
  h3c_conn *cc = ud;
  int rv = amn_h3_update_key(q, rx_secret, tx_secret, rx_aead_ctx, rx_iv, tx_aead_ctx, tx_iv, current_rx_secret,
                             current_tx_secret, secretlen, ud);
  if (rv == 0 && cc->b.key_gens > 1) HSTAT(cc, key_updates);
  return rv;
}





static int q_new_cid(ngtcp2_conn *q, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *ud) {
  (void)q; (void)ud;
  if (gnutls_rnd(GNUTLS_RND_NONCE, cid->data, cidlen) != 0 ||
      gnutls_rnd(GNUTLS_RND_NONCE, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  cid->datalen = cidlen;
  return 0;
}

static ngtcp2_callbacks g_qcbs;
static pthread_once_t g_qcbs_once = PTHREAD_ONCE_INIT;
static void init_qcbs(void) {
  amn_h3_base_callbacks(&g_qcbs);
  g_qcbs.client_initial = ngtcp2_crypto_client_initial_cb;
  g_qcbs.recv_retry = q_recv_retry;
  g_qcbs.recv_new_token = amn_h3c_q_recv_new_token;
  g_qcbs.recv_stateless_reset = q_recv_stateless_reset;
  g_qcbs.tls_early_data_rejected = amn_h3c_q_early_rejected;
  g_qcbs.update_key = q_update_key;
  g_qcbs.handshake_completed = q_handshake_completed;
  g_qcbs.handshake_confirmed = q_handshake_confirmed;
  g_qcbs.stream_close = amn_h3c_q_stream_close;
  g_qcbs.stream_reset = amn_h3c_q_stream_reset;
  g_qcbs.extend_max_local_streams_bidi = amn_h3c_q_extend_local_bidi;
  g_qcbs.get_new_connection_id = q_new_cid;
}

/* ------------------------------------------------------------------ */
/* Connection                                                         */
/* ------------------------------------------------------------------ */

/* Releases the QUIC state and the socket of the current attempt. */
static void teardown(h3c_conn *cc) {
  if (ev_is_active(&cc->rw)) ev_io_stop(cc->tc->ev, &cc->rw);
  if (cc->b.ev) amn_h3_conn_release(&cc->b);
  if (cc->b.fd >= 0) close(cc->b.fd);
  cc->b.fd = -1;
}

static void cc_free(h3c_conn *cc) {
  teardown(cc);
  ev_timer_stop(cc->tc->ev, &cc->ct);
  ev_timer_stop(cc->tc->ev, &cc->ka);
  if (cc->ai) freeaddrinfo(cc->ai);
  if (cc->prev) cc->prev->next = cc->next;
  else if (cc->hs->conns == cc) cc->hs->conns = cc->next;
  if (cc->next) cc->next->prev = cc->prev;
  free(cc);
}

/* The connection is over: calls on it fail with UNAVAILABLE (the reason
 * in the message), a connection that never became ready reports the
 * failed connect. Frees cc. */
static void cc_closed(h3c_conn *cc, const char *why, bool tell_peer) {
  bool was_ready = cc->st == CC_READY;
  if (cc->st == CC_CLOSED) return;
  if (tell_peer && cc->b.q && !ngtcp2_conn_in_closing_period(cc->b.q) &&
      !ngtcp2_conn_in_draining_period(cc->b.q)) {
    if (!cc->b.err.error_code)
      ngtcp2_ccerr_set_application_error(&cc->b.err, NGHTTP3_H3_NO_ERROR, NULL, 0);
    uint8_t buf[1500];
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(cc->b.q, &ps.path, &pi, buf, sizeof buf, &cc->b.err,
                                                        amn_h3_now());
    if (n > 0) amn_h3_send_one(cc->b.fd, NULL, 0, buf, (size_t)n);
  }
  cc->st = CC_CLOSED;
  ev_timer_stop(cc->tc->ev, &cc->ct);
  ev_timer_stop(cc->tc->ev, &cc->ka);
  char m[600];
  if (!was_ready) snprintf(m, sizeof m, "cannot connect to %s over HTTP/3: %s", cc->ep->authority, why);
  else snprintf(m, sizeof m, "connection to %s lost: %s", cc->ep->authority, why);
  if (!was_ready) AMN_DEBUG("%s", m); /* the pool logs the failure */
  else if (cc->live) AMN_INFO("%s", m);
  /* calls still open: retried elsewhere when their request never went
   * out, else UNAVAILABLE (idempotent ones may still be retried) */
  amn_h3c_streams_fail_all(cc, m);
  void *owner = cc->owner;
  cc->owner = NULL;
  if (owner) cc->cb->closed(owner, m, cc->asked); /* a connection that never became ready: the pool's failure */
  cc_free(cc);
}

static int attempt(h3c_conn *cc);

/* A connect-time failure of the current address: the next one, or give up. */
static void next_addr_or_fail(h3c_conn *cc, const char *why) {
  snprintf(cc->last_err, sizeof cc->last_err, "%s", why);
  if (cc->st == CC_CONNECTING && cc->cur && cc->cur->ai_next) {
    teardown(cc);
    cc->cur = cc->cur->ai_next;
    if (attempt(cc) == 0) return;
  }
  char w[300];
  snprintf(w, sizeof w, "%s", cc->last_err);
  cc_closed(cc, w, false);
}

/* After a failed ngtcp2 call: tells the peer, fails the connection. */
/* No handshake in time: silence, or a handshake that stalled. */
static void handshake_timeout_msg(h3c_conn *cc, char *why, size_t cap) {
  if (!cc->rx_any)
    snprintf(why, cap,
             "no QUIC handshake within %u ms: no answer from the server (is HTTP/3 enabled on it and UDP port %u "
             "reachable?)",
             cc->tc->connect_timeout_ms, cc->ep->port);
  else
    snprintf(why, cap, "QUIC handshake not completed within %u ms (packets lost, or the server is overloaded)",
             cc->tc->connect_timeout_ms);
}

static void cc_error(h3c_conn *cc, int rv) {
  char why[400];
  if (rv == NGTCP2_ERR_DRAINING) {
    if (cc->got_reset)
      snprintf(why, sizeof why, "server reset the connection (QUIC stateless reset: it no longer knows it, e.g. it "
                                "restarted)");
    else
      amn_h3_describe_peer_close(&cc->b, "server", why, sizeof why);
    cc_closed(cc, why, false);
    return;
  }
  if (rv == NGTCP2_ERR_IDLE_CLOSE || rv == NGTCP2_ERR_DROP_CONN) {
    if (rv == NGTCP2_ERR_IDLE_CLOSE && cc->st != CC_READY) handshake_timeout_msg(cc, why, sizeof why);
    else snprintf(why, sizeof why, "%s", rv == NGTCP2_ERR_IDLE_CLOSE ? "idle timeout (no packet from the server)"
                                                                      : "connection dropped");
    cc_closed(cc, why, false);
    return;
  }
  const char *tls = amn_h3_tls_reason(&cc->b);
  if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) handshake_timeout_msg(cc, why, sizeof why);
  else if (tls) snprintf(why, sizeof why, "%s", tls);
  else if (cc->b.h3_rc) snprintf(why, sizeof why, "HTTP/3 error: %s", nghttp3_strerror(cc->b.h3_rc));
  else if (cc->last_err[0]) snprintf(why, sizeof why, "%s", cc->last_err);
  else snprintf(why, sizeof why, "QUIC error: %s", ngtcp2_strerror(rv));
  amn_h3_set_liberr(&cc->b, rv);
  cc_closed(cc, why, true);
}

static bool socket_refused(h3c_conn *cc, int e) {
  if (e != ECONNREFUSED) return false;
  char why[200];
  snprintf(why, sizeof why, "connection refused (nothing listening on UDP port %u)", cc->ep->port);
  if (cc->st == CC_CONNECTING) next_addr_or_fail(cc, why);
  else cc_closed(cc, why, false);
  return true;
}

static void cc_flush(amn_h3_conn *b) {
  h3c_conn *cc = (h3c_conn *)b;
  if (cc->st == CC_CLOSED) return;
  int rv = amn_h3_write(b);
  if (rv != 0) {
    cc_error(cc, rv);
    return;
  }
  if (cc->nyielded) { /* the streams that stepped aside go on */
    amn_h3c_streams_resume_yielded(cc);
    if (b->wrote) amn_h3_mark_dirty(b); /* progress was made: go on now, not at the next packet */
  }
  if (socket_refused(cc, b->sock_err)) return;
  b->sock_err = 0;
  /* after GOAWAY, the connection ends with its last call */
  if (cc->goaway && cc->st == CC_READY && !cc->live && !cc->waitq) cc_closed(cc, "server sent GOAWAY", true);
}

static void cc_expiry(amn_h3_conn *b) {
  h3c_conn *cc = (h3c_conn *)b;
  int rv = ngtcp2_conn_handle_expiry(b->q, amn_h3_now());
  if (rv != 0) {
    cc_error(cc, rv);
    return;
  }
  cc_flush(b);
}

/* One datagram from the server. false when the connection is gone. */
static bool cc_recv(h3c_conn *cc, const struct sockaddr *from, socklen_t fromlen, const uint8_t *pkt, size_t len) {
  ngtcp2_path path = {{(struct sockaddr *)&cc->b.local, cc->b.local_len}, {(struct sockaddr *)from, fromlen}, NULL};
  ngtcp2_pkt_info pi = {0};
  int rv = ngtcp2_conn_read_pkt(cc->b.q, &path, &pi, pkt, len, amn_h3_now());
  if (rv != 0) {
    cc_error(cc, rv);
    return false;
  }
  return true;
}

static void read_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  h3c_conn *cc = w->data;
  for (int round = 0; round < 8; round++) {
    h3c_state *hs = cc->hs;
    amn_h3_rx *rx = &hs->rx;
    int n = amn_h3_recv_batch(cc->b.fd, rx);
    if (n < 0) {
      if (!socket_refused(cc, -n)) AMN_DEBUG("UDP receive from %s: %s", cc->ep->authority, strerror(-n));
      return;
    }
    if (n > 0) {
      cc->rx_any = true;
      cc->last_rx = ev_now(cc->tc->ev);
    }
    if (rx->datagrams) { /* one short lock per batch, for amn_client_get_quic_stats */
      pthread_mutex_lock(&hs->mu);
      hs->st.datagrams_received += rx->datagrams;
      hs->st.datagrams_coalesced += rx->coalesced;
      pthread_mutex_unlock(&hs->mu);
    }
    for (int i = 0; i < n; i++) {
      const uint8_t *pkt;
      size_t len;
      for (size_t off = 0; (len = amn_h3_rx_next(rx, i, &off, &pkt)) != 0;)
        if (!cc_recv(cc, (struct sockaddr *)&rx->from[i], rx->msgs[i].msg_hdr.msg_namelen, pkt, len)) return;
    }
    if (n == 0) break;
    amn_h3_mark_dirty(&cc->b);
    if (n < AMN_H3_RX_BATCH) break;
  }
}

#ifdef AMN_TEST_HOOKS
int amn_h3c_test_dcid0 = -1;

void amn_h3c_test_datagram(amn_ct_client *tc, int fd, const uint8_t *pkt, size_t len, const struct sockaddr *from,
                           socklen_t fromlen) {
  h3c_state *hs = __atomic_load_n(&SLOT(tc), __ATOMIC_ACQUIRE);
  h3c_conn *cc = hs ? hs->conns : NULL;
  while (cc && (cc->st == CC_CLOSED || !cc->b.q || cc->b.fd != fd)) cc = cc->next;
  if (!cc) return;
  cc->rx_any = true;
  cc->last_rx = ev_now(cc->tc->ev);
  if (cc_recv(cc, from, fromlen, pkt, len)) amn_h3_mark_dirty(&cc->b);
}
#endif

static void ct_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  h3c_conn *cc = w->data;
  char why[300];
  handshake_timeout_msg(cc, why, sizeof why);
  cc_closed(cc, why, true);
}


/* Starts a QUIC connection to cc->cur. 0, or -1 with cc->last_err set. */
static int attempt(h3c_conn *cc) {
  amn_ct_client *tc = cc->tc;
  struct addrinfo *a = cc->cur;
  int fd = socket(a->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(cc->last_err, sizeof cc->last_err, "socket: %s", strerror(errno));
    return -1;
  }
  amn_h3_udp_setup(fd, a->ai_family, AMN_H3_SOCKBUF_CLIENT);
  if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
    snprintf(cc->last_err, sizeof cc->last_err, "%s", strerror(errno));
    close(fd);
    return -1;
  }
  memset(&cc->b, 0, sizeof cc->b);
  amn_h3_conn_init(&cc->b, tc->ev, &cc->hs->sched, fd, cc->hs->txbuf, cc_flush, cc_expiry);
  cc->b.connected = true;
  cc->b.local_len = sizeof cc->b.local;
  getsockname(fd, (struct sockaddr *)&cc->b.local, &cc->b.local_len);
  char err[256];
  if (amn_tls_session_new(tc->tls_h3, &cc->b.tls, AMN_TLS_QUIC | GNUTLS_ENABLE_EARLY_DATA,
                          tc->server_name ? tc->server_name : cc->ep->sni, err, sizeof err) != 0 ||
      ngtcp2_crypto_gnutls_configure_client_session(cc->b.tls) != 0) {
    snprintf(cc->last_err, sizeof cc->last_err, "TLS setup: %s", cc->b.tls ? "QUIC configuration failed" : err);
    teardown(cc);
    return -1;
  }
  gnutls_session_set_ptr(cc->b.tls, &cc->b.ref);
  gnutls_handshake_set_hook_function(cc->b.tls, GNUTLS_HANDSHAKE_NEW_SESSION_TICKET, GNUTLS_HOOK_POST, amn_h3c_ticket_hook);
  /* resume the last session: with 0-RTT when its transport parameters are known */
  uint8_t early_tp[sizeof cc->he->tp], token[sizeof cc->he->token];
  size_t early_tp_len, token_len;
  bool resume = amn_h3c_ticket_load(cc, early_tp, &early_tp_len, token, &token_len);
  bool early = early_tp_len > 0;

  pthread_once(&g_qcbs_once, init_qcbs);
  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  scid.datalen = AMN_H3_SCIDLEN;
  gnutls_rnd(GNUTLS_RND_NONCE, dcid.data, dcid.datalen);
#ifdef AMN_TEST_HOOKS
  if (amn_h3c_test_dcid0 >= 0) dcid.data[0] = (uint8_t)amn_h3c_test_dcid0;
#endif
  gnutls_rnd(GNUTLS_RND_NONCE, scid.data, scid.datalen);
  ngtcp2_settings st;
  ngtcp2_settings_default(&st);
  st.initial_ts = amn_h3_now();
  st.handshake_timeout = (uint64_t)tc->connect_timeout_ms * NGTCP2_MILLISECONDS;
  if (token_len) { /* copied by ngtcp2 */
    st.token = token;
    st.tokenlen = token_len;
  }
  ngtcp2_transport_params p;
  ngtcp2_transport_params_default(&p);
  amn_h3_flow_setup(&st, &p, tc->initial_window_size);
  p.initial_max_streams_bidi = 0; /* the server opens no request streams */
  p.initial_max_streams_uni = 3;  /* its control + QPACK streams */
  p.max_idle_timeout = CLIENT_IDLE_TIMEOUT;
  p.active_connection_id_limit = 4;
  ngtcp2_path path = {{(struct sockaddr *)&cc->b.local, cc->b.local_len}, {a->ai_addr, a->ai_addrlen}, NULL};
  int rv = ngtcp2_conn_client_new(&cc->b.q, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &g_qcbs, &st, &p,
                                  &cc->b.mem, cc);
  if (rv != 0) {
    cc->b.q = NULL; /* ngtcp2 leaves the freed connection there */
    snprintf(cc->last_err, sizeof cc->last_err, "QUIC setup: %s", ngtcp2_strerror(rv));
    teardown(cc);
    return -1;
  }
  ngtcp2_conn_set_tls_native_handle(cc->b.q, cc->b.tls);
  cc->early = cc->early_tp = false;
  if (early) {
    /* 0-RTT: HTTP/3 starts now, on the parameters the server gave last time */
    cc->early_tp = ngtcp2_conn_decode_and_set_0rtt_transport_params(cc->b.q, early_tp, early_tp_len) == 0;
    if (cc->early_tp && amn_h3_setup_http(&cc->b, false, &amn_h3c_h3cbs, cc) == 0) {
      cc->early = true;
      HSTAT(cc, early_attempted);
    } else if (cc->b.h) {
      nghttp3_conn_del(cc->b.h);
      cc->b.h = NULL;
    }
  }
  AMN_DEBUG("HTTP/3 connection to %s%s%s", cc->ep->authority, resume ? ", resuming the TLS session" : "",
            cc->early ? " with 0-RTT" : "");
  ev_io_init(&cc->rw, read_cb, fd, EV_READ);
  cc->rw.data = cc;
  ev_io_start(tc->ev, &cc->rw);
  amn_h3_mark_dirty(&cc->b); /* the first flight goes out before the loop blocks */
  return 0;
}

static h3c_state *state_of(amn_ct_client *tc) { return __atomic_load_n(&SLOT(tc), __ATOMIC_ACQUIRE); }
static h3c_state *state_get(amn_ct_client *tc);

static void h3c_open(amn_ct_client *tc, amn_ct_endpoint *ep, void *owner, void **conn) {
  h3c_state *hs = state_get(tc);
  if (hs && !SLOT(ep)) SLOT(ep) = calloc(1, sizeof(h3c_ep));
  h3c_conn *cc = hs && SLOT(ep) ? calloc(1, sizeof *cc) : NULL;
  *conn = cc;
  if (!cc) {
    tc->conn_cbs->closed(owner, "out of memory", false);
    return;
  }
  cc->tc = tc;
  cc->cb = tc->conn_cbs;
  cc->ccb = tc->call_cbs;
  cc->ep = ep;
  cc->owner = owner;
  cc->hs = hs;
  cc->he = SLOT(ep);
  cc->st = CC_CONNECTING;
  cc->b.fd = -1;
  cc->next = hs->conns;
  if (hs->conns) hs->conns->prev = cc;
  hs->conns = cc;
  ev_timer_init(&cc->ct, ct_cb, tc->connect_timeout_ms / 1000.0, 0.);
  cc->ct.data = cc;
  ev_timer_start(tc->ev, &cc->ct);
  ev_init(&cc->ka, ka_cb);
  ev_init(&cc->rw, read_cb);
  struct addrinfo hints = {0};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  char ps[8];
  snprintf(ps, sizeof ps, "%u", ep->port);
  int gai = getaddrinfo(ep->host, ps, &hints, &cc->ai);
  if (gai != 0) {
    char m[300];
    snprintf(m, sizeof m, "cannot resolve '%s': %s", ep->host, gai_strerror(gai));
    cc->ai = NULL;
    cc_closed(cc, m, false);
    return;
  }
  for (cc->cur = cc->ai; cc->cur; cc->cur = cc->cur->ai_next)
    if (attempt(cc) == 0) {
      if (cc->early) { /* resuming with 0-RTT: idempotent calls go now, with the first flight */
        cc->early_ready = true;
        cc->cb->ready(owner, true);
      }
      return;
    }
  char m[300];
  snprintf(m, sizeof m, "%s", cc->last_err[0] ? cc->last_err : "no address");
  cc_closed(cc, m, false);
}

static void h3c_close(void *conn, const char *why) { cc_closed(conn, why, true); }

/* ------------------------------------------------------------------ */
/* Client state, counters, test hooks                                 */
/* ------------------------------------------------------------------ */

#ifdef AMN_TEST_HOOKS /* test builds only (CMake: AMN_BUILD_TESTS) */
/* A new UDP socket for the connection: NAT rebinding (nat_only: the
 * server just sees packets from a new address) or an active migration
 * to a new path with a fresh connection ID. */
static int do_rebind(h3c_conn *cc, bool nat_only) {
  if (!cc || cc->st != CC_READY) return AMN_ESTATE;
  struct addrinfo *a = cc->cur;
  int fd = socket(a->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return AMN_EIO;
  amn_h3_udp_setup(fd, a->ai_family, AMN_H3_SOCKBUF_CLIENT);
  struct sockaddr_storage local;
  socklen_t ll = sizeof local;
  if (connect(fd, a->ai_addr, a->ai_addrlen) != 0 || getsockname(fd, (struct sockaddr *)&local, &ll) != 0) {
    close(fd);
    return AMN_EIO;
  }
  ngtcp2_addr la;
  ngtcp2_addr_init(&la, (struct sockaddr *)&local, ll);
  if (nat_only) {
    ngtcp2_conn_set_local_addr(cc->b.q, &la);
  } else {
    ngtcp2_path path = {la, {a->ai_addr, a->ai_addrlen}, NULL};
    int rv = ngtcp2_conn_initiate_immediate_migration(cc->b.q, &path, amn_h3_now());
    if (rv != 0) {
      AMN_DEBUG("HTTP/3 migration refused: %s", ngtcp2_strerror(rv));
      close(fd);
      return AMN_ESTATE;
    }
  }
  ev_io_stop(cc->tc->ev, &cc->rw);
  close(cc->b.fd);
  memcpy(&cc->b.local, &local, ll);
  cc->b.local_len = ll;
  amn_h3_conn_set_fd(&cc->b, fd);
  ev_io_set(&cc->rw, fd, EV_READ);
  ev_io_start(cc->tc->ev, &cc->rw);
  HSTAT(cc, migrations);
  amn_h3_mark_dirty(&cc->b);
  return 0;
}

/* The connection the test hooks act on: the HTTP/3 connection carrying
 * the most calls (ready ones first). */
static h3c_conn *hook_conn(h3c_state *hs) {
  h3c_conn *best = NULL;
  for (h3c_conn *cc = hs->conns; cc; cc = cc->next) {
    if (cc->st == CC_CLOSED) continue;
    bool ready = cc->st == CC_READY && !cc->goaway, bready = best && best->st == CC_READY && !best->goaway;
    if (!best || (ready && !bready) || (ready == bready && amn_h3c_load(cc) > amn_h3c_load(best))) best = cc;
  }
  return best;
}

static void async_cb(struct ev_loop *ev, ev_async *w, int revents) {
  (void)ev; (void)revents;
  h3c_state *hs = w->data;
  pthread_mutex_lock(&hs->mu);
  int op = hs->op, arg = hs->op_arg;
  unsigned seq = hs->op_seq;
  pthread_mutex_unlock(&hs->mu);
  if (seq == hs->op_done) return;
  h3c_conn *cc = hook_conn(hs);
  int rc = AMN_ESTATE;
  if (cc && op == AMN_CT_OP_CLOSE) {
    cc->asked = true; /* not a failure of the server */
    cc_closed(cc, "closed by the application", true);
    rc = 0;
  } else if (cc && cc->st == CC_READY) {
    if (op == AMN_CT_OP_REBIND) {
      rc = do_rebind(cc, arg != 0);
    } else if (op == AMN_CT_OP_PEER_CID0) {
      rc = ngtcp2_conn_get_dcid(cc->b.q)->datalen ? ngtcp2_conn_get_dcid(cc->b.q)->data[0] : AMN_ESTATE;
    } else if (op == AMN_CT_OP_KEY_UPDATE) {
      rc = ngtcp2_conn_initiate_key_update(cc->b.q, amn_h3_now()) == 0 ? 0 : AMN_ESTATE;
      if (rc == 0) amn_h3_mark_dirty(&cc->b);
    }
  }
  pthread_mutex_lock(&hs->mu);
  hs->op_rc = rc;
  hs->op_done = seq;
  pthread_cond_broadcast(&hs->cv);
  pthread_mutex_unlock(&hs->mu);
}
#endif

/* I/O thread: the client's state, made on first use. */
static h3c_state *state_get(amn_ct_client *tc) {
  h3c_state *hs = state_of(tc);
  if (hs) return hs;
  hs = calloc(1, sizeof *hs);
  if (hs) {
    hs->rx.bufs = malloc((size_t)AMN_H3_RX_BATCH * AMN_H3_RX_DGRAM);
    hs->txbuf = malloc(AMN_H3_TX_BUF);
  }
  if (!hs || !hs->rx.bufs || !hs->txbuf) {
    if (hs) {
      free(hs->rx.bufs);
      free(hs->txbuf);
    }
    free(hs);
    return NULL;
  }
  amn_h3_sched_init(&hs->sched, tc->ev);
  pthread_mutex_init(&hs->mu, NULL);
  pthread_cond_init(&hs->cv, NULL);
#ifdef AMN_TEST_HOOKS
  ev_async_init(&hs->async, async_cb);
  hs->async.data = hs;
  ev_async_start(tc->ev, &hs->async);
  ev_unref(tc->ev); /* must not keep the loop alive by itself */
#endif
  __atomic_store_n(&SLOT(tc), hs, __ATOMIC_RELEASE);
  return hs;
}


static void h3c_client_free(amn_ct_client *tc) {
  h3c_state *hs = state_of(tc);
  if (!hs) return;
#ifdef AMN_TEST_HOOKS
  ev_ref(tc->ev);
  ev_async_stop(tc->ev, &hs->async);
#endif
  pthread_mutex_destroy(&hs->mu);
  pthread_cond_destroy(&hs->cv);
  amn_h3_sched_stop(&hs->sched);
  free(hs->rx.bufs);
  free(hs->txbuf);
  free(hs);
  SLOT(tc) = NULL;
}

static void h3c_stats(amn_ct_client *tc, void *outp) {
  amn_h3_client_stats *out = outp;
  memset(out, 0, sizeof *out);
  h3c_state *hs = state_of(tc);
  if (!hs) return;
  pthread_mutex_lock(&hs->mu);
  *out = hs->st;
  pthread_mutex_unlock(&hs->mu);
}

#ifdef AMN_TEST_HOOKS
static int h3c_test_op(amn_ct_client *tc, int op, int arg) {
  h3c_state *hs = state_of(tc);
  if (!hs) return AMN_ESTATE;
  pthread_mutex_lock(&hs->mu);
  hs->op = op;
  hs->op_arg = arg;
  unsigned seq = ++hs->op_seq;
  pthread_mutex_unlock(&hs->mu);
  ev_async_send(tc->ev, &hs->async);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 5;
  pthread_mutex_lock(&hs->mu);
  int w = 0;
  while (hs->op_done != seq && w == 0) w = pthread_cond_timedwait(&hs->cv, &hs->mu, &ts);
  int rc = hs->op_done == seq ? hs->op_rc : AMN_EIO;
  pthread_mutex_unlock(&hs->mu);
  return rc;
}
#endif

static gnutls_session_t h3c_session(void *stream) { return ((h3c_stream *)stream)->cc->b.tls; }

const amn_ctransport amn_h3c_transport = {
    .name = "HTTP/3",
    .kind = AMN_TRANSPORT_H3,
    .slot = 1,
    .open = h3c_open,
    .max_streams = h3c_max_streams,
    .start_call = amn_h3c_start_call,
    .resume = amn_h3c_resume,
    .cancel = amn_h3c_cancel,
    .session = h3c_session,
    .close = h3c_close,
    .endpoint_free = amn_h3c_endpoint_free,
    .client_free = h3c_client_free,
    .stats = h3c_stats,
#ifdef AMN_TEST_HOOKS
    .test_op = h3c_test_op,
#endif
};
