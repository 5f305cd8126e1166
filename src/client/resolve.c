/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The client's asynchronous resolver: c-ares on a libev loop (resolve.h). */
#include "client/resolve.h"

#include <arpa/inet.h>
#include <ares.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

/* One socket of c-ares, watched on the loop. */
typedef struct rwatch {
  ev_io io;
  struct amn_resolver *r;
  struct rwatch *next;
} rwatch;

/* One lookup; its result waits in `ready` when c-ares answered at once. */
typedef struct rquery {
  struct amn_resolver *r;
  amn_resolve_cb cb;
  void *ud;
  bool ok;
  amn_resolve_answer ans;
  char why[128];
  struct rquery *next;
} rquery;

struct amn_resolver {
  struct ev_loop *ev;
  ares_channel ch;
  rwatch *watches;
  ev_timer timer;         /* c-ares' next timeout */
  ev_timer defer;         /* delivers the answers c-ares gave at once */
  rquery *ready;          /* ... those answers */
  bool in_query;          /* within ares_getaddrinfo */
  bool destroying;
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;
static void lib_init(void) { lib_rc = ares_library_init(ARES_LIB_INIT_ALL); }

static void rearm(amn_resolver *r) {
  struct timeval tv, *t = ares_timeout(r->ch, NULL, &tv);
  ev_timer_stop(r->ev, &r->timer);
  if (!t) return;
  double s = (double)t->tv_sec + (double)t->tv_usec / 1e6;
  ev_timer_set(&r->timer, s > 0 ? s : 0.0, 0.);
  ev_timer_start(r->ev, &r->timer);
}

static void io_cb(struct ev_loop *ev, ev_io *w, int revents) {
  (void)ev;
  rwatch *x = (rwatch *)w;
  amn_resolver *r = x->r;
  int fd = w->fd;
  ares_process_fd(r->ch, (revents & EV_READ) ? fd : ARES_SOCKET_BAD, (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
  rearm(r);
}

static void timer_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_resolver *r = w->data;
  ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  rearm(r);
}

/* c-ares opens, closes or changes the interest of a socket. */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable) {
  amn_resolver *r = data;
  rwatch **pp = &r->watches, *x;
  while ((x = *pp) != NULL && x->io.fd != fd) pp = &x->next;
  if (!readable && !writable) {
    if (x) {
      ev_io_stop(r->ev, &x->io);
      *pp = x->next;
      free(x);
    }
    return;
  }
  if (!x) {
    if (!(x = calloc(1, sizeof *x))) return; /* c-ares times the lookup out */
    x->r = r;
    x->next = r->watches;
    r->watches = x;
    ev_init(&x->io, io_cb);
  } else {
    ev_io_stop(r->ev, &x->io);
  }
  ev_io_set(&x->io, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
  ev_io_start(r->ev, &x->io);
}

static void deliver(rquery *q) {
  q->cb(q->ud, q->ok ? &q->ans : NULL, q->why);
  free(q);
}

static void defer_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_resolver *r = w->data;
  while (r->ready && !r->destroying) {
    rquery *q = r->ready;
    r->ready = q->next;
    deliver(q);
  }
}

static void answer(amn_resolve_answer *a, const struct ares_addrinfo *ai) {
  a->n = 0;
  a->ttl_s = UINT32_MAX;
  for (const struct ares_addrinfo_node *nd = ai ? ai->nodes : NULL; nd && a->n < AMN_RESOLVE_MAX_ADDRS;
       nd = nd->ai_next) {
    char h[INET6_ADDRSTRLEN];
    const void *p = nd->ai_family == AF_INET ? (const void *)&((const struct sockaddr_in *)nd->ai_addr)->sin_addr
                    : nd->ai_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)nd->ai_addr)->sin6_addr
                                                : NULL;
    if (!p || !inet_ntop(nd->ai_family, p, h, sizeof h)) continue;
    bool seen = false;
    for (size_t k = 0; k < a->n && !seen; k++) seen = strcmp(a->addr[k], h) == 0;
    if (seen) continue;
    memcpy(a->addr[a->n++], h, sizeof h);
    uint32_t ttl = nd->ai_ttl > 0 ? (uint32_t)nd->ai_ttl : 0;
    if (ttl < a->ttl_s) a->ttl_s = ttl;
  }
  if (!a->n) a->ttl_s = 0;
}

static void gai_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai) {
  (void)timeouts;
  rquery *q = arg;
  amn_resolver *r = q->r;
  if (r->destroying || status == ARES_EDESTRUCTION) {
    if (ai) ares_freeaddrinfo(ai);
    free(q);
    return;
  }
  if (status == ARES_SUCCESS) answer(&q->ans, ai);
  if (ai) ares_freeaddrinfo(ai);
  q->ok = status == ARES_SUCCESS && q->ans.n > 0;
  snprintf(q->why, sizeof q->why, "%s", status != ARES_SUCCESS ? ares_strerror(status) : q->ok ? "" : "no address");
  if (r->in_query) { /* answered at once (hosts file, bad name): delivered from the loop */
    q->next = NULL;
    rquery **pp = &r->ready;
    while (*pp) pp = &(*pp)->next;
    *pp = q;
    ev_timer_stop(r->ev, &r->defer);
    ev_timer_set(&r->defer, 0., 0.);
    ev_timer_start(r->ev, &r->defer);
    return;
  }
  deliver(q);
}

int amn_resolver_new(amn_resolver **out, struct ev_loop *ev, const char *servers, uint32_t timeout_ms, char *err,
                     size_t errlen) {
  pthread_once(&lib_once, lib_init);
  if (lib_rc != ARES_SUCCESS) return amn_set_err(err, errlen, AMN_ENOMEM, "c-ares: %s", ares_strerror(lib_rc));
  amn_resolver *r = calloc(1, sizeof *r);
  if (!r) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  r->ev = ev;
  struct ares_options o;
  memset(&o, 0, sizeof o);
  o.sock_state_cb = sock_state_cb;
  o.sock_state_cb_data = r;
  o.timeout = (int)(timeout_ms ? timeout_ms : 2000);
  o.tries = 2;
  int rc = ares_init_options(&r->ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
  if (rc != ARES_SUCCESS) {
    free(r);
    return amn_set_err(err, errlen, rc == ARES_ENOMEM ? AMN_ENOMEM : AMN_EINVAL, "c-ares: %s", ares_strerror(rc));
  }
  if (servers && *servers && (rc = ares_set_servers_ports_csv(r->ch, servers)) != ARES_SUCCESS) {
    ares_destroy(r->ch);
    free(r);
    return amn_set_err(err, errlen, AMN_EINVAL, "DNS servers '%s': %s (expected IP[:PORT],...)", servers,
                       ares_strerror(rc));
  }
  ev_init(&r->timer, timer_cb);
  r->timer.data = r;
  ev_init(&r->defer, defer_cb);
  r->defer.data = r;
  *out = r;
  return 0;
}

int amn_resolver_query(amn_resolver *r, const char *name, amn_resolve_cb cb, void *ud) {
  rquery *q = calloc(1, sizeof *q);
  if (!q) return AMN_ENOMEM;
  q->r = r;
  q->cb = cb;
  q->ud = ud;
  struct ares_addrinfo_hints h;
  memset(&h, 0, sizeof h);
  h.ai_family = AF_UNSPEC;
  h.ai_socktype = SOCK_STREAM;
  h.ai_flags = ARES_AI_ENVHOSTS; /* the file CARES_HOSTS names, if set, instead of /etc/hosts */
  r->in_query = true;
  ares_getaddrinfo(r->ch, name, NULL, &h, gai_cb, q);
  r->in_query = false;
  rearm(r);
  return 0;
}

void amn_resolver_free(amn_resolver *r) {
  if (!r) return;
  r->destroying = true;
  ev_timer_stop(r->ev, &r->timer);
  ev_timer_stop(r->ev, &r->defer);
  ares_destroy(r->ch); /* lookups in flight end (ARES_EDESTRUCTION: freed, not delivered) */
  while (r->ready) {
    rquery *q = r->ready;
    r->ready = q->next;
    free(q);
  }
  while (r->watches) {
    rwatch *x = r->watches;
    r->watches = x->next;
    ev_io_stop(r->ev, &x->io);
    free(x);
  }
  free(r);
}
