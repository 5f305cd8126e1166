/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * echo_server — the smallest useful amaters-net server.
 *
 *   echo_server [PKI_DIR [HOST:PORT]]
 *
 * Serves amaters.v1.AmateRS over HTTP/2 (TCP) and HTTP/3 (QUIC) on the same
 * port, with mutual TLS from a development PKI (PKI_DIR, default: the default
 * PKI directory, created if missing). Execute answers result_bytes =
 * query_bytes; ExecuteStream answers every query the same way, with
 * backpressure. Prints "echo_server: listening on https://localhost:PORT",
 * stops gracefully on SIGINT or SIGTERM.
 *
 * Try it:  echo_server & amaters-cli https://localhost:7878 execute --data hi
 */
#include <stdlib.h>
#include <string.h>

#include "example.h"

/* Execute: one request, one answer. The handler runs on the server's event
 * loop thread and must not block; answering at once is fine here. The query
 * bytes stay valid until the call is finished. */
static void echo_execute(amn_call *call, const amn_query *q, void *ud) {
  (void)ud;
  amn_call_reply_query(call, q->query_bytes, q->query_len, NULL, 0);
}

/* ExecuteStream: many queries, many answers. amn_call_send_query_response
 * refuses (AMN_EAGAIN) when the client reads slower than it sends; then we
 * keep the answer, stop reading requests (amn_call_pause_recv) and continue
 * in on_writable. The call's state hangs off the call (user data). */
typedef struct stream_state {
  uint8_t *pending; /* an answer not accepted yet, or NULL */
  size_t pending_len;
  bool half_closed; /* the client sent its last query */
} stream_state;

static stream_state *state_of(amn_call *call) {
  stream_state *st = amn_call_get_user_data(call);
  if (!st) {
    st = calloc(1, sizeof *st);
    amn_call_set_user_data(call, st);
  }
  return st;
}

/* Every path that ends the call frees its state and finishes it, once. */
static void end_stream(amn_call *call, amn_status_code code, const char *msg) {
  stream_state *st = amn_call_get_user_data(call);
  if (st) free(st->pending);
  free(st);
  amn_call_finish(call, code, msg);
}

static void stream_query(amn_call *call, const amn_query *q, void *ud) {
  (void)ud;
  stream_state *st = state_of(call);
  if (!st) return end_stream(call, AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  int rc = amn_call_send_query_response(call, q->query_bytes, q->query_len, NULL, 0);
  if (rc == AMN_EAGAIN) {
    /* The query bytes are valid only during this callback: keep a copy. */
    st->pending = malloc(q->query_len ? q->query_len : 1);
    if (!st->pending) return end_stream(call, AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(st->pending, q->query_bytes, q->query_len);
    st->pending_len = q->query_len;
    amn_call_pause_recv(call); /* no more queries until on_writable */
  } else if (rc != 0 && rc != AMN_ECLOSED) {
    end_stream(call, AMN_STATUS_INTERNAL, amn_strerror(rc));
  }
}

static void stream_writable(amn_call *call, void *ud) {
  (void)ud;
  stream_state *st = amn_call_get_user_data(call);
  if (!st || !st->pending) return;
  if (amn_call_send_query_response(call, st->pending, st->pending_len, NULL, 0) == AMN_EAGAIN) return;
  free(st->pending);
  st->pending = NULL;
  if (st->half_closed) return end_stream(call, AMN_STATUS_OK, NULL);
  amn_call_resume_recv(call);
}

static void stream_half_close(amn_call *call, void *ud) {
  (void)ud;
  stream_state *st = amn_call_get_user_data(call);
  if (st && st->pending) st->half_closed = true; /* finish once the last answer went out */
  else end_stream(call, AMN_STATUS_OK, NULL);
}

/* The client went away, the deadline passed or the server is stopping: the
 * call must still be finished (nothing is sent any more). */
static void stream_cancel(amn_call *call, amn_status_code why, void *ud) {
  (void)ud;
  end_stream(call, why, NULL);
}

int main(int argc, char **argv) {
  const char *pki_dir = argc > 1 ? argv[1] : NULL;
  char err[512] = "";
  sigset_t stop;
  ex_block_stop_signals(&stop);

  amn_server_opts o;
  amn_server_opts_init(&o); /* the documented defaults; override what you need */
  o.listen = argc > 2 ? argv[2] : "127.0.0.1:7878";
  o.transport = AMN_TRANSPORT_BOTH;
  ex_tls_files files;
  if (ex_tls_from_pki(pki_dir, "server", &o.tls, &files) != 0) return 1;

  amn_server *srv;
  if (amn_server_new(&srv, &o, err, sizeof err) != 0) return fprintf(stderr, "echo_server: %s\n", err), 1;
  amn_stream_handler sh = {.on_query = stream_query, .on_half_close = stream_half_close,
                           .on_cancel = stream_cancel, .on_writable = stream_writable};
  amn_server_set_execute(srv, echo_execute, NULL);
  amn_server_set_execute_stream(srv, &sh);
  if (amn_server_start(srv, err, sizeof err) != 0) {
    fprintf(stderr, "echo_server: %s\n", err);
    amn_server_free(srv);
    return 1;
  }
  printf("echo_server: listening on https://localhost:%u\n", (unsigned)amn_server_port(srv));
  fflush(stdout);

  ex_wait_stop_signal(&stop);
  amn_server_stop(srv); /* drain: calls in flight finish, then the loops exit */
  amn_server_free(srv);
  printf("echo_server: stopped\n");
  return 0;
}
