/*
 * rollup_sql.h - the statements that add new traces to the rollups, once
 * per write transaction (schema version 4, store.c). A header of its own
 * so that bench/raw_insert.c runs the very same SQL as the module.
 *
 * rollup_mark.seq is the highest seq the rollups hold: every row up to it
 * is counted, none after it. A write transaction inserts its rows, then
 * adds the rows past the mark grouped, then moves the mark, all before
 * its COMMIT, so no reader ever sees a row the rollups do not count.
 * Each group is one upsert per transaction instead of one per row.
 */
#ifndef TLLM_ROLLUP_SQL_H
#define TLLM_ROLLUP_SQL_H

#define TLLM_ROLLUP_PENDING "seq > (SELECT seq FROM rollup_mark)"

/* created_at floored to the hour, also for negative times (as in the
 * version 1 triggers). */
#define TLLM_ROLLUP_HOUR_OF_CREATED \
    "created_at - ((created_at % 3600000000) + 3600000000) % 3600000000"

/* "WHERE" before each ON CONFLICT: SQLite's parser needs one to tell an
 * upsert from a join's ON. */
#define TLLM_SQL_ROLLUP_TOTAL_ADD \
    "INSERT INTO rollup_total SELECT project_id, environment, model_name," \
    " status, count(*), sum(retry_count > 0), sum(retry_count), sum(slow)," \
    " sum(token_count), sum(latency)" \
    " FROM traces WHERE " TLLM_ROLLUP_PENDING " GROUP BY 1, 2, 3, 4" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n," \
    " retried = retried + excluded.retried," \
    " retries = retries + excluded.retries, slow = slow + excluded.slow," \
    " tokens = tokens + excluded.tokens," \
    " latency_sum = latency_sum + excluded.latency_sum"

#define TLLM_SQL_ROLLUP_HOUR_ADD \
    "INSERT INTO rollup_hour SELECT " TLLM_ROLLUP_HOUR_OF_CREATED "," \
    " project_id, environment, count(*), sum(token_count), sum(latency)" \
    " FROM traces WHERE " TLLM_ROLLUP_PENDING " GROUP BY 1, 2, 3" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n," \
    " tokens = tokens + excluded.tokens," \
    " latency_sum = latency_sum + excluded.latency_sum"

/* The four scopes of each row (store.c, schema_v2). */
#define TLLM_SQL_ROLLUP_LATENCY_ADD \
    "INSERT INTO rollup_latency SELECT p, e, b, count(*) FROM (" \
    " SELECT project_id AS p, environment AS e, lat_bucket AS b" \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING \
    " UNION ALL SELECT project_id, '', lat_bucket" \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING \
    " UNION ALL SELECT '', environment, lat_bucket" \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING \
    " UNION ALL SELECT '', '', lat_bucket" \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING ")" \
    " WHERE true GROUP BY 1, 2, 3" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n"

/* The newest row may have been deleted: the mark never goes back. */
#define TLLM_SQL_ROLLUP_MARK_MOVE \
    "UPDATE rollup_mark SET seq = max(seq," \
    " (SELECT COALESCE(MAX(seq), 0) FROM traces))"

#endif
