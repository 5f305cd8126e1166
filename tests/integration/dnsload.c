/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * dnsload — load through one pooled client whose URL names a host that a
 * test's DNS server answers for (integration.dns): up to --inflight
 * asynchronous grpc.health.v1 Check calls at a time, a new one --pace-us
 * after the previous one was issued (load pacing: the main thread issues,
 * the completions free a place), until the file --stop exists (or --max-ms). Writes "TIME STATUS"
 * per completed call to --out (TIME: CLOCK_REALTIME seconds, to compare
 * with the DNS server's own event times) and prints a JSON summary: calls,
 * failed, the first failure, and the client's endpoints.
 * usage: dnsload --url U --pki-dir DIR --server-name N --dns-server S --out FILE --stop FILE
 *        [--inflight K] [--pace-us US] [--transport h2|h3] [--refresh-min-ms MS] [--max-ms MS]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amn/amn.h"

static amn_client *g_cl;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_active;
static struct {
  double t;
  int status;
} *g_rec;
static size_t g_n, g_cap, g_failed;
static char g_first_error[300];

static double now_real(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void done(const amn_result *r, void *ud) {
  (void)ud;
  double t = now_real();
  pthread_mutex_lock(&g_mu);
  if (g_n == g_cap) {
    g_cap = g_cap ? g_cap * 2 : 4096;
    g_rec = realloc(g_rec, g_cap * sizeof *g_rec);
    if (!g_rec) abort();
  }
  g_rec[g_n].t = t;
  g_rec[g_n++].status = r->code;
  if (r->code != AMN_STATUS_OK && g_failed++ == 0)
    snprintf(g_first_error, sizeof g_first_error, "%s: %s", amn_status_name(r->code), r->message ? r->message : "");
  g_active--;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
}

/* Main thread: one more call once fewer than `inflight` are in flight. */
static void issue(int inflight) {
  pthread_mutex_lock(&g_mu);
  while (g_active >= inflight) pthread_cond_wait(&g_cv, &g_mu);
  g_active++;
  pthread_mutex_unlock(&g_mu);
  amn_call_opts co = {.timeout_ms = 10000};
  if (amn_client_unary_async(g_cl, "/grpc.health.v1.Health/Check", NULL, 0, &co, done, NULL) != 0) {
    pthread_mutex_lock(&g_mu);
    g_failed++;
    g_active--;
    pthread_mutex_unlock(&g_mu);
  }
}

int main(int argc, char **argv) {
  const char *url = NULL, *pki = NULL, *sni = NULL, *dns = NULL, *out = NULL, *stop = NULL, *tp = "h2";
  int inflight = 8, refresh_min = 200, max_ms = 120000, pace_us = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--url")) url = v;
    else if (!strcmp(k, "--pki-dir")) pki = v;
    else if (!strcmp(k, "--server-name")) sni = v;
    else if (!strcmp(k, "--dns-server")) dns = v;
    else if (!strcmp(k, "--out")) out = v;
    else if (!strcmp(k, "--stop")) stop = v;
    else if (!strcmp(k, "--transport")) tp = v;
    else if (!strcmp(k, "--inflight")) inflight = atoi(v);
    else if (!strcmp(k, "--pace-us")) pace_us = atoi(v);
    else if (!strcmp(k, "--refresh-min-ms")) refresh_min = atoi(v);
    else if (!strcmp(k, "--max-ms")) max_ms = atoi(v);
    else {
      fprintf(stderr, "dnsload: unknown option %s\n", k);
      return 2;
    }
  }
  if (!url || !pki || !out || !stop || inflight < 1 || inflight > 1000) {
    fprintf(stderr, "dnsload: --url, --pki-dir, --out and --stop are required\n");
    return 2;
  }
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.url = url;
  o.spread_addresses = true;
  o.dns_servers = dns;
  o.dns_refresh_min_ms = (uint32_t)refresh_min;
  o.connect_timeout_ms = 2000;
  o.backoff_base_ms = 200;
  o.transport = strcmp(tp, "h3") == 0 ? AMN_TRANSPORT_H3 : AMN_TRANSPORT_H2;
  static char storage[3 * 4096];
  if (amn_pki_paths(pki, "client", &o.tls, storage, sizeof storage) != 0) return 2;
  o.tls.server_name = sni;
  char err[512];
  if (amn_client_new(&g_cl, &o, err, sizeof err) != 0) {
    fprintf(stderr, "dnsload: %s\n", err);
    return 2;
  }
  alarm((unsigned)(max_ms / 1000 + 60)); /* a hung call kills us */
  double end = now_real() + max_ms / 1000.0;
  for (unsigned long k = 0; now_real() < end; k++) {
    if (k % 64 == 0 && access(stop, F_OK) == 0) break; /* the test's signal to stop */
    issue(inflight);
    if (pace_us > 0) usleep((useconds_t)pace_us);
  }
  pthread_mutex_lock(&g_mu);
  while (g_active > 0) pthread_cond_wait(&g_cv, &g_mu);
  pthread_mutex_unlock(&g_mu);
  FILE *f = fopen(out, "w");
  if (!f) return 2;
  for (size_t i = 0; i < g_n; i++) fprintf(f, "%.6f %d\n", g_rec[i].t, g_rec[i].status);
  fclose(f);
  amn_endpoint_stats st[64];
  size_t n = amn_client_stats(g_cl, st, 64, NULL);
  static const char *const states[] = {"idle", "connecting", "ready", "ejected", "removed"};
  printf("{\"calls\":%zu,\"failed\":%zu,\"first_error\":\"", g_n, g_failed);
  for (const char *p = g_first_error; *p; p++)
    if (*p != '"' && *p != '\\') putchar(*p);
  printf("\",\"endpoints\":[");
  for (size_t i = 0; i < n && i < 64; i++)
    printf("%s{\"url\":\"%s\",\"state\":\"%s\",\"ok\":%llu,\"failed\":%llu,\"connections\":%u,\"draining\":%u}",
           i ? "," : "", st[i].url, states[st[i].state], (unsigned long long)st[i].calls_ok,
           (unsigned long long)st[i].calls_failed, st[i].connections, st[i].draining);
  printf("]}\n");
  amn_client_free(g_cl);
  free(g_rec);
  return 0;
}
