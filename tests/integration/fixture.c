/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The shared integration-test fixture (fixture.h). */
#include "fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

char amn_t_dir[256];
amn_tls_opts amn_t_stls, amn_t_ctls;
amn_transport amn_t_transport = AMN_TRANSPORT_H2;
static char g_store_s[3 * 4096], g_store_c[3 * 4096];

double amn_t_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int amn_t_setup(const char *name) {
  const char *tp = getenv("AMN_TEST_TRANSPORT");
  amn_t_transport = tp && strcmp(tp, "h3") == 0 ? AMN_TRANSPORT_H3 : AMN_TRANSPORT_H2;
  const char *tmp = getenv("TMPDIR");
  snprintf(amn_t_dir, sizeof amn_t_dir, "%s/amn-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
  if (!mkdtemp(amn_t_dir)) {
    fprintf(stderr, "mkdtemp %s: %s\n", amn_t_dir, strerror(errno));
    return -1;
  }
  char err[512];
  if (amn_pki_init(amn_t_dir, false, err, sizeof err) != 0 ||
      amn_pki_paths(amn_t_dir, "server", &amn_t_stls, g_store_s, sizeof g_store_s) != 0 ||
      amn_pki_paths(amn_t_dir, "client", &amn_t_ctls, g_store_c, sizeof g_store_c) != 0) {
    fprintf(stderr, "development PKI in %s: %s\n", amn_t_dir, err);
    return -1;
  }
  return 0;
}

void amn_t_teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", amn_t_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", amn_t_dir);
}

/* ---- counters ---- */

void amn_t_counter_add(amn_t_counter *k, long d) {
  pthread_mutex_lock(&k->mu);
  k->n += d;
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
}

void amn_t_counter_set(amn_t_counter *k, long v) {
  pthread_mutex_lock(&k->mu);
  k->n = v;
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
}

long amn_t_counter_get(amn_t_counter *k) {
  pthread_mutex_lock(&k->mu);
  long v = k->n;
  pthread_mutex_unlock(&k->mu);
  return v;
}

struct timespec amn_t_deadline_in(int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts); /* pthread_cond_timedwait's default clock */
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

static bool counter_wait(amn_t_counter *k, long want, bool ge, int timeout_ms) {
  struct timespec until = amn_t_deadline_in(timeout_ms);
  pthread_mutex_lock(&k->mu);
  int rc = 0;
  while (!(ge ? k->n >= want : k->n <= want) && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&k->cv, &k->mu, &until);
  bool ok = ge ? k->n >= want : k->n <= want;
  pthread_mutex_unlock(&k->mu);
  return ok;
}

bool amn_t_counter_wait_ge(amn_t_counter *k, long want, int timeout_ms) { return counter_wait(k, want, true, timeout_ms); }
bool amn_t_counter_wait_le(amn_t_counter *k, long want, int timeout_ms) { return counter_wait(k, want, false, timeout_ms); }

bool amn_t_poll(bool (*cond)(void *arg), void *arg, int timeout_ms) {
  double until = amn_t_now_ms() + timeout_ms;
  for (;;) {
    if (cond(arg)) return true;
    if (amn_t_now_ms() >= until) return false;
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

/* ---- /test.Svc/Sleep ---- */

amn_t_counter amn_t_sleep_running = AMN_T_COUNTER_INIT;
amn_t_counter amn_t_sleep_started = AMN_T_COUNTER_INIT;
amn_t_counter amn_t_sleep_cancelled = AMN_T_COUNTER_INIT;
static amn_status_code amn_t_sleep_cancel_code;
/* one lock for every job: a call's link to its job, cancellation, release */
static pthread_mutex_t g_sleep_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_sleep_cv = PTHREAD_COND_INITIALIZER;
static long g_release_gen;

typedef struct sleep_job {
  amn_call *c;
  bool cancelled;
  long gen; /* g_release_gen when the call arrived */
  int ms;
  size_t len;
  uint8_t body[32];
} sleep_job;

static void *sleep_worker(void *arg) {
  sleep_job *j = arg;
  struct timespec until = amn_t_deadline_in(j->ms);
  pthread_mutex_lock(&g_sleep_mu);
  int rc = 0;
  /* works j->ms, unless cancelled or released first */
  while (!j->cancelled && g_release_gen == j->gen && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&g_sleep_cv, &g_sleep_mu, &until);
  amn_call_set_user_data(j->c, NULL);
  pthread_mutex_unlock(&g_sleep_mu);
  amn_call_send(j->c, j->body, j->len);
  amn_call_finish(j->c, AMN_STATUS_OK, NULL); /* after a cancel: refused, the call is already over */
  free(j);
  amn_t_counter_add(&amn_t_sleep_running, -1);
  return NULL;
}

static void sleep_on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  (void)ud;
  sleep_job *j = calloc(1, sizeof *j);
  if (!j) {
    amn_call_finish(c, AMN_STATUS_RESOURCE_EXHAUSTED, "test: out of memory");
    return;
  }
  j->c = c;
  j->len = len < sizeof j->body ? len : sizeof j->body;
  memcpy(j->body, msg, j->len);
  char num[33] = {0};
  memcpy(num, j->body, j->len);
  j->ms = atoi(num);
  pthread_mutex_lock(&g_sleep_mu);
  amn_call_set_user_data(c, j);
  j->gen = g_release_gen;
  pthread_mutex_unlock(&g_sleep_mu);
  amn_t_counter_add(&amn_t_sleep_running, 1);
  pthread_t t;
  if (pthread_create(&t, NULL, sleep_worker, j) != 0) {
    pthread_mutex_lock(&g_sleep_mu);
    amn_call_set_user_data(c, NULL);
    pthread_mutex_unlock(&g_sleep_mu);
    free(j);
    amn_t_counter_add(&amn_t_sleep_running, -1);
    amn_call_finish(c, AMN_STATUS_RESOURCE_EXHAUSTED, "test: no thread");
    return;
  }
  pthread_detach(t);
  amn_t_counter_add(&amn_t_sleep_started, 1);
}

static void sleep_on_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)ud;
  pthread_mutex_lock(&g_sleep_mu); /* the worker unlinks its job under it before freeing it */
  sleep_job *j = amn_call_get_user_data(c);
  if (j) {
    j->cancelled = true;
    pthread_cond_broadcast(&g_sleep_cv);
  }
  amn_t_sleep_cancel_code = why;
  pthread_mutex_unlock(&g_sleep_mu);
  amn_t_counter_add(&amn_t_sleep_cancelled, 1);
}

void amn_t_sleep_release_all(void) {
  pthread_mutex_lock(&g_sleep_mu);
  g_release_gen++;
  pthread_cond_broadcast(&g_sleep_cv);
  pthread_mutex_unlock(&g_sleep_mu);
}

amn_status_code amn_t_sleep_last_cancel_code(void) {
  pthread_mutex_lock(&g_sleep_mu);
  amn_status_code c = amn_t_sleep_cancel_code;
  pthread_mutex_unlock(&g_sleep_mu);
  return c;
}

void amn_t_register_sleep(amn_server *s) {
  amn_handler h = {0};
  h.on_message = sleep_on_message;
  h.on_cancel = sleep_on_cancel;
  if (amn_server_register(s, "/test.Svc/Sleep", &h) != 0) abort();
}

void amn_t_sleep_quiesce(void) {
  if (!amn_t_counter_wait_le(&amn_t_sleep_running, 0, 10000)) {
    fprintf(stderr, "a Sleep handler still holds its call after 10 s\n");
    abort();
  }
}
