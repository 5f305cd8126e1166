/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Authorization policy (amn/server.h: amn_authz_policy_new, amn_authz_check):
 * an immutable copy of the rules and the pure matcher of a call's method and
 * client identity against them, first matching rule wins. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amn/server.h"
#include "util/log.h"

#define AUTHZ_MAX_RULES 4096
#define AUTHZ_MAX_PATTERNS 1024
#define AUTHZ_MAX_PATTERN_LEN 1024

enum { P_METHOD, P_URI, P_DNS, P_CN, P_OU, P_FP, P_KINDS };
static const char *const kind_names[P_KINDS] = {"methods", "uri_sans", "dns_sans", "cns", "ous", "fingerprints"};

typedef struct authz_rule {
  char *name;
  bool allow;
  char **pat[P_KINDS];
  size_t npat[P_KINDS];
} authz_rule;

struct amn_authz_policy {
  authz_rule *rules;
  size_t n;
};

/* ------------------------------------------------------------------ */
/* Matching                                                           */
/* ------------------------------------------------------------------ */

static bool ch_eq(char a, char b, bool icase) {
  return icase ? tolower((unsigned char)a) == tolower((unsigned char)b) : a == b;
}

/* `*` matches any run of characters; linear backtracking to the last star
 * only, so O(len(p) * len(s)) at worst whatever the input. */
static bool glob(const char *p, const char *s, bool icase) {
  const char *star = NULL, *resume = NULL;
  while (*s) {
    if (*p == '*') {
      star = p++;
      resume = s;
    } else if (*p && ch_eq(*p, *s, icase)) {
      p++, s++;
    } else if (star) {
      p = star + 1;
      s = ++resume;
    } else {
      return false;
    }
  }
  while (*p == '*') p++;
  return *p == '\0';
}

static bool any_glob(char *const *pats, size_t n, const char *s, bool icase) {
  for (size_t i = 0; s && i < n; i++)
    if (glob(pats[i], s, icase)) return true;
  return false;
}

static bool peer_matches(const authz_rule *r, const amn_peer_identity *id) {
  if (!id || !id->verified) return false;
  bool any_pattern = false;
  for (int k = P_URI; k < P_KINDS; k++) any_pattern |= r->npat[k] > 0;
  if (!any_pattern) return true; /* every verified client */
  for (size_t i = 0; i < id->uri_san_count && i < AMN_MAX_SANS; i++)
    if (any_glob(r->pat[P_URI], r->npat[P_URI], id->uri_sans[i], false)) return true;
  for (size_t i = 0; i < id->san_count && i < AMN_MAX_SANS; i++)
    if (any_glob(r->pat[P_DNS], r->npat[P_DNS], id->sans[i], true)) return true;
  if (id->cn && *id->cn && any_glob(r->pat[P_CN], r->npat[P_CN], id->cn, false)) return true;
  if (id->ou && *id->ou && any_glob(r->pat[P_OU], r->npat[P_OU], id->ou, false)) return true;
  for (size_t i = 0; i < r->npat[P_FP]; i++)
    if (strcmp(r->pat[P_FP][i], id->sha256_hex) == 0) return true;
  return false;
}

bool amn_authz_check(const amn_authz_policy *p, const char *method, const amn_peer_identity *peer,
                     const char **rule) {
  if (rule) *rule = NULL;
  if (!p || !method) return false;
  for (size_t i = 0; i < p->n; i++) {
    const authz_rule *r = &p->rules[i];
    if (!any_glob(r->pat[P_METHOD], r->npat[P_METHOD], method, false) || !peer_matches(r, peer)) continue;
    if (rule) *rule = r->name;
    return r->allow;
  }
  return false;
}

size_t amn_authz_policy_rule_count(const amn_authz_policy *p) { return p ? p->n : 0; }

/* ------------------------------------------------------------------ */
/* Building                                                           */
/* ------------------------------------------------------------------ */

void amn_authz_policy_free(amn_authz_policy *p) {
  if (!p) return;
  for (size_t i = 0; i < p->n; i++) {
    authz_rule *r = &p->rules[i];
    free(r->name);
    for (int k = 0; k < P_KINDS; k++) {
      for (size_t j = 0; j < r->npat[k]; j++) free(r->pat[k][j]);
      free(r->pat[k]);
    }
  }
  free(p->rules);
  free(p);
}

/* "AB:cd:..." or "abcd..." -> 64 lower-case hex digits in out; false if it is not a SHA-256. */
static bool norm_fingerprint(const char *in, char out[65]) {
  size_t n = 0;
  for (const char *s = in; *s; s++) {
    if (*s == ':') continue;
    if (!isxdigit((unsigned char)*s) || n == 64) return false;
    out[n++] = (char)tolower((unsigned char)*s);
  }
  out[n] = '\0';
  return n == 64;
}

static int check_pattern(int kind, const char *s, char *why, size_t wl) {
  size_t len = strlen(s);
  if (len == 0) return snprintf(why, wl, "empty pattern"), AMN_EINVAL;
  if (len > AUTHZ_MAX_PATTERN_LEN)
    return snprintf(why, wl, "pattern longer than %d bytes", AUTHZ_MAX_PATTERN_LEN), AMN_EINVAL;
  for (const char *c = s; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) return snprintf(why, wl, "control character in \"%.64s\"", s), AMN_EINVAL;
  if (kind == P_METHOD && s[0] != '/' && strcmp(s, "*") != 0)
    return snprintf(why, wl, "method \"%.64s\" does not start with '/' (e.g. \"/pkg.Service/Method\")", s), AMN_EINVAL;
  return 0;
}

static int copy_rule(authz_rule *r, const amn_authz_rule *in, char *why, size_t wl) {
  if (!in->name || !*in->name) return snprintf(why, wl, "a rule needs a name"), AMN_EINVAL;
  if (!(r->name = strdup(in->name))) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
  r->allow = in->allow;
  const char *const *lists[P_KINDS] = {in->methods, in->uri_sans, in->dns_sans, in->cns, in->ous, in->fingerprints};
  size_t counts[P_KINDS] = {in->method_count, in->uri_san_count, in->dns_san_count,
                            in->cn_count,     in->ou_count,      in->fingerprint_count};
  if (counts[P_METHOD] == 0) return snprintf(why, wl, "methods: at least one method pattern is required"), AMN_EINVAL;
  for (int k = 0; k < P_KINDS; k++) {
    size_t n = counts[k];
    if (n == 0) continue;
    if (!lists[k] || n > AUTHZ_MAX_PATTERNS)
      return snprintf(why, wl, "%s: %s", kind_names[k], lists[k] ? "too many patterns" : "NULL list"), AMN_EINVAL;
    if (!(r->pat[k] = calloc(n, sizeof(char *)))) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
    for (size_t j = 0; j < n; j++) {
      const char *s = lists[k][j];
      if (!s) return snprintf(why, wl, "%s: NULL pattern", kind_names[k]), AMN_EINVAL;
      char fp[65], sub[320];
      int rc = check_pattern(k, s, sub, sizeof sub);
      if (rc) return snprintf(why, wl, "%s: %s", kind_names[k], sub), rc;
      if (k == P_FP && !norm_fingerprint(s, fp))
        return snprintf(why, wl, "fingerprints: \"%.100s\" is not a SHA-256 fingerprint (64 hex digits)", s),
               AMN_EINVAL;
      if (!(r->pat[k][j] = strdup(k == P_FP ? fp : s))) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
      r->npat[k] = j + 1;
    }
  }
  return 0;
}

int amn_authz_policy_new(amn_authz_policy **out, const amn_authz_rule *rules, size_t n, char *err, size_t errlen) {
  if (!out || (n && !rules)) return amn_set_err(err, errlen, AMN_EINVAL, "amn_authz_policy_new: NULL argument");
  *out = NULL;
  if (n > AUTHZ_MAX_RULES) return amn_set_err(err, errlen, AMN_EINVAL, "more than %d rules", AUTHZ_MAX_RULES);
  amn_authz_policy *p = calloc(1, sizeof *p);
  if (!p || !(p->rules = calloc(n ? n : 1, sizeof *p->rules))) {
    free(p);
    return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    char why[512];
    p->n = i + 1;
    int rc = copy_rule(&p->rules[i], &rules[i], why, sizeof why);
    for (size_t j = 0; rc == 0 && j < i; j++)
      if (strcmp(p->rules[j].name, rules[i].name) == 0) {
        snprintf(why, sizeof why, "a rule of this name is already rule %zu", j + 1);
        rc = AMN_EINVAL;
      }
    if (rc) {
      amn_authz_policy_free(p);
      return amn_set_err(err, errlen, rc, "rule %zu ('%.64s'): %s", i + 1, rules[i].name ? rules[i].name : "",
                         why);
    }
  }
  *out = p;
  return 0;
}
