/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* gRPC Length-Prefixed-Message framing: 1 flag byte + 4-byte big-endian
 * length + message. Chunks may split anywhere, including inside the prefix. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc.h"

void amn_deframer_init(amn_deframer *d, size_t max_len) {
  memset(d, 0, sizeof *d);
  d->max_len = max_len;
}

void amn_deframer_free(amn_deframer *d) {
  free(d->buf);
  d->buf = NULL;
  d->in_msg = false;
  d->hdr_have = d->need = d->have = d->cap = 0;
}

bool amn_deframer_idle(const amn_deframer *d) { return d->hdr_have == 0 && !d->in_msg; }

/* Room for `more` bytes after `have`: the whole message when it is small,
 * else doubling with what arrives (never beyond need). */
static int reserve(amn_deframer *d, size_t more) {
  size_t want = d->have + more; /* <= need */
  if (want <= d->cap) return 0;
  size_t cap = d->need <= AMN_DEFRAMER_CHUNK ? d->need : d->cap ? d->cap * 2 : AMN_DEFRAMER_CHUNK;
  if (cap < want) cap = want;
  if (cap > d->need) cap = d->need;
  uint8_t *p = realloc(d->buf, cap);
  if (!p) return AMN_ENOMEM;
  d->buf = p;
  d->cap = cap;
  return 0;
}

void amn_frame_prefix(uint8_t out[5], size_t len) {
  out[0] = 0;
  out[1] = (uint8_t)(len >> 24);
  out[2] = (uint8_t)(len >> 16);
  out[3] = (uint8_t)(len >> 8);
  out[4] = (uint8_t)len;
}

/* State: !in_msg -> collecting the prefix (hdr_have of 5 bytes);
 * in_msg -> collecting `need` message bytes into buf. */
int amn_deframer_feed(amn_deframer *d, const uint8_t *data, size_t len,
                      amn_deframer_cb cb, void *ud) {
  while (len > 0) {
    if (!d->in_msg) {
      size_t take = 5 - d->hdr_have;
      if (take > len) take = len;
      memcpy(d->hdr + d->hdr_have, data, take);
      d->hdr_have += take;
      data += take;
      len -= take;
      if (d->hdr_have < 5) break;
      d->hdr_have = 0;
      if (d->hdr[0] > 1) return AMN_EPROTO;
      size_t n = (size_t)d->hdr[1] << 24 | (size_t)d->hdr[2] << 16 | (size_t)d->hdr[3] << 8 | d->hdr[4];
      if (n > d->max_len) return AMN_ETOOBIG;
      d->compressed = d->hdr[0] == 1;
      if (n == 0) {
        int rc = cb(ud, NULL, 0, d->compressed);
        if (rc) return rc;
        continue;
      }
      d->in_msg = true;
      d->need = n;
      d->have = 0;
      continue;
    }
    size_t take = d->need - d->have;
    if (take > len) take = len;
    if (reserve(d, take) != 0) return AMN_ENOMEM;
    memcpy(d->buf + d->have, data, take);
    d->have += take;
    data += take;
    len -= take;
    if (d->have == d->need) {
      uint8_t *msg = d->buf;
      size_t n = d->need;
      d->buf = NULL;
      d->in_msg = false;
      d->need = d->have = d->cap = 0;
      int rc = cb(ud, msg, n, d->compressed);
      if (rc) return rc;
    }
  }
  return 0;
}

amn_status_code amn_deframer_status(const amn_deframer *d, int rc, char *msg, size_t cap) {
  if (cap) msg[0] = '\0';
  switch (rc) {
  case AMN_ETOOBIG: {
    size_t n = ((size_t)d->hdr[1] << 24) | ((size_t)d->hdr[2] << 16) | ((size_t)d->hdr[3] << 8) | d->hdr[4];
    snprintf(msg, cap, "received message larger than max (%zu vs. %zu bytes)", n, d->max_len);
    return AMN_STATUS_RESOURCE_EXHAUSTED;
  }
  case AMN_EPROTO:
    snprintf(msg, cap, "invalid message flag byte");
    return AMN_STATUS_INTERNAL;
  case AMN_ENOMEM:
    snprintf(msg, cap, "out of memory for a received message");
    return AMN_STATUS_RESOURCE_EXHAUSTED;
  default:
    return AMN_STATUS_OK;
  }
}
