/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-cli: bench, the load generator. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_hist.h"

#include "cli.h"

typedef struct bench bench;

typedef struct bclient {
  amn_client *c;
  amn_hist hist; /* written only by this client's I/O thread */
  bench *b;
} bclient;

typedef struct bslot {
  bclient *bc;
  bench *b;
  uint64_t t_send;
  amn_cstream *s;
  bool half_closed; /* stream: we ended it */
  bool want_send;   /* stream: a send got AMN_EAGAIN */
  uint8_t *sreq;    /* --sign, unary: this slot's signed QueryRequest (a new signature per call) */
} bslot;

struct bench {
  bool stream;
  bool sign; /* --sign: every query signed (stream: by the library in amn_cstream_send) */
  size_t size;
  uint8_t *payload, *req; /* payload; encoded QueryRequest */
  size_t req_len;
  uint64_t t_measure, t_end; /* monotonic ns, fixed before the first call */
  amn_call_opts copts;
  atomic_ullong ok_total, errors;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int active; /* slots still running (under mu) */
  bslot **parked; /* unary slots whose call failed, re-sent by the main thread after a pause (under mu) */
  bslot **unparked; /* the main thread's copy of them */
  int nparked;
  bool over; /* the run is over: no more parking (under mu) */
  char first_error[512];
};

#define B_ERROR_PAUSE_NS 10000000ull /* a slot whose call failed sends again after 10 ms */

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
  if (sl->t_send >= b->t_measure && now <= b->t_end) amn_hist_record(&sl->bc->hist, now - sl->t_send);
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
    more = now < b->t_end;
  } else if (!b_check(b, res->data, res->len)) {
    b_error(b, AMN_STATUS_DATA_LOSS, "the echoed payload differs from the request");
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

static void json_num(FILE *f, const char *key, double v, bool last) {
  fprintf(f, "\"%s\":%.1f%s", key, v, last ? "" : ",");
}

int cmd_bench(cli *o, net *n) {
  char err[1024] = "";
  int C = (int)o->connections, M = (int)o->inflight;
  bench *b = calloc(1, sizeof *b);
  bclient *cl = calloc((size_t)C, sizeof *cl);
  bslot *slots = calloc((size_t)M, sizeof *slots);
  if (!b || !cl || !slots || !(b->parked = calloc((size_t)M, sizeof *b->parked)) ||
      !(b->unparked = calloc((size_t)M, sizeof *b->unparked)))
    die("out of memory");
  b->stream = strcmp(o->mode, "stream") == 0;
  b->sign = o->sign;
  b->size = (size_t)o->size;
  b->payload = malloc(b->size ? b->size : 1);
  b->req_len = amn_pair_encoded_size(b->size, 0);
  b->req = malloc(b->req_len ? b->req_len : 1);
  if (!b->payload || !b->req) die("out of memory");
  for (size_t i = 0; i < b->size; i++) b->payload[i] = (uint8_t)('a' + i % 26);
  amn_pair_encode(b->req, b->payload, b->size, NULL, 0);
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->cv, NULL);
  /* messages up to the payload size plus framing slack */
  if (n->copts.max_send_message < b->size + 64) n->copts.max_send_message = n->copts.max_recv_message = b->size + 64;

  for (int i = 0; i < C; i++) {
    cl[i].b = b;
    amn_hist_init(&cl[i].hist);
    cl[i].c = client_new(n);
    int rc = amn_client_connect(cl[i].c, err, sizeof err);
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

  uint64_t start = now_ns();
  uint64_t warm_ns = (uint64_t)(o->warmup * 1e9), dur_ns = (uint64_t)(o->duration * 1e9);
  b->t_measure = start + warm_ns;
  b->t_end = b->t_measure + dur_ns;
  /* every call carries a deadline so the end of the run is bounded: the
   * unary timeout, or for a stream the whole run plus 30 s */
  b->copts = n->call;
  uint32_t grace = n->timeout_ms ? n->timeout_ms : 30000;
  if (b->stream) b->copts.timeout_ms = (uint32_t)((warm_ns + dur_ns) / 1000000u) + 30000u;
  else b->copts.timeout_ms = n->timeout_ms;
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

  /* progress once per second for runs longer than 3 s */
  bool progress = o->warmup + o->duration > 3;
  unsigned long long last_ok = 0;
  for (int sec = 1;; sec++) {
    uint64_t tick = start + (uint64_t)sec * 1000000000ull, now = now_ns();
    if (tick > b->t_end) tick = b->t_end;
    while (tick > now) { /* slots parked after a failure go again every 10 ms */
      uint64_t step = tick - now < B_ERROR_PAUSE_NS ? tick - now : B_ERROR_PAUSE_NS;
      struct timespec ts = {(time_t)(step / 1000000000ull), (long)(step % 1000000000ull)};
      while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
      }
      now = now_ns();
      if (now < b->t_end) b_unpark(b, false);
    }
    if (tick >= b->t_end) break;
    if (progress) {
      unsigned long long okc = atomic_load(&b->ok_total);
      fprintf(stderr, PROG ": bench [%3ds%s] %llu calls/s, %llu errors\n", sec, tick <= b->t_measure ? " warm-up" : "",
              okc - last_ok, (unsigned long long)atomic_load(&b->errors));
      last_ok = okc;
    }
  }

  /* wait for the calls in flight (bounded by their deadlines) */
  pthread_mutex_lock(&b->mu);
  b->over = true;
  pthread_mutex_unlock(&b->mu);
  b_unpark(b, true);
  pthread_mutex_lock(&b->mu);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += grace / 1000 + 35;
  while (b->active > 0 && pthread_cond_timedwait(&b->cv, &b->mu, &until) == 0) {
  }
  int stuck = b->active;
  pthread_mutex_unlock(&b->mu);
  if (stuck) {
    fprintf(stderr, PROG ": %d call(s) or stream(s) did not complete\n", stuck);
    atomic_fetch_add(&b->errors, (unsigned long long)stuck);
  }
  /* streams: release; clients: close (cancels whatever is left) */
  for (int i = 0; i < M; i++) {
    if (slots[i].s) amn_cstream_release(slots[i].s);
    free(slots[i].sreq);
  }
  /* calls and failures per URL, summed over the clients (warm-up included) */
  size_t neps = amn_client_stats(cl[0].c, NULL, 0, NULL); /* URLs, or their addresses (spread_addresses) */
  amn_endpoint_stats *eps = calloc(neps ? neps : 1, sizeof *eps), *one = calloc(neps ? neps : 1, sizeof *one);
  char(*names)[600] = calloc(neps ? neps : 1, sizeof *names); /* the clients go before the summary */
  uint64_t retries = 0;
  if (!eps || !one || !names) die("out of memory");
  for (int i = 0; i < C; i++) {
    uint64_t r = 0;
    size_t k = amn_client_stats(cl[i].c, one, neps, &r);
    retries += r;
    for (size_t j = 0; j < k && j < neps; j++) {
      eps[j].calls_started += one[j].calls_started;
      eps[j].calls_ok += one[j].calls_ok;
      eps[j].calls_failed += one[j].calls_failed;
      eps[j].connects += one[j].connects;
      eps[j].connect_failures += one[j].connect_failures;
      if (!eps[j].transport) eps[j].transport = one[j].transport;
      if (names) snprintf(names[j], sizeof names[j], "%s", one[j].url);
    }
  }
  free(one);
  for (int i = 0; i < C; i++) amn_client_free(cl[i].c);

  amn_hist h;
  amn_hist_init(&h);
  for (int i = 0; i < C; i++) amn_hist_merge(&h, &cl[i].hist);
  unsigned long long errors = atomic_load(&b->errors);
  double qps = (double)h.count / o->duration;
  double mbps = qps * 2.0 * (double)b->size / 1e6;
  double p50 = amn_hist_percentile(&h, 0.50) / 1e3, p90 = amn_hist_percentile(&h, 0.90) / 1e3;
  double p99 = amn_hist_percentile(&h, 0.99) / 1e3, p999 = amn_hist_percentile(&h, 0.999) / 1e3;
  double mx = (double)h.max / 1e3, mn = h.count ? (double)h.min / 1e3 : 0, mean = amn_hist_mean(&h) / 1e3;
  if (o->json) {
    FILE *f = stdout;
    fprintf(f, "{\"mode\":\"%s\",\"connections\":%d,\"inflight\":%d,\"size\":%zu,", o->mode, C, M, b->size);
    json_num(f, "duration_s", o->duration, false);
    json_num(f, "warmup_s", o->warmup, false);
    fprintf(f, "\"calls\":%llu,\"errors\":%llu,\"qps\":%.1f,\"mb_per_s\":%.3f,", (unsigned long long)h.count, errors,
            qps, mbps);
    json_num(f, "min_us", mn, false);
    json_num(f, "mean_us", mean, false);
    json_num(f, "p50_us", p50, false);
    json_num(f, "p90_us", p90, false);
    json_num(f, "p99_us", p99, false);
    json_num(f, "p999_us", p999, false);
    json_num(f, "max_us", mx, false);
    fprintf(f, "\"retries\":%llu,\"endpoints\":[", (unsigned long long)retries);
    for (size_t j = 0; j < neps; j++) {
      fputs(j ? ",{\"url\":" : "{\"url\":", f);
      json_str(f, (const uint8_t *)names[j], strlen(names[j]));
      fprintf(f, ",\"transport\":\"%s\",\"calls\":%llu,\"ok\":%llu,\"failed\":%llu,\"connects\":%llu,"
                 "\"connect_failures\":%llu}",
              tp_name(eps[j].transport), (unsigned long long)eps[j].calls_started, (unsigned long long)eps[j].calls_ok,
              (unsigned long long)eps[j].calls_failed, (unsigned long long)eps[j].connects,
              (unsigned long long)eps[j].connect_failures);
    }
    fputs("],\"first_error\":", f);
    if (errors && b->first_error[0]) json_str(f, (const uint8_t *)b->first_error, strlen(b->first_error));
    else fputs("null", f);
    fputs("}\n", f);
  } else {
    printf("bench %s: %d connection%s, %d in flight, %zu-byte payload, %.1f s measured after %.1f s warm-up\n",
           o->mode, C, C > 1 ? "s" : "", M, b->size, o->duration, o->warmup);
    printf("  calls    %llu (%.1f/s), errors %llu, %.3f MB/s payload both ways\n", (unsigned long long)h.count, qps,
           errors, mbps);
    printf("  latency  min %.1f  mean %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (us)\n", mn, mean,
           p50, p90, p99, p999, mx);
    for (size_t j = 0; j < neps; j++)
      printf("  %s  %s, %llu calls (%llu ok, %llu failed), %llu connection%s, %llu connect failure%s\n", names[j],
             tp_name(eps[j].transport), (unsigned long long)eps[j].calls_started, (unsigned long long)eps[j].calls_ok,
             (unsigned long long)eps[j].calls_failed, (unsigned long long)eps[j].connects,
             eps[j].connects == 1 ? "" : "s", (unsigned long long)eps[j].connect_failures,
             eps[j].connect_failures == 1 ? "" : "s");
    if (retries) printf("  retries  %llu call attempt%s re-sent\n", (unsigned long long)retries, retries == 1 ? "" : "s");
    if (errors && b->first_error[0]) printf("  first error: %s\n", b->first_error);
  }
  free(eps);
  free(names);
  fflush(stdout);
  int code = 0;
  if (errors) fprintf(stderr, "%s (%llu errors)\n", b->first_error[0] ? b->first_error : "errors", errors);
  if (errors) code = h.count ? AMN_STATUS_UNKNOWN : AMN_STATUS_UNAVAILABLE;
  free(b->payload);
  free(b->req);
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv);
  free(b->parked);
  free(b->unparked);
  free(b);
  free(cl);
  free(slots);
  return code;
}

