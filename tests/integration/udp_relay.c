/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/* A lossy UDP relay for HTTP/3 tests (see udp_relay.h). */
#include "udp_relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SESS 64
#define MAX_SINKS 8
#define MAX_CAPTURE 32
#define DGRAM_MAX 65536
#define CHURN_RING 16 /* churn sockets kept per client, for the answers to late packets */

typedef struct pkt {
  uint64_t at, seq;   /* release time (ns), tie-breaker */
  int dir, sess;      /* sess: index into r->sess (-1: none) */
  size_t len;
  uint8_t data[];
} pkt;

typedef struct sess {
  bool used;
  struct sockaddr_in client;
  int fd;             /* upstream socket, connected to the server */
  int churn[CHURN_RING]; /* churn mode: the latest per-datagram sockets (-1: none) */
  unsigned nchurn;    /* sockets made so far (the ring's next slot) */
  bool capturing, answered;
} sess;

typedef struct capture {
  size_t n;
  uint8_t *data[MAX_CAPTURE];
  size_t len[MAX_CAPTURE];
} capture;

struct udp_relay {
  pthread_t thr;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int front, wake;
  uint16_t port, target;
  /* under mu */
  relay_dir_cfg cfg[2];
  relay_stats st[2];
  bool stop, capture_on, churn_on;
  uint32_t churn_addr; /* the last 127.0.0.x used (x - 2, cycling) */
  int rebind_req, rebind_done;
  int replay_req, replay_done, replay_sent;
  int nsess_seen;
  uint16_t new_target;
  capture cap;        /* last complete capture */
  /* relay thread only */
  sess sess[MAX_SESS];
  capture cur[MAX_SESS];
  int sinks[MAX_SINKS];
  pkt **heap;
  size_t nheap, capheap;
  uint64_t seq, rng;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(udp_relay *r) {
  uint64_t x = r->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return r->rng = x;
}
static double rnd01(udp_relay *r) { return (double)(rnd(r) >> 11) / (double)(1ull << 53); }

static void kick(udp_relay *r) {
  uint64_t one = 1;
  ssize_t n = write(r->wake, &one, sizeof one);
  (void)n;
}

/* ---- delayed packets: a binary min-heap on (at, seq) ---- */

static bool before(const pkt *a, const pkt *b) { return a->at < b->at || (a->at == b->at && a->seq < b->seq); }

static void heap_push(udp_relay *r, pkt *p) {
  if (r->nheap == r->capheap) {
    size_t nc = r->capheap ? r->capheap * 2 : 256;
    pkt **nh = realloc(r->heap, nc * sizeof *nh);
    if (!nh) {
      free(p);
      return;
    }
    r->heap = nh;
    r->capheap = nc;
  }
  size_t i = r->nheap++;
  r->heap[i] = p;
  while (i && before(r->heap[i], r->heap[(i - 1) / 2])) {
    pkt *t = r->heap[i];
    r->heap[i] = r->heap[(i - 1) / 2];
    r->heap[(i - 1) / 2] = t;
    i = (i - 1) / 2;
  }
}

static pkt *heap_pop(udp_relay *r) {
  pkt *top = r->heap[0];
  r->heap[0] = r->heap[--r->nheap];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, m = i;
    if (l < r->nheap && before(r->heap[l], r->heap[m])) m = l;
    if (l + 1 < r->nheap && before(r->heap[l + 1], r->heap[m])) m = l + 1;
    if (m == i) break;
    pkt *t = r->heap[i];
    r->heap[i] = r->heap[m];
    r->heap[m] = t;
    i = m;
  }
  return top;
}

/* ---- sockets ---- */

static int upstream_socket(uint16_t port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int buf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Churn mode: a new upstream socket for one datagram, bound to the next
 * 127.0.0.x (x = 2..251) and a port of the kernel's choice; the latest
 * CHURN_RING of them stay open for the server's answers. -1 on failure. */
static int churn_socket(udp_relay *r, sess *s) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(0x7f000002u + r->churn_addr++ % 250);
  struct sockaddr_in t = {.sin_family = AF_INET, .sin_port = htons(r->target)};
  t.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || connect(fd, (struct sockaddr *)&t, sizeof t) != 0) {
    close(fd);
    return -1;
  }
  int *slot = &s->churn[s->nchurn++ % CHURN_RING];
  if (*slot >= 0) close(*slot);
  *slot = fd;
  return fd;
}

static void emit(udp_relay *r, int dir, int si, const uint8_t *data, size_t len) {
  if (si < 0 || !r->sess[si].used) return;
  pthread_mutex_lock(&r->mu);
  bool churn = r->churn_on;
  pthread_mutex_unlock(&r->mu);
  ssize_t n = -1;
  int fd = dir == RELAY_C2S && churn ? churn_socket(r, &r->sess[si]) : r->sess[si].fd;
  if (dir == RELAY_C2S && fd >= 0) n = send(fd, data, len, 0);
  else if (dir == RELAY_S2C) n = sendto(r->front, data, len, 0, (struct sockaddr *)&r->sess[si].client, sizeof r->sess[si].client);
  pthread_mutex_lock(&r->mu);
  if (n >= 0) {
    r->st[dir].out++;
    r->st[dir].bytes += len;
    if (dir == RELAY_C2S && churn) r->st[dir].churned++;
  }
  pthread_mutex_unlock(&r->mu);
}

/* Applies the impairments of `dir` to one datagram, as configured when it
 * was read: a datagram sent after udp_relay_set returned gets the new
 * settings (the relay may have been waiting in poll with the old ones). */
static void forward(udp_relay *r, int dir, int si, uint8_t *data, size_t len) {
  pthread_mutex_lock(&r->mu);
  const relay_dir_cfg cfg = r->cfg[dir], *c = &cfg;
  pthread_mutex_unlock(&r->mu);
  relay_stats d = {.in = 1};
  if (c->blackhole || (c->loss > 0 && rnd01(r) < c->loss)) {
    d.dropped = 1;
    goto out;
  }
  if (c->corrupt > 0 && rnd01(r) < c->corrupt) {
    data[rnd(r) % len] ^= (uint8_t)(1u << (rnd(r) % 8));
    d.corrupted = 1;
  }
  int copies = 1;
  if (c->dup > 0 && rnd01(r) < c->dup) {
    copies = 2;
    d.duplicated = 1;
  }
  for (int k = 0; k < copies; k++) {
    uint64_t delay = (uint64_t)c->delay_ms * 1000000ull;
    if (c->jitter_ms) delay += rnd(r) % ((uint64_t)c->jitter_ms * 1000000ull + 1);
    if (k == 1) delay += rnd(r) % 2000000ull;
    if (k == 0 && c->reorder > 0 && rnd01(r) < c->reorder) {
      delay += (uint64_t)(c->reorder_ms ? c->reorder_ms : 3) * 1000000ull;
      d.reordered = 1;
    }
    if (!delay) {
      emit(r, dir, si, data, len);
      continue;
    }
    pkt *p = malloc(sizeof *p + len);
    if (!p) continue;
    p->at = now_ns() + delay;
    p->seq = r->seq++;
    p->dir = dir;
    p->sess = si;
    p->len = len;
    memcpy(p->data, data, len);
    heap_push(r, p);
  }
out:
  pthread_mutex_lock(&r->mu);
  r->st[dir].in += d.in;
  r->st[dir].dropped += d.dropped;
  r->st[dir].duplicated += d.duplicated;
  r->st[dir].reordered += d.reordered;
  r->st[dir].corrupted += d.corrupted;
  pthread_mutex_unlock(&r->mu);
}

static void capture_free(capture *c) {
  for (size_t i = 0; i < c->n; i++) free(c->data[i]);
  c->n = 0;
}

/* The first answer to a capturing client ends its first flight. */
static void capture_end(udp_relay *r, int si) {
  sess *s = &r->sess[si];
  s->answered = true;
  if (!s->capturing) return;
  s->capturing = false;
  pthread_mutex_lock(&r->mu);
  capture_free(&r->cap);
  r->cap = r->cur[si];
  memset(&r->cur[si], 0, sizeof r->cur[si]);
  pthread_mutex_unlock(&r->mu);
}

static int find_sess(udp_relay *r, const struct sockaddr_in *from) {
  int free_i = -1;
  for (int i = 0; i < MAX_SESS; i++) {
    if (r->sess[i].used && r->sess[i].client.sin_port == from->sin_port &&
        r->sess[i].client.sin_addr.s_addr == from->sin_addr.s_addr)
      return i;
    if (!r->sess[i].used && free_i < 0) free_i = i;
  }
  if (free_i < 0) return -1;
  int fd = upstream_socket(r->target);
  if (fd < 0) return -1;
  sess *s = &r->sess[free_i];
  memset(s, 0, sizeof *s);
  s->used = true;
  s->client = *from;
  s->fd = fd;
  for (int k = 0; k < CHURN_RING; k++) s->churn[k] = -1;
  capture_free(&r->cur[free_i]);
  pthread_mutex_lock(&r->mu);
  s->capturing = r->capture_on; /* read now: the setting may have changed while we slept in poll */
  r->nsess_seen++;
  pthread_mutex_unlock(&r->mu);
  return free_i;
}

static void do_rebind(udp_relay *r, uint16_t target) {
  r->target = target;
  for (int i = 0; i < MAX_SESS; i++) {
    if (!r->sess[i].used) continue;
    int fd = upstream_socket(r->target);
    if (fd < 0) continue;
    close(r->sess[i].fd);
    r->sess[i].fd = fd;
  }
}

size_t udp_relay_captured(udp_relay *r, size_t i, uint8_t *buf, size_t cap) {
  pthread_mutex_lock(&r->mu);
  size_t n = i < r->cap.n ? r->cap.len[i] : 0;
  if (n > cap) n = cap;
  if (n) memcpy(buf, r->cap.data[i], n);
  pthread_mutex_unlock(&r->mu);
  return n;
}

static int do_replay(udp_relay *r) {
  pthread_mutex_lock(&r->mu);
  capture c = r->cap;
  pthread_mutex_unlock(&r->mu);
  if (!c.n) return 0;
  int slot = -1;
  for (int i = 0; i < MAX_SINKS; i++)
    if (r->sinks[i] < 0) {
      slot = i;
      break;
    }
  if (slot < 0) return 0;
  int fd = upstream_socket(r->target);
  if (fd < 0) return 0;
  r->sinks[slot] = fd;
  int sent = 0;
  for (size_t i = 0; i < c.n; i++)
    if (send(fd, c.data[i], c.len[i], 0) >= 0) sent++;
  return sent;
}

static void *relay_main(void *arg) {
  udp_relay *r = arg;
  uint8_t *buf = malloc(DGRAM_MAX);
  enum { NPOLL = 2 + MAX_SESS * (1 + CHURN_RING) + MAX_SINKS };
  struct pollfd *pf = malloc(NPOLL * sizeof *pf);
  int *map = malloc(NPOLL * sizeof *map);
  if (!buf || !pf || !map) {
    fprintf(stderr, "udp_relay: out of memory\n");
    free(buf), free(pf), free(map);
    return NULL;
  }
  for (;;) {
    pthread_mutex_lock(&r->mu);
    bool stop = r->stop;
    int rebind = r->rebind_req != r->rebind_done, replay = r->replay_req != r->replay_done;
    uint16_t target = r->new_target;
    pthread_mutex_unlock(&r->mu);
    if (stop) break;
    if (rebind) {
      do_rebind(r, target);
      pthread_mutex_lock(&r->mu);
      r->rebind_done = r->rebind_req;
      pthread_cond_broadcast(&r->cv);
      pthread_mutex_unlock(&r->mu);
    }
    if (replay) {
      int n = do_replay(r);
      pthread_mutex_lock(&r->mu);
      r->replay_sent = n;
      r->replay_done = r->replay_req;
      pthread_cond_broadcast(&r->cv);
      pthread_mutex_unlock(&r->mu);
    }
    /* release what is due */
    uint64_t now = now_ns();
    while (r->nheap && r->heap[0]->at <= now) {
      pkt *p = heap_pop(r);
      emit(r, p->dir, p->sess, p->data, p->len);
      free(p);
    }
    int timeout = -1;
    if (r->nheap) {
      uint64_t dt = r->heap[0]->at - now;
      timeout = (int)((dt + 999999) / 1000000);
    }
    int n = 0;
    pf[n] = (struct pollfd){.fd = r->wake, .events = POLLIN};
    map[n++] = -3;
    pf[n] = (struct pollfd){.fd = r->front, .events = POLLIN};
    map[n++] = -2;
    for (int i = 0; i < MAX_SESS; i++)
      if (r->sess[i].used) {
        pf[n] = (struct pollfd){.fd = r->sess[i].fd, .events = POLLIN};
        map[n++] = i;
        for (int k = 0; k < CHURN_RING; k++)
          if (r->sess[i].churn[k] >= 0) {
            pf[n] = (struct pollfd){.fd = r->sess[i].churn[k], .events = POLLIN};
            map[n++] = i;
          }
      }
    for (int i = 0; i < MAX_SINKS; i++)
      if (r->sinks[i] >= 0) {
        pf[n] = (struct pollfd){.fd = r->sinks[i], .events = POLLIN};
        map[n++] = -100 - i;
      }
    if (poll(pf, (nfds_t)n, timeout) < 0 && errno != EINTR) break;
    for (int k = 0; k < n; k++) {
      if (!(pf[k].revents & (POLLIN | POLLERR))) continue;
      if (map[k] == -3) {
        uint64_t v;
        ssize_t rr = read(r->wake, &v, sizeof v);
        (void)rr;
        continue;
      }
      for (int burst = 0; burst < 64; burst++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t len = recvfrom(pf[k].fd, buf, DGRAM_MAX, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (len < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          if (errno == ECONNREFUSED || errno == EINTR) continue; /* server port closed: keep going */
          break;
        }
        if (len == 0) continue;
        if (map[k] <= -100) continue; /* answers to a replay: dropped */
        if (map[k] == -2) {
          int si = find_sess(r, &from);
          if (si < 0) continue;
          sess *s = &r->sess[si];
          capture *c = &r->cur[si];
          if (s->capturing && !s->answered && c->n < MAX_CAPTURE && (c->data[c->n] = malloc((size_t)len))) {
            memcpy(c->data[c->n], buf, (size_t)len);
            c->len[c->n++] = (size_t)len;
          }
          forward(r, RELAY_C2S, si, buf, (size_t)len);
        } else {
          int si = map[k];
          if (!r->sess[si].answered) capture_end(r, si);
          forward(r, RELAY_S2C, si, buf, (size_t)len);
        }
      }
    }
  }
  free(buf);
  free(pf);
  free(map);
  return NULL;
}

udp_relay *udp_relay_start(uint16_t server_port, uint64_t seed) {
  udp_relay *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
  r->target = r->new_target = server_port;
  for (int i = 0; i < MAX_SINKS; i++) r->sinks[i] = -1;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  r->front = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  int buf = 4 << 20;
  if (r->front >= 0) {
    setsockopt(r->front, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    setsockopt(r->front, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  }
  if (r->wake < 0 || r->front < 0 || bind(r->front, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(r->front, (struct sockaddr *)&a, &al) != 0) {
    fprintf(stderr, "udp_relay: socket setup: %s\n", strerror(errno));
    if (r->front >= 0) close(r->front);
    if (r->wake >= 0) close(r->wake);
    free(r);
    return NULL;
  }
  r->port = ntohs(a.sin_port);
  if (pthread_create(&r->thr, NULL, relay_main, r) != 0) {
    close(r->front);
    close(r->wake);
    free(r);
    return NULL;
  }
  return r;
}

uint16_t udp_relay_port(const udp_relay *r) { return r->port; }

void udp_relay_set(udp_relay *r, int dir, const relay_dir_cfg *cfg) {
  pthread_mutex_lock(&r->mu);
  r->cfg[dir] = *cfg;
  pthread_mutex_unlock(&r->mu);
  kick(r);
}

void udp_relay_clear(udp_relay *r) {
  relay_dir_cfg none = {0};
  udp_relay_set(r, RELAY_C2S, &none);
  udp_relay_set(r, RELAY_S2C, &none);
}

void udp_relay_stats(udp_relay *r, int dir, relay_stats *out) {
  pthread_mutex_lock(&r->mu);
  *out = r->st[dir];
  pthread_mutex_unlock(&r->mu);
}

static void wait_op(udp_relay *r, int *req, int *done) {
  pthread_mutex_lock(&r->mu);
  int want = ++*req;
  pthread_mutex_unlock(&r->mu);
  kick(r);
  pthread_mutex_lock(&r->mu);
  while (*done != want && !r->stop) pthread_cond_wait(&r->cv, &r->mu);
  pthread_mutex_unlock(&r->mu);
}

void udp_relay_set_target(udp_relay *r, uint16_t server_port) {
  pthread_mutex_lock(&r->mu);
  r->new_target = server_port;
  pthread_mutex_unlock(&r->mu);
  wait_op(r, &r->rebind_req, &r->rebind_done);
}

void udp_relay_rebind(udp_relay *r) { wait_op(r, &r->rebind_req, &r->rebind_done); }

void udp_relay_churn(udp_relay *r, bool on) {
  pthread_mutex_lock(&r->mu);
  r->churn_on = on;
  pthread_mutex_unlock(&r->mu);
  kick(r);
}

void udp_relay_capture(udp_relay *r, bool on) {
  pthread_mutex_lock(&r->mu);
  r->capture_on = on;
  pthread_mutex_unlock(&r->mu);
}

int udp_relay_replay(udp_relay *r) {
  wait_op(r, &r->replay_req, &r->replay_done);
  pthread_mutex_lock(&r->mu);
  int n = r->replay_sent;
  pthread_mutex_unlock(&r->mu);
  return n;
}

int udp_relay_sessions(udp_relay *r) {
  pthread_mutex_lock(&r->mu);
  int n = r->nsess_seen;
  pthread_mutex_unlock(&r->mu);
  return n;
}

void udp_relay_stop(udp_relay *r) {
  if (!r) return;
  pthread_mutex_lock(&r->mu);
  r->stop = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  kick(r);
  pthread_join(r->thr, NULL);
  for (int i = 0; i < MAX_SESS; i++) {
    if (r->sess[i].used) {
      close(r->sess[i].fd);
      for (int k = 0; k < CHURN_RING; k++)
        if (r->sess[i].churn[k] >= 0) close(r->sess[i].churn[k]);
    }
    capture_free(&r->cur[i]);
  }
  for (int i = 0; i < MAX_SINKS; i++)
    if (r->sinks[i] >= 0) close(r->sinks[i]);
  while (r->nheap) free(heap_pop(r));
  free(r->heap);
  capture_free(&r->cap);
  close(r->front);
  close(r->wake);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r);
}
