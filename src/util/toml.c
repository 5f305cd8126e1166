/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Strict TOML 1.0 parser (see toml.h). Recursive descent over the whole
 * buffer; the DOM keeps keys in insertion order with a linear lookup, which
 * is fine for configuration-sized documents. */
#include "util/toml.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Table flags: how a table came to exist (the TOML redefinition rules
 * depend on it). Array flag: created by [[header]] (extendable). */
enum {
  TF_EXPLICIT = 1, /* [a] header */
  TF_IMPLICIT = 2, /* intermediate of a header path: [a.b] creates a */
  TF_DOTTED = 4,   /* created by a dotted key a.b = 1 */
  TF_SEALED = 8,   /* inline table (or inside one): immutable */
  AF_AOT = 16,     /* array of tables */
};

#define MAX_DEPTH 128 /* nesting of arrays / inline tables */
#define MAX_KEY_PARTS 128 /* simple keys in one dotted key or table header: each
                           * part is a level of tables, and the DOM is freed
                           * (and walked by callers) recursively */

typedef struct kv {
  char *key;
  size_t klen;
  amn_toml_node *val;
} kv;

struct amn_toml_node {
  amn_toml_type type;
  int line;
  unsigned flags;
  union {
    struct { char *s; size_t len; } str;
    int64_t i;
    double f;
    bool b;
    amn_toml_datetime dt;
    struct { kv *items; size_t n, cap; } tab;
    struct { amn_toml_node **items; size_t n, cap; } arr;
  } u;
};

struct amn_toml_doc {
  amn_toml_node *root;
};

typedef struct buf {
  char *d;
  size_t n, cap;
} buf;

typedef struct keypart {
  char *s;
  size_t len;
} keypart;

typedef struct parser {
  const char *p, *end;
  int line;
  char *err;
  size_t errlen;
  int err_line;
  bool failed;
  int depth;
  amn_toml_node *root, *cur;
} parser;

/* ------------------------------------------------------------------ */
/* helpers                                                            */
/* ------------------------------------------------------------------ */

__attribute__((format(printf, 2, 3))) static int fail(parser *P, const char *fmt, ...) {
  if (!P->failed) {
    P->failed = true;
    P->err_line = P->line;
    if (P->err && P->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(P->err, P->errlen, fmt, ap);
      va_end(ap);
    }
  }
  return -1;
}

static int oom(parser *P) {
  if (!P->failed) {
    fail(P, "out of memory");
    P->err_line = 0;
  }
  return -1;
}

static int buf_add(parser *P, buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 32;
    while (cap < b->n + n + 1) cap *= 2;
    char *d = realloc(b->d, cap);
    if (!d) return oom(P);
    b->d = d;
    b->cap = cap;
  }
  memcpy(b->d + b->n, s, n);
  b->n += n;
  b->d[b->n] = '\0';
  return 0;
}

static int buf_addc(parser *P, buf *b, char c) { return buf_add(P, b, &c, 1); }

static amn_toml_node *node_new(parser *P, amn_toml_type t, int line) {
  amn_toml_node *n = calloc(1, sizeof *n);
  if (!n) {
    oom(P);
    return NULL;
  }
  n->type = t;
  n->line = line;
  return n;
}

static void node_free(amn_toml_node *n) {
  if (!n) return;
  if (n->type == AMN_TOML_STRING) {
    free(n->u.str.s);
  } else if (n->type == AMN_TOML_TABLE) {
    for (size_t i = 0; i < n->u.tab.n; i++) {
      free(n->u.tab.items[i].key);
      node_free(n->u.tab.items[i].val);
    }
    free(n->u.tab.items);
  } else if (n->type == AMN_TOML_ARRAY) {
    for (size_t i = 0; i < n->u.arr.n; i++) node_free(n->u.arr.items[i]);
    free(n->u.arr.items);
  }
  free(n);
}

static amn_toml_node *tab_find(const amn_toml_node *t, const char *k, size_t klen) {
  for (size_t i = 0; i < t->u.tab.n; i++)
    if (t->u.tab.items[i].klen == klen && memcmp(t->u.tab.items[i].key, k, klen) == 0)
      return t->u.tab.items[i].val;
  return NULL;
}

/* Inserts (key copied) -> val; on failure val is freed. */
static int tab_insert(parser *P, amn_toml_node *t, const char *k, size_t klen, amn_toml_node *val) {
  if (t->u.tab.n == t->u.tab.cap) {
    size_t cap = t->u.tab.cap ? t->u.tab.cap * 2 : 8;
    kv *items = realloc(t->u.tab.items, cap * sizeof *items);
    if (!items) goto nomem;
    t->u.tab.items = items;
    t->u.tab.cap = cap;
  }
  char *key = malloc(klen + 1);
  if (!key) goto nomem;
  memcpy(key, k, klen);
  key[klen] = '\0';
  t->u.tab.items[t->u.tab.n++] = (kv){key, klen, val};
  return 0;
nomem:
  node_free(val);
  return oom(P);
}

static int arr_push(parser *P, amn_toml_node *a, amn_toml_node *val) {
  if (a->u.arr.n == a->u.arr.cap) {
    size_t cap = a->u.arr.cap ? a->u.arr.cap * 2 : 8;
    amn_toml_node **items = realloc(a->u.arr.items, cap * sizeof *items);
    if (!items) {
      node_free(val);
      return oom(P);
    }
    a->u.arr.items = items;
    a->u.arr.cap = cap;
  }
  a->u.arr.items[a->u.arr.n++] = val;
  return 0;
}

/* Dotted display form of a key path for messages, e.g. a."b c".d */
static const char *keyname(const keypart *k, size_t n, char *out, size_t outlen) {
  size_t o = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n && o + 1 < outlen; i++) {
    bool bare = k[i].len > 0;
    for (size_t j = 0; j < k[i].len; j++) {
      char c = k[i].s[j];
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
            c == '-'))
        bare = false;
    }
    int w = snprintf(out + o, outlen - o, "%s%s%.*s%s", i ? "." : "", bare ? "" : "\"", (int)k[i].len,
                     k[i].s, bare ? "" : "\"");
    if (w < 0) break;
    o += (size_t)w;
  }
  return out;
}

static const char *kind_of(const amn_toml_node *n) {
  if (n->type == AMN_TOML_TABLE) return (n->flags & TF_SEALED) ? "an inline table" : "a table";
  if (n->type == AMN_TOML_ARRAY) return (n->flags & AF_AOT) ? "an array of tables" : "an array";
  if (n->type == AMN_TOML_STRING) return "a string";
  if (n->type == AMN_TOML_INT) return "an integer";
  if (n->type == AMN_TOML_FLOAT) return "a float";
  if (n->type == AMN_TOML_BOOL) return "a boolean";
  return "a date/time";
}

static const char *show_char(const char *p, const char *end, char *tmp) {
  if (p >= end) return "end of file";
  unsigned char c = (unsigned char)*p;
  if (c == '\n') return "newline";
  if (c < 0x20 || c >= 0x7f) {
    snprintf(tmp, 16, "byte 0x%02x", c);
    return tmp;
  }
  snprintf(tmp, 16, "'%c'", c);
  return tmp;
}

/* ------------------------------------------------------------------ */
/* whole-document checks: UTF-8 and control characters                */
/* ------------------------------------------------------------------ */

static int check_encoding(parser *P) {
  const unsigned char *s = (const unsigned char *)P->p, *e = (const unsigned char *)P->end;
  int line = 1;
  while (s < e) {
    unsigned c = *s;
    if (c < 0x80) {
      if (c == '\n') {
        line++;
      } else if (c == '\r') {
        if (s + 1 >= e || s[1] != '\n') {
          P->line = line;
          return fail(P, "bare carriage return (CR not followed by LF)");
        }
      } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
        P->line = line;
        return fail(P, "control character U+%04X is not allowed (escape it in a basic string)", c);
      }
      s++;
      continue;
    }
    /* multi-byte sequence: reject overlong forms, surrogates, > U+10FFFF */
    size_t n;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07, min = 0x10000;
    else n = 0, cp = 0, min = 0;
    bool ok = n > 0 && (size_t)(e - s) >= n;
    for (size_t i = 1; ok && i < n; i++) {
      if ((s[i] & 0xc0) != 0x80) ok = false;
      else cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (!ok || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      P->line = line;
      return fail(P, "invalid UTF-8 sequence (byte 0x%02x)", c);
    }
    /* C1 controls are valid UTF-8 and allowed in TOML 1.0 strings/comments */
    s += n;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* lexical helpers                                                    */
/* ------------------------------------------------------------------ */

static bool at_eof(parser *P) { return P->p >= P->end; }
static int peek(parser *P, size_t off) {
  return P->p + off < P->end ? (unsigned char)P->p[off] : -1;
}
static bool starts(parser *P, const char *s) {
  size_t n = strlen(s);
  return (size_t)(P->end - P->p) >= n && memcmp(P->p, s, n) == 0;
}
static bool is_newline(parser *P) { return peek(P, 0) == '\n' || (peek(P, 0) == '\r' && peek(P, 1) == '\n'); }
static void skip_ws(parser *P) {
  while (P->p < P->end && (*P->p == ' ' || *P->p == '\t')) P->p++;
}
static void eat_newline(parser *P) {
  if (*P->p == '\r') P->p++;
  P->p++;
  P->line++;
}
static void skip_comment(parser *P) {
  if (peek(P, 0) == '#')
    while (P->p < P->end && *P->p != '\n' && *P->p != '\r') P->p++;
}
/* Whitespace, comments and newlines (inside arrays). */
static void skip_ws_nl(parser *P) {
  for (;;) {
    skip_ws(P);
    skip_comment(P);
    if (at_eof(P) || !is_newline(P)) return;
    eat_newline(P);
  }
}
/* After a key/value pair or a header: ws, optional comment, end of line. */
static int expect_eol(parser *P, const char *what) {
  char tmp[16];
  skip_ws(P);
  skip_comment(P);
  if (at_eof(P)) return 0;
  if (is_newline(P)) {
    eat_newline(P);
    return 0;
  }
  return fail(P, "expected end of line after %s, found %s", what, show_char(P->p, P->end, tmp));
}

static bool is_bare(int c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}
static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* ------------------------------------------------------------------ */
/* strings                                                            */
/* ------------------------------------------------------------------ */

static int utf8_put(parser *P, buf *b, uint32_t cp) {
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
  return buf_add(P, b, o, n);
}

/* P->p at the backslash of an escape in a basic string. */
static int escape(parser *P, buf *b) {
  char tmp[16];
  int c = peek(P, 1);
  const char *rep = NULL;
  switch (c) {
  case 'b': rep = "\b"; break;
  case 't': rep = "\t"; break;
  case 'n': rep = "\n"; break;
  case 'f': rep = "\f"; break;
  case 'r': rep = "\r"; break;
  case '"': rep = "\""; break;
  case '\\': rep = "\\"; break;
  case 'u':
  case 'U': {
    int nd = c == 'u' ? 4 : 8;
    uint32_t cp = 0;
    for (int i = 0; i < nd; i++) {
      int h = hexval(peek(P, 2 + (size_t)i));
      if (h < 0) return fail(P, "invalid \\%c escape: expected %d hex digits", c, nd);
      cp = (cp << 4) | (uint32_t)h;
    }
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return fail(P, "invalid \\%c escape: U+%04X is not a Unicode scalar value", c, cp);
    P->p += 2 + nd;
    return utf8_put(P, b, cp);
  }
  default:
    if (c < 0) return fail(P, "unterminated string");
    return fail(P, "invalid escape sequence '\\' followed by %s", show_char(P->p + 1, P->end, tmp));
  }
  P->p += 2;
  return buf_add(P, b, rep, 1);
}

/* Parses any of the four string forms at P->p into *out (NUL-terminated,
 * malloc'ed). allow_ml: multi-line forms are permitted (values, not keys). */
static int parse_string(parser *P, char **out, size_t *outlen, bool allow_ml) {
  buf b = {0};
  char q = *P->p;
  bool literal = q == '\'';
  bool ml = literal ? starts(P, "'''") : starts(P, "\"\"\"");
  int start_line = P->line;
  if (ml && !allow_ml) return fail(P, "multi-line strings cannot be used as keys");
  if (buf_add(P, &b, "", 0) < 0) return -1;
  if (ml) {
    P->p += 3;
    if (!at_eof(P) && is_newline(P)) eat_newline(P); /* newline right after the delimiter is trimmed */
  } else {
    P->p++;
  }
  for (;;) {
    if (at_eof(P)) {
      P->line = start_line;
      fail(P, "unterminated %s string", ml ? "multi-line" : literal ? "literal" : "basic");
      goto err;
    }
    char c = *P->p;
    if (c == q) {
      if (!ml) {
        P->p++;
        break;
      }
      size_t run = 0;
      while (peek(P, run) == q) run++;
      if (run >= 3) { /* closing delimiter; up to two quotes before it belong to the content */
        if (run > 5) {
          fail(P, "too many quotes (%zu) at the end of a multi-line string", run);
          goto err;
        }
        if (buf_add(P, &b, P->p, run - 3) < 0) goto err;
        P->p += run;
        break;
      }
      if (buf_add(P, &b, P->p, run) < 0) goto err;
      P->p += run;
      continue;
    }
    if (is_newline(P)) {
      if (!ml) {
        fail(P, "newline in a single-line %s string", literal ? "literal" : "basic");
        goto err;
      }
      eat_newline(P);
      if (buf_addc(P, &b, '\n') < 0) goto err; /* CRLF normalised to LF */
      continue;
    }
    if (c == '\\' && !literal) {
      if (ml) { /* line-ending backslash: trim whitespace and newlines up to the next character */
        size_t i = 1;
        while (peek(P, i) == ' ' || peek(P, i) == '\t') i++;
        if (peek(P, i) == '\n' || (peek(P, i) == '\r' && peek(P, i + 1) == '\n')) {
          P->p += i;
          for (;;) {
            skip_ws(P);
            if (at_eof(P) || !is_newline(P)) break;
            eat_newline(P);
          }
          continue;
        }
      }
      if (escape(P, &b) < 0) goto err;
      continue;
    }
    if (buf_addc(P, &b, c) < 0) goto err;
    P->p++;
  }
  *out = b.d;
  *outlen = b.n;
  return 0;
err:
  free(b.d);
  return -1;
}

/* ------------------------------------------------------------------ */
/* keys                                                               */
/* ------------------------------------------------------------------ */

typedef struct keypath {
  keypart *k;
  size_t n, cap;
} keypath;

static void keypath_free(keypath *kp) {
  for (size_t i = 0; i < kp->n; i++) free(kp->k[i].s);
  free(kp->k);
  memset(kp, 0, sizeof *kp);
}

/* key = simple-key *( ws '.' ws simple-key ) */
static int parse_key(parser *P, keypath *kp) {
  char tmp[16];
  for (;;) {
    char *s;
    size_t len;
    int c = peek(P, 0);
    if (c == '"' || c == '\'') {
      if (parse_string(P, &s, &len, false) < 0) return -1;
    } else if (is_bare(c)) {
      const char *st = P->p;
      while (is_bare(peek(P, 0))) P->p++;
      len = (size_t)(P->p - st);
      s = malloc(len + 1);
      if (!s) return oom(P);
      memcpy(s, st, len);
      s[len] = '\0';
    } else {
      return fail(P, "expected a key, found %s", show_char(P->p, P->end, tmp));
    }
    if (kp->n == kp->cap) {
      size_t cap = kp->cap ? kp->cap * 2 : 4;
      keypart *k = realloc(kp->k, cap * sizeof *k);
      if (!k) {
        free(s);
        return oom(P);
      }
      kp->k = k;
      kp->cap = cap;
    }
    kp->k[kp->n++] = (keypart){s, len};
    if (kp->n > MAX_KEY_PARTS) return fail(P, "key has too many dotted parts (max %d)", MAX_KEY_PARTS);
    skip_ws(P);
    if (peek(P, 0) != '.') return 0;
    P->p++;
    skip_ws(P);
  }
}

/* ------------------------------------------------------------------ */
/* numbers, booleans, date-times                                      */
/* ------------------------------------------------------------------ */

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) { c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

/* Digits of `radix` with '_' only between two digits. Copies digits to
 * `out` (if non-NULL). Returns the number of characters consumed, or -1. */
static long digits(parser *P, const char *s, const char *e, int radix, buf *out, const char *tok) {
  const char *st = s;
  bool prev_digit = false;
  while (s < e) {
    int v = hexval((unsigned char)*s);
    if (v >= 0 && v < radix) {
      if (out && buf_addc(P, out, *s) < 0) return -1;
      prev_digit = true;
    } else if (*s == '_') {
      if (!prev_digit || s + 1 >= e || hexval((unsigned char)s[1]) < 0 || hexval((unsigned char)s[1]) >= radix)
        return fail(P, "invalid number '%s': '_' must be between two digits", tok);
      prev_digit = false;
    } else {
      break;
    }
    s++;
  }
  if (s == st) return fail(P, "invalid number '%s': expected a digit", tok);
  return s - st;
}

/* Number token [0-9A-Za-z_.+-]+ at P->p: integer or float. */
static amn_toml_node *parse_number(parser *P) {
  const char *s = P->p, *e = s;
  while (e < P->end && (is_bare((unsigned char)*e) || *e == '.' || *e == '+')) e++;
  size_t len = (size_t)(e - s);
  char tok[64];
  snprintf(tok, sizeof tok, "%.*s%s", (int)(len > 40 ? 40 : len), s, len > 40 ? "..." : "");
  amn_toml_node *n = NULL;
  buf b = {0};
  const char *q = s;
  bool neg = false, sign = false;
  if (*q == '+' || *q == '-') neg = *q == '-', sign = true, q++;
  /* inf / nan */
  if (e - q == 3 && (memcmp(q, "inf", 3) == 0 || memcmp(q, "nan", 3) == 0)) {
    if (!(n = node_new(P, AMN_TOML_FLOAT, P->line))) return NULL;
    n->u.f = q[0] == 'i' ? (neg ? -INFINITY : INFINITY) : (neg ? -NAN : NAN);
    P->p = e;
    return n;
  }
  if (q >= e || !is_digit((unsigned char)*q)) { /* also inf/nan look-alikes such as "infinity" */
    fail(P, "invalid value '%s'", tok);
    return NULL;
  }
  /* hex / octal / binary integers: no sign, lower-case prefix */
  if (q + 1 < e && q[0] == '0' && (q[1] == 'x' || q[1] == 'o' || q[1] == 'b')) {
    int radix = q[1] == 'x' ? 16 : q[1] == 'o' ? 8 : 2;
    if (sign) {
      fail(P, "invalid integer '%s': a sign is not allowed with a 0%c prefix", tok, q[1]);
      return NULL;
    }
    long dn = digits(P, q + 2, e, radix, &b, tok);
    if (dn < 0) goto out;
    if (q + 2 + dn != e) {
      fail(P, "invalid integer '%s'", tok);
      goto out;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < b.n; i++) {
      if (v > (UINT64_C(0x7fffffffffffffff) - (uint64_t)hexval(b.d[i])) / (uint64_t)radix) {
        fail(P, "integer '%s' does not fit in 64 bits", tok);
        goto out;
      }
      v = v * (uint64_t)radix + (uint64_t)hexval(b.d[i]);
    }
    if (!(n = node_new(P, AMN_TOML_INT, P->line))) goto out;
    n->u.i = (int64_t)v;
    P->p = e;
    goto out;
  }
  /* decimal: int-part [ '.' frac ] [ ('e'|'E') [sign] exp ] */
  if (buf_add(P, &b, s, (size_t)(q - s)) < 0) goto out;
  long dn = digits(P, q, e, 10, &b, tok);
  if (dn < 0) goto out;
  if (q[0] == '0' && dn > 1) {
    fail(P, "invalid number '%s': leading zeros are not allowed", tok);
    goto out;
  }
  const char *r = q + dn;
  bool is_float = false;
  if (r < e && *r == '.') {
    is_float = true;
    if (buf_addc(P, &b, '.') < 0) goto out;
    r++;
    long fn = digits(P, r, e, 10, &b, tok);
    if (fn < 0) goto out;
    r += fn;
  }
  if (r < e && (*r == 'e' || *r == 'E')) {
    is_float = true;
    if (buf_addc(P, &b, 'e') < 0) goto out;
    r++;
    if (r < e && (*r == '+' || *r == '-')) {
      if (buf_addc(P, &b, *r) < 0) goto out;
      r++;
    }
    long en = digits(P, r, e, 10, &b, tok);
    if (en < 0) goto out;
    r += en;
  }
  if (r != e) {
    fail(P, "invalid number '%s'", tok);
    goto out;
  }
  if (is_float) {
    pthread_once(&c_locale_once, c_locale_init);
    char *endp;
    double d = c_locale ? strtod_l(b.d, &endp, c_locale) : strtod(b.d, &endp);
    if (*endp) {
      fail(P, "invalid float '%s'", tok);
      goto out;
    }
    if (!(n = node_new(P, AMN_TOML_FLOAT, P->line))) goto out;
    n->u.f = d;
  } else {
    errno = 0;
    char *endp;
    long long v = strtoll(b.d, &endp, 10);
    if (errno == ERANGE) {
      fail(P, "integer '%s' does not fit in 64 bits", tok);
      goto out;
    }
    if (!(n = node_new(P, AMN_TOML_INT, P->line))) goto out;
    n->u.i = (int64_t)v;
  }
  P->p = e;
out:
  free(b.d);
  return n;
}

static int ndig(const char *s, const char *e, int n) {
  if (e - s < n) return -1;
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!is_digit((unsigned char)s[i])) return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

static int days_in_month(int y, int m) {
  static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 29;
  return dm[m - 1];
}

/* HH:MM:SS[.frac] at *sp; seconds are required in TOML 1.0. */
static int parse_time(parser *P, const char **sp, amn_toml_datetime *dt) {
  const char *s = *sp, *e = P->end;
  int h = ndig(s, e, 2), m = -1, sec = -1;
  if (h >= 0 && s + 2 < e && s[2] == ':') m = ndig(s + 3, e, 2);
  if (m >= 0 && s + 5 < e && s[5] == ':') sec = ndig(s + 6, e, 2);
  if (h < 0 || m < 0 || sec < 0) return fail(P, "invalid time: expected HH:MM:SS");
  if (h > 23 || m > 59 || sec > 60) return fail(P, "invalid time %02d:%02d:%02d: out of range", h, m, sec);
  dt->hour = h, dt->minute = m, dt->second = sec;
  s += 8;
  if (s < e && *s == '.') {
    s++;
    int nd = 0;
    long ns = 0;
    while (s < e && is_digit((unsigned char)*s)) {
      if (nd < 9) ns = ns * 10 + (*s - '0'), nd++; /* extra precision is truncated */
      s++;
    }
    if (nd == 0) return fail(P, "invalid time: expected digits after '.'");
    dt->frac_digits = nd;
    for (int i = nd; i < 9; i++) ns *= 10;
    dt->nanosecond = (int)ns;
  }
  *sp = s;
  return 0;
}

/* Date-time forms at P->p (caller checked the DDDD- or DD: prefix). */
static amn_toml_node *parse_datetime(parser *P) {
  const char *s = P->p, *e = P->end;
  amn_toml_datetime dt = {0};
  amn_toml_type type;
  if (s + 2 < e && s[2] == ':') {
    if (parse_time(P, &s, &dt) < 0) return NULL;
    type = AMN_TOML_TIME_LOCAL;
  } else {
    int y = ndig(s, e, 4), mo = -1, d = -1;
    if (y >= 0 && s + 4 < e && s[4] == '-') mo = ndig(s + 5, e, 2);
    if (mo >= 0 && s + 7 < e && s[7] == '-') d = ndig(s + 8, e, 2);
    if (y < 0 || mo < 0 || d < 0) {
      fail(P, "invalid date: expected YYYY-MM-DD");
      return NULL;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) {
      fail(P, "invalid date %04d-%02d-%02d: no such day", y, mo, d);
      return NULL;
    }
    dt.year = y, dt.month = mo, dt.day = d;
    s += 10;
    type = AMN_TOML_DATE_LOCAL;
    /* 'T', 't' or a space followed by a time */
    if (s < e && (*s == 'T' || *s == 't' || (*s == ' ' && ndig(s + 1, e, 2) >= 0 && s + 3 < e && s[3] == ':'))) {
      s++;
      if (parse_time(P, &s, &dt) < 0) return NULL;
      type = AMN_TOML_DATETIME_LOCAL;
      if (s < e && (*s == 'Z' || *s == 'z')) {
        dt.offset_z = true;
        type = AMN_TOML_DATETIME;
        s++;
      } else if (s < e && (*s == '+' || *s == '-')) {
        int oh = ndig(s + 1, e, 2), om = -1;
        if (oh >= 0 && s + 3 < e && s[3] == ':') om = ndig(s + 4, e, 2);
        if (oh < 0 || om < 0) {
          fail(P, "invalid date-time offset: expected [+-]HH:MM");
          return NULL;
        }
        if (oh > 23 || om > 59) {
          fail(P, "invalid date-time offset %c%02d:%02d: out of range", *s, oh, om);
          return NULL;
        }
        dt.offset_minutes = (*s == '-' ? -1 : 1) * (oh * 60 + om);
        type = AMN_TOML_DATETIME;
        s += 6;
      }
    }
  }
  amn_toml_node *n = node_new(P, type, P->line);
  if (!n) return NULL;
  n->u.dt = dt;
  P->p = s;
  return n;
}

/* ------------------------------------------------------------------ */
/* values                                                             */
/* ------------------------------------------------------------------ */

static int keyval(parser *P, amn_toml_node *tab);
static amn_toml_node *parse_value(parser *P);

static void seal(amn_toml_node *t) {
  t->flags |= TF_SEALED;
  for (size_t i = 0; i < t->u.tab.n; i++)
    if (t->u.tab.items[i].val->type == AMN_TOML_TABLE) seal(t->u.tab.items[i].val);
}

static amn_toml_node *parse_array(parser *P) {
  char tmp[16];
  amn_toml_node *a = node_new(P, AMN_TOML_ARRAY, P->line);
  if (!a) return NULL;
  P->p++; /* '[' */
  for (;;) {
    skip_ws_nl(P);
    if (peek(P, 0) == ']') break;
    amn_toml_node *v = parse_value(P);
    if (!v || arr_push(P, a, v) < 0) goto err;
    skip_ws_nl(P);
    if (peek(P, 0) == ',') {
      P->p++;
      continue;
    }
    if (peek(P, 0) == ']') break;
    fail(P, "expected ',' or ']' in array, found %s", show_char(P->p, P->end, tmp));
    goto err;
  }
  P->p++;
  return a;
err:
  node_free(a);
  return NULL;
}

static amn_toml_node *parse_inline_table(parser *P) {
  char tmp[16];
  amn_toml_node *t = node_new(P, AMN_TOML_TABLE, P->line);
  if (!t) return NULL;
  P->p++; /* '{' */
  skip_ws(P);
  if (peek(P, 0) != '}') {
    for (;;) {
      if (keyval(P, t) < 0) goto err;
      skip_ws(P);
      if (peek(P, 0) == '}') break;
      if (peek(P, 0) != ',') {
        if (!at_eof(P) && (is_newline(P) || peek(P, 0) == '#'))
          fail(P, "inline tables must be on one line (TOML 1.0): expected ',' or '}'");
        else
          fail(P, "expected ',' or '}' in inline table, found %s", show_char(P->p, P->end, tmp));
        goto err;
      }
      P->p++;
      skip_ws(P);
      if (peek(P, 0) == '}') {
        fail(P, "trailing comma in inline table (not allowed in TOML 1.0)");
        goto err;
      }
    }
  }
  P->p++;
  seal(t);
  return t;
err:
  node_free(t);
  return NULL;
}

static bool word(parser *P, const char *w) {
  size_t n = strlen(w);
  return starts(P, w) && !is_bare(peek(P, n));
}

static amn_toml_node *parse_value(parser *P) {
  char tmp[16];
  int c = peek(P, 0);
  amn_toml_node *n = NULL;
  /* only arrays and inline tables count as levels (not the scalar inside) */
  bool nests = c == '[' || c == '{';
  if (nests && ++P->depth > MAX_DEPTH) {
    fail(P, "arrays/inline tables nested too deeply (max %d)", MAX_DEPTH);
    return NULL;
  }
  if (c == '"' || c == '\'') {
    char *s;
    size_t len;
    int line = P->line;
    if (parse_string(P, &s, &len, true) == 0) {
      if ((n = node_new(P, AMN_TOML_STRING, line))) n->u.str.s = s, n->u.str.len = len;
      else free(s);
    }
  } else if (c == '[') {
    n = parse_array(P);
  } else if (c == '{') {
    n = parse_inline_table(P);
  } else if (word(P, "true") || word(P, "false")) {
    if ((n = node_new(P, AMN_TOML_BOOL, P->line))) {
      n->u.b = c == 't';
      P->p += n->u.b ? 4 : 5;
    }
  } else if ((ndig(P->p, P->end, 4) >= 0 && peek(P, 4) == '-') ||
             (ndig(P->p, P->end, 2) >= 0 && peek(P, 2) == ':')) {
    n = parse_datetime(P);
  } else if (is_digit(c) || c == '+' || c == '-' || c == 'i' || c == 'n') {
    n = parse_number(P);
  } else if (c < 0 || c == '\n' || c == '\r' || c == '#') {
    fail(P, "missing value");
  } else {
    fail(P, "invalid value starting with %s", show_char(P->p, P->end, tmp));
  }
  if (nests) P->depth--;
  return n;
}

/* ------------------------------------------------------------------ */
/* key/value pairs and table headers                                  */
/* ------------------------------------------------------------------ */

/* key = value into `tab` (the current table, or an inline table). */
static int keyval(parser *P, amn_toml_node *tab) {
  char name[256], part[256], tmp[16];
  keypath kp = {0};
  int rc = -1, line = P->line;
  if (parse_key(P, &kp) < 0) goto out;
  if (peek(P, 0) != '=') {
    fail(P, "expected '=' after key '%s', found %s", keyname(kp.k, kp.n, name, sizeof name),
         show_char(P->p, P->end, tmp));
    goto out;
  }
  P->p++;
  skip_ws(P);
  amn_toml_node *t = tab;
  /* walk / create the tables of a dotted key */
  for (size_t i = 0; i + 1 < kp.n; i++) {
    amn_toml_node *ch = tab_find(t, kp.k[i].s, kp.k[i].len);
    if (!ch) {
      if (!(ch = node_new(P, AMN_TOML_TABLE, line))) goto out;
      ch->flags = TF_DOTTED;
      if (tab_insert(P, t, kp.k[i].s, kp.k[i].len, ch) < 0) goto out;
    } else if (ch->type != AMN_TOML_TABLE || (ch->flags & (TF_SEALED | TF_EXPLICIT))) {
      const char *why = ch->type != AMN_TOML_TABLE ? kind_of(ch)
                        : (ch->flags & TF_SEALED)  ? "an inline table (inline tables cannot be extended)"
                                                   : "a table defined by a [header]";
      fail(P, "cannot use dotted key '%s': '%s' is already %s", keyname(kp.k, kp.n, name, sizeof name),
           keyname(kp.k, i + 1, part, sizeof part), why);
      goto out;
    } else if (ch->flags & TF_IMPLICIT) {
      ch->flags = TF_DOTTED; /* now defined by dotted keys: a later [header] for it is an error */
    }
    t = ch;
  }
  keypart *last = &kp.k[kp.n - 1];
  if (tab_find(t, last->s, last->len)) {
    fail(P, "duplicate key '%s'", keyname(kp.k, kp.n, name, sizeof name));
    goto out;
  }
  amn_toml_node *v = parse_value(P);
  if (!v) goto out;
  rc = tab_insert(P, t, last->s, last->len, v);
out:
  keypath_free(&kp);
  return rc;
}

/* [a.b.c] or [[a.b.c]] */
static int header(parser *P) {
  char name[256], part[256], tmp[16];
  keypath kp = {0};
  int rc = -1;
  bool aot = peek(P, 1) == '[';
  P->p += aot ? 2 : 1;
  skip_ws(P);
  if (parse_key(P, &kp) < 0) goto out;
  if (peek(P, 0) != ']' || (aot && peek(P, 1) != ']')) {
    fail(P, "expected '%s' to close table header '%s', found %s", aot ? "]]" : "]",
         keyname(kp.k, kp.n, name, sizeof name), show_char(P->p, P->end, tmp));
    goto out;
  }
  P->p += aot ? 2 : 1;
  amn_toml_node *t = P->root;
  for (size_t i = 0; i + 1 < kp.n; i++) {
    amn_toml_node *ch = tab_find(t, kp.k[i].s, kp.k[i].len);
    if (!ch) {
      if (!(ch = node_new(P, AMN_TOML_TABLE, P->line))) goto out;
      ch->flags = TF_IMPLICIT;
      if (tab_insert(P, t, kp.k[i].s, kp.k[i].len, ch) < 0) goto out;
    } else if (ch->type == AMN_TOML_ARRAY && (ch->flags & AF_AOT)) {
      ch = ch->u.arr.items[ch->u.arr.n - 1]; /* the most recent element */
    } else if (ch->type != AMN_TOML_TABLE || (ch->flags & TF_SEALED)) {
      fail(P, "cannot define table '%s': '%s' is already %s", keyname(kp.k, kp.n, name, sizeof name),
           keyname(kp.k, i + 1, part, sizeof part), kind_of(ch));
      goto out;
    }
    t = ch;
  }
  keypart *last = &kp.k[kp.n - 1];
  amn_toml_node *ch = tab_find(t, last->s, last->len);
  keyname(kp.k, kp.n, name, sizeof name);
  if (!aot) {
    if (!ch) {
      if (!(ch = node_new(P, AMN_TOML_TABLE, P->line))) goto out;
      if (tab_insert(P, t, last->s, last->len, ch) < 0) goto out;
    } else if (ch->type != AMN_TOML_TABLE || (ch->flags & TF_SEALED)) {
      fail(P, "cannot define table '%s': it is already %s", name, kind_of(ch));
      goto out;
    } else if (ch->flags & TF_EXPLICIT) {
      fail(P, "table '%s' defined twice (first at line %d)", name, ch->line);
      goto out;
    } else if (ch->flags & TF_DOTTED) {
      fail(P, "table '%s' was already defined with dotted keys (line %d)", name, ch->line);
      goto out;
    }
    ch->flags = TF_EXPLICIT;
    ch->line = P->line;
    P->cur = ch;
  } else {
    if (!ch) {
      if (!(ch = node_new(P, AMN_TOML_ARRAY, P->line))) goto out;
      ch->flags = AF_AOT;
      if (tab_insert(P, t, last->s, last->len, ch) < 0) goto out;
    } else if (ch->type != AMN_TOML_ARRAY || !(ch->flags & AF_AOT)) {
      fail(P, "cannot define array of tables '%s': it is already %s", name, kind_of(ch));
      goto out;
    }
    amn_toml_node *el = node_new(P, AMN_TOML_TABLE, P->line);
    if (!el) goto out;
    el->flags = TF_EXPLICIT;
    if (arr_push(P, ch, el) < 0) goto out;
    P->cur = el;
  }
  rc = expect_eol(P, "table header");
out:
  keypath_free(&kp);
  return rc;
}

/* ------------------------------------------------------------------ */
/* public API                                                         */
/* ------------------------------------------------------------------ */

amn_toml_doc *amn_toml_parse(const char *text, size_t len, char *err, size_t errlen, int *err_line) {
  parser P = {.p = text, .end = text + len, .line = 1, .err = err, .errlen = errlen};
  if (err && errlen) err[0] = '\0';
  amn_toml_doc *doc = calloc(1, sizeof *doc);
  if (!doc || !(P.root = node_new(&P, AMN_TOML_TABLE, 1))) {
    free(doc);
    oom(&P);
    goto fail;
  }
  P.root->flags = TF_EXPLICIT;
  doc->root = P.cur = P.root;
  if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) P.p += 3; /* UTF-8 BOM */
  if (check_encoding(&P) < 0) goto fail_doc;
  P.line = 1;
  while (!at_eof(&P)) {
    skip_ws(&P);
    skip_comment(&P);
    if (at_eof(&P)) break;
    if (is_newline(&P)) {
      eat_newline(&P);
      continue;
    }
    if (peek(&P, 0) == '[') {
      if (header(&P) < 0) goto fail_doc;
    } else {
      if (keyval(&P, P.cur) < 0 || expect_eol(&P, "value") < 0) goto fail_doc;
    }
  }
  if (err_line) *err_line = 0;
  return doc;
fail_doc:
  amn_toml_free(doc);
fail:
  if (err_line) *err_line = P.err_line;
  return NULL;
}

void amn_toml_free(amn_toml_doc *doc) {
  if (!doc) return;
  node_free(doc->root);
  free(doc);
}

const amn_toml_node *amn_toml_root(const amn_toml_doc *doc) { return doc ? doc->root : NULL; }
amn_toml_type amn_toml_type_of(const amn_toml_node *n) { return n->type; }
int amn_toml_line(const amn_toml_node *n) { return n ? n->line : 0; }

const char *amn_toml_type_name(amn_toml_type t) {
  static const char *const names[] = {"table",   "array",    "string",         "integer",    "float",
                                      "bool",    "datetime", "datetime-local", "date-local", "time-local"};
  return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

size_t amn_toml_count(const amn_toml_node *n) {
  if (!n) return 0;
  if (n->type == AMN_TOML_TABLE) return n->u.tab.n;
  if (n->type == AMN_TOML_ARRAY) return n->u.arr.n;
  return 0;
}

const char *amn_toml_key_at(const amn_toml_node *t, size_t i, size_t *len) {
  if (!t || t->type != AMN_TOML_TABLE || i >= t->u.tab.n) return NULL;
  if (len) *len = t->u.tab.items[i].klen;
  return t->u.tab.items[i].key;
}

const amn_toml_node *amn_toml_at(const amn_toml_node *n, size_t i) {
  if (!n) return NULL;
  if (n->type == AMN_TOML_TABLE) return i < n->u.tab.n ? n->u.tab.items[i].val : NULL;
  if (n->type == AMN_TOML_ARRAY) return i < n->u.arr.n ? n->u.arr.items[i] : NULL;
  return NULL;
}

const amn_toml_node *amn_toml_get(const amn_toml_node *t, const char *key) {
  if (!t || t->type != AMN_TOML_TABLE || !key) return NULL;
  return tab_find(t, key, strlen(key));
}

const char *amn_toml_str(const amn_toml_node *n, size_t *len) {
  if (!n || n->type != AMN_TOML_STRING) return NULL;
  if (len) *len = n->u.str.len;
  return n->u.str.s;
}
int64_t amn_toml_int(const amn_toml_node *n) { return n && n->type == AMN_TOML_INT ? n->u.i : 0; }
double amn_toml_float(const amn_toml_node *n) { return n && n->type == AMN_TOML_FLOAT ? n->u.f : 0.0; }
bool amn_toml_bool(const amn_toml_node *n) { return n && n->type == AMN_TOML_BOOL && n->u.b; }
const amn_toml_datetime *amn_toml_dt(const amn_toml_node *n) {
  return n && n->type >= AMN_TOML_DATETIME && n->type <= AMN_TOML_TIME_LOCAL ? &n->u.dt : NULL;
}
