/* test_agg_memory.c — memory of the aggregation core (daemon/agg.c, intern.c): the bytes an
 * open event costs, that agg_stats() tells the truth about them, and the string slabs with
 * records of every size class and longer. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>

#include "agg.h"
#include "intern.h"

#define GAP (12 * USEC_PER_MINUTE)
#define T0 ((usec_t) 20784 * USEC_PER_DAY)

static Agg *new_agg(void) {
        AggConfig cfg = { .gap = GAP, .hash_seed = 99 };
        Agg *a = NULL;

        cr_assert_eq(agg_new(&cfg, T0 - GAP, &a), 0);
        return a;
}

static void flush_all(Agg *a) {
        FlushBatch *b = NULL;
        bool complete;

        do {
                cr_assert_eq(agg_flush_begin(a, 10000, &b), 0);
                complete = b->complete;
                agg_flush_end(a, b, true);
        } while (!complete);
}

static char **make_ids(size_t n, size_t *ret_chars) {
        char **ids = calloc(n, sizeof(char *));

        cr_assert_not_null(ids);
        *ret_chars = 0;
        for (size_t i = 0; i < n; i++) {
                cr_assert_geq(asprintf(&ids[i], "ctrl_%07zu", i), 0);
                *ret_chars += strlen(ids[i]) + 1;
        }
        return ids;
}

static void free_ids(char **ids, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(ids[i]);
        free(ids);
}

/* n open events, one new controller each, reported twice and flushed, as in steady state. */
static Agg *open_events(char **ids, size_t n) {
        Agg *a = new_agg();

        for (int round = 0; round < 2; round++) {
                for (size_t k = 0; k < n; k++)
                        cr_assert_eq(agg_add(a, ids[k], "panel_outage", T0 + round * 10 * USEC_PER_MINUTE), 1);
                flush_all(a);
        }
        return a;
}

/* The target: at most 100 bytes per open event beyond the ids' own characters. */
Test(agg_memory, an_open_event_costs_at_most_100_bytes_beyond_its_id, .timeout = 120) {
        const size_t n = 200000;
        size_t chars;
        char **ids = make_ids(n, &chars);
        Agg *a = open_events(ids, n);
        AggStats st;
        double per_event;

        agg_stats(a, T0 + 10 * USEC_PER_MINUTE, &st);
        cr_assert_eq(st.open_spans, n);
        per_event = (double) (st.bytes - chars) / (double) n;
        cr_log_info("%.1f bytes per open event beyond the ids' characters\n", per_event);
        cr_assert_leq(per_event, 100.0, "%.1f bytes per open event beyond the ids", per_event);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
        free_ids(ids, n);
}

/* The same for a backlog drained after a restart: one report per new controller, all older
 * than the knowledge horizon (uncertain), all applied before the first flush commits. */
Test(agg_memory, an_open_event_of_a_late_report_costs_at_most_100_bytes_beyond_its_id, .timeout = 120) {
        const size_t n = 200000;
        AggConfig cfg = { .gap = GAP, .hash_seed = 99 };
        size_t chars;
        char **ids = make_ids(n, &chars);
        Agg *a = NULL;
        AggStats st;
        double per_event;

        cr_assert_eq(agg_new(&cfg, T0 + GAP, &a), 0);
        for (size_t k = 0; k < n; k++)
                cr_assert_eq(agg_add(a, ids[k], "panel_outage", T0), 1);
        agg_stats(a, T0, &st);
        cr_assert_eq(st.uncertain, n);
        per_event = (double) (st.bytes - chars) / (double) n;
        cr_assert_leq(per_event, 100.0, "%.1f bytes per event to flush beyond the ids", per_event);
        flush_all(a);
        agg_stats(a, T0, &st);
        cr_assert_eq(st.open_spans, n);
        cr_assert_eq(st.uncertain, 0);
        per_event = (double) (st.bytes - chars) / (double) n;
        cr_log_info("%.1f bytes per open event beyond the ids' characters\n", per_event);
        cr_assert_leq(per_event, 100.0, "%.1f bytes per open event beyond the ids", per_event);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
        free_ids(ids, n);
}

/* agg_stats() bytes against what malloc hands out for them (headers and rounding included):
 * within 5%. Not under AddressSanitizer, whose allocator keeps no such figures. */
Test(agg_memory, agg_stats_bytes_match_what_malloc_holds, .timeout = 120) {
#ifdef __SANITIZE_ADDRESS__
        cr_skip_test("mallinfo2() means nothing under AddressSanitizer");
#else
        const size_t n = 200000;
        size_t chars, before, held;
        char **ids = make_ids(n, &chars);
        struct mallinfo2 m0, m1;
        AggStats st;
        Agg *a;

        malloc_trim(0);
        m0 = mallinfo2();
        a = open_events(ids, n);
        agg_stats(a, T0, &st);
        m1 = mallinfo2();
        before = m0.uordblks + m0.hblkhd;
        held = m1.uordblks + m1.hblkhd - before;
        cr_log_info("agg_stats %" PRIu64 " bytes, malloc %zu\n", st.bytes, held);
        cr_assert_leq(st.bytes, held * 105 / 100, "agg_stats %" PRIu64 " > malloc %zu + 5%%", st.bytes, held);
        cr_assert_geq(st.bytes, held * 95 / 100, "agg_stats %" PRIu64 " < malloc %zu - 5%%", st.bytes, held);
        agg_free(a);
        free_ids(ids, n);
#endif
}

/* Ids of every length from 0 to 600 characters: every size class, and past the slabs. */
Test(agg_memory, strings_of_every_size_class_and_longer) {
        Intern *t = NULL;
        static uint32_t ids[601];
        char buf[602];

        cr_assert_eq(intern_new(5, &t), 0);
        for (int round = 0; round < 2; round++)
                for (size_t len = 0; len <= 600; len++) {
                        uint32_t id;

                        memset(buf, 'a' + (int) (len % 26), len);
                        buf[len] = 0;
                        cr_assert_eq(intern_ref(t, buf, &id), 0);
                        if (round == 0)
                                ids[len] = id;
                        cr_assert_eq(id, ids[len], "length %zu: a second reference, another id", len);
                        cr_assert_str_eq(intern_str(t, id), buf);
                        cr_assert_eq(intern_find(t, buf), id);
                }
        cr_assert_eq(intern_count(t), 601);
        cr_assert_null(intern_check(t), "%s", intern_check(t));
        /* drop every other one completely, then take new strings: records are reused */
        for (size_t len = 0; len <= 600; len += 2) {
                intern_unref(t, ids[len]);
                intern_unref(t, ids[len]);
        }
        cr_assert_eq(intern_count(t), 300);
        cr_assert_null(intern_check(t), "%s", intern_check(t));
        for (size_t len = 0; len <= 600; len += 2) {
                uint32_t id;

                memset(buf, 'A' + (int) (len % 26), len);
                buf[len] = 0;
                cr_assert_eq(intern_ref(t, buf, &id), 0);
                cr_assert_eq(id >> 27, ids[len] >> 27, "length %zu: another class", len);
                cr_assert_str_eq(intern_str(t, id), buf);
        }
        for (size_t len = 1; len <= 600; len += 2) {
                memset(buf, 'a' + (int) (len % 26), len);
                buf[len] = 0;
                cr_assert_str_eq(intern_str(t, ids[len]), buf, "length %zu moved", len);
        }
        cr_assert_null(intern_check(t), "%s", intern_check(t));
        intern_free(t);
}

/* A class's records stay where they are while it grows past many chunks. */
Test(agg_memory, string_records_never_move) {
        enum { N = 5000 };
        static const char *p[N];
        static uint32_t ids[N];
        Intern *t = NULL;
        char buf[32];

        cr_assert_eq(intern_new(5, &t), 0);
        for (int i = 0; i < N; i++) {
                snprintf(buf, sizeof buf, "ctrl_%07d", i);
                cr_assert_eq(intern_ref(t, buf, &ids[i]), 0);
                p[i] = intern_str(t, ids[i]);
        }
        for (int i = 0; i < N; i++) {
                snprintf(buf, sizeof buf, "ctrl_%07d", i);
                cr_assert_eq(intern_str(t, ids[i]), p[i]);
                cr_assert_str_eq(p[i], buf);
        }
        cr_assert_null(intern_check(t), "%s", intern_check(t));
        for (int i = 0; i < N; i++)
                intern_unref(t, ids[i]);
        cr_assert_eq(intern_count(t), 0);
        cr_assert_null(intern_check(t), "%s", intern_check(t));
        intern_free(t);
}

/* Through the Agg: keys with ids of many lengths flush with the right strings and go. */
Test(agg_memory, keys_with_long_ids_flush_and_evict) {
        Agg *a = new_agg();
        FlushBatch *b = NULL;
        char buf[402];
        AggStats st;

        for (size_t len = 1; len <= 400; len += 3) {
                memset(buf, 'c', len);
                buf[len] = 0;
                cr_assert_eq(agg_add(a, buf, "panel_outage", T0), 1);
        }
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 134);
        for (size_t i = 0; i < b->n; i++) {
                size_t len = strlen(b->fragments[i].controller_id);

                cr_assert_eq(len % 3, 1);
                cr_assert_eq(strspn(b->fragments[i].controller_id, "c"), len);
                cr_assert_str_eq(b->fragments[i].outage_type, "panel_outage");
        }
        agg_flush_end(a, b, true);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        cr_assert_eq(agg_evict_closed(a, T0 + USEC_PER_HOUR), 134);
        agg_stats(a, T0, &st);
        cr_assert_eq(st.strings, 0);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}
