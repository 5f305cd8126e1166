/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Server reflection (src/server/reflection_index.c): the answer to one
 * ServerReflectionRequest, peer input, over the built-in descriptors; and
 * amn_pb_next, the protobuf field reader it and amaters-cli use. Input: one
 * request message. Invariants:
 *  - amn_refl_answer returns 0 or AMN_EINVAL, AMN_EINVAL exactly when
 *    protobuf-c refuses the request or one of its strings is not UTF-8;
 *  - an answer unpacks as a ServerReflectionResponse with exactly one
 *    message_response; it echoes the request's known fields (host and the
 *    message_request, no unknown field of the peer's) and its host;
 *  - what is answered matches what is asked: list_services gives the
 *    services passed in, a file_descriptor_response at least one file, each
 *    a complete protobuf message whose name (field 1) is a built-in file, the
 *    first of them the one asked for by name; an error is NOT_FOUND, or
 *    INVALID_ARGUMENT for a request without message_request;
 *  - amn_pb_next moves forward within the input on every field and ends
 *    either at the end (0) or with AMN_EPROTO.
 */
#include "amn/common.h"
#include "amn/proto.h"
#include "fuzz_common.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "server/reflection.h"

static amn_refl *g_refl;
static const char *const g_services[] = {"amaters.v1.AmateRS", "grpc.health.v1.Health"};
static const char *const g_files[] = {"amaters.proto", "health.proto", "grpc/reflection/v1/reflection.proto",
                                      "grpc/reflection/v1alpha/reflection.proto"};

/* The name of a serialized FileDescriptorProto, which must parse whole. */
static void check_file(const ProtobufCBinaryData *d, const char *want) {
  size_t pos = 0;
  amn_pb_field f;
  int rc;
  const uint8_t *name = NULL;
  size_t nlen = 0;
  while ((rc = amn_pb_next(d->data, d->len, &pos, &f)) > 0)
    if (f.number == 1 && f.wire_type == 2) name = f.data, nlen = f.len;
  FUZZ_CHECK(rc == 0 && name != NULL);
  bool known = false;
  for (size_t i = 0; i < sizeof g_files / sizeof g_files[0]; i++)
    known |= strlen(g_files[i]) == nlen && memcmp(g_files[i], name, nlen) == 0;
  FUZZ_CHECK(known);
  if (want) FUZZ_CHECK(strlen(want) == nlen && memcmp(want, name, nlen) == 0);
}

static void walk_fields(const uint8_t *data, size_t size) {
  size_t pos = 0, last = 0;
  amn_pb_field f;
  int rc;
  while ((rc = amn_pb_next(data, size, &pos, &f)) > 0) {
    FUZZ_CHECK(pos > last && pos <= size);
    FUZZ_CHECK(f.number >= 1 && f.number <= 0x1fffffff);
    FUZZ_CHECK(f.wire_type != 2 || (f.data >= data && f.data + f.len <= data + pos));
    last = pos;
  }
  FUZZ_CHECK(rc == 0 ? pos == size : rc == AMN_EPROTO);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_refl) FUZZ_CHECK(amn_refl_new_builtin(&g_refl) == 0);
  walk_fields(data, size);

  uint8_t *out = NULL;
  size_t outlen = 0;
  int rc = amn_refl_answer(g_refl, g_services, 2, data, size, &out, &outlen);
  FUZZ_CHECK(rc == 0 || rc == AMN_EINVAL);
  Grpc__Reflection__V1__ServerReflectionRequest *q =
      grpc__reflection__v1__server_reflection_request__unpack(NULL, size, data);
  if (rc == AMN_EINVAL) {
    FUZZ_CHECK(out == NULL && outlen == 0);
    if (q) grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
    return 0;
  }
  FUZZ_CHECK(q != NULL && out != NULL);
  Grpc__Reflection__V1__ServerReflectionResponse *a =
      grpc__reflection__v1__server_reflection_response__unpack(NULL, outlen, out);
  FUZZ_CHECK(a != NULL && a->original_request != NULL);
  FUZZ_CHECK(strcmp(a->valid_host, q->host) == 0);
  const Grpc__Reflection__V1__ServerReflectionRequest *e = a->original_request;
  FUZZ_CHECK(e->base.n_unknown_fields == 0 && strcmp(e->host, q->host) == 0);
  FUZZ_CHECK(e->message_request_case == q->message_request_case);
  switch (q->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    FUZZ_CHECK(strcmp(e->file_by_filename, q->file_by_filename) == 0);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    FUZZ_CHECK(strcmp(e->file_containing_symbol, q->file_containing_symbol) == 0);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
    FUZZ_CHECK(e->file_containing_extension && e->file_containing_extension->base.n_unknown_fields == 0);
    FUZZ_CHECK(strcmp(e->file_containing_extension->containing_type, q->file_containing_extension->containing_type) == 0);
    FUZZ_CHECK(e->file_containing_extension->extension_number == q->file_containing_extension->extension_number);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
    FUZZ_CHECK(strcmp(e->all_extension_numbers_of_type, q->all_extension_numbers_of_type) == 0);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
    FUZZ_CHECK(strcmp(e->list_services, q->list_services) == 0);
    break;
  default: break;
  }

  switch (a->message_response_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE: {
    Grpc__Reflection__V1__FileDescriptorResponse *r = a->file_descriptor_response;
    FUZZ_CHECK(r->n_file_descriptor_proto >= 1 && r->n_file_descriptor_proto <= 4);
    const char *want = q->message_request_case ==
                               GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME
                           ? q->file_by_filename
                           : NULL;
    for (size_t i = 0; i < r->n_file_descriptor_proto; i++) check_file(&r->file_descriptor_proto[i], i ? NULL : want);
    break;
  }
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE:
    FUZZ_CHECK(q->message_request_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES);
    FUZZ_CHECK(a->list_services_response->n_service == 2);
    for (size_t i = 0; i < 2; i++) FUZZ_CHECK(strcmp(a->list_services_response->service[i]->name, g_services[i]) == 0);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE:
    FUZZ_CHECK(q->message_request_case ==
               GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE);
    FUZZ_CHECK(a->all_extension_numbers_response->n_extension_number == 0); /* the built-in files extend nothing */
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE:
    if (q->message_request_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET)
      FUZZ_CHECK(a->error_response->error_code == AMN_STATUS_INVALID_ARGUMENT);
    else
      FUZZ_CHECK(a->error_response->error_code == AMN_STATUS_NOT_FOUND);
    break;
  default:
    FUZZ_CHECK(!"no message_response");
  }
  grpc__reflection__v1__server_reflection_response__free_unpacked(a, NULL);
  grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
  free(out);
  return 0;
}
