/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What the integration tests share: a development PKI in a temporary
 * directory, the transport under test (AMN_TEST_TRANSPORT=h2|h3), event
 * counters that tests wait on (no sleeping as synchronisation), and the
 * /test.Svc/Sleep handler.
 */
#ifndef AMN_TEST_FIXTURE_H
#define AMN_TEST_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "amn/amn.h"

extern char amn_t_dir[256];          /* the temporary directory, with ca.pem, server.pem, client.pem ... */
extern amn_tls_opts amn_t_stls;      /* the server's certificate, key and CA in it */
extern amn_tls_opts amn_t_ctls;      /* the client's */
extern amn_transport amn_t_transport; /* AMN_TRANSPORT_H2 (default) or _H3 */

/* Makes the directory (named after `name`) and its PKI, reads
 * AMN_TEST_TRANSPORT. Returns 0, or -1 with the reason on stderr. */
int amn_t_setup(const char *name);
/* Removes the directory. */
void amn_t_teardown(void);
double amn_t_now_ms(void);
/* `ms` from now, as pthread_cond_timedwait wants it (CLOCK_REALTIME). */
struct timespec amn_t_deadline_in(int ms);

/* A counter that threads move and tests wait on (mutex + condition
 * variable: a waiter wakes when the value changes, not on a timer). */
typedef struct amn_t_counter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long n;
} amn_t_counter;
#define AMN_T_COUNTER_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}
void amn_t_counter_add(amn_t_counter *k, long d);
void amn_t_counter_set(amn_t_counter *k, long v);
long amn_t_counter_get(amn_t_counter *k);
/* Waits until the value is >= want (ge) or <= want (le). The timeout only
 * bounds a failing test: returns false when it passed first. */
bool amn_t_counter_wait_ge(amn_t_counter *k, long want, int timeout_ms);
bool amn_t_counter_wait_le(amn_t_counter *k, long want, int timeout_ms);

/* For state the library exposes only through statistics
 * (amn_client_stats): evaluates cond every 5 ms until it holds; false when
 * timeout_ms passed first. */
bool amn_t_poll(bool (*cond)(void *arg), void *arg, int timeout_ms);

/* /test.Svc/Sleep: the request body is a decimal number of milliseconds.
 * The handler works that long on a thread of its own, then echoes the body
 * and finishes OK; a cancelled call stops at once, and
 * amn_t_sleep_release_all ends the work of every running one now. Its
 * counters: */
extern amn_t_counter amn_t_sleep_running;   /* handlers holding a call */
extern amn_t_counter amn_t_sleep_started;   /* calls that reached the handler */
extern amn_t_counter amn_t_sleep_cancelled; /* on_cancel seen */
void amn_t_sleep_release_all(void);
amn_status_code amn_t_sleep_last_cancel_code(void); /* the code of the last on_cancel */
/* Registers it on s (before amn_server_start). */
void amn_t_register_sleep(amn_server *s);
/* Waits (up to 10 s) for every Sleep handler to let go of its call:
 * amn_server_free requires every call to be finished. */
void amn_t_sleep_quiesce(void);

#endif
