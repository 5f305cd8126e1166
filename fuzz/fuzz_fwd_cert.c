/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * fuzz_fwd_cert: the forwarded client certificate header value a trusted
 * proxy sends (amn_fwd_cert_decode, src/server/fwd_cert.c: URL-escaped PEM
 * as nginx's $ssl_client_escaped_cert, base64 DER as HAProxy's
 * %[ssl_c_der,base64]) and the verification of what it decodes to
 * (amn_tls_verify_client_der against a development CA made at start).
 * Invariants:
 *  - the result is 0 or AMN_EINVAL; an error has a reason, no output; a
 *    success has 1..len*3/4+3 bytes; decoding twice gives the same;
 *  - a decoded certificate encoded again in both forms (base64 DER; PEM
 *    with line breaks, URL-escaped) decodes to the same bytes;
 *  - verifying it returns 0 (then the identity is verified, has a subject
 *    and a 64-digit fingerprint) or AMN_ETLS with a reason naming the
 *    client certificate, never anything else; nothing leaks.
 */
#include <ftw.h>

#include "fuzz_common.h"
#include "amn/pki.h"
#include "server/server_internal.h"

static amn_tls_ctx *g_ctx;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(p);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  char dir[] = "/tmp/amn-fuzz-fwd-XXXXXX", pki[64], c[96], k[96], ca[96], err[256];
  if (!mkdtemp(dir)) abort();
  snprintf(pki, sizeof pki, "%s/pki", dir);
  amn_log_set_level(AMN_LOG_ERROR);
  if (amn_pki_init(pki, false, err, sizeof err)) abort();
  snprintf(c, sizeof c, "%s/server.pem", pki);
  snprintf(k, sizeof k, "%s/server-key.pem", pki);
  snprintf(ca, sizeof ca, "%s/ca.pem", pki);
  amn_tls_opts o = {.cert_path = c, .key_path = k, .ca_path = ca};
  static const char *const alpn[] = {"h2", NULL};
  if (amn_tls_ctx_new(&g_ctx, AMN_TLS_SERVER, &o, alpn, err, sizeof err)) abort();
  nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS); /* the context holds what it needs */
  return 0;
}

static void same_after(const char *text, size_t len, const uint8_t *der, size_t dl) {
  uint8_t *d2 = NULL;
  size_t l2 = 0;
  char why[200];
  FUZZ_CHECK(amn_fwd_cert_decode((const uint8_t *)text, len, &d2, &l2, why, sizeof why) == 0);
  FUZZ_CHECK(l2 == dl && memcmp(d2, der, dl) == 0);
  free(d2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *der = (uint8_t *)"", *der2 = NULL;
  size_t dl = 99, dl2 = 0;
  char why[200] = "", why2[200] = "";
  int rc = amn_fwd_cert_decode(data, size, &der, &dl, why, sizeof why);
  int rc2 = amn_fwd_cert_decode(data, size, &der2, &dl2, why2, sizeof why2);
  FUZZ_CHECK(rc == 0 || rc == AMN_EINVAL);
  FUZZ_CHECK(rc == rc2 && dl == dl2 && strcmp(why, why2) == 0);
  if (rc) {
    FUZZ_CHECK(why[0] && !der && dl == 0);
    return 0;
  }
  FUZZ_CHECK(der && dl >= 1 && dl <= size * 3 / 4 + 3 && memcmp(der, der2, dl) == 0);
  free(der2);
  if (dl <= 12288) { /* encoded again, within the decoder's 16 KiB */
    /* base64 DER (HAProxy) */
    char *b64 = malloc(dl * 4 / 3 + 8);
    FUZZ_CHECK(b64);
    size_t bl = amn_b64_encode(der, dl, b64);
    same_after(b64, bl, der, dl);
    /* PEM, 64 columns, URL-escaped (nginx) */
    char *pem = malloc(bl + bl / 64 + 80), *esc = malloc((bl + bl / 64 + 80) * 3);
    FUZZ_CHECK(pem && esc);
    size_t pl = (size_t)sprintf(pem, "-----BEGIN CERTIFICATE-----\n");
    for (size_t i = 0; i < bl; i += 64) {
      size_t n = bl - i < 64 ? bl - i : 64;
      memcpy(pem + pl, b64 + i, n);
      pl += n;
      pem[pl++] = '\n';
    }
    pl += (size_t)sprintf(pem + pl, "-----END CERTIFICATE-----\n");
    size_t el = 0;
    for (size_t i = 0; i < pl; i++) {
      unsigned char ch = (unsigned char)pem[i];
      if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) esc[el++] = (char)ch;
      else el += (size_t)sprintf(esc + el, "%%%02X", ch);
    }
    if (el <= 16384) same_after(esc, el, der, dl);
    same_after(pem, pl, der, dl);
    free(esc), free(pem), free(b64);
  }
  amn_peer_store st;
  char vwhy[300] = "";
  int vr = amn_tls_verify_client_der(g_ctx, der, dl, &st, vwhy, sizeof vwhy);
  FUZZ_CHECK(vr == 0 || vr == AMN_ETLS);
  if (vr == 0) {
    FUZZ_CHECK(st.id.verified && st.id.subject && strlen(st.id.sha256_hex) == 64 && !st.id.via);
    amn_peer_store_free(&st);
  } else {
    FUZZ_CHECK(strncmp(vwhy, "client certificate", 18) == 0 && !st.blob);
  }
  free(der);
  return 0;
}
