/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the outgoing message queue of one call, the same for the
 * server's responses and the client's requests. Sans-I/O.
 *
 * Each message is one block: the gRPC 5-byte prefix and the payload,
 * written once by the application thread; the transport pulls bytes from
 * the front (copying them into its frame buffer) or peeks how much there
 * is. The queue itself is single-threaded (the loop's); messages reach it
 * from other threads through their `op` node.
 */
#ifndef AMN_RPC_MSGQ_H
#define AMN_RPC_MSGQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/mpsc.h"

typedef struct amn_qmsg {
  amn_loop_op op;          /* hand-off from an application thread to the loop */
  struct amn_qmsg *next;   /* next in the queue */
  void *call;              /* the call it is for, while handed off */
  size_t len, off;         /* framed length (5 + payload); bytes pulled so far */
  uint8_t data[];          /* 5-byte prefix, then the payload */
} amn_qmsg;

typedef struct amn_msgq {
  amn_qmsg *head, *tail;
} amn_msgq;

/* A message with room for `payload` bytes at data + 5 and the prefix
 * written; op.kind = op_kind, call = NULL. NULL when out of memory or when
 * the size does not fit in size_t. The caller fills the payload. */
amn_qmsg *amn_qmsg_new(size_t payload, int op_kind);

static inline void amn_msgq_init(amn_msgq *q) { q->head = q->tail = NULL; }
static inline bool amn_msgq_empty(const amn_msgq *q) { return q->head == NULL; }
/* Appends m (the queue takes it). */
void amn_msgq_push(amn_msgq *q, amn_qmsg *m);
/* Puts m back at the front, rewound (a retry re-sends it whole). */
void amn_msgq_push_front(amn_msgq *q, amn_qmsg *m);
/* Rewinds the front message, for a retry of a call whose first attempt
 * pulled part of it. */
void amn_msgq_rewind(amn_msgq *q);
/* Unsent bytes, counted until the count exceeds `limit` (so the result is
 * exact when <= limit, and some value > limit otherwise). */
size_t amn_msgq_avail(const amn_msgq *q, size_t limit);
/* Copies up to len unsent bytes into buf, in order; returns the count.
 * A message whose last byte is pulled is freed, except that when `keep` is
 * non-NULL and *keep is NULL, the first such message is stored in *keep
 * (the caller owns it: a unary request kept for a retry). */
size_t amn_msgq_pull(amn_msgq *q, uint8_t *buf, size_t len, amn_qmsg **keep);
/* Unlinks the front message and returns it (NULL when empty): its unsent
 * bytes are m->data + m->off .. m->len; the caller owns it (free()). */
amn_qmsg *amn_msgq_take(amn_msgq *q);
/* Frees every message; returns the unsent bytes dropped. */
size_t amn_msgq_clear(amn_msgq *q);

#endif
