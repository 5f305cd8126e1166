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
 * "workers: abandoned a cancelled call after N ms". The pool and the handler
 * are in worker_pool.c; worker_plugin.c runs the same inside amaters-netd.
 */
#include <stdlib.h>

#include "example.h"
#include "worker_pool.h"

int main(int argc, char **argv) {
  const char *pki_dir = argc > 1 ? argv[1] : NULL;
  int nworkers = argc > 3 ? atoi(argv[3]) : 4;
  char err[512] = "";
  sigset_t stop;
  ex_block_stop_signals(&stop); /* before any thread exists: they all inherit it */

  amn_server_opts o;
  amn_server_opts_init(&o);
  o.listen = argc > 2 ? argv[2] : "127.0.0.1:7878";
  o.transport = AMN_TRANSPORT_BOTH;
  ex_tls_files files;
  amn_server *srv = NULL;
  bool workers = false;
  int ok = ex_tls_from_pki(pki_dir, "server", &o.tls, &files) == 0 && amn_server_new(&srv, &o, err, sizeof err) == 0 &&
           (workers = ex_workers_start(srv, nworkers, err, sizeof err) == 0) &&
           amn_server_start(srv, err, sizeof err) == 0;
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
  long cancelled = workers ? ex_workers_stop() : 0;
  if (srv) amn_server_free(srv);
  printf("worker_server: stopped (%ld calls cancelled)\n", cancelled);
  return ok ? 0 : 1;
}
