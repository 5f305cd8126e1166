/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * lbserver — a test gRPC server (amaters-net) that records every execution:
 * each Execute request's query bytes are appended as one line to the
 * --exec-log file (one write(2) with O_APPEND, before the reply, so a kill
 * can never hide an execution). The pool tests compare these logs with what
 * the clients saw. A query containing "@slow" is answered after --delay-ms
 * (from a worker thread); one containing "@unavail" gets UNAVAILABLE the
 * first time this server sees it (the retry tests).
 * usage: lbserver --listen HOST:PORT (--pki-dir DIR | --insecure) --exec-log FILE
 *                 [--delay-ms N] [--max-connections N] [--drain-ms N] [--transport h2|h3|both]
 * SIGTERM/SIGINT: graceful stop (GOAWAY, drain), exit 0.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amn/amn.h"

static int g_log = -1;
static unsigned g_delay_ms = 200;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static char **g_seen;
static size_t g_nseen;

/* true the first time `q` is seen */
static bool first_time(const char *q) {
  pthread_mutex_lock(&g_mu);
  bool first = true;
  for (size_t i = 0; i < g_nseen && first; i++) first = strcmp(g_seen[i], q) != 0;
  char **n = first ? realloc(g_seen, (g_nseen + 1) * sizeof *g_seen) : NULL;
  if (n) {
    g_seen = n;
    g_seen[g_nseen++] = strdup(q);
  }
  pthread_mutex_unlock(&g_mu);
  return first;
}

typedef struct delayed {
  amn_call *call;
  char q[256];
} delayed;

static void *slow_reply(void *arg) {
  delayed *d = arg;
  /* simulated work, the load's shape: each "@slow" call stays in flight
   * --delay-ms (a server killed under load has calls on it); nothing
   * waits for anything here */
  usleep(g_delay_ms * 1000);
  amn_call_reply_query(d->call, (const uint8_t *)d->q, strlen(d->q), NULL, 0);
  free(d);
  return NULL;
}

static void execute(amn_call *c, const amn_query *q, void *ud) {
  (void)ud;
  char buf[256];
  size_t n = q->query_len < sizeof buf - 2 ? q->query_len : sizeof buf - 2;
  memcpy(buf, q->query_bytes, n);
  buf[n] = '\n';
  if (write(g_log, buf, n + 1) != (ssize_t)(n + 1)) perror("lbserver: exec log");
  buf[n] = 0;
  if (strstr(buf, "@unavail") && first_time(buf)) {
    amn_call_finish(c, AMN_STATUS_UNAVAILABLE, "lbserver: not this time");
    return;
  }
  if (strstr(buf, "@slow")) {
    delayed *d = malloc(sizeof *d);
    d->call = c;
    snprintf(d->q, sizeof d->q, "%s", buf);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, slow_reply, d) != 0) {
      free(d);
      amn_call_finish(c, AMN_STATUS_RESOURCE_EXHAUSTED, "no thread");
    }
    pthread_attr_destroy(&a);
    return;
  }
  amn_call_reply_query(c, q->query_bytes, q->query_len, NULL, 0);
}

int main(int argc, char **argv) {
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.threads = 1;
  o.drain_timeout_ms = 5000;
  const char *pki = NULL, *log = NULL;
  static char storage[3 * 4096];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--listen")) o.listen = v, i++;
    else if (!strcmp(a, "--pki-dir")) pki = v, i++;
    else if (!strcmp(a, "--insecure")) o.tls.insecure = true;
    else if (!strcmp(a, "--exec-log")) log = v, i++;
    else if (!strcmp(a, "--delay-ms")) g_delay_ms = (unsigned)atoi(v), i++;
    else if (!strcmp(a, "--max-connections")) o.max_connections = (uint32_t)atoi(v), i++;
    else if (!strcmp(a, "--drain-ms")) o.drain_timeout_ms = (uint32_t)atoi(v), i++;
    else if (!strcmp(a, "--transport"))
      o.transport = !strcmp(v, "h3") ? AMN_TRANSPORT_H3 : !strcmp(v, "both") ? AMN_TRANSPORT_BOTH : AMN_TRANSPORT_H2, i++;
    else {
      fprintf(stderr, "lbserver: unknown option %s\n", a);
      return 2;
    }
  }
  if (!log || (!pki && !o.tls.insecure)) {
    fprintf(stderr, "lbserver: --exec-log and --pki-dir (or --insecure) are required\n");
    return 2;
  }
  g_log = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (g_log < 0) {
    perror(log);
    return 2;
  }
  if (pki && amn_pki_paths(pki, "server", &o.tls, storage, sizeof storage) != 0) return 2;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  amn_server *s = NULL;
  char err[512];
  if (amn_server_new(&s, &o, err, sizeof err) != 0 || amn_server_set_execute(s, execute, NULL) != 0 ||
      amn_server_start(s, err, sizeof err) != 0) {
    fprintf(stderr, "lbserver: %s\n", err);
    return 2;
  }
  fprintf(stderr, "lbserver: listening on port %u\n", amn_server_port(s));
  int sig;
  sigwait(&set, &sig);
  amn_server_stop(s);
  amn_server_free(s);
  fprintf(stderr, "lbserver: stopped\n");
  return 0;
}
