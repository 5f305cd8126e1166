/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-netd — the amaters-net server daemon.
 *
 * Serves the AmateRS service with the built-in echo handlers or a plug-in's
 * (--handler, include/amn/plugin.h), and the gRPC health service, over
 * HTTP/2 and HTTP/3 with mutual TLS. Settings come from, in
 * increasing priority: built-in defaults, --config FILE, AMATERS_NET_*
 * environment variables, command-line flags. SIGINT/SIGTERM stop it
 * gracefully (exit 0); a second signal during the drain exits at once.
 * SIGHUP reloads the configuration (reload_config: the keys that can change
 * at run time are applied, the others are logged as needing a restart; a
 * file that does not parse, or TLS files that do not load, keep the running
 * configuration) and the certificate, key, CA and CRL files, and the
 * authorization policy ([[auth.rule]] of --config's file). Under systemd
 * (netd_sd.c) it notifies READY, RELOADING, STOPPING, STATUS and the
 * watchdog, and serves the sockets of socket activation. SIGUSR1 makes
 * the log one level more verbose (up to debug), SIGUSR2 one level quieter
 * (down to error). With --admin (or [admin] bind_address) a separate
 * plain-HTTP listener serves GET /metrics (Prometheus) and GET /healthz.
 * With HTTP/3, the QUIC secret (stateless resets, address tokens) comes from
 * quic.secret_path, else from quic-secret.key in the development PKI
 * directory (both created 0600 when missing), else it is random per process.
 */
#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amn/amn.h"
#include "netd_handler.h"
#include "netd_sd.h"

#define PROG "amaters-netd"
#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: " PROG " [options]\n"
    "Serves amaters.v1.AmateRS (the echo handlers, or a plug-in's) and grpc.health.v1.Health\n"
    "over gRPC.\n"
    "Without options: mTLS on 127.0.0.1:7878 with the development PKI in the default\n"
    "PKI directory (created if missing).\n"
    "\n"
    "  --config FILE          TOML configuration (see include/amn/config.h); then\n"
    "                         AMATERS_NET_<SECTION>_<KEY> variables; flags override both\n"
    "  --listen HOST:PORT     address to bind (default 127.0.0.1:7878; port 0 = any)\n"
    "  --cert FILE --key FILE --ca FILE\n"
    "                         server certificate chain, private key, CA bundle for\n"
    "                         client certificates (all three or none)\n"
    "  --pki-dir DIR          development PKI directory (created if missing)\n"
    "  --plaintext            plaintext HTTP/2 (h2c), NO TLS: only behind a TLS proxy\n"
    "  --insecure             deprecated name of --plaintext (warns)\n"
    "  --allow-tls12          also accept TLS 1.2 clients (default: TLS 1.3 only)\n"
    "  --threads N            event-loop threads (0 = one per core)\n"
    "  --transport h2|h3|both HTTP/2 on TCP, HTTP/3 on UDP, or both on the same port (default both;\n"
    "                         HTTP/2 only with --plaintext)\n"
    "  --log-level LEVEL      error|warn|info|debug (default info)\n"
    "  --log-format text|json every log line as text (default) or as one JSON object\n"
    "  --access-log           one line per call (peer, method, transport, status, duration,\n"
    "                         bytes, deadline)\n"
    "  --check-config [FILE]  check the configuration (FILE, else --config's) and the\n"
    "                         flags, that the TLS files load and the key matches its\n"
    "                         certificate, then exit: 0 when valid, 1 with FILE:LINE and\n"
    "                         the key of the first problem (creates nothing, binds nothing)\n"
    "  --admin [HOST:]PORT    admin HTTP listener: GET /metrics (Prometheus text format)\n"
    "                         and /healthz; HOST defaults to 127.0.0.1 (off by default)\n"
    "  --max-message BYTES    largest message either way (suffix k/m allowed)\n"
    "  --handler echo|PATH.so the handlers: the built-in echo (default), or a plug-in\n"
    "                         (a shared object, see amn/plugin.h; the path needs a '/')\n"
    "  --handler-arg STRING   a string given to the plug-in's init (its own settings)\n"
    "  --help, --version\n"
    "Signals: SIGINT/SIGTERM drain and stop; SIGHUP reloads the configuration file (the keys\n"
    "that can change at run time; the others are logged as needing a restart), the TLS and CRL\n"
    "files and the authorization policy ([[auth.rule]]);\n"
    "SIGUSR1 / SIGUSR2 make the log one level more / less verbose.\n"
    "Exit status: 0 after a clean stop, 2 on a usage, configuration or start-up error;\n"
    "--check-config: 0 valid, 1 not.\n"
    "Under systemd: Type=notify readiness (READY, RELOADING, STOPPING, STATUS, WATCHDOG) and\n"
    "socket activation (a TCP and a UDP socket passed with LISTEN_FDS replace the listen address).\n";

/* Daemon messages, in the library's format (level, text or JSON, journal). */
#define say(level, ...) amn_log_message((amn_log_level)(level), PROG, __VA_ARGS__)

static bool g_checking; /* --check-config: a problem exits 1 */

/* The [[auth.rule]] tables of cfg as a policy (*out NULL when there are
 * none); an error names the rule's FILE:LINE. */
static int build_policy(const amn_config *cfg, amn_authz_policy **out, char *err, size_t errlen) {
  *out = NULL;
  for (size_t i = 0; i < cfg->auth.rule_count; i++) { /* one at a time: the error names the rule's line */
    amn_authz_policy *one = NULL;
    char why[700];
    if (amn_authz_policy_new(&one, &cfg->auth.rules[i], 1, why, sizeof why) != 0) {
      const char *r = strstr(why, "): ");
      snprintf(err, errlen, "%s: auth.rule '%s': %s", cfg->auth.rule_where[i], cfg->auth.rules[i].name,
               r ? r + 3 : why);
      return -1;
    }
    amn_authz_policy_free(one);
  }
  if (cfg->auth.rule_count == 0) return 0;
  return amn_authz_policy_new(out, cfg->auth.rules, cfg->auth.rule_count, err, errlen);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs(PROG ": ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(g_checking ? 1 : EXIT_USAGE);
}

/* Parses a non-negative decimal integer in [lo, hi], with an optional k/m/g
 * (binary) suffix when `suffix` is set. */
static long long parse_int(const char *flag, const char *s, long long lo, long long hi, int suffix) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end == s || errno || v < 0) die("%s: '%s' is not a non-negative integer", flag, s);
  if (suffix && *end) {
    int sh = (*end == 'k' || *end == 'K') ? 10 : (*end == 'm' || *end == 'M') ? 20 : (*end == 'g' || *end == 'G') ? 30 : -1;
    if (sh < 0 || end[1]) die("%s: bad suffix in '%s' (k, m or g)", flag, s);
    if (v > (LLONG_MAX >> sh)) die("%s: '%s' is too large", flag, s);
    v <<= sh;
    end++;
  }
  if (*end) die("%s: '%s' is not an integer", flag, s);
  if (v < lo || v > hi) die("%s: %lld is out of range %lld..%lld", flag, v, lo, hi);
  return v;
}

static amn_transport parse_transport(const char *what, const char *s) {
  if (strcmp(s, "h2") == 0) return AMN_TRANSPORT_H2;
  if (strcmp(s, "h3") == 0) return AMN_TRANSPORT_H3;
  if (strcmp(s, "both") == 0) return AMN_TRANSPORT_BOTH;
  die("%s: unknown transport '%s' (h2, h3 or both)", what, s);
}

/* Command-line flags; NULL / -1 = not given. */
typedef struct flags {
  const char *config, *listen, *cert, *key, *ca, *pki_dir, *transport, *log_level, *log_format, *admin;
  const char *handler, *handler_arg;
  int insecure, allow_tls12, access_log, check;
  long long threads, max_message;
} flags;

static void parse_flags(int argc, char **argv, flags *f) {
  memset(f, 0, sizeof *f);
  f->threads = f->max_message = -1;
  static const struct {
    const char *name;
    size_t off;
  } str_flags[] = {
      {"config", offsetof(flags, config)},       {"listen", offsetof(flags, listen)},
      {"cert", offsetof(flags, cert)},           {"key", offsetof(flags, key)},
      {"ca", offsetof(flags, ca)},               {"pki-dir", offsetof(flags, pki_dir)},
      {"transport", offsetof(flags, transport)}, {"log-level", offsetof(flags, log_level)},
      {"log-format", offsetof(flags, log_format)}, {"admin", offsetof(flags, admin)},
      {"handler", offsetof(flags, handler)},     {"handler-arg", offsetof(flags, handler_arg)},
      {"threads", 0},                            {"max-message", 0}, /* integers: parsed below */
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
    if (strcmp(a, "--plaintext") == 0 || strcmp(a, "--insecure") == 0) {
      if (a[2] == 'i') fprintf(stderr, PROG ": warning: --insecure is deprecated, use --plaintext (the same: no TLS at all)\n");
      f->insecure = 1;
      continue;
    }
    if (strcmp(a, "--allow-tls12") == 0) {
      f->allow_tls12 = 1;
      continue;
    }
    if (strcmp(a, "--access-log") == 0) {
      f->access_log = 1;
      continue;
    }
    if (strcmp(a, "--check-config") == 0 || strncmp(a, "--check-config=", 15) == 0) {
      f->check = 1;
      g_checking = true;
      if (a[14] == '=') f->config = a + 15;
      else if (i + 1 < argc && argv[i + 1][0] != '-') f->config = argv[++i];
      continue;
    }
    if (strncmp(a, "--", 2) != 0) die("unexpected argument '%s' (see --help)", a);
    const char *name = a + 2, *val = NULL;
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    size_t k;
    for (k = 0; k < sizeof str_flags / sizeof str_flags[0]; k++)
      if (strlen(str_flags[k].name) == nlen && strncmp(str_flags[k].name, name, nlen) == 0) break;
    if (k == sizeof str_flags / sizeof str_flags[0]) die("unknown option '%.*s' (see --help)", (int)(nlen + 2), a);
    if (eq) val = eq + 1;
    else if (i + 1 < argc) val = argv[++i];
    else die("option '%s' needs a value", a);
    if (strcmp(str_flags[k].name, "threads") == 0) f->threads = parse_int("--threads", val, 0, 1024, 0);
    else if (strcmp(str_flags[k].name, "max-message") == 0)
      f->max_message = parse_int("--max-message", val, 1, 2147483647, 1);
    else *(const char **)((char *)f + str_flags[k].off) = val;
  }
  if ((f->cert || f->key || f->ca) && !(f->cert && f->key && f->ca))
    die("--cert, --key and --ca must be given together");
  if (f->insecure && (f->cert || f->pki_dir)) die("--plaintext cannot be combined with --cert/--key/--ca or --pki-dir");
  if (f->cert && f->pki_dir) die("--pki-dir cannot be combined with --cert/--key/--ca");
}

/* The settings of amn_server_opts that can change at run time
 * (amn_server_update), from the configuration; a flag wins, as at start. */
static void live_opts(const flags *f, const amn_config *cfg, amn_server_opts *o) {
  size_t maxmsg = (size_t)(f->max_message > 0 ? f->max_message : cfg->server.max_message_bytes);
  o->max_recv_message = o->max_send_message = maxmsg;
  o->max_connections = (uint32_t)cfg->network.max_connections;
  o->idle_timeout_ms = (uint32_t)cfg->network.idle_timeout_ms;
  o->keepalive_interval_ms = (uint32_t)cfg->network.keep_alive_interval_ms;
  o->drain_timeout_ms = (uint32_t)cfg->server.drain_timeout_ms;
  o->handshake_timeout_ms = (uint32_t)cfg->network.handshake_timeout_ms;
  o->quic_retry_threshold = (uint32_t)cfg->quic.retry_threshold;
  o->access_log = f->access_log || cfg->log.access;
  o->tls.allow_tls12 = f->allow_tls12 || cfg->tls.allow_tls12;
}

/* ---- SIGHUP: the configuration again ---------------------------------- */

/* Where the running TLS credentials come from. */
typedef enum { TLS_NONE, TLS_FLAGS, TLS_FILE, TLS_PKI } tls_source;

/* What a reload needs of the running daemon. */
typedef struct daemon_state {
  flags f;
  amn_config cfg;        /* the configuration in force */
  amn_server_opts o;     /* the options in force (their strings point into cfg or flags) */
  tls_source tls;
  amn_server *srv;
} daemon_state;

/* Every key the daemon reads, and whether it can change at run time (the
 * others are logged as needing a restart when they change). The client's
 * keys are not the daemon's. */
typedef enum { K_STR, K_INT, K_BOOL, K_STRS } key_kind; /* K_STRS: char ** then its size_t count */
static const struct daemon_key {
  const char *key;
  key_kind kind;
  size_t off;
  bool live;
  const char *flag; /* a flag that overrides it, or NULL */
} daemon_keys[] = {
#define KEY(k, kind, field, live, flag) {k, kind, offsetof(amn_config, field), live, flag}
    KEY("network.bind_address", K_STR, network.bind_address, false, "--listen"),
    KEY("network.max_connections", K_INT, network.max_connections, true, NULL),
    KEY("network.idle_timeout_ms", K_INT, network.idle_timeout_ms, true, NULL),
    KEY("network.keep_alive_interval_ms", K_INT, network.keep_alive_interval_ms, true, NULL),
    KEY("network.handshake_timeout_ms", K_INT, network.handshake_timeout_ms, true, NULL),
    KEY("network.header_timeout_ms", K_INT, network.header_timeout_ms, false, NULL),
    KEY("network.stall_timeout_ms", K_INT, network.stall_timeout_ms, false, NULL),
    KEY("tls.cert_path", K_STR, tls.cert_path, true, "--cert"),
    KEY("tls.key_path", K_STR, tls.key_path, true, "--key"),
    KEY("tls.ca_path", K_STR, tls.ca_path, true, "--ca"),
    KEY("tls.allow_tls12", K_BOOL, tls.allow_tls12, true, "--allow-tls12"),
    KEY("tls.crl_path", K_STR, tls.crl_path, false, NULL), /* its files are re-read on SIGHUP and when they change */
    KEY("tls.crl_expired", K_STR, tls.crl_expired, false, NULL),
    KEY("quic.max_concurrent_streams", K_INT, quic.max_concurrent_streams, false, NULL),
    KEY("quic.initial_window_size", K_INT, quic.initial_window_size, false, NULL),
    KEY("quic.retry_threshold", K_INT, quic.retry_threshold, true, NULL),
    KEY("quic.secret_path", K_STR, quic.secret_path, false, NULL),
    KEY("server.transport", K_STR, server.transport, false, "--transport"),
    KEY("server.threads", K_INT, server.threads, false, "--threads"),
    KEY("server.log_level", K_STR, server.log_level, true, "--log-level"),
    KEY("server.drain_timeout_ms", K_INT, server.drain_timeout_ms, true, NULL),
    KEY("server.max_message_bytes", K_INT, server.max_message_bytes, true, "--max-message"),
    KEY("server.max_connection_buffer_bytes", K_INT, server.max_connection_buffer_bytes, false, NULL),
    KEY("server.max_server_buffer_bytes", K_INT, server.max_server_buffer_bytes, false, NULL),
    KEY("server.pki_dir", K_STR, server.pki_dir, false, "--pki-dir"),
    KEY("server.insecure", K_BOOL, server.insecure, false, "--plaintext"),
    KEY("server.handler", K_STR, server.handler, false, "--handler"),
    KEY("server.handler_arg", K_STR, server.handler_arg, false, "--handler-arg"),
    KEY("server.reflection", K_BOOL, server.reflection, false, NULL),
    KEY("server.trusted_proxies", K_STRS, server.trusted_proxies, false, NULL),
    KEY("server.forwarded_cert_header", K_STR, server.forwarded_cert_header, false, NULL),
    KEY("admin.bind_address", K_STR, admin.bind_address, false, "--admin"),
    KEY("log.access", K_BOOL, log.access, true, "--access-log"),
    KEY("log.format", K_STR, log.format, true, "--log-format"),
#undef KEY
};

/* The value of key k in cfg as text. */
static const char *key_text(const amn_config *cfg, const struct daemon_key *k, char *buf, size_t cap) {
  const char *p = (const char *)cfg + k->off;
  if (k->kind == K_STR) {
    const char *v = *(char *const *)p;
    snprintf(buf, cap, "%s%s%s", v ? "\"" : "", v ? v : "(unset)", v ? "\"" : "");
  } else if (k->kind == K_STRS) {
    char *const *v = *(char *const *const *)p;
    size_t n = *(const size_t *)(const void *)(p + sizeof(char **)), w = 0;
    w += (size_t)snprintf(buf, cap, "[");
    for (size_t i = 0; i < n && w < cap; i++) w += (size_t)snprintf(buf + w, cap - w, "%s\"%s\"", i ? ", " : "", v[i]);
    if (w < cap) snprintf(buf + w, cap - w, "]");
  } else if (k->kind == K_INT) {
    snprintf(buf, cap, "%lld", (long long)*(const int64_t *)p);
  } else {
    snprintf(buf, cap, "%s", *(const bool *)p ? "true" : "false");
  }
  return buf;
}

static bool flag_given(const flags *f, const char *flag) {
  if (!flag) return false;
  if (strcmp(flag, "--listen") == 0) return f->listen;
  if (strcmp(flag, "--cert") == 0 || strcmp(flag, "--key") == 0 || strcmp(flag, "--ca") == 0) return f->cert;
  if (strcmp(flag, "--allow-tls12") == 0) return f->allow_tls12;
  if (strcmp(flag, "--transport") == 0) return f->transport;
  if (strcmp(flag, "--threads") == 0) return f->threads >= 0;
  if (strcmp(flag, "--log-level") == 0) return f->log_level;
  if (strcmp(flag, "--max-message") == 0) return f->max_message > 0;
  if (strcmp(flag, "--pki-dir") == 0) return f->pki_dir;
  if (strcmp(flag, "--plaintext") == 0) return f->insecure;
  if (strcmp(flag, "--admin") == 0) return f->admin;
  if (strcmp(flag, "--access-log") == 0) return f->access_log;
  if (strcmp(flag, "--log-format") == 0) return f->log_format;
  return false;
}

/* Applies a new configuration `nc` to the running daemon: the one place a
 * reload changes anything. Nothing is applied unless everything can be: the
 * new settings are checked and the authorization policy built first, the
 * TLS files (and the CRLs with them) load in amn_server_update, which
 * applies all of its settings or none; then the policy is swapped in, and every changed key is logged: applied, overridden by
 * a flag, or needing a restart. Returns 0, or -1 with the reason in err
 * (the running configuration stays). */
static int apply_config(daemon_state *d, const amn_config *nc, char *err, size_t errlen) {
  const flags *f = &d->f;
  amn_server_opts no = d->o;
  live_opts(f, nc, &no);
  const char *lvl_s = f->log_level ? f->log_level : nc->server.log_level;
  int lvl = amn_log_level_parse(lvl_s);
  const char *fmt_s = f->log_format ? f->log_format : nc->log.format;
  if (lvl < 0) return snprintf(err, errlen, "server.log_level: unknown log level '%s'", lvl_s), -1;
  if (strcmp(fmt_s, "json") != 0 && strcmp(fmt_s, "text") != 0)
    return snprintf(err, errlen, "log.format: unknown format '%s' (text or json)", fmt_s), -1;
  no.listen = NULL; /* not a run-time setting (and its string is the old configuration's) */
  if (d->tls == TLS_FILE) { /* the [tls] files may move */
    if (!(nc->tls.cert_path && nc->tls.key_path && nc->tls.ca_path))
      return snprintf(err, errlen, "tls.cert_path, tls.key_path and tls.ca_path must be set together"), -1;
    no.tls.cert_path = nc->tls.cert_path;
    no.tls.key_path = nc->tls.key_path;
    no.tls.ca_path = nc->tls.ca_path;
  }
  /* the authorization policy ([[auth.rule]]) builds before anything changes */
  amn_authz_policy *policy = NULL;
  if (build_policy(nc, &policy, err, errlen) != 0) {
    say(AMN_LOG_ERROR, "SIGHUP: authorization policy not reloaded, keeping the previous one: %s", err);
    return -1;
  }
  /* the server's settings and TLS files (the CRLs are read again with them): all or nothing */
  if (amn_server_update(d->srv, &no, err, errlen) != 0) {
    amn_authz_policy_free(policy);
    return -1;
  }
  if (policy || d->cfg.auth.rule_count) {
    size_t n = nc->auth.rule_count;
    if (amn_server_set_authz_policy(d->srv, policy) == 0) /* NULL: the rules were removed */
      say(AMN_LOG_INFO, "SIGHUP: authorization policy reloaded from %s (%zu rule%s)", d->f.config ? d->f.config : "the environment", n,
          n == 1 ? "" : "s");
  }
  amn_log_set_level((amn_log_level)lvl);
  amn_log_set_format(strcmp(fmt_s, "json") == 0 ? AMN_LOG_FORMAT_JSON : AMN_LOG_FORMAT_TEXT);
  for (size_t i = 0; i < sizeof daemon_keys / sizeof daemon_keys[0]; i++) {
    const struct daemon_key *k = &daemon_keys[i];
    char was[600], now[600], where[4200];
    if (strcmp(key_text(&d->cfg, k, was, sizeof was), key_text(nc, k, now, sizeof now)) == 0) continue;
    if (amn_config_where(nc, k->key, where, sizeof where) != 0 &&
        amn_config_where(&d->cfg, k->key, where, sizeof where) != 0)
      snprintf(where, sizeof where, "%s", "default");
    bool tls_moved = strncmp(k->key, "tls.", 4) == 0 && k->kind == K_STR && d->tls != TLS_FILE && !flag_given(f, k->flag);
    if (flag_given(f, k->flag))
      say(AMN_LOG_WARN, "reload: %s changed (%s -> %s, %s) but %s overrides it: not applied", k->key, was, now, where,
          k->flag);
    else if (!k->live || tls_moved)
      say(AMN_LOG_WARN, "reload: %s changed (%s -> %s, %s): needs a restart, still %s until then", k->key, was, now,
          where, was);
    else
      say(AMN_LOG_INFO, "reload: %s changed (%s -> %s, %s): applied", k->key, was, now, where);
  }
  if (!d->o.tls.insecure)
    say(AMN_LOG_INFO, "SIGHUP: TLS certificate, key and CA reloaded from %s, %s, %s", no.tls.cert_path,
        no.tls.key_path, no.tls.ca_path);
  d->o = no;
  return 0;
}

/* SIGHUP: the configuration file again, then the environment, as at start
 * (the flags still win); applied by apply_config, or the running
 * configuration stays. Returns 0 or -1 (the reason in err, with file:line). */
static int reload_config(daemon_state *d, char *err, size_t errlen) {
  amn_config nc;
  amn_config_init(&nc);
  if ((d->f.config && amn_config_load(&nc, d->f.config, err, errlen) != 0) ||
      amn_config_apply_env(&nc, err, errlen) != 0 || apply_config(d, &nc, err, errlen) != 0) {
    amn_config_free(&nc);
    return -1;
  }
  amn_config_free(&d->cfg); /* d->o's strings now point into nc */
  d->cfg = nc;
  return 0;
}

int main(int argc, char **argv) {
  /* Messages of hundreds of KiB to MiB would otherwise each get a fresh
   * mmap (glibc's threshold lags one size behind): page faults and page
   * zeroing cost more than the copies. Keep them in the heap instead. */
  mallopt(M_MMAP_THRESHOLD, 256 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
  flags f;
  parse_flags(argc, argv, &f);
  char err[1024] = "";

  /* defaults <- file <- environment */
  amn_config cfg;
  amn_config_init(&cfg);
  if (f.config && amn_config_load(&cfg, f.config, err, sizeof err) != 0) die("%s", err);
  if (amn_config_apply_env(&cfg, err, sizeof err) != 0) die("%s", err);

  /* <- flags */
  const char *lvl_s = f.log_level ? f.log_level : cfg.server.log_level;
  int lvl = amn_log_level_parse(lvl_s);
  if (lvl < 0) die("unknown log level '%s' (error, warn, info, debug)", lvl_s);
  amn_log_set_level((amn_log_level)lvl);
  const char *fmt_s = f.log_format ? f.log_format : cfg.log.format;
  if (strcmp(fmt_s, "json") == 0) amn_log_set_format(AMN_LOG_FORMAT_JSON);
  else if (strcmp(fmt_s, "text") != 0) die("--log-format: unknown format '%s' (text or json)", fmt_s);

  /* the admin listener: a flag PORT alone means loopback */
  char admin_addr[300] = "";
  if (f.admin) {
    if (strspn(f.admin, "0123456789") == strlen(f.admin)) {
      parse_int("--admin", f.admin, 0, 65535, 0);
      snprintf(admin_addr, sizeof admin_addr, "127.0.0.1:%s", f.admin);
    } else {
      snprintf(admin_addr, sizeof admin_addr, "%s", f.admin);
    }
  } else if (cfg.admin.bind_address) {
    snprintf(admin_addr, sizeof admin_addr, "%s", cfg.admin.bind_address);
  }

  amn_server_opts o;
  amn_server_opts_init(&o);
  o.listen = f.listen ? f.listen : cfg.network.bind_address;
  o.threads = (int)(f.threads >= 0 ? f.threads : cfg.server.threads);
  o.transport = parse_transport(f.transport ? "--transport" : "server.transport",
                                f.transport ? f.transport : cfg.server.transport);
  o.max_connection_buffer = (size_t)cfg.server.max_connection_buffer_bytes;
  o.max_server_buffer = (size_t)cfg.server.max_server_buffer_bytes;
  o.max_concurrent_streams = (uint32_t)cfg.quic.max_concurrent_streams;
  o.initial_window_size = (uint32_t)cfg.quic.initial_window_size;
  o.header_timeout_ms = (uint32_t)cfg.network.header_timeout_ms;
  o.stall_timeout_ms = (uint32_t)cfg.network.stall_timeout_ms;
  live_opts(&f, &cfg, &o);
  o.reflection = cfg.server.reflection;
  o.trusted_proxies = (const char *const *)cfg.server.trusted_proxies;
  o.trusted_proxy_count = cfg.server.trusted_proxy_count;
  o.forwarded_cert_header = cfg.server.forwarded_cert_header;
  o.require_client_signature = cfg.auth.require_client_signature; /* signed queries and results */
  o.signature_window_ms = (uint32_t)cfg.auth.signature_window_ms;
  o.signature_replay_entries = (uint32_t)cfg.auth.signature_replay_entries;
  o.sign_results = cfg.auth.sign_results;

  /* TLS: --insecure | --cert/--key/--ca | [tls] paths | PKI directory.
   * Flags take precedence over everything from the file/environment. */
  static char pki_storage[3 * 4096];
  char pki_dir[4096] = "";
  bool file_tls = cfg.tls.cert_path || cfg.tls.key_path || cfg.tls.ca_path;
  tls_source tls_src = TLS_PKI;
  if (f.insecure || (cfg.server.insecure && !f.cert && !f.pki_dir)) {
    o.tls.insecure = true;
    tls_src = TLS_NONE;
  } else if (f.cert) {
    tls_src = TLS_FLAGS;
    o.tls.cert_path = f.cert;
    o.tls.key_path = f.key;
    o.tls.ca_path = f.ca;
  } else if (file_tls && !f.pki_dir) {
    if (!(cfg.tls.cert_path && cfg.tls.key_path && cfg.tls.ca_path))
      die("tls.cert_path, tls.key_path and tls.ca_path must be set together%s%s", f.config ? " in " : "",
          f.config ? f.config : "");
    o.tls.cert_path = cfg.tls.cert_path;
    o.tls.key_path = cfg.tls.key_path;
    o.tls.ca_path = cfg.tls.ca_path;
    tls_src = TLS_FILE;
  } else {
    const char *d = f.pki_dir ? f.pki_dir : cfg.server.pki_dir;
    if (d) snprintf(pki_dir, sizeof pki_dir, "%s", d);
    else if (amn_pki_default_dir(pki_dir, sizeof pki_dir) != 0)
      die("cannot determine the default PKI directory (set HOME, XDG_DATA_HOME or AMATERS_NET_PKI_DIR, or use --pki-dir)");
    if (f.check && !amn_pki_exists(pki_dir)) {
      printf(PROG ": note: no development PKI in %s yet (created at start)\n", pki_dir);
    } else if (!amn_pki_exists(pki_dir)) {
      say(AMN_LOG_INFO, "no development PKI in %s: creating one (CA, server and client certificates)", pki_dir);
      if (amn_pki_init(pki_dir, false, err, sizeof err) != 0) die("cannot create the PKI in %s: %s", pki_dir, err);
    }
    if (amn_pki_paths(pki_dir, "server", &o.tls, pki_storage, sizeof pki_storage) != 0)
      die("PKI directory path too long: %s", pki_dir);
  }

  o.tls.crl_path = cfg.tls.crl_path; /* revocation: [tls] crl_path, crl_expired */
  o.tls.crl_expired_warn = cfg.tls.crl_expired && strcmp(cfg.tls.crl_expired, "warn") == 0;
  if (o.tls.insecure && o.transport == AMN_TRANSPORT_BOTH) {
    o.transport = AMN_TRANSPORT_H2; /* "h3" alone stays an error (amn_server_new) */
    say(AMN_LOG_INFO, "insecure mode: HTTP/2 only (HTTP/3 needs TLS: QUIC always encrypts)");
  }
  if (o.tls.insecure)
    say(AMN_LOG_WARN, "plaintext mode: serving PLAINTEXT HTTP/2 without TLS or client authentication. Anyone who "
                      "can reach %s can call it.", o.listen);

  /* The TLS files, each checked before use; a problem names where its path
   * came from: the flag, or the config key with its file:line (or env). */
  bool pki_pending = f.check && pki_dir[0] && !amn_pki_exists(pki_dir); /* nothing to check yet */
  if (!o.tls.insecure && !pki_pending) {
    amn_tls_file bad = AMN_TLS_FILE_NONE;
    if (amn_tls_check_files(&o.tls, &bad, err, sizeof err) != 0) {
      static const char *const keys[] = {"tls", "tls.cert_path", "tls.key_path", "tls.ca_path"};
      static const char *const flag_of[] = {"--cert/--key/--ca", "--cert", "--key", "--ca"};
      char where[4200];
      if (f.cert) die("%s: %s", flag_of[bad], err);
      if (pki_dir[0]) die("development PKI %s: %s", pki_dir, err);
      if (amn_config_where(&cfg, keys[bad], where, sizeof where) == 0) die("%s: %s: %s", where, keys[bad], err);
      die("%s: %s", keys[bad], err);
    }
  }

  /* HTTP/3: the QUIC secret that keys stateless resets and address
   * validation tokens, kept in a file so that clients recognise the resets
   * of a restarted daemon (and of its siblings behind the same address) */
  static uint8_t quic_secret[AMN_QUIC_SECRET_LEN];
  char secret_path[4096 + 32] = "";
  bool secret_created = false;
  if (o.transport & AMN_TRANSPORT_H3) {
    if (cfg.quic.secret_path) snprintf(secret_path, sizeof secret_path, "%s", cfg.quic.secret_path);
    else if (pki_dir[0]) snprintf(secret_path, sizeof secret_path, "%s/quic-secret.key", pki_dir);
    FILE *sf = f.check && secret_path[0] ? fopen(secret_path, "rb") : NULL;
    if (f.check && secret_path[0] && !sf && errno == ENOENT) {
      printf(PROG ": note: QUIC secret %s does not exist yet (created at start)\n", secret_path);
      secret_path[0] = 0;
    }
    if (sf) fclose(sf);
    if (secret_path[0]) {
      if (amn_quic_secret_load(secret_path, quic_secret, &secret_created, err, sizeof err) != 0) {
        char where[4200];
        if (cfg.quic.secret_path && amn_config_where(&cfg, "quic.secret_path", where, sizeof where) == 0)
          die("%s: quic.secret_path: %s", where, err);
        die("%s", err);
      }
      o.quic_secret = quic_secret;
    }
  }

  /* The handlers: the built-in echo or a plug-in, loaded (and its ABI
   * checked) before anything starts; --check-config goes no further. */
  netd_handler handler;
  const char *handler_spec = f.handler ? f.handler : cfg.server.handler ? cfg.server.handler : "echo";
  const char *handler_arg = f.handler_arg ? f.handler_arg : f.handler ? NULL : cfg.server.handler_arg;
  if (netd_handler_open(&handler, handler_spec, err, sizeof err) != 0) {
    char where[4200];
    if (!f.handler && amn_config_where(&cfg, "server.handler", where, sizeof where) == 0)
      die("%s: server.handler: %s", where, err);
    die("%s%s", f.handler ? "--handler: " : "", err);
  }

  /* socket activation: the sockets the service manager bound replace the
   * listen address (not under --check-config, which binds nothing) */
  if (!f.check) {
    if (netd_sd_listen_fds(&o.listen_fd, &o.listen_fd_udp, err, sizeof err) != 0) die("%s", err);
    if (o.listen_fd >= 0 || o.listen_fd_udp >= 0)
      say(AMN_LOG_INFO, "socket activation: %s%s%s passed by the service manager (not binding %s)",
          o.listen_fd >= 0 ? "a TCP socket" : "", o.listen_fd >= 0 && o.listen_fd_udp >= 0 ? " and " : "",
          o.listen_fd_udp >= 0 ? "a UDP socket" : "", o.listen);
  }

  amn_server *srv = NULL;
  if (pki_pending) o.tls.insecure = true, o.transport = AMN_TRANSPORT_H2; /* the options alone */
  if (amn_server_new(&srv, &o, err, sizeof err) != 0) {
    char where[4200];
    if (o.tls.crl_path && strstr(err, "CRL") && amn_config_where(&cfg, "tls.crl_path", where, sizeof where) == 0)
      die("%s: tls.crl_path: %s", where, err);
    die("%s", err);
  }
  if (!f.check && netd_handler_init(&handler, srv, handler_arg, err, sizeof err) != 0) {
    amn_server_free(srv);
    die("%s", err);
  }
  amn_authz_policy *policy = NULL;
  if (build_policy(&cfg, &policy, err, sizeof err) != 0) die("%s", err);
  if (policy && amn_server_set_authz_policy(srv, policy) != 0) die("out of memory");
  if (f.check) {
    amn_server_free(srv);
    printf(PROG ": configuration %s%s is valid\n", f.config ? f.config : "(defaults, environment and flags)",
           f.config ? " (with the environment and flags)" : "");
    amn_config_free(&cfg);
    return 0;
  }

  /* Block the stop signals before the library starts its threads (they
   * inherit the mask); the main thread takes them with sigwait. */
  sigset_t stop_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGINT);
  sigaddset(&stop_set, SIGTERM);
  sigaddset(&stop_set, SIGHUP); /* reload, taken by the same sigwait */
  sigaddset(&stop_set, SIGUSR1); /* log level up and down, the same */
  sigaddset(&stop_set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
  /* an ignored signal is never pending (a background job of a shell
   * inherits SIGINT ignored): restore the default so sigwait sees it */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGHUP, SIG_DFL);
  signal(SIGUSR1, SIG_DFL);
  signal(SIGUSR2, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);

  bool notifying = netd_sd_init();
  if (amn_server_start(srv, err, sizeof err) != 0) {
    netd_handler_fini(&handler);
    amn_server_free(srv);
    if (o.listen_fd >= 0 || o.listen_fd_udp >= 0)
      die("cannot start on the sockets passed by the service manager: %s (server.transport or --transport must "
          "match the sockets of the socket unit)", err);
    die("cannot start: %s", err);
  }
  if (handler.dl)
    say(AMN_LOG_INFO, "handlers: the plug-in %s %s from %s", handler.plugin->name ? handler.plugin->name : "(unnamed)",
        handler.plugin->version ? handler.plugin->version : "", handler_spec);
  if (o.listen_fd >= 0) close(o.listen_fd); /* the server has its own duplicates */
  if (o.listen_fd_udp >= 0) close(o.listen_fd_udp);
  amn_admin *admin = NULL;
  if (admin_addr[0]) {
    if (amn_admin_start(&admin, srv, admin_addr, err, sizeof err) != 0) {
      amn_server_free(srv);
      char where[4200];
      if (!f.admin && amn_config_where(&cfg, "admin.bind_address", where, sizeof where) == 0)
        die("%s: admin.bind_address: %s", where, err);
      die("%s", err);
    }
    say(AMN_LOG_INFO, "admin: GET /metrics and /healthz over plain HTTP on %s (port %u)", admin_addr,
        amn_admin_port(admin));
  }
  if (o.tls.insecure) {
    say(AMN_LOG_INFO, "TLS: none (insecure mode)");
  } else {
    if (pki_dir[0]) say(AMN_LOG_INFO, "TLS: development PKI in %s", pki_dir);
    say(AMN_LOG_INFO, "TLS: certificate %s, key %s, client CA %s", o.tls.cert_path, o.tls.key_path, o.tls.ca_path);
  }
  if (secret_path[0])
    say(AMN_LOG_INFO, "HTTP/3: QUIC secret (stateless resets, address tokens) %s %s",
        secret_created ? "created in" : "from", secret_path);
  else if (o.transport & AMN_TRANSPORT_H3)
    say(AMN_LOG_INFO, "HTTP/3: no quic.secret_path: a random QUIC secret, so clients do not recognise the "
                      "stateless resets of a restarted daemon (they wait for their idle timeout)");

  static daemon_state d;
  d.f = f;
  d.cfg = cfg; /* freed through d from now on */
  d.o = o;
  d.tls = tls_src;
  d.srv = srv;
  char addrs[400], admin_port[16] = "";
  if (admin) snprintf(admin_port, sizeof admin_port, "%u", amn_admin_port(admin));
  snprintf(addrs, sizeof addrs, "%s port %u (%s)%s%s", /* e.g. "127.0.0.1:0 port 40123 (HTTP/2 + HTTP/3), admin port 40124" */
           o.listen_fd >= 0 || o.listen_fd_udp >= 0 ? "sockets from the service manager," : o.listen,
           amn_server_port(srv),
           o.transport == AMN_TRANSPORT_H3 ? "HTTP/3" : o.transport == AMN_TRANSPORT_BOTH ? "HTTP/2 + HTTP/3" : "HTTP/2",
           admin ? ", admin port " : "", admin_port);
  /* every listener is bound and served now */
  netd_sd_notify("READY=1\nSTATUS=serving on %s", addrs);

  /* With a service manager, the main thread wakes up at least every 5 s
   * (and twice per watchdog interval) to send WATCHDOG=1 and a STATUS line
   * with the connections; without one it only waits for signals. */
  uint64_t wd = netd_sd_watchdog_usec();
  uint64_t tick_us = wd ? wd / 2 : 5000000;
  if (tick_us > 5000000) tick_us = 5000000;
  char last_reload[300] = "";
  int sig = 0;
  for (;;) {
    if (notifying) {
      struct timespec ts = {(time_t)(tick_us / 1000000), (long)(tick_us % 1000000) * 1000};
      sig = sigtimedwait(&stop_set, NULL, &ts);
      if (sig < 0) {
        amn_server_stats st;
        amn_server_get_stats(srv, &st);
        netd_sd_notify("%sSTATUS=serving on %s; %u connections, %llu calls%s%s", wd ? "WATCHDOG=1\n" : "", addrs,
                       st.connections, (unsigned long long)st.calls_started, last_reload[0] ? "; " : "", last_reload);
        continue;
      }
    } else if (sigwait(&stop_set, &sig) != 0) {
      continue;
    }
    if (sig == SIGUSR1 || sig == SIGUSR2) {
      int l = (int)amn_log_get_level() + (sig == SIGUSR1 ? 1 : -1);
      if (l < AMN_LOG_ERROR) l = AMN_LOG_ERROR;
      if (l > AMN_LOG_DEBUG) l = AMN_LOG_DEBUG;
      amn_log_set_level((amn_log_level)l);
      /* said at the new level itself when it is below info: always shown */
      amn_log_message(l < AMN_LOG_INFO ? (amn_log_level)l : AMN_LOG_INFO, PROG, "%s: log level now %s",
                      sig == SIGUSR1 ? "SIGUSR1" : "SIGUSR2", amn_log_level_name((amn_log_level)l));
      continue;
    }
    if (sig != SIGHUP) break;
    netd_sd_reloading();
    say(AMN_LOG_INFO, "SIGHUP: reloading %s", f.config ? f.config : "the environment (no --config file)");
    time_t now = time(NULL);
    struct tm tm;
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    if (reload_config(&d, err, sizeof err) == 0) {
      say(AMN_LOG_INFO, "SIGHUP: configuration reloaded");
      snprintf(last_reload, sizeof last_reload, "reloaded at %s", when);
    } else {
      say(AMN_LOG_ERROR, "SIGHUP: reload failed, still serving the previous certificate and configuration: %s", err);
      snprintf(last_reload, sizeof last_reload, "reload at %s FAILED, previous configuration kept: %.200s", when, err);
    }
    netd_sd_notify("READY=1\nSTATUS=serving on %s; %s", addrs, last_reload);
  }
  say(AMN_LOG_INFO, "%s received: draining (up to %u ms; send it again to exit at once)", strsignal(sig),
      d.o.drain_timeout_ms);
  {
    amn_server_stats st;
    amn_server_get_stats(srv, &st);
    netd_sd_notify("STOPPING=1\nSTATUS=draining: %u connections (up to %u ms)", st.connections, d.o.drain_timeout_ms);
  }
  amn_server_request_stop(srv);
  /* a second signal gets the default action (immediate exit) */
  pthread_sigmask(SIG_UNBLOCK, &stop_set, NULL);
  amn_server_wait(srv);
  amn_admin_stop(admin); /* /healthz said "draining" until now */
  netd_handler_fini(&handler); /* the plug-in finishes the calls it still holds */
  amn_server_free(srv);
  say(AMN_LOG_INFO, "stopped");
  amn_config_free(&d.cfg);
  return 0;
}
