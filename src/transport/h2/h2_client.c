/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/2 transport, client side: connection establishment (TCP connect
 * trying every resolved address, TLS, ALPN h2), the mapping of nghttp2
 * stream events onto the client binding's callbacks (transport/ctransport.h,
 * with what the core needs to retry safely: was the request sent, did a
 * GOAWAY or REFUSED_STREAM prove it never ran), and keepalive PINGs.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/h2/h2_client.h"
#include "transport/h2/h2io.h"
#include "util/log.h"

typedef enum { CC_CONNECTING, CC_HANDSHAKE, CC_READY, CC_CLOSED } cc_state;

typedef struct amn_h2c_conn amn_h2c_conn;

/* One call's stream (the handle the core holds; nghttp2's stream user
 * data). Kept on a per-connection free list: no allocation per call once
 * the connection has carried as many calls at once. */
typedef struct h2c_stream {
  amn_ct_call *call;      /* NULL once the core let go (cancel) */
  amn_h2c_conn *cc;
  int32_t id;
  bool hdr_sent;          /* request HEADERS went out: the server may have run it */
  bool unprocessed;       /* the server says it never processed the stream (GOAWAY) */
  struct h2c_stream *prev, *next; /* cc->live, or cc->spare */
} h2c_stream;

struct amn_h2c_conn {
  amn_h2io io;            /* first */
  amn_ct_client *tc;
  const amn_ct_conn_cbs *cb;
  void *owner;            /* the pool's handle (NULL once reported closed) */
  amn_ct_endpoint *ep;
  cc_state st;
  struct addrinfo *ai, *cur;
  ev_io cw;               /* connect completion */
  ev_timer ct;            /* connect + handshake deadline */
  h2c_stream *live;       /* streams open */
  h2c_stream *spare;      /* freed streams, for the next calls */
  bool goaway;
  bool got_settings;      /* the server's SETTINGS arrived: it speaks HTTP/2 (the pool may use it) */
  ev_timer ka;            /* keepalive */
  ev_tstamp ping_sent;    /* our PING awaiting its ack (0 = none) */
  char last_err[200];
  char goaway_why[480];
};

static void streams_link(h2c_stream **head, h2c_stream *s) {
  s->prev = NULL;
  s->next = *head;
  if (*head) (*head)->prev = s;
  *head = s;
}
static void streams_unlink(h2c_stream **head, h2c_stream *s) {
  if (s->prev) s->prev->next = s->next;
  else if (*head == s) *head = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = NULL;
}

static bool h2c_ready(const void *p) {
  const amn_h2c_conn *cc = p;
  return cc && cc->st == CC_READY && cc->got_settings && !cc->goaway;
}

static uint32_t h2c_max_streams(const void *p) {
  const amn_h2c_conn *cc = p;
  if (!h2c_ready(cc)) return 0;
  return nghttp2_session_get_remote_settings(cc->io.h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

static void h2c_close(void *conn, const char *why);

/* The stream is over for nghttp2: back to the free list. */
static void stream_release(amn_h2c_conn *cc, h2c_stream *st) {
  streams_unlink(&cc->live, st);
  if (cc->io.h2) nghttp2_session_set_stream_user_data(cc->io.h2, st->id, NULL);
  st->call = NULL;
  streams_link(&cc->spare, st);
}

/* The stream lets go of its call: the last callback for it. */
static void call_closed(amn_h2c_conn *cc, h2c_stream *st, const amn_ct_end *end) {
  amn_ct_call *c = st->call;
  st->call = NULL;
  if (c) cc->tc->call_cbs->closed(c, end);
}

/* The live call of a stream of nghttp2's, or NULL. */
static h2c_stream *stream_of(nghttp2_session *s, int32_t sid) {
  h2c_stream *st = nghttp2_session_get_stream_user_data(s, sid);
  return st && st->call ? st : NULL;
}

/* ---- nghttp2 callbacks ---- */

static ssize_t read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud) {
  (void)src;
  amn_h2c_conn *cc = ud;
  h2c_stream *st = stream_of(s, sid);
  if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the core let go of it: reset */
  (void)buf;
  bool eof;
  ssize_t n = cc->tc->call_cbs->peek(st->call, len, &eof); /* copied by send_data_cb, straight into the write buffer */
  if (n < 0) return NGHTTP2_ERR_DEFERRED;
  if (n > 0) *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (eof) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return n;
}

static int send_data_cb(nghttp2_session *s, nghttp2_frame *f, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *src, void *ud) {
  (void)src;
  amn_h2io *io = ud; /* the connection starts with its amn_h2io */
  amn_h2c_conn *cc = ud;
  h2c_stream *st = stream_of(s, f->hd.stream_id);
  if (!st) return NGHTTP2_ERR_CALLBACK_FAILURE;
  uint8_t *p = amn_h2io_out_reserve(io, 9 + length);
  if (!p) return NGHTTP2_ERR_CALLBACK_FAILURE;
  memcpy(p, framehd, 9);
  bool eof;
  if (cc->tc->call_cbs->pull(st->call, p + 9, length, &eof) != (ssize_t)length) return NGHTTP2_ERR_CALLBACK_FAILURE;
  return io->out_len >= AMN_IO_WBUF_HIGH ? NGHTTP2_ERR_PAUSE : 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud) {
  (void)flags;
  amn_h2c_conn *cc = ud;
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  h2c_stream *st = stream_of(s, f->hd.stream_id);
  if (st) cc->tc->call_cbs->header(st->call, name, nlen, value, vlen);
  return 0;
}

static void on_goaway(amn_h2c_conn *cc, const nghttp2_goaway *g) {
  bool error = g->error_code != NGHTTP2_NO_ERROR;
  char dbg[120];
  size_t dl = g->opaque_data_len < sizeof dbg - 1 ? g->opaque_data_len : sizeof dbg - 1;
  for (size_t i = 0; i < dl; i++) dbg[i] = g->opaque_data[i] >= 0x20 && g->opaque_data[i] < 0x7f ? (char)g->opaque_data[i] : '?';
  dbg[dl] = 0;
  if (error)
    snprintf(cc->goaway_why, sizeof cc->goaway_why, "%s %s the connection: %s (GOAWAY %s)", cc->ep->authority,
             g->last_stream_id ? "ended" : "refused", dl ? dbg : "no reason given",
             nghttp2_http2_strerror(g->error_code));
  else
    snprintf(cc->goaway_why, sizeof cc->goaway_why, "%s is closing the connection (GOAWAY: %s)", cc->ep->authority,
             dl ? dbg : "no reason given");
  if (error) AMN_WARN("%s", cc->goaway_why);
  else AMN_DEBUG("%s (last stream %d)", cc->goaway_why, g->last_stream_id);
  /* streams above the last one the server processed never ran anywhere */
  for (h2c_stream *st = cc->live; st; st = st->next)
    if (st->id > g->last_stream_id) st->unprocessed = true;
  if (g->error_code == NGHTTP2_ENHANCE_YOUR_CALM && dl == 14 && memcmp(dbg, "too_many_pings", 14) == 0 && cc->owner)
    cc->cb->too_many_pings(cc->owner);
  if (!cc->goaway && cc->owner) {
    cc->goaway = true; /* no new calls here; the pool replaces the connection */
    cc->cb->goaway(cc->owner, error, cc->goaway_why);
  }
  cc->goaway = true;
}

static void ka_start(amn_h2c_conn *cc);

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  amn_h2c_conn *cc = ud;
  if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && !cc->got_settings) {
    /* the HTTP/2 handshake is complete: the pool may send calls */
    cc->got_settings = true;
    ev_timer_stop(cc->tc->ev, &cc->ct);
    ka_start(cc);
    if (cc->owner && !cc->goaway) cc->cb->ready(cc->owner, false);
    return 0;
  }
  if (f->hd.type == NGHTTP2_PING) {
    if (f->hd.flags & NGHTTP2_FLAG_ACK) cc->ping_sent = 0;
    return 0;
  }
  if (f->hd.type == NGHTTP2_GOAWAY) {
    on_goaway(cc, &f->goaway);
    return 0;
  }
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  h2c_stream *st = stream_of(s, f->hd.stream_id);
  if (!st) return 0;
  if (f->hd.type == NGHTTP2_HEADERS) cc->tc->call_cbs->headers_end(st->call, f->headers.cat != NGHTTP2_HCAT_RESPONSE);
  if ((f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->call) call_closed(cc, st, NULL); /* the response is complete */
  return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)ud;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  h2c_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (st) st->hdr_sent = true; /* from here on the server may run the call */
  return 0;
}

static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f, int err, void *ud) {
  (void)err; (void)ud;
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  h2c_stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (st) st->unprocessed = true; /* e.g. a GOAWAY arrived first: the request never left */
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len, void *ud) {
  (void)flags;
  amn_h2c_conn *cc = ud;
  h2c_stream *st = stream_of(s, sid);
  if (st) cc->tc->call_cbs->data(st->call, data, len);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud) {
  amn_h2c_conn *cc = ud;
  h2c_stream *st = nghttp2_session_get_stream_user_data(s, sid);
  if (!st) return 0;
  if (st->call) {
    if (err == NGHTTP2_NO_ERROR) {
      call_closed(cc, st, NULL);
    } else {
      /* REFUSED_STREAM, a stream above GOAWAY's last id, or a request that
       * never left: the server did not run it, another connection may */
      amn_ct_end e = {.unprocessed = err == NGHTTP2_REFUSED_STREAM || st->unprocessed || !st->hdr_sent};
      char m[600];
      if (e.unprocessed && cc->goaway_why[0]) snprintf(m, sizeof m, "%s", cc->goaway_why);
      else snprintf(m, sizeof m, "stream reset by the server (HTTP/2 error %s)", nghttp2_http2_strerror(err));
      e.code = e.unprocessed ? AMN_STATUS_UNAVAILABLE : amn_status_from_h2_error(err);
      e.msg = m;
      call_closed(cc, st, &e);
    }
  }
  stream_release(cc, st);
  return 0;
}

static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_opt;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void init_cbs(void) {
  nghttp2_session_callbacks_new(&g_cbs);
  nghttp2_session_callbacks_set_on_header_callback(g_cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(g_cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, on_stream_close);
  nghttp2_session_callbacks_set_send_data_callback(g_cbs, send_data_cb);
  nghttp2_session_callbacks_set_on_frame_send_callback(g_cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(g_cbs, on_frame_not_send);
  /* no closed streams kept for RFC 7540 priorities (gRPC uses none): they
   * would cost about 250 KiB per connection after a thousand calls */
  nghttp2_option_new(&g_opt);
  nghttp2_option_set_no_closed_streams(g_opt, 1);
}

/* ---- keepalive ---- */

static double ka_timeout_s(const amn_ct_client *tc) { return amn_ct_ka_timeout_ms(tc) / 1000.0; }

/* Nothing received for an interval (and calls open, unless
 * keepalive_without_calls): PING. No answer within the timeout: the
 * connection is dead (a silently vanished peer or path); close it so its
 * calls fail now and the next ones reconnect. */
static void ka_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)revents;
  amn_h2c_conn *cc = w->data;
  amn_ct_client *tc = cc->tc;
  if (cc->st != CC_READY || !cc->io.h2 || cc->io.close_requested || !tc->ka_interval_ms) return;
  ev_tstamp now = AMN_H2_NOW(ev), iv = tc->ka_interval_ms / 1000.0, to = ka_timeout_s(tc), quiet = now - cc->io.last_rx;
  if (cc->ping_sent > 0 && cc->io.last_rx > cc->ping_sent) cc->ping_sent = 0;
  if (cc->ping_sent > 0) {
    if (now - cc->ping_sent >= to - 0.001) {
      char why[160];
      snprintf(why, sizeof why, "keepalive: no answer to a PING within %.0f ms", to * 1000);
      AMN_WARN("connection to %s is dead (%s)", cc->ep->authority, why);
      h2c_close(cc, why);
      return;
    }
    w->repeat = cc->ping_sent + to - now;
  } else if (quiet >= iv - 0.001 && (cc->live || tc->keepalive_without_calls)) {
    nghttp2_submit_ping(cc->io.h2, NGHTTP2_FLAG_NONE, NULL);
    amn_h2io_mark_dirty(&cc->io);
    cc->ping_sent = now;
    w->repeat = to;
  } else {
    w->repeat = quiet >= iv ? iv : iv - quiet;
  }
  ev_timer_again(ev, w);
}

static void ka_start(amn_h2c_conn *cc) {
  if (!cc->tc->ka_interval_ms) return;
  ev_timer_set(&cc->ka, 0., cc->tc->ka_interval_ms / 1000.0);
  ev_timer_again(cc->tc->ev, &cc->ka);
}

/* ---- calls ---- */

static void *h2c_start_call(void *conn, amn_ct_call *c, amn_ct_end *fail) {
  amn_h2c_conn *cc = conn;
  h2c_stream *st = cc->spare;
  if (st) streams_unlink(&cc->spare, st);
  else st = malloc(sizeof *st);
  if (!st) {
    *fail = (amn_ct_end){AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory", false};
    return NULL;
  }
  *st = (h2c_stream){.call = c, .cc = cc};
  amn_hdr_buf b;
  amn_hdr_buf_init(&b);
  if (amn_rpc_build_request(&b, cc->tc->tls ? "https" : "http", cc->ep->authority, c->method,
                            c->timeout_ns, c->md, c->md_n) != 0) {
    amn_hdr_buf_free(&b);
    streams_link(&cc->spare, st);
    *fail = (amn_ct_end){AMN_STATUS_INTERNAL, "invalid request metadata", false};
    return NULL;
  }
  nghttp2_nv nva[AMN_RPC_MAX_MD + 12];
  amn_h2_nv(&b, nva);
  nghttp2_data_provider prd;
  prd.source.ptr = st;
  prd.read_callback = read_cb;
  int32_t sid = nghttp2_submit_request(cc->io.h2, NULL, nva, b.n, &prd, st);
  amn_hdr_buf_free(&b);
  if (sid < 0) {
    streams_link(&cc->spare, st);
    *fail = (amn_ct_end){AMN_STATUS_UNAVAILABLE, nghttp2_strerror(sid), true}; /* nothing was sent */
    return NULL;
  }
  st->id = sid;
  streams_link(&cc->live, st);
  amn_h2io_mark_dirty(&cc->io);
  return st;
}

static void h2c_resume(void *stream) {
  h2c_stream *st = stream;
  amn_h2c_conn *cc = st->cc;
  if (cc->st != CC_READY) return;
  nghttp2_session_resume_data(cc->io.h2, st->id);
  amn_h2io_mark_dirty(&cc->io);
}

static void h2c_cancel(void *stream) {
  h2c_stream *st = stream;
  amn_h2c_conn *cc = st->cc;
  st->call = NULL; /* nothing reaches the call anymore; the stream is released when nghttp2 closes it */
  if (cc->st != CC_READY) return;
  if (nghttp2_submit_rst_stream(cc->io.h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL) != 0) {
    /* out of memory: the server would never hear of the cancel and keep
     * running the call; closing the connection is the only way left to
     * tell it (at the next flush: not from inside the core's cancel) */
    AMN_WARN("connection to %s: cannot reset a cancelled stream (out of memory): closing it", cc->ep->authority);
    amn_h2io_close(&cc->io, "out of memory resetting a cancelled stream");
    return;
  }
  amn_h2io_mark_dirty(&cc->io);
}

/* ---- connection ---- */

static void cc_free(amn_h2c_conn *cc) {
  if (cc->ai) freeaddrinfo(cc->ai);
  while (cc->spare) {
    h2c_stream *st = cc->spare;
    cc->spare = st->next;
    free(st);
  }
  free(cc);
}

/* Tells the pool the connection is gone (once). */
static void report_closed(amn_h2c_conn *cc, const char *why) {
  void *owner = cc->owner;
  cc->owner = NULL;
  if (owner) cc->cb->closed(owner, why, false);
}

static void conn_failed(amn_h2c_conn *cc, const char *why) {
  cc->st = CC_CLOSED;
  ev_timer_stop(cc->tc->ev, &cc->ct);
  ev_io_stop(cc->tc->ev, &cc->cw);
  char m[600];
  snprintf(m, sizeof m, "cannot connect to %s: %.280s", cc->ep->authority, why);
  AMN_DEBUG("%s", m);
  report_closed(cc, m);
}

static int cc_on_ready(amn_h2io *io) {
  amn_h2c_conn *cc = (amn_h2c_conn *)io;
  amn_ct_client *tc = cc->tc;
  if (io->tls && !amn_tls_alpn_is(io->tls, "h2")) {
    snprintf(io->close_reason, sizeof io->close_reason, "server did not negotiate ALPN h2");
    io->close_requested = true;
    return -1;
  }
  pthread_once(&g_once, init_cbs);
  if (nghttp2_session_client_new3(&io->h2, g_cbs, cc, g_opt, AMN_H2_MEM) != 0) return -1;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, tc->initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64 * 1024},
  };
  nghttp2_submit_settings(io->h2, NGHTTP2_FLAG_NONE, iv, 3);
  int32_t win = tc->initial_window_size > (1u << 26) / 16 ? (1 << 30) : (int32_t)(tc->initial_window_size * 16);
  nghttp2_session_set_local_window_size(io->h2, NGHTTP2_FLAG_NONE, 0, win);
  /* usable once the server's SETTINGS arrive (on_frame_recv); the connect
   * deadline runs until then */
  cc->st = CC_READY;
  return 0;
}

static void cc_on_closed(amn_h2io *io, const char *reason) {
  amn_h2c_conn *cc = (amn_h2c_conn *)io;
  bool was_ready = cc->st == CC_READY;
  cc->st = CC_CLOSED;
  ev_timer_stop(cc->tc->ev, &cc->ct);
  ev_timer_stop(cc->tc->ev, &cc->ka);
  char m[600];
  if (!was_ready) {
    snprintf(m, sizeof m, "cannot connect to %s: %s", cc->ep->authority, reason);
    AMN_DEBUG("%s", m);
  } else if (!cc->got_settings) {
    snprintf(m, sizeof m, "%s closed the connection before the HTTP/2 handshake completed (%s)%s", cc->ep->authority,
             reason, io->tls ? "" : "; the server may require TLS: use https://");
    AMN_DEBUG("%s", m); /* the pool logs the failure */
  } else if (cc->goaway_why[0] && strcmp(reason, "peer closed the connection") == 0) {
    snprintf(m, sizeof m, "%s", cc->goaway_why);
  } else {
    snprintf(m, sizeof m, "connection to %s lost: %s", cc->ep->authority, reason);
    if (cc->live) AMN_INFO("%s", m);
  }
  /* calls still open: retried elsewhere when their request never left (or
   * the GOAWAY said they never ran), else UNAVAILABLE (idempotent ones may
   * still be retried) */
  while (cc->live) {
    h2c_stream *st = cc->live;
    amn_ct_end e = {AMN_STATUS_UNAVAILABLE, m, !st->hdr_sent || st->unprocessed};
    call_closed(cc, st, &e);
    stream_release(cc, st);
  }
  if (io->h2) nghttp2_session_del(io->h2);
  io->h2 = NULL;
  if (io->tls) gnutls_deinit(io->tls);
  io->tls = NULL;
  report_closed(cc, m);
  cc_free(cc);
}

static const amn_h2io_cbs cc_cbs = {cc_on_ready, cc_on_closed};

static void try_next_addr(amn_h2c_conn *cc);

static void connected(amn_h2c_conn *cc, int fd) {
  amn_ct_client *tc = cc->tc;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  gnutls_session_t tls = NULL;
  if (tc->tls) {
    char err[256];
    if (amn_tls_session_new(tc->tls, &tls, GNUTLS_NONBLOCK, tc->server_name ? tc->server_name : cc->ep->sni,
                            err, sizeof err) != 0) {
      amn_h2io_close_fd(fd);
      conn_failed(cc, err);
      cc_free(cc);
      return;
    }
  }
  cc->st = CC_HANDSHAKE;
  /* the remaining connect budget covers the handshake (cc->ct keeps running) */
  amn_h2io_start(&cc->io, tc->io, &cc_cbs, fd, tls, tc->connect_timeout_ms / 1000.0 + 1, true);
}

static void cw_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)revents;
  amn_h2c_conn *cc = w->data;
  ev_io_stop(ev, w);
  int fd = w->fd, e = 0;
  socklen_t l = sizeof e;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
  if (e != 0) {
    snprintf(cc->last_err, sizeof cc->last_err, "%s", strerror(e));
    close(fd);
    cc->cur = cc->cur->ai_next;
    try_next_addr(cc);
    return;
  }
  connected(cc, fd);
}

static void ct_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_h2c_conn *cc = w->data;
  if (cc->st == CC_CONNECTING) {
    if (ev_is_active(&cc->cw)) {
      ev_io_stop(cc->tc->ev, &cc->cw);
      close(cc->cw.fd);
    }
    conn_failed(cc, "connect timed out");
    cc_free(cc);
  } else if (cc->st == CC_HANDSHAKE) {
    amn_h2io_close(&cc->io, "TLS handshake timed out");
  } else if (cc->st == CC_READY && !cc->got_settings) {
    amn_h2io_close(&cc->io, "no HTTP/2 SETTINGS from the server within the connect timeout");
  }
}

static void try_next_addr(amn_h2c_conn *cc) {
  for (; cc->cur; cc->cur = cc->cur->ai_next) {
    struct addrinfo *a = cc->cur;
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      snprintf(cc->last_err, sizeof cc->last_err, "socket: %s", strerror(errno));
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      connected(cc, fd);
      return;
    }
    if (errno == EINPROGRESS) {
      ev_io_init(&cc->cw, cw_cb, fd, EV_WRITE);
      cc->cw.data = cc;
      ev_io_start(cc->tc->ev, &cc->cw);
      return;
    }
    snprintf(cc->last_err, sizeof cc->last_err, "%s", strerror(errno));
    close(fd);
  }
  conn_failed(cc, cc->last_err[0] ? cc->last_err : "no address");
  cc_free(cc);
}

static void h2c_open(amn_ct_client *tc, amn_ct_endpoint *ep, void *owner, void **conn) {
  amn_h2c_conn *cc = calloc(1, sizeof *cc);
  *conn = cc;
  if (!cc) {
    tc->conn_cbs->closed(owner, "out of memory", false);
    return;
  }
  cc->tc = tc;
  cc->cb = tc->conn_cbs;
  cc->owner = owner;
  cc->ep = ep;
  cc->st = CC_CONNECTING;
  cc->io.peer_name = ep->authority;
  cc->io.fd = -1;
  ev_timer_init(&cc->ka, ka_cb, 0., 0.);
  cc->ka.data = cc;
  ev_timer_init(&cc->ct, ct_cb, tc->connect_timeout_ms / 1000.0, 0.);
  cc->ct.data = cc;
  ev_timer_start(tc->ev, &cc->ct);
#ifdef AMN_TEST_HOOKS
  if (amn_h2io_test_hook && amn_h2io_test_hook->connect) { /* a test's memory pipe instead of TCP */
    int fd = amn_h2io_test_hook->connect(ep->host, ep->port);
    if (fd < 0) {
      conn_failed(cc, strerror(errno));
      cc_free(cc);
    } else {
      connected(cc, fd);
    }
    return;
  }
#endif
  struct addrinfo hints = {0};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  char ps[8];
  snprintf(ps, sizeof ps, "%u", ep->port);
  int gai = getaddrinfo(ep->host, ps, &hints, &cc->ai);
  if (gai != 0) {
    char m[600];
    snprintf(m, sizeof m, "cannot resolve '%s': %s", ep->host, gai_strerror(gai));
    cc->ai = NULL;
    conn_failed(cc, m);
    cc_free(cc);
    return;
  }
  cc->cur = cc->ai;
  try_next_addr(cc);
}

static void h2c_close(void *conn, const char *why) {
  amn_h2c_conn *cc = conn;
  if (cc->st == CC_CONNECTING) {
    if (ev_is_active(&cc->cw)) {
      ev_io_stop(cc->tc->ev, &cc->cw);
      close(cc->cw.fd);
    }
    conn_failed(cc, why);
    cc_free(cc);
    return;
  }
  if (cc->io.h2 && cc->st == CC_READY)
    nghttp2_session_terminate_session(cc->io.h2, NGHTTP2_NO_ERROR);
  amn_h2io_close(&cc->io, why);
  amn_h2io_flush(&cc->io);
}

#ifdef AMN_TEST_HOOKS
void amn_h2c_test_fire_timers(void *conn) {
  amn_h2c_conn *cc = conn;
  if (ev_is_active(&cc->ka)) ev_invoke(cc->tc->ev, &cc->ka, EV_TIMER);
}
#endif

static gnutls_session_t h2c_session(void *stream) { return ((h2c_stream *)stream)->cc->io.tls; }

const amn_ctransport amn_h2c_transport = {
    .name = "HTTP/2",
    .kind = AMN_TRANSPORT_H2,
    .slot = 0,
    .open = h2c_open,
    .max_streams = h2c_max_streams,
    .start_call = h2c_start_call,
    .resume = h2c_resume,
    .cancel = h2c_cancel,
    .session = h2c_session,
    .close = h2c_close,
};
