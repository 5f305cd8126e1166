/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * poolload — load through one pooled amaters-net client for the failover
 * tests: T threads issue blocking Execute calls with unique queries
 * ("PREFIX-T-I:i" for idempotent calls, ":n" for the others; every
 * --idempotent-every-th call is idempotent) until --duration ms, then write
 * "query idempotent status" per call to --out and print a summary plus the
 * client's per-endpoint statistics. A call that never completes is caught by
 * the watchdog (the process dies with SIGALRM: exit status 142).
 * usage: poolload --urls U1,U2,... (--pki-dir DIR | --insecure) --out FILE
 *        [--threads T] [--duration MS] [--timeout MS] [--prefix P] [--slow]
 *        [--idempotent-every K] [--backoff-ms B] [--lb p2c|rr] [--min-conns N] [--transport h2|h3|auto]
 *        [--keepalive-ms MS]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amn/amn.h"

static amn_client *g_cl;
static double g_end_ms;
static int g_idem_every = 2, g_timeout = 10000, g_slow;
static const char *g_prefix = "c";

typedef struct rec {
  char q[96];
  int idem, status;
} rec;

typedef struct worker {
  pthread_t t;
  int idx;
  rec *r;
  size_t n, cap;
} worker;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *run(void *arg) {
  worker *w = arg;
  for (int i = 0; now_ms() < g_end_ms; i++) {
    if (w->n == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 1024;
      w->r = realloc(w->r, w->cap * sizeof *w->r);
    }
    rec *r = &w->r[w->n++];
    r->idem = g_idem_every > 0 && i % g_idem_every == 0;
    snprintf(r->q, sizeof r->q, "%s-%d-%d:%c%s", g_prefix, w->idx, i, r->idem ? 'i' : 'n', g_slow ? "@slow" : "");
    amn_call_opts co = {0};
    co.timeout_ms = (uint32_t)g_timeout;
    co.idempotent = r->idem;
    amn_result res;
    int rc = amn_client_execute(g_cl, (const uint8_t *)r->q, strlen(r->q), NULL, 0, &co, &res, NULL, NULL);
    r->status = rc ? -1 : (int)res.code;
    if (!rc && res.code == AMN_STATUS_OK && (res.len != strlen(r->q) || memcmp(res.data, r->q, res.len) != 0))
      r->status = 100; /* wrong answer */
    if (!rc && res.code != AMN_STATUS_OK && res.code != AMN_STATUS_UNAVAILABLE)
      fprintf(stderr, "poolload: %s: %s: %s\n", r->q, amn_status_name(res.code), res.message);
    if (!rc) amn_result_free(&res);
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *urls = NULL, *pki = NULL, *out = NULL, *lb = "p2c", *transport = "h2";
  int threads = 6, duration = 5000, insecure = 0, backoff = 200, min_conns = 1, keepalive = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--urls")) urls = v, i++;
    else if (!strcmp(a, "--pki-dir")) pki = v, i++;
    else if (!strcmp(a, "--insecure")) insecure = 1;
    else if (!strcmp(a, "--out")) out = v, i++;
    else if (!strcmp(a, "--threads")) threads = atoi(v), i++;
    else if (!strcmp(a, "--duration")) duration = atoi(v), i++;
    else if (!strcmp(a, "--timeout")) g_timeout = atoi(v), i++;
    else if (!strcmp(a, "--prefix")) g_prefix = v, i++;
    else if (!strcmp(a, "--slow")) g_slow = 1;
    else if (!strcmp(a, "--idempotent-every")) g_idem_every = atoi(v), i++;
    else if (!strcmp(a, "--backoff-ms")) backoff = atoi(v), i++;
    else if (!strcmp(a, "--lb")) lb = v, i++;
    else if (!strcmp(a, "--min-conns")) min_conns = atoi(v), i++;
    else if (!strcmp(a, "--transport")) transport = v, i++;
    else if (!strcmp(a, "--keepalive-ms")) keepalive = atoi(v), i++;
    else {
      fprintf(stderr, "poolload: unknown option %s\n", a);
      return 2;
    }
  }
  if (!urls || !out || (!pki && !insecure) || threads < 1 || threads > 256) {
    fprintf(stderr, "poolload: --urls, --out and --pki-dir (or --insecure) are required\n");
    return 2;
  }
  char *list = strdup(urls), *save = NULL;
  const char *u[64];
  size_t nu = 0;
  for (char *t = strtok_r(list, ",", &save); t && nu < 64; t = strtok_r(NULL, ",", &save)) u[nu++] = t;
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.urls = u;
  o.url_count = nu;
  o.connect_timeout_ms = 2000;
  o.backoff_base_ms = (uint32_t)backoff;
  o.backoff_max_ms = (uint32_t)backoff * 4;
  o.pool_min_connections = (uint32_t)min_conns;
  o.keepalive_interval_ms = (uint32_t)keepalive;
  o.lb_policy = strcmp(lb, "rr") == 0 ? AMN_LB_ROUND_ROBIN : AMN_LB_P2C;
  o.transport = !strcmp(transport, "h3") ? AMN_TRANSPORT_H3 : !strcmp(transport, "auto") ? AMN_TRANSPORT_AUTO
                                                                                          : AMN_TRANSPORT_H2;
  static char storage[3 * 4096];
  if (insecure) o.tls.insecure = true;
  else if (amn_pki_paths(pki, "client", &o.tls, storage, sizeof storage) != 0) return 2;
  char err[512];
  if (amn_client_new(&g_cl, &o, err, sizeof err) != 0) {
    fprintf(stderr, "poolload: %s\n", err);
    return 2;
  }
  alarm((unsigned)(duration / 1000 + g_timeout / 1000 + 30)); /* a hung call kills us */
  g_end_ms = now_ms() + duration;
  worker *w = calloc((size_t)threads, sizeof *w);
  for (int i = 0; i < threads; i++) {
    w[i].idx = i;
    pthread_create(&w[i].t, NULL, run, &w[i]);
  }
  size_t total = 0, ok = 0, unavail = 0, other = 0, idem_failed = 0;
  FILE *f = fopen(out, "w");
  for (int i = 0; i < threads; i++) {
    pthread_join(w[i].t, NULL);
    for (size_t k = 0; k < w[i].n; k++) {
      rec *r = &w[i].r[k];
      fprintf(f, "%s %d %d\n", r->q, r->idem, r->status);
      total++;
      if (r->status == 0) ok++;
      else if (r->status == AMN_STATUS_UNAVAILABLE) unavail++;
      else other++;
      if (r->status != 0 && r->idem) idem_failed++;
    }
    free(w[i].r);
  }
  fclose(f);
  printf("calls=%zu ok=%zu unavailable=%zu other=%zu idempotent_failed=%zu\n", total, ok, unavail, other, idem_failed);
  amn_endpoint_stats st[64];
  uint64_t retries = 0;
  size_t n = amn_client_stats(g_cl, st, 64, &retries);
  static const char *const states[] = {"idle", "connecting", "ready", "ejected", "removed"};
  for (size_t i = 0; i < n && i < 64; i++)
    printf("endpoint %s state=%s transport=%s connections=%u started=%llu ok=%llu failed=%llu connects=%llu "
           "connect_failures=%llu\n",
           st[i].url, states[st[i].state],
           st[i].transport == AMN_TRANSPORT_H3 ? "h3" : st[i].transport == AMN_TRANSPORT_H2 ? "h2" : "-",
           st[i].connections, (unsigned long long)st[i].calls_started,
           (unsigned long long)st[i].calls_ok, (unsigned long long)st[i].calls_failed,
           (unsigned long long)st[i].connects, (unsigned long long)st[i].connect_failures);
  printf("retries=%llu\n", (unsigned long long)retries);
  amn_client_free(g_cl);
  free(w);
  free(list);
  return 0;
}
