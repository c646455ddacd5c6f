/*
 * jsonutil.c - JSON helpers shared by the module, the store and the trace
 * model.
 */
#include <math.h>
#include <stdint.h>
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

int tllm_format_int64(int64_t v, char buf[TLLM_INT64_BUFSZ])
{
    /* The magnitude as unsigned: INT64_MIN's has no signed form. */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    char digits[TLLM_INT64_BUFSZ];
    int n = 0, len = 0;

    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) {
        buf[len++] = '-';
    }
    while (n) {
        buf[len++] = digits[--n];
    }
    buf[len] = 0;
    return len;
}

/* |v| x 100 rounded to the nearest integer, as "%.2f" rounds the exact
 * binary value, into *hundredths; 0 when the rounded product p lies on a
 * half (f + 0.5), which printf then decides: the exact product may lie
 * on either side of p, and an exact tie goes to even.
 *
 * Anywhere else p decides alone. For 1 <= p < 2^52, (p - f) - 0.5 is
 * exact and a multiple of p's last place, so when it is not 0 it is at
 * least that place, while the exact product is within half of it from
 * p: both fall on the same side of the half. Below 1 the same holds
 * with f = 0 ((p - f) - 0.5 is exact from 0.25 on, and under -0.25
 * before). |v| < 1e13 keeps p under 1e15, below 2^52. */
static int hundredths_of(double v, uint64_t *hundredths)
{
    double p = fabs(v) * 100.0;
    double f = (double)(uint64_t)p;     /* floor: p >= 0 */
    double over_half = (p - f) - 0.5;

    if (over_half == 0) {
        return 0;
    }
    *hundredths = (uint64_t)f + (over_half > 0);
    return 1;
}

void tllm_format_round2(double v, char buf[TLLM_DOUBLE_BUFSZ])
{
    uint64_t n;
    unsigned cents;
    int len, at = 0;

    /* Below 1e13 "%.2f" has at most 15 significant digits, which the
     * nearest double prints back as (DBL_DIG), so the shortest text of
     * tllm_round2(v) is "%.2f" less its trailing zeros but one. Written
     * here from the rounded hundredths: GET /analytics prints 27 of
     * these, and snprintf was 3.7 % of its CPU (perf); with the
     * timestamps (ttime.c) also written digit by digit, /analytics went
     * from 10,317 to 12,201 req/s at -c32 (BENCHMARKS.md). */
    if (!(fabs(v) < 1e13)) {
        tllm_format_double(tllm_round2(v), buf);
        return;
    }
    if (!hundredths_of(v, &n)) {
        len = snprintf(buf, TLLM_DOUBLE_BUFSZ, "%.2f", v);
        while (buf[len - 1] == '0' && buf[len - 2] != '.') {
            len--;
        }
        buf[len] = 0;
        return;
    }
    cents = (unsigned)(n % 100);
    if (signbit(v)) {
        buf[at++] = '-';        /* as printf: -0.001 is "-0.00" */
    }
    /* Under 1e13: the whole part has at most 13 digits. */
    at += tllm_format_int64((int64_t)(n / 100), buf + at);
    buf[at++] = '.';
    buf[at++] = (char)('0' + cents / 10);
    if (cents % 10) {
        buf[at++] = (char)('0' + cents % 10);
    }
    buf[at] = 0;
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
