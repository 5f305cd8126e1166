/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli bench: the state of a run, shared by the load (bench.c) and
 * its report (bench_report.c: text, JSON, CSV, gnuplot SVG).
 */
#ifndef AMN_CLI_BENCH_H
#define AMN_CLI_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "bench_hist.h"
#include "cli.h"

/* The per-second series keeps at most this many seconds (a longer run is
 * still measured whole; its series stops there). */
#define B_SERIES_MAX 3600

typedef struct bench bench;

typedef struct bclient {
  amn_client *c;
  amn_hist hist; /* measured latencies, written only by this client's I/O thread */
  bench *b;
} bclient;

/* One second of the run, by the second a call was sent (open loop: meant to
 * be sent), counted from the start of the warm-up. */
typedef struct bsecond {
  _Atomic uint64_t errors;
  amn_ahist lat; /* successful calls */
} bsecond;

/* Totals per URL (or per address), summed over the clients. */
typedef struct bendpoint {
  char url[600];
  amn_transport transport;
  uint64_t calls, ok, failed, connects, connect_failures;
} bendpoint;

typedef struct bench_report {
  const char *mode;       /* "unary" | "stream" */
  int connections, inflight;
  size_t size;
  double rate;            /* --rps, 0 = closed loop */
  long long count;        /* -n, 0 = by duration */
  double warmup_s, measured_s;
  amn_hist total;         /* measured calls */
  unsigned long long errors, retries;
  uint64_t late_sends;    /* open loop: calls sent more than 1 ms after their time */
  int max_backlog;        /* open loop: most calls due but waiting for one of the M slots */
  const char *first_error;
  bsecond *series;
  int seconds;            /* seconds in the series */
  bendpoint *eps;
  size_t neps;
  /* --new-connection / --resume: each call on its own connection */
  bool new_conn, resume;
  uint64_t connects;           /* connections made, summed over the URLs (warm-up included) */
  amn_client_quic_stats quic;  /* summed over the clients (HTTP/3) */
} bench_report;

/* bench_report.c: the summary on stdout (text or --json), and the files of
 * --csv (the series) and --plot (an SVG by gnuplot). Returns 0, or an exit
 * status after printing why a file could not be written. */
int bench_report_print(const cli *o, const bench_report *r);
int bench_report_files(const cli *o, const bench_report *r);

#endif
