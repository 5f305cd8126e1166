/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The HTTP/3 bindings without socket I/O: the library's HTTP/3 server
 * binding (transport/h3/h3_server*.c, under the server call core) and its
 * HTTP/3 client binding (h3_client*.c, under the client's pool and call
 * core) exchange their QUIC datagrams through the test's memory, on a clock
 * the test moves (tests/support/h3_mem.h). Real certificates from the
 * development PKI: mutual TLS is verified for real.
 *
 * Covered: a unary call end to end, a streaming call (with datagrams
 * duplicated and reordered), small messages of many streams sharing
 * packets both ways, a call cancelled by the client, a stream the
 * server resets, a lost datagram recovered by retransmission once the clock
 * passes the PTO, the idle timeout, a client certificate of another CA
 * refused in the handshake. Then allocation-failure injection: the
 * library's malloc, calloc, realloc, strdup, strndup and free are wrapped
 * at link time (tests/CMakeLists.txt), which covers ngtcp2's and nghttp3's
 * allocations too (they allocate through the connection's allocator,
 * amn_h3_conn.mem / hmem, in the library); a whole unary call, connection
 * setup included, runs with the 1st, 2nd, ... allocation failing until a
 * run sees no failure: each must end (OK or a failure status, no hang), the
 * connections be gone on both sides, and every allocation be freed.
 * GnuTLS's own allocations are not covered (it allocates with the C
 * library's malloc from its shared object, which the wrap does not reach).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "failmalloc.h"

#define HM_MALLOC __real_malloc /* the harness's datagrams stay out of the count */
#define HM_FREE __real_free
#include "amn/pki.h"
#include "tls/pki_internal.h"
#include "amn/proto.h"
#include "h3_mem.h"

/* ---- certificates ---- */

static hm_pki g_pki;
static amn_tls_opts g_evil_tls;
static char g_evil_cert[400], g_evil_key[400];

/* ---- the server's handlers ---- */

static h3mem g_m;
static amn_call *g_hold;        /* the call the Hold handler keeps */
static int g_hold_cancels;      /* its on_cancel */
static amn_status_code g_hold_why;

static void hold_msg(amn_call *c, const uint8_t *m, size_t n, void *ud) { (void)m, (void)n, (void)ud; g_hold = c; }
static void hold_half_close(amn_call *c, void *ud) { (void)c, (void)ud; }
static void hold_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)ud;
  g_hold_cancels++;
  g_hold_why = why;
  if (c == g_hold) g_hold = NULL;
  amn_call_finish(c, why, "cancelled");
}

/* ---- what the client's application sees ---- */

typedef struct app_rec {
  int ends;
  int msgs;
  amn_status_code code;
  char msg[512];
  uint8_t data[256];
  size_t len;
} app_rec;

static app_rec g_rec;

static void on_done(const amn_result *r, void *ud) {
  app_rec *a = ud;
  a->ends++;
  a->code = r->code;
  snprintf(a->msg, sizeof a->msg, "%s", r->message ? r->message : "");
  a->len = r->len < sizeof a->data ? r->len : sizeof a->data;
  if (r->data) memcpy(a->data, r->data, a->len);
}

static void on_stream_msg(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  (void)s, (void)msg, (void)len;
  ((app_rec *)ud)->msgs++;
}

static void on_stream_close(amn_cstream *s, const amn_result *r, void *ud) {
  (void)s;
  on_done(r, ud);
}

static uint8_t g_q[64];
static size_t g_qlen;

/* A unary call, started as the I/O thread starts one; the harness keeps a
 * reference to look at it (released by drop_call). NULL when the core could
 * not allocate it. */
static amn_client_call *unary(const char *method) {
  amn_client_call *c = amn_client_call_new(g_m.cl, AMN_CK_UNARY_ASYNC, method, NULL);
  if (!c) return NULL;
  c->cb = on_done;
  c->ud = &g_rec;
  if (amn_client_call_queue_unary(c, g_q, g_qlen) != 0) { /* as amn_client_unary_async fails */
    amn_client_call_unref(c);
    return NULL;
  }
  atomic_fetch_add(&c->refs, 1);
  cops_start(g_m.cl, c);
  return c;
}

static void drop_call(amn_client_call *c) {
  if (c) amn_client_call_unref(c);
}

static bool rec_done(void) { return g_rec.ends > 0; }
static bool hold_arrived(void) { return g_hold != NULL; }
static bool no_hold(void) { return g_hold == NULL && g_hold_cancels > 0; }

/* Turns and timers until cond() (at most `rounds` expiry jumps). */
static bool run_until(bool (*cond)(void), int rounds) {
  for (int i = 0; i < rounds; i++) {
    hm_settle(&g_m, 200);
    if (cond()) return true;
    hm_next_timer(&g_m, 5 * NGTCP2_SECONDS);
  }
  hm_settle(&g_m, 200);
  return cond();
}

static bool no_conns(void) {
  h3c_state *hs = hm_cstate(&g_m);
  return g_m.l->conns == NULL && (!hs || hs->conns == NULL);
}

static void client_up(const amn_tls_opts *tls) {
  char err[256];
  memset(&g_rec, 0, sizeof g_rec);
  g_m.filter = NULL;
  assert_non_null(hm_client_new(&g_m, tls, err, sizeof err));
}

/* The client stops (as amn_client_free), the server lets its side go once
 * the clock moved past the closing / draining period; nothing is left. */
static void client_down(void) {
  g_m.filter = NULL;
  hm_client_stop(&g_m);
  hm_settle(&g_m, 200);
  for (int i = 0; i < 20 && !no_conns(); i++) {
    hm_advance(&g_m, 60 * NGTCP2_SECONDS);
    hm_settle(&g_m, 200);
  }
  assert_true(no_conns());
  hm_client_free(&g_m);
  hm_drop_all(&g_m);
  assert_int_equal(atomic_load(&g_m.srv->bc.nconns), 0);
  assert_int_equal(g_m.sl.bl.nconns, 0);
}

/* ---- setup ---- */

static int setup(void **st) {
  (void)st;
  char err[256];
  amn_log_set_level(getenv("AMN_TEST_VERBOSE") ? AMN_LOG_DEBUG : AMN_LOG_ERROR);
  if (hm_pki_init(&g_pki, err, sizeof err) != 0) {
    fprintf(stderr, "pki: %s\n", err);
    return -1;
  }
  /* a client certificate of another CA with the same name as ours */
  char eca[400], ecak[400];
  snprintf(eca, sizeof eca, "%s/evil-ca.pem", g_pki.dir);
  snprintf(ecak, sizeof ecak, "%s/evil-ca-key.pem", g_pki.dir);
  snprintf(g_evil_cert, sizeof g_evil_cert, "%s/evil-client.pem", g_pki.dir);
  snprintf(g_evil_key, sizeof g_evil_key, "%s/evil-client-key.pem", g_pki.dir);
  time_t now = time(NULL), day = 86400;
  amn_pki_cert_spec sp = {.cn = "amaters-dev-client", .eku = AMN_PKI_EKU_CLIENT, .not_before = now - day,
                          .not_after = now + day};
  if (amn_pki_make_ca(eca, ecak, "amaters-net development CA", now - day, now + day, err, sizeof err) != 0 ||
      amn_pki_issue_test_cert(eca, ecak, &sp, g_evil_cert, g_evil_key, err, sizeof err) != 0) {
    fprintf(stderr, "evil ca: %s\n", err);
    return -1;
  }
  g_evil_tls = g_pki.cli;
  g_evil_tls.cert_path = g_evil_cert;
  g_evil_tls.key_path = g_evil_key;

  amn_server_opts o;
  amn_server_opts_init(&o);
  o.tls = g_pki.srv;
  o.listen = "127.0.0.1:0";
  o.transport = AMN_TRANSPORT_H3;
  o.idle_timeout_ms = 20000;
  o.quic_retry_threshold = UINT32_MAX; /* no Retry: the handshake is the subject */
  if (hm_server_new(&g_m, &o, err, sizeof err) != 0 || amn_server_use_echo(g_m.srv) != 0) {
    fprintf(stderr, "server: %s\n", err);
    return -1;
  }
  amn_handler h = {.on_message = hold_msg, .on_half_close = hold_half_close, .on_cancel = hold_cancel};
  if (amn_server_register(g_m.srv, "/t.T/Hold", &h) != 0) return -1;
  if (hm_server_start(&g_m, err, sizeof err) != 0) {
    fprintf(stderr, "listener: %s\n", err);
    return -1;
  }
  g_qlen = amn_pair_encode(g_q, (const uint8_t *)"hello", 5, NULL, 0);
  return 0;
}

static int teardown(void **st) {
  (void)st;
  hm_server_free(&g_m);
  hm_pki_free(&g_pki);
  return 0;
}

/* ---- the tests ---- */

static bool has_hello(const app_rec *a) { return memmem(a->data, a->len, "hello", 5) != NULL; }

static void test_unary(void **st) {
  (void)st;
  client_up(&g_pki.cli);
  amn_client_call *c = unary(AMN_METHOD_EXECUTE);
  assert_non_null(c);
  assert_true(run_until(rec_done, 5));
  assert_int_equal(g_rec.ends, 1);
  assert_int_equal(g_rec.code, AMN_STATUS_OK);
  assert_true(has_hello(&g_rec));
  amn_h3_server_stats s;
  amn_h3s_stats(&g_m.sl.bl, &s);
  assert_true(s.handshakes_done >= 1);
  assert_true(g_m.sent_to_server > 0 && g_m.sent_to_client > 0);
  drop_call(c);
  client_down();
}

/* Every 3rd datagram arrives twice, every 5th after the ones behind it. */
static int dup_reorder(h3mem *m, const hm_dgram *d) {
  (void)d;
  size_t n = m->delivered + m->dropped;
  return n % 5 == 4 ? HM_HOLD : n % 3 == 2 ? HM_DUP : HM_PASS;
}

static void test_streaming(void **st) {
  (void)st;
  client_up(&g_pki.cli);
  g_m.filter = dup_reorder;
  amn_client_call *s = amn_client_call_new(g_m.cl, AMN_CK_STREAM, AMN_METHOD_EXECUTE_STREAM, NULL);
  assert_non_null(s);
  s->scbs = (amn_cstream_cbs){on_stream_msg, on_stream_close, NULL};
  s->ud = &g_rec;
  cops_start(g_m.cl, s);
  for (int i = 0; i < 3; i++) assert_int_equal(cops_send(s, g_q, g_qlen), 0);
  hm_settle(&g_m, 200);
  assert_int_equal(cops_send(s, g_q, g_qlen), 0); /* on an open stream */
  cops_close_send(s);
  assert_true(run_until(rec_done, 10));
  assert_int_equal(g_rec.code, AMN_STATUS_OK);
  assert_int_equal(g_rec.msgs, 4);
  amn_client_call_unref(s); /* the application's reference */
  client_down();
}

/* Many streams with a small message each, queued together: their frames
 * share packets both ways (a stream that runs dry does not close the packet
 * it is in: the next stream's data follows in it). Before, each message
 * went out in a packet of its own: 32 streams, 32+ datagrams each way. */
static bool all_echoed(void) { return g_rec.msgs >= 32; }
static bool all_ended(void) { return g_rec.ends >= 32; }

static void test_streams_share_packets(void **st) {
  (void)st;
  client_up(&g_pki.cli);
  amn_client_call *u = unary(AMN_METHOD_EXECUTE); /* the connection is up and settled first */
  assert_non_null(u);
  assert_true(run_until(rec_done, 5));
  drop_call(u);
  memset(&g_rec, 0, sizeof g_rec);
  size_t to_srv = g_m.sent_to_server, to_cli = g_m.sent_to_client;
  amn_client_call *s[32];
  for (int i = 0; i < 32; i++) {
    s[i] = amn_client_call_new(g_m.cl, AMN_CK_STREAM, AMN_METHOD_EXECUTE_STREAM, NULL);
    assert_non_null(s[i]);
    s[i]->scbs = (amn_cstream_cbs){on_stream_msg, on_stream_close, NULL};
    s[i]->ud = &g_rec;
    cops_start(g_m.cl, s[i]);
    assert_int_equal(cops_send(s[i], g_q, g_qlen), 0);
  }
  assert_true(run_until(all_echoed, 5));
  size_t n_srv = g_m.sent_to_server - to_srv, n_cli = g_m.sent_to_client - to_cli;
  fprintf(stderr, "# 32 streams of one message: %zu datagrams to the server, %zu to the client\n", n_srv, n_cli);
  assert_true(n_srv <= 8); /* 32 x (HEADERS + DATA), about 2 KB: 2-3 packets, ACKs */
  assert_true(n_cli <= 8);
  for (int i = 0; i < 32; i++) cops_close_send(s[i]);
  assert_true(run_until(all_ended, 5));
  assert_int_equal(g_rec.code, AMN_STATUS_OK);
  for (int i = 0; i < 32; i++) amn_client_call_unref(s[i]);
  client_down();
}

/* A call the server's Hold handler holds, on a new client. */
static amn_client_call *held_call(void) {
  client_up(&g_pki.cli);
  g_hold_cancels = 0;
  amn_client_call *c = unary("/t.T/Hold");
  assert_non_null(c);
  assert_true(run_until(hold_arrived, 5));
  assert_int_equal(g_rec.ends, 0);
  return c;
}

static void test_client_cancel(void **st) {
  (void)st;
  amn_client_call *c = held_call();
  cops_cancel(g_m.cl, c);
  assert_int_equal(g_rec.ends, 1);
  assert_int_equal(g_rec.code, AMN_STATUS_CANCELLED);
  hm_settle(&g_m, 200);
  /* the server's call ends too (RESET_STREAM / STOP_SENDING arrived) */
  assert_int_equal(g_hold_cancels, 1);
  assert_int_equal(g_hold_why, AMN_STATUS_CANCELLED);
  assert_null(g_hold);
  assert_non_null(g_m.l->conns);
  assert_null(g_m.l->conns->streams);
  drop_call(c);
  client_down();
}

/* The server binding resets a stream (as on its failure paths: a response
 * it cannot allocate or submit): the client's call fails, the server's
 * call is cancelled once the stream closes, the connection stays. */
static void test_server_reset(void **st) {
  (void)st;
  amn_client_call *c = held_call();
  h3_sconn *sc = g_m.l->conns;
  assert_non_null(sc);
  assert_non_null(sc->streams);
  assert_int_equal(ngtcp2_conn_shutdown_stream(sc->b.q, 0, sc->streams->id, NGHTTP3_H3_INTERNAL_ERROR), 0);
  amn_h3_mark_dirty(&sc->b);
  assert_true(run_until(rec_done, 5));
  assert_int_equal(g_rec.ends, 1);
  assert_int_not_equal(g_rec.code, AMN_STATUS_OK);
  assert_true(run_until(no_hold, 5));
  assert_int_equal(g_hold_cancels, 1);
  assert_non_null(g_m.l->conns); /* the connection goes on */
  drop_call(c);
  /* and carries the next call */
  memset(&g_rec, 0, sizeof g_rec);
  c = unary(AMN_METHOD_EXECUTE);
  assert_true(run_until(rec_done, 5));
  assert_int_equal(g_rec.code, AMN_STATUS_OK);
  drop_call(c);
  client_down();
}

/* What the server sends before g_drop_until is lost. */
static uint64_t g_drop_until;
static int drop_to_client(h3mem *m, const hm_dgram *d) {
  return !d->to_server && m->now < g_drop_until ? HM_DROP : HM_PASS;
}

/* The response and everything else the server sends is lost until its probe
 * timeout (PTO) passed: the client has nothing to acknowledge, so only the
 * PTO probe brings the response again. */
static void test_loss_pto(void **st) {
  (void)st;
  client_up(&g_pki.cli);
  amn_client_call *warm = unary(AMN_METHOD_EXECUTE); /* the connection first */
  assert_true(run_until(rec_done, 5));
  drop_call(warm);
  hm_settle(&g_m, 200);
  memset(&g_rec, 0, sizeof g_rec);
  h3_sconn *sc = g_m.l->conns;
  uint64_t t0 = g_m.now, pto = ngtcp2_conn_get_pto(sc->b.q);
  g_drop_until = t0 + pto;
  g_m.filter = drop_to_client;
  size_t dropped = g_m.dropped;
  amn_client_call *c = unary(AMN_METHOD_EXECUTE);
  hm_settle(&g_m, 200);
  assert_true(g_m.dropped > dropped); /* the response was lost */
  assert_int_equal(g_rec.ends, 0);    /* nothing moves until a timer */
  assert_true(run_until(rec_done, 20));
  assert_int_equal(g_rec.code, AMN_STATUS_OK);
  assert_true(has_hello(&g_rec));
  assert_true(g_m.now >= t0 + pto); /* recovered once the clock passed the server's PTO */
  drop_call(c);
  client_down();
}

/* The client holds a ready connection (the pool may be opening another:
 * it cannot be ready with every datagram lost). */
static bool cli_ready(void) {
  for (h3c_conn *cc = hm_cstate(&g_m)->conns; cc; cc = cc->next)
    if (cc->st == CC_READY) return true;
  return false;
}

/* The path goes silent after a call: both ends close at the idle timeout
 * (the server's 20 s; the client's is 30 s), quietly, and not before. */
static void test_idle_timeout(void **st) {
  (void)st;
  client_up(&g_pki.cli);
  amn_client_call *c = unary(AMN_METHOD_EXECUTE);
  assert_true(run_until(rec_done, 5));
  assert_int_equal(g_rec.code, AMN_STATUS_OK);
  drop_call(c);
  hm_settle(&g_m, 200);
  assert_non_null(g_m.l->conns);
  g_m.filter = hm_silence;
  uint64_t t0 = g_m.now, srv_gone = 0, cli_gone = 0;
  for (int i = 0; i < 1000 && !(srv_gone && cli_gone); i++) {
    hm_next_timer(&g_m, NGTCP2_SECONDS);
    hm_settle(&g_m, 200);
    if (!srv_gone && !g_m.l->conns) srv_gone = g_m.now - t0;
    if (!cli_gone && !cli_ready()) cli_gone = g_m.now - t0;
  }
  assert_true(srv_gone && cli_gone);
  assert_true(srv_gone >= 19 * NGTCP2_SECONDS && srv_gone <= 21 * NGTCP2_SECONDS);
  assert_true(cli_gone >= 19 * NGTCP2_SECONDS && cli_gone <= 21 * NGTCP2_SECONDS); /* the smaller of the two */
  assert_int_equal(g_m.sl.bl.nconns, 0);
  assert_int_equal(atomic_load(&g_m.srv->bc.nconns), 0);
  client_down();
}

static void test_bad_client_cert(void **st) {
  (void)st;
  amn_h3_server_stats s0, s1;
  amn_h3s_stats(&g_m.sl.bl, &s0);
  client_up(&g_evil_tls);
  amn_client_call *c = unary(AMN_METHOD_EXECUTE);
  assert_true(run_until(rec_done, 10));
  assert_int_equal(g_rec.code, AMN_STATUS_UNAVAILABLE);
  assert_non_null(strstr(g_rec.msg, "TLS"));
  amn_h3s_stats(&g_m.sl.bl, &s1);
  assert_int_equal(s1.handshakes_done, s0.handshakes_done);
  assert_true(s1.conns_accepted > s0.conns_accepted);
  drop_call(c);
  client_down();
}

/* ---- allocation failures ---- */

/* One whole unary call from a new client. The status, or -1 when the call
 * could not be made. */
static int failmalloc_run(long fail_at, bool *hung) {
  char err[256];
  memset(&g_rec, 0, sizeof g_rec);
  g_m.filter = NULL;
  amn_call_cache_free(&g_m.sl); /* calls of earlier tests */
  long live = g_live;
  /* what the server keeps beyond the connection: the client identity of
   * each session ticket it issued (three blocks each, for resumption: the
   * entry, the identity's strings, the certificate checked against CRLs) */
  size_t ids = amn_h3_replay_count(g_m.l->group->ids);
  g_alloc_seen = 0;
  g_failed = false;
  g_fail_at = fail_at;
  amn_client *cl = hm_client_new(&g_m, &g_pki.cli, err, sizeof err);
  int code = -1;
  *hung = false;
  if (cl) {
    amn_client_call *c = unary(AMN_METHOD_EXECUTE);
    if (c) {
      *hung = !run_until(rec_done, 40);
      code = g_rec.code;
      assert_int_equal(g_rec.ends, 1);
      drop_call(c);
    }
    client_down(); /* its allocations may fail too */
  }
  g_fail_at = 0;
  amn_call_cache_free(&g_m.sl);
  live += 3 * (long)(amn_h3_replay_count(g_m.l->group->ids) - ids);
  if (g_live != live) fprintf(stderr, "failmalloc: allocation %ld failing: %ld allocation(s) not freed\n", fail_at,
                              g_live - live);
  assert_int_equal(g_live, live);
  return code;
}

static void test_failmalloc(void **st) {
  (void)st;
  bool hung;
  /* the reference run: everything succeeds */
  assert_int_equal(failmalloc_run(0, &hung), AMN_STATUS_OK);
  long n;
  int fails = 0;
  for (n = 1; n < 100000; n++) {
    int code = failmalloc_run(n, &hung);
    if (hung) fprintf(stderr, "failmalloc: allocation %ld failing: the call never ended\n", n);
    assert_false(hung);
    if (!g_failed) {
      assert_int_equal(code, AMN_STATUS_OK);
      break;
    }
    if (code != AMN_STATUS_OK) fails++;
  }
  fprintf(stderr, "failmalloc: %ld allocations in a whole unary call, %d runs ended with a failure status\n", n - 1,
          fails);
  assert_true(n > 50);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unary),
      cmocka_unit_test(test_streaming),
      cmocka_unit_test(test_streams_share_packets),
      cmocka_unit_test(test_client_cancel),
      cmocka_unit_test(test_server_reset),
      cmocka_unit_test(test_loss_pto),
      cmocka_unit_test(test_idle_timeout),
      cmocka_unit_test(test_bad_client_cert),
      cmocka_unit_test(test_failmalloc),
  };
  if (getenv("AMN_TEST_FILTER")) cmocka_set_test_filter(getenv("AMN_TEST_FILTER"));
  return cmocka_run_group_tests(tests, setup, teardown);
}
