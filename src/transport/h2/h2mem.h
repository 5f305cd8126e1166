/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the allocator of the HTTP/2 bindings' nghttp2 sessions.
 *
 * nghttp2 allocates a few large blocks per session up front (its 16 KiB
 * outbound frame buffer, its 4 KiB stream table) that an idle connection
 * mostly never touches. From the C heap such a block lands on memory that
 * earlier work (handshakes, calls) already made resident, so every idle
 * connection pays for all of it. Here a block of a page or more gets its
 * own anonymous mapping: only the pages the session writes become
 * resident. Smaller blocks come from malloc. Every block carries a 16-byte
 * header (its size and origin). A mapping that fails falls back to malloc.
 * Thread-safe (no state); set up once (amn_h2_mem).
 */
#ifndef AMN_H2MEM_H
#define AMN_H2MEM_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>

/* Blocks of at least this many bytes (header included) get their own mapping. */
#define AMN_H2MEM_MAP_MIN 4096

/* The allocator to give nghttp2_session_*_new3. Never NULL; static storage. */
nghttp2_mem *amn_h2_mem(void);

/* Whether the block p (from amn_h2_mem) has its own mapping: for tests. */
int amn_h2_mem_is_mapped(const void *p);

#endif
