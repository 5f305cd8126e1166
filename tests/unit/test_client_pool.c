/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The client's pool and call core (client/pool.c, client/call.c) driven
 * through the client binding interface (transport/ctransport.h) by a fake
 * transport in memory: no socket, no I/O thread. A client is built by hand
 * with one endpoint; the test plays the transport's part (a connection
 * becomes ready, says GOAWAY, a stream ends or fails) and checks what the
 * pool does: growth at the stream limit, the replacement of a connection
 * after GOAWAY, which failed attempts are sent again, and a whole response
 * through the call callbacks. A URL whose host is a name gets the
 * resolver's answers from the test (amn_pool_dns_answer): endpoints and
 * connections follow them (added, drained), calls in flight finish.
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

#include "client/client_internal.h"
#include "rpc/rpc.h"

/* ---- the fake transport ---- */

#define MAX_CONNS 8
#define MAX_STREAMS 8

typedef struct fake_stream {
  amn_ct_call *call; /* NULL: ended, or cancelled by the core */
  bool cancelled;
} fake_stream;

typedef struct fake_conn {
  amn_ct_client *tc;
  void *owner;
  uint32_t max;       /* the peer's stream limit */
  bool closed;        /* the core asked to close it */
  char host[64];      /* the address it was opened to */
  fake_stream streams[MAX_STREAMS];
  int nstreams;
} fake_conn;

static fake_conn g_conns[MAX_CONNS];
static int g_nconns;
static uint32_t g_max_streams = 2;

static void fake_open(amn_ct_client *tc, amn_ct_endpoint *ep, void *owner, void **conn) {
  assert_true(g_nconns < MAX_CONNS);
  fake_conn *fc = &g_conns[g_nconns++];
  memset(fc, 0, sizeof *fc);
  snprintf(fc->host, sizeof fc->host, "%.63s", ep->host);
  fc->tc = tc;
  fc->owner = owner;
  fc->max = g_max_streams;
  *conn = fc;
}

static uint32_t fake_max_streams(const void *conn) { return ((const fake_conn *)conn)->max; }

static void *fake_start_call(void *conn, amn_ct_call *c, amn_ct_end *fail) {
  (void)fail;
  fake_conn *fc = conn;
  assert_true(fc->nstreams < MAX_STREAMS);
  fake_stream *st = &fc->streams[fc->nstreams++];
  st->call = c;
  return st;
}

static void fake_resume(void *stream) { (void)stream; }

static void fake_cancel(void *stream) {
  fake_stream *st = stream;
  st->call = NULL;
  st->cancelled = true;
}

/* The stream ends: normally (end NULL) or failed. */
static void stream_end(fake_conn *fc, int i, const amn_ct_end *end) {
  amn_ct_call *c = fc->streams[i].call;
  assert_non_null(c);
  fc->streams[i].call = NULL;
  fc->tc->call_cbs->closed(c, end);
}

/* Like the real transports: live streams fail, then the owner hears of it. */
static void fake_close(void *conn, const char *why) {
  fake_conn *fc = conn;
  fc->closed = true;
  amn_ct_end e = {AMN_STATUS_UNAVAILABLE, why, false};
  for (int i = 0; i < fc->nstreams; i++)
    if (fc->streams[i].call) stream_end(fc, i, &e);
  void *owner = fc->owner;
  fc->owner = NULL;
  if (owner) fc->tc->conn_cbs->closed(owner, why, false);
}

static const amn_ctransport fake_tp = {
    .name = "fake",
    .kind = AMN_TRANSPORT_H2,
    .open = fake_open,
    .max_streams = fake_max_streams,
    .start_call = fake_start_call,
    .resume = fake_resume,
    .cancel = fake_cancel,
    .close = fake_close,
};

/* ---- a client built by hand ---- */

typedef struct done_rec {
  int n;
  amn_status_code code;
  char msg[200];
  size_t len;
} done_rec;

static void on_done(const amn_result *r, void *ud) {
  done_rec *d = ud;
  d->n++;
  d->code = r->code;
  snprintf(d->msg, sizeof d->msg, "%s", r->message ? r->message : "");
  d->len = r->len;
}

static amn_client *client_new_url(uint32_t max_conns, const char *url, bool spread) {
  amn_client *cl = calloc(1, sizeof *cl);
  assert_non_null(cl);
  amn_client_opts_init(&cl->o);
  cl->o.pool_max_connections = max_conns;
  cl->o.pool_min_connections = 1;
  cl->o.idle_timeout_ms = 0;
  cl->o.backoff_base_ms = 1000;
  cl->tls_on = true;
  cl->ev = ev_loop_new(EVFLAG_AUTO);
  pthread_mutex_init(&cl->stats_mu, NULL);
  pthread_mutex_init(&cl->cmu, NULL);
  pthread_cond_init(&cl->ccv, NULL);
  cl->tp = &fake_tp;
  cl->ct.ev = cl->ev;
  cl->ct.call_cbs = &amn_client_call_cbs;
  cl->o.spread_addresses = spread;
  const char *urls[] = {url};
  char err[200];
  assert_int_equal(amn_pool_init(cl, urls, 1, err, sizeof err), 0);
  g_nconns = 0;
  return cl;
}

static amn_client *client_new(uint32_t max_conns) {
  return client_new_url(max_conns, "https://192.0.2.10:4433", false); /* an address: no DNS */
}

static void client_free(amn_client *cl) {
  atomic_store(&cl->stopping, true);
  amn_client_fail_pending(cl, AMN_STATUS_CANCELLED, "end of test");
  amn_pool_close_all(cl, "end of test");
  amn_pool_free(cl);
  ev_loop_destroy(cl->ev);
  pthread_mutex_destroy(&cl->stats_mu);
  pthread_mutex_destroy(&cl->cmu);
  pthread_cond_destroy(&cl->ccv);
  free(cl);
}

/* A unary call handed to the pool, as the I/O thread does (op_start). */
static amn_client_call *call_submit(amn_client *cl, bool idempotent, done_rec *d) {
  amn_call_opts o = {.idempotent = idempotent};
  amn_client_call *c = amn_client_call_new(cl, AMN_CK_UNARY_ASYNC, "/test.Svc/Do", &o);
  assert_non_null(c);
  c->cb = on_done;
  c->ud = d;
  assert_int_equal(amn_client_call_queue_unary(c, (const uint8_t *)"hi", 2), 0);
  amn_client_pending_push(cl, c, false);
  amn_pool_kick(cl, true);
  return c;
}

static size_t npending(const amn_client *cl) {
  size_t n = 0;
  for (const amn_client_call *c = cl->pending; c; c = c->next) n++;
  return n;
}

/* ---- tests ---- */

/* Calls fill a connection up to the server's stream limit; the next one
 * waits, and the pool opens a second connection for it. */
static void test_growth_at_stream_limit(void **state) {
  (void)state;
  g_max_streams = 2;
  amn_client *cl = client_new(4);
  done_rec d[3] = {0};
  for (int i = 0; i < 3; i++) call_submit(cl, false, &d[i]);
  assert_int_equal(g_nconns, 1); /* one connection while none is ready */
  assert_int_equal(npending(cl), 3);
  cl->ct.conn_cbs->ready(g_conns[0].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[0].nstreams, 2); /* its limit */
  assert_int_equal(npending(cl), 1);
  assert_int_equal(g_nconns, 2); /* growth */
  cl->ct.conn_cbs->ready(g_conns[1].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[1].nstreams, 1);
  assert_int_equal(npending(cl), 0);
  amn_endpoint_stats es;
  assert_int_equal(amn_client_stats(cl, &es, 1, NULL), 1);
  assert_int_equal(es.connections, 2);
  assert_int_equal(es.calls_in_flight, 3);
  client_free(cl);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(d[i].n, 1);
    assert_int_equal(d[i].code, AMN_STATUS_UNAVAILABLE); /* closed under them */
  }
}

/* GOAWAY: the connection takes no new call, a call it did not process
 * goes to a new connection, and the old one closes once drained. */
static void test_goaway_replacement(void **state) {
  (void)state;
  g_max_streams = 10;
  amn_client *cl = client_new(4);
  done_rec d = {0};
  amn_client_call *c = call_submit(cl, false, &d);
  cl->ct.conn_cbs->ready(g_conns[0].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[0].nstreams, 1);
  assert_int_equal(c->attempts, 1);
  cl->ct.conn_cbs->goaway(g_conns[0].owner, false, "server.example is closing the connection");
  amn_ct_end e = {AMN_STATUS_UNAVAILABLE, "not processed", true};
  stream_end(&g_conns[0], 0, &e);
  assert_int_equal(d.n, 0); /* not failed: retried */
  amn_pool_maintain(cl);
  assert_true(g_conns[0].closed); /* drained */
  assert_int_equal(g_nconns, 2);  /* its replacement */
  cl->ct.conn_cbs->ready(g_conns[1].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[1].nstreams, 1);
  assert_int_equal(c->attempts, 2);
  uint64_t retries = 0;
  amn_endpoint_stats es;
  amn_client_stats(cl, &es, 1, &retries);
  assert_int_equal(retries, 1);
  client_free(cl);
  assert_int_equal(d.n, 1);
}

/* A processed call that failed with UNAVAILABLE is sent again only when
 * idempotent; other statuses never. */
static void test_which_failures_retry(void **state) {
  (void)state;
  g_max_streams = 10;
  amn_client *cl = client_new(1);
  done_rec plain = {0}, idem = {0}, idem_internal = {0};
  call_submit(cl, false, &plain);
  amn_client_call *ci = call_submit(cl, true, &idem);
  call_submit(cl, true, &idem_internal);
  cl->ct.conn_cbs->ready(g_conns[0].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[0].nstreams, 3);
  amn_ct_end unavailable = {AMN_STATUS_UNAVAILABLE, "connection lost", false};
  amn_ct_end internal = {AMN_STATUS_INTERNAL, "stream reset by the server", false};
  stream_end(&g_conns[0], 0, &unavailable);
  assert_int_equal(plain.n, 1);
  assert_int_equal(plain.code, AMN_STATUS_UNAVAILABLE);
  stream_end(&g_conns[0], 1, &unavailable);
  assert_int_equal(idem.n, 0); /* re-sent */
  stream_end(&g_conns[0], 2, &internal);
  assert_int_equal(idem_internal.n, 1);
  assert_int_equal(idem_internal.code, AMN_STATUS_INTERNAL);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[0].nstreams, 4);
  assert_ptr_equal(g_conns[0].streams[3].call, &ci->t);
  assert_int_equal(ci->attempts, 2);
  client_free(cl);
  assert_int_equal(idem.n, 1);
}

/* A whole response through the call callbacks: headers, one message,
 * trailers, the normal end. A second message on a unary call resets the
 * stream (cancel) and fails the call. */
static void feed_response(amn_client *cl, amn_ct_call *t, int nmsgs, const char *status) {
  const amn_ct_call_cbs *cb = cl->ct.call_cbs;
  cb->header(t, (const uint8_t *)":status", 7, (const uint8_t *)"200", 3);
  cb->header(t, (const uint8_t *)"content-type", 12, (const uint8_t *)"application/grpc", 16);
  cb->headers_end(t, false);
  static const uint8_t frame[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
  for (int i = 0; i < nmsgs; i++) {
    cb->data(t, frame, 3); /* split anywhere */
    cb->data(t, frame + 3, sizeof frame - 3);
  }
  if (status) {
    cb->header(t, (const uint8_t *)"grpc-status", 11, (const uint8_t *)status, strlen(status));
    cb->headers_end(t, true);
  }
}

/* The server goes away: the pool replaces the lost connection once, and
 * after that attempt fails, calls fail at once with its reason; they do not
 * each open a connection (at most one attempt per backoff_base_ms), and once
 * that much time has passed a new call tries again at once and is served. */
static double g_now;
static double fake_now(amn_client *cl) {
  (void)cl;
  return g_now;
}

static void test_dead_server_no_connect_storm(void **state) {
  (void)state;
  g_max_streams = 10;
  g_now = 100.0;
  amn_client *cl = client_new(1);
  cl->now = fake_now;
  done_rec first = {0};
  call_submit(cl, false, &first);
  cl->ct.conn_cbs->ready(g_conns[0].owner, false);
  amn_pool_maintain(cl);
  fake_close(&g_conns[0], "connection lost"); /* the server is gone */
  assert_int_equal(first.n, 1);
  assert_int_equal(first.code, AMN_STATUS_UNAVAILABLE);
  amn_pool_maintain(cl);
  assert_int_equal(g_nconns, 2); /* the replacement, at once */
  cl->ct.conn_cbs->closed(g_conns[1].owner, "connection refused", false);
  g_conns[1].owner = NULL;
  done_rec d[50] = {0};
  for (int i = 0; i < 50; i++) {
    g_now += 0.01;
    call_submit(cl, false, &d[i]);
    assert_int_equal(d[i].n, 1);
    assert_int_equal(d[i].code, AMN_STATUS_UNAVAILABLE);
    assert_non_null(strstr(d[i].msg, "connection refused"));
  }
  assert_int_equal(g_nconns, 2); /* no connection per call */
  g_now += 0.6;                  /* backoff_base_ms (1 s) after the last attempt */
  done_rec later = {0};
  call_submit(cl, false, &later);
  assert_int_equal(g_nconns, 3); /* tried at once, without waiting for the backoff timer */
  assert_int_equal(later.n, 0);
  cl->ct.conn_cbs->ready(g_conns[2].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[2].nstreams, 1);
  client_free(cl);
  assert_int_equal(later.n, 1);
}

static void test_response_through_callbacks(void **state) {
  (void)state;
  g_max_streams = 10;
  amn_client *cl = client_new(1);
  done_rec ok = {0}, two = {0};
  call_submit(cl, false, &ok);
  call_submit(cl, false, &two);
  cl->ct.conn_cbs->ready(g_conns[0].owner, false);
  amn_pool_maintain(cl);
  fake_conn *fc = &g_conns[0];
  /* the request bytes: a 5-byte frame header and "hi", then the end */
  bool eof = false;
  uint8_t buf[16];
  assert_int_equal(cl->ct.call_cbs->peek(fc->streams[0].call, sizeof buf, &eof), 7);
  assert_int_equal(cl->ct.call_cbs->pull(fc->streams[0].call, buf, sizeof buf, &eof), 7);
  assert_true(eof);
  assert_memory_equal(buf + 5, "hi", 2);
  feed_response(cl, fc->streams[0].call, 1, "0");
  stream_end(fc, 0, NULL);
  assert_int_equal(ok.n, 1);
  assert_int_equal(ok.code, AMN_STATUS_OK);
  assert_int_equal(ok.len, 3);
  feed_response(cl, fc->streams[1].call, 2, NULL);
  assert_true(fc->streams[1].cancelled);
  assert_int_equal(two.n, 1);
  assert_int_equal(two.code, AMN_STATUS_INTERNAL);
  amn_endpoint_stats es;
  amn_client_stats(cl, &es, 1, NULL);
  assert_int_equal(es.calls_ok, 1);
  assert_int_equal(es.calls_failed, 1);
  assert_int_equal(es.calls_in_flight, 0);
  client_free(cl);
}

/* ---- names ---- */

/* The resolver's answer for the client's one name: the addresses given
 * (none: the lookup failed with `why`). */
static void dns_answer(amn_client *cl, const char *why, const char *a, const char *b) {
  assert_int_equal(cl->ntgts, 1);
  amn_resolve_answer ans = {.ttl_s = 30};
  if (a) snprintf(ans.addr[ans.n++], sizeof ans.addr[0], "%s", a);
  if (b) snprintf(ans.addr[ans.n++], sizeof ans.addr[0], "%s", b);
  cl->tgts[0].resolving = true;
  amn_pool_dns_answer(&cl->tgts[0], ans.n ? &ans : NULL, why);
}

static int conn_to(const char *host, int from) {
  for (int i = from; i < g_nconns; i++)
    if (strcmp(g_conns[i].host, host) == 0) return i;
  return -1;
}

/* spread_addresses: an endpoint per address, added and removed as the
 * answers change (A, then B, then A and C); the call in flight on A
 * finishes there while new calls go to B; A's connection closes once
 * drained; A comes back as the same endpoint; a failed lookup keeps the
 * last good addresses. */
static void test_dns_spread_follows_answers(void **state) {
  (void)state;
  g_max_streams = 10;
  g_now = 10.0;
  amn_client *cl = client_new_url(4, "https://svc.test:4433", true);
  cl->now = fake_now;
  assert_int_equal(amn_client_stats(cl, NULL, 0, NULL), 0); /* no answer yet: no endpoint */
  dns_answer(cl, NULL, "192.0.2.1", NULL);
  amn_endpoint_stats es[4];
  assert_int_equal(amn_client_stats(cl, es, 4, NULL), 1);
  assert_string_equal(es[0].url, "https://svc.test:4433 (192.0.2.1)");
  done_rec d1 = {0}, d2 = {0};
  call_submit(cl, false, &d1);
  assert_int_equal(g_nconns, 1);
  assert_string_equal(g_conns[0].host, "192.0.2.1");
  cl->ct.conn_cbs->ready(g_conns[0].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[0].nstreams, 1);

  dns_answer(cl, NULL, "192.0.2.2", NULL); /* A -> B */
  assert_int_equal(amn_client_stats(cl, es, 4, NULL), 2);
  assert_int_equal(es[0].state, AMN_EP_REMOVED);
  assert_int_equal(es[0].draining, 1);
  assert_int_equal(es[0].calls_in_flight, 1);
  assert_false(g_conns[0].closed); /* its call is still running */
  int b = conn_to("192.0.2.2", 0);
  assert_true(b > 0);              /* the new address gets a connection */
  call_submit(cl, false, &d2);
  cl->ct.conn_cbs->ready(g_conns[b].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[b].nstreams, 1); /* the new call went to B */
  assert_int_equal(g_conns[0].nstreams, 1); /* ... not to A */
  feed_response(cl, g_conns[0].streams[0].call, 1, "0");
  stream_end(&g_conns[0], 0, NULL);
  assert_int_equal(d1.n, 1);
  assert_int_equal(d1.code, AMN_STATUS_OK); /* the call in flight finished on A */
  amn_pool_maintain(cl);
  assert_true(g_conns[0].closed); /* drained */
  amn_client_stats(cl, es, 4, NULL);
  assert_int_equal(es[0].draining, 0);
  assert_int_equal(es[0].calls_ok, 1);
  assert_int_equal(es[0].calls_failed, 0);

  int before = g_nconns;
  dns_answer(cl, NULL, "192.0.2.1", "192.0.2.3"); /* B -> A + C */
  assert_int_equal(amn_client_stats(cl, es, 4, NULL), 3); /* A again (same endpoint), C new */
  assert_int_equal(es[0].state, AMN_EP_CONNECTING);
  assert_string_equal(es[2].url, "https://svc.test:4433 (192.0.2.3)");
  assert_int_equal(es[1].state, AMN_EP_REMOVED);
  assert_true(conn_to("192.0.2.1", before) >= 0);
  assert_true(conn_to("192.0.2.3", before) >= 0);
  assert_false(g_conns[b].closed); /* B's call is still running */

  dns_answer(cl, "Timeout while contacting DNS servers", NULL, NULL); /* keeps A + C */
  amn_client_stats(cl, es, 4, NULL);
  assert_int_equal(es[0].state, AMN_EP_CONNECTING);
  assert_int_equal(es[2].state, AMN_EP_CONNECTING);
  assert_int_equal(cl->tgts[0].naddrs, 2);
  client_free(cl);
  assert_int_equal(d2.n, 1);
}

/* Without spread_addresses the URL is one endpoint: a failed connection
 * tries the answer's next address at once (no backoff); an answer without
 * the address in use drains its connection (its call finishes) and new
 * calls go to the new address. */
static void test_dns_one_endpoint(void **state) {
  (void)state;
  g_max_streams = 10;
  g_now = 10.0;
  amn_client *cl = client_new_url(4, "https://svc.test:4433", false);
  cl->now = fake_now;
  dns_answer(cl, NULL, "192.0.2.1", "192.0.2.2");
  done_rec d1 = {0}, d2 = {0};
  call_submit(cl, false, &d1);
  assert_string_equal(g_conns[0].host, "192.0.2.1");
  cl->ct.conn_cbs->closed(g_conns[0].owner, "connection refused", false);
  g_conns[0].owner = NULL;
  assert_int_equal(g_nconns, 2);
  assert_string_equal(g_conns[1].host, "192.0.2.2"); /* the next address, at once */
  assert_int_equal(d1.n, 0);
  cl->ct.conn_cbs->ready(g_conns[1].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[1].nstreams, 1);
  amn_endpoint_stats es;
  assert_int_equal(amn_client_stats(cl, &es, 1, NULL), 1);
  assert_int_equal(es.state, AMN_EP_READY);

  dns_answer(cl, NULL, "192.0.2.3", NULL); /* 192.0.2.2 left */
  assert_int_equal(amn_client_stats(cl, &es, 1, NULL), 1);
  assert_int_equal(es.draining, 1);
  assert_false(g_conns[1].closed);
  call_submit(cl, false, &d2);
  int c = conn_to("192.0.2.3", 2);
  assert_true(c >= 2);
  cl->ct.conn_cbs->ready(g_conns[c].owner, false);
  amn_pool_maintain(cl);
  assert_int_equal(g_conns[c].nstreams, 1);
  feed_response(cl, g_conns[1].streams[0].call, 1, "0");
  stream_end(&g_conns[1], 0, NULL);
  assert_int_equal(d1.code, AMN_STATUS_OK);
  amn_pool_maintain(cl);
  assert_true(g_conns[1].closed);
  client_free(cl);
  assert_int_equal(d2.n, 1);
}

/* A name that does not resolve: calls fail at once with UNAVAILABLE and
 * the resolver's reason. */
static void test_dns_unresolvable(void **state) {
  (void)state;
  g_now = 10.0;
  for (int spread = 0; spread < 2; spread++) {
    amn_client *cl = client_new_url(4, "https://nowhere.test:4433", spread);
    cl->now = fake_now;
    dns_answer(cl, "Domain name not found", NULL, NULL);
    done_rec d = {0};
    call_submit(cl, false, &d);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.code, AMN_STATUS_UNAVAILABLE);
    assert_string_equal(d.msg, "cannot resolve nowhere.test: Domain name not found");
    assert_int_equal(g_nconns, 0);
    client_free(cl);
  }
}

/* A connection failure looks the name up again (through a real resolver
 * whose server never answers: the lookup stays in flight), but not sooner
 * than dns_refresh_min_ms after the previous lookup; an endpoint that
 * failed on the old addresses tries a new answer's at once. */
static void test_dns_failure_looks_up_again(void **state) {
  (void)state;
  g_max_streams = 10;
  g_now = 10.0;
  amn_client *cl = client_new_url(4, "https://svc.test:4433", false);
  cl->now = fake_now;
  cl->o.dns_servers = "127.0.0.1:9";
  char err[200];
  assert_int_equal(amn_pool_start(cl, err, sizeof err), 0);
  assert_true(cl->tgts[0].resolving); /* the first lookup */
  assert_true(cl->tgts[0].last_start == 10.0);
  dns_answer(cl, NULL, "192.0.2.1", "192.0.2.2");
  done_rec d = {0};
  call_submit(cl, false, &d);
  cl->ct.conn_cbs->closed(g_conns[0].owner, "connection refused", false);
  g_conns[0].owner = NULL;
  assert_false(cl->tgts[0].resolving); /* the next address first */
  cl->ct.conn_cbs->closed(g_conns[1].owner, "connection refused", false);
  g_conns[1].owner = NULL;
  amn_pool_maintain(cl);
  assert_int_equal(d.n, 1);
  assert_int_equal(d.code, AMN_STATUS_UNAVAILABLE); /* every address failed */
  assert_false(cl->tgts[0].resolving); /* the last lookup began 0 s ago: not yet */
  amn_endpoint_stats es;
  amn_client_stats(cl, &es, 1, NULL);
  assert_int_equal(es.state, AMN_EP_EJECTED);
  g_now += 1.5;
  done_rec d2 = {0};
  call_submit(cl, false, &d2); /* tries again at once (every endpoint failing), fails again */
  assert_int_equal(g_nconns, 3);
  cl->ct.conn_cbs->closed(g_conns[2].owner, "connection refused", false);
  g_conns[2].owner = NULL;
  assert_int_equal(g_nconns, 4); /* the other address */
  assert_false(cl->tgts[0].resolving);
  cl->ct.conn_cbs->closed(g_conns[3].owner, "connection refused", false);
  g_conns[3].owner = NULL;
  assert_true(cl->tgts[0].resolving); /* both failed again: looked up again */
  assert_true(cl->tgts[0].last_start == g_now);
  dns_answer(cl, NULL, "192.0.2.3", NULL); /* the name moved */
  amn_client_stats(cl, &es, 1, NULL);
  assert_int_not_equal(es.state, AMN_EP_EJECTED);
  assert_int_equal(conn_to("192.0.2.3", 4), 4); /* connecting to the new address at once */
  client_free(cl);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_growth_at_stream_limit),
      cmocka_unit_test(test_goaway_replacement),
      cmocka_unit_test(test_which_failures_retry),
      cmocka_unit_test(test_response_through_callbacks),
      cmocka_unit_test(test_dead_server_no_connect_storm),
      cmocka_unit_test(test_dns_spread_follows_answers),
      cmocka_unit_test(test_dns_one_endpoint),
      cmocka_unit_test(test_dns_unresolvable),
      cmocka_unit_test(test_dns_failure_looks_up_again),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
