/*
 * group_commit.h - one write transaction for the traces of several
 * concurrent requests of a child (see group_commit.c).
 */
#ifndef TLLM_GROUP_COMMIT_H
#define TLLM_GROUP_COMMIT_H

#include <httpd.h>
#include "store.h"

/** child_init: the child's queue. If it cannot be made (logged), every
 *  request writes alone. */
void tllm_group_commit_child_init(apr_pool_t *pchild, server_rec *s);

/** tllm_store_traces_put for this request's traces, committed together
 *  with whatever other requests of this child are waiting to write. Same
 *  results and return values; on TLLM_ERROR db's error message says why
 *  and nothing of this request is stored. Each commit that stored rows
 *  tells the event process once (tllm_eventd_notify). */
int tllm_group_commit_put(request_rec *r, tllm_db *db,
                          tllm_trace *const *traces, int n, int *results,
                          int64_t *last_seq);

#endif
