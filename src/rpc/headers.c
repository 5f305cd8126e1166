/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* gRPC header blocks: request validation (server), response/trailer parsing
 * (client), and building header lists to send. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rpc/rpc.h"

/* ---- field classification ---- */

enum hkind { HK_META, HK_IGNORE, HK_TE, HK_CT, HK_TIMEOUT, HK_ENC, HK_STATUS, HK_MESSAGE };

/* Regular (non-pseudo) fields that are never metadata. */
static const struct { const char *name; enum hkind kind; } reserved[] = {
    {"te", HK_TE},
    {"content-type", HK_CT},
    {"grpc-timeout", HK_TIMEOUT},
    {"grpc-encoding", HK_ENC},
    {"grpc-status", HK_STATUS},
    {"grpc-message", HK_MESSAGE},
    {"user-agent", HK_IGNORE},
    {"grpc-accept-encoding", HK_IGNORE},
    {"grpc-message-type", HK_IGNORE},
    {"host", HK_IGNORE},
    {"content-length", HK_IGNORE},
    {"accept-encoding", HK_IGNORE},
    /* connection-specific fields, forbidden in HTTP/2 and HTTP/3 */
    {"connection", HK_IGNORE},
    {"keep-alive", HK_IGNORE},
    {"proxy-connection", HK_IGNORE},
    {"transfer-encoding", HK_IGNORE},
    {"upgrade", HK_IGNORE},
};

static bool eq(const void *p, size_t n, const char *lit) {
  return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

static enum hkind classify(const void *name, size_t nlen) {
  for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
    if (eq(name, nlen, reserved[i].name)) return reserved[i].kind;
  return HK_META;
}

/* gRPC Header-Name: 1*( 0-9 / a-z / "_" / "-" / "." ) */
static bool valid_key(const void *key, size_t n) {
  const uint8_t *k = key;
  if (!k || n == 0) return false;
  for (size_t i = 0; i < n; i++) {
    uint8_t c = k[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '_' || c == '-' || c == '.'))
      return false;
  }
  return true;
}

static bool is_bin_key(const void *key, size_t n) {
  return n >= 4 && memcmp((const char *)key + n - 4, "-bin", 4) == 0;
}

static bool ascii_value(const uint8_t *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (v[i] < 0x20 || v[i] > 0x7e) return false;
  return true;
}

/* application/grpc, optionally followed by "+subtype" or ";params". */
static bool content_type_grpc(const uint8_t *v, size_t n) {
  static const char ct[] = "application/grpc";
  size_t l = sizeof ct - 1;
  return n >= l && strncasecmp((const char *)v, ct, l) == 0 && (n == l || v[l] == '+' || v[l] == ';');
}

static char *dupz(const void *p, size_t n) {
  char *s = malloc(n + 1);
  if (s) {
    if (n) memcpy(s, p, n);
    s[n] = '\0';
  }
  return s;
}

/* ---- received metadata ---- */

enum { MD_OK, MD_MALFORMED, MD_FULL, MD_NOMEM };

static int md_add_one(amn_rpc_md *md, size_t *count, const uint8_t *name, size_t nlen,
                      const uint8_t *val, size_t vlen, bool bin) {
  if (*count >= AMN_RPC_MAX_MD) return MD_FULL;
  char *key = dupz(name, nlen);
  uint8_t *v = malloc((bin ? vlen * 3 / 4 + 3 : vlen) + 1);
  if (!key || !v) {
    free(key);
    free(v);
    return MD_NOMEM;
  }
  size_t len = vlen;
  if (bin) {
    long r = amn_b64_decode((const char *)val, vlen, v);
    if (r < 0) {
      free(key);
      free(v);
      return MD_MALFORMED;
    }
    len = (size_t)r;
  } else if (vlen) {
    memcpy(v, val, vlen);
  }
  v[len] = '\0';
  md[(*count)++] = (amn_rpc_md){key, v, len};
  return MD_OK;
}

/* Stores one metadata field. A -bin value may hold several base64 values
 * joined with ',' (duplicate fields folded): each becomes its own entry. */
static int md_store(amn_rpc_md *md, size_t *count, const uint8_t *name, size_t nlen,
                    const uint8_t *val, size_t vlen) {
  if (!is_bin_key(name, nlen)) {
    if (!ascii_value(val, vlen)) return MD_MALFORMED;
    return md_add_one(md, count, name, nlen, val, vlen, false);
  }
  size_t start = 0;
  for (;;) {
    size_t end = start;
    while (end < vlen && val[end] != ',') end++;
    size_t a = start, z = end;
    while (a < z && (val[a] == ' ' || val[a] == '\t')) a++;
    while (z > a && (val[z - 1] == ' ' || val[z - 1] == '\t')) z--;
    int rc = md_add_one(md, count, name, nlen, val + a, z - a, true);
    if (rc != MD_OK) return rc;
    if (end >= vlen) return MD_OK;
    start = end + 1;
  }
}

static void md_free_entries(amn_rpc_md *md, size_t count) {
  for (size_t i = 0; i < count; i++) {
    free(md[i].key);
    free(md[i].value);
  }
}

void amn_rpc_md_free_array(amn_rpc_md *md, size_t count) {
  if (!md) return;
  md_free_entries(md, count);
  free(md);
}

/* ---- request (server side) ---- */

void amn_rpc_req_init(amn_rpc_req *r) {
  /* the metadata arrays are only read up to md_count: clearing ~3 KiB per
   * call would cost more than the rest of the header handling */
  memset(r, 0, offsetof(amn_rpc_req, md));
  r->timeout_ns = -1;
  r->encoding_identity = true;
}

void amn_rpc_req_free(amn_rpc_req *r) {
  free(r->path);
  free(r->encoding);
  md_free_entries(r->md, r->md_count);
  amn_rpc_req_init(r);
}

void amn_rpc_req_header(amn_rpc_req *r, const uint8_t *name, size_t nlen,
                        const uint8_t *value, size_t vlen) {
  if (!value) vlen = 0, value = (const uint8_t *)"";
  r->header_bytes += nlen + vlen + 32;
  if (r->header_bytes > AMN_RPC_MAX_HEADER_BYTES) r->too_large = true;
  if (!name || nlen == 0) {
    r->malformed = true;
    return;
  }
  if (name[0] == ':') {
    if (r->seen_regular) {
      r->malformed = true;
    } else if (eq(name, nlen, ":method")) {
      if (r->has_method) r->malformed = true;
      r->has_method = true;
      r->method_post = eq(value, vlen, "POST");
    } else if (eq(name, nlen, ":scheme")) {
      if (r->has_scheme) r->malformed = true;
      r->has_scheme = true;
    } else if (eq(name, nlen, ":path")) {
      if (r->has_path || vlen == 0 || memchr(value, 0, vlen)) {
        r->malformed = true;
      } else if (!(r->path = dupz(value, vlen))) {
        r->too_large = true;
      } else {
        r->has_path = true;
      }
    } else if (!eq(name, nlen, ":authority")) {
      r->malformed = true; /* unknown pseudo-header */
    }
    return;
  }
  r->seen_regular = true;
  if (!valid_key(name, nlen)) {
    r->malformed = true;
    return;
  }
  switch (classify(name, nlen)) {
  case HK_TE:
    r->te_trailers = eq(value, vlen, "trailers");
    break;
  case HK_CT:
    r->has_content_type = true;
    r->content_type_ok = content_type_grpc(value, vlen);
    break;
  case HK_TIMEOUT: {
    int64_t ns;
    if (amn_grpc_timeout_parse((const char *)value, vlen, &ns) == 0) r->timeout_ns = ns;
    else r->bad_timeout = true;
    break;
  }
  case HK_ENC:
    r->has_encoding = true;
    r->encoding_identity = eq(value, vlen, "identity");
    free(r->encoding);
    if (!(r->encoding = dupz(value, vlen))) r->too_large = true;
    break;
  case HK_META:
    if (r->too_large) break; /* verdict is decided; stop storing */
    switch (md_store(r->md, &r->md_count, name, nlen, value, vlen)) {
    case MD_MALFORMED: r->malformed = true; break;
    case MD_FULL:
    case MD_NOMEM: r->too_large = true; break;
    default: break;
    }
    break;
  default:
    break;
  }
}

amn_rpc_verdict amn_rpc_req_finish(amn_rpc_req *r) {
  for (size_t i = 0; i < r->md_count; i++)
    r->md_view[i] = (amn_md){r->md[i].key, r->md[i].value, r->md[i].value_len};
#define VERDICT(h, c, m) return (amn_rpc_verdict){(h), (c), (m), false}
  if (r->malformed) VERDICT(400, AMN_STATUS_INTERNAL, "malformed request headers");
  if (!r->has_method || !r->has_scheme || !r->has_path)
    VERDICT(400, AMN_STATUS_INTERNAL, "missing :method, :scheme or :path");
  if (!r->method_post) VERDICT(405, AMN_STATUS_INTERNAL, "method not allowed: gRPC requires POST");
  if (!r->content_type_ok)
    VERDICT(415, AMN_STATUS_INTERNAL, "unsupported content-type: expected application/grpc");
  if (!r->te_trailers) VERDICT(400, AMN_STATUS_INTERNAL, "te header must be \"trailers\"");
  if (r->bad_timeout) VERDICT(400, AMN_STATUS_INTERNAL, "invalid grpc-timeout");
  if (r->too_large) VERDICT(200, AMN_STATUS_RESOURCE_EXHAUSTED, "request metadata too large");
  if (!r->encoding_identity) VERDICT(200, AMN_STATUS_UNIMPLEMENTED, "unsupported grpc-encoding");
#undef VERDICT
  return (amn_rpc_verdict){200, AMN_STATUS_OK, NULL, true};
}

/* ---- response (client side) ---- */

void amn_rpc_resp_init(amn_rpc_resp *r) { memset(r, 0, offsetof(amn_rpc_resp, md)); }

void amn_rpc_resp_free(amn_rpc_resp *r) {
  free(r->grpc_message);
  free(r->encoding);
  md_free_entries(r->md, r->md_count);
  amn_rpc_resp_init(r);
}

/* Parses 1..max_digits ASCII digits; -1 when invalid. */
static int parse_uint(const uint8_t *v, size_t n, size_t max_digits) {
  if (n == 0 || n > max_digits) return -1;
  int x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (v[i] - '0');
  }
  return x;
}

void amn_rpc_resp_header(amn_rpc_resp *r, const uint8_t *name, size_t nlen,
                         const uint8_t *value, size_t vlen) {
  if (!value) vlen = 0, value = (const uint8_t *)"";
  r->header_bytes += nlen + vlen + 32;
  if (r->header_bytes > AMN_RPC_MAX_HEADER_BYTES) r->too_large = true;
  if (!name || nlen == 0) {
    r->malformed = true;
    return;
  }
  if (name[0] == ':') {
    /* Only :status, once, first in its block; a final response may follow
     * an informational (1xx) block. */
    bool informational = r->http_status >= 100 && r->http_status < 200;
    int st = parse_uint(value, vlen, 3);
    if (!eq(name, nlen, ":status") || ((r->http_status || r->seen_regular) && !informational) ||
        st < 100 || st > 599) {
      r->malformed = true;
      return;
    }
    r->http_status = st;
    r->seen_regular = false;
    return;
  }
  r->seen_regular = true;
  if (!valid_key(name, nlen)) {
    r->malformed = true;
    return;
  }
  switch (classify(name, nlen)) {
  case HK_CT:
    r->content_type_ok = content_type_grpc(value, vlen);
    break;
  case HK_STATUS: {
    int s = parse_uint(value, vlen, 9);
    if (s < 0) {
      r->malformed = true;
    } else {
      r->has_grpc_status = true;
      r->grpc_status = s;
    }
    break;
  }
  case HK_MESSAGE: {
    char *m = malloc(vlen + 1);
    if (!m) {
      r->too_large = true;
      break;
    }
    m[amn_pct_decode((const char *)value, vlen, (uint8_t *)m)] = '\0';
    free(r->grpc_message);
    r->grpc_message = m;
    break;
  }
  case HK_ENC:
    free(r->encoding);
    if (!(r->encoding = dupz(value, vlen))) r->too_large = true;
    break;
  case HK_META:
    if (r->too_large) break;
    switch (md_store(r->md, &r->md_count, name, nlen, value, vlen)) {
    case MD_MALFORMED: r->malformed = true; break; /* entry dropped */
    case MD_FULL:
    case MD_NOMEM: r->too_large = true; break;
    default: break;
    }
    break;
  default:
    break;
  }
}

amn_rpc_md *amn_rpc_resp_take_md(amn_rpc_resp *r, size_t *count) {
  amn_rpc_md *out = NULL;
  *count = 0;
  if (r->md_count) {
    out = malloc(r->md_count * sizeof *out);
    if (out) {
      memcpy(out, r->md, r->md_count * sizeof *out);
      *count = r->md_count;
    } else {
      md_free_entries(r->md, r->md_count);
      r->too_large = true;
    }
  }
  r->md_count = 0;
  r->header_bytes = 0;
  return out;
}

static const char *http_reason(int st) {
  switch (st) {
  case 400: return "HTTP 400 Bad Request without grpc-status";
  case 401: return "HTTP 401 Unauthorized without grpc-status";
  case 403: return "HTTP 403 Forbidden without grpc-status";
  case 404: return "HTTP 404 Not Found without grpc-status";
  case 429: return "HTTP 429 Too Many Requests without grpc-status";
  case 502: return "HTTP 502 Bad Gateway without grpc-status";
  case 503: return "HTTP 503 Service Unavailable without grpc-status";
  case 504: return "HTTP 504 Gateway Timeout without grpc-status";
  default: return "non-200 HTTP status without grpc-status";
  }
}

amn_status_code amn_rpc_resp_status(const amn_rpc_resp *r, const char **msg_out) {
  amn_status_code code;
  const char *msg;
  if (r->too_large) {
    code = AMN_STATUS_RESOURCE_EXHAUSTED;
    msg = "response metadata too large";
  } else if (r->has_grpc_status) {
    code = r->grpc_status >= 0 && r->grpc_status <= 16 ? (amn_status_code)r->grpc_status
                                                       : AMN_STATUS_UNKNOWN;
    msg = r->grpc_message ? r->grpc_message : "";
  } else if (r->http_status != 0 && r->http_status != 200) {
    code = amn_status_from_http(r->http_status);
    msg = http_reason(r->http_status);
  } else {
    code = AMN_STATUS_INTERNAL;
    msg = "missing grpc-status";
  }
  if (msg_out) *msg_out = msg;
  return code;
}

/* ---- header lists to send ---- */

/* Overflow chunks: each a separate allocation, newest first, so memory
 * handed out earlier never moves. */
typedef struct hb_chunk {
  struct hb_chunk *prev;
  char data[];
} hb_chunk;

void amn_hdr_buf_init(amn_hdr_buf *b) {
  b->n = 0;
  b->used = 0;
  b->heap = NULL;
}

void amn_hdr_buf_free(amn_hdr_buf *b) {
  hb_chunk *c = (hb_chunk *)(void *)b->heap;
  while (c) {
    hb_chunk *prev = c->prev;
    free(c);
    c = prev;
  }
  amn_hdr_buf_init(b);
}

static char *hb_alloc(amn_hdr_buf *b, size_t n) {
  if (n <= sizeof b->scratch - b->used) {
    char *p = b->scratch + b->used;
    b->used += n;
    return p;
  }
  hb_chunk *c = malloc(sizeof *c + n);
  if (!c) return NULL;
  c->prev = (hb_chunk *)(void *)b->heap;
  b->heap = (char *)c;
  return c->data;
}

static int hb_push(amn_hdr_buf *b, const void *name, size_t nlen, const void *value, size_t vlen) {
  if (b->n >= sizeof b->h / sizeof b->h[0]) return AMN_ETOOBIG;
  b->h[b->n++] = (amn_hdr){(const uint8_t *)name, nlen, (const uint8_t *)value, vlen};
  return 0;
}

int amn_hdr_add(amn_hdr_buf *b, const char *name, const uint8_t *value, size_t vlen, bool copy) {
  if (b->n >= sizeof b->h / sizeof b->h[0]) return AMN_ETOOBIG;
  size_t nlen = strlen(name);
  if (!value) vlen = 0, value = (const uint8_t *)"";
  if (!copy) return hb_push(b, name, nlen, value, vlen);
  char *p = hb_alloc(b, nlen + vlen);
  if (!p) return AMN_ENOMEM;
  memcpy(p, name, nlen);
  if (vlen) memcpy(p + nlen, value, vlen);
  return hb_push(b, p, nlen, p + nlen, vlen);
}

int amn_hdr_add_md(amn_hdr_buf *b, const amn_md *md, size_t count) {
  size_t n0 = b->n;
  int rc = 0;
  for (size_t i = 0; i < count && rc == 0; i++) {
    const char *k = md[i].key;
    size_t kl = k ? strlen(k) : 0;
    const uint8_t *v = md[i].value;
    size_t vl = md[i].value_len;
    if (!valid_key(k, kl) || classify(k, kl) != HK_META || (!v && vl)) {
      rc = AMN_EINVAL;
    } else if (is_bin_key(k, kl)) {
      size_t el = (vl + 2) / 3 * 4;
      char *p = b->n < sizeof b->h / sizeof b->h[0] ? hb_alloc(b, kl + el) : NULL;
      if (!p) {
        rc = b->n < sizeof b->h / sizeof b->h[0] ? AMN_ENOMEM : AMN_ETOOBIG;
      } else {
        memcpy(p, k, kl);
        amn_b64_encode(v ? v : (const uint8_t *)"", vl, p + kl);
        rc = hb_push(b, p, kl, p + kl, el);
      }
    } else if (!ascii_value(v, vl)) {
      rc = AMN_EINVAL;
    } else {
      rc = amn_hdr_add(b, k, v, vl, true);
    }
  }
  if (rc) b->n = n0; /* all or nothing (scratch space is not reclaimed) */
  return rc;
}

static int add_str(amn_hdr_buf *b, const char *name, const char *value, bool copy) {
  return amn_hdr_add(b, name, (const uint8_t *)value, strlen(value), copy);
}

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

int amn_rpc_build_request(amn_hdr_buf *b, const char *scheme, const char *authority,
                          const char *path, int64_t timeout_ns, const amn_md *md, size_t md_count) {
  if (!scheme || !path) return AMN_EINVAL;
  TRY(add_str(b, ":method", "POST", false));
  TRY(add_str(b, ":scheme", scheme, true));
  TRY(add_str(b, ":path", path, true));
  if (authority) TRY(add_str(b, ":authority", authority, true));
  TRY(add_str(b, "te", "trailers", false));
  TRY(add_str(b, "content-type", "application/grpc", false));
  TRY(add_str(b, "user-agent", "amaters-net/" AMN_VERSION, false));
  if (timeout_ns > 0) {
    char t[16];
    size_t tl = amn_grpc_timeout_format(timeout_ns, t);
    TRY(amn_hdr_add(b, "grpc-timeout", (const uint8_t *)t, tl, true));
  }
  return amn_hdr_add_md(b, md, md_count);
}

int amn_rpc_build_response(amn_hdr_buf *b, const amn_md *md, size_t md_count) {
  TRY(add_str(b, ":status", "200", false));
  TRY(add_str(b, "content-type", "application/grpc", false));
  return amn_hdr_add_md(b, md, md_count);
}

int amn_rpc_build_trailers(amn_hdr_buf *b, bool trailers_only, amn_status_code code,
                           const char *message, const amn_md *md, size_t md_count) {
  if (trailers_only) {
    TRY(add_str(b, ":status", "200", false));
    TRY(add_str(b, "content-type", "application/grpc", false));
  }
  char num[12];
  unsigned c = (unsigned)code;
  size_t k = sizeof num;
  do { num[--k] = (char)('0' + c % 10); c /= 10; } while (c);
  TRY(amn_hdr_add(b, "grpc-status", (const uint8_t *)num + k, sizeof num - k, true));
  if (message && *message) {
    size_t ml = strlen(message);
    size_t el = amn_pct_encode((const uint8_t *)message, ml, NULL, 0);
    if (b->n >= sizeof b->h / sizeof b->h[0]) return AMN_ETOOBIG;
    char *p = hb_alloc(b, el);
    if (!p) return AMN_ENOMEM;
    amn_pct_encode((const uint8_t *)message, ml, p, el);
    TRY(hb_push(b, "grpc-message", 12, p, el));
  }
  return amn_hdr_add_md(b, md, md_count);
}
