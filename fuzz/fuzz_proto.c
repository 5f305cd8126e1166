/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Protobuf decoding of the messages (src/util/proto.c: amn_pair_decode for
 * QueryRequest / QueryResponse) and of health requests (protobuf-c
 * generated grpc.health.v1.HealthCheckRequest, as the server's Health
 * service unpacks them). Input: one message. Invariants:
 *  - an accepted message's views lie inside the input; re-encoding them
 *    with amn_pair_encode gives amn_pair_encoded_size bytes, no more than
 *    the input, byte-identical to protobuf-c's packing of the same
 *    QueryRequest, and decodes to the same fields;
 *  - differential: when both amn_pair_decode and protobuf-c's
 *    QueryRequest / QueryResponse unpacking accept, the fields agree; when
 *    both accept a HealthCheckRequest, field 1 is the service;
 *  - the service of an accepted HealthCheckRequest packs and unpacks to
 *    the same service.
 */
#include "amaters.pb-c.h"
#include "amn/proto.h"
#include "fuzz_common.h"
#include "health.pb-c.h"

static bool same(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
  return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void check_pair(const uint8_t *data, size_t size, const amn_pair_view *v) {
  FUZZ_CHECK(v->f1_len == 0 || (v->f1 >= data && v->f1 + v->f1_len <= data + size));
  FUZZ_CHECK(v->f2_len == 0 || (v->f2 >= data && v->f2 + v->f2_len <= data + size));
  size_t n = amn_pair_encoded_size(v->f1_len, v->f2_len);
  FUZZ_CHECK(n <= size);
  uint8_t *buf = malloc(n ? n : 1);
  FUZZ_CHECK(buf != NULL);
  FUZZ_CHECK(amn_pair_encode(buf, v->f1, v->f1_len, v->f2, v->f2_len) == n);
  amn_pair_view w;
  FUZZ_CHECK(amn_pair_decode(buf, n, &w) == 0);
  FUZZ_CHECK(same(w.f1, w.f1_len, v->f1, v->f1_len) && same(w.f2, w.f2_len, v->f2, v->f2_len));

  Amaters__V1__QueryRequest q = AMATERS__V1__QUERY_REQUEST__INIT;
  q.query_bytes.data = (uint8_t *)v->f1;
  q.query_bytes.len = v->f1_len;
  q.client_signature.data = (uint8_t *)v->f2;
  q.client_signature.len = v->f2_len;
  FUZZ_CHECK(amaters__v1__query_request__get_packed_size(&q) == n);
  uint8_t *pb = malloc(n ? n : 1);
  FUZZ_CHECK(pb != NULL);
  FUZZ_CHECK(amaters__v1__query_request__pack(&q, pb) == n);
  FUZZ_CHECK(n == 0 || memcmp(pb, buf, n) == 0);
  free(pb);
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  amn_pair_view v;
  int rc = amn_pair_decode(data, size, &v);
  FUZZ_CHECK(rc == 0 || rc == AMN_EPROTO);
  if (rc == 0) check_pair(data, size, &v);

  Amaters__V1__QueryRequest *q = amaters__v1__query_request__unpack(NULL, size, data);
  if (q && rc == 0)
    FUZZ_CHECK(same(q->query_bytes.data, q->query_bytes.len, v.f1, v.f1_len) &&
               same(q->client_signature.data, q->client_signature.len, v.f2, v.f2_len));
  if (q) amaters__v1__query_request__free_unpacked(q, NULL);
  Amaters__V1__QueryResponse *r = amaters__v1__query_response__unpack(NULL, size, data);
  if (r && rc == 0)
    FUZZ_CHECK(same(r->result_bytes.data, r->result_bytes.len, v.f1, v.f1_len) &&
               same(r->server_proof.data, r->server_proof.len, v.f2, v.f2_len));
  if (r) amaters__v1__query_response__free_unpacked(r, NULL);

  Grpc__Health__V1__HealthCheckRequest *h = grpc__health__v1__health_check_request__unpack(NULL, size, data);
  if (h) {
    FUZZ_CHECK(h->service != NULL);
    size_t sl = strlen(h->service);
    /* a service containing NUL reads as its first part, as health.c reads it */
    if (rc == 0) FUZZ_CHECK(sl <= v.f1_len && (sl == 0 || memcmp(h->service, v.f1, sl) == 0));
    /* packed again from its service alone: protobuf-c re-packs unknown
     * fields verbatim, even ones it should have refused (field number 0,
     * see docs/FUZZING.md), so those are left out */
    Grpc__Health__V1__HealthCheckRequest m = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    m.service = h->service;
    size_t n = grpc__health__v1__health_check_request__get_packed_size(&m);
    uint8_t *buf = malloc(n ? n : 1);
    FUZZ_CHECK(buf != NULL);
    FUZZ_CHECK(grpc__health__v1__health_check_request__pack(&m, buf) == n);
    Grpc__Health__V1__HealthCheckRequest *h2 = grpc__health__v1__health_check_request__unpack(NULL, n, buf);
    FUZZ_CHECK(h2 != NULL && strcmp(h2->service, h->service) == 0);
    grpc__health__v1__health_check_request__free_unpacked(h2, NULL);
    grpc__health__v1__health_check_request__free_unpacked(h, NULL);
    free(buf);
  }
  return 0;
}
