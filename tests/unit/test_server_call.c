/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The server call core (server/call.c) without sockets, through the very
 * table the HTTP/2 and HTTP/3 bindings use (amn_call_binding,
 * transport/stransport.h): a server that is never started, one loop built
 * by hand with a fake clock, and a fake binding that records what the core
 * asks of its stream (kick, consume) and pulls responses as a binding does.
 *
 * Also allocation-failure injection: the library's malloc, calloc, realloc,
 * strdup and strndup are wrapped at link time (-Wl,--wrap, see CMakeLists.txt), and
 * a whole unary call runs again with the 1st, 2nd, ... allocation failing,
 * until one run sees no failure: each must end cleanly (the call gets a
 * status, or is never created), with every allocation freed.
 */
#include <ev.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "server/server_internal.h"

/* ---- allocation-failure injection ---- */

#include "failmalloc.h"

/* ---- a server that is never started, one loop, a fake clock ---- */

static amn_server *g_srv;
static amn_srv_loop g_sl;
static int64_t g_now = 1000000000LL;
static int64_t fake_clock(void) { return g_now; }
static void wake_cb(struct ev_loop *ev, ev_async *w, int revents) { (void)ev; (void)w; (void)revents; }

/* ---- the fake transport ---- */

typedef struct fake_conn {
  int kicks;
  size_t consumed;
} fake_conn;

static void f_kick(void *stream) { ((fake_conn *)stream)->kicks++; }
static void f_consume(void *stream, size_t n) { ((fake_conn *)stream)->consumed += n; }
static const amn_st_stream_ops fake_ops = {f_kick, f_consume, AMN_TRANSPORT_H2};
static const amn_st_calls *const B = &amn_call_binding;

/* What a binding sends for a call, as it would on a kick: response headers
 * (or trailers-only), the framed messages, the trailers. */
typedef struct response {
  bool headers, trailers_only, trailers;
  int hdr_rc;
  char status[8];       /* :status */
  char ctype[64];       /* content-type */
  char grpc_status[8];  /* from the final block */
  char grpc_message[256];
  uint8_t body[4096];
  size_t len;
} response;

static void find(const amn_hdr_buf *b, const char *name, char *out, size_t cap) {
  for (size_t i = 0; i < b->n; i++)
    if (b->h[i].nlen == strlen(name) && memcmp(b->h[i].name, name, b->h[i].nlen) == 0) {
      size_t n = b->h[i].vlen < cap - 1 ? b->h[i].vlen : cap - 1;
      memcpy(out, b->h[i].value, n);
      out[n] = 0;
    }
}

/* The queue is empty and the final status is decided: the trailers follow. */
static bool avail_is_eof(amn_call *c) {
  bool eof = false;
  ssize_t n = B->peek(c, 0, &eof);
  return n <= 0 && eof;
}

static void pump(amn_call *c, response *r) {
  amn_hdr_buf b;
  amn_st_step step = B->step(c);
  if (step == AMN_ST_HEADERS || step == AMN_ST_TRAILERS_ONLY) {
    amn_hdr_buf_init(&b);
    r->trailers_only = step == AMN_ST_TRAILERS_ONLY;
    r->hdr_rc = B->headers(c, &b, r->trailers_only);
    r->headers = true;
    find(&b, ":status", r->status, sizeof r->status);
    find(&b, "content-type", r->ctype, sizeof r->ctype);
    /* an HTTP error answer carries the gRPC status in its headers too */
    find(&b, "grpc-status", r->grpc_status, sizeof r->grpc_status);
    find(&b, "grpc-message", r->grpc_message, sizeof r->grpc_message);
    if (r->trailers_only) {
      find(&b, "grpc-status", r->grpc_status, sizeof r->grpc_status);
      find(&b, "grpc-message", r->grpc_message, sizeof r->grpc_message);
      r->trailers = true;
    }
    amn_hdr_buf_free(&b);
  }
  if (r->trailers || B->step(c) != AMN_ST_MORE_DATA) return;
  bool eof = false;
  for (;;) {
    ssize_t avail = B->peek(c, sizeof r->body - r->len, &eof);
    if (avail <= 0) break;
    ssize_t n = B->pull(c, r->body + r->len, (size_t)avail, &eof);
    assert_int_equal(n, avail);
    r->len += (size_t)n;
    if (eof) break;
  }
  if (eof || (avail_is_eof(c))) {
    amn_hdr_buf_init(&b);
    r->hdr_rc = B->trailers(c, &b);
    find(&b, "grpc-status", r->grpc_status, sizeof r->grpc_status);
    find(&b, "grpc-message", r->grpc_message, sizeof r->grpc_message);
    r->trailers = true;
    amn_hdr_buf_free(&b);
  }
}

/* ---- requests ---- */

static void hdr(amn_call *c, const char *name, const char *value) {
  B->header(c, (const uint8_t *)name, strlen(name), (const uint8_t *)value, strlen(value));
}

/* A request's headers; extra: name, value, ..., NULL. NULL when the core
 * could not allocate the call (a binding then resets the stream). */
static amn_call *request(fake_conn *fc, const char *path, ...) {
  amn_call *c = B->begin(&g_sl, &fake_ops, fc, NULL, "192.0.2.1:5000", false);
  if (!c) return NULL;
  hdr(c, ":method", "POST");
  hdr(c, ":scheme", "https");
  hdr(c, ":path", path);
  hdr(c, ":authority", "localhost");
  va_list ap;
  va_start(ap, path);
  bool ct = false, te = false;
  const char *n;
  while ((n = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    if (strcmp(n, "content-type") == 0) ct = v != NULL;
    if (strcmp(n, "te") == 0) te = v != NULL;
    if (v) hdr(c, n, v);
  }
  va_end(ap);
  if (!ct) hdr(c, "content-type", "application/grpc");
  if (!te) hdr(c, "te", "trailers");
  B->headers_end(c);
  return c;
}

static void send_msg(amn_call *c, const char *payload, size_t len) {
  uint8_t buf[512];
  amn_frame_prefix(buf, len);
  memcpy(buf + 5, payload, len);
  B->data(c, buf, 5 + len);
}

/* The binding lets go of the stream (after the trailers, or a reset). */
static void close_stream(amn_call *c, amn_status_code why) { B->closed(c, why, NULL); }

/* An Echo call, already begun, carries one message to a normal end. */
static void echo_through(amn_call *c) {
  send_msg(c, "ok", 2);
  B->remote_close(c);
  response r = {0};
  pump(c, &r);
  assert_string_equal(r.grpc_status, "0");
  close_stream(c, AMN_STATUS_OK);
}

/* ---- handlers ---- */

static int g_cancels;
static amn_status_code g_cancel_code;
static int g_writables;
static amn_call *g_held; /* a call whose handler answers later */

static void echo_msg(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)ud;
  int rc = amn_call_send(c, msg, len);
  amn_call_finish(c, rc == 0 ? AMN_STATUS_OK : AMN_STATUS_RESOURCE_EXHAUSTED, rc == 0 ? NULL : "send failed");
}
static void on_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)ud;
  g_cancels++;
  g_cancel_code = why;
  if (c == g_held) g_held = NULL;
  amn_call_finish(c, why, NULL);
}
static void later_msg(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)msg; (void)len; (void)ud;
  g_held = c;
}
static void stream_msg(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)ud;
  amn_call_send(c, msg, len);
}
static void stream_half_close(amn_call *c, void *ud) {
  (void)ud;
  amn_call_finish(c, AMN_STATUS_OK, NULL);
}
static int g_pauser_msgs;
static void pauser_msg(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)msg; (void)len; (void)ud;
  if (g_pauser_msgs++ == 0) amn_call_pause_recv(c);
}
static void on_writable(amn_call *c, void *ud) {
  (void)c; (void)ud;
  g_writables++;
}

/* A handler whose answer passes the connection's bound: it must not hear
 * on_cancel while it is inside amn_call_send. */
static bool g_in_send;
static int g_big_cancels, g_cancel_in_send;
static void big_msg(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)msg; (void)len; (void)ud;
  static uint8_t big[500];
  g_in_send = true;
  int rc = amn_call_send(c, big, sizeof big);
  g_in_send = false;
  (void)rc;
}
static void big_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)why; (void)ud;
  g_big_cancels++;
  if (g_in_send) g_cancel_in_send++;
  amn_call_finish(c, AMN_STATUS_CANCELLED, NULL);
}

static int setup(void **st) {
  (void)st;
  amn_log_set_level(AMN_LOG_ERROR);
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.listen = "127.0.0.1:0";
  o.tls.insecure = true;
  o.max_recv_message = 100;
  o.stream_send_buffer = 64;
  char err[256];
  if (amn_server_new(&g_srv, &o, err, sizeof err) != 0) return -1;
  amn_handler h = {.on_message = echo_msg, .on_cancel = on_cancel};
  amn_server_register(g_srv, "/t.S/Echo", &h);
  amn_handler l = {.on_message = later_msg, .on_cancel = on_cancel};
  amn_server_register(g_srv, "/t.S/Later", &l);
  amn_handler s = {.on_message = stream_msg, .on_half_close = stream_half_close, .on_cancel = on_cancel,
                   .on_writable = on_writable, .client_streaming = true};
  amn_server_register(g_srv, "/t.S/Stream", &s);
  amn_handler p = {.on_message = pauser_msg, .on_half_close = stream_half_close, .on_cancel = on_cancel,
                   .client_streaming = true};
  amn_server_register(g_srv, "/t.S/Pause", &p);
  amn_handler big = {.on_message = big_msg, .on_cancel = big_cancel, .client_streaming = true};
  amn_server_register(g_srv, "/t.S/Big", &big);
  memset(&g_sl, 0, sizeof g_sl);
  g_sl.srv = g_srv;
  g_sl.ev = ev_loop_new(EVFLAG_AUTO);
  g_sl.clock_ns = fake_clock;
  g_sl.thread = pthread_self(); /* this thread is the loop */
  amn_mpsc_init(&g_sl.ops);
  ev_async_init(&g_sl.wake, wake_cb);
  ev_async_start(g_sl.ev, &g_sl.wake);
  return 0;
}

static int teardown(void **st) {
  (void)st;
  amn_call_cache_free(&g_sl);
  ev_async_stop(g_sl.ev, &g_sl.wake);
  ev_loop_destroy(g_sl.ev);
  amn_server_free(g_srv);
  return 0;
}

/* ---- tests ---- */

static void test_unary_echo(void **st) {
  (void)st;
  fake_conn fc = {0};
  amn_call *c = request(&fc, "/t.S/Echo", NULL);
  send_msg(c, "hello", 5);
  B->remote_close(c);
  assert_true(fc.kicks > 0);
  response r = {0};
  pump(c, &r);
  assert_string_equal(r.status, "200");
  assert_false(r.trailers_only);
  assert_int_equal(r.len, 10);
  assert_memory_equal(r.body, "\0\0\0\0\5hello", 10);
  assert_string_equal(r.grpc_status, "0");
  assert_int_equal(fc.consumed, 10); /* the request's window is granted back */
  close_stream(c, AMN_STATUS_OK);
  assert_int_equal(g_cancels, 0);
}

static void test_refusals(void **st) {
  (void)st;
  static const struct {
    const char *path, *ctype, *extra, *extra_v;
    const char *status, *grpc_status;
  } cases[] = {
      {"/no.Such/Method", NULL, NULL, NULL, "200", "12"},               /* UNIMPLEMENTED */
      {"/t.S/Echo", "text/plain", NULL, NULL, "415", NULL},             /* not gRPC */
      {"/t.S/Echo", NULL, "grpc-timeout", "12parsecs", "400", "13"},    /* bad timeout: INTERNAL */
      {"/t.S/Echo", NULL, "grpc-encoding", "gzip", "200", "12"},        /* no compression */
      {"/t.S/Echo", NULL, "grpc-timeout", "0n", "200", "4"},            /* DEADLINE_EXCEEDED at once */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fake_conn fc = {0};
    amn_call *c = cases[i].extra ? request(&fc, cases[i].path, "content-type", cases[i].ctype, cases[i].extra,
                                           cases[i].extra_v, NULL)
                                 : request(&fc, cases[i].path, "content-type", cases[i].ctype, NULL);
    response r = {0};
    pump(c, &r);
    bool http_error = strcmp(cases[i].status, "200") != 0;
    assert_string_equal(r.status, cases[i].status);
    if (cases[i].grpc_status) assert_string_equal(r.grpc_status, cases[i].grpc_status);
    if (http_error) { /* headers, a text body that says why, the end: no trailers */
      assert_false(r.trailers_only);
      assert_string_equal(r.ctype, "text/plain; charset=utf-8");
      assert_true(r.len > 4 && memcmp(r.body, cases[i].status, 3) == 0 && r.body[3] == ':');
      r.body[r.len < sizeof r.body ? r.len : sizeof r.body - 1] = 0;
      assert_non_null(strstr((const char *)r.body, "This is a gRPC server"));
      assert_true(r.trailers);
    } else {
      assert_true(r.trailers_only);
    }
    /* the request body that still comes is taken and granted back, not delivered */
    send_msg(c, "x", 1);
    assert_int_equal(fc.consumed, 6);
    close_stream(c, AMN_STATUS_CANCELLED);
  }
  assert_int_equal(g_cancels, 0); /* no handler ever had these calls */
}

static void test_message_errors(void **st) {
  (void)st;
  /* larger than max_recv_message (100): RESOURCE_EXHAUSTED naming both sizes */
  fake_conn fc = {0};
  amn_call *c = request(&fc, "/t.S/Echo", NULL);
  uint8_t big[5];
  amn_frame_prefix(big, 101);
  B->data(c, big, 5);
  response r = {0};
  pump(c, &r);
  assert_string_equal(r.grpc_status, "8");
  assert_non_null(strstr(r.grpc_message, "101 vs. 100"));
  close_stream(c, AMN_STATUS_CANCELLED);
  /* the request ends inside a message */
  fake_conn f2 = {0};
  c = request(&f2, "/t.S/Echo", NULL);
  uint8_t part[7] = {0, 0, 0, 0, 9, 'a', 'b'};
  B->data(c, part, sizeof part);
  B->remote_close(c);
  response r2 = {0};
  pump(c, &r2);
  assert_string_equal(r2.grpc_status, "13");
  assert_non_null(strstr(r2.grpc_message, "inside a message"));
  close_stream(c, AMN_STATUS_CANCELLED);
  /* a unary request without a message */
  fake_conn f3 = {0};
  c = request(&f3, "/t.S/Echo", NULL);
  B->remote_close(c);
  response r3 = {0};
  pump(c, &r3);
  assert_string_equal(r3.grpc_status, "13");
  close_stream(c, AMN_STATUS_CANCELLED);
  /* a unary call with two messages in one chunk: INTERNAL, although the
   * echo handler answered OK on the first one */
  fake_conn f5 = {0};
  c = request(&f5, "/t.S/Echo", NULL);
  uint8_t two[12] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
  B->data(c, two, sizeof two);
  B->remote_close(c);
  response r5 = {0};
  pump(c, &r5);
  assert_int_equal(r5.len, 0); /* the echo of 'a' is not sent */
  assert_string_equal(r5.grpc_status, "13");
  assert_non_null(strstr(r5.grpc_message, "more than one"));
  close_stream(c, AMN_STATUS_CANCELLED);
  /* the same with the second message in a later chunk, while the handler still holds the call */
  fake_conn f6 = {0};
  c = request(&f6, "/t.S/Later", NULL);
  send_msg(c, "a", 1);
  assert_ptr_equal(g_held, c);
  int cancels = g_cancels;
  send_msg(c, "b", 1);
  assert_int_equal(g_cancels, cancels + 1); /* the handler hears why */
  response r6 = {0};
  pump(c, &r6);
  assert_string_equal(r6.grpc_status, "13");
  close_stream(c, AMN_STATUS_CANCELLED);
  /* a bad flag byte */
  fake_conn f4 = {0};
  c = request(&f4, "/t.S/Echo", NULL);
  uint8_t flag[6] = {7, 0, 0, 0, 1, 'x'};
  B->data(c, flag, sizeof flag);
  response r4 = {0};
  pump(c, &r4);
  assert_string_equal(r4.grpc_status, "13");
  close_stream(c, AMN_STATUS_CANCELLED);
}

/* Deadlines are computed from the loop's clock: a fake clock shows what a
 * handler sees, and the largest legal grpc-timeout saturates. */
static void test_deadline_from_clock(void **st) {
  (void)st;
  fake_conn fc = {0};
  amn_call *c = request(&fc, "/t.S/Later", "grpc-timeout", "1500m", NULL);
  send_msg(c, "x", 1);
  assert_ptr_equal(g_held, c);
  assert_int_equal(amn_call_deadline_remaining_ms(c), 1500);
  g_now += 1000000000LL; /* one second later */
  assert_int_equal(amn_call_deadline_remaining_ms(c), 500);
  g_now += 2000000000LL;
  assert_int_equal(amn_call_deadline_remaining_ms(c), 0);
  amn_call_finish(c, AMN_STATUS_OK, NULL);
  g_held = NULL;
  response r = {0};
  pump(c, &r);
  close_stream(c, AMN_STATUS_OK);

  fake_conn f2 = {0};
  c = request(&f2, "/t.S/Later", "grpc-timeout", "99999999H", NULL);
  send_msg(c, "x", 1);
  assert_true(amn_call_deadline_remaining_ms(c) > 1000LL * 3600 * 24 * 365 * 200); /* ~292 years: INT64_MAX ns */
  amn_call_finish(c, AMN_STATUS_OK, NULL);
  g_held = NULL;
  response r2 = {0};
  pump(c, &r2);
  assert_string_equal(r2.grpc_status, "0");
  close_stream(c, AMN_STATUS_OK);

  fake_conn f3 = {0};
  c = request(&f3, "/t.S/Later", NULL);
  send_msg(c, "x", 1);
  assert_int_equal(amn_call_deadline_remaining_ms(c), -1); /* none */
  amn_call_finish(c, AMN_STATUS_OK, NULL);
  g_held = NULL;
  response r3 = {0};
  pump(c, &r3);
  close_stream(c, AMN_STATUS_OK);
}

/* The client resets the stream while the handler holds the call: the
 * handler hears on_cancel once, and later sends are refused. */
static void test_cancel(void **st) {
  (void)st;
  g_cancels = 0;
  fake_conn fc = {0};
  amn_call *c = request(&fc, "/t.S/Later", NULL);
  send_msg(c, "x", 1);
  assert_ptr_equal(g_held, c);
  close_stream(c, AMN_STATUS_CANCELLED);
  assert_int_equal(g_cancels, 1);
  assert_int_equal(g_cancel_code, AMN_STATUS_CANCELLED);
  assert_null(g_held);
}

/* Backpressure: past stream_send_buffer (64 bytes) a send is refused with
 * AMN_EAGAIN; once the binding has taken enough, on_writable follows from
 * the loop's deferred list. */
static void test_send_backpressure(void **st) {
  (void)st;
  g_writables = 0;
  fake_conn fc = {0};
  amn_call *c = request(&fc, "/t.S/Stream", NULL);
  char m[40];
  memset(m, 'a', sizeof m);
  send_msg(c, m, sizeof m); /* the handler echoes: 45 bytes queued */
  assert_int_equal(amn_call_send(c, (const uint8_t *)m, sizeof m), AMN_EAGAIN);
  assert_int_equal(g_writables, 0);
  response r = {0};
  pump(c, &r); /* the binding takes the queue */
  assert_int_equal(r.len, 45);
  amn_srv_loop_run_writable(&g_sl);
  assert_int_equal(g_writables, 1);
  assert_int_equal(amn_call_send(c, (const uint8_t *)m, sizeof m), 0);
  B->remote_close(c);
  pump(c, &r);
  assert_int_equal(r.len, 90);
  assert_string_equal(r.grpc_status, "0");
  close_stream(c, AMN_STATUS_OK);
}

/* A handler that pauses receiving stops the window: nothing is granted back
 * until it resumes; then the held messages and the half-close arrive. */
static void test_pause_holds_window(void **st) {
  (void)st;
  g_pauser_msgs = 0;
  fake_conn fc = {0};
  amn_call *c = request(&fc, "/t.S/Pause", NULL);
  send_msg(c, "1", 1);
  assert_int_equal(g_pauser_msgs, 1);
  size_t granted = fc.consumed;
  send_msg(c, "2", 1);
  send_msg(c, "3", 1);
  B->remote_close(c);
  assert_int_equal(g_pauser_msgs, 1); /* held */
  assert_int_equal(fc.consumed, granted);
  amn_call_resume_recv(c);
  amn_srv_loop_run_writable(&g_sl); /* delivered from the deferred list */
  assert_int_equal(g_pauser_msgs, 3);
  assert_int_equal(fc.consumed, 18);
  response r = {0};
  pump(c, &r);
  assert_string_equal(r.grpc_status, "0");
  close_stream(c, AMN_STATUS_OK);
}

/* The connection's budget: once its calls hold grant_below bytes, a call's
 * received bytes are not granted back (it waits, parked); when another call
 * lets go of its bytes, the parked call's window is granted. */
static void test_budget_holds_window(void **st) {
  (void)st;
  amn_st_budget b = {.limit = 400, .grant_below = 150};
  char m[90];
  memset(m, 'q', sizeof m);
  fake_conn f1 = {0}, f2 = {0};
  amn_call *c1 = request(&f1, "/t.S/Later", NULL);
  B->attach(c1, &b);
  send_msg(c1, m, sizeof m); /* held by the handler until it finishes */
  amn_call *h1 = g_held;
  assert_int_equal(f1.consumed, 95);
  assert_int_equal(b.held, 90);
  amn_call *c2 = request(&f2, "/t.S/Later", NULL);
  B->attach(c2, &b);
  send_msg(c2, m, sizeof m);
  amn_call *h2 = g_held;
  assert_int_equal(b.held, 180);
  assert_int_equal(f2.consumed, 0); /* over grant_below: parked */
  assert_ptr_equal(b.parked, c2);
  amn_call_finish(h1, AMN_STATUS_OK, NULL);
  response r1 = {0};
  pump(c1, &r1);
  assert_string_equal(r1.grpc_status, "0");
  close_stream(c1, AMN_STATUS_OK); /* its request bytes are released */
  assert_int_equal(b.held, 90);
  assert_int_equal(f2.consumed, 95); /* granted now */
  assert_null(b.parked);
  amn_call_finish(h2, AMN_STATUS_OK, NULL);
  response r2 = {0};
  pump(c2, &r2);
  close_stream(c2, AMN_STATUS_OK);
  assert_int_equal(b.held, 0);
}

/* Responses the client does not take pass the connection's limit: the call
 * fails with RESOURCE_EXHAUSTED, its bytes are dropped, other calls go on. */
static void test_budget_fails_past_limit(void **st) {
  (void)st;
  amn_st_budget b = {.limit = 400, .grant_below = 150};
  unsigned long long refusals = atomic_load(&g_srv->bc.buffer_refusals);
  fake_conn f1 = {0};
  amn_call *c1 = request(&f1, "/t.S/Later", NULL);
  B->attach(c1, &b);
  send_msg(c1, "x", 1);
  amn_call *h1 = g_held;
  uint8_t big[500];
  memset(big, 'r', sizeof big);
  amn_call_reply_query(h1, big, sizeof big, NULL, 0);
  response r = {0};
  pump(c1, &r);
  assert_true(r.trailers_only);
  assert_string_equal(r.grpc_status, "8");
  assert_string_equal(r.grpc_message, "connection buffer limit of 400 bytes reached");
  assert_int_equal(atomic_load(&g_srv->bc.buffer_refusals), refusals + 1);
  assert_true(b.held <= 1);
  close_stream(c1, AMN_STATUS_OK);
  assert_int_equal(b.held, 0);
  /* the next call on the connection is served */
  fake_conn f2 = {0};
  amn_call *c2 = request(&f2, "/t.S/Echo", NULL);
  B->attach(c2, &b);
  echo_through(c2);
  assert_int_equal(b.held, 0);
}

/* A partial message's buffer grows by doubling, ahead of its bytes: a step
 * that takes the connection past its limit, with the bytes themselves under
 * it (flow control keeps them there), does not fail the call; its window
 * waits (parked) until there is room. */
static void test_budget_partial_buffer_step(void **st) {
  (void)st;
  size_t max = atomic_load(&g_srv->live.max_recv_message);
  atomic_store(&g_srv->live.max_recv_message, (size_t)1 << 20);
  amn_st_budget b = {.limit = 200 << 10, .grant_below = 100 << 10};
  static uint8_t part[150 << 10];
  amn_frame_prefix(part, 1 << 20); /* announces 1 MiB */
  memset(part + 5, 'p', sizeof part - 5);
  fake_conn f = {0};
  amn_call *c = request(&f, "/t.S/Stream", NULL);
  B->attach(c, &b);
  B->data(c, part, 60 << 10);                    /* a 64 KiB buffer */
  B->data(c, part + (60 << 10), 70 << 10);       /* 130 KiB: held past grant_below, parked */
  assert_true(c->parked);
  B->data(c, part + (130 << 10), sizeof part - (130 << 10)); /* within the window: the buffer doubles */
  response r = {0};
  pump(c, &r);
  assert_string_equal(r.grpc_status, ""); /* not failed */
  assert_true(c->df.have < b.limit);
  assert_true(c->df.cap > b.limit);
  assert_int_equal(f.kicks, 0);
  assert_true(c->parked);
  B->closed(c, AMN_STATUS_CANCELLED, NULL);
  assert_int_equal(b.held, 0);
  assert_null(b.parked);
  atomic_store(&g_srv->live.max_recv_message, max);
}

/* The server-wide bound, counted in 64 KiB units per call. */
static void test_server_buffer_limit(void **st) {
  (void)st;
  size_t keep = g_srv->bc.server_buffer_limit;
  g_srv->bc.server_buffer_limit = 128 * 1024;
  fake_conn f1 = {0};
  amn_call *c1 = request(&f1, "/t.S/Later", NULL);
  send_msg(c1, "x", 1);
  amn_call *h1 = g_held;
  size_t n = 200 * 1024;
  uint8_t *big = calloc(1, n);
  assert_non_null(big);
  amn_call_reply_query(h1, big, n, NULL, 0);
  free(big);
  response r = {0};
  pump(c1, &r);
  assert_string_equal(r.grpc_status, "8");
  assert_string_equal(r.grpc_message, "server buffer limit of 131072 bytes reached");
  assert_int_equal(atomic_load(&g_srv->bc.buffered), 0);
  close_stream(c1, AMN_STATUS_OK);
  g_srv->bc.server_buffer_limit = keep;
}

/* The header phase: a request whose headers are not complete within
 * header_timeout_ms (10 s) ends with DEADLINE_EXCEEDED; one that completes
 * them in time, and one that began later, are not touched. */
static void test_header_timeout(void **st) {
  (void)st;
  fake_conn f1 = {0}, f2 = {0}, f3 = {0};
  amn_call *slow = B->begin(&g_sl, &fake_ops, &f1, NULL, "192.0.2.9:5000", false);
  hdr(slow, ":method", "POST");                /* ... and nothing more */
  amn_call *ok = request(&f2, "/t.S/Echo", NULL); /* complete */
  g_now += 6000000000LL;
  amn_call *later = B->begin(&g_sl, &fake_ops, &f3, NULL, "192.0.2.9:5001", false);
  g_now += 4000000000LL; /* the first one's 10 s are over */
  assert_true(ev_is_active(&g_sl.hdr_phase.timer));
  ev_invoke(g_sl.ev, &g_sl.hdr_phase.timer, EV_TIMER);
  response r = {0};
  pump(slow, &r);
  assert_true(r.trailers_only);
  assert_string_equal(r.grpc_status, "4");
  assert_string_equal(r.grpc_message, "request headers not complete within 10000 ms");
  close_stream(slow, AMN_STATUS_CANCELLED);
  assert_int_equal(f3.kicks, 0); /* the later one has 4 s left */
  assert_true(ev_is_active(&g_sl.hdr_phase.timer));
  echo_through(ok);
  close_stream(later, AMN_STATUS_CANCELLED); /* the client gave up: the phase ends with the stream */
  assert_false(ev_is_active(&g_sl.hdr_phase.timer));
  assert_null(g_sl.hdr_phase.head);
}

/* Minimum progress: a call waiting on the client (a message begun, or
 * responses queued) that sees no byte move for stall_timeout_ms (30 s) ends
 * with RESOURCE_EXHAUSTED; progress in time keeps it going. */
static void test_stall(void **st) {
  (void)st;
  uint8_t part[15];
  amn_frame_prefix(part, 50); /* announces 50 bytes, 10 follow */
  memset(part + 5, 'p', 10);
  fake_conn f1 = {0}, f2 = {0}, f3 = {0};
  amn_call *slow = request(&f1, "/t.S/Stream", NULL);
  B->data(slow, part, sizeof part);
  amn_call *steady = request(&f2, "/t.S/Stream", NULL);
  B->data(steady, part, sizeof part);
  amn_call *reader = request(&f3, "/t.S/Stream", NULL);
  send_msg(reader, "answer me", 9); /* the echo is queued: the client must take it */
  g_now += 20000000000LL;
  B->data(steady, part + 5, 10); /* progress after 20 s */
  g_now += 10000000000LL;        /* 30 s for slow and reader, 10 s since steady moved */
  ev_invoke(g_sl.ev, &g_sl.progress.timer, EV_TIMER);
  response r = {0};
  pump(slow, &r);
  assert_true(r.trailers_only);
  assert_string_equal(r.grpc_status, "8");
  assert_string_equal(r.grpc_message, "request stalled: no bytes for 30000 ms");
  assert_int_equal(slow->df.cap, 0); /* its partial message is gone */
  close_stream(slow, AMN_STATUS_CANCELLED);
  response rr = {0};
  pump(reader, &rr);
  assert_string_equal(rr.grpc_status, "8");
  assert_string_equal(rr.grpc_message, "the client read no response for 30000 ms");
  assert_int_equal(rr.len, 0); /* the echo was dropped */
  close_stream(reader, AMN_STATUS_CANCELLED);
  assert_int_equal(f2.kicks, 0); /* steady goes on */
  B->data(steady, part + 5, 10);
  B->data(steady, part + 5, 10);
  B->data(steady, part + 5, 10); /* the message is complete: echoed, queued */
  B->remote_close(steady);
  response r2 = {0};
  pump(steady, &r2);
  assert_string_equal(r2.grpc_status, "0");
  assert_int_equal(r2.len, 55);
  close_stream(steady, AMN_STATUS_OK);
  assert_null(g_sl.progress.head);
}

/* A binding that takes messages whole (HTTP/3, no copy): their bytes stay
 * charged to the connection's budget, and the call waits on the client,
 * until the binding released them; acknowledged bytes are progress. */
static void test_take_charged_until_released(void **st) {
  (void)st;
  amn_st_budget b = {.limit = 100000, .grant_below = 50000};
  fake_conn f = {0};
  amn_call *c = request(&f, "/t.S/Later", NULL);
  B->attach(c, &b);
  send_msg(c, "x", 1);
  amn_call *h = g_held;
  uint8_t big[3000];
  memset(big, 't', sizeof big);
  amn_call_reply_query(h, big, sizeof big, NULL, 0);
  assert_int_equal(B->step(c), AMN_ST_HEADERS);
  amn_hdr_buf hb;
  amn_hdr_buf_init(&hb);
  assert_int_equal(B->headers(c, &hb, false), 0);
  amn_hdr_buf_free(&hb);
  size_t charged = b.held;
  amn_qmsg *m = NULL;
  bool eof = false;
  ssize_t n = B->take(c, &m, &eof);
  assert_non_null(m);
  assert_true(n > 3000);
  assert_int_equal((size_t)n, m->len - m->off);
  assert_true(eof);                      /* the answer is complete */
  assert_int_equal(b.held, charged);     /* out of the queue, still the call's */
  assert_true(b.held >= (size_t)n);
  assert_null(m->next);
  /* nothing left: another take says so */
  amn_qmsg *none = NULL;
  assert_int_equal(B->take(c, &none, &eof), 0);
  assert_null(none);
  assert_true(eof);
  /* a part acknowledged is progress: no stall 20 + 20 s later ... */
  g_now += 20000000000LL;
  B->released(c, (size_t)n / 2, 0);
  g_now += 20000000000LL;
  ev_invoke(g_sl.ev, &g_sl.progress.timer, EV_TIMER);
  assert_int_equal(b.held, charged);
  /* ... but 30 s without an acknowledgement is (the final status not yet sent) */
  g_now += 11000000000LL;
  ev_invoke(g_sl.ev, &g_sl.progress.timer, EV_TIMER);
  response r = {0};
  pump(c, &r);
  assert_string_equal(r.grpc_status, "8");
  assert_string_equal(r.grpc_message, "the client read no response for 30000 ms");
  /* the binding frees what it took: the budget lets go of it */
  B->released(c, 0, (size_t)n);
  free(m);
  assert_true(b.held < charged - 3000);
  close_stream(c, AMN_STATUS_CANCELLED);
  assert_int_equal(b.held, 0);
  assert_null(g_sl.progress.head);
}

/* A send that passes the connection's bound ends the call, but the
 * handler hears on_cancel only afterwards, from the loop's deferred list. */
static void test_budget_cancel_not_inside_send(void **st) {
  (void)st;
  amn_st_budget b = {.limit = 400, .grant_below = 150};
  g_big_cancels = g_cancel_in_send = 0;
  fake_conn f = {0};
  amn_call *c = request(&f, "/t.S/Big", NULL);
  B->attach(c, &b);
  send_msg(c, "go", 2);
  assert_int_equal(g_big_cancels, 0); /* not from inside the send */
  amn_srv_loop_run_writable(&g_sl);
  assert_int_equal(g_big_cancels, 1);
  assert_int_equal(g_cancel_in_send, 0);
  response r = {0};
  pump(c, &r);
  assert_string_equal(r.grpc_status, "8");
  close_stream(c, AMN_STATUS_CANCELLED);
  assert_int_equal(b.held, 0);
}

/* amn_call_finish from another thread is handed over to the loop. */
static void *finish_elsewhere(void *arg) {
  amn_call_send(arg, (const uint8_t *)"late", 4);
  amn_call_finish(arg, AMN_STATUS_OK, NULL);
  return NULL;
}
static void test_finish_from_another_thread(void **st) {
  (void)st;
  fake_conn fc = {0};
  amn_call *c = request(&fc, "/t.S/Later", NULL);
  send_msg(c, "x", 1);
  B->remote_close(c);
  g_held = NULL;
  pthread_t t;
  pthread_create(&t, NULL, finish_elsewhere, c);
  pthread_join(t, NULL);
  int before = fc.kicks;
  amn_srv_loop_drain_ops(&g_sl);
  assert_true(fc.kicks > before);
  response r = {0};
  pump(c, &r);
  assert_int_equal(r.len, 9);
  assert_memory_equal(r.body + 5, "late", 4);
  assert_string_equal(r.grpc_status, "0");
  close_stream(c, AMN_STATUS_OK);
}

/* One unary call from headers to stream close. Returns its grpc-status (-1
 * when the call could not even be created). */
static int unary_call(void) {
  fake_conn fc = {0};
  amn_call *c = request(&fc, "/t.S/Echo", NULL);
  if (!c) return -1;
  send_msg(c, "payload", 7);
  B->remote_close(c);
  response r = {0};
  pump(c, &r);
  bool echoed = r.len == 12 && memcmp(r.body + 5, "payload", 7) == 0;
  if (r.hdr_rc != 0) {
    close_stream(c, AMN_STATUS_INTERNAL); /* the binding resets the stream */
    return -2;
  }
  close_stream(c, AMN_STATUS_OK);
  int code = r.grpc_status[0] ? atoi(r.grpc_status) : -3;
  if (code == 0 && !echoed) return -4;
  return code;
}

static void test_every_allocation_fails(void **st) {
  (void)st;
  assert_int_equal(unary_call(), 0); /* warm: the same path without failures */
  amn_call_cache_free(&g_sl);
  int runs = 0, statuses = 0;
  for (long n = 1; n < 1000; n++) {
    long live = g_live;
    g_alloc_seen = 0;
    g_failed = false;
    g_fail_at = n;
    int code = unary_call();
    g_fail_at = 0;
    amn_call_cache_free(&g_sl);
    runs++;
    if (!g_failed) { /* more allocations than the call makes: done */
      assert_int_equal(code, 0);
      assert_int_equal(g_live, live);
      break;
    }
    /* a clean end: an error status, a reset, or no call at all; never OK
     * with a wrong body, never a leak */
    assert_true(code != -4 && code != -3);
    if (code > 0) statuses++;
    assert_int_equal(g_live, live);
  }
  print_message("  %d runs, the call made %d allocations; %d failures ended with a gRPC status\n", runs, runs - 1,
                statuses);
  assert_true(runs > 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary_echo),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_message_errors),
      cmocka_unit_test(test_deadline_from_clock),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_send_backpressure),
      cmocka_unit_test(test_pause_holds_window),
      cmocka_unit_test(test_budget_holds_window),
      cmocka_unit_test(test_budget_fails_past_limit),
      cmocka_unit_test(test_budget_partial_buffer_step),
      cmocka_unit_test(test_budget_cancel_not_inside_send),
      cmocka_unit_test(test_server_buffer_limit),
      cmocka_unit_test(test_header_timeout),
      cmocka_unit_test(test_stall),
      cmocka_unit_test(test_take_charged_until_released),
      cmocka_unit_test(test_finish_from_another_thread),
      cmocka_unit_test(test_every_allocation_fails),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
