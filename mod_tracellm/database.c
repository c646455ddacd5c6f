/*
 * database.c - find mod_dbd's SQLite file and migrate it in httpd's parent
 * process, once per (re)start, before children are forked: no child ever
 * serves a request against an old schema, and the module's statements
 * never meet a schema change.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <httpd.h>
#include <http_config.h>
#include <apr_strings.h>
#include <apr_dbd.h>
#include <mod_dbd.h>
#include <unixd.h>

#include "database.h"
#include "store.h"

/* mod_dbd keeps its per-server dbd_cfg_t (declared in mod_dbd.h) behind
 * the first member of a private struct. cfg->server pointing back at the
 * server is how we know the layout is the one we expect. */
typedef struct {
    dbd_cfg_t *cfg;
} dbd_server_head;

const dbd_cfg_t *tllm_database_cfg(server_rec *s)
{
    module *dbd = ap_find_linked_module("mod_dbd.c");
    const dbd_server_head *head;

    if (!dbd) {
        return NULL;
    }
    head = ap_get_module_config(s->module_config, dbd);
    if (!head || !head->cfg || head->cfg->server != s) {
        return NULL;
    }
    return head->cfg;
}

const char *tllm_database_path(apr_pool_t *p, server_rec *s,
                               const char **why)
{
    const dbd_cfg_t *cfg = tllm_database_cfg(s);

    if (!cfg) {
        *why = ap_find_linked_module("mod_dbd.c")
               ? "cannot read mod_dbd's configuration"
               : "mod_dbd is not loaded";
        return NULL;
    }
    if (!cfg->name || strcmp(cfg->name, "sqlite3") != 0) {
        *why = "DBDriver must be sqlite3";
        return NULL;
    }
    if (!cfg->params || !*cfg->params) {
        *why = "DBDParams must name the SQLite file";
        return NULL;
    }
    return apr_pstrdup(p, cfg->params);
}

/* Give path to httpd's User, if we are root and it exists. */
static int give_to_user(apr_pool_t *p, const char *path, const char **why)
{
    if (geteuid() != 0) {
        return 0;
    }
    if (chown(path, ap_unixd_config.user_id, ap_unixd_config.group_id) != 0
        && errno != ENOENT) {
        *why = apr_psprintf(p, "cannot chown %s to User %s: %s", path,
                            ap_unixd_config.user_name, strerror(errno));
        return -1;
    }
    return 0;
}

int tllm_database_prepare(apr_pool_t *p, const char *path, const char **why)
{
    apr_pool_t *conn_pool;
    sqlite3 *sq = NULL;
    tllm_db *db;
    int rc = -1;

    if (sqlite3_open_v2(path, &sq, SQLITE_OPEN_READWRITE
                                   | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        *why = apr_psprintf(p, "cannot open %s: %s", path,
                            sq ? sqlite3_errmsg(sq) : "out of memory");
        sqlite3_close(sq);
        return -1;
    }
    apr_pool_create(&conn_pool, p);
    db = tllm_db_attach(conn_pool, sq);
    if (!db) {
        *why = apr_psprintf(p, "cannot set up %s: %s", path,
                            sqlite3_errmsg(sq));
    }
    else if (tllm_store_migrate(db) != TLLM_OK) {
        *why = apr_psprintf(p, "migrating %s: %s", path,
                            tllm_db_errmsg(db));
    }
    else {
        rc = 0;
    }
    /* The pool's cleanup finalizes the statements before the close. */
    apr_pool_destroy(conn_pool);
    sqlite3_close(sq);
    if (rc == 0) {
        rc = give_to_user(p, path, why)
             || give_to_user(p, apr_pstrcat(p, path, "-wal", NULL), why)
             || give_to_user(p, apr_pstrcat(p, path, "-shm", NULL), why)
             ? -1 : 0;
    }
    return rc;
}
