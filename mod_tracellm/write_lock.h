/*
 * write_lock.h - one trace writer at a time across httpd's children.
 *
 * SQLite lets one connection write at a time; the others retry from their
 * busy handler, which sleeps between tries (1 ms, then up to 100 ms). With
 * a queue of writers the CPU then idles while requests wait: single-trace
 * POSTs at -c32 gave about 2,000 traces/s with a 0.6 s p99. Waiting on an
 * httpd global mutex instead wakes the next writer the moment the lock is
 * free. The mutex is httpd's: its mechanism is set with
 * "Mutex <mechanism> tracellm-write" like any other.
 */
#ifndef TLLM_WRITE_LOCK_H
#define TLLM_WRITE_LOCK_H

#include <httpd.h>

/** pre_config: register the mutex type "tracellm-write". */
int tllm_write_lock_register(apr_pool_t *pconf);

/** post_config (not the dry run): create the mutex in pconf. */
int tllm_write_lock_create(apr_pool_t *pconf, server_rec *s);

/** child_init: reopen the mutex in the child. */
void tllm_write_lock_child_init(apr_pool_t *pchild, server_rec *s);

/** Take the lock around a write transaction; returns whether it is held,
 *  which tllm_write_unlock takes back. Without the mutex (a failure is
 *  logged) the writer goes on unlocked: SQLite's own locking still keeps
 *  the data safe, only slower under contention. */
int tllm_write_lock(request_rec *r);
void tllm_write_unlock(request_rec *r, int held);

#endif
