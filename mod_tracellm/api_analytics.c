/*
 * api_analytics.c - GET /analytics and GET /failures: the store computes
 * exact figures over every matching trace; this file rounds and shapes.
 */
#include <httpd.h>
#include <apr_strings.h>

#include "mod_tracellm.h"
#include "request.h"
#include "jsonutil.h"

#define TLLM_FAILURES_DEFAULT 25
#define TLLM_FAILURES_MAX     100

/* project_id and environment from the query (empty = any). */
static void parse_scope(tllm_params *ps, const char **project_id,
                        const char **environment)
{
    *project_id = tllm_param_str(ps, "project_id", 0, 0);
    *environment = tllm_param_str(ps, "environment", 0, 0);
}

static void add_counter(tllm_sb *sb, const char *name, int64_t v, int first)
{
    tllm_sb_str(sb, first ? "\"" : ",\"");
    tllm_sb_str(sb, name);
    tllm_sb_str(sb, "\":");
    tllm_sb_int(sb, v);
}

static void add_rounded(tllm_sb *sb, const char *name, double v)
{
    tllm_sb_str(sb, ",\"");
    tllm_sb_str(sb, name);
    tllm_sb_str(sb, "\":");
    tllm_sb_round2(sb, v);
}

static void add_summary(tllm_sb *sb, const tllm_analytics *a)
{
    double rate = a->total_traces
                  ? 100.0 * (double)a->success_traces / (double)a->total_traces
                  : 0;

    tllm_sb_str(sb, "\"summary\":{");
    add_counter(sb, "total_traces", a->total_traces, 1);
    add_rounded(sb, "success_rate", rate);
    add_rounded(sb, "average_latency", a->average_latency);
    add_rounded(sb, "p95_latency", a->p95_latency);
    add_counter(sb, "total_token_usage", a->total_tokens, 0);
    add_counter(sb, "failed_traces", a->failed_traces, 0);
    add_counter(sb, "warning_traces", a->warning_traces, 0);
    add_counter(sb, "retries", a->retries, 0);
    add_counter(sb, "slow_requests", a->slow_requests, 0);
    tllm_sb_str(sb, "}");
}

static void add_charts(tllm_sb *sb, const tllm_analytics *a)
{
    int h;

    tllm_sb_str(sb, ",\"charts\":[");
    for (h = 0; a->total_traces && h < 24; h++) {
        /* The label is the bucket's UTC hour: 3600 s per hour, 24 a day
         * (the last 24 hours: never before 1970). */
        int hour = (int)((a->hour_start[h] / APR_INT64_C(3600000000)) % 24);
        char label[6] = { (char)('0' + hour / 10), (char)('0' + hour % 10),
                          ':', '0', '0', '\0' };

        tllm_sb_str(sb, h ? ",{\"label\":\"" : "{\"label\":\"");
        tllm_sb_str(sb, label);
        tllm_sb_str(sb, "\",\"start\":");
        tllm_sb_time(sb, a->hour_start[h]);
        add_rounded(sb, "latency", a->hour_latency[h]);
        add_counter(sb, "tokens", a->hour_tokens[h], 0);
        add_counter(sb, "traces", a->hour_traces[h], 0);
        tllm_sb_str(sb, "}");
    }
    tllm_sb_str(sb, "]");
}

static void add_breakdown(tllm_sb *sb, const char *name,
                          const apr_array_header_t *counts)
{
    int i;

    tllm_sb_str(sb, ",\"");
    tllm_sb_str(sb, name);
    tllm_sb_str(sb, "\":[");
    for (i = 0; i < counts->nelts; i++) {
        const tllm_count *c = &APR_ARRAY_IDX(counts, i, tllm_count);
        tllm_sb_str(sb, i ? ",{\"key\":" : "{\"key\":");
        tllm_sb_jstr(sb, c->key);
        add_counter(sb, "count", c->count, 0);
        tllm_sb_str(sb, "}");
    }
    tllm_sb_str(sb, "]");
}

int tllm_api_analytics(tllm_req *q)
{
    tllm_params ps;
    const char *project_id, *environment;
    tllm_analytics a;
    tllm_db *db;
    tllm_sb sb;

    tllm_params_init(&ps, q, NULL);
    parse_scope(&ps, &project_id, &environment);
    db = tllm_req_db(q);
    if (!db || tllm_store_analytics(db, q->r->pool, project_id, environment,
                                    q->now_us, &a) != TLLM_OK) {
        return tllm_send_store_error(q, db, "computing analytics");
    }
    /* Summary, 24 hours and the breakdowns take well under 8 KB; the
     * recent failures are spliced in, not copied. */
    tllm_sb_init(&sb, q->r->pool, 8192);
    tllm_sb_str(&sb, "{");
    add_summary(&sb, &a);
    add_charts(&sb, &a);
    add_breakdown(&sb, "status_breakdown", a.by_status);
    add_breakdown(&sb, "model_breakdown", a.by_model);
    add_breakdown(&sb, "project_breakdown", a.by_project);
    tllm_sb_str(&sb, ",\"recent_failures\":");
    tllm_sb_texts(&sb, a.recent_failures);
    tllm_sb_str(&sb, "}");
    return tllm_send_sb(q->r, HTTP_OK, &sb);
}

int tllm_api_failures(tllm_req *q)
{
    tllm_params ps;
    const char *project_id, *environment;
    int64_t limit;
    tllm_failures f;
    tllm_db *db;
    tllm_sb sb;
    apr_pool_t *bulk;

    tllm_params_init(&ps, q, NULL);
    tllm_param_int(&ps, "limit", TLLM_FAILURES_DEFAULT, 1, TLLM_FAILURES_MAX,
                   &limit);
    parse_scope(&ps, &project_id, &environment);
    if (json_object_array_length(ps.errors)) {
        return tllm_send_invalid(q->r, json_object_get(ps.errors));
    }
    db = tllm_req_db(q);
    bulk = tllm_req_bulk_pool(q);
    if (!db || tllm_store_failures(db, bulk, project_id, environment,
                                   (int)limit, &f) != TLLM_OK) {
        return tllm_send_store_error(q, db, "listing failures");
    }
    tllm_sb_init(&sb, bulk, 256 + f.failed->nelts + f.retried->nelts
                                  + f.slow->nelts);
    tllm_sb_str(&sb, "{\"failed_traces\":");
    tllm_sb_texts(&sb, f.failed);
    tllm_sb_str(&sb, ",\"retries\":");
    tllm_sb_texts(&sb, f.retried);
    tllm_sb_str(&sb, ",\"slow_requests\":");
    tllm_sb_texts(&sb, f.slow);
    tllm_sb_str(&sb, ",\"totals\":{");
    add_counter(&sb, "failed_traces", f.failed_total, 1);
    add_counter(&sb, "retries", f.retried_total, 0);
    add_counter(&sb, "slow_requests", f.slow_total, 0);
    tllm_sb_str(&sb, "}}");
    return tllm_send_sb(q->r, HTTP_OK, &sb);
}
