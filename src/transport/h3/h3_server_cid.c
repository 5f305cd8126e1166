/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * HTTP/3 transport, server side: connection IDs. The IDs we issue, the
 * table that finds a connection by the destination ID of a datagram, and
 * the kernel's steering of datagrams to the loop that issued their ID.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <linux/filter.h>
#include <stdlib.h>
#include <string.h>

#include "transport/h3/h3_server_int.h"
#include "util/log.h"

/* A connection ID that routes datagrams to a connection. */
struct h3_cid {
  h3_cid *next;                 /* hash bucket */
  h3_cid *cnext;                /* the connection's IDs */
  h3_sconn *sc;
  uint8_t len;
  uint8_t id[NGTCP2_MAX_CIDLEN];
};

/* ------------------------------------------------------------------ */
/* Which loop gets a datagram                                         */
/* ------------------------------------------------------------------ */

/* The kernel spreads datagrams over the loops' sockets by a hash of the
 * client's address (SO_REUSEPORT), which breaks when the client's address
 * changes (migration, NAT rebinding) and while the socket group is still
 * being bound (a server starting: the same client's datagrams hash to
 * another socket once the next one joins): its packets would reach a loop
 * that does not know the connection. So the first byte of every
 * connection ID we issue is our loop's index, and a classic BPF program on
 * the socket group sends every packet by the first byte of its
 * destination connection ID, modulo the number of loops: short-header
 * ones to the loop that issued it; long-header ones (handshake) too, and
 * a client's first Initials, whose destination ID it chose itself, all to
 * one loop, which then issues an ID of its own index. A long header
 * without a destination ID keeps the address hash (an index out of range
 * makes the kernel fall back to it). */
int amn_h3s_cid_make(amn_h3_listener *l, uint8_t *id, size_t len) {
  if (gnutls_rnd(GNUTLS_RND_NONCE, id, len) != 0) return -1;
  id[0] = (uint8_t)l->loop->idx;
  return 0;
}

void amn_h3s_cid_steer(amn_h3_listener *l, unsigned nsocks) {
  if (nsocks < 2 || nsocks > 256) return; /* one byte of the ID holds the index */
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),               /* first byte */
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x80, 3, 0),    /* long header: below */
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 1),               /* short: first byte of the destination ID */
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, nsocks),
      BPF_STMT(BPF_RET | BPF_A, 0),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 5),               /* long: destination ID length */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 0),        /* none: to the hash */
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),               /* its first byte */
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, nsocks),
      BPF_STMT(BPF_RET | BPF_A, 0),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
  };
  struct sock_fprog prog = {sizeof code / sizeof code[0], code};
  if (setsockopt(l->fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0)
    AMN_WARN("HTTP/3: cannot steer datagrams by connection ID (%s): clients that change address may lose their "
             "connection with %u event loops",
             strerror(errno), nsocks);
}

/* ------------------------------------------------------------------ */
/* Connection ID table                                                */
/* ------------------------------------------------------------------ */

static size_t cid_hash(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return (size_t)(h ^ (h >> 29));
}

static int cid_grow(amn_h3_listener *l) {
  size_t nsz = l->tabsz ? l->tabsz * 2 : 64;
  h3_cid **nt = calloc(nsz, sizeof *nt);
  if (!nt) return -1;
  for (size_t i = 0; i < l->tabsz; i++)
    while (l->tab[i]) {
      h3_cid *n = l->tab[i];
      l->tab[i] = n->next;
      size_t h = cid_hash(n->id, n->len) & (nsz - 1);
      n->next = nt[h];
      nt[h] = n;
    }
  free(l->tab);
  l->tab = nt;
  l->tabsz = nsz;
  return 0;
}

int amn_h3s_cid_table_init(amn_h3_listener *l) { return cid_grow(l); }

void amn_h3s_cid_table_free(amn_h3_listener *l) {
  free(l->tab);
  l->tab = NULL;
  l->tabsz = l->ncid = 0;
}

int amn_h3s_cid_add(amn_h3_listener *l, h3_sconn *sc, const uint8_t *id, size_t len) {
  if (len > NGTCP2_MAX_CIDLEN || (l->ncid >= l->tabsz && cid_grow(l) != 0)) return -1;
  h3_cid *n = malloc(sizeof *n);
  if (!n) return -1;
  n->sc = sc;
  n->len = (uint8_t)len;
  memcpy(n->id, id, len);
  size_t h = cid_hash(id, len) & (l->tabsz - 1);
  n->next = l->tab[h];
  l->tab[h] = n;
  n->cnext = sc->cids;
  sc->cids = n;
  l->ncid++;
  return 0;
}

static h3_cid **cid_slot(amn_h3_listener *l, const uint8_t *id, size_t len) {
  if (!l->tabsz) return NULL;
  for (h3_cid **p = &l->tab[cid_hash(id, len) & (l->tabsz - 1)]; *p; p = &(*p)->next)
    if ((*p)->len == len && memcmp((*p)->id, id, len) == 0) return p;
  return NULL;
}

h3_sconn *amn_h3s_cid_find(amn_h3_listener *l, const uint8_t *id, size_t len) {
  h3_cid **p = cid_slot(l, id, len);
  return p ? (*p)->sc : NULL;
}

void amn_h3s_cid_del(amn_h3_listener *l, const uint8_t *id, size_t len) {
  h3_cid **p = cid_slot(l, id, len);
  if (!p) return;
  h3_cid *n = *p;
  *p = n->next;
  for (h3_cid **c = &n->sc->cids; *c; c = &(*c)->cnext)
    if (*c == n) {
      *c = n->cnext;
      break;
    }
  l->ncid--;
  free(n);
}

void amn_h3s_cid_del_conn(amn_h3_listener *l, h3_sconn *sc) {
  while (sc->cids) {
    h3_cid *n = sc->cids;
    sc->cids = n->cnext;
    for (h3_cid **p = &l->tab[cid_hash(n->id, n->len) & (l->tabsz - 1)]; *p; p = &(*p)->next)
      if (*p == n) {
        *p = n->next;
        break;
      }
    l->ncid--;
    free(n);
  }
}
