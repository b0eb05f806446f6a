/* test_e2e.c — the real daemon binary against a real mosquitto and a real PostgreSQL:
 * SPEC section 3 end to end, payload forms, every reject reason, backlog, SIGTERM and
 * SIGKILL under load, birth and last will, exit codes, --migrate, SIGHUP reload. */
#include <pthread.h>
#include <signal.h>

#include "common.h"

static Daemon d;

static void start_daemon(const DaemonOptions *o) {
        start_ready(&d, o);
}

static void restart_daemon(void) {
        cr_assert_eq(daemon_start(&d), 0);
        int r = daemon_wait_ready(&d, 30000);
        if (r != 0)
                daemon_dump_log(&d);
        cr_assert_eq(r, 0, "daemon not ready after restart (%d)", r);
}

static void teardown(void) {
        /* meson shows a test's output only when it fails */
        daemon_dump_log(&d);
        daemon_cleanup(&d);
}

static void expect_events(const char *conninfo, const char *want) {
        char *got = wait_events(conninfo, want, 20000);

        if (strcmp(got, want) != 0)
                daemon_dump_log(&d);
        cr_assert_str_eq(got, want);
        free(got);
}

TestSuite(e2e, .init = servers_from_env, .fini = teardown, .timeout = 240);

/* SPEC section 3's table, report by report, with the daemon flushing in between. */
Test(e2e, spec_table) {
        char *db = new_database("e2e_table");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-table",
                            .topic = "table/+" };

        start_daemon(&o);
        publish_report("table/ctrl_1", "panel_outage", 600);
        publish_report("table/ctrl_1", "panel_outage", 610);
        publish_report("table/ctrl_1", "panel_outage", 620);
        expect_events(db, "ctrl_1/panel_outage 600 620 3");
        publish_report("table/ctrl_1", "panel_outage", 645);
        expect_events(db, "ctrl_1/panel_outage 600 620 3;ctrl_1/panel_outage 645 645 1");
        publish_report("table/ctrl_1", "panel_outage", 632);
        expect_events(db, "ctrl_1/panel_outage 600 632 4;ctrl_1/panel_outage 645 645 1");
        publish_report("table/ctrl_1", "panel_outage", 633);
        expect_events(db, "ctrl_1/panel_outage 600 645 6");
        /* the duplicate changes nothing; a report on another key proves it was consumed */
        publish_report("table/ctrl_1", "panel_outage", 610);
        publish_report("table/ctrl_2", "lamp_outage", 600);
        expect_events(db, "ctrl_1/panel_outage 600 645 6;ctrl_2/lamp_outage 600 600 1");
        /* exactly gap joins, gap + 1 us splits */
        publish_report("table/ctrl_3", "lamp_outage", 0);
        publish_report("table/ctrl_3", "lamp_outage", 12);
        publish_report("table/ctrl_3", "lamp_outage", 24 + 1.0 / 60e6);
        expect_events(db, "ctrl_1/panel_outage 600 645 6;ctrl_2/lamp_outage 600 600 1;"
                          "ctrl_3/lamp_outage 0 12 2;ctrl_3/lamp_outage 1440000001us 1440000001us 1");
        cr_assert_str_eq(query(db, "SELECT string_agg(DISTINCT status, ',') FROM outage.events"), "closed");
        free(db);
}

/* One payload may carry an array (a backlog); every timestamp form of SPEC section 2. */
Test(e2e, batch_and_timestamp_forms) {
        char *db = new_database("e2e_forms");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-forms",
                            .topic = "forms/+" };
        char a[64], b[64], payload[1024];
        int64_t base = base_seconds();

        start_daemon(&o);
        ts_string(a, sizeof(a), 600);
        ts_string(b, sizeof(b), 610);
        a[10] = ' ';            /* space separator */
        b[10] = 't';
        b[strlen(b) - 1] = 'z';
        snprintf(payload, sizeof(payload),
                 "[{\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\"},"
                 " {\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\",\"extra\":[1,2]},"
                 " {\"outage_type\":\"panel_outage\",\"timestamp\":%" PRId64 ",\"controller_id\":\"ctrl_9\"}]",
                 a, b, base + 620 * 60);
        cr_assert_eq(mqtt_publish(&broker, "forms/ctrl_9", payload, strlen(payload)), 0);

        /* an offset: 11:30+01:00 is 10:30Z; a fraction kept to the microsecond */
        time_t t = (time_t) (base + 690 * 60);
        struct tm tm;
        gmtime_r(&t, &tm);
        snprintf(payload, sizeof(payload),
                 "{\"outage_type\":\"panel_outage\",\"timestamp\":\"%04d-%02d-%02dT%02d:%02d:%02d.250+01:00\"}",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cr_assert_eq(mqtt_publish(&broker, "forms/ctrl_9", payload, strlen(payload)), 0);
        /* 11:30.250+01:00 = 10:30:00.25Z, 10 min after 10:20 */
        expect_events(db, "ctrl_9/panel_outage 600 37800250000us 4");
        free(db);
}

static const char *reasons_of(const char *db) {
        return query(db, "SELECT string_agg(reason, ',' ORDER BY reason) FROM outage.rejects");
}

/* Every reject reason end to end; valid reports in the same stream and the same batch
 * are unaffected; each reject is a row with its reason and payload. */
Test(e2e, every_reject_reason) {
        char *db = new_database("e2e_rejects");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-rejects",
                            .topic = "rej/+", .outage_types = "panel_outage lamp_outage",
                            .max_payload = "1KiB", .max_batch_items = "4" };
        char good[64], big[2000], p[4096];

        start_daemon(&o);
        ts_string(good, sizeof(good), 600);

#define PUB(topic, ...) do { snprintf(p, sizeof(p), __VA_ARGS__); \
                cr_assert_eq(mqtt_publish(&broker, topic, p, strlen(p)), 0); } while (0)

        PUB("rej/-bad", "{\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\"}", good);
        memset(big, ' ', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        PUB("rej/c1", "{\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\"}%s", good, big);
        PUB("rej/c1", "{\"outage_type\":");
        PUB("rej/c1", "42");
        PUB("rej/c1", "[]");
        PUB("rej/c1", "[{},{},{},{},{}]");
        /* a batch: bad items around a good one */
        PUB("rej/c1", "[1, {\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\"}, {\"timestamp\":\"%s\"},"
                      " {\"outage_type\":\"panel_outage\",\"timestamp\":1.5}]", good, good);
        PUB("rej/c1", "{\"outage_type\":\"Panel\",\"timestamp\":\"%s\"}", good);
        PUB("rej/c1", "{\"outage_type\":\"door_open\",\"timestamp\":\"%s\"}", good);
        PUB("rej/c1", "{\"outage_type\":\"lamp_outage\",\"timestamp\":\"2023-02-30T10:00:00Z\"}");
        PUB("rej/c1", "{\"outage_type\":\"lamp_outage\",\"timestamp\":\"2000-01-01T10:00:00Z\"}");
        PUB("rej/c1", "{\"outage_type\":\"lamp_outage\",\"timestamp\":\"%s\",\"controller_id\":\"c2\"}", good);
        PUB("rej/c1", "{\"outage_type\":\"lamp_outage\",\"timestamp\":\"%s\",\"controller_id\":\"c1\"}", good);
        /* invalid UTF-8 */
        const char *bad_utf8 = "{\"outage_type\":\"x\xff\"}";
        cr_assert_eq(mqtt_publish(&broker, "rej/c1", bad_utf8, strlen(bad_utf8)), 0);

        expect_events(db, "c1/lamp_outage 600 600 1;c1/panel_outage 600 600 1");
        const char *want = "bad_controller_id,bad_field_type,bad_outage_type,bad_timestamp,batch_too_large,"
                           "controller_mismatch,malformed_json,malformed_json,missing_field,not_a_report,"
                           "not_a_report,not_a_report,payload_too_large,timestamp_out_of_range,unknown_outage_type";
        const char *got = reasons_of(db);
        for (int i = 0; i < 100 && strcmp(got, want) != 0; i++) {
                harness_sleep_ms(100);
                got = reasons_of(db);
        }
        cr_assert_str_eq(got, want);

        /* counted: the metrics file has one counter per reason */
        char path[600], line[256], *all = calloc(1, 65536);
        snprintf(path, sizeof(path), "%s/metrics.prom", d.dir);
        for (int i = 0; i < 50; i++) {
                FILE *m = fopen(path, "r");
                all[0] = '\0';
                if (m) {
                        while (fgets(line, sizeof(line), m))
                                if (strlen(all) + strlen(line) < 65535)
                                        strcat(all, line);
                        fclose(m);
                }
                if (strstr(all, "outaged_rejects_total{reason=\"not_a_report\"} 3") &&
                    strstr(all, "outaged_rejects_total{reason=\"malformed_json\"} 2") &&
                    strstr(all, "outaged_rejects_total{reason=\"bad_controller_id\"} 1"))
                        break;
                harness_sleep_ms(200);
        }
        cr_assert(strstr(all, "outaged_rejects_total{reason=\"not_a_report\"} 3"), "metrics:\n%s", all);
        cr_assert(strstr(all, "outaged_rejects_total{reason=\"malformed_json\"} 2"), "metrics:\n%s", all);
        cr_assert(strstr(all, "outaged_rejects_total{reason=\"bad_controller_id\"} 1"), "metrics:\n%s", all);
        free(all);
        cr_assert_str_eq(query(db, "SELECT controller_id IS NULL FROM outage.rejects WHERE reason = 'bad_controller_id'"), "t");
        cr_assert_str_eq(query(db, "SELECT topic FROM outage.rejects WHERE reason = 'bad_controller_id'"), "rej/-bad");
        cr_assert_str_eq(query(db, "SELECT length(payload) FROM outage.rejects WHERE reason = 'payload_too_large'"), "1024");
        /* SPEC section 4: reject_id unique and increasing, detail says which rule or bound
         * failed and the item's place in a batch. */
        cr_assert_str_eq(query(db, "SELECT count(DISTINCT reject_id) = count(*) AND min(reject_id) > 0 FROM outage.rejects"), "t");
        cr_assert_str_eq(query(db, "SELECT detail FROM outage.rejects WHERE reason = 'timestamp_out_of_range'"),
                         "older than max_age 365d");
        cr_assert_str_eq(query(db, "SELECT detail LIKE '%item 3 of 4' FROM outage.rejects WHERE reason = 'missing_field'"), "t");
        cr_assert_str_eq(query(db, "SELECT detail LIKE '%item 4 of 4' FROM outage.rejects WHERE reason = 'bad_field_type'"), "t");
        cr_assert_str_eq(query(db, "SELECT detail LIKE '%max_batch_items 4%' FROM outage.rejects WHERE reason = 'batch_too_large'"), "t");
        cr_assert_str_eq(query(db, "SELECT detail LIKE '%max_payload 1KiB%' FROM outage.rejects WHERE reason = 'payload_too_large'"), "t");
        cr_assert_str_eq(query(db, "SELECT count(*) FROM outage.rejects WHERE detail IS NULL OR detail = ''"), "0");
        cr_assert_str_eq(query(db, "SELECT payload FROM outage.rejects WHERE reason = 'bad_field_type'"),
                         "{\"outage_type\":\"panel_outage\",\"timestamp\":1.5}");
        cr_assert_str_eq(query(db, "SELECT payload FROM outage.rejects WHERE reason = 'malformed_json' AND payload LIKE '%\\xff%'"),
                         "{\"outage_type\":\"x\\xff\"}");
        free(db);
#undef PUB
}

/* Reports published while the daemon is down wait in its persistent session. */
Test(e2e, backlog_while_stopped) {
        char *db = new_database("e2e_backlog");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-backlog",
                            .topic = "backlog/+" };
        enum { KEYS = 5, PER = 60 };
        static const char *topics[KEYS * PER], *payloads[KEYS * PER];
        static RefReport ref[KEYS * PER];
        size_t n = 0;

        start_daemon(&o);
        cr_assert_eq(daemon_signal_wait(&d, SIGTERM, 30000), 0);
        for (int k = 0; k < KEYS; k++)
                for (int i = 0; i < PER; i++) {
                        char *t;
                        double minute = i * 10 + (i % 7 == 6 ? 5 : 0);
                        cr_assert(asprintf(&t, "backlog/c%d", k) > 0);
                        topics[n] = t;
                        payloads[n] = report_json("panel_outage", minute);
                        snprintf(ref[n].key, sizeof(ref[n].key), "c%d/panel_outage", k);
                        ref[n].t = (int64_t) (minute * 60e6);
                        n++;
                }
        cr_assert_eq(mqtt_publish_many(&broker, topics, payloads, n), 0);
        restart_daemon();
        char *want = reference_text(ref, n, 12 * 60000000LL);
        expect_events(db, want);
        free(want);
        free(db);
}

/* Polls the daemon's metrics file until the counter reaches min (or timeout). */
static void wait_metric_at_least(const Daemon *dd, const char *name, long min, int timeout_ms) {
        char path[600], line[256];

        snprintf(path, sizeof(path), "%s/metrics.prom", dd->dir);
        for (int waited = 0; waited < timeout_ms; waited += 50) {
                FILE *f = fopen(path, "r");
                long v = -1;

                while (f && fgets(line, sizeof(line), f))
                        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ' ')
                                v = atol(line + strlen(name) + 1);
                if (f)
                        fclose(f);
                if (v >= min)
                        return;
                harness_sleep_ms(50);
        }
}

typedef struct LoadArgs {
        const char *prefix;
        size_t n;
        const char **topics, **payloads;
} LoadArgs;

static void *publish_thread(void *p) {
        LoadArgs *a = p;

        /* in slices, so the daemon is killed while messages flow */
        for (size_t off = 0; off < a->n; off += 200) {
                size_t k = a->n - off < 200 ? a->n - off : 200;
                if (mqtt_publish_many(&broker, a->topics + off, a->payloads + off, k) < 0)
                        return (void *) 1;
        }
        return NULL;
}

/* Keys report in time order, with random gaps (some over gap): count must equal the
 * number of distinct timestamps, whatever happens to the daemon meanwhile. */
static void under_load(const char *name, int sig, const char *batch_max, const char *flush_interval) {
        char dbname[64], prefix[64], cid[64];
        enum { KEYS = 40, PER = 75 };
        size_t n = 0;
        const char **topics = calloc(KEYS * PER, sizeof(char *)), **payloads = calloc(KEYS * PER, sizeof(char *));
        RefReport *ref = calloc(KEYS * PER, sizeof(RefReport));
        double minute[KEYS] = { 0 };
        pthread_t th;
        void *res;

        snprintf(dbname, sizeof(dbname), "e2e_%s", name);
        snprintf(prefix, sizeof(prefix), "%s", name);
        snprintf(cid, sizeof(cid), "t-%s", name);
        char *db = new_database(dbname);
        char filter[80];
        snprintf(filter, sizeof(filter), "%s/+", prefix);
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = cid, .topic = filter,
                            .batch_max = batch_max, .flush_interval = flush_interval };

        srandom(42);
        for (int i = 0; i < PER; i++)
                for (int k = 0; k < KEYS; k++) {
                        char *t;
                        int step = (int) (random() % 20);       /* 0..19 min: some over the gap */
                        minute[k] += step;
                        cr_assert(asprintf(&t, "%s/k%02d", prefix, k) > 0);
                        topics[n] = t;
                        payloads[n] = report_json(k % 2 ? "lamp_outage" : "panel_outage", minute[k]);
                        snprintf(ref[n].key, sizeof(ref[n].key), "k%02d/%s", k, k % 2 ? "lamp_outage" : "panel_outage");
                        ref[n].t = (int64_t) (minute[k] * 60e6);
                        n++;
                }

        start_daemon(&o);
        LoadArgs a = { prefix, n, topics, payloads };
        pthread_create(&th, NULL, publish_thread, &a);
        /* strike while messages flow: once a good part has been received */
        wait_metric_at_least(&d, "outaged_messages_received_total", KEYS * PER / 4, 30000);
        int code = daemon_signal_wait(&d, sig, 60000);
        if (sig == SIGTERM)
                cr_assert_eq(code, 0, "SIGTERM exit code %d", code);
        else
                cr_assert_eq(code, 128 + SIGKILL);
        restart_daemon();
        pthread_join(th, &res);
        cr_assert_null(res, "publisher failed");
        /* and once more while the rest flows in */
        char *want = reference_text(ref, n, 12 * 60000000LL);
        expect_events(db, want);
        free(want);
        free(db);
}

Test(e2e, sigterm_under_load_loses_nothing) {
        under_load("term", SIGTERM, NULL, NULL);
}

/* batch_max 7: flushes are cut short, and those commits leave the checkpoint behind; with
 * flushes otherwise rare, a SIGKILL then replays reports whose spans are already stored. */
Test(e2e, sigkill_with_partial_flushes_counts_nothing_twice) {
        under_load("killpartial", SIGKILL, "7", "10s");
}

Test(e2e, sigkill_under_load_loses_nothing_counts_nothing_twice) {
        under_load("kill", SIGKILL, NULL, NULL);
}

static char *retained_status(const char *client_id) {
        char topic[128];
        char port[16];
        snprintf(topic, sizeof(topic), "outaged/%s/status", client_id);
        snprintf(port, sizeof(port), "%d", broker.port);
        char *argv[] = { "/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", topic, "-C", "1",
                         "-W", "5", NULL };
        char *out = NULL, *err = NULL;

        (void) proc_run(argv, NULL, &out, &err, 4096, 10000);
        free(err);
        return out;
}

/* Birth and clean-stop messages are retained on outaged/<client_id>/status. */
Test(e2e, birth_and_offline_status) {
        char *db = new_database("e2e_status");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-status",
                            .topic = "status/+" };

        start_daemon(&o);
        char *s = retained_status("t-status");
        cr_assert(s && strstr(s, "\"state\":\"online\""), "online status: %s", s ? s : "(none)");
        cr_assert(strstr(s, "\"client_id\":\"t-status\"") && strstr(s, "\"version\":") && strstr(s, "\"started_at\":"));
        free(s);
        cr_assert_eq(daemon_signal_wait(&d, SIGTERM, 30000), 0);
        s = retained_status("t-status");
        cr_assert(s && strstr(s, "\"state\":\"offline\""), "offline status: %s", s ? s : "(none)");
        free(s);

        /* SIGKILL: the broker publishes the last will */
        restart_daemon();
        cr_assert_eq(daemon_signal_wait(&d, SIGKILL, 10000), 128 + SIGKILL);
        for (int i = 0; i < 100; i++) {
                s = retained_status("t-status");
                if (s && strstr(s, "offline"))
                        break;
                free(s);
                s = NULL;
                harness_sleep_ms(500);  /* the broker notices after 1.5 x keepalive */
        }
        cr_assert(s && strstr(s, "\"state\":\"offline\""), "will: %s", s ? s : "(none)");
        free(s);
        free(db);
}

Test(e2e, exit_69_when_broker_unreachable) {
        char *db = new_database("e2e_nobroker");
        DaemonOptions o = { .mqtt_uri = "tcp://127.0.0.1:1", .conninfo = db, .client_id = "t-nob",
                            .startup_timeout = "2s" };

        cr_assert_eq(daemon_prepare(&d, &o), 0);
        cr_assert_eq(daemon_start(&d), 0);
        cr_assert_eq(daemon_wait_exit(&d, 30000), 69);
        free(db);
}

/* A reload before the subscription is active must not announce READY=1: the broker is
 * unreachable here, so the daemon never becomes ready and exits 69. */
Test(e2e, sighup_before_ready_sends_no_ready) {
        char *db = new_database("e2e_earlyhup");
        DaemonOptions o = { .mqtt_uri = "tcp://127.0.0.1:1", .conninfo = db, .client_id = "t-earlyhup",
                            .startup_timeout = "4s" };

        cr_assert_eq(daemon_prepare(&d, &o), 0);
        cr_assert_eq(daemon_start(&d), 0);
        /* the first STATUS= comes from the event loop: signals are handled by then */
        cr_assert_eq(daemon_wait_notify(&d, "STATUS=", 20000), 0);
        kill(d.pid, SIGHUP);
        cr_assert_eq(daemon_wait_ready(&d, 30000), 69, "READY=1 sent before the subscription was active");
        free(db);
}

Test(e2e, exit_69_when_database_unreachable) {
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = "host=127.0.0.1 port=1 dbname=x connect_timeout=1",
                            .client_id = "t-nodb", .startup_timeout = "2s" };

        cr_assert_eq(daemon_prepare(&d, &o), 0);
        cr_assert_eq(daemon_start(&d), 0);
        cr_assert_eq(daemon_wait_exit(&d, 30000), 69);
}

Test(e2e, exit_78_when_gap_differs_from_database) {
        char *db = new_database("e2e_gap");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-gap", .topic = "gap/+" };

        start_daemon(&o);
        cr_assert_eq(daemon_signal_wait(&d, SIGTERM, 30000), 0);
        daemon_cleanup(&d);
        o.gap = "10min";
        cr_assert_eq(daemon_prepare(&d, &o), 0);
        cr_assert_eq(daemon_start(&d), 0);
        cr_assert_eq(daemon_wait_exit(&d, 30000), 78);
        free(db);
}

/* Runs `outaged -c <the daemon's config> --migrate` and asserts it exits 0. */
static void run_migrate(const Daemon *dd) {
        char *argv[] = { (char *) harness_binary(), "-c", dd->config_path, "--migrate", NULL };
        char *out = NULL, *err = NULL;
        int code = proc_run(argv, NULL, &out, &err, 65536, 60000);

        cr_assert_eq(code, 0, "--migrate exited %d: %s", code, err ? err : "");
        free(out);
        free(err);
}

Test(e2e, migrate_only) {
        char *db = new_database("e2e_migrate");
        DaemonOptions o = { .mqtt_uri = "tcp://127.0.0.1:1", .conninfo = db, .client_id = "t-mig" };

        cr_assert_eq(daemon_prepare(&d, &o), 0);
        run_migrate(&d);
        cr_assert_str_eq(query(db, "SELECT count(*) > 0 FROM outage.schema_migrations"), "t");
        cr_assert_str_eq(query(db, "SELECT count(*) FROM outage.events"), "0");
        run_migrate(&d);
        free(db);
}

/* SIGHUP reloads the outage type allowlist. */
Test(e2e, sighup_reloads_allowlist) {
        char *db = new_database("e2e_reload");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-reload",
                            .topic = "reload/+", .outage_types = "panel_outage" };

        start_daemon(&o);
        publish_report("reload/c1", "lamp_outage", 600);
        publish_report("reload/c1", "panel_outage", 600);
        expect_events(db, "c1/panel_outage 600 600 1");
        cr_assert_str_eq(query(db, "SELECT string_agg(reason, ',') FROM outage.rejects"), "unknown_outage_type");

        /* rewrite the allowlist line and reload */
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "sed -i 's/^outage_types = .*/outage_types = panel_outage lamp_outage/' %s",
                 d.config_path);
        cr_assert_eq(system(cmd), 0);
        kill(d.pid, SIGHUP);
        cr_assert_eq(daemon_wait_notify(&d, "READY=1", 10000), 0);
        publish_report("reload/c1", "lamp_outage", 610);
        expect_events(db, "c1/lamp_outage 610 610 1;c1/panel_outage 600 600 1");
        free(db);
}

/* An event is open while end_time + gap >= now(): a report a minute old is open. */
Test(e2e, recent_event_is_open) {
        char *db = new_database("e2e_open");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-open", .topic = "open/+" };
        char payload[256], ts[64];
        time_t t = time(NULL) - 60;
        struct tm tm;

        start_daemon(&o);
        gmtime_r(&t, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(payload, sizeof(payload), "{\"outage_type\":\"lamp_outage\",\"timestamp\":\"%s\"}", ts);
        cr_assert_eq(mqtt_publish(&broker, "open/c1", payload, strlen(payload)), 0);
        char *v = NULL;
        for (int i = 0; i < 100; i++) {
                free(v);
                v = query(db, "SELECT status FROM outage.events WHERE controller_id = 'c1'");
                if (strcmp(v, "open") == 0)
                        break;
                harness_sleep_ms(100);
        }
        cr_assert_str_eq(v, "open");
        free(v);
        free(db);
}

/* WATCHDOG_USEC set by the service manager: the main loop sends WATCHDOG=1. */
Test(e2e, watchdog_is_honoured) {
        char *db = new_database("e2e_watchdog");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-wd", .topic = "wd/+" };

        cr_assert_eq(daemon_prepare(&d, &o), 0);
        d.extra_env = "WATCHDOG_USEC=400000";
        cr_assert_eq(daemon_start(&d), 0);
        cr_assert_eq(daemon_wait_ready(&d, 30000), 0);
        cr_assert_eq(daemon_wait_notify(&d, "WATCHDOG=1", 5000), 0, "no WATCHDOG=1 within 5 s");
        free(db);
}

/* A database migrated by a newer outaged is refused (exit 1), and left alone. */
Test(e2e, newer_schema_is_refused) {
        char *db = new_database("e2e_newer");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-newer", .topic = "newer/+" };

        cr_assert_eq(daemon_prepare(&d, &o), 0);
        run_migrate(&d);
        cr_assert_eq(pg_exec(db, "INSERT INTO outage.schema_migrations (version, name) VALUES (999, '999_future.sql')"), 0);
        cr_assert_eq(daemon_start(&d), 0);
        cr_assert_eq(daemon_wait_exit(&d, 30000), 1);
        cr_assert_str_eq(query(db, "SELECT max(version) FROM outage.schema_migrations"), "999");
        free(db);
}

/* A NOTIFY_SOCKET listener that stops reading (its queue holds a handful of datagrams)
 * must not freeze the daemon: STATUS= comes every second. */
Test(e2e, unread_notify_socket_does_not_block) {
        char *db = new_database("e2e_notify");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-notify", .topic = "notify/+" };

        start_daemon(&o);
        harness_sleep_ms(15000);        /* not reading: well over the socket's queue */
        publish_report("notify/c1", "lamp_outage", 600);
        expect_events(db, "c1/lamp_outage 600 600 1");
        free(db);
}

/* With max_age = 0 the extremes of the calendar are accepted and stored; an offset that
 * lands outside years 1-9999 UTC is rejected, and cannot block the flushes of others. */
Test(e2e, calendar_extremes_do_not_block_flushes) {
        char *db = new_database("e2e_extremes");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-ext", .topic = "ext/+",
                            .max_age = "0" };
        const char *first = "{\"outage_type\":\"lamp_outage\",\"timestamp\":\"0001-01-01T00:00:00Z\"}";
        const char *year0 = "{\"outage_type\":\"lamp_outage\",\"timestamp\":\"0000-12-31T23:00:00-00:30\"}";

        start_daemon(&o);
        cr_assert_eq(mqtt_publish(&broker, "ext/c1", first, strlen(first)), 0);
        cr_assert_eq(mqtt_publish(&broker, "ext/c1", year0, strlen(year0)), 0);
        publish_report("ext/c2", "lamp_outage", 600);
        char want[256];
        int64_t m = (INT64_C(-62135596800) - base_seconds()) / 60;
        snprintf(want, sizeof(want), "c1/lamp_outage %" PRId64 " %" PRId64 " 1;c2/lamp_outage 600 600 1", m, m);
        expect_events(db, want);
        cr_assert_str_eq(query(db, "SELECT to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                                   "FROM outage.events WHERE controller_id = 'c1'"), "0001-01-01 00:00:00");
        cr_assert_str_eq(query(db, "SELECT reason FROM outage.rejects"), "timestamp_out_of_range");
        free(db);
}

/* An event the database refuses (here a trigger refuses controller "poison") must not
 * hold up the others: the daemon retries in smaller batches, and everything else lands. */
Test(e2e, refused_event_does_not_block_the_others) {
        char *db = new_database("e2e_poison");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "t-poison", .topic = "poison/+" };
        enum { N = 30 };
        const char *topics[N + 1], *payloads[N + 1];
        char want[4096] = "";

        start_daemon(&o);
        cr_assert_eq(pg_exec(db,
                "CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.controller = (SELECT id FROM outage.controllers WHERE name = 'poison')"
                " THEN RAISE EXCEPTION 'poison refused'; END IF; RETURN NEW; END $$;"
                "CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON outage.stored_events"
                " FOR EACH ROW EXECUTE FUNCTION public.refuse_poison()"), 0);
        topics[0] = "poison/poison";
        payloads[0] = report_json("lamp_outage", 600);
        for (int i = 1; i <= N; i++) {
                char *t;
                cr_assert(asprintf(&t, "poison/c%02d", i) > 0);
                topics[i] = t;
                payloads[i] = report_json("lamp_outage", 600);
                snprintf(want + strlen(want), sizeof(want) - strlen(want), "%sc%02d/lamp_outage 600 600 1",
                         i > 1 ? ";" : "", i);
        }
        cr_assert_eq(mqtt_publish_many(&broker, topics, payloads, N + 1), 0);
        char *got = wait_events(db, want, 60000);
        cr_assert_str_eq(got, want);
        free(got);
        free(db);
}
