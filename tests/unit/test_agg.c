/* test_agg.c — unit tests of the aggregation core (daemon/agg.c): the SPEC section 3 example,
 * gap boundaries, duplicates, late reports, flush retry, batches, eviction, limits, warm start
 * and uncertain timestamps. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>

#include "agg.h"

#define GAP (12 * USEC_PER_MINUTE)
#define DAY0 ((usec_t) 20784 * USEC_PER_DAY)    /* 2026-11-27T00:00:00Z */

/* hh:mm on the test day */
static usec_t at(int h, int m) {
        return DAY0 + h * USEC_PER_HOUR + m * USEC_PER_MINUTE;
}

static Agg *new_agg(usec_t horizon, uint64_t max_events) {
        AggConfig cfg = { .gap = GAP, .max_events = max_events, .hash_seed = 42 };
        Agg *a = NULL;

        cr_assert_eq(agg_new(&cfg, horizon, &a), 0);
        return a;
}

static int add(Agg *a, usec_t ts) {
        return agg_add(a, "ctrl_1", "panel_outage", ts);
}

static size_t spans(Agg *a, AggSpan *out) {
        return agg_key_spans(a, "ctrl_1", "panel_outage", out, 16);
}

static void assert_span(const AggSpan *s, usec_t start, usec_t end, uint32_t count) {
        cr_assert_eq(s->start, start, "start %" PRId64 " != %" PRId64, s->start, start);
        cr_assert_eq(s->end, end, "end %" PRId64 " != %" PRId64, s->end, end);
        cr_assert_eq(s->count, count, "count %u != %u", s->count, count);
}

/* Flushes everything and commits; returns the number of fragments, copied into out. */
static size_t flush_all(Agg *a, Fragment *out, size_t max) {
        FlushBatch *b = NULL;
        size_t n;

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        n = b->n;
        for (size_t i = 0; i < n && i < max; i++) {
                out[i] = b->fragments[i];
                out[i].uncertain = NULL;        /* freed with the batch */
        }
        agg_flush_end(a, b, true);
        return n;
}

Test(agg, spec_example_step_by_step) {
        Agg *a = new_agg(0, 0);
        AggSpan s[4];

        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(add(a, at(10, 10)), 1);
        cr_assert_eq(add(a, at(10, 20)), 1);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 20), 3);

        cr_assert_eq(add(a, at(10, 45)), 1);            /* 25 min after A's end */
        cr_assert_eq(spans(a, s), 2);
        assert_span(&s[0], at(10, 0), at(10, 20), 3);
        assert_span(&s[1], at(10, 45), at(10, 45), 1);

        cr_assert_eq(add(a, at(10, 32)), 1);            /* 12 min after A, 13 before B */
        cr_assert_eq(spans(a, s), 2);
        assert_span(&s[0], at(10, 0), at(10, 32), 4);
        assert_span(&s[1], at(10, 45), at(10, 45), 1);

        cr_assert_eq(add(a, at(10, 33)), 1);            /* extends A, 12 min before B: merge */
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 45), 6);

        cr_assert_eq(add(a, at(10, 10)), 0);            /* duplicate */
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 45), 6);
        agg_free(a);
}

Test(agg, spec_example_with_flushes_sums_to_six) {
        Agg *a = new_agg(0, 0);
        const int order[][2] = { {10, 0}, {10, 10}, {10, 20}, {10, 45}, {10, 32}, {10, 33}, {10, 10} };
        Fragment f[4];
        uint32_t total = 0;

        for (size_t i = 0; i < ELEMENTSOF(order); i++) {
                size_t n;

                add(a, at(order[i][0], order[i][1]));
                n = flush_all(a, f, 4);
                for (size_t j = 0; j < n; j++)
                        total += f[j].count;
        }
        cr_assert_eq(total, 6);
        agg_free(a);
}

Test(agg, gap_exactly_joins) {
        Agg *a = new_agg(0, 0);
        AggSpan s[2];

        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(add(a, at(10, 12)), 1);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 12), 2);
        /* backwards too */
        cr_assert_eq(add(a, at(9, 48)), 1);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(9, 48), at(10, 12), 3);
        agg_free(a);
}

Test(agg, gap_plus_one_us_splits) {
        Agg *a = new_agg(0, 0);
        AggSpan s[3];

        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(add(a, at(10, 12) + 1), 1);
        cr_assert_eq(spans(a, s), 2);
        assert_span(&s[0], at(10, 0), at(10, 0), 1);
        assert_span(&s[1], at(10, 12) + 1, at(10, 12) + 1, 1);
        cr_assert_eq(add(a, at(9, 48) - 1), 1);
        cr_assert_eq(spans(a, s), 3);
        agg_free(a);
}

Test(agg, duplicates_change_nothing) {
        Agg *a = new_agg(0, 0);
        AggSpan s[2];
        Fragment f[2];

        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(add(a, at(10, 0)), 0);
        cr_assert_eq(add(a, at(10, 10)), 1);
        cr_assert_eq(add(a, at(10, 5)), 0);             /* between two already there */
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 10), 2);
        cr_assert_eq(flush_all(a, f, 2), 1);
        cr_assert_eq(add(a, at(10, 10)), 0);            /* still a duplicate after the flush */
        cr_assert_eq(flush_all(a, f, 2), 0);
        agg_free(a);
}

Test(agg, late_report_extends_backwards) {
        Agg *a = new_agg(0, 0);
        AggSpan s[2];

        cr_assert_eq(add(a, at(10, 20)), 1);
        cr_assert_eq(add(a, at(10, 10)), 1);
        cr_assert_eq(add(a, at(9, 58)), 1);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(9, 58), at(10, 20), 3);
        agg_free(a);
}

Test(agg, late_report_bridges_two_events) {
        Agg *a = new_agg(0, 0);
        AggSpan s[2];
        Fragment f[4];

        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(add(a, at(10, 24)), 1);
        cr_assert_eq(spans(a, s), 2);
        cr_assert_eq(flush_all(a, f, 4), 2);
        cr_assert_eq(add(a, at(10, 12)), 1);            /* within 12 min of both */
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 24), 1);   /* counted once */
        cr_assert_eq(flush_all(a, f, 4), 1);
        cr_assert_eq(f[0].start, at(10, 0));
        cr_assert_eq(f[0].end, at(10, 24));
        cr_assert_eq(f[0].count, 1);
        agg_free(a);
}

Test(agg, report_more_than_gap_before_is_separate_fragment) {
        Agg *a = new_agg(0, 0);
        Fragment f[4];

        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(add(a, at(10, 10)), 1);
        cr_assert_eq(flush_all(a, f, 4), 1);
        cr_assert_eq(add(a, at(9, 30)), 1);
        cr_assert_eq(flush_all(a, f, 4), 1);
        cr_assert_eq(f[0].start, at(9, 30));
        cr_assert_eq(f[0].end, at(9, 30));
        cr_assert_eq(f[0].count, 1);
        agg_free(a);
}

Test(agg, flush_failure_then_retry_does_not_double_count) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        AggStats st;

        add(a, at(10, 0));
        add(a, at(10, 10));
        add(a, at(10, 20));
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].count, 3);
        agg_stats(a, at(10, 20), &st);
        cr_assert_eq(st.dirty_spans, 0);
        agg_flush_end(a, b, false);
        agg_stats(a, at(10, 20), &st);
        cr_assert_eq(st.dirty_spans, 1);

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].count, 3);
        agg_flush_end(a, b, false);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->fragments[0].count, 3);
        agg_flush_end(a, b, true);

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 0);
        agg_flush_end(a, b, true);
        agg_free(a);
}

Test(agg, reports_during_committed_batch_form_the_next_delta) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;

        add(a, at(10, 0));
        add(a, at(10, 10));
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->fragments[0].count, 2);
        cr_assert_eq(add(a, at(10, 20)), 1);
        cr_assert_eq(add(a, at(10, 10)), 0);
        agg_flush_end(a, b, true);

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].start, at(10, 0));
        cr_assert_eq(b->fragments[0].end, at(10, 20));
        cr_assert_eq(b->fragments[0].count, 1);
        agg_flush_end(a, b, true);
        agg_free(a);
}

Test(agg, reports_during_failed_batch_get_counts_back) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        AggSpan s[2];

        add(a, at(10, 0));
        add(a, at(10, 24));                             /* two spans, two fragments */
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 2);
        cr_assert_eq(add(a, at(10, 12)), 1);            /* bridges both while they are out */
        agg_flush_end(a, b, false);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 24), 3);

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].count, 3);
        agg_flush_end(a, b, true);
        agg_free(a);
}

Test(agg, only_one_batch_and_no_eviction_while_outstanding) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL, *b2 = NULL;

        add(a, at(10, 0));
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(agg_flush_begin(a, 0, &b2), -EBUSY);
        cr_assert_null(b2);
        cr_assert_eq(agg_evict_closed(a, at(12, 0)), -EBUSY);
        cr_assert_eq(agg_evict_oldest(a, 10), -EBUSY);
        agg_flush_end(a, b, true);
        cr_assert_eq(agg_evict_closed(a, at(12, 0)), 1);
        agg_free(a);
}

Test(agg, flush_max_limits_fragments) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        size_t total = 0;

        add(a, at(10, 0));
        add(a, at(11, 0));
        agg_add(a, "ctrl_2", "panel_outage", at(10, 0));
        for (int i = 0; i < 5; i++) {
                cr_assert_eq(agg_flush_begin(a, 1, &b), 0);
                cr_assert_leq(b->n, 1);
                total += b->n;
                agg_flush_end(a, b, true);
        }
        cr_assert_eq(total, 3);
        agg_free(a);
}

Test(agg, eviction_of_closed_clean_spans_raises_horizon) {
        Agg *a = new_agg(0, 0);
        AggStats st;
        Fragment f[4];

        add(a, at(10, 0));
        add(a, at(10, 10));
        agg_add(a, "ctrl_2", "lamp_outage", at(11, 0));
        /* dirty: nothing evicted however late */
        cr_assert_eq(agg_evict_closed(a, at(23, 0)), 0);
        cr_assert_eq(flush_all(a, f, 4), 2);

        /* 10:10 + 12 min = 10:22: still open at 10:22, closed just after */
        cr_assert_eq(agg_evict_closed(a, at(10, 22)), 0);
        cr_assert_eq(agg_evict_closed(a, at(10, 22) + 1), 1);
        agg_stats(a, at(10, 22) + 1, &st);
        cr_assert_eq(st.keys, 1);
        cr_assert_eq(st.spans, 1);
        cr_assert_eq(st.open_spans, 1);
        cr_assert_eq(st.strings, 2);                    /* ctrl_1 and panel_outage released */
        cr_assert_eq(st.horizon, at(10, 10) + 1);
        cr_assert_eq(agg_key_spans(a, "ctrl_1", "panel_outage", NULL, 0), 0);

        cr_assert_eq(agg_evict_closed(a, at(12, 0)), 1);
        agg_stats(a, at(12, 0), &st);
        cr_assert_eq(st.keys, 0);
        cr_assert_eq(st.spans, 0);
        cr_assert_eq(st.strings, 0);
        cr_assert_eq(st.horizon, at(11, 0) + 1);
        agg_free(a);
}

Test(agg, eviction_keeps_the_open_span_of_a_key) {
        Agg *a = new_agg(0, 0);
        AggSpan s[2];
        Fragment f[4];

        add(a, at(8, 0));
        add(a, at(10, 0));
        flush_all(a, f, 4);
        cr_assert_eq(agg_evict_closed(a, at(10, 5)), 1);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 0), 0);
        agg_free(a);
}

Test(agg, max_events_enospc_leaves_state_unchanged) {
        Agg *a = new_agg(0, 2);
        AggStats before, after;
        AggSpan s[2];
        Fragment f[4];

        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(agg_add(a, "ctrl_2", "panel_outage", at(10, 0)), 1);
        agg_stats(a, at(10, 0), &before);
        cr_assert_eq(agg_add(a, "ctrl_3", "panel_outage", at(10, 0)), -ENOSPC);
        cr_assert_eq(add(a, at(11, 0)), -ENOSPC);       /* would need a new span */
        cr_assert_eq(agg_load(a, "ctrl_9", "lamp_outage", at(9, 0), at(9, 10)), -ENOSPC);
        agg_stats(a, at(10, 0), &after);
        /* bytes may differ: reserved capacity is not state */
        cr_assert_eq(before.keys, after.keys);
        cr_assert_eq(before.spans, after.spans);
        cr_assert_eq(before.dirty_spans, after.dirty_spans);
        cr_assert_eq(before.strings, after.strings);
        cr_assert_eq(before.horizon, after.horizon);
        cr_assert_eq(agg_key_spans(a, "ctrl_3", "panel_outage", NULL, 0), 0);

        cr_assert_eq(add(a, at(10, 10)), 1);            /* extending is fine */
        cr_assert_eq(add(a, at(10, 0)), 0);             /* so is a duplicate */
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 10), 2);

        flush_all(a, f, 4);
        cr_assert_eq(agg_evict_oldest(a, 1), 1);
        cr_assert_eq(agg_add(a, "ctrl_3", "panel_outage", at(10, 0)), 1);
        agg_free(a);
}

Test(agg, evict_oldest_takes_oldest_clean_spans) {
        Agg *a = new_agg(0, 0);
        AggStats st;
        Fragment f[8];

        agg_add(a, "c1", "t", at(10, 0));
        agg_add(a, "c2", "t", at(9, 0));
        agg_add(a, "c3", "t", at(11, 0));
        agg_add(a, "c3", "t", at(8, 0));                /* c3 has two spans */
        flush_all(a, f, 8);
        agg_add(a, "c4", "t", at(7, 0));                /* dirty: skipped */

        cr_assert_eq(agg_evict_oldest(a, 2), 2);        /* c3@8:00, c2@9:00 */
        agg_stats(a, at(11, 0), &st);
        cr_assert_eq(st.horizon, at(9, 0) + 1);
        cr_assert_eq(st.spans, 3);
        cr_assert_eq(agg_key_spans(a, "c2", "t", NULL, 0), 0);
        cr_assert_eq(agg_key_spans(a, "c3", "t", NULL, 0), 1);
        cr_assert_eq(agg_evict_oldest(a, 10), 2);       /* c1, c3; c4 is dirty */
        cr_assert_eq(agg_key_spans(a, "c4", "t", NULL, 0), 1);
        flush_all(a, f, 8);
        cr_assert_eq(agg_evict_oldest(a, 10), 1);
        agg_stats(a, at(11, 0), &st);
        cr_assert_eq(st.keys, 0);
        cr_assert_eq(st.horizon, at(11, 0) + 1);        /* never lowered */
        agg_free(a);
}

Test(agg, warm_start_recognises_duplicates) {
        usec_t now = at(10, 25);
        Agg *a = new_agg(now - GAP, 0);
        AggSpan s[2];
        Fragment f[4];

        cr_assert_eq(agg_load(a, "ctrl_1", "panel_outage", at(10, 0), at(10, 20)), 0);
        cr_assert_eq(agg_load(a, "ctrl_1", "panel_outage", at(10, 5), at(10, 10)), 0);
        cr_assert_eq(agg_load(a, "ctrl_1", "panel_outage", at(9, 0), at(8, 0)), -EINVAL);
        cr_assert_eq(add(a, at(10, 10)), 0);
        cr_assert_eq(add(a, at(10, 20)), 0);
        cr_assert_eq(add(a, at(10, 3)), 0);
        cr_assert_eq(flush_all(a, f, 4), 0);            /* loaded spans are clean */
        cr_assert_eq(add(a, at(10, 30)), 1);            /* >= horizon + gap: counted */
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 30), 1);
        cr_assert_eq(flush_all(a, f, 4), 1);
        cr_assert_eq(f[0].start, at(10, 0));
        cr_assert_eq(f[0].count, 1);
        cr_assert_eq(f[0].n_uncertain, 0);
        agg_free(a);
}

Test(agg, load_merges_with_dirty_spans) {
        Agg *a = new_agg(0, 0);
        AggSpan s[2];

        add(a, at(10, 30));
        cr_assert_eq(agg_load(a, "ctrl_1", "panel_outage", at(10, 0), at(10, 20)), 0);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 30), 1);
        agg_free(a);
}

Test(agg, uncertain_timestamps_below_horizon_plus_gap) {
        Agg *a = new_agg(at(10, 0), 0);               /* horizon + gap = 10:12 */
        FlushBatch *b = NULL;
        AggSpan s[2];

        cr_assert_eq(add(a, at(10, 5)), 1);
        cr_assert_eq(add(a, at(9, 55)), 1);
        cr_assert_eq(add(a, at(10, 5)), 0);
        cr_assert_eq(add(a, at(10, 12)), 1);            /* exactly horizon + gap: certain */
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(9, 55), at(10, 12), 1);
        cr_assert_eq(s[0].n_uncertain, 2);
        cr_assert_eq(add(a, at(10, 12) - 1), 0);        /* inside */
        cr_assert_eq(add(a, at(9, 45)), 1);             /* another uncertain, merged in order */

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].count, 1);
        cr_assert_eq(b->fragments[0].n_uncertain, 3);
        cr_assert_eq(b->fragments[0].uncertain[0], at(9, 45));
        cr_assert_eq(b->fragments[0].uncertain[1], at(9, 55));
        cr_assert_eq(b->fragments[0].uncertain[2], at(10, 5));
        agg_flush_end(a, b, true);
        cr_assert_eq(spans(a, s), 1);
        cr_assert_eq(s[0].n_uncertain, 0);
        agg_free(a);
}

Test(agg, uncertain_given_back_after_failure_with_merges) {
        Agg *a = new_agg(at(12, 0), 0);               /* everything below is uncertain */
        FlushBatch *b = NULL;
        AggSpan s[3];

        add(a, at(10, 0));
        add(a, at(10, 10));
        add(a, at(10, 34));
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 2);
        cr_assert_eq(add(a, at(10, 22)), 1);            /* bridges both, uncertain */
        cr_assert_eq(add(a, at(9, 50)), 1);
        cr_assert_eq(spans(a, s), 1);
        cr_assert_eq(s[0].n_uncertain, 2);
        agg_flush_end(a, b, false);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(9, 50), at(10, 34), 0);
        cr_assert_eq(s[0].n_uncertain, 5);

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].n_uncertain, 5);
        for (uint32_t i = 1; i < 5; i++)
                cr_assert_lt(b->fragments[0].uncertain[i - 1], b->fragments[0].uncertain[i]);
        agg_flush_end(a, b, true);
        cr_assert_eq(agg_evict_closed(a, at(13, 0)), 1);
        agg_free(a);
}

Test(agg, evicted_duplicates_with_extension_are_uncertain) {
        Agg *a = new_agg(0, 0);
        Fragment f[2];
        AggSpan s[2];

        add(a, at(10, 0));
        add(a, at(10, 10));
        add(a, at(10, 20));
        flush_all(a, f, 2);
        cr_assert_eq(agg_evict_closed(a, at(11, 0)), 1);
        cr_assert_eq(add(a, at(10, 15)), 1);            /* inside the stored event: dropped there */
        cr_assert_eq(add(a, at(10, 25)), 1);            /* below horizon + gap as well */
        cr_assert_eq(add(a, at(10, 40)), 1);            /* 10:32 + 1us and later: counted */
        cr_assert_eq(spans(a, s), 2);
        assert_span(&s[0], at(10, 15), at(10, 25), 0);
        cr_assert_eq(s[0].n_uncertain, 2);
        assert_span(&s[1], at(10, 40), at(10, 40), 1);
        agg_free(a);
}

Test(agg, many_spans_in_one_key_then_merged) {
        Agg *a = new_agg(0, 0);
        AggSpan s[16];

        for (int i = 0; i < 40; i++)
                cr_assert_eq(add(a, DAY0 + i * 2 * GAP), 1);
        cr_assert_eq(agg_key_spans(a, "ctrl_1", "panel_outage", s, 16), 40);
        for (int i = 0; i < 39; i++)
                cr_assert_eq(add(a, DAY0 + i * 2 * GAP + GAP), 1);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], DAY0, DAY0 + 78 * GAP, 79);
        agg_free(a);
}

Test(agg, many_keys_and_eviction_release_everything) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        AggStats st;
        char id[32];

        for (int i = 0; i < 20000; i++) {
                snprintf(id, sizeof id, "ctrl_%d", i);
                cr_assert_eq(agg_add(a, id, i % 2 ? "lamp_outage" : "panel_outage", at(10, i % 60)), 1);
        }
        for (int i = 0; i < 20000; i += 7) {
                snprintf(id, sizeof id, "ctrl_%d", i);
                cr_assert_eq(agg_add(a, id, i % 2 ? "lamp_outage" : "panel_outage", at(10, i % 60)), 0);
        }
        agg_stats(a, at(10, 0), &st);
        cr_assert_eq(st.keys, 20000);
        cr_assert_eq(st.strings, 20002);
        cr_assert_eq(st.dirty_spans, 20000);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 20000);
        agg_flush_end(a, b, true);
        cr_assert_eq(agg_evict_closed(a, at(12, 0)), 20000);
        agg_stats(a, at(12, 0), &st);
        cr_assert_eq(st.keys, 0);
        cr_assert_eq(st.strings, 0);
        cr_assert_eq(st.spans, 0);
        agg_free(a);
}

Test(agg, repeated_flushes_keep_the_heap_bounded) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        AggStats st1, st2;

        for (int round = 0; round < 2000; round++) {
                for (int k = 0; k < 50; k++) {
                        char id[16];

                        snprintf(id, sizeof id, "c%d", k);
                        agg_add(a, id, "t", DAY0 + round * USEC_PER_MINUTE);
                }
                cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
                agg_flush_end(a, b, true);
                if (round == 1000)
                        agg_stats(a, 0, &st1);
        }
        agg_stats(a, 0, &st2);
        cr_assert_eq(st1.bytes, st2.bytes);
        agg_free(a);
}

Test(agg, argument_checks) {
        AggConfig cfg = { .gap = 0 };
        Agg *a = NULL;

        cr_assert_eq(agg_new(&cfg, 0, &a), -EINVAL);
        cr_assert_null(a);
        cr_assert_null(agg_free(NULL));
}

Test(agg, report_in_a_hole_the_store_filled_stays_uncertain) {
        /* The store merged 10:21 with an evicted 10:00-10:10, so it holds 10:00-10:21; memory
         * only knows 10:21. A late 10:15 lies inside the stored event: it must not count,
         * even when it reaches the store in one fragment with a real extension (10:30).
         * This is why reports below horizon + gap, not just below horizon, are uncertain. */
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        Fragment f[2];

        add(a, at(10, 0));
        add(a, at(10, 10));
        flush_all(a, f, 2);
        cr_assert_eq(agg_evict_closed(a, at(11, 0)), 1);        /* horizon 10:10 + 1us */
        cr_assert_eq(add(a, at(10, 21)), 1);
        flush_all(a, f, 2);
        cr_assert_eq(f[0].count, 0);
        cr_assert_eq(f[0].n_uncertain, 1);
        cr_assert_eq(add(a, at(10, 15)), 1);
        cr_assert_eq(add(a, at(10, 30)), 1);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].start, at(10, 15));
        cr_assert_eq(b->fragments[0].end, at(10, 30));
        cr_assert_eq(b->fragments[0].count, 1);
        cr_assert_eq(b->fragments[0].n_uncertain, 1);
        cr_assert_eq(b->fragments[0].uncertain[0], at(10, 15));
        cr_assert(b->complete);
        agg_flush_end(a, b, true);
        agg_free(a);
}

/* 200,000 reports older than the horizon, each extending one span alternately at its start
 * and at its end, flushed whenever the Agg asks: a copy of the span's uncertain timestamps
 * per report made this quadratic (tens of seconds); amortised appends make it milliseconds. */
static size_t take_uncertain(Agg *a, usec_t *out) {
        FlushBatch *b = NULL;
        size_t n;

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        n = b->fragments[0].n_uncertain;
        memcpy(out, b->fragments[0].uncertain, n * sizeof(usec_t));
        agg_flush_end(a, b, true);
        return n;
}

static int cmp_usec(const void *x, const void *y) {
        usec_t a = *(const usec_t *) x, b = *(const usec_t *) y;

        return a < b ? -1 : a > b;
}

Test(agg, late_reports_into_one_span_take_linear_time, .timeout = 10) {
        const size_t n = 200000;
        usec_t mid = DAY0 + (usec_t) n * USEC_PER_MINUTE;
        Agg *a = new_agg(mid + (usec_t) n * USEC_PER_MINUTE + USEC_PER_DAY, 0);
        usec_t *got = malloc(n * sizeof(usec_t));
        size_t n_got = 0, flushes = 0;
        AggSpan s[2];

        cr_assert_not_null(got);
        for (size_t i = 0; i < n; i++) {
                usec_t off = (usec_t) (i + 1) / 2 * USEC_PER_MINUTE;

                cr_assert_eq(add(a, i % 2 ? mid - off : mid + off), 1);
                if (agg_flush_wanted(a)) {
                        size_t m = take_uncertain(a, got + n_got);

                        for (size_t j = 1; j < m; j++)
                                cr_assert_lt(got[n_got + j - 1], got[n_got + j]);
                        n_got += m;
                        flushes++;
                }
        }
        cr_assert_eq(spans(a, s), 1);
        cr_assert_eq(s[0].count, 0);
        cr_assert_eq(s[0].start, mid - (usec_t) n / 2 * USEC_PER_MINUTE);
        cr_assert_eq(s[0].end, mid + (usec_t) (n - 1) / 2 * USEC_PER_MINUTE);
        n_got += take_uncertain(a, got + n_got);
        cr_assert_eq(n_got, n);
        cr_assert_eq(flushes, n / AGG_UNCERTAIN_FLUSH_AT);
        qsort(got, n, sizeof(usec_t), cmp_usec);
        for (size_t i = 1; i < n; i++)
                cr_assert_eq(got[i], got[i - 1] + USEC_PER_MINUTE);
        free(got);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

#define SPACING (7 * USEC_PER_MINUTE)

/* Checks each fragment's timestamps; when commit, marks them seen (once) and counts them. */
static size_t check_batch(const FlushBatch *b, bool commit, const bool *accepted, bool *seen) {
        size_t n = 0;

        for (size_t f = 0; f < b->n; f++) {
                const Fragment *fr = &b->fragments[f];

                for (uint32_t u = 0; u < fr->n_uncertain; u++) {
                        size_t k = (fr->uncertain[u] - DAY0) / SPACING;

                        cr_assert(fr->start <= fr->uncertain[u] && fr->uncertain[u] <= fr->end);
                        if (u > 0)
                                cr_assert_lt(fr->uncertain[u - 1], fr->uncertain[u]);
                        cr_assert(accepted[k]);
                        if (commit) {
                                cr_assert_not(seen[k]);
                                seen[k] = true;
                                n++;
                        }
                }
        }
        return n;
}

Test(agg, uncertain_timestamps_sorted_after_merges_and_give_backs) {
        enum { N = 3000 };
        Agg *a = new_agg(DAY0 + USEC_PER_DAY * 30, 0);
        static usec_t ts[N];
        static bool seen[N], accepted[N];
        uint64_t x = 12345;
        FlushBatch *b = NULL;
        size_t committed = 0, n_accepted = 0;

        for (size_t i = 0; i < N; i++)
                ts[i] = DAY0 + (usec_t) i * SPACING;
        for (size_t i = N; i > 1; i--) {
                size_t j;
                usec_t t;

                x = x * 6364136223846793005u + 1442695040888963407u;
                j = (x >> 33) % i;
                t = ts[i - 1];
                ts[i - 1] = ts[j];
                ts[j] = t;
        }
        for (size_t i = 0; i < N; i++) {
                int r = add(a, ts[i]);

                cr_assert(r == 0 || r == 1);
                if (r == 1) {
                        accepted[(ts[i] - DAY0) / SPACING] = true;
                        n_accepted++;
                }
                if (i % 397 != 0)
                        continue;
                /* end the batch that was out while these reports came, then take another */
                if (b) {
                        bool commit = i % 3 == 0;

                        committed += check_batch(b, commit, accepted, seen);
                        agg_flush_end(a, b, commit);
                }
                cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
                committed += check_batch(b, false, accepted, seen);
        }
        agg_flush_end(a, b, false);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        committed += check_batch(b, true, accepted, seen);
        agg_flush_end(a, b, true);
        cr_assert_eq(committed, n_accepted);
        cr_assert_gt(n_accepted, N / 4);
        cr_assert_eq(agg_key_spans(a, "ctrl_1", "panel_outage", NULL, 0), 1);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

/* Adds m uncertain reports extending ctrl_1's one span upwards from *next, 1 min apart. */
static void add_uncertain(Agg *a, usec_t *next, size_t m) {
        for (size_t i = 0; i < m; i++, *next += USEC_PER_MINUTE)
                cr_assert_eq(add(a, *next), 1, "report %zu", i);
}

static void snapshot(Agg *a, AggStats *st, AggSpan *s, size_t *n) {
        agg_stats(a, DAY0, st);
        *n = spans(a, s);
}

static void assert_same(Agg *a, const AggStats *st0, const AggSpan *s0, size_t n0) {
        AggStats st;
        AggSpan s[16];
        size_t n;

        snapshot(a, &st, s, &n);
        cr_assert_eq(n, n0);
        cr_assert_eq(memcmp(s, s0, n * sizeof(AggSpan)), 0);
        cr_assert_eq(st.keys, st0->keys);
        cr_assert_eq(st.spans, st0->spans);
        cr_assert_eq(st.dirty_spans, st0->dirty_spans);
        cr_assert_eq(st.uncertain, st0->uncertain);
        cr_assert_eq(st.strings, st0->strings);
        cr_assert_eq(st.horizon, st0->horizon);
}

Test(agg, flush_wanted_when_a_span_holds_many_uncertain) {
        Agg *a = new_agg(DAY0 + 30 * USEC_PER_DAY, 0);
        usec_t next = DAY0;
        FlushBatch *b = NULL;

        cr_assert_not(agg_flush_wanted(a));
        add_uncertain(a, &next, AGG_UNCERTAIN_FLUSH_AT - 1);
        cr_assert_eq(agg_add(a, "ctrl_2", "panel_outage", DAY0), 1);   /* another key: no */
        cr_assert_not(agg_flush_wanted(a));
        add_uncertain(a, &next, 1);
        cr_assert(agg_flush_wanted(a));
        cr_assert_eq(add(a, DAY0 + USEC_PER_MINUTE), 0);               /* duplicate */
        cr_assert(agg_flush_wanted(a));

        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);                    /* takes the set */
        cr_assert_not(agg_flush_wanted(a));
        add_uncertain(a, &next, 10);
        agg_flush_end(a, b, false);                                     /* gives it back */
        cr_assert(agg_flush_wanted(a));
        cr_assert_eq(agg_flush_begin(a, 1, &b), 0);                    /* ctrl_1 first in line */
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].n_uncertain, AGG_UNCERTAIN_FLUSH_AT + 10);
        cr_assert_not(agg_flush_wanted(a));
        agg_flush_end(a, b, true);
        cr_assert_not(agg_flush_wanted(a));
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, uncertain_per_span_cap_enospc_until_a_flush_takes_them) {
        Agg *a = new_agg(DAY0 + 30 * USEC_PER_DAY, 0);
        usec_t next = DAY0, top;
        FlushBatch *b = NULL;
        AggStats st0;
        AggSpan s0[16];
        size_t n0;

        add_uncertain(a, &next, AGG_UNCERTAIN_MAX);
        snapshot(a, &st0, s0, &n0);
        cr_assert_eq(s0[0].n_uncertain, AGG_UNCERTAIN_MAX);
        cr_assert_eq(add(a, next), -ENOSPC);                            /* at the end */
        cr_assert_eq(add(a, DAY0 - USEC_PER_MINUTE), -ENOSPC);          /* at the start */
        cr_assert_eq(add(a, next + 20 * USEC_PER_MINUTE), 1);           /* a span of its own */
        assert_span(&s0[0], DAY0, next - USEC_PER_MINUTE, 0);
        cr_assert_eq(add(a, next + 10 * USEC_PER_MINUTE), -ENOSPC);     /* would merge the two */
        next += 21 * USEC_PER_MINUTE;
        cr_assert_eq(add(a, DAY0 + 5 * USEC_PER_MINUTE), 0);            /* duplicates are fine */

        /* the flush takes them: as many again may come while the batch is out (here into
         * the second span) */
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 2);
        add_uncertain(a, &next, AGG_UNCERTAIN_MAX);
        top = next;
        cr_assert_eq(add(a, top), -ENOSPC);
        agg_flush_end(a, b, false);
        /* given back: twice the cap held, still no more until a flush */
        snapshot(a, &st0, s0, &n0);
        cr_assert_eq(n0, 2);
        cr_assert_eq(s0[0].n_uncertain, AGG_UNCERTAIN_MAX);
        cr_assert_eq(s0[1].n_uncertain, AGG_UNCERTAIN_MAX + 1);
        cr_assert_eq(st0.uncertain, 2 * AGG_UNCERTAIN_MAX + 1);
        cr_assert_eq(add(a, top), -ENOSPC);
        assert_same(a, &st0, s0, n0);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        agg_flush_end(a, b, true);
        cr_assert_eq(add(a, top), 1);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, certain_reports_still_join_a_span_at_the_uncertain_cap) {
        Agg *a = new_agg(DAY0, 0);                      /* certain from 00:12 on */
        usec_t next = DAY0 + 12 * USEC_PER_MINUTE - AGG_UNCERTAIN_MAX * USEC_PER_MINUTE;
        AggSpan s[2];

        add_uncertain(a, &next, AGG_UNCERTAIN_MAX);
        cr_assert_eq(next, DAY0 + 12 * USEC_PER_MINUTE);
        cr_assert_eq(add(a, next), 1);                  /* certain: no timestamp to hold */
        cr_assert_eq(spans(a, s), 1);
        cr_assert_eq(s[0].count, 1);
        cr_assert_eq(s[0].n_uncertain, AGG_UNCERTAIN_MAX);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, uncertain_timestamps_count_against_max_events) {
        Agg *a = new_agg(DAY0 + 30 * USEC_PER_DAY, 2);
        usec_t next = DAY0;
        AggStats st0;
        AggSpan s0[16];
        size_t n0;
        Fragment f[2];

        /* one span and 15 timestamps: 1 + 15/8 = 2 events (rounded down) */
        add_uncertain(a, &next, 2 * AGG_UNCERTAIN_PER_EVENT - 1);
        cr_assert_eq(agg_event_count(a), 2);
        cr_assert_eq(agg_span_count(a), 1);
        snapshot(a, &st0, s0, &n0);
        cr_assert_eq(add(a, next), -ENOSPC);                            /* a 16th: 3 events */
        cr_assert_eq(agg_add(a, "ctrl_2", "panel_outage", DAY0 + 40 * USEC_PER_DAY), -ENOSPC);
        cr_assert_eq(agg_load(a, "ctrl_3", "panel_outage", DAY0, DAY0), -ENOSPC);
        assert_same(a, &st0, s0, n0);
        cr_assert_eq(agg_event_count(a), 2);

        flush_all(a, f, 2);                             /* the timestamps went to the store */
        cr_assert_eq(agg_event_count(a), 1);
        cr_assert_eq(agg_add(a, "ctrl_2", "panel_outage", DAY0 + 40 * USEC_PER_DAY), 1);
        cr_assert_eq(agg_event_count(a), 2);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, committed_uncertain_vectors_give_their_memory_back) {
        Agg *a = new_agg(DAY0 + 30 * USEC_PER_DAY, 0);
        usec_t next = DAY0;
        FlushBatch *b = NULL;
        AggStats st0, st;

        add_uncertain(a, &next, 1);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        agg_flush_end(a, b, true);
        add_uncertain(a, &next, 1);
        agg_stats(a, DAY0, &st0);
        add_uncertain(a, &next, AGG_UNCERTAIN_MAX - 1);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        add_uncertain(a, &next, 1);                     /* keeps the vector alive */
        agg_flush_end(a, b, true);
        agg_stats(a, DAY0, &st);
        cr_assert_eq(st.uncertain, 1);
        cr_assert_leq(st.bytes, st0.bytes + 64, "%" PRIu64 " > %" PRIu64 " + 64", st.bytes, st0.bytes);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

/* A span made by one late report keeps its timestamp without a vector: through a failed
 * flush, one that late reports and a stored event join while it is out, and a refusal. */
Test(agg, a_span_of_one_late_report_through_every_kind_of_flush) {
        Agg *a = new_agg(at(12, 0), 0);               /* everything below is uncertain */
        FlushBatch *b = NULL;
        AggSpan s[2];
        AggStats st;

        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(10, 0), at(10, 0), 0);
        cr_assert_eq(s[0].n_uncertain, 1);
        for (int round = 0; round < 2; round++) {
                cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
                cr_assert_eq(b->n, 1);
                cr_assert_eq(b->fragments[0].count, 0);
                cr_assert_eq(b->fragments[0].n_uncertain, 1);
                cr_assert_eq(b->fragments[0].uncertain[0], at(10, 0));
                cr_assert_eq(spans(a, s), 1);
                cr_assert_eq(s[0].n_uncertain, 0);
                cr_assert_eq(agg_dirty_count(a), 0);
                cr_assert_null(agg_check(a), "%s", agg_check(a));
                agg_flush_end(a, b, false);
                cr_assert_eq(spans(a, s), 1);
                cr_assert_eq(s[0].n_uncertain, 1);
                cr_assert_eq(agg_dirty_count(a), 1);
                cr_assert_null(agg_check(a), "%s", agg_check(a));
        }

        /* out again; a late report and a stored event join the span meanwhile */
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(add(a, at(10, 5)), 1);
        cr_assert_eq(agg_load(a, "ctrl_1", "panel_outage", at(9, 50), at(9, 55)), 0);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(9, 50), at(10, 5), 0);
        cr_assert_eq(s[0].n_uncertain, 1);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_flush_end(a, b, false);
        cr_assert_eq(spans(a, s), 1);
        cr_assert_eq(s[0].n_uncertain, 2);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->fragments[0].n_uncertain, 2);
        cr_assert_eq(b->fragments[0].uncertain[0], at(10, 0));
        cr_assert_eq(b->fragments[0].uncertain[1], at(10, 5));
        agg_flush_end(a, b, true);
        agg_stats(a, at(10, 0), &st);
        cr_assert_eq(st.uncertain, 0);

        /* another key's late report, refused for good while out */
        cr_assert_eq(agg_add(a, "ctrl_2", "panel_outage", at(11, 0)), 1);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(agg_flush_refuse(a, b), 0);
        cr_assert_eq(agg_key_spans(a, "ctrl_2", "panel_outage", s, 2), 0);
        agg_stats(a, at(10, 0), &st);
        cr_assert_eq(st.uncertain, 0);
        cr_assert_eq(agg_event_count(a), 1);
        cr_assert_null(agg_check(a), "%s", agg_check(a));

        /* and one refused with a late report added to its span meanwhile */
        cr_assert_eq(agg_add(a, "ctrl_3", "panel_outage", at(11, 0)), 1);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(agg_add(a, "ctrl_3", "panel_outage", at(11, 1)), 1);
        cr_assert_eq(agg_flush_refuse(a, b), 1);
        agg_stats(a, at(10, 0), &st);
        cr_assert_eq(st.uncertain, 0);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

/* n keys with m reports each, 5 minutes apart (one span), and their bytes after a commit. */
static uint64_t keys_bytes(usec_t horizon, int m, bool flushed) {
        Agg *a = new_agg(horizon, 0);
        FlushBatch *b = NULL;
        AggStats st;
        char id[32];

        for (int k = 0; k < 1000; k++) {
                snprintf(id, sizeof(id), "ctrl_%04d", k);
                for (int i = 0; i < m; i++)
                        cr_assert_eq(agg_add(a, id, "panel_outage", at(10, 5 * i)), 1);
        }
        if (flushed) {
                cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
                agg_flush_end(a, b, true);
        }
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_stats(a, at(10, 0), &st);
        agg_free(a);
        return st.bytes;
}

/* A late report costs a new key no more memory than a timely one, and once committed, the
 * vectors of late reports leave nothing behind, their table included. */
Test(agg, late_reports_cost_no_memory_once_committed) {
        uint64_t timely = keys_bytes(0, 1, false);

        cr_assert_eq(keys_bytes(at(12, 0), 1, false), timely);
        cr_assert_eq(keys_bytes(at(12, 0), 1, true), timely);
        cr_assert_eq(keys_bytes(at(12, 0), 2, true), timely);
        cr_assert_gt(keys_bytes(at(12, 0), 2, false), timely);
}

/* ---- refused fragments ---- */

Test(agg, refused_fragment_is_dropped_with_its_key) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        AggStats st;

        add(a, at(10, 0));
        add(a, at(10, 10));
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(agg_flush_refuse(a, b), 0);
        agg_stats(a, at(10, 10), &st);
        cr_assert_eq(st.keys, 0);
        cr_assert_eq(st.spans, 0);
        cr_assert_eq(st.strings, 0);
        cr_assert_eq(st.horizon, at(10, 10) + 1);
        cr_assert_eq(agg_dirty_count(a), 0);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);            /* nothing left to block */
        cr_assert_eq(b->n, 0);
        agg_flush_end(a, b, true);
        /* the same reports again: below the raised horizon + gap, so uncertain */
        cr_assert_eq(add(a, at(10, 0)), 1);
        cr_assert_eq(add(a, at(10, 10)), 1);
        cr_assert_eq(add(a, at(10, 30)), 1);
        agg_stats(a, at(10, 30), &st);
        cr_assert_eq(st.uncertain, 2);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, refused_span_takes_the_reports_added_meanwhile) {
        Agg *a = new_agg(at(9, 30), 0);                /* certain from 9:42 */
        FlushBatch *b = NULL;
        AggSpan s[4];
        Fragment f[4];

        add(a, at(10, 0));
        add(a, at(11, 0));                              /* a second span */
        agg_add(a, "ctrl_2", "panel_outage", at(10, 0));
        cr_assert_eq(agg_flush_begin(a, 1, &b), 0);    /* ctrl_1 10:00 only */
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].start, at(10, 0));
        cr_assert_eq(add(a, at(10, 10)), 1);            /* extends the refused span */
        cr_assert_eq(add(a, at(9, 38)), 1);             /* uncertain, a span of its own */
        cr_assert_eq(spans(a, s), 3);
        cr_assert_eq(add(a, at(9, 49)), 1);             /* bridges it to the refused span */
        cr_assert_eq(spans(a, s), 2);
        assert_span(&s[0], at(9, 38), at(10, 10), 2);
        cr_assert_eq(s[0].n_uncertain, 1);
        cr_assert_eq(agg_flush_refuse(a, b), 3);        /* 10:10, 9:49 and uncertain 9:38 */

        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(11, 0), at(11, 0), 1);
        cr_assert_eq(agg_key_spans(a, "ctrl_2", "panel_outage", NULL, 0), 1);
        cr_assert_eq(flush_all(a, f, 4), 2);            /* the others flush as before */
        cr_assert_eq(flush_all(a, f, 4), 0);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, refused_fragments_merged_meanwhile_drop_once) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        AggStats st;

        add(a, at(10, 0));
        add(a, at(10, 24));
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 2);
        cr_assert_eq(add(a, at(10, 12)), 1);            /* one span covers both fragments */
        cr_assert_eq(agg_flush_refuse(a, b), 1);
        agg_stats(a, at(10, 24), &st);
        cr_assert_eq(st.keys, 0);
        cr_assert_eq(st.spans, 0);
        cr_assert_eq(st.horizon, at(10, 24) + 1);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, refused_span_merged_with_a_dirty_one_leaves_no_dirty_key) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;

        add(a, at(10, 0));
        add(a, at(10, 24));
        cr_assert_eq(agg_flush_begin(a, 1, &b), 0);    /* 10:00; 10:24 stays dirty */
        cr_assert_eq(b->n, 1);
        cr_assert_not(b->complete);
        cr_assert_eq(agg_dirty_count(a), 1);
        cr_assert_eq(add(a, at(10, 12)), 1);
        cr_assert_eq(agg_flush_refuse(a, b), 2);        /* 10:24 waiting, 10:12 new */
        cr_assert_eq(agg_dirty_count(a), 0);
        cr_assert_eq(agg_span_count(a), 0);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 0);
        cr_assert(b->complete);
        agg_flush_end(a, b, true);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, key_left_with_clean_spans_after_a_refusal_is_still_evicted) {
        Agg *a = new_agg(0, 0);
        FlushBatch *b = NULL;
        Fragment f[4];
        AggSpan s[2];

        /* the refused span is the key's oldest: its clean successor must become evictable */
        add(a, at(11, 0));
        flush_all(a, f, 4);
        for (int i = 0; i < 1100; i++) {
                agg_add(a, "ctrl_2", "panel_outage", at(12, 0) + i);
                flush_all(a, f, 4);
        }
        add(a, at(10, 0));
        /* a compaction drops the stale entries, ctrl_1's included: no old heap entry is left
         * to stand in for the one the refusal must make */
        cr_assert_eq(agg_evict_closed(a, 0), 0);
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(agg_flush_refuse(a, b), 0);
        cr_assert_eq(spans(a, s), 1);
        assert_span(&s[0], at(11, 0), at(11, 0), 0);
        cr_assert_eq(agg_evict_closed(a, at(11, 12)), 0);
        cr_assert_eq(agg_evict_closed(a, at(11, 12) + 1), 1);
        cr_assert_eq(agg_key_spans(a, "ctrl_1", "panel_outage", NULL, 0), 0);
        cr_assert_eq(agg_evict_closed(a, at(13, 0)), 1);                /* ctrl_2 */

        /* and a key that still has something to flush after it keeps it */
        add(a, at(14, 0));
        add(a, at(15, 0));
        cr_assert_eq(agg_flush_begin(a, 1, &b), 0);
        cr_assert_eq(agg_flush_refuse(a, b), 0);
        cr_assert_eq(agg_dirty_count(a), 1);
        cr_assert_eq(flush_all(a, f, 4), 1);
        cr_assert_eq(f[0].start, at(15, 0));
        cr_assert_eq(agg_evict_closed(a, at(16, 0)), 1);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, refused_uncertain_timestamps_leave_the_accounting) {
        Agg *a = new_agg(DAY0 + 30 * USEC_PER_DAY, 0);
        usec_t next = DAY0;
        FlushBatch *b = NULL;
        AggStats st;

        add_uncertain(a, &next, AGG_UNCERTAIN_FLUSH_AT);
        cr_assert(agg_flush_wanted(a));
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        add_uncertain(a, &next, AGG_UNCERTAIN_FLUSH_AT);
        cr_assert(agg_flush_wanted(a));
        cr_assert_eq(agg_flush_refuse(a, b), AGG_UNCERTAIN_FLUSH_AT);
        cr_assert_not(agg_flush_wanted(a));
        agg_stats(a, DAY0, &st);
        cr_assert_eq(st.uncertain, 0);
        cr_assert_eq(st.spans, 0);
        cr_assert_eq(agg_event_count(a), 0);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

/* ---- warm start that does not fit ---- */

Test(agg, unloaded_stored_event_makes_its_duplicates_uncertain) {
        Agg *a = new_agg(at(9, 0), 1);                 /* the warm start loads ends >= 9:00 */
        FlushBatch *b = NULL;
        AggStats st;

        cr_assert_eq(agg_load(a, "ctrl_2", "lamp_outage", at(9, 5), at(9, 10)), 0);
        cr_assert_eq(agg_load(a, "ctrl_1", "panel_outage", at(10, 0), at(10, 20)), -ENOSPC);
        agg_skip_stored(a, at(10, 20));
        agg_stats(a, at(10, 25), &st);
        cr_assert_eq(st.horizon, at(10, 20) + 1);
        cr_assert_eq(st.spans, 1);
        cr_assert_eq(agg_key_spans(a, "ctrl_1", "panel_outage", NULL, 0), 0);

        cr_assert_eq(agg_evict_oldest(a, 1), 1);       /* memory pressure: room for a report */
        cr_assert_eq(add(a, at(10, 10)), 1);            /* a duplicate of the unloaded event */
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->n, 1);
        cr_assert_eq(b->fragments[0].count, 0);         /* the store decides: inside, dropped */
        cr_assert_eq(b->fragments[0].n_uncertain, 1);
        cr_assert_eq(b->fragments[0].uncertain[0], at(10, 10));
        agg_flush_end(a, b, true);
        cr_assert_eq(agg_evict_oldest(a, 1), 1);
        cr_assert_eq(add(a, at(10, 33)), 1);            /* >= 10:20 + 1us + gap: counted */
        cr_assert_eq(agg_flush_begin(a, 0, &b), 0);
        cr_assert_eq(b->fragments[0].count, 1);
        agg_flush_end(a, b, true);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}

Test(agg, skip_stored_raises_the_horizon_and_never_lowers_it) {
        Agg *a = new_agg(at(10, 0), 0);
        AggStats st;
        AggSpan s[2];

        agg_skip_stored(a, at(11, 0));
        agg_stats(a, 0, &st);
        cr_assert_eq(st.horizon, at(11, 0) + 1);
        agg_skip_stored(a, at(10, 30));
        agg_stats(a, 0, &st);
        cr_assert_eq(st.horizon, at(11, 0) + 1);
        cr_assert_eq(add(a, at(11, 0)), 1);
        cr_assert_eq(add(a, at(11, 12)), 1);            /* < 11:00 + 1us + gap */
        cr_assert_eq(add(a, at(11, 13)), 1);            /* certain */
        cr_assert_eq(spans(a, s), 1);
        cr_assert_eq(s[0].n_uncertain, 2);
        cr_assert_eq(s[0].count, 1);
        agg_skip_stored(a, INT64_MAX);                  /* saturates */
        agg_stats(a, 0, &st);
        cr_assert_eq(st.horizon, INT64_MAX);
        cr_assert_null(agg_check(a), "%s", agg_check(a));
        agg_free(a);
}
