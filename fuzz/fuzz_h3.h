/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Seeds of the HTTP/3 session targets (fuzz_h3_server.c, fuzz_h3_client.c):
 * the stream bytes of gRPC requests and responses as nghttp3 writes them
 * (QPACK with the static table only, as before any SETTINGS arrived), cut
 * into the targets' operations. A target writes its seeds into the
 * directory AMN_FUZZ_WRITE_SEEDS names at start-up, then exits
 * (docs/FUZZING.md).
 */
#ifndef AMN_FUZZ_H3_H
#define AMN_FUZZ_H3_H

#include <nghttp3/nghttp3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "h3_mem.h"

typedef struct h3s_buf {
  uint8_t b[8192];
  size_t n;
} h3s_buf;

static inline void h3s_put(h3s_buf *o, const void *p, size_t n) {
  FUZZ_CHECK(o->n + n <= sizeof o->b);
  memcpy(o->b + o->n, p, n);
  o->n += n;
}
static inline void h3s_byte(h3s_buf *o, uint8_t c) { h3s_put(o, &c, 1); }

/* Operations: `len` bytes on slot s in chunks of at most `chunk` (one
 * packet each); FIN on slot s; reset (r=0) or STOP_SENDING (r=1) with H3
 * error 0x100 + code; a turn (deliver, then the clock moves ms). */
static inline void h3s_data(h3s_buf *o, int s, const uint8_t *p, size_t len, size_t chunk) {
  for (size_t off = 0; off < len; off += chunk) {
    size_t n = len - off < chunk ? len - off : chunk;
    h3s_byte(o, (uint8_t)s);
    h3s_byte(o, (uint8_t)n);
    h3s_put(o, p + off, n);
  }
}
static inline void h3s_fin(h3s_buf *o, int s) { h3s_byte(o, (uint8_t)(0x40 | s)); }
static inline void h3s_reset(h3s_buf *o, int s, bool stop, uint8_t code) {
  h3s_byte(o, (uint8_t)(0x80 | (stop ? 32 : 0) | s));
  h3s_byte(o, code);
}
static inline void h3s_turn(h3s_buf *o, uint8_t ms) { h3s_byte(o, (uint8_t)(0xc0 | (ms & 63))); }

/* ---- stream bytes by nghttp3 ---- */

typedef struct h3s_body {
  const uint8_t *p;
  size_t n;
  bool trailers; /* server: trailers follow the body */
} h3s_body;

static inline nghttp3_ssize h3s_read(nghttp3_conn *h, int64_t id, nghttp3_vec *vec, size_t veccnt, uint32_t *flags, void *ud,
                              void *sud) {
  (void)h, (void)id, (void)veccnt, (void)ud;
  h3s_body *b = sud;
  *flags |= NGHTTP3_DATA_FLAG_EOF;
  if (b->trailers) *flags |= NGHTTP3_DATA_FLAG_NO_END_STREAM;
  if (!b->n) return 0;
  vec[0].base = (uint8_t *)b->p;
  vec[0].len = b->n;
  b->n = 0;
  return 1;
}

/* Everything h has to write, by stream (streams 0..63). */
static inline void h3s_drain(nghttp3_conn *h, h3s_buf out[64]) {
  for (int guard = 0; guard < 1000; guard++) {
    int64_t sid = -1;
    int fin = 0;
    nghttp3_vec vec[16];
    nghttp3_ssize nv = nghttp3_conn_writev_stream(h, &sid, &fin, vec, 16);
    FUZZ_CHECK(nv >= 0);
    if (sid < 0) return;
    size_t total = 0;
    for (nghttp3_ssize i = 0; i < nv; i++) {
      if (sid < 64) h3s_put(&out[sid], vec[i].base, vec[i].len);
      total += vec[i].len;
    }
    FUZZ_CHECK(nghttp3_conn_add_write_offset(h, sid, total) == 0);
    if (!total && !fin) return;
  }
}

#define H3S_NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP3_NV_FLAG_NONE}

/* A gRPC message: the 5-byte prefix, then the message. */
static inline size_t h3s_grpc(uint8_t *out, const uint8_t *msg, size_t n) {
  out[0] = 0;
  out[1] = (uint8_t)(n >> 24), out[2] = (uint8_t)(n >> 16), out[3] = (uint8_t)(n >> 8), out[4] = (uint8_t)n;
  memcpy(out + 5, msg, n);
  return n + 5;
}

static inline void h3s_save(const char *dir, const char *name, const h3s_buf *o) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  FUZZ_CHECK(f != NULL);
  FUZZ_CHECK(fwrite(o->b, 1, o->n, f) == o->n);
  fclose(f);
}

/* ---- the session targets' common part ---- */

/* The harness's decoder of what the binding under test sends (a client's
 * nghttp3 for the server's streams, a server's for the client's), with the
 * QPACK settings both bindings announce; it is never written. Counts what
 * it saw; a malformed message (nghttp3 asks to reset its stream) fails the
 * invariant. */
static size_t g_h3f_msgs, g_h3f_fields, g_h3f_ends;

static inline int h3f_begin(nghttp3_conn *h, int64_t id, void *ud, void *sud) {
  (void)h, (void)id, (void)ud, (void)sud;
  g_h3f_msgs++;
  return 0;
}
static inline int h3f_field(nghttp3_conn *h, int64_t id, int32_t token, nghttp3_rcbuf *name, nghttp3_rcbuf *value,
                            uint8_t flags, void *ud, void *sud) {
  (void)h, (void)id, (void)token, (void)flags, (void)ud, (void)sud;
  nghttp3_vec n = nghttp3_rcbuf_get_buf(name), v = nghttp3_rcbuf_get_buf(value);
  FUZZ_CHECK(n.len > 0 && (v.base != NULL || v.len == 0));
  g_h3f_fields++;
  return 0;
}
static inline int h3f_end(nghttp3_conn *h, int64_t id, void *ud, void *sud) {
  (void)h, (void)id, (void)ud, (void)sud;
  g_h3f_ends++;
  return 0;
}
static inline int h3f_malformed(nghttp3_conn *h, int64_t id, uint64_t code, void *ud, void *sud) {
  (void)h, (void)ud, (void)sud;
  fprintf(stderr, "the message on stream %lld is malformed (0x%llx)\n", (long long)id, (unsigned long long)code);
  FUZZ_CHECK(!"malformed message");
  return 0;
}

static inline nghttp3_conn *h3f_decoder(bool server) {
  nghttp3_callbacks cb = {0};
  cb.begin_headers = h3f_begin;
  cb.recv_header = h3f_field;
  cb.recv_trailer = h3f_field;
  cb.end_stream = h3f_end;
  cb.stop_sending = h3f_malformed;
  cb.reset_stream = h3f_malformed;
  nghttp3_settings st;
  nghttp3_settings_default(&st);
  st.qpack_max_dtable_capacity = 4096;
  st.qpack_blocked_streams = 100;
  st.max_field_section_size = 64 * 1024;
  nghttp3_conn *h;
  g_h3f_msgs = g_h3f_fields = g_h3f_ends = 0;
  if (server) {
    FUZZ_CHECK(nghttp3_conn_server_new(&h, &cb, &st, NULL, NULL) == 0);
    nghttp3_conn_set_max_client_streams_bidi(h, 100);
    FUZZ_CHECK(nghttp3_conn_bind_control_stream(h, 3) == 0 && nghttp3_conn_bind_qpack_streams(h, 7, 11) == 0);
  } else { /* bound only so that requests can be registered */
    FUZZ_CHECK(nghttp3_conn_client_new(&h, &cb, &st, NULL, NULL) == 0);
    FUZZ_CHECK(nghttp3_conn_bind_control_stream(h, 2) == 0 && nghttp3_conn_bind_qpack_streams(h, 6, 10) == 0);
  }
  return h;
}

/* Stream data for the decoder: it must decode. */
static inline void h3f_decode(nghttp3_conn *h, int64_t id, const uint8_t *data, size_t len, bool fin) {
  nghttp3_ssize n = nghttp3_conn_read_stream(h, id, data, len, fin);
  if (n < 0) {
    fprintf(stderr, "stream %lld does not decode: %s; its bytes:", (long long)id, nghttp3_strerror((int)n));
    for (size_t i = 0; i < len; i++) fprintf(stderr, " %02x", data[i]);
    fprintf(stderr, "\n");
  }
  FUZZ_CHECK(n >= 0);
}

static hm_pki g_h3f_pki;
static inline void h3f_cleanup(void) { hm_pki_free(&g_h3f_pki); }

/* The clients' TLS context, made once (h3mem.cli_ctx: loading the files
 * for every input would cost more than the handshake). */
static inline amn_tls_ctx *h3f_client_ctx(void) {
  static const char *const alpn_h3[] = {"h3", NULL};
  amn_tls_opts t = g_h3f_pki.cli;
  t.server_name = "localhost";
  amn_tls_ctx *ctx = NULL;
  char err[256];
  FUZZ_CHECK(amn_tls_ctx_new(&ctx, AMN_TLS_CLIENT, &t, alpn_h3, err, sizeof err) == 0);
  return ctx;
}

/* The PKI, and the server's options every session target uses (HTTP/3,
 * mutual TLS, no Retry, a 5 s idle timeout); the target adds its own, makes
 * the server (hm_server_new), registers its handlers and starts it. */
static inline void h3f_init(amn_server_opts *o) {
  amn_log_set_level(getenv("AMN_FUZZ_VERBOSE") ? AMN_LOG_DEBUG : AMN_LOG_ERROR);
  char err[256];
  FUZZ_CHECK(hm_pki_init(&g_h3f_pki, err, sizeof err) == 0);
  atexit(h3f_cleanup);
  amn_server_opts_init(o);
  o->tls = g_h3f_pki.srv;
  o->listen = "127.0.0.1:0";
  o->transport = AMN_TRANSPORT_H3;
  o->quic_retry_threshold = UINT32_MAX;
  o->idle_timeout_ms = 5000;
}

/* The operations of an input on the streams of connection b, which the
 * harness plays (see fuzz_h3_server.c for their encoding). */
typedef struct h3f_ops {
  h3mem *m;
  amn_h3_conn *b;
  bool to_server; /* b is a client connection */
  bool batch;     /* deliver only at turn operations */
  int64_t (*slot)(int s); /* the stream of a slot, -1: none */
  void (*settle)(void);
  void (*on_turn)(void);  /* after a turn operation (NULL: nothing) */
  bool (*go_on)(void);    /* false: the connection is gone, stop */
  bool fin[8];
} h3f_ops;

static inline void h3f_run(h3f_ops *o, fuzz_in *in) {
  while (in->n && o->go_on()) {
    uint8_t op = fuzz_u8(in);
    int s = op & 7;
    switch (op >> 6) {
    case 0: {
      size_t n = fuzz_u8(in);
      if (n > in->n) n = in->n;
      int64_t sid = o->slot(s);
      if (sid >= 0 && !o->fin[s]) hm_raw_write(o->m, o->b, o->to_server, sid, in->p, n, false);
      in->p += n;
      in->n -= n;
      break;
    }
    case 1: {
      int64_t sid = o->slot(s);
      if (sid >= 0 && !o->fin[s]) hm_raw_write(o->m, o->b, o->to_server, sid, NULL, 0, true);
      o->fin[s] = true;
      break;
    }
    case 2: {
      int64_t sid = o->slot(s);
      uint64_t code = 0x100 + fuzz_u8(in);
      if (sid >= 0) {
        if (op & 32) ngtcp2_conn_shutdown_stream_read(o->b->q, 0, sid, code);
        else ngtcp2_conn_shutdown_stream_write(o->b->q, 0, sid, code);
        amn_h3_mark_dirty(o->b);
      }
      break;
    }
    default:
      o->settle();
      if (op & 63) hm_advance(o->m, (uint64_t)(op & 63) * NGTCP2_MILLISECONDS);
      if (o->on_turn) o->on_turn();
      break;
    }
    if (!o->batch) o->settle();
  }
  o->settle();
}

#endif
