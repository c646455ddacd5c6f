/*
 * store.c - the connection object, the statement cache, the schema and
 * its migration, projects and API keys. Storing traces is in
 * store_write.c; reading them, listings and aggregates in store_traces.c
 * (the event log's reads: store_events.c). Native SQLite API only (see
 * DESIGN.md, "SQLite through the native handle"): every value is bound,
 * every statement is prepared once per connection and kept until the
 * connection goes.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <apr_atomic.h>
#include <apr_strings.h>
#include "key_cache.h"
#include "rollup_sql.h"
#include "store_int.h"
#include "trace_body.h"
#include "wal_drain.h"

/* The pool userdata key under which a connection's tllm_db lives. */
#define TLLM_DB_KEY "tllm_db"

#define TLLM_BUSY_TIMEOUT_MS 5000

/* The page size of new databases (see schema_v2 and schema_v8). */
#define TLLM_PAGE_SIZE "8192"

/* When a commit leaves the WAL longer than a quarter of the database,
 * the committing connection copies it back (a passive checkpoint), within
 * these bounds: 4,000 pages (32 MiB of 8 KiB), and 256 MiB (32,768 pages
 * of 8 KiB). With SQLite's default of 1,000 pages alone, the copying
 * was a fifth of ingest's time under the write lock (perf): the rollup
 * pages and the time-ordered indexes' last leaves, written by every
 * commit, were copied once per checkpoint. Longer intervals copy each
 * once for more traces: 200,000 traces went in at 7,600/s with 1,000,
 * 8,600-8,900 with 4,000, 9,400-9,800 with 8,000 and 10,100-10,300 with
 * 16,000 (16 KiB pages). The WAL file keeps its largest size on disk.
 *
 * An eighth and 1,000 pages, until session 22: then each start-over at
 * the bound (below) held the write lock for 50 ms on average, and
 * together for a fifth of batch ingest's time (TLLM0025's "after N ms",
 * summed). A quarter and 4,000 pages start over half as often: 600,000
 * traces went in at 9,634 and 8,532/s against 8,364 and 8,221, and
 * 200,000 at 10,900-11,600 against 9,800-10,300 (BENCHMARKS.md).
 *
 * A long WAL alone made one checkpoint under the write lock copy up to
 * 256 MiB while every writer waited: single POSTs had a p99 of 114 ms at
 * a million traces. So from half the bound on, every 32nd of it, the
 * writer copies the WAL back after it has let go of the write lock
 * (tllm_store_checkpoint_early), while the next writers go on. The
 * checkpoint at the bound still runs under the lock, with only the rest
 * to copy: the WAL starts over only once all of it is copied, which a
 * checkpoint beside busy writers never reaches (checkpoints outside the
 * lock alone: 6,000 traces/s with a WAL that grew without end). On a
 * 4 GB database this took batches from 4,500 to 6,400-6,800 traces/s and
 * the single POSTs' p99 from 127 to 13-23 ms. Not below 16,000 pages of
 * database (125 MiB of 8 KiB pages), where the bound is its least and a
 * checkpoint short anyway. */
#define TLLM_CHECKPOINT_MIN_PAGES 4000
#define TLLM_CHECKPOINT_MAX_BYTES (256 * 1024 * 1024)
#define TLLM_CHECKPOINT_DB_FRACTION 4
#define TLLM_CHECKPOINT_EARLY_STEPS 32

/* The longest the checkpoint at the bound waits for readers to finish
 * (checkpoint_at_bound), with every writer and new request queued behind
 * it. Under the soak mix at -c32 on two cores, where a read takes 140 ms
 * on average, it took 210-250 ms (with the drain); without the drain,
 * 100 ms never sufficed there. */
#define TLLM_CHECKPOINT_RESTART_WAIT_MS 500

/* The longest one attempt of that checkpoint waits on a read slot. An
 * attempt reads each slot's mark once, then waits on every slot whose
 * mark was behind the WAL's end; but the first reader after the commit
 * moves a free slot's mark to the end, and steady readers then take
 * turns on that slot without a gap, so the attempt waited out its whole
 * budget on a slot nothing needed (seen in the lock table: 3-6 of 30
 * restarts beside two steady readers timed out at 500 ms). A new
 * attempt reads the marks again. Longer than a dashboard's read, so a
 * slot that is really behind is still waited for. */
#define TLLM_CHECKPOINT_ATTEMPT_MS 50

/* A minute in us: a key's last_used_at is refreshed at most
 * this often, so authenticating a busy key is not a write per request. */
#define TLLM_TOUCH_INTERVAL_US INT64_C(60000000)

/* ---- schema ----------------------------------------------------------- */

/*
 * Version 1. Time is integer microseconds UTC. traces.seq is the event
 * log's cursor (AUTOINCREMENT: never reused, even after the newest row is
 * deleted). traces.body is the rendered TraceSchema, served verbatim.
 *
 * Indexes: every GET /traces filter has one that also yields the listing
 * order (created_at DESC, seq DESC: seq is the rowid, which every index
 * carries as its last column). The latency indexes give the p95 by rank
 * for each analytics scope without sorting. The partial indexes keep the
 * failure lists cheap when failures are rare.
 *
 * rollup_total and rollup_hour hold the counts and sums analytics report,
 * maintained by triggers in the same transaction as every insert and
 * delete (replacement, retention, anything), so they cannot drift from
 * the rows (inserts: see version 4). Trace rows are never UPDATEd: a
 * new version is delete+insert.
 * latency_sum is reset to exactly 0 when a group empties, so float
 * residue from subtraction never outlives the rows it came from.
 */
static const char schema_v1[] =
    "CREATE TABLE projects ("
    " project_id TEXT PRIMARY KEY NOT NULL,"
    " name TEXT NOT NULL UNIQUE,"
    " description TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL);"
    "CREATE INDEX projects_created ON projects(created_at);"
    "CREATE TABLE api_keys ("
    " key_id TEXT PRIMARY KEY NOT NULL,"
    " key_hash BLOB NOT NULL UNIQUE,"
    " hint TEXT NOT NULL,"
    " project_id TEXT NOT NULL REFERENCES projects(project_id),"
    " environment TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " last_used_at INTEGER,"
    " revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX api_keys_project ON api_keys(project_id, created_at);"
    "CREATE INDEX api_keys_created ON api_keys(created_at);"
    "CREATE TABLE traces ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " trace_id TEXT UNIQUE NOT NULL,"
    " project_id TEXT NOT NULL,"
    " environment TEXT NOT NULL,"
    " model_name TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " latency REAL NOT NULL,"
    " token_count INTEGER NOT NULL,"
    " retry_count INTEGER NOT NULL,"
    " slow INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " body TEXT NOT NULL);"
    "CREATE INDEX traces_created ON traces(created_at);"
    "CREATE INDEX traces_project ON traces(project_id, created_at);"
    "CREATE INDEX traces_env ON traces(environment, created_at);"
    "CREATE INDEX traces_status ON traces(status, created_at);"
    "CREATE INDEX traces_model ON traces(model_name, created_at);"
    "CREATE INDEX traces_latency ON traces(latency);"
    "CREATE INDEX traces_tokens ON traces(token_count);"
    "CREATE INDEX traces_project_latency ON traces(project_id, latency);"
    "CREATE INDEX traces_env_latency ON traces(environment, latency);"
    "CREATE INDEX traces_project_env_latency"
    " ON traces(project_id, environment, latency);"
    /* (Version 2 replaces every index below but traces_project.) */
    "CREATE INDEX traces_retried ON traces(created_at)"
    " WHERE retry_count > 0;"
    "CREATE INDEX traces_slow ON traces(created_at) WHERE slow = 1;"
    "CREATE INDEX traces_flagged ON traces(created_at)"
    " WHERE NOT (status = 'success' AND slow = 0 AND retry_count <= 0);"
    "CREATE TABLE rollup_total ("
    " project_id TEXT NOT NULL,"
    " environment TEXT NOT NULL,"
    " model_name TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " n INTEGER NOT NULL,"
    " retried INTEGER NOT NULL,"
    " retries INTEGER NOT NULL,"
    " slow INTEGER NOT NULL,"
    " tokens INTEGER NOT NULL,"
    " latency_sum REAL NOT NULL,"
    " PRIMARY KEY (project_id, environment, model_name, status)"
    ") WITHOUT ROWID;"
    "CREATE TABLE rollup_hour ("
    " hour INTEGER NOT NULL,"
    " project_id TEXT NOT NULL,"
    " environment TEXT NOT NULL,"
    " n INTEGER NOT NULL,"
    " tokens INTEGER NOT NULL,"
    " latency_sum REAL NOT NULL,"
    " PRIMARY KEY (hour, project_id, environment)"
    ") WITHOUT ROWID;"
    /* hour = created_at floored to the hour (also for negative times). */
    "CREATE TRIGGER traces_rollup_insert AFTER INSERT ON traces BEGIN"
    " INSERT INTO rollup_total VALUES (NEW.project_id, NEW.environment,"
    "  NEW.model_name, NEW.status, 1, NEW.retry_count > 0,"
    "  NEW.retry_count, NEW.slow, NEW.token_count, NEW.latency)"
    " ON CONFLICT DO UPDATE SET n = n + 1,"
    "  retried = retried + excluded.retried,"
    "  retries = retries + excluded.retries,"
    "  slow = slow + excluded.slow,"
    "  tokens = tokens + excluded.tokens,"
    "  latency_sum = latency_sum + excluded.latency_sum;"
    " INSERT INTO rollup_hour VALUES ("
    "  NEW.created_at - ((NEW.created_at % 3600000000) + 3600000000)"
    "   % 3600000000,"
    "  NEW.project_id, NEW.environment, 1, NEW.token_count, NEW.latency)"
    " ON CONFLICT DO UPDATE SET n = n + 1,"
    "  tokens = tokens + excluded.tokens,"
    "  latency_sum = latency_sum + excluded.latency_sum;"
    "END;"
    "CREATE TRIGGER traces_rollup_delete AFTER DELETE ON traces BEGIN"
    " UPDATE rollup_total SET n = n - 1,"
    "  retried = retried - (OLD.retry_count > 0),"
    "  retries = retries - OLD.retry_count,"
    "  slow = slow - OLD.slow,"
    "  tokens = tokens - OLD.token_count,"
    "  latency_sum = CASE WHEN n = 1 THEN 0.0"
    "   ELSE latency_sum - OLD.latency END"
    " WHERE project_id = OLD.project_id AND environment = OLD.environment"
    "  AND model_name = OLD.model_name AND status = OLD.status;"
    " UPDATE rollup_hour SET n = n - 1,"
    "  tokens = tokens - OLD.token_count,"
    "  latency_sum = CASE WHEN n = 1 THEN 0.0"
    "   ELSE latency_sum - OLD.latency END"
    " WHERE hour = OLD.created_at - ((OLD.created_at % 3600000000)"
    "   + 3600000000) % 3600000000"
    "  AND project_id = OLD.project_id AND environment = OLD.environment;"
    "END;";

/*
 * Version 2: measured at 1,000,000 traces (scripts/bench, BENCHMARKS.md).
 *
 * - The p95 no longer walks a latency index for n / 20 entries. The
 *   rollup_latency histogram counts traces per latency bucket (1/128 of
 *   a doubling, from the bits of the double: see tllm__latency_bucket),
 *   per scope: every (project, environment) pair, each project alone
 *   (environment ''), each environment alone (project ''), and all ('',
 *   ''); '' is never a real value of either. The p95 walks one scope's
 *   buckets from the top to the one holding the rank, then only that
 *   bucket's stretch of traces_latency. traces.lat_bucket stores the
 *   bucket, so the triggers (and any SQL client deleting rows) need no
 *   function of ours.
 * - The three scoped latency indexes go: traces_latency carries the
 *   columns every filter tests, so a count or a page filtered by a
 *   latency bound reads that index alone. Every index whose key is not
 *   time-ordered costs a random page write per trace at ingest.
 * - The failure lists get partial indexes that carry the scope columns,
 *   so a scoped list walks only flagged traces, newest first.
 * - traces_created carries every column a listing filters on, so a
 *   listing walks it newest first and reads a row (a 16 KiB page) only
 *   for the traces it returns; the environment, status and model indexes
 *   go. Only the project keeps its own time index: the common single
 *   filter, and a small project's traces are far apart in time order.
 * - New databases use 16 KiB pages (connection_setup): a rendered trace is
 *   about 2.2 KB, and 4 KiB pages held one such row each, a quarter of
 *   the table's bytes unused.
 */
static const char schema_v2[] =
    "ALTER TABLE traces ADD COLUMN lat_bucket INTEGER NOT NULL DEFAULT 0;"
    "UPDATE traces SET lat_bucket = tllm_latency_bucket(latency);"
    "DROP INDEX traces_latency;"
    "DROP INDEX traces_tokens;"
    "DROP INDEX traces_project_latency;"
    "DROP INDEX traces_env_latency;"
    "DROP INDEX traces_project_env_latency;"
    "DROP INDEX traces_retried;"
    "DROP INDEX traces_slow;"
    "DROP INDEX traces_flagged;"
    "DROP INDEX traces_created;"
    "DROP INDEX traces_env;"
    "DROP INDEX traces_status;"
    "DROP INDEX traces_model;"
    /* seq right after created_at: the index is then in listing order
     * (created_at, seq) and the filter columns follow. */
    "CREATE INDEX traces_created ON traces(created_at, seq, project_id,"
    " environment, model_name, status, latency, token_count);"
    "CREATE INDEX traces_latency ON traces(latency, project_id,"
    " environment, model_name, status, token_count, created_at);"
    "CREATE INDEX traces_tokens ON traces(token_count);"
    /* The WHERE texts must match store_traces.c's filter terms exactly:
     * that is how SQLite decides a partial index applies. "Flagged" is
     * written as a NOT so that the retried and slow lists, whose terms
     * would imply an OR-ed form, use their own smaller indexes. */
    "CREATE INDEX traces_failed ON traces(created_at, project_id,"
    " environment) WHERE status = 'failed';"
    "CREATE INDEX traces_retried ON traces(created_at, project_id,"
    " environment) WHERE retry_count > 0;"
    "CREATE INDEX traces_slow ON traces(created_at, project_id,"
    " environment) WHERE slow = 1;"
    "CREATE INDEX traces_flagged ON traces(created_at, project_id,"
    " environment)"
    " WHERE NOT (status = 'success' AND slow = 0 AND retry_count <= 0);"
    "CREATE TABLE rollup_latency ("
    " project_id TEXT NOT NULL,"
    " environment TEXT NOT NULL,"
    " bucket INTEGER NOT NULL,"
    " n INTEGER NOT NULL,"
    " PRIMARY KEY (project_id, environment, bucket)"
    ") WITHOUT ROWID;"
    "INSERT INTO rollup_latency"
    " SELECT project_id, environment, lat_bucket, count(*) FROM traces"
    "  GROUP BY 1, 2, 3"
    " UNION ALL SELECT project_id, '', lat_bucket, count(*) FROM traces"
    "  GROUP BY 1, 3"
    " UNION ALL SELECT '', environment, lat_bucket, count(*) FROM traces"
    "  GROUP BY 2, 3"
    " UNION ALL SELECT '', '', lat_bucket, count(*) FROM traces"
    "  GROUP BY 3;"
    "CREATE TRIGGER traces_latency_insert AFTER INSERT ON traces BEGIN"
    " INSERT INTO rollup_latency VALUES"
    "  (NEW.project_id, NEW.environment, NEW.lat_bucket, 1),"
    "  (NEW.project_id, '', NEW.lat_bucket, 1),"
    "  ('', NEW.environment, NEW.lat_bucket, 1),"
    "  ('', '', NEW.lat_bucket, 1)"
    " ON CONFLICT DO UPDATE SET n = n + 1;"
    "END;"
    "CREATE TRIGGER traces_latency_delete AFTER DELETE ON traces BEGIN"
    " UPDATE rollup_latency SET n = n - 1"
    " WHERE bucket = OLD.lat_bucket"
    "  AND project_id IN (OLD.project_id, '')"
    "  AND environment IN (OLD.environment, '');"
    "END;";

/*
 * Version 3: the partial indexes key on (created_at, seq) like
 * traces_created. Keyed on created_at alone they left ties in the listing
 * order (created_at DESC, seq DESC) to a sorter: every body of a failure
 * list was copied into a temporary b-tree before it was returned (perf:
 * a sixth of GET /failures' time).
 */
static const char schema_v3[] =
    "DROP INDEX traces_failed;"
    "DROP INDEX traces_retried;"
    "DROP INDEX traces_slow;"
    "DROP INDEX traces_flagged;"
    /* The same WHERE texts as version 2's (see there). */
    "CREATE INDEX traces_failed ON traces(created_at, seq, project_id,"
    " environment) WHERE status = 'failed';"
    "CREATE INDEX traces_retried ON traces(created_at, seq, project_id,"
    " environment) WHERE retry_count > 0;"
    "CREATE INDEX traces_slow ON traces(created_at, seq, project_id,"
    " environment) WHERE slow = 1;"
    "CREATE INDEX traces_flagged ON traces(created_at, seq, project_id,"
    " environment)"
    " WHERE NOT (status = 'success' AND slow = 0 AND retry_count <= 0);";

/*
 * Version 4: the rollups are added to once per write transaction, not
 * by a trigger per row (rollup_sql.h). Six upserts a trace, two into
 * rollup_total and rollup_hour and four into rollup_latency, were most
 * of the rollups' cost at ingest; summed per transaction, a group shares
 * one upsert. Raw SQLite, committing every 100 rows: 9,353 and 9,417
 * rows/s against 6,714 and 6,969 with the triggers (BENCHMARKS.md).
 * The delete triggers stay: a deleted row is always one the rollups
 * count, as every transaction adds its rows before it commits, and the
 * store adds them before it deletes a row it may have inserted in the
 * same transaction (store_traces.c, put_one).
 */
static const char schema_v4[] =
    "CREATE TABLE rollup_mark (seq INTEGER NOT NULL);"
    "INSERT INTO rollup_mark SELECT COALESCE(MAX(seq), 0) FROM traces;"
    "DROP TRIGGER traces_rollup_insert;"
    "DROP TRIGGER traces_latency_insert;";

/*
 * Version 5: every rollup is kept per analytics scope, so GET /analytics
 * and GET /failures read only their scope's rows, however many projects,
 * environments and models there are. At 1,000,000 traces in the bench's
 * mix, GET /analytics walked 271 rollup_total groups, 360 hours and 560
 * latency buckets, about half of its time (perf).
 *
 * - rollup_total and rollup_hour hold each group also in the three wider
 *   scopes that rollup_latency already had: the project in every
 *   environment (environment ''), the environment in every project
 *   (project '') and everything ('', ''). rollup_hour's key starts with
 *   the scope, so a scope's 24 hours are one stretch of it.
 * - rollup_project counts traces per project in each environment and in
 *   all (''): the project breakdown of a scope without a project.
 * - rollup_latency_coarse is rollup_latency with 16 buckets in one
 *   (TLLM_LATENCY_COARSE_SHIFT): the p95 walks it from the top, then the
 *   16 fine buckets of the coarse one that holds the rank.
 *
 * A delete takes each row out of every scope it is in.
 */
static const char schema_v5[] =
    "DROP TRIGGER traces_rollup_delete;"
    "DROP TRIGGER traces_latency_delete;"
    "CREATE TABLE rollup_project ("
    " environment TEXT NOT NULL,"
    " project_id TEXT NOT NULL,"
    " n INTEGER NOT NULL,"
    " PRIMARY KEY (environment, project_id)"
    ") WITHOUT ROWID;"
    "INSERT INTO rollup_project"
    " SELECT environment, project_id, sum(n) FROM rollup_total GROUP BY 1, 2"
    " UNION ALL SELECT '', project_id, sum(n) FROM rollup_total"
    "  GROUP BY 2;"
    "INSERT INTO rollup_total"
    " SELECT project_id, '', model_name, status, sum(n), sum(retried),"
    "  sum(retries), sum(slow), sum(tokens), sum(latency_sum)"
    "  FROM rollup_total GROUP BY 1, 3, 4"
    " UNION ALL SELECT '', environment, model_name, status, sum(n),"
    "  sum(retried), sum(retries), sum(slow), sum(tokens), sum(latency_sum)"
    "  FROM rollup_total GROUP BY 2, 3, 4"
    " UNION ALL SELECT '', '', model_name, status, sum(n), sum(retried),"
    "  sum(retries), sum(slow), sum(tokens), sum(latency_sum)"
    "  FROM rollup_total GROUP BY 3, 4;"
    "CREATE TABLE rollup_hour_v5 ("
    " project_id TEXT NOT NULL,"
    " environment TEXT NOT NULL,"
    " hour INTEGER NOT NULL,"
    " n INTEGER NOT NULL,"
    " tokens INTEGER NOT NULL,"
    " latency_sum REAL NOT NULL,"
    " PRIMARY KEY (project_id, environment, hour)"
    ") WITHOUT ROWID;"
    "INSERT INTO rollup_hour_v5"
    " SELECT project_id, environment, hour, n, tokens, latency_sum"
    "  FROM rollup_hour"
    " UNION ALL SELECT project_id, '', hour, sum(n), sum(tokens),"
    "  sum(latency_sum) FROM rollup_hour GROUP BY 1, 3"
    " UNION ALL SELECT '', environment, hour, sum(n), sum(tokens),"
    "  sum(latency_sum) FROM rollup_hour GROUP BY 2, 3"
    " UNION ALL SELECT '', '', hour, sum(n), sum(tokens), sum(latency_sum)"
    "  FROM rollup_hour GROUP BY 3;"
    "DROP TABLE rollup_hour;"
    "ALTER TABLE rollup_hour_v5 RENAME TO rollup_hour;"
    "CREATE TABLE rollup_latency_coarse ("
    " project_id TEXT NOT NULL,"
    " environment TEXT NOT NULL,"
    " bucket INTEGER NOT NULL,"
    " n INTEGER NOT NULL,"
    " PRIMARY KEY (project_id, environment, bucket)"
    ") WITHOUT ROWID;"
    "INSERT INTO rollup_latency_coarse"
    " SELECT project_id, environment,"
    "  bucket >> " TLLM_LATENCY_COARSE_SHIFT_SQL ", sum(n)"
    "  FROM rollup_latency GROUP BY 1, 2, 3;"
    /* As version 1's, in every scope of the row. */
    "CREATE TRIGGER traces_rollup_delete AFTER DELETE ON traces BEGIN"
    " UPDATE rollup_total SET n = n - 1,"
    "  retried = retried - (OLD.retry_count > 0),"
    "  retries = retries - OLD.retry_count,"
    "  slow = slow - OLD.slow,"
    "  tokens = tokens - OLD.token_count,"
    "  latency_sum = CASE WHEN n = 1 THEN 0.0"
    "   ELSE latency_sum - OLD.latency END"
    " WHERE project_id IN (OLD.project_id, '')"
    "  AND environment IN (OLD.environment, '')"
    "  AND model_name = OLD.model_name AND status = OLD.status;"
    " UPDATE rollup_hour SET n = n - 1,"
    "  tokens = tokens - OLD.token_count,"
    "  latency_sum = CASE WHEN n = 1 THEN 0.0"
    "   ELSE latency_sum - OLD.latency END"
    " WHERE project_id IN (OLD.project_id, '')"
    "  AND environment IN (OLD.environment, '')"
    "  AND hour = OLD.created_at - ((OLD.created_at % 3600000000)"
    "   + 3600000000) % 3600000000;"
    " UPDATE rollup_project SET n = n - 1"
    " WHERE environment IN (OLD.environment, '')"
    "  AND project_id = OLD.project_id;"
    "END;"
    "CREATE TRIGGER traces_latency_delete AFTER DELETE ON traces BEGIN"
    " UPDATE rollup_latency SET n = n - 1"
    " WHERE project_id IN (OLD.project_id, '')"
    "  AND environment IN (OLD.environment, '')"
    "  AND bucket = OLD.lat_bucket;"
    " UPDATE rollup_latency_coarse SET n = n - 1"
    " WHERE project_id IN (OLD.project_id, '')"
    "  AND environment IN (OLD.environment, '')"
    "  AND bucket = OLD.lat_bucket >> " TLLM_LATENCY_COARSE_SHIFT_SQL ";"
    "END;";

/*
 * Version 6: traces_project carries every column a listing filters on,
 * as traces_created does, so a listing filtered by a project and more
 * walks that project's entries alone, newest first, testing the other
 * filters in the index. Through traces_created it walked every project's
 * newest traces: after the bench's soak, whose newest 120,000 traces were
 * one other project's, a project + environment + model page took 8-11 ms
 * of SQLite against 0.12-0.14 through this index (0.14-0.72 through the
 * old one, which reads a row per entry). About 43 bytes a trace more.
 */
static const char schema_v6[] =
    "DROP INDEX traces_project;"
    "CREATE INDEX traces_project ON traces(project_id, created_at, seq,"
    " environment, model_name, status, latency, token_count);";

/*
 * Version 7: traces_kind keys each (environment, model, status) in time
 * order, so a listing filtered on those without a project reads the
 * newest entries of each such kind that the rollup says has matches, and
 * merges them (store_traces.c). Through traces_created it walked every
 * newer entry that did not match: with one busy project's 130,000 newest
 * traces in front, an environment, a model or a status alone took 16-18
 * ms of SQLite at a million traces, and a model nothing has 110-140 ms.
 * seq is not a column: an index of a rowid table ends with the rowid,
 * which orders ties. Entries go in at the end of their kind, a handful of
 * pages a transaction.
 *
 * traces_created loses project_id: since version 6 a listing with a
 * project reads traces_project, and nothing else tested it there. At a
 * million traces, migrated, traces_kind took 48 MB and this gave back 24;
 * built from empty, the database is 41 bytes a trace larger, 1.46 x the
 * JSON against 1.44 (BENCHMARKS.md).
 */
static const char schema_v7[] =
    "CREATE INDEX traces_kind ON traces(environment, model_name, status,"
    " created_at);"
    "DROP INDEX traces_created;"
    "CREATE INDEX traces_created ON traces(created_at, seq, environment,"
    " model_name, status, latency, token_count);";

/*
 * Version 8: a trace's body may be a BLOB, its JSON compressed with LZ4
 * (trace_body.h), and new databases use 8 KiB pages, not 16. Nothing is
 * rewritten: TEXT bodies stay readable, and a page size is fixed when a
 * database is made. The version tells a build that cannot unpack bodies
 * to refuse the database rather than serve the compressed bytes.
 *
 * At ingest each trace dirties a leaf of each index whose key is not in
 * time order (trace_id, latency, tokens), and each such leaf is written
 * whole to the WAL: on a copy of a million-trace database, 8 KiB pages
 * took batch ingest from 4,330 to about 5,500 traces/s, but to 1.57 x the
 * JSON against 1.44, as 2 KB rows pack worse into 8 KiB pages.
 * Compressed bodies, 1/1.3 to 1/1.6 of the bytes, pay for it: from empty
 * to a million traces, batch ingest went 20-27 % faster than with 16 KiB
 * pages and text bodies, and the database is 1.15 x the JSON, flagged
 * traces' bodies left as text (store_write.c; BENCHMARKS.md).
 */
static const char schema_v8[] = "";

/* migrations[v] takes a database from version v to v + 1. */
static const char *const migrations[TLLM_SCHEMA_VERSION] = {
    schema_v1, schema_v2, schema_v3, schema_v4, schema_v5, schema_v6,
    schema_v7, schema_v8
};

/* ---- latency buckets --------------------------------------------------- */

/* A positive double's bits, read as an integer, order like the values; the
 * exponent and the top 7 mantissa bits make 128 buckets per doubling
 * (each about 0.5 % wide), so a bucket near the p95 holds about a
 * thousandth of the traces. */
#define BUCKET_SHIFT 45

int64_t tllm__latency_bucket(double ms)
{
    uint64_t bits;

    if (!(ms > 0)) {
        return 0;    /* 0, -0 and (never stored) NaN */
    }
    memcpy(&bits, &ms, sizeof(bits));
    return (int64_t)(bits >> BUCKET_SHIFT);
}

double tllm__bucket_floor(int64_t bucket)
{
    uint64_t bits = (uint64_t)bucket << BUCKET_SHIFT;
    double ms;

    memcpy(&ms, &bits, sizeof(ms));
    return ms;
}

/* tllm_latency_bucket(latency) for the version 2 migration's UPDATE. */
static void latency_bucket_fn(sqlite3_context *ctx, int argc,
                              sqlite3_value **argv)
{
    (void)argc;
    sqlite3_result_int64(ctx, tllm__latency_bucket(
                             sqlite3_value_double(argv[0])));
}

/* ---- fixed statements ------------------------------------------------- */

/* The analytics scope on the rollup tables: the project and the
 * environment, '' for any (schema_v5: each scope has rows of its own). */
#define SCOPE "project_id = ?1 AND environment = ?2"

static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PING] = "SELECT 1",
    [ST_PROJECT_INSERT] =
        "INSERT INTO projects (project_id, name, description, created_at)"
        " VALUES (?1, ?2, ?3, ?4)",
    [ST_PROJECT_LIST] =
        "SELECT project_id, name, description, created_at FROM projects"
        " ORDER BY created_at, rowid",
    [ST_PROJECT_EXISTS] = "SELECT 1 FROM projects WHERE project_id = ?1",
    /* Inserts nothing (no error) when the project does not exist, so
     * "not found" does not depend on foreign_keys being on. */
    [ST_KEY_INSERT] =
        "INSERT INTO api_keys (key_id, key_hash, hint, project_id,"
        " environment, created_at, last_used_at, revoked)"
        " SELECT ?1, ?2, ?3, ?4, ?5, ?6, NULL, 0"
        " WHERE EXISTS (SELECT 1 FROM projects WHERE project_id = ?4)",
    [ST_KEY_LIST_ALL] =
        "SELECT key_id, project_id, environment, hint, key_hash,"
        " created_at, last_used_at, revoked FROM api_keys"
        " ORDER BY created_at DESC, rowid DESC",
    [ST_KEY_LIST_PROJECT] =
        "SELECT key_id, project_id, environment, hint, key_hash,"
        " created_at, last_used_at, revoked FROM api_keys"
        " WHERE project_id = ?1 ORDER BY created_at DESC, rowid DESC",
    [ST_KEY_REVOKE] = "UPDATE api_keys SET revoked = 1 WHERE key_id = ?1",
    [ST_KEY_FIND] =
        "SELECT key_id, project_id, environment, hint, key_hash,"
        " created_at, last_used_at, revoked FROM api_keys"
        " WHERE key_hash = ?1",
    [ST_KEY_TOUCH] =
        "UPDATE api_keys SET last_used_at = ?2 WHERE key_id = ?1"
        " AND (last_used_at IS NULL OR last_used_at < ?3)",
    /* The third column: the row is not in the rollups yet (this
     * transaction inserted it; rollup_sql.h). */
    [ST_TRACE_LOOKUP] =
        "SELECT seq, project_id, " TLLM_ROLLUP_PENDING
        " FROM traces WHERE trace_id = ?1",
    [ST_TRACE_DELETE] = "DELETE FROM traces WHERE seq = ?1",
    [ST_TRACE_INSERT] =
        "INSERT INTO traces (trace_id, project_id, environment, model_name,"
        " status, latency, token_count, retry_count, slow, created_at, body,"
        " lat_bucket)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [ST_TRACE_GET] = "SELECT body FROM traces WHERE trace_id = ?1",
    [ST_ROLLUP_PENDING_ROWS] = TLLM_SQL_ROLLUP_PENDING_ROWS,
    [ST_ROLLUP_MARK_MOVE] = TLLM_SQL_ROLLUP_MARK_MOVE,
    [ST_ROLLUP_TOTAL_UPSERT] = TLLM_SQL_ROLLUP_TOTAL_UPSERT,
    [ST_ROLLUP_HOUR_UPSERT] = TLLM_SQL_ROLLUP_HOUR_UPSERT,
    [ST_ROLLUP_PROJECT_UPSERT] = TLLM_SQL_ROLLUP_PROJECT_UPSERT,
    [ST_ROLLUP_LATENCY_UPSERT] = TLLM_SQL_ROLLUP_LATENCY_UPSERT,
    [ST_ROLLUP_COARSE_UPSERT] = TLLM_SQL_ROLLUP_COARSE_UPSERT,
    [ST_ROLLUP_MARK_GET] = TLLM_SQL_ROLLUP_MARK_GET,
    /* The scope's groups by model and status: the summary and two of
     * the breakdowns are summed from these rows in one pass
     * (store_traces.c). */
    [ST_ROLLUP_SCOPE] =
        "SELECT model_name, status, n, retries, slow, tokens, latency_sum"
        " FROM rollup_total WHERE " SCOPE,
    /* The project breakdown of a scope without a project ('' = every
     * environment). */
    [ST_PROJECT_COUNTS] =
        "SELECT project_id, n FROM rollup_project"
        " WHERE environment = ?1 AND n > 0",
    /* GET /failures' three totals, summed by SQLite: one row to read,
     * not every group of the scope. */
    [ST_FLAGGED_TOTALS] =
        "SELECT SUM(CASE WHEN status = 'failed' THEN n ELSE 0 END),"
        " SUM(retried), SUM(slow) FROM rollup_total WHERE " SCOPE,
    /* The scope's last 24 hours: a row each at most. */
    [ST_HOURS] =
        "SELECT hour, n, tokens, latency_sum FROM rollup_hour"
        " WHERE " SCOPE " AND hour >= ?3 AND hour <= ?4",
    /* One scope's coarse latency histogram from the top, then the fine
     * buckets [?3, ?4) of the coarse one that holds the rank. */
    [ST_LATENCY_COARSE] =
        "SELECT bucket, n FROM rollup_latency_coarse"
        " WHERE " SCOPE " AND n > 0 ORDER BY bucket DESC",
    [ST_LATENCY_BUCKETS] =
        "SELECT bucket, n FROM rollup_latency"
        " WHERE " SCOPE " AND bucket >= ?3 AND bucket < ?4 AND n > 0"
        " ORDER BY bucket DESC",
    /* The event log: seq is the rowid, so this walks the table in order
     * from the cursor and tests the optional filters per row. */
    [ST_EVENTS_AFTER] =
        "SELECT seq, project_id, environment, body FROM traces"
        " WHERE seq > ?1 AND (?2 IS NULL OR project_id = ?2)"
        " AND (?3 IS NULL OR environment = ?3) ORDER BY seq LIMIT ?4",
    [ST_LAST_SEQ] = "SELECT COALESCE(MAX(seq), 0) FROM traces"
};

/* ---- connection ------------------------------------------------------- */

int tllm__fail(tllm_db *db, const char *what)
{
    snprintf(db->errmsg, sizeof(db->errmsg), "%s: %s (%d)", what,
             sqlite3_errmsg(db->sq), sqlite3_extended_errcode(db->sq));
    return TLLM_ERROR;
}

const char *tllm_db_errmsg(tllm_db *db)
{
    return db->errmsg[0] ? db->errmsg : "no error";
}

void tllm_db_copy_error(tllm_db *to, const tllm_db *from)
{
    if (to != from) {
        memcpy(to->errmsg, from->errmsg, sizeof(to->errmsg));
    }
}

const char *tllm_db_file(const tllm_db *db)
{
    const char *file = sqlite3_db_filename(db->sq, "main");

    return file ? file : "";
}

sqlite3_stmt *tllm__prepare(tllm_db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v3(db->sq, sql, -1, SQLITE_PREPARE_PERSISTENT,
                           &st, NULL) != SQLITE_OK) {
        tllm__fail(db, "prepare");
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

sqlite3_stmt *tllm__stmt(tllm_db *db, tllm_stmt_id id)
{
    if (!db->stmt[id]) {
        db->stmt[id] = tllm__prepare(db, stmt_sql[id]);
    }
    return db->stmt[id];
}

int tllm__scalar(tllm_db *db, sqlite3_stmt *st, int *found, int64_t *i,
                 double *d)
{
    int rc;

    if (!st) {
        return TLLM_ERROR;
    }
    rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        if (i) {
            *i = sqlite3_column_int64(st, 0);
        }
        if (d) {
            *d = sqlite3_column_double(st, 0);
        }
    }
    else if (rc != SQLITE_DONE) {
        tllm__fail(db, "query a value");
    }
    tllm__release(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

void tllm__release(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

const char *tllm__col_text(apr_pool_t *p, sqlite3_stmt *st, int i,
                           size_t *len)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);

    if (len) {
        *len = s ? n : 0;
    }
    return s ? apr_pstrmemdup(p, (const char *)s, n) : NULL;
}

const char *tllm__col_body(tllm_db *db, apr_pool_t *p, sqlite3_stmt *st,
                           int i, size_t *len)
{
    const char *json;
    const void *bytes;
    size_t n;

    switch (sqlite3_column_type(st, i)) {
    case SQLITE_BLOB:
        break;
    case SQLITE_TEXT:
        /* The text's bytes as stored (the database is UTF-8), copied once.
         * sqlite3_column_text would first copy it to add the NUL that
         * the copy below adds anyway: a second copy of every body that
         * /failures sends, 180 KB a request. */
        bytes = sqlite3_column_blob(st, i);
        n = (size_t)sqlite3_column_bytes(st, i);
        if (len) {
            *len = n;
        }
        return apr_pstrmemdup(p, bytes ? bytes : "", n);
    default:
        return tllm__col_text(p, st, i, len);
    }
    json = tllm_body_unpack(p, sqlite3_column_blob(st, i),
                            (size_t)sqlite3_column_bytes(st, i), len);
    if (!json) {
        snprintf(db->errmsg, sizeof(db->errmsg),
                 "a stored trace body does not unpack (LZ4)");
    }
    return json;
}

int tllm__bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC)
             : sqlite3_bind_null(st, i);
}

/* Step a statement that returns no rows (BEGIN, COMMIT, INSERT ...). */
static int run(tllm_db *db, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    int rv = TLLM_OK;

    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        int ext = sqlite3_extended_errcode(db->sq);

        /* Only a duplicate is a conflict; NOT NULL and the like are bugs
         * and go to the error log like any other failure. */
        rv = ext == SQLITE_CONSTRAINT_UNIQUE
             || ext == SQLITE_CONSTRAINT_PRIMARYKEY
             ? TLLM_CONFLICT : TLLM_ERROR;
        tllm__fail(db, what);
    }
    tllm__release(st);
    return rv;
}

static int run_fixed(tllm_db *db, tllm_stmt_id id, const char *what)
{
    sqlite3_stmt *st = tllm__stmt(db, id);

    return st ? run(db, st, what) : TLLM_ERROR;
}

/* SQLite opens mod_dbd's connections serialized, so every
 * sqlite3_bind_* and sqlite3_column_* call locks and unlocks the
 * connection's mutex: two atomic operations, thousands of times in one
 * analytics request or one batch (perf: a fifth of /analytics' samples).
 * The connection is this thread's alone while the request holds it (mod_dbd
 * hands it out from its reslist), so a transaction takes the mutex once;
 * the calls inside it re-enter a recursive mutex this thread owns, which
 * needs no atomic operation. A connection opened without a mutex has
 * none (sqlite3_db_mutex gives NULL), and entering NULL does nothing. */
static void hold_mutex(tllm_db *db)
{
    sqlite3_mutex_enter(sqlite3_db_mutex(db->sq));
    db->holds_mutex = 1;
}

static void free_mutex(tllm_db *db)
{
    if (db->holds_mutex) {
        db->holds_mutex = 0;
        sqlite3_mutex_leave(sqlite3_db_mutex(db->sq));
    }
}

int tllm__begin(tllm_db *db, int write)
{
    hold_mutex(db);
    if (run_fixed(db, write ? ST_BEGIN_WRITE : ST_BEGIN_READ, "begin")
        != TLLM_OK) {
        free_mutex(db);
        return TLLM_ERROR;
    }
    return TLLM_OK;
}

int tllm__commit(tllm_db *db)
{
    if (run_fixed(db, ST_COMMIT, "commit") != TLLM_OK) {
        tllm__rollback(db);
        return TLLM_ERROR;
    }
    free_mutex(db);
    return TLLM_OK;
}

void tllm__rollback(tllm_db *db)
{
    sqlite3_stmt *st;

    /* Some errors end the transaction themselves; and a failed ROLLBACK
     * must not overwrite the message of the failure that caused it. */
    if (!sqlite3_get_autocommit(db->sq)) {
        st = tllm__stmt(db, ST_ROLLBACK);
        if (st) {
            sqlite3_step(st);
            tllm__release(st);
        }
    }
    free_mutex(db);
}

int tllm__finalize_statements(tllm_db *db)
{
    apr_hash_index_t *hi;
    int i, n = 0;

    for (i = 0; i < ST__COUNT; i++) {
        n += db->stmt[i] != NULL;
        sqlite3_finalize(db->stmt[i]);
        db->stmt[i] = NULL;
    }
    for (hi = apr_hash_first(NULL, db->built); hi; hi = apr_hash_next(hi)) {
        void *val;
        sqlite3_stmt **st;

        apr_hash_this(hi, NULL, NULL, &val);
        st = val;
        n += *st != NULL;
        sqlite3_finalize(*st);
        *st = NULL;
    }
    return n;
}

/* Runs before mod_dbd's own close cleanup on the same pool (cleanups run
 * in reverse order of registration), so sqlite3_close finds no open
 * statements. */
static apr_status_t db_cleanup(void *data)
{
    tllm_db *db = data;

    tllm__idle_unregister(db);
    tllm__finalize_statements(db);
    tllm_rollup_delta_clear(&db->delta);
    return APR_SUCCESS;
}

/* A PRAGMA that answers one row; its first column must be want
 * (case-insensitively), or want is NULL (answer not checked). */
static int pragma(sqlite3 *sq, const char *sql, const char *want,
                  const char *also)
{
    sqlite3_stmt *st = NULL;
    int ok;

    if (sqlite3_prepare_v2(sq, sql, -1, &st, NULL) != SQLITE_OK) {
        return 0;
    }
    switch (sqlite3_step(st)) {
    case SQLITE_DONE:
        ok = want == NULL;
        break;
    case SQLITE_ROW: {
        const char *got = (const char *)sqlite3_column_text(st, 0);

        ok = want == NULL
             || (got && (strcasecmp(got, want) == 0
                         || (also && strcasecmp(got, also) == 0)));
        break;
    }
    default:
        ok = 0;
    }
    sqlite3_finalize(st);
    return ok;
}

/* A PRAGMA that answers one integer: 1 with it in *value, else 0 (the
 * error stays on sq). Run once per connection or process: not cached. */
static int pragma_int(sqlite3 *sq, const char *sql, int *value)
{
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_prepare_v2(sq, sql, -1, &st, NULL) == SQLITE_OK
             && sqlite3_step(st) == SQLITE_ROW;

    if (ok) {
        *value = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    return ok;
}

static int connection_setup(sqlite3 *sq)
{
    /* First, so that switching to WAL waits for other writers. An
     * in-memory database (tests) answers "memory": there is no WAL. */
    return sqlite3_busy_timeout(sq, TLLM_BUSY_TIMEOUT_MS) == SQLITE_OK
           /* Takes effect only while the file is still empty: before the
            * switch to WAL and the schema. */
           && pragma(sq, "PRAGMA page_size=" TLLM_PAGE_SIZE, NULL, NULL)
           && pragma(sq, "PRAGMA journal_mode=WAL", "wal", "memory")
           && pragma(sq, "PRAGMA synchronous=NORMAL", NULL, NULL)
           && pragma(sq, "PRAGMA synchronous", "1", NULL)
           /* A statement that fires triggers or writes several rows
            * (the rollups) keeps a statement journal, which outgrows its
            * in-memory part at once with 16 KiB pages: on disk that was a
            * temporary file created, written and unlinked for every
            * trace (when triggers kept the rollups). */
           && pragma(sq, "PRAGMA temp_store=MEMORY", NULL, NULL)
           && pragma(sq, "PRAGMA foreign_keys=ON", NULL, NULL)
           && pragma(sq, "PRAGMA foreign_keys", "1", NULL);
}

/* The WAL's bound for this database, in pages (TLLM_CHECKPOINT_*). */
static sqlite3_int64 checkpoint_bound(tllm_db *db, const char *schema)
{
    sqlite3_file *file = NULL;
    sqlite3_int64 db_bytes = 0, bound, max_pages;

    if (db->page_size <= 0
        || sqlite3_file_control(db->sq, schema, SQLITE_FCNTL_FILE_POINTER,
                                &file) != SQLITE_OK
        || !file || !file->pMethods
        || file->pMethods->xFileSize(file, &db_bytes) != SQLITE_OK) {
        return TLLM_CHECKPOINT_MIN_PAGES;
    }
    bound = db_bytes / TLLM_CHECKPOINT_DB_FRACTION / db->page_size;
    max_pages = TLLM_CHECKPOINT_MAX_BYTES / db->page_size;
    if (bound < TLLM_CHECKPOINT_MIN_PAGES) {
        return TLLM_CHECKPOINT_MIN_PAGES;
    }
    return bound < max_pages ? bound : max_pages;
}

/* The WAL length at which this process next copies back early; 0 = at
 * half the bound. Per process: two children may each copy once. */
static volatile apr_uint32_t early_at;

/* The WAL length below which a restart that timed out is not tried
 * again; 0 = try at the bound. Per process, as early_at. */
static volatile apr_uint32_t restart_retry_at;

/* At the bound: copy the WAL back and start it over. A passive
 * checkpoint copies only the frames no reader still needs, and the WAL
 * starts over only once all of it is copied; with steady reads some
 * reader has always begun before the last commit, so under a dashboard's
 * load the WAL grew without end (7.5 GB beside a 10 GB database after the
 * soaks, and the WAL's index, which every process maps, by 3 MB a
 * process). RESTART waits for those readers, while new requests are held
 * back (wal_drain.h); readers that begin meanwhile read the database file
 * alone, and the WAL starts over at once. The wait is bounded, as the
 * writers queue behind it: readers held longer leave the copy made so
 * far (a passive one, in effect) and the next try a 32nd of the bound
 * later, not at every commit. */
static void checkpoint_at_bound(tllm_db *db, sqlite3 *sq,
                                const char *schema, int pages,
                                sqlite3_int64 bound)
{
    const apr_interval_time_t budget =
        apr_time_from_msec(TLLM_CHECKPOINT_RESTART_WAIT_MS);
    apr_time_t started, deadline;
    apr_interval_time_t left;
    int rc;

    if ((apr_uint32_t)pages < apr_atomic_read32(&restart_retry_at)) {
        return;
    }
    started = apr_time_now();
    deadline = started + budget;
    tllm_wal_drain_open(budget);
    for (;;) {
        left = deadline - apr_time_now();
        if (left > apr_time_from_msec(TLLM_CHECKPOINT_ATTEMPT_MS)) {
            left = apr_time_from_msec(TLLM_CHECKPOINT_ATTEMPT_MS);
        }
        sqlite3_busy_timeout(sq, left > 1000 ? (int)(left / 1000) : 1);
        rc = sqlite3_wal_checkpoint_v2(sq, schema, SQLITE_CHECKPOINT_RESTART,
                                       NULL, NULL);
        if (rc != SQLITE_BUSY || apr_time_now() >= deadline) {
            break;
        }
        /* Another checkpoint (an early one, outside the write lock) makes
         * this one return at once, without the busy handler: no spin. */
        apr_sleep(apr_time_from_msec(1));
    }
    db->restart.held = tllm_wal_drain_close();
    sqlite3_busy_timeout(sq, TLLM_BUSY_TIMEOUT_MS);
    apr_atomic_set32(&restart_retry_at, rc == SQLITE_OK ? 0 : (apr_uint32_t)(
        pages + bound / TLLM_CHECKPOINT_EARLY_STEPS));
    db->restart.pages = pages;
    db->restart.started_over = rc == SQLITE_OK;
    db->restart.took = apr_time_now() - started;
}

int tllm_store_wal_restart_report(tllm_db *db, tllm_wal_restart *out)
{
    *out = db->restart;
    db->restart.pages = 0;
    return out->pages > 0;
}

/* sqlite3_wal_hook: after each commit, with the pages now in the WAL.
 * Replaces SQLite's fixed wal_autocheckpoint (TLLM_CHECKPOINT_*). */
static int wal_committed(void *data, sqlite3 *sq, const char *schema,
                         int pages)
{
    tllm_db *db = data;
    sqlite3_int64 bound;

    if (pages < TLLM_CHECKPOINT_MIN_PAGES / 2) {
        apr_atomic_set32(&early_at, 0);     /* the WAL started over */
        apr_atomic_set32(&restart_retry_at, 0);
        return SQLITE_OK;
    }
    bound = checkpoint_bound(db, schema);
    if (pages >= bound) {
        checkpoint_at_bound(db, sq, schema, pages, bound);
        apr_atomic_set32(&early_at, 0);
    }
    else if (bound <= TLLM_CHECKPOINT_MIN_PAGES || pages < bound / 2) {
        apr_atomic_set32(&early_at, 0);     /* small, or not yet half */
    }
    else if ((apr_uint32_t)pages >= apr_atomic_read32(&early_at)) {
        apr_atomic_set32(&early_at, (apr_uint32_t)(
            pages + bound / TLLM_CHECKPOINT_EARLY_STEPS));
        db->checkpoint_early = 1;
    }
    return SQLITE_OK;
}

int tllm_store_checkpoint_early(tllm_db *db, int *wal_pages, int *copied)
{
    if (!db->checkpoint_early) {
        return 0;
    }
    db->checkpoint_early = 0;
    *wal_pages = *copied = 0;
    return sqlite3_wal_checkpoint_v2(db->sq, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                     wal_pages, copied) == SQLITE_OK;
}

tllm_db *tllm_db_attach(apr_pool_t *conn_pool, sqlite3 *sq)
{
    void *data = NULL;
    tllm_db *db;

    apr_pool_userdata_get(&data, TLLM_DB_KEY, conn_pool);
    db = data;
    if (db && db->sq == sq) {
        return db;
    }
    if (!sq || !connection_setup(sq)) {
        return NULL;
    }
    db = apr_pcalloc(conn_pool, sizeof(*db));
    db->sq = sq;
    db->pool = conn_pool;
    db->built = apr_hash_make(conn_pool);
    if (apr_pool_userdata_setn(db, TLLM_DB_KEY, db_cleanup, conn_pool)
        != APR_SUCCESS) {
        return NULL;
    }
    /* For sizing the WAL (wal_committed); stays 0 if unknown. */
    pragma_int(sq, "PRAGMA page_size", &db->page_size);
    sqlite3_wal_hook(sq, wal_committed, db);
    tllm__idle_register(db);
    return db;
}

/* ---- schema migration ------------------------------------------------- */

static int user_version(tllm_db *db, int *version)
{
    return pragma_int(db->sq, "PRAGMA user_version", version)
           ? TLLM_OK : tllm__fail(db, "read schema version");
}

static int migrate_locked(tllm_db *db, int target)
{
    int version = 0;
    char sql[64];

    if (user_version(db, &version) != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (version > target || version < 0) {
        snprintf(db->errmsg, sizeof(db->errmsg),
                 "database schema version %d is not one this build knows"
                 " (it migrates to %d)", version, target);
        return TLLM_ERROR;
    }
    if (sqlite3_create_function(db->sq, "tllm_latency_bucket", 1,
                                SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                latency_bucket_fn, NULL, NULL)
        != SQLITE_OK) {
        return tllm__fail(db, "register tllm_latency_bucket");
    }
    for (; version < target; version++) {
        if (sqlite3_exec(db->sq, migrations[version], NULL, NULL, NULL)
            != SQLITE_OK) {
            return tllm__fail(db, "migrate schema");
        }
    }
    /* Inside the transaction: the new version commits with the tables. */
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", target);
    if (sqlite3_exec(db->sq, sql, NULL, NULL, NULL) != SQLITE_OK) {
        return tllm__fail(db, "write schema version");
    }
    return TLLM_OK;
}

int tllm_store_migrate(tllm_db *db)
{
    return tllm__migrate_to(db, TLLM_SCHEMA_VERSION);
}

int tllm__migrate_to(tllm_db *db, int target)
{
    if (target < 0 || target > TLLM_SCHEMA_VERSION) {
        snprintf(db->errmsg, sizeof(db->errmsg), "no schema version %d",
                 target);
        return TLLM_ERROR;
    }
    /* BEGIN IMMEDIATE takes the write lock before reading the version, so
     * of several processes starting at once one migrates and the others
     * then find the current version. */
    if (tllm__begin(db, 1) != TLLM_OK) {
        return TLLM_ERROR;
    }
    if (migrate_locked(db, target) != TLLM_OK) {
        tllm__rollback(db);
        return TLLM_ERROR;
    }
    return tllm__commit(db);
}

int tllm_store_ping(tllm_db *db)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_PING);
    int rc;

    if (!st) {
        return TLLM_ERROR;
    }
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        tllm__fail(db, "ping");
    }
    tllm__release(st);
    return rc == SQLITE_ROW ? TLLM_OK : TLLM_ERROR;
}

/* ---- projects --------------------------------------------------------- */

static int key_insert(tllm_db *db, const tllm_key *key)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_KEY_INSERT);
    int rv;

    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, key->key_id);
    sqlite3_bind_blob(st, 2, key->hash, sizeof(key->hash), SQLITE_STATIC);
    tllm__bind_text(st, 3, key->hint);
    tllm__bind_text(st, 4, key->project_id);
    tllm__bind_text(st, 5, key->environment);
    sqlite3_bind_int64(st, 6, key->created_at);
    rv = run(db, st, "insert key");
    if (rv == TLLM_OK && sqlite3_changes(db->sq) == 0) {
        rv = TLLM_NOTFOUND;
    }
    return rv;
}

static int project_insert(tllm_db *db, const tllm_project *project)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_PROJECT_INSERT);

    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, project->project_id);
    tllm__bind_text(st, 2, project->name);
    tllm__bind_text(st, 3, project->description ? project->description
                                                : "");
    sqlite3_bind_int64(st, 4, project->created_at);
    return run(db, st, "insert project");
}

int tllm_store_project_create(tllm_db *db, const tllm_project *project,
                              const tllm_key *key)
{
    int rv;

    if (tllm__begin(db, 1) != TLLM_OK) {
        return TLLM_ERROR;
    }
    rv = project_insert(db, project);
    if (rv == TLLM_OK) {
        rv = key_insert(db, key);
        /* A key collision (random 32 characters) is a failure, not
         * "project exists"; and the project is there, so never NOTFOUND. */
        if (rv != TLLM_OK) {
            rv = TLLM_ERROR;
        }
    }
    if (rv != TLLM_OK) {
        tllm__rollback(db);
        return rv;
    }
    return tllm__commit(db);
}

int tllm_store_projects(tllm_db *db, apr_pool_t *p, apr_array_header_t **out)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_PROJECT_LIST);
    apr_array_header_t *arr = apr_array_make(p, 8, sizeof(tllm_project));
    int rc;

    if (!st) {
        return TLLM_ERROR;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tllm_project *pr = apr_array_push(arr);

        pr->project_id = tllm__col_text(p, st, 0, NULL);
        pr->name = tllm__col_text(p, st, 1, NULL);
        pr->description = tllm__col_text(p, st, 2, NULL);
        if (!pr->description) {
            pr->description = "";
        }
        pr->created_at = sqlite3_column_int64(st, 3);
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "list projects");
    }
    tllm__release(st);
    *out = arr;
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

int tllm_store_project_exists(tllm_db *db, const char *project_id)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_PROJECT_EXISTS);
    int rc;

    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, project_id);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        tllm__fail(db, "find project");
    }
    tllm__release(st);
    return rc == SQLITE_ROW ? TLLM_OK
           : rc == SQLITE_DONE ? TLLM_NOTFOUND : TLLM_ERROR;
}

/* ---- keys ------------------------------------------------------------- */

int tllm_store_key_create(tllm_db *db, const tllm_key *key)
{
    /* TLLM_CONFLICT here is a key_id or hash collision. */
    return key_insert(db, key);
}

static void key_from_row(apr_pool_t *p, sqlite3_stmt *st, tllm_key *k)
{
    const void *hash = sqlite3_column_blob(st, 4);

    memset(k, 0, sizeof(*k));
    k->key_id = tllm__col_text(p, st, 0, NULL);
    k->project_id = tllm__col_text(p, st, 1, NULL);
    k->environment = tllm__col_text(p, st, 2, NULL);
    k->hint = tllm__col_text(p, st, 3, NULL);
    if (hash && sqlite3_column_bytes(st, 4) == (int)sizeof(k->hash)) {
        memcpy(k->hash, hash, sizeof(k->hash));
    }
    k->created_at = sqlite3_column_int64(st, 5);
    k->last_used_at = sqlite3_column_type(st, 6) == SQLITE_NULL
                      ? -1 : sqlite3_column_int64(st, 6);
    k->revoked = sqlite3_column_int(st, 7) != 0;
}

int tllm_store_keys(tllm_db *db, apr_pool_t *p, const char *project_id,
                    apr_array_header_t **out)
{
    sqlite3_stmt *st = tllm__stmt(db, project_id ? ST_KEY_LIST_PROJECT
                                                 : ST_KEY_LIST_ALL);
    apr_array_header_t *arr = apr_array_make(p, 8, sizeof(tllm_key));
    int rc;

    if (!st) {
        return TLLM_ERROR;
    }
    if (project_id) {
        tllm__bind_text(st, 1, project_id);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        key_from_row(p, st, apr_array_push(arr));
    }
    if (rc != SQLITE_DONE) {
        tllm__fail(db, "list keys");
    }
    tllm__release(st);
    *out = arr;
    return rc == SQLITE_DONE ? TLLM_OK : TLLM_ERROR;
}

int tllm_store_key_revoke(tllm_db *db, const char *key_id)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_KEY_REVOKE);
    int rv;

    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, key_id);
    rv = run(db, st, "revoke key");
    if (rv == TLLM_OK && sqlite3_changes(db->sq) == 0) {
        rv = TLLM_NOTFOUND;
    }
    /* Committed (autocommit): from here on no process may authenticate
     * with a copy of the key read before. */
    if (rv == TLLM_OK) {
        tllm_key_cache_invalidate(db);
    }
    return rv;
}

int tllm_store_key_find(tllm_db *db, apr_pool_t *p,
                        const unsigned char hash[32], tllm_key **out)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_KEY_FIND);
    int rc;

    if (!st) {
        return TLLM_ERROR;
    }
    sqlite3_bind_blob(st, 1, hash, 32, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = apr_palloc(p, sizeof(tllm_key));
        key_from_row(p, st, *out);
    }
    else if (rc != SQLITE_DONE) {
        tllm__fail(db, "find key");
    }
    tllm__release(st);
    return rc == SQLITE_ROW ? TLLM_OK
           : rc == SQLITE_DONE ? TLLM_NOTFOUND : TLLM_ERROR;
}

int tllm_store_key_touch_due(const tllm_key *key, int64_t now_us)
{
    return key->last_used_at < 0
           || key->last_used_at < now_us - TLLM_TOUCH_INTERVAL_US;
}

int tllm_store_key_touch(tllm_db *db, const char *key_id, int64_t now_us)
{
    sqlite3_stmt *st = tllm__stmt(db, ST_KEY_TOUCH);

    if (!st) {
        return TLLM_ERROR;
    }
    tllm__bind_text(st, 1, key_id);
    sqlite3_bind_int64(st, 2, now_us);
    sqlite3_bind_int64(st, 3, now_us - TLLM_TOUCH_INTERVAL_US);
    return run(db, st, "touch key") == TLLM_OK ? TLLM_OK : TLLM_ERROR;
}
