/*
 * HTTP/2 transport, server side: maps nghttp2 session events of one
 * connection onto the transport-independent call core (server/call.c).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/server_internal.h"
#include "util/log.h"

typedef struct amn_sconn {
  amn_h2io io;                 /* first: the io pointer is the connection */
  amn_srv_loop *sl;
  struct amn_sconn *prev, *next;
  amn_call *calls;             /* open calls */
  amn_peer_store peer;
  bool have_peer;
  bool goaway;
  char addr[64];
} amn_sconn;

static void h2s_kick(amn_call *c);
static void h2s_reset(amn_call *c, uint32_t code);
static void h2s_consume(amn_call *c, size_t n);
static const amn_call_transport h2_tp = {h2s_kick, h2s_reset, h2s_consume};

static void conns_link(amn_srv_loop *sl, amn_sconn *sc) {
  amn_sconn *head = sl->conns;
  sc->prev = NULL;
  sc->next = head;
  if (head) head->prev = sc;
  sl->conns = sc;
  sl->nconns++;
}

static void conns_unlink(amn_srv_loop *sl, amn_sconn *sc) {
  if (sc->prev) sc->prev->next = sc->next;
  else sl->conns = sc->next;
  if (sc->next) sc->next->prev = sc->prev;
  sl->nconns--;
}

static void calls_unlink(amn_sconn *sc, amn_call *c) {
  if (c->conn_prev) c->conn_prev->conn_next = c->conn_next;
  else if (sc->calls == c) sc->calls = c->conn_next;
  if (c->conn_next) c->conn_next->conn_prev = c->conn_prev;
  c->conn_prev = c->conn_next = NULL;
}

ssize_t amn_h2s_read_cb(nghttp2_session *, int32_t, uint8_t *, size_t, uint32_t *, nghttp2_data_source *, void *);

static int submit_hdrs(amn_sconn *sc, amn_call *c, const amn_hdr_buf *b, bool with_data) {
  nghttp2_nv nva[AMN_RPC_MAX_MD + 12];
  size_t n = amn_h2_nv(b, nva);
  nghttp2_data_provider prd;
  prd.source.ptr = c;
  prd.read_callback = amn_h2s_read_cb;
  return nghttp2_submit_response(sc->io.h2, c->stream_id, nva, n, with_data ? &prd : NULL);
}

static int submit_trailer_block(amn_sconn *sc, amn_call *c, const amn_hdr_buf *b) {
  nghttp2_nv nva[AMN_RPC_MAX_MD + 12];
  size_t n = amn_h2_nv(b, nva);
  return nghttp2_submit_trailer(sc->io.h2, c->stream_id, nva, n);
}

ssize_t amn_h2s_read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                        nghttp2_data_source *src, void *ud) {
  (void)s; (void)sid;
  amn_sconn *sc = ud;
  amn_call *c = src->ptr;
  bool eof;
  ssize_t n = amn_call_pull(c, buf, len, &eof);
  if (n < 0) return NGHTTP2_ERR_DEFERRED;
  if (eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    amn_hdr_buf b;
    amn_hdr_buf_init(&b);
    int rc = amn_call_build_trailers(c, &b);
    if (rc == 0) rc = submit_trailer_block(sc, c, &b);
    amn_hdr_buf_free(&b);
    if (rc != 0) {
      AMN_WARN("%s: cannot send trailers: %s", sc->addr, rc < 0 ? nghttp2_strerror(rc) : "header error");
      nghttp2_submit_rst_stream(sc->io.h2, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_INTERNAL_ERROR);
    }
  }
  return n;
}

static void h2s_kick(amn_call *c) {
  amn_sconn *sc = c->conn;
  if (!sc || sc->io.state != AMN_IO_OPEN) return;
  if (!c->headers_sent) {
    amn_hdr_buf b;
    amn_hdr_buf_init(&b);
    bool trailers_only = c->fin_pending && !c->sq_head;
    int rc = amn_call_build_headers(c, &b, trailers_only);
    if (rc == 0) rc = submit_hdrs(sc, c, &b, !trailers_only);
    amn_hdr_buf_free(&b);
    if (rc != 0) {
      AMN_WARN("%s: cannot send response headers (%d)", sc->addr, rc);
      nghttp2_submit_rst_stream(sc->io.h2, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_INTERNAL_ERROR);
    }
    c->data_started = !trailers_only;
  } else if (c->data_started && !c->trailers_sent) {
    nghttp2_session_resume_data(sc->io.h2, c->stream_id);
  }
  amn_h2io_mark_dirty(&sc->io);
}

static void h2s_reset(amn_call *c, uint32_t code) {
  amn_sconn *sc = c->conn;
  if (!sc || sc->io.state != AMN_IO_OPEN) return;
  nghttp2_submit_rst_stream(sc->io.h2, NGHTTP2_FLAG_NONE, c->stream_id, code);
  amn_h2io_mark_dirty(&sc->io);
}

/* Flow control is manual (no automatic WINDOW_UPDATE): request bytes are
 * granted back only once the handler has taken them, so a handler that
 * pauses receiving really stops the client. */
static void h2s_consume(amn_call *c, size_t n) {
  amn_sconn *sc = c->conn;
  if (!sc || sc->io.state != AMN_IO_OPEN) return;
  nghttp2_session_consume(sc->io.h2, c->stream_id, n);
  amn_h2io_mark_dirty(&sc->io);
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  amn_sconn *sc = ud;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  amn_call *c = amn_call_new(sc->sl, &h2_tp, sc, f->hd.stream_id);
  if (!c) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
  c->peer = sc->have_peer ? &sc->peer.id : NULL;
  c->peer_addr = sc->addr;
  c->conn_next = sc->calls;
  if (sc->calls) sc->calls->conn_prev = c;
  sc->calls = c;
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, c);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud) {
  (void)flags; (void)ud;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  amn_call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (c) amn_rpc_req_header(&c->req, name, nlen, value, vlen);
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)ud;
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  amn_call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!c) return 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) amn_call_on_headers_done(c);
  if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) amn_call_on_remote_close(c);
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                         void *ud) {
  (void)flags; (void)ud;
  amn_call *c = nghttp2_session_get_stream_user_data(s, sid);
  if (c) amn_call_on_data(c, data, len);
  else nghttp2_session_consume(s, sid, len);
  return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)ud;
  /* Final status sent while the client is still sending (error before the
   * request ended): tell it to stop with RST_STREAM(NO_ERROR). */
  if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
      nghttp2_session_get_stream_remote_close(s, f->hd.stream_id) == 0)
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud) {
  amn_sconn *sc = ud;
  amn_call *c = nghttp2_session_get_stream_user_data(s, sid);
  if (!c) return 0;
  nghttp2_session_set_stream_user_data(s, sid, NULL);
  calls_unlink(sc, c);
  /* bytes held for a paused handler still count against the connection window */
  if (c->rx_unconsumed) nghttp2_session_consume_connection(s, c->rx_unconsumed);
  c->rx_unconsumed = 0;
  amn_status_code why = err == NGHTTP2_NO_ERROR ? AMN_STATUS_CANCELLED : amn_status_from_h2_error(err);
  amn_call_on_stream_closed(c, why, "stream reset by the client");
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
  nghttp2_option_new(&g_opt);
  /* without this, a peer could make us answer endless SETTINGS/PING with
   * unbounded outbound queues */
  nghttp2_option_set_max_outbound_ack(g_opt, 1000);
  nghttp2_option_set_no_auto_window_update(g_opt, 1);
}

/* ---- connection lifecycle ---- */

static int sc_on_ready(amn_h2io *io) {
  amn_sconn *sc = (amn_sconn *)io;
  amn_server *srv = sc->sl->srv;
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
  if (nghttp2_session_server_new2(&io->h2, g_cbs, sc, g_opt) != 0) return -1;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->o.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, srv->o.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64 * 1024},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 0},
  };
  nghttp2_submit_settings(io->h2, NGHTTP2_FLAG_NONE, iv, 3);
  /* connection window: room for many streams' windows at once */
  int32_t conn_win = srv->o.initial_window_size > (1u << 26) / 16 ? (1 << 30) : (int32_t)(srv->o.initial_window_size * 16);
  nghttp2_session_set_local_window_size(io->h2, NGHTTP2_FLAG_NONE, 0, conn_win);
  if (sc->sl->stopping) {
    nghttp2_submit_goaway(io->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, (const uint8_t *)"draining", 8);
    sc->goaway = true;
  }
  return 0;
}

static void sc_on_closed(amn_h2io *io, const char *reason) {
  amn_sconn *sc = (amn_sconn *)io;
  amn_srv_loop *sl = sc->sl;
  bool handshake_failure = strncmp(reason, "TLS handshake", 13) == 0;
  if (handshake_failure)
    AMN_WARN("connection from %s refused: %s", sc->addr, reason);
  else
    AMN_DEBUG("connection from %s closed: %s", sc->addr, reason);
  /* calls still open end as UNAVAILABLE (connection lost) */
  while (sc->calls) {
    amn_call *c = sc->calls;
    calls_unlink(sc, c);
    if (io->h2) nghttp2_session_set_stream_user_data(io->h2, c->stream_id, NULL);
    amn_call_on_stream_closed(c, AMN_STATUS_UNAVAILABLE, "connection closed");
  }
  if (io->h2) nghttp2_session_del(io->h2);
  io->h2 = NULL;
  if (io->tls) gnutls_deinit(io->tls);
  io->tls = NULL;
  if (sc->have_peer) amn_peer_store_free(&sc->peer);
  conns_unlink(sl, sc);
  atomic_fetch_sub(&sl->srv->nconns, 1);
  free(sc);
  if (sl->stopping && sl->nconns == 0) ev_break(sl->ev, EVBREAK_ONE);
}

static const amn_h2io_cbs sc_cbs = {sc_on_ready, sc_on_closed};

void amn_h2s_accept(amn_srv_loop *sl, int fd, const char *peer_addr) {
  amn_server *srv = sl->srv;
  amn_sconn *sc = calloc(1, sizeof *sc);
  if (!sc) {
    close(fd);
    return;
  }
  sc->sl = sl;
  snprintf(sc->addr, sizeof sc->addr, "%s", peer_addr);
  sc->io.peer_name = sc->addr;
  gnutls_session_t tls = NULL;
  if (srv->tls) {
    char err[256];
    if (amn_tls_session_new(srv->tls, &tls, GNUTLS_NONBLOCK, NULL, err, sizeof err) != 0) {
      AMN_ERROR("%s: TLS session setup failed: %s", peer_addr, err);
      close(fd);
      free(sc);
      return;
    }
  }
  conns_link(sl, sc);
  atomic_fetch_add(&srv->nconns, 1);
  amn_h2io_start(&sc->io, &sl->io, &sc_cbs, fd, tls, 10.0, false);
}

void amn_h2s_drain_all(amn_srv_loop *sl) {
  for (amn_sconn *sc = sl->conns; sc; sc = sc->next) {
    if (sc->goaway) continue;
    if (sc->io.state != AMN_IO_OPEN || !sc->io.h2) {
      amn_h2io_close(&sc->io, "server stopping");
      continue;
    }
    sc->goaway = true;
    nghttp2_submit_goaway(sc->io.h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(sc->io.h2),
                          NGHTTP2_NO_ERROR, (const uint8_t *)"server shutting down", 20);
    amn_h2io_mark_dirty(&sc->io);
  }
}

void amn_h2s_close_all(amn_srv_loop *sl) {
  for (amn_sconn *sc = sl->conns; sc; sc = sc->next) {
    /* cancel what is left, tell the client, then close */
    for (amn_call *c = sc->calls; c; c = c->conn_next)
      amn_call_fail(c, AMN_STATUS_UNAVAILABLE, "server stopped before the call completed");
    amn_h2io_close(&sc->io, "drain deadline reached");
  }
}
