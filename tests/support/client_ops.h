/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What the client's I/O thread does with a call (client.c: op_start and the
 * hand-offs of amn_cstream_send, amn_cstream_close_send,
 * amn_cstream_cancel), for harnesses that run a client built by hand on
 * their own thread (tests/support/h3_mem.h, fuzz/fuzz_h2_client.c).
 */
#ifndef AMN_TESTS_CLIENT_OPS_H
#define AMN_TESTS_CLIENT_OPS_H

#include "client/client_internal.h"

/* A new call handed to the pool. */
static inline void cops_start(amn_client *cl, amn_client_call *c) {
  amn_client_call_arm_deadline(c);
  amn_client_pending_push(cl, c, false);
  amn_pool_kick(cl, true);
}

/* One more request message: 0, or -1 (the call ended or was closed for
 * sending: dropped; out of memory). */
static inline int cops_send(amn_client_call *c, const uint8_t *p, size_t n) {
  if (c->done || c->half_close_queued) return -1;
  amn_qmsg *m = amn_client_msg_new(c, p, n);
  if (!m) return -1;
  atomic_fetch_add(&c->queued, m->len);
  amn_msgq_push(&c->sq, m);
  if (c->stream) c->tp->resume(c->stream);
  return 0;
}

static inline void cops_close_send(amn_client_call *c) {
  if (c->done) return;
  c->half_close_queued = true;
  if (c->stream) c->tp->resume(c->stream);
}

static inline void cops_cancel(amn_client *cl, amn_client_call *c) {
  if (c->done) return;
  if (c->stream) {
    amn_client_call_cancel(c, AMN_STATUS_CANCELLED, "cancelled by the client");
  } else if (c->prev || c->next || cl->pending == c) {
    amn_client_pending_unlink(cl, c);
    amn_client_call_complete(c, AMN_STATUS_CANCELLED, "cancelled by the client");
    amn_client_call_unref(c);
  }
}

#endif
