/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Unit tests of the configuration loader (include/amn/config.h): defaults,
 * loading good files, every error kind with its exact FILE:LINE, the
 * config left unchanged on error, environment overrides, and the shipped
 * examples/amaters-net.toml being exactly the defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "amn/config.h"

/* The example file lives in the source tree. The build may pass the root as
 * AMN_SOURCE_DIR; otherwise it is derived from this file's path
 * (<root>/tests/unit/test_config.c). */
static void source_path(const char *rel, char *out, size_t outlen) {
#ifdef AMN_SOURCE_DIR
  snprintf(out, outlen, "%s/%s", AMN_SOURCE_DIR, rel);
#else
  const char *me = __FILE__;
  const char *tail = strstr(me, "tests/unit/test_config.c");
  assert_non_null(tail);
  snprintf(out, outlen, "%.*s%s", (int)(tail - me), me, rel);
#endif
}

static char tmpdir[256];
static int n_files;

static int setup(void **state) {
  (void)state;
  const char *t = getenv("TMPDIR");
  snprintf(tmpdir, sizeof tmpdir, "%s/amn_test_config_XXXXXX", t && *t ? t : "/tmp");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char p[512];
  for (int i = 0; i < n_files; i++) {
    snprintf(p, sizeof p, "%s/c%d.toml", tmpdir, i);
    unlink(p);
  }
  rmdir(tmpdir);
  return 0;
}

/* Writes `text` into a new file; returns its path (static buffer). */
static const char *write_cfg(const char *text) {
  static char p[512];
  snprintf(p, sizeof p, "%s/c%d.toml", tmpdir, n_files++);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return p;
}

static void assert_config_equal(const amn_config *a, const amn_config *b) {
#define STR_EQ(f)                                   \
  do {                                              \
    if (!a->f || !b->f) assert_ptr_equal(a->f, b->f); \
    else assert_string_equal(a->f, b->f);           \
  } while (0)
  STR_EQ(network.bind_address);
  assert_int_equal(a->network.max_connections, b->network.max_connections);
  assert_int_equal(a->network.idle_timeout_ms, b->network.idle_timeout_ms);
  assert_int_equal(a->network.keep_alive_interval_ms, b->network.keep_alive_interval_ms);
  assert_int_equal(a->network.handshake_timeout_ms, b->network.handshake_timeout_ms);
  assert_int_equal(a->network.header_timeout_ms, b->network.header_timeout_ms);
  assert_int_equal(a->network.stall_timeout_ms, b->network.stall_timeout_ms);
  STR_EQ(tls.cert_path);
  STR_EQ(tls.key_path);
  STR_EQ(tls.ca_path);
  assert_int_equal(a->quic.max_concurrent_streams, b->quic.max_concurrent_streams);
  assert_int_equal(a->quic.initial_window_size, b->quic.initial_window_size);
  assert_int_equal(a->quic.retry_threshold, b->quic.retry_threshold);
  STR_EQ(quic.secret_path);
  STR_EQ(server.transport);
  assert_int_equal(a->server.threads, b->server.threads);
  STR_EQ(server.log_level);
  assert_int_equal(a->server.drain_timeout_ms, b->server.drain_timeout_ms);
  assert_int_equal(a->server.max_message_bytes, b->server.max_message_bytes);
  assert_int_equal(a->server.max_connection_buffer_bytes, b->server.max_connection_buffer_bytes);
  assert_int_equal(a->server.max_server_buffer_bytes, b->server.max_server_buffer_bytes);
  STR_EQ(server.pki_dir);
  assert_int_equal(a->server.insecure, b->server.insecure);
  assert_int_equal(a->server.trusted_proxy_count, b->server.trusted_proxy_count);
  for (size_t i = 0; i < a->server.trusted_proxy_count; i++)
    assert_string_equal(a->server.trusted_proxies[i], b->server.trusted_proxies[i]);
  STR_EQ(server.forwarded_cert_header);
  assert_int_equal(a->client.url_count, b->client.url_count);
  for (size_t i = 0; i < a->client.url_count; i++) assert_string_equal(a->client.urls[i], b->client.urls[i]);
  STR_EQ(client.transport);
  assert_int_equal(a->client.timeout_ms, b->client.timeout_ms);
  assert_int_equal(a->client.connect_timeout_ms, b->client.connect_timeout_ms);
  assert_int_equal(a->client.pool_max_connections, b->client.pool_max_connections);
  assert_int_equal(a->client.pool_min_connections, b->client.pool_min_connections);
  STR_EQ(client.lb_policy);
  assert_int_equal(a->client.keep_alive_interval_ms, b->client.keep_alive_interval_ms);
  assert_int_equal(a->client.max_retries, b->client.max_retries);
  assert_int_equal(a->client.health_check, b->client.health_check);
  assert_int_equal(a->client.spread_addresses, b->client.spread_addresses);
  assert_int_equal(a->client.sign_queries, b->client.sign_queries);
  assert_int_equal(a->client.verify_proofs, b->client.verify_proofs);
  assert_int_equal(a->auth.require_client_signature, b->auth.require_client_signature);
  assert_int_equal(a->auth.signature_window_ms, b->auth.signature_window_ms);
  assert_int_equal(a->auth.signature_replay_entries, b->auth.signature_replay_entries);
  assert_int_equal(a->auth.sign_results, b->auth.sign_results);
#undef STR_EQ
}

static void test_defaults(void **state) {
  (void)state;
  amn_config c;
  amn_config_init(&c);
  assert_string_equal(c.network.bind_address, "127.0.0.1:7878");
  assert_int_equal(c.network.max_connections, 10000);
  assert_int_equal(c.network.idle_timeout_ms, 60000);
  assert_int_equal(c.network.keep_alive_interval_ms, 10000);
  assert_int_equal(c.network.handshake_timeout_ms, 10000);
  assert_int_equal(c.network.header_timeout_ms, 10000);
  assert_int_equal(c.network.stall_timeout_ms, 30000);
  assert_null(c.tls.cert_path);
  assert_null(c.tls.key_path);
  assert_null(c.tls.ca_path);
  assert_int_equal(c.quic.max_concurrent_streams, 1024);
  assert_int_equal(c.quic.initial_window_size, 1048576);
  assert_int_equal(c.quic.retry_threshold, 100);
  assert_null(c.quic.secret_path);
  assert_string_equal(c.server.transport, "both");
  assert_int_equal(c.server.threads, 0);
  assert_string_equal(c.server.log_level, "info");
  assert_int_equal(c.server.drain_timeout_ms, 10000);
  assert_int_equal(c.server.max_message_bytes, 64 * 1024 * 1024);
  assert_null(c.server.pki_dir);
  assert_false(c.server.insecure);
  assert_int_equal(c.client.url_count, 1);
  assert_string_equal(c.client.urls[0], "https://127.0.0.1:7878");
  assert_string_equal(c.client.transport, "h2");
  assert_int_equal(c.client.timeout_ms, 30000);
  assert_int_equal(c.client.connect_timeout_ms, 10000);
  assert_int_equal(c.client.pool_max_connections, 4);
  assert_int_equal(c.client.pool_min_connections, 1);
  assert_string_equal(c.client.lb_policy, "p2c");
  assert_int_equal(c.client.keep_alive_interval_ms, 10000);
  assert_int_equal(c.client.max_retries, 2);
  assert_false(c.client.sign_queries);
  assert_false(c.client.verify_proofs);
  assert_false(c.auth.require_client_signature);
  assert_int_equal(c.auth.signature_window_ms, 30000);
  assert_int_equal(c.auth.signature_replay_entries, 262144);
  assert_false(c.auth.sign_results);
  amn_config_free(&c);
}

static void test_example_is_defaults(void **state) {
  (void)state;
  char p[1024], err[512] = "";
  source_path("examples/amaters-net.toml", p, sizeof p);
  amn_config def, c;
  amn_config_init(&def);
  amn_config_init(&c);
  /* start from non-defaults so that every key of the file must be applied */
  c.network.max_connections = 1;
  c.network.handshake_timeout_ms = 1;
  c.quic.retry_threshold = 0;
  c.client.max_retries = 77;
  c.client.health_check = true;
  c.client.spread_addresses = true;
  c.client.sign_queries = c.client.verify_proofs = true;
  c.auth.require_client_signature = c.auth.sign_results = true;
  c.auth.signature_window_ms = 1;
  c.auth.signature_replay_entries = 64;
  free(c.server.log_level);
  c.server.log_level = strdup("debug");
  int rc = amn_config_load(&c, p, err, sizeof err);
  if (rc) fail_msg("%s: rc %d: %s", p, rc, err);
  assert_config_equal(&c, &def);
  amn_config_free(&c);
  amn_config_free(&def);
}

static void test_load_good(void **state) {
  (void)state;
  char err[512] = "";
  amn_config c;
  amn_config_init(&c);
  const char *p = write_cfg("# partial configuration\n"
                            "[network]\n"
                            "bind_address = \"[::1]:9000\"\n"
                            "max_connections = 0\n"
                            "handshake_timeout_ms = 750\n"
                            "[tls]\n"
                            "cert_path = \"/etc/x/cert.pem\"\n"
                            "key_path = 'k.pem'\n"
                            "[quic]\n"
                            "max_concurrent_streams = 100\n"
                            "retry_threshold = 0\n"
                            "secret_path = \"/var/lib/amn/quic.key\"\n"
                            "[server]\n"
                            "transport = \"both\"\n"
                            "threads = 8\n"
                            "log_level = \"debug\"\n"
                            "insecure = true\n"
                            "pki_dir = \"pki\"\n"
                            "[client]\n"
                            "urls = [\"https://a.example:1\", \"http://10.0.0.1:7878/\", \"https://[fe80::1]:443\"]\n"
                            "transport = \"auto\"\n"
                            "lb_policy = \"round_robin\"\n"
                            "pool_min_connections = 0\n"
                            "pool_max_connections = 1\n"
                            "timeout_ms = 0\n"
                            "sign_queries = true\n"
                            "[auth]\n"
                            "require_client_signature = true\n"
                            "signature_window_ms = 5000\n"
                            "sign_results = true\n");
  int rc = amn_config_load(&c, p, err, sizeof err);
  if (rc) fail_msg("rc %d: %s", rc, err);
  assert_true(c.client.sign_queries);
  assert_false(c.client.verify_proofs);
  assert_true(c.auth.require_client_signature);
  assert_int_equal(c.auth.signature_window_ms, 5000);
  assert_int_equal(c.auth.signature_replay_entries, 262144);
  assert_true(c.auth.sign_results);
  /* where each key got its value, for messages about it */
  char where[4200], want[4200];
  assert_int_equal(amn_config_where(&c, "tls.key_path", where, sizeof where), 0);
  snprintf(want, sizeof want, "%s:8", p);
  assert_string_equal(where, want);
  assert_int_equal(amn_config_where(&c, "tls.ca_path", where, sizeof where), AMN_ESTATE); /* a default */
  assert_int_equal(amn_config_where(&c, "tls.no_such_key", where, sizeof where), AMN_ESTATE);
  assert_int_equal(amn_config_where(&c, "tls", where, sizeof where), AMN_ESTATE);
  assert_int_equal(amn_config_where(&c, "tls.key_path", where, 0), AMN_EINVAL);
  assert_string_equal(c.network.bind_address, "[::1]:9000");
  assert_int_equal(c.network.max_connections, 0);
  assert_int_equal(c.network.idle_timeout_ms, 60000); /* untouched */
  assert_string_equal(c.tls.cert_path, "/etc/x/cert.pem");
  assert_string_equal(c.tls.key_path, "k.pem");
  assert_null(c.tls.ca_path);
  assert_int_equal(c.quic.max_concurrent_streams, 100);
  assert_int_equal(c.quic.retry_threshold, 0);
  assert_string_equal(c.quic.secret_path, "/var/lib/amn/quic.key");
  assert_int_equal(c.network.handshake_timeout_ms, 750);
  assert_string_equal(c.server.transport, "both");
  assert_int_equal(c.server.threads, 8);
  assert_string_equal(c.server.log_level, "debug");
  assert_true(c.server.insecure);
  assert_string_equal(c.server.pki_dir, "pki");
  assert_int_equal(c.client.url_count, 3);
  assert_string_equal(c.client.urls[1], "http://10.0.0.1:7878/");
  assert_string_equal(c.client.urls[2], "https://[fe80::1]:443");
  assert_string_equal(c.client.transport, "auto");
  assert_string_equal(c.client.lb_policy, "round_robin");
  assert_int_equal(c.client.pool_min_connections, 0);
  assert_int_equal(c.client.pool_max_connections, 1);
  assert_int_equal(c.client.timeout_ms, 0);

  /* a second file replaces only what it names */
  p = write_cfg("[server]\nthreads = 2\n[client]\nurls = [\"https://b:2\"]\n");
  rc = amn_config_load(&c, p, err, sizeof err);
  if (rc) fail_msg("rc %d: %s", rc, err);
  assert_int_equal(c.server.threads, 2);
  assert_string_equal(c.server.transport, "both");
  assert_int_equal(c.client.url_count, 1);
  assert_string_equal(c.client.urls[0], "https://b:2");

  /* an empty file changes nothing; so do empty sections */
  amn_config before;
  amn_config_init(&before);
  assert_int_equal(amn_config_load(&before, write_cfg(""), err, sizeof err), 0);
  assert_int_equal(amn_config_load(&before, write_cfg("[network]\n[client]\n"), err, sizeof err), 0);
  amn_config def;
  amn_config_init(&def);
  assert_config_equal(&before, &def);
  amn_config_free(&def);
  amn_config_free(&before);
  amn_config_free(&c);
}

/* Loads `text` into a default config, expects `code` and the exact message
 * "<path>:<msg>" (msg starts with the line), and checks c is unchanged. */
static void expect_load_error(const char *text, int code, const char *msg) {
  char err[512] = "", want[1024];
  amn_config c, def;
  amn_config_init(&c);
  amn_config_init(&def);
  const char *p = write_cfg(text);
  int rc = amn_config_load(&c, p, err, sizeof err);
  snprintf(want, sizeof want, "%s:%s", p, msg);
  if (rc != code || strcmp(err, want) != 0)
    fail_msg("for:\n%s\ngot rc %d \"%s\"\nwant rc %d \"%s\"", text, rc, err, code, want);
  assert_config_equal(&c, &def);
  amn_config_free(&c);
  amn_config_free(&def);
}
#define LOAD_ERR(text, msg) expect_load_error((text), AMN_ECONFIG, (msg))

static void test_load_errors(void **state) {
  (void)state;
  /* TOML syntax */
  LOAD_ERR("[network]\nmax_connections = 10\nidle_timeout_ms = = 5\n", "3: invalid value starting with '='");
  LOAD_ERR("[server]\nthreads = 1\n[server]\n", "3: table 'server' defined twice (first at line 1)");
  /* unknown sections and keys */
  LOAD_ERR("[auth]\nsignature_window_ms = 0\n", "2: auth.signature_window_ms: value 0 out of range (1..86400000)");
  LOAD_ERR("[auth]\nsignature_replay_entries = 10\n", "2: auth.signature_replay_entries: value 10 out of range (64..1073741824)");
  LOAD_ERR("[auth]\nsign_results = 1\n", "2: auth.sign_results: expected a boolean (true/false), got an integer");
  LOAD_ERR("[network]\nmax_connections = 5\n\n[netwrok]\nx = 1\n",
           "4: unknown section [netwrok] (expected [network], [tls], [quic], [server], [client], [admin], [log] or [auth])");
  LOAD_ERR("[network]\nmax_connections = 5\nmax_conections = 6\n", "3: unknown key 'network.max_conections'");
  LOAD_ERR("[tls]\n[tls.extra]\n", "2: unknown key 'tls.extra'");
  LOAD_ERR("\nthreads = 4\n",
           "2: unknown key 'threads' outside of any section (keys belong in [network], [tls], [quic], [server], "
           "[client], [admin], [log] or [auth])");
  LOAD_ERR("server = 1\n", "1: 'server' must be a section [server], not an integer");
  /* wrong types (the values before the bad key are applied to a copy only) */
  LOAD_ERR("[server]\nthreads = 3\nlog_level = \"debug\"\ndrain_timeout_ms = \"10s\"\n",
           "4: server.drain_timeout_ms: expected an integer, got a string");
  LOAD_ERR("[quic]\ninitial_window_size = 1.5e6\n", "2: quic.initial_window_size: expected an integer, got a float");
  LOAD_ERR("[server]\ninsecure = \"yes\"\n", "2: server.insecure: expected a boolean (true/false), got a string");
  LOAD_ERR("[tls]\nca_path = 42\n", "2: tls.ca_path: expected a string, got an integer");
  LOAD_ERR("[client]\nurls = \"https://a:1\"\n", "2: client.urls: expected an array of strings, got a string");
  LOAD_ERR("[client]\nurls = [\n  \"https://a:1\",\n  7,\n]\n",
           "4: client.urls: element 2: expected a string, got an integer");
  /* out of range */
  LOAD_ERR("[network]\nmax_connections = -1\n", "2: network.max_connections: value -1 out of range (0..10000000)");
  LOAD_ERR("[server]\nthreads = 1025\n", "2: server.threads: value 1025 out of range (0..1024)");
  LOAD_ERR("[quic]\nmax_concurrent_streams = 0\n", "2: quic.max_concurrent_streams: value 0 out of range (1..1000000)");
  LOAD_ERR("[quic]\n\nretry_threshold = 4294967296\n",
           "3: quic.retry_threshold: value 4294967296 out of range (0..4294967295)");
  LOAD_ERR("[quic]\nretry_threshold = -1\n", "2: quic.retry_threshold: value -1 out of range (0..4294967295)");
  LOAD_ERR("[quic]\nsecret_path = 7\n", "2: quic.secret_path: expected a string, got an integer");
  LOAD_ERR("[network]\nhandshake_timeout_ms = 0\n",
           "2: network.handshake_timeout_ms: value 0 out of range (1..2147483647)");
  LOAD_ERR("[server]\nmax_server_buffer_bytes = 1099511627777\n",
           "2: server.max_server_buffer_bytes: value 1099511627777 out of range (0..1099511627776)");
  LOAD_ERR("[server]\nmax_message_bytes = 4294967296\n",
           "2: server.max_message_bytes: value 4294967296 out of range (1..2147483647)");
  LOAD_ERR("[client]\nmax_retries = 101\n", "2: client.max_retries: value 101 out of range (0..100)");
  LOAD_ERR("[client]\npool_max_connections = 2\npool_min_connections = 3\n",
           "3: client.pool_min_connections: 3 is greater than client.pool_max_connections (2)");
  LOAD_ERR("[client]\npool_max_connections = 0\n", "2: client.pool_max_connections: value 0 out of range (1..65535)");
  LOAD_ERR("[client]\n\npool_min_connections = 2\npool_max_connections = 1\n",
           "3: client.pool_min_connections: 2 is greater than client.pool_max_connections (1)");
  { /* the file sets only pool_max, below the current pool_min: blamed on pool_max's line */
    char err[512], want[1024];
    amn_config c;
    amn_config_init(&c);
    c.client.pool_min_connections = 3;
    const char *p = write_cfg("[client]\npool_max_connections = 2\n");
    assert_int_equal(amn_config_load(&c, p, err, sizeof err), AMN_ECONFIG);
    snprintf(want, sizeof want, "%s:2: client.pool_min_connections: 3 is greater than "
             "client.pool_max_connections (2)", p);
    assert_string_equal(err, want);
    assert_int_equal(c.client.pool_max_connections, 4);
    amn_config_free(&c);
  }
  /* bind_address */
  LOAD_ERR("[network]\nbind_address = \"127.0.0.1\"\n",
           "2: network.bind_address: missing port in \"127.0.0.1\" (expected \"host:port\")");
  LOAD_ERR("[network]\nbind_address = \"127.0.0.1:0\"\n",
           "2: network.bind_address: invalid port \"0\" (expected 1-65535)");
  LOAD_ERR("[network]\nbind_address = \"localhost:65536\"\n",
           "2: network.bind_address: invalid port \"65536\" (expected 1-65535)");
  LOAD_ERR("[network]\nbind_address = \"::1:7878\"\n",
           "2: network.bind_address: \"::1:7878\": IPv6 addresses must be in brackets, e.g. \"[::1]:7878\"");
  LOAD_ERR("[network]\nbind_address = \"[::g]:7878\"\n", "2: network.bind_address: invalid IPv6 address \"::g\"");
  LOAD_ERR("[network]\nbind_address = \"[::1]\"\n",
           "2: network.bind_address: missing port in \"[::1]\" (expected \"[addr]:port\")");
  LOAD_ERR("[network]\nbind_address = \"300.1.1.1:80\"\n", "2: network.bind_address: invalid host \"300.1.1.1\"");
  LOAD_ERR("[network]\nbind_address = \"bad_host:80\"\n", "2: network.bind_address: invalid host \"bad_host\"");
  LOAD_ERR("[network]\nbind_address = \":80\"\n", "2: network.bind_address: invalid host \"\"");
  LOAD_ERR("[network]\nbind_address = \"\"\n", "2: network.bind_address: must not be empty");
  /* enums */
  LOAD_ERR("[server]\ntransport = \"h4\"\n",
           "2: server.transport: invalid value \"h4\" (expected \"h2\", \"h3\" or \"both\")");
  LOAD_ERR("[client]\ntransport = \"both\"\n",
           "2: client.transport: invalid value \"both\" (expected \"h2\", \"h3\" or \"auto\")");
  LOAD_ERR("[server]\nlog_level = \"INFO\"\n",
           "2: server.log_level: invalid value \"INFO\" (expected \"error\", \"warn\", \"info\" or \"debug\")");
  LOAD_ERR("[client]\nlb_policy = \"random\"\n",
           "2: client.lb_policy: invalid value \"random\" (expected \"p2c\" or \"round_robin\")");
  /* strings */
  LOAD_ERR("[tls]\ncert_path = \"\"\n", "2: tls.cert_path: must not be empty");
  LOAD_ERR("[server]\npki_dir = \"a\\u0000b\"\n", "2: server.pki_dir: must not contain NUL characters");
  /* client URLs */
  LOAD_ERR("[client]\nurls = []\n", "2: client.urls: at least one URL is required");
  LOAD_ERR("[client]\nurls = [\"ftp://a:1\"]\n",
           "2: client.urls: invalid URL \"ftp://a:1\" (expected https://host:port or http://host:port)");
  LOAD_ERR("[client]\nurls = [\"https://a\"]\n",
           "2: client.urls: invalid URL \"https://a\": missing port in \"a\" (expected \"host:port\")");
  LOAD_ERR("[client]\nurls = [\"https://a:1/path\"]\n",
           "2: client.urls: invalid URL \"https://a:1/path\": invalid port \"1/path\" (expected 1-65535)");
}

static void test_load_io_error(void **state) {
  (void)state;
  char err[512] = "", p[512];
  amn_config c;
  amn_config_init(&c);
  snprintf(p, sizeof p, "%s/does-not-exist.toml", tmpdir);
  assert_int_equal(amn_config_load(&c, p, err, sizeof err), AMN_EIO);
  assert_non_null(strstr(err, p));
  assert_non_null(strstr(err, "No such file"));
  assert_int_equal(amn_config_load(&c, tmpdir, err, sizeof err), AMN_EIO); /* a directory */
  amn_config_free(&c);
}

static const char *const env_vars[] = {
    "AMATERS_NET_NETWORK_MAX_CONNECTIONS", "AMATERS_NET_NETWORK_BIND_ADDRESS", "AMATERS_NET_SERVER_INSECURE",
    "AMATERS_NET_TLS_CA_PATH",             "AMATERS_NET_CLIENT_URLS",          "AMATERS_NET_SERVER_LOG_LEVEL",
    "AMATERS_NET_CLIENT_POOL_MIN_CONNECTIONS", "AMATERS_NET_CLIENT_POOL_MAX_CONNECTIONS",
    "AMATERS_NET_SERVER_THREADS",          "AMATERS_NET_CLIENT_TRANSPORT",     "AMATERS_NET_NO_SUCH_KEY",
    "AMATERS_NET_QUIC_RETRY_THRESHOLD",    "AMATERS_NET_QUIC_SECRET_PATH",
    "AMATERS_NET_NETWORK_HANDSHAKE_TIMEOUT_MS"};

static void clear_env(void) {
  for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++) unsetenv(env_vars[i]);
}

static void expect_env_error(const char *var, const char *value, const char *msg) {
  char err[512] = "";
  amn_config c, def;
  amn_config_init(&c);
  amn_config_init(&def);
  setenv("AMATERS_NET_SERVER_THREADS", "6", 1); /* valid, but must not be applied */
  setenv(var, value, 1);
  int rc = amn_config_apply_env(&c, err, sizeof err);
  if (rc != AMN_ECONFIG || strcmp(err, msg) != 0)
    fail_msg("%s=%s: got rc %d \"%s\", want \"%s\"", var, value, rc, err, msg);
  assert_config_equal(&c, &def);
  clear_env();
  amn_config_free(&c);
  amn_config_free(&def);
}

static void test_env(void **state) {
  (void)state;
  char err[512] = "";
  amn_config c;
  amn_config_init(&c);
  clear_env();
  /* nothing set: nothing changes */
  assert_int_equal(amn_config_apply_env(&c, err, sizeof err), 0);
  amn_config def;
  amn_config_init(&def);
  assert_config_equal(&c, &def);
  amn_config_free(&def);

  setenv("AMATERS_NET_NETWORK_MAX_CONNECTIONS", "500", 1);
  setenv("AMATERS_NET_NETWORK_BIND_ADDRESS", "0.0.0.0:8443", 1);
  setenv("AMATERS_NET_SERVER_INSECURE", "true", 1);
  setenv("AMATERS_NET_TLS_CA_PATH", "/x/ca.pem", 1);
  setenv("AMATERS_NET_CLIENT_URLS", " https://a:1 , http://b:2 ", 1);
  setenv("AMATERS_NET_SERVER_LOG_LEVEL", "warn", 1);
  setenv("AMATERS_NET_QUIC_RETRY_THRESHOLD", "4294967295", 1);
  setenv("AMATERS_NET_QUIC_SECRET_PATH", "s.key", 1);
  setenv("AMATERS_NET_NETWORK_HANDSHAKE_TIMEOUT_MS", "2500", 1);
  setenv("AMATERS_NET_NO_SUCH_KEY", "1", 1); /* warned about, ignored */
  int rc = amn_config_apply_env(&c, err, sizeof err);
  if (rc) fail_msg("rc %d: %s", rc, err);
  assert_int_equal(c.network.max_connections, 500);
  assert_string_equal(c.network.bind_address, "0.0.0.0:8443");
  assert_true(c.server.insecure);
  assert_string_equal(c.tls.ca_path, "/x/ca.pem");
  assert_int_equal(c.client.url_count, 2);
  assert_string_equal(c.client.urls[0], "https://a:1");
  assert_string_equal(c.client.urls[1], "http://b:2");
  assert_string_equal(c.server.log_level, "warn");
  assert_int_equal(c.quic.retry_threshold, 4294967295);
  assert_string_equal(c.quic.secret_path, "s.key");
  assert_int_equal(c.network.handshake_timeout_ms, 2500);
  assert_int_equal(c.server.threads, 0);
  char where[128];
  assert_int_equal(amn_config_where(&c, "tls.ca_path", where, sizeof where), 0);
  assert_string_equal(where, "env AMATERS_NET_TLS_CA_PATH");
  clear_env();
  setenv("AMATERS_NET_SERVER_INSECURE", "false", 1);
  assert_int_equal(amn_config_apply_env(&c, err, sizeof err), 0);
  assert_false(c.server.insecure);
  clear_env();
  amn_config_free(&c);

  expect_env_error("AMATERS_NET_NETWORK_MAX_CONNECTIONS", "12abc",
                   "env AMATERS_NET_NETWORK_MAX_CONNECTIONS: expected a decimal integer, got \"12abc\"");
  expect_env_error("AMATERS_NET_NETWORK_MAX_CONNECTIONS", "",
                   "env AMATERS_NET_NETWORK_MAX_CONNECTIONS: expected a decimal integer, got \"\"");
  expect_env_error("AMATERS_NET_NETWORK_MAX_CONNECTIONS", "-5",
                   "env AMATERS_NET_NETWORK_MAX_CONNECTIONS: value -5 out of range (0..10000000)");
  expect_env_error("AMATERS_NET_NETWORK_MAX_CONNECTIONS", "99999999999999999999",
                   "env AMATERS_NET_NETWORK_MAX_CONNECTIONS: expected a decimal integer, got \"99999999999999999999\"");
  expect_env_error("AMATERS_NET_QUIC_RETRY_THRESHOLD", "4294967296",
                   "env AMATERS_NET_QUIC_RETRY_THRESHOLD: value 4294967296 out of range (0..4294967295)");
  expect_env_error("AMATERS_NET_NETWORK_HANDSHAKE_TIMEOUT_MS", "0",
                   "env AMATERS_NET_NETWORK_HANDSHAKE_TIMEOUT_MS: value 0 out of range (1..2147483647)");
  expect_env_error("AMATERS_NET_QUIC_SECRET_PATH", "", "env AMATERS_NET_QUIC_SECRET_PATH: must not be empty");
  expect_env_error("AMATERS_NET_SERVER_INSECURE", "yes",
                   "env AMATERS_NET_SERVER_INSECURE: expected true or false, got \"yes\"");
  expect_env_error("AMATERS_NET_NETWORK_BIND_ADDRESS", "[::1]:0",
                   "env AMATERS_NET_NETWORK_BIND_ADDRESS: invalid port \"0\" (expected 1-65535)");
  expect_env_error("AMATERS_NET_CLIENT_TRANSPORT", "quic",
                   "env AMATERS_NET_CLIENT_TRANSPORT: invalid value \"quic\" (expected \"h2\", \"h3\" or \"auto\")");
  expect_env_error("AMATERS_NET_CLIENT_URLS", " , ", "env AMATERS_NET_CLIENT_URLS: at least one URL is required");
  expect_env_error("AMATERS_NET_CLIENT_URLS", "https://a:1,b:2",
                   "env AMATERS_NET_CLIENT_URLS: invalid URL \"b:2\" (expected https://host:port or http://host:port)");
  expect_env_error("AMATERS_NET_CLIENT_POOL_MIN_CONNECTIONS", "9",
                   "env AMATERS_NET_CLIENT_POOL_MIN_CONNECTIONS: client.pool_min_connections 9 is greater than "
                   "client.pool_max_connections (4)");
  expect_env_error("AMATERS_NET_CLIENT_POOL_MAX_CONNECTIONS", "0",
                   "env AMATERS_NET_CLIENT_POOL_MAX_CONNECTIONS: value 0 out of range (1..65535)");
}

/* [server] trusted_proxies and forwarded_cert_header: file, errors, environment */
static void test_trusted_proxies(void **state) {
  (void)state;
  char err[512] = "";
  amn_config c;
  amn_config_init(&c);
  assert_int_equal(c.server.trusted_proxy_count, 0);
  assert_null(c.server.forwarded_cert_header);
  const char *p = write_cfg("[server]\ntrusted_proxies = [\"san:lb.test\", \"subject:CN=lb,O=x\",\n"
                            "  \"sha256:00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff\"]\n"
                            "forwarded_cert_header = \"x-ssl-client-cert\"\n");
  assert_int_equal(amn_config_load(&c, p, err, sizeof err), 0);
  assert_int_equal(c.server.trusted_proxy_count, 3);
  assert_string_equal(c.server.trusted_proxies[1], "subject:CN=lb,O=x");
  assert_string_equal(c.server.forwarded_cert_header, "x-ssl-client-cert");
  /* an empty list is allowed (no proxy trusted) */
  assert_int_equal(amn_config_load(&c, write_cfg("[server]\ntrusted_proxies = []\n"), err, sizeof err), 0);
  assert_int_equal(c.server.trusted_proxy_count, 0);
  amn_config_free(&c);
  LOAD_ERR("[server]\ntrusted_proxies = [\"san:a\", \"lb.test\"]\n",
           "2: server.trusted_proxies: element 2: \"lb.test\": expected \"sha256:HEX\", \"subject:DN\" or \"san:NAME\"");
  LOAD_ERR("[server]\ntrusted_proxies = [\"sha256:0011\"]\n",
           "2: server.trusted_proxies: element 1: \"sha256:0011\": a SHA-256 fingerprint is 64 hex digits (pairs may "
           "be separated by ':')");
  LOAD_ERR("[server]\ntrusted_proxies = [\"\"]\n", "2: server.trusted_proxies: element 1: must not be empty");
  LOAD_ERR("[server]\ntrusted_proxies = \"san:a\"\n",
           "2: server.trusted_proxies: expected an array of strings, got a string");
  LOAD_ERR("[server]\nforwarded_cert_header = \"X-Cert\"\n",
           "2: server.forwarded_cert_header: \"X-Cert\": a lower-case header name (a-z 0-9 - _ .)");
  /* environment: a comma-separated list */
  amn_config_init(&c);
  setenv("AMATERS_NET_SERVER_TRUSTED_PROXIES", "san:a, subject:CN=b", 1);
  assert_int_equal(amn_config_apply_env(&c, err, sizeof err), 0);
  unsetenv("AMATERS_NET_SERVER_TRUSTED_PROXIES");
  assert_int_equal(c.server.trusted_proxy_count, 2);
  assert_string_equal(c.server.trusted_proxies[1], "subject:CN=b");
  amn_config_free(&c);
  expect_env_error("AMATERS_NET_SERVER_TRUSTED_PROXIES", "san:a,x",
                   "env AMATERS_NET_SERVER_TRUSTED_PROXIES: element 2: \"x\": expected \"sha256:HEX\", \"subject:DN\" "
                   "or \"san:NAME\"");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),     cmocka_unit_test(test_example_is_defaults),
      cmocka_unit_test(test_load_good),    cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_load_io_error), cmocka_unit_test(test_env),
      cmocka_unit_test(test_trusted_proxies),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
