/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * worker_plugin — the worker pool (worker_pool.c) as a plug-in of
 * amaters-netd: an AmateRS backend whose queries take long, evaluated on the
 * plug-in's own threads, inside the daemon.
 *
 *   amaters-netd --handler ./libamaters_worker.so --handler-arg workers=8
 *
 * The argument (--handler-arg or [server] handler_arg) is "workers=N"
 * (1..64; default 4). init starts the threads; fini, after the daemon's
 * drain, lets them finish or abandon the calls they hold and joins them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker_pool.h"

static int worker_init(amn_server *srv, const char *arg, void **state, char *err, size_t errlen) {
  (void)state;
  int n = 4;
  if (arg) {
    char *end;
    long v = strncmp(arg, "workers=", 8) == 0 ? strtol(arg + 8, &end, 10) : -1;
    if (v < 1 || v > EX_WORKERS_MAX || *end)
      return snprintf(err, errlen, "expected workers=N with N in 1..%d, got '%s'", EX_WORKERS_MAX, arg), -1;
    n = (int)v;
  }
  if (ex_workers_start(srv, n, err, errlen) != 0) return -1;
  amn_log_message(AMN_LOG_INFO, "worker_plugin", "%d worker threads", n);
  return 0;
}

static void worker_fini(void *state) {
  (void)state;
  long cancelled = ex_workers_stop();
  amn_log_message(AMN_LOG_INFO, "worker_plugin", "stopped (%ld calls cancelled)", cancelled);
}

AMN_PLUGIN_DEFINE("worker-example", "1.0", worker_init, worker_fini);
