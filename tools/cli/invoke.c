/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli: call METHOD, any method. The request is the serialized
 * message as given (-d / --data-file), or, for the messages the CLI knows
 * (amaters.v1 QueryRequest/QueryResponse, grpc.health.v1
 * HealthCheckRequest/Response), a JSON object in the proto3 JSON mapping
 * (bytes in base64). A request that starts with '{' is JSON: no serialized
 * proto3 message can start with that byte (field 15, wire type 3 = a group).
 * The response prints as JSON for the known messages, else raw (--output
 * raw|hex|base64|json chooses). Streaming: ExecuteStream, or any method with
 * --stream, sends one request per input line and prints one response per
 * line; Health/Watch sends one request and prints each response.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

enum { MSG_RAW, MSG_QUERY, MSG_HEALTH };

typedef struct known {
  const char *method;
  int msg;
  bool client_streaming, server_streaming;
} known;

static const known g_known[] = {
    {AMN_METHOD_EXECUTE, MSG_QUERY, false, false},
    {AMN_METHOD_EXECUTE_STREAM, MSG_QUERY, true, true},
    {AMN_METHOD_HEALTH_CHECK, MSG_HEALTH, false, false},
    {AMN_METHOD_HEALTH_WATCH, MSG_HEALTH, false, true},
};

/* "/pkg.Svc/Method", "pkg.Svc/Method" or "pkg.Svc.Method" (as grpcurl) to "/pkg.Svc/Method". */
static char *method_path(const char *m) {
  if (m[0] == '/') m++;
  size_t n = strlen(m);
  char *p = malloc(n + 2);
  if (!p) die_code(EX_SOFTWARE, "out of memory");
  p[0] = '/';
  memcpy(p + 1, m, n + 1);
  if (!strchr(p + 1, '/')) {
    char *dot = strrchr(p + 1, '.');
    if (dot) *dot = '/';
  }
  const char *slash = strchr(p + 1, '/');
  if (!slash || slash == p + 1 || !slash[1] || strchr(slash + 1, '/'))
    die("call: '%s' is not a method (package.Service/Method or package.Service.Method)", m);
  return p;
}

/* ---- JSON requests: one flat object of string values ---- */

static void b64_decode(const char *key, const char *s, size_t n, uint8_t *out, size_t *outlen) {
  uint32_t acc = 0;
  int bits = 0;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
          : c == '+' || c == '-' ? 62 : c == '/' || c == '_' ? 63 : c == '=' ? -2 : -1;
    if (v == -2) break;
    if (v < 0) die_code(EX_DATAERR, "call: \"%s\" is not base64 (proto3 JSON writes bytes so)", key);
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[k++] = (uint8_t)(acc >> bits);
    }
  }
  *outlen = k;
}

/* A JSON string at *p (after its opening quote), unescaped into out; moves *p past the closing quote. */
static size_t json_string(const char **p, char *out) {
  const char *s = *p;
  size_t k = 0;
  for (;;) {
    unsigned char c = (unsigned char)*s++;
    if (c == 0 || c < 0x20) die_code(EX_DATAERR, "call: unterminated JSON string");
    if (c == '"') break;
    if (c != '\\') {
      out[k++] = (char)c;
      continue;
    }
    c = (unsigned char)*s++;
    const char *esc = strchr("\"\"\\\\//b\bf\fn\nr\rt\t", c);
    if (c && esc && (esc - "\"\"\\\\//b\bf\fn\nr\rt\t") % 2 == 0) {
      out[k++] = esc[1];
    } else if (c == 'u') {
      unsigned v = 0;
      for (int i = 0; i < 4; i++) {
        char h = *s++;
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) die_code(EX_DATAERR, "call: bad \\u escape in a JSON string");
        v = v << 4 | (unsigned)d;
      }
      if (v >= 0xd800 && v < 0xe000) die_code(EX_DATAERR, "call: \\u surrogates are not supported in JSON strings");
      if (v < 0x80) out[k++] = (char)v;
      else if (v < 0x800) out[k++] = (char)(0xc0 | v >> 6), out[k++] = (char)(0x80 | (v & 63));
      else out[k++] = (char)(0xe0 | v >> 12), out[k++] = (char)(0x80 | ((v >> 6) & 63)), out[k++] = (char)(0x80 | (v & 63));
    } else {
      die_code(EX_DATAERR, "call: bad escape in a JSON string");
    }
  }
  *p = s;
  out[k] = 0;
  return k;
}

/* Serializes the JSON object `js` (len bytes) as the known message `msg`. */
static uint8_t *json_request(int msg, const char *js, size_t len, size_t *outlen) {
  char *key = malloc(len + 1), *val = malloc(len + 1);
  uint8_t *f1 = malloc(len + 1), *f2 = malloc(len + 1);
  size_t f1n = 0, f2n = 0;
  if (!key || !val || !f1 || !f2) die_code(EX_SOFTWARE, "out of memory");
  const char *p = js + strspn(js, " \t\r\n");
  if (*p++ != '{') die_code(EX_DATAERR, "call: the JSON request is not an object");
  for (bool first = true;; first = false) {
    p += strspn(p, " \t\r\n");
    if (*p == '}' && first) break;
    if (*p++ != '"') die_code(EX_DATAERR, "call: expected a \"key\" in the JSON request");
    json_string(&p, key);
    p += strspn(p, " \t\r\n");
    if (*p++ != ':') die_code(EX_DATAERR, "call: expected ':' after \"%s\"", key);
    p += strspn(p, " \t\r\n");
    if (*p++ != '"') die_code(EX_DATAERR, "call: \"%s\": only string values are known here", key);
    size_t vn = json_string(&p, val);
    if (msg == MSG_QUERY && (!strcmp(key, "queryBytes") || !strcmp(key, "query_bytes"))) b64_decode(key, val, vn, f1, &f1n);
    else if (msg == MSG_QUERY && (!strcmp(key, "clientSignature") || !strcmp(key, "client_signature")))
      b64_decode(key, val, vn, f2, &f2n);
    else if (msg == MSG_HEALTH && !strcmp(key, "service")) memcpy(f1, val, f1n = vn);
    else die_code(EX_DATAERR, "call: unknown field \"%s\" of %s", key, msg == MSG_QUERY ? "amaters.v1.QueryRequest" : "grpc.health.v1.HealthCheckRequest");
    p += strspn(p, " \t\r\n");
    if (*p == '}') break;
    if (*p++ != ',') die_code(EX_DATAERR, "call: expected ',' or '}' in the JSON request");
  }
  p++;
  p += strspn(p, " \t\r\n");
  if ((size_t)(p - js) != len) die_code(EX_DATAERR, "call: text after the JSON object");
  /* both messages have bytes/string fields 1 and 2: the same encoding */
  uint8_t *out = malloc(amn_pair_encoded_size(f1n, f2n) + 1);
  if (!out) die_code(EX_SOFTWARE, "out of memory");
  *outlen = amn_pair_encode(out, f1, f1n, f2, f2n);
  free(key), free(val), free(f1), free(f2);
  return out;
}

/* The request bytes: JSON for a known message when it starts with '{', else as given. */
static uint8_t *request(int msg, const uint8_t *d, size_t n, size_t *outlen) {
  size_t lead = 0;
  while (lead < n && strchr(" \t\r\n", d[lead]) && d[lead]) lead++;
  if (lead < n && d[lead] == '{') {
    if (msg == MSG_RAW) die_code(EX_DATAERR, "call: a JSON request needs a message the CLI knows (Execute, ExecuteStream, Health); give the serialized message");
    char *js = strndup((const char *)d, n);
    if (!js || strlen(js) != n) die_code(EX_DATAERR, "call: NUL byte in the JSON request");
    uint8_t *out = json_request(msg, js, n, outlen);
    free(js);
    return out;
  }
  uint8_t *out = malloc(n ? n : 1);
  if (!out) die_code(EX_SOFTWARE, "out of memory");
  memcpy(out, d, n);
  *outlen = n;
  return out;
}

/* ---- responses ---- */

static const char *health_name(uint64_t s) {
  static const char *n[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  return s < 4 ? n[s] : NULL;
}

/* Prints one response; false if a known message does not parse. */
static bool print_response(int msg, const char *fmt, const uint8_t *d, size_t n) {
  if (!strcmp(fmt, "raw")) {
    fwrite(d, 1, n, stdout);
    if (isatty(STDOUT_FILENO)) fputc('\n', stdout);
    return true;
  }
  if (!strcmp(fmt, "hex") || !strcmp(fmt, "base64")) {
    (fmt[0] == 'h' ? hex_out : base64_out)(stdout, d, n);
    fputc('\n', stdout);
    return true;
  }
  amn_pair_view v;
  if (msg == MSG_QUERY) {
    if (amn_pair_decode(d, n, &v) != 0) return false;
    fputc('{', stdout);
    if (v.f1_len) fputs("\"resultBytes\":\"", stdout), base64_out(stdout, v.f1, v.f1_len), fputc('"', stdout);
    if (v.f2_len) fputs(v.f1_len ? ",\"serverProof\":\"" : "\"serverProof\":\"", stdout), base64_out(stdout, v.f2, v.f2_len), fputc('"', stdout);
    fputs("}\n", stdout);
    return true;
  }
  /* HealthCheckResponse: status = 1 (enum) */
  size_t pos = 0;
  amn_pb_field f;
  uint64_t status = 0;
  int rc;
  while ((rc = amn_pb_next(d, n, &pos, &f)) > 0)
    if (f.number == 1 && f.wire_type == 0) status = f.varint;
  if (rc < 0) return false;
  if (health_name(status)) printf("{\"status\":\"%s\"}\n", health_name(status));
  else printf("{\"status\":%llu}\n", (unsigned long long)status);
  return true;
}

/* ---- streams ---- */

typedef struct cstate {
  swait w; /* first */
  bool bad;
  int msg;
  const char *fmt;
} cstate;

static void c_on_msg(swait *w, const uint8_t *msg, size_t len) {
  cstate *st = (cstate *)w;
  if (!print_response(st->msg, st->fmt, msg, len)) st->bad = true;
  fflush(stdout);
}

static int call_stream(cli *o, net *n, amn_client *c, const char *path, int msg, const char *fmt, bool lines) {
  cstate st = {.w.on_msg = c_on_msg, .msg = msg, .fmt = fmt};
  amn_call_opts copts = n->call;
  copts.timeout_ms = n->timeout_given ? n->timeout_ms : 0; /* a stream: a deadline only on request */
  amn_cstream *s = NULL;
  int rc = sw_open(&st.w, c, path, &copts, &s);
  if (rc) return fail_status(status_of_err(rc), amn_strerror(rc));
  int local = 0;
  if (!lines) { /* one request: -d, or the whole file */
    size_t dn = 0, qn;
    uint8_t *d = o->data ? (uint8_t *)strdup(o->data) : slurp(o->data_file ? o->data_file : "-", &dn);
    if (o->data) dn = strlen(o->data);
    uint8_t *q = request(msg, d, dn, &qn);
    local = sw_send(s, &st.w, q, qn);
    free(d), free(q);
  } else { /* one request per line of stdin or --data-file */
    FILE *in = !o->data_file || !strcmp(o->data_file, "-") ? stdin : fopen(o->data_file, "rb");
    if (!in) die_code(EX_NOINPUT, "cannot read %s", o->data_file);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (!local && (len = getline(&line, &cap, in)) >= 0) {
      if (len && line[len - 1] == '\n') line[--len] = 0;
      size_t qn;
      uint8_t *q = msg == MSG_QUERY && (len == 0 || line[0] != '{')
                       ? NULL /* a plain line is the query's bytes, as the stream command */
                       : request(msg, (const uint8_t *)line, (size_t)len, &qn);
      if (!q) {
        q = malloc(amn_pair_encoded_size((size_t)len, 0) + 1);
        if (!q) die_code(EX_SOFTWARE, "out of memory");
        qn = amn_pair_encode(q, (const uint8_t *)line, (size_t)len, NULL, 0);
      }
      local = sw_send(s, &st.w, q, qn);
      free(q);
    }
    if (ferror(in)) die_code(EX_IOERR, "cannot read the requests");
    free(line);
    if (in != stdin) fclose(in);
  }
  int code = sw_finish(s, &st.w, local);
  if (!code && st.bad) code = fail_status(AMN_STATUS_INTERNAL, "a response is not the message the method returns");
  int fl = flush_stdout();
  return code ? code : fl;
}

int cmd_call(cli *o, net *n) {
  char *path = method_path(o->method);
  const known *k = NULL;
  for (size_t i = 0; i < sizeof g_known / sizeof g_known[0]; i++)
    if (!strcmp(path, g_known[i].method)) k = &g_known[i];
  int msg = k ? k->msg : MSG_RAW;
  const char *fmt = o->output ? o->output : msg == MSG_RAW ? "raw" : "json";
  if (msg == MSG_RAW && !strcmp(fmt, "json"))
    die("call: --output json needs a message the CLI knows (Execute, ExecuteStream, Health); use raw, hex or base64");
  bool streaming = o->stream_mode || (k && (k->client_streaming || k->server_streaming));
  bool lines = o->stream_mode || (k && k->client_streaming);
  if (lines && o->data) lines = false; /* -d: that one request */
  amn_client *c = client_new(n);
  int code;
  if (streaming) {
    code = call_stream(o, n, c, path, msg, fmt, lines);
  } else {
    size_t dn = 0, qn;
    uint8_t *d = o->data ? (uint8_t *)strdup(o->data) : slurp(o->data_file ? o->data_file : "-", &dn);
    if (!d) die_code(EX_SOFTWARE, "out of memory");
    if (o->data) dn = strlen(o->data);
    uint8_t *q = request(msg, d, dn, &qn);
    free(d);
    amn_result r;
    int rc = amn_client_unary(c, path, q, qn, &n->call, &r);
    free(q);
    if (rc) {
      code = fail_status(status_of_err(rc), amn_strerror(rc));
    } else {
      code = (int)r.code;
      if (code == AMN_STATUS_OK && !print_response(msg, fmt, r.data, r.len))
        code = fail_status(AMN_STATUS_INTERNAL, "the response is not the message the method returns");
      else if (code != AMN_STATUS_OK) fail_status(code, r.message);
      amn_result_free(&r);
      int fl = flush_stdout();
      if (!code) code = fl;
    }
  }
  code = exit_status(c, code);
  amn_client_free(c);
  free(path);
  return code;
}
