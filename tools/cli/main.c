/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli — command-line client of amaters-net: call (any method),
 * list and describe (server reflection), execute, stream, health, bench,
 * and `certs init` (development PKI). This file: the command line and main;
 * the commands are in the other files of tools/cli/.
 *
 * Exit status: the gRPC status code of the call (0 = OK); sysexits(3) codes
 * for the rest (cli.h): 64 usage, 65 request data, 66 input file, 69 no
 * connection to any URL, 70 internal, 73 certs init cannot write, 74 I/O,
 * 78 configuration.
 */
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage_text[] =
    "usage: " PROG " [global options] [URL...] COMMAND [command options]\n"
    "       " PROG " certs init [DIR] [--force] [NAME...]\n"
    "       " PROG " certs issue NAME [--spiffe URI]... [--dns NAME]... [--out DIR] [--pki-dir DIR]\n"
    "       " PROG " certs revoke CERT.pem [--next-update DURATION] [--pki-dir DIR]\n"
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
    "  --crl FILE              refuse a server whose certificate a CRL of FILE (PEM or\n"
    "                          DER, or a directory of them) lists (default tls.crl_path)\n"
    "  --plaintext             plaintext HTTP/2 without TLS (http:// URLs only)\n"
    "  --insecure              deprecated name of --plaintext (warns)\n"
    "  --transport h2|h3|auto  HTTP/2 over TCP (default), HTTP/3 over QUIC, or auto:\n"
    "                          per URL, QUIC races TCP (QUIC first; TCP after 250 ms\n"
    "                          without a QUIC handshake, or at once if UDP is refused);\n"
    "                          the winner is kept until it fails\n"
    "  --timeout DURATION      call deadline, e.g. 500ms, 2s, 1m (a bare number is\n"
    "                          milliseconds; default client.timeout_ms, 30000; 0 = none)\n"
    "  --metadata KEY=VALUE    request metadata (repeatable)\n"
    "  -H, --header 'KEY: VALUE'  request metadata as curl and grpcurl write it (repeatable)\n"
    "  --idempotent            execute, call, bench: the calls may be re-sent after UNAVAILABLE\n"
    "                          (up to client.max_retries times, on another connection)\n"
    "  --sign                  execute, stream, bench: sign every query with the client\n"
    "                          key (client_signature; docs/SIGNATURES.md; default\n"
    "                          client.sign_queries)\n"
    "  --verify-proof          execute: check the result's server_proof against the\n"
    "                          server's certificate; DATA_LOSS when it is missing or\n"
    "                          does not verify (default client.verify_proofs)\n"
    "  --config FILE           TOML configuration ([client], [tls]); AMATERS_NET_* vars apply\n"
    "  --log-level LEVEL       error|warn|info|debug (default warn); -v = debug\n"
    "  --help, --version\n"
    "\n"
    "Commands:\n"
    "  call METHOD [-d DATA | --data-file FILE|-] [--output json|raw|hex|base64] [--stream]\n"
    "        calls any method (package.Service/Method or package.Service.Method). The\n"
    "        request is the serialized message (-d, --data DATA; --data-file, default\n"
    "        standard input), or a JSON object (proto3 JSON, bytes in base64) for the\n"
    "        messages known here: amaters.v1 QueryRequest and grpc.health.v1\n"
    "        HealthCheckRequest. Output: JSON for their responses, else raw. Streams:\n"
    "        ExecuteStream (and any method with --stream) sends one request per input\n"
    "        line (a line not starting with '{' is ExecuteStream's query bytes) and\n"
    "        prints one response per line; Health/Watch prints each status\n"
    "  list [SERVICE]\n"
    "        the server's services, or the methods of SERVICE (server reflection,\n"
    "        grpc.reflection.v1, else v1alpha)\n"
    "  describe [SYMBOL]\n"
    "        a service, method, message or enum as the server's descriptors tell;\n"
    "        without SYMBOL every service\n"
    "  execute (--data STRING | --data-file FILE|-) [--signature STRING] [--hex] [--json]\n"
    "        one Execute call; prints result_bytes (raw, hex, or a JSON object)\n"
    "  stream [--hex]\n"
    "        one ExecuteStream: every stdin line is a query; prints each result line\n"
    "  health [--service NAME]\n"
    "        prints SERVING or NOT_SERVING; exit 0 only when SERVING\n"
    "  bench [--connections C] [--inflight M] [--duration D] [--warmup D] [--size N]\n"
    "        [--mode unary|stream] [--rps R] [-n|--count K] [--json] [--csv FILE|-]\n"
    "        [--plot FILE.svg] [--new-connection | --resume]\n"
    "        load test against the echo service: C clients (each with its own pool\n"
    "        over all URLs), N-byte payloads, measured for D after the warm-up\n"
    "        (durations: 1.5s, 500ms, 2m; a bare number is seconds), or until K\n"
    "        calls after the warm-up were measured (-n; --duration then only bounds\n"
    "        the run). Closed loop by default: M calls in flight, each sent again\n"
    "        when it ends (a unary call that failed after 10 ms: no busy loop).\n"
    "        --rps R: open loop, unary calls sent at R per second whatever the\n"
    "        server does (at most M in flight: more wait, and count as late);\n"
    "        latency counts from each call's intended send time, so a stalled\n"
    "        server shows in the percentiles instead of hiding (coordinated\n"
    "        omission). The summary counts calls and failures per URL.\n"
    "        Defaults: C=1 M=1 D=10s warmup=1s N=64 unary. --json: one JSON object with\n"
    "        loop (closed|open), rps, count, qps, mb_per_s (payload bytes both ways),\n"
    "        min_us, mean_us, p50_us .. p999_us, max_us, errors, calls, connections,\n"
    "        inflight, size, mode, duration_s, warmup_s, late_sends, max_backlog,\n"
    "        histogram (every non-empty bucket: [low_ns, high_ns, calls]), series\n"
    "        (per second of sending, warm-up included: t, warmup, calls, errors,\n"
    "        p50_us .. p999_us, max_us), retries and endpoints (per URL: url,\n"
    "        transport, calls, ok, failed, connects, connect_failures).\n"
    "        --csv FILE: the series as CSV (- = stdout); --plot FILE.svg: the\n"
    "        percentiles over time and the latency histogram, drawn by gnuplot.\n"
    "        --new-connection: handshakes. Each of the C clients makes one call at a\n"
    "        time, each on a new connection (connect, full mTLS handshake, the\n"
    "        call, close): calls/s is handshakes/s, the latency is the first\n"
    "        call's (connect start to response). --resume: the same, but each\n"
    "        connection resumes the TLS session of the client's previous one\n"
    "        (HTTP/3 only: QUIC 0-RTT, the calls marked idempotent go as early\n"
    "        data; HTTP/2 has no session resumption). The summary and --json\n"
    "        add new_connection, resume, connects (connections made, warm-up\n"
    "        included), handshakes_per_s and, over HTTP/3, quic (handshakes,\n"
    "        resumed, early_attempted, early_accepted, early_rejected, early_calls,\n"
    "        tickets_received)\n"
    "  certs init [DIR] [--force] [NAME...]\n"
    "        creates a development PKI (default: the default PKI directory); each NAME\n"
    "        (host name or IP address, as mkcert takes them) is added to the server\n"
    "        certificate beside localhost, 127.0.0.1 and ::1, which is then issued anew\n"
    "  certs issue NAME [--spiffe URI]... [--dns NAME]... [--out DIR]\n"
    "        issues another client certificate from the development CA (of --pki-dir,\n"
    "        else the default PKI directory): CN=NAME, the URI SANs (SPIFFE IDs) and\n"
    "        DNS SANs given; writes DIR/NAME.pem and DIR/NAME-key.pem (DIR: --out, else\n"
    "        the PKI directory)\n"
    "  certs revoke CERT.pem [--next-update DURATION]\n"
    "        adds CERT.pem to the development CA's CRL, crl.pem in the PKI directory\n"
    "        (signed by the CA; next update DURATION from now, default 30d; a leading\n"
    "        '-' makes an already expired CRL, for tests)\n"
    "\n"
    "Exit status: the gRPC status code of the call (0 = OK, 1..16; errors are printed\n"
    "as \"STATUS_NAME: message\" on stderr); list, describe: NOT_FOUND (5) for an\n"
    "unknown symbol. Otherwise (sysexits): 64 usage (bad option or argument), 65\n"
    "request data (bad JSON), 66 an input file cannot be opened, 69 no connection to\n"
    "any URL (refused, unresolvable, TLS handshake failed; printed as UNAVAILABLE),\n"
    "70 internal (out of memory), 73 certs init cannot write, 74 I/O error\n"
    "(reading input, writing output), 78 configuration (config file, TLS files, PKI).\n"
    "health: 1 when NOT_SERVING. bench: 0 without errors, 2 with some, 14 if no call\n"
    "succeeded, 73 if the --csv or --plot file cannot be written, 69 without gnuplot.\n";


void add_urls(cli *o, const char *arg) {
  char *copy = strdup(arg), *save = NULL;
  for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (!strstr(t, "://")) die("'%s' is neither a command nor a URL (see --help)", t);
    if (o->url_count == sizeof o->urls / sizeof o->urls[0]) die("too many URLs");
    o->urls[o->url_count++] = strdup(t);
  }
  free(copy);
}

/* One metadata entry: KEY and VALUE split at `sep` ('=' for --metadata,
 * ':' for -H, whose value loses its leading blanks as curl's does). */
static void add_md(cli *o, const char *flag, const char *kv, char sep) {
  const char *eq = strchr(kv, sep);
  if (!eq || eq == kv)
    die("%s: expected %s, got '%s'", flag, sep == '=' ? "KEY=VALUE" : "'KEY: VALUE'", kv);
  if (o->md_count == sizeof o->md / sizeof o->md[0]) die("too many metadata entries (--metadata, -H)");
  char *k = strndup(kv, (size_t)(eq - kv));
  if (!k) die_code(EX_SOFTWARE, "out of memory");
  for (char *p = k; *p; p++) {
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
      die("%s: invalid character in key '%s'", flag, k);
  }
  const char *v = eq + 1;
  if (sep == ':') v += strspn(v, " \t");
  o->md[o->md_count].key = k;
  o->md[o->md_count].value = (const uint8_t *)v;
  o->md[o->md_count].value_len = strlen(v);
  o->md_count++;
}

void add_metadata(cli *o, const char *kv) { add_md(o, "--metadata", kv, '='); }
void add_header(cli *o, const char *kv) { add_md(o, "-H/--header", kv, ':'); }

void parse_cli(int argc, char **argv, cli *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = -1;
  o->connections = o->inflight = 1;
  o->duration = 10;
  o->warmup = 1;
  o->size = 64;
  o->mode = "unary";
  o->next_update_s = 30 * 86400;
  static const struct {
    const char *name;
    int cmds;
    bool has_value;
  } opts[] = {
      {"ca", C_NET, true},          {"cert", C_NET, true},         {"key", C_NET, true},
      {"pki-dir", C_NET | C_CERTS, true}, {"server-name", C_NET, true}, {"dns-server", C_NET, true},
      {"insecure", C_NET, false},
      {"crl", C_NET, true},         {"spiffe", C_CERTS, true},     {"dns", C_CERTS, true},
      {"out", C_CERTS, true},       {"next-update", C_CERTS, true},
      {"plaintext", C_NET, false},  {"transport", C_NET, true},
      {"timeout", C_NET, true},     {"metadata", C_NET, true},     {"config", C_NET, true},
      {"log-level", C_ALL, true},   {"data", C_EXEC | C_CALL, true}, {"data-file", C_EXEC | C_CALL, true},
      {"signature", C_EXEC, true},  {"hex", C_EXEC | C_STREAM, false}, {"json", C_EXEC | C_BENCH, false},
      {"service", C_HEALTH, true},  {"connections", C_BENCH, true}, {"inflight", C_BENCH, true},
      {"duration", C_BENCH, true},  {"warmup", C_BENCH, true},     {"size", C_BENCH, true},
      {"mode", C_BENCH, true},      {"rps", C_BENCH, true},        {"count", C_BENCH, true},
      {"csv", C_BENCH, true},       {"plot", C_BENCH, true},
      {"new-connection", C_BENCH, false}, {"resume", C_BENCH, false},
      {"force", C_CERTS, false},    {"idempotent", C_EXEC | C_BENCH | C_CALL, false},
      {"header", C_NET, true},      {"output", C_CALL, true},      {"stream", C_CALL, false},
      {"sign", C_EXEC | C_STREAM | C_BENCH, false},      {"verify-proof", C_EXEC, false},
  };
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    /* the short options of curl and grpcurl: -H 'KEY: VALUE', -d DATA */
    static const struct { const char *s, *l; } shorts[] = {{"-H", "--header"}, {"-d", "--data"}};
    for (size_t k = 0; k < sizeof shorts / sizeof shorts[0]; k++)
      if (strcmp(a, shorts[k].s) == 0) a = shorts[k].l;
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
    if (strcmp(a, "-n") == 0) a = "--count"; /* like h2load and ab */
    if (strncmp(a, "--", 2) != 0 || a[2] == 0) {
      /* positional: URL(s), then the command, then (certs) its arguments */
      if (!o->cmd) {
        static const struct { const char *n; int c; } cmds[] = {
            {"execute", C_EXEC}, {"stream", C_STREAM}, {"health", C_HEALTH}, {"bench", C_BENCH}, {"certs", C_CERTS},
            {"call", C_CALL}, {"list", C_LIST}, {"describe", C_DESCRIBE}};
        for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++)
          if (strcmp(a, cmds[k].n) == 0) o->cmd = cmds[k].c, o->cmd_name = cmds[k].n;
        if (!o->cmd) add_urls(o, a);
      } else if (o->cmd == C_CERTS && !o->certs_sub) {
        if (strcmp(a, "init") && strcmp(a, "issue") && strcmp(a, "revoke"))
          die("unknown certs command '%s' (certs init, certs issue or certs revoke)", a);
        o->certs_sub = a;
      } else if (o->cmd == C_CERTS && !o->certs_arg) {
        o->certs_arg = a;
      } else if (o->cmd == C_CERTS && !strcmp(o->certs_sub, "init") && o->arg_count < sizeof o->args / sizeof o->args[0]) {
        o->args[o->arg_count++] = (char *)a; /* extra names of the server certificate */
      } else if (o->cmd == C_CALL && !o->method) {
        o->method = a;
      } else if ((o->cmd == C_LIST || o->cmd == C_DESCRIBE) && !o->symbol) {
        o->symbol = a;
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
    else if (!strcmp(n, "crl")) o->crl = v;
    else if (!strcmp(n, "spiffe") || !strcmp(n, "dns")) {
      bool sp = n[0] == 's';
      size_t *cnt = sp ? &o->spiffe_count : &o->dns_count;
      if (*cnt == 15) die("too many --%s", n);
      (sp ? o->spiffe : o->dns)[(*cnt)++] = v;
    }
    else if (!strcmp(n, "out")) o->out_dir = v;
    else if (!strcmp(n, "next-update")) {
      bool neg = v[0] == '-';
      o->next_update_s = (long long)parse_duration("--next-update", v + neg, 1, 0, 1e9) * (neg ? -1 : 1);
      o->next_update_given = true;
    }
    else if (!strcmp(n, "plaintext")) o->insecure = true;
    else if (!strcmp(n, "insecure")) {
      fprintf(stderr, PROG ": warning: --insecure is deprecated, use --plaintext (the same: no TLS at all)\n");
      o->insecure = true;
    }
    else if (!strcmp(n, "timeout")) o->timeout_ms = parse_timeout_ms("--timeout", v);
    else if (!strcmp(n, "metadata")) add_metadata(o, v);
    else if (!strcmp(n, "header")) add_header(o, v);
    else if (!strcmp(n, "output")) {
      if (strcmp(v, "json") && strcmp(v, "raw") && strcmp(v, "hex") && strcmp(v, "base64"))
        die("--output: expected json, raw, hex or base64, not '%s'", v);
      o->output = v;
    }
    else if (!strcmp(n, "stream")) o->stream_mode = true;
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
    else if (!strcmp(n, "inflight")) o->inflight = parse_int("--inflight", v, 1, 100000), o->inflight_given = true;
    else if (!strcmp(n, "duration")) o->duration = parse_duration("--duration", v, 1, 0.001, 1e6), o->duration_given = true;
    else if (!strcmp(n, "warmup")) o->warmup = parse_duration("--warmup", v, 1, 0, 1e6);
    else if (!strcmp(n, "size")) o->size = parse_int("--size", v, 0, 2147483647);
    else if (!strcmp(n, "mode")) o->mode = v;
    else if (!strcmp(n, "rps")) o->rps = parse_rate("--rps", v);
    else if (!strcmp(n, "count")) o->count = parse_int("--count", v, 1, 1000000000000LL);
    else if (!strcmp(n, "csv")) o->csv = v;
    else if (!strcmp(n, "plot")) o->plot = v;
    else if (!strcmp(n, "new-connection")) o->new_conn = true;
    else if (!strcmp(n, "resume")) o->new_conn = o->resume = true;
    else if (!strcmp(n, "force")) o->force = true;
    else if (!strcmp(n, "idempotent")) o->idempotent = true;
    else if (!strcmp(n, "sign")) o->sign = true;
    else if (!strcmp(n, "verify-proof")) o->verify_proof = true;
  }
  if (!o->cmd) die("no command given (call, list, describe, execute, stream, health, bench or certs; see --help)");
  for (size_t i = 0; i < o->seen_count; i++)
    if (!(o->seen_cmds[i] & o->cmd)) die("option '--%s' is not valid for '%s' (see --help)", o->seen_name[i], o->cmd_name);
  if (o->cmd == C_CERTS) {
    if (!o->certs_sub) die("usage: " PROG " certs init|issue|revoke ... (see --help)");
    if (o->url_count) die("certs takes no URL");
    bool init = !strcmp(o->certs_sub, "init"), issue = !strcmp(o->certs_sub, "issue");
    if (!init && !o->certs_arg) die("usage: " PROG " certs %s %s", o->certs_sub, issue ? "NAME" : "CERT.pem");
    if (init && (o->pki_dir || o->spiffe_count || o->dns_count || o->out_dir || o->next_update_given))
      die("certs init takes only [DIR] [--force] [NAME...]");
    if (!init && o->force) die("--force is only for certs init");
    if (!issue && (o->spiffe_count || o->dns_count || o->out_dir)) die("--spiffe, --dns and --out are for certs issue");
    if (issue && o->next_update_given) die("--next-update is for certs revoke");
  }
  if ((o->ca || o->cert || o->key) && !(o->ca && o->cert && o->key)) die("--ca, --cert and --key must be given together");
  if (o->ca && o->pki_dir) die("--pki-dir cannot be combined with --ca/--cert/--key");
  if (o->insecure && (o->ca || o->pki_dir)) die("--plaintext cannot be combined with --ca/--cert/--key or --pki-dir");
  if (o->cmd == C_EXEC && !o->data == !o->data_file) die("execute needs exactly one of --data or --data-file");
  if (o->cmd == C_CALL && !o->method) die("usage: " PROG " [URL] call METHOD [-d DATA | --data-file FILE|-] (see --help)");
  if (o->cmd == C_CALL && o->data && o->data_file) die("call takes one of --data or --data-file");
  if (o->cmd == C_EXEC && o->hex && o->json) die("--hex and --json are exclusive");
  if (o->cmd == C_BENCH) {
    if (strcmp(o->mode, "unary") != 0 && strcmp(o->mode, "stream") != 0)
      die("--mode: expected unary or stream, got '%s'", o->mode);
    if (o->new_conn) { /* one call at a time per client, each on its own connection */
      const char *f = o->resume ? "--resume" : "--new-connection";
      if (strcmp(o->mode, "unary") != 0) die("%s measures unary calls (no --mode stream)", f);
      if (o->rps > 0) die("%s is closed loop only (no --rps)", f);
      if (o->inflight_given && o->inflight != o->connections)
        die("%s: one call at a time per connection: --inflight must equal --connections", f);
      o->inflight = o->connections;
    }
    if (o->inflight < o->connections)
      die("--inflight (%lld) must be at least --connections (%lld)", o->inflight, o->connections);
    if (o->rps > 0 && strcmp(o->mode, "unary") != 0)
      die("--rps sends unary calls at a constant rate; --mode stream is closed loop only");
    if (o->rps > 0 && o->sign) die("--sign is for the closed loop (without --rps)");
  }
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
  if (o.config && amn_config_load(&cfg, o.config, err, sizeof err) != 0) die_code(EX_CONFIG, "%s", err);
  if (amn_config_apply_env(&cfg, err, sizeof err) != 0) die_code(EX_CONFIG, "%s", err);
  net *n = calloc(1, sizeof *n);
  if (!n) die_code(EX_SOFTWARE, "out of memory");
  setup_net(&o, &cfg, n);
  int code;
  switch (o.cmd) {
  case C_EXEC: code = cmd_execute(&o, n); break;
  case C_STREAM: code = cmd_stream(&o, n); break;
  case C_HEALTH: code = cmd_health(&o, n); break;
  case C_CALL: code = cmd_call(&o, n); break;
  case C_LIST: code = cmd_list(&o, n); break;
  case C_DESCRIBE: code = cmd_describe(&o, n); break;
  default: code = cmd_bench(&o, n); break;
  }
  free(n);
  for (size_t i = 0; i < o.url_count; i++) free(o.urls[i]);
  for (size_t i = 0; i < o.md_count; i++) free((char *)o.md[i].key);
  amn_config_free(&cfg);
  return code;
}

