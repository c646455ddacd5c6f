/*
 * store_int.h - private to store.c and store_traces.c: the connection
 * object, the statement cache and the small helpers both files use.
 * Nothing outside the store includes this.
 */
#ifndef TLLM_STORE_INT_H
#define TLLM_STORE_INT_H

#include <apr_hash.h>
#include "store.h"
#include "rollup_delta.h"

/* Every fixed statement, an index into tllm_db.stmt (SQL in store.c). */
typedef enum {
    ST_BEGIN_WRITE, ST_BEGIN_READ, ST_COMMIT, ST_ROLLBACK, ST_PING,
    ST_PROJECT_INSERT, ST_PROJECT_LIST, ST_PROJECT_EXISTS,
    ST_KEY_INSERT, ST_KEY_LIST_ALL, ST_KEY_LIST_PROJECT, ST_KEY_REVOKE,
    ST_KEY_FIND, ST_KEY_TOUCH,
    ST_TRACE_LOOKUP, ST_TRACE_DELETE, ST_TRACE_INSERT, ST_TRACE_GET,
    ST_ROLLUP_PENDING_ROWS, ST_ROLLUP_MARK_MOVE,
    /* In rollup_delta.h's order (TLLM_ROLLUP_TOTAL ...). */
    ST_ROLLUP_TOTAL_UPSERT, ST_ROLLUP_HOUR_UPSERT, ST_ROLLUP_PROJECT_UPSERT,
    ST_ROLLUP_LATENCY_UPSERT, ST_ROLLUP_COARSE_UPSERT,
    ST_ROLLUP_MARK_GET,
    ST_ROLLUP_SCOPE, ST_PROJECT_COUNTS, ST_FLAGGED_TOTALS, ST_HOURS,
    ST_LATENCY_COARSE, ST_LATENCY_BUCKETS,
    ST_EVENTS_AFTER, ST_LAST_SEQ,
    ST__COUNT
} tllm_stmt_id;

struct tllm_db {
    sqlite3 *sq;
    apr_pool_t *pool;              /* the connection's pool */
    sqlite3_stmt *stmt[ST__COUNT]; /* prepared on first use */
    apr_hash_t *built;             /* SQL built from filters, by shape */
    int holds_mutex;               /* a transaction holds sq's mutex */
    tllm_rollup_delta delta;       /* the write transaction's rollup sums */
    int page_size;                 /* for the WAL hook (store.c) */
    void *pack_buf;                /* a body being packed (store_write.c), */
    size_t pack_cap;               /* from pool, grown by doubling */
    int checkpoint_early;          /* the hook asks for one after commit */
    tllm_wal_restart restart;      /* the hook's last try to restart the
                                    * WAL; pages 0 = none since reported */
    const struct tllm_keygen *keygen; /* its key generation, once */
    int keygen_sought;             /* sought (key_cache.c; NULL: none) */
    int registered;                /* in the child's list (store_idle.c) */
    int users;                     /* requests using it (store_idle.c) */
    struct tllm_db *prev, *next;   /* that list */
    char errmsg[512];
};

/* Record sqlite3_errmsg (prefixed by what) as the last error; TLLM_ERROR. */
int tllm__fail(tllm_db *db, const char *what);

/* A persistent statement for sql on db, or NULL (error recorded). */
sqlite3_stmt *tllm__prepare(tllm_db *db, const char *sql);

/* The cached fixed statement id, prepared on first use; NULL on error. */
sqlite3_stmt *tllm__stmt(tllm_db *db, tllm_stmt_id id);

/* Make st ready for its next use: reset and drop the bindings. */
void tllm__release(sqlite3_stmt *st);

/* Run st for the single value of its one row (as int64 into *i and/or
 * double into *d, either may be NULL), then release it. found = 0 if
 * it gave no row, which is not an error. */
int tllm__scalar(tllm_db *db, sqlite3_stmt *st, int *found, int64_t *i,
                 double *d);

/* Transactions. begin: write = BEGIN IMMEDIATE, else a deferred read
 * transaction (one consistent snapshot for several SELECTs). A
 * transaction holds the connection's mutex until it ends (store.c says
 * why); every begin that succeeds needs its commit or rollback. */
int tllm__begin(tllm_db *db, int write);
int tllm__commit(tllm_db *db);
void tllm__rollback(tllm_db *db);

/* Column i of the current row as pool text (NULL for SQL NULL). */
const char *tllm__col_text(apr_pool_t *p, sqlite3_stmt *st, int i,
                           size_t *len);

/* Column i of the current row, a stored trace body (trace_body.h), as
 * pool JSON text, unpacked if it was packed; NULL and the error recorded
 * if a packed body does not unpack. */
const char *tllm__col_body(tllm_db *db, apr_pool_t *p, sqlite3_stmt *st,
                           int i, size_t *len);

/* The rollup_latency bucket of a latency in ms (store.c, schema_v2), and
 * the smallest latency of a bucket: bucket b holds the latencies in
 * [tllm__bucket_floor(b), tllm__bucket_floor(b + 1)). */
int64_t tllm__latency_bucket(double ms);
double tllm__bucket_floor(int64_t bucket);

/* tllm_store_migrate, stopping at schema version target (tests build a
 * database of an older version with it). */
int tllm__migrate_to(tllm_db *db, int target);

/* Finalize db's cached statements, fixed and built; each is prepared
 * again on its next use. Returns how many there were. */
int tllm__finalize_statements(tllm_db *db);

/* Add db to the child's list of connections, or take it out before it
 * closes (store_idle.c). Outside an httpd child, nothing is listed. */
void tllm__idle_register(tllm_db *db);
void tllm__idle_unregister(tllm_db *db);

/* Bind s (NULL binds SQL NULL) to parameter i. */
int tllm__bind_text(sqlite3_stmt *st, int i, const char *s);

#endif
