/*
 * database.h - the database as httpd's parent process sees it: where
 * mod_dbd's SQLite file is, and getting its schema current before any
 * child serves a request.
 */
#ifndef TLLM_DATABASE_H
#define TLLM_DATABASE_H

#include <httpd.h>
#include <apr_dbd.h>
#include <mod_dbd.h>

/** mod_dbd's configuration of server s, or NULL if mod_dbd is not loaded
 *  or its configuration is not laid out as this module expects. */
const dbd_cfg_t *tllm_database_cfg(server_rec *s);

/** The SQLite file mod_dbd is configured with for server s (DBDParams of
 *  DBDriver sqlite3), or NULL if mod_dbd is not configured with sqlite3
 *  there (*why says what is wrong). */
const char *tllm_database_path(apr_pool_t *p, server_rec *s,
                               const char **why);

/** Create or migrate the schema of the file at path and, when httpd
 *  starts as root, give the file (and its WAL files) to httpd's User so
 *  the children can write it. Returns 0, or -1 with *why set. */
int tllm_database_prepare(apr_pool_t *p, const char *path, const char **why);

#endif
