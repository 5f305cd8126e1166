/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Client core: the public client API, the I/O thread, the hand-off of calls
 * and stream messages from application threads (the calls themselves:
 * call.c; their connections: pool.c).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "amn/proto.h"
#include "client/client_hooks.h"
#include "client/client_internal.h"
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
  o->dns_refresh_min_ms = 1000;
  o->dns_refresh_max_ms = 300000;
}

/* ------------------------------------------------------------------ */
/* I/O thread                                                         */
/* ------------------------------------------------------------------ */

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
  amn_client_call_arm_deadline(c);
  amn_client_pending_push(cl, c, false);
  amn_client_call_unref(c); /* the op's reference (the pending list took its own) */
  amn_pool_kick(cl, true);
}

static void op_cancel(amn_client_call *c) {
  if (c->done) return;
  if (c->stream) {
    amn_client_call_cancel(c, AMN_STATUS_CANCELLED, "cancelled by the client");
  } else if (c->prev || c->next || c->cl->pending == c) {
    amn_client_pending_unlink(c->cl, c);
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
    amn_client_fail_pending(cl, AMN_STATUS_CANCELLED, "client is shutting down");
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

static int parse_url(amn_client *cl, const char *url, char *err, size_t errlen) {
  return amn_client_parse_url(url, &cl->tls_on, cl->host, sizeof cl->host, &cl->port, cl->authority,
                              sizeof cl->authority, err, errlen);
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
  if (!cl->o.dns_refresh_min_ms) cl->o.dns_refresh_min_ms = 1000;
  if (!cl->o.dns_refresh_max_ms) cl->o.dns_refresh_max_ms = 300000;
  if (cl->o.dns_refresh_max_ms < cl->o.dns_refresh_min_ms) cl->o.dns_refresh_max_ms = cl->o.dns_refresh_min_ms;
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
  cl->dns_s = dup_or_null(opts->dns_servers);
  cl->o.dns_servers = cl->dns_s;
  cl->o.url = cl->url_s;
  cl->o.tls.cert_path = cl->cert_s;
  cl->o.tls.key_path = cl->key_s;
  cl->o.tls.ca_path = cl->ca_s;
  cl->crl_s = dup_or_null(opts->tls.crl_path);
  cl->o.tls.crl_path = cl->crl_s;
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
  rc = amn_csig_init(cl, err, errlen);
  if (rc) {
    amn_client_free(cl);
    return rc;
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
  cl->ct.no_resumption = cl->o.no_resumption;
  cl->ct.call_cbs = &amn_client_call_cbs; /* (conn_cbs: the pool's, amn_pool_init) */
  cl->io.owner = cl;
  cl->io.before_flush = before_flush;
  amn_mpsc_init(&cl->ops);
  ev_async_init(&cl->wake, wake_cb);
  cl->wake.data = cl;
  ev_async_start(cl->ev, &cl->wake);
  rc = amn_pool_start(cl, err, errlen); /* the names' first lookups */
  if (rc) {
    ev_async_stop(cl->ev, &cl->wake);
    amn_ioloop_stop(&cl->io);
    ev_loop_destroy(cl->ev);
    cl->ev = NULL;
    amn_client_free(cl);
    return rc;
  }
#ifdef AMN_TEST_HOOKS
  if (amn_client_test_no_thread) {
    cl->no_thread = true;
    cl->thread = pthread_self();
    *out = cl;
    return 0;
  }
#endif
  if (pthread_create(&cl->thread, NULL, io_main, cl) != 0) {
    amn_pool_stop_dns(cl);
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
    if (cl->no_thread) ev_run(cl->ev, 0); /* (test builds) the last turn, here: drain_ops breaks it */
    else pthread_join(cl->thread, NULL);
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
    amn_pool_stop_dns(cl); /* (already done when the loop ended) */
    ev_async_stop(cl->ev, &cl->wake);
    amn_ioloop_stop(&cl->io);
    ev_loop_destroy(cl->ev);
  }
  if (cl->tls) amn_tls_ctx_unref(cl->tls);
  if (cl->tls_h3) amn_tls_ctx_unref(cl->tls_h3);
  amn_csig_free(cl);
  amn_pool_free(cl);
  pthread_mutex_destroy(&cl->stats_mu);
  pthread_mutex_destroy(&cl->cmu);
  pthread_cond_destroy(&cl->ccv);
  free(cl->url_s);
  free(cl->cert_s);
  free(cl->key_s);
  free(cl->ca_s);
  free(cl->crl_s);
  free(cl->sni_s);
  free(cl->dns_s);
  free(cl);
}

/* ------------------------------------------------------------------ */
/* Issuing calls                                                      */
/* ------------------------------------------------------------------ */

static int submit_unary(amn_client_call *c, const uint8_t *req, size_t len) {
  int rc = amn_client_call_queue_unary(c, req, len);
  if (rc) return rc;
  atomic_fetch_add(&c->refs, 1);
  push_op(c->cl, &c->start_op);
  return 0;
}

int amn_client_unary_async(amn_client *cl, const char *method, const uint8_t *req, size_t len,
                           const amn_call_opts *opts, amn_unary_cb cb, void *ud) {
  if (!cl || !cb || (len && !req)) return AMN_EINVAL;
  amn_client_call *c = amn_client_call_new(cl, AMN_CK_UNARY_ASYNC, method, opts);
  if (!c) return AMN_EINVAL;
  c->cb = cb;
  c->ud = ud;
  int rc = submit_unary(c, req, len);
  if (rc) amn_client_call_unref(c);
  /* on success the application's reference is released by the completion */
  return rc;
}

/* A blocking unary call; with want_cert, *der gets the DER certificate of
 * the server that answered (or NULL; free() it). */
static int unary_blocking(amn_client *cl, const char *method, const uint8_t *req, size_t len,
                          const amn_call_opts *opts, amn_result *out, bool want_cert, uint8_t **der,
                          size_t *der_len) {
  if (!cl || !out || (len && !req)) return AMN_EINVAL;
  memset(out, 0, sizeof *out);
  amn_client_call *c = amn_client_call_new(cl, AMN_CK_UNARY_BLOCKING, method, opts);
  if (!c) return AMN_EINVAL;
  c->want_peer_cert = want_cert;
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
  if (der) {
    *der = c->peer_der;
    *der_len = c->peer_der_len;
    c->peer_der = NULL;
  }
  amn_client_call_unref(c);
  return 0;
}

int amn_client_unary(amn_client *cl, const char *method, const uint8_t *req, size_t len, const amn_call_opts *opts,
                     amn_result *out) {
  return unary_blocking(cl, method, req, len, opts, out, false, NULL, NULL);
}

/* Replaces the result with a failure `code` and message. */
static void fail_result(amn_result *out, amn_status_code code, const char *msg) {
  free(out->data);
  out->data = NULL;
  out->len = 0;
  out->code = code;
  free(out->message);
  out->message = strdup(msg);
}

int amn_client_execute(amn_client *cl, const uint8_t *query, size_t query_len, const uint8_t *sig, size_t sig_len,
                       const amn_call_opts *opts, amn_result *out, uint8_t **proof, size_t *proof_len) {
  if (proof) *proof = NULL;
  if (proof_len) *proof_len = 0;
  if (!cl || !out || (query_len && !query)) return AMN_EINVAL;
  size_t n = 0;
  int rc;
  uint8_t *buf = amn_csig_request(cl, AMN_METHOD_EXECUTE, query, query_len, sig, sig_len, &n, &rc);
  if (!buf) return rc;
  uint8_t *der = NULL;
  size_t der_len = 0;
  bool verify = cl->o.verify_proofs;
  rc = unary_blocking(cl, AMN_METHOD_EXECUTE, buf, n, opts, out, verify, &der, &der_len);
  free(buf);
  if (rc || out->code != AMN_STATUS_OK) {
    free(der);
    return rc;
  }
  amn_pair_view v;
  if (amn_pair_decode(out->data ? out->data : (const uint8_t *)"", out->len, &v) != 0) {
    free(der);
    fail_result(out, AMN_STATUS_INTERNAL, "malformed QueryResponse");
    return 0;
  }
  const char *bad = verify ? amn_csig_check_proof(der, der_len, AMN_METHOD_EXECUTE, query, query_len, v.f1, v.f1_len,
                                                  v.f2, v.f2_len)
                           : NULL;
  free(der);
  if (bad) {
    fail_result(out, AMN_STATUS_DATA_LOSS, bad);
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
  amn_client_call *c = amn_client_call_new(cl, AMN_CK_STREAM, method, opts);
  if (!c) return AMN_EINVAL;
  c->scbs = *cbs;
  c->ud = ud;
  atomic_fetch_add(&c->refs, 1); /* the start op's, then the pending list's */
  push_op(cl, &c->start_op);
  *out = (amn_cstream *)c;
  return 0;
}

static int stream_queue(amn_client_call *c, const uint8_t *msg, size_t len);

int amn_cstream_send(amn_cstream *s, const uint8_t *msg, size_t len) {
  amn_client_call *c = (amn_client_call *)s;
  if (!c || (len && !msg)) return AMN_EINVAL;
  if (atomic_load(&c->closed_flag) || atomic_load(&c->half_close_requested) || atomic_load(&c->cancel_requested))
    return AMN_ECLOSED;
  size_t signed_len = 0;
  int src = 0;
  uint8_t *signed_msg = amn_csig_stream_msg(c->cl, c->t.method, msg, len, &signed_len, &src);
  if (src) return src;
  if (signed_msg) msg = signed_msg, len = signed_len;
  int rc = stream_queue(c, msg, len);
  free(signed_msg);
  return rc;
}

/* Queues one message of a stream (amn_cstream_send). */
static int stream_queue(amn_client_call *c, const uint8_t *msg, size_t len) {
  if (len > c->cl->o.max_send_message) return AMN_ETOOBIG;
  size_t q = atomic_load(&c->queued);
  if (q > 0 && q + len + 5 > c->cl->o.stream_send_buffer) {
    atomic_store(&c->want_writable, true);
    if (atomic_load(&c->queued) != 0) return AMN_EAGAIN;
  }
  amn_qmsg *m = amn_client_msg_new(c, msg, len);
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
/* HTTP/3 counters (public) and test hooks (client_hooks.h)          */
/* ------------------------------------------------------------------ */

int amn_client_get_quic_stats(amn_client *cl, amn_client_quic_stats *out) {
  if (!cl || !out) return AMN_EINVAL;
  amn_h3_client_stats st;
  memset(&st, 0, sizeof st);
  amn_h3c_transport.stats(&cl->ct, &st);
  *out = (amn_client_quic_stats){
      .connects = st.connects,
      .handshakes = st.handshakes,
      .resumed = st.resumed,
      .early_attempted = st.early_attempted,
      .early_accepted = st.early_accepted,
      .early_rejected = st.early_rejected,
      .early_calls = st.early_calls,
      .tickets_received = st.tickets_received,
      .retries_received = st.retries_received,
      .tokens_received = st.tokens_received,
      .tokens_sent = st.tokens_sent,
      .key_updates = st.key_updates,
      .migrations = st.migrations,
      .stateless_resets = st.stateless_resets,
      .datagrams_received = st.datagrams_received,
      .datagrams_coalesced = st.datagrams_coalesced,
  };
  return 0;
}

#ifdef AMN_TEST_HOOKS
bool amn_client_test_no_thread;

static int h3_test_op(amn_client *cl, int op, int arg) {
  return cl ? amn_h3c_transport.test_op(&cl->ct, op, arg) : AMN_ESTATE;
}

int amn_h3c_test_rebind(amn_client *cl, bool nat_only) { return h3_test_op(cl, AMN_CT_OP_REBIND, nat_only); }
int amn_h3c_test_key_update(amn_client *cl) { return h3_test_op(cl, AMN_CT_OP_KEY_UPDATE, 0); }
int amn_h3c_test_close(amn_client *cl) { return h3_test_op(cl, AMN_CT_OP_CLOSE, 0); }
int amn_h3c_test_peer_cid0(amn_client *cl) { return h3_test_op(cl, AMN_CT_OP_PEER_CID0, 0); }
void amn_h3c_test_set_dcid0(int b) { amn_h3c_test_dcid0 = b; }
#endif
