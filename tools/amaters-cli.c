/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli — command-line client of amaters-net: execute, stream,
 * health, bench, and `certs init` (development PKI).
 *
 * Exit status: the gRPC status code of the call (0 = OK); 2 for usage,
 * configuration and set-up errors (bad flag, unreadable file).
 */
#include <errno.h>
#include <poll.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amn/amn.h"
#include "bench_hist.h"

#define PROG "amaters-cli"
#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: " PROG " [global options] [URL...] COMMAND [command options]\n"
    "       " PROG " certs init [DIR] [--force]\n"
    "\n"
    "URL: https://HOST:PORT (http://HOST:PORT with --plaintext). Several URLs may be\n"
    "given (repeated or comma-separated): calls are balanced over them through a\n"
    "connection pool (HTTP/2 or HTTP/3), as set by [client] pool_max_connections,\n"
    "pool_min_connections, lb_policy, keep_alive_interval_ms, max_retries and\n"
    "health_check of the configuration. Without a URL: client.urls (default\n"
    "https://127.0.0.1:7878).\n"
    "\n"
    "Global options:\n"
    "  --ca FILE --cert FILE --key FILE   CA bundle to verify the server, client\n"
    "                          certificate and key (all three or none)\n"
    "  --pki-dir DIR           take the client files from a development PKI directory\n"
    "                          (default: the default PKI directory, as amaters-netd)\n"
    "  --server-name NAME      verify the server certificate for NAME\n"
    "  --dns-server IP[:PORT]  look the URLs' names up there (comma-separated list;\n"
    "                          default client.dns_servers, else the system's)\n"
    "  --plaintext             plaintext HTTP/2 without TLS (http:// URLs only)\n"
    "  --insecure              deprecated name of --plaintext (warns)\n"
    "  --transport h2|h3|auto  HTTP/2 over TCP (default), HTTP/3 over QUIC, or auto:\n"
    "                          per URL, QUIC races TCP (QUIC first; TCP after 250 ms\n"
    "                          without a QUIC handshake, or at once if UDP is refused);\n"
    "                          the winner is kept until it fails\n"
    "  --timeout DURATION      call deadline, e.g. 500ms, 2s, 1m (a bare number is\n"
    "                          milliseconds; default client.timeout_ms, 30000; 0 = none)\n"
    "  --metadata KEY=VALUE    request metadata (repeatable)\n"
    "  --idempotent            execute, bench: the calls may be re-sent after UNAVAILABLE\n"
    "                          (up to client.max_retries times, on another connection)\n"
    "  --config FILE           TOML configuration ([client], [tls]); AMATERS_NET_* vars apply\n"
    "  --log-level LEVEL       error|warn|info|debug (default warn); -v = debug\n"
    "  --help, --version\n"
    "\n"
    "Commands:\n"
    "  execute (--data STRING | --data-file FILE|-) [--signature STRING] [--hex] [--json]\n"
    "        one Execute call; prints result_bytes (raw, hex, or a JSON object)\n"
    "  stream [--hex]\n"
    "        one ExecuteStream: every stdin line is a query; prints each result line\n"
    "  health [--service NAME]\n"
    "        prints SERVING or NOT_SERVING; exit 0 only when SERVING\n"
    "  bench [--connections C] [--inflight M] [--duration D] [--warmup D] [--size N]\n"
    "        [--mode unary|stream] [--json]\n"
    "        load test against the echo service: C clients (each with its own pool\n"
    "        over all URLs), M calls in flight in total, N-byte payloads, measured\n"
    "        for D after the warm-up (durations: 1.5s, 500ms, 2m; a bare number is\n"
    "        seconds). The summary counts calls and failures per URL; a unary call\n"
    "        that failed is sent again after 10 ms (no busy loop).\n"
    "        Defaults: C=1 M=1 D=10s warmup=1s N=64 unary. --json: one JSON object with\n"
    "        qps, mb_per_s (payload bytes both ways), p50_us .. p999_us, max_us, errors,\n"
    "        calls, connections, inflight, size, mode, duration_s, retries and\n"
    "        endpoints (per URL: url, transport, calls, ok, failed, connects,\n"
    "        connect_failures)\n"
    "  certs init [DIR] [--force]\n"
    "        creates a development PKI (default: the default PKI directory)\n"
    "\n"
    "Exit status: the gRPC status code of the call (0 = OK; errors are printed as\n"
    "\"STATUS_NAME: message\" on stderr); 2 also for usage and set-up errors. health:\n"
    "1 when NOT_SERVING. bench: 0 without errors, 2 with some, 14 if no call succeeded.\n";

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static int g_level = AMN_LOG_WARN;

static void debugf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void debugf(const char *fmt, ...) {
  if (g_level < AMN_LOG_DEBUG) return;
  va_list ap;
  va_start(ap, fmt);
  fputs(PROG ": ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs(PROG ": ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(EXIT_USAGE);
}

/* Prints "STATUS_NAME: message" and returns the code as exit status. */
static int fail_status(int code, const char *msg) {
  fprintf(stderr, "%s: %s\n", amn_status_name(code), msg && *msg ? msg : "(no message)");
  return code;
}

/* Status for a call that could not be issued (negative AMN_E* code). */
static int status_of_err(int rc) {
  switch (rc) {
  case AMN_EINVAL: return AMN_STATUS_INVALID_ARGUMENT;
  case AMN_ETOOBIG: return AMN_STATUS_RESOURCE_EXHAUSTED;
  case AMN_ENOMEM: return AMN_STATUS_RESOURCE_EXHAUSTED;
  case AMN_EIO: case AMN_ETLS: case AMN_ECLOSED: return AMN_STATUS_UNAVAILABLE;
  default: return AMN_STATUS_INTERNAL;
  }
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static long long parse_int(const char *flag, const char *s, long long lo, long long hi) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  int sh = 0;
  if (end != s && (*end == 'k' || *end == 'K')) sh = 10, end++;
  else if (end != s && (*end == 'm' || *end == 'M')) sh = 20, end++;
  if (end == s || *end || errno || v < 0 || v > (LLONG_MAX >> sh))
    die("%s: '%s' is not a non-negative integer", flag, s);
  v <<= sh;
  if (v < lo || v > hi) die("%s: %lld is out of range %lld..%lld", flag, v, lo, hi);
  return v;
}

/* A duration: a non-negative decimal number with an optional unit ms, s, m
 * or h ("500ms", "1.5s", "2m"); a bare number counts in `bare` seconds (1e-3
 * for milliseconds, 1 for seconds). Returns seconds, within [lo, hi]. */
static double parse_duration(const char *flag, const char *s, double bare, double lo, double hi) {
  size_t n = strspn(s, "0123456789.");
  if (n == 0 || strchr(s, '.') != strrchr(s, '.') || (n == 1 && s[0] == '.'))
    die("%s: '%s' is not a duration (a number with an optional unit ms, s, m or h, e.g. 500ms, 2s, 1m)", flag, s);
  static const struct { const char *unit; double seconds; } units[] = {
      {"", 0}, {"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600}};
  double unit = -1;
  for (size_t k = 0; k < sizeof units / sizeof units[0]; k++)
    if (strcmp(s + n, units[k].unit) == 0) unit = k == 0 ? bare : units[k].seconds;
  if (unit < 0) die("%s: unknown unit '%s' in '%s' (ms, s, m or h)", flag, s + n, s);
  double v = strtod(s, NULL) * unit;
  if (!(v >= lo) || v > hi) die("%s: '%s' is out of range (%.10gs..%.10gs)", flag, s, lo, hi);
  return v;
}

/* --timeout: a duration in whole milliseconds (a bare number is ms). */
static long long parse_timeout_ms(const char *flag, const char *s) {
  double v = parse_duration(flag, s, 1e-3, 0, 2147483.647);
  long long ms = llround(v * 1000);
  if (v > 0 && ms == 0) die("%s: '%s' is shorter than a millisecond", flag, s);
  return ms;
}

static void hex_out(FILE *f, const uint8_t *p, size_t n) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    fputc(hx[p[i] >> 4], f);
    fputc(hx[p[i] & 15], f);
  }
}

/* Reads a whole file ("-" = stdin). */
static uint8_t *slurp(const char *path, size_t *len) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) die("cannot read %s: %s", path, strerror(errno));
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  for (;;) {
    if (!buf) die("out of memory reading %s", path);
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    cap *= 2;
    buf = realloc(buf, cap);
  }
  if (ferror(f)) die("cannot read %s: %s", path, strerror(errno));
  if (f != stdin) fclose(f);
  *len = n;
  return buf;
}

/* ------------------------------------------------------------------ */
/* Command line                                                        */
/* ------------------------------------------------------------------ */

enum { C_EXEC = 1, C_STREAM = 2, C_HEALTH = 4, C_BENCH = 8, C_CERTS = 16, C_NET = 15, C_ALL = 31 };

typedef struct cli {
  /* global */
  const char *ca, *cert, *key, *pki_dir, *server_name, *dns_server, *config, *log_level;
  const char *transport; /* --transport, NULL = config/default */
  bool insecure, idempotent;
  long long timeout_ms; /* -1 = not given */
  amn_md md[64];
  size_t md_count;
  char *urls[64];
  size_t url_count;
  /* command */
  int cmd;
  const char *cmd_name;
  const char *data, *data_file, *signature, *service, *certs_dir, *mode;
  bool hex, json, force, certs_init_seen;
  long long connections, inflight, size;
  double duration, warmup;
  const char *seen_name[64]; /* options given, to check them against the command */
  int seen_cmds[64];
  size_t seen_count;
} cli;

static void add_urls(cli *o, const char *arg) {
  char *copy = strdup(arg), *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (!strstr(t, "://")) die("'%s' is neither a command nor a URL (see --help)", t);
    if (o->url_count == sizeof o->urls / sizeof o->urls[0]) die("too many URLs");
    o->urls[o->url_count++] = strdup(t);
  }
  free(copy);
}

static void add_metadata(cli *o, const char *kv) {
  const char *eq = strchr(kv, '=');
  if (!eq || eq == kv) die("--metadata: expected KEY=VALUE, got '%s'", kv);
  if (o->md_count == sizeof o->md / sizeof o->md[0]) die("too many --metadata entries");
  char *k = strndup(kv, (size_t)(eq - kv));
  for (char *p = k; *p; p++) {
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
      die("--metadata: invalid character in key '%s'", k);
  }
  o->md[o->md_count].key = k;
  o->md[o->md_count].value = (const uint8_t *)(eq + 1);
  o->md[o->md_count].value_len = strlen(eq + 1);
  o->md_count++;
}

static void parse_cli(int argc, char **argv, cli *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = -1;
  o->connections = o->inflight = 1;
  o->duration = 10;
  o->warmup = 1;
  o->size = 64;
  o->mode = "unary";
  static const struct {
    const char *name;
    int cmds;
    bool has_value;
  } opts[] = {
      {"ca", C_NET, true},          {"cert", C_NET, true},         {"key", C_NET, true},
      {"pki-dir", C_NET, true},     {"server-name", C_NET, true}, {"dns-server", C_NET, true},  {"insecure", C_NET, false},
      {"plaintext", C_NET, false},  {"transport", C_NET, true},
      {"timeout", C_NET, true},     {"metadata", C_NET, true},     {"config", C_NET, true},
      {"log-level", C_ALL, true},   {"data", C_EXEC, true},        {"data-file", C_EXEC, true},
      {"signature", C_EXEC, true},  {"hex", C_EXEC | C_STREAM, false}, {"json", C_EXEC | C_BENCH, false},
      {"service", C_HEALTH, true},  {"connections", C_BENCH, true}, {"inflight", C_BENCH, true},
      {"duration", C_BENCH, true},  {"warmup", C_BENCH, true},     {"size", C_BENCH, true},
      {"mode", C_BENCH, true},      {"force", C_CERTS, false},     {"idempotent", C_EXEC | C_BENCH, false},
  };
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage_text, stdout);
      exit(0);
    }
    if (strcmp(a, "--version") == 0) {
      printf(PROG " %s\n", AMN_VERSION);
      exit(0);
    }
    if (strcmp(a, "-v") == 0) {
      o->log_level = "debug";
      continue;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == 0) {
      /* positional: URL(s), then the command, then (certs) its arguments */
      if (!o->cmd) {
        static const struct { const char *n; int c; } cmds[] = {
            {"execute", C_EXEC}, {"stream", C_STREAM}, {"health", C_HEALTH}, {"bench", C_BENCH}, {"certs", C_CERTS}};
        for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++)
          if (strcmp(a, cmds[k].n) == 0) o->cmd = cmds[k].c, o->cmd_name = cmds[k].n;
        if (!o->cmd) add_urls(o, a);
      } else if (o->cmd == C_CERTS && !o->certs_init_seen) {
        if (strcmp(a, "init") != 0) die("unknown certs command '%s' (only: certs init [DIR] [--force])", a);
        o->certs_init_seen = true;
      } else if (o->cmd == C_CERTS && !o->certs_dir) {
        o->certs_dir = a;
      } else {
        die("unexpected argument '%s' after the command '%s' (see --help)", a, o->cmd_name);
      }
      continue;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    size_t k;
    for (k = 0; k < sizeof opts / sizeof opts[0]; k++)
      if (strlen(opts[k].name) == nlen && strncmp(opts[k].name, name, nlen) == 0) break;
    if (k == sizeof opts / sizeof opts[0]) die("unknown option '%.*s' (see --help)", (int)(nlen + 2), a);
    const char *v = NULL;
    if (opts[k].has_value) {
      if (eq) v = eq + 1;
      else if (i + 1 < argc) v = argv[++i];
      else die("option '--%s' needs a value", opts[k].name);
    } else if (eq) {
      die("option '--%s' takes no value", opts[k].name);
    }
    if (o->seen_count < 64) {
      o->seen_name[o->seen_count] = opts[k].name;
      o->seen_cmds[o->seen_count++] = opts[k].cmds;
    }
    const char *n = opts[k].name;
    if (!strcmp(n, "ca")) o->ca = v;
    else if (!strcmp(n, "cert")) o->cert = v;
    else if (!strcmp(n, "key")) o->key = v;
    else if (!strcmp(n, "pki-dir")) o->pki_dir = v;
    else if (!strcmp(n, "server-name")) o->server_name = v;
    else if (!strcmp(n, "dns-server")) o->dns_server = v;
    else if (!strcmp(n, "plaintext")) o->insecure = true;
    else if (!strcmp(n, "insecure")) {
      fprintf(stderr, PROG ": warning: --insecure is deprecated, use --plaintext (the same: no TLS at all)\n");
      o->insecure = true;
    }
    else if (!strcmp(n, "timeout")) o->timeout_ms = parse_timeout_ms("--timeout", v);
    else if (!strcmp(n, "metadata")) add_metadata(o, v);
    else if (!strcmp(n, "config")) o->config = v;
    else if (!strcmp(n, "transport")) {
      if (strcmp(v, "h2") && strcmp(v, "h3") && strcmp(v, "auto")) die("--transport: expected h2, h3 or auto, not '%s'", v);
      o->transport = v;
    }
    else if (!strcmp(n, "log-level")) o->log_level = v;
    else if (!strcmp(n, "data")) o->data = v;
    else if (!strcmp(n, "data-file")) o->data_file = v;
    else if (!strcmp(n, "signature")) o->signature = v;
    else if (!strcmp(n, "hex")) o->hex = true;
    else if (!strcmp(n, "json")) o->json = true;
    else if (!strcmp(n, "service")) o->service = v;
    else if (!strcmp(n, "connections")) o->connections = parse_int("--connections", v, 1, 1024);
    else if (!strcmp(n, "inflight")) o->inflight = parse_int("--inflight", v, 1, 100000);
    else if (!strcmp(n, "duration")) o->duration = parse_duration("--duration", v, 1, 0.001, 1e6);
    else if (!strcmp(n, "warmup")) o->warmup = parse_duration("--warmup", v, 1, 0, 1e6);
    else if (!strcmp(n, "size")) o->size = parse_int("--size", v, 0, 2147483647);
    else if (!strcmp(n, "mode")) o->mode = v;
    else if (!strcmp(n, "force")) o->force = true;
    else if (!strcmp(n, "idempotent")) o->idempotent = true;
  }
  if (!o->cmd) die("no command given (execute, stream, health, bench or certs; see --help)");
  for (size_t i = 0; i < o->seen_count; i++)
    if (!(o->seen_cmds[i] & o->cmd)) die("option '--%s' is not valid for '%s' (see --help)", o->seen_name[i], o->cmd_name);
  if (o->cmd == C_CERTS) {
    if (!o->certs_init_seen) die("usage: " PROG " certs init [DIR] [--force]");
    if (o->url_count) die("certs init takes no URL");
  }
  if ((o->ca || o->cert || o->key) && !(o->ca && o->cert && o->key)) die("--ca, --cert and --key must be given together");
  if (o->ca && o->pki_dir) die("--pki-dir cannot be combined with --ca/--cert/--key");
  if (o->insecure && (o->ca || o->pki_dir)) die("--plaintext cannot be combined with --ca/--cert/--key or --pki-dir");
  if (o->cmd == C_EXEC && !o->data == !o->data_file) die("execute needs exactly one of --data or --data-file");
  if (o->cmd == C_EXEC && o->hex && o->json) die("--hex and --json are exclusive");
  if (o->cmd == C_BENCH) {
    if (strcmp(o->mode, "unary") != 0 && strcmp(o->mode, "stream") != 0)
      die("--mode: expected unary or stream, got '%s'", o->mode);
    if (o->inflight < o->connections)
      die("--inflight (%lld) must be at least --connections (%lld)", o->inflight, o->connections);
  }
}

/* ------------------------------------------------------------------ */
/* Client set-up                                                       */
/* ------------------------------------------------------------------ */

typedef struct net {
  amn_client_opts copts;
  amn_call_opts call;       /* deadline (timeout) + metadata */
  amn_metadata md;
  uint32_t timeout_ms;      /* effective deadline of unary calls */
  bool timeout_given;
  char pki_storage[3 * 4096];
} net;

static void setup_net(cli *o, amn_config *cfg, net *n) {
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
      die("cannot determine the default PKI directory (set HOME or AMATERS_NET_PKI_DIR, or use --pki-dir / --ca)");
    if (amn_pki_paths(dir, "client", &n->copts.tls, n->pki_storage, sizeof n->pki_storage) != 0)
      die("PKI directory path too long: %s", dir);
    if (access(n->copts.tls.ca_path, R_OK) != 0)
      die("no development PKI in %s (run '" PROG " certs init' or start amaters-netd once, or pass --ca/--cert/--key)",
          dir);
    debugf("TLS files from the PKI directory %s", dir);
  }
  n->timeout_given = o->timeout_ms >= 0;
  n->timeout_ms = (uint32_t)(n->timeout_given ? o->timeout_ms : cfg->client.timeout_ms);
  n->md.entries = o->md;
  n->md.count = o->md_count;
  n->call.metadata = &n->md;
  n->call.timeout_ms = n->timeout_ms;
  n->call.idempotent = o->idempotent;
}

static amn_client *client_new(net *n) {
  amn_client *c = NULL;
  char err[1024] = "";
  int rc = amn_client_new(&c, &n->copts, err, sizeof err);
  if (rc) die("%s", err[0] ? err : amn_strerror(rc));
  return c;
}

/* ------------------------------------------------------------------ */
/* execute                                                             */
/* ------------------------------------------------------------------ */

/* The transport an endpoint uses, as the bench reports it. */
static const char *tp_name(amn_transport t) { return t == AMN_TRANSPORT_H3 ? "h3" : t == AMN_TRANSPORT_H2 ? "h2" : "-"; }

static void json_str(FILE *f, const uint8_t *p, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = p[i];
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch == '\n') fputs("\\n", f);
    else if (ch == '\r') fputs("\\r", f);
    else if (ch == '\t') fputs("\\t", f);
    else if (ch < 0x20 || ch == 0x7f) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f); /* bytes >= 0x80 only reach here as valid UTF-8 */
  }
  fputc('"', f);
}

/* true for valid UTF-8 without control characters other than \t \n \r. */
static bool printable_utf8(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = p[i];
    if (c < 0x80) {
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) return false;
      i++;
      continue;
    }
    size_t len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || i + len > n) return false;
    uint32_t cp = c & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

static void base64_out(FILE *f, const uint8_t *p, size_t n) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    fputc(t[v >> 18], f);
    fputc(t[(v >> 12) & 63], f);
    fputc(i + 1 < n ? t[(v >> 6) & 63] : '=', f);
    fputc(i + 2 < n ? t[v & 63] : '=', f);
  }
}

/* Metadata as a JSON object; "-bin" values in base64; repeated keys are
 * joined with ", " as HTTP does. */
static void json_md(FILE *f, const amn_md *md, size_t n) {
  fputc('{', f);
  bool first = true;
  for (size_t i = 0; i < n; i++) {
    bool dup = false;
    for (size_t j = 0; j < i; j++) dup |= strcmp(md[j].key, md[i].key) == 0;
    if (dup) continue;
    if (!first) fputc(',', f);
    first = false;
    json_str(f, (const uint8_t *)md[i].key, strlen(md[i].key));
    fputs(":\"", f);
    size_t kl = strlen(md[i].key);
    bool bin = kl > 4 && strcmp(md[i].key + kl - 4, "-bin") == 0;
    bool sep = false;
    for (size_t j = i; j < n; j++) {
      if (strcmp(md[j].key, md[i].key) != 0) continue;
      if (sep) fputs(", ", f);
      sep = true;
      if (bin) {
        base64_out(f, md[j].value, md[j].value_len);
      } else { /* printable ASCII by the library's contract; escape anyway */
        for (size_t k = 0; k < md[j].value_len; k++) {
          uint8_t ch = md[j].value[k];
          if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
          else if (ch < 0x20 || ch >= 0x7f) fprintf(f, "\\u%04x", ch);
          else fputc(ch, f);
        }
      }
    }
    fputc('"', f);
  }
  fputc('}', f);
}

static int cmd_execute(cli *o, net *n) {
  size_t qlen = 0;
  uint8_t *q = o->data ? (uint8_t *)strdup(o->data) : slurp(o->data_file, &qlen);
  if (o->data) qlen = strlen(o->data);
  if (!q) die("out of memory");
  amn_client *c = client_new(n);
  amn_result r;
  uint8_t *proof = NULL;
  size_t proof_len = 0;
  const char *sig = o->signature ? o->signature : "";
  int rc = amn_client_execute(c, q, qlen, (const uint8_t *)sig, strlen(sig), &n->call, &r, &proof, &proof_len);
  free(q);
  int code;
  if (rc) {
    code = fail_status(status_of_err(rc), amn_strerror(rc));
    amn_client_free(c);
    return code;
  }
  code = (int)r.code;
  if (o->json) {
    FILE *f = stdout;
    fprintf(f, "{\"status\":\"%s\",\"code\":%d,\"message\":", amn_status_name(code), code);
    json_str(f, (const uint8_t *)r.message, strlen(r.message ? r.message : ""));
    fputs(",\"result_hex\":\"", f);
    hex_out(f, r.data, r.len);
    fputs("\",\"result\":", f);
    if (code == AMN_STATUS_OK && printable_utf8(r.data, r.len)) json_str(f, r.data, r.len);
    else fputs("null", f);
    fputs(",\"proof_hex\":\"", f);
    hex_out(f, proof, proof_len);
    fputs("\",\"initial_metadata\":", f);
    json_md(f, r.initial_md, r.initial_md_count);
    fputs(",\"trailing_metadata\":", f);
    json_md(f, r.trailing_md, r.trailing_md_count);
    fputs("}\n", f);
  } else if (code == AMN_STATUS_OK) {
    if (o->hex) {
      hex_out(stdout, r.data, r.len);
      fputc('\n', stdout);
    } else {
      if (r.len) fwrite(r.data, 1, r.len, stdout);
      /* raw bytes as they are; a newline only for a terminal */
      if (isatty(STDOUT_FILENO) && (!r.len || r.data[r.len - 1] != '\n')) fputc('\n', stdout);
    }
  }
  if (fflush(stdout) != 0) {
    fprintf(stderr, PROG ": cannot write the output: %s\n", strerror(errno));
    if (code == 0) code = AMN_STATUS_UNKNOWN;
  }
  if (r.code != AMN_STATUS_OK) fail_status(code, r.message);
  free(proof);
  amn_result_free(&r);
  amn_client_free(c);
  return code;
}

/* ------------------------------------------------------------------ */
/* stream                                                              */
/* ------------------------------------------------------------------ */

typedef struct sstate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  unsigned writable_gen; /* bumped by on_writable */
  bool closed;
  int code;
  char *message;
  bool hex;
  bool bad_response;
} sstate;

static void s_on_message(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  sstate *st = ud;
  amn_pair_view v;
  if (amn_pair_decode(msg, len, &v) != 0) {
    st->bad_response = true;
    fprintf(stderr, PROG ": malformed QueryResponse (%zu bytes) ignored\n", len);
    return;
  }
  /* printing may block on a full pipe: acceptable for a command-line tool */
  if (st->hex) hex_out(stdout, v.f1, v.f1_len);
  else if (v.f1_len) fwrite(v.f1, 1, v.f1_len, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

static void s_on_writable(amn_cstream *s, void *ud) {
  sstate *st = ud;
  pthread_mutex_lock(&st->mu);
  st->writable_gen++;
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
}

static void s_on_close(amn_cstream *s, const amn_result *res, void *ud) {
  sstate *st = ud;
  pthread_mutex_lock(&st->mu);
  st->closed = true;
  st->code = (int)res->code;
  st->message = strdup(res->message ? res->message : "");
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
}

/* stdin line reader on read(2) + poll, so that waiting for input notices
 * when the call has ended (stdio's getline would block until input). */
typedef struct lreader {
  char *buf;
  size_t start, len, cap;
  bool eof;
} lreader;

static bool stream_closed(sstate *st) {
  pthread_mutex_lock(&st->mu);
  bool c = st->closed;
  pthread_mutex_unlock(&st->mu);
  return c;
}

/* Next line without its '\n' in *line: returns its length; -1 at the end
 * of input (a last unterminated line comes first); -2 if the call ended. */
static ssize_t read_line(lreader *r, char **line, sstate *st) {
  for (;;) {
    char *nl = r->len > r->start ? memchr(r->buf + r->start, '\n', r->len - r->start) : NULL;
    if (nl || (r->eof && r->len > r->start)) {
      size_t end = nl ? (size_t)(nl - r->buf) : r->len;
      *line = r->buf + r->start;
      r->start = nl ? end + 1 : end;
      return (ssize_t)(end - (size_t)(*line - r->buf));
    }
    if (r->eof) return -1;
    if (r->start) {
      memmove(r->buf, r->buf + r->start, r->len - r->start);
      r->len -= r->start;
      r->start = 0;
    }
    if (r->len == r->cap) {
      r->cap = r->cap ? r->cap * 2 : 65536;
      r->buf = realloc(r->buf, r->cap);
      if (!r->buf) die("out of memory");
    }
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    int pr = poll(&pfd, 1, 200);
    if (pr == 0 || (pr < 0 && errno == EINTR)) {
      if (stream_closed(st)) return -2;
      continue;
    }
    ssize_t n = read(STDIN_FILENO, r->buf + r->len, r->cap - r->len);
    if (n > 0) r->len += (size_t)n;
    else if (n == 0 || (errno != EINTR && errno != EAGAIN)) r->eof = true;
  }
}

static int cmd_stream(cli *o, net *n) {
  sstate st = {.hex = o->hex};
  pthread_mutex_init(&st.mu, NULL);
  pthread_cond_init(&st.cv, NULL);
  amn_client *c = client_new(n);
  amn_call_opts copts = n->call;
  copts.timeout_ms = n->timeout_given ? n->timeout_ms : 0; /* interactive: a deadline only on request */
  amn_cstream_cbs cbs = {s_on_message, s_on_close, s_on_writable};
  amn_cstream *s = NULL;
  int rc = amn_client_stream_open(c, AMN_METHOD_EXECUTE_STREAM, &copts, &cbs, &st, &s);
  if (rc) {
    amn_client_free(c);
    return fail_status(status_of_err(rc), amn_strerror(rc));
  }
  lreader lr = {0};
  char *line;
  size_t bufcap = 0;
  uint8_t *buf = NULL;
  ssize_t len;
  int local_err = 0;
  while (!local_err && (len = read_line(&lr, &line, &st)) >= 0) {
    size_t need = amn_pair_encoded_size((size_t)len, 0);
    if (need > bufcap) {
      bufcap = need;
      buf = realloc(buf, bufcap);
      if (!buf) die("out of memory");
    }
    size_t m = amn_pair_encode(buf, (const uint8_t *)line, (size_t)len, NULL, 0);
    for (;;) {
      pthread_mutex_lock(&st.mu);
      unsigned gen = st.writable_gen;
      bool closed = st.closed;
      pthread_mutex_unlock(&st.mu);
      if (closed) break;
      rc = amn_cstream_send(s, buf, m);
      if (rc != AMN_EAGAIN) break;
      /* backpressure: wait for on_writable (re-check every second anyway) */
      pthread_mutex_lock(&st.mu);
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += 1;
      while (st.writable_gen == gen && !st.closed && pthread_cond_timedwait(&st.cv, &st.mu, &ts) == 0) {
      }
      pthread_mutex_unlock(&st.mu);
    }
    pthread_mutex_lock(&st.mu);
    bool closed = st.closed;
    pthread_mutex_unlock(&st.mu);
    if (closed) break; /* the server ended the call early: report its status */
    if (rc == AMN_ECLOSED) break;
    if (rc) local_err = rc;
  }
  free(lr.buf);
  free(buf);
  if (local_err) amn_cstream_cancel(s);
  else amn_cstream_close_send(s);
  pthread_mutex_lock(&st.mu);
  while (!st.closed) pthread_cond_wait(&st.cv, &st.mu);
  pthread_mutex_unlock(&st.mu);
  amn_cstream_release(s);
  amn_client_free(c);
  int code = st.code;
  if (local_err) code = fail_status(status_of_err(local_err), amn_strerror(local_err));
  else if (code != AMN_STATUS_OK) fail_status(code, st.message);
  else if (st.bad_response) code = fail_status(AMN_STATUS_INTERNAL, "malformed QueryResponse received");
  free(st.message);
  pthread_mutex_destroy(&st.mu);
  pthread_cond_destroy(&st.cv);
  return code;
}

/* ------------------------------------------------------------------ */
/* health                                                              */
/* ------------------------------------------------------------------ */

static int cmd_health(cli *o, net *n) {
  amn_client *c = client_new(n);
  bool serving = false;
  amn_status_code st = AMN_STATUS_OK;
  char err[1024] = "";
  int rc = amn_client_health(c, o->service ? o->service : "", n->timeout_ms, &serving, &st, err, sizeof err);
  amn_client_free(c);
  if (rc == AMN_EIO && st != AMN_STATUS_OK) {
    /* err is "STATUS_NAME: message" already */
    fprintf(stderr, "%s\n", err);
    return st;
  }
  if (rc) return fail_status(status_of_err(rc), err[0] ? err : amn_strerror(rc));
  puts(serving ? "SERVING" : "NOT_SERVING");
  return serving ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* bench                                                               */
/* ------------------------------------------------------------------ */

typedef struct bench bench;

typedef struct bclient {
  amn_client *c;
  amn_hist hist; /* written only by this client's I/O thread */
  bench *b;
} bclient;

typedef struct bslot {
  bclient *bc;
  bench *b;
  uint64_t t_send;
  amn_cstream *s;
  bool half_closed; /* stream: we ended it */
  bool want_send;   /* stream: a send got AMN_EAGAIN */
} bslot;

struct bench {
  bool stream;
  size_t size;
  uint8_t *payload, *req; /* payload; encoded QueryRequest */
  size_t req_len;
  uint64_t t_measure, t_end; /* monotonic ns, fixed before the first call */
  amn_call_opts copts;
  atomic_ullong ok_total, errors;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int active; /* slots still running (under mu) */
  bslot **parked; /* unary slots whose call failed, re-sent by the main thread after a pause (under mu) */
  bslot **unparked; /* the main thread's copy of them */
  int nparked;
  bool over; /* the run is over: no more parking (under mu) */
  char first_error[512];
};

#define B_ERROR_PAUSE_NS 10000000ull /* a slot whose call failed sends again after 10 ms */

static void b_error(bench *b, int code, const char *msg) {
  if (atomic_fetch_add(&b->errors, 1) == 0) {
    pthread_mutex_lock(&b->mu);
    snprintf(b->first_error, sizeof b->first_error, "%s: %s", amn_status_name(code), msg ? msg : "");
    pthread_mutex_unlock(&b->mu);
  }
}

static void b_slot_done(bench *b) {
  pthread_mutex_lock(&b->mu);
  b->active--;
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

/* Checks an echoed QueryResponse: the payload back, byte for byte at the
 * ends (a full compare would make the client the bottleneck at 1 MiB). */
static bool b_check(bench *b, const uint8_t *msg, size_t len) {
  amn_pair_view v;
  if (amn_pair_decode(msg ? msg : (const uint8_t *)"", len, &v) != 0 || v.f1_len != b->size) return false;
  size_t k = b->size < 64 ? b->size : 64;
  return !k || (memcmp(v.f1, b->payload, k) == 0 && memcmp(v.f1 + b->size - k, b->payload + b->size - k, k) == 0);
}

/* A successful response: counted when the call ran entirely inside the
 * measurement window. Returns true if the slot should go on. */
static bool b_record(bslot *sl, uint64_t now) {
  bench *b = sl->b;
  atomic_fetch_add_explicit(&b->ok_total, 1, memory_order_relaxed);
  if (sl->t_send >= b->t_measure && now <= b->t_end) amn_hist_record(&sl->bc->hist, now - sl->t_send);
  return now < b->t_end;
}

static void b_unary_issue(bslot *sl);

static void b_unary_done(const amn_result *res, void *ud) {
  bslot *sl = ud;
  bench *b = sl->b;
  uint64_t now = now_ns();
  bool more;
  if (res->code != AMN_STATUS_OK) {
    b_error(b, res->code, res->message);
    more = now < b->t_end;
  } else if (!b_check(b, res->data, res->len)) {
    b_error(b, AMN_STATUS_DATA_LOSS, "the echoed payload differs from the request");
    more = now < b->t_end;
  } else {
    more = b_record(sl, now);
  }
  if (more && res->code != AMN_STATUS_OK) {
    /* no busy loop against a failing server (calls fail at once while
     * the pool waits to reconnect): the main thread sends it again */
    pthread_mutex_lock(&b->mu);
    bool parked = !b->over;
    if (parked) b->parked[b->nparked++] = sl;
    pthread_mutex_unlock(&b->mu);
    if (!parked) b_slot_done(b);
  } else if (more) {
    b_unary_issue(sl);
  } else {
    b_slot_done(b);
  }
}

/* Main thread: sends the calls of the slots parked after a failure again
 * (those parked until now: one that fails again waits for the next round),
 * or ends those slots when the run is over. */
static void b_unpark(bench *b, bool over) {
  pthread_mutex_lock(&b->mu);
  int k = b->nparked;
  memcpy(b->unparked, b->parked, (size_t)k * sizeof *b->unparked);
  b->nparked = 0;
  pthread_mutex_unlock(&b->mu);
  for (int i = 0; i < k; i++) {
    if (over) b_slot_done(b);
    else b_unary_issue(b->unparked[i]);
  }
}

static void b_unary_issue(bslot *sl) {
  sl->t_send = now_ns();
  int rc = amn_client_unary_async(sl->bc->c, AMN_METHOD_EXECUTE, sl->b->req, sl->b->req_len, &sl->b->copts,
                                  b_unary_done, sl);
  if (rc) {
    b_error(sl->b, status_of_err(rc), amn_strerror(rc));
    b_slot_done(sl->b);
  }
}

static void b_stream_send(bslot *sl) {
  sl->t_send = now_ns();
  int rc = amn_cstream_send(sl->s, sl->b->req, sl->b->req_len);
  if (rc == AMN_EAGAIN) {
    sl->want_send = true;
  } else if (rc) {
    /* ECLOSED: on_close reports the status; anything else is ours */
    if (rc != AMN_ECLOSED) b_error(sl->b, status_of_err(rc), amn_strerror(rc));
    if (rc != AMN_ECLOSED) amn_cstream_cancel(sl->s);
  }
}

static void b_s_message(amn_cstream *s, const uint8_t *msg, size_t len, void *ud) {
  bslot *sl = ud;
  uint64_t now = now_ns();
  bool more;
  if (!b_check(sl->b, msg, len)) {
    b_error(sl->b, AMN_STATUS_DATA_LOSS, "the echoed payload differs from the request");
    more = now < sl->b->t_end;
  } else {
    more = b_record(sl, now);
  }
  if (more) {
    b_stream_send(sl);
  } else if (!sl->half_closed) {
    sl->half_closed = true;
    amn_cstream_close_send(s);
  }
}

static void b_s_writable(amn_cstream *s, void *ud) {
  bslot *sl = ud;
  if (sl->want_send) {
    sl->want_send = false;
    b_stream_send(sl);
  }
}

static void b_s_close(amn_cstream *s, const amn_result *res, void *ud) {
  bslot *sl = ud;
  if (res->code != AMN_STATUS_OK) b_error(sl->b, res->code, res->message);
  else if (!sl->half_closed) b_error(sl->b, AMN_STATUS_INTERNAL, "the server ended a stream early");
  b_slot_done(sl->b);
}

static void json_num(FILE *f, const char *key, double v, bool last) {
  fprintf(f, "\"%s\":%.1f%s", key, v, last ? "" : ",");
}

static int cmd_bench(cli *o, net *n) {
  char err[1024] = "";
  int C = (int)o->connections, M = (int)o->inflight;
  bench *b = calloc(1, sizeof *b);
  bclient *cl = calloc((size_t)C, sizeof *cl);
  bslot *slots = calloc((size_t)M, sizeof *slots);
  if (!b || !cl || !slots || !(b->parked = calloc((size_t)M, sizeof *b->parked)) ||
      !(b->unparked = calloc((size_t)M, sizeof *b->unparked)))
    die("out of memory");
  b->stream = strcmp(o->mode, "stream") == 0;
  b->size = (size_t)o->size;
  b->payload = malloc(b->size ? b->size : 1);
  b->req_len = amn_pair_encoded_size(b->size, 0);
  b->req = malloc(b->req_len ? b->req_len : 1);
  if (!b->payload || !b->req) die("out of memory");
  for (size_t i = 0; i < b->size; i++) b->payload[i] = (uint8_t)('a' + i % 26);
  amn_pair_encode(b->req, b->payload, b->size, NULL, 0);
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->cv, NULL);
  /* messages up to the payload size plus framing slack */
  if (n->copts.max_send_message < b->size + 64) n->copts.max_send_message = n->copts.max_recv_message = b->size + 64;

  for (int i = 0; i < C; i++) {
    cl[i].b = b;
    amn_hist_init(&cl[i].hist);
    cl[i].c = client_new(n);
    int rc = amn_client_connect(cl[i].c, err, sizeof err);
    if (rc) {
      int code = fail_status(AMN_STATUS_UNAVAILABLE, err);
      for (int k = 0; k <= i; k++) amn_client_free(cl[k].c);
      return code;
    }
  }
  debugf("%d connection(s) established", C);
  /* a pool minimum (e.g. thousands of connections for a scale test) is
   * reached before the load starts, so that handshakes do not compete with
   * it; bounded to 120 s */
  if (n->copts.pool_min_connections > 1) {
    uint64_t t0 = now_ns();
    for (;;) {
      uint32_t ready = 0, want = 0;
      for (int i = 0; i < C; i++) {
        amn_endpoint_stats st[16];
        size_t k = amn_client_stats(cl[i].c, st, 16, NULL);
        for (size_t j = 0; j < k && j < 16; j++) {
          ready += st[j].connections;
          want += n->copts.pool_min_connections;
        }
      }
      double el = (now_ns() - t0) / 1e9;
      if (ready >= want || el > 120) {
        fprintf(stderr, PROG ": bench: %u of %u pooled connections ready after %.1f s\n", ready, want, el);
        break;
      }
      usleep(200000);
    }
  }

  uint64_t start = now_ns();
  uint64_t warm_ns = (uint64_t)(o->warmup * 1e9), dur_ns = (uint64_t)(o->duration * 1e9);
  b->t_measure = start + warm_ns;
  b->t_end = b->t_measure + dur_ns;
  /* every call carries a deadline so the end of the run is bounded: the
   * unary timeout, or for a stream the whole run plus 30 s */
  b->copts = n->call;
  uint32_t grace = n->timeout_ms ? n->timeout_ms : 30000;
  if (b->stream) b->copts.timeout_ms = (uint32_t)((warm_ns + dur_ns) / 1000000u) + 30000u;
  else b->copts.timeout_ms = n->timeout_ms;
  b->active = M;

  for (int i = 0; i < M; i++) {
    bslot *sl = &slots[i];
    sl->bc = &cl[i % C];
    sl->b = b;
    if (!b->stream) {
      b_unary_issue(sl);
      continue;
    }
    amn_cstream_cbs cbs = {b_s_message, b_s_close, b_s_writable};
    int rc = amn_client_stream_open(sl->bc->c, AMN_METHOD_EXECUTE_STREAM, &b->copts, &cbs, sl, &sl->s);
    if (rc) {
      b_error(b, status_of_err(rc), amn_strerror(rc));
      b_slot_done(b);
      continue;
    }
    b_stream_send(sl);
  }

  /* progress once per second for runs longer than 3 s */
  bool progress = o->warmup + o->duration > 3;
  unsigned long long last_ok = 0;
  for (int sec = 1;; sec++) {
    uint64_t tick = start + (uint64_t)sec * 1000000000ull, now = now_ns();
    if (tick > b->t_end) tick = b->t_end;
    while (tick > now) { /* slots parked after a failure go again every 10 ms */
      uint64_t step = tick - now < B_ERROR_PAUSE_NS ? tick - now : B_ERROR_PAUSE_NS;
      struct timespec ts = {(time_t)(step / 1000000000ull), (long)(step % 1000000000ull)};
      while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
      }
      now = now_ns();
      if (now < b->t_end) b_unpark(b, false);
    }
    if (tick >= b->t_end) break;
    if (progress) {
      unsigned long long okc = atomic_load(&b->ok_total);
      fprintf(stderr, PROG ": bench [%3ds%s] %llu calls/s, %llu errors\n", sec, tick <= b->t_measure ? " warm-up" : "",
              okc - last_ok, (unsigned long long)atomic_load(&b->errors));
      last_ok = okc;
    }
  }

  /* wait for the calls in flight (bounded by their deadlines) */
  pthread_mutex_lock(&b->mu);
  b->over = true;
  pthread_mutex_unlock(&b->mu);
  b_unpark(b, true);
  pthread_mutex_lock(&b->mu);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += grace / 1000 + 35;
  while (b->active > 0 && pthread_cond_timedwait(&b->cv, &b->mu, &until) == 0) {
  }
  int stuck = b->active;
  pthread_mutex_unlock(&b->mu);
  if (stuck) {
    fprintf(stderr, PROG ": %d call(s) or stream(s) did not complete\n", stuck);
    atomic_fetch_add(&b->errors, (unsigned long long)stuck);
  }
  /* streams: release; clients: close (cancels whatever is left) */
  for (int i = 0; i < M; i++)
    if (slots[i].s) amn_cstream_release(slots[i].s);
  /* calls and failures per URL, summed over the clients (warm-up included) */
  size_t neps = amn_client_stats(cl[0].c, NULL, 0, NULL); /* URLs, or their addresses (spread_addresses) */
  amn_endpoint_stats *eps = calloc(neps ? neps : 1, sizeof *eps), *one = calloc(neps ? neps : 1, sizeof *one);
  char(*names)[600] = calloc(neps ? neps : 1, sizeof *names); /* the clients go before the summary */
  uint64_t retries = 0;
  if (!eps || !one || !names) die("out of memory");
  for (int i = 0; i < C; i++) {
    uint64_t r = 0;
    size_t k = amn_client_stats(cl[i].c, one, neps, &r);
    retries += r;
    for (size_t j = 0; j < k && j < neps; j++) {
      eps[j].calls_started += one[j].calls_started;
      eps[j].calls_ok += one[j].calls_ok;
      eps[j].calls_failed += one[j].calls_failed;
      eps[j].connects += one[j].connects;
      eps[j].connect_failures += one[j].connect_failures;
      if (!eps[j].transport) eps[j].transport = one[j].transport;
      if (names) snprintf(names[j], sizeof names[j], "%s", one[j].url);
    }
  }
  free(one);
  for (int i = 0; i < C; i++) amn_client_free(cl[i].c);

  amn_hist h;
  amn_hist_init(&h);
  for (int i = 0; i < C; i++) amn_hist_merge(&h, &cl[i].hist);
  unsigned long long errors = atomic_load(&b->errors);
  double qps = (double)h.count / o->duration;
  double mbps = qps * 2.0 * (double)b->size / 1e6;
  double p50 = amn_hist_percentile(&h, 0.50) / 1e3, p90 = amn_hist_percentile(&h, 0.90) / 1e3;
  double p99 = amn_hist_percentile(&h, 0.99) / 1e3, p999 = amn_hist_percentile(&h, 0.999) / 1e3;
  double mx = (double)h.max / 1e3, mn = h.count ? (double)h.min / 1e3 : 0, mean = amn_hist_mean(&h) / 1e3;
  if (o->json) {
    FILE *f = stdout;
    fprintf(f, "{\"mode\":\"%s\",\"connections\":%d,\"inflight\":%d,\"size\":%zu,", o->mode, C, M, b->size);
    json_num(f, "duration_s", o->duration, false);
    json_num(f, "warmup_s", o->warmup, false);
    fprintf(f, "\"calls\":%llu,\"errors\":%llu,\"qps\":%.1f,\"mb_per_s\":%.3f,", (unsigned long long)h.count, errors,
            qps, mbps);
    json_num(f, "min_us", mn, false);
    json_num(f, "mean_us", mean, false);
    json_num(f, "p50_us", p50, false);
    json_num(f, "p90_us", p90, false);
    json_num(f, "p99_us", p99, false);
    json_num(f, "p999_us", p999, false);
    json_num(f, "max_us", mx, false);
    fprintf(f, "\"retries\":%llu,\"endpoints\":[", (unsigned long long)retries);
    for (size_t j = 0; j < neps; j++) {
      fputs(j ? ",{\"url\":" : "{\"url\":", f);
      json_str(f, (const uint8_t *)names[j], strlen(names[j]));
      fprintf(f, ",\"transport\":\"%s\",\"calls\":%llu,\"ok\":%llu,\"failed\":%llu,\"connects\":%llu,"
                 "\"connect_failures\":%llu}",
              tp_name(eps[j].transport), (unsigned long long)eps[j].calls_started, (unsigned long long)eps[j].calls_ok,
              (unsigned long long)eps[j].calls_failed, (unsigned long long)eps[j].connects,
              (unsigned long long)eps[j].connect_failures);
    }
    fputs("],\"first_error\":", f);
    if (errors && b->first_error[0]) json_str(f, (const uint8_t *)b->first_error, strlen(b->first_error));
    else fputs("null", f);
    fputs("}\n", f);
  } else {
    printf("bench %s: %d connection%s, %d in flight, %zu-byte payload, %.1f s measured after %.1f s warm-up\n",
           o->mode, C, C > 1 ? "s" : "", M, b->size, o->duration, o->warmup);
    printf("  calls    %llu (%.1f/s), errors %llu, %.3f MB/s payload both ways\n", (unsigned long long)h.count, qps,
           errors, mbps);
    printf("  latency  min %.1f  mean %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (us)\n", mn, mean,
           p50, p90, p99, p999, mx);
    for (size_t j = 0; j < neps; j++)
      printf("  %s  %s, %llu calls (%llu ok, %llu failed), %llu connection%s, %llu connect failure%s\n", names[j],
             tp_name(eps[j].transport), (unsigned long long)eps[j].calls_started, (unsigned long long)eps[j].calls_ok,
             (unsigned long long)eps[j].calls_failed, (unsigned long long)eps[j].connects,
             eps[j].connects == 1 ? "" : "s", (unsigned long long)eps[j].connect_failures,
             eps[j].connect_failures == 1 ? "" : "s");
    if (retries) printf("  retries  %llu call attempt%s re-sent\n", (unsigned long long)retries, retries == 1 ? "" : "s");
    if (errors && b->first_error[0]) printf("  first error: %s\n", b->first_error);
  }
  free(eps);
  free(names);
  fflush(stdout);
  int code = 0;
  if (errors) fprintf(stderr, "%s (%llu errors)\n", b->first_error[0] ? b->first_error : "errors", errors);
  if (errors) code = h.count ? AMN_STATUS_UNKNOWN : AMN_STATUS_UNAVAILABLE;
  free(b->payload);
  free(b->req);
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv);
  free(b->parked);
  free(b->unparked);
  free(b);
  free(cl);
  free(slots);
  return code;
}

/* ------------------------------------------------------------------ */
/* certs init                                                          */
/* ------------------------------------------------------------------ */

static int cmd_certs(cli *o) {
  char dir[4096], err[1024] = "";
  if (o->certs_dir) snprintf(dir, sizeof dir, "%s", o->certs_dir);
  else if (amn_pki_default_dir(dir, sizeof dir) != 0) die("cannot determine the default PKI directory; give DIR");
  if (amn_pki_init(dir, o->force, err, sizeof err) != 0) die("cannot create the PKI in %s: %s", dir, err);
  static const char *const files[] = {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "client.pem",
                                      "client-key.pem"};
  printf("development PKI in %s:\n", dir);
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) printf("  %s/%s\n", dir, files[i]);
  return 0;
}

int main(int argc, char **argv) {
  /* Messages of hundreds of KiB to MiB would otherwise each get a fresh
   * mmap (glibc's threshold lags one size behind): page faults and page
   * zeroing cost more than the copies. Keep them in the heap instead. */
  mallopt(M_MMAP_THRESHOLD, 256 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
  cli o;
  parse_cli(argc, argv, &o);
  if (o.log_level) {
    int l = amn_log_level_parse(o.log_level);
    if (l < 0) die("unknown log level '%s' (error, warn, info, debug)", o.log_level);
    g_level = l;
  }
  amn_log_set_level((amn_log_level)g_level);
  signal(SIGPIPE, SIG_IGN);
  if (o.cmd == C_CERTS) return cmd_certs(&o);

  amn_config cfg;
  amn_config_init(&cfg);
  char err[1024] = "";
  if (o.config && amn_config_load(&cfg, o.config, err, sizeof err) != 0) die("%s", err);
  if (amn_config_apply_env(&cfg, err, sizeof err) != 0) die("%s", err);
  net *n = calloc(1, sizeof *n);
  if (!n) die("out of memory");
  setup_net(&o, &cfg, n);
  int code;
  switch (o.cmd) {
  case C_EXEC: code = cmd_execute(&o, n); break;
  case C_STREAM: code = cmd_stream(&o, n); break;
  case C_HEALTH: code = cmd_health(&o, n); break;
  default: code = cmd_bench(&o, n); break;
  }
  free(n);
  for (size_t i = 0; i < o.url_count; i++) free(o.urls[i]);
  for (size_t i = 0; i < o.md_count; i++) free((char *)o.md[i].key);
  amn_config_free(&cfg);
  return code;
}
