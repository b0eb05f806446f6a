/* intern.c — refcounted string interning with 32-bit ids: an open-addressing table of ids
 * (linear probing, backward-shift deletion, so no tombstones ever accumulate) over an array
 * of string records. Pure: no I/O, no logging. */

#include <assert.h>

#include "intern.h"

typedef struct Str {
        uint32_t refs;
        uint32_t hash;                  /* low 32 bits of the keyed hash */
        char s[];
} Str;

struct Intern {
        uint64_t k0, k1;                /* SipHash key */
        Str **strs;                     /* by id; [0] unused; NULL: free id */
        uint32_t n_ids;                 /* ids handed out so far (high-water mark) + 1 */
        uint32_t ids_cap;
        uint32_t *free_ids;             /* ids of freed strings, reused first; ids_cap long */
        uint32_t n_free;
        uint32_t *slots;                /* ids; 0: empty. Size is a power of two. */
        uint32_t mask;
        uint32_t n;                     /* live strings */
        size_t string_bytes;
};

#define MIN_SLOTS 16u

bool (*core_alloc_fail)(void);

static uint64_t rotl64(uint64_t x, int b) {
        return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                \
        do {                                                                    \
                v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);   \
                v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                        \
                v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                        \
                v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);   \
        } while (0)

/* SipHash-1-3: fast on short strings and keyed, which is what hash-flooding resistance
 * needs; byte-wise loads keep it independent of endianness and alignment. */
static uint64_t siphash13(const char *s, size_t len, uint64_t k0, uint64_t k1) {
        const uint8_t *p = (const uint8_t *) s;
        uint64_t v0 = UINT64_C(0x736f6d6570736575) ^ k0;
        uint64_t v1 = UINT64_C(0x646f72616e646f6d) ^ k1;
        uint64_t v2 = UINT64_C(0x6c7967656e657261) ^ k0;
        uint64_t v3 = UINT64_C(0x7465646279746573) ^ k1;
        uint64_t m, b = (uint64_t) len << 56;
        size_t i = 0;

        for (; i + 8 <= len; i += 8) {
                m = 0;
                for (size_t j = 0; j < 8; j++)
                        m |= (uint64_t) p[i + j] << (8 * j);
                v3 ^= m;
                SIPROUND;
                v0 ^= m;
        }
        for (size_t j = 0; i + j < len; j++)
                b |= (uint64_t) p[i + j] << (8 * j);
        v3 ^= b;
        SIPROUND;
        v0 ^= b;
        v2 ^= 0xff;
        SIPROUND;
        SIPROUND;
        SIPROUND;
        return v0 ^ v1 ^ v2 ^ v3;
}

static uint32_t str_hash(const Intern *t, const char *s, size_t len) {
        return (uint32_t) siphash13(s, len, t->k0, t->k1);
}

int intern_new(uint64_t seed, Intern **ret) {
        Intern *t;

        assert(ret);
        t = core_calloc(1, sizeof(Intern));
        if (!t)
                return -ENOMEM;
        t->k0 = seed ^ UINT64_C(0x9e3779b97f4a7c15);
        t->k1 = (seed << 1) ^ UINT64_C(0xd1b54a32d192ed03);
        t->slots = core_calloc(MIN_SLOTS, sizeof(uint32_t));
        if (!t->slots) {
                free(t);
                return -ENOMEM;
        }
        t->mask = MIN_SLOTS - 1;
        t->n_ids = 1;
        *ret = t;
        return 0;
}

Intern *intern_free(Intern *t) {
        if (!t)
                return NULL;
        for (uint32_t i = 1; i < t->n_ids; i++)
                free(t->strs[i]);
        free(t->strs);
        free(t->free_ids);
        free(t->slots);
        free(t);
        return NULL;
}

/* Rehashes into a table of new_size slots (a power of two). Leaves t unchanged on -ENOMEM. */
static int table_resize(Intern *t, uint32_t new_size) {
        uint32_t *slots = core_calloc(new_size, sizeof(uint32_t));
        uint32_t mask = new_size - 1;

        if (!slots)
                return -ENOMEM;
        for (uint32_t i = 0; i <= t->mask; i++) {
                uint32_t id = t->slots[i], j;

                if (!id)
                        continue;
                for (j = t->strs[id]->hash & mask; slots[j]; j = (j + 1) & mask)
                        ;
                slots[j] = id;
        }
        free(t->slots);
        t->slots = slots;
        t->mask = mask;
        return 0;
}

/* Returns the slot holding s, or the empty slot where it would go. */
static uint32_t table_probe(const Intern *t, const char *s, uint32_t h) {
        uint32_t i;

        for (i = h & t->mask; t->slots[i]; i = (i + 1) & t->mask) {
                const Str *x = t->strs[t->slots[i]];

                if (x->hash == h && streq(x->s, s))
                        break;
        }
        return i;
}

uint32_t intern_find(const Intern *t, const char *s) {
        assert(t && s);
        return t->slots[table_probe(t, s, str_hash(t, s, strlen(s)))];
}

int intern_ref(Intern *t, const char *s, uint32_t *ret) {
        size_t len;
        uint32_t h, i, id;
        Str *x;

        assert(t && s && ret);
        len = strlen(s);
        h = str_hash(t, s, len);
        i = table_probe(t, s, h);
        if (t->slots[i]) {
                id = t->slots[i];
                t->strs[id]->refs++;
                *ret = id;
                return 0;
        }

        /* Every allocation happens before the table changes. Load factor stays <= 3/4. */
        if ((uint64_t) (t->n + 1) * 4 > (uint64_t) (t->mask + 1) * 3) {
                if (t->mask + 1 > UINT32_MAX / 2)
                        return -E2BIG;
                if (table_resize(t, (t->mask + 1) * 2) < 0)
                        return -ENOMEM;
                i = table_probe(t, s, h);
        }
        if (t->n_free == 0 && t->n_ids >= t->ids_cap) {
                uint32_t cap = t->ids_cap ? t->ids_cap * 2 : 64;
                uint32_t *free_ids;
                Str **strs;

                if (t->ids_cap >= UINT32_MAX / 2)
                        return -E2BIG;
                strs = core_realloc(t->strs, (size_t) cap * sizeof(Str *));
                if (!strs)
                        return -ENOMEM;
                t->strs = strs;
                /* The free list can never hold more ids than exist: sized with the ids here,
                 * pushing to it in intern_unref() never allocates. */
                free_ids = core_realloc(t->free_ids, (size_t) cap * sizeof(uint32_t));
                if (!free_ids)
                        return -ENOMEM;
                t->free_ids = free_ids;
                t->ids_cap = cap;
        }
        x = core_malloc(sizeof(Str) + len + 1);
        if (!x)
                return -ENOMEM;
        x->refs = 1;
        x->hash = h;
        memcpy(x->s, s, len + 1);

        id = t->n_free > 0 ? t->free_ids[--t->n_free] : t->n_ids++;
        t->strs[id] = x;
        t->slots[i] = id;
        t->n++;
        t->string_bytes += sizeof(Str) + len + 1;
        *ret = id;
        return 0;
}

/* Backward-shift deletion: moves later members of the probe run into the hole, so lookups
 * never need tombstones. */
static void table_delete(Intern *t, uint32_t i) {
        uint32_t j = i;

        t->slots[i] = 0;
        for (;;) {
                uint32_t home;

                j = (j + 1) & t->mask;
                if (!t->slots[j])
                        break;
                home = t->strs[t->slots[j]]->hash & t->mask;
                /* stays if its home lies cyclically in (i, j] */
                if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                        continue;
                t->slots[i] = t->slots[j];
                t->slots[j] = 0;
                i = j;
        }
}

void intern_unref(Intern *t, uint32_t id) {
        Str *x;
        uint32_t i;

        assert(t && id > 0 && id < t->n_ids && t->strs[id]);
        x = t->strs[id];
        assert(x->refs > 0);
        if (--x->refs > 0)
                return;

        for (i = x->hash & t->mask; t->slots[i] != id; i = (i + 1) & t->mask)
                assert(t->slots[i]);
        table_delete(t, i);

        assert(t->n_free < t->ids_cap);
        t->strs[id] = NULL;
        t->free_ids[t->n_free++] = id;
        t->string_bytes -= sizeof(Str) + strlen(x->s) + 1;
        free(x);
        t->n--;
        /* Shrink when 1/16 full, but never below MIN_SLOTS; failure just keeps the table. */
        if (t->mask + 1 > MIN_SLOTS && (uint64_t) t->n * 16 < t->mask + 1)
                (void) table_resize(t, (t->mask + 1) / 2);
}

const char *intern_str(const Intern *t, uint32_t id) {
        assert(t && id > 0 && id < t->n_ids && t->strs[id]);
        return t->strs[id]->s;
}

size_t intern_count(const Intern *t) {
        return t->n;
}

size_t intern_bytes(const Intern *t) {
        return sizeof(Intern) + (size_t) (t->mask + 1) * sizeof(uint32_t) +
                (size_t) t->ids_cap * sizeof(Str *) + (size_t) t->ids_cap * sizeof(uint32_t) +
                t->string_bytes;
}

size_t intern_string_bytes(const Intern *t) {
        return t->string_bytes;
}

const char *intern_check(const Intern *t) {
        uint32_t live = 0, in_table = 0;
        size_t bytes = 0;

        for (uint32_t id = 1; id < t->n_ids; id++) {
                const Str *x = t->strs[id];

                if (!x)
                        continue;
                live++;
                bytes += sizeof(Str) + strlen(x->s) + 1;
                if (x->refs == 0)
                        return "a live string without references";
                if (x->hash != str_hash(t, x->s, strlen(x->s)))
                        return "a string's hash is wrong";
                if (t->slots[table_probe(t, x->s, x->hash)] != id)
                        return "a string is not found from its characters";
        }
        for (uint32_t i = 0; i <= t->mask; i++)
                in_table += t->slots[i] != 0;
        if (live != t->n || in_table != t->n)
                return "string counts disagree";
        if (t->n_free + t->n + 1 != t->n_ids)
                return "free ids and live ids do not add up";
        if ((uint64_t) t->n * 4 > (uint64_t) (t->mask + 1) * 3)
                return "table over its load factor";
        if (bytes != t->string_bytes)
                return "string bytes wrong";
        return NULL;
}
