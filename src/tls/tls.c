/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* TLS contexts and sessions (tls/tls.h): GnuTLS credentials, strict peer
 * verification in our own verify function, ALPN, peer identity. */
#include "tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "amn/pki.h"
#include "tls/crl.h"
#include "util/log.h"

#define MAX_ALPN 8    /* GnuTLS' own limit */
#define MAX_CHAIN 16  /* longest peer chain we look at */

struct amn_tls_ctx {
  int refs;
  amn_tls_role role;
  gnutls_certificate_credentials_t cred;
  gnutls_x509_trust_list_t trust; /* ca_path only: the sole trust anchors */
  gnutls_priority_t prio;         /* TCP: TLS 1.3 (+1.2 if allowed) */
  gnutls_priority_t prio_quic;    /* QUIC: TLS 1.3, no middlebox compat mode */
  gnutls_datum_t alpn[MAX_ALPN];
  unsigned nalpn;
  char alpn_text[128];            /* "h2, h3" for messages */
  char *server_name;              /* client: name to verify instead of the host */
  /* revocation (crl_path): the CRLs now in use, swapped under crl_lock when
   * the files change; the CA certificates that must have signed them */
  char *crl_path;
  bool crl_warn;                  /* an expired CRL: warn only (else refuse) */
  gnutls_x509_crt_t *cas;
  unsigned ncas;
  pthread_mutex_t crl_lock;
  amn_crl_set *crls;
  uint64_t crl_bad_stamp;         /* files that failed to load (not retried until they change) */
  _Atomic int64_t crl_next_check; /* CLOCK_MONOTONIC ns: no stat of the files before */
};

/* Per-session state: private data of the session-local extension
 * AMN_TLS_STATE_EXT_ID, freed by gnutls_deinit() through state_free(). */
typedef struct tls_state {
  amn_tls_ctx *ctx;  /* reference held */
  char *name;        /* client: normalized name to verify */
  bool verified;     /* our verify function accepted the peer */
  bool revoked;      /* refused for a revoked certificate (the alert to send) */
  char reason[320];  /* last failure reason, "" if none */
} tls_state;

static void state_free(gnutls_ext_priv_data_t p) {
  tls_state *st = p;
  if (!st) return;
  amn_tls_ctx_unref(st->ctx);
  free(st->name);
  free(st);
}

static tls_state *state_of(gnutls_session_t s) {
  gnutls_ext_priv_data_t p = NULL;
  if (!s || gnutls_ext_get_data(s, AMN_TLS_STATE_EXT_ID, &p) < 0) return NULL;
  return p;
}

/* ------------------------------------------------------------------ */
/* Context                                                            */
/* ------------------------------------------------------------------ */

static void fmt_time(time_t t, char *buf, size_t n) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int gnutls_to_amn(int r) { return r == GNUTLS_E_FILE_ERROR ? AMN_EIO : AMN_ETLS; }

/* ------------------------------------------------------------------ */
/* Revocation lists                                                   */
/* ------------------------------------------------------------------ */

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Logs an expired CRL once per set: an error when it refuses every peer. */
static void crl_report_expiry(amn_tls_ctx *c, amn_crl_set *set) {
  time_t next = 0;
  const char *file = amn_crl_set_expired(set, time(NULL), &next);
  if (!file || !amn_crl_set_first_expiry_report(set)) return;
  char tbuf[32];
  fmt_time(next, tbuf, sizeof tbuf);
  if (c->crl_warn)
    AMN_WARN("CRL %s has expired (next update %s); still using it (tls.crl_expired = \"warn\")", file, tbuf);
  else
    AMN_ERROR("CRL %s has expired (next update %s): every peer certificate is refused until a fresh CRL is "
              "installed (tls.crl_expired = \"refuse\")", file, tbuf);
}

static void crl_log_loaded(amn_tls_ctx *c, amn_crl_set *set, const char *what) {
  unsigned revoked = 0, n = amn_crl_set_count(set, &revoked);
  AMN_INFO("CRL %s from %s: %u CRL%s, %u revoked certificate%s", what, c->crl_path, n, n == 1 ? "" : "s", revoked,
           revoked == 1 ? "" : "s");
  crl_report_expiry(c, set);
}

static int crl_setup(amn_tls_ctx *c, const amn_tls_opts *opts, char *err, size_t errlen) {
  if (!(c->crl_path = strdup(opts->crl_path))) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  gnutls_datum_t d = {NULL, 0};
  int r = gnutls_load_file(opts->ca_path, &d);
  if (r >= 0) r = gnutls_x509_crt_list_import2(&c->cas, &c->ncas, &d, GNUTLS_X509_FMT_PEM, 0);
  gnutls_free(d.data);
  if (r < 0) return amn_set_err(err, errlen, AMN_ETLS, "CA bundle %s: %s", opts->ca_path, gnutls_strerror(r));
  int rc = amn_crl_set_load(&c->crls, c->crl_path, c->cas, c->ncas, err, errlen);
  if (rc) return rc;
  atomic_store(&c->crl_next_check, mono_ns() + 1000000000);
  crl_log_loaded(c, c->crls, "loaded");
  return 0;
}

/* The CRLs to check a peer against (a reference), re-read first when the
 * files changed; at most one stat of them a second per context. */
static amn_crl_set *crl_current(amn_tls_ctx *c) {
  int64_t now = mono_ns(), next = atomic_load(&c->crl_next_check);
  if (now >= next && atomic_compare_exchange_strong(&c->crl_next_check, &next, now + 1000000000)) {
    uint64_t stamp = amn_crl_stamp(c->crl_path);
    pthread_mutex_lock(&c->crl_lock);
    bool changed = stamp != amn_crl_set_stamp(c->crls) && stamp != c->crl_bad_stamp;
    pthread_mutex_unlock(&c->crl_lock);
    if (changed) {
      char why[512];
      amn_crl_set *fresh = NULL;
      if (amn_crl_set_load(&fresh, c->crl_path, c->cas, c->ncas, why, sizeof why) != 0) {
        AMN_WARN("CRL %s changed but cannot be used, keeping the previous CRLs: %s", c->crl_path, why);
        pthread_mutex_lock(&c->crl_lock);
        c->crl_bad_stamp = stamp;
        pthread_mutex_unlock(&c->crl_lock);
      } else {
        crl_log_loaded(c, fresh, "reloaded (file changed)");
        pthread_mutex_lock(&c->crl_lock);
        amn_crl_set *old = c->crls;
        c->crls = fresh;
        pthread_mutex_unlock(&c->crl_lock);
        amn_crl_set_unref(old);
      }
    }
  }
  pthread_mutex_lock(&c->crl_lock);
  amn_crl_set *set = c->crls;
  amn_crl_set_ref(set);
  pthread_mutex_unlock(&c->crl_lock);
  return set;
}

static void serial_hex(gnutls_x509_crt_t crt, char *out, size_t cap) {
  unsigned char ser[64];
  size_t sz = sizeof ser;
  out[0] = '\0';
  if (gnutls_x509_crt_get_serial(crt, ser, &sz) < 0) {
    snprintf(out, cap, "?");
    return;
  }
  for (size_t i = 0; i < sz && 2 * i + 3 <= cap; i++) snprintf(out + 2 * i, 3, "%02x", ser[i]);
}

/* Refuses (false, reason in st) a chain listed in the CRLs, or any chain
 * while a CRL has expired and the setting is to refuse. */
static bool crl_check(tls_state *st, amn_tls_ctx *c, gnutls_x509_crt_t *crts, unsigned ncrt, const char *peer) {
  amn_crl_set *set = crl_current(c);
  bool ok = true;
  time_t next = 0;
  const char *file = amn_crl_set_expired(set, time(NULL), &next);
  if (file) {
    crl_report_expiry(c, set);
    if (!c->crl_warn) {
      char tbuf[32];
      fmt_time(next, tbuf, sizeof tbuf);
      snprintf(st->reason, sizeof st->reason, "%s certificate refused: CRL %s has expired (next update %s)", peer,
               file, tbuf);
      ok = false;
    }
  }
  for (unsigned i = 0; ok && i < ncrt; i++) {
    if (!(file = amn_crl_set_revoked(set, crts[i]))) continue;
    char ser[130];
    serial_hex(crts[i], ser, sizeof ser);
    snprintf(st->reason, sizeof st->reason, "%s %scertificate revoked (serial %s, listed in CRL %s)", peer,
             i ? "chain " : "", ser, file);
    st->revoked = true;
    ok = false;
  }
  amn_crl_set_unref(set);
  return ok;
}

int amn_tls_ctx_new(amn_tls_ctx **out, amn_tls_role role, const amn_tls_opts *opts, const char *const *alpn,
                    char *err, size_t errlen) {
  if (!out || !opts || !alpn || !alpn[0] || (role != AMN_TLS_SERVER && role != AMN_TLS_CLIENT))
    return amn_set_err(err, errlen, AMN_EINVAL, "TLS context: missing argument");
  bool has_cert = opts->cert_path && *opts->cert_path, has_key = opts->key_path && *opts->key_path;
  if (!opts->ca_path || !*opts->ca_path || has_cert != has_key || (role == AMN_TLS_SERVER && !has_cert))
    return amn_set_err(err, errlen, AMN_EINVAL,
                       role == AMN_TLS_SERVER
                           ? "TLS needs a certificate, a key and a CA bundle (tls.cert, tls.key, tls.ca)"
                           : "TLS needs a CA bundle, and a client certificate needs its key (and vice versa)");
  *out = NULL;
  /* A client without a certificate may still connect: servers that require
   * mutual TLS (ours always do) refuse it during the handshake. */
  if (!has_cert) AMN_WARN("no client certificate configured: servers requiring mutual TLS will refuse this client");

  /* each file readable and of its kind, the key matching the certificate:
   * a precise reason naming the file rather than GnuTLS' generic one */
  int crc = amn_tls_check_files(opts, NULL, err, errlen);
  if (crc) return crc;
  /* The key must stay private: warn (do not fail) when others can access it. */
  struct stat st;
  if (has_key && stat(opts->key_path, &st) != 0)
    return amn_set_err(err, errlen, AMN_EIO, "cannot access key file %s: %s", opts->key_path, strerror(errno));
  if (has_key && (st.st_mode & (S_IRWXG | S_IRWXO)))
    AMN_WARN("TLS key file %s is accessible by group/others (mode %04o); run: chmod 600 %s", opts->key_path,
             (unsigned)(st.st_mode & 07777), opts->key_path);

  amn_tls_ctx *c = calloc(1, sizeof *c);
  if (!c) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  c->refs = 1;
  c->role = role;
  pthread_mutex_init(&c->crl_lock, NULL);
  int rc = 0, r;
  gnutls_x509_crt_t own = NULL;

  for (; alpn[c->nalpn]; c->nalpn++) {
    size_t n = strlen(alpn[c->nalpn]);
    if (c->nalpn == MAX_ALPN || n == 0 || n > 255) {
      rc = amn_set_err(err, errlen, AMN_EINVAL, "invalid ALPN protocol list");
      goto fail;
    }
    c->alpn[c->nalpn].data = (unsigned char *)strdup(alpn[c->nalpn]);
    c->alpn[c->nalpn].size = (unsigned)n;
    if (!c->alpn[c->nalpn].data) {
      rc = amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
      goto fail;
    }
    size_t used = strlen(c->alpn_text);
    snprintf(c->alpn_text + used, sizeof c->alpn_text - used, "%s%s", used ? ", " : "", alpn[c->nalpn]);
  }
  if (role == AMN_TLS_CLIENT && opts->server_name && *opts->server_name &&
      !(c->server_name = strdup(opts->server_name))) {
    rc = amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
    goto fail;
  }

  if ((r = gnutls_certificate_allocate_credentials(&c->cred)) < 0) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "TLS credentials: %s", gnutls_strerror(r));
    goto fail;
  }
  if (has_cert)
    r = gnutls_certificate_set_x509_key_file2(c->cred, opts->cert_path, opts->key_path, GNUTLS_X509_FMT_PEM, NULL, 0);
  if (has_cert && r < 0) {
    rc = amn_set_err(err, errlen, gnutls_to_amn(r), "cannot load certificate %s with key %s: %s", opts->cert_path,
                     opts->key_path, gnutls_strerror(r));
    goto fail;
  }

  /* our own leaf must be valid now: refuse to start with an expired one */
  gnutls_datum_t der;
  if (!has_cert) goto trust;
  if ((r = gnutls_certificate_get_crt_raw(c->cred, 0, 0, &der)) < 0 || (r = gnutls_x509_crt_init(&own)) < 0 ||
      (r = gnutls_x509_crt_import(own, &der, GNUTLS_X509_FMT_DER)) < 0) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "cannot parse certificate %s: %s", opts->cert_path, gnutls_strerror(r));
    goto fail;
  }
  time_t now = time(NULL), nb = gnutls_x509_crt_get_activation_time(own), na = gnutls_x509_crt_get_expiration_time(own);
  char tbuf[32];
  if (na != (time_t)-1 && now > na) {
    fmt_time(na, tbuf, sizeof tbuf);
    rc = amn_set_err(err, errlen, AMN_ETLS, "own certificate %s has expired (not after %s)", opts->cert_path, tbuf);
    goto fail;
  }
  if (nb != (time_t)-1 && now < nb) {
    fmt_time(nb, tbuf, sizeof tbuf);
    rc = amn_set_err(err, errlen, AMN_ETLS, "own certificate %s is not yet valid (not before %s)", opts->cert_path, tbuf);
    goto fail;
  }

trust:
  if ((r = gnutls_x509_trust_list_init(&c->trust, 0)) < 0) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "trust list: %s", gnutls_strerror(r));
    goto fail;
  }
  r = gnutls_x509_trust_list_add_trust_file(c->trust, opts->ca_path, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
  if (r == 0 || r == GNUTLS_E_NO_CERTIFICATE_FOUND) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "CA bundle %s holds no certificate", opts->ca_path);
    goto fail;
  }
  if (r < 0) {
    rc = amn_set_err(err, errlen, gnutls_to_amn(r), "CA bundle %s: %s", opts->ca_path, gnutls_strerror(r));
    goto fail;
  }

  const char *prio = opts->allow_tls12 ? "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2" : "NORMAL:-VERS-ALL:+VERS-TLS1.3";
  const char *epos = NULL;
  if ((r = gnutls_priority_init(&c->prio, prio, &epos)) < 0 ||
      (r = gnutls_priority_init(&c->prio_quic, "NORMAL:-VERS-ALL:+VERS-TLS1.3:%DISABLE_TLS13_COMPAT_MODE", &epos)) < 0) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "TLS priorities: %s (at '%s')", gnutls_strerror(r), epos ? epos : "");
    goto fail;
  }
  c->crl_warn = opts->crl_expired_warn;
  if (opts->crl_path && *opts->crl_path && (rc = crl_setup(c, opts, err, errlen)) != 0) goto fail;
  gnutls_x509_crt_deinit(own);
  *out = c;
  return 0;
fail:
  if (own) gnutls_x509_crt_deinit(own);
  amn_tls_ctx_unref(c);
  return rc;
}

void amn_tls_ctx_ref(amn_tls_ctx *ctx) {
  if (ctx) __atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
}

void amn_tls_ctx_unref(amn_tls_ctx *ctx) {
  if (!ctx || __atomic_sub_fetch(&ctx->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (ctx->cred) gnutls_certificate_free_credentials(ctx->cred);
  if (ctx->trust) gnutls_x509_trust_list_deinit(ctx->trust, 1);
  if (ctx->prio) gnutls_priority_deinit(ctx->prio);
  if (ctx->prio_quic) gnutls_priority_deinit(ctx->prio_quic);
  for (unsigned i = 0; i < ctx->nalpn; i++) free(ctx->alpn[i].data);
  free(ctx->server_name);
  if (ctx->crl_path) {
    amn_crl_set_unref(ctx->crls);
    for (unsigned i = 0; i < ctx->ncas; i++) gnutls_x509_crt_deinit(ctx->cas[i]);
    gnutls_free(ctx->cas);
    free(ctx->crl_path);
  }
  pthread_mutex_destroy(&ctx->crl_lock);
  free(ctx);
}

amn_tls_role amn_tls_ctx_role(const amn_tls_ctx *ctx) { return ctx->role; }

/* ------------------------------------------------------------------ */
/* Names                                                              */
/* ------------------------------------------------------------------ */

/* Parses an IPv4/IPv6 literal into a (4 or 16 bytes); returns the length or 0. */
static unsigned parse_ip(const char *s, unsigned char a[16]) {
  if (inet_pton(AF_INET, s, a) == 1) return 4;
  if (inet_pton(AF_INET6, s, a) == 1) return 16;
  return 0;
}

/* "[::1]" -> "::1", "fe80::1%eth0" -> "fe80::1", "Example.COM." -> "Example.COM". */
static char *normalize_name(const char *in) {
  size_t n = strlen(in);
  if (n >= 2 && in[0] == '[' && in[n - 1] == ']') in++, n -= 2;
  char *s = strndup(in, n);
  if (!s) return NULL;
  char *pct = strchr(s, '%');
  if (pct && strchr(s, ':')) *pct = '\0'; /* IPv6 zone id */
  n = strlen(s);
  if (n > 1 && s[n - 1] == '.') s[n - 1] = '\0';
  return s;
}

/* DNS SAN pattern match: case-insensitive; "*.example.com" matches exactly
 * one non-empty left-most label, and only below a name with a dot. */
static bool dns_match(const char *pat, const char *host) {
  char p[256];
  size_t n = strlen(pat);
  if (n == 0 || n >= sizeof p) return false;
  memcpy(p, pat, n + 1);
  if (n > 1 && p[n - 1] == '.') p[n - 1] = '\0';
  if (p[0] == '*' && p[1] == '.') {
    const char *dot = strchr(host, '.');
    if (!dot || dot == host || !strchr(p + 2, '.')) return false;
    return strcasecmp(dot + 1, p + 2) == 0;
  }
  return strcasecmp(p, host) == 0;
}

static bool name_matches(gnutls_x509_crt_t crt, const char *name) {
  unsigned char ip[16];
  unsigned iplen = parse_ip(name, ip);
  for (unsigned i = 0;; i++) {
    char buf[512];
    size_t sz = sizeof buf - 1;
    unsigned type = 0;
    int r = gnutls_x509_crt_get_subject_alt_name2(crt, i, buf, &sz, &type, NULL);
    if (r == GNUTLS_E_SHORT_MEMORY_BUFFER) continue;
    if (r < 0) return false; /* includes REQUESTED_DATA_NOT_AVAILABLE: end of list */
    if (iplen && type == GNUTLS_SAN_IPADDRESS && sz == iplen && memcmp(buf, ip, iplen) == 0) return true;
    if (!iplen && type == GNUTLS_SAN_DNSNAME) {
      buf[sz] = '\0';
      if (strlen(buf) == sz && dns_match(buf, name)) return true; /* no embedded NUL */
    }
  }
}

static bool has_eku(gnutls_x509_crt_t crt, const char *oid) {
  for (unsigned i = 0;; i++) {
    char buf[128];
    size_t sz = sizeof buf;
    int r = gnutls_x509_crt_get_key_purpose_oid(crt, i, buf, &sz, NULL);
    if (r == GNUTLS_E_SHORT_MEMORY_BUFFER) continue;
    if (r < 0) return false;
    if (strcmp(buf, oid) == 0) return true;
  }
}

/* ------------------------------------------------------------------ */
/* Verification                                                       */
/* ------------------------------------------------------------------ */

#define FAIL(...)                                              \
  do {                                                         \
    snprintf(reason, rlen, __VA_ARGS__);                       \
    goto out;                                                  \
  } while (0)

/* Steps 1-4 of the verification of a peer's chain (leaf first) against the
 * context's CA: chain, dates, extended key usage of the leaf (clientAuth when
 * `client_cert`, else serverAuth), anything else GnuTLS found. `peer` names
 * the peer in the reason ("client", "server"). true, or false with the
 * reason written. */
static bool verify_chain(const amn_tls_ctx *c, gnutls_x509_crt_t *crts, unsigned ncrt, bool client_cert,
                         const char *peer, char *reason, size_t rlen) {
  gnutls_x509_crt_t leaf = crts[0];
  /* 1. chain to ca_path (also checks signatures, CA constraints, dates) */
  const char *purpose = client_cert ? GNUTLS_KP_TLS_WWW_CLIENT : GNUTLS_KP_TLS_WWW_SERVER;
  gnutls_typed_vdata_st vd = {.type = GNUTLS_DT_KEY_PURPOSE_OID, .data = (unsigned char *)purpose};
  unsigned status = 0;
  int r = gnutls_x509_trust_list_verify_crt2(c->trust, crts, ncrt, &vd, 1, 0, &status, NULL);
  if (r < 0) FAIL("%s certificate verification error: %s", peer, gnutls_strerror(r));
  if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA | GNUTLS_CERT_SIGNATURE_FAILURE)) {
    gnutls_datum_t dn = {NULL, 0};
    gnutls_x509_crt_get_issuer_dn3(leaf, &dn, 0);
    snprintf(reason, rlen, "%s certificate not issued by a trusted CA (issuer '%s')", peer,
             dn.data ? (const char *)dn.data : "?");
    gnutls_free(dn.data);
    return false;
  }

  /* 2. dates: the leaf itself first, for a precise message */
  time_t now = time(NULL), nb = gnutls_x509_crt_get_activation_time(leaf), na = gnutls_x509_crt_get_expiration_time(leaf);
  char tbuf[32];
  if (na == (time_t)-1 || now > na) {
    fmt_time(na, tbuf, sizeof tbuf);
    FAIL("%s certificate has expired (not after %s)", peer, tbuf);
  }
  if (nb == (time_t)-1 || now < nb) {
    fmt_time(nb, tbuf, sizeof tbuf);
    FAIL("%s certificate is not yet valid (not before %s)", peer, tbuf);
  }
  if (status & (GNUTLS_CERT_EXPIRED | GNUTLS_CERT_NOT_ACTIVATED))
    FAIL("%s certificate chain contains an expired or not yet valid CA certificate", peer);

  /* 3. extended key usage of the leaf (strict: the extension must be there) */
  if (!has_eku(leaf, purpose))
    FAIL("%s certificate lacks extended key usage %s", peer, client_cert ? "clientAuth" : "serverAuth");
  if (status & GNUTLS_CERT_PURPOSE_MISMATCH)
    FAIL("%s certificate chain is not valid for %s", peer, client_cert ? "clientAuth" : "serverAuth");

  /* 4. anything else GnuTLS found (insecure algorithm, constraints, ...) */
  if (status) {
    gnutls_datum_t txt = {NULL, 0};
    gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0);
    snprintf(reason, rlen, "%s certificate rejected: %s", peer, txt.data ? (char *)txt.data : "invalid");
    gnutls_free(txt.data);
    return false;
  }
  return true;
out:
  return false;
}

static int verify_cb(gnutls_session_t s) {
  tls_state *st = state_of(s);
  if (!st) return -1;
  amn_tls_ctx *c = st->ctx;
  bool server = c->role == AMN_TLS_SERVER;
  const char *peer = server ? "client" : "server";
  char *reason = st->reason;
  size_t rlen = sizeof st->reason;
  gnutls_x509_crt_t crts[MAX_CHAIN];
  unsigned ncrt = 0;
  st->verified = false;
  st->revoked = false;
  st->reason[0] = '\0';

  /* ALPN has been negotiated by now (ClientHello / EncryptedExtensions) */
  gnutls_datum_t sel;
  if (gnutls_alpn_get_selected_protocol(s, &sel) < 0) {
    if (server) FAIL("client offered none of the ALPN protocols: %s", c->alpn_text);
    FAIL("server selected no ALPN protocol (offered: %s)", c->alpn_text);
  }

  unsigned n = 0;
  const gnutls_datum_t *raw = gnutls_certificate_get_peers(s, &n);
  if (!raw || n == 0) FAIL("no %s certificate presented", peer);
  if (gnutls_certificate_type_get2(s, GNUTLS_CTYPE_PEERS) != GNUTLS_CRT_X509)
    FAIL("%s certificate is not an X.509 certificate", peer);
  if (n > MAX_CHAIN) FAIL("%s certificate chain too long (%u certificates)", peer, n);
  for (; ncrt < n; ncrt++) {
    int r = gnutls_x509_crt_init(&crts[ncrt]);
    if (r < 0) FAIL("out of memory");
    if ((r = gnutls_x509_crt_import(crts[ncrt], &raw[ncrt], GNUTLS_X509_FMT_DER)) < 0) {
      ncrt++;
      FAIL("%s certificate could not be parsed: %s", peer, gnutls_strerror(r));
    }
  }
  if (!verify_chain(c, crts, ncrt, server, peer, reason, rlen)) goto out;
  /* revocation (crl_path) */
  if (c->crl_path && !crl_check(st, c, crts, ncrt, peer)) goto out;

  /* 5. client: the server must be the host we wanted */
  if (!server && !name_matches(crts[0], st->name)) FAIL("server certificate does not match host '%s'", st->name);

  st->verified = true;
out:
  for (unsigned i = 0; i < ncrt; i++) gnutls_x509_crt_deinit(crts[i]);
  if (!st->verified) AMN_DEBUG("TLS peer refused: %s", st->reason);
  return st->verified ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* Sessions                                                           */
/* ------------------------------------------------------------------ */

int amn_tls_session_new(amn_tls_ctx *ctx, gnutls_session_t *out, unsigned flags, const char *host, char *err,
                        size_t errlen) {
  if (!ctx || !out) return amn_set_err(err, errlen, AMN_EINVAL, "TLS session: missing argument");
  *out = NULL;
  bool server = ctx->role == AMN_TLS_SERVER, quic = (flags & AMN_TLS_QUIC) != 0;
  const char *want = ctx->server_name ? ctx->server_name : host;
  if (!server && (!want || !*want))
    return amn_set_err(err, errlen, AMN_EINVAL, "TLS client session needs a host name to verify");

  tls_state *st = calloc(1, sizeof *st);
  if (!st || (!server && !(st->name = normalize_name(want)))) {
    free(st);
    return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  }
  amn_tls_ctx_ref(ctx);
  st->ctx = ctx;

  gnutls_session_t s = NULL;
  unsigned iflags = (flags & ~AMN_TLS_QUIC) | (server ? GNUTLS_SERVER : GNUTLS_CLIENT);
  if (quic) iflags |= GNUTLS_NO_END_OF_EARLY_DATA;
  int r = gnutls_init(&s, iflags);
  if (r < 0) {
    state_free(st);
    return amn_set_err(err, errlen, AMN_ETLS, "gnutls_init: %s", gnutls_strerror(r));
  }
  /* state first, so that gnutls_deinit() below frees it on any error */
  r = gnutls_session_ext_register(s, "amn-state", AMN_TLS_STATE_EXT_ID, GNUTLS_EXT_TLS, NULL, NULL, state_free,
                                  NULL, NULL, 0);
  if (r < 0) {
    state_free(st);
    gnutls_deinit(s);
    return amn_set_err(err, errlen, AMN_ETLS, "TLS session state: %s", gnutls_strerror(r));
  }
  gnutls_ext_set_data(s, AMN_TLS_STATE_EXT_ID, st);

  const char *what = "priorities";
  if ((r = gnutls_priority_set(s, quic ? ctx->prio_quic : ctx->prio)) < 0) goto fail;
  what = "credentials";
  if ((r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, ctx->cred)) < 0) goto fail;
  gnutls_session_set_verify_function(s, verify_cb);
  what = "ALPN";
  r = gnutls_alpn_set_protocols(s, ctx->alpn, ctx->nalpn,
                                server ? GNUTLS_ALPN_MANDATORY | GNUTLS_ALPN_SERVER_PRECEDENCE : 0);
  if (r < 0) goto fail;
  if (server) {
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    /* no CA names in CertificateRequest: the client sends its certificate
     * whatever its issuer, and we report precisely why it is refused */
    gnutls_certificate_send_x509_rdn_sequence(s, 1);
  } else {
    unsigned char ip[16];
    what = "server name";
    if (!parse_ip(st->name, ip) &&
        (r = gnutls_server_name_set(s, GNUTLS_NAME_DNS, st->name, strlen(st->name))) < 0)
      goto fail;
  }
  *out = s;
  return 0;
fail:
  gnutls_deinit(s);
  return amn_set_err(err, errlen, AMN_ETLS, "TLS session %s: %s", what, gnutls_strerror(r));
}

void amn_tls_send_alert(gnutls_session_t s, int rc) {
  tls_state *st = state_of(s);
  if (st && st->revoked) gnutls_alert_send(s, GNUTLS_AL_FATAL, GNUTLS_A_CERTIFICATE_REVOKED);
  else gnutls_alert_send_appropriate(s, rc);
}

bool amn_tls_ctx_refuses_cert(amn_tls_ctx *ctx, const unsigned char *der, size_t len) {
  if (!ctx || !ctx->crl_path) return false;
  gnutls_x509_crt_t crt;
  if (gnutls_x509_crt_init(&crt) < 0) return true;
  gnutls_datum_t d = {(unsigned char *)der, (unsigned)len};
  bool refuse = true;
  if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) >= 0) {
    tls_state st = {.ctx = ctx};
    refuse = !crl_check(&st, ctx, &crt, 1, ctx->role == AMN_TLS_SERVER ? "client" : "server");
  }
  gnutls_x509_crt_deinit(crt);
  return refuse;
}

int amn_tls_refusal_alert(gnutls_session_t s) {
  tls_state *st = state_of(s);
  return st && st->revoked ? GNUTLS_A_CERTIFICATE_REVOKED : GNUTLS_A_CERTIFICATE_UNKNOWN;
}

const char *amn_tls_last_error(gnutls_session_t s) {
  tls_state *st = state_of(s);
  return st && st->reason[0] ? st->reason : NULL;
}

const char *amn_tls_handshake_error(gnutls_session_t s, int rc) {
  tls_state *st = state_of(s);
  if (st && st->reason[0]) return st->reason;
  bool server = st && st->ctx->role == AMN_TLS_SERVER;
  const char *msg;
  char buf[sizeof st->reason];
  switch (rc) {
  case GNUTLS_E_CERTIFICATE_REQUIRED:
  case GNUTLS_E_NO_CERTIFICATE_FOUND:
    msg = server ? "no client certificate presented" : "no server certificate presented";
    break;
  case GNUTLS_E_FATAL_ALERT_RECEIVED: {
    const char *an = gnutls_alert_get_name(gnutls_alert_get(s));
    snprintf(buf, sizeof buf, "peer sent TLS alert '%s'", an ? an : "unknown");
    msg = buf;
    break;
  }
  case GNUTLS_E_NO_APPLICATION_PROTOCOL: msg = "no common ALPN protocol"; break;
  case GNUTLS_E_UNEXPECTED_PACKET:
  case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
    /* e.g. a plaintext HTTP/2 preface where a TLS record was expected */
    msg = "peer does not speak TLS (plaintext peer?)";
    break;
  case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
  case GNUTLS_E_NO_CIPHER_SUITES: /* what a TLS 1.2-only peer gets from a TLS 1.3-only side */
    msg = "no common TLS version or cipher suite";
    break;
  case GNUTLS_E_INSUFFICIENT_CREDENTIALS:
  case GNUTLS_E_NO_COMMON_KEY_SHARE: msg = "no common TLS key exchange or signature algorithm"; break;
  case GNUTLS_E_PREMATURE_TERMINATION:
  case GNUTLS_E_PULL_ERROR:
  case GNUTLS_E_PUSH_ERROR: msg = "peer closed the connection during the TLS handshake"; break;
  case GNUTLS_E_TIMEDOUT: msg = "TLS handshake timed out"; break;
  default:
    snprintf(buf, sizeof buf, "TLS handshake failed: %s", gnutls_strerror(rc));
    msg = buf;
  }
  if (!st) return msg == buf ? gnutls_strerror(rc) : msg;
  snprintf(st->reason, sizeof st->reason, "%s", msg);
  return st->reason;
}

/* ------------------------------------------------------------------ */
/* Peer identity, ALPN                                                */
/* ------------------------------------------------------------------ */

/* Fills out->blob and the string pointers of out->id from the texts given
 * (the scalar fields are the caller's). */
static int peer_store_fill(amn_peer_store *out, const uint8_t *der, size_t der_len, const char *subject,
                           const char *cn, const char *ou, const char *const *sans, size_t nsan,
                           const char *const *uris, size_t nuri) {
  size_t total = der_len + strlen(subject) + strlen(cn) + strlen(ou) + 3;
  for (size_t i = 0; i < nsan; i++) total += strlen(sans[i]) + 1;
  for (size_t i = 0; i < nuri; i++) total += strlen(uris[i]) + 1;
  char *p = out->blob = malloc(total);
  if (!p) return AMN_ENOMEM;
  amn_peer_identity *id = &out->id;
  if (der_len) memcpy(p, der, der_len); /* the leaf (signed queries are verified against its key) */
  id->cert_der = der_len ? (const uint8_t *)p : NULL;
  id->cert_der_len = der_len;
  p += der_len;
#define PUT(dst, src)       \
  do {                      \
    (dst) = strcpy(p, src); \
    p += strlen(p) + 1;     \
  } while (0)
  PUT(id->subject, subject);
  PUT(id->cn, cn);
  PUT(id->ou, ou);
  for (size_t i = 0; i < nsan; i++) PUT(id->sans[i], sans[i]);
  for (size_t i = 0; i < nuri; i++) PUT(id->uri_sans[i], uris[i]);
#undef PUT
  id->san_count = nsan;
  id->uri_san_count = nuri;
  return 0;
}

int amn_peer_store_copy(amn_peer_store *dst, const amn_peer_store *src) {
  if (!dst || !src || !src->id.subject) return AMN_EINVAL;
  dst->id = src->id;
  return peer_store_fill(dst, src->id.cert_der, src->id.cert_der_len, src->id.subject, src->id.cn ? src->id.cn : "", src->id.ou ? src->id.ou : "",
                         src->id.sans, src->id.san_count, src->id.uri_sans, src->id.uri_san_count);
}

/* The first value of attribute `oid` of the subject, "" when none (or
 * holding a NUL). */
static void dn_attr(gnutls_x509_crt_t crt, const char *oid, char *buf, size_t cap) {
  size_t sz = cap - 1;
  if (gnutls_x509_crt_get_dn_by_oid(crt, oid, 0, 0, buf, &sz) < 0 || sz >= cap) sz = 0;
  buf[sz] = '\0';
  if (strlen(buf) != sz) buf[0] = '\0';
}

/* Fills out from a parsed certificate and its DER bytes. */
static int identity_of(gnutls_x509_crt_t crt, const gnutls_datum_t *der, bool verified, amn_peer_store *out) {
  amn_peer_identity *id = &out->id;
  gnutls_hash_fast(GNUTLS_DIG_SHA256, der->data, der->size, id->sha256);
  for (int i = 0; i < 32; i++) snprintf(id->sha256_hex + 2 * i, 3, "%02x", id->sha256[i]);
  id->verified = verified;

  /* DNS and IP SANs as text; URI SANs apart (a SAN holding a NUL is skipped) */
  char sans[AMN_MAX_SANS][256], uris[AMN_MAX_SANS][256];
  const char *sanp[AMN_MAX_SANS], *urip[AMN_MAX_SANS];
  size_t nsan = 0, nuri = 0;
  for (unsigned i = 0; i < 64 && (nsan < AMN_MAX_SANS || nuri < AMN_MAX_SANS); i++) {
    unsigned char buf[256];
    size_t sz = sizeof buf - 1;
    unsigned type = 0;
    int r = gnutls_x509_crt_get_subject_alt_name2(crt, i, buf, &sz, &type, NULL);
    if (r == GNUTLS_E_SHORT_MEMORY_BUFFER) continue;
    if (r < 0) break;
    buf[sz] = '\0';
    bool text_ok = strlen((char *)buf) == sz;
    if (type == GNUTLS_SAN_DNSNAME && text_ok && nsan < AMN_MAX_SANS) {
      snprintf(sans[nsan], sizeof sans[0], "%s", (char *)buf);
      sanp[nsan] = sans[nsan], nsan++;
    } else if (type == GNUTLS_SAN_IPADDRESS && (sz == 4 || sz == 16) && nsan < AMN_MAX_SANS) {
      inet_ntop(sz == 4 ? AF_INET : AF_INET6, buf, sans[nsan], sizeof sans[0]);
      sanp[nsan] = sans[nsan], nsan++;
    } else if (type == GNUTLS_SAN_URI && text_ok && nuri < AMN_MAX_SANS) {
      snprintf(uris[nuri], sizeof uris[0], "%s", (char *)buf);
      urip[nuri] = uris[nuri], nuri++;
    }
  }
  char cn[256], ou[256];
  dn_attr(crt, GNUTLS_OID_X520_COMMON_NAME, cn, sizeof cn);
  dn_attr(crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, ou, sizeof ou);
  gnutls_datum_t dn = {NULL, 0};
  gnutls_x509_crt_get_dn3(crt, &dn, 0);
  int rc = peer_store_fill(out, der->data, der->size, dn.data ? (const char *)dn.data : "", cn, ou, sanp, nsan, urip,
                           nuri);
  gnutls_free(dn.data);
  return rc;
}

int amn_tls_peer_identity(gnutls_session_t s, amn_peer_store *out) {
  if (!s || !out) return AMN_EINVAL;
  memset(out, 0, sizeof *out);
  unsigned n = 0;
  const gnutls_datum_t *raw = gnutls_certificate_get_peers(s, &n);
  if (!raw || n == 0 || gnutls_certificate_type_get2(s, GNUTLS_CTYPE_PEERS) != GNUTLS_CRT_X509) return AMN_ETLS;
  gnutls_x509_crt_t crt;
  if (gnutls_x509_crt_init(&crt) < 0) return AMN_ENOMEM;
  if (gnutls_x509_crt_import(crt, &raw[0], GNUTLS_X509_FMT_DER) < 0) {
    gnutls_x509_crt_deinit(crt);
    return AMN_ETLS;
  }
  tls_state *st = state_of(s);
  int rc = identity_of(crt, &raw[0], st && st->verified, out);
  gnutls_x509_crt_deinit(crt);
  return rc;
}

int amn_tls_verify_client_der(amn_tls_ctx *ctx, const uint8_t *der, size_t len, amn_peer_store *out, char *why,
                              size_t wl) {
  if (!ctx || !der || !out || !why || !wl) return AMN_EINVAL;
  memset(out, 0, sizeof *out);
  why[0] = '\0';
  gnutls_x509_crt_t crt;
  if (len > UINT_MAX) return amn_set_err(why, wl, AMN_ETLS, "client certificate too large");
  if (gnutls_x509_crt_init(&crt) < 0) return amn_set_err(why, wl, AMN_ENOMEM, "out of memory");
  gnutls_datum_t d = {(unsigned char *)der, (unsigned)len};
  int r = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER), rc = AMN_ETLS;
  if (r < 0) snprintf(why, wl, "client certificate could not be parsed: %s", gnutls_strerror(r));
  else if (verify_chain(ctx, &crt, 1, true, "client", why, wl)) {
    tls_state st = {.ctx = ctx}; /* revocation (crl_path): as for a handshake's client certificate */
    if (ctx->crl_path && !crl_check(&st, ctx, &crt, 1, "client")) snprintf(why, wl, "%s", st.reason);
    else rc = identity_of(crt, &d, true, out);
  }
  gnutls_x509_crt_deinit(crt);
  if (rc == AMN_ENOMEM) snprintf(why, wl, "out of memory");
  return rc;
}

int amn_tls_peer_cert(gnutls_session_t s, const uint8_t **der, size_t *len) {
  unsigned n = 0;
  const gnutls_datum_t *raw = s ? gnutls_certificate_get_peers(s, &n) : NULL;
  if (!raw || !n) return AMN_ETLS;
  *der = raw[0].data;
  *len = raw[0].size;
  return 0;
}

void amn_peer_store_free(amn_peer_store *p) {
  if (!p) return;
  free(p->blob);
  memset(p, 0, sizeof *p);
}

bool amn_tls_alpn_is(gnutls_session_t s, const char *proto) {
  gnutls_datum_t sel;
  if (!s || !proto || gnutls_alpn_get_selected_protocol(s, &sel) < 0) return false;
  size_t n = strlen(proto);
  return sel.size == n && memcmp(sel.data, proto, n) == 0;
}

int amn_tls_verify_resumed(gnutls_session_t s) { return verify_cb(s) == 0 ? 0 : AMN_ETLS; }
