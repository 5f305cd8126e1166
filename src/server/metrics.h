/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Internal: the server core's per-loop call counters (metrics.c reads them
 * for amn_server_get_metrics). Every counter of a loop is written only by
 * that loop's thread (amn_st_count: relaxed load and store, no lock, no
 * allocation per call) and read by any thread with relaxed loads.
 */
#ifndef AMN_SERVER_METRICS_H
#define AMN_SERVER_METRICS_H

#include "transport/stransport.h"

/* Histograms in integer units: buckets by upper bound (then +Inf), the sum
 * and the count of the observations. */
#define AMN_M_DUR_BOUNDS_US 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, \
                            2500000, 5000000, 10000000
#define AMN_M_DUR_NBOUNDS 14
#define AMN_M_SIZE_BOUNDS 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864
#define AMN_M_SIZE_NBOUNDS 11
#define AMN_M_MAX_NBOUNDS 16

typedef struct amn_m_hist {
  amn_st_ctr b[AMN_M_MAX_NBOUNDS + 1];
  amn_st_ctr sum;
  amn_st_ctr count;
} amn_m_hist;

/* One method on one transport, on one loop. */
typedef struct amn_m_method {
  amn_st_ctr started;
  amn_st_ctr finished[17];          /* by gRPC status */
  amn_st_ctr bytes_in, bytes_out;   /* request and response bytes of the calls (gRPC framing included) */
  amn_m_hist duration;              /* ns, from the request's first header to the stream's end */
  amn_m_hist req_size, resp_size;   /* bytes per message */
} amn_m_method;

#define AMN_M_TRANSPORTS 2 /* index 0: HTTP/2, 1: HTTP/3 */

typedef struct amn_m_loop {
  amn_m_method *methods;            /* [(nmethods + 1) * AMN_M_TRANSPORTS]: the server's methods, then "unknown" */
  size_t nmethods;                  /* + 1 */
  amn_st_ctr recv_stalls[AMN_M_TRANSPORTS];    /* a call's received bytes waited for room (window held back) */
  amn_st_ctr send_waits[AMN_M_TRANSPORTS];     /* a handler was told writable again after AMN_EAGAIN */
  amn_st_ctr stall_timeouts[AMN_M_TRANSPORTS]; /* calls ended for stall_timeout_ms */
} amn_m_loop;

static inline int amn_m_tidx(amn_transport t) { return t == AMN_TRANSPORT_H3 ? 1 : 0; }

static inline amn_m_method *amn_m_of(amn_m_loop *m, size_t method, amn_transport t) {
  if (!m->methods) return NULL;
  if (method >= m->nmethods) method = m->nmethods - 1; /* unknown */
  return &m->methods[method * AMN_M_TRANSPORTS + (size_t)amn_m_tidx(t)];
}

static inline void amn_m_observe(amn_m_hist *h, const uint64_t *bounds, size_t nb, uint64_t v) {
  size_t i = 0;
  while (i < nb && v > bounds[i]) i++;
  amn_st_count(&h->b[i], 1);
  amn_st_count(&h->sum, v);
  amn_st_count(&h->count, 1);
}

extern const uint64_t amn_m_dur_bounds_ns[AMN_M_DUR_NBOUNDS];
extern const uint64_t amn_m_size_bounds[AMN_M_SIZE_NBOUNDS];

/* The tables of a loop for `nmethods` registered methods (at start). */
int amn_m_loop_init(amn_m_loop *m, size_t nmethods);
void amn_m_loop_free(amn_m_loop *m);

#endif
