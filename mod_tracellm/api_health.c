/*
 * api_health.c - GET /: is the backend up, and does its database answer.
 */
#include <httpd.h>
#include <http_log.h>

#include "mod_tracellm.h"
#include "request.h"

APLOG_USE_MODULE(tracellm);

int tllm_api_health(tllm_req *q)
{
    tllm_db *db = tllm_req_db(q);
    int ok = db && tllm_store_ping(db) == TLLM_OK;
    tllm_sb sb;

    if (db && !ok) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r,
                      "TLLM0201: health check failed: %s",
                      tllm_db_errmsg(db));
    }
    tllm_sb_init(&sb, q->r->pool, 128);
    tllm_sb_str(&sb, "{\"message\":\"TraceLLM backend running\","
                     "\"storage_type\":");
    tllm_sb_jstr(&sb, tllm_storage_type());
    tllm_sb_str(&sb, ok ? ",\"database\":\"ok\"}" : ",\"database\":\"error\"}");
    return tllm_send_sb(q->r, ok ? HTTP_OK : HTTP_SERVICE_UNAVAILABLE, &sb);
}
