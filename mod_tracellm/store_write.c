/*
 * store_write.c - storing traces: one write transaction per group
 * (group_commit.c) or per call, each trace inserted or replacing its
 * earlier version, and the rollups brought up to date before the commit.
 *
 * A replacement is a delete and an insert, so that the new version gets
 * a new seq (the event log replays it at its new place) and the rollups'
 * delete trigger takes the old version out of every aggregate. The
 * insertions' rollup sums are kept in a delta per connection and written
 * once per transaction (rollup_delta.c).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "store_int.h"
#include "rollup_sql.h"
#include "trace_body.h"

/* The seq of trace_id's row (0 if none), whether it is in project, and
 * whether the rollups do not count it yet. */
static int lookup(tllm_db *db, const tllm_trace *t, int64_t *seq, int *ours,
                  int *pending)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_TRACE_LOOKUP);
    int rc;

    *seq = 0;
    *ours = 0;
    *pending = 0;
    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, t->trace_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *owner = (const char *)sqlite3_column_text(st, 1);

        *seq = sqlite3_column_int64(st, 0);
        *ours = owner && t->project_id && strcmp(owner, t->project_id) == 0;
        *pending = sqlite3_column_int(st, 2);
    }
    else if (rc != SQLITE_DONE) {
        tllm__fail(db, "look up trace");
    }
    tllm__release(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

static int run_stmt(tllm_db *db, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);

    if (rc != SQLITE_DONE) {
        tllm__fail(db, what);
    }
    tllm__release(st);
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

static int delete_seq(tllm_db *db, int64_t seq)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_TRACE_DELETE);

    if (!st) {
        return TLLM_ERROR;
    }
    sqlite3_bind_int64(st, 1, seq);
    return run_stmt(db, st, "replace trace");
}

/* The inserted row's columns, summed for the rollups (rollup_delta.c):
 * written by rollups_catch_up. */
static void add_to_delta(tllm_db *db, const tllm_trace *t, int64_t seq)
{
    tllm_rollup_row row = {
        t->project_id, t->environment, t->model_name, t->status,
        t->latency, t->token_count, t->retry_count,
        t->slow_request ? 1 : 0, t->created_at,
        tllm__latency_bucket(t->latency)
    };

    tllm_rollup_delta_add(&db->delta, &row, seq);
}

/* Whether GET /failures lists t: failed, warned, slow or retried (the
 * traces_flagged index's condition, store.c). */
static int flagged(const tllm_trace *t)
{
    return !t->status || strcmp(t->status, TLLM_STATUS_SUCCESS) != 0
           || t->slow_request || t->retry_count > 0;
}

/* The length of t's JSON (0 if it has none). */
static size_t body_len(const tllm_trace *t)
{
    return t->json ? (t->json_len ? t->json_len : strlen(t->json)) : 0;
}

/* The bytes tllm_body_pack needs for t's body, 0 if it stays text.
 * Flagged traces stay text: /failures sends 75 of their bodies a
 * request, and unpacking 75 takes about 50 us (0.65 us a body, measured
 * alone), a fifth of its 250 us at c1; they are a fifth of the traces,
 * and keeping them as text made the database 1.15 x the JSON against
 * 1.03 (BENCHMARKS.md). */
static size_t pack_bound(const tllm_trace *t)
{
    return t->json && !flagged(t) ? tllm_body_pack_bound(body_len(t)) : 0;
}

void tllm_store_pack_bodies(apr_pool_t *p, tllm_trace *const *traces, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        tllm_trace *t = traces[i];
        size_t need = pack_bound(t);
        void *buf = need ? apr_palloc(p, need) : NULL;

        t->packed_len = buf ? tllm_body_pack(t->json, body_len(t), buf) : 0;
        t->packed = t->packed_len ? buf : NULL;
        t->body_decided = 1;
    }
}

/* Pack t's body into the connection's buffer, which lives until the
 * next trace's; its packed length, 0 if it stays text. For a trace
 * tllm_store_pack_bodies has not seen. */
static size_t pack_now(tllm_db *db, const tllm_trace *t)
{
    size_t need = pack_bound(t);

    if (need > db->pack_cap) {
        /* Doubling keeps what the pool holds within twice the largest
         * body packed on this connection. */
        size_t cap = db->pack_cap ? db->pack_cap : 4096;

        while (cap < need) {
            cap *= 2;
        }
        db->pack_buf = apr_palloc(db->pool, cap);
        db->pack_cap = cap;
    }
    return need ? tllm_body_pack(t->json, body_len(t), db->pack_buf) : 0;
}

/* Bind the trace's JSON as parameter 11: packed (a BLOB) if that is
 * smaller, else as text (trace_body.h). */
static void bind_body(tllm_db *db, sqlite3_stmt *st, const tllm_trace *t)
{
    const void *packed = t->packed;
    size_t packed_len = t->packed_len;

    if (!t->body_decided) {
        packed_len = pack_now(db, t);
        packed = packed_len ? db->pack_buf : NULL;
    }
    if (packed) {
        sqlite3_bind_blob64(st, 11, packed, packed_len, SQLITE_STATIC);
    }
    else {
        sqlite3_bind_text64(st, 11, t->json, body_len(t), SQLITE_STATIC,
                            SQLITE_UTF8);
    }
}

/* Insert t unless its trace_id is stored already: *seq is then 0. */
static int insert(tllm_db *db, const tllm_trace *t, int64_t *seq)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_TRACE_INSERT);
    int rc;

    *seq = 0;
    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, t->trace_id);
    tllm__bind_text(st, 2, t->project_id);
    tllm__bind_text(st, 3, t->environment);
    tllm__bind_text(st, 4, t->model_name);
    tllm__bind_text(st, 5, t->status);
    sqlite3_bind_double(st, 6, t->latency);
    sqlite3_bind_int64(st, 7, t->token_count);
    sqlite3_bind_int64(st, 8, t->retry_count);
    sqlite3_bind_int(st, 9, t->slow_request ? 1 : 0);
    sqlite3_bind_int64(st, 10, t->created_at);
    if (t->json) {
        bind_body(db, st, t);
    }
    sqlite3_bind_int64(st, 12, tllm__latency_bucket(t->latency));
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        rc = sqlite3_extended_errcode(db->sq);
        if (rc != SQLITE_CONSTRAINT_UNIQUE) {
            tllm__fail(db, "insert trace");
        }
    }
    tllm__release(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        /* trace_id is the one UNIQUE column. The statement stopped at
         * its check, before it wrote anything, and the transaction goes
         * on. Not ON CONFLICT DO NOTHING: that would use up a seq, and
         * the rollup delta counts on the seqs it holds being all there
         * are past the mark (rollup_delta.c). */
        return TLLM_OK;
    }
    if (rc != SQLITE_DONE) {
        return TLLM_ERROR;
    }
    *seq = sqlite3_last_insert_rowid(db->sq);
    add_to_delta(db, t, *seq);
    return TLLM_OK;
}

/* Sum every row past the mark from the table into a fresh delta: when
 * some were not inserted through it (put into traces by hand). */
static int delta_from_table(tllm_db *db)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_ROLLUP_PENDING_ROWS);
    int rc;

    tllm_rollup_delta_clear(&db->delta);
    if (!st) {
        return TLLM_ERROR;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tllm_rollup_row row = {
            (const char *)sqlite3_column_text(st, 1),
            (const char *)sqlite3_column_text(st, 2),
            (const char *)sqlite3_column_text(st, 3),
            (const char *)sqlite3_column_text(st, 4),
            sqlite3_column_double(st, 5), sqlite3_column_int64(st, 6),
            sqlite3_column_int64(st, 7), sqlite3_column_int64(st, 8),
            sqlite3_column_int64(st, 9), sqlite3_column_int64(st, 10)
        };

        tllm_rollup_delta_add(&db->delta, &row, sqlite3_column_int64(st, 0));
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "read the rows the rollups do not count");
    }
    tllm__release(st);
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

/* Write the delta's groups (rollup_delta.c). */
static int add_delta(tllm_db *db)
{
    sqlite3_stmt *upsert[TLLM_ROLLUP__COUNT];
    int i;

    for (i = 0; i < TLLM_ROLLUP__COUNT; i++) {
        upsert[i] = tllm__stmt(db, (tllm_stmt_id)(ST_ROLLUP_TOTAL_UPSERT + i));
        if (!upsert[i]) {
            return TLLM_ERROR;
        }
    }
    switch (tllm_rollup_delta_flush(&db->delta, upsert)) {
    case SQLITE_DONE:
        return TLLM_OK;
    case SQLITE_NOMEM:
        snprintf(db->errmsg, sizeof(db->errmsg),
                 "update the rollups: out of memory");
        return TLLM_ERROR;
    default:
        return tllm__fail(db, "update the rollups");
    }
}

static int read_mark(tllm_db *db, int64_t *mark)
{
    int found;

    return tllm__scalar(db, tllm__stmt(db, ST_ROLLUP_MARK_GET), &found,
                        mark, NULL);
}

/* Add the rows past rollup_mark to the rollups and move the mark
 * (rollup_sql.h): before every commit of a transaction that stored
 * traces, and before it deletes a row it inserted. The rows are summed
 * as they went in (rollup_delta.c) when those are all there is past the
 * mark; otherwise all of them are read back from the table. */
static int rollups_catch_up(tllm_db *db)
{
    int64_t mark = 0;
    int rv = read_mark(db, &mark);
    sqlite3_stmt *st;

    if (rv == TLLM_OK && !tllm_rollup_delta_covers(&db->delta, mark)) {
        rv = delta_from_table(db);
    }
    if (rv == TLLM_OK) {
        rv = add_delta(db);
    }
    tllm_rollup_delta_clear(&db->delta);
    if (rv != TLLM_OK || !(st = tllm__stmt(db, ST_ROLLUP_MARK_MOVE))) {
        return TLLM_ERROR;
    }
    return run_stmt(db, st, "update the rollups");
}

/*
 * A transaction that stores traces dirties a random page of each index
 * whose key is not time-ordered (trace_id, latency, tokens) per trace: at
 * a million traces, a group of 200 dirties about 600 pages (of 16 KiB
 * before schema 8, 8 KiB since). SQLite's default cache of 2,000 KiB
 * holds 125 of 16 KiB: the rest are spilled to the WAL before the
 * commit, or dropped and read again when touched again (the indexes'
 * upper pages too). So the transaction's cache may grow to
 * WRITER_CACHE_KIB, and shrinks back to the default once it has ended:
 * a connection's cache is dropped anyway when another commits, and
 * a large one kept would only grow with the reads it serves later (the
 * child's TraceLLMCacheMemory still bounds all caches together).
 * PRAGMA cache_size acts when it is prepared, so it is not a cached
 * statement. 200,000 traces in batches of 100, fresh data, alternating
 * with the build before, eight rounds: faster in seven, median 8,337
 * against 8,008 traces/s; single POSTs no slower (BENCHMARKS.md).
 */
#define WRITER_CACHE_KIB "32768"
#define DEFAULT_CACHE_KIB "2000"    /* SQLITE_DEFAULT_CACHE_SIZE */

static void set_cache(tllm_db *db, const char *kib)
{
    char sql[48];

    snprintf(sql, sizeof(sql), "PRAGMA cache_size=-%s", kib);
    /* Only speed depends on it: a failure leaves the cache as it was. */
    sqlite3_exec(db->sq, sql, NULL, NULL, NULL);
}

static int begin_traces(tllm_db *db)
{
    tllm_rollup_delta_clear(&db->delta);
    if (tllm__begin(db, 1) != TLLM_OK) {
        return TLLM_ERROR;
    }
    set_cache(db, WRITER_CACHE_KIB);
    return TLLM_OK;
}

static void rollback_traces(tllm_db *db)
{
    tllm_rollup_delta_clear(&db->delta);
    tllm__rollback(db);
    set_cache(db, DEFAULT_CACHE_KIB);
}

/* Commit a transaction that stored traces; rolls back if it fails. */
static int commit_traces(tllm_db *db)
{
    int rv;

    if (rollups_catch_up(db) != TLLM_OK) {
        rollback_traces(db);
        return TLLM_ERROR;
    }
    rv = tllm__commit(db);
    set_cache(db, DEFAULT_CACHE_KIB);
    return rv;
}

/* Replace the stored version of t's trace_id, if t's project owns it;
 * *seq is the new row's, 0 if none. */
static int replace(tllm_db *db, const tllm_trace *t, int *result,
                   int64_t *seq)
{
    int ours, pending;

    if (lookup(db, t, seq, &ours, &pending) != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (*seq && !ours) {
        *result = TLLM_CONFLICT;
        *seq = 0;                       /* nothing stored */
        return TLLM_OK;
    }
    /* Delete, not update: the new version must get a new seq so the
     * event log replays it at its new place, and the rollups' delete
     * trigger takes the old version out of every aggregate. An old
     * version this transaction inserted is not in them yet: add it
     * first (only then, so that re-sending stored traces is not a
     * rollup update per trace). */
    if (*seq && ((pending && rollups_catch_up(db) != TLLM_OK)
                 || delete_seq(db, *seq) != TLLM_OK)) {
        return TLLM_ERROR;
    }
    if (insert(db, t, seq) != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (!*seq) {                        /* taken, by no row we found */
        snprintf(db->errmsg, sizeof(db->errmsg),
                 "insert trace: trace_id %s is taken, but not by a row"
                 " it could replace", t->trace_id);
        return TLLM_ERROR;
    }
    *result = TLLM_OK;
    return TLLM_OK;
}

/* Most traces are new: each is inserted at once, and only a trace_id
 * already stored costs a lookup of its row. Looking first cost every
 * new trace a second descent of the trace_id index. */
static int put_one(tllm_db *db, const tllm_trace *t, int *result,
                   int64_t *last_seq)
{
    int64_t seq;

    if (insert(db, t, &seq) != TLLM_OK) {
        return TLLM_ERROR;
    }
    *result = TLLM_OK;
    if (!seq && replace(db, t, result, &seq) != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (seq > *last_seq) {
        *last_seq = seq;
    }
    return TLLM_OK;
}

int tllm_store_write_begin(tllm_db *db)
{
    return begin_traces(db);
}

int tllm_store_write_commit(tllm_db *db)
{
    return commit_traces(db);
}

void tllm_store_write_rollback(tllm_db *db)
{
    rollback_traces(db);
}

int tllm_store_traces_put_in(tllm_db *db, tllm_trace *const *traces, int n,
                             int *results, int64_t *last_seq)
{
    int64_t last = 0;
    int i;

    if (last_seq) {
        *last_seq = 0;
    }
    for (i = 0; i < n; i++) {
        if (put_one(db, traces[i], &results[i], &last) != TLLM_OK) {
            return TLLM_ERROR;
        }
    }
    if (last_seq) {
        *last_seq = last;
    }
    return TLLM_OK;
}

int tllm_store_traces_put(tllm_db *db, tllm_trace *const *traces, int n,
                          int *results, int64_t *last_seq)
{
    int64_t last = 0;

    if (last_seq) {
        *last_seq = 0;
    }
    if (begin_traces(db) != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (tllm_store_traces_put_in(db, traces, n, results, &last) != TLLM_OK) {
        rollback_traces(db);
        return TLLM_ERROR;
    }
    if (commit_traces(db) != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (last_seq) {
        *last_seq = last;
    }
    return TLLM_OK;
}
