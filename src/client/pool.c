/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Client connection pool: one endpoint per URL, its connections held
 * through the transport vtable (open / max_streams / close, and the
 * connection callbacks of transport/ctransport.h, whose owner is a slot),
 * load balancing of pending calls, growth up to the
 * server's stream limit, idle reaping down to the minimum, and ejection of
 * failing endpoints with a jittered, capped exponential backoff.
 *
 * Transport auto: an endpoint whose transport is not known yet races
 * HTTP/3 against HTTP/2 in the happy-eyeballs style. The QUIC attempt
 * starts first; TCP starts when QUIC has not become ready within
 * AMN_POOL_H3_HEAD_START (or at once when QUIC fails, e.g. ICMP port
 * unreachable). The first ready connection wins, the other attempt is
 * dropped, and the endpoint keeps the winner's transport until a
 * connection attempt over it fails; then the next attempt races again.
 * I/O thread only; the counters read by amn_client_stats also take stats_mu.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "client/client_internal.h"
#include "client/policy.h"
#include "util/log.h"

#define MAX_ENDPOINTS 64 /* URLs */
#define MAX_EP_ENTRIES 256 /* endpoints, removed ones included (spread_addresses) */
#define AMN_DNS_TRY_MS 2000 /* a DNS server's time to answer (2 tries per server) */
#define AMN_POOL_H3_HEAD_START 0.25 /* seconds QUIC has before TCP joins the race (auto) */

/* The pool's clock: the loop's time, or the one a unit test sets. */
static double pool_now(amn_client *cl) { return cl->now ? cl->now(cl) : ev_now(cl->ev); }

static uint64_t rnd(amn_client *cl) { return amn_policy_rand(&cl->rng); }

#define LOCK(cl) pthread_mutex_lock(&(cl)->stats_mu)
#define UNLOCK(cl) pthread_mutex_unlock(&(cl)->stats_mu)

static void retry_cb(struct ev_loop *ev, ev_timer *w, int revents);
static void race_cb(struct ev_loop *ev, ev_timer *w, int revents);
static void idle_cb(struct ev_loop *ev, ev_idle *w, int revents) {
  (void)revents;
  ev_idle_stop(ev, w);
  amn_client *cl = w->data;
  if (cl->pool_dirty) amn_pool_maintain(cl);
}

#define AMN_POOL_MAX_CONNECTING 128

void amn_pool_mark(amn_client *cl) {
  if ((!cl->neps && !cl->ntgts) || atomic_load(&cl->stopping)) return;
  cl->pool_dirty = true;
  if (!ev_is_active(&cl->pool_idle)) ev_idle_start(cl->ev, &cl->pool_idle);
}
static void reap_cb(struct ev_loop *ev, ev_timer *w, int revents);

static void endpoint_timers(amn_pool_endpoint *ep);
static int pool_common_init(amn_client *cl);
static bool anything_usable(amn_client *cl);
static void dns_maybe(amn_pool_target *t);

static bool is_literal(const char *host) {
  unsigned char b[16];
  return inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1;
}

static void refresh_cb(struct ev_loop *ev, ev_timer *w, int revents);

int amn_pool_init(amn_client *cl, const char *const *urls, size_t n, char *err, size_t errlen) {
  if (n > MAX_ENDPOINTS) return amn_set_err(err, errlen, AMN_EINVAL, "at most %d URLs", MAX_ENDPOINTS);
  cl->eps = calloc(MAX_EP_ENTRIES, sizeof *cl->eps);
  cl->tgts = calloc(n ? n : 1, sizeof *cl->tgts);
  if (!cl->eps || !cl->tgts) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    amn_pool_endpoint tmp = {0}, *ep = &tmp;
    bool tls = false;
    int rc = amn_client_parse_url(urls[i], &tls, ep->t.host, sizeof ep->t.host, &ep->t.port, ep->t.authority,
                                  sizeof ep->t.authority, err, errlen);
    if (rc) return rc;
    if (tls != cl->tls_on)
      return amn_set_err(err, errlen, AMN_EINVAL, "URL '%s': all URLs must use the same scheme as '%s'", urls[i],
                         urls[0]);
    snprintf(ep->t.sni, sizeof ep->t.sni, "%.255s", ep->t.host);
    if (!is_literal(ep->t.host)) { /* a name: looked up on the loop (amn_pool_start) */
      amn_pool_target *t = &cl->tgts[cl->ntgts++];
      t->cl = cl;
      if (!(t->url_own = strdup(urls[i]))) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
      t->url = t->url_own;
      snprintf(t->host, sizeof t->host, "%.255s", ep->t.host);
      snprintf(t->authority, sizeof t->authority, "%.299s", ep->t.authority);
      t->port = ep->t.port;
      t->last_start = -1;
      ev_timer_init(&t->refresh, refresh_cb, 0., 0.);
      t->refresh.data = t;
      if (cl->o.spread_addresses) continue; /* its endpoints come with the answers */
      ep->tgt = t;
      t->one = &cl->eps[cl->neps];
    }
    amn_pool_endpoint *e = &cl->eps[cl->neps++];
    *e = *ep;
    e->cl = cl;
    if (!(e->url = strdup(urls[i]))) return amn_set_err(err, errlen, AMN_ENOMEM, "out of memory");
    endpoint_timers(e);
  }
  return pool_common_init(cl);
}

static void endpoint_timers(amn_pool_endpoint *ep) {
  ev_timer_init(&ep->retry, retry_cb, 0., 0.);
  ep->retry.data = ep;
  ev_timer_init(&ep->race, race_cb, AMN_POOL_H3_HEAD_START, 0.);
  ep->race.data = ep;
  ep->tp = ep->cl->tp; /* NULL with auto: raced */
}

static const amn_ct_conn_cbs conn_cbs;
static const amn_pool_hooks hooks;

static int pool_common_init(amn_client *cl) {
  cl->ct.conn_cbs = &conn_cbs;
  cl->pool = &hooks;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  cl->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)cl ^ 0x9e3779b97f4a7c15ull;
  if (!cl->rng) cl->rng = 1;
  cl->retry_tokens = AMN_RETRY_TOKENS_MAX;
  double iv = cl->o.idle_timeout_ms / 4000.0;
  ev_timer_init(&cl->pool_timer, reap_cb, 0., iv < 0.05 ? 0.05 : iv > 1 ? 1 : iv);
  cl->pool_timer.data = cl;
  ev_idle_init(&cl->pool_idle, idle_cb);
  cl->pool_idle.data = cl;
  return 0;
}

void amn_pool_free(amn_client *cl) {
  for (size_t i = 0; i < cl->neps; i++) {
    amn_pool_endpoint *ep = &cl->eps[i];
    /* connections that could not finish closing when the loop ended */
    ep->cursor = NULL;
    while (ep->slots) {
      amn_pool_slot *s = ep->slots;
      ep->slots = s->next;
      free(s);
    }
    free(ep->url);
  }
  free(cl->eps);
  cl->eps = NULL;
  cl->neps = 0;
  for (size_t i = 0; i < cl->ntgts; i++) free(cl->tgts[i].url_own);
  free(cl->tgts);
  cl->tgts = NULL;
  cl->ntgts = 0;
}

static bool has_capacity(const amn_pool_slot *s) {
  return s->st == AMN_SLOT_READY && !s->ep->removed && !s->probing && s->inflight < s->tp->max_streams(s->conn);
}

/* The least busy connection of `ep` that takes one more call, or NULL. */
/* The least loaded connection with room among the next few after the
 * cursor (a bounded scan: O(1) per call even with thousands of
 * connections); the whole list only when none of those has room. */
#define SLOT_SCAN 8
static amn_pool_slot *best_slot(amn_pool_endpoint *ep) {
  amn_pool_slot *best = NULL, *s = ep->cursor ? ep->cursor : ep->slots;
  size_t seen = 0;
  for (; s && seen < SLOT_SCAN; seen++) {
    if (has_capacity(s) && (!best || s->inflight < best->inflight)) best = s;
    s = s->next ? s->next : (ep->slots != ep->cursor ? ep->slots : NULL);
    if (s == ep->cursor) break; /* wrapped around a short list */
  }
  if (!best)
    for (s = ep->slots; s; s = s->next)
      if (has_capacity(s) && (!best || s->inflight < best->inflight)) best = s;
  ep->cursor = best && best->next ? best->next : NULL;
  return best;
}

static amn_pool_slot *pick(amn_client *cl) {
  if (cl->o.lb_policy == AMN_LB_ROUND_ROBIN) {
    for (size_t k = 0; k < cl->neps; k++) {
      size_t i = (cl->rr + k) % cl->neps;
      amn_pool_slot *s = best_slot(&cl->eps[i]);
      if (s) {
        cl->rr = (unsigned)((i + 1) % cl->neps);
        return s;
      }
    }
    return NULL;
  }
  /* power of two choices: of two random endpoints that can take the call,
   * the one with fewer calls in flight */
  amn_pool_slot *cand[MAX_EP_ENTRIES];
  size_t n = 0;
  for (size_t i = 0; i < cl->neps; i++) {
    amn_pool_slot *s = best_slot(&cl->eps[i]);
    if (s) cand[n++] = s;
  }
  if (n <= 1) return n ? cand[0] : NULL;
  uint32_t loads[MAX_EP_ENTRIES];
  for (size_t i = 0; i < n; i++) loads[i] = cand[i]->ep->inflight;
  uint64_t r1 = rnd(cl), r2 = rnd(cl);
  return cand[amn_policy_p2c(loads, n, r1, r2)];
}

static bool slot_open_tp(amn_pool_endpoint *ep, const amn_ctransport *tp) {
  amn_client *cl = ep->cl;
  if (ep->removed) return false;
  if (ep->tgt && ep->tgt->one == ep) { /* the URL's endpoint: the name's address in turn */
    if (!ep->tgt->naddrs) return false;  /* no answer yet */
    snprintf(ep->t.host, sizeof ep->t.host, "%s", ep->tgt->addrs[ep->acur % ep->tgt->naddrs]);
  }
  ep->last_open = pool_now(cl);
  amn_pool_slot *s = calloc(1, sizeof *s);
  if (!s) return false;
  snprintf(s->addr, sizeof s->addr, "%.45s", ep->t.host);
  s->ep = ep;
  s->tp = tp;
  s->st = AMN_SLOT_CONNECTING;
  s->next = ep->slots;
  ep->slots = s;
  LOCK(cl);
  ep->nconnecting++;
  UNLOCK(cl);
  AMN_DEBUG("pool: connecting to %s over %s (%u ready, %u connecting)", ep->t.authority, tp->name, ep->nready,
            ep->nconnecting);
  tp->open(&cl->ct, &ep->t, s, &s->conn); /* may report slot_closed (and free s) before returning */
  return true;
}

/* A new connection to ep: over its transport, or (auto, not known yet) a
 * race that QUIC starts. */
static bool slot_open(amn_pool_endpoint *ep) {
  if (ep->tp) return slot_open_tp(ep, ep->tp);
  amn_client *cl = ep->cl;
  if (ep->removed || (ep->tgt && ep->tgt->one == ep && !ep->tgt->naddrs)) return false;
  ep->racing = true;
  ep->race_h2 = false;
  ev_timer_stop(cl->ev, &ep->race);
  ev_timer_set(&ep->race, AMN_POOL_H3_HEAD_START, 0.);
  ev_timer_start(cl->ev, &ep->race);
  return slot_open_tp(ep, &amn_h3c_transport); /* a failure at once starts TCP (slot_closed) */
}

/* HTTP/3 had its head start: TCP joins the race. */
static void race_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_pool_endpoint *ep = w->data;
  if (atomic_load(&ep->cl->stopping) || !ep->racing || ep->tp) return;
  AMN_DEBUG("pool: %s: no QUIC handshake within %.0f ms: trying HTTP/2 as well", ep->t.authority,
            AMN_POOL_H3_HEAD_START * 1000);
  if (!ep->race_h2) {
    ep->race_h2 = true;
    slot_open_tp(ep, &amn_h2c_transport);
  }
}

static void eject(amn_pool_endpoint *ep, const char *why) {
  amn_client *cl = ep->cl;
  LOCK(cl);
  ep->fails++;
  ep->ejected = true;
  ep->connect_failures++;
  snprintf(ep->last_error, sizeof ep->last_error, "%s", why);
  UNLOCK(cl);
  double d = amn_policy_backoff_s(ep->fails, cl->o.backoff_base_ms / 1000.0, cl->o.backoff_max_ms / 1000.0, rnd(cl));
  ep->retry_at = pool_now(cl) + d;
  ev_timer_stop(cl->ev, &ep->retry);
  ev_timer_set(&ep->retry, d, 0.);
  ev_timer_start(cl->ev, &ep->retry);
  AMN_WARN("pool: %s failed (%s); retrying it in %.0f ms", ep->url, why, d * 1000);
  dns_maybe(ep->tgt); /* its name may have moved */
}

static void slot_drain(amn_pool_slot *s);

static void retry_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_pool_endpoint *ep = w->data;
  if (atomic_load(&ep->cl->stopping) || ep->removed || ep->nconnecting || ep->nready) return;
  /* (auto: a transport that failed was forgotten: this attempt races) */
  slot_open(ep); /* the endpoint stays ejected until this connection is ready */
}

static bool anything_usable(amn_client *cl) {
  for (size_t i = 0; i < cl->neps; i++)
    if (!cl->eps[i].removed && (cl->eps[i].nready || cl->eps[i].nconnecting)) return true;
  for (size_t i = 0; i < cl->ntgts; i++) /* a name's first answer is awaited */
    if (cl->tgts[i].resolving && !cl->tgts[i].naddrs) return true;
  return false;
}

/* The failure to report when no endpoint can take calls: the latest one. */
static void fail_reason(amn_client *cl, char *buf, size_t cap) {
  const amn_pool_endpoint *last = NULL;
  for (size_t i = 0; i < cl->neps; i++)
    if (!cl->eps[i].removed && cl->eps[i].last_error[0] && (!last || cl->eps[i].retry_at > last->retry_at))
      last = &cl->eps[i];
  const char *dns = NULL; /* a name without any address */
  for (size_t i = 0; i < cl->ntgts && !dns; i++)
    if (!cl->tgts[i].naddrs && cl->tgts[i].error[0]) dns = cl->tgts[i].error;
  if (dns && (!last || cl->neps + cl->ntgts == 1 || (cl->ntgts == 1 && !cl->o.spread_addresses && cl->neps == 1)))
    snprintf(buf, cap, "%s", dns);
  else if (!last) snprintf(buf, cap, "no server available");
  else if (cl->neps == 1) snprintf(buf, cap, "%s", last->last_error);
  else snprintf(buf, cap, "none of the %zu servers is available (last: %s)", cl->neps, last->last_error);
}

void amn_pool_maintain(amn_client *cl) {
  cl->pool_dirty = false;
  if (atomic_load(&cl->stopping)) return;
  /* 0. connections that got GOAWAY (or max_calls_per_connection calls) and
   * have no call left: closed (a server may keep them open after its
   * GOAWAY); a 0-RTT one once its handshake is confirmed, not before the
   * server completed it (its answers to early data may come first) */
  for (size_t i = 0; i < cl->neps; i++)
    for (amn_pool_slot *s = cl->eps[i].ndraining ? cl->eps[i].slots : NULL, *next; s; s = next) {
      next = s->next;
      if (s->st == AMN_SLOT_DRAINING && !s->inflight && !s->closing && !s->unconfirmed) {
        s->closing = true;
        bool spent = cl->o.max_calls_per_connection && s->calls >= cl->o.max_calls_per_connection;
        s->tp->close(s->conn, spent ? "max_calls_per_connection reached" : "drained after GOAWAY");
      }
    }
  /* 0b. connections whose health check failed: the endpoint stays out
   * (scanned only when a check failed: maintain runs after every call) */
  for (size_t i = 0; cl->probe_failed && i < cl->neps; i++)
    for (amn_pool_slot *s = cl->eps[i].slots, *next; s; s = next) {
      next = s->next;
      if (s->probe_failed && !s->closing) {
        s->closing = true;
        eject(s->ep, s->probe_why);
        s->tp->close(s->conn, s->probe_why);
      }
    }
  cl->probe_failed = false;
  /* 1. the minimum of connections per healthy endpoint, once in use */
  if (cl->pool_active)
    for (size_t i = 0; i < cl->neps; i++) {
      amn_pool_endpoint *ep = &cl->eps[i];
      if (ep->removed) continue;
      /* at most AMN_POOL_MAX_CONNECTING handshakes at once per endpoint: a
       * large minimum (thousands) must not become a handshake storm that
       * times itself out; each completed connection opens the next */
      while (!ep->ejected && ep->nready + ep->nconnecting < cl->o.pool_min_connections &&
             ep->nconnecting < AMN_POOL_MAX_CONNECTING)
        if (!slot_open(ep)) break;
    }
  /* 2. hand pending calls to connections */
  amn_client_call *c;
  amn_pool_slot *s;
  while (cl->pending && (s = pick(cl)) != NULL) {
    c = amn_client_pending_pop(cl);
    if (!c->done) {
      amn_pool_endpoint *ep = s->ep;
      c->slot = s;
      c->ep = ep;
      c->tp = s->tp;
      c->attempts++;
      s->inflight++;
      if (cl->o.max_calls_per_connection && ++s->calls >= cl->o.max_calls_per_connection)
        slot_drain(s); /* its last call: closed by step 0 once the calls ended */
      LOCK(cl);
      ep->inflight++;
      ep->calls_started++;
      UNLOCK(cl);
      amn_client_call_start(c, s->tp, s->conn); /* on failure the call fails (and is detached) */
    }
    amn_client_call_unref(c); /* the pending list's reference (the stream holds its own) */
  }
  if (!cl->pending) return;
  /* 3. calls wait: one more connection on each healthy endpoint that is full */
  for (size_t i = 0; i < cl->neps; i++) {
    amn_pool_endpoint *ep = &cl->eps[i];
    if (!ep->removed && !ep->ejected && !ep->nconnecting && ep->nready < cl->o.pool_max_connections &&
        !best_slot(ep))
      slot_open(ep);
  }
  /* 4. nothing will ever take them: fail them now rather than at their deadline */
  if (cl->pending && !anything_usable(cl)) {
    char why[300];
    fail_reason(cl, why, sizeof why);
    amn_client_fail_pending(cl, AMN_STATUS_UNAVAILABLE, why);
  }
}

void amn_pool_kick(amn_client *cl, bool force) {
  if (!cl->pool_active) {
    cl->pool_active = true;
    if (cl->o.idle_timeout_ms) ev_timer_again(cl->ev, &cl->pool_timer);
  }
  if (force && !anything_usable(cl)) {
    /* every endpoint is failing: a new call tries the one due soonest at
     * once, so that a lone server that is back is found without waiting for
     * its whole backoff; but not more often than once per backoff_base_ms,
     * or a client making calls against a dead server would open a
     * connection per call (the calls fail at once meanwhile) */
    bool healthy = false;
    amn_pool_endpoint *soon = NULL;
    for (size_t i = 0; i < cl->neps; i++) {
      amn_pool_endpoint *ep = &cl->eps[i];
      if (ep->removed || (ep->tgt && ep->tgt->one == ep && !ep->tgt->naddrs)) continue;
      healthy |= !ep->ejected;
      if (!soon || ep->retry_at < soon->retry_at) soon = ep;
    }
    for (size_t i = 0; i < cl->ntgts; i++) /* a name that did not resolve: once more (not too often) */
      if (!cl->tgts[i].naddrs) dns_maybe(&cl->tgts[i]);
    if (!healthy && soon && pool_now(cl) - soon->last_open >= cl->o.backoff_base_ms / 1000.0) slot_open(soon);
  }
  amn_pool_maintain(cl);
}

void amn_pool_connect(amn_client *cl) {
  if (!cl->pool_active) {
    cl->pool_active = true;
    if (cl->o.idle_timeout_ms) ev_timer_again(cl->ev, &cl->pool_timer);
  }
  bool ready = false;
  for (size_t i = 0; i < cl->neps; i++) {
    amn_pool_endpoint *ep = &cl->eps[i];
    if (ep->removed) continue;
    if (ep->nready) ready = true;
    else if (!ep->nconnecting) slot_open(ep); /* even an ejected one: asked for explicitly */
  }
  if (ready) {
    amn_client_notify_connect(cl, 0, NULL);
  } else if (!anything_usable(cl)) { /* every attempt failed at once */
    char why[300];
    fail_reason(cl, why, sizeof why);
    amn_client_notify_connect(cl, AMN_EIO, why);
  }
  amn_pool_mark(cl);
}

void amn_pool_close_all(amn_client *cl, const char *why) {
  amn_pool_stop_dns(cl);
  ev_timer_stop(cl->ev, &cl->pool_timer);
  ev_idle_stop(cl->ev, &cl->pool_idle);
  for (size_t i = 0; i < cl->neps; i++) {
    amn_pool_endpoint *ep = &cl->eps[i];
    ev_timer_stop(cl->ev, &ep->retry);
    ev_timer_stop(cl->ev, &ep->race);
    for (amn_pool_slot *s = ep->slots, *next; s; s = next) {
      next = s->next;
      s->closing = true;
      s->tp->close(s->conn, why);
    }
  }
}

/* Idle reaping: connections without calls for idle_timeout_ms, above the
 * endpoint's minimum, are closed (the least recently busy first). */
static void reap_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)revents;
  amn_client *cl = w->data;
  ev_tstamp now = pool_now(cl), idle = cl->o.idle_timeout_ms / 1000.0;
  for (size_t i = 0; i < cl->neps; i++) {
    amn_pool_endpoint *ep = &cl->eps[i];
    for (amn_pool_slot *s = ep->slots, *next; s; s = next) {
      next = s->next;
      if (ep->nready + ep->nconnecting <= cl->o.pool_min_connections) break;
      if (s->st != AMN_SLOT_READY || s->inflight || now - s->idle_since < idle - 0.001) continue;
      AMN_DEBUG("pool: closing a connection to %s idle for %u ms", ep->t.authority, cl->o.idle_timeout_ms);
      s->closing = true;
      s->tp->close(s->conn, "idle");
    }
  }
}

static void call_detach(amn_client_call *c, amn_status_code code) {
  amn_pool_endpoint *ep = c->ep;
  if (!ep) return;
  amn_client *cl = ep->cl;
  amn_pool_slot *s = c->slot;
  LOCK(cl);
  if (ep->inflight) ep->inflight--;
  if (code == AMN_STATUS_OK) ep->calls_ok++;
  else ep->calls_failed++;
  UNLOCK(cl);
  if (s && s->inflight && --s->inflight == 0) s->idle_since = pool_now(cl);
  c->slot = NULL;
  c->ep = NULL;
  amn_pool_mark(cl); /* room for a pending call */
}

/* The race is won by s: the endpoint keeps its transport, the other
 * attempts are dropped. */
static void race_won(amn_pool_slot *s) {
  amn_pool_endpoint *ep = s->ep;
  amn_client *cl = ep->cl;
  ep->racing = false;
  ev_timer_stop(cl->ev, &ep->race);
  LOCK(cl);
  ep->tp = s->tp;
  UNLOCK(cl);
  AMN_INFO("pool: %s speaks %s: using it%s", ep->t.authority, s->tp->name,
           s->tp == &amn_h2c_transport ? " (QUIC did not complete its handshake first)" : "");
  for (amn_pool_slot *o = ep->slots, *next; o; o = next) {
    next = o->next;
    if (o != s && o->tp != s->tp && o->st == AMN_SLOT_CONNECTING && !o->closing) {
      o->closing = true;
      o->tp->close(o->conn, "lost the race to the other transport"); /* may free o */
    }
  }
}

static void slot_confirmed(void *owner);

/* ---- the connection callbacks of the transports (owner: a slot) ---- */

static void slot_ready(void *owner, bool unconfirmed) {
  amn_pool_slot *s = owner;
  amn_pool_endpoint *ep = s->ep;
  amn_client *cl = ep->cl;
  s->unconfirmed = unconfirmed;
  if (!ep->tp && !s->unconfirmed) race_won(s);
  LOCK(cl);
  ep->nconnecting--;
  ep->nready++;
  UNLOCK(cl);
  s->st = AMN_SLOT_READY;
  s->idle_since = pool_now(cl);
  amn_pool_mark(cl);
  if (s->unconfirmed) { /* 0-RTT: takes calls, but the server is not proven there yet */
    if (cl->o.health_check && ep->ejected) s->probing = true; /* ... none before its health check */
    AMN_DEBUG("pool: sending 0-RTT calls to %s", ep->t.authority);
    return;
  }
  slot_confirmed(s);
}

/* The connection is established (and healthy): the endpoint is up. */
static void slot_back(amn_pool_slot *s) {
  amn_pool_endpoint *ep = s->ep;
  amn_client *cl = ep->cl;
  LOCK(cl);
  ep->connects++;
  ep->atried = 0;
  bool was_ejected = ep->ejected;
  ep->ejected = false;
  ep->fails = 0;
  UNLOCK(cl);
  ev_timer_stop(cl->ev, &ep->retry);
  if (was_ejected) AMN_INFO("pool: %s is back", ep->url);
  AMN_DEBUG("pool: connected to %s (%u ready)", ep->t.authority, ep->nready);
  amn_client_notify_connect(cl, 0, NULL);
  amn_pool_mark(cl);
}

/* health_check: the Check answer on a connection to an ejected endpoint
 * (the slot is alive: a transport completes its calls before it reports
 * the connection closed). */
static void probe_done(const amn_result *r, void *ud) {
  amn_pool_slot *s = ud;
  if (!s->probing) return;
  s->probing = false;
  amn_pool_endpoint *ep = s->ep;
  amn_client *cl = ep->cl;
  if (atomic_load(&cl->stopping)) return;
  if (amn_health_serving(r) == 1) {
    AMN_DEBUG("pool: %s answers its health check: SERVING", ep->t.authority);
    slot_back(s);
    return;
  }
  s->probe_failed = true; /* closed by amn_pool_maintain, unless the transport does it first */
  cl->probe_failed = true;
  if (r->code == AMN_STATUS_OK)
    snprintf(s->probe_why, sizeof s->probe_why, "health check: the server is not serving");
  else
    snprintf(s->probe_why, sizeof s->probe_why, "health check failed: %s: %s", amn_status_name(r->code),
             r->message ? r->message : "");
  amn_pool_mark(cl);
}

/* Sends grpc.health.v1.Health/Check on s; false if it could not. */
static bool probe_start(amn_pool_slot *s) {
  amn_client *cl = s->ep->cl;
  amn_client_call *c = amn_client_call_probe_new(cl, cl->o.connect_timeout_ms, probe_done, s);
  if (!c) return false;
  s->probing = true;
  c->tp = s->tp;
  c->attempts = 1;
  AMN_DEBUG("pool: health check of %s", s->ep->t.authority);
  amn_client_call_start(c, s->tp, s->conn); /* (not counted as a call of the endpoint) */
  return true;
}

static void slot_confirmed(void *owner) {
  amn_pool_slot *s = owner;
  amn_pool_endpoint *ep = s->ep;
  amn_client *cl = ep->cl;
  if (!ep->tp && s->unconfirmed) race_won(s); /* a 0-RTT connection wins once its handshake completed */
  s->unconfirmed = false;
  /* an endpoint that failed takes calls again once it says it serves */
  if (cl->o.health_check && ep->ejected) {
    if (probe_start(s)) return;
    s->probing = false;
  }
  slot_back(s);
}

/* A ready connection takes no new call any more (GOAWAY, or its address
 * left the DNS answer): it drains. */
static void slot_drain(amn_pool_slot *s) {
  amn_pool_endpoint *ep = s->ep;
  if (s->st != AMN_SLOT_READY) return;
  LOCK(ep->cl);
  ep->nready--;
  ep->ndraining++;
  UNLOCK(ep->cl);
  s->st = AMN_SLOT_DRAINING;
}

static void slot_goaway(void *owner, bool error, const char *why) {
  amn_pool_slot *s = owner;
  amn_pool_endpoint *ep = s->ep;
  amn_client *cl = ep->cl;
  slot_drain(s);
  /* a refusal (max_connections, too_many_pings...) counts as a failure of
   * the endpoint: no immediate reconnect to it */
  if (error && !s->closing) eject(ep, why);
  amn_pool_mark(cl); /* replace it if needed */
}

static void slot_closed(void *owner, const char *why, bool asked) {
  amn_pool_slot *s = owner;
  amn_pool_endpoint *ep = s->ep;
  amn_client *cl = ep->cl;
  if (asked) s->closing = true; /* not a failure of the server */
  bool stopping = atomic_load(&cl->stopping);
  if (ep->cursor == s) ep->cursor = NULL;
  for (amn_pool_slot **pp = &ep->slots; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  LOCK(cl);
  if (s->st == AMN_SLOT_CONNECTING) ep->nconnecting--;
  else if (s->st == AMN_SLOT_READY) ep->nready--;
  else ep->ndraining--;
  UNLOCK(cl);
  bool failed = (s->st == AMN_SLOT_CONNECTING || s->unconfirmed || s->probing || s->probe_failed) && !s->closing;
  const amn_ctransport *tp = s->tp;
  char addr[INET6_ADDRSTRLEN];
  memcpy(addr, s->addr, sizeof addr);
  free(s);
  if (failed && !stopping && cl->tp == NULL) { /* auto */
    if (ep->tp == tp) { /* the remembered transport fails: race again now */
      LOCK(cl);
      ep->tp = NULL;
      snprintf(ep->last_error, sizeof ep->last_error, "%s", why);
      UNLOCK(cl);
      AMN_INFO("pool: %s: %s failed (%s); racing HTTP/3 against HTTP/2 again", ep->t.authority, tp->name, why);
      slot_open(ep); /* the endpoint fails if both sides of this race do */
      amn_pool_mark(cl);
      return;
    } else if (!ep->tp && ep->racing) {
      /* one side of the race lost: the other goes on (HTTP/2 starts now
       * if it had not yet); the endpoint fails when both did */
      if (tp == &amn_h3c_transport && !ep->race_h2) {
        AMN_DEBUG("pool: %s: %s; trying HTTP/2", ep->t.authority, why);
        ev_timer_stop(cl->ev, &ep->race);
        ep->race_h2 = true;
        slot_open_tp(ep, &amn_h2c_transport);
        if (!ep->racing) { /* that attempt failed at once too: already reported */
          amn_pool_mark(cl);
          return;
        }
      }
      if (ep->nconnecting) {
        LOCK(cl);
        snprintf(ep->last_error, sizeof ep->last_error, "%s", why);
        UNLOCK(cl);
        amn_pool_mark(cl);
        return;
      }
      ep->racing = false;
    }
  }
  /* the URL's endpoint of a name: its next address at once, until each
   * one failed in a row (then the endpoint fails) */
  if (failed && !stopping && ep->tgt && ep->tgt->one == ep && ep->tgt->naddrs > 1 && !ep->removed) {
    ep->acur = (ep->acur + 1) % ep->tgt->naddrs;
    if (++ep->atried < ep->tgt->naddrs) {
      AMN_DEBUG("pool: %s: %s failed (%s): trying %s", ep->url, addr, why, ep->tgt->addrs[ep->acur]);
      slot_open(ep);
      amn_pool_mark(cl);
      return;
    }
    ep->atried = 0;
  }
  if (failed && !stopping) {
    eject(ep, why);
    if (!anything_usable(cl)) amn_client_notify_connect(cl, AMN_EIO, why);
  }
  if (!stopping) amn_pool_mark(cl);
}

/* too_many_pings: the PING interval doubles, as grpc clients do. */
static void slot_too_many_pings(void *owner) {
  amn_pool_slot *s = owner;
  amn_ct_client *tc = &s->ep->cl->ct;
  if (!tc->ka_interval_ms || tc->ka_interval_ms >= (1u << 30)) return;
  tc->ka_interval_ms *= 2;
  AMN_WARN("keepalive: %s says too_many_pings: PING interval raised to %u ms", s->ep->t.authority, tc->ka_interval_ms);
}

static const amn_ct_conn_cbs conn_cbs = {slot_ready, slot_confirmed, slot_goaway, slot_closed, slot_too_many_pings};
static const amn_pool_hooks hooks = {call_detach, amn_pool_mark};

void amn_client_notify_connect(amn_client *cl, int rc, const char *err) {
  pthread_mutex_lock(&cl->cmu);
  cl->connect_gen++;
  cl->connect_rc = rc;
  snprintf(cl->connect_err, sizeof cl->connect_err, "%s", err ? err : "");
  pthread_cond_broadcast(&cl->ccv);
  pthread_mutex_unlock(&cl->cmu);
}


int amn_client_parse_url(const char *url, bool *tls_on, char *host, size_t hcap, uint16_t *port, char *authority,
                         size_t acap, char *err, size_t errlen) {
  const char *rest;
  if (strncasecmp(url, "https://", 8) == 0) {
    rest = url + 8;
    *tls_on = true;
  } else if (strncasecmp(url, "http://", 7) == 0) {
    rest = url + 7;
    *tls_on = false;
  } else {
    return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s': expected https://HOST:PORT", url);
  }
  char hp[300];
  size_t n = strcspn(rest, "/");
  if (n == 0 || n >= sizeof hp) return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s': no host", url);
  memcpy(hp, rest, n);
  hp[n] = 0;
  bool has_port = hp[0] == '[' ? strstr(hp, "]:") != NULL : strchr(hp, ':') != NULL;
  if (has_port) {
    if (amn_split_hostport(hp, host, hcap, port) != 0 || *port == 0)
      return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s': bad host or port", url);
  } else {
    const char *h = hp;
    size_t hl = strlen(hp);
    if (hp[0] == '[') {
      if (hl < 3 || hp[hl - 1] != ']') return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s'", url);
      h = hp + 1;
      hl -= 2;
    }
    if (hl >= hcap) return amn_set_err(err, errlen, AMN_EINVAL, "invalid URL '%s'", url);
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = AMN_DEFAULT_PORT;
  }
  if (strchr(host, ':')) snprintf(authority, acap, "[%s]:%u", host, *port);
  else snprintf(authority, acap, "%s:%u", host, *port);
  return 0;
}


size_t amn_client_stats(amn_client *cl, amn_endpoint_stats *out, size_t cap, uint64_t *retries) {
  if (!cl) return 0;
  LOCK(cl);
  for (size_t i = 0; i < cl->neps && i < cap; i++) {
    const amn_pool_endpoint *ep = &cl->eps[i];
    amn_endpoint_stats *o = &out[i];
    memset(o, 0, sizeof *o);
    o->url = ep->url;
    o->state = ep->removed ? AMN_EP_REMOVED : ep->ejected ? AMN_EP_EJECTED : ep->nready ? AMN_EP_READY : ep->nconnecting ? AMN_EP_CONNECTING : AMN_EP_IDLE;
    o->connections = ep->nready;
    o->connecting = ep->nconnecting;
    o->draining = ep->ndraining;
    o->calls_in_flight = ep->inflight;
    o->calls_started = ep->calls_started;
    o->calls_ok = ep->calls_ok;
    o->calls_failed = ep->calls_failed;
    o->connects = ep->connects;
    o->connect_failures = ep->connect_failures;
    o->consecutive_failures = ep->fails;
    o->transport = ep->tp ? ep->tp->kind : 0;
    snprintf(o->last_error, sizeof o->last_error, "%s", ep->last_error);
  }
  if (retries) *retries = cl->retries;
  size_t n = cl->neps;
  UNLOCK(cl);
  return n;
}

/* ------------------------------------------------------------------ */
/* Names: lookups and the endpoints that follow their answers         */
/* ------------------------------------------------------------------ */

static void dns_lookup(amn_pool_target *t) {
  amn_client *cl = t->cl;
  if (!cl->res || t->resolving || atomic_load(&cl->stopping)) return;
  t->last_start = pool_now(cl);
  t->resolving = true;
  ev_timer_stop(cl->ev, &t->refresh);
  AMN_DEBUG("dns: looking up %s", t->host);
  if (amn_resolver_query(cl->res, t->host, amn_pool_dns_answer, t) != 0) {
    t->resolving = false;
    ev_timer_set(&t->refresh, cl->o.dns_refresh_min_ms / 1000.0, 0.);
    ev_timer_start(cl->ev, &t->refresh);
  }
}

/* A connection failure, or a call that finds nothing to connect to: the
 * name is looked up again unless that was done very recently. */
static void dns_maybe(amn_pool_target *t) {
  if (t && amn_policy_dns_now(pool_now(t->cl), t->last_start, t->cl->o.dns_refresh_min_ms, t->resolving))
    dns_lookup(t);
}

static void refresh_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  dns_lookup(w->data);
}

int amn_pool_start(amn_client *cl, char *err, size_t errlen) {
  if (!cl->ntgts) return 0;
  int rc = amn_resolver_new(&cl->res, cl->ev, cl->o.dns_servers, AMN_DNS_TRY_MS, err, errlen);
  if (rc) return rc;
  for (size_t i = 0; i < cl->ntgts; i++) dns_lookup(&cl->tgts[i]);
  return 0;
}

void amn_pool_stop_dns(amn_client *cl) {
  for (size_t i = 0; i < cl->ntgts; i++) {
    ev_timer_stop(cl->ev, &cl->tgts[i].refresh);
    cl->tgts[i].resolving = false;
  }
  amn_resolver_free(cl->res);
  cl->res = NULL;
}

/* A slot of a name's endpoint whose address left the answer: it takes no
 * new call and closes once its calls are done (a connection attempt is
 * dropped); not a failure of the endpoint. */
static void slot_retire(amn_pool_slot *s) {
  if (s->closing) return;
  if (s->st == AMN_SLOT_CONNECTING) {
    s->closing = true;
    s->tp->close(s->conn, "its address left the DNS answer"); /* may free s */
    return;
  }
  slot_drain(s);
}

static void retire_slots(amn_pool_endpoint *ep, const char *addr) {
  for (amn_pool_slot *s = ep->slots, *next; s; s = next) {
    next = s->next;
    if (!addr || strcmp(s->addr, addr) == 0) slot_retire(s);
  }
}

/* spread_addresses: the endpoint of t's address a (found again if it was
 * removed before, else a new one). */
static void endpoint_add(amn_pool_target *t, const char *a) {
  amn_client *cl = t->cl;
  for (size_t i = 0; i < cl->neps; i++) {
    amn_pool_endpoint *ep = &cl->eps[i];
    if (ep->tgt == t && strcmp(ep->t.host, a) == 0) {
      if (ep->removed) {
        LOCK(cl);
        ep->removed = false;
        ep->ejected = false;
        ep->fails = 0;
        UNLOCK(cl);
        AMN_INFO("dns: %s: %s is back in the answer", t->host, a);
      }
      return;
    }
  }
  if (cl->neps >= MAX_EP_ENTRIES) {
    AMN_WARN("dns: %s: %s not used: the pool holds %d endpoints already", t->host, a, MAX_EP_ENTRIES);
    return;
  }
  char u[600];
  snprintf(u, sizeof u, "%.500s (%.45s)", t->url, a);
  char *url = strdup(u);
  if (!url) return;
  amn_pool_endpoint *ep = &cl->eps[cl->neps];
  memset(ep, 0, sizeof *ep);
  ep->cl = cl;
  ep->tgt = t;
  ep->url = url;
  snprintf(ep->t.host, sizeof ep->t.host, "%s", a);
  snprintf(ep->t.sni, sizeof ep->t.sni, "%s", t->host);
  snprintf(ep->t.authority, sizeof ep->t.authority, "%s", t->authority);
  ep->t.port = t->port;
  endpoint_timers(ep);
  LOCK(cl);
  cl->neps++; /* (amn_client_stats reads neps under the lock) */
  UNLOCK(cl);
  AMN_INFO("dns: %s: new endpoint %s", t->host, a);
}

static void endpoint_remove(amn_pool_endpoint *ep) {
  amn_client *cl = ep->cl;
  LOCK(cl);
  ep->removed = true;
  UNLOCK(cl);
  ev_timer_stop(cl->ev, &ep->retry);
  ev_timer_stop(cl->ev, &ep->race);
  AMN_INFO("dns: %s: %s left the answer: its connections drain (%u calls in flight)", ep->tgt->host, ep->t.host,
           ep->inflight);
  retire_slots(ep, NULL);
}

void amn_pool_dns_answer(void *ud, const amn_resolve_answer *ans, const char *why) {
  amn_pool_target *t = ud;
  amn_client *cl = t->cl;
  t->resolving = false;
  if (atomic_load(&cl->stopping)) return;
  if (!ans || !ans->n) {
    t->fails++;
    snprintf(t->error, sizeof t->error, "cannot resolve %.255s: %s", t->host, why && *why ? why : "no address");
    double d = amn_policy_dns_retry_s(t->fails, cl->o.dns_refresh_min_ms, cl->o.dns_refresh_max_ms, rnd(cl));
    if (t->naddrs)
      AMN_WARN("dns: %s; keeping its last %zu address(es); again in %.1f s", t->error, t->naddrs, d);
    else
      AMN_WARN("dns: %s; again in %.1f s", t->error, d);
    if (t->one && !t->naddrs) {
      LOCK(cl);
      snprintf(t->one->last_error, sizeof t->one->last_error, "%.199s", t->error);
      UNLOCK(cl);
    }
    ev_timer_stop(cl->ev, &t->refresh);
    ev_timer_set(&t->refresh, d, 0.);
    ev_timer_start(cl->ev, &t->refresh);
    if (!t->naddrs && !anything_usable(cl)) amn_client_notify_connect(cl, AMN_EIO, t->error);
    amn_pool_mark(cl);
    return;
  }
  t->fails = 0;
  t->error[0] = 0;
  bool keep[AMN_RESOLVE_MAX_ADDRS], add[AMN_RESOLVE_MAX_ADDRS];
  size_t ch = amn_policy_dns_diff((const char(*)[46])t->addrs, t->naddrs, (const char(*)[46])ans->addr, ans->n, keep,
                                  add);
  if (ch) AMN_INFO("dns: %s: %zu address(es), %zu change(s)", t->host, ans->n, ch);
  if (cl->o.spread_addresses) {
    for (size_t j = 0; j < ans->n; j++)
      if (add[j]) endpoint_add(t, ans->addr[j]);
    for (size_t i = 0; i < t->naddrs; i++)
      if (!keep[i])
        for (size_t k = 0; k < cl->neps; k++)
          if (cl->eps[k].tgt == t && !cl->eps[k].removed && strcmp(cl->eps[k].t.host, t->addrs[i]) == 0)
            endpoint_remove(&cl->eps[k]);
  } else if (t->one) {
    for (size_t i = 0; i < t->naddrs; i++)
      if (!keep[i]) retire_slots(t->one, t->addrs[i]);
  }
  /* the URL's endpoint (without spread_addresses) starts again from the first address */
  if (t->one && ch) {
    amn_pool_endpoint *ep = t->one;
    ep->acur = 0;
    ep->atried = 0;
    if (ep->ejected) { /* it failed on the old addresses: the new ones are tried now */
      LOCK(cl);
      ep->ejected = false;
      ep->fails = 0;
      UNLOCK(cl);
      ev_timer_stop(cl->ev, &ep->retry);
    }
  }
  memcpy(t->addrs, ans->addr, ans->n * sizeof ans->addr[0]);
  t->naddrs = ans->n;
  if (t->one) {
    LOCK(cl);
    t->one->last_error[0] = 0;
    UNLOCK(cl);
  }
  double d = amn_policy_dns_refresh_s(ans->ttl_s, cl->o.dns_refresh_min_ms, cl->o.dns_refresh_max_ms);
  AMN_DEBUG("dns: %s: %zu address(es), TTL %u s: again in %.1f s", t->host, ans->n, ans->ttl_s, d);
  ev_timer_stop(cl->ev, &t->refresh);
  ev_timer_set(&t->refresh, d, 0.);
  ev_timer_start(cl->ev, &t->refresh);
  if (cl->pool_active) amn_pool_kick(cl, false);
  else amn_pool_mark(cl);
}
