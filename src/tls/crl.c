/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Certificate revocation lists (tls/crl.h): reading a CRL file or directory,
 * verifying each CRL against the CA, looking a certificate up, staleness. */
#include "tls/crl.h"

#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "amn/common.h"
#include "util/log.h"

#define CRL_MAX_FILES 1024
#define CRL_MAX_BYTES (64u * 1024u * 1024u)

typedef struct crl_entry {
  gnutls_x509_crl_t crl;
  const char *file; /* into files */
  time_t next_update; /* (time_t)-1 when absent */
} crl_entry;

struct amn_crl_set {
  atomic_int refs;
  atomic_bool expiry_reported;
  crl_entry *e;
  unsigned n;
  unsigned revoked; /* serials listed, all CRLs */
  char **files;
  unsigned nfiles;
  uint64_t stamp;
};

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h * 0x100000001b3ull;
}

static uint64_t stamp_file(uint64_t h, const char *name, const struct stat *st) {
  for (const char *p = name; *p; p++) h = mix(h, (unsigned char)*p);
  h = mix(h, (uint64_t)st->st_size);
  h = mix(h, (uint64_t)st->st_mtim.tv_sec);
  h = mix(h, (uint64_t)st->st_mtim.tv_nsec);
  return mix(h, (uint64_t)st->st_ino);
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The regular files to read: the path itself, or a directory's entries
 * (sorted; dot files skipped). Returns the count, or -errno. */
static int list_files(const char *path, char ***out) {
  struct stat st;
  *out = NULL;
  if (stat(path, &st) != 0) return -errno;
  if (!S_ISDIR(st.st_mode)) {
    char **v = calloc(1, sizeof *v);
    if (!v || !(v[0] = strdup(path))) return free(v), -ENOMEM;
    *out = v;
    return 1;
  }
  DIR *d = opendir(path);
  if (!d) return -errno;
  char **v = NULL;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') continue;
    size_t len = strlen(path) + strlen(de->d_name) + 2;
    char *full = malloc(len);
    if (!full) break;
    snprintf(full, len, "%s/%s", path, de->d_name);
    struct stat fs;
    if (stat(full, &fs) != 0 || !S_ISREG(fs.st_mode) || n == CRL_MAX_FILES) {
      free(full);
      continue;
    }
    char **nv = realloc(v, (size_t)(n + 1) * sizeof *nv);
    if (!nv) {
      free(full);
      break;
    }
    v = nv;
    v[n++] = full;
  }
  closedir(d);
  if (n > 1) qsort(v, (size_t)n, sizeof *v, name_cmp);
  *out = v;
  return n;
}

uint64_t amn_crl_stamp(const char *path) {
  char **files = NULL;
  int n = list_files(path, &files);
  if (n < 0) return (uint64_t)(-n); /* an error is a state too: a change when it goes away */
  uint64_t h = 0xcbf29ce484222325ull;
  for (int i = 0; i < n; i++) {
    struct stat st;
    if (stat(files[i], &st) == 0) h = stamp_file(h, files[i], &st);
    free(files[i]);
  }
  free(files);
  return mix(h, (uint64_t)n);
}

static void set_free(amn_crl_set *s) {
  for (unsigned i = 0; i < s->n; i++) gnutls_x509_crl_deinit(s->e[i].crl);
  for (unsigned i = 0; i < s->nfiles; i++) free(s->files[i]);
  free(s->files);
  free(s->e);
  free(s);
}

static int read_file(const char *path, gnutls_datum_t *d, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) return amn_set_err(err, errlen, AMN_EIO, "cannot read CRL file %s: %s", path, strerror(errno));
  size_t cap = 4096, len = 0;
  unsigned char *buf = malloc(cap);
  while (buf) {
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (len < cap) break;
    if (cap >= CRL_MAX_BYTES) {
      fclose(f);
      free(buf);
      return amn_set_err(err, errlen, AMN_EIO, "CRL file %s is larger than %u bytes", path, CRL_MAX_BYTES);
    }
    unsigned char *nb = realloc(buf, cap *= 2);
    if (!nb) free(buf);
    buf = nb;
  }
  bool bad = ferror(f);
  fclose(f);
  if (!buf) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  if (bad) {
    free(buf);
    return amn_set_err(err, errlen, AMN_EIO, "cannot read CRL file %s", path);
  }
  d->data = buf;
  d->size = (unsigned)len;
  return 0;
}

bool amn_crl_status_ok(unsigned vr) {
  /* the dates are judged apart (amn_crl_set_expired): an old CRL is still a
   * CRL of this CA */
  const unsigned dates = GNUTLS_CERT_REVOCATION_DATA_SUPERSEDED | GNUTLS_CERT_REVOCATION_DATA_ISSUED_IN_FUTURE;
  if (vr & ~(dates | GNUTLS_CERT_INVALID)) return false;
  return !(vr & GNUTLS_CERT_INVALID) || (vr & dates);
}

/* Imports the CRLs of one file (PEM, one or more, else DER) into s. */
static int load_file(amn_crl_set *s, const char *file, const gnutls_x509_crt_t *cas, unsigned ncas, char *err,
                     size_t errlen) {
  gnutls_datum_t d = {NULL, 0};
  int rc = read_file(file, &d, err, errlen);
  if (rc) return rc;
  gnutls_x509_crl_t *list = NULL;
  unsigned nl = 0;
  bool pem = memmem(d.data, d.size, "-----BEGIN", 10) != NULL;
  int r = gnutls_x509_crl_list_import2(&list, &nl, &d, pem ? GNUTLS_X509_FMT_PEM : GNUTLS_X509_FMT_DER, 0);
  free(d.data);
  if (r < 0 || nl == 0)
    return amn_set_err(err, errlen, AMN_ETLS, "CRL file %s holds no %s CRL: %s", file, pem ? "PEM" : "DER",
                       r < 0 ? gnutls_strerror(r) : "empty");
  crl_entry *ne = realloc(s->e, (s->n + nl) * sizeof *ne);
  if (!ne) {
    for (unsigned i = 0; i < nl; i++) gnutls_x509_crl_deinit(list[i]);
    gnutls_free(list);
    return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  }
  s->e = ne;
  for (unsigned i = 0; i < nl; i++) {
    unsigned vr = 0;
    r = gnutls_x509_crl_verify(list[i], cas, ncas, GNUTLS_VERIFY_DISABLE_TIME_CHECKS, &vr); /* dates: amn_crl_set_expired */
    if (r < 0 || !amn_crl_status_ok(vr)) {
      gnutls_datum_t dn = {NULL, 0};
      gnutls_x509_crl_get_issuer_dn3(list[i], &dn, 0);
      rc = amn_set_err(err, errlen, AMN_ETLS, "CRL %u of %s (issuer '%s') is not signed by a CA of the CA bundle",
                       i + 1, file, dn.data ? (const char *)dn.data : "?");
      gnutls_free(dn.data);
      for (unsigned j = i; j < nl; j++) gnutls_x509_crl_deinit(list[j]);
      break;
    }
    int cnt = gnutls_x509_crl_get_crt_count(list[i]);
    if (cnt > 0) s->revoked += (unsigned)cnt;
    s->e[s->n++] = (crl_entry){list[i], file, gnutls_x509_crl_get_next_update(list[i])};
  }
  gnutls_free(list);
  return rc;
}

int amn_crl_set_load(amn_crl_set **out, const char *path, const gnutls_x509_crt_t *cas, unsigned ncas, char *err,
                     size_t errlen) {
  *out = NULL;
  amn_crl_set *s = calloc(1, sizeof *s);
  if (!s) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  atomic_init(&s->refs, 1);
  s->stamp = amn_crl_stamp(path);
  int n = list_files(path, &s->files);
  if (n < 0) {
    free(s);
    return amn_set_err(err, errlen, n == -ENOMEM ? AMN_ENOMEM : AMN_EIO, "cannot read CRL path %s: %s", path,
                       strerror(-n));
  }
  s->nfiles = (unsigned)n;
  int rc = n == 0 ? amn_set_err(err, errlen, AMN_EIO, "CRL directory %s holds no file", path) : 0;
  for (unsigned i = 0; i < s->nfiles && rc == 0; i++) rc = load_file(s, s->files[i], cas, ncas, err, errlen);
  if (rc) {
    set_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void amn_crl_set_ref(amn_crl_set *s) {
  if (s) atomic_fetch_add(&s->refs, 1);
}

void amn_crl_set_unref(amn_crl_set *s) {
  if (s && atomic_fetch_sub(&s->refs, 1) == 1) set_free(s);
}

const char *amn_crl_set_revoked(const amn_crl_set *s, gnutls_x509_crt_t crt) {
  for (unsigned i = 0; s && i < s->n; i++) {
    gnutls_x509_crl_t one = s->e[i].crl;
    if (gnutls_x509_crt_check_revocation(crt, &one, 1) == 1) return s->e[i].file;
  }
  return NULL;
}

const char *amn_crl_set_expired(const amn_crl_set *s, time_t now, time_t *next) {
  const char *file = NULL;
  for (unsigned i = 0; s && i < s->n; i++) {
    time_t t = s->e[i].next_update;
    if (t == (time_t)-1 || t >= now || (file && t >= *next)) continue;
    file = s->e[i].file;
    *next = t;
  }
  return file;
}

uint64_t amn_crl_set_stamp(const amn_crl_set *s) { return s ? s->stamp : 0; }

unsigned amn_crl_set_count(const amn_crl_set *s, unsigned *revoked) {
  if (revoked) *revoked = s ? s->revoked : 0;
  return s ? s->n : 0;
}

bool amn_crl_set_first_expiry_report(amn_crl_set *s) { return s && !atomic_exchange(&s->expiry_reported, true); }
