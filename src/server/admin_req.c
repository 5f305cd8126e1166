/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The admin listener's request line (see admin_req.h). */
#include "server/admin_req.h"

#include <string.h>

/* Next token of [*p, end) delimited by spaces or tabs: its start and length. */
static bool next_token(const char **p, const char *end, const char **tok, size_t *tlen) {
  while (*p < end && (**p == ' ' || **p == '\t')) (*p)++;
  *tok = *p;
  while (*p < end && **p != ' ' && **p != '\t') (*p)++;
  *tlen = (size_t)(*p - *tok);
  return *tlen > 0;
}

static bool is(const char *tok, size_t n, const char *lit) { return n == strlen(lit) && memcmp(tok, lit, n) == 0; }

amn_admin_route amn_admin_route_request(const char *req, size_t len, bool *head) {
  *head = false;
  size_t eol = 0;
  while (eol < len && req[eol] != '\r' && req[eol] != '\n') eol++;
  if (eol == len) return len >= AMN_ADMIN_REQ_MAX ? AMN_ADMIN_TOO_LARGE : AMN_ADMIN_INCOMPLETE;
  if (memchr(req, 0, eol)) return AMN_ADMIN_BAD_REQUEST;
  const char *p = req, *end = req + eol, *method, *target, *version, *extra;
  size_t ml, tl, vl, xl;
  if (!next_token(&p, end, &method, &ml) || !next_token(&p, end, &target, &tl) ||
      !next_token(&p, end, &version, &vl) || next_token(&p, end, &extra, &xl))
    return AMN_ADMIN_BAD_REQUEST;
  if (ml > 15 || tl > 255 || !(is(version, vl, "HTTP/1.1") || is(version, vl, "HTTP/1.0")))
    return AMN_ADMIN_BAD_REQUEST;
  *head = is(method, ml, "HEAD");
  if (!*head && !is(method, ml, "GET")) return AMN_ADMIN_BAD_METHOD;
  const char *q = memchr(target, '?', tl);
  if (q) tl = (size_t)(q - target);
  if (is(target, tl, "/metrics")) return AMN_ADMIN_METRICS;
  if (is(target, tl, "/healthz")) return AMN_ADMIN_HEALTHZ;
  return AMN_ADMIN_NOT_FOUND;
}

bool amn_admin_request_complete(const char *req, size_t len) {
  for (size_t i = 0; i + 1 < len; i++) {
    if (req[i] == '\n' && req[i + 1] == '\n') return true;
    if (i + 3 < len && memcmp(req + i, "\r\n\r\n", 4) == 0) return true;
  }
  return false;
}
