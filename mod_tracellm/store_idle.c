/*
 * store_idle.c - the connections a child has attached, so that the child's
 * trimming thread (child_memory.c) can hand back the page caches of those
 * no request is using once the child has gone quiet.
 *
 * A page cache does not keep its pages long anyway: in WAL mode a
 * connection drops its whole cache whenever another connection has
 * written since its last read, so under ingest the caches are refilled
 * from the operating system's page cache all the time. Kept while the
 * child is idle, though, they are what a child's memory grows by: each
 * cache fills towards the child's budget (TraceLLMCacheMemory) only as
 * requests happen to touch different pages: after 600,000 requests of
 * the bench's soak mix, 40 to 61 MB of a child's 113 to 140 (malloc_info
 * per child; BENCHMARKS.md as of f7751a2).
 */
#include <apr_thread_mutex.h>

#include "store_int.h"

/* NULL outside an httpd child (the event process, the unit tests, the
 * parent's migration at start-up): nothing is registered there. */
static apr_thread_mutex_t *registry_lock;
static tllm_db *attached;          /* the list, through db->prev/next */

static apr_status_t registry_off(void *data)
{
    (void)data;
    /* Runs before the mutex's own cleanup (registered earlier): the
     * connections mod_dbd closes after this leave no list behind. */
    registry_lock = NULL;
    attached = NULL;
    return APR_SUCCESS;
}

void tllm_store_child_init(apr_pool_t *pchild)
{
    if (apr_thread_mutex_create(&registry_lock, APR_THREAD_MUTEX_DEFAULT,
                                pchild) != APR_SUCCESS) {
        registry_lock = NULL;       /* caches are kept: only larger */
        return;
    }
    apr_pool_cleanup_register(pchild, NULL, registry_off,
                              apr_pool_cleanup_null);
}

void tllm__idle_register(tllm_db *db)
{
    if (!registry_lock) {
        return;
    }
    apr_thread_mutex_lock(registry_lock);
    db->prev = NULL;
    db->next = attached;
    if (attached) {
        attached->prev = db;
    }
    attached = db;
    db->registered = 1;
    apr_thread_mutex_unlock(registry_lock);
}

void tllm__idle_unregister(tllm_db *db)
{
    if (!registry_lock || !db->registered) {
        return;
    }
    apr_thread_mutex_lock(registry_lock);
    if (db->prev) {
        db->prev->next = db->next;
    }
    else {
        attached = db->next;
    }
    if (db->next) {
        db->next->prev = db->prev;
    }
    db->registered = 0;
    apr_thread_mutex_unlock(registry_lock);
}

void tllm_store_shrink_idle(tllm_shrink_report *report)
{
    tllm_db *db;

    report->bytes_before = sqlite3_memory_used();
    report->shrunk = report->busy = 0;
    if (registry_lock) {
        /* Held throughout, so no connection is closed while it shrinks:
         * closing takes this lock first (tllm__idle_unregister). */
        apr_thread_mutex_lock(registry_lock);
        for (db = attached; db; db = db->next) {
            sqlite3_mutex *m = sqlite3_db_mutex(db->sq);

            /* A connection in a transaction holds its mutex (store.c):
             * it is busy, and its pages are in use. Waiting for it would
             * hold up every new connection of the child. One without a
             * mutex may be in use by its thread at any moment. */
            if (!m || sqlite3_mutex_try(m) != SQLITE_OK) {
                report->busy++;
                continue;
            }
            sqlite3_db_release_memory(db->sq);
            sqlite3_mutex_leave(m);
            report->shrunk++;
        }
        apr_thread_mutex_unlock(registry_lock);
    }
    report->bytes_after = sqlite3_memory_used();
}
