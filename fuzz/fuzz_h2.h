/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Shared by the whole-session HTTP/2 targets (fuzz_h2_server,
 * fuzz_h2_client): what the peer of the fuzzed side reads, checked frame by
 * frame as it arrives. The fuzzed side is amaters-net on one end of a
 * socketpair; the harness holds the other end, writes the fuzz input to it
 * and feeds everything it reads to an h2_reader, which aborts (invariant
 * failed) on anything that is not valid HTTP/2 framing as amaters-net
 * writes it:
 *  - a client starts with the connection preface; either side's first
 *    frame is SETTINGS (no ACK);
 *  - every frame is at most 16384 bytes (the SETTINGS_MAX_FRAME_SIZE
 *    every peer accepts: a peer may only raise it), of a type the writer
 *    sends (no PUSH_PROMISE, no extension frames; PRIORITY from clients
 *    only), with the length, stream id and flags its type requires;
 *    SETTINGS entries within their ranges; GOAWAY's last stream id never
 *    grows; error codes known; WINDOW_UPDATE increments non-zero;
 *  - header blocks are HEADERS + CONTINUATION on one stream with nothing
 *    in between, and decode with a fresh HPACK decoder (nghttp2's
 *    inflater) in order; field names are lowercase tokens, pseudo-headers
 *    first and only the ones of the direction, values printable ASCII;
 *  - streams: a client opens odd ids in increasing order; a server answers
 *    only odd ids, never after its END_STREAM or RST_STREAM on the stream,
 *    headers before DATA, trailers with END_STREAM, and (when it sent a
 *    GOAWAY) never starts a response on a stream above its last id;
 *  - gRPC: the DATA of a gRPC stream is length-prefixed messages,
 *    uncompressed, each at most max_msg, whole when the stream ends;
 *    a response's final block carries a grpc-status 0..16;
 *  - when the writer closes, the last frame is complete.
 * What the reader learnt (GOAWAY seen, streams ended, response statuses)
 * is there for the target's own checks.
 *
 * Also the harness's end (h2_peer): the input written in chunks, one loop
 * iteration of the fuzzed side after each, never waiting for time to pass;
 * settling (the loop stops doing anything within a bounded number of
 * iterations); closing at once or after a half-close.
 */
#ifndef AMN_FUZZ_H2_H
#define AMN_FUZZ_H2_H

#include <errno.h>
#include <linux/sockios.h>
#include <nghttp2/nghttp2.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "fuzz_common.h"

/* The targets set up their server or client once, before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define H2_MAX_FRAME 16384u

enum { H2_DATA, H2_HEADERS, H2_PRIORITY, H2_RST_STREAM, H2_SETTINGS, H2_PUSH_PROMISE, H2_PING, H2_GOAWAY,
       H2_WINDOW_UPDATE, H2_CONTINUATION };
enum { H2_F_END_STREAM = 0x1, H2_F_ACK = 0x1, H2_F_END_HEADERS = 0x4, H2_F_PADDED = 0x8, H2_F_PRIORITY = 0x20 };

/* What the reader knows of one stream of the writer. */
typedef struct h2_strm {
  uint32_t id;            /* 0: free slot */
  bool headers;           /* the first header block was written */
  bool ended;             /* END_STREAM written */
  bool reset;             /* RST_STREAM written */
  bool grpc;              /* content-type application/grpc... */
  int status;             /* response: :status; 0 none */
  int grpc_status;        /* response: from the final block; -1 none */
  uint8_t pfx[5];         /* gRPC deframing of the DATA: prefix bytes so far, */
  uint8_t npfx;
  uint32_t left;          /* ... bytes left of the current message */
  uint32_t msgs;
} h2_strm;

typedef struct h2_reader {
  bool writer_is_client;
  uint32_t max_msg;       /* the writer's largest gRPC message */
  uint8_t *buf;           /* bytes of an incomplete frame */
  size_t len, cap;
  size_t preface_left;    /* client: connection preface bytes still expected */
  size_t frames;
  bool settings_seen;
  nghttp2_hd_inflater *hd;
  uint8_t *blk;           /* header block being assembled */
  size_t blen, bcap;
  uint32_t blk_sid;       /* its stream (0: none open) */
  bool blk_end_stream;
  bool goaway;            /* a GOAWAY was written ... */
  uint32_t goaway_last;   /* ... with this last stream id (the lowest so far) */
  uint32_t goaway_code;
  uint32_t max_sid;       /* highest stream id the writer used */
  h2_strm *st;            /* open addressing on id */
  size_t nst, stcap;
  size_t finals;          /* final blocks with a grpc-status, and streams reset */
  size_t resets;
} h2_reader;

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static inline void h2r_init(h2_reader *r, bool writer_is_client, uint32_t max_msg) {
  memset(r, 0, sizeof *r);
  r->writer_is_client = writer_is_client;
  r->max_msg = max_msg;
  r->preface_left = writer_is_client ? 24 : 0;
  FUZZ_CHECK(nghttp2_hd_inflate_new(&r->hd) == 0);
}

static inline void h2r_free(h2_reader *r) {
  nghttp2_hd_inflate_del(r->hd);
  free(r->buf);
  free(r->blk);
  free(r->st);
  memset(r, 0, sizeof *r);
}

static inline void h2_grow(uint8_t **p, size_t *cap, size_t need) {
  if (need <= *cap) return;
  size_t c = *cap ? *cap : 1024;
  while (c < need) c *= 2;
  uint8_t *n = realloc(*p, c);
  FUZZ_CHECK(n != NULL);
  *p = n;
  *cap = c;
}

/* The stream's record (created empty when `make`), or NULL. */
static inline h2_strm *h2r_stream(h2_reader *r, uint32_t id, bool make) {
  if (make && (r->nst + 1) * 2 > r->stcap) {
    size_t ncap = r->stcap ? r->stcap * 2 : 64;
    h2_strm *n = calloc(ncap, sizeof *n);
    FUZZ_CHECK(n != NULL);
    for (size_t i = 0; i < r->stcap; i++) {
      if (!r->st[i].id) continue;
      size_t j = (r->st[i].id * 2654435761u) & (ncap - 1);
      while (n[j].id) j = (j + 1) & (ncap - 1);
      n[j] = r->st[i];
    }
    free(r->st);
    r->st = n;
    r->stcap = ncap;
  }
  if (!r->stcap) return NULL;
  size_t j = (id * 2654435761u) & (r->stcap - 1);
  while (r->st[j].id && r->st[j].id != id) j = (j + 1) & (r->stcap - 1);
  if (r->st[j].id) return &r->st[j];
  if (!make) return NULL;
  r->st[j].id = id;
  r->st[j].grpc_status = -1;
  r->nst++;
  return &r->st[j];
}

static inline bool h2_is(const nghttp2_nv *nv, const char *name) {
  return nv->namelen == strlen(name) && memcmp(nv->name, name, nv->namelen) == 0;
}

static inline bool h2_val(const nghttp2_nv *nv, const char *v) {
  return nv->valuelen == strlen(v) && memcmp(nv->value, v, nv->valuelen) == 0;
}

/* A decimal number of at most 9 digits, or -1. */
static inline long h2_num(const uint8_t *p, size_t n) {
  if (n == 0 || n > 9 || (n > 1 && p[0] == '0')) return -1;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    v = v * 10 + (p[i] - '0');
  }
  return v;
}

/* One decoded field of a block of stream s (first: its first block). */
typedef struct h2_blk_state {
  bool first, regular_seen, has_status, has_method, has_path, grpc_status_seen;
  size_t n;
} h2_blk_state;

static inline void h2r_field(h2_reader *r, h2_strm *s, h2_blk_state *b, const nghttp2_nv *nv) {
  FUZZ_CHECK(nv->namelen > 0);
  bool pseudo = nv->name[0] == ':';
  for (size_t i = pseudo; i < nv->namelen; i++) {
    uint8_t c = nv->name[i];
    FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.');
  }
  for (size_t i = 0; i < nv->valuelen; i++) FUZZ_CHECK(nv->value[i] >= 0x20 && nv->value[i] <= 0x7e);
  b->n++;
  if (pseudo) {
    FUZZ_CHECK(b->first && !b->regular_seen); /* pseudo-headers: first block, before the others */
    if (r->writer_is_client) {
      FUZZ_CHECK(h2_is(nv, ":method") || h2_is(nv, ":scheme") || h2_is(nv, ":path") || h2_is(nv, ":authority"));
      if (h2_is(nv, ":method")) b->has_method = true;
      if (h2_is(nv, ":path")) b->has_path = nv->valuelen > 0 && nv->value[0] == '/';
    } else {
      FUZZ_CHECK(h2_is(nv, ":status") && !b->has_status);
      long st = h2_num(nv->value, nv->valuelen);
      FUZZ_CHECK(nv->valuelen == 3 && st >= 200 && st <= 599); /* no 1xx: nothing asks for it */
      s->status = (int)st;
      b->has_status = true;
    }
    return;
  }
  b->regular_seen = true;
  /* connection-specific fields are not HTTP/2 (RFC 9113 8.2.2) */
  FUZZ_CHECK(!h2_is(nv, "connection") && !h2_is(nv, "keep-alive") && !h2_is(nv, "proxy-connection") &&
             !h2_is(nv, "transfer-encoding") && !h2_is(nv, "upgrade"));
  if (h2_is(nv, "te")) FUZZ_CHECK(h2_val(nv, "trailers"));
  if (b->first && h2_is(nv, "content-type"))
    s->grpc = nv->valuelen >= 16 && memcmp(nv->value, "application/grpc", 16) == 0;
  if (!r->writer_is_client && h2_is(nv, "grpc-status")) {
    FUZZ_CHECK(!b->grpc_status_seen);
    long v = h2_num(nv->value, nv->valuelen);
    FUZZ_CHECK(v >= 0 && v <= 16);
    s->grpc_status = (int)v;
    b->grpc_status_seen = true;
  }
}

/* A complete header block of stream s. */
static inline void h2r_block(h2_reader *r, h2_strm *s, bool end_stream) {
  h2_blk_state b = {.first = !s->headers};
  const uint8_t *p = r->blk;
  size_t n = r->blen;
  for (;;) {
    nghttp2_nv nv;
    int fl = 0;
    ssize_t used = nghttp2_hd_inflate_hd2(r->hd, &nv, &fl, p, n, 1);
    FUZZ_CHECK(used >= 0); /* HPACK the peer can decode */
    p += used;
    n -= (size_t)used;
    if (fl & NGHTTP2_HD_INFLATE_EMIT) h2r_field(r, s, &b, &nv);
    if (fl & NGHTTP2_HD_INFLATE_FINAL) {
      nghttp2_hd_inflate_end_headers(r->hd);
      break;
    }
    FUZZ_CHECK(used > 0 || (fl & NGHTTP2_HD_INFLATE_EMIT));
  }
  FUZZ_CHECK(n == 0);
  if (r->writer_is_client) {
    FUZZ_CHECK(b.first);                             /* requests: no trailers from us */
    FUZZ_CHECK(b.has_method && b.has_path);
  } else if (b.first) {
    FUZZ_CHECK(b.has_status);
    if (s->status == 200) FUZZ_CHECK(s->grpc); /* a 200 is always a gRPC answer */
  } else {
    FUZZ_CHECK(end_stream); /* trailers end the stream */
  }
  if (!r->writer_is_client && end_stream && s->grpc) {
    FUZZ_CHECK(b.grpc_status_seen);          /* a gRPC response ends with a status */
    FUZZ_CHECK(s->npfx == 0 && s->left == 0); /* ... after whole messages */
    r->finals++;
  }
  s->headers = true;
  if (end_stream) s->ended = true;
}

/* DATA payload of a gRPC stream: length-prefixed messages. */
static inline void h2r_grpc_data(h2_reader *r, h2_strm *s, const uint8_t *p, size_t n) {
  while (n > 0) {
    if (s->left > 0) {
      size_t k = n < s->left ? n : s->left;
      s->left -= (uint32_t)k;
      p += k;
      n -= k;
      continue;
    }
    s->pfx[s->npfx++] = *p++;
    n--;
    if (s->npfx < 5) continue;
    FUZZ_CHECK(s->pfx[0] == 0); /* never compressed */
    uint32_t len = (uint32_t)s->pfx[1] << 24 | (uint32_t)s->pfx[2] << 16 | (uint32_t)s->pfx[3] << 8 | s->pfx[4];
    FUZZ_CHECK(len <= r->max_msg);
    s->left = len;
    s->npfx = 0;
    s->msgs++;
  }
}

static inline uint32_t h2_u32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void h2r_frame(h2_reader *r, uint8_t type, uint8_t flags, uint32_t sid, const uint8_t *p, size_t len) {
  r->frames++;
  if (r->frames == 1) FUZZ_CHECK(type == H2_SETTINGS && !(flags & H2_F_ACK));
  if (r->blk_sid) FUZZ_CHECK(type == H2_CONTINUATION && sid == r->blk_sid);
  else FUZZ_CHECK(type != H2_CONTINUATION);
  switch (type) {
  case H2_SETTINGS:
    FUZZ_CHECK(sid == 0);
    if (flags & H2_F_ACK) {
      FUZZ_CHECK(len == 0);
      break;
    }
    FUZZ_CHECK(len % 6 == 0);
    for (size_t i = 0; i < len; i += 6) {
      uint16_t id = (uint16_t)(p[i] << 8 | p[i + 1]);
      uint32_t v = h2_u32(p + i + 2);
      FUZZ_CHECK(id >= 1 && id <= 8 && id != 7);
      if (id == 2) FUZZ_CHECK(v == 0 || (v == 1 && r->writer_is_client)); /* ENABLE_PUSH */
      if (id == 4) FUZZ_CHECK(v <= 0x7fffffffu);                        /* INITIAL_WINDOW_SIZE */
      if (id == 5) FUZZ_CHECK(v >= 16384 && v <= 0xffffffu);            /* MAX_FRAME_SIZE */
      if (id == 8) FUZZ_CHECK(v <= 1 && !r->writer_is_client);          /* ENABLE_CONNECT_PROTOCOL */
    }
    r->settings_seen = true;
    break;
  case H2_PING:
    FUZZ_CHECK(sid == 0 && len == 8);
    break;
  case H2_GOAWAY: {
    FUZZ_CHECK(sid == 0 && len >= 8);
    uint32_t last = h2_u32(p);
    FUZZ_CHECK(!(last & 0x80000000u));
    FUZZ_CHECK(!r->goaway || last <= r->goaway_last); /* never grows (RFC 9113 6.8) */
    r->goaway_code = h2_u32(p + 4);
    FUZZ_CHECK(r->goaway_code <= NGHTTP2_HTTP_1_1_REQUIRED);
    r->goaway = true;
    r->goaway_last = last;
    break;
  }
  case H2_WINDOW_UPDATE: {
    FUZZ_CHECK(len == 4);
    uint32_t inc = h2_u32(p);
    FUZZ_CHECK(inc >= 1 && inc <= 0x7fffffffu);
    break;
  }
  case H2_RST_STREAM: {
    FUZZ_CHECK(sid != 0 && len == 4);
    FUZZ_CHECK(h2_u32(p) <= NGHTTP2_HTTP_1_1_REQUIRED);
    h2_strm *s = h2r_stream(r, sid, true);
    if (!s->reset) r->resets++;
    s->reset = true;
    break;
  }
  case H2_PRIORITY:
    FUZZ_CHECK(r->writer_is_client && sid != 0 && len == 5);
    break;
  case H2_HEADERS: {
    FUZZ_CHECK(sid != 0 && (sid & 1)); /* client-initiated streams only */
    FUZZ_CHECK(!(flags & H2_F_PADDED));
    if (flags & H2_F_PRIORITY) {
      FUZZ_CHECK(r->writer_is_client && len >= 5);
      p += 5;
      len -= 5;
    }
    h2_strm *s = h2r_stream(r, sid, true);
    FUZZ_CHECK(!s->ended && !s->reset);
    if (r->writer_is_client) {
      FUZZ_CHECK(sid > r->max_sid); /* new streams in increasing order */
    } else if (!s->headers && r->goaway) {
      FUZZ_CHECK(sid <= r->goaway_last); /* streams above a GOAWAY's last id never run */
    }
    if (sid > r->max_sid) r->max_sid = sid;
    r->blen = 0;
    h2_grow(&r->blk, &r->bcap, len);
    memcpy(r->blk, p, len);
    r->blen = len;
    r->blk_end_stream = flags & H2_F_END_STREAM;
    if (flags & H2_F_END_HEADERS) h2r_block(r, s, r->blk_end_stream);
    else r->blk_sid = sid;
    break;
  }
  case H2_CONTINUATION: {
    h2_grow(&r->blk, &r->bcap, r->blen + len);
    memcpy(r->blk + r->blen, p, len);
    r->blen += len;
    if (flags & H2_F_END_HEADERS) {
      r->blk_sid = 0;
      h2r_block(r, h2r_stream(r, sid, true), r->blk_end_stream);
    }
    break;
  }
  case H2_DATA: {
    FUZZ_CHECK(sid != 0 && !(flags & H2_F_PADDED));
    h2_strm *s = h2r_stream(r, sid, false);
    FUZZ_CHECK(s && s->headers && !s->ended && !s->reset); /* after the headers, before the end */
    if (s->grpc) h2r_grpc_data(r, s, p, len);
    if (flags & H2_F_END_STREAM) {
      s->ended = true;
      if (s->grpc) FUZZ_CHECK(s->npfx == 0 && s->left == 0); /* whole messages */
      /* a gRPC response never ends on DATA: its status follows in trailers */
      if (!r->writer_is_client) FUZZ_CHECK(!s->grpc);
    }
    break;
  }
  default:
    FUZZ_CHECK(!"a frame type amaters-net never sends");
  }
}

/* Bytes the writer sent, in any split. */
static inline void h2r_feed(h2_reader *r, const uint8_t *p, size_t n) {
  while (r->preface_left && n) {
    FUZZ_CHECK(*p == (uint8_t)h2_preface[24 - r->preface_left]);
    p++;
    n--;
    r->preface_left--;
  }
  if (!n) return;
  h2_grow(&r->buf, &r->cap, r->len + n);
  memcpy(r->buf + r->len, p, n);
  r->len += n;
  size_t off = 0;
  while (r->len - off >= 9) {
    const uint8_t *h = r->buf + off;
    uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
    FUZZ_CHECK(len <= H2_MAX_FRAME);
    if (r->len - off < 9 + (size_t)len) break;
    FUZZ_CHECK(!(h[5] & 0x80)); /* reserved bit */
    h2r_frame(r, h[3], h[4], h2_u32(h + 5) & 0x7fffffffu, h + 9, len);
    off += 9 + len;
  }
  memmove(r->buf, r->buf + off, r->len - off);
  r->len -= off;
}

/* The writer closed: it stopped on a frame boundary. */
static inline void h2r_eof(const h2_reader *r) {
  FUZZ_CHECK(r->len == 0);
  FUZZ_CHECK(r->blk_sid == 0);
}

/* ---- the harness's end of the socketpair ---- */

#define H2_SETTLE_MAX 20000 /* loop iterations without input before "it never settles" */

typedef struct h2_peer h2_peer;
struct h2_peer {
  int fd;                     /* our end (-1 once closed) */
  h2_reader rd;               /* what the fuzzed side wrote */
  bool eof;                   /* it closed */
  bool dead;                  /* our writes fail */
  /* One iteration of the fuzzed side's loop (ev_run EVRUN_NOWAIT): true
   * when it has more to do (output to flush, deferred work). */
  bool (*turn)(h2_peer *k);
  void (*halfway)(h2_peer *k); /* once half the input is written */
  void *ud;
};

/* Reads what is there, checking it; returns the byte count. */
static inline size_t h2p_drain(h2_peer *k) {
  size_t got = 0;
  uint8_t buf[16384];
  while (!k->eof && k->fd >= 0) {
    ssize_t n = recv(k->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      h2r_feed(&k->rd, buf, (size_t)n);
      got += (size_t)n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    k->eof = true; /* end of stream, or a reset by a side closing with our bytes unread */
  }
  return got;
}

/* One turn and what it wrote; true when anything happened or is about to
 * (bytes of ours still unread by the fuzzed side included). */
static inline bool h2p_step(h2_peer *k) {
  bool busy = k->turn(k);
  size_t got = h2p_drain(k);
  int unread = 0;
  if (k->fd < 0 || k->dead || ioctl(k->fd, SIOCOUTQ, &unread) != 0) unread = 0;
  return busy || got || unread > 0;
}

/* Turns until nothing happens twice in a row. */
static inline void h2p_settle(h2_peer *k) {
  int quiet = 0, i;
  for (i = 0; i < H2_SETTLE_MAX && quiet < 2; i++) quiet = h2p_step(k) ? 0 : quiet + 1;
  FUZZ_CHECK(i < H2_SETTLE_MAX); /* the fuzzed side settles */
}

/* Writes p[0..n), a turn after each write (as many as the socket needs). */
static inline void h2p_put(h2_peer *k, const uint8_t *p, size_t n) {
  while (n > 0 && !k->dead) {
    ssize_t w = send(k->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
      k->dead = true;
    }
    h2p_step(k);
  }
}

/* The input, split into writes by `split` (0: one write, 7: byte by byte,
 * else pseudo-random chunks of 1..2^(2 split - 1) bytes from `seed`), each
 * followed by a turn, so that the fuzzed side reads them one by one; then
 * the loop settles. */
static inline void h2p_write_input(h2_peer *k, const uint8_t *data, size_t size, unsigned split, uint32_t seed) {
  size_t off = 0, half = size / 2;
  bool halfway = false;
  if (!seed) seed = 1;
  while (off < size || !halfway) {
    if (off < size) {
      size_t n = size - off;
      if (split == 7) {
        n = 1;
      } else if (split) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        n = 1 + seed % (1u << (2 * split - 1));
      }
      if (n > size - off) n = size - off;
      h2p_put(k, data + off, n);
      off += n;
    }
    if (!halfway && off >= half) {
      halfway = true;
      if (k->halfway) k->halfway(k);
      h2p_step(k);
    }
  }
  h2p_settle(k);
}

/* Our end closes: at once, or (half_close) after our end of stream, when
 * the fuzzed side must close by itself on a frame boundary (no timer). */
static inline void h2p_close(h2_peer *k, bool half_close) {
  if (half_close) {
    shutdown(k->fd, SHUT_WR);
    for (int i = 0; i < H2_SETTLE_MAX && !k->eof; i++) h2p_step(k);
    FUZZ_CHECK(k->eof); /* after our end of stream, the fuzzed side closes */
    h2r_eof(&k->rd);
  }
  close(k->fd);
  k->fd = -1;
  k->dead = k->eof = true;
}

#endif
