/*
 * dbd_expiry.c - see dbd_expiry.h. Taking and giving back a connection is
 * all mod_dbd offers a module: its pool is private, and apr_reslist runs
 * the expiry on both (on the take, every expired connection from the most
 * recently used one on is closed before a fresh one is opened).
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

/* The servers whose pools can expire; NULL-terminated. */
static server_rec **expiring;

void tllm_dbd_expiry_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_array_header_t *list = apr_array_make(pchild, 4, sizeof(s));
    const dbd_cfg_t *cfg;
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
            *(server_rec **)apr_array_push(list) = vs;
        }
    }
    *(server_rec **)apr_array_push(list) = NULL;
    expiring = (server_rec **)list->elts;
}

int tllm_dbd_expire_idle(apr_pool_t *pool)
{
    int before = tllm_store_attached();
    server_rec **vs;
    ap_dbd_t *dbd;

    for (vs = expiring; vs && *vs; vs++) {
        dbd = dbd_open(pool, *vs);
        if (dbd) {
            dbd_close(*vs, dbd);
        }
    }
    return before - tllm_store_attached();
}
