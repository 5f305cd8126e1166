/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-net — handler plug-ins for amaters-netd.
 *
 * A plug-in is a shared object that amaters-netd loads at start
 * (`--handler ./my_backend.so`, or `[server] handler` in the configuration)
 * so that an AmateRS backend serves its queries inside the daemon — TLS,
 * configuration, logs, metrics, reload and drain included — without a main
 * of its own. It defines one symbol, an amn_plugin named amn_plugin_v1
 * (AMN_PLUGIN_SYMBOL), most simply with AMN_PLUGIN_DEFINE.
 *
 * Build it against the public headers and do NOT link libamaters-net: the
 * daemon carries the library and exports its public API to the plug-ins it
 * loads, so that the plug-in and the daemon share one copy of it:
 *
 *     cc -shared -fPIC -o my_backend.so my_backend.c $(pkg-config --cflags amaters-net)
 *
 * Lifecycle (every step on the daemon's main thread):
 *  1. amaters-netd loads the file (dlopen, RTLD_NOW: every symbol must
 *     resolve now) and checks that the plug-in's `abi` equals its own
 *     AMN_PLUGIN_ABI. `--check-config` stops here.
 *  2. init(server, arg, &state, err, errlen) after amn_server_new and before
 *     amn_server_start. It registers the handlers (amn_server_set_execute,
 *     amn_server_set_execute_stream, amn_server_register,
 *     amn_server_set_health) and may start the plug-in's own threads. `arg`
 *     is the string of `--handler-arg` / `[server] handler_arg`, or NULL.
 *     It returns 0, or nonzero with a message in err (NUL-terminated, at
 *     most errlen bytes): the daemon then exits with status 2, printing it.
 *     What it stores in *state is given to fini.
 *  3. The server runs; the handlers run as in any application (on the event
 *     loop threads, never blocking; long work goes to the plug-in's threads,
 *     which may answer from there: see examples/worker_pool.c).
 *  4. After SIGTERM/SIGINT the server drains and stops; calls the drain did
 *     not let finish are cancelled. Then fini(state) (may be NULL): it stops
 *     the plug-in's threads, and every call it still holds must be finished
 *     (amn_call_finish, amn_call_reply_query) before it returns, because
 *     amn_server_free follows.
 * A plug-in is never unloaded. One plug-in per daemon.
 */
#ifndef AMN_PLUGIN_H
#define AMN_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The version of struct amn_plugin and of its calling contract. A daemon
 *  loads only plug-ins built with the same value. */
#define AMN_PLUGIN_ABI 1u

/** The name of the symbol amaters-netd looks up. */
#define AMN_PLUGIN_SYMBOL "amn_plugin_v1"

/** What a plug-in exports (as the constant object amn_plugin_v1). */
typedef struct amn_plugin {
  uint32_t abi;        /**< AMN_PLUGIN_ABI of the headers it was built with */
  const char *name;    /**< short name for the daemon's log, e.g. "fhe-backend" */
  const char *version; /**< the plug-in's own version, for the log */
  /** Registers the handlers on `server` (see step 2 above). Required. */
  int (*init)(amn_server *server, const char *arg, void **state, char *err, size_t errlen);
  /** Stops the plug-in after the server stopped (see step 4). May be NULL. */
  void (*fini)(void *state);
} amn_plugin;

/** Defines the plug-in's exported amn_plugin_v1 with this header's ABI:
 *  AMN_PLUGIN_DEFINE("echo", "1.0", my_init, my_fini); */
#define AMN_PLUGIN_DEFINE(NAME, VERSION, INIT, FINI)                                                        \
  __attribute__((visibility("default"))) const amn_plugin amn_plugin_v1 = {AMN_PLUGIN_ABI, (NAME), (VERSION), \
                                                                           (INIT), (FINI)}

#ifdef __cplusplus
}
#endif
#endif
