/*
 * bench/trace_rows.h - the traces rows mod_tracellm stored, read into
 * memory, for the bench's raw-insert lines (raw_insert.c, pg_insert.c):
 * both then insert exactly the rows the module stored, with no reading in
 * the timed part.
 */
#ifndef TRACE_ROWS_H
#define TRACE_ROWS_H

#include <stddef.h>
#include <sqlite3.h>

/* The columns of ST_TRACE_INSERT (mod_tracellm/store.c), in its order. */
typedef struct {
    char *text[5];      /* trace_id, project_id, environment, model, status */
    double latency;
    sqlite3_int64 tokens, retries, slow, created_at, lat_bucket;
    char *body;         /* as stored: JSON text, or packed (a BLOB, */
    int body_len;       /* mod_tracellm/trace_body.h) */
    int body_packed;
} trace_row;

/* Every traces row of src with seq <= max_seq, in seq order, into a
 * malloc'ed array; *bytes gets the bodies' total length. Exits the
 * program (message on stderr) on any error. */
size_t trace_rows_read(sqlite3 *src, sqlite3_int64 max_seq,
                       trace_row **rows, size_t *bytes);

/* Print "prog: what: message" and exit(1). */
void trace_rows_die(const char *prog, sqlite3 *db, const char *what);

#endif
