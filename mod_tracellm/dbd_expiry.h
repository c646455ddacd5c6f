/*
 * dbd_expiry.h - a quiet child lets mod_dbd expire its idle connections.
 *
 * mod_dbd's pool (apr_reslist) closes a connection that has been idle for
 * DBDExptime only when a request takes or gives back a connection. A
 * child that goes quiet therefore keeps every connection its busiest
 * moment opened, up to DBDMax, until its next request: about 230 KB of
 * the child's memory each (measured with glibc's fast bins still on),
 * even after their page caches and statements are handed back
 * (store_idle.c). The bench's soak mix meets higher
 * peaks of concurrency the longer it runs (its latency-bound listing
 * holds a connection for 60 ms at 1,000,000 traces): ad hoc, on 100,000
 * traces, a child's pool grew from 19 to 32 connections over 300,000
 * requests, and its memory at rest with it.
 *
 * Once a child has been quiet for DBDExptime, its trimming thread
 * (child_memory.c) takes a connection from the pool and gives it back,
 * as the next request would: mod_dbd then closes the connections idle
 * for longer than DBDExptime, and their memory goes back with the next
 * trim.
 */
#ifndef TLLM_DBD_EXPIRY_H
#define TLLM_DBD_EXPIRY_H

#include <httpd.h>

/** child_init: note the servers whose SQLite pool can expire (mod_dbd's
 *  persistent pools with a DBDExptime). */
void tllm_dbd_expiry_child_init(apr_pool_t *pchild, server_rec *s);

/** The child has served no request for at least quiet_seconds: let each
 *  noted pool whose DBDExptime has passed expire its idle connections.
 *  pool is only for mod_dbd's check of the connection it takes (nothing
 *  is allocated when the check passes); the caller's thread must own it.
 *  Returns how many of the connections requests had used were closed. */
int tllm_dbd_expire_idle(apr_pool_t *pool, int quiet_seconds);

#endif
