/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Configuration loading (src/util/config.c: amn_config_load, and
 * amn_config_apply_env). Input: a TOML file, or, when it starts with
 * "#env\n", lines NAME=VALUE that become the whole environment for
 * amn_config_apply_env. Invariants:
 *  - a refused input leaves the config exactly as it was (compared field
 *    by field with a copy) with an error naming the file ("PATH:" / "env ");
 *  - an accepted one gives values within the ranges and choice lists that
 *    include/amn/config.h documents (restated here, independently), at
 *    least one URL, pool_min <= pool_max;
 *  - round trip: the accepted config written back as TOML loads into a
 *    fresh default config equal to it (environment values that are not
 *    UTF-8 cannot be written as TOML: then this step is skipped); applying
 *    the input again on top of that result changes nothing.
 */
#include <ctype.h>
#include <stddef.h>

#include "amn/config.h"
#include "toml_writer.h"

extern char **environ;

typedef enum { F_INT, F_BOOL, F_STR, F_ENUM, F_URLS, F_LIST } fkind; /* F_LIST: char ** + count */
typedef struct field {
  const char *section, *key;
  fkind kind;
  size_t off;
  int64_t min, max;
  const char *choices[5];
} field;

#define O(s, k) offsetof(amn_config, s.k)
#define MS INT64_C(2147483647)
static const field fields[] = {
    {"network", "bind_address", F_STR, O(network, bind_address), 0, 0, {0}},
    {"network", "max_connections", F_INT, O(network, max_connections), 0, 10000000, {0}},
    {"network", "idle_timeout_ms", F_INT, O(network, idle_timeout_ms), 0, MS, {0}},
    {"network", "keep_alive_interval_ms", F_INT, O(network, keep_alive_interval_ms), 0, MS, {0}},
    {"network", "handshake_timeout_ms", F_INT, O(network, handshake_timeout_ms), 1, MS, {0}},
    {"network", "header_timeout_ms", F_INT, O(network, header_timeout_ms), 1, MS, {0}},
    {"network", "stall_timeout_ms", F_INT, O(network, stall_timeout_ms), 1, MS, {0}},
    {"tls", "cert_path", F_STR, O(tls, cert_path), 0, 0, {0}},
    {"tls", "key_path", F_STR, O(tls, key_path), 0, 0, {0}},
    {"tls", "ca_path", F_STR, O(tls, ca_path), 0, 0, {0}},
    {"tls", "allow_tls12", F_BOOL, O(tls, allow_tls12), 0, 0, {0}},
    {"quic", "max_concurrent_streams", F_INT, O(quic, max_concurrent_streams), 1, 1000000, {0}},
    {"quic", "initial_window_size", F_INT, O(quic, initial_window_size), 1, MS, {0}},
    {"quic", "retry_threshold", F_INT, O(quic, retry_threshold), 0, INT64_C(4294967295), {0}},
    {"quic", "secret_path", F_STR, O(quic, secret_path), 0, 0, {0}},
    {"server", "transport", F_ENUM, O(server, transport), 0, 0, {"h2", "h3", "both"}},
    {"server", "threads", F_INT, O(server, threads), 0, 1024, {0}},
    {"server", "log_level", F_ENUM, O(server, log_level), 0, 0, {"error", "warn", "info", "debug"}},
    {"server", "drain_timeout_ms", F_INT, O(server, drain_timeout_ms), 0, MS, {0}},
    {"server", "max_message_bytes", F_INT, O(server, max_message_bytes), 1, MS, {0}},
    {"server", "max_connection_buffer_bytes", F_INT, O(server, max_connection_buffer_bytes), 0, INT64_C(1099511627776), {0}},
    {"server", "max_server_buffer_bytes", F_INT, O(server, max_server_buffer_bytes), 0, INT64_C(1099511627776), {0}},
    {"server", "pki_dir", F_STR, O(server, pki_dir), 0, 0, {0}},
    {"server", "trusted_proxies", F_LIST, O(server, trusted_proxies), 0, 0, {0}},
    {"server", "forwarded_cert_header", F_STR, O(server, forwarded_cert_header), 0, 0, {0}},
    {"server", "insecure", F_BOOL, O(server, insecure), 0, 0, {0}},
    {"client", "urls", F_URLS, O(client, urls), 0, 0, {0}},
    {"client", "transport", F_ENUM, O(client, transport), 0, 0, {"h2", "h3", "auto"}},
    {"client", "timeout_ms", F_INT, O(client, timeout_ms), 0, MS, {0}},
    {"client", "connect_timeout_ms", F_INT, O(client, connect_timeout_ms), 1, MS, {0}},
    {"client", "pool_max_connections", F_INT, O(client, pool_max_connections), 1, 65535, {0}},
    {"client", "pool_min_connections", F_INT, O(client, pool_min_connections), 0, 65535, {0}},
    {"client", "lb_policy", F_ENUM, O(client, lb_policy), 0, 0, {"p2c", "round_robin"}},
    {"client", "keep_alive_interval_ms", F_INT, O(client, keep_alive_interval_ms), 0, MS, {0}},
    {"client", "max_retries", F_INT, O(client, max_retries), 0, 100, {0}},
    {"client", "health_check", F_BOOL, O(client, health_check), 0, 0, {0}},
    {"client", "spread_addresses", F_BOOL, O(client, spread_addresses), 0, 0, {0}},
    {"client", "sign_queries", F_BOOL, O(client, sign_queries), 0, 0, {0}},
    {"client", "verify_proofs", F_BOOL, O(client, verify_proofs), 0, 0, {0}},
    {"auth", "require_client_signature", F_BOOL, O(auth, require_client_signature), 0, 0, {0}},
    {"auth", "signature_window_ms", F_INT, O(auth, signature_window_ms), 1, 86400000, {0}},
    {"auth", "signature_replay_entries", F_INT, O(auth, signature_replay_entries), 64, INT64_C(1) << 30, {0}},
    {"auth", "sign_results", F_BOOL, O(auth, sign_results), 0, 0, {0}},
};
#define NFIELDS (sizeof fields / sizeof fields[0])
#define AT(c, f, T) ((T *)(void *)((char *)(c) + (f)->off))
#define COUNT(c, f) (*(size_t *)(void *)((char *)(c) + (f)->off + sizeof(char **)))

static bool str_eq(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

static bool config_equal(const amn_config *a, const amn_config *b) {
  for (size_t i = 0; i < NFIELDS; i++) {
    const field *f = &fields[i];
    switch (f->kind) {
    case F_INT: if (*AT(a, f, int64_t) != *AT(b, f, int64_t)) return false; break;
    case F_BOOL: if (*AT(a, f, bool) != *AT(b, f, bool)) return false; break;
    case F_STR:
    case F_ENUM: if (!str_eq(*AT(a, f, char *), *AT(b, f, char *))) return false; break;
    case F_URLS:
      if (a->client.url_count != b->client.url_count) return false;
      for (size_t k = 0; k < a->client.url_count; k++)
        if (!str_eq(a->client.urls[k], b->client.urls[k])) return false;
      break;
    case F_LIST:
      if (COUNT(a, f) != COUNT(b, f)) return false;
      for (size_t k = 0; k < COUNT(a, f); k++)
        if (!str_eq((*AT(a, f, char **))[k], (*AT(b, f, char **))[k])) return false;
      break;
    }
  }
  return true;
}

static bool url_ok(const char *u) {
  return (strncmp(u, "https://", 8) == 0 && u[8]) || (strncmp(u, "http://", 7) == 0 && u[7]);
}

/* server.trusted_proxies, restated: "sha256:" + 32 hex pairs (':' between
 * pairs allowed), or "subject:" / "san:" + something */
static bool proxy_ok(const char *e) {
  if ((strncmp(e, "subject:", 8) == 0 && e[8]) || (strncmp(e, "san:", 4) == 0 && e[4])) return true;
  if (strncmp(e, "sha256:", 7) != 0) return false;
  const char *h = e + 7;
  for (int i = 0; i < 32; i++) {
    if (!isxdigit((unsigned char)h[0]) || !isxdigit((unsigned char)h[1])) return false;
    h += 2;
    if (i < 31 && *h == ':') h++;
  }
  return *h == '\0';
}

static void check_config(const amn_config *c) {
  for (size_t i = 0; i < NFIELDS; i++) {
    const field *f = &fields[i];
    if (f->kind == F_INT) {
      int64_t v = *AT(c, f, int64_t);
      FUZZ_CHECK(v >= f->min && v <= f->max);
    } else if (f->kind == F_STR) {
      const char *s = *AT(c, f, char *);
      FUZZ_CHECK(s == NULL || *s != '\0');
    } else if (f->kind == F_ENUM) {
      const char *s = *AT(c, f, char *);
      bool found = false;
      for (size_t k = 0; k < 5 && f->choices[k]; k++) found |= strcmp(s, f->choices[k]) == 0;
      FUZZ_CHECK(found);
    }
  }
  FUZZ_CHECK(c->network.bind_address && strchr(c->network.bind_address, ':'));
  FUZZ_CHECK(c->client.url_count >= 1);
  for (size_t k = 0; k < c->client.url_count; k++) FUZZ_CHECK(url_ok(c->client.urls[k]));
  FUZZ_CHECK(c->client.pool_min_connections <= c->client.pool_max_connections);
  for (size_t k = 0; k < c->server.trusted_proxy_count; k++) FUZZ_CHECK(proxy_ok(c->server.trusted_proxies[k]));
  for (const char *h = c->server.forwarded_cert_header; h && *h; h++)
    FUZZ_CHECK((*h >= 'a' && *h <= 'z') || (*h >= '0' && *h <= '9') || *h == '-' || *h == '_' || *h == '.');
}

/* Every field as TOML, one section after the other. */
static void write_config(tw *w, const amn_config *c) {
  const char *sec = "";
  for (size_t i = 0; i < NFIELDS; i++) {
    const field *f = &fields[i];
    if (strcmp(sec, f->section) != 0) tw_fmt(w, "[%s]\n", sec = f->section);
    if ((f->kind == F_STR || f->kind == F_ENUM) && !*AT(c, f, char *)) continue;
    tw_fmt(w, "%s = ", f->key);
    switch (f->kind) {
    case F_INT: tw_fmt(w, "%" PRId64, *AT(c, f, int64_t)); break;
    case F_BOOL: tw_fmt(w, "%s", *AT(c, f, bool) ? "true" : "false"); break;
    case F_STR:
    case F_ENUM: tw_str(w, *AT(c, f, char *), strlen(*AT(c, f, char *))); break;
    case F_URLS:
      tw_put(w, "[", 1);
      for (size_t k = 0; k < c->client.url_count; k++) {
        if (k) tw_put(w, ", ", 2);
        tw_str(w, c->client.urls[k], strlen(c->client.urls[k]));
      }
      tw_put(w, "]", 1);
      break;
    case F_LIST:
      tw_put(w, "[", 1);
      for (size_t k = 0; k < COUNT(c, f); k++) {
        if (k) tw_put(w, ", ", 2);
        tw_str(w, (*AT(c, f, char **))[k], strlen((*AT(c, f, char **))[k]));
      }
      tw_put(w, "]", 1);
      break;
    }
    tw_put(w, "\n", 1);
  }
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool utf8_ok(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned c = *p, n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
    if (n == 9) return false;
    unsigned cp = n == 0 ? c : c & (0x3f >> n);
    for (unsigned i = 1; i <= n; i++) {
      if ((p[i] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (p[i] & 0x3f);
    }
    static const unsigned min[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    p += n + 1;
  }
  return true;
}

/* TOML strings hold UTF-8 only; the environment can hold any bytes. */
static bool config_utf8(const amn_config *c) {
  for (size_t i = 0; i < NFIELDS; i++) {
    const field *f = &fields[i];
    if ((f->kind == F_STR || f->kind == F_ENUM) && *AT(c, f, char *) && !utf8_ok(*AT(c, f, char *))) return false;
  }
  for (size_t k = 0; k < c->client.url_count; k++)
    if (!utf8_ok(c->client.urls[k])) return false;
  for (size_t k = 0; k < c->server.trusted_proxy_count; k++)
    if (!utf8_ok(c->server.trusted_proxies[k])) return false;
  return true;
}

static int load_mem(amn_config *c, const void *text, size_t len, char *err, size_t errlen, char path[32]) {
  int fd = fuzz_memfile(text, len, path);
  FUZZ_CHECK(fd >= 0);
  int rc = amn_config_load(c, path, err, errlen);
  close(fd);
  return rc;
}

/* "#env\n" inputs: NAME=VALUE lines become the environment. */
static int apply_env(amn_config *c, const uint8_t *data, size_t size, char *err, size_t errlen) {
  char *copy = malloc(size + 1), *vars[65];
  FUZZ_CHECK(copy != NULL);
  memcpy(copy, data, size);
  copy[size] = '\0';
  size_t n = 0;
  for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l && n < 64; l = strtok_r(NULL, "\n", &save))
    if (strchr(l, '=')) vars[n++] = l;
  vars[n] = NULL;
  char **saved = environ;
  environ = vars;
  int rc = amn_config_apply_env(c, err, errlen);
  environ = saved;
  free(copy);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool quiet;
  if (!quiet) amn_log_set_level(AMN_LOG_ERROR), quiet = true; /* unknown env variables warn */
  bool env = size >= 5 && memcmp(data, "#env\n", 5) == 0;
  amn_config c, before;
  amn_config_init(&c);
  amn_config_init(&before);
  char err[512] = "", path[32] = "";
  int rc = env ? apply_env(&c, data + 5, size - 5, err, sizeof err) : load_mem(&c, data, size, err, sizeof err, path);
  if (rc != 0) {
    FUZZ_CHECK(rc == AMN_ECONFIG || rc == AMN_ENOMEM);
    FUZZ_CHECK(config_equal(&c, &before));
    FUZZ_CHECK(env ? strncmp(err, "env ", 4) == 0
                   : strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':');
  } else if (config_utf8(&c)) {
    check_config(&c);
    tw w = {0};
    write_config(&w, &c);
    amn_config d;
    amn_config_init(&d);
    char err2[512] = "", path2[32];
    int rc2 = load_mem(&d, w.s, w.len, err2, sizeof err2, path2);
    if (rc2) fprintf(stderr, "reload failed: %s\n%s", err2, w.s);
    FUZZ_CHECK(rc2 == 0 && config_equal(&c, &d));
    free(w.s);
    /* the same input again, on top of its own result */
    int rc3 = env ? apply_env(&d, data + 5, size - 5, err2, sizeof err2)
                  : load_mem(&d, data, size, err2, sizeof err2, path2);
    FUZZ_CHECK(rc3 == 0 && config_equal(&c, &d));
    amn_config_free(&d);
  } else {
    FUZZ_CHECK(env);
    check_config(&c);
  }
  amn_config_free(&c);
  amn_config_free(&before);
  return 0;
}
