/* intern.c — refcounted string interning with 32-bit ids: an open-addressing table of ids
 * (linear probing, backward-shift deletion, so no tombstones ever accumulate) over string
 * records kept in slabs. Pure: no I/O, no logging.
 *
 * Memory is the point (a million controller ids is the common case). A record is a 4-byte
 * reference count, a 4-byte hash and the characters, rounded up to 8 bytes, in the slab of
 * its size class: no malloc header, no pointer per string. Class c holds records of
 * 8 (c + 1) bytes, up to 256 (controller ids and outage types are at most 64 characters);
 * a longer string gets a malloc'd record of its own, found through an array. A slab is a
 * series of chunks of 1024 records, so it grows without moving a record (intern_str()
 * pointers stay valid) and wastes at most the unused part of its last chunk (24 KiB for
 * the 24-byte records of typical ids). An id says where its record is: the class in the
 * top 5 bits (0: the array of long strings), the record's index in the class below. Freed
 * records go on a free list per class and are reused first; chunks are kept until the
 * table is freed. */

#include <assert.h>

#include "intern.h"

typedef struct Str {
        uint32_t refs;                  /* 0: a free record; hash then links the free list */
        uint32_t hash;                  /* low 32 bits of the keyed hash */
        char s[];
} Str;

#define CLASS_SHIFT 27
#define SLOT_MASK ((1u << CLASS_SHIFT) - 1)
#define N_CLASSES 32                    /* 0: long strings; c >= 1: records of 8 (c + 1) bytes */
#define CHUNK_SHIFT 10                  /* 1024 records per chunk */
#define CHUNK_RECORDS (1u << CHUNK_SHIFT)
#define MAX_CHUNKS (1u << (CLASS_SHIFT - CHUNK_SHIFT))
#define NO_SLOT UINT32_MAX
#define MIN_SLOTS 16u

typedef struct Class {
        char **chunks;
        uint32_t n_chunks, chunks_cap;
        uint32_t used;                  /* records handed out (high-water mark) */
        uint32_t free_head;             /* a free record, or NO_SLOT */
} Class;

struct Intern {
        uint64_t k0, k1;                /* SipHash key */
        Class classes[N_CLASSES];       /* [0] unused */
        Str **longs;                    /* long strings by index; [0] unused; NULL: free */
        uint32_t *free_longs;           /* free indexes of longs, longs_cap long */
        uint32_t n_longs, longs_cap, n_free_longs;      /* n_longs: high-water mark + 1 */
        uint32_t *slots;                /* ids; 0: empty. Size is a power of two. */
        uint32_t mask;
        uint32_t n;                     /* live strings */
        size_t string_bytes;            /* the records of live strings */
        size_t chunk_bytes;             /* every chunk of every class */
        size_t long_bytes;              /* the records of long strings */
};

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

/* The class of a string of len characters, 0 if too long for a slab. */
static uint32_t class_of(size_t len) {
        size_t c = (sizeof(Str) + len + 1 + 7) / 8 - 1;

        return c < N_CLASSES ? (uint32_t) c : 0;
}

static size_t record_size(uint32_t c) {
        return 8 * ((size_t) c + 1);
}

/* On every lookup's path: a few instructions, and no memory beyond the class's chunk
 * table, where a pointer array per string would cost a cache miss. */
static inline Str *slab_record(const Class *k, uint32_t c, uint32_t slot) {
        return (Str *) (k->chunks[slot >> CHUNK_SHIFT] + (slot & (CHUNK_RECORDS - 1)) * record_size(c));
}

static inline Str *record(const Intern *t, uint32_t id) {
        uint32_t c = id >> CLASS_SHIFT, slot = id & SLOT_MASK;

        if (_unlikely_(c == 0)) {
                assert(slot > 0 && slot < t->n_longs && t->longs[slot]);
                return t->longs[slot];
        }
        assert(slot < t->classes[c].used);
        return slab_record(&t->classes[c], c, slot);
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
        t->n_longs = 1;
        for (uint32_t c = 0; c < N_CLASSES; c++)
                t->classes[c].free_head = NO_SLOT;
        *ret = t;
        return 0;
}

Intern *intern_free(Intern *t) {
        if (!t)
                return NULL;
        for (uint32_t c = 1; c < N_CLASSES; c++) {
                for (uint32_t j = 0; j < t->classes[c].n_chunks; j++)
                        free(t->classes[c].chunks[j]);
                free(t->classes[c].chunks);
        }
        for (uint32_t i = 1; i < t->n_longs; i++)
                free(t->longs[i]);
        free(t->longs);
        free(t->free_longs);
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
                for (j = record(t, id)->hash & mask; slots[j]; j = (j + 1) & mask)
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
                const Str *x = record(t, t->slots[i]);

                if (x->hash == h && streq(x->s, s))
                        break;
        }
        return i;
}

uint32_t intern_find(const Intern *t, const char *s) {
        assert(t && s);
        return t->slots[table_probe(t, s, str_hash(t, s, strlen(s)))];
}

/* Makes sure class c has a record to hand out. -ENOMEM, -E2BIG: nothing changed. */
static int slab_reserve(Intern *t, uint32_t c) {
        Class *k = &t->classes[c];
        char *chunk;

        if (k->free_head != NO_SLOT || k->used < (uint64_t) k->n_chunks * CHUNK_RECORDS)
                return 0;
        if (k->n_chunks == MAX_CHUNKS)
                return -E2BIG;
        if (k->n_chunks == k->chunks_cap) {
                uint32_t cap = k->chunks_cap ? k->chunks_cap * 2 : 4;
                char **chunks = core_realloc(k->chunks, cap * sizeof(char *));

                if (!chunks)
                        return -ENOMEM;
                t->chunk_bytes += (cap - k->chunks_cap) * sizeof(char *);
                k->chunks = chunks;
                k->chunks_cap = cap;
        }
        chunk = core_malloc(CHUNK_RECORDS * record_size(c));
        if (!chunk)
                return -ENOMEM;
        t->chunk_bytes += CHUNK_RECORDS * record_size(c);
        k->chunks[k->n_chunks++] = chunk;
        return 0;
}

/* Takes a record reserved by slab_reserve(). Returns its id. */
static uint32_t slab_take(Intern *t, uint32_t c) {
        Class *k = &t->classes[c];
        uint32_t slot;

        if (k->free_head != NO_SLOT) {
                slot = k->free_head;
                k->free_head = slab_record(k, c, slot)->hash;
        } else
                slot = k->used++;
        return c << CLASS_SHIFT | slot;
}

/* A record of its own for a string too long for a slab: returns 0 and its id (the class bits
 * are 0), -ENOMEM or -E2BIG with nothing changed. */
static int long_take(Intern *t, size_t len, uint32_t *ret) {
        Str *x;
        uint32_t i;

        if (t->n_free_longs == 0 && t->n_longs >= t->longs_cap) {
                uint32_t cap = t->longs_cap ? t->longs_cap * 2 : 16;
                uint32_t *free_longs;
                Str **longs;

                if (t->longs_cap >= SLOT_MASK / 2)
                        return -E2BIG;
                longs = core_realloc(t->longs, (size_t) cap * sizeof(Str *));
                if (!longs)
                        return -ENOMEM;
                t->longs = longs;
                /* sized with longs, so that intern_unref() never allocates */
                free_longs = core_realloc(t->free_longs, (size_t) cap * sizeof(uint32_t));
                if (!free_longs)
                        return -ENOMEM;
                t->free_longs = free_longs;
                t->longs_cap = cap;
        }
        x = core_malloc(sizeof(Str) + len + 1);
        if (!x)
                return -ENOMEM;
        i = t->n_free_longs > 0 ? t->free_longs[--t->n_free_longs] : t->n_longs++;
        t->longs[i] = x;
        t->long_bytes += sizeof(Str) + len + 1;
        *ret = i;
        return 0;
}

int intern_ref(Intern *t, const char *s, uint32_t *ret) {
        uint32_t h, i, id, c;
        size_t len;
        Str *x;
        int r;

        assert(t && s && ret);
        len = strlen(s);
        h = str_hash(t, s, len);
        i = table_probe(t, s, h);
        if (t->slots[i]) {
                id = t->slots[i];
                record(t, id)->refs++;
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
        c = class_of(len);
        if (c > 0) {
                r = slab_reserve(t, c);
                if (r < 0)
                        return r;
                id = slab_take(t, c);
        } else {
                r = long_take(t, len, &id);
                if (r < 0)
                        return r;
        }
        x = record(t, id);
        x->refs = 1;
        x->hash = h;
        memcpy(x->s, s, len + 1);
        t->slots[i] = id;
        t->n++;
        t->string_bytes += c > 0 ? record_size(c) : sizeof(Str) + len + 1;
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
                home = record(t, t->slots[j])->hash & t->mask;
                /* stays if its home lies cyclically in (i, j] */
                if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                        continue;
                t->slots[i] = t->slots[j];
                t->slots[j] = 0;
                i = j;
        }
}

/* Returns a record to its class's free list, or frees a long string's. */
static void record_release(Intern *t, uint32_t id) {
        uint32_t c = id >> CLASS_SHIFT, slot = id & SLOT_MASK;
        Str *x = record(t, id);

        if (c > 0) {
                Class *k = &t->classes[c];

                x->hash = k->free_head;
                k->free_head = slot;
                t->string_bytes -= record_size(c);
                return;
        }
        assert(t->n_free_longs < t->longs_cap);
        t->string_bytes -= sizeof(Str) + strlen(x->s) + 1;
        t->long_bytes -= sizeof(Str) + strlen(x->s) + 1;
        free(x);
        t->longs[slot] = NULL;
        t->free_longs[t->n_free_longs++] = slot;
}

void intern_unref(Intern *t, uint32_t id) {
        Str *x;
        uint32_t i;

        assert(t && id > 0);
        x = record(t, id);
        assert(x->refs > 0);
        if (--x->refs > 0)
                return;

        for (i = x->hash & t->mask; t->slots[i] != id; i = (i + 1) & t->mask)
                assert(t->slots[i]);
        table_delete(t, i);
        record_release(t, id);
        t->n--;
        /* Shrink when 1/16 full, but never below MIN_SLOTS; failure just keeps the table. */
        if (t->mask + 1 > MIN_SLOTS && (uint64_t) t->n * 16 < t->mask + 1)
                (void) table_resize(t, (t->mask + 1) / 2);
}

const char *intern_str(const Intern *t, uint32_t id) {
        const Str *x;

        assert(t && id > 0);
        x = record(t, id);
        assert(x->refs > 0);
        return x->s;
}

size_t intern_count(const Intern *t) {
        return t->n;
}

size_t intern_bytes(const Intern *t) {
        return sizeof(Intern) + (size_t) (t->mask + 1) * sizeof(uint32_t) + t->chunk_bytes +
                (size_t) t->longs_cap * (sizeof(Str *) + sizeof(uint32_t)) + t->long_bytes;
}

size_t intern_string_bytes(const Intern *t) {
        return t->string_bytes;
}

/* Checks one live record; counts it. */
static const char *check_record(const Intern *t, uint32_t id, uint32_t *live, size_t *bytes) {
        const Str *x = record(t, id);
        size_t len = strlen(x->s);

        (*live)++;
        *bytes += id >> CLASS_SHIFT ? record_size(id >> CLASS_SHIFT) : sizeof(Str) + len + 1;
        if (id >> CLASS_SHIFT && class_of(len) != id >> CLASS_SHIFT)
                return "a string in the wrong size class";
        if (x->hash != str_hash(t, x->s, len))
                return "a string's hash is wrong";
        if (t->slots[table_probe(t, x->s, x->hash)] != id)
                return "a string is not found from its characters";
        return NULL;
}

const char *intern_check(const Intern *t) {
        uint32_t live = 0, in_table = 0;
        size_t bytes = 0, chunks = 0;
        const char *err;

        for (uint32_t c = 1; c < N_CLASSES; c++) {
                const Class *k = &t->classes[c];
                uint32_t n_free = 0;

                chunks += k->n_chunks * CHUNK_RECORDS * record_size(c) + k->chunks_cap * sizeof(char *);
                if (k->used > (uint64_t) k->n_chunks * CHUNK_RECORDS)
                        return "records beyond the chunks of a class";
                for (uint32_t slot = k->free_head; slot != NO_SLOT; slot = slab_record(k, c, slot)->hash)
                        if (slot >= k->used || slab_record(k, c, slot)->refs || ++n_free > k->used)
                                return "a class's free list is broken";
                for (uint32_t slot = 0; slot < k->used; slot++) {
                        if (slab_record(k, c, slot)->refs == 0) {
                                n_free--;
                                continue;
                        }
                        err = check_record(t, c << CLASS_SHIFT | slot, &live, &bytes);
                        if (err)
                                return err;
                }
                if (n_free != 0)
                        return "a free record is not on its free list";
        }
        for (uint32_t i = 1; i < t->n_longs; i++)
                if (t->longs[i] && (err = check_record(t, i, &live, &bytes)))
                        return err;
        for (uint32_t i = 0; i <= t->mask; i++)
                in_table += t->slots[i] != 0;
        if (live != t->n || in_table != t->n)
                return "string counts disagree";
        if ((uint64_t) t->n * 4 > (uint64_t) (t->mask + 1) * 3)
                return "table over its load factor";
        if (bytes != t->string_bytes || chunks != t->chunk_bytes)
                return "string bytes wrong";
        return NULL;
}
