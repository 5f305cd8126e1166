/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The echo handlers (see echo.h). */
#include "echo.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

int ex_echo_register(amn_server *srv) {
  amn_stream_handler sh = {.on_query = stream_query, .on_half_close = stream_half_close,
                           .on_cancel = stream_cancel, .on_writable = stream_writable};
  int rc = amn_server_set_execute(srv, echo_execute, NULL);
  return rc ? rc : amn_server_set_execute_stream(srv, &sh);
}
