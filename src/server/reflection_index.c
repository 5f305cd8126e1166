/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Server reflection without I/O (reflection.h): the symbol index of a
 * FileDescriptorSet, read with a small protobuf wire reader (the library has
 * no descriptor.proto of its own), and the answer to one request.
 *
 * Indexed, by fully qualified name without the leading dot: messages
 * (nested ones too), their fields and oneofs, enums and their values (in the
 * scope of the enum, as protoc scopes them), services and their methods,
 * extensions (by name, and by extendee + number).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amn/common.h"
#include "amn/proto.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "server/reflection.h"

extern const unsigned char amn_refl_descriptor_set[];
extern const size_t amn_refl_descriptor_set_len;

typedef struct refl_file {
  const uint8_t *bytes;
  size_t len;
  char *name;
  char **deps;
  size_t ndeps;
} refl_file;

typedef struct refl_sym {
  char *name;
  size_t file;
  bool message;
} refl_sym;

typedef struct refl_ext {
  char *extendee;
  int32_t number;
  size_t file;
} refl_ext;

struct amn_refl {
  refl_file *files;
  size_t nfiles;
  refl_sym *syms;
  size_t nsyms, csyms;
  refl_ext *exts;
  size_t nexts, cexts;
};

/* ---- protobuf wire reading ---- */

typedef struct wire {
  const uint8_t *buf;
  size_t len, pos;
} wire;

#define WIRE(d, n) ((wire){(d), (n), 0})

typedef struct wfield {
  uint32_t num;
  int type;         /* 0 varint, 1 fixed64, 2 bytes, 5 fixed32 */
  uint64_t v;       /* varint value */
  const uint8_t *d; /* bytes */
  size_t len;
} wfield;

/* Next field: 1, 0 at the end, -1 if malformed (amn_pb_next). */
static int rd_field(wire *w, wfield *f) {
  amn_pb_field pf;
  int rc = amn_pb_next(w->buf, w->len, &w->pos, &pf);
  if (rc <= 0) return rc < 0 ? -1 : 0;
  *f = (wfield){pf.number, (int)pf.wire_type, pf.varint, pf.data, pf.len};
  return 1;
}

/* ---- building the index ---- */

static char *join(const char *scope, const uint8_t *name, size_t len) {
  size_t sl = strlen(scope);
  char *s = malloc(sl + 1 + len + 1);
  if (!s) return NULL;
  memcpy(s, scope, sl);
  if (sl) s[sl++] = '.';
  memcpy(s + sl, name, len);
  s[sl + len] = 0;
  return s;
}

static int add_sym(amn_refl *r, char *name, size_t file, bool message) {
  if (!name) return AMN_ENOMEM;
  if (r->nsyms == r->csyms) {
    size_t c = r->csyms ? r->csyms * 2 : 64;
    refl_sym *n = realloc(r->syms, c * sizeof *n);
    if (!n) {
      free(name);
      return AMN_ENOMEM;
    }
    r->syms = n;
    r->csyms = c;
  }
  r->syms[r->nsyms++] = (refl_sym){name, file, message};
  return 0;
}

/* The name (field 1) of a descriptor message, or -1 if it has none. */
static int name_of(const uint8_t *d, size_t len, const uint8_t **name, size_t *nlen) {
  wire w = WIRE(d, len);
  wfield f;
  int rc;
  *name = NULL;
  while ((rc = rd_field(&w, &f)) > 0)
    if (f.num == 1 && f.type == 2) *name = f.d, *nlen = f.len;
  return rc < 0 || !*name || !*nlen ? -1 : 0;
}

/* An extension (FieldDescriptorProto with extendee, field 2, and number, 3). */
static int add_ext(amn_refl *r, const uint8_t *d, size_t len, const char *scope, size_t file) {
  const uint8_t *name;
  size_t nlen;
  if (name_of(d, len, &name, &nlen)) return AMN_EINVAL;
  wire w = WIRE(d, len);
  wfield f;
  const uint8_t *ext = NULL;
  size_t elen = 0;
  int32_t number = 0;
  while (rd_field(&w, &f) > 0) {
    if (f.num == 2 && f.type == 2) ext = f.d, elen = f.len;
    if (f.num == 3 && f.type == 0) number = (int32_t)f.v;
  }
  if (!ext) return AMN_EINVAL;
  if (elen && ext[0] == '.') ext++, elen--;
  int rc = add_sym(r, join(scope, name, nlen), file, false);
  if (rc) return rc;
  if (r->nexts == r->cexts) {
    size_t c = r->cexts ? r->cexts * 2 : 8;
    refl_ext *n = realloc(r->exts, c * sizeof *n);
    if (!n) return AMN_ENOMEM;
    r->exts = n;
    r->cexts = c;
  }
  char *e = join("", ext, elen);
  if (!e) return AMN_ENOMEM;
  r->exts[r->nexts++] = (refl_ext){e, number, file};
  return 0;
}

/* Every named child (field `num`) of a descriptor, in `scope`. */
static int add_children(amn_refl *r, const uint8_t *d, size_t len, uint32_t num, const char *scope, size_t file) {
  wire w = WIRE(d, len);
  wfield f;
  int rc;
  while ((rc = rd_field(&w, &f)) > 0) {
    if (f.num != num || f.type != 2) continue;
    const uint8_t *name;
    size_t nlen;
    if (name_of(f.d, f.len, &name, &nlen)) return AMN_EINVAL;
    int e = add_sym(r, join(scope, name, nlen), file, false);
    if (e) return e;
  }
  return rc < 0 ? AMN_EINVAL : 0;
}

/* EnumDescriptorProto: the enum in `scope`, its values (field 2) beside it. */
static int add_enum(amn_refl *r, const uint8_t *d, size_t len, const char *scope, size_t file) {
  const uint8_t *name;
  size_t nlen;
  if (name_of(d, len, &name, &nlen)) return AMN_EINVAL;
  int rc = add_sym(r, join(scope, name, nlen), file, false);
  return rc ? rc : add_children(r, d, len, 2, scope, file);
}

/* DescriptorProto: fields 2, nested types 3, enums 4, extensions 6, oneofs 8. */
static int add_message(amn_refl *r, const uint8_t *d, size_t len, const char *scope, size_t file, int depth) {
  const uint8_t *name;
  size_t nlen;
  if (depth > 32 || name_of(d, len, &name, &nlen)) return AMN_EINVAL;
  char *full = join(scope, name, nlen);
  int rc = add_sym(r, full, file, true);
  if (rc) return rc;
  if ((rc = add_children(r, d, len, 2, full, file)) || (rc = add_children(r, d, len, 8, full, file))) return rc;
  wire w = WIRE(d, len);
  wfield f;
  while (!rc && rd_field(&w, &f) > 0) {
    if (f.type != 2) continue;
    if (f.num == 3) rc = add_message(r, f.d, f.len, full, file, depth + 1);
    else if (f.num == 4) rc = add_enum(r, f.d, f.len, full, file);
    else if (f.num == 6) rc = add_ext(r, f.d, f.len, full, file);
  }
  return rc;
}

/* ServiceDescriptorProto: the service and its methods (field 2). */
static int add_service(amn_refl *r, const uint8_t *d, size_t len, const char *scope, size_t file) {
  const uint8_t *name;
  size_t nlen;
  if (name_of(d, len, &name, &nlen)) return AMN_EINVAL;
  char *full = join(scope, name, nlen);
  int rc = add_sym(r, full, file, false);
  return rc ? rc : add_children(r, d, len, 2, full, file);
}

/* FileDescriptorProto: name 1, package 2, dependency 3, message_type 4,
 * enum_type 5, service 6, extension 7. */
static int add_file(amn_refl *r, size_t i) {
  refl_file *fl = &r->files[i];
  wire w = WIRE(fl->bytes, fl->len);
  wfield f;
  int rc;
  char *pkg = NULL;
  while ((rc = rd_field(&w, &f)) > 0) {
    if (f.type != 2) continue;
    if (f.num == 1 && !fl->name) {
      if (!(fl->name = join("", f.d, f.len))) return AMN_ENOMEM;
    } else if (f.num == 2 && !pkg) {
      if (!(pkg = join("", f.d, f.len))) return AMN_ENOMEM;
    } else if (f.num == 3) {
      char **n = realloc(fl->deps, (fl->ndeps + 1) * sizeof *n);
      if (!n) break;
      fl->deps = n;
      if (!(n[fl->ndeps] = join("", f.d, f.len))) break;
      fl->ndeps++;
    }
  }
  if (rc < 0 || !fl->name) {
    free(pkg);
    return AMN_EINVAL;
  }
  if (rc > 0) {
    free(pkg);
    return AMN_ENOMEM;
  }
  const char *scope = pkg ? pkg : "";
  w = WIRE(fl->bytes, fl->len);
  while (!rc && rd_field(&w, &f) > 0) {
    if (f.type != 2) continue;
    if (f.num == 4) rc = add_message(r, f.d, f.len, scope, i, 0);
    else if (f.num == 5) rc = add_enum(r, f.d, f.len, scope, i);
    else if (f.num == 6) rc = add_service(r, f.d, f.len, scope, i);
    else if (f.num == 7) rc = add_ext(r, f.d, f.len, scope, i);
  }
  free(pkg);
  return rc;
}

int amn_refl_new(amn_refl **out, const uint8_t *set, size_t len) {
  *out = NULL;
  amn_refl *r = calloc(1, sizeof *r);
  if (!r) return AMN_ENOMEM;
  wire w = WIRE(set, len);
  wfield f;
  int wr = 0, rc = 0;
  while (!rc && (wr = rd_field(&w, &f)) > 0) {
    if (f.num != 1 || f.type != 2) continue;
    refl_file *n = realloc(r->files, (r->nfiles + 1) * sizeof *n);
    if (!n) {
      rc = AMN_ENOMEM;
      break;
    }
    r->files = n;
    n[r->nfiles++] = (refl_file){f.d, f.len, NULL, NULL, 0};
  }
  if (!rc && wr < 0) rc = AMN_EINVAL;
  for (size_t i = 0; !rc && i < r->nfiles; i++) rc = add_file(r, i);
  if (rc) {
    amn_refl_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

int amn_refl_new_builtin(amn_refl **out) {
  return amn_refl_new(out, amn_refl_descriptor_set, amn_refl_descriptor_set_len);
}

void amn_refl_free(amn_refl *r) {
  if (!r) return;
  for (size_t i = 0; i < r->nfiles; i++) {
    free(r->files[i].name);
    for (size_t k = 0; k < r->files[i].ndeps; k++) free(r->files[i].deps[k]);
    free(r->files[i].deps);
  }
  for (size_t i = 0; i < r->nsyms; i++) free(r->syms[i].name);
  for (size_t i = 0; i < r->nexts; i++) free(r->exts[i].extendee);
  free(r->files);
  free(r->syms);
  free(r->exts);
  free(r);
}

/* ---- answers ---- */

static const char *strip_dot(const char *s) { return s && s[0] == '.' ? s + 1 : s ? s : ""; }

static long find_file(const amn_refl *r, const char *name) {
  for (size_t i = 0; i < r->nfiles; i++)
    if (strcmp(r->files[i].name, name) == 0) return (long)i;
  return -1;
}

static const refl_sym *find_sym(const amn_refl *r, const char *name) {
  name = strip_dot(name);
  for (size_t i = 0; i < r->nsyms; i++)
    if (strcmp(r->syms[i].name, name) == 0) return &r->syms[i];
  return NULL;
}

/* The file and its dependencies, transitively, each once, the file first. */
static int file_closure(const amn_refl *r, size_t file, ProtobufCBinaryData **out, size_t *n) {
  size_t *order = malloc(r->nfiles * sizeof *order);
  bool *seen = calloc(r->nfiles, sizeof *seen);
  int rc = 0;
  size_t cnt = 0;
  if (!order || !seen) rc = AMN_ENOMEM;
  if (!rc) {
    order[cnt++] = file;
    seen[file] = true;
  }
  for (size_t k = 0; !rc && k < cnt; k++) {
    const refl_file *f = &r->files[order[k]];
    for (size_t d = 0; d < f->ndeps; d++) {
      long j = find_file(r, f->deps[d]);
      if (j >= 0 && !seen[j]) seen[j] = true, order[cnt++] = (size_t)j;
    }
  }
  if (!rc && !(*out = malloc(cnt * sizeof **out))) rc = AMN_ENOMEM;
  for (size_t k = 0; !rc && k < cnt; k++)
    (*out)[k] = (ProtobufCBinaryData){r->files[order[k]].len, (uint8_t *)r->files[order[k]].bytes};
  if (!rc) *n = cnt;
  free(order);
  free(seen);
  return rc;
}

/* Proto3 strings are UTF-8 (protobuf-c does not check): shortest forms, no
 * surrogates, at most U+10FFFF. */
static bool utf8_ok(const char *s) {
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  while (*p) {
    unsigned c = *p++;
    if (c < 0x80) continue;
    size_t n = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 9;
    if (n == 9) return false;
    unsigned lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (c == 0xe0) lo = 0xa0;
    else if (c == 0xed) hi = 0x9f;
    else if (c == 0xf0) lo = 0x90;
    else if (c == 0xf4) hi = 0x8f;
    if (*p < lo || *p > hi) return false;
    for (size_t i = 1; i < n; i++)
      if ((p[i] & 0xc0) != 0x80) return false;
    p += n;
  }
  return true;
}

static bool request_utf8_ok(const Grpc__Reflection__V1__ServerReflectionRequest *q) {
  const char *x = NULL;
  switch (q->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME: x = q->file_by_filename; break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    x = q->file_containing_symbol;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
    x = q->file_containing_extension ? q->file_containing_extension->containing_type : NULL;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
    x = q->all_extension_numbers_of_type;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES: x = q->list_services; break;
  default: break;
  }
  return utf8_ok(q->host) && utf8_ok(x);
}

int amn_refl_answer(const amn_refl *r, const char *const *services, size_t nservices, const uint8_t *req,
                    size_t len, uint8_t **out, size_t *outlen) {
  *out = NULL;
  *outlen = 0;
  Grpc__Reflection__V1__ServerReflectionRequest *q =
      grpc__reflection__v1__server_reflection_request__unpack(NULL, len, req);
  if (!q) return AMN_EINVAL;
  if (!request_utf8_ok(q)) {
    grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
    return AMN_EINVAL;
  }
  Grpc__Reflection__V1__ServerReflectionResponse resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
  Grpc__Reflection__V1__FileDescriptorResponse fdr = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
  Grpc__Reflection__V1__ExtensionNumberResponse enr = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
  Grpc__Reflection__V1__ListServiceResponse lsr = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
  Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
  Grpc__Reflection__V1__ServiceResponse *svc = NULL, **svcp = NULL;
  char msg[320];
  int rc = 0;
  long file = -1;
  /* the request echoed with its known fields only: a peer's unknown fields
   * (protobuf-c keeps them, even malformed ones) are not sent back */
  Grpc__Reflection__V1__ServerReflectionRequest echo = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  Grpc__Reflection__V1__ExtensionRequest echo_ext = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
  echo.host = q->host;
  echo.message_request_case = q->message_request_case;
  switch (q->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    echo.file_by_filename = q->file_by_filename;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
    echo.file_containing_symbol = q->file_containing_symbol;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
    if (q->file_containing_extension) {
      echo_ext.containing_type = q->file_containing_extension->containing_type;
      echo_ext.extension_number = q->file_containing_extension->extension_number;
    }
    echo.file_containing_extension = &echo_ext;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
    echo.all_extension_numbers_of_type = q->all_extension_numbers_of_type;
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
    echo.list_services = q->list_services;
    break;
  default: break;
  }
  resp.valid_host = q->host;
  resp.original_request = &echo;
  switch (q->message_request_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
    file = find_file(r, q->file_by_filename);
    if (file < 0) snprintf(msg, sizeof msg, "file not found: %.256s", q->file_by_filename);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL: {
    const refl_sym *s = find_sym(r, q->file_containing_symbol);
    if (s) file = (long)s->file;
    else snprintf(msg, sizeof msg, "symbol not found: %.256s", q->file_containing_symbol);
    break;
  }
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION: {
    const Grpc__Reflection__V1__ExtensionRequest *x = q->file_containing_extension;
    const char *type = strip_dot(x ? x->containing_type : "");
    for (size_t i = 0; x && i < r->nexts; i++)
      if (r->exts[i].number == x->extension_number && strcmp(r->exts[i].extendee, type) == 0) file = (long)r->exts[i].file;
    if (file < 0) snprintf(msg, sizeof msg, "extension not found: %.256s %d", type, x ? x->extension_number : 0);
    break;
  }
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
    const char *type = strip_dot(q->all_extension_numbers_of_type);
    const refl_sym *s = find_sym(r, type);
    if (!s || !s->message) {
      snprintf(msg, sizeof msg, "message type not found: %.256s", type);
      break;
    }
    enr.base_type_name = (char *)type;
    if (r->nexts && !(enr.extension_number = malloc(r->nexts * sizeof *enr.extension_number))) rc = AMN_ENOMEM;
    for (size_t i = 0; !rc && i < r->nexts; i++)
      if (strcmp(r->exts[i].extendee, type) == 0) enr.extension_number[enr.n_extension_number++] = r->exts[i].number;
    resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    resp.all_extension_numbers_response = &enr;
    break;
  }
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
    if (nservices && (!(svc = calloc(nservices, sizeof *svc)) || !(svcp = calloc(nservices, sizeof *svcp)))) {
      rc = AMN_ENOMEM;
      break;
    }
    for (size_t i = 0; i < nservices; i++) {
      grpc__reflection__v1__service_response__init(&svc[i]);
      svc[i].name = (char *)services[i];
      svcp[i] = &svc[i];
    }
    lsr.n_service = nservices;
    lsr.service = svcp;
    resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp.list_services_response = &lsr;
    break;
  default:
    er.error_code = AMN_STATUS_INVALID_ARGUMENT;
    er.error_message = "no message_request in the ServerReflectionRequest";
    resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp.error_response = &er;
    break;
  }
  if (!rc && resp.message_response_case == GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET) {
    if (file >= 0) {
      rc = file_closure(r, (size_t)file, &fdr.file_descriptor_proto, &fdr.n_file_descriptor_proto);
      resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
      resp.file_descriptor_response = &fdr;
    } else {
      er.error_code = AMN_STATUS_NOT_FOUND;
      er.error_message = msg;
      resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
      resp.error_response = &er;
    }
  }
  if (!rc) {
    size_t n = grpc__reflection__v1__server_reflection_response__get_packed_size(&resp);
    *out = malloc(n ? n : 1);
    if (!*out) rc = AMN_ENOMEM;
    else *outlen = grpc__reflection__v1__server_reflection_response__pack(&resp, *out);
  }
  free(fdr.file_descriptor_proto);
  free(enr.extension_number);
  free(svc);
  free(svcp);
  grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
  return rc;
}
