/*
 * test_wal_buffer.c - the buffering VFS (wal_buffer.h) against real
 * files: a writer through it, a second connection through SQLite's own
 * unix VFS (as the event process reads), and the four promises: every
 * commit is whole in the file when it becomes visible; frames of a
 * rolled-back transaction never land on another writer's; a transaction
 * reads back the pages it spilled; and a commit whose frames cannot be
 * written fails, leaving the database as it was. And the files it writes
 * are byte for byte those SQLite's own VFS writes.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
#include <sqlite3.h>
#include "unit.h"
#include "wal_buffer.h"

static char dir[] = "/tmp/test_wal_buffer_XXXXXX";
static char path[64];

static void remove_files(const char *db)
{
    static const char *const suffix[] = { "", "-wal", "-shm" };
    char file[96];
    size_t i;

    for (i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        snprintf(file, sizeof(file), "%s%s", db, suffix[i]);
        unlink(file);
    }
}

static sqlite3 *open_file(const char *file, const char *vfs)
{
    sqlite3 *sq = NULL;

    if (sqlite3_open_v2(file, &sq, SQLITE_OPEN_READWRITE
                        | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK) {
        fprintf(stderr, "open %s: %s\n", file, sqlite3_errmsg(sq));
        exit(2);
    }
    sqlite3_busy_timeout(sq, 5000);
    return sq;
}

static sqlite3 *open_with(const char *vfs)
{
    return open_file(path, vfs);
}

static int exec(sqlite3 *sq, const char *sql)
{
    int rc = sqlite3_exec(sq, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK && strcmp(sql, "COMMIT") != 0) {
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(sq));
    }
    return rc;
}

static sqlite3_int64 one(sqlite3 *sq, const char *sql)
{
    sqlite3_stmt *st;
    sqlite3_int64 v = -1;

    if (sqlite3_prepare_v2(sq, sql, -1, &st, NULL) == SQLITE_OK
        && sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

static int intact(sqlite3 *sq)
{
    sqlite3_stmt *st;
    int ok = 0;

    if (sqlite3_prepare_v2(sq, "PRAGMA integrity_check", -1, &st, NULL)
        == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    }
    sqlite3_finalize(st);
    return ok;
}

/* n rows whose index keys land all over the index, as trace ids do. */
static int insert(sqlite3 *sq, int n, int blob_bytes)
{
    char sql[160];

    snprintf(sql, sizeof(sql),
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c"
             " WHERE i < %d) INSERT INTO t (id, v) SELECT hex(randomblob(16)),"
             " randomblob(%d) FROM c", n, blob_bytes);
    return exec(sq, sql);
}

/* Commits, each visible at once to a connection of SQLite's own VFS and
 * whole there; the frames went out in pieces, not one by one. */
static void test_commits_visible(sqlite3 *writer, sqlite3 *reader)
{
    tllm_wal_buffer_counts before, after;
    int i, whole = 1, counted = 1;

    tllm_wal_buffer_counts_get(&before);
    for (i = 1; i <= 40; i++) {
        whole &= exec(writer, "BEGIN") == SQLITE_OK
                 && insert(writer, 50, 600) == SQLITE_OK
                 && exec(writer, "COMMIT") == SQLITE_OK;
        counted &= one(reader, "SELECT count(*) FROM t") == i * 50;
        if (i % 10 == 0) {
            CHECK(intact(reader));
        }
    }
    CHECK(whole);
    CHECK(counted);
    tllm_wal_buffer_counts_get(&after);
    CHECK(after.pieces - before.pieces > 1000);
    /* Two pieces a frame, fifteen frames a write. */
    CHECK((after.writes - before.writes) * 10 < after.pieces - before.pieces);
}

/* A transaction that spills frames and rolls back, then another writer
 * whose commit takes their place in the WAL: the first connection's
 * frames must have been written before it let the write lock go, not
 * later over the second's. Rows appended in key order are never read
 * back while they go in, and after a checkpoint that empties the WAL the
 * rollback reads page 1 from the database file, so the last frames
 * spilled are still held back when the rollback lets the lock go. */
static void test_rollback_then_other_writer(sqlite3 *writer,
                                            sqlite3 *other)
{
    sqlite3_int64 rows = one(other, "SELECT count(*) FROM t");
    tllm_wal_buffer_counts before, after;
    const char *append = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL"
                         " SELECT i + 1 FROM c WHERE i < 300)"
                         " INSERT INTO s (v) SELECT %s FROM c";
    char sql[200];

    CHECK(exec(writer, "PRAGMA wal_checkpoint(TRUNCATE)") == SQLITE_OK);
    exec(writer, "PRAGMA cache_size = 8");      /* pages: it must spill */
    tllm_wal_buffer_counts_get(&before);
    CHECK(exec(writer, "BEGIN") == SQLITE_OK);
    snprintf(sql, sizeof(sql), append, "randomblob(3000)");
    CHECK(exec(writer, sql) == SQLITE_OK);
    tllm_wal_buffer_counts_get(&after);
    CHECK(after.pieces > before.pieces);        /* it spilled */
    CHECK(exec(writer, "ROLLBACK") == SQLITE_OK);
    exec(writer, "PRAGMA cache_size = -2000");

    /* More pages than the spill, at the same place in the WAL, and the
     * same pages of s: only their contents tell them apart. */
    CHECK(exec(other, "BEGIN") == SQLITE_OK);
    snprintf(sql, sizeof(sql), append, "zeroblob(3000)");
    CHECK(exec(other, sql) == SQLITE_OK);
    CHECK(insert(other, 400, 3000) == SQLITE_OK);
    CHECK(exec(other, "COMMIT") == SQLITE_OK);

    /* The first connection reads (which writes out anything it still
     * held back), then both look at the whole database. */
    CHECK(one(writer, "SELECT count(*) FROM t") == rows + 400);
    CHECK(one(writer, "SELECT count(*) FROM s") == 300);
    CHECK(one(other, "SELECT sum(v = zeroblob(3000)) FROM s") == 300);
    CHECK(intact(other));
    CHECK(intact(writer));
    CHECK(one(other, "SELECT count(*) FROM t") == rows + 400);
}

/* A transaction that spills pages to the WAL and then needs them again
 * reads them from the WAL file: what it holds back must be written out
 * before any read, or the read finds zeros or an older frame. Random
 * keys send the inserts back to index pages spilled before them. */
static void test_spilled_pages_read_back(sqlite3 *writer, sqlite3 *reader)
{
    sqlite3_int64 rows = one(reader, "SELECT count(*) FROM t");
    tllm_wal_buffer_counts before, after;

    exec(writer, "PRAGMA cache_size = 8");      /* pages: it must spill */
    tllm_wal_buffer_counts_get(&before);
    CHECK(exec(writer, "BEGIN") == SQLITE_OK);
    CHECK(insert(writer, 300, 2000) == SQLITE_OK);
    tllm_wal_buffer_counts_get(&after);
    CHECK(after.pieces > before.pieces);        /* it spilled */
    CHECK(one(writer, "SELECT count(*) FROM t INDEXED BY t_id"
                      " WHERE id > ''") == rows + 300);
    CHECK(one(writer, "SELECT count(*) FROM t WHERE length(v) = 2000")
          >= 300);
    CHECK(exec(writer, "COMMIT") == SQLITE_OK);
    exec(writer, "PRAGMA cache_size = -2000");
    CHECK(one(reader, "SELECT count(*) FROM t") == rows + 300);
    CHECK(intact(reader));
}

/* A commit whose frames cannot be written (the file may not grow:
 * RLIMIT_FSIZE) fails, nothing of it is seen, and the next commit after
 * the rollback works. */
static void test_failed_write_fails_commit(sqlite3 *writer,
                                           sqlite3 *reader)
{
    sqlite3_int64 rows;
    struct rlimit old, small;
    int rc;

    CHECK(exec(writer, "PRAGMA wal_checkpoint(TRUNCATE)") == SQLITE_OK);
    rows = one(reader, "SELECT count(*) FROM t");
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    small = old;
    /* The WAL's header fits; its first frames do not. Temporary files
     * (the statement journal) stay in memory, below the limit too. */
    exec(writer, "PRAGMA temp_store = MEMORY");
    small.rlim_cur = 4096;
    CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
    CHECK(exec(writer, "BEGIN") == SQLITE_OK);
    CHECK(insert(writer, 3, 500) == SQLITE_OK);
    rc = exec(writer, "COMMIT");
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(rc != SQLITE_OK);
    if (!sqlite3_get_autocommit(writer)) {
        exec(writer, "ROLLBACK");
    }
    CHECK(one(reader, "SELECT count(*) FROM t") == rows);
    CHECK(intact(reader));

    CHECK(exec(writer, "BEGIN") == SQLITE_OK);
    CHECK(insert(writer, 3, 500) == SQLITE_OK);
    CHECK(exec(writer, "COMMIT") == SQLITE_OK);
    CHECK(one(reader, "SELECT count(*) FROM t") == rows + 3);
    CHECK(intact(reader));
}

/* The whole file, malloc'd, its size in *len; NULL if unreadable. */
static unsigned char *slurp(const char *file, long *len)
{
    FILE *f = fopen(file, "rb");
    unsigned char *data = NULL;

    if (f && fseek(f, 0, SEEK_END) == 0 && (*len = ftell(f)) >= 0
        && fseek(f, 0, SEEK_SET) == 0
        && (data = malloc((size_t)*len + 1))
        && fread(data, 1, (size_t)*len, f) != (size_t)*len) {
        free(data);
        data = NULL;
    }
    if (f) {
        fclose(f);
    }
    return data;
}

static int same_file(const char *a, const char *b)
{
    long alen = -1, blen = -2;
    unsigned char *x = slurp(a, &alen), *y = slurp(b, &blen);
    int same = x && y && alen == blen && alen > 0
               && memcmp(x, y, (size_t)alen) == 0;

    free(x);
    free(y);
    return same;
}

/* One workload: commits of rows keyed all over the index, a transaction
 * that spills and rolls back, then commits over its frames. The data is
 * fixed; SQLite's random numbers (the WAL's salts) are made the same for
 * both runs by the caller. */
static void workload(sqlite3 *sq)
{
    static const char *const rows =
        "WITH RECURSIVE c(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM c"
        " WHERE i < %d) INSERT INTO t (id, v) SELECT"
        " printf('%%08x', (i * 2654435761) %% 4294967291),"
        " substr(printf('%%.2000c', char(65 + i %% 26)), 1, 500 + i %% 1500)"
        " FROM c";
    char sql[320];
    int k;

    CHECK(exec(sq, "PRAGMA page_size = 8192; PRAGMA journal_mode = WAL;"
                   " PRAGMA synchronous = NORMAL;"
                   " PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = 8;"
                   " CREATE TABLE t (seq INTEGER PRIMARY KEY, id TEXT,"
                   " v BLOB); CREATE INDEX t_id ON t (id);") == SQLITE_OK);
    for (k = 0; k < 6; k++) {
        snprintf(sql, sizeof(sql), rows, k * 200, k * 200 + 199);
        CHECK(exec(sq, "BEGIN") == SQLITE_OK);
        CHECK(exec(sq, sql) == SQLITE_OK);
        CHECK(exec(sq, k == 3 ? "ROLLBACK" : "COMMIT") == SQLITE_OK);
    }
}

/* The same workload through the buffering VFS and through SQLite's own
 * leaves the same WAL and database files, byte for byte: the buffer
 * changes how many calls write the bytes, not what reaches the file or
 * where. Compared before any checkpoint, so the WAL holds every frame
 * written, the rolled-back ones overwritten in place included. */
static void test_same_bytes_as_unix(void)
{
    char buffered[80], plain[80], wal_a[84], wal_b[84];
    tllm_wal_buffer_counts before, after;
    sqlite3 *a, *b;

    snprintf(buffered, sizeof(buffered), "%s/buffered.db", dir);
    snprintf(plain, sizeof(plain), "%s/plain.db", dir);
    snprintf(wal_a, sizeof(wal_a), "%s-wal", buffered);
    snprintf(wal_b, sizeof(wal_b), "%s-wal", plain);
    a = open_file(buffered, NULL);
    b = open_file(plain, "unix");
    CHECK(sqlite3_test_control(SQLITE_TESTCTRL_PRNG_SAVE) == SQLITE_OK);
    tllm_wal_buffer_counts_get(&before);
    workload(a);
    tllm_wal_buffer_counts_get(&after);
    CHECK(after.pieces - before.pieces > 100);  /* through the buffer */
    CHECK(sqlite3_test_control(SQLITE_TESTCTRL_PRNG_RESTORE) == SQLITE_OK);
    workload(b);
    CHECK(one(a, "SELECT count(*) FROM t") == 1000);
    CHECK(same_file(wal_a, wal_b));
    CHECK(same_file(buffered, plain));
    sqlite3_close(a);
    sqlite3_close(b);
    remove_files(buffered);
    remove_files(plain);
}

int main(void)
{
    sqlite3 *writer, *other;

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(path, sizeof(path), "%s/wal.db", dir);
    CHECK(tllm_wal_buffer_register() == SQLITE_OK);
    CHECK(strcmp(sqlite3_vfs_find(NULL)->zName, "unix") != 0);

    writer = open_with(NULL);       /* the default: the buffering VFS */
    other = open_with("unix");
    CHECK(exec(writer, "PRAGMA page_size = 8192; PRAGMA journal_mode = WAL;"
                       " PRAGMA synchronous = NORMAL;"
                       " PRAGMA wal_autocheckpoint = 0;"
                       " CREATE TABLE t (seq INTEGER PRIMARY KEY, id TEXT,"
                       " v BLOB); CREATE INDEX t_id ON t (id);"
                       " CREATE TABLE s (k INTEGER PRIMARY KEY, v BLOB);")
          == SQLITE_OK);
    exec(other, "PRAGMA wal_autocheckpoint = 0");

    test_commits_visible(writer, other);
    test_rollback_then_other_writer(writer, other);
    test_spilled_pages_read_back(writer, other);
    test_failed_write_fails_commit(writer, other);
    test_same_bytes_as_unix();

    sqlite3_close(writer);
    sqlite3_close(other);
    /* The last to close copied the WAL into the database, reading every
     * committed frame from the file; opened again, every row is there. */
    other = open_with("unix");
    CHECK(one(other, "SELECT count(*) FROM t") == 40 * 50 + 400 + 300 + 3);
    CHECK(one(other, "SELECT sum(v = zeroblob(3000)) FROM s") == 300);
    CHECK(intact(other));
    sqlite3_close(other);
    tllm_wal_buffer_unregister();
    CHECK(strcmp(sqlite3_vfs_find(NULL)->zName, "unix") == 0);
    remove_files(path);
    rmdir(dir);
    return unit_summary("test_wal_buffer");
}
