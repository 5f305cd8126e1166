/* SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "transport/h2/h2mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* In front of every block: 16 bytes keep the block's alignment. */
typedef struct hdr {
  size_t len;    /* the whole allocation: header + block (mapped: before rounding to pages) */
  size_t mapped; /* 1: its own mapping */
} hdr;

#define HDR sizeof(hdr)

static size_t page_round(size_t n) {
  const size_t pg = 4096;
  return (n + pg - 1) & ~(pg - 1);
}

static void *blk_new(size_t n, int zero) {
  if (n > SIZE_MAX - HDR - 4096) return NULL;
  size_t len = n + HDR;
  hdr *h = NULL;
  size_t mapped = 0;
  if (len >= AMN_H2MEM_MAP_MIN) {
    void *p = mmap(NULL, page_round(len), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      h = p; /* fresh pages read as zeros: nothing to clear */
      mapped = 1;
    }
  }
  if (!h) h = zero ? calloc(1, len) : malloc(len);
  if (!h) return NULL;
  h->len = len;
  h->mapped = mapped;
  return (uint8_t *)h + HDR;
}

static hdr *hdr_of(const void *p) { return (hdr *)((uint8_t *)p - HDR); }

static void blk_free(void *p) {
  if (!p) return;
  hdr *h = hdr_of(p);
  if (h->mapped) munmap(h, page_round(h->len));
  else free(h);
}

static void *m_malloc(size_t n, void *ud) {
  (void)ud;
  return blk_new(n, 0);
}

static void m_free(void *p, void *ud) {
  (void)ud;
  blk_free(p);
}

static void *m_calloc(size_t k, size_t n, void *ud) {
  (void)ud;
  if (n && k > SIZE_MAX / n) return NULL;
  return blk_new(k * n, 1);
}

static void *m_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  if (!p) return blk_new(n, 0);
  if (n > SIZE_MAX - HDR - 4096) return NULL;
  hdr *h = hdr_of(p);
  if (!h->mapped && n + HDR < AMN_H2MEM_MAP_MIN) { /* stays small: the C library's realloc */
    hdr *nh = realloc(h, n + HDR);
    if (!nh) return NULL;
    nh->len = n + HDR;
    return (uint8_t *)nh + HDR;
  }
  void *q = blk_new(n, 0);
  if (!q) return NULL;
  size_t old = h->len - HDR;
  memcpy(q, p, old < n ? old : n);
  blk_free(p);
  return q;
}

static nghttp2_mem g_mem = {NULL, m_malloc, m_free, m_calloc, m_realloc};

nghttp2_mem *amn_h2_mem(void) { return &g_mem; }

int amn_h2_mem_is_mapped(const void *p) { return p && hdr_of(p)->mapped; }
