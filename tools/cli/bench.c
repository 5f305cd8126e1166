/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli: bench, the load generator. Closed loop: M calls in flight,
 * each sent again when it ends. Open loop (--rps): calls sent at a constant
 * rate whatever the server does, their latency counted from the time each
 * was meant to be sent, so a server that stalls cannot hide behind the
 * calls the bench did not send (coordinated omission). --new-connection
 * (handshakes): the closed loop with one call per client at a time, each
 * on a new connection (the pool's max_calls_per_connection 1).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* A closed-loop slot: one call in flight at a time, sent again when it ends. */
typedef struct bslot {
  bclient *bc;
  bench *b;
  uint64_t t_send;
  amn_cstream *s;
  bool half_closed; /* stream: we ended it */
  bool want_send;   /* stream: a send got AMN_EAGAIN */
  uint8_t *sreq;    /* --sign, unary: this slot's signed QueryRequest (a new signature per call) */
} bslot;

/* An open-loop call: taken from the free stack by the scheduler (main
 * thread), given back by its completion (a client's I/O thread). */
typedef struct bcall {
  struct bcall *next;
  bench *b;
  bclient *bc;
  uint64_t t_due; /* when it was meant to be sent: latency counts from here */
} bcall;

struct bench {
  bool stream, open;
  bool sign; /* --sign: every query signed (stream: by the library in amn_cstream_send) */
  size_t size;
  uint8_t *payload, *req; /* payload; encoded QueryRequest */
  size_t req_len;
  uint64_t start, t_measure, t_end; /* monotonic ns, fixed before the first call; t_end UINT64_MAX with -n */
  double period_ns;                  /* open loop: 1e9 / rate */
  amn_call_opts copts;
  atomic_ullong ok_total, errors;
  bool limited;                      /* -n given */
  atomic_llong n_left;               /* -n: measured calls still to send (below 0: none) */
  _Atomic uint64_t last_done;        /* when the last measured call ended */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int active; /* closed loop: slots still running (under mu) */
  bslot **parked; /* unary slots whose call failed, re-sent by the main thread after a pause (under mu) */
  bslot **unparked; /* the main thread's copy of them */
  int nparked;
  bool over; /* the run is over: no more parking (under mu) */
  _Atomic(bcall *) done;   /* open loop: calls that ended (a stack: pushed by the I/O threads, emptied by the scheduler) */
  atomic_int open_out;     /* open loop: calls in flight */
  uint64_t late;           /* open loop: sent more than 1 ms after their time */
  int max_backlog;         /* open loop: most calls due but waiting for a free one of the M */
  bsecond *series;
  int seconds;
  char first_error[512];
};

#define B_ERROR_PAUSE_NS 10000000ull /* a slot whose call failed sends again after 10 ms */
#define B_LATE_NS 1000000ull         /* an open-loop call sent later than this after its time is late */

/* The per-second series, by the second the call was (meant to be) sent. */
static void b_series(bench *b, uint64_t t_send, bool ok, uint64_t latency) {
  uint64_t sec = (t_send - b->start) / 1000000000ull;
  if (t_send < b->start || sec >= (uint64_t)b->seconds) return;
  if (ok) amn_ahist_record(&b->series[sec].lat, latency);
  else atomic_fetch_add_explicit(&b->series[sec].errors, 1, memory_order_relaxed);
}

/* -n: may a call sent at `t` go? Calls of the warm-up always may. */
static bool b_may_send(bench *b, uint64_t t) {
  if (t < b->t_measure || !b->limited) return true;
  return atomic_fetch_sub(&b->n_left, 1) > 0;
}

static void b_done_at(bench *b, uint64_t now) {
  uint64_t m = atomic_load_explicit(&b->last_done, memory_order_relaxed);
  while (now > m && !atomic_compare_exchange_weak(&b->last_done, &m, now)) {
  }
}

static void b_error(bench *b, int code, const char *msg) {
  if (atomic_fetch_add(&b->errors, 1) == 0) {
    pthread_mutex_lock(&b->mu);
    snprintf(b->first_error, sizeof b->first_error, "%s: %s", amn_status_name(code), msg ? msg : "");
    pthread_mutex_unlock(&b->mu);
  }
}

static void b_slot_done(bench *b) {
  pthread_mutex_lock(&b->mu);
  b->active--;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

/* Checks an echoed QueryResponse: the payload back, byte for byte at the
 * ends (a full compare would make the client the bottleneck at 1 MiB). */
static bool b_check(bench *b, const uint8_t *msg, size_t len) {
  amn_pair_view v;
  if (amn_pair_decode(msg ? msg : (const uint8_t *)"", len, &v) != 0 || v.f1_len != b->size) return false;
  size_t k = b->size < 64 ? b->size : 64;
  return !k || (memcmp(v.f1, b->payload, k) == 0 && memcmp(v.f1 + b->size - k, b->payload + b->size - k, k) == 0);
}

/* A successful response: counted when the call ran entirely inside the
 * measurement window. Returns true if the slot should go on. */
static bool b_record(bslot *sl, uint64_t now) {
  bench *b = sl->b;
  atomic_fetch_add_explicit(&b->ok_total, 1, memory_order_relaxed);
  b_series(b, sl->t_send, true, now - sl->t_send);
  if (sl->t_send >= b->t_measure && now <= b->t_end) {
    amn_hist_record(&sl->bc->hist, now - sl->t_send);
    b_done_at(b, now);
  }
  return now < b->t_end;
}

static void b_unary_issue(bslot *sl);

static void b_unary_done(const amn_result *res, void *ud) {
  bslot *sl = ud;
  bench *b = sl->b;
  uint64_t now = now_ns();
  bool more;
  if (res->code != AMN_STATUS_OK) {
    b_error(b, res->code, res->message);
    b_series(b, sl->t_send, false, 0);
    more = now < b->t_end;
  } else if (!b_check(b, res->data, res->len)) {
    b_error(b, AMN_STATUS_DATA_LOSS, "the echoed payload differs from the request");
    b_series(b, sl->t_send, false, 0);
    more = now < b->t_end;
  } else {
    more = b_record(sl, now);
  }
  if (more && res->code != AMN_STATUS_OK) {
    /* no busy loop against a failing server (calls fail at once while
     * the pool waits to reconnect): the main thread sends it again */
    pthread_mutex_lock(&b->mu);
    bool parked = !b->over;
    if (parked) b->parked[b->nparked++] = sl;
    pthread_mutex_unlock(&b->mu);
    if (!parked) b_slot_done(b);
  } else if (more) {
    b_unary_issue(sl);
  } else {
    b_slot_done(b);
  }
}

/* Main thread: sends the calls of the slots parked after a failure again
 * (those parked until now: one that fails again waits for the next round),
 * or ends those slots when the run is over. */
static void b_unpark(bench *b, bool over) {
  pthread_mutex_lock(&b->mu);
  int k = b->nparked;
  memcpy(b->unparked, b->parked, (size_t)k * sizeof *b->unparked);
  b->nparked = 0;
  pthread_mutex_unlock(&b->mu);
  for (int i = 0; i < k; i++) {
    if (over) b_slot_done(b);
    else b_unary_issue(b->unparked[i]);
  }
}

/* --sign: the slot's request with a fresh signature; its length, or a
 * negative code. */
static int b_signed_req(bslot *sl) {
  uint8_t sig[AMN_CLIENT_SIGNATURE_MAX];
  int n = amn_client_sign_query(sl->bc->c, AMN_METHOD_EXECUTE, sl->b->payload, sl->b->size, sig);
  if (n < 0) return n;
  if (!sl->sreq && !(sl->sreq = malloc(amn_pair_encoded_size(sl->b->size, AMN_CLIENT_SIGNATURE_MAX))))
    return AMN_ENOMEM;
  return (int)amn_pair_encode(sl->sreq, sl->b->payload, sl->b->size, sig, (size_t)n);
}

static void b_unary_issue(bslot *sl) {
  sl->t_send = now_ns();
  if (!b_may_send(sl->b, sl->t_send)) {
    b_slot_done(sl->b);
    return;
  }
  const uint8_t *req = sl->b->req;
  int rc = 0, len = (int)sl->b->req_len;
  if (sl->b->sign && (len = b_signed_req(sl)) < 0) rc = len;
  if (!rc)
    rc = amn_client_unary_async(sl->bc->c, AMN_METHOD_EXECUTE, sl->b->sign ? sl->sreq : req, (size_t)len,
                                &sl->b->copts, b_unary_done, sl);
  if (rc) {
    b_error(sl->b, status_of_err(rc), amn_strerror(rc));
    b_slot_done(sl->b);
  }
}

static void b_stream_send(bslot *sl) {
  sl->t_send = now_ns();
  if (!b_may_send(sl->b, sl->t_send)) {
    sl->half_closed = true;
    amn_cstream_close_send(sl->s);
    return;
  }
  int rc = amn_cstream_send(sl->s, sl->b->req, sl->b->req_len);
  if (rc == AMN_EAGAIN) {
    sl->want_send = true;
  } else if (rc) {
    /* ECLOSED: on_close reports the status; anything else is ours */
    if (rc != AMN_ECLOSED) b_error(sl->b, status_of_err(rc), amn_strerror(rc));
    if (rc != AMN_ECLOSED) amn_cstream_cancel(sl->s);
  }
}

static void b_s_message(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  bslot *sl = ud;
  uint64_t now = now_ns();
  bool more;
  if (!b_check(sl->b, msg, len)) {
    b_error(sl->b, AMN_STATUS_DATA_LOSS, "the echoed payload differs from the request");
    b_series(sl->b, sl->t_send, false, 0);
    more = now < sl->b->t_end;
  } else {
    more = b_record(sl, now);
  }
  if (more) {
    b_stream_send(sl);
  } else if (!sl->half_closed) {
    sl->half_closed = true;
    amn_cstream_close_send(s);
  }
}

static void b_s_writable(amn_cstream *s, void *ud) {
  bslot *sl = ud;
  if (sl->want_send) {
    sl->want_send = false;
    b_stream_send(sl);
  }
}

static void b_s_close(amn_cstream *s, const amn_result *res, void *ud) {
  bslot *sl = ud;
  if (res->code != AMN_STATUS_OK) b_error(sl->b, res->code, res->message);
  else if (!sl->half_closed) b_error(sl->b, AMN_STATUS_INTERNAL, "the server ended a stream early");
  b_slot_done(sl->b);
}

/* ------------------------------------------------------------------ */
/* Open loop                                                           */
/* ------------------------------------------------------------------ */

static void b_open_done(const amn_result *res, void *ud) {
  bcall *k = ud;
  bench *b = k->b;
  uint64_t now = now_ns();
  if (res->code != AMN_STATUS_OK) {
    b_error(b, res->code, res->message);
    b_series(b, k->t_due, false, 0);
  } else if (!b_check(b, res->data, res->len)) {
    b_error(b, AMN_STATUS_DATA_LOSS, "the echoed payload differs from the request");
    b_series(b, k->t_due, false, 0);
  } else {
    atomic_fetch_add_explicit(&b->ok_total, 1, memory_order_relaxed);
    b_series(b, k->t_due, true, now - k->t_due);
    if (k->t_due >= b->t_measure) { /* every call meant for the window counts, however late it ends */
      amn_hist_record(&k->bc->hist, now - k->t_due);
      b_done_at(b, now);
    }
  }
  bcall *head = atomic_load_explicit(&b->done, memory_order_relaxed);
  do k->next = head;
  while (!atomic_compare_exchange_weak_explicit(&b->done, &head, k, memory_order_release, memory_order_relaxed));
  atomic_fetch_sub_explicit(&b->open_out, 1, memory_order_release);
}

static void sleep_until(uint64_t t) {
  struct timespec ts = {(time_t)(t / 1000000000ull), (long)(t % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

/* Progress once per second (runs longer than 3 s): `*next` is the next tick. */
static void b_progress(bench *b, uint64_t now, uint64_t *next, int *sec, unsigned long long *last_ok) {
  while (now >= *next) {
    unsigned long long okc = atomic_load(&b->ok_total);
    fprintf(stderr, PROG ": bench [%3ds%s] %llu calls/s, %llu errors\n", *sec, *next <= b->t_measure ? " warm-up" : "",
            okc - *last_ok, (unsigned long long)atomic_load(&b->errors));
    *last_ok = okc;
    ++*sec;
    *next += 1000000000ull;
  }
}

/* The scheduler: call i is due at start + i / rate, sent on client i mod C
 * with one of the M call contexts; when all M are in flight the due calls
 * wait (the backlog), and their latency still counts from their time. */
static void b_open_run(bench *b, bclient *cl, int C, bcall *calls, int M, bool progress) {
  bcall *free_calls = NULL;
  for (int k = M - 1; k >= 0; k--) {
    calls[k].b = b;
    calls[k].next = free_calls;
    free_calls = &calls[k];
  }
  uint64_t next_tick = b->start + 1000000000ull;
  int sec = 1;
  unsigned long long last_ok = 0;
  for (uint64_t i = 0;; i++) {
    uint64_t due = b->start + (uint64_t)((double)i * b->period_ns);
    if (due >= b->t_end) break;
    if (due >= b->t_measure && b->limited && atomic_load(&b->n_left) <= 0) break;
    uint64_t now = now_ns();
    if (progress) b_progress(b, now, &next_tick, &sec, &last_ok);
    if (due > now) { /* sleep until it is due (or the next progress line), then look again */
      sleep_until(due < next_tick || !progress ? due : next_tick);
      i--;
      continue;
    }
    while (!free_calls) {
      free_calls = atomic_exchange_explicit(&b->done, NULL, memory_order_acquire);
      if (free_calls) break;
      int backlog = (int)((now - due) / (uint64_t)b->period_ns) + 1;
      if (backlog > b->max_backlog) b->max_backlog = backlog;
      sleep_until(now + 50000); /* all M in flight: look again in 50 us */
      now = now_ns();
      if (progress) b_progress(b, now, &next_tick, &sec, &last_ok);
    }
    bcall *k = free_calls;
    free_calls = k->next;
    k->t_due = due;
    k->bc = &cl[i % (uint64_t)C];
    if (now - due > B_LATE_NS) b->late++;
    if (due >= b->t_measure && b->limited) atomic_fetch_sub(&b->n_left, 1);
    atomic_fetch_add_explicit(&b->open_out, 1, memory_order_relaxed);
    int rc = amn_client_unary_async(k->bc->c, AMN_METHOD_EXECUTE, b->req, b->req_len, &b->copts, b_open_done, k);
    if (rc) {
      atomic_fetch_sub(&b->open_out, 1);
      b_error(b, status_of_err(rc), amn_strerror(rc));
      b_series(b, due, false, 0);
      k->next = free_calls;
      free_calls = k;
    }
  }
}

/* ------------------------------------------------------------------ */
/* Closed loop                                                         */
/* ------------------------------------------------------------------ */

static bool b_all_done(bench *b) {
  pthread_mutex_lock(&b->mu);
  bool done = b->active == 0;
  pthread_mutex_unlock(&b->mu);
  return done;
}

static void b_closed_run(bench *b, bslot *slots, bclient *cl, int C, int M, bool progress) {
  b->active = M;
  for (int i = 0; i < M; i++) {
    bslot *sl = &slots[i];
    sl->bc = &cl[i % C];
    sl->b = b;
    if (!b->stream) {
      b_unary_issue(sl);
      continue;
    }
    amn_cstream_cbs cbs = {b_s_message, b_s_close, b_s_writable};
    int rc = amn_client_stream_open(sl->bc->c, AMN_METHOD_EXECUTE_STREAM, &b->copts, &cbs, sl, &sl->s);
    if (rc) {
      b_error(b, status_of_err(rc), amn_strerror(rc));
      b_slot_done(b);
      continue;
    }
    b_stream_send(sl);
  }
  uint64_t next_tick = b->start + 1000000000ull;
  int sec = 1;
  unsigned long long last_ok = 0;
  for (;;) { /* slots parked after a failure go again every 10 ms; -n ends when every slot has */
    uint64_t now = now_ns();
    if (now >= b->t_end || b_all_done(b)) break;
    if (progress) b_progress(b, now, &next_tick, &sec, &last_ok);
    uint64_t wake = now + B_ERROR_PAUSE_NS;
    if (wake > b->t_end) wake = b->t_end;
    if (progress && wake > next_tick) wake = next_tick;
    sleep_until(wake);
    if (now_ns() < b->t_end) b_unpark(b, false);
  }
  pthread_mutex_lock(&b->mu);
  b->over = true;
  pthread_mutex_unlock(&b->mu);
  b_unpark(b, true);
}

/* ------------------------------------------------------------------ */
/* The command                                                         */
/* ------------------------------------------------------------------ */

/* Calls and failures per URL (or address), summed over the clients
 * (warm-up included). */
static bendpoint *b_endpoints(bclient *cl, int C, size_t *neps, uint64_t *retries) {
  size_t n = amn_client_stats(cl[0].c, NULL, 0, NULL);
  bendpoint *eps = calloc(n ? n : 1, sizeof *eps);
  amn_endpoint_stats *one = calloc(n ? n : 1, sizeof *one);
  if (!eps || !one) die_code(EX_SOFTWARE, "out of memory");
  *retries = 0;
  for (int i = 0; i < C; i++) {
    uint64_t r = 0;
    size_t k = amn_client_stats(cl[i].c, one, n, &r);
    *retries += r;
    for (size_t j = 0; j < k && j < n; j++) {
      eps[j].calls += one[j].calls_started;
      eps[j].ok += one[j].calls_ok;
      eps[j].failed += one[j].calls_failed;
      eps[j].connects += one[j].connects;
      eps[j].connect_failures += one[j].connect_failures;
      if (!eps[j].transport) eps[j].transport = one[j].transport;
      snprintf(eps[j].url, sizeof eps[j].url, "%s", one[j].url);
    }
  }
  free(one);
  *neps = n;
  return eps;
}

/* --new-connection: the clients' HTTP/3 counters, summed (the struct is
 * only uint64_t counters). */
static void b_quic_sum(bclient *cl, int C, amn_client_quic_stats *sum) {
  memset(sum, 0, sizeof *sum);
  for (int i = 0; i < C; i++) {
    amn_client_quic_stats one;
    if (amn_client_get_quic_stats(cl[i].c, &one) != 0) continue;
    uint64_t *d = (uint64_t *)sum;
    const uint64_t *v = (const uint64_t *)&one;
    for (size_t k = 0; k < sizeof one / sizeof(uint64_t); k++) d[k] += v[k];
  }
}

/* --new-connection: every call opens its own connection (and closes it
 * when it ended), none kept open in advance; --resume (HTTP/3) keeps the
 * session ticket for the next connection, and its calls may go as 0-RTT
 * data. */
static void b_new_conn_setup(cli *o, net *n) {
  if (o->resume && n->copts.transport != AMN_TRANSPORT_H3)
    die("--resume: TLS session resumption is only over HTTP/3 (--transport h3); HTTP/2 connections always "
        "make a full handshake");
  n->copts.max_calls_per_connection = 1;
  n->copts.pool_min_connections = 0;
  n->copts.no_resumption = !o->resume;
  if (o->resume) n->call.idempotent = true; /* 0-RTT carries idempotent calls only */
}

/* --new-connection: waits (up to 5 s) until the clients' connections have
 * closed, so that the counters include the last handshakes (a 0-RTT
 * connection closes once its handshake is confirmed, after its call). */
static void b_wait_closed(bclient *cl, int C) {
  uint64_t until = now_ns() + 5000000000ull;
  for (;;) {
    uint32_t open = 0;
    for (int i = 0; i < C; i++) {
      amn_endpoint_stats st[64];
      size_t k = amn_client_stats(cl[i].c, st, 64, NULL);
      for (size_t j = 0; j < k && j < 64; j++) open += st[j].connections + st[j].connecting + st[j].draining;
    }
    if (!open || now_ns() > until) return;
    usleep(2000);
  }
}

/* --resume: each client's first call (a full handshake) gets it a session
 * ticket before the run. 0, or a negative code. */
static int b_prime(bclient *bc, bench *b, const amn_call_opts *co) {
  amn_result r;
  int rc = amn_client_unary(bc->c, AMN_METHOD_EXECUTE, b->req, b->req_len, co, &r);
  if (rc) return rc;
  int code = r.code;
  amn_result_free(&r);
  return code ? AMN_EIO : 0;
}

int cmd_bench(cli *o, net *n) {
  char err[1024] = "";
  int C = (int)o->connections, M = (int)o->inflight;
  bench *b = calloc(1, sizeof *b);
  bclient *cl = calloc((size_t)C, sizeof *cl);
  bslot *slots = calloc((size_t)M, sizeof *slots);
  bcall *calls = calloc((size_t)M, sizeof *calls);
  if (!b || !cl || !slots || !calls || !(b->parked = calloc((size_t)M, sizeof *b->parked)) ||
      !(b->unparked = calloc((size_t)M, sizeof *b->unparked)))
    die_code(EX_SOFTWARE, "out of memory");
  b->stream = strcmp(o->mode, "stream") == 0;
  b->open = o->rps > 0;
  b->sign = o->sign;
  b->size = (size_t)o->size;
  b->payload = malloc(b->size ? b->size : 1);
  b->req_len = amn_pair_encoded_size(b->size, 0);
  b->req = malloc(b->req_len ? b->req_len : 1);
  if (!b->payload || !b->req) die_code(EX_SOFTWARE, "out of memory");
  for (size_t i = 0; i < b->size; i++) b->payload[i] = (uint8_t)('a' + i % 26);
  amn_pair_encode(b->req, b->payload, b->size, NULL, 0);
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->cv, NULL);
  b->limited = o->count > 0;
  atomic_init(&b->n_left, o->count);
  if (o->new_conn) b_new_conn_setup(o, n);
  /* messages up to the payload size plus framing slack */
  if (n->copts.max_send_message < b->size + 64) n->copts.max_send_message = n->copts.max_recv_message = b->size + 64;

  for (int i = 0; i < C; i++) {
    cl[i].b = b;
    amn_hist_init(&cl[i].hist);
    cl[i].c = client_new(n);
    /* --new-connection: no connection made before the calls (it would take
     * the first one); --resume: a first call gets the session ticket */
    int rc = o->new_conn ? 0 : amn_client_connect(cl[i].c, err, sizeof err);
    if (o->resume && (rc = b_prime(&cl[i], b, &n->call)) != 0)
      snprintf(err, sizeof err, "--resume: the first call failed (%s)", amn_strerror(rc));
    if (rc) {
      int code = fail_status(AMN_STATUS_UNAVAILABLE, err);
      for (int k = 0; k <= i; k++) amn_client_free(cl[k].c);
      return code;
    }
  }
  debugf("%d connection(s) established", C);
  /* a pool minimum (e.g. thousands of connections for a scale test) is
   * reached before the load starts, so that handshakes do not compete with
   * it; bounded to 120 s */
  if (n->copts.pool_min_connections > 1) {
    uint64_t t0 = now_ns();
    for (;;) {
      uint32_t ready = 0, want = 0;
      for (int i = 0; i < C; i++) {
        amn_endpoint_stats st[16];
        size_t k = amn_client_stats(cl[i].c, st, 16, NULL);
        for (size_t j = 0; j < k && j < 16; j++) {
          ready += st[j].connections;
          want += n->copts.pool_min_connections;
        }
      }
      double el = (now_ns() - t0) / 1e9;
      if (ready >= want || el > 120) {
        fprintf(stderr, PROG ": bench: %u of %u pooled connections ready after %.1f s\n", ready, want, el);
        break;
      }
      usleep(200000);
    }
  }

  /* the run: a warm-up, then --duration, or -n measured calls (--duration,
   * when given with -n, still bounds it) */
  uint64_t warm_ns = (uint64_t)(o->warmup * 1e9), dur_ns = (uint64_t)(o->duration * 1e9);
  bool by_count = o->count > 0;
  double expect_s = o->warmup + (by_count ? (b->open ? (double)o->count / o->rps : o->duration) : o->duration);
  b->seconds = (int)ceil(expect_s) + 1;
  if (by_count && !b->open) b->seconds = B_SERIES_MAX;
  if (b->seconds > B_SERIES_MAX) b->seconds = B_SERIES_MAX;
  b->series = calloc((size_t)b->seconds, sizeof *b->series);
  if (!b->series) die_code(EX_SOFTWARE, "out of memory");
  b->start = now_ns();
  b->t_measure = b->start + warm_ns;
  b->t_end = by_count && !o->duration_given ? UINT64_MAX : b->t_measure + dur_ns;
  b->period_ns = b->open ? 1e9 / o->rps : 0;
  /* every call carries a deadline so the end of the run is bounded: the
   * unary timeout, or for a stream the whole run plus 30 s */
  b->copts = n->call;
  uint32_t grace = n->timeout_ms ? n->timeout_ms : 30000;
  if (b->stream)
    b->copts.timeout_ms = by_count && !o->duration_given ? 0 : (uint32_t)((warm_ns + dur_ns) / 1000000u) + 30000u;
  else b->copts.timeout_ms = n->timeout_ms;

  bool progress = expect_s > 3;
  if (b->open) b_open_run(b, cl, C, calls, M, progress);
  else b_closed_run(b, slots, cl, C, M, progress);
  uint64_t t_sent = now_ns();

  /* wait for the calls in flight (bounded by their deadlines) */
  uint64_t limit = now_ns() + ((uint64_t)grace / 1000 + 35) * 1000000000ull;
  int stuck = 0;
  if (b->open) {
    while ((stuck = atomic_load_explicit(&b->open_out, memory_order_acquire)) > 0 && now_ns() < limit)
      sleep_until(now_ns() + B_ERROR_PAUSE_NS);
  } else {
    pthread_mutex_lock(&b->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += grace / 1000 + 35;
    while (b->active > 0 && pthread_cond_timedwait(&b->cv, &b->mu, &until) == 0) {
    }
    stuck = b->active;
    pthread_mutex_unlock(&b->mu);
  }
  if (stuck) {
    fprintf(stderr, PROG ": %d call(s) or stream(s) did not complete\n", stuck);
    atomic_fetch_add(&b->errors, (unsigned long long)stuck);
  }
  /* streams: release; clients: close (cancels whatever is left) */
  for (int i = 0; i < M; i++) {
    if (slots[i].s) amn_cstream_release(slots[i].s);
    free(slots[i].sreq);
  }
  if (o->new_conn) b_wait_closed(cl, C);
  bench_report r = {.mode = o->mode, .connections = C, .inflight = M, .size = b->size, .rate = o->rps,
                    .count = o->count, .warmup_s = o->warmup, .late_sends = b->late, .max_backlog = b->max_backlog,
                    .series = b->series};
  uint64_t retries = 0;
  r.eps = b_endpoints(cl, C, &r.neps, &retries);
  r.retries = retries;
  r.new_conn = o->new_conn;
  r.resume = o->resume;
  for (size_t j = 0; j < r.neps; j++) r.connects += r.eps[j].connects;
  b_quic_sum(cl, C, &r.quic);
  for (int i = 0; i < C; i++) amn_client_free(cl[i].c);

  amn_hist_init(&r.total);
  for (int i = 0; i < C; i++) amn_hist_merge(&r.total, &cl[i].hist);
  r.errors = atomic_load(&b->errors);
  r.first_error = r.errors && b->first_error[0] ? b->first_error : NULL;
  /* the measured window: --duration; with -n, from the end of the warm-up
   * to the last measured call's end */
  uint64_t last = atomic_load(&b->last_done);
  r.measured_s = by_count && !o->duration_given ? (last > b->t_measure ? (double)(last - b->t_measure) / 1e9 : 0)
                                                : o->duration;
  /* the series up to the last second anything was sent in */
  uint64_t span = (t_sent > b->start ? t_sent - b->start : 0) / 1000000000ull + 1;
  r.seconds = span < (uint64_t)b->seconds ? (int)span : b->seconds;
  int code = bench_report_print(o, &r);
  int fcode = bench_report_files(o, &r);
  if (r.errors) fprintf(stderr, "%s (%llu errors)\n", r.first_error ? r.first_error : "errors", r.errors);
  if (r.errors) code = r.total.count ? AMN_STATUS_UNKNOWN : AMN_STATUS_UNAVAILABLE;
  if (!code) code = fcode;
  free(r.eps);
  free(b->series);
  free(b->payload);
  free(b->req);
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv);
  free(b->parked);
  free(b->unparked);
  free(b);
  free(cl);
  free(slots);
  free(calls);
  return code;
}
