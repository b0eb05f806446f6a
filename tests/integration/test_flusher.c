/* test_flusher.c — the database writer thread (daemon/flusher.c) against a real
 * PostgreSQL: a job commits and comes back through the eventfd; a job whose COMMIT outcome
 * was lost is resolved by its flush_id (landed: not applied twice; not landed: run); a
 * database that is away fails the job with the connection marked down, and the next job
 * reconnects. */
#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>

#include "flusher.h"
#include "harness.h"

#define GAP (12 * USEC_PER_MINUTE)
#define T0 ((usec_t) 1795737600 * USEC_PER_SEC)       /* 2026-11-27T00:00:00Z */

static PgServer pg;
static char *db;

static void setup(void) {
        Store *st = NULL;
        char err[512];

        cr_assert_eq(pg_server_start(&pg), 0);
        cr_assert(asprintf(&db, "%s dbname=postgres", pg.conninfo) > 0);
        cr_assert_eq(store_connect(db, NULL, &st, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(store_migrate(st, GAP), 0, "%s", store_error(st));
        store_free(st);
}

static void teardown(void) {
        pg_server_stop(&pg);
        free(db);
}

TestSuite(flusher, .init = setup, .fini = teardown, .timeout = 120);

/* Waits for the job to come back. */
static FlushJob *wait_job(Flusher *f) {
        for (int i = 0; i < 300; i++) {
                struct pollfd p = { .fd = flusher_fd(f), .events = POLLIN };
                FlushJob *j;

                (void) poll(&p, 1, 100);
                if ((j = flusher_take(f)))
                        return j;
        }
        cr_assert_fail("the job did not come back");
        return NULL;
}

static FlushBatch batch_of(Fragment *fr) {
        return (FlushBatch) { .n = 1, .fragments = fr, .complete = true };
}

static char *count_of(const char *who) {
        char sql[256];

        snprintf(sql, sizeof(sql), "SELECT coalesce(sum(report_count), 0) FROM outage.events WHERE controller_id = '%s'", who);
        return pg_query_value(db, sql);
}

Test(flusher, a_job_commits_and_moves_the_checkpoint) {
        Fragment fr = { .controller_id = "c1", .outage_type = "panel_outage", .start = T0, .end = T0, .count = 1 };
        FlushBatch b = batch_of(&fr);
        FlushJob job = { .batch = &b, .seq = 7, .flush_id = 1001, .want_changes = true };
        Flusher *f = NULL;
        char *v;

        cr_assert_eq(flusher_new(NULL, db, NULL, "fl-1", &f), 0);
        cr_assert_eq(flusher_submit(f, &job), 0);
        cr_assert_eq(flusher_submit(f, &job), -EBUSY, "one job at a time");
        cr_assert_eq(wait_job(f), &job);
        cr_assert_eq(job.result, 0, "%s", job.error);
        cr_assert(flusher_connected(f));
        cr_assert_not_null(job.changes);
        cr_assert_eq(job.changes->n, 1);
        v = pg_query_value(db, "SELECT seq || ' ' || flush_id FROM outage.checkpoints WHERE instance = 'fl-1'");
        cr_assert_str_eq(v, "7 1001");
        free(v);
        store_flush_result_free(job.changes);
        flusher_free(f);
}

/* The previous attempt lost its COMMIT's outcome and it had landed: the resolution finds
 * the flush_id in the checkpoint and reports the job committed without running it again. */
Test(flusher, a_lost_commit_that_landed_is_not_applied_twice) {
        Fragment fr = { .controller_id = "c2", .outage_type = "panel_outage", .start = T0, .end = T0 + 10 * USEC_PER_MINUTE, .count = 2 };
        FlushBatch b = batch_of(&fr);
        FlushJob job = { .batch = &b, .seq = 3, .flush_id = 2002 };
        Flusher *f = NULL;
        char *v;

        cr_assert_eq(flusher_new(NULL, db, NULL, "fl-2", &f), 0);
        cr_assert_eq(flusher_submit(f, &job), 0);
        cr_assert_eq(wait_job(f)->result, 0, "%s", job.error);
        /* As if the answer to that COMMIT had been lost: the same job again, ambiguous. */
        job.ambiguous = true;
        cr_assert_eq(flusher_submit(f, &job), 0);
        cr_assert_eq(wait_job(f)->result, 0, "%s", job.error);
        v = count_of("c2");
        cr_assert_str_eq(v, "2", "counted once");
        free(v);
        flusher_free(f);
}

/* ... and it had not landed: the resolution finds another flush_id, the job runs. */
Test(flusher, a_lost_commit_that_did_not_land_runs) {
        Fragment fr = { .controller_id = "c3", .outage_type = "panel_outage", .start = T0, .end = T0, .count = 1 };
        FlushBatch b = batch_of(&fr);
        FlushJob job = { .batch = &b, .seq = 4, .flush_id = 3003, .ambiguous = true };
        Flusher *f = NULL;
        char *v;

        cr_assert_eq(flusher_new(NULL, db, NULL, "fl-3", &f), 0);
        cr_assert_eq(flusher_submit(f, &job), 0);
        cr_assert_eq(wait_job(f)->result, 0, "%s", job.error);
        cr_assert(!job.ambiguous);
        v = count_of("c3");
        cr_assert_str_eq(v, "1");
        free(v);
        flusher_free(f);
}

/* The database away: the job fails, the flusher says it is disconnected; back: the next
 * job reconnects and commits. */
Test(flusher, database_away_and_back) {
        Fragment fr = { .controller_id = "c4", .outage_type = "panel_outage", .start = T0, .end = T0, .count = 1 };
        FlushBatch b = batch_of(&fr);
        FlushJob job = { .batch = &b, .seq = 1, .flush_id = 4004 };
        Flusher *f = NULL;
        char *v;

        cr_assert_eq(flusher_new(NULL, db, NULL, "fl-4", &f), 0);
        cr_assert_eq(flusher_submit(f, &job), 0);
        cr_assert_eq(wait_job(f)->result, 0, "%s", job.error);
        cr_assert_eq(pg_server_pause(&pg), 0);
        job.flush_id = 4005;
        job.seq = 2;
        cr_assert_eq(flusher_submit(f, &job), 0);
        cr_assert_lt(wait_job(f)->result, 0);
        cr_assert(!flusher_connected(f));
        cr_assert_eq(pg_server_resume(&pg), 0);
        if (job.result == -EAGAIN)
                job.ambiguous = true;   /* what flushctl does: resubmit as it is */
        cr_assert_eq(flusher_submit(f, &job), 0);
        cr_assert_eq(wait_job(f)->result, 0, "%s", job.error);
        cr_assert(flusher_connected(f));
        v = pg_query_value(db, "SELECT seq FROM outage.checkpoints WHERE instance = 'fl-4'");
        cr_assert_str_eq(v, "2");
        free(v);
        flusher_free(f);
}
