/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The admin listener's request line (admin.c): which answer the bytes a
 * client sent so far get. Pure: no I/O, no allocation.
 */
#ifndef AMN_SERVER_ADMIN_REQ_H
#define AMN_SERVER_ADMIN_REQ_H

#include <stdbool.h>
#include <stddef.h>

#define AMN_ADMIN_REQ_MAX 8192 /* bytes of a request's header block at most */

typedef enum amn_admin_route {
  AMN_ADMIN_INCOMPLETE,  /* no complete request line yet: read more (or the client went away) */
  AMN_ADMIN_TOO_LARGE,   /* 431: AMN_ADMIN_REQ_MAX bytes without a complete request line */
  AMN_ADMIN_BAD_REQUEST, /* 400: not "METHOD TARGET HTTP/1.0|1.1" (or a NUL byte in it) */
  AMN_ADMIN_BAD_METHOD,  /* 405: not GET or HEAD */
  AMN_ADMIN_METRICS,     /* GET|HEAD /metrics[?...] */
  AMN_ADMIN_HEALTHZ,     /* GET|HEAD /healthz[?...] */
  AMN_ADMIN_NOT_FOUND,   /* 404: another target */
} amn_admin_route;

/* Judges the first `len` bytes received (any bytes, NULs included); `*head`
 * is set for HEAD (answer without a body). */
amn_admin_route amn_admin_route_request(const char *req, size_t len, bool *head);

/* true once `req` holds the end of a header block (an empty line). */
bool amn_admin_request_complete(const char *req, size_t len);

#endif
