/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The client's policies as pure functions (client/policy.h). */
#include "client/policy.h"

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
