/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Header-block input format shared by fuzz_req_headers and
 * fuzz_resp_headers: fields are separated by '\n', a field's name from its
 * value by the first '\t' (a field without '\t' is fed with a NULL value);
 * an empty line ends a block (response targets: headers, then trailers).
 */
#ifndef AMN_FUZZ_HEADERS_H
#define AMN_FUZZ_HEADERS_H

#include "fuzz_common.h"
#include "rpc/rpc.h"

#define FUZZ_MAX_FIELDS 1024

typedef struct fuzz_field {
  const uint8_t *name, *value; /* value NULL: fed as NULL */
  size_t nlen, vlen;
  bool block_end;              /* an empty line: not a field */
} fuzz_field;

/* Splits data into at most FUZZ_MAX_FIELDS entries; returns the count. */
static inline size_t fuzz_split_fields(const uint8_t *data, size_t size, fuzz_field *f) {
  size_t n = 0, i = 0;
  while (i < size && n < FUZZ_MAX_FIELDS) {
    const uint8_t *line = data + i;
    const uint8_t *nl = memchr(line, '\n', size - i);
    size_t len = nl ? (size_t)(nl - line) : size - i;
    i += len + (nl != NULL);
    fuzz_field *x = &f[n++];
    memset(x, 0, sizeof *x);
    if (len == 0) {
      x->block_end = true;
      continue;
    }
    const uint8_t *tab = memchr(line, '\t', len);
    x->name = line;
    x->nlen = tab ? (size_t)(tab - line) : len;
    if (tab) {
      x->value = tab + 1;
      x->vlen = len - x->nlen - 1;
    }
  }
  return n;
}

/* gRPC Header-Name characters, non-empty. */
static inline bool fuzz_valid_key(const char *k) {
  if (!k || !*k) return false;
  for (; *k; k++)
    if (!((*k >= '0' && *k <= '9') || (*k >= 'a' && *k <= 'z') || *k == '_' || *k == '-' || *k == '.'))
      return false;
  return true;
}

static inline bool fuzz_is_bin(const char *k) {
  size_t n = strlen(k);
  return n >= 4 && memcmp(k + n - 4, "-bin", 4) == 0;
}

/* One received metadata entry is well-formed. */
static inline void fuzz_check_md(const amn_rpc_md *m) {
  FUZZ_CHECK(fuzz_valid_key(m->key));
  FUZZ_CHECK(m->value != NULL && m->value[m->value_len] == '\0');
  if (!fuzz_is_bin(m->key))
    for (size_t i = 0; i < m->value_len; i++) FUZZ_CHECK(m->value[i] >= 0x20 && m->value[i] <= 0x7e);
}

static inline bool fuzz_md_equal(const amn_rpc_md *a, const amn_rpc_md *b) {
  return strcmp(a->key, b->key) == 0 && a->value_len == b->value_len &&
         (a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0);
}

#endif
