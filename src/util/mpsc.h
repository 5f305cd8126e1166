/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: intrusive multi-producer single-consumer queue (Vyukov). Any
 * thread pushes without locks or allocation; only the owning event loop pops.
 */
#ifndef AMN_UTIL_MPSC_H
#define AMN_UTIL_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct amn_mpsc_node {
  _Atomic(struct amn_mpsc_node *) next;
} amn_mpsc_node;

typedef struct amn_mpsc {
  _Atomic(amn_mpsc_node *) head; /* producers swap here */
  amn_mpsc_node *tail;           /* consumer side */
  amn_mpsc_node stub;
} amn_mpsc;

static inline void amn_mpsc_init(amn_mpsc *q) {
  atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
  atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
  q->tail = &q->stub;
}

/* Returns 1 when the queue was (probably) empty before: the caller should
 * wake the consumer. */
static inline int amn_mpsc_push(amn_mpsc *q, amn_mpsc_node *n) {
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  amn_mpsc_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
  atomic_store_explicit(&prev->next, n, memory_order_release);
  return prev == &q->stub || 1;
}

/* Pops one node or returns NULL (empty, or a push is half-way: retry later;
 * the pusher's wake-up guarantees another pass). Consumer thread only. */
static inline amn_mpsc_node *amn_mpsc_pop(amn_mpsc *q) {
  amn_mpsc_node *tail = q->tail;
  amn_mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (tail == &q->stub) {
    if (!next) return NULL;
    q->tail = next;
    tail = next;
    next = atomic_load_explicit(&next->next, memory_order_acquire);
  }
  if (next) {
    q->tail = next;
    return tail;
  }
  amn_mpsc_node *head = atomic_load_explicit(&q->head, memory_order_acquire);
  if (tail != head) return NULL; /* producer between exchange and link */
  amn_mpsc_push(q, &q->stub);
  next = atomic_load_explicit(&tail->next, memory_order_acquire);
  if (next) {
    q->tail = next;
    return tail;
  }
  return NULL;
}

/* A cross-thread operation handed to an event loop through its MPSC queue:
 * the node, and what the loop should do with it (the owner's enum). */
typedef struct amn_loop_op {
  amn_mpsc_node node;
  int kind;
} amn_loop_op;

#define AMN_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
