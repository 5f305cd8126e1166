/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The worker pool of the examples (see worker_pool.h). */
#include "worker_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One queued query. For a unary method the request bytes stay valid until
 * the call is finished, so the job points into them without copying. */
typedef struct job {
  amn_call *call;
  const uint8_t *query;
  size_t query_len;
  long work_ms;
  struct job *next;
} job;

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *head, **tail;
  bool stopping;
  atomic_long cancelled; /* calls whose on_cancel ran */
  pthread_t threads[EX_WORKERS_MAX];
  int nthreads;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &pool.head, false, 0, {0}, 0};

static long work_ms_of(amn_call *call) {
  const amn_md *md = amn_metadata_get(amn_call_metadata(call), "x-work-ms");
  if (!md) return 20;
  char buf[16] = "";
  memcpy(buf, md->value, md->value_len < sizeof buf - 1 ? md->value_len : sizeof buf - 1);
  long v = strtol(buf, NULL, 10);
  return v < 0 ? 0 : v > 600000 ? 600000 : v;
}

/* --- loop thread: the raw handler of /amaters.v1.AmateRS/Execute --------- */

static void on_message(amn_call *call, const uint8_t *msg, size_t len, void *ud) {
  (void)ud;
  amn_pair_view req; /* QueryRequest { query_bytes = 1; client_signature = 2; } */
  if (amn_pair_decode(msg, len, &req) != 0) {
    amn_call_finish(call, AMN_STATUS_INVALID_ARGUMENT, "malformed QueryRequest");
    return;
  }
  job *j = malloc(sizeof *j);
  if (!j) {
    amn_call_finish(call, AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  *j = (job){.call = call, .query = req.f1, .query_len = req.f1_len, .work_ms = work_ms_of(call)};
  pthread_mutex_lock(&pool.mu);
  *pool.tail = j;
  pool.tail = &j->next;
  pthread_cond_signal(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
}

/* Runs on the loop thread when the call ends before it was answered. The
 * worker that holds the call (or will pick it up) sees
 * amn_call_is_cancelled() and finishes it; nothing else to do here. */
static void on_cancel(amn_call *call, amn_status_code why, void *ud) {
  (void)call, (void)ud;
  atomic_fetch_add(&pool.cancelled, 1);
  fprintf(stderr, "workers: a call was cancelled (%s)\n", amn_status_name(why));
}

/* --- worker threads --------------------------------------------------------- */

static void run_job(job *j) {
  struct timespec step = {0, 10 * 1000 * 1000};
  long done = 0;
  for (; done < j->work_ms; done += 10) { /* the expensive part, in slices */
    if (amn_call_is_cancelled(j->call)) {
      printf("workers: abandoned a cancelled call after %ld ms\n", done);
      fflush(stdout);
      amn_call_finish(j->call, AMN_STATUS_CANCELLED, NULL); /* sends nothing; releases the call */
      return;
    }
    nanosleep(&step, NULL); /* stands for a slice of real computation */
  }
  uint8_t *out = malloc(j->query_len ? j->query_len : 1);
  if (!out) {
    amn_call_finish(j->call, AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  for (size_t i = 0; i < j->query_len; i++)
    out[i] = (uint8_t)(j->query[i] >= 'a' && j->query[i] <= 'z' ? j->query[i] - 'a' + 'A' : j->query[i]);
  /* From this thread, at any time: encodes the QueryResponse, queues it and
   * finishes the call with OK (AMN_ECLOSED if it was cancelled meanwhile; the
   * call is released either way). */
  amn_call_reply_query(j->call, out, j->query_len, NULL, 0);
  free(out);
}

static void *worker(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&pool.mu);
    while (!pool.head && !pool.stopping) pthread_cond_wait(&pool.cv, &pool.mu);
    job *j = pool.head;
    if (j && !(pool.head = j->next)) pool.tail = &pool.head;
    pthread_mutex_unlock(&pool.mu);
    if (!j) return NULL; /* stopping and nothing left */
    run_job(j);
    free(j);
  }
}

int ex_workers_start(amn_server *srv, int n, char *err, size_t errlen) {
  if (n < 1 || n > EX_WORKERS_MAX) return snprintf(err, errlen, "workers must be 1..%d, not %d", EX_WORKERS_MAX, n), -1;
  /* A raw handler (amn_server_register) rather than amn_server_set_execute:
   * it has on_cancel. client_streaming false: Execute is unary. */
  amn_handler h = {.on_message = on_message, .on_cancel = on_cancel, .client_streaming = false};
  int rc = amn_server_register(srv, AMN_METHOD_EXECUTE, &h);
  if (rc) return snprintf(err, errlen, "cannot register Execute: %s", amn_strerror(rc)), -1;
  pool.stopping = false;
  for (pool.nthreads = 0; pool.nthreads < n; pool.nthreads++)
    if (pthread_create(&pool.threads[pool.nthreads], NULL, worker, NULL) != 0) {
      snprintf(err, errlen, "cannot start worker thread %d", pool.nthreads + 1);
      ex_workers_stop();
      return -1;
    }
  return 0;
}

long ex_workers_stop(void) {
  /* Let the workers finish (or abandon) what is queued, then stop them:
   * every call must be finished before amn_server_free. */
  pthread_mutex_lock(&pool.mu);
  pool.stopping = true;
  pthread_cond_broadcast(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  for (int i = 0; i < pool.nthreads; i++) pthread_join(pool.threads[i], NULL);
  pool.nthreads = 0;
  return atomic_load(&pool.cancelled);
}
