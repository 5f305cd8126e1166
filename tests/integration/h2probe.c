/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * h2probe — a raw HTTP/2 client for the lifecycle tests, written directly on
 * GnuTLS + nghttp2 (not on amaters-net), so it can do what a well-behaved
 * client never does: PING too often, never acknowledge PINGs, hold a quiet
 * connection, and print every connection-level event it sees.
 *
 * usage: h2probe HOST PORT [--ca F --cert F --key F | --insecure] [options]
 *   --no-ping-ack         do not acknowledge the server's PINGs
 *   --ping-every MS       send a PING every MS ms (with --pings N: N of them)
 *   --open-stream         open an ExecuteStream call and keep it open (a call in flight)
 *   --call DATA           an Execute call right after connecting
 *   --call-at MS          one more Execute call (DATA "late") at MS ms
 *   --duration MS         stop after MS ms (default 10000)
 * Output: one line per event, "T_MS EVENT ...":
 *   ready fingerprint=HEX | settings max_concurrent_streams=N initial_window_size=N
 *   ping | ping-ack | goaway code=NAME last=N debug=TEXT
 *   call status=N data=TEXT | eof | error TEXT
 * Exit status 0, or 1 when the connection could not be set up.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netdb.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int g_fd = -1;
static gnutls_session_t g_tls;
static double g_t0;
static char g_data[64][128]; /* response payload per stream (odd ids / 2) */
static int g_status[64];

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void ev(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ev(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%.0f ", now_ms() - g_t0);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
}

static int send_all(const uint8_t *p, size_t n) {
  while (n) {
    ssize_t w = g_tls ? gnutls_record_send(g_tls, p, n) : send(g_fd, p, n, MSG_NOSIGNAL);
    if (w == GNUTLS_E_AGAIN || w == GNUTLS_E_INTERRUPTED) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  (void)ud;
  switch (f->hd.type) {
  case NGHTTP2_SETTINGS:
    if (!(f->hd.flags & NGHTTP2_FLAG_ACK))
      ev("settings max_concurrent_streams=%u initial_window_size=%u",
         nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
         nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE));
    break;
  case NGHTTP2_PING:
    ev("%s", f->hd.flags & NGHTTP2_FLAG_ACK ? "ping-ack" : "ping");
    break;
  case NGHTTP2_GOAWAY:
    ev("goaway code=%s last=%d debug=%.*s", nghttp2_http2_strerror(f->goaway.error_code), f->goaway.last_stream_id,
       (int)f->goaway.opaque_data_len, (const char *)f->goaway.opaque_data);
    break;
  default:
    break;
  }
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                     const uint8_t *value, size_t vlen, uint8_t flags, void *ud) {
  (void)s; (void)flags; (void)ud;
  int i = f->hd.stream_id / 2;
  if (i < 64 && nlen == 11 && memcmp(name, "grpc-status", 11) == 0) g_status[i] = atoi((const char *)value);
  (void)vlen;
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *d, size_t len, void *ud) {
  (void)s; (void)flags; (void)ud;
  int i = sid / 2;
  /* gRPC frame (5 bytes) + QueryResponse field 1 (tag, length < 128) */
  if (i < 64 && len > 7 && len - 7 < sizeof g_data[i]) memcpy(g_data[i], d + 7, len - 7);
  return 0;
}

static int on_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud) {
  (void)s; (void)ud;
  int i = sid / 2;
  if (i < 64) ev("call status=%d data=%s h2=%s", err ? -1 : g_status[i], g_data[i], nghttp2_http2_strerror(err));
  return 0;
}

typedef struct body {
  uint8_t b[160];
  size_t len, off;
} body;

static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
  (void)s; (void)sid; (void)ud;
  body *b = src->ptr;
  size_t n = b->len - b->off < len ? b->len - b->off : len;
  memcpy(buf, b->b + b->off, n);
  b->off += n;
  if (b->off == b->len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static body g_bodies[8];
static int g_nbodies;

static void submit_call(nghttp2_session *h2, const char *authority, const char *path, const char *data) {
  nghttp2_nv nva[] = {
      {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
      {(uint8_t *)":scheme", (uint8_t *)(g_tls ? "https" : "http"), 7, g_tls ? 5 : 4, 0},
      {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
      {(uint8_t *)":authority", (uint8_t *)authority, 10, strlen(authority), 0},
      {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
      {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0},
  };
  if (!data) { /* a call that stays open: headers only, no END_STREAM */
    nghttp2_submit_headers(h2, NGHTTP2_FLAG_NONE, -1, NULL, nva, 6, NULL);
    return;
  }
  body *b = &g_bodies[g_nbodies++ % 8];
  size_t dl = strlen(data) < 100 ? strlen(data) : 100;
  /* gRPC frame: flag, length; QueryRequest { bytes query_bytes = 1; } */
  b->b[0] = 0;
  uint32_t ml = (uint32_t)(2 + dl);
  b->b[1] = 0, b->b[2] = 0, b->b[3] = 0, b->b[4] = (uint8_t)ml;
  b->b[5] = 0x0a, b->b[6] = (uint8_t)dl;
  memcpy(b->b + 7, data, dl);
  b->len = 7 + dl;
  b->off = 0;
  nghttp2_data_provider prd = {.source.ptr = b, .read_callback = read_body};
  nghttp2_submit_request(h2, NULL, nva, 6, &prd, NULL);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: h2probe HOST PORT [options] (see the source)\n");
    return 2;
  }
  const char *host = argv[1], *port = argv[2], *ca = NULL, *cert = NULL, *key = NULL, *call = NULL;
  int insecure = 0, no_ack = 0, open_stream = 0, pings = -1;
  double ping_every = 0, duration = 10000, call_at = -1;
  for (int i = 3; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--ca")) ca = v, i++;
    else if (!strcmp(a, "--cert")) cert = v, i++;
    else if (!strcmp(a, "--key")) key = v, i++;
    else if (!strcmp(a, "--insecure")) insecure = 1;
    else if (!strcmp(a, "--no-ping-ack")) no_ack = 1;
    else if (!strcmp(a, "--open-stream")) open_stream = 1;
    else if (!strcmp(a, "--ping-every")) ping_every = atof(v), i++;
    else if (!strcmp(a, "--pings")) pings = atoi(v), i++;
    else if (!strcmp(a, "--call")) call = v, i++;
    else if (!strcmp(a, "--call-at")) call_at = atof(v), i++;
    else if (!strcmp(a, "--duration")) duration = atof(v), i++;
    else {
      fprintf(stderr, "h2probe: unknown option %s\n", a);
      return 2;
    }
  }
  g_t0 = now_ms();
  int rc = 1;
  gnutls_certificate_credentials_t cred = NULL;
  nghttp2_session_callbacks *cbs = NULL;
  nghttp2_option *opt = NULL;
  nghttp2_session *h2 = NULL;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
  if (getaddrinfo(host, port, &hints, &ai) != 0) {
    ev("error cannot resolve %s", host);
    return 1;
  }
  g_fd = socket(ai->ai_family, SOCK_STREAM, 0);
  int crc = connect(g_fd, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(ai);
  if (crc != 0) {
    ev("error connect: %s", strerror(errno));
    goto done;
  }
  if (!insecure) {
    gnutls_certificate_allocate_credentials(&cred);
    if (!ca || gnutls_certificate_set_x509_trust_file(cred, ca, GNUTLS_X509_FMT_PEM) <= 0 ||
        (cert && gnutls_certificate_set_x509_key_file(cred, cert, key, GNUTLS_X509_FMT_PEM) != 0)) {
      ev("error cannot load the TLS files");
      goto done;
    }
    gnutls_init(&g_tls, GNUTLS_CLIENT);
    gnutls_set_default_priority(g_tls);
    gnutls_credentials_set(g_tls, GNUTLS_CRD_CERTIFICATE, cred);
    gnutls_session_set_verify_cert(g_tls, NULL, 0); /* chain to the CA; the name is not the point here */
    gnutls_datum_t alpn = {(unsigned char *)"h2", 2};
    gnutls_alpn_set_protocols(g_tls, &alpn, 1, 0);
    gnutls_transport_set_int(g_tls, g_fd);
    int r;
    do r = gnutls_handshake(g_tls);
    while (r < 0 && !gnutls_error_is_fatal(r));
    if (r < 0) {
      ev("error TLS handshake: %s", gnutls_strerror(r));
      goto done;
    }
    unsigned n = 0;
    const gnutls_datum_t *peer = gnutls_certificate_get_peers(g_tls, &n);
    uint8_t fp[32];
    char hex[65] = "";
    if (peer && n && gnutls_hash_fast(GNUTLS_DIG_SHA256, peer[0].data, peer[0].size, fp) == 0)
      for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", fp[i]);
    ev("ready fingerprint=%s", hex);
  } else {
    ev("ready fingerprint=none");
  }

  rc = 0;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
  nghttp2_option_new(&opt);
  if (no_ack) nghttp2_option_set_no_auto_ping_ack(opt, 1);
  nghttp2_session_client_new2(&h2, cbs, NULL, opt);
  nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, NULL, 0);
  char authority[300];
  snprintf(authority, sizeof authority, "%s:%s", host, port);
  if (call) submit_call(h2, authority, "/amaters.v1.AmateRS/Execute", call);
  if (open_stream) submit_call(h2, authority, "/amaters.v1.AmateRS/ExecuteStream", NULL);

  double next_ping = ping_every > 0 ? now_ms() : -1;
  int sent_pings = 0;
  uint8_t buf[16384];
  for (;;) {
    const uint8_t *out;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(h2, &out)) > 0)
      if (send_all(out, (size_t)n) != 0) {
        ev("error send failed");
        goto done;
      }
    double t = now_ms();
    if (t - g_t0 >= duration) break;
    if (next_ping >= 0 && t >= next_ping) {
      nghttp2_submit_ping(h2, NGHTTP2_FLAG_NONE, NULL);
      ev("ping-sent");
      next_ping = ++sent_pings == pings ? -1 : next_ping + ping_every;
      continue;
    }
    if (call_at >= 0 && t - g_t0 >= call_at) {
      submit_call(h2, authority, "/amaters.v1.AmateRS/Execute", "late");
      call_at = -1;
      continue;
    }
    double wait = g_t0 + duration - t;
    if (next_ping >= 0 && next_ping - t < wait) wait = next_ping - t;
    if (call_at >= 0 && g_t0 + call_at - t < wait) wait = g_t0 + call_at - t;
    if (!(g_tls && gnutls_record_check_pending(g_tls))) {
      struct pollfd p = {g_fd, POLLIN, 0};
      if (poll(&p, 1, wait < 1 ? 1 : (int)wait) <= 0) continue;
    }
    ssize_t r = g_tls ? gnutls_record_recv(g_tls, buf, sizeof buf) : recv(g_fd, buf, sizeof buf, 0);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) continue;
    if (r <= 0) {
      ev("eof%s%s", r < 0 ? " " : "", r < 0 ? (g_tls ? gnutls_strerror((int)r) : strerror(errno)) : "");
      break;
    }
    if (nghttp2_session_mem_recv(h2, buf, (size_t)r) < 0) {
      ev("error HTTP/2 protocol error");
      break;
    }
  }
done:
  if (h2) nghttp2_session_del(h2);
  if (opt) nghttp2_option_del(opt);
  if (cbs) nghttp2_session_callbacks_del(cbs);
  if (g_tls) gnutls_deinit(g_tls);
  if (cred) gnutls_certificate_free_credentials(cred);
  close(g_fd);
  return rc;
}
