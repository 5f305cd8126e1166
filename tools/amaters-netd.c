/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-netd — the amaters-net server daemon.
 *
 * Serves the AmateRS service with the built-in echo handlers (and the gRPC
 * health service) over HTTP/2 with mutual TLS. Settings come from, in
 * increasing priority: built-in defaults, --config FILE, AMATERS_NET_*
 * environment variables, command-line flags. SIGINT/SIGTERM stop it
 * gracefully (exit 0); a second signal during the drain exits at once.
 * SIGHUP reloads the certificate, key and CA files (new connections use
 * them; a broken file keeps the current ones and is logged). SIGUSR1 makes
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

#include "amn/amn.h"

#define PROG "amaters-netd"
#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: " PROG " [options]\n"
    "Serves amaters.v1.AmateRS (echo handlers) and grpc.health.v1.Health over gRPC.\n"
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
    "  --insecure             plaintext HTTP/2 (h2c), NO TLS: only behind a TLS proxy\n"
    "  --allow-tls12          also accept TLS 1.2 clients (default: TLS 1.3 only)\n"
    "  --threads N            event-loop threads (0 = one per core)\n"
    "  --transport h2|h3|both HTTP/2 on TCP, HTTP/3 on UDP, or both on the same port (default both;\n"
    "                         HTTP/2 only with --insecure)\n"
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
    "  --help, --version\n"
    "Signals: SIGINT/SIGTERM drain and stop; SIGHUP reloads the TLS certificate, key and CA;\n"
    "SIGUSR1 / SIGUSR2 make the log one level more / less verbose.\n"
    "Exit status: 0 after a clean stop, 2 on a usage, configuration or start-up error;\n"
    "--check-config: 0 valid, 1 not.\n";

/* Daemon messages, in the library's format (level, text or JSON, journal). */
#define say(level, ...) amn_log_message((amn_log_level)(level), PROG, __VA_ARGS__)

static bool g_checking; /* --check-config: a problem exits 1 */

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
    if (strcmp(a, "--insecure") == 0) {
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
  if (f->insecure && (f->cert || f->pki_dir)) die("--insecure cannot be combined with --cert/--key/--ca or --pki-dir");
  if (f->cert && f->pki_dir) die("--pki-dir cannot be combined with --cert/--key/--ca");
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
  size_t maxmsg = (size_t)(f.max_message > 0 ? f.max_message : cfg.server.max_message_bytes);
  o.max_recv_message = o.max_send_message = maxmsg;
  o.max_connection_buffer = (size_t)cfg.server.max_connection_buffer_bytes;
  o.max_server_buffer = (size_t)cfg.server.max_server_buffer_bytes;
  o.max_connections = (uint32_t)cfg.network.max_connections;
  o.idle_timeout_ms = (uint32_t)cfg.network.idle_timeout_ms;
  o.keepalive_interval_ms = (uint32_t)cfg.network.keep_alive_interval_ms;
  o.max_concurrent_streams = (uint32_t)cfg.quic.max_concurrent_streams;
  o.initial_window_size = (uint32_t)cfg.quic.initial_window_size;
  o.drain_timeout_ms = (uint32_t)cfg.server.drain_timeout_ms;
  o.handshake_timeout_ms = (uint32_t)cfg.network.handshake_timeout_ms;
  o.header_timeout_ms = (uint32_t)cfg.network.header_timeout_ms;
  o.stall_timeout_ms = (uint32_t)cfg.network.stall_timeout_ms;
  o.quic_retry_threshold = (uint32_t)cfg.quic.retry_threshold;
  o.access_log = f.access_log || cfg.log.access;
  o.require_client_signature = cfg.auth.require_client_signature; /* signed queries and results */
  o.signature_window_ms = (uint32_t)cfg.auth.signature_window_ms;
  o.signature_replay_entries = (uint32_t)cfg.auth.signature_replay_entries;
  o.sign_results = cfg.auth.sign_results;

  /* TLS: --insecure | --cert/--key/--ca | [tls] paths | PKI directory.
   * Flags take precedence over everything from the file/environment. */
  static char pki_storage[3 * 4096];
  char pki_dir[4096] = "";
  bool file_tls = cfg.tls.cert_path || cfg.tls.key_path || cfg.tls.ca_path;
  if (f.insecure || (cfg.server.insecure && !f.cert && !f.pki_dir)) {
    o.tls.insecure = true;
  } else if (f.cert) {
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

  o.tls.allow_tls12 = f.allow_tls12 || cfg.tls.allow_tls12;
  if (o.tls.insecure && o.transport == AMN_TRANSPORT_BOTH) {
    o.transport = AMN_TRANSPORT_H2; /* "h3" alone stays an error (amn_server_new) */
    say(AMN_LOG_INFO, "insecure mode: HTTP/2 only (HTTP/3 needs TLS: QUIC always encrypts)");
  }
  if (o.tls.insecure)
    say(AMN_LOG_WARN, "--insecure: serving PLAINTEXT HTTP/2 without TLS or client authentication. Anyone who "
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

  amn_server *srv = NULL;
  if (pki_pending) o.tls.insecure = true, o.transport = AMN_TRANSPORT_H2; /* the options alone */
  if (amn_server_new(&srv, &o, err, sizeof err) != 0) die("%s", err);
  if (amn_server_use_echo(srv) != 0) die("cannot register the echo handlers");
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

  if (amn_server_start(srv, err, sizeof err) != 0) {
    amn_server_free(srv);
    die("cannot start: %s", err);
  }
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

  int sig = 0;
  for (;;) {
    if (sigwait(&stop_set, &sig) != 0) continue;
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
    if (o.tls.insecure) {
      say(AMN_LOG_WARN, "SIGHUP: nothing to reload in insecure mode");
    } else if (amn_server_reload_tls(srv, err, sizeof err) == 0) {
      say(AMN_LOG_INFO, "SIGHUP: TLS certificate, key and CA reloaded from %s, %s, %s", o.tls.cert_path,
          o.tls.key_path, o.tls.ca_path);
    } else {
      say(AMN_LOG_ERROR, "SIGHUP: reload failed, still serving the previous certificate: %s", err);
    }
  }
  sigdelset(&stop_set, SIGHUP); /* during the drain SIGHUP, SIGUSR1/2 are still ignored, not fatal */
  sigdelset(&stop_set, SIGUSR1);
  sigdelset(&stop_set, SIGUSR2);
  say(AMN_LOG_INFO, "%s received: draining (up to %u ms; send it again to exit at once)", strsignal(sig),
      o.drain_timeout_ms);
  amn_server_request_stop(srv);
  /* a second signal gets the default action (immediate exit) */
  pthread_sigmask(SIG_UNBLOCK, &stop_set, NULL);
  amn_server_wait(srv);
  amn_admin_stop(admin); /* /healthz said "draining" until now */
  amn_server_free(srv);
  say(AMN_LOG_INFO, "stopped");
  amn_config_free(&cfg);
  return 0;
}
