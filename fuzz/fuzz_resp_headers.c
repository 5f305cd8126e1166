/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Client-side response header / trailer parsing (src/rpc/headers.c:
 * amn_rpc_resp_header, amn_rpc_resp_take_md, amn_rpc_resp_status). Input:
 * header blocks in the format of fuzz_headers.h (an empty line ends a
 * block; its metadata is taken as the client does). Invariants:
 *  - deterministic: a second parse gives the same status, message and
 *    metadata of every block;
 *  - the final status is a valid code 0..16 with a message; too_large
 *    gives RESOURCE_EXHAUSTED; a grpc-status of 0..16 is taken as is;
 *  - taken metadata is well-formed, at most AMN_RPC_MAX_MD per block;
 *  - round trip: a well-formed status is rebuilt as a Trailers-Only block
 *    with amn_rpc_build_trailers (what our server sends) and parses back to
 *    the same code, message (up to a NUL from %00) and metadata.
 */
#include "fuzz_headers.h"

typedef struct result {
  amn_status_code code;
  char *msg;
  amn_rpc_md *md[FUZZ_MAX_FIELDS + 1];
  size_t md_n[FUZZ_MAX_FIELDS + 1];
  size_t blocks;
} result;

static void take(amn_rpc_resp *r, result *res) {
  size_t cnt;
  amn_rpc_md *md = amn_rpc_resp_take_md(r, &cnt);
  FUZZ_CHECK(cnt <= AMN_RPC_MAX_MD && (md == NULL) == (cnt == 0));
  FUZZ_CHECK(r->md_count == 0 && r->header_bytes == 0);
  for (size_t i = 0; i < cnt; i++) fuzz_check_md(&md[i]);
  res->md[res->blocks] = md;
  res->md_n[res->blocks++] = cnt;
}

static void parse(amn_rpc_resp *r, const fuzz_field *f, size_t n, result *res) {
  amn_rpc_resp_init(r);
  res->blocks = 0;
  for (size_t i = 0; i < n; i++) {
    if (f[i].block_end) take(r, res);
    else amn_rpc_resp_header(r, f[i].name, f[i].nlen, f[i].value, f[i].vlen);
  }
  take(r, res);
  const char *msg = NULL;
  res->code = amn_rpc_resp_status(r, &msg);
  FUZZ_CHECK(msg != NULL && (int)res->code >= 0 && (int)res->code <= 16);
  FUZZ_CHECK(!r->too_large || res->code == AMN_STATUS_RESOURCE_EXHAUSTED);
  if (!r->too_large && r->has_grpc_status && r->grpc_status <= 16)
    FUZZ_CHECK((int)res->code == r->grpc_status);
  if (r->has_grpc_status) FUZZ_CHECK(r->grpc_status >= 0);
  FUZZ_CHECK(r->http_status == 0 || (r->http_status >= 100 && r->http_status <= 599));
  res->msg = strdup(msg);
  FUZZ_CHECK(res->msg != NULL);
}

static void free_result(result *res) {
  for (size_t i = 0; i < res->blocks; i++) amn_rpc_md_free_array(res->md[i], res->md_n[i]);
  free(res->msg);
}

/* The last block's metadata, with the status, through our server's builder. */
static void round_trip(const amn_rpc_resp *r, const result *res) {
  amn_rpc_md *md = res->md[res->blocks - 1];
  size_t cnt = res->md_n[res->blocks - 1];
  amn_md view[AMN_RPC_MAX_MD];
  for (size_t i = 0; i < cnt; i++) view[i] = (amn_md){md[i].key, md[i].value, md[i].value_len};
  amn_hdr_buf *b = malloc(sizeof *b);
  FUZZ_CHECK(b != NULL);
  amn_hdr_buf_init(b);
  FUZZ_CHECK(amn_rpc_build_trailers(b, true, res->code, r->grpc_message, view, cnt) == 0);
  amn_rpc_resp *r2 = malloc(sizeof *r2);
  FUZZ_CHECK(r2 != NULL);
  amn_rpc_resp_init(r2);
  for (size_t i = 0; i < b->n; i++)
    amn_rpc_resp_header(r2, b->h[i].name, b->h[i].nlen, b->h[i].value, b->h[i].vlen);
  FUZZ_CHECK(!r2->malformed && r2->http_status == 200 && r2->content_type_ok && r2->has_grpc_status);
  const char *m2 = NULL;
  amn_status_code c2 = amn_rpc_resp_status(r2, &m2);
  if (!r2->too_large) { /* -bin values split on ',' may grow the block */
    FUZZ_CHECK(c2 == res->code);
    FUZZ_CHECK(strcmp(m2, r->grpc_message ? r->grpc_message : "") == 0);
    FUZZ_CHECK(r2->md_count == cnt);
    for (size_t i = 0; i < cnt; i++) FUZZ_CHECK(fuzz_md_equal(&md[i], &r2->md[i]));
  }
  amn_rpc_resp_free(r2);
  free(r2);
  amn_hdr_buf_free(b);
  free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fuzz_field f[FUZZ_MAX_FIELDS];
  static result ra, rb;
  size_t n = fuzz_split_fields(data, size, f);
  amn_rpc_resp *a = malloc(sizeof *a), *b = malloc(sizeof *b);
  FUZZ_CHECK(a && b);
  parse(a, f, n, &ra);
  parse(b, f, n, &rb);
  FUZZ_CHECK(ra.code == rb.code && strcmp(ra.msg, rb.msg) == 0 && ra.blocks == rb.blocks);
  for (size_t k = 0; k < ra.blocks; k++) {
    FUZZ_CHECK(ra.md_n[k] == rb.md_n[k]);
    for (size_t i = 0; i < ra.md_n[k]; i++) FUZZ_CHECK(fuzz_md_equal(&ra.md[k][i], &rb.md[k][i]));
  }
  if (!a->malformed && !a->too_large && a->has_grpc_status && a->grpc_status <= 16) round_trip(a, &ra);
  free_result(&ra);
  free_result(&rb);
  amn_rpc_resp_free(a);
  amn_rpc_resp_free(b);
  free(a);
  free(b);
  return 0;
}
