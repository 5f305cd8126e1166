/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-netd: the built-in echo handler and the loading of plug-ins. */
#include "netd_handler.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* The built-in handler is a plug-in like the others, compiled in. */
static int echo_init(amn_server *s, const char *arg, void **state, char *err, size_t errlen) {
  (void)state;
  if (arg && *arg) {
    snprintf(err, errlen, "the echo handler takes no argument (got '%s')", arg);
    return -1;
  }
  if (amn_server_use_echo(s) != 0) {
    snprintf(err, errlen, "cannot register the echo handlers");
    return -1;
  }
  return 0;
}

static const amn_plugin builtin_echo = {AMN_PLUGIN_ABI, "echo", AMN_VERSION, echo_init, NULL};

int netd_handler_open(netd_handler *h, const char *spec, char *err, size_t errlen) {
  memset(h, 0, sizeof *h);
  if (strcmp(spec, "echo") == 0) {
    h->plugin = &builtin_echo;
    return 0;
  }
  if (!strchr(spec, '/')) {
    snprintf(err, errlen, "unknown handler '%s' (echo, or the path of a plug-in with a '/', e.g. ./%s)", spec, spec);
    return -1;
  }
  dlerror();
  h->dl = dlopen(spec, RTLD_NOW | RTLD_LOCAL);
  if (!h->dl) {
    const char *why = dlerror();
    snprintf(err, errlen, "cannot load the plug-in %s: %s", spec, why ? why : "unknown error");
    return -1;
  }
  const amn_plugin *p = dlsym(h->dl, AMN_PLUGIN_SYMBOL);
  if (!p) {
    snprintf(err, errlen, "%s is not an amaters-netd plug-in: it has no symbol %s (see amn/plugin.h)", spec,
             AMN_PLUGIN_SYMBOL);
    return -1;
  }
  if (p->abi != AMN_PLUGIN_ABI) {
    snprintf(err, errlen, "%s was built for plug-in ABI %u; this amaters-netd %s loads ABI %u: rebuild it", spec,
             (unsigned)p->abi, AMN_VERSION, (unsigned)AMN_PLUGIN_ABI);
    return -1;
  }
  if (!p->init) {
    snprintf(err, errlen, "%s: the plug-in has no init function", spec);
    return -1;
  }
  h->plugin = p;
  return 0;
}

int netd_handler_init(netd_handler *h, amn_server *s, const char *arg, char *err, size_t errlen) {
  char why[900] = "";
  if (h->plugin->init(s, arg, &h->state, why, sizeof why) != 0) {
    why[sizeof why - 1] = 0;
    snprintf(err, errlen, "the plug-in %s failed to start: %s", h->plugin->name ? h->plugin->name : "(unnamed)",
             why[0] ? why : "(no reason given)");
    return -1;
  }
  h->started = true;
  return 0;
}

void netd_handler_fini(netd_handler *h) {
  if (h->started && h->plugin->fini) h->plugin->fini(h->state);
  h->started = false;
}
