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

#endif
