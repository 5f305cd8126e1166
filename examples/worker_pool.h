/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The worker pool of the examples: the handler of Execute hands each query to
 * a pool of threads, which answer later.
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
#ifndef AMN_EXAMPLE_WORKER_POOL_H
#define AMN_EXAMPLE_WORKER_POOL_H

#include <amn/amn.h>

#define EX_WORKERS_MAX 64

/* Registers the handler of Execute on a server that has not started and
 * starts n worker threads (1..EX_WORKERS_MAX). Returns 0, or -1 with the
 * reason in err. One pool per process. */
int ex_workers_start(amn_server *srv, int n, char *err, size_t errlen);

/* After the server stopped (amn_server_stop, or amaters-netd's drain): the
 * workers finish or abandon what is queued and exit. Returns the number of
 * calls that were cancelled. Call it before amn_server_free. */
long ex_workers_stop(void);

#endif
