/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the HTTP/3 client transport (h3_client*.c), bound through the
 * client binding interface. Included by the client core (src/client/) and
 * the HTTP/3 client's own files.
 */
#ifndef AMN_TRANSPORT_H3_CLIENT_H
#define AMN_TRANSPORT_H3_CLIENT_H

#include "transport/ctransport.h"

extern const amn_ctransport amn_h3c_transport;

#ifdef AMN_TEST_HOOKS /* test builds only (CMake: AMN_BUILD_TESTS); see amn_h3_test_clock in h3.h */
#include <sys/socket.h>
/* When >= 0, the first byte of the destination connection ID a new
 * connection chooses for its first Initial (else random). */
extern int amn_h3c_test_dcid0;
/* Hands a datagram to the client's connection whose socket is `fd`, as its
 * recvmmsg path does (dropped when there is none); the connection's
 * writes follow from the loop, as after a read. */
void amn_h3c_test_datagram(amn_ct_client *tc, int fd, const uint8_t *pkt, size_t len, const struct sockaddr *from,
                           socklen_t fromlen);
#endif

#endif
