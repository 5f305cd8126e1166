/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * echo_server — the smallest useful amaters-net server.
 *
 *   echo_server [PKI_DIR [HOST:PORT]]
 *
 * Serves amaters.v1.AmateRS over HTTP/2 (TCP) and HTTP/3 (QUIC) on the same
 * port, with mutual TLS from a development PKI (PKI_DIR, default: the default
 * PKI directory, created if missing). Execute answers result_bytes =
 * query_bytes; ExecuteStream answers every query the same way, with
 * backpressure. Prints "echo_server: listening on https://localhost:PORT",
 * stops gracefully on SIGINT or SIGTERM.
 *
 * The handlers are in echo.c; echo_plugin.c runs the same inside amaters-netd.
 *
 * Try it:  echo_server & amaters-cli https://localhost:7878 execute --data hi
 */
#include "echo.h"
#include "example.h"

int main(int argc, char **argv) {
  const char *pki_dir = argc > 1 ? argv[1] : NULL;
  char err[512] = "";
  sigset_t stop;
  ex_block_stop_signals(&stop);

  amn_server_opts o;
  amn_server_opts_init(&o); /* the documented defaults; override what you need */
  o.listen = argc > 2 ? argv[2] : "127.0.0.1:7878";
  o.transport = AMN_TRANSPORT_BOTH;
  ex_tls_files files;
  if (ex_tls_from_pki(pki_dir, "server", &o.tls, &files) != 0) return 1;

  amn_server *srv;
  if (amn_server_new(&srv, &o, err, sizeof err) != 0) return fprintf(stderr, "echo_server: %s\n", err), 1;
  ex_echo_register(srv); /* the handlers: echo.c */
  if (amn_server_start(srv, err, sizeof err) != 0) {
    fprintf(stderr, "echo_server: %s\n", err);
    amn_server_free(srv);
    return 1;
  }
  printf("echo_server: listening on https://localhost:%u\n", (unsigned)amn_server_port(srv));
  fflush(stdout);

  ex_wait_stop_signal(&stop);
  amn_server_stop(srv); /* drain: calls in flight finish, then the loops exit */
  amn_server_free(srv);
  printf("echo_server: stopped\n");
  return 0;
}
