/*
 * request.c - parameters, request bodies and JSON responses for every
 * handler. Errors always leave here in the contract's shape: a JSON body
 * with "detail", the status set on r, and OK returned to httpd (returning
 * an HTTP_* code would make httpd send its own HTML page).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <httpd.h>
#include <http_log.h>
#include <http_protocol.h>
#include <util_filter.h>
#include <apr_lib.h>
#include <apr_strings.h>

#include "request.h"
#include "aggregate_gate.h"
#include "child_memory.h"
#include "jsonutil.h"
#include "ttime.h"

APLOG_USE_MODULE(tracellm);

#define TLLM_JSON_TYPE   "application/json; charset=utf-8"
#define TLLM_JSON_DEPTH  64

/* ---- the bulk pool ----------------------------------------------------- */

apr_pool_t *tllm_req_bulk_pool(tllm_req *q)
{
    apr_allocator_t *allocator;

    if (q->bulk) {
        return q->bulk;
    }
    allocator = tllm_child_bulk_allocator(q->r->pool);
    if (!allocator
        || apr_pool_create_ex(&q->bulk, q->r->pool, NULL, allocator)
           != APR_SUCCESS) {
        return q->bulk = q->r->pool;
    }
    apr_pool_tag(q->bulk, "tracellm-bulk");
    return q->bulk;
}

/* ---- string builder ---------------------------------------------------- */

void tllm_sb_init(tllm_sb *sb, apr_pool_t *p, apr_size_t hint)
{
    sb->pool = p;
    sb->cap = hint < 64 ? 64 : hint;
    sb->data = apr_palloc(p, sb->cap);
    sb->len = 0;
    sb->splices = NULL;
    sb->spliced = 0;
}

void tllm_sb_add(tllm_sb *sb, const char *s, apr_size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        apr_size_t cap = sb->cap * 2;
        char *data;
        while (cap < sb->len + n + 1) {
            cap *= 2;
        }
        data = apr_palloc(sb->pool, cap);
        memcpy(data, sb->data, sb->len);
        sb->data = data;
        sb->cap = cap;
    }
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void tllm_sb_str(tllm_sb *sb, const char *s)
{
    tllm_sb_add(sb, s, strlen(s));
}

void tllm_sb_int(tllm_sb *sb, int64_t v)
{
    char buf[TLLM_INT64_BUFSZ];

    /* Not apr_snprintf: its formatter was 1 % of GET /analytics (perf),
     * which prints dozens of counts. */
    tllm_sb_add(sb, buf, tllm_format_int64(v, buf));
}

void tllm_sb_round2(tllm_sb *sb, double v)
{
    char buf[TLLM_DOUBLE_BUFSZ];
    tllm_format_round2(v, buf);
    tllm_sb_str(sb, buf);
}

void tllm_sb_jstr(tllm_sb *sb, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *c = (const unsigned char *)s;
    const unsigned char *run = c;

    tllm_sb_add(sb, "\"", 1);
    for (; *c; c++) {
        const char *esc = NULL;
        char u[6];
        if (*c >= 0x20 && *c != '"' && *c != '\\') {
            continue;           /* UTF-8 passes through unescaped */
        }
        tllm_sb_add(sb, (const char *)run, c - run);
        switch (*c) {
        case '"':  esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            memcpy(u, "\\u00", 4);
            u[4] = hex[*c >> 4];
            u[5] = hex[*c & 15];
            tllm_sb_add(sb, u, 6);
        }
        if (esc) {
            tllm_sb_str(sb, esc);
        }
        run = c + 1;
    }
    tllm_sb_add(sb, (const char *)run, c - run);
    tllm_sb_add(sb, "\"", 1);
}

void tllm_sb_jstr_or_null(tllm_sb *sb, const char *s)
{
    if (s) {
        tllm_sb_jstr(sb, s);
    }
    else {
        tllm_sb_str(sb, "null");
    }
}

void tllm_sb_time(tllm_sb *sb, int64_t us)
{
    char buf[TLLM_TIME_BUFSZ];
    tllm_sb_add(sb, "\"", 1);
    tllm_sb_str(sb, tllm_time_format(us, buf));
    tllm_sb_add(sb, "\"", 1);
}

void tllm_sb_texts(tllm_sb *sb, const apr_array_header_t *texts)
{
    int i;

    if (!sb->splices && texts->nelts) {
        sb->splices = apr_array_make(sb->pool, texts->nelts,
                                     sizeof(tllm_splice));
    }
    tllm_sb_add(sb, "[", 1);
    for (i = 0; i < texts->nelts; i++) {
        tllm_splice *sp;

        if (i) {
            tllm_sb_add(sb, ",", 1);
        }
        sp = apr_array_push(sb->splices);
        sp->at = sb->len;
        sp->text = APR_ARRAY_IDX(texts, i, tllm_text);
        sb->spliced += sp->text.len;
    }
    tllm_sb_add(sb, "]", 1);
}

/* ---- responses --------------------------------------------------------- */

/* Status and headers of a JSON response of len bytes. */
static void json_head(request_rec *r, int status, apr_size_t len)
{
    /* Computed: the writing, at the client's pace, is not the gate's. */
    tllm_aggregate_gate_leave(r);
    r->status = status;
    ap_set_content_type(r, TLLM_JSON_TYPE);
    ap_set_content_length(r, len);
}

int tllm_send_json(request_rec *r, int status, const char *json,
                   apr_size_t len)
{
    json_head(r, status, len);
    if (!r->header_only) {
        ap_rwrite(json, len, r);
    }
    return OK;
}

/* The buffer's bytes and its splices as transient buckets, passed once
 * with EOS: the core output filter writes them with writev straight from
 * where they are, and copies only what the socket does not take at once.
 * A list of 75 traces is then copied once (column to pool), not twice. */
static void send_spliced(request_rec *r, const tllm_sb *sb)
{
    apr_bucket_alloc_t *ba = r->connection->bucket_alloc;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, ba);
    apr_size_t from = 0;
    int i;

    for (i = 0; i < sb->splices->nelts; i++) {
        const tllm_splice *sp = &APR_ARRAY_IDX(sb->splices, i, tllm_splice);

        if (sp->at > from) {
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(
                sb->data + from, sp->at - from, ba));
        }
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(
            sp->text.s, sp->text.len, ba));
        from = sp->at;
    }
    if (sb->len > from) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(
            sb->data + from, sb->len - from, ba));
    }
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(ba));
    ap_pass_brigade(r->output_filters, bb);
    apr_brigade_cleanup(bb);
}

int tllm_send_sb(request_rec *r, int status, const tllm_sb *sb)
{
    if (!sb->splices) {
        return tllm_send_json(r, status, sb->data, sb->len);
    }
    json_head(r, status, sb->len + sb->spliced);
    if (!r->header_only) {
        send_spliced(r, sb);
    }
    return OK;
}

int tllm_send_obj(request_rec *r, int status, json_object *obj)
{
    size_t len;
    const char *text = tllm_json_text(obj, &len);
    tllm_send_json(r, status, text, len);
    json_object_put(obj);
    return OK;
}

int tllm_send_detail(request_rec *r, int status, const char *detail)
{
    tllm_sb sb;
    tllm_sb_init(&sb, r->pool, 64 + strlen(detail));
    tllm_sb_str(&sb, "{\"detail\":");
    tllm_sb_jstr(&sb, detail);
    tllm_sb_str(&sb, "}");
    return tllm_send_sb(r, status, &sb);
}

int tllm_send_invalid(request_rec *r, json_object *items)
{
    json_object *body = json_object_new_object();
    json_object_object_add(body, "detail", items);
    return tllm_send_obj(r, HTTP_UNPROCESSABLE_ENTITY, body);
}

int tllm_send_store_error(tllm_req *q, tllm_db *db, const char *doing)
{
    if (!db) {
        /* tllm_req_db already logged why no connection could be had. */
        return tllm_send_detail(q->r, HTTP_SERVICE_UNAVAILABLE,
                                "Storage unavailable");
    }
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, q->r,
                  "TLLM0101: storage failure while %s: %s", doing,
                  tllm_db_errmsg(db));
    return tllm_send_detail(q->r, HTTP_INTERNAL_SERVER_ERROR,
                            "Internal storage error");
}

/* ---- parameters -------------------------------------------------------- */

void tllm_params_init(tllm_params *ps, tllm_req *q, json_object *body)
{
    ps->pool = q->r->pool;
    ps->query = q->query;
    ps->body = body;
    ps->errors = json_object_new_array();
    /* The list belongs to the request: whoever sends it takes a reference. */
    apr_pool_cleanup_register(q->r->pool, ps->errors,
                              (apr_status_t (*)(void *))json_object_put,
                              apr_pool_cleanup_null);
}

static json_object *param_loc(const tllm_params *ps, const char *name)
{
    json_object *loc = json_object_new_array();
    json_object_array_add(loc, json_object_new_string(ps->body ? "body"
                                                               : "query"));
    json_object_array_add(loc, json_object_new_string(name));
    return loc;
}

static void param_error(tllm_params *ps, const char *name, const char *type,
                        const char *msg, json_object *input, json_object *ctx)
{
    json_object_array_add(ps->errors,
                          tllm_error_item(type, param_loc(ps, name), msg,
                                          input, ctx));
}

/* The raw value of a parameter: *jv for a body value (NULL if absent or
 * null), the string for a query value. Returns 0 if absent. */
static int param_raw(tllm_params *ps, const char *name, const char **sv,
                     json_object **jv)
{
    *sv = NULL;
    *jv = NULL;
    if (ps->body) {
        json_object *v;
        if (!json_object_object_get_ex(ps->body, name, &v) || !v) {
            return 0;
        }
        *jv = v;
        if (json_object_is_type(v, json_type_string)) {
            *sv = json_object_get_string(v);
        }
        return 1;
    }
    *sv = apr_table_get(ps->query, name);
    return *sv != NULL;
}

static void param_missing(tllm_params *ps, const char *name)
{
    param_error(ps, name, "missing", "Field required", NULL, NULL);
}

const char *tllm_param_str(tllm_params *ps, const char *name, int required,
                           apr_size_t max_chars)
{
    const char *s;
    json_object *jv;

    if (!param_raw(ps, name, &s, &jv)) {
        if (required) {
            param_missing(ps, name);
        }
        return NULL;
    }
    if (!s) {
        param_error(ps, name, "string_type", "Input should be a valid string",
                    json_object_get(jv), NULL);
        return NULL;
    }
    if (!*s) {
        if (required) {
            param_missing(ps, name);
        }
        return NULL;
    }
    if (max_chars && tllm_utf8_length(s, strlen(s)) > max_chars) {
        json_object *ctx = json_object_new_object();
        json_object_object_add(ctx, "max_length",
                               json_object_new_int64(max_chars));
        param_error(ps, name, "string_too_long",
                    apr_psprintf(ps->pool, "String should have at most %"
                                 APR_SIZE_T_FMT " characters", max_chars),
                    json_object_new_string(s), ctx);
        return NULL;
    }
    return s;
}

const char *tllm_param_status(tllm_params *ps, const char *name)
{
    static const char *const statuses[] = { "success", "warning", "failed" };
    const char *s = tllm_param_str(ps, name, 0, 0);
    int i;

    if (!s) {
        return NULL;
    }
    for (i = 0; i < 3; i++) {
        if (!strcasecmp(s, statuses[i])) {
            return statuses[i];
        }
    }
    {
        const char *expected = "'success', 'warning' or 'failed'";
        json_object *ctx = json_object_new_object();
        json_object_object_add(ctx, "expected",
                               json_object_new_string(expected));
        param_error(ps, name, "enum",
                    "Input should be 'success', 'warning' or 'failed'",
                    json_object_new_string(s), ctx);
    }
    return NULL;
}

int tllm_env_valid(const char *s)
{
    apr_size_t n = 0;
    for (; *s; s++, n++) {
        if (!apr_isalnum(*s) && *s != '-' && *s != '_') {
            return 0;
        }
    }
    return n >= 1 && n <= 32;
}

const char *tllm_param_env(tllm_params *ps, const char *name, int required)
{
    const char *s = tllm_param_str(ps, name, required, 0);
    if (s && !tllm_env_valid(s)) {
        const char *why = "environment must be 1-32 letters, digits, "
                          "'-' or '_'";
        json_object *ctx = json_object_new_object();
        json_object_object_add(ctx, "error", json_object_new_string(why));
        param_error(ps, name, "value_error",
                    "Value error, environment must be 1-32 letters, digits, "
                    "'-' or '_'", json_object_new_string(s), ctx);
        return NULL;
    }
    return s;
}

static void bound_error(tllm_params *ps, const char *name, int is_min,
                        json_object *bound, json_object *input)
{
    json_object *ctx = json_object_new_object();
    const char *text = json_object_to_json_string_ext(bound,
                                                      JSON_C_TO_STRING_PLAIN);
    char msg[96];

    apr_snprintf(msg, sizeof(msg), "Input should be %s than or equal to %s",
                 is_min ? "greater" : "less", text);
    json_object_object_add(ctx, is_min ? "ge" : "le", bound);
    param_error(ps, name, is_min ? "greater_than_equal" : "less_than_equal",
                msg, input, ctx);
}

int tllm_param_int(tllm_params *ps, const char *name, int64_t def,
                   int64_t min, int64_t max, int64_t *out)
{
    const char *s;
    json_object *jv;
    int64_t v;

    *out = def;
    if (!param_raw(ps, name, &s, &jv) || (s && !*s && !jv)) {
        return 0;               /* absent, or an empty query value */
    }
    if (jv) {
        int ok = json_object_is_type(jv, json_type_int)
                 || (json_object_is_type(jv, json_type_double)
                     && floor(json_object_get_double(jv))
                        == json_object_get_double(jv));
        if (!ok) {
            param_error(ps, name, "int_parsing",
                        "Input should be a valid integer",
                        json_object_get(jv), NULL);
            return -1;
        }
        v = json_object_get_int64(jv);
    }
    else {
        char *end;
        errno = 0;
        v = apr_strtoi64(s, &end, 10);
        if (errno || end == s || *end) {
            param_error(ps, name, "int_parsing",
                        "Input should be a valid integer, unable to parse "
                        "string as an integer", json_object_new_string(s),
                        NULL);
            return -1;
        }
    }
    if (v < min || v > max) {
        json_object *input = jv ? json_object_get(jv)
                                : json_object_new_string(s);
        bound_error(ps, name, v < min,
                    json_object_new_int64(v < min ? min : max), input);
        return -1;
    }
    *out = v;
    return 1;
}

int tllm_param_float(tllm_params *ps, const char *name, double min,
                     double *out)
{
    const char *s;
    json_object *jv;
    double v;

    *out = 0;
    if (!param_raw(ps, name, &s, &jv) || (s && !*s && !jv)) {
        return 0;
    }
    if (jv) {
        if (!json_object_is_type(jv, json_type_int)
            && !json_object_is_type(jv, json_type_double)) {
            param_error(ps, name, "float_parsing",
                        "Input should be a valid number",
                        json_object_get(jv), NULL);
            return -1;
        }
        v = json_object_get_double(jv);
    }
    else {
        char *end;
        errno = 0;
        v = strtod(s, &end);
        if (errno || end == s || *end || !isfinite(v)) {
            param_error(ps, name, "float_parsing",
                        "Input should be a valid number, unable to parse "
                        "string as a number", json_object_new_string(s),
                        NULL);
            return -1;
        }
    }
    if (v < min) {
        json_object *input = jv ? json_object_get(jv)
                                : json_object_new_string(s);
        bound_error(ps, name, 1, json_object_new_int64((int64_t)min), input);
        return -1;
    }
    *out = v;
    return 1;
}

/* ---- body -------------------------------------------------------------- */

static int is_json_type(const char *ct)
{
    const char *semi;
    apr_size_t n;

    if (!ct) {
        return 0;
    }
    while (*ct == ' ') {
        ct++;
    }
    semi = strchr(ct, ';');
    n = semi ? (apr_size_t)(semi - ct) : strlen(ct);
    while (n && ct[n - 1] == ' ') {
        n--;
    }
    return n == 16 && !strncasecmp(ct, "application/json", 16);
}

/* Send an error while reading the body; returns its status for the
 * caller to pass up. */
static int body_error(request_rec *r, int status, const char *detail)
{
    tllm_send_detail(r, status, detail);
    return status;
}

static int too_large(tllm_req *q)
{
    /* Not reading the rest of an oversized body means the connection
     * cannot be reused: close it rather than drain it. */
    q->r->connection->keepalive = AP_CONN_CLOSE;
    return body_error(q->r, HTTP_REQUEST_ENTITY_TOO_LARGE,
                      apr_psprintf(q->r->pool, "Request body too large "
                                   "(limit %" APR_OFF_T_FMT " bytes)",
                                   q->conf->max_body));
}

/* Read the whole body into one buffer of the bulk pool, counting as it
 * arrives so a chunked body is stopped at the limit. Returns 0, or a
 * status sent. */
static int read_body(tllm_req *q, apr_off_t declared, char **buf,
                     apr_size_t *len)
{
    request_rec *r = q->r;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool,
                                                r->connection->bucket_alloc);
    tllm_sb sb;
    int seen_eos = 0;

    tllm_sb_init(&sb, tllm_req_bulk_pool(q),
                 declared > 0 ? (apr_size_t)declared + 1 : 8192);
    while (!seen_eos) {
        apr_bucket *b;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb,
                                         AP_MODE_READBYTES, APR_BLOCK_READ,
                                         HUGE_STRING_LEN);
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r,
                          "TLLM0102: reading the request body failed");
            r->connection->keepalive = AP_CONN_CLOSE;
            return body_error(r, HTTP_BAD_REQUEST,
                              "Could not read the request body");
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb);
             b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t n;
            if (APR_BUCKET_IS_EOS(b)) {
                seen_eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b)) {
                continue;
            }
            rv = apr_bucket_read(b, &data, &n, APR_BLOCK_READ);
            if (rv != APR_SUCCESS) {
                return body_error(r, HTTP_BAD_REQUEST,
                                  "Could not read the request body");
            }
            if ((apr_off_t)(sb.len + n) > q->conf->max_body) {
                apr_brigade_cleanup(bb);
                return too_large(q);
            }
            tllm_sb_add(&sb, data, n);
        }
        apr_brigade_cleanup(bb);
    }
    *buf = sb.data;
    *len = sb.len;
    return 0;
}

static apr_status_t release_json(void *obj)
{
    json_object_put(obj);
    return APR_SUCCESS;
}

static int parse_json(tllm_req *q, const char *buf, apr_size_t len,
                      json_object **out)
{
    json_tokener *tok = json_tokener_new_ex(TLLM_JSON_DEPTH);
    json_object *obj;
    enum json_tokener_error err;
    const char *why = NULL;
    int whole = 0;              /* all of buf went into the value */

    json_tokener_set_flags(tok, JSON_TOKENER_STRICT
                                | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, buf, (int)len);
    err = json_tokener_get_error(tok);
    if (err == json_tokener_continue) {
        /* A bare number ("5") may still be growing: a NUL ends it. */
        obj = json_tokener_parse_ex(tok, "", 1);
        err = json_tokener_get_error(tok);
        whole = 1;
    }
    if (err == json_tokener_continue) {
        why = "unexpected end of input";
    }
    else if (err != json_tokener_success) {
        why = json_tokener_error_desc(err);
    }
    else {
        apr_size_t used = whole ? len : json_tokener_get_parse_end(tok);
        for (; used < len; used++) {
            if (!apr_isspace(buf[used])) {
                why = "unexpected data after the JSON value";
                break;
            }
        }
    }
    json_tokener_free(tok);
    if (why) {
        if (obj) {
            json_object_put(obj);
        }
        return body_error(q->r, HTTP_BAD_REQUEST,
                          apr_pstrcat(q->r->pool, "Malformed JSON: ", why,
                                      NULL));
    }
    if (obj) {
        apr_pool_cleanup_register(q->r->pool, obj, release_json,
                                  apr_pool_cleanup_null);
    }
    *out = obj;
    return 0;
}

int tllm_read_json_body(tllm_req *q, int required, json_object **out)
{
    request_rec *r = q->r;
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    const char *te = apr_table_get(r->headers_in, "Transfer-Encoding");
    apr_off_t declared = -1;
    char *buf;
    apr_size_t len;
    int rc;

    *out = NULL;
    if (cl) {
        char *end;
        if (apr_strtoff(&declared, cl, &end, 10) != APR_SUCCESS || *end
            || declared < 0) {
            return body_error(r, HTTP_BAD_REQUEST, "Invalid Content-Length");
        }
    }
    if (!te && declared <= 0) {
        if (required) {
            return body_error(r, HTTP_LENGTH_REQUIRED, "Length Required");
        }
        return 0;
    }
    if (!is_json_type(apr_table_get(r->headers_in, "Content-Type"))) {
        r->connection->keepalive = AP_CONN_CLOSE;
        return body_error(r, HTTP_UNSUPPORTED_MEDIA_TYPE,
                          "Content-Type must be application/json");
    }
    if (declared > q->conf->max_body) {
        return too_large(q);
    }
    rc = read_body(q, declared, &buf, &len);
    if (rc) {
        return rc;
    }
    if (len == 0) {
        if (required) {
            return body_error(r, HTTP_LENGTH_REQUIRED, "Length Required");
        }
        return 0;
    }
    return parse_json(q, buf, len, out);
}
