/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Server call core: transport-independent state of one gRPC call, the
 * hand-off of responses from any thread to the call's loop, backpressure,
 * deadlines, and the handler callbacks.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amn/proto.h"
#include "server/server_internal.h"
#include "tls/sig.h"
#include "util/log.h"

static int64_t now_ns(const amn_call *c) { return c->sl->clock_ns(); }

bool amn_call_on_loop(const amn_call *c) { return pthread_equal(pthread_self(), c->sl->thread); }

#define CALL_CACHE_MAX 256

/* ---- the phases of a request (util/dlist.h lists of the loop): its
 * headers must be complete within header_timeout_ms; while it waits on the
 * client, some byte must move every stall_timeout_ms. */

static amn_call *of_hdr(amn_dl_link *l) { return AMN_CONTAINER_OF(l, amn_call, hdr_link); }
static amn_call *of_progress(amn_dl_link *l) { return AMN_CONTAINER_OF(l, amn_call, progress_link); }

/* ---- metrics (metrics.h): the counters of the call's method and transport
 * on its loop; NULL when the loop has none (a harness's loop). */
static amn_m_method *m_of(amn_call *c) {
  return amn_m_of(&c->sl->m, c->m_method, c->ops ? c->ops->transport : AMN_TRANSPORT_H2);
}
static int m_tidx(const amn_call *c) { return amn_m_tidx(c->ops ? c->ops->transport : AMN_TRANSPORT_H2); }

/* The call is counted as started once its method is known (or once it ends
 * without one: "unknown"). */
static void m_start(amn_call *c, const amn_handler *h) {
  if (c->m_started) return;
  c->m_started = true;
  if (h) c->m_method = (size_t)(AMN_CONTAINER_OF(h, amn_method_entry, h) - c->sl->srv->methods);
  amn_m_method *m = m_of(c);
  if (m) amn_st_count(&m->started, 1);
}

static void access_log(amn_call *c, amn_status_code code, int64_t d) {
  const char *method = c->method ? c->method : "-";
  amn_log_field f[] = {
      {"peer", c->peer && c->peer->verified && c->peer->subject ? AMN_LF_STR : AMN_LF_NULL,
       c->peer ? c->peer->subject : NULL, 0},
      {"addr", AMN_LF_STR, amn_call_peer_addr(c), 0},
      {"method", AMN_LF_STR, method, 0},
      {"transport", AMN_LF_STR, m_tidx(c) ? "h3" : "h2", 0},
      {"status", AMN_LF_STR, amn_status_name(code), 0},
      {"code", AMN_LF_INT, NULL, code},
      {"duration_us", AMN_LF_INT, NULL, d / 1000},
      {"bytes_in", AMN_LF_INT, NULL, (int64_t)c->m_in},
      {"bytes_out", AMN_LF_INT, NULL, (int64_t)c->m_out},
      {"deadline_ms", c->req.timeout_ns >= 0 ? AMN_LF_INT : AMN_LF_NULL, NULL, c->req.timeout_ns / 1000000},
      {"via", AMN_LF_STR, c->peer && c->peer->via ? c->peer->via->subject : NULL, 0},
  };
  /* the via field only for a call that came through a trusted proxy */
  amn_log_fields(AMN_LOG_INFO, "access", f, sizeof f / sizeof f[0] - !(c->peer && c->peer->via));
}

static void m_finish(amn_call *c, amn_status_code code) {
  m_start(c, NULL);
  int64_t d = c->sl->clock_ns() - c->m_t0;
  if (d < 0) d = 0;
  if (atomic_load_explicit(&c->sl->srv->live.access_log, memory_order_relaxed)) access_log(c, code, d);
  amn_m_method *m = m_of(c);
  if (!m) return;
  amn_st_count(&m->finished[(unsigned)code <= 16 ? code : AMN_STATUS_UNKNOWN], 1);
  amn_m_observe(&m->duration, amn_m_dur_bounds_ns, AMN_M_DUR_NBOUNDS, (uint64_t)d);
  amn_st_count(&m->bytes_in, c->m_in);
  amn_st_count(&m->bytes_out, c->m_out);
}

static void hdr_expired(amn_dl_link *l, void *ud) {
  amn_srv_loop *sl = ud;
  amn_call *c = of_hdr(l);
  char msg[96];
  snprintf(msg, sizeof msg, "request headers not complete within %u ms", sl->srv->o.header_timeout_ms);
  AMN_INFO("request from %s: %s", amn_call_peer_addr(c), msg);
  amn_call_fail(c, AMN_STATUS_DEADLINE_EXCEEDED, msg);
}

static void stalled(amn_dl_link *l, void *ud);

static void phases_init(amn_srv_loop *sl) {
  if (sl->hdr_phase.ready) return;
  /* deadlines of a second or more, touched several times per call: the
   * loop's coarse clock (the time it woke up) */
  amn_clock_fn clock = sl->coarse ? amn_clock_coarse_ns : sl->clock_ns;
  amn_dlist_init(&sl->hdr_phase, sl->ev, clock, (int64_t)sl->srv->o.header_timeout_ms * 1000000, hdr_expired, sl);
  amn_dlist_init(&sl->progress, sl->ev, clock, (int64_t)sl->srv->o.stall_timeout_ms * 1000000, stalled, sl);
}

amn_call *amn_call_begin(void *loop, const amn_st_stream_ops *ops, void *stream, const amn_peer_identity *peer,
                         const char *peer_addr, bool early_data) {
  amn_srv_loop *sl = loop;
  amn_call *c = sl->call_cache;
  if (c) {
    sl->call_cache = c->cache_next;
    sl->call_cache_n--;
    pthread_mutex_t keep = c->md_lock;
    memset(c, 0, offsetof(amn_call, req));
    c->md_lock = keep; /* still initialised */
  } else {
    c = malloc(sizeof *c);
    if (!c) return NULL;
    memset(c, 0, offsetof(amn_call, req));
    pthread_mutex_init(&c->md_lock, NULL);
  }
  atomic_init(&c->refs, 1);
  c->fin_op.kind = AMN_OP_FINISH;
  c->resume_op.kind = AMN_OP_RESUME;
  c->sl = sl;
  c->ops = ops;
  c->stream = stream;
  c->peer = peer;
  c->peer_addr = peer_addr;
  c->early_data = early_data;
  c->deadline_ns = -1;
  amn_rpc_req_init(&c->req);
  amn_deframer_init(&c->df, atomic_load_explicit(&sl->srv->live.max_recv_message, memory_order_relaxed));
  c->deadline_timer.data = c;
  c->m_method = SIZE_MAX;
  c->m_t0 = sl->clock_ns();
  phases_init(sl);
  amn_dlist_touch(&sl->hdr_phase, &c->hdr_link);
  return c;
}

static void free_md(amn_rpc_md *md, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(md[i].key);
    free(md[i].value);
  }
  free(md);
}

static void free_queue(amn_call *c) {
  atomic_fetch_sub(&c->queued, amn_msgq_clear(&c->sq));
}

static void free_held(amn_call *c) {
  while (c->held_head) {
    amn_heldmsg *h = c->held_head;
    c->held_head = h->next;
    free(h->msg);
    free(h);
  }
  c->held_tail = NULL;
}

void amn_call_unref(amn_call *c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
  if (c->srv_mem) atomic_fetch_sub(&c->sl->srv->bc.buffered, c->srv_mem); /* the held requests go now */
  free_queue(c);
  free_held(c);
  amn_rpc_req_free(&c->req);
  if (c->fwd_set) amn_peer_store_free(&c->fwd);
  amn_deframer_free(&c->df);
  free(c->unary_msg);
  free(c->fin_msg);
  free(c->app_msg);
  free_md(c->imd, c->imd_n);
  free_md(c->tmd, c->tmd_n);
  free(c->tmd_view);
  amn_srv_loop *sl = c->sl;
  if (sl->call_cache_n < CALL_CACHE_MAX && amn_call_on_loop(c)) {
    ev_timer_stop(sl->ev, &c->deadline_timer); /* never recycle a watcher libev still holds */
    c->cache_next = sl->call_cache;
    sl->call_cache = c;
    sl->call_cache_n++;
    return;
  }
  pthread_mutex_destroy(&c->md_lock);
  free(c);
}

void amn_call_cache_free(amn_srv_loop *sl) {
  while (sl->call_cache) {
    amn_call *c = sl->call_cache;
    sl->call_cache = c->cache_next;
    pthread_mutex_destroy(&c->md_lock);
    free(c);
  }
  sl->call_cache_n = 0;
}

/* ------------------------------------------------------------------ */
/* Accessors                                                          */
/* ------------------------------------------------------------------ */

const char *amn_call_method(const amn_call *c) { return c->method ? c->method : ""; }
const amn_peer_identity *amn_call_peer(const amn_call *c) {
  static const amn_peer_identity none = {0};
  return c->peer ? c->peer : &none;
}
const char *amn_call_peer_addr(const amn_call *c) { return c->peer_addr ? c->peer_addr : ""; }
bool amn_call_signature_verified(const amn_call *c) { return c && c->sig_verified; }
const amn_metadata *amn_call_metadata(const amn_call *c) { return &c->md_pub; }
int64_t amn_call_deadline_remaining_ms(const amn_call *c) {
  if (c->deadline_ns < 0) return -1;
  return amn_deadline_left_ms(c->deadline_ns, now_ns(c));
}
bool amn_call_is_cancelled(const amn_call *c) { return atomic_load(&((amn_call *)c)->cancelled); }
bool amn_call_is_early_data(const amn_call *c) { return c->early_data; }
void amn_call_set_user_data(amn_call *c, void *p) { c->user_data = p; }
void *amn_call_get_user_data(const amn_call *c) { return c->user_data; }

static int add_md(amn_call *c, bool initial, const char *key, const uint8_t *value, size_t len) {
  if (!key || !*key || (len && !value)) return AMN_EINVAL;
  for (const char *p = key; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
      return AMN_EINVAL;
  size_t kl = strlen(key);
  bool bin = kl > 4 && strcmp(key + kl - 4, "-bin") == 0;
  if (!bin)
    for (size_t i = 0; i < len; i++)
      if (value[i] < 0x20 || value[i] > 0x7e) return AMN_EINVAL;
  if (strncmp(key, "grpc-", 5) == 0) return AMN_EINVAL; /* reserved */
  int rc = 0;
  pthread_mutex_lock(&c->md_lock);
  if (initial && c->headers_sent) {
    rc = AMN_ESTATE;
  } else if (!initial && c->trailers_sent) {
    rc = AMN_ESTATE;
  } else {
    amn_rpc_md **arr = initial ? &c->imd : &c->tmd;
    size_t *n = initial ? &c->imd_n : &c->tmd_n, *cap = initial ? &c->imd_cap : &c->tmd_cap;
    if (*n >= AMN_RPC_MAX_MD) {
      rc = AMN_ETOOBIG;
    } else {
      if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        amn_rpc_md *na = realloc(*arr, nc * sizeof *na);
        if (!na) rc = AMN_ENOMEM;
        else {
          *arr = na;
          *cap = nc;
        }
      }
      if (!rc) {
        amn_rpc_md *e = &(*arr)[*n];
        e->key = strdup(key);
        e->value = malloc(len + 1);
        if (!e->key || !e->value) {
          free(e->key);
          free(e->value);
          rc = AMN_ENOMEM;
        } else {
          if (len) memcpy(e->value, value, len);
          e->value[len] = 0;
          e->value_len = len;
          (*n)++;
        }
      }
    }
  }
  pthread_mutex_unlock(&c->md_lock);
  return rc;
}

int amn_call_add_initial_metadata(amn_call *c, const char *key, const uint8_t *value, size_t len) {
  return add_md(c, true, key, value, len);
}
int amn_call_add_trailing_metadata(amn_call *c, const char *key, const uint8_t *value, size_t len) {
  return add_md(c, false, key, value, len);
}

/* views of an amn_rpc_md array for the header builders */
static void md_views(const amn_rpc_md *src, size_t n, amn_md *dst) {
  for (size_t i = 0; i < n; i++) {
    dst[i].key = src[i].key;
    dst[i].value = src[i].value;
    dst[i].value_len = src[i].value_len;
  }
}

int amn_call_build_headers(amn_call *c, amn_hdr_buf *b, bool trailers_only) {
  amn_md v[2 * AMN_RPC_MAX_MD];
  int rc;
  pthread_mutex_lock(&c->md_lock);
  md_views(c->imd, c->imd_n, v);
  size_t n = c->imd_n;
  if (c->http_status && c->http_status != 200) {
    /* not a gRPC request: the HTTP status, the gRPC status for gRPC-aware
     * tools, and (unless trailers_only) a short text body saying why */
    md_views(c->tmd, c->tmd_n, v + n);
    n += c->tmd_n;
    char st[8];
    int sl = snprintf(st, sizeof st, "%d", c->http_status);
    rc = amn_hdr_add(b, ":status", (const uint8_t *)st, (size_t)sl, true);
    const char *ct = trailers_only ? "application/grpc" : "text/plain; charset=utf-8";
    if (!rc) rc = amn_hdr_add(b, "content-type", (const uint8_t *)ct, strlen(ct), false);
    if (!rc) rc = amn_rpc_build_trailers(b, false, c->fin_code, c->fin_msg, v, n);
    c->trailers_sent = trailers_only;
    c->data_started = !trailers_only;
  } else if (trailers_only) {
    md_views(c->tmd, c->tmd_n, v + n);
    n += c->tmd_n;
    rc = amn_rpc_build_trailers(b, true, c->fin_code, c->fin_msg, v, n);
    c->trailers_sent = true;
  } else {
    rc = amn_rpc_build_response(b, v, n);
    c->data_started = true;
  }
  if (!rc && trailers_only && c->accept_encoding_hdr)
    rc = amn_hdr_add(b, "grpc-accept-encoding", (const uint8_t *)"identity", 8, false);
  c->headers_sent = true;
  pthread_mutex_unlock(&c->md_lock);
  return rc;
}

int amn_call_build_trailers(amn_call *c, amn_hdr_buf *b) {
  if (c->http_status && c->http_status != 200) { /* the text body ends the response: no trailers */
    c->trailers_sent = true;
    return 0;
  }
  amn_md v[AMN_RPC_MAX_MD];
  pthread_mutex_lock(&c->md_lock);
  md_views(c->tmd, c->tmd_n, v);
  int rc = amn_rpc_build_trailers(b, false, c->fin_code, c->fin_msg, v, c->tmd_n);
  if (!rc && c->accept_encoding_hdr)
    rc = amn_hdr_add(b, "grpc-accept-encoding", (const uint8_t *)"identity", 8, false);
  c->trailers_sent = true;
  pthread_mutex_unlock(&c->md_lock);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Memory bounds                                                      */
/* ------------------------------------------------------------------ */

/* What the call holds in memory now: the partial request message, held
 * and unary request messages, responses queued. Loop thread. */
static size_t held_now(const amn_call *c) {
  if (c->stream_closed) return 0;
  return c->df.cap + c->unary_len + c->held_sum + atomic_load(&c->queued) + c->tx_held;
}

static bool may_grant(const amn_call *c) { return !c->budget || c->budget->held < c->budget->grant_below; }

static void park(amn_call *c) {
  if (c->parked || !c->budget) return;
  c->parked = true;
  if (c->sl->m.methods) amn_st_count(&c->sl->m.recv_stalls[m_tidx(c)], 1);
  c->park_prev = NULL;
  c->park_next = c->budget->parked;
  if (c->park_next) c->park_next->park_prev = c;
  c->budget->parked = c;
}

static void unpark(amn_call *c) {
  if (!c->parked) return;
  c->parked = false;
  if (c->park_prev) c->park_prev->park_next = c->park_next;
  else c->budget->parked = c->park_next;
  if (c->park_next) c->park_next->park_prev = c->park_prev;
  c->park_prev = c->park_next = NULL;
}

static void consume_rx(amn_call *c);
static void drop_request(amn_call *c);
static void progress_note(amn_call *c, bool moved);
static void fail_deferred(amn_call *c, amn_status_code code, const char *msg);
static void set_final(amn_call *c, amn_status_code code, const char *msg);

/* Room again on the connection: the parked calls' bytes are granted. */
static void grant_parked(amn_st_budget *b) {
  while (b->parked && b->held < b->grant_below) {
    amn_call *c = b->parked;
    unpark(c);
    consume_rx(c);
  }
}

/* Brings the call's charge on its connection's budget and on the server's
 * count to what it holds now. A call whose bytes pass a bound fails with
 * RESOURCE_EXHAUSTED and lets go of its request and response bytes. */
static void charge(amn_call *c) {
  amn_st_config *cfg = &c->sl->srv->bc;
  size_t now = held_now(c);
  size_t units = now / AMN_ST_BUFFER_UNIT * AMN_ST_BUFFER_UNIT;
  bool over = false;
  if (units != c->srv_mem) {
    if (units > c->srv_mem) {
      size_t d = units - c->srv_mem;
      size_t total = atomic_fetch_add(&cfg->buffered, d) + d;
      over = cfg->server_buffer_limit && total > cfg->server_buffer_limit;
    } else {
      atomic_fetch_sub(&cfg->buffered, c->srv_mem - units);
    }
    c->srv_mem = units;
  }
  /* The partial message's bytes are bounded by flow control (they are
   * granted back only once delivered, and only while the connection is
   * under grant_below), but its buffer grows by doubling, ahead of them: a
   * step that passes the bound must not fail a client that respects flow
   * control. What else grows (delivered requests, responses) is checked. */
  size_t partial = c->stream_closed ? 0 : c->df.cap;
  amn_st_budget *b = c->budget;
  if (b && now != c->mem) {
    b->held = b->held - c->mem + now;
    over |= now > c->mem && now - partial > c->mem - c->mem_partial && b->held > b->limit;
  }
  c->mem = now;
  c->mem_partial = partial;
  if (over && !c->trailers_sent && !c->stream_closed) {
    atomic_fetch_add(&cfg->buffer_refusals, 1);
    bool conn = b && b->held > b->limit;
    char msg[160];
    snprintf(msg, sizeof msg, "%s buffer limit of %zu bytes reached", conn ? "connection" : "server",
             conn ? b->limit : cfg->server_buffer_limit);
    AMN_INFO("call %s from %s: %s", c->method ? c->method : "?", amn_call_peer_addr(c), msg);
    fail_deferred(c, AMN_STATUS_RESOURCE_EXHAUSTED, msg); /* drops the queued responses */
    drop_request(c);                                      /* and the partial request */
    charge(c);
    return;
  }
  if (b && b->parked && b->held < b->grant_below) grant_parked(b);
  progress_note(c, false);
}

/* The call waits on the client: a request message begun (unless the
 * handler paused receiving), or responses queued that it has not taken. */
static bool call_accepting(const amn_call *c);
static bool waits_on_client(const amn_call *c) {
  if (c->stream_closed) return false;
  if (atomic_load(&c->queued) || c->tx_held) return true;
  return !c->rx_paused && (c->df.hdr_have || c->df.in_msg) && call_accepting(c);
}

/* Keeps the call on the loop's progress list while it waits on the client;
 * `moved`: bytes moved just now (the stall clock starts again). */
static void progress_note(amn_call *c, bool moved) {
  amn_dlist *d = &c->sl->progress;
  if (!d->ready) return; /* (a call that never began) */
  if (!waits_on_client(c)) amn_dlist_remove(d, &c->progress_link);
  else if (moved || !c->progress_link.on) amn_dlist_touch(d, &c->progress_link);
}

/* The call lets go of its request bytes (after it failed). */
static void drop_request(amn_call *c) {
  amn_deframer_free(&c->df);
  free_held(c);
  c->held_sum = 0;
}

static void fail_late(amn_call *c, amn_status_code code, const char *msg);
static void schedule_deferred(amn_call *c);

/* A bound ends the call: the final status replaces anything not yet sent,
 * later sends fail (ECLOSED), and the handler hears on_cancel from the
 * loop's deferred list, never from inside its own call into the library
 * (a send that passed the bound): a handler may rely on on_cancel not
 * running while it is in amn_call_send. */
static void fail_deferred(amn_call *c, amn_status_code code, const char *msg) {
  if (c->trailers_sent || c->stream_closed) return;
  free_queue(c);
  c->fin_pending = false;
  set_final(c, code, msg);
  if (atomic_exchange(&c->cancelled, true)) return;
  if (atomic_load(&c->finish_called) || !c->dispatched || !c->h || !c->h->on_cancel) return;
  c->deferred_cancel = true;
  c->cancel_code = code;
  schedule_deferred(c);
}

/* No byte moved for stall_timeout_ms while the call waited on the client. */
static void stalled(amn_dl_link *l, void *ud) {
  amn_srv_loop *sl = ud;
  amn_call *c = of_progress(l);
  unsigned ms = sl->srv->o.stall_timeout_ms;
  char msg[96];
  if (atomic_load(&c->queued) || c->tx_held) snprintf(msg, sizeof msg, "the client read no response for %u ms", ms);
  else if (c->parked) snprintf(msg, sizeof msg, "no room in the connection's buffer for %u ms", ms);
  else snprintf(msg, sizeof msg, "request stalled: no bytes for %u ms", ms);
  AMN_INFO("call %s from %s: %s", c->method ? c->method : "?", amn_call_peer_addr(c), msg);
  if (sl->m.methods) amn_st_count(&sl->m.stall_timeouts[m_tidx(c)], 1);
  fail_late(c, AMN_STATUS_RESOURCE_EXHAUSTED, msg); /* drops the queued responses */
  drop_request(c);
  charge(c);
}

/* The connection's budget (amn_st_calls.attach). */
void amn_call_attach(amn_call *c, amn_st_budget *b) { c->budget = b; }

/* The stream is gone: the connection's budget forgets the call; the server's
 * count keeps what the handler may still read (the unary and held request
 * messages) until the call is freed. */
static void charge_release(amn_call *c) {
  unpark(c);
  amn_st_budget *b = c->budget;
  if (b) {
    b->held -= c->mem;
    c->mem = 0;
    c->budget = NULL;
    if (b->parked && b->held < b->grant_below) grant_parked(b);
  }
  size_t keep = c->unary_len + c->held_sum;
  size_t units = keep / AMN_ST_BUFFER_UNIT * AMN_ST_BUFFER_UNIT;
  if (units < c->srv_mem) {
    atomic_fetch_sub(&c->sl->srv->bc.buffered, c->srv_mem - units);
    c->srv_mem = units;
  }
}

/* ------------------------------------------------------------------ */
/* Finishing                                                          */
/* ------------------------------------------------------------------ */

static void kick(amn_call *c) {
  if (c->stream && !c->stream_closed) c->ops->kick(c->stream);
}

/* Loop thread: record the final status; the transport sends it after the
 * queued messages. */
static void set_final(amn_call *c, amn_status_code code, const char *msg) {
  if (c->fin_pending || c->trailers_sent || c->stream_closed) return;
  c->fin_code = code;
  free(c->fin_msg);
  c->fin_msg = msg && *msg ? strdup(msg) : NULL;
  c->fin_pending = true;
  ev_timer_stop(c->sl->ev, &c->deadline_timer); /* a no-op when it never ran */
  kick(c);
}

static void notify_cancel(amn_call *c, amn_status_code why) {
  bool was = atomic_exchange(&c->cancelled, true);
  if (was) return;
  if (c->dispatched && c->h && c->h->on_cancel) c->h->on_cancel(c, why, c->h->ud);
}

void amn_call_fail(amn_call *c, amn_status_code code, const char *msg) {
  if (c->fin_pending || c->trailers_sent || c->stream_closed) return;
  if (code != AMN_STATUS_OK) AMN_DEBUG("call %s from %s failed: %s: %s", c->method ? c->method : "?",
                                       amn_call_peer_addr(c), amn_status_name(code), msg ? msg : "");
  free_queue(c); /* an error replaces anything not yet sent */
  set_final(c, code, msg);
  notify_cancel(c, code);
  charge(c);
}

/* A protocol error found after the handler may already have finished: the
 * final status is replaced as long as it has not been sent. */
static void fail_late(amn_call *c, amn_status_code code, const char *msg) {
  if (c->trailers_sent || c->stream_closed) return;
  AMN_DEBUG("call %s from %s failed: %s: %s", c->method ? c->method : "?", amn_call_peer_addr(c),
            amn_status_name(code), msg);
  free_queue(c);
  c->fin_pending = false;
  set_final(c, code, msg);
  if (atomic_load(&c->finish_called)) atomic_store(&c->cancelled, true); /* the handler is done with it */
  else notify_cancel(c, code);
  charge(c);
}

static void process_finish(amn_call *c, amn_status_code code, const char *msg) {
  if (!atomic_load(&c->cancelled)) set_final(c, code, msg);
}

int amn_call_finish(amn_call *c, amn_status_code code, const char *message) {
  if (!c) return AMN_EINVAL;
  if (atomic_exchange(&c->finish_called, true)) return AMN_ECLOSED; /* finished twice: ignored */
  int rc = atomic_load(&c->cancelled) ? AMN_ECLOSED : 0;
  if (amn_call_on_loop(c)) {
    process_finish(c, code, message);
    amn_call_unref(c);
    return rc;
  }
  c->app_code = code;
  c->app_msg = message && *message ? strdup(message) : NULL;
  amn_mpsc_push(&c->sl->ops, &c->fin_op.node);
  ev_async_send(c->sl->ev, &c->sl->wake);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Sending                                                            */
/* ------------------------------------------------------------------ */

static void enqueue_local(amn_call *c, amn_qmsg *m) {
  if (c->stream_closed || c->fin_pending || c->trailers_sent || atomic_load(&c->cancelled)) {
    atomic_fetch_sub(&c->queued, m->len);
    free(m);
    return;
  }
  amn_msgq_push(&c->sq, m);
  amn_m_method *mm = m_of(c);
  if (mm) amn_m_observe(&mm->resp_size, amn_m_size_bounds, AMN_M_SIZE_NBOUNDS, m->len > 5 ? m->len - 5 : 0);
  charge(c);
  kick(c);
}

static int send_msg(amn_call *c, amn_qmsg *m, bool bypass_bound) {
  size_t total = m->len;
  size_t bound = c->sl->srv->o.stream_send_buffer;
  if (!bypass_bound) {
    size_t q = atomic_load(&c->queued);
    if (q > 0 && q + total > bound) {
      atomic_store(&c->want_writable, true);
      /* the loop may have drained the queue meanwhile: re-check */
      if (atomic_load(&c->queued) != 0) {
        free(m);
        return AMN_EAGAIN;
      }
    }
  }
  atomic_fetch_add(&c->queued, total);
  if (amn_call_on_loop(c)) {
    enqueue_local(c, m);
    return 0;
  }
  atomic_fetch_add(&c->refs, 1);
  m->call = c;
  amn_mpsc_push(&c->sl->ops, &m->op.node);
  ev_async_send(c->sl->ev, &c->sl->wake);
  return 0;
}

static int check_send(amn_call *c, size_t len) {
  if (!c) return AMN_EINVAL;
  if (atomic_load(&c->cancelled) || atomic_load(&c->finish_called)) return AMN_ECLOSED;
  if (len > atomic_load_explicit(&c->sl->srv->live.max_send_message, memory_order_relaxed)) return AMN_ETOOBIG;
  return 0;
}

int amn_call_send(amn_call *c, const uint8_t *msg, size_t len) {
  int rc = check_send(c, len);
  if (rc) return rc;
  amn_qmsg *m = amn_qmsg_new(len, AMN_OP_SEND);
  if (!m) return AMN_ENOMEM;
  if (len) memcpy(m->data + 5, msg, len);
  return send_msg(c, m, false);
}

static int send_pair(amn_call *c, const uint8_t *a, size_t al, const uint8_t *b, size_t bl, bool bypass) {
  uint8_t proof[AMN_SIG_PROOF_HDR + AMN_SIG_MAX_LEN];
  if (!bl && c->q_hashed && (bl = amn_srv_sig_proof(c, a, al, proof))) b = proof;
  size_t n = amn_pair_encoded_size(al, bl);
  int rc = check_send(c, n);
  if (rc) return rc;
  amn_qmsg *m = amn_qmsg_new(n, AMN_OP_SEND);
  if (!m) return AMN_ENOMEM;
  amn_pair_encode(m->data + 5, a, al, b, bl);
  return send_msg(c, m, bypass);
}

int amn_call_send_query_response(amn_call *c, const uint8_t *result, size_t result_len, const uint8_t *proof,
                                 size_t proof_len) {
  return send_pair(c, result, result_len, proof, proof_len, false);
}

int amn_call_reply_query(amn_call *c, const uint8_t *result, size_t result_len, const uint8_t *proof,
                         size_t proof_len) {
  int rc = send_pair(c, result, result_len, proof, proof_len, true);
  if (rc == AMN_ETOOBIG || rc == AMN_ENOMEM) {
    amn_call_finish(c, AMN_STATUS_RESOURCE_EXHAUSTED,
                    rc == AMN_ETOOBIG ? "response larger than max_send_message" : "out of memory");
    return rc;
  }
  int frc = amn_call_finish(c, AMN_STATUS_OK, NULL);
  return rc ? rc : frc;
}

static void schedule_deferred(amn_call *c) {
  if (c->deferred_writable) return;
  c->deferred_writable = true;
  atomic_fetch_add(&c->refs, 1);
  c->next_writable = c->sl->writable_list;
  c->sl->writable_list = c;
}

ssize_t amn_call_peek(amn_call *c, size_t len, bool *eof) {
  size_t avail = amn_msgq_avail(&c->sq, len);
  *eof = c->fin_pending && avail <= len;
  if (avail > len) avail = len;
  if (!avail && !*eof) return -1;
  return (ssize_t)avail;
}

/* n queued bytes left the queue (copied, or taken with their message). */
static ssize_t sent_out(amn_call *c, size_t n, bool *eof) {
  c->m_out += n;
  if (n) {
    size_t before = atomic_fetch_sub(&c->queued, n);
    size_t bound = c->sl->srv->o.stream_send_buffer;
    if (before - n <= bound / 2 && atomic_load(&c->want_writable)) schedule_deferred(c);
    charge(c);
    progress_note(c, true);
  }
  if (amn_msgq_empty(&c->sq) && c->fin_pending) {
    *eof = true;
    return (ssize_t)n;
  }
  return n ? (ssize_t)n : -1;
}

ssize_t amn_call_pull(amn_call *c, uint8_t *buf, size_t len, bool *eof) {
  *eof = false;
  return sent_out(c, amn_msgq_pull(&c->sq, buf, len, NULL), eof);
}

ssize_t amn_call_take(amn_call *c, amn_qmsg **m, bool *eof) {
  *eof = false;
  *m = amn_msgq_take(&c->sq);
  size_t n = *m ? (*m)->len - (*m)->off : 0;
  c->tx_held += n; /* still the call's memory until released */
  return sent_out(c, n, eof);
}

void amn_call_released(amn_call *c, size_t acked, size_t freed) {
  c->tx_held -= freed < c->tx_held ? freed : c->tx_held;
  if (acked) progress_note(c, true); /* the client is reading */
  charge(c);
}

static void deliver_held(amn_call *c);

void amn_srv_loop_run_writable(amn_srv_loop *sl) {
  while (sl->writable_list) {
    amn_call *c = sl->writable_list;
    sl->writable_list = c->next_writable;
    c->deferred_writable = false;
    if (c->deferred_resume) {
      c->deferred_resume = false;
      deliver_held(c);
    }
    if (c->deferred_cancel) {
      c->deferred_cancel = false;
      if (!atomic_load(&c->finish_called) && c->h->on_cancel) c->h->on_cancel(c, c->cancel_code, c->h->ud);
    }
    if (atomic_exchange(&c->want_writable, false) && !atomic_load(&c->cancelled) &&
        !atomic_load(&c->finish_called) && c->dispatched && c->h->on_writable) {
      if (sl->m.methods) amn_st_count(&sl->m.send_waits[m_tidx(c)], 1);
      c->h->on_writable(c, c->h->ud);
    }
    amn_call_unref(c);
  }
}

void amn_srv_loop_drain_ops(amn_srv_loop *sl) {
  amn_mpsc_node *n;
  while ((n = amn_mpsc_pop(&sl->ops)) != NULL) {
    amn_loop_op *op = AMN_CONTAINER_OF(n, amn_loop_op, node);
    if (op->kind == AMN_OP_SEND) {
      amn_qmsg *m = AMN_CONTAINER_OF(op, amn_qmsg, op);
      amn_call *c = m->call;
      enqueue_local(c, m);
      amn_call_unref(c);
    } else if (op->kind == AMN_OP_RESUME) {
      amn_call *c = AMN_CONTAINER_OF(op, amn_call, resume_op);
      atomic_store(&c->resume_pending, false);
      amn_call_resume_recv(c);
      amn_call_unref(c);
    } else {
      amn_call *c = AMN_CONTAINER_OF(op, amn_call, fin_op);
      process_finish(c, c->app_code, c->app_msg);
      amn_call_unref(c);
    }
  }
}

/* ------------------------------------------------------------------ */
/* Transport events                                                   */
/* ------------------------------------------------------------------ */

static void deadline_cb(struct ev_loop *ev, ev_timer *w, int revents) {
  (void)ev; (void)revents;
  amn_call *c = w->data;
  if (c->trailers_sent || c->stream_closed) return;
  amn_call_fail(c, AMN_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
}

static void dispatch(amn_call *c) {
  if (c->dispatched) return;
  c->dispatched = true;
  atomic_fetch_add(&c->refs, 1); /* the application's reference, released by finish */
}

/* The body of an HTTP error answer to a request that is not gRPC, so that
 * browsers and HTTP tools show why (raw bytes: no gRPC message prefix). */
static bool queue_text_body(amn_call *c, int http_status, const char *why) {
  char text[400];
  int n = snprintf(text, sizeof text,
                   "%d: %s.\nThis is a gRPC server (amaters-net): it answers HTTP/2 or HTTP/3 POST requests with "
                   "content-type application/grpc.\n",
                   http_status, why ? why : "not a gRPC request");
  if (n < 0) return false;
  size_t len = (size_t)n < sizeof text ? (size_t)n : sizeof text - 1;
  amn_qmsg *m = amn_qmsg_new(len, AMN_OP_SEND);
  if (!m) return false; /* the status alone then */
  memcpy(m->data + 5, text, len);
  m->off = 5; /* the prefix is never sent */
  atomic_fetch_add(&c->queued, len);
  amn_msgq_push(&c->sq, m);
  return true;
}

/* The server's policy, then the application's callback, on the call's
 * identity; a refusal ends the call (logged) and returns false. */
static bool authorized(amn_call *c) {
  amn_server *s = c->sl->srv;
  amn_authz_policy *p = atomic_load_explicit(&s->authz, memory_order_acquire);
  char msg[300];
  amn_status_code code = AMN_STATUS_OK;
  if (p) {
    const char *rule = NULL;
    if (!amn_authz_check(p, c->method, amn_call_peer(c), &rule)) {
      code = AMN_STATUS_PERMISSION_DENIED;
      if (rule) snprintf(msg, sizeof msg, "denied by rule '%.200s'", rule);
      else snprintf(msg, sizeof msg, "no rule matched");
    }
  }
  if (code == AMN_STATUS_OK && s->authorize_fn) {
    msg[0] = '\0';
    code = s->authorize_fn(c, msg, sizeof msg, s->authorize_ud);
    if ((int)code < 0 || (int)code > AMN_STATUS_UNAUTHENTICATED) {
      snprintf(msg, sizeof msg, "authorization callback returned an invalid status %d", (int)code);
      code = AMN_STATUS_INTERNAL;
    }
    if (code != AMN_STATUS_OK && !msg[0]) snprintf(msg, sizeof msg, "denied by the application");
    msg[sizeof msg - 1] = '\0';
  }
  if (code == AMN_STATUS_OK) return true;
  const amn_peer_identity *id = amn_call_peer(c);
  AMN_INFO("call %s from %s (peer %s) denied: %s", c->method, amn_call_peer_addr(c),
           id->verified && id->subject ? id->subject : "-", msg);
  amn_call_fail(c, code, msg);
  return false;
}

void amn_call_on_headers_done(amn_call *c) {
  amn_dlist_remove(&c->sl->hdr_phase, &c->hdr_link);
  amn_rpc_verdict v = amn_rpc_req_finish(&c->req);
  c->method = c->req.path;
  c->md_pub.entries = c->req.md_view;
  c->md_pub.count = c->req.md_count;
  if (!v.ok) {
    c->http_status = v.http_status;
    if (v.code == AMN_STATUS_UNIMPLEMENTED && c->req.has_encoding) c->accept_encoding_hdr = true;
    m_start(c, NULL);
    AMN_DEBUG("request %s from %s refused: HTTP %d, %s", c->method ? c->method : "?", amn_call_peer_addr(c),
              v.http_status, v.message);
    if (v.http_status != 200 && queue_text_body(c, v.http_status, v.message)) {
      atomic_store(&c->cancelled, true); /* nothing runs; later request bytes are dropped */
      set_final(c, v.code, v.message);   /* the binding sends the headers, then the body */
      charge(c);
      return;
    }
    amn_call_fail(c, v.code, v.message);
    return;
  }
  const amn_handler *h = amn_server_find(c->sl->srv, c->method);
  m_start(c, h);
  char why[400];
  if (c->sl->srv->nproxies && !amn_fwd_identity(c, why, sizeof why)) {
    amn_call_fail(c, AMN_STATUS_UNAUTHENTICATED, why); /* a forwarded certificate refused */
    return;
  }
  if (!h) {
    char msg[300];
    snprintf(msg, sizeof msg, "unknown method %.256s", c->method);
    amn_call_fail(c, AMN_STATUS_UNIMPLEMENTED, msg);
    return;
  }
  if (!authorized(c)) return;
  c->h = h;
  if (c->req.timeout_ns >= 0) {
    c->deadline_ns = amn_deadline_after(now_ns(c), c->req.timeout_ns);
    if (c->req.timeout_ns == 0) {
      amn_call_fail(c, AMN_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
      return;
    }
    ev_timer_init(&c->deadline_timer, deadline_cb, (double)c->req.timeout_ns / 1e9, 0.);
    c->deadline_timer.data = c;
    ev_timer_start(c->sl->ev, &c->deadline_timer);
  }
}

static bool call_accepting(const amn_call *c) {
  return c->h && !c->fin_pending && !c->trailers_sent && !c->stream_closed && !atomic_load(&c->cancelled);
}

static int on_msg(void *ud, uint8_t *msg, size_t len, bool compressed) {
  amn_call *c = ud;
  if (c->h && !c->h->client_streaming && c->msgs_in >= 1) {
    /* one rule, whenever the handler answered: a unary call with a second
     * message is a protocol error */
    free(msg);
    fail_late(c, AMN_STATUS_INTERNAL, "unary method received more than one request message");
    return 1;
  }
  if (!call_accepting(c)) {
    free(msg);
    return 1;
  }
  if (compressed) {
    free(msg);
    amn_call_fail(c, AMN_STATUS_INTERNAL, AMN_RPC_COMPRESSED_MSG);
    return 1;
  }
  c->msgs_in++;
  amn_m_method *mm = m_of(c);
  if (mm) amn_m_observe(&mm->req_size, amn_m_size_bounds, AMN_M_SIZE_NBOUNDS, len);
  if (!c->h->client_streaming) {
    c->unary_msg = msg;
    c->unary_len = len;
    dispatch(c);
    if (c->h->on_message) c->h->on_message(c, msg ? msg : (const uint8_t *)"", len, c->h->ud);
    return 0;
  }
  if (c->rx_paused) {
    amn_heldmsg *h = malloc(sizeof *h);
    if (!h) {
      free(msg);
      amn_call_fail(c, AMN_STATUS_RESOURCE_EXHAUSTED, "out of memory for a held request message");
      return 1;
    }
    h->next = NULL;
    h->msg = msg;
    h->len = len;
    if (c->held_tail) c->held_tail->next = h;
    else c->held_head = h;
    c->held_tail = h;
    c->held_sum += len;
    return 0;
  }
  dispatch(c);
  if (c->h->on_message) c->h->on_message(c, msg ? msg : (const uint8_t *)"", len, c->h->ud);
  free(msg);
  return 0;
}

/* Grants the client the window of everything received, unless paused or
 * the connection holds too much (then the call waits on its budget). */
static void consume_rx(amn_call *c) {
  if (c->rx_paused || !c->rx_unconsumed || !c->stream || c->stream_closed) return;
  if (!may_grant(c) && call_accepting(c)) { /* (bytes a finished call dropped are not held) */
    park(c);
    return;
  }
  size_t n = c->rx_unconsumed;
  c->rx_unconsumed = 0;
  c->ops->consume(c->stream, n);
}

static void deliver_held(amn_call *c) {
  while (c->held_head && !c->rx_paused && call_accepting(c)) {
    amn_heldmsg *h = c->held_head;
    c->held_head = h->next;
    if (!c->held_head) c->held_tail = NULL;
    dispatch(c);
    if (c->h->on_message) c->h->on_message(c, h->msg ? h->msg : (const uint8_t *)"", h->len, c->h->ud);
    c->held_sum -= h->len;
    free(h->msg);
    free(h);
  }
  charge(c);
  if (c->rx_paused) return;
  consume_rx(c);
  /* a half-close that arrived while paused is delivered after the messages */
  if (c->half_close_held && !c->held_head) {
    c->half_close_held = false;
    amn_call_on_remote_close(c);
  }
}

void amn_call_pause_recv(amn_call *c) {
  if (c && call_accepting(c)) c->rx_paused = true;
}

void amn_call_resume_recv(amn_call *c) {
  if (!c) return;
  if (!amn_call_on_loop(c)) {
    if (atomic_exchange(&c->resume_pending, true)) return;
    atomic_fetch_add(&c->refs, 1);
    amn_mpsc_push(&c->sl->ops, &c->resume_op.node);
    ev_async_send(c->sl->ev, &c->sl->wake);
    return;
  }
  if (!c->rx_paused) return;
  c->rx_paused = false;
  /* delivered from the loop's deferred list, never inside a transport callback */
  c->deferred_resume = true;
  schedule_deferred(c);
}

void amn_call_on_data(amn_call *c, const uint8_t *data, size_t len) {
  c->rx_unconsumed += len;
  c->m_in += len;
  if (!call_accepting(c)) {
    consume_rx(c);
    return;
  }
  int rc = amn_deframer_feed(&c->df, data, len, on_msg, c);
  charge(c);
  progress_note(c, true);
  consume_rx(c);
  char msg[128];
  amn_status_code code = amn_deframer_status(&c->df, rc, msg, sizeof msg);
  if (code != AMN_STATUS_OK) amn_call_fail(c, code, msg);
}

void amn_call_on_remote_close(amn_call *c) {
  if (!call_accepting(c)) return;
  if (c->rx_paused || c->held_head) {
    c->half_close_held = true;
    return;
  }
  if (!amn_deframer_idle(&c->df)) {
    amn_call_fail(c, AMN_STATUS_INTERNAL, "request ended inside a message");
    return;
  }
  if (!c->h->client_streaming && c->msgs_in == 0) {
    amn_call_fail(c, AMN_STATUS_INTERNAL, "unary request ended without a message");
    return;
  }
  dispatch(c);
  if (c->h->on_half_close) c->h->on_half_close(c, c->h->ud);
}

size_t amn_call_on_stream_closed(amn_call *c, amn_status_code why, const char *msg) {
  (void)msg;
  size_t held = c->rx_unconsumed;
  c->rx_unconsumed = 0;
  c->stream_closed = true;
  c->stream = NULL;
  amn_dlist_remove(&c->sl->hdr_phase, &c->hdr_link);
  amn_dlist_remove(&c->sl->progress, &c->progress_link);
  ev_timer_stop(c->sl->ev, &c->deadline_timer); /* a no-op when it never ran */
  free_queue(c);
  charge_release(c);
  m_finish(c, c->trailers_sent ? c->fin_code : why);
  if (!c->trailers_sent) notify_cancel(c, why);
  else atomic_store(&c->cancelled, true); /* done: later sends fail with ECLOSED */
  amn_call_unref(c);
  return held;
}

void amn_call_on_header(amn_call *c, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen) {
  amn_rpc_req_header(&c->req, name, nlen, value, vlen);
}

amn_st_step amn_call_step(amn_call *c) {
  if (!c->headers_sent) {
    bool empty = amn_msgq_empty(&c->sq);
    if (c->fin_pending && empty) return AMN_ST_TRAILERS_ONLY;
    return c->fin_pending || !empty ? AMN_ST_HEADERS : AMN_ST_NOTHING;
  }
  return c->data_started && !c->trailers_sent ? AMN_ST_MORE_DATA : AMN_ST_NOTHING;
}

const amn_st_calls amn_call_binding = {
    .begin = amn_call_begin,
    .attach = amn_call_attach,
    .header = amn_call_on_header,
    .headers_end = amn_call_on_headers_done,
    .data = amn_call_on_data,
    .remote_close = amn_call_on_remote_close,
    .closed = amn_call_on_stream_closed,
    .fail = amn_call_fail,
    .step = amn_call_step,
    .headers = amn_call_build_headers,
    .trailers = amn_call_build_trailers,
    .peek = amn_call_peek,
    .pull = amn_call_pull,
    .take = amn_call_take,
    .released = amn_call_released,
};
