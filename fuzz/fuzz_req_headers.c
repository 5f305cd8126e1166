/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Server-side request header validation (src/rpc/headers.c:
 * amn_rpc_req_header / amn_rpc_req_finish). Input: a header block in the
 * format of fuzz_headers.h. Invariants:
 *  - the verdict is deterministic (a second struct fed the same fields
 *    gives the same verdict, path, timeout and metadata);
 *  - it is one of the documented ones: ok <=> 200/OK/no message; otherwise
 *    a message, 400/405/415 with INTERNAL, or 200 with RESOURCE_EXHAUSTED
 *    or UNIMPLEMENTED; ok implies every required field was right;
 *  - stored metadata is well-formed and within AMN_RPC_MAX_MD, md_view
 *    mirrors it, a grpc-timeout is >= 0;
 *  - round trip: an accepted request rebuilt with amn_rpc_build_request
 *    (what our client sends) is accepted again with the same path and
 *    metadata, and a timeout never shorter (rounded up by < 1e-5).
 */
#include "fuzz_headers.h"

static void feed(amn_rpc_req *r, const fuzz_field *f, size_t n) {
  amn_rpc_req_init(r);
  for (size_t i = 0; i < n; i++)
    if (!f[i].block_end) amn_rpc_req_header(r, f[i].name, f[i].nlen, f[i].value, f[i].vlen);
}

static void check_verdict(const amn_rpc_req *r, amn_rpc_verdict v) {
  if (v.ok) {
    FUZZ_CHECK(v.http_status == 200 && v.code == AMN_STATUS_OK && v.message == NULL);
    FUZZ_CHECK(r->path && r->has_method && r->method_post && r->has_scheme && r->content_type_ok);
    FUZZ_CHECK(r->te_trailers && !r->bad_timeout && !r->too_large && !r->malformed && r->encoding_identity);
  } else {
    FUZZ_CHECK(v.message != NULL);
    if (v.http_status == 200)
      FUZZ_CHECK(v.code == AMN_STATUS_RESOURCE_EXHAUSTED || v.code == AMN_STATUS_UNIMPLEMENTED);
    else
      FUZZ_CHECK((v.http_status == 400 || v.http_status == 405 || v.http_status == 415) &&
                 v.code == AMN_STATUS_INTERNAL);
    if (r->malformed) FUZZ_CHECK(v.http_status == 400);
  }
  FUZZ_CHECK(r->timeout_ns >= -1);
  FUZZ_CHECK(r->md_count <= AMN_RPC_MAX_MD);
  for (size_t i = 0; i < r->md_count; i++) {
    fuzz_check_md(&r->md[i]);
    FUZZ_CHECK(r->md_view[i].key == r->md[i].key && r->md_view[i].value == r->md[i].value &&
               r->md_view[i].value_len == r->md[i].value_len);
  }
}

static void round_trip(const amn_rpc_req *r) {
  amn_hdr_buf *b = malloc(sizeof *b);
  FUZZ_CHECK(b != NULL);
  amn_hdr_buf_init(b);
  int rc = amn_rpc_build_request(b, "https", "localhost", r->path, r->timeout_ns, r->md_view, r->md_count);
  FUZZ_CHECK(rc == 0);
  amn_rpc_req *r2 = malloc(sizeof *r2);
  FUZZ_CHECK(r2 != NULL);
  amn_rpc_req_init(r2);
  for (size_t i = 0; i < b->n; i++)
    amn_rpc_req_header(r2, b->h[i].name, b->h[i].nlen, b->h[i].value, b->h[i].vlen);
  amn_rpc_verdict v2 = amn_rpc_req_finish(r2);
  /* -bin values split on ',' come back as one field each, with their own
   * per-field overhead: the rebuilt block may exceed the size limit */
  FUZZ_CHECK(v2.ok || (r2->too_large && v2.code == AMN_STATUS_RESOURCE_EXHAUSTED));
  if (v2.ok) {
    FUZZ_CHECK(strcmp(r2->path, r->path) == 0);
    FUZZ_CHECK(r2->md_count == r->md_count);
    for (size_t i = 0; i < r->md_count; i++) FUZZ_CHECK(fuzz_md_equal(&r->md[i], &r2->md[i]));
    if (r->timeout_ns <= 0) {
      FUZZ_CHECK(r2->timeout_ns == -1); /* not sent */
    } else {
      int64_t t1 = r->timeout_ns, t2 = r2->timeout_ns;
      FUZZ_CHECK(t2 >= t1 && t2 - t1 <= t1 / 99999 + 1);
    }
  }
  amn_rpc_req_free(r2);
  free(r2);
  amn_hdr_buf_free(b);
  free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fuzz_field f[FUZZ_MAX_FIELDS];
  size_t n = fuzz_split_fields(data, size, f);
  amn_rpc_req *a = malloc(sizeof *a), *b = malloc(sizeof *b);
  FUZZ_CHECK(a && b);
  feed(a, f, n);
  feed(b, f, n);
  amn_rpc_verdict va = amn_rpc_req_finish(a), vb = amn_rpc_req_finish(b);
  FUZZ_CHECK(va.ok == vb.ok && va.http_status == vb.http_status && va.code == vb.code && va.message == vb.message);
  FUZZ_CHECK((a->path == NULL) == (b->path == NULL) && (!a->path || strcmp(a->path, b->path) == 0));
  FUZZ_CHECK(a->timeout_ns == b->timeout_ns && a->md_count == b->md_count);
  for (size_t i = 0; i < a->md_count; i++) FUZZ_CHECK(fuzz_md_equal(&a->md[i], &b->md[i]));
  check_verdict(a, va);
  if (va.ok) round_trip(a);
  amn_rpc_req_free(a);
  amn_rpc_req_free(b);
  free(a);
  free(b);
  return 0;
}
