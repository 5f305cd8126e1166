/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Server: options, one event loop per thread with its own SO_REUSEPORT
 * listener, start, certificate reload, graceful stop. The method table is
 * registry.c; the AmateRS service adapters amaters_svc.c; the echo service
 * echo.c; grpc.health.v1 health.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amn/proto.h"
#include "server/server_internal.h"
#include "transport/h2/h2_server.h"
#include "transport/h3/h3.h" /* [h3] */
#include "util/addr.h"
#include "util/log.h"

void amn_server_opts_init(amn_server_opts *o) {
  memset(o, 0, sizeof *o);
  o->listen = "127.0.0.1:7878";
  o->threads = 0;
  o->transport = AMN_TRANSPORT_H2;
  o->max_recv_message = AMN_DEFAULT_MAX_MESSAGE;
  o->max_send_message = AMN_DEFAULT_MAX_MESSAGE;
  o->max_concurrent_streams = 1024;
  o->initial_window_size = 1u << 20;
  o->max_connections = 10000;
  o->idle_timeout_ms = 60000;
  o->keepalive_interval_ms = 10000;
  o->drain_timeout_ms = 10000;
  o->stream_send_buffer = 4u << 20;
  o->handshake_timeout_ms = 10000;
  o->ping_min_interval_ms = 5000;
  o->ping_permit_without_calls = true;
  o->quic_retry_threshold = 100; /* [h3] */
  o->reflection = true;
  o->signature_window_ms = 30000;
  o->signature_replay_entries = 262144;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static amn_tls_ctx *tls_get(void *ud) { return amn_server_tls_get(ud); }

int amn_server_new(amn_server **out, const amn_server_opts *opts, char *err, size_t errlen) {
  amn_server_opts o;
  if (opts) o = *opts;
  else amn_server_opts_init(&o);
  if (!o.listen) o.listen = "127.0.0.1:7878";
  char host[256];
  uint16_t port;
  if (amn_split_hostport(o.listen, host, sizeof host, &port) != 0)
    return amn_set_err(err, errlen, AMN_EINVAL, "invalid listen address '%s' (expected HOST:PORT)", o.listen);
  if (o.max_recv_message == 0 || o.max_recv_message > 0x7fffffffu || o.max_send_message == 0 ||
      o.max_send_message > 0x7fffffffu)
    return amn_set_err(err, errlen, AMN_EINVAL, "max message size must be 1..2147483647");
  if (o.initial_window_size == 0 || o.initial_window_size > 0x7fffffffu)
    return amn_set_err(err, errlen, AMN_EINVAL, "initial_window_size must be 1..2147483647");
  if (o.max_concurrent_streams == 0)
    return amn_set_err(err, errlen, AMN_EINVAL, "max_concurrent_streams must be at least 1");
  if (o.stream_send_buffer == 0) o.stream_send_buffer = 4u << 20;
  size_t min_conn_buf = o.max_recv_message + o.max_send_message + (1u << 20);
  if (o.max_connection_buffer == 0) {
    o.max_connection_buffer = 2 * o.max_recv_message + (32u << 20);
    if (o.max_connection_buffer < min_conn_buf) o.max_connection_buffer = min_conn_buf;
  } else if (o.max_connection_buffer < min_conn_buf) {
    return amn_set_err(err, errlen, AMN_EINVAL,
                       "max_connection_buffer (%zu) must be at least max_recv_message + max_send_message + 1 MiB (%zu)",
                       o.max_connection_buffer, min_conn_buf);
  }
  if (o.max_server_buffer == 0) {
    o.max_server_buffer = (size_t)1 << 30;
    if (o.max_server_buffer < o.max_connection_buffer) o.max_server_buffer = o.max_connection_buffer;
  } else if (o.max_server_buffer < o.max_connection_buffer) {
    return amn_set_err(err, errlen, AMN_EINVAL, "max_server_buffer (%zu) must be at least max_connection_buffer (%zu)",
                       o.max_server_buffer, o.max_connection_buffer);
  }
  if (o.handshake_timeout_ms == 0) o.handshake_timeout_ms = 10000;
  if (o.header_timeout_ms == 0) o.header_timeout_ms = 10000;
  if (o.stall_timeout_ms == 0) o.stall_timeout_ms = 30000;
  /* [h3] H2, H3 or BOTH (AUTO is a client choice: HTTP/2 here); QUIC always uses TLS */
  if (o.transport != AMN_TRANSPORT_H3 && o.transport != AMN_TRANSPORT_BOTH) o.transport = AMN_TRANSPORT_H2;
  if ((o.transport & AMN_TRANSPORT_H3) && o.tls.insecure)
    return amn_set_err(err, errlen, AMN_EINVAL, "HTTP/3 cannot run in insecure mode (QUIC always uses TLS)");
  amn_server *s = calloc(1, sizeof *s);
  if (!s) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  s->o = o;
  snprintf(s->host, sizeof s->host, "%s", host);
  s->port = port;
  s->listen_s = strdup(o.listen);
  s->o.listen = s->listen_s;
  s->cert_s = dup_or_null(o.tls.cert_path);
  s->key_s = dup_or_null(o.tls.key_path);
  s->ca_s = dup_or_null(o.tls.ca_path);
  s->o.tls.cert_path = s->cert_s;
  s->o.tls.key_path = s->key_s;
  s->o.tls.ca_path = s->ca_s;
  s->crl_s = dup_or_null(o.tls.crl_path);
  s->o.tls.crl_path = s->crl_s;
  s->o.tls.server_name = NULL;
  if (o.quic_secret) { /* [h3] */
    memcpy(s->bc.quic_secret, o.quic_secret, sizeof s->bc.quic_secret);
    s->bc.has_quic_secret = true;
    s->o.quic_secret = NULL;
  }
  /* what the transport bindings see of the options */
  s->bc.max_concurrent_streams = o.max_concurrent_streams;
  s->bc.initial_window_size = o.initial_window_size;
  s->bc.conn_buffer_limit = o.max_connection_buffer;
  s->bc.server_buffer_limit = o.max_server_buffer;
  s->bc.max_connections = o.max_connections;
  s->bc.idle_timeout_ms = o.idle_timeout_ms;
  s->bc.keepalive_interval_ms = o.keepalive_interval_ms;
  s->bc.keepalive_timeout_ms = o.keepalive_timeout_ms;
  s->bc.handshake_timeout_ms = o.handshake_timeout_ms;
  s->bc.ping_min_interval_ms = o.ping_min_interval_ms;
  s->bc.ping_permit_without_calls = o.ping_permit_without_calls;
  s->bc.quic_retry_threshold = o.quic_retry_threshold;
  s->bc.tls_get = tls_get;
  s->bc.tls_ud = s;
  atomic_init(&s->live.max_recv_message, o.max_recv_message);
  atomic_init(&s->live.max_send_message, o.max_send_message);
  atomic_init(&s->live.access_log, o.access_log);
  atomic_init(&s->live.drain_timeout_ms, o.drain_timeout_ms);
  s->lfd_tcp = o.listen_fd > 2 ? o.listen_fd : -1;
  s->lfd_udp = o.listen_fd_udp > 2 ? o.listen_fd_udp : -1;
  pthread_mutex_init(&s->stop_lock, NULL);
  pthread_cond_init(&s->stop_cond, NULL);
  pthread_mutex_init(&s->tls_lock, NULL);
  atomic_init(&s->health_serving, 1);
  if (!o.tls.insecure) {
    if (!s->cert_s || !s->key_s || !s->ca_s) {
      amn_server_free(s);
      return amn_set_err(err, errlen, AMN_EINVAL,
                         "TLS needs a certificate, a key and a CA (or explicitly insecure mode)");
    }
    static const char *const alpn_h2[] = {"h2", NULL}, *const alpn_h3[] = {"h3", NULL},
                             *const alpn_both[] = {"h2", "h3", NULL}; /* [h3] */
    const char *const *alpn = o.transport == AMN_TRANSPORT_H3 ? alpn_h3 : o.transport == AMN_TRANSPORT_BOTH ? alpn_both : alpn_h2;
    s->alpn = alpn;
    amn_tls_ctx *ctx = NULL;
    int rc = amn_tls_ctx_new(&ctx, AMN_TLS_SERVER, &s->o.tls, alpn, err, errlen);
    atomic_store(&s->tls, ctx);
    if (rc != 0) {
      amn_server_free(s);
      return rc;
    }
  }
  int frc = amn_fwd_setup(s, &o, err, errlen);
  if (frc) {
    amn_server_free(s);
    return frc;
  }
  int src = amn_srv_sig_init(s, err, errlen);
  if (src) {
    amn_server_free(s);
    return src;
  }
  amn_health_register(s);
  if (o.reflection) {
    int rc = amn_reflection_register(s);
    if (rc != 0) {
      snprintf(err, errlen, "server reflection: %s", amn_strerror(rc));
      amn_server_free(s);
      return rc;
    }
  }
  *out = s;
  return 0;
}

/* ---- loops ---- */

static void begin_stop(amn_srv_loop *sl);

static void wake_cb(struct ev_loop *ev, ev_async *w, int revents) {
  (void)ev; (void)revents;
  amn_srv_loop *sl = w->data;
  amn_srv_loop_drain_ops(sl);
  amn_health_notify_loop(sl);
  if (atomic_load(&sl->srv->stop_requested) && !sl->bl.stopping) begin_stop(sl);
}

static void before_flush(amn_ioloop *l) {
  amn_srv_loop *sl = l->owner;
  amn_srv_loop_run_writable(sl);
}

static void accept_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev; (void)revents;
  amn_srv_loop *sl = w->data;
  amn_server *s = sl->srv;
  for (int i = 0; i < 64; i++) {
    struct sockaddr_storage ss;
    socklen_t sl_len = sizeof ss;
    int fd = accept4(sl->lfd, (struct sockaddr *)&ss, &sl_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      if (errno == EMFILE || errno == ENFILE) AMN_ERROR("accept: %s (raise the file descriptor limit)", strerror(errno));
      else if (errno != ECONNABORTED) AMN_WARN("accept: %s", strerror(errno));
      return;
    }
    char addr[64];
    amn_addr_text((const struct sockaddr *)&ss, addr, sizeof addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint32_t maxc = atomic_load_explicit(&s->bc.max_connections, memory_order_relaxed);
    if (maxc && atomic_load(&s->bc.nconns) >= maxc) {
      /* a clean refusal the client can read: TLS, then GOAWAY with the reason;
       * a flood beyond what refusals may cost is dropped at once */
      unsigned long long n = atomic_fetch_add(&s->bc.refused, 1) + 1;
      if (atomic_load(&s->bc.nrefusing) >= 16 + maxc / 8) {
        AMN_WARN("connection from %s dropped: max_connections (%u) reached (%llu refused so far)", addr, maxc, n);
        close(fd);
      } else {
        AMN_WARN("connection from %s refused: max_connections (%u) reached (%llu refused so far)", addr, maxc, n);
        amn_h2s_refuse(&sl->bl, fd, addr);
      }
      continue;
    }
    amn_st_count(&sl->bl.conn.h2_opened, 1);
    amn_h2s_accept(&sl->bl, fd, addr);
  }
}

static void drain_timeout_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_srv_loop *sl = w->data;
  amn_h2s_close_all(&sl->bl);
  amn_h3s_close_all(&sl->bl); /* [h3] */
}

static void begin_stop(amn_srv_loop *sl) {
  sl->bl.stopping = true;
  if (sl->lfd >= 0) {
    ev_io_stop(sl->ev, &sl->lw);
    close(sl->lfd);
    sl->lfd = -1;
  }
  amn_health_notify_loop(sl);
  amn_h2s_drain_all(&sl->bl);
  amn_h3s_drain_all(&sl->bl); /* [h3] */
  ev_timer_init(&sl->drain_timer, drain_timeout_cb,
                atomic_load_explicit(&sl->srv->live.drain_timeout_ms, memory_order_relaxed) / 1000.0, 0.);
  sl->drain_timer.data = sl;
  ev_timer_start(sl->ev, &sl->drain_timer);
  if (sl->bl.nconns == 0) ev_break(sl->ev, EVBREAK_ONE);
}

/* A binding's last connection of a stopping loop is gone: the loop ends. */
static void loop_idle(amn_st_loop *l) { ev_break(l->ev, EVBREAK_ONE); }

static void *loop_main(void *arg) {
  amn_srv_loop *sl = arg;
  sl->thread = pthread_self();
  sigset_t set;
  sigfillset(&set);
  pthread_sigmask(SIG_BLOCK, &set, NULL); /* signals go to the application's threads */
  ev_run(sl->ev, 0);
  /* stopped: whatever remains is closed hard */
  amn_h2s_close_all(&sl->bl);
  amn_h3s_close_all(&sl->bl); /* [h3] */
  ev_run(sl->ev, EVRUN_NOWAIT);
  return NULL;
}

/* SO_REUSEPORT lets our loops share the port, but it would also let a second
 * process of the same user silently split our traffic. Before binding the
 * first listener, a plain bind proves that nobody holds the address. */
static int probe_free(const struct addrinfo *a, const char *host, uint16_t port, char *err, size_t errlen) {
  int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return amn_set_err(err, errlen, AMN_EIO, "socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* TIME_WAIT leftovers are fine */
  int rc = bind(fd, a->ai_addr, a->ai_addrlen);
  int e = errno;
  close(fd);
  if (rc != 0)
    return amn_set_err(err, errlen, AMN_EIO, "cannot listen on %s:%u: %s", host, port, strerror(e));
  return 0;
}

static int make_listener(const char *host, uint16_t port, bool first, uint16_t *bound, char *err, size_t errlen) {
  struct addrinfo *res;
  int gai = amn_resolve_passive(host, port, SOCK_STREAM, &res);
  if (gai != 0) return amn_set_err(err, errlen, AMN_EIO, "cannot resolve listen host '%s': %s", host, gai_strerror(gai));
  if (first && port != 0) {
    int prc = probe_free(res, host, port, err, errlen);
    if (prc) {
      freeaddrinfo(res);
      return prc;
    }
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return amn_set_err(err, errlen, AMN_EIO, "socket: %s", strerror(errno));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
    int e = errno;
    close(fd);
    freeaddrinfo(res);
    return amn_set_err(err, errlen, AMN_EIO, "cannot listen on %s:%u: %s", host, port, strerror(e));
  }
  freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *bound = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                          : ((struct sockaddr_in6 *)&ss)->sin6_port);
  return fd;
}

/* One socket the application gave (amn_server_opts.listen_fd / listen_fd_udp):
 * an open socket of `type`, IPv4 or IPv6, bound (and listening for TCP). */
static int check_given(int fd, int type, const char *what, uint16_t *port, char *addr, size_t addrcap, char *err,
                       size_t errlen) {
  int t = 0, acc = 0;
  socklen_t len = sizeof t;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &t, &len) != 0)
    return amn_set_err(err, errlen, AMN_EINVAL, "the given %s socket (descriptor %d): %s", what, fd,
                       errno == ENOTSOCK ? "not a socket" : errno == EBADF ? "not an open descriptor" : strerror(errno));
  if (t != type)
    return amn_set_err(err, errlen, AMN_EINVAL, "the given %s socket (descriptor %d) is a %s socket", what, fd,
                       t == SOCK_STREAM ? "TCP (stream)" : t == SOCK_DGRAM ? "UDP (datagram)" : "different kind of");
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
    return amn_set_err(err, errlen, AMN_EINVAL, "the given %s socket (descriptor %d) is not an IPv4 or IPv6 socket",
                       what, fd);
  *port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                        : ((struct sockaddr_in6 *)&ss)->sin6_port);
  if (*port == 0)
    return amn_set_err(err, errlen, AMN_EINVAL, "the given %s socket (descriptor %d) is not bound", what, fd);
  len = sizeof acc;
  if (type == SOCK_STREAM && (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc))
    return amn_set_err(err, errlen, AMN_EINVAL, "the given %s socket (descriptor %d) is not listening", what, fd);
  amn_addr_text((const struct sockaddr *)&ss, addr, addrcap);
  return 0;
}

/* The sockets the application gave, against the transports: each protocol
 * served needs its socket, and no socket may be left unserved. */
static int check_given_all(amn_server *s, uint16_t *tport, uint16_t *uport, char *addr, size_t cap, char *err,
                           size_t errlen) {
  bool h2 = s->o.transport != AMN_TRANSPORT_H3, h3 = (s->o.transport & AMN_TRANSPORT_H3) != 0;
  static const char *const names[] = {"", "HTTP/2", "HTTP/3", "HTTP/2 + HTTP/3"};
  const char *tn = names[s->o.transport & 3];
  if (s->lfd_tcp >= 0 && !h2)
    return amn_set_err(err, errlen, AMN_EINVAL, "a TCP socket was given but the transport is %s only", tn);
  if (s->lfd_udp >= 0 && !h3)
    return amn_set_err(err, errlen, AMN_EINVAL, "a UDP socket was given but the transport is %s only", tn);
  if (h2 && s->lfd_tcp < 0)
    return amn_set_err(err, errlen, AMN_EINVAL, "transport %s needs a TCP socket too: only a UDP socket was given", tn);
  if (h3 && s->lfd_udp < 0)
    return amn_set_err(err, errlen, AMN_EINVAL, "transport %s needs a UDP socket too: only a TCP socket was given", tn);
  int rc = 0;
  char uaddr[64];
  if (h2) rc = check_given(s->lfd_tcp, SOCK_STREAM, "TCP", tport, addr, cap, err, errlen);
  if (!rc && h3) rc = check_given(s->lfd_udp, SOCK_DGRAM, "UDP", uport, uaddr, sizeof uaddr, err, errlen);
  if (!rc && !h2) snprintf(addr, cap, "%s", uaddr);
  return rc;
}

static void tick_cb(struct ev_loop *ev, ev_check *w, int revents) {
  (void)ev; (void)w; (void)revents;
  amn_clock_tick(); /* once per iteration, not once per call and list touch */
}

void amn_srv_loop_setup(amn_srv_loop *sl, amn_clock_fn clock) {
  sl->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  sl->bl.ev = sl->ev;
  sl->bl.io = &sl->io;
  sl->clock_ns = clock;
  if (clock == amn_clock_monotonic_ns) { /* a test's clock stays exact */
    sl->coarse = true;
    ev_check_init(&sl->tick, tick_cb);
    ev_set_priority(&sl->tick, EV_MAXPRI);
    ev_check_start(sl->ev, &sl->tick);
    ev_unref(sl->ev);
  }
  amn_ioloop_init(&sl->io, sl->ev);
  sl->io.owner = sl;
  sl->io.before_flush = before_flush;
  amn_mpsc_init(&sl->ops);
  ev_async_init(&sl->wake, wake_cb);
  sl->wake.data = sl;
  ev_async_start(sl->ev, &sl->wake);
  ev_unref(sl->ev); /* the wake-up watcher alone must not keep the loop alive */
}

int amn_server_start(amn_server *s, char *err, size_t errlen) {
  if (!s) return AMN_EINVAL;
  if (s->started) return amn_set_err(err, errlen, AMN_ESTATE, "server already started");
  if (s->o.tls.insecure)
    AMN_WARN("INSECURE MODE: serving plaintext HTTP/2 (h2c) without TLS on %s — only behind a TLS-terminating proxy",
             s->o.listen);
  int n = s->o.threads > 0 ? s->o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
  if (n > 256) n = 256;
  s->loops = calloc((size_t)n, sizeof *s->loops);
  if (!s->loops) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  for (int i = 0; i < n; i++) /* the calls' counters of each loop */
    if (amn_m_loop_init(&s->loops[i].m, s->nmethods) != 0) {
      for (int j = 0; j < i; j++) amn_m_loop_free(&s->loops[j].m);
      free(s->loops);
      s->loops = NULL;
      return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
    }
  uint16_t port = s->port, given_tcp = 0, given_udp = 0;
  char given_addr[64] = "";
  bool given = s->lfd_tcp >= 0 || s->lfd_udp >= 0;
  if (given) {
    int grc = check_given_all(s, &given_tcp, &given_udp, given_addr, sizeof given_addr, err, errlen);
    if (grc) {
      for (int j = 0; j < n; j++) amn_m_loop_free(&s->loops[j].m);
      free(s->loops);
      s->loops = NULL;
      return grc;
    }
    port = given_tcp ? given_tcp : given_udp;
  }
  int udp_tries = 0; /* [h3] */
  for (int i = 0; i < n; i++) {
    amn_srv_loop *sl = &s->loops[i];
    sl->srv = s;
    sl->bl.idx = i;
    sl->bl.first = &s->loops[0].bl;
    sl->bl.cfg = &s->bc;
    sl->bl.counters = &s->bc;
    sl->bl.calls = &amn_call_binding;
    sl->bl.ud = sl;
    sl->bl.on_idle = loop_idle;
    sl->lfd = -1;
    uint16_t bound = 0;
    /* [h3] TCP listener unless HTTP/3 only; then the UDP socket on the same port */
    int fd = -1, rc = 0;
    amn_h3_listener *ql = NULL;
    if (given) { /* every loop accepts from the given TCP socket; loop 0 alone serves the UDP one */
      bound = port;
      if (s->lfd_tcp >= 0 && (fd = fcntl(s->lfd_tcp, F_DUPFD_CLOEXEC, 3)) < 0)
        rc = amn_set_err(err, errlen, AMN_EIO, "dup of the given TCP socket: %s", strerror(errno));
      else if (fd >= 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        rc = amn_set_err(err, errlen, AMN_EIO, "the given TCP socket: %s", strerror(errno));
      int ufd = -1;
      if (!rc && i == 0 && s->lfd_udp >= 0 && (ufd = fcntl(s->lfd_udp, F_DUPFD_CLOEXEC, 3)) < 0)
        rc = amn_set_err(err, errlen, AMN_EIO, "dup of the given UDP socket: %s", strerror(errno));
      uint16_t ub;
      if (!rc && ufd >= 0 && !(ql = amn_h3s_adopt(ufd, &ub, &rc, err, errlen))) rc = rc ? rc : AMN_EIO;
      if (rc && fd >= 0) close(fd);
    } else if (s->o.transport != AMN_TRANSPORT_H3) {
      fd = make_listener(s->host, port, i == 0, &bound, err, errlen);
      if (fd < 0) rc = fd;
      else port = bound;
    }
    if (!given && !rc && (s->o.transport & AMN_TRANSPORT_H3) && !(ql = amn_h3s_open(s->host, port, i == 0, &bound, &rc, err, errlen))) {
      if (fd >= 0) close(fd);
      if (i == 0 && fd >= 0 && s->port == 0 && udp_tries++ < 8) { /* port 0: that port's UDP twin is taken, pick another */
        port = 0;
        i--;
        continue;
      }
    }
    if (rc) {
      for (int j = 0; j < n; j++) amn_m_loop_free(&s->loops[j].m);
      for (int j = 0; j < i; j++) {
        if (s->loops[j].lfd >= 0) close(s->loops[j].lfd);
        amn_h3s_free(&s->loops[j].bl); /* [h3] */
        ev_loop_destroy(s->loops[j].ev);
      }
      free(s->loops);
      s->loops = NULL;
      return rc;
    }
    port = bound; /* port 0: every loop shares the port the first one got */
    sl->lfd = fd;
    amn_srv_loop_setup(sl, amn_clock_monotonic_ns);
    ev_io_init(&sl->lw, accept_cb, fd, EV_READ);
    sl->lw.data = sl;
    if (fd >= 0) ev_io_start(sl->ev, &sl->lw); /* [h3] no TCP when HTTP/3 only */
    if (ql) amn_h3s_attach(&sl->bl, ql);      /* [h3] */
  }
  s->port = port;
  if (s->o.transport & AMN_TRANSPORT_H3) { /* HTTP/2 responses advertise HTTP/3 on the same port (RFC 7838) */
    int al = snprintf(s->bc.alt_svc, sizeof s->bc.alt_svc, "h3=\":%u\"", given_udp ? given_udp : port);
    s->bc.alt_svc_len = al > 0 && (size_t)al < sizeof s->bc.alt_svc ? (size_t)al : 0;
  }
  s->nloops = n;
  s->started = true;
  for (int i = 0; i < n; i++) pthread_create(&s->loops[i].thread, NULL, loop_main, &s->loops[i]);
  const char *protos = s->o.transport == AMN_TRANSPORT_H3     ? "HTTP/3" /* [h3] protocols */
                       : s->o.transport == AMN_TRANSPORT_BOTH ? "HTTP/2 + HTTP/3"
                                                              : "HTTP/2";
  if (given)
    AMN_INFO("listening on %s (%s, %s, %d event loop%s; on sockets given by the application%s)", given_addr, protos,
             s->o.tls.insecure ? "PLAINTEXT" : "mTLS", n, n > 1 ? "s" : "",
             s->lfd_udp >= 0 && n > 1 ? ", HTTP/3 on event loop 0 only" : "");
  else
    AMN_INFO("listening on %s:%u (%s, %s, %d event loop%s)", s->host, port, protos,
             s->o.tls.insecure ? "PLAINTEXT" : "mTLS", n, n > 1 ? "s" : "");
  return 0;
}

uint16_t amn_server_port(const amn_server *s) { return s && s->started ? s->port : 0; }

amn_tls_ctx *amn_server_tls_get(amn_server *s) { return atomic_load(&s->tls); }

uint64_t amn_server_refused_connections(const amn_server *s) { return s ? atomic_load(&s->bc.refused) : 0; }

void amn_server_h3_stats(amn_server *s, amn_h3_server_stats *out) {
  amn_h3s_stats(s && s->started && s->nloops > 0 ? &s->loops[0].bl : NULL, out);
}

int amn_server_get_stats(amn_server *s, amn_server_stats *out) {
  if (!s || !out) return AMN_EINVAL;
  memset(out, 0, sizeof *out);
  out->connections = atomic_load(&s->bc.nconns);
  out->connections_refused = atomic_load(&s->bc.refused);
  out->buffered_bytes = atomic_load(&s->bc.buffered);
  out->buffer_refusals = atomic_load(&s->bc.buffer_refusals);
  out->draining = atomic_load(&s->stop_requested);
  amn_m_sum_calls(s, out);
  if (!(s->o.transport & AMN_TRANSPORT_H3)) return 0;
  amn_h3_server_stats h;
  amn_server_h3_stats(s, &h);
  out->quic.connections = h.conns_accepted;
  out->quic.handshakes = h.handshakes_done;
  out->quic.handshake_timeouts = h.handshake_timeouts;
  out->quic.handshake_failures = h.handshake_failures;
  out->quic.resumed = h.resumed;
  out->quic.early_accepted = h.early_accepted;
  out->quic.early_rejected = h.early_rejected;
  out->quic.replays_detected = h.replays_detected;
  out->quic.early_calls = h.early_calls;
  out->quic.retries_sent = h.retries_sent;
  out->quic.retry_tokens_ok = h.retry_tokens_ok;
  out->quic.new_tokens_ok = h.new_tokens_ok;
  out->quic.tokens_bad = h.tokens_bad;
  out->quic.stateless_resets = h.stateless_resets;
  out->quic.stateless_resets_limited = h.stateless_resets_limited;
  out->quic.version_negotiations = h.version_negotiations;
  out->quic.path_validations = h.path_validations;
  out->quic.key_updates = h.key_updates;
  out->quic.datagrams_received = h.datagrams_received;
  out->quic.datagrams_coalesced = h.datagrams_coalesced;
  out->quic.closing = h.conns_closing;
  out->quic.handshaking = h.handshaking;
  return 0;
}

int amn_server_get_metrics(amn_server *s, amn_server_metrics **out) {
  if (!s || !out) return AMN_EINVAL;
  amn_server_stats st;
  amn_server_get_stats(s, &st);
  return amn_m_snapshot(s, &st, out);
}

size_t amn_server_metrics_text(amn_server *s, char *buf, size_t cap) {
  amn_server_metrics *m = NULL;
  if (buf && cap) buf[0] = 0;
  if (amn_server_get_metrics(s, &m) != 0) return 0;
  size_t n = amn_metrics_render(m, buf, cap);
  amn_server_metrics_free(m);
  return n;
}

#ifdef AMN_TEST_HOOKS
void amn_server_h3_rotate_ticket_key(amn_server *s) {
  if (s && s->started && s->nloops > 0) amn_h3s_rotate_ticket_key(&s->loops[0].bl);
}
#endif

int amn_server_set_authz_policy(amn_server *s, amn_authz_policy *policy) {
  if (!s) {
    amn_authz_policy_free(policy);
    return AMN_EINVAL;
  }
  pthread_mutex_lock(&s->tls_lock); /* serialises the swaps, as for TLS reloads */
  amn_authz_policy **r = realloc(s->authz_retired, (s->nauthz_retired + 1) * sizeof *r);
  if (!r) {
    pthread_mutex_unlock(&s->tls_lock);
    amn_authz_policy_free(policy);
    return AMN_ENOMEM;
  }
  s->authz_retired = r;
  amn_authz_policy *old = atomic_exchange(&s->authz, policy);
  if (old) r[s->nauthz_retired++] = old;
  pthread_mutex_unlock(&s->tls_lock);
  if (policy) AMN_INFO("authorization policy installed: %zu rule%s", amn_authz_policy_rule_count(policy),
                       amn_authz_policy_rule_count(policy) == 1 ? "" : "s");
  else AMN_INFO("authorization policy removed: any client certificate of the CA may call any method");
  return 0;
}

int amn_server_set_authorize(amn_server *s, amn_authorize_fn fn, void *ud) {
  if (!s) return AMN_EINVAL;
  if (s->started) return AMN_ESTATE;
  s->authorize_fn = fn;
  s->authorize_ud = ud;
  return 0;
}

/* A new TLS context from `tls` swapped in (tls_lock held): the paths and
 * allow_tls12 become the server's. */
static int tls_swap(amn_server *s, const amn_tls_opts *tls, char *why, size_t whylen) {
  amn_tls_opts t = s->o.tls;
  t.cert_path = tls->cert_path;
  t.key_path = tls->key_path;
  t.ca_path = tls->ca_path;
  t.allow_tls12 = tls->allow_tls12;
  if (!t.cert_path || !t.key_path || !t.ca_path) {
    snprintf(why, whylen, "TLS needs a certificate, a key and a CA");
    return AMN_EINVAL;
  }
  char *cert = strdup(t.cert_path), *key = strdup(t.key_path), *ca = strdup(t.ca_path);
  amn_tls_ctx *ctx = NULL;
  int rc = cert && key && ca ? amn_tls_ctx_new(&ctx, AMN_TLS_SERVER, &t, s->alpn, why, whylen) : AMN_ENOMEM;
  amn_tls_ctx **r = rc ? NULL : realloc(s->tls_retired, (s->ntls_retired + 1) * sizeof *r);
  if (!rc && !r) {
    amn_tls_ctx_unref(ctx);
    rc = AMN_ENOMEM;
  }
  if (rc == AMN_ENOMEM) snprintf(why, whylen, "out of memory");
  if (rc) {
    free(cert);
    free(key);
    free(ca);
    return rc;
  }
  s->tls_retired = r;
  /* handshakes already started keep their own reference to the old context */
  r[s->ntls_retired++] = atomic_exchange(&s->tls, ctx);
  free(s->cert_s);
  free(s->key_s);
  free(s->ca_s);
  s->o.tls.cert_path = s->cert_s = cert;
  s->o.tls.key_path = s->key_s = key;
  s->o.tls.ca_path = s->ca_s = ca;
  s->o.tls.allow_tls12 = t.allow_tls12;
  return 0;
}

int amn_server_reload_tls(amn_server *s, char *err, size_t errlen) {
  if (!s) return AMN_EINVAL;
  if (s->o.tls.insecure) return amn_set_err(err, errlen, AMN_ESTATE, "insecure mode: no TLS credentials to reload");
  char why[512] = "";
  pthread_mutex_lock(&s->tls_lock);
  amn_tls_opts t = s->o.tls;
  int rc = tls_swap(s, &t, why, sizeof why);
  pthread_mutex_unlock(&s->tls_lock);
  if (rc) {
    AMN_WARN("TLS reload failed, keeping the current credentials: %s", why);
    return amn_set_err(err, errlen, rc, "%s", why);
  }
  AMN_INFO("TLS credentials reloaded from %s (new handshakes use them)", s->o.tls.cert_path);
  return 0;
}

int amn_server_update(amn_server *s, const amn_server_opts *o, char *err, size_t errlen) {
  if (!s || !o) return AMN_EINVAL;
  /* checked first: nothing is applied unless everything can be */
  if (o->max_recv_message == 0 || o->max_recv_message > 0x7fffffffu || o->max_send_message == 0 ||
      o->max_send_message > 0x7fffffffu)
    return amn_set_err(err, errlen, AMN_EINVAL, "max message size must be 1..2147483647");
  size_t need = o->max_recv_message + o->max_send_message + (1u << 20);
  if (need > s->bc.conn_buffer_limit)
    return amn_set_err(err, errlen, AMN_EINVAL,
                       "max_recv_message + max_send_message + 1 MiB (%zu) passes the connection buffer limit (%zu), "
                       "which changes only with a restart",
                       need, s->bc.conn_buffer_limit);
  if (!s->o.tls.insecure) {
    char why[512] = "";
    pthread_mutex_lock(&s->tls_lock);
    int rc = tls_swap(s, &o->tls, why, sizeof why);
    pthread_mutex_unlock(&s->tls_lock);
    if (rc) return amn_set_err(err, errlen, rc, "%s", why);
  }
  atomic_store_explicit(&s->live.max_recv_message, o->max_recv_message, memory_order_relaxed);
  atomic_store_explicit(&s->live.max_send_message, o->max_send_message, memory_order_relaxed);
  atomic_store_explicit(&s->live.access_log, o->access_log, memory_order_relaxed);
  atomic_store_explicit(&s->live.drain_timeout_ms, o->drain_timeout_ms, memory_order_relaxed);
  atomic_store_explicit(&s->bc.max_connections, o->max_connections, memory_order_relaxed);
  atomic_store_explicit(&s->bc.idle_timeout_ms, o->idle_timeout_ms, memory_order_relaxed);
  atomic_store_explicit(&s->bc.keepalive_interval_ms, o->keepalive_interval_ms, memory_order_relaxed);
  atomic_store_explicit(&s->bc.keepalive_timeout_ms, o->keepalive_timeout_ms, memory_order_relaxed);
  atomic_store_explicit(&s->bc.handshake_timeout_ms, o->handshake_timeout_ms ? o->handshake_timeout_ms : 10000,
                        memory_order_relaxed);
  atomic_store_explicit(&s->bc.quic_retry_threshold, o->quic_retry_threshold, memory_order_relaxed);
  return 0;
}

void amn_server_request_stop(amn_server *s) {
  if (!s || !s->started) return;
  atomic_store(&s->stop_requested, true);
  atomic_store(&s->health_serving, 0);
  for (int i = 0; i < s->nloops; i++) ev_async_send(s->loops[i].ev, &s->loops[i].wake);
}

void amn_server_wait(amn_server *s) {
  if (!s || !s->started) return;
  pthread_mutex_lock(&s->stop_lock);
  if (!atomic_load(&s->stopped)) {
    for (int i = 0; i < s->nloops; i++) pthread_join(s->loops[i].thread, NULL);
    atomic_store(&s->stopped, true);
  }
  pthread_mutex_unlock(&s->stop_lock);
}

void amn_server_stop(amn_server *s) {
  if (!s || !s->started) return;
  amn_server_request_stop(s);
  amn_server_wait(s);
}

void amn_server_free(amn_server *s) {
  if (!s) return;
  if (s->started) {
    amn_server_stop(s);
    for (int i = 0; i < s->nloops; i++) {
      amn_srv_loop *sl = &s->loops[i];
      amn_srv_loop_drain_ops(sl); /* release late hand-offs */
      amn_srv_loop_run_writable(sl);
      amn_call_cache_free(sl);
      if (sl->lfd >= 0) close(sl->lfd);
      ev_ref(sl->ev);
      ev_async_stop(sl->ev, &sl->wake);
      amn_ioloop_stop(&sl->io);
      amn_h2s_free(&sl->bl);
      amn_h3s_free(&sl->bl); /* [h3] */
      ev_loop_destroy(sl->ev);
      amn_m_loop_free(&sl->m);
    }
    free(s->loops);
  }
  for (size_t i = 0; i < s->nmethods; i++) free(s->methods[i].path);
  free(s->methods);
  if (s->tls) amn_tls_ctx_unref(s->tls);
  for (size_t i = 0; i < s->ntls_retired; i++) amn_tls_ctx_unref(s->tls_retired[i]);
  free(s->tls_retired);
  amn_authz_policy_free(atomic_load(&s->authz));
  for (size_t i = 0; i < s->nauthz_retired; i++) amn_authz_policy_free(s->authz_retired[i]);
  free(s->authz_retired);
  pthread_mutex_destroy(&s->tls_lock);
  amn_health_free(s);
  amn_reflection_free(s);
  amn_fwd_free(s);
  amn_srv_sig_free(s);
  free(s->listen_s);
  free(s->cert_s);
  free(s->key_s);
  free(s->ca_s);
  free(s->crl_s);
  pthread_mutex_destroy(&s->stop_lock);
  pthread_cond_destroy(&s->stop_cond);
  explicit_bzero(s->bc.quic_secret, sizeof s->bc.quic_secret);
  free(s);
}
