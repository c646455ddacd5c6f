/*
 * rollup_delta.h - what one write transaction adds to the rollups, summed
 * in C as its rows are inserted and written at its end with one upsert
 * per group (rollup_sql.h: TLLM_SQL_ROLLUP_*_UPSERT). Plain C and SQLite
 * only: bench/raw_insert.c builds the very same code.
 *
 * The SQL this replaced (INSERT ... SELECT ... GROUP BY from the rows past
 * rollup_mark, one statement per rollup) scanned the new rows once per
 * scope and put them through a temporary b-tree to group them; summing
 * as they go in spares both. Raw SQLite, 20,000 rows of the bench's mix
 * committed every 200 (about 1,100 groups a transaction): 2.1-2.4 ms of
 * rollups per transaction against 4.3-5.4 with that SQL (2.3-3.0
 * for schema version 4's fewer rollups); one row a transaction: 37 us
 * against 98 (54).
 */
#ifndef TLLM_ROLLUP_DELTA_H
#define TLLM_ROLLUP_DELTA_H

#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>

/* The upserts a flush runs, in this order. */
enum {
    TLLM_ROLLUP_TOTAL, TLLM_ROLLUP_HOUR, TLLM_ROLLUP_PROJECT,
    TLLM_ROLLUP_LATENCY, TLLM_ROLLUP_COARSE,
    TLLM_ROLLUP__COUNT
};

/* What the rollups count of one traces row (its columns). */
typedef struct {
    const char *project_id, *environment, *model_name, *status;
    double latency;
    int64_t token_count, retry_count, slow, created_at, lat_bucket;
} tllm_rollup_row;

typedef struct {
    struct tllm_rollup_group *groups;   /* in order of first use */
    size_t ngroups, groups_cap;
    uint32_t *index;                    /* open addressing: group + 1 */
    size_t index_cap;                   /* a power of two, or 0 */
    char *keys;                         /* the groups' keys, end to end */
    size_t keys_len, keys_cap;
    size_t key_at;                      /* where the key being built is */
    int64_t rows, first_seq, last_seq;  /* the rows added, their seqs */
    int failed;                         /* out of memory: not usable */
} tllm_rollup_delta;

void tllm_rollup_delta_init(tllm_rollup_delta *d);

/* Add one inserted row (seq: its rowid) to every group it counts in. */
void tllm_rollup_delta_add(tllm_rollup_delta *d, const tllm_rollup_row *row,
                           int64_t seq);

/* Whether the delta holds exactly the rows past rollup_mark, given the
 * mark: rows were added, with consecutive seqs right after it, and no
 * allocation failed. Otherwise they must be read back from the table. */
int tllm_rollup_delta_covers(const tllm_rollup_delta *d, int64_t mark);

/* Write every group with upsert[kind] (prepared from rollup_sql.h);
 * SQLITE_DONE, SQLITE_NOMEM if an allocation failed while adding, or the
 * failing step's code. The delta is left as it was: clear it after. */
int tllm_rollup_delta_flush(const tllm_rollup_delta *d,
                            sqlite3_stmt *const upsert[TLLM_ROLLUP__COUNT]);

/* Forget every row; frees the memory. */
void tllm_rollup_delta_clear(tllm_rollup_delta *d);

#endif
