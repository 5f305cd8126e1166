/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * pool_client — one client over several servers.
 *
 *   pool_client PKI_DIR URL URL [URL...]
 *
 * With amn_client_opts.urls the client keeps a pool of connections per URL
 * and spreads the calls over the servers (here round robin; the default, p2c,
 * picks the less busy of two). A server that fails is ejected and retried
 * after a backoff; calls marked idempotent may be re-sent on another server
 * after UNAVAILABLE. Makes 20 Execute calls from 4 threads, then prints what
 * each server did (amn_client_stats) and exits 0 when every call succeeded
 * and every server took some.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example.h"

enum { THREADS = 4, CALLS_PER_THREAD = 5, MAX_URLS = 8 };

static amn_client *client;

/* One amn_client serves any number of threads at once. */
static void *caller(void *arg) {
  long failed = 0;
  for (int i = 0; i < CALLS_PER_THREAD; i++) {
    char q[32];
    int n = snprintf(q, sizeof q, "query %ld.%d", (long)(intptr_t)arg, i);
    amn_call_opts co = {.timeout_ms = 5000, .idempotent = true}; /* safe to re-send: no side effect */
    amn_result r;
    if (amn_client_execute(client, (const uint8_t *)q, (size_t)n, NULL, 0, &co, &r, NULL, NULL) != 0) {
      failed++;
      continue;
    }
    if (r.code != AMN_STATUS_OK) fprintf(stderr, "pool_client: %s: %s\n", amn_status_name(r.code), r.message), failed++;
    amn_result_free(&r);
  }
  return (void *)failed;
}

/* amn_client_connect starts connecting to every URL and returns when the
 * first is ready; then watch the pool's state until each URL is ready (or
 * failing), for at most the connect timeout. */
static int wait_all_ready(size_t urls) {
  char err[512];
  if (amn_client_connect(client, err, sizeof err) != 0) return fprintf(stderr, "pool_client: %s\n", err), -1;
  for (int tick = 0; tick < 1000; tick++) { /* 10 s in steps of 10 ms */
    amn_endpoint_stats st[MAX_URLS];
    size_t n = amn_client_stats(client, st, MAX_URLS, NULL), ready = 0;
    for (size_t i = 0; i < n && i < MAX_URLS; i++) ready += st[i].state == AMN_EP_READY;
    if (ready == urls) return 0;
    nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc < 4 || argc - 2 > MAX_URLS) return fprintf(stderr, "usage: pool_client PKI_DIR URL URL [URL...]\n"), 2;
  char err[512] = "";
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.urls = (const char *const *)&argv[2]; /* copied by amn_client_new */
  o.url_count = (size_t)(argc - 2);
  o.lb_policy = AMN_LB_ROUND_ROBIN;
  o.pool_max_connections = 2; /* per URL */
  ex_tls_files files;
  if (ex_tls_from_pki(argv[1], "client", &o.tls, &files) != 0) return 1;
  if (amn_client_new(&client, &o, err, sizeof err) != 0) return fprintf(stderr, "pool_client: %s\n", err), 1;
  /* Optional warm-up: connections are otherwise opened by the first calls,
   * and calls go only to servers whose connection is ready. */
  if (wait_all_ready(o.url_count) != 0) fprintf(stderr, "pool_client: not every server is ready; going on\n");

  pthread_t t[THREADS];
  for (long i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, caller, (void *)(intptr_t)i);
  long failed = 0;
  for (int i = 0; i < THREADS; i++) {
    void *f;
    pthread_join(t[i], &f);
    failed += (long)(intptr_t)f;
  }

  /* Per URL: state, connections, calls that succeeded or failed. */
  amn_endpoint_stats st[MAX_URLS];
  uint64_t retries = 0;
  size_t n = amn_client_stats(client, st, MAX_URLS, &retries);
  int idle_servers = 0;
  for (size_t i = 0; i < n && i < MAX_URLS; i++) {
    printf("pool_client: %s: %llu ok, %llu failed, %u connection(s)\n", st[i].url,
           (unsigned long long)st[i].calls_ok, (unsigned long long)st[i].calls_failed, st[i].connections);
    idle_servers += st[i].calls_ok == 0;
  }
  printf("pool_client: %d calls, %ld failed, %llu re-sent\n", THREADS * CALLS_PER_THREAD, failed,
         (unsigned long long)retries);
  amn_client_free(client);
  return failed == 0 && idle_servers == 0 ? 0 : 1;
}
