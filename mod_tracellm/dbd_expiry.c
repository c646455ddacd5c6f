/*
 * dbd_expiry.c - see dbd_expiry.h. Taking and giving back a connection is
 * all mod_dbd offers a module: its pool is private, and apr_reslist runs
 * the expiry on both (the take closes expired connections from the most
 * recently used one down, and opens a fresh one if none is left).
 */
#include <httpd.h>
#include <http_config.h>
#include <apr_dbd.h>
#include <mod_dbd.h>

#include "dbd_expiry.h"
#include "database.h"
#include "store.h"

static APR_OPTIONAL_FN_TYPE(ap_dbd_open) *dbd_open;
static APR_OPTIONAL_FN_TYPE(ap_dbd_close) *dbd_close;

/* The servers whose pools can expire, and their DBDExptime. */
typedef struct {
    server_rec *s;
    int exptime;
} expiring_pool;

static apr_array_header_t *expiring;

void tllm_dbd_expiry_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_array_header_t *list = apr_array_make(pchild, 4,
                                              sizeof(expiring_pool));
    const dbd_cfg_t *cfg;
    expiring_pool *pool;
    const char *why;
    server_rec *vs;

    dbd_open = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_open);
    dbd_close = APR_RETRIEVE_OPTIONAL_FN(ap_dbd_close);
    if (!dbd_open || !dbd_close) {
        return;
    }
    for (vs = s; vs; vs = vs->next) {
        /* Only pools of the module's SQLite files, and only those that
         * expire: a non-persistent "pool" would open a connection each
         * time, and DBDExptime 0 never expires. */
        cfg = tllm_database_cfg(vs);
        if (cfg && tllm_database_path(pchild, vs, &why) && cfg->persist
            && cfg->exptime > 0) {
            pool = apr_array_push(list);
            pool->s = vs;
            pool->exptime = cfg->exptime;
        }
    }
    expiring = list;
}

int tllm_dbd_expire_idle(apr_pool_t *pool, int quiet_seconds)
{
    int before = tllm_store_attached();
    const expiring_pool *each;
    ap_dbd_t *dbd;
    int i;

    /* None a request used is open: what is left is the one a take below
     * opened, or mod_dbd's DBDMin. Taking that once it has expired would
     * close it and open another, again and again while the child is
     * quiet. */
    if (!expiring || before == 0) {
        return 0;
    }
    for (i = 0; i < expiring->nelts; i++) {
        each = &APR_ARRAY_IDX(expiring, i, expiring_pool);
        /* Not before: each take would make the connection it gives back
         * the most recently used, and so never expired. */
        if (quiet_seconds < each->exptime) {
            continue;
        }
        dbd = dbd_open(pool, each->s);
        if (dbd) {
            dbd_close(each->s, dbd);
        }
    }
    return before - tllm_store_attached();
}
