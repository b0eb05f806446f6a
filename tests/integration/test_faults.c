/* test_faults.c — SPEC section 8 with the real binary: PostgreSQL down and back, the
 * broker restarted, the memory limit with the database down, several instances sharing
 * one subscription. Events must equal the reference whatever happens. */
#include <pthread.h>
#include <signal.h>

#include "common.h"

static Daemon d1, d2;

static void teardown(void) {
        /* meson shows a test's output only when it fails */
        daemon_dump_log(&d1);
        daemon_dump_log(&d2);
        daemon_cleanup(&d1);
        daemon_cleanup(&d2);
        servers_stop();
}

TestSuite(faults, .init = servers_start, .fini = teardown, .timeout = 300);

typedef struct Workload {
        size_t n;
        const char **topics, **payloads;
        RefReport *ref;
} Workload;

/* keys x per reports, each key in time order with random steps of 0-19 minutes. */
static void make_workload(Workload *w, const char *prefix, int keys, int per, unsigned seed) {
        double *minute = calloc((size_t) keys, sizeof(double));

        w->n = 0;
        w->topics = calloc((size_t) (keys * per), sizeof(char *));
        w->payloads = calloc((size_t) (keys * per), sizeof(char *));
        w->ref = calloc((size_t) (keys * per), sizeof(RefReport));
        srandom(seed);
        for (int i = 0; i < per; i++)
                for (int k = 0; k < keys; k++) {
                        char *t;
                        minute[k] += (double) (random() % 20);
                        cr_assert(asprintf(&t, "%s/k%03d", prefix, k) > 0);
                        w->topics[w->n] = t;
                        w->payloads[w->n] = report_json("panel_outage", minute[k]);
                        snprintf(w->ref[w->n].key, sizeof(w->ref[w->n].key), "k%03d/panel_outage", k);
                        w->ref[w->n].t = (int64_t) (minute[k] * 60e6);
                        w->n++;
                }
        free(minute);
}

static void publish_slice(const Workload *w, size_t from, size_t to) {
        for (size_t off = from; off < to; off += 500) {
                size_t k = to - off < 500 ? to - off : 500;
                cr_assert_eq(mqtt_publish_many(&broker, w->topics + off, w->payloads + off, k), 0);
        }
}

/* Reports in order per key, no duplicates: spans and counts must equal the reference. */
static void expect_reference(const char *db, Workload *w) {
        char *want = reference_text(w->ref, w->n, 12 * 60000000LL);
        char *got = wait_events(db, want, 60000);

        cr_assert_str_eq(got, want);
        free(got);
        free(want);
}

/* PostgreSQL goes away while reports flow; the daemon keeps consuming, then flushes. */
Test(faults, database_down_and_back) {
        char *db = new_database("f_pgdown");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "f-pgdown", .topic = "pgdown/+" };
        Workload w;

        make_workload(&w, "pgdown", 20, 40, 7);
        start_ready(&d1, &o);
        publish_slice(&w, 0, w.n / 3);
        harness_sleep_ms(500);
        cr_assert_eq(pg_server_pause(&pg), 0);
        publish_slice(&w, w.n / 3, 2 * w.n / 3);
        cr_assert_eq(daemon_wait_notify(&d1, "database disconnected", 20000), 0,
                     "STATUS never showed the database down (last: %s)", d1.last_status);
        cr_assert_eq(pg_server_resume(&pg), 0);
        publish_slice(&w, 2 * w.n / 3, w.n);
        expect_reference(db, &w);
        free(db);
}

/* The broker restarts (its persistence keeps our session); nothing is lost. */
Test(faults, broker_restart) {
        char *db = new_database("f_brokerdown");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "f-broker", .topic = "brk/+" };
        Workload w;

        make_workload(&w, "brk", 20, 30, 8);
        start_ready(&d1, &o);
        publish_slice(&w, 0, w.n / 2);
        harness_sleep_ms(1500);         /* let the broker save the session */
        cr_assert_eq(mqtt_broker_pause(&broker), 0);
        harness_sleep_ms(1000);
        cr_assert_eq(mqtt_broker_resume(&broker), 0);
        publish_slice(&w, w.n / 2, w.n);
        expect_reference(db, &w);
        free(db);
}

/* Two instances share the subscription: mosquitto deals round-robin, so every key's
 * reports reach both. Spans must be exact. */
Test(faults, two_instances_share_the_subscription) {
        char *db = new_database("f_shared");
        DaemonOptions o1 = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "f-shared-1",
                             .topic = "shared/+", .share_group = "outaged" };
        DaemonOptions o2 = o1;
        Workload w;

        o2.client_id = "f-shared-2";
        make_workload(&w, "shared", 30, 40, 9);
        start_ready(&d1, &o1);
        start_ready(&d2, &o2);
        publish_slice(&w, 0, w.n);
        /* spans exact; with two instances a count may differ only by duplicates reaching
         * both, and here there are none: counts exact too */
        expect_reference(db, &w);
        free(db);
}

/* A tiny memory limit with the database down: consumption pauses instead of dropping,
 * and everything lands once the database is back. */
Test(faults, memory_limit_with_database_down) {
        char *db = new_database("f_memory");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "f-memory",
                            .topic = "mem/+", .max_events = "1000" };
        Workload w;

        make_workload(&w, "mem", 1500, 2, 10);
        start_ready(&d1, &o);
        cr_assert_eq(pg_server_pause(&pg), 0);
        publish_slice(&w, 0, w.n);
        cr_assert_eq(daemon_wait_notify(&d1, "memory full", 30000), 0, "last status: %s", d1.last_status);
        cr_assert_eq(pg_server_resume(&pg), 0);
        expect_reference(db, &w);
        free(db);
}

/* The broker is down when the daemon starts: it keeps trying, with backoff, and becomes
 * ready once the broker is there. */
Test(faults, broker_down_at_startup) {
        char *db = new_database("f_latebroker");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "f-late",
                            .topic = "late/+", .startup_timeout = "40s" };

        cr_assert_eq(mqtt_broker_pause(&broker), 0);
        cr_assert_eq(daemon_prepare(&d1, &o), 0);
        cr_assert_eq(daemon_start(&d1), 0);
        harness_sleep_ms(4000);
        cr_assert_eq(mqtt_broker_resume(&broker), 0);
        cr_assert_eq(daemon_wait_ready(&d1, 35000), 0, "not ready after the broker came up");
        publish_report("late/c1", "panel_outage", 600);
        char *got = wait_events(db, "c1/panel_outage 600 600 1", 20000);
        cr_assert_str_eq(got, "c1/panel_outage 600 600 1");
        free(got);
        free(db);
}

/* Minutes after base_seconds() for "a minute ago". */
static double minutes_ago(int m) {
        return (double) ((time(NULL) - base_seconds()) / 60 - m);
}

/* A warm start fills memory with open events that need no flush: a report that needs a
 * new event must still get in (eviction makes room) without waiting for more traffic. */
Test(faults, memory_full_of_warm_events) {
        char *db = new_database("f_warm");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "f-warm",
                            .topic = "warm/+", .max_events = "1000" };
        enum { KEYS = 1100 };
        const char **topics = calloc(KEYS, sizeof(char *)), **payloads = calloc(KEYS, sizeof(char *));
        double t = minutes_ago(1);
        char *got = NULL;

        for (int k = 0; k < KEYS; k++) {
                char *tp;
                cr_assert(asprintf(&tp, "warm/k%04d", k) > 0);
                topics[k] = tp;
                payloads[k] = report_json("panel_outage", t);
        }
        start_ready(&d1, &o);
        cr_assert_eq(mqtt_publish_many(&broker, topics, payloads, KEYS), 0);
        for (int i = 0; i < 300; i++) {
                free(got);
                got = query(db, "SELECT count(*) FROM outage.events");
                if (strcmp(got, "1100") == 0)
                        break;
                harness_sleep_ms(100);
        }
        cr_assert_str_eq(got, "1100");
        free(got);
        got = NULL;
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);

        /* the restart loads 1000 of the 1100 open events: memory is full, nothing is dirty */
        cr_assert_eq(daemon_start(&d1), 0);
        cr_assert_eq(daemon_wait_ready(&d1, 30000), 0);
        publish_report("warm/new", "panel_outage", t);
        for (int i = 0; i < 150; i++) {
                got = query(db, "SELECT count(*) FROM outage.events WHERE controller_id = 'new'");
                if (strcmp(got, "1") == 0)
                        break;
                free(got);
                got = NULL;
                harness_sleep_ms(100);
        }
        cr_assert(got && strcmp(got, "1") == 0, "the new report never reached the database");
        free(got);
        free(db);
}
