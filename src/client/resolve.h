/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the client's asynchronous resolver: c-ares on the client's
 * libev loop (its sockets as ev_io watchers, its timeouts as one ev_timer),
 * so that no name lookup ever blocks the I/O thread. The hosts file is read
 * by c-ares itself (/etc/hosts, or the file the environment variable
 * CARES_HOSTS names). I/O thread only.
 */
#ifndef AMN_CLIENT_RESOLVE_H
#define AMN_CLIENT_RESOLVE_H

#include <ev.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#define AMN_RESOLVE_MAX_ADDRS 32 /* addresses kept of one answer */

typedef struct amn_resolver amn_resolver;

/* The numeric addresses of an answer, distinct, in c-ares' order. */
typedef struct amn_resolve_answer {
  char addr[AMN_RESOLVE_MAX_ADDRS][INET6_ADDRSTRLEN];
  size_t n;
  uint32_t ttl_s; /* the smallest TTL of the addresses (0 from the hosts file) */
} amn_resolve_answer;

/* The end of a lookup: `ans` on success (n >= 1), else NULL and `why`
 * (c-ares' reason, e.g. "Domain name not found"). Never called from
 * within amn_resolver_query, nor after amn_resolver_free. */
typedef void (*amn_resolve_cb)(void *ud, const amn_resolve_answer *ans, const char *why);

/* A resolver on `ev`. `servers`: NULL (the system's resolv.conf) or a
 * comma-separated list of "IP[:PORT]" ("[IPv6]:PORT") to ask instead;
 * `timeout_ms` per try (2 tries per server). 0, or AMN_EINVAL / AMN_ENOMEM
 * with the reason in err. */
int amn_resolver_new(amn_resolver **out, struct ev_loop *ev, const char *servers, uint32_t timeout_ms, char *err,
                     size_t errlen);
/* Starts a lookup of `name` (A and AAAA). 0, or AMN_ENOMEM. */
int amn_resolver_query(amn_resolver *r, const char *name, amn_resolve_cb cb, void *ud);
/* Cancels the lookups in flight (their callbacks do not run), stops the
 * watchers, frees. NULL is fine. */
void amn_resolver_free(amn_resolver *r);

#endif
