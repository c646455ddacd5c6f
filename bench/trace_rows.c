/*
 * bench/trace_rows.c - reading the stored traces rows (trace_rows.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace_rows.h"

void trace_rows_die(const char *prog, sqlite3 *db, const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what,
            db ? sqlite3_errmsg(db) : "error");
    exit(1);
}

static void *must(void *p)
{
    if (!p) {
        fprintf(stderr, "trace_rows: out of memory\n");
        exit(1);
    }
    return p;
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    int n = sqlite3_column_bytes(st, i);
    char *d = must(malloc((size_t)n + 1));

    memcpy(d, s ? (const char *)s : "", (size_t)n);
    d[n] = 0;
    return d;
}

size_t trace_rows_read(sqlite3 *src, sqlite3_int64 max_seq,
                       trace_row **rows, size_t *bytes)
{
    sqlite3_stmt *st;
    size_t n = 0, cap = 0;

    *rows = NULL;
    *bytes = 0;
    if (sqlite3_prepare_v2(src, "SELECT trace_id, project_id, environment,"
                           " model_name, status, latency, token_count,"
                           " retry_count, slow, created_at, body, lat_bucket"
                           " FROM traces"
                           " WHERE seq <= ?1 ORDER BY seq", -1, &st, NULL)
        != SQLITE_OK) {
        trace_rows_die("trace_rows", src, "read traces");
    }
    sqlite3_bind_int64(st, 1, max_seq);
    while (sqlite3_step(st) == SQLITE_ROW) {
        trace_row *r;
        int k;

        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            *rows = must(realloc(*rows, cap * sizeof(**rows)));
        }
        r = &(*rows)[n++];
        for (k = 0; k < 5; k++) {
            r->text[k] = dup_col(st, k);
        }
        r->latency = sqlite3_column_double(st, 5);
        r->tokens = sqlite3_column_int64(st, 6);
        r->retries = sqlite3_column_int64(st, 7);
        r->slow = sqlite3_column_int64(st, 8);
        r->created_at = sqlite3_column_int64(st, 9);
        r->body_packed = sqlite3_column_type(st, 10) == SQLITE_BLOB;
        r->body = dup_col(st, 10);
        r->body_len = sqlite3_column_bytes(st, 10);
        r->lat_bucket = sqlite3_column_int64(st, 11);
        *bytes += (size_t)r->body_len;
    }
    sqlite3_finalize(st);
    return n;
}
