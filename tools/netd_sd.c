/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* amaters-netd under a service manager: sd_notify and socket activation (netd_sd.h). */
#include "netd_sd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "amn/amn.h"

#ifdef AMN_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

static bool g_notify;
static uint64_t g_watchdog_usec;

bool netd_sd_init(void) {
  const char *ns = getenv("NOTIFY_SOCKET");
#ifdef AMN_HAVE_SYSTEMD
  g_notify = ns && *ns;
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) g_watchdog_usec = usec;
#else
  if (ns && *ns)
    amn_log_message(AMN_LOG_WARN, "amaters-netd",
                    "NOTIFY_SOCKET is set but amaters-netd was built without libsystemd: no readiness "
                    "notification (use Type=simple, or build with libsystemd-dev)");
#endif
  return g_notify;
}

void netd_sd_notify(const char *fmt, ...) {
  if (!g_notify) return;
#ifdef AMN_HAVE_SYSTEMD
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  int rc = sd_notify(0, buf);
  if (rc < 0)
    amn_log_message(AMN_LOG_WARN, "amaters-netd", "sd_notify: %s", strerror(-rc));
#else
  (void)fmt;
#endif
}

void netd_sd_reloading(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  netd_sd_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration",
                 (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u);
}

uint64_t netd_sd_watchdog_usec(void) { return g_watchdog_usec; }

int netd_sd_listen_fds(int *tcp, int *udp, char *err, size_t errlen) {
  *tcp = *udp = -1;
  const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
  if (!fds) return 0;
  if (!pid || strtol(pid, NULL, 10) != (long)getpid()) {
    snprintf(err, errlen,
             "LISTEN_FDS=%s is set but LISTEN_PID=%s is not this process (%ld): the sockets were passed to another "
             "process",
             fds, pid ? pid : "(unset)", (long)getpid());
    return -1;
  }
#ifdef AMN_HAVE_SYSTEMD
  char **names = NULL;
  int n = sd_listen_fds_with_names(1, &names);
  int rc = 0;
  if (n < 0) {
    snprintf(err, errlen, "LISTEN_FDS=%s: %s", fds, strerror(-n));
    return -1;
  }
  if (n == 0) {
    snprintf(err, errlen, "LISTEN_FDS=%s: no socket was passed", fds);
    rc = -1;
  }
  for (int i = 0; i < n && !rc; i++) {
    int fd = SD_LISTEN_FDS_START + i;
    const char *name = names && names[i] ? names[i] : "unknown";
    if (sd_is_socket_inet(fd, 0, SOCK_STREAM, 1, 0) > 0) {
      if (*tcp >= 0) snprintf(err, errlen, "LISTEN_FDS: two TCP sockets passed (descriptors %d and %d, %s): one is served", *tcp, fd, name), rc = -1;
      else *tcp = fd;
    } else if (sd_is_socket_inet(fd, 0, SOCK_DGRAM, -1, 0) > 0) {
      if (*udp >= 0) snprintf(err, errlen, "LISTEN_FDS: two UDP sockets passed (descriptors %d and %d, %s): one is served", *udp, fd, name), rc = -1;
      else *udp = fd;
    } else {
      snprintf(err, errlen,
               "LISTEN_FDS: descriptor %d (%s) is neither a listening TCP socket nor a UDP socket of IPv4 or IPv6",
               fd, name);
      rc = -1;
    }
  }
  if (names)
    for (int i = 0; i < n; i++) free(names[i]);
  free(names);
  if (rc) *tcp = *udp = -1;
  return rc;
#else
  snprintf(err, errlen,
           "LISTEN_FDS is set (socket activation) but amaters-netd was built without libsystemd: it cannot take "
           "the sockets");
  return -1;
#endif
}
