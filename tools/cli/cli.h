/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli: what the command's files share (options, client set-up,
 * output and parsing helpers). One file per command: main.c (command line),
 * net.c (client set-up), output.c (JSON, base64, hex), call.c (execute,
 * stream, health), bench.c, certs.c, invoke.c (call: any method),
 * reflect.c (list, describe); util.c (errors, numbers, durations).
 */
#ifndef AMN_CLI_H
#define AMN_CLI_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "amn/amn.h"

#define PROG "amaters-cli"
/* Exit status (documented in --help, amaters-cli(1) and the README): the gRPC
 * status of a call (0..16); else sysexits(3): EX_USAGE 64 (command line),
 * EX_DATAERR 65 (request data), EX_NOINPUT 66 (an input file cannot be
 * opened), EX_UNAVAILABLE 69 (a call ended UNAVAILABLE and no connection to
 * any URL was ever made: net.c exit_status), EX_SOFTWARE 70 (out
 * of memory, internal), EX_IOERR 74 (reading or writing), EX_CANTCREAT 73
 * (certs init cannot write), EX_CONFIG 78 (configuration, PKI). */
#include <sysexits.h>

enum {
  C_EXEC = 1, C_STREAM = 2, C_HEALTH = 4, C_BENCH = 8, C_CERTS = 16, C_CALL = 32, C_LIST = 64, C_DESCRIBE = 128,
  C_NET = C_EXEC | C_STREAM | C_HEALTH | C_BENCH | C_CALL | C_LIST | C_DESCRIBE, C_ALL = C_NET | C_CERTS
};

typedef struct cli {
  /* global */
  const char *ca, *cert, *key, *pki_dir, *server_name, *dns_server, *config, *log_level;
  const char *crl; /* --crl */
  const char *transport; /* --transport, NULL = config/default */
  bool insecure, idempotent, sign, verify_proof;
  long long timeout_ms; /* -1 = not given */
  amn_md md[64];
  size_t md_count;
  char *urls[64];
  size_t url_count;
  /* command */
  int cmd;
  const char *cmd_name;
  const char *data, *data_file, *signature, *service, *mode;
  bool hex, json, force;
  const char *method, *symbol; /* call METHOD; list [SERVICE], describe [SYMBOL] */
  const char *output;          /* call --output: json|raw|hex|base64, NULL = by message */
  bool stream_mode;            /* call --stream */
  char *args[64];              /* certs init NAME... */
  size_t arg_count;
  const char *certs_sub;    /* certs: "init", "issue" or "revoke" */
  const char *certs_arg;    /* init: DIR; issue: NAME; revoke: CERT.pem */
  const char *spiffe[16];   /* certs issue --spiffe URI (repeatable) */
  size_t spiffe_count;
  const char *dns[16];      /* certs issue --dns NAME (repeatable) */
  size_t dns_count;
  const char *out_dir;      /* certs issue --out DIR */
  long long next_update_s;  /* certs revoke --next-update */
  bool next_update_given;
  long long connections, inflight, size;
  double duration, warmup;
  double rps;                   /* bench --rps: calls per second, open loop; 0 = closed loop */
  long long count;              /* bench -n: measured calls; 0 = until --duration */
  bool duration_given;
  const char *csv, *plot;       /* bench --csv FILE|-, --plot FILE.svg */
  bool new_conn, resume;        /* bench --new-connection, --resume (a new connection per call) */
  bool inflight_given;
  const char *seen_name[64]; /* options given, to check them against the command */
  int seen_cmds[64];
  size_t seen_count;
} cli;

typedef struct net {
  amn_client_opts copts;
  amn_call_opts call;       /* deadline (timeout) + metadata */
  amn_metadata md;
  uint32_t timeout_ms;      /* effective deadline of unary calls */
  bool timeout_given;
  char pki_storage[3 * 4096];
} net;

extern int g_level; /* the log level of --log-level */

/* util.c */
void debugf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn)); /* EX_USAGE */
void die_code(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
int flush_stdout(void);
int fail_status(int code, const char *msg);
int status_of_err(int rc);
uint64_t now_ns(void);
long long parse_int(const char *flag, const char *s, long long lo, long long hi);
double parse_duration(const char *flag, const char *s, double bare, double lo, double hi);
long long parse_timeout_ms(const char *flag, const char *s);
double parse_rate(const char *flag, const char *s);
uint8_t *slurp(const char *path, size_t *len);

/* main.c */
void add_urls(cli *o, const char *arg);
void add_header(cli *o, const char *kv);

/* net.c */
void setup_net(cli *o, amn_config *cfg, net *n);
amn_client *client_new(net *n);
/* The exit status of a call's status `code`: EX_UNAVAILABLE for UNAVAILABLE
 * when no connection to any URL was ever made (refused, unresolvable host,
 * TLS handshake failed), else the code itself. */
int exit_status(amn_client *c, int code);

/* output.c */
void hex_out(FILE *f, const uint8_t *p, size_t n);
const char *tp_name(amn_transport t);
void json_str(FILE *f, const uint8_t *p, size_t n);
bool printable_utf8(const uint8_t *p, size_t n);
void base64_out(FILE *f, const uint8_t *p, size_t n);
void json_md(FILE *f, const amn_md *md, size_t n);

/* sw.c: a client stream and the wait for its end. on_msg runs on the
 * client's I/O thread for each response. */
typedef struct swait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  unsigned writable_gen; /* bumped by on_writable */
  bool closed;
  int code;              /* the call's status, once closed */
  char *message;
  void (*on_msg)(struct swait *w, const uint8_t *msg, size_t len);
} swait;
/* Opens a stream whose callbacks report to `w` (zeroed, on_msg set). */
int sw_open(swait *w, amn_client *c, const char *method, const amn_call_opts *opts, amn_cstream **out);
bool sw_closed(swait *w);
/* Sends, waiting while the stream pushes back: 0, AMN_ECLOSED once the call ended, or the error. */
int sw_send(amn_cstream *s, swait *w, const uint8_t *m, size_t n);
/* Waits for the end of the call, releases the stream: its status (w->message
 * is the caller's to free). */
int sw_end(amn_cstream *s, swait *w);
/* Half-closes (or cancels after `local_err`), waits for the end, releases the
 * stream; prints a failure and returns the status (that of local_err first). */
int sw_finish(amn_cstream *s, swait *w, int local_err);

/* the commands */
int cmd_execute(cli *o, net *n);
int cmd_stream(cli *o, net *n);
int cmd_health(cli *o, net *n);
int cmd_bench(cli *o, net *n);
int cmd_certs(cli *o);
int cmd_call(cli *o, net *n);     /* invoke.c */
int cmd_list(cli *o, net *n);     /* reflect.c */
int cmd_describe(cli *o, net *n); /* reflect.c */

#endif
