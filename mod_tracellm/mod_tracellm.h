/*
 * mod_tracellm.h - what the module's files share: the per-directory
 * configuration, the per-request context every route handler receives,
 * and the handlers themselves (one file per resource).
 */
#ifndef MOD_TRACELLM_H
#define MOD_TRACELLM_H

#include <httpd.h>
#include <http_config.h>
#include <apr_optional.h>
#include "store.h"

extern module AP_MODULE_DECLARE_DATA tracellm_module;

#define TLLM_DEFAULT_SLOW_MS   1500.0
#define TLLM_DEFAULT_MAX_BODY  (1024 * 1024)

/** Per-directory configuration (the <Location> the handler is mounted on).
 *  Each value has a _set flag so merges can tell "not set" from a value. */
typedef struct {
    double slow_threshold_ms;   /* TraceLLMSlowThreshold */
    apr_off_t max_body;         /* TraceLLMMaxBody */
    unsigned int slow_threshold_set:1;
    unsigned int max_body_set:1;
} tllm_dir_conf;

/** One request as the route handlers see it. */
typedef struct {
    request_rec *r;
    const tllm_dir_conf *conf;
    const char *mount;          /* the <Location> path, no trailing "/" */
    const char *path;           /* below the mount, starts with "/" */
    const char *param;          /* the decoded {id} segment, or NULL */
    apr_table_t *query;         /* decoded query parameters, last wins */
    int64_t now_us;             /* one "now" per request */
    apr_pool_t *bulk;           /* tllm_req_bulk_pool's, NULL until asked */
} tllm_req;

typedef int (*tllm_route_fn)(tllm_req *q);

/** A whole-number directive of the main server only: NULL with *out set
 *  if arg is a number from min to max, else the error that makes httpd -t
 *  fail ("<name> must be a number of <unit> from <min> (<min_means>) to
 *  <max>, not '<arg>'"; min_means may be NULL). */
const char *tllm_global_number(cmd_parms *cmd, const char *arg, long min,
                               long max, const char *unit,
                               const char *min_means, long *out);

/** The database connection for this request, from mod_dbd's pool,
 *  released with the request. NULL (and the failure logged) if none can be
 *  had; the caller answers 503. */
tllm_db *tllm_req_db(tllm_req *q);

/** The storage type GET / reports ("sqlite"). */
const char *tllm_storage_type(void);

/* Route handlers: each answers the request (status and JSON body set) and
 * returns OK. */
int tllm_api_health(tllm_req *q);
int tllm_api_traces_list(tllm_req *q);
int tllm_api_trace_get(tllm_req *q);
int tllm_api_ingest(tllm_req *q);
int tllm_api_analytics(tllm_req *q);
int tllm_api_failures(tllm_req *q);
int tllm_api_projects_list(tllm_req *q);
int tllm_api_projects_create(tllm_req *q);
int tllm_api_keys_list(tllm_req *q);
int tllm_api_keys_create(tllm_req *q);
int tllm_api_keys_revoke(tllm_req *q);
int tllm_api_openapi(tllm_req *q);
int tllm_api_docs(tllm_req *q);

#endif
