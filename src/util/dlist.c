/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Deadline lists (util/dlist.h). */
#include "util/dlist.h"

#include <stddef.h>

static void arm(amn_dlist *d) {
  if (!d->head) {
    ev_timer_stop(d->ev, &d->timer);
    return;
  }
  if (ev_is_active(&d->timer)) return; /* it re-arms itself for the next oldest */
  int64_t left = d->head->t + d->after_ns - d->clock();
  ev_timer_set(&d->timer, left > 0 ? (double)left / 1e9 : 0., 0.);
  ev_timer_start(d->ev, &d->timer);
}

static void timer_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_dlist *d = w->data;
  int64_t now = d->clock();
  while (d->head && now - d->head->t >= d->after_ns) {
    amn_dl_link *l = d->head;
    amn_dlist_remove(d, l);
    d->expire(l, d->ud); /* may touch or remove other items */
  }
  arm(d);
}

void amn_dlist_init(amn_dlist *d, struct ev_loop *ev, amn_clock_fn clock, int64_t after_ns,
                    void (*expire)(amn_dl_link *l, void *ud), void *ud) {
  d->head = d->tail = NULL;
  d->ev = ev;
  d->clock = clock;
  d->after_ns = after_ns;
  d->expire = expire;
  d->ud = ud;
  ev_init(&d->timer, timer_cb);
  d->timer.data = d;
  d->ready = true;
}

void amn_dlist_remove(amn_dlist *d, amn_dl_link *l) {
  if (!l->on) return;
  l->on = false;
  if (l->prev) l->prev->next = l->next;
  else d->head = l->next;
  if (l->next) l->next->prev = l->prev;
  else d->tail = l->prev;
  l->prev = l->next = NULL;
  if (!d->head) ev_timer_stop(d->ev, &d->timer);
}

void amn_dlist_touch(amn_dlist *d, amn_dl_link *l) {
  amn_dlist_remove(d, l);
  l->t = d->clock();
  l->on = true;
  l->next = NULL;
  l->prev = d->tail;
  if (d->tail) d->tail->next = l;
  else d->head = l;
  d->tail = l;
  arm(d);
}

void amn_dlist_stop(amn_dlist *d) {
  if (d->ready) ev_timer_stop(d->ev, &d->timer);
}
