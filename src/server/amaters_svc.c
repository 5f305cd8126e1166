/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters.v1.AmateRS on the raw handler: Execute and ExecuteStream decode
 * each QueryRequest (query_bytes, client_signature) and hand it to the
 * application's typed callbacks; a malformed request ends the call with
 * INVALID_ARGUMENT, one whose client signature is required and not valid
 * with UNAUTHENTICATED (signature.c).
 */
#include <stdlib.h>
#include <string.h>

#include "amn/proto.h"
#include "server/server_internal.h"
#include "util/log.h"

/* A QueryRequest as the typed callbacks see it; false (and the call ended)
 * when it is malformed or its required signature is not valid (or the call
 * already ended so). */
static bool decode_query(amn_call *c, const uint8_t *msg, size_t len, amn_query *q) {
  amn_pair_view v;
  if (amn_pair_decode(msg, len, &v) != 0) {
    amn_call_finish(c, AMN_STATUS_INVALID_ARGUMENT, "malformed QueryRequest");
    return false;
  }
  *q = (amn_query){v.f1, v.f1_len, v.f2, v.f2_len, false};
  amn_status_code code;
  const char *why = amn_srv_sig_check(c, q, &code);
  if (!why) return true;
  if (code != AMN_STATUS_OK) {
    AMN_DEBUG("call %s from %s: %s", c->method ? c->method : "?", amn_call_peer_addr(c), why);
    amn_call_finish(c, code, why);
  }
  return false;
}

static void exec_on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  amn_server *s = ud;
  amn_query q;
  if (decode_query(c, msg, len, &q)) s->exec_fn(c, &q, s->exec_ud);
}

int amn_server_set_execute(amn_server *s, amn_execute_fn fn, void *ud) {
  if (!s || !fn) return AMN_EINVAL;
  s->exec_fn = fn;
  s->exec_ud = ud;
  amn_handler h = {0};
  h.on_message = exec_on_message;
  h.ud = s;
  return amn_server_register(s, AMN_METHOD_EXECUTE, &h);
}

static void stream_on_message(amn_call *c, const uint8_t *msg, size_t len, void *ud) {
  amn_server *s = ud;
  amn_query q;
  if (decode_query(c, msg, len, &q) && s->stream_h.on_query) s->stream_h.on_query(c, &q, s->stream_h.ud);
}
static void stream_on_half_close(amn_call *c, void *ud) {
  amn_server *s = ud;
  if (s->stream_h.on_half_close) s->stream_h.on_half_close(c, s->stream_h.ud);
}
static void stream_on_cancel(amn_call *c, amn_status_code why, void *ud) {
  amn_server *s = ud;
  if (s->stream_h.on_cancel) s->stream_h.on_cancel(c, why, s->stream_h.ud);
}
static void stream_on_writable(amn_call *c, void *ud) {
  amn_server *s = ud;
  if (s->stream_h.on_writable) s->stream_h.on_writable(c, s->stream_h.ud);
}

int amn_server_set_execute_stream(amn_server *s, const amn_stream_handler *sh) {
  if (!s || !sh) return AMN_EINVAL;
  s->stream_h = *sh;
  amn_handler h = {stream_on_message, stream_on_half_close, stream_on_cancel, stream_on_writable, true, s};
  return amn_server_register(s, AMN_METHOD_EXECUTE_STREAM, &h);
}
