/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The admin listener's request routing (src/server/admin_req.c). Input:
 * the bytes a client sent (up to the listener's limit). Invariants:
 *  - the route is one of the enumeration's; HEAD only with a GET/HEAD route;
 *  - the judgement depends only on the first line: appending bytes after a
 *    complete request line changes nothing;
 *  - METRICS/HEALTHZ only for a request line with the method GET or HEAD,
 *    that target and the version HTTP/1.0 or HTTP/1.1;
 *  - amn_admin_request_complete agrees with a plain search for an empty line.
 */
#include "fuzz_common.h"
#include "server/admin_req.h"

static bool plain_complete(const char *p, size_t n) {
  for (size_t i = 0; i + 1 < n; i++) {
    if (p[i] == '\n' && p[i + 1] == '\n') return true;
    if (i + 3 < n && p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') return true;
  }
  return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > AMN_ADMIN_REQ_MAX) size = AMN_ADMIN_REQ_MAX;
  char *req = malloc(size ? size : 1); /* exact size: ASan sees any read past it */
  FUZZ_CHECK(req != NULL);
  memcpy(req, data, size);
  bool head = false;
  amn_admin_route r = amn_admin_route_request(req, size, &head);
  FUZZ_CHECK(r >= AMN_ADMIN_INCOMPLETE && r <= AMN_ADMIN_NOT_FOUND);
  if (head) FUZZ_CHECK(r == AMN_ADMIN_METRICS || r == AMN_ADMIN_HEALTHZ || r == AMN_ADMIN_NOT_FOUND);
  if (r == AMN_ADMIN_METRICS || r == AMN_ADMIN_HEALTHZ) {
    size_t lead = 0; /* the method, after any blanks */
    while (lead < size && (req[lead] == ' ' || req[lead] == '\t')) lead++;
    const char *m = req + lead;
    size_t left = size - lead;
    FUZZ_CHECK((left > 4 && memcmp(m, "GET", 3) == 0 && (m[3] == ' ' || m[3] == '\t')) ||
               (left > 5 && memcmp(m, "HEAD", 4) == 0 && (m[4] == ' ' || m[4] == '\t')));
    FUZZ_CHECK(memmem(req, size, "HTTP/1.1", 8) != NULL || memmem(req, size, "HTTP/1.0", 8) != NULL);
    const char *want = r == AMN_ADMIN_METRICS ? "/metrics" : "/healthz";
    FUZZ_CHECK(memmem(req, size, want, strlen(want)) != NULL);
  }
  FUZZ_CHECK(amn_admin_request_complete(req, size) == plain_complete(req, size));
  size_t eol = 0;
  while (eol < size && req[eol] != '\r' && req[eol] != '\n') eol++;
  if (eol < size && size < AMN_ADMIN_REQ_MAX) { /* a complete line: more bytes after it change nothing */
    char *more = malloc(size + 7);
    FUZZ_CHECK(more != NULL);
    memcpy(more, req, size);
    memcpy(more + size, "\r\nX: y\n", 7);
    bool head2 = false;
    FUZZ_CHECK(amn_admin_route_request(more, size + 7, &head2) == r && head2 == head);
    free(more);
  }
  free(req);
  return 0;
}
