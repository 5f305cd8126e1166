/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Internal: address strings shared by the server (listen) and the client (URLs). */
#ifndef AMN_UTIL_ADDR_H
#define AMN_UTIL_ADDR_H

#include <stddef.h>
#include <stdint.h>

/* Splits "host:port" or "[v6addr]:port" into host (NUL-terminated, at most
 * hcap bytes with the NUL) and port (0-65535). Returns 0, or AMN_EINVAL
 * when the form is wrong, the host is empty or too long, or the port is not
 * a decimal number in range. A bare IPv6 address without brackets is
 * refused (its colons are ambiguous). Pure; thread-safe. */
int amn_split_hostport(const char *s, char *host, size_t hcap, uint16_t *port);

struct addrinfo;
/* getaddrinfo for a socket to bind: `host` ("*" or "" = any address), a
 * numeric port, `socktype` (SOCK_STREAM, SOCK_DGRAM). Returns getaddrinfo's
 * result (0: *res to freeaddrinfo). */
int amn_resolve_passive(const char *host, uint16_t port, int socktype, struct addrinfo **res);

struct sockaddr;
/* "a.b.c.d:port" or "[v6]:port" of an IPv4 / IPv6 socket address, for logs
 * (truncated to cap). Thread-safe. */
void amn_addr_text(const struct sockaddr *sa, char *out, size_t cap);

#endif
