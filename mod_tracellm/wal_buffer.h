/*
 * wal_buffer.h - WAL frames written in large pieces, not two system calls
 * each.
 *
 * SQLite writes each WAL frame with two pwrite64 calls, its 24-byte
 * header and then its page. A group of batch ingest commits thousands of
 * frames (every trace dirties a random leaf of the trace_id, latency and
 * tokens indexes), and those calls were a sixth of the children's time
 * while batches load, all of it inside the write lock. Written in pieces
 * of up to 127 KiB, a frame cost 2.2 us here instead of 4.2 (a 16 MiB
 * transaction's frames, appended to a file in the page cache).
 *
 * This is a VFS that wraps the default one and changes nothing but that:
 * a WAL file's appended writes are gathered in memory and written out
 *   - as soon as the page of a commit frame is in (the frame that makes a
 *     transaction visible), so the commit gets the write's own error and
 *     no reader is ever told of a frame that is not in the file;
 *   - before anything else touches that file (a read, a write elsewhere
 *     in it, sync, truncate, size, close);
 *   - before the thread that buffered them takes or gives any WAL lock
 *     (xShmLock) or orders the WAL index (xShmBarrier): a transaction
 *     that spilled frames and then rolled back has them written while it
 *     still holds the write lock, never after another writer's frames
 *     took their place.
 * The files end up byte for byte as SQLite's own VFS leaves them, in
 * fewer calls (the unit test compares the two), so readers in other
 * connections and processes (the event process uses SQLite's own VFS)
 * need nothing of it.
 *
 * One thread uses a connection from its first write of a transaction to
 * the release of its write lock (mod_dbd hands a connection to one request
 * at a time, and a group commit runs on its leader's thread), which is
 * what lets a thread-local pointer find the WAL it has buffered for.
 */
#ifndef TLLM_WAL_BUFFER_H
#define TLLM_WAL_BUFFER_H

#include <sqlite3.h>

/** Make the buffering VFS the process's default, wrapping the default
 *  found on the first call. Before any connection opens: a connection
 *  keeps the VFS it was opened with. Returns an SQLite result code. */
int tllm_wal_buffer_register(void);

/** Put the wrapped VFS back as the default (before the module that holds
 *  this code is unloaded). Connections opened through it must be closed
 *  first. */
void tllm_wal_buffer_unregister(void);

/** What the buffering did in this process: frames' pieces taken (each
 *  xWrite to a WAL file) and the writes that reached the file for them. */
typedef struct {
    sqlite3_int64 pieces;
    sqlite3_int64 writes;
} tllm_wal_buffer_counts;

void tllm_wal_buffer_counts_get(tllm_wal_buffer_counts *out);

#endif
