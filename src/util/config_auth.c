/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The [[auth.rule]] tables of the configuration file (util/config_auth.h). */
#include "util/config_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define MAX_RULES 4096

enum { L_METHODS, L_URI, L_DNS, L_CN, L_OU, L_FP, L_N };
static const char *const list_keys[L_N] = {"methods", "uri_sans", "dns_sans", "cns", "ous", "fingerprints"};

/* The list fields of a rule, in list_keys order. */
static const char *const **list_of(amn_authz_rule *r, int k, size_t **count) {
  switch (k) {
  case L_METHODS: *count = &r->method_count; return &r->methods;
  case L_URI: *count = &r->uri_san_count; return &r->uri_sans;
  case L_DNS: *count = &r->dns_san_count; return &r->dns_sans;
  case L_CN: *count = &r->cn_count; return &r->cns;
  case L_OU: *count = &r->ou_count; return &r->ous;
  default: *count = &r->fingerprint_count; return &r->fingerprints;
  }
}

static void rule_free(amn_authz_rule *r) {
  free((char *)r->name);
  for (int k = 0; k < L_N; k++) {
    size_t *n;
    const char *const **l = list_of(r, k, &n);
    for (size_t i = 0; *l && i < *n; i++) free((char *)(*l)[i]);
    free((void *)*l);
    *l = NULL;
    *n = 0;
  }
  memset(r, 0, sizeof *r);
}

void amn_config_auth_free(amn_config *c) {
  for (size_t i = 0; i < c->auth.rule_count; i++) {
    rule_free(&c->auth.rules[i]);
    free(c->auth.rule_where[i]);
  }
  free(c->auth.rules);
  free(c->auth.rule_where);
  c->auth.rules = NULL; /* the rules only: [auth]'s other keys (signatures) are plain values */
  c->auth.rule_where = NULL;
  c->auth.rule_count = 0;
}

static char **dup_list(const char *const *l, size_t n) {
  char **out = calloc(n ? n : 1, sizeof *out);
  for (size_t i = 0; out && i < n; i++)
    if (!(out[i] = strdup(l[i]))) {
      while (i--) free(out[i]);
      free(out);
      return NULL;
    }
  return out;
}

static bool rule_dup(amn_authz_rule *dst, const amn_authz_rule *src) {
  memset(dst, 0, sizeof *dst);
  dst->allow = src->allow;
  if (!(dst->name = strdup(src->name))) return false;
  for (int k = 0; k < L_N; k++) {
    size_t *dn, *sn;
    const char *const **dl = list_of(dst, k, &dn), *const *sl = *list_of((amn_authz_rule *)src, k, &sn);
    if (*sn == 0) continue;
    char **copy = dup_list(sl, *sn);
    if (!copy) return false;
    *dl = (const char *const *)copy;
    *dn = *sn;
  }
  return true;
}

int amn_config_auth_dup(amn_config *dst, const amn_config *src) {
  size_t n = src->auth.rule_count;
  dst->auth.rules = NULL; /* the rules only: [auth]'s plain keys were copied with the rest */
  dst->auth.rule_where = NULL;
  dst->auth.rule_count = 0;
  if (n == 0) return 0;
  dst->auth.rules = calloc(n, sizeof *dst->auth.rules);
  dst->auth.rule_where = calloc(n, sizeof *dst->auth.rule_where);
  if (!dst->auth.rules || !dst->auth.rule_where) {
    amn_config_auth_free(dst);
    return AMN_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    dst->auth.rule_count = i + 1;
    if (!rule_dup(&dst->auth.rules[i], &src->auth.rules[i]) ||
        !(dst->auth.rule_where[i] = strdup(src->auth.rule_where[i]))) {
      amn_config_auth_free(dst);
      return AMN_ENOMEM;
    }
  }
  return 0;
}

/* One [[auth.rule]] table into r. Returns 0 or an error with its line. */
static int parse_rule(amn_authz_rule *r, const amn_toml_node *t, int *line, char *why, size_t wl) {
  bool have_action = false;
  for (size_t i = 0; i < amn_toml_count(t); i++) {
    const char *key = amn_toml_key_at(t, i, NULL);
    const amn_toml_node *v = amn_toml_at(t, i);
    *line = amn_toml_line(v);
    amn_toml_type ty = amn_toml_type_of(v);
    if (!strcmp(key, "name") || !strcmp(key, "action")) {
      size_t len;
      const char *s = ty == AMN_TOML_STRING ? amn_toml_str(v, &len) : NULL;
      if (!s) return snprintf(why, wl, "%s: expected a string, got %s", key, amn_toml_type_name(ty)), AMN_ECONFIG;
      if (len == 0 || strlen(s) != len)
        return snprintf(why, wl, "%s: must be a non-empty string without NUL characters", key), AMN_ECONFIG;
      if (key[0] == 'n') {
        if (!(r->name = strdup(s))) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
        continue;
      }
      if (strcmp(s, "allow") && strcmp(s, "deny"))
        return snprintf(why, wl, "action: invalid value \"%.64s\" (expected \"allow\" or \"deny\")", s), AMN_ECONFIG;
      r->allow = s[0] == 'a';
      have_action = true;
      continue;
    }
    int k = 0;
    while (k < L_N && strcmp(key, list_keys[k])) k++;
    if (k == L_N)
      return snprintf(why, wl,
                      "unknown key '%.64s' (expected name, action, methods, uri_sans, dns_sans, cns, ous or "
                      "fingerprints)",
                      key),
             AMN_ECONFIG;
    if (ty != AMN_TOML_ARRAY)
      return snprintf(why, wl, "%s: expected an array of strings, got %s", key, amn_toml_type_name(ty)), AMN_ECONFIG;
    size_t n = amn_toml_count(v), *cnt;
    const char *const **l = list_of(r, k, &cnt);
    char **out = calloc(n ? n : 1, sizeof *out);
    if (!out) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
    *l = (const char *const *)out;
    for (size_t j = 0; j < n; j++) {
      const amn_toml_node *e = amn_toml_at(v, j);
      size_t len;
      const char *s = amn_toml_type_of(e) == AMN_TOML_STRING ? amn_toml_str(e, &len) : NULL;
      if (!s || len == 0 || strlen(s) != len) {
        *line = amn_toml_line(e);
        return snprintf(why, wl, "%s: element %zu must be a non-empty string without NUL characters", key, j + 1),
               AMN_ECONFIG;
      }
      if (!(out[j] = strdup(s))) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
      *cnt = j + 1;
    }
  }
  *line = amn_toml_line(t);
  if (!r->name) return snprintf(why, wl, "a rule needs a name"), AMN_ECONFIG;
  if (!have_action) return snprintf(why, wl, "rule '%.64s' needs an action (\"allow\" or \"deny\")", r->name), AMN_ECONFIG;
  if (r->method_count == 0)
    return snprintf(why, wl, "rule '%.64s' needs methods (at least one, e.g. [\"/grpc.health.v1.Health/Check\"])",
                    r->name),
           AMN_ECONFIG;
  return 0;
}

int amn_config_auth_rules(amn_config *c, const amn_toml_node *arr, const char *path, char *err, size_t errlen) {
  if (amn_toml_type_of(arr) != AMN_TOML_ARRAY)
    return amn_set_err(err, errlen, AMN_ECONFIG, "%s:%d: auth.rule: expected an array of tables ([[auth.rule]]), got %s",
                       path, amn_toml_line(arr), amn_toml_type_name(amn_toml_type_of(arr)));
  size_t n = amn_toml_count(arr);
  if (n > MAX_RULES)
    return amn_set_err(err, errlen, AMN_ECONFIG, "%s:%d: auth.rule: more than %d rules", path, amn_toml_line(arr),
                       MAX_RULES);
  amn_config tmp;
  memset(&tmp, 0, sizeof tmp);
  tmp.auth.rules = calloc(n ? n : 1, sizeof *tmp.auth.rules);
  tmp.auth.rule_where = calloc(n ? n : 1, sizeof *tmp.auth.rule_where);
  if (!tmp.auth.rules || !tmp.auth.rule_where) {
    amn_config_auth_free(&tmp);
    return amn_set_err(err, errlen, AMN_ENOMEM, "%s: out of memory", path);
  }
  for (size_t i = 0; i < n; i++) {
    const amn_toml_node *t = amn_toml_at(arr, i);
    char why[512];
    int line = amn_toml_line(t), rc;
    tmp.auth.rule_count = i + 1;
    if (amn_toml_type_of(t) != AMN_TOML_TABLE) {
      snprintf(why, sizeof why, "expected a table, got %s", amn_toml_type_name(amn_toml_type_of(t)));
      rc = AMN_ECONFIG;
    } else {
      rc = parse_rule(&tmp.auth.rules[i], t, &line, why, sizeof why);
    }
    for (size_t j = 0; rc == 0 && j < i; j++)
      if (!strcmp(tmp.auth.rules[j].name, tmp.auth.rules[i].name)) {
        snprintf(why, sizeof why, "rule name '%.64s' is already used at %s", tmp.auth.rules[i].name,
                 tmp.auth.rule_where[j]);
        rc = AMN_ECONFIG;
      }
    char where[4200];
    snprintf(where, sizeof where, "%s:%d", path, amn_toml_line(t));
    if (rc == 0 && !(tmp.auth.rule_where[i] = strdup(where))) rc = AMN_ENOMEM, snprintf(why, sizeof why, "out of memory");
    if (rc) {
      amn_config_auth_free(&tmp);
      return amn_set_err(err, errlen, rc, "%s:%d: auth.rule[%zu]: %s", path, line, i + 1, why);
    }
  }
  amn_config_auth_free(c);
  c->auth = tmp.auth;
  return 0;
}
