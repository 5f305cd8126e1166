/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the HTTP/2 binding, server side (h2_server.c), as the server
 * core starts and stops it. Everything runs on the loop's thread.
 */
#ifndef AMN_TRANSPORT_H2_SERVER_H
#define AMN_TRANSPORT_H2_SERVER_H

#include "transport/stransport.h"

/* A new TCP connection (fd connected, non-blocking): TLS when the
 * configuration has credentials, then HTTP/2. `peer_addr` is for logs.
 * The fd is owned by the binding from here on (closed on failure). */
void amn_h2s_accept(amn_st_loop *loop, int fd, const char *peer_addr);
/* Over max_connections: TLS handshake, then GOAWAY "max_connections
 * reached" and close; nothing runs. */
void amn_h2s_refuse(amn_st_loop *loop, int fd, const char *peer_addr);
/* GOAWAY on every connection of the loop; each closes when its calls are done. */
void amn_h2s_drain_all(amn_st_loop *loop);
/* Hard stop: calls left end with UNAVAILABLE, every connection closes. */
void amn_h2s_close_all(amn_st_loop *loop);
#ifdef AMN_TEST_HOOKS
/* Test builds: runs the keepalive timer of every connection of the loop
 * now; it acts as its clock says (a test's clock: h2io.h's `now`). */
void amn_h2s_test_fire_timers(amn_st_loop *loop);
#endif
/* Frees the binding's state of the loop (after the loop thread exited;
 * every connection is closed). */
void amn_h2s_free(amn_st_loop *loop);

#endif
