/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The built-in echo service (amn_server_use_echo): Execute returns the query,
 * ExecuteStream answers each query with itself, holding the client by flow
 * control while its responses cannot be sent; x-echo-* request metadata
 * comes back as trailing metadata.
 */
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

/* Request metadata whose key starts with "x-echo-" comes back as trailing
 * metadata: a simple, observable contract for metadata tests and peers. */
static void echo_metadata(amn_call *c) {
  const amn_metadata *md = amn_call_metadata(c);
  for (size_t i = 0; i < md->count; i++)
    if (strncmp(md->entries[i].key, "x-echo-", 7) == 0)
      amn_call_add_trailing_metadata(c, md->entries[i].key, md->entries[i].value, md->entries[i].value_len);
}

static void echo_execute(amn_call *c, const amn_query *q, void *ud) {
  (void)ud;
  echo_metadata(c);
  amn_call_reply_query(c, q->query_bytes, q->query_len, NULL, 0);
}

/* The echo stream answers each query. When the response queue is full it
 * keeps the one answer it could not send, pauses receiving (the client is
 * then held by flow control) and continues in on_writable. */
typedef struct echo_pending {
  size_t len;
  uint8_t data[];
} echo_pending;

static void echo_on_query(amn_call *c, const amn_query *q, void *ud) {
  (void)ud;
  int rc = amn_call_send_query_response(c, q->query_bytes, q->query_len, NULL, 0);
  if (rc != AMN_EAGAIN) return;
  echo_pending *p = malloc(sizeof *p + q->query_len);
  if (!p) {
    amn_call_finish(c, AMN_STATUS_RESOURCE_EXHAUSTED, "echo: out of memory");
    return;
  }
  p->len = q->query_len;
  memcpy(p->data, q->query_bytes, q->query_len);
  amn_call_set_user_data(c, p);
  amn_call_pause_recv(c);
}

static void echo_on_writable(amn_call *c, void *ud) {
  (void)ud;
  echo_pending *p = amn_call_get_user_data(c);
  if (!p) return;
  if (amn_call_send_query_response(c, p->data, p->len, NULL, 0) == AMN_EAGAIN) return;
  amn_call_set_user_data(c, NULL);
  free(p);
  amn_call_resume_recv(c);
}

static void echo_on_cancel(amn_call *c, amn_status_code why, void *ud) {
  (void)why; (void)ud;
  free(amn_call_get_user_data(c));
  amn_call_set_user_data(c, NULL);
  amn_call_finish(c, AMN_STATUS_CANCELLED, NULL);
}

static void echo_on_half_close(amn_call *c, void *ud) {
  (void)ud;
  echo_metadata(c);
  amn_call_finish(c, AMN_STATUS_OK, NULL);
}

int amn_server_use_echo(amn_server *s) {
  int rc = amn_server_set_execute(s, echo_execute, NULL);
  if (rc) return rc;
  amn_stream_handler sh = {echo_on_query, echo_on_half_close, echo_on_cancel, echo_on_writable, NULL};
  return amn_server_set_execute_stream(s, &sh);
}
