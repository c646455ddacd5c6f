/*
 * eventd_msg.c - the JSON text messages of "WS /ws": built by hand around
 * stored JSON (the trace is sent verbatim, as GET /traces/{id} serves it)
 * and parsed with json-c (client messages).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "eventd.h"

tllm_evd_msg *tllm_evd_msg_new(size_t len)
{
    tllm_evd_msg *m = malloc(sizeof(*m) + LWS_PRE + len + 1);

    if (m) {
        m->refs = 1;
        m->len = len;
        m->buf[LWS_PRE + len] = '\0';
    }
    return m;
}

void tllm_evd_msg_unref(tllm_evd_msg *m)
{
    if (m && --m->refs == 0) {
        free(m);
    }
}

/* a, then b, then c, as one message. */
static tllm_evd_msg *msg_join(const char *a, size_t alen,
                              const char *b, size_t blen,
                              const char *c, size_t clen)
{
    tllm_evd_msg *m = tllm_evd_msg_new(alen + blen + clen);

    if (m) {
        unsigned char *d = TLLM_EVD_DATA(m);
        memcpy(d, a, alen);
        memcpy(d + alen, b, blen);
        memcpy(d + alen + blen, c, clen);
    }
    return m;
}

tllm_evd_msg *tllm_evd_msg_connected(void)
{
    static const char text[] =
        "{\"type\":\"system.connected\",\"status\":\"connected\","
        "\"message\":\"TraceLLM websocket active\"}";

    return msg_join(text, sizeof(text) - 1, "", 0, "", 0);
}

tllm_evd_msg *tllm_evd_msg_event(const tllm_event *e)
{
    char head[80];
    int n = snprintf(head, sizeof(head),
                     "{\"type\":\"trace.created\",\"seq\":%" PRId64
                     ",\"trace\":", e->seq);

    return msg_join(head, (size_t)n, e->trace.s, e->trace.len, "}", 1);
}

tllm_evd_msg *tllm_evd_msg_error(const char *detail)
{
    static const char head[] = "{\"type\":\"system.error\",\"detail\":\"";

    return msg_join(head, sizeof(head) - 1, detail, strlen(detail),
                    "\"}", 2);
}

/* ---- client messages ---------------------------------------------------- */

/*
 * The pong echoes ts "as sent". Re-serializing json-c's value would not:
 * json-c clamps integers beyond 64 bits and turns -0 into 0. So the raw
 * text of the top-level "ts" member is found in the message itself, which
 * json-c has already checked is strict JSON; this scanner only has to
 * skip over valid values.
 */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

/* p is at the opening quote; returns just past the closing one. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end && *p != '"'; p++) {
        if (*p == '\\') {
            p++;
        }
    }
    return p < end ? p + 1 : end;
}

static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;

    if (p < end && *p == '"') {
        return skip_string(p, end);
    }
    if (p < end && (*p == '{' || *p == '[')) {
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                continue;
            }
            if (*p == '{' || *p == '[') {
                depth++;
            }
            else if ((*p == '}' || *p == ']') && --depth == 0) {
                return p + 1;
            }
            p++;
        }
        return end;
    }
    /* A number, true, false or null. */
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' '
           && *p != '\t' && *p != '\n' && *p != '\r') {
        p++;
    }
    return p;
}

/* The raw text of the last top-level member spelled "ts" (unescaped) of
 * the JSON object in [in, end). Returns 0 if there is none. */
static int raw_ts(const char *in, const char *end, const char **val,
                  size_t *len)
{
    const char *p = skip_ws(in, end);
    int found = 0;

    if (p >= end || *p != '{') {
        return 0;
    }
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *key = p, *key_end = skip_string(p, end), *v;

        p = skip_ws(key_end, end);
        if (p >= end || *p != ':') {
            return 0;
        }
        v = skip_ws(p + 1, end);
        p = skip_value(v, end);
        if (key_end - key == 4 && memcmp(key, "\"ts\"", 4) == 0) {
            *val = v;
            *len = (size_t)(p - v);
            found = 1;
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
        }
    }
    return found;
}

/* json-c's strict mode still takes NaN and Infinity, which are not JSON:
 * a pong must not carry them. A number too big for a double (1e999) is
 * JSON, and infinite too: its text has digits. */
static int is_json(json_object *o)
{
    switch (json_object_get_type(o)) {
    case json_type_double:
        return isfinite(json_object_get_double(o))
               || strpbrk(json_object_to_json_string(o), "0123456789");
    case json_type_array: {
        size_t i, n = json_object_array_length(o);
        for (i = 0; i < n; i++) {
            if (!is_json(json_object_array_get_idx(o, i))) {
                return 0;
            }
        }
        return 1;
    }
    case json_type_object: {
        json_object_object_foreach(o, key, value) {
            (void)key;
            if (!is_json(value)) {
                return 0;
            }
        }
        return 1;
    }
    default:
        return 1;
    }
}

/* Parse the message as strict JSON into *out (NULL for null): 1 if it is
 * JSON, 0 if not, -1 when out of memory. */
static int parse(const char *in, size_t len, json_object **out)
{
    json_tokener *tok = json_tokener_new_ex(TLLM_EVD_JSON_DEPTH);
    json_object *obj;
    enum json_tokener_error err;
    size_t used;

    *out = NULL;
    if (!tok) {
        return -1;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    obj = json_tokener_parse_ex(tok, in, (int)len);
    err = json_tokener_get_error(tok);
    used = err == json_tokener_success ? json_tokener_get_parse_end(tok) : 0;
    if (err == json_tokener_continue) {
        /* A bare number ("5") may still be growing: a NUL ends it. */
        obj = json_tokener_parse_ex(tok, "", 1);
        err = json_tokener_get_error(tok);
        used = len;
    }
    json_tokener_free(tok);
    if (err == json_tokener_success && skip_ws(in + used, in + len) == in + len
        && is_json(obj)) {
        *out = obj;
        return 1;
    }
    json_object_put(obj);
    return 0;
}

static tllm_evd_msg *pong(const char *in, size_t len, json_object *obj)
{
    static const char head[] = "{\"type\":\"system.pong\",\"timestamp\":";
    json_object *ts = NULL;
    const char *val;
    size_t vlen;

    if (raw_ts(in, in + len, &val, &vlen)) {
        return msg_join(head, sizeof(head) - 1, val, vlen, "}", 1);
    }
    if (!json_object_object_get_ex(obj, "ts", &ts)) {
        return msg_join(head, sizeof(head) - 1, "null", 4, "}", 1);
    }
    /* Spelled with escapes ("t\u0073"): json-c's rendering is the same
     * value, if not byte for byte. */
    val = json_object_to_json_string_ext(ts, JSON_C_TO_STRING_PLAIN
                                             | JSON_C_TO_STRING_NOSLASHESCAPE);
    return msg_join(head, sizeof(head) - 1, val, strlen(val), "}", 1);
}

tllm_evd_msg *tllm_evd_msg_reply(const char *in, size_t len)
{
    json_object *obj, *type;
    tllm_evd_msg *m;
    int rc = parse(in, len, &obj);

    if (rc <= 0) {
        return rc < 0 ? NULL
                      : tllm_evd_msg_error("message is not valid JSON");
    }
    if (!json_object_is_type(obj, json_type_object)) {
        m = tllm_evd_msg_error("message must be a JSON object");
    }
    else if (!json_object_object_get_ex(obj, "type", &type)
             || !json_object_is_type(type, json_type_string)) {
        m = tllm_evd_msg_error("message needs a string member type");
    }
    else if (strcmp(json_object_get_string(type), "ping") != 0) {
        m = tllm_evd_msg_error("unknown message type (only ping is "
                               "understood)");
    }
    else {
        m = pong(in, len, obj);
    }
    json_object_put(obj);
    return m;
}
