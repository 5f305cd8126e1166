/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/2 transport, server side: maps nghttp2 session events of one
 * connection onto the transport-independent call core, which it knows only
 * through transport/stransport.h.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transport/h2/h2_server.h"
#include "transport/h2/h2io.h"
#include "util/log.h"

typedef struct amn_sconn amn_sconn;

/* One request stream: nghttp2's stream user data, the call core's handle. */
typedef struct h2s_stream {
  amn_call *c;
  amn_sconn *sc;
  int32_t id;
  struct h2s_stream *prev, *next; /* the connection's streams, or the loop's free list */
} h2s_stream;

/* The binding's state of one loop. */
typedef struct h2s_loop {
  amn_sconn *conns;
  h2s_stream *free;            /* recycled stream records (no allocation per call) */
  size_t nfree;
} h2s_loop;
#define H2S_FREE_MAX 1024

struct amn_sconn {
  amn_h2io io;                 /* first: the io pointer is the connection */
  amn_st_loop *loop;
  h2s_loop *hl;
  struct amn_sconn *prev, *next;
  h2s_stream *streams;         /* open calls */
  amn_peer_store peer;
  bool have_peer;
  bool goaway;
  int32_t goaway_last;         /* the last stream id our GOAWAY announced: later streams never run */
  bool drain_notice;           /* a drain's first GOAWAY (2^31-1) is out; the final one follows the PING's ack */
  bool refusing;               /* over max_connections: GOAWAY once TLS is up */
  char addr[64];
  ev_timer idle_timer;         /* idle_timeout_ms without open calls */
  ev_timer ka_timer;           /* keepalive: PING when quiet, then the deadline of its ack */
  ev_tstamp ping_sent;         /* our PING awaiting its ack (0 = none) */
  ev_tstamp last_ping_rx;      /* the client's previous PING (0 = none since our last response frame) */
  int ping_strikes;
  amn_st_budget budget;        /* what the calls of this connection may hold in memory */
};

#define AMN_MAX_PING_STRIKES 2  /* grpc's default: the third bad PING ends the connection */
#define AMN_GOAWAY_LINGER_S 2.0 /* after a GOAWAY we send, wait this long for the client to close */

static void h2s_kick(void *stream);
static void h2s_consume(void *stream, size_t n);
static const amn_st_stream_ops h2_ops = {h2s_kick, h2s_consume, AMN_TRANSPORT_H2};

static const amn_st_calls *calls_of(const amn_sconn *sc) { return sc->loop->calls; }
static const amn_st_config *cfg_of(const amn_sconn *sc) { return sc->loop->cfg; }

static h2s_loop *loop_state(amn_st_loop *loop) {
  if (!loop->h2) loop->h2 = calloc(1, sizeof(h2s_loop));
  return loop->h2;
}

static void conns_link(h2s_loop *hl, amn_sconn *sc) {
  amn_sconn *head = hl->conns;
  sc->prev = NULL;
  sc->next = head;
  if (head) head->prev = sc;
  hl->conns = sc;
  sc->loop->nconns++;
}

static void conns_unlink(h2s_loop *hl, amn_sconn *sc) {
  if (sc->prev) sc->prev->next = sc->next;
  else hl->conns = sc->next;
  if (sc->next) sc->next->prev = sc->prev;
}

static h2s_stream *stream_new(amn_sconn *sc, int32_t id) {
  h2s_stream *ss = sc->hl->free;
  if (ss) {
    sc->hl->free = ss->next;
    sc->hl->nfree--;
  } else if (!(ss = malloc(sizeof *ss))) {
    return NULL;
  }
  ss->c = NULL;
  ss->sc = sc;
  ss->id = id;
  ss->prev = NULL;
  ss->next = sc->streams;
  if (sc->streams) sc->streams->prev = ss;
  sc->streams = ss;
  return ss;
}

/* The stream leaves its connection (its call is already detached). */
static void stream_free(amn_sconn *sc, h2s_stream *ss) {
  if (ss->prev) ss->prev->next = ss->next;
  else if (sc->streams == ss) sc->streams = ss->next;
  if (ss->next) ss->next->prev = ss->prev;
  if (sc->hl->nfree < H2S_FREE_MAX) {
    ss->next = sc->hl->free;
    sc->hl->free = ss;
    sc->hl->nfree++;
  } else {
    free(ss);
  }
}

ssize_t amn_h2s_read_cb(nghttp2_session *, int32_t, uint8_t *, size_t, uint32_t *, nghttp2_data_source *, void *);

/* GOAWAY (last stream = the last one we processed, so the client knows
 * which calls never ran), then close once it is out. */
static void goaway_close(amn_sconn *sc, uint32_t code, const char *debug, const char *reason) {
  if (sc->io.state != AMN_IO_OPEN || !sc->io.h2) return;
  if (!sc->goaway) {
    sc->goaway_last = nghttp2_session_get_last_proc_stream_id(sc->io.h2);
    nghttp2_submit_goaway(sc->io.h2, NGHTTP2_FLAG_NONE, sc->goaway_last, code, (const uint8_t *)debug, strlen(debug));
  }
  sc->goaway = true;
  amn_h2io_close_linger(&sc->io, reason, AMN_GOAWAY_LINGER_S);
}

#define DRAIN_PING "amndrain" /* the opaque data of a drain's PING (8 bytes) */
static void drain_final(amn_sconn *sc);
static void drain_begin(amn_sconn *sc);

/* Idle: armed while the connection has no open call; its write buffer is
 * freed after the next complete flush (h2io). */
static void idle_arm(amn_sconn *sc) {
  sc->io.idle = !sc->streams;
  uint32_t ms = cfg_of(sc)->idle_timeout_ms;
  if (!ms || sc->streams || sc->goaway || sc->io.state != AMN_IO_OPEN) return;
  ev_timer_stop(sc->loop->ev, &sc->idle_timer);
  ev_timer_set(&sc->idle_timer, ms / 1000.0, 0.);
  ev_timer_start(sc->loop->ev, &sc->idle_timer);
}

static void idle_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_sconn *sc = w->data;
  if (sc->streams) return;
  AMN_DEBUG("%s: no call for %u ms: closing the idle connection", sc->addr, cfg_of(sc)->idle_timeout_ms);
  goaway_close(sc, NGHTTP2_NO_ERROR, "idle timeout", "idle timeout");
}

static double ka_timeout_s(const amn_st_config *cfg) {
  uint32_t ms = cfg->keepalive_timeout_ms;
  if (!ms) ms = cfg->keepalive_interval_ms > 5000 ? cfg->keepalive_interval_ms : 5000;
  return ms / 1000.0;
}

/* Keepalive: a connection quiet for an interval gets a PING; anything
 * received afterwards (the ack, or other frames) proves the client alive. */
static void ka_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)revents;
  amn_sconn *sc = w->data;
  const amn_st_config *cfg = cfg_of(sc);
  if (sc->io.state != AMN_IO_OPEN || !sc->io.h2 || sc->io.close_requested) return;
  ev_tstamp now = AMN_H2_NOW(ev), iv = cfg->keepalive_interval_ms / 1000.0, to = ka_timeout_s(cfg);
  if (sc->ping_sent > 0 && sc->io.last_rx > sc->ping_sent) sc->ping_sent = 0;
  if (sc->ping_sent > 0) {
    if (now - sc->ping_sent >= to - 0.001) {
      AMN_WARN("%s: keepalive: PING not acknowledged within %.0f ms: closing the connection", sc->addr, to * 1000);
      amn_h2io_close(&sc->io, "keepalive timeout");
      return;
    }
    w->repeat = sc->ping_sent + to - now;
  } else if (now - sc->io.last_rx >= iv - 0.001) {
    static const uint8_t opaque[8] = {'a', 'm', 'n', '-', 'k', 'a', 0, 0};
    nghttp2_submit_ping(sc->io.h2, NGHTTP2_FLAG_NONE, opaque);
    amn_h2io_mark_dirty(&sc->io);
    sc->ping_sent = now;
    w->repeat = to;
  } else {
    w->repeat = iv - (now - sc->io.last_rx);
  }
  ev_timer_again(ev, w);
}

/* A PING from the client: the abuse policy of grpc doc/keepalive.md. */
static void ping_received(amn_sconn *sc) {
  const amn_st_config *o = cfg_of(sc);
  ev_tstamp now = AMN_H2_NOW(sc->loop->ev);
  if (!o->ping_min_interval_ms || sc->ping_strikes > AMN_MAX_PING_STRIKES) return; /* (already told once) */
  bool bad = (!sc->streams && !o->ping_permit_without_calls) ||
             (sc->last_ping_rx > 0 && now - sc->last_ping_rx < o->ping_min_interval_ms / 1000.0);
  sc->last_ping_rx = now;
  if (!bad || ++sc->ping_strikes <= AMN_MAX_PING_STRIKES) return;
  AMN_WARN("%s: too many PINGs (more often than every %u ms%s): GOAWAY ENHANCE_YOUR_CALM too_many_pings", sc->addr,
           o->ping_min_interval_ms, o->ping_permit_without_calls ? "" : ", or without calls");
  goaway_close(sc, NGHTTP2_ENHANCE_YOUR_CALM, "too_many_pings", "too many pings");
}

static int submit_hdrs(amn_sconn *sc, h2s_stream *ss, const amn_hdr_buf *b, bool with_data) {
  nghttp2_nv nva[AMN_RPC_MAX_MD + 13];
  size_t n = amn_h2_nv(b, nva);
  const amn_st_config *cfg = cfg_of(sc);
  if (cfg->alt_svc_len)
    nva[n++] = (nghttp2_nv){(uint8_t *)"alt-svc", (uint8_t *)cfg->alt_svc, 7, cfg->alt_svc_len,
                            NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
  nghttp2_data_provider prd;
  prd.source.ptr = ss;
  prd.read_callback = amn_h2s_read_cb;
  return nghttp2_submit_response(sc->io.h2, ss->id, nva, n, with_data ? &prd : NULL);
}

static int submit_trailer_block(amn_sconn *sc, h2s_stream *ss, const amn_hdr_buf *b) {
  nghttp2_nv nva[AMN_RPC_MAX_MD + 12];
  size_t n = amn_h2_nv(b, nva);
  return nghttp2_submit_trailer(sc->io.h2, ss->id, nva, n);
}

ssize_t amn_h2s_read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud) {
  (void)s; (void)sid;
  amn_sconn *sc = ud;
  h2s_stream *ss = src->ptr;
  amn_call *c = ss->c;
  (void)buf;
  if (!c) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* detached: the stream is being reset */
  const amn_st_calls *calls = calls_of(sc);
  bool eof;
  /* the bytes are copied straight from the message queue into the write
   * buffer by send_data_cb: no intermediate copy in nghttp2's frame buffer */
  ssize_t n = calls->peek(c, len, &eof);
  if (n < 0) return NGHTTP2_ERR_DEFERRED;
  if (n > 0) *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    amn_hdr_buf b;
    amn_hdr_buf_init(&b);
    int rc = calls->trailers(c, &b);
    /* no trailers (an HTTP error's text body): the last DATA ends the stream */
    if (rc == 0 && b.n) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      rc = submit_trailer_block(sc, ss, &b);
    }
    amn_hdr_buf_free(&b);
    if (rc != 0) {
      AMN_WARN("%s: cannot send trailers: %s", sc->addr, rc < 0 ? nghttp2_strerror(rc) : "header error");
      nghttp2_submit_rst_stream(sc->io.h2, NGHTTP2_FLAG_NONE, ss->id, NGHTTP2_INTERNAL_ERROR);
    }
  }
  return n;
}

static int send_data_cb(nghttp2_session *s, nghttp2_frame *f, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *src, void *ud) {
  (void)s; (void)f;
  amn_sconn *sc = ud;
  uint8_t *p = amn_h2io_out_reserve(&sc->io, 9 + length);
  if (!p) return NGHTTP2_ERR_CALLBACK_FAILURE;
  memcpy(p, framehd, 9);
  bool eof;
  h2s_stream *ss = src->ptr;
  if (!ss->c || calls_of(sc)->pull(ss->c, p + 9, length, &eof) != (ssize_t)length) return NGHTTP2_ERR_CALLBACK_FAILURE;
  /* enough for one flush: let the writer catch up before more frames */
  return sc->io.out_len >= AMN_IO_WBUF_HIGH ? NGHTTP2_ERR_PAUSE : 0;
}

static void h2s_kick(void *stream) {
  h2s_stream *ss = stream;
  amn_sconn *sc = ss->sc;
  if (!ss->c || sc->io.state != AMN_IO_OPEN) return;
  const amn_st_calls *calls = calls_of(sc);
  amn_st_step step = calls->step(ss->c);
  if (step == AMN_ST_HEADERS || step == AMN_ST_TRAILERS_ONLY) {
    amn_hdr_buf b;
    amn_hdr_buf_init(&b);
    bool trailers_only = step == AMN_ST_TRAILERS_ONLY;
    int rc = calls->headers(ss->c, &b, trailers_only);
    if (rc == 0) rc = submit_hdrs(sc, ss, &b, !trailers_only);
    amn_hdr_buf_free(&b);
    if (rc != 0) {
      AMN_WARN("%s: cannot send response headers (%d)", sc->addr, rc);
      nghttp2_submit_rst_stream(sc->io.h2, NGHTTP2_FLAG_NONE, ss->id, NGHTTP2_INTERNAL_ERROR);
    }
  } else if (step == AMN_ST_MORE_DATA) {
    nghttp2_session_resume_data(sc->io.h2, ss->id);
  }
  amn_h2io_mark_dirty(&sc->io);
}

/* Flow control is manual (no automatic WINDOW_UPDATE): request bytes are
 * granted back only once the handler has taken them, so a handler that
 * pauses receiving really stops the client. */
static void h2s_consume(void *stream, size_t n) {
  h2s_stream *ss = stream;
  amn_sconn *sc = ss->sc;
  if (sc->io.state != AMN_IO_OPEN) return;
  nghttp2_session_consume(sc->io.h2, ss->id, n);
  amn_h2io_mark_dirty(&sc->io);
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  amn_sconn *sc = ud;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (sc->goaway && f->hd.stream_id > sc->goaway_last) {
    /* opened before our GOAWAY reached the client, above the id it
     * announces: the client will send it elsewhere, so it must not run
     * here too (nghttp2 refuses such streams only once the GOAWAY is out) */
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
    return 0;
  }
  h2s_stream *ss = stream_new(sc, f->hd.stream_id);
  if (!ss) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
  ss->c = calls_of(sc)->begin(sc->loop->ud, &h2_ops, ss, sc->have_peer ? &sc->peer.id : NULL, sc->addr, false);
  if (!ss->c) {
    stream_free(sc, ss);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  calls_of(sc)->attach(ss->c, &sc->budget);
  ev_timer_stop(sc->loop->ev, &sc->idle_timer);
  sc->io.idle = false;
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, ss);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud) {
  (void)flags;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  h2s_stream *ss = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (ss && ss->c) calls_of(ud)->header(ss->c, name, nlen, value, vlen);
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  amn_sconn *sc = ud;
  if (f->hd.type == NGHTTP2_PING) {
    if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) ping_received(sc);
    else if (sc->drain_notice && memcmp(f->ping.opaque_data, DRAIN_PING, 8) == 0) drain_final(sc);
    else sc->ping_sent = 0;
    return 0;
  }
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  h2s_stream *ss = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!ss || !ss->c) return 0;
  const amn_st_calls *calls = calls_of(sc);
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) calls->headers_end(ss->c);
  if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && ss->c) calls->remote_close(ss->c);
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                         void *ud) {
  (void)flags;
  h2s_stream *ss = nghttp2_session_get_stream_user_data(s, sid);
  if (ss && ss->c) calls_of(ud)->data(ss->c, data, len);
  else nghttp2_session_consume(s, sid, len);
  return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  amn_sconn *sc = ud;
  /* every GOAWAY with an error is logged once, also those nghttp2 decides
   * on its own (e.g. too many stream resets: INTERNAL_ERROR) */
  if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR)
    AMN_INFO("%s: GOAWAY %s (last stream %d)%s%.*s", sc->addr, nghttp2_http2_strerror(f->goaway.error_code),
             f->goaway.last_stream_id, f->goaway.opaque_data_len ? ": " : "", (int)f->goaway.opaque_data_len,
             f->goaway.opaque_data ? (const char *)f->goaway.opaque_data : "");
  /* ping policy: a response frame makes the client's next PING legitimate */
  if (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) {
    sc->ping_strikes = 0;
    sc->last_ping_rx = 0;
  }
  /* Final status sent while the client is still sending (error before the
   * request ended): tell it to stop with RST_STREAM(NO_ERROR). */
  if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
      nghttp2_session_get_stream_remote_close(s, f->hd.stream_id) == 0)
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud) {
  amn_sconn *sc = ud;
  h2s_stream *ss = nghttp2_session_get_stream_user_data(s, sid);
  if (!ss) return 0;
  nghttp2_session_set_stream_user_data(s, sid, NULL);
  amn_call *c = ss->c;
  ss->c = NULL;
  stream_free(sc, ss);
  if (c) {
    amn_status_code why = err == NGHTTP2_NO_ERROR ? AMN_STATUS_CANCELLED : amn_status_from_h2_error(err);
    /* bytes held for a paused handler still count against the connection window */
    size_t held = calls_of(sc)->closed(c, why, "stream reset by the client");
    if (held) nghttp2_session_consume_connection(s, held);
  }
  if (!sc->streams) idle_arm(sc);
  return 0;
}

static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_opt;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_cbs(void) {
  nghttp2_session_callbacks_new(&g_cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(g_cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(g_cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(g_cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(g_cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, on_stream_close);
  nghttp2_session_callbacks_set_send_data_callback(g_cbs, send_data_cb);
  nghttp2_option_new(&g_opt);
  /* without this, a peer could make us answer endless SETTINGS/PING with
   * unbounded outbound queues */
  nghttp2_option_set_max_outbound_ack(g_opt, 1000);
  nghttp2_option_set_no_auto_window_update(g_opt, 1);
  /* nghttp2 otherwise keeps up to max_concurrent_streams closed streams per
   * connection for RFC 7540 priorities (gRPC sends none): about 250 KiB per
   * connection after a thousand calls, for nothing */
  nghttp2_option_set_no_closed_streams(g_opt, 1);
}

/* ---- connection lifecycle ---- */

static int sc_on_ready(amn_h2io *io) {
  amn_sconn *sc = (amn_sconn *)io;
  const amn_st_config *cfg = cfg_of(sc);
  if (sc->refusing) {
    /* SETTINGS, then GOAWAY: the client reads the reason and nothing ran */
    pthread_once(&g_once, init_cbs);
    if (nghttp2_session_server_new3(&io->h2, g_cbs, sc, g_opt, AMN_H2_MEM) != 0) return -1;
    nghttp2_submit_settings(io->h2, NGHTTP2_FLAG_NONE, NULL, 0);
    goaway_close(sc, NGHTTP2_ENHANCE_YOUR_CALM, "max_connections reached", "max_connections reached");
    return 0;
  }
  if (io->tls) {
    if (!amn_tls_alpn_is(io->tls, "h2")) {
      AMN_INFO("%s: refused: client did not negotiate ALPN h2", sc->addr);
      snprintf(io->close_reason, sizeof io->close_reason, "no ALPN h2");
      io->close_requested = true;
      return -1;
    }
    if (amn_tls_peer_identity(io->tls, &sc->peer) == 0) sc->have_peer = true;
    AMN_DEBUG("%s: mTLS connection from %s", sc->addr, sc->have_peer ? sc->peer.id.subject : "?");
  }
  pthread_once(&g_once, init_cbs);
  if (nghttp2_session_server_new3(&io->h2, g_cbs, sc, g_opt, AMN_H2_MEM) != 0) return -1;
  amn_st_count(&sc->loop->conn.h2_handshakes, 1);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64 * 1024},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 0},
  };
  nghttp2_submit_settings(io->h2, NGHTTP2_FLAG_NONE, iv, 3);
  /* connection window: room for many streams' windows at once */
  int32_t conn_win = cfg->initial_window_size > (1u << 26) / 16 ? (1 << 30) : (int32_t)(cfg->initial_window_size * 16);
  nghttp2_session_set_local_window_size(io->h2, NGHTTP2_FLAG_NONE, 0, conn_win);
  amn_st_budget_init(&sc->budget, cfg, (size_t)conn_win);
  if (sc->loop->stopping) drain_begin(sc); /* its handshake ended during a drain: the same two steps */
  idle_arm(sc);
  if (cfg->keepalive_interval_ms) {
    ev_timer_set(&sc->ka_timer, 0., cfg->keepalive_interval_ms / 1000.0);
    ev_timer_again(sc->loop->ev, &sc->ka_timer);
  }
  return 0;
}

static void sc_on_closed(amn_h2io *io, const char *reason) {
  amn_sconn *sc = (amn_sconn *)io;
  amn_st_loop *loop = sc->loop;
  bool handshake_failure = strncmp(reason, "TLS handshake", 13) == 0;
  ev_timer_stop(loop->ev, &sc->idle_timer);
  ev_timer_stop(loop->ev, &sc->ka_timer);
  bool timed_out = handshake_failure && strcmp(reason, "TLS handshake timed out") == 0;
  if (!sc->refusing) { /* never ready (no session): its handshake failed */
    amn_st_count(&loop->conn.h2_closed, 1);
    if (!io->h2) amn_st_count(timed_out ? &loop->conn.h2_handshake_timeouts : &loop->conn.h2_handshake_failures, 1);
  }
  if (timed_out)
    AMN_WARN("connection from %s refused: %s (handshake_timeout_ms %u)", sc->addr, reason,
             loop->cfg->handshake_timeout_ms);
  else if (handshake_failure)
    AMN_WARN("connection from %s refused: %s", sc->addr, reason);
  else
    AMN_DEBUG("connection from %s closed: %s", sc->addr, reason);
  /* calls still open end as UNAVAILABLE (connection lost) */
  while (sc->streams) {
    h2s_stream *ss = sc->streams;
    amn_call *c = ss->c;
    ss->c = NULL;
    if (io->h2) nghttp2_session_set_stream_user_data(io->h2, ss->id, NULL);
    stream_free(sc, ss);
    if (c) loop->calls->closed(c, AMN_STATUS_UNAVAILABLE, "connection closed");
  }
  if (io->h2) nghttp2_session_del(io->h2);
  io->h2 = NULL;
  if (io->tls) gnutls_deinit(io->tls);
  io->tls = NULL;
  if (sc->have_peer) amn_peer_store_free(&sc->peer);
  conns_unlink(sc->hl, sc);
  atomic_fetch_sub(sc->refusing ? &loop->counters->nrefusing : &loop->counters->nconns, 1);
  free(sc);
  amn_st_conn_gone(loop);
}

static const amn_h2io_cbs sc_cbs = {sc_on_ready, sc_on_closed};

static void sconn_start(amn_st_loop *loop, int fd, const char *peer_addr, bool refusing) {
  const amn_st_config *cfg = loop->cfg;
  h2s_loop *hl = loop_state(loop);
  amn_sconn *sc = hl ? calloc(1, sizeof *sc) : NULL;
  if (!sc) {
    amn_h2io_close_fd(fd);
    return;
  }
  sc->loop = loop;
  sc->hl = hl;
  sc->refusing = refusing;
  ev_timer_init(&sc->idle_timer, idle_cb, 0., 0.);
  sc->idle_timer.data = sc;
  ev_timer_init(&sc->ka_timer, ka_cb, 0., 0.);
  sc->ka_timer.data = sc;
  snprintf(sc->addr, sizeof sc->addr, "%s", peer_addr);
  sc->io.peer_name = sc->addr;
  gnutls_session_t tls = NULL;
  amn_tls_ctx *ctx = cfg->tls_get(cfg->tls_ud);
  if (ctx) {
    char err[256];
    if (amn_tls_session_new(ctx, &tls, GNUTLS_NONBLOCK, NULL, err, sizeof err) != 0) {
      AMN_ERROR("%s: TLS session setup failed: %s", peer_addr, err);
      amn_h2io_close_fd(fd);
      free(sc);
      return;
    }
  }
  conns_link(hl, sc);
  atomic_fetch_add(refusing ? &loop->counters->nrefusing : &loop->counters->nconns, 1);
  amn_h2io_start(&sc->io, loop->io, &sc_cbs, fd, tls, cfg->handshake_timeout_ms / 1000.0, false);
}

void amn_h2s_accept(amn_st_loop *loop, int fd, const char *peer_addr) { sconn_start(loop, fd, peer_addr, false); }
void amn_h2s_refuse(amn_st_loop *loop, int fd, const char *peer_addr) { sconn_start(loop, fd, peer_addr, true); }

/* A drain in two steps (RFC 9113 6.8): GOAWAY with the last stream id
 * 2^31-1 and a PING; streams the client opens before it sees that GOAWAY
 * still run here. The PING's ack proves the client has seen it: then the
 * final GOAWAY with the last stream processed. A proxy that reuses its
 * connections (nginx, HAProxy) never has a request it already sent refused
 * (it retries no POST), so draining a backend loses no call. */
static void drain_final(amn_sconn *sc) {
  sc->drain_notice = false;
  sc->goaway_last = nghttp2_session_get_last_proc_stream_id(sc->io.h2);
  nghttp2_submit_goaway(sc->io.h2, NGHTTP2_FLAG_NONE, sc->goaway_last, NGHTTP2_NO_ERROR,
                        (const uint8_t *)"server shutting down", 20);
  amn_h2io_mark_dirty(&sc->io);
}

static void drain_begin(amn_sconn *sc) {
  /* once the session is finished: half-close and read until the peer
   * closes too, so that no reset destroys the last responses unread */
  sc->io.linger_s = AMN_GOAWAY_LINGER_S;
  sc->goaway = true;
  sc->goaway_last = INT32_MAX;
  if (nghttp2_submit_shutdown_notice(sc->io.h2) == 0 &&
      nghttp2_submit_ping(sc->io.h2, NGHTTP2_FLAG_NONE, (const uint8_t *)DRAIN_PING) == 0)
    sc->drain_notice = true;
  else
    drain_final(sc);
  amn_h2io_mark_dirty(&sc->io);
}

void amn_h2s_drain_all(amn_st_loop *loop) {
  h2s_loop *hl = loop->h2;
  for (amn_sconn *sc = hl ? hl->conns : NULL; sc; sc = sc->next) {
    /* a TLS handshake in progress completes first (bounded by its
     * timeout): its client may already have sent a request (TLS 1.3), which
     * then runs; the end of the handshake begins its drain */
    if (sc->goaway || sc->io.state == AMN_IO_HANDSHAKE) continue;
    if (sc->io.state != AMN_IO_OPEN || !sc->io.h2) {
      amn_h2io_close(&sc->io, "server stopping");
      continue;
    }
    drain_begin(sc);
  }
}

void amn_h2s_close_all(amn_st_loop *loop) {
  h2s_loop *hl = loop->h2;
  for (amn_sconn *sc = hl ? hl->conns : NULL; sc; sc = sc->next) {
    /* cancel what is left, tell the client, then close */
    for (h2s_stream *ss = sc->streams; ss; ss = ss->next)
      if (ss->c) loop->calls->fail(ss->c, AMN_STATUS_UNAVAILABLE, "server stopped before the call completed");
    amn_h2io_close(&sc->io, "drain deadline reached");
  }
}

#ifdef AMN_TEST_HOOKS
void amn_h2s_test_fire_timers(amn_st_loop *loop) {
  h2s_loop *hl = loop->h2;
  for (amn_sconn *sc = hl ? hl->conns : NULL; sc; sc = sc->next) /* (a close frees later, on the loop) */
    if (ev_is_active(&sc->ka_timer)) ev_invoke(loop->ev, &sc->ka_timer, EV_TIMER);
}
#endif

void amn_h2s_free(amn_st_loop *loop) {
  h2s_loop *hl = loop->h2;
  if (!hl) return;
  while (hl->free) {
    h2s_stream *ss = hl->free;
    hl->free = ss->next;
    free(ss);
  }
  free(hl);
  loop->h2 = NULL;
}
