/*
 * child_memory.h - what a child holds in memory stays bounded: SQLite's
 * page caches share one budget per child, and memory the child frees goes
 * back to the kernel.
 *
 * Every mod_dbd connection has its own page cache (2,000 KiB), and a
 * child opens one per request it serves at once: under a mixed load the
 * caches of 30 connections held 60 MB of a child's 150 MB, more with each
 * burst that opened another. TraceLLMCacheMemory (MiB, default 64) sets
 * SQLite's soft heap limit in the child: near it, a cache reuses its own
 * least recently used pages instead of growing. Reads at -c32 need about
 * half the default budget, so they are not slowed.
 *
 * glibc returns a thread arena's free memory to the kernel only from the
 * arena's top, while a child's worker threads free in the middle of
 * theirs: a connection's whole page cache is dropped whenever another
 * connection has written (WAL) and refilled page by page by whichever
 * thread runs the next request; request pools and buckets go when a
 * request ends. A thread per child calls malloc_trim(0) once a second
 * when requests were served since it last did: after the bench's soak mix
 * that gave back 40 MB of a child's 150 MB. malloc_trim does not reach a
 * thread arena's top, which goes back only when free() finds it past the
 * trim threshold; the child fixes that threshold low (TLLM0023), as glibc
 * would otherwise raise it with the largest block it has mapped.
 *
 * When a second has then passed with no request served, the thread also
 * hands back the page caches of the child's idle connections, once per
 * quiet spell (store_idle.c), and trims again. Once the child has been
 * quiet for DBDExptime, it lets mod_dbd close the connections idle that
 * long (dbd_expiry.h), and hands back and trims again if it did. At rest
 * after 200,000 traces and the cases, that took the two children from
 * 230 MB to 184 MB, SQLite's part from 40-49 MB a child to 5-7. The first
 * requests after a quiet spell read their pages from the operating
 * system's cache again, as they do after any write under WAL.
 *
 * Requests' bulk bytes (tllm_req_bulk_pool) come from one allocator per
 * child that keeps at most TLLM_BULK_KEEP_KIB free, not from the
 * connections' allocators, which keep up to MaxMemFree each; a quiet
 * child with no bulk pool open replaces it, unmapping what it kept.
 */
#ifndef TLLM_CHILD_MEMORY_H
#define TLLM_CHILD_MEMORY_H

#include <httpd.h>
#include <http_config.h>

#define TLLM_CACHE_MEMORY_DEFAULT_MIB 64

/* Free blocks the bulk allocator keeps for the next requests (KiB);
 * beyond it, freed blocks go back to the kernel at once. */
#define TLLM_BULK_KEEP_KIB 8192

/** pre_config: back to the default budget (a restart rereads the
 *  configuration). */
void tllm_child_memory_defaults(void);

/** The TraceLLMCacheMemory directive: MiB, 0 = no limit. */
const char *tllm_child_memory_set_cache(cmd_parms *cmd, void *dconf,
                                        const char *arg);

/** child_init: set the budget and start the trimming thread, which is
 *  stopped and joined when pchild is cleared. */
void tllm_child_memory_child_init(apr_pool_t *pchild, server_rec *s);

/** The child's allocator for a request's bulk bytes (tllm_req_bulk_pool),
 *  shared by its threads, or NULL outside a child. The pool made with it
 *  must be a subpool of request_pool: the allocator is counted as in use
 *  until request_pool is cleared. */
apr_allocator_t *tllm_child_bulk_allocator(apr_pool_t *request_pool);

/** log_transaction: note that a request was served. Always DECLINED. */
int tllm_child_memory_note(request_rec *r);

#endif
