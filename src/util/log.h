/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Internal logging. Thread-safe; one line per call. */
#ifndef AMN_UTIL_LOG_H
#define AMN_UTIL_LOG_H

#include "amn/common.h"

extern int amn_log_level_current;

void amn_log_write(amn_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define AMN_LOG(lvl, ...) \
  do { if ((int)(lvl) <= amn_log_level_current) amn_log_write((lvl), __VA_ARGS__); } while (0)
#define AMN_ERROR(...) AMN_LOG(AMN_LOG_ERROR, __VA_ARGS__)
#define AMN_WARN(...) AMN_LOG(AMN_LOG_WARN, __VA_ARGS__)
#define AMN_INFO(...) AMN_LOG(AMN_LOG_INFO, __VA_ARGS__)
#define AMN_DEBUG(...) AMN_LOG(AMN_LOG_DEBUG, __VA_ARGS__)

/* One field of a structured line (amn_log_fields). */
typedef enum { AMN_LF_STR = 0, AMN_LF_INT, AMN_LF_NULL } amn_log_field_kind;
typedef struct amn_log_field {
  const char *key;
  amn_log_field_kind kind;
  const char *s;
  int64_t i;
} amn_log_field;

/* A line with fields, whatever the level (the access log): text
 * "MSG key=value ..." (values quoted and escaped when needed), or in JSON
 * mode the fields as members of the line's object. */
void amn_log_fields(amn_log_level level, const char *msg, const amn_log_field *f, size_t n);
/* true when stderr is the journal's stream (JOURNAL_STREAM matches it). */
bool amn_log_journal(void);

/* Formats into err/errlen when err is non-NULL; returns `code`. */
int amn_set_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
