/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the HTTP/2 client transport (h2_client.c), bound through the
 * client binding interface. Included by the client core (src/client/).
 */
#ifndef AMN_TRANSPORT_H2_CLIENT_H
#define AMN_TRANSPORT_H2_CLIENT_H

#include "transport/ctransport.h"

extern const amn_ctransport amn_h2c_transport;

#ifdef AMN_TEST_HOOKS
/* Test builds: runs the keepalive timer of a connection of this transport
 * now; it acts as its clock says (a test's clock: h2io.h's `now`). */
void amn_h2c_test_fire_timers(void *conn);
#endif

#endif
