/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The replay table of signed queries' nonces (sig_replay.h). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "server/sig_replay.h"
#include "tls/sig.h"

typedef struct slot {
  uint8_t nonce[16];
  uint64_t expiry_ms; /* 0: never used */
} slot;

struct amn_sig_replay {
  pthread_mutex_t mu;
  size_t mask;
  uint64_t key[2]; /* keys the slot choice: nonces are chosen by the clients */
  slot *slots;
};

amn_sig_replay *amn_sig_replay_new(size_t entries) {
  size_t n = 64;
  while (n < entries && n < ((size_t)1 << 40)) n <<= 1;
  amn_sig_replay *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->slots = calloc(n, sizeof *r->slots);
  if (!r->slots || amn_sig_random((uint8_t *)r->key, sizeof r->key) != 0) {
    free(r->slots);
    free(r);
    return NULL;
  }
  r->mask = n - 1;
  pthread_mutex_init(&r->mu, NULL);
  return r;
}

void amn_sig_replay_free(amn_sig_replay *r) {
  if (!r) return;
  pthread_mutex_destroy(&r->mu);
  free(r->slots);
  free(r);
}

static size_t home(const amn_sig_replay *r, const uint8_t nonce[16]) {
  uint64_t a, b;
  memcpy(&a, nonce, 8);
  memcpy(&b, nonce + 8, 8);
  uint64_t h = (a ^ r->key[0]) * 0x9e3779b97f4a7c15u;
  h ^= (b + r->key[1]) * 0xc2b2ae3d27d4eb4fu;
  h ^= h >> 29;
  return (size_t)h & r->mask;
}

amn_replay_verdict amn_sig_replay_check(amn_sig_replay *r, const uint8_t nonce[16], uint64_t expiry_ms,
                                        uint64_t now_ms) {
  pthread_mutex_lock(&r->mu);
  size_t i = home(r, nonce);
  slot *free_slot = NULL;
  amn_replay_verdict v = AMN_REPLAY_FULL;
  for (int k = 0; k < AMN_REPLAY_PROBES; k++, i = (i + 1) & r->mask) {
    slot *s = &r->slots[i];
    bool live = s->expiry_ms > now_ms;
    if (live && memcmp(s->nonce, nonce, 16) == 0) {
      v = AMN_REPLAY_SEEN;
      break;
    }
    if (!live && !free_slot) free_slot = s;
    if (!s->expiry_ms) break; /* never used: the nonce is not further along */
  }
  if (v != AMN_REPLAY_SEEN && free_slot) {
    memcpy(free_slot->nonce, nonce, 16);
    free_slot->expiry_ms = expiry_ms ? expiry_ms : 1;
    v = AMN_REPLAY_FRESH;
  }
  pthread_mutex_unlock(&r->mu);
  return v;
}
