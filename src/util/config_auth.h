/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the [[auth.rule]] tables of the configuration file (config.c
 * hands them here): parsed into amn_config.auth, checked for structure (known
 * keys, types, required name/action/methods, unique names) with "FILE:LINE"
 * errors; the patterns themselves are checked by amn_authz_policy_new.
 */
#ifndef AMN_UTIL_CONFIG_AUTH_H
#define AMN_UTIL_CONFIG_AUTH_H

#include "amn/config.h"
#include "util/toml.h"

/* Replaces c->auth with the rules of `arr` (the value of auth.rule). */
int amn_config_auth_rules(amn_config *c, const amn_toml_node *arr, const char *path, char *err, size_t errlen);
/* Frees c->auth. */
void amn_config_auth_free(amn_config *c);
/* Deep copy of src->auth into dst->auth (dst->auth is overwritten). */
int amn_config_auth_dup(amn_config *dst, const amn_config *src);

#endif
