/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the identity of a trusted TLS-terminating proxy, as configured
 * ([server] trusted_proxies, amn_server_opts.trusted_proxies), and whether a
 * peer's verified identity is one of them. The forms:
 *   "sha256:HEX"    SHA-256 of the proxy's DER certificate: 64 hex digits,
 *                   either case, optionally in pairs separated by ':' (as
 *                   `openssl x509 -fingerprint -sha256` prints it)
 *   "subject:DN"    the certificate's subject, RFC 4514 as amn_peer_identity
 *                   shows it (exact comparison)
 *   "san:NAME"      a DNS or IP subjectAltName of the certificate (DNS names
 *                   case-insensitive, no wildcard matching)
 */
#ifndef AMN_UTIL_PROXY_ID_H
#define AMN_UTIL_PROXY_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "amn/common.h"

typedef enum amn_proxy_kind { AMN_PROXY_SHA256 = 0, AMN_PROXY_SUBJECT, AMN_PROXY_SAN } amn_proxy_kind;

typedef struct amn_proxy_id {
  amn_proxy_kind kind;
  uint8_t sha256[32];  /* AMN_PROXY_SHA256 */
  const char *value;   /* SUBJECT, SAN: points into the parsed string */
} amn_proxy_id;

/* Parses one entry. true, or false with the reason in why. */
bool amn_proxy_id_parse(const char *s, amn_proxy_id *out, char *why, size_t wl);
/* true when `id` is verified and matches `p`. */
bool amn_proxy_id_match(const amn_proxy_id *p, const amn_peer_identity *id);

#endif
