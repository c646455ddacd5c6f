/*
 * wal_drain.h - requests hold back for a moment while the WAL starts over.
 *
 * SQLite starts its WAL over only once every frame has been copied back
 * and no reader still reads one. A reader marks the WAL length it reads
 * in one of four slots, and a process holds a slot's lock as long as any
 * of its connections reads under it. With a dozen requests reading at
 * once in every child, all four slots stay held without a gap: under the
 * soak mix the checkpoint at the bound (store.c) did not complete once,
 * and the WAL grew to 6.6 GB in 300,000 requests, its index in every
 * process's memory with it.
 *
 * So that checkpoint opens a drain: until it closes it, or its deadline
 * passes, requests wait (polling every millisecond) before they take a
 * database connection. Those already reading finish within milliseconds,
 * and the WAL starts over. The drain is a deadline in memory that httpd's
 * children share (made before they fork): a child that dies while
 * draining holds no one past the deadline. Without the shared memory
 * (the event process, the unit tests, or a failure to make it) the calls
 * do nothing. One drain serves every database of the server: a virtual
 * host with its own database waits with the others.
 */
#ifndef TLLM_WAL_DRAIN_H
#define TLLM_WAL_DRAIN_H

#include <apr_pools.h>
#include <apr_time.h>

/** post_config (not the dry run): make the shared deadline in pconf.
 *  Returns APR_SUCCESS or why not (then the calls do nothing). */
apr_status_t tllm_wal_drain_create(apr_pool_t *pconf);

/** Hold new requests back for at most budget; tllm_wal_drain_close ends
 *  it sooner and returns how many requests it held back. */
void tllm_wal_drain_open(apr_interval_time_t budget);
unsigned tllm_wal_drain_close(void);

/** Before a request takes a connection: wait while a drain is open. */
void tllm_wal_drain_wait(void);

#endif
