/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal strict TOML 1.0 reader (https://toml.io/en/v1.0.0).
 *
 * amn_toml_parse builds an immutable DOM: the root table, tables (keys kept
 * in insertion order), arrays and scalar values. Every node remembers the
 * 1-based source line where it starts (for tables: the line of the header,
 * of the first dotted key creating it, or of the opening '{'). Anything the
 * TOML 1.0 specification does not allow is rejected with a specific message
 * and the line of the offending text: invalid UTF-8, control characters,
 * bad escapes, integer overflow, duplicate keys, tables defined twice,
 * extending inline tables or static arrays, ... Limits of this reader:
 * arrays / inline tables nest at most 128 deep, and a dotted key or table
 * header has at most 128 parts (a 2 MB "[a.a.a...]" header once nested a
 * million tables and overflowed the stack when the DOM was freed).
 *
 * Strings and keys are UTF-8 and NUL-terminated; they may also contain NUL
 * (via \u0000), so their length is available separately.
 */
#ifndef AMN_UTIL_TOML_H
#define AMN_UTIL_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum amn_toml_type {
  AMN_TOML_TABLE,
  AMN_TOML_ARRAY,
  AMN_TOML_STRING,
  AMN_TOML_INT,
  AMN_TOML_FLOAT,
  AMN_TOML_BOOL,
  AMN_TOML_DATETIME,       /**< offset date-time 1979-05-27T07:32:00Z */
  AMN_TOML_DATETIME_LOCAL, /**< local date-time 1979-05-27T07:32:00 */
  AMN_TOML_DATE_LOCAL,     /**< local date 1979-05-27 */
  AMN_TOML_TIME_LOCAL,     /**< local time 07:32:00 */
} amn_toml_type;

/** Date/time value; the fields that do not apply to the type are 0. */
typedef struct amn_toml_datetime {
  int year, month, day;          /**< date part */
  int hour, minute, second;      /**< time part (second may be 60) */
  int nanosecond;                /**< fraction, truncated to nanoseconds */
  int frac_digits;               /**< digits of the fraction as written (max 9), 0 = none */
  int offset_minutes;            /**< offset date-time only: -1439..1439 */
  bool offset_z;                 /**< offset written as Z/z */
} amn_toml_datetime;

typedef struct amn_toml_doc amn_toml_doc;
typedef struct amn_toml_node amn_toml_node;

/**
 * Parses `len` bytes of TOML (a leading UTF-8 BOM is skipped). Returns the
 * document, or NULL on error with a message in err (may be NULL) and the
 * 1-based line of the error in *err_line (may be NULL; 0 when the error
 * has no line, e.g. out of memory).
 */
amn_toml_doc *amn_toml_parse(const char *text, size_t len, char *err, size_t errlen, int *err_line);
void amn_toml_free(amn_toml_doc *doc);

/** The root table. */
const amn_toml_node *amn_toml_root(const amn_toml_doc *doc);

/** Type of a node (n must not be NULL). */
amn_toml_type amn_toml_type_of(const amn_toml_node *n);
/** "table", "array", "string", "integer", "float", "bool", "datetime",
 *  "datetime-local", "date-local", "time-local" (the toml-test names). */
const char *amn_toml_type_name(amn_toml_type t);
/** 1-based line where the node starts. */
int amn_toml_line(const amn_toml_node *n);

/** Number of keys of a table or elements of an array; 0 for scalars. */
size_t amn_toml_count(const amn_toml_node *n);
/** Table: i-th key in insertion order (length in *len if non-NULL). */
const char *amn_toml_key_at(const amn_toml_node *table, size_t i, size_t *len);
/** Table: value of the i-th key. Array: i-th element. NULL if out of range. */
const amn_toml_node *amn_toml_at(const amn_toml_node *n, size_t i);
/** Table: value of `key` (NUL-terminated) or NULL. */
const amn_toml_node *amn_toml_get(const amn_toml_node *table, const char *key);

/** Scalar accessors; the caller checks the type first (wrong type: 0/NULL). */
const char *amn_toml_str(const amn_toml_node *n, size_t *len);
int64_t amn_toml_int(const amn_toml_node *n);
double amn_toml_float(const amn_toml_node *n);
bool amn_toml_bool(const amn_toml_node *n);
const amn_toml_datetime *amn_toml_dt(const amn_toml_node *n);

#endif
