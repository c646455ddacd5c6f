/*
 * bench/pg_insert.c - the "raw PostgreSQL" line of scripts/bench --pgsql:
 * what the same ingest costs PostgreSQL, the store DESIGN.md plans for
 * scale-out, on the same machine. The rows mod_tracellm stored, exactly
 * as stored, go into a fresh schema with the SQLite schema's columns and
 * rollup tables (mod_tracellm/store.c, version 5) and the traces indexes
 * of SRC itself (their CREATE INDEX texts from sqlite_master are valid
 * PostgreSQL), in batches of 100 (the bench's ingest batch), one
 * statement and one transaction each, over CONNECTIONS connections.
 *
 *   pg_insert SRC.db CONNINFO CONNECTIONS [MAX_SEQ]
 *
 * Each statement inserts its batch and adds the batch's sums to the five
 * rollups, each row in its four analytics scopes (rollup_sql.h), in
 * data-modifying CTEs, once per group of the batch: what the
 * SQLite store does per write transaction. Groups go in key order, so two
 * batches lock the rollup rows they share in the same order.
 *
 * Reads the rows into memory first; only the batches are timed. Checks
 * afterwards that the table and every rollup count exactly the rows sent.
 * Prints one JSON object: {"rows", "seconds", "tps", "connections",
 * "batch", "retries", "db_bytes"}; db_bytes are the six tables' with
 * their indexes (an empty database's catalog is about 7.5 MB more).
 * Built by scripts/bench: gcc -O2 pg_insert.c trace_rows.c -lpq -lsqlite3.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "trace_rows.h"

#define BATCH 100
#define COLUMNS 12
#define MAX_CONNECTIONS 64

/* The tables; copy_indexes adds the traces indexes. toast_tuple_target:
 * a rendered trace is about 2 KB, just over
 * PostgreSQL's default threshold for compressing a row and moving its
 * body to a TOAST table (a second b-tree per row); kept in the row, as
 * SQLite keeps it. */
static const char schema[] =
    "DROP TABLE IF EXISTS traces, rollup_total, rollup_hour,"
    " rollup_project, rollup_latency, rollup_latency_coarse;"
    "CREATE TABLE traces ("
    " seq bigserial PRIMARY KEY,"
    " trace_id text UNIQUE NOT NULL,"
    " project_id text NOT NULL,"
    " environment text NOT NULL,"
    " model_name text NOT NULL,"
    " status text NOT NULL,"
    " latency double precision NOT NULL,"
    " token_count bigint NOT NULL,"
    " retry_count bigint NOT NULL,"
    " slow integer NOT NULL,"
    " created_at bigint NOT NULL,"
    " body bytea NOT NULL,"
    " lat_bucket bigint NOT NULL) WITH (toast_tuple_target = 8160);"
    "CREATE TABLE rollup_total ("
    " project_id text, environment text, model_name text, status text,"
    " n bigint NOT NULL, retried bigint NOT NULL, retries bigint NOT NULL,"
    " slow bigint NOT NULL, tokens bigint NOT NULL,"
    " latency_sum double precision NOT NULL,"
    " PRIMARY KEY (project_id, environment, model_name, status));"
    "CREATE TABLE rollup_hour ("
    " project_id text, environment text, hour bigint, n bigint NOT NULL,"
    " tokens bigint NOT NULL, latency_sum double precision NOT NULL,"
    " PRIMARY KEY (project_id, environment, hour));"
    "CREATE TABLE rollup_project ("
    " environment text, project_id text, n bigint NOT NULL,"
    " PRIMARY KEY (environment, project_id));"
    "CREATE TABLE rollup_latency ("
    " project_id text, environment text, bucket bigint, n bigint NOT NULL,"
    " PRIMARY KEY (project_id, environment, bucket));"
    "CREATE TABLE rollup_latency_coarse ("
    " project_id text, environment text, bucket bigint, n bigint NOT NULL,"
    " PRIMARY KEY (project_id, environment, bucket));";

/* $1..$12 are text arrays of the batch's columns, in trace_row order. */
static const char insert_batch[] =
    "WITH batch AS (SELECT * FROM unnest($1::text[], $2::text[],"
    "  $3::text[], $4::text[], $5::text[], $6::float8[], $7::int8[],"
    "  $8::int8[], $9::int4[], $10::int8[], $11::bytea[], $12::int8[]))"
    " , ins AS (INSERT INTO traces (trace_id, project_id, environment,"
    "  model_name, status, latency, token_count, retry_count, slow,"
    "  created_at, body, lat_bucket) SELECT * FROM batch"
    "  RETURNING project_id, environment, model_name, status, latency,"
    "  token_count, retry_count, slow, created_at, lat_bucket)"
    /* Each inserted row in its four scopes ('' = any). */
    " , sc AS (SELECT project_id p, environment e, * FROM ins"
    "  UNION ALL SELECT project_id, '', * FROM ins"
    "  UNION ALL SELECT '', environment, * FROM ins"
    "  UNION ALL SELECT '', '', * FROM ins)"
    " , total AS (INSERT INTO rollup_total"
    "  SELECT p, e, model_name, status, count(*),"
    "  count(*) FILTER (WHERE retry_count > 0), sum(retry_count),"
    "  sum(slow), sum(token_count), sum(latency)"
    "  FROM sc GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    "  ON CONFLICT (project_id, environment, model_name, status)"
    "  DO UPDATE SET n = rollup_total.n + excluded.n,"
    "  retried = rollup_total.retried + excluded.retried,"
    "  retries = rollup_total.retries + excluded.retries,"
    "  slow = rollup_total.slow + excluded.slow,"
    "  tokens = rollup_total.tokens + excluded.tokens,"
    "  latency_sum = rollup_total.latency_sum + excluded.latency_sum)"
    " , hours AS (INSERT INTO rollup_hour"
    "  SELECT p, e, created_at - ((created_at % 3600000000) + 3600000000)"
    "  % 3600000000, count(*), sum(token_count), sum(latency)"
    "  FROM sc GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    "  ON CONFLICT (project_id, environment, hour)"
    "  DO UPDATE SET n = rollup_hour.n + excluded.n,"
    "  tokens = rollup_hour.tokens + excluded.tokens,"
    "  latency_sum = rollup_hour.latency_sum + excluded.latency_sum)"
    " , projects AS (INSERT INTO rollup_project"
    "  SELECT e, p, count(*) FROM sc WHERE p <> '' AND (e = '' OR e ="
    "  environment) GROUP BY 1, 2 ORDER BY 1, 2"
    "  ON CONFLICT (environment, project_id)"
    "  DO UPDATE SET n = rollup_project.n + excluded.n)"
    " , latency AS (INSERT INTO rollup_latency"
    "  SELECT p, e, lat_bucket, count(*) FROM sc"
    "  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    "  ON CONFLICT (project_id, environment, bucket)"
    "  DO UPDATE SET n = rollup_latency.n + excluded.n)"
    " , coarse AS (INSERT INTO rollup_latency_coarse"
    "  SELECT p, e, lat_bucket >> 4, count(*) FROM sc"
    "  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    "  ON CONFLICT (project_id, environment, bucket)"
    "  DO UPDATE SET n = rollup_latency_coarse.n + excluded.n)"
    " SELECT count(*) FROM ins";

static const char *conninfo;
static trace_row *rows;
static size_t nrows, next_row;
static long retries;
static pthread_mutex_t next_lock = PTHREAD_MUTEX_INITIALIZER;

static void die_pg(PGconn *c, const char *what)
{
    fprintf(stderr, "pg_insert: %s: %s", what, PQerrorMessage(c));
    exit(1);
}

static PGconn *connect_db(void)
{
    PGconn *c = PQconnectdb(conninfo);

    if (PQstatus(c) != CONNECTION_OK) {
        die_pg(c, "connect");
    }
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);

    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        die_pg(c, sql);
    }
    PQclear(r);
}

static long long query_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v;

    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        die_pg(c, sql);
    }
    v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* A growing string. */
typedef struct {
    char *s;
    size_t len, cap;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s) {
            fprintf(stderr, "pg_insert: out of memory\n");
            exit(1);
        }
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

/* One array element in PostgreSQL's text form: quoted, with " and \
 * escaped. */
static void put_element(buf *b, const char *v)
{
    put(b, "\"", 1);
    for (; *v; v++) {
        if (*v == '"' || *v == '\\') {
            put(b, "\\", 1);
        }
        put(b, v, 1);
    }
    put(b, "\"", 1);
}

/* The stored body's bytes (JSON, or packed: trace_rows.h) as a bytea
 * array element, in hex: "\\x...", the backslash escaped. */
static void put_body(buf *b, const trace_row *r)
{
    static const char hex[] = "0123456789abcdef";
    int i;

    put(b, "\"\\\\x", 4);
    for (i = 0; i < r->body_len; i++) {
        unsigned char c = (unsigned char)r->body[i];
        char two[2] = { hex[c >> 4], hex[c & 15] };

        put(b, two, 2);
    }
    put(b, "\"", 1);
}

static void put_column(buf *b, const trace_row *r, int col)
{
    char num[32];

    switch (col) {
    case 0: case 1: case 2: case 3: case 4:
        put_element(b, r->text[col]);
        return;
    case 10:
        put_body(b, r);
        return;
    case 5:
        snprintf(num, sizeof(num), "%.17g", r->latency);
        break;
    default: {
        const sqlite3_int64 v[] = {
            [6] = r->tokens, [7] = r->retries, [8] = r->slow,
            [9] = r->created_at, [11] = r->lat_bucket
        };
        snprintf(num, sizeof(num), "%lld", (long long)v[col]);
    }
    }
    put(b, num, strlen(num));
}

/* Column col of rows [from, from + n) as a text array literal. */
static void column_array(buf *b, size_t from, size_t n, int col)
{
    size_t i;

    b->len = 0;
    put(b, "{", 1);
    for (i = from; i < from + n; i++) {
        if (i > from) {
            put(b, ",", 1);
        }
        put_column(b, &rows[i], col);
    }
    put(b, "}", 1);
}

/* The traces indexes of src, made in PostgreSQL as SQLite made them.
 * trace_id's UNIQUE is an automatic index with no text: the table above
 * has it. */
static void copy_indexes(sqlite3 *src, PGconn *c)
{
    sqlite3_stmt *st;
    int n = 0;

    if (sqlite3_prepare_v2(src, "SELECT sql FROM sqlite_master"
                           " WHERE type = 'index' AND tbl_name = 'traces'"
                           " AND sql IS NOT NULL ORDER BY rowid", -1, &st,
                           NULL) != SQLITE_OK) {
        trace_rows_die("pg_insert", src, "read the indexes");
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        exec_ok(c, (const char *)sqlite3_column_text(st, 0));
        n++;
    }
    sqlite3_finalize(st);
    if (n == 0) {
        fprintf(stderr, "pg_insert: the source has no traces indexes\n");
        exit(1);
    }
}

static void *sender(void *unused)
{
    PGconn *c = connect_db();
    buf arrays[COLUMNS] = { { NULL, 0, 0 } };
    const char *params[COLUMNS];
    PGresult *r;
    int k;

    (void)unused;
    r = PQprepare(c, "batch", insert_batch, COLUMNS, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        die_pg(c, "prepare");
    }
    PQclear(r);
    for (;;) {
        size_t from, n;

        pthread_mutex_lock(&next_lock);
        from = next_row;
        n = from < nrows ? (nrows - from < BATCH ? nrows - from : BATCH) : 0;
        next_row += n;
        pthread_mutex_unlock(&next_lock);
        if (n == 0) {
            break;
        }
        for (k = 0; k < COLUMNS; k++) {
            column_array(&arrays[k], from, n, k);
            params[k] = arrays[k].s;
        }
        for (;;) {
            const char *state;

            r = PQexecPrepared(c, "batch", COLUMNS, params, NULL, NULL, 0);
            if (PQresultStatus(r) == PGRES_TUPLES_OK) {
                break;
            }
            /* A deadlock rolls the whole batch back: send it again. */
            state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (!state || strcmp(state, "40P01") != 0) {
                die_pg(c, "insert a batch");
            }
            PQclear(r);
            pthread_mutex_lock(&next_lock);
            retries++;
            pthread_mutex_unlock(&next_lock);
        }
        PQclear(r);
    }
    for (k = 0; k < COLUMNS; k++) {
        free(arrays[k].s);
    }
    PQfinish(c);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Every count must be the rows sent, or the line means nothing. */
static void check_counts(PGconn *c)
{
    static const char *const counts[] = {
        "SELECT count(*) FROM traces",
        "SELECT sum(n) FROM rollup_total"
        " WHERE project_id = '' AND environment = ''",
        "SELECT sum(n) FROM rollup_total"
        " WHERE project_id <> '' AND environment <> ''",
        "SELECT sum(n) FROM rollup_hour"
        " WHERE project_id = '' AND environment = ''",
        "SELECT sum(n) FROM rollup_hour"
        " WHERE project_id <> '' AND environment <> ''",
        "SELECT sum(n) FROM rollup_project WHERE environment = ''",
        "SELECT sum(n) FROM rollup_project WHERE environment <> ''",
        "SELECT sum(n) FROM rollup_latency"
        " WHERE project_id = '' AND environment = ''",
        "SELECT sum(n) FROM rollup_latency"
        " WHERE project_id <> '' AND environment <> ''",
        "SELECT sum(n) FROM rollup_latency_coarse"
        " WHERE project_id = '' AND environment = ''",
        "SELECT sum(n) FROM rollup_latency_coarse"
        " WHERE project_id <> '' AND environment <> ''"
    };
    size_t i;

    for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        long long got = query_int(c, counts[i]);

        if (got != (long long)nrows) {
            fprintf(stderr, "pg_insert: %s: %lld, sent %zu\n", counts[i],
                    got, nrows);
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    pthread_t threads[MAX_CONNECTIONS];
    sqlite3 *src;
    PGconn *c;
    size_t bytes;
    double t0, t1;
    int connections, i;

    if (argc < 4 || (connections = atoi(argv[3])) < 1
        || connections > MAX_CONNECTIONS) {
        fprintf(stderr, "usage: pg_insert SRC.db CONNINFO CONNECTIONS"
                " [MAX_SEQ]\n");
        return 2;
    }
    conninfo = argv[2];
    if (sqlite3_open_v2(argv[1], &src, SQLITE_OPEN_READONLY, NULL)
        != SQLITE_OK) {
        trace_rows_die("pg_insert", src, "open source");
    }
    nrows = trace_rows_read(src, argc > 4 ? atoll(argv[4]) : INT64_MAX,
                            &rows, &bytes);

    c = connect_db();
    exec_ok(c, "SET client_min_messages = warning");
    exec_ok(c, schema);
    copy_indexes(src, c);
    sqlite3_close(src);
    exec_ok(c, "CHECKPOINT");

    t0 = now_s();
    for (i = 0; i < connections; i++) {
        if (pthread_create(&threads[i], NULL, sender, NULL) != 0) {
            fprintf(stderr, "pg_insert: cannot start a thread\n");
            return 1;
        }
    }
    for (i = 0; i < connections; i++) {
        pthread_join(threads[i], NULL);
    }
    t1 = now_s();

    check_counts(c);
    printf("{\"rows\": %zu, \"seconds\": %.6f, \"tps\": %.1f,"
           " \"connections\": %d, \"batch\": %d, \"retries\": %ld,"
           " \"db_bytes\": %lld}\n", nrows, t1 - t0,
           t1 > t0 ? (double)nrows / (t1 - t0) : 0.0, connections, BATCH,
           retries, query_int(c, "SELECT pg_total_relation_size('traces')"
                              " + pg_total_relation_size('rollup_total')"
                              " + pg_total_relation_size('rollup_hour')"
                              " + pg_total_relation_size('rollup_project')"
                              " + pg_total_relation_size('rollup_latency')"
                              " + pg_total_relation_size("
                              "'rollup_latency_coarse')"));
    PQfinish(c);
    return 0;
}
