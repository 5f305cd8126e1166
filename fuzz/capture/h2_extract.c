/*
 * h2_extract: turns one direction of a recorded cleartext HTTP/2 connection
 * into fuzz seeds. Reads the raw bytes (client direction with or without
 * the connection preface), decodes every header block with nghttp2's HPACK
 * inflater and writes, into OUTDIR:
 *   PREFIX-hdr-S-K   header block K of stream S in the fuzz_headers.h
 *                    format (name TAB value per line)
 *   PREFIX-data-S    the DATA payload of stream S (gRPC framed messages)
 * Usage: h2_extract FILE OUTDIR PREFIX
 */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void write_file(const char *path, const void *p, size_t n, const char *mode) {
  FILE *f = fopen(path, mode);
  if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: h2_extract FILE OUTDIR PREFIX\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) return perror(argv[1]), 1;
  static uint8_t buf[1 << 22];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  size_t off = 0;
  if (n >= 24 && memcmp(buf, NGHTTP2_CLIENT_MAGIC, 24) == 0) off = 24;
  nghttp2_hd_inflater *inf;
  if (nghttp2_hd_inflate_new(&inf) != 0) return 1;
  static uint8_t block[1 << 20];
  size_t blen = 0;
  int blocks[1024] = {0};
  char path[4096];
  while (off + 9 <= n) {
    size_t len = (size_t)buf[off] << 16 | (size_t)buf[off + 1] << 8 | buf[off + 2];
    uint8_t type = buf[off + 3], flags = buf[off + 4];
    uint32_t sid = ((uint32_t)buf[off + 5] << 24 | (uint32_t)buf[off + 6] << 16 | (uint32_t)buf[off + 7] << 8 |
                    buf[off + 8]) & 0x7fffffff;
    const uint8_t *p = buf + off + 9;
    if (off + 9 + len > n) break;
    off += 9 + len;
    size_t pad = 0;
    if ((type == 0 || type == 1) && (flags & 0x8)) pad = *p++, len--;
    if (pad > len) return fprintf(stderr, "bad padding\n"), 1;
    len -= pad;
    if (type == 0 && len) { /* DATA */
      snprintf(path, sizeof path, "%s/%s-data-%u", argv[2], argv[3], sid);
      write_file(path, p, len, "ab");
    } else if (type == 1 || type == 9) { /* HEADERS / CONTINUATION */
      if (type == 1 && (flags & 0x20)) p += 5, len -= 5; /* priority */
      memcpy(block + blen, p, len);
      blen += len;
      if (!(flags & 0x4)) continue;
      snprintf(path, sizeof path, "%s/%s-hdr-%u-%d", argv[2], argv[3], sid, ++blocks[sid % 1024]);
      FILE *o = fopen(path, "wb");
      if (!o) return perror(path), 1;
      const uint8_t *q = block;
      size_t left = blen;
      for (;;) {
        nghttp2_nv nv;
        int fl = 0;
        ssize_t r = nghttp2_hd_inflate_hd2(inf, &nv, &fl, q, left, 1);
        if (r < 0) return fprintf(stderr, "hpack: %s\n", nghttp2_strerror((int)r)), 1;
        q += r;
        left -= (size_t)r;
        if (fl & NGHTTP2_HD_INFLATE_EMIT) {
          fwrite(nv.name, 1, nv.namelen, o);
          fputc('\t', o);
          fwrite(nv.value, 1, nv.valuelen, o);
          fputc('\n', o);
        }
        if (fl & NGHTTP2_HD_INFLATE_FINAL) {
          nghttp2_hd_inflate_end_headers(inf);
          break;
        }
        if (r == 0 && left == 0) break;
      }
      fclose(o);
      blen = 0;
    }
  }
  nghttp2_hd_inflate_del(inf);
  return 0;
}
