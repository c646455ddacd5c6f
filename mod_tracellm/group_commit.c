/*
 * group_commit.c - one write transaction for the traces of several
 * concurrent requests of a child.
 *
 * A write transaction has a fixed cost whatever it holds: the pages it
 * touches read again (another connection's commit made this connection's
 * cache stale), the rollup rows and the right-hand edges of the time
 * indexes written to the WAL once more, the commit. A single-trace POST
 * paid all of it for one trace. So requests of a child that come to
 * write while another is writing wait in a queue; when the writer is done,
 * one of them (the leader) takes the write lock (write_lock.h), then the
 * queue's head, stores every request's traces in one transaction (on the
 * connection of the group's first request: requests of virtual hosts
 * with their own databases are not grouped together) and wakes the
 * others with their own results. Each request is answered only after the
 * commit that holds its traces.
 *
 * The queue is taken after the lock, not before: while the leader waits
 * for another child's transaction, this child's new requests still join
 * its group. Transactions grow, and a transaction's cost is mostly fixed
 * (raw SQLite, 200,000 rows: 9,845 rows/s committing every 100, 14,796
 * every 400). Batch ingest went from 10,649 and 10,664 traces/s to
 * 11,290 and 11,460, single POSTs from 7,049 and 7,954 to 8,992 and 8,295
 * (scripts/bench --quick --traces 200000, alternating; BENCHMARKS.md).
 *
 * If the group's transaction fails, each of its requests is written again
 * alone, so no request fails because of another's traces.
 *
 * The leader tells the event process once a group, with the group's
 * newest seq: it reads every row past its cursor anyway, and one
 * datagram per request woke it for every member (single POSTs at -c32:
 * 7.9 against 13.5 us of its CPU a POST, 0.10 against 0.30 context
 * switches).
 *
 * Each waiting request sleeps on its own semaphore, on its stack, and is
 * woken once: when its group is committed, or when it is the queue's
 * head and the leader before it is done, to lead next. A broadcast to one
 * condition variable woke every waiter of the child at every commit,
 * most of them to sleep again (at -c32 of single POSTs, futex calls of
 * every kind were a sixth of the children's time: perf). Woken one by
 * one, the children switched 5.03 and 4.66 times a request against 5.96
 * and 5.56 (8 s of single POSTs at -c32, fresh data, alternating); the
 * rate stayed within its noise (4,206 and 4,804 against 4,238 and 5,099
 * a second).
 */
#include <errno.h>
#include <semaphore.h>
#include <string.h>

#include <httpd.h>
#include <http_log.h>
#include <apr_thread_mutex.h>

#include "mod_tracellm.h"
#include "eventd_supervisor.h"
#include "group_commit.h"
#include "write_lock.h"

APLOG_USE_MODULE(tracellm);

/* A group stops growing at this many traces (ten batches of 100), which
 * bounds how long the write lock is held at once. */
#define GROUP_MAX_TRACES 1000

typedef struct pending {
    tllm_db *db;                    /* the request's own connection */
    const char *file;               /* its database (tllm_db_file) */
    tllm_trace *const *traces;
    int n;
    int *results;
    int64_t last_seq;
    int rv;
    int done;                       /* written (or failed) and answered */
    sem_t wake;                     /* posted once: done, or to lead */
    struct pending *next;
} pending;

/* The queue and leader_busy, which is 1 from the moment a request leads
 * until the last leader finds the queue empty; leadership passes from
 * one request to the next without ever being free. */
static apr_thread_mutex_t *queue_mutex;
static pending *queue_head, **queue_tail = &queue_head;
static int leader_busy;

void tllm_group_commit_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;

    rv = apr_thread_mutex_create(&queue_mutex, APR_THREAD_MUTEX_DEFAULT,
                                 pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "TLLM0013: cannot "
                     "create the group commit queue; requests write alone");
        queue_mutex = NULL;
    }
}

/* Take requests from the head of the queue, at least one, while they
 * write the head's database (virtual hosts may each have their own) and
 * until the group holds GROUP_MAX_TRACES. Called with queue_mutex held. */
static pending *take_group(void)
{
    pending *group = queue_head, *last = queue_head;
    int traces = last->n;

    while (last->next && traces + last->next->n <= GROUP_MAX_TRACES
           && strcmp(last->next->file, group->file) == 0) {
        last = last->next;
        traces += last->n;
    }
    queue_head = last->next;
    if (!queue_head) {
        queue_tail = &queue_head;
    }
    last->next = NULL;
    return group;
}

static int write_together(tllm_db *db, pending *group)
{
    pending *g;
    int rv = tllm_store_write_begin(db);

    for (g = group; g && rv == TLLM_OK; g = g->next) {
        rv = tllm_store_traces_put_in(db, g->traces, g->n, g->results,
                                      &g->last_seq);
    }
    if (rv != TLLM_OK) {
        tllm_store_write_rollback(db);
        return rv;
    }
    return tllm_store_write_commit(db);
}

/* The newest seq a group's commit made visible, 0 if none. */
static int64_t newest_seq(const pending *group)
{
    int64_t newest = 0;

    for (; group; group = group->next) {
        if (group->rv == TLLM_OK && group->last_seq > newest) {
            newest = group->last_seq;
        }
    }
    return newest;
}

/* Write a group with db, a connection to the group's database; the
 * caller holds the write lock. */
static void write_group(request_rec *r, tllm_db *db, pending *group)
{
    pending *g;

    if (write_together(db, group) == TLLM_OK) {
        int requests = 0, traces = 0;

        for (g = group; g; g = g->next) {
            g->rv = TLLM_OK;
            requests++;
            traces += g->n;
        }
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "TLLM0015: committed "
                      "%d request(s), %d trace(s) in one transaction",
                      requests, traces);
    }
    else if (!group->next) {
        group->rv = TLLM_ERROR;
        tllm_db_copy_error(group->db, db);
    }
    else {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "TLLM0014: a group "
                      "commit failed (%s); writing its requests one by one",
                      tllm_db_errmsg(db));
        for (g = group; g; g = g->next) {
            g->rv = tllm_store_traces_put(db, g->traces, g->n, g->results,
                                          &g->last_seq);
            if (g->rv != TLLM_OK) {
                tllm_db_copy_error(g->db, db);
            }
        }
    }
}

static void wait_for_wake(pending *me)
{
    while (sem_wait(&me->wake) != 0 && errno == EINTR) {
    }
}

/* Lead until me is written: take the write lock, then the queue's head
 * as a group, write it and wake its requests; once me is done, hand the
 * lead to the queue's new head, or free it if the queue is empty. A
 * request is woken after queue_mutex is released, so it does not wake
 * into a held mutex, and never touched again once woken: its pending
 * lives on its stack. */
static void lead(request_rec *r, pending *me)
{
    while (!me->done) {
        pending *group, *g, *next, *successor = NULL;
        int held = tllm_write_lock(r);
        int64_t newest;

        /* Taken once the lock is held: while another child writes, this
         * child's requests keep joining the group. */
        apr_thread_mutex_lock(queue_mutex);
        group = take_group();
        apr_thread_mutex_unlock(queue_mutex);

        /* The head's connection: the leader's may be to another
         * database. Its request waits, so no one else uses it now. */
        write_group(r, group->db, group);
        tllm_write_unlock(r, held);
        newest = newest_seq(group);     /* read before anyone is woken */

        apr_thread_mutex_lock(queue_mutex);
        for (g = group; g; g = g->next) {
            g->done = 1;
        }
        if (me->done) {
            successor = queue_head;
            leader_busy = successor != NULL;
        }
        apr_thread_mutex_unlock(queue_mutex);
        for (g = group; g; g = next) {
            next = g->next;
            if (g != me) {
                sem_post(&g->wake);
            }
        }
        if (successor) {
            sem_post(&successor->wake);
        }
        /* One wake-up of the event process for the whole group, not one
         * per request: it reads every row past its cursor anyway. */
        if (newest > 0) {
            tllm_eventd_notify(newest);
        }
    }
}

/* Queue me; lead if no one does, else sleep until woken: written, or
 * the queue's head when the leader before is done. */
static void lead_or_wait(request_rec *r, pending *me)
{
    int leading;

    sem_init(&me->wake, 0, 0);
    apr_thread_mutex_lock(queue_mutex);
    *queue_tail = me;
    queue_tail = &me->next;
    leading = !leader_busy;
    leader_busy = 1;
    apr_thread_mutex_unlock(queue_mutex);
    if (!leading) {
        wait_for_wake(me);
    }
    if (!me->done) {
        lead(r, me);
    }
    sem_destroy(&me->wake);
}

int tllm_group_commit_put(request_rec *r, tllm_db *db,
                          tllm_trace *const *traces, int n, int *results,
                          int64_t *last_seq)
{
    pending me = { .db = db, .file = tllm_db_file(db), .traces = traces,
                   .n = n, .results = results, .rv = TLLM_ERROR };
    int wal_pages, copied;
    tllm_wal_restart restart;

    if (queue_mutex) {
        lead_or_wait(r, &me);
    }
    else {
        int held = tllm_write_lock(r);
        int64_t newest;

        write_group(r, db, &me);    /* a group of one */
        tllm_write_unlock(r, held);
        newest = newest_seq(&me);
        if (newest > 0) {
            tllm_eventd_notify(newest);
        }
    }
    if (tllm_store_wal_restart_report(db, &restart)) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "TLLM0025: WAL at its "
                      "bound (%d pages) %s after %" APR_TIME_T_FMT " ms; %u "
                      "request(s) held back meanwhile", restart.pages,
                      restart.started_over ? "started over"
                                           : "still read, not started over",
                      apr_time_as_msec(restart.took), restart.held);
    }
    /* Only the connection that committed asks for it, the one of its
     * group's first request; the rest of the group has been woken
     * already. */
    if (tllm_store_checkpoint_early(db, &wal_pages, &copied)) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "TLLM0020: WAL copied "
                      "back outside the write lock: %d of %d pages",
                      copied, wal_pages);
    }
    if (last_seq) {
        *last_seq = me.rv == TLLM_OK ? me.last_seq : 0;
    }
    return me.rv;
}
