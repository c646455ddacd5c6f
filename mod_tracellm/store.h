/*
 * store.h - the only place that knows SQL. Every statement the module and
 * the event process run is here, prepared once per connection and cached
 * on it. Callers hand in a tllm_db (a wrapped native connection), never a
 * request_rec, so the module (through mod_dbd) and tllm-eventd (through its
 * own connection) share one implementation.
 *
 * Time is integer microseconds UTC. Every trace row has a monotonically
 * increasing seq (AUTOINCREMENT: never reused), the event log's cursor.
 */
#ifndef TLLM_STORE_H
#define TLLM_STORE_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include <sqlite3.h>
#include "trace.h"

/** Results of store calls. */
enum {
    TLLM_OK = 0,
    TLLM_NOTFOUND = 1,   /* no such row */
    TLLM_CONFLICT = 2,   /* unique constraint: already exists / not yours */
    TLLM_ERROR = -1      /* database failure: see tllm_db_errmsg() */
};

/** The schema version this build migrates to. */
#define TLLM_SCHEMA_VERSION 8

typedef struct tllm_db tllm_db;

/** The tllm_db for a native SQLite connection whose lifetime is conn_pool
 *  (for mod_dbd: the ap_dbd_t's pool). The first call for a pool sets the
 *  connection's PRAGMAs (WAL, synchronous=NORMAL, busy_timeout,
 *  foreign_keys) and registers a cleanup that finalizes the cached
 *  statements before the connection closes; later calls return the same
 *  object. Returns NULL if the PRAGMAs fail. */
tllm_db *tllm_db_attach(apr_pool_t *conn_pool, sqlite3 *sq);

/** The driver's message for the last failure on db (for the error log;
 *  never sent to clients). */
const char *tllm_db_errmsg(tllm_db *db);

/** Make to's last error message from's (a write done on another
 *  connection on to's behalf failed). */
void tllm_db_copy_error(tllm_db *to, const tllm_db *from);

/** The path of db's database file ("" for an in-memory one): connections
 *  with the same path write the same database. */
const char *tllm_db_file(const tllm_db *db);

/** child_init of an httpd child: from now on the connections attached in
 *  this process are listed for tllm_store_shrink_idle (store_idle.c). */
void tllm_store_child_init(apr_pool_t *pchild);

typedef struct {
    sqlite3_int64 bytes_before, bytes_after;  /* sqlite3_memory_used() */
    int shrunk;         /* connections whose page cache was handed back */
    int busy;           /* connections skipped: in use */
    int statements;     /* prepared statements finalized */
} tllm_shrink_report;

/** A request uses db until request_pool is cleared: tllm_store_shrink_idle
 *  leaves it alone meanwhile. Call before using its statements. */
void tllm_store_use(tllm_db *db, apr_pool_t *request_pool);

/** How many connections are listed: attached in this child and not yet
 *  closed. */
int tllm_store_attached(void);

/** Hand back the page cache and the prepared statements of every listed
 *  connection that no request uses and that is not in a transaction
 *  (sqlite3_db_release_memory); a busy one is skipped, not waited for.
 *  Safe from any thread. */
void tllm_store_shrink_idle(tllm_shrink_report *report);

/** Once a write transaction has ended and the write lock is released:
 *  if its commit asked for it, copy the WAL back into the database now
 *  (a passive checkpoint) while other writers go on, so that the
 *  checkpoint under the lock has less to copy (store.c says when).
 *  Returns 1 if it ran, with the WAL's pages and how many of them are now
 *  copied; 0 if not asked for, or another checkpoint was in the way. */
int tllm_store_checkpoint_early(tllm_db *db, int *wal_pages, int *copied);

/** How the last try to start the WAL over at its bound went (store.c,
 *  checkpoint_at_bound). */
typedef struct {
    int pages;                  /* the WAL's length, in pages */
    int started_over;           /* 0: readers still read at the deadline */
    unsigned held;              /* requests held back meanwhile */
    apr_interval_time_t took;
} tllm_wal_restart;

/** After a write: 1 if its commit tried to start the WAL over, with how
 *  it went; 0 if it did not try. Either way the record is cleared. */
int tllm_store_wal_restart_report(tllm_db *db, tllm_wal_restart *out);

/** Create or migrate the schema to TLLM_SCHEMA_VERSION (idempotent, safe
 *  to run from several processes at once: BEGIN IMMEDIATE). */
int tllm_store_migrate(tllm_db *db);

/** A cheap round trip that proves the database answers. */
int tllm_store_ping(tllm_db *db);

/* ---- projects and keys ------------------------------------------------ */

typedef struct {
    const char *project_id;
    const char *name;
    const char *description;
    int64_t created_at;
} tllm_project;

typedef struct {
    const char *key_id;
    const char *project_id;
    const char *environment;
    const char *hint;            /* secret's first 2 + last 4 characters */
    unsigned char hash[32];      /* SHA-256 of the full key text */
    int64_t created_at;
    int64_t last_used_at;        /* -1 = never used */
    int revoked;
} tllm_key;

/** Insert a project and its first key in one transaction. TLLM_CONFLICT if
 *  a project with the same project_id or the same name exists. */
int tllm_store_project_create(tllm_db *db, const tllm_project *project,
                              const tllm_key *key);

/** Every project, oldest first (created_at, then insertion order), as an
 *  array of tllm_project. */
int tllm_store_projects(tllm_db *db, apr_pool_t *p, apr_array_header_t **out);

/** TLLM_OK if the project exists, else TLLM_NOTFOUND. */
int tllm_store_project_exists(tllm_db *db, const char *project_id);

/** Insert one more key. TLLM_NOTFOUND if its project does not exist. */
int tllm_store_key_create(tllm_db *db, const tllm_key *key);

/** Keys, newest first (created_at, then insertion order), of one project
 *  or of all (project_id NULL), as an array of tllm_key. */
int tllm_store_keys(tllm_db *db, apr_pool_t *p, const char *project_id,
                    apr_array_header_t **out);

/** Mark a key revoked (again is fine), committed at once, and move the
 *  database's key generation so that no process's cached copy of it is
 *  used again (key_cache.h). TLLM_NOTFOUND if no such key_id. */
int tllm_store_key_revoke(tllm_db *db, const char *key_id);

/** The key with this SHA-256, revoked or not. TLLM_NOTFOUND if none. */
int tllm_store_key_find(tllm_db *db, apr_pool_t *p,
                        const unsigned char hash[32], tllm_key **out);

/** Record a use: sets last_used_at = now_us when it is NULL or older than
 *  60 seconds (so a busy key costs one write a minute). */
int tllm_store_key_touch(tllm_db *db, const char *key_id, int64_t now_us);

/** Whether key (as read by tllm_store_key_find) is due a touch at now_us:
 *  never used, or last used longer ago than the refresh interval. */
int tllm_store_key_touch_due(const tllm_key *key, int64_t now_us);

/* ---- traces ----------------------------------------------------------- */

/** A piece of stored JSON text (pool memory, NUL-terminated). */
typedef struct {
    const char *s;
    size_t len;
} tllm_text;

/** Store n traces in one transaction (BEGIN IMMEDIATE ... COMMIT). A trace
 *  whose trace_id exists in the same project replaces it: the old row
 *  goes, the new one gets a new seq. A trace_id that exists in another
 *  project is not stored and results[i] = TLLM_CONFLICT; otherwise
 *  results[i] = TLLM_OK. Returns TLLM_OK, or TLLM_ERROR with nothing
 *  stored (rolled back). If last_seq is not NULL it gets the highest seq
 *  written (0 if none). */
int tllm_store_traces_put(tllm_db *db, tllm_trace *const *traces, int n,
                          int *results, int64_t *last_seq);

/** Pack the bodies of traces the store keeps compressed (trace_body.h),
 *  into p, and mark every one decided (tllm_trace's body_decided). Done
 *  before the write lock is taken, by each request for its own traces, so
 *  that the serialized section only copies the bytes: compressing them
 *  there was 3 % of the children's CPU in batch ingest, about 6 % of the
 *  section's. Optional: a body not
 *  decided is packed as it is written. */
void tllm_store_pack_bodies(apr_pool_t *p, tllm_trace *const *traces, int n);

/** The same as several calls of tllm_store_traces_put, in one transaction
 *  the caller holds: tllm_store_write_begin, then traces_put_in for each
 *  part (each with its own results and last_seq; a TLLM_ERROR leaves the
 *  transaction to be rolled back), then tllm_store_write_commit (which
 *  adds the transaction's traces to the rollups, and rolls back if that
 *  or the commit fails) or tllm_store_write_rollback. One commit for
 *  many requests' traces: see group_commit.c. */
int tllm_store_write_begin(tllm_db *db);
int tllm_store_traces_put_in(tllm_db *db, tllm_trace *const *traces, int n,
                             int *results, int64_t *last_seq);
int tllm_store_write_commit(tllm_db *db);
void tllm_store_write_rollback(tllm_db *db);

/** The stored TraceSchema JSON of one trace. TLLM_NOTFOUND if none. */
int tllm_store_trace_get(tllm_db *db, apr_pool_t *p, const char *trace_id,
                         tllm_text *out);

/** GET /traces filters. Strings NULL = no filter; has_* = 0 = unbounded.
 *  Bounds are inclusive. status is lower case. */
typedef struct {
    const char *status;
    const char *model_name;
    const char *project_id;
    const char *environment;
    int has_latency_min, has_latency_max;
    double latency_min, latency_max;
    int has_token_min, has_token_max;
    int64_t token_min, token_max;
} tllm_trace_filter;

/** Matching traces, newest created_at first (ties: highest seq first), at
 *  most limit of them as an array of tllm_text; *total counts all matches. */
int tllm_store_traces_list(tllm_db *db, apr_pool_t *p,
                           const tllm_trace_filter *f, int limit,
                           int64_t *total, apr_array_header_t **items);

/** A key and how many traces have it. */
typedef struct {
    const char *key;
    int64_t count;
} tllm_count;

/** Everything GET /analytics reports, unrounded, exact over all traces
 *  matching the scope. */
typedef struct {
    int64_t total_traces;
    int64_t success_traces;
    int64_t failed_traces;
    int64_t warning_traces;
    int64_t retries;             /* sum of retry_count */
    int64_t slow_requests;
    int64_t total_tokens;
    double average_latency;      /* 0 when nothing matches */
    double p95_latency;          /* nearest rank; 0 when nothing matches */
    /* 24 hourly UTC buckets, oldest first; bucket 23 holds the hour that
     * contains now_us, bucket 0 starts 23 hours before it. */
    int64_t hour_start[24];      /* us, aligned to the hour */
    int64_t hour_traces[24];
    int64_t hour_tokens[24];
    double hour_latency[24];     /* mean, 0 when empty */
    apr_array_header_t *by_status;   /* tllm_count: count desc, key asc */
    apr_array_header_t *by_model;
    apr_array_header_t *by_project;  /* keyed on project_id */
    apr_array_header_t *recent_failures; /* tllm_text, newest first, <= 5:
                                          * failed, warning, slow or retried */
} tllm_analytics;

/** Compute analytics over traces of project_id and environment (each NULL
 *  = any). now_us places the 24 hourly buckets. */
int tllm_store_analytics(tllm_db *db, apr_pool_t *p, const char *project_id,
                         const char *environment, int64_t now_us,
                         tllm_analytics *out);

/** GET /failures: three lists (tllm_text, newest first, at most limit
 *  each) and each category's count over all matching traces. */
typedef struct {
    apr_array_header_t *failed;      /* status failed */
    apr_array_header_t *retried;     /* retry_count > 0 */
    apr_array_header_t *slow;        /* slow_request true */
    int64_t failed_total, retried_total, slow_total;
} tllm_failures;

int tllm_store_failures(tllm_db *db, apr_pool_t *p, const char *project_id,
                        const char *environment, int limit,
                        tllm_failures *out);

/* ---- the event log ---------------------------------------------------- */

/** One stored trace as an event: its seq, scope and TraceSchema JSON. */
typedef struct {
    int64_t seq;
    const char *project_id;
    const char *environment;
    tllm_text trace;
} tllm_event;

/** Traces stored after seq since, in seq order, at most limit of them, as
 *  an array of tllm_event; project_id / environment NULL = any. A replaced
 *  trace appears once, at its newest seq. */
int tllm_store_events_after(tllm_db *db, apr_pool_t *p, int64_t since,
                            const char *project_id, const char *environment,
                            int limit, apr_array_header_t **out);

/** The highest seq written so far (0 for an empty log). */
int tllm_store_last_seq(tllm_db *db, int64_t *seq);

#endif
