/*
 * rollup_delta.c - a write transaction's rollup groups, summed in C
 * (rollup_delta.h). A group's key is its rollup's kind and key columns,
 * encoded end to end in one buffer; an open-addressing index finds it.
 */
#include <stdlib.h>
#include <string.h>

#include "rollup_delta.h"
#include "rollup_sql.h"

/* One group's sums; n is what every rollup counts. */
struct tllm_rollup_group {
    size_t key_at, key_len;
    uint64_t hash;
    int64_t n, retried, retries, slow, tokens;
    double latency_sum;
};

typedef struct tllm_rollup_group group;

/* FNV-1a: keys are a few dozen bytes. */
static uint64_t hash_of(const char *p, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);
    size_t i;

    for (i = 0; i < n; i++) {
        h = (h ^ (unsigned char)p[i]) * UINT64_C(1099511628211);
    }
    return h;
}

static void *grow(void *p, size_t *cap, size_t need, size_t size,
                  size_t first)
{
    size_t c = *cap ? *cap : first;
    void *q;

    while (c < need) {
        c *= 2;
    }
    if (c == *cap) {
        return p;
    }
    q = realloc(p, c * size);
    if (q) {
        *cap = c;
    }
    return q;
}

/* A key is built at the end of the keys buffer: its kind, then each
 * string as its length and bytes, then at most one integer (the hour or
 * the bucket). find() keeps it there for a new group, drops it for a
 * group that has one already. */
static void key_bytes(tllm_rollup_delta *d, const void *p, size_t n)
{
    void *q;

    if (d->failed) {
        return;
    }
    if (!(q = grow(d->keys, &d->keys_cap, d->keys_len + n, 1, 16384))) {
        d->failed = 1;
        return;
    }
    d->keys = q;
    memcpy(d->keys + d->keys_len, p, n);
    d->keys_len += n;
}

static void key_start(tllm_rollup_delta *d, int kind)
{
    char c = (char)kind;

    d->key_at = d->keys_len;
    key_bytes(d, &c, 1);
}

static void key_str(tllm_rollup_delta *d, const char *s)
{
    uint32_t n = s ? (uint32_t)strlen(s) : 0;

    key_bytes(d, &n, sizeof(n));
    key_bytes(d, s ? s : "", n);
}

static void key_int(tllm_rollup_delta *d, int64_t v)
{
    key_bytes(d, &v, sizeof(v));
}

/* Rebuild the index at twice the size, at most half full after. */
static int reindex(tllm_rollup_delta *d)
{
    size_t cap = d->index_cap ? d->index_cap * 2 : 1024, i;
    uint32_t *index = calloc(cap, sizeof(*index));

    if (!index) {
        return -1;
    }
    for (i = 0; i < d->ngroups; i++) {
        size_t at = (size_t)d->groups[i].hash & (cap - 1);

        while (index[at]) {
            at = (at + 1) & (cap - 1);
        }
        index[at] = (uint32_t)(i + 1);
    }
    free(d->index);
    d->index = index;
    d->index_cap = cap;
    return 0;
}

/* The group of the key just built, added with zero sums if new; NULL
 * when out of memory (the delta is then marked failed). */
static group *find(tllm_rollup_delta *d)
{
    const char *k = d->keys + d->key_at;
    size_t len = d->keys_len - d->key_at;
    uint64_t h;
    size_t at;
    group *g;
    void *p;

    if (d->failed) {
        return NULL;
    }
    h = hash_of(k, len);
    if (2 * (d->ngroups + 1) > d->index_cap && reindex(d) != 0) {
        d->failed = 1;
        return NULL;
    }
    for (at = (size_t)h & (d->index_cap - 1); d->index[at];
         at = (at + 1) & (d->index_cap - 1)) {
        g = &d->groups[d->index[at] - 1];
        if (g->hash == h && g->key_len == len
            && memcmp(d->keys + g->key_at, k, len) == 0) {
            d->keys_len = d->key_at;    /* the group has its key */
            return g;
        }
    }
    if (!(p = grow(d->groups, &d->groups_cap, d->ngroups + 1,
                   sizeof(group), 256))) {
        d->failed = 1;
        return NULL;
    }
    d->groups = p;
    g = &d->groups[d->ngroups];
    memset(g, 0, sizeof(*g));
    g->key_at = d->key_at;
    g->key_len = len;
    g->hash = h;
    d->index[at] = (uint32_t)++d->ngroups;
    return g;
}

void tllm_rollup_delta_init(tllm_rollup_delta *d)
{
    memset(d, 0, sizeof(*d));
}

static int64_t hour_of(int64_t us)
{
    const int64_t hour = INT64_C(3600000000);

    return us - ((us % hour) + hour) % hour;    /* as the SQL's */
}

void tllm_rollup_delta_add(tllm_rollup_delta *d, const tllm_rollup_row *row,
                           int64_t seq)
{
    /* The row's four scopes ('' = any; rollup_sql.h). */
    const char *project[4] = { row->project_id, row->project_id, "", "" };
    const char *env[4] = { row->environment, "", row->environment, "" };
    group *g;
    int s;

    if (!d->rows) {
        d->first_seq = seq;
    }
    d->rows++;
    d->last_seq = seq;
    for (s = 0; s < 4; s++) {
        key_start(d, TLLM_ROLLUP_TOTAL);
        key_str(d, project[s]);
        key_str(d, env[s]);
        key_str(d, row->model_name);
        key_str(d, row->status);
        if ((g = find(d))) {
            g->n++;
            g->retried += row->retry_count > 0;
            g->retries += row->retry_count;
            g->slow += row->slow;
            g->tokens += row->token_count;
            g->latency_sum += row->latency;
        }
        key_start(d, TLLM_ROLLUP_HOUR);
        key_str(d, project[s]);
        key_str(d, env[s]);
        key_int(d, hour_of(row->created_at));
        if ((g = find(d))) {
            g->n++;
            g->tokens += row->token_count;
            g->latency_sum += row->latency;
        }
        key_start(d, TLLM_ROLLUP_LATENCY);
        key_str(d, project[s]);
        key_str(d, env[s]);
        key_int(d, row->lat_bucket);
        if ((g = find(d))) {
            g->n++;
        }
        key_start(d, TLLM_ROLLUP_COARSE);
        key_str(d, project[s]);
        key_str(d, env[s]);
        key_int(d, row->lat_bucket >> TLLM_LATENCY_COARSE_SHIFT);
        if ((g = find(d))) {
            g->n++;
        }
    }
    /* rollup_project: the project in its environment and in all. */
    for (s = 0; s < 2; s++) {
        key_start(d, TLLM_ROLLUP_PROJECT);
        key_str(d, env[s]);
        key_str(d, row->project_id);
        if ((g = find(d))) {
            g->n++;
        }
    }
}

int tllm_rollup_delta_covers(const tllm_rollup_delta *d, int64_t mark)
{
    return !d->failed && d->rows > 0 && d->first_seq == mark + 1
           && d->last_seq - d->first_seq + 1 == d->rows;
}

/* A key's string at *at (advanced past it), bound as parameter i. */
static void bind_str(sqlite3_stmt *st, int i, const char **at)
{
    uint32_t n;

    memcpy(&n, *at, sizeof(n));
    sqlite3_bind_text(st, i, *at + sizeof(n), (int)n, SQLITE_STATIC);
    *at += sizeof(n) + n;
}

static void bind_int(sqlite3_stmt *st, int i, const char *at)
{
    int64_t v;

    memcpy(&v, at, sizeof(v));
    sqlite3_bind_int64(st, i, v);
}

/* Bind group g to its kind's upsert (the parameter order of
 * rollup_sql.h's TLLM_SQL_ROLLUP_*_UPSERT). */
static sqlite3_stmt *bind_group(const tllm_rollup_delta *d, const group *g,
                                sqlite3_stmt *const upsert[])
{
    const char *at = d->keys + g->key_at + 1;
    int kind = d->keys[g->key_at];
    sqlite3_stmt *st = upsert[kind];

    bind_str(st, 1, &at);
    bind_str(st, 2, &at);
    switch (kind) {
    case TLLM_ROLLUP_TOTAL:
        bind_str(st, 3, &at);
        bind_str(st, 4, &at);
        sqlite3_bind_int64(st, 5, g->n);
        sqlite3_bind_int64(st, 6, g->retried);
        sqlite3_bind_int64(st, 7, g->retries);
        sqlite3_bind_int64(st, 8, g->slow);
        sqlite3_bind_int64(st, 9, g->tokens);
        sqlite3_bind_double(st, 10, g->latency_sum);
        break;
    case TLLM_ROLLUP_HOUR:
        bind_int(st, 3, at);
        sqlite3_bind_int64(st, 4, g->n);
        sqlite3_bind_int64(st, 5, g->tokens);
        sqlite3_bind_double(st, 6, g->latency_sum);
        break;
    case TLLM_ROLLUP_PROJECT:
        sqlite3_bind_int64(st, 3, g->n);
        break;
    default:    /* the two latency histograms */
        bind_int(st, 3, at);
        sqlite3_bind_int64(st, 4, g->n);
        break;
    }
    return st;
}

int tllm_rollup_delta_flush(const tllm_rollup_delta *d,
                            sqlite3_stmt *const upsert[TLLM_ROLLUP__COUNT])
{
    size_t i;

    if (d->failed) {
        return SQLITE_NOMEM;
    }
    for (i = 0; i < d->ngroups; i++) {
        sqlite3_stmt *st = bind_group(d, &d->groups[i], upsert);
        int rc = sqlite3_step(st);

        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            return rc;
        }
    }
    /* The bindings point into the keys, which clear frees. */
    for (i = 0; i < TLLM_ROLLUP__COUNT; i++) {
        sqlite3_clear_bindings(upsert[i]);
    }
    return SQLITE_DONE;
}

void tllm_rollup_delta_clear(tllm_rollup_delta *d)
{
    free(d->groups);
    free(d->index);
    free(d->keys);
    tllm_rollup_delta_init(d);
}
