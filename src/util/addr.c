/* Address strings: "host:port" and "[v6]:port". */
#include "util/addr.h"

#include <stdlib.h>
#include <string.h>

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
