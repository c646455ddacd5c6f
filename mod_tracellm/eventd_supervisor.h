/*
 * eventd_supervisor.h - tracellm-eventd as an httpd "other child": started
 * with httpd, restarted when it dies, stopped with httpd (the mod_cgid
 * pattern); and the datagram that wakes it after each committed ingest.
 */
#ifndef TLLM_EVENTD_SUPERVISOR_H
#define TLLM_EVENTD_SUPERVISOR_H

#include <httpd.h>

/** How to run the event process (server-wide directives). */
typedef struct {
    int enabled;                /* TraceLLMEventd; -1 = not set (Off) */
    const char *listen;         /* TraceLLMEventdListen host:port */
    const char *socket;         /* TraceLLMEventSocket; NULL = default */
    const char *binary;         /* TraceLLMEventdBinary */
    const char *queue;          /* TraceLLMEventdQueue, messages */
} tllm_eventd_conf;

#define TLLM_EVENTD_DEFAULT_LISTEN "127.0.0.1:8001"
/* One read of new rows must fit a reading client's queue: room for
 * several 1000-trace batches committed between two reads. */
#define TLLM_EVENTD_DEFAULT_QUEUE "8192"

/** Validate a TraceLLMEventdListen value: a loopback address and a port.
 *  NULL if fine, else the reason. */
const char *tllm_eventd_check_listen(apr_pool_t *p, const char *arg);

/** In httpd's parent, post_config: fill in defaults, make the socket's
 *  directory (owned by httpd's User), and start the event process for the
 *  database at db_path. It lives as long as pconf: a graceful restart or
 *  stop clears pconf, which stops it. Returns OK or an HTTP error. */
int tllm_eventd_start(apr_pool_t *pconf, server_rec *s,
                      tllm_eventd_conf *conf, const char *db_path);

/** In a child: tell the event process (if this generation started one)
 *  that rows up to seq are committed. Never blocks and never fails the
 *  request; a lost datagram only delays the event to the next poll. */
void tllm_eventd_notify(int64_t seq);

#endif
