/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-cli: JSON, base64 and hex output. */
#include <string.h>

#include "cli.h"

void hex_out(FILE *f, const uint8_t *p, size_t n) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    fputc(hx[p[i] >> 4], f);
    fputc(hx[p[i] & 15], f);
  }
}

/* The transport an endpoint uses, as the bench reports it. */
const char *tp_name(amn_transport t) { return t == AMN_TRANSPORT_H3 ? "h3" : t == AMN_TRANSPORT_H2 ? "h2" : "-"; }

void json_str(FILE *f, const uint8_t *p, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = p[i];
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch == '\n') fputs("\\n", f);
    else if (ch == '\r') fputs("\\r", f);
    else if (ch == '\t') fputs("\\t", f);
    else if (ch < 0x20 || ch == 0x7f) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f); /* bytes >= 0x80 only reach here as valid UTF-8 */
  }
  fputc('"', f);
}

/* true for valid UTF-8 without control characters other than \t \n \r. */
bool printable_utf8(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = p[i];
    if (c < 0x80) {
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) return false;
      i++;
      continue;
    }
    size_t len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || i + len > n) return false;
    uint32_t cp = c & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

void base64_out(FILE *f, const uint8_t *p, size_t n) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    fputc(t[v >> 18], f);
    fputc(t[(v >> 12) & 63], f);
    fputc(i + 1 < n ? t[(v >> 6) & 63] : '=', f);
    fputc(i + 2 < n ? t[v & 63] : '=', f);
  }
}

/* Metadata as a JSON object; "-bin" values in base64; repeated keys are
 * joined with ", " as HTTP does. */
void json_md(FILE *f, const amn_md *md, size_t n) {
  fputc('{', f);
  bool first = true;
  for (size_t i = 0; i < n; i++) {
    bool dup = false;
    for (size_t j = 0; j < i; j++) dup |= strcmp(md[j].key, md[i].key) == 0;
    if (dup) continue;
    if (!first) fputc(',', f);
    first = false;
    json_str(f, (const uint8_t *)md[i].key, strlen(md[i].key));
    fputs(":\"", f);
    size_t kl = strlen(md[i].key);
    bool bin = kl > 4 && strcmp(md[i].key + kl - 4, "-bin") == 0;
    bool sep = false;
    for (size_t j = i; j < n; j++) {
      if (strcmp(md[j].key, md[i].key) != 0) continue;
      if (sep) fputs(", ", f);
      sep = true;
      if (bin) {
        base64_out(f, md[j].value, md[j].value_len);
      } else { /* printable ASCII by the library's contract; escape anyway */
        for (size_t k = 0; k < md[j].value_len; k++) {
          uint8_t ch = md[j].value[k];
          if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
          else if (ch < 0x20 || ch >= 0x7f) fprintf(f, "\\u%04x", ch);
          else fputc(ch, f);
        }
      }
    }
    fputc('"', f);
  }
  fputc('}', f);
}

