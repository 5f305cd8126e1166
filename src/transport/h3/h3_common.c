/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, shared part: the packet pump of one QUIC connection
 * (nghttp3 -> ngtcp2 -> UDP, GSO batches, EAGAIN handling, expiry timer),
 * the TLS handshake driver, send buffers, write batching. See h3.h.
 */
#include "transport/h3/h3.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tls/tls.h"
#include "util/log.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#ifdef AMN_TEST_HOOKS
ssize_t (*amn_h3_test_sendmsg)(int fd, const struct msghdr *mh, int flags);
uint64_t (*amn_h3_test_clock)(void);
bool (*amn_h3_test_stream_data)(amn_h3_conn *b, int64_t id, const uint8_t *data, size_t len, bool fin);
#define SENDMSG(fd, mh) (amn_h3_test_sendmsg ? amn_h3_test_sendmsg(fd, mh, 0) : sendmsg(fd, mh, 0))
#else
#define SENDMSG(fd, mh) sendmsg(fd, mh, 0)
#endif

uint64_t amn_h3_now(void) {
#ifdef AMN_TEST_HOOKS
  if (amn_h3_test_clock) return amn_h3_test_clock();
#endif
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NGTCP2_SECONDS + (uint64_t)ts.tv_nsec;
}

void amn_h3_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

/* ------------------------------------------------------------------ */
/* Memory accounting                                                  */
/* ------------------------------------------------------------------ */

static atomic_size_t g_mem_cur, g_mem_peak;

static void mem_less(size_t n) {
#ifdef AMN_TEST_HOOKS
  atomic_fetch_sub_explicit(&g_mem_cur, n, memory_order_relaxed);
#else
  (void)n;
#endif
}

/* Test and fuzz builds only: two process-wide atomics per block, which the
 * loops of a server would otherwise contend for on every packet. */
static void mem_account(void *p, bool add) {
#ifndef AMN_TEST_HOOKS
  (void)p; (void)add;
#else
  if (!p) return;
  size_t n = malloc_usable_size(p);
  if (!add) {
    mem_less(n);
    return;
  }
  size_t cur = atomic_fetch_add_explicit(&g_mem_cur, n, memory_order_relaxed) + n;
  size_t pk = atomic_load_explicit(&g_mem_peak, memory_order_relaxed);
  while (cur > pk && !atomic_compare_exchange_weak(&g_mem_peak, &pk, cur)) {
  }
#endif
}

static void *m_malloc(size_t n, void *ud) {
  (void)ud;
  void *p = malloc(n);
  mem_account(p, true);
  return p;
}
static void m_free(void *p, void *ud) {
  (void)ud;
  mem_account(p, false);
  free(p);
}
static void *m_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  size_t old = p ? malloc_usable_size(p) : 0;
  void *q = realloc(p, n);
  if (!q) return NULL; /* p unchanged */
  mem_less(old);
  mem_account(q, true);
  return q;
}

/* Per connection, ngtcp2 and nghttp3 allocate through the connection's
 * own allocator, which also keeps every block in a list: whatever is
 * still there once both libraries deleted the connection was lost by
 * them, and is freed then (ngtcp2 0.12 lost a retransmission frame chain
 * under loss + reordering; test_h3 reports what is swept). */
typedef struct amn_h3_blk {
  struct amn_h3_blk *prev, *next; /* 16 bytes: the payload stays 16-byte aligned */
} blk;

static atomic_size_t g_mem_swept;

static void blk_link(amn_h3_conn *b, blk *k) {
  k->prev = NULL;
  k->next = b->blocks;
  if (b->blocks) b->blocks->prev = k;
  b->blocks = k;
}
static void blk_unlink(amn_h3_conn *b, blk *k) {
  if (k->prev) k->prev->next = k->next;
  else b->blocks = k->next;
  if (k->next) k->next->prev = k->prev;
}
static void *t_malloc(size_t n, void *ud) {
  blk *k = malloc(sizeof *k + n);
  if (!k) return NULL;
  blk_link(ud, k);
  mem_account(k, true);
  return k + 1;
}
static void t_free(void *p, void *ud) {
  if (!p) return;
  blk *k = (blk *)p - 1;
  blk_unlink(ud, k);
  mem_account(k, false);
  free(k);
}
static void *t_calloc(size_t m, size_t n, void *ud) {
  if (n && m > SIZE_MAX / n) return NULL;
  void *p = t_malloc(m * n, ud);
  if (p) memset(p, 0, m * n);
  return p;
}
static void *t_realloc(void *p, size_t n, void *ud) {
  if (!p) return t_malloc(n, ud);
  blk *k = (blk *)p - 1;
  blk_unlink(ud, k);
  size_t old = malloc_usable_size(k);
  blk *q = realloc(k, sizeof *q + n);
  if (!q) {
    blk_link(ud, k); /* unchanged */
    return NULL;
  }
  mem_less(old);
  mem_account(q, true);
  blk_link(ud, q);
  return q + 1;
}

/* After both libraries deleted the connection. */
static void blk_sweep(amn_h3_conn *b) {
  size_t n = 0, bytes = 0;
  while (b->blocks) {
    blk *k = b->blocks;
    b->blocks = k->next;
    bytes += malloc_usable_size(k);
    n++;
    mem_account(k, false);
    free(k);
  }
  if (n) {
    atomic_fetch_add(&g_mem_swept, bytes);
    AMN_DEBUG("HTTP/3: freed %zu block(s), %zu bytes, that ngtcp2/nghttp3 lost", n, bytes);
  }
}

void amn_h3_mem_usage(size_t *cur, size_t *peak) {
  if (cur) *cur = atomic_load(&g_mem_cur);
  if (peak) *peak = atomic_load(&g_mem_peak);
}
void amn_h3_mem_reset_peak(void) { atomic_store(&g_mem_peak, atomic_load(&g_mem_cur)); }
size_t amn_h3_mem_swept(void) { return atomic_load(&g_mem_swept); }

size_t amn_h3_nv(const amn_hdr_buf *b, nghttp3_nv *nva) {
  for (size_t i = 0; i < b->n; i++) {
    nva[i].name = (uint8_t *)b->h[i].name;
    nva[i].namelen = b->h[i].nlen;
    nva[i].value = (uint8_t *)b->h[i].value;
    nva[i].valuelen = b->h[i].vlen;
    nva[i].flags = NGHTTP3_NV_FLAG_NONE;
  }
  return b->n;
}

/* ------------------------------------------------------------------ */
/* TLS handshake                                                      */
/* ------------------------------------------------------------------ */

int amn_h3_recv_crypto_data(ngtcp2_conn *q, ngtcp2_encryption_level level, uint64_t offset, const uint8_t *data,
                            size_t len, void *user_data) {
  (void)offset;
  amn_h3_conn *b = user_data;
  int rv = 0;
  if (!b->tls) { /* TLS data after the handshake, which QUIC has none of */
    AMN_INFO("QUIC: %zu bytes of TLS data (level %d) after the handshake: PROTOCOL_VIOLATION", len, (int)level);
    return NGTCP2_ERR_PROTO;
  }
  if (len) {
    rv = gnutls_handshake_write(b->tls, ngtcp2_crypto_gnutls_from_ngtcp2_encryption_level(level), data, len);
    if (rv < 0 && !gnutls_error_is_fatal(rv)) rv = 0;
  }
  if (rv == 0 && !ngtcp2_conn_get_handshake_completed(q)) {
    rv = gnutls_handshake(b->tls);
    if (rv == 0) {
      ngtcp2_conn_tls_handshake_completed(q);
      return 0;
    }
    if (!gnutls_error_is_fatal(rv)) return 0; /* needs more handshake data */
  }
  if (rv == 0) return 0;
  /* fatal: keep the code for the log line, tell the peer with an alert */
  b->tls_rc = rv;
  amn_tls_send_alert(b->tls, rv);
  int te = ngtcp2_conn_get_tls_error(q);
  return te ? te : NGTCP2_ERR_CRYPTO;
}

void amn_h3_tls_release(amn_h3_conn *b) {
  if (!b->tls) return;
  if (b->q) ngtcp2_conn_set_tls_native_handle(b->q, NULL);
  gnutls_deinit(b->tls);
  b->tls = NULL;
}

const char *amn_h3_tls_reason(amn_h3_conn *b) {
  const char *why = b->tls ? amn_tls_last_error(b->tls) : NULL;
  if (why) return why;
  if (b->tls && b->tls_rc) return amn_tls_handshake_error(b->tls, b->tls_rc);
  return NULL;
}

/* update_key: ngtcp2 prepares the next 1-RTT key generation (once when
 * the handshake completes, then after every key update). Counted. */
int amn_h3_update_key(ngtcp2_conn *q, uint8_t *rx_secret, uint8_t *tx_secret, ngtcp2_crypto_aead_ctx *rx_aead_ctx,
                      uint8_t *rx_iv, ngtcp2_crypto_aead_ctx *tx_aead_ctx, uint8_t *tx_iv,
                      const uint8_t *current_rx_secret, const uint8_t *current_tx_secret, size_t secretlen,
                      void *user_data) {
  amn_h3_conn *b = user_data;
  int rv = ngtcp2_crypto_update_key_cb(q, rx_secret, tx_secret, rx_aead_ctx, rx_iv, tx_aead_ctx, tx_iv,
                                       current_rx_secret, current_tx_secret, secretlen, user_data);
  if (rv == 0) b->key_gens++;
  return rv;
}

/* Stream data goes to nghttp3; what it consumed is granted back as window. */
static int recv_stream_data(ngtcp2_conn *q, uint32_t flags, int64_t id, uint64_t off, const uint8_t *data, size_t len,
                            void *ud, void *sud) {
  (void)off; (void)sud;
  amn_h3_conn *b = ud;
#ifdef AMN_TEST_HOOKS
  if (amn_h3_test_stream_data && amn_h3_test_stream_data(b, id, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN)) {
    amn_h3_consume(b, id, len);
    return 0;
  }
#endif
  if (!b->h) return 0;
  nghttp3_ssize n = nghttp3_conn_read_stream(b->h, id, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
  if (n < 0) {
    b->h3_rc = (int)n;
    ngtcp2_ccerr_set_application_error(&b->err, nghttp3_err_infer_quic_app_error_code((int)n), NULL,
                                                        0);
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  ngtcp2_conn_extend_max_stream_offset(q, id, (uint64_t)n);
  ngtcp2_conn_extend_max_offset(q, (uint64_t)n);
  return 0;
}

static int acked_stream_data_offset(ngtcp2_conn *q, int64_t id, uint64_t off, uint64_t len, void *ud, void *sud) {
  (void)q; (void)off; (void)sud;
  amn_h3_conn *b = ud;
  if (b->h && nghttp3_conn_add_ack_offset(b->h, id, len) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

/* The peer may send more on a stream: nghttp3 may write on it again. */
static int extend_max_stream_data(ngtcp2_conn *q, int64_t id, uint64_t max, void *ud, void *sud) {
  (void)q; (void)max; (void)sud;
  amn_h3_conn *b = ud;
  if (b->h && nghttp3_conn_unblock_stream(b->h, id) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
}

void amn_h3_base_callbacks(ngtcp2_callbacks *cb) {
  cb->recv_stream_data = recv_stream_data;
  cb->acked_stream_data_offset = acked_stream_data_offset;
  cb->extend_max_stream_data = extend_max_stream_data;
  cb->recv_crypto_data = amn_h3_recv_crypto_data;
  cb->encrypt = ngtcp2_crypto_encrypt_cb;
  cb->decrypt = ngtcp2_crypto_decrypt_cb;
  cb->hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb->rand = amn_h3_rand;
  cb->update_key = amn_h3_update_key;
  cb->delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb->delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb->get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb->version_negotiation = ngtcp2_crypto_version_negotiation_cb;
}

/* ------------------------------------------------------------------ */
/* Stream callbacks both sides share                                  */
/* ------------------------------------------------------------------ */

void amn_h3_consume(amn_h3_conn *b, int64_t id, size_t n) {
  ngtcp2_conn_extend_max_stream_offset(b->q, id, n);
  ngtcp2_conn_extend_max_offset(b->q, n);
}

int amn_h3_on_acked(nghttp3_conn *h, int64_t id, uint64_t n, void *ud, void *sud) {
  (void)ud;
  amn_h3_sendbuf *sb = sud; /* the stream's first member */
  if (sb && amn_h3_sendbuf_ack(sb, n)) nghttp3_conn_resume_stream(h, id);
  return 0;
}

int amn_h3_on_deferred_consume(nghttp3_conn *h, int64_t id, size_t n, void *ud, void *sud) {
  (void)h; (void)sud;
  amn_h3_consume(ud, id, n);
  return 0;
}

int amn_h3_on_stop_sending(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)h; (void)sud;
  amn_h3_conn *b = ud;
  ngtcp2_conn_shutdown_stream_read(b->q, 0, id, code);
  return 0;
}

int amn_h3_on_reset_stream(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)h; (void)sud;
  amn_h3_conn *b = ud;
  ngtcp2_conn_shutdown_stream_write(b->q, 0, id, code);
  return 0;
}

int amn_h3_close_stream(amn_h3_conn *b, uint32_t flags, int64_t id, uint64_t code) {
  if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) code = NGHTTP3_H3_NO_ERROR;
  if (!b->h) return 0;
  int rv = nghttp3_conn_close_stream(b->h, id, code);
  if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) return 1;
  if (rv != 0) {
    ngtcp2_ccerr_set_application_error(&b->err, nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Errors                                                             */
/* ------------------------------------------------------------------ */

void amn_h3_set_liberr(amn_h3_conn *b, int liberr) {
  if (b->err.error_code) return; /* keep the first reason */
  if (liberr == NGTCP2_ERR_CRYPTO)
    ngtcp2_ccerr_set_tls_alert(&b->err, ngtcp2_conn_get_tls_alert(b->q), NULL, 0);
  else
    ngtcp2_ccerr_set_liberr(&b->err, liberr, NULL, 0);
}

const char *amn_h3_error_name(uint64_t code) {
  static const char *const h3[] = {"H3_NO_ERROR", "H3_GENERAL_PROTOCOL_ERROR", "H3_INTERNAL_ERROR",
                                   "H3_STREAM_CREATION_ERROR", "H3_CLOSED_CRITICAL_STREAM", "H3_FRAME_UNEXPECTED",
                                   "H3_FRAME_ERROR", "H3_EXCESSIVE_LOAD", "H3_ID_ERROR", "H3_SETTINGS_ERROR",
                                   "H3_MISSING_SETTINGS", "H3_REQUEST_REJECTED", "H3_REQUEST_CANCELLED",
                                   "H3_REQUEST_INCOMPLETE", "H3_MESSAGE_ERROR", "H3_CONNECT_ERROR",
                                   "H3_VERSION_FALLBACK"};
  static const char *const qpack[] = {"QPACK_DECOMPRESSION_FAILED", "QPACK_ENCODER_STREAM_ERROR",
                                      "QPACK_DECODER_STREAM_ERROR"};
  if (code >= 0x100 && code < 0x100 + sizeof h3 / sizeof h3[0]) return h3[code - 0x100];
  if (code >= 0x200 && code < 0x200 + sizeof qpack / sizeof qpack[0]) return qpack[code - 0x200];
  return "unknown HTTP/3 error";
}

void amn_h3_describe_peer_close(amn_h3_conn *b, const char *peer, char *out, size_t cap) {
  const ngtcp2_ccerr *pe = ngtcp2_conn_get_ccerr(b->q), e = *pe;
  char reason[128] = "";
  if (e.reasonlen && e.reason)
    snprintf(reason, sizeof reason, ": %.*s", (int)(e.reasonlen > 100 ? 100 : e.reasonlen), (const char *)e.reason);
  if (e.type == NGTCP2_CCERR_TYPE_APPLICATION) {
    if (e.error_code == NGHTTP3_H3_NO_ERROR)
      snprintf(out, cap, "%s closed the connection%s", peer, reason);
    else
      snprintf(out, cap, "%s closed the connection with HTTP/3 error %s (0x%llx)%s", peer,
               amn_h3_error_name(e.error_code), (unsigned long long)e.error_code, reason);
  } else if ((e.error_code & ~(uint64_t)0xff) == NGTCP2_CRYPTO_ERROR) {
    const char *an = gnutls_alert_get_name((gnutls_alert_description_t)(e.error_code & 0xff));
    snprintf(out, cap, "%s refused the TLS handshake (TLS alert '%s')%s", peer, an ? an : "unknown", reason);
  } else if (e.error_code == NGTCP2_CONNECTION_REFUSED) {
    snprintf(out, cap, "%s refused the connection (shutting down or at its connection limit)%s", peer, reason);
  } else if (e.error_code == NGTCP2_NO_ERROR) {
    snprintf(out, cap, "%s closed the connection%s", peer, reason);
  } else {
    snprintf(out, cap, "%s closed the connection with QUIC error 0x%llx%s", peer, (unsigned long long)e.error_code,
             reason);
  }
}

/* ------------------------------------------------------------------ */
/* Write batching                                                     */
/* ------------------------------------------------------------------ */

static void sched_cb(struct ev_loop *ev, ev_prepare *w, int revents) {
  (void)ev; (void)revents;
  amn_h3_sched *s = w->data;
  /* a flush may mark other connections dirty (or close this one): pop first */
  while (s->dirty) {
    amn_h3_conn *b = s->dirty;
    s->dirty = b->next_dirty;
    b->next_dirty = NULL;
    b->dirty = false;
    b->flush(b);
  }
}

void amn_h3_sched_init(amn_h3_sched *s, struct ev_loop *ev) {
  s->ev = ev;
  s->dirty = NULL;
  ev_prepare_init(&s->prep, sched_cb);
  s->prep.data = s;
  ev_set_priority(&s->prep, EV_MINPRI); /* after the loop's own prepare work */
  ev_prepare_start(ev, &s->prep);
  ev_unref(ev); /* must not keep the loop alive by itself */
}

void amn_h3_sched_stop(amn_h3_sched *s) {
  if (!ev_is_active(&s->prep)) return;
  ev_ref(s->ev);
  ev_prepare_stop(s->ev, &s->prep);
}

void amn_h3_mark_dirty(amn_h3_conn *b) {
  if (b->dirty || !b->sched) return;
  b->dirty = true;
  b->next_dirty = b->sched->dirty;
  b->sched->dirty = b;
}

static void unschedule(amn_h3_conn *b) {
  if (!b->dirty) return;
  for (amn_h3_conn **p = &b->sched->dirty; *p; p = &(*p)->next_dirty)
    if (*p == b) {
      *p = b->next_dirty;
      break;
    }
  b->dirty = false;
  b->next_dirty = NULL;
}

/* ------------------------------------------------------------------ */
/* Connection                                                         */
/* ------------------------------------------------------------------ */

static void timer_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_h3_conn *b = w->data;
  b->on_expiry(b);
}

static int send_pending(amn_h3_conn *b);

static void wev_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)revents;
  amn_h3_conn *b = w->data;
  if (send_pending(b) != 0) return; /* still blocked */
  ev_io_stop(ev, w);
  b->flush(b);
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref) { return ((amn_h3_conn *)ref->user_data)->q; }

void amn_h3_conn_init(amn_h3_conn *b, struct ev_loop *ev, amn_h3_sched *sched, int fd, uint8_t *txbuf,
                      void (*flush)(amn_h3_conn *), void (*on_expiry)(amn_h3_conn *)) {
  b->ref.get_conn = get_conn;
  b->ref.user_data = b;
  b->ev = ev;
  b->sched = sched;
  b->fd = fd;
  b->txbuf = txbuf;
  b->flush = flush;
  b->on_expiry = on_expiry;
  b->mem = (ngtcp2_mem){b, t_malloc, t_free, t_calloc, t_realloc};
  b->hmem = (nghttp3_mem){b, t_malloc, t_free, t_calloc, t_realloc};
  ngtcp2_ccerr_default(&b->err);
  ev_timer_init(&b->timer, timer_cb, 0., 0.);
  b->timer.data = b;
  ev_io_init(&b->wev, wev_cb, fd, EV_WRITE);
  b->wev.data = b;
}

void amn_h3_conn_release(amn_h3_conn *b) {
  ev_timer_stop(b->ev, &b->timer);
  ev_io_stop(b->ev, &b->wev);
  unschedule(b);
  free(b->pend);
  b->pend = NULL;
  if (b->h) nghttp3_conn_del(b->h);
  b->h = NULL;
  if (b->q) ngtcp2_conn_del(b->q);
  b->q = NULL;
  blk_sweep(b);
  if (b->tls) gnutls_deinit(b->tls);
  b->tls = NULL;
}

void amn_h3_conn_set_fd(amn_h3_conn *b, int fd) {
  bool wactive = ev_is_active(&b->wev);
  if (wactive) ev_io_stop(b->ev, &b->wev);
  b->fd = fd;
  ev_io_set(&b->wev, fd, EV_WRITE);
  if (wactive) ev_io_start(b->ev, &b->wev);
}

void amn_h3_update_timer(amn_h3_conn *b) {
  if (!b->q) return;
  ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(b->q), now = amn_h3_now();
  ev_timer_stop(b->ev, &b->timer);
  if (exp == UINT64_MAX) return;
  double t = exp <= now ? 0. : (double)(exp - now) / NGTCP2_SECONDS;
  ev_timer_set(&b->timer, t, 0.);
  ev_timer_start(b->ev, &b->timer);
}

void amn_h3_flow_setup(ngtcp2_settings *st, ngtcp2_transport_params *p, uint64_t win) {
  p->initial_max_stream_data_bidi_local = p->initial_max_stream_data_bidi_remote = p->initial_max_stream_data_uni = win;
  p->initial_max_data = win * 16 > (1u << 30) ? (1u << 30) : win * 16;
  st->max_stream_window = win > AMN_H3_MAX_STREAM_WINDOW ? win : AMN_H3_MAX_STREAM_WINDOW;
  st->max_window = p->initial_max_data > AMN_H3_MAX_CONN_WINDOW ? p->initial_max_data : AMN_H3_MAX_CONN_WINDOW;
}

int amn_h3_setup_http(amn_h3_conn *b, bool server, const nghttp3_callbacks *cbs, void *ud) {
  if (b->h) return 0;
  if (ngtcp2_conn_get_streams_uni_left(b->q) < 3) return NGHTTP3_ERR_H3_STREAM_CREATION_ERROR;
  nghttp3_settings st;
  nghttp3_settings_default(&st);
  st.qpack_max_dtable_capacity = 4096;
  st.qpack_blocked_streams = 100;
  st.max_field_section_size = 64 * 1024; /* as HTTP/2 MAX_HEADER_LIST_SIZE */
  int rv = server ? nghttp3_conn_server_new(&b->h, cbs, &st, &b->hmem, ud)
                  : nghttp3_conn_client_new(&b->h, cbs, &st, &b->hmem, ud);
  if (rv != 0) return rv;
  if (server)
    nghttp3_conn_set_max_client_streams_bidi(b->h, ngtcp2_conn_get_local_transport_params(b->q)->initial_max_streams_bidi);
  int64_t ctrl, qenc, qdec;
  if ((rv = ngtcp2_conn_open_uni_stream(b->q, &ctrl, NULL)) != 0 ||
      (rv = nghttp3_conn_bind_control_stream(b->h, ctrl)) != 0 ||
      (rv = ngtcp2_conn_open_uni_stream(b->q, &qenc, NULL)) != 0 ||
      (rv = ngtcp2_conn_open_uni_stream(b->q, &qdec, NULL)) != 0 ||
      (rv = nghttp3_conn_bind_qpack_streams(b->h, qenc, qdec)) != 0)
    return rv;
  return 0;
}

/* ------------------------------------------------------------------ */
/* UDP                                                                */
/* ------------------------------------------------------------------ */

/* One sendmsg of `len` bytes cut into `gso`-sized datagrams by the kernel
 * (UDP_SEGMENT) when len > gso. Returns 0, EAGAIN, or another errno. */
static int sendmsg_gso(amn_h3_conn *b, const struct sockaddr *to, socklen_t tolen, const uint8_t *data, size_t len,
                       size_t gso) {
  struct iovec iov = {(void *)data, len};
  struct msghdr mh = {0};
  if (!b->connected) {
    mh.msg_name = (void *)to;
    mh.msg_namelen = tolen;
  }
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctl;
  if (len > gso) {
    memset(&ctl, 0, sizeof ctl);
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof ctl.buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t seg = (uint16_t)gso;
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
  ssize_t n;
  do n = SENDMSG(b->fd, &mh);
  while (n < 0 && errno == EINTR);
  return n < 0 ? errno : 0;
}

/* Sends a batch; on EAGAIN keeps the unsent rest in b->pend and waits for
 * the socket. Returns 0 when all left, 1 when blocked. */
static int send_batch(amn_h3_conn *b, const struct sockaddr *to, socklen_t tolen, const uint8_t *data, size_t len,
                      size_t gso) {
  size_t off = 0;
  while (off < len) {
    size_t n = b->no_gso ? (len - off < gso ? len - off : gso) : len - off;
    int e = sendmsg_gso(b, to, tolen, data + off, n, gso);
    if (e == EAGAIN || e == EWOULDBLOCK) {
      uint8_t *p = malloc(len - off);
      if (!p) return 0; /* dropped: QUIC retransmits */
      memcpy(p, data + off, len - off);
      free(b->pend);
      b->pend = p;
      b->pend_len = len - off;
      b->pend_gso = gso;
      if (to && to != (const struct sockaddr *)&b->pend_to && tolen <= sizeof b->pend_to) memcpy(&b->pend_to, to, tolen);
      b->pend_tolen = tolen;
      ev_io_start(b->ev, &b->wev);
      return 1;
    }
    if ((e == EIO || e == EINVAL) && n > gso && !b->no_gso) {
      /* the kernel refused UDP_SEGMENT (e.g. a device without checksum
       * offload): nothing was sent; the same bytes go again, one datagram
       * at a time, and this connection does not try GSO again */
      AMN_DEBUG("UDP GSO unavailable (%s): sending datagrams one by one", strerror(e));
      b->no_gso = true;
      continue;
    }
    if (e) b->sock_err = e; /* the datagrams are lost; loss recovery resends */
    off += n;
  }
  return 0;
}

static int send_pending(amn_h3_conn *b) {
  if (!b->pend) return 0;
  uint8_t *p = b->pend;
  size_t len = b->pend_len;
  b->pend = NULL;
  int r = send_batch(b, (struct sockaddr *)&b->pend_to, b->pend_tolen, p, len, b->pend_gso);
  free(p);
  return r;
}

void amn_h3_send_one(int fd, const struct sockaddr *to, socklen_t tolen, const uint8_t *data, size_t len) {
  ssize_t n;
#ifdef AMN_TEST_HOOKS
  if (amn_h3_test_sendmsg) {
    struct iovec iov = {(void *)data, len};
    struct msghdr mh = {.msg_name = (void *)to, .msg_namelen = to ? tolen : 0, .msg_iov = &iov, .msg_iovlen = 1};
    amn_h3_test_sendmsg(fd, &mh, 0);
    return;
  }
#endif
  do n = to ? sendto(fd, data, len, 0, to, tolen) : send(fd, data, len, 0);
  while (n < 0 && errno == EINTR);
}

/* Asks for `want` bytes of socket buffer; the kernel reports twice what it
 * granted (bookkeeping overhead), so less than `want` back means capped. */
static int sockbuf(int fd, int opt, int force_opt, int want) {
  if (setsockopt(fd, SOL_SOCKET, force_opt, &want, sizeof want) != 0) /* needs CAP_NET_ADMIN */
    setsockopt(fd, SOL_SOCKET, opt, &want, sizeof want);
  int got = 0;
  socklen_t gl = sizeof got;
  getsockopt(fd, SOL_SOCKET, opt, &got, &gl);
  return got / 2;
}

void amn_h3_udp_setup(int fd, int family, int want) {
  static atomic_bool warned;
  int rcv = sockbuf(fd, SO_RCVBUF, SO_RCVBUFFORCE, want), snd = sockbuf(fd, SO_SNDBUF, SO_SNDBUFFORCE, want);
  if ((rcv < want || snd < want) && !atomic_exchange(&warned, true))
    AMN_WARN("UDP socket buffers capped by the kernel (receive %d KiB, send %d KiB; asked %d KiB): HTTP/3 may drop "
             "packets under load; raise net.core.rmem_max and net.core.wmem_max",
             rcv / 1024, snd / 1024, want / 1024);
  if (family == AF_INET) {
    int v = IP_PMTUDISC_DO; /* QUIC does its own path MTU discovery: no fragments */
    setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof v);
  } else {
    int v = IPV6_PMTUDISC_DO;
    setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v, sizeof v);
  }
  /* GRO: fewer, larger receives (on loopback a GSO send arrives whole); a
   * kernel without it delivers datagrams one by one, as before */
  int on = 1;
  setsockopt(fd, IPPROTO_UDP, UDP_GRO, &on, sizeof on);
}

int amn_h3_recv_batch(int fd, amn_h3_rx *rx) {
  for (int i = 0; i < AMN_H3_RX_BATCH; i++) {
    rx->iov[i].iov_base = rx->bufs + (size_t)i * AMN_H3_RX_DGRAM;
    rx->iov[i].iov_len = AMN_H3_RX_DGRAM;
    struct msghdr *mh = &rx->msgs[i].msg_hdr;
    memset(mh, 0, sizeof *mh);
    mh->msg_iov = &rx->iov[i];
    mh->msg_iovlen = 1;
    mh->msg_name = &rx->from[i];
    mh->msg_namelen = sizeof rx->from[i];
    mh->msg_control = rx->ctl[i].buf;
    mh->msg_controllen = sizeof rx->ctl[i].buf;
  }
  int n;
  do n = recvmmsg(fd, rx->msgs, AMN_H3_RX_BATCH, MSG_DONTWAIT, NULL);
  while (n < 0 && errno == EINTR);
  rx->datagrams = rx->coalesced = 0;
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
  for (int i = 0; i < n; i++) {
    struct msghdr *mh = &rx->msgs[i].msg_hdr;
    size_t len = rx->msgs[i].msg_len;
    if (mh->msg_flags & MSG_TRUNC) len = rx->msgs[i].msg_len = 0; /* too large: dropped */
    rx->seg[i] = len;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm))
      if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
        int s;
        memcpy(&s, CMSG_DATA(cm), sizeof s);
        if (s > 0 && (size_t)s < len) rx->seg[i] = (size_t)s;
      }
    if (!len) continue;
    size_t k = (len + rx->seg[i] - 1) / rx->seg[i];
    rx->datagrams += k;
    if (k > 1) rx->coalesced += k;
  }
  return n;
}

size_t amn_h3_rx_next(const amn_h3_rx *rx, int i, size_t *off, const uint8_t **pkt) {
  size_t len = rx->msgs[i].msg_len;
  if (*off >= len) return 0;
  size_t k = len - *off < rx->seg[i] ? len - *off : rx->seg[i];
  *pkt = rx->bufs + (size_t)i * AMN_H3_RX_DGRAM + *off;
  *off += k;
  return k;
}

/* ------------------------------------------------------------------ */
/* The packet pump                                                    */
/* ------------------------------------------------------------------ */

static int app_error(amn_h3_conn *b, int rv) {
  if (!b->err.error_code)
    ngtcp2_ccerr_set_application_error(&b->err, nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
  return rv;
}

/* One pacing quantum (one GSO batch at most). *sent: packets went out. */
static int write_quantum(amn_h3_conn *b, bool *sent) {
  ngtcp2_path_storage ps, first;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_path_storage_zero(&first);
  ngtcp2_pkt_info pi;
  size_t mtu = ngtcp2_conn_get_max_tx_udp_payload_size(b->q); /* room for ngtcp2's PMTUD probes */
  size_t path_mtu = ngtcp2_conn_get_path_max_tx_udp_payload_size(b->q); /* what the path is known to carry */
  size_t max_pkts = ngtcp2_conn_get_send_quantum(b->q) / mtu;
  if (max_pkts > AMN_H3_TX_MAX_PKTS) max_pkts = AMN_H3_TX_MAX_PKTS;
  if (max_pkts > 65000 / mtu) max_pkts = 65000 / mtu; /* GSO sends at most 64 KiB at once */
  if (max_pkts == 0) max_pkts = 1;
  uint8_t *buf = b->txbuf, *pos = buf;
  size_t npkts = 0, gso = 0;
  ngtcp2_tstamp ts = amn_h3_now();
  int rv = 0;
  for (;;) {
    int64_t sid = -1;
    int fin = 0;
    nghttp3_vec vec[16];
    nghttp3_ssize nvec = 0;
    if (b->h && ngtcp2_conn_get_max_data_left(b->q)) {
      nvec = nghttp3_conn_writev_stream(b->h, &sid, &fin, vec, 16);
      /* Nothing from the stream at the head: nghttp3 learns only now (its
       * read_data said WOULDBLOCK) that the stream it just gave us has no
       * more, and has unscheduled it; the next stream's data can still go
       * in this packet. Without the second look every stream's message got
       * a packet of its own (64 streams of one small message each: 64
       * packets instead of a few). A second empty answer means nothing is
       * scheduled (or another stream ran dry): the packet closes. */
      if (nvec == 0 && sid == -1) nvec = nghttp3_conn_writev_stream(b->h, &sid, &fin, vec, 16);
      if (nvec < 0) {
        rv = app_error(b, (int)nvec);
        break;
      }
    }
    ngtcp2_ssize ndata = -1;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(b->q, &ps.path, &pi, pos, mtu, &ndata, flags, sid,
                                               (const ngtcp2_vec *)vec, (size_t)nvec, ts);
    if (n < 0) {
      if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
        nghttp3_conn_block_stream(b->h, sid);
        continue;
      }
      if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
        nghttp3_conn_shutdown_stream_write(b->h, sid);
        continue;
      }
      if (n == NGTCP2_ERR_WRITE_MORE) {
        int r = nghttp3_conn_add_write_offset(b->h, sid, (size_t)ndata);
        if (r != 0) {
          rv = app_error(b, r);
          break;
        }
        continue;
      }
      amn_h3_set_liberr(b, (int)n);
      rv = (int)n;
      break;
    }
    if (ndata >= 0 && b->h) {
      int r = nghttp3_conn_add_write_offset(b->h, sid, (size_t)ndata);
      if (r != 0) {
        rv = app_error(b, r);
        break;
      }
    }
    if (n == 0) break; /* nothing more now (or congestion limited) */
    if (npkts == 0) {
      ngtcp2_path_copy(&first.path, &ps.path);
      gso = (size_t)n;
    } else if (!ngtcp2_path_eq(&first.path, &ps.path) || (size_t)n > gso) {
      /* cannot join the batch: send the batch, then this packet alone */
      if (send_batch(b, first.path.remote.addr, first.path.remote.addrlen, buf, (size_t)(pos - buf), gso) == 0)
        send_batch(b, ps.path.remote.addr, ps.path.remote.addrlen, pos, (size_t)n, (size_t)n);
      npkts = 0;
      pos = buf;
      break;
    }
    pos += n;
    npkts++;
    if (npkts == max_pkts || (size_t)n < gso) break; /* full quantum, or a short last packet closes the batch */
    if ((size_t)n > path_mtu) break; /* a PMTUD probe goes alone: if the path drops it, nothing else goes with it */
  }
  *sent = pos > buf || npkts;
  if (pos > buf) send_batch(b, first.path.remote.addr, first.path.remote.addrlen, buf, (size_t)(pos - buf), gso);
  ngtcp2_conn_update_pkt_tx_time(b->q, ts);
  return rv;
}

/* Quanta written per flush at most: the pacer lets the next one go at once
 * when it is due within a millisecond (ngtcp2 allows for the event loop's
 * timer resolution), and waiting for a timer would cost that millisecond
 * per quantum (a ceiling of ~64 MB/s per connection). Bounded: other
 * connections of the loop get their turn. */
#define TX_BURST 16

int amn_h3_write(amn_h3_conn *b) {
  if (!b->q || ngtcp2_conn_in_closing_period(b->q) || ngtcp2_conn_in_draining_period(b->q)) return 0;
  if (b->pend) {
    if (send_pending(b) != 0) return 0; /* wait for the socket */
    ev_io_stop(b->ev, &b->wev);
  }
  int rv = 0;
  b->wrote = false;
  for (int i = 0; i < TX_BURST && rv == 0 && !b->pend; i++) {
    bool sent = false;
    rv = write_quantum(b, &sent);
    if (!sent) break;
    b->wrote = true;
  }
  amn_h3_update_timer(b);
  return rv;
}

/* ------------------------------------------------------------------ */
/* Send buffers                                                       */
/* ------------------------------------------------------------------ */

ssize_t amn_h3_sendbuf_fill(amn_h3_sendbuf *sb, amn_h3_peek_fn peek, amn_h3_pull_fn pull, void *call, bool *eof,
                            nghttp3_vec *vec) {
  *eof = false;
  if (sb->unacked >= AMN_H3_MAX_UNACKED) {
    sb->blocked = true;
    return -2;
  }
  size_t cap = AMN_H3_MAX_UNACKED - sb->unacked;
  if (cap > 64 * 1024) cap = 64 * 1024;
  ssize_t avail = peek(call, cap, eof); /* a small message gets a small chunk */
  if (avail < 0) return -1;
  if ((size_t)avail < cap) cap = avail ? (size_t)avail : 1;
  amn_h3_chunk *ch = m_malloc(sizeof *ch + cap, NULL);
  if (!ch) return -3;
  ssize_t n = pull(call, ch->data, cap, eof);
  if (n <= 0) {
    m_free(ch, NULL);
    return n < 0 ? -1 : 0;
  }
  if ((size_t)n < cap) {
    amn_h3_chunk *s = m_realloc(ch, sizeof *ch + (size_t)n, NULL); /* give the unused tail back */
    if (s) ch = s;
  }
  ch->len = (size_t)n;
  ch->base = ch->data;
  ch->msg = NULL;
  amn_h3_sendbuf_push(sb, ch, vec);
  return n;
}

ssize_t amn_h3_sendbuf_take(amn_h3_sendbuf *sb, amn_h3_take_fn take, void *call, bool *eof, nghttp3_vec *vec) {
  *eof = false;
  if (sb->unacked >= AMN_H3_MAX_UNACKED) {
    sb->blocked = true;
    return -2;
  }
  amn_h3_chunk *ch = m_malloc(sizeof *ch, NULL);
  if (!ch) return -3;
  amn_qmsg *m = NULL;
  ssize_t n = take(call, &m, eof);
  if (n <= 0 || !m) {
    m_free(ch, NULL);
    free(m);
    return n < 0 ? -1 : 0;
  }
  ch->len = (size_t)n;
  ch->base = m->data + m->off;
  ch->msg = m;
  amn_h3_sendbuf_push(sb, ch, vec);
  return n;
}

/* Frees a chunk; returns the bytes of a taken message it held. */
static size_t chunk_free(amn_h3_chunk *ch) {
  size_t taken = ch->msg ? ch->len : 0;
  free(ch->msg);
  m_free(ch, NULL);
  return taken;
}

void amn_h3_sendbuf_push(amn_h3_sendbuf *sb, amn_h3_chunk *ch, nghttp3_vec *vec) {
  ch->next = NULL;
  if (sb->tail) sb->tail->next = ch;
  else sb->head = ch;
  sb->tail = ch;
  sb->unacked += ch->len;
  vec->base = (uint8_t *)ch->base;
  vec->len = ch->len;
}

amn_h3_chunk *amn_h3_sendbuf_pop(amn_h3_sendbuf *sb) {
  amn_h3_chunk *ch = sb->head;
  if (!ch) return NULL;
  sb->head = ch->next;
  if (!sb->head) sb->tail = NULL;
  sb->unacked -= ch->len - sb->head_acked;
  sb->head_acked = 0;
  ch->next = NULL;
  return ch;
}

bool amn_h3_sendbuf_ack(amn_h3_sendbuf *sb, uint64_t n) {
  size_t acked = 0, freed = 0;
  while (n && sb->head) {
    amn_h3_chunk *ch = sb->head;
    size_t left = ch->len - sb->head_acked;
    size_t k = n < left ? (size_t)n : left;
    sb->head_acked += k;
    sb->unacked -= k;
    n -= k;
    if (ch->msg) acked += k;
    if (sb->head_acked == ch->len) {
      sb->head = ch->next;
      if (!sb->head) sb->tail = NULL;
      sb->head_acked = 0;
      freed += chunk_free(ch);
    }
  }
  if ((acked || freed) && sb->released) sb->released(sb->owner, acked, freed);
  if (!sb->blocked || sb->unacked > AMN_H3_MAX_UNACKED / 2) return false;
  sb->blocked = false;
  return true;
}

void amn_h3_sendbuf_free(amn_h3_sendbuf *sb) {
  size_t freed = 0;
  while (sb->head) {
    amn_h3_chunk *n = sb->head->next;
    freed += chunk_free(sb->head);
    sb->head = n;
  }
  if (freed && sb->released) sb->released(sb->owner, 0, freed);
  sb->tail = NULL;
  sb->unacked = sb->head_acked = 0;
  sb->blocked = false;
}
