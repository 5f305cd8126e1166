/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A user-space UDP relay for HTTP/3 tests: sits between a QUIC client and
 * a server on loopback and impairs the datagrams passing through, each
 * direction on its own: loss, reordering, duplication, delay (+ jitter),
 * corruption, blackhole. Runs in its own thread; every setting can be
 * changed at any time from any thread.
 *
 * Each client address (ip:port) seen on the relay's front socket gets its
 * own upstream socket towards the server, so the server sees one address
 * per client, and a "rebind" (new upstream sockets) looks like a NAT
 * rebinding to the server; in churn mode every datagram of a client goes
 * out from a fresh socket on another 127.0.0.x address and port (NAT
 * rebinding churn), the answers to the latest ones still come back to
 * it. The first flight of a client (what it sends
 * before the first answer arrives) can be captured and replayed later
 * from a fresh address, as an attacker replaying 0-RTT data would.
 * Pseudo-random decisions come from a seeded xorshift generator
 * (reproducible for a given seed and packet order).
 */
#ifndef AMN_TEST_UDP_RELAY_H
#define AMN_TEST_UDP_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct udp_relay udp_relay;

enum { RELAY_C2S = 0, RELAY_S2C = 1 };

/* Impairments of one direction (all probabilities in [0, 1]). */
typedef struct relay_dir_cfg {
  double loss;          /* drop the datagram */
  double dup;           /* send it twice (the copy 0-2 ms later) */
  double reorder;       /* hold it back reorder_ms so that later ones overtake it */
  uint32_t reorder_ms;  /* default 3 when 0 */
  double corrupt;       /* flip one random bit of it */
  uint32_t delay_ms;    /* fixed one-way delay */
  uint32_t jitter_ms;   /* + uniform random [0, jitter_ms] (may also reorder) */
  bool blackhole;       /* drop everything */
} relay_dir_cfg;

typedef struct relay_stats {
  uint64_t in, out, dropped, duplicated, reordered, corrupted, bytes;
  uint64_t churned;     /* C2S: datagrams sent from a fresh address (churn mode) */
} relay_stats;

/* Starts a relay on 127.0.0.1 (port chosen by the kernel) forwarding to
 * 127.0.0.1:server_port. NULL on failure (reason on stderr). */
udp_relay *udp_relay_start(uint16_t server_port, uint64_t seed);
uint16_t udp_relay_port(const udp_relay *r);
/* Changes the impairments of one direction (RELAY_C2S / RELAY_S2C). */
void udp_relay_set(udp_relay *r, int dir, const relay_dir_cfg *cfg);
/* Clears the impairments of both directions. */
void udp_relay_clear(udp_relay *r);
void udp_relay_stats(udp_relay *r, int dir, relay_stats *out);
/* Forwards to another server port from now on (new upstream sockets). */
void udp_relay_set_target(udp_relay *r, uint16_t server_port);
/* Every client gets a new upstream socket (new source port towards the
 * server): a NAT rebinding as the server sees it. Returns once done. */
void udp_relay_rebind(udp_relay *r);
/* Churn mode on/off (see above). */
void udp_relay_churn(udp_relay *r, bool on);
/* Capture on: the first flight of every new client is recorded (the last
 * one recorded is kept). */
void udp_relay_capture(udp_relay *r, bool on);
/* Sends the recorded first flight again from a new address (answers are
 * read and dropped). Returns the number of datagrams sent, 0 if none. */
int udp_relay_replay(udp_relay *r);
/* Copies datagram i of the recorded first flight into buf (at most cap
 * bytes); returns its length, 0 when there is no datagram i. */
size_t udp_relay_captured(udp_relay *r, size_t i, uint8_t *buf, size_t cap);
/* Number of client addresses seen so far. */
int udp_relay_sessions(udp_relay *r);
void udp_relay_stop(udp_relay *r);

#endif
