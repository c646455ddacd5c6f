/*
 * bench/raw_insert.c - the "raw SQLite" line of scripts/bench: insert the
 * rows mod_tracellm stored, exactly as stored, into a fresh database with
 * the module's own schema (tables, indexes, triggers, copied from the
 * source database's sqlite_master) and its PRAGMAs (WAL,
 * synchronous=NORMAL, foreign_keys), in one transaction, through one
 * prepared INSERT, then adds them to the rollups before the COMMIT - the
 * same code and statement texts the module uses (rollup_delta.c sums each
 * row as it goes in, rollup_sql.h's upserts write the sums).
 *
 *   raw_insert SRC.db DST.db [MAX_SEQ]
 *
 * Reads every traces row of SRC (seq <= MAX_SEQ if given) into memory
 * first; only BEGIN .. INSERT x n .. rollups .. COMMIT is timed. Prints
 * one JSON object: {"rows", "seconds", "tps", "bytes"}.
 * Built by scripts/bench: gcc -O2 -I mod_tracellm raw_insert.c
 * trace_rows.c mod_tracellm/rollup_delta.c -lsqlite3.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>

#include "rollup_delta.h"
#include "rollup_sql.h"
#include "trace_rows.h"

static void die(sqlite3 *db, const char *what)
{
    trace_rows_die("raw_insert", db, what);
}

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "raw_insert: %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

/* Set dst's integer PRAGMA name to src's value. */
static void copy_pragma(sqlite3 *src, sqlite3 *dst, const char *name)
{
    sqlite3_stmt *st;
    char sql[64];

    snprintf(sql, sizeof(sql), "PRAGMA %s", name);
    if (sqlite3_prepare_v2(src, sql, -1, &st, NULL) != SQLITE_OK
        || sqlite3_step(st) != SQLITE_ROW) {
        die(src, sql);
    }
    snprintf(sql, sizeof(sql), "PRAGMA %s=%d", name,
             sqlite3_column_int(st, 0));
    sqlite3_finalize(st);
    exec(dst, sql);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The module's upserts of the rollup sums (store.c). */
static void prepare_upserts(sqlite3 *dst,
                            sqlite3_stmt *upsert[TLLM_ROLLUP__COUNT])
{
    static const char *const sql[TLLM_ROLLUP__COUNT] = {
        [TLLM_ROLLUP_TOTAL] = TLLM_SQL_ROLLUP_TOTAL_UPSERT,
        [TLLM_ROLLUP_HOUR] = TLLM_SQL_ROLLUP_HOUR_UPSERT,
        [TLLM_ROLLUP_PROJECT] = TLLM_SQL_ROLLUP_PROJECT_UPSERT,
        [TLLM_ROLLUP_LATENCY] = TLLM_SQL_ROLLUP_LATENCY_UPSERT,
        [TLLM_ROLLUP_COARSE] = TLLM_SQL_ROLLUP_COARSE_UPSERT
    };
    int k;

    for (k = 0; k < TLLM_ROLLUP__COUNT; k++) {
        if (sqlite3_prepare_v3(dst, sql[k], -1, SQLITE_PREPARE_PERSISTENT,
                               &upsert[k], NULL) != SQLITE_OK) {
            die(dst, "prepare rollup upsert");
        }
    }
}

int main(int argc, char **argv)
{
    sqlite3 *src, *dst;
    sqlite3_stmt *st, *upsert[TLLM_ROLLUP__COUNT];
    tllm_rollup_delta delta;
    trace_row *rows;
    size_t n, i, bytes;
    sqlite3_int64 max_seq = argc > 3 ? atoll(argv[3]) : INT64_MAX;
    double t0, t1;

    if (argc < 3) {
        fprintf(stderr, "usage: raw_insert SRC.db DST.db [MAX_SEQ]\n");
        return 2;
    }
    if (sqlite3_open_v2(argv[1], &src, SQLITE_OPEN_READONLY, NULL)
        != SQLITE_OK) {
        die(src, "open source");
    }
    remove(argv[2]);
    if (sqlite3_open(argv[2], &dst) != SQLITE_OK) {
        die(dst, "open destination");
    }
    /* The module's connection settings (store.c), and the source's page
     * size. */
    copy_pragma(src, dst, "page_size");
    exec(dst, "PRAGMA journal_mode=WAL");
    exec(dst, "PRAGMA synchronous=NORMAL");
    exec(dst, "PRAGMA foreign_keys=ON");

    /* The schema, in creation order (tables before their indexes and
     * triggers); sqlite_sequence comes with the AUTOINCREMENT table.
     * rollup_mark starts at 0 (its row is data): the rollups are empty. */
    if (sqlite3_prepare_v2(src, "SELECT sql FROM sqlite_master"
                           " WHERE sql IS NOT NULL"
                           " AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
                           -1, &st, NULL) != SQLITE_OK) {
        die(src, "read schema");
    }
    exec(dst, "BEGIN");
    while (sqlite3_step(st) == SQLITE_ROW) {
        exec(dst, (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    copy_pragma(src, dst, "user_version");
    exec(dst, "INSERT INTO rollup_mark VALUES (0)");
    exec(dst, "COMMIT");

    n = trace_rows_read(src, max_seq, &rows, &bytes);
    sqlite3_close(src);

    /* store.c's ST_TRACE_INSERT, word for word. */
    if (sqlite3_prepare_v3(dst,
            "INSERT INTO traces (trace_id, project_id, environment,"
            " model_name, status, latency, token_count, retry_count, slow,"
            " created_at, body, lat_bucket)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        die(dst, "prepare insert");
    }
    prepare_upserts(dst, upsert);
    tllm_rollup_delta_init(&delta);
    t0 = now_s();
    exec(dst, "BEGIN IMMEDIATE");
    for (i = 0; i < n; i++) {
        const trace_row *r = &rows[i];
        int k;

        for (k = 0; k < 5; k++) {
            sqlite3_bind_text(st, k + 1, r->text[k], -1, SQLITE_STATIC);
        }
        sqlite3_bind_double(st, 6, r->latency);
        sqlite3_bind_int64(st, 7, r->tokens);
        sqlite3_bind_int64(st, 8, r->retries);
        sqlite3_bind_int64(st, 9, r->slow);
        sqlite3_bind_int64(st, 10, r->created_at);
        if (r->body_packed) {
            sqlite3_bind_blob(st, 11, r->body, r->body_len, SQLITE_STATIC);
        }
        else {
            sqlite3_bind_text(st, 11, r->body, r->body_len, SQLITE_STATIC);
        }
        sqlite3_bind_int64(st, 12, r->lat_bucket);
        if (sqlite3_step(st) != SQLITE_DONE) {
            die(dst, "insert");
        }
        sqlite3_reset(st);
        {
            tllm_rollup_row row = {
                r->text[1], r->text[2], r->text[3], r->text[4], r->latency,
                r->tokens, r->retries, r->slow, r->created_at, r->lat_bucket
            };

            tllm_rollup_delta_add(&delta, &row,
                                  sqlite3_last_insert_rowid(dst));
        }
    }
    /* As the module's commit: the mark is 0, every row is the delta's. */
    if (!tllm_rollup_delta_covers(&delta, 0)
        || tllm_rollup_delta_flush(&delta, upsert) != SQLITE_DONE) {
        die(dst, "rollups");
    }
    tllm_rollup_delta_clear(&delta);
    exec(dst, TLLM_SQL_ROLLUP_MARK_MOVE);
    exec(dst, "COMMIT");
    t1 = now_s();
    sqlite3_finalize(st);
    for (i = 0; i < TLLM_ROLLUP__COUNT; i++) {
        sqlite3_finalize(upsert[i]);
    }
    /* Untimed: the rollups count every row. */
    if (sqlite3_prepare_v2(dst, "SELECT (SELECT sum(n) FROM rollup_total"
                           " WHERE project_id = '' AND environment = '')"
                           " = count(*) FROM traces", -1, &st, NULL)
        != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW
        || sqlite3_column_int(st, 0) != 1) {
        die(dst, "rollups do not count every row");
    }
    sqlite3_finalize(st);
    sqlite3_close(dst);
    printf("{\"rows\": %zu, \"seconds\": %.6f, \"tps\": %.1f,"
           " \"bytes\": %zu}\n", n, t1 - t0,
           t1 > t0 ? (double)n / (t1 - t0) : 0.0, bytes);
    return 0;
}
