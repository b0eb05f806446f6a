/* test_agg_alloc.c — allocation failures in the aggregation core (daemon/agg.c, intern.c).
 * A fixed sequence of operations (certain and uncertain reports, loads, merges, batches
 * committed, failed and refused, evictions, skips) first runs without failures, as the
 * model; then once per allocation it makes, with that allocation failing (core_alloc_fail).
 * The operation that meets the failure must return -ENOMEM with the state unchanged, or,
 * where the allocation only shrinks a buffer, go on as if nothing happened; a retry must
 * then give the model's result; from there on every step must give the model's result and
 * batches, and leave the model's state for a while (then at the end), and the Agg's
 * invariants must hold (agg_check). */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>

#include "agg.h"
#include "intern.h"

#define GAP ((usec_t) 10)
#define NOW ((usec_t) 1200)             /* for the open-span count of the state */
#define MAX_OPS 4400
#define WINDOW 64                       /* steps after a failure whose whole state is compared */

typedef enum OpType {
        OP_ADD,
        OP_LOAD,
        OP_BEGIN,
        OP_END,
        OP_REFUSE,
        OP_EVICT_CLOSED,
        OP_EVICT_OLDEST,
        OP_SKIP,
} OpType;

typedef struct Op {
        OpType type;
        int key;
        usec_t t1, t2;
        uint64_t n;                     /* BEGIN: max; EVICT_OLDEST: how many */
        bool commit;                    /* END */
} Op;

typedef struct Scenario {
        Op ops[MAX_OPS];
        size_t n_ops;
        size_t sweep_from;              /* allocations fail from this step on; 0: agg_new too */
        int n_keys;
        bool wide;                      /* one controller per key (thousands of keys) */
        usec_t horizon;
        uint64_t max_events;
} Scenario;

/* The model: what each step returned and left, from the run without failures. */
typedef struct Model {
        int64_t result[MAX_OPS];
        uint64_t state[MAX_OPS];
        uint64_t batch[MAX_OPS];
        long allocs[MAX_OPS];           /* counted allocations up to the end of each step */
        long allocs_new;                /* those of agg_new() */
} Model;

typedef struct Run {
        Agg *a;
        FlushBatch *b;
} Run;

static bool counting;
static long alloc_count, fail_at;

static bool fail_nth(void) {
        return counting && ++alloc_count == fail_at;
}

typedef struct Rng {
        uint64_t s;
} Rng;

static uint64_t rnd(Rng *r, uint64_t n) {
        uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return (z ^ (z >> 31)) % n;
}

static const char *key_controller(const Scenario *sc, int k, char *buf, size_t len) {
        snprintf(buf, len, "ctrl_%05d", sc->wide ? k : k / 2);
        return buf;
}

static const char *key_type(int k) {
        return k % 2 ? "lamp_outage" : "panel_outage";
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++)
                h = (h ^ b[i]) * UINT64_C(0x100000001b3);
        return h;
}

#define FNV(h, x) fnv((h), &(x), sizeof(x))

/* Everything the interface shows of the state. */
static uint64_t state_digest(const Scenario *sc, const Agg *a) {
        uint64_t h = UINT64_C(0xcbf29ce484222325), v;
        AggStats st;
        char id[32];

        agg_stats(a, NOW, &st);
        h = FNV(h, st.keys);
        h = FNV(h, st.spans);
        h = FNV(h, st.dirty_spans);
        h = FNV(h, st.uncertain);
        h = FNV(h, st.open_spans);
        h = FNV(h, st.strings);
        h = FNV(h, st.horizon);
        v = agg_dirty_count(a);
        h = FNV(h, v);
        v = agg_event_count(a);
        h = FNV(h, v);
        v = agg_span_count(a);
        h = FNV(h, v);
        v = agg_flush_wanted(a);
        h = FNV(h, v);
        for (int k = 0; k < sc->n_keys; k++) {
                AggSpan s[64];
                size_t n = agg_key_spans(a, key_controller(sc, k, id, sizeof id), key_type(k), s, 64);

                h = FNV(h, n);
                for (size_t j = 0; j < n && j < 64; j++) {
                        h = FNV(h, s[j].start);
                        h = FNV(h, s[j].end);
                        h = FNV(h, s[j].count);
                        h = FNV(h, s[j].n_uncertain);
                }
        }
        return h;
}

static uint64_t batch_digest(const FlushBatch *b) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);

        h = FNV(h, b->n);
        h = FNV(h, b->complete);
        for (size_t i = 0; i < b->n; i++) {
                const Fragment *f = &b->fragments[i];

                h = fnv(h, f->controller_id, strlen(f->controller_id) + 1);
                h = fnv(h, f->outage_type, strlen(f->outage_type) + 1);
                h = FNV(h, f->start);
                h = FNV(h, f->end);
                h = FNV(h, f->count);
                h = FNV(h, f->n_uncertain);
                h = fnv(h, f->uncertain, f->n_uncertain * sizeof(usec_t));
        }
        return h;
}

static int new_agg(const Scenario *sc, Agg **ret) {
        AggConfig cfg = { .gap = GAP, .max_events = sc->max_events, .hash_seed = 7 };

        return agg_new(&cfg, sc->horizon, ret);
}

static int64_t exec(const Scenario *sc, Run *r, const Op *op) {
        char id[32];
        const char *c = key_controller(sc, op->key, id, sizeof id), *t = key_type(op->key);
        int ret;

        switch (op->type) {
        case OP_ADD:
                return agg_add(r->a, c, t, op->t1);
        case OP_LOAD:
                return agg_load(r->a, c, t, op->t1, op->t2);
        case OP_BEGIN:
                cr_assert_null(r->b);
                ret = agg_flush_begin(r->a, op->n, &r->b);
                if (ret < 0)
                        cr_assert_null(r->b);
                return ret;
        case OP_END:
                agg_flush_end(r->a, r->b, op->commit);
                r->b = NULL;
                return 0;
        case OP_REFUSE: {
                uint64_t n = agg_flush_refuse(r->a, r->b);

                r->b = NULL;
                return (int64_t) n;
        }
        case OP_EVICT_CLOSED:
                return agg_evict_closed(r->a, op->t1);
        case OP_EVICT_OLDEST:
                return agg_evict_oldest(r->a, op->n);
        case OP_SKIP:
                agg_skip_stored(r->a, op->t1);
                return 0;
        }
        cr_assert_fail("unknown op");
        return 0;
}

static void check(const Agg *a, const char *when, size_t step) {
        const char *err = agg_check(a);

        cr_assert_null(err, "fail_at %ld, %s step %zu: %s", fail_at, when, step, err);
}

static void run_model(const Scenario *sc, Model *m, long *ret_allocs) {
        Run r = {};

        counting = sc->sweep_from == 0;
        cr_assert_eq(new_agg(sc, &r.a), 0);
        m->allocs_new = alloc_count;
        for (size_t i = 0; i < sc->n_ops; i++) {
                if (i == sc->sweep_from)
                        counting = true;
                m->result[i] = exec(sc, &r, &sc->ops[i]);
                m->allocs[i] = alloc_count;
                m->state[i] = i + 1 >= sc->sweep_from ? state_digest(sc, r.a) : 0;
                m->batch[i] = sc->ops[i].type == OP_BEGIN && r.b ? batch_digest(r.b) : 0;
                if (i % 64 == 0)
                        check(r.a, "model", i);
        }
        check(r.a, "model end", sc->n_ops);
        counting = false;
        cr_assert_null(r.b, "the scenario ends with no batch out");
        agg_free(r.a);
        *ret_allocs = alloc_count;
}

/* Runs the scenario with allocation number f (counted from sweep_from) failing. Returns
 * whether an operation returned -ENOMEM for it. */
static bool run_failing(const Scenario *sc, const Model *m, long f) {
        size_t at = SIZE_MAX;           /* the step that meets the failure */
        bool failed = false;
        Run r = {};
        int ret;

        alloc_count = 0;
        fail_at = f;
        counting = sc->sweep_from == 0;
        ret = new_agg(sc, &r.a);
        if (ret < 0) {
                cr_assert_eq(ret, -ENOMEM);
                cr_assert_null(r.a);
                cr_assert_leq(f, m->allocs_new);
                failed = true;
                at = 0;         /* compare from the first step on */
                cr_assert_eq(new_agg(sc, &r.a), 0);
        } else
                cr_assert_gt(f, m->allocs_new, "agg_new met the failure and succeeded");
        for (size_t i = 0; i < sc->n_ops && at == SIZE_MAX; i++)
                if (m->allocs[i] >= f)
                        at = i;
        cr_assert_neq(at, SIZE_MAX);
        for (size_t i = 0; i < sc->n_ops; i++) {
                const Op *op = &sc->ops[i];
                uint64_t before = 0;
                int64_t res;

                if (i == sc->sweep_from)
                        counting = true;
                if (i == at)
                        before = i > 0 ? m->state[i - 1] : state_digest(sc, r.a);
                res = exec(sc, &r, op);
                if (res == -ENOMEM) {
                        cr_assert_eq(i, at, "fail_at %ld: step %zu: -ENOMEM without the injected failure",
                                     f, i);
                        cr_assert(op->type == OP_ADD || op->type == OP_LOAD || op->type == OP_BEGIN,
                                  "fail_at %ld: step %zu (op %d) returned -ENOMEM", f, i, op->type);
                        cr_assert_eq(state_digest(sc, r.a), before, "fail_at %ld: step %zu (op %d): "
                                     "-ENOMEM changed the state", f, i, op->type);
                        check(r.a, "failed", i);
                        failed = true;
                        res = exec(sc, &r, op);
                }
                if (i < at)
                        continue;       /* nothing failed yet: the model's run exactly */
                cr_assert_eq(res, m->result[i], "fail_at %ld: step %zu (op %d): %" PRId64 ", model %"
                             PRId64, f, i, op->type, res, m->result[i]);
                if (i < at + WINDOW || i + 1 == sc->n_ops)
                        cr_assert_eq(state_digest(sc, r.a), m->state[i], "fail_at %ld: step %zu (op %d): "
                                     "state differs from the model", f, i, op->type);
                if (op->type == OP_BEGIN)
                        cr_assert_eq(batch_digest(r.b), m->batch[i], "fail_at %ld: step %zu: batch "
                                     "differs from the model", f, i);
                if (i == at || (i - at) % 32 == 0)
                        check(r.a, "after", i);
        }
        check(r.a, "end", sc->n_ops);
        counting = false;
        agg_free(r.a);
        return failed;
}

static void sweep(const Scenario *sc, long min_allocs) {
        Model *m = calloc(1, sizeof(Model));
        long total, enomem = 0;

        cr_assert_not_null(m);
        core_alloc_fail = fail_nth;
        alloc_count = 0;
        fail_at = 0;
        run_model(sc, m, &total);
        cr_assert_geq(total, min_allocs, "only %ld allocations: the scenario lost its reach", total);
        for (long f = 1; f <= total; f++)
                enomem += run_failing(sc, m, f);
        core_alloc_fail = NULL;
        cr_log_info("%ld allocations failed in turn, %ld of them met with -ENOMEM\n", total, enomem);
        cr_assert_gt(enomem, total / 2);
        free(m);
}

static void push(Scenario *sc, Op op) {
        cr_assert_lt(sc->n_ops, (size_t) MAX_OPS);
        sc->ops[sc->n_ops++] = op;
}

static void push_add(Scenario *sc, int key, usec_t ts) {
        push(sc, (Op) { .type = OP_ADD, .key = key, .t1 = ts });
}

/* Uncertain vectors that grow by doubling, merge (two big ones bridged by one report) and
 * outnumber the first UVec table; then a random mix of everything. */
static void gen_mixed(Scenario *sc, Rng *rng, size_t n_ops, bool out) {
        usec_t next[80];

        for (int i = 0; i < 70; i++)
                push_add(sc, 0, -400 + 5 * i);
        for (int i = 0; i < 40; i++)
                push_add(sc, 1, -1000 + 5 * i);         /* -1000 .. -805 */
        for (int i = 0; i < 30; i++)
                push_add(sc, 1, -787 + 5 * i);          /* a span of its own */
        push_add(sc, 1, -796);                          /* bridges them */
        for (int k = 2; k < 26; k++)
                push_add(sc, k, -3000 + 100 * k);

        for (int k = 0; k < sc->n_keys; k++)
                next[k] = 900 + (usec_t) rnd(rng, 300);
        while (sc->n_ops < n_ops) {
                uint64_t p = rnd(rng, 100);
                int k = (int) rnd(rng, (uint64_t) sc->n_keys);

                if (out && p < 25) {
                        uint64_t e = rnd(rng, 10);

                        push(sc, (Op) { .type = e == 0 ? OP_REFUSE : OP_END, .commit = e >= 3 });
                        out = false;
                } else if (!out && p < 8) {
                        push(sc, (Op) { .type = OP_BEGIN, .n = rnd(rng, 7) });
                        out = true;
                } else if (p >= 25 && p < 30) {
                        usec_t s = 950 + (usec_t) rnd(rng, 600);

                        push(sc, (Op) { .type = OP_LOAD, .key = k, .t1 = s, .t2 = s + (usec_t) rnd(rng, 30) });
                } else if (p >= 30 && p < 33)
                        push(sc, (Op) { .type = OP_EVICT_CLOSED, .t1 = 1000 + (usec_t) rnd(rng, 800) });
                else if (p >= 33 && p < 35)
                        push(sc, (Op) { .type = OP_EVICT_OLDEST, .n = rnd(rng, 4) });
                else if (p == 35)
                        push(sc, (Op) { .type = OP_SKIP, .t1 = 900 + (usec_t) rnd(rng, 400) });
                else {
                        static const usec_t steps[] = { 1, 5, GAP, GAP + 1, 2 * GAP, -3, -GAP, -GAP - 1, -25 };

                        next[k] += steps[rnd(rng, ELEMENTSOF(steps))];
                        push_add(sc, k, next[k]);
                }
        }
        if (out)
                push(sc, (Op) { .type = OP_END, .commit = true });
        push(sc, (Op) { .type = OP_BEGIN });
        push(sc, (Op) { .type = OP_END, .commit = true });
}

Test(agg_alloc, every_allocation_fails_in_turn, .timeout = 600) {
        Scenario *sc = calloc(1, sizeof(Scenario));
        Rng rng = { 20261127 };

        cr_assert_not_null(sc);
        sc->n_keys = 80;                /* 40 controllers: the first id and key tables grow */
        sc->horizon = 1000;
        /* loads first, as a warm start does, some overlapping */
        for (int i = 0; i < 30; i++) {
                usec_t s = 1000 + (usec_t) rnd(&rng, 400);

                push(sc, (Op) { .type = OP_LOAD, .key = (int) rnd(&rng, 20), .t1 = s, .t2 = s + (usec_t) rnd(&rng, 30) });
        }
        gen_mixed(sc, &rng, 1000, false);
        sweep(sc, 300);
        free(sc);
}

Test(agg_alloc, every_allocation_fails_in_turn_under_max_events, .timeout = 600) {
        Scenario *sc = calloc(1, sizeof(Scenario));
        Rng rng = { 4242 };

        cr_assert_not_null(sc);
        sc->n_keys = 80;
        sc->horizon = 1000;
        sc->max_events = 40;
        gen_mixed(sc, &rng, 1000, false);
        sweep(sc, 100);
        free(sc);
}

/* Thousands of keys (set up without failures), then the allocations that come with more:
 * a second chunk of key records, a bigger id array, a batch of every key, and the shrinks
 * of a mass eviction. */
Test(agg_alloc, allocations_past_the_first_key_chunk_fail_in_turn, .timeout = 600) {
        Scenario *sc = calloc(1, sizeof(Scenario));

        cr_assert_not_null(sc);
        sc->wide = true;
        sc->n_keys = 4110;
        sc->horizon = 0;
        for (int k = 0; k < 4090; k++)
                push_add(sc, k, 1000 + k % 7);
        sc->sweep_from = sc->n_ops;
        for (int k = 4090; k < 4110; k++)
                push_add(sc, k, 1000);
        push(sc, (Op) { .type = OP_BEGIN, .n = 0 });
        push_add(sc, 7, 1005);
        push(sc, (Op) { .type = OP_END, .commit = true });
        push(sc, (Op) { .type = OP_EVICT_CLOSED, .t1 = 1012 });
        for (int k = 0; k < 40; k++)
                push_add(sc, k, 2000 + k);
        push(sc, (Op) { .type = OP_BEGIN, .n = 0 });
        push(sc, (Op) { .type = OP_END, .commit = false });
        push(sc, (Op) { .type = OP_BEGIN, .n = 0 });
        push(sc, (Op) { .type = OP_END, .commit = true });
        push(sc, (Op) { .type = OP_EVICT_CLOSED, .t1 = 3000 });
        sweep(sc, 20);
        free(sc);
}
