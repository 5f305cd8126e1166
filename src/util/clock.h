/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Internal: the monotonic clock, and the type of a clock passed in (so a
 * state machine can be driven by a fake clock in tests). */
#ifndef AMN_UTIL_CLOCK_H
#define AMN_UTIL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds of a clock that never goes back. */
typedef int64_t (*amn_clock_fn)(void);

/* CLOCK_MONOTONIC in nanoseconds. Thread-safe. */
static inline int64_t amn_clock_monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* An event loop's coarse clock: the monotonic time at which the calling
 * thread's loop last woke up (it calls amn_clock_tick once per iteration),
 * or the monotonic clock itself on a thread whose loop does not. For
 * deadlines of milliseconds and more that are read many times per
 * iteration (a call's phases); not for durations. */
extern _Thread_local int64_t amn_clock_tick_ns;
static inline void amn_clock_tick(void) { amn_clock_tick_ns = amn_clock_monotonic_ns(); }
static inline int64_t amn_clock_coarse_ns(void) {
  int64_t t = amn_clock_tick_ns;
  return t ? t : amn_clock_monotonic_ns();
}

#endif
