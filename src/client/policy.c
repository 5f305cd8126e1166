/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The client's policies as pure functions (client/policy.h). */
#include "client/policy.h"

#include <string.h>

uint64_t amn_policy_rand(uint64_t *state) {
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

double amn_policy_backoff_s(uint32_t fails, double base_s, double cap_s, uint64_t r) {
  double d = base_s;
  for (uint32_t i = 1; i < fails && d < cap_s; i++) d *= 2;
  if (d > cap_s) d = cap_s;
  return d * (0.8 + 0.4 * (double)(r % 1000000) / 1e6);
}

size_t amn_policy_p2c(const uint32_t *loads, size_t n, uint64_t r1, uint64_t r2) {
  if (n <= 1) return 0;
  size_t a = (size_t)(r1 % n), b = (size_t)(r2 % (n - 1));
  if (b >= a) b++;
  return loads[b] < loads[a] ? b : a;
}

void amn_policy_retry_failure(double *tokens) { *tokens = *tokens > 1 ? *tokens - 1 : 0; }

void amn_policy_retry_success(double *tokens) {
  if (*tokens < AMN_RETRY_TOKENS_MAX) *tokens += 0.1;
  if (*tokens > AMN_RETRY_TOKENS_MAX) *tokens = AMN_RETRY_TOKENS_MAX;
}

bool amn_policy_may_retry(const amn_retry_case *k, double tokens) {
  if (!k->replayable || k->probe || k->stopping || k->cancelled || k->attempts > k->max_retries) return false;
  if (k->unprocessed) return true;
  return k->idempotent && k->code == AMN_STATUS_UNAVAILABLE && tokens > AMN_RETRY_TOKENS_MAX / 2;
}

double amn_policy_dns_refresh_s(uint32_t ttl_s, uint32_t min_ms, uint32_t max_ms) {
  double lo = min_ms / 1000.0, hi = max_ms / 1000.0, t = ttl_s;
  if (hi < lo) hi = lo;
  return t < lo ? lo : t > hi ? hi : t;
}

double amn_policy_dns_retry_s(uint32_t fails, uint32_t min_ms, uint32_t max_ms, uint64_t r) {
  double lo = min_ms / 1000.0, hi = max_ms / 1000.0;
  return amn_policy_backoff_s(fails ? fails : 1, lo, hi < lo ? lo : hi, r);
}

bool amn_policy_dns_now(double now, double last_start, uint32_t min_ms, bool in_flight) {
  if (in_flight) return false;
  return last_start < 0 || now - last_start >= min_ms / 1000.0;
}

static bool in_set(const char (*set)[46], size_t n, const char *a) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(set[i], a) == 0) return true;
  return false;
}

size_t amn_policy_dns_diff(const char (*cur)[46], size_t ncur, const char (*next)[46], size_t nnext, bool *keep,
                           bool *add) {
  size_t changes = 0;
  for (size_t i = 0; i < ncur; i++) {
    keep[i] = nnext == 0 || in_set(next, nnext, cur[i]);
    changes += !keep[i];
  }
  for (size_t j = 0; j < nnext; j++) {
    add[j] = !in_set(cur, ncur, next[j]) && !in_set(next, j, next[j]);
    changes += add[j];
  }
  return changes;
}
