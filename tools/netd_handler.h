/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-netd: the handler it serves — the built-in echo, or a plug-in
 * loaded from a shared object (include/amn/plugin.h).
 */
#ifndef AMN_NETD_HANDLER_H
#define AMN_NETD_HANDLER_H

#include <stddef.h>

#include "amn/amn.h"

typedef struct netd_handler {
  const amn_plugin *plugin; /* the built-in echo's, or the loaded file's */
  void *dl;                 /* the loaded file (never closed), or NULL */
  void *state;              /* what init gave */
  bool started;             /* init succeeded: fini is due */
} netd_handler;

/* Finds the handler `spec` names: "echo" (the built-in), or a path with a
 * '/' to a plug-in (loaded and its ABI checked). Returns 0, or -1 with the
 * reason in err. */
int netd_handler_open(netd_handler *h, const char *spec, char *err, size_t errlen);

/* Runs the plug-in's init on a server that has not started. Returns 0, or
 * -1 with the reason in err. */
int netd_handler_init(netd_handler *h, amn_server *s, const char *arg, char *err, size_t errlen);

/* Runs the plug-in's fini (once, if init succeeded), after the server stopped. */
void netd_handler_fini(netd_handler *h);

#endif
