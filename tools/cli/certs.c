/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-cli: certs init, the development PKI. */
#include <string.h>

#include "cli.h"

int cmd_certs(cli *o) {
  char dir[4096], err[1024] = "";
  if (o->certs_dir) snprintf(dir, sizeof dir, "%s", o->certs_dir);
  else if (amn_pki_default_dir(dir, sizeof dir) != 0) die_code(EX_CONFIG, "cannot determine the default PKI directory; give DIR");
  int rc = amn_pki_init_names(dir, o->force, (const char *const *)o->args, o->arg_count, err, sizeof err);
  if (rc == AMN_EINVAL) die("certs init: %s", err);
  if (rc) die_code(EX_CANTCREAT, "cannot create the PKI in %s: %s", dir, err);
  static const char *const files[] = {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "client.pem",
                                      "client-key.pem"};
  printf("development PKI in %s:\n", dir);
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) printf("  %s/%s\n", dir, files[i]);
  return 0;
}

