/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The library's version at run time (amn_version, amn_version_number). */
#include "amn/common.h"

const char *amn_version(void) { return AMN_VERSION; }

unsigned amn_version_number(void) { return AMN_VERSION_NUMBER; }
