/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Server reflection without I/O (src/server/reflection_index.c): the index
 * of the built-in descriptors and of a FileDescriptorSet written here by
 * hand (nested types, enums, a dependency chain, extensions), the answers
 * read back with protobuf-c's generated grpc.reflection.v1 code, malformed
 * requests and sets, and amn_pb_next. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "amn/common.h"
#include "amn/proto.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "server/reflection.h"

typedef Grpc__Reflection__V1__ServerReflectionRequest Req;
typedef Grpc__Reflection__V1__ServerReflectionResponse Resp;

/* ---- a tiny protobuf writer for the test's descriptor set ---- */
typedef struct buf {
  uint8_t d[4096];
  size_t n;
} buf;

static void put_varint(buf *b, uint64_t v) {
  while (v >= 0x80) b->d[b->n++] = (uint8_t)(v | 0x80), v >>= 7;
  b->d[b->n++] = (uint8_t)v;
}
static void put_bytes(buf *b, uint32_t field, const void *p, size_t n) {
  put_varint(b, field << 3 | 2);
  put_varint(b, n);
  memcpy(b->d + b->n, p, n);
  b->n += n;
}
static void put_str(buf *b, uint32_t field, const char *s) { put_bytes(b, field, s, strlen(s)); }
static void put_msg(buf *b, uint32_t field, const buf *m) { put_bytes(b, field, m->d, m->n); }
static void put_int(buf *b, uint32_t field, uint64_t v) {
  put_varint(b, field << 3);
  put_varint(b, v);
}

/* a.proto (package a): message A { message Inner { enum E { X = 0; } } ; int32 id = 1; }
 * b.proto (package b.c, depends on a.proto): service S { rpc M }, enum Top { T = 0; },
 *   extend a.A { int32 ext = 100; }, message B { extend a.A { int32 inner_ext = 101; } }
 * c.proto (no package, depends on b.proto): message C {} */
static buf g_set;

static void build_set(void) {
  buf e = {0}, ev = {0}, inner = {0}, a = {0}, f = {0}, fa = {0};
  put_str(&ev, 1, "X");
  put_int(&ev, 2, 0);
  put_str(&e, 1, "E");
  put_msg(&e, 2, &ev);
  put_str(&inner, 1, "Inner");
  put_msg(&inner, 4, &e);
  put_str(&f, 1, "id");
  put_int(&f, 3, 1);
  put_str(&a, 1, "A");
  put_msg(&a, 2, &f);
  put_msg(&a, 3, &inner);
  put_str(&fa, 1, "a.proto");
  put_str(&fa, 2, "a");
  put_msg(&fa, 4, &a);

  buf m = {0}, s = {0}, top = {0}, tv = {0}, x1 = {0}, x2 = {0}, bm = {0}, fb = {0};
  put_str(&m, 1, "M");
  put_str(&m, 2, ".a.A");
  put_str(&m, 3, ".a.A");
  put_str(&s, 1, "S");
  put_msg(&s, 2, &m);
  put_str(&tv, 1, "T");
  put_str(&top, 1, "Top");
  put_msg(&top, 2, &tv);
  put_str(&x1, 1, "ext");
  put_str(&x1, 2, ".a.A");
  put_int(&x1, 3, 100);
  put_str(&x2, 1, "inner_ext");
  put_str(&x2, 2, ".a.A");
  put_int(&x2, 3, 101);
  put_str(&bm, 1, "B");
  put_msg(&bm, 6, &x2);
  put_str(&fb, 1, "b.proto");
  put_str(&fb, 2, "b.c");
  put_str(&fb, 3, "a.proto");
  put_msg(&fb, 4, &bm);
  put_msg(&fb, 5, &top);
  put_msg(&fb, 6, &s);
  put_msg(&fb, 7, &x1);

  buf cm = {0}, fc = {0};
  put_str(&cm, 1, "C");
  put_str(&fc, 1, "c.proto");
  put_str(&fc, 3, "b.proto");
  put_msg(&fc, 4, &cm);

  memset(&g_set, 0, sizeof g_set);
  put_msg(&g_set, 1, &fa);
  put_msg(&g_set, 1, &fb);
  put_msg(&g_set, 1, &fc);
}

static const char *const g_services[] = {"b.c.S", "grpc.health.v1.Health"};

/* Packs `q`, answers it, unpacks the answer (the caller frees both). */
static Resp *ask(const amn_refl *r, Req *q) {
  size_t n = grpc__reflection__v1__server_reflection_request__get_packed_size(q);
  uint8_t *p = malloc(n + 1);
  grpc__reflection__v1__server_reflection_request__pack(q, p);
  uint8_t *out;
  size_t outlen;
  assert_int_equal(amn_refl_answer(r, g_services, 2, p, n, &out, &outlen), 0);
  free(p);
  Resp *a = grpc__reflection__v1__server_reflection_response__unpack(NULL, outlen, out);
  assert_non_null(a);
  free(out);
  /* every answer echoes its request */
  assert_non_null(a->original_request);
  assert_int_equal(a->original_request->message_request_case, q->message_request_case);
  assert_string_equal(a->valid_host, q->host);
  return a;
}

static Resp *ask_symbol(const amn_refl *r, const char *sym) {
  Req q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
  q.file_containing_symbol = (char *)sym;
  return ask(r, &q);
}

/* The names (field 1) of the files of a file_descriptor_response, joined by ' '. */
static void file_names(const Resp *a, char *out, size_t cap) {
  assert_int_equal(a->message_response_case,
                   GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
  out[0] = 0;
  for (size_t i = 0; i < a->file_descriptor_response->n_file_descriptor_proto; i++) {
    ProtobufCBinaryData d = a->file_descriptor_response->file_descriptor_proto[i];
    size_t pos = 0;
    amn_pb_field f;
    while (amn_pb_next(d.data, d.len, &pos, &f) > 0)
      if (f.number == 1 && f.wire_type == 2)
        snprintf(out + strlen(out), cap - strlen(out), "%s%.*s", out[0] ? " " : "", (int)f.len, (const char *)f.data);
  }
}

static void expect_not_found(Resp *a) {
  assert_int_equal(a->message_response_case,
                   GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
  assert_int_equal(a->error_response->error_code, AMN_STATUS_NOT_FOUND);
  assert_true(strlen(a->error_response->error_message) > 0);
}

static void test_symbols_and_dependencies(void **state) {
  (void)state;
  build_set();
  amn_refl *r;
  assert_int_equal(amn_refl_new(&r, g_set.d, g_set.n), 0);
  static const struct {
    const char *sym, *files;
  } cases[] = {
      {"a.A", "a.proto"},                  {".a.A", "a.proto"},                      {"a.A.id", "a.proto"},
      {"a.A.Inner", "a.proto"},            {"a.A.Inner.E", "a.proto"},               {"a.A.Inner.X", "a.proto"},
      {"b.c.S", "b.proto a.proto"},        {"b.c.S.M", "b.proto a.proto"},           {"b.c.Top", "b.proto a.proto"},
      {"b.c.T", "b.proto a.proto"},        {"b.c.ext", "b.proto a.proto"},           {"b.c.B.inner_ext", "b.proto a.proto"},
      {"C", "c.proto b.proto a.proto"},
  };
  char names[256];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Resp *a = ask_symbol(r, cases[i].sym);
    file_names(a, names, sizeof names);
    assert_string_equal(names, cases[i].files);
    grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  }
  static const char *const unknown[] = {"a", "a.B", "a.A.Inner.Y", "b.c.S.N", "b.c", "A", "", ".", "a.\xc3\xa9", "\xf0\x9f\x98\x80"};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    Resp *a = ask_symbol(r, unknown[i]);
    expect_not_found(a);
    grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  }
  amn_refl_free(r);
}

static void test_files_extensions_services(void **state) {
  (void)state;
  build_set();
  amn_refl *r;
  assert_int_equal(amn_refl_new(&r, g_set.d, g_set.n), 0);
  char names[256];
  Req q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  q.host = "example";
  q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
  q.file_by_filename = "b.proto";
  Resp *a = ask(r, &q);
  file_names(a, names, sizeof names);
  assert_string_equal(names, "b.proto a.proto");
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  q.file_by_filename = "d.proto";
  expect_not_found(a = ask(r, &q));
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);

  Grpc__Reflection__V1__ExtensionRequest x = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
  q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
  q.file_containing_extension = &x;
  x.containing_type = "a.A";
  x.extension_number = 101;
  file_names(a = ask(r, &q), names, sizeof names);
  assert_string_equal(names, "b.proto a.proto");
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  x.extension_number = 102;
  expect_not_found(a = ask(r, &q));
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);

  q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
  q.all_extension_numbers_of_type = ".a.A";
  a = ask(r, &q);
  assert_int_equal(a->message_response_case,
                   GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
  assert_string_equal(a->all_extension_numbers_response->base_type_name, "a.A");
  assert_int_equal(a->all_extension_numbers_response->n_extension_number, 2);
  assert_int_equal(a->all_extension_numbers_response->extension_number[0], 101);
  assert_int_equal(a->all_extension_numbers_response->extension_number[1], 100);
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  q.all_extension_numbers_of_type = "b.c.Top"; /* an enum, not a message */
  expect_not_found(a = ask(r, &q));
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);

  q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
  q.list_services = "*";
  a = ask(r, &q);
  assert_int_equal(a->message_response_case,
                   GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
  assert_int_equal(a->list_services_response->n_service, 2);
  assert_string_equal(a->list_services_response->service[0]->name, "b.c.S");
  assert_string_equal(a->list_services_response->service[1]->name, "grpc.health.v1.Health");
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);

  q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET;
  a = ask(r, &q);
  assert_int_equal(a->message_response_case,
                   GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
  assert_int_equal(a->error_response->error_code, AMN_STATUS_INVALID_ARGUMENT);
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  amn_refl_free(r);
}

static void test_builtin(void **state) {
  (void)state;
  amn_refl *r;
  assert_int_equal(amn_refl_new_builtin(&r), 0);
  char names[256];
  static const struct {
    const char *sym, *file;
  } cases[] = {
      {"amaters.v1.AmateRS", "amaters.proto"},
      {"amaters.v1.AmateRS.ExecuteStream", "amaters.proto"},
      {"amaters.v1.QueryResponse.server_proof", "amaters.proto"},
      {"grpc.health.v1.Health.Watch", "health.proto"},
      {"grpc.health.v1.HealthCheckResponse.ServingStatus", "health.proto"},
      {"grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN", "health.proto"},
      {"grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"},
      {"grpc.reflection.v1alpha.ServerReflectionRequest.list_services", "grpc/reflection/v1alpha/reflection.proto"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Resp *a = ask_symbol(r, cases[i].sym);
    file_names(a, names, sizeof names);
    assert_string_equal(names, cases[i].file);
    grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  }
  Resp *a = ask_symbol(r, "amaters.v1.Nope");
  expect_not_found(a);
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  amn_refl_free(r);
}

static void test_malformed(void **state) {
  (void)state;
  amn_refl *r;
  assert_int_equal(amn_refl_new_builtin(&r), 0);
  static const struct {
    const char *bytes;
    size_t len;
  } bad[] = {
      {"\x22\x05" "ab", 4},     /* file_containing_symbol longer than the input */
      {"\x22", 1},              /* a tag without its length */
      {"\x07", 1},              /* field number 0 */
      {"\x3b", 1},              /* a group */
      {"\x2a\x02\x08\xff", 4},  /* an ExtensionRequest with a truncated varint */
      {"\x22\x02\xc3\x28", 4},  /* a string that is not UTF-8 */
      {"\x0a\x03\xed\xa0\x80", 5},  /* a host with a surrogate */
      {"\x3a\x02\xc0\xaf", 4},  /* list_services, an overlong '/' */
      {"\x1a\x04\xf4\x90\x80\x80", 6},  /* file_by_filename above U+10FFFF */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t *out = (uint8_t *)"x";
    size_t n = 1;
    assert_int_equal(amn_refl_answer(r, NULL, 0, (const uint8_t *)bad[i].bytes, bad[i].len, &out, &n), AMN_EINVAL);
    assert_null(out);
    assert_int_equal(n, 0);
  }

  /* unknown fields of the request (a field number 0 and non-minimal varints too, which protobuf-c keeps) are
   * not echoed back (fuzz/corpus/reflection/unknown-fields-echoed) */
  static const uint8_t unknown_fields[] = {0x68, 0x22, 0x12, 0x0a, 0x61, 0x01, 0x61, 0x74, 0x2e, 0x65, 0x40, 0x72,
                                           0x73, 0xd2, 0x81, 0x00, 0x00, 0x00, 0x00, 0xd5, 0x8c, 0xd1, 0xb6, 0x53};
  uint8_t *out;
  size_t outlen;
  assert_int_equal(amn_refl_answer(r, NULL, 0, unknown_fields, sizeof unknown_fields, &out, &outlen), 0);
  Resp *echoed = grpc__reflection__v1__server_reflection_response__unpack(NULL, outlen, out);
  assert_non_null(echoed);
  assert_int_equal(echoed->original_request->base.n_unknown_fields, 0);
  assert_int_equal(echoed->original_request->message_request_case,
                   GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET);
  assert_int_equal(echoed->error_response->error_code, AMN_STATUS_INVALID_ARGUMENT);
  grpc__reflection__v1__server_reflection_response__free_unpacked(echoed, NULL);
  free(out);
  amn_refl_free(r);

  /* sets: truncated at every length, a file without a name, a nameless message */
  build_set();
  for (size_t cut = 1; cut < g_set.n; cut++) {
    int rc = amn_refl_new(&r, g_set.d, cut);
    assert_true(rc == 0 || rc == AMN_EINVAL);
    if (rc == 0) amn_refl_free(r);
    else assert_null(r);
  }
  buf f = {0}, set = {0}, m = {0};
  put_str(&f, 2, "pkg");
  put_msg(&set, 1, &f);
  assert_int_equal(amn_refl_new(&r, set.d, set.n), AMN_EINVAL);
  put_int(&m, 2, 1);
  memset(&f, 0, sizeof f);
  memset(&set, 0, sizeof set);
  put_str(&f, 1, "x.proto");
  put_msg(&f, 4, &m);
  put_msg(&set, 1, &f);
  assert_int_equal(amn_refl_new(&r, set.d, set.n), AMN_EINVAL);
  assert_int_equal(amn_refl_new(&r, NULL, 0), 0); /* empty: knows nothing */
  Resp *a = ask_symbol(r, "a.A");
  expect_not_found(a);
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  amn_refl_free(r);
}

static void test_pb_next(void **state) {
  (void)state;
  static const uint8_t msg[] = {0x08, 0x96, 0x01, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x1a, 0x02, 'h', 'i', 0x25, 9, 0, 0, 0};
  size_t pos = 0;
  amn_pb_field f;
  assert_int_equal(amn_pb_next(msg, sizeof msg, &pos, &f), 1);
  assert_true(f.number == 1 && f.wire_type == 0 && f.varint == 150);
  assert_int_equal(amn_pb_next(msg, sizeof msg, &pos, &f), 1);
  assert_true(f.number == 2 && f.wire_type == 1 && f.varint == 0x0807060504030201ull);
  assert_int_equal(amn_pb_next(msg, sizeof msg, &pos, &f), 1);
  assert_true(f.number == 3 && f.wire_type == 2 && f.len == 2 && memcmp(f.data, "hi", 2) == 0);
  assert_int_equal(amn_pb_next(msg, sizeof msg, &pos, &f), 1);
  assert_true(f.number == 4 && f.wire_type == 5 && f.varint == 9);
  assert_int_equal(amn_pb_next(msg, sizeof msg, &pos, &f), 0);
  assert_int_equal(pos, sizeof msg);
  /* each cut of the message that ends inside a field is malformed there */
  static const size_t ends[] = {3, 12, 16, 21};
  for (size_t cut = 0; cut < sizeof msg; cut++) {
    size_t p = 0, k = 0;
    int rc;
    while ((rc = amn_pb_next(msg, cut, &p, &f)) > 0) k++;
    bool at_end = false;
    for (size_t i = 0; i < 4; i++) at_end |= cut == ends[i] || cut == 0;
    assert_int_equal(rc, at_end ? 0 : AMN_EPROTO);
    assert_true(p <= cut);
  }
  static const uint8_t too_long[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  pos = 0;
  assert_int_equal(amn_pb_next(too_long, sizeof too_long, &pos, &f), AMN_EPROTO);
  static const uint8_t big_field[] = {0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00}; /* field 2^29-1: the largest */
  pos = 0;
  assert_int_equal(amn_pb_next(big_field, sizeof big_field, &pos, &f), 1);
  assert_int_equal(f.number, 0x1fffffff);
  static const uint8_t over[] = {0x80, 0x80, 0x80, 0x80, 0x10, 0x00}; /* field 2^29 */
  pos = 0;
  assert_int_equal(amn_pb_next(over, sizeof over, &pos, &f), AMN_EPROTO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_symbols_and_dependencies),
      cmocka_unit_test(test_files_extensions_services),
      cmocka_unit_test(test_builtin),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_pb_next),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
