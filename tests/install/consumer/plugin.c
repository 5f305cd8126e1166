/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* A handler plug-in built outside the project against the installed headers
 * (test install.pkgconfig): Execute answers "plugin: " + the query. */
#include <amn/plugin.h>
#include <stdio.h>
#include <string.h>

static void execute(amn_call *call, const amn_query *q, void *ud) {
  (void)ud;
  char out[256];
  int n = snprintf(out, sizeof out, "plugin: %.*s", (int)(q->query_len < 200 ? q->query_len : 200),
                   (const char *)q->query_bytes);
  amn_call_reply_query(call, (const uint8_t *)out, (size_t)n, NULL, 0);
}

static int init(amn_server *s, const char *arg, void **state, char *err, size_t errlen) {
  (void)arg, (void)state;
  int rc = amn_server_set_execute(s, execute, NULL);
  if (rc) snprintf(err, errlen, "%s", amn_strerror(rc));
  return rc;
}

AMN_PLUGIN_DEFINE("install-test", "1", init, NULL);
