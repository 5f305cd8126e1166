/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Broken plug-ins that amaters-netd must refuse with their reason (test
 * integration.plugins), one per definition: BAD_NO_SYMBOL (no amn_plugin_v1),
 * BAD_ABI (built for another plug-in ABI), BAD_UNRESOLVED (needs a symbol
 * nobody defines), BAD_INIT_FAILS (init returns an error).
 */
#include <stdio.h>

#include "amn/plugin.h"

__attribute__((unused)) static int init_ok(amn_server *srv, const char *arg, void **state, char *err, size_t errlen) {
  (void)srv, (void)arg, (void)state, (void)err, (void)errlen;
  return 0;
}

#if defined(BAD_NO_SYMBOL)
__attribute__((visibility("default"))) const amn_plugin not_the_entry = {AMN_PLUGIN_ABI, "bad", "0", init_ok, NULL};
#elif defined(BAD_ABI)
__attribute__((visibility("default"))) const amn_plugin amn_plugin_v1 = {AMN_PLUGIN_ABI + 41, "bad", "0", init_ok,
                                                                        NULL};
#elif defined(BAD_UNRESOLVED)
int amn_no_such_function(void);
static int init_unresolved(amn_server *srv, const char *arg, void **state, char *err, size_t errlen) {
  (void)srv, (void)arg, (void)state, (void)err, (void)errlen;
  return amn_no_such_function();
}
AMN_PLUGIN_DEFINE("bad", "0", init_unresolved, NULL);
#elif defined(BAD_INIT_FAILS)
static int init_fails(amn_server *srv, const char *arg, void **state, char *err, size_t errlen) {
  (void)srv, (void)state;
  snprintf(err, errlen, "the backend's database '%s' is unreachable", arg ? arg : "(none)");
  return -1;
}
AMN_PLUGIN_DEFINE("bad", "0", init_fails, NULL);
#endif
