/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * echo_plugin — the echo handlers (echo.c) as a plug-in of amaters-netd:
 *
 *   amaters-netd --handler ./libamaters_echo.so
 *
 * A plug-in exports one amn_plugin (AMN_PLUGIN_DEFINE, amn/plugin.h) whose
 * init registers its handlers on the daemon's server before it starts. It is
 * built against the public headers only and links nothing of amaters-net:
 * the daemon provides the library.
 */
#include <stdio.h>

#include "echo.h"

static int echo_init(amn_server *srv, const char *arg, void **state, char *err, size_t errlen) {
  (void)state;
  if (arg) return snprintf(err, errlen, "echo takes no argument (got '%s')", arg), -1;
  int rc = ex_echo_register(srv);
  if (rc) return snprintf(err, errlen, "cannot register the handlers: %s", amn_strerror(rc)), -1;
  return 0;
}

AMN_PLUGIN_DEFINE("echo-example", "1.0", echo_init, NULL);
