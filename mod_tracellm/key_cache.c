/*
 * key_cache.c - a process's cache of API keys, good while its database's
 * key generation stands still (key_cache.h says why).
 *
 * The generation is 8 bytes at the start of <database>-keygen, mapped
 * MAP_SHARED: every process that maps the file sees one counter, moved
 * with an atomic add, as SQLite's own -shm file is shared. The cache is
 * a small direct-mapped table indexed by the hash's first byte (SHA-256:
 * uniform), under one mutex held for a compare and a few copies.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <apr_strings.h>

#include "key_cache.h"
#include "store_int.h"

#define SLOTS 64               /* keys in use at once per process */

/* One database's counter; counter NULL when the file could not be had,
 * remembered so that a failure is not retried on every request. */
typedef struct tllm_keygen {
    char *db_path;
    _Atomic uint64_t *counter;
    struct tllm_keygen *next;
} generation;

typedef struct {
    const generation *of;      /* NULL: empty */
    uint64_t seen;             /* the counter before the key was read */
    int64_t expires_us;
    tllm_key key;              /* strings in one malloc'd block: */
    char *strings;
} slot;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static generation *generations;
static slot slots[SLOTS];

static _Atomic uint64_t *map_counter(const char *db_path)
{
    char *path = malloc(strlen(db_path) + sizeof("-keygen"));
    struct stat st;
    void *map = MAP_FAILED;
    int fd;

    if (!path) {
        return NULL;
    }
    strcpy(path, db_path);
    strcat(path, "-keygen");
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    free(path);
    if (fd < 0) {
        return NULL;
    }
    /* Growing a new file to 8 zero bytes; a file that has them already
     * (another process got here first, maybe moved it) keeps its value. */
    if (fstat(fd, &st) == 0
        && (st.st_size >= 8 || ftruncate(fd, 8) == 0)) {
        map = mmap(NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    close(fd);
    return map == MAP_FAILED ? NULL : map;
}

/* db's generation, mapped on its first use in this process; NULL when
 * the database is not a file or its counter cannot be had. Found once
 * per connection, which keeps it (not a search on every request). */
static const generation *generation_of(tllm_db *db)
{
    const char *db_path;
    generation *g;

    if (db->keygen_sought) {
        return db->keygen;
    }
    db->keygen_sought = 1;
    db_path = sqlite3_db_filename(db->sq, "main");
    if (!db_path || !*db_path) {
        return NULL;
    }
    pthread_mutex_lock(&lock);
    for (g = generations; g && strcmp(g->db_path, db_path); g = g->next) {
    }
    if (!g && (g = calloc(1, sizeof(*g)))) {
        if ((g->db_path = strdup(db_path))) {
            g->counter = map_counter(db_path);
            g->next = generations;
            generations = g;
        }
        else {
            free(g);
            g = NULL;
        }
    }
    pthread_mutex_unlock(&lock);
    db->keygen = g && g->counter ? g : NULL;
    return db->keygen;
}

static tllm_key *copy_out(apr_pool_t *p, const tllm_key *from)
{
    tllm_key *k = apr_pmemdup(p, from, sizeof(*k));

    k->key_id = apr_pstrdup(p, from->key_id);
    k->project_id = apr_pstrdup(p, from->project_id);
    k->environment = apr_pstrdup(p, from->environment);
    k->hint = apr_pstrdup(p, from->hint);
    return k;
}

/* Fill s with key (lock held); on no memory s stays empty. */
static void fill(slot *s, const generation *of, uint64_t seen,
                 int64_t expires_us, const tllm_key *key)
{
    size_t n1 = strlen(key->key_id) + 1, n2 = strlen(key->project_id) + 1,
           n3 = strlen(key->environment) + 1, n4 = strlen(key->hint) + 1;
    char *b = malloc(n1 + n2 + n3 + n4);

    free(s->strings);
    memset(s, 0, sizeof(*s));
    if (!b) {
        return;
    }
    s->key = *key;
    s->key.key_id = memcpy(b, key->key_id, n1);
    s->key.project_id = memcpy(b + n1, key->project_id, n2);
    s->key.environment = memcpy(b + n1 + n2, key->environment, n3);
    s->key.hint = memcpy(b + n1 + n2 + n3, key->hint, n4);
    s->strings = b;
    s->of = of;
    s->seen = seen;
    s->expires_us = expires_us;
}

int tllm_key_cache_find(tllm_db *db, apr_pool_t *p,
                        const unsigned char hash[32], int64_t now_us,
                        tllm_key **out)
{
    const generation *g = generation_of(db);
    slot *s = &slots[hash[0] % SLOTS];
    uint64_t seen;
    int rc;

    if (!g) {
        return tllm_store_key_find(db, p, hash, out);
    }
    /* Read before the database: a revocation that commits after this
     * moves the counter past seen, so what is read now is not used
     * after it. */
    seen = atomic_load(g->counter);
    pthread_mutex_lock(&lock);
    if (s->of == g && s->seen == seen && now_us < s->expires_us
        && !memcmp(s->key.hash, hash, 32)) {
        *out = copy_out(p, &s->key);
        pthread_mutex_unlock(&lock);
        return TLLM_OK;
    }
    pthread_mutex_unlock(&lock);

    rc = tllm_store_key_find(db, p, hash, out);
    if (rc == TLLM_OK) {
        pthread_mutex_lock(&lock);
        fill(s, g, seen, now_us + TLLM_KEY_CACHE_TTL_US, *out);
        pthread_mutex_unlock(&lock);
    }
    return rc;
}

void tllm_key_cache_touched(const unsigned char hash[32], int64_t now_us)
{
    slot *s = &slots[hash[0] % SLOTS];

    pthread_mutex_lock(&lock);
    if (s->of && !memcmp(s->key.hash, hash, 32)) {
        s->key.last_used_at = now_us;
    }
    pthread_mutex_unlock(&lock);
}

void tllm_key_cache_invalidate(tllm_db *db)
{
    const generation *g = generation_of(db);

    if (g) {
        atomic_fetch_add(g->counter, 1);
    }
}
