/* test_live_events.c — SPEC section 2 "Live events" and section 5 [retention] end to end: the
 * retained message of each key equals its latest event's row after every step of the SPEC
 * section 3 example published out of order; a close is announced once the gap has passed;
 * two instances sharing the subscription announce what the database holds; NOTIFY on the
 * configured channel for created and merged events; and the hourly prune. */
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>

#include "common.h"

static Daemon d1, d2;

static void teardown(void) {
        daemon_dump_log(&d1);
        daemon_dump_log(&d2);
        daemon_cleanup(&d1);
        daemon_cleanup(&d2);
        servers_stop();
}

TestSuite(live_events, .init = servers_start, .fini = teardown, .timeout = 300);

/* Minutes after base_seconds() of "now" less back minutes. */
static double minutes_ago(double back) {
        return (double) (time(NULL) - base_seconds()) / 60.0 - back;
}

/* The retained messages under prefix, "topic payload" lines sorted (caller frees). */
static char *retained(const char *prefix) {
        char port[16], filter[128], *out = NULL, *err = NULL;
        char *argv[] = { "/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", filter, "-v",
                         "--retained-only", "-W", "3", NULL };

        snprintf(port, sizeof(port), "%d", broker.port);
        snprintf(filter, sizeof(filter), "%s/#", prefix);
        (void) proc_run(argv, NULL, &out, &err, 1 << 20, 10000);
        free(err);
        return out ? out : strdup("");
}

/* The message the daemon must have retained for key's latest event, from the database. */
static char *expected_message(const char *db, const char *prefix, const char *controller, const char *type) {
        char sql[1600];

        snprintf(sql, sizeof(sql),
                 "SELECT format('%s/%%s/%%s {\"event_id\":%%s,\"controller_id\":\"%%s\",\"outage_type\":\"%%s\","
                 "\"start_time\":\"%%s\",\"end_time\":\"%%s\",\"report_count\":%%s,\"status\":\"%%s\"}', "
                 "controller_id, outage_type, event_id, controller_id, outage_type, "
                 "to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                 "to_char(end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), report_count, status) "
                 "FROM outage.events WHERE controller_id = '%s' AND outage_type = '%s' "
                 "ORDER BY end_time DESC LIMIT 1",
                 prefix, controller, type);
        return query(db, sql);
}

/* Polls until the retained message of the key is the expected one. */
static void expect_retained(const char *db, const char *prefix, const char *controller, const char *type) {
        char *want = NULL, *got = NULL;

        for (int waited = 0; waited < 30000; waited += 300) {
                free(want);
                free(got);
                want = expected_message(db, prefix, controller, type);
                got = retained(prefix);
                if (strstr(got, want))
                        break;
                harness_sleep_ms(300);
        }
        cr_assert(strstr(got, want), "retained:\n%s\nwant: %s", got, want);
        free(want);
        free(got);
}

/* The SPEC section 3 example, published out of order: after every step the retained
 * message of the key is its latest event as outage.events shows it. */
Test(live_events, retained_message_follows_the_latest_event) {
        char *db = new_database("l_follow"), *v;
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "l-follow",
                            .topic = "lf/+", .extra_sections = "[events]\ntopic_prefix = lfev\n" };
        double t0 = minutes_ago(46);    /* 10:00 of the example; 10:45 is a minute ago */
        const double steps[] = { 20, 0, 10, 45, 32, 33, 10 };   /* minutes after 10:00 */

        start_ready(&d1, &o);
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
                char want_count[32];
                int n_events[] = { 1, 2, 2, 2, 2, 1, 1 };

                publish_report("lf/ctrl_1", "panel_outage", t0 + steps[i]);
                snprintf(want_count, sizeof(want_count), "%d", n_events[i]);
                free(wait_query(db, "SELECT count(*) FROM outage.events", want_count, 10000));
                expect_retained(db, "lfev", "ctrl_1", "panel_outage");
        }
        v = query(db, "SELECT report_count FROM outage.events");
        cr_assert_str_eq(v, "6");
        free(v);
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        free(db);
}

/* With a short gap, the close is announced with "status":"closed" once it has passed (10 s:
 * long enough for the open state to be read back on a loaded machine). */
Test(live_events, close_is_announced) {
        char *db = new_database("l_close"), *v, *want;
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "l-close", .gap = "10s",
                            .topic = "lc/+", .extra_sections = "[events]\ntopic_prefix = lcev\n" };

        start_ready(&d1, &o);
        publish_report("lc/c1", "lamp_outage", minutes_ago(0));
        expect_retained(db, "lcev", "c1", "lamp_outage");
        v = retained("lcev");
        cr_assert(strstr(v, "\"status\":\"open\""), "%s", v);
        free(v);
        /* end + gap passes within seconds; the eviction tick announces the close. */
        for (int w = 0; w < 60; w++) {
                v = retained("lcev");
                bool closed = strstr(v, "\"status\":\"closed\"") != NULL;
                free(v);
                if (closed)
                        break;
                harness_sleep_ms(500);
        }
        want = expected_message(db, "lcev", "c1", "lamp_outage");
        cr_assert(strstr(want, "\"status\":\"closed\""), "the database says closed: %s", want);
        v = retained("lcev");
        cr_assert(strstr(v, want), "retained:\n%s\nwant: %s", v, want);
        free(v);
        free(want);
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        free(db);
}

/* Two instances share the subscription: the last retained message of every key is the
 * database's latest event, whichever instance stored what. */
Test(live_events, two_instances_announce_what_the_database_holds) {
        char *db = new_database("l_two");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "l-two-a", .share_group = "g",
                            .topic = "l2/+", .extra_sections = "[events]\ntopic_prefix = l2ev\n" };
        double t0 = minutes_ago(60);
        char topic[32];

        start_ready(&d1, &o);
        o.client_id = "l-two-b";
        start_ready(&d2, &o);
        for (int k = 0; k < 4; k++)
                for (int i = 0; i < 12; i++) {
                        snprintf(topic, sizeof(topic), "l2/k%d", k);
                        publish_report(topic, "panel_outage", t0 + i * 5 + (i % 3 == 0 ? 1 : 0) * k);
                }
        free(wait_query(db, "SELECT count(*) FROM outage.events", "4", 10000));
        for (int k = 0; k < 4; k++) {
                char id[8];

                snprintf(id, sizeof(id), "k%d", k);
                expect_retained(db, "l2ev", id, "panel_outage");
        }
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        cr_assert_eq(daemon_signal_wait(&d2, SIGTERM, 30000), 0);
        free(db);
}

/* Waits for a notification on conn; returns its payload (caller frees) or NULL. */
static char *next_notify(PGconn *conn, int timeout_ms) {
        for (int waited = 0; waited <= timeout_ms; waited += 100) {
                PGnotify *n;
                struct pollfd p = { .fd = PQsocket(conn), .events = POLLIN };

                (void) PQconsumeInput(conn);
                if ((n = PQnotifies(conn))) {
                        char *s = strdup(n->extra);

                        PQfreemem(n);
                        return s;
                }
                (void) poll(&p, 1, 100);
        }
        return NULL;
}

/* NOTIFY on events.notify_channel for created and merged events, not for extensions. */
Test(live_events, notify_for_created_and_merged_events) {
        char *db = new_database("l_notify"), *n;
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "l-notify",
                            .topic = "ln/+", .extra_sections = "[events]\nnotify_channel = outages_live\n" };
        double t0 = minutes_ago(120);
        PGconn *conn;
        PGresult *res;

        start_ready(&d1, &o);
        conn = PQconnectdb(db);
        cr_assert_eq(PQstatus(conn), CONNECTION_OK);
        res = PQexec(conn, "LISTEN outages_live");
        cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK);
        PQclear(res);

        publish_report("ln/c1", "panel_outage", t0);
        n = next_notify(conn, 10000);
        cr_assert_not_null(n, "a created event is notified");
        cr_assert(strstr(n, "\"controller_id\":\"c1\"") && strstr(n, "\"report_count\":1"), "%s", n);
        free(n);

        publish_report("ln/c1", "panel_outage", t0 + 10);     /* an extension */
        harness_sleep_ms(1500);
        n = next_notify(conn, 500);
        cr_assert_null(n, "an extension is not notified: %s", n ? n : "");

        publish_report("ln/c1", "panel_outage", t0 + 40);     /* a second event */
        n = next_notify(conn, 10000);
        cr_assert_not_null(n);
        free(n);
        publish_report("ln/c1", "panel_outage", t0 + 30);     /* bridges: 20 min of gap-filling */
        publish_report("ln/c1", "panel_outage", t0 + 20);
        n = next_notify(conn, 10000);
        cr_assert_not_null(n, "a merge is notified");
        free(n);
        PQfinish(conn);
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        free(db);
}

/* [retention]: the daemon prunes soon after it starts and hourly; open events stay. */
Test(live_events, retention_prunes_old_closed_events_and_rejects) {
        char *db = new_database("l_retention"), *v;
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "l-ret", .max_age = "0",
                            .topic = "lr/+", .extra_sections = "[retention]\nevents = 30d\nrejects = 10d\n" };

        start_ready(&d1, &o);
        publish_report("lr/old", "panel_outage", minutes_ago(60.0 * 24 * 40));
        publish_report("lr/recent", "panel_outage", minutes_ago(60.0 * 24 * 5));
        publish_report("lr/open", "panel_outage", minutes_ago(1));
        cr_assert_eq(mqtt_publish(&broker, "lr/x", "junk", 4), 0);
        free(wait_query(db, "SELECT count(*) FROM outage.events", "3", 10000));
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        cr_assert_eq(pg_exec(db, "UPDATE outage.rejects SET received_at = now() - interval '11 days'"), 0);

        /* The next start prunes within seconds. */
        daemon_cleanup(&d1);
        start_ready(&d1, &o);
        expect_query(db, "SELECT string_agg(controller_id, ',' ORDER BY controller_id) FROM outage.events",
                     "open,recent", 30000);
        v = query(db, "SELECT count(*) FROM outage.rejects");
        cr_assert_str_eq(v, "0");
        free(v);
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        free(db);
}

static int republish(const Daemon *d, const char *condition, char **ret_err) {
        char *argv[] = { (char *) harness_binary(), "-c", d->config_path, "--republish-rejects",
                         (char *) condition, NULL };
        char *out = NULL;
        int code = proc_run(argv, NULL, &out, ret_err, 65536, 60000);

        free(out);
        return code;
}

/* Rejects that can be fixed and re-sent: after the configuration that refused them is
 * fixed, --republish-rejects publishes the stored payloads again and they become events;
 * rows not stored whole are refused by id; the condition cannot write. */
Test(live_events, republish_rejects) {
        char *db = new_database("l_republish"), *err = NULL, *v, big[1500];
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "l-repub",
                            .topic = "lp/+", .outage_types = "panel_outage" };
        double t = minutes_ago(30);

        start_ready(&d1, &o);
        publish_report("lp/c1", "lamp_outage", t);
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        cr_assert_eq(mqtt_publish(&broker, "lp/c1", big, strlen(big)), 0);
        free(wait_query(db, "SELECT count(*) FROM outage.rejects", "2", 10000));
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);

        /* The allowlist was the mistake: a daemon without it, then the rows re-sent. */
        o.outage_types = NULL;
        start_ready(&d2, &o);
        cr_assert_eq(republish(&d2, "reason = 'unknown_outage_type'", &err), 0, "%s", err);
        cr_assert(strstr(err, "Republished 1 rejects"), "%s", err);
        free(err);
        free(wait_query(db, "SELECT count(*) FROM outage.events WHERE outage_type = 'lamp_outage'", "1", 10000));
        v = query(db, "SELECT count(*) FROM outage.events WHERE outage_type = 'lamp_outage'");
        cr_assert_str_eq(v, "1", "the re-sent report became an event");
        free(v);

        /* A payload cut at 1 KiB is refused, by id, with exit 1. */
        cr_assert_eq(republish(&d2, "reason = 'malformed_json'", &err), 1, "%s", err);
        cr_assert(strstr(err, "not republished") && strstr(err, "1 refused"), "%s", err);
        free(err);

        /* The condition runs read-only, one statement. */
        cr_assert_eq(republish(&d2, "true); DELETE FROM outage.stored_rejects; SELECT (1", &err), 1, "%s", err);
        free(err);
        v = query(db, "SELECT count(*) FROM outage.rejects");
        cr_assert_str_eq(v, "2", "nothing deleted");
        free(v);
        cr_assert_eq(daemon_signal_wait(&d2, SIGTERM, 30000), 0);
        free(db);
}

/* The daemon holds the events still open from its warm start: after a restart it
 * announces their close too (before, a retained "open" from before the restart stayed). */
Test(live_events, close_is_announced_after_a_restart) {
        char *db = new_database("l_restart"), *v;
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "l-restart", .gap = "20s",
                            .topic = "lx/+", .extra_sections = "[events]\ntopic_prefix = lxev\n" };
        bool closed = false;

        start_ready(&d1, &o);
        publish_report("lx/c1", "lamp_outage", minutes_ago(0));
        expect_retained(db, "lxev", "c1", "lamp_outage");
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        v = retained("lxev");
        cr_assert(strstr(v, "\"status\":\"open\""), "%s", v);
        free(v);

        daemon_cleanup(&d1);
        start_ready(&d1, &o);
        for (int w = 0; w < 120 && !closed; w++) {
                v = retained("lxev");
                closed = strstr(v, "\"status\":\"closed\"") != NULL;
                free(v);
                if (!closed)
                        harness_sleep_ms(500);
        }
        cr_assert(closed, "the close of an event held since the warm start is announced");
        expect_retained(db, "lxev", "c1", "lamp_outage");
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        free(db);
}
