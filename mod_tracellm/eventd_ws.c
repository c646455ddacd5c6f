/*
 * eventd_ws.c - the WebSocket clients of tracellm-eventd and the event
 * log reader that feeds them.
 *
 * Correctness rests on cursors. The process keeps one global cursor: the
 * highest seq it has read from the store. Each client keeps its own: every
 * event at or below it has been queued for the client or filtered out. A
 * client whose cursor has reached the global one is live, and events read
 * after that are fanned out to it as they are read. A client behind it (a
 * ?since= replay) is fed page by page from the store, with its own
 * filters, whenever its queue is empty; a page that reaches the global
 * cursor makes it live. The global cursor moves only while fanning out,
 * so no event is lost or sent twice across the switch.
 *
 * Nothing here blocks on a client: messages wait in a bounded queue per
 * client, and each WRITEABLE callback writes one of them.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "eventd.h"

/* lws hands a client's message over in pieces of at most this. */
#define RX_CHUNK 4096

/* Room for any query argument: lws keeps at most 4096 bytes of headers
 * (max_http_header_data in eventd.c). */
#define ARG_MAX 4200

/* Datagrams drained per wake-up: a flood must not hold the loop. */
#define WAKE_DRAIN_MAX 1024

/* ---- client list and queue ---------------------------------------------- */

static void list_add(tllm_evd *evd, tllm_evd_client *c)
{
    c->prev = NULL;
    c->next = evd->clients;
    if (evd->clients) {
        evd->clients->prev = c;
    }
    evd->clients = c;
    c->listed = 1;
    evd->nclients++;
}

static void list_remove(tllm_evd *evd, tllm_evd_client *c)
{
    if (c->prev) {
        c->prev->next = c->next;
    }
    else {
        evd->clients = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    c->listed = 0;
    evd->nclients--;
}

static void queue_drop(tllm_evd_client *c)
{
    while (c->head) {
        tllm_evd_qnode *n = c->head;
        c->head = n->next;
        tllm_evd_msg_unref(n->msg);
        free(n);
    }
    c->tail = NULL;
    c->queued = 0;
}

/* Close once what is queued has been sent (the first reason counts). */
static void close_later(tllm_evd_client *c, int code, const char *reason)
{
    if (!c->close_code) {
        c->close_code = code;
        c->close_reason = reason;
        lws_callback_on_writable(c->wsi);
    }
}

/* Queue m (a new reference) for c; a client over its bound is closed. */
static void client_send(tllm_evd *evd, tllm_evd_client *c, tllm_evd_msg *m)
{
    tllm_evd_qnode *n;

    if (c->close_code) {
        return;
    }
    if (!m) {
        close_later(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                    "out of memory");
        return;
    }
    if (c->queued >= evd->queue_max) {
        /* It does not read: what it has not got it never will. Its close
         * frame goes out when its socket drains, or the connection is
         * dropped after a grace period. */
        tllm_evd_log("closing a client that fell %d messages behind (1008)",
                     c->queued);
        queue_drop(c);
        close_later(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "client too slow");
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
                        TLLM_EVD_SLOW_CLOSE_SECS);
        return;
    }
    n = malloc(sizeof(*n));
    if (!n) {
        close_later(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                    "out of memory");
        return;
    }
    m->refs++;
    n->msg = m;
    n->next = NULL;
    if (c->tail) {
        c->tail->next = n;
    }
    else {
        c->head = n;
    }
    c->tail = n;
    c->queued++;
    lws_callback_on_writable(c->wsi);
}

/* Queue a message made for c alone. */
static void client_send_own(tllm_evd *evd, tllm_evd_client *c,
                            tllm_evd_msg *m)
{
    client_send(evd, c, m);
    tllm_evd_msg_unref(m);
}

static int matches(const tllm_evd_client *c, const tllm_event *e)
{
    return (!c->project_id || strcmp(c->project_id, e->project_id) == 0)
           && (!c->environment || strcmp(c->environment, e->environment) == 0);
}

/* ---- the event log ------------------------------------------------------ */

static void fan_out(tllm_evd *evd, const tllm_event *e)
{
    tllm_evd_msg *m = NULL;
    int built = 0;
    tllm_evd_client *c;

    for (c = evd->clients; c; c = c->next) {
        /* Behind the global cursor: its replay will read this event.
         * At or past this seq (a since beyond the log): not news to it. */
        if (c->cursor < evd->cursor || c->cursor >= e->seq) {
            continue;
        }
        c->cursor = e->seq;
        if (c->close_code || !matches(c, e)) {
            continue;
        }
        if (!built) {
            m = tllm_evd_msg_event(e);
            built = 1;
        }
        client_send(evd, c, m);
    }
    tllm_evd_msg_unref(m);
    evd->cursor = e->seq;
}

void tllm_evd_read_new(tllm_evd *evd)
{
    apr_array_header_t *events;
    int i, n;

    do {
        if (tllm_store_events_after(evd->db, evd->scratch, evd->cursor,
                                    NULL, NULL, TLLM_EVD_PAGE, &events)
            != TLLM_OK) {
            /* Once per outage: the poll retries every few hundred ms. */
            if (!evd->read_failing) {
                tllm_evd_log("cannot read new events after seq %" PRId64
                             ": %s", evd->cursor, tllm_db_errmsg(evd->db));
                evd->read_failing = 1;
            }
            apr_pool_clear(evd->scratch);
            return;
        }
        if (evd->read_failing) {
            tllm_evd_log("reading events again");
            evd->read_failing = 0;
        }
        n = events->nelts;
        for (i = 0; i < n; i++) {
            fan_out(evd, &APR_ARRAY_IDX(events, i, tllm_event));
        }
        apr_pool_clear(evd->scratch);
    } while (n == TLLM_EVD_PAGE);
}

/* Queue the client's next page of missed events; its queue is empty. */
static int replay_page(tllm_evd *evd, tllm_evd_client *c)
{
    apr_array_header_t *events;
    int limit = evd->queue_max < TLLM_EVD_PAGE ? evd->queue_max
                                               : TLLM_EVD_PAGE;
    int i;

    if (tllm_store_events_after(evd->db, evd->scratch, c->cursor,
                                c->project_id, c->environment, limit,
                                &events) != TLLM_OK) {
        tllm_evd_log("cannot replay events after seq %" PRId64 ": %s",
                     c->cursor, tllm_db_errmsg(evd->db));
        apr_pool_clear(evd->scratch);
        return TLLM_ERROR;
    }
    for (i = 0; i < events->nelts; i++) {
        const tllm_event *e = &APR_ARRAY_IDX(events, i, tllm_event);
        /* Later events are not read yet: fan_out brings them. */
        if (e->seq > evd->cursor) {
            break;
        }
        client_send_own(evd, c, tllm_evd_msg_event(e));
        c->cursor = e->seq;
    }
    if (i < events->nelts || events->nelts < limit) {
        c->cursor = evd->cursor;        /* caught up: live from here */
    }
    apr_pool_clear(evd->scratch);
    return TLLM_OK;
}

/* ---- a client's life ---------------------------------------------------- */

/* "since" as a non-negative 64-bit integer, or -1. */
static int64_t parse_since(const char *s)
{
    int64_t v = 0;

    if (!*s) {
        return -1;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - (*s - '0')) / 10) {
            return -1;
        }
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* Replace *slot by value (NULL when empty: no filter). */
static int set_filter(char **slot, const char *value)
{
    free(*slot);
    *slot = NULL;
    if (*value) {
        *slot = strdup(value);
        return *slot != NULL;
    }
    return 1;
}

/* The query string: since (*since stays -1 if absent), project_id and
 * environment. If a name is repeated the last value counts; an empty
 * value counts as absent; other names are ignored. Returns an error
 * detail, or NULL. */
static const char *read_args(tllm_evd_client *c, int64_t *since)
{
    char arg[ARG_MAX];
    int i;

    *since = -1;
    for (i = 0; lws_hdr_copy_fragment(c->wsi, arg, sizeof(arg),
                                      WSI_TOKEN_HTTP_URI_ARGS, i) >= 0;
         i++) {
        char *value = strchr(arg, '=');
        int ok = 1;

        value = value ? (*value = '\0', value + 1) : arg + strlen(arg);
        if (strcmp(arg, "since") == 0) {
            *since = -1;
            if (*value && (*since = parse_since(value)) < 0) {
                return "since must be a non-negative integer";
            }
        }
        else if (strcmp(arg, "project_id") == 0) {
            ok = set_filter(&c->project_id, value);
        }
        else if (strcmp(arg, "environment") == 0) {
            ok = set_filter(&c->environment, value);
        }
        if (!ok) {
            return "out of memory";
        }
    }
    return NULL;
}

static int client_open(tllm_evd *evd, tllm_evd_client *c, struct lws *wsi)
{
    const char *bad;
    int64_t since;

    c->wsi = wsi;
    list_add(evd, c);
    if (evd->stopping) {
        close_later(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
        return 0;
    }
    client_send_own(evd, c, tllm_evd_msg_connected());
    bad = read_args(c, &since);
    if (bad) {
        c->cursor = INT64_MAX;          /* no events for it */
        client_send_own(evd, c, tllm_evd_msg_error(bad));
        close_later(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "invalid query");
        return 0;
    }
    /* Without since the client starts live, at the global cursor. */
    c->cursor = since >= 0 ? since : evd->cursor;
    return 0;
}

static void client_free(tllm_evd *evd, tllm_evd_client *c)
{
    if (!c) {
        return;
    }
    if (c->listed) {
        list_remove(evd, c);
    }
    queue_drop(c);
    free(c->rx);
    free(c->project_id);
    free(c->environment);
    c->rx = NULL;
    c->rx_len = 0;
    c->project_id = c->environment = NULL;
}

static int client_receive(tllm_evd *evd, tllm_evd_client *c,
                          const void *in, size_t len)
{
    struct lws *wsi = c->wsi;
    size_t more = lws_remaining_packet_payload(wsi);
    unsigned char *rx;

    /* Refuse as soon as the frame header says it is too big. */
    if (c->rx_len + len + more > evd->max_message) {
        static const char why[] = "message too big";
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)why, sizeof(why) - 1);
        return -1;
    }
    rx = realloc(c->rx, c->rx_len + len + 1);
    if (!rx) {
        return -1;
    }
    memcpy(rx + c->rx_len, in, len);
    c->rx = rx;
    c->rx_len += len;
    c->rx[c->rx_len] = '\0';
    if (!lws_is_final_fragment(wsi) || more) {
        return 0;
    }
    if (lws_frame_is_binary(wsi)) {
        client_send_own(evd, c, tllm_evd_msg_error("messages must be JSON "
                                                   "text frames"));
    }
    else {
        client_send_own(evd, c, tllm_evd_msg_reply((char *)c->rx,
                                                   c->rx_len));
    }
    free(c->rx);
    c->rx = NULL;
    c->rx_len = 0;
    return 0;
}

/* Write one queued message (replaying a page first if the queue is empty
 * and the client is behind), or close when all has been sent. */
static int client_writeable(tllm_evd *evd, tllm_evd_client *c)
{
    tllm_evd_qnode *n;
    int wrote;

    if (!c->head && !c->close_code && c->cursor < evd->cursor
        && replay_page(evd, c) != TLLM_OK) {
        close_later(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                    "storage error");
    }
    n = c->head;
    if (!n) {
        if (c->close_code) {
            lws_close_reason(c->wsi, c->close_code,
                             (unsigned char *)c->close_reason,
                             strlen(c->close_reason));
            return -1;
        }
        return 0;
    }
    c->head = n->next;
    if (!c->head) {
        c->tail = NULL;
    }
    c->queued--;
    wrote = lws_write(c->wsi, TLLM_EVD_DATA(n->msg), n->msg->len,
                      LWS_WRITE_TEXT);
    if (wrote < (int)n->msg->len) {
        tllm_evd_msg_unref(n->msg);
        free(n);
        return -1;
    }
    tllm_evd_msg_unref(n->msg);
    free(n);
    if (c->head || c->close_code || c->cursor < evd->cursor) {
        lws_callback_on_writable(c->wsi);
    }
    return 0;
}

void tllm_evd_close_all(tllm_evd *evd)
{
    tllm_evd_client *c;

    evd->stopping = 1;
    for (c = evd->clients; c; c = c->next) {
        queue_drop(c);
        close_later(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
    }
}

/* ---- protocol callbacks ------------------------------------------------- */

static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                       void *user, void *in, size_t len)
{
    tllm_evd *evd = lws_context_user(lws_get_context(wsi));
    tllm_evd_client *c = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP:
        /* A plain request: there is nothing but the WebSocket here. */
        lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST,
                               "WebSocket connections only");
        return -1;
    case LWS_CALLBACK_ESTABLISHED:
        return client_open(evd, c, wsi);
    case LWS_CALLBACK_RECEIVE:
        return client_receive(evd, c, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return client_writeable(evd, c);
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        client_free(evd, c);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static int wake_callback(struct lws *wsi, enum lws_callback_reasons reason,
                         void *user, void *in, size_t len)
{
    tllm_evd *evd = lws_context_user(lws_get_context(wsi));
    char buf[64];
    int i;

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return -1;              /* a subprotocol name for no client */
    case LWS_CALLBACK_RAW_RX_FILE:
        /* Any datagram means "rows committed": drain them, read once. */
        for (i = 0; i < WAKE_DRAIN_MAX; i++) {
            if (recv(evd->wake_fd, buf, sizeof(buf), 0) < 0) {
                break;
            }
        }
        if (!evd->stopping) {
            tllm_evd_read_new(evd);
        }
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (!evd->stopping) {
            tllm_evd_log("the wake socket closed: polling only");
        }
        evd->wake_fd = -1;
        return 0;
    default:
        return 0;
    }
}

const struct lws_protocols tllm_evd_protocols[] = {
    {
        .name = "tracellm",
        .callback = ws_callback,
        .per_session_data_size = sizeof(tllm_evd_client),
        .rx_buffer_size = RX_CHUNK,
    },
    {
        .name = TLLM_EVD_WAKE_PROTOCOL,
        .callback = wake_callback,
    },
    { .name = NULL }
};
