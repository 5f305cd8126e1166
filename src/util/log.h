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

/* Formats into err/errlen when err is non-NULL; returns `code`. */
int amn_set_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
