/*
 * jsonutil.h - small JSON helpers shared by the module, the store and the
 * trace model: float formatting, the 422 error item, serialization.
 * Pure C over json-c; no httpd types.
 */
#ifndef TLLM_JSONUTIL_H
#define TLLM_JSONUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <json.h>

#define TLLM_DOUBLE_BUFSZ 32
#define TLLM_INT64_BUFSZ 21     /* "-9223372036854775808" and its NUL */

/** Format a double as the API prints floats: the shortest text that reads
 *  back to the same double, with ".0" appended when it looks like an
 *  integer (100 -> "100.0", 0.1 -> "0.1"). Non-finite values print "0.0". */
void tllm_format_double(double v, char buf[TLLM_DOUBLE_BUFSZ]);

/** v in decimal, as printf's "%" PRId64 prints it; returns its length. */
int tllm_format_int64(int64_t v, char buf[TLLM_INT64_BUFSZ]);

/** A json-c double that serializes through tllm_format_double. */
json_object *tllm_json_double(double v);

/** Round to 2 decimals (the API's "rounded") as Python's round(v, 2)
 *  does: the exact binary value to the nearest, ties to even. */
double tllm_round2(double v);

/** tllm_format_double(tllm_round2(v), buf), faster. */
void tllm_format_round2(double v, char buf[TLLM_DOUBLE_BUFSZ]);

/** One item of a 422 "detail" list, pydantic-shaped:
 *  {"type","loc","msg","input","ctx"}. Takes ownership of loc, input and
 *  ctx (each may be NULL: input NULL prints null, ctx NULL is omitted). */
json_object *tllm_error_item(const char *type, json_object *loc,
                             const char *msg, json_object *input,
                             json_object *ctx);

/** Serialize compactly, UTF-8 as is, "/" unescaped. The string belongs to
 *  obj (valid until obj is released). */
const char *tllm_json_text(json_object *obj, size_t *len);

/** Number of Unicode code points in a UTF-8 string of len bytes. */
size_t tllm_utf8_length(const char *s, size_t len);

#endif
