/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * amaters-netd under a service manager (systemd): readiness notifications
 * (sd_notify) and the sockets of socket activation (LISTEN_FDS). Built with
 * libsystemd when CMake finds it (AMN_HAVE_SYSTEMD); without it these say,
 * once, that the daemon cannot notify (only when NOTIFY_SOCKET is set) and
 * refuse inherited sockets.
 */
#ifndef AMN_NETD_SD_H
#define AMN_NETD_SD_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

/* Checks the environment once at start: whether a service manager waits
 * for notifications (NOTIFY_SOCKET), and its watchdog interval. Returns
 * true when notifications go somewhere. */
bool netd_sd_init(void);
/* Sends one notification ("READY=1\nSTATUS=..."), printf-style; nothing
 * without a service manager. */
void netd_sd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* RELOADING=1 with MONOTONIC_USEC (systemd's Type=notify-reload protocol). */
void netd_sd_reloading(void);
/* The watchdog interval the service manager asks for (WATCHDOG_USEC, for
 * this process), in microseconds; 0 when none. */
uint64_t netd_sd_watchdog_usec(void);

/* The sockets a service manager passed (LISTEN_FDS, LISTEN_PID,
 * LISTEN_FDNAMES): at most one TCP (listening stream) and one UDP
 * (datagram) socket, IPv4 or IPv6. *tcp and *udp are -1 when not passed.
 * Returns 0 (also when no socket was passed), or -1 with the reason in
 * err (a socket of another kind, two of one kind, LISTEN_PID naming
 * another process, a daemon built without libsystemd). The variables are
 * removed from the environment. */
int netd_sd_listen_fds(int *tcp, int *udp, char *err, size_t errlen);

#endif
