/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Client call core: a call's life on the client's I/O thread (the pending
 * list, the stream callbacks the transports call, response deframing, the
 * retry of a failed attempt, deadlines, completion) and its creation. The
 * pool is reached through cl->pool (its hooks), so that the pool may use
 * the calls without a circle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amn/proto.h"
#include "client/client_internal.h"
#include "client/policy.h"
#include "health.pb-c.h"
#include "util/log.h"

void amn_result_free(amn_result *r) {
  if (!r) return;
  free(r->message);
  free(r->data);
  for (size_t i = 0; i < r->initial_md_count; i++) {
    free((char *)r->initial_md[i].key);
    free((uint8_t *)r->initial_md[i].value);
  }
  free(r->initial_md);
  for (size_t i = 0; i < r->trailing_md_count; i++) {
    free((char *)r->trailing_md[i].key);
    free((uint8_t *)r->trailing_md[i].value);
  }
  free(r->trailing_md);
  memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------ */
/* Calls                                                              */
/* ------------------------------------------------------------------ */

static void free_queue(amn_client_call *c) {
  amn_msgq_clear(&c->sq);
  atomic_store(&c->queued, 0);
  free(c->replay);
  c->replay = NULL;
}

void amn_client_call_unref(amn_client_call *c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
  free_queue(c);
  amn_rpc_resp_free(&c->resp);
  amn_deframer_free(&c->df);
  amn_result_free(&c->res);
  free(c->peer_der);
  free((char *)c->t.method);
  free((amn_md *)c->t.md);
  free(c->md_blob);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

void amn_client_pending_unlink(amn_client *cl, amn_client_call *c) {
  if (c->prev) c->prev->next = c->next;
  else if (cl->pending == c) cl->pending = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

void amn_client_pending_push(amn_client *cl, amn_client_call *c, bool front) {
  atomic_fetch_add(&c->refs, 1); /* the pending list's reference */
  c->prev = c->next = NULL;
  if (front || !cl->pending) {
    c->next = cl->pending;
    if (cl->pending) cl->pending->prev = c;
    cl->pending = c;
    return;
  }
  amn_client_call *t = cl->pending;
  while (t->next) t = t->next;
  t->next = c;
  c->prev = t;
}

amn_client_call *amn_client_pending_pop(amn_client *cl) {
  amn_client_call *c = cl->pending;
  if (c) amn_client_pending_unlink(cl, c);
  return c; /* with the pending list's reference */
}

void amn_client_fail_pending(amn_client *cl, amn_status_code code, const char *msg) {
  amn_client_call *c;
  while ((c = amn_client_pending_pop(cl)) != NULL) {
    amn_client_call_complete(c, code, msg);
    amn_client_call_unref(c);
  }
}

/* Moves the metadata of the response block just parsed (headers, or the
 * trailers when `trailing`) into the call's result. */
static void take_md(amn_client_call *c, bool trailing) {
  amn_md **arr = trailing ? &c->res.trailing_md : &c->res.initial_md;
  size_t *n = trailing ? &c->res.trailing_md_count : &c->res.initial_md_count;
  size_t cnt;
  amn_rpc_md *md = amn_rpc_resp_take_md(&c->resp, &cnt);
  if (!md || !cnt) {
    free(md);
    return;
  }
  amn_md *out = realloc(*arr, (*n + cnt) * sizeof *out);
  if (!out) {
    amn_rpc_md_free_array(md, cnt);
    return;
  }
  /* ownership of key/value strings moves into the result (freed by amn_result_free) */
  for (size_t i = 0; i < cnt; i++) {
    out[*n + i].key = md[i].key;
    out[*n + i].value = md[i].value;
    out[*n + i].value_len = md[i].value_len;
  }
  *arr = out;
  *n += cnt;
  free(md);
}

/* The response stream ended: the final status from what it carried (an
 * idempotent call may be re-sent on UNAVAILABLE, see amn_client_call_fail). */
static void response_ended(amn_client_call *c) {
  const char *msg = NULL;
  amn_status_code code = amn_rpc_resp_status(&c->resp, &msg);
  if (code == AMN_STATUS_OK && !amn_deframer_idle(&c->df)) {
    code = AMN_STATUS_INTERNAL;
    msg = "response ended inside a message";
  }
  if (code == AMN_STATUS_OK && c->kind != AMN_CK_STREAM && c->nmsgs == 0) {
    code = AMN_STATUS_INTERNAL;
    msg = "server returned OK without a response message";
  }
  /* UNAVAILABLE from the server: an idempotent call may go elsewhere */
  if (code == AMN_STATUS_UNAVAILABLE) amn_client_call_fail(c, code, msg, false);
  else amn_client_call_complete(c, code, msg);
}

void amn_client_call_fail(amn_client_call *c, amn_status_code code, const char *msg, bool unprocessed) {
  if (c->done) return;
  amn_client *cl = c->cl;
  /* can the request be sent again? unary: its message is kept; stream:
   * only when nothing was sent nor received yet */
  bool replayable = c->kind != AMN_CK_STREAM ? (c->replay || !amn_msgq_empty(&c->sq)) : (!c->pulled_any && c->nmsgs == 0);
  amn_retry_case k = {.replayable = replayable,
                       .probe = c->probe,
                       .stopping = atomic_load(&cl->stopping),
                       .cancelled = atomic_load(&c->cancel_requested),
                       .unprocessed = unprocessed,
                       .idempotent = c->t.idempotent,
                       .code = code,
                       .attempts = (uint32_t)c->attempts,
                       .max_retries = cl->o.max_retries};
  bool retry = amn_policy_may_retry(&k, cl->retry_tokens);
  if (!unprocessed && code == AMN_STATUS_UNAVAILABLE) amn_policy_retry_failure(&cl->retry_tokens);
  if (!retry) {
    amn_client_call_complete(c, code, msg);
    return;
  }
  cl->pool->detach(c, code);
  AMN_DEBUG("re-sending %s (%s, attempt %d): %s", c->t.method, unprocessed ? "it never ran" : "idempotent",
            c->attempts + 1, msg);
  /* a fresh attempt: the response so far is dropped, the request rewound */
  amn_rpc_resp_free(&c->resp);
  amn_rpc_resp_init(&c->resp);
  amn_deframer_free(&c->df);
  amn_deframer_init(&c->df, cl->o.max_recv_message);
  amn_result_free(&c->res);
  c->got_headers = false;
  c->nmsgs = 0;
  c->pulled_any = false;
  if (c->replay) { /* unary: the one request message */
    amn_qmsg *m = c->replay;
    c->replay = NULL;
    amn_msgq_push_front(&c->sq, m);
    atomic_store(&c->queued, m->len);
  } else {
    amn_msgq_rewind(&c->sq);
  }
  pthread_mutex_lock(&cl->stats_mu);
  cl->retries++;
  pthread_mutex_unlock(&cl->stats_mu);
  amn_client_pending_push(cl, c, true);
  cl->pool->mark(cl); /* dispatched before the loop blocks */
}

/* I/O thread: the call has its final status. Runs the completion exactly once. */
void amn_client_call_complete(amn_client_call *c, amn_status_code code, const char *msg) {
  if (c->done) return;
  c->done = true;
  c->cl->pool->detach(c, code);
  if (code == AMN_STATUS_OK) amn_policy_retry_success(&c->cl->retry_tokens);
  atomic_store(&c->closed_flag, true);
  if (c->deadline_armed) {
    ev_timer_stop(c->cl->ev, &c->deadline);
    c->deadline_armed = false;
  }
  free_queue(c);
  c->res.code = code;
  free(c->res.message);
  c->res.message = strdup(msg ? msg : "");
  if (code != AMN_STATUS_OK) {
    free(c->res.data);
    c->res.data = NULL;
    c->res.len = 0;
  }
  switch (c->kind) {
  case AMN_CK_UNARY_ASYNC:
    c->cb(&c->res, c->ud);
    amn_client_call_unref(c); /* the application's side */
    break;
  case AMN_CK_UNARY_BLOCKING:
    pthread_mutex_lock(&c->mu);
    c->finished = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    break;
  case AMN_CK_STREAM:
    if (c->scbs.on_close) c->scbs.on_close((amn_cstream *)c, &c->res, c->ud);
    break;
  }
}

/* The core lets go of the call's stream (reset by the transport); the
 * stream's reference is then the caller's to drop (true), after it is
 * done with the call. */
static bool stream_cancel(amn_client_call *c) {
  void *st = c->stream;
  if (!st) return false;
  c->stream = NULL;
  c->tp->cancel(st);
  return true;
}

void amn_client_call_cancel(amn_client_call *c, amn_status_code code, const char *msg) {
  bool held = stream_cancel(c);
  amn_client_call_complete(c, code, msg);
  if (held) amn_client_call_unref(c); /* the stream's reference */
}

static void on_message(amn_client_call *c, uint8_t *msg, size_t len) {
  c->nmsgs++;
  if (c->kind == AMN_CK_STREAM) {
    if (c->scbs.on_message) c->scbs.on_message((amn_cstream *)c, msg ? msg : (const uint8_t *)"", len, c->ud);
    free(msg);
    return;
  }
  if (c->nmsgs > 1) {
    free(msg);
    amn_client_call_cancel(c, AMN_STATUS_INTERNAL, "unary call received more than one response message");
    return;
  }
  c->res.data = msg;
  c->res.len = len;
}

static int on_response_msg(void *ud, uint8_t *msg, size_t len, bool compressed) {
  amn_client_call *c = ud;
  if (compressed) {
    free(msg);
    amn_client_call_cancel(c, AMN_STATUS_INTERNAL, AMN_RPC_COMPRESSED_MSG);
    return 1;
  }
  on_message(c, msg, len);
  return c->done ? 1 : 0;
}

/* ---- the call callbacks of the transports (transport/ctransport.h) ---- */

#define CALL(t) AMN_CONTAINER_OF(t, amn_client_call, t)

/* Response DATA bytes of the call's stream, split anywhere: deframed into
 * messages. A bad or oversized message resets the stream and completes
 * the call with a status. The body of a non-gRPC response (HTTP status
 * other than 200, or another content-type) is ignored. A completed call
 * ignores further data. */
static void cb_data(amn_ct_call *t, const uint8_t *data, size_t len) {
  amn_client_call *c = CALL(t);
  if (c->done || c->resp.http_status != 200 || !c->resp.content_type_ok) return; /* not gRPC: body ignored */
  atomic_fetch_add(&c->refs, 1); /* a completion below may drop the stream's reference */
  int rc = amn_deframer_feed(&c->df, data, len, on_response_msg, c);
  char msg[128];
  amn_status_code code = amn_deframer_status(&c->df, rc, msg, sizeof msg);
  if (code != AMN_STATUS_OK) amn_client_call_cancel(c, code, msg);
  amn_client_call_unref(c);
}

static void cb_header(amn_ct_call *t, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen) {
  amn_client_call *c = CALL(t);
  if (!c->done) amn_rpc_resp_header(&c->resp, name, nlen, value, vlen);
}

/* The certificate of the server that answers (verify_proofs): copied from
 * the stream's TLS session when the response headers arrive. */
static void keep_peer_cert(amn_client_call *c) {
  const uint8_t *der;
  size_t len;
  gnutls_session_t s = c->stream && c->tp && c->tp->session ? c->tp->session(c->stream) : NULL;
  free(c->peer_der);
  c->peer_der = NULL;
  c->peer_der_len = 0;
  if (!s || amn_tls_peer_cert(s, &der, &len) != 0 || !(c->peer_der = malloc(len))) return;
  memcpy(c->peer_der, der, len);
  c->peer_der_len = len;
}

static void cb_headers_end(amn_ct_call *t, bool trailing) {
  amn_client_call *c = CALL(t);
  if (c->done) return;
  if (!trailing) {
    c->got_headers = true;
    if (c->want_peer_cert) keep_peer_cert(c);
  }
  take_md(c, trailing);
}

/* The stream let go of the call: its end, or a failure of this attempt. */
static void cb_closed(amn_ct_call *t, const amn_ct_end *end) {
  amn_client_call *c = CALL(t);
  c->stream = NULL;
  if (!c->done) {
    if (!end) response_ended(c);
    else amn_client_call_fail(c, end->code, end->msg, end->unprocessed);
  }
  amn_client_call_unref(c); /* the stream's reference */
}

static ssize_t cb_peek(amn_ct_call *t, size_t len, bool *eof) {
  const amn_client_call *c = CALL(t);
  size_t avail = amn_msgq_avail(&c->sq, len);
  *eof = c->half_close_queued && avail <= len;
  if (avail > len) avail = len;
  if (!avail && !*eof) return -1;
  return (ssize_t)avail;
}

static ssize_t cb_pull(amn_ct_call *t, uint8_t *buf, size_t len, bool *eof) {
  amn_client_call *c = CALL(t);
  *eof = false;
  /* a unary request is kept for a retry once sent */
  size_t copied = amn_msgq_pull(&c->sq, buf, len, c->kind != AMN_CK_STREAM ? &c->replay : NULL);
  if (copied) {
    c->pulled_any = true;
    size_t before = atomic_fetch_sub(&c->queued, copied);
    if (c->kind == AMN_CK_STREAM && before - copied <= c->cl->o.stream_send_buffer / 2 &&
        atomic_exchange(&c->want_writable, false) && !c->done && c->scbs.on_writable)
      c->scbs.on_writable((amn_cstream *)c, c->ud);
  }
  if (amn_msgq_empty(&c->sq) && c->half_close_queued) {
    *eof = true;
    return (ssize_t)copied;
  }
  return copied ? (ssize_t)copied : -1;
}

const amn_ct_call_cbs amn_client_call_cbs = {cb_peek, cb_pull, cb_header, cb_headers_end, cb_data, cb_closed};

void amn_client_call_start(amn_client_call *c, const amn_ctransport *tp, void *conn) {
  amn_ct_end fail;
  void *st = tp->start_call(conn, &c->t, &fail);
  if (!st) {
    amn_client_call_fail(c, fail.code, fail.msg, fail.unprocessed);
    return;
  }
  c->stream = st;
  atomic_fetch_add(&c->refs, 1); /* the stream's reference */
}

static void deadline_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_client_call *c = w->data;
  c->deadline_armed = false;
  if (c->done) return;
  bool held = stream_cancel(c);
  if (!held) amn_client_pending_unlink(c->cl, c);
  amn_client_call_complete(c, AMN_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
  amn_client_call_unref(c); /* the stream's, or the pending list's reference */
}

/* I/O thread: the call's deadline starts (when it has one). */
void amn_client_call_arm_deadline(amn_client_call *c) {
  if (c->t.timeout_ns <= 0) return;
  ev_timer_init(&c->deadline, deadline_cb, c->t.timeout_ns / 1e9, 0.);
  c->deadline.data = c;
  ev_timer_start(c->cl->ev, &c->deadline);
  c->deadline_armed = true;
}

amn_qmsg *amn_client_msg_new(amn_client_call *c, const uint8_t *p, size_t n) {
  amn_qmsg *m = amn_qmsg_new(n, AMN_COP_SEND);
  if (!m) return NULL;
  m->call = c;
  if (n) memcpy(m->data + 5, p, n);
  return m;
}

amn_client_call *amn_client_call_new(amn_client *cl, int kind, const char *method, const amn_call_opts *opts) {
  if (!method || method[0] != '/') return NULL;
  amn_client_call *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  atomic_init(&c->refs, 1);
  c->start_op.kind = AMN_COP_START;
  c->half_close_op.kind = AMN_COP_HALF_CLOSE;
  c->cancel_op.kind = AMN_COP_CANCEL;
  c->cl = cl;
  c->kind = kind;
  c->t.method = strdup(method);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  amn_rpc_resp_init(&c->resp);
  amn_deframer_init(&c->df, cl->o.max_recv_message);
  if (opts) {
    c->t.timeout_ns = (int64_t)opts->timeout_ms * 1000000LL;
    c->t.idempotent = opts->idempotent;
    if (opts->metadata && opts->metadata->count) {
      const amn_metadata *md = opts->metadata;
      size_t blob = 0;
      for (size_t i = 0; i < md->count; i++) blob += strlen(md->entries[i].key) + 1 + md->entries[i].value_len + 1;
      amn_md *cmd = calloc(md->count, sizeof *cmd);
      c->t.md = cmd;
      c->md_blob = malloc(blob ? blob : 1);
      if (!cmd || !c->md_blob || !c->t.method) {
        amn_client_call_unref(c);
        return NULL;
      }
      char *p = c->md_blob;
      for (size_t i = 0; i < md->count; i++) {
        size_t kl = strlen(md->entries[i].key);
        memcpy(p, md->entries[i].key, kl + 1);
        cmd[i].key = p;
        p += kl + 1;
        if (md->entries[i].value_len) memcpy(p, md->entries[i].value, md->entries[i].value_len);
        p[md->entries[i].value_len] = 0;
        cmd[i].value = (uint8_t *)p;
        cmd[i].value_len = md->entries[i].value_len;
        p += md->entries[i].value_len + 1;
      }
      c->t.md_n = md->count;
    }
  }
  if (!c->t.method) {
    amn_client_call_unref(c);
    return NULL;
  }
  return c;
}

/* Unary: the request goes in the queue, half-closed; the op's reference
 * becomes the pending list's. */
/* Unary: the one request message, queued and half-closed. */
int amn_client_call_queue_unary(amn_client_call *c, const uint8_t *req, size_t len) {
  if (len > c->cl->o.max_send_message) return AMN_ETOOBIG;
  amn_qmsg *m = amn_client_msg_new(c, req, len);
  if (!m) return AMN_ENOMEM;
  amn_msgq_push(&c->sq, m);
  atomic_store(&c->queued, m->len);
  c->half_close_queued = true;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Health                                                             */
/* ------------------------------------------------------------------ */

amn_client_call *amn_client_call_probe_new(amn_client *cl, uint32_t timeout_ms, amn_unary_cb cb, void *ud) {
  amn_call_opts o = {.timeout_ms = timeout_ms};
  amn_client_call *c = amn_client_call_new(cl, AMN_CK_UNARY_ASYNC, AMN_METHOD_HEALTH_CHECK, &o);
  if (!c || amn_client_call_queue_unary(c, (const uint8_t *)"", 0) != 0) { /* HealthCheckRequest{service: ""} */
    if (c) amn_client_call_unref(c);
    return NULL;
  }
  c->probe = true;
  c->cb = cb;
  c->ud = ud;
  amn_client_call_arm_deadline(c);
  return c; /* its reference is released by the completion */
}

int amn_health_serving(const amn_result *r) {
  if (r->code != AMN_STATUS_OK) return 0;
  Grpc__Health__V1__HealthCheckResponse *resp =
      grpc__health__v1__health_check_response__unpack(NULL, r->len, r->data ? r->data : (const uint8_t *)"");
  if (!resp) return -1;
  int ok = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
  return ok;
}

