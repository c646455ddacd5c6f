/*
 * api_projects.c - projects and their API keys: GET/POST /projects,
 * GET/POST /api-keys, DELETE /api-keys/{key_id}.
 */
#include <httpd.h>
#include <http_log.h>
#include <apr_strings.h>

#include "mod_tracellm.h"
#include "request.h"
#include "jsonutil.h"
#include "keys.h"

APLOG_USE_MODULE(tracellm);

#define TLLM_NAME_MAX         100
#define TLLM_DESCRIPTION_MAX  1000

/* Parameters come from a JSON body object if there is a body, else from
 * the query. Returns 0 with ps ready, or the status already sent. */
static int read_params(tllm_req *q, tllm_params *ps)
{
    json_object *body;
    int rc = tllm_read_json_body(q, 0, &body);

    if (rc) {
        return rc;
    }
    if (body && !json_object_is_type(body, json_type_object)) {
        json_object *items = json_object_new_array();
        json_object *loc = json_object_new_array();
        json_object *ctx = json_object_new_object();
        json_object_array_add(loc, json_object_new_string("body"));
        json_object_object_add(ctx, "error", json_object_new_string(
                                   "the body must be a JSON object"));
        json_object_array_add(items, tllm_error_item(
                                  "value_error", loc,
                                  "Value error, the body must be a JSON "
                                  "object", json_object_get(body), ctx));
        tllm_send_invalid(q->r, items);
        return HTTP_UNPROCESSABLE_ENTITY;
    }
    tllm_params_init(ps, q, body);
    return 0;
}

static int send_params_invalid(tllm_req *q, tllm_params *ps)
{
    return tllm_send_invalid(q->r, json_object_get(ps->errors));
}

static void add_project(tllm_sb *sb, const tllm_project *p)
{
    tllm_sb_str(sb, "{\"project_id\":");
    tllm_sb_jstr(sb, p->project_id);
    tllm_sb_str(sb, ",\"name\":");
    tllm_sb_jstr(sb, p->name);
    tllm_sb_str(sb, ",\"description\":");
    tllm_sb_jstr(sb, p->description);
    tllm_sb_str(sb, ",\"created_at\":");
    tllm_sb_time(sb, p->created_at);
    tllm_sb_str(sb, "}");
}

/* The key as shown once at creation: the full text, never again. */
static void add_new_key(tllm_sb *sb, const tllm_key *k, const char *full)
{
    tllm_sb_str(sb, "{\"key\":");
    tllm_sb_jstr(sb, full);
    tllm_sb_str(sb, ",\"key_id\":");
    tllm_sb_jstr(sb, k->key_id);
    tllm_sb_str(sb, ",\"project_id\":");
    tllm_sb_jstr(sb, k->project_id);
    tllm_sb_str(sb, ",\"environment\":");
    tllm_sb_jstr(sb, k->environment);
    tllm_sb_str(sb, ",\"created_at\":");
    tllm_sb_time(sb, k->created_at);
    tllm_sb_str(sb, "}");
}

int tllm_api_projects_list(tllm_req *q)
{
    tllm_db *db = tllm_req_db(q);
    apr_array_header_t *projects;
    tllm_sb sb;
    int i;

    if (!db || tllm_store_projects(db, q->r->pool, &projects) != TLLM_OK) {
        return tllm_send_store_error(q, db, "listing projects");
    }
    tllm_sb_init(&sb, q->r->pool, 256 * (projects->nelts + 1));
    tllm_sb_str(&sb, "[");
    for (i = 0; i < projects->nelts; i++) {
        if (i) {
            tllm_sb_str(&sb, ",");
        }
        add_project(&sb, &APR_ARRAY_IDX(projects, i, tllm_project));
    }
    tllm_sb_str(&sb, "]");
    return tllm_send_sb(q->r, HTTP_OK, &sb);
}

int tllm_api_projects_create(tllm_req *q)
{
    tllm_params ps;
    tllm_project project;
    tllm_key key;
    const char *environment, *full;
    tllm_db *db;
    tllm_sb sb;
    int rc = read_params(q, &ps);

    if (rc) {
        return OK;
    }
    project.name = tllm_param_str(&ps, "name", 1, TLLM_NAME_MAX);
    environment = tllm_param_env(&ps, "environment", 1);
    project.description = tllm_param_str(&ps, "description", 0,
                                         TLLM_DESCRIPTION_MAX);
    if (json_object_array_length(ps.errors)) {
        return send_params_invalid(q, &ps);
    }
    if (!project.description) {
        project.description = "";
    }
    project.created_at = q->now_us;
    project.project_id = tllm_slug(q->r->pool, project.name);
    full = project.project_id
           ? tllm_key_generate(q->r->pool, project.project_id, environment,
                               q->now_us, &key)
           : NULL;
    if (!full) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r,
                      "TLLM0301: the random source failed");
        return tllm_send_detail(q->r, HTTP_INTERNAL_SERVER_ERROR,
                                "Internal error");
    }
    db = tllm_req_db(q);
    rc = db ? tllm_store_project_create(db, &project, &key) : TLLM_ERROR;
    if (rc == TLLM_CONFLICT) {
        return tllm_send_detail(q->r, HTTP_CONFLICT,
                                "Project already exists");
    }
    if (rc != TLLM_OK) {
        return tllm_send_store_error(q, db, "creating a project");
    }
    tllm_sb_init(&sb, q->r->pool, 512);
    tllm_sb_str(&sb, "{\"project\":");
    add_project(&sb, &project);
    tllm_sb_str(&sb, ",\"api_key\":");
    add_new_key(&sb, &key, full);
    tllm_sb_str(&sb, "}");
    return tllm_send_sb(q->r, HTTP_CREATED, &sb);
}

int tllm_api_keys_list(tllm_req *q)
{
    tllm_params ps;
    const char *project_id;
    apr_array_header_t *keys;
    tllm_db *db;
    tllm_sb sb;
    int i;

    tllm_params_init(&ps, q, NULL);
    project_id = tllm_param_str(&ps, "project_id", 0, 0);
    db = tllm_req_db(q);
    if (!db || tllm_store_keys(db, q->r->pool, project_id, &keys)
               != TLLM_OK) {
        return tllm_send_store_error(q, db, "listing API keys");
    }
    tllm_sb_init(&sb, q->r->pool, 256 * (keys->nelts + 1));
    tllm_sb_str(&sb, "[");
    for (i = 0; i < keys->nelts; i++) {
        const tllm_key *k = &APR_ARRAY_IDX(keys, i, tllm_key);
        tllm_sb_str(&sb, i ? ",{\"key_id\":" : "{\"key_id\":");
        tllm_sb_jstr(&sb, k->key_id);
        tllm_sb_str(&sb, ",\"key\":");
        tllm_sb_jstr(&sb, tllm_key_mask(q->r->pool, k));
        tllm_sb_str(&sb, ",\"project_id\":");
        tllm_sb_jstr(&sb, k->project_id);
        tllm_sb_str(&sb, ",\"environment\":");
        tllm_sb_jstr(&sb, k->environment);
        tllm_sb_str(&sb, ",\"created_at\":");
        tllm_sb_time(&sb, k->created_at);
        tllm_sb_str(&sb, ",\"last_used_at\":");
        if (k->last_used_at < 0) {
            tllm_sb_str(&sb, "null");
        }
        else {
            tllm_sb_time(&sb, k->last_used_at);
        }
        tllm_sb_str(&sb, k->revoked ? ",\"revoked\":true}"
                                    : ",\"revoked\":false}");
    }
    tllm_sb_str(&sb, "]");
    return tllm_send_sb(q->r, HTTP_OK, &sb);
}

int tllm_api_keys_create(tllm_req *q)
{
    tllm_params ps;
    tllm_key key;
    const char *project_id, *environment, *full;
    tllm_db *db;
    tllm_sb sb;
    int rc = read_params(q, &ps);

    if (rc) {
        return OK;
    }
    project_id = tllm_param_str(&ps, "project_id", 1, 0);
    environment = tllm_param_env(&ps, "environment", 1);
    if (json_object_array_length(ps.errors)) {
        return send_params_invalid(q, &ps);
    }
    full = tllm_key_generate(q->r->pool, project_id, environment, q->now_us,
                             &key);
    if (!full) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r,
                      "TLLM0301: the random source failed");
        return tllm_send_detail(q->r, HTTP_INTERNAL_SERVER_ERROR,
                                "Internal error");
    }
    db = tllm_req_db(q);
    rc = db ? tllm_store_key_create(db, &key) : TLLM_ERROR;
    if (rc == TLLM_NOTFOUND) {
        return tllm_send_detail(q->r, HTTP_NOT_FOUND, "Project not found");
    }
    if (rc != TLLM_OK) {
        return tllm_send_store_error(q, db, "creating an API key");
    }
    tllm_sb_init(&sb, q->r->pool, 256);
    tllm_sb_str(&sb, "{\"api_key\":");
    add_new_key(&sb, &key, full);
    tllm_sb_str(&sb, "}");
    return tllm_send_sb(q->r, HTTP_CREATED, &sb);
}

int tllm_api_keys_revoke(tllm_req *q)
{
    tllm_db *db = tllm_req_db(q);
    int rc = db ? tllm_store_key_revoke(db, q->param) : TLLM_ERROR;

    if (rc == TLLM_NOTFOUND) {
        return tllm_send_detail(q->r, HTTP_NOT_FOUND, "API key not found");
    }
    if (rc != TLLM_OK) {
        return tllm_send_store_error(q, db, "revoking an API key");
    }
    q->r->status = HTTP_NO_CONTENT;
    return OK;
}
