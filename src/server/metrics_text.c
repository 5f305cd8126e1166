/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A snapshot of the server's metrics (amn_server_get_metrics) written as
 * Prometheus text exposition, format version 0.0.4: HELP and TYPE lines,
 * label values escaped, histograms as cumulative _bucket series with _sum
 * and _count. Pure: reads only the snapshot.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include "server/metrics.h"
#include "amn/server.h"

typedef struct wr {
  char *buf;
  size_t cap, len;
} wr;

static void put(wr *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(wr *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *at = w->len < w->cap ? w->buf + w->len : NULL;
  int n = vsnprintf(at, at ? w->cap - w->len : 0, fmt, ap);
  va_end(ap);
  if (n > 0) w->len += (size_t)n;
}

/* A number as Prometheus parses it: integers without a fraction. */
static void put_num(wr *w, double v) {
  if (v == (double)(int64_t)v && v > -1e15 && v < 1e15) put(w, "%" PRId64, (int64_t)v);
  else put(w, "%.15g", v);
}

/* A label value: \, " and newline escaped. */
static void put_label(wr *w, const char *v) {
  for (const char *p = v; *p; p++) {
    if (*p == '\\') put(w, "\\\\");
    else if (*p == '"') put(w, "\\\"");
    else if (*p == '\n') put(w, "\\n");
    else put(w, "%c", *p);
  }
}

static void head(wr *w, const char *name, const char *type, const char *help) {
  put(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *tname(amn_transport t) { return t == AMN_TRANSPORT_H3 ? "h3" : "h2"; }

static void put_mlabels(wr *w, const amn_method_metrics *m) {
  put(w, "method=\"");
  put_label(w, m->method);
  put(w, "\",transport=\"%s\"", tname(m->transport));
}

/* One histogram's series; `labels` writes the labels before le (may be NULL). */
static void put_hist(wr *w, const char *name, const amn_histogram *h, const amn_method_metrics *m) {
  for (size_t i = 0; i <= h->nbounds; i++) {
    put(w, "%s_bucket{", name);
    if (m) {
      put_mlabels(w, m);
      put(w, ",");
    }
    put(w, "le=\"");
    if (i < h->nbounds) put_num(w, h->bounds[i]);
    else put(w, "+Inf");
    put(w, "\"} %" PRIu64 "\n", h->buckets[i]);
  }
  put(w, "%s_sum", name);
  if (m) {
    put(w, "{");
    put_mlabels(w, m);
    put(w, "}");
  }
  put(w, " ");
  put_num(w, h->sum);
  put(w, "\n%s_count", name);
  if (m) {
    put(w, "{");
    put_mlabels(w, m);
    put(w, "}");
  }
  put(w, " %" PRIu64 "\n", h->count);
}

static bool served(const amn_server_metrics *m, int t) {
  for (size_t i = 0; i < m->nmethods; i++)
    if (amn_m_tidx(m->methods[i].transport) == t) return true;
  return false;
}

static uint64_t finished_sum(const amn_method_metrics *mm) {
  uint64_t n = 0;
  for (int c = 0; c < 17; c++) n += mm->finished[c];
  return n;
}

size_t amn_metrics_render(const amn_server_metrics *m, char *buf, size_t cap) {
  wr w = {buf, cap, 0};
  if (buf && cap) buf[0] = 0;
  if (!m) return 0;
  const amn_server_stats *st = &m->stats;

  head(&w, "amn_server_connections", "gauge", "Connections now, by transport and state.");
  for (int t = 0; t < 2; t++) {
    if (!served(m, t)) continue;
    const amn_transport_metrics *tm = &m->transports[t];
    put(&w, "amn_server_connections{transport=\"%s\",state=\"handshaking\"} %u\n", tname(tm->transport), tm->handshaking);
    put(&w, "amn_server_connections{transport=\"%s\",state=\"open\"} %u\n", tname(tm->transport), tm->open);
    if (t == 1) put(&w, "amn_server_connections{transport=\"h3\",state=\"closing\"} %u\n", tm->closing);
  }
  head(&w, "amn_server_connections_opened_total", "counter", "Connections accepted (HTTP/3: QUIC connections created).");
  for (int t = 0; t < 2; t++)
    if (served(m, t))
      put(&w, "amn_server_connections_opened_total{transport=\"%s\"} %" PRIu64 "\n", tname(m->transports[t].transport),
          m->transports[t].opened);
  head(&w, "amn_server_handshakes_total", "counter", "Handshakes by transport and result.");
  for (int t = 0; t < 2; t++) {
    if (!served(m, t)) continue;
    const amn_transport_metrics *tm = &m->transports[t];
    const char *tn = tname(tm->transport);
    put(&w, "amn_server_handshakes_total{transport=\"%s\",result=\"ok\"} %" PRIu64 "\n", tn, tm->handshakes);
    put(&w, "amn_server_handshakes_total{transport=\"%s\",result=\"failed\"} %" PRIu64 "\n", tn, tm->handshake_failures);
    put(&w, "amn_server_handshakes_total{transport=\"%s\",result=\"timeout\"} %" PRIu64 "\n", tn, tm->handshake_timeouts);
  }
  head(&w, "amn_server_refusals_total", "counter", "Connections and calls refused, by reason.");
  put(&w, "amn_server_refusals_total{reason=\"max_connections\"} %" PRIu64 "\n", st->connections_refused);
  put(&w, "amn_server_refusals_total{reason=\"buffer_limit\"} %" PRIu64 "\n", st->buffer_refusals);
  if (served(m, 1)) {
    put(&w, "amn_server_refusals_total{reason=\"quic_bad_token\"} %" PRIu64 "\n", st->quic.tokens_bad);
    put(&w, "amn_server_refusals_total{reason=\"quic_early_data\"} %" PRIu64 "\n", st->quic.early_rejected);
  }

  head(&w, "amn_server_calls_started_total", "counter", "Calls started, by method and transport.");
  for (size_t i = 0; i < m->nmethods; i++) {
    put(&w, "amn_server_calls_started_total{");
    put_mlabels(&w, &m->methods[i]);
    put(&w, "} %" PRIu64 "\n", m->methods[i].started);
  }
  head(&w, "amn_server_calls_finished_total", "counter", "Calls ended, by method, transport and gRPC status.");
  for (size_t i = 0; i < m->nmethods; i++)
    for (int c = 0; c < 17; c++) {
      if (!m->methods[i].finished[c] && c != 0) continue;
      put(&w, "amn_server_calls_finished_total{");
      put_mlabels(&w, &m->methods[i]);
      put(&w, ",code=\"%s\"} %" PRIu64 "\n", amn_status_name(c), m->methods[i].finished[c]);
    }
  static const struct {
    const char *name, *help;
    size_t off;
  } hists[] = {
      {"amn_server_call_duration_seconds", "Call duration from the request's first bytes to the stream's end.",
       offsetof(amn_method_metrics, duration)},
      {"amn_server_request_message_bytes", "Size of request messages.", offsetof(amn_method_metrics, request_size)},
      {"amn_server_response_message_bytes", "Size of response messages.", offsetof(amn_method_metrics, response_size)},
  };
  for (size_t k = 0; k < sizeof hists / sizeof hists[0]; k++) {
    head(&w, hists[k].name, "histogram", hists[k].help);
    for (size_t i = 0; i < m->nmethods; i++) {
      const amn_method_metrics *mm = &m->methods[i];
      if (!mm->started && !finished_sum(mm)) continue; /* a method never called: no series */
      put_hist(&w, hists[k].name, (const amn_histogram *)((const char *)mm + hists[k].off), mm);
    }
  }
  uint64_t bin[2] = {0}, bout[2] = {0};
  for (size_t i = 0; i < m->nmethods; i++) {
    bin[amn_m_tidx(m->methods[i].transport)] += m->methods[i].bytes_in;
    bout[amn_m_tidx(m->methods[i].transport)] += m->methods[i].bytes_out;
  }
  head(&w, "amn_server_received_bytes_total", "counter", "Request bytes of the ended calls (gRPC framing included).");
  for (int t = 0; t < 2; t++)
    if (served(m, t)) put(&w, "amn_server_received_bytes_total{transport=\"%s\"} %" PRIu64 "\n", t ? "h3" : "h2", bin[t]);
  head(&w, "amn_server_sent_bytes_total", "counter", "Response bytes of the ended calls (gRPC framing included).");
  for (int t = 0; t < 2; t++)
    if (served(m, t)) put(&w, "amn_server_sent_bytes_total{transport=\"%s\"} %" PRIu64 "\n", t ? "h3" : "h2", bout[t]);
  head(&w, "amn_server_flow_control_stalls_total", "counter",
       "Calls that waited: received bytes held for room (recv_window_held), handlers told to wait (send_buffer_full).");
  for (int t = 0; t < 2; t++) {
    if (!served(m, t)) continue;
    put(&w, "amn_server_flow_control_stalls_total{transport=\"%s\",kind=\"recv_window_held\"} %" PRIu64 "\n",
        t ? "h3" : "h2", m->transports[t].recv_stalls);
    put(&w, "amn_server_flow_control_stalls_total{transport=\"%s\",kind=\"send_buffer_full\"} %" PRIu64 "\n",
        t ? "h3" : "h2", m->transports[t].send_waits);
  }
  head(&w, "amn_server_stall_timeouts_total", "counter", "Calls ended because no byte moved for stall_timeout_ms.");
  for (int t = 0; t < 2; t++)
    if (served(m, t))
      put(&w, "amn_server_stall_timeouts_total{transport=\"%s\"} %" PRIu64 "\n", t ? "h3" : "h2",
          m->transports[t].stall_timeouts);

  if (served(m, 1)) {
    head(&w, "amn_server_quic_rtt_seconds", "histogram", "Smoothed RTT of QUIC connections, taken when they end.");
    put_hist(&w, "amn_server_quic_rtt_seconds", &m->quic_rtt, NULL);
    head(&w, "amn_server_quic_min_rtt_seconds_total", "counter",
         "Minimum RTT of the same QUIC connections, summed (divide by amn_server_quic_rtt_seconds_count).");
    put(&w, "amn_server_quic_min_rtt_seconds_total ");
    put_num(&w, m->quic_min_rtt_sum);
    put(&w, "\n");
    head(&w, "amn_server_quic_events_total", "counter", "QUIC events by kind.");
    static const struct {
      const char *ev;
      size_t off;
    } evs[] = {
#define E(n, f) {n, offsetof(amn_server_stats, quic.f)}
        E("resumed", resumed),           E("early_accepted", early_accepted),   E("early_calls", early_calls),
        E("replays_detected", replays_detected), E("retries_sent", retries_sent), E("retry_tokens_ok", retry_tokens_ok),
        E("new_tokens_ok", new_tokens_ok), E("stateless_resets", stateless_resets),
        E("stateless_resets_limited", stateless_resets_limited),
        E("version_negotiations", version_negotiations), E("path_validations", path_validations),
        E("key_updates", key_updates),
#undef E
    };
    for (size_t k = 0; k < sizeof evs / sizeof evs[0]; k++)
      put(&w, "amn_server_quic_events_total{event=\"%s\"} %" PRIu64 "\n", evs[k].ev,
          *(const uint64_t *)((const char *)st + evs[k].off));
    head(&w, "amn_server_quic_datagrams_received_total", "counter",
         "UDP datagrams read; coalesced=\"true\": those that came several per receive (UDP GRO).");
    put(&w, "amn_server_quic_datagrams_received_total{coalesced=\"false\"} %" PRIu64 "\n",
        st->quic.datagrams_received - st->quic.datagrams_coalesced);
    put(&w, "amn_server_quic_datagrams_received_total{coalesced=\"true\"} %" PRIu64 "\n", st->quic.datagrams_coalesced);
  }

  head(&w, "amn_server_buffered_bytes", "gauge", "Bytes calls hold now (max_server_buffer's count, in 64 KiB units).");
  put(&w, "amn_server_buffered_bytes %" PRIu64 "\n", st->buffered_bytes);
  head(&w, "amn_server_draining", "gauge", "1 while the server drains before it stops.");
  put(&w, "amn_server_draining %d\n", st->draining ? 1 : 0);
  return w.len;
}

