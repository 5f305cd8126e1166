/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * idleconns — holds N idle connections of pooled amaters-net clients to one
 * server, for the tests and the bench of a server's memory per idle
 * connection. It opens N connections in pools of at most C (--per-client,
 * default 1,000: pool_min_connections = pool_max_connections, no client idle
 * timeout, no keepalive, round robin), one pool after the other, waits until
 * all are ready and prints "ready N". Then it reads commands on standard
 * input:
 *   calls SIZE COUNT   COUNT blocking Execute calls of SIZE query bytes, one
 *                      after the other, in turn over the pools (a pool hands
 *                      consecutive calls to consecutive connections: COUNT =
 *                      N is one call on each connection), each checked to
 *                      come back echoed (the daemon's echo handler); prints
 *                      "calls ok=K failed=F"
 * and exits 0 at the end of its input (closing its connections), 1 when the
 * connections do not all become ready within --timeout ms.
 * usage: idleconns --url URL --pki-dir DIR --conns N [--transport h2|h3] [--timeout MS] [--per-client C]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "amn/amn.h"

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* One Execute call of `size` bytes (the daemon's echo answers the query):
 * 0 when it came back unchanged. */
static int one_call(amn_client *cl, uint8_t *q, size_t size, unsigned seq) {
  for (size_t i = 0; i < size; i++) q[i] = (uint8_t)('a' + (i + seq) % 26);
  amn_call_opts co = {0};
  co.timeout_ms = 30000;
  amn_result res;
  if (amn_client_execute(cl, q, size, NULL, 0, &co, &res, NULL, NULL) != 0) return -1;
  int rc = res.code == AMN_STATUS_OK && res.len == size && memcmp(res.data, q, size) == 0 ? 0 : -1;
  if (res.code != AMN_STATUS_OK) fprintf(stderr, "idleconns: %s: %s\n", amn_status_name(res.code), res.message);
  amn_result_free(&res);
  return rc;
}

int main(int argc, char **argv) {
  const char *url = NULL, *pki = NULL, *transport = "h2";
  long conns = 0, timeout = 60000, per_client = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i], *v = argv[i + 1];
    if (!strcmp(a, "--url")) url = v;
    else if (!strcmp(a, "--pki-dir")) pki = v;
    else if (!strcmp(a, "--conns")) conns = atol(v);
    else if (!strcmp(a, "--transport")) transport = v;
    else if (!strcmp(a, "--timeout")) timeout = atol(v);
    else if (!strcmp(a, "--per-client")) per_client = atol(v);
    else {
      fprintf(stderr, "idleconns: unknown option %s\n", a);
      return 2;
    }
  }
  if (!url || !pki || conns < 1 || conns > 65535 || per_client < 1) {
    fprintf(stderr, "usage: idleconns --url URL --pki-dir DIR --conns N [--transport h2|h3] [--timeout MS] [--per-client C]\n");
    return 2;
  }
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.url = url;
  o.lb_policy = AMN_LB_ROUND_ROBIN;
  o.idle_timeout_ms = 0;
  o.keepalive_interval_ms = 0;
  o.max_retries = 0;
  o.transport = !strcmp(transport, "h3") ? AMN_TRANSPORT_H3 : AMN_TRANSPORT_H2;
  static char storage[3 * 4096];
  if (amn_pki_paths(pki, "client", &o.tls, storage, sizeof storage) != 0) {
    fprintf(stderr, "idleconns: no client files in %s\n", pki);
    return 2;
  }
  /* clients of at most --per-client connections, each ready before the next
   * starts: an HTTP/3 pool counts a connection that resumes with 0-RTT as
   * ready at once, so one pool of 10,000 would start nearly all their
   * handshakes together (more than a server answers within the handshake
   * timeout on two cores) */
  long nclients = (conns + per_client - 1) / per_client;
  amn_client **cls = calloc((size_t)nclients, sizeof *cls);
  size_t cap = 64;
  uint8_t *q = malloc(cap);
  if (!cls || !q) return 1;
  int rc = 0;
  unsigned seq = 0;
  for (long k = 0; k < nclients && rc == 0; k++) {
    long want = k + 1 < nclients ? per_client : conns - per_client * (nclients - 1);
    o.pool_min_connections = o.pool_max_connections = (uint32_t)want;
    char err[512];
    if (amn_client_new(&cls[k], &o, err, sizeof err) != 0) {
      fprintf(stderr, "idleconns: %s\n", err);
      rc = 2;
      break;
    }
    /* the first call puts the pool to work: it opens the minimum */
    if (one_call(cls[k], q, 64, seq++) != 0) {
      fprintf(stderr, "idleconns: the first call failed\n");
      rc = 1;
      break;
    }
    /* waits on the pool's own count of ready connections (a bounded poll:
     * the client API has no event for it) */
    double end = now_ms() + (double)timeout;
    amn_endpoint_stats st;
    for (;;) {
      amn_client_stats(cls[k], &st, 1, NULL);
      if (st.connections >= (uint32_t)want) break;
      if (now_ms() > end) {
        fprintf(stderr, "idleconns: %u of %ld connections ready after %ld ms (%u connecting; %s)\n", st.connections,
                want, timeout, st.connecting, st.last_error);
        rc = 1;
        break;
      }
      nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
  }
  if (rc == 0) {
    printf("ready %ld\n", conns);
    fflush(stdout);
  }
  char line[128];
  while (rc == 0 && fgets(line, sizeof line, stdin)) {
    unsigned long size = 0, count = 0;
    if (sscanf(line, "calls %lu %lu", &size, &count) != 2 || size > 64u << 20) {
      fprintf(stderr, "idleconns: unknown command: %s", line);
      continue;
    }
    if (size > cap) {
      uint8_t *nq = realloc(q, size);
      if (!nq) return 1;
      q = nq;
      cap = size;
    }
    /* in turn over the clients; each pool hands its calls to its
     * connections in turn */
    unsigned long ok = 0, failed = 0;
    for (unsigned long i = 0; i < count; i++) {
      if (one_call(cls[i % (unsigned long)nclients], q, size, seq++) == 0) ok++;
      else failed++;
    }
    printf("calls ok=%lu failed=%lu\n", ok, failed);
    fflush(stdout);
  }
  for (long k = 0; k < nclients; k++)
    if (cls[k]) amn_client_free(cls[k]);
  free(cls);
  free(q);
  return rc;
}
