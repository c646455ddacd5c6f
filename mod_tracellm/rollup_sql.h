/*
 * rollup_sql.h - the statements that add new traces to the rollups, once
 * per write transaction (schema versions 4 to 6, store.c). A header of
 * its own so that bench/raw_insert.c runs the very same SQL as the module.
 *
 * rollup_mark.seq is the highest seq the rollups hold: every row up to it
 * is counted, none after it. A write transaction inserts its rows, then
 * adds the rows past the mark grouped, then moves the mark, all before
 * its COMMIT, so no reader ever sees a row the rollups do not count.
 * Each group is one upsert per transaction instead of one per row.
 *
 * The rows are summed in C (rollup_delta.c) and written with the
 * *_UPSERT statements: as a transaction inserts them, or, when some rows
 * past the mark were put in by hand, all of them read back from the table
 * (TLLM_SQL_ROLLUP_PENDING_ROWS).
 */
#ifndef TLLM_ROLLUP_SQL_H
#define TLLM_ROLLUP_SQL_H

#define TLLM_ROLLUP_PENDING "seq > (SELECT seq FROM rollup_mark)"

/* rollup_latency_coarse's bucket is rollup_latency's shifted right by
 * this much: 16 fine buckets (8 per doubling, about 9 % wide) in one.
 * Stored data depends on it: changing it takes a migration that rebuilds
 * that table (schema_v5 builds it). */
#define TLLM_LATENCY_COARSE_SHIFT 4
#define TLLM_LATENCY_COARSE_SHIFT_SQL "4"

/* The rows past the mark, as rollup_delta.c sums them: when they did
 * not all go in through the delta (put into traces by hand). */
#define TLLM_SQL_ROLLUP_PENDING_ROWS \
    "SELECT seq, project_id, environment, model_name, status, latency," \
    " token_count, retry_count, slow, created_at, lat_bucket FROM traces" \
    " WHERE " TLLM_ROLLUP_PENDING

/* One group of rollup_delta.c, added to its row; the parameters in the
 * order of rollup_delta.c's bind_group. */
#define TLLM_SQL_ROLLUP_TOTAL_UPSERT \
    "INSERT INTO rollup_total (project_id, environment, model_name," \
    " status, n, retried, retries, slow, tokens, latency_sum)" \
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n," \
    " retried = retried + excluded.retried," \
    " retries = retries + excluded.retries, slow = slow + excluded.slow," \
    " tokens = tokens + excluded.tokens," \
    " latency_sum = latency_sum + excluded.latency_sum"

#define TLLM_SQL_ROLLUP_HOUR_UPSERT \
    "INSERT INTO rollup_hour (project_id, environment, hour, n, tokens," \
    " latency_sum) VALUES (?1, ?2, ?3, ?4, ?5, ?6)" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n," \
    " tokens = tokens + excluded.tokens," \
    " latency_sum = latency_sum + excluded.latency_sum"

#define TLLM_SQL_ROLLUP_PROJECT_UPSERT \
    "INSERT INTO rollup_project (environment, project_id, n)" \
    " VALUES (?1, ?2, ?3) ON CONFLICT DO UPDATE SET n = n + excluded.n"

#define TLLM_SQL_ROLLUP_LATENCY_UPSERT \
    "INSERT INTO rollup_latency (project_id, environment, bucket, n)" \
    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO UPDATE SET n = n + excluded.n"

#define TLLM_SQL_ROLLUP_COARSE_UPSERT \
    "INSERT INTO rollup_latency_coarse (project_id, environment, bucket, n)" \
    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO UPDATE SET n = n + excluded.n"

#define TLLM_SQL_ROLLUP_MARK_GET "SELECT seq FROM rollup_mark"

/* The newest row may have been deleted: the mark never goes back. */
#define TLLM_SQL_ROLLUP_MARK_MOVE \
    "UPDATE rollup_mark SET seq = max(seq," \
    " (SELECT COALESCE(MAX(seq), 0) FROM traces))"

#endif
