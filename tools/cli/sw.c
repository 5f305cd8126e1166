/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli: what the commands that open a stream share (stream, call,
 * list, describe): the stream's callbacks, sending with backpressure, and
 * the end of the call with its status.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void on_message(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  (void)s;
  swait *w = ud;
  if (w->on_msg) w->on_msg(w, msg, len);
}

static void on_writable(amn_cstream *s, void *ud) {
  (void)s;
  swait *w = ud;
  pthread_mutex_lock(&w->mu);
  w->writable_gen++;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void on_close(amn_cstream *s, const amn_result *res, void *ud) {
  (void)s;
  swait *w = ud;
  pthread_mutex_lock(&w->mu);
  w->closed = true;
  w->code = (int)res->code;
  w->message = strdup(res->message ? res->message : "");
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

int sw_open(swait *w, amn_client *c, const char *method, const amn_call_opts *opts, amn_cstream **out) {
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  amn_cstream_cbs cbs = {on_message, on_close, on_writable};
  return amn_client_stream_open(c, method, opts, &cbs, w, out);
}

bool sw_closed(swait *w) {
  pthread_mutex_lock(&w->mu);
  bool c = w->closed;
  pthread_mutex_unlock(&w->mu);
  return c;
}

int sw_send(amn_cstream *s, swait *w, const uint8_t *m, size_t n) {
  for (;;) {
    pthread_mutex_lock(&w->mu);
    unsigned gen = w->writable_gen;
    bool closed = w->closed;
    pthread_mutex_unlock(&w->mu);
    if (closed) return AMN_ECLOSED;
    int rc = amn_cstream_send(s, m, n);
    if (rc != AMN_EAGAIN) return rc;
    /* backpressure: on_writable or on_close wakes us */
    pthread_mutex_lock(&w->mu);
    while (w->writable_gen == gen && !w->closed) pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
  }
}

int sw_end(amn_cstream *s, swait *w) {
  pthread_mutex_lock(&w->mu);
  while (!w->closed) pthread_cond_wait(&w->cv, &w->mu);
  pthread_mutex_unlock(&w->mu);
  amn_cstream_release(s);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  return w->code;
}

int sw_finish(amn_cstream *s, swait *w, int local_err) {
  if (local_err == AMN_ECLOSED) local_err = 0; /* the server ended the call: its status tells */
  if (local_err) amn_cstream_cancel(s);
  else amn_cstream_close_send(s);
  int code = sw_end(s, w);
  if (local_err) code = fail_status(status_of_err(local_err), amn_strerror(local_err));
  else if (code != AMN_STATUS_OK) fail_status(code, w->message);
  free(w->message);
  w->message = NULL;
  return code;
}
