/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli: list and describe, through the server's reflection
 * (grpc.reflection.v1, or v1alpha when the server has no v1), as grpcurl
 * does. Requests are written and answers read with the library's protobuf
 * field reader (amn_pb_next); each request is one short
 * ServerReflectionInfo stream.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define REFL_V1 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define REFL_V1ALPHA "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

typedef struct rstate {
  swait w;      /* first */
  uint8_t *msg; /* the (first) response */
  size_t len;
  char *message; /* why the call failed */
} rstate;

static void r_on_msg(swait *w, const uint8_t *msg, size_t len) {
  rstate *st = (rstate *)w;
  if (!st->msg && (st->msg = malloc(len ? len : 1))) {
    memcpy(st->msg, msg, len);
    st->len = len;
  }
}

/* One request on a stream to `method`: 0 with the response in st, else the
 * call's status (st->message says why; not printed: UNIMPLEMENTED of v1 is
 * tried again with v1alpha). */
static int refl_call(amn_client *c, net *n, const char *method, const uint8_t *req, size_t len, rstate *st) {
  memset(st, 0, sizeof *st);
  st->w.on_msg = r_on_msg;
  amn_cstream *s = NULL;
  int rc = sw_open(&st->w, c, method, &n->call, &s);
  if (rc) {
    st->message = strdup(amn_strerror(rc));
    return status_of_err(rc);
  }
  if ((rc = amn_cstream_send(s, req, len)) == 0) rc = amn_cstream_close_send(s);
  if (rc) amn_cstream_cancel(s);
  int code = sw_end(s, &st->w);
  st->message = st->w.message;
  if (code == AMN_STATUS_OK && !st->msg) {
    free(st->message);
    st->message = strdup("the server answered no ServerReflectionResponse");
    code = AMN_STATUS_INTERNAL;
  }
  return code;
}

static void rstate_free(rstate *st) {
  free(st->msg);
  free(st->message);
  st->msg = NULL;
  st->message = NULL;
}

/* A ServerReflectionRequest with one string field (4: file_containing_symbol, 7: list_services). */
static size_t encode_request(uint8_t *out, uint32_t field, const char *s) {
  size_t n = strlen(s), k = 0;
  out[k++] = (uint8_t)(field << 3 | 2);
  size_t v = n;
  while (v >= 0x80) out[k++] = (uint8_t)(v | 0x80), v >>= 7;
  out[k++] = (uint8_t)v;
  memcpy(out + k, s, n);
  return k + n;
}

/* Asks once; v1alpha when the server does not know v1. Returns 0 with the
 * response, or the exit status (the error printed). */
static bool g_alpha;
static bool g_list_methods; /* list SERVICE rather than describe */

static int ask(amn_client *c, net *n, uint32_t field, const char *s, rstate *st) {
  uint8_t *req = malloc(strlen(s) + 16);
  if (!req) die_code(EX_SOFTWARE, "out of memory");
  size_t len = encode_request(req, field, s);
  int code = refl_call(c, n, g_alpha ? REFL_V1ALPHA : REFL_V1, req, len, st);
  if (code == AMN_STATUS_UNIMPLEMENTED && !g_alpha) {
    debugf("no grpc.reflection.v1 on the server: trying v1alpha");
    g_alpha = true;
    rstate_free(st);
    code = refl_call(c, n, REFL_V1ALPHA, req, len, st);
  }
  free(req);
  if (code) {
    fail_status(code, st->message);
    rstate_free(st);
  }
  return code;
}

/* The response's oneof: field 4 (files), 6 (services), 7 (error). An error
 * is printed and its code returned. */
static int response_part(const rstate *st, uint32_t want, const uint8_t **d, size_t *len) {
  size_t pos = 0;
  amn_pb_field f;
  int rc;
  while ((rc = amn_pb_next(st->msg, st->len, &pos, &f)) > 0) {
    if (f.wire_type != 2) continue;
    if (f.number == want) {
      *d = f.data;
      *len = f.len;
      return 0;
    }
    if (f.number == 7) {
      size_t p2 = 0;
      amn_pb_field e;
      int code = AMN_STATUS_UNKNOWN;
      char msg[512] = "";
      while (amn_pb_next(f.data, f.len, &p2, &e) > 0) {
        if (e.number == 1 && e.wire_type == 0) code = (int)e.varint;
        if (e.number == 2 && e.wire_type == 2) snprintf(msg, sizeof msg, "%.*s", (int)e.len, (const char *)e.data);
      }
      if (code <= 0 || code > 16) code = AMN_STATUS_UNKNOWN;
      return fail_status(code, msg);
    }
  }
  return fail_status(AMN_STATUS_INTERNAL, rc < 0 ? "malformed ServerReflectionResponse" : "unexpected ServerReflectionResponse");
}

/* The string field `num` of a message, as "%.*s" arguments. */
static bool str_field(const uint8_t *d, size_t len, uint32_t num, const char **s, int *n) {
  size_t pos = 0;
  amn_pb_field f;
  bool found = false;
  while (amn_pb_next(d, len, &pos, &f) > 0)
    if (f.number == num && f.wire_type == 2) *s = (const char *)f.data, *n = (int)f.len, found = true;
  return found;
}

static uint64_t int_field(const uint8_t *d, size_t len, uint32_t num) {
  size_t pos = 0;
  amn_pb_field f;
  uint64_t v = 0;
  while (amn_pb_next(d, len, &pos, &f) > 0)
    if (f.number == num && f.wire_type == 0) v = f.varint;
  return v;
}

/* The services of the server, one per line, sorted as the server sent them. */
static int list_services(amn_client *c, net *n, char ***names, size_t *count) {
  rstate st;
  int code = ask(c, n, 7, "", &st);
  if (code) return code;
  const uint8_t *d;
  size_t len;
  if ((code = response_part(&st, 6, &d, &len)) == 0) {
    size_t pos = 0;
    amn_pb_field f;
    while (amn_pb_next(d, len, &pos, &f) > 0) {
      const char *s;
      int sl;
      if (f.number != 1 || f.wire_type != 2 || !str_field(f.data, f.len, 1, &s, &sl)) continue;
      char **nn = realloc(*names, (*count + 1) * sizeof *nn);
      if (!nn || !(nn[*count] = strndup(s, (size_t)sl))) die_code(EX_SOFTWARE, "out of memory");
      *names = nn;
      (*count)++;
    }
  }
  rstate_free(&st);
  return code;
}

static int describe_one(amn_client *c, net *n, const char *sym);

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* list: the services; list SERVICE: its methods (package.Service.Method). */
int cmd_list(cli *o, net *n) {
  amn_client *c = client_new(n);
  int code = 0;
  if (o->symbol) {
    g_list_methods = true;
    code = describe_one(c, n, o->symbol);
  } else {
    char **names = NULL;
    size_t count = 0;
    code = list_services(c, n, &names, &count);
    if (count) qsort(names, count, sizeof *names, cmp_str);
    for (size_t i = 0; i < count; i++) {
      if (!code) puts(names[i]);
      free(names[i]);
    }
    free(names);
  }
  code = exit_status(c, code);
  amn_client_free(c);
  return code ? code : flush_stdout();
}

/* ---- describe: find the symbol in the FileDescriptorProtos ---- */

static const char *type_name(uint64_t t) {
  static const char *names[] = {NULL, "double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool",
                                "string", "group", NULL, "bytes", "uint32", NULL, "sfixed32", "sfixed64", "sint32",
                                "sint64"};
  return t < sizeof names / sizeof names[0] ? names[t] : NULL;
}

static void print_method(const uint8_t *d, size_t len, const char *indent) {
  const char *nm = "", *in = "", *out = "";
  int nl = 0, il = 0, ol = 0;
  str_field(d, len, 1, &nm, &nl);
  str_field(d, len, 2, &in, &il);
  str_field(d, len, 3, &out, &ol);
  printf("%srpc %.*s ( %s%.*s ) returns ( %s%.*s );\n", indent, nl, nm, int_field(d, len, 5) ? "stream " : "", il, in,
         int_field(d, len, 6) ? "stream " : "", ol, out);
}

static void print_field(const uint8_t *d, size_t len) {
  const char *nm = "", *tn = "";
  int nl = 0, tl = 0;
  str_field(d, len, 1, &nm, &nl);
  const char *t = type_name(int_field(d, len, 5));
  if (!t) str_field(d, len, 6, &tn, &tl); /* a message or enum: its type name */
  printf("  %s", int_field(d, len, 4) == 3 ? "repeated " : "");
  if (t) printf("%s", t);
  else printf("%.*s", tl, tn);
  printf(" %.*s = %llu;\n", nl, nm, (unsigned long long)int_field(d, len, 3));
}

/* Prints the block of a service (6: methods 2), message (fields 2) or enum (values 2). */
static void print_block(const char *kind, const uint8_t *d, size_t len) {
  const char *nm = "";
  int nl = 0;
  str_field(d, len, 1, &nm, &nl);
  printf("%s %.*s {\n", kind, nl, nm);
  size_t pos = 0;
  amn_pb_field f;
  while (amn_pb_next(d, len, &pos, &f) > 0) {
    if (f.wire_type != 2) continue;
    if (f.number == 2 && kind[0] == 's') print_method(f.data, f.len, "  ");
    else if (f.number == 2 && kind[0] == 'm') print_field(f.data, f.len);
    else if (f.number == 2 && kind[0] == 'e') {
      const char *vn = "";
      int vl = 0;
      str_field(f.data, f.len, 1, &vn, &vl);
      printf("  %.*s = %lld;\n", vl, vn, (long long)(int32_t)int_field(f.data, f.len, 2));
    } else if (f.number == 3 && kind[0] == 'm') {
      const char *sn = "";
      int sl = 0;
      str_field(f.data, f.len, 1, &sn, &sl);
      printf("  message %.*s { ... }\n", sl, sn);
    } else if (f.number == 4 && kind[0] == 'm') {
      const char *sn = "";
      int sl = 0;
      str_field(f.data, f.len, 1, &sn, &sl);
      printf("  enum %.*s { ... }\n", sl, sn);
    }
  }
  puts("}");
}

/* Looks for `rest` (the symbol without the scope already matched) among the
 * children of a descriptor: services (6), messages (4 / nested 3), enums
 * (5 / nested 4), methods (service field 2). Prints it; true when found. */
static bool find_in(const uint8_t *d, size_t len, const char *sym, const char *rest, bool file_level, int depth) {
  size_t pos = 0;
  amn_pb_field f;
  while (depth < 32 && amn_pb_next(d, len, &pos, &f) > 0) {
    if (f.wire_type != 2) continue;
    const char *kind = NULL;
    if (file_level) kind = f.number == 4 ? "message" : f.number == 5 ? "enum" : f.number == 6 ? "service" : NULL;
    else kind = f.number == 3 ? "message" : f.number == 4 ? "enum" : NULL;
    if (!kind) continue;
    const char *nm;
    int nl;
    if (!str_field(f.data, f.len, 1, &nm, &nl) || strncmp(rest, nm, (size_t)nl) != 0) continue;
    const char *after = rest + nl;
    if (!*after && g_list_methods) { /* list SERVICE: its methods, one per line */
      if (kind[0] != 's') continue;
      size_t p2 = 0;
      amn_pb_field m;
      const char *mn;
      int ml;
      while (amn_pb_next(f.data, f.len, &p2, &m) > 0)
        if (m.number == 2 && m.wire_type == 2 && str_field(m.data, m.len, 1, &mn, &ml)) printf("%s.%.*s\n", sym, ml, mn);
      return true;
    }
    if (!*after) {
      printf("%s is a%s %s:\n", sym, kind[0] == 'e' ? "n" : "", kind);
      print_block(kind, f.data, f.len);
      return true;
    }
    if (*after != '.') continue;
    if (kind[0] == 's') {
      size_t p2 = 0;
      amn_pb_field m;
      while (amn_pb_next(f.data, f.len, &p2, &m) > 0) {
        const char *mn;
        int ml;
        if (m.number == 2 && m.wire_type == 2 && str_field(m.data, m.len, 1, &mn, &ml) &&
            strlen(after + 1) == (size_t)ml && strncmp(after + 1, mn, (size_t)ml) == 0) {
          printf("%s is a method:\n", sym);
          print_method(m.data, m.len, "");
          return true;
        }
      }
    } else if (kind[0] == 'm' && find_in(f.data, f.len, sym, after + 1, false, depth + 1)) {
      return true;
    }
  }
  return false;
}

static int describe_one(amn_client *c, net *n, const char *sym) {
  if (sym[0] == '.') sym++;
  rstate st;
  int code = ask(c, n, 4, sym, &st);
  if (code) return code;
  const uint8_t *d;
  size_t len;
  if ((code = response_part(&st, 4, &d, &len)) == 0) {
    /* the first file is the one that defines the symbol */
    size_t pos = 0;
    amn_pb_field f;
    bool found = false;
    while (!found && amn_pb_next(d, len, &pos, &f) > 0) {
      if (f.number != 1 || f.wire_type != 2) continue;
      const char *pkg = "";
      int pl = 0;
      str_field(f.data, f.len, 2, &pkg, &pl);
      const char *rest = sym;
      if (pl) {
        if (strncmp(sym, pkg, (size_t)pl) != 0 || sym[pl] != '.') continue;
        rest = sym + pl + 1;
      }
      found = find_in(f.data, f.len, sym, rest, true, 0);
    }
    if (!found)
      code = fail_status(AMN_STATUS_NOT_FOUND, g_list_methods ? "not a service" : "the server's descriptor has the symbol in no form describe prints "
                                                 "(services, methods, messages, enums)");
  }
  rstate_free(&st);
  return code;
}

int cmd_describe(cli *o, net *n) {
  amn_client *c = client_new(n);
  int code = 0;
  if (o->symbol) {
    code = describe_one(c, n, o->symbol);
  } else {
    char **names = NULL;
    size_t count = 0;
    code = list_services(c, n, &names, &count);
    for (size_t i = 0; i < count; i++) {
      if (!code) code = describe_one(c, n, names[i]);
      free(names[i]);
    }
    free(names);
  }
  code = exit_status(c, code);
  amn_client_free(c);
  return code ? code : flush_stdout();
}
