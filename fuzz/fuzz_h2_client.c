/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The client's side of a whole HTTP/2 connection (src/transport/h2/
 * h2_client.c under the client core src/client/: calls, pool), in memory,
 * fed arbitrary server bytes. Every input is a client built by hand as
 * tests/unit/test_client_pool.c builds one (no I/O thread: its loop runs
 * here, ev_run EVRUN_NOWAIT, never waiting), plaintext, one URL, at most
 * one connection, with the real HTTP/2 transport. Its TCP connect is
 * redirected at link time (-Wl,--wrap=connect): the first connect of an
 * input gets one end of a socketpair in place of its socket, later ones
 * are refused. The harness plays the server on the other end: it reads
 * and checks what the client writes, writes a SETTINGS frame, then the
 * input, one chunk per loop iteration.
 *
 * The calls, made at the start: Execute (unary), ExecuteStream (two
 * messages, then the end of the request halfway through the input),
 * Execute with a deadline and metadata, Health/Check; they become streams
 * 1, 3, 5 and 7 once the server's SETTINGS arrive, which the seeds answer.
 *
 * Input: one control byte, then the server's bytes after a SETTINGS frame
 * (which the harness sends first). Control bits: 0-2 how the bytes are
 * split into writes (as fuzz_h2_server); 3 the application cancels the
 * stream halfway; 4 raw: no SETTINGS from the harness; 5 the calls are
 * idempotent (retried on UNAVAILABLE); 6 the last two calls are made only
 * halfway; 7 at the end the server half-closes and reads until the client
 * closes, else it closes at once.
 *
 * Invariants (besides no crash, leak, UB or overrun):
 *  - everything the client writes is valid HTTP/2 as fuzz_h2.h checks it
 *    (the preface, framing, frame sizes, HPACK, request header blocks with
 *    :method and :path, new streams in increasing order, gRPC message
 *    framing of the requests), and ends on a frame boundary;
 *  - every call ends exactly once (the unary callback, the stream's
 *    on_close), with a status 0..16 and a message; no response message of
 *    a stream after its end; unary results only with OK, within
 *    max_recv_message;
 *  - the loop settles once the input is written;
 *  - once the server's end is closed, the client closes its socket and no
 *    call is left on a stream (each is done, or waits for another
 *    connection) without waiting for a timer;
 *  - after the client is stopped (as amn_client_free does) every call has
 *    ended and its socket is closed.
 */
#include <fcntl.h>
#include <signal.h>

#include "amn/proto.h"
#include "client/client_internal.h"
#include "client_ops.h" /* tests/support */
#include "fuzz_h2.h"

#define MAX_MSG (64u * 1024)
#define NCALLS 4
#include "fuzz_calls.h"

/* ---- connect, redirected: the first one of an input gets a socketpair ---- */

int __real_connect(int fd, const struct sockaddr *addr, socklen_t len);
static int g_connects; /* connect calls of this input */
static int g_srv = -1; /* the server's end (the harness's) */
static int g_cli = -1; /* the client's socket */

int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t len) {
  (void)addr; (void)len;
  if (g_connects++ > 0) { /* one connection per input: the server is gone after it */
    errno = ECONNREFUSED;
    return -1;
  }
  int sv[2];
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  FUZZ_CHECK(dup2(sv[0], fd) == fd); /* the client's socket is now our pair's end */
  close(sv[0]);
  g_srv = sv[1];
  g_cli = fd;
  return 0;
}

/* ---- the calls and what the application sees of them (fuzz_calls.h) ---- */

static app_rec g_rec[NCALLS];
static amn_client_call *g_call[NCALLS];

/* What the client's I/O thread does with the calls (tests/support/client_ops.h). */
static void start(amn_client *cl, amn_client_call *c) { cops_start(cl, c); }

static void unary(amn_client *cl, int i, const char *method, const uint8_t *req, size_t len,
                  const amn_call_opts *o) {
  amn_client_call *c = amn_client_call_new(cl, AMN_CK_UNARY_ASYNC, method, o);
  FUZZ_CHECK(c != NULL);
  c->cb = on_done;
  c->ud = &g_rec[i];
  FUZZ_CHECK(amn_client_call_queue_unary(c, req, len) == 0);
  atomic_fetch_add(&c->refs, 1); /* the harness's, to look at the call until the end */
  g_call[i] = c;
  start(cl, c); /* the application's reference goes with the completion */
}

static void stream_send(amn_client_call *c, const uint8_t *p, size_t n) {
  FUZZ_CHECK(c->done || c->half_close_queued || cops_send(c, p, n) == 0);
}
static void stream_close_send(amn_client_call *c) { cops_close_send(c); }
static void stream_cancel(amn_client *cl, amn_client_call *c) { cops_cancel(cl, c); }

static uint8_t g_q1[64], g_q3[64];
static size_t g_q1_len, g_q3_len;

static void calls_first(amn_client *cl, bool idem) {
  amn_call_opts o = {.idempotent = idem};
  unary(cl, 0, AMN_METHOD_EXECUTE, g_q1, g_q1_len, &o);
  amn_client_call *s = amn_client_call_new(cl, AMN_CK_STREAM, AMN_METHOD_EXECUTE_STREAM, &o);
  FUZZ_CHECK(s != NULL);
  s->scbs = (amn_cstream_cbs){on_stream_msg, on_stream_close, NULL};
  s->ud = &g_rec[1];
  g_call[1] = s;
  start(cl, s); /* the application keeps its reference: released at the end */
  stream_send(s, g_q1, g_q1_len);
  stream_send(s, g_q3, g_q3_len);
}

static void calls_last(amn_client *cl, bool idem) {
  static const amn_md md[] = {{"x-echo-trace", (const uint8_t *)"abc", 3}, {"blob-bin", (const uint8_t *)"\0\xff", 2}};
  static const amn_metadata mds = {md, 2};
  amn_call_opts o = {.timeout_ms = 5000, .metadata = &mds, .idempotent = idem};
  unary(cl, 2, AMN_METHOD_EXECUTE, g_q3, g_q3_len, &o);
  amn_call_opts h = {.idempotent = idem};
  unary(cl, 3, AMN_METHOD_HEALTH_CHECK, (const uint8_t *)"", 0, &h); /* HealthCheckRequest{service: ""} */
}

/* ---- the client, built by hand ---- */

static void before_flush(amn_ioloop *l) {
  amn_client *cl = l->owner;
  if (cl->pool_dirty) amn_pool_maintain(cl);
}

static amn_client *client_new(void) {
  amn_client *cl = calloc(1, sizeof *cl);
  FUZZ_CHECK(cl != NULL);
  amn_client_opts_init(&cl->o);
  cl->o.url = "http://127.0.0.1:50051";
  cl->o.tls.insecure = true;
  cl->o.max_recv_message = MAX_MSG;
  cl->o.max_send_message = MAX_MSG;
  cl->o.initial_window_size = 16384;
  cl->o.stream_send_buffer = 64 * 1024;
  cl->o.pool_max_connections = 1;
  cl->o.idle_timeout_ms = 0;
  pthread_mutex_init(&cl->stats_mu, NULL);
  pthread_mutex_init(&cl->cmu, NULL);
  pthread_cond_init(&cl->ccv, NULL);
  char err[256];
  FUZZ_CHECK(amn_client_parse_url(cl->o.url, &cl->tls_on, cl->host, sizeof cl->host, &cl->port, cl->authority,
                                  sizeof cl->authority, err, sizeof err) == 0);
  cl->tp = &amn_h2c_transport;
  const char *urls[] = {cl->o.url};
  FUZZ_CHECK(amn_pool_init(cl, urls, 1, err, sizeof err) == 0);
  cl->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  FUZZ_CHECK(cl->ev != NULL);
  amn_ioloop_init(&cl->io, cl->ev);
  cl->io.owner = cl;
  cl->io.before_flush = before_flush;
  cl->thread = pthread_self(); /* this thread is the I/O thread */
  cl->ct.ev = cl->ev;
  cl->ct.io = &cl->io;
  cl->ct.connect_timeout_ms = cl->o.connect_timeout_ms;
  cl->ct.initial_window_size = cl->o.initial_window_size;
  cl->ct.call_cbs = &amn_client_call_cbs;
  return cl;
}

/* As amn_client_free: pending calls fail, connections close; then the
 * loop runs until nothing more happens and everything is released. */
static void client_stop(amn_client *cl) {
  atomic_store(&cl->stopping, true);
  amn_client_fail_pending(cl, AMN_STATUS_CANCELLED, "client is shutting down");
  amn_pool_close_all(cl, "client shutting down");
}

static void client_free(amn_client *cl) {
  amn_ioloop_stop(&cl->io);
  ev_loop_destroy(cl->ev);
  amn_pool_free(cl);
  pthread_mutex_destroy(&cl->stats_mu);
  pthread_mutex_destroy(&cl->cmu);
  pthread_cond_destroy(&cl->ccv);
  free(cl);
}

/* ---- the server's end ---- */

static amn_client *g_cl;
static bool g_cancel_half, g_late, g_idem;

static bool turn(h2_peer *k) {
  (void)k;
  ev_run(g_cl->ev, EVRUN_NOWAIT);
  return g_cl->io.dirty || g_cl->pool_dirty;
}

static void halfway(h2_peer *k) {
  (void)k;
  if (g_late) calls_last(g_cl, g_idem);
  stream_close_send(g_call[1]);
  if (g_cancel_half) stream_cancel(g_cl, g_call[1]);
}

static bool fd_closed(int fd) { return fcntl(fd, F_GETFD) == -1 && errno == EBADF; }

static void log_sink(amn_log_level level, const char *line, void *ud) {
  (void)ud;
  FUZZ_CHECK((unsigned)level <= AMN_LOG_DEBUG && line != NULL);
  if (getenv("AMN_FUZZ_VERBOSE")) fprintf(stderr, "log: %s\n", line);
}

/* Once, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  signal(SIGPIPE, SIG_IGN);
  amn_log_set_sink(log_sink, NULL);
  amn_log_set_level(AMN_LOG_DEBUG);
  g_q1_len = amn_pair_encoded_size(5, 0);
  amn_pair_encode(g_q1, (const uint8_t *)"hello", 5, NULL, 0);
  g_q3_len = amn_pair_encoded_size(6, 3);
  amn_pair_encode(g_q3, (const uint8_t *)"second", 6, (const uint8_t *)"sig", 3);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size-- < 1) return 0;
  uint8_t ctl = *data++, split = ctl & 7; /* the control byte, then the peer's bytes */
  bool raw = ctl & 16, half_close = ctl & 128;
  g_cancel_half = ctl & 8;
  g_idem = ctl & 32;
  g_late = ctl & 64;

  memset(g_rec, 0, sizeof g_rec);
  memset(g_call, 0, sizeof g_call);
  g_connects = 0;
  g_srv = g_cli = -1;
  g_cl = client_new();
  calls_first(g_cl, g_idem);
  if (!g_late) calls_last(g_cl, g_idem);
  FUZZ_CHECK(g_connects == 1 && g_srv >= 0); /* the first call connects */
  h2_peer k = {.fd = g_srv, .turn = turn, .halfway = halfway};
  h2r_init(&k.rd, true, MAX_MSG);

  if (!raw) {
    static const uint8_t settings[9] = {0, 0, 0, H2_SETTINGS, 0, 0, 0, 0, 0};
    h2p_put(&k, settings, sizeof settings);
  }
  h2p_write_input(&k, data, size, split, 0x9e3779b9u ^ ctl ^ (uint32_t)size << 8);
  h2p_close(&k, half_close);
  g_srv = -1;
  int i;
  for (i = 0; i < H2_SETTLE_MAX && !fd_closed(g_cli); i++) h2p_step(&k);
  FUZZ_CHECK(fd_closed(g_cli)); /* the client closes its socket without waiting for a timer */
  h2p_settle(&k);
  for (int j = 0; j < NCALLS; j++) /* no call left on a stream of the closed connection */
    FUZZ_CHECK(!g_call[j] || g_call[j]->done || g_call[j]->stream == NULL);

  client_stop(g_cl);
  h2p_settle(&k);
  for (int j = 0; j < NCALLS; j++) FUZZ_CHECK(g_rec[j].ends == 1); /* every call ended, once */
  FUZZ_CHECK(g_cl->pending == NULL);
  if (getenv("AMN_FUZZ_VERBOSE"))
    fprintf(stderr, "fuzz_h2_client: the client wrote %zu frames on %zu streams; statuses %d %d (%d messages) %d %d\n",
            k.rd.frames, k.rd.nst, g_rec[0].code, g_rec[1].code, g_rec[1].msgs, g_rec[2].code, g_rec[3].code);
  for (int j = 0; j < NCALLS; j++) /* the harness's references; the stream: the application's */
    if (g_call[j]) amn_client_call_unref(g_call[j]);
  client_free(g_cl);
  g_cl = NULL;
  h2r_free(&k.rd);
  return 0;
}
