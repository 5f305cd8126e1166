/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The outgoing message queue of a call (rpc/msgq.h). */
#include "rpc/msgq.h"

#include <stdlib.h>
#include <string.h>

#include "rpc/rpc.h"

amn_qmsg *amn_qmsg_new(size_t payload, int op_kind) {
  if (payload > SIZE_MAX - sizeof(amn_qmsg) - 5) return NULL;
  amn_qmsg *m = malloc(sizeof *m + 5 + payload);
  if (!m) return NULL;
  m->op.kind = op_kind;
  m->next = NULL;
  m->call = NULL;
  m->len = 5 + payload;
  m->off = 0;
  amn_frame_prefix(m->data, payload);
  return m;
}

void amn_msgq_push(amn_msgq *q, amn_qmsg *m) {
  m->next = NULL;
  if (q->tail) q->tail->next = m;
  else q->head = m;
  q->tail = m;
}

void amn_msgq_push_front(amn_msgq *q, amn_qmsg *m) {
  m->off = 0;
  m->next = q->head;
  q->head = m;
  if (!q->tail) q->tail = m;
}

void amn_msgq_rewind(amn_msgq *q) {
  if (q->head) q->head->off = 0;
}

size_t amn_msgq_avail(const amn_msgq *q, size_t limit) {
  size_t avail = 0;
  for (const amn_qmsg *m = q->head; m && avail <= limit; m = m->next) avail += m->len - m->off;
  return avail;
}

size_t amn_msgq_pull(amn_msgq *q, uint8_t *buf, size_t len, amn_qmsg **keep) {
  size_t copied = 0;
  while (copied < len && q->head) {
    amn_qmsg *m = q->head;
    size_t n = m->len - m->off;
    if (n > len - copied) n = len - copied;
    memcpy(buf + copied, m->data + m->off, n);
    m->off += n;
    copied += n;
    if (m->off == m->len) {
      q->head = m->next;
      if (!q->head) q->tail = NULL;
      m->next = NULL;
      if (keep && !*keep) *keep = m;
      else free(m);
    }
  }
  return copied;
}

amn_qmsg *amn_msgq_take(amn_msgq *q) {
  amn_qmsg *m = q->head;
  if (!m) return NULL;
  q->head = m->next;
  if (!q->head) q->tail = NULL;
  m->next = NULL;
  return m;
}

size_t amn_msgq_clear(amn_msgq *q) {
  size_t dropped = 0;
  amn_qmsg *m = q->head;
  while (m) {
    amn_qmsg *n = m->next;
    dropped += m->len - m->off;
    free(m);
    m = n;
  }
  q->head = q->tail = NULL;
  return dropped;
}
