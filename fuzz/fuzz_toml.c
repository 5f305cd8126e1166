/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The strict TOML 1.0 reader (src/util/toml.c). Input: a document.
 * Invariants:
 *  - an error has a non-empty message and a line within the document;
 *  - an accepted document is well-formed: valid types, lines >= 1 (and
 *    not past the end), unique keys that amn_toml_get finds, date/time
 *    fields in range, table and array counts matching their entries;
 *  - round trip: the document written back as TOML (fuzz/toml_writer.h)
 *    parses again into an equal tree (same types, keys in the same order,
 *    equal values; floats bit for bit, NaN as NaN). Skipped for documents
 *    nesting tables deeper than 128 (headers / dotted keys allow up to 128
 *    levels each, inline tables too; the writer makes everything inline).
 */
#include "toml_writer.h"

static int g_lines;

/* Checks n and its subtree; returns the nesting of tables/arrays in it. */
static int check_node(const amn_toml_node *n) {
  int depth = 0, sub;
  amn_toml_type t = amn_toml_type_of(n);
  FUZZ_CHECK(t >= AMN_TOML_TABLE && t <= AMN_TOML_TIME_LOCAL);
  FUZZ_CHECK(amn_toml_type_name(t) != NULL);
  FUZZ_CHECK(amn_toml_line(n) >= 1 && amn_toml_line(n) <= g_lines);
  size_t c = amn_toml_count(n);
  if (t == AMN_TOML_TABLE) {
    for (size_t i = 0; i < c; i++) {
      size_t kl;
      const char *k = amn_toml_key_at(n, i, &kl);
      FUZZ_CHECK(k != NULL && k[kl] == '\0');
      const amn_toml_node *v = amn_toml_at(n, i);
      FUZZ_CHECK(v != NULL);
      if (strlen(k) == kl) FUZZ_CHECK(amn_toml_get(n, k) == v); /* keys are unique */
      if ((sub = check_node(v)) > depth) depth = sub;
    }
    FUZZ_CHECK(amn_toml_at(n, c) == NULL && amn_toml_key_at(n, c, NULL) == NULL);
  } else if (t == AMN_TOML_ARRAY) {
    for (size_t i = 0; i < c; i++)
      if ((sub = check_node(amn_toml_at(n, i))) > depth) depth = sub;
    FUZZ_CHECK(amn_toml_at(n, c) == NULL);
  } else {
    FUZZ_CHECK(c == 0);
  }
  if (t == AMN_TOML_STRING) {
    size_t l;
    const char *s = amn_toml_str(n, &l);
    FUZZ_CHECK(s != NULL && s[l] == '\0');
  }
  if (t >= AMN_TOML_DATETIME) {
    const amn_toml_datetime *d = amn_toml_dt(n);
    FUZZ_CHECK(d != NULL);
    if (t != AMN_TOML_TIME_LOCAL)
      FUZZ_CHECK(d->year >= 0 && d->year <= 9999 && d->month >= 1 && d->month <= 12 && d->day >= 1 && d->day <= 31);
    if (t != AMN_TOML_DATE_LOCAL)
      FUZZ_CHECK(d->hour >= 0 && d->hour <= 23 && d->minute >= 0 && d->minute <= 59 && d->second >= 0 &&
                 d->second <= 60 && d->nanosecond >= 0 && d->nanosecond <= 999999999 && d->frac_digits >= 0 &&
                 d->frac_digits <= 9);
    if (t == AMN_TOML_DATETIME) FUZZ_CHECK(d->offset_minutes >= -1439 && d->offset_minutes <= 1439);
    if (d->offset_z) FUZZ_CHECK(d->offset_minutes == 0);
  }
  return t == AMN_TOML_TABLE || t == AMN_TOML_ARRAY ? depth + 1 : 0;
}

static bool dt_equal(const amn_toml_datetime *a, const amn_toml_datetime *b) {
  return a->year == b->year && a->month == b->month && a->day == b->day && a->hour == b->hour &&
         a->minute == b->minute && a->second == b->second && a->nanosecond == b->nanosecond &&
         (a->frac_digits > 0) == (b->frac_digits > 0) && a->offset_minutes == b->offset_minutes &&
         a->offset_z == b->offset_z;
}

static bool equal(const amn_toml_node *a, const amn_toml_node *b) {
  amn_toml_type t = amn_toml_type_of(a);
  if (t != amn_toml_type_of(b) || amn_toml_count(a) != amn_toml_count(b)) return false;
  switch (t) {
  case AMN_TOML_TABLE:
    for (size_t i = 0; i < amn_toml_count(a); i++) {
      size_t al, bl;
      const char *ak = amn_toml_key_at(a, i, &al), *bk = amn_toml_key_at(b, i, &bl);
      if (al != bl || memcmp(ak, bk, al) != 0 || !equal(amn_toml_at(a, i), amn_toml_at(b, i))) return false;
    }
    return true;
  case AMN_TOML_ARRAY:
    for (size_t i = 0; i < amn_toml_count(a); i++)
      if (!equal(amn_toml_at(a, i), amn_toml_at(b, i))) return false;
    return true;
  case AMN_TOML_STRING: {
    size_t al, bl;
    const char *as = amn_toml_str(a, &al), *bs = amn_toml_str(b, &bl);
    return al == bl && memcmp(as, bs, al) == 0;
  }
  case AMN_TOML_INT: return amn_toml_int(a) == amn_toml_int(b);
  case AMN_TOML_FLOAT: {
    double x = amn_toml_float(a), y = amn_toml_float(b);
    return (isnan(x) && isnan(y)) || memcmp(&x, &y, sizeof x) == 0;
  }
  case AMN_TOML_BOOL: return amn_toml_bool(a) == amn_toml_bool(b);
  default: return dt_equal(amn_toml_dt(a), amn_toml_dt(b));
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  g_lines = 1;
  for (size_t i = 0; i < size; i++) g_lines += data[i] == '\n';
  char err[256] = "";
  int line = -1;
  amn_toml_doc *doc = amn_toml_parse((const char *)data, size, err, sizeof err, &line);
  if (!doc) {
    FUZZ_CHECK(err[0] != '\0' && strlen(err) < sizeof err);
    FUZZ_CHECK(line >= 0 && line <= g_lines);
    return 0;
  }
  const amn_toml_node *root = amn_toml_root(doc);
  FUZZ_CHECK(root != NULL && amn_toml_type_of(root) == AMN_TOML_TABLE);
  /* the writer makes every table below the root inline: documents nesting
   * deeper than the reader's inline limit (128) cannot be written back */
  if (check_node(root) - 1 > 128) {
    amn_toml_free(doc);
    return 0;
  }

  tw w = {0};
  tw_doc(&w, root);
  char err2[256] = "";
  int line2 = 0;
  amn_toml_doc *doc2 = amn_toml_parse(w.s ? w.s : "", w.len, err2, sizeof err2, &line2);
  if (!doc2) fprintf(stderr, "re-parse failed at line %d: %s\n%s", line2, err2, w.s ? w.s : "");
  FUZZ_CHECK(doc2 != NULL);
  FUZZ_CHECK(equal(root, amn_toml_root(doc2)));
  amn_toml_free(doc2);
  amn_toml_free(doc);
  free(w.s);
  return 0;
}
