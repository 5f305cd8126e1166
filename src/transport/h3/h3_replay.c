/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * 0-RTT anti-replay table (see h3.h). GnuTLS (gnutls_anti_replay_*) checks
 * that a ClientHello with early data arrives within the recording window
 * of its ticket's age and asks us to record it; a ClientHello seen before
 * within the window is a replay and gets no 0-RTT.
 *
 * Entries (SHA-256 of the identifier) sit in a FIFO ring in the order they
 * were added, which is also the order they expire in (one window length
 * for all), and in hash buckets for lookup. The ring never grows: when it
 * is full of entries that have not expired, adding fails and the caller
 * refuses 0-RTT rather than accept what it could not record.
 *
 * The same structure with a value per entry is the server's cache of
 * client identities by session ticket (amn_h3_tcache_*): there, when full,
 * the oldest entry goes.
 */
#include <gnutls/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "transport/h3/h3.h"

#define NONE UINT32_MAX

typedef struct entry {
  uint8_t digest[32];
  time_t expires;
  uint32_t next; /* bucket chain */
  void *val;
} entry;

struct amn_h3_replay {
  pthread_mutex_t mu;
  void (*free_val)(void *);  /* cache mode */
  entry *ring;
  size_t cap, head, count;  /* oldest at head */
  uint32_t *bucket;
  size_t nbucket;           /* power of two */
};

amn_h3_replay *amn_h3_tcache_new(size_t max_entries, void (*free_val)(void *)) {
  amn_h3_replay *t = amn_h3_replay_new(max_entries);
  if (t) t->free_val = free_val;
  return t;
}

amn_h3_replay *amn_h3_replay_new(size_t max_entries) {
  if (max_entries == 0 || max_entries >= NONE) return NULL;
  amn_h3_replay *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->cap = max_entries;
  t->nbucket = 16;
  while (t->nbucket < max_entries) t->nbucket <<= 1;
  t->ring = calloc(t->cap, sizeof *t->ring);
  t->bucket = malloc(t->nbucket * sizeof *t->bucket);
  if (!t->ring || !t->bucket) {
    amn_h3_replay_free(t);
    return NULL;
  }
  for (size_t i = 0; i < t->nbucket; i++) t->bucket[i] = NONE;
  pthread_mutex_init(&t->mu, NULL);
  return t;
}

void amn_h3_replay_free(amn_h3_replay *t) {
  if (!t) return;
  if (t->free_val && t->ring)
    for (size_t i = 0; i < t->count; i++) t->free_val(t->ring[(t->head + i) % t->cap].val);
  if (t->ring && t->bucket) pthread_mutex_destroy(&t->mu);
  free(t->ring);
  free(t->bucket);
  free(t);
}

static size_t bucket_of(const amn_h3_replay *t, const uint8_t *d) {
  uint64_t h;
  memcpy(&h, d, sizeof h); /* a digest: uniformly distributed already */
  return (size_t)h & (t->nbucket - 1);
}

/* Drops the oldest entry (from its bucket chain too). */
static void pop_oldest(amn_h3_replay *t) {
  uint32_t idx = (uint32_t)t->head;
  entry *e = &t->ring[idx];
  for (uint32_t *p = &t->bucket[bucket_of(t, e->digest)]; *p != NONE; p = &t->ring[*p].next)
    if (*p == idx) {
      *p = e->next;
      break;
    }
  if (t->free_val) t->free_val(e->val);
  e->val = NULL;
  t->head = (t->head + 1) % t->cap;
  t->count--;
}

static uint32_t find(amn_h3_replay *t, const uint8_t *d) {
  for (uint32_t i = t->bucket[bucket_of(t, d)]; i != NONE; i = t->ring[i].next)
    if (memcmp(t->ring[i].digest, d, 32) == 0) return i;
  return NONE;
}

/* Adds (d, val) (lock held, d not present). Full: -1, or in cache mode
 * the oldest entry goes. */
static int insert(amn_h3_replay *t, const uint8_t *d, time_t expires, void *val) {
  if (t->count == t->cap) {
    if (!t->free_val) return -1;
    pop_oldest(t);
  }
  uint32_t idx = (uint32_t)((t->head + t->count) % t->cap);
  entry *e = &t->ring[idx];
  size_t b = bucket_of(t, d);
  memcpy(e->digest, d, 32);
  e->expires = expires;
  e->val = val;
  e->next = t->bucket[b];
  t->bucket[b] = idx;
  t->count++;
  return 0;
}

int amn_h3_replay_add(amn_h3_replay *t, const uint8_t *id, size_t len, time_t expires, time_t now) {
  uint8_t d[32];
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, id, len, d) < 0) return -1;
  pthread_mutex_lock(&t->mu);
  while (t->count && t->ring[t->head].expires < now) pop_oldest(t);
  int rc = find(t, d) != NONE ? 1 : insert(t, d, expires, NULL);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int amn_h3_tcache_put(amn_h3_replay *t, const uint8_t *id, size_t len, time_t expires, time_t now, void *val) {
  uint8_t d[32];
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, id, len, d) < 0) {
    t->free_val(val);
    return -1;
  }
  pthread_mutex_lock(&t->mu);
  while (t->count && t->ring[t->head].expires < now) pop_oldest(t);
  uint32_t i = find(t, d);
  int rc = 0;
  if (i != NONE) { /* the same ticket twice: keep the first */
    t->free_val(val);
  } else {
    rc = insert(t, d, expires, val);
  }
  pthread_mutex_unlock(&t->mu);
  return rc;
}

bool amn_h3_tcache_get(amn_h3_replay *t, const uint8_t *id, size_t len, time_t now,
                       bool (*copy)(void *dst, const void *val), void *dst) {
  uint8_t d[32];
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, id, len, d) < 0) return false;
  pthread_mutex_lock(&t->mu);
  uint32_t i = find(t, d);
  bool ok = i != NONE && t->ring[i].expires >= now && copy(dst, t->ring[i].val);
  pthread_mutex_unlock(&t->mu);
  return ok;
}

size_t amn_h3_replay_count(amn_h3_replay *t) {
  pthread_mutex_lock(&t->mu);
  size_t n = t->count;
  pthread_mutex_unlock(&t->mu);
  return n;
}
