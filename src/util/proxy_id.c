/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Trusted proxy identities (util/proxy_id.h): parsing and matching. */
#include "util/proxy_id.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static bool parse_sha256(const char *h, uint8_t out[32]) {
  size_t n = 0;
  while (*h && n < 32) {
    int a = hexval(h[0]), b = a < 0 ? -1 : hexval(h[1]);
    if (b < 0) return false;
    out[n++] = (uint8_t)(a << 4 | b);
    h += 2;
    if (*h == ':' && n < 32) h++;
  }
  return n == 32 && !*h;
}

bool amn_proxy_id_parse(const char *s, amn_proxy_id *out, char *why, size_t wl) {
  memset(out, 0, sizeof *out);
  static const struct {
    const char *prefix;
    amn_proxy_kind kind;
  } forms[] = {{"sha256:", AMN_PROXY_SHA256}, {"subject:", AMN_PROXY_SUBJECT}, {"san:", AMN_PROXY_SAN}};
  for (size_t i = 0; s && i < sizeof forms / sizeof forms[0]; i++) {
    size_t pl = strlen(forms[i].prefix);
    if (strncmp(s, forms[i].prefix, pl) != 0) continue;
    out->kind = forms[i].kind;
    out->value = s + pl;
    if (!*out->value) {
      snprintf(why, wl, "\"%.80s\": nothing after \"%s\"", s, forms[i].prefix);
      return false;
    }
    if (out->kind == AMN_PROXY_SHA256 && !parse_sha256(out->value, out->sha256)) {
      snprintf(why, wl, "\"%.120s\": a SHA-256 fingerprint is 64 hex digits (pairs may be separated by ':')", s);
      return false;
    }
    return true;
  }
  snprintf(why, wl, "\"%.80s\": expected \"sha256:HEX\", \"subject:DN\" or \"san:NAME\"", s ? s : "");
  return false;
}

bool amn_proxy_id_match(const amn_proxy_id *p, const amn_peer_identity *id) {
  if (!id || !id->verified || id->via) return false;
  switch (p->kind) {
  case AMN_PROXY_SHA256: return memcmp(p->sha256, id->sha256, 32) == 0;
  case AMN_PROXY_SUBJECT: return id->subject && strcmp(p->value, id->subject) == 0;
  case AMN_PROXY_SAN:
    for (size_t i = 0; i < id->san_count && i < AMN_MAX_SANS; i++)
      if (id->sans[i] && strcasecmp(p->value, id->sans[i]) == 0) return true;
    return false;
  }
  return false;
}
