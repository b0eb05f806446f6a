/* test_apply.c — unit tests of daemon/apply.c: journal order, the processed position,
 * rejects (message and item level, topic truncation, the byte bound), the cursor across a
 * full memory, the time budget, and every allocation failing in turn. Linked with
 * --wrap for malloc, calloc, realloc and strdup (see tests/meson.build). */
#include <criterion/criterion.h>
#include <stdio.h>

#include "apply.h"

#define DAY0 ((usec_t) 20784 * USEC_PER_DAY)    /* 2026-11-27T00:00:00Z */
#define GAP (12 * USEC_PER_MINUTE)

/* ---- allocation failure injection ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);

static long fail_countdown = -1;        /* the Nth allocation from now fails; -1: none */
static long fails;

static bool fail_now(void) {
        if (fail_countdown < 0)
                return false;
        if (fail_countdown-- == 0) {
                fails++;
                return true;
        }
        return false;
}
void *__wrap_malloc(size_t n) { return fail_now() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return fail_now() ? NULL : __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return fail_now() ? NULL : __real_realloc(p, n); }
char *__wrap_strdup(const char *s) { return fail_now() ? NULL : __real_strdup(s); }

/* ---- helpers ---- */

static const ReportRules rules = {
        .max_payload = 65536,
        .max_batch_items = 1000,
        .max_future_skew = 5 * USEC_PER_MINUTE,
        .max_age = 0,
};
static const ApplyConfig cfg = {
        .topic_filter = "outages/+",
        .rules = &rules,
        .max_reject_bytes = 1 << 20,
};

static Agg *new_agg(uint64_t max_events) {
        AggConfig ac = { .gap = GAP, .max_events = max_events, .hash_seed = 1 };
        Agg *a = NULL;

        cr_assert_eq(agg_new(&ac, 0, &a), 0);
        return a;
}

static QueueItem *item(uint64_t seq, const char *topic, const char *payload) {
        QueueItem *i = queue_item_new(seq, DAY0 + USEC_PER_DAY, topic, strlen(topic), payload, strlen(payload));

        cr_assert_not_null(i);
        return i;
}

/* A list of the n items, in order. */
static QueueItem *list(QueueItem **items, size_t n) {
        for (size_t i = 0; i + 1 < n; i++)
                items[i]->next = items[i + 1];
        return n ? items[0] : NULL;
}

static size_t n_spans(Agg *a, const char *id) {
        AggSpan s[8];

        return agg_key_spans(a, id, "panel_outage", s, 8);
}

Test(apply, applies_in_order_and_moves_the_position) {
        Agg *agg = new_agg(0);
        Apply *a = NULL;
        QueueItem *it[3] = {
                item(5, "outages/c1", "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T10:00:00Z\"}"),
                item(6, "outages/c1", "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T10:10:00Z\"}"),
                item(7, "outages/c1", "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T10:10:00Z\"}"),
        };

        cr_assert_eq(apply_new(agg, &cfg, &a), 0);
        apply_set_processed_seq(a, 4);
        apply_push(a, list(it, 3));
        cr_assert_eq(apply_pending(a), 3);
        cr_assert_gt(apply_pending_bytes(a), 0);
        cr_assert_eq(apply_run(a, 0), 0);
        cr_assert(apply_idle(a));
        cr_assert_eq(apply_pending_bytes(a), 0);
        cr_assert_eq(apply_processed_seq(a), 7);
        cr_assert_eq(apply_stats(a)->accepted, 2);
        cr_assert_eq(apply_stats(a)->duplicate, 1);
        cr_assert_eq(n_spans(agg, "c1"), 1);
        apply_free(a);
        agg_free(agg);
}

Test(apply, rejects_carry_reason_topic_and_payload) {
        Agg *agg = new_agg(0);
        Apply *a = NULL;
        RejectBatch b;
        QueueItem *it[3] = {
                item(1, "outages/bad id", "{}"),
                item(2, "outages/c1", "[{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T10:00:00Z\"},7]"),
                item(3, "outages/c1", "nope"),
        };

        cr_assert_eq(apply_new(agg, &cfg, &a), 0);
        apply_push(a, list(it, 3));
        cr_assert_eq(apply_run(a, 0), 0);
        cr_assert(apply_has_rejects(a));
        cr_assert_eq(apply_take_rejects(a, &b), 0);
        cr_assert_eq(b.n, 3);
        cr_assert_str_eq(b.rows[0].reason, "bad_controller_id");
        cr_assert_null(b.rows[0].controller_id);
        cr_assert_str_eq(b.rows[0].topic, "outages/bad id");
        cr_assert_str_eq(b.rows[1].reason, "not_a_report");
        cr_assert_str_eq(b.rows[1].controller_id, "c1");
        cr_assert_str_eq(b.rows[1].payload, "7");
        cr_assert_str_eq(b.rows[2].reason, "malformed_json");
        cr_assert_str_eq(b.rows[2].payload, "nope");
        cr_assert_eq(apply_stats(a)->rejects[REJECT_MALFORMED_JSON], 1);
        cr_assert_eq(apply_stats(a)->accepted, 1);
        cr_assert(!apply_has_rejects(a));
        reject_batch_clear(&b);
        apply_free(a);
        agg_free(agg);
}

Test(apply, reject_topic_is_cut_at_1KiB_and_escaped) {
        Agg *agg = new_agg(0);
        Apply *a = NULL;
        RejectBatch b;
        char topic[5000];

        memcpy(topic, "outages/", 8);
        memset(topic + 8, 'x', sizeof(topic) - 9);
        topic[sizeof(topic) - 1] = '\0';
        topic[20] = '\x01';     /* not escaped: valid UTF-8 */
        topic[21] = '\xff';     /* escaped */
        cr_assert_eq(apply_new(agg, &cfg, &a), 0);
        apply_push(a, item(1, topic, "{}"));
        cr_assert_eq(apply_run(a, 0), 0);
        cr_assert_eq(apply_take_rejects(a, &b), 0);
        cr_assert_eq(b.n, 1);
        cr_assert_eq(strlen(b.rows[0].topic), 1024 + 3);        /* one byte became \xff */
        cr_assert(strstr(b.rows[0].topic, "\\xff"));
        reject_batch_clear(&b);
        apply_free(a);
        agg_free(agg);
}

Test(apply, rejects_full_holds_the_messages) {
        ApplyConfig small = cfg;
        Agg *agg = new_agg(0);
        Apply *a = NULL;
        RejectBatch b;

        small.max_reject_bytes = 1;
        cr_assert_eq(apply_new(agg, &small, &a), 0);
        apply_push(a, item(1, "outages/c1", "x"));
        apply_push(a, item(2, "outages/c1", "y"));
        cr_assert_eq(apply_run(a, 0), -ENOSPC);
        cr_assert(apply_rejects_full(a));
        cr_assert_eq(apply_processed_seq(a), 1);
        cr_assert_eq(apply_pending(a), 1);
        /* A flush takes them: room again. */
        cr_assert_eq(apply_take_rejects(a, &b), 0);
        cr_assert_eq(apply_run(a, 0), 0);
        cr_assert_eq(apply_processed_seq(a), 2);
        cr_assert(apply_rejects_full(a));
        reject_batch_clear(&b);
        apply_free(a);
        agg_free(agg);
}

Test(apply, failed_flush_rejects_come_back_first) {
        Agg *agg = new_agg(0);
        Apply *a = NULL;
        RejectBatch b, c;

        cr_assert_eq(apply_new(agg, &cfg, &a), 0);
        apply_push(a, item(1, "outages/c1", "a"));
        cr_assert_eq(apply_run(a, 0), 0);
        cr_assert_eq(apply_take_rejects(a, &b), 0);
        apply_push(a, item(2, "outages/c1", "b"));
        cr_assert_eq(apply_run(a, 0), 0);
        apply_return_rejects(a, &b);
        cr_assert_eq(b.n, 0);
        cr_assert_eq(apply_take_rejects(a, &c), 0);
        cr_assert_eq(c.n, 2);
        cr_assert_str_eq(c.rows[0].payload, "a");
        cr_assert_str_eq(c.rows[1].payload, "b");
        reject_batch_clear(&c);
        apply_free(a);
        agg_free(agg);
}

Test(apply, memory_full_keeps_the_cursor_inside_a_message) {
        Agg *agg = new_agg(2);
        Apply *a = NULL;
        FlushBatch *fb = NULL;
        QueueItem *i = item(9, "outages/c1",
                            "[{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T01:00:00Z\"},"
                            "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T03:00:00Z\"},"
                            "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T05:00:00Z\"}]");

        cr_assert_eq(apply_new(agg, &cfg, &a), 0);
        apply_push(a, i);
        cr_assert_eq(apply_run(a, 0), -ENOSPC);
        cr_assert_eq(apply_processed_seq(a), 0, "a message in part is not processed");
        cr_assert_eq(apply_stats(a)->accepted, 2);
        /* Flush and evict make room; the third item goes in, and only it. */
        cr_assert_eq(agg_flush_begin(agg, 0, &fb), 0);
        agg_flush_end(agg, fb, true);
        cr_assert_eq(agg_evict_oldest(agg, 2), 2);
        cr_assert_eq(apply_run(a, 0), 0);
        cr_assert_eq(apply_stats(a)->accepted, 3);
        cr_assert_eq(apply_processed_seq(a), 9);
        apply_free(a);
        agg_free(agg);
}

Test(apply, deadline_yields_and_resumes) {
        Agg *agg = new_agg(0);
        Apply *a = NULL;
        char payload[128];

        cr_assert_eq(apply_new(agg, &cfg, &a), 0);
        for (int k = 0; k < 1000; k++) {
                snprintf(payload, sizeof(payload),
                         "{\"outage_type\":\"panel_outage\",\"timestamp\":%lld}", (long long) (DAY0 / USEC_PER_SEC + k * 60));
                apply_push(a, item((uint64_t) k + 1, "outages/c1", payload));
        }
        /* A deadline in the past: it yields after the first stretch of messages. */
        cr_assert_eq(apply_run(a, 1), -EAGAIN);
        cr_assert_gt(apply_processed_seq(a), 0);
        cr_assert_lt(apply_processed_seq(a), 1000);
        cr_assert_eq(apply_run(a, 0), 0);
        cr_assert_eq(apply_processed_seq(a), 1000);
        apply_free(a);
        agg_free(agg);
}

/* Runs the same messages with the Nth allocation failing, retrying after each -ENOMEM;
 * the result must equal a run without failures: nothing skipped, nothing twice. */
static void run_with_failure(long nth, uint64_t *ret_accepted, size_t *ret_rejects, uint64_t *ret_seq,
                             size_t *ret_spans) {
        Agg *agg = new_agg(0);
        Apply *a = NULL;
        RejectBatch b = {};
        int r;

        cr_assert_eq(apply_new(agg, &cfg, &a), 0);
        apply_push(a, item(1, "outages/c1",
                           "[{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T01:00:00Z\"},"
                           "{\"outage_type\":\"lamp_outage\",\"timestamp\":\"2026-11-27T01:00:00Z\"},"
                           "{\"timestamp\":\"2026-11-27T01:00:00Z\"},"
                           "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T03:00:00Z\"}]"));
        apply_push(a, item(2, "outages/bad id", "{}"));
        apply_push(a, item(3, "outages/c2", "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T04:00:00Z\"}"));
        fail_countdown = nth;
        while ((r = apply_run(a, 0)) == -ENOMEM)
                fail_countdown = -1;
        fail_countdown = -1;
        cr_assert_eq(r, 0);
        cr_assert_eq(apply_take_rejects(a, &b), 0);
        *ret_accepted = apply_stats(a)->accepted;
        *ret_rejects = b.n;
        *ret_seq = apply_processed_seq(a);
        *ret_spans = n_spans(agg, "c1") + n_spans(agg, "c2");
        reject_batch_clear(&b);
        apply_free(a);
        agg_free(agg);
}

Test(apply, every_allocation_failure_is_retried_without_loss) {
        uint64_t acc0, seq0, acc, seq;
        size_t rej0, sp0, rej, sp;
        long n;

        run_with_failure(-1, &acc0, &rej0, &seq0, &sp0);
        cr_assert_eq(acc0, 4);
        cr_assert_eq(rej0, 2);
        cr_assert_eq(seq0, 3);
        cr_assert_eq(sp0, 3);
        for (n = 0; n < 200; n++) {
                fails = 0;
                run_with_failure(n, &acc, &rej, &seq, &sp);
                cr_assert_eq(acc, acc0, "allocation %ld failing", n);
                cr_assert_eq(rej, rej0, "allocation %ld failing", n);
                cr_assert_eq(seq, seq0, "allocation %ld failing", n);
                cr_assert_eq(sp, sp0, "allocation %ld failing", n);
                if (fails == 0)
                        break;  /* past the last allocation of the scenario */
        }
        cr_assert_gt(n, 10, "the scenario allocates: %ld allocations failed in turn", n);
}
