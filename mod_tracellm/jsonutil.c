/*
 * jsonutil.c - JSON helpers shared by the module, the store and the trace
 * model.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"

void tllm_format_double(double v, char buf[TLLM_DOUBLE_BUFSZ])
{
    static const char *const formats[] = { "%.15g", "%.16g", "%.17g" };
    size_t i;

    if (!isfinite(v)) {
        strcpy(buf, "0.0");
        return;
    }
    /* The shortest of these that reads back as the same double. */
    for (i = 0; i < 3; i++) {
        snprintf(buf, TLLM_DOUBLE_BUFSZ, formats[i], v);
        if (strtod(buf, NULL) == v) {
            break;
        }
    }
    if (!strpbrk(buf, ".e")) {
        strcat(buf, ".0");      /* a float stays a float: 100 -> 100.0 */
    }
}

void tllm_format_round2(double v, char buf[TLLM_DOUBLE_BUFSZ])
{
    int n;

    /* Below 1e13 "%.2f" has at most 15 significant digits, which the
     * nearest double prints back as (DBL_DIG), so the shortest text of
     * tllm_round2(v) is this one less its trailing zeros: one printf,
     * where rounding and then formatting take two or more and as many
     * strtod. GET /analytics prints 27 of these. */
    if (!(fabs(v) < 1e13)) {
        tllm_format_double(tllm_round2(v), buf);
        return;
    }
    n = snprintf(buf, TLLM_DOUBLE_BUFSZ, "%.2f", v);
    while (buf[n - 1] == '0' && buf[n - 2] != '.') {
        n--;
    }
    buf[n] = 0;
}

json_object *tllm_json_double(double v)
{
    char buf[TLLM_DOUBLE_BUFSZ];

    tllm_format_double(v, buf);
    return json_object_new_double_s(v, buf);
}

double tllm_round2(double v)
{
    /* printf rounds the exact binary value, ties to even: the same answer
     * as Python's round(v, 2), which clients checking our figures use. */
    char buf[512];

    if (!isfinite(v)) {
        return 0;
    }
    snprintf(buf, sizeof(buf), "%.2f", v);
    return strtod(buf, NULL);
}

json_object *tllm_error_item(const char *type, json_object *loc,
                             const char *msg, json_object *input,
                             json_object *ctx)
{
    json_object *item = json_object_new_object();

    json_object_object_add(item, "type", json_object_new_string(type));
    json_object_object_add(item, "loc", loc ? loc : json_object_new_array());
    json_object_object_add(item, "msg", json_object_new_string(msg));
    json_object_object_add(item, "input", input);
    if (ctx) {
        json_object_object_add(item, "ctx", ctx);
    }
    return item;
}

const char *tllm_json_text(json_object *obj, size_t *len)
{
    size_t n;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);

    if (len) {
        *len = n;
    }
    return s;
}

size_t tllm_utf8_length(const char *s, size_t len)
{
    size_t i, n = 0;

    /* Count every byte that does not continue a sequence (10xxxxxx). */
    for (i = 0; i < len; i++) {
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return n;
}
