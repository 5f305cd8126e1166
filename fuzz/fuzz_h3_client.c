/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The client's side of a whole HTTP/3 connection (src/transport/h3/
 * h3_client*.c under the client core src/client/: calls, pool), in memory,
 * fed arbitrary server bytes on its streams: fuzz_h3_server.c mirrored. The
 * client is built by hand (tests/support/h3_mem.h: its loop runs here, no
 * socket I/O, a fake clock) with the real HTTP/3 transport and mutual TLS
 * with the development PKI. For every input it makes a real QUIC connection
 * to the library's HTTP/3 server binding (full handshake, both certificates
 * verified); once the server's HTTP/3 control and QPACK streams are out, the
 * harness takes the server's HTTP/3 layer away (nghttp3 deleted) and plays
 * the server itself through that connection's ngtcp2 object. Then the
 * application makes its calls: Execute (unary), ExecuteStream (two
 * messages, then the end of the request), Execute with a deadline and
 * metadata, Health/Check; they become request streams 0, 4, 8 and 12, and
 * the input decides what the "server" answers on them, on its control and
 * QPACK streams, FIN, RESET_STREAM and STOP_SENDING, and the packets.
 *
 * Everything the client sends on its streams is taken from the server
 * connection (amn_h3_test_stream_data) and decoded by an nghttp3 server of
 * the harness's (its control and QPACK encoder streams, the requests).
 *
 * Input: a control byte, then operations as fuzz_h3_server.c's, on the
 * server's streams: slots 0-3 request streams 0, 4, 8, 12 (7: 0 too), 4 the
 * server's control stream after its SETTINGS, 5 its QPACK encoder stream, 6
 * its QPACK decoder stream. Control bits: 0 at the end the server closes
 * (CONNECTION_CLOSE), else it goes silent and the client times out; 1 the
 * datagrams are delivered only at 11xxxxxx operations; 2 the application
 * cancels the streaming call after the first delivery.
 *
 * Invariants (besides no crash, leak, UB or overrun):
 *  - what the client sends decodes as valid HTTP/3 (control stream, QPACK
 *    encoder stream, request messages) with nghttp3;
 *  - the work is bounded (the loops settle within a bounded number of turns);
 *  - every call ends exactly once, with a status 0..16 and a message; no
 *    response message of a stream after its end; unary results only with
 *    OK, within max_recv_message;
 *  - once the server is gone (closed or silent until the idle timeout), the
 *    client's connection is gone and no call is left on a stream; after the
 *    client is stopped every call has ended.
 */
#include "amn/proto.h"
#include "fuzz_common.h"
#include "fuzz_h3.h"

#define SETTLE_MAX 400
#define MAX_MSG (64u * 1024)
#define NCALLS 4
#include "fuzz_calls.h"

static h3mem g_m;
static bool g_verbose;

/* ---- the harness's decoder of what the client sends ---- */

static nghttp3_conn *g_dec; /* h3f_decoder */
static amn_h3_conn *g_sb;     /* the server connection the harness plays */
static size_t g_dec_bytes;

static bool is_server_conn(const amn_h3_conn *b) {
  for (h3_sconn *sc = g_m.l->conns; sc; sc = sc->next)
    if (&sc->b == b) return true;
  return false;
}

/* The harness plays the input's first server connection only (after a
 * GOAWAY the pool opens another, which the server binding serves): known
 * by the client's first destination connection ID. */
static ngtcp2_cid g_first;
static bool g_have_first;

static bool is_first(const amn_h3_conn *b) {
  if (!b || !is_server_conn(b)) return false;
  const ngtcp2_cid *c = ngtcp2_conn_get_client_initial_dcid(b->q);
  if (!g_have_first) {
    g_first = *c;
    g_have_first = true;
  }
  return ngtcp2_cid_eq(c, &g_first);
}

static bool observe(amn_h3_conn *b, int64_t id, const uint8_t *data, size_t len, bool fin) {
  if (!g_dec || !is_first(b)) return false;
  g_dec_bytes += len;
  /* the client's QPACK decoder stream answers the input's encoder stream,
   * which the decoder here never made: not decoded */
  if (id == 10) return true;
  h3f_decode(g_dec, id, data, len, fin);
  return true;
}

/* ---- the calls and what the application sees of them ---- */

static app_rec g_rec[NCALLS];
static amn_client_call *g_call[NCALLS];

static uint8_t g_q1[64], g_q3[64];
static size_t g_q1_len, g_q3_len;

static void unary(amn_client *cl, int i, const char *method, const uint8_t *req, size_t len, const amn_call_opts *o) {
  amn_client_call *c = amn_client_call_new(cl, AMN_CK_UNARY_ASYNC, method, o);
  FUZZ_CHECK(c != NULL);
  c->cb = on_done;
  c->ud = &g_rec[i];
  FUZZ_CHECK(amn_client_call_queue_unary(c, req, len) == 0);
  atomic_fetch_add(&c->refs, 1); /* the harness's, to look at the call until the end */
  g_call[i] = c;
  cops_start(cl, c);
}

static void calls(amn_client *cl) {
  amn_call_opts o = {0};
  unary(cl, 0, AMN_METHOD_EXECUTE, g_q1, g_q1_len, &o);
  amn_client_call *s = amn_client_call_new(cl, AMN_CK_STREAM, AMN_METHOD_EXECUTE_STREAM, &o);
  FUZZ_CHECK(s != NULL);
  s->scbs = (amn_cstream_cbs){on_stream_msg, on_stream_close, NULL};
  s->ud = &g_rec[1];
  g_call[1] = s; /* the application's reference: released at the end */
  cops_start(cl, s);
  FUZZ_CHECK(cops_send(s, g_q1, g_q1_len) == 0 && cops_send(s, g_q3, g_q3_len) == 0);
  cops_close_send(s);
  static const amn_md md[] = {{"x-echo-trace", (const uint8_t *)"abc", 3}, {"blob-bin", (const uint8_t *)"\0\xff", 2}};
  static const amn_metadata mds = {md, 2};
  amn_call_opts d = {.timeout_ms = 5000, .metadata = &mds};
  unary(cl, 2, AMN_METHOD_EXECUTE, g_q3, g_q3_len, &d);
  unary(cl, 3, AMN_METHOD_HEALTH_CHECK, (const uint8_t *)"", 0, &o);
}

/* ---- the harness's server ---- */

/* (a request stream the client did not open, or that is over, refuses the write) */
static int64_t slot_stream(int s) {
  static const int64_t ids[8] = {0, 4, 8, 12, 3, 7, 11, 0};
  return ids[s];
}

static bool ready(void) {
  h3c_state *hs = hm_cstate(&g_m);
  h3c_conn *cc = hs ? hs->conns : NULL;
  h3_sconn *sc = g_m.l->conns;
  return cc && cc->st == CC_READY && ngtcp2_conn_get_handshake_completed(cc->b.q) && sc && sc->state == SC_OPEN &&
         sc->b.h && !g_m.head && !sc->b.dirty && !cc->b.dirty;
}

static void settle(void) {
  int n = hm_settle(&g_m, SETTLE_MAX);
  FUZZ_CHECK(n < SETTLE_MAX);
}

static bool g_cancelled;
static void cancel_once(void) {
  if (!g_cancelled) cops_cancel(g_m.cl, g_call[1]);
  g_cancelled = true;
}

static bool client_has_conn(void) { return hm_cstate(&g_m) && hm_cstate(&g_m)->conns; }
static bool first_alive(void) { return is_first(g_sb) && client_has_conn(); }

/* ---- seeds (AMN_FUZZ_WRITE_SEEDS=dir) ---- */

/* The bytes of a gRPC response on stream `sid` as the server's nghttp3
 * writes them: headers, the messages, trailers (trailers-only when `msgs`
 * is NULL). */
static void response(int64_t sid, const uint8_t *msgs, size_t n, const char *status, h3s_buf *out) {
  nghttp3_callbacks cb = {0};
  nghttp3_settings st;
  nghttp3_settings_default(&st);
  nghttp3_conn *c, *g;
  FUZZ_CHECK(nghttp3_conn_client_new(&c, &cb, &st, NULL, NULL) == 0);
  FUZZ_CHECK(nghttp3_conn_server_new(&g, &cb, &st, NULL, NULL) == 0);
  nghttp3_conn_set_max_client_streams_bidi(g, 100);
  FUZZ_CHECK(nghttp3_conn_bind_control_stream(c, 2) == 0 && nghttp3_conn_bind_qpack_streams(c, 6, 10) == 0);
  FUZZ_CHECK(nghttp3_conn_bind_control_stream(g, 3) == 0 && nghttp3_conn_bind_qpack_streams(g, 7, 11) == 0);
  static h3s_buf bufs[64];
  nghttp3_nv rq[] = {H3S_NV(":method", "POST"), H3S_NV(":scheme", "https"), H3S_NV(":path", "/a.B/C"),
                     H3S_NV(":authority", "localhost")};
  FUZZ_CHECK(nghttp3_conn_submit_request(c, sid, rq, 4, NULL, NULL) == 0);
  memset(bufs, 0, sizeof bufs);
  h3s_drain(c, bufs);
  FUZZ_CHECK(nghttp3_conn_read_stream(g, sid, bufs[sid].b, bufs[sid].n, 1) >= 0);
  nghttp3_nv hd[] = {H3S_NV(":status", "200"), H3S_NV("content-type", "application/grpc"),
                     H3S_NV("grpc-status", ""), H3S_NV("grpc-message", "boom")};
  hd[2].value = (uint8_t *)status;
  hd[2].valuelen = strlen(status);
  h3s_body b = {msgs, n, true};
  nghttp3_data_reader dr = {h3s_read};
  FUZZ_CHECK(nghttp3_conn_submit_response(g, sid, hd, msgs ? 2 : 4, msgs ? &dr : NULL) == 0);
  FUZZ_CHECK(nghttp3_conn_set_stream_user_data(g, sid, &b) == 0);
  memset(bufs, 0, sizeof bufs);
  h3s_drain(g, bufs);
  if (msgs) {
    FUZZ_CHECK(nghttp3_conn_submit_trailers(g, sid, &hd[2], 1) == 0);
    h3s_drain(g, bufs);
  }
  *out = bufs[sid];
  nghttp3_conn_del(c);
  nghttp3_conn_del(g);
}

static void write_seeds(const char *dir) {
  uint8_t r[64], m[128], m2[256];
  size_t rl = amn_pair_encode(r, (const uint8_t *)"hello", 5, NULL, 0);
  size_t ml = h3s_grpc(m, r, rl);
  size_t m2l = h3s_grpc(m2, r, rl);
  m2l += h3s_grpc(m2 + m2l, r, rl);
  uint8_t hm[16];
  size_t hml = h3s_grpc(hm, (const uint8_t *)"\x08\x01", 2); /* HealthCheckResponse{SERVING} */
  static h3s_buf resp[4], tonly, o;
  response(0, m, ml, "0", &resp[0]);
  response(4, m2, m2l, "0", &resp[1]);
  response(8, m, ml, "0", &resp[2]);
  response(12, hm, hml, "0", &resp[3]);
  response(0, NULL, 0, "13", &tonly);
  static const struct {
    const char *name;
    uint8_t ctl;
    size_t chunk;
  } all[] = {{"all-ok-close", 1, 200}, {"all-ok-silent", 0, 200}, {"all-ok-tiny-packets", 1, 6},
             {"all-ok-batched", 3, 100}, {"all-ok-cancel", 5, 200}};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
    o.n = 0;
    h3s_byte(&o, all[i].ctl);
    h3s_turn(&o, 1);
    for (int k = 0; k < 4; k++) {
      h3s_data(&o, k, resp[k].b, resp[k].n, all[i].chunk);
      h3s_fin(&o, k);
    }
    h3s_turn(&o, 1);
    h3s_turn(&o, 0);
    h3s_save(dir, all[i].name, &o);
  }
  o.n = 0; /* an error status, trailers-only */
  h3s_byte(&o, 1);
  h3s_data(&o, 0, tonly.b, tonly.n, 200);
  h3s_fin(&o, 0);
  h3s_turn(&o, 1);
  h3s_save(dir, "trailers-only-error", &o);
  o.n = 0; /* GOAWAY (control stream) after the first call, which is answered */
  h3s_byte(&o, 1);
  h3s_data(&o, 4, (const uint8_t *)"\x07\x01\x04", 3, 200);
  h3s_data(&o, 0, resp[0].b, resp[0].n, 200);
  h3s_fin(&o, 0);
  h3s_turn(&o, 1);
  h3s_save(dir, "goaway-after-first", &o);
  o.n = 0; /* the server rejects the first request, resets the second */
  h3s_byte(&o, 1);
  h3s_reset(&o, 0, false, 0x0b); /* H3_REQUEST_REJECTED */
  h3s_reset(&o, 1, false, 0x02); /* H3_INTERNAL_ERROR */
  h3s_reset(&o, 2, true, 0x0c);  /* STOP_SENDING H3_REQUEST_CANCELLED */
  h3s_turn(&o, 1);
  h3s_save(dir, "resets", &o);
}

/* ---- once ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  if (getenv("AMN_FUZZ_WRITE_SEEDS")) {
    write_seeds(getenv("AMN_FUZZ_WRITE_SEEDS"));
    exit(0);
  }
  g_verbose = getenv("AMN_FUZZ_VERBOSE") != NULL;
  amn_server_opts o;
  h3f_init(&o);
  char err[256];
  FUZZ_CHECK(hm_server_new(&g_m, &o, err, sizeof err) == 0);
  g_m.cli_ctx = h3f_client_ctx();
  FUZZ_CHECK(hm_server_start(&g_m, err, sizeof err) == 0);
  amn_h3_test_stream_data = observe;
  g_q1_len = amn_pair_encoded_size(5, 0);
  amn_pair_encode(g_q1, (const uint8_t *)"hello", 5, NULL, 0);
  g_q3_len = amn_pair_encoded_size(6, 3);
  amn_pair_encode(g_q3, (const uint8_t *)"second", 6, (const uint8_t *)"sig", 3);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t ctl = fuzz_u8(&in);
  bool close_at_end = ctl & 1, batch = ctl & 2, cancel = ctl & 4;
  char err[256];
  g_cancelled = false;
  memset(g_rec, 0, sizeof g_rec);
  memset(g_call, 0, sizeof g_call);
  g_dec_bytes = 0;
  g_m.filter = NULL;
  g_dec = h3f_decoder(true); /* from the start: the client's control and QPACK streams too */
  g_have_first = false;

  /* the handshake, with the server binding */
  amn_client *cl = hm_client_new(&g_m, &g_h3f_pki.cli, err, sizeof err);
  FUZZ_CHECK(cl != NULL);
  cl->o.max_recv_message = MAX_MSG;
  cl->o.pool_min_connections = 1;
  amn_pool_kick(cl, true);
  for (int i = 0; i < 50 && !ready(); i++) {
    settle();
    if (!ready()) hm_next_timer(&g_m, NGTCP2_SECONDS);
  }
  FUZZ_CHECK(ready());
  cl->o.pool_min_connections = 0;
  cl->o.pool_max_connections = 1;
  h3_sconn *sc = g_m.l->conns;
  g_sb = &sc->b;
  /* the harness plays the server's HTTP/3 layer from now on */
  nghttp3_conn_del(sc->b.h);
  sc->b.h = NULL;
  calls(cl);
  settle();

  h3f_ops ops = {.m = &g_m, .b = g_sb, .to_server = false, .batch = batch, .slot = slot_stream, .settle = settle,
                 .on_turn = cancel ? cancel_once : NULL, .go_on = first_alive};
  h3f_run(&ops, &in);

  /* the end: the server closes, or goes silent until the client's idle timeout */
  if (close_at_end && is_first(g_sb)) {
    amn_h3s_conn_close_now((h3_sconn *)g_sb, "harness");
    settle();
  }
  g_sb = NULL;
  g_m.filter = hm_silence;
  for (int i = 0; i < 100 && client_has_conn(); i++) {
    hm_advance(&g_m, NGTCP2_SECONDS);
    settle();
  }
  FUZZ_CHECK(!client_has_conn()); /* the client let go of the connection */
  for (int j = 0; j < NCALLS; j++) /* no call left on a stream */
    FUZZ_CHECK(!g_call[j] || g_call[j]->done || g_call[j]->stream == NULL);
  hm_client_stop(&g_m);
  settle();
  g_m.filter = NULL;
  for (int j = 0; j < NCALLS; j++) FUZZ_CHECK(g_rec[j].ends == 1); /* every call ended, once */
  FUZZ_CHECK(cl->pending == NULL);
  for (int i = 0; i < 20 && g_m.l->conns; i++) {
    hm_drop_all(&g_m);
    hm_advance(&g_m, 10 * NGTCP2_SECONDS);
    settle();
  }
  FUZZ_CHECK(g_m.l->conns == NULL);
  if (g_verbose)
    fprintf(stderr, "fuzz_h3_client: %zu requests decoded (%zu stream bytes); statuses %d %d (%d messages) %d %d\n",
            g_h3f_msgs, g_dec_bytes, g_rec[0].code, g_rec[1].code, g_rec[1].msgs, g_rec[2].code, g_rec[3].code);
  for (int j = 0; j < NCALLS; j++)
    if (g_call[j]) amn_client_call_unref(g_call[j]);
  hm_client_free(&g_m);
  hm_drop_all(&g_m);
  nghttp3_conn_del(g_dec);
  g_dec = NULL;
  amn_call_cache_free(&g_m.sl);
  FUZZ_CHECK(atomic_load(&g_m.srv->bc.nconns) == 0 && g_m.sl.bl.nconns == 0);
  return 0;
}
