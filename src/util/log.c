/* SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "util/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

int amn_log_level_current = AMN_LOG_INFO;
static amn_log_fn g_sink;
static void *g_sink_ud;
static int g_format = AMN_LOG_FORMAT_TEXT;
static int g_journal = -1; /* -1: not yet looked at; 0 / 1: stderr is (not) the journal's stream */

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_prio[] = {3, 4, 6, 7}; /* err, warning, info, debug (sd-daemon.h) */

void amn_log_set_level(amn_log_level level) {
  __atomic_store_n(&amn_log_level_current, (int)level, __ATOMIC_RELAXED);
}

amn_log_level amn_log_get_level(void) {
  return (amn_log_level)__atomic_load_n(&amn_log_level_current, __ATOMIC_RELAXED);
}

int amn_log_level_parse(const char *s) {
  if (!s) return -1;
  for (int i = 0; i < 4; i++)
    if (strcasecmp(s, level_names[i]) == 0) return i;
  if (strcasecmp(s, "warning") == 0) return AMN_LOG_WARN;
  return -1;
}

const char *amn_log_level_name(amn_log_level level) {
  return (unsigned)level < 4 ? level_names[level] : "?";
}

void amn_log_set_sink(amn_log_fn fn, void *ud) {
  g_sink = fn;
  g_sink_ud = ud;
}

void amn_log_set_format(amn_log_format f) {
  __atomic_store_n(&g_format, f == AMN_LOG_FORMAT_JSON ? AMN_LOG_FORMAT_JSON : AMN_LOG_FORMAT_TEXT, __ATOMIC_RELAXED);
}

/* systemd connects a service's stderr to the journal and says so in
 * JOURNAL_STREAM ("DEV:INODE" of that stream, systemd.exec(5)): then lines
 * carry a "<N>" priority prefix and no timestamp (the journal has its own). */
bool amn_log_journal(void) {
  int j = __atomic_load_n(&g_journal, __ATOMIC_RELAXED);
  if (j >= 0) return j == 1;
  const char *js = getenv("JOURNAL_STREAM");
  unsigned long long dev = 0, ino = 0;
  struct stat st;
  j = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 && (unsigned long long)st.st_dev == dev &&
      (unsigned long long)st.st_ino == ino;
  __atomic_store_n(&g_journal, j, __ATOMIC_RELAXED);
  return j == 1;
}

/* ---- one line ---- */

typedef struct lbuf {
  char b[4096];
  size_t n;
} lbuf;

/* A string value stops (cut) while less than this is left, so that the
 * keys, numbers and closing characters of the rest of a JSON line always fit:
 * a long value never makes a line that does not parse. */
#define LOG_TAIL_RESERVE 512

static void lput(lbuf *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lput(lbuf *l, const char *fmt, ...) {
  if (l->n >= sizeof l->b - 1) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(l->b + l->n, sizeof l->b - l->n, fmt, ap);
  va_end(ap);
  if (n > 0) l->n += (size_t)n < sizeof l->b - l->n ? (size_t)n : sizeof l->b - 1 - l->n;
}

/* Length of the valid UTF-8 sequence at s (0: not one). */
static size_t utf8_len(const unsigned char *s) {
  if (s[0] < 0x80) return 1;
  size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
  for (size_t i = 1; i < n; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  return n;
}

/* A JSON string: quotes, backslashes and control characters escaped;
 * bytes that are not UTF-8 become U+FFFD, so a line always parses (a value
 * too long for the line is cut, ending "..."). */
static void put_json_str(lbuf *l, const char *s, bool cut) {
  lput(l, "\"");
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    size_t n = utf8_len(p);
    if (cut && sizeof l->b - l->n < LOG_TAIL_RESERVE) {
      lput(l, "...");
      break;
    }
    if (n == 0) {
      lput(l, "\\ufffd");
      p++;
    } else if (*p == '"' || *p == '\\') {
      lput(l, "\\%c", *p++);
    } else if (*p < 0x20 || *p == 0x7f) {
      lput(l, "\\u%04x", *p++);
    } else {
      lput(l, "%.*s", (int)n, (const char *)p);
      p += n;
    }
  }
  lput(l, "\"");
}

/* A text value: as is when it is one plain word, else quoted with
 * quotes, backslashes and control characters escaped (a value never
 * breaks the line). */
static void put_text_str(lbuf *l, const char *s) {
  bool plain = *s != 0;
  for (const unsigned char *p = (const unsigned char *)s; *p && plain; p++)
    if (*p <= 0x20 || *p == '"' || *p == '\\' || *p == '=' || *p == 0x7f) plain = false;
  if (plain) {
    lput(l, "%s", s);
    return;
  }
  lput(l, "\"");
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') lput(l, "\\%c", *p);
    else if (*p == '\n') lput(l, "\\n");
    else if (*p < 0x20 || *p == 0x7f) lput(l, "\\x%02x", *p);
    else lput(l, "%c", *p);
  }
  lput(l, "\"");
}

static void emit(amn_log_level level, const char *source, const char *msg, const amn_log_field *f, size_t nf) {
  int fmt = __atomic_load_n(&g_format, __ATOMIC_RELAXED);
  bool journal = !g_sink && amn_log_journal();
  lbuf l = {.n = 0};
  l.b[0] = 0;
  if (journal) lput(&l, "<%d>", syslog_prio[level]);
  char ts[64] = "";
  if (fmt == AMN_LOG_FORMAT_JSON || (!journal && !g_sink)) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    struct tm tm;
    gmtime_r(&t.tv_sec, &tm);
    snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, t.tv_nsec / 1000000);
  }
  if (fmt == AMN_LOG_FORMAT_JSON) {
    lput(&l, "{\"time\":\"%s\",\"level\":\"%s\",\"source\":", ts, level_names[level]);
    put_json_str(&l, source, true);
    lput(&l, ",\"msg\":");
    put_json_str(&l, msg, true);
    for (size_t i = 0; i < nf; i++) {
      lput(&l, ",");
      put_json_str(&l, f[i].key, false); /* short, ours */
      lput(&l, ":");
      if (f[i].kind == AMN_LF_INT) lput(&l, "%lld", (long long)f[i].i);
      else if (f[i].kind == AMN_LF_NULL || !f[i].s) lput(&l, "null");
      else put_json_str(&l, f[i].s, true);
    }
    lput(&l, "}");
  } else {
    if (ts[0]) lput(&l, "%s %-5s %s: ", ts, level_names[level], source);
    else if (journal) lput(&l, "%s: ", source);
    lput(&l, "%s", msg); /* a sink gets the message and its fields alone */
    for (size_t i = 0; i < nf; i++) {
      lput(&l, " %s=", f[i].key);
      if (f[i].kind == AMN_LF_INT) lput(&l, "%lld", (long long)f[i].i);
      else if (f[i].kind == AMN_LF_NULL || !f[i].s) lput(&l, "-");
      else put_text_str(&l, f[i].s);
    }
  }
  if (g_sink) {
    g_sink(level, l.b, g_sink_ud);
    return;
  }
  /* one fprintf per line: stdio locks the stream, so lines never interleave */
  fprintf(stderr, "%s\n", l.b);
}

void amn_log_write(amn_log_level level, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (g_sink && __atomic_load_n(&g_format, __ATOMIC_RELAXED) == AMN_LOG_FORMAT_TEXT) {
    g_sink(level, line, g_sink_ud); /* a sink gets the bare message, as it always did */
    return;
  }
  emit(level, "amaters-net", line, NULL, 0);
}

void amn_log_message(amn_log_level level, const char *source, const char *fmt, ...) {
  if ((int)level > amn_log_level_current) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  emit(level, source ? source : "amaters-net", line, NULL, 0);
}

void amn_log_fields(amn_log_level level, const char *msg, const amn_log_field *f, size_t n) {
  emit(level, "amaters-net", msg, f, n);
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
