/* SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "transport/h2/h2io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/log.h"

static void io_do_close(amn_h2io *io);
static void io_handshake(amn_h2io *io);

/* The socket calls, or (test builds) the test's memory pipe. */
#ifdef AMN_TEST_HOOKS
const amn_h2io_test_io *amn_h2io_test_hook;
static ssize_t io_recv(int fd, void *buf, size_t n) {
  return amn_h2io_test_hook ? amn_h2io_test_hook->recv(fd, buf, n) : recv(fd, buf, n, 0);
}
static ssize_t io_send(int fd, const void *buf, size_t n) {
  return amn_h2io_test_hook ? amn_h2io_test_hook->send(fd, buf, n) : send(fd, buf, n, MSG_NOSIGNAL);
}
static void io_shutdown_wr(int fd) {
  if (amn_h2io_test_hook) amn_h2io_test_hook->shutdown_wr(fd);
  else shutdown(fd, SHUT_WR);
}
void amn_h2io_close_fd(int fd) {
  if (amn_h2io_test_hook) amn_h2io_test_hook->close(fd);
  else close(fd);
}
static ssize_t tls_pull(gnutls_transport_ptr_t p, void *buf, size_t n) {
  return amn_h2io_test_hook->recv((int)(intptr_t)p, buf, n);
}
static ssize_t tls_push(gnutls_transport_ptr_t p, const void *buf, size_t n) {
  return amn_h2io_test_hook->send((int)(intptr_t)p, buf, n);
}
static int tls_pull_timeout(gnutls_transport_ptr_t p, unsigned int ms) {
  (void)p; (void)ms;
  return 1; /* non-blocking: pull answers EAGAIN when nothing waits */
}
static void io_set_transport(gnutls_session_t tls, int fd) {
  if (!amn_h2io_test_hook) {
    gnutls_transport_set_int(tls, fd);
    return;
  }
  gnutls_transport_set_ptr(tls, (gnutls_transport_ptr_t)(intptr_t)fd);
  gnutls_transport_set_pull_function(tls, tls_pull);
  gnutls_transport_set_pull_timeout_function(tls, tls_pull_timeout);
  gnutls_transport_set_push_function(tls, tls_push);
}
#else
#define io_recv(fd, buf, n) recv(fd, buf, n, 0)
#define io_send(fd, buf, n) send(fd, buf, n, MSG_NOSIGNAL)
#define io_shutdown_wr(fd) shutdown(fd, SHUT_WR)
#define io_set_transport(tls, fd) gnutls_transport_set_int(tls, fd)
void amn_h2io_close_fd(int fd) { close(fd); }
#endif

static void prep_cb(struct ev_loop *ev, ev_prepare *w, int revents) {
  (void)ev; (void)revents;
  amn_ioloop *l = w->data;
  if (l->before_flush) l->before_flush(l);
  /* flushing may mark other connections dirty (never this list's members
   * again until they are popped), so pop one at a time */
  while (l->dirty) {
    amn_h2io *io = l->dirty;
    l->dirty = io->next_dirty;
    io->next_dirty = NULL;
    io->dirty = false;
    amn_h2io_flush(io);
  }
}

void amn_ioloop_init(amn_ioloop *l, struct ev_loop *ev) {
  l->ev = ev;
  l->dirty = NULL;
  l->before_flush = NULL;
  ev_prepare_init(&l->prep, prep_cb);
  l->prep.data = l;
  ev_prepare_start(ev, &l->prep);
  ev_unref(ev); /* the prepare watcher alone must not keep the loop alive */
}

void amn_ioloop_stop(amn_ioloop *l) {
  ev_ref(l->ev);
  ev_prepare_stop(l->ev, &l->prep);
}

void amn_h2io_mark_dirty(amn_h2io *io) {
  if (io->dirty || io->state == AMN_IO_CLOSED) return;
  io->dirty = true;
  io->next_dirty = io->loop->dirty;
  io->loop->dirty = io;
}

void amn_h2io_close(amn_h2io *io, const char *reason) {
  if (io->state == AMN_IO_CLOSED) return;
  if (io->lingering) { /* already on its way out: no more waiting for the peer */
    ev_timer_stop(io->loop->ev, &io->hs_timer);
    ev_timer_set(&io->hs_timer, 0., 0.);
    ev_timer_start(io->loop->ev, &io->hs_timer);
    return;
  }
  if (!io->close_requested) {
    io->close_requested = true;
    snprintf(io->close_reason, sizeof io->close_reason, "%s", reason ? reason : "closed");
  }
  amn_h2io_mark_dirty(io);
}

void amn_h2io_close_linger(amn_h2io *io, const char *reason, double linger_s) {
  if (io->state == AMN_IO_CLOSED) return;
  io->linger_s = linger_s;
  amn_h2io_close(io, reason);
}

/* Everything is sent: half-close (TLS close_notify + FIN), then read and
 * discard until the peer closes or the linger time is up. Closing with
 * unread input would make the kernel answer with a reset, which can destroy
 * the final frames before the peer reads them. */
static void io_linger(amn_h2io *io) {
  io->lingering = true;
  if (ev_is_active(&io->ww)) ev_io_stop(io->loop->ev, &io->ww);
  if (io->tls && io->state == AMN_IO_OPEN) gnutls_bye(io->tls, GNUTLS_SHUT_WR); /* non-blocking: best effort */
  io_shutdown_wr(io->fd);
  ev_timer_stop(io->loop->ev, &io->hs_timer);
  ev_timer_set(&io->hs_timer, io->linger_s, 0.);
  ev_timer_start(io->loop->ev, &io->hs_timer);
}

static void linger_read(amn_h2io *io) {
  uint8_t *buf = io->loop->rbuf;
  for (;;) {
    ssize_t n = io_recv(io->fd, buf, AMN_IO_RBUF); /* raw bytes: nothing is decoded any more */
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    io_do_close(io);
    return;
  }
}

/* Why a TLS record send or receive failed: the socket's own error when
 * GnuTLS's transport failed (errno of its send/recv, `err`), e.g. a
 * connection reset by a peer that was killed, else GnuTLS's. */
static void tls_failure(char *why, size_t len, const char *op, int rc, int err) {
  if ((rc == GNUTLS_E_PULL_ERROR || rc == GNUTLS_E_PUSH_ERROR) && (err == ECONNRESET || err == EPIPE))
    snprintf(why, len, "connection reset by the peer");
  else if ((rc == GNUTLS_E_PULL_ERROR || rc == GNUTLS_E_PUSH_ERROR) && err)
    snprintf(why, len, "TLS %s failed: %s", op, strerror(err));
  else
    snprintf(why, len, "TLS %s failed: %s", op, gnutls_strerror(rc));
}

/* Writes pending plaintext; returns 1 when all written, 0 on EAGAIN, -1 on error. */
static int io_write_out(amn_h2io *io) {
  while (io->out_off < io->out_len) {
    size_t n = io->out_len - io->out_off;
    ssize_t w;
    if (io->tls) {
      w = gnutls_record_send(io->tls, io->out + io->out_off, n);
      if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED) return 0;
      if (w < 0) {
        int err = errno;
        /* the peer may have refused us with an alert that is still unread */
        uint8_t tmp[256];
        if (gnutls_record_recv(io->tls, tmp, sizeof tmp) == GNUTLS_E_FATAL_ALERT_RECEIVED)
          snprintf(io->close_reason, sizeof io->close_reason, "peer refused the TLS session: alert '%s'",
                   gnutls_alert_get_name(gnutls_alert_get(io->tls)));
        else
          tls_failure(io->close_reason, sizeof io->close_reason, "send", (int)w, err);
        return -1;
      }
    } else {
      w = io_send(io->fd, io->out + io->out_off, n);
      if (w < 0) {
        if (errno == EAGAIN || errno == EINTR) return 0;
        snprintf(io->close_reason, sizeof io->close_reason, "send failed: %s", strerror(errno));
        return -1;
      }
    }
    io->out_off += (size_t)w;
  }
  io->out_off = io->out_len = 0;
  return 1;
}

uint8_t *amn_h2io_out_reserve(amn_h2io *io, size_t n) {
  if (io->out_len + n > io->out_cap) {
    size_t cap = io->out_cap ? io->out_cap : 16384;
    while (cap < io->out_len + n) cap *= 2;
    uint8_t *nb = realloc(io->out, cap);
    if (!nb) return NULL;
    io->out = nb;
    io->out_cap = cap;
  }
  uint8_t *p = io->out + io->out_len;
  io->out_len += n;
  return p;
}

static int out_append(amn_h2io *io, const uint8_t *p, size_t n) {
  if (io->out_len + n > io->out_cap) {
    size_t cap = io->out_cap ? io->out_cap : 16384;
    while (cap < io->out_len + n) cap *= 2;
    uint8_t *nb = realloc(io->out, cap);
    if (!nb) return -1;
    io->out = nb;
    io->out_cap = cap;
  }
  memcpy(io->out + io->out_len, p, n);
  io->out_len += n;
  return 0;
}

/* Writes what is buffered and what nghttp2 has queued until both are empty
 * (1) or the socket is full (0: the write watcher waits); -1 on an error
 * (close_reason set; the caller closes). Never closes by itself. */
static int io_pump(amn_h2io *io) {
  for (;;) {
    int r = io_write_out(io);
    if (r < 0) return -1;
    if (r == 0) {
      if (!ev_is_active(&io->ww)) ev_io_start(io->loop->ev, &io->ww);
      return 0;
    }
    if (!io->h2) return 1;
    /* pull frames from nghttp2 until a batch is large enough */
    size_t pulled = 0;
    while (io->out_len < AMN_IO_WBUF_HIGH) {
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(io->h2, &data);
      if (n < 0) {
        snprintf(io->close_reason, sizeof io->close_reason, "HTTP/2 error: %s", nghttp2_strerror((int)n));
        return -1;
      }
      if (n == 0) break;
      if (out_append(io, data, (size_t)n) < 0) {
        snprintf(io->close_reason, sizeof io->close_reason, "out of memory");
        return -1;
      }
      pulled += (size_t)n;
    }
    if (pulled == 0 && io->out_len == 0) return 1;
  }
}

void amn_h2io_flush(amn_h2io *io) {
  if (io->state == AMN_IO_CLOSED || io->lingering) return;
  if (io->state == AMN_IO_HANDSHAKE) {
    if (io->close_requested) io_do_close(io);
    return;
  }
  int r = io_pump(io);
  if (r < 0) {
    io->close_requested = true;
    io_do_close(io);
    return;
  }
  if (r == 0) return;
  if (io->idle) { /* everything is written and no call is in flight */
    free(io->out);
    io->out = NULL;
    io->out_cap = 0;
  }
  if (ev_is_active(&io->ww)) ev_io_stop(io->loop->ev, &io->ww);
  if (io->close_requested ||
      (io->h2 && !nghttp2_session_want_read(io->h2) && !nghttp2_session_want_write(io->h2))) {
    if (!io->close_requested) snprintf(io->close_reason, sizeof io->close_reason, "session finished");
    if (io->linger_s > 0) io_linger(io);
    else io_do_close(io);
  }
}

static void io_read(amn_h2io *io) {
  uint8_t *buf = io->loop->rbuf;
  bool early = false; /* one early write per read event at most */
  for (int rounds = 0; rounds < 16; rounds++) {
    ssize_t n;
    if (io->tls) {
      n = gnutls_record_recv(io->tls, buf, AMN_IO_RBUF);
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) break;
      if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION) {
        amn_h2io_close(io, "peer closed the connection");
        break;
      }
      if (n == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        /* with TLS 1.3 a client learns here that the server refused its certificate */
        char why[160];
        snprintf(why, sizeof why, "peer refused the TLS session: alert '%s'",
                 gnutls_alert_get_name(gnutls_alert_get(io->tls)));
        amn_h2io_close(io, why);
        break;
      }
      if (n < 0) {
        char why[128];
        tls_failure(why, sizeof why, "receive", (int)n, errno);
        amn_h2io_close(io, why);
        break;
      }
    } else {
      n = io_recv(io->fd, buf, AMN_IO_RBUF);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        char why[128];
        snprintf(why, sizeof why, "receive failed: %s", strerror(errno));
        amn_h2io_close(io, why);
        break;
      }
      if (n == 0) {
        amn_h2io_close(io, "peer closed the connection");
        break;
      }
    }
    io->last_rx = AMN_H2_NOW(io->loop->ev);
    /* The bytes go to nghttp2 a slice at a time; once a slice has made
     * responses ready (the connection was marked dirty), they go out before
     * the next slice is decoded, so that the peer works on them meanwhile
     * instead of waiting for the whole read's answers (one connection with
     * 100 requests in flight: both sides were otherwise idle two thirds of
     * the time). Once per read event: the rest goes with the loop's flush
     * (a write after every slice cost 7 % on two busy connections). */
    ssize_t rv = 0;
    for (size_t off = 0; off < (size_t)n && rv >= 0;) {
      size_t k = (size_t)n - off < AMN_IO_SLICE ? (size_t)n - off : AMN_IO_SLICE;
      if (off && !early && io->dirty && !io->close_requested) {
        early = true;
        if (io_pump(io) < 0) {
          io->close_requested = true; /* closed by the flush after this read */
          break;
        }
      }
      io->in_callback = true;
      rv = nghttp2_session_mem_recv(io->h2, buf + off, k);
      io->in_callback = false;
      off += k;
    }
    if (rv < 0) {
      char why[128];
      bool calm = rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS;
      snprintf(why, sizeof why, "HTTP/2 %s: %s", calm ? "flood" : "protocol error", nghttp2_strerror((int)rv));
      AMN_INFO("%s: %s", io->peer_name ? io->peer_name : "connection", why);
      /* nghttp2 has queued GOAWAY (with its reason) for bad input, not for a
       * flood: then we do, ENHANCE_YOUR_CALM with the reason. It goes out
       * after what is queued before it; then the connection lingers,
       * reading and discarding, so that the peer's unread bytes do not make
       * the kernel reset the connection before the GOAWAY is read. */
      if (calm)
        nghttp2_submit_goaway(io->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(io->h2),
                              NGHTTP2_ENHANCE_YOUR_CALM, (const uint8_t *)why, strlen(why));
      amn_h2io_close_linger(io, why, AMN_IO_REFUSE_LINGER_S);
      break;
    }
    if (io->close_requested) break;
    if ((size_t)n < AMN_IO_RBUF && !(io->tls && gnutls_record_check_pending(io->tls))) break;
  }
  amn_h2io_mark_dirty(io);
}

static void rw_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  amn_h2io *io = w->data;
  if (io->lingering) {
    linger_read(io);
    return;
  }
  if (io->state == AMN_IO_HANDSHAKE) {
    io_handshake(io);
    return;
  }
  io_read(io);
}

static void ww_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  amn_h2io *io = w->data;
  if (io->lingering) return;
  if (io->state == AMN_IO_HANDSHAKE) {
    io_handshake(io);
    return;
  }
  amn_h2io_flush(io);
}

static void hs_timeout_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_h2io *io = w->data;
  if (io->lingering) {
    io_do_close(io);
    return;
  }
  if (io->state != AMN_IO_HANDSHAKE) return;
  snprintf(io->close_reason, sizeof io->close_reason, "TLS handshake timed out");
  io->close_requested = true;
  io_do_close(io);
}

static void io_ready(amn_h2io *io) {
  ev_timer_stop(io->loop->ev, &io->hs_timer);
  if (ev_is_active(&io->ww)) ev_io_stop(io->loop->ev, &io->ww);
  io->state = AMN_IO_OPEN;
  io->last_rx = AMN_H2_NOW(io->loop->ev);
  if (io->cbs->on_ready(io) != 0) {
    if (!io->close_requested) amn_h2io_close(io, "connection setup failed");
    io_do_close(io);
    return;
  }
  amn_h2io_mark_dirty(io);
  /* data may already be buffered inside GnuTLS */
  if (io->tls && gnutls_record_check_pending(io->tls)) io_read(io);
}

static void io_handshake(amn_h2io *io) {
  int r = gnutls_handshake(io->tls);
  if (r == GNUTLS_E_SUCCESS) {
    io_ready(io);
    return;
  }
  if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
    if (gnutls_record_get_direction(io->tls) == 1) {
      if (!ev_is_active(&io->ww)) ev_io_start(io->loop->ev, &io->ww);
    } else if (ev_is_active(&io->ww)) {
      ev_io_stop(io->loop->ev, &io->ww);
    }
    return;
  }
  if (gnutls_error_is_fatal(r) == 0) return; /* warning alert: keep going */
  /* tell the peer why (a TLS alert) rather than just dropping the connection */
  amn_tls_send_alert(io->tls, r);
  snprintf(io->close_reason, sizeof io->close_reason, "TLS handshake failed: %s",
           amn_tls_handshake_error(io->tls, r));
  io->close_requested = true;
  if (!io->is_client) {
    /* the client's handshake bytes may still be unread: closing now would
     * answer them with a TCP reset that can destroy the alert before the
     * client reads it; half-close and drain briefly instead */
    io->linger_s = AMN_IO_REFUSE_LINGER_S;
    io_linger(io);
    return;
  }
  io_do_close(io);
}

void amn_h2io_start(amn_h2io *io, amn_ioloop *l, const amn_h2io_cbs *cbs, int fd, gnutls_session_t tls,
                    double handshake_timeout_s, bool is_client) {
  io->loop = l;
  io->cbs = cbs;
  io->fd = fd;
  io->tls = tls;
  io->is_client = is_client;
  io->state = AMN_IO_HANDSHAKE;
  ev_io_init(&io->rw, rw_cb, fd, EV_READ);
  io->rw.data = io;
  ev_io_init(&io->ww, ww_cb, fd, EV_WRITE);
  io->ww.data = io;
  ev_timer_init(&io->hs_timer, hs_timeout_cb, handshake_timeout_s, 0.);
  io->hs_timer.data = io;
  ev_io_start(l->ev, &io->rw);
  if (!tls) {
    io_ready(io);
    return;
  }
  io_set_transport(tls, fd);
  ev_timer_start(l->ev, &io->hs_timer);
  io_handshake(io);
}

static void io_do_close(amn_h2io *io) {
  if (io->state == AMN_IO_CLOSED) return;
  bool was_open = io->state == AMN_IO_OPEN;
  io->state = AMN_IO_CLOSED;
  struct ev_loop *ev = io->loop->ev;
  ev_io_stop(ev, &io->rw);
  ev_io_stop(ev, &io->ww);
  ev_timer_stop(ev, &io->hs_timer);
  /* unlink from the dirty list if present */
  if (io->dirty) {
    amn_h2io **pp = &io->loop->dirty;
    while (*pp && *pp != io) pp = &(*pp)->next_dirty;
    if (*pp) *pp = io->next_dirty;
    io->dirty = false;
  }
  if (io->tls) {
    if (was_open && !io->lingering) gnutls_bye(io->tls, GNUTLS_SHUT_WR); /* best effort, non-blocking */
  }
  if (io->fd >= 0) amn_h2io_close_fd(io->fd);
  io->fd = -1;
  free(io->out);
  io->out = NULL;
  io->out_len = io->out_off = io->out_cap = 0;
  io->cbs->on_closed(io, io->close_reason[0] ? io->close_reason : "closed");
}

size_t amn_h2_nv(const amn_hdr_buf *b, nghttp2_nv *nva) {
  for (size_t i = 0; i < b->n; i++) {
    nva[i].name = (uint8_t *)b->h[i].name;
    nva[i].namelen = b->h[i].nlen;
    nva[i].value = (uint8_t *)b->h[i].value;
    nva[i].valuelen = b->h[i].vlen;
    nva[i].flags = NGHTTP2_NV_FLAG_NONE;
  }
  return b->n;
}
