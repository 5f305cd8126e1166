/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, client side: what an endpoint's next connection
 * reuses (h3c_ep, under the client state's lock): the last session ticket
 * of the server with its transport parameters (0-RTT), and the last
 * NEW_TOKEN token (skips the server's address validation).
 */
#include <stdlib.h>
#include <string.h>

#include "transport/h3/h3_client_int.h"

bool amn_h3c_ticket_load(h3c_conn *cc, uint8_t *tp, size_t *tp_len, uint8_t *token, size_t *token_len) {
  h3c_state *hs = cc->hs;
  h3c_ep *he = cc->he;
  bool resume = false;
  *tp_len = *token_len = 0;
  pthread_mutex_lock(&hs->mu);
  if (he->ticket.size && !cc->tc->no_resumption && gnutls_session_set_data(cc->b.tls, he->ticket.data, he->ticket.size) == 0) {
    resume = true;
    if (he->tp_len) {
      memcpy(tp, he->tp, he->tp_len);
      *tp_len = he->tp_len;
    }
  }
  if (he->token_len) {
    *token_len = he->token_len;
    memcpy(token, he->token, he->token_len);
  }
  hs->st.connects++;
  if (*token_len) hs->st.tokens_sent++;
  pthread_mutex_unlock(&hs->mu);
  return resume;
}

void amn_h3c_ticket_save_params(h3c_ep *he, ngtcp2_conn *q) {
  const ngtcp2_transport_params *rp = ngtcp2_conn_get_remote_transport_params(q);
  ngtcp2_ssize tpn = ngtcp2_conn_encode_0rtt_transport_params(q, he->tp, sizeof he->tp);
  he->tp_len = tpn > 0 ? (size_t)tpn : 0;
  he->tp_streams_bidi = rp ? rp->initial_max_streams_bidi : 0;
}

/* NEW_TOKEN: kept for the next connection (skips the server's Retry). */
int amn_h3c_q_recv_new_token(ngtcp2_conn *q, const uint8_t *token, size_t len, void *ud) {
  (void)q;
  h3c_conn *cc = ud;
  h3c_state *hs = cc->hs;
  h3c_ep *he = cc->he;
  if (len > sizeof he->token) return 0;
  pthread_mutex_lock(&hs->mu);
  memcpy(he->token, token, len);
  he->token_len = len;
  hs->st.tokens_received++;
  pthread_mutex_unlock(&hs->mu);
  return 0;
}

/* NewSessionTicket received: the session data to resume with next time. */
int amn_h3c_ticket_hook(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
                       const gnutls_datum_t *msg) {
  (void)htype; (void)when; (void)incoming; (void)msg;
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  h3c_conn *cc = ref->user_data;
  gnutls_datum_t d = {NULL, 0};
  if (gnutls_session_get_data2(s, &d) < 0) return 0;
  h3c_state *hs = cc->hs;
  pthread_mutex_lock(&hs->mu);
  gnutls_free(cc->he->ticket.data);
  cc->he->ticket = d;
  hs->st.tickets_received++;
  pthread_mutex_unlock(&hs->mu);
  return 0;
}

void amn_h3c_endpoint_free(amn_ct_endpoint *ep) {
  h3c_ep *he = SLOT(ep);
  if (he) gnutls_free(he->ticket.data);
  free(he);
  SLOT(ep) = NULL;
}

