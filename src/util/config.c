/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Configuration: defaults, TOML file loading, environment overrides.
 * Every key is described once in `keys[]`; loading and the environment go
 * through the same check-and-store path, applied to a copy of the config
 * that replaces the caller's only when everything succeeded. */
#include "amn/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/config_auth.h"
#include "util/log.h"
#include "util/proxy_id.h"
#include "util/toml.h"

#define MS_MAX INT64_C(2147483647)
#define CONFIG_MAX_BYTES (16u * 1024u * 1024u)

typedef enum kkind {
  K_INT,  /* int64_t in [min, max] */
  K_BOOL, /* bool */
  K_STR,  /* char *, non-empty (paths) */
  K_ENUM, /* char *, one of choices */
  K_ADDR, /* char *, "host:port" */
  K_URLS, /* char ** + size_t count (the field right after) */
  K_STRS, /* the same, any non-empty strings (checked by `check`), possibly none */
} kkind;

typedef struct keydef {
  const char *section, *key;
  kkind kind;
  size_t off;
  int64_t min, max;
  const char *const *choices;
} keydef;

static const char *const server_transports[] = {"h2", "h3", "both", NULL};
static const char *const client_transports[] = {"h2", "h3", "auto", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const lb_policies[] = {"p2c", "round_robin", NULL};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const crl_expired_choices[] = {"refuse", "warn", NULL};

#define OFF(s, k) offsetof(amn_config, s.k)
static const keydef keys[] = {
    {"network", "bind_address", K_ADDR, OFF(network, bind_address), 0, 0, NULL},
    {"network", "max_connections", K_INT, OFF(network, max_connections), 0, 10000000, NULL},
    {"network", "idle_timeout_ms", K_INT, OFF(network, idle_timeout_ms), 0, MS_MAX, NULL},
    {"network", "keep_alive_interval_ms", K_INT, OFF(network, keep_alive_interval_ms), 0, MS_MAX, NULL},
    {"network", "handshake_timeout_ms", K_INT, OFF(network, handshake_timeout_ms), 1, MS_MAX, NULL},
    {"network", "header_timeout_ms", K_INT, OFF(network, header_timeout_ms), 1, MS_MAX, NULL},
    {"network", "stall_timeout_ms", K_INT, OFF(network, stall_timeout_ms), 1, MS_MAX, NULL},
    {"tls", "cert_path", K_STR, OFF(tls, cert_path), 0, 0, NULL},
    {"tls", "key_path", K_STR, OFF(tls, key_path), 0, 0, NULL},
    {"tls", "ca_path", K_STR, OFF(tls, ca_path), 0, 0, NULL},
    {"tls", "allow_tls12", K_BOOL, OFF(tls, allow_tls12), 0, 0, NULL},
    /* revocation; the [[auth.rule]] tables are read by config_auth.c */
    {"tls", "crl_path", K_STR, OFF(tls, crl_path), 0, 0, NULL},
    {"tls", "crl_expired", K_ENUM, OFF(tls, crl_expired), 0, 0, crl_expired_choices},
    {"quic", "max_concurrent_streams", K_INT, OFF(quic, max_concurrent_streams), 1, 1000000, NULL},
    {"quic", "initial_window_size", K_INT, OFF(quic, initial_window_size), 1, 2147483647, NULL},
    {"quic", "retry_threshold", K_INT, OFF(quic, retry_threshold), 0, INT64_C(4294967295), NULL},
    {"quic", "secret_path", K_STR, OFF(quic, secret_path), 0, 0, NULL},
    {"server", "transport", K_ENUM, OFF(server, transport), 0, 0, server_transports},
    {"server", "threads", K_INT, OFF(server, threads), 0, 1024, NULL},
    {"server", "log_level", K_ENUM, OFF(server, log_level), 0, 0, log_levels},
    {"server", "drain_timeout_ms", K_INT, OFF(server, drain_timeout_ms), 0, MS_MAX, NULL},
    {"server", "max_message_bytes", K_INT, OFF(server, max_message_bytes), 1, 2147483647, NULL},
    {"server", "max_connection_buffer_bytes", K_INT, OFF(server, max_connection_buffer_bytes), 0, INT64_C(1) << 40, NULL},
    {"server", "max_server_buffer_bytes", K_INT, OFF(server, max_server_buffer_bytes), 0, INT64_C(1) << 40, NULL},
    {"server", "pki_dir", K_STR, OFF(server, pki_dir), 0, 0, NULL},
    {"server", "insecure", K_BOOL, OFF(server, insecure), 0, 0, NULL},
    {"server", "handler", K_STR, OFF(server, handler), 0, 0, NULL},
    {"server", "handler_arg", K_STR, OFF(server, handler_arg), 0, 0, NULL},
    {"server", "reflection", K_BOOL, OFF(server, reflection), 0, 0, NULL},
    {"server", "trusted_proxies", K_STRS, OFF(server, trusted_proxies), 0, 0, NULL},
    {"server", "forwarded_cert_header", K_STR, OFF(server, forwarded_cert_header), 0, 0, NULL},
    {"admin", "bind_address", K_ADDR, OFF(admin, bind_address), 0, 0, NULL},
    {"log", "access", K_BOOL, OFF(log, access), 0, 0, NULL},
    {"log", "format", K_ENUM, OFF(log, format), 0, 0, log_formats},
    {"client", "urls", K_URLS, OFF(client, urls), 0, 0, NULL},
    {"client", "transport", K_ENUM, OFF(client, transport), 0, 0, client_transports},
    {"client", "timeout_ms", K_INT, OFF(client, timeout_ms), 0, MS_MAX, NULL},
    {"client", "connect_timeout_ms", K_INT, OFF(client, connect_timeout_ms), 1, MS_MAX, NULL},
    {"client", "pool_max_connections", K_INT, OFF(client, pool_max_connections), 1, 65535, NULL},
    {"client", "pool_min_connections", K_INT, OFF(client, pool_min_connections), 0, 65535, NULL},
    {"client", "lb_policy", K_ENUM, OFF(client, lb_policy), 0, 0, lb_policies},
    {"client", "keep_alive_interval_ms", K_INT, OFF(client, keep_alive_interval_ms), 0, MS_MAX, NULL},
    {"client", "max_retries", K_INT, OFF(client, max_retries), 0, 100, NULL},
    {"client", "health_check", K_BOOL, OFF(client, health_check), 0, 0, NULL},
    {"client", "spread_addresses", K_BOOL, OFF(client, spread_addresses), 0, 0, NULL},
    {"client", "dns_servers", K_STR, OFF(client, dns_servers), 0, 0, NULL},
    {"client", "dns_refresh_min_ms", K_INT, OFF(client, dns_refresh_min_ms), 1, MS_MAX, NULL},
    {"client", "dns_refresh_max_ms", K_INT, OFF(client, dns_refresh_max_ms), 1, MS_MAX, NULL},
    /* signed queries and signed results (docs/SIGNATURES.md) */
    {"auth", "require_client_signature", K_BOOL, OFF(auth, require_client_signature), 0, 0, NULL},
    {"auth", "signature_window_ms", K_INT, OFF(auth, signature_window_ms), 1, 86400000, NULL},
    {"auth", "signature_replay_entries", K_INT, OFF(auth, signature_replay_entries), 64, INT64_C(1) << 30, NULL},
    {"auth", "sign_results", K_BOOL, OFF(auth, sign_results), 0, 0, NULL},
    {"client", "sign_queries", K_BOOL, OFF(client, sign_queries), 0, 0, NULL},
    {"client", "verify_proofs", K_BOOL, OFF(client, verify_proofs), 0, 0, NULL},
};
#define NKEYS (sizeof keys / sizeof keys[0])
static const char *const sections[] = {"network", "tls", "quic", "server", "client", "admin", "log", "auth"};

_Static_assert(offsetof(amn_config, client.url_count) == offsetof(amn_config, client.urls) + sizeof(char **),
               "url_count must follow urls");
_Static_assert(offsetof(amn_config, server.trusted_proxy_count) ==
                   offsetof(amn_config, server.trusted_proxies) + sizeof(char **),
               "trusted_proxy_count must follow trusted_proxies");
#define IS_LIST(k) ((k)->kind == K_URLS || (k)->kind == K_STRS)
#define FIELD(c, k, T) ((T *)(void *)((char *)(c) + (k)->off))
#define URL_COUNT(c, k) ((size_t *)(void *)((char *)(c) + (k)->off + sizeof(char **)))

/* ------------------------------------------------------------------ */
/* init / free / copy                                                 */
/* ------------------------------------------------------------------ */

static void free_urls(char **urls, size_t n) {
  for (size_t i = 0; i < n; i++) free(urls[i]);
  free(urls);
}

/* Where each key got its value: "FILE:LINE" or "env NAME" (NULL: default). */
struct amn_config_origin {
  char *where[NKEYS];
};

static void origin_free(amn_config *c) {
  if (!c->origin) return;
  for (size_t i = 0; i < NKEYS; i++) free(c->origin->where[i]);
  free(c->origin);
  c->origin = NULL;
}

/* Records where key i of c was set; false when memory runs out. */
static bool origin_set(amn_config *c, size_t i, const char *where) {
  if (!c->origin && !(c->origin = calloc(1, sizeof *c->origin))) return false;
  char *s = strdup(where);
  if (!s) return false;
  free(c->origin->where[i]);
  c->origin->where[i] = s;
  return true;
}

int amn_config_where(const amn_config *c, const char *key, char *out, size_t cap) {
  if (!c || !key || !out || !cap) return AMN_EINVAL;
  out[0] = 0;
  for (size_t i = 0; i < NKEYS; i++) {
    size_t sl = strlen(keys[i].section);
    if (strncmp(key, keys[i].section, sl) || key[sl] != '.' || strcmp(key + sl + 1, keys[i].key)) continue;
    if (!c->origin || !c->origin->where[i]) return AMN_ESTATE;
    snprintf(out, cap, "%s", c->origin->where[i]);
    return 0;
  }
  return AMN_ESTATE;
}

void amn_config_free(amn_config *c) {
  if (!c) return;
  origin_free(c);
  amn_config_auth_free(c);
  for (size_t i = 0; i < NKEYS; i++) {
    const keydef *k = &keys[i];
    if (IS_LIST(k)) {
      free_urls(*FIELD(c, k, char **), *URL_COUNT(c, k));
      *FIELD(c, k, char **) = NULL;
      *URL_COUNT(c, k) = 0;
    } else if (k->kind != K_INT && k->kind != K_BOOL) {
      free(*FIELD(c, k, char *));
      *FIELD(c, k, char *) = NULL;
    }
  }
}

void amn_config_init(amn_config *c) {
  memset(c, 0, sizeof *c);
  c->network.bind_address = strdup("127.0.0.1:7878");
  c->network.max_connections = 10000;
  c->network.idle_timeout_ms = 60000;
  c->network.keep_alive_interval_ms = 10000;
  c->network.handshake_timeout_ms = 10000;
  c->network.header_timeout_ms = 10000;
  c->network.stall_timeout_ms = 30000;
  c->quic.max_concurrent_streams = 1024;
  c->quic.initial_window_size = 1048576;
  c->quic.retry_threshold = 100;
  c->server.transport = strdup("both");
  c->server.threads = 0;
  c->server.log_level = strdup("info");
  c->server.drain_timeout_ms = 10000;
  c->server.max_message_bytes = AMN_DEFAULT_MAX_MESSAGE;
  c->server.insecure = false;
  c->server.reflection = true;
  c->tls.allow_tls12 = false;
  c->tls.crl_expired = strdup("refuse");
  c->client.urls = calloc(1, sizeof(char *));
  if (c->client.urls && (c->client.urls[0] = strdup("https://127.0.0.1:7878"))) c->client.url_count = 1;
  c->client.transport = strdup("h2");
  c->client.timeout_ms = 30000;
  c->client.connect_timeout_ms = 10000;
  c->client.pool_max_connections = 4;
  c->client.pool_min_connections = 1;
  c->client.lb_policy = strdup("p2c");
  c->client.keep_alive_interval_ms = 10000;
  c->client.max_retries = 2;
  c->client.health_check = false;
  c->auth.signature_window_ms = 30000;
  c->auth.signature_replay_entries = 262144;
  c->client.spread_addresses = false;
  c->client.dns_servers = NULL; /* the system's */
  c->client.dns_refresh_min_ms = 1000;
  c->client.dns_refresh_max_ms = 300000;
  c->admin.bind_address = NULL; /* no admin listener */
  c->log.access = false;
  c->log.format = strdup("text");
}

static char **dup_urls(char *const *urls, size_t n) {
  char **out = calloc(n ? n : 1, sizeof *out);
  for (size_t i = 0; out && i < n; i++) {
    if (!(out[i] = strdup(urls[i]))) {
      free_urls(out, i);
      return NULL;
    }
  }
  return out;
}

/* Deep copy; returns AMN_ENOMEM with `dst` freed on failure. */
static int config_dup(amn_config *dst, const amn_config *src) {
  *dst = *src;
  bool ok = true;
  dst->origin = NULL;
  if (amn_config_auth_dup(dst, src) != 0) ok = false;
  if (src->origin && (dst->origin = calloc(1, sizeof *dst->origin)) == NULL) ok = false;
  for (size_t i = 0; ok && src->origin && i < NKEYS; i++)
    if (src->origin->where[i] && !(dst->origin->where[i] = strdup(src->origin->where[i]))) ok = false;
  for (size_t i = 0; i < NKEYS; i++) {
    const keydef *k = &keys[i];
    if (IS_LIST(k)) {
      char **u = dup_urls(*FIELD(src, k, char **), *URL_COUNT(src, k));
      if (!u) *URL_COUNT(dst, k) = 0, ok = false;
      *FIELD(dst, k, char **) = u;
    } else if (k->kind != K_INT && k->kind != K_BOOL) {
      const char *s = *FIELD(src, k, char *const);
      *FIELD(dst, k, char *) = s ? strdup(s) : NULL;
      if (s && !*FIELD(dst, k, char *)) ok = false;
    }
  }
  if (ok) return 0;
  amn_config_free(dst);
  return AMN_ENOMEM;
}

/* ------------------------------------------------------------------ */
/* value checks                                                       */
/* ------------------------------------------------------------------ */

static bool valid_port(const char *s, size_t n) {
  if (n == 0 || n > 5) return false;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i])) return false;
    v = v * 10 + (s[i] - '0');
  }
  return v >= 1 && v <= 65535;
}

/* DNS name (labels of [A-Za-z0-9-], not starting/ending with '-') or IPv4. */
static bool valid_hostname(const char *s, size_t n) {
  if (n == 0 || n > 253) return false;
  bool numeric = true;
  size_t label = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '.') {
      if (label == 0 || s[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    if (!isalnum((unsigned char)ch) && ch != '-') return false;
    if (ch == '-' && label == 0) return false;
    if (!isdigit((unsigned char)ch)) numeric = false;
    if (++label > 63) return false;
  }
  if (label == 0 || s[n - 1] == '-') return false;
  if (numeric) { /* all digits and dots: must be a real IPv4 address */
    char tmp[16];
    struct in_addr a4;
    if (n >= sizeof tmp) return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET, tmp, &a4) == 1;
  }
  return true;
}

/* "host:port" / "[v6]:port" (the whole of s[0..n)). */
static bool check_hostport(const char *s, size_t n, char *why, size_t wl) {
  const char *colon;
  if (n > 0 && s[0] == '[') {
    const char *rb = memchr(s, ']', n);
    char tmp[64];
    struct in6_addr a6;
    size_t hl = rb ? (size_t)(rb - s - 1) : 0;
    if (!rb || hl == 0 || hl >= sizeof tmp) {
      snprintf(why, wl, "invalid IPv6 address in \"%.*s\" (expected \"[addr]:port\")", (int)n, s);
      return false;
    }
    memcpy(tmp, s + 1, hl);
    tmp[hl] = '\0';
    if (inet_pton(AF_INET6, tmp, &a6) != 1) {
      snprintf(why, wl, "invalid IPv6 address \"%s\"", tmp);
      return false;
    }
    colon = rb + 1;
    if (colon >= s + n || *colon != ':') {
      snprintf(why, wl, "missing port in \"%.*s\" (expected \"[addr]:port\")", (int)n, s);
      return false;
    }
  } else {
    colon = memchr(s, ':', n);
    if (!colon) {
      snprintf(why, wl, "missing port in \"%.*s\" (expected \"host:port\")", (int)n, s);
      return false;
    }
    if (memchr(colon + 1, ':', (size_t)(s + n - colon - 1))) {
      snprintf(why, wl, "\"%.*s\": IPv6 addresses must be in brackets, e.g. \"[::1]:7878\"", (int)n, s);
      return false;
    }
    if (!valid_hostname(s, (size_t)(colon - s))) {
      snprintf(why, wl, "invalid host \"%.*s\"", (int)(colon - s), s);
      return false;
    }
  }
  if (!valid_port(colon + 1, (size_t)(s + n - colon - 1))) {
    snprintf(why, wl, "invalid port \"%.*s\" (expected 1-65535)", (int)(s + n - colon - 1), colon + 1);
    return false;
  }
  return true;
}

static bool check_url(const char *u, char *why, size_t wl) {
  size_t skip = strncmp(u, "https://", 8) == 0 ? 8 : strncmp(u, "http://", 7) == 0 ? 7 : 0;
  if (!skip) {
    snprintf(why, wl, "invalid URL \"%s\" (expected https://host:port or http://host:port)", u);
    return false;
  }
  size_t n = strlen(u + skip);
  if (n > 0 && u[skip + n - 1] == '/') n--;
  char tmp[256];
  if (!check_hostport(u + skip, n, tmp, sizeof tmp)) {
    snprintf(why, wl, "invalid URL \"%s\": %s", u, tmp);
    return false;
  }
  return true;
}

/* The value checks of single keys beyond their kind: [server]
 * trusted_proxies entries are "sha256:HEX" | "subject:DN" | "san:NAME"
 * (util/proxy_id.h); forwarded_cert_header is a lower-case header name. */
static bool check_value(const keydef *k, const char *s, char *why, size_t wl) {
  if (k->off == OFF(server, trusted_proxies)) {
    amn_proxy_id p;
    return amn_proxy_id_parse(s, &p, why, wl);
  }
  if (k->off == OFF(server, forwarded_cert_header))
    for (const char *p = s; *p; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.')) {
        snprintf(why, wl, "\"%.64s\": a lower-case header name (a-z 0-9 - _ .)", s);
        return false;
      }
  return true;
}

/* Parsed value before it is checked and stored. */
typedef struct val {
  int64_t i;
  bool b;
  const char *s;
  size_t slen;
  char **list; /* K_URLS, K_STRS: owned by the caller */
  size_t n;
} val;

/* Validates v for key k and stores it into c. On failure writes the reason
 * (without the key name) into why. */
static int store(amn_config *c, const keydef *k, const val *v, char *why, size_t wl) {
  switch (k->kind) {
  case K_INT:
    if (v->i < k->min || v->i > k->max) {
      snprintf(why, wl, "value %lld out of range (%lld..%lld)", (long long)v->i, (long long)k->min,
               (long long)k->max);
      return AMN_ECONFIG;
    }
    *FIELD(c, k, int64_t) = v->i;
    return 0;
  case K_BOOL:
    *FIELD(c, k, bool) = v->b;
    return 0;
  case K_URLS:
  case K_STRS: {
    if (v->n == 0 && k->kind == K_URLS) {
      snprintf(why, wl, "at least one URL is required");
      return AMN_ECONFIG;
    }
    for (size_t i = 0; i < v->n; i++) {
      char w[400];
      if (k->kind == K_URLS && !check_url(v->list[i], why, wl)) return AMN_ECONFIG;
      if (k->kind == K_STRS && !v->list[i][0]) return snprintf(why, wl, "element %zu: must not be empty", i + 1), AMN_ECONFIG;
      if (!check_value(k, v->list[i], w, sizeof w))
        return snprintf(why, wl, "element %zu: %s", i + 1, w), AMN_ECONFIG;
    }
    char **u = dup_urls(v->list, v->n);
    if (!u) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
    free_urls(*FIELD(c, k, char **), *URL_COUNT(c, k));
    *FIELD(c, k, char **) = u;
    *URL_COUNT(c, k) = v->n;
    return 0;
  }
  default:
    break;
  }
  /* string kinds */
  if (memchr(v->s, '\0', v->slen)) {
    snprintf(why, wl, "must not contain NUL characters");
    return AMN_ECONFIG;
  }
  if (v->slen == 0) {
    snprintf(why, wl, "must not be empty");
    return AMN_ECONFIG;
  }
  if (k->kind == K_ENUM) {
    bool found = false;
    char list[128] = "";
    for (const char *const *ch = k->choices; *ch; ch++) {
      if (strcmp(*ch, v->s) == 0) found = true;
      snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", ch == k->choices ? "" : ch[1] ? ", " : " or ", *ch);
    }
    if (!found) {
      snprintf(why, wl, "invalid value \"%.64s\" (expected %s)", v->s, list);
      return AMN_ECONFIG;
    }
  }
  if (k->kind == K_ADDR && !check_hostport(v->s, v->slen, why, wl)) return AMN_ECONFIG;
  if (!check_value(k, v->s, why, wl)) return AMN_ECONFIG;
  char *s = strdup(v->s);
  if (!s) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
  free(*FIELD(c, k, char *));
  *FIELD(c, k, char *) = s;
  return 0;
}

/* Checks between keys; returns the index of the key to blame or -1. */
static int cross_check(const amn_config *c, char *why, size_t wl) {
  if (c->client.pool_min_connections > c->client.pool_max_connections) {
    snprintf(why, wl, "%lld is greater than client.pool_max_connections (%lld)",
             (long long)c->client.pool_min_connections, (long long)c->client.pool_max_connections);
    for (size_t i = 0; i < NKEYS; i++)
      if (keys[i].off == offsetof(amn_config, client.pool_min_connections)) return (int)i;
  }
  return -1;
}
static int key_index(size_t off) {
  for (size_t i = 0; i < NKEYS; i++)
    if (keys[i].off == off) return (int)i;
  return -1;
}

/* ------------------------------------------------------------------ */
/* file                                                               */
/* ------------------------------------------------------------------ */

static const char *a_type(amn_toml_type t) {
  switch (t) {
  case AMN_TOML_TABLE: return "a table";
  case AMN_TOML_ARRAY: return "an array";
  case AMN_TOML_STRING: return "a string";
  case AMN_TOML_INT: return "an integer";
  case AMN_TOML_FLOAT: return "a float";
  case AMN_TOML_BOOL: return "a boolean";
  default: return "a date/time";
  }
}

/* TOML node -> val (type check only). list is allocated for K_URLS, K_STRS. */
static int from_node(const keydef *k, const amn_toml_node *n, val *v, int *line, char *why, size_t wl) {
  memset(v, 0, sizeof *v); /* a failure leaves list NULL: the caller frees it whatever happened */
  amn_toml_type t = amn_toml_type_of(n);
  static const char *const want[] = {"an integer", "a boolean (true/false)", "a string", "a string",
                                     "a string", "an array of strings", "an array of strings"};
  static const amn_toml_type need[] = {AMN_TOML_INT,    AMN_TOML_BOOL,  AMN_TOML_STRING, AMN_TOML_STRING,
                                       AMN_TOML_STRING, AMN_TOML_ARRAY, AMN_TOML_ARRAY};
  if (t != need[k->kind]) {
    snprintf(why, wl, "expected %s, got %s", want[k->kind], a_type(t));
    return AMN_ECONFIG;
  }
  memset(v, 0, sizeof *v);
  if (t == AMN_TOML_INT) v->i = amn_toml_int(n);
  else if (t == AMN_TOML_BOOL) v->b = amn_toml_bool(n);
  else if (t == AMN_TOML_STRING) v->s = amn_toml_str(n, &v->slen);
  else {
    v->n = amn_toml_count(n);
    v->list = calloc(v->n ? v->n : 1, sizeof(char *));
    if (!v->list) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
    for (size_t i = 0; i < v->n; i++) {
      const amn_toml_node *e = amn_toml_at(n, i);
      size_t len;
      if (amn_toml_type_of(e) != AMN_TOML_STRING) {
        *line = amn_toml_line(e);
        snprintf(why, wl, "element %zu: expected a string, got %s", i + 1, a_type(amn_toml_type_of(e)));
        return AMN_ECONFIG;
      }
      v->list[i] = (char *)amn_toml_str(e, &len);
      if (memchr(v->list[i], '\0', len)) {
        *line = amn_toml_line(e);
        snprintf(why, wl, "element %zu: must not contain NUL characters", i + 1);
        return AMN_ECONFIG;
      }
    }
  }
  return 0;
}

static char *read_all(const char *path, size_t *len, int *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return *err = errno, NULL;
  errno = 0;
  char *d = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      if (cap >= CONFIG_MAX_BYTES) {
        *err = EFBIG;
        goto fail;
      }
      cap = cap ? cap * 2 : 4096;
      char *nd = realloc(d, cap + 1);
      if (!nd) {
        *err = ENOMEM;
        goto fail;
      }
      d = nd;
    }
    size_t r = fread(d + n, 1, cap - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) {
        *err = errno ? errno : EIO;
        goto fail;
      }
      break;
    }
  }
  fclose(f);
  d[n] = '\0';
  *len = n;
  return d;
fail:
  fclose(f);
  free(d);
  return NULL;
}

/* Applies the document to `c`; on error fills err "path:line: ..." */
static int apply_doc(amn_config *c, const amn_toml_node *root, const char *path, char *err, size_t errlen) {
  char why[512];
  int lines[NKEYS] = {0};
  for (size_t si = 0; si < amn_toml_count(root); si++) {
    const char *sname = amn_toml_key_at(root, si, NULL);
    const amn_toml_node *sec = amn_toml_at(root, si);
    bool known = false;
    for (size_t j = 0; j < sizeof sections / sizeof sections[0]; j++)
      if (strcmp(sections[j], sname) == 0) known = true;
    if (!known)
      return amn_set_err(err, errlen, AMN_ECONFIG,
                         amn_toml_type_of(sec) == AMN_TOML_TABLE
                             ? "%s:%d: unknown section [%s] (expected [network], [tls], [quic], [server], [client], [admin], [log] or [auth])"
                             : "%s:%d: unknown key '%s' outside of any section (keys belong in [network], [tls], "
                               "[quic], [server], [client], [admin], [log] or [auth])",
                         path, amn_toml_line(sec), sname);
    if (amn_toml_type_of(sec) != AMN_TOML_TABLE)
      return amn_set_err(err, errlen, AMN_ECONFIG, "%s:%d: '%s' must be a section [%s], not %s", path,
                         amn_toml_line(sec), sname, sname, a_type(amn_toml_type_of(sec)));
    for (size_t ki = 0; ki < amn_toml_count(sec); ki++) {
      const char *kname = amn_toml_key_at(sec, ki, NULL);
      const amn_toml_node *n = amn_toml_at(sec, ki);
      if (!strcmp(sname, "auth") && !strcmp(kname, "rule")) {
        int rc = amn_config_auth_rules(c, n, path, err, errlen);
        if (rc) return rc;
        continue;
      }
      const keydef *k = NULL;
      for (size_t j = 0; j < NKEYS; j++)
        if (!strcmp(keys[j].section, sname) && !strcmp(keys[j].key, kname)) k = &keys[j];
      if (!k)
        return amn_set_err(err, errlen, AMN_ECONFIG, "%s:%d: unknown key '%s.%s'", path, amn_toml_line(n),
                           sname, kname);
      val v;
      int line = amn_toml_line(n);
      int rc = from_node(k, n, &v, &line, why, sizeof why);
      if (rc == 0) rc = store(c, k, &v, why, sizeof why);
      if (IS_LIST(k)) free(v.list);
      if (rc) return amn_set_err(err, errlen, rc, "%s:%d: %s.%s: %s", path, line, sname, kname, why);
      lines[k - keys] = line;
      char where[4200];
      snprintf(where, sizeof where, "%s:%d", path, line);
      if (!origin_set(c, (size_t)(k - keys), where)) return amn_set_err(err, errlen, AMN_ENOMEM, "%s: out of memory", path);
    }
  }
  int bad = cross_check(c, why, sizeof why);
  if (bad >= 0) {
    int line = lines[bad];
    if (!line) line = lines[key_index(offsetof(amn_config, client.pool_max_connections))];
    return amn_set_err(err, errlen, AMN_ECONFIG, "%s:%d: %s.%s: %s", path, line, keys[bad].section,
                       keys[bad].key, why);
  }
  return 0;
}

int amn_config_load(amn_config *c, const char *path, char *err, size_t errlen) {
  if (!c || !path) return amn_set_err(err, errlen, AMN_EINVAL, "amn_config_load: NULL argument");
  size_t len;
  int e = 0;
  char *text = read_all(path, &len, &e);
  if (!text)
    return amn_set_err(err, errlen, e == ENOMEM ? AMN_ENOMEM : AMN_EIO, "%s: %s", path,
                       e == EFBIG ? "file too large" : strerror(e));
  char msg[256];
  int line = 0;
  amn_toml_doc *doc = amn_toml_parse(text, len, msg, sizeof msg, &line);
  free(text);
  if (!doc) {
    if (line > 0) return amn_set_err(err, errlen, AMN_ECONFIG, "%s:%d: %s", path, line, msg);
    return amn_set_err(err, errlen, AMN_ENOMEM, "%s: %s", path, msg);
  }
  amn_config tmp;
  int rc = config_dup(&tmp, c);
  if (rc) {
    amn_toml_free(doc);
    return amn_set_err(err, errlen, rc, "%s: out of memory", path);
  }
  rc = apply_doc(&tmp, amn_toml_root(doc), path, err, errlen);
  amn_toml_free(doc);
  if (rc) {
    amn_config_free(&tmp);
    return rc;
  }
  amn_config_free(c);
  *c = tmp;
  return 0;
}

/* ------------------------------------------------------------------ */
/* environment                                                        */
/* ------------------------------------------------------------------ */

#define ENV_PREFIX "AMATERS_NET_"

static void env_name(const keydef *k, char *out, size_t outlen) {
  snprintf(out, outlen, ENV_PREFIX "%s_%s", k->section, k->key);
  for (char *p = out; *p; p++) *p = (char)toupper((unsigned char)*p);
}

/* Environment string -> val. list (K_URLS, K_STRS) is allocated, entries point into *copy. */
static int from_env(const keydef *k, const char *s, val *v, char **copy, char *why, size_t wl) {
  memset(v, 0, sizeof *v);
  *copy = NULL;
  switch (k->kind) {
  case K_INT: {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!isdigit((unsigned char)s[0]) && !(s[0] == '-' && isdigit((unsigned char)s[1]))) end = (char *)s;
    if (end == s || *end || errno == ERANGE) {
      snprintf(why, wl, "expected a decimal integer, got \"%.64s\"", s);
      return AMN_ECONFIG;
    }
    v->i = x;
    return 0;
  }
  case K_BOOL:
    if (strcmp(s, "true") && strcmp(s, "false")) {
      snprintf(why, wl, "expected true or false, got \"%.64s\"", s);
      return AMN_ECONFIG;
    }
    v->b = s[0] == 't';
    return 0;
  case K_URLS:
  case K_STRS: {
    if (!(*copy = strdup(s))) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    if (!(v->list = calloc(cap, sizeof(char *)))) return snprintf(why, wl, "out of memory"), AMN_ENOMEM;
    char *save = NULL;
    for (char *tok = strtok_r(*copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
      while (*tok == ' ' || *tok == '\t') tok++;
      size_t n = strlen(tok);
      while (n && (tok[n - 1] == ' ' || tok[n - 1] == '\t')) tok[--n] = '\0';
      if (n) v->list[v->n++] = tok;
    }
    return 0;
  }
  default:
    v->s = s;
    v->slen = strlen(s);
    return 0;
  }
}

int amn_config_apply_env(amn_config *c, char *err, size_t errlen) {
  if (!c) return amn_set_err(err, errlen, AMN_EINVAL, "amn_config_apply_env: NULL argument");
  amn_config tmp;
  int rc = config_dup(&tmp, c);
  if (rc) return amn_set_err(err, errlen, rc, "env: out of memory");
  char name[96], why[512];
  bool set[NKEYS] = {false};
  for (size_t i = 0; i < NKEYS && rc == 0; i++) {
    const keydef *k = &keys[i];
    env_name(k, name, sizeof name);
    const char *s = getenv(name);
    if (!s) continue;
    val v;
    char *copy;
    rc = from_env(k, s, &v, &copy, why, sizeof why);
    if (rc == 0) rc = store(&tmp, k, &v, why, sizeof why);
    free(v.list);
    free(copy);
    if (rc) amn_set_err(err, errlen, rc, "env %s: %s", name, why);
    else {
      char where[128];
      snprintf(where, sizeof where, "env %s", name);
      if (!origin_set(&tmp, i, where)) rc = amn_set_err(err, errlen, AMN_ENOMEM, "env: out of memory");
    }
    set[i] = true;
  }
  if (rc == 0) {
    int bad = cross_check(&tmp, why, sizeof why);
    if (bad >= 0) {
      int max_i = key_index(offsetof(amn_config, client.pool_max_connections));
      env_name(&keys[set[bad] || !set[max_i] ? bad : max_i], name, sizeof name);
      rc = amn_set_err(err, errlen, AMN_ECONFIG, "env %s: client.pool_min_connections %s", name, why);
    }
  }
  if (rc) {
    amn_config_free(&tmp);
    return rc;
  }
  /* warn about variables with our prefix that match no key (typos) */
  for (char **e = environ; *e; e++) {
    if (strncmp(*e, ENV_PREFIX, strlen(ENV_PREFIX)) != 0) continue;
    size_t n = strcspn(*e, "=");
    /* variables of the library that are not config keys */
    bool known = n == strlen("AMATERS_NET_PKI_DIR") && strncmp(*e, "AMATERS_NET_PKI_DIR", n) == 0;
    for (size_t i = 0; i < NKEYS && !known; i++) {
      env_name(&keys[i], name, sizeof name);
      known = strlen(name) == n && strncmp(name, *e, n) == 0;
    }
    if (!known) AMN_WARN("ignoring unknown environment variable %.*s", (int)n, *e);
  }
  amn_config_free(c);
  *c = tmp;
  return 0;
}
