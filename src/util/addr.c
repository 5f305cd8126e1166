/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Address strings: "host:port" and "[v6]:port". */
#include "util/addr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "amn/common.h"

int amn_split_hostport(const char *s, char *host, size_t hcap, uint16_t *port) {
  const char *colon;
  if (s[0] == '[') {
    const char *rb = strchr(s, ']');
    if (!rb || rb[1] != ':') return AMN_EINVAL;
    size_t hl = (size_t)(rb - s - 1);
    if (hl == 0 || hl >= hcap) return AMN_EINVAL;
    memcpy(host, s + 1, hl);
    host[hl] = 0;
    colon = rb + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon || colon == s) return AMN_EINVAL;
    size_t hl = (size_t)(colon - s);
    if (hl >= hcap || memchr(s, ':', hl)) return AMN_EINVAL;
    memcpy(host, s, hl);
    host[hl] = 0;
  }
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end || colon[1] == 0 || p < 0 || p > 65535) return AMN_EINVAL;
  *port = (uint16_t)p;
  return 0;
}

void amn_addr_text(const struct sockaddr *sa, char *out, size_t cap) {
  char h[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
    snprintf(out, cap, "%s:%u", h, ntohs(a->sin_port));
  } else {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
    snprintf(out, cap, "[%s]:%u", h, ntohs(a->sin6_port));
  }
}

int amn_resolve_passive(const char *host, uint16_t port, int socktype, struct addrinfo **res) {
  struct addrinfo hints = {0};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char ps[8];
  snprintf(ps, sizeof ps, "%u", port);
  return getaddrinfo(strcmp(host, "*") == 0 || !*host ? NULL : host, ps, &hints, res);
}
