/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * toml-test driver for the internal TOML parser (src/util/toml.c).
 *
 *   toml_test_runner decode [FILE]         TOML (FILE or stdin) -> tagged JSON on
 *                                          stdout, exit 1 on a parse error (the
 *                                          toml-test "decoder" interface)
 *   toml_test_runner suite DIR valid|invalid
 *                                          runs every TOML 1.0 file listed in
 *                                          DIR/tests/files-toml-1.0.0 (a suite
 *                                          without that list, such as the copy
 *                                          Debian's golang-github-burntsushi-toml-dev
 *                                          ships, is TOML 1.0 only: every file
 *                                          under DIR/tests/KIND/ then):
 *                                          valid/: decode, then compare the JSON
 *                                          with the .json beside it semantically;
 *                                          invalid/: the parser must reject it.
 *
 * Comparison follows toml-test: same keys and types; integers and floats
 * compared numerically (nan == nan), offset date-times compared as instants,
 * local date/times field by field with the fraction compared numerically.
 */
#include <ctype.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/toml.h"

/* ------------------------------------------------------------------ */
/* small helpers                                                      */
/* ------------------------------------------------------------------ */

typedef struct sbuf {
  char *d;
  size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    b->d = realloc(b->d, cap);
    if (!b->d) abort();
    b->cap = cap;
  }
  memcpy(b->d + b->n, s, n);
  b->n += n;
  b->d[b->n] = '\0';
}
static void sb_puts(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }
__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
  char tmp[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = path ? fopen(path, "rb") : stdin;
  if (!f) return NULL;
  sbuf b = {0};
  char chunk[4096];
  size_t n;
  sb_add(&b, "", 0);
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) sb_add(&b, chunk, n);
  if (path) fclose(f);
  *len = b.n;
  return b.d;
}

/* ------------------------------------------------------------------ */
/* decoder: TOML DOM -> tagged JSON                                   */
/* ------------------------------------------------------------------ */

static void json_str(sbuf *b, const char *s, size_t len) {
  sb_puts(b, "\"");
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      sb_add(b, e, 2);
    } else if (c < 0x20 || c == 0x7f) {
      sb_printf(b, "\\u%04x", c);
    } else {
      sb_add(b, (const char *)&c, 1);
    }
  }
  sb_puts(b, "\"");
}

static void emit_dt(sbuf *b, amn_toml_type t, const amn_toml_datetime *d) {
  if (t != AMN_TOML_TIME_LOCAL) sb_printf(b, "%04d-%02d-%02d", d->year, d->month, d->day);
  if (t == AMN_TOML_DATE_LOCAL) return;
  if (t != AMN_TOML_TIME_LOCAL) sb_puts(b, "T");
  sb_printf(b, "%02d:%02d:%02d", d->hour, d->minute, d->second);
  if (d->frac_digits > 0) {
    char ns[16];
    snprintf(ns, sizeof ns, "%09d", d->nanosecond);
    sb_printf(b, ".%.*s", d->frac_digits, ns);
  }
  if (t == AMN_TOML_DATETIME) {
    if (d->offset_z) {
      sb_puts(b, "Z");
    } else {
      int o = d->offset_minutes;
      sb_printf(b, "%c%02d:%02d", o < 0 ? '-' : '+', abs(o) / 60, abs(o) % 60);
    }
  }
}

static void emit(sbuf *b, const amn_toml_node *n) {
  amn_toml_type t = amn_toml_type_of(n);
  size_t cnt = amn_toml_count(n), len;
  switch (t) {
  case AMN_TOML_TABLE:
    sb_puts(b, "{");
    for (size_t i = 0; i < cnt; i++) {
      const char *k = amn_toml_key_at(n, i, &len);
      if (i) sb_puts(b, ",");
      json_str(b, k, len);
      sb_puts(b, ":");
      emit(b, amn_toml_at(n, i));
    }
    sb_puts(b, "}");
    return;
  case AMN_TOML_ARRAY:
    sb_puts(b, "[");
    for (size_t i = 0; i < cnt; i++) {
      if (i) sb_puts(b, ",");
      emit(b, amn_toml_at(n, i));
    }
    sb_puts(b, "]");
    return;
  default:
    break;
  }
  sb_printf(b, "{\"type\":\"%s\",\"value\":", amn_toml_type_name(t));
  if (t == AMN_TOML_STRING) {
    const char *s = amn_toml_str(n, &len);
    json_str(b, s, len);
  } else {
    sbuf v = {0};
    sb_add(&v, "", 0);
    if (t == AMN_TOML_INT) {
      sb_printf(&v, "%lld", (long long)amn_toml_int(n));
    } else if (t == AMN_TOML_FLOAT) {
      double f = amn_toml_float(n);
      if (isnan(f)) sb_puts(&v, "nan");
      else if (isinf(f)) sb_puts(&v, f < 0 ? "-inf" : "inf");
      else sb_printf(&v, "%.17g", f);
    } else if (t == AMN_TOML_BOOL) {
      sb_puts(&v, amn_toml_bool(n) ? "true" : "false");
    } else {
      emit_dt(&v, t, amn_toml_dt(n));
    }
    json_str(b, v.d, v.n);
    free(v.d);
  }
  sb_puts(b, "}");
}

/* Returns the JSON text (malloc'ed) or NULL with the parse error. */
static char *decode(const char *text, size_t len, char *err, size_t errlen) {
  char msg[256];
  int line = 0;
  amn_toml_doc *doc = amn_toml_parse(text, len, msg, sizeof msg, &line);
  if (!doc) {
    snprintf(err, errlen, "line %d: %s", line, msg);
    return NULL;
  }
  sbuf b = {0};
  emit(&b, amn_toml_root(doc));
  amn_toml_free(doc);
  return b.d;
}

/* ------------------------------------------------------------------ */
/* minimal JSON reader                                                */
/* ------------------------------------------------------------------ */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct jv {
  int t;
  char *s; /* J_STR text, J_NUM/J_BOOL source text */
  size_t len;
  struct jv **items; /* J_ARR elements, J_OBJ values */
  sbuf *keys;        /* J_OBJ keys */
  size_t n;
} jv;

typedef struct jp {
  const char *p, *end;
  const char *err;
} jp;

static void jv_free(jv *v) {
  if (!v) return;
  for (size_t i = 0; i < v->n; i++) {
    jv_free(v->items[i]);
    if (v->keys) free(v->keys[i].d);
  }
  free(v->items);
  free(v->keys);
  free(v->s);
  free(v);
}

static void jws(jp *J) {
  while (J->p < J->end && (*J->p == ' ' || *J->p == '\t' || *J->p == '\n' || *J->p == '\r')) J->p++;
}

static void put_utf8(sbuf *b, unsigned cp) {
  char o[4];
  size_t n;
  if (cp < 0x80) o[0] = (char)cp, n = 1;
  else if (cp < 0x800) o[0] = (char)(0xc0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
  else if (cp < 0x10000)
    o[0] = (char)(0xe0 | (cp >> 12)), o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
    o[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
  else
    o[0] = (char)(0xf0 | (cp >> 18)), o[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
  sb_add(b, o, n);
}

static int hex4(const char *p, const char *end, unsigned *out) {
  if (end - p < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int c = (unsigned char)p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static int jstr(jp *J, sbuf *b) {
  sb_add(b, "", 0);
  J->p++; /* opening quote */
  while (J->p < J->end && *J->p != '"') {
    if (*J->p != '\\') {
      sb_add(b, J->p++, 1);
      continue;
    }
    if (J->end - J->p < 2) break;
    char c = J->p[1];
    J->p += 2;
    const char *map = "b\bf\fn\nr\rt\t\"\"\\\\//";
    const char *m = strchr(map, c);
    if (c == 'u') {
      unsigned cp, lo;
      if (hex4(J->p, J->end, &cp) < 0) return J->err = "bad \\u escape", -1;
      J->p += 4;
      if (cp >= 0xd800 && cp < 0xdc00 && J->end - J->p >= 6 && J->p[0] == '\\' && J->p[1] == 'u' &&
          hex4(J->p + 2, J->end, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        J->p += 6;
      }
      put_utf8(b, cp);
    } else if (m && ((m - map) % 2) == 0) {
      sb_add(b, m + 1, 1);
    } else {
      return J->err = "bad escape", -1;
    }
  }
  if (J->p >= J->end) return J->err = "unterminated string", -1;
  J->p++;
  return 0;
}

static jv *jvalue(jp *J, int depth) {
  jws(J);
  if (J->p >= J->end || depth > 200) return J->err = "unexpected end", NULL;
  jv *v = calloc(1, sizeof *v);
  if (!v) abort();
  char c = *J->p;
  if (c == '{' || c == '[') {
    v->t = c == '{' ? J_OBJ : J_ARR;
    char close = c == '{' ? '}' : ']';
    J->p++;
    jws(J);
    if (J->p < J->end && *J->p == close) {
      J->p++;
      return v;
    }
    for (;;) {
      sbuf key = {0};
      jws(J);
      if (v->t == J_OBJ) {
        if (J->p >= J->end || *J->p != '"' || jstr(J, &key) < 0) {
          free(key.d);
          if (!J->err) J->err = "expected key";
          goto bad;
        }
        jws(J);
        if (J->p >= J->end || *J->p != ':') {
          free(key.d);
          J->err = "expected ':'";
          goto bad;
        }
        J->p++;
      }
      jv *item = jvalue(J, depth + 1);
      if (!item) {
        free(key.d);
        goto bad;
      }
      v->items = realloc(v->items, (v->n + 1) * sizeof *v->items);
      if (v->t == J_OBJ) v->keys = realloc(v->keys, (v->n + 1) * sizeof *v->keys);
      if (!v->items || (v->t == J_OBJ && !v->keys)) abort();
      v->items[v->n] = item;
      if (v->t == J_OBJ) v->keys[v->n] = key;
      v->n++;
      jws(J);
      if (J->p < J->end && *J->p == ',') {
        J->p++;
        continue;
      }
      if (J->p < J->end && *J->p == close) {
        J->p++;
        return v;
      }
      J->err = "expected ',' or close";
      goto bad;
    }
  }
  if (c == '"') {
    sbuf s = {0};
    v->t = J_STR;
    int rc = jstr(J, &s);
    v->s = s.d;
    v->len = s.n;
    if (rc < 0) goto bad;
    return v;
  }
  const char *st = J->p;
  while (J->p < J->end && (isalnum((unsigned char)*J->p) || strchr("+-.", *J->p))) J->p++;
  size_t n = (size_t)(J->p - st);
  if (n == 0) {
    J->err = "unexpected character";
    goto bad;
  }
  v->s = strndup(st, n);
  v->len = n;
  v->t = !strcmp(v->s, "null") ? J_NULL : (!strcmp(v->s, "true") || !strcmp(v->s, "false")) ? J_BOOL : J_NUM;
  return v;
bad:
  jv_free(v);
  return NULL;
}

static jv *json_parse(const char *text, size_t len, const char **err) {
  jp J = {text, text + len, NULL};
  jv *v = jvalue(&J, 0);
  if (v) {
    jws(&J);
    if (J.p != J.end) {
      jv_free(v);
      v = NULL;
      J.err = "trailing garbage";
    }
  }
  *err = J.err;
  return v;
}

/* ------------------------------------------------------------------ */
/* comparator                                                         */
/* ------------------------------------------------------------------ */

static const jv *jget(const jv *o, const char *k, size_t klen) {
  for (size_t i = 0; i < o->n; i++)
    if (o->keys[i].n == klen && memcmp(o->keys[i].d, k, klen) == 0) return o->items[i];
  return NULL;
}

/* {"type": "<string>", "value": <string>} is a tagged scalar. */
static bool is_leaf(const jv *v) {
  if (v->t != J_OBJ || v->n != 2) return false;
  const jv *t = jget(v, "type", 4), *val = jget(v, "value", 5);
  return t && val && t->t == J_STR && val->t == J_STR;
}

/* Date/time text -> fields. kind as in the "type" tag. Returns 0 or -1. */
typedef struct dtv {
  long long y, mo, d, h, mi, s, ns, off; /* off in minutes */
} dtv;

static int dt_parse(const char *kind, const char *s, dtv *o) {
  memset(o, 0, sizeof *o);
  int n = 0;
  if (strcmp(kind, "time-local") != 0) {
    if (sscanf(s, "%4lld-%2lld-%2lld%n", &o->y, &o->mo, &o->d, &n) != 3 || n != 10) return -1;
    s += n;
    if (!strcmp(kind, "date-local")) return *s ? -1 : 0;
    if (*s != 'T' && *s != 't' && *s != ' ') return -1;
    s++;
  }
  if (sscanf(s, "%2lld:%2lld:%2lld%n", &o->h, &o->mi, &o->s, &n) != 3 || n != 8) return -1;
  s += n;
  if (*s == '.') {
    long long scale = 100000000;
    for (s++; isdigit((unsigned char)*s); s++, scale /= 10) o->ns += (*s - '0') * scale;
  }
  if (!strcmp(kind, "datetime")) {
    if (*s == 'Z' || *s == 'z') {
      s++;
    } else if (*s == '+' || *s == '-') {
      long long oh, om;
      if (sscanf(s + 1, "%2lld:%2lld%n", &oh, &om, &n) != 2 || n != 5) return -1;
      o->off = (*s == '-' ? -1 : 1) * (oh * 60 + om);
      s += 6;
    } else {
      return -1;
    }
  }
  return *s ? -1 : 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static long long days_from_civil(long long y, long long m, long long d) {
  y -= m <= 2;
  long long era = (y >= 0 ? y : y - 399) / 400;
  long long yoe = y - era * 400;
  long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static bool scalar_eq(const char *type, const jv *want, const jv *have) {
  const char *w = want->s, *h = have->s;
  if (!strcmp(type, "string")) return want->len == have->len && memcmp(w, h, want->len) == 0;
  if (!strcmp(type, "bool") || !strcmp(type, "boolean")) return !strcmp(w, h);
  if (!strcmp(type, "integer")) {
    char *e1, *e2;
    errno = 0;
    long long a = strtoll(w, &e1, 10), b = strtoll(h, &e2, 10);
    return !errno && !*e1 && !*e2 && a == b;
  }
  if (!strcmp(type, "float")) {
    char *e1, *e2;
    double a = strtod(w, &e1), b = strtod(h, &e2);
    if (*e1 || *e2) return false;
    return (isnan(a) && isnan(b)) || a == b;
  }
  dtv a, b;
  if (dt_parse(type, w, &a) < 0 || dt_parse(type, h, &b) < 0) return false;
  if (!strcmp(type, "datetime")) { /* compare instants */
    long long ta = (days_from_civil(a.y, a.mo, a.d) * 24 + a.h) * 3600 + a.mi * 60 + a.s - a.off * 60;
    long long tb = (days_from_civil(b.y, b.mo, b.d) * 24 + b.h) * 3600 + b.mi * 60 + b.s - b.off * 60;
    return ta == tb && a.ns == b.ns;
  }
  return a.y == b.y && a.mo == b.mo && a.d == b.d && a.h == b.h && a.mi == b.mi && a.s == b.s && a.ns == b.ns;
}

/* Compares expected `want` with decoded `have`; describes the first
 * difference (with the key path) in why. */
static bool jv_eq(const jv *want, const jv *have, sbuf *path, char *why, size_t whylen) {
  size_t plen = path->n;
  bool ok = true;
  if (is_leaf(want)) {
    if (!is_leaf(have)) {
      snprintf(why, whylen, "%s: expected a tagged value, got a table/array", path->d);
      return false;
    }
    const jv *wt = jget(want, "type", 4), *ht = jget(have, "type", 4);
    const jv *wv = jget(want, "value", 5), *hv = jget(have, "value", 5);
    if (strcmp(wt->s, ht->s) != 0) {
      snprintf(why, whylen, "%s: type %s, expected %s", path->d, ht->s, wt->s);
      return false;
    }
    if (!scalar_eq(wt->s, wv, hv)) {
      snprintf(why, whylen, "%s: value \"%s\", expected \"%s\" (%s)", path->d, hv->s, wv->s, wt->s);
      return false;
    }
    return true;
  }
  if (want->t != have->t || is_leaf(have)) {
    snprintf(why, whylen, "%s: structure differs (table/array/value)", path->d);
    return false;
  }
  if (want->t == J_ARR || want->t == J_OBJ) {
    if (want->n != have->n) {
      snprintf(why, whylen, "%s: %zu entries, expected %zu", path->d, have->n, want->n);
      return false;
    }
    for (size_t i = 0; ok && i < want->n; i++) {
      const jv *hi;
      if (want->t == J_ARR) {
        sb_printf(path, "[%zu]", i);
        hi = have->items[i];
      } else {
        sb_puts(path, ".");
        sb_add(path, want->keys[i].d, want->keys[i].n);
        hi = jget(have, want->keys[i].d, want->keys[i].n);
      }
      if (!hi) {
        snprintf(why, whylen, "%s: missing", path->d);
        ok = false;
      } else {
        ok = jv_eq(want->items[i], hi, path, why, whylen);
      }
      path->n = plen;
      path->d[plen] = '\0';
    }
    return ok;
  }
  snprintf(why, whylen, "%s: unexpected JSON value in expected file", path->d);
  return false;
}

/* ------------------------------------------------------------------ */
/* suite                                                              */
/* ------------------------------------------------------------------ */

static int run_one(const char *dir, const char *rel, bool valid, char *why, size_t whylen) {
  char path[4096], err[512];
  size_t len;
  snprintf(path, sizeof path, "%s/tests/%s", dir, rel);
  char *text = read_file(path, &len);
  if (!text) {
    snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  char *json = decode(text, len, err, sizeof err);
  free(text);
  if (!valid) {
    if (json) {
      snprintf(why, whylen, "accepted an invalid document; decoded as %.300s", json);
      free(json);
      return -1;
    }
    return 0;
  }
  if (!json) {
    snprintf(why, whylen, "rejected: %s", err);
    return -1;
  }
  /* expected JSON beside the .toml */
  size_t pl = strlen(path);
  snprintf(path + pl - 5, sizeof path - (pl - 5), ".json");
  char *expect = read_file(path, &len);
  if (!expect) {
    snprintf(why, whylen, "cannot read %s: %s", path, strerror(errno));
    free(json);
    return -1;
  }
  const char *jerr;
  jv *want = json_parse(expect, len, &jerr);
  if (!want) snprintf(why, whylen, "bad expected JSON %s: %s", path, jerr);
  jv *have = want ? json_parse(json, strlen(json), &jerr) : NULL;
  if (want && !have) snprintf(why, whylen, "decoder emitted invalid JSON (%s): %.300s", jerr, json);
  int rc = -1;
  if (want && have) {
    sbuf p = {0};
    sb_puts(&p, "$");
    rc = jv_eq(want, have, &p, why, whylen) ? 0 : -1;
    free(p.d);
  }
  jv_free(want);
  jv_free(have);
  free(expect);
  free(json);
  return rc;
}

/* The files of a suite without a list: every .toml under DIR/tests/KIND,
 * as "KIND/..." paths, sorted (a stable order for the log). */
static char **g_found;
static size_t g_nfound, g_capfound;
static size_t g_prefix; /* strlen(DIR/tests/) */
/* Files of such a suite that test TOML 1.1, not 1.0 (the list would leave them out). */
static const char *const toml11_only[] = {
    "valid/string/escape-esc.toml", /* \e: an escape TOML 1.1 added */
};
static int found_cb(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  (void)st; (void)ftw;
  size_t n = strlen(path);
  if (type != FTW_F || n < 5 || strcmp(path + n - 5, ".toml") != 0) return 0;
  for (size_t i = 0; i < sizeof toml11_only / sizeof toml11_only[0]; i++)
    if (strcmp(path + g_prefix, toml11_only[i]) == 0) return 0;
  if (g_nfound == g_capfound) {
    size_t cap = g_capfound ? g_capfound * 2 : 256;
    char **p = realloc(g_found, cap * sizeof *p);
    if (!p) return 1;
    g_found = p;
    g_capfound = cap;
  }
  if (!(g_found[g_nfound] = strdup(path + g_prefix))) return 1;
  g_nfound++;
  return 0;
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Writes the list of a suite without one into a temporary file. */
static FILE *list_by_walking(const char *dir, const char *kind) {
  char root[4096];
  snprintf(root, sizeof root, "%s/tests/", dir);
  g_prefix = strlen(root);
  snprintf(root + g_prefix, sizeof root - g_prefix, "%s", kind);
  if (nftw(root, found_cb, 16, FTW_PHYS) != 0) return NULL;
  qsort(g_found, g_nfound, sizeof *g_found, cmp_str);
  FILE *f = tmpfile();
  for (size_t i = 0; i < g_nfound; i++) {
    if (f) fprintf(f, "%s\n", g_found[i]);
    free(g_found[i]);
  }
  free(g_found);
  g_found = NULL;
  g_nfound = g_capfound = 0;
  if (f) rewind(f);
  return f;
}

static int suite(const char *dir, const char *kind) {
  bool valid = !strcmp(kind, "valid");
  if (!valid && strcmp(kind, "invalid") != 0) {
    fprintf(stderr, "kind must be valid or invalid\n");
    return 2;
  }
  char list[4096];
  snprintf(list, sizeof list, "%s/tests/files-toml-1.0.0", dir);
  FILE *f = fopen(list, "r");
  if (!f && errno == ENOENT) f = list_by_walking(dir, kind);
  if (!f) {
    fprintf(stderr,
            "FAIL: the toml-test suite is missing: cannot open %s (%s).\n"
            "Expected a checkout of github.com/toml-lang/toml-test at ../shared/toml-test "
            "relative to the project root, or Debian's golang-github-burntsushi-toml-dev.\n",
            list, strerror(errno));
    return 1;
  }
  char line[1024], why[1024];
  int total = 0, failed = 0;
  size_t plen = strlen(kind);
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = '\0';
    size_t n = strlen(line);
    if (strncmp(line, kind, plen) != 0 || line[plen] != '/' || n < 5 || strcmp(line + n - 5, ".toml") != 0)
      continue;
    total++;
    why[0] = '\0';
    if (run_one(dir, line, valid, why, sizeof why) < 0) {
      failed++;
      printf("FAIL %s: %s\n", line, why);
    }
  }
  fclose(f);
  printf("toml-test %s (TOML 1.0): %d files, %d passed, %d failed\n", kind, total, total - failed, failed);
  if (total == 0) {
    fprintf(stderr, "FAIL: no %s files listed in %s\n", kind, list);
    return 1;
  }
  return failed ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "decode")) {
    size_t len;
    char err[512];
    char *text = read_file(argc >= 3 ? argv[2] : NULL, &len);
    if (!text) {
      fprintf(stderr, "cannot read input: %s\n", strerror(errno));
      return 2;
    }
    char *json = decode(text, len, err, sizeof err);
    free(text);
    if (!json) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    printf("%s\n", json);
    free(json);
    return 0;
  }
  if (argc == 4 && !strcmp(argv[1], "suite")) return suite(argv[2], argv[3]);
  fprintf(stderr, "usage: %s decode [FILE] | suite TOML_TEST_DIR valid|invalid\n", argv[0]);
  return 2;
}
