/*
 * eventd.h - tracellm-eventd, the live-event process: shared between
 * eventd.c (process lifecycle), eventd_ws.c (WebSocket clients and the
 * event log reader) and eventd_msg.c (the JSON messages of API.md's
 * "WS /ws"). Nothing outside the event process includes this.
 */
#ifndef TLLM_EVENTD_H
#define TLLM_EVENTD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libwebsockets.h>
#include <apr_pools.h>

#include "store.h"

/* Events read from the store per query, live and replayed. */
#define TLLM_EVD_PAGE 100

/* How long a client closed for being slow may take to read its close
 * frame before the connection is simply dropped. */
#define TLLM_EVD_SLOW_CLOSE_SECS 10

/* Nesting allowed in a client message (ping's ts is any JSON). */
#define TLLM_EVD_JSON_DEPTH 64

/* One outgoing text message. A trace event is built once and shared by
 * every client it goes to: a trace can be a megabyte, and 500 copies of
 * it are not affordable. lws writes its frame header into the headroom
 * before data; the payload itself is never changed (no extensions), so
 * one buffer serves every connection in turn. */
typedef struct tllm_evd_msg {
    unsigned int refs;
    size_t len;
    unsigned char buf[];        /* LWS_PRE headroom, len bytes, a NUL */
} tllm_evd_msg;

/* The payload of m (len bytes, NUL-terminated). */
#define TLLM_EVD_DATA(m) ((m)->buf + LWS_PRE)

typedef struct tllm_evd_qnode {
    struct tllm_evd_qnode *next;
    tllm_evd_msg *msg;
} tllm_evd_qnode;

/* One WebSocket client: lws's per-session data (zeroed by lws). */
typedef struct tllm_evd_client {
    struct tllm_evd_client *prev, *next;   /* tllm_evd.clients */
    struct lws *wsi;
    int listed;                 /* on the client list (established) */
    /* Every event with seq <= cursor has been queued or filtered out.
     * A client with cursor >= the global cursor is live. */
    int64_t cursor;
    char *project_id;           /* filters; NULL = any */
    char *environment;
    tllm_evd_qnode *head, *tail;
    int queued;
    unsigned char *rx;          /* the client message being received */
    size_t rx_len;
    int close_code;             /* nonzero: close once the queue is sent */
    const char *close_reason;
} tllm_evd_client;

typedef struct tllm_evd {
    /* configuration */
    const char *db_path;
    const char *host;           /* numeric loopback address */
    int port;
    const char *wake_path;
    int poll_ms;
    int queue_max;              /* messages queued per client */
    size_t max_message;         /* bytes in one client message */

    apr_pool_t *pool;           /* the process; also the connection's */
    apr_pool_t *scratch;        /* cleared after every store read */
    tllm_db *db;
    int64_t cursor;             /* the global live cursor */
    int read_failing;           /* the last live read failed (logged) */
    pid_t parent;
    int wake_fd;                /* -1 once lws has closed it */
    int wake_bound;             /* the path is ours to unlink */
    int wake_adopted;           /* lws owns the descriptor */
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    lws_sorted_usec_list_t poll_sul;
    tllm_evd_client *clients;
    int nclients;
    int stopping;
} tllm_evd;

/* ---- eventd.c ----------------------------------------------------------- */

/** Log one line to stderr (httpd's error_log): "tracellm-eventd: ...". */
void tllm_evd_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* ---- eventd_ws.c -------------------------------------------------------- */

/** The protocols the vhost serves: the WebSocket clients, then the wake
 *  socket (adopted as a raw file descriptor), then the terminator. */
extern const struct lws_protocols tllm_evd_protocols[];

/** Name of the wake socket's protocol, for lws_adopt_descriptor_vhost. */
#define TLLM_EVD_WAKE_PROTOCOL "tracellm-wake"

/** Read every event committed after the global cursor and queue each for
 *  the live clients whose filters it matches. */
void tllm_evd_read_new(tllm_evd *evd);

/** Start closing every client with 1001 (going away). */
void tllm_evd_close_all(tllm_evd *evd);

/* ---- eventd_msg.c ------------------------------------------------------- */

/** A message of len bytes (payload uninitialized), one reference. */
tllm_evd_msg *tllm_evd_msg_new(size_t len);

/** Drop a reference; the last one frees the message. */
void tllm_evd_msg_unref(tllm_evd_msg *m);

/** {"type":"system.connected",...} */
tllm_evd_msg *tllm_evd_msg_connected(void);

/** {"type":"trace.created","seq":n,"trace":<the stored JSON>} */
tllm_evd_msg *tllm_evd_msg_event(const tllm_event *e);

/** {"type":"system.error","detail":detail}; detail is plain ASCII
 *  without quotes or backslashes (our own fixed texts). */
tllm_evd_msg *tllm_evd_msg_error(const char *detail);

/** The reply to one client text message of len bytes (NUL-terminated):
 *  system.pong for a ping, else system.error. NULL when out of memory. */
tllm_evd_msg *tllm_evd_msg_reply(const char *in, size_t len);

#endif
