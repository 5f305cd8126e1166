/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * End-to-end tests over real loopback sockets with real mutual TLS: an
 * in-process amaters-net server (dev PKI in a temporary directory) and the
 * amaters-net client. Transport chosen by AMN_TEST_TRANSPORT (h2 default),
 * so the same suite runs over HTTP/3 once that transport exists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "amn/amn.h"
#include "fixture.h"
#include "tls/pki_internal.h"

/* ------------------------------------------------------------------ */
/* Test handlers                                                      */
/* ------------------------------------------------------------------ */

/* /test.Svc/Fail: finishes with the status named by the request, with a
 * non-ASCII message (percent-encoding round trip) and trailing metadata. */
static void fail_on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)ud;
  char buf[32] = {0};
  memcpy(buf, msg, len < 31 ? len : 31);
  static const uint8_t bin[] = {0, 1, 2, 0xff, 0xfe};
  amn_call_add_initial_metadata(c, "x-initial", (const uint8_t *)"early", 5);
  amn_call_add_trailing_metadata(c, "x-trace-bin", bin, sizeof bin);
  amn_call_finish(c, (amn_status_code)amn_status_from_name(buf), "failed: ünïcödé 100%\nnewline");
}

/* /test.Svc/Identity: returns the client certificate's subject and SHA-256
 * and the request metadata count. */
static void ident_on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)msg; (void)len; (void)ud;
  const amn_peer_identity *id = amn_call_peer(c);
  char out[512];
  int n = snprintf(out, sizeof out, "%s|%s|%d|%lld", id->verified ? id->subject : "-", id->sha256_hex,
                   (int)amn_call_metadata(c)->count, (long long)amn_call_deadline_remaining_ms(c));
  amn_call_send(c, (const uint8_t *)out, (size_t)n);
  amn_call_finish(c, AMN_STATUS_OK, NULL);
}

/* /test.Svc/Count (client streaming): pauses receiving after the first
 * message and resumes from another thread 300 ms later; answers with the
 * number of messages and bytes it got. */
static atomic_int g_count_msgs;
static atomic_long g_count_bytes;
static amn_t_counter g_count_blocked = AMN_T_COUNTER_INIT; /* the client saw AMN_EAGAIN */
static void *resume_later(void *arg) {
  /* resumes once the paused stream has pushed back to the sender */
  amn_t_counter_wait_ge(&g_count_blocked, 1, 20000);
  amn_call_resume_recv(arg);
  return NULL;
}
static void count_on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)msg; (void)ud;
  if (atomic_fetch_add(&g_count_msgs, 1) == 0) {
    amn_call_pause_recv(c);
    pthread_t t;
    pthread_create(&t, NULL, resume_later, c);
    pthread_detach(t);
  }
  atomic_fetch_add(&g_count_bytes, (long)len);
}
static void count_on_half_close(amn_call *c, void *ud) {
  (void)ud;
  char out[64];
  int n = snprintf(out, sizeof out, "%d/%ld", atomic_load(&g_count_msgs), atomic_load(&g_count_bytes));
  amn_call_send(c, (const uint8_t *)out, (size_t)n);
  amn_call_finish(c, AMN_STATUS_OK, NULL);
}
static void count_on_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)why; (void)ud;
  amn_call_finish(c, AMN_STATUS_CANCELLED, NULL);
}

/* amn_server_free requires every call to be finished: let the handler
 * threads of the Sleep method finish theirs first. */
static void free_server(amn_server *s) {
  amn_t_sleep_quiesce();
  amn_server_free(s);
}

static amn_server *start_server(const amn_server_opts *over) {
  amn_server_opts o;
  if (over) o = *over;
  else amn_server_opts_init(&o);
  o.listen = "127.0.0.1:0";
  o.tls = amn_t_stls;
  o.threads = 2;
  o.transport = amn_t_transport == AMN_TRANSPORT_H3 ? AMN_TRANSPORT_BOTH : amn_t_transport; /* [h3] TCP + QUIC */
  o.drain_timeout_ms = over ? over->drain_timeout_ms : 3000;
  amn_server *s = NULL;
  char err[256];
  int rc = amn_server_new(&s, &o, err, sizeof err);
  if (rc) fprintf(stderr, "server_new: %s\n", err);
  assert_int_equal(rc, 0);
  assert_int_equal(amn_server_use_echo(s), 0);
  amn_t_register_sleep(s);
  amn_handler f = {0};
  f.on_message = fail_on_message;
  assert_int_equal(amn_server_register(s, "/test.Svc/Fail", &f), 0);
  amn_handler cnt = {0};
  cnt.on_message = count_on_message;
  cnt.on_half_close = count_on_half_close;
  cnt.on_cancel = count_on_cancel;
  cnt.client_streaming = true;
  assert_int_equal(amn_server_register(s, "/test.Svc/Count", &cnt), 0);
  amn_handler id = {0};
  id.on_message = ident_on_message;
  assert_int_equal(amn_server_register(s, "/test.Svc/Identity", &id), 0);
  rc = amn_server_start(s, err, sizeof err);
  if (rc) fprintf(stderr, "server_start: %s\n", err);
  assert_int_equal(rc, 0);
  return s;
}

static amn_client *make_client(amn_server *s, const amn_tls_opts *tls, size_t max_recv) {
  amn_client_opts o;
  amn_client_opts_init(&o);
  char url[64];
  snprintf(url, sizeof url, "https://localhost:%u", amn_server_port(s));
  o.url = url;
  o.tls = tls ? *tls : amn_t_ctls;
  o.transport = amn_t_transport;
  o.connect_timeout_ms = 5000;
  if (max_recv) o.max_recv_message = max_recv;
  amn_client *c = NULL;
  char err[256];
  int rc = amn_client_new(&c, &o, err, sizeof err);
  if (rc) fprintf(stderr, "client_new: %s\n", err);
  assert_int_equal(rc, 0);
  return c;
}

static int call_raw(amn_client *c, const char *method, const char *req, uint32_t timeout_ms, amn_result *r) {
  amn_call_opts co = {0};
  co.timeout_ms = timeout_ms;
  return amn_client_unary(c, method, (const uint8_t *)req, strlen(req), &co, r);
}

/* ------------------------------------------------------------------ */
/* Tests                                                              */
/* ------------------------------------------------------------------ */

static void test_unary_echo(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  amn_result r;
  uint8_t *proof;
  size_t plen;
  assert_int_equal(amn_client_execute(c, (const uint8_t *)"hello", 5, (const uint8_t *)"sig", 3, NULL, &r, &proof, &plen), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  assert_int_equal(r.len, 5);
  assert_memory_equal(r.data, "hello", 5);
  amn_result_free(&r);
  free(proof);
  /* empty payload */
  assert_int_equal(amn_client_execute(c, NULL, 0, NULL, 0, NULL, &r, NULL, NULL), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  assert_int_equal(r.len, 0);
  amn_result_free(&r);
  /* the server's counters see the connection (and, over HTTP/3, its handshake) */
  amn_server_stats ss;
  assert_int_equal(amn_server_get_stats(s, &ss), 0);
  assert_int_equal(ss.connections, 1);
  assert_int_equal(ss.buffer_refusals, 0);
  if (amn_t_transport == AMN_TRANSPORT_H3) {
    assert_int_equal(ss.quic.connections, 1);
    assert_int_equal(ss.quic.handshakes, 1);
  } else {
    assert_int_equal(ss.quic.connections, 0);
  }
  assert_int_equal(amn_server_get_stats(NULL, &ss), AMN_EINVAL);
  /* and the client's: one QUIC handshake over HTTP/3, none over HTTP/2 */
  amn_client_quic_stats cq;
  assert_int_equal(amn_client_get_quic_stats(c, &cq), 0);
  assert_int_equal(cq.handshakes, amn_t_transport == AMN_TRANSPORT_H3 ? 1 : 0);
  assert_int_equal(cq.stateless_resets, 0);
  assert_int_equal(amn_client_get_quic_stats(NULL, &cq), AMN_EINVAL);
  assert_int_equal(amn_client_get_quic_stats(c, NULL), AMN_EINVAL);
  amn_client_free(c);
  free_server(s);
}

static void test_identity_and_deadline_seen(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  amn_result r;
  assert_int_equal(call_raw(c, "/test.Svc/Identity", "", 5000, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  char buf[600] = {0};
  memcpy(buf, r.data, r.len < 599 ? r.len : 599);
  /* subject of the dev client certificate, a fingerprint, 0 metadata, ~5000 ms left */
  assert_non_null(strstr(buf, "amaters-dev-client"));
  char *p1 = strchr(buf, '|');
  assert_non_null(p1);
  assert_int_equal(strchr(p1 + 1, '|') - (p1 + 1), 64);
  long long left = atoll(strrchr(buf, '|') + 1);
  assert_true(left > 4000 && left <= 5000);
  amn_result_free(&r);
  amn_client_free(c);
  free_server(s);
}

static void test_status_message_metadata(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  amn_result r;
  assert_int_equal(call_raw(c, "/test.Svc/Fail", "PERMISSION_DENIED", 0, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_PERMISSION_DENIED);
  assert_string_equal(r.message, "failed: ünïcödé 100%\nnewline");
  /* Trailers-Only: initial and trailing metadata arrive together */
  bool saw_bin = false, saw_initial = false;
  amn_md *all[2] = {r.initial_md, r.trailing_md};
  size_t cnt[2] = {r.initial_md_count, r.trailing_md_count};
  for (int k = 0; k < 2; k++)
    for (size_t i = 0; i < cnt[k]; i++) {
      if (strcmp(all[k][i].key, "x-trace-bin") == 0) {
        assert_int_equal(all[k][i].value_len, 5);
        assert_memory_equal(all[k][i].value, "\0\1\2\xff\xfe", 5);
        saw_bin = true;
      }
      if (strcmp(all[k][i].key, "x-initial") == 0) saw_initial = true;
    }
  assert_true(saw_bin);
  assert_true(saw_initial);
  amn_result_free(&r);

  /* request metadata echoed by the echo handler (x-echo-* -> trailers) */
  static const uint8_t binv[] = {0x00, 0x10, 0x80, 0xff};
  amn_md md[] = {{"x-echo-text", (const uint8_t *)"hello world", 11}, {"x-echo-data-bin", binv, 4},
                 {"x-other", (const uint8_t *)"ignored", 7}};
  amn_metadata mdl = {md, 3};
  amn_call_opts co = {0};
  co.metadata = &mdl;
  uint8_t req[16];
  size_t n = amn_pair_encode(req, (const uint8_t *)"x", 1, NULL, 0);
  assert_int_equal(amn_client_unary(c, AMN_METHOD_EXECUTE, req, n, &co, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_metadata tm = {r.trailing_md, r.trailing_md_count};
  const amn_md *e = amn_metadata_get(&tm, "x-echo-text");
  assert_non_null(e);
  assert_int_equal(e->value_len, 11);
  assert_memory_equal(e->value, "hello world", 11);
  e = amn_metadata_get(&tm, "x-echo-data-bin");
  assert_non_null(e);
  assert_int_equal(e->value_len, 4);
  assert_memory_equal(e->value, binv, 4);
  assert_null(amn_metadata_get(&tm, "x-other"));
  amn_result_free(&r);
  amn_client_free(c);
  free_server(s);
}

static void test_unknown_method(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  amn_result r;
  assert_int_equal(call_raw(c, "/nope.Svc/Missing", "x", 0, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_UNIMPLEMENTED);
  assert_non_null(strstr(r.message, "/nope.Svc/Missing"));
  amn_result_free(&r);
  amn_client_free(c);
  free_server(s);
}

static void test_deadlines(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  assert_int_equal(amn_client_connect(c, NULL, 0), 0); /* the request reaches the handler inside its deadline */
  amn_result r;
  amn_t_counter_set(&amn_t_sleep_cancelled, 0);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(call_raw(c, "/test.Svc/Sleep", "3000", 200, &r), 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(r.code, AMN_STATUS_DEADLINE_EXCEEDED);
  double el = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  assert_true(el >= 0.19 && el < 2.0);
  amn_result_free(&r);
  /* the server saw the deadline (or the client's RST) as a cancellation */
  assert_true(amn_t_counter_wait_ge(&amn_t_sleep_cancelled, 1, 10000));
  assert_int_equal(amn_t_counter_get(&amn_t_sleep_cancelled), 1);
  int code = amn_t_sleep_last_cancel_code();
  assert_true(code == AMN_STATUS_DEADLINE_EXCEEDED || code == AMN_STATUS_CANCELLED);
  /* a call inside its deadline still works on the same connection */
  assert_int_equal(call_raw(c, "/test.Svc/Sleep", "10", 2000, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  amn_client_free(c);
  free_server(s);
}

/* The server enforces grpc-timeout by itself: a raw client with a huge
 * local timeout but a short header would need a custom client; instead use
 * the server-side deadline via a client whose own timer is longer: we send
 * grpc-timeout via the call options and verify the server ends the call
 * with DEADLINE_EXCEEDED before the handler answers. */
static void test_server_deadline(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  /* connected first: the request must reach the handler well inside its
   * deadline even on a loaded machine, or there is nothing to cancel */
  assert_int_equal(amn_client_connect(c, NULL, 0), 0);
  amn_t_counter_set(&amn_t_sleep_cancelled, 0);
  amn_result r;
  assert_int_equal(call_raw(c, "/test.Svc/Sleep", "5000", 1000, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_DEADLINE_EXCEEDED);
  amn_result_free(&r);
  assert_true(amn_t_counter_wait_ge(&amn_t_sleep_cancelled, 1, 10000));
  assert_int_equal(amn_t_counter_get(&amn_t_sleep_cancelled), 1);
  amn_client_free(c);
  free_server(s);
}

typedef struct stream_ctx {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int received;
  bool closed;
  amn_status_code code;
  bool order_ok;
  bool writable;
} stream_ctx;

static void s_on_message(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  (void)s;
  stream_ctx *x = ud;
  amn_pair_view v;
  assert_int_equal(amn_pair_decode(msg, len, &v), 0);
  char exp[32];
  int n = snprintf(exp, sizeof exp, "m%d", x->received);
  if ((size_t)n != v.f1_len || memcmp(exp, v.f1, v.f1_len) != 0) x->order_ok = false;
  pthread_mutex_lock(&x->mu);
  x->received++;
  pthread_cond_broadcast(&x->cv);
  pthread_mutex_unlock(&x->mu);
}
static void s_on_close(amn_cstream *s, const amn_result *r, void *ud) {
  (void)s;
  stream_ctx *x = ud;
  pthread_mutex_lock(&x->mu);
  x->closed = true;
  x->code = r->code;
  pthread_cond_broadcast(&x->cv);
  pthread_mutex_unlock(&x->mu);
}
static void s_on_writable(amn_cstream *s, void *ud) {
  (void)s;
  stream_ctx *x = ud;
  pthread_mutex_lock(&x->mu);
  x->writable = true;
  pthread_cond_broadcast(&x->cv);
  pthread_mutex_unlock(&x->mu);
}

static void test_bidi_stream_10000(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  stream_ctx x = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, 0, true, false};
  amn_cstream_cbs cbs = {s_on_message, s_on_close, s_on_writable};
  amn_cstream *cs;
  amn_call_opts co = {0};
  co.timeout_ms = 60000;
  assert_int_equal(amn_client_stream_open(c, AMN_METHOD_EXECUTE_STREAM, &co, &cbs, &x, &cs), 0);
  const int N = 10000;
  for (int i = 0; i < N; i++) {
    char q[32];
    int n = snprintf(q, sizeof q, "m%d", i);
    uint8_t buf[64];
    size_t bl = amn_pair_encode(buf, (const uint8_t *)q, (size_t)n, NULL, 0);
    int rc;
    while ((rc = amn_cstream_send(cs, buf, bl)) == AMN_EAGAIN) {
      pthread_mutex_lock(&x.mu);
      struct timespec ts = amn_t_deadline_in(50);
      if (!x.writable) pthread_cond_timedwait(&x.cv, &x.mu, &ts);
      x.writable = false;
      pthread_mutex_unlock(&x.mu);
    }
    assert_int_equal(rc, 0);
  }
  assert_int_equal(amn_cstream_close_send(cs), 0);
  pthread_mutex_lock(&x.mu);
  while (!x.closed) pthread_cond_wait(&x.cv, &x.mu);
  pthread_mutex_unlock(&x.mu);
  assert_int_equal(x.code, AMN_STATUS_OK);
  assert_int_equal(x.received, N);
  assert_true(x.order_ok);
  amn_cstream_release(cs);
  amn_client_free(c);
  free_server(s);
}

typedef struct last_ctx {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char last[64];
  bool closed, writable;
  amn_status_code code;
} last_ctx;
static void l_on_message(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  (void)s;
  last_ctx *x = ud;
  pthread_mutex_lock(&x->mu);
  snprintf(x->last, sizeof x->last, "%.*s", (int)len, (const char *)msg);
  pthread_mutex_unlock(&x->mu);
}
static void l_on_close(amn_cstream *s, const amn_result *r, void *ud) {
  (void)s;
  last_ctx *x = ud;
  pthread_mutex_lock(&x->mu);
  x->closed = true;
  x->code = r->code;
  pthread_cond_broadcast(&x->cv);
  pthread_mutex_unlock(&x->mu);
}
static void l_on_writable(amn_cstream *s, void *ud) {
  (void)s;
  last_ctx *x = ud;
  pthread_mutex_lock(&x->mu);
  x->writable = true;
  pthread_cond_broadcast(&x->cv);
  pthread_mutex_unlock(&x->mu);
}

/* A handler that pauses receiving really stops the client: its sends back
 * up into AMN_EAGAIN, and after the resume every byte arrives. */
static void test_recv_backpressure(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  atomic_store(&g_count_msgs, 0);
  atomic_store(&g_count_bytes, 0);
  amn_t_counter_set(&g_count_blocked, 0);
  last_ctx x = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, "", false, false, 0};
  amn_cstream_cbs cbs = {l_on_message, l_on_close, l_on_writable};
  amn_cstream *cs;
  amn_call_opts co = {0};
  co.timeout_ms = 30000;
  assert_int_equal(amn_client_stream_open(c, "/test.Svc/Count", &co, &cbs, &x, &cs), 0);
  const int N = 64;
  const size_t SZ = 256 * 1024;
  uint8_t *buf = calloc(1, SZ);
  int eagain = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < N; i++) {
    int rc;
    while ((rc = amn_cstream_send(cs, buf, SZ)) == AMN_EAGAIN) {
      if (eagain++ == 0) amn_t_counter_add(&g_count_blocked, 1); /* the handler may resume now */
      pthread_mutex_lock(&x.mu);
      struct timespec ts = amn_t_deadline_in(1000);
      if (!x.writable) pthread_cond_timedwait(&x.cv, &x.mu, &ts);
      x.writable = false;
      pthread_mutex_unlock(&x.mu);
    }
    assert_int_equal(rc, 0);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(amn_cstream_close_send(cs), 0);
  pthread_mutex_lock(&x.mu);
  while (!x.closed) pthread_cond_wait(&x.cv, &x.mu);
  pthread_mutex_unlock(&x.mu);
  assert_int_equal(x.code, AMN_STATUS_OK);
  char want[64];
  snprintf(want, sizeof want, "%d/%ld", N, (long)N * (long)SZ);
  assert_string_equal(x.last, want);
  /* the pause pushed back all the way to the sender: 16 MiB cannot all be
   * accepted (1 MiB stream window + 4 MiB send buffer) while the handler
   * holds its first message; it resumes only once the sender was blocked */
  double held = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  assert_true(eagain > 0);
  amn_cstream_release(cs);
  free(buf);
  fprintf(stderr, "  sender blocked %d times, %.0f ms, while the handler paused\n", eagain, held * 1000);

  /* the built-in echo stream under the same pressure: no error, all back */
  stream_ctx y = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, 0, true, false};
  amn_cstream_cbs ecbs = {s_on_message, s_on_close, s_on_writable};
  assert_int_equal(amn_client_stream_open(c, AMN_METHOD_EXECUTE_STREAM, &co, &ecbs, &y, &cs), 0);
  size_t big = 100 * 1024;
  for (int i = 0; i < 200; i++) {
    char tag[32];
    int n = snprintf(tag, sizeof tag, "m%d", i);
    /* QueryRequest{query_bytes: "m<i>"} padded by a large signature field */
    uint8_t *pad = malloc(big), *msg = malloc(big + 64);
    memset(pad, 'z', big);
    size_t ml = amn_pair_encode(msg, (const uint8_t *)tag, (size_t)n, pad, big);
    free(pad);
    int rc;
    while ((rc = amn_cstream_send(cs, msg, ml)) == AMN_EAGAIN) {
      pthread_mutex_lock(&y.mu);
      struct timespec ts = amn_t_deadline_in(1000);
      if (!y.writable) pthread_cond_timedwait(&y.cv, &y.mu, &ts);
      y.writable = false;
      pthread_mutex_unlock(&y.mu);
    }
    free(msg);
    assert_int_equal(rc, 0);
  }
  assert_int_equal(amn_cstream_close_send(cs), 0);
  pthread_mutex_lock(&y.mu);
  while (!y.closed) pthread_cond_wait(&y.cv, &y.mu);
  pthread_mutex_unlock(&y.mu);
  assert_int_equal(y.code, AMN_STATUS_OK);
  assert_int_equal(y.received, 200);
  assert_true(y.order_ok);
  amn_cstream_release(cs);
  amn_client_free(c);
  free_server(s);
}

static void test_large_64mib(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  /* 64 MiB message: the QueryRequest wrapper adds a few bytes, so the
   * payload is 64 MiB minus the framing overhead of the protobuf field */
  size_t n = 64u * 1024 * 1024 - 16;
  uint8_t *q = malloc(n);
  for (size_t i = 0; i < n; i++) q[i] = (uint8_t)(i * 2654435761u >> 13);
  amn_result r;
  amn_call_opts co = {0};
  co.timeout_ms = 60000;
  assert_int_equal(amn_client_execute(c, q, n, NULL, 0, &co, &r, NULL, NULL), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  assert_int_equal(r.len, n);
  assert_memory_equal(r.data, q, n);
  amn_result_free(&r);
  free(q);
  amn_client_free(c);
  free_server(s);
}

static void test_oversize(void **st) {
  (void)st;
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.max_recv_message = 1024 * 1024;
  o.drain_timeout_ms = 3000;
  amn_server *s = start_server(&o);
  amn_client *c = make_client(s, NULL, 0);
  size_t n = 2 * 1024 * 1024;
  uint8_t *q = calloc(1, n);
  amn_result r;
  assert_int_equal(amn_client_execute(c, q, n, NULL, 0, NULL, &r, NULL, NULL), 0);
  assert_int_equal(r.code, AMN_STATUS_RESOURCE_EXHAUSTED);
  assert_non_null(strstr(r.message, "larger than max"));
  amn_result_free(&r);
  /* the connection and server still serve */
  assert_int_equal(amn_client_execute(c, (const uint8_t *)"ok", 2, NULL, 0, NULL, &r, NULL, NULL), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  amn_client_free(c);
  /* the client limit: a response above the client's max is refused too */
  c = make_client(s, NULL, 1000);
  uint8_t big[4000] = {0};
  assert_int_equal(amn_client_execute(c, big, sizeof big, NULL, 0, NULL, &r, NULL, NULL), 0);
  assert_int_equal(r.code, AMN_STATUS_RESOURCE_EXHAUSTED);
  amn_result_free(&r);
  amn_client_free(c);
  free(q);
  free_server(s);
}

static void test_client_cancel(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  amn_t_counter_set(&amn_t_sleep_cancelled, 0);
  amn_t_counter_set(&amn_t_sleep_started, 0);
  stream_ctx x = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, 0, true, false};
  amn_cstream_cbs cbs = {s_on_message, s_on_close, NULL};
  amn_cstream *cs;
  assert_int_equal(amn_client_stream_open(c, "/test.Svc/Sleep", NULL, &cbs, &x, &cs), 0);
  assert_int_equal(amn_cstream_send(cs, (const uint8_t *)"5000", 4), 0);
  assert_true(amn_t_counter_wait_ge(&amn_t_sleep_started, 1, 10000)); /* the handler has the call */
  amn_cstream_cancel(cs);
  pthread_mutex_lock(&x.mu);
  while (!x.closed) pthread_cond_wait(&x.cv, &x.mu);
  pthread_mutex_unlock(&x.mu);
  assert_int_equal(x.code, AMN_STATUS_CANCELLED);
  assert_true(amn_t_counter_wait_ge(&amn_t_sleep_cancelled, 1, 10000));
  assert_int_equal(amn_t_counter_get(&amn_t_sleep_cancelled), 1);
  assert_int_equal(amn_t_sleep_last_cancel_code(), AMN_STATUS_CANCELLED);
  amn_cstream_release(cs);
  amn_client_free(c);
  free_server(s);
}

typedef struct many_ctx {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, ok;
  const char *want; /* the echoed request every call must answer with */
  size_t want_len;
} many_ctx;

static void many_cb(const amn_result *r, void *ud) {
  many_ctx *m = ud;
  pthread_mutex_lock(&m->mu);
  m->done++;
  if (r->code == AMN_STATUS_OK && r->len == m->want_len && memcmp(r->data, m->want, m->want_len) == 0) m->ok++;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
}

static void test_200_concurrent_async(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  many_ctx m = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, "60000", 5};
  amn_t_counter_set(&amn_t_sleep_started, 0);
  /* 200 calls whose handlers would each work for a minute on their own
   * threads: all 200 hold their call at once, so they really run
   * concurrently on one connection; then they are released together */
  for (int i = 0; i < 200; i++) {
    amn_call_opts co = {0};
    co.timeout_ms = 120000;
    assert_int_equal(amn_client_unary_async(c, "/test.Svc/Sleep", (const uint8_t *)"60000", 5, &co, many_cb, &m), 0);
  }
  assert_true(amn_t_counter_wait_ge(&amn_t_sleep_started, 200, 30000));
  assert_int_equal(amn_t_counter_get(&amn_t_sleep_running), 200);
  amn_t_sleep_release_all();
  pthread_mutex_lock(&m.mu);
  while (m.done < 200) pthread_cond_wait(&m.cv, &m.mu);
  pthread_mutex_unlock(&m.mu);
  assert_int_equal(m.ok, 200);
  amn_client_free(c);
  free_server(s);
}

typedef struct thr_arg {
  amn_client *c;
  int ok;
} thr_arg;

static void *thr_main(void *p) {
  thr_arg *a = p;
  for (int i = 0; i < 100; i++) {
    char q[32];
    int n = snprintf(q, sizeof q, "t%p-%d", (void *)a, i);
    amn_result r;
    if (amn_client_execute(a->c, (const uint8_t *)q, (size_t)n, NULL, 0, NULL, &r, NULL, NULL) == 0 &&
        r.code == AMN_STATUS_OK && r.len == (size_t)n && memcmp(r.data, q, (size_t)n) == 0)
      a->ok++;
    amn_result_free(&r);
  }
  return NULL;
}

static void test_threads_share_client(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  pthread_t t[8];
  thr_arg a[8];
  for (int i = 0; i < 8; i++) {
    a[i].c = c;
    a[i].ok = 0;
    pthread_create(&t[i], NULL, thr_main, &a[i]);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(a[i].ok, 100);
  }
  amn_client_free(c);
  free_server(s);
}

typedef struct shut_arg {
  amn_server *s;
} shut_arg;
static void *stopper(void *p) {
  shut_arg *a = p;
  amn_server_stop(a->s);
  return NULL;
}

static void test_graceful_shutdown(void **st) {
  (void)st;
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.drain_timeout_ms = 5000;
  amn_server *s = start_server(&o);
  amn_client *c = make_client(s, NULL, 0);
  bool serving = false;
  assert_int_equal(amn_client_health(c, "", 2000, &serving, NULL, NULL, 0), 0);
  assert_true(serving);
  many_ctx m = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, "600", 3};
  amn_t_counter_set(&amn_t_sleep_started, 0);
  for (int i = 0; i < 20; i++) {
    amn_call_opts co = {0};
    co.timeout_ms = 20000;
    assert_int_equal(amn_client_unary_async(c, "/test.Svc/Sleep", (const uint8_t *)"600", 3, &co, many_cb, &m), 0);
  }
  assert_true(amn_t_counter_wait_ge(&amn_t_sleep_started, 20, 10000)); /* the calls are in flight */
  pthread_t t;
  shut_arg a = {s};
  pthread_create(&t, NULL, stopper, &a);
  pthread_mutex_lock(&m.mu);
  while (m.done < 20) pthread_cond_wait(&m.cv, &m.mu);
  pthread_mutex_unlock(&m.mu);
  pthread_join(t, NULL);
  assert_int_equal(m.ok, 20); /* every in-flight call completed during the drain */
  /* the server is gone: a new call fails with UNAVAILABLE, no hang */
  amn_result r;
  assert_int_equal(call_raw(c, AMN_METHOD_EXECUTE, "", 3000, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_UNAVAILABLE);
  amn_result_free(&r);
  amn_client_free(c);
  free_server(s);
}

static void test_health(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  bool serving = false;
  amn_status_code code;
  assert_int_equal(amn_client_health(c, "", 2000, &serving, &code, NULL, 0), 0);
  assert_true(serving);
  assert_int_equal(amn_client_health(c, "amaters.v1.AmateRS", 2000, &serving, &code, NULL, 0), 0);
  assert_true(serving);
  amn_server_set_health(s, "amaters.v1.AmateRS", false);
  assert_int_equal(amn_client_health(c, "amaters.v1.AmateRS", 2000, &serving, &code, NULL, 0), 0);
  assert_false(serving);
  assert_int_not_equal(amn_client_health(c, "no.such.Service", 2000, &serving, &code, NULL, 0), 0);
  assert_int_equal(code, AMN_STATUS_NOT_FOUND);
  amn_client_free(c);
  free_server(s);
}

/* ---- mTLS refusals: each one refused with a clear status, server unaffected ---- */

static void issue(const char *name, const char *cn, unsigned eku, time_t nb, time_t na, const char *ca_prefix,
                  const char *const *dns, const char *const *ips, amn_tls_opts *out, char *store) {
  char ca[512], cak[512], crt[512], key[512], err[256];
  snprintf(ca, sizeof ca, "%s/%s.pem", amn_t_dir, ca_prefix);
  snprintf(cak, sizeof cak, "%s/%s-key.pem", amn_t_dir, ca_prefix);
  snprintf(crt, sizeof crt, "%s/%s.pem", amn_t_dir, name);
  snprintf(key, sizeof key, "%s/%s-key.pem", amn_t_dir, name);
  amn_pki_cert_spec spec = {cn, dns, ips, eku, nb, na, false, NULL, NULL};
  int rc = amn_pki_issue_test_cert(ca, cak, &spec, crt, key, err, sizeof err);
  if (rc) fprintf(stderr, "issue %s: %s\n", name, err);
  assert_int_equal(rc, 0);
  strcpy(store, crt);
  strcpy(store + 512, key);
  out->cert_path = store;
  out->key_path = store + 512;
}

static void expect_refused(amn_server *s, const amn_tls_opts *tls, const char *what) {
  amn_client *c = make_client(s, tls, 0);
  amn_result r;
  assert_int_equal(call_raw(c, AMN_METHOD_EXECUTE, "", 5000, &r), 0);
  if (r.code != AMN_STATUS_UNAVAILABLE) fprintf(stderr, "%s: got %s %s\n", what, amn_status_name(r.code), r.message);
  assert_int_equal(r.code, AMN_STATUS_UNAVAILABLE);
  fprintf(stderr, "  refused as expected (%s): %s\n", what, r.message);
  amn_result_free(&r);
  amn_client_free(c);
  /* a good client is still served */
  c = make_client(s, NULL, 0);
  assert_int_equal(amn_client_execute(c, (const uint8_t *)"ok", 2, NULL, 0, NULL, &r, NULL, NULL), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  amn_client_free(c);
}

static void test_mtls_refusals(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  time_t now = time(NULL);
  char err[256], p1[512], p2[512];
  snprintf(p1, sizeof p1, "%s/other-ca.pem", amn_t_dir);
  snprintf(p2, sizeof p2, "%s/other-ca-key.pem", amn_t_dir);
  assert_int_equal(amn_pki_make_ca(p1, p2, "other CA", now - 3600, now + 86400, err, sizeof err), 0);
  static char st1[1024], st2[1024], st3[1024], st4[1024];
  amn_tls_opts t;

  /* no client certificate */
  t = amn_t_ctls;
  t.cert_path = NULL;
  t.key_path = NULL;
  expect_refused(s, &t, "no client certificate");
  /* a client certificate from another CA */
  t = amn_t_ctls;
  issue("c-other", "intruder", 2, now - 3600, now + 86400, "other-ca", NULL, NULL, &t, st1);
  expect_refused(s, &t, "client cert from another CA");
  /* an expired client certificate: our client refuses to use it at all
   * (the server's refusal of one is covered by test_tls and the grpcio
   * interop test, whose client presents it anyway) */
  t = amn_t_ctls;
  issue("c-expired", "old client", 2, now - 86400 * 10, now - 86400, "ca", NULL, NULL, &t, st2);
  {
    amn_client_opts o;
    amn_client_opts_init(&o);
    o.url = "https://localhost:1";
    o.tls = t;
    amn_client *c = NULL;
    char e[256] = "";
    assert_int_equal(amn_client_new(&c, &o, e, sizeof e), AMN_ETLS);
    assert_non_null(strstr(e, "has expired"));
  }
  /* a client certificate without clientAuth (serverAuth only) */
  t = amn_t_ctls;
  issue("c-eku", "wrong usage", 1, now - 3600, now + 86400, "ca", NULL, NULL, &t, st3);
  expect_refused(s, &t, "client cert without clientAuth");
  /* the server name does not match: verify against a name the server cert lacks */
  t = amn_t_ctls;
  t.server_name = "not-the-server.example";
  expect_refused(s, &t, "server name mismatch");
  /* the client trusts another CA: the server's chain does not verify */
  t = amn_t_ctls;
  t.ca_path = p1;
  expect_refused(s, &t, "server cert from an untrusted CA");
  (void)st4;
  free_server(s);
}

static void test_plaintext_mismatch(void **st) {
  (void)st;
  if (amn_t_transport == AMN_TRANSPORT_H3) { /* [h3] */
    fprintf(stderr, "  skipped over HTTP/3: QUIC has no plaintext mode\n");
    skip();
  }
  amn_server *s = start_server(NULL);
  /* an insecure (h2c) client against the TLS server: a clear error, no hang */
  amn_client_opts o;
  amn_client_opts_init(&o);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u", amn_server_port(s));
  o.url = url;
  o.tls.insecure = true;
  o.connect_timeout_ms = 3000;
  amn_client *c = NULL;
  assert_int_equal(amn_client_new(&c, &o, NULL, 0), 0);
  amn_result r;
  assert_int_equal(call_raw(c, AMN_METHOD_EXECUTE, "", 5000, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_UNAVAILABLE);
  fprintf(stderr, "  h2c client vs TLS server: %s\n", r.message);
  amn_result_free(&r);
  amn_client_free(c);
  free_server(s);

  /* a TLS client against a plaintext server */
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.listen = "127.0.0.1:0";
  so.tls.insecure = true;
  so.threads = 1;
  assert_int_equal(amn_server_new(&s, &so, NULL, 0), 0);
  assert_int_equal(amn_server_use_echo(s), 0);
  assert_int_equal(amn_server_start(s, NULL, 0), 0);
  c = make_client(s, NULL, 0);
  assert_int_equal(call_raw(c, AMN_METHOD_EXECUTE, "", 5000, &r), 0);
  assert_int_equal(r.code, AMN_STATUS_UNAVAILABLE);
  fprintf(stderr, "  TLS client vs h2c server: %s\n", r.message);
  amn_result_free(&r);
  amn_client_free(c);
  /* and the plaintext server works for an h2c client */
  snprintf(url, sizeof url, "http://127.0.0.1:%u", amn_server_port(s));
  o.url = url;
  assert_int_equal(amn_client_new(&c, &o, NULL, 0), 0);
  assert_int_equal(amn_client_execute(c, (const uint8_t *)"plain", 5, NULL, 0, NULL, &r, NULL, NULL), 0);
  assert_int_equal(r.code, AMN_STATUS_OK);
  amn_result_free(&r);
  amn_client_free(c);
  free_server(s);
}

/* A second server (SO_REUSEPORT or not) may not take over a port in use. */
static void test_port_in_use(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_server_opts o;
  amn_server_opts_init(&o);
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", amn_server_port(s));
  o.listen = listen;
  o.tls = amn_t_stls;
  amn_server *s2 = NULL;
  char err[256] = "";
  assert_int_equal(amn_server_new(&s2, &o, err, sizeof err), 0);
  assert_int_equal(amn_server_use_echo(s2), 0);
  assert_int_equal(amn_server_start(s2, err, sizeof err), AMN_EIO);
  assert_non_null(strstr(err, "in use"));
  amn_server_free(s2);
  free_server(s);
}

/* amn_server_update: the run-time settings change for new calls and
 * connections; a bad update changes nothing. */
static int exec_len(amn_client *c, size_t n) {
  uint8_t *q = calloc(1, n);
  amn_result r;
  assert_int_equal(amn_client_execute(c, q, n, NULL, 0, NULL, &r, NULL, NULL), 0);
  int code = (int)r.code;
  amn_result_free(&r);
  free(q);
  return code;
}

static void test_update(void **st) {
  (void)st;
  amn_server *s = start_server(NULL);
  amn_client *c = make_client(s, NULL, 0);
  assert_int_equal(exec_len(c, 2000), AMN_STATUS_OK);
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.tls = amn_t_stls;
  o.max_recv_message = 1000;
  char err[512] = "";
  assert_int_equal(amn_server_update(s, &o, err, sizeof err), 0);
  assert_int_equal(exec_len(c, 2000), AMN_STATUS_RESOURCE_EXHAUSTED); /* the same connection: a new call */
  assert_int_equal(exec_len(c, 500), AMN_STATUS_OK);

  /* rejected updates apply nothing */
  amn_server_opts bad = o;
  bad.max_recv_message = 0;
  assert_int_equal(amn_server_update(s, &bad, err, sizeof err), AMN_EINVAL);
  bad.max_recv_message = 0x7fffffff;
  assert_int_equal(amn_server_update(s, &bad, err, sizeof err), AMN_EINVAL);
  assert_non_null(strstr(err, "connection buffer limit"));
  bad = o;
  bad.max_recv_message = 1u << 20;
  bad.tls.key_path = "/nonexistent/server-key.pem";
  assert_int_not_equal(amn_server_update(s, &bad, err, sizeof err), 0);
  assert_non_null(strstr(err, "/nonexistent/server-key.pem"));
  assert_int_equal(exec_len(c, 2000), AMN_STATUS_RESOURCE_EXHAUSTED); /* still 1000 */

  /* max_connections for new connections: c keeps its own, a second client is refused, then admitted */
  o.max_connections = 1;
  assert_int_equal(amn_server_update(s, &o, err, sizeof err), 0);
  amn_server_stats ss;
  assert_int_equal(amn_server_get_stats(s, &ss), 0);
  assert_int_equal(ss.connections, 1);
  amn_client *c2 = make_client(s, NULL, 0);
  assert_int_equal(exec_len(c2, 10), AMN_STATUS_UNAVAILABLE);
  assert_int_equal(exec_len(c, 10), AMN_STATUS_OK);
  assert_true(amn_server_refused_connections(s) >= 1);
  o.max_connections = 0;
  assert_int_equal(amn_server_update(s, &o, err, sizeof err), 0);
  amn_client_free(c2); /* (its endpoint waits out a backoff after the refusal: a new client) */
  c2 = make_client(s, NULL, 0);
  assert_int_equal(exec_len(c2, 10), AMN_STATUS_OK);
  amn_client_free(c2);
  amn_client_free(c);
  free_server(s);
}

/* listen_fd / listen_fd_udp: the server serves sockets the test bound, with
 * two loops sharing them; wrong ones are refused at start by name. */
static int bound_socket(int type, uint16_t port, uint16_t *got) {
  int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  *got = ntohs(a.sin_port);
  return fd;
}

static void test_given_sockets(void **st) {
  (void)st;
  int tfd = -1, ufd = -1;
  uint16_t port = 0, up = 0;
  for (int i = 0; i < 50 && ufd < 0; i++) { /* a port free on both */
    if (tfd >= 0) close(tfd);
    tfd = bound_socket(SOCK_STREAM, 0, &port);
    ufd = bound_socket(SOCK_DGRAM, port, &up);
  }
  assert_true(tfd >= 0 && ufd >= 0);
  assert_int_equal(listen(tfd, 64), 0);
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.tls = amn_t_stls;
  o.threads = 2;
  o.listen = "127.0.0.1:1"; /* not bound */
  o.transport = AMN_TRANSPORT_BOTH;
  o.listen_fd = tfd;
  o.listen_fd_udp = ufd;
  amn_server *s = NULL;
  char err[256] = "";
  assert_int_equal(amn_server_new(&s, &o, err, sizeof err), 0);
  assert_int_equal(amn_server_use_echo(s), 0);
  assert_int_equal(amn_server_start(s, err, sizeof err), 0);
  assert_int_equal(amn_server_port(s), port);
  amn_client *cs[4];
  for (int i = 0; i < 4; i++) { /* several connections, the two loops sharing the socket */
    cs[i] = make_client(s, NULL, 0);
    assert_int_equal(exec_len(cs[i], 100), AMN_STATUS_OK);
  }
  for (int i = 0; i < 4; i++) amn_client_free(cs[i]);
  free_server(s);
  /* the test's descriptors are still its own: the server closed only its duplicates */
  int type = 0;
  socklen_t tl = sizeof type;
  assert_int_equal(getsockopt(tfd, SOL_SOCKET, SO_TYPE, &type, &tl), 0);

  /* refused: a missing socket for a transport, a socket of the wrong kind, one that does not listen */
  struct {
    int tcp, udp;
    amn_transport t;
    const char *msg;
  } bad[] = {
      {tfd, -1, AMN_TRANSPORT_BOTH, "needs a UDP socket too"},
      {-1, ufd, AMN_TRANSPORT_BOTH, "needs a TCP socket too"},
      {tfd, ufd, AMN_TRANSPORT_H2, "a UDP socket was given but the transport is HTTP/2 only"},
      {ufd, -1, AMN_TRANSPORT_H2, "is a UDP (datagram) socket"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    o.listen_fd = bad[i].tcp;
    o.listen_fd_udp = bad[i].udp;
    o.transport = bad[i].t;
    assert_int_equal(amn_server_new(&s, &o, err, sizeof err), 0);
    assert_int_equal(amn_server_start(s, err, sizeof err), AMN_EINVAL);
    if (!strstr(err, bad[i].msg)) fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].msg);
    amn_server_free(s);
  }
  uint16_t p2;
  int idle = bound_socket(SOCK_STREAM, 0, &p2);
  o.listen_fd = idle;
  o.listen_fd_udp = -1;
  assert_int_equal(amn_server_new(&s, &o, err, sizeof err), 0);
  assert_int_equal(amn_server_start(s, err, sizeof err), AMN_EINVAL);
  assert_non_null(strstr(err, "is not listening"));
  amn_server_free(s);
  close(idle);
  close(tfd);
  close(ufd);
}

static int setup_all(void **st) {
  (void)st;
  if (amn_t_setup("e2e") != 0) return -1;
  amn_log_set_level(getenv("AMN_TEST_DEBUG") ? AMN_LOG_DEBUG : AMN_LOG_WARN);
  return 0;
}

static int teardown_all(void **st) {
  (void)st;
  amn_t_teardown();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary_echo),
      cmocka_unit_test(test_identity_and_deadline_seen),
      cmocka_unit_test(test_status_message_metadata),
      cmocka_unit_test(test_unknown_method),
      cmocka_unit_test(test_deadlines),
      cmocka_unit_test(test_server_deadline),
      cmocka_unit_test(test_bidi_stream_10000),
      cmocka_unit_test(test_recv_backpressure),
      cmocka_unit_test(test_large_64mib),
      cmocka_unit_test(test_oversize),
      cmocka_unit_test(test_client_cancel),
      cmocka_unit_test(test_200_concurrent_async),
      cmocka_unit_test(test_threads_share_client),
      cmocka_unit_test(test_graceful_shutdown),
      cmocka_unit_test(test_health),
      cmocka_unit_test(test_mtls_refusals),
      cmocka_unit_test(test_plaintext_mismatch),
      cmocka_unit_test(test_port_in_use),
      cmocka_unit_test(test_update),
      cmocka_unit_test(test_given_sockets),
  };
  return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
