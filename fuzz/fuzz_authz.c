/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The authorization matcher (src/server/authz.c: amn_authz_policy_new,
 * amn_authz_check) with peer-controlled strings: the SAN, CN and method
 * texts come from a client's certificate and request. Input: '\n'-separated
 * fields: a method pattern, a URI SAN pattern, a DNS SAN pattern, a CN
 * pattern (an empty identity pattern = none), then a method, a URI SAN, a
 * DNS SAN and a CN. Invariants:
 *  - building returns 0 or AMN_EINVAL, and 0 exactly for valid patterns
 *    (non-empty, no control characters, methods starting with '/' or "*");
 *  - the verdict equals a dynamic-programming reference of the documented
 *    semantics ('*' any run, DNS ASCII case-insensitive, any identity
 *    pattern matching is enough, none = every verified client), names the
 *    rule when it allows, and is deterministic;
 *  - an unverified peer is never allowed.
 * libFuzzer's -timeout catches a matcher that backtracks exponentially.
 */
#include <ctype.h>

#include "amn/server.h"
#include "fuzz_common.h"

/* Reference glob: dp[i][j] = pattern[0..i) matches s[0..j). */
static bool ref_glob(const char *p, const char *s, bool icase) {
  size_t n = strlen(p), m = strlen(s);
  bool *row = calloc(m + 1, 1), *next = calloc(m + 1, 1);
  FUZZ_CHECK(row && next);
  row[0] = true;
  for (size_t i = 0; i < n; i++) {
    memset(next, 0, m + 1);
    for (size_t j = 0; j <= m; j++) {
      if (p[i] == '*') next[j] = row[j] || (j > 0 && next[j - 1]);
      else if (j > 0) {
        char a = p[i], b = s[j - 1];
        if (icase) a = (char)tolower((unsigned char)a), b = (char)tolower((unsigned char)b);
        next[j] = row[j - 1] && a == b;
      }
    }
    bool *t = row;
    row = next;
    next = t;
  }
  bool r = row[m];
  free(row);
  free(next);
  return r;
}

static bool valid(const char *p, bool method) {
  if (!*p || strlen(p) > 1024) return false;
  for (const char *c = p; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) return false;
  return !method || p[0] == '/' || strcmp(p, "*") == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096) return 0;
  char *buf = malloc(size + 1);
  FUZZ_CHECK(buf);
  memcpy(buf, data, size);
  buf[size] = '\0';
  const char *f[8] = {"", "", "", "", "", "", "", ""};
  char *p = buf;
  for (int i = 0; i < 8 && p; i++) {
    f[i] = p;
    char *nl = memchr(p, '\n', (size_t)(buf + size - p));
    if (nl) *nl = '\0';
    p = nl ? nl + 1 : NULL;
  }

  const char *const m[] = {f[0]}, *const u[] = {f[1]}, *const d[] = {f[2]}, *const c[] = {f[3]};
  amn_authz_rule r = {.name = "r", .allow = true, .methods = m, .method_count = 1};
  if (*f[1]) r.uri_sans = u, r.uri_san_count = 1;
  if (*f[2]) r.dns_sans = d, r.dns_san_count = 1;
  if (*f[3]) r.cns = c, r.cn_count = 1;
  bool ok = valid(f[0], true) && (!*f[1] || valid(f[1], false)) && (!*f[2] || valid(f[2], false)) &&
            (!*f[3] || valid(f[3], false));
  amn_authz_policy *pol = NULL;
  int rc = amn_authz_policy_new(&pol, &r, 1, NULL, 0);
  FUZZ_CHECK(rc == 0 || rc == AMN_EINVAL);
  FUZZ_CHECK((rc == 0) == ok);
  if (rc == 0) {
    amn_peer_identity id;
    memset(&id, 0, sizeof id);
    id.verified = true;
    id.subject = "";
    id.cn = f[7];
    id.ou = "";
    id.uri_sans[0] = f[5];
    id.uri_san_count = 1;
    id.sans[0] = f[6];
    id.san_count = 1;
    bool any = *f[1] || *f[2] || *f[3];
    bool who = !any || (*f[1] && ref_glob(f[1], f[5], false)) || (*f[2] && ref_glob(f[2], f[6], true)) ||
               (*f[3] && *f[7] && ref_glob(f[3], f[7], false));
    bool want = ref_glob(f[0], f[4], false) && who;
    const char *rule = NULL;
    bool got = amn_authz_check(pol, f[4], &id, &rule);
    FUZZ_CHECK(got == want);
    FUZZ_CHECK(got ? rule && strcmp(rule, "r") == 0 : rule == NULL);
    FUZZ_CHECK(amn_authz_check(pol, f[4], &id, NULL) == got);
    id.verified = false;
    FUZZ_CHECK(!amn_authz_check(pol, f[4], &id, NULL));
    amn_authz_policy_free(pol);
  }
  free(buf);
  return 0;
}
