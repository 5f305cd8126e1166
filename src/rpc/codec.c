/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Header value codecs: grpc-timeout, grpc-message percent-encoding, base64. */
#include <string.h>

#include "rpc/rpc.h"

/* ---- grpc-timeout ---- */

static const struct { char unit; int64_t ns; } timeout_units[] = {
    {'n', 1}, {'u', 1000}, {'m', 1000000}, {'S', 1000000000},
    {'M', 60LL * 1000000000}, {'H', 3600LL * 1000000000}};
#define TIMEOUT_MAX_VALUE 99999999 /* 8 digits */

int amn_grpc_timeout_parse(const char *s, size_t len, int64_t *out_ns) {
  if (!s || len < 2 || len > 9) return AMN_EINVAL;
  int64_t v = 0;
  for (size_t i = 0; i + 1 < len; i++) {
    if (s[i] < '0' || s[i] > '9') return AMN_EINVAL;
    v = v * 10 + (s[i] - '0');
  }
  for (size_t u = 0; u < sizeof timeout_units / sizeof timeout_units[0]; u++) {
    if (s[len - 1] != timeout_units[u].unit) continue;
    int64_t m = timeout_units[u].ns;
    *out_ns = v > INT64_MAX / m ? INT64_MAX : v * m;
    return 0;
  }
  return AMN_EINVAL;
}

int64_t amn_deadline_after(int64_t now_ns, int64_t timeout_ns) {
  if (now_ns < 0 || timeout_ns < 0) return now_ns;
  return timeout_ns > INT64_MAX - now_ns ? INT64_MAX : now_ns + timeout_ns;
}

int64_t amn_deadline_left_ms(int64_t deadline_ns, int64_t now_ns) {
  if (deadline_ns <= now_ns) return 0;
  /* both are >= 0 in use; the difference of a larger and a smaller value
   * fits when now_ns >= 0 */
  int64_t left = now_ns >= 0 ? deadline_ns - now_ns : INT64_MAX;
  return left / 1000000 + (left % 1000000 != 0);
}

size_t amn_grpc_timeout_format(int64_t ns, char out[16]) {
  if (ns <= 0) ns = 1;
  size_t n = sizeof timeout_units / sizeof timeout_units[0];
  for (size_t u = 0; u < n; u++) {
    int64_t m = timeout_units[u].ns;
    int64_t v = ns / m + (ns % m != 0); /* round up */
    if (v <= TIMEOUT_MAX_VALUE || u == n - 1) {
      /* INT64_MAX ns is ~2.6e6 hours, so the last unit always fits */
      char digits[20];
      size_t k = 0;
      do { digits[k++] = (char)('0' + v % 10); v /= 10; } while (v);
      size_t len = 0;
      while (k) out[len++] = digits[--k];
      out[len++] = timeout_units[u].unit;
      out[len] = '\0';
      return len;
    }
  }
  return 0; /* not reached */
}

/* ---- percent-encoding ---- */

static const char hexdig[] = "0123456789ABCDEF";

size_t amn_pct_encode(const uint8_t *in, size_t len, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = in[i];
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      if (o + 1 <= cap) out[o] = (char)c;
      o += 1;
    } else {
      if (o + 3 <= cap) {
        out[o] = '%';
        out[o + 1] = hexdig[c >> 4];
        out[o + 2] = hexdig[c & 15];
      } else if (o < cap) {
        cap = o; /* never write a partial escape: stop writing here */
      }
      o += 3;
    }
  }
  return o;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

size_t amn_pct_decode(const char *in, size_t len, uint8_t *out) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (in[i] == '%' && i + 2 < len && (hi = hexval(in[i + 1])) >= 0 && (lo = hexval(in[i + 2])) >= 0) {
      out[o++] = (uint8_t)(hi << 4 | lo);
      i += 2;
    } else {
      out[o++] = (uint8_t)in[i];
    }
  }
  return o;
}

/* ---- base64 (RFC 4648 section 4) ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t amn_b64_encode(const uint8_t *in, size_t len, char *out) {
  size_t o = 0, i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64chars[v >> 18];
    out[o++] = b64chars[(v >> 12) & 63];
    out[o++] = b64chars[(v >> 6) & 63];
    out[o++] = b64chars[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
    out[o++] = b64chars[v >> 18];
    out[o++] = b64chars[(v >> 12) & 63];
    out[o++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  return o;
}

static int b64val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

long amn_b64_decode(const char *in, size_t len, uint8_t *out) {
  size_t n = len;
  if (n > 0 && in[n - 1] == '=') { /* padded: whole quanta, 1 or 2 '=' */
    if (len % 4 != 0) return -1;
    n--;
    if (in[n - 1] == '=') n--;
  }
  if (n % 4 == 1) return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64val(in[i]);
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  return (long)o;
}
