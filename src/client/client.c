/*
 * Client core: the public client API, the I/O thread, the hand-off of calls
 * and stream messages from application threads, deadlines, completion.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "amn/proto.h"
#include "client/client_hooks.h"
#include "client/client_internal.h"
#include "client/policy.h"
#include "health.pb-c.h"
#include "util/log.h"

void amn_client_opts_init(amn_client_opts *o) {
  memset(o, 0, sizeof *o);
  o->transport = AMN_TRANSPORT_H2;
  o->max_recv_message = AMN_DEFAULT_MAX_MESSAGE;
  o->max_send_message = AMN_DEFAULT_MAX_MESSAGE;
  o->connect_timeout_ms = 10000;
  o->initial_window_size = 1u << 20;
  o->stream_send_buffer = 4u << 20;
  o->pool_max_connections = 4;
  o->pool_min_connections = 1;
  o->lb_policy = AMN_LB_P2C;
  o->idle_timeout_ms = 60000;
  o->max_retries = 2;
  o->backoff_base_ms = 1000;
  o->backoff_max_ms = 30000;
}

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
  free((char *)c->t.method);
  free((amn_md *)c->t.md);
  free(c->md_blob);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

static void pending_unlink(amn_client *cl, amn_client_call *c) {
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
  if (c) pending_unlink(cl, c);
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
  amn_pool_call_detach(c, code);
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
  amn_pool_mark(cl); /* dispatched before the loop blocks */
}

/* I/O thread: the call has its final status. Runs the completion exactly once. */
void amn_client_call_complete(amn_client_call *c, amn_status_code code, const char *msg) {
  if (c->done) return;
  c->done = true;
  amn_pool_call_detach(c, code);
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

/* Ends the call with a status, resetting its stream first. */
static void cancel_complete(amn_client_call *c, amn_status_code code, const char *msg) {
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
    cancel_complete(c, AMN_STATUS_INTERNAL, "unary call received more than one response message");
    return;
  }
  c->res.data = msg;
  c->res.len = len;
}

static int on_response_msg(void *ud, uint8_t *msg, size_t len, bool compressed) {
  amn_client_call *c = ud;
  if (compressed) {
    free(msg);
    cancel_complete(c, AMN_STATUS_INTERNAL, AMN_RPC_COMPRESSED_MSG);
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
  if (code != AMN_STATUS_OK) cancel_complete(c, code, msg);
  amn_client_call_unref(c);
}

static void cb_header(amn_ct_call *t, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen) {
  amn_client_call *c = CALL(t);
  if (!c->done) amn_rpc_resp_header(&c->resp, name, nlen, value, vlen);
}

static void cb_headers_end(amn_ct_call *t, bool trailing) {
  amn_client_call *c = CALL(t);
  if (c->done) return;
  if (!trailing) c->got_headers = true;
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

static const amn_ct_call_cbs call_cbs = {cb_peek, cb_pull, cb_header, cb_headers_end, cb_data, cb_closed};

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
  if (!held) pending_unlink(c->cl, c);
  amn_client_call_complete(c, AMN_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
  amn_client_call_unref(c); /* the stream's, or the pending list's reference */
}

/* ------------------------------------------------------------------ */
/* I/O thread                                                         */
/* ------------------------------------------------------------------ */

void amn_client_notify_connect(amn_client *cl, int rc, const char *err) {
  pthread_mutex_lock(&cl->cmu);
  cl->connect_gen++;
  cl->connect_rc = rc;
  snprintf(cl->connect_err, sizeof cl->connect_err, "%s", err ? err : "");
  pthread_cond_broadcast(&cl->ccv);
  pthread_mutex_unlock(&cl->cmu);
}

/* I/O thread: the call's deadline starts (when it has one). */
static void arm_deadline(amn_client_call *c) {
  if (c->t.timeout_ns <= 0) return;
  ev_timer_init(&c->deadline, deadline_cb, c->t.timeout_ns / 1e9, 0.);
  c->deadline.data = c;
  ev_timer_start(c->cl->ev, &c->deadline);
  c->deadline_armed = true;
}

static void op_start(amn_client *cl, amn_client_call *c) {
  if (c->done) {
    amn_client_call_unref(c);
    return;
  }
  if (atomic_load(&cl->stopping)) {
    amn_client_call_complete(c, AMN_STATUS_CANCELLED, "client is shutting down");
    amn_client_call_unref(c);
    return;
  }
  arm_deadline(c);
  amn_client_pending_push(cl, c, false);
  amn_client_call_unref(c); /* the op's reference (the pending list took its own) */
  amn_pool_kick(cl, true);
}

static void op_cancel(amn_client_call *c) {
  if (c->done) return;
  if (c->stream) {
    cancel_complete(c, AMN_STATUS_CANCELLED, "cancelled by the client");
  } else if (c->prev || c->next || c->cl->pending == c) {
    pending_unlink(c->cl, c);
    amn_client_call_complete(c, AMN_STATUS_CANCELLED, "cancelled by the client");
    amn_client_call_unref(c);
  }
}

static void drain_ops(amn_client *cl) {
  struct ev_loop *ev = cl->ev;
  amn_mpsc_node *n;
  while ((n = amn_mpsc_pop(&cl->ops)) != NULL) {
    amn_loop_op *op = AMN_CONTAINER_OF(n, amn_loop_op, node);
    switch (op->kind) {
    case AMN_COP_START: {
      amn_client_call *c = AMN_CONTAINER_OF(op, amn_client_call, start_op);
      op_start(cl, c);
      break;
    }
    case AMN_COP_SEND: {
      amn_qmsg *m = AMN_CONTAINER_OF(op, amn_qmsg, op);
      amn_client_call *c = m->call;
      if (c->done || c->half_close_queued) {
        atomic_fetch_sub(&c->queued, m->len);
        free(m);
      } else {
        amn_msgq_push(&c->sq, m);
        if (c->stream) c->tp->resume(c->stream);
      }
      amn_client_call_unref(c);
      break;
    }
    case AMN_COP_HALF_CLOSE: {
      amn_client_call *c = AMN_CONTAINER_OF(op, amn_client_call, half_close_op);
      if (!c->done) {
        c->half_close_queued = true;
        if (c->stream) c->tp->resume(c->stream);
      }
      amn_client_call_unref(c);
      break;
    }
    case AMN_COP_CANCEL: {
      amn_client_call *c = AMN_CONTAINER_OF(op, amn_client_call, cancel_op);
      op_cancel(c);
      amn_client_call_unref(c);
      break;
    }
    case AMN_COP_CONNECT:
      free(op);
      amn_pool_connect(cl); /* every endpoint; done when the first is ready */
      break;
    }
  }
  if (atomic_load(&cl->stopping)) {
    while (cl->pending) {
      amn_client_call *c = cl->pending;
      pending_unlink(cl, c);
      amn_client_call_complete(c, AMN_STATUS_CANCELLED, "client is shutting down");
      amn_client_call_unref(c);
    }
    amn_pool_close_all(cl, "client shutting down");
    ev_break(ev, EVBREAK_ALL);
  }
}

static void wake_cb(struct ev_loop *ev, ev_async *w, int revents) {
  (void)ev; (void)revents;
  drain_ops(w->data);
}

/* Operations issued from the I/O thread itself (e.g. a new call from a
 * completion callback) skip the eventfd wake-up: they are drained here,
 * before the loop flushes and blocks. */
static void before_flush(amn_ioloop *l) {
  amn_client *cl = l->owner;
  if (cl->local_ops) {
    cl->local_ops = false;
    drain_ops(cl);
  }
  if (cl->pool_dirty) amn_pool_maintain(cl);
}

static void *io_main(void *arg) {
  amn_client *cl = arg;
  sigset_t set;
  sigfillset(&set);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  ev_run(cl->ev, 0);
  return NULL;
}

static void push_op(amn_client *cl, amn_loop_op *op) {
  amn_mpsc_push(&cl->ops, &op->node);
  if (pthread_equal(pthread_self(), cl->thread)) cl->local_ops = true;
  else ev_async_send(cl->ev, &cl->wake);
}

/* ------------------------------------------------------------------ */
/* Client lifecycle                                                   */
/* ------------------------------------------------------------------ */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int amn_client_parse_url(const char *url, bool *tls_on, char *host, size_t hcap, uint16_t *port, char *authority,
                         size_t acap, char *err, size_t errlen);
static int parse_url(amn_client *cl, const char *url, char *err, size_t errlen) {
  return amn_client_parse_url(url, &cl->tls_on, cl->host, sizeof cl->host, &cl->port, cl->authority,
                              sizeof cl->authority, err, errlen);
}

int amn_client_parse_url(const char *url, bool *tls_on, char *host, size_t hcap, uint16_t *port, char *authority,
                         size_t acap, char *err, size_t errlen) {
  const char *rest;
  if (strncasecmp(url, "https://", 8) == 0) {
    rest = url + 8;
    *tls_on = true;
  } else if (strncasecmp(url, "http://", 7) == 0) {
    rest = url + 7;
    *tls_on = false;
  } else {
    return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s': expected https://HOST:PORT", url);
  }
  char hp[300];
  size_t n = strcspn(rest, "/");
  if (n == 0 || n >= sizeof hp) return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s': no host", url);
  memcpy(hp, rest, n);
  hp[n] = 0;
  bool has_port = hp[0] == '[' ? strstr(hp, "]:") != NULL : strchr(hp, ':') != NULL;
  if (has_port) {
    if (amn_split_hostport(hp, host, hcap, port) != 0 || *port == 0)
      return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s': bad host or port", url);
  } else {
    const char *h = hp;
    size_t hl = strlen(hp);
    if (hp[0] == '[') {
      if (hl < 3 || hp[hl - 1] != ']') return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s'", url);
      h = hp + 1;
      hl -= 2;
    }
    if (hl >= hcap) return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s'", url);
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = AMN_DEFAULT_PORT;
  }
  if (strchr(host, ':')) snprintf(authority, acap, "[%s]:%u", host, *port);
  else snprintf(authority, acap, "%s:%u", host, *port);
  return 0;
}

int amn_client_new(amn_client **out, const amn_client_opts *opts, char *err, size_t errlen) {
  if (!out || !opts || (!opts->url && !opts->url_count)) return amn_set_err(err, errlen, AMN_EINVAL, "a URL is required");
  if (opts->url_count && !opts->urls) return amn_set_err(err, errlen, AMN_EINVAL, "url_count without urls");
  for (size_t i = 0; i < opts->url_count; i++)
    if (!opts->urls[i]) return amn_set_err(err, errlen, AMN_EINVAL, "urls[%zu] is NULL", i);
  const char *const one_url[] = {opts->url};
  const char *const *urls = opts->url_count ? opts->urls : one_url;
  size_t nurls = opts->url_count ? opts->url_count : 1;
  if (!opts->pool_max_connections || opts->pool_min_connections > opts->pool_max_connections)
    return amn_set_err(err, errlen, AMN_EINVAL, "pool connections: need 1 <= max and min <= max (max %u, min %u)",
                       opts->pool_max_connections, opts->pool_min_connections);
  if (opts->lb_policy != AMN_LB_P2C && opts->lb_policy != AMN_LB_ROUND_ROBIN)
    return amn_set_err(err, errlen, AMN_EINVAL, "unknown lb_policy %d", opts->lb_policy);
  amn_client *cl = calloc(1, sizeof *cl);
  if (!cl) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  cl->o = *opts;
  if (!cl->o.backoff_base_ms) cl->o.backoff_base_ms = 1000;
  if (cl->o.backoff_max_ms < cl->o.backoff_base_ms) cl->o.backoff_max_ms = cl->o.backoff_base_ms;
  cl->ct.ka_interval_ms = cl->o.keepalive_interval_ms;
  pthread_mutex_init(&cl->stats_mu, NULL);
  if (!cl->o.max_recv_message) cl->o.max_recv_message = AMN_DEFAULT_MAX_MESSAGE;
  if (!cl->o.max_send_message) cl->o.max_send_message = AMN_DEFAULT_MAX_MESSAGE;
  if (!cl->o.connect_timeout_ms) cl->o.connect_timeout_ms = 10000;
  if (!cl->o.initial_window_size || cl->o.initial_window_size > 0x7fffffffu) cl->o.initial_window_size = 1u << 20;
  if (!cl->o.stream_send_buffer) cl->o.stream_send_buffer = 4u << 20;
  pthread_mutex_init(&cl->cmu, NULL);
  pthread_cond_init(&cl->ccv, NULL);
  int rc = parse_url(cl, urls[0], err, errlen);
  if (rc) {
    pthread_mutex_destroy(&cl->stats_mu);
    free(cl);
    return rc;
  }
  /* HTTP/2, HTTP/3, or auto: each endpoint races HTTP/3 against HTTP/2
   * (QUIC needs TLS: auto with http:// is HTTP/2) */
  amn_transport tk = cl->o.transport ? cl->o.transport : AMN_TRANSPORT_H2;
  if (tk == AMN_TRANSPORT_H3 && !cl->tls_on) {
    free(cl);
    return amn_set_err(err, errlen, AMN_EINVAL, "HTTP/3 needs an https:// URL (QUIC always uses TLS)");
  }
  if (tk == AMN_TRANSPORT_AUTO && !cl->tls_on) tk = AMN_TRANSPORT_H2;
  if (tk != AMN_TRANSPORT_H2 && tk != AMN_TRANSPORT_H3 && tk != AMN_TRANSPORT_AUTO) {
    free(cl);
    return amn_set_err(err, errlen, AMN_EINVAL, "unknown client transport %d (h2, h3 or auto)", (int)tk);
  }
  cl->o.transport = tk;
  cl->tp = tk == AMN_TRANSPORT_H3 ? &amn_h3c_transport : tk == AMN_TRANSPORT_H2 ? &amn_h2c_transport : NULL;
  rc = amn_pool_init(cl, urls, nurls, err, errlen);
  if (rc) {
    amn_client_free(cl);
    return rc;
  }
  cl->url_s = strdup(urls[0]);
  cl->cert_s = dup_or_null(opts->tls.cert_path);
  cl->key_s = dup_or_null(opts->tls.key_path);
  cl->ca_s = dup_or_null(opts->tls.ca_path);
  cl->sni_s = dup_or_null(opts->tls.server_name);
  cl->o.url = cl->url_s;
  cl->o.tls.cert_path = cl->cert_s;
  cl->o.tls.key_path = cl->key_s;
  cl->o.tls.ca_path = cl->ca_s;
  cl->o.tls.server_name = cl->sni_s;
  if (cl->tls_on && opts->tls.insecure) {
    amn_client_free(cl);
    return amn_set_err(err, errlen, AMN_EINVAL, "an https:// URL cannot be used in insecure mode (use http://)");
  }
  if (!cl->tls_on && !opts->tls.insecure) {
    amn_client_free(cl);
    return amn_set_err(err, errlen, AMN_EINVAL,
                       "plaintext http:// needs explicit insecure mode; use https:// for mutual TLS");
  }
  if (cl->tls_on) {
    if (!cl->ca_s) {
      amn_client_free(cl);
      return amn_set_err(err, errlen, AMN_EINVAL, "TLS needs a CA file to verify the server");
    }
    static const char *const alpn_h2[] = {"h2", NULL}, *const alpn_h3[] = {"h3", NULL};
    rc = 0;
    if (tk != AMN_TRANSPORT_H3) rc = amn_tls_ctx_new(&cl->tls, AMN_TLS_CLIENT, &cl->o.tls, alpn_h2, err, errlen);
    if (!rc && tk != AMN_TRANSPORT_H2)
      rc = amn_tls_ctx_new(&cl->tls_h3, AMN_TLS_CLIENT, &cl->o.tls, alpn_h3, err, errlen);
    if (rc) {
      amn_client_free(cl);
      return rc;
    }
  } else {
    AMN_WARN("INSECURE MODE: client talks plaintext HTTP/2 to %s", cl->authority);
  }
  cl->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  amn_ioloop_init(&cl->io, cl->ev);
  cl->ct.ev = cl->ev;
  cl->ct.io = &cl->io;
  cl->ct.tls = cl->tls;
  cl->ct.tls_h3 = cl->tls_h3;
  cl->ct.server_name = cl->o.tls.server_name;
  cl->ct.connect_timeout_ms = cl->o.connect_timeout_ms;
  cl->ct.initial_window_size = cl->o.initial_window_size;
  cl->ct.ka_timeout_ms = cl->o.keepalive_timeout_ms;
  cl->ct.keepalive_without_calls = cl->o.keepalive_without_calls;
  cl->ct.call_cbs = &call_cbs; /* (conn_cbs: the pool's, amn_pool_init) */
  cl->io.owner = cl;
  cl->io.before_flush = before_flush;
  amn_mpsc_init(&cl->ops);
  ev_async_init(&cl->wake, wake_cb);
  cl->wake.data = cl;
  ev_async_start(cl->ev, &cl->wake);
  if (pthread_create(&cl->thread, NULL, io_main, cl) != 0) {
    ev_async_stop(cl->ev, &cl->wake);
    amn_ioloop_stop(&cl->io);
    ev_loop_destroy(cl->ev);
    cl->ev = NULL;
    amn_client_free(cl);
    return amn_set_err(err, errlen, AMN_ENOMEM, "cannot start the client thread");
  }
  *out = cl;
  return 0;
}

int amn_client_connect(amn_client *cl, char *err, size_t errlen) {
  amn_loop_op *op = calloc(1, sizeof *op);
  if (!op) return AMN_ENOMEM;
  op->kind = AMN_COP_CONNECT;
  pthread_mutex_lock(&cl->cmu);
  int gen = cl->connect_gen;
  push_op(cl, op);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += cl->o.connect_timeout_ms / 1000 + 2;
  int rc = 0;
  while (cl->connect_gen == gen && rc == 0) rc = pthread_cond_timedwait(&cl->ccv, &cl->cmu, &ts);
  int out = cl->connect_gen == gen ? AMN_EIO : cl->connect_rc;
  if (out) amn_set_err(err, errlen, out, "%s", cl->connect_gen == gen ? "connect timed out" : cl->connect_err);
  pthread_mutex_unlock(&cl->cmu);
  return out;
}

void amn_client_free(amn_client *cl) {
  if (!cl) return;
  if (cl->ev) {
    atomic_store(&cl->stopping, true);
    ev_async_send(cl->ev, &cl->wake);
    pthread_join(cl->thread, NULL);
    /* release any late hand-offs */
    amn_mpsc_node *n;
    while ((n = amn_mpsc_pop(&cl->ops)) != NULL) {
      amn_loop_op *op = AMN_CONTAINER_OF(n, amn_loop_op, node);
      if (op->kind == AMN_COP_SEND) {
        amn_qmsg *m = AMN_CONTAINER_OF(op, amn_qmsg, op);
        amn_client_call_unref(m->call);
        free(m);
      } else if (op->kind == AMN_COP_CONNECT) {
        free(op);
      } else if (op->kind == AMN_COP_START) {
        amn_client_call *c = AMN_CONTAINER_OF(op, amn_client_call, start_op);
        amn_client_call_complete(c, AMN_STATUS_CANCELLED, "client is shutting down");
        amn_client_call_unref(c);
      } else if (op->kind == AMN_COP_HALF_CLOSE) {
        amn_client_call_unref(AMN_CONTAINER_OF(op, amn_client_call, half_close_op));
      } else if (op->kind == AMN_COP_CANCEL) {
        amn_client_call_unref(AMN_CONTAINER_OF(op, amn_client_call, cancel_op));
      }
    }
    /* the transports' state of the endpoints and the client */
    const amn_ctransport *const tps[] = {&amn_h2c_transport, &amn_h3c_transport};
    for (size_t k = 0; k < sizeof tps / sizeof *tps; k++) {
      for (size_t i = 0; tps[k]->endpoint_free && i < cl->neps; i++) tps[k]->endpoint_free(&cl->eps[i].t);
      if (tps[k]->client_free) tps[k]->client_free(&cl->ct);
    }
    ev_async_stop(cl->ev, &cl->wake);
    amn_ioloop_stop(&cl->io);
    ev_loop_destroy(cl->ev);
  }
  if (cl->tls) amn_tls_ctx_unref(cl->tls);
  if (cl->tls_h3) amn_tls_ctx_unref(cl->tls_h3);
  amn_pool_free(cl);
  pthread_mutex_destroy(&cl->stats_mu);
  pthread_mutex_destroy(&cl->cmu);
  pthread_cond_destroy(&cl->ccv);
  free(cl->url_s);
  free(cl->cert_s);
  free(cl->key_s);
  free(cl->ca_s);
  free(cl->sni_s);
  free(cl);
}

/* ------------------------------------------------------------------ */
/* Issuing calls                                                      */
/* ------------------------------------------------------------------ */

static amn_qmsg *cmsg_new(amn_client_call *c, const uint8_t *p, size_t n) {
  amn_qmsg *m = amn_qmsg_new(n, AMN_COP_SEND);
  if (!m) return NULL;
  m->call = c;
  if (n) memcpy(m->data + 5, p, n);
  return m;
}

static amn_client_call *call_new(amn_client *cl, int kind, const char *method, const amn_call_opts *opts) {
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
static int queue_unary(amn_client_call *c, const uint8_t *req, size_t len) {
  if (len > c->cl->o.max_send_message) return AMN_ETOOBIG;
  amn_qmsg *m = cmsg_new(c, req, len);
  if (!m) return AMN_ENOMEM;
  amn_msgq_push(&c->sq, m);
  atomic_store(&c->queued, m->len);
  c->half_close_queued = true;
  return 0;
}

static int submit_unary(amn_client_call *c, const uint8_t *req, size_t len) {
  int rc = queue_unary(c, req, len);
  if (rc) return rc;
  atomic_fetch_add(&c->refs, 1);
  push_op(c->cl, &c->start_op);
  return 0;
}

int amn_client_unary_async(amn_client *cl, const char *method, const uint8_t *req, size_t len,
                           const amn_call_opts *opts, amn_unary_cb cb, void *ud) {
  if (!cl || !cb || (len && !req)) return AMN_EINVAL;
  amn_client_call *c = call_new(cl, AMN_CK_UNARY_ASYNC, method, opts);
  if (!c) return AMN_EINVAL;
  c->cb = cb;
  c->ud = ud;
  int rc = submit_unary(c, req, len);
  if (rc) amn_client_call_unref(c);
  /* on success the application's reference is released by the completion */
  return rc;
}

int amn_client_unary(amn_client *cl, const char *method, const uint8_t *req, size_t len, const amn_call_opts *opts,
                     amn_result *out) {
  if (!cl || !out || (len && !req)) return AMN_EINVAL;
  memset(out, 0, sizeof *out);
  amn_client_call *c = call_new(cl, AMN_CK_UNARY_BLOCKING, method, opts);
  if (!c) return AMN_EINVAL;
  int rc = submit_unary(c, req, len);
  if (rc) {
    amn_client_call_unref(c);
    return rc;
  }
  pthread_mutex_lock(&c->mu);
  while (!c->finished) pthread_cond_wait(&c->cv, &c->mu);
  pthread_mutex_unlock(&c->mu);
  *out = c->res; /* moves ownership of the result */
  memset(&c->res, 0, sizeof c->res);
  amn_client_call_unref(c);
  return 0;
}

int amn_client_execute(amn_client *cl, const uint8_t *query, size_t query_len, const uint8_t *sig, size_t sig_len,
                       const amn_call_opts *opts, amn_result *out, uint8_t **proof, size_t *proof_len) {
  size_t n = amn_pair_encoded_size(query_len, sig_len);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return AMN_ENOMEM;
  amn_pair_encode(buf, query, query_len, sig, sig_len);
  int rc = amn_client_unary(cl, AMN_METHOD_EXECUTE, buf, n, opts, out);
  free(buf);
  if (proof) *proof = NULL;
  if (proof_len) *proof_len = 0;
  if (rc || out->code != AMN_STATUS_OK) return rc;
  amn_pair_view v;
  if (amn_pair_decode(out->data ? out->data : (const uint8_t *)"", out->len, &v) != 0) {
    free(out->data);
    out->data = NULL;
    out->len = 0;
    out->code = AMN_STATUS_INTERNAL;
    free(out->message);
    out->message = strdup("malformed QueryResponse");
    return 0;
  }
  if (proof && v.f2_len) {
    *proof = malloc(v.f2_len);
    if (*proof) {
      memcpy(*proof, v.f2, v.f2_len);
      if (proof_len) *proof_len = v.f2_len;
    }
  }
  uint8_t *res = malloc(v.f1_len ? v.f1_len : 1);
  if (!res) return AMN_ENOMEM;
  if (v.f1_len) memcpy(res, v.f1, v.f1_len);
  free(out->data);
  out->data = res;
  out->len = v.f1_len;
  return 0;
}

/* ------------------------------------------------------------------ */
/* Streams                                                            */
/* ------------------------------------------------------------------ */

int amn_client_stream_open(amn_client *cl, const char *method, const amn_call_opts *opts, const amn_cstream_cbs *cbs,
                           void *ud, amn_cstream **out) {
  if (!cl || !cbs || !out) return AMN_EINVAL;
  amn_client_call *c = call_new(cl, AMN_CK_STREAM, method, opts);
  if (!c) return AMN_EINVAL;
  c->scbs = *cbs;
  c->ud = ud;
  atomic_fetch_add(&c->refs, 1); /* the start op's, then the pending list's */
  push_op(cl, &c->start_op);
  *out = (amn_cstream *)c;
  return 0;
}

int amn_cstream_send(amn_cstream *s, const uint8_t *msg, size_t len) {
  amn_client_call *c = (amn_client_call *)s;
  if (!c || (len && !msg)) return AMN_EINVAL;
  if (atomic_load(&c->closed_flag) || atomic_load(&c->half_close_requested) || atomic_load(&c->cancel_requested))
    return AMN_ECLOSED;
  if (len > c->cl->o.max_send_message) return AMN_ETOOBIG;
  size_t q = atomic_load(&c->queued);
  if (q > 0 && q + len + 5 > c->cl->o.stream_send_buffer) {
    atomic_store(&c->want_writable, true);
    if (atomic_load(&c->queued) != 0) return AMN_EAGAIN;
  }
  amn_qmsg *m = cmsg_new(c, msg, len);
  if (!m) return AMN_ENOMEM;
  atomic_fetch_add(&c->queued, m->len);
  atomic_fetch_add(&c->refs, 1);
  push_op(c->cl, &m->op);
  return 0;
}

int amn_cstream_close_send(amn_cstream *s) {
  amn_client_call *c = (amn_client_call *)s;
  if (!c) return AMN_EINVAL;
  if (atomic_exchange(&c->half_close_requested, true)) return AMN_ECLOSED;
  atomic_fetch_add(&c->refs, 1);
  push_op(c->cl, &c->half_close_op);
  return 0;
}

void amn_cstream_cancel(amn_cstream *s) {
  amn_client_call *c = (amn_client_call *)s;
  if (!c || atomic_exchange(&c->cancel_requested, true)) return;
  atomic_fetch_add(&c->refs, 1);
  push_op(c->cl, &c->cancel_op);
}

void amn_cstream_release(amn_cstream *s) {
  amn_client_call *c = (amn_client_call *)s;
  if (!c) return;
  if (!atomic_load(&c->closed_flag)) amn_cstream_cancel(s);
  amn_client_call_unref(c);
}

/* ------------------------------------------------------------------ */
/* Health                                                             */
/* ------------------------------------------------------------------ */

amn_client_call *amn_client_call_probe_new(amn_client *cl, uint32_t timeout_ms, amn_unary_cb cb, void *ud) {
  amn_call_opts o = {.timeout_ms = timeout_ms};
  amn_client_call *c = call_new(cl, AMN_CK_UNARY_ASYNC, AMN_METHOD_HEALTH_CHECK, &o);
  if (!c || queue_unary(c, (const uint8_t *)"", 0) != 0) { /* HealthCheckRequest{service: ""} */
    if (c) amn_client_call_unref(c);
    return NULL;
  }
  c->probe = true;
  c->cb = cb;
  c->ud = ud;
  arm_deadline(c);
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

int amn_client_health(amn_client *cl, const char *service, uint32_t timeout_ms, bool *serving, amn_status_code *status,
                      char *err, size_t errlen) {
  Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  rq.service = (char *)(service ? service : "");
  size_t n = grpc__health__v1__health_check_request__get_packed_size(&rq);
  uint8_t *buf = malloc(n + 1);
  if (!buf) return AMN_ENOMEM;
  grpc__health__v1__health_check_request__pack(&rq, buf);
  amn_call_opts o = {0};
  o.timeout_ms = timeout_ms;
  amn_result r;
  int rc = amn_client_unary(cl, AMN_METHOD_HEALTH_CHECK, buf, n, &o, &r);
  free(buf);
  if (rc) return amn_set_err(err, errlen, rc, "%s", amn_strerror(rc));
  if (status) *status = r.code;
  if (r.code != AMN_STATUS_OK) {
    amn_set_err(err, errlen, AMN_EIO, "%s: %s", amn_status_name(r.code), r.message);
    amn_result_free(&r);
    return AMN_EIO;
  }
  int ok = amn_health_serving(&r);
  amn_result_free(&r);
  if (ok < 0) return amn_set_err(err, errlen, AMN_EPROTO, "malformed HealthCheckResponse");
  if (serving) *serving = ok == 1;
  return 0;
}

/* ------------------------------------------------------------------ */
/* HTTP/3 counters and test hooks (client_hooks.h)                    */
/* ------------------------------------------------------------------ */

void amn_h3c_stats(amn_client *cl, amn_h3_client_stats *out) {
  memset(out, 0, sizeof *out);
  if (cl) amn_h3c_transport.stats(&cl->ct, out);
}

static int h3_test_op(amn_client *cl, int op, int arg) {
  return cl ? amn_h3c_transport.test_op(&cl->ct, op, arg) : AMN_ESTATE;
}

int amn_h3c_test_rebind(amn_client *cl, bool nat_only) { return h3_test_op(cl, AMN_CT_OP_REBIND, nat_only); }
int amn_h3c_test_key_update(amn_client *cl) { return h3_test_op(cl, AMN_CT_OP_KEY_UPDATE, 0); }
int amn_h3c_test_close(amn_client *cl) { return h3_test_op(cl, AMN_CT_OP_CLOSE, 0); }
