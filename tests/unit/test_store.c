/*
 * test_store.c - the store against a real SQLite file: schema migration,
 * projects and keys, storing and replacing traces, every listing filter,
 * and analytics and failures over a small data set whose numbers are
 * worked out by hand in the comments below.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <apr_general.h>
#include <apr_strings.h>
#include "key_cache.h"
#include "store.h"
#include "store_int.h"
#include "trace_body.h"
#include "unit.h"
#include "wal_buffer.h"

#define H INT64_C(3600000000)
#define S INT64_C(1000000)

static apr_pool_t *tp;          /* test scratch */
static int close_rc = -1;       /* sqlite3_close's answer at pool end */

/* Stands in for mod_dbd: the connection closes when its pool goes, by a
 * cleanup registered before the store attaches. */
static apr_status_t close_db(void *data)
{
    close_rc = sqlite3_close(data);
    return APR_SUCCESS;
}

static tllm_db *open_db(const char *path, apr_pool_t **pool, sqlite3 **out)
{
    sqlite3 *sq = NULL;

    apr_pool_create(pool, NULL);
    if (sqlite3_open_v2(path, &sq, SQLITE_OPEN_READWRITE
                        | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        fprintf(stderr, "open %s: %s\n", path, sqlite3_errmsg(sq));
        exit(2);
    }
    apr_pool_cleanup_register(*pool, sq, close_db, apr_pool_cleanup_null);
    *out = sq;
    return tllm_db_attach(*pool, sq);
}

/* Remove a database file with its WAL and shared-memory index. */
static void remove_db(const char *file)
{
    unlink(file);
    unlink(apr_pstrcat(tp, file, "-wal", NULL));
    unlink(apr_pstrcat(tp, file, "-shm", NULL));
    unlink(apr_pstrcat(tp, file, "-keygen", NULL));
}

/* A one-value query straight on the handle, as text (test scratch). */
static const char *raw(sqlite3 *sq, const char *sql)
{
    sqlite3_stmt *st;
    const char *v = NULL;

    if (sqlite3_prepare_v2(sq, sql, -1, &st, NULL) != SQLITE_OK) {
        return NULL;
    }
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
        v = apr_pstrdup(tp, (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return v;
}

#define STRINGIFY(x) #x
#define TEXT_OF(x) STRINGIFY(x)
#define VERSION_TEXT TEXT_OF(TLLM_SCHEMA_VERSION)

/* The details of sql's query plan, one per line. */
static const char *plan(sqlite3 *sq, const char *sql)
{
    sqlite3_stmt *st;
    const char *v = "";

    if (sqlite3_prepare_v2(sq, apr_pstrcat(tp, "EXPLAIN QUERY PLAN ", sql,
                                           NULL), -1, &st, NULL)
        != SQLITE_OK) {
        return NULL;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        v = apr_pstrcat(tp, v, sqlite3_column_text(st, 3), "\n", NULL);
    }
    sqlite3_finalize(st);
    return v;
}

static int count_stmts(sqlite3 *sq)
{
    sqlite3_stmt *st = NULL;
    int n = 0;

    while ((st = sqlite3_next_stmt(sq, st)) != NULL) {
        n++;
    }
    return n;
}

/* Whether another thread can take sq's mutex now: a transaction holds it
 * (store.c) and must give it back however the transaction ends, or the
 * next request on that connection waits forever. */
static void *try_mutex(void *sq)
{
    sqlite3_mutex *m = sqlite3_db_mutex(sq);

    if (sqlite3_mutex_try(m) != SQLITE_OK) {
        return NULL;
    }
    sqlite3_mutex_leave(m);
    return sq;
}

static int mutex_free(sqlite3 *sq)
{
    pthread_t t;
    void *got = NULL;

    if (pthread_create(&t, NULL, try_mutex, sq) != 0) {
        return 0;
    }
    pthread_join(t, &got);
    return got == sq;
}

/* How many groups of the five rollups differ from the traces' rows
 * summed afresh, in every scope ('' = any project or environment,
 * schema_v5) ("0" when the rollups are exact; latency sums to a relative
 * 1e-9, for the order they were added in). Groups emptied by deletes stay
 * with n = 0 and count as absent. */
static const char *rollups_off(sqlite3 *sq)
{
    static const char sql[] =
        "WITH sc AS (SELECT project_id AS p, environment AS e, * FROM traces"
        "  UNION ALL SELECT project_id, '', * FROM traces"
        "  UNION ALL SELECT '', environment, * FROM traces"
        "  UNION ALL SELECT '', '', * FROM traces),"
        " tt AS (SELECT p AS project_id, e AS environment, model_name, status,"
        "  count(*) AS n, sum(retry_count > 0) AS retried,"
        "  sum(retry_count) AS retries, sum(slow) AS slow,"
        "  sum(token_count) AS tokens, sum(latency) AS latency_sum"
        "  FROM sc GROUP BY 1, 2, 3, 4),"
        " rt AS (SELECT * FROM rollup_total WHERE n > 0),"
        " th AS (SELECT created_at - ((created_at % 3600000000)"
        "  + 3600000000) % 3600000000 AS hour, p AS project_id,"
        "  e AS environment, count(*) AS n, sum(token_count) AS tokens,"
        "  sum(latency) AS latency_sum FROM sc GROUP BY 1, 2, 3),"
        " rh AS (SELECT * FROM rollup_hour WHERE n > 0),"
        " tp AS (SELECT environment, project_id, count(*) AS n FROM traces"
        "  GROUP BY 1, 2 UNION ALL SELECT '', project_id, count(*)"
        "  FROM traces GROUP BY 2),"
        " rp AS (SELECT * FROM rollup_project WHERE n > 0),"
        " tl AS (SELECT p AS project_id, e AS environment, lat_bucket AS"
        "  bucket, count(*) AS n FROM sc GROUP BY 1, 2, 3),"
        " rl AS (SELECT * FROM rollup_latency WHERE n > 0),"
        " tc AS (SELECT p AS project_id, e AS environment, lat_bucket >> 4"
        "  AS bucket, count(*) AS n FROM sc GROUP BY 1, 2, 3),"
        " rc AS (SELECT * FROM rollup_latency_coarse WHERE n > 0)"
        " SELECT (SELECT count(*) FROM rt FULL JOIN tt"
        "  USING (project_id, environment, model_name, status)"
        "  WHERE rt.n IS NOT tt.n OR rt.retried IS NOT tt.retried"
        "  OR rt.retries IS NOT tt.retries OR rt.slow IS NOT tt.slow"
        "  OR rt.tokens IS NOT tt.tokens OR NOT abs(rt.latency_sum"
        "  - tt.latency_sum) <= 1e-9 * (1 + abs(tt.latency_sum)))"
        " + (SELECT count(*) FROM rh FULL JOIN th"
        "  USING (hour, project_id, environment)"
        "  WHERE rh.n IS NOT th.n OR rh.tokens IS NOT th.tokens"
        "  OR NOT abs(rh.latency_sum - th.latency_sum)"
        "  <= 1e-9 * (1 + abs(th.latency_sum)))"
        " + (SELECT count(*) FROM rp FULL JOIN tp"
        "  USING (environment, project_id) WHERE rp.n IS NOT tp.n)"
        " + (SELECT count(*) FROM rl FULL JOIN tl"
        "  USING (project_id, environment, bucket) WHERE rl.n IS NOT tl.n)"
        " + (SELECT count(*) FROM rc FULL JOIN tc"
        "  USING (project_id, environment, bucket) WHERE rc.n IS NOT tc.n)";

    return raw(sq, sql);
}

/* ---- projects and keys ------------------------------------------------ */

static tllm_key mkkey(const char *key_id, const char *project_id,
                      const char *env, int64_t created_at, int hash_byte)
{
    tllm_key k;

    memset(&k, 0, sizeof(k));
    k.key_id = key_id;
    k.project_id = project_id;
    k.environment = env;
    k.hint = apr_psprintf(tp, "h%d", hash_byte);
    memset(k.hash, hash_byte, sizeof(k.hash));
    k.created_at = created_at;
    k.last_used_at = -1;
    return k;
}

static const char *key_ids(apr_array_header_t *a)
{
    const char *s = "";
    int i;

    for (i = 0; i < a->nelts; i++) {
        s = apr_pstrcat(tp, s, i ? "," : "",
                        APR_ARRAY_IDX(a, i, tllm_key).key_id, NULL);
    }
    return s;
}

static void test_projects(tllm_db *db)
{
    tllm_project pa = { "alpha", "Alpha", "first", 100 };
    tllm_project pb = { "beta", "Beta", NULL, 100 };
    tllm_project pg = { "gamma", "Gamma", "", 50 };
    tllm_project same_id = { "alpha", "Other", "", 10 };
    tllm_project same_name = { "alpha-2", "Alpha", "", 10 };
    tllm_key k1 = mkkey("key_1", "alpha", "prod", 100, 1);
    tllm_key k2 = mkkey("key_2", "beta", "prod", 100, 2);
    tllm_key kg = mkkey("key_g", "gamma", "dev", 50, 3);
    tllm_key kx = mkkey("key_x", "alpha", "prod", 10, 9);
    tllm_key k3 = mkkey("key_3", "alpha", "dev", 200, 4);
    tllm_key knp = mkkey("key_np", "nope", "dev", 300, 5);
    apr_array_header_t *a;
    tllm_key *found;
    unsigned char unknown[32];

    CHECK(tllm_store_project_create(db, &pa, &k1) == TLLM_OK);
    CHECK(tllm_store_project_create(db, &pb, &k2) == TLLM_OK);
    CHECK(tllm_store_project_create(db, &pg, &kg) == TLLM_OK);
    CHECK(tllm_store_project_create(db, &same_id, &kx) == TLLM_CONFLICT);
    kx.key_id = "key_y";
    CHECK(tllm_store_project_create(db, &same_name, &kx) == TLLM_CONFLICT);
    same_name.name = NULL;
    CHECK(tllm_store_project_create(db, &same_name, &kx) == TLLM_ERROR);
    CHECK(strstr(tllm_db_errmsg(db), "NOT NULL") != NULL);

    /* Oldest first; alpha and beta tie on created_at: insertion order. */
    CHECK(tllm_store_projects(db, tp, &a) == TLLM_OK);
    CHECK(a->nelts == 3);
    if (a->nelts == 3) {
        tllm_project *p = (tllm_project *)a->elts;

        CHECK_STR(p[0].project_id, "gamma");
        CHECK_STR(p[1].project_id, "alpha");
        CHECK_STR(p[1].name, "Alpha");
        CHECK_STR(p[1].description, "first");
        CHECK(p[1].created_at == 100);
        CHECK_STR(p[2].project_id, "beta");
        CHECK_STR(p[2].description, "");
    }
    CHECK(tllm_store_project_exists(db, "alpha") == TLLM_OK);
    CHECK(tllm_store_project_exists(db, "alpha-2") == TLLM_NOTFOUND);

    CHECK(tllm_store_key_create(db, &k3) == TLLM_OK);
    CHECK(tllm_store_key_create(db, &knp) == TLLM_NOTFOUND);
    CHECK(tllm_store_key_create(db, &k3) == TLLM_CONFLICT);

    /* Newest first; key_1 and key_2 tie: the later insert first. No
     * key of a refused project creation was kept. */
    CHECK(tllm_store_keys(db, tp, NULL, &a) == TLLM_OK);
    CHECK_STR(key_ids(a), "key_3,key_2,key_1,key_g");
    CHECK(tllm_store_keys(db, tp, "alpha", &a) == TLLM_OK);
    CHECK_STR(key_ids(a), "key_3,key_1");
    CHECK(tllm_store_keys(db, tp, "nope", &a) == TLLM_OK);
    CHECK(a->nelts == 0);

    CHECK(tllm_store_key_find(db, tp, k1.hash, &found) == TLLM_OK);
    CHECK_STR(found->key_id, "key_1");
    CHECK_STR(found->project_id, "alpha");
    CHECK_STR(found->environment, "prod");
    CHECK_STR(found->hint, "h1");
    CHECK(memcmp(found->hash, k1.hash, 32) == 0);
    CHECK(found->created_at == 100);
    CHECK(found->last_used_at == -1);
    CHECK(found->revoked == 0);
    memset(unknown, 7, sizeof(unknown));
    CHECK(tllm_store_key_find(db, tp, unknown, &found) == TLLM_NOTFOUND);

    /* Touch: first use writes, a use within the minute does not, a use
     * more than a minute later does. */
    CHECK(tllm_store_key_touch(db, "key_1", 1000 * S) == TLLM_OK);
    tllm_store_key_find(db, tp, k1.hash, &found);
    CHECK(found->last_used_at == 1000 * S);
    CHECK(tllm_store_key_touch(db, "key_1", 1030 * S) == TLLM_OK);
    tllm_store_key_find(db, tp, k1.hash, &found);
    CHECK(found->last_used_at == 1000 * S);
    CHECK(tllm_store_key_touch(db, "key_1", 1060 * S) == TLLM_OK);
    tllm_store_key_find(db, tp, k1.hash, &found);
    CHECK(found->last_used_at == 1000 * S);
    CHECK(tllm_store_key_touch(db, "key_1", 1061 * S) == TLLM_OK);
    tllm_store_key_find(db, tp, k1.hash, &found);
    CHECK(found->last_used_at == 1061 * S);
    CHECK(tllm_store_key_touch(db, "nope", 1061 * S) == TLLM_OK);

    CHECK(tllm_store_key_revoke(db, "key_1") == TLLM_OK);
    CHECK(tllm_store_key_revoke(db, "key_1") == TLLM_OK);
    CHECK(tllm_store_key_revoke(db, "nope") == TLLM_NOTFOUND);
    tllm_store_key_find(db, tp, k1.hash, &found);
    CHECK(found->revoked == 1);
    tllm_store_key_find(db, tp, k2.hash, &found);
    CHECK(found->revoked == 0);
}

/* ---- the key cache (key_cache.c) -------------------------------------- */

/* The key generation beside file, as the file holds it; -1 if none. */
static int64_t key_generation(const char *file)
{
    uint64_t v;
    int fd = open(apr_pstrcat(tp, file, "-keygen", NULL), O_RDONLY);
    int ok = fd >= 0 && pread(fd, &v, 8, 0) == 8;

    if (fd >= 0) {
        close(fd);
    }
    return ok ? (int64_t)v : -1;
}

/* Revoke key_id from a process of its own, on a connection of its own,
 * as another httpd child would. */
static void revoke_elsewhere(const char *file, const char *key_id)
{
    pid_t pid = fork();
    int status = -1;

    if (pid == 0) {
        apr_pool_t *cp;
        sqlite3 *sq;
        tllm_db *db = open_db(file, &cp, &sq);

        _exit(db && tllm_store_key_revoke(db, key_id) == TLLM_OK ? 0 : 1);
    }
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_key_cache(const char *file)
{
    apr_pool_t *cp, *cp2;
    sqlite3 *sq, *sq2;
    tllm_db *db = open_db(file, &cp, &sq), *db2;
    tllm_project pc = { "cache", "Cache", "", 100 };
    tllm_key kc = mkkey("key_c", "cache", "prod", 100, 42);
    tllm_key kd = mkkey("key_d", "cache", "prod", 100, 43);
    tllm_key *found = NULL;
    unsigned char unknown[32];
    int64_t t = 1000 * S, before;

    memset(unknown, 42, sizeof(unknown));
    unknown[31] = 0;         /* kc's slot, not kc */
    CHECK(db && tllm_store_migrate(db) == TLLM_OK);
    db2 = open_db(file, &cp2, &sq2);
    CHECK(tllm_store_project_create(db, &pc, &kc) == TLLM_OK);
    CHECK(tllm_store_key_create(db, &kd) == TLLM_OK);
    CHECK(tllm_key_cache_find(db, tp, unknown, t, &found) == TLLM_NOTFOUND);

    /* A miss reads the database, and the next lookup is served from what
     * it read: a change made behind the cache's back (no revocation) is
     * not seen until the entry's time is up. */
    CHECK(tllm_key_cache_find(db, tp, kc.hash, t, &found) == TLLM_OK);
    CHECK_STR(found->key_id, "key_c");
    CHECK_STR(found->environment, "prod");
    CHECK(key_generation(file) >= 0);
    raw(sq2, "UPDATE api_keys SET environment = 'moved'"
             " WHERE key_id = 'key_c'");
    CHECK(tllm_store_key_find(db, tp, kc.hash, &found) == TLLM_OK);
    CHECK_STR(found->environment, "moved");
    CHECK(tllm_key_cache_find(db2, tp, kc.hash, t + 1, &found) == TLLM_OK);
    CHECK_STR(found->environment, "prod");
    CHECK_STR(found->project_id, "cache");
    CHECK_STR(found->hint, "h42");
    CHECK(memcmp(found->hash, kc.hash, 32) == 0);
    t += TLLM_KEY_CACHE_TTL_US;
    CHECK(tllm_key_cache_find(db, tp, kc.hash, t, &found) == TLLM_OK);
    CHECK_STR(found->environment, "moved");

    /* A touch is remembered with the entry. */
    CHECK(found->last_used_at == -1);
    tllm_key_cache_touched(kc.hash, t);
    CHECK(tllm_key_cache_find(db, tp, kc.hash, t + 1, &found) == TLLM_OK);
    CHECK(found->last_used_at == t);

    /* A revocation on another connection of this process, then in
     * another process: the next lookup sees each, both keys cached. */
    CHECK(tllm_key_cache_find(db, tp, kd.hash, t, &found) == TLLM_OK);
    before = key_generation(file);
    CHECK(tllm_store_key_revoke(db2, "key_c") == TLLM_OK);
    CHECK(key_generation(file) == before + 1);
    CHECK(tllm_key_cache_find(db, tp, kc.hash, t + 2, &found) == TLLM_OK);
    CHECK(found->revoked == 1);
    CHECK(tllm_key_cache_find(db, tp, kd.hash, t + 2, &found) == TLLM_OK);
    CHECK(found->revoked == 0);
    revoke_elsewhere(file, "key_d");
    CHECK(key_generation(file) == before + 2);
    CHECK(tllm_key_cache_find(db, tp, kd.hash, t + 3, &found) == TLLM_OK);
    CHECK(found->revoked == 1);
    CHECK(tllm_store_key_revoke(db, "nope") == TLLM_NOTFOUND);
    CHECK(key_generation(file) == before + 2);

    apr_pool_destroy(cp2);
    apr_pool_destroy(cp);
    remove_db(file);
}

/* ---- the trace data set ----------------------------------------------- */

/*
 * now is 12:20:34.567890 on some day; H23 = 12:00, the start of the
 * current hour, bucket 23; bucket 0 starts at H0 = H23 - 23 h.
 * created_at = H23 - ago * 1 h + off (us).
 *
 * alpha, 20 traces: latency 10 * i, tokens i; statuses: a03 a07 failed,
 * a05 a10 a15 warning, the other 15 success; retries: a03 1, a05 2,
 * a10 1 (sum 4, 3 traces retried); slow: a15..a20 (6); models: a01..a10
 * "m-a", a11..a20 "M-b" (10 each: "M-b" sorts first in byte order);
 * environments: a01..a15 prod, a16..a20 dev.
 * a02 and a03 share created_at (a03, stored later, lists first); a17 is
 * exactly at H0 (bucket 0); a18 one microsecond before H0 and a20 in the
 * next hour are outside the charts but count everywhere else.
 * beta, 1 trace: b01, prod, "zz", success, latency 1000, 100 tokens, slow,
 * in bucket 21.
 */
typedef struct {
    const char *id, *env, *model, *status;
    double latency;
    int64_t tokens, retries;
    int slow;
    int64_t ago, off;
} row;

static const row alpha_rows[20] = {
    { "a01", "prod", "m-a", "success", 10, 1, 0, 0, 0, 1000 },
    { "a02", "prod", "m-a", "success", 20, 2, 0, 0, 1, 5000 },
    { "a03", "prod", "m-a", "failed", 30, 3, 1, 0, 1, 5000 },
    { "a04", "prod", "m-a", "success", 40, 4, 0, 0, 2, 0 },
    { "a05", "prod", "m-a", "warning", 50, 5, 2, 0, 3, 0 },
    { "a06", "prod", "m-a", "success", 60, 6, 0, 0, 4, 0 },
    { "a07", "prod", "m-a", "failed", 70, 7, 0, 0, 5, 0 },
    { "a08", "prod", "m-a", "success", 80, 8, 0, 0, 6, 0 },
    { "a09", "prod", "m-a", "success", 90, 9, 0, 0, 7, 0 },
    { "a10", "prod", "m-a", "warning", 100, 10, 1, 0, 8, 0 },
    { "a11", "prod", "M-b", "success", 110, 11, 0, 0, 9, 0 },
    { "a12", "prod", "M-b", "success", 120, 12, 0, 0, 10, 0 },
    { "a13", "prod", "M-b", "success", 130, 13, 0, 0, 11, 0 },
    { "a14", "prod", "M-b", "success", 140, 14, 0, 0, 12, 0 },
    { "a15", "prod", "M-b", "warning", 150, 15, 0, 1, 13, 0 },
    { "a16", "dev", "M-b", "success", 160, 16, 0, 1, 14, 0 },
    { "a17", "dev", "M-b", "success", 170, 17, 0, 1, 23, 0 },
    { "a18", "dev", "M-b", "success", 180, 18, 0, 1, 24, H - 1 },
    { "a19", "dev", "M-b", "success", 190, 19, 0, 1, 0, 2 * S },
    { "a20", "dev", "M-b", "success", 200, 20, 0, 1, -1, 0 }
};

/* a05's first version, replaced later: in every aggregate it must be
 * gone (its model "old" must vanish from the breakdown). */
static const row a05_old =
    { "a05", "dev", "old", "failed", 9999, 999, 5, 1, 3, 0 };

static const row b01 =
    { "b01", "prod", "zz", "success", 1000, 100, 0, 1, 2, 7 };

static int64_t now_us, h23;

static tllm_trace *mktrace(const row *r, const char *project, int version)
{
    tllm_trace *t = apr_pcalloc(tp, sizeof(*t));

    t->trace_id = r->id;
    t->project_id = project;
    t->environment = r->env;
    t->model_name = r->model;
    t->status = r->status;
    t->latency = r->latency;
    t->token_count = r->tokens;
    t->retry_count = r->retries;
    t->slow_request = r->slow;
    t->created_at = h23 - r->ago * H + r->off;
    t->updated_at = now_us;
    t->json = apr_psprintf(tp, "{\"trace_id\":\"%s\",\"v\":%d}", r->id,
                           version);
    t->json_len = strlen(t->json);
    return t;
}

/* The trace_ids of a list of bodies, comma separated. */
static const char *ids(apr_array_header_t *a)
{
    const char *s = "";
    int i;

    for (i = 0; i < a->nelts; i++) {
        const tllm_text *t = &APR_ARRAY_IDX(a, i, tllm_text);
        const char *id = t->s + strlen("{\"trace_id\":\"");

        s = apr_pstrcat(tp, s, i ? "," : "",
                        apr_pstrndup(tp, id, strcspn(id, "\"")), NULL);
    }
    return s;
}

static const char *counts(apr_array_header_t *a)
{
    const char *s = "";
    int i;

    for (i = 0; i < a->nelts; i++) {
        const tllm_count *c = &APR_ARRAY_IDX(a, i, tllm_count);

        s = apr_psprintf(tp, "%s%s%s=%" APR_INT64_T_FMT, s, i ? "," : "",
                         c->key, c->count);
    }
    return s;
}

static int near(double a, double b)
{
    return a - b < 1e-9 && b - a < 1e-9;
}

static void test_put(tllm_db *db, sqlite3 *sq)
{
    tllm_trace *batch[20], *two[2];
    tllm_text body;
    int results[20], i;
    int64_t last;

    for (i = 0; i < 20; i++) {
        batch[i] = mktrace(i == 4 ? &a05_old : &alpha_rows[i], "alpha", 1);
        results[i] = -5;
    }
    CHECK(tllm_store_traces_put(db, batch, 20, results, &last) == TLLM_OK);
    CHECK(last == 20);
    CHECK(results[0] == TLLM_OK && results[19] == TLLM_OK);

    two[0] = mktrace(&b01, "beta", 1);
    CHECK(tllm_store_traces_put(db, two, 1, results, &last) == TLLM_OK);
    CHECK(last == 21);

    /* a05 replaced in its project (new seq); a01 sent from beta is
     * refused and leaves alpha's a01 alone. */
    two[0] = mktrace(&alpha_rows[4], "alpha", 2);
    two[1] = mktrace(&alpha_rows[0], "beta", 2);
    CHECK(tllm_store_traces_put(db, two, 2, results, &last) == TLLM_OK);
    CHECK(results[0] == TLLM_OK);
    CHECK(results[1] == TLLM_CONFLICT);
    CHECK(last == 22);
    CHECK_STR(raw(sq, "SELECT seq FROM traces WHERE trace_id = 'a05'"),
              "22");
    CHECK_STR(raw(sq, "SELECT count(*) FROM traces"), "21");
    CHECK(tllm_store_trace_get(db, tp, "a05", &body) == TLLM_OK);
    CHECK_STR(body.s, "{\"trace_id\":\"a05\",\"v\":2}");
    CHECK(body.len == strlen(body.s));
    CHECK(tllm_store_trace_get(db, tp, "a01", &body) == TLLM_OK);
    CHECK_STR(body.s, "{\"trace_id\":\"a01\",\"v\":1}");
    CHECK(tllm_store_trace_get(db, tp, "nope", &body) == TLLM_NOTFOUND);

    /* A database failure stores nothing of the batch: the second trace
     * breaks a NOT NULL constraint, the first must roll back. */
    two[0] = mktrace(&alpha_rows[0], "alpha", 3);
    two[0]->trace_id = "new1";
    two[1] = mktrace(&alpha_rows[1], NULL, 3);
    two[1]->trace_id = "new2";
    CHECK(tllm_store_traces_put(db, two, 2, results, &last) == TLLM_ERROR);
    CHECK(last == 0);
    CHECK(strstr(tllm_db_errmsg(db), "NOT NULL") != NULL);
    CHECK(tllm_store_trace_get(db, tp, "new1", &body) == TLLM_NOTFOUND);
    CHECK_STR(raw(sq, "SELECT count(*) FROM traces"), "21");
    CHECK(sqlite3_get_autocommit(sq));
    /* A trace write's larger page cache is given back however it ends
     * (after the commits above too); kept, it would grow with reads. */
    CHECK_STR(raw(sq, "PRAGMA cache_size"), "-2000");

    CHECK(tllm_store_traces_put(db, two, 0, results, &last) == TLLM_OK);
    CHECK(last == 0);
    CHECK_STR(rollups_off(sq), "0");
    CHECK_STR(raw(sq, "SELECT seq FROM rollup_mark"), "22");
}

/* ---- listing ---------------------------------------------------------- */

static const char *list(tllm_db *db, const tllm_trace_filter *f, int limit,
                        int64_t *total)
{
    apr_array_header_t *items = NULL;

    *total = -1;
    if (tllm_store_traces_list(db, tp, f, limit, total, &items) != TLLM_OK) {
        return "(error)";
    }
    return ids(items);
}

/* Whether a statement prepared on sq reads through index with filter
 * term among its terms. */
static int reads_through(sqlite3 *sq, const char *index, const char *term)
{
    const char *by = apr_pstrcat(tp, "INDEXED BY ", index, " ", NULL);
    sqlite3_stmt *st;

    for (st = sqlite3_next_stmt(sq, NULL); st; st = sqlite3_next_stmt(sq, st)) {
        const char *sql = sqlite3_sql(st);

        if (sql && strstr(sql, by) && strstr(sql, term)) {
            return 1;
        }
    }
    return 0;
}

/* How many times the statements on sq that start with head and have
 * every other text given (up to a NULL) have run. */
static int64_t runs(sqlite3 *sq, const char *head, ...)
{
    sqlite3_stmt *st;
    int64_t n = 0;

    for (st = sqlite3_next_stmt(sq, NULL); st; st = sqlite3_next_stmt(sq, st)) {
        const char *sql = sqlite3_sql(st), *part;
        int all = sql && strncmp(sql, head, strlen(head)) == 0;
        va_list ap;

        va_start(ap, head);
        while (all && (part = va_arg(ap, const char *)) != NULL) {
            all = strstr(sql, part) != NULL;
        }
        va_end(ap);
        if (all) {
            n += sqlite3_stmt_status(st, SQLITE_STMTSTATUS_RUN, 0);
        }
    }
    return n;
}

/* Which index a page reads: a project and more walk the project's own
 * entries (schema version 6); environment, model or status alone merge
 * the kinds of traces_kind (version 7), never walking traces_created;
 * a bound without a project walks traces_created; a filter nothing
 * matches reads no page at all. */
static void test_list_index(tllm_db *db, sqlite3 *sq)
{
    tllm_trace_filter f;
    int64_t total, kind_runs, page_runs;

    memset(&f, 0, sizeof(f));
    f.project_id = "alpha";
    f.model_name = "M-b";
    CHECK_STR(list(db, &f, 2, &total), "a20,a19");
    CHECK(reads_through(sq, "traces_project", "model_name = :model"));

    f.project_id = NULL;
    kind_runs = runs(sq, "SELECT", "traces_kind", "model_name = :model", NULL);
    CHECK_STR(list(db, &f, 2, &total), "a20,a19");
    /* M-b has three kinds: (prod, success), (prod, warning), (dev,
     * success); each is read once. */
    CHECK(runs(sq, "SELECT", "traces_kind", "model_name = :model", NULL)
          == kind_runs + 3);
    f.model_name = NULL;
    f.status = "failed";
    CHECK_STR(list(db, &f, 50, &total), "a03,a07");
    f.status = NULL;
    f.environment = "prod";
    CHECK_STR(list(db, &f, 50, &total), "a01,a03,a02,b01,a04,a05,a06,a07,"
              "a08,a09,a10,a11,a12,a13,a14,a15");
    CHECK(total == 16);
    f.environment = NULL;
    CHECK(!reads_through(sq, "traces_created", "model_name = :model"));
    CHECK(!reads_through(sq, "traces_created", "status = :status"));
    CHECK(!reads_through(sq, "traces_created", "environment = :env"));

    f.has_latency_min = 1;
    f.latency_min = 0;
    CHECK_STR(list(db, &f, 2, &total), "a20,a19");
    CHECK(reads_through(sq, "traces_created", "latency >= :lat_min"));

    /* Nothing matches: no page is read, through any index. */
    page_runs = runs(sq, "SELECT body", "latency >= :lat_min", NULL);
    f.latency_min = 1e9;
    CHECK_STR(list(db, &f, 50, &total), "");
    CHECK(total == 0);
    CHECK(runs(sq, "SELECT body", "latency >= :lat_min", NULL) == page_runs);
    f.has_latency_min = 0;
    kind_runs = runs(sq, "SELECT", "traces_kind", "model_name = :model", NULL);
    f.model_name = "m-only-here";
    CHECK_STR(list(db, &f, 5, &total), "");
    CHECK(total == 0);
    CHECK(runs(sq, "SELECT", "traces_kind", "model_name = :model", NULL)
          == kind_runs);
}

/* A token bound with a model filter: over a wide range of
 * traces_tokens, the count and the page test every entry of
 * traces_created instead of reading a row for each entry in the range;
 * over a narrow one they keep traces_tokens (TOKENS_ROW_FACTOR 64).
 * 1,000 traces, token_count = i, model "rare" for i = 1 modulo 100,
 * else "odd" for odd i. */
static void test_list_tokens_wide(const char *file)
{
    enum { N = 1000 };
    const char *by_tokens = "SELECT count(*) FROM traces INDEXED BY"
                            " traces_tokens WHERE";
    const char *by_created = "SELECT count(*) FROM traces INDEXED BY"
                             " traces_created WHERE";
    const char *range = "SELECT body FROM traces WHERE seq IN";
    apr_pool_t *cp;
    sqlite3 *sq;
    tllm_db *db = open_db(file, &cp, &sq);
    tllm_trace **batch = apr_pcalloc(tp, N * sizeof(*batch));
    int *results = apr_pcalloc(tp, N * sizeof(*results));
    tllm_trace_filter f;
    int64_t total, last, tokens_runs, created_runs, range_runs;
    int i;

    CHECK(tllm_store_migrate(db) == TLLM_OK);
    for (i = 0; i < N; i++) {
        row r = { NULL, "e", NULL, "success", 1, 0, 0, 0, 0, 0 };

        r.id = apr_psprintf(tp, "t%04d", i);
        r.model = i % 100 == 1 ? "rare" : i % 2 ? "odd" : "even";
        r.tokens = i;
        r.off = i;
        batch[i] = mktrace(&r, "p", 1);
    }
    CHECK(tllm_store_traces_put(db, batch, N, results, &last) == TLLM_OK);
    memset(&f, 0, sizeof(f));
    f.model_name = "odd";
    f.has_token_max = 1;

    /* 501 of 1,000 entries in range: wide. */
    f.token_max = 500;
    tokens_runs = runs(sq, by_tokens, "model_name = :model", NULL);
    created_runs = runs(sq, by_created, "model_name = :model", NULL);
    range_runs = runs(sq, range, "token_count", NULL);
    CHECK_STR(list(db, &f, 3, &total), "t0499,t0497,t0495");
    CHECK(total == 245);
    CHECK(runs(sq, by_tokens, "model_name = :model", NULL) == tokens_runs);
    CHECK(runs(sq, by_created, "model_name = :model", NULL)
          == created_runs + 1);
    CHECK(runs(sq, range, "token_count", NULL) == range_runs);
    CHECK(reads_through(sq, "traces_created", "token_count <= :tok_max"));
    /* Five matches would take the bound's index for the page
     * (WALK_FACTOR), but it is as wide: the walk. */
    f.model_name = "rare";
    CHECK_STR(list(db, &f, 3, &total), "t0401,t0301,t0201");
    CHECK(total == 5);
    CHECK(runs(sq, range, "token_count", NULL) == range_runs);
    f.model_name = "odd";

    /* 11 entries in range: narrow, through traces_tokens. */
    f.token_max = 10;
    CHECK_STR(list(db, &f, 3, &total), "t0009,t0007,t0005");
    CHECK(total == 4);
    CHECK(runs(sq, by_tokens, "model_name = :model", NULL)
          == tokens_runs + 1);
    CHECK(runs(sq, range, "token_count", NULL) == range_runs + 1);

    apr_pool_destroy(cp);
    remove_db(file);
}

/* The JSON of a trace whose prompt repeats a phrase n times: long enough
 * to store packed. */
static const char *long_json(const char *id, int n)
{
    const char *s = apr_psprintf(tp, "{\"trace_id\":\"%s\",\"prompt\":\"",
                                 id);
    int i;

    for (i = 0; i < n; i++) {
        s = apr_psprintf(tp, "%ssummarize the %d report for the customer ",
                         s, i % 7);
    }
    return apr_pstrcat(tp, s, "\"}", NULL);
}

/* The bodies of a listing, one after another. */
static const char *joined(apr_array_header_t *a)
{
    const char *s = "";
    int i;

    for (i = 0; i < a->nelts; i++) {
        const tllm_text *t = &APR_ARRAY_IDX(a, i, tllm_text);

        CHECK(t->len == strlen(t->s));
        s = apr_pstrcat(tp, s, i ? "\n" : "", t->s, NULL);
    }
    return s;
}

/* A body long enough to compress is stored packed, a BLOB smaller than
 * its JSON, and every reader gives the JSON back exactly: one trace, a
 * listing (walked and merged by kind) and the event log. A short body
 * stays TEXT, as the rows stored before schema 8 are, and so does a
 * flagged (failed, slow or retried) trace's, which /failures reads. A packed body that does not
 * unpack is an error, never bytes served as JSON (schema version 8,
 * trace_body.h). */
static void test_bodies(const char *file)
{
    enum { N = 6 };
    apr_pool_t *cp;
    sqlite3 *sq;
    tllm_db *db = open_db(file, &cp, &sq);
    static const row rows[N] = {
        { "long1", "prod", "m", "success", 10, 1, 0, 0, 1, 0 },
        { "long2", "prod", "m", "success", 20, 2, 0, 0, 1, 5 },
        { "short", "prod", "m", "success", 30, 3, 0, 0, 1, 9 },
        { "failed", "prod", "m", "failed", 40, 4, 0, 0, 1, 12 },
        { "slow", "prod", "m", "success", 50, 5, 0, 1, 1, 15 },
        { "retried", "prod", "m", "success", 60, 6, 1, 0, 1, 18 }
    };
    tllm_trace *batch[N];
    int results[N], i;
    int64_t last, total;
    apr_array_header_t *items, *events;
    const char *newest_first;
    tllm_trace_filter f;
    tllm_failures fl;
    tllm_text one;
    unsigned char noise[600], packed[1024];
    unsigned x = 12345;

    CHECK(tllm_store_migrate(db) == TLLM_OK);
    for (i = 0; i < N; i++) {
        batch[i] = mktrace(&rows[i], "p", 1);
        if (i != 2) {
            batch[i]->json = long_json(rows[i].id, 40 + 10 * i);
            batch[i]->json_len = strlen(batch[i]->json);
        }
    }
    CHECK(tllm_store_traces_put(db, batch, N, results, &last) == TLLM_OK);
    CHECK_STR(raw(sq, "SELECT group_concat(typeof(body)) FROM"
                      " (SELECT body FROM traces ORDER BY seq)"),
              "blob,blob,text,text,text,text");
    CHECK(atoi(raw(sq, "SELECT length(body) FROM traces"
                       " WHERE trace_id = 'long2'"))
          < (int)batch[1]->json_len / 3);

    CHECK(tllm_store_trace_get(db, tp, "long1", &one) == TLLM_OK);
    CHECK_STR(one.s, batch[0]->json);
    CHECK(one.len == batch[0]->json_len);
    CHECK(tllm_store_trace_get(db, tp, "short", &one) == TLLM_OK);
    CHECK_STR(one.s, batch[2]->json);
    newest_first = batch[N - 1]->json;
    for (i = N - 2; i >= 0; i--) {
        newest_first = apr_pstrcat(tp, newest_first, "\n", batch[i]->json,
                                   NULL);
    }
    memset(&f, 0, sizeof(f));
    CHECK(tllm_store_traces_list(db, tp, &f, 10, &total, &items)
          == TLLM_OK);
    CHECK_STR(joined(items), newest_first);
    f.model_name = "m";             /* merged by kind */
    CHECK(tllm_store_traces_list(db, tp, &f, 10, &total, &items)
          == TLLM_OK);
    CHECK(reads_through(sq, "traces_kind", "model_name = :model"));
    CHECK_STR(joined(items), newest_first);
    CHECK(tllm_store_failures(db, tp, "p", NULL, 10, &fl) == TLLM_OK);
    CHECK_STR(joined(fl.failed), batch[3]->json);
    CHECK(tllm_store_events_after(db, tp, 0, NULL, NULL, 10, &events)
          == TLLM_OK);
    CHECK(events->nelts == N);
    for (i = 0; i < events->nelts && i < N; i++) {
        CHECK_STR(APR_ARRAY_IDX(events, i, tllm_event).trace.s,
                  batch[i]->json);
    }

    /* Incompressible bytes are left as they are. */
    for (i = 0; i < (int)sizeof(noise); i++) {
        x = x * 1103515245u + 12345u;
        noise[i] = (unsigned char)(x >> 16);
    }
    CHECK(tllm_body_pack_bound(sizeof(noise)) <= sizeof(packed));
    CHECK(tllm_body_pack((const char *)noise, sizeof(noise), packed) == 0);

    /* Cut short, and a header that claims more than its block can hold. */
    raw(sq, "UPDATE traces SET body = substr(body, 1, length(body) - 3)"
            " WHERE trace_id = 'long2'");
    CHECK(tllm_store_trace_get(db, tp, "long2", &one) == TLLM_ERROR);
    CHECK(strstr(tllm_db_errmsg(db), "does not unpack") != NULL);
    memset(&f, 0, sizeof(f));
    CHECK_STR(list(db, &f, 10, &total), "(error)");
    f.model_name = "m";
    CHECK_STR(list(db, &f, 10, &total), "(error)");
    CHECK(tllm_store_events_after(db, tp, 0, NULL, NULL, 10, &events)
          == TLLM_ERROR);
    raw(sq, "UPDATE traces SET body = x'ffffff7f00112233'"
            " WHERE trace_id = 'failed'");
    CHECK(tllm_store_trace_get(db, tp, "failed", &one) == TLLM_ERROR);
    CHECK(tllm_store_failures(db, tp, "p", NULL, 10, &fl) == TLLM_ERROR);
    CHECK(sqlite3_get_autocommit(sq));

    apr_pool_destroy(cp);
    remove_db(file);
}

/* Past KIND_MAX_ENTRIES (10,000) index entries to merge, a page of
 * kinds walks traces_created instead, with the same answer: 10,001
 * models of one trace each, in their own database. */
static void test_list_many_kinds(const char *file)
{
    enum { KINDS = 10001 };
    apr_pool_t *cp;
    sqlite3 *sq;
    tllm_db *db = open_db(file, &cp, &sq);
    tllm_trace **batch = apr_pcalloc(tp, KINDS * sizeof(*batch));
    int *results = apr_pcalloc(tp, KINDS * sizeof(*results));
    tllm_trace_filter f;
    int64_t total, last;
    int i;

    CHECK(tllm_store_migrate(db) == TLLM_OK);
    for (i = 0; i < KINDS; i++) {
        row r = { NULL, "wide", NULL, "success", 1, 1, 0, 0, 0, 0 };

        r.id = apr_psprintf(tp, "k%05d", i);
        r.model = apr_psprintf(tp, "model-%05d", i);
        r.off = (i % 2 ? -1 : 1) * (int64_t)i;    /* out of stored order */
        batch[i] = mktrace(&r, "many", 1);
    }
    CHECK(tllm_store_traces_put(db, batch, KINDS, results, &last)
          == TLLM_OK);
    memset(&f, 0, sizeof(f));
    f.environment = "wide";
    CHECK_STR(list(db, &f, 3, &total), "k10000,k09998,k09996");
    CHECK(total == KINDS);
    CHECK(reads_through(sq, "traces_created", "environment = :env"));
    CHECK(!reads_through(sq, "traces_kind", "environment = :env"));
    /* One kind: merged. */
    f.model_name = "model-00003";
    CHECK_STR(list(db, &f, 3, &total), "k00003");
    CHECK(total == 1);
    CHECK(reads_through(sq, "traces_kind", "environment = :env"));
    apr_pool_destroy(cp);
    remove_db(file);
}

static void test_list(tllm_db *db, sqlite3 *sq)
{
    tllm_trace_filter f;
    int64_t total;
    int before;

    memset(&f, 0, sizeof(f));
    CHECK_STR(list(db, &f, 5, &total), "a20,a19,a01,a03,a02");
    CHECK(total == 21);
    CHECK_STR(list(db, &f, 200, &total),
              "a20,a19,a01,a03,a02,b01,a04,a05,a06,a07,a08,a09,a10,a11,"
              "a12,a13,a14,a15,a16,a17,a18");
    CHECK_STR(list(db, &f, 0, &total), "");
    CHECK(total == 21);

    /* A second call of the same shape prepares nothing new. */
    before = count_stmts(sq);
    list(db, &f, 3, &total);
    CHECK(count_stmts(sq) == before);

    f.status = "";
    CHECK_STR(list(db, &f, 2, &total), "a20,a19");
    CHECK(total == 21);

    f.status = "failed";
    CHECK_STR(list(db, &f, 50, &total), "a03,a07");
    CHECK(total == 2);
    f.status = NULL;

    f.model_name = "M-b";
    CHECK_STR(list(db, &f, 3, &total), "a20,a19,a11");
    CHECK(total == 10);
    f.model_name = "m-b";
    CHECK_STR(list(db, &f, 3, &total), "");
    CHECK(total == 0);
    f.model_name = NULL;

    f.project_id = "beta";
    CHECK_STR(list(db, &f, 50, &total), "b01");
    CHECK(total == 1);
    f.project_id = NULL;

    f.environment = "dev";
    CHECK_STR(list(db, &f, 50, &total), "a20,a19,a16,a17,a18");
    CHECK(total == 5);
    f.environment = NULL;

    f.has_latency_min = f.has_latency_max = 1;
    f.latency_min = 30;
    f.latency_max = 50;
    CHECK_STR(list(db, &f, 50, &total), "a03,a04,a05");
    CHECK(total == 3);
    /* Tie on created_at through a plan that sorts: later stored first. */
    f.latency_min = 20;
    f.latency_max = 30;
    CHECK_STR(list(db, &f, 50, &total), "a03,a02");
    f.has_latency_max = 0;
    f.latency_min = 1000;
    CHECK_STR(list(db, &f, 50, &total), "b01");
    CHECK(total == 1);
    f.has_latency_min = 0;
    f.has_latency_max = 1;
    f.latency_max = 10;
    CHECK_STR(list(db, &f, 50, &total), "a01");
    CHECK(total == 1);
    f.has_latency_max = 0;

    f.has_token_min = f.has_token_max = 1;
    f.token_min = 19;
    f.token_max = 100;
    CHECK_STR(list(db, &f, 50, &total), "a20,a19,b01");
    CHECK(total == 3);
    f.has_token_min = 0;
    f.token_max = 2;
    CHECK_STR(list(db, &f, 50, &total), "a01,a02");
    CHECK(total == 2);
    f.has_token_max = 0;

    /* Several at once: rollup-countable filters only ... */
    f.status = "success";
    f.model_name = "m-a";
    f.project_id = "alpha";
    f.environment = "prod";
    CHECK_STR(list(db, &f, 2, &total), "a01,a02");
    CHECK(total == 6);
    /* ... and with a bound, counted on the rows. */
    f.has_latency_max = 1;
    f.latency_max = 60;
    CHECK_STR(list(db, &f, 50, &total), "a01,a02,a04,a06");
    CHECK(total == 4);
    f.has_token_min = 1;
    f.token_min = 3;
    CHECK_STR(list(db, &f, 1, &total), "a04");
    CHECK(total == 2);
}

/* ---- analytics and failures ------------------------------------------- */

static void test_analytics(tllm_db *db)
{
    tllm_analytics a;
    const char *ids_recent;
    int i;

    /* Everything: 21 traces. Latencies 10..200 and 1000: the p95 index
     * is ceil(0.95 * 21) - 1 = 19, the 20th smallest, 200. */
    CHECK(tllm_store_analytics(db, tp, NULL, NULL, now_us, &a) == TLLM_OK);
    CHECK(a.total_traces == 21);
    CHECK(a.success_traces == 16);
    CHECK(a.failed_traces == 2);
    CHECK(a.warning_traces == 3);
    CHECK(a.retries == 4);
    CHECK(a.slow_requests == 7);
    CHECK(a.total_tokens == 310);
    CHECK(near(a.average_latency, 3100.0 / 21));
    CHECK(near(a.p95_latency, 200));
    CHECK_STR(counts(a.by_status), "success=16,warning=3,failed=2");
    CHECK_STR(counts(a.by_model), "M-b=10,m-a=10,zz=1");
    CHECK_STR(counts(a.by_project), "alpha=20,beta=1");
    ids_recent = ids(a.recent_failures);
    CHECK_STR(ids_recent, "a20,a19,a03,b01,a05");

    /* Charts: bucket 23 a01 + a19, 22 a02 + a03, 21 a04 + b01, 20 a05,
     * 19..9 a06..a16, 8..1 empty, 0 a17 (at H0 exactly). a18 (before
     * H0) and a20 (next hour) are outside. */
    CHECK(a.hour_start[23] == h23);
    CHECK(a.hour_start[0] == h23 - 23 * H);
    CHECK(a.hour_start[5] == h23 - 18 * H);
    CHECK(a.hour_traces[23] == 2);
    CHECK(a.hour_tokens[23] == 20);
    CHECK(near(a.hour_latency[23], 100));
    CHECK(a.hour_traces[22] == 2);
    CHECK(a.hour_tokens[22] == 5);
    CHECK(near(a.hour_latency[22], 25));
    CHECK(a.hour_traces[21] == 2);
    CHECK(a.hour_tokens[21] == 104);
    CHECK(near(a.hour_latency[21], 520));
    CHECK(a.hour_traces[20] == 1);
    CHECK(a.hour_tokens[20] == 5);
    CHECK(near(a.hour_latency[20], 50));
    for (i = 9; i <= 19; i++) {
        CHECK(a.hour_traces[i] == 1);
        CHECK(a.hour_tokens[i] == 6 + (19 - i));
        CHECK(near(a.hour_latency[i], 10.0 * (6 + (19 - i))));
    }
    for (i = 1; i <= 8; i++) {
        CHECK(a.hour_traces[i] == 0);
        CHECK(a.hour_tokens[i] == 0);
        CHECK(a.hour_latency[i] == 0);
    }
    CHECK(a.hour_traces[0] == 1);
    CHECK(a.hour_tokens[0] == 17);
    CHECK(near(a.hour_latency[0], 170));

    /* alpha: 20 traces, latencies 10..200: index ceil(19) - 1 = 18,
     * 190 (the descending read). */
    CHECK(tllm_store_analytics(db, tp, "alpha", NULL, now_us, &a)
          == TLLM_OK);
    CHECK(a.total_traces == 20);
    CHECK(a.success_traces == 15);
    CHECK(a.retries == 4);
    CHECK(a.slow_requests == 6);
    CHECK(a.total_tokens == 210);
    CHECK(near(a.average_latency, 105));
    CHECK(near(a.p95_latency, 190));
    CHECK_STR(counts(a.by_model), "M-b=10,m-a=10");
    CHECK_STR(counts(a.by_project), "alpha=20");
    CHECK(a.hour_traces[21] == 1);

    /* beta: one trace, rank 0 (the ascending read). */
    CHECK(tllm_store_analytics(db, tp, "beta", "", now_us, &a) == TLLM_OK);
    CHECK(a.total_traces == 1);
    CHECK(near(a.p95_latency, 1000));
    CHECK(near(a.average_latency, 1000));
    CHECK_STR(ids(a.recent_failures), "b01");

    /* prod: 16 traces, 10..150 and 1000: index ceil(15.2) - 1 = 15. */
    CHECK(tllm_store_analytics(db, tp, NULL, "prod", now_us, &a)
          == TLLM_OK);
    CHECK(a.total_traces == 16);
    CHECK(near(a.p95_latency, 1000));
    CHECK_STR(counts(a.by_status), "success=11,warning=3,failed=2");
    CHECK_STR(counts(a.by_project), "alpha=15,beta=1");

    /* alpha dev: 160..200, index ceil(4.75) - 1 = 4. */
    CHECK(tllm_store_analytics(db, tp, "alpha", "dev", now_us, &a)
          == TLLM_OK);
    CHECK(a.total_traces == 5);
    CHECK(near(a.p95_latency, 200));
    CHECK(near(a.average_latency, 180));
    CHECK_STR(counts(a.by_status), "success=5");
    CHECK_STR(ids(a.recent_failures), "a20,a19,a16,a17,a18");

    /* Nothing matches: zeros, empty lists, the hours still placed. */
    CHECK(tllm_store_analytics(db, tp, "nope", NULL, now_us, &a)
          == TLLM_OK);
    CHECK(a.total_traces == 0);
    CHECK(a.average_latency == 0);
    CHECK(a.p95_latency == 0);
    CHECK(a.by_status->nelts == 0);
    CHECK(a.by_model->nelts == 0);
    CHECK(a.recent_failures->nelts == 0);
    CHECK(a.hour_start[23] == h23);
    CHECK(a.hour_traces[23] == 0);
}

static void test_failures(tllm_db *db)
{
    tllm_failures f;

    CHECK(tllm_store_failures(db, tp, NULL, NULL, 2, &f) == TLLM_OK);
    CHECK_STR(ids(f.failed), "a03,a07");
    CHECK_STR(ids(f.retried), "a03,a05");
    CHECK_STR(ids(f.slow), "a20,a19");
    CHECK(f.failed_total == 2);
    CHECK(f.retried_total == 3);
    CHECK(f.slow_total == 7);

    CHECK(tllm_store_failures(db, tp, "alpha", NULL, 10, &f) == TLLM_OK);
    CHECK_STR(ids(f.retried), "a03,a05,a10");
    CHECK_STR(ids(f.slow), "a20,a19,a15,a16,a17,a18");
    CHECK(f.slow_total == 6);

    CHECK(tllm_store_failures(db, tp, "beta", "prod", 10, &f) == TLLM_OK);
    CHECK_STR(ids(f.failed), "");
    CHECK_STR(ids(f.slow), "b01");
    CHECK(f.failed_total == 0);
    CHECK(f.retried_total == 0);
    CHECK(f.slow_total == 1);

    CHECK(tllm_store_failures(db, tp, NULL, "dev", 1, &f) == TLLM_OK);
    CHECK_STR(ids(f.slow), "a20");
    CHECK(f.slow_total == 5);
    CHECK(f.failed_total == 0);
}

/* The same trace_id twice in one batch: both accepted, the later wins;
 * also a status breakdown tie (byte order). */
static void test_same_batch(tllm_db *db, sqlite3 *sq)
{
    row g1 = { "g1", "dev", "m", "success", 1, 1, 0, 0, 0, 0 };
    row g1b = { "g1", "dev", "m", "failed", 2, 2, 0, 0, 0, 1 };
    row g2 = { "g2", "dev", "m", "warning", 3, 3, 0, 0, 0, 2 };
    tllm_trace *batch[3];
    tllm_analytics a;
    tllm_text body;
    int results[3];
    int64_t last;

    batch[0] = mktrace(&g1, "gamma", 1);
    batch[1] = mktrace(&g1b, "gamma", 2);
    batch[2] = mktrace(&g2, "gamma", 1);
    CHECK(tllm_store_traces_put(db, batch, 3, results, &last) == TLLM_OK);
    CHECK(results[0] == TLLM_OK && results[1] == TLLM_OK
          && results[2] == TLLM_OK);
    CHECK(last == 25);
    CHECK_STR(raw(sq, "PRAGMA cache_size"), "-2000");
    CHECK(tllm_store_trace_get(db, tp, "g1", &body) == TLLM_OK);
    CHECK_STR(body.s, "{\"trace_id\":\"g1\",\"v\":2}");
    CHECK(tllm_store_analytics(db, tp, "gamma", NULL, now_us, &a)
          == TLLM_OK);
    CHECK(a.total_traces == 2);
    CHECK(a.total_tokens == 5);
    CHECK_STR(counts(a.by_status), "failed=1,warning=1");
    CHECK(a.hour_traces[23] == 2);
    CHECK(near(a.hour_latency[23], 2.5));
    /* g1's first version is replaced within its own transaction: its
     * delete may take out of the rollups only what its insert added. */
    CHECK_STR(rollups_off(sq), "0");
    /* A model name of any length is a key of the C-summed rollups
     * (rollup_delta.c builds keys in a growing buffer). */
    {
        char *model = apr_palloc(tp, 5001);
        row long_model = { "g3", "dev", NULL, "success", 4, 4, 0, 0, 0, 3 };

        memset(model, 'x', 5000);
        model[5000] = '\0';
        long_model.model = model;
        batch[0] = mktrace(&long_model, "gamma", 1);
        CHECK(tllm_store_traces_put(db, batch, 1, results, &last) == TLLM_OK);
        CHECK(results[0] == TLLM_OK);
        CHECK_STR(raw(sq, "SELECT sum(n) FROM rollup_total WHERE"
                          " project_id = '' AND environment = ''"
                          " AND length(model_name) = 5000"), "1");
        CHECK_STR(rollups_off(sq), "0");
    }
}


/* Every way a transaction ends gives the connection's mutex back: commit,
 * rollback, a read, and a BEGIN that fails because another connection
 * writes. Leaves sq's busy timeout short: the last test on it. */
static void test_mutex_released(tllm_db *db, sqlite3 *sq, tllm_db *db2)
{
    tllm_analytics a;

    CHECK(mutex_free(sq));
    CHECK(tllm_store_write_begin(db) == TLLM_OK);
    CHECK(!mutex_free(sq));
    /* The group commit's path: the page cache is the writer's until the
     * transaction ends (store_traces.c, begin_traces). */
    CHECK_STR(raw(sq, "PRAGMA cache_size"), "-32768");
    CHECK(tllm_store_write_commit(db) == TLLM_OK);
    CHECK(mutex_free(sq));
    CHECK_STR(raw(sq, "PRAGMA cache_size"), "-2000");
    CHECK(tllm_store_write_begin(db) == TLLM_OK);
    tllm_store_write_rollback(db);
    CHECK(mutex_free(sq));
    CHECK_STR(raw(sq, "PRAGMA cache_size"), "-2000");
    CHECK(tllm_store_analytics(db, tp, NULL, NULL, now_us, &a) == TLLM_OK);
    CHECK(mutex_free(sq));

    CHECK(tllm_store_write_begin(db2) == TLLM_OK);
    sqlite3_busy_timeout(sq, 10);
    CHECK(tllm_store_write_begin(db) == TLLM_ERROR);
    CHECK(mutex_free(sq));
    tllm_store_write_rollback(db2);
}

/* A version 1 database with traces migrates to the current version:
 * every row gets its latency bucket (version 2), the histogram counts
 * every row in all four scopes, and the p95 read through it is the
 * nearest rank of the rows; then version 4's rollups (below). */
static void test_migrate_from_v1(const char *file)
{
    static const double lat[] = { 0, 0.001, 512, 1024, 2048, 2048.5,
                                  2048.5, 3000, 1e6, 7.25, 100, 100 };
    const int n = (int)(sizeof(lat) / sizeof(lat[0]));
    apr_pool_t *cp;
    sqlite3 *sq;
    tllm_db *db = open_db(file, &cp, &sq);
    tllm_analytics a;
    int i;

    CHECK(tllm__migrate_to(db, 1) == TLLM_OK);
    CHECK_STR(raw(sq, "PRAGMA user_version"), "1");
    for (i = 0; i < n; i++) {
        char *sql = apr_psprintf(tp, "INSERT INTO traces (trace_id,"
                                 " project_id, environment, model_name,"
                                 " status, latency, token_count, retry_count,"
                                 " slow, created_at, body) VALUES ('m%d',"
                                 " '%s', '%s', 'gpt', 'success', %.17g, 1, 0,"
                                 " 0, %d, '{}')", i, i % 2 ? "p1" : "p2",
                                 i % 3 ? "prod" : "dev", lat[i], i);
        CHECK(sqlite3_exec(sq, sql, NULL, NULL, NULL) == SQLITE_OK);
    }
    CHECK(tllm_store_migrate(db) == TLLM_OK);
    CHECK_STR(raw(sq, "PRAGMA user_version"), VERSION_TEXT);
    for (i = 0; i < n; i++) {
        const char *got = raw(sq, apr_psprintf(tp, "SELECT lat_bucket FROM"
                                               " traces WHERE trace_id ="
                                               " 'm%d'", i));
        CHECK_STR(got, apr_psprintf(tp, "%" APR_INT64_T_FMT,
                                    (apr_int64_t)tllm__latency_bucket(
                                        lat[i])));
    }
    CHECK_STR(raw(sq, "SELECT sum(n) FROM rollup_latency"
                      " WHERE project_id = '' AND environment = ''"), "12");
    CHECK_STR(raw(sq, "SELECT sum(n) FROM rollup_latency"
                      " WHERE project_id = 'p1' AND environment = ''"), "6");
    CHECK_STR(raw(sq, "SELECT sum(n) FROM rollup_latency"
                      " WHERE project_id = '' AND environment = 'dev'"), "4");
    CHECK_STR(raw(sq, "SELECT sum(n) FROM rollup_latency"
                      " WHERE project_id = 'p2' AND environment = 'prod'"),
              "4");
    /* 12 sorted: ... 2048.5 2048.5 3000 1e6; index ceil(11.4) - 1 = 11. */
    CHECK(tllm_store_analytics(db, tp, NULL, NULL, 0, &a) == TLLM_OK);
    CHECK(a.total_traces == 12);
    CHECK(a.p95_latency == 1e6);
    /* p1 holds 0.001, 1024, 2048.5, 3000, 7.25, 100: index 5 -> 3000. */
    CHECK(tllm_store_analytics(db, tp, "p1", NULL, 0, &a) == TLLM_OK);
    CHECK(a.p95_latency == 3000);

    /* Version 4: the rows inserted by triggers' time are counted, the
     * insert triggers are gone, and what the store writes from now on is
     * added per transaction: a trace that replaces an old row, and one
     * sent twice in the same batch, whose first version falls in groups
     * that exist (m11's): its delete may take out of them only what its
     * insert added. */
    CHECK_STR(rollups_off(sq), "0");
    CHECK_STR(raw(sq, "SELECT seq FROM rollup_mark"), "12");
    /* A row inserted by hand (README) is counted at the next ingest. */
    CHECK(sqlite3_exec(sq, "INSERT INTO traces (trace_id, project_id,"
                           " environment, model_name, status, latency,"
                           " token_count, retry_count, slow, created_at,"
                           " body, lat_bucket) VALUES ('hand', 'p2', 'dev',"
                           " 'gpt', 'success', 0, 1, 0, 0, 99, '{}', 0)",
                       NULL, NULL, NULL) == SQLITE_OK);
    /* Off in each of the four scopes of its rollup_total group, its hour,
     * its fine and its coarse latency bucket, and in its project's two
     * counts (all groups m0's row already has). */
    CHECK_STR(rollups_off(sq), "18");
    CHECK_STR(raw(sq, "SELECT group_concat(name) FROM (SELECT name"
                      " FROM sqlite_master WHERE type = 'trigger'"
                      " ORDER BY name)"),
              "traces_latency_delete,traces_rollup_delete");
    {
        row fresh = { "m3", "prod", "gpt", "failed", 4096, 7, 2, 0, 0, 50 };
        row twin = { "m12", "prod", "gpt", "success", 100, 1, 0, 0, 0, 0 };
        row later = { "m12", "dev", "gpt", "success", 1, 3, 0, 0, 0, 60 };
        tllm_trace *three[3];
        int results[3];
        int64_t last;

        three[0] = mktrace(&fresh, "p1", 2);
        three[1] = mktrace(&twin, "p1", 1);
        three[2] = mktrace(&later, "p1", 2);
        CHECK(tllm_store_traces_put(db, three, 3, results, &last) == TLLM_OK);
        CHECK(results[0] == TLLM_OK && results[1] == TLLM_OK
              && results[2] == TLLM_OK);
        CHECK(last == 16);
    }
    CHECK_STR(raw(sq, "SELECT count(*) FROM traces"), "14");
    CHECK_STR(rollups_off(sq), "0");
    CHECK_STR(raw(sq, "SELECT seq FROM rollup_mark"), "16");
    apr_pool_destroy(cp);
    remove_db(file);
}

int main(void)
{
    char path[] = "/tmp/test_store_XXXXXX";
    const char *file;
    apr_pool_t *cp, *cp2;
    tllm_db *db, *db2;
    sqlite3 *sq, *sq2;

    apr_initialize();
    /* The store runs over the VFS the module gives httpd's processes. */
    tllm_wal_buffer_register();
    apr_pool_create(&tp, NULL);
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        return 2;
    }
    file = apr_pstrcat(tp, path, "/store.db", NULL);

    db = open_db(file, &cp, &sq);
    CHECK(db != NULL);
    if (!db) {
        return unit_summary("test_store");
    }
    CHECK(tllm_db_attach(cp, sq) == db);
    CHECK_STR(raw(sq, "PRAGMA journal_mode"), "wal");

    CHECK(tllm_store_migrate(db) == TLLM_OK);
    CHECK(tllm_store_migrate(db) == TLLM_OK);
    CHECK_STR(raw(sq, "PRAGMA user_version"), VERSION_TEXT);
    CHECK_STR(raw(sq, "PRAGMA page_size"), "8192");
    CHECK(tllm_store_ping(db) == TLLM_OK);
    /* Each failure list's partial index is in listing order, scoped or
     * not: no body is copied through a sorter (schema version 3). */
    {
        static const char *const list[][2] = {
            { "traces_failed", "status = 'failed'" },
            { "traces_retried", "retry_count > 0" },
            { "traces_slow", "slow = 1" },
            { "traces_flagged", "NOT (status = 'success' AND slow = 0"
                                " AND retry_count <= 0)" } };
        int i, scoped;

        for (i = 0; i < 4; i++) {
            for (scoped = 0; scoped < 2; scoped++) {
                const char *got = plan(sq, apr_pstrcat(tp,
                    "SELECT body FROM traces INDEXED BY ", list[i][0],
                    " WHERE ", list[i][1],
                    scoped ? " AND project_id = 'p'" : "",
                    " ORDER BY created_at DESC, seq DESC LIMIT 5", NULL));
                CHECK(got && !strstr(got, "TEMP B-TREE"));
            }
        }
    }
    /* A listing filtered by a project and more walks the project's own
     * entries, newest first, and tests the rest inside the index: no row
     * read to test a filter, no sorter (schema version 6). */
    {
        const char *got = plan(sq, "SELECT body FROM traces INDEXED BY"
                               " traces_project WHERE project_id = 'p'"
                               " AND environment = 'e' AND model_name = 'm'"
                               " AND status = 's' AND latency >= 1"
                               " AND token_count <= 9"
                               " ORDER BY created_at DESC, seq DESC LIMIT 5");

        CHECK(got && !strstr(got, "TEMP B-TREE"));
        CHECK_STR(raw(sq, "SELECT group_concat(name) FROM"
                          " pragma_index_info('traces_project')"),
                  "project_id,created_at,seq,environment,model_name,status,"
                  "latency,token_count");
    }
    /* A kind's entries are in listing order, the rowid ordering ties, so
     * its newest are read without a sorter; traces_created no longer
     * carries project_id (schema version 7). */
    {
        const char *got = plan(sq, "SELECT created_at, seq FROM traces"
                               " INDEXED BY traces_kind WHERE environment"
                               " = 'e' AND model_name = 'm' AND status = 's'"
                               " ORDER BY created_at DESC, seq DESC LIMIT 5");

        CHECK(got && !strstr(got, "TEMP B-TREE"));
        CHECK_STR(raw(sq, "SELECT group_concat(name) FROM"
                          " pragma_index_info('traces_created')"),
                  "created_at,seq,environment,model_name,status,latency,"
                  "token_count");
    }

    /* A second connection (another process's, say) migrates to a no-op
     * and sees the same data. */
    db2 = open_db(file, &cp2, &sq2);
    CHECK(db2 != NULL && db2 != db);
    CHECK(tllm_store_migrate(db2) == TLLM_OK);

    now_us = INT64_C(1780000000) * S;
    h23 = now_us - now_us % H;
    now_us = h23 + 20 * 60 * S + 34 * S + 567890;

    test_projects(db);
    test_put(db, sq);
    test_list(db, sq);
    test_list_index(db, sq);
    test_analytics(db);
    test_failures(db);
    {
        tllm_trace_filter f;
        int64_t total;

        memset(&f, 0, sizeof(f));
        CHECK_STR(list(db2, &f, 1, &total), "a20");
        CHECK(total == 21);
    }
    test_same_batch(db, sq);
    test_mutex_released(db, sq, db2);
    test_migrate_from_v1(apr_pstrcat(tp, path, "/v1.db", NULL));
    test_list_many_kinds(apr_pstrcat(tp, path, "/kinds.db", NULL));
    test_list_tokens_wide(apr_pstrcat(tp, path, "/tokens.db", NULL));
    test_bodies(apr_pstrcat(tp, path, "/bodies.db", NULL));
    test_key_cache(apr_pstrcat(tp, path, "/keys.db", NULL));

    apr_pool_destroy(cp2);
    CHECK(close_rc == SQLITE_OK);
    close_rc = -1;
    apr_pool_destroy(cp);
    CHECK(close_rc == SQLITE_OK);

    remove_db(file);
    rmdir(path);
    apr_pool_destroy(tp);
    apr_terminate();
    return unit_summary("test_store");
}
