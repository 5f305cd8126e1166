/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Transport error codes and HTTP statuses -> gRPC status codes. */
#include "rpc/rpc.h"

amn_status_code amn_status_from_h2_error(uint32_t h2_error) {
  switch (h2_error) {
  case 0x7: return AMN_STATUS_UNAVAILABLE;         /* REFUSED_STREAM */
  case 0x8: return AMN_STATUS_CANCELLED;           /* CANCEL */
  case 0xb: return AMN_STATUS_RESOURCE_EXHAUSTED;  /* ENHANCE_YOUR_CALM */
  case 0xc: return AMN_STATUS_PERMISSION_DENIED;   /* INADEQUATE_SECURITY */
  default: return AMN_STATUS_INTERNAL; /* NO_ERROR, PROTOCOL_ERROR, ..., unknown */
  }
}

amn_status_code amn_status_from_h3_error(uint64_t h3_error) {
  switch (h3_error) {
  case 0x10c: return AMN_STATUS_CANCELLED;          /* H3_REQUEST_CANCELLED */
  case 0x10b: return AMN_STATUS_UNAVAILABLE;        /* H3_REQUEST_REJECTED */
  case 0x107: return AMN_STATUS_RESOURCE_EXHAUSTED; /* H3_EXCESSIVE_LOAD */
  default: return AMN_STATUS_INTERNAL;
  }
}

amn_status_code amn_status_from_http(int http_status) {
  switch (http_status) {
  case 400: return AMN_STATUS_INTERNAL;
  case 401: return AMN_STATUS_UNAUTHENTICATED;
  case 403: return AMN_STATUS_PERMISSION_DENIED;
  case 404: return AMN_STATUS_UNIMPLEMENTED;
  case 429: case 502: case 503: case 504: return AMN_STATUS_UNAVAILABLE;
  default: return AMN_STATUS_UNKNOWN;
  }
}
