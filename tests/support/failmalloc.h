/*
 * Allocation-failure injection for the unit tests that link with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup,--wrap=free
 * (tests/CMakeLists.txt): every allocation of the library (and of the test)
 * goes through these wrappers, which count the live ones (g_live) and make
 * the g_fail_at-th one since counting started (g_alloc_seen = 0) fail.
 * Include it once, in the test's main file.
 */
#ifndef AMN_TESTS_FAILMALLOC_H
#define AMN_TESTS_FAILMALLOC_H

#include <stdbool.h>
#include <stddef.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void __real_free(void *p);

static long g_fail_at;    /* the allocation number that fails (1-based); 0: none */
static long g_alloc_seen; /* allocations since counting started */
static long g_live;       /* allocations not yet freed */
static bool g_failed;     /* an injected failure happened */

static bool fail_now(void) {
  if (!g_fail_at) return false;
  if (++g_alloc_seen != g_fail_at) return false;
  g_failed = true;
  return true;
}
void *__wrap_malloc(size_t n) {
  if (fail_now()) return NULL;
  void *p = __real_malloc(n);
  if (p) g_live++;
  return p;
}
void *__wrap_calloc(size_t n, size_t m) {
  if (fail_now()) return NULL;
  void *p = __real_calloc(n, m);
  if (p) g_live++;
  return p;
}
void *__wrap_realloc(void *p, size_t n) {
  if (fail_now()) return NULL;
  void *q = __real_realloc(p, n);
  if (q && !p) g_live++;
  return q;
}
char *__wrap_strdup(const char *s) {
  if (fail_now()) return NULL;
  char *p = __real_strdup(s);
  if (p) g_live++;
  return p;
}
char *__wrap_strndup(const char *s, size_t n) {
  if (fail_now()) return NULL;
  char *p = __real_strndup(s, n);
  if (p) g_live++;
  return p;
}
void __wrap_free(void *p) {
  if (p) g_live--;
  __real_free(p);
}

#endif
