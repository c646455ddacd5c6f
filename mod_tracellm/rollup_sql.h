/*
 * rollup_sql.h - the statements that add new traces to the rollups, once
 * per write transaction (schema versions 4 and 5, store.c). A header of
 * its own so that bench/raw_insert.c runs the very same SQL as the module.
 *
 * rollup_mark.seq is the highest seq the rollups hold: every row up to it
 * is counted, none after it. A write transaction inserts its rows, then
 * adds the rows past the mark grouped, then moves the mark, all before
 * its COMMIT, so no reader ever sees a row the rollups do not count.
 * Each group is one upsert per transaction instead of one per row.
 *
 * The rows a transaction inserted itself are summed in C as they go in
 * (rollup_delta.c) and written with the *_UPSERT statements; the *_ADD
 * statements count the rows past the mark from the table, when some were
 * not inserted that way (by hand, outside the module).
 */
#ifndef TLLM_ROLLUP_SQL_H
#define TLLM_ROLLUP_SQL_H

#define TLLM_ROLLUP_PENDING "seq > (SELECT seq FROM rollup_mark)"

/* created_at floored to the hour, also for negative times (as in the
 * version 1 triggers). */
#define TLLM_ROLLUP_HOUR_OF_CREATED \
    "created_at - ((created_at % 3600000000) + 3600000000) % 3600000000"

/* rollup_latency_coarse's bucket is rollup_latency's shifted right by
 * this much: 16 fine buckets (8 per doubling, about 9 % wide) in one.
 * Stored data depends on it: changing it takes a migration that rebuilds
 * that table (schema_v5 builds it). */
#define TLLM_LATENCY_COARSE_SHIFT 4
#define TLLM_LATENCY_COARSE_SHIFT_SQL "4"

/* Each pending row four times, once in each analytics scope it belongs
 * to (store.c, schema_v5): its own project and environment (p, e), its
 * project in every environment (p, ''), its environment in every project
 * ('', e), and everything ('', ''). '' is never a real value of either.
 * cols: the columns after the two scope columns, named in the first. */
#define TLLM_ROLLUP_SCOPES(cols) \
    " SELECT project_id AS p, environment AS e, " cols \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING \
    " UNION ALL SELECT project_id, '', " cols \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING \
    " UNION ALL SELECT '', environment, " cols \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING \
    " UNION ALL SELECT '', '', " cols \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING

/* "WHERE true" before each ON CONFLICT: SQLite's parser needs one to tell
 * an upsert from a join's ON. */
#define TLLM_SQL_ROLLUP_TOTAL_ADD \
    "INSERT INTO rollup_total SELECT p, e, m, s, count(*), sum(r > 0)," \
    " sum(r), sum(sl), sum(t), sum(l) FROM (" \
    TLLM_ROLLUP_SCOPES("model_name AS m, status AS s, retry_count AS r," \
                       " slow AS sl, token_count AS t, latency AS l") \
    ") WHERE true GROUP BY 1, 2, 3, 4" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n," \
    " retried = retried + excluded.retried," \
    " retries = retries + excluded.retries, slow = slow + excluded.slow," \
    " tokens = tokens + excluded.tokens," \
    " latency_sum = latency_sum + excluded.latency_sum"

#define TLLM_SQL_ROLLUP_HOUR_ADD \
    "INSERT INTO rollup_hour (project_id, environment, hour, n, tokens," \
    " latency_sum) SELECT p, e, h, count(*), sum(t), sum(l) FROM (" \
    TLLM_ROLLUP_SCOPES(TLLM_ROLLUP_HOUR_OF_CREATED " AS h," \
                       " token_count AS t, latency AS l") \
    ") WHERE true GROUP BY 1, 2, 3" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n," \
    " tokens = tokens + excluded.tokens," \
    " latency_sum = latency_sum + excluded.latency_sum"

/* Traces per project, in each environment and in all (''). */
#define TLLM_SQL_ROLLUP_PROJECT_ADD \
    "INSERT INTO rollup_project SELECT e, p, count(*) FROM (" \
    " SELECT environment AS e, project_id AS p" \
    "  FROM traces WHERE " TLLM_ROLLUP_PENDING \
    " UNION ALL SELECT '', project_id FROM traces WHERE " \
    TLLM_ROLLUP_PENDING ")" \
    " WHERE true GROUP BY 1, 2" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n"

#define TLLM_SQL_ROLLUP_LATENCY_ADD \
    "INSERT INTO rollup_latency SELECT p, e, b, count(*) FROM (" \
    TLLM_ROLLUP_SCOPES("lat_bucket AS b") \
    ") WHERE true GROUP BY 1, 2, 3" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n"

#define TLLM_SQL_ROLLUP_LATENCY_COARSE_ADD \
    "INSERT INTO rollup_latency_coarse SELECT p, e, b, count(*) FROM (" \
    TLLM_ROLLUP_SCOPES("lat_bucket >> " TLLM_LATENCY_COARSE_SHIFT_SQL \
                       " AS b") \
    ") WHERE true GROUP BY 1, 2, 3" \
    " ON CONFLICT DO UPDATE SET n = n + excluded.n"

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
