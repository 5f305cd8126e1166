/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Internal: a deadline list — items that expire a fixed time after they were
 * last touched, kept in the order of that time (so touching one is O(1):
 * it moves to the tail), with one libev timer for the oldest. Used by the
 * server's call core for the phases of a request (headers, progress).
 * One loop thread. */
#ifndef AMN_UTIL_DLIST_H
#define AMN_UTIL_DLIST_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/clock.h"

typedef struct amn_dl_link {
  struct amn_dl_link *prev, *next;
  int64_t t;        /* when it was last touched (the list's clock, ns) */
  bool on;          /* on the list */
} amn_dl_link;

typedef struct amn_dlist {
  amn_dl_link *head, *tail;
  ev_timer timer;
  struct ev_loop *ev;
  amn_clock_fn clock;
  int64_t after_ns; /* an item expires this long after its last touch */
  /* called for each expired item, already removed from the list */
  void (*expire)(amn_dl_link *l, void *ud);
  void *ud;
  bool ready;       /* amn_dlist_init done */
} amn_dlist;

/* Sets the list up (empty). after_ns > 0. */
void amn_dlist_init(amn_dlist *d, struct ev_loop *ev, amn_clock_fn clock, int64_t after_ns,
                    void (*expire)(amn_dl_link *l, void *ud), void *ud);
/* Puts l at the tail with the time now (adds it, or moves it there). */
void amn_dlist_touch(amn_dlist *d, amn_dl_link *l);
/* Takes l off the list (a no-op when it is not on it). */
void amn_dlist_remove(amn_dlist *d, amn_dl_link *l);
/* Stops the timer (the loop is going away). */
void amn_dlist_stop(amn_dlist *d);

#endif
