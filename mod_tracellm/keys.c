/*
 * keys.c - API key generation, hashing and masking; project slugs.
 */
#include <string.h>

#include <apr_general.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <openssl/evp.h>

#include "keys.h"

static const char alnum[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* Fill out with n characters drawn uniformly from alnum: bytes >= 248
 * (4 * 62) are dropped so no character is more likely than another. */
static int random_alnum(char *out, apr_size_t n)
{
    unsigned char buf[64];
    apr_size_t filled = 0;

    while (filled < n) {
        apr_size_t i;
        if (apr_generate_random_bytes(buf, sizeof(buf)) != APR_SUCCESS) {
            return -1;
        }
        for (i = 0; i < sizeof(buf) && filled < n; i++) {
            if (buf[i] < 248) {
                out[filled++] = alnum[buf[i] % 62];
            }
        }
    }
    return 0;
}

static int random_hex(char *out, apr_size_t nbytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[32];
    apr_size_t i;

    if (nbytes > sizeof(buf)
        || apr_generate_random_bytes(buf, nbytes) != APR_SUCCESS) {
        return -1;
    }
    for (i = 0; i < nbytes; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return 0;
}

void tllm_key_hash(const char *text, unsigned char hash[32])
{
    unsigned int n = 32;
    EVP_Digest(text, strlen(text), hash, &n, EVP_sha256(), NULL);
}

int tllm_key_well_formed(const char *text)
{
    int i;
    if (strncmp(text, TLLM_KEY_PREFIX, TLLM_KEY_PREFIX_LEN) != 0) {
        return 0;
    }
    text += TLLM_KEY_PREFIX_LEN;
    for (i = 0; i < TLLM_KEY_SECRET_LEN; i++) {
        if (!apr_isalnum(text[i])) {
            return 0;
        }
    }
    return text[i] == '\0';
}

const char *tllm_key_generate(apr_pool_t *p, const char *project_id,
                              const char *environment, int64_t now_us,
                              tllm_key *key)
{
    char secret[TLLM_KEY_SECRET_LEN + 1];
    char id_hex[17];
    const char *full;

    if (random_alnum(secret, TLLM_KEY_SECRET_LEN) || random_hex(id_hex, 8)) {
        return NULL;
    }
    secret[TLLM_KEY_SECRET_LEN] = '\0';
    full = apr_pstrcat(p, TLLM_KEY_PREFIX, secret, NULL);

    memset(key, 0, sizeof(*key));
    key->key_id = apr_pstrcat(p, "key_", id_hex, NULL);
    key->project_id = project_id;
    key->environment = environment;
    key->hint = apr_pstrcat(p, apr_pstrndup(p, secret, 2),
                            secret + TLLM_KEY_SECRET_LEN - 4, NULL);
    tllm_key_hash(full, key->hash);
    key->created_at = now_us;
    key->last_used_at = -1;
    key->revoked = 0;
    return full;
}

const char *tllm_key_mask(apr_pool_t *p, const tllm_key *key)
{
    const char *hint = key->hint ? key->hint : "";
    apr_size_t n = strlen(hint);
    /* U+2026 HORIZONTAL ELLIPSIS in UTF-8 between head and tail. */
    return apr_pstrcat(p, TLLM_KEY_PREFIX,
                       apr_pstrndup(p, hint, n < 2 ? n : 2),
                       "\xe2\x80\xa6", n > 2 ? hint + 2 : "", NULL);
}

const char *tllm_slug(apr_pool_t *p, const char *name)
{
    apr_size_t n = strlen(name);
    char *slug = apr_palloc(p, n + 16);
    apr_size_t len = 0;
    int pending_dash = 0;

    for (; *name; name++) {
        unsigned char c = (unsigned char)*name;
        if (c < 0x80 && apr_isalnum(c)) {
            if (pending_dash && len) {
                slug[len++] = '-';
            }
            pending_dash = 0;
            slug[len++] = apr_tolower(c);
        }
        else {
            pending_dash = 1;   /* a run of other bytes is one "-" */
        }
    }
    slug[len] = '\0';
    if (len == 0) {
        char hex[7];
        if (random_hex(hex, 3)) {
            return NULL;
        }
        return apr_pstrcat(p, "project-", hex, NULL);
    }
    return slug;
}
