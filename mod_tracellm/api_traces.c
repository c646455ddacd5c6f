/*
 * api_traces.c - GET /traces and GET /traces/{trace_id}. Stored traces are
 * already rendered JSON: the handlers validate, query, and splice.
 */
#include <httpd.h>

#include "mod_tracellm.h"
#include "request.h"

#define TLLM_LIST_DEFAULT 50
#define TLLM_LIST_MAX     200

/* Fill f from the query; returns 0, or 422 already sent. */
static int parse_filter(tllm_req *q, tllm_trace_filter *f, int64_t *limit)
{
    tllm_params ps;
    int64_t token;

    memset(f, 0, sizeof(*f));
    tllm_params_init(&ps, q, NULL);
    f->status = tllm_param_status(&ps, "status");
    f->model_name = tllm_param_str(&ps, "model", 0, 0);
    f->project_id = tllm_param_str(&ps, "project_id", 0, 0);
    f->environment = tllm_param_str(&ps, "environment", 0, 0);
    f->has_latency_min = tllm_param_float(&ps, "latency_min", 0,
                                          &f->latency_min) == 1;
    f->has_latency_max = tllm_param_float(&ps, "latency_max", 0,
                                          &f->latency_max) == 1;
    f->has_token_min = tllm_param_int(&ps, "token_min", 0, 0, INT64_MAX,
                                      &token) == 1;
    f->token_min = token;
    f->has_token_max = tllm_param_int(&ps, "token_max", 0, 0, INT64_MAX,
                                      &token) == 1;
    f->token_max = token;
    tllm_param_int(&ps, "limit", TLLM_LIST_DEFAULT, 1, TLLM_LIST_MAX, limit);
    if (json_object_array_length(ps.errors)) {
        tllm_send_invalid(q->r, json_object_get(ps.errors));
        return HTTP_UNPROCESSABLE_ENTITY;
    }
    return 0;
}

int tllm_api_traces_list(tllm_req *q)
{
    tllm_trace_filter f;
    int64_t limit, total;
    apr_array_header_t *items;
    tllm_db *db;
    tllm_sb sb;
    apr_pool_t *bulk;

    if (parse_filter(q, &f, &limit)) {
        return OK;
    }
    db = tllm_req_db(q);
    bulk = tllm_req_bulk_pool(q);
    if (!db || tllm_store_traces_list(db, bulk, &f, (int)limit, &total,
                                      &items) != TLLM_OK) {
        return tllm_send_store_error(q, db, "listing traces");
    }
    tllm_sb_init(&sb, bulk, 64 + items->nelts);
    tllm_sb_str(&sb, "{\"total\":");
    tllm_sb_int(&sb, total);
    tllm_sb_str(&sb, ",\"items\":");
    tllm_sb_texts(&sb, items);
    tllm_sb_str(&sb, "}");
    return tllm_send_sb(q->r, HTTP_OK, &sb);
}

int tllm_api_trace_get(tllm_req *q)
{
    tllm_db *db = tllm_req_db(q);
    tllm_text body;
    int rc;

    if (!db) {
        return tllm_send_store_error(q, db, "reading a trace");
    }
    rc = tllm_store_trace_get(db, q->r->pool, q->param, &body);
    if (rc == TLLM_NOTFOUND) {
        return tllm_send_detail(q->r, HTTP_NOT_FOUND, "Trace not found");
    }
    if (rc != TLLM_OK) {
        return tllm_send_store_error(q, db, "reading a trace");
    }
    return tllm_send_json(q->r, HTTP_OK, body.s, body.len);
}
