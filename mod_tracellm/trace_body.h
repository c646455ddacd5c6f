/*
 * trace_body.h - how a trace's rendered JSON (traces.body) is stored:
 * LZ4-compressed when that makes it smaller, as it is otherwise.
 *
 * A stored body is either TEXT (the JSON itself: bodies stored before
 * schema 8, those compression would not shrink, and flagged traces',
 * which /failures reads: store_write.c) or a BLOB: the JSON's
 * length as 4 bytes, little-endian, then one LZ4 block of it. SQLite
 * keeps the two apart by the value's type, so no flag column is needed
 * and the rows stored before stay readable as they are.
 */
#ifndef TLLM_TRACE_BODY_H
#define TLLM_TRACE_BODY_H

#include <stddef.h>
#include <apr_pools.h>

#define TLLM_BODY_HEADER 4

/* The most bytes tllm_body_pack writes for len bytes of JSON. */
size_t tllm_body_pack_bound(size_t len);

/* Compress json[0..len) into out, which holds tllm_body_pack_bound(len)
 * bytes. Returns the packed body's length if it is smaller than len; 0
 * if the body is better stored as it is (short or incompressible). */
size_t tllm_body_pack(const char *json, size_t len, void *out);

/* The JSON of a packed body, NUL-terminated in pool memory, its length
 * in *len; NULL if blob is not a body tllm_body_pack made (cut short,
 * or a length its block does not decompress to). */
const char *tllm_body_unpack(apr_pool_t *p, const void *blob,
                             size_t blob_len, size_t *len);

#endif
