/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Shared helpers of the libFuzzer targets: invariant checks that abort (so
 * libFuzzer records the input), a byte reader for inputs that carry their
 * own parameters, and in-memory files for parsers that take a path.
 */
#ifndef AMN_FUZZ_COMMON_H
#define AMN_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant that must hold: otherwise print it and abort. */
#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);         \
      abort();                                                                             \
    }                                                                                      \
  } while (0)

/* Consumes parameters from the front of the input. */
typedef struct fuzz_in {
  const uint8_t *p;
  size_t n;
} fuzz_in;

static inline uint8_t fuzz_u8(fuzz_in *in) {
  if (!in->n) return 0;
  in->n--;
  return *in->p++;
}

static inline uint32_t fuzz_u32(fuzz_in *in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v = v << 8 | fuzz_u8(in);
  return v;
}

static inline uint64_t fuzz_u64(fuzz_in *in) {
  uint64_t v = fuzz_u32(in);
  return v << 32 | fuzz_u32(in);
}

/* An in-memory file holding `len` bytes (memfd), readable by path
 * ("/proc/self/fd/N", written into path[32]). Returns the fd or -1. */
static inline int fuzz_memfile(const void *data, size_t len, char path[32]) {
  int fd = memfd_create("amn-fuzz", MFD_CLOEXEC);
  if (fd < 0) return -1;
  const uint8_t *p = data;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w <= 0) {
      close(fd);
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  snprintf(path, 32, "/proc/self/fd/%d", fd);
  return fd;
}

#endif
