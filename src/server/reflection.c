/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Server reflection on the wire: grpc.reflection.v1 and v1alpha
 * ServerReflectionInfo, a bidirectional stream answering each request in
 * order (reflection_index.c answers; this file serves). list_services names
 * every service registered on the server (the table of registry.c, fixed
 * once the server has started); the descriptors known are those built into
 * the library (amaters.v1, grpc.health.v1, the reflection services).
 * Registered unless amn_server_opts.reflection is false.
 */
#include <stdlib.h>
#include <string.h>

#include "server/reflection.h"
#include "server/server_internal.h"
#include "util/log.h"

typedef struct refl_call {
  uint8_t *pending; /* a response amn_call_send refused (AMN_EAGAIN) */
  size_t len;
  bool half_closed;
} refl_call;

typedef struct refl_state {
  amn_refl *index;
  char **services;
  size_t nservices;
} refl_state;

static refl_state *state_of(amn_server *s) { return (refl_state *)s->reflection; }

/* The distinct service names of the registered method paths, once (the
 * table no longer changes when calls arrive). */
static pthread_mutex_t g_services_lock = PTHREAD_MUTEX_INITIALIZER;

static void collect_services(amn_server *s, refl_state *st) {
  pthread_mutex_lock(&g_services_lock);
  if (!st->services && s->nmethods && (st->services = calloc(s->nmethods, sizeof *st->services))) {
    for (size_t i = 0; i < s->nmethods; i++) {
      const char *p = s->methods[i].path + 1, *slash = strchr(p, '/');
      size_t n = (size_t)(slash - p), k;
      for (k = 0; k < st->nservices; k++)
        if (strlen(st->services[k]) == n && memcmp(st->services[k], p, n) == 0) break;
      if (k < st->nservices) continue;
      if (!(st->services[st->nservices] = strndup(p, n))) break;
      st->nservices++;
    }
  }
  pthread_mutex_unlock(&g_services_lock);
}

static refl_call *call_state(amn_call *c) {
  refl_call *rc = amn_call_get_user_data(c);
  if (!rc && (rc = calloc(1, sizeof *rc))) amn_call_set_user_data(c, rc);
  return rc;
}

static void release(amn_call *c, amn_status_code code, const char *msg) {
  refl_call *rc = amn_call_get_user_data(c);
  if (rc) free(rc->pending);
  free(rc);
  amn_call_set_user_data(c, NULL);
  amn_call_finish(c, code, msg);
}

static void on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  amn_server *s = ud;
  refl_state *st = state_of(s);
  refl_call *rc = call_state(c);
  if (!rc) {
    release(c, AMN_STATUS_RESOURCE_EXHAUSTED, "reflection: out of memory");
    return;
  }
  collect_services(s, st);
  uint8_t *out;
  size_t outlen;
  int e = amn_refl_answer(st->index, (const char *const *)st->services, st->nservices, msg, len, &out, &outlen);
  if (e == AMN_EINVAL) {
    release(c, AMN_STATUS_INVALID_ARGUMENT, "malformed ServerReflectionRequest");
    return;
  }
  if (e) {
    release(c, AMN_STATUS_RESOURCE_EXHAUSTED, "reflection: out of memory");
    return;
  }
  e = amn_call_send(c, out, outlen);
  if (e == AMN_EAGAIN) {
    /* hold it, and the next requests, until the client reads */
    rc->pending = out;
    rc->len = outlen;
    amn_call_pause_recv(c);
    return;
  }
  free(out);
  if (e == AMN_ETOOBIG) release(c, AMN_STATUS_RESOURCE_EXHAUSTED, "reflection response larger than max_send_message");
  else if (e && e != AMN_ECLOSED) release(c, AMN_STATUS_RESOURCE_EXHAUSTED, "reflection: out of memory");
}

static void on_writable(amn_call *c, void *ud) {
  (void)ud;
  refl_call *rc = amn_call_get_user_data(c);
  if (!rc || !rc->pending) return;
  if (amn_call_send(c, rc->pending, rc->len) == AMN_EAGAIN) return;
  free(rc->pending);
  rc->pending = NULL;
  if (rc->half_closed) release(c, AMN_STATUS_OK, NULL);
  else amn_call_resume_recv(c);
}

static void on_half_close(amn_call *c, void *ud) {
  (void)ud;
  refl_call *rc = amn_call_get_user_data(c);
  if (rc && rc->pending) rc->half_closed = true; /* finish once it is sent */
  else release(c, AMN_STATUS_OK, NULL);
}

static void on_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)ud;
  release(c, why, NULL);
}

int amn_reflection_register(amn_server *s) {
  refl_state *st = calloc(1, sizeof *st);
  if (!st) return AMN_ENOMEM;
  int rc = amn_refl_new_builtin(&st->index);
  if (rc) {
    AMN_ERROR("reflection: the built-in descriptors do not parse (%d)", rc);
    free(st);
    return rc;
  }
  s->reflection = st;
  amn_handler h = {0};
  h.on_message = on_message;
  h.on_half_close = on_half_close;
  h.on_cancel = on_cancel;
  h.on_writable = on_writable;
  h.client_streaming = true;
  h.ud = s;
  if ((rc = amn_server_register(s, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", &h)) ||
      (rc = amn_server_register(s, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &h)))
    return rc;
  return 0;
}

void amn_reflection_free(amn_server *s) {
  refl_state *st = state_of(s);
  if (!st) return;
  amn_refl_free(st->index);
  for (size_t i = 0; i < st->nservices; i++) free(st->services[i]);
  free(st->services);
  free(st);
  s->reflection = NULL;
}
