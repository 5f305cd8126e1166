/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, server side: session tickets and 0-RTT. The ticket
 * key all loops of a server share (rotated), the tickets sent after a
 * handshake, the client identity remembered for each ticket (0-RTT
 * requests come before GnuTLS can tell who the resumed client is), its
 * re-verification when the handshake completes, and the hookup of
 * GnuTLS's anti-replay callback to the server's table (h3_replay.c).
 */
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "transport/h3/h3_server_int.h"
#include "util/log.h"

/* ------------------------------------------------------------------ */
/* Ticket key                                                         */
/* ------------------------------------------------------------------ */

/* The ticket key in use (rotated every AMN_H3_TICKET_ROTATE_S). */
static void current_stek(h3_group *g, uint8_t out[64]) {
  pthread_mutex_lock(&g->mu);
  time_t now = time(NULL);
  if (now - g->stek_born >= AMN_H3_TICKET_ROTATE_S) {
    gnutls_rnd(GNUTLS_RND_KEY, g->stek, sizeof g->stek);
    g->stek_born = now;
  }
  memcpy(out, g->stek, sizeof g->stek);
  pthread_mutex_unlock(&g->mu);
}

void amn_h3s_rotate_ticket_key(amn_st_loop *first) {
  amn_h3_listener *l = first ? first->h3 : NULL;
  if (!l || !l->group) return;
  pthread_mutex_lock(&l->group->mu);
  l->group->stek_born -= AMN_H3_TICKET_ROTATE_S; /* the next session makes a new one */
  pthread_mutex_unlock(&l->group->mu);
}

/* ------------------------------------------------------------------ */
/* Client identity by session ticket                                  */
/* ------------------------------------------------------------------ */

/* A resumed TLS 1.3 session carries the client certificate of its
 * original handshake, but GnuTLS makes it available only once the
 * handshake completed, while 0-RTT requests come before. So the server
 * remembers, for every ticket it issues, the identity it verified (the
 * ticket's own bytes are the key; they come back as the PSK identity of
 * the ClientHello), with the credentials that verified it and the
 * chain's expiry. 0-RTT is accepted only when this identity is known and
 * still valid; the handshake's end checks that GnuTLS restored the same
 * certificate and verifies it again. */

typedef struct ticket_id {
  amn_tls_ctx *ctx;             /* credentials that verified it (compared, not dereferenced) */
  time_t not_after;             /* earliest expiry in the chain */
  amn_peer_store peer;
} ticket_id;

static void ticket_id_free(void *p) {
  ticket_id *t = p;
  if (!t) return;
  amn_peer_store_free(&t->peer);
  free(t);
}

static bool peer_copy(amn_peer_store *dst, const amn_peer_store *src) {
  size_t total = src->id.cert_der_len + strlen(src->id.subject) + 1;
  for (size_t i = 0; i < src->id.san_count; i++) total += strlen(src->id.sans[i]) + 1;
  char *b = malloc(total);
  if (!b) return false;
  dst->id = src->id;
  dst->blob = b;
  if (src->id.cert_der_len) memcpy(b, src->id.cert_der, src->id.cert_der_len);
  dst->id.cert_der = src->id.cert_der_len ? (const uint8_t *)b : NULL;
  b += src->id.cert_der_len;
  dst->id.subject = strcpy(b, src->id.subject);
  b += strlen(b) + 1;
  for (size_t i = 0; i < src->id.san_count; i++) {
    dst->id.sans[i] = strcpy(b, src->id.sans[i]);
    b += strlen(b) + 1;
  }
  return true;
}

/* Earliest expiry of the peer's chain (the session's peers), or 0. */
static time_t chain_not_after(gnutls_session_t s) {
  unsigned n = 0;
  const gnutls_datum_t *raw = gnutls_certificate_get_peers(s, &n);
  time_t min = 0;
  for (unsigned i = 0; raw && i < n; i++) {
    gnutls_x509_crt_t c;
    if (gnutls_x509_crt_init(&c) < 0) return 0;
    time_t na = gnutls_x509_crt_import(c, &raw[i], GNUTLS_X509_FMT_DER) == 0 ? gnutls_x509_crt_get_expiration_time(c)
                                                                             : (time_t)-1;
    gnutls_x509_crt_deinit(c);
    if (na == (time_t)-1) return 0;
    if (!min || na < min) min = na;
  }
  return min;
}

/* Our NewSessionTicket (body: lifetime, age_add, nonce<1>, ticket<2>, ...). */
static void remember_ticket(h3_sconn *sc, const gnutls_datum_t *msg) {
  h3_group *g = sc->l->group;
  if (!g || !g->ids || !sc->have_peer || !sc->peer.id.verified || msg->size < 9) return;
  size_t nl = msg->data[8], off = 9 + nl;
  if (off + 2 > msg->size) return;
  size_t tl = ((size_t)msg->data[off] << 8) | msg->data[off + 1];
  if (!tl || off + 2 + tl > msg->size) return;
  ticket_id *t = calloc(1, sizeof *t);
  if (!t) return;
  t->ctx = sc->ctx;
  t->not_after = chain_not_after(sc->b.tls);
  if (!t->not_after || !peer_copy(&t->peer, &sc->peer)) {
    ticket_id_free(t);
    return;
  }
  time_t now = time(NULL);
  amn_h3_tcache_put(g->ids, msg->data + off + 2, tl, now + AMN_H3_TICKET_LIFETIME_S, now, t);
}

static bool take_ticket_id(void *dst, const void *val) {
  h3_sconn *sc = dst;
  const ticket_id *t = val;
  /* the same credentials as now (no reload since), no certificate expired */
  const amn_st_config *cfg = sc->l->loop->cfg;
  if (t->ctx != cfg->tls_get(cfg->tls_ud) || time(NULL) >= t->not_after) return false;
  if (!peer_copy(&sc->peer, &t->peer)) return false;
  sc->have_peer = sc->peer_from_ticket = true;
  return true;
}

/* pre_shared_key: identities<2> { identity<2>; uint32 obfuscated_age; }, binders */
static void ticket_identity(h3_sconn *sc, const unsigned char *p, unsigned n) {
  h3_group *g = sc->l->group;
  if (!g || !g->ids || n < 2 || sc->have_peer) return;
  size_t total = ((size_t)p[0] << 8) | p[1], off = 2;
  if (2 + total > n) return;
  while (off + 2 <= 2 + total) {
    size_t il = ((size_t)p[off] << 8) | p[off + 1];
    if (off + 2 + il + 4 > 2 + total) return;
    if (amn_h3_tcache_get(g->ids, p + off + 2, il, time(NULL), take_ticket_id, sc)) return;
    off += 2 + il + 4;
  }
}

static int hello_ext(void *ctx, unsigned tls_id, const unsigned char *data, unsigned size) {
  h3_sconn *sc = ctx;
  if (tls_id == 42) sc->early_offered = true; /* early_data */
  else if (tls_id == 41) ticket_identity(sc, data, size); /* pre_shared_key */
  return 0;
}

static int hs_hook(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming, const gnutls_datum_t *msg) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(s);
  h3_sconn *sc = ref->user_data;
  if (htype == GNUTLS_HANDSHAKE_CLIENT_HELLO && when == GNUTLS_HOOK_PRE && incoming) {
    sc->l->hello_sc = sc; /* for replay_add, within this same gnutls call */
    gnutls_ext_raw_parse(sc, hello_ext, msg, GNUTLS_EXT_RAW_FLAG_TLS_CLIENT_HELLO);
  } else if (htype == GNUTLS_HANDSHAKE_NEW_SESSION_TICKET && when == GNUTLS_HOOK_POST && !incoming) {
    remember_ticket(sc, msg);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* 0-RTT anti-replay                                                  */
/* ------------------------------------------------------------------ */

/* Anti-replay (gnutls_anti_replay_set_add_function): GnuTLS asks to record
 * a ClientHello with early data that is within its ticket's time window.
 * The key is a 12-byte start of this loop's recording window followed by
 * the ClientHello's PSK binder; the window start differs between loops
 * (and moves), so only the binder is recorded: a replay to another loop,
 * or across a window roll-over, is found too. */
static int replay_add(void *ptr, time_t exp, const gnutls_datum_t *key, const gnutls_datum_t *data) {
  (void)data;
  amn_h3_listener *l = ptr;
  if (!l->group || !l->group->replay || key->size <= 12) return GNUTLS_E_DB_ERROR;
  /* no 0-RTT without the client identity the ticket stands for */
  if (!l->hello_sc || !l->hello_sc->peer_from_ticket) return GNUTLS_E_DB_ERROR;
  /* kept a second longer than GnuTLS asks: clock granularity */
  int rc = amn_h3_replay_add(l->group->replay, key->data + 12, key->size - 12, exp + 1, time(NULL));
  if (rc == 1) {
    STAT(l, replays_detected);
    AMN_WARN("0-RTT replay detected (a ClientHello seen before): early data refused");
    return GNUTLS_E_DB_ENTRY_EXISTS;
  }
  if (rc < 0) {
    AMN_WARN("0-RTT refused: anti-replay table full (%u ClientHellos within %u ms)", (unsigned)AMN_H3_REPLAY_MAX,
             (unsigned)AMN_H3_REPLAY_WINDOW_MS);
    return GNUTLS_E_DB_ERROR;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* For the listeners (h3_server.c)                                    */
/* ------------------------------------------------------------------ */

void amn_h3s_ticket_group_init(h3_group *g) {
  pthread_mutex_init(&g->mu, NULL);
  gnutls_rnd(GNUTLS_RND_KEY, g->stek, sizeof g->stek);
  g->stek_born = time(NULL);
  g->replay = amn_h3_replay_new(AMN_H3_REPLAY_MAX);
  g->ids = amn_h3_tcache_new(AMN_H3_TICKET_IDS_MAX, ticket_id_free);
  if (!g->replay || !g->ids) {
    AMN_WARN("HTTP/3: no memory for the anti-replay table: 0-RTT disabled");
    amn_h3_replay_free(g->replay);
    g->replay = NULL;
  }
}

void amn_h3s_ticket_group_free(h3_group *g) {
  amn_h3_replay_free(g->replay);
  amn_h3_replay_free(g->ids);
  pthread_mutex_destroy(&g->mu);
  gnutls_memset(g->stek, 0, sizeof g->stek);
}

void amn_h3s_ticket_attach(amn_h3_listener *l) {
  /* each loop has its own GnuTLS recording window (not thread-safe);
   * the table behind it is the group's */
  if (l->group->replay && gnutls_anti_replay_init(&l->ar) == 0) {
    gnutls_anti_replay_set_window(l->ar, AMN_H3_REPLAY_WINDOW_MS);
    gnutls_anti_replay_set_add_function(l->ar, replay_add);
    gnutls_anti_replay_set_ptr(l->ar, l);
  }
}

void amn_h3s_ticket_detach(amn_h3_listener *l) {
  if (l->ar) gnutls_anti_replay_deinit(l->ar);
  l->ar = NULL;
}

/* ------------------------------------------------------------------ */
/* For the connections (h3_server_conn.c)                             */
/* ------------------------------------------------------------------ */

void amn_h3s_ticket_session(h3_sconn *sc) {
  h3_group *g = sc->l->group;
  if (!g) return;
  uint8_t key[64];
  current_stek(g, key);
  gnutls_datum_t kd = {key, sizeof key};
  int rc = gnutls_session_ticket_enable_server(sc->b.tls, &kd); /* copies the key */
  gnutls_memset(key, 0, sizeof key);
  if (rc < 0) AMN_WARN("%s: session tickets unavailable: %s", sc->addr, gnutls_strerror(rc));
  gnutls_db_set_cache_expiration(sc->b.tls, AMN_H3_TICKET_LIFETIME_S);
  if (g->replay && sc->l->ar) {
    gnutls_anti_replay_enable(sc->b.tls, sc->l->ar);
    gnutls_record_set_max_early_data_size(sc->b.tls, 0xffffffffu); /* what QUIC requires */
  }
  gnutls_handshake_set_hook_function(sc->b.tls, GNUTLS_HANDSHAKE_ANY, GNUTLS_HOOK_BOTH, hs_hook);
}

void amn_h3s_ticket_hello_done(h3_sconn *sc) {
  sc->l->hello_sc = NULL;
  if (sc->have_peer && !gnutls_session_is_resumed(sc->b.tls)) {
    /* the ticket was offered but not taken (e.g. its key rotated): a full
     * handshake verifies the certificate the client sends now */
    amn_peer_store_free(&sc->peer);
    sc->have_peer = sc->peer_from_ticket = false;
  }
}

int amn_h3s_ticket_handshake_done(h3_sconn *sc) {
  if (gnutls_session_is_resumed(sc->b.tls)) {
    /* the certificate of the original handshake, checked again against
     * the credentials and the clock of now */
    STAT(sc->l, resumed);
    amn_peer_store now;
    if (amn_tls_verify_resumed(sc->b.tls) != 0 || amn_tls_peer_identity(sc->b.tls, &now) != 0) {
      const char *why = amn_tls_last_error(sc->b.tls);
      AMN_WARN("connection from %s refused: resumed session: %s", sc->addr, why ? why : "no client identity");
      ngtcp2_ccerr_set_tls_alert(&sc->b.err, GNUTLS_A_CERTIFICATE_UNKNOWN, NULL, 0);
      return -1;
    }
    if (sc->have_peer && memcmp(now.id.sha256, sc->peer.id.sha256, 32) != 0) {
      AMN_ERROR("connection from %s refused: the session ticket's identity differs from the resumed session's",
                sc->addr);
      amn_peer_store_free(&now);
      ngtcp2_ccerr_set_tls_alert(&sc->b.err, GNUTLS_A_CERTIFICATE_UNKNOWN, NULL, 0);
      return -1;
    }
    if (sc->have_peer) amn_peer_store_free(&now); /* early calls point at sc->peer: keep it */
    else sc->peer = now;
    sc->have_peer = true;
  } else if (!sc->have_peer && amn_tls_peer_identity(sc->b.tls, &sc->peer) == 0) {
    sc->have_peer = true;
  }
  if (sc->early_offered) {
    if (gnutls_session_get_flags(sc->b.tls) & GNUTLS_SFLAGS_EARLY_DATA) STAT(sc->l, early_accepted);
    else STAT(sc->l, early_rejected);
  }
  return 0;
}

void amn_h3s_ticket_send(h3_sconn *sc) {
  int rc = gnutls_session_ticket_send(sc->b.tls, 1, 0);
  if (rc < 0) AMN_DEBUG("%s: no session ticket: %s", sc->addr, gnutls_strerror(rc));
}
