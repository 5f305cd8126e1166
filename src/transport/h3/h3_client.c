/*
 * HTTP/3 transport, client side: a connected UDP socket per connection, an
 * ngtcp2 client connection with mutual TLS (GnuTLS), nghttp3 request
 * streams carrying the client core's calls (client/client.c) the same way
 * the HTTP/2 transport (h2_client.c) does, bound the same way: through the
 * client binding interface (transport/ctransport.h).
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

#include "transport/h3/h3.h"
#include "transport/h3/h3_client.h"
#include "util/log.h"

#define CLIENT_IDLE_TIMEOUT (30 * NGTCP2_SECONDS)

typedef enum { CC_CONNECTING, CC_READY, CC_CLOSED } cc_state;

typedef struct h3c_conn h3c_conn;

/* Per client (its tp_state): counters, the connections, and the hand-off
 * of the test hooks to the I/O thread. */
typedef struct h3c_state {
  pthread_mutex_t mu;           /* guards everything below but `async`, and every h3c_ep */
  pthread_cond_t cv;
  ev_async async;               /* test hooks: run on the I/O thread */
  int op, op_arg, op_rc;
  unsigned op_seq, op_done;
  amn_h3_client_stats st;
  h3c_conn *conns;              /* every connection (I/O thread): the test hooks pick one */
  /* the receive batch, shared by the connections (they all run on the I/O
   * thread, and a read callback finishes its batch before another starts) */
  uint8_t *rbuf;
  uint8_t *txbuf;               /* the packets of one write (what a full socket leaves is copied out) */
  amn_h3_sched sched;           /* flushes the dirty connections before the loop blocks: one
                                   prepare watcher for all of them, not one each */
  struct mmsghdr msgs[AMN_H3_RX_BATCH];
  struct iovec iov[AMN_H3_RX_BATCH];
  struct sockaddr_storage from[AMN_H3_RX_BATCH];
} h3c_state;

/* Per endpoint (its tp_state): what its next connection reuses. */
typedef struct h3c_ep {
  gnutls_datum_t ticket;        /* last session ticket (gnutls_session_get_data2) */
  uint8_t tp[256];              /* the server's transport parameters of that session, as ngtcp2 */
  size_t tp_len;                /* ... encodes them for 0-RTT (0: none) */
  uint64_t tp_streams_bidi;     /* their request stream limit */
  uint8_t token[NGTCP2_CRYPTO_MAX_REGULAR_TOKENLEN + 64];
  size_t token_len;             /* last NEW_TOKEN token, 0 if none */
} h3c_ep;

#define SLOT(x) ((x)->tp_state[1]) /* amn_h3c_transport.slot */

/* One call's stream (the handle the core holds). */
typedef struct h3c_stream {
  amn_ct_call *c;               /* NULL once the call let go of it (cancel, or the end was reported) */
  h3c_conn *cc;
  int64_t id;                   /* -1 while waiting for a stream ID (peer's stream limit) */
  amn_h3_sendbuf sb;            /* request bytes until acknowledged */
  amn_h3_sendbuf resend;        /* 0-RTT request bytes to send again (early data refused) */
  bool wait_ack;
  bool early;                   /* opened before the handshake completed (0-RTT) */
  bool started;                 /* its request body began (HEADERS are out) */
  bool yielded;                 /* stepped aside for other streams (see cs_read_data) */
  size_t run_bytes;             /* request bytes given to nghttp3 since it last stepped aside */
  struct h3c_stream *prev, *next; /* cc->live, or cc->waitq */
} h3c_stream;

struct h3c_conn {
  amn_h3_conn b;                /* first: ngtcp2/nghttp3 user data */
  amn_ct_client *tc;
  const amn_ct_conn_cbs *cb;
  const amn_ct_call_cbs *ccb;
  amn_ct_endpoint *ep;
  void *owner;                  /* the pool's handle (NULL once reported closed) */
  h3c_conn *prev, *next;        /* hs->conns */
  h3c_state *hs;
  h3c_ep *he;
  cc_state st;
  bool goaway;                  /* no new calls here */
  bool early;                   /* resuming with 0-RTT: idempotent calls start before the handshake */
  bool early_ready;             /* ... and the owner was told (ready, unconfirmed) */
  bool asked;                   /* closed by a test hook: not a failure */
  bool early_tp;                /* the server's remembered transport parameters are in use */
  bool rx_any;                  /* something came from the server */
  bool got_reset;               /* the server reset the connection (stateless reset) */
  unsigned nyielded;
  h3c_stream *live, *waitq;
  size_t nlive;
  struct addrinfo *ai, *cur;
  ev_io rw;
  ev_timer ct;                  /* connect + handshake deadline */
  ev_timer ka;                  /* keepalive: a silent server is dead */
  ev_tstamp last_rx;            /* when a packet last came from the server */
  char last_err[300];
};

static void cc_closed(h3c_conn *cc, const char *why, bool tell_peer);

#define HSTAT(cc, f)                      \
  do {                                    \
    pthread_mutex_lock(&(cc)->hs->mu);    \
    (cc)->hs->st.f++;                     \
    pthread_mutex_unlock(&(cc)->hs->mu);  \
  } while (0)

static void list_add(h3c_stream **head, h3c_stream *s) {
  s->prev = NULL;
  s->next = *head;
  if (*head) (*head)->prev = s;
  *head = s;
}
static void list_append(h3c_stream **head, h3c_stream *s) {
  s->prev = s->next = NULL;
  if (!*head) {
    *head = s;
    return;
  }
  h3c_stream *t = *head;
  while (t->next) t = t->next;
  t->next = s;
  s->prev = t;
}
static void list_del(h3c_stream **head, h3c_stream *s) {
  if (s->prev) s->prev->next = s->next;
  else if (*head == s) *head = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
}

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

/* While calls are open, PINGs keep the connection from the idle timeout
 * (a quiet long-lived stream is not idle): every keepalive_interval_ms if
 * set, at most half the idle timeout. */
static void update_keepalive(h3c_conn *cc) {
  if (cc->st != CC_READY) return;
  ngtcp2_duration idle = CLIENT_IDLE_TIMEOUT;
  const ngtcp2_transport_params *rp = ngtcp2_conn_get_remote_transport_params(cc->b.q);
  if (rp && rp->max_idle_timeout && rp->max_idle_timeout < idle) idle = rp->max_idle_timeout;
  ngtcp2_duration ka = idle / 2, want = (ngtcp2_duration)cc->tc->ka_interval_ms * NGTCP2_MILLISECONDS;
  if (want && want < ka) ka = want;
  ngtcp2_conn_set_keep_alive_timeout(cc->b.q, cc->nlive || (want && cc->tc->keepalive_without_calls) ? ka : 0);
}


/* Keepalive (keepalive_interval_ms set): QUIC PINGs go out after an
 * interval without traffic (update_keepalive); when nothing at all came
 * back for the interval plus keepalive_timeout_ms while calls are open
 * (or always, with keepalive_without_calls), the server or the path is
 * gone: the connection closes so its calls fail now, as over HTTP/2. */
static void ka_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)revents;
  h3c_conn *cc = w->data;
  amn_ct_client *tc = cc->tc;
  if (cc->st != CC_READY || !tc->ka_interval_ms) return;
  uint32_t limit_ms = tc->ka_interval_ms + amn_ct_ka_timeout_ms(tc);
  double limit = limit_ms / 1000.0, quiet = ev_now(ev) - cc->last_rx;
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
/* Responses                                                          */
/* ------------------------------------------------------------------ */

/* The stream lets go of its call (callbacks of the stream no longer
 * reach it): the call's end, normal (`end` NULL) or failed (retried
 * elsewhere by the core when `end->unprocessed` allows it). */
static void call_end(h3c_stream *cs, const amn_ct_end *end) {
  amn_ct_call *c = cs->c;
  cs->c = NULL;
  if (c) cs->cc->ccb->closed(c, end);
}

static void detach_fail(h3c_stream *cs, amn_status_code code, const char *msg, bool unprocessed) {
  amn_ct_end e = {code, msg, unprocessed};
  call_end(cs, &e);
}

static amn_ct_call *live_call(void *sud) {
  h3c_stream *cs = sud;
  return cs ? cs->c : NULL;
}

static void consume(h3c_conn *cc, int64_t id, size_t n) {
  ngtcp2_conn_extend_max_stream_offset(cc->b.q, id, n);
  ngtcp2_conn_extend_max_offset(cc->b.q, n);
}

/* ---- nghttp3 callbacks ---- */

static int on_acked(nghttp3_conn *h, int64_t id, uint64_t n, void *ud, void *sud) {
  (void)ud;
  h3c_stream *cs = sud;
  if (!cs) return 0;
  amn_h3_sendbuf_ack(&cs->sb, n);
  if (cs->wait_ack && cs->sb.unacked <= AMN_H3_MAX_UNACKED / 2) {
    cs->wait_ack = false;
    nghttp3_conn_resume_stream(h, id);
  }
  return 0;
}

static int on_stream_close(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)h; (void)id;
  h3c_conn *cc = ud;
  h3c_stream *cs = sud;
  if (!cs) return 0;
  list_del(&cc->live, cs);
  cc->nlive--;
  if (cs->c && code == NGHTTP3_H3_REQUEST_REJECTED) {
    /* the server refused the request before processing it: safe to retry */
    detach_fail(cs, AMN_STATUS_UNAVAILABLE, "request rejected by the server (H3_REQUEST_REJECTED)", true);
  } else if (cs->c && code == NGHTTP3_H3_NO_ERROR) {
    call_end(cs, NULL);
  } else if (cs->c) {
    char m[96];
    snprintf(m, sizeof m, "stream reset by the server (HTTP/3 error 0x%llx)", (unsigned long long)code);
    detach_fail(cs, amn_status_from_h3_error(code), m, false);
  }
  amn_h3_sendbuf_free(&cs->sb);
  amn_h3_sendbuf_free(&cs->resend);
  free(cs);
  update_keepalive(cc);
  return 0;
}

static int on_recv_data(nghttp3_conn *h, int64_t id, const uint8_t *data, size_t len, void *ud, void *sud) {
  (void)h;
  h3c_conn *cc = ud;
  consume(cc, id, len); /* the client takes response bytes as they come */
  amn_ct_call *c = live_call(sud);
  if (c) cc->ccb->data(c, data, len);
  return 0;
}

static int on_deferred_consume(nghttp3_conn *h, int64_t id, size_t n, void *ud, void *sud) {
  (void)h; (void)sud;
  consume(ud, id, n);
  return 0;
}

static int on_recv_header(nghttp3_conn *h, int64_t id, int32_t token, nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                          uint8_t flags, void *ud, void *sud) {
  (void)h; (void)id; (void)token; (void)flags;
  h3c_conn *cc = ud;
  amn_ct_call *c = live_call(sud);
  if (!c) return 0;
  nghttp3_vec n = nghttp3_rcbuf_get_buf(name), v = nghttp3_rcbuf_get_buf(value);
  cc->ccb->header(c, n.base, n.len, v.base, v.len);
  return 0;
}

static int on_end_headers(nghttp3_conn *h, int64_t id, int fin, void *ud, void *sud) {
  (void)h; (void)id; (void)fin;
  h3c_conn *cc = ud;
  amn_ct_call *c = live_call(sud);
  if (c) cc->ccb->headers_end(c, false);
  return 0;
}

static int on_end_trailers(nghttp3_conn *h, int64_t id, int fin, void *ud, void *sud) {
  (void)h; (void)id; (void)fin;
  h3c_conn *cc = ud;
  amn_ct_call *c = live_call(sud);
  if (c) cc->ccb->headers_end(c, true);
  return 0;
}

/* The response is complete: the call lets go of the stream first (an
 * idempotent call ended by UNAVAILABLE may be re-sent elsewhere). */
static int on_end_stream(nghttp3_conn *h, int64_t id, void *ud, void *sud) {
  (void)h; (void)id; (void)ud;
  if (sud) call_end(sud, NULL);
  return 0;
}

static int on_stop_sending(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)h; (void)sud;
  h3c_conn *cc = ud;
  ngtcp2_conn_shutdown_stream_read(cc->b.q, 0, id, code);
  return 0;
}

static int on_reset_stream(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)h; (void)sud;
  h3c_conn *cc = ud;
  ngtcp2_conn_shutdown_stream_write(cc->b.q, 0, id, code);
  return 0;
}

/* GOAWAY: no new calls on this connection. Requests at or above `id` were
 * not processed by the server: they are reset and go to another
 * connection, as do the calls still waiting for a stream. */
static int on_shutdown(nghttp3_conn *h, int64_t id, void *ud) {
  (void)h;
  h3c_conn *cc = ud;
  bool first = !cc->goaway;
  cc->goaway = true;
  AMN_DEBUG("GOAWAY from %s (stream %lld)", cc->ep->authority, (long long)id);
  char m[400];
  snprintf(m, sizeof m, "%s is closing the connection (HTTP/3 GOAWAY): request not processed", cc->ep->authority);
  for (h3c_stream *cs = cc->live; cs; cs = cs->next)
    if (cs->id >= id && cs->c) {
      ngtcp2_conn_shutdown_stream(cc->b.q, 0, cs->id, NGHTTP3_H3_REQUEST_CANCELLED);
      detach_fail(cs, AMN_STATUS_UNAVAILABLE, m, true);
    }
  while (cc->waitq) {
    h3c_stream *cs = cc->waitq;
    list_del(&cc->waitq, cs);
    amn_h3_sendbuf_free(&cs->resend);
    detach_fail(cs, AMN_STATUS_UNAVAILABLE, m, true);
    free(cs);
  }
  if (first && cc->owner) cc->cb->goaway(cc->owner, false, m);
  amn_h3_mark_dirty(&cc->b);
  return 0;
}

static const nghttp3_callbacks g_h3cbs = {
    .acked_stream_data = on_acked,
    .stream_close = on_stream_close,
    .recv_data = on_recv_data,
    .deferred_consume = on_deferred_consume,
    .recv_header = on_recv_header,
    .end_headers = on_end_headers,
    .recv_trailer = on_recv_header,
    .end_trailers = on_end_trailers,
    .stop_sending = on_stop_sending,
    .end_stream = on_end_stream,
    .reset_stream = on_reset_stream,
    .shutdown = on_shutdown,
};

/* ------------------------------------------------------------------ */
/* Calls                                                              */
/* ------------------------------------------------------------------ */

static ssize_t pull_call(void *stream, uint8_t *buf, size_t len, bool *eof) {
  h3c_stream *cs = stream;
  return cs->cc->ccb->pull(cs->c, buf, len, eof);
}

#define FAIR_QUANTUM (64 * 1024) /* request bytes a stream sends before it lets others go */

/* Another stream of the connection has request bytes on their way: its
 * HEADERS are not out yet, its call has data queued, or bytes it handed
 * to nghttp3 are not acknowledged yet (they may still sit in nghttp3's
 * queue, behind ours). */
static bool has_data(const h3c_conn *cc, const h3c_stream *o) {
  bool eof;
  return cc->ccb->peek(o->c, 1, &eof) > 0;
}

static bool others_waiting(const h3c_conn *cc, const h3c_stream *self) {
  for (const h3c_stream *o = cc->live; o; o = o->next)
    if (o != self && !o->yielded && o->c && (!o->started || o->resend.head || o->sb.unacked || has_data(cc, o)))
      return true;
  return false;
}

static nghttp3_ssize cs_read_data(nghttp3_conn *h, int64_t id, nghttp3_vec *vec, size_t veccnt, uint32_t *pflags,
                                  void *ud, void *sud) {
  (void)h; (void)veccnt;
  h3c_conn *cc = ud;
  h3c_stream *cs = sud;
  if (!live_call(cs)) return NGHTTP3_ERR_WOULDBLOCK;
  cs->started = true;
  /* nghttp3 sends a client's streams one after the other (its incremental
   * priority schedules a server's responses only): a large upload would hold
   * every later request back. So after a quantum, a stream steps aside
   * while others have something to send; it resumes once this flush is
   * done (cc_flush). */
  if (cs->run_bytes >= FAIR_QUANTUM && others_waiting(cc, cs)) {
    cs->yielded = true;
    cs->run_bytes = 0;
    cc->nyielded++;
    return NGHTTP3_ERR_WOULDBLOCK;
  }
  amn_h3_chunk *again = amn_h3_sendbuf_pop(&cs->resend);
  if (again) { /* refused 0-RTT bytes first */
    amn_h3_sendbuf_push(&cs->sb, again, vec);
    cs->run_bytes += again->len;
    return 1;
  }
  bool eof;
  ssize_t n = amn_h3_sendbuf_fill(&cs->sb, pull_call, cs, &eof, vec);
  if (n == -2) cs->wait_ack = true;
  if (n == -3) ngtcp2_conn_shutdown_stream(cc->b.q, 0, id, NGHTTP3_H3_INTERNAL_ERROR);
  if (n < 0) return NGHTTP3_ERR_WOULDBLOCK;
  cs->run_bytes += (size_t)n;
  if (eof) *pflags |= NGHTTP3_DATA_FLAG_EOF;
  return n > 0 ? 1 : 0;
}

/* Opens the stream and submits the request. 0, 1 (no stream ID free: wait
 * for the server to allow more), or -1 (failed: *end says why; cs is
 * freed, its call not told). */
static int open_stream(h3c_conn *cc, h3c_stream *cs, amn_ct_end *end) {
  amn_ct_call *c = cs->c;
  int64_t id;
  int rv = ngtcp2_conn_open_bidi_stream(cc->b.q, &id, cs);
  if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED) return 1;
  bool opened = rv == 0;
  amn_hdr_buf hb;
  amn_hdr_buf_init(&hb);
  nghttp3_nv nva[AMN_RPC_MAX_MD + 12];
  const char *fail = NULL;
  amn_status_code code = AMN_STATUS_UNAVAILABLE;
  if (!opened) {
    fail = ngtcp2_strerror(rv);
  } else if (amn_rpc_build_request(&hb, "https", cc->ep->authority, c->method, c->timeout_ns, c->md, c->md_n) != 0) {
    fail = "invalid request metadata";
    code = AMN_STATUS_INTERNAL;
  } else {
    nghttp3_data_reader dr = {cs_read_data};
    rv = nghttp3_conn_submit_request(cc->b.h, id, nva, amn_h3_nv(&hb, nva), &dr, cs);
    if (rv != 0) fail = nghttp3_strerror(rv);
  }
  amn_hdr_buf_free(&hb);
  if (fail) {
    if (opened) { /* release the stream: nothing of it reaches the call anymore */
      ngtcp2_conn_set_stream_user_data(cc->b.q, id, NULL);
      ngtcp2_conn_shutdown_stream(cc->b.q, 0, id, NGHTTP3_H3_INTERNAL_ERROR);
    }
    *end = (amn_ct_end){code, fail, !opened};
    amn_h3_sendbuf_free(&cs->resend);
    free(cs);
    return -1;
  }
  cs->id = id;
  list_add(&cc->live, cs);
  cc->nlive++;
  cs->early = !ngtcp2_conn_get_handshake_completed(cc->b.q);
  if (cs->early) HSTAT(cc, early_calls);
  update_keepalive(cc);
  amn_h3_mark_dirty(&cc->b);
  return 0;
}

static void *h3c_start_call(void *conn, amn_ct_call *c, amn_ct_end *fail) {
  h3c_conn *cc = conn;
  h3c_stream *cs = calloc(1, sizeof *cs);
  if (!cs) {
    *fail = (amn_ct_end){AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory", false};
    return NULL;
  }
  cs->c = c;
  cs->cc = cc;
  cs->id = -1;
  /* calls wait in order behind earlier ones that had no stream ID yet;
   * before the handshake, only idempotent calls go (as 0-RTT data): a
   * replayed early request must be harmless */
  bool now = cc->st == CC_READY ? !cc->waitq : c->idempotent && ngtcp2_conn_get_streams_bidi_left(cc->b.q) > 0;
  int rv = now ? open_stream(cc, cs, fail) : 1;
  if (rv == 1) list_append(&cc->waitq, cs); /* first come, first opened */
  return rv < 0 ? NULL : cs;
}

/* Opens the next waiting stream: 1 opened (or dropped: its call ended
 * meanwhile), 0 none can be opened now. */
static int open_next(h3c_conn *cc) {
  h3c_stream *cs = cc->waitq;
  if (!cs || ngtcp2_conn_get_streams_bidi_left(cc->b.q) == 0) return 0;
  list_del(&cc->waitq, cs);
  if (!cs->c) { /* e.g. cancelled while its 0-RTT data was in flight */
    amn_h3_sendbuf_free(&cs->resend);
    free(cs);
    return 1;
  }
  amn_ct_call *c = cs->c;
  amn_ct_end end;
  int rv = open_stream(cc, cs, &end);
  if (rv == 1) { /* raced with the limit: back in front */
    list_add(&cc->waitq, cs);
    return 0;
  }
  if (rv < 0) cc->ccb->closed(c, &end);
  return 1;
}

static void open_waiting(h3c_conn *cc) {
  while (cc->st == CC_READY && open_next(cc)) {
  }
}

static void h3c_resume(void *stream) {
  h3c_stream *cs = stream;
  if (cs->id < 0 || cs->cc->st != CC_READY) return;
  nghttp3_conn_resume_stream(cs->cc->b.h, cs->id);
  amn_h3_mark_dirty(&cs->cc->b);
}

static void h3c_cancel(void *stream) {
  h3c_stream *cs = stream;
  h3c_conn *cc = cs->cc;
  cs->c = NULL; /* nothing reaches the call anymore */
  if (cs->id < 0) { /* never opened: just forget it */
    list_del(&cc->waitq, cs);
    amn_h3_sendbuf_free(&cs->resend);
    free(cs);
    return;
  }
  if (cc->st != CC_READY && cc->st != CC_CONNECTING) return;
  ngtcp2_conn_shutdown_stream(cc->b.q, 0, cs->id, NGHTTP3_H3_REQUEST_CANCELLED);
  amn_h3_mark_dirty(&cc->b);
}

/* ------------------------------------------------------------------ */
/* ngtcp2 callbacks                                                   */
/* ------------------------------------------------------------------ */

/* The server refused our 0-RTT data: ngtcp2 forgot the streams, nghttp3
 * goes too; the early calls are opened again on the new HTTP/3
 * connection, their bytes sent again from their send buffers. */
static int q_early_rejected(ngtcp2_conn *q, void *ud) {
  (void)q;
  h3c_conn *cc = ud;
  if (cc->b.h) nghttp3_conn_del(cc->b.h);
  cc->b.h = NULL;
  h3c_stream *again = cc->live;
  cc->live = NULL;
  cc->nlive = 0;
  cc->nyielded = 0;
  while (again) {
    h3c_stream *cs = again;
    again = cs->next;
    cs->resend = cs->sb; /* nothing was acknowledged: all of it goes again */
    memset(&cs->sb, 0, sizeof cs->sb);
    cs->id = -1;
    cs->wait_ack = cs->started = cs->yielded = false;
    cs->run_bytes = 0;
    list_add(&cc->waitq, cs); /* ahead of the calls that waited for the handshake */
  }
  return 0;
}

static int q_handshake_completed(ngtcp2_conn *q, void *ud) {
  h3c_conn *cc = ud;
  if (!amn_tls_alpn_is(cc->b.tls, "h3")) {
    snprintf(cc->last_err, sizeof cc->last_err, "server did not negotiate ALPN h3");
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  h3c_state *hs = cc->hs;
  h3c_ep *he = cc->he;
  bool resumed = gnutls_session_is_resumed(cc->b.tls);
  bool early_ok = (gnutls_session_get_flags(cc->b.tls) & GNUTLS_SFLAGS_EARLY_DATA) != 0;
  pthread_mutex_lock(&hs->mu);
  hs->st.handshakes++;
  if (resumed) hs->st.resumed++;
  if (cc->early) {
    if (early_ok) hs->st.early_accepted++;
    else hs->st.early_rejected++;
  }
  /* the parameters that go with the session ticket, for the next 0-RTT */
  const ngtcp2_transport_params *rp = ngtcp2_conn_get_remote_transport_params(q);
  ngtcp2_ssize tpn = ngtcp2_conn_encode_0rtt_transport_params(q, he->tp, sizeof he->tp);
  he->tp_len = tpn > 0 ? (size_t)tpn : 0;
  he->tp_streams_bidi = rp ? rp->initial_max_streams_bidi : 0;
  pthread_mutex_unlock(&hs->mu);
  if (cc->early_tp && !early_ok) {
    AMN_DEBUG("HTTP/3: %s refused our 0-RTT data: sending it again", cc->ep->authority);
    int rv = ngtcp2_conn_tls_early_data_rejected(q); /* -> q_early_rejected */
    if (rv != 0) return rv;
  }
  cc->early = false;
  int rv = amn_h3_setup_http(&cc->b, false, &g_h3cbs, cc);
  if (rv != 0) {
    snprintf(cc->last_err, sizeof cc->last_err, "HTTP/3 setup failed: %s", nghttp3_strerror(rv));
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  /* refused early requests go again now (1-RTT), the others at HANDSHAKE_DONE */
  while (cc->waitq && cc->waitq->resend.head && open_next(cc)) {
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
  open_waiting(cc);
  update_keepalive(cc);
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

/* NEW_TOKEN: kept for the next connection (skips the server's Retry). */
static int q_recv_new_token(ngtcp2_conn *q, const uint8_t *token, size_t len, void *ud) {
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

static int q_stream_close(ngtcp2_conn *q, uint32_t flags, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)sud;
  h3c_conn *cc = ud;
  if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) code = NGHTTP3_H3_NO_ERROR;
  if (!cc->b.h) return 0;
  int rv = nghttp3_conn_close_stream(cc->b.h, id, code);
  if (rv == NGHTTP3_ERR_STREAM_NOT_FOUND) {
    if (!ngtcp2_is_bidi_stream(id) && !ngtcp2_conn_is_local_stream(q, id)) ngtcp2_conn_extend_max_streams_uni(q, 1);
  } else if (rv != 0) {
    ngtcp2_ccerr_set_application_error(&cc->b.err, nghttp3_err_infer_quic_app_error_code(rv),
                                                        NULL, 0);
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

/* The server reset its side of a request stream: the call fails now. */
static int q_stream_reset(ngtcp2_conn *q, int64_t id, uint64_t final, uint64_t code, void *ud, void *sud) {
  (void)final;
  h3c_conn *cc = ud;
  if (cc->b.h && nghttp3_conn_shutdown_stream_read(cc->b.h, id) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  if (live_call(sud)) {
    char m[96];
    snprintf(m, sizeof m, "stream reset by the server (HTTP/3 error 0x%llx)", (unsigned long long)code);
    ngtcp2_conn_shutdown_stream_write(q, 0, id, NGHTTP3_H3_REQUEST_CANCELLED);
    if (code == NGHTTP3_H3_REQUEST_REJECTED) /* never processed: safe to retry elsewhere */
      detach_fail(sud, AMN_STATUS_UNAVAILABLE, "request rejected by the server (H3_REQUEST_REJECTED)", true);
    else
      detach_fail(sud, amn_status_from_h3_error(code), m, false);
  }
  return 0;
}

static int q_extend_local_bidi(ngtcp2_conn *q, uint64_t max, void *ud) {
  (void)q; (void)max;
  open_waiting(ud);
  return 0;
}

static int q_extend_stream_data(ngtcp2_conn *q, int64_t id, uint64_t max, void *ud, void *sud) {
  (void)q; (void)max; (void)sud;
  h3c_conn *cc = ud;
  if (cc->b.h && nghttp3_conn_unblock_stream(cc->b.h, id) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  return 0;
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
  g_qcbs.recv_new_token = q_recv_new_token;
  g_qcbs.recv_stateless_reset = q_recv_stateless_reset;
  g_qcbs.tls_early_data_rejected = q_early_rejected;
  g_qcbs.update_key = q_update_key;
  g_qcbs.handshake_completed = q_handshake_completed;
  g_qcbs.handshake_confirmed = q_handshake_confirmed;
  g_qcbs.stream_close = q_stream_close;
  g_qcbs.stream_reset = q_stream_reset;
  g_qcbs.extend_max_local_streams_bidi = q_extend_local_bidi;
  g_qcbs.extend_max_stream_data = q_extend_stream_data;
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
  h3c_stream *lists[2] = {cc->live, cc->waitq};
  cc->live = cc->waitq = NULL;
  for (int k = 0; k < 2; k++)
    while (lists[k]) {
      h3c_stream *cs = lists[k];
      lists[k] = cs->next;
      if (cs->c) detach_fail(cs, AMN_STATUS_UNAVAILABLE, m, k == 1 || !cs->started);
      amn_h3_sendbuf_free(&cs->sb);
      amn_h3_sendbuf_free(&cs->resend);
      free(cs);
    }
  cc->nlive = 0;
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
    cc->nyielded = 0;
    for (h3c_stream *cs = cc->live; cs; cs = cs->next)
      if (cs->yielded) {
        cs->yielded = false;
        if (cs->id >= 0 && cc->b.h) nghttp3_conn_resume_stream(cc->b.h, cs->id);
      }
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

static void read_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  h3c_conn *cc = w->data;
  for (int round = 0; round < 8; round++) {
    h3c_state *hs = cc->hs;
    int n = amn_h3_recv_batch(cc->b.fd, hs->rbuf, hs->msgs, hs->iov, hs->from);
    if (n < 0) {
      if (!socket_refused(cc, -n)) AMN_DEBUG("UDP receive from %s: %s", cc->ep->authority, strerror(-n));
      return;
    }
    if (n > 0) {
      cc->rx_any = true;
      cc->last_rx = ev_now(cc->tc->ev);
    }
    for (int i = 0; i < n; i++) {
      if (!hs->msgs[i].msg_len) continue;
      ngtcp2_path path = {{(struct sockaddr *)&cc->b.local, cc->b.local_len},
                          {(struct sockaddr *)&hs->from[i], hs->msgs[i].msg_hdr.msg_namelen},
                          NULL};
      ngtcp2_pkt_info pi = {0};
      int rv = ngtcp2_conn_read_pkt(cc->b.q, &path, &pi, hs->rbuf + (size_t)i * AMN_H3_RX_DGRAM, hs->msgs[i].msg_len,
                                    amn_h3_now());
      if (rv != 0) {
        cc_error(cc, rv);
        return;
      }
    }
    if (n == 0) break;
    amn_h3_mark_dirty(&cc->b);
    if (n < AMN_H3_RX_BATCH) break;
  }
}

static void ct_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  h3c_conn *cc = w->data;
  char why[300];
  handshake_timeout_msg(cc, why, sizeof why);
  cc_closed(cc, why, true);
}

/* NewSessionTicket received: the session data to resume with next time. */
static int ticket_hook(gnutls_session_t s, unsigned htype, unsigned when, unsigned incoming,
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
  pthread_mutex_unlock(&hs->mu);
  return 0;
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
  gnutls_handshake_set_hook_function(cc->b.tls, GNUTLS_HANDSHAKE_NEW_SESSION_TICKET, GNUTLS_HOOK_POST, ticket_hook);
  /* resume the last session: with 0-RTT when its transport parameters are known */
  h3c_state *hs = cc->hs;
  h3c_ep *he = cc->he;
  uint8_t early_tp[sizeof he->tp];
  size_t early_tp_len = 0;
  bool resume = false, early = false;
  uint8_t token[sizeof he->token];
  size_t token_len = 0;
  pthread_mutex_lock(&hs->mu);
  if (he->ticket.size && gnutls_session_set_data(cc->b.tls, he->ticket.data, he->ticket.size) == 0) {
    resume = true;
    if (he->tp_len) {
      memcpy(early_tp, he->tp, he->tp_len);
      early_tp_len = he->tp_len;
      early = true;
    }
  }
  if (he->token_len) {
    token_len = he->token_len;
    memcpy(token, he->token, token_len);
  }
  hs->st.connects++;
  if (token_len) hs->st.tokens_sent++;
  pthread_mutex_unlock(&hs->mu);

  pthread_once(&g_qcbs_once, init_qcbs);
  ngtcp2_cid dcid, scid;
  dcid.datalen = 18;
  scid.datalen = AMN_H3_SCIDLEN;
  gnutls_rnd(GNUTLS_RND_NONCE, dcid.data, dcid.datalen);
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
    snprintf(cc->last_err, sizeof cc->last_err, "QUIC setup: %s", ngtcp2_strerror(rv));
    teardown(cc);
    return -1;
  }
  ngtcp2_conn_set_tls_native_handle(cc->b.q, cc->b.tls);
  cc->early = cc->early_tp = false;
  if (early) {
    /* 0-RTT: HTTP/3 starts now, on the parameters the server gave last time */
    cc->early_tp = ngtcp2_conn_decode_and_set_0rtt_transport_params(cc->b.q, early_tp, early_tp_len) == 0;
    if (cc->early_tp && amn_h3_setup_http(&cc->b, false, &g_h3cbs, cc) == 0) {
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
static size_t load(const h3c_conn *cc) {
  size_t n = cc->nlive;
  for (const h3c_stream *cs = cc->waitq; cs; cs = cs->next) n++;
  return n;
}

static h3c_conn *hook_conn(h3c_state *hs) {
  h3c_conn *best = NULL;
  for (h3c_conn *cc = hs->conns; cc; cc = cc->next) {
    if (cc->st == CC_CLOSED) continue;
    bool ready = cc->st == CC_READY && !cc->goaway, bready = best && best->st == CC_READY && !best->goaway;
    if (!best || (ready && !bready) || (ready == bready && load(cc) > load(best))) best = cc;
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

/* I/O thread: the client's state, made on first use. */
static h3c_state *state_get(amn_ct_client *tc) {
  h3c_state *hs = state_of(tc);
  if (hs) return hs;
  hs = calloc(1, sizeof *hs);
  if (hs) {
    hs->rbuf = malloc((size_t)AMN_H3_RX_BATCH * AMN_H3_RX_DGRAM);
    hs->txbuf = malloc(AMN_H3_TX_BUF);
  }
  if (!hs || !hs->rbuf || !hs->txbuf) {
    if (hs) free(hs->rbuf);
    free(hs);
    return NULL;
  }
  amn_h3_sched_init(&hs->sched, tc->ev);
  pthread_mutex_init(&hs->mu, NULL);
  pthread_cond_init(&hs->cv, NULL);
  ev_async_init(&hs->async, async_cb);
  hs->async.data = hs;
  ev_async_start(tc->ev, &hs->async);
  ev_unref(tc->ev); /* must not keep the loop alive by itself */
  __atomic_store_n(&SLOT(tc), hs, __ATOMIC_RELEASE);
  return hs;
}

static void h3c_endpoint_free(amn_ct_endpoint *ep) {
  h3c_ep *he = SLOT(ep);
  if (he) gnutls_free(he->ticket.data);
  free(he);
  SLOT(ep) = NULL;
}

static void h3c_client_free(amn_ct_client *tc) {
  h3c_state *hs = state_of(tc);
  if (!hs) return;
  ev_ref(tc->ev);
  ev_async_stop(tc->ev, &hs->async);
  pthread_mutex_destroy(&hs->mu);
  pthread_cond_destroy(&hs->cv);
  amn_h3_sched_stop(&hs->sched);
  free(hs->rbuf);
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

const amn_ctransport amn_h3c_transport = {
    .name = "HTTP/3",
    .kind = AMN_TRANSPORT_H3,
    .slot = 1,
    .open = h3c_open,
    .max_streams = h3c_max_streams,
    .start_call = h3c_start_call,
    .resume = h3c_resume,
    .cancel = h3c_cancel,
    .close = h3c_close,
    .endpoint_free = h3c_endpoint_free,
    .client_free = h3c_client_free,
    .stats = h3c_stats,
    .test_op = h3c_test_op,
};
