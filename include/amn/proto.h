/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-net — the amaters.v1 messages without copies.
 *
 * QueryRequest  { bytes query_bytes = 1; bytes client_signature = 2; }
 * QueryResponse { bytes result_bytes = 1; bytes server_proof = 2; }
 * Both messages are "two bytes fields", so one pair of functions serves both.
 * Decoding yields pointers into the input (no copy); unknown fields are
 * skipped as protobuf requires. All functions are pure and thread-safe.
 */
#ifndef AMN_PROTO_H
#define AMN_PROTO_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AMN_METHOD_EXECUTE "/amaters.v1.AmateRS/Execute"
#define AMN_METHOD_EXECUTE_STREAM "/amaters.v1.AmateRS/ExecuteStream"
#define AMN_METHOD_HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define AMN_METHOD_HEALTH_WATCH "/grpc.health.v1.Health/Watch"

/** Two bytes fields (1 and 2) of a QueryRequest or QueryResponse. */
typedef struct amn_pair_view {
  const uint8_t *f1; size_t f1_len;
  const uint8_t *f2; size_t f2_len;
} amn_pair_view;

/** Decodes `buf` into views. Returns 0 or AMN_EPROTO for malformed input
 *  (truncated varint/length, wrong wire type for fields 1/2). */
AMN_API int amn_pair_decode(const uint8_t *buf, size_t len, amn_pair_view *out);

/** Exact encoded size of a message with the two fields. */
AMN_API size_t amn_pair_encoded_size(size_t f1_len, size_t f2_len);

/** Encodes into `out` (at least amn_pair_encoded_size bytes). Empty fields
 *  are omitted (proto3). Returns the bytes written. */
AMN_API size_t amn_pair_encode(uint8_t *out, const uint8_t *f1, size_t f1_len,
                       const uint8_t *f2, size_t f2_len);

/** One field of any protobuf message, as read by amn_pb_next. */
typedef struct amn_pb_field {
  uint32_t number;        /**< the field number (1 .. 2^29-1) */
  unsigned wire_type;     /**< 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
  uint64_t varint;        /**< wire type 0: the value; 1 and 5: the raw little-endian value */
  const uint8_t *data;    /**< wire type 2: the bytes (pointing into the input) */
  size_t len;             /**< wire type 2: their length */
} amn_pb_field;

/** Reads the field at offset *pos of buf[0..len) and moves *pos past it.
 *  Returns 1 with *f filled, 0 at the end of the message, AMN_EPROTO if the
 *  input is malformed (truncated, field number 0 or too large, groups or
 *  wire types 6 and 7). Pure: a reader of peer input without allocation. */
AMN_API int amn_pb_next(const uint8_t *buf, size_t len, size_t *pos, amn_pb_field *f);

#ifdef __cplusplus
}
#endif
#endif
