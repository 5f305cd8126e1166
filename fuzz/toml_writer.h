/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A small TOML writer for the fuzz targets: writes a document (or config
 * values) back as TOML so a second parse can be compared with the first.
 * Keys and strings are basic strings with escapes; tables below the root
 * become inline tables, so each root key takes one line.
 */
#ifndef AMN_FUZZ_TOML_WRITER_H
#define AMN_FUZZ_TOML_WRITER_H

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>

#include "fuzz_common.h"
#include "util/toml.h"

typedef struct tw {
  char *s;
  size_t len, cap;
} tw;

static inline void tw_put(tw *w, const void *p, size_t n) {
  if (w->len + n + 1 > w->cap) {
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + n + 1) cap *= 2;
    char *s = realloc(w->s, cap);
    FUZZ_CHECK(s != NULL);
    w->s = s;
    w->cap = cap;
  }
  memcpy(w->s + w->len, p, n);
  w->len += n;
  w->s[w->len] = '\0';
}

static inline void tw_fmt(tw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void tw_fmt(tw *w, const char *fmt, ...) {
  char b[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b, sizeof b, fmt, ap);
  va_end(ap);
  FUZZ_CHECK(n >= 0 && (size_t)n < sizeof b);
  tw_put(w, b, (size_t)n);
}

/* A basic string: '"' and '\' escaped, control characters as \uXXXX;
 * UTF-8 (already validated by the parser) passes through. */
static inline void tw_str(tw *w, const char *s, size_t n) {
  tw_put(w, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      tw_put(w, "\\", 1);
      tw_put(w, &s[i], 1);
    } else if (c < 0x20 || c == 0x7f) {
      tw_fmt(w, "\\u%04X", c);
    } else {
      tw_put(w, &s[i], 1);
    }
  }
  tw_put(w, "\"", 1);
}

static inline void tw_float(tw *w, double d) {
  if (isnan(d)) {
    tw_put(w, "nan", 3);
  } else if (isinf(d)) {
    tw_fmt(w, "%sinf", d < 0 ? "-" : "+");
  } else {
    char b[64];
    snprintf(b, sizeof b, "%.17g", d);
    tw_put(w, b, strlen(b));
    if (!strpbrk(b, ".eE")) tw_put(w, ".0", 2);
  }
}

static inline void tw_datetime(tw *w, amn_toml_type t, const amn_toml_datetime *dt) {
  if (t != AMN_TOML_TIME_LOCAL) tw_fmt(w, "%04d-%02d-%02d", dt->year, dt->month, dt->day);
  if (t == AMN_TOML_DATE_LOCAL) return;
  if (t != AMN_TOML_TIME_LOCAL) tw_put(w, "T", 1);
  tw_fmt(w, "%02d:%02d:%02d", dt->hour, dt->minute, dt->second);
  if (dt->frac_digits > 0) tw_fmt(w, ".%09d", dt->nanosecond);
  if (t != AMN_TOML_DATETIME) return;
  if (dt->offset_z) {
    tw_put(w, "Z", 1);
  } else {
    int m = dt->offset_minutes < 0 ? -dt->offset_minutes : dt->offset_minutes;
    tw_fmt(w, "%c%02d:%02d", dt->offset_minutes < 0 ? '-' : '+', m / 60, m % 60);
  }
}

static inline void tw_value(tw *w, const amn_toml_node *n) {
  amn_toml_type t = amn_toml_type_of(n);
  switch (t) {
  case AMN_TOML_TABLE:
    tw_put(w, "{", 1);
    for (size_t i = 0; i < amn_toml_count(n); i++) {
      size_t kl;
      const char *k = amn_toml_key_at(n, i, &kl);
      tw_put(w, i ? ", " : " ", i ? 2 : 1);
      tw_str(w, k, kl);
      tw_put(w, " = ", 3);
      tw_value(w, amn_toml_at(n, i));
    }
    tw_put(w, " }", 2);
    break;
  case AMN_TOML_ARRAY:
    tw_put(w, "[", 1);
    for (size_t i = 0; i < amn_toml_count(n); i++) {
      if (i) tw_put(w, ", ", 2);
      tw_value(w, amn_toml_at(n, i));
    }
    tw_put(w, "]", 1);
    break;
  case AMN_TOML_STRING: {
    size_t l;
    const char *s = amn_toml_str(n, &l);
    tw_str(w, s, l);
    break;
  }
  case AMN_TOML_INT: tw_fmt(w, "%" PRId64, amn_toml_int(n)); break;
  case AMN_TOML_FLOAT: tw_float(w, amn_toml_float(n)); break;
  case AMN_TOML_BOOL: tw_put(w, amn_toml_bool(n) ? "true" : "false", amn_toml_bool(n) ? 4 : 5); break;
  default: tw_datetime(w, t, amn_toml_dt(n)); break;
  }
}

/* The whole document: one "key = value" line per root key. */
static inline void tw_doc(tw *w, const amn_toml_node *root) {
  for (size_t i = 0; i < amn_toml_count(root); i++) {
    size_t kl;
    const char *k = amn_toml_key_at(root, i, &kl);
    tw_str(w, k, kl);
    tw_put(w, " = ", 3);
    tw_value(w, amn_toml_at(root, i));
    tw_put(w, "\n", 1);
  }
}

#endif
