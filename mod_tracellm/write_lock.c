/*
 * write_lock.c - the "tracellm-write" global mutex (see write_lock.h).
 */
#include <httpd.h>
#include <http_log.h>
#include <util_mutex.h>
#include <apr_global_mutex.h>

#include "mod_tracellm.h"
#include "write_lock.h"

APLOG_USE_MODULE(tracellm);

#define TLLM_WRITE_MUTEX "tracellm-write"

static apr_global_mutex_t *write_mutex;

int tllm_write_lock_register(apr_pool_t *pconf)
{
    return ap_mutex_register(pconf, TLLM_WRITE_MUTEX, NULL, APR_LOCK_DEFAULT,
                             0) == APR_SUCCESS ? OK : HTTP_INTERNAL_SERVER_ERROR;
}

int tllm_write_lock_create(apr_pool_t *pconf, server_rec *s)
{
    write_mutex = NULL;
    return ap_global_mutex_create(&write_mutex, NULL, TLLM_WRITE_MUTEX, NULL,
                                  s, pconf, 0) == APR_SUCCESS
           ? OK : HTTP_INTERNAL_SERVER_ERROR;
}

void tllm_write_lock_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv;

    if (!write_mutex) {
        return;
    }
    rv = apr_global_mutex_child_init(&write_mutex,
                                     apr_global_mutex_lockfile(write_mutex),
                                     pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "TLLM0010: cannot "
                     "reopen the " TLLM_WRITE_MUTEX " mutex; writers fall "
                     "back to SQLite's busy handler");
        write_mutex = NULL;
    }
}

int tllm_write_lock(request_rec *r)
{
    apr_status_t rv;

    if (!write_mutex) {
        return 0;
    }
    rv = apr_global_mutex_lock(write_mutex);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, r, "TLLM0011: cannot "
                      "take the " TLLM_WRITE_MUTEX " mutex");
        return 0;
    }
    return 1;
}

void tllm_write_unlock(request_rec *r, int held)
{
    apr_status_t rv;

    if (held && (rv = apr_global_mutex_unlock(write_mutex))
                != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, r, "TLLM0012: cannot "
                      "give back the " TLLM_WRITE_MUTEX " mutex");
    }
}
