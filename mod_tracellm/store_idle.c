/*
 * store_idle.c - the connections a child has attached, and whether a
 * request uses each, so that the child's trimming thread (child_memory.c)
 * can hand back the page caches and prepared statements of those no
 * request is using once the child has gone quiet.
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

static apr_status_t stop_using(void *data)
{
    tllm_db *db = data;

    if (!registry_lock) {
        return APR_SUCCESS;         /* the child is going: nothing to guard */
    }
    apr_thread_mutex_lock(registry_lock);
    db->users--;
    apr_thread_mutex_unlock(registry_lock);
    return APR_SUCCESS;
}

void tllm_store_use(tllm_db *db, apr_pool_t *request_pool)
{
    if (!registry_lock || !db->registered) {
        return;
    }
    /* Under the registry's lock, which the hand-back holds throughout:
     * once this returns, no statement of db is finalized under its
     * user's feet until the request pool is cleared. */
    apr_thread_mutex_lock(registry_lock);
    db->users++;
    apr_thread_mutex_unlock(registry_lock);
    apr_pool_cleanup_register(request_pool, db, stop_using,
                              apr_pool_cleanup_null);
}

int tllm_store_attached(void)
{
    int n = 0;
    tllm_db *db;

    if (registry_lock) {
        apr_thread_mutex_lock(registry_lock);
        for (db = attached; db; db = db->next) {
            n++;
        }
        apr_thread_mutex_unlock(registry_lock);
    }
    return n;
}

void tllm_store_shrink_idle(tllm_shrink_report *report)
{
    tllm_db *db;

    report->bytes_before = sqlite3_memory_used();
    report->shrunk = report->busy = report->statements = 0;
    if (registry_lock) {
        /* Held throughout, so no connection is closed while it shrinks:
         * closing takes this lock first (tllm__idle_unregister). */
        apr_thread_mutex_lock(registry_lock);
        for (db = attached; db; db = db->next) {
            sqlite3_mutex *m = sqlite3_db_mutex(db->sq);

            /* One a request uses is busy, and so is one in a
             * transaction, which holds its mutex (store.c): its pages
             * are in use. Waiting for it would hold up every new
             * connection of the child. One without a mutex may be in use
             * by its thread at any moment. */
            if (db->users || !m || sqlite3_mutex_try(m) != SQLITE_OK) {
                report->busy++;
                continue;
            }
            /* The statements too: about 115 KB of a connection's 170,
             * and a child keeps up to DBDMax connections (64 in the
             * private httpd's configuration) once a burst opened them,
             * until they have been idle for DBDExptime (dbd_expiry.h). */
            report->statements += tllm__finalize_statements(db);
            sqlite3_db_release_memory(db->sq);
            sqlite3_mutex_leave(m);
            report->shrunk++;
        }
        apr_thread_mutex_unlock(registry_lock);
    }
    report->bytes_after = sqlite3_memory_used();
}
