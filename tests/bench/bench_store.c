/* bench_store.c — fragments merged per second by store_flush, for batches of 1k, 10k and
 * 100k fragments against a table of 1M stored events, with and without the exclusion
 * constraint. Uses $OUTAGED_BENCH_CONNINFO (an empty database it may fill) or starts a
 * throwaway server (fsync off). Not a test: prints figures.
 *
 * Workload: 50k controllers x 2 outage types x 10 events of 30 min spread over ~16 days.
 * Each fragment extends the last event of its key by 10 min (the steady state: one report,
 * one fragment), so every fragment merges with one stored event. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "store.h"

#define GAP (12 * USEC_PER_MINUTE)
#define N_CTRL 50000
#define N_TYPES 2
#define N_PER_KEY 10
#define N_KEYS (N_CTRL * N_TYPES)
/* 2026-05-01T00:00:00Z */
#define BASE ((usec_t) 1777593600 * USEC_PER_SEC)

static char names[N_CTRL][16];
static const char *const types[N_TYPES] = { "lamp_outage", "panel_outage" };
static usec_t last_end[N_KEYS];

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int load(const char *ci) {
        char sql[2048];
        double t0 = now_s();

        /* Same formula as last_end below: event k of (c, t) starts at BASE + k * 43 h +
         * ((c * 7 + t) % 600) min and lasts 30 min; c and t are 1-based in SQL. */
        (void) snprintf(sql, sizeof(sql),
                "INSERT INTO outage.controllers (name) SELECT 'c' || i FROM generate_series(0, %d) i;"
                "INSERT INTO outage.outage_types (name) VALUES ('lamp_outage'), ('panel_outage');"
                "ALTER TABLE outage.stored_events DROP CONSTRAINT stored_events_no_overlap;"
                "DROP INDEX outage.stored_events_key_end;"
                "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)"
                " SELECT cc.id, tt.id, s, s + interval '30 min', 4 FROM ("
                "  SELECT c, t, timestamptz '2026-05-01 00:00+00' + k * interval '43 hours'"
                "   + ((c * 7 + t) %% 600) * interval '1 min' AS s"
                "  FROM generate_series(0, %d) c, generate_series(0, %d) t, generate_series(0, %d) k) x"
                " JOIN outage.controllers cc ON cc.name = 'c' || x.c"
                " JOIN outage.outage_types tt ON tt.name = (ARRAY['lamp_outage', 'panel_outage'])[x.t + 1];"
                "CREATE INDEX stored_events_key_end ON outage.stored_events (controller, otype, end_time) INCLUDE (start_time);"
                                "ALTER TABLE outage.stored_events ADD CONSTRAINT stored_events_no_overlap EXCLUDE USING gist"
                " (outage.event_box(controller, otype, start_time, end_time) WITH &&);",
                N_CTRL - 1, N_CTRL - 1, N_TYPES - 1, N_PER_KEY - 1);
        if (pg_exec(ci, sql) < 0 || pg_exec(ci, "VACUUM ANALYZE outage.stored_events") < 0 ||
            pg_exec(ci, "ANALYZE outage.controllers") < 0)
                return -1;
        fprintf(stderr, "loaded %d events in %.1f s\n", N_KEYS * N_PER_KEY, now_s() - t0);
        return 0;
}

static int run(Store *s, bool constraint, size_t n, size_t *offset, Fragment *f) {
        double t0, dt;
        int r;

        for (size_t i = 0; i < n; i++) {
                size_t k = (*offset + i) % N_KEYS;

                last_end[k] += 10 * USEC_PER_MINUTE;
                f[i] = (Fragment) { .controller_id = names[k / N_TYPES], .outage_type = types[k % N_TYPES],
                                    .start = last_end[k], .end = last_end[k], .count = 1 };
        }
        *offset += n;
        t0 = now_s();
        r = store_flush(s, f, n, NULL, 0, "bench", *offset, 0, NULL, NULL);
        dt = now_s() - t0;
        if (r < 0) {
                fprintf(stderr, "store_flush: %s\n", store_error(s));
                return -1;
        }
        printf("%-10s %9zu %9.3f %12.0f\n", constraint ? "yes" : "no", n, dt, (double) n / dt);
        fflush(stdout);
        return 0;
}

int main(void) {
        const char *env = getenv("OUTAGED_BENCH_CONNINFO");
        static Fragment f[100000];
        const size_t sizes[] = { 1000, 10000, 100000 };
        PgServer server = { 0 };
        const char *ci = env;
        size_t offset = 0;
        char err[512];
        Store *s = NULL;
        int ret = 1;

        if (!ci) {
                if (pg_server_start(&server) < 0)
                        return 1;
                ci = server.conninfo;
        }
        if (store_connect(ci, NULL, &s, err, sizeof(err)) < 0) {
                fprintf(stderr, "store_connect: %s\n", err);
                goto out;
        }
        if (store_migrate(s, GAP) < 0) {
                fprintf(stderr, "store_migrate: %s\n", store_error(s));
                goto out;
        }
        for (int c = 0; c < N_CTRL; c++)
                snprintf(names[c], sizeof(names[c]), "c%d", c);
        for (int k = 0; k < N_KEYS; k++)
                last_end[k] = BASE + (usec_t) (N_PER_KEY - 1) * 43 * USEC_PER_HOUR +
                              (usec_t) (((k / N_TYPES) * 7 + k % N_TYPES) % 600) * USEC_PER_MINUTE +
                              30 * USEC_PER_MINUTE;
        if (load(ci) < 0)
                goto out;
        printf("%-10s %9s %9s %12s\n", "constraint", "fragments", "seconds", "fragments/s");
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                if (run(s, true, sizes[i], &offset, f) < 0)
                        goto out;
        if (pg_exec(ci, "ALTER TABLE outage.stored_events DROP CONSTRAINT stored_events_no_overlap") < 0)
                goto out;
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                if (run(s, false, sizes[i], &offset, f) < 0)
                        goto out;
        ret = 0;
out:
        store_free(s);
        if (!env)
                pg_server_stop(&server);
        return ret;
}
