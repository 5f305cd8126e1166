/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the client's policies as pure functions (sans-I/O, no clock,
 * no allocation): the random source, connection backoff, the power of two
 * choices, retry eligibility and retry throttling. The pool (pool.c) and
 * the call core (client.c) apply them; tests/unit/test_client_policy.c
 * checks them.
 */
#ifndef AMN_CLIENT_POLICY_H
#define AMN_CLIENT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "amn/common.h"

/* xorshift64: the next value of *state (never 0 when seeded non-zero). */
uint64_t amn_policy_rand(uint64_t *state);

/* The backoff before an endpoint that failed `fails` times in a row (>= 1)
 * is tried again, in seconds: base * 2^(fails-1), capped at cap, times a
 * jitter in [0.8, 1.2) taken from r. */
double amn_policy_backoff_s(uint32_t fails, double base_s, double cap_s, uint64_t r);

/* Power of two choices among n candidates with the given loads (calls in
 * flight): two distinct candidates drawn with r1 and r2, the less loaded
 * one wins (the first drawn on a tie). n >= 1; returns an index < n. */
size_t amn_policy_p2c(const uint32_t *loads, size_t n, uint64_t r1, uint64_t r2);

/* Retry throttling (gRPC retryThrottling with maxTokens 10, ratio 0.1):
 * the bucket starts full. */
#define AMN_RETRY_TOKENS_MAX 10.0
/* A call failed after it may have run (not for unprocessed failures). */
void amn_policy_retry_failure(double *tokens);
/* A call succeeded. */
void amn_policy_retry_success(double *tokens);

/* What is known of a failed attempt. */
typedef struct amn_retry_case {
  bool replayable;      /* the request can be sent again whole */
  bool probe;           /* the pool's health check: never retried */
  bool stopping;        /* the client is shutting down */
  bool cancelled;       /* the application cancelled the call */
  bool unprocessed;     /* the server provably never ran it (GOAWAY, REFUSED_STREAM, never sent) */
  bool idempotent;      /* the application marked it safe to run twice */
  amn_status_code code; /* how the attempt failed */
  uint32_t attempts;    /* attempts made so far (>= 1) */
  uint32_t max_retries; /* amn_client_opts.max_retries */
} amn_retry_case;

/* Whether to send the call again: an unprocessed attempt always (within
 * max_retries), an idempotent one after UNAVAILABLE while the throttling
 * bucket holds more than half its tokens. */
bool amn_policy_may_retry(const amn_retry_case *k, double tokens);

/* ---- DNS (the pool's names, client/resolve.c) ---- */

/* Seconds until a name is looked up again after an answer whose smallest
 * TTL is ttl_s: the TTL, but at least min_ms and at most max_ms. */
double amn_policy_dns_refresh_s(uint32_t ttl_s, uint32_t min_ms, uint32_t max_ms);

/* Seconds until a lookup that failed `fails` times in a row (>= 1) is
 * tried again: min_ms doubled per failure, capped at max_ms, times a
 * jitter in [0.8, 1.2) taken from r. */
double amn_policy_dns_retry_s(uint32_t fails, uint32_t min_ms, uint32_t max_ms, uint64_t r);

/* Whether a connection failure (or a call finding nothing to connect to)
 * looks the name up now: not while a lookup is in flight, and not sooner
 * than min_ms after the previous lookup started (now, last_start: seconds
 * of one clock; last_start < 0: never looked up). */
bool amn_policy_dns_now(double now, double last_start, uint32_t min_ms, bool in_flight);

/* How an answer changes the addresses in use: keep[i] for each of the
 * ncur current addresses (false: its connections drain, it takes no new
 * call), add[j] for each of the nnext answered ones that is new. An answer
 * without any address changes nothing (the last good addresses stay: every
 * keep[] true, no add[]). Returns the number of addresses dropped plus
 * added. Addresses are compared as numeric strings. */
size_t amn_policy_dns_diff(const char (*cur)[46], size_t ncur, const char (*next)[46], size_t nnext, bool *keep,
                           bool *add);

#endif
