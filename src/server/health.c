/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * grpc.health.v1.Health: Check and Watch (grpc/grpc doc/health-checking.md).
 * "" and "amaters.v1.AmateRS" are known from the start; applications may add
 * services with amn_server_set_health. While the server drains, every
 * service reports NOT_SERVING and Watch streams end with UNAVAILABLE.
 */
#include <stdlib.h>
#include <string.h>

#include "health.pb-c.h"
#include "server/server_internal.h"
#include "util/log.h"

#define MAX_SERVICES 16

typedef struct health_svc {
  char name[128];
  bool serving;
} health_svc;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct health_state {
  health_svc svc[MAX_SERVICES];
  int n;
} health_state;

typedef struct watcher {
  amn_call *c;
  char service[128];
  int last; /* last status sent, -1 none */
  struct watcher *next;
} watcher;

static health_state *state_of(amn_server *s) { return (health_state *)s->health; }

/* Status for a service: SERVING, NOT_SERVING or SERVICE_UNKNOWN. */
static int status_of(amn_server *s, const char *service) {
  health_state *hs = state_of(s);
  int st = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
  pthread_mutex_lock(&g_lock);
  for (int i = 0; i < hs->n; i++)
    if (strcmp(hs->svc[i].name, service) == 0) {
      st = hs->svc[i].serving && !atomic_load(&s->stop_requested)
               ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
               : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
      break;
    }
  pthread_mutex_unlock(&g_lock);
  return st;
}

static int send_status(amn_call *c, int st) {
  Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status = st;
  uint8_t buf[16];
  size_t n = grpc__health__v1__health_check_response__pack(&r, buf);
  return amn_call_send(c, buf, n);
}

static bool parse_service(amn_call *c, const uint8_t *msg, size_t len, char *out, size_t cap) {
  Grpc__Health__V1__HealthCheckRequest *rq = grpc__health__v1__health_check_request__unpack(NULL, len, msg);
  if (!rq) {
    amn_call_finish(c, AMN_STATUS_INVALID_ARGUMENT, "malformed HealthCheckRequest");
    return false;
  }
  bool ok = strlen(rq->service) < cap;
  if (ok) strcpy(out, rq->service);
  grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
  if (!ok) amn_call_finish(c, AMN_STATUS_INVALID_ARGUMENT, "service name too long");
  return ok;
}

static void check_on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  amn_server *s = ud;
  char service[128];
  if (!parse_service(c, msg, len, service, sizeof service)) return;
  int st = status_of(s, service);
  if (st == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN) {
    amn_call_finish(c, AMN_STATUS_NOT_FOUND, "unknown service");
    return;
  }
  send_status(c, st);
  amn_call_finish(c, AMN_STATUS_OK, NULL);
}

static void watch_on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  amn_server *s = ud;
  amn_srv_loop *sl = c->sl;
  watcher *w = calloc(1, sizeof *w);
  if (!w) {
    amn_call_finish(c, AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (!parse_service(c, msg, len, w->service, sizeof w->service)) {
    free(w);
    return;
  }
  w->c = c;
  w->last = status_of(s, w->service);
  send_status(c, w->last);
  w->next = sl->health_watchers;
  sl->health_watchers = w;
  if (atomic_load(&s->stop_requested)) amn_health_notify_loop(sl);
}

static void watch_on_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)why; (void)ud;
  amn_srv_loop *sl = c->sl;
  for (watcher **pp = (watcher **)&sl->health_watchers; *pp; pp = &(*pp)->next)
    if ((*pp)->c == c) {
      watcher *w = *pp;
      *pp = w->next;
      free(w);
      amn_call_finish(c, AMN_STATUS_CANCELLED, NULL);
      return;
    }
  /* cancelled before registration completed: the message handler finished it */
}

void amn_health_notify_loop(amn_srv_loop *sl) {
  amn_server *s = sl->srv;
  bool stopping = atomic_load(&s->stop_requested);
  watcher **pp = (watcher **)&sl->health_watchers;
  while (*pp) {
    watcher *w = *pp;
    int st = status_of(s, w->service);
    if (st != w->last) {
      w->last = st;
      send_status(w->c, st);
    }
    if (stopping) {
      *pp = w->next;
      amn_call_finish(w->c, AMN_STATUS_UNAVAILABLE, "server shutting down");
      free(w);
      continue;
    }
    pp = &w->next;
  }
}

static void set_locked(health_state *hs, const char *service, bool serving) {
  for (int i = 0; i < hs->n; i++)
    if (strcmp(hs->svc[i].name, service) == 0) {
      hs->svc[i].serving = serving;
      return;
    }
  if (hs->n < MAX_SERVICES && strlen(service) < sizeof hs->svc[0].name) {
    strcpy(hs->svc[hs->n].name, service);
    hs->svc[hs->n].serving = serving;
    hs->n++;
  } else {
    AMN_WARN("health: too many services, '%s' not tracked", service);
  }
}

void amn_server_set_health(amn_server *s, const char *service, bool serving) {
  if (!s || !service) return;
  pthread_mutex_lock(&g_lock);
  set_locked(state_of(s), service, serving);
  pthread_mutex_unlock(&g_lock);
  if (s->started)
    for (int i = 0; i < s->nloops; i++) ev_async_send(s->loops[i].ev, &s->loops[i].wake);
}

void amn_health_register(amn_server *s) {
  health_state *hs = calloc(1, sizeof *hs);
  if (!hs) return;
  set_locked(hs, "", true);
  set_locked(hs, "amaters.v1.AmateRS", true);
  amn_handler check = {0};
  check.on_message = check_on_message;
  check.ud = s;
  amn_handler watch = {0};
  watch.on_message = watch_on_message;
  watch.on_cancel = watch_on_cancel;
  watch.ud = s;
  s->health = hs;
  amn_server_register(s, "/grpc.health.v1.Health/Check", &check);
  amn_server_register(s, "/grpc.health.v1.Health/Watch", &watch);
}

void amn_health_free(amn_server *s) { free(state_of(s)); }
