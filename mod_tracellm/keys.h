/*
 * keys.h - project API keys: "tlm_sk_" + 32 random alphanumerics, stored
 * only as a SHA-256 hash plus a short hint for display. And project slugs.
 * Pure C over APR and libcrypto, no httpd: unit tests link it.
 */
#ifndef TLLM_KEYS_H
#define TLLM_KEYS_H

#include <stdint.h>
#include <apr_pools.h>
#include "store.h"

#define TLLM_KEY_PREFIX      "tlm_sk_"
#define TLLM_KEY_PREFIX_LEN  7
#define TLLM_KEY_SECRET_LEN  32

/** Make a new key for a project and environment: fills *key (key_id,
 *  hash, hint, created_at = now_us, never used, not revoked) and returns
 *  the full key text, which is shown once and never stored. NULL if the
 *  system's random source fails. */
const char *tllm_key_generate(apr_pool_t *p, const char *project_id,
                              const char *environment, int64_t now_us,
                              tllm_key *key);

/** SHA-256 of a key's full text. */
void tllm_key_hash(const char *text, unsigned char hash[32]);

/** Does text have the shape of a key (prefix + 32 alphanumerics)? */
int tllm_key_well_formed(const char *text);

/** The masked form shown in listings: "tlm_sk_" + first 2 + "…" + last 4. */
const char *tllm_key_mask(apr_pool_t *p, const tllm_key *key);

/** A project_id from a name: ASCII letters lower-cased, every run of other
 *  bytes one "-", trimmed of "-"; "project-<6 hex>" when that is empty.
 *  NULL only if the random source fails. */
const char *tllm_slug(apr_pool_t *p, const char *name);

#endif
