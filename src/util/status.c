/* SPDX-License-Identifier: MIT OR Apache-2.0 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "amn/common.h"

static const char *const status_names[] = {
    "OK",           "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",  "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",       "DATA_LOSS",
    "UNAUTHENTICATED"};

const char *amn_status_name(int code) {
  if (code < 0 || code > 16) return "UNKNOWN_CODE";
  return status_names[code];
}

int amn_status_from_name(const char *s) {
  if (!s || !*s) return -1;
  char *end;
  long v = strtol(s, &end, 10);
  if (*end == '\0') return (v >= 0 && v <= 16) ? (int)v : -1;
  for (int i = 0; i <= 16; i++)
    if (strcasecmp(s, status_names[i]) == 0) return i;
  return -1;
}

const char *amn_strerror(int err) {
  switch (err) {
  case AMN_OK: return "success";
  case AMN_EINVAL: return "invalid argument";
  case AMN_ENOMEM: return "out of memory";
  case AMN_EAGAIN: return "would block (queue full)";
  case AMN_ECLOSED: return "closed";
  case AMN_EIO: return "I/O error";
  case AMN_ETLS: return "TLS error";
  case AMN_EPROTO: return "protocol error";
  case AMN_ETOOBIG: return "message too large";
  case AMN_ECONFIG: return "configuration error";
  case AMN_ESTATE: return "invalid state";
  default: return "unknown error";
  }
}

const amn_md *amn_metadata_get(const amn_metadata *md, const char *key) {
  if (!md || !key) return NULL;
  for (size_t i = 0; i < md->count; i++)
    if (md->entries[i].key && strcmp(md->entries[i].key, key) == 0) return &md->entries[i];
  return NULL;
}
