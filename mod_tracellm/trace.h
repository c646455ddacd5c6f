/*
 * trace.h - the trace model: one incoming trace object (API.md, "Ingest
 * normalization") in, one normalized trace out, rendered once as the
 * TraceSchema JSON every endpoint serves. Pure C over APR pools and json-c:
 * no httpd and no database calls, so unit tests and fuzzers link it.
 */
#ifndef TLLM_TRACE_H
#define TLLM_TRACE_H

#include <stdint.h>
#include <apr_pools.h>
#include <json.h>

/** The three statuses, as stored and printed. */
#define TLLM_STATUS_SUCCESS "success"
#define TLLM_STATUS_WARNING "warning"
#define TLLM_STATUS_FAILED  "failed"

/** What normalization needs from outside the payload. */
typedef struct {
    const char *project_id;    /* the API key's project */
    const char *environment;   /* the API key's environment */
    double slow_threshold_ms;  /* TraceLLMSlowThreshold */
    int64_t now_us;            /* "now" for defaults, one value per request */
} tllm_ingest_ctx;

/** A normalized trace: the columns the store filters and aggregates on,
 *  and the rendered TraceSchema object (api_key null, keys in API.md's
 *  order, timestamps in the API format). All memory in the pool. */
typedef struct {
    const char *trace_id;
    const char *project_id;
    const char *environment;
    const char *model_name;
    const char *status;          /* one of TLLM_STATUS_* (lower case) */
    double latency;
    int64_t token_count;
    int64_t retry_count;
    int slow_request;            /* 0 or 1 */
    int64_t created_at;          /* us, UTC */
    int64_t updated_at;          /* us, UTC */
    const char *json;            /* the TraceSchema object, NUL-terminated */
    size_t json_len;
    /* The body as the store keeps it, when decided before the write lock
     * is taken (store.h, tllm_store_pack_bodies): packed_len bytes at
     * packed, or the JSON as text when packed is NULL. Not decided, the
     * store packs it as it writes. */
    int body_decided;
    const void *packed;
    size_t packed_len;
} tllm_trace;

/** Outcome of tllm_trace_normalize; the values are the HTTP statuses. */
typedef enum {
    TLLM_TRACE_OK = 0,
    TLLM_TRACE_FORBIDDEN = 403,  /* payload names another project */
    TLLM_TRACE_INVALID = 422     /* items appended to errors */
} tllm_trace_result;

/** Normalize one incoming trace.
 *  index is the trace's 0-based position in a batch, or -1 for a single
 *  trace: error locations are ["body", <index,> field, ...].
 *  On TLLM_TRACE_OK, *out is set. On TLLM_TRACE_INVALID, one item per
 *  problem (tllm_error_item) is appended to the json array errors. On
 *  TLLM_TRACE_FORBIDDEN, *detail says why (pool memory). */
tllm_trace_result tllm_trace_normalize(apr_pool_t *p, json_object *in,
                                       const tllm_ingest_ctx *ctx, int index,
                                       tllm_trace **out,
                                       json_object *errors,
                                       const char **detail);

/** A new random UUIDv4 string (pool memory). */
const char *tllm_uuid4(apr_pool_t *p);

#endif
