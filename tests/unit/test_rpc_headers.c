/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Request validation, response parsing and header list building. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rpc/rpc.h"

typedef struct kv { const char *k, *v; } kv;

static void req_feed(amn_rpc_req *r, const kv *h, size_t n) {
  for (size_t i = 0; i < n; i++)
    amn_rpc_req_header(r, (const uint8_t *)h[i].k, strlen(h[i].k), (const uint8_t *)h[i].v, strlen(h[i].v));
}

static void resp_feed(amn_rpc_resp *r, const kv *h, size_t n) {
  for (size_t i = 0; i < n; i++)
    amn_rpc_resp_header(r, (const uint8_t *)h[i].k, strlen(h[i].k), (const uint8_t *)h[i].v, strlen(h[i].v));
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const kv good_req[] = {
    {":method", "POST"},        {":scheme", "https"},  {":path", "/amaters.v1.AmateRS/Execute"},
    {":authority", "localhost"}, {"te", "trailers"},    {"content-type", "application/grpc"},
    {"user-agent", "grpc-c++/1.51"},
};

/* Runs good_req with entry `replace` substituted (or dropped when k NULL)
 * plus extra fields appended; returns the verdict. */
static amn_rpc_verdict verdict_with(int replace, kv with, const kv *extra, size_t nextra) {
  amn_rpc_req r;
  amn_rpc_req_init(&r);
  for (size_t i = 0; i < N(good_req); i++) {
    if ((int)i == replace) {
      if (with.k) req_feed(&r, &with, 1);
    } else {
      req_feed(&r, &good_req[i], 1);
    }
  }
  req_feed(&r, extra, nextra);
  amn_rpc_verdict v = amn_rpc_req_finish(&r);
  amn_rpc_req_free(&r);
  return v;
}

static void expect(amn_rpc_verdict v, int http, amn_status_code code) {
  assert_int_equal(v.http_status, http);
  assert_int_equal(v.code, code);
  assert_int_equal(v.ok, http == 200 && code == AMN_STATUS_OK);
  if (!v.ok) {
    assert_non_null(v.message);
    assert_true(strlen(v.message) > 0);
  }
}

static void test_req_ok(void **state) {
  (void)state;
  amn_rpc_req r;
  amn_rpc_req_init(&r);
  req_feed(&r, good_req, N(good_req));
  const kv extra[] = {{"grpc-timeout", "250m"}, {"grpc-encoding", "identity"},
                      {"grpc-accept-encoding", "identity,gzip"}, {"x-trace", "abc def"}};
  req_feed(&r, extra, N(extra));
  amn_rpc_verdict v = amn_rpc_req_finish(&r);
  expect(v, 200, AMN_STATUS_OK);
  assert_null(v.message);
  assert_string_equal(r.path, "/amaters.v1.AmateRS/Execute");
  assert_true(r.timeout_ns == 250000000);
  assert_true(r.has_encoding);
  assert_true(r.encoding_identity);
  assert_string_equal(r.encoding, "identity");
  assert_int_equal(r.md_count, 1);
  assert_string_equal(r.md_view[0].key, "x-trace");
  assert_int_equal(r.md_view[0].value_len, 7);
  assert_memory_equal(r.md_view[0].value, "abc def", 7);
  assert_int_equal(r.md[0].value[7], 0); /* NUL-terminated */
  amn_rpc_req_free(&r);

  /* no timeout -> -1; content-type variants accepted */
  const char *cts[] = {"application/grpc+proto", "application/grpc;charset=utf-8", "Application/GRPC+json"};
  for (size_t i = 0; i < N(cts); i++)
    expect(verdict_with(5, (kv){"content-type", cts[i]}, NULL, 0), 200, AMN_STATUS_OK);
  amn_rpc_req_init(&r);
  req_feed(&r, good_req, N(good_req));
  assert_true(amn_rpc_req_finish(&r).ok);
  assert_true(r.timeout_ns == -1);
  assert_false(r.has_encoding);
  assert_true(r.encoding_identity);
  assert_null(r.encoding);
  amn_rpc_req_free(&r);
}

static void test_req_verdicts(void **state) {
  (void)state;
  kv none = {NULL, NULL};
  /* missing pseudo-headers */
  expect(verdict_with(0, none, NULL, 0), 400, AMN_STATUS_INTERNAL);
  expect(verdict_with(1, none, NULL, 0), 400, AMN_STATUS_INTERNAL);
  expect(verdict_with(2, none, NULL, 0), 400, AMN_STATUS_INTERNAL);
  expect(verdict_with(2, (kv){":path", ""}, NULL, 0), 400, AMN_STATUS_INTERNAL);
  /* :authority is optional */
  expect(verdict_with(3, none, NULL, 0), 200, AMN_STATUS_OK);
  /* malformed: pseudo after regular, duplicate / unknown pseudo, bad names */
  const kv late_pseudo[] = {{":authority", "x"}};
  expect(verdict_with(-1, none, late_pseudo, 1), 400, AMN_STATUS_INTERNAL);
  const kv dup_path[] = {{":path", "/a/b"}};
  expect(verdict_with(3, dup_path[0], NULL, 0), 400, AMN_STATUS_INTERNAL);
  expect(verdict_with(3, (kv){":method", "POST"}, NULL, 0), 400, AMN_STATUS_INTERNAL);
  expect(verdict_with(3, (kv){":protocol", "websocket"}, NULL, 0), 400, AMN_STATUS_INTERNAL);
  const kv upper[] = {{"X-Foo", "1"}};
  expect(verdict_with(-1, none, upper, 1), 400, AMN_STATUS_INTERNAL);
  /* method */
  expect(verdict_with(0, (kv){":method", "GET"}, NULL, 0), 405, AMN_STATUS_INTERNAL);
  expect(verdict_with(0, (kv){":method", "post"}, NULL, 0), 405, AMN_STATUS_INTERNAL);
  /* content-type */
  expect(verdict_with(5, none, NULL, 0), 415, AMN_STATUS_INTERNAL);
  expect(verdict_with(5, (kv){"content-type", "application/json"}, NULL, 0), 415, AMN_STATUS_INTERNAL);
  expect(verdict_with(5, (kv){"content-type", "application/grpcx"}, NULL, 0), 415, AMN_STATUS_INTERNAL);
  expect(verdict_with(5, (kv){"content-type", "application/grp"}, NULL, 0), 415, AMN_STATUS_INTERNAL);
  /* te */
  expect(verdict_with(4, none, NULL, 0), 400, AMN_STATUS_INTERNAL);
  expect(verdict_with(4, (kv){"te", "gzip"}, NULL, 0), 400, AMN_STATUS_INTERNAL);
  /* grpc-timeout */
  const kv bad_to[] = {{"grpc-timeout", "123456789S"}};
  expect(verdict_with(-1, none, bad_to, 1), 400, AMN_STATUS_INTERNAL);
  const kv bad_to2[] = {{"grpc-timeout", "10s"}};
  expect(verdict_with(-1, none, bad_to2, 1), 400, AMN_STATUS_INTERNAL);
  /* encoding */
  const kv gz[] = {{"grpc-encoding", "gzip"}};
  expect(verdict_with(-1, none, gz, 1), 200, AMN_STATUS_UNIMPLEMENTED);
  /* first failing check wins: malformed beats method, method beats ct, ... */
  const kv late_and_gz[] = {{"grpc-encoding", "gzip"}, {":scheme", "http"}};
  expect(verdict_with(0, (kv){":method", "GET"}, late_and_gz, 2), 400, AMN_STATUS_INTERNAL);
  expect(verdict_with(0, (kv){":method", "GET"}, gz, 1), 405, AMN_STATUS_INTERNAL);
  const kv ct_bad_te[] = {{"te", "x"}};
  {
    amn_rpc_req r;
    amn_rpc_req_init(&r);
    const kv h[] = {{":method", "POST"}, {":scheme", "http"}, {":path", "/s/m"},
                    {"content-type", "text/plain"}};
    req_feed(&r, h, N(h));
    req_feed(&r, ct_bad_te, 1);
    expect(amn_rpc_req_finish(&r), 415, AMN_STATUS_INTERNAL);
    amn_rpc_req_free(&r);
  }
  const kv te_and_to[] = {{"grpc-timeout", "bad"}, {"grpc-encoding", "gzip"}};
  expect(verdict_with(4, (kv){"te", "no"}, te_and_to, 2), 400, AMN_STATUS_INTERNAL);
  char many[AMN_RPC_MAX_MD + 1][16];
  kv mdx[AMN_RPC_MAX_MD + 2];
  for (int i = 0; i <= AMN_RPC_MAX_MD; i++) {
    snprintf(many[i], sizeof many[i], "k%d", i);
    mdx[i] = (kv){many[i], "v"};
  }
  mdx[AMN_RPC_MAX_MD + 1] = (kv){"grpc-encoding", "gzip"};
  expect(verdict_with(-1, none, mdx, AMN_RPC_MAX_MD + 2), 200, AMN_STATUS_RESOURCE_EXHAUSTED);
}

static void test_req_metadata(void **state) {
  (void)state;
  amn_rpc_req r;
  amn_rpc_req_init(&r);
  req_feed(&r, good_req, N(good_req));
  const kv h[] = {
      {"grpc-timeout", "1S"},
      {"grpc-message-type", "x"},
      {"host", "h"},
      {"content-length", "5"},
      {"accept-encoding", "gzip"},
      {"grpc-status", "0"},
      {"grpc-message", "m"},
      {"trace-proto-bin", "AAEC/w=="},       /* padded */
      {"token-bin", "AAEC/w"},               /* unpadded */
      {"multi-bin", "Zm9v, YmFy,Zg"},        /* folded duplicates */
      {"empty-bin", ""},
      {"grpc-status-details-bin", "CAM"},    /* passed through as metadata */
      {"authorization", "Bearer y235.wef315yfh138vh31hv93hv8h3v"},
      {"x.dotted_under-score", ""},
  };
  req_feed(&r, h, N(h));
  amn_rpc_verdict v = amn_rpc_req_finish(&r);
  expect(v, 200, AMN_STATUS_OK);
  static const struct { const char *k; const char *v; size_t len; } want[] = {
      {"trace-proto-bin", "\x00\x01\x02\xff", 4},
      {"token-bin", "\x00\x01\x02\xff", 4},
      {"multi-bin", "foo", 3},
      {"multi-bin", "bar", 3},
      {"multi-bin", "f", 1},
      {"empty-bin", "", 0},
      {"grpc-status-details-bin", "\x08\x03", 2},
      {"authorization", "Bearer y235.wef315yfh138vh31hv93hv8h3v", 38},
      {"x.dotted_under-score", "", 0},
  };
  assert_int_equal(r.md_count, N(want));
  for (size_t i = 0; i < N(want); i++) {
    assert_string_equal(r.md_view[i].key, want[i].k);
    assert_int_equal(r.md_view[i].value_len, want[i].len);
    assert_memory_equal(r.md_view[i].value, want[i].v, want[i].len);
    assert_int_equal(r.md_view[i].value[want[i].len], 0);
    assert_ptr_equal(r.md_view[i].key, r.md[i].key);
  }
  amn_rpc_req_free(&r);

  /* malformed values */
  const char *bad_bin[] = {"Zg=", "Z", "Zm9v!", "Zm9v,Z"};
  for (size_t i = 0; i < N(bad_bin); i++) {
    const kv b[] = {{"x-bin", bad_bin[i]}};
    expect(verdict_with(-1, (kv){NULL, NULL}, b, 1), 400, AMN_STATUS_INTERNAL);
  }
  const char *bad_ascii[] = {"tab\there", "nl\n", "caf\xc3\xa9", "del\x7f"};
  for (size_t i = 0; i < N(bad_ascii); i++) {
    const kv b[] = {{"x-text", bad_ascii[i]}};
    expect(verdict_with(-1, (kv){NULL, NULL}, b, 1), 400, AMN_STATUS_INTERNAL);
  }
  /* a NUL inside an ASCII value */
  amn_rpc_req_init(&r);
  req_feed(&r, good_req, N(good_req));
  amn_rpc_req_header(&r, (const uint8_t *)"x-a", 3, (const uint8_t *)"a\0b", 3);
  expect(amn_rpc_req_finish(&r), 400, AMN_STATUS_INTERNAL);
  assert_true(r.malformed);
  amn_rpc_req_free(&r);
}

static void test_req_limits(void **state) {
  (void)state;
  amn_rpc_req r;
  char keys[AMN_RPC_MAX_MD + 1][16];
  /* exactly AMN_RPC_MAX_MD entries: fine */
  amn_rpc_req_init(&r);
  req_feed(&r, good_req, N(good_req));
  for (int i = 0; i < AMN_RPC_MAX_MD; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    req_feed(&r, &(kv){keys[i], "v"}, 1);
  }
  expect(amn_rpc_req_finish(&r), 200, AMN_STATUS_OK);
  assert_int_equal(r.md_count, AMN_RPC_MAX_MD);
  /* one more: too large */
  req_feed(&r, &(kv){"one-more", "v"}, 1);
  assert_true(r.too_large);
  assert_int_equal(r.md_count, AMN_RPC_MAX_MD);
  expect(amn_rpc_req_finish(&r), 200, AMN_STATUS_RESOURCE_EXHAUSTED);
  amn_rpc_req_free(&r);

  /* a -bin value folding more entries than allowed */
  amn_rpc_req_init(&r);
  req_feed(&r, good_req, N(good_req));
  char folded[3 * (AMN_RPC_MAX_MD + 1)];
  size_t o = 0;
  for (int i = 0; i <= AMN_RPC_MAX_MD; i++) o += (size_t)sprintf(folded + o, "%sAA", i ? "," : "");
  req_feed(&r, &(kv){"x-bin", folded}, 1);
  expect(amn_rpc_req_finish(&r), 200, AMN_STATUS_RESOURCE_EXHAUSTED);
  amn_rpc_req_free(&r);

  /* header bytes: name + value + 32 per field, over 16 KiB */
  size_t base = 0;
  for (size_t i = 0; i < N(good_req); i++) base += strlen(good_req[i].k) + strlen(good_req[i].v) + 32;
  size_t vlen = AMN_RPC_MAX_HEADER_BYTES - base - 32 - 3; /* "x-a" */
  char *big = malloc(vlen + 2);
  memset(big, 'a', vlen + 1);
  big[vlen] = '\0';
  amn_rpc_req_init(&r);
  req_feed(&r, good_req, N(good_req));
  req_feed(&r, &(kv){"x-a", big}, 1);
  assert_int_equal(r.header_bytes, AMN_RPC_MAX_HEADER_BYTES);
  expect(amn_rpc_req_finish(&r), 200, AMN_STATUS_OK); /* exactly at the limit */
  amn_rpc_req_free(&r);
  big[vlen] = 'a';
  big[vlen + 1] = '\0';
  amn_rpc_req_init(&r);
  req_feed(&r, good_req, N(good_req));
  req_feed(&r, &(kv){"x-a", big}, 1);
  assert_true(r.too_large);
  assert_int_equal(r.md_count, 0); /* not stored */
  expect(amn_rpc_req_finish(&r), 200, AMN_STATUS_RESOURCE_EXHAUSTED);
  amn_rpc_req_free(&r);
  free(big);
}

/* ---- responses ---- */

static void test_resp_headers_and_trailers(void **state) {
  (void)state;
  amn_rpc_resp r;
  amn_rpc_resp_init(&r);
  const kv hdrs[] = {{":status", "200"}, {"content-type", "application/grpc+proto"},
                     {"grpc-encoding", "identity"}, {"grpc-accept-encoding", "identity"},
                     {"x-hdr", "h1"}, {"x-hdr-bin", "AQI"}};
  resp_feed(&r, hdrs, N(hdrs));
  assert_int_equal(r.http_status, 200);
  assert_true(r.content_type_ok);
  assert_string_equal(r.encoding, "identity");
  assert_false(r.malformed);
  size_t n;
  amn_rpc_md *md = amn_rpc_resp_take_md(&r, &n);
  assert_int_equal(n, 2);
  assert_int_equal(r.md_count, 0);
  assert_int_equal(r.header_bytes, 0);
  assert_string_equal(md[0].key, "x-hdr");
  assert_string_equal((char *)md[0].value, "h1");
  assert_string_equal(md[1].key, "x-hdr-bin");
  assert_int_equal(md[1].value_len, 2);
  assert_memory_equal(md[1].value, "\x01\x02", 2);
  amn_rpc_md_free_array(md, n);
  /* before trailers: no status yet */
  const char *msg = NULL;
  assert_int_equal(amn_rpc_resp_status(&r, &msg), AMN_STATUS_INTERNAL);
  assert_string_equal(msg, "missing grpc-status");

  const kv trl[] = {{"grpc-status", "5"}, {"grpc-message", "no such key: caf%C3%A9 100%25 %zz"},
                    {"grpc-status-details-bin", "CAU="}, {"x-trl", "t"}};
  resp_feed(&r, trl, N(trl));
  assert_false(r.malformed);
  assert_true(r.has_grpc_status);
  assert_int_equal(amn_rpc_resp_status(&r, &msg), AMN_STATUS_NOT_FOUND);
  assert_string_equal(msg, "no such key: caf\xc3\xa9 100% %zz");
  md = amn_rpc_resp_take_md(&r, &n);
  assert_int_equal(n, 2);
  assert_string_equal(md[0].key, "grpc-status-details-bin");
  assert_memory_equal(md[0].value, "\x08\x05", 2);
  assert_string_equal(md[1].key, "x-trl");
  amn_rpc_md_free_array(md, n);
  assert_null(amn_rpc_resp_take_md(&r, &n));
  assert_int_equal(n, 0);
  amn_rpc_resp_free(&r);

  /* OK without grpc-message: empty message */
  amn_rpc_resp_init(&r);
  const kv ok[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-status", "0"}};
  resp_feed(&r, ok, N(ok));
  assert_int_equal(amn_rpc_resp_status(&r, &msg), AMN_STATUS_OK);
  assert_string_equal(msg, "");
  amn_rpc_resp_free(&r);

  /* out-of-range code -> UNKNOWN; garbage grpc-status -> malformed, missing */
  amn_rpc_resp_init(&r);
  const kv big[] = {{":status", "200"}, {"grpc-status", "17"}};
  resp_feed(&r, big, N(big));
  assert_int_equal(amn_rpc_resp_status(&r, NULL), AMN_STATUS_UNKNOWN);
  amn_rpc_resp_free(&r);
  amn_rpc_resp_init(&r);
  const kv garbage[] = {{":status", "200"}, {"grpc-status", "OK"}};
  resp_feed(&r, garbage, N(garbage));
  assert_true(r.malformed);
  assert_false(r.has_grpc_status);
  assert_int_equal(amn_rpc_resp_status(&r, &msg), AMN_STATUS_INTERNAL);
  amn_rpc_resp_free(&r);
}

static void test_resp_trailers_only(void **state) {
  (void)state;
  amn_rpc_resp r;
  amn_rpc_resp_init(&r);
  const kv h[] = {{":status", "200"}, {"content-type", "application/grpc"},
                  {"grpc-status", "12"}, {"grpc-message", "unknown method /x/y"}, {"x-a", "1"}};
  resp_feed(&r, h, N(h));
  const char *msg;
  assert_int_equal(amn_rpc_resp_status(&r, &msg), AMN_STATUS_UNIMPLEMENTED);
  assert_string_equal(msg, "unknown method /x/y");
  assert_int_equal(r.md_count, 1);
  amn_rpc_resp_free(&r);
}

static void test_resp_http_errors(void **state) {
  (void)state;
  static const struct { const char *st; amn_status_code code; } cases[] = {
      {"400", AMN_STATUS_INTERNAL},    {"401", AMN_STATUS_UNAUTHENTICATED},
      {"403", AMN_STATUS_PERMISSION_DENIED}, {"404", AMN_STATUS_UNIMPLEMENTED},
      {"429", AMN_STATUS_UNAVAILABLE}, {"502", AMN_STATUS_UNAVAILABLE},
      {"503", AMN_STATUS_UNAVAILABLE}, {"504", AMN_STATUS_UNAVAILABLE},
      {"500", AMN_STATUS_UNKNOWN},     {"302", AMN_STATUS_UNKNOWN},
  };
  for (size_t i = 0; i < N(cases); i++) {
    amn_rpc_resp r;
    amn_rpc_resp_init(&r);
    const kv h[] = {{":status", cases[i].st}, {"content-type", "text/html"}};
    resp_feed(&r, h, N(h));
    assert_false(r.content_type_ok);
    const char *msg = NULL;
    assert_int_equal(amn_rpc_resp_status(&r, &msg), cases[i].code);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "grpc-status"));
    amn_rpc_resp_free(&r);
  }
  /* grpc-status wins over a non-200 :status */
  amn_rpc_resp r;
  amn_rpc_resp_init(&r);
  const kv h[] = {{":status", "503"}, {"grpc-status", "8"}};
  resp_feed(&r, h, N(h));
  assert_int_equal(amn_rpc_resp_status(&r, NULL), AMN_STATUS_RESOURCE_EXHAUSTED);
  amn_rpc_resp_free(&r);
}

static void test_resp_malformed_and_limits(void **state) {
  (void)state;
  amn_rpc_resp r;
  /* :status in trailers, twice, bad values, other pseudo-headers */
  const kv cases[][2] = {
      {{":status", "200"}, {":status", "200"}},
      {{":status", "20"}, {"content-type", "application/grpc"}},
      {{":status", "abc"}, {"content-type", "application/grpc"}},
      {{":status", "200"}, {":path", "/x"}},
      {{":status", "200"}, {"x-bin", "!!"}},
      {{":status", "200"}, {"X-Up", "1"}},
  };
  for (size_t i = 0; i < N(cases); i++) {
    amn_rpc_resp_init(&r);
    resp_feed(&r, cases[i], 2);
    assert_true(r.malformed);
    assert_int_equal(r.md_count, 0);
    amn_rpc_resp_free(&r);
  }
  amn_rpc_resp_init(&r);
  const kv trl_status[] = {{":status", "200"}, {"content-type", "application/grpc"}, {":status", "200"}};
  resp_feed(&r, trl_status, N(trl_status));
  assert_true(r.malformed);
  amn_rpc_resp_free(&r);
  /* informational block, then the final one */
  amn_rpc_resp_init(&r);
  const kv info[] = {{":status", "100"}, {":status", "200"}, {"grpc-status", "0"}};
  resp_feed(&r, info, N(info));
  assert_false(r.malformed);
  assert_int_equal(r.http_status, 200);
  amn_rpc_resp_free(&r);

  /* metadata count limit: extra dropped, RESOURCE_EXHAUSTED */
  amn_rpc_resp_init(&r);
  resp_feed(&r, &(kv){":status", "200"}, 1);
  char keys[AMN_RPC_MAX_MD + 1][16];
  for (int i = 0; i <= AMN_RPC_MAX_MD; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    resp_feed(&r, &(kv){keys[i], "v"}, 1);
  }
  resp_feed(&r, &(kv){"grpc-status", "0"}, 1);
  assert_true(r.too_large);
  assert_int_equal(r.md_count, AMN_RPC_MAX_MD);
  const char *msg;
  assert_int_equal(amn_rpc_resp_status(&r, &msg), AMN_STATUS_RESOURCE_EXHAUSTED);
  amn_rpc_resp_free(&r);

  /* byte limit is per block: take_md resets it */
  size_t vlen = AMN_RPC_MAX_HEADER_BYTES / 2;
  char *big = malloc(vlen + 1);
  memset(big, 'b', vlen);
  big[vlen] = '\0';
  amn_rpc_resp_init(&r);
  resp_feed(&r, &(kv){"x-big", big}, 1);
  size_t n;
  amn_rpc_md *taken = amn_rpc_resp_take_md(&r, &n);
  assert_int_equal(n, 1);
  amn_rpc_md_free_array(taken, n);
  resp_feed(&r, &(kv){"x-big", big}, 1);
  assert_false(r.too_large);
  resp_feed(&r, &(kv){"x-big", big}, 1); /* same block: over */
  assert_true(r.too_large);
  assert_int_equal(r.md_count, 1);
  amn_rpc_resp_free(&r);
  free(big);
}

/* ---- building ---- */

static void expect_list(const amn_hdr_buf *b, const kv *want, size_t n) {
  assert_int_equal(b->n, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(b->h[i].nlen, strlen(want[i].k));
    assert_memory_equal(b->h[i].name, want[i].k, b->h[i].nlen);
    assert_int_equal(b->h[i].vlen, strlen(want[i].v));
    if (b->h[i].vlen) assert_memory_equal(b->h[i].value, want[i].v, b->h[i].vlen);
  }
}

static void test_build_request(void **state) {
  (void)state;
  amn_hdr_buf b;
  amn_hdr_buf_init(&b);
  char path[] = "/amaters.v1.AmateRS/Execute";
  const amn_md md[] = {{"x-id", (const uint8_t *)"42", 2}, {"sig-bin", (const uint8_t *)"\x00\xff", 2}};
  assert_int_equal(amn_rpc_build_request(&b, "https", "db.example:7878", path, 1500000000LL, md, 2), 0);
  path[1] = 'Z'; /* the list holds copies */
  const kv want[] = {{":method", "POST"}, {":scheme", "https"}, {":path", "/amaters.v1.AmateRS/Execute"},
                     {":authority", "db.example:7878"}, {"te", "trailers"},
                     {"content-type", "application/grpc"}, {"user-agent", "amaters-net/" AMN_VERSION},
                     {"grpc-timeout", "1500000u"}, {"x-id", "42"}, {"sig-bin", "AP8="}};
  expect_list(&b, want, N(want));
  amn_hdr_buf_free(&b);

  amn_hdr_buf_init(&b);
  assert_int_equal(amn_rpc_build_request(&b, "http", NULL, "/s/m", 0, NULL, 0), 0);
  const kv want2[] = {{":method", "POST"}, {":scheme", "http"}, {":path", "/s/m"}, {"te", "trailers"},
                      {"content-type", "application/grpc"}, {"user-agent", "amaters-net/" AMN_VERSION}};
  expect_list(&b, want2, N(want2));
  amn_hdr_buf_free(&b);

  /* the built request passes the server-side validation */
  amn_hdr_buf_init(&b);
  assert_int_equal(amn_rpc_build_request(&b, "https", "h", "/s/m", 7, md, 2), 0);
  amn_rpc_req r;
  amn_rpc_req_init(&r);
  for (size_t i = 0; i < b.n; i++) amn_rpc_req_header(&r, b.h[i].name, b.h[i].nlen, b.h[i].value, b.h[i].vlen);
  assert_true(amn_rpc_req_finish(&r).ok);
  assert_true(r.timeout_ns == 7);
  assert_int_equal(r.md_count, 2);
  assert_memory_equal(r.md_view[1].value, "\x00\xff", 2);
  amn_rpc_req_free(&r);
  amn_hdr_buf_free(&b);
}

static void test_build_response_and_trailers(void **state) {
  (void)state;
  amn_hdr_buf b;
  const amn_md md[] = {{"x-r", (const uint8_t *)"v", 1}};
  amn_hdr_buf_init(&b);
  assert_int_equal(amn_rpc_build_response(&b, md, 1), 0);
  const kv w1[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"x-r", "v"}};
  expect_list(&b, w1, N(w1));
  amn_hdr_buf_free(&b);

  amn_hdr_buf_init(&b);
  assert_int_equal(amn_rpc_build_trailers(&b, false, AMN_STATUS_OK, NULL, NULL, 0), 0);
  const kv w2[] = {{"grpc-status", "0"}};
  expect_list(&b, w2, N(w2));
  amn_hdr_buf_free(&b);

  amn_hdr_buf_init(&b);
  assert_int_equal(amn_rpc_build_trailers(&b, false, AMN_STATUS_UNAUTHENTICATED, "", md, 1), 0);
  const kv w3[] = {{"grpc-status", "16"}, {"x-r", "v"}};
  expect_list(&b, w3, N(w3));
  amn_hdr_buf_free(&b);

  amn_hdr_buf_init(&b);
  assert_int_equal(amn_rpc_build_trailers(&b, true, AMN_STATUS_INVALID_ARGUMENT, "bad 100% caf\xc3\xa9\n", md, 1), 0);
  const kv w4[] = {{":status", "200"}, {"content-type", "application/grpc"}, {"grpc-status", "3"},
                   {"grpc-message", "bad 100%25 caf%C3%A9%0A"}, {"x-r", "v"}};
  expect_list(&b, w4, N(w4));
  /* the client parses it back */
  amn_rpc_resp r;
  amn_rpc_resp_init(&r);
  for (size_t i = 0; i < b.n; i++) amn_rpc_resp_header(&r, b.h[i].name, b.h[i].nlen, b.h[i].value, b.h[i].vlen);
  const char *msg;
  assert_int_equal(amn_rpc_resp_status(&r, &msg), AMN_STATUS_INVALID_ARGUMENT);
  assert_string_equal(msg, "bad 100% caf\xc3\xa9\n");
  amn_rpc_resp_free(&r);
  amn_hdr_buf_free(&b);
}

static void test_hdr_add_md_invalid(void **state) {
  (void)state;
  amn_hdr_buf b;
  amn_hdr_buf_init(&b);
  assert_int_equal(amn_hdr_add(&b, "x-first", (const uint8_t *)"1", 1, false), 0);
  const char *bad_keys[] = {"", "X-Up", "a b", ":path", "k\xc3\xa9", "content-type", "te", "grpc-status",
                            "grpc-message", "grpc-timeout", "user-agent", "connection"};
  for (size_t i = 0; i < N(bad_keys); i++) {
    const amn_md md[] = {{"ok", (const uint8_t *)"v", 1}, {bad_keys[i], (const uint8_t *)"v", 1}};
    assert_int_equal(amn_hdr_add_md(&b, md, 2), AMN_EINVAL);
    assert_int_equal(b.n, 1); /* nothing appended */
  }
  const amn_md nullkey[] = {{NULL, (const uint8_t *)"v", 1}};
  assert_int_equal(amn_hdr_add_md(&b, nullkey, 1), AMN_EINVAL);
  const char *bad_vals[] = {"a\tb", "a\nb", "\x7f", "\xc3\xa9"};
  for (size_t i = 0; i < N(bad_vals); i++) {
    const amn_md md[] = {{"x-v", (const uint8_t *)bad_vals[i], strlen(bad_vals[i])}};
    assert_int_equal(amn_hdr_add_md(&b, md, 1), AMN_EINVAL);
  }
  /* the same bytes are fine in a -bin value; grpc-status-details-bin allowed */
  const amn_md okmd[] = {{"x-v-bin", (const uint8_t *)"\xc3\xa9", 2}, {"grpc-status-details-bin", (const uint8_t *)"\x08", 1},
                         {"empty", NULL, 0}};
  assert_int_equal(amn_hdr_add_md(&b, okmd, 3), 0);
  const kv want[] = {{"x-first", "1"}, {"x-v-bin", "w6k="}, {"grpc-status-details-bin", "CA=="}, {"empty", ""}};
  expect_list(&b, want, N(want));
  amn_hdr_buf_free(&b);
}

/* Too many fields -> ETOOBIG; values past the scratch go to separate heap
 * chunks and everything handed out earlier stays valid. */
static void test_hdr_buf_capacity(void **state) {
  (void)state;
  amn_hdr_buf b;
  amn_hdr_buf_init(&b);
  size_t cap = sizeof b.h / sizeof b.h[0];
  uint8_t *vals[AMN_RPC_MAX_MD + 12];
  size_t lens[AMN_RPC_MAX_MD + 12];
  for (size_t i = 0; i < cap; i++) {
    lens[i] = 100 + i * 97; /* totals far beyond the 8 KiB scratch */
    vals[i] = malloc(lens[i]);
    memset(vals[i], (int)('a' + i % 26), lens[i]);
    assert_int_equal(amn_hdr_add(&b, "x-v", vals[i], lens[i], true), 0);
  }
  assert_non_null(b.heap);
  assert_int_equal(amn_hdr_add(&b, "x-v", (const uint8_t *)"v", 1, true), AMN_ETOOBIG);
  assert_int_equal(amn_hdr_add(&b, "x-v", (const uint8_t *)"v", 1, false), AMN_ETOOBIG);
  const amn_md md[] = {{"x-bin", (const uint8_t *)"v", 1}};
  assert_int_equal(amn_hdr_add_md(&b, md, 1), AMN_ETOOBIG);
  for (size_t i = 0; i < cap; i++) {
    memset(vals[i], 0, lens[i]); /* copies are independent of the source */
    assert_int_equal(b.h[i].vlen, lens[i]);
    for (size_t j = 0; j < lens[i]; j++) assert_int_equal(b.h[i].value[j], 'a' + i % 26);
    assert_memory_equal(b.h[i].name, "x-v", 3);
    free(vals[i]);
  }
  amn_hdr_buf_free(&b);

  /* metadata needing more room than the whole scratch */
  amn_hdr_buf_init(&b);
  size_t blen = 20000;
  uint8_t *bin = malloc(blen);
  for (size_t i = 0; i < blen; i++) bin[i] = (uint8_t)(i * 7);
  const amn_md big[] = {{"a-bin", bin, blen}, {"b-bin", bin, blen}, {"c", (const uint8_t *)"x", 1}};
  assert_int_equal(amn_rpc_build_trailers(&b, true, AMN_STATUS_OK, "done", big, 3), 0);
  assert_int_equal(b.n, 7);
  uint8_t *dec = malloc(blen + 3);
  for (size_t k = 4; k < 6; k++) {
    assert_int_equal(b.h[k].vlen, (blen + 2) / 3 * 4);
    assert_int_equal(amn_b64_decode((const char *)b.h[k].value, b.h[k].vlen, dec), (long)blen);
    assert_memory_equal(dec, bin, blen);
  }
  assert_memory_equal(b.h[6].value, "x", 1);
  free(dec);
  free(bin);
  amn_hdr_buf_free(&b);
  assert_null(b.heap);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_req_ok),
      cmocka_unit_test(test_req_verdicts),
      cmocka_unit_test(test_req_metadata),
      cmocka_unit_test(test_req_limits),
      cmocka_unit_test(test_resp_headers_and_trailers),
      cmocka_unit_test(test_resp_trailers_only),
      cmocka_unit_test(test_resp_http_errors),
      cmocka_unit_test(test_resp_malformed_and_limits),
      cmocka_unit_test(test_build_request),
      cmocka_unit_test(test_build_response_and_trailers),
      cmocka_unit_test(test_hdr_add_md_invalid),
      cmocka_unit_test(test_hdr_buf_capacity),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
