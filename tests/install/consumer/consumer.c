/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A program outside the project, built against an installed amaters-net
 * (through pkg-config or find_package, shared or static): the headers'
 * version must be the library's, and one Execute call over mutual TLS on
 * loopback (a development PKI in a fresh directory) must come back.
 * Prints "consumer VERSION ok" and exits 0, else says what failed.
 */
#include <amn/amn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if AMN_VERSION_NUMBER < 0x000100
#error "amaters-net 0.1.0 or later is needed"
#endif

static void reverse(amn_call *call, const amn_query *q, void *ud) {
  (void)ud;
  uint8_t buf[256];
  size_t n = q->query_len < sizeof buf ? q->query_len : sizeof buf;
  for (size_t i = 0; i < n; i++) buf[i] = q->query_bytes[n - 1 - i];
  amn_call_reply_query(call, buf, n, NULL, 0);
}

int main(int argc, char **argv) {
  if (argc != 2) return fprintf(stderr, "usage: consumer EMPTY-DIR\n"), 2;
  if (strcmp(amn_version(), AMN_VERSION) != 0 || amn_version_number() != AMN_VERSION_NUMBER)
    return fprintf(stderr, "consumer: headers %s, library %s\n", AMN_VERSION, amn_version()), 1;
  char err[512];
  if (amn_pki_init(argv[1], false, err, sizeof err)) return fprintf(stderr, "consumer: pki: %s\n", err), 1;
  static char server_files[3 * 4096], client_files[3 * 4096];
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.listen = "127.0.0.1:0";
  so.threads = 1;
  amn_server *srv = NULL;
  if (amn_pki_paths(argv[1], "server", &so.tls, server_files, sizeof server_files) ||
      amn_server_new(&srv, &so, err, sizeof err) || amn_server_set_execute(srv, reverse, NULL) ||
      amn_server_start(srv, err, sizeof err))
    return fprintf(stderr, "consumer: server: %s\n", err), 1;
  char url[64];
  snprintf(url, sizeof url, "https://localhost:%u", (unsigned)amn_server_port(srv));
  amn_client_opts co;
  amn_client_opts_init(&co);
  co.url = url;
  amn_client *cli = NULL;
  if (amn_pki_paths(argv[1], "client", &co.tls, client_files, sizeof client_files) ||
      amn_client_new(&cli, &co, err, sizeof err))
    return fprintf(stderr, "consumer: client: %s\n", err), 1;
  amn_call_opts call = {.timeout_ms = 10000};
  amn_result r;
  int rc = amn_client_execute(cli, (const uint8_t *)"stressed", 8, NULL, 0, &call, &r, NULL, NULL);
  int ok = rc == 0 && r.code == AMN_STATUS_OK && r.len == 8 && memcmp(r.data, "desserts", 8) == 0;
  if (!ok)
    fprintf(stderr, "consumer: call: rc %d, %s %s\n", rc, rc ? amn_strerror(rc) : amn_status_name(r.code),
            rc ? "" : r.message);
  if (rc == 0) amn_result_free(&r);
  amn_client_free(cli);
  amn_server_free(srv);
  if (ok) printf("consumer %s ok\n", amn_version());
  return ok ? 0 : 1;
}
