/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, server side: request streams. Each nghttp3 request
 * stream is bound to a call of the transport-independent call core
 * (transport/stransport.h), as the HTTP/2 transport (h2_server.c) does
 * with nghttp2 streams: the request's header fields and DATA go to the
 * call, its response headers, messages and trailers come back through
 * the two operations the core was given (kick, consume). Also what
 * ngtcp2 reports about streams (resets, STOP_SENDING, closes, the
 * client's stream limit) and the keep-alive that open calls need.
 */
#include <stdlib.h>

#include "transport/h3/h3_server_int.h"
#include "util/log.h"

/* ------------------------------------------------------------------ */
/* Calls                                                              */
/* ------------------------------------------------------------------ */

static void h3s_kick(void *stream);
static void h3s_consume(void *stream, size_t n);
static const amn_st_stream_ops h3_ops = {h3s_kick, h3s_consume, AMN_TRANSPORT_H3};

/* The call core of the connection's server. */
static const amn_st_calls *calls_of(const h3_sconn *sc) { return sc->l->loop->calls; }

/* The call leaves the stream: the call core ends it as cancelled/failed. */
static void ss_detach(h3_sstream *ss, amn_status_code why, const char *msg) {
  amn_call *c = ss->c;
  if (!c) return;
  ss->c = NULL;
  /* bytes held for a paused handler still count against the connection window */
  size_t held = calls_of(ss->sc)->closed(c, why, msg);
  if (held && ss->sc->b.q) ngtcp2_conn_extend_max_offset(ss->sc->b.q, held);
}

static void ss_free(h3_sstream *ss) {
  h3_sconn *sc = ss->sc;
  if (ss->prev) ss->prev->next = ss->next;
  else sc->streams = ss->next;
  if (ss->next) ss->next->prev = ss->prev;
  sc->nstreams--;
  amn_h3_sendbuf_free(&ss->sb);
  free(ss);
}

/* The response messages of a stream's call, whole (amn_h3_sendbuf_take),
 * and what the client acknowledged of them. */
static ssize_t take_stream(void *stream, amn_qmsg **m, bool *eof) {
  h3_sstream *ss = stream;
  return calls_of(ss->sc)->take(ss->c, m, eof);
}

static void released_stream(void *stream, size_t acked, size_t freed) {
  h3_sstream *ss = stream;
  if (ss->c) calls_of(ss->sc)->released(ss->c, acked, freed);
}

static nghttp3_ssize ss_read_data(nghttp3_conn *h, int64_t id, nghttp3_vec *vec, size_t veccnt, uint32_t *pflags,
                                  void *ud, void *sud) {
  (void)veccnt;
  h3_sconn *sc = ud;
  h3_sstream *ss = sud;
  if (!ss || !ss->c) return NGHTTP3_ERR_WOULDBLOCK; /* detached: the stream is being reset */
  amn_call *c = ss->c;
  const amn_st_calls *calls = calls_of(sc);
  bool eof;
  ssize_t n = amn_h3_sendbuf_take(&ss->sb, take_stream, ss, &eof, vec);
  if (n == -3) {
    AMN_WARN("%s: out of memory for a response: resetting the stream", sc->addr);
    ngtcp2_conn_shutdown_stream(sc->b.q, 0, id, NGHTTP3_H3_INTERNAL_ERROR);
  }
  if (n < 0) return NGHTTP3_ERR_WOULDBLOCK;
  if (eof && ss->sb.unacked > AMN_H3_MAX_UNACKED) {
    /* a large last message is out whole: the trailers wait until the
     * client took most of it (as when it went in pieces), so that the call
     * still waits on the client and its stall deadline applies; the
     * stream resumes when acknowledgements bring it under half */
    ss->sb.blocked = true;
    eof = false;
  }
  if (eof) {
    /* the messages are out: the trailers end the stream (without any, as
     * after an HTTP error's text body, the last DATA does) */
    *pflags |= NGHTTP3_DATA_FLAG_EOF;
    amn_hdr_buf b;
    amn_hdr_buf_init(&b);
    nghttp3_nv nva[AMN_RPC_MAX_MD + 12];
    int rc = calls->trailers(c, &b);
    if (rc == 0 && b.n) {
      *pflags |= NGHTTP3_DATA_FLAG_NO_END_STREAM;
      rc = nghttp3_conn_submit_trailers(h, id, nva, amn_h3_nv(&b, nva));
    }
    amn_hdr_buf_free(&b);
    ss->fin_sent = true;
    if (rc != 0) {
      AMN_WARN("%s: cannot send trailers (%d)", sc->addr, rc);
      ngtcp2_conn_shutdown_stream(sc->b.q, 0, id, NGHTTP3_H3_INTERNAL_ERROR);
    } else if (!ss->remote_closed) {
      /* answered before the request ended: the rest is not needed (RFC 9114 4.1) */
      ngtcp2_conn_shutdown_stream_read(sc->b.q, 0, id, NGHTTP3_H3_NO_ERROR);
    }
  }
  return n > 0 ? 1 : 0;
}

static void h3s_kick(void *stream) {
  h3_sstream *ss = stream;
  h3_sconn *sc = ss->sc;
  amn_call *c = ss->c;
  /* also before the handshake completed: the answer to a 0-RTT request */
  if (!c || sc->state >= SC_CLOSING || !sc->b.h) return;
  const amn_st_calls *calls = calls_of(sc);
  amn_st_step step = calls->step(c);
  if (step == AMN_ST_HEADERS || step == AMN_ST_TRAILERS_ONLY) {
    amn_hdr_buf b;
    amn_hdr_buf_init(&b);
    bool trailers_only = step == AMN_ST_TRAILERS_ONLY;
    nghttp3_nv nva[AMN_RPC_MAX_MD + 12];
    nghttp3_data_reader dr = {ss_read_data};
    int rc = calls->headers(c, &b, trailers_only);
    if (rc == 0)
      rc = nghttp3_conn_submit_response(sc->b.h, ss->id, nva, amn_h3_nv(&b, nva), trailers_only ? NULL : &dr);
    amn_hdr_buf_free(&b);
    if (rc != 0) {
      AMN_WARN("%s: cannot send response headers (%d)", sc->addr, rc);
      ngtcp2_conn_shutdown_stream(sc->b.q, 0, ss->id, NGHTTP3_H3_INTERNAL_ERROR);
    } else if (trailers_only && !ss->remote_closed) {
      ngtcp2_conn_shutdown_stream_read(sc->b.q, 0, ss->id, NGHTTP3_H3_NO_ERROR);
    }
    if (trailers_only) ss->fin_sent = true;
  } else if (step == AMN_ST_MORE_DATA) {
    nghttp3_conn_resume_stream(sc->b.h, ss->id);
  }
  amn_h3_mark_dirty(&sc->b);
}

/* Flow control follows the handler: request bytes are granted back once
 * the call core has delivered them (a paused handler holds the client). */
static void h3s_consume(void *stream, size_t n) {
  h3_sstream *ss = stream;
  h3_sconn *sc = ss->sc;
  if (sc->state >= SC_CLOSING) return;
  amn_h3_consume(&sc->b, ss->id, n);
  amn_h3_mark_dirty(&sc->b);
}

/* ------------------------------------------------------------------ */
/* nghttp3 callbacks                                                  */
/* ------------------------------------------------------------------ */

static int on_stream_close(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)h;
  h3_sconn *sc = ud;
  h3_sstream *ss = sud;
  if (ss) {
    ss_detach(ss, code == NGHTTP3_H3_NO_ERROR ? AMN_STATUS_CANCELLED : amn_status_from_h3_error(code),
              "stream reset by the client");
    ss_free(ss);
    amn_h3s_update_keepalive(sc);
  }
  if (ngtcp2_is_bidi_stream(id)) ngtcp2_conn_extend_max_streams_bidi(sc->b.q, 1);
  return 0;
}

static int on_recv_data(nghttp3_conn *h, int64_t id, const uint8_t *data, size_t len, void *ud, void *sud) {
  (void)h;
  h3_sstream *ss = sud;
  if (ss && ss->c) calls_of(ud)->data(ss->c, data, len); /* granted back through h3s_consume */
  else amn_h3_consume(ud, id, len);
  return 0;
}

static int on_begin_headers(nghttp3_conn *h, int64_t id, void *ud, void *sud) {
  (void)sud;
  h3_sconn *sc = ud;
  h3_sstream *ss = calloc(1, sizeof *ss);
  /* before the handshake completed, a request can only come as 0-RTT data */
  bool early = !ngtcp2_conn_get_handshake_completed(sc->b.q);
  amn_call *c = ss ? calls_of(sc)->begin(sc->l->loop->ud, &h3_ops, ss, sc->have_peer ? &sc->peer.id : NULL,
                                         sc->addr, early)
                   : NULL;
  if (!c) {
    free(ss);
    ngtcp2_conn_shutdown_stream(sc->b.q, 0, id, NGHTTP3_H3_INTERNAL_ERROR); /* this stream only */
    return 0;
  }
  calls_of(sc)->attach(c, &sc->budget);
  ss->c = c;
  ss->sc = sc;
  ss->id = id;
  ss->sb.released = released_stream;
  ss->sb.owner = ss;
  if (early) {
    STAT(sc->l, early_calls);
    AMN_DEBUG("%s: request on stream %lld arrived as 0-RTT data", sc->addr, (long long)id);
  }
  ss->next = sc->streams;
  if (sc->streams) sc->streams->prev = ss;
  sc->streams = ss;
  sc->nstreams++;
  nghttp3_conn_set_stream_user_data(h, id, ss);
  ngtcp2_conn_set_stream_user_data(sc->b.q, id, ss);
  /* incremental (RFC 9218): responses share the connection round-robin,
   * a large one never holds small ones back */
  static const nghttp3_pri pri = {NGHTTP3_DEFAULT_URGENCY, 1};
  nghttp3_conn_set_server_stream_priority(h, id, &pri);
  amn_h3s_update_keepalive(sc);
  return 0;
}

static int on_recv_header(nghttp3_conn *h, int64_t id, int32_t token, nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                          uint8_t flags, void *ud, void *sud) {
  (void)h; (void)id; (void)token; (void)flags;
  h3_sstream *ss = sud;
  if (!ss || !ss->c) return 0;
  nghttp3_vec n = nghttp3_rcbuf_get_buf(name), v = nghttp3_rcbuf_get_buf(value);
  calls_of(ud)->header(ss->c, n.base, n.len, v.base, v.len);
  return 0;
}

static int on_end_headers(nghttp3_conn *h, int64_t id, int fin, void *ud, void *sud) {
  (void)h; (void)id;
  h3_sstream *ss = sud;
  if (ss && fin) ss->remote_closed = true; /* no STOP_SENDING for a request that already ended */
  if (ss && ss->c) calls_of(ud)->headers_end(ss->c);
  return 0;
}

static int on_end_stream(nghttp3_conn *h, int64_t id, void *ud, void *sud) {
  (void)h; (void)id;
  h3_sstream *ss = sud;
  if (!ss) return 0;
  ss->remote_closed = true;
  if (ss->c) calls_of(ud)->remote_close(ss->c);
  return 0;
}

const nghttp3_callbacks amn_h3s_h3cbs = {
    .acked_stream_data = amn_h3_on_acked,
    .stream_close = on_stream_close,
    .recv_data = on_recv_data,
    .deferred_consume = amn_h3_on_deferred_consume,
    .begin_headers = on_begin_headers,
    .recv_header = on_recv_header,
    .end_headers = on_end_headers,
    .stop_sending = amn_h3_on_stop_sending,
    .end_stream = on_end_stream,
    .reset_stream = amn_h3_on_reset_stream,
};

/* ------------------------------------------------------------------ */
/* ngtcp2 callbacks about streams                                     */
/* ------------------------------------------------------------------ */

int amn_h3s_q_stream_close(ngtcp2_conn *q, uint32_t flags, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)sud;
  h3_sconn *sc = ud;
  int rv = amn_h3_close_stream(&sc->b, flags, id, code);
  /* a request stream nghttp3 did not know: the client may open another */
  if (rv == 1 && ngtcp2_is_bidi_stream(id)) ngtcp2_conn_extend_max_streams_bidi(q, 1);
  return rv < 0 ? rv : 0;
}

/* The client aborted its request (RESET_STREAM) or does not want the
 * response (STOP_SENDING): a cancellation unless the call already sent its
 * final status (then it is only the answer to our own STOP_SENDING). */
static void client_abort(h3_sconn *sc, int64_t id, h3_sstream *ss, uint64_t code) {
  if (!ss || !ss->c || ss->fin_sent) return;
  ss_detach(ss, code == NGHTTP3_H3_NO_ERROR ? AMN_STATUS_CANCELLED : amn_status_from_h3_error(code),
            "stream reset by the client");
  ngtcp2_conn_shutdown_stream(sc->b.q, 0, id, NGHTTP3_H3_REQUEST_CANCELLED);
}

int amn_h3s_q_stream_reset(ngtcp2_conn *q, int64_t id, uint64_t final, uint64_t code, void *ud, void *sud) {
  (void)q; (void)final;
  h3_sconn *sc = ud;
  if (sc->b.h && nghttp3_conn_shutdown_stream_read(sc->b.h, id) != 0) return NGTCP2_ERR_CALLBACK_FAILURE;
  client_abort(sc, id, sud, code);
  return 0;
}

int amn_h3s_q_stop_sending(ngtcp2_conn *q, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)q;
  client_abort(ud, id, sud, code);
  return 0;
}

/* The client may open more request streams: nghttp3 accepts them. */
int amn_h3s_q_extend_remote_bidi(ngtcp2_conn *q, uint64_t max, void *ud) {
  (void)q;
  h3_sconn *sc = ud;
  if (sc->b.h) nghttp3_conn_set_max_client_streams_bidi(sc->b.h, max);
  return 0;
}

/* ------------------------------------------------------------------ */
/* For the connection (h3_server_conn.c, h3_server.c)                 */
/* ------------------------------------------------------------------ */

/* Keep-alive PINGs while calls are open (a quiet call is not idle, and a
 * dead client is noticed within the idle timeout); a connection without
 * calls stays quiet. It is idle from its last call (or its handshake) on:
 * after idle_timeout_ms it gets GOAWAY and closes, whatever the client
 * sends meanwhile (a client that only PINGs, which restarts QUIC's own idle
 * timer, cannot hold a connection and its max_connections slot). */
void amn_h3s_update_keepalive(h3_sconn *sc) {
  const amn_st_config *cfg = sc->l->loop->cfg;
  uint32_t ka = cfg->keepalive_interval_ms;
  if (sc->state != SC_OPEN || !sc->b.q) return;
  ngtcp2_conn_set_keep_alive_timeout(sc->b.q, ka && sc->nstreams ? (ngtcp2_duration)ka * NGTCP2_MILLISECONDS : 0);
  if (sc->nstreams || !cfg->idle_timeout_ms) {
    ev_timer_stop(sc->b.ev, &sc->idle_timer);
  } else if (!ev_is_active(&sc->idle_timer)) {
    ev_timer_set(&sc->idle_timer, cfg->idle_timeout_ms / 1000.0, 0.);
    ev_timer_start(sc->b.ev, &sc->idle_timer);
  }
}


void amn_h3s_streams_detach_all(h3_sconn *sc, const char *msg) {
  for (h3_sstream *ss = sc->streams; ss; ss = ss->next) ss_detach(ss, AMN_STATUS_UNAVAILABLE, msg);
}

void amn_h3s_streams_fail_all(h3_sconn *sc, const char *msg) {
  for (h3_sstream *ss = sc->streams; ss; ss = ss->next)
    if (ss->c) calls_of(sc)->fail(ss->c, AMN_STATUS_UNAVAILABLE, msg);
}

void amn_h3s_streams_free_all(h3_sconn *sc) {
  while (sc->streams) ss_free(sc->streams);
}
