/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The HTTP/2 bindings without sockets: the server binding
 * (transport/h2/h2_server.c over h2io.c and the real call core) and the
 * client binding (h2_client.c under the real client core and pool) carry
 * their connections over memory pipes the test controls, with real TLS and
 * real mTLS verification (the development PKI) on top. The pipes go in
 * through the test hook of h2io.h (amn_h2io_test_hook: recv, send,
 * shutdown, close and the client's connect on an eventfd that is readable
 * while bytes wait); GnuTLS runs over them through its push/pull functions.
 *
 * Each side is driven on this thread: the server's loop is built by hand as
 * amn_server_start builds one, on a fake clock (amn_srv_loop.clock_ns); the
 * client is a real amn_client without its I/O thread
 * (amn_client_test_no_thread); a turn runs each loop once without waiting.
 * Either end of a connection may also be the test's own nghttp2 session
 * ("peer"): a client against our server binding, or a server against our
 * client binding, which sees and writes every frame.
 *
 * Also allocation-failure injection: the library's allocator is wrapped at
 * link time and nghttp2's sessions take the test's nghttp2_mem (the hook's
 * `mem`); a whole unary call runs again with the 1st, 2nd, ... allocation
 * of one side (the server's loop, or the client: its API calls and its
 * loop) failing, until a run sees no failure: each must end cleanly (the
 * call gets a status or succeeds), with every allocation freed and within a
 * bounded number of turns. GnuTLS's own allocations cannot be injected
 * (gnutls_global_set_mem_functions has no effect since GnuTLS 3.3).
 */
#include <errno.h>
#include <ev.h>
#include <gnutls/gnutls.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "amn/pki.h"
#include "client/client_hooks.h"
#include "client/client_internal.h"
#include "server/server_internal.h"
#include "tls/pki_internal.h"
#include "tls/tls.h"
#include "transport/h2/h2_server.h"
#include "transport/h2/h2io.h"

/* ---- allocation-failure injection ---- */

enum { SIDE_NONE, SIDE_SERVER, SIDE_CLIENT };
static int g_side;      /* whose code runs now */
static int g_fail_side; /* the side whose allocations are counted and fail */
#define FAILMALLOC_COUNTS() (g_side == g_fail_side)
#include "failmalloc.h"

/* nghttp2's allocator for the bindings' sessions (the hook's `mem`) */
static long g_h2_allocs[3]; /* nghttp2's allocations, per side */
static void *m_malloc(size_t n, void *ud) { (void)ud; g_h2_allocs[g_side]++; return __wrap_malloc(n); }
static void m_free(void *p, void *ud) { (void)ud; __wrap_free(p); }
static void *m_calloc(size_t n, size_t m, void *ud) { (void)ud; g_h2_allocs[g_side]++; return __wrap_calloc(n, m); }
static void *m_realloc(void *p, size_t n, void *ud) { (void)ud; g_h2_allocs[g_side]++; return __wrap_realloc(p, n); }
static nghttp2_mem g_h2mem = {NULL, m_malloc, m_free, m_calloc, m_realloc};

/* ---- memory pipes ---- */

/* One end of a connection: the bytes waiting for it to read. An end the
 * bindings hold has an eventfd (readable while bytes or the end of stream
 * wait); the test's own ends have none. */
typedef struct mend {
  int efd;               /* -1: the test's end */
  struct mend *peer;
  uint8_t *buf;
  size_t off, len, cap;
  bool eof;              /* the peer will send nothing more */
  bool shut, closed;     /* this end shut its sending side / closed */
  size_t sent;           /* bytes this end sent */
  size_t sends;          /* send calls that sent them */
} mend;

#define MAX_FD 4096
static mend *g_fd[MAX_FD];
static mend *g_ends[256];
static int g_nends;

static void mend_signal(mend *e) {
  uint64_t one = 1;
  if (e->efd >= 0 && !e->closed) assert_int_equal(write(e->efd, &one, 8), 8);
}
static void mend_unsignal(mend *e) {
  uint64_t v;
  if (e->efd >= 0 && !e->closed) (void)!read(e->efd, &v, 8);
}

static mend *mend_new(bool with_fd) {
  assert_true(g_nends < 256);
  mend *e = __real_calloc(1, sizeof *e); /* the test's memory: never counted, never failing */
  assert_non_null(e);
  e->efd = -1;
  if (with_fd) {
    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(e->efd >= 0 && e->efd < MAX_FD);
    g_fd[e->efd] = e;
  }
  g_ends[g_nends++] = e;
  return e;
}

static void mend_pair(mend *a, mend *b) {
  a->peer = b;
  b->peer = a;
}

static ssize_t mend_recv(mend *e, void *buf, size_t n) {
  if (e->off < e->len) {
    size_t k = e->len - e->off < n ? e->len - e->off : n;
    memcpy(buf, e->buf + e->off, k);
    e->off += k;
    if (e->off == e->len) {
      e->off = e->len = 0;
      if (!e->eof) mend_unsignal(e);
    }
    return (ssize_t)k;
  }
  if (e->eof) return 0;
  mend_unsignal(e);
  errno = EAGAIN;
  return -1;
}

static ssize_t mend_send(mend *e, const void *p, size_t n) {
  mend *to = e->peer;
  if (e->shut || e->closed || to->closed) {
    errno = EPIPE;
    return -1;
  }
  if (to->len + n > to->cap) {
    size_t cap = to->cap ? to->cap : 65536;
    while (cap < to->len + n) cap *= 2;
    to->buf = __real_realloc(to->buf, cap);
    assert_non_null(to->buf);
    to->cap = cap;
  }
  memcpy(to->buf + to->len, p, n);
  to->len += n;
  e->sent += n;
  e->sends++;
  mend_signal(to);
  return (ssize_t)n;
}

static void mend_shut(mend *e) {
  if (e->shut) return;
  e->shut = true;
  e->peer->eof = true;
  mend_signal(e->peer);
}

static void mend_close(mend *e) {
  if (e->closed) return;
  mend_shut(e);
  if (e->efd >= 0) {
    g_fd[e->efd] = NULL;
    close(e->efd);
  }
  e->closed = true;
}

/* The test's ends close (the bindings' ends are theirs to close). */
static void mends_close_test_ends(void) {
  for (int i = 0; i < g_nends; i++)
    if (g_ends[i]->efd < 0) mend_close(g_ends[i]);
}

/* Once every binding closed its ends. */
static void mends_free(void) {
  for (int i = 0; i < g_nends; i++) {
    if (g_ends[i]->efd >= 0 && !g_ends[i]->closed) fail_msg("a binding never closed its connection");
    mend_close(g_ends[i]);
    __real_free(g_ends[i]->buf);
    __real_free(g_ends[i]);
  }
  g_nends = 0;
}

/* the hook: a binding's fd is one of our ends */
static mend *end_of(int fd) {
  assert_true(fd >= 0 && fd < MAX_FD);
  mend *e = g_fd[fd];
  assert_non_null(e); /* a binding used an fd it had closed */
  return e;
}
static ssize_t h_recv(int fd, void *buf, size_t n) { return mend_recv(end_of(fd), buf, n); }
static ssize_t h_send(int fd, const void *buf, size_t n) { return mend_send(end_of(fd), buf, n); }
static void h_shutdown(int fd) { mend_shut(end_of(fd)); }
static void h_close(int fd) { mend_close(end_of(fd)); }
static int h_connect(const char *host, uint16_t port);
static double fake_now_s(void);
static const amn_h2io_test_io g_hook = {h_recv, h_send, h_shutdown, h_close, h_connect, &g_h2mem, fake_now_s};

/* ---- the development PKI ---- */

static char g_tmp[256], g_pki[300];
static const char *P(const char *file) { /* a path in g_pki (ring of buffers) */
  static char ring[8][400];
  static int k;
  char *b = ring[k++ & 7];
  snprintf(b, 400, "%s/%s", g_pki, file);
  return b;
}

/* ---- the server: never started, one loop built by hand, a fake clock ---- */

static amn_server *g_srv;
static amn_srv_loop g_sl;
static int64_t g_now = 1000000000LL;
static int64_t fake_clock(void) { return g_now; }
static double fake_now_s(void) { return (double)g_now / 1e9; } /* the bindings' (keepalive) */

#define MAX_MSG 65536u

/* what the handlers saw */
static amn_call *g_held;          /* the call /t.S/Hold holds */
static int g_cancels;
static amn_status_code g_cancel_why;
static int g_msgs;                /* request messages the handlers got */
static char g_peer_subject[200];  /* the verified client certificate's subject the last Echo saw */
static amn_call *g_paused[32];    /* calls /t.S/Pause paused */
static int g_npaused;

static void echo_msg(amn_call *c, const uint8_t *m, size_t n, void *ud) {
  (void)ud;
  g_msgs++;
  const amn_peer_identity *id = amn_call_peer(c);
  snprintf(g_peer_subject, sizeof g_peer_subject, "%s", id && id->verified ? id->subject : "");
  int rc = amn_call_send(c, m, n);
  if (rc == AMN_ENOMEM) amn_call_finish(c, AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory"); /* no echo: no OK */
  else assert_true(rc == 0 || rc == AMN_ECLOSED);
}
static void finish_ok(amn_call *c, void *ud) {
  (void)ud;
  amn_call_finish(c, AMN_STATUS_OK, NULL);
}
static void on_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)ud;
  g_cancels++;
  g_cancel_why = why;
  if (c == g_held) g_held = NULL;
  for (int i = 0; i < g_npaused; i++)
    if (g_paused[i] == c) g_paused[i] = NULL;
  amn_call_finish(c, why, NULL);
}
static void hold_msg(amn_call *c, const uint8_t *m, size_t n, void *ud) {
  (void)m; (void)n; (void)ud;
  g_msgs++;
  g_held = c;
}
static void pause_msg(amn_call *c, const uint8_t *m, size_t n, void *ud) {
  (void)m; (void)n; (void)ud;
  g_msgs++;
  for (int i = 0; i < g_npaused; i++)
    if (g_paused[i] == c) return;
  assert_true(g_npaused < 32);
  g_paused[g_npaused++] = c;
  amn_call_pause_recv(c);
}

static void log_sink(amn_log_level level, const char *line, void *ud);

static int server_new(void) {
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.listen = "127.0.0.1:0";
  static char store[3 * 4096];
  if (amn_pki_paths(g_pki, "server", &o.tls, store, sizeof store) != 0) return -1;
  o.max_recv_message = MAX_MSG;
  o.max_send_message = MAX_MSG;
  o.initial_window_size = 65535;
  o.max_connection_buffer = 2 * MAX_MSG + (1u << 20); /* the least allowed */
  char err[256];
  if (amn_server_new(&g_srv, &o, err, sizeof err) != 0) {
    fprintf(stderr, "server: %s\n", err);
    return -1;
  }
  amn_handler echo = {.on_message = echo_msg, .on_half_close = finish_ok, .on_cancel = on_cancel};
  amn_handler stream = echo;
  stream.client_streaming = true;
  amn_handler hold = {.on_message = hold_msg, .on_cancel = on_cancel, .client_streaming = true};
  amn_handler pause = {.on_message = pause_msg, .on_half_close = finish_ok, .on_cancel = on_cancel,
                       .client_streaming = true};
  if (amn_server_register(g_srv, "/t.S/Echo", &echo) || amn_server_register(g_srv, "/t.S/Stream", &stream) ||
      amn_server_register(g_srv, "/t.S/Hold", &hold) || amn_server_register(g_srv, "/t.S/Pause", &pause))
    return -1;
  amn_srv_loop *sl = &g_sl;
  memset(sl, 0, sizeof *sl);
  sl->srv = g_srv;
  sl->bl.first = &sl->bl;
  sl->bl.cfg = &g_srv->bc;
  sl->bl.counters = &g_srv->bc;
  sl->bl.calls = &amn_call_binding;
  sl->bl.ud = sl;
  sl->lfd = -1;
  amn_srv_loop_setup(sl, fake_clock); /* as amn_server_start does */
  sl->thread = pthread_self();        /* this thread is the loop */
  return 0;
}

static void server_free(void) {
  amn_call_cache_free(&g_sl);
  amn_h2s_free(&g_sl.bl);
  amn_ioloop_stop(&g_sl.io);
  ev_ref(g_sl.ev);
  ev_async_stop(g_sl.ev, &g_sl.wake);
  ev_loop_destroy(g_sl.ev);
  amn_server_free(g_srv);
  g_srv = NULL;
}

/* ---- the test's own nghttp2 session ("peer"), over its own TLS ---- */

#define PEER_STREAMS 64
typedef struct pstream {
  int32_t id;
  const uint8_t *out;     /* request or response body still to send */
  size_t out_len;
  bool out_end;           /* END_STREAM after it (client); trailers after it (server) */
  const char *grpc_status; /* server: the trailers' status */
  char path[64];
  char status[8], grpc_status_in[8], grpc_message[200];
  uint8_t in[4096];
  size_t in_len, in_total;
  bool ended;             /* END_STREAM received */
  bool closed;
  uint32_t close_err;
  uint32_t rst_in;        /* RST_STREAM code received (0xffffffff: none) */
  uint64_t wu;            /* WINDOW_UPDATE increments received for it */
} pstream;

typedef struct peer {
  bool is_server;
  mend *end;
  amn_tls_ctx *ctx;
  gnutls_session_t tls;
  bool hs_done;
  int hs_rc;              /* a failed handshake's code */
  nghttp2_session *h2;
  pstream st[PEER_STREAMS];
  int nst;
  int goaways, pings;     /* GOAWAYs, PINGs (not acks) received */
  uint32_t goaway_code;
  int32_t goaway_last;
  uint64_t wu_conn;       /* connection WINDOW_UPDATE increments received */
  int settings;
  bool eof;
  bool cork;              /* frames of one turn go out in as few TLS records as fit */
  /* raw: nghttp2 no longer reads or writes; the frames that arrive are
   * only listed (for input nghttp2 itself would refuse to have sent) */
  bool raw;
  uint8_t rbuf[65536];
  size_t rlen;
  struct rawf {
    uint8_t type, flags;
    uint32_t sid, code; /* code: RST_STREAM's, GOAWAY's */
    char fields[256];   /* HEADERS (no CONTINUATION): the fields, "name=value;" */
  } rf[64];
  nghttp2_hd_inflater *hd; /* raw: a fresh connection's HPACK decoder */
  int nrf;
} peer;

static pstream *pst(peer *p, int32_t id, bool make) {
  for (int i = 0; i < p->nst; i++)
    if (p->st[i].id == id) return &p->st[i];
  if (!make) return NULL;
  assert_true(p->nst < PEER_STREAMS);
  pstream *s = &p->st[p->nst++];
  memset(s, 0, sizeof *s);
  s->id = id;
  s->rst_in = 0xffffffffu;
  return s;
}

static ssize_t p_pull(gnutls_transport_ptr_t t, void *buf, size_t n) { return mend_recv(t, buf, n); }
static ssize_t p_push(gnutls_transport_ptr_t t, const void *buf, size_t n) { return mend_send(t, buf, n); }
static int p_pull_timeout(gnutls_transport_ptr_t t, unsigned ms) {
  (void)ms;
  mend *e = t;
  return e->len > e->off || e->eof;
}

static ssize_t p_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                      nghttp2_data_source *src, void *ud) {
  (void)s; (void)src;
  peer *p = ud;
  pstream *ps = pst(p, sid, false);
  assert_non_null(ps);
  size_t n = ps->out_len < len ? ps->out_len : len;
  if (n) memcpy(buf, ps->out, n);
  ps->out += n;
  ps->out_len -= n;
  if (ps->out_len) return (ssize_t)n;
  if (!ps->out_end) return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  if (p->is_server) { /* the response's status in trailers */
    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_nv t[] = {{(uint8_t *)"grpc-status", (uint8_t *)ps->grpc_status, 11, strlen(ps->grpc_status), 0}};
    assert_int_equal(nghttp2_submit_trailer(s, sid, t, 1), 0);
  }
  return (ssize_t)n;
}

static int p_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                       const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
  (void)s; (void)flags;
  pstream *ps = pst(ud, f->hd.stream_id, true);
  char *dst = NULL;
  size_t cap = 0;
  if (nl == 7 && !memcmp(name, ":status", 7)) dst = ps->status, cap = sizeof ps->status;
  if (nl == 5 && !memcmp(name, ":path", 5)) dst = ps->path, cap = sizeof ps->path;
  if (nl == 11 && !memcmp(name, "grpc-status", 11)) dst = ps->grpc_status_in, cap = sizeof ps->grpc_status_in;
  if (nl == 12 && !memcmp(name, "grpc-message", 12)) dst = ps->grpc_message, cap = sizeof ps->grpc_message;
  if (dst) snprintf(dst, cap, "%.*s", (int)vl, (const char *)value);
  return 0;
}

static int p_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)s;
  peer *p = ud;
  switch (f->hd.type) {
  case NGHTTP2_GOAWAY:
    p->goaways++;
    p->goaway_code = f->goaway.error_code;
    p->goaway_last = f->goaway.last_stream_id;
    break;
  case NGHTTP2_WINDOW_UPDATE:
    if (f->hd.stream_id == 0) p->wu_conn += (uint32_t)f->window_update.window_size_increment;
    else if (pst(p, f->hd.stream_id, false)) pst(p, f->hd.stream_id, false)->wu += (uint32_t)f->window_update.window_size_increment;
    break;
  case NGHTTP2_RST_STREAM:
    pst(p, f->hd.stream_id, true)->rst_in = f->rst_stream.error_code;
    break;
  case NGHTTP2_SETTINGS:
    if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) p->settings++;
    break;
  case NGHTTP2_PING:
    if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) p->pings++; /* (nghttp2 answers it) */
    break;
  default:
    break;
  }
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    pst(p, f->hd.stream_id, true)->ended = true;
  return 0;
}

static int p_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *d, size_t n, void *ud) {
  (void)flags;
  pstream *ps = pst(ud, sid, true);
  size_t k = n < sizeof ps->in - ps->in_len ? n : sizeof ps->in - ps->in_len;
  memcpy(ps->in + ps->in_len, d, k);
  ps->in_len += k;
  ps->in_total += n;
  (void)s;
  return 0;
}

static int p_on_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud) {
  (void)s;
  pstream *ps = pst(ud, sid, true);
  ps->closed = true;
  ps->close_err = err;
  return 0;
}

/* A peer on `end`, with the client certificate `cert` (client) or the
 * server's (server). */
static peer *peer_new(bool is_server, mend *end, const char *cert, const char *key) {
  peer *p = __real_calloc(1, sizeof *p);
  assert_non_null(p);
  p->is_server = is_server;
  p->end = end;
  amn_tls_opts o = {.cert_path = P(cert), .key_path = P(key), .ca_path = P("ca.pem")};
  static const char *const alpn[] = {"h2", NULL};
  char err[256];
  int rc = amn_tls_ctx_new(&p->ctx, is_server ? AMN_TLS_SERVER : AMN_TLS_CLIENT, &o, alpn, err, sizeof err);
  if (rc) fprintf(stderr, "peer TLS: %s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(amn_tls_session_new(p->ctx, &p->tls, GNUTLS_NONBLOCK, "localhost", err, sizeof err), 0);
  gnutls_transport_set_ptr(p->tls, end);
  gnutls_transport_set_pull_function(p->tls, p_pull);
  gnutls_transport_set_pull_timeout_function(p->tls, p_pull_timeout);
  gnutls_transport_set_push_function(p->tls, p_push);
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, p_on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, p_on_frame);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, p_on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, p_on_close);
  rc = is_server ? nghttp2_session_server_new(&p->h2, cb, p) : nghttp2_session_client_new(&p->h2, cb, p);
  nghttp2_session_callbacks_del(cb);
  assert_int_equal(rc, 0);
  assert_int_equal(nghttp2_submit_settings(p->h2, NGHTTP2_FLAG_NONE, NULL, 0), 0);
  return p;
}

static void peer_free(peer *p) {
  if (!p) return;
  if (p->hd) nghttp2_hd_inflate_del(p->hd);
  nghttp2_session_del(p->h2);
  gnutls_deinit(p->tls);
  amn_tls_ctx_unref(p->ctx);
  __real_free(p);
}

/* Raw bytes to the other side under TLS (frames nghttp2 would never write). */
static void peer_raw(peer *p, const void *b, size_t n) {
  assert_true(p->hs_done && n <= 16384);
  assert_int_equal(gnutls_record_send(p->tls, b, n), (ssize_t)n);
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Raw mode: whole frames of rbuf into the list. */
static void peer_raw_frames(peer *p) {
  size_t off = 0;
  while (p->rlen - off >= 9) {
    const uint8_t *h = p->rbuf + off;
    size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
    if (p->rlen - off < 9 + len) break;
    assert_true(p->nrf < 64);
    struct rawf *f = &p->rf[p->nrf++];
    f->type = h[3];
    f->flags = h[4];
    f->sid = be32(h + 5) & 0x7fffffffu;
    f->code = f->type == NGHTTP2_RST_STREAM && len == 4 ? be32(h + 9)
              : f->type == NGHTTP2_GOAWAY && len >= 8 ? be32(h + 13) : 0;
    f->fields[0] = 0;
    if (f->type == NGHTTP2_HEADERS && (f->flags & NGHTTP2_FLAG_END_HEADERS) && !(f->flags & 0x28)) {
      if (!p->hd) assert_int_equal(nghttp2_hd_inflate_new(&p->hd), 0);
      const uint8_t *b = h + 9;
      size_t left = len;
      for (;;) {
        nghttp2_nv nv;
        int fl = 0;
        ssize_t used = nghttp2_hd_inflate_hd2(p->hd, &nv, &fl, b, left, 1);
        assert_true(used >= 0);
        b += used;
        left -= (size_t)used;
        if (fl & NGHTTP2_HD_INFLATE_EMIT) {
          size_t fl_len = strlen(f->fields);
          snprintf(f->fields + fl_len, sizeof f->fields - fl_len, "%.*s=%.*s;", (int)nv.namelen,
                   (const char *)nv.name, (int)nv.valuelen, (const char *)nv.value);
        }
        if (fl & NGHTTP2_HD_INFLATE_FINAL) {
          nghttp2_hd_inflate_end_headers(p->hd);
          break;
        }
        assert_true(used > 0 || (fl & NGHTTP2_HD_INFLATE_EMIT));
      }
    }
    off += 9 + len;
  }
  memmove(p->rbuf, p->rbuf + off, p->rlen - off);
  p->rlen -= off;
}

/* Handshake, then what arrived into nghttp2 and what nghttp2 has out.
 * Returns true when anything moved. */
static bool peer_turn(peer *p) {
  if (!p || p->hs_rc || p->eof) return false;
  size_t before = p->end->sent;
  bool moved = false;
  if (!p->hs_done) {
    int rc = gnutls_handshake(p->tls);
    if (rc == GNUTLS_E_SUCCESS) {
      p->hs_done = true;
      moved = true;
    } else if (gnutls_error_is_fatal(rc)) {
      p->hs_rc = rc;
      return true;
    } else {
      return p->end->sent != before;
    }
  }
  uint8_t buf[16384];
  for (;;) {
    ssize_t n = gnutls_record_recv(p->tls, buf, sizeof buf);
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) break;
    if (n <= 0) {
      p->eof = true;
      break;
    }
    moved = true;
    if (p->raw) {
      assert_true(p->rlen + (size_t)n <= sizeof p->rbuf);
      memcpy(p->rbuf + p->rlen, buf, (size_t)n);
      p->rlen += (size_t)n;
      peer_raw_frames(p);
      continue;
    }
    ssize_t r = nghttp2_session_mem_recv(p->h2, buf, (size_t)n);
    assert_true(r == n || r < 0);
    if (r < 0) break;
  }
  if (p->cork && !p->raw) gnutls_record_cork(p->tls);
  while (!p->raw) {
    const uint8_t *d;
    ssize_t n = nghttp2_session_mem_send(p->h2, &d);
    assert_true(n >= 0);
    if (n == 0) break;
    if (p->end->shut || p->end->peer->closed) break;
    for (ssize_t off = 0; off < n;) { /* at most one record (16384 bytes) a call */
      ssize_t w = gnutls_record_send(p->tls, d + off, (size_t)(n - off));
      assert_true(w > 0);
      off += w;
    }
  }
  if (p->cork && !p->raw) assert_true(gnutls_record_uncork(p->tls, GNUTLS_RECORD_WAIT) >= 0);
  return moved || p->end->sent != before;
}

/* A gRPC request from the peer (client): returns the stream id. `body` must
 * outlive the stream; end: END_STREAM after it. */
static int32_t peer_request(peer *p, const char *path, const uint8_t *body, size_t len, bool end,
                            const char *timeout) {
  nghttp2_nv h[8];
  size_t n = 0;
#define NV(a, b) h[n++] = (nghttp2_nv){(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), 0}
  NV(":method", "POST");
  NV(":scheme", "https");
  NV(":path", path);
  NV(":authority", "localhost");
  NV("content-type", "application/grpc");
  NV("te", "trailers");
  if (timeout) NV("grpc-timeout", timeout);
#undef NV
  nghttp2_data_provider prd = {.read_callback = p_read};
  int32_t sid = nghttp2_submit_request(p->h2, NULL, h, n, &prd, NULL);
  assert_true(sid > 0);
  pstream *ps = pst(p, sid, true);
  ps->out = body;
  ps->out_len = len;
  ps->out_end = end;
  return sid;
}

/* More of a request stream's body (end: then END_STREAM). */
static void peer_more(peer *p, int32_t sid, const uint8_t *body, size_t len, bool end) {
  pstream *ps = pst(p, sid, false);
  assert_non_null(ps);
  assert_int_equal(ps->out_len, 0);
  ps->out = body;
  ps->out_len = len;
  ps->out_end = end;
  nghttp2_session_resume_data(p->h2, sid);
}

/* The peer (server) answers a request: 200, the body, trailers with status. */
static void peer_respond(peer *p, int32_t sid, const uint8_t *body, size_t len, const char *grpc_status) {
  pstream *ps = pst(p, sid, false);
  assert_non_null(ps);
  ps->out = body;
  ps->out_len = len;
  ps->out_end = true;
  ps->grpc_status = grpc_status;
  nghttp2_nv h[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0},
                    {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0}};
  nghttp2_data_provider prd = {.read_callback = p_read};
  assert_int_equal(nghttp2_submit_response(p->h2, sid, h, 2, &prd), 0);
}

/* A gRPC message: 5-byte prefix and the bytes. */
static size_t frame_msg(uint8_t *out, const void *m, size_t n) {
  out[0] = 0;
  out[1] = (uint8_t)(n >> 24);
  out[2] = (uint8_t)(n >> 16);
  out[3] = (uint8_t)(n >> 8);
  out[4] = (uint8_t)n;
  memcpy(out + 5, m, n);
  return n + 5;
}

/* ---- connections: where the client's connects go ---- */

enum { TO_SERVER, TO_PEER };
static int g_route[8];      /* where the next connects go, in order (then TO_SERVER) */
static int g_nroute, g_connects;
static peer *g_speers[8];   /* server peers made by connects */
static int g_nspeers;

/* A connection to our server binding: the test's end (for a peer) or an
 * end with an fd (for our client binding). */
static mend *server_conn(bool with_fd) {
  mend *s = mend_new(true), *c = mend_new(with_fd);
  mend_pair(s, c);
  int side = g_side;
  g_side = SIDE_SERVER;
  amn_h2s_accept(&g_sl.bl, s->efd, "mem");
  g_side = side;
  return c;
}

static int h_connect(const char *host, uint16_t port) {
  assert_string_equal(host, "127.0.0.1"); /* (names are resolved by the pool: the transport gets an address) */
  assert_int_equal(port, 50051);
  int to = g_connects < g_nroute ? g_route[g_connects] : TO_SERVER;
  g_connects++;
  if (to == TO_SERVER) return server_conn(true)->efd;
  mend *c = mend_new(true), *s = mend_new(false);
  mend_pair(c, s);
  assert_true(g_nspeers < 8);
  g_speers[g_nspeers++] = peer_new(true, s, "server.pem", "server-key.pem");
  return c->efd;
}

/* ---- the client: real, without its I/O thread ---- */

static amn_client *g_cl;
static uint32_t g_ka_ms; /* the next clients' keepalive interval and timeout (0: none) */

static amn_client *client_new(const char *cert, const char *key) {
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.url = "https://127.0.0.1:50051";
  o.tls.server_name = "localhost";
  o.tls.cert_path = P(cert);
  o.tls.key_path = P(key);
  o.tls.ca_path = P("ca.pem");
  o.pool_min_connections = 0;
  o.pool_max_connections = 2;
  o.idle_timeout_ms = 0;
  o.backoff_base_ms = 1;
  o.backoff_max_ms = 1;
  o.max_recv_message = MAX_MSG;
  o.max_send_message = MAX_MSG;
  o.keepalive_interval_ms = o.keepalive_timeout_ms = g_ka_ms;
  char err[256];
  amn_client *cl = NULL;
  amn_client_test_no_thread = true;
  int side = g_side;
  g_side = SIDE_CLIENT;
  int rc = amn_client_new(&cl, &o, err, sizeof err);
  g_side = side;
  amn_client_test_no_thread = false;
  if (rc) return NULL;
  return cl;
}

/* The client of most tests: the development PKI's client certificate. */
static void good_client(void) {
  g_cl = client_new("client.pem", "client-key.pem");
  assert_non_null(g_cl);
}

static void client_free(amn_client *cl) {
  int side = g_side;
  g_side = SIDE_CLIENT;
  amn_client_free(cl);
  g_side = side;
}

/* ---- turns ---- */

static peer *g_cpeer; /* the test's client peer of the current test, if any */

/* One turn of everything: the server's loop, the client's, the peers.
 * True when bytes moved or a loop has work left. The fake clock moves 1 ms. */
static bool turn(void) {
  size_t moved = 0;
  for (int i = 0; i < g_nends; i++) moved += g_ends[i]->sent;
  g_side = SIDE_SERVER;
  ev_run(g_sl.ev, EVRUN_NOWAIT);
  if (g_cl) {
    g_side = SIDE_CLIENT;
    ev_run(g_cl->ev, EVRUN_NOWAIT);
  }
  g_side = SIDE_NONE;
  bool busy = peer_turn(g_cpeer);
  for (int i = 0; i < g_nspeers; i++) busy |= peer_turn(g_speers[i]);
  for (int i = 0; i < g_nends; i++) moved -= g_ends[i]->sent;
  g_now += 1000000;
  return busy || moved || g_sl.io.dirty || (g_cl && g_cl->io.dirty);
}

#define TURNS_MAX 3000
/* Turns until nothing moves three turns in a row. */
static void settle(void) {
  int quiet = 0, i;
  for (i = 0; i < TURNS_MAX && quiet < 3; i++) quiet = turn() ? 0 : quiet + 1;
  assert_true(i < TURNS_MAX); /* it settles */
}
#define RUN_UNTIL(cond)                                                   \
  do {                                                                    \
    int n_ = 0;                                                           \
    while (!(cond) && n_++ < TURNS_MAX) turn();                           \
    if (!(cond)) fail_msg("never true within %d turns: %s", TURNS_MAX, #cond); \
  } while (0)

/* ---- the log: the test looks for lines ---- */

static char g_log[8192];
static void log_sink(amn_log_level level, const char *line, void *ud) {
  (void)level; (void)ud;
  size_t l = strlen(g_log);
  if (l + strlen(line) + 2 < sizeof g_log) {
    memcpy(g_log + l, line, strlen(line));
    g_log[l + strlen(line)] = '\n';
    g_log[l + strlen(line) + 1] = 0;
  }
}

/* ---- results ---- */

typedef struct done_rec {
  int n;
  amn_status_code code;
  char msg[300];
  uint8_t data[256];
  size_t len;
} done_rec;

static void on_done(const amn_result *r, void *ud) {
  done_rec *d = ud;
  d->n++;
  d->code = r->code;
  snprintf(d->msg, sizeof d->msg, "%s", r->message ? r->message : "");
  d->len = r->len;
  if (r->data && r->len <= sizeof d->data) memcpy(d->data, r->data, r->len);
}

static int unary(const char *method, const char *req, uint32_t timeout_ms, bool idempotent, done_rec *d) {
  amn_call_opts o = {.timeout_ms = timeout_ms, .idempotent = idempotent};
  int side = g_side;
  g_side = SIDE_CLIENT;
  int rc = amn_client_unary_async(g_cl, method, (const uint8_t *)req, strlen(req), &o, on_done, d);
  g_side = side;
  return rc;
}

/* ---- per test ---- */

static int setup(void **st) {
  (void)st;
  amn_h2io_test_hook = &g_hook;
  g_nroute = g_connects = 0;
  g_ka_ms = 0;
  g_srv->bc.keepalive_interval_ms = g_srv->bc.keepalive_timeout_ms = 0; /* (a test may set them) */
  g_held = NULL;
  g_cancels = g_msgs = g_npaused = 0;
  g_cancel_why = AMN_STATUS_OK;
  g_log[0] = 0;
  return 0;
}

static int teardown(void **st) {
  (void)st;
  if (g_cl) client_free(g_cl);
  g_cl = NULL;
  for (int i = 0; i < 50 && g_sl.bl.nconns; i++) turn();
  peer_free(g_cpeer);
  g_cpeer = NULL;
  for (int i = 0; i < g_nspeers; i++) peer_free(g_speers[i]);
  g_nspeers = 0;
  mends_close_test_ends(); /* the server's connections see the end */
  for (int i = 0; i < TURNS_MAX && g_sl.bl.nconns; i++) turn();
  assert_int_equal(g_sl.bl.nconns, 0);
  assert_int_equal(atomic_load(&g_srv->bc.buffered), 0);
  mends_free();
  amn_h2io_test_hook = NULL;
  return 0;
}

/* ---- tests ---- */

/* Our client and our server: unary calls, end
 * to end through both call cores, over TLS with verified certificates. */
static void test_unary(void **st) {
  (void)st;
  good_client();
  done_rec d = {0};
  assert_int_equal(unary("/t.S/Echo", "hello", 0, false, &d), 0);
  RUN_UNTIL(d.n == 1);
  assert_int_equal(d.code, AMN_STATUS_OK);
  assert_int_equal(d.len, 5);
  assert_memory_equal(d.data, "hello", 5);
  assert_int_equal(g_connects, 1);
  assert_int_equal(atomic_load(&g_srv->bc.nconns), 1);

  assert_non_null(strstr(g_peer_subject, "CN=amaters-dev-client")); /* the verified client certificate */
  done_rec d2 = {0};
  assert_int_equal(unary("/t.S/Echo", "again", 0, false, &d2), 0);
  RUN_UNTIL(d2.n == 1);
  assert_int_equal(d2.code, AMN_STATUS_OK);
  assert_int_equal(g_connects, 1); /* the same connection */
}

typedef struct srec {
  int msgs;
  size_t bytes;
  int closes;
  amn_status_code code;
  char last[64];
} srec;
static void s_msg(amn_cstream *s, const uint8_t *m, size_t n, void *ud) {
  (void)s;
  srec *r = ud;
  r->msgs++;
  r->bytes += n;
  snprintf(r->last, sizeof r->last, "%.*s", (int)n, (const char *)m);
}
static void s_close(amn_cstream *s, const amn_result *res, void *ud) {
  (void)s;
  srec *r = ud;
  r->closes++;
  r->code = res->code;
}

/* A stream of our client (made here) to `method`; what happens is in r. */
static amn_cstream *stream_open(const char *method, srec *r) {
  good_client();
  amn_cstream_cbs cbs = {.on_message = s_msg, .on_close = s_close};
  amn_cstream *s = NULL;
  assert_int_equal(amn_client_stream_open(g_cl, method, NULL, &cbs, r, &s), 0);
  return s;
}

static void test_stream(void **st) {
  (void)st;
  srec r = {0};
  amn_cstream *s = stream_open("/t.S/Stream", &r);
  for (int i = 0; i < 5; i++) {
    char m[16];
    snprintf(m, sizeof m, "msg-%d", i);
    assert_int_equal(amn_cstream_send(s, (const uint8_t *)m, strlen(m)), 0);
    RUN_UNTIL(r.msgs == i + 1); /* each echoed before the next goes */
    assert_string_equal(r.last, m);
  }
  assert_int_equal(amn_cstream_close_send(s), 0);
  RUN_UNTIL(r.closes == 1);
  assert_int_equal(r.code, AMN_STATUS_OK);
  assert_int_equal(g_msgs, 5);
  amn_cstream_release(s);
}

/* The client cancels a stream: RST_STREAM(CANCEL) reaches the server,
 * whose handler hears CANCELLED. */
static void test_client_cancel(void **st) {
  (void)st;
  srec r = {0};
  amn_cstream *s = stream_open("/t.S/Hold", &r);
  assert_int_equal(amn_cstream_send(s, (const uint8_t *)"x", 1), 0);
  RUN_UNTIL(g_held != NULL);
  amn_cstream_cancel(s);
  RUN_UNTIL(g_cancels == 1 && r.closes == 1);
  assert_int_equal(g_cancel_why, AMN_STATUS_CANCELLED);
  assert_null(g_held);
  assert_int_equal(r.code, AMN_STATUS_CANCELLED);
  amn_cstream_release(s);
  settle();
  assert_int_equal(atomic_load(&g_srv->bc.nconns), 1); /* only the stream ended */
}

/* grpc-timeout becomes the server call's deadline on the fake clock; past
 * it, the deadline fires: the handler hears DEADLINE_EXCEEDED and so does
 * the client. */
static void test_deadline(void **st) {
  (void)st;
  good_client();
  done_rec d = {0};
  assert_int_equal(unary("/t.S/Hold", "x", 60000, false, &d), 0);
  RUN_UNTIL(g_held != NULL);
  amn_call *c = g_held;
  int64_t left = amn_call_deadline_remaining_ms(c);
  assert_true(left > 59000 && left <= 60000);
  g_now += 30 * 1000000000LL;
  assert_true(amn_call_deadline_remaining_ms(c) <= 30000);
  turn();
  assert_int_equal(d.n, 0);
  g_now += 31 * 1000000000LL; /* past it: its timer fires (as libev would) */
  assert_int_equal(amn_call_deadline_remaining_ms(c), 0);
  assert_true(ev_is_active(&c->deadline_timer));
  ev_invoke(g_sl.ev, &c->deadline_timer, EV_TIMER);
  RUN_UNTIL(d.n == 1);
  assert_int_equal(g_cancels, 1);
  assert_int_equal(g_cancel_why, AMN_STATUS_DEADLINE_EXCEEDED);
  assert_int_equal(d.code, AMN_STATUS_DEADLINE_EXCEEDED);
}

/* Our server drains (GOAWAY with the last stream it processed): the call in
 * flight completes on the old connection; the next call goes to a new one. */
static void test_server_goaway_drain(void **st) {
  (void)st;
  good_client();
  done_rec held = {0}, next = {0};
  assert_int_equal(unary("/t.S/Hold", "x", 0, false, &held), 0);
  RUN_UNTIL(g_held != NULL);
  g_sl.bl.stopping = true; /* as amn_server_stop begins */
  amn_h2s_drain_all(&g_sl.bl);
  g_sl.bl.stopping = false;
  settle();
  assert_int_equal(held.n, 0); /* still in flight */
  assert_int_equal(unary("/t.S/Echo", "after", 0, false, &next), 0);
  RUN_UNTIL(next.n == 1);
  assert_int_equal(next.code, AMN_STATUS_OK);
  assert_int_equal(g_connects, 2); /* a new connection took it */
  amn_call_send(g_held, (const uint8_t *)"late", 4);
  amn_call_finish(g_held, AMN_STATUS_OK, NULL);
  g_held = NULL;
  RUN_UNTIL(held.n == 1);
  assert_int_equal(held.code, AMN_STATUS_OK);
  assert_int_equal(held.len, 4);
  RUN_UNTIL(g_sl.bl.nconns == 1); /* the drained connection closed once its call was done */
}

/* A server (the test's nghttp2 session) says GOAWAY with last stream 0
 * while a call is in flight: the call provably never ran, and the client
 * sends it again on a new connection (our server), transparently. */
static void test_goaway_unprocessed_retried(void **st) {
  (void)st;
  g_route[0] = TO_PEER;
  g_nroute = 1;
  good_client();
  done_rec d = {0};
  assert_int_equal(unary("/t.S/Echo", "retry-me", 0, false, &d), 0);
  peer *p = g_speers[0];
  RUN_UNTIL(g_nspeers == 1 && g_speers[0]->nst == 1 && g_speers[0]->st[0].ended);
  p = g_speers[0];
  assert_string_equal(p->st[0].path, "/t.S/Echo");
  assert_int_equal(nghttp2_submit_goaway(p->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0), 0);
  RUN_UNTIL(d.n == 1);
  assert_int_equal(d.code, AMN_STATUS_OK);
  assert_memory_equal(d.data, "retry-me", 8);
  assert_int_equal(g_connects, 2);
  uint64_t retries = 0;
  amn_endpoint_stats es;
  amn_client_stats(g_cl, &es, 1, &retries);
  assert_int_equal(retries, 1);
}

/* Our client against the test's server: a call answered as usual; then,
 * with the next call processed, the server says GOAWAY (an error) and
 * closes: a call that is not idempotent fails UNAVAILABLE with the server's
 * reason, and is not sent again. */
static void test_goaway_processed_fails(void **st) {
  (void)st;
  g_route[0] = TO_PEER;
  g_nroute = 1;
  good_client();
  done_rec d1 = {0}, d = {0};
  assert_int_equal(unary("/t.S/Echo", "one", 0, false, &d1), 0);
  RUN_UNTIL(g_nspeers == 1 && g_speers[0]->nst == 1 && g_speers[0]->st[0].ended);
  peer *p = g_speers[0];
  uint8_t m[16];
  size_t ml = frame_msg(m, "answer", 6);
  peer_respond(p, p->st[0].id, m, ml, "0");
  RUN_UNTIL(d1.n == 1);
  assert_int_equal(d1.code, AMN_STATUS_OK);
  assert_int_equal(d1.len, 6);
  assert_memory_equal(d1.data, "answer", 6);

  assert_int_equal(unary("/t.S/Echo", "x", 0, false, &d), 0);
  RUN_UNTIL(p->nst == 2 && p->st[1].ended);
  assert_int_equal(nghttp2_submit_goaway(p->h2, NGHTTP2_FLAG_NONE, p->st[1].id, NGHTTP2_INTERNAL_ERROR,
                                         (const uint8_t *)"going down", 10), 0);
  peer_turn(p);
  mend_close(p->end);
  RUN_UNTIL(d.n == 1);
  assert_int_equal(d.code, AMN_STATUS_UNAVAILABLE);
  assert_non_null(strstr(d.msg, "going down"));
  settle();
  uint64_t retries = 0;
  amn_endpoint_stats es;
  amn_client_stats(g_cl, &es, 1, &retries);
  assert_int_equal(retries, 0); /* not sent again (a replacement connection may open) */
  assert_int_equal(g_msgs, 0);
}

/* One early write per read event (h2io.c io_read): 50 requests arrive in
 * one TLS record (about 7.5 KB); the server decodes it 4 KiB at a time and
 * writes the answers of the first slice before it decodes the rest, in the
 * same loop turn (before, nothing went out until the loop's next turn,
 * when everything did). Then every call completes. */
static void test_early_write(void **st) {
  (void)st;
  g_cpeer = peer_new(false, server_conn(false), "client.pem", "client-key.pem");
  settle();
  assert_true(g_cpeer->hs_done);
  static uint8_t body[128];
  uint8_t msg[100];
  memset(msg, 'q', sizeof msg);
  size_t blen = frame_msg(body, msg, sizeof msg);
  int32_t sid[50];
  g_cpeer->cork = true;
  for (int i = 0; i < 50; i++) sid[i] = peer_request(g_cpeer, "/t.S/Echo", body, blen, true, NULL);
  int msgs0 = g_msgs;
  size_t sent0 = g_cpeer->end->sent;
  g_side = SIDE_NONE;
  peer_turn(g_cpeer); /* all 50 requests, one record */
  assert_true(g_cpeer->end->sent - sent0 > 4096 && g_cpeer->end->sent - sent0 < 16384);
  mend *srv = g_cpeer->end->peer;
  size_t sends0 = srv->sends, bytes0 = srv->sent;
  g_side = SIDE_SERVER;
  ev_run(g_sl.ev, EVRUN_NOWAIT); /* one turn of the server's loop: the read, no pre-poll flush yet */
  g_side = SIDE_NONE;
  assert_int_equal(g_msgs - msgs0, 50);     /* the whole record was decoded in this turn */
  assert_int_equal(srv->sends - sends0, 1); /* and one write went out in the middle of it */
  assert_true(srv->sent - bytes0 > 0);
  g_cpeer->cork = false;
  settle();
  for (int i = 0; i < 50; i++) {
    pstream *ps = pst(g_cpeer, sid[i], false);
    assert_true(ps->ended);
    assert_string_equal(ps->grpc_status_in, "0");
  }
}

/* Flow control under the connection's memory bound: while paused handlers
 * hold more than the bound allows (less the connection window), the server
 * grants no window back, even for a stream whose handler took its bytes;
 * once they let go, the grants follow. The peer counts WINDOW_UPDATEs. */
static void test_flow_control_bound(void **st) {
  (void)st;
  g_cpeer = peer_new(false, server_conn(false), "client.pem", "client-key.pem");
  settle();
  assert_true(g_cpeer->hs_done);
  /* a control: 40000 bytes on a stream whose handler takes them: the
   * stream's window comes back */
  static uint8_t big[4][10005];
  uint8_t chunk[10000];
  memset(chunk, 'a', sizeof chunk);
  size_t blen = 0;
  for (int i = 0; i < 4; i++) blen += frame_msg(big[i], chunk, sizeof chunk);
  static uint8_t body[4 * 10005];
  for (int i = 0; i < 4; i++) memcpy(body + i * 10005, big[i], 10005);
  int32_t ctl = peer_request(g_cpeer, "/t.S/Stream", body, blen, false, NULL);
  settle();
  assert_int_equal(g_msgs, 4);
  pstream *ps = pst(g_cpeer, ctl, false);
  assert_true(ps->wu >= 32768); /* granted back (nghttp2 sends it once half the window is consumed) */

  /* 16 paused handlers hold 3 x 20000 bytes each (less the first message) */
  static uint8_t pbody[3 * 20005];
  uint8_t m2[20000];
  memset(m2, 'b', sizeof m2);
  size_t plen = 0;
  for (int i = 0; i < 3; i++) plen += frame_msg(pbody + plen, m2, sizeof m2);
  int32_t ps_id[16];
  for (int i = 0; i < 16; i++) ps_id[i] = peer_request(g_cpeer, "/t.S/Pause", pbody, plen, false, NULL);
  settle();
  assert_int_equal(g_npaused, 16);
  const amn_st_budget *b = g_paused[0]->budget; /* the connection's */
  assert_true(b->held >= b->grant_below && b->held < b->limit); /* past the grant line, under the bound */
  for (int i = 0; i < 16; i++) assert_int_equal(pst(g_cpeer, ps_id[i], false)->wu, 0); /* paused: no grant */

  /* the control stream again: its handler takes the bytes, no grant */
  uint64_t wu_before = ps->wu, conn_before = g_cpeer->wu_conn;
  int msgs_before = g_msgs;
  peer_more(g_cpeer, ctl, body, blen, false);
  settle();
  assert_int_equal(g_msgs, msgs_before + 4); /* the handler took them ... */
  assert_int_equal(ps->wu, wu_before);       /* ... and no window came back */
  assert_int_equal(g_cpeer->wu_conn, conn_before);

  /* the paused handlers let go: the grants follow */
  for (int i = 0; i < 16; i++)
    if (g_paused[i]) amn_call_resume_recv(g_paused[i]);
  settle();
  assert_true(ps->wu >= wu_before + 32768);
  assert_true(g_cpeer->wu_conn > conn_before);
  assert_true(b->held < b->grant_below);
  for (int i = 0; i < 16; i++) peer_more(g_cpeer, ps_id[i], NULL, 0, true);
  peer_more(g_cpeer, ctl, NULL, 0, true);
  settle();
  assert_string_equal(ps->grpc_status_in, "0");
  for (int i = 0; i < 16; i++) assert_string_equal(pst(g_cpeer, ps_id[i], false)->grpc_status_in, "0");
}

/* Malformed input from the peer gets the specific error. */
static void test_malformed(void **st) {
  (void)st;
  static const struct {
    const char *what;
    uint8_t frame[16];
    size_t len;
    uint32_t goaway;
  } cases[] = {
      /* HEADERS on an even (server-initiated) stream id */
      {"even stream", {0, 0, 1, 1, 5, 0, 0, 0, 2, 0x82}, 10, NGHTTP2_PROTOCOL_ERROR},
      /* WINDOW_UPDATE of 0 on the connection */
      {"zero window update", {0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 13, NGHTTP2_PROTOCOL_ERROR},
      /* SETTINGS with a length not a multiple of 6 */
      {"bad settings", {0, 0, 3, 4, 0, 0, 0, 0, 0, 0, 1, 0}, 12, NGHTTP2_FRAME_SIZE_ERROR},
      /* DATA on an idle stream */
      {"data on idle stream", {0, 0, 1, 0, 0, 0, 0, 0, 7, 'x'}, 10, NGHTTP2_PROTOCOL_ERROR},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    peer *p = g_cpeer = peer_new(false, server_conn(false), "client.pem", "client-key.pem");
    settle();
    assert_true(p->hs_done && p->settings == 1);
    peer_raw(p, cases[i].frame, cases[i].len);
    settle();
    if (p->goaways != 1 || p->goaway_code != cases[i].goaway)
      fail_msg("%s: GOAWAY %d code %u, expected %u", cases[i].what, p->goaways, p->goaway_code, cases[i].goaway);
    RUN_UNTIL(g_sl.bl.nconns == 0 || p->eof); /* the server closes (after a linger) */
    mend_close(p->end);
    RUN_UNTIL(g_sl.bl.nconns == 0);
    peer_free(p);
    g_cpeer = NULL;
  }
  /* a request with a connection-specific header field (RFC 9113 8.2.2):
   * that stream only is reset */
  peer *p = g_cpeer = peer_new(false, server_conn(false), "client.pem", "client-key.pem");
  settle();
  nghttp2_nv h[] = {{(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
                    {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
                    {(uint8_t *)":path", (uint8_t *)"/t.S/Echo", 5, 9, 0},
                    {(uint8_t *)":authority", (uint8_t *)"localhost", 10, 9, 0},
                    {(uint8_t *)"connection", (uint8_t *)"close", 10, 5, 0}};
  int32_t sid = nghttp2_submit_request(p->h2, NULL, h, 5, NULL, NULL);
  assert_true(sid > 0);
  settle();
  pstream *ps = pst(p, sid, false);
  assert_non_null(ps);
  assert_int_equal(ps->rst_in, NGHTTP2_PROTOCOL_ERROR);
  assert_int_equal(p->goaways, 0);
  /* the connection still serves */
  uint8_t m[16];
  size_t ml = frame_msg(m, "ok", 2);
  int32_t s2 = peer_request(p, "/t.S/Echo", m, ml, true, NULL);
  settle();
  assert_string_equal(pst(p, s2, false)->grpc_status_in, "0");
}

/* A client certificate from another CA (same subject) is refused by the
 * server's verification: no call runs, the client's call fails. */
static void test_bad_client_cert(void **st) {
  (void)st;
  amn_log_set_sink(log_sink, NULL);
  amn_log_set_level(AMN_LOG_WARN);
  g_cl = client_new("cli-evil.pem", "cli-evil-key.pem");
  assert_non_null(g_cl);
  done_rec d = {0};
  assert_int_equal(unary("/t.S/Echo", "x", 0, false, &d), 0);
  RUN_UNTIL(d.n == 1);
  assert_int_equal(d.code, AMN_STATUS_UNAVAILABLE);
  assert_int_equal(g_msgs, 0);
  assert_non_null(strstr(d.msg, "peer refused the TLS session: alert 'Certificate is bad'"));
  RUN_UNTIL(g_sl.bl.nconns == 0); /* the server logs why once the connection is gone */
  assert_non_null(strstr(g_log, "refused: TLS handshake failed: client certificate not issued by a trusted CA"));
  amn_log_set_sink(NULL, NULL);
  amn_log_set_level(AMN_LOG_ERROR);

  /* the test's own client with it: its handshake fails with an alert */
  peer *p = g_cpeer = peer_new(false, server_conn(false), "cli-evil.pem", "cli-evil-key.pem");
  settle();
  assert_int_equal(g_msgs, 0);
  assert_true(p->hs_rc != 0 || p->eof);
}

/* The phases of a request on the fake clock: a request whose bytes stop
 * coming fails after stall_timeout_ms; one whose header block never ends,
 * after header_timeout_ms. (Their libev timers are invoked: no real time
 * passes.) */
static void test_phase_timeouts(void **st) {
  (void)st;
  peer *p = g_cpeer = peer_new(false, server_conn(false), "client.pem", "client-key.pem");
  settle();
  static const uint8_t part[] = {0, 0, 0, 0, 100, 'o', 'n', 'l', 'y', ' ', 't', 'e', 'n', '.', '.'};
  int32_t sid = peer_request(p, "/t.S/Stream", part, sizeof part, false, NULL);
  settle();
  assert_non_null(g_sl.progress.head); /* the call waits on the client */
  g_now += 29 * 1000000000LL;
  ev_invoke(g_sl.ev, &g_sl.progress.timer, EV_TIMER);
  settle();
  assert_int_equal(pst(p, sid, false)->grpc_status_in[0], 0); /* not yet */
  g_now += 2 * 1000000000LL;
  ev_invoke(g_sl.ev, &g_sl.progress.timer, EV_TIMER);
  settle();
  pstream *ps = pst(p, sid, false);
  assert_string_equal(ps->grpc_status_in, "8"); /* RESOURCE_EXHAUSTED */
  assert_string_equal(ps->grpc_message, "request stalled: no bytes for 30000 ms");
  assert_null(g_sl.progress.head);

  /* a header block that never ends (HEADERS without END_HEADERS, then
   * nothing), on a fresh connection (the frames are read raw) */
  mend_close(p->end);
  settle();
  peer_free(p);
  p = g_cpeer = peer_new(false, server_conn(false), "client.pem", "client-key.pem");
  settle();
  p->raw = true;
  static const uint8_t headers[] = {0, 0, 2, NGHTTP2_HEADERS, 0, 0, 0, 0, 1, 0x83, 0x87};
  peer_raw(p, headers, sizeof headers);
  settle();
  assert_non_null(g_sl.hdr_phase.head);
  assert_int_equal(p->nrf, 0);
  g_now += 9 * 1000000000LL;
  ev_invoke(g_sl.ev, &g_sl.hdr_phase.timer, EV_TIMER);
  settle();
  assert_int_equal(p->nrf, 0); /* not yet */
  g_now += 2 * 1000000000LL;
  ev_invoke(g_sl.ev, &g_sl.hdr_phase.timer, EV_TIMER);
  settle();
  assert_null(g_sl.hdr_phase.head);
  /* a final status (trailers-only), then RST_STREAM(NO_ERROR): stop sending */
  assert_int_equal(p->nrf, 2);
  assert_int_equal(p->rf[0].type, NGHTTP2_HEADERS);
  assert_int_equal(p->rf[0].sid, 1);
  assert_int_equal(p->rf[0].flags, NGHTTP2_FLAG_END_STREAM | NGHTTP2_FLAG_END_HEADERS);
  assert_non_null(strstr(p->rf[0].fields, "grpc-status=4;"));
  assert_non_null(strstr(p->rf[0].fields, "grpc-message=request headers not complete within 10000 ms;"));
  assert_int_equal(p->rf[1].type, NGHTTP2_RST_STREAM);
  assert_int_equal(p->rf[1].code, NGHTTP2_NO_ERROR);
}

/* The raw frames a peer received since `from` of one type. */
static int raw_count(const peer *p, int from, uint8_t type) {
  int n = 0;
  for (int i = from; i < p->nrf; i++) n += p->rf[i].type == type;
  return n;
}

/* The server's keepalive on the fake clock: a quiet connection gets a PING
 * each interval; answered, it lives; unanswered within the timeout, it
 * closes. */
static void test_keepalive_server(void **st) {
  (void)st;
  g_srv->bc.keepalive_interval_ms = 1000;
  g_srv->bc.keepalive_timeout_ms = 1000;
  peer *p = g_cpeer = peer_new(false, server_conn(false), "client.pem", "client-key.pem");
  settle();
  amn_h2s_test_fire_timers(&g_sl.bl);
  settle();
  assert_int_equal(p->pings, 0); /* not quiet for an interval yet */
  for (int i = 1; i <= 2; i++) {
    g_now += 1000 * 1000000LL;
    amn_h2s_test_fire_timers(&g_sl.bl);
    settle();
    assert_int_equal(p->pings, i); /* answered by the peer's nghttp2 */
  }
  p->raw = true; /* the peer stops answering */
  g_now += 1000 * 1000000LL;
  amn_h2s_test_fire_timers(&g_sl.bl);
  settle();
  assert_int_equal(raw_count(p, 0, NGHTTP2_PING), 1);
  assert_int_equal(g_sl.bl.nconns, 1);
  g_now += 900 * 1000000LL;
  amn_h2s_test_fire_timers(&g_sl.bl);
  settle();
  assert_int_equal(g_sl.bl.nconns, 1); /* the timeout is not over */
  g_now += 100 * 1000000LL;
  amn_h2s_test_fire_timers(&g_sl.bl);
  RUN_UNTIL(g_sl.bl.nconns == 0);
  RUN_UNTIL(p->eof);
}

/* The client's keepalive on the fake clock, while a call waits on a server
 * (the test's) that stops answering PINGs: the connection is declared dead
 * and the call fails with the reason. */
static void test_keepalive_client(void **st) {
  (void)st;
  g_route[0] = TO_PEER;
  g_nroute = 1;
  g_ka_ms = 1000;
  good_client();
  done_rec d = {0};
  assert_int_equal(unary("/t.S/Echo", "x", 0, false, &d), 0);
  RUN_UNTIL(g_nspeers == 1 && g_speers[0]->nst == 1 && g_speers[0]->st[0].ended);
  peer *p = g_speers[0];
  void *conn = g_cl->eps[0].slots->conn;
  g_now += 1000 * 1000000LL;
  amn_h2c_test_fire_timers(conn);
  settle();
  assert_int_equal(p->pings, 1);
  p->raw = true;
  g_now += 1000 * 1000000LL;
  amn_h2c_test_fire_timers(conn);
  settle();
  assert_int_equal(raw_count(p, 0, NGHTTP2_PING), 1);
  assert_int_equal(d.n, 0);
  g_now += 1000 * 1000000LL;
  amn_h2c_test_fire_timers(conn);
  RUN_UNTIL(d.n == 1);
  assert_int_equal(d.code, AMN_STATUS_UNAVAILABLE);
  assert_non_null(strstr(d.msg, "keepalive: no answer to a PING within 1000 ms"));
}

/* ---- allocation failures ---- */

/* One unary call from our client to our server, each on its own fresh
 * connection; everything is torn down. Returns the call's status (-1: not
 * even started). */
/* The client's and the server's connections are gone and freed. */
static void alloc_run_end(void) {
  if (g_cl) client_free(g_cl);
  g_cl = NULL;
  for (int i = 0; i < TURNS_MAX && g_sl.bl.nconns; i++) turn();
  assert_int_equal(g_sl.bl.nconns, 0);
  mends_free();
  assert_int_equal(atomic_load(&g_srv->bc.buffered), 0);
}

/* One unary call from our client to our server, on a fresh client and
 * connection; everything is torn down. Returns the call's status (-1: not
 * even started); *ok: it succeeded with the right answer. */
static int alloc_run_unary(bool *ok) {
  *ok = false;
  done_rec d = {0};
  int code = -1;
  g_cl = client_new("client.pem", "client-key.pem");
  if (g_cl && unary("/t.S/Echo", "payload", 0, false, &d) == 0) {
    int i = 0;
    while (d.n == 0 && i++ < TURNS_MAX) turn();
    assert_int_equal(d.n, 1); /* no hang: the call ends */
    code = (int)d.code;
    *ok = d.code == AMN_STATUS_OK && d.len == 7 && memcmp(d.data, "payload", 7) == 0;
    if (d.code == AMN_STATUS_OK) assert_true(*ok); /* never OK with a wrong body */
  }
  alloc_run_end();
  return code;
}

/* A fresh client and its stream to `method` (NULL when memory ran out);
 * returns with g_side SIDE_CLIENT. */
static amn_cstream *alloc_stream_open(const char *method, srec *r) {
  g_cl = client_new("client.pem", "client-key.pem");
  amn_cstream_cbs cbs = {.on_message = s_msg, .on_close = s_close};
  amn_cstream *s = NULL;
  g_side = SIDE_CLIENT;
  if (g_cl && amn_client_stream_open(g_cl, method, NULL, &cbs, r, &s) != 0) s = NULL;
  return s;
}

/* The same with a stream: two messages, one of several frames, echoed. */
static int alloc_run_stream(bool *ok) {
  *ok = false;
  int code = -1;
  static uint8_t big[20000];
  memset(big, 'z', sizeof big);
  srec r = {0};
  int side = g_side;
  amn_cstream *s = alloc_stream_open("/t.S/Stream", &r);
  if (s) {
    int r1 = amn_cstream_send(s, (const uint8_t *)"first", 5), r2 = amn_cstream_send(s, big, sizeof big);
    int r3 = amn_cstream_close_send(s);
    g_side = side;
    int i = 0;
    while (r.closes == 0 && i++ < TURNS_MAX) turn();
    assert_int_equal(r.closes, 1); /* no hang: the call ends */
    code = (int)r.code;
    *ok = r.code == AMN_STATUS_OK && r1 == 0 && r2 == 0 && r3 == 0 && r.msgs == 2 && r.bytes == 5 + sizeof big;
    if (r.code == AMN_STATUS_OK) assert_int_equal(r.bytes, (r1 == 0 ? 5 : 0) + (r2 == 0 ? sizeof big : 0));
    g_side = SIDE_CLIENT;
    amn_cstream_release(s);
  }
  g_side = side;
  alloc_run_end();
  return code;
}

/* A stream the client cancels once the server's handler holds it: the
 * handler hears of it (or of the connection's end) and finishes; the
 * client's stream ends once, CANCELLED unless it failed first. */
static int alloc_run_cancel(bool *ok) {
  *ok = false;
  int code = -1;
  g_held = NULL;
  g_cancels = 0;
  srec r = {0};
  int side = g_side;
  amn_cstream *s = alloc_stream_open("/t.S/Hold", &r);
  if (s) {
    int r1 = amn_cstream_send(s, (const uint8_t *)"hold", 4);
    g_side = side;
    int i = 0;
    while (r1 == 0 && !g_held && r.closes == 0 && i++ < TURNS_MAX) turn();
    if (r1 == 0 && !g_held && !r.closes)
      fail_msg("allocation %ld failing: the stream is never held nor closed (%d turns)", g_fail_at, TURNS_MAX);
    bool held = g_held != NULL;
    g_side = SIDE_CLIENT;
    amn_cstream_cancel(s);
    g_side = side;
    for (i = 0; (r.closes == 0 || g_held) && i < TURNS_MAX; i++) turn();
    assert_int_equal(r.closes, 1);
    if (g_held) fail_msg("allocation %ld failing: the client's stream ended (%d) but the server's handler never heard", g_fail_at, r.code);
    code = (int)r.code;
    *ok = held && r1 == 0 && r.code == AMN_STATUS_CANCELLED && g_cancels == 1 && g_cancel_why == AMN_STATUS_CANCELLED;
    g_side = SIDE_CLIENT;
    amn_cstream_release(s);
  }
  g_side = side;
  alloc_run_end();
  assert_null(g_held);
  return code == AMN_STATUS_CANCELLED ? 0 : code; /* (a cancelled stream is this run's success) */
}

/* A unary call past its deadline on the fake clock while the handler holds
 * it: DEADLINE_EXCEEDED for the handler and the client. */
static int alloc_run_deadline(bool *ok) {
  *ok = false;
  int code = -1;
  g_held = NULL;
  g_cancels = 0;
  done_rec d = {0};
  g_cl = client_new("client.pem", "client-key.pem");
  if (g_cl && unary("/t.S/Hold", "x", 5000, false, &d) == 0) {
    int i = 0;
    while (!g_held && d.n == 0 && i++ < TURNS_MAX) turn();
    assert_true(g_held || d.n); /* no hang */
    bool held = g_held != NULL;
    if (held) {
      g_now += 6 * 1000000000LL;
      g_side = SIDE_SERVER;
      if (ev_is_active(&g_held->deadline_timer)) ev_invoke(g_sl.ev, &g_held->deadline_timer, EV_TIMER);
      g_side = SIDE_NONE;
    }
    for (i = 0; (d.n == 0 || g_held) && i < TURNS_MAX; i++) turn();
    assert_int_equal(d.n, 1);
    assert_null(g_held); /* the handler heard and finished */
    code = (int)d.code;
    *ok = held && d.code == AMN_STATUS_DEADLINE_EXCEEDED && g_cancel_why == AMN_STATUS_DEADLINE_EXCEEDED;
  }
  alloc_run_end();
  return code == AMN_STATUS_DEADLINE_EXCEEDED ? 0 : code; /* (this run's success) */
}

static void every_allocation_fails(int (*alloc_run)(bool *ok), int side, const char *name) {
  amn_log_set_sink(log_sink, NULL); /* "out of memory" lines: expected */
  bool ok;
  assert_int_equal(alloc_run(&ok), 0); /* warm: the same path without failures */
  assert_true(ok);
  g_h2_allocs[side] = 0;
  assert_int_equal(alloc_run(&ok), 0);
  long h2_allocs = g_h2_allocs[side];
  amn_call_cache_free(&g_sl);
  int runs = 0, statuses = 0;
  for (long n = 1; n < 5000; n++) {
    amn_h2s_free(&g_sl.bl); /* the binding's loop state and stream records are allocated afresh */
    long live = g_live;
    g_alloc_seen = 0;
    g_failed = false;
    g_fail_side = side;
    g_fail_at = n;
    int code = alloc_run(&ok);
    g_fail_at = 0;
    amn_call_cache_free(&g_sl);
    amn_h2s_free(&g_sl.bl);
    runs++;
    if (g_live != live) fail_msg("%s: allocation %ld failing leaked %ld blocks", name, n, g_live - live);
    if (!g_failed) { /* more allocations than the call makes: done */
      assert_int_equal(code, 0);
      assert_true(ok);
      break;
    }
    if (code > 0) statuses++;
  }
  print_message("  %s: %d runs, %d allocations (%ld of them nghttp2's); %d failures ended the call with another "
                "status than a run without failure, the others as it does\n", name, runs, runs - 1, h2_allocs, statuses);
  assert_true(runs > 10);
  amn_log_set_sink(NULL, NULL);
}

static void test_alloc_fail_server(void **st) {
  (void)st;
  every_allocation_fails(alloc_run_unary, SIDE_SERVER, "unary, server");
  every_allocation_fails(alloc_run_stream, SIDE_SERVER, "stream, server");
  every_allocation_fails(alloc_run_cancel, SIDE_SERVER, "cancel, server");
  every_allocation_fails(alloc_run_deadline, SIDE_SERVER, "deadline, server");
}
static void test_alloc_fail_client(void **st) {
  (void)st;
  every_allocation_fails(alloc_run_unary, SIDE_CLIENT, "unary, client");
  every_allocation_fails(alloc_run_stream, SIDE_CLIENT, "stream, client");
  every_allocation_fails(alloc_run_cancel, SIDE_CLIENT, "cancel, client");
  every_allocation_fails(alloc_run_deadline, SIDE_CLIENT, "deadline, client");
}

/* ---- main ---- */

static int group_setup(void **st) {
  (void)st;
  amn_log_set_level(AMN_LOG_ERROR);
  const char *t = getenv("TMPDIR");
  snprintf(g_tmp, sizeof g_tmp, "%s/amn-h2b-XXXXXX", t && *t ? t : "/tmp");
  if (!mkdtemp(g_tmp)) return -1;
  snprintf(g_pki, sizeof g_pki, "%s/pki", g_tmp);
  char err[256];
  if (amn_pki_init(g_pki, false, err, sizeof err) != 0) {
    fprintf(stderr, "pki: %s\n", err);
    return -1;
  }
  /* a client certificate from another CA with the same subject names */
  time_t now = time(NULL), day = 86400;
  if (amn_pki_make_ca(P("evil-ca.pem"), P("evil-ca-key.pem"), "amaters-net development CA", now - day, now + day,
                      err, sizeof err) != 0)
    return -1;
  amn_pki_cert_spec sp = {.cn = "amaters-dev-client", .eku = AMN_PKI_EKU_CLIENT, .not_before = now - day,
                          .not_after = now + day};
  if (amn_pki_issue_test_cert(P("evil-ca.pem"), P("evil-ca-key.pem"), &sp, P("cli-evil.pem"), P("cli-evil-key.pem"),
                              err, sizeof err) != 0) {
    fprintf(stderr, "pki: %s\n", err);
    return -1;
  }
  return server_new();
}

static int group_teardown(void **st) {
  (void)st;
  server_free();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_unary, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_cancel, setup, teardown),
      cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_goaway_drain, setup, teardown),
      cmocka_unit_test_setup_teardown(test_goaway_unprocessed_retried, setup, teardown),
      cmocka_unit_test_setup_teardown(test_goaway_processed_fails, setup, teardown),
      cmocka_unit_test_setup_teardown(test_early_write, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flow_control_bound, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_client_cert, setup, teardown),
      cmocka_unit_test_setup_teardown(test_phase_timeouts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keepalive_server, setup, teardown),
      cmocka_unit_test_setup_teardown(test_keepalive_client, setup, teardown),
      cmocka_unit_test_setup_teardown(test_alloc_fail_server, setup, teardown),
      cmocka_unit_test_setup_teardown(test_alloc_fail_client, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
