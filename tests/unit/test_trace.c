/*
 * test_trace.c - the trace model (API.md, "Ingest normalization"), the
 * JSON helpers and time parsing/printing, linked without httpd.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "jsonutil.h"
#include "trace.h"
#include "ttime.h"
#include "unit.h"

static apr_pool_t *pool;
/* 2026-05-28T20:26:40.123456Z */
#define NOW INT64_C(1780000000123456)

static const tllm_ingest_ctx CTX = { "proj", "prod", 1500.0, NOW };

/* Normalize JSON text; returns the result, *t the trace, *errors the 422
 * items (caller puts). */
static tllm_trace_result norm(const char *text, int index, tllm_trace **t,
                              json_object **errors, const char **detail)
{
    json_object *in = json_tokener_parse(text);
    tllm_trace_result r;

    *errors = json_object_new_array();
    *detail = NULL;
    r = tllm_trace_normalize(pool, in, &CTX, index, t, *errors, detail);
    json_object_put(in);
    return r;
}

/* The rendered trace, parsed back (caller puts), or NULL if invalid. */
static json_object *ok(const char *text)
{
    tllm_trace *t;
    json_object *errors;
    const char *detail;
    json_object *out = NULL;

    if (norm(text, -1, &t, &errors, &detail) == TLLM_TRACE_OK) {
        out = json_tokener_parse(t->json);
    }
    else {
        fprintf(stderr, "unexpected failure for %s: %s\n", text,
                tllm_json_text(errors, NULL));
    }
    json_object_put(errors);
    return out;
}

static const char *str(json_object *o, const char *path)
{
    json_object *v = o;
    char *copy = apr_pstrdup(pool, path), *part, *state;

    for (part = apr_strtok(copy, ".", &state); part && v;
         part = apr_strtok(NULL, ".", &state)) {
        if (json_object_is_type(v, json_type_array)) {
            v = json_object_array_get_idx(v, atoi(part));
        }
        else if (!json_object_object_get_ex(v, part, &v)) {
            return "(absent)";
        }
    }
    if (!v) {
        return "null";
    }
    return json_object_is_type(v, json_type_string)
           ? json_object_get_string(v)
           : apr_pstrdup(pool, tllm_json_text(v, NULL));
}

/* The 422 items of text, as one JSON string. */
static const char *problems(const char *text, int index)
{
    tllm_trace *t;
    json_object *errors;
    const char *detail, *out;

    if (norm(text, index, &t, &errors, &detail) != TLLM_TRACE_INVALID) {
        json_object_put(errors);
        return "(valid)";
    }
    out = apr_pstrdup(pool, tllm_json_text(errors, NULL));
    json_object_put(errors);
    return out;
}

static int has(const char *haystack, const char *needle)
{
    int found = strstr(haystack, needle) != NULL;
    if (!found) {
        fprintf(stderr, "  missing %s in %s\n", needle, haystack);
    }
    return found;
}

static void test_defaults(void)
{
    json_object *o = ok("{}");
    char now[TLLM_TIME_BUFSZ];

    tllm_time_format(NOW, now);
    CHECK(strlen(str(o, "trace_id")) == 36);
    CHECK(str(o, "trace_id")[14] == '4');
    CHECK_STR(str(o, "prompt"), "");
    CHECK_STR(str(o, "response"), "null");
    CHECK_STR(str(o, "latency"), "0.0");
    CHECK_STR(str(o, "token_count"), "0");
    CHECK_STR(str(o, "model_name"), "unknown");
    CHECK_STR(str(o, "project_id"), "proj");
    CHECK_STR(str(o, "project_name"), "null");
    CHECK_STR(str(o, "api_key"), "null");
    CHECK_STR(str(o, "environment"), "prod");
    CHECK_STR(str(o, "status"), "success");
    CHECK_STR(str(o, "steps"), "[]");
    CHECK_STR(str(o, "retry_count"), "0");
    CHECK_STR(str(o, "slow_request"), "false");
    CHECK_STR(str(o, "failure_reason"), "null");
    CHECK_STR(str(o, "created_at"), now);
    CHECK_STR(str(o, "updated_at"), now);
    json_object_put(o);
}

static void test_rendered_exactly(void)
{
    tllm_trace *t;
    json_object *errors;
    const char *detail;
    const char *in =
        "{\"trace_id\":\"t-1\",\"prompt\":\"h\\u00e9llo \xe4\xb8\x96\","
        "\"response\":\"ok\",\"latency\":12.5,\"token_count\":7,"
        "\"model\":\"m\",\"project_name\":\"P\",\"api_key\":\"tlm_sk_x\","
        "\"environment\":\"dev-1\",\"steps\":[{\"step_type\":\"search\","
        "\"input\":{\"q\":1.10},\"output\":\"\",\"duration\":3,"
        "\"timestamp\":\"2026-01-02T03:04:05Z\"}],"
        "\"created_at\":\"2026-01-02T03:04:05.5+01:00\"}";
    const char *want =
        "{\"trace_id\":\"t-1\",\"prompt\":\"h\xc3\xa9llo \xe4\xb8\x96\","
        "\"response\":\"ok\",\"latency\":12.5,\"token_count\":7,"
        "\"model_name\":\"m\",\"project_id\":\"proj\",\"project_name\":\"P\","
        "\"api_key\":null,\"environment\":\"dev-1\",\"status\":\"success\","
        "\"steps\":[{\"step_id\":\"step_1\",\"tool_name\":\"search\","
        "\"input\":{\"q\":1.10},\"output\":{\"value\":\"\"},"
        "\"duration\":3.0,\"success\":true,"
        "\"timestamp\":\"2026-01-02T03:04:05.000000+00:00\"}],"
        "\"retry_count\":0,\"slow_request\":false,\"failure_reason\":null,"
        "\"created_at\":\"2026-01-02T02:04:05.500000+00:00\","
        "\"updated_at\":\"2026-05-28T20:26:40.123456+00:00\"}";

    CHECK(norm(in, -1, &t, &errors, &detail) == TLLM_TRACE_OK);
    CHECK_STR(t->json, want);
    CHECK(t->json_len == strlen(want));
    CHECK_STR(t->trace_id, "t-1");
    CHECK_STR(t->environment, "dev-1");
    CHECK_STR(t->model_name, "m");
    CHECK(t->created_at == INT64_C(1767319445500000));
    json_object_put(errors);
}

static void test_ids_and_models(void)
{
    json_object *o = ok("{\"id\":\"legacy\",\"model\":\"a\"}");
    CHECK_STR(str(o, "trace_id"), "legacy");
    CHECK_STR(str(o, "model_name"), "a");
    json_object_put(o);
    o = ok("{\"trace_id\":\"x\",\"id\":\"y\",\"model_name\":\"b\","
           "\"model\":\"a\"}");
    CHECK_STR(str(o, "trace_id"), "x");
    CHECK_STR(str(o, "model_name"), "b");
    json_object_put(o);
    o = ok("{\"trace_id\":\"\",\"id\":null}");
    CHECK(strlen(str(o, "trace_id")) == 36);
    json_object_put(o);
    o = ok("{\"trace_id\":null,\"response\":null,\"model_name\":null}");
    CHECK_STR(str(o, "response"), "null");
    CHECK_STR(str(o, "model_name"), "unknown");
    json_object_put(o);
}

static void test_steps(void)
{
    json_object *o = ok(
        "{\"steps\":[{\"tool_name\":\"a\",\"step_type\":\"x\","
        "\"input\":{},\"input_data\":{\"no\":1},\"output\":0},"
        "{\"step_type\":\"b\",\"input_data\":[1],\"output_data\":{\"k\":2},"
        "\"step_id\":\"mine\",\"created_at\":\"2026-01-01T00:00:00\"},"
        "{}]}");
    CHECK_STR(str(o, "steps.0.step_id"), "step_1");
    CHECK_STR(str(o, "steps.0.tool_name"), "a");
    CHECK_STR(str(o, "steps.0.input"), "{}");
    CHECK_STR(str(o, "steps.0.output"), "{\"value\":0}");
    CHECK_STR(str(o, "steps.1.step_id"), "mine");
    CHECK_STR(str(o, "steps.1.tool_name"), "b");
    CHECK_STR(str(o, "steps.1.input"), "{\"value\":[1]}");
    CHECK_STR(str(o, "steps.1.output"), "{\"k\":2}");
    CHECK_STR(str(o, "steps.1.timestamp"),
              "2026-01-01T00:00:00.000000+00:00");
    CHECK_STR(str(o, "steps.2.step_id"), "step_3");
    CHECK_STR(str(o, "steps.2.tool_name"), "agent");
    CHECK_STR(str(o, "steps.2.success"), "true");
    CHECK_STR(str(o, "steps.2.duration"), "0.0");
    json_object_put(o);
}

static void test_inference(void)
{
    json_object *o;

    /* Repeated tool names are retries, and retries warn. */
    o = ok("{\"steps\":[{\"tool_name\":\"a\"},{\"tool_name\":\"b\"},"
           "{\"tool_name\":\"a\"},{\"tool_name\":\"a\"}]}");
    CHECK_STR(str(o, "retry_count"), "2");
    CHECK_STR(str(o, "status"), "warning");
    json_object_put(o);
    /* Explicit retry_count wins, even 0. */
    o = ok("{\"retry_count\":0,\"steps\":[{\"tool_name\":\"a\"},"
           "{\"tool_name\":\"a\"}]}");
    CHECK_STR(str(o, "retry_count"), "0");
    CHECK_STR(str(o, "status"), "success");
    json_object_put(o);
    /* A failed step fails the trace; its output names the reason. */
    o = ok("{\"steps\":[{\"tool_name\":\"a\",\"success\":false,"
           "\"output\":{\"message\":\"m\",\"error\":\"e\"}},"
           "{\"tool_name\":\"b\",\"success\":false,"
           "\"output\":{\"error\":\"later\"}}]}");
    CHECK_STR(str(o, "status"), "failed");
    CHECK_STR(str(o, "failure_reason"), "e");
    json_object_put(o);
    o = ok("{\"steps\":[{\"tool_name\":\"a\",\"success\":false,"
           "\"output\":{\"message\":\"m\"}}]}");
    CHECK_STR(str(o, "failure_reason"), "m");
    json_object_put(o);
    o = ok("{\"steps\":[{\"tool_name\":\"a\",\"success\":false}]}");
    CHECK_STR(str(o, "failure_reason"), "a");
    json_object_put(o);
    /* An explicit reason wins and, alone, warns. */
    o = ok("{\"failure_reason\":\"timeout\",\"steps\":[{\"tool_name\":\"a\","
           "\"success\":false,\"output\":{\"error\":\"e\"}}]}");
    CHECK_STR(str(o, "failure_reason"), "timeout");
    CHECK_STR(str(o, "status"), "failed");
    json_object_put(o);
    o = ok("{\"failure_reason\":\"soft\"}");
    CHECK_STR(str(o, "status"), "warning");
    json_object_put(o);
    /* Explicit status wins, case-insensitively; "" is not given. */
    o = ok("{\"status\":\"SUCCESS\",\"steps\":[{\"success\":false}]}");
    CHECK_STR(str(o, "status"), "success");
    json_object_put(o);
    o = ok("{\"status\":\"Warning\"}");
    CHECK_STR(str(o, "status"), "warning");
    json_object_put(o);
    o = ok("{\"status\":\"\",\"steps\":[{\"success\":false}]}");
    CHECK_STR(str(o, "status"), "failed");
    json_object_put(o);
    /* Slowness: latency >= threshold unless said otherwise. */
    o = ok("{\"latency\":1500}");
    CHECK_STR(str(o, "slow_request"), "true");
    CHECK_STR(str(o, "latency"), "1500.0");
    json_object_put(o);
    o = ok("{\"latency\":1499.99}");
    CHECK_STR(str(o, "slow_request"), "false");
    json_object_put(o);
    o = ok("{\"latency\":9000,\"slow_request\":false}");
    CHECK_STR(str(o, "slow_request"), "false");
    json_object_put(o);
    o = ok("{\"latency\":1,\"slow_request\":true}");
    CHECK_STR(str(o, "slow_request"), "true");
    json_object_put(o);
}

static void test_timestamps(void)
{
    json_object *o;

    o = ok("{\"created_at\":\"2026-03-01T12:00:00Z\"}");
    CHECK_STR(str(o, "created_at"), "2026-03-01T12:00:00.000000+00:00");
    json_object_put(o);
    o = ok("{\"created_at\":\"2026-03-01T12:00:00.25\"}");
    CHECK_STR(str(o, "created_at"), "2026-03-01T12:00:00.250000+00:00");
    json_object_put(o);
    o = ok("{\"created_at\":\"2026-03-01T02:00:00+05:30\"}");
    CHECK_STR(str(o, "created_at"), "2026-02-28T20:30:00.000000+00:00");
    json_object_put(o);
    o = ok("{\"timestamp\":\"2026-03-01T20:00:00-0800\"}");
    CHECK_STR(str(o, "created_at"), "2026-03-02T04:00:00.000000+00:00");
    json_object_put(o);
    o = ok("{\"created_at\":\"2024-02-29 23:59:59.1234567\","
           "\"timestamp\":\"bad but unused\"}");
    CHECK_STR(str(o, "created_at"), "2024-02-29T23:59:59.123456+00:00");
    json_object_put(o);
}

static void test_errors(void)
{
    const char *p;

    p = problems("{\"latency\":-1,\"token_count\":-2,\"retry_count\":-3,"
                 "\"steps\":[{},{\"duration\":-4}]}", -1);
    CHECK(has(p, "{\"type\":\"greater_than_equal\",\"loc\":[\"body\","
                 "\"latency\"],\"msg\":\"Input should be greater than or "
                 "equal to 0\",\"input\":-1,\"ctx\":{\"ge\":0}}"));
    CHECK(has(p, "\"loc\":[\"body\",\"token_count\"]"));
    CHECK(has(p, "\"loc\":[\"body\",\"retry_count\"]"));
    CHECK(has(p, "\"loc\":[\"body\",\"steps\",1,\"duration\"]"));

    p = problems("{\"prompt\":5,\"token_count\":1.5,\"latency\":\"3\","
                 "\"slow_request\":\"yes\",\"status\":\"done\","
                 "\"created_at\":\"yesterday\",\"environment\":\"a b\"}", 7);
    CHECK(has(p, "{\"type\":\"string_type\",\"loc\":[\"body\",7,\"prompt\"]"));
    CHECK(has(p, "{\"type\":\"int_parsing\",\"loc\":[\"body\",7,"
                 "\"token_count\"]"));
    CHECK(has(p, "{\"type\":\"float_parsing\",\"loc\":[\"body\",7,"
                 "\"latency\"]"));
    CHECK(has(p, "{\"type\":\"bool_type\",\"loc\":[\"body\",7,"
                 "\"slow_request\"]"));
    CHECK(has(p, "{\"type\":\"enum\",\"loc\":[\"body\",7,\"status\"],"
                 "\"msg\":\"Input should be 'success', 'warning' or "
                 "'failed'\",\"input\":\"done\""));
    CHECK(has(p, "{\"type\":\"datetime_parsing\",\"loc\":[\"body\",7,"
                 "\"created_at\"]"));
    CHECK(has(p, "{\"type\":\"value_error\",\"loc\":[\"body\",7,"
                 "\"environment\"]"));

    CHECK(has(problems("{\"steps\":{}}", -1),
              "\"loc\":[\"body\",\"steps\"]"));
    CHECK(has(problems("{\"steps\":[1]}", -1),
              "\"loc\":[\"body\",\"steps\",0]"));
    CHECK(has(problems("[1]", 2), "\"loc\":[\"body\",2]"));
    CHECK(has(problems("{\"environment\":"
                       "\"abcdefghijklmnopqrstuvwxyz0123456\"}", -1),
              "\"environment\""));
    CHECK(has(problems("{\"token_count\":true}", -1), "int_parsing"));
    CHECK(has(problems("{\"trace_id\":\"a\\u0000b\"}", -1),
              "{\"type\":\"value_error\",\"loc\":[\"body\",\"trace_id\"]"));
    CHECK(has(problems("{\"created_at\":12345}", -1), "datetime_parsing"));
    CHECK(has(problems("{\"created_at\":\"2026-02-30T00:00:00\"}", -1),
              "datetime_parsing"));
    CHECK_STR(problems("{\"token_count\":5.0,\"environment\":"
                       "\"abcdefghijklmnopqrstuvwxyz012345\"}", -1),
              "(valid)");
}

static void test_project(void)
{
    tllm_trace *t;
    json_object *errors;
    const char *detail;

    CHECK(norm("{\"project_id\":\"other\"}", -1, &t, &errors, &detail)
          == TLLM_TRACE_FORBIDDEN);
    CHECK_STR(detail, "API key is not valid for project 'other'");
    json_object_put(errors);
    CHECK(norm("{\"project_id\":\"proj\",\"api_key\":\"ignored\"}", -1, &t,
               &errors, &detail) == TLLM_TRACE_OK);
    CHECK(strstr(t->json, "ignored") == NULL);
    json_object_put(errors);
}

static void test_helpers(void)
{
    char buf[TLLM_DOUBLE_BUFSZ];
    char tb[TLLM_TIME_BUFSZ];
    int64_t us;
    const char *err;

    tllm_format_double(100, buf);
    CHECK_STR(buf, "100.0");
    tllm_format_double(0.1, buf);
    CHECK_STR(buf, "0.1");
    tllm_format_double(1.0 / 3.0, buf);
    CHECK(strtod(buf, NULL) == 1.0 / 3.0);
    tllm_format_double(1e22, buf);
    CHECK_STR(buf, "1e+22");
    /* As Python's round(v, 2): 2.675 is stored as 2.67499999... */
    CHECK(tllm_round2(2.675) == 2.67);
    CHECK(tllm_round2(1.005) == 1.0);
    CHECK(tllm_round2(0.125) == 0.12);
    CHECK(tllm_round2(0.375) == 0.38);
    CHECK(tllm_round2(66.666666) == 66.67);
    CHECK(tllm_round2(-1.005) == -1.0);
    CHECK(tllm_round2(0) == 0);

    CHECK_STR(tllm_time_format(0, tb), "1970-01-01T00:00:00.000000+00:00");
    CHECK_STR(tllm_time_format(-1, tb), "1969-12-31T23:59:59.999999+00:00");
    CHECK(tllm_time_parse("2000-02-29", &us, &err) == 0);
    CHECK_STR(tllm_time_format(us, tb), "2000-02-29T00:00:00.000000+00:00");
    CHECK(tllm_time_parse("1900-02-29", &us, &err) == -1);
    CHECK(tllm_time_parse("2026-01-01T24:00:00", &us, &err) == -1);
    CHECK(tllm_time_parse("2026-01-01T00:00:00+", &us, &err) == -1);
    CHECK(tllm_time_parse("2026-01-01T00:00:00Zjunk", &us, &err) == -1);
    CHECK(tllm_time_parse("2026-01-01T00:00:00+01", &us, &err) == 0);
    CHECK_STR(tllm_time_format(us, tb), "2025-12-31T23:00:00.000000+00:00");
    CHECK(tllm_utf8_length("h\xc3\xa9\xe4\xb8\x96\xf0\x9f\x9a\x80", 10) == 4);
}

/* Rules whose edges the tests above leave open. */
static void test_more_rules(void)
{
    json_object *o;
    tllm_trace *t;
    json_object *errors;
    const char *detail, *p;
    char id[202];

    /* Default tool names repeat too. */
    o = ok("{\"steps\":[{},{}]}");
    CHECK_STR(str(o, "retry_count"), "1");
    CHECK_STR(str(o, "status"), "warning");
    json_object_put(o);
    /* An empty failure_reason is no reason: inferred, else null. */
    o = ok("{\"failure_reason\":\"\"}");
    CHECK_STR(str(o, "failure_reason"), "null");
    CHECK_STR(str(o, "status"), "success");
    json_object_put(o);
    o = ok("{\"failure_reason\":\"\",\"steps\":[{\"tool_name\":\"t\","
           "\"success\":false,"
           "\"output\":{\"error\":\"\",\"message\":\"m\"}}]}");
    CHECK_STR(str(o, "failure_reason"), "m");
    json_object_put(o);
    /* A non-string error is taken as its JSON text. */
    o = ok("{\"steps\":[{\"success\":false,"
           "\"output\":{\"error\":{\"c\":5}}}]}");
    CHECK_STR(str(o, "failure_reason"), "{\"c\":5}");
    json_object_put(o);
    /* A wrapped output has no error: the tool names the failure. */
    o = ok("{\"steps\":[{\"tool_name\":\"f\",\"success\":false,"
           "\"output\":\"oops\"}]}");
    CHECK_STR(str(o, "failure_reason"), "f");
    CHECK_STR(str(o, "steps.0.output"), "{\"value\":\"oops\"}");
    json_object_put(o);
    /* Whole numbers written as floats are whole numbers. */
    CHECK(norm("{\"token_count\":5.0,\"retry_count\":2.0}", -1, &t, &errors,
               &detail) == TLLM_TRACE_OK);
    CHECK(t->token_count == 5 && t->retry_count == 2);
    CHECK(strstr(t->json, "\"token_count\":5,") != NULL);
    json_object_put(errors);
    /* A prompt is served byte for byte, NUL and all. */
    CHECK(norm("{\"prompt\":\"a\\u0000b\"}", -1, &t, &errors, &detail)
          == TLLM_TRACE_OK);
    CHECK(strstr(t->json, "\"prompt\":\"a\\u0000b\"") != NULL);
    json_object_put(errors);
    /* trace_id: "" is not given, so id counts; at most 200 characters. */
    o = ok("{\"trace_id\":\"\",\"id\":\"fallback\"}");
    CHECK_STR(str(o, "trace_id"), "fallback");
    json_object_put(o);
    memset(id, 'x', 200);
    id[200] = '\0';
    o = ok(apr_psprintf(pool, "{\"trace_id\":\"%s\"}", id));
    CHECK_STR(str(o, "trace_id"), id);
    json_object_put(o);
    p = problems(apr_psprintf(pool, "{\"trace_id\":\"%sx\"}", id), -1);
    CHECK(has(p, "{\"type\":\"string_too_long\",\"loc\":[\"body\","
                 "\"trace_id\"],\"msg\":\"String should have at most 200 "
                 "characters\""));
    CHECK(has(p, "\"ctx\":{\"max_length\":200}"));
    /* environment: ASCII letters, digits, '-', '_', 1 to 32. */
    CHECK(has(problems("{\"environment\":\"\"}", -1),
              "\"loc\":[\"body\",\"environment\"]"));
    CHECK(has(problems("{\"environment\":\"\xc3\xa9t\xc3\xa9\"}", -1),
              "\"type\":\"value_error\""));
    CHECK(has(problems("{\"environment\":7}", -1),
              "{\"type\":\"string_type\",\"loc\":[\"body\",\"environment\"]"));
    /* The exact shapes of the other items. */
    CHECK_STR(problems("{\"steps\":\"nope\"}", -1),
              "[{\"type\":\"value_error\",\"loc\":[\"body\",\"steps\"],"
              "\"msg\":\"Value error, steps must be a list\","
              "\"input\":\"nope\",\"ctx\":{\"error\":\"steps must be a "
              "list\"}}]");
    CHECK_STR(problems("5", -1),
              "[{\"type\":\"value_error\",\"loc\":[\"body\"],"
              "\"msg\":\"Value error, a trace must be an object\","
              "\"input\":5,\"ctx\":{\"error\":\"a trace must be an "
              "object\"}}]");
    CHECK(has(problems("{\"steps\":[{},\"s\"]}", 3),
              "{\"type\":\"value_error\",\"loc\":[\"body\",3,\"steps\",1],"));
    CHECK(has(problems("{\"status\":1}", -1),
              "\"ctx\":{\"expected\":\"'success', 'warning' or "
              "'failed'\"}"));
    CHECK(has(problems("{\"created_at\":\"2026-13-01\"}", -1),
              "\"msg\":\"Input should be a valid datetime, date out of "
              "range\",\"input\":\"2026-13-01\",\"ctx\":{\"error\":\"date "
              "out of range\"}"));
    CHECK(has(problems("{\"created_at\":\"\"}", -1), "datetime_parsing"));
    CHECK(has(problems("{\"latency\":true}", -1),
              "{\"type\":\"float_parsing\",\"loc\":[\"body\",\"latency\"],"
              "\"msg\":\"Input should be a valid number\",\"input\":true}"));
    CHECK(has(problems("{\"retry_count\":2.5}", -1),
              "\"msg\":\"Input should be a valid integer, got a number with "
              "a fractional part\""));
    CHECK(has(problems("{\"steps\":[{\"success\":\"false\","
                       "\"tool_name\":7,\"step_id\":7,\"timestamp\":\"x\"}]}",
                       -1), "\"loc\":[\"body\",\"steps\",0,\"success\"]"));
    /* Every problem of a trace, in one list. */
    CHECK(norm("{\"prompt\":1,\"response\":2,\"latency\":-3,"
               "\"steps\":[{\"duration\":\"d\",\"success\":0}],"
               "\"slow_request\":1,\"created_at\":\"no\"}", 4, &t, &errors,
               &detail) == TLLM_TRACE_INVALID);
    CHECK(t == NULL);
    CHECK(json_object_array_length(errors) == 7);
    json_object_put(errors);
    /* Another project is refused before anything else is looked at. */
    CHECK(norm("{\"project_id\":\"other\",\"prompt\":5}", 0, &t, &errors,
               &detail) == TLLM_TRACE_FORBIDDEN);
    CHECK(json_object_array_length(errors) == 0);
    CHECK_STR(detail, "API key is not valid for project 'other'");
    json_object_put(errors);
    CHECK(has(problems("{\"project_id\":5}", -1),
              "{\"type\":\"string_type\",\"loc\":[\"body\",\"project_id\"]"));
    /* New ids are UUIDv4, lower case, 8-4-4-4-12. */
    p = tllm_uuid4(pool);
    CHECK(strlen(p) == 36 && p[8] == '-' && p[13] == '-' && p[18] == '-'
          && p[23] == '-' && p[14] == '4' && strchr("89ab", p[19]));
    CHECK(strspn(p, "0123456789abcdef-") == 36);
    CHECK(strcmp(p, tllm_uuid4(pool)) != 0);
}

static void test_more_helpers(void)
{
    char buf[TLLM_DOUBLE_BUFSZ];
    char tb[TLLM_TIME_BUFSZ];
    int64_t us;
    const char *err = NULL;
    json_object *item;

    tllm_format_double(0.1 + 0.2, buf);
    CHECK_STR(buf, "0.30000000000000004");
    tllm_format_double(1e-7, buf);
    CHECK_STR(buf, "1e-07");
    tllm_format_double(-2, buf);
    CHECK_STR(buf, "-2.0");
    tllm_format_double(NAN, buf);
    CHECK_STR(buf, "0.0");
    tllm_format_double(INFINITY, buf);
    CHECK_STR(buf, "0.0");
    item = tllm_json_double(100);
    CHECK_STR(tllm_json_text(item, NULL), "100.0");
    json_object_put(item);
    CHECK(tllm_round2(2.665) == 2.67);      /* 2.66500000000000003552... */
    CHECK(tllm_round2(NAN) == 0);

    item = tllm_error_item("missing", NULL, "Field required", NULL, NULL);
    CHECK_STR(tllm_json_text(item, NULL),
              "{\"type\":\"missing\",\"loc\":[],\"msg\":\"Field required\","
              "\"input\":null}");
    json_object_put(item);
    item = json_object_new_object();
    json_object_object_add(item, "u", json_object_new_string("a/b \xc3\xa9"));
    CHECK_STR(tllm_json_text(item, NULL), "{\"u\":\"a/b \xc3\xa9\"}");
    json_object_put(item);

    CHECK(tllm_time_parse("2026-01-02t03:04", &us, NULL) == 0);
    CHECK_STR(tllm_time_format(us, tb), "2026-01-02T03:04:00.000000+00:00");
    CHECK(tllm_time_parse("2026-01-02T03:04:05,5z", &us, NULL) == 0);
    CHECK_STR(tllm_time_format(us, tb), "2026-01-02T03:04:05.500000+00:00");
    CHECK(tllm_time_parse("2026-01-02T03:04:05-0800", &us, NULL) == 0);
    CHECK_STR(tllm_time_format(us, tb), "2026-01-02T11:04:05.000000+00:00");
    CHECK(tllm_time_parse("2026-01-02Z", &us, NULL) == 0);
    CHECK_STR(tllm_time_format(us, tb), "2026-01-02T00:00:00.000000+00:00");
    CHECK(tllm_time_parse("0001-01-01T00:00:00", &us, NULL) == 0);
    CHECK_STR(tllm_time_format(us, tb), "0001-01-01T00:00:00.000000+00:00");
    CHECK(tllm_time_parse("9999-12-31T23:59:59.999999", &us, NULL) == 0);
    CHECK_STR(tllm_time_format(us, tb), "9999-12-31T23:59:59.999999+00:00");
    /* An offset must not carry an instant out of the printable years. */
    CHECK(tllm_time_parse("9999-12-31T23:00:00-01:00", &us, &err) == -1);
    CHECK_STR(err, "year out of range");
    CHECK(tllm_time_parse("0001-01-01T00:30:00+01:00", &us, &err) == -1);
    CHECK(tllm_time_parse("0000-01-01", &us, &err) == -1);
    CHECK(tllm_time_parse("2026-04-31", &us, &err) == -1);
    CHECK_STR(err, "date out of range");
    CHECK(tllm_time_parse("2026-01-01T12:60", &us, &err) == -1);
    CHECK(tllm_time_parse("2026-01-01T12:00:60", &us, &err) == -1);
    CHECK(tllm_time_parse("2026-01-01T12:00:00.", &us, &err) == -1);
    CHECK(tllm_time_parse("2026-01-01T12:00:00+24:00", &us, &err) == -1);
    CHECK(tllm_time_parse("26-01-01", &us, &err) == -1);
    CHECK(tllm_time_parse("", &us, &err) == -1);
    CHECK(tllm_time_parse(" 2026-01-01", &us, &err) == -1);
    CHECK(tllm_now_us() > INT64_C(1700000000000000));
    CHECK(tllm_utf8_length("abc", 3) == 3);
    CHECK(tllm_utf8_length("", 0) == 0);
}

/* A 64-bit linear congruential step (Knuth's MMIX constants): the
 * random tests' values, the same on every run. */
static unsigned long next_random(unsigned long x)
{
    return x * 6364136223846793005UL + 1442695040888963407UL;
}

/* Whether tllm_format_round2(v) differs from rounding and then
 * formatting; the first five differences are reported. */
static void check_round2(double v, int *mismatches)
{
    char fast[TLLM_DOUBLE_BUFSZ], slow[TLLM_DOUBLE_BUFSZ];

    tllm_format_round2(v, fast);
    tllm_format_double(tllm_round2(v), slow);
    if (strcmp(fast, slow) != 0 && (*mismatches)++ < 5) {
        CHECK_STR(fast, slow);
    }
}

/* The digit-by-digit rounding must print exactly what rounding and then
 * formatting print: ties, halves, every magnitude up to and past its
 * 1e13 limit, signs, zeros and non-finite values. */
static void test_round2_formatting(void)
{
    static const double fixed[] = {
        0, -0.0, 0.004, -0.004, 0.005, 0.015, 1.005, 2.675, 2.665, 100,
        66.666666, 0.125, 0.375, 1e12 + 0.125, 9999999999999.994,
        9999999999999.996, 1e13, -1e13, 1e15 + 0.5, 1e22, 1e-7, NAN,
        INFINITY, -INFINITY
    };
    unsigned long x = 12345;
    size_t i;
    int mismatches = 0;

    for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        check_round2(fixed[i], &mismatches);
    }
    for (i = 0; i < 300000; i++) {
        double v;
        unsigned long k;

        /* A mantissa in [0, 1), a power of ten from 1e-4 to 1e14, a
         * sign; every seventh one on a multiple of 0.005. */
        x = next_random(x);
        v = (double)(x >> 11) / 9007199254740992.0 * 1e-4;
        for (k = (x >> 3) % 19; k > 0; k--) {
            v *= 10;
        }
        if (i % 7 == 0) {
            v = (double)(long long)(v * 200) / 200;
        }
        if (x & 1) {
            v = -v;
        }
        check_round2(v, &mismatches);
    }
    /* At and beside the ties: k + 0.5 hundredths (stored a little above
     * or below), the doubles up to 3 places either side of it, and the
     * halves that are exact in binary (k / 8), where printf goes to
     * even. */
    for (i = 0; i < 300000; i++) {
        double v;
        int step;

        x = next_random(x);
        if (i % 3 == 0) {
            v = (double)((x >> 20) % 80000000000ULL) / 8;
        }
        else {
            v = ((double)((x >> 16) % (i % 3 == 1 ? 100000ULL
                                                  : 1000000000000ULL))
                 + 0.5) / 100;
        }
        for (step = (int)((x >> 8) % 7) - 3; step != 0;
             step += step > 0 ? -1 : 1) {
            v = nextafter(v, step > 0 ? INFINITY : 0);
        }
        if (x & 1) {
            v = -v;
        }
        check_round2(v, &mismatches);
    }
    CHECK(mismatches == 0);
}

/* Counts in decimal as printf prints them, both ends included. */
static void test_format_int64(void)
{
    static const int64_t fixed[] = { 0, 1, -1, 9, 10, -10, 99, 100,
                                     INT64_MAX, INT64_MIN, INT64_MIN + 1 };
    char ours[TLLM_INT64_BUFSZ], libc[32];
    unsigned long x = 99;
    int i, mismatches = 0;

    for (i = 0; i < 100000; i++) {
        int64_t v;
        int n;

        x = next_random(x);
        /* Every length: a random value shifted right 0 to 63 bits. */
        v = (int64_t)x >> (x >> 58);
        if (i < (int)(sizeof(fixed) / sizeof(fixed[0]))) {
            v = fixed[i];
        }
        n = tllm_format_int64(v, ours);
        snprintf(libc, sizeof(libc), "%" PRId64, v);
        if ((strcmp(ours, libc) != 0 || n != (int)strlen(libc))
            && mismatches++ < 5) {
            CHECK_STR(ours, libc);
        }
    }
    CHECK(mismatches == 0);
}

/* The digit-by-digit timestamp must print what the C library's calendar
 * and printf print, over the whole range from year 1 to 9999. */
static void test_time_format_matches_libc(void)
{
    const int64_t min_secs = INT64_C(-62135596800);
    const int64_t span = INT64_C(253402300799) - min_secs + 1;
    char ours[TLLM_TIME_BUFSZ], libc[96];
    unsigned long x = 777;
    int mismatches = 0, i;

    for (i = 0; i < 200000; i++) {
        int64_t secs, us;
        time_t t;
        struct tm tm;

        x = next_random(x);
        secs = min_secs + (int64_t)((x >> 8) % (unsigned long)span);
        if (i < 4) {        /* the ends of the range, and the epoch */
            secs = i == 0 ? min_secs : i == 1 ? min_secs + span - 1
                   : i == 2 ? 0 : -1;
        }
        us = secs * 1000000 + (int64_t)((x >> 40) % 1000000);
        t = (time_t)secs;
        gmtime_r(&t, &tm);
        snprintf(libc, sizeof(libc),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, (int)(us - secs * 1000000));
        tllm_time_format(us, ours);
        if (strcmp(ours, libc) != 0 && mismatches++ < 5) {
            CHECK_STR(ours, libc);
        }
    }
    CHECK(mismatches == 0);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_defaults();
    test_rendered_exactly();
    test_ids_and_models();
    test_steps();
    test_inference();
    test_timestamps();
    test_errors();
    test_project();
    test_more_rules();
    test_helpers();
    test_more_helpers();
    test_round2_formatting();
    test_time_format_matches_libc();
    test_format_int64();
    apr_pool_destroy(pool);
    apr_terminate();
    return unit_summary("test_trace");
}
