/*
 * trace.c - the trace model: validate and normalize one incoming trace
 * (API.md, "Ingest normalization") and render it once as the TraceSchema
 * JSON that every endpoint serves verbatim afterwards.
 *
 * Every problem of a trace is collected, not just the first, as
 * pydantic-shaped 422 items. Explicit values win over inferred ones; a
 * field that is absent or JSON null counts as not given.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "trace.h"
#include "jsonutil.h"
#include "ttime.h"

#define TRACE_ID_MAX  200       /* characters: ids are keys, not payloads */
#define ENV_MAX       32

/* The state of one normalization: where errors go and how they are
 * located. */
typedef struct {
    apr_pool_t *pool;
    json_object *errors;
    int index;                  /* position in a batch, -1 for single */
    int step;                   /* 0-based step being read, -1 for none */
    int invalid;
} norm;

/* A normalized step, before rendering. */
typedef struct {
    const char *step_id;
    const char *tool_name;
    json_object *input;         /* owned references */
    json_object *output;
    double duration;
    int success;
    int64_t timestamp;
} step;

/* ---- errors ------------------------------------------------------------ */

static json_object *location(const norm *n, const char *field)
{
    json_object *loc = json_object_new_array();

    json_object_array_add(loc, json_object_new_string("body"));
    if (n->index >= 0) {
        json_object_array_add(loc, json_object_new_int(n->index));
    }
    if (n->step >= 0) {
        json_object_array_add(loc, json_object_new_string("steps"));
        json_object_array_add(loc, json_object_new_int(n->step));
    }
    if (field) {
        json_object_array_add(loc, json_object_new_string(field));
    }
    return loc;
}

static void problem(norm *n, const char *field, const char *type,
                    const char *msg, json_object *input, json_object *ctx)
{
    json_object_array_add(n->errors,
                          tllm_error_item(type, location(n, field), msg,
                                          input ? json_object_get(input)
                                                : NULL, ctx));
    n->invalid = 1;
}

static json_object *ctx_of(const char *key, json_object *value)
{
    json_object *ctx = json_object_new_object();
    json_object_object_add(ctx, key, value);
    return ctx;
}

static void value_error(norm *n, const char *field, json_object *input,
                        const char *why)
{
    problem(n, field, "value_error",
            apr_pstrcat(n->pool, "Value error, ", why, NULL), input,
            ctx_of("error", json_object_new_string(why)));
}

/* ---- typed fields ------------------------------------------------------ */

/* The value of a field, or NULL when absent or JSON null. */
static json_object *given(json_object *in, const char *name)
{
    json_object *v = NULL;
    json_object_object_get_ex(in, name, &v);
    return v;
}

/* 1 and *out when given as a string; 0 when not given; -1 on error. */
static int get_string(norm *n, json_object *in, const char *name,
                      const char **out)
{
    json_object *v = given(in, name);

    if (!v) {
        return 0;
    }
    if (!json_object_is_type(v, json_type_string)) {
        problem(n, name, "string_type", "Input should be a valid string", v,
                NULL);
        return -1;
    }
    *out = apr_pstrmemdup(n->pool, json_object_get_string(v),
                          json_object_get_string_len(v));
    return 1;
}

static int is_number(json_object *v)
{
    return json_object_is_type(v, json_type_double)
           || json_object_is_type(v, json_type_int);
}

static void check_non_negative(norm *n, const char *name, json_object *v,
                               double value)
{
    if (value < 0) {
        problem(n, name, "greater_than_equal",
                "Input should be greater than or equal to 0", v,
                ctx_of("ge", json_object_new_int(0)));
    }
}

/* A number >= 0; def when not given. */
static double get_duration(norm *n, json_object *in, const char *name,
                           double def)
{
    json_object *v = given(in, name);
    double d;

    if (!v) {
        return def;
    }
    if (!is_number(v)) {
        problem(n, name, "float_parsing", "Input should be a valid number", v,
                NULL);
        return def;
    }
    d = json_object_get_double(v);
    if (!isfinite(d)) {
        problem(n, name, "float_parsing", "Input should be a finite number",
                v, NULL);
        return def;
    }
    check_non_negative(n, name, v, d);
    return d;
}

/* A whole number >= 0: 1 and *out when given, 0 when not, -1 on error.
 * A JSON number with no fractional part (5.0) counts as whole. */
static int get_count(norm *n, json_object *in, const char *name,
                     int64_t *out)
{
    json_object *v = given(in, name);
    double d = v ? json_object_get_double(v) : 0;

    if (!v) {
        return 0;
    }
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v);
    }
    else if (json_object_is_type(v, json_type_double) && d == floor(d)
             && fabs(d) < 9e15) {
        *out = (int64_t)d;
    }
    else {
        problem(n, name, "int_parsing",
                json_object_is_type(v, json_type_double)
                    ? "Input should be a valid integer, got a number with "
                      "a fractional part"
                    : "Input should be a valid integer", v, NULL);
        return -1;
    }
    if (*out < 0) {
        check_non_negative(n, name, v, (double)*out);
        return -1;
    }
    return 1;
}

/* 1 and *out when given as a boolean; 0 when not given; -1 on error. */
static int get_bool(norm *n, json_object *in, const char *name, int *out)
{
    json_object *v = given(in, name);

    if (!v) {
        return 0;
    }
    if (!json_object_is_type(v, json_type_boolean)) {
        problem(n, name, "bool_type", "Input should be a valid boolean", v,
                NULL);
        return -1;
    }
    *out = json_object_get_boolean(v);
    return 1;
}

/* The first given of names[] as a timestamp; def when none is given. */
static int64_t get_time(norm *n, json_object *in, const char *first,
                        const char *second, int64_t def)
{
    const char *name = first;
    json_object *v = given(in, first);
    const char *why = "invalid timestamp";
    int64_t us;

    if (!v) {
        name = second;
        v = given(in, second);
    }
    if (!v) {
        return def;
    }
    if (json_object_is_type(v, json_type_string)
        && tllm_time_parse(json_object_get_string(v), &us, &why) == 0) {
        return us;
    }
    if (!json_object_is_type(v, json_type_string)) {
        why = "expected an ISO 8601 string";
    }
    problem(n, name, "datetime_parsing",
            apr_pstrcat(n->pool, "Input should be a valid datetime, ", why,
                        NULL),
            v, ctx_of("error", json_object_new_string(why)));
    return def;
}

/* ---- steps ------------------------------------------------------------- */

/* input/output: the first given of two names; {} by default; a value that
 * is not an object becomes {"value": v}. Returns a new reference. */
static json_object *step_object(json_object *in, const char *first,
                                const char *second)
{
    json_object *v = given(in, first);
    json_object *wrapped;

    if (!v) {
        v = given(in, second);
    }
    if (!v) {
        return json_object_new_object();
    }
    if (json_object_is_type(v, json_type_object)) {
        return json_object_get(v);
    }
    wrapped = json_object_new_object();
    json_object_object_add(wrapped, "value", json_object_get(v));
    return wrapped;
}

static void read_step(norm *n, json_object *in, int i, int64_t now,
                      step *s)
{
    n->step = i;
    memset(s, 0, sizeof(*s));
    if (!json_object_is_type(in, json_type_object)) {
        value_error(n, NULL, in, "a step must be an object");
        s->step_id = s->tool_name = "";
        n->step = -1;
        return;
    }
    if (get_string(n, in, "step_id", &s->step_id) != 1) {
        s->step_id = apr_psprintf(n->pool, "step_%d", i + 1);
    }
    if (get_string(n, in, "tool_name", &s->tool_name) == 0
        && get_string(n, in, "step_type", &s->tool_name) == 0) {
        s->tool_name = "agent";
    }
    if (!s->tool_name) {
        s->tool_name = "agent";
    }
    s->input = step_object(in, "input", "input_data");
    s->output = step_object(in, "output", "output_data");
    s->duration = get_duration(n, in, "duration", 0);
    s->success = 1;
    get_bool(n, in, "success", &s->success);
    s->timestamp = get_time(n, in, "timestamp", "created_at", now);
    n->step = -1;
}

static void free_steps(step *steps, int count)
{
    int i;
    for (i = 0; i < count; i++) {
        if (steps[i].input) {
            json_object_put(steps[i].input);
        }
        if (steps[i].output) {
            json_object_put(steps[i].output);
        }
    }
}

/* Steps whose tool_name already appeared earlier in the trace. */
static int64_t repeated_tools(const step *steps, int count)
{
    int64_t repeats = 0;
    int i, j;

    for (i = 1; i < count; i++) {
        for (j = 0; j < i; j++) {
            if (strcmp(steps[i].tool_name, steps[j].tool_name) == 0) {
                repeats++;
                break;
            }
        }
    }
    return repeats;
}

/* From the first failed step: output.error, else output.message, else its
 * tool_name. NULL when no step failed. An error or message that is null or
 * "" says nothing and is passed over; one that is not a string is taken as
 * its JSON text. */
static const char *inferred_failure(apr_pool_t *p, const step *steps,
                                    int count)
{
    static const char *const keys[] = { "error", "message" };
    int i, k;

    for (i = 0; i < count; i++) {
        if (steps[i].success) {
            continue;
        }
        for (k = 0; k < 2; k++) {
            json_object *v = given(steps[i].output, keys[k]);
            if (!v) {
                continue;
            }
            if (!json_object_is_type(v, json_type_string)) {
                return apr_pstrdup(p, tllm_json_text(v, NULL));
            }
            if (json_object_get_string_len(v) > 0) {
                return apr_pstrdup(p, json_object_get_string(v));
            }
        }
        return steps[i].tool_name;
    }
    return NULL;
}

/* ---- the trace --------------------------------------------------------- */

/* ASCII only, whatever the process's locale says a letter is. */
static int env_valid(const char *s)
{
    size_t len = 0;
    for (; *s; s++, len++) {
        if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z')
            && !(*s >= '0' && *s <= '9') && *s != '-' && *s != '_') {
            return 0;
        }
    }
    return len >= 1 && len <= ENV_MAX;
}

/* trace_id, else id, else a new UUIDv4. An empty id counts as not given:
 * "" could be neither fetched nor told apart. */
static const char *read_trace_id(norm *n, json_object *in)
{
    static const char *const names[] = { "trace_id", "id" };
    int i;

    for (i = 0; i < 2; i++) {
        const char *id = NULL;
        int rc = get_string(n, in, names[i], &id);
        if (rc < 0) {
            return "";          /* the type error is recorded */
        }
        if (rc == 1 && *id) {
            json_object *v = given(in, names[i]);
            if ((size_t)json_object_get_string_len(v) != strlen(id)) {
                /* An id is a key and a URL segment: no NUL inside. */
                value_error(n, names[i], v,
                            "trace_id must not contain a NUL character");
            }
            else if (tllm_utf8_length(id, strlen(id)) > TRACE_ID_MAX) {
                problem(n, names[i], "string_too_long",
                        "String should have at most 200 characters",
                        given(in, names[i]),
                        ctx_of("max_length",
                               json_object_new_int(TRACE_ID_MAX)));
            }
            return id;
        }
    }
    return tllm_uuid4(n->pool);
}

static const char *read_status(norm *n, json_object *in)
{
    static const char *const statuses[] = {
        TLLM_STATUS_SUCCESS, TLLM_STATUS_WARNING, TLLM_STATUS_FAILED
    };
    json_object *v = given(in, "status");
    const char *s;
    int i;

    if (!v) {
        return NULL;
    }
    s = json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                 : NULL;
    if (s && !*s) {
        return NULL;            /* an empty status is not given */
    }
    for (i = 0; s && i < 3; i++) {
        if (!strcasecmp(s, statuses[i])) {
            return statuses[i];
        }
    }
    problem(n, "status", "enum",
            "Input should be 'success', 'warning' or 'failed'", v,
            ctx_of("expected", json_object_new_string(
                       "'success', 'warning' or 'failed'")));
    return NULL;
}

/* ---- rendering --------------------------------------------------------- */

static json_object *string_or_null(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

/* The client's own string object when it sent one (a new reference): a
 * prompt or response is served byte for byte, even with a \u0000 in it. */
static json_object *text_field(json_object *in, const char *name,
                               const char *def)
{
    json_object *v = given(in, name);

    if (v && json_object_is_type(v, json_type_string)) {
        return json_object_get(v);
    }
    return string_or_null(def);
}

static json_object *timestamp(int64_t us)
{
    char buf[TLLM_TIME_BUFSZ];
    return json_object_new_string(tllm_time_format(us, buf));
}

static json_object *render_step(const step *s)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "step_id", json_object_new_string(s->step_id));
    json_object_object_add(o, "tool_name",
                           json_object_new_string(s->tool_name));
    json_object_object_add(o, "input", json_object_get(s->input));
    json_object_object_add(o, "output", json_object_get(s->output));
    json_object_object_add(o, "duration", tllm_json_double(s->duration));
    json_object_object_add(o, "success",
                           json_object_new_boolean(s->success));
    json_object_object_add(o, "timestamp", timestamp(s->timestamp));
    return o;
}

/* The TraceSchema object, in API.md's key order, copied into the pool. */
static void render(apr_pool_t *p, tllm_trace *t, json_object *in,
                   const char *project_name, const step *steps, int count,
                   const char *failure_reason)
{
    json_object *o = json_object_new_object();
    json_object *list = json_object_new_array();
    const char *text;
    size_t len;
    int i;

    for (i = 0; i < count; i++) {
        json_object_array_add(list, render_step(&steps[i]));
    }
    json_object_object_add(o, "trace_id", json_object_new_string(t->trace_id));
    json_object_object_add(o, "prompt", text_field(in, "prompt", ""));
    json_object_object_add(o, "response", text_field(in, "response", NULL));
    json_object_object_add(o, "latency", tllm_json_double(t->latency));
    json_object_object_add(o, "token_count",
                           json_object_new_int64(t->token_count));
    json_object_object_add(o, "model_name",
                           json_object_new_string(t->model_name));
    json_object_object_add(o, "project_id",
                           json_object_new_string(t->project_id));
    json_object_object_add(o, "project_name", string_or_null(project_name));
    json_object_object_add(o, "api_key", NULL);
    json_object_object_add(o, "environment",
                           json_object_new_string(t->environment));
    json_object_object_add(o, "status", json_object_new_string(t->status));
    json_object_object_add(o, "steps", list);
    json_object_object_add(o, "retry_count",
                           json_object_new_int64(t->retry_count));
    json_object_object_add(o, "slow_request",
                           json_object_new_boolean(t->slow_request));
    json_object_object_add(o, "failure_reason",
                           string_or_null(failure_reason));
    json_object_object_add(o, "created_at", timestamp(t->created_at));
    json_object_object_add(o, "updated_at", timestamp(t->updated_at));

    text = tllm_json_text(o, &len);
    t->json = apr_pstrmemdup(p, text, len);
    t->json_len = len;
    json_object_put(o);
}

/* ---- normalization ----------------------------------------------------- */

tllm_trace_result tllm_trace_normalize(apr_pool_t *p, json_object *in,
                                       const tllm_ingest_ctx *ctx, int index,
                                       tllm_trace **out,
                                       json_object *errors,
                                       const char **detail)
{
    norm n = { p, errors, index, -1, 0 };
    tllm_trace *t = apr_pcalloc(p, sizeof(*t));
    const char *prompt = "", *response = NULL, *project_name = NULL;
    const char *payload_project = NULL, *status, *failure_reason = NULL;
    json_object *list;
    step *steps = NULL;
    int count = 0, i, explicit_retries, slow;

    *out = NULL;
    if (!json_object_is_type(in, json_type_object)) {
        value_error(&n, NULL, in, "a trace must be an object");
        return TLLM_TRACE_INVALID;
    }
    if (get_string(&n, in, "project_id", &payload_project) == 1
        && strcmp(payload_project, ctx->project_id) != 0) {
        *detail = apr_psprintf(p, "API key is not valid for project '%s'",
                               payload_project);
        return TLLM_TRACE_FORBIDDEN;
    }

    t->trace_id = read_trace_id(&n, in);
    get_string(&n, in, "prompt", &prompt);
    get_string(&n, in, "response", &response);
    t->latency = get_duration(&n, in, "latency", 0);
    t->token_count = 0;
    get_count(&n, in, "token_count", &t->token_count);
    if (get_string(&n, in, "model_name", &t->model_name) == 0
        && get_string(&n, in, "model", &t->model_name) == 0) {
        t->model_name = "unknown";
    }
    t->project_id = ctx->project_id;
    get_string(&n, in, "project_name", &project_name);
    if (get_string(&n, in, "environment", &t->environment) == 1) {
        if (!env_valid(t->environment)) {
            value_error(&n, "environment", given(in, "environment"),
                        "environment must be 1-32 letters, digits, '-' or "
                        "'_'");
        }
    }
    else {
        t->environment = ctx->environment;
    }

    list = given(in, "steps");
    if (list && !json_object_is_type(list, json_type_array)) {
        value_error(&n, "steps", list, "steps must be a list");
        list = NULL;
    }
    if (list) {
        count = (int)json_object_array_length(list);
        steps = apr_pcalloc(p, sizeof(*steps) * (count + 1));
        for (i = 0; i < count; i++) {
            read_step(&n, json_object_array_get_idx(list, i), i, ctx->now_us,
                      &steps[i]);
        }
    }

    explicit_retries = get_count(&n, in, "retry_count", &t->retry_count);
    if (explicit_retries != 1) {
        t->retry_count = repeated_tools(steps, count);
    }
    /* An empty reason is no reason: it would otherwise mark the trace a
     * warning while saying nothing. */
    if (get_string(&n, in, "failure_reason", &failure_reason) != 1
        || !*failure_reason) {
        failure_reason = inferred_failure(p, steps, count);
    }
    status = read_status(&n, in);
    if (!status) {
        int any_failed = 0;
        for (i = 0; i < count; i++) {
            any_failed |= !steps[i].success;
        }
        status = any_failed ? TLLM_STATUS_FAILED
                 : failure_reason || t->retry_count > 0 ? TLLM_STATUS_WARNING
                 : TLLM_STATUS_SUCCESS;
    }
    t->status = status;
    if (get_bool(&n, in, "slow_request", &slow) == 1) {
        t->slow_request = slow;
    }
    else {
        t->slow_request = t->latency >= ctx->slow_threshold_ms;
    }
    t->created_at = get_time(&n, in, "created_at", "timestamp", ctx->now_us);
    t->updated_at = ctx->now_us;

    if (!n.invalid) {
        render(p, t, in, project_name, steps, count, failure_reason);
        *out = t;
    }
    free_steps(steps, count);
    return n.invalid ? TLLM_TRACE_INVALID : TLLM_TRACE_OK;
}

const char *tllm_uuid4(apr_pool_t *p)
{
    unsigned char b[16];

    if (apr_generate_random_bytes(b, sizeof(b)) != APR_SUCCESS) {
        /* Unreachable in practice; a time-based id still differs. */
        int64_t now = tllm_now_us();
        memcpy(b, &now, sizeof(now));
        memcpy(b + 8, &now, sizeof(now));
    }
    b[6] = (b[6] & 0x0F) | 0x40;    /* version 4 */
    b[8] = (b[8] & 0x3F) | 0x80;    /* RFC 4122 variant */
    return apr_psprintf(p, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                        "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
                        b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
                        b[12], b[13], b[14], b[15]);
}
