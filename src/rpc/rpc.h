/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: gRPC protocol logic shared by the HTTP/2 and HTTP/3 transports.
 * Sans-I/O: consumes header fields and byte chunks, produces decisions and
 * header lists. No sockets, no event loop, no allocation except where noted.
 */
#ifndef AMN_RPC_H
#define AMN_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "amn/common.h"

/* ------------------------------------------------------------------ */
/* Length-prefixed message framing                                    */
/* ------------------------------------------------------------------ */

/* Called once per complete message. `msg` is heap memory (malloc) whose
 * ownership passes to the callback (it must free() it eventually); NULL
 * when len == 0. Return 0 to continue, non-zero to abort feeding (the
 * value is returned by amn_deframer_feed). */
typedef int (*amn_deframer_cb)(void *ud, uint8_t *msg, size_t len, bool compressed);

typedef struct amn_deframer {
  uint8_t hdr[5];
  size_t hdr_have;   /* bytes of the 5-byte prefix seen */
  bool in_msg;       /* the prefix is complete: collecting `need` message bytes */
  uint8_t *buf;      /* message being assembled: grows with the bytes that
                      * arrive, never reserved at the announced size */
  size_t cap;        /* bytes allocated at buf */
  size_t need;       /* message length from the prefix */
  size_t have;       /* bytes of the message received */
  size_t max_len;    /* messages longer than this are refused */
  bool compressed;
} amn_deframer;

void amn_deframer_init(amn_deframer *d, size_t max_len);
/* Frees a partial message. The deframer may be re-initialised afterwards. */
void amn_deframer_free(amn_deframer *d);
/* Messages up to this size get their whole buffer when their first bytes
 * arrive; a larger one starts with this much and at most doubles with
 * what arrives, so a peer that announces a large message and sends little
 * holds little memory (at most twice what it sent, or this). */
#define AMN_DEFRAMER_CHUNK (64 * 1024)
/* Feeds a chunk, split anywhere. Returns 0; AMN_ETOOBIG as soon as a prefix
 * announces more than max_len (nothing of that message is buffered);
 * AMN_EPROTO for a flag byte other than 0/1; AMN_ENOMEM; or the callback's
 * non-zero return value. After an error the deframer must not be fed. */
int amn_deframer_feed(amn_deframer *d, const uint8_t *data, size_t len,
                      amn_deframer_cb cb, void *ud);
/* true when no partial message is pending (a clean end of stream). */
bool amn_deframer_idle(const amn_deframer *d);
/* The gRPC status of a deframer error `rc` (AMN_ETOOBIG, AMN_EPROTO,
 * AMN_ENOMEM from amn_deframer_feed), with its message written into msg
 * (NUL-terminated, at most cap bytes): RESOURCE_EXHAUSTED for a message
 * over the limit (naming both sizes) or out of memory, INTERNAL for a bad
 * flag byte. AMN_STATUS_OK for 0 or any other value (a callback's own). */
amn_status_code amn_deframer_status(const amn_deframer *d, int rc, char *msg, size_t cap);
/* The message of a call failed for a compressed message: no grpc-encoding
 * is ever negotiated, so the compressed flag is a protocol error (INTERNAL). */
#define AMN_RPC_COMPRESSED_MSG "compressed message without a negotiated grpc-encoding"
/* Writes the 5-byte prefix for an uncompressed message of `len` bytes
 * (len <= UINT32_MAX). */
void amn_frame_prefix(uint8_t out[5], size_t len);

/* ------------------------------------------------------------------ */
/* Header value codecs                                                */
/* ------------------------------------------------------------------ */

/* grpc-timeout: 1-8 ASCII digits followed by one unit of H M S m u n.
 * Returns 0 and the timeout in nanoseconds (saturating at INT64_MAX), or
 * AMN_EINVAL for anything else. */
int amn_grpc_timeout_parse(const char *s, size_t len, int64_t *out_ns);
/* Formats a timeout (ns > 0) with at most 8 digits, choosing the finest
 * unit that fits and rounding up so the deadline is never shortened.
 * ns <= 0 gives "1n". Writes a NUL-terminated string into out (>= 16
 * bytes); returns length. */
size_t amn_grpc_timeout_format(int64_t ns, char out[16]);
/* The absolute deadline now_ns + timeout_ns, saturating at INT64_MAX
 * instead of overflowing (a peer may send 99999999H, which is ~1.1e4
 * years). Both arguments must be >= 0; a negative one gives now_ns. */
int64_t amn_deadline_after(int64_t now_ns, int64_t timeout_ns);
/* Time left until deadline_ns at now_ns, in whole milliseconds rounded
 * up: 0 when it has passed. Never overflows. */
int64_t amn_deadline_left_ms(int64_t deadline_ns, int64_t now_ns);

/* grpc-message percent-encoding: bytes outside 0x20-0x7e and '%' become
 * %XX (upper-case hex). Returns the encoded length; writes at most cap
 * bytes (not NUL-terminated) — call with cap=0 to size. */
size_t amn_pct_encode(const uint8_t *in, size_t len, char *out, size_t cap);
/* Decodes %XX sequences; malformed ones are kept literally (per spec).
 * out must have room for len bytes; returns the decoded length. */
size_t amn_pct_decode(const char *in, size_t len, uint8_t *out);

/* Base64 (standard alphabet) for -bin metadata. Encode writes padded
 * output; returns length ((len+2)/3*4). */
size_t amn_b64_encode(const uint8_t *in, size_t len, char *out);
/* Decodes padded or unpadded input. Returns decoded length, or -1 if
 * malformed (a byte outside the alphabet, '=' other than 1-2 trailing pad
 * bytes of a length that is a multiple of 4, or len % 4 == 1).
 * out must have room for len*3/4+3 bytes. */
long amn_b64_decode(const char *in, size_t len, uint8_t *out);

/* ------------------------------------------------------------------ */
/* Status mapping                                                     */
/* ------------------------------------------------------------------ */

/* HTTP/2 RST_STREAM / GOAWAY error code -> gRPC status (PROTOCOL-HTTP2.md):
 * NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR,
 * SETTINGS_TIMEOUT, FRAME_SIZE_ERROR, COMPRESSION_ERROR, CONNECT_ERROR ->
 * INTERNAL; REFUSED_STREAM -> UNAVAILABLE; CANCEL -> CANCELLED;
 * ENHANCE_YOUR_CALM -> RESOURCE_EXHAUSTED; INADEQUATE_SECURITY ->
 * PERMISSION_DENIED; unknown -> INTERNAL. */
amn_status_code amn_status_from_h2_error(uint32_t h2_error);
/* HTTP/3 error -> gRPC status (gRPC proposal G2): H3_REQUEST_CANCELLED
 * (0x10c) -> CANCELLED; H3_REQUEST_REJECTED (0x10b) -> UNAVAILABLE;
 * H3_EXCESSIVE_LOAD (0x107) -> RESOURCE_EXHAUSTED; others -> INTERNAL. */
amn_status_code amn_status_from_h3_error(uint64_t h3_error);
/* Non-200 HTTP status without grpc-status -> gRPC status (http-grpc-status-
 * mapping.md): 400 INTERNAL, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
 * 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, others UNKNOWN. */
amn_status_code amn_status_from_http(int http_status);

/* ------------------------------------------------------------------ */
/* Request headers (server side)                                      */
/* ------------------------------------------------------------------ */

/* Limits on received metadata. */
#define AMN_RPC_MAX_MD 64
#define AMN_RPC_MAX_HEADER_BYTES (16 * 1024)

/* One received metadata entry: heap copies (key NUL-terminated; value
 * decoded from base64 for -bin keys, NUL-terminated for convenience). */
typedef struct amn_rpc_md {
  char *key;
  uint8_t *value;
  size_t value_len;
} amn_rpc_md;

/* Accumulates and validates the request header block of one call. */
typedef struct amn_rpc_req {
  char *path;            /* :path (heap) */
  int64_t timeout_ns;    /* -1 when no grpc-timeout */
  bool method_post, has_method, has_scheme, has_path;
  bool content_type_ok, has_content_type;
  bool te_trailers;
  bool bad_timeout;
  bool has_encoding;     /* grpc-encoding present */
  bool encoding_identity;/* grpc-encoding absent or "identity" */
  char *encoding;        /* value of grpc-encoding (heap) or NULL */
  bool malformed;        /* a pseudo-header after a regular one, bad -bin, ... */
  bool too_large;        /* limits above exceeded (or out of memory) */
  bool seen_regular;     /* a non-pseudo field was seen */
  size_t header_bytes;   /* sum of nlen + vlen + 32 over all fields */
  size_t md_count;
  /* the arrays stay last: init clears only what precedes them */
  amn_rpc_md md[AMN_RPC_MAX_MD];
  amn_md md_view[AMN_RPC_MAX_MD]; /* public view of md[], filled by finish */
} amn_rpc_req;

void amn_rpc_req_init(amn_rpc_req *r);
void amn_rpc_req_free(amn_rpc_req *r);
/* Feeds one header field (names are lower-case per HTTP/2; values raw).
 * Reserved fields (pseudo-headers, te, content-type, user-agent, host,
 * content-length, accept-encoding, grpc-timeout, grpc-encoding,
 * grpc-accept-encoding, grpc-message-type, grpc-status, grpc-message,
 * connection-specific fields) are not metadata; everything else is
 * (grpc-status-details-bin included). A -bin value is split on ',' and each
 * part decoded into its own entry. Names outside [0-9a-z_.-] or values with
 * bytes outside 0x20-0x7e (non -bin) set malformed. */
void amn_rpc_req_header(amn_rpc_req *r, const uint8_t *name, size_t nlen,
                        const uint8_t *value, size_t vlen);

/* Verdict on a complete request header block. */
typedef struct amn_rpc_verdict {
  int http_status;          /* 200 when gRPC processing may go on */
  amn_status_code code;     /* gRPC status to answer with when !ok */
  const char *message;      /* static reason (for grpc-message / body) */
  bool ok;
} amn_rpc_verdict;

/* Validates a complete request header block (PROTOCOL-HTTP2.md), first
 * failing check wins (message NULL when ok):
 *   malformed / missing :method :scheme :path  -> 400, INTERNAL
 *   :method not POST                           -> 405, INTERNAL
 *   content-type not application/grpc[+...|;...] (missing too)
 *                                              -> 415, INTERNAL
 *   te not "trailers"                          -> 400, INTERNAL
 *   grpc-timeout unparseable                   -> 400, INTERNAL
 *   metadata over AMN_RPC_MAX_MD / _HEADER_BYTES -> 200, RESOURCE_EXHAUSTED
 *   grpc-encoding other than identity          -> 200, UNIMPLEMENTED (the
 *       transport adds grpc-accept-encoding: identity)
 *   otherwise ok=true, http_status 200.
 * Messages are static strings naming the problem. The unknown-method check
 * is the server's (UNIMPLEMENTED). Fills md_view from md. */
amn_rpc_verdict amn_rpc_req_finish(amn_rpc_req *r);

/* ------------------------------------------------------------------ */
/* Response headers / trailers (client side)                          */
/* ------------------------------------------------------------------ */

typedef struct amn_rpc_resp {
  int http_status;        /* :status; 0 until seen */
  bool content_type_ok;   /* application/grpc* */
  bool has_grpc_status;
  int grpc_status;
  char *grpc_message;     /* percent-decoded (heap) or NULL */
  char *encoding;         /* grpc-encoding (heap) or NULL */
  bool malformed;         /* bad :status / grpc-status, bad -bin (dropped) ... */
  bool too_large;         /* a block over AMN_RPC_MAX_MD / _HEADER_BYTES */
  bool seen_regular;      /* a non-pseudo field was seen */
  size_t header_bytes;    /* of the current block (as amn_rpc_req) */
  size_t md_count;
  amn_rpc_md md[AMN_RPC_MAX_MD];   /* metadata of the current block (last: see init) */
} amn_rpc_resp;

void amn_rpc_resp_init(amn_rpc_resp *r);
void amn_rpc_resp_free(amn_rpc_resp *r);
/* Feeds one field of the response headers or of the trailers (same rules
 * for metadata as amn_rpc_req_header; metadata past the limits is dropped
 * and sets too_large). */
void amn_rpc_resp_header(amn_rpc_resp *r, const uint8_t *name, size_t nlen,
                         const uint8_t *value, size_t vlen);
/* Moves the metadata collected so far out (array of md_count entries,
 * caller frees with amn_rpc_md_free_array; NULL when none) and resets
 * md_count and header_bytes: call it after each block, limits are per block. */
amn_rpc_md *amn_rpc_resp_take_md(amn_rpc_resp *r, size_t *count);
void amn_rpc_md_free_array(amn_rpc_md *md, size_t count);

/* Final status of a call from what the response carried:
 * too_large -> RESOURCE_EXHAUSTED; grpc-status present -> that (values
 * above 16 -> UNKNOWN; message from grpc-message or ""); otherwise a
 * non-200 :status -> amn_status_from_http; otherwise INTERNAL ("missing
 * grpc-status"). `msg_out` receives a pointer to grpc_message or a static
 * string. */
amn_status_code amn_rpc_resp_status(const amn_rpc_resp *r, const char **msg_out);

/* ------------------------------------------------------------------ */
/* Header lists to send                                               */
/* ------------------------------------------------------------------ */

/* A header field to send; transports convert to nghttp2_nv / nghttp3_nv. */
typedef struct amn_hdr {
  const uint8_t *name; size_t nlen;
  const uint8_t *value; size_t vlen;
} amn_hdr;

/* Scratch space for building header lists (encoded values live here, then
 * in separately malloc'd chunks chained from `heap`, so entries stay valid).
 * Self-referential: do not copy or move an amn_hdr_buf once used. */
typedef struct amn_hdr_buf {
  amn_hdr h[AMN_RPC_MAX_MD + 12];
  size_t n;
  char scratch[8192];
  size_t used;
  char *heap;      /* overflow storage when scratch is too small */
} amn_hdr_buf;

void amn_hdr_buf_init(amn_hdr_buf *b);
void amn_hdr_buf_free(amn_hdr_buf *b);
/* Appends; copies name/value into scratch when `copy`. Returns 0 or
 * AMN_ENOMEM/AMN_ETOOBIG (too many fields). */
int amn_hdr_add(amn_hdr_buf *b, const char *name, const uint8_t *value, size_t vlen, bool copy);
/* Appends user metadata (copied): -bin values base64-encoded; invalid keys
 * (empty, outside [0-9a-z_.-], or reserved as listed at amn_rpc_req_header)
 * or ASCII values with bytes outside 0x20-0x7e -> AMN_EINVAL, and then
 * nothing of this call is appended. */
int amn_hdr_add_md(amn_hdr_buf *b, const amn_md *md, size_t count);

/* The build functions append to b (amn_hdr_buf_init it first); strings
 * passed in are copied.
 * Client request headers: :method POST, :scheme, :path, :authority (omitted
 * when NULL), te trailers, content-type application/grpc, user-agent,
 * grpc-timeout when timeout_ns > 0, then metadata. */
int amn_rpc_build_request(amn_hdr_buf *b, const char *scheme, const char *authority,
                          const char *path, int64_t timeout_ns, const amn_md *md, size_t md_count);
/* Server response headers: :status 200, content-type application/grpc,
 * then metadata. */
int amn_rpc_build_response(amn_hdr_buf *b, const amn_md *md, size_t md_count);
/* Trailers (or the Trailers-Only block when `trailers_only`, which adds
 * :status 200 and content-type first): grpc-status, grpc-message
 * (percent-encoded, omitted when NULL/empty), metadata. */
int amn_rpc_build_trailers(amn_hdr_buf *b, bool trailers_only, amn_status_code code,
                           const char *message, const amn_md *md, size_t md_count);

#endif
