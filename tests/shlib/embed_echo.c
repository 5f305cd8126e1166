/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * An application embedding amaters-net through the shared library and the
 * public headers only: dev PKI, server with an Execute handler, client call
 * over mutual TLS, health check. Proves the exported API is complete.
 */
#include <amn/amn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void upper(amn_call *c, const amn_query *q, void *ud) {
  (void)ud;
  char *r = malloc(q->query_len + 1);
  for (size_t i = 0; i < q->query_len; i++) r[i] = (char)(q->query_bytes[i] >= 'a' && q->query_bytes[i] <= 'z' ? q->query_bytes[i] - 32 : q->query_bytes[i]);
  amn_call_reply_query(c, (const uint8_t *)r, q->query_len, (const uint8_t *)"proof", 5);
  free(r);
}

int main(void) {
  char dir[] = "/tmp/amn-embed-XXXXXX", err[256];
  if (!mkdtemp(dir) || amn_pki_init(dir, false, err, sizeof err)) return fprintf(stderr, "pki: %s\n", err), 1;
  static char ss[3 * 4096], cs[3 * 4096];
  amn_server_opts so;
  amn_server_opts_init(&so);
  so.listen = "127.0.0.1:0";
  so.threads = 1;
  amn_pki_paths(dir, "server", &so.tls, ss, sizeof ss);
  amn_server *s;
  if (amn_server_new(&s, &so, err, sizeof err) || amn_server_set_execute(s, upper, NULL) ||
      amn_server_start(s, err, sizeof err))
    return fprintf(stderr, "server: %s\n", err), 1;
  amn_client_opts co;
  amn_client_opts_init(&co);
  char url[64];
  snprintf(url, sizeof url, "https://localhost:%u", amn_server_port(s));
  co.url = url;
  amn_pki_paths(dir, "client", &co.tls, cs, sizeof cs);
  amn_client *c;
  if (amn_client_new(&c, &co, err, sizeof err)) return fprintf(stderr, "client: %s\n", err), 1;
  amn_result r;
  uint8_t *proof = NULL;
  size_t plen = 0;
  int rc = amn_client_execute(c, (const uint8_t *)"ciphertext", 10, NULL, 0, NULL, &r, &proof, &plen);
  int ok = rc == 0 && r.code == AMN_STATUS_OK && r.len == 10 && memcmp(r.data, "CIPHERTEXT", 10) == 0 && plen == 5 &&
           memcmp(proof, "proof", 5) == 0;
  bool serving = false;
  ok = ok && amn_client_health(c, "", 2000, &serving, NULL, err, sizeof err) == 0 && serving;
  printf("embed: %s (%s%s%s)\n", ok ? "ok" : "FAILED", amn_status_name(r.code), r.message && *r.message ? ": " : "",
         r.message ? r.message : "");
  amn_result_free(&r);
  free(proof);
  amn_client_free(c);
  amn_server_free(s);
  char cmd[64];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) return 1;
  printf("%d passed, %d failed\n", ok, !ok);
  return ok ? 0 : 1;
}
