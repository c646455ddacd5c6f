/*
 * aggregate_gate.c - at most N aggregate reads computed at once per child,
 * the others waiting in arrival order (aggregate_gate.h says why).
 *
 * A turn given back goes straight to the oldest waiter, woken alone: one
 * broadcast to all waiters would wake 30 threads for each turn handed on,
 * 29 of them to sleep again. Each waiter sleeps on its own semaphore, on
 * its stack, posted after the lock is released, so it does not wake into
 * a held mutex; a condition variable signalled under the lock cost more
 * (alternating at -c32, 1,000,000 traces: /analytics 7,008 req/s against
 * 8,643 without a gate; with the semaphore 7,958 against 8,710). The
 * waiter destroys its semaphore as soon as its wait returns, which POSIX
 * allows and glibc's sem_post is written for.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <unistd.h>

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>

#include "mod_tracellm.h"
#include "aggregate_gate.h"

APLOG_USE_MODULE(tracellm);

#define TLLM_AGGREGATE_GATE_AUTO (-1)    /* as many turns as online CPUs */

typedef struct waiter {
    struct waiter *next;
    sem_t wake;                 /* posted once, when the turn is its */
} waiter;

static int configured = TLLM_AGGREGATE_GATE_AUTO;

static int turns;               /* 0: no limit, enter and leave do nothing */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;  /* the 4 below */
static int free_turns;
static int waiting;
static waiter *first, *last;    /* waiting, oldest first */

/* r holds a turn when its request_config for us points here. */
static char holding;

void tllm_aggregate_gate_defaults(void)
{
    configured = TLLM_AGGREGATE_GATE_AUTO;
}

const char *tllm_aggregate_gate_set(cmd_parms *cmd, void *dconf,
                                    const char *arg)
{
    long n;
    const char *err = tllm_global_number(cmd, arg, 0, 100000, "reads",
                                         "no limit", &n);

    (void)dconf;
    if (err) {
        return err;
    }
    configured = (int)n;
    return NULL;
}

void tllm_aggregate_gate_child_init(apr_pool_t *pchild, server_rec *s)
{
    (void)pchild;
    turns = configured;
    if (turns == TLLM_AGGREGATE_GATE_AUTO) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        turns = cpus > 0 ? (int)cpus : 1;
    }
    free_turns = turns;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "TLLM0026: this child "
                 "computes at most %d aggregate reads at once (0 = no "
                 "limit)", turns);
}

void tllm_aggregate_gate_enter(request_rec *r)
{
    waiter me;
    int ahead = -1;

    if (!turns) {
        return;
    }
    pthread_mutex_lock(&lock);
    if (free_turns > 0 && !first) {
        free_turns--;
        pthread_mutex_unlock(&lock);
    }
    else {
        me.next = NULL;
        sem_init(&me.wake, 0, 0);
        if (last) {
            last->next = &me;
        }
        else {
            first = &me;
        }
        last = &me;
        ahead = waiting++;
        pthread_mutex_unlock(&lock);
        while (sem_wait(&me.wake) != 0 && errno == EINTR) {
        }
        sem_destroy(&me.wake);
    }
    ap_set_module_config(r->request_config, &tracellm_module, &holding);
    if (ahead >= 0) {
        ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r, "TLLM0027: waited "
                      "for a turn (of %d) behind %d others", turns, ahead);
    }
}

void tllm_aggregate_gate_leave(request_rec *r)
{
    waiter *next;

    if (ap_get_module_config(r->request_config, &tracellm_module)
        != &holding) {
        return;
    }
    ap_set_module_config(r->request_config, &tracellm_module, NULL);
    pthread_mutex_lock(&lock);
    next = first;
    if (next) {
        /* The turn passes on without ever being free. */
        first = next->next;
        if (!first) {
            last = NULL;
        }
        waiting--;
    }
    else {
        free_turns++;
    }
    pthread_mutex_unlock(&lock);
    if (next) {
        sem_post(&next->wake);
    }
}
