/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * worker_server — handlers that hand the work to a pool of threads.
 *
 *   worker_server [PKI_DIR [HOST:PORT [WORKERS]]]
 *
 * Handlers run on the server's event-loop threads and must never block. A
 * query that takes long to evaluate (an FHE computation) therefore goes to
 * the application's own threads, which answer later: amn_call_reply_query
 * and amn_call_finish may be called from any thread. Meanwhile the client may
 * give up (cancel, deadline, lost connection): the library then calls the
 * handler's on_cancel, and amn_call_is_cancelled() turns true, so a worker
 * stops wasting time on a call nobody waits for. Every call is finished
 * exactly once, cancelled or not.
 *
 * The "evaluation" here upper-cases the query and takes x-work-ms
 * milliseconds (request metadata; default 20), in 10 ms steps between which
 * the worker checks for cancellation. Each abandoned call prints a line
 * "worker_server: abandoned a cancelled call after N ms".
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example.h"

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
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, &pool.head, false, 0};

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
  fprintf(stderr, "worker_server: a call was cancelled (%s)\n", amn_status_name(why));
}

/* --- worker threads --------------------------------------------------------- */

static void run_job(job *j) {
  struct timespec step = {0, 10 * 1000 * 1000};
  long done = 0;
  for (; done < j->work_ms; done += 10) { /* the expensive part, in slices */
    if (amn_call_is_cancelled(j->call)) {
      printf("worker_server: abandoned a cancelled call after %ld ms\n", done);
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

int main(int argc, char **argv) {
  const char *pki_dir = argc > 1 ? argv[1] : NULL;
  int nworkers = argc > 3 ? atoi(argv[3]) : 4;
  if (nworkers < 1 || nworkers > 64) return fprintf(stderr, "worker_server: WORKERS must be 1..64\n"), 2;
  char err[512] = "";
  sigset_t stop;
  ex_block_stop_signals(&stop); /* before any thread exists: they all inherit it */

  pthread_t workers[64];
  for (int i = 0; i < nworkers; i++) pthread_create(&workers[i], NULL, worker, NULL);

  amn_server_opts o;
  amn_server_opts_init(&o);
  o.listen = argc > 2 ? argv[2] : "127.0.0.1:7878";
  o.transport = AMN_TRANSPORT_BOTH;
  ex_tls_files files;
  amn_server *srv = NULL;
  /* A raw handler (amn_server_register) rather than amn_server_set_execute:
   * it has on_cancel. client_streaming false: Execute is unary. */
  amn_handler h = {.on_message = on_message, .on_cancel = on_cancel, .client_streaming = false};
  int ok = ex_tls_from_pki(pki_dir, "server", &o.tls, &files) == 0 && amn_server_new(&srv, &o, err, sizeof err) == 0 &&
           amn_server_register(srv, AMN_METHOD_EXECUTE, &h) == 0 && amn_server_start(srv, err, sizeof err) == 0;
  if (ok) {
    printf("worker_server: listening on https://localhost:%u (%d workers)\n", (unsigned)amn_server_port(srv),
           nworkers);
    fflush(stdout);
    ex_wait_stop_signal(&stop);
    /* Drain: calls in flight may finish (the workers keep answering); when
     * the drain time is over the rest are cancelled. */
    amn_server_stop(srv);
  } else {
    fprintf(stderr, "worker_server: %s\n", err);
  }
  /* Let the workers finish (or abandon) what is queued, then stop them: every
   * call must be finished before amn_server_free. */
  pthread_mutex_lock(&pool.mu);
  pool.stopping = true;
  pthread_cond_broadcast(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
  if (srv) amn_server_free(srv);
  printf("worker_server: stopped (%ld calls cancelled)\n", atomic_load(&pool.cancelled));
  return ok ? 0 : 1;
}
