/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, server side: address validation and stateless reset
 * tokens. Retry (stateless address validation when a loop has many
 * handshakes in progress), NEW_TOKEN tokens that let a returning client
 * skip it, the check of the token an Initial carries, and stateless
 * resets for packets of connections we do not know (e.g. after a
 * restart). The keys come from the server's QUIC secret when it has one
 * (tokens and resets then survive a restart), else they are random.
 */
#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <pthread.h>
#include <string.h>

#include "amn/pki.h" /* AMN_QUIC_SECRET_LEN */
#include "transport/h3/h3_server_int.h"
#include "util/addr.h"
#include "util/log.h"

/* Process-wide key of the stateless reset tokens of servers without a
 * configured secret (amn_server_opts.quic_secret). */
static uint8_t g_secret[32];
static pthread_once_t g_secret_once = PTHREAD_ONCE_INIT;
static void init_secret(void) { gnutls_rnd(GNUTLS_RND_KEY, g_secret, sizeof g_secret); }

void amn_h3s_token_init(void) { pthread_once(&g_secret_once, init_secret); }

/* The key of the listener's stateless reset tokens. */
static const uint8_t *reset_key(const amn_h3_listener *l) { return l->group ? l->group->reset_secret : g_secret; }

/* One key per purpose from the server's QUIC secret (HKDF-Expand). */
static int derive_key(const uint8_t *secret, const char *label, uint8_t out[32]) {
  gnutls_datum_t prk = {(unsigned char *)secret, AMN_QUIC_SECRET_LEN}, info = {(unsigned char *)label,
                                                                              (unsigned)strlen(label)};
  return gnutls_hkdf_expand(GNUTLS_MAC_SHA256, &prk, &info, out, 32);
}

void amn_h3s_token_keys(h3_group *g, const amn_st_config *cfg) {
  if (!cfg->has_quic_secret) {
    gnutls_rnd(GNUTLS_RND_KEY, g->token_secret, sizeof g->token_secret);
    memcpy(g->reset_secret, g_secret, sizeof g->reset_secret);
  } else if (derive_key(cfg->quic_secret, "amaters-net quic token", g->token_secret) != 0 ||
             derive_key(cfg->quic_secret, "amaters-net quic stateless reset", g->reset_secret) != 0) {
    AMN_ERROR("HTTP/3: cannot derive keys from the QUIC secret: using random ones (resets are not "
              "recognised after a restart)");
    gnutls_rnd(GNUTLS_RND_KEY, g->token_secret, sizeof g->token_secret);
    gnutls_rnd(GNUTLS_RND_KEY, g->reset_secret, sizeof g->reset_secret);
  }
}

void amn_h3s_token_keys_wipe(h3_group *g) {
  gnutls_memset(g->token_secret, 0, sizeof g->token_secret);
  gnutls_memset(g->reset_secret, 0, sizeof g->reset_secret);
}

int amn_h3s_reset_token(const amn_h3_listener *l, const ngtcp2_cid *cid, uint8_t *token) {
  return ngtcp2_crypto_generate_stateless_reset_token(token, reset_key(l), 32, cid);
}

/* A debug line about a packet answered without a connection. */
static void debug_answer(const struct sockaddr *from, const char *packet, const char *answer) {
  if (AMN_LOG_DEBUG > amn_log_level_current) return;
  char addr[64];
  amn_addr_text(from, addr, sizeof addr);
  AMN_DEBUG("%s from %s: %s", packet, addr, answer);
}

/* ------------------------------------------------------------------ */
/* Stateless reset                                                    */
/* ------------------------------------------------------------------ */

/* Stateless resets a loop sends at most, per window: a flood of packets for
 * unknown connections (garbage, or spoofed sources aiming the answers at a
 * victim) gets few answers, and each costs a key derivation. */
#define SR_WINDOW_NS 100000000ull
#define SR_PER_WINDOW 100

/* A short-header packet for no connection of ours (e.g. we restarted):
 * tell the client with a stateless reset, always shorter than the packet. */
void amn_h3s_send_stateless_reset(amn_h3_listener *l, const ngtcp2_version_cid *vc, size_t pktlen,
                                  const struct sockaddr *from, socklen_t fromlen) {
  if (l->draining || pktlen < 1 + NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN + 1) return;
  uint64_t now = amn_h3_now();
  if (now - l->sr_window >= SR_WINDOW_NS) {
    l->sr_window = now;
    l->sr_sent = 0;
  }
  if (l->sr_sent >= SR_PER_WINDOW) {
    STAT(l, stateless_resets_limited);
    return;
  }
  l->sr_sent++;
  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, vc->dcid, vc->dcidlen);
  uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN], rnd[64], buf[128];
  if (amn_h3s_reset_token(l, &cid, token) != 0) return;
  size_t rl = pktlen - 1 - NGTCP2_STATELESS_RESET_TOKENLEN - 1;
  if (rl > sizeof rnd) rl = sizeof rnd;
  gnutls_rnd(GNUTLS_RND_NONCE, rnd, rl);
  ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, sizeof buf, token, rnd, rl);
  if (n <= 0) return;
  STAT(l, stateless_resets); /* before the peer can see it: a test reads the counter once the peer reacted */
  amn_h3_send_one(l->fd, from, fromlen, buf, (size_t)n);
  debug_answer(from, "packet for an unknown connection", "stateless reset sent");
}

/* ------------------------------------------------------------------ */
/* Address validation                                                 */
/* ------------------------------------------------------------------ */

/* Stateless address validation: a Retry carrying a token bound to the
 * client's address and its original destination connection ID. */
void amn_h3s_send_retry(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                        size_t pktlen) {
  h3_group *g = l->group;
  ngtcp2_cid scid;
  scid.datalen = AMN_H3_SCIDLEN;
  amn_h3s_cid_make(l, scid.data, scid.datalen);
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN2], buf[1500];
  ngtcp2_ssize tl = ngtcp2_crypto_generate_retry_token2(token, g->token_secret, sizeof g->token_secret, hd->version,
                                                       from, fromlen, &scid, &hd->dcid, amn_h3_now());
  if (tl < 0) return;
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf, sizeof buf, hd->version, &hd->scid, &scid, &hd->dcid, token,
                                             (size_t)tl);
  if (n <= 0 || (size_t)n > 3 * pktlen) return; /* never amplify */
  STAT(l, retries_sent); /* before the peer can see it: a test reads the counter once the peer reacted */
  amn_h3_send_one(l->fd, from, fromlen, buf, (size_t)n);
  debug_answer(from, "QUIC Initial", "Retry sent (address validation)");
}

int amn_h3s_token_check(amn_h3_listener *l, const ngtcp2_pkt_hd *hd, const struct sockaddr *from, socklen_t fromlen,
                        ngtcp2_cid *ocid, ngtcp2_token_type *tt) {
  h3_group *g = l->group;
  *tt = NGTCP2_TOKEN_TYPE_UNKNOWN;
  if (!g || !hd->tokenlen) return 0;
  ngtcp2_tstamp now = amn_h3_now();
  if (hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY2) {
    int rv = ngtcp2_crypto_verify_retry_token2(ocid, hd->token, hd->tokenlen, g->token_secret,
                                               sizeof g->token_secret, hd->version, from, fromlen, &hd->dcid,
                                               AMN_H3_RETRY_TOKEN_TTL_S * NGTCP2_SECONDS, now);
    if (rv != 0) {
      /* unreadable (not ours), for another address, or expired: a stale
       * Retry or an attacker (RFC 9000 8.1.2: INVALID_TOKEN) */
      STAT(l, tokens_bad);
      AMN_DEBUG("Retry token refused: %s", rv == NGTCP2_CRYPTO_ERR_UNREADABLE_TOKEN ? "unreadable" : "stale or "
                "for another address");
      return -1;
    }
    STAT(l, retry_tokens_ok);
    *tt = NGTCP2_TOKEN_TYPE_RETRY;
  } else if (hd->token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_REGULAR &&
             ngtcp2_crypto_verify_regular_token(hd->token, hd->tokenlen, g->token_secret, sizeof g->token_secret,
                                                from, fromlen,
                                                (ngtcp2_duration)AMN_H3_NEW_TOKEN_TTL_S * NGTCP2_SECONDS,
                                                now) == 0) {
    STAT(l, new_tokens_ok);
    *tt = NGTCP2_TOKEN_TYPE_NEW_TOKEN;
  } else {
    STAT(l, tokens_bad); /* e.g. from before a restart: ignored */
  }
  return 0;
}

void amn_h3s_send_new_token(h3_sconn *sc) {
  h3_group *g = sc->l->group;
  if (!g) return;
  const ngtcp2_path *path = ngtcp2_conn_get_path(sc->b.q);
  uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN];
  ngtcp2_ssize n = ngtcp2_crypto_generate_regular_token(token, g->token_secret, sizeof g->token_secret,
                                                        path->remote.addr, path->remote.addrlen, amn_h3_now());
  int rv = n > 0 ? ngtcp2_conn_submit_new_token(sc->b.q, token, (size_t)n) : -1;
  if (rv != 0) AMN_DEBUG("%s: no NEW_TOKEN (%zd, %d)", sc->addr, (ssize_t)n, rv);
}
