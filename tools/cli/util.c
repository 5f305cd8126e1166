/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-cli: errors, numbers, durations, files. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int g_level = AMN_LOG_WARN;

void debugf(const char *fmt, ...) {
  if (g_level < AMN_LOG_DEBUG) return;
  va_list ap;
  va_start(ap, fmt);
  fputs(PROG ": ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void vdie(int code, const char *fmt, va_list ap) __attribute__((noreturn));
static void vdie(int code, const char *fmt, va_list ap) {
  fputs(PROG ": ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  exit(code);
}

void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdie(EX_USAGE, fmt, ap);
}

void die_code(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdie(code, fmt, ap);
}

/* Flushes stdout: 0, or EX_IOERR (printed) when the output cannot be written. */
int flush_stdout(void) {
  if (fflush(stdout) == 0 && !ferror(stdout)) return 0;
  fprintf(stderr, PROG ": cannot write the output: %s\n", strerror(errno));
  return EX_IOERR;
}

/* Prints "STATUS_NAME: message" and returns the code as exit status. */
int fail_status(int code, const char *msg) {
  fprintf(stderr, "%s: %s\n", amn_status_name(code), msg && *msg ? msg : "(no message)");
  return code;
}

/* Status for a call that could not be issued (negative AMN_E* code). */
int status_of_err(int rc) {
  switch (rc) {
  case AMN_EINVAL: return AMN_STATUS_INVALID_ARGUMENT;
  case AMN_ETOOBIG: return AMN_STATUS_RESOURCE_EXHAUSTED;
  case AMN_ENOMEM: return AMN_STATUS_RESOURCE_EXHAUSTED;
  case AMN_EIO: case AMN_ETLS: case AMN_ECLOSED: return AMN_STATUS_UNAVAILABLE;
  default: return AMN_STATUS_INTERNAL;
  }
}

uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

long long parse_int(const char *flag, const char *s, long long lo, long long hi) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  int sh = 0;
  if (end != s && (*end == 'k' || *end == 'K')) sh = 10, end++;
  else if (end != s && (*end == 'm' || *end == 'M')) sh = 20, end++;
  if (end == s || *end || errno || v < 0 || v > (LLONG_MAX >> sh))
    die("%s: '%s' is not a non-negative integer", flag, s);
  v <<= sh;
  if (v < lo || v > hi) die("%s: %lld is out of range %lld..%lld", flag, v, lo, hi);
  return v;
}

/* A duration: a non-negative decimal number with an optional unit ms, s, m
 * or h ("500ms", "1.5s", "2m"); a bare number counts in `bare` seconds (1e-3
 * for milliseconds, 1 for seconds). Returns seconds, within [lo, hi]. */
double parse_duration(const char *flag, const char *s, double bare, double lo, double hi) {
  size_t n = strspn(s, "0123456789.");
  if (n == 0 || strchr(s, '.') != strrchr(s, '.') || (n == 1 && s[0] == '.'))
    die("%s: '%s' is not a duration (a number with an optional unit ms, s, m or h, e.g. 500ms, 2s, 1m)", flag, s);
  static const struct { const char *unit; double seconds; } units[] = {
      {"", 0}, {"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};
  double unit = -1;
  for (size_t k = 0; k < sizeof units / sizeof units[0]; k++)
    if (strcmp(s + n, units[k].unit) == 0) unit = k == 0 ? bare : units[k].seconds;
  if (unit < 0) die("%s: unknown unit '%s' in '%s' (ms, s, m, h or d)", flag, s + n, s);
  double v = strtod(s, NULL) * unit;
  if (!(v >= lo) || v > hi) die("%s: '%s' is out of range (%.10gs..%.10gs)", flag, s, lo, hi);
  return v;
}

/* A rate in calls per second: a positive decimal number (at most 10 million). */
double parse_rate(const char *flag, const char *s) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (end == s || *end || errno || !(v > 0) || v > 1e7)
    die("%s: '%s' is not a rate (calls per second, more than 0 and at most 10000000)", flag, s);
  return v;
}

/* --timeout: a duration in whole milliseconds (a bare number is ms). */
long long parse_timeout_ms(const char *flag, const char *s) {
  double v = parse_duration(flag, s, 1e-3, 0, 2147483.647);
  long long ms = llround(v * 1000);
  if (v > 0 && ms == 0) die("%s: '%s' is shorter than a millisecond", flag, s);
  return ms;
}

/* Reads a whole file ("-" = stdin). */
uint8_t *slurp(const char *path, size_t *len) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) die_code(EX_NOINPUT, "cannot read %s: %s", path, strerror(errno));
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (!buf) die_code(EX_SOFTWARE, "out of memory reading %s", path);
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    cap *= 2;
    buf = realloc(buf, cap);
  }
  if (ferror(f)) die_code(EX_IOERR, "cannot read %s: %s", path, strerror(errno));
  if (f != stdin) fclose(f);
  *len = n;
  return buf;
}

