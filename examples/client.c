/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * client — the three ways to call: blocking, asynchronous, streaming.
 *
 *   client URL [PKI_DIR [h2|h3]]
 *
 * Against echo_server (or amaters-netd): one blocking Execute, ten
 * asynchronous Execute calls in flight at once, one ExecuteStream carrying
 * three queries. Mutual TLS with the client certificate of a development PKI
 * (PKI_DIR, default: the default PKI directory). Exits 0 when every answer
 * is the echo of its query.
 *
 * One amn_client is thread-safe and owns an I/O thread; its callbacks run on
 * that thread and must not block (nor call the blocking amn_client_unary).
 */
#include <string.h>

#include "example.h"

/* ---- asynchronous calls: a counter the callbacks bump, a condition the
 * main thread waits on ---------------------------------------------------- */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, ok;
} async_calls = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

typedef struct async_req {
  char query[32];
} async_req;

/* Runs on the client's I/O thread. `res` and its data live during the call
 * only. res->data is the serialized QueryResponse (raw unary API). */
static void async_done(const amn_result *res, void *ud) {
  async_req *req = ud;
  amn_pair_view resp = {0};
  bool ok = res->code == AMN_STATUS_OK && amn_pair_decode(res->data, res->len, &resp) == 0 &&
            resp.f1_len == strlen(req->query) && memcmp(resp.f1, req->query, resp.f1_len) == 0;
  if (!ok) fprintf(stderr, "client: async %s: %s %s\n", req->query, amn_status_name(res->code), res->message);
  pthread_mutex_lock(&async_calls.mu);
  async_calls.done++;
  async_calls.ok += ok;
  pthread_cond_signal(&async_calls.cv);
  pthread_mutex_unlock(&async_calls.mu);
}

/* ---- a bidirectional stream ------------------------------------------------ */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int messages;
  bool closed;
  amn_status_code code;
} stream = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, AMN_STATUS_OK};

static void stream_message(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  (void)s, (void)ud;
  amn_pair_view resp;
  if (amn_pair_decode(msg, len, &resp) == 0) printf("client: stream answer '%.*s'\n", (int)resp.f1_len, resp.f1);
  pthread_mutex_lock(&stream.mu);
  stream.messages++;
  pthread_mutex_unlock(&stream.mu);
}

static void stream_close(amn_cstream *s, const amn_result *res, void *ud) {
  (void)s, (void)ud;
  pthread_mutex_lock(&stream.mu);
  stream.closed = true;
  stream.code = res->code;
  pthread_cond_signal(&stream.cv);
  pthread_mutex_unlock(&stream.mu);
}

/* Encodes a QueryRequest and queues it on the stream. */
static int stream_send_query(amn_cstream *s, const char *query) {
  uint8_t buf[256];
  size_t n = amn_pair_encode(buf, (const uint8_t *)query, strlen(query), NULL, 0);
  return amn_cstream_send(s, buf, n); /* AMN_EAGAIN would mean: wait for on_writable */
}

int main(int argc, char **argv) {
  if (argc < 2) return fprintf(stderr, "usage: client URL [PKI_DIR [h2|h3]]\n"), 2;
  char err[512] = "";
  amn_client_opts o;
  amn_client_opts_init(&o);
  o.url = argv[1];
  o.transport = argc > 3 && strcmp(argv[3], "h3") == 0 ? AMN_TRANSPORT_H3 : AMN_TRANSPORT_H2;
  ex_tls_files files;
  if (ex_tls_from_pki(argc > 2 ? argv[2] : NULL, "client", &o.tls, &files) != 0) return 1;
  amn_client *c;
  if (amn_client_new(&c, &o, err, sizeof err) != 0) return fprintf(stderr, "client: %s\n", err), 1;
  int failures = 0;

  /* 1. Blocking: amn_client_execute encodes the QueryRequest, waits, decodes
   *    the QueryResponse (out.data = result_bytes). A deadline of 5 s. */
  amn_call_opts copts = {.timeout_ms = 5000};
  amn_result r;
  int rc = amn_client_execute(c, (const uint8_t *)"hello", 5, NULL, 0, &copts, &r, NULL, NULL);
  if (rc != 0) {
    fprintf(stderr, "client: unary: %s\n", amn_strerror(rc)), failures++;
  } else {
    printf("client: unary %s '%.*s'\n", amn_status_name(r.code), (int)r.len, r.data ? (char *)r.data : "");
    failures += !(r.code == AMN_STATUS_OK && r.len == 5 && memcmp(r.data, "hello", 5) == 0);
    amn_result_free(&r);
  }

  /* 2. Asynchronous: ten calls in flight on the same connection; each
   *    callback runs once, also on failure. */
  enum { N_ASYNC = 10 };
  static async_req reqs[N_ASYNC]; /* each must outlive its call: the callback reads it */
  for (int i = 0; i < N_ASYNC; i++) {
    async_req *req = &reqs[i];
    snprintf(req->query, sizeof req->query, "async-%d", i);
    uint8_t buf[64];
    size_t n = amn_pair_encode(buf, (const uint8_t *)req->query, strlen(req->query), NULL, 0);
    if (amn_client_unary_async(c, AMN_METHOD_EXECUTE, buf, n, &copts, async_done, req) != 0) {
      /* not issued: the callback will not run */
      pthread_mutex_lock(&async_calls.mu);
      async_calls.done++;
      pthread_mutex_unlock(&async_calls.mu);
    }
  }
  pthread_mutex_lock(&async_calls.mu);
  while (async_calls.done < N_ASYNC) pthread_cond_wait(&async_calls.cv, &async_calls.mu);
  printf("client: async %d/%d ok\n", async_calls.ok, N_ASYNC);
  failures += N_ASYNC - async_calls.ok;
  pthread_mutex_unlock(&async_calls.mu);

  /* 3. Streaming: three queries, then half-close; answers arrive through
   *    on_message, the status through on_close (always exactly once). */
  amn_cstream_cbs cbs = {.on_message = stream_message, .on_close = stream_close};
  amn_cstream *s;
  if (amn_client_stream_open(c, AMN_METHOD_EXECUTE_STREAM, &copts, &cbs, NULL, &s) != 0) {
    fprintf(stderr, "client: cannot open a stream\n"), failures++;
  } else {
    const char *queries[] = {"one", "two", "three"};
    for (size_t i = 0; i < 3; i++)
      if (stream_send_query(s, queries[i]) != 0) fprintf(stderr, "client: stream send failed\n"), failures++;
    amn_cstream_close_send(s);
    pthread_mutex_lock(&stream.mu);
    while (!stream.closed) pthread_cond_wait(&stream.cv, &stream.mu);
    printf("client: stream %s, %d answers\n", amn_status_name(stream.code), stream.messages);
    failures += !(stream.code == AMN_STATUS_OK && stream.messages == 3);
    pthread_mutex_unlock(&stream.mu);
    amn_cstream_release(s); /* after on_close */
  }

  amn_client_free(c);
  printf("client: %s\n", failures ? "FAILED" : "all calls answered");
  return failures ? 1 : 0;
}
