/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* Development PKI (amn/pki.h) and certificate issuing (tls/pki_internal.h),
 * with the GnuTLS x509 API. */
#include "amn/pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tls/pki_internal.h"
#include "util/log.h"

#define PKI_ORG "amaters-net development"
#define PKI_DAYS 825
#define PKI_BACKDATE 300 /* seconds before "now": tolerate small clock skew */

/* ------------------------------------------------------------------ */
/* Files                                                              */
/* ------------------------------------------------------------------ */

int amn_pki_write_file(const char *path, const void *data, size_t len, mode_t mode, char *err, size_t errlen) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
    return amn_set_err(err, errlen, AMN_EIO, "path too long: %s", path);
  int fd = mkostemp(tmp, O_CLOEXEC); /* created 0600 with O_EXCL */
  if (fd < 0) return amn_set_err(err, errlen, AMN_EIO, "cannot create %s: %s", tmp, strerror(errno));
  const char *what = "fchmod";
  if (fchmod(fd, mode) != 0) goto fail;
  what = "write";
  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, (const char *)data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) goto fail;
    off += (size_t)w;
  }
  what = "fsync";
  if (fsync(fd) != 0) goto fail;
  what = "close";
  if (close(fd) != 0) {
    fd = -1;
    goto fail;
  }
  fd = -1;
  what = "rename";
  if (rename(tmp, path) != 0) goto fail;
  return 0;
fail:;
  int e = errno;
  if (fd >= 0) close(fd);
  unlink(tmp);
  return amn_set_err(err, errlen, AMN_EIO, "cannot write %s (%s): %s", path, what, strerror(e));
}

/* ------------------------------------------------------------------ */
/* QUIC secret file                                                   */
/* ------------------------------------------------------------------ */

#define QUIC_SECRET_FILE_MIN 32
#define QUIC_SECRET_FILE_MAX 4096

/* Creates `path` with fresh random bytes, never replacing a file another
 * process created meanwhile. Returns 0, EEXIST, or AMN_EIO with err. */
static int quic_secret_create(const char *path, char *err, size_t errlen) {
  uint8_t key[QUIC_SECRET_FILE_MIN];
  if (gnutls_rnd(GNUTLS_RND_KEY, key, sizeof key) != 0)
    return amn_set_err(err, errlen, AMN_EIO, "%s: no random bytes for a new QUIC secret", path);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    int e = errno;
    gnutls_memset(key, 0, sizeof key);
    if (e == EEXIST) return EEXIST;
    return amn_set_err(err, errlen, AMN_EIO, "cannot create the QUIC secret file %s: %s", path, strerror(e));
  }
  ssize_t w;
  do w = write(fd, key, sizeof key);
  while (w < 0 && errno == EINTR);
  int e = w == (ssize_t)sizeof key ? (fsync(fd) == 0 ? 0 : errno) : (w < 0 ? errno : EIO);
  gnutls_memset(key, 0, sizeof key);
  if (close(fd) != 0 && !e) e = errno;
  if (e) {
    unlink(path);
    return amn_set_err(err, errlen, AMN_EIO, "cannot write the QUIC secret file %s: %s", path, strerror(e));
  }
  return 0;
}

int amn_quic_secret_load(const char *path, uint8_t out[AMN_QUIC_SECRET_LEN], bool *created, char *err,
                         size_t errlen) {
  if (created) *created = false;
  if (!path || !*path) return amn_set_err(err, errlen, AMN_EINVAL, "no QUIC secret file given");
  int fd = open(path, O_RDONLY | O_CLOEXEC); /* a symlink is fine (e.g. a mounted secret) */
  if (fd < 0 && errno == ENOENT) {
    int rc = quic_secret_create(path, err, errlen);
    if (rc != 0 && rc != EEXIST) return rc;
    if (rc == 0 && created) *created = true;
    fd = open(path, O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) return amn_set_err(err, errlen, AMN_EIO, "cannot open the QUIC secret file %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return amn_set_err(err, errlen, AMN_EINVAL, "QUIC secret file %s is not a regular file", path);
  }
  if (st.st_mode & 077) {
    close(fd);
    return amn_set_err(err, errlen, AMN_EINVAL,
                       "QUIC secret file %s is accessible by group or others (mode %04o): chmod 600 it", path,
                       (unsigned)(st.st_mode & 07777));
  }
  uint8_t buf[QUIC_SECRET_FILE_MAX + 1];
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, sizeof buf - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      gnutls_memset(buf, 0, n);
      return amn_set_err(err, errlen, AMN_EIO, "cannot read the QUIC secret file %s: %s", path, strerror(e));
    }
    if (r == 0 || (n += (size_t)r) == sizeof buf) break;
  }
  close(fd);
  if (n < QUIC_SECRET_FILE_MIN || n > QUIC_SECRET_FILE_MAX) {
    gnutls_memset(buf, 0, n);
    return amn_set_err(err, errlen, AMN_EINVAL, "QUIC secret file %s: %zu bytes (expected %d to %d)", path, n,
                       QUIC_SECRET_FILE_MIN, QUIC_SECRET_FILE_MAX);
  }
  static const char salt[] = "amaters-net QUIC secret v1";
  gnutls_datum_t ikm = {buf, (unsigned)n}, sd = {(unsigned char *)salt, sizeof salt - 1};
  int g = gnutls_hkdf_extract(GNUTLS_MAC_SHA256, &ikm, &sd, out);
  gnutls_memset(buf, 0, n);
  if (g != 0) return amn_set_err(err, errlen, AMN_EIO, "QUIC secret %s: HKDF: %s", path, gnutls_strerror(g));
  return 0;
}

/* mkdir -p; directories we create get exactly 0700. Existing ones are left
 * as they are (the PKI dir may be a user-chosen path). */
static int mkdir_p(const char *dir, char *err, size_t errlen) {
  char p[PATH_MAX];
  if (!dir || !*dir) return amn_set_err(err, errlen, AMN_EINVAL, "empty PKI directory");
  if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
    return amn_set_err(err, errlen, AMN_EINVAL, "PKI directory path too long");
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s != '\0') continue;
    char c = *s;
    *s = '\0';
    if (mkdir(p, 0700) == 0) {
      if (chmod(p, 0700) != 0)
        return amn_set_err(err, errlen, AMN_EIO, "cannot chmod %s: %s", p, strerror(errno));
    } else if (errno != EEXIST) {
      return amn_set_err(err, errlen, AMN_EIO, "cannot create directory %s: %s", p, strerror(errno));
    }
    *s = c;
    if (c == '\0') break;
  }
  struct stat st;
  if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
    return amn_set_err(err, errlen, AMN_EIO, "%s is not a directory", p);
  return 0;
}

static bool file_exists(const char *path) { return access(path, F_OK) == 0; }

/* ------------------------------------------------------------------ */
/* Certificates                                                       */
/* ------------------------------------------------------------------ */


static int write_key(gnutls_x509_privkey_t key, const char *path, char *err, size_t errlen) {
  gnutls_datum_t d = {NULL, 0};
  int r = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &d);
  if (r < 0) return amn_set_err(err, errlen, AMN_ETLS, "cannot export key: %s", gnutls_strerror(r));
  int rc = amn_pki_write_file(path, d.data, d.size, 0600, err, errlen);
  gnutls_memset(d.data, 0, d.size);
  gnutls_free(d.data);
  return rc;
}

static int write_crt(gnutls_x509_crt_t crt, const char *path, char *err, size_t errlen) {
  gnutls_datum_t d = {NULL, 0};
  int r = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &d);
  if (r < 0) return amn_set_err(err, errlen, AMN_ETLS, "cannot export certificate: %s", gnutls_strerror(r));
  int rc = amn_pki_write_file(path, d.data, d.size, 0644, err, errlen);
  gnutls_free(d.data);
  return rc;
}

/* Fills everything but the issuer-dependent parts (AKI, signature). */
static int fill_crt(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const amn_pki_cert_spec *sp, char *err,
                    size_t errlen) {
  int rc = 0;
  unsigned char serial[16];
  GT(gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial), "random serial");
  serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x40); /* positive, 16 significant bytes */
  GT(gnutls_x509_crt_set_version(crt, 3), "set version");
  GT(gnutls_x509_crt_set_serial(crt, serial, sizeof serial), "set serial");
  GT(gnutls_x509_crt_set_activation_time(crt, sp->not_before), "set notBefore");
  GT(gnutls_x509_crt_set_expiration_time(crt, sp->not_after), "set notAfter");
  GT(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, PKI_ORG, strlen(PKI_ORG)),
     "set subject O");
  if (sp->ou)
    GT(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, 0, sp->ou, strlen(sp->ou)),
       "set subject OU");
  GT(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, sp->cn, strlen(sp->cn)), "set subject CN");
  GT(gnutls_x509_crt_set_key(crt, key), "set public key");
  GT(gnutls_x509_crt_set_basic_constraints(crt, sp->is_ca ? 1 : 0, sp->is_ca ? 0 : -1), "set basicConstraints");
  GT(gnutls_x509_crt_set_key_usage(crt, sp->is_ca ? GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN
                                                  : GNUTLS_KEY_DIGITAL_SIGNATURE),
     "set keyUsage");
  if (sp->eku & AMN_PKI_EKU_SERVER) GT(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0), "set EKU");
  if (sp->eku & AMN_PKI_EKU_CLIENT) GT(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0), "set EKU");
  for (const char *const *d = sp->dns; d && *d; d++)
    GT(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, *d, (unsigned)strlen(*d), GNUTLS_FSAN_APPEND),
       "set DNS SAN");
  for (const char *const *ip = sp->ips; ip && *ip; ip++) {
    unsigned char a[16];
    unsigned alen = inet_pton(AF_INET, *ip, a) == 1 ? 4 : inet_pton(AF_INET6, *ip, a) == 1 ? 16 : 0;
    if (!alen) return amn_set_err(err, errlen, AMN_EINVAL, "not an IP address: '%s'", *ip);
    GT(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, a, alen, GNUTLS_FSAN_APPEND), "set IP SAN");
  }
  for (const char *const *u = sp->uris; u && *u; u++)
    GT(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_URI, *u, (unsigned)strlen(*u), GNUTLS_FSAN_APPEND),
       "set URI SAN");
  unsigned char kid[64];
  size_t kidlen = sizeof kid;
  GT(gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, kid, &kidlen), "compute key id");
  GT(gnutls_x509_crt_set_subject_key_id(crt, kid, kidlen), "set subjectKeyIdentifier");
out:
  return rc;
}

static int new_key(gnutls_x509_privkey_t *key, char *err, size_t errlen) {
  int r = gnutls_x509_privkey_init(key);
  if (r >= 0) r = gnutls_x509_privkey_generate(*key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
  if (r < 0) return amn_set_err(err, errlen, AMN_ETLS, "cannot generate ECDSA P-256 key: %s", gnutls_strerror(r));
  return 0;
}

int amn_pki_make_ca(const char *cert_path, const char *key_path, const char *cn, time_t not_before,
                    time_t not_after, char *err, size_t errlen) {
  if (!cert_path || !key_path || !cn || !*cn) return amn_set_err(err, errlen, AMN_EINVAL, "make CA: missing argument");
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  amn_pki_cert_spec sp = {.cn = cn, .not_before = not_before, .not_after = not_after, .is_ca = true};
  int rc = new_key(&key, err, errlen);
  if (rc) goto out;
  GT(gnutls_x509_crt_init(&crt), "x509 init");
  if ((rc = fill_crt(crt, key, &sp, err, errlen))) goto out;
  GT(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0), "self-sign CA");
  if ((rc = write_key(key, key_path, err, errlen))) goto out;
  rc = write_crt(crt, cert_path, err, errlen);
out:
  if (crt) gnutls_x509_crt_deinit(crt);
  if (key) gnutls_x509_privkey_deinit(key);
  return rc;
}

int amn_pki_load_ca(const char *cert_path, const char *key_path, gnutls_x509_crt_t *crt, gnutls_x509_privkey_t *key,
                   char *err, size_t errlen) {
  gnutls_datum_t d = {NULL, 0};
  int rc = 0;
  *crt = NULL;
  *key = NULL;
  int r = gnutls_load_file(cert_path, &d);
  if (r < 0) return amn_set_err(err, errlen, AMN_EIO, "cannot read %s: %s", cert_path, gnutls_strerror(r));
  r = gnutls_x509_crt_init(crt);
  if (r >= 0) r = gnutls_x509_crt_import(*crt, &d, GNUTLS_X509_FMT_PEM);
  gnutls_free(d.data);
  d.data = NULL;
  if (r < 0) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "cannot parse CA certificate %s: %s", cert_path, gnutls_strerror(r));
    goto out;
  }
  r = gnutls_load_file(key_path, &d);
  if (r < 0) {
    rc = amn_set_err(err, errlen, AMN_EIO, "cannot read %s: %s", key_path, gnutls_strerror(r));
    goto out;
  }
  r = gnutls_x509_privkey_init(key);
  if (r >= 0) r = gnutls_x509_privkey_import2(*key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
  gnutls_memset(d.data, 0, d.size);
  gnutls_free(d.data);
  if (r < 0) {
    rc = amn_set_err(err, errlen, AMN_ETLS, "cannot parse CA key %s: %s", key_path, gnutls_strerror(r));
    goto out;
  }
  unsigned ca = 0;
  if (gnutls_x509_crt_get_basic_constraints(*crt, NULL, &ca, NULL) < 0 || !ca)
    rc = amn_set_err(err, errlen, AMN_ETLS, "%s is not a CA certificate", cert_path);
out:
  if (rc) {
    if (*crt) gnutls_x509_crt_deinit(*crt);
    if (*key) gnutls_x509_privkey_deinit(*key);
    *crt = NULL;
    *key = NULL;
  }
  return rc;
}

static int issue(gnutls_x509_crt_t ca, gnutls_x509_privkey_t ca_key, const amn_pki_cert_spec *sp,
                 const char *cert_path, const char *key_path, char *err, size_t errlen) {
  gnutls_x509_privkey_t key = NULL;
  gnutls_x509_crt_t crt = NULL;
  int rc = new_key(&key, err, errlen);
  if (rc) goto out;
  GT(gnutls_x509_crt_init(&crt), "x509 init");
  if ((rc = fill_crt(crt, key, sp, err, errlen))) goto out;
  unsigned char kid[64];
  size_t kidlen = sizeof kid;
  unsigned crit;
  if (gnutls_x509_crt_get_subject_key_id(ca, kid, &kidlen, &crit) < 0) {
    kidlen = sizeof kid; /* CA without SKI: use the hash of its key */
    GT(gnutls_x509_crt_get_key_id(ca, GNUTLS_KEYID_USE_SHA1, kid, &kidlen), "CA key id");
  }
  GT(gnutls_x509_crt_set_authority_key_id(crt, kid, kidlen), "set authorityKeyIdentifier");
  GT(gnutls_x509_crt_sign2(crt, ca, ca_key, GNUTLS_DIG_SHA256, 0), "sign certificate");
  if ((rc = write_key(key, key_path, err, errlen))) goto out;
  rc = write_crt(crt, cert_path, err, errlen);
out:
  if (crt) gnutls_x509_crt_deinit(crt);
  if (key) gnutls_x509_privkey_deinit(key);
  return rc;
}

int amn_pki_issue_test_cert(const char *ca_cert_path, const char *ca_key_path, const amn_pki_cert_spec *spec,
                            const char *cert_path, const char *key_path, char *err, size_t errlen) {
  if (!ca_cert_path || !ca_key_path || !spec || !spec->cn || !*spec->cn || !cert_path || !key_path)
    return amn_set_err(err, errlen, AMN_EINVAL, "issue certificate: missing argument");
  gnutls_x509_crt_t ca;
  gnutls_x509_privkey_t ca_key;
  int rc = amn_pki_load_ca(ca_cert_path, ca_key_path, &ca, &ca_key, err, errlen);
  if (rc) return rc;
  rc = issue(ca, ca_key, spec, cert_path, key_path, err, errlen);
  gnutls_x509_crt_deinit(ca);
  gnutls_x509_privkey_deinit(ca_key);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Public API                                                         */
/* ------------------------------------------------------------------ */

int amn_pki_default_dir(char *out, size_t cap) {
  const char *e = getenv("AMATERS_NET_PKI_DIR");
  int n;
  if (!out || !cap) return AMN_EINVAL;
  if (e && *e) {
    n = snprintf(out, cap, "%s", e);
  } else if ((e = getenv("XDG_DATA_HOME")) && *e == '/') { /* XDG: relative values are invalid */
    n = snprintf(out, cap, "%s/amaters-net/pki", e);
  } else if ((e = getenv("HOME")) && *e) {
    n = snprintf(out, cap, "%s/.local/share/amaters-net/pki", e);
  } else {
    return AMN_EINVAL;
  }
  return (n < 0 || (size_t)n >= cap) ? AMN_EINVAL : 0;
}

static const char *const pki_files[6] = {"ca.pem",     "ca-key.pem",     "server.pem",
                                         "server-key.pem", "client.pem", "client-key.pem"};

bool amn_pki_exists(const char *dir) {
  char p[PATH_MAX];
  if (!dir) return false;
  for (int i = 0; i < 6; i++) {
    if (snprintf(p, sizeof p, "%s/%s", dir, pki_files[i]) >= (int)sizeof p || !file_exists(p)) return false;
  }
  return true;
}

/* A DNS name of a certificate: labels of letters, digits and '-', a leading
 * "*." allowed (as mkcert does). */
static bool dns_name_ok(const char *s) {
  if (strncmp(s, "*.", 2) == 0) s += 2;
  size_t n = strlen(s), label = 0;
  if (n == 0 || n > 253) return false;
  for (const char *p = s; *p; p++) {
    if (*p == '.') {
      if (label == 0) return false;
      label = 0;
    } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-') {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  return label > 0;
}

int amn_pki_init(const char *dir, bool force, char *err, size_t errlen) {
  return amn_pki_init_names(dir, force, NULL, 0, err, errlen);
}

int amn_pki_init_names(const char *dir, bool force, const char *const *names, size_t count, char *err,
                       size_t errlen) {
  enum { MAX_NAMES = 64 };
  const char *dns[MAX_NAMES + 2] = {"localhost"}, *ips[MAX_NAMES + 3] = {"127.0.0.1", "::1"};
  size_t nd = 1, ni = 2;
  if (count > MAX_NAMES) return amn_set_err(err, errlen, AMN_EINVAL, "at most %d extra names", MAX_NAMES);
  for (size_t i = 0; i < count; i++) {
    unsigned char a[16];
    if (!names[i]) return amn_set_err(err, errlen, AMN_EINVAL, "NULL name");
    if (inet_pton(AF_INET, names[i], a) == 1 || inet_pton(AF_INET6, names[i], a) == 1) ips[ni++] = names[i];
    else if (dns_name_ok(names[i])) dns[nd++] = names[i];
    else return amn_set_err(err, errlen, AMN_EINVAL, "'%s' is neither a host name nor an IP address", names[i]);
  }
  dns[nd] = NULL;
  ips[ni] = NULL;
  char path[6][PATH_MAX];
  int rc = mkdir_p(dir, err, errlen);
  if (rc) return rc;
  bool have[6];
  for (int i = 0; i < 6; i++) {
    if (snprintf(path[i], PATH_MAX, "%s/%s", dir, pki_files[i]) >= PATH_MAX)
      return amn_set_err(err, errlen, AMN_EINVAL, "PKI directory path too long");
    have[i] = !force && file_exists(path[i]);
  }
  /* a certificate without its key (or the reverse) is never overwritten silently */
  for (int i = 0; i < 6; i += 2)
    if (have[i] != have[i + 1])
      return amn_set_err(err, errlen, AMN_EIO, "%s exists but %s does not; re-create the PKI with force",
                         have[i] ? path[i] : path[i + 1], have[i] ? path[i + 1] : path[i]);
  if (!have[0] && (have[2] || have[4]))
    return amn_set_err(err, errlen, AMN_EIO, "%s has certificates but no CA; re-create the PKI with force", dir);
  if (count) have[2] = have[3] = false; /* extra names: a new server certificate from the CA there is */

  time_t now = time(NULL);
  time_t nb = now - PKI_BACKDATE, na = now + (time_t)PKI_DAYS * 86400;
  if (!have[0]) {
    if ((rc = amn_pki_make_ca(path[0], path[1], "amaters-net development CA", nb, na, err, errlen))) return rc;
    AMN_INFO("created development CA %s", path[0]);
  }
  if (have[2] && have[4]) return 0;

  gnutls_x509_crt_t ca;
  gnutls_x509_privkey_t ca_key;
  if ((rc = amn_pki_load_ca(path[0], path[1], &ca, &ca_key, err, errlen))) return rc;
  if (!have[2]) {
    amn_pki_cert_spec sp = {.cn = "localhost", .dns = dns, .ips = ips, .eku = AMN_PKI_EKU_SERVER,
                            .not_before = nb, .not_after = na};
    if (!(rc = issue(ca, ca_key, &sp, path[2], path[3], err, errlen)))
      AMN_INFO("issued server certificate %s (localhost, 127.0.0.1, ::1%s%zu more)", path[2], count ? ", " : "",
               count);
  }
  if (!rc && !have[4]) {
    amn_pki_cert_spec sp = {.cn = "amaters-dev-client", .eku = AMN_PKI_EKU_CLIENT, .not_before = nb, .not_after = na};
    if (!(rc = issue(ca, ca_key, &sp, path[4], path[5], err, errlen)))
      AMN_INFO("issued client certificate %s (CN=amaters-dev-client)", path[4]);
  }
  gnutls_x509_crt_deinit(ca);
  gnutls_x509_privkey_deinit(ca_key);
  return rc;
}

static bool valid_leaf_name(const char *n) {
  if (!n || !*n || n[0] == '.' || strlen(n) > 64) return false;
  for (const char *p = n; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
          *p == '_' || *p == '.'))
      return false;
  return true;
}

int amn_pki_issue_client(const char *dir, const char *name, const char *const *uris, const char *const *dns,
                         const char *out_dir, char *err, size_t errlen) {
  if (!dir || !valid_leaf_name(name))
    return amn_set_err(err, errlen, AMN_EINVAL, "certificate name '%s': use 1-64 of A-Z a-z 0-9 . _ - (not starting with '.')",
                       name ? name : "");
  for (const char *const *u = uris; u && *u; u++)
    if (!**u || !strstr(*u, ":") || strpbrk(*u, " \t\r\n"))
      return amn_set_err(err, errlen, AMN_EINVAL, "not a URI: '%s' (e.g. spiffe://amaters/client/%s)", *u, name);
  for (const char *const *d = dns; d && *d; d++)
    if (!**d || strpbrk(*d, " \t\r\n/:"))
      return amn_set_err(err, errlen, AMN_EINVAL, "not a DNS name: '%s'", *d);
  if (!out_dir) out_dir = dir;
  int rc = mkdir_p(out_dir, err, errlen);
  if (rc) return rc;
  char ca[PATH_MAX], cak[PATH_MAX], crt[PATH_MAX], key[PATH_MAX];
  if (snprintf(ca, sizeof ca, "%s/ca.pem", dir) >= (int)sizeof ca ||
      snprintf(cak, sizeof cak, "%s/ca-key.pem", dir) >= (int)sizeof cak ||
      snprintf(crt, sizeof crt, "%s/%s.pem", out_dir, name) >= (int)sizeof crt ||
      snprintf(key, sizeof key, "%s/%s-key.pem", out_dir, name) >= (int)sizeof key)
    return amn_set_err(err, errlen, AMN_EINVAL, "path too long");
  if (!file_exists(ca) || !file_exists(cak))
    return amn_set_err(err, errlen, AMN_EIO, "no development CA in %s (create it with amn_pki_init)", dir);
  if (file_exists(crt) || file_exists(key))
    return amn_set_err(err, errlen, AMN_EIO, "%s or its key already exists: choose another name", crt);
  time_t now = time(NULL);
  amn_pki_cert_spec sp = {.cn = name, .dns = dns, .uris = uris, .eku = AMN_PKI_EKU_CLIENT,
                          .not_before = now - PKI_BACKDATE, .not_after = now + (time_t)PKI_DAYS * 86400};
  return amn_pki_issue_test_cert(ca, cak, &sp, crt, key, err, errlen);
}

int amn_pki_paths(const char *dir, const char *role, amn_tls_opts *o, char *storage, size_t cap) {
  if (!dir || !role || !o || !storage || cap < 3 * 4096) return AMN_EINVAL;
  if (strcmp(role, "server") != 0 && strcmp(role, "client") != 0) return AMN_EINVAL;
  size_t part = cap / 3;
  char *c = storage, *k = storage + part, *a = storage + 2 * part;
  if (snprintf(c, part, "%s/%s.pem", dir, role) >= (int)part ||
      snprintf(k, part, "%s/%s-key.pem", dir, role) >= (int)part || snprintf(a, part, "%s/ca.pem", dir) >= (int)part)
    return AMN_EINVAL;
  o->cert_path = c;
  o->key_path = k;
  o->ca_path = a;
  return 0;
}
