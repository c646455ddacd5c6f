/*
 * key_cache.h - the API keys a process has found, kept so that an ingest
 * does not open a read transaction just to authenticate. That lookup
 * (a transaction whose pages another connection's commit has made this
 * one drop, so read again through the kernel) was about a tenth of a
 * single-trace POST's CPU.
 *
 * A revocation must hold on the very next request in every child
 * (docs/API.md), so an entry is only good while the database's key
 * generation stands still: a counter in a file beside the database
 * (<database>-keygen), mapped shared by every process that has the
 * database open, whichever httpd or generation of children it belongs
 * to. A revocation moves it once it has committed; a lookup reads it
 * before anything else, and an entry read under an older value is not
 * used. An entry is also dropped TLLM_KEY_CACHE_TTL_US after it was read,
 * which bounds what a missed move (a process killed between the commit
 * and the move) can leave behind. Where the file cannot be created or
 * mapped, nothing is cached and every lookup reads the database.
 */
#ifndef TLLM_KEY_CACHE_H
#define TLLM_KEY_CACHE_H

#include <stdint.h>
#include <apr_pools.h>
#include "store.h"

#define TLLM_KEY_CACHE_TTL_US INT64_C(10000000)

/** The key with this SHA-256, as tllm_store_key_find gives it (revoked or
 *  not; *out in p), from this process's cache when the entry is still
 *  good at now_us, else from the database, then cached. */
int tllm_key_cache_find(tllm_db *db, apr_pool_t *p,
                        const unsigned char hash[32], int64_t now_us,
                        tllm_key **out);

/** The key's last_used_at was set to now_us (tllm_store_key_touch):
 *  its cached copy says so too, so it is not touched again for a minute. */
void tllm_key_cache_touched(const unsigned char hash[32], int64_t now_us);

/** Move db's key generation: every process's cached keys of this
 *  database are read again. Called once a revocation has committed. */
void tllm_key_cache_invalidate(tllm_db *db);

#endif
