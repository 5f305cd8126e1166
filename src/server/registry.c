/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The server's method table: full gRPC method paths ("/package.Service/Method")
 * to handlers, filled before the server starts and read by the call core when
 * a request's headers arrive.
 */
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

static bool valid_path(const char *p) {
  if (!p || p[0] != '/') return false;
  const char *slash = strchr(p + 1, '/');
  return slash && slash != p + 1 && slash[1] && !strchr(slash + 1, '/');
}

int amn_server_register(amn_server *s, const char *path, const amn_handler *h) {
  if (!s || !h || !valid_path(path)) return AMN_EINVAL;
  if (s->started) return AMN_ESTATE;
  for (size_t i = 0; i < s->nmethods; i++)
    if (strcmp(s->methods[i].path, path) == 0) {
      s->methods[i].h = *h;
      return 0;
    }
  amn_method_entry *m = realloc(s->methods, (s->nmethods + 1) * sizeof *m);
  if (!m) return AMN_ENOMEM;
  s->methods = m;
  m[s->nmethods].path = strdup(path);
  if (!m[s->nmethods].path) return AMN_ENOMEM;
  m[s->nmethods].h = *h;
  s->nmethods++;
  return 0;
}

const amn_handler *amn_server_find(amn_server *s, const char *path) {
  if (!path) return NULL;
  for (size_t i = 0; i < s->nmethods; i++)
    if (strcmp(s->methods[i].path, path) == 0) return &s->methods[i].h;
  return NULL;
}
