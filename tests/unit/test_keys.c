/*
 * test_keys.c - API key generation, hashing, masking; project slugs.
 */
#include <string.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "keys.h"
#include "unit.h"

static void test_generate(apr_pool_t *p)
{
    tllm_key k1, k2;
    unsigned char hash[32];
    const char *full1 = tllm_key_generate(p, "proj", "prod", 42, &k1);
    const char *full2 = tllm_key_generate(p, "proj", "prod", 42, &k2);
    int i, hex_ok = 1;

    CHECK(full1 && full2);
    CHECK(strlen(full1) == 7 + 32);
    CHECK(strncmp(full1, "tlm_sk_", 7) == 0);
    CHECK(tllm_key_well_formed(full1));
    CHECK(strcmp(full1, full2) != 0);
    CHECK(strcmp(k1.key_id, k2.key_id) != 0);
    CHECK(strlen(k1.key_id) == 4 + 16 && !strncmp(k1.key_id, "key_", 4));
    for (i = 4; i < 20; i++) {
        hex_ok &= (k1.key_id[i] >= '0' && k1.key_id[i] <= '9')
                  || (k1.key_id[i] >= 'a' && k1.key_id[i] <= 'f');
    }
    CHECK(hex_ok);
    CHECK_STR(k1.project_id, "proj");
    CHECK_STR(k1.environment, "prod");
    CHECK(k1.created_at == 42 && k1.last_used_at == -1 && !k1.revoked);

    /* Only the hash is kept, and it is the hash of the full text. */
    tllm_key_hash(full1, hash);
    CHECK(memcmp(hash, k1.hash, 32) == 0);
    CHECK(memcmp(k1.hash, k2.hash, 32) != 0);

    /* hint = first 2 + last 4 of the secret; the mask shows only those. */
    CHECK(strlen(k1.hint) == 6);
    CHECK(strncmp(k1.hint, full1 + 7, 2) == 0);
    CHECK(strcmp(k1.hint + 2, full1 + strlen(full1) - 4) == 0);
    CHECK_STR(tllm_key_mask(p, &k1),
              apr_pstrcat(p, "tlm_sk_", apr_pstrndup(p, full1 + 7, 2),
                          "\xe2\x80\xa6", full1 + strlen(full1) - 4, NULL));
}

static void test_hash_known(void)
{
    /* SHA-256("abc"), FIPS 180-2 appendix B.1. */
    static const unsigned char want[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
        0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
        0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad
    };
    unsigned char got[32];
    tllm_key_hash("abc", got);
    CHECK(memcmp(got, want, 32) == 0);
}

static void test_well_formed(void)
{
    CHECK(tllm_key_well_formed("tlm_sk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"));
    CHECK(!tllm_key_well_formed("tlm_sk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcde"));
    CHECK(!tllm_key_well_formed("tlm_sk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"));
    CHECK(!tllm_key_well_formed("tlm_pk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"));
    CHECK(!tllm_key_well_formed("tlm_sk_ABCDEFGHIJKLMNOPQRSTUVWXYZabcd-f"));
    CHECK(!tllm_key_well_formed(""));
}

static void test_slug(apr_pool_t *p)
{
    const char *s;

    CHECK_STR(tllm_slug(p, "Support Bot"), "support-bot");
    CHECK_STR(tllm_slug(p, "  My--Cool   App!! "), "my-cool-app");
    CHECK_STR(tllm_slug(p, "Café Bot"), "caf-bot");
    CHECK_STR(tllm_slug(p, "RAG_v2.1"), "rag-v2-1");
    CHECK_STR(tllm_slug(p, "abc123"), "abc123");
    s = tllm_slug(p, "世界 !!");
    CHECK(s && strlen(s) == 14 && !strncmp(s, "project-", 8));
    s = tllm_slug(p, "");
    CHECK(s && strlen(s) == 14 && !strncmp(s, "project-", 8));
    CHECK(s && strspn(s + 8, "0123456789abcdef") == 6);
}

int main(void)
{
    apr_pool_t *p;

    apr_initialize();
    apr_pool_create(&p, NULL);
    test_generate(p);
    test_hash_known();
    test_well_formed();
    test_slug(p);
    apr_pool_destroy(p);
    apr_terminate();
    return unit_summary("test_keys");
}
