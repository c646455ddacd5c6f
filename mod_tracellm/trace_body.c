/*
 * trace_body.c - LZ4 for stored trace bodies (trace_body.h).
 *
 * Why LZ4: a body is written once and read in every listing page and
 * by the live events. On the bench's traces (2 KB of JSON on
 * average) LZ4 keeps 1/1.6 of the bytes at 4 us a trace to compress and
 * 0.7 us to decompress; zstd at level 1 keeps 1/2.3 but takes 4 us to
 * decompress, 200 us more for a page of 50. Compressed bodies are what
 * pays for 8 KiB pages (store.c, TLLM_PAGE_SIZE) within the size target.
 */
#include <limits.h>
#include <lz4.h>

#include "trace_body.h"

/* An LZ4 block does not decompress to more than 255 times its size (each
 * byte of a match's length adds at most 255): a header that claims more
 * is corrupt, and is refused before anything that large is allocated. */
#define LZ4_MAX_EXPANSION 255

static void put_le32(unsigned char *b, size_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

static size_t get_le32(const unsigned char *b)
{
    return (size_t)b[0] | (size_t)b[1] << 8 | (size_t)b[2] << 16
           | (size_t)b[3] << 24;
}

size_t tllm_body_pack_bound(size_t len)
{
    return len > (size_t)LZ4_MAX_INPUT_SIZE
           ? 0 : TLLM_BODY_HEADER + (size_t)LZ4_compressBound((int)len);
}

size_t tllm_body_pack(const char *json, size_t len, void *out)
{
    unsigned char *b = out;
    int packed;

    if (len == 0 || len > (size_t)LZ4_MAX_INPUT_SIZE) {
        return 0;
    }
    packed = LZ4_compress_default(json, (char *)b + TLLM_BODY_HEADER,
                                  (int)len, LZ4_compressBound((int)len));
    if (packed <= 0 || TLLM_BODY_HEADER + (size_t)packed >= len) {
        return 0;
    }
    put_le32(b, len);
    return TLLM_BODY_HEADER + (size_t)packed;
}

const char *tllm_body_unpack(apr_pool_t *p, const void *blob,
                             size_t blob_len, size_t *len)
{
    const unsigned char *b = blob;
    size_t want, block;
    char *json;

    if (!b || blob_len <= TLLM_BODY_HEADER
        || blob_len - TLLM_BODY_HEADER > (size_t)INT_MAX) {
        return NULL;
    }
    want = get_le32(b);
    block = blob_len - TLLM_BODY_HEADER;
    if (want == 0 || want > (size_t)LZ4_MAX_INPUT_SIZE
        || want > block * LZ4_MAX_EXPANSION) {
        return NULL;
    }
    json = apr_palloc(p, want + 1);
    if (LZ4_decompress_safe((const char *)b + TLLM_BODY_HEADER, json,
                            (int)block, (int)want) != (int)want) {
        return NULL;
    }
    json[want] = '\0';
    *len = want;
    return json;
}
