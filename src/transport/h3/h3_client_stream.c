/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, client side: request streams. A call's stream
 * (h3c_stream) from start_call to its end: waiting for a stream ID (the
 * server's limit, or the handshake for a call that may not go as 0-RTT),
 * the request through nghttp3 with fair turns between uploads, the
 * response onto the call callbacks, GOAWAY, resets, and the streams of
 * refused 0-RTT data opened again.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/h3/h3_client_int.h"
#include "util/log.h"

_Static_assert(offsetof(h3c_stream, sb) == 0, "nghttp3's stream user data starts with its send buffer");

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

/* While calls are open, PINGs keep the connection from the idle timeout
 * (a quiet long-lived stream is not idle): every keepalive_interval_ms if
 * set, at most half the idle timeout. */
void amn_h3c_update_keepalive(h3c_conn *cc) {
  if (cc->st != CC_READY) return;
  ngtcp2_duration idle = CLIENT_IDLE_TIMEOUT;
  const ngtcp2_transport_params *rp = ngtcp2_conn_get_remote_transport_params(cc->b.q);
  if (rp && rp->max_idle_timeout && rp->max_idle_timeout < idle) idle = rp->max_idle_timeout;
  ngtcp2_duration ka = idle / 2, want = (ngtcp2_duration)cc->tc->ka_interval_ms * NGTCP2_MILLISECONDS;
  if (want && want < ka) ka = want;
  ngtcp2_conn_set_keep_alive_timeout(cc->b.q, cc->nlive || (want && cc->tc->keepalive_without_calls) ? ka : 0);
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

/* ---- nghttp3 callbacks ---- */

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
  amn_h3c_update_keepalive(cc);
  return 0;
}

static int on_recv_data(nghttp3_conn *h, int64_t id, const uint8_t *data, size_t len, void *ud, void *sud) {
  (void)h;
  h3c_conn *cc = ud;
  amn_h3_consume(&cc->b, id, len); /* the client takes response bytes as they come */
  amn_ct_call *c = live_call(sud);
  if (c) cc->ccb->data(c, data, len);
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

const nghttp3_callbacks amn_h3c_h3cbs = {
    .acked_stream_data = amn_h3_on_acked,
    .stream_close = on_stream_close,
    .recv_data = on_recv_data,
    .deferred_consume = amn_h3_on_deferred_consume,
    .recv_header = on_recv_header,
    .end_headers = on_end_headers,
    .recv_trailer = on_recv_header,
    .end_trailers = on_end_trailers,
    .stop_sending = amn_h3_on_stop_sending,
    .end_stream = on_end_stream,
    .reset_stream = amn_h3_on_reset_stream,
    .shutdown = on_shutdown,
};

/* ------------------------------------------------------------------ */
/* Calls                                                              */
/* ------------------------------------------------------------------ */

static ssize_t peek_call(void *stream, size_t len, bool *eof) {
  h3c_stream *cs = stream;
  return cs->cc->ccb->peek(cs->c, len, eof);
}

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
  ssize_t n = amn_h3_sendbuf_fill(&cs->sb, peek_call, pull_call, cs, &eof, vec);
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
      nghttp3_conn_set_stream_user_data(cc->b.h, id, NULL); /* a failed submit may have made nghttp3's stream */
      ngtcp2_conn_shutdown_stream(cc->b.q, 0, id, NGHTTP3_H3_INTERNAL_ERROR);
    }
    *end = (amn_ct_end){code, fail, !opened};
    amn_h3_sendbuf_free(&cs->resend);
    free(cs);
    return -1;
  }
  cs->id = id;
  list_add(&cc->live, cs);
  if (!cc->nlive++ && !cc->tc->keepalive_without_calls) cc->ka_from = ev_now(cc->tc->ev); /* no PINGs were out */
  cs->early = !ngtcp2_conn_get_handshake_completed(cc->b.q);
  if (cs->early) HSTAT(cc, early_calls);
  amn_h3c_update_keepalive(cc);
  amn_h3_mark_dirty(&cc->b);
  return 0;
}

void *amn_h3c_start_call(void *conn, amn_ct_call *c, amn_ct_end *fail) {
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
int amn_h3c_open_next(h3c_conn *cc) {
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

void amn_h3c_open_waiting(h3c_conn *cc) {
  while (cc->st == CC_READY && amn_h3c_open_next(cc)) {
  }
}

void amn_h3c_resume(void *stream) {
  h3c_stream *cs = stream;
  if (cs->id < 0 || cs->cc->st != CC_READY) return;
  nghttp3_conn_resume_stream(cs->cc->b.h, cs->id);
  amn_h3_mark_dirty(&cs->cc->b);
}

void amn_h3c_cancel(void *stream) {
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

/* The server refused our 0-RTT data: ngtcp2 forgot the streams, nghttp3
 * goes too; the early calls are opened again on the new HTTP/3
 * connection, their bytes sent again from their send buffers. */
int amn_h3c_q_early_rejected(ngtcp2_conn *q, void *ud) {
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
    cs->resend.blocked = false;
    memset(&cs->sb, 0, sizeof cs->sb);
    cs->id = -1;
    cs->started = cs->yielded = false;
    cs->run_bytes = 0;
    list_add(&cc->waitq, cs); /* ahead of the calls that waited for the handshake */
  }
  return 0;
}

int amn_h3c_q_stream_close(ngtcp2_conn *q, uint32_t flags, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)sud;
  h3c_conn *cc = ud;
  int rv = amn_h3_close_stream(&cc->b, flags, id, code);
  /* a server's stream nghttp3 did not know: the server may open another */
  if (rv == 1 && !ngtcp2_is_bidi_stream(id) && !ngtcp2_conn_is_local_stream(q, id))
    ngtcp2_conn_extend_max_streams_uni(q, 1);
  return rv < 0 ? rv : 0;
}

/* The server reset its side of a request stream: the call fails now. */
int amn_h3c_q_stream_reset(ngtcp2_conn *q, int64_t id, uint64_t final, uint64_t code, void *ud, void *sud) {
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

int amn_h3c_q_extend_local_bidi(ngtcp2_conn *q, uint64_t max, void *ud) {
  (void)q; (void)max;
  amn_h3c_open_waiting(ud);
  return 0;
}

/* ---- for the connection (h3_client.c) ---- */

void amn_h3c_streams_fail_all(h3c_conn *cc, const char *why) {
  h3c_stream *lists[2] = {cc->live, cc->waitq};
  cc->live = cc->waitq = NULL;
  for (int k = 0; k < 2; k++)
    while (lists[k]) {
      h3c_stream *cs = lists[k];
      lists[k] = cs->next;
      if (cs->c) detach_fail(cs, AMN_STATUS_UNAVAILABLE, why, k == 1 || !cs->started);
      amn_h3_sendbuf_free(&cs->sb);
      amn_h3_sendbuf_free(&cs->resend);
      free(cs);
    }
  cc->nlive = 0;
}

void amn_h3c_streams_resume_yielded(h3c_conn *cc) {
  cc->nyielded = 0;
  for (h3c_stream *cs = cc->live; cs; cs = cs->next)
    if (cs->yielded) {
      cs->yielded = false;
      if (cs->id >= 0 && cc->b.h) nghttp3_conn_resume_stream(cc->b.h, cs->id);
    }
}

size_t amn_h3c_load(const h3c_conn *cc) {
  size_t n = cc->nlive;
  for (const h3c_stream *cs = cc->waitq; cs; cs = cs->next) n++;
  return n;
}
