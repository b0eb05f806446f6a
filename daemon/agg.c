/* agg.c — the aggregation core: open events in memory keyed by (controller_id, outage_type),
 * applying the SPEC section 3 rule within memory, and handing dirty spans to the store as
 * fragments. Pure: no I/O, no clock, no logging, no threads. The store, not this file, is
 * the truth: memory only has to stay a subset of it and count each report at most once.
 *
 * Layout, chosen for memory: a single-span key costs 53-60 bytes beyond its strings (81 in
 * all beyond the characters of its controller id at 200,000 keys, 76 at a million: see
 * bench_agg memory and memory-late, and agg_stats()). Whatever grows with the keys grows in
 * fixed chunks that never move, or is a table replaced whole when outgrown (past 128 KiB,
 * malloc's mmap threshold, which main.c fixes, it goes back to the system), so that no
 * outgrown block stays behind as a hole in the malloc heap, resident for good:
 *  - Key records (40 bytes: two interned string ids, a list link, the span count, and the
 *    first span stored inline) live in fixed-size chunks addressed by a uint32 index, so
 *    they never move and a common key costs no malloc of its own.
 *  - An open-addressing table of uint32 key indexes (linear probing, backward-shift delete,
 *    load factor <= 3/4) finds a key from its two string ids.
 *  - A key with several spans keeps them in a malloc'd array, sorted, pairwise more than gap
 *    apart. A span made by one uncertain report holds its timestamp as its start (every new
 *    key of a backlog drained after a restart: no allocation). Other uncertain timestamps
 *    live in a side table indexed from the span, one vector per span, appended to in
 *    amortised O(1) (capacity doubling) and sorted only when a flush copies them out;
 *    merging spans appends the smaller vectors to the largest, so a late backlog of n
 *    reports costs O(n log n), never a copy per report. The table goes with its last
 *    vector.
 *  - Dirty keys form a FIFO list threaded through the key records: flushing is O(dirty).
 *  - Clean keys are ordered by their oldest span end in a binary min-heap of 8-byte
 *    (end in 32 bits, key) entries in chunks, exactly one per clean key (see HeapEntry). A clean key's record holds its position in the
 *    heap (in the link field, which only a dirty key needs), so a key that goes dirty leaves
 *    the heap and one whose oldest span changes moves in it, in O(log n); eviction costs
 *    O(dropped log n). Keys cleaned by a flush enter with the newest ends, at the bottom, and
 *    leave with the next report from near the bottom, so the steady state costs O(1) on
 *    average. */

#include <assert.h>
#include <limits.h>

#include "agg.h"
#include "intern.h"

#define NONE UINT32_MAX
#define KEY_CHUNK_SHIFT 11              /* 80 KiB chunks: below the mmap threshold */
#define KEY_CHUNK (1u << KEY_CHUNK_SHIFT)
#define MIN_SLOTS 16u
#define MAX_SPANS_PER_KEY ((1u << 30) - 1)

typedef struct Span {
        usec_t start, end;
        uint32_t count;                 /* reports to flush, counted with full knowledge */
        uint32_t unc;                   /* index into Agg.uvecs; 0: none; or UNC_ONE(_OUT) */
} Span;

/* Span.unc beyond the UVec table: the span holds one uncertain timestamp, its own start,
 * without a vector (a span made by one uncertain report: every new key of a backlog drained
 * after a restart). UNC_ONE: to flush; UNC_ONE_OUT: in the outstanding batch, nothing to
 * flush. Only spans_merge() changes a span that holds uncertain timestamps, and it first
 * turns these into vectors (uvec_inline_out()), so the start stays the timestamp. */
#define UNC_ONE UINT32_MAX
#define UNC_ONE_OUT (UINT32_MAX - 1)

typedef struct Key {
        uint32_t controller, type;      /* interned ids; controller 0: free record */
        uint32_t next;                  /* dirty: the dirty list link; heaped: the position in
                                         * the heap; free record: the free list link */
        uint32_t n_spans:30;
        uint32_t dirty:1;               /* in the dirty list */
        uint32_t heaped:1;              /* in the heap: every clean key, between calls */
        union {
                Span one;               /* n_spans == 1 */
                Span *many;             /* n_spans >= 2: capacity span_cap(n_spans) */
        } s;
} Key;

/* Uncertain timestamps of one span. ts holds n distinct values in no particular order (each
 * one was outside the span when it came, so none repeats); inflight more of this span's
 * timestamps are in the outstanding batch. cap >= n + inflight always, so that a failed
 * batch can give its timestamps back without allocating. */
typedef struct UVec {
        usec_t *ts;
        uint32_t n, cap, inflight;      /* free entries: n links the free list */
} UVec;

/* The heap of clean keys by oldest end, in fixed chunks (never moved, so its growth leaves
 * no holes behind in the malloc heap, and it grows with the keys in steps of one chunk).
 * An entry is the key index and its end in 32 bits (heap_q()): twice the whole seconds
 * since HEAP_Q_SPAN before the first horizon, plus one if there is a fraction of a second.
 * That decides the order, except between two equal odd values (ends within the same
 * second, not on it, or beyond HEAP_Q_SPAN either way); then the ends in the key records
 * decide. So the order is exactly that of the ends, and a key record is read only for
 * ends off whole seconds. */
#define HEAP_CHUNK_SHIFT 12
#define HEAP_CHUNK (1u << HEAP_CHUNK_SHIFT)
#define HEAP_Q_SPAN (INT64_C(1) << 30)         /* seconds, about 34 years */

typedef struct HeapEntry {
        uint32_t q, key;
} HeapEntry;

typedef HeapEntry HeapChunk[HEAP_CHUNK];

typedef struct BatchPriv {
        uint32_t *keys;                 /* key index of each fragment */
        usec_t *pool;                   /* the fragments' uncertain timestamps */
        size_t n_pool;
} BatchPriv;

struct Agg {
        usec_t gap;
        uint64_t max_events;
        uint64_t seed;
        usec_t horizon;

        Intern *strings;

        Key **chunks;
        uint32_t n_chunks, chunks_cap;
        uint32_t keys_used;             /* records handed out (high-water mark) */
        uint32_t n_keys;                /* live keys */
        uint32_t free_key;              /* free list of records */

        uint32_t *slots;                /* key index + 1; 0: empty */
        uint32_t mask;

        uint64_t n_spans;
        uint64_t n_dirty_keys;
        uint32_t dirty_head, dirty_tail;

        HeapChunk **hchunks;            /* the heap, HEAP_CHUNK entries a chunk */
        uint32_t n_hchunks, hchunks_cap;        /* capacity >= keys (key_reserve()) */
        size_t heap_n;
        int64_t q_base;                 /* seconds: the first horizon less HEAP_Q_SPAN */

        UVec *uvecs;                    /* [0] unused; freed when no vector is live */
        uint32_t uvecs_used, uvecs_cap, free_uvec, uvecs_live;
        size_t bytes_many, bytes_unc;
        uint64_t n_unc;                 /* uncertain timestamps held: n + inflight of all */
        uint64_t n_unc_full;            /* spans with AGG_UNCERTAIN_FLUSH_AT or more to flush */

        FlushBatch *batch;
};

/* ---- small helpers ---- */

static usec_t add_sat(usec_t a, usec_t b) {
        usec_t r;

        if (__builtin_add_overflow(a, b, &r))
                return b > 0 ? INT64_MAX : INT64_MIN;
        return r;
}

static uint32_t add_count(uint32_t a, uint32_t b) {
        /* Saturates: 2^32 reports into one event between two flushes cannot happen at any
         * real ingest rate, but a wrapped count would be worse than a capped one. */
        return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

static uint64_t mix64(uint64_t x) {
        x ^= x >> 33;
        x *= UINT64_C(0xff51afd7ed558ccd);
        x ^= x >> 33;
        x *= UINT64_C(0xc4ceb9fe1a85ec53);
        x ^= x >> 33;
        return x;
}

static uint32_t key_hash(const Agg *a, uint32_t c, uint32_t t) {
        return (uint32_t) mix64((((uint64_t) c << 32) | t) ^ a->seed);
}

static Key *key_at(const Agg *a, uint32_t i) {
        assert(i < a->keys_used);
        return &a->chunks[i >> KEY_CHUNK_SHIFT][i & (KEY_CHUNK - 1)];
}

static Span *key_spans(Key *k) {
        assert(k->n_spans > 0);
        return k->n_spans == 1 ? &k->s.one : k->s.many;
}

/* Capacity of the array of a key with n >= 2 spans: the next power of two. */
static size_t span_cap(size_t n) {
        size_t c = 2;

        while (c < n)
                c *= 2;
        return c;
}

static bool unc_vec(uint32_t unc) {
        return unc != 0 && unc < UNC_ONE_OUT;
}

/* Uncertain timestamps of s to flush. */
static uint32_t span_unc_n(const Agg *a, const Span *s) {
        if (unc_vec(s->unc))
                return a->uvecs[s->unc].n;
        return s->unc == UNC_ONE;
}

static bool span_dirty(const Agg *a, const Span *s) {
        return s->count > 0 || span_unc_n(a, s) > 0;
}

static bool certain(const Agg *a, usec_t ts) {
        return ts >= add_sat(a->horizon, a->gap);
}

/* max_events in units of one uncertain timestamp, AGG_UNCERTAIN_PER_EVENT per span; the
 * timestamps' share is rounded down, as in agg_event_count(). */
static bool fits(const Agg *a, uint64_t more_spans, uint64_t more_unc) {
        uint64_t used = (a->n_spans + more_spans) * AGG_UNCERTAIN_PER_EVENT + a->n_unc + more_unc;

        if (a->max_events == 0 || a->max_events > UINT64_MAX / 2 / AGG_UNCERTAIN_PER_EVENT)
                return true;
        return used < (a->max_events + 1) * AGG_UNCERTAIN_PER_EVENT;
}

static int heap_reserve(Agg *a, size_t n);
static void heap_remove(Agg *a, uint32_t idx);
static void heap_shrink(Agg *a);

/* ---- key table ---- */

static uint32_t key_find(const Agg *a, uint32_t c, uint32_t t) {
        for (uint32_t i = key_hash(a, c, t) & a->mask; a->slots[i]; i = (i + 1) & a->mask) {
                const Key *k = key_at(a, a->slots[i] - 1);

                if (k->controller == c && k->type == t)
                        return a->slots[i] - 1;
        }
        return NONE;
}

static uint32_t key_find_str(const Agg *a, const char *controller_id, const char *outage_type) {
        uint32_t c = intern_find(a->strings, controller_id), t;

        if (!c)
                return NONE;
        t = intern_find(a->strings, outage_type);
        if (!t)
                return NONE;
        return key_find(a, c, t);
}

static int table_resize(Agg *a, uint32_t size) {
        uint32_t *slots = core_calloc(size, sizeof(uint32_t)), mask = size - 1;

        if (!slots)
                return -ENOMEM;
        for (uint32_t i = 0; i <= a->mask; i++) {
                uint32_t j;
                const Key *k;

                if (!a->slots[i])
                        continue;
                k = key_at(a, a->slots[i] - 1);
                for (j = key_hash(a, k->controller, k->type) & mask; slots[j]; j = (j + 1) & mask)
                        ;
                slots[j] = a->slots[i];
        }
        free(a->slots);
        a->slots = slots;
        a->mask = mask;
        return 0;
}

static void table_insert(Agg *a, uint32_t idx) {
        const Key *k = key_at(a, idx);
        uint32_t i;

        for (i = key_hash(a, k->controller, k->type) & a->mask; a->slots[i]; i = (i + 1) & a->mask)
                ;
        a->slots[i] = idx + 1;
}

static void table_delete(Agg *a, uint32_t idx) {
        const Key *k = key_at(a, idx);
        uint32_t i, j;

        for (i = key_hash(a, k->controller, k->type) & a->mask; a->slots[i] != idx + 1; i = (i + 1) & a->mask)
                assert(a->slots[i]);
        a->slots[i] = 0;
        /* backward shift: pull later members of the run into the hole */
        for (j = i;;) {
                uint32_t home;
                const Key *m;

                j = (j + 1) & a->mask;
                if (!a->slots[j])
                        break;
                m = key_at(a, a->slots[j] - 1);
                home = key_hash(a, m->controller, m->type) & a->mask;
                if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
                        continue;
                a->slots[i] = a->slots[j];
                a->slots[j] = 0;
                i = j;
        }
}

/* Makes room for one more key: table load <= 3/4 and a free record. Changes nothing visible;
 * -ENOMEM leaves the Agg as it was. */
static int key_reserve(Agg *a) {
        if ((uint64_t) (a->n_keys + 1) * 4 > (uint64_t) (a->mask + 1) * 3) {
                if (a->mask + 1 > UINT32_MAX / 2)
                        return -ENOSPC;
                if (table_resize(a, (a->mask + 1) * 2) < 0)
                        return -ENOMEM;
        }
        if (a->free_key == NONE && a->keys_used == (uint64_t) a->n_chunks * KEY_CHUNK) {
                Key *chunk;

                if (a->n_chunks >= (NONE >> KEY_CHUNK_SHIFT) - 1)
                        return -ENOSPC;
                if (a->n_chunks == a->chunks_cap) {
                        uint32_t cap = a->chunks_cap ? a->chunks_cap * 2 : 16;
                        Key **c = core_realloc(a->chunks, cap * sizeof(Key *));

                        if (!c)
                                return -ENOMEM;
                        a->chunks = c;
                        a->chunks_cap = cap;
                }
                chunk = core_malloc(KEY_CHUNK * sizeof(Key));
                if (!chunk)
                        return -ENOMEM;
                a->chunks[a->n_chunks++] = chunk;
        }
        return heap_reserve(a, (size_t) a->n_keys + 1);
}

/* Takes a record reserved by key_reserve() and indexes it. Takes the string references. */
static uint32_t key_create(Agg *a, uint32_t c, uint32_t t) {
        uint32_t idx;
        Key *k;

        if (a->free_key != NONE) {
                idx = a->free_key;
                a->free_key = key_at(a, idx)->next;
        } else {
                assert(a->keys_used < (uint64_t) a->n_chunks * KEY_CHUNK);
                idx = a->keys_used++;
        }
        k = key_at(a, idx);
        *k = (Key) { .controller = c, .type = t, .next = NONE };
        table_insert(a, idx);
        a->n_keys++;
        return idx;
}

/* Removes a key that has no spans left and releases its strings. */
static void key_destroy(Agg *a, uint32_t idx) {
        Key *k = key_at(a, idx);

        assert(k->n_spans == 0 && !k->dirty && !k->heaped);
        table_delete(a, idx);
        intern_unref(a->strings, k->controller);
        intern_unref(a->strings, k->type);
        k->controller = k->type = 0;
        k->next = a->free_key;
        a->free_key = idx;
        a->n_keys--;
        heap_shrink(a);
        /* Shrink at 1/16 load; a failure just keeps the bigger table. */
        if (a->mask + 1 > MIN_SLOTS && (uint64_t) a->n_keys * 16 < a->mask + 1)
                (void) table_resize(a, (a->mask + 1) / 2);
}

static void key_mark_dirty(Agg *a, uint32_t idx) {
        Key *k = key_at(a, idx);

        if (k->dirty)
                return;
        if (k->heaped)
                heap_remove(a, idx);
        k->dirty = true;
        a->n_dirty_keys++;
        k->next = NONE;
        if (a->dirty_tail == NONE)
                a->dirty_head = idx;
        else
                key_at(a, a->dirty_tail)->next = idx;
        a->dirty_tail = idx;
}

/* ---- uncertain timestamp vectors ---- */

/* Takes an empty UVec entry, growing the table if needed. Returns its index, or 0 on ENOMEM. */
static uint32_t uvec_alloc(Agg *a) {
        uint32_t i;

        if (!a->free_uvec) {
                if (a->uvecs_used == a->uvecs_cap) {
                        uint32_t cap = a->uvecs_cap ? a->uvecs_cap * 2 : 16;
                        UVec *u;

                        if (a->uvecs_cap >= UINT32_MAX / 4)
                                return 0;
                        u = core_realloc(a->uvecs, cap * sizeof(UVec));
                        if (!u)
                                return 0;
                        a->uvecs = u;
                        a->uvecs_cap = cap;
                        if (a->uvecs_used == 0)
                                a->uvecs_used = 1;      /* index 0 means none */
                }
                i = a->uvecs_used++;
        } else {
                i = a->free_uvec;
                a->free_uvec = a->uvecs[i].n;
        }
        a->uvecs[i] = (UVec) {};
        a->uvecs_live++;
        return i;
}

static void uvec_release(Agg *a, uint32_t i) {
        UVec *u = &a->uvecs[i];

        assert(i > 0);
        a->bytes_unc -= (size_t) u->cap * sizeof(usec_t);
        free(u->ts);
        *u = (UVec) { .n = a->free_uvec };
        a->free_uvec = i;
        /* The table follows the live vectors down too, not only the largest burst of them
         * (a backlog of late reports): once none is left it goes. */
        if (--a->uvecs_live == 0) {
                free(a->uvecs);
                a->uvecs = NULL;
                a->uvecs_used = a->uvecs_cap = a->free_uvec = 0;
        }
}

/* Makes room for need timestamps in UVec i, doubling the capacity so that appends cost
 * O(1) amortised. Contents unchanged; -ENOMEM leaves everything as it was. */
static int uvec_reserve(Agg *a, uint32_t i, uint64_t need) {
        UVec *u = &a->uvecs[i];
        uint64_t cap = u->cap ? u->cap : 1;
        usec_t *ts;

        assert(need <= UINT32_MAX);
        if (need <= u->cap)
                return 0;
        while (cap < need)
                cap *= 2;
        if (cap > UINT32_MAX)
                cap = need;
        ts = core_realloc(u->ts, cap * sizeof(usec_t));
        if (!ts)
                return -ENOMEM;
        a->bytes_unc += (cap - u->cap) * sizeof(usec_t);
        u->ts = ts;
        u->cap = cap;
        return 0;
}

/* Gives a span holding its timestamp inline (UNC_ONE, UNC_ONE_OUT) a vector instead, with
 * room for what it holds. Changes nothing but the representation; -ENOMEM leaves it as it
 * was. */
static int uvec_inline_out(Agg *a, Span *s) {
        uint32_t i;

        if (s->unc != UNC_ONE && s->unc != UNC_ONE_OUT)
                return 0;
        i = uvec_alloc(a);
        if (!i)
                return -ENOMEM;
        if (uvec_reserve(a, i, 1) < 0) {
                uvec_release(a, i);
                return -ENOMEM;
        }
        if (s->unc == UNC_ONE) {
                a->uvecs[i].ts[0] = s->start;
                a->uvecs[i].n = 1;
        } else
                a->uvecs[i].inflight = 1;
        s->unc = i;
        return 0;
}

/* Keeps the count of spans at the flush threshold right as one's pending count changes. */
static void uvec_set_n(Agg *a, UVec *u, uint32_t n) {
        if (u->n >= AGG_UNCERTAIN_FLUSH_AT)
                a->n_unc_full--;
        if (n >= AGG_UNCERTAIN_FLUSH_AT)
                a->n_unc_full++;
        u->n = n;
}

/* Appends m timestamps (room reserved). Does not count them in n_unc: the caller does when
 * they are new, not moved from another vector or given back. */
static void uvec_append(Agg *a, UVec *u, const usec_t *ts, uint32_t m) {
        assert((uint64_t) u->n + u->inflight + m <= u->cap);
        memcpy(u->ts + u->n, ts, (size_t) m * sizeof(usec_t));
        uvec_set_n(a, u, u->n + m);
}

/* After a commit: gives back capacity beyond twice what is held, so that memory follows the
 * accounting (fits()) rather than the largest burst. A failure keeps the bigger buffer. */
static void uvec_trim(Agg *a, UVec *u) {
        uint64_t held = (uint64_t) u->n + u->inflight;
        usec_t *ts;

        if (held == 0 || u->cap <= 2 * held || u->cap <= 4)
                return;
        ts = core_realloc(u->ts, held * sizeof(usec_t));
        if (!ts)
                return;
        a->bytes_unc -= (u->cap - held) * sizeof(usec_t);
        u->ts = ts;
        u->cap = held;
}

static void sift_down(usec_t *v, size_t root, size_t n) {
        for (;;) {
                size_t c = 2 * root + 1;
                usec_t t;

                if (c >= n)
                        return;
                if (c + 1 < n && v[c + 1] > v[c])
                        c++;
                if (v[root] >= v[c])
                        return;
                t = v[root];
                v[root] = v[c];
                v[c] = t;
                root = c;
        }
}

/* Sorts v ascending without allocating: O(n) when already sorted either way (a backlog in
 * or against time order), else heapsort, O(n log n). */
static void sort_usec(usec_t *v, size_t n) {
        size_t i;

        for (i = 1; i < n && v[i - 1] <= v[i]; i++)
                ;
        if (i >= n)
                return;
        for (i = 1; i < n && v[i - 1] >= v[i]; i++)
                ;
        if (i >= n) {
                for (size_t l = 0, r = n - 1; l < r; l++, r--) {
                        usec_t t = v[l];

                        v[l] = v[r];
                        v[r] = t;
                }
                return;
        }
        for (size_t root = n / 2; root-- > 0;)
                sift_down(v, root, n);
        for (size_t end = n - 1; end > 0; end--) {
                usec_t t = v[0];

                v[0] = v[end];
                v[end] = t;
                sift_down(v, 0, end);
        }
}

/* ---- heap of clean keys by oldest end ---- */

static size_t heap_cap(const Agg *a) {
        return (size_t) a->n_hchunks * HEAP_CHUNK;
}

static uint32_t *heap_qp(const Agg *a, size_t i) {
        return &(*a->hchunks[i >> HEAP_CHUNK_SHIFT])[i & (HEAP_CHUNK - 1)].q;
}

static uint32_t *heap_kp(const Agg *a, size_t i) {
        return &(*a->hchunks[i >> HEAP_CHUNK_SHIFT])[i & (HEAP_CHUNK - 1)].key;
}

/* The end in 32 bits, in the order of the ends (see HeapEntry): 2 (d + 1) + (a fraction),
 * d the whole seconds since q_base, in [2, 2^32 - 1]; 1 and 2^32 - 1 (odd: compared
 * through the key records) below and beyond HEAP_Q_SPAN either way. */
static uint32_t heap_q(const Agg *a, usec_t end) {
        usec_t sec = end / USEC_PER_SEC, frac = end % USEC_PER_SEC;
        int64_t d;

        if (frac < 0) {                 /* floor, for ends before 1970 */
                sec--;
                frac += USEC_PER_SEC;
        }
        d = sec - a->q_base;
        if (d < 0)
                return 1;
        if (d >= 2 * HEAP_Q_SPAN - 1)
                return UINT32_MAX;
        return (uint32_t) (2 * (d + 1) + (frac != 0));
}

static usec_t key_end(const Agg *a, uint32_t idx) {
        return key_spans(key_at(a, idx))[0].end;
}

/* Entry (q1, k1) goes before (q2, k2): the older end. */
static bool heap_less(const Agg *a, uint32_t q1, uint32_t k1, uint32_t q2, uint32_t k2) {
        if (q1 != q2)
                return q1 < q2;
        return (q1 & 1) && key_end(a, k1) < key_end(a, k2);
}

static bool heap_less_at(const Agg *a, size_t i, size_t j) {
        return heap_less(a, *heap_qp(a, i), *heap_kp(a, i), *heap_qp(a, j), *heap_kp(a, j));
}

/* Puts key idx, whose coarse end is q, at position i, and tells the key. */
static void heap_place(Agg *a, size_t i, uint32_t q, uint32_t idx) {
        *heap_qp(a, i) = q;
        *heap_kp(a, i) = idx;
        key_at(a, idx)->next = (uint32_t) i;
}

static void heap_up(Agg *a, size_t i) {
        uint32_t q = *heap_qp(a, i), idx = *heap_kp(a, i);

        while (i > 0) {
                size_t p = (i - 1) / 2;

                if (!heap_less(a, q, idx, *heap_qp(a, p), *heap_kp(a, p)))
                        break;
                heap_place(a, i, *heap_qp(a, p), *heap_kp(a, p));
                i = p;
        }
        heap_place(a, i, q, idx);
}

static void heap_down(Agg *a, size_t i) {
        uint32_t q = *heap_qp(a, i), idx = *heap_kp(a, i);

        for (;;) {
                size_t l = 2 * i + 1, m;

                if (l >= a->heap_n)
                        break;
                m = l + 1 < a->heap_n && heap_less_at(a, l + 1, l) ? l + 1 : l;
                if (!heap_less(a, *heap_qp(a, m), *heap_kp(a, m), q, idx))
                        break;
                heap_place(a, i, *heap_qp(a, m), *heap_kp(a, m));
                i = m;
        }
        heap_place(a, i, q, idx);
}

/* Restores the order after the end at position i changed. */
static void heap_fix(Agg *a, size_t i) {
        if (i > 0 && heap_less_at(a, i, (i - 1) / 2))
                heap_up(a, i);
        else
                heap_down(a, i);
}

/* Room for n entries: the heap holds every clean key, so its capacity follows the keys.
 * -ENOMEM: nothing changed but capacity. */
static int heap_reserve(Agg *a, size_t n) {
        while (heap_cap(a) < n) {
                HeapChunk *c;

                if (a->n_hchunks == a->hchunks_cap) {
                        uint32_t cap = a->hchunks_cap ? a->hchunks_cap * 2 : 16;
                        HeapChunk **v = core_realloc(a->hchunks, cap * sizeof(HeapChunk *));

                        if (!v)
                                return -ENOMEM;
                        a->hchunks = v;
                        a->hchunks_cap = cap;
                }
                c = core_malloc(sizeof(HeapChunk));
                if (!c)
                        return -ENOMEM;
                a->hchunks[a->n_hchunks++] = c;
        }
        return 0;
}

/* Gives back chunks more than one beyond what the keys need (keys only go once they left
 * the heap, so its entries stay in the chunks kept). */
static void heap_shrink(Agg *a) {
        while (a->n_hchunks > 0 && heap_cap(a) - HEAP_CHUNK >= (size_t) a->n_keys + HEAP_CHUNK) {
                assert(a->heap_n <= heap_cap(a) - HEAP_CHUNK);
                free(a->hchunks[--a->n_hchunks]);
        }
}

/* A key that became clean enters. */
static void heap_insert(Agg *a, uint32_t idx) {
        Key *k = key_at(a, idx);

        assert(!k->dirty && !k->heaped && a->heap_n < heap_cap(a));
        k->heaped = true;
        heap_place(a, a->heap_n, heap_q(a, key_spans(k)[0].end), idx);
        heap_up(a, a->heap_n++);
}

/* A key that goes dirty, or away, leaves. */
static void heap_remove(Agg *a, uint32_t idx) {
        Key *k = key_at(a, idx);
        size_t i = k->next, last;

        assert(k->heaped && i < a->heap_n && *heap_kp(a, i) == idx);
        k->heaped = false;
        k->next = NONE;
        last = --a->heap_n;
        if (i == last)
                return;
        heap_place(a, i, *heap_qp(a, last), *heap_kp(a, last));
        heap_fix(a, i);
}

/* A clean key's oldest span changed. */
static void heap_update(Agg *a, uint32_t idx) {
        Key *k = key_at(a, idx);

        assert(k->heaped && *heap_kp(a, k->next) == idx);
        *heap_qp(a, k->next) = heap_q(a, key_spans(k)[0].end);
        heap_fix(a, k->next);
}

/* ---- spans ---- */

/* The spans within gap of [s, e]: returns how many (they are consecutive), and in *lo the
 * first of them, or the position where a new span [s, e] goes if there are none. */
static size_t spans_touching(const Agg *a, Key *k, usec_t s, usec_t e, size_t *lo) {
        const Span *sp = key_spans(k);
        size_t l = 0, r = k->n_spans;

        /* first span with end + gap >= s */
        while (l < r) {
                size_t m = l + (r - l) / 2;

                if (add_sat(sp[m].end, a->gap) >= s)
                        r = m;
                else
                        l = m + 1;
        }
        *lo = l;
        /* then those that start within gap of e: few, since spans are more than gap apart */
        for (r = l; r < k->n_spans && add_sat(sp[r].start, -a->gap) <= e; r++)
                ;
        return r - l;
}

/* Removes spans [lo, hi] of a key with at least two spans (they must hold no uncertain
 * vectors). Back to inline storage at one span; the array shrinks with the count, so that
 * span_cap() stays its capacity. */
static void spans_remove(Agg *a, Key *k, size_t lo, size_t hi) {
        size_t n = k->n_spans, d = hi - lo + 1, rest = n - d;
        Span *sp = k->s.many;

        assert(n >= 2 && lo <= hi && hi < n);
        if (rest == 0) {
                free(sp);
        } else if (rest == 1) {
                Span keep = lo == 0 ? sp[n - 1] : sp[0];

                free(sp);
                k->s.one = keep;
        } else {
                memmove(sp + lo, sp + hi + 1, (n - hi - 1) * sizeof(Span));
                if (span_cap(rest) < span_cap(n)) {
                        Span *m = core_realloc(sp, span_cap(rest) * sizeof(Span));

                        /* On failure the block stays bigger than span_cap() says, which is
                         * harmless: growth reallocs to the size it needs. */
                        if (m)
                                k->s.many = m;
                }
        }
        a->bytes_many -= span_cap(n) * sizeof(Span);
        if (rest >= 2)
                a->bytes_many += span_cap(rest) * sizeof(Span);
        k->n_spans = rest;
        a->n_spans -= d;
}

/* Merges spans [lo, hi] of k with [s, e] (plus, when has_ts, one report at ts counted as
 * certain or uncertain). The merged span keeps the largest uncertain vector of the spans and
 * the others are appended to it: O(smaller vectors), amortised O(1) for one more timestamp.
 * Allocates first; on -ENOMEM nothing changed. */
static int spans_merge(Agg *a, Key *k, size_t lo, size_t hi, usec_t s, usec_t e,
                       bool has_ts, usec_t ts, bool cert) {
        bool unc_ts = has_ts && !cert;
        uint64_t total = unc_ts, inflight = 0;
        uint32_t base = 0, count = (has_ts && cert) ? 1 : 0;
        Span *sp = key_spans(k), merged;
        bool new_base = false;
        int r;

        for (size_t i = lo; i <= hi; i++) {
                total += span_unc_n(a, &sp[i]);
                if (unc_vec(sp[i].unc))
                        inflight += a->uvecs[sp[i].unc].inflight;
                else
                        inflight += sp[i].unc == UNC_ONE_OUT;
        }
        if (total + inflight > UINT32_MAX)
                return -ENOSPC;
        /* One more uncertain timestamp: within the span's cap, and within max_events unless
         * the merge frees a span, which is worth more than a timestamp. */
        if (unc_ts && (total > AGG_UNCERTAIN_MAX || (hi == lo && !fits(a, 0, 1))))
                return -ENOSPC;
        /* Inline timestamps become vectors first (invisible, should a later step fail). */
        for (size_t i = lo; i <= hi; i++) {
                r = uvec_inline_out(a, &sp[i]);
                if (r < 0)
                        return r;
                if (sp[i].unc && (!base || a->uvecs[sp[i].unc].cap > a->uvecs[base].cap))
                        base = sp[i].unc;
        }
        if (total + inflight > 0) {
                if (!base) {
                        base = uvec_alloc(a);
                        if (!base)
                                return -ENOMEM;
                        new_base = true;
                }
                r = uvec_reserve(a, base, total + inflight);
                if (r < 0) {
                        if (new_base)
                                uvec_release(a, base);
                        return r;
                }
        }

        /* Nothing fails below. */
        merged = (Span) {
                .start = s < sp[lo].start ? s : sp[lo].start,
                .end = e > sp[hi].end ? e : sp[hi].end,
                .unc = base,
        };
        for (size_t i = lo; i <= hi; i++) {
                merged.count = add_count(merged.count, sp[i].count);
                if (sp[i].unc && sp[i].unc != base) {
                        UVec *u = &a->uvecs[sp[i].unc], *b = &a->uvecs[base];

                        uvec_append(a, b, u->ts, u->n);
                        b->inflight += u->inflight;
                        uvec_set_n(a, u, 0);
                        uvec_release(a, sp[i].unc);
                }
                sp[i].unc = 0;
        }
        merged.count = add_count(merged.count, count);
        if (unc_ts) {
                uvec_append(a, &a->uvecs[base], &ts, 1);
                a->n_unc++;
        }
        assert(!base || (a->uvecs[base].n == total && a->uvecs[base].inflight == inflight));
        sp[lo] = merged;
        if (hi > lo)
                spans_remove(a, k, lo + 1, hi);
        return 1;
}

/* Adds a new span {s, e} to k at pos: count 1 for a certain report, an uncertain timestamp
 * (s == e, held inline: UNC_ONE) for an uncertain one, nothing for a loaded event.
 * -ENOSPC/-ENOMEM: nothing changed. */
static int spans_add(Agg *a, Key *k, size_t pos, usec_t s, usec_t e, bool has_ts, bool cert) {
        Span x = { .start = s, .end = e, .count = has_ts && cert };
        size_t n = k->n_spans;
        bool grow = n == 1 || (n >= 2 && n == span_cap(n));
        Span *m = NULL;

        assert(!has_ts || s == e);
        if (!fits(a, 1, has_ts && !cert) || n >= MAX_SPANS_PER_KEY)
                return -ENOSPC;
        if (n == 1)
                m = core_malloc(span_cap(2) * sizeof(Span));
        else if (grow)
                m = core_realloc(k->s.many, span_cap(n + 1) * sizeof(Span));
        if (grow && !m)
                return -ENOMEM;

        /* Nothing fails below. */
        if (has_ts && !cert) {
                x.unc = UNC_ONE;
                a->n_unc++;
        }
        if (n == 0)
                k->s.one = x;
        else {
                Span *arr = grow ? m : k->s.many;

                if (n == 1) {
                        arr[0] = k->s.one;
                        a->bytes_many += span_cap(2) * sizeof(Span);
                } else if (grow)
                        a->bytes_many += (span_cap(n + 1) - span_cap(n)) * sizeof(Span);
                memmove(arr + pos + 1, arr + pos, (n - pos) * sizeof(Span));
                arr[pos] = x;
                k->s.many = arr;
        }
        k->n_spans = n + 1;
        a->n_spans++;
        /* m is owned by the key (a union cppcheck cannot follow) */
        /* cppcheck-suppress memleak */
        return 1;
}

/* ---- public ---- */

int agg_new(const AggConfig *cfg, usec_t horizon, Agg **ret) {
        Agg *a;

        assert(cfg && ret);
        if (cfg->gap <= 0)
                return -EINVAL;
        a = core_calloc(1, sizeof(Agg));
        if (!a)
                return -ENOMEM;
        a->gap = cfg->gap;
        a->max_events = cfg->max_events;
        a->seed = mix64(cfg->hash_seed ^ UINT64_C(0x243f6a8885a308d3));
        a->horizon = horizon;
        a->q_base = horizon / USEC_PER_SEC - HEAP_Q_SPAN;
        a->free_key = a->dirty_head = a->dirty_tail = NONE;
        a->slots = core_calloc(MIN_SLOTS, sizeof(uint32_t));
        a->mask = MIN_SLOTS - 1;
        if (!a->slots || intern_new(cfg->hash_seed, &a->strings) < 0)
                return agg_free(a), -ENOMEM;
        *ret = a;
        return 0;
}

static void batch_free(FlushBatch *b) {
        BatchPriv *p;

        if (!b)
                return;
        p = b->priv;
        if (p) {
                free(p->keys);
                free(p->pool);
                free(p);
        }
        free(b->fragments);
        free(b);
}

Agg *agg_free(Agg *a) {
        if (!a)
                return NULL;
        for (uint32_t i = 0; i < a->keys_used; i++) {
                Key *k = key_at(a, i);

                if (k->controller && k->n_spans >= 2)
                        free(k->s.many);
        }
        for (uint32_t i = 0; i < a->n_chunks; i++)
                free(a->chunks[i]);
        free(a->chunks);
        for (uint32_t i = 1; i < a->uvecs_used; i++)
                free(a->uvecs[i].ts);   /* free entries have ts NULL */
        free(a->uvecs);
        free(a->slots);
        for (uint32_t i = 0; i < a->n_hchunks; i++)
                free(a->hchunks[i]);
        free(a->hchunks);
        batch_free(a->batch);
        intern_free(a->strings);
        free(a);
        return NULL;
}

/* Finds or creates the key; a new key must have room for one span and unc uncertain
 * timestamps. Creation is all-or-nothing; *created tells the caller to destroy the key again
 * if its own step fails. */
static int key_get(Agg *a, const char *controller_id, const char *outage_type, uint64_t unc,
                   uint32_t *ret, bool *created) {
        uint32_t idx = key_find_str(a, controller_id, outage_type), c, t;
        int r;

        *created = false;
        if (idx != NONE) {
                *ret = idx;
                return 0;
        }
        if (!fits(a, 1, unc))
                return -ENOSPC;
        r = key_reserve(a);
        if (r < 0)
                return r;
        r = intern_ref(a->strings, controller_id, &c);
        if (r < 0)
                return r;
        r = intern_ref(a->strings, outage_type, &t);
        if (r < 0) {
                intern_unref(a->strings, c);
                return r;
        }
        *ret = key_create(a, c, t);
        *created = true;
        return 0;
}

int agg_add(Agg *a, const char *controller_id, const char *outage_type, usec_t ts) {
        uint32_t idx;
        bool created, cert;
        size_t lo, n_touch;
        Key *k;
        Span *sp;
        int r;

        assert(a && controller_id && outage_type);
        cert = certain(a, ts);
        r = key_get(a, controller_id, outage_type, !cert, &idx, &created);
        if (r < 0)
                return r;
        k = key_at(a, idx);

        if (created) {
                r = spans_add(a, k, 0, ts, ts, true, cert);
                if (r < 0) {
                        key_destroy(a, idx);
                        return r;
                }
                key_mark_dirty(a, idx);
                return 1;
        }

        n_touch = spans_touching(a, k, ts, ts, &lo);
        if (n_touch == 0)
                r = spans_add(a, k, lo, ts, ts, true, cert);
        else {
                sp = key_spans(k);
                if (sp[lo].start <= ts && ts <= sp[lo].end)
                        return 0;       /* inside a span: by SPEC it changes nothing */
                if (n_touch == 1 && cert && !sp[lo].unc) {
                        /* the steady-state path: extend one span, no allocation */
                        if (ts < sp[lo].start)
                                sp[lo].start = ts;
                        else
                                sp[lo].end = ts;
                        sp[lo].count = add_count(sp[lo].count, 1);
                        r = 1;
                } else
                        r = spans_merge(a, k, lo, lo + n_touch - 1, ts, ts, true, ts, cert);
        }
        if (r < 0)
                return r;
        key_mark_dirty(a, idx);
        return 1;
}

int agg_load(Agg *a, const char *controller_id, const char *outage_type, usec_t start, usec_t end) {
        uint32_t idx;
        bool created;
        size_t lo, n_touch;
        Key *k;
        int r;

        assert(a && controller_id && outage_type);
        if (start > end)
                return -EINVAL;
        r = key_get(a, controller_id, outage_type, 0, &idx, &created);
        if (r < 0)
                return r;
        k = key_at(a, idx);

        if (created) {
                r = spans_add(a, k, 0, start, end, false, false);
                if (r < 0) {
                        key_destroy(a, idx);
                        return r;
                }
                heap_insert(a, idx);
                return 0;
        } else {
                n_touch = spans_touching(a, k, start, end, &lo);
                if (n_touch == 0)
                        r = spans_add(a, k, lo, start, end, false, false);
                else if (n_touch == 1 && key_spans(k)[lo].start <= start && end <= key_spans(k)[lo].end)
                        return 0;
                else
                        r = spans_merge(a, k, lo, lo + n_touch - 1, start, end, false, 0, false);
                if (r < 0)
                        return r;
        }
        if (!k->dirty)
                heap_update(a, idx);
        return 0;
}

void agg_skip_stored(Agg *a, usec_t end) {
        assert(a);
        if (end >= a->horizon)
                a->horizon = add_sat(end, 1);
}

int agg_flush_begin(Agg *a, size_t max, FlushBatch **ret) {
        size_t n = 0, n_unc = 0, pool_at = 0;
        BatchPriv *p;
        FlushBatch *b;

        assert(a && ret);
        if (a->batch)
                return -EBUSY;

        /* Pass 1: size the batch, so that nothing can fail once spans start to change. */
        for (uint32_t i = a->dirty_head; i != NONE && (max == 0 || n < max); i = key_at(a, i)->next) {
                Key *k = key_at(a, i);
                Span *sp = key_spans(k);

                for (size_t j = 0; j < k->n_spans && (max == 0 || n < max); j++)
                        if (span_dirty(a, &sp[j])) {
                                n++;
                                n_unc += span_unc_n(a, &sp[j]);
                        }
        }

        b = core_calloc(1, sizeof(FlushBatch));
        if (!b)
                return -ENOMEM;
        b->priv = p = core_calloc(1, sizeof(BatchPriv));
        if (!p)
                goto oom;
        if (n > 0) {
                b->fragments = core_calloc(n, sizeof(Fragment));
                p->keys = core_calloc(n, sizeof(uint32_t));
                if (!b->fragments || !p->keys)
                        goto oom;
        }
        if (n_unc > 0) {
                p->pool = core_malloc(n_unc * sizeof(usec_t));
                if (!p->pool)
                        goto oom;
        }

        /* Pass 2: move counts and copy uncertain timestamps out. The UVec keeps its buffer
         * (n = 0, inflight = what left), so a failed batch can give them back in place. */
        while (a->dirty_head != NONE && b->n < n) {
                uint32_t idx = a->dirty_head;
                Key *k = key_at(a, idx);
                Span *sp = key_spans(k);
                bool rest = false;

                for (size_t j = 0; j < k->n_spans; j++) {
                        Fragment *f;

                        if (!span_dirty(a, &sp[j]))
                                continue;
                        if (b->n == n) {
                                rest = true;
                                break;
                        }
                        f = &b->fragments[b->n];
                        p->keys[b->n++] = idx;
                        *f = (Fragment) {
                                .controller_id = intern_str(a->strings, k->controller),
                                .outage_type = intern_str(a->strings, k->type),
                                .start = sp[j].start,
                                .end = sp[j].end,
                                .count = sp[j].count,
                        };
                        sp[j].count = 0;
                        if (sp[j].unc == UNC_ONE) {
                                p->pool[pool_at] = sp[j].start;
                                f->uncertain = p->pool + pool_at++;
                                f->n_uncertain = 1;
                                sp[j].unc = UNC_ONE_OUT;
                        } else if (unc_vec(sp[j].unc) && a->uvecs[sp[j].unc].n > 0) {
                                UVec *u = &a->uvecs[sp[j].unc];

                                memcpy(p->pool + pool_at, u->ts, u->n * sizeof(usec_t));
                                sort_usec(p->pool + pool_at, u->n);
                                f->uncertain = p->pool + pool_at;
                                f->n_uncertain = u->n;
                                pool_at += u->n;
                                u->inflight += u->n;
                                uvec_set_n(a, u, 0);
                        }
                }
                if (rest)
                        break;
                a->dirty_head = k->next;
                if (a->dirty_head == NONE)
                        a->dirty_tail = NONE;
                k->dirty = false;
                a->n_dirty_keys--;
                k->next = NONE;
                heap_insert(a, idx);
        }
        assert(b->n == n && pool_at == n_unc);
        b->complete = a->dirty_head == NONE;
        p->n_pool = n_unc;
        a->batch = b;
        *ret = b;
        return 0;

oom:
        batch_free(b);
        return -ENOMEM;
}

static bool span_find(Key *k, usec_t t, size_t *ret);


/* Puts m timestamps of the batch back into u, in the room kept for them. */
static void uvec_give_back(Agg *a, UVec *u, const usec_t *ts, uint32_t m) {
        assert(u->inflight >= m);
        u->inflight -= m;
        uvec_append(a, u, ts, m);
}

void agg_flush_end(Agg *a, FlushBatch *b, bool committed) {
        BatchPriv *p;

        assert(a && b && a->batch == b);
        p = b->priv;
        for (size_t i = 0; i < b->n; i++) {
                const Fragment *f = &b->fragments[i];
                Key *k = key_at(a, p->keys[i]);
                size_t at = 0;
                bool found = span_find(k, f->start, &at);
                Span *s = &key_spans(k)[at];

                /* There is exactly one while a batch is outstanding. */
                assert(found);
                (void) found;

                if (f->n_uncertain > 0 && s->unc == UNC_ONE_OUT) {
                        /* untouched since (a change would have made it a vector) */
                        assert(f->n_uncertain == 1 && f->uncertain[0] == s->start);
                        if (committed) {
                                a->n_unc--;
                                s->unc = 0;
                        } else
                                s->unc = UNC_ONE;
                } else if (f->n_uncertain > 0) {
                        UVec *u;

                        assert(unc_vec(s->unc));
                        u = &a->uvecs[s->unc];
                        if (committed) {
                                u->inflight -= f->n_uncertain;
                                a->n_unc -= f->n_uncertain;
                        } else
                                uvec_give_back(a, u, f->uncertain, f->n_uncertain);
                        if (u->n == 0 && u->inflight == 0) {
                                uvec_release(a, s->unc);
                                s->unc = 0;
                        } else if (committed)
                                uvec_trim(a, u);
                }
                if (!committed) {
                        s->count = add_count(s->count, f->count);
                        if (span_dirty(a, s))
                                key_mark_dirty(a, p->keys[i]);
                }
        }
        a->batch = NULL;
        batch_free(b);
}

/* The index of the span of k that contains t, if any. */
static bool span_find(Key *k, usec_t t, size_t *ret) {
        Span *sp = key_spans(k);
        size_t l = 0, r = k->n_spans;

        while (l < r) {
                size_t m = l + (r - l) / 2;

                if (sp[m].end < t)
                        l = m + 1;
                else
                        r = m;
        }
        if (l == k->n_spans || sp[l].start > t)
                return false;
        *ret = l;
        return true;
}

/* Takes a dirty key off the dirty list: O(dirty keys). */
static void dirty_unlink(Agg *a, uint32_t idx) {
        Key *k = key_at(a, idx);
        uint32_t prev = NONE;

        assert(k->dirty);
        for (uint32_t i = a->dirty_head; i != idx; i = key_at(a, i)->next) {
                assert(i != NONE);
                prev = i;
        }
        if (prev == NONE)
                a->dirty_head = k->next;
        else
                key_at(a, prev)->next = k->next;
        if (a->dirty_tail == idx)
                a->dirty_tail = prev;
        k->next = NONE;
        k->dirty = false;
        a->n_dirty_keys--;
}

static bool key_has_dirty(const Agg *a, Key *k) {
        const Span *sp = key_spans(k);

        for (size_t j = 0; j < k->n_spans; j++)
                if (span_dirty(a, &sp[j]))
                        return true;
        return false;
}

/* Drops span j of a key with everything it holds, raising the horizon past it; destroys the
 * key when it was the last, and keeps the dirty list and the heap right otherwise. Returns
 * the reports to flush it held (count and uncertain). */
static uint64_t span_drop(Agg *a, uint32_t idx, size_t j) {
        Key *k = key_at(a, idx);
        Span *sp = key_spans(k);
        uint64_t n = sp[j].count;

        if (sp[j].unc == UNC_ONE || sp[j].unc == UNC_ONE_OUT) {
                n += sp[j].unc == UNC_ONE;
                a->n_unc--;
                sp[j].unc = 0;
        } else if (sp[j].unc) {
                UVec *u = &a->uvecs[sp[j].unc];

                n += u->n;
                a->n_unc -= (uint64_t) u->n + u->inflight;
                uvec_set_n(a, u, 0);
                uvec_release(a, sp[j].unc);
                sp[j].unc = 0;
        }
        if (sp[j].end + 1 > a->horizon)
                a->horizon = sp[j].end + 1;
        if (k->n_spans == 1) {
                k->n_spans = 0;
                a->n_spans--;
                if (k->dirty)
                        dirty_unlink(a, idx);
                else
                        heap_remove(a, idx);
                key_destroy(a, idx);
        } else {
                spans_remove(a, k, j, j);
                if (!k->dirty)
                        heap_update(a, idx);
                else if (!key_has_dirty(a, k)) {
                        dirty_unlink(a, idx);
                        heap_insert(a, idx);
                }
        }
        return n;
}

uint64_t agg_flush_refuse(Agg *a, FlushBatch *b) {
        BatchPriv *p;
        uint64_t dropped = 0;

        assert(a && b && a->batch == b);
        p = b->priv;
        for (size_t i = 0; i < b->n; i++) {
                uint32_t idx = p->keys[i];
                Key *k = key_at(a, idx);
                size_t j;

                /* gone with an earlier fragment of the batch (a merge made them one span) */
                if (!k->controller || !span_find(k, b->fragments[i].start, &j))
                        continue;
                dropped += span_drop(a, idx, j);
        }
        a->batch = NULL;
        batch_free(b);
        return dropped;
}

/* Drops span 0 of a clean key, raising the horizon; destroys the key when it was the last. */
static void evict_first(Agg *a, uint32_t idx) {
        Key *k = key_at(a, idx);
        Span *sp = key_spans(k);

        assert(!k->dirty && !sp[0].unc && sp[0].count == 0);
        if (sp[0].end + 1 > a->horizon)
                a->horizon = sp[0].end + 1;
        if (k->n_spans == 1) {
                k->n_spans = 0;
                a->n_spans--;
                heap_remove(a, idx);
                key_destroy(a, idx);
        } else {
                spans_remove(a, k, 0, 0);
                heap_update(a, idx);
        }
}

int agg_evict_closed(Agg *a, usec_t now) {
        uint64_t dropped = 0;

        assert(a);
        if (a->batch)
                return -EBUSY;
        while (a->heap_n > 0 && add_sat(key_end(a, *heap_kp(a, 0)), a->gap) < now) {
                evict_first(a, *heap_kp(a, 0));
                dropped++;
        }
        return dropped > INT_MAX ? INT_MAX : (int) dropped;
}

int agg_evict_oldest(Agg *a, uint64_t n) {
        uint64_t dropped = 0;

        assert(a);
        if (a->batch)
                return -EBUSY;
        if (n > INT_MAX)
                n = INT_MAX;
        while (dropped < n && a->heap_n > 0) {
                evict_first(a, *heap_kp(a, 0));
                dropped++;
        }
        return (int) dropped;
}

void agg_stats(const Agg *a, usec_t now, AggStats *ret) {
        uint64_t dirty = 0, open = 0;
        size_t bytes;

        assert(a && ret);
        for (uint32_t i = a->dirty_head; i != NONE; i = key_at(a, i)->next) {
                Key *k = key_at(a, i);
                const Span *sp = key_spans(k);

                for (size_t j = 0; j < k->n_spans; j++)
                        dirty += span_dirty(a, &sp[j]);
        }
        for (uint32_t i = 0; i < a->keys_used; i++) {
                Key *k = key_at(a, i);
                const Span *sp;

                if (!k->controller)
                        continue;
                sp = key_spans(k);
                /* spans are sorted by end too: count from the newest down */
                for (size_t j = k->n_spans; j-- > 0 && add_sat(sp[j].end, a->gap) >= now;)
                        open++;
        }
        bytes = sizeof(Agg) + (size_t) a->n_chunks * KEY_CHUNK * sizeof(Key) +
                (size_t) a->chunks_cap * sizeof(Key *) + (size_t) (a->mask + 1) * sizeof(uint32_t) +
                (size_t) a->n_hchunks * sizeof(HeapChunk) + (size_t) a->hchunks_cap * sizeof(HeapChunk *) +
                (size_t) a->uvecs_cap * sizeof(UVec) + a->bytes_many + a->bytes_unc +
                intern_bytes(a->strings);
        if (a->batch) {
                const BatchPriv *p = a->batch->priv;

                bytes += sizeof(FlushBatch) + sizeof(BatchPriv) +
                        a->batch->n * (sizeof(Fragment) + sizeof(uint32_t)) + p->n_pool * sizeof(usec_t);
        }
        *ret = (AggStats) {
                .keys = a->n_keys,
                .spans = a->n_spans,
                .dirty_spans = dirty,
                .uncertain = a->n_unc,
                .open_spans = open,
                .strings = intern_count(a->strings),
                .bytes = bytes,
                .string_bytes = intern_bytes(a->strings),
                .horizon = a->horizon,
        };
}

size_t agg_key_spans(const Agg *a, const char *controller_id, const char *outage_type,
                     AggSpan *ret, size_t max) {
        uint32_t idx;
        Key *k;
        const Span *sp;

        assert(a && controller_id && outage_type && (ret || max == 0));
        idx = key_find_str(a, controller_id, outage_type);
        if (idx == NONE)
                return 0;
        k = key_at(a, idx);
        sp = key_spans(k);
        for (size_t j = 0; j < k->n_spans && j < max; j++)
                ret[j] = (AggSpan) {
                        .start = sp[j].start,
                        .end = sp[j].end,
                        .count = sp[j].count,
                        .n_uncertain = span_unc_n(a, &sp[j]),
                };
        return k->n_spans;
}

uint64_t agg_dirty_count(const Agg *a) {
        return a->n_dirty_keys;
}

uint64_t agg_span_count(const Agg *a) {
        return a->n_spans;
}

uint64_t agg_event_count(const Agg *a) {
        return a->n_spans + a->n_unc / AGG_UNCERTAIN_PER_EVENT;
}

bool agg_flush_wanted(const Agg *a) {
        return a->n_unc_full > 0;
}

/* ---- invariants, for tests ---- */

static const char *check_key(const Agg *a, uint32_t idx, uint64_t *spans, uint64_t *unc,
                             uint64_t *n_uvecs, uint64_t *full, size_t *bytes_unc, size_t *bytes_many) {
        Key *k = key_at(a, idx);
        const Span *sp;
        bool dirty = false;

        if (key_find(a, k->controller, k->type) != idx)
                return "a key is not found from its ids";
        if (intern_find(a->strings, intern_str(a->strings, k->controller)) != k->controller ||
            intern_find(a->strings, intern_str(a->strings, k->type)) != k->type)
                return "a key's strings are not interned";
        if (k->n_spans == 0)
                return "a key without spans";
        sp = key_spans(k);
        *spans += k->n_spans;
        if (k->n_spans >= 2)
                *bytes_many += span_cap(k->n_spans) * sizeof(Span);
        for (size_t j = 0; j < k->n_spans; j++) {
                if (sp[j].start > sp[j].end)
                        return "a span ends before it starts";
                if (j > 0 && add_sat(sp[j - 1].end, a->gap) >= sp[j].start)
                        return "two spans of a key within gap";
                dirty |= span_dirty(a, &sp[j]);
                if (sp[j].unc == UNC_ONE || sp[j].unc == UNC_ONE_OUT) {
                        if (sp[j].unc == UNC_ONE_OUT && !a->batch)
                                return "uncertain timestamps in flight without a batch";
                        (*unc)++;
                } else if (sp[j].unc) {
                        const UVec *u;

                        if (sp[j].unc >= a->uvecs_used)
                                return "a span's uncertain vector is out of range";
                        u = &a->uvecs[sp[j].unc];
                        if (!u->ts || (uint64_t) u->n + u->inflight > u->cap)
                                return "an uncertain vector without the room it needs";
                        if (u->n + u->inflight == 0)
                                return "an empty uncertain vector is kept";
                        if (u->inflight && !a->batch)
                                return "uncertain timestamps in flight without a batch";
                        for (uint32_t i = 0; i < u->n; i++)
                                if (u->ts[i] < sp[j].start || u->ts[i] > sp[j].end)
                                        return "an uncertain timestamp outside its span";
                        *unc += (uint64_t) u->n + u->inflight;
                        (*n_uvecs)++;
                        *full += u->n >= AGG_UNCERTAIN_FLUSH_AT;
                        *bytes_unc += (size_t) u->cap * sizeof(usec_t);
                }
        }
        if (dirty && !k->dirty)
                return "a key with something to flush is not in the dirty list";
        if (!dirty && k->dirty)
                return "a key in the dirty list has nothing to flush";
        return NULL;
}

/* The heap holds exactly the clean keys, each where its record says, with its oldest end. */
static const char *check_heap(const Agg *a) {
        uint64_t clean = 0;

        if (heap_cap(a) < a->n_keys)
                return "heap without room for every key";
        if (heap_cap(a) >= (size_t) a->n_keys + 2 * HEAP_CHUNK)
                return "heap chunks kept beyond what the keys need";
        for (size_t i = 0; i < a->heap_n; i++) {
                Key *k;

                if (*heap_kp(a, i) >= a->keys_used)
                        return "a heap entry out of range";
                k = key_at(a, *heap_kp(a, i));
                if (!k->controller || !k->heaped || k->dirty || k->next != i)
                        return "a heap entry of a key that is not clean there";
                /* the parent's key was checked before */
                if (i > 0 && heap_less_at(a, i, (i - 1) / 2))
                        return "heap order broken";
                if (*heap_qp(a, i) != heap_q(a, key_spans(k)[0].end))
                        return "a heap entry with a wrong end";
        }
        for (uint32_t i = 0; i < a->keys_used; i++) {
                const Key *k = key_at(a, i);

                if (!k->controller)
                        continue;
                if (k->dirty == k->heaped)
                        return "a key neither dirty nor in the heap, or both";
                clean += k->heaped;
        }
        if (clean != a->heap_n)
                return "heap size wrong";
        return NULL;
}

const char *agg_check(const Agg *a) {
        uint64_t spans = 0, unc = 0, n_uvecs = 0, full = 0, n_keys = 0, n_free = 0, n_dirty = 0;
        size_t bytes_unc = 0, bytes_many = 0;
        const char *err;

        assert(a);
        for (uint32_t i = 0; i < a->keys_used; i++) {
                if (!key_at(a, i)->controller)
                        continue;
                n_keys++;
                err = check_key(a, i, &spans, &unc, &n_uvecs, &full, &bytes_unc, &bytes_many);
                if (err)
                        return err;
        }
        for (uint32_t i = a->free_key; i != NONE; i = key_at(a, i)->next)
                if (++n_free > a->keys_used || key_at(a, i)->controller)
                        return "the free list of key records is broken";
        for (uint32_t i = a->dirty_head; i != NONE; i = key_at(a, i)->next) {
                if (++n_dirty > n_keys || !key_at(a, i)->dirty)
                        return "the dirty list is broken";
                if (key_at(a, i)->next == NONE && a->dirty_tail != i)
                        return "the dirty list's tail is wrong";
        }
        if (n_keys != a->n_keys || n_keys + n_free != a->keys_used)
                return "key counts disagree";
        if (n_uvecs != a->uvecs_live || (a->uvecs_live == 0 && (a->uvecs || a->uvecs_cap)))
                return "live uncertain vectors miscounted, or their table kept without one";
        for (uint32_t i = a->free_uvec; i; i = a->uvecs[i].n)
                if (++n_uvecs >= a->uvecs_used || a->uvecs[i].ts)
                        return "the free list of uncertain vectors is broken";
        if (a->uvecs_used > 0 && n_uvecs + 1 != a->uvecs_used)
                return "uncertain vectors leaked";
        if (n_dirty != a->n_dirty_keys)
                return "dirty key count wrong";
        if (spans != a->n_spans)
                return "span count wrong";
        if (unc != a->n_unc || full != a->n_unc_full)
                return "uncertain timestamp counts wrong";
        if (bytes_unc != a->bytes_unc || bytes_many != a->bytes_many)
                return "byte accounting wrong";
        if ((uint64_t) a->n_keys * 4 > (uint64_t) (a->mask + 1) * 3)
                return "key table over its load factor";
        err = check_heap(a);
        if (err)
                return err;
        return intern_check(a->strings);
}
