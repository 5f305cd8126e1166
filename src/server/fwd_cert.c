/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Forwarded client identity: behind a TLS-terminating proxy, the client
 * certificate the proxy forwards in a request header becomes the call's
 * identity, only when the connection's verified peer is a trusted proxy
 * (amn_server_opts.trusted_proxies). The header value is peer input: it is
 * decoded here (URL-escaped PEM or base64 DER) and verified by the TLS
 * layer as a handshake's client certificate (amn_tls_verify_client_der).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"
#include "util/log.h"

#define FWD_MAX_VALUE 16384u /* the request's whole header block is bounded by AMN_RPC_MAX_HEADER_BYTES */
#define DEFAULT_HEADER "x-client-cert"

/* ---- options ---- */

int amn_fwd_setup(amn_server *s, const amn_server_opts *o, char *err, size_t errlen) {
  const char *h = o->forwarded_cert_header ? o->forwarded_cert_header : DEFAULT_HEADER;
  if (!*h) return amn_set_err(err, errlen, AMN_EINVAL, "forwarded_cert_header must not be empty");
  for (const char *p = h; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
      return amn_set_err(err, errlen, AMN_EINVAL,
                         "forwarded_cert_header \"%.64s\": a lower-case header name (a-z 0-9 - _ .)", h);
  if (strncmp(h, "grpc-", 5) == 0 || (strlen(h) > 4 && strcmp(h + strlen(h) - 4, "-bin") == 0))
    return amn_set_err(err, errlen, AMN_EINVAL, "forwarded_cert_header \"%.64s\": not a grpc- or -bin header", h);
  if (!(s->fwd_header = strdup(h))) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  size_t n = o->trusted_proxy_count;
  if (n == 0) return 0;
  if (!o->trusted_proxies) return amn_set_err(err, errlen, AMN_EINVAL, "trusted_proxies is NULL");
  if (o->tls.insecure)
    return amn_set_err(err, errlen, AMN_EINVAL, "trusted_proxies needs TLS (an insecure server has no verified peer)");
  if (!(s->proxies = calloc(n, sizeof *s->proxies)) || !(s->proxy_s = calloc(n, sizeof *s->proxy_s)))
    return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    char why[200];
    if (!(s->proxy_s[i] = strdup(o->trusted_proxies[i] ? o->trusted_proxies[i] : "")))
      return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
    s->nproxies = i + 1; /* proxy_s[0..i] to free */
    if (!amn_proxy_id_parse(s->proxy_s[i], &s->proxies[i], why, sizeof why))
      return amn_set_err(err, errlen, AMN_EINVAL, "trusted_proxies[%zu] %s", i, why);
  }
  return 0;
}

void amn_fwd_free(amn_server *s) {
  for (size_t i = 0; s->proxy_s && i < s->nproxies; i++) free(s->proxy_s[i]);
  free(s->proxy_s);
  free(s->proxies);
  free(s->fwd_header);
}

/* ---- the header value ---- */

static bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int fail(char *why, size_t wl, const char *msg, uint8_t *text) {
  free(text);
  snprintf(why, wl, "%s", msg);
  return AMN_EINVAL;
}

int amn_fwd_cert_decode(const uint8_t *v, size_t len, uint8_t **der, size_t *derlen, char *why, size_t wl) {
  static const char begin[] = "-----BEGIN CERTIFICATE-----", end_line[] = "-----END CERTIFICATE-----";
  *der = NULL;
  *derlen = 0;
  if (len > FWD_MAX_VALUE) return fail(why, wl, "more than 16384 bytes", NULL);
  uint8_t *text = malloc(len + 1);
  if (!text) return fail(why, wl, "out of memory", NULL), AMN_ENOMEM;
  /* nginx escapes the PEM (%0A, %2B, ...); HAProxy's base64 has no '%' */
  size_t n = memchr(v, '%', len) ? amn_pct_decode((const char *)v, len, text) : (len ? memcpy(text, v, len), len : 0);
  size_t a = 0, b = n;
  while (a < b && is_space(text[a])) a++;
  while (b > a && is_space(text[b - 1])) b--;
  if (a == b) return fail(why, wl, "empty", text);
  if (b - a >= 5 && memcmp(text + a, "-----", 5) == 0) {
    if (b - a < sizeof begin - 1 || memcmp(text + a, begin, sizeof begin - 1) != 0)
      return fail(why, wl, "PEM block is not a CERTIFICATE", text);
    a += sizeof begin - 1;
    const uint8_t *e = memmem(text + a, b - a, end_line, sizeof end_line - 1);
    if (!e) return fail(why, wl, "PEM certificate without its END line", text);
    b = (size_t)(e - text); /* a chain after the first certificate is not used */
  }
  /* the base64 text without its line breaks, in place (m never passes i) */
  size_t m = 0;
  for (size_t i = a; i < b; i++)
    if (!is_space(text[i])) text[m++] = text[i];
  if (m == 0) return fail(why, wl, "no certificate data", text);
  uint8_t *out = malloc(m * 3 / 4 + 3);
  if (!out) return fail(why, wl, "out of memory", text), AMN_ENOMEM;
  long r = amn_b64_decode((const char *)text, m, out);
  free(text);
  if (r <= 0) {
    free(out);
    return fail(why, wl, "invalid base64", NULL);
  }
  *der = out;
  *derlen = (size_t)r;
  return 0;
}

/* ---- the call's identity ---- */

bool amn_fwd_identity(amn_call *c, char *msg, size_t ml) {
  amn_server *s = c->sl->srv;
  const amn_peer_identity *peer = c->peer;
  const amn_md *h = NULL;
  size_t nh = 0;
  for (size_t i = 0; i < c->md_pub.count; i++)
    if (strcmp(c->md_pub.entries[i].key, s->fwd_header) == 0 && nh++ == 0) h = &c->md_pub.entries[i];
  bool trusted = false;
  for (size_t i = 0; peer && !trusted && i < s->nproxies; i++) trusted = amn_proxy_id_match(&s->proxies[i], peer);
  if (!trusted) {
    if (h)
      AMN_DEBUG("request %s from %s: %s header ignored (the peer is not a trusted proxy)", c->method,
                c->peer_addr, s->fwd_header);
    return true;
  }
  /* from here on the call's identity is never the proxy's own */
  c->fwd_set = true;
  memset(&c->fwd, 0, sizeof c->fwd);
  c->fwd.id.via = peer;
  c->peer = &c->fwd.id;
  size_t vl = h ? h->value_len : 0;
  while (vl && is_space(h->value[vl - 1])) vl--;
  if (vl == 0) return true; /* the proxy's client sent no certificate */
  char why[300];
  const char *what = "is invalid";
  uint8_t *der = NULL;
  size_t dl = 0;
  int rc = nh > 1 ? (snprintf(why, sizeof why, "sent %zu times", nh), AMN_EINVAL)
                  : amn_fwd_cert_decode(h->value, vl, &der, &dl, why, sizeof why);
  if (rc == 0) {
    amn_tls_ctx *ctx = atomic_load(&s->tls); /* the current credentials' CA */
    rc = amn_tls_verify_client_der(ctx, der, dl, &c->fwd, why, sizeof why);
    what = "refused";
    free(der);
    c->fwd.id.via = peer; /* verify filled the rest */
  }
  if (rc == 0) return true;
  snprintf(msg, ml, "forwarded client certificate (%s header) %s: %s", s->fwd_header, what, why);
  AMN_INFO("request %s from %s via %s: %s", c->method, c->peer_addr, peer->subject ? peer->subject : "?", msg);
  return false;
}
