/*
 * mod_tracellm.c - the module record, its directives and hooks, and the
 * one handler: strip the <Location> prefix, look (method, path) up in the
 * route table, call the route's function. Everything a route does lives in
 * the api_*.c file of its resource.
 */
#include <stdlib.h>
#include <string.h>

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_protocol.h>
#include <http_request.h>
#include <apr_strings.h>
#include <apr_dbd.h>
#include <mod_dbd.h>

#include "mod_tracellm.h"
#include "database.h"
#include "eventd_supervisor.h"
#include "request.h"
#include "ttime.h"
#include "child_memory.h"
#include "dbd_expiry.h"
#include "wal_drain.h"
#include "write_lock.h"
#include "group_commit.h"
#include "aggregate_gate.h"
#include "wal_buffer.h"

APLOG_USE_MODULE(tracellm);

static APR_OPTIONAL_FN_TYPE(ap_dbd_acquire) *dbd_acquire;

#ifndef TLLM_EVENTD_PATH
#define TLLM_EVENTD_PATH "/usr/sbin/tracellm-eventd"
#endif

/* ---- configuration ----------------------------------------------------- */

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    tllm_dir_conf *conf = apr_pcalloc(p, sizeof(*conf));

    conf->slow_threshold_ms = TLLM_DEFAULT_SLOW_MS;
    conf->max_body = TLLM_DEFAULT_MAX_BODY;
    return conf;
}

static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    const tllm_dir_conf *base = basev, *add = addv;
    tllm_dir_conf *conf = apr_pcalloc(p, sizeof(*conf));

    conf->slow_threshold_ms = add->slow_threshold_set
                              ? add->slow_threshold_ms
                              : base->slow_threshold_ms;
    conf->slow_threshold_set = add->slow_threshold_set
                               || base->slow_threshold_set;
    conf->max_body = add->max_body_set ? add->max_body : base->max_body;
    conf->max_body_set = add->max_body_set || base->max_body_set;
    return conf;
}

static const char *set_slow_threshold(cmd_parms *cmd, void *dconf,
                                      const char *arg)
{
    tllm_dir_conf *conf = dconf;
    char *end;
    double v = strtod(arg, &end);

    if (end == arg || *end || !(v >= 0) || v > 1e12) {
        return apr_psprintf(cmd->pool, "%s must be a number of "
                            "milliseconds >= 0, not '%s'",
                            cmd->cmd->name, arg);
    }
    conf->slow_threshold_ms = v;
    conf->slow_threshold_set = 1;
    return NULL;
}

static const char *set_max_body(cmd_parms *cmd, void *dconf, const char *arg)
{
    tllm_dir_conf *conf = dconf;
    char *end;
    apr_off_t v;

    if (apr_strtoff(&v, arg, &end, 10) != APR_SUCCESS || *end || v <= 0) {
        return apr_psprintf(cmd->pool, "%s must be a positive number of "
                            "bytes, not '%s'", cmd->cmd->name, arg);
    }
    conf->max_body = v;
    conf->max_body_set = 1;
    return NULL;
}

/* Server-wide: the event process. */
static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    tllm_eventd_conf *conf = apr_pcalloc(p, sizeof(*conf));
    conf->enabled = -1;
    return conf;
}

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    const tllm_eventd_conf *base = basev, *add = addv;
    tllm_eventd_conf *conf = apr_pcalloc(p, sizeof(*conf));

    conf->enabled = add->enabled != -1 ? add->enabled : base->enabled;
    conf->listen = add->listen ? add->listen : base->listen;
    conf->socket = add->socket ? add->socket : base->socket;
    conf->binary = add->binary ? add->binary : base->binary;
    conf->queue = add->queue ? add->queue : base->queue;
    return conf;
}

static tllm_eventd_conf *srv_conf(cmd_parms *cmd)
{
    return ap_get_module_config(cmd->server->module_config,
                                &tracellm_module);
}

static const char *set_eventd(cmd_parms *cmd, void *dconf, int on)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    if (err) {
        return err;
    }
    srv_conf(cmd)->enabled = on;
    return NULL;
}

static const char *set_eventd_listen(cmd_parms *cmd, void *dconf,
                                     const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    const char *why = err ? NULL : tllm_eventd_check_listen(cmd->pool, arg);

    if (err) {
        return err;
    }
    if (why) {
        return apr_psprintf(cmd->pool, "%s %s: %s", cmd->cmd->name, arg,
                            why);
    }
    srv_conf(cmd)->listen = arg;
    return NULL;
}

const char *tllm_global_number(cmd_parms *cmd, const char *arg, long min,
                               long max, const char *unit,
                               const char *min_means, long *out)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char *end;
    long n;

    if (err) {
        return err;
    }
    n = strtol(arg, &end, 10);
    if (end == arg || *end || n < min || n > max) {
        return apr_psprintf(cmd->pool, "%s must be a number of %s from "
                            "%ld%s%s%s to %ld, not '%s'", cmd->cmd->name,
                            unit, min, min_means ? " (" : "",
                            min_means ? min_means : "",
                            min_means ? ")" : "", max, arg);
    }
    *out = n;
    return NULL;
}

static const char *set_eventd_queue(cmd_parms *cmd, void *dconf,
                                    const char *arg)
{
    long n;
    const char *err = tllm_global_number(cmd, arg, 1, 1000000, "messages",
                                         NULL, &n);

    if (err) {
        return err;
    }
    srv_conf(cmd)->queue = arg;     /* passed to the event process as is */
    return NULL;
}

static const char *set_eventd_path(cmd_parms *cmd, void *dconf,
                                   const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    const char *path;

    if (err) {
        return err;
    }
    path = ap_server_root_relative(cmd->pool, arg);
    if (!path) {
        return apr_psprintf(cmd->pool, "%s: invalid path '%s'",
                            cmd->cmd->name, arg);
    }
    if (cmd->info) {
        srv_conf(cmd)->binary = path;
    }
    else {
        srv_conf(cmd)->socket = path;
    }
    return NULL;
}

static const command_rec tllm_cmds[] = {
    AP_INIT_TAKE1("TraceLLMSlowThreshold", set_slow_threshold, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "Latency in ms from which a trace counts as slow "
                  "(default 1500)"),
    AP_INIT_TAKE1("TraceLLMMaxBody", set_max_body, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "Largest request body accepted, in bytes (default 1 MiB)"),
    AP_INIT_TAKE1("TraceLLMCacheMemory", tllm_child_memory_set_cache, NULL,
                  RSRC_CONF, "SQLite memory of each child, in MiB, which its "
                  "page caches share; 0 = no limit (default 64)"),
    AP_INIT_TAKE1("TraceLLMAggregateConcurrency",
                  tllm_aggregate_gate_set, NULL, RSRC_CONF,
                  "/analytics and /failures requests each child computes "
                  "at once, the others waiting in order; 0 = no limit "
                  "(default: online CPUs)"),
    AP_INIT_FLAG("TraceLLMEventd", set_eventd, NULL, RSRC_CONF,
                 "Run tracellm-eventd, the live event process (default Off)"),
    AP_INIT_TAKE1("TraceLLMEventdListen", set_eventd_listen, NULL, RSRC_CONF,
                  "Loopback host:port tracellm-eventd listens on "
                  "(default " TLLM_EVENTD_DEFAULT_LISTEN ")"),
    AP_INIT_TAKE1("TraceLLMEventdQueue", set_eventd_queue, NULL, RSRC_CONF,
                  "Events a WebSocket client may fall behind before it is "
                  "closed with 1008 (default " TLLM_EVENTD_DEFAULT_QUEUE ")"),
    AP_INIT_TAKE1("TraceLLMEventSocket", set_eventd_path, NULL, RSRC_CONF,
                  "Datagram socket that wakes tracellm-eventd after an "
                  "ingest (default: DefaultRuntimeDir/tracellm/eventd.sock)"),
    AP_INIT_TAKE1("TraceLLMEventdBinary", set_eventd_path, (void *)1,
                  RSRC_CONF, "Path of the tracellm-eventd program "
                  "(default " TLLM_EVENTD_PATH ")"),
    { NULL }
};

/* ---- the database ------------------------------------------------------ */

const char *tllm_storage_type(void)
{
    return "sqlite";
}

tllm_db *tllm_req_db(tllm_req *q)
{
    ap_dbd_t *dbd;
    const char *driver;
    tllm_db *db;

    tllm_wal_drain_wait();
    dbd = dbd_acquire(q->r);
    if (!dbd) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r,
                      "TLLM0005: no database connection from mod_dbd "
                      "(check DBDriver/DBDParams and the error log)");
        return NULL;
    }
    /* A virtual host may configure its own DBDriver. */
    driver = apr_dbd_name(dbd->driver);
    if (strcmp(driver, "sqlite3") != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r,
                      "TLLM0003: DBDriver %s is not supported; use sqlite3",
                      driver);
        return NULL;
    }
    db = tllm_db_attach(dbd->pool,
                        apr_dbd_native_handle(dbd->driver, dbd->handle));
    if (!db) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r,
                      "TLLM0004: could not set up the SQLite connection");
        return NULL;
    }
    tllm_store_use(db, q->r->pool);
    return db;
}

/* ---- routes ------------------------------------------------------------ */

typedef struct {
    const char *method;
    const char *pattern;        /* a trailing "*" matches one segment */
    tllm_route_fn fn;
    int aggregate;              /* computed in a turn (aggregate_gate.h) */
} tllm_route;

static const tllm_route routes[] = {
    { "GET",    "/",             tllm_api_health,          0 },
    { "GET",    "/traces",       tllm_api_traces_list,     0 },
    { "POST",   "/traces",       tllm_api_ingest,          0 },
    { "GET",    "/traces/*",     tllm_api_trace_get,       0 },
    { "GET",    "/analytics",    tllm_api_analytics,       1 },
    { "GET",    "/failures",     tllm_api_failures,        1 },
    { "GET",    "/projects",     tllm_api_projects_list,   0 },
    { "POST",   "/projects",     tllm_api_projects_create, 0 },
    { "GET",    "/api-keys",     tllm_api_keys_list,       0 },
    { "POST",   "/api-keys",     tllm_api_keys_create,     0 },
    { "DELETE", "/api-keys/*",   tllm_api_keys_revoke,     0 },
    { "GET",    "/openapi.json", tllm_api_openapi,         0 },
    { "GET",    "/docs",         tllm_api_docs,            0 },
};
#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* Does path match pattern? On a "*" match, *param gets the segment. */
static int route_matches(const char *pattern, const char *path,
                         const char **param)
{
    apr_size_t n = strlen(pattern);

    if (pattern[n - 1] != '*') {
        return strcmp(pattern, path) == 0;
    }
    if (strncmp(pattern, path, n - 1) != 0) {
        return 0;
    }
    path += n - 1;
    if (!*path || strchr(path, '/')) {
        return 0;
    }
    *param = path;
    return 1;
}

/* Last value wins for a repeated parameter; "+" is a space. */
static apr_table_t *parse_query(apr_pool_t *p, const char *args)
{
    apr_table_t *t = apr_table_make(p, 8);
    char *copy, *pair, *state;

    if (!args) {
        return t;
    }
    copy = apr_pstrdup(p, args);
    for (pair = apr_strtok(copy, "&", &state); pair;
         pair = apr_strtok(NULL, "&", &state)) {
        char *eq = strchr(pair, '=');
        char *val = "";
        if (eq) {
            *eq = '\0';
            val = eq + 1;
        }
        if (ap_unescape_urlencoded(pair) || ap_unescape_urlencoded(val)) {
            continue;           /* a malformed escape: ignore the pair */
        }
        apr_table_set(t, pair, val);
    }
    return t;
}

/* The mount point: the path of the innermost section that configured the
 * core (SetHandler tracellm is a core directive, so ours has), without a
 * trailing "/". A section whose path is not a prefix of the URI (a
 * <Directory>, a regex) mounts at the root. */
static const char *mount_point(request_rec *r)
{
    const core_dir_config *core = ap_get_core_module_config(
        r->per_dir_config);
    const char *d = core ? core->d : NULL;
    apr_size_t n;

    if (!d || core->d_is_fnmatch || *d != '/') {
        return "";
    }
    n = strlen(d);
    while (n && d[n - 1] == '/') {
        n--;
    }
    if (strncmp(r->uri, d, n) != 0 || (r->uri[n] && r->uri[n] != '/')) {
        return "";
    }
    return apr_pstrndup(r->pool, d, n);
}

/* The path below the mount, or NULL if r->uri is not under it. */
static const char *path_below_mount(request_rec *r, const char *mount)
{
    apr_size_t n = strlen(mount);
    const char *path;

    if (strncmp(r->uri, mount, n) != 0) {
        return NULL;
    }
    path = r->uri + n;
    if (!*path) {
        return "/";
    }
    if (*path != '/') {
        return NULL;
    }
    /* "/traces/" is "/traces", as clients often write it. */
    n = strlen(path);
    if (n > 1 && path[n - 1] == '/') {
        path = apr_pstrndup(r->pool, path, n - 1);
    }
    return path;
}

static int method_not_allowed(request_rec *r, const char *path)
{
    const char *allow = NULL;
    apr_size_t i;

    for (i = 0; i < N_ROUTES; i++) {
        const char *param;
        if (route_matches(routes[i].pattern, path, &param)) {
            allow = allow ? apr_pstrcat(r->pool, allow, ", ",
                                        routes[i].method, NULL)
                          : routes[i].method;
        }
    }
    if (!allow) {
        return tllm_send_detail(r, HTTP_NOT_FOUND, "Not Found");
    }
    apr_table_setn(r->headers_out, "Allow", allow);
    return tllm_send_detail(r, HTTP_METHOD_NOT_ALLOWED,
                            "Method Not Allowed");
}

static int tllm_handler(request_rec *r)
{
    tllm_req q;
    apr_size_t i;
    const char *method;
    int rv;

    /* A ProxyPass under the mount (the /ws tunnel) is mod_proxy's. */
    if (!r->handler || strcmp(r->handler, "tracellm") != 0 || r->proxyreq) {
        return DECLINED;
    }
    memset(&q, 0, sizeof(q));
    q.r = r;
    q.conf = ap_get_module_config(r->per_dir_config, &tracellm_module);
    q.now_us = tllm_now_us();
    r->allowed |= (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_POST)
                  | (AP_METHOD_BIT << M_DELETE);

    q.mount = mount_point(r);
    q.path = path_below_mount(r, q.mount);
    if (!q.path) {
        return tllm_send_detail(r, HTTP_NOT_FOUND, "Not Found");
    }
    /* HEAD is answered as GET without a body (r->header_only). */
    method = r->method_number == M_GET ? "GET" : r->method;
    for (i = 0; i < N_ROUTES; i++) {
        const char *param = NULL;
        if (strcmp(routes[i].method, method) == 0
            && route_matches(routes[i].pattern, q.path, &param)) {
            if (param) {
                char *decoded = apr_pstrdup(r->pool, param);
                if (ap_unescape_url(decoded) != OK) {
                    return tllm_send_detail(r, HTTP_NOT_FOUND, "Not Found");
                }
                q.param = decoded;
            }
            q.query = parse_query(r->pool, r->args);
            if (!routes[i].aggregate) {
                return routes[i].fn(&q);
            }
            tllm_aggregate_gate_enter(r);
            rv = routes[i].fn(&q);
            tllm_aggregate_gate_leave(r);    /* if it sent nothing */
            return rv;
        }
    }
    return method_not_allowed(r, q.path);
}

/* ---- hooks ------------------------------------------------------------- */

static apr_status_t wal_buffer_unregister(void *unused)
{
    tllm_wal_buffer_unregister();
    return APR_SUCCESS;
}

/* Before any child exists: get each configured database's schema current
 * and start the event process. Skipped on the dry run of the first
 * configuration pass. */
static int tllm_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                            apr_pool_t *ptemp, server_rec *s)
{
    tllm_eventd_conf *eventd = ap_get_module_config(s->module_config,
                                                    &tracellm_module);
    const char *main_db = NULL, *why;
    apr_hash_t *seen = apr_hash_make(ptemp);
    apr_status_t rv;
    server_rec *vs;

    dbd_acquire = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_acquire);
    if (!dbd_acquire) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "TLLM0001: mod_tracellm needs mod_dbd: add "
                     "LoadModule dbd_module before it");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    if (tllm_write_lock_create(pconf, s) != OK) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "TLLM0009: cannot create the tracellm-write mutex");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (tllm_wal_buffer_register() == SQLITE_OK) {
        /* Before this module's code is unloaded (a restart). */
        apr_pool_cleanup_register(pconf, NULL, wal_buffer_unregister,
                                  apr_pool_cleanup_null);
    }
    else {
        /* Not fatal: SQLite then writes each WAL frame in two calls. */
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "TLLM0028: cannot "
                     "register the VFS that buffers WAL writes");
    }
    rv = tllm_wal_drain_create(pconf);
    if (rv != APR_SUCCESS) {
        /* Not fatal: the WAL then starts over only between reads. */
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, "TLLM0024: cannot "
                     "make the shared memory for the WAL's drains");
    }
    for (vs = s; vs; vs = vs->next) {
        const char *path = tllm_database_path(ptemp, vs, &why);
        if (!path) {
            if (vs == s) {
                ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                             "TLLM0002: mod_tracellm: %s", why);
                return HTTP_INTERNAL_SERVER_ERROR;
            }
            continue;
        }
        if (vs == s) {
            main_db = path;
        }
        if (apr_hash_get(seen, path, APR_HASH_KEY_STRING)) {
            continue;
        }
        apr_hash_set(seen, path, APR_HASH_KEY_STRING, path);
        if (tllm_database_prepare(ptemp, path, &why) != 0) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, vs,
                         "TLLM0007: database not ready: %s", why);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    if (eventd->enabled != 1) {
        return OK;
    }
    if (!eventd->listen) {
        eventd->listen = TLLM_EVENTD_DEFAULT_LISTEN;
    }
    if (!eventd->binary) {
        eventd->binary = TLLM_EVENTD_PATH;
    }
    return tllm_eventd_start(pconf, s, eventd,
                             apr_pstrdup(pconf, main_db));
}

static int tllm_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp)
{
    tllm_child_memory_defaults();
    tllm_aggregate_gate_defaults();
    return tllm_write_lock_register(pconf);
}

static void tllm_child_init(apr_pool_t *pchild, server_rec *s)
{
    tllm_write_lock_child_init(pchild, s);
    tllm_group_commit_child_init(pchild, s);
    /* Before the trimming thread, which is stopped first at exit. */
    tllm_store_child_init(pchild);
    tllm_dbd_expiry_child_init(pchild, s);
    tllm_child_memory_child_init(pchild, s);
    tllm_aggregate_gate_child_init(pchild, s);
}

static void tllm_register_hooks(apr_pool_t *p)
{
    ap_hook_pre_config(tllm_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(tllm_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(tllm_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(tllm_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_log_transaction(tllm_child_memory_note, NULL, NULL,
                            APR_HOOK_REALLY_LAST);
}

module AP_MODULE_DECLARE_DATA tracellm_module = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,            /* per-directory config: the <Location> */
    merge_dir_conf,             /* merge per-directory config */
    create_srv_conf,            /* per-server config: the event process */
    merge_srv_conf,             /* merge per-server config */
    tllm_cmds,                  /* directives */
    tllm_register_hooks,        /* hooks */
    AP_MODULE_FLAG_NONE         /* flags */
};
