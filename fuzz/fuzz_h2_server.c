/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A whole HTTP/2 server connection (src/transport/h2/h2_server.c over the
 * call core src/server/call.c), in memory. The server is created once in
 * plaintext (h2c) mode with the echo service, health, and a scripted
 * handler whose request messages say what it does (answer, pause
 * receiving, finish with a status and metadata, send a large response,
 * answer late, change the health status, answer from another thread, which
 * is joined at once); its one event loop is built by hand as amn_server_start
 * builds one, without thread or listener, on a fake clock. Every input is
 * one connection: a socketpair whose one end goes to amn_h2s_accept; the
 * harness writes the client's bytes to the other end, one chunk per loop
 * iteration (ev_run EVRUN_NOWAIT, never waiting), and reads everything the
 * server writes.
 *
 * Input: one control byte, then the client's bytes after the connection
 * preface and an empty SETTINGS frame (which the harness sends first).
 * Control bits: 0-2 how the bytes are split into writes (0: one write, 7:
 * byte by byte, else pseudo-random chunks of 1..2^(2k-1) bytes); 3 the
 * server stops hard at the end (amn_h2s_close_all); 4 raw: no preface or
 * SETTINGS from the harness, the input is the whole client stream; 5 the
 * server starts draining (GOAWAY) after half the chunks; 6 after half the
 * chunks the clock jumps an hour ahead and the header and stall timeouts
 * and the expired call deadlines fire (their libev timers are invoked: no
 * real time passes); 7 at the end the client half-closes and reads until the
 * server closes, else it closes at once.
 *
 * Invariants (besides no crash, leak, UB or overrun):
 *  - everything the server writes is valid HTTP/2 as fuzz_h2.h checks it
 *    (framing, frame sizes <= 16384, HPACK, response header blocks, gRPC
 *    message framing, grpc-status, no response above a GOAWAY's last id,
 *    nothing on a stream after its end), and ends on a frame boundary;
 *  - the binding calls the call core (amn_st_calls) only on calls it has
 *    begun and not yet closed, closes each exactly once, and peek/pull
 *    never return more than asked;
 *  - the server settles: once the input is written, the loop stops doing
 *    anything within a bounded number of iterations;
 *  - after the client's end of stream the server closes the connection
 *    without waiting for a timer; after the client closes, the connection
 *    is freed: no connection left on the loop or the server, every call
 *    closed by the binding and released by the core (all back in the
 *    loop's cache), the server-wide buffered bytes back to 0, no call in
 *    the header or progress phase, none on the deferred list, no health watcher, every
 *    call the handler held finished, the server's socket closed, and no
 *    libev watcher left active.
 */
#include <fcntl.h>
#include <signal.h>

#include "fuzz_h2.h"
#include "server/server_internal.h"
#include "transport/h2/h2_server.h"

#define MAX_RECV (16u * 1024)
#define MAX_SEND (256u * 1024)

static amn_server *g_srv;
static amn_srv_loop g_sl;
static int64_t g_now = 1000000000LL;
static int64_t fake_clock(void) { return g_now; }

/* ---- the binding's view of its calls: begun, then closed once ---- */

enum { CALL_LIVE = 1, CALL_CLOSED = 2 };
typedef struct cslot {
  amn_call *c;
  int st;
} cslot;
static cslot *g_cs;
static size_t g_ncs, g_cscap; /* distinct calls of this input */

static cslot *cs_find(amn_call *c, bool make) {
  if (make && (g_ncs + 1) * 2 > g_cscap) {
    size_t ncap = g_cscap ? g_cscap * 2 : 256;
    cslot *n = calloc(ncap, sizeof *n);
    FUZZ_CHECK(n != NULL);
    for (size_t i = 0; i < g_cscap; i++) {
      if (!g_cs[i].c) continue;
      size_t j = ((uintptr_t)g_cs[i].c >> 4) * 2654435761u & (ncap - 1);
      while (n[j].c) j = (j + 1) & (ncap - 1);
      n[j] = g_cs[i];
    }
    free(g_cs);
    g_cs = n;
    g_cscap = ncap;
  }
  if (!g_cscap) return NULL;
  size_t j = ((uintptr_t)c >> 4) * 2654435761u & (g_cscap - 1);
  while (g_cs[j].c && g_cs[j].c != c) j = (j + 1) & (g_cscap - 1);
  if (g_cs[j].c) return &g_cs[j];
  if (!make) return NULL;
  g_cs[j].c = c;
  g_ncs++;
  return &g_cs[j];
}

static void live(amn_call *c) {
  cslot *s = cs_find(c, false);
  FUZZ_CHECK(s && s->st == CALL_LIVE); /* an entry of the call core on a call the binding closed */
}

static const amn_st_calls *const B = &amn_call_binding;

static amn_call *w_begin(void *ud, const amn_st_stream_ops *ops, void *stream, const amn_peer_identity *peer,
                         const char *addr, bool early) {
  FUZZ_CHECK(ud == &g_sl && !peer && !early && addr && strcmp(addr, "fuzz") == 0);
  amn_call *c = B->begin(ud, ops, stream, peer, addr, early);
  if (c) {
    cslot *s = cs_find(c, true);
    FUZZ_CHECK(s->st != CALL_LIVE);
    s->st = CALL_LIVE;
  }
  return c;
}
static void w_attach(amn_call *c, amn_st_budget *b) { live(c); B->attach(c, b); }
static void w_header(amn_call *c, const uint8_t *n, size_t nl, const uint8_t *v, size_t vl) {
  live(c);
  B->header(c, n, nl, v, vl);
}
static void w_headers_end(amn_call *c) { live(c); B->headers_end(c); }
static void w_data(amn_call *c, const uint8_t *d, size_t n) { live(c); B->data(c, d, n); }
static void w_remote_close(amn_call *c) { live(c); B->remote_close(c); }
static size_t w_closed(amn_call *c, amn_status_code why, const char *msg) {
  live(c);
  FUZZ_CHECK((unsigned)why <= 16);
  cs_find(c, false)->st = CALL_CLOSED;
  return B->closed(c, why, msg);
}
static void w_fail(amn_call *c, amn_status_code code, const char *msg) { live(c); B->fail(c, code, msg); }
static amn_st_step w_step(amn_call *c) { live(c); return B->step(c); }
static int w_headers(amn_call *c, amn_hdr_buf *b, bool tonly) { live(c); return B->headers(c, b, tonly); }
static int w_trailers(amn_call *c, amn_hdr_buf *b) { live(c); return B->trailers(c, b); }
static ssize_t w_peek(amn_call *c, size_t len, bool *eof) {
  live(c);
  ssize_t n = B->peek(c, len, eof);
  FUZZ_CHECK(n >= -1 && (n < 0 || (size_t)n <= len));
  return n;
}
static ssize_t w_pull(amn_call *c, uint8_t *buf, size_t len, bool *eof) {
  live(c);
  ssize_t n = B->pull(c, buf, len, eof);
  FUZZ_CHECK(n >= -1 && (n < 0 || (size_t)n <= len));
  return n;
}
/* (HTTP/2 pulls; the HTTP/3 binding takes messages whole) */
static ssize_t w_take(amn_call *c, amn_qmsg **m, bool *eof) {
  live(c);
  ssize_t n = B->take(c, m, eof);
  FUZZ_CHECK(n >= -1 && (n <= 0 || (*m && (size_t)n == (*m)->len - (*m)->off)));
  return n;
}
static void w_released(amn_call *c, size_t acked, size_t freed) {
  live(c);
  B->released(c, acked, freed);
}
static const amn_st_calls g_calls = {w_begin, w_attach, w_header,   w_headers_end, w_data, w_remote_close,
                                     w_closed, w_fail,  w_step,     w_headers,     w_trailers, w_peek,
                                     w_pull,   w_take,  w_released};

/* ---- the scripted handler: each request message says what to do ---- */

typedef struct app_call {
  amn_call *c;
  struct app_call *prev, *next;
  int paused;        /* receiving paused: resumed at the next loop iteration (2: from another thread) */
  bool hold;         /* the answer comes late: after the whole input */
  size_t big;        /* a large response waiting for on_writable */
} app_call;
static app_call *g_app; /* calls the handler holds (dispatched, not finished) */

static app_call *app_of(amn_call *c) {
  app_call *a = amn_call_get_user_data(c);
  if (a || atomic_load(&c->finish_called)) return a;
  a = calloc(1, sizeof *a);
  FUZZ_CHECK(a != NULL);
  a->c = c;
  a->next = g_app;
  if (g_app) g_app->prev = a;
  g_app = a;
  amn_call_set_user_data(c, a);
  return a;
}

/* The handler forgets the call (it finishes it, or another thread does). */
static void app_forget(amn_call *c) {
  app_call *a = amn_call_get_user_data(c);
  if (!a) return;
  if (a->prev) a->prev->next = a->next;
  else g_app = a->next;
  if (a->next) a->next->prev = a->prev;
  free(a);
  amn_call_set_user_data(c, NULL);
}

static void app_finish(amn_call *c, amn_status_code code, const char *msg) {
  app_forget(c);
  amn_call_finish(c, code, msg);
}

/* Work of the application on another thread, joined at once: what it does
 * reaches the loop through its queue and wake-up (amn_srv_loop_drain_ops). */
typedef struct off_loop {
  amn_call *c;
  const uint8_t *msg;
  size_t len;
  bool finish;
} off_loop;

static void *off_loop_main(void *arg) {
  off_loop *w = arg;
  if (!w->finish) {
    amn_call_resume_recv(w->c);
    return NULL;
  }
  int rc = amn_call_send(w->c, w->msg, w->len);
  FUZZ_CHECK(rc == 0 || rc == AMN_ECLOSED || rc == AMN_EAGAIN);
  amn_call_finish(w->c, AMN_STATUS_OK, NULL);
  return NULL;
}

static void run_off_loop(off_loop *w) {
  pthread_t t;
  FUZZ_CHECK(pthread_create(&t, NULL, off_loop_main, w) == 0);
  pthread_join(t, NULL);
}

/* A large response; on_cancel may run inside the send (a bound passed) and
 * finish the call, so its record is looked up again afterwards. */
static void send_big(amn_call *c, size_t big) {
  uint8_t *p = malloc(big);
  FUZZ_CHECK(p != NULL);
  for (size_t i = 0; i < big; i++) p[i] = (uint8_t)i;
  int rc = amn_call_send(c, p, big);
  free(p);
  FUZZ_CHECK(rc == 0 || rc == AMN_EAGAIN || rc == AMN_ETOOBIG || rc == AMN_ECLOSED);
  app_call *a = amn_call_get_user_data(c);
  if (a) a->big = rc == AMN_EAGAIN ? big : 0;
}

static void script_msg(amn_call *c, const uint8_t *m, size_t n, void *ud) {
  (void)ud;
  app_call *a = app_of(c);
  if (!a || n == 0) return;
  const uint8_t *rest = m + 1;
  size_t rl = n - 1;
  char text[64];
  switch (m[0] % 10) {
  case 0: /* answer with the rest */
    amn_call_send(c, rest, rl);
    break;
  case 1: /* stop receiving for a while */
    amn_call_pause_recv(c);
    a->paused = rl && rest[0] & 1 ? 2 : 1;
    break;
  case 2:
    app_finish(c, AMN_STATUS_OK, NULL);
    break;
  case 3: /* a status with a message and trailing metadata */
    /* the message: the bytes after the code, up to a NUL or 40 bytes */
    snprintf(text, sizeof text, "%.*s", (int)(rl > 1 ? (rl - 1 < 40 ? rl - 1 : 40) : 0),
             rl > 1 ? (const char *)rest + 1 : "");
    amn_call_add_trailing_metadata(c, "x-fuzz", (const uint8_t *)"t", 1);
    amn_call_add_trailing_metadata(c, "x-fuzz-bin", rest, rl);
    app_finish(c, (amn_status_code)(rl ? rest[0] % 17 : 2), text);
    break;
  case 4: { /* initial metadata, keys valid or not */
    static const char *const keys[] = {"x-fuzz", "x-fuzz-bin", "grpc-status", "Bad", "x-ok.1_2", ""};
    amn_call_add_initial_metadata(c, keys[rl ? rest[0] % 6 : 0], rl > 1 ? rest + 1 : NULL, rl > 1 ? rl - 1 : 0);
    break;
  }
  case 5: /* a large response: flow control, the send buffer bound, on_writable */
    send_big(c, rl >= 2 ? ((size_t)rest[0] << 8 | rest[1]) * 16 + 1 : 70000);
    break;
  case 6:
    a->hold = true;
    break;
  case 7: /* an empty message, twice */
    amn_call_send(c, NULL, 0);
    amn_call_send(c, NULL, 0);
    break;
  case 8: /* health changes; Watch calls hear of it (as from the loop's wake-up) */
    amn_server_set_health(g_srv, rl && rest[0] & 1 ? "amaters.v1.AmateRS" : "", rl > 1 && rest[1] & 1);
    amn_health_notify_loop(&g_sl);
    break;
  default: { /* another thread answers with the rest and finishes */
    off_loop w = {c, rest, rl, true};
    app_forget(c);
    run_off_loop(&w);
    break;
  }
  }
}

static void script_half_close(amn_call *c, void *ud) {
  (void)ud;
  app_call *a = app_of(c);
  if (a && !a->hold) app_finish(c, AMN_STATUS_OK, NULL);
}

static void script_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)ud;
  FUZZ_CHECK((unsigned)why <= 16 && why != AMN_STATUS_OK);
  app_finish(c, why, NULL);
}

static void script_writable(amn_call *c, void *ud) {
  (void)ud;
  app_call *a = amn_call_get_user_data(c);
  if (a && a->big) send_big(c, a->big);
}

/* Between loop iterations: paused calls resume (from the application's side). */
static bool app_tick(void) {
  bool any = false;
  for (app_call *a = g_app; a; a = a->next)
    if (a->paused) {
      off_loop w = {.c = a->c};
      if (a->paused == 2) run_off_loop(&w);
      else amn_call_resume_recv(a->c);
      a->paused = 0;
      any = true;
    }
  return any;
}

/* The late answers: every held call finishes. */
static void app_answer_held(void) {
  for (app_call *a = g_app, *next; a; a = next) {
    next = a->next;
    if (a->hold) app_finish(a->c, AMN_STATUS_OK, NULL);
  }
}

/* ---- the loop ---- */

static bool g_verbose; /* AMN_FUZZ_VERBOSE set: the log, and a line per input (reproducing) */

static void log_sink(amn_log_level level, const char *line, void *ud) {
  (void)ud;
  FUZZ_CHECK((unsigned)level <= AMN_LOG_DEBUG && line != NULL);
  if (g_verbose) fprintf(stderr, "log: %s\n", line);
}

/* Once, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc; (void)argv;
  signal(SIGPIPE, SIG_IGN);
  g_verbose = getenv("AMN_FUZZ_VERBOSE") != NULL;
  amn_log_set_sink(log_sink, NULL);
  amn_log_set_level(AMN_LOG_DEBUG); /* the log lines are formatted (peer data in them), then dropped */
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.listen = "127.0.0.1:0";
  o.tls.insecure = true;
  o.max_recv_message = MAX_RECV;
  o.max_send_message = MAX_SEND;
  o.stream_send_buffer = 1024; /* a few responses fill it: EAGAIN, on_writable */
  o.initial_window_size = 16384;
  /* the least memory bounds allowed (max_recv + max_send + 1 MiB): a few large
   * responses the client does not read reach them */
  o.max_connection_buffer = o.max_server_buffer = MAX_RECV + MAX_SEND + (1u << 20);
  o.max_concurrent_streams = 128;
  char err[256];
  FUZZ_CHECK(amn_server_new(&g_srv, &o, err, sizeof err) == 0);
  FUZZ_CHECK(amn_server_use_echo(g_srv) == 0);
  amn_handler h = {.on_message = script_msg, .on_half_close = script_half_close, .on_cancel = script_cancel,
                   .on_writable = script_writable, .client_streaming = true};
  FUZZ_CHECK(amn_server_register(g_srv, "/fuzz.v1.Fuzz/Script", &h) == 0);
  h.client_streaming = false;
  FUZZ_CHECK(amn_server_register(g_srv, "/fuzz.v1.Fuzz/Unary", &h) == 0);

  amn_srv_loop *sl = &g_sl;
  sl->srv = g_srv;
  sl->bl.first = &sl->bl;
  sl->bl.cfg = &g_srv->bc;
  sl->bl.counters = &g_srv->bc;
  sl->bl.calls = &g_calls;
  sl->bl.ud = sl;
  sl->lfd = -1;
  amn_srv_loop_setup(sl, fake_clock); /* as amn_server_start does */
  FUZZ_CHECK(sl->ev != NULL);
  sl->thread = pthread_self(); /* this thread is the loop */
  return 0;
}

/* ---- one connection ---- */

static bool g_drain_half, g_jump_half;

static bool turn(h2_peer *k) {
  (void)k;
  bool resumed = app_tick();
  ev_run(g_sl.ev, EVRUN_NOWAIT);
  g_now += 1000000; /* 1 ms a turn */
  return resumed || g_sl.io.dirty || g_sl.writable_list;
}

/* The clock jumps an hour: calls still in the header phase, calls waiting
 * on the client (stalled) and calls past their deadline fail, as their
 * timers would have made them. */
static void time_jump(void) {
  g_now += 3600 * 1000000000LL;
  amn_dlist *phases[] = {&g_sl.hdr_phase, &g_sl.progress};
  for (size_t i = 0; i < 2; i++)
    if (phases[i]->ready && ev_is_active(&phases[i]->timer)) ev_invoke(g_sl.ev, &phases[i]->timer, EV_TIMER);
  amn_call **due = malloc((g_ncs + 1) * sizeof *due);
  FUZZ_CHECK(due != NULL);
  size_t n = 0;
  for (size_t i = 0; i < g_cscap; i++) {
    amn_call *c = g_cs[i].c;
    if (c && g_cs[i].st == CALL_LIVE && c->deadline_ns >= 0 && c->deadline_ns <= g_now &&
        ev_is_active(&c->deadline_timer))
      due[n++] = c;
  }
  for (size_t i = 0; i < n; i++) {
    cslot *s = cs_find(due[i], false);
    if (s->st == CALL_LIVE && ev_is_active(&due[i]->deadline_timer))
      ev_invoke(g_sl.ev, &due[i]->deadline_timer, EV_TIMER);
  }
  free(due);
}

static void halfway(h2_peer *k) {
  (void)k;
  if (g_drain_half) { /* as amn_server_stop begins */
    g_sl.bl.stopping = true;
    amn_h2s_drain_all(&g_sl.bl);
  }
  if (g_jump_half) time_jump();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size-- < 1) return 0;
  uint8_t ctl = *data++, split = ctl & 7; /* the control byte, then the peer's bytes */
  bool stop = ctl & 8, raw = ctl & 16, half_close = ctl & 128;

  if (g_cs) memset(g_cs, 0, g_cscap * sizeof *g_cs);
  g_ncs = 0;
  g_drain_half = ctl & 32;
  g_jump_half = ctl & 64;
  int sv[2];
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  h2_peer k = {.fd = sv[0], .turn = turn, .halfway = halfway};
  h2r_init(&k.rd, false, MAX_SEND);
  amn_h2s_accept(&g_sl.bl, sv[1], "fuzz");
  FUZZ_CHECK(g_sl.bl.nconns == 1 && atomic_load(&g_srv->bc.nconns) == 1);

  if (!raw) {
    static const uint8_t settings[9] = {0, 0, 0, H2_SETTINGS, 0, 0, 0, 0, 0};
    h2p_put(&k, (const uint8_t *)h2_preface, 24);
    h2p_put(&k, settings, sizeof settings);
  }
  h2p_write_input(&k, data, size, split, 0x9e3779b9u ^ ctl ^ (uint32_t)size << 8);
  app_answer_held();
  h2p_settle(&k);
  if (stop) {
    amn_h2s_close_all(&g_sl.bl);
    h2p_settle(&k);
  }
  h2p_close(&k, half_close);
  int i;
  for (i = 0; i < H2_SETTLE_MAX && g_sl.bl.nconns > 0; i++) h2p_step(&k);
  FUZZ_CHECK(g_sl.bl.nconns == 0); /* the connection is freed without waiting for a timer */
  h2p_settle(&k);

  FUZZ_CHECK(atomic_load(&g_srv->bc.nconns) == 0 && atomic_load(&g_srv->bc.nrefusing) == 0);
  for (size_t j = 0; j < g_cscap; j++) FUZZ_CHECK(g_cs[j].st != CALL_LIVE); /* every call closed */
  FUZZ_CHECK(atomic_load(&g_srv->bc.buffered) == 0);
  FUZZ_CHECK(g_sl.hdr_phase.head == NULL && g_sl.progress.head == NULL); /* no call left in a phase */
  FUZZ_CHECK(g_sl.writable_list == NULL && g_sl.io.dirty == NULL);
  FUZZ_CHECK(g_sl.health_watchers == NULL);
  FUZZ_CHECK(g_app == NULL); /* every call the handler held was finished */
  FUZZ_CHECK(fcntl(sv[1], F_GETFD) == -1 && errno == EBADF); /* the server's socket is closed */
  FUZZ_CHECK(ev_run(g_sl.ev, EVRUN_NOWAIT) == 0);            /* no watcher left active */
  /* every call was released: all are back in the loop's cache (unless it
   * overflowed, then some were freed) */
  if (g_ncs <= 256) FUZZ_CHECK((size_t)g_sl.call_cache_n == g_ncs);
  if (g_verbose)
    fprintf(stderr, "fuzz_h2_server: %zu call records; the server wrote %zu frames on %zu streams, %zu gRPC statuses, %zu resets, "
            "GOAWAY %s\n", g_ncs, k.rd.frames, k.rd.nst, k.rd.finals, k.rd.resets,
            k.rd.goaway ? nghttp2_http2_strerror(k.rd.goaway_code) : "none");
  amn_call_cache_free(&g_sl);
  g_sl.bl.stopping = false;
  amn_server_set_health(g_srv, "", true); /* the next input starts as this one did */
  amn_server_set_health(g_srv, "amaters.v1.AmateRS", true);
  h2r_free(&k.rd);
  return 0;
}
