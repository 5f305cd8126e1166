/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Allocation-failure injection for the unit tests that link with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup,--wrap=free
 * (tests/CMakeLists.txt): the library's allocations go through these
 * wrappers. With g_fail_at = N, the N-th counted allocation fails (returns
 * NULL) and g_failed is set; g_live counts blocks not yet freed, so a test
 * can check that a run freed everything it allocated. A test may define
 * FAILMALLOC_COUNTS() before including this file to count only some
 * allocations (e.g. those of one side of a connection); by default all are.
 * Include once, in the test's one source file (tests/support is on the
 * include path of the tests that use it).
 */
#ifndef AMN_TEST_FAILMALLOC_H
#define AMN_TEST_FAILMALLOC_H

#include <stdbool.h>
#include <stddef.h>

#ifndef FAILMALLOC_COUNTS
#define FAILMALLOC_COUNTS() true
#endif

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void __real_free(void *p);

static long g_fail_at;    /* the allocation number that fails (1-based); 0: none */
static long g_alloc_seen; /* counted allocations since counting started */
static long g_live;       /* allocations not yet freed */
static bool g_failed;     /* an injected failure happened */

static bool fail_now(void) {
  if (!g_fail_at || !FAILMALLOC_COUNTS()) return false;
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
