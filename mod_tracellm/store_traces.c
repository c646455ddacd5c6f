/*
 * store_traces.c - reading traces: one by id, listings, and the
 * aggregates of GET /analytics and GET /failures (storing them:
 * store_write.c).
 *
 * Listings are built from the set of filters present (one bit each), so
 * every shape of query gets WHERE terms SQLite can match to an index;
 * each shape is prepared once per connection and cached under its bits.
 * Counts and sums come from the rollup tables (store.c), which every
 * write transaction brings up to date before it commits; only the p95
 * and the row lists touch the traces table, and those through an index
 * in the order they need.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include "store_int.h"
#include "rollup_sql.h"

#define HOUR_US INT64_C(3600000000)
#define RECENT_FAILURES 5

/* A page filtered by a latency or token bound is found either by walking
 * traces_created newest first, testing each entry (about limit x total /
 * matches entries), or through the bound's index, which reads every entry
 * in the range and sorts the matches (at least matches entries). The
 * count, taken first, decides: the walk when limit x total / matches is
 * under WALK_FACTOR x matches. */
#define WALK_FACTOR 4

/* traces_tokens holds token_count alone: a token bound with other
 * filters reads a table row for every entry in the bound's range. Past
 * 1 / TOKENS_ROW_FACTOR of all entries, testing every entry of a covering
 * index (traces_project's or traces_created's) is cheaper. At a million
 * traces: the 316,201 entries of token_count <= 500 took 2,146 ms with
 * their rows for model_name, all of traces_created 86 ms, about 90 to 1. */
#define TOKENS_ROW_FACTOR 64

/* A page filtered on environment, model or status alone (no project, no
 * bound) merges the newest entries of each matching kind in traces_kind
 * (schema_v7) when that reads at most this many entries (each kind's
 * min(limit, count)); past it, the walk of traces_created. Fifty kinds
 * fit at the largest limit, 200: about a millisecond of index reads. */
#define KIND_MAX_ENTRIES 10000

/* The filter terms a built query can have, one bit each. */
enum {
    FB_STATUS, FB_MODEL, FB_PROJECT, FB_ENV,
    FB_LAT_MIN, FB_LAT_MAX, FB_LAT_BELOW, FB_TOK_MIN, FB_TOK_MAX,
    FB_FAILED, FB_RETRIED, FB_SLOW, FB_FLAGGED,
    FB__COUNT
};
#define F(bit) (1u << (bit))

/* Filters the rollup_total table can answer counts for (it has these
 * columns under the same names; a project or environment not filtered
 * on is its scope rows' '', schema_v5). */
#define F_ROLLUP (F(FB_STATUS) | F(FB_MODEL) | F(FB_PROJECT) | F(FB_ENV))
#define F_LATENCY (F(FB_LAT_MIN) | F(FB_LAT_MAX) | F(FB_LAT_BELOW))
#define F_TOKENS (F(FB_TOK_MIN) | F(FB_TOK_MAX))
#define F_RANGE (F_LATENCY | F_TOKENS)
#define F_KIND (F(FB_STATUS) | F(FB_MODEL) | F(FB_ENV))

/* The last four must stay textually identical to the WHERE clauses of
 * the partial indexes traces_failed, _retried, _slow and _flagged. */
static const char *const term[FB__COUNT] = {
    [FB_STATUS] = "status = :status",
    [FB_MODEL] = "model_name = :model",
    [FB_PROJECT] = "project_id = :project",
    [FB_ENV] = "environment = :env",
    [FB_LAT_MIN] = "latency >= :lat_min",
    [FB_LAT_MAX] = "latency <= :lat_max",
    [FB_LAT_BELOW] = "latency < :lat_below",
    [FB_TOK_MIN] = "token_count >= :tok_min",
    [FB_TOK_MAX] = "token_count <= :tok_max",
    [FB_FAILED] = "status = 'failed'",
    [FB_RETRIED] = "retry_count > 0",
    [FB_SLOW] = "slow = 1",
    [FB_FLAGGED] =
        "NOT (status = 'success' AND slow = 0 AND retry_count <= 0)"
};

/* What a built query returns. */
typedef enum {
    Q_PAGE,         /* bodies, newest first, :limit of them, in time order */
    Q_PAGE_RANGE,   /* the same, through the latency or token index */
    Q_COUNT,        /* count(*) of matching rows */
    Q_COUNT_COVERING, /* the same through an index that has every column */
    Q_ROLLUP_COUNT, /* the same from rollup_total (F_ROLLUP terms only) */
    Q_RANK_DESC,    /* the latency at rank :offset, descending */
    Q_KINDS,        /* the (environment, model, status) kinds with matches */
    Q_KIND_KEYS,    /* one kind's newest (created_at, seq), :limit of them */
    Q_BODY,         /* the body of row :seq */
    Q__COUNT
} query_kind;

static const struct {
    const char *head, *tail;
} shape[Q__COUNT] = {
    [Q_PAGE] = { "SELECT body FROM traces",
                 " ORDER BY created_at DESC, seq DESC LIMIT :limit" },
    /* The inner query reads the range index alone (traces_latency covers
     * every filter; traces_tokens only the bound), the outer one fetches
     * the page's bodies by rowid. */
    [Q_PAGE_RANGE] = { "SELECT body FROM traces WHERE seq IN ("
                       "SELECT seq FROM traces",
                       " ORDER BY created_at DESC, seq DESC LIMIT :limit)"
                       " ORDER BY created_at DESC, seq DESC" },
    [Q_COUNT] = { "SELECT count(*) FROM traces", "" },
    [Q_COUNT_COVERING] = { "SELECT count(*) FROM traces", "" },
    [Q_ROLLUP_COUNT] = { "SELECT COALESCE(SUM(n), 0) FROM rollup_total"
                         " WHERE project_id = :scope_project"
                         " AND environment = :scope_env", "" },
    [Q_RANK_DESC] = { "SELECT latency FROM traces",
                      " ORDER BY latency DESC LIMIT 1 OFFSET :offset" },
    /* rollup_total's rows of every project, one environment each. */
    [Q_KINDS] = { "SELECT environment, model_name, status, n"
                  " FROM rollup_total WHERE project_id = ''"
                  " AND environment != '' AND n > 0", "" },
    [Q_KIND_KEYS] = { "SELECT created_at, seq FROM traces",
                      " ORDER BY created_at DESC, seq DESC LIMIT :limit" },
    [Q_BODY] = { "SELECT body FROM traces WHERE seq = :seq", "" }
};

/* The index a query must use, or NULL to let SQLite choose. Without
 * statistics SQLite takes any equality term (project_id = ...) as more
 * selective than a partial index or a range, which at a million traces
 * is the difference between a hundred rows and a few hundred thousand. */
static const char *index_for(query_kind kind, unsigned mask)
{
    static const struct {
        int bit;
        const char *index;
    } flags[] = {
        { FB_FAILED, "traces_failed" }, { FB_RETRIED, "traces_retried" },
        { FB_SLOW, "traces_slow" }, { FB_FLAGGED, "traces_flagged" }
    };
    size_t i;

    if (kind == Q_ROLLUP_COUNT || kind == Q_KINDS || kind == Q_BODY) {
        return NULL;
    }
    if (kind == Q_KIND_KEYS) {
        return "traces_kind";
    }
    for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (mask & F(flags[i].bit)) {
            return flags[i].index;
        }
    }
    if (kind == Q_PAGE || kind == Q_COUNT_COVERING) {
        /* Newest first, the other filters tested inside the index: a
         * project's own entries in traces_project, else everything's in
         * traces_created (each carries every other filtered column,
         * schema_v7). */
        return mask & F(FB_PROJECT) ? "traces_project"
               : mask ? "traces_created" : NULL;
    }
    if (mask & F_LATENCY) {
        return "traces_latency";
    }
    return mask & F_TOKENS ? "traces_tokens" : NULL;
}

/* A filter set and its values. */
typedef struct {
    unsigned mask;
    const char *status, *model, *project, *env;
    double lat_min, lat_max, lat_below;
    int64_t tok_min, tok_max;
} query;

/* A cached built statement; st first: store.c finalizes it through the
 * hash value as a sqlite3_stmt ** and leaves it NULL (when the
 * connection closes, or an idle child hands back its memory). */
typedef struct {
    sqlite3_stmt *st;
    unsigned key;
} built_stmt;

/* ---- building, binding, running --------------------------------------- */

static sqlite3_stmt *built(tllm_db *db, query_kind kind, unsigned mask)
{
    unsigned key = (unsigned)kind << FB__COUNT | mask;
    built_stmt *b = apr_hash_get(db->built, &key, sizeof(key));
    /* These heads have a WHERE of their own. */
    const char *sep = kind == Q_ROLLUP_COUNT || kind == Q_KINDS ? " AND "
                      : " WHERE ";
    const char *index = index_for(kind, mask);
    char sql[1024];    /* all terms together need well under half */
    size_t len;
    sqlite3_stmt *st;
    int i;

    if (b && b->st) {
        return b->st;
    }
    len = (size_t)snprintf(sql, sizeof(sql), "%s%s%s", shape[kind].head,
                           index ? " INDEXED BY " : "", index ? index : "");
    if (kind == Q_ROLLUP_COUNT) {
        mask &= ~(F(FB_PROJECT) | F(FB_ENV));    /* in the head */
    }
    for (i = 0; i < FB__COUNT; i++) {
        if (mask & F(i)) {
            len += (size_t)snprintf(sql + len, sizeof(sql) - len, "%s%s",
                                    sep, term[i]);
            sep = " AND ";
        }
    }
    snprintf(sql + len, sizeof(sql) - len, "%s", shape[kind].tail);

    /* Allocated once per shape, on success: the connection's pool lives
     * long. */
    st = tllm__prepare(db, sql);
    if (!st) {
        return NULL;
    }
    if (!b) {
        b = apr_palloc(db->pool, sizeof(*b));
        b->key = key;
        apr_hash_set(db->built, &b->key, sizeof(b->key), b);
    }
    b->st = st;
    return b->st;
}

/* Parameters a statement does not have are skipped: the same binder
 * serves every shape. */
static void bind_text(sqlite3_stmt *st, const char *name, const char *v)
{
    int i = sqlite3_bind_parameter_index(st, name);

    if (i) {
        tllm__bind_text(st, i, v);
    }
}

static void bind_int64(sqlite3_stmt *st, const char *name, int64_t v)
{
    int i = sqlite3_bind_parameter_index(st, name);

    if (i) {
        sqlite3_bind_int64(st, i, v);
    }
}

static void bind_double(sqlite3_stmt *st, const char *name, double v)
{
    int i = sqlite3_bind_parameter_index(st, name);

    if (i) {
        sqlite3_bind_double(st, i, v);
    }
}

static void bind_query(sqlite3_stmt *st, const query *q)
{
    bind_text(st, ":status", q->status);
    bind_text(st, ":model", q->model);
    bind_text(st, ":project", q->project);
    bind_text(st, ":env", q->env);
    bind_text(st, ":scope_project", q->project ? q->project : "");
    bind_text(st, ":scope_env", q->env ? q->env : "");
    bind_double(st, ":lat_min", q->lat_min);
    bind_double(st, ":lat_max", q->lat_max);
    bind_double(st, ":lat_below", q->lat_below);
    bind_int64(st, ":tok_min", q->tok_min);
    bind_int64(st, ":tok_max", q->tok_max);
}

/* Set a string filter; the contract says an empty value is no filter. */
static void query_text(query *q, int bit, const char **slot, const char *v)
{
    if (v && *v) {
        q->mask |= F(bit);
        *slot = v;
    }
}

static void query_scope(query *q, const char *project_id,
                        const char *environment)
{
    memset(q, 0, sizeof(*q));
    query_text(q, FB_PROJECT, &q->project, project_id);
    query_text(q, FB_ENV, &q->env, environment);
}

static void query_from_filter(query *q, const tllm_trace_filter *f)
{
    query_scope(q, f->project_id, f->environment);
    query_text(q, FB_STATUS, &q->status, f->status);
    query_text(q, FB_MODEL, &q->model, f->model_name);
    if (f->has_latency_min) {
        q->mask |= F(FB_LAT_MIN);
        q->lat_min = f->latency_min;
    }
    if (f->has_latency_max) {
        q->mask |= F(FB_LAT_MAX);
        q->lat_max = f->latency_max;
    }
    if (f->has_token_min) {
        q->mask |= F(FB_TOK_MIN);
        q->tok_min = f->token_min;
    }
    if (f->has_token_max) {
        q->mask |= F(FB_TOK_MAX);
        q->tok_max = f->token_max;
    }
}

static apr_array_header_t *page_array(apr_pool_t *p, int limit)
{
    return apr_array_make(p, limit > 0 && limit < 64 ? limit : 16,
                          sizeof(tllm_text));
}

/* Append the body in column 0 of st's row to out; TLLM_ERROR (recorded)
 * if it does not unpack. */
static int push_body(tllm_db *db, apr_pool_t *p, sqlite3_stmt *st,
                     apr_array_header_t *out)
{
    tllm_text *t = apr_array_push(out);

    t->s = tllm__col_body(db, p, st, 0, &t->len);
    return t->s ? TLLM_OK : TLLM_ERROR;
}

/* Append the matching bodies, newest first, at most limit, to *out.
 * range_path: find them through the latency or token index (WALK_FACTOR). */
static int page(tllm_db *db, apr_pool_t *p, const query *q, int limit,
                int range_path, apr_array_header_t **out)
{
    sqlite3_stmt *st = built(db, range_path ? Q_PAGE_RANGE : Q_PAGE,
                             q->mask);
    int rc;

    *out = page_array(p, limit);
    if (!st) {
        return TLLM_ERROR;
    }
    bind_query(st, q);
    bind_int64(st, ":limit", limit > 0 ? limit : 0);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (push_body(db, p, st, *out) != TLLM_OK) {
            tllm__release(st);
            return TLLM_ERROR;
        }
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "list traces");
    }
    tllm__release(st);
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

/* ---- a page merged from the kinds of traces_kind ---------------------- */

/* One (environment, model, status) and its count of traces. */
typedef struct {
    const char *env, *model, *status;
    int64_t n;
} kind_count;

/* A row's place in the listing. */
typedef struct {
    int64_t created_at, seq;
} row_key;

static int newest_first(const void *a, const void *b)
{
    const row_key *x = a, *y = b;

    if (x->created_at != y->created_at) {
        return x->created_at > y->created_at ? -1 : 1;
    }
    return x->seq > y->seq ? -1 : x->seq < y->seq;
}

/* The kinds that have traces matching q (a filter within F_KIND), from
 * the rollup; *entries = the index entries merging them reads. Stops
 * once that is over KIND_MAX_ENTRIES: the caller walks instead. */
static int matching_kinds(tllm_db *db, apr_pool_t *p, const query *q,
                          int limit, apr_array_header_t **kinds,
                          int64_t *entries)
{
    sqlite3_stmt *st = built(db, Q_KINDS, q->mask);
    int rc;

    *kinds = apr_array_make(p, 16, sizeof(kind_count));
    *entries = 0;
    if (!st) {
        return TLLM_ERROR;
    }
    bind_query(st, q);
    while (*entries <= KIND_MAX_ENTRIES
           && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        kind_count *k = apr_array_push(*kinds);

        k->env = tllm__col_text(p, st, 0, NULL);
        k->model = tllm__col_text(p, st, 1, NULL);
        k->status = tllm__col_text(p, st, 2, NULL);
        k->n = sqlite3_column_int64(st, 3);
        *entries += k->n < limit ? k->n : limit;
    }
    if (*entries > KIND_MAX_ENTRIES) {
        rc = SQLITE_DONE;
    }
    else if (rc != SQLITE_DONE) {
        tllm__fail(db, "find the kinds of traces");
    }
    tllm__release(st);
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

/* Append the keys of a kind's newest traces, at most limit, to keys. */
static int kind_keys(tllm_db *db, const kind_count *k, int limit,
                     apr_array_header_t *keys)
{
    sqlite3_stmt *st = built(db, Q_KIND_KEYS, F_KIND);
    query one;
    int rc;

    if (!st) {
        return TLLM_ERROR;
    }
    memset(&one, 0, sizeof(one));
    one.env = k->env;
    one.model = k->model;
    one.status = k->status;
    bind_query(st, &one);
    /* The rollup's count ends the read at the kind's last entry. */
    bind_int64(st, ":limit", k->n < limit ? k->n : limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        row_key *key = apr_array_push(keys);

        key->created_at = sqlite3_column_int64(st, 0);
        key->seq = sqlite3_column_int64(st, 1);
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "list a kind of traces");
    }
    tllm__release(st);
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

/* The page of a filter within F_KIND: the newest limit entries of every
 * matching kind, merged, and the first limit of them read by seq. At
 * most limit x kinds entries, however the kinds are spread over time; a
 * walk of traces_created reads every newer entry of the other kinds. */
static int page_by_kind(tllm_db *db, apr_pool_t *p,
                        const apr_array_header_t *kinds, int limit,
                        apr_array_header_t **out)
{
    apr_array_header_t *keys = apr_array_make(p, limit, sizeof(row_key));
    sqlite3_stmt *st;
    int i, rc;

    *out = page_array(p, limit);
    for (i = 0; i < kinds->nelts; i++) {
        if (kind_keys(db, &APR_ARRAY_IDX(kinds, i, kind_count), limit,
                      keys) != TLLM_OK) {
            return TLLM_ERROR;
        }
    }
    qsort(keys->elts, (size_t)keys->nelts, sizeof(row_key), newest_first);
    for (i = 0; i < keys->nelts && i < limit; i++) {
        st = built(db, Q_BODY, 0);
        if (!st) {
            return TLLM_ERROR;
        }
        bind_int64(st, ":seq", APR_ARRAY_IDX(keys, i, row_key).seq);
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
            /* The same snapshot gave the key: the row is there. */
            tllm__fail(db, "read a listed trace");
        }
        else if (push_body(db, p, st, *out) != TLLM_OK) {
            rc = SQLITE_CORRUPT;
        }
        tllm__release(st);
        if (rc != SQLITE_ROW) {
            return TLLM_ERROR;
        }
    }
    return TLLM_OK;
}

/* covering: count through traces_project or traces_created, not the
 * bound's index (TOKENS_ROW_FACTOR). */
static int count_in(tllm_db *db, const query *q, int covering, int64_t *n)
{
    /* Filters the rollup covers are answered without touching traces. */
    query_kind kind = !(q->mask & ~F_ROLLUP) ? Q_ROLLUP_COUNT
                      : covering ? Q_COUNT_COVERING : Q_COUNT;
    sqlite3_stmt *st = built(db, kind, q->mask);
    int found;

    *n = 0;
    if (st) {
        bind_query(st, q);
    }
    return tllm__scalar(db, st, &found, n, NULL);
}

static int count(tllm_db *db, const query *q, int64_t *n)
{
    return count_in(db, q, 0, n);
}

/* Whether q pairs a token bound with other filters (a latency bound
 * aside: traces_latency carries every column) over so much of
 * traces_tokens that a covering index is the cheaper way to them; all =
 * the count of every trace. */
static int tokens_too_wide(tllm_db *db, const query *q, int64_t all,
                           int *wide)
{
    query bound = *q;
    int64_t in_range = 0;

    *wide = 0;
    if (!(q->mask & F_TOKENS) || q->mask & F_LATENCY
        || !(q->mask & ~F_TOKENS)) {
        return TLLM_OK;
    }
    bound.mask &= F_TOKENS;    /* counted in traces_tokens alone */
    if (count(db, &bound, &in_range) != TLLM_OK) {
        return TLLM_ERROR;
    }
    *wide = in_range * TOKENS_ROW_FACTOR > all;
    return TLLM_OK;
}

/* End a read transaction begun for a consistent snapshot. */
static int end_read(tllm_db *db, int rv)
{
    if (rv != TLLM_OK) {
        tllm__rollback(db);
        return rv;
    }
    return tllm__commit(db);
}

/* ---- reading ---------------------------------------------------------- */

int tllm_store_trace_get(tllm_db *db, apr_pool_t *p, const char *trace_id,
                         tllm_text *out)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_TRACE_GET);
    int rc;

    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, trace_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->s = tllm__col_body(db, p, st, 0, &out->len);
        if (!out->s) {
            rc = SQLITE_CORRUPT;
        }
    }
    else if (rc != SQLITE_DONE) {
        tllm__fail(db, "get trace");
    }
    tllm__release(st);
    return rc == SQLITE_ROW ? TLLM_OK
           : rc == SQLITE_DONE ? TLLM_NOTFOUND : TLLM_ERROR;
}

/* ---- listing ---------------------------------------------------------- */

int tllm_store_traces_list(tllm_db *db, apr_pool_t *p,
                           const tllm_trace_filter *f, int limit,
                           int64_t *total, apr_array_header_t **items)
{
    query q, everything;
    int64_t all = 0;
    int rv = TLLM_OK, range_path = 0, wide_tokens = 0;

    query_from_filter(&q, f);
    *total = 0;
    *items = apr_array_make(p, 1, sizeof(tllm_text));
    /* One snapshot: the total and the page agree. */
    if (tllm__begin(db, 0) != TLLM_OK) {
        return TLLM_ERROR;
    }
    /* A bound's choices weigh it against every trace (from the rollup). */
    if (q.mask & F_RANGE) {
        memset(&everything, 0, sizeof(everything));
        rv = count(db, &everything, &all);
    }
    if (rv == TLLM_OK) {
        rv = tokens_too_wide(db, &q, all, &wide_tokens);
    }
    if (rv == TLLM_OK) {
        rv = count_in(db, &q, wide_tokens, total);
    }
    /* The page ends at the last match: a walk stops there, not at the
     * oldest entry (and nothing matching reads nothing). */
    if (rv != TLLM_OK || *total < 1 || limit < 1) {
        return end_read(db, rv);
    }
    if (*total < limit) {
        limit = (int)*total;
    }
    if (q.mask & F_RANGE) {
        range_path = !wide_tokens
                     && *total * *total * WALK_FACTOR < (int64_t)limit * all;
    }
    else if (q.mask && !(q.mask & ~F_KIND)) {
        apr_array_header_t *kinds;
        int64_t entries;

        rv = matching_kinds(db, p, &q, limit, &kinds, &entries);
        if (rv == TLLM_OK && entries <= KIND_MAX_ENTRIES) {
            return end_read(db, page_by_kind(db, p, kinds, limit, items));
        }
    }
    if (rv == TLLM_OK) {
        rv = page(db, p, &q, limit, range_path, items);
    }
    return end_read(db, rv);
}

/* ---- aggregates ------------------------------------------------------- */

/* The sums of rollup_total over a scope. */
typedef struct {
    int64_t total, success, failed, warning, retries, slow, tokens;
    double latency_sum;
} totals;

/* The scope's rows in the rollups: '' for a project or environment not
 * filtered on (schema_v5). */
static int bind_scope(tllm_db *db, sqlite3_stmt *st, const query *scope)
{
    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, scope->project ? scope->project : "");
    tllm__bind_text(st, 2, scope->env ? scope->env : "");
    return TLLM_OK;
}

/* One breakdown being summed: key -> tllm_count, in an array. */
typedef struct {
    apr_hash_t *index;             /* key -> position + 1 in counts */
    apr_array_header_t *counts;
    intptr_t last;                 /* position + 1 of the last key, or 0 */
    int last_len;                  /* and its length */
} tally;

static void tally_init(tally *t, apr_pool_t *p)
{
    t->index = apr_hash_make(p);
    t->counts = apr_array_make(p, 8, sizeof(tllm_count));
    t->last = 0;
    t->last_len = 0;
}

static void tally_add(tally *t, apr_pool_t *p, sqlite3_stmt *st, int col,
                      int64_t n)
{
    const char *key = (const char *)sqlite3_column_text(st, col);
    int len = sqlite3_column_bytes(st, col);
    intptr_t at;
    tllm_count *c;

    if (!key) {
        return;
    }
    /* The scope's groups come in key order (project, environment, model,
     * status), so a project or model is mostly the one before: compared
     * first, it spares most lookups in the hash (store.c's ST_HOURS says
     * what the two together saved). */
    at = t->last;
    if (at && (len != t->last_len
               || memcmp(APR_ARRAY_IDX(t->counts, at - 1, tllm_count).key,
                         key, (size_t)len) != 0)) {
        at = 0;
    }
    /* The hash holds position + 1: the array moves as it grows. */
    if (!at) {
        at = (intptr_t)apr_hash_get(t->index, key, len);
    }
    if (at) {
        c = &APR_ARRAY_IDX(t->counts, at - 1, tllm_count);
    }
    else {
        c = apr_array_push(t->counts);
        c->key = apr_pstrmemdup(p, key, (apr_size_t)len);
        c->count = 0;
        at = t->counts->nelts;
        apr_hash_set(t->index, c->key, len, (void *)at);
    }
    t->last = at;
    t->last_len = len;
    c->count += n;
}

/* Count descending, then key ascending in byte order (the contract). */
static int by_count_then_key(const void *a, const void *b)
{
    const tllm_count *x = a, *y = b;

    if (x->count != y->count) {
        return x->count > y->count ? -1 : 1;
    }
    return strcmp(x->key, y->key);
}

/* The breakdown as the contract lists it: keys with a count above zero,
 * sorted. */
static apr_array_header_t *tally_done(tally *t, apr_pool_t *p)
{
    apr_array_header_t *out = apr_array_make(p, t->counts->nelts + 1,
                                             sizeof(tllm_count));
    int i;

    for (i = 0; i < t->counts->nelts; i++) {
        tllm_count *c = &APR_ARRAY_IDX(t->counts, i, tllm_count);

        if (c->count > 0) {
            *(tllm_count *)apr_array_push(out) = *c;
        }
    }
    qsort(out->elts, (size_t)out->nelts, sizeof(tllm_count),
          by_count_then_key);
    return out;
}

/* The project breakdown: a scope with a project is that project alone;
 * otherwise rollup_project has the counts. */
static int by_project(tllm_db *db, apr_pool_t *p, const query *scope,
                      int64_t total, apr_array_header_t **out)
{
    sqlite3_stmt *st;
    tally project;
    int rc;

    if (scope->project) {
        *out = apr_array_make(p, 1, sizeof(tllm_count));
        if (total > 0) {
            tllm_count *c = apr_array_push(*out);

            c->key = apr_pstrdup(p, scope->project);
            c->count = total;
        }
        return TLLM_OK;
    }
    st = tllm__stmt(db, ST_PROJECT_COUNTS);
    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, scope->env ? scope->env : "");
    tally_init(&project, p);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tally_add(&project, p, st, 0, sqlite3_column_int64(st, 1));
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "count traces per project");
    }
    tllm__release(st);
    if (rc == SQLITE_DONE) {
        *out = tally_done(&project, p);
    }
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

/* The sums of rollup_total over a scope and its three breakdowns: one
 * pass over the scope's own groups (a model and a status each, schema_v5)
 * instead of a GROUP BY and a sort per breakdown. */
static int sum_rollup(tllm_db *db, apr_pool_t *p, const query *scope,
                      totals *t, tllm_analytics *a)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_ROLLUP_SCOPE);
    tally status, model;
    int rc;

    memset(t, 0, sizeof(*t));
    if (bind_scope(db, st, scope) != TLLM_OK) {
        return TLLM_ERROR;
    }
    tally_init(&status, p);
    tally_init(&model, p);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 1);
        int64_t n = sqlite3_column_int64(st, 2);

        t->total += n;
        if (state && strcmp(state, TLLM_STATUS_SUCCESS) == 0) {
            t->success += n;
        }
        else if (state && strcmp(state, TLLM_STATUS_FAILED) == 0) {
            t->failed += n;
        }
        else if (state && strcmp(state, TLLM_STATUS_WARNING) == 0) {
            t->warning += n;
        }
        t->retries += sqlite3_column_int64(st, 3);
        t->slow += sqlite3_column_int64(st, 4);
        t->tokens += sqlite3_column_int64(st, 5);
        t->latency_sum += sqlite3_column_double(st, 6);
        tally_add(&model, p, st, 0, n);
        tally_add(&status, p, st, 1, n);
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "sum traces");
    }
    tllm__release(st);
    if (rc != SQLITE_DONE) {
        return TLLM_ERROR;
    }
    a->by_status = tally_done(&status, p);
    a->by_model = tally_done(&model, p);
    return by_project(db, p, scope, t->total, &a->by_project);
}

/* Walk a histogram's (bucket, n) rows, largest bucket first, to the one
 * holding the rank-th largest value (0 = the largest), and that value's
 * rank within the bucket. found = 0 if the rows hold fewer values. */
static int walk_to_rank(tllm_db *db, sqlite3_stmt *st, int64_t rank,
                        int64_t *bucket, int64_t *rank_in, int *found)
{
    int64_t above = 0;
    int rc;

    *found = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t n = sqlite3_column_int64(st, 1);

        if (above + n > rank) {
            *bucket = sqlite3_column_int64(st, 0);
            *rank_in = rank - above;
            *found = 1;
            rc = SQLITE_DONE;
            break;
        }
        above += n;
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "latency histogram");
    }
    tllm__release(st);
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

/* The bucket of scope's latency histogram holding the rank-th largest
 * latency, and that latency's rank within the bucket: the coarse
 * histogram names the coarse bucket, whose 16 fine buckets are then
 * walked (schema_v5). found = 0 if the histogram has fewer traces. */
static int bucket_of_rank(tllm_db *db, const query *scope, int64_t rank,
                          int64_t *bucket, int64_t *rank_in, int *found)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_LATENCY_COARSE);
    int64_t coarse = 0, rank_coarse = 0;

    *found = 0;
    if (bind_scope(db, st, scope) != TLLM_OK
        || walk_to_rank(db, st, rank, &coarse, &rank_coarse, found)
           != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (!*found) {
        return TLLM_OK;
    }
    st = tllm__stmt(db, ST_LATENCY_BUCKETS);
    if (bind_scope(db, st, scope) != TLLM_OK) {
        return TLLM_ERROR;
    }
    sqlite3_bind_int64(st, 3, coarse << TLLM_LATENCY_COARSE_SHIFT);
    sqlite3_bind_int64(st, 4, (coarse + 1) << TLLM_LATENCY_COARSE_SHIFT);
    return walk_to_rank(db, st, rank_coarse, bucket, rank_in, found);
}

/* Nearest rank: sorted ascending, the value at index ceil(0.95 n) - 1,
 * that is rank n - 1 - k from the top. The histograms (bucket_of_rank)
 * name the bucket that holds it; then only that bucket's stretch of
 * traces_latency is walked, from the top, to the rank within it. Integer
 * arithmetic: 0.95 * n in floating point can land just above a whole
 * number and take the next rank. */
static int p95(tllm_db *db, const query *scope, int64_t n, double *out)
{
    int64_t k = (95 * n + 99) / 100 - 1;
    int64_t bucket = 0, rank_in = 0;
    query in_bucket = *scope;
    sqlite3_stmt *st;
    int found;

    *out = 0;
    if (n <= 0) {
        return TLLM_OK;
    }
    if (bucket_of_rank(db, scope, n - 1 - k, &bucket, &rank_in, &found)
        != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (!found) {
        snprintf(db->errmsg, sizeof(db->errmsg), "the latency histograms "
                 "hold fewer traces than rollup_total (%lld)", (long long)n);
        return TLLM_ERROR;
    }
    in_bucket.mask |= F(FB_LAT_MIN) | F(FB_LAT_BELOW);
    in_bucket.lat_min = tllm__bucket_floor(bucket);
    in_bucket.lat_below = tllm__bucket_floor(bucket + 1);
    st = built(db, Q_RANK_DESC, in_bucket.mask);
    if (st) {
        bind_query(st, &in_bucket);
        bind_int64(st, ":offset", rank_in);
    }
    return tllm__scalar(db, st, &found, NULL, out);
}

static int64_t hour_floor(int64_t us)
{
    return us - ((us % HOUR_US) + HOUR_US) % HOUR_US;
}

static int hours(tllm_db *db, const query *scope, int64_t now_us,
                 tllm_analytics *a)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_HOURS);
    int64_t last = hour_floor(now_us);
    double latency_sum[24] = { 0 };
    int i, rc;

    for (i = 0; i < 24; i++) {
        a->hour_start[i] = last - (23 - i) * HOUR_US;
    }
    if (bind_scope(db, st, scope) != TLLM_OK) {
        return TLLM_ERROR;
    }
    sqlite3_bind_int64(st, 3, a->hour_start[0]);
    sqlite3_bind_int64(st, 4, last);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t h = (sqlite3_column_int64(st, 0) - a->hour_start[0])
                    / HOUR_US;

        if (h < 0 || h > 23) {
            continue;
        }
        a->hour_traces[h] += sqlite3_column_int64(st, 1);
        a->hour_tokens[h] += sqlite3_column_int64(st, 2);
        latency_sum[h] += sqlite3_column_double(st, 3);
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "hourly traces");
    }
    tllm__release(st);
    for (i = 0; i < 24; i++) {
        a->hour_latency[i] = a->hour_traces[i] > 0
                             ? latency_sum[i] / a->hour_traces[i] : 0;
    }
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

static int analytics(tllm_db *db, apr_pool_t *p, const query *scope,
                     int64_t now_us, tllm_analytics *a)
{
    query flagged = *scope;
    totals t;

    if (sum_rollup(db, p, scope, &t, a) != TLLM_OK) {
        return TLLM_ERROR;
    }
    a->total_traces = t.total;
    a->success_traces = t.success;
    a->failed_traces = t.failed;
    a->warning_traces = t.warning;
    a->retries = t.retries;
    a->slow_requests = t.slow;
    a->total_tokens = t.tokens;
    a->average_latency = t.total > 0 ? t.latency_sum / t.total : 0;
    flagged.mask |= F(FB_FLAGGED);
    if (p95(db, scope, t.total, &a->p95_latency) != TLLM_OK
        || hours(db, scope, now_us, a) != TLLM_OK
        || page(db, p, &flagged, RECENT_FAILURES, 0, &a->recent_failures)
           != TLLM_OK) {
        return TLLM_ERROR;
    }
    return TLLM_OK;
}

int tllm_store_analytics(tllm_db *db, apr_pool_t *p, const char *project_id,
                         const char *environment, int64_t now_us,
                         tllm_analytics *out)
{
    query scope;

    memset(out, 0, sizeof(*out));
    out->by_status = apr_array_make(p, 1, sizeof(tllm_count));
    out->by_model = apr_array_make(p, 1, sizeof(tllm_count));
    out->by_project = apr_array_make(p, 1, sizeof(tllm_count));
    out->recent_failures = apr_array_make(p, 1, sizeof(tllm_text));
    query_scope(&scope, project_id, environment);
    if (tllm__begin(db, 0) != TLLM_OK) {
        return TLLM_ERROR;
    }
    return end_read(db, analytics(db, p, &scope, now_us, out));
}

static int flagged_totals(tllm_db *db, const query *scope,
                          tllm_failures *out)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_FLAGGED_TOTALS);
    int rc;

    if (bind_scope(db, st, scope) != TLLM_OK) {
        return TLLM_ERROR;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        /* SUM over no groups is NULL, which reads as 0. */
        out->failed_total = sqlite3_column_int64(st, 0);
        out->retried_total = sqlite3_column_int64(st, 1);
        out->slow_total = sqlite3_column_int64(st, 2);
    }
    else {
        tllm__fail(db, "sum failures");
    }
    tllm__release(st);
    return rc == SQLITE_ROW ? TLLM_OK : TLLM_ERROR;
}

static int failures(tllm_db *db, apr_pool_t *p, const query *scope,
                    int limit, tllm_failures *out)
{
    query failed = *scope, retried = *scope, slow = *scope;

    failed.mask |= F(FB_FAILED);
    retried.mask |= F(FB_RETRIED);
    slow.mask |= F(FB_SLOW);
    if (flagged_totals(db, scope, out) != TLLM_OK
        || page(db, p, &failed, limit, 0, &out->failed) != TLLM_OK
        || page(db, p, &retried, limit, 0, &out->retried) != TLLM_OK
        || page(db, p, &slow, limit, 0, &out->slow) != TLLM_OK) {
        return TLLM_ERROR;
    }
    return TLLM_OK;
}

int tllm_store_failures(tllm_db *db, apr_pool_t *p, const char *project_id,
                        const char *environment, int limit,
                        tllm_failures *out)
{
    query scope;

    memset(out, 0, sizeof(*out));
    out->failed = apr_array_make(p, 1, sizeof(tllm_text));
    out->retried = apr_array_make(p, 1, sizeof(tllm_text));
    out->slow = apr_array_make(p, 1, sizeof(tllm_text));
    query_scope(&scope, project_id, environment);
    if (tllm__begin(db, 0) != TLLM_OK) {
        return TLLM_ERROR;
    }
    return end_read(db, failures(db, p, &scope, limit, out));
}
