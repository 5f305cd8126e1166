/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the nonces of signed queries seen within the signature window
 * (replay protection). One table per server, fixed size (allocated once),
 * shared by the server's loops under a mutex. Open addressing with linear
 * probing over at most AMN_REPLAY_PROBES slots; an entry whose expiry has
 * passed is free for reuse but still continues a probe sequence, so a
 * nonce stored further along is still found; a never-used slot ends it.
 */
#ifndef AMN_SERVER_SIG_REPLAY_H
#define AMN_SERVER_SIG_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#define AMN_REPLAY_PROBES 64

typedef struct amn_sig_replay amn_sig_replay;

typedef enum { AMN_REPLAY_FRESH = 0, AMN_REPLAY_SEEN = 1, AMN_REPLAY_FULL = 2 } amn_replay_verdict;

/* A table of `entries` slots (rounded up to a power of two, at least 64);
 * NULL when out of memory. */
amn_sig_replay *amn_sig_replay_new(size_t entries);
void amn_sig_replay_free(amn_sig_replay *r);
/* Records `nonce` (16 bytes) until `expiry_ms` when it is not there yet
 * (FRESH); SEEN when it is there and not expired at `now_ms`; FULL when
 * the probe sequence holds no free slot (nothing recorded). Thread-safe. */
amn_replay_verdict amn_sig_replay_check(amn_sig_replay *r, const uint8_t nonce[16], uint64_t expiry_ms,
                                        uint64_t now_ms);

#endif
