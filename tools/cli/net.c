/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-cli: the client set-up from the flags and the config file. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

void setup_net(cli *o, amn_config *cfg, net *n) {
  memset(n, 0, sizeof *n);
  amn_client_opts_init(&n->copts);
  if (!o->url_count) {
    for (size_t i = 0; i < cfg->client.url_count; i++) add_urls(o, cfg->client.urls[i]);
    if (!o->url_count) die("no URL given");
  }
  /* every URL goes to the pool; [client] sets it up */
  n->copts.url = o->urls[0];
  n->copts.urls = (const char *const *)o->urls;
  n->copts.url_count = o->url_count;
  n->copts.connect_timeout_ms = (uint32_t)cfg->client.connect_timeout_ms;
  n->copts.pool_max_connections = (uint32_t)cfg->client.pool_max_connections;
  n->copts.pool_min_connections = (uint32_t)cfg->client.pool_min_connections;
  n->copts.lb_policy = cfg->client.lb_policy && strcmp(cfg->client.lb_policy, "round_robin") == 0 ? AMN_LB_ROUND_ROBIN
                                                                                                 : AMN_LB_P2C;
  n->copts.keepalive_interval_ms = (uint32_t)cfg->client.keep_alive_interval_ms;
  n->copts.max_retries = (uint32_t)cfg->client.max_retries;
  n->copts.health_check = cfg->client.health_check;
  n->copts.spread_addresses = cfg->client.spread_addresses;
  n->copts.dns_servers = o->dns_server ? o->dns_server : cfg->client.dns_servers; /* the flag wins */
  n->copts.dns_refresh_min_ms = (uint32_t)cfg->client.dns_refresh_min_ms;
  n->copts.dns_refresh_max_ms = (uint32_t)cfg->client.dns_refresh_max_ms;
  n->copts.sign_queries = o->sign || cfg->client.sign_queries;
  n->copts.verify_proofs = o->verify_proof || cfg->client.verify_proofs;
  debugf("%zu URL(s); pool %u..%u connections per URL, %s, keepalive %u ms, %u retries", o->url_count,
         n->copts.pool_min_connections, n->copts.pool_max_connections,
         n->copts.lb_policy == AMN_LB_ROUND_ROBIN ? "round robin" : "p2c", n->copts.keepalive_interval_ms,
         n->copts.max_retries);
  const char *tp = o->transport ? o->transport : cfg->client.transport; /* the flag wins over the file */
  if (tp && strcmp(tp, "h3") == 0) n->copts.transport = AMN_TRANSPORT_H3;
  else if (tp && strcmp(tp, "auto") == 0) n->copts.transport = AMN_TRANSPORT_AUTO;
  n->copts.tls.server_name = o->server_name;
  if (o->insecure) {
    n->copts.tls.insecure = true;
  } else if (o->ca) {
    n->copts.tls.ca_path = o->ca;
    n->copts.tls.cert_path = o->cert;
    n->copts.tls.key_path = o->key;
  } else if (!o->pki_dir && (cfg->tls.ca_path || cfg->tls.cert_path || cfg->tls.key_path)) {
    n->copts.tls.ca_path = cfg->tls.ca_path;
    n->copts.tls.cert_path = cfg->tls.cert_path;
    n->copts.tls.key_path = cfg->tls.key_path;
  } else {
    char dir[4096];
    const char *d = o->pki_dir ? o->pki_dir : cfg->server.pki_dir;
    if (d) snprintf(dir, sizeof dir, "%s", d);
    else if (amn_pki_default_dir(dir, sizeof dir) != 0)
      die_code(EX_CONFIG, "cannot determine the default PKI directory (set HOME or AMATERS_NET_PKI_DIR, or use --pki-dir / --ca)");
    if (amn_pki_paths(dir, "client", &n->copts.tls, n->pki_storage, sizeof n->pki_storage) != 0)
      die_code(EX_CONFIG, "PKI directory path too long: %s", dir);
    if (access(n->copts.tls.ca_path, R_OK) != 0)
      die_code(EX_CONFIG, "no development PKI in %s (run '" PROG " certs init' or start amaters-netd once, or pass --ca/--cert/--key)",
          dir);
    debugf("TLS files from the PKI directory %s", dir);
  }
  n->copts.tls.crl_path = o->crl ? o->crl : cfg->tls.crl_path; /* revocation of the server's certificate */
  n->copts.tls.crl_expired_warn = cfg->tls.crl_expired && strcmp(cfg->tls.crl_expired, "warn") == 0;
  n->timeout_given = o->timeout_ms >= 0;
  n->timeout_ms = (uint32_t)(n->timeout_given ? o->timeout_ms : cfg->client.timeout_ms);
  n->md.entries = o->md;
  n->md.count = o->md_count;
  n->call.metadata = &n->md;
  n->call.timeout_ms = n->timeout_ms;
  n->call.idempotent = o->idempotent;
}

amn_client *client_new(net *n) {
  amn_client *c = NULL;
  char err[1024] = "";
  int rc = amn_client_new(&c, &n->copts, err, sizeof err);
  /* the client connects lazily: what fails here is the URLs, options or TLS files */
  if (rc) die_code(rc == AMN_ENOMEM ? EX_SOFTWARE : EX_CONFIG, "%s", err[0] ? err : amn_strerror(rc));
  return c;
}

int exit_status(amn_client *c, int code) {
  if (code != AMN_STATUS_UNAVAILABLE) return code;
  amn_endpoint_stats st[64];
  size_t n = amn_client_stats(c, st, sizeof st / sizeof st[0], NULL);
  for (size_t i = 0; i < n && i < sizeof st / sizeof st[0]; i++)
    if (st[i].connects) return code; /* a server was reached: its (or the connection's) UNAVAILABLE */
  return EX_UNAVAILABLE;
}

