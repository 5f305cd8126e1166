/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The server's side of a whole HTTP/3 connection (src/transport/h3/
 * h3_server*.c under the server call core src/server/), in memory, fed
 * arbitrary frames on its streams. The server is one loop built by hand
 * with an HTTP/3 listener (tests/support/h3_mem.h: no socket I/O, a fake
 * clock), mutual TLS with the development PKI. For every input the harness
 * first makes a real QUIC connection to it with the library's own HTTP/3
 * client binding (full handshake, client certificate verified); once the
 * client's HTTP/3 control and QPACK streams are out, the harness takes the
 * client's HTTP/3 layer away (nghttp3 deleted) and plays the client itself
 * through that connection's ngtcp2 object: the input decides which streams
 * carry which bytes, FIN, RESET_STREAM and STOP_SENDING, and how the bytes
 * are cut into packets; ngtcp2 encrypts them, so the input reaches the
 * HTTP/3 framing, QPACK, the request header checks and the gRPC call core.
 *
 * Everything the server sends on its streams is taken from the client
 * connection (amn_h3_test_stream_data) and decoded by an nghttp3 client of
 * the harness's: the server's control and QPACK encoder streams, and the
 * response on each request stream the input opened (its QPACK decoder
 * stream answers the input's encoder stream, which that decoder never made).
 *
 * Input: a control byte, then operations until the input ends:
 *   00ssssss  slot s%8, then a length byte and that many bytes: data on the
 *             slot's stream (slots 0-3 request streams 0, 4, 8, 12, opened
 *             on first use; 4 the client's control stream after its
 *             SETTINGS; 5 its QPACK encoder stream; 6 its QPACK decoder
 *             stream; 7 request stream 16);
 *   01xxxsss  FIN on slot s;
 *   10rxxsss  RESET_STREAM (r=0) or STOP_SENDING (r=1) on slot s, the
 *             error code from the next byte (0x100 + b);
 *   11tttttt  the datagrams in flight are delivered and both loops turn;
 *             t > 0: the clock then moves t ms and due timers run.
 * Control bits: 0 at the end the client closes (CONNECTION_CLOSE), else it
 * goes silent and the server times out; 1 the datagrams of data operations
 * are delivered only at 11xxxxxx operations (else after each operation).
 *
 * Invariants (besides no crash, leak, UB or overrun):
 *  - what the server sends on its streams decodes as valid HTTP/3 with
 *    nghttp3 (control stream, QPACK streams, response messages: no
 *    connection error, no malformed message);
 *  - the work is bounded: the loops settle within a bounded number of turns;
 *  - the connection ends (closed by the client, or the idle timeout) and
 *    then nothing of it is left: no connection counted, no call open or in
 *    a phase list, no bytes held in the server's buffers, every held call
 *    finished; the listener stays up (it accepts the next input's
 *    connection).
 */
#include "amn/proto.h"
#include "fuzz_common.h"
#include "fuzz_h3.h"

#define SETTLE_MAX 400

static h3mem g_m;
static bool g_verbose;

/* ---- the server's handlers: echo, health, and one that holds its call ---- */

typedef struct held {
  amn_call *c;
  struct held *next;
} held;
static held *g_held;
static int g_held_n;

static void hold_msg(amn_call *c, const uint8_t *m, size_t n, void *ud) {
  (void)m, (void)n, (void)ud;
  if (amn_call_get_user_data(c)) return;
  held *h = malloc(sizeof *h);
  FUZZ_CHECK(h != NULL);
  h->c = c;
  h->next = g_held;
  g_held = h;
  g_held_n++;
  amn_call_set_user_data(c, h);
}
static void hold_half_close(amn_call *c, void *ud) { (void)c, (void)ud; }
static void hold_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)ud;
  held *h = amn_call_get_user_data(c);
  if (h) {
    for (held **p = &g_held; *p; p = &(*p)->next)
      if (*p == h) {
        *p = h->next;
        break;
      }
    free(h);
    g_held_n--;
    amn_call_set_user_data(c, NULL);
  }
  amn_call_finish(c, why, "cancelled");
}

/* ---- the harness's decoder of what the server sends ---- */

static nghttp3_conn *g_dec; /* h3f_decoder */
static amn_h3_conn *g_cb;     /* the client connection the harness plays */
static size_t g_dec_bytes;

static bool g_nodec[32]; /* request streams the decoder could not register (GOAWAY came) */

/* One of the client's connections (from the start: the decoder reads the
 * server's control and QPACK streams from their first byte). */
static bool is_client_conn(const amn_h3_conn *b) {
  h3c_state *hs = hm_cstate(&g_m);
  for (h3c_conn *cc = hs ? hs->conns : NULL; cc; cc = cc->next)
    if (&cc->b == b) return true;
  return false;
}

static bool observe(amn_h3_conn *b, int64_t id, const uint8_t *data, size_t len, bool fin) {
  if (!g_dec || !is_client_conn(b)) return false;
  g_dec_bytes += len;
  /* the server's QPACK decoder stream answers the input's encoder stream,
   * which the decoder here never made: not decoded */
  if (id == 11) return true;
  if (ngtcp2_is_bidi_stream(id) && id / 4 < 32 && g_nodec[id / 4]) return true;
  h3f_decode(g_dec, id, data, len, fin);
  return true;
}

/* ---- the harness's client ---- */

static int64_t g_sid[8]; /* the stream of each slot, -1: not opened */

static int64_t slot_stream(int s) {
  static const int64_t fixed[8] = {0, 4, 8, 12, 2, 6, 10, 16};
  if (g_sid[s] >= 0) return g_sid[s];
  if (s >= 4 && s <= 6) return g_sid[s] = fixed[s];
  int64_t id;
  if (ngtcp2_conn_open_bidi_stream(g_cb->q, &id, NULL) != 0) return -1;
  g_sid[s] = id;
  static const nghttp3_nv nv[] = {
      {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},      {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, 0},
      {(uint8_t *)":path", (uint8_t *)"/", 5, 1, 0},           {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0}};
  if (id / 4 < 32) g_nodec[id / 4] = nghttp3_conn_submit_request(g_dec, id, nv, 4, NULL, NULL) != 0;
  return id;
}

static bool client_conn_alive(void) { return hm_cstate(&g_m)->conns != NULL; }

static bool ready(void) {
  h3c_state *hs = hm_cstate(&g_m);
  h3c_conn *cc = hs ? hs->conns : NULL;
  return cc && cc->st == CC_READY && cc->b.h && ngtcp2_conn_get_handshake_completed(cc->b.q) && !g_m.head &&
         !cc->b.dirty && g_m.l->conns && g_m.l->conns->state == SC_OPEN;
}

static void settle(void) {
  int n = hm_settle(&g_m, SETTLE_MAX);
  FUZZ_CHECK(n < SETTLE_MAX); /* bounded work */
}

/* ---- seeds (AMN_FUZZ_WRITE_SEEDS=dir) ---- */

/* The bytes of a gRPC request on stream `sid` as the client's nghttp3 writes them. */
static void request(int64_t sid, const char *path, const uint8_t *body, size_t n, h3s_buf *out) {
  nghttp3_callbacks cb = {0};
  nghttp3_settings st;
  nghttp3_settings_default(&st);
  nghttp3_conn *g;
  FUZZ_CHECK(nghttp3_conn_client_new(&g, &cb, &st, NULL, NULL) == 0);
  FUZZ_CHECK(nghttp3_conn_bind_control_stream(g, 2) == 0 && nghttp3_conn_bind_qpack_streams(g, 6, 10) == 0);
  nghttp3_nv nv[] = {H3S_NV(":method", "POST"), H3S_NV(":scheme", "https"), H3S_NV(":path", ""),
                     H3S_NV(":authority", "localhost"), H3S_NV("content-type", "application/grpc"),
                     H3S_NV("te", "trailers")};
  nv[2].value = (uint8_t *)path;
  nv[2].valuelen = strlen(path);
  h3s_body b = {body, n, false};
  nghttp3_data_reader dr = {h3s_read};
  FUZZ_CHECK(nghttp3_conn_submit_request(g, sid, nv, 6, &dr, &b) == 0);
  static h3s_buf bufs[64];
  memset(bufs, 0, sizeof bufs);
  h3s_drain(g, bufs);
  *out = bufs[sid];
  nghttp3_conn_del(g);
}

static void write_seeds(const char *dir) {
  uint8_t q[64], m[128], m2[256];
  size_t ql = amn_pair_encode(q, (const uint8_t *)"hello", 5, NULL, 0);
  size_t ml = h3s_grpc(m, q, ql);
  size_t m2l = h3s_grpc(m2, q, ql);
  m2l += h3s_grpc(m2 + m2l, q, ql);
  static h3s_buf exe, str, health, hold, nope, o;
  request(0, AMN_METHOD_EXECUTE, m, ml, &exe);
  request(4, AMN_METHOD_EXECUTE_STREAM, m2, m2l, &str);
  request(0, AMN_METHOD_HEALTH_CHECK, (const uint8_t *)"\0\0\0\0\0", 5, &health);
  request(0, "/fuzz.v1.Fuzz/Hold", m, ml, &hold);
  request(0, "/no.Such/Method", m, ml, &nope);
  static const struct {
    const char *name;
    uint8_t ctl;
    size_t chunk;
    const h3s_buf *req;
  } unary[] = {{"unary-close", 1, 200, &exe},  {"unary-silent", 0, 200, &exe}, {"unary-tiny-packets", 1, 7, &exe},
               {"unary-batched", 3, 100, &exe}, {"health", 1, 200, &health},  {"unknown-method", 1, 200, &nope}};
  for (size_t i = 0; i < sizeof unary / sizeof *unary; i++) {
    o.n = 0;
    h3s_byte(&o, unary[i].ctl);
    h3s_data(&o, 0, unary[i].req->b, unary[i].req->n, unary[i].chunk);
    h3s_fin(&o, 0);
    h3s_turn(&o, 1);
    h3s_turn(&o, 0);
    h3s_save(dir, unary[i].name, &o);
  }
  o.n = 0; /* a unary call and a streaming one */
  h3s_byte(&o, 1);
  h3s_data(&o, 0, exe.b, exe.n, 200);
  h3s_data(&o, 1, str.b, str.n, 200);
  h3s_fin(&o, 1);
  h3s_fin(&o, 0);
  h3s_turn(&o, 1);
  h3s_turn(&o, 0);
  h3s_save(dir, "two-calls", &o);
  for (int stop = 0; stop < 2; stop++) { /* a held call, then the client resets or stops it */
    o.n = 0;
    h3s_byte(&o, 1);
    h3s_data(&o, 0, hold.b, hold.n, 200);
    h3s_turn(&o, 1);
    h3s_reset(&o, 0, stop, 0x0c); /* H3_REQUEST_CANCELLED */
    h3s_turn(&o, 1);
    h3s_save(dir, stop ? "hold-stop-sending" : "hold-reset", &o);
  }
  o.n = 0; /* GOAWAY from the client (control stream), then a request */
  h3s_byte(&o, 1);
  h3s_data(&o, 4, (const uint8_t *)"\x07\x01\x00", 3, 200);
  h3s_data(&o, 0, exe.b, exe.n, 200);
  h3s_fin(&o, 0);
  h3s_turn(&o, 1);
  h3s_save(dir, "goaway-then-call", &o);
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
  o.max_recv_message = 64 * 1024;
  o.max_send_message = 64 * 1024;
  o.max_concurrent_streams = 8;
  char err[256];
  FUZZ_CHECK(hm_server_new(&g_m, &o, err, sizeof err) == 0);
  g_m.cli_ctx = h3f_client_ctx();
  FUZZ_CHECK(amn_server_use_echo(g_m.srv) == 0);
  amn_handler h = {.on_message = hold_msg, .on_half_close = hold_half_close, .on_cancel = hold_cancel,
                   .client_streaming = true};
  FUZZ_CHECK(amn_server_register(g_m.srv, "/fuzz.v1.Fuzz/Hold", &h) == 0);
  FUZZ_CHECK(hm_server_start(&g_m, err, sizeof err) == 0);
  amn_h3_test_stream_data = observe;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  uint8_t ctl = fuzz_u8(&in);
  bool close_at_end = ctl & 1, batch = ctl & 2;
  char err[256];
  memset(g_sid, 0xff, sizeof g_sid);
  memset(g_nodec, 0, sizeof g_nodec);
  g_dec_bytes = 0;
  g_dec = h3f_decoder(false);
  g_m.filter = NULL;

  /* the handshake, by the client binding */
  amn_client *cl = hm_client_new(&g_m, &g_h3f_pki.cli, err, sizeof err);
  FUZZ_CHECK(cl != NULL);
  cl->o.pool_min_connections = 1;
  amn_pool_kick(cl, true);
  h3c_conn *cc = NULL;
  for (int i = 0; i < 50 && !ready(); i++) {
    settle();
    if (!ready()) hm_next_timer(&g_m, NGTCP2_SECONDS);
  }
  FUZZ_CHECK(ready());
  cc = hm_cstate(&g_m)->conns;
  g_cb = &cc->b;
  cl->o.pool_min_connections = 0; /* no other connection once this one ends */
  /* the harness plays the client's HTTP/3 layer from now on */
  nghttp3_conn_del(cc->b.h);
  cc->b.h = NULL;

  h3f_ops ops = {.m = &g_m, .b = g_cb, .to_server = true, .batch = batch, .slot = slot_stream, .settle = settle,
                 .go_on = client_conn_alive};
  h3f_run(&ops, &in);

  /* the end: the client closes, or goes silent until the server's idle timeout */
  h3_sconn *sc0 = g_m.l->conns;
  if (close_at_end) {
    hm_client_stop(&g_m);
    settle();
  } else {
    g_m.filter = hm_silence;
    for (int i = 0; i < 100 && g_m.l->conns; i++) {
      hm_advance(&g_m, NGTCP2_SECONDS);
      settle();
    }
    hm_client_stop(&g_m);
    g_m.filter = NULL;
  }
  hm_drop_all(&g_m);
  for (int i = 0; i < 20 && g_m.l->conns; i++) {
    hm_advance(&g_m, 10 * NGTCP2_SECONDS);
    settle();
  }
  FUZZ_CHECK(g_m.l->conns == NULL); /* the connection ended */
  (void)sc0;
  g_cb = NULL;
  hm_client_free(&g_m);
  hm_drop_all(&g_m);
  nghttp3_conn_del(g_dec);
  g_dec = NULL;

  const amn_server *srv = g_m.srv;
  FUZZ_CHECK(atomic_load(&srv->bc.nconns) == 0 && g_m.sl.bl.nconns == 0);
  FUZZ_CHECK(atomic_load(&srv->bc.buffered) == 0);
  FUZZ_CHECK(g_m.sl.hdr_phase.head == NULL && g_m.sl.progress.head == NULL);
  FUZZ_CHECK(g_m.sl.writable_list == NULL);
  FUZZ_CHECK(g_held == NULL && g_held_n == 0); /* every held call was cancelled and finished */
  FUZZ_CHECK(!g_m.l->stopped && !g_m.l->draining); /* the listener is up */
  amn_call_cache_free(&g_m.sl);
  if (g_verbose)
    fprintf(stderr, "fuzz_h3_server: %zu datagrams to the server, %zu back; the server sent %zu stream bytes, %zu "
                    "header fields, %zu ended responses\n",
            g_m.sent_to_server, g_m.sent_to_client, g_dec_bytes, g_h3f_fields, g_h3f_ends);
  g_m.sent_to_server = g_m.sent_to_client = 0;
  return 0;
}
