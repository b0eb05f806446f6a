/* test_agg_property.c — property tests of the aggregation core against the brute-force
 * reference of tests/reference.c (sort the distinct timestamps of a key, split where
 * consecutive ones are more than gap apart). Random report sets are fed in random or time
 * order, with redeliveries, flushes (some failing, some with reports arriving while the
 * batch is out), evictions, max_events pressure and simulated restarts (crash with journal
 * replay, or clean stop); flushed fragments go into a model store that applies the same
 * merge rule as the real one. Every case is seeded; a failure prints its seed
 * (AGG_PROPERTY_SEED=N reruns from N). */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "agg.h"
#include "reference.h"

#define GAP ((usec_t) 12)               /* small numbers make boundary collisions frequent */
#define MAX_KEYS 4
#define MAX_REPORTS 512
#define MAX_EVENTS 256

static bool tracing;

/* AGG_PROPERTY_TRACE=1 prints every operation of the cases run (use with one seed). */
_printf_(1, 2) static void trace(const char *fmt, ...) {
        va_list ap;

        if (!tracing)
                return;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
}

typedef struct Rng {
        uint64_t s;
} Rng;

static uint64_t rng_next(Rng *r) {
        uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static uint64_t rnd(Rng *r, uint64_t n) {
        return rng_next(r) % n;
}

typedef struct Report {
        int key;
        usec_t ts;
} Report;

typedef struct Event {
        usec_t start, end;
        uint64_t count;
} Event;

/* The model store: events per key, more than gap apart. */
typedef struct Store {
        Event ev[MAX_KEYS][MAX_EVENTS];
        size_t n[MAX_KEYS];
} Store;

static const char *const controllers[] = { "ctrl_1", "ctrl.2" };
static const char *const types[] = { "panel_outage", "lamp_outage" };

static const char *key_controller(int k) { return controllers[k / 2]; }
static const char *key_type(int k) { return types[k % 2]; }

static int key_of(const Fragment *f) {
        for (int k = 0; k < MAX_KEYS; k++)
                if (streq(f->controller_id, key_controller(k)) && streq(f->outage_type, key_type(k)))
                        return k;
        cr_assert_fail("unknown key %s/%s", f->controller_id, f->outage_type);
        return -1;
}

/* The store's rule (store.h): merge with every stored event within gap; union of spans, sum
 * of counts, plus the fragment's contribution: 0 if one stored event contains it, else its
 * count plus its uncertain timestamps that no pre-existing stored event contains. */
static void store_apply(Store *st, const Fragment *f) {
        int k = key_of(f);
        Event *ev = st->ev[k], merged = { f->start, f->end, 0 };
        bool inside = false;
        uint64_t contrib = 0;
        size_t m = 0;

        for (size_t i = 0; i < st->n[k]; i++)
                if (ev[i].start <= f->start && f->end <= ev[i].end)
                        inside = true;
        if (!inside) {
                contrib = f->count;
                for (uint32_t u = 0; u < f->n_uncertain; u++) {
                        bool contained = false;

                        for (size_t i = 0; i < st->n[k]; i++)
                                if (ev[i].start <= f->uncertain[u] && f->uncertain[u] <= ev[i].end)
                                        contained = true;
                        contrib += !contained;
                }
        }
        for (size_t i = 0; i < st->n[k]; i++) {
                if (ev[i].start <= f->end + GAP && ev[i].end + GAP >= f->start) {
                        merged.start = ev[i].start < merged.start ? ev[i].start : merged.start;
                        merged.end = ev[i].end > merged.end ? ev[i].end : merged.end;
                        merged.count += ev[i].count;
                } else
                        ev[m++] = ev[i];
        }
        merged.count += contrib;
        trace("  apply k%d %" PRId64 "-%" PRId64 " count %u unc %u -> %" PRId64 "-%" PRId64 " count %" PRIu64 "\n",
              k, f->start, f->end, f->count, f->n_uncertain, merged.start, merged.end, merged.count);
        cr_assert_lt(m, (size_t) MAX_EVENTS);
        ev[m++] = merged;
        st->n[k] = m;
}

typedef struct Sim {
        Rng rng;
        uint64_t seed;
        bool in_order;
        uint64_t max_events;
        Agg *agg;
        FlushBatch *batch;
        size_t batch_pos;               /* arrivals added when the outstanding batch began */
        Store store;
        Report arr[MAX_REPORTS];
        size_t n_arr, pos, committed_pos;
        usec_t max_ts;
} Sim;

static void sim_new_agg(Sim *s, usec_t horizon) {
        AggConfig cfg = { .gap = GAP, .max_events = s->max_events, .hash_seed = s->seed };

        cr_assert_eq(agg_new(&cfg, horizon, &s->agg), 0, "seed %" PRIu64, s->seed);
}

static usec_t sim_now(Sim *s) {
        return s->max_ts + (usec_t) rnd(&s->rng, 4 * GAP) - GAP;
}

static void sim_begin(Sim *s, size_t max) {
        cr_assert_eq(agg_flush_begin(s->agg, max, &s->batch), 0, "seed %" PRIu64, s->seed);
        trace("begin max %zu: %zu fragments\n", max, s->batch->n);
        s->batch_pos = s->pos;
}

static void sim_end(Sim *s, bool commit) {
        FlushBatch *b = s->batch;

        if (commit) {
                /* any order: fragments of one key one after another */
                size_t *order = calloc(b->n + 1, sizeof(size_t));

                cr_assert_not_null(order);
                for (size_t i = 0; i < b->n; i++)
                        order[i] = i;
                for (size_t i = b->n; i > 1; i--) {
                        size_t j = rnd(&s->rng, i), t = order[i - 1];

                        order[i - 1] = order[j];
                        order[j] = t;
                }
                for (size_t i = 0; i < b->n; i++)
                        store_apply(&s->store, &b->fragments[order[i]]);
                free(order);
                /* the journal checkpoint is the position when the batch was taken, if it
                 * took everything */
                if (b->complete)
                        s->committed_pos = s->batch_pos;
        }
        trace("end %s\n", commit ? "commit" : "fail");
        agg_flush_end(s->agg, b, commit);
        s->batch = NULL;
}

static void sim_flush_all(Sim *s) {
        for (;;) {
                size_t n;

                sim_begin(s, 0);
                n = s->batch->n;
                sim_end(s, true);
                if (n == 0)
                        return;
        }
}

static int sim_add_once(Sim *s, const Report *r) {
        int ret = agg_add(s->agg, key_controller(r->key), key_type(r->key), r->ts);

        trace("add k%d %" PRId64 " -> %d\n", r->key, r->ts, ret);
        return ret;
}

/* Adds a report the way the main loop does: on -ENOSPC flush, evict the oldest, retry. */
static bool sim_add(Sim *s, const Report *r) {
        for (int tries = 0;; tries++) {
                int ret = sim_add_once(s, r);

                if (ret >= 0) {
                        if (r->ts > s->max_ts)
                                s->max_ts = r->ts;
                        return true;
                }
                cr_assert_eq(ret, -ENOSPC, "seed %" PRIu64 ": agg_add %d", s->seed, ret);
                if (s->batch)
                        return false;           /* caller ends the batch first */
                cr_assert_lt(tries, 4, "seed %" PRIu64 ": -ENOSPC persists", s->seed);
                sim_flush_all(s);
                cr_assert_gt(agg_evict_oldest(s->agg, 1 + rnd(&s->rng, 2)), 0, "seed %" PRIu64, s->seed);
        }
}

static void sim_load(Sim *s, int k, const Event *e) {
        for (;;) {
                int r = agg_load(s->agg, key_controller(k), key_type(k), e->start, e->end);

                if (r == 0)
                        return;
                cr_assert_eq(r, -ENOSPC, "seed %" PRIu64, s->seed);
                cr_assert_gt(agg_evict_oldest(s->agg, 1), 0, "seed %" PRIu64, s->seed);
        }
}

/* A crash (memory and the outstanding batch lost, the journal replayed from the last
 * committed position) or a clean stop (everything flushed first); then a warm start. */
static void sim_restart(Sim *s) {
        bool crash = rnd(&s->rng, 2);
        usec_t now = s->max_ts + (usec_t) rnd(&s->rng, 3 * GAP), horizon = now - GAP;

        if (s->batch && !crash)
                sim_end(s, true);
        if (!crash)
                sim_flush_all(s);
        s->agg = agg_free(s->agg);
        s->batch = NULL;
        trace("restart %s horizon %" PRId64 "\n", crash ? "crash" : "clean", horizon);
        sim_new_agg(s, horizon);
        for (int k = 0; k < MAX_KEYS; k++)
                for (size_t i = 0; i < s->store.n[k]; i++)
                        if (s->store.ev[k][i].end >= horizon)
                                sim_load(s, k, &s->store.ev[k][i]);
        if (crash) {
                /* replay; pos follows it, so a flush forced by -ENOSPC checkpoints there */
                size_t end = s->pos;

                for (s->pos = s->committed_pos; s->pos < end; s->pos++)
                        cr_assert(sim_add(s, &s->arr[s->pos]));
        } else
                s->committed_pos = s->pos;
}

static void sim_flush_step(Sim *s) {
        bool commit = rnd(&s->rng, 10) < 7;

        sim_begin(s, rnd(&s->rng, 3) == 0 ? 1 + rnd(&s->rng, 3) : 0);
        /* reports keep arriving while the batch is out */
        for (uint64_t i = rnd(&s->rng, 4); i > 0 && s->pos < s->n_arr; i--) {
                if (!sim_add(s, &s->arr[s->pos]))
                        break;
                s->pos++;
        }
        cr_assert_eq(agg_evict_closed(s->agg, sim_now(s)), -EBUSY);
        sim_end(s, commit);
}

/* Generates each key's timestamps as a walk whose steps hit gap, gap + 1 and their
 * neighbours often; then the arrival order, with redelivered duplicates. */
static void sim_generate(Sim *s) {
        Report set[MAX_REPORTS];
        size_t n = 0;
        int n_keys = 1 + (int) rnd(&s->rng, MAX_KEYS);

        for (int k = 0; k < n_keys; k++) {
                usec_t t = 1000 + (usec_t) rnd(&s->rng, 40);
                size_t m = 1 + rnd(&s->rng, 30);

                for (size_t i = 0; i < m; i++) {
                        static const usec_t steps[] = { 1, GAP - 1, GAP, GAP, GAP + 1, GAP + 1, 2 * GAP, 5 };

                        set[n++] = (Report) { k, t };
                        t += rnd(&s->rng, 3) == 0 ? 1 + (usec_t) rnd(&s->rng, 3 * GAP)
                                                   : steps[rnd(&s->rng, ELEMENTSOF(steps))];
                }
        }
        if (s->in_order) {
                /* global time order (insertion sort: small n) */
                for (size_t i = 1; i < n; i++)
                        for (size_t j = i; j > 0 && set[j - 1].ts > set[j].ts; j--) {
                                Report x = set[j];

                                set[j] = set[j - 1];
                                set[j - 1] = x;
                        }
        } else
                for (size_t i = n; i > 1; i--) {
                        size_t j = rnd(&s->rng, i);
                        Report x = set[i - 1];

                        set[i - 1] = set[j];
                        set[j] = x;
                }
        /* redeliveries: right away, or later (of anything already seen) */
        s->n_arr = 0;
        for (size_t i = 0; i < n; i++) {
                s->arr[s->n_arr++] = set[i];
                if (rnd(&s->rng, 5) == 0)
                        s->arr[s->n_arr++] = set[i];
                if (rnd(&s->rng, 6) == 0)
                        s->arr[s->n_arr++] = set[rnd(&s->rng, i + 1)];
        }
}

/* The stored events of each key against the shared reference (tests/reference.c). */
static void check_against_reference(Sim *s) {
        for (int k = 0; k < MAX_KEYS; k++) {
                static RefReport ref[MAX_REPORTS];
                RefEvent *want = NULL;
                ssize_t n_want;
                size_t n = 0;

                for (size_t i = 0; i < s->n_arr; i++)
                        if (s->arr[i].key == k) {
                                snprintf(ref[n].key, sizeof(ref[n].key), "k%d", k);
                                ref[n++].t = s->arr[i].ts;
                        }
                n_want = reference_events(ref, n, GAP, &want);
                cr_assert_geq(n_want, 0);

                /* the model's events, in time order */
                Event *ev = s->store.ev[k];
                for (size_t i = 1; i < s->store.n[k]; i++)
                        for (size_t j = i; j > 0 && ev[j - 1].start > ev[j].start; j--) {
                                Event x = ev[j];

                                ev[j] = ev[j - 1];
                                ev[j - 1] = x;
                        }

                for (size_t e = 0; e < (size_t) n_want; e++) {
                        const RefEvent *w = &want[e];

                        cr_assert_lt(e, s->store.n[k], "seed %" PRIu64 ": key %d: missing event %" PRId64
                                     "-%" PRId64, s->seed, k, w->start, w->end);
                        cr_assert(ev[e].start == w->start && ev[e].end == w->end,
                                  "seed %" PRIu64 ": key %d event %zu: %" PRId64 "-%" PRId64 ", expected %"
                                  PRId64 "-%" PRId64, s->seed, k, e, ev[e].start, ev[e].end, w->start, w->end);
                        cr_assert_leq(ev[e].count, w->distinct, "seed %" PRIu64 ": key %d event %zu: count %"
                                      PRIu64 " > %" PRIu64 " distinct", s->seed, k, e, ev[e].count, w->distinct);
                        cr_assert_geq(ev[e].count, 1, "seed %" PRIu64, s->seed);
                        if (s->in_order)
                                cr_assert_eq(ev[e].count, w->distinct, "seed %" PRIu64 ": key %d event %zu: "
                                             "in-order count %" PRIu64 " != %" PRIu64 " distinct",
                                             s->seed, k, e, ev[e].count, w->distinct);
                }
                cr_assert_eq((size_t) n_want, s->store.n[k], "seed %" PRIu64 ": key %d: extra events",
                             s->seed, k);
                free(want);
        }
}

static void run_case(uint64_t seed, bool in_order) {
        Sim *s = calloc(1, sizeof(Sim));

        cr_assert_not_null(s);
        s->seed = seed;
        s->rng.s = seed;
        s->in_order = in_order;
        s->max_events = rnd(&s->rng, 5) == 0 ? 2 + rnd(&s->rng, 5) : 0;
        trace("case seed %" PRIu64 " %s max_events %" PRIu64 "\n", seed, in_order ? "in order" : "any order",
              s->max_events);
        sim_generate(s);
        sim_new_agg(s, rnd(&s->rng, 2) ? INT64_MIN / 2 : 990);

        while (s->pos < s->n_arr) {
                uint64_t op = rnd(&s->rng, 100);

                if (op < 65) {
                        cr_assert(sim_add(s, &s->arr[s->pos]));
                        s->pos++;
                } else if (op < 80)
                        sim_flush_step(s);
                else if (op < 87) {
                        usec_t now = sim_now(s);
                        int r = agg_evict_closed(s->agg, now);

                        trace("evict_closed %" PRId64 " -> %d\n", now, r);
                        cr_assert_geq(r, 0);
                } else if (op < 92) {
                        int r = agg_evict_oldest(s->agg, rnd(&s->rng, 3));

                        trace("evict_oldest -> %d\n", r);
                        cr_assert_geq(r, 0);
                }
                else if (op < 96)
                        sim_restart(s);
        }
        sim_flush_all(s);
        check_against_reference(s);
        agg_free(s->agg);
        free(s);
}

static uint64_t base_seed(void) {
        const char *e = getenv("AGG_PROPERTY_SEED");

        tracing = getenv("AGG_PROPERTY_TRACE");
        return e ? strtoull(e, NULL, 0) : UINT64_C(20261127);
}

Test(agg_property, random_order_random_operations, .timeout = 120) {
        uint64_t b = base_seed();

        for (uint64_t i = 0; i < 6000; i++)
                run_case(b + i, false);
}

Test(agg_property, time_order_counts_exactly, .timeout = 120) {
        uint64_t b = base_seed() + 1000000;

        for (uint64_t i = 0; i < 6000; i++)
                run_case(b + i, true);
}

/* ---- every permutation of small sets ---- */

static bool next_permutation(usec_t *v, size_t n) {
        size_t i = n - 1, j = n - 1;

        while (i > 0 && v[i - 1] >= v[i])
                i--;
        if (i == 0)
                return false;
        while (v[j] <= v[i - 1])
                j--;
        usec_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
        for (size_t a = i, b = n - 1; a < b; a++, b--) {
                t = v[a];
                v[a] = v[b];
                v[b] = t;
        }
        return true;
}

static void run_permutation(const usec_t *perm, size_t n, bool flush_each, bool sorted) {
        Sim *s = calloc(1, sizeof(Sim));

        cr_assert_not_null(s);
        s->in_order = sorted;
        sim_new_agg(s, INT64_MIN / 2);
        s->n_arr = n;
        for (size_t i = 0; i < n; i++) {
                s->arr[i] = (Report) { 0, perm[i] };
                cr_assert(sim_add(s, &s->arr[i]));
                s->pos++;
                if (flush_each)
                        sim_flush_all(s);
        }
        sim_flush_all(s);
        check_against_reference(s);
        agg_free(s->agg);
        free(s);
}

Test(agg_property, every_permutation_of_small_sets, .timeout = 120) {
        /* gaps around the boundary, and a duplicate in some sets */
        static const usec_t sets[][7] = {
                { 0, GAP, 2 * GAP, 3 * GAP + 1, 4 * GAP + 1, 5 * GAP + 2, 6 * GAP + 2 },
                { 0, GAP + 1, 2 * GAP + 1, 2 * GAP + 1, 3 * GAP + 2, 4 * GAP + 2, 5 * GAP + 3 },
                { 0, 5, GAP, GAP + 6, 2 * GAP + 7, 2 * GAP + 8, 3 * GAP + 20 },
                { 0, GAP - 1, 2 * GAP, 3 * GAP + 1, 3 * GAP + 1, 4 * GAP + 1, 5 * GAP + 2 },
                { 0, 1, 2, GAP + 2, 2 * GAP + 3, 2 * GAP + 4, 3 * GAP + 4 },
                { 0, 2 * GAP, GAP, 3 * GAP, 5 * GAP, 4 * GAP + 1, 6 * GAP + 1 },
        };
        size_t runs = 0;

        for (size_t si = 0; si < ELEMENTSOF(sets); si++)
                for (size_t n = 3; n <= 7; n += 2) {
                        usec_t v[7];

                        memcpy(v, sets[si], sizeof v);
                        /* sort the first n, then walk all their distinct permutations */
                        for (size_t i = 1; i < n; i++)
                                for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
                                        usec_t t = v[j];

                                        v[j] = v[j - 1];
                                        v[j - 1] = t;
                                }
                        bool first = true;
                        do {
                                run_permutation(v, n, true, first);
                                run_permutation(v, n, false, first);
                                first = false;
                                runs += 2;
                        } while (next_permutation(v, n));
                }
        cr_assert_gt(runs, 10000);
}
