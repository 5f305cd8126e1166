/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What the application of a client fuzz target sees of its calls
 * (fuzz_h2_client.c, fuzz_h3_client.c): a record per call, filled by the
 * completion callbacks, which check the invariants every result must meet
 * (a status 0..16 and a message; data only with OK, within MAX_MSG;
 * metadata keys; exactly one end; no stream message after it). The target
 * defines MAX_MSG before including it.
 */
#ifndef AMN_FUZZ_CALLS_H
#define AMN_FUZZ_CALLS_H

#include "amn/client.h"
#include "fuzz_common.h"

typedef struct app_rec {
  int ends;              /* completions (unary callback, on_close) */
  int msgs;              /* stream: response messages */
  amn_status_code code;
} app_rec;

static inline void check_result(const amn_result *r) {
  FUZZ_CHECK((unsigned)r->code <= 16 && r->message != NULL);
  if (r->code != AMN_STATUS_OK) FUZZ_CHECK(r->data == NULL && r->len == 0);
  FUZZ_CHECK(r->len <= MAX_MSG && (r->data != NULL || r->len == 0));
  for (size_t i = 0; i < r->initial_md_count; i++) FUZZ_CHECK(r->initial_md[i].key != NULL);
  for (size_t i = 0; i < r->trailing_md_count; i++) FUZZ_CHECK(r->trailing_md[i].key != NULL);
}

static inline void on_done(const amn_result *r, void *ud) {
  app_rec *a = ud;
  FUZZ_CHECK(a->ends == 0); /* exactly once */
  a->ends++;
  a->code = r->code;
  check_result(r);
}

static inline void on_stream_msg(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  (void)s;
  app_rec *a = ud;
  FUZZ_CHECK(a->ends == 0 && msg != NULL && len <= MAX_MSG);
  a->msgs++;
}

static inline void on_stream_close(amn_cstream *s, const amn_result *r, void *ud) {
  (void)s;
  on_done(r, ud);
  FUZZ_CHECK(r->data == NULL);
}

#endif
