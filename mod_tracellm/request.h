/*
 * request.h - the request side every handler shares: query parameters and
 * their validation into 422 items, the JSON request body (411/413/415/400),
 * and the JSON responses in the contract's one error shape.
 */
#ifndef TLLM_REQUEST_H
#define TLLM_REQUEST_H

#include <json.h>
#include "mod_tracellm.h"

/** The pool for a request's bulk bytes: bodies read, traces normalized,
 *  stored bodies and responses built. A subpool of the request's, drawing
 *  on the child's shared bulk allocator (child_memory.c), not on the
 *  connection's: that one keeps what is freed, up to MaxMemFree (2 MB),
 *  for every connection the MPM pools for reuse, and the soak's at-rest
 *  RSS grew with each burst of new connections. The request pool if the
 *  child has no bulk allocator. */
apr_pool_t *tllm_req_bulk_pool(tllm_req *q);

/* ---- responses --------------------------------------------------------- */

/** A stored body placed in a response at data offset at, not copied. */
typedef struct {
    apr_size_t at;
    tllm_text text;
} tllm_splice;

/** A growing byte buffer in a pool, for building a response in one piece
 *  (one write, an exact Content-Length). Stored bodies added with
 *  tllm_sb_texts are not copied into data: tllm_send_sb sends them from
 *  where the store put them, between the buffer's bytes. */
typedef struct {
    apr_pool_t *pool;
    char *data;
    apr_size_t len, cap;
    apr_array_header_t *splices;   /* tllm_splice, by offset; NULL = none */
    apr_size_t spliced;            /* bytes of the splices' texts */
} tllm_sb;

void tllm_sb_init(tllm_sb *sb, apr_pool_t *p, apr_size_t hint);
void tllm_sb_add(tllm_sb *sb, const char *s, apr_size_t n);
void tllm_sb_str(tllm_sb *sb, const char *s);
void tllm_sb_int(tllm_sb *sb, int64_t v);
/** Append v rounded to 2 decimals, as the API prints floats
 *  (tllm_format_round2). */
void tllm_sb_round2(tllm_sb *sb, double v);
/** Append a JSON string literal, escaped. */
void tllm_sb_jstr(tllm_sb *sb, const char *s);
/** Append a JSON string or null. */
void tllm_sb_jstr_or_null(tllm_sb *sb, const char *s);
/** Append a server timestamp (ISO 8601, six digits, +00:00) as a string. */
void tllm_sb_time(tllm_sb *sb, int64_t us);
/** Append an array of tllm_text as a JSON list: the brackets and commas
 *  into the buffer, the texts as splices (they must live as long as the
 *  buffer's pool). */
void tllm_sb_texts(tllm_sb *sb, const apr_array_header_t *texts);

/** Send len bytes of JSON with the given status. Returns OK. */
int tllm_send_json(request_rec *r, int status, const char *json,
                   apr_size_t len);
/** Send the buffer's bytes with its splices in place. Returns OK. */
int tllm_send_sb(request_rec *r, int status, const tllm_sb *sb);
/** Send a json-c object. Returns OK. */
int tllm_send_obj(request_rec *r, int status, json_object *obj);
/** Send {"detail": "<detail>"}. Returns OK. */
int tllm_send_detail(request_rec *r, int status, const char *detail);
/** Send 422 {"detail": items}; takes ownership of items. Returns OK. */
int tllm_send_invalid(request_rec *r, json_object *items);
/** Log the store's failure (with tag and what was being done) and send a
 *  generic 500 (or 503 when db is NULL). Returns OK. */
int tllm_send_store_error(tllm_req *q, tllm_db *db, const char *doing);

/* ---- parameters -------------------------------------------------------- */

/** Where a handler's parameters come from: the query string, or a JSON
 *  body object (then values are typed and errors say "body"). */
typedef struct {
    apr_pool_t *pool;
    apr_table_t *query;
    json_object *body;
    json_object *errors;        /* 422 items collected so far */
} tllm_params;

/** Parameters from the request: the JSON body object if given, else q's
 *  query. */
void tllm_params_init(tllm_params *ps, tllm_req *q, json_object *body);

/** A string parameter: NULL if absent, null, or "" (no filter); a
 *  "missing" item if required; "string_too_long" over max_chars (0 = no
 *  limit); "string_type" for a non-string body value. */
const char *tllm_param_str(tllm_params *ps, const char *name, int required,
                           apr_size_t max_chars);

/** A status filter: NULL, or one of the three in lower case ("enum" item
 *  otherwise). */
const char *tllm_param_status(tllm_params *ps, const char *name);

/** An environment token: letters, digits, "-", "_", at most 32
 *  ("value_error" otherwise). */
const char *tllm_param_env(tllm_params *ps, const char *name, int required);

/** An integer parameter within [min, max]; *out = def when absent. Returns
 *  1 if given and valid, 0 if absent, -1 if invalid (item added). */
int tllm_param_int(tllm_params *ps, const char *name, int64_t def,
                   int64_t min, int64_t max, int64_t *out);

/** A float parameter >= min. Same returns as tllm_param_int. */
int tllm_param_float(tllm_params *ps, const char *name, double min,
                     double *out);

/** Is s a valid environment token? */
int tllm_env_valid(const char *s);

/* ---- body -------------------------------------------------------------- */

/** Read the request body as JSON under TraceLLMMaxBody.
 *  Returns 0 with *out set (NULL when there is no body and !required), or
 *  the HTTP status of the error response it already sent (411, 413, 415,
 *  400): the handler then just returns OK. The parsed tree is released
 *  with the request pool. */
int tllm_read_json_body(tllm_req *q, int required, json_object **out);

#endif
