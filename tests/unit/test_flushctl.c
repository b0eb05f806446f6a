/* test_flushctl.c — unit tests of daemon/flushctl.c against a fake flusher defined here
 * (the real one is not linked: this file provides the flusher_* functions flushctl uses),
 * so every outcome of a job can be played: commit, connection failure, lost COMMIT,
 * refused transaction, refused fragment. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "flushctl.h"
#include "harness.h"

#define DAY0 ((usec_t) 20784 * USEC_PER_DAY)
#define GAP (12 * USEC_PER_MINUTE)

/* ---- the fake flusher ---- */

static FlushJob *submitted, *completed;

int flusher_submit(Flusher *f, FlushJob *job) {
        if (submitted)
                return -EBUSY;
        submitted = job;
        return 0;
}

FlushJob *flusher_take(Flusher *f) {
        FlushJob *j = completed;

        completed = NULL;
        return j;
}

int flusher_fd(const Flusher *f) {
        return -1;
}

bool flusher_connected(const Flusher *f) {
        return true;
}

/* The fake thread finishes the submitted job with result. */
static FlushJob *finish(int result, const char *error) {
        FlushJob *j = submitted;

        cr_assert_not_null(j, "no job submitted");
        submitted = NULL;
        j->result = result;
        snprintf(j->error, sizeof(j->error), "%s", error ? error : "");
        completed = j;
        return j;
}

/* ---- fixture ---- */

static const ReportRules rules = { .max_payload = 65536, .max_batch_items = 1000, .max_future_skew = USEC_PER_DAY };
static const ApplyConfig acfg = { .topic_filter = "outages/+", .rules = &rules, .max_reject_bytes = 1 << 20 };
static FlushCtlConfig fcfg = { .batch_max = 100, .topic_filter = "outages/+" };
static char dir[256];
static Agg *agg;
static Apply *apply;
static Journal *journal;
static FlushCtl *fc;

static void setup(void) {
        AggConfig ac = { .gap = GAP, .hash_seed = 1 };

        submitted = completed = NULL;
        { char *d = harness_mkdtemp("flushctl"); snprintf(dir, sizeof(dir), "%s", d); free(d); }
        cr_assert_eq(agg_new(&ac, 0, &agg), 0);
        cr_assert_eq(apply_new(agg, &acfg, &apply), 0);
        cr_assert_eq(journal_open(dir, 0, &journal), 0);
        cr_assert_eq(flushctl_new(agg, apply, NULL, journal, &fcfg, 0, &fc), 0);
}

static void teardown(void) {
        submitted = completed = NULL;
        fc = flushctl_free(fc);
        apply = apply_free(apply);
        agg = agg_free(agg);
        journal = journal_free(journal);
        harness_rm_rf(dir);
}

TestSuite(flushctl, .init = setup, .fini = teardown);

/* One journaled message per controller, applied. */
static void feed(uint64_t seq, const char *id, const char *payload) {
        char topic[64];
        uint64_t jseq;
        QueueItem *i;

        snprintf(topic, sizeof(topic), "outages/%s", id);
        cr_assert_eq(journal_append(journal, DAY0 + USEC_PER_HOUR, topic, payload, strlen(payload), &jseq), 0);
        cr_assert_eq(jseq, seq);
        i = queue_item_new(seq, DAY0 + USEC_PER_HOUR, topic, strlen(topic), payload, strlen(payload));
        apply_push(apply, i);
        cr_assert_eq(apply_run(apply, 0), 0);
}

static const char report[] = "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T00:30:00Z\"}";

Test(flushctl, nothing_to_do_starts_nothing) {
        cr_assert(!flushctl_needed(fc));
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 0);
        cr_assert_null(submitted);
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_NONE);
}

Test(flushctl, commit_moves_the_checkpoint_and_carries_the_rejects) {
        feed(1, "c1", report);
        feed(2, "c2", "not json");
        cr_assert(flushctl_needed(fc));
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 0, "one job at a time");
        cr_assert_eq(submitted->batch->n, 1);
        cr_assert_eq(submitted->n_rejects, 1);
        cr_assert_eq(submitted->seq, 2);
        cr_assert(flushctl_busy(fc));
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_COMMITTED);
        cr_assert(!flushctl_busy(fc));
        cr_assert_eq(flushctl_committed_seq(fc), 2);
        cr_assert(!flushctl_needed(fc));
        cr_assert_eq(flushctl_stats(fc)->ok, 1);
        cr_assert_eq(flushctl_stats(fc)->fragments, 1);
        cr_assert_eq(flushctl_stats(fc)->rejects, 1);
        cr_assert_gt(flushctl_stats(fc)->last_ok_realtime, 0);
}

Test(flushctl, a_partial_batch_keeps_the_checkpoint_and_the_rejects) {
        FlushCtlConfig small = fcfg;

        flushctl_free(fc);
        small.batch_max = 1;
        cr_assert_eq(flushctl_new(agg, apply, NULL, journal, &small, 0, &fc), 0);
        feed(1, "c1", report);
        feed(2, "c2", report);
        feed(3, "c3", "[]");
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->batch->n, 1);
        cr_assert_eq(submitted->seq, 0, "partial: the checkpoint stays");
        cr_assert_eq(submitted->n_rejects, 0, "partial: the rejects stay");
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_COMMITTED);
        cr_assert(flushctl_more(fc));
        cr_assert_eq(flushctl_committed_seq(fc), 0);
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->seq, 3, "the last batch is complete");
        cr_assert_eq(submitted->n_rejects, 1);
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_COMMITTED);
        cr_assert(!flushctl_more(fc));
        cr_assert_eq(flushctl_committed_seq(fc), 3);
}

Test(flushctl, a_failure_gives_back_and_backs_off) {
        uint64_t id;

        feed(1, "c1", report);
        feed(2, "c2", "x");
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        id = submitted->flush_id;
        finish(-ECONNREFUSED, "could not connect");
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_FAILED);
        cr_assert(!flushctl_busy(fc), "the batch was given back");
        cr_assert_gt(flushctl_retry_at(fc), now_monotonic());
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 0, "backing off");
        cr_assert_eq(flushctl_stats(fc)->failures, 1);
        flushctl_retry_now(fc);
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_neq(submitted->flush_id, id, "a new job");
        cr_assert_eq(submitted->batch->n, 1);
        cr_assert_eq(submitted->batch->fragments[0].count, 1, "the count was given back, once");
        cr_assert_eq(submitted->n_rejects, 1, "the reject was given back");
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_COMMITTED);
        cr_assert_eq(flushctl_stats(fc)->failures, 0);
        cr_assert_eq(flushctl_retry_at(fc), 0);
}

Test(flushctl, a_lost_commit_resubmits_the_same_job) {
        FlushJob *j;
        uint64_t id;

        feed(1, "c1", report);
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        j = submitted;
        id = j->flush_id;
        finish(-EAGAIN, "server closed the connection");
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_FAILED);
        cr_assert(flushctl_busy(fc), "the batch stays out: its outcome is unknown");
        flushctl_retry_now(fc);
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted, j);
        cr_assert_eq(submitted->flush_id, id, "resolved by the same flush_id");
}

Test(flushctl, a_refused_transaction_halves_the_batch) {
        char id[16];

        for (int k = 0; k < 8; k++) {
                snprintf(id, sizeof(id), "c%d", k);
                feed((uint64_t) k + 1, id, report);
        }
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->batch->n, 8);
        finish(-EIO, "check constraint");
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_FAILED);
        flushctl_retry_now(fc);
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->batch->n, 4);
        cr_assert_eq(submitted->seq, 0, "a cut batch keeps the checkpoint");
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_COMMITTED);
        cr_assert(flushctl_more(fc));
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->batch->n, 4, "the limit grows back after a success");
}

Test(flushctl, a_refused_fragment_is_recorded_and_dropped) {
        AggSpan sp[2];
        size_t n;

        /* Halving brought the batch down to the one fragment the database refuses. */
        feed(1, "poison", report);
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->batch->n, 1);
        finish(-EIO, "new row violates check constraint \"no_poison\"");
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_FAILED);
        cr_assert_eq(flushctl_stats(fc)->refused, 1);
        cr_assert_eq(flushctl_retry_at(fc), 0, "the others go on at once");
        n = agg_key_spans(agg, "poison", "panel_outage", sp, 2);
        cr_assert_eq(n, 0, "the refused span is gone from memory (%zu spans, count %u)", n, n ? sp[0].count : 0);

        /* The refusal itself is a reject row, and the round completes with the others. */
        feed(2, "c2", report);
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->batch->n, 1);
        cr_assert_str_eq(submitted->batch->fragments[0].controller_id, "c2");
        cr_assert_eq(submitted->n_rejects, 1);
        cr_assert_str_eq(submitted->rejects[0].reason, "store_refused");
        cr_assert_str_eq(submitted->rejects[0].topic, "outages/poison");
        cr_assert_str_eq(submitted->rejects[0].controller_id, "poison");
        cr_assert(strstr(submitted->rejects[0].payload, "\"controller_id\":\"poison\""));
        cr_assert(strstr(submitted->rejects[0].payload, "\"start_time\":\"2026-11-27T00:30:00"));
        cr_assert(strstr(submitted->rejects[0].detail, "no_poison"));
        cr_assert_eq(submitted->seq, 2);
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_COMMITTED);
        cr_assert_eq(flushctl_committed_seq(fc), 2);
        cr_assert(!flushctl_needed(fc));
}

Test(flushctl, refused_rejects_alone_are_dropped) {
        feed(1, "c1", "x");
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->batch->n, 0);
        finish(-EIO, "refused");
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_FAILED);
        cr_assert(!apply_has_rejects(apply));
        cr_assert_eq(flushctl_retry_at(fc), 0);
        cr_assert(flushctl_needed(fc), "the checkpoint still moves");
        cr_assert_eq(flushctl_start(fc, now_monotonic()), 1);
        cr_assert_eq(submitted->n_rejects, 0);
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now_monotonic()), FLUSH_COMMITTED);
        cr_assert_eq(flushctl_committed_seq(fc), 1);
}

/* ---- the flush policy while input streams in ---- */

/* rounds messages for each of keys controllers, round-robin, from seq first on; returns
 * the next seq. */
static uint64_t feed_keys(uint64_t first, unsigned keys, unsigned rounds) {
        uint64_t seq = first;

        for (unsigned r = 0; r < rounds; r++)
                for (unsigned k = 0; k < keys; k++) {
                        char id[32];

                        snprintf(id, sizeof(id), "c%u", k);
                        feed(seq++, id, report);
                }
        return seq;
}

Test(flushctl, a_tick_defers_while_a_backlog_streams_in_and_flushes_once_idle) {
        usec_t now = now_monotonic() + USEC_PER_HOUR;

        /* several messages per dirty key, over many keys: a backlog */
        feed_keys(1, 1000, 3);
        flushctl_note_input(fc, now);
        cr_assert(flushctl_input_busy(fc, now));
        cr_assert_gt(flushctl_defer(fc, now, USEC_PER_SEC), 0);
        flushctl_note_input(fc, now + USEC_PER_SEC);
        cr_assert_gt(flushctl_defer(fc, now + USEC_PER_SEC, USEC_PER_SEC), 0, "still busy: still deferred");
        /* the input goes idle: flush now */
        now += USEC_PER_SEC + FLUSHCTL_INPUT_IDLE;
        cr_assert(!flushctl_input_busy(fc, now));
        cr_assert_eq(flushctl_defer(fc, now, USEC_PER_SEC), 0);
}

Test(flushctl, a_deferral_ends_after_thirty_seconds_of_busy_input) {
        usec_t now = now_monotonic() + USEC_PER_HOUR;

        feed_keys(1, 1000, 3);
        flushctl_note_input(fc, now);
        cr_assert_gt(flushctl_defer(fc, now, USEC_PER_SEC), 0);
        flushctl_note_input(fc, now + 29 * USEC_PER_SEC);
        cr_assert_gt(flushctl_defer(fc, now + 29 * USEC_PER_SEC, USEC_PER_SEC), 0);
        flushctl_note_input(fc, now + 30 * USEC_PER_SEC);
        cr_assert_eq(flushctl_defer(fc, now + 30 * USEC_PER_SEC, USEC_PER_SEC), 0, "latency bound");
}

Test(flushctl, new_keys_or_no_input_flush_on_the_tick) {
        usec_t now = now_monotonic() + USEC_PER_HOUR;

        uint64_t seq = feed_keys(1, 1000, 1);

        flushctl_note_input(fc, now);
        cr_assert_eq(flushctl_defer(fc, now, USEC_PER_SEC), 0, "one message per key: nothing to merge by waiting");
        seq = feed_keys(seq, 1000, 2);
        cr_assert_eq(flushctl_defer(fc, now + 2 * FLUSHCTL_INPUT_IDLE, USEC_PER_SEC), 0, "input idle");
        /* after a job, only the messages since count */
        cr_assert_eq(flushctl_start(fc, now), 1);
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now), FLUSH_COMMITTED);
        for (unsigned k = 0; k < 1000; k++) {
                char id[32];

                snprintf(id, sizeof(id), "new%u", k);
                feed(seq++, id, report);
        }
        flushctl_note_input(fc, now);
        cr_assert_eq(flushctl_defer(fc, now, USEC_PER_SEC), 0, "new keys since the job");
        seq = feed_keys(seq, 1000, 2);
        cr_assert_gt(flushctl_defer(fc, now, USEC_PER_SEC), 0, "then the same keys again: a backlog");
}

Test(flushctl, a_flood_from_a_few_controllers_does_not_defer) {
        usec_t now = now_monotonic() + USEC_PER_HOUR;
        uint64_t seq = feed_keys(1, 50, 1);

        for (int i = 0; i < 5000; i++)
                feed(seq++, "flooder", report);
        flushctl_note_input(fc, now);
        cr_assert_eq(flushctl_defer(fc, now, USEC_PER_SEC), 0, "the other controllers' reports are due");
}

Test(flushctl, a_start_asked_during_a_job_is_due_at_its_commit) {
        usec_t now = now_monotonic();

        feed(1, "c1", report);
        cr_assert_eq(flushctl_start(fc, now), 1);
        cr_assert(!flushctl_due(fc));
        feed(2, "c2", report);
        cr_assert_eq(flushctl_start(fc, now), 0);
        cr_assert(flushctl_due(fc), "the tick fell during the job");
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, now), FLUSH_COMMITTED);
        cr_assert_eq(flushctl_start(fc, now), 1);
        cr_assert(!flushctl_due(fc));
        cr_assert_eq(submitted->batch->n, 1);
}

Test(flushctl, reports_that_arrive_during_a_job_go_with_the_next_one_not_the_next_tick) {
        usec_t t0 = now_monotonic();

        cr_assert_eq(flushctl_pace(fc, t0, USEC_PER_SEC), -1, "nothing to flush");
        feed(1, "c1", report);
        cr_assert_eq(flushctl_start(fc, t0), 1);
        cr_assert_eq(flushctl_pace(fc, t0, USEC_PER_SEC), -1, "a job is outstanding");
        feed(2, "c2", report);
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, t0 + 30 * USEC_PER_MSEC), FLUSH_COMMITTED);
        /* a 30 ms job: the next waits for a tenth of the interval since the last start */
        cr_assert_eq(flushctl_pace(fc, t0 + 30 * USEC_PER_MSEC, USEC_PER_SEC), 70 * USEC_PER_MSEC);
        cr_assert_eq(flushctl_start(fc, t0 + 100 * USEC_PER_MSEC), 1);
        feed(3, "c3", report);
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, t0 + 600 * USEC_PER_MSEC), FLUSH_COMMITTED);
        /* a 500 ms job: at once */
        cr_assert_eq(flushctl_pace(fc, t0 + 600 * USEC_PER_MSEC, USEC_PER_SEC), 0);
        cr_assert_eq(flushctl_start(fc, t0 + 600 * USEC_PER_MSEC), 1);
        finish(0, NULL);
        cr_assert_eq(flushctl_collect(fc, t0 + 650 * USEC_PER_MSEC), FLUSH_COMMITTED);
        cr_assert_eq(flushctl_pace(fc, t0 + 650 * USEC_PER_MSEC, USEC_PER_SEC), -1, "all flushed: the tick decides");
}
