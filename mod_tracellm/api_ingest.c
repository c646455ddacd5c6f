/*
 * api_ingest.c - POST /traces: authenticate the project key, read one
 * trace, an array or {"traces": [...]}, normalize each (trace.c), store
 * the valid ones in one transaction, and report per trace.
 */
#include <string.h>

#include <httpd.h>
#include <http_log.h>
#include <apr_strings.h>

#include "mod_tracellm.h"
#include "request.h"
#include "jsonutil.h"
#include "keys.h"
#include "key_cache.h"
#include "trace.h"
#include "group_commit.h"

APLOG_USE_MODULE(tracellm);

#define TLLM_BATCH_MAX 1000

/* The key text from "Authorization: Bearer ..." or "X-API-Key". */
static const char *presented_key(request_rec *r)
{
    const char *auth = apr_table_get(r->headers_in, "Authorization");

    if (auth && !strncasecmp(auth, "Bearer ", 7)) {
        auth += 7;
        while (*auth == ' ') {
            auth++;
        }
        return *auth ? auth : NULL;
    }
    auth = apr_table_get(r->headers_in, "X-API-Key");
    return auth && *auth ? auth : NULL;
}

/* The key's row, or NULL with the 401 (or 5xx) already sent. From the
 * child's key cache while no revocation has happened since it was read
 * (key_cache.h), so a revocation holds on the next request in every
 * child. */
static tllm_key *authenticate(tllm_req *q, tllm_db *db)
{
    const char *text = presented_key(q->r);
    unsigned char hash[32];
    tllm_key *key = NULL;
    int rc;

    if (!text) {
        tllm_send_detail(q->r, HTTP_UNAUTHORIZED, "Missing API key");
        return NULL;
    }
    if (!tllm_key_well_formed(text)) {
        tllm_send_detail(q->r, HTTP_UNAUTHORIZED, "Invalid API key");
        return NULL;
    }
    tllm_key_hash(text, hash);
    rc = tllm_key_cache_find(db, q->r->pool, hash, q->now_us, &key);
    if (rc == TLLM_NOTFOUND) {
        tllm_send_detail(q->r, HTTP_UNAUTHORIZED, "Invalid API key");
        return NULL;
    }
    if (rc != TLLM_OK) {
        tllm_send_store_error(q, db, "looking up an API key");
        return NULL;
    }
    if (key->revoked) {
        tllm_send_detail(q->r, HTTP_UNAUTHORIZED, "API key revoked");
        return NULL;
    }
    return key;
}

/* The array of traces in a batch body, or NULL for a single trace. */
static json_object *batch_items(json_object *body)
{
    json_object *traces;

    if (json_object_is_type(body, json_type_array)) {
        return body;
    }
    if (json_object_is_type(body, json_type_object)
        && json_object_object_get_ex(body, "traces", &traces)
        && json_object_is_type(traces, json_type_array)) {
        return traces;
    }
    return NULL;
}

static int send_whole_body_invalid(tllm_req *q, json_object *input,
                                   const char *why)
{
    json_object *items = json_object_new_array();
    json_object *loc = json_object_new_array();
    json_object *ctx = json_object_new_object();

    json_object_array_add(loc, json_object_new_string("body"));
    json_object_object_add(ctx, "error", json_object_new_string(why));
    json_object_array_add(items, tllm_error_item(
                              "value_error", loc,
                              apr_pstrcat(q->r->pool, "Value error, ", why,
                                          NULL),
                              input, ctx));
    return tllm_send_invalid(q->r, items);
}

/* One trace in, one trace (or its error) out, as the whole response. */
static int ingest_one(tllm_req *q, tllm_db *db, const tllm_ingest_ctx *ctx,
                      json_object *body, int64_t *last_seq)
{
    json_object *errors = json_object_new_array();
    tllm_trace *trace = NULL;
    const char *detail = NULL;
    int result;

    switch (tllm_trace_normalize(q->r->pool, body, ctx, -1, &trace, errors,
                                 &detail)) {
    case TLLM_TRACE_OK:
        json_object_put(errors);
        break;
    case TLLM_TRACE_FORBIDDEN:
        json_object_put(errors);
        return tllm_send_detail(q->r, HTTP_FORBIDDEN, detail);
    default:
        return tllm_send_invalid(q->r, errors);
    }
    tllm_store_pack_bodies(q->r->pool, &trace, 1);  /* before the lock */
    if (tllm_group_commit_put(q->r, db, &trace, 1, &result, last_seq)
        != TLLM_OK) {
        return tllm_send_store_error(q, db, "storing a trace");
    }
    if (result == TLLM_CONFLICT) {
        return tllm_send_detail(q->r, HTTP_CONFLICT,
                                apr_psprintf(q->r->pool, "Trace '%s' belongs "
                                             "to another project",
                                             trace->trace_id));
    }
    return tllm_send_json(q->r, HTTP_CREATED, trace->json, trace->json_len);
}

static void add_rejected(tllm_sb *sb, int *first, int index, int status,
                         const char *detail_json)
{
    tllm_sb_str(sb, *first ? "{\"index\":" : ",{\"index\":");
    tllm_sb_int(sb, index);
    tllm_sb_str(sb, ",\"status\":");
    tllm_sb_int(sb, status);
    tllm_sb_str(sb, ",\"detail\":");
    tllm_sb_str(sb, detail_json);
    tllm_sb_str(sb, "}");
    *first = 0;
}

/* A batch: every valid trace stored in one transaction, every invalid one
 * reported by index. */
static int ingest_batch(tllm_req *q, tllm_db *db, const tllm_ingest_ctx *ctx,
                        json_object *items, int64_t *last_seq)
{
    apr_pool_t *p = tllm_req_bulk_pool(q);
    int n = (int)json_object_array_length(items);
    tllm_trace **valid = apr_pcalloc(p, sizeof(*valid) * (n + 1));
    int *index = apr_pcalloc(p, sizeof(*index) * (n + 1));
    int *results = apr_pcalloc(p, sizeof(*results) * (n + 1));
    const char **rejection = apr_pcalloc(p, sizeof(*rejection) * (n + 1));
    int *rejected_status = apr_pcalloc(p, sizeof(int) * (n + 1));
    int nvalid = 0, i, first = 1, accepted = 0;
    tllm_sb sb;

    for (i = 0; i < n; i++) {
        json_object *errors = json_object_new_array();
        const char *detail = NULL;
        tllm_trace *trace = NULL;
        switch (tllm_trace_normalize(p, json_object_array_get_idx(items, i),
                                     ctx, i, &trace, errors, &detail)) {
        case TLLM_TRACE_OK:
            index[nvalid] = i;
            valid[nvalid++] = trace;
            break;
        case TLLM_TRACE_FORBIDDEN:
            rejected_status[i] = HTTP_FORBIDDEN;
            tllm_sb_init(&sb, p, 64);
            tllm_sb_jstr(&sb, detail);
            rejection[i] = sb.data;
            break;
        default:
            rejected_status[i] = HTTP_UNPROCESSABLE_ENTITY;
            rejection[i] = apr_pstrdup(p, tllm_json_text(errors, NULL));
        }
        json_object_put(errors);
    }
    tllm_store_pack_bodies(p, valid, nvalid);  /* before the lock */
    if (nvalid && tllm_group_commit_put(q->r, db, valid, nvalid, results,
                                        last_seq) != TLLM_OK) {
        return tllm_send_store_error(q, db, "storing a batch of traces");
    }
    for (i = 0; i < nvalid; i++) {
        if (results[i] == TLLM_CONFLICT) {
            tllm_sb_init(&sb, p, 64);
            tllm_sb_jstr(&sb, apr_psprintf(p, "Trace '%s' belongs to "
                                           "another project",
                                           valid[i]->trace_id));
            rejected_status[index[i]] = HTTP_CONFLICT;
            rejection[index[i]] = sb.data;
        }
    }

    tllm_sb_init(&sb, p, 128 + 48 * (apr_size_t)n);
    tllm_sb_str(&sb, "{\"accepted\":");
    for (i = 0; i < nvalid; i++) {
        accepted += results[i] == TLLM_OK;
    }
    tllm_sb_int(&sb, accepted);
    tllm_sb_str(&sb, ",\"trace_ids\":[");
    for (i = 0; i < nvalid; i++) {
        if (results[i] == TLLM_OK) {
            tllm_sb_str(&sb, first ? "" : ",");
            tllm_sb_jstr(&sb, valid[i]->trace_id);
            first = 0;
        }
    }
    tllm_sb_str(&sb, "],\"rejected\":[");
    first = 1;
    for (i = 0; i < n; i++) {
        if (rejection[i]) {
            add_rejected(&sb, &first, i, rejected_status[i], rejection[i]);
        }
    }
    tllm_sb_str(&sb, "]}");
    return tllm_send_sb(q->r, HTTP_OK, &sb);
}

int tllm_api_ingest(tllm_req *q)
{
    tllm_db *db = tllm_req_db(q);
    tllm_key *key;
    json_object *body, *items;
    tllm_ingest_ctx ctx;
    int64_t last_seq = 0;
    int rc;

    if (!db) {
        return tllm_send_store_error(q, db, "ingesting");
    }
    key = authenticate(q, db);
    if (!key) {
        return OK;
    }
    if (tllm_read_json_body(q, 1, &body)) {
        return OK;
    }
    ctx.project_id = key->project_id;
    ctx.environment = key->environment;
    ctx.slow_threshold_ms = q->conf->slow_threshold_ms;
    ctx.now_us = q->now_us;

    items = batch_items(body);
    if (items) {
        if (json_object_array_length(items) > TLLM_BATCH_MAX) {
            return send_whole_body_invalid(q, NULL, apr_psprintf(
                                               q->r->pool, "at most %d traces "
                                               "per request",
                                               TLLM_BATCH_MAX));
        }
        rc = ingest_batch(q, db, &ctx, items, &last_seq);
    }
    else if (json_object_is_type(body, json_type_object)) {
        if (json_object_object_get_ex(body, "traces", NULL)) {
            return send_whole_body_invalid(q, NULL, "traces must be a list");
        }
        rc = ingest_one(q, db, &ctx, body, &last_seq);
    }
    else {
        return send_whole_body_invalid(q, json_object_get(body),
                                       "the body must be a trace object or "
                                       "a list of traces");
    }
    /* last_used_at is refreshed at most once a minute; the key as read
     * (or cached, with this child's own touches) tells whether it is due,
     * so most ingests write nothing more. */
    if (last_seq > 0 && tllm_store_key_touch_due(key, q->now_us)) {
        if (tllm_store_key_touch(db, key->key_id, q->now_us) == TLLM_OK) {
            tllm_key_cache_touched(key->hash, q->now_us);
        }
        else {
            /* The traces are stored; a missed last_used_at is only
             * logged. */
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, q->r,
                          "TLLM0401: could not record the key's use: %s",
                          tllm_db_errmsg(db));
        }
    }
    return rc;
}
