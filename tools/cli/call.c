/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-cli: execute, stream and health. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cmd_execute(cli *o, net *n) {
  size_t qlen = 0;
  uint8_t *q = o->data ? (uint8_t *)strdup(o->data) : slurp(o->data_file, &qlen);
  if (o->data) qlen = strlen(o->data);
  if (!q) die_code(EX_SOFTWARE, "out of memory");
  amn_client *c = client_new(n);
  amn_result r;
  uint8_t *proof = NULL;
  size_t proof_len = 0;
  const char *sig = o->signature ? o->signature : "";
  int rc = amn_client_execute(c, q, qlen, (const uint8_t *)sig, strlen(sig), &n->call, &r, &proof, &proof_len);
  free(q);
  int code;
  if (rc) {
    code = exit_status(c, fail_status(status_of_err(rc), amn_strerror(rc)));
    amn_client_free(c);
    return code;
  }
  code = (int)r.code;
  if (o->json) {
    FILE *f = stdout;
    fprintf(f, "{\"status\":\"%s\",\"code\":%d,\"message\":", amn_status_name(code), code);
    json_str(f, (const uint8_t *)r.message, strlen(r.message ? r.message : ""));
    fputs(",\"result_hex\":\"", f);
    hex_out(f, r.data, r.len);
    fputs("\",\"result\":", f);
    if (code == AMN_STATUS_OK && printable_utf8(r.data, r.len)) json_str(f, r.data, r.len);
    else fputs("null", f);
    fputs(",\"proof_hex\":\"", f);
    hex_out(f, proof, proof_len);
    fputs("\",\"initial_metadata\":", f);
    json_md(f, r.initial_md, r.initial_md_count);
    fputs(",\"trailing_metadata\":", f);
    json_md(f, r.trailing_md, r.trailing_md_count);
    fputs("}\n", f);
  } else if (code == AMN_STATUS_OK) {
    if (o->hex) {
      hex_out(stdout, r.data, r.len);
      fputc('\n', stdout);
    } else {
      if (r.len) fwrite(r.data, 1, r.len, stdout);
      /* raw bytes as they are; a newline only for a terminal */
      if (isatty(STDOUT_FILENO) && (!r.len || r.data[r.len - 1] != '\n')) fputc('\n', stdout);
    }
  }
  int fl = flush_stdout(); /* EX_IOERR when the output cannot be written */
  if (code == 0) code = fl;
  if (r.code != AMN_STATUS_OK) code = exit_status(c, fail_status(code, r.message));
  free(proof);
  amn_result_free(&r);
  amn_client_free(c);
  return code;
}



typedef struct sstate {
  swait w; /* first */
  bool hex;
  bool bad_response;
} sstate;

static void s_on_msg(swait *w, const uint8_t *msg, size_t len) {
  sstate *st = (sstate *)w;
  amn_pair_view v;
  if (amn_pair_decode(msg, len, &v) != 0) {
    st->bad_response = true;
    fprintf(stderr, PROG ": malformed QueryResponse (%zu bytes) ignored\n", len);
    return;
  }
  /* printing may block on a full pipe: acceptable for a command-line tool */
  if (st->hex) hex_out(stdout, v.f1, v.f1_len);
  else if (v.f1_len) fwrite(v.f1, 1, v.f1_len, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

/* stdin line reader on read(2) + poll, so that waiting for input notices
 * when the call has ended (stdio's getline would block until input). */
typedef struct lreader {
  char *buf;
  size_t start, len, cap;
  bool eof;
} lreader;

/* Next line without its '\n' in *line: returns its length; -1 at the end
 * of input (a last unterminated line comes first); -2 if the call ended. */
static ssize_t read_line(lreader *r, char **line, sstate *st) {
  for (;;) {
    char *nl = r->len > r->start ? memchr(r->buf + r->start, '\n', r->len - r->start) : NULL;
    if (nl || (r->eof && r->len > r->start)) {
      size_t end = nl ? (size_t)(nl - r->buf) : r->len;
      *line = r->buf + r->start;
      r->start = nl ? end + 1 : end;
      return (ssize_t)(end - (size_t)(*line - r->buf));
    }
    if (r->eof) return -1;
    if (r->start) {
      memmove(r->buf, r->buf + r->start, r->len - r->start);
      r->len -= r->start;
      r->start = 0;
    }
    if (r->len == r->cap) {
      r->cap = r->cap ? r->cap * 2 : 65536;
      r->buf = realloc(r->buf, r->cap);
      if (!r->buf) die_code(EX_SOFTWARE, "out of memory");
    }
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    int pr = poll(&pfd, 1, 200);
    if (pr == 0 || (pr < 0 && errno == EINTR)) {
      if (sw_closed(&st->w)) return -2;
      continue;
    }
    ssize_t n = read(STDIN_FILENO, r->buf + r->len, r->cap - r->len);
    if (n > 0) r->len += (size_t)n;
    else if (n == 0 || (errno != EINTR && errno != EAGAIN)) r->eof = true;
  }
}

int cmd_stream(cli *o, net *n) {
  sstate st = {.w.on_msg = s_on_msg, .hex = o->hex};
  amn_client *c = client_new(n);
  amn_call_opts copts = n->call;
  copts.timeout_ms = n->timeout_given ? n->timeout_ms : 0; /* interactive: a deadline only on request */
  amn_cstream *s = NULL;
  int rc = sw_open(&st.w, c, AMN_METHOD_EXECUTE_STREAM, &copts, &s);
  if (rc) {
    amn_client_free(c);
    return fail_status(status_of_err(rc), amn_strerror(rc));
  }
  lreader lr = {0};
  char *line;
  size_t bufcap = 0;
  uint8_t *buf = NULL;
  ssize_t len;
  int local_err = 0;
  while (!local_err && (len = read_line(&lr, &line, &st)) >= 0) {
    size_t need = amn_pair_encoded_size((size_t)len, 0);
    if (need > bufcap) {
      bufcap = need;
      buf = realloc(buf, bufcap);
      if (!buf) die_code(EX_SOFTWARE, "out of memory");
    }
    size_t m = amn_pair_encode(buf, (const uint8_t *)line, (size_t)len, NULL, 0);
    local_err = sw_send(s, &st.w, buf, m); /* AMN_ECLOSED: the server ended the call early */
  }
  free(lr.buf);
  free(buf);
  int code = exit_status(c, sw_finish(s, &st.w, local_err));
  amn_client_free(c);
  if (!code && st.bad_response) code = fail_status(AMN_STATUS_INTERNAL, "malformed QueryResponse received");
  int fl = flush_stdout();
  return code ? code : fl;
}


int cmd_health(cli *o, net *n) {
  amn_client *c = client_new(n);
  bool serving = false;
  amn_status_code st = AMN_STATUS_OK;
  char err[1024] = "";
  int rc = amn_client_health(c, o->service ? o->service : "", n->timeout_ms, &serving, &st, err, sizeof err);
  int code = 0;
  if (rc == AMN_EIO && st != AMN_STATUS_OK) {
    /* err is "STATUS_NAME: message" already */
    fprintf(stderr, "%s\n", err);
    code = exit_status(c, st);
  } else if (rc) {
    code = exit_status(c, fail_status(status_of_err(rc), err[0] ? err : amn_strerror(rc)));
  }
  amn_client_free(c);
  if (rc) return code;
  puts(serving ? "SERVING" : "NOT_SERVING");
  int fl = flush_stdout();
  return fl ? fl : serving ? 0 : 1;
}

