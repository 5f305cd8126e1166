/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters.v1 QueryRequest/QueryResponse: two bytes fields, encoded and
 * decoded without copies (protobuf wire format, proto3). */
#include <string.h>

#include "amn/proto.h"

/* Reads a base-128 varint of at most 10 bytes. */
static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < 10; i++) {
    if (*p >= end) return -1;
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

int amn_pair_decode(const uint8_t *buf, size_t len, amn_pair_view *out) {
  memset(out, 0, sizeof *out);
  const uint8_t *p = buf, *end = buf + len;
  while (p < end) {
    uint64_t tag, v;
    if (rd_varint(&p, end, &tag) || tag > UINT32_MAX || (tag >> 3) == 0) return AMN_EPROTO;
    uint64_t field = tag >> 3;
    unsigned wt = (unsigned)(tag & 7);
    if ((field == 1 || field == 2) && wt != 2) return AMN_EPROTO;
    switch (wt) {
    case 0: /* varint */
      if (rd_varint(&p, end, &v)) return AMN_EPROTO;
      break;
    case 1: /* fixed64 */
      if (end - p < 8) return AMN_EPROTO;
      p += 8;
      break;
    case 2: /* length-delimited */
      if (rd_varint(&p, end, &v) || v > (uint64_t)(end - p)) return AMN_EPROTO;
      if (field == 1) out->f1 = p, out->f1_len = (size_t)v;
      else if (field == 2) out->f2 = p, out->f2_len = (size_t)v;
      p += v;
      break;
    case 5: /* fixed32 */
      if (end - p < 4) return AMN_EPROTO;
      p += 4;
      break;
    default: /* 3/4 (groups, not in proto3), 6/7 (invalid) */
      return AMN_EPROTO;
    }
  }
  return 0;
}

int amn_pb_next(const uint8_t *buf, size_t len, size_t *pos, amn_pb_field *f) {
  if (*pos >= len) return 0;
  const uint8_t *p = buf + *pos, *end = buf + len;
  uint64_t tag, v;
  memset(f, 0, sizeof *f);
  if (rd_varint(&p, end, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return AMN_EPROTO;
  f->number = (uint32_t)(tag >> 3);
  f->wire_type = (unsigned)(tag & 7);
  switch (f->wire_type) {
  case 0:
    if (rd_varint(&p, end, &f->varint)) return AMN_EPROTO;
    break;
  case 1:
  case 5: {
    size_t n = f->wire_type == 1 ? 8 : 4;
    if ((size_t)(end - p) < n) return AMN_EPROTO;
    for (size_t i = 0; i < n; i++) f->varint |= (uint64_t)p[i] << (8 * i);
    p += n;
    break;
  }
  case 2:
    if (rd_varint(&p, end, &v) || v > (uint64_t)(end - p)) return AMN_EPROTO;
    f->data = p;
    f->len = (size_t)v;
    p += v;
    break;
  default:
    return AMN_EPROTO;
  }
  *pos = (size_t)(p - buf);
  return 1;
}

static size_t varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, n++;
  return n;
}

static uint8_t *wr_varint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

size_t amn_pair_encoded_size(size_t f1_len, size_t f2_len) {
  size_t n = 0;
  if (f1_len) n += 1 + varint_size(f1_len) + f1_len;
  if (f2_len) n += 1 + varint_size(f2_len) + f2_len;
  return n;
}

size_t amn_pair_encode(uint8_t *out, const uint8_t *f1, size_t f1_len,
                       const uint8_t *f2, size_t f2_len) {
  uint8_t *p = out;
  if (f1_len) {
    *p++ = 0x0a; /* field 1, wire type 2 */
    p = wr_varint(p, f1_len);
    memcpy(p, f1, f1_len);
    p += f1_len;
  }
  if (f2_len) {
    *p++ = 0x12; /* field 2, wire type 2 */
    p = wr_varint(p, f2_len);
    memcpy(p, f2, f2_len);
    p += f2_len;
  }
  return (size_t)(p - out);
}
