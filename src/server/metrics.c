/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Server metrics: the per-loop call counters (metrics.h) and the bindings'
 * connection counters summed into a snapshot (amn_server_get_metrics);
 * metrics_text.c writes a snapshot as Prometheus text.
 */
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

const uint64_t amn_m_dur_bounds_ns[AMN_M_DUR_NBOUNDS] = {
#define US(x) (x) * 1000ull
    US(500),    US(1000),    US(2500),    US(5000),    US(10000),   US(25000),   US(50000),
    US(100000), US(250000),  US(500000),  US(1000000), US(2500000), US(5000000), US(10000000),
#undef US
};
const uint64_t amn_m_size_bounds[AMN_M_SIZE_NBOUNDS] = {AMN_M_SIZE_BOUNDS};
static const uint64_t rtt_bounds_us[AMN_ST_RTT_NBOUNDS] = {AMN_ST_RTT_BOUNDS_US};

int amn_m_loop_init(amn_m_loop *m, size_t nmethods) {
  memset(m, 0, sizeof *m);
  m->methods = calloc((nmethods + 1) * AMN_M_TRANSPORTS, sizeof *m->methods);
  if (!m->methods) return AMN_ENOMEM;
  m->nmethods = nmethods + 1;
  return 0;
}

void amn_m_loop_free(amn_m_loop *m) {
  free(m->methods);
  m->methods = NULL;
}

/* ---- snapshot ---- */

static void hist_add(amn_histogram *h, const amn_m_hist *src, size_t nb) {
  for (size_t i = 0; i <= nb; i++) h->buckets[i] += amn_st_read(&src->b[i]);
  h->count += amn_st_read(&src->count);
}

/* Cumulative buckets, bounds in `scale` units per integer unit. */
static void hist_finish(amn_histogram *h, const uint64_t *bounds, size_t nb, double scale, uint64_t sum) {
  h->nbounds = nb;
  for (size_t i = 0; i < nb; i++) h->bounds[i] = (double)bounds[i] * scale;
  for (size_t i = 1; i <= nb; i++) h->buckets[i] += h->buckets[i - 1];
  h->count = h->buckets[nb]; /* the buckets and the count agree, whatever the reads raced with */
  h->sum = (double)sum * scale;
}

static uint32_t diff(uint64_t a, uint64_t b) { return a > b ? (uint32_t)(a - b) : 0; }

void amn_m_sum_calls(amn_server *s, amn_server_stats *out) {
  for (int l = 0; s->started && l < s->nloops; l++) {
    amn_m_loop *m = &s->loops[l].m;
    for (size_t i = 0; m->methods && i < m->nmethods * AMN_M_TRANSPORTS; i++) {
      amn_m_method *mm = &m->methods[i];
      out->calls_started += amn_st_read(&mm->started);
      for (int c = 0; c < 17; c++) out->calls_finished += amn_st_read(&mm->finished[c]);
      out->calls_ok += amn_st_read(&mm->finished[0]);
      out->bytes_in += amn_st_read(&mm->bytes_in);
      out->bytes_out += amn_st_read(&mm->bytes_out);
    }
  }
}

int amn_m_snapshot(amn_server *s, const amn_server_stats *st, amn_server_metrics **out) {
  *out = NULL;
  amn_server_metrics *r = calloc(1, sizeof *r);
  if (!r) return AMN_ENOMEM;
  r->stats = *st;
  bool served[2] = {s->o.transport != AMN_TRANSPORT_H3, (s->o.transport & AMN_TRANSPORT_H3) != 0};
  size_t nt = (size_t)served[0] + served[1];
  r->methods = calloc((s->nmethods + 1) * nt, sizeof *r->methods);
  if (!r->methods) {
    free(r);
    return AMN_ENOMEM;
  }
  /* per method and transport */
  for (size_t i = 0; i <= s->nmethods; i++) {
    for (int t = 0; t < 2; t++) {
      if (!served[t]) continue;
      amn_method_metrics *mm = &r->methods[r->nmethods];
      mm->method = strdup(i < s->nmethods ? s->methods[i].path : "unknown");
      r->nmethods++;
      if (!mm->method) {
        amn_server_metrics_free(r);
        return AMN_ENOMEM;
      }
      mm->transport = t ? AMN_TRANSPORT_H3 : AMN_TRANSPORT_H2;
      uint64_t dsum = 0, qsum = 0, psum = 0;
      for (int l = 0; s->started && l < s->nloops; l++) {
        amn_m_loop *m = &s->loops[l].m;
        if (!m->methods) continue;
        const amn_m_method *src = &m->methods[i * AMN_M_TRANSPORTS + (size_t)t];
        mm->started += amn_st_read(&src->started);
        for (int c = 0; c < 17; c++) mm->finished[c] += amn_st_read(&src->finished[c]);
        mm->bytes_in += amn_st_read(&src->bytes_in);
        mm->bytes_out += amn_st_read(&src->bytes_out);
        hist_add(&mm->duration, &src->duration, AMN_M_DUR_NBOUNDS);
        hist_add(&mm->request_size, &src->req_size, AMN_M_SIZE_NBOUNDS);
        hist_add(&mm->response_size, &src->resp_size, AMN_M_SIZE_NBOUNDS);
        dsum += amn_st_read(&src->duration.sum);
        qsum += amn_st_read(&src->req_size.sum);
        psum += amn_st_read(&src->resp_size.sum);
      }
      hist_finish(&mm->duration, amn_m_dur_bounds_ns, AMN_M_DUR_NBOUNDS, 1e-9, dsum);
      hist_finish(&mm->request_size, amn_m_size_bounds, AMN_M_SIZE_NBOUNDS, 1, qsum);
      hist_finish(&mm->response_size, amn_m_size_bounds, AMN_M_SIZE_NBOUNDS, 1, psum);
    }
  }
  /* per transport */
  uint64_t h2_opened = 0, h2_hs = 0, h2_fail = 0, h2_to = 0, h2_closed = 0, h3_closed = 0, rtt_sum = 0,
           rtt_min_sum = 0;
  amn_transport_metrics *h2 = &r->transports[0], *h3 = &r->transports[1];
  h2->transport = AMN_TRANSPORT_H2;
  h3->transport = AMN_TRANSPORT_H3;
  for (int l = 0; s->started && l < s->nloops; l++) {
    amn_st_conn_counters *cc = &s->loops[l].bl.conn;
    h2_opened += amn_st_read(&cc->h2_opened);
    h2_hs += amn_st_read(&cc->h2_handshakes);
    h2_fail += amn_st_read(&cc->h2_handshake_failures);
    h2_to += amn_st_read(&cc->h2_handshake_timeouts);
    h2_closed += amn_st_read(&cc->h2_closed);
    h3_closed += amn_st_read(&cc->h3_closed);
    for (size_t b = 0; b <= AMN_ST_RTT_NBOUNDS; b++) r->quic_rtt.buckets[b] += amn_st_read(&cc->rtt[b]);
    rtt_sum += amn_st_read(&cc->rtt_sum_ns);
    rtt_min_sum += amn_st_read(&cc->rtt_min_sum_ns);
    amn_m_loop *m = &s->loops[l].m;
    for (int t = 0; t < 2; t++) {
      r->transports[t].recv_stalls += amn_st_read(&m->recv_stalls[t]);
      r->transports[t].send_waits += amn_st_read(&m->send_waits[t]);
      r->transports[t].stall_timeouts += amn_st_read(&m->stall_timeouts[t]);
    }
  }
  h2->opened = h2_opened;
  h2->handshakes = h2_hs;
  h2->handshake_failures = h2_fail;
  h2->handshake_timeouts = h2_to;
  h2->handshaking = diff(h2_opened, h2_hs + h2_fail + h2_to);
  h2->open = diff(h2_opened - h2->handshaking, h2_closed);
  h3->opened = r->stats.quic.connections;
  h3->handshakes = r->stats.quic.handshakes;
  h3->handshake_timeouts = r->stats.quic.handshake_timeouts;
  h3->handshake_failures = r->stats.quic.handshake_failures;
  h3->handshaking = r->stats.quic.handshaking;
  h3->closing = r->stats.quic.closing;
  h3->open = diff(h3->opened, h3_closed + h3->handshaking + h3->closing);
  hist_finish(&r->quic_rtt, rtt_bounds_us, AMN_ST_RTT_NBOUNDS, 1e-6, 0);
  r->quic_rtt.sum = (double)rtt_sum * 1e-9;
  r->quic_min_rtt_sum = (double)rtt_min_sum * 1e-9;
  *out = r;
  return 0;
}

void amn_server_metrics_free(amn_server_metrics *m) {
  if (!m) return;
  for (size_t i = 0; i < m->nmethods; i++) free((char *)m->methods[i].method);
  free(m->methods);
  free(m);
}

