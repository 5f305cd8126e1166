/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The admin listener: a small HTTP/1.1 server on its own thread and socket
 * (never the gRPC port) for GET /metrics (Prometheus text exposition 0.0.4,
 * amn_server_metrics_text) and GET /healthz. One request per connection,
 * served in turn: a scrape is rare and short, and a slow client is cut off
 * after ADMIN_IO_TIMEOUT_S.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "server/admin_req.h"
#include "server/server_internal.h"
#include "util/addr.h"
#include "util/log.h"

#define ADMIN_IO_TIMEOUT_S 2

struct amn_admin {
  amn_server *srv;
  int lfd;
  int stop_pipe[2];
  pthread_t thread;
  uint16_t port;
};

static void send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

static void respond(int fd, int code, const char *reason, const char *ctype, const char *body, size_t len,
                    bool head_only) {
  char h[256];
  int n = snprintf(h, sizeof h,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
                   "Cache-Control: no-store\r\n\r\n",
                   code, reason, ctype, len);
  send_all(fd, h, (size_t)n);
  if (!head_only) send_all(fd, body, len);
}

/* The metrics text in a buffer grown to fit; NULL when memory runs out. */
static char *metrics_text(amn_server *s, size_t *len) {
  size_t cap = 64 * 1024;
  for (int tries = 0; tries < 4; tries++) {
    char *b = malloc(cap);
    if (!b) return NULL;
    size_t n = amn_server_metrics_text(s, b, cap);
    if (n == 0) {
      free(b);
      return NULL;
    }
    if (n < cap) {
      *len = n;
      return b;
    }
    free(b);
    cap = n + 4096; /* methods cannot be added after start: this fits unless counters grew digits */
  }
  return NULL;
}

static void serve_one(amn_admin *a, int fd) {
  struct timeval tv = {ADMIN_IO_TIMEOUT_S, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  char req[AMN_ADMIN_REQ_MAX];
  size_t got = 0;
  while (got < sizeof req) { /* until the end of the request's header block */
    ssize_t r = recv(fd, req + got, sizeof req - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
    if (amn_admin_request_complete(req, got)) break;
  }
  static const char txt[] = "text/plain; charset=utf-8";
  bool head = false;
  switch (amn_admin_route_request(req, got, &head)) {
  case AMN_ADMIN_INCOMPLETE: return; /* nothing complete: the client went away or was too slow */
  case AMN_ADMIN_TOO_LARGE:
    respond(fd, 431, "Request Header Fields Too Large", txt, "request too large\n", 18, false);
    return;
  case AMN_ADMIN_BAD_REQUEST: respond(fd, 400, "Bad Request", txt, "bad request\n", 12, false); return;
  case AMN_ADMIN_BAD_METHOD: respond(fd, 405, "Method Not Allowed", txt, "GET or HEAD only\n", 17, false); return;
  case AMN_ADMIN_METRICS: {
    size_t len = 0;
    char *body = metrics_text(a->srv, &len);
    if (!body) respond(fd, 500, "Internal Server Error", txt, "out of memory\n", 14, head);
    else respond(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, len, head);
    free(body);
    return;
  }
  case AMN_ADMIN_HEALTHZ: {
    amn_server_stats st;
    amn_server_get_stats(a->srv, &st);
    if (st.draining) respond(fd, 503, "Service Unavailable", txt, "draining\n", 9, head);
    else respond(fd, 200, "OK", txt, "ok\n", 3, head);
    return;
  }
  case AMN_ADMIN_NOT_FOUND: respond(fd, 404, "Not Found", txt, "not found: /metrics or /healthz\n", 32, head); return;
  }
}

static void *admin_main(void *arg) {
  amn_admin *a = arg;
  for (;;) {
    struct pollfd p[2] = {{a->lfd, POLLIN, 0}, {a->stop_pipe[0], POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      AMN_ERROR("admin listener: poll: %s", strerror(errno));
      return NULL;
    }
    if (p[1].revents) return NULL;
    if (!(p[0].revents & POLLIN)) continue;
    int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) AMN_WARN("admin listener: accept: %s", strerror(errno));
      continue;
    }
    serve_one(a, fd);
    shutdown(fd, SHUT_WR);
    close(fd);
  }
}

int amn_admin_start(amn_admin **out, amn_server *s, const char *bind_address, char *err, size_t errlen) {
  if (!out || !s || !bind_address) return amn_set_err(err, errlen, AMN_EINVAL, "admin listener: missing argument");
  *out = NULL;
  char host[256];
  uint16_t port;
  if (amn_split_hostport(bind_address, host, sizeof host, &port) != 0)
    return amn_set_err(err, errlen, AMN_EINVAL, "invalid admin address '%s' (expected HOST:PORT)", bind_address);
  struct addrinfo *res;
  int gai = amn_resolve_passive(host, port, SOCK_STREAM, &res);
  if (gai != 0)
    return amn_set_err(err, errlen, AMN_EIO, "admin listener: cannot resolve '%s': %s", host, gai_strerror(gai));
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 64) != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return amn_set_err(err, errlen, AMN_EIO, "admin listener: cannot listen on %s: %s", bind_address, strerror(e));
  }
  freeaddrinfo(res);
  amn_admin *a = calloc(1, sizeof *a);
  if (!a || pipe2(a->stop_pipe, O_CLOEXEC) != 0) {
    free(a);
    close(fd);
    return amn_set_err(err, errlen, AMN_ENOMEM, "admin listener: out of resources");
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  a->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                           : ((struct sockaddr_in6 *)&ss)->sin6_port);
  a->srv = s;
  a->lfd = fd;
  /* the thread takes no signal: they are the application's */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int prc = pthread_create(&a->thread, NULL, admin_main, a);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    close(a->stop_pipe[0]);
    close(a->stop_pipe[1]);
    close(fd);
    free(a);
    return amn_set_err(err, errlen, AMN_EIO, "admin listener: cannot start its thread");
  }
  *out = a;
  return 0;
}

uint16_t amn_admin_port(const amn_admin *a) { return a ? a->port : 0; }

void amn_admin_stop(amn_admin *a) {
  if (!a) return;
  ssize_t w;
  do w = write(a->stop_pipe[1], "x", 1);
  while (w < 0 && errno == EINTR);
  pthread_join(a->thread, NULL);
  close(a->stop_pipe[0]);
  close(a->stop_pipe[1]);
  close(a->lfd);
  free(a);
}
