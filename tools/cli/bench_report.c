/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli: the bench's report — the summary (text, or one JSON object
 * with the per-second series and the whole histogram), the series as CSV,
 * and an SVG plot of it drawn by gnuplot.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "bench.h"

static double us(uint64_t ns) { return (double)ns / 1e3; }

static void json_num(FILE *f, const char *key, double v, bool last) {
  fprintf(f, "\"%s\":%.1f%s", key, v, last ? "" : ",");
}

/* One second of the series as a plain histogram (its percentiles). */
static void second_hist(const bench_report *r, int s, amn_hist *h) { amn_ahist_read(&r->series[s].lat, h); }

static void json_series(FILE *f, const bench_report *r, amn_hist *h) {
  fputs("\"series\":[", f);
  for (int s = 0; s < r->seconds; s++) {
    second_hist(r, s, h);
    fprintf(f, "%s{\"t\":%d,\"warmup\":%s,\"calls\":%llu,\"errors\":%llu,", s ? "," : "", s + 1,
            (double)s < r->warmup_s ? "true" : "false", (unsigned long long)h->count,
            (unsigned long long)atomic_load(&r->series[s].errors));
    json_num(f, "p50_us", us(amn_hist_percentile(h, 0.50)), false);
    json_num(f, "p90_us", us(amn_hist_percentile(h, 0.90)), false);
    json_num(f, "p99_us", us(amn_hist_percentile(h, 0.99)), false);
    json_num(f, "p999_us", us(amn_hist_percentile(h, 0.999)), false);
    json_num(f, "max_us", us(h->max), true);
    fputc('}', f);
  }
  fputs("],", f);
}

static void json_histogram(FILE *f, const amn_hist *h) {
  fputs("\"histogram\":[", f);
  bool first = true;
  for (unsigned i = 0; i < AMN_HIST_BUCKETS; i++) {
    if (!h->b[i]) continue;
    uint64_t lo, hi;
    amn_hist_bucket_bounds(i, &lo, &hi);
    fprintf(f, "%s[%llu,%llu,%llu]", first ? "" : ",", (unsigned long long)lo, (unsigned long long)hi,
            (unsigned long long)h->b[i]);
    first = false;
  }
  fputs("],", f);
}

/* --new-connection: calls started (attempts, warm-up included), summed over the URLs */
static uint64_t calls_started(const bench_report *r) {
  uint64_t n = 0;
  for (size_t j = 0; j < r->neps; j++) n += r->eps[j].calls;
  return n;
}

static void json_handshakes(FILE *f, const bench_report *r, double qps) {
  const amn_client_quic_stats *q = &r->quic;
  fprintf(f, "\"new_connection\":true,\"resume\":%s,\"connects\":%llu,\"attempts\":%llu,", r->resume ? "true" : "false",
          (unsigned long long)r->connects, (unsigned long long)calls_started(r));
  json_num(f, "handshakes_per_s", qps, false);
  fprintf(f, "\"quic\":{\"handshakes\":%llu,\"resumed\":%llu,\"early_attempted\":%llu,\"early_accepted\":%llu,"
             "\"early_rejected\":%llu,\"early_calls\":%llu,\"tickets_received\":%llu},",
          (unsigned long long)q->handshakes, (unsigned long long)q->resumed, (unsigned long long)q->early_attempted,
          (unsigned long long)q->early_accepted, (unsigned long long)q->early_rejected,
          (unsigned long long)q->early_calls, (unsigned long long)q->tickets_received);
}

static void text_handshakes(const bench_report *r, double qps) {
  const amn_client_quic_stats *q = &r->quic;
  printf("  handshakes  %.1f/s: each call on a new connection%s; %llu connections made for %llu call attempts "
         "(warm-up included)\n",
         qps, r->resume ? ", resuming the previous session" : " (full handshake)", (unsigned long long)r->connects,
         (unsigned long long)calls_started(r));
  if (q->connects)
    printf("  quic     %llu handshakes, %llu resumed; 0-RTT: %llu offered, %llu accepted, %llu rejected, %llu calls "
           "as early data; %llu tickets received\n",
           (unsigned long long)q->handshakes, (unsigned long long)q->resumed, (unsigned long long)q->early_attempted,
           (unsigned long long)q->early_accepted, (unsigned long long)q->early_rejected,
           (unsigned long long)q->early_calls, (unsigned long long)q->tickets_received);
}

int bench_report_print(const cli *o, const bench_report *r) {
  const amn_hist *t = &r->total;
  double qps = r->measured_s > 0 ? (double)t->count / r->measured_s : 0;
  double mbps = qps * 2.0 * (double)r->size / 1e6;
  double p50 = us(amn_hist_percentile(t, 0.50)), p90 = us(amn_hist_percentile(t, 0.90));
  double p99 = us(amn_hist_percentile(t, 0.99)), p999 = us(amn_hist_percentile(t, 0.999));
  double mx = us(t->max), mn = t->count ? us(t->min) : 0, mean = amn_hist_mean(t) / 1e3;
  if (o->json) {
    amn_hist *h = malloc(sizeof *h);
    if (!h) die_code(EX_SOFTWARE, "out of memory");
    FILE *f = stdout;
    fprintf(f, "{\"mode\":\"%s\",\"connections\":%d,\"inflight\":%d,\"size\":%zu,", r->mode, r->connections,
            r->inflight, r->size);
    fprintf(f, "\"loop\":\"%s\",", r->rate > 0 ? "open" : "closed");
    json_num(f, "rps", r->rate, false);
    fprintf(f, "\"count\":%lld,", r->count);
    json_num(f, "duration_s", r->measured_s, false);
    json_num(f, "warmup_s", r->warmup_s, false);
    fprintf(f, "\"calls\":%llu,\"errors\":%llu,\"qps\":%.1f,\"mb_per_s\":%.3f,", (unsigned long long)t->count,
            r->errors, qps, mbps);
    json_num(f, "min_us", mn, false);
    json_num(f, "mean_us", mean, false);
    json_num(f, "p50_us", p50, false);
    json_num(f, "p90_us", p90, false);
    json_num(f, "p99_us", p99, false);
    json_num(f, "p999_us", p999, false);
    json_num(f, "max_us", mx, false);
    fprintf(f, "\"late_sends\":%llu,\"max_backlog\":%d,", (unsigned long long)r->late_sends, r->max_backlog);
    if (r->new_conn) json_handshakes(f, r, qps);
    json_histogram(f, t);
    json_series(f, r, h);
    fprintf(f, "\"retries\":%llu,\"endpoints\":[", r->retries);
    for (size_t j = 0; j < r->neps; j++) {
      const bendpoint *e = &r->eps[j];
      fputs(j ? ",{\"url\":" : "{\"url\":", f);
      json_str(f, (const uint8_t *)e->url, strlen(e->url));
      fprintf(f, ",\"transport\":\"%s\",\"calls\":%llu,\"ok\":%llu,\"failed\":%llu,\"connects\":%llu,"
                 "\"connect_failures\":%llu}",
              tp_name(e->transport), (unsigned long long)e->calls, (unsigned long long)e->ok,
              (unsigned long long)e->failed, (unsigned long long)e->connects,
              (unsigned long long)e->connect_failures);
    }
    fputs("],\"first_error\":", f);
    if (r->first_error) json_str(f, (const uint8_t *)r->first_error, strlen(r->first_error));
    else fputs("null", f);
    fputs("}\n", f);
    free(h);
  } else {
    if (r->rate > 0)
      printf("bench %s, open loop at %.1f calls/s: %d connection%s, up to %d in flight, %zu-byte payload, ", r->mode,
             r->rate, r->connections, r->connections > 1 ? "s" : "", r->inflight, r->size);
    else
      printf("bench %s: %d connection%s, %d in flight, %zu-byte payload, ", r->mode, r->connections,
             r->connections > 1 ? "s" : "", r->inflight, r->size);
    printf("%.1f s measured after %.1f s warm-up\n", r->measured_s, r->warmup_s);
    printf("  calls    %llu (%.1f/s), errors %llu, %.3f MB/s payload both ways\n", (unsigned long long)t->count, qps,
           r->errors, mbps);
    printf("  latency  min %.1f  mean %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (us%s)\n", mn, mean,
           p50, p90, p99, p999, mx,
           r->rate > 0 ? ", from each call's intended send time"
                       : r->new_conn ? ", of each connection's first call: from its start, which opens the connection" : "");
    if (r->new_conn) text_handshakes(r, qps);
    if (r->rate > 0 && (r->late_sends || r->max_backlog))
      printf("  behind   %llu call%s sent over 1 ms late; at most %d due while all %d were in flight\n",
             (unsigned long long)r->late_sends, r->late_sends == 1 ? "" : "s", r->max_backlog, r->inflight);
    for (size_t j = 0; j < r->neps; j++) {
      const bendpoint *e = &r->eps[j];
      printf("  %s  %s, %llu calls (%llu ok, %llu failed), %llu connection%s, %llu connect failure%s\n", e->url,
             tp_name(e->transport), (unsigned long long)e->calls, (unsigned long long)e->ok,
             (unsigned long long)e->failed, (unsigned long long)e->connects, e->connects == 1 ? "" : "s",
             (unsigned long long)e->connect_failures, e->connect_failures == 1 ? "" : "s");
    }
    if (r->retries) printf("  retries  %llu call attempt%s re-sent\n", r->retries, r->retries == 1 ? "" : "s");
    if (r->first_error) printf("  first error: %s\n", r->first_error);
  }
  fflush(stdout);
  return 0;
}

/* The series as CSV: a header line, then one line per second. */
static void write_csv(FILE *f, const bench_report *r, const char *header_prefix) {
  amn_hist *h = malloc(sizeof *h);
  if (!h) die_code(EX_SOFTWARE, "out of memory");
  fputs(header_prefix, f);
  fputs("second,warmup,calls,errors,p50_us,p90_us,p99_us,p999_us,max_us\n", f);
  for (int s = 0; s < r->seconds; s++) {
    second_hist(r, s, h);
    fprintf(f, "%d,%d,%llu,%llu,%.1f,%.1f,%.1f,%.1f,%.1f\n", s + 1, (double)s < r->warmup_s,
            (unsigned long long)h->count, (unsigned long long)atomic_load(&r->series[s].errors),
            us(amn_hist_percentile(h, 0.50)), us(amn_hist_percentile(h, 0.90)), us(amn_hist_percentile(h, 0.99)),
            us(amn_hist_percentile(h, 0.999)), us(h->max));
  }
  free(h);
}

/* gnuplot reads the script and the data (inline, `$series` and `$hist`)
 * from a pipe and writes the SVG: percentiles over time above, the latency
 * distribution (calls per bucket, log x) below. */
static int write_plot(const cli *o, const bench_report *r) {
  const char *out = o->plot;
  if (strchr(out, '\'') || strchr(out, '"') || strchr(out, '\n') || strlen(out) > 4000) {
    fprintf(stderr, PROG ": --plot: unusable file name '%s'\n", out);
    return EX_USAGE;
  }
  FILE *test = fopen(out, "w");
  if (!test) {
    fprintf(stderr, PROG ": --plot: cannot write %s: %s\n", out, strerror(errno));
    return EX_CANTCREAT;
  }
  fclose(test);
  FILE *g = popen("gnuplot", "w");
  if (!g) {
    fprintf(stderr, PROG ": --plot: cannot run gnuplot: %s\n", strerror(errno));
    return EX_UNAVAILABLE;
  }
  fputs("$series << EOD\n", g);
  write_csv(g, r, "# ");
  fputs("EOD\n$hist << EOD\n", g);
  const amn_hist *t = &r->total;
  for (unsigned i = 0; i < AMN_HIST_BUCKETS; i++) {
    if (!t->b[i]) continue;
    uint64_t lo, hi;
    amn_hist_bucket_bounds(i, &lo, &hi);
    fprintf(g, "%.3f %llu\n", us(lo + (hi - lo) / 2), (unsigned long long)t->b[i]);
  }
  fputs("EOD\n", g);
  fprintf(g, "set terminal svg size 960,900 dynamic background '#ffffff'\nset output '%s'\n", out);
  fprintf(g, "set datafile separator ','\nset multiplot layout 2,1 title 'amaters-cli bench: %s%s, %d connection(s), "
             "%zu-byte payload'\n",
          r->mode, r->rate > 0 ? " open loop" : " closed loop", r->connections, r->size);
  fputs("set xlabel 'second of the run'\nset ylabel 'latency (us)'\nset logscale y\nset key top left\n"
        "set grid\n"
        "plot $series using 1:($5>0?$5:1/0) with linespoints title 'p50', "
        "'' using 1:($7>0?$7:1/0) with linespoints title 'p99', "
        "'' using 1:($8>0?$8:1/0) with linespoints title 'p99.9', "
        "'' using 1:($9>0?$9:1/0) with lines title 'max'\n",
        g);
  fputs("set datafile separator whitespace\nunset logscale y\nset logscale x\nset xlabel 'latency (us)'\n"
        "set ylabel 'calls'\nunset key\n",
        g);
  fprintf(g, "%s", t->count ? "plot $hist using 1:2 with impulses lw 2\n" : "set label 'no successful call' at "
                                                                            "graph 0.4, graph 0.5\nplot 0 notitle\n");
  fputs("unset multiplot\n", g);
  int st = pclose(g);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    bool missing = WIFEXITED(st) && WEXITSTATUS(st) == 127;
    fprintf(stderr, PROG ": --plot: gnuplot %s\n",
            missing ? "is not installed (Debian: apt install gnuplot-nox)" : "failed (its messages are above)");
    return missing ? EX_UNAVAILABLE : EX_CANTCREAT;
  }
  return 0;
}

int bench_report_files(const cli *o, const bench_report *r) {
  int code = 0;
  if (o->csv) {
    FILE *f = strcmp(o->csv, "-") == 0 ? stdout : fopen(o->csv, "w");
    if (!f) {
      fprintf(stderr, PROG ": --csv: cannot write %s: %s\n", o->csv, strerror(errno));
      code = EX_CANTCREAT;
    } else {
      write_csv(f, r, "");
      if ((f == stdout ? fflush(f) : fclose(f)) != 0) {
        fprintf(stderr, PROG ": --csv: cannot write %s: %s\n", o->csv, strerror(errno));
        code = EX_CANTCREAT;
      }
    }
  }
  if (o->plot) {
    int c = write_plot(o, r);
    if (c && !code) code = c;
  }
  return code;
}
