/* common.c — shared helpers of the end-to-end tests (see common.h): server lifetimes, a
 * database per test, report timestamps and payloads, the stored events as text, and the
 * SPEC section 3 reference rendered in the same text. Part of the test harness library. */
#include "common.h"

PgServer pg;
MqttBroker broker;

void servers_start_shared(void) {
        char port[16];

        if (pg_server_start(&pg) < 0 || mqtt_broker_start(&broker) < 0) {
                fprintf(stderr, "cannot start PostgreSQL or mosquitto\n");
                exit(1);
        }
        setenv("OUTAGED_TEST_PG_DIR", pg.dir, 1);
        snprintf(port, sizeof(port), "%d", pg.port);
        setenv("OUTAGED_TEST_PG_PORT", port, 1);
        setenv("OUTAGED_TEST_PG_CONNINFO", pg.conninfo, 1);
        setenv("OUTAGED_TEST_MQTT_URI", broker.uri, 1);
        snprintf(port, sizeof(port), "%d", broker.port);
        setenv("OUTAGED_TEST_MQTT_PORT", port, 1);
}

void servers_stop_shared(void) {
        mqtt_broker_stop(&broker);
        pg_server_stop(&pg);
}

static bool pg_shared_started;

void pg_start_shared(void) {
        if (getenv("OUTAGED_TEST_PG_CONNINFO"))
                return;         /* a server of the caller's */
        if (pg_server_start(&pg) < 0) {
                fprintf(stderr, "cannot start PostgreSQL\n");
                exit(1);
        }
        pg_shared_started = true;
        setenv("OUTAGED_TEST_PG_CONNINFO", pg.conninfo, 1);
}

void pg_stop_shared(void) {
        if (pg_shared_started)
                pg_server_stop(&pg);
}

void servers_from_env(void) {
        const char *v = getenv("OUTAGED_TEST_PG_DIR");

        cr_assert_not_null(v, "servers not started");
        pg.dir = strdup(v);
        pg.port = atoi(getenv("OUTAGED_TEST_PG_PORT"));
        pg.conninfo = strdup(getenv("OUTAGED_TEST_PG_CONNINFO"));
        broker.uri = strdup(getenv("OUTAGED_TEST_MQTT_URI"));
        broker.port = atoi(getenv("OUTAGED_TEST_MQTT_PORT"));
}

void servers_start(void) {
        cr_assert_eq(pg_server_start(&pg), 0, "cannot start PostgreSQL");
        cr_assert_eq(mqtt_broker_start(&broker), 0, "cannot start mosquitto");
}

void servers_stop(void) {
        mqtt_broker_stop(&broker);
        pg_server_stop(&pg);
}

char *new_database(const char *name) {
        char sql[256], *conninfo;

        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
        cr_assert_eq(pg_exec(pg.conninfo, sql), 0);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        cr_assert_eq(pg_exec(pg.conninfo, sql), 0);
        cr_assert(asprintf(&conninfo, "host=%s port=%d dbname=%s user=postgres", pg.dir, pg.port, name) > 0);
        return conninfo;
}

int64_t base_seconds(void) {
        int64_t now = (int64_t) time(NULL);

        return now - now % 86400 - 86400;
}

void ts_string(char *buf, size_t len, double minutes) {
        int64_t us = base_seconds() * 1000000 + (int64_t) (minutes * 60e6 + (minutes >= 0 ? 0.5 : -0.5));
        time_t secs = (time_t) (us / 1000000);
        struct tm tm;

        gmtime_r(&secs, &tm);
        if (us % 1000000)
                snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (us % 1000000));
        else
                snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

char *report_json(const char *type, double minutes) {
        char ts[64], *s;

        ts_string(ts, sizeof(ts), minutes);
        cr_assert(asprintf(&s, "{\"outage_type\":\"%s\",\"timestamp\":\"%s\"}", type, ts) > 0);
        return s;
}

void publish_report(const char *topic, const char *type, double minutes) {
        char *p = report_json(type, minutes);

        cr_assert_eq(mqtt_publish(&broker, topic, p, strlen(p)), 0, "publish failed");
        free(p);
}

char *events_text(const char *conninfo) {
        char sql[1400];
        char *v;

        snprintf(sql, sizeof(sql),
                 "WITH e AS (SELECT controller_id, outage_type, report_count, start_time, "
                 "  ((extract(epoch FROM start_time) - %" PRId64 ") * 1000000)::bigint AS s, "
                 "  ((extract(epoch FROM end_time) - %" PRId64 ") * 1000000)::bigint AS t FROM outage.events) "
                 "SELECT coalesce(string_agg(format('%%s/%%s %%s %%s %%s', controller_id, outage_type, "
                 "  CASE WHEN s %% 60000000 = 0 THEN (s / 60000000)::text ELSE s::text || 'us' END, "
                 "  CASE WHEN t %% 60000000 = 0 THEN (t / 60000000)::text ELSE t::text || 'us' END, "
                 "  report_count), ';' ORDER BY controller_id, outage_type, start_time), '') FROM e",
                 base_seconds(), base_seconds());
        v = pg_query_value(conninfo, sql);
        return v ? v : strdup("<query failed>");
}

char *wait_events(const char *conninfo, const char *want, int timeout_ms) {
        char *got = NULL;

        for (int waited = 0;; waited += 100) {
                free(got);
                got = events_text(conninfo);
                if (strcmp(got, want) == 0 || waited >= timeout_ms)
                        return got;
                harness_sleep_ms(100);
        }
}

char *query(const char *conninfo, const char *sql) {
        char *v = pg_query_value(conninfo, sql);

        return v ? v : strdup("<null>");
}

/* Minutes when whole ("620"), else microseconds ("37800250000us"), as events_text. */
static void fmt_minutes(char *buf, size_t len, int64_t us) {
        if (us % 60000000 == 0)
                snprintf(buf, len, "%" PRId64, us / 60000000);
        else
                snprintf(buf, len, "%" PRId64 "us", us);
}

char *reference_text(RefReport *r, size_t n, int64_t gap_us) {
        RefEvent *ev = NULL;
        ssize_t m = reference_events(r, n, gap_us, &ev);
        size_t cap = 256 + n * (sizeof(r->key) + 64), len = 0;
        char *out = malloc(cap);

        cr_assert(m >= 0 && out);
        out[0] = '\0';
        for (ssize_t i = 0; i < m; i++) {
                char a[32], b[32];

                fmt_minutes(a, sizeof(a), ev[i].start);
                fmt_minutes(b, sizeof(b), ev[i].end);
                len += (size_t) snprintf(out + len, cap - len, "%s%s %s %s %" PRIu64, len ? ";" : "", ev[i].key,
                                         a, b, ev[i].distinct);
        }
        free(ev);
        return out;
}

char *wait_query(const char *conninfo, const char *sql, const char *want, int timeout_ms) {
        for (int waited = 0;; waited += 200) {
                char *v = query(conninfo, sql);

                if (strcmp(v, want) == 0 || waited >= timeout_ms)
                        return v;
                free(v);
                harness_sleep_ms(200);
        }
}

void expect_query(const char *conninfo, const char *sql, const char *want, int timeout_ms) {
        char *v = wait_query(conninfo, sql, want, timeout_ms);

        cr_assert_str_eq(v, want, "%s", sql);
        free(v);
}

void start_ready(Daemon *d, const DaemonOptions *o) {
        int r;

        cr_assert_eq(daemon_prepare(d, o), 0);
        cr_assert_eq(daemon_start(d), 0);
        r = daemon_wait_ready(d, 30000);
        if (r != 0)
                daemon_dump_log(d);
        cr_assert_eq(r, 0, "daemon not ready (%d)", r);
}
