/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-cli: what the command's files share (options, client set-up,
 * output and parsing helpers). One file per command: main.c (command line),
 * net.c (client set-up), output.c (JSON, base64, hex), call.c (execute,
 * stream, health), bench.c, certs.c; util.c (errors, numbers, durations).
 */
#ifndef AMN_CLI_H
#define AMN_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "amn/amn.h"

#define PROG "amaters-cli"
#define EXIT_USAGE 2

enum { C_EXEC = 1, C_STREAM = 2, C_HEALTH = 4, C_BENCH = 8, C_CERTS = 16, C_NET = 15, C_ALL = 31 };

typedef struct cli {
  /* global */
  const char *ca, *cert, *key, *pki_dir, *server_name, *config, *log_level;
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
  const char *data, *data_file, *signature, *service, *certs_dir, *mode;
  bool hex, json, force, certs_init_seen;
  long long connections, inflight, size;
  double duration, warmup;
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
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
int fail_status(int code, const char *msg);
int status_of_err(int rc);
uint64_t now_ns(void);
long long parse_int(const char *flag, const char *s, long long lo, long long hi);
double parse_duration(const char *flag, const char *s, double bare, double lo, double hi);
long long parse_timeout_ms(const char *flag, const char *s);
uint8_t *slurp(const char *path, size_t *len);

/* main.c */
void add_urls(cli *o, const char *arg);

/* net.c */
void setup_net(cli *o, amn_config *cfg, net *n);
amn_client *client_new(net *n);

/* output.c */
void hex_out(FILE *f, const uint8_t *p, size_t n);
const char *tp_name(amn_transport t);
void json_str(FILE *f, const uint8_t *p, size_t n);
bool printable_utf8(const uint8_t *p, size_t n);
void base64_out(FILE *f, const uint8_t *p, size_t n);
void json_md(FILE *f, const amn_md *md, size_t n);

/* the commands */
int cmd_execute(cli *o, net *n);
int cmd_stream(cli *o, net *n);
int cmd_health(cli *o, net *n);
int cmd_bench(cli *o, net *n);
int cmd_certs(cli *o);

#endif
