/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Pool, load balancing, retries and connection lifecycle with real sockets
 * and mTLS (in-process servers, a development PKI in a temp directory),
 * over the transport AMN_TEST_TRANSPORT names (h2 default, h3):
 *  - client keepalive detects a blackholed peer (a relay that stops
 *    forwarding: a user-space TCP relay, or the UDP relay udp_relay.c)
 *    within about two intervals; the call fails with UNAVAILABLE and the
 *    next one reconnects
 *  - retry safety against a raw HTTP/2 server (GnuTLS + nghttp2) that
 *    answers REFUSED_STREAM, GOAWAY(last_stream_id 0), or drops the
 *    connection after reading the request: the first two are re-sent
 *    transparently (any call), the last only when the call is idempotent
 *    (over HTTP/3: a server holds the request and the path to it goes dark)
 *  - idempotent calls are retried after UNAVAILABLE, others are not
 *  - the pool opens connections up to the server's stream limit
 *    (MAX_CONCURRENT_STREAMS, initial_max_streams_bidi), closes idle ones
 *    down to pool_min_connections
 *  - round robin and p2c spread calls over three servers
 *  - server: max_connections, handshake timeout option, amn_server_reload_tls
 * The cases that need an HTTP/2 peer of their own are skipped over HTTP/3,
 * each naming the HTTP/3 test that covers the same behaviour.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "amn/amn.h"
#include "fixture.h"
#include "udp_relay.h"

#define now_ms amn_t_now_ms

static int listen_any(uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(fd, 64), 0);
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  *port = ntohs(a.sin_port);
  return fd;
}

static int connect_to(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* ---- servers ---- */

typedef struct counter {
  atomic_int n;
} counter;

static void count_execute(amn_call *c, const amn_query *q, void *ud) {
  counter *k = ud;
  atomic_fetch_add(&k->n, 1);
  amn_call_reply_query(c, q->query_bytes, q->query_len, NULL, 0);
}

/* /test.Svc/Flaky: UNAVAILABLE for the first `fail` executions, then OK */
typedef struct flaky {
  atomic_int runs;
  int fail;
} flaky;

static void flaky_msg(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  flaky *f = ud;
  if (atomic_fetch_add(&f->runs, 1) < f->fail) {
    amn_call_finish(c, AMN_STATUS_UNAVAILABLE, "flaky: not now");
    return;
  }
  amn_call_send(c, msg, len);
  amn_call_finish(c, AMN_STATUS_OK, NULL);
}

static amn_server *server(amn_server_opts *o, counter *k, flaky *f) {
  amn_server_opts d;
  if (!o) {
    amn_server_opts_init(&d);
    o = &d;
  }
  o->listen = "127.0.0.1:0";
  o->tls = amn_t_stls;
  o->threads = 1;
  o->transport = amn_t_transport;
  amn_server *s = NULL;
  char err[256];
  assert_int_equal(amn_server_new(&s, o, err, sizeof err), 0);
  static counter dummy;
  assert_int_equal(amn_server_set_execute(s, count_execute, k ? k : &dummy), 0);
  amn_t_register_sleep(s);
  amn_handler h = {0};
  static flaky never;
  h.on_message = flaky_msg;
  h.ud = f ? f : &never;
  assert_int_equal(amn_server_register(s, "/test.Svc/Flaky", &h), 0);
  assert_int_equal(amn_server_start(s, err, sizeof err), 0);
  return s;
}

static amn_client *client(const char *const *urls, size_t n, amn_client_opts *o) {
  amn_client_opts d;
  if (!o) {
    amn_client_opts_init(&d);
    d.connect_timeout_ms = 3000;
    o = &d;
  }
  o->urls = urls;
  o->url_count = n;
  o->tls = amn_t_ctls;
  o->transport = amn_t_transport;
  amn_client *c = NULL;
  char err[256];
  assert_int_equal(amn_client_new(&c, o, err, sizeof err), 0);
  return c;
}

static int execute(amn_client *c, const char *q, bool idem, amn_result *r) {
  amn_call_opts co = {0};
  co.timeout_ms = 10000;
  co.idempotent = idem;
  return amn_client_execute(c, (const uint8_t *)q, strlen(q), NULL, 0, &co, r, NULL, NULL);
}

static uint64_t retries_of(amn_client *c) {
  amn_endpoint_stats st[4];
  uint64_t r = 0;
  amn_client_stats(c, st, 4, &r);
  return r;
}

/* The pool's state, read through amn_client_stats. */
typedef struct pool_state {
  amn_client *c;
  size_t neps;
  amn_endpoint_stats st[4];
  uint32_t connections, in_flight; /* wanted: per endpoint (ready) or in all (the others) */
} pool_state;

static void read_stats(pool_state *p) { amn_client_stats(p->c, p->st, 4, NULL); }
static bool all_ready(void *arg) {
  pool_state *p = arg;
  read_stats(p);
  for (size_t k = 0; k < p->neps; k++)
    if (p->st[k].connections < p->connections) return false;
  return true;
}
static bool reconnect_failed(void *arg) { /* a connection attempt failed, none is under way */
  pool_state *p = arg;
  read_stats(p);
  return p->st[0].connect_failures >= 1 && !p->st[0].connecting;
}
static bool has_connections_in_flight(void *arg) {
  pool_state *p = arg;
  read_stats(p);
  return p->st[0].connections == p->connections && p->st[0].calls_in_flight == p->in_flight;
}
static bool has_connections(void *arg) {
  pool_state *p = arg;
  read_stats(p);
  return p->st[0].connections == p->connections;
}
static bool total_in_flight(void *arg) {
  pool_state *p = arg;
  read_stats(p);
  uint32_t n = 0;
  for (size_t k = 0; k < p->neps; k++) n += p->st[k].calls_in_flight;
  return n == p->in_flight;
}

/* waits until every endpoint has `n` ready connections */
static void wait_ready(amn_client *c, size_t neps, uint32_t n) {
  pool_state p = {.c = c, .neps = neps, .connections = n};
  if (!amn_t_poll(all_ready, &p, 10000)) fail_msg("endpoints not ready");
}

/* ---- a user-space TCP relay that can blackhole ---- */

typedef struct relay {
  int lfd;
  uint16_t port, up;
  atomic_bool blackhole, stop;
  pthread_t t;
} relay;

static void *relay_main(void *arg) {
  relay *r = arg;
  int fds[33][2];
  int n = 0;
  char buf[65536];
  while (!atomic_load(&r->stop)) {
    struct pollfd p[65];
    p[0] = (struct pollfd){r->lfd, POLLIN, 0};
    for (int i = 0; i < n; i++) {
      p[1 + 2 * i] = (struct pollfd){fds[i][0], POLLIN, 0};
      p[2 + 2 * i] = (struct pollfd){fds[i][1], POLLIN, 0};
    }
    if (poll(p, (nfds_t)(1 + 2 * n), 50) <= 0) continue;
    if ((p[0].revents & POLLIN) && n < 32) {
      int a = accept(r->lfd, NULL, NULL), b = connect_to(r->up);
      if (a >= 0 && b >= 0) {
        fds[n][0] = a;
        fds[n][1] = b;
        n++;
      } else {
        if (a >= 0) close(a);
        if (b >= 0) close(b);
      }
      continue;
    }
    for (int i = 0; i < n; i++)
      for (int d = 0; d < 2; d++) {
        if (!(p[1 + 2 * i + d].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t k = recv(fds[i][d], buf, sizeof buf, 0);
        if (k > 0) {
          /* blackholed: the bytes vanish, as on a dead path */
          if (!atomic_load(&r->blackhole)) send(fds[i][1 - d], buf, (size_t)k, MSG_NOSIGNAL);
          continue;
        }
        close(fds[i][0]);
        close(fds[i][1]);
        fds[i][0] = fds[--n][0];
        fds[i][1] = fds[n][1];
        i = n; /* rescan next round */
        break;
      }
  }
  for (int i = 0; i < n; i++) close(fds[i][0]), close(fds[i][1]);
  return NULL;
}

static void relay_start(relay *r, uint16_t up) {
  memset(r, 0, sizeof *r);
  r->up = up;
  r->lfd = listen_any(&r->port);
  pthread_create(&r->t, NULL, relay_main, r);
}

static void relay_stop(relay *r) {
  atomic_store(&r->stop, true);
  pthread_join(r->t, NULL);
  close(r->lfd);
}

/* The path to a server, which can go dark: the TCP relay above (HTTP/2)
 * or the UDP relay (HTTP/3). */
typedef struct path {
  relay tcp;
  udp_relay *udp;
  uint16_t port; /* where clients connect */
} path;

static void path_start(path *p, uint16_t up) {
  memset(p, 0, sizeof *p);
  if (amn_t_transport == AMN_TRANSPORT_H3) {
    p->udp = udp_relay_start(up, 1);
    assert_non_null(p->udp);
    p->port = udp_relay_port(p->udp);
  } else {
    relay_start(&p->tcp, up);
    p->port = p->tcp.port;
  }
}

static void path_dark(path *p, bool dark) {
  if (!p->udp) {
    atomic_store(&p->tcp.blackhole, dark);
    return;
  }
  relay_dir_cfg c = {.blackhole = dark};
  udp_relay_set(p->udp, RELAY_C2S, &c);
  udp_relay_set(p->udp, RELAY_S2C, &c);
}

static void path_stop(path *p) {
  if (p->udp) udp_relay_stop(p->udp);
  else relay_stop(&p->tcp);
}

/* ---- a raw HTTP/2 server (GnuTLS + nghttp2) that misbehaves on purpose ---- */

enum { RAW_REFUSE = 1, RAW_GOAWAY0, RAW_DROP };
typedef struct rawsrv {
  int lfd, mode;
  uint16_t port;
  atomic_int requests;
  atomic_bool stop;
  pthread_t t;
  bool drop_now;
} rawsrv;

static int raw_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  rawsrv *r = ud;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    atomic_fetch_add(&r->requests, 1);
    if (r->mode == RAW_REFUSE) nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
    if (r->mode == RAW_GOAWAY0) nghttp2_submit_goaway(s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
  }
  if (r->mode == RAW_DROP && (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    r->drop_now = true; /* the request is complete */
  return 0;
}

static void *raw_main(void *arg) {
  rawsrv *r = arg;
  gnutls_certificate_credentials_t cred;
  gnutls_certificate_allocate_credentials(&cred);
  gnutls_certificate_set_x509_key_file(cred, amn_t_stls.cert_path, amn_t_stls.key_path, GNUTLS_X509_FMT_PEM);
  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, raw_frame_recv);
  while (!atomic_load(&r->stop)) {
    struct pollfd p = {r->lfd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    int fd = accept(r->lfd, NULL, NULL);
    if (fd < 0) continue;
    gnutls_session_t tls;
    gnutls_init(&tls, GNUTLS_SERVER);
    gnutls_set_default_priority(tls);
    gnutls_credentials_set(tls, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_datum_t alpn = {(unsigned char *)"h2", 2};
    gnutls_alpn_set_protocols(tls, &alpn, 1, 0);
    gnutls_transport_set_int(tls, fd);
    gnutls_handshake_set_timeout(tls, 3000);
    int rc;
    do rc = gnutls_handshake(tls);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    nghttp2_session *h2 = NULL;
    if (rc == 0) {
      nghttp2_session_server_new(&h2, cbs, r);
      nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
    }
    r->drop_now = false;
    uint8_t buf[16384];
    while (h2 && !atomic_load(&r->stop)) {
      const uint8_t *out;
      ssize_t n;
      while ((n = nghttp2_session_mem_send(h2, &out)) > 0) gnutls_record_send(tls, out, (size_t)n);
      if (r->drop_now) break; /* the request was read: vanish without a word */
      if (!gnutls_record_check_pending(tls)) {
        struct pollfd q = {fd, POLLIN, 0};
        if (poll(&q, 1, 50) <= 0) continue;
      }
      n = gnutls_record_recv(tls, buf, sizeof buf);
      if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) continue;
      if (n <= 0 || nghttp2_session_mem_recv(h2, buf, (size_t)n) < 0) break;
    }
    if (h2) nghttp2_session_del(h2);
    gnutls_deinit(tls);
    close(fd);
  }
  nghttp2_session_callbacks_del(cbs);
  gnutls_certificate_free_credentials(cred);
  return NULL;
}

static void raw_start(rawsrv *r, int mode) {
  memset(r, 0, sizeof *r);
  r->mode = mode;
  r->lfd = listen_any(&r->port);
  pthread_create(&r->t, NULL, raw_main, r);
}

static void raw_stop(rawsrv *r) {
  atomic_store(&r->stop, true);
  pthread_join(r->t, NULL);
  close(r->lfd);
}

/* ------------------------------------------------------------------ */

typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  amn_status_code code;
  char msg[300];
  double at;
} waiter;

static void waiter_cb(const amn_result *r, void *ud) {
  waiter *w = ud;
  pthread_mutex_lock(&w->mu);
  w->done++;
  w->code = r->code;
  snprintf(w->msg, sizeof w->msg, "%s", r->message);
  w->at = now_ms();
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void waiter_wait(waiter *w, int n) {
  pthread_mutex_lock(&w->mu);
  while (w->done < n) pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
}

static void test_keepalive_blackhole(void **st) {
  (void)st;
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.ping_min_interval_ms = 0; /* this test's client PINGs every second */
  so.keepalive_interval_ms = 0;
  so.drain_timeout_ms = 500; /* its stop has nothing to wait for: the client behind the dark path left */
  amn_server *s = server(&so, NULL, NULL);
  path r;
  path_start(&r, amn_server_port(s));
  char url[64];
  snprintf(url, sizeof url, "https://127.0.0.1:%u", r.port);
  const char *urls[] = {url};
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.keepalive_interval_ms = 1000;
  o.connect_timeout_ms = 1000;
  amn_client *c = client(urls, 1, &o);
  amn_result res;
  assert_int_equal(execute(c, "warm", false, &res), 0);
  assert_int_equal(res.code, AMN_STATUS_OK);
  amn_result_free(&res);
  /* a long call in flight, then the path goes silent */
  waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, "", 0};
  amn_call_opts co = {0};
  co.timeout_ms = 30000;
  amn_t_counter_set(&amn_t_sleep_started, 0);
  assert_int_equal(amn_client_unary_async(c, "/test.Svc/Sleep", (const uint8_t *)"20000", 5, &co, waiter_cb, &w), 0);
  assert_true(amn_t_counter_wait_ge(&amn_t_sleep_started, 1, 10000)); /* the call is in flight */
  double t0 = now_ms();
  path_dark(&r, true);
  waiter_wait(&w, 1);
  double took = w.at - t0;
  fprintf(stderr, "  blackholed call ended after %.0f ms: %s: %s\n", took, amn_status_name(w.code), w.msg);
  assert_int_equal(w.code, AMN_STATUS_UNAVAILABLE);
  assert_non_null(strstr(w.msg, "keepalive"));
  assert_true(took >= 1000 && took <= 3500); /* ~2 intervals (PING after 1 s of silence, 1 s for its ack) */
  /* the pool's own reconnect attempt, made while the path is still dead,
   * times out (not the lost connection: that is no failure to connect);
   * once the path is back, the next call reconnects */
  amn_endpoint_stats es;
  pool_state ps = {.c = c, .neps = 1};
  assert_true(amn_t_poll(reconnect_failed, &ps, 10000));
  path_dark(&r, false);
  assert_int_equal(execute(c, "after", false, &res), 0);
  assert_int_equal(res.code, AMN_STATUS_OK);
  amn_result_free(&res);
  amn_client_stats(c, &es, 1, NULL);
  assert_int_equal(es.connects, 2);
  amn_client_free(c);
  path_stop(&r);
  amn_t_sleep_release_all(); /* the blackholed call's handler */
  amn_t_sleep_quiesce();
  amn_server_free(s);
}

/* A round-robin client of two endpoints, connected to both: its first call
 * goes to the first. */
static amn_client *rr_client(uint16_t first, uint16_t second, amn_client_opts *o) {
  char u[2][64];
  snprintf(u[0], sizeof u[0], "https://127.0.0.1:%u", first);
  snprintf(u[1], sizeof u[1], "https://127.0.0.1:%u", second);
  const char *urls[] = {u[0], u[1]}; /* (copied by the client) */
  o->lb_policy = AMN_LB_ROUND_ROBIN;
  amn_client *c = client(urls, 2, o);
  assert_int_equal(amn_client_connect(c, NULL, 0), 0);
  wait_ready(c, 2, 1);
  return c;
}

/* REFUSED_STREAM and GOAWAY(last 0) prove the call never ran: re-sent on
 * another server, idempotent or not. A dropped connection after the
 * request went out proves nothing: only idempotent calls are re-sent. */
static void retry_case(int mode, bool idem, bool expect_ok) {
  counter k = {0};
  amn_server *s = server(NULL, &k, NULL);
  rawsrv raw;
  raw_start(&raw, mode);
  amn_client_opts o;
  amn_client_opts_init(&o);
  amn_client *c = rr_client(raw.port, amn_server_port(s), &o); /* the first call goes to the raw server */
  amn_result res;
  assert_int_equal(execute(c, "once", idem, &res), 0);
  fprintf(stderr, "  mode %d %s: %s %s (retries %llu)\n", mode, idem ? "idempotent" : "non-idempotent",
          amn_status_name(res.code), res.message, (unsigned long long)retries_of(c));
  assert_int_equal(atomic_load(&raw.requests), 1);
  if (expect_ok) {
    assert_int_equal(res.code, AMN_STATUS_OK);
    assert_int_equal(atomic_load(&k.n), 1);
    assert_int_equal(retries_of(c), 1);
  } else {
    assert_int_equal(res.code, AMN_STATUS_UNAVAILABLE);
    assert_int_equal(atomic_load(&k.n), 0); /* never re-sent */
    assert_int_equal(retries_of(c), 0);
  }
  amn_result_free(&res);
  amn_client_free(c);
  raw_stop(&raw);
  amn_server_free(s);
}

/* Over HTTP/3 the connection is lost after the request went out when the
 * path to the server that read it goes dark (the client's keepalive
 * notices): the first endpoint, behind the UDP relay, holds the request
 * in the fixture's Sleep handler; a re-sent call goes to the second. */
static void lost_after_send_h3(bool idem, bool expect_ok) {
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.drain_timeout_ms = 500; /* its stop has nothing to wait for: the client behind the dark path left */
  amn_server *s0 = server(&so, NULL, NULL), *s1 = server(NULL, NULL, NULL);
  path r;
  path_start(&r, amn_server_port(s0));
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.keepalive_interval_ms = 300;
  o.keepalive_timeout_ms = 300;
  /* the second endpoint's connection is PINGed while it has no call: the
   * HTTP/3 client counts the silence of a connection without calls
   * against the first call it then gets, and the re-sent call would land
   * on one that looks as dead as the first (both went quiet together) */
  o.keepalive_without_calls = true;
  o.connect_timeout_ms = 1000;
  amn_client *c = rr_client(r.port, amn_server_port(s1), &o); /* the first call goes through the relay */
  amn_t_counter_set(&amn_t_sleep_started, 0);
  waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, "", 0};
  amn_call_opts co = {.timeout_ms = 20000, .idempotent = idem};
  assert_int_equal(amn_client_unary_async(c, "/test.Svc/Sleep", (const uint8_t *)"20000", 5, &co, waiter_cb, &w), 0);
  assert_true(amn_t_counter_wait_ge(&amn_t_sleep_started, 1, 10000)); /* the first server read it */
  path_dark(&r, true);
  if (expect_ok) {
    assert_true(amn_t_counter_wait_ge(&amn_t_sleep_started, 2, 10000)); /* re-sent to the second */
    amn_t_sleep_release_all();                                          /* which answers now */
  }
  waiter_wait(&w, 1);
  amn_endpoint_stats es[2];
  amn_client_stats(c, es, 2, NULL);
  fprintf(stderr, "  lost after send, %s: %s %s (retries %llu; calls started %llu + %llu)\n",
          idem ? "idempotent" : "non-idempotent", amn_status_name(w.code), w.msg, (unsigned long long)retries_of(c),
          (unsigned long long)es[0].calls_started, (unsigned long long)es[1].calls_started);
  assert_int_equal(es[0].calls_started, 1);
  if (expect_ok) {
    assert_int_equal(w.code, AMN_STATUS_OK);
    assert_int_equal(es[1].calls_started, 1);
    assert_int_equal(retries_of(c), 1);
  } else {
    assert_int_equal(w.code, AMN_STATUS_UNAVAILABLE);
    assert_int_equal(es[1].calls_started, 0); /* never re-sent (the call is over) */
    assert_int_equal(retries_of(c), 0);
  }
  assert_int_equal(amn_t_counter_get(&amn_t_sleep_started), expect_ok ? 2 : 1);
  amn_client_free(c);
  path_stop(&r);
  amn_t_sleep_release_all(); /* the first server's handler, cut off */
  amn_t_sleep_quiesce();
  amn_server_free(s0);
  amn_server_free(s1);
}

/* Cases that need an HTTP/2 peer of our own are skipped over HTTP/3,
 * naming the HTTP/3 test of the same behaviour. */
static void skip_over_h3(const char *what, const char *h3_test) {
  if (amn_t_transport != AMN_TRANSPORT_H3) return;
  fprintf(stderr, "  skipped over HTTP/3: %s (HTTP/3: %s)\n", what, h3_test);
  skip();
}

/* REFUSED_STREAM and GOAWAY(0) come from the raw HTTP/2 server. Over
 * HTTP/3, a request the server never processed is re-sent exactly once in
 * test_h3's test_zrtt_rejected_resent (its 0-RTT data refused), and a
 * GOAWAY drain under load fails no call and runs none twice in
 * integration.pool_failover_h3. */
static void test_retry_refused_stream(void **st) {
  (void)st;
  skip_over_h3("REFUSED_STREAM from a raw HTTP/2 server", "integration.h3_zrtt test_zrtt_rejected_resent");
  retry_case(RAW_REFUSE, false, true);
}
static void test_retry_goaway_last_stream(void **st) {
  (void)st;
  skip_over_h3("GOAWAY(0) from a raw HTTP/2 server", "integration.pool_failover_h3, the SIGTERM drain");
  retry_case(RAW_GOAWAY0, false, true);
}
static void test_no_retry_after_send(void **st) {
  (void)st;
  if (amn_t_transport == AMN_TRANSPORT_H3) {
    lost_after_send_h3(false, false);
    lost_after_send_h3(true, true);
    return;
  }
  retry_case(RAW_DROP, false, false);
  retry_case(RAW_DROP, true, true);
}

static void test_idempotent_unavailable(void **st) {
  (void)st;
  flaky f = {0, 1};
  amn_server *s = server(NULL, NULL, &f);
  char u[64];
  snprintf(u, sizeof u, "https://127.0.0.1:%u", amn_server_port(s));
  const char *urls[] = {u};
  amn_client *c = client(urls, 1, NULL);
  amn_call_opts co = {0};
  co.timeout_ms = 5000;
  amn_result r;
  /* not idempotent: UNAVAILABLE comes back, the handler ran once */
  assert_int_equal(amn_client_unary(c, "/test.Svc/Flaky", (const uint8_t *)"a", 1, &co, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_UNAVAILABLE);
  assert_int_equal(atomic_load(&f.runs), 1);
  amn_result_free(&r);
  /* idempotent: retried (max_retries 2), succeeds on the third run */
  atomic_store(&f.runs, 0);
  f.fail = 2;
  co.idempotent = true;
  assert_int_equal(amn_client_unary(c, "/test.Svc/Flaky", (const uint8_t *)"b", 1, &co, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  assert_int_equal(r.len, 1);
  assert_int_equal(atomic_load(&f.runs), 3);
  amn_result_free(&r);
  /* more failures than max_retries: UNAVAILABLE after 1 + 2 runs */
  atomic_store(&f.runs, 0);
  f.fail = 10;
  assert_int_equal(amn_client_unary(c, "/test.Svc/Flaky", (const uint8_t *)"c", 1, &co, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_UNAVAILABLE);
  assert_int_equal(atomic_load(&f.runs), 3);
  amn_result_free(&r);
  amn_client_free(c);
  amn_server_free(s);
}

static void test_pool_grows_and_shrinks(void **st) {
  (void)st;
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.max_concurrent_streams = 2;
  amn_server *s = server(&so, NULL, NULL);
  char u[64];
  snprintf(u, sizeof u, "https://127.0.0.1:%u", amn_server_port(s));
  const char *urls[] = {u};
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.pool_max_connections = 4;
  o.pool_min_connections = 1;
  o.idle_timeout_ms = 400;
  amn_client *c = client(urls, 1, &o);
  waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, "", 0};
  amn_call_opts co = {0};
  co.timeout_ms = 10000;
  for (int i = 0; i < 10; i++)
    assert_int_equal(amn_client_unary_async(c, "/test.Svc/Sleep", (const uint8_t *)"2500", 4, &co, waiter_cb, &w), 0);
  amn_endpoint_stats es;
  pool_state ps = {.c = c, .neps = 1, .connections = 4, .in_flight = 8};
  amn_t_poll(has_connections_in_flight, &ps, 10000); /* the pool opens connections as the first fill up */
  es = ps.st[0];
  fprintf(stderr, "  10 calls, server allows 2 streams: %u connections, %u calls in flight\n", es.connections,
          es.calls_in_flight);
  assert_int_equal(es.connections, 4); /* pool_max: 8 calls run, 2 wait */
  assert_int_equal(es.calls_in_flight, 8);
  waiter_wait(&w, 10);
  assert_int_equal(w.code, AMN_STATUS_OK);
  /* idle connections above the minimum close after idle_timeout_ms */
  ps.connections = 1;
  amn_t_poll(has_connections, &ps, 10000); /* idle_timeout_ms, checked every 100 ms */
  es = ps.st[0];
  fprintf(stderr, "  after idling: %u connection(s)\n", es.connections);
  assert_int_equal(es.connections, 1);
  assert_int_equal(es.calls_ok, 10);
  amn_client_free(c);
  amn_server_free(s);
}

/* max_calls_per_connection 2, no minimum: 6 calls one after the other make
 * 3 connections (3 handshakes), each closed after its second call. */
static bool all_closed(void *arg) {
  pool_state *p = arg;
  read_stats(p);
  return p->st[0].connections + p->st[0].connecting + p->st[0].draining == 0;
}
static bool server_idle(void *arg) {
  amn_server_stats ss;
  return amn_server_get_stats(arg, &ss) == 0 && ss.connections == 0;
}

static void test_max_calls_per_connection(void **st) {
  (void)st;
  counter k = {0};
  amn_server *s = server(NULL, &k, NULL);
  char u[64];
  snprintf(u, sizeof u, "https://127.0.0.1:%u", amn_server_port(s));
  const char *urls[] = {u};
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.max_calls_per_connection = 2;
  o.pool_min_connections = 0;
  amn_client *c = client(urls, 1, &o);
  for (int i = 0; i < 6; i++) {
    amn_result r;
    assert_int_equal(execute(c, "mc", false, &r), 0);
    assert_int_equal(r.code, AMN_STATUS_OK);
    amn_result_free(&r);
  }
  pool_state ps = {.c = c, .neps = 1};
  amn_t_poll(all_closed, &ps, 10000); /* the third connection closes after its second call */
  assert_int_equal(ps.st[0].connections + ps.st[0].connecting + ps.st[0].draining, 0);
  assert_int_equal(ps.st[0].connects, 3);
  assert_int_equal(ps.st[0].calls_ok, 6);
  assert_int_equal(atomic_load(&k.n), 6);
  amn_t_poll(server_idle, s, 10000);
  amn_server_stats ss;
  assert_int_equal(amn_server_get_stats(s, &ss), 0);
  assert_int_equal(ss.connections, 0);
  amn_client_free(c);
  amn_server_free(s);
}

static void lb_case(int policy) {
  counter k[3] = {{0}, {0}, {0}};
  amn_server *s[3];
  char u[3][64];
  const char *urls[3];
  for (int i = 0; i < 3; i++) {
    s[i] = server(NULL, &k[i], NULL);
    snprintf(u[i], sizeof u[i], "https://127.0.0.1:%u", amn_server_port(s[i]));
    urls[i] = u[i];
  }
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.lb_policy = policy;
  amn_client *c = client(urls, 3, &o);
  assert_int_equal(amn_client_connect(c, NULL, 0), 0);
  wait_ready(c, 3, 1);
  for (int i = 0; i < 300; i++) {
    amn_result r;
    assert_int_equal(execute(c, "lb", false, &r), 0);
    assert_int_equal(r.code, AMN_STATUS_OK);
    amn_result_free(&r);
  }
  amn_endpoint_stats es[3];
  assert_int_equal(amn_client_stats(c, es, 3, NULL), 3);
  fprintf(stderr, "  %s: %d %d %d\n", policy == AMN_LB_ROUND_ROBIN ? "round robin" : "p2c", atomic_load(&k[0].n),
          atomic_load(&k[1].n), atomic_load(&k[2].n));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(es[i].calls_ok, (uint64_t)atomic_load(&k[i].n));
    if (policy == AMN_LB_ROUND_ROBIN) assert_int_equal(atomic_load(&k[i].n), 100);
    else assert_true(atomic_load(&k[i].n) >= 50); /* sequential calls: p2c ties break at random */
  }
  amn_client_free(c);
  for (int i = 0; i < 3; i++) amn_server_free(s[i]);
}

static void test_lb_round_robin(void **st) {
  (void)st;
  lb_case(AMN_LB_ROUND_ROBIN);
}
static void test_lb_p2c(void **st) {
  (void)st;
  lb_case(AMN_LB_P2C);
}

/* p2c compares calls in flight: long calls issued together end up evenly
 * spread (random choice alone would often leave them lopsided). */
static void test_p2c_balances_in_flight(void **st) {
  (void)st;
  amn_server *s[2] = {server(NULL, NULL, NULL), server(NULL, NULL, NULL)};
  char u[2][64];
  const char *urls[2];
  for (int i = 0; i < 2; i++) {
    snprintf(u[i], sizeof u[i], "https://127.0.0.1:%u", amn_server_port(s[i]));
    urls[i] = u[i];
  }
  amn_client *c = client(urls, 2, NULL);
  assert_int_equal(amn_client_connect(c, NULL, 0), 0);
  wait_ready(c, 2, 1);
  waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, "", 0};
  amn_call_opts co = {0};
  co.timeout_ms = 10000;
  /* 20 slow calls: 10 land on each server and stay in flight */
  for (int i = 0; i < 20; i++)
    assert_int_equal(amn_client_unary_async(c, "/test.Svc/Sleep", (const uint8_t *)"2500", 4, &co, waiter_cb, &w), 0);
  pool_state ps = {.c = c, .neps = 2, .in_flight = 20};
  amn_t_poll(total_in_flight, &ps, 10000);
  amn_endpoint_stats *es = ps.st;
  fprintf(stderr, "  in flight: %u + %u\n", es[0].calls_in_flight, es[1].calls_in_flight);
  assert_int_equal(es[0].calls_in_flight + es[1].calls_in_flight, 20);
  assert_true(es[0].calls_in_flight >= 8 && es[1].calls_in_flight >= 8); /* p2c balances what is in flight */
  waiter_wait(&w, 20);
  amn_client_free(c);
  amn_server_free(s[0]);
  amn_server_free(s[1]);
}

/* max_connections through the library: the connection over the limit is
 * refused with a reason the client reports; the others keep working. */
static void test_max_connections(void **st) {
  (void)st;
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.max_connections = 1;
  amn_server *s = server(&so, NULL, NULL);
  char u[64];
  snprintf(u, sizeof u, "https://127.0.0.1:%u", amn_server_port(s));
  const char *urls[] = {u};
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.pool_max_connections = 1;
  amn_client *c1 = client(urls, 1, &o), *c2 = client(urls, 1, &o);
  amn_result r;
  assert_int_equal(execute(c1, "first", false, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  assert_int_equal(execute(c2, "second", false, &r), 0);
  fprintf(stderr, "  over the limit: %s: %s\n", amn_status_name(r.code), r.message);
  assert_int_equal(r.code, AMN_STATUS_UNAVAILABLE);
  assert_non_null(strstr(r.message, "max_connections reached"));
  amn_result_free(&r);
  assert_true(amn_server_refused_connections(s) >= 1);
  assert_int_equal(execute(c1, "still", false, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  amn_endpoint_stats es;
  amn_client_stats(c2, &es, 1, NULL);
  assert_int_equal(es.state, AMN_EP_EJECTED);
  assert_non_null(strstr(es.last_error, "max_connections reached"));
  amn_client_free(c2);
  amn_client_free(c1);
  amn_server_free(s);
}

static void test_handshake_timeout(void **st) {
  (void)st;
  /* a silent TCP peer; over HTTP/3 a QUIC client whose answers the relay
   * drops, in test_h3's test_conn_handshake_timeout */
  skip_over_h3("a silent TCP client", "integration.h3_conn test_conn_handshake_timeout");
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.handshake_timeout_ms = 300;
  amn_server *s = server(&so, NULL, NULL);
  int fd = connect_to(amn_server_port(s));
  assert_true(fd >= 0);
  double t0 = now_ms();
  char b[16];
  struct pollfd p = {fd, POLLIN, 0};
  assert_int_equal(poll(&p, 1, 5000), 1); /* a silent client is dropped */
  assert_true(recv(fd, b, sizeof b, 0) <= 0);
  double took = now_ms() - t0;
  fprintf(stderr, "  silent TCP client dropped after %.0f ms\n", took);
  assert_true(took >= 250 && took < 2000);
  close(fd);
  amn_server_free(s);
}

static void test_reload_api(void **st) {
  (void)st;
  /* the server's files are copies that the test can break */
  char cert[512], key[512], ca[512], cmd[2048];
  snprintf(cert, sizeof cert, "%s/rl-cert.pem", amn_t_dir);
  snprintf(key, sizeof key, "%s/rl-key.pem", amn_t_dir);
  snprintf(ca, sizeof ca, "%s/rl-ca.pem", amn_t_dir);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s' && cp '%s' '%s' && cp '%s' '%s'", amn_t_stls.cert_path, cert, amn_t_stls.key_path,
           key, amn_t_stls.ca_path, ca);
  assert_int_equal(system(cmd), 0);
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.listen = "127.0.0.1:0";
  so.tls.cert_path = cert;
  so.tls.key_path = key;
  so.tls.ca_path = ca;
  so.threads = 1;
  so.transport = amn_t_transport;
  amn_server *s = NULL;
  char err[512] = "";
  assert_int_equal(amn_server_new(&s, &so, err, sizeof err), 0);
  assert_int_equal(amn_server_use_echo(s), 0);
  assert_int_equal(amn_server_start(s, err, sizeof err), 0);
  char u[64];
  snprintf(u, sizeof u, "https://127.0.0.1:%u", amn_server_port(s));
  const char *urls[] = {u};
  amn_client *c = client(urls, 1, NULL);
  amn_result r;
  assert_int_equal(execute(c, "before", false, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  assert_int_equal(amn_server_reload_tls(s, err, sizeof err), 0);
  /* a broken certificate: refused with the reason, the old one stays */
  FILE *f = fopen(cert, "w");
  fputs("not a certificate\n", f);
  fclose(f);
  err[0] = 0;
  assert_true(amn_server_reload_tls(s, err, sizeof err) < 0);
  fprintf(stderr, "  broken reload: %s\n", err);
  assert_true(err[0] != 0);
  amn_client *c2 = client(urls, 1, NULL); /* a new connection, new handshake */
  assert_int_equal(execute(c2, "after", false, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  assert_int_equal(execute(c, "old connection", false, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  amn_client_free(c2);
  amn_client_free(c);
  amn_server_free(s);
  /* insecure servers have nothing to reload (HTTP/2: QUIC has no plaintext mode) */
  so.tls = (amn_tls_opts){0};
  so.tls.insecure = true;
  so.transport = AMN_TRANSPORT_H2;
  assert_int_equal(amn_server_new(&s, &so, err, sizeof err), 0);
  assert_int_equal(amn_server_reload_tls(s, err, sizeof err), AMN_ESTATE);
  amn_server_free(s);
}

static int setup(void **st) {
  (void)st;
  signal(SIGPIPE, SIG_IGN); /* the raw server and the relay write to sockets the peer closed */
  if (amn_t_setup("pool") != 0) return -1;
  const char *lvl = getenv("AMN_TEST_LOG");
  amn_log_set_level(lvl ? (amn_log_level)atoi(lvl) : AMN_LOG_ERROR);
  return 0;
}

static int teardown(void **st) {
  (void)st;
  amn_t_sleep_quiesce();
  amn_t_teardown();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keepalive_blackhole),
      cmocka_unit_test(test_retry_refused_stream),
      cmocka_unit_test(test_retry_goaway_last_stream),
      cmocka_unit_test(test_no_retry_after_send),
      cmocka_unit_test(test_idempotent_unavailable),
      cmocka_unit_test(test_pool_grows_and_shrinks),
      cmocka_unit_test(test_max_calls_per_connection),
      cmocka_unit_test(test_lb_round_robin),
      cmocka_unit_test(test_lb_p2c),
      cmocka_unit_test(test_p2c_balances_in_flight),
      cmocka_unit_test(test_max_connections),
      cmocka_unit_test(test_handshake_timeout),
      cmocka_unit_test(test_reload_api),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
