/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Small helpers shared by the example programs (public API only):
 * TLS files from a development PKI directory, and waiting for SIGINT/SIGTERM.
 */
#ifndef AMN_EXAMPLE_H
#define AMN_EXAMPLE_H

#include <amn/amn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>

/* Storage for the three paths amn_pki_paths writes (it must outlive the options). */
typedef struct ex_tls_files {
  char paths[3 * 4096];
} ex_tls_files;

/* Fills `tls` with the files of `role` ("server" or "client") from the
 * development PKI in `dir` (NULL: the default PKI directory, as amaters-netd
 * and amaters-cli use), creating the PKI if it does not exist yet.
 * A real deployment sets tls->cert_path, key_path and ca_path to its own PEM
 * files instead. Returns 0, or prints the reason and returns -1. */
static inline int ex_tls_from_pki(const char *dir, const char *role, amn_tls_opts *tls, ex_tls_files *files) {
  char def[4096], err[512];
  if (!dir) {
    if (amn_pki_default_dir(def, sizeof def) != 0) return fprintf(stderr, "no default PKI directory\n"), -1;
    dir = def;
  }
  if (!amn_pki_exists(dir) && amn_pki_init(dir, false, err, sizeof err) != 0)
    return fprintf(stderr, "pki %s: %s\n", dir, err), -1;
  if (amn_pki_paths(dir, role, tls, files->paths, sizeof files->paths) != 0)
    return fprintf(stderr, "pki %s: bad directory\n", dir), -1;
  return 0;
}

/* Servers: block SIGINT and SIGTERM before any thread starts (the library's
 * threads inherit the mask), so that the main thread can take them with
 * sigwait() and stop the server outside of a signal handler. */
static inline void ex_block_stop_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, set, NULL);
}

static inline int ex_wait_stop_signal(const sigset_t *set) {
  int sig = 0;
  sigwait(set, &sig);
  return sig;
}

#endif
