/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: test hooks of a client's HTTP/3 transport,
 * reached through the client (client.c). Included by client.c and tests.
 */
#ifndef AMN_CLIENT_HOOKS_H
#define AMN_CLIENT_HOOKS_H

#include <stdbool.h>

#include "amn/client.h"
#include "transport/h3/h3.h"

/* Test hooks, run on the client's I/O thread (never call them from a
 * client callback: they wait for that thread; each returns once done;
 * 0, or AMN_ESTATE when there is no ready HTTP/3 connection or QUIC
 * refused, e.g. a key update while the previous one is unconfirmed):
 *  - rebind: the connection moves to a new UDP socket (new local port);
 *    nat_only: the client does not announce it (a NAT rebinding as the
 *    client sees it: same connection ID), else an active migration
 *    (a fresh connection ID, path validation);
 *  - key update: initiates a 1-RTT key update;
 *  - close: closes the current connection (CONNECTION_CLOSE); the next
 *    call connects again (with the session ticket and token kept). */
#ifdef AMN_TEST_HOOKS /* test builds only (CMake: AMN_BUILD_TESTS) */
int amn_h3c_test_rebind(amn_client *cl, bool nat_only);
int amn_h3c_test_key_update(amn_client *cl);
int amn_h3c_test_close(amn_client *cl);
/* The first byte of the connection ID the server issued to the current
 * connection (for the server, the index of the loop serving it), or
 * AMN_ESTATE. */
int amn_h3c_test_peer_cid0(amn_client *cl);
/* b >= 0: the first byte of the destination connection ID of every new
 * HTTP/3 connection's first Initial (which the client chooses); -1: random
 * again. Set it while no connection is being opened. */
void amn_h3c_test_set_dcid0(int b);
/* While set, amn_client_new starts no I/O thread: the thread that creates
 * the client is its I/O thread and drives its loop (ev_run on cl->ev, e.g.
 * EVRUN_NOWAIT turns); amn_client_free then runs the loop's last turn on
 * the caller's thread instead of joining. Never use the blocking calls
 * (amn_client_unary, amn_client_connect) of such a client. */
extern bool amn_client_test_no_thread;
#endif

#endif
