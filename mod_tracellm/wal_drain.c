/*
 * wal_drain.c - see wal_drain.h.
 */
#include <apr_atomic.h>
#include <apr_shm.h>

#include "wal_drain.h"

/* Short enough that a request arriving mid-drain waits little past its
 * end; the drain itself lasts tens to hundreds of milliseconds. */
#define POLL_INTERVAL apr_time_from_msec(1)

typedef struct {
    apr_uint64_t deadline;      /* apr_time_t; 0 = no drain */
    apr_uint32_t held;          /* requests held back by this drain */
} drain_state;

static drain_state *shared;

apr_status_t tllm_wal_drain_create(apr_pool_t *pconf)
{
    apr_shm_t *shm;
    apr_status_t rv;

    shared = NULL;
    /* Anonymous: inherited by the children httpd forks, and unmapped with
     * pconf at a restart. */
    rv = apr_shm_create(&shm, sizeof(*shared), NULL, pconf);
    if (rv == APR_SUCCESS) {
        shared = apr_shm_baseaddr_get(shm);
        apr_atomic_set64(&shared->deadline, 0);
        apr_atomic_set32(&shared->held, 0);
    }
    return rv;
}

void tllm_wal_drain_open(apr_interval_time_t budget)
{
    if (shared) {
        apr_atomic_set32(&shared->held, 0);
        apr_atomic_set64(&shared->deadline,
                         (apr_uint64_t)(apr_time_now() + budget));
    }
}

unsigned tllm_wal_drain_close(void)
{
    if (!shared) {
        return 0;
    }
    apr_atomic_set64(&shared->deadline, 0);
    return apr_atomic_xchg32(&shared->held, 0);
}

static int draining(void)
{
    apr_uint64_t until = apr_atomic_read64(&shared->deadline);

    return until != 0 && (apr_uint64_t)apr_time_now() < until;
}

void tllm_wal_drain_wait(void)
{
    if (!shared || !draining()) {
        return;
    }
    apr_atomic_inc32(&shared->held);
    do {
        apr_sleep(POLL_INTERVAL);
    } while (draining());
}
