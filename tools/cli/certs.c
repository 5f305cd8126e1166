/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-cli: certs init, issue and revoke, the development PKI as a tiny CA. */
#include <string.h>

#include "cli.h"

static void pki_dir_of(const cli *o, const char *given, char *dir, size_t cap) {
  if (given) snprintf(dir, cap, "%s", given);
  else if (amn_pki_default_dir(dir, cap) != 0)
    die_code(EX_CONFIG, "certs %s: cannot determine the default PKI directory; give it (set HOME or AMATERS_NET_PKI_DIR)",
             o->certs_sub);
}

static int certs_init(cli *o) {
  char dir[4096], err[1024] = "";
  pki_dir_of(o, o->certs_arg, dir, sizeof dir);
  int rc = amn_pki_init_names(dir, o->force, (const char *const *)o->args, o->arg_count, err, sizeof err);
  if (rc == AMN_EINVAL) die("certs init: %s", err);
  if (rc) die_code(EX_CANTCREAT, "cannot create the PKI in %s: %s", dir, err);
  static const char *const files[] = {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "client.pem",
                                      "client-key.pem"};
  printf("development PKI in %s:\n", dir);
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) printf("  %s/%s\n", dir, files[i]);
  return 0;
}

static int certs_issue(cli *o) {
  char dir[4096], err[1024] = "";
  pki_dir_of(o, o->pki_dir, dir, sizeof dir);
  o->spiffe[o->spiffe_count] = NULL;
  o->dns[o->dns_count] = NULL;
  if (amn_pki_issue_client(dir, o->certs_arg, o->spiffe, o->dns, o->out_dir, err, sizeof err) != 0)
    die_code(EX_CANTCREAT, "certs issue: %s", err);
  const char *out = o->out_dir ? o->out_dir : dir;
  printf("issued client certificate CN=%s", o->certs_arg);
  for (size_t i = 0; i < o->spiffe_count; i++) printf(" URI:%s", o->spiffe[i]);
  for (size_t i = 0; i < o->dns_count; i++) printf(" DNS:%s", o->dns[i]);
  printf("\n  %s/%s.pem\n  %s/%s-key.pem\n", out, o->certs_arg, out, o->certs_arg);
  return 0;
}

static int certs_revoke(cli *o) {
  char dir[4096], err[1024] = "";
  pki_dir_of(o, o->pki_dir, dir, sizeof dir);
  bool added = false;
  if (amn_pki_revoke(dir, o->certs_arg, o->next_update_s, &added, err, sizeof err) != 0) die_code(EX_CANTCREAT, "certs revoke: %s", err);
  printf("%s %s; CRL written to %s/crl.pem (next update in %llds)\n", o->certs_arg,
         added ? "revoked" : "was already revoked", dir, o->next_update_s);
  return 0;
}

int cmd_certs(cli *o) {
  if (!strcmp(o->certs_sub, "issue")) return certs_issue(o);
  if (!strcmp(o->certs_sub, "revoke")) return certs_revoke(o);
  return certs_init(o);
}
