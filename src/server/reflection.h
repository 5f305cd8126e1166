/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Server reflection (grpc.reflection.v1 and v1alpha), the part without I/O:
 * an index of the descriptors embedded at build time (a serialized
 * FileDescriptorSet of amaters.proto, health.proto and the reflection
 * .proto files) and the answer to one ServerReflectionRequest. reflection.c
 * serves it on the bidirectional stream ServerReflectionInfo.
 */
#ifndef AMN_SERVER_REFLECTION_H
#define AMN_SERVER_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

typedef struct amn_refl amn_refl;

/* Indexes a serialized FileDescriptorSet (`set` must outlive the index: the
 * files' bytes are answered from it). Returns 0, AMN_EINVAL if the set is
 * malformed, or AMN_ENOMEM. */
int amn_refl_new(amn_refl **out, const uint8_t *set, size_t len);
/* The index of the descriptors built into the library. */
int amn_refl_new_builtin(amn_refl **out);
void amn_refl_free(amn_refl *r);

/* Answers one serialized ServerReflectionRequest `req` (peer input) with a
 * serialized ServerReflectionResponse in *out (malloc'd, the caller frees
 * it). `services` are the fully qualified names answered to list_services.
 * The response echoes the request (original_request) and its host
 * (valid_host); a file is answered with all the files it depends on,
 * transitively, the file itself first; a symbol, file or extension that is
 * not known is answered with an error_response NOT_FOUND, a request with no
 * message_request with INVALID_ARGUMENT. Returns 0, AMN_EINVAL if `req` is
 * not a ServerReflectionRequest, or AMN_ENOMEM. */
int amn_refl_answer(const amn_refl *r, const char *const *services, size_t nservices, const uint8_t *req,
                    size_t len, uint8_t **out, size_t *outlen);

#endif
