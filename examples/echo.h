/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The echo handlers of the examples: Execute answers result_bytes =
 * query_bytes; ExecuteStream answers every query the same way, with
 * backpressure. Used by echo_server (a program) and echo_plugin (the same
 * handlers inside amaters-netd).
 */
#ifndef AMN_EXAMPLE_ECHO_H
#define AMN_EXAMPLE_ECHO_H

#include <amn/amn.h>

/* Registers both methods on a server that has not started. Returns 0 or an
 * AMN_E* code. */
int ex_echo_register(amn_server *srv);

#endif
