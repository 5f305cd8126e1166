#include "util/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int amn_log_level_current = AMN_LOG_INFO;
static amn_log_fn g_sink;
static void *g_sink_ud;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void amn_log_set_level(amn_log_level level) {
  __atomic_store_n(&amn_log_level_current, (int)level, __ATOMIC_RELAXED);
}

int amn_log_level_parse(const char *s) {
  if (!s) return -1;
  for (int i = 0; i < 4; i++)
    if (strcasecmp(s, level_names[i]) == 0) return i;
  if (strcasecmp(s, "warning") == 0) return AMN_LOG_WARN;
  return -1;
}

void amn_log_set_sink(amn_log_fn fn, void *ud) {
  g_sink = fn;
  g_sink_ud = ud;
}

void amn_log_write(amn_log_level level, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (g_sink) {
    g_sink(level, line, g_sink_ud);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  /* one fprintf per line: stdio locks the stream, so lines never interleave */
  fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s amaters-net: %s\n", tm.tm_year + 1900,
          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
          level_names[level], line);
}

int amn_set_err(char *err, size_t errlen, int code, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}
