/*
 * store_events.c - the database as the event log: traces in seq order
 * after a cursor, for tllm-eventd's live stream and ?since= replays.
 */
#include "store_int.h"

int tllm_store_events_after(tllm_db *db, apr_pool_t *p, int64_t since,
                            const char *project_id, const char *environment,
                            int limit, apr_array_header_t **out)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_EVENTS_AFTER);
    int rc;

    *out = apr_array_make(p, limit > 0 && limit < 256 ? limit : 16,
                          sizeof(tllm_event));
    if (!st) {
        return TLLM_ERROR;
    }
    sqlite3_bind_int64(st, 1, since);
    tllm__bind_text(st, 2, project_id && *project_id ? project_id : NULL);
    tllm__bind_text(st, 3, environment && *environment ? environment : NULL);
    sqlite3_bind_int64(st, 4, limit > 0 ? limit : 0);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tllm_event *e = apr_array_push(*out);
        e->seq = sqlite3_column_int64(st, 0);
        e->project_id = tllm__col_text(p, st, 1, NULL);
        e->environment = tllm__col_text(p, st, 2, NULL);
        e->trace.s = tllm__col_body(db, p, st, 3, &e->trace.len);
        if (!e->trace.s) {
            tllm__release(st);
            return TLLM_ERROR;
        }
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "read events");
    }
    tllm__release(st);
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

int tllm_store_last_seq(tllm_db *db, int64_t *seq)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_LAST_SEQ);
    int rc;

    *seq = 0;
    if (!st) {
        return TLLM_ERROR;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
    }
    else {
        tllm__fail(db, "read the last seq");
    }
    tllm__release(st);
    return rc == SQLITE_ROW ? TLLM_OK : TLLM_ERROR;
}
