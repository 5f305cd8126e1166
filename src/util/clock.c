/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The loop's coarse clock (util/clock.h). */
#include "util/clock.h"

_Thread_local int64_t amn_clock_tick_ns;
