/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* The Prometheus text of amn_metrics_render for known counters, exactly;
 * its snprintf-like cut; the snapshot of a server that never started. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "amn/server.h"

static amn_histogram hist2(double b0, double b1, uint64_t c0, uint64_t c1, uint64_t n, double sum) {
  amn_histogram h = {0};
  h.nbounds = 2;
  h.bounds[0] = b0;
  h.bounds[1] = b1;
  h.buckets[0] = c0;
  h.buckets[1] = c1;
  h.buckets[2] = n;
  h.count = n;
  h.sum = sum;
  return h;
}

/* HTTP/2 only: one method called (its name needs escaping), one never called. */
static void fill(amn_server_metrics *m, amn_method_metrics *mm) {
  memset(m, 0, sizeof *m);
  memset(mm, 0, 2 * sizeof *mm);
  m->stats.connections_refused = 4;
  m->stats.buffer_refusals = 1;
  m->stats.buffered_bytes = 131072;
  m->stats.draining = true;
  m->transports[0] = (amn_transport_metrics){.transport = AMN_TRANSPORT_H2, .handshaking = 1, .open = 2, .opened = 9,
                                             .handshakes = 7, .handshake_failures = 1, .handshake_timeouts = 0,
                                             .recv_stalls = 5, .send_waits = 6, .stall_timeouts = 2};
  m->transports[1].transport = AMN_TRANSPORT_H3;
  mm[0].method = "/p.S/M\"x\\y";
  mm[0].transport = AMN_TRANSPORT_H2;
  mm[0].started = 3;
  mm[0].finished[AMN_STATUS_OK] = 2;
  mm[0].finished[AMN_STATUS_UNAVAILABLE] = 1;
  mm[0].bytes_in = 100;
  mm[0].bytes_out = 250;
  mm[0].duration = hist2(0.001, 0.5, 1, 2, 3, 0.75);
  mm[0].request_size = hist2(64, 1024, 2, 3, 3, 700);
  mm[0].response_size = hist2(64, 1024, 0, 2, 2, 1500);
  mm[1].method = "unknown";
  mm[1].transport = AMN_TRANSPORT_H2;
  m->nmethods = 2;
  m->methods = mm;
}

static const char want[] =
    "# HELP amn_server_connections Connections now, by transport and state.\n"
    "# TYPE amn_server_connections gauge\n"
    "amn_server_connections{transport=\"h2\",state=\"handshaking\"} 1\n"
    "amn_server_connections{transport=\"h2\",state=\"open\"} 2\n"
    "# HELP amn_server_connections_opened_total Connections accepted (HTTP/3: QUIC connections created).\n"
    "# TYPE amn_server_connections_opened_total counter\n"
    "amn_server_connections_opened_total{transport=\"h2\"} 9\n"
    "# HELP amn_server_handshakes_total Handshakes by transport and result.\n"
    "# TYPE amn_server_handshakes_total counter\n"
    "amn_server_handshakes_total{transport=\"h2\",result=\"ok\"} 7\n"
    "amn_server_handshakes_total{transport=\"h2\",result=\"failed\"} 1\n"
    "amn_server_handshakes_total{transport=\"h2\",result=\"timeout\"} 0\n"
    "# HELP amn_server_refusals_total Connections and calls refused, by reason.\n"
    "# TYPE amn_server_refusals_total counter\n"
    "amn_server_refusals_total{reason=\"max_connections\"} 4\n"
    "amn_server_refusals_total{reason=\"buffer_limit\"} 1\n"
    "# HELP amn_server_calls_started_total Calls started, by method and transport.\n"
    "# TYPE amn_server_calls_started_total counter\n"
    "amn_server_calls_started_total{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\"} 3\n"
    "amn_server_calls_started_total{method=\"unknown\",transport=\"h2\"} 0\n"
    "# HELP amn_server_calls_finished_total Calls ended, by method, transport and gRPC status.\n"
    "# TYPE amn_server_calls_finished_total counter\n"
    "amn_server_calls_finished_total{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",code=\"OK\"} 2\n"
    "amn_server_calls_finished_total{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",code=\"UNAVAILABLE\"} 1\n"
    "amn_server_calls_finished_total{method=\"unknown\",transport=\"h2\",code=\"OK\"} 0\n"
    "# HELP amn_server_call_duration_seconds Call duration from the request's first bytes to the stream's end.\n"
    "# TYPE amn_server_call_duration_seconds histogram\n"
    "amn_server_call_duration_seconds_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"0.001\"} 1\n"
    "amn_server_call_duration_seconds_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"0.5\"} 2\n"
    "amn_server_call_duration_seconds_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"+Inf\"} 3\n"
    "amn_server_call_duration_seconds_sum{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\"} 0.75\n"
    "amn_server_call_duration_seconds_count{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\"} 3\n"
    "# HELP amn_server_request_message_bytes Size of request messages.\n"
    "# TYPE amn_server_request_message_bytes histogram\n"
    "amn_server_request_message_bytes_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"64\"} 2\n"
    "amn_server_request_message_bytes_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"1024\"} 3\n"
    "amn_server_request_message_bytes_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"+Inf\"} 3\n"
    "amn_server_request_message_bytes_sum{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\"} 700\n"
    "amn_server_request_message_bytes_count{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\"} 3\n"
    "# HELP amn_server_response_message_bytes Size of response messages.\n"
    "# TYPE amn_server_response_message_bytes histogram\n"
    "amn_server_response_message_bytes_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"64\"} 0\n"
    "amn_server_response_message_bytes_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"1024\"} 2\n"
    "amn_server_response_message_bytes_bucket{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\",le=\"+Inf\"} 2\n"
    "amn_server_response_message_bytes_sum{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\"} 1500\n"
    "amn_server_response_message_bytes_count{method=\"/p.S/M\\\"x\\\\y\",transport=\"h2\"} 2\n"
    "# HELP amn_server_received_bytes_total Request bytes of the ended calls (gRPC framing included).\n"
    "# TYPE amn_server_received_bytes_total counter\n"
    "amn_server_received_bytes_total{transport=\"h2\"} 100\n"
    "# HELP amn_server_sent_bytes_total Response bytes of the ended calls (gRPC framing included).\n"
    "# TYPE amn_server_sent_bytes_total counter\n"
    "amn_server_sent_bytes_total{transport=\"h2\"} 250\n"
    "# HELP amn_server_flow_control_stalls_total Calls that waited: received bytes held for room "
    "(recv_window_held), handlers told to wait (send_buffer_full).\n"
    "# TYPE amn_server_flow_control_stalls_total counter\n"
    "amn_server_flow_control_stalls_total{transport=\"h2\",kind=\"recv_window_held\"} 5\n"
    "amn_server_flow_control_stalls_total{transport=\"h2\",kind=\"send_buffer_full\"} 6\n"
    "# HELP amn_server_stall_timeouts_total Calls ended because no byte moved for stall_timeout_ms.\n"
    "# TYPE amn_server_stall_timeouts_total counter\n"
    "amn_server_stall_timeouts_total{transport=\"h2\"} 2\n"
    "# HELP amn_server_buffered_bytes Bytes calls hold now (max_server_buffer's count, in 64 KiB units).\n"
    "# TYPE amn_server_buffered_bytes gauge\n"
    "amn_server_buffered_bytes 131072\n"
    "# HELP amn_server_draining 1 while the server drains before it stops.\n"
    "# TYPE amn_server_draining gauge\n"
    "amn_server_draining 1\n";

static void test_render_exact(void **state) {
  (void)state;
  amn_server_metrics m;
  amn_method_metrics mm[2];
  fill(&m, mm);
  static char buf[16384];
  size_t n = amn_metrics_render(&m, buf, sizeof buf);
  assert_string_equal(buf, want);
  assert_int_equal(n, strlen(want));
}

/* Like snprintf: a short buffer holds a NUL-terminated prefix, the return is
 * the whole length; nothing is written with cap 0. */
static void test_render_cut(void **state) {
  (void)state;
  amn_server_metrics m;
  amn_method_metrics mm[2];
  fill(&m, mm);
  char small[100];
  memset(small, 'z', sizeof small);
  size_t n = amn_metrics_render(&m, small, sizeof small);
  assert_int_equal(n, strlen(want));
  assert_int_equal(strlen(small), sizeof small - 1);
  assert_memory_equal(small, want, sizeof small - 1);
  char none = 'q';
  assert_int_equal(amn_metrics_render(&m, &none, 0), strlen(want));
  assert_int_equal(none, 'q');
  assert_int_equal(amn_metrics_render(&m, NULL, 0), strlen(want));
  assert_int_equal(amn_metrics_render(NULL, small, sizeof small), 0);
}

/* A server never started: every method of both transports, all zero; the
 * text ends with the drain state. */
static void test_server_not_started(void **state) {
  (void)state;
  amn_server_opts o;
  amn_server_opts_init(&o);
  o.tls.insecure = true;
  amn_server *s = NULL;
  assert_int_equal(amn_server_new(&s, &o, NULL, 0), 0);
  assert_int_equal(amn_server_use_echo(s), 0);
  amn_server_metrics *m = NULL;
  assert_int_equal(amn_server_get_metrics(s, &m), 0);
  assert_non_null(m);
  /* health Check, Watch, reflection v1 and v1alpha, Execute, ExecuteStream, unknown; HTTP/2 only */
  assert_int_equal(m->nmethods, 7);
  assert_string_equal(m->methods[2].method, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
  assert_string_equal(m->methods[6].method, "unknown");
  for (size_t i = 0; i < m->nmethods; i++) {
    assert_int_equal(m->methods[i].transport, AMN_TRANSPORT_H2);
    assert_int_equal(m->methods[i].started, 0);
    assert_int_equal(m->methods[i].duration.nbounds, 14);
    assert_int_equal(m->methods[i].request_size.nbounds, 11);
  }
  char buf[32768];
  size_t n = amn_server_metrics_text(s, buf, sizeof buf);
  assert_true(n > 0 && n < sizeof buf);
  assert_non_null(strstr(buf, "amn_server_calls_started_total{method=\"/amaters.v1.AmateRS/Execute\",transport=\"h2\"} 0\n"));
  assert_null(strstr(buf, "transport=\"h3\""));
  assert_string_equal(buf + n - strlen("amn_server_draining 0\n"), "amn_server_draining 0\n");
  amn_server_metrics_free(m);
  assert_int_equal(amn_server_get_metrics(NULL, &m), AMN_EINVAL);
  assert_int_equal(amn_server_metrics_text(NULL, buf, sizeof buf), 0);
  assert_string_equal(buf, "");
  amn_server_free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_render_exact),
      cmocka_unit_test(test_render_cut),
      cmocka_unit_test(test_server_not_started),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
