/* test_intern.c — the string interning table (intern.c): references and ids, id reuse,
 * growth and shrinking, byte accounting, and probe runs under collisions.
 *
 * White box: the module is included so that the collision tests can pick strings whose
 * keyed hash lands them in one bucket (and across the end of the table), which is where
 * backward-shift deletion can go wrong, and can check the table's invariant after every
 * step. Everything else goes through the public interface only. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>

#include "intern.c"

static Intern *new_table(uint64_t seed) {
        Intern *t = NULL;

        cr_assert_eq(intern_new(seed, &t), 0);
        cr_assert_not_null(t);
        return t;
}

static uint32_t ref(Intern *t, const char *s) {
        uint32_t id = 0;

        cr_assert_eq(intern_ref(t, s, &id), 0, "intern_ref(%s)", s);
        cr_assert_gt(id, 0);
        return id;
}

/* Every live string sits in the probe run starting at its home slot (no empty slot in
 * between), exactly once; every occupied slot holds a live id; counts agree. */
static void check_invariant(const Intern *t) {
        uint32_t occupied = 0;

        for (uint32_t i = 0; i <= t->mask; i++) {
                uint32_t id = t->slots[i];

                if (!id)
                        continue;
                occupied++;
                cr_assert_gt(record(t, id)->refs, 0, "slot %u holds dead id %u", i, id);
                for (uint32_t j = record(t, id)->hash & t->mask; j != i; j = (j + 1) & t->mask)
                        cr_assert_neq(t->slots[j], 0, "id %u at slot %u is cut off from its home", id, i);
                cr_assert_eq(intern_find(t, intern_str(t, id)), id);
        }
        cr_assert_null(intern_check(t), "%s", intern_check(t));
        cr_assert_eq(occupied, t->n);
        cr_assert_eq(intern_count(t), t->n);
        cr_assert_leq((uint64_t) t->n * 4, (uint64_t) (t->mask + 1) * 3, "load factor above 3/4");
}

Test(intern, free_accepts_null) {
        cr_assert_null(intern_free(NULL));
        cr_assert_null(intern_free(new_table(1)));
}

Test(intern, refs_share_one_id_until_the_last_unref) {
        Intern *t = new_table(7);
        uint32_t a = ref(t, "ctrl_1"), b = ref(t, "panel_outage");

        cr_assert(a != 0 && b != 0 && a != b, "ids are nonzero and distinct");
        cr_assert_eq(ref(t, "ctrl_1"), a);
        cr_assert_eq(ref(t, "ctrl_1"), a);
        cr_assert_eq(intern_count(t), 2);
        cr_assert_str_eq(intern_str(t, a), "ctrl_1");
        cr_assert_eq(intern_find(t, "ctrl_1"), a);
        cr_assert_eq(intern_find(t, "ctrl_2"), 0);
        cr_assert_eq(intern_find(t, ""), 0);

        intern_unref(t, a);
        intern_unref(t, a);
        cr_assert_eq(intern_find(t, "ctrl_1"), a, "one reference left");
        cr_assert_str_eq(intern_str(t, a), "ctrl_1");
        intern_unref(t, a);
        cr_assert_eq(intern_find(t, "ctrl_1"), 0);
        cr_assert_eq(intern_count(t), 1);
        cr_assert_eq(intern_find(t, "panel_outage"), b);
        intern_free(t);
}

Test(intern, find_takes_no_reference) {
        Intern *t = new_table(7);
        uint32_t a = ref(t, "x");

        for (int i = 0; i < 10; i++)
                cr_assert_eq(intern_find(t, "x"), a);
        intern_unref(t, a);
        cr_assert_eq(intern_find(t, "x"), 0);
        intern_free(t);
}

Test(intern, empty_and_long_strings) {
        Intern *t = new_table(3);
        char big[70000];
        uint32_t e, l;

        memset(big, 'q', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        e = ref(t, "");
        l = ref(t, big);
        cr_assert_neq(e, l);
        cr_assert_str_eq(intern_str(t, e), "");
        cr_assert_str_eq(intern_str(t, l), big);
        big[100] = 'r';
        cr_assert_eq(intern_find(t, big), 0, "differs in one byte");
        intern_free(t);
}

Test(intern, freed_ids_are_reused_first) {
        Intern *t = new_table(11);
        uint32_t ids[10];
        char s[16];

        for (int i = 0; i < 10; i++) {
                snprintf(s, sizeof(s), "s%d", i);
                ids[i] = ref(t, s);
                for (int j = 0; j < i; j++)
                        cr_assert_neq(ids[i], ids[j]);
        }
        intern_unref(t, ids[3]);
        intern_unref(t, ids[7]);
        /* records of one size class: the most recently freed first, then the other, then
         * new ones */
        cr_assert_eq(ref(t, "new_a"), ids[7]);
        cr_assert_eq(ref(t, "new_b"), ids[3]);
        {
                uint32_t c = ref(t, "new_c");

                for (int j = 0; j < 10; j++)
                        cr_assert_neq(c, ids[j]);
        }
        cr_assert_str_eq(intern_str(t, ids[7]), "new_a");
        cr_assert_eq(intern_find(t, "s7"), 0);
        cr_assert_eq(intern_find(t, "s6"), ids[6]);
        check_invariant(t);
        intern_free(t);
}

Test(intern, grows_and_shrinks) {
        enum { N = 100000 };
        Intern *t = new_table(12345);
        char s[32];
        uint32_t *ids = calloc(N, sizeof(uint32_t));
        size_t small = intern_bytes(t), big;

        cr_assert_not_null(ids);
        for (int i = 0; i < N; i++) {
                snprintf(s, sizeof(s), "controller-%d", i);
                ids[i] = ref(t, s);
        }
        cr_assert_eq(intern_count(t), N);
        check_invariant(t);
        big = intern_bytes(t);
        cr_assert_gt(big, small + (size_t) N * 8);
        for (int i = 0; i < N; i++) {
                snprintf(s, sizeof(s), "controller-%d", i);
                cr_assert_eq(intern_find(t, s), ids[i]);
                cr_assert_str_eq(intern_str(t, ids[i]), s);
        }
        /* drop all but every 64th: the table shrinks, the survivors stay found */
        for (int i = 0; i < N; i++)
                if (i % 64)
                        intern_unref(t, ids[i]);
        cr_assert_eq(intern_count(t), (N + 63) / 64);
        check_invariant(t);
        cr_assert_leq(t->mask + 1, 16384u, "table did not shrink: %u slots", t->mask + 1);
        cr_assert_lt(intern_bytes(t), big);
        for (int i = 0; i < N; i++) {
                snprintf(s, sizeof(s), "controller-%d", i);
                cr_assert_eq(intern_find(t, s), i % 64 ? 0 : ids[i], "%s", s);
        }
        for (int i = 0; i < N; i += 64)
                intern_unref(t, ids[i]);
        cr_assert_eq(intern_count(t), 0);
        cr_assert_eq(t->mask + 1, MIN_SLOTS, "never below the minimum");
        check_invariant(t);
        free(ids);
        intern_free(t);
}

Test(intern, byte_accounting) {
        Intern *t = new_table(5);
        size_t b0 = intern_bytes(t), s0 = intern_string_bytes(t);
        size_t s1, s2, s3;
        uint32_t a, b;

        cr_assert_eq(s0, 0);
        cr_assert_gt(b0, sizeof(Intern));
        a = ref(t, "abc");
        s1 = intern_string_bytes(t);
        cr_assert_eq(s1, 16, "an 8-byte header, the characters and the NUL, rounded up to 8");
        b = ref(t, "abcdefgh");
        s2 = intern_string_bytes(t);
        cr_assert_eq(s2 - s1, 24, "9 bytes of text: a 24-byte record");
        (void) ref(t, "abc");
        cr_assert_eq(intern_string_bytes(t), s2, "another reference costs nothing");
        cr_assert_geq(intern_bytes(t), s2 + b0);

        intern_unref(t, a);
        cr_assert_eq(intern_string_bytes(t), s2);
        intern_unref(t, a);
        s3 = intern_string_bytes(t);
        cr_assert_eq(s3, s2 - s1);
        intern_unref(t, b);
        cr_assert_eq(intern_string_bytes(t), 0);
        /* the slabs stay allocated (records are reused), the table is back to its minimum */
        cr_assert_geq(intern_bytes(t), b0);
        cr_assert_null(intern_check(t), "%s", intern_check(t));
        intern_free(t);
}

/* ---- collisions ---- */

/* Finds n strings "<prefix><k>" whose home slot in a table of 16 is home. */
static void colliding(const Intern *t, uint32_t home, const char *prefix, char out[][24], int n) {
        int found = 0;

        for (int k = 0; found < n; k++) {
                char s[24];

                cr_assert_lt(k, 1000000);
                snprintf(s, sizeof(s), "%s%d", prefix, k);
                if ((str_hash(t, s, strlen(s)) & (MIN_SLOTS - 1)) == home)
                        memcpy(out[found++], s, sizeof(s));
        }
}

Test(intern, one_bucket_across_the_end_of_the_table) {
        Intern *t = new_table(99);
        char s[6][24], o[3][24];
        uint32_t ids[6], oid[3];

        /* six strings homed at the last slot fill it and wrap around to 0..4; three homed at
         * slot 1 land behind them */
        colliding(t, MIN_SLOTS - 1, "wrap", s, 6);
        colliding(t, 1, "one", o, 3);
        for (int i = 0; i < 6; i++)
                ids[i] = ref(t, s[i]);
        for (int i = 0; i < 3; i++)
                oid[i] = ref(t, o[i]);
        cr_assert_eq(t->mask + 1, MIN_SLOTS, "still the minimum table: the collisions are real");
        check_invariant(t);

        /* delete from the middle of the wrapped run: everything else stays reachable */
        intern_unref(t, ids[2]);
        check_invariant(t);
        intern_unref(t, ids[0]);
        check_invariant(t);
        cr_assert_eq(intern_find(t, s[2]), 0);
        for (int i = 0; i < 3; i++)
                cr_assert_eq(intern_find(t, o[i]), oid[i]);
        for (int i = 1; i < 6; i++)
                if (i != 2)
                        cr_assert_eq(intern_find(t, s[i]), ids[i]);
        intern_free(t);
}

Test(intern, deleting_at_the_last_slot_keeps_what_follows_it_home) {
        Intern *t = new_table(5);
        char last[2][24], first[2][24];
        uint32_t l0, f0, f1;

        /* slot 15 holds a string homed there; slots 0 and 1 hold strings homed at 0: the
         * hole left at 15 must not pull them before their home */
        colliding(t, MIN_SLOTS - 1, "last", last, 1);
        colliding(t, 0, "first", first, 2);
        l0 = ref(t, last[0]);
        f0 = ref(t, first[0]);
        f1 = ref(t, first[1]);
        cr_assert_eq(t->slots[MIN_SLOTS - 1], l0);
        cr_assert_eq(t->slots[0], f0);
        cr_assert_eq(t->slots[1], f1);
        intern_unref(t, l0);
        check_invariant(t);
        cr_assert_eq(intern_find(t, first[0]), f0);
        cr_assert_eq(intern_find(t, first[1]), f1);
        intern_free(t);
}

/* A small PRNG (splitmix64) for the random walk below. */
static uint64_t next_rand(uint64_t *x) {
        uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

Test(intern, random_refs_and_unrefs_match_a_model) {
        enum { POOL = 40, STEPS = 20000 };

        for (uint64_t seed = 1; seed <= 20; seed++) {
                Intern *t = new_table(seed);
                uint32_t refs[POOL] = { 0 }, ids[POOL] = { 0 };
                uint64_t x = seed;

                for (int step = 0; step < STEPS; step++) {
                        int k = (int) (next_rand(&x) % POOL);
                        char s[16];

                        snprintf(s, sizeof(s), "k%d", k);
                        if (refs[k] == 0 || next_rand(&x) % 2) {
                                uint32_t id = ref(t, s);

                                if (refs[k] > 0)
                                        cr_assert_eq(id, ids[k], "seed %" PRIu64 " step %d", seed, step);
                                ids[k] = id;
                                refs[k]++;
                        } else {
                                intern_unref(t, ids[k]);
                                refs[k]--;
                        }
                        for (int i = 0; i < POOL; i++) {
                                snprintf(s, sizeof(s), "k%d", i);
                                cr_assert_eq(intern_find(t, s), refs[i] ? ids[i] : 0,
                                             "seed %" PRIu64 " step %d: %s", seed, step, s);
                        }
                        if (step % 97 == 0)
                                check_invariant(t);
                }
                intern_free(t);
        }
}

Test(intern, the_seed_keys_the_hash) {
        Intern *a = new_table(1), *b = new_table(2);
        char s[8][24];
        int same_home = 0;

        /* strings aimed at one bucket under one seed scatter under another */
        colliding(a, 0, "aim", s, 8);
        for (int i = 0; i < 8; i++) {
                cr_assert_neq(str_hash(a, s[i], strlen(s[i])), str_hash(b, s[i], strlen(s[i])));
                same_home += (str_hash(b, s[i], strlen(s[i])) & (MIN_SLOTS - 1)) == 0;
        }
        cr_assert_lt(same_home, 8, "seed 2 put all of them in the bucket seed 1 did");
        /* and the table works the same under either */
        for (int i = 0; i < 8; i++)
                cr_assert_eq(ref(a, s[i]), ref(b, s[i]));
        check_invariant(a);
        check_invariant(b);
        intern_free(a);
        intern_free(b);
}
