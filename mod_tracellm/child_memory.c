/*
 * child_memory.c - see child_memory.h. Requests only bump a counter; the
 * trimming is done by the child's own thread, so no request waits for it.
 */
#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <apr_atomic.h>
#include <apr_strings.h>
#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>
#include <sqlite3.h>
#ifdef __GLIBC__
#include <malloc.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#endif

#include "mod_tracellm.h"
#include "child_memory.h"
#include "dbd_expiry.h"
#include "store.h"

APLOG_USE_MODULE(tracellm);

/* Short enough that what a burst freed is back with the kernel a second
 * after it; long enough that the walk over the arenas (about a
 * millisecond per 100 MB) costs nothing measurable. */
#define TRIM_INTERVAL apr_time_from_sec(1)

#ifdef __GLIBC__
/* Fixed, so that glibc trims a thread arena's top on free (below). Large
 * enough that what a request builds in one piece still comes from an
 * arena: mapping it would queue the threads on the kernel's mmap lock,
 * as per-request allocators did. */
#define TLLM_MALLOC_TRIM_THRESHOLD (128 * 1024)

/* The trim threshold while requests come (trim_loop). Every write
 * transaction loads up to 32 MiB of SQLite pages (store_traces.c), and
 * every commit by another process drops a connection's whole cache: with
 * the quiet threshold each such free handed the arena's top back
 * (madvise, a TLB flush on every core) and the next transaction faulted
 * the same memory in again. Measured on a host where faults and TLB
 * flushes are dear (a nested guest): batch ingest into a million traces
 * 2,960 to 3,552 traces/s with the quiet threshold always, 5,228 and
 * 5,435 with this one while busy; the children's CPU 61 to 79 s against
 * 36 and 38 (BENCHMARKS.md). */
#define TLLM_MALLOC_TRIM_BUSY (64 * 1024 * 1024)
#define TLLM_MALLOC_MMAP_THRESHOLD (512 * 1024)

/* Arenas per online CPU when the environment sets no cap (glibc: 8). */
#define TLLM_MALLOC_ARENAS_PER_CPU 2

/* glibc trims an arena's top when a free leaves a chunk this large
 * (FASTBIN_CONSOLIDATION_THRESHOLD): the size of visit_arena's block. */
#define TLLM_ARENA_VISIT_BYTES (64 * 1024)
#endif

static sqlite3_int64 cache_limit_bytes;

/* Requests served in this child; the thread trims when it has moved. */
static apr_uint32_t served;

#ifdef __GLIBC__
/* The arenas a child may have (set by cap_arenas), for
 * trim_arena_tops. */
static int arena_count;
#endif

void tllm_child_memory_defaults(void)
{
    cache_limit_bytes = (sqlite3_int64)TLLM_CACHE_MEMORY_DEFAULT_MIB << 20;
}

const char *tllm_child_memory_set_cache(cmd_parms *cmd, void *dconf,
                                        const char *arg)
{
    long mib;
    const char *err = tllm_global_number(cmd, arg, 0, 1048576, "MiB",
                                         "no limit", &mib);

    (void)dconf;
    if (err) {
        return err;
    }
    cache_limit_bytes = (sqlite3_int64)mib << 20;
    return NULL;
}

int tllm_child_memory_note(request_rec *r)
{
    (void)r;
    apr_atomic_inc32(&served);
    return DECLINED;
}

/* ---- the bulk allocator ------------------------------------------------ */

/* One per child, behind a mutex, so that freed blocks are reused by
 * whichever thread runs the next request, and what it keeps is bounded
 * per child instead of per pooled connection. Debian's APR maps every
 * allocator block with mmap: an allocator per request (its blocks
 * unmapped at the end) took /failures from 11,100 to 3,800 req/s at -c32,
 * the threads queueing on the kernel's mmap lock. Kept free: 8 MiB, the
 * bulk of some 40 /failures answers (180 KB each) at once. APR cannot
 * hand back an allocator's free blocks, so an idle child with no bulk
 * pool open replaces the allocator with a new one (bulk_renew_if_unused):
 * what the busiest moment left kept does not stay for good. */

static apr_thread_mutex_t *bulk_lock;    /* guards the two below */
static apr_allocator_t *bulk_allocator;
static int bulk_users;                   /* requests with a bulk pool */
static apr_thread_mutex_t *block_lock;   /* the allocator's own */

static apr_allocator_t *new_bulk_allocator(void)
{
    apr_allocator_t *allocator;

    if (apr_allocator_create(&allocator) != APR_SUCCESS) {
        return NULL;
    }
    apr_allocator_mutex_set(allocator, block_lock);
    apr_allocator_max_free_set(allocator,
                               (apr_size_t)TLLM_BULK_KEEP_KIB * 1024);
    return allocator;
}

/* A cleanup of the request pool: it runs after the request's subpools,
 * the bulk pool among them, have given their blocks back. */
static apr_status_t bulk_user_done(void *data)
{
    (void)data;
    if (bulk_lock) {
        apr_thread_mutex_lock(bulk_lock);
        bulk_users--;
        apr_thread_mutex_unlock(bulk_lock);
    }
    return APR_SUCCESS;
}

apr_allocator_t *tllm_child_bulk_allocator(apr_pool_t *request_pool)
{
    apr_allocator_t *allocator;

    if (!bulk_lock) {
        return NULL;
    }
    apr_thread_mutex_lock(bulk_lock);
    allocator = bulk_allocator;
    bulk_users++;
    apr_thread_mutex_unlock(bulk_lock);
    apr_pool_cleanup_register(request_pool, NULL, bulk_user_done,
                              apr_pool_cleanup_null);
    return allocator;
}

#ifdef __GLIBC__
/* 1 if the allocator was replaced, its free blocks unmapped. Called by
 * the trimming thread, which only glibc builds have. */
static int bulk_renew_if_unused(void)
{
    apr_allocator_t *fresh;
    int renewed = 0;

    if (!bulk_lock) {
        return 0;
    }
    apr_thread_mutex_lock(bulk_lock);
    if (bulk_users == 0 && (fresh = new_bulk_allocator()) != NULL) {
        apr_allocator_destroy(bulk_allocator);
        bulk_allocator = fresh;
        renewed = 1;
    }
    apr_thread_mutex_unlock(bulk_lock);
    return renewed;
}
#endif

static apr_status_t bulk_stop(void *data)
{
    (void)data;
    bulk_lock = NULL;
    apr_allocator_destroy(bulk_allocator);
    bulk_allocator = NULL;
    return APR_SUCCESS;
}

static void bulk_start(apr_pool_t *pchild, server_rec *s)
{
    apr_thread_mutex_t *lock;
    apr_status_t rv;

    if ((rv = apr_thread_mutex_create(&lock, APR_THREAD_MUTEX_DEFAULT,
                                      pchild)) != APR_SUCCESS
        || (rv = apr_thread_mutex_create(&block_lock,
                                         APR_THREAD_MUTEX_DEFAULT,
                                         pchild)) != APR_SUCCESS
        || (bulk_allocator = new_bulk_allocator()) == NULL) {
        /* Not fatal: bulk bytes come from the request pools. */
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s,
                     "TLLM0021: cannot create the bulk allocator");
        return;
    }
    bulk_lock = lock;
    apr_pool_cleanup_register(pchild, NULL, bulk_stop,
                              apr_pool_cleanup_null);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "TLLM0022: requests' bulk "
                 "bytes come from one allocator per child, keeping up to "
                 "%d KiB free", TLLM_BULK_KEEP_KIB);
}

#ifdef __GLIBC__
typedef struct {
    apr_thread_t *thread;
    apr_pool_t *scratch;         /* the thread's own, for mod_dbd's check */
    apr_thread_mutex_t *lock;
    apr_thread_cond_t *wake;     /* signalled to stop */
    int stopping;                /* under lock */
    server_rec *s;
} trimmer;

/* One block from this thread's arena, freed: a free this large trims the
 * arena's top to the threshold of the moment. volatile: a compiler may
 * drop a malloc whose block is never used. */
static void *visit_arena(void *unused)
{
    volatile char *block = malloc(TLLM_ARENA_VISIT_BYTES);

    if (block) {
        block[0] = 0;
        free((void *)block);
    }
    return unused;
}

/* malloc_trim does not reach the top of a thread arena: only a free in
 * that arena does. A child that went quiet right after a burst of writes
 * kept 8 to 14 MB that way in one of its arenas (malloc_info), as the
 * busy threshold let the tops grow. Once a process has all the arenas
 * its cap allows, glibc gives each new thread the next one in turn, so a
 * few short threads, one after the other, visit every arena: twice the
 * cap, in case some arenas were not made yet. */
static int trim_arena_tops(void)
{
    int i;

    for (i = 0; i < 2 * arena_count; i++) {
        pthread_t thread;

        if (pthread_create(&thread, NULL, visit_arena, NULL) != 0) {
            break;
        }
        pthread_join(thread, NULL);
    }
    return i;
}

/* Quiet for a whole interval after requests, or mod_dbd has just closed
 * connections that were idle too long (dbd_expiry.h): the page caches of
 * the child's idle connections go too (store_idle.c). */
static void shrink_idle(trimmer *t, int closed)
{
    tllm_shrink_report rep;
    int renewed, visits, released;

    tllm_store_shrink_idle(&rep);
    renewed = bulk_renew_if_unused();
    visits = trim_arena_tops();
    released = malloc_trim(0);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, t->s, "TLLM0019: child idle: "
                 "SQLite memory %" APR_INT64_T_FMT " -> %" APR_INT64_T_FMT
                 " bytes, %d connection(s) shrunk, %d statement(s)"
                 " finalized, %d busy, %d closed by mod_dbd;"
                 " bulk allocator %s; %d arena visit(s); heap %s",
                 (apr_int64_t)rep.bytes_before, (apr_int64_t)rep.bytes_after,
                 rep.shrunk, rep.statements, rep.busy, closed,
                 renewed ? "renewed" : "in use", visits,
                 released ? "trimmed" : "had nothing to trim");
}

/* Each arena keeps its own free memory and its own fragments, so fewer
 * arenas hold less of both: with 4 on two cores (glibc's default is 16)
 * the soak mix's memory grew from 62 to 66 MB (the two children and the
 * event process) between 10,000 and 300,000 requests, against 62 to 71
 * MB, and alternating runs of reads and single POSTs at -c32 were within
 * their noise of each other. A cap the administrator set in httpd's
 * environment (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in
 * GLIBC_TUNABLES) stays. Returns the cap set, 0 if the environment
 * sets one, -1 if mallopt refused. */
static int cap_arenas(void)
{
    const char *tunables = getenv("GLIBC_TUNABLES");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int arenas = (int)(cpus > 0 ? cpus : 1) * TLLM_MALLOC_ARENAS_PER_CPU;

    /* Where the cap is not ours, the visits assume glibc's default. */
    arena_count = (int)(cpus > 0 ? cpus : 1) * 8;
    if (getenv("MALLOC_ARENA_MAX")
        || (tunables && strstr(tunables, "glibc.malloc.arena_max"))) {
        return 0;
    }
    if (!mallopt(M_ARENA_MAX, arenas)) {
        return -1;
    }
    arena_count = arenas;
    return arenas;
}

/* malloc_trim(0) hands back free pages in the middle of every arena, but
 * the top of a thread arena (all but the main one) only goes back on
 * free(), once it exceeds the trim threshold. glibc raises that
 * threshold to twice the largest mapped block ever freed, up to 64 MiB,
 * so in a long-lived child each of its arenas (16 on two cores, before
 * the cap above) kept the top of its busiest moment: a child's arenas
 * grew from 11-12 MB resident to 17-18 between 10,000 and 300,000
 * requests of the soak mix,
 * with malloc's memory in use flat. Fixed thresholds stop the raising;
 * the same soak left them flat (8.2-11.6 MB at the end against 8.8-10.2
 * at 10,000).
 *
 * No fast bins either: malloc_trim first merges the small chunks they
 * hold with their free neighbours, and where that reaches a thread
 * arena's top, the top grows without the trim a free() would do, and
 * malloc_trim never shrinks it. Children at rest after the soak mix kept
 * tops of 1 to 25 MB that way, at random (gdb: one arena with a 16 MB
 * top, untouched by a second malloc_trim); without fast bins, 0.8 MB
 * each time. Set before the worker threads exist, so that no arena is
 * made first. */
static void tune_malloc(server_rec *s)
{
    int mmap_ok = mallopt(M_MMAP_THRESHOLD, TLLM_MALLOC_MMAP_THRESHOLD);
    int trim_ok = mallopt(M_TRIM_THRESHOLD, TLLM_MALLOC_TRIM_THRESHOLD);
    int fast_ok = mallopt(M_MXFAST, 0);
    int arenas = cap_arenas();
    char cap[32] = "as httpd's environment sets";

    if (arenas > 0) {
        apr_snprintf(cap, sizeof(cap), "at most %d", arenas);
    }
    else if (arenas < 0) {
        apr_cpystrn(cap, "NOT capped", sizeof(cap));
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "TLLM0023: malloc "
                 "thresholds %s: trim %d KiB (%d MiB while busy), mmap %d"
                 " KiB, no fast bins;"
                 " arenas: %s",
                 mmap_ok && trim_ok && fast_ok ? "fixed" : "NOT fixed",
                 TLLM_MALLOC_TRIM_THRESHOLD / 1024,
                 TLLM_MALLOC_TRIM_BUSY / (1024 * 1024),
                 TLLM_MALLOC_MMAP_THRESHOLD / 1024, cap);
}

static void *APR_THREAD_FUNC trim_loop(apr_thread_t *thread, void *data)
{
    trimmer *t = data;
    apr_uint32_t seen = apr_atomic_read32(&served);
    apr_uint32_t shrunk_at = seen;
    int quiet = 0;               /* intervals in a row with no request */
    int busy = 0;                /* the busy trim threshold is set */

    apr_thread_mutex_lock(t->lock);
    while (!t->stopping) {
        apr_uint32_t now;

        apr_thread_cond_timedwait(t->wake, t->lock, TRIM_INTERVAL);
        if (t->stopping) {
            break;
        }
        now = apr_atomic_read32(&served);
        if (now != seen) {
            int released;

            seen = now;
            quiet = 0;
            if (!busy) {
                busy = mallopt(M_TRIM_THRESHOLD, TLLM_MALLOC_TRIM_BUSY);
            }
            released = malloc_trim(0);
            ap_log_error(APLOG_MARK, APLOG_TRACE1, 0, t->s,
                         "TLLM0018: heap trimmed (%s), trim threshold %s",
                         released ? "memory released" : "nothing to release",
                         busy ? "busy" : "NOT busy");
        }
        else {
            /* The last request ended at least quiet seconds ago. */
            int closed;

            /* Before the idle connections' caches are freed: those frees
             * give their arenas' tops back. */
            if (busy) {
                busy = !mallopt(M_TRIM_THRESHOLD, TLLM_MALLOC_TRIM_THRESHOLD);
            }
            closed = tllm_dbd_expire_idle(t->scratch, ++quiet);

            apr_pool_clear(t->scratch);
            if (now != shrunk_at || closed > 0) {
                shrunk_at = now;
                shrink_idle(t, closed);
            }
        }
    }
    apr_thread_mutex_unlock(t->lock);
    apr_thread_exit(thread, APR_SUCCESS);
    return NULL;
}

static apr_status_t trim_stop(void *data)
{
    trimmer *t = data;
    apr_status_t rv;

    apr_thread_mutex_lock(t->lock);
    t->stopping = 1;
    apr_thread_cond_signal(t->wake);
    apr_thread_mutex_unlock(t->lock);
    apr_thread_join(&rv, t->thread);
    apr_pool_destroy(t->scratch);
    return APR_SUCCESS;
}

static void trim_start(apr_pool_t *pchild, server_rec *s)
{
    trimmer *t = apr_pcalloc(pchild, sizeof(*t));
    apr_status_t rv;

    t->s = s;
    /* With an allocator of its own: pchild's has no mutex. */
    if ((rv = apr_pool_create_unmanaged_ex(&t->scratch, NULL,
                                           NULL)) != APR_SUCCESS
        || (rv = apr_thread_mutex_create(&t->lock, APR_THREAD_MUTEX_DEFAULT,
                                         pchild)) != APR_SUCCESS
        || (rv = apr_thread_cond_create(&t->wake, pchild)) != APR_SUCCESS
        || (rv = apr_thread_create(&t->thread, NULL, trim_loop, t,
                                   pchild)) != APR_SUCCESS) {
        /* Not fatal: the child works, its RSS is only larger. */
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s,
                     "TLLM0016: cannot start the heap trimming thread");
        if (t->scratch) {
            apr_pool_destroy(t->scratch);
        }
        return;
    }
    apr_pool_cleanup_register(pchild, t, trim_stop, apr_pool_cleanup_null);
}
#endif

void tllm_child_memory_child_init(apr_pool_t *pchild, server_rec *s)
{
    bulk_start(pchild, s);
    /* Process-wide: any other SQLite user in this child shares it. */
    sqlite3_soft_heap_limit64(cache_limit_bytes);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "TLLM0017: SQLite memory "
                 "of this child limited to %" APR_INT64_T_FMT " bytes"
                 " (0 = no limit)",
                 (apr_int64_t)sqlite3_soft_heap_limit64(-1));
#ifdef __GLIBC__
    tune_malloc(s);
    trim_start(pchild, s);
#else
    (void)pchild;
    (void)s;
#endif
}
