/*
 * wal_buffer.c - the buffering VFS of wal_buffer.h: a wrapper around the
 * default VFS whose WAL files gather appended writes in memory.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "wal_buffer.h"

/* The most a WAL file holds back: 15 frames of 8 KiB pages. The unix
 * VFS writes at most 128 KiB - 1 in one call (seekAndWriteFd masks the
 * length with 0x1ffff), and a longer piece comes back short, as "disk
 * full". */
#define BUFFER_BYTES (127 * 1024)

/* A frame's header: page number, then the database's size in pages after
 * the commit, which only a commit frame has (non-zero). */
#define FRAME_HEADER_BYTES 24

/* Spare buffers kept for the next WAL that writes; one is all a database
 * needs, as only its writer buffers. */
#define SPARE_BUFFERS 2

typedef struct {
    sqlite3_file base;      /* pMethods: buffered_methods */
    sqlite3_file *real;     /* the wrapped VFS's file, right after this */
    int is_wal;
    char *buffer;           /* NULL while nothing is held back */
    sqlite3_int64 buffer_offset;
    int buffered;           /* bytes held back, from buffer_offset on */
    int commit_page_next;   /* the last write was a commit frame's header */
    int failed;             /* a write-out failed: its transaction fails */
} buffered_file;

/* The WAL whose writes this thread holds back, if any (wal_buffer.h). */
static __thread buffered_file *held_by_thread;

static sqlite3_vfs buffering_vfs;
static const sqlite3_io_methods buffered_methods;

static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static char *spare[SPARE_BUFFERS];
static int spares;

static sqlite3_int64 count_pieces, count_writes;

static sqlite3_vfs *wrapped(sqlite3_vfs *vfs)
{
    return vfs->pAppData;
}

static char *buffer_take(void)
{
    char *b = NULL;

    pthread_mutex_lock(&spare_lock);
    if (spares) {
        b = spare[--spares];
    }
    pthread_mutex_unlock(&spare_lock);
    return b ? b : malloc(BUFFER_BYTES);
}

static void buffer_give(char *b)
{
    pthread_mutex_lock(&spare_lock);
    if (spares < SPARE_BUFFERS) {
        spare[spares++] = b;
        b = NULL;
    }
    pthread_mutex_unlock(&spare_lock);
    free(b);
}

/* Write out what f holds back and let its buffer go. A failure fails
 * the file's next reads, writes and syncs too, until its writer lets the
 * write lock go (file_shm_lock): frames SQLite believes written are
 * missing, so that transaction must not commit, nor read them back. */
static int write_out(buffered_file *f)
{
    int rc = SQLITE_OK;

    if (f->buffered) {
        rc = f->real->pMethods->xWrite(f->real, f->buffer, f->buffered,
                                       f->buffer_offset);
        __atomic_fetch_add(&count_writes, 1, __ATOMIC_RELAXED);
        f->buffered = 0;
    }
    if (f->buffer) {
        buffer_give(f->buffer);
        f->buffer = NULL;
    }
    f->commit_page_next = 0;
    if (rc != SQLITE_OK) {
        f->failed = rc;
        held_by_thread = f;
    }
    else if (held_by_thread == f) {
        held_by_thread = NULL;
    }
    return rc;
}

/* Before a WAL lock changes hands or the WAL index is ordered: write out
 * this thread's held-back frames. A file that failed already has nothing
 * held back; its own calls report the failure. */
static int write_out_held(void)
{
    buffered_file *f = held_by_thread;

    return f && !f->failed ? write_out(f) : SQLITE_OK;
}

/* Before any use of a file but an append: for a WAL, its failure if a
 * write-out failed, else whatever it holds back written out; any other
 * file has nothing held back. */
static int settled(buffered_file *f)
{
    return !f->is_wal ? SQLITE_OK : f->failed ? f->failed : write_out(f);
}

/* ---- the file methods ------------------------------------------------ */

static int file_close(sqlite3_file *file)
{
    buffered_file *f = (buffered_file *)file;
    int rc = f->is_wal ? write_out(f) : SQLITE_OK;
    int closed = f->real->pMethods->xClose(f->real);

    if (held_by_thread == f) {
        held_by_thread = NULL;
    }
    return rc != SQLITE_OK ? rc : closed;
}

static int file_read(sqlite3_file *file, void *data, int amount,
                     sqlite3_int64 offset)
{
    buffered_file *f = (buffered_file *)file;
    int rc = settled(f);

    return rc != SQLITE_OK
           ? rc : f->real->pMethods->xRead(f->real, data, amount, offset);
}

static int is_commit_header(const void *data, int amount)
{
    const unsigned char *h = data;

    return amount == FRAME_HEADER_BYTES && (h[4] | h[5] | h[6] | h[7]);
}

static int file_write(sqlite3_file *file, const void *data, int amount,
                      sqlite3_int64 offset)
{
    buffered_file *f = (buffered_file *)file;
    int commit_page = f->commit_page_next;
    int commit_header = is_commit_header(data, amount);
    int rc;

    if (!f->is_wal) {
        return f->real->pMethods->xWrite(f->real, data, amount, offset);
    }
    if (f->failed) {
        return f->failed;
    }
    __atomic_fetch_add(&count_pieces, 1, __ATOMIC_RELAXED);
    f->commit_page_next = commit_header;
    /* Only an append to what is held back joins it; anything else
     * (a checksum rewritten, a new WAL begun) goes after it, in order. */
    if (f->buffered && (offset != f->buffer_offset + f->buffered
                        || f->buffered + amount > BUFFER_BYTES)) {
        if ((rc = write_out(f)) != SQLITE_OK) {
            return rc;
        }
        f->commit_page_next = commit_header;
    }
    /* A commit frame's header that begins a piece is a rewrite of one
     * already written (or a transaction of one page): straight out. */
    if (!f->buffered && (amount > BUFFER_BYTES / 2 || commit_header)) {
        __atomic_fetch_add(&count_writes, 1, __ATOMIC_RELAXED);
        return f->real->pMethods->xWrite(f->real, data, amount, offset);
    }
    if (!f->buffer) {
        if (held_by_thread && held_by_thread != f
            && (rc = write_out_held()) != SQLITE_OK) {
            return rc;
        }
        if (!(f->buffer = buffer_take())) {
            return SQLITE_IOERR_NOMEM;
        }
        f->buffer_offset = offset;
        held_by_thread = f;
    }
    memcpy(f->buffer + f->buffered, data, (size_t)amount);
    f->buffered += amount;
    /* The commit frame is whole: out before the commit is published. */
    return commit_page && !commit_header ? write_out(f) : SQLITE_OK;
}

static int file_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    buffered_file *f = (buffered_file *)file;
    int rc = settled(f);

    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int file_sync(sqlite3_file *file, int flags)
{
    buffered_file *f = (buffered_file *)file;
    int rc = settled(f);

    return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    buffered_file *f = (buffered_file *)file;
    int rc = settled(f);

    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int file_lock(sqlite3_file *file, int level)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xLock(f->real, level);
}

static int file_unlock(sqlite3_file *file, int level)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xUnlock(f->real, level);
}

static int file_check_reserved(sqlite3_file *file, int *out)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int file_control(sqlite3_file *file, int op, void *arg)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int file_sector_size(sqlite3_file *file)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int file_device(sqlite3_file *file)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int file_shm_map(sqlite3_file *file, int region, int size,
                        int extend, void volatile **out)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xShmMap(f->real, region, size, extend, out);
}

/* WAL_WRITE_LOCK in SQLite's wal.c: the first of the WAL's locks. */
#define WRITE_LOCK_SLOT 0

static int file_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    buffered_file *f = (buffered_file *)file;
    int rc = write_out_held();

    if (held_by_thread && held_by_thread->failed
        && offset == WRITE_LOCK_SLOT && (flags & SQLITE_SHM_UNLOCK)) {
        /* The transaction that lost frames is over. */
        held_by_thread->failed = 0;
        held_by_thread = NULL;
        rc = SQLITE_OK;
    }
    /* A lock is let go whatever happened (the failure stays recorded). */
    if (rc != SQLITE_OK && !(flags & SQLITE_SHM_UNLOCK)) {
        return rc;
    }
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void file_shm_barrier(sqlite3_file *file)
{
    buffered_file *f = (buffered_file *)file;

    write_out_held();
    f->real->pMethods->xShmBarrier(f->real);
}

static int file_shm_unmap(sqlite3_file *file, int delete_flag)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int file_fetch(sqlite3_file *file, sqlite3_int64 offset, int amount,
                      void **out)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xFetch(f->real, offset, amount, out);
}

static int file_unfetch(sqlite3_file *file, sqlite3_int64 offset, void *p)
{
    buffered_file *f = (buffered_file *)file;
    return f->real->pMethods->xUnfetch(f->real, offset, p);
}

static const sqlite3_io_methods buffered_methods = {
    3,
    file_close, file_read, file_write, file_truncate, file_sync, file_size,
    file_lock, file_unlock, file_check_reserved, file_control,
    file_sector_size, file_device,
    file_shm_map, file_shm_lock, file_shm_barrier, file_shm_unmap,
    file_fetch, file_unfetch
};

/* ---- the VFS: open wraps, everything else is the wrapped VFS's ------- */

static int vfs_open(sqlite3_vfs *vfs, sqlite3_filename name,
                    sqlite3_file *file, int flags, int *out_flags)
{
    buffered_file *f = (buffered_file *)file;
    int rc;

    memset(f, 0, sizeof(*f));
    f->real = (sqlite3_file *)&f[1];
    rc = wrapped(vfs)->xOpen(wrapped(vfs), name, f->real, flags, out_flags);
    /* The methods must be ours whenever the wrapped file has some, so
     * that SQLite's xClose reaches it even after a failed open. */
    if (!f->real->pMethods) {
        return rc;
    }
    /* The wrapped methods must have the shared-memory calls this one
     * forwards (the unix VFS's are version 3). */
    if (f->real->pMethods->iVersion < 3) {
        f->real->pMethods->xClose(f->real);
        return SQLITE_CANTOPEN;
    }
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    file->pMethods = &buffered_methods;
    return rc;
}

static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    return wrapped(vfs)->xDelete(wrapped(vfs), name, sync_dir);
}

static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags,
                      int *out)
{
    return wrapped(vfs)->xAccess(wrapped(vfs), name, flags, out);
}

static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n,
                             char *out)
{
    return wrapped(vfs)->xFullPathname(wrapped(vfs), name, n, out);
}

static void *vfs_dl_open(sqlite3_vfs *vfs, const char *name)
{
    return wrapped(vfs)->xDlOpen(wrapped(vfs), name);
}

static void vfs_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
    wrapped(vfs)->xDlError(wrapped(vfs), n, out);
}

static void (*vfs_dl_sym(sqlite3_vfs *vfs, void *lib, const char *sym))(void)
{
    return wrapped(vfs)->xDlSym(wrapped(vfs), lib, sym);
}

static void vfs_dl_close(sqlite3_vfs *vfs, void *lib)
{
    wrapped(vfs)->xDlClose(wrapped(vfs), lib);
}

static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    return wrapped(vfs)->xRandomness(wrapped(vfs), n, out);
}

static int vfs_sleep(sqlite3_vfs *vfs, int us)
{
    return wrapped(vfs)->xSleep(wrapped(vfs), us);
}

static int vfs_current_time(sqlite3_vfs *vfs, double *out)
{
    return wrapped(vfs)->xCurrentTime(wrapped(vfs), out);
}

static int vfs_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    return wrapped(vfs)->xGetLastError(wrapped(vfs), n, out);
}

static int vfs_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    return wrapped(vfs)->xCurrentTimeInt64(wrapped(vfs), out);
}

static int vfs_set_syscall(sqlite3_vfs *vfs, const char *name,
                           sqlite3_syscall_ptr p)
{
    return wrapped(vfs)->xSetSystemCall(wrapped(vfs), name, p);
}

static sqlite3_syscall_ptr vfs_get_syscall(sqlite3_vfs *vfs,
                                           const char *name)
{
    return wrapped(vfs)->xGetSystemCall(wrapped(vfs), name);
}

static const char *vfs_next_syscall(sqlite3_vfs *vfs, const char *name)
{
    return wrapped(vfs)->xNextSystemCall(wrapped(vfs), name);
}

int tllm_wal_buffer_register(void)
{
    sqlite3_vfs *real;

    if (!buffering_vfs.pAppData) {
        real = sqlite3_vfs_find(NULL);
        if (!real) {
            return SQLITE_ERROR;
        }
        /* Version 3 has every call forwarded below (unix's has). */
        if (real->iVersion < 3) {
            return SQLITE_ERROR;
        }
        buffering_vfs = (sqlite3_vfs) {
            .iVersion = 3,
            .szOsFile = (int)sizeof(buffered_file) + real->szOsFile,
            .mxPathname = real->mxPathname,
            .zName = "tracellm-wal-buffer",
            .pAppData = real,
            .xOpen = vfs_open,
            .xDelete = vfs_delete,
            .xAccess = vfs_access,
            .xFullPathname = vfs_full_pathname,
            .xDlOpen = vfs_dl_open,
            .xDlError = vfs_dl_error,
            .xDlSym = vfs_dl_sym,
            .xDlClose = vfs_dl_close,
            .xRandomness = vfs_randomness,
            .xSleep = vfs_sleep,
            .xCurrentTime = vfs_current_time,
            .xGetLastError = vfs_last_error,
            .xCurrentTimeInt64 = vfs_current_time64,
            .xSetSystemCall = vfs_set_syscall,
            .xGetSystemCall = vfs_get_syscall,
            .xNextSystemCall = vfs_next_syscall
        };
    }
    return sqlite3_vfs_register(&buffering_vfs, 1);
}

void tllm_wal_buffer_unregister(void)
{
    if (buffering_vfs.pAppData) {
        sqlite3_vfs_unregister(&buffering_vfs);
    }
}

void tllm_wal_buffer_counts_get(tllm_wal_buffer_counts *out)
{
    out->pieces = __atomic_load_n(&count_pieces, __ATOMIC_RELAXED);
    out->writes = __atomic_load_n(&count_writes, __ATOMIC_RELAXED);
}
