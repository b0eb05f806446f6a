/* common.h — shared helpers of the end-to-end tests: one PostgreSQL and one mosquitto
 * per test binary (started before the first test), a database per test, report
 * timestamps relative to today, and the brute-force reference of SPEC section 3. */
#pragma once

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

static PgServer pg;
static MqttBroker broker;

/* Criterion runs each test in a fresh process, so the servers started once for a whole
 * binary are described to the tests through the environment. */
#ifdef SHARED_SERVERS
ReportHook(PRE_ALL)(struct criterion_test_set *set) {
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

ReportHook(POST_ALL)(struct criterion_global_stats *stats) {
        mqtt_broker_stop(&broker);
        pg_server_stop(&pg);
}

__attribute__((unused)) static void servers_from_env(void) {
        const char *v = getenv("OUTAGED_TEST_PG_DIR");

        cr_assert_not_null(v, "servers not started");
        pg.dir = strdup(v);
        pg.port = atoi(getenv("OUTAGED_TEST_PG_PORT"));
        pg.conninfo = strdup(getenv("OUTAGED_TEST_PG_CONNINFO"));
        broker.uri = strdup(getenv("OUTAGED_TEST_MQTT_URI"));
        broker.port = atoi(getenv("OUTAGED_TEST_MQTT_PORT"));
}
#else
/* Each test starts (and may stop and restart) servers of its own. */
__attribute__((unused)) static void servers_start(void) {
        cr_assert_eq(pg_server_start(&pg), 0, "cannot start PostgreSQL");
        cr_assert_eq(mqtt_broker_start(&broker), 0, "cannot start mosquitto");
}

__attribute__((unused)) static void servers_stop(void) {
        mqtt_broker_stop(&broker);
        pg_server_stop(&pg);
}
#endif

/* A fresh database; returns its conninfo (caller frees). */
__attribute__((unused)) static char *new_database(const char *name) {
        char sql[256], *conninfo;

        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
        cr_assert_eq(pg_exec(pg.conninfo, sql), 0);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", name);
        cr_assert_eq(pg_exec(pg.conninfo, sql), 0);
        cr_assert(asprintf(&conninfo, "host=%s port=%d dbname=%s user=postgres", pg.dir, pg.port, name) > 0);
        return conninfo;
}

/* Midnight UTC of yesterday, in Unix seconds: report times stay within max_age. */
__attribute__((unused)) static int64_t base_seconds(void) {
        int64_t now = (int64_t) time(NULL);

        return now - now % 86400 - 86400;
}

/* "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" for base + minutes (+ extra microseconds). */
__attribute__((unused)) static void ts_string(char *buf, size_t len, double minutes) {
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

__attribute__((unused)) static char *report_json(const char *type, double minutes) {
        char ts[64], *s;

        ts_string(ts, sizeof(ts), minutes);
        cr_assert(asprintf(&s, "{\"outage_type\":\"%s\",\"timestamp\":\"%s\"}", type, ts) > 0);
        return s;
}

__attribute__((unused)) static void publish_report(const char *topic, const char *type, double minutes) {
        char *p = report_json(type, minutes);

        cr_assert_eq(mqtt_publish(&broker, topic, p, strlen(p)), 0, "publish failed");
        free(p);
}

/* The stored events as "ctrl/type start end count" items joined by ';', start and end
 * in minutes after base ("620"), or in microseconds when not a whole minute
 * ("37800250000us"), ordered. Caller frees. */
__attribute__((unused)) static char *events_text(const char *conninfo) {
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

/* Polls until the stored events equal want (or timeout); returns the last text seen. */
__attribute__((unused)) static char *wait_events(const char *conninfo, const char *want, int timeout_ms) {
        char *got = NULL;

        for (int waited = 0;; waited += 100) {
                free(got);
                got = events_text(conninfo);
                if (strcmp(got, want) == 0 || waited >= timeout_ms)
                        return got;
                harness_sleep_ms(100);
        }
}

__attribute__((unused)) static char *query(const char *conninfo, const char *sql) {
        char *v = pg_query_value(conninfo, sql);

        return v ? v : strdup("<null>");
}

/* ---- the reference of SPEC section 3 ---- */

typedef struct RefReport {
        char key[96];           /* "ctrl/type" */
        int64_t t;              /* microseconds after base */
} RefReport;

__attribute__((unused)) static int ref_cmp(const void *a, const void *b) {
        const RefReport *x = a, *y = b;
        int c = strcmp(x->key, y->key);

        if (c)
                return c;
        return x->t < y->t ? -1 : x->t > y->t;
}

__attribute__((unused)) static void fmt_minutes(char *buf, size_t len, int64_t us) {
        if (us % 60000000 == 0)
                snprintf(buf, len, "%" PRId64, us / 60000000);
        else
                snprintf(buf, len, "%" PRId64 "us", us);
}

/* Sorts distinct timestamps per key and splits on gaps > gap_us; the count is the number
 * of distinct timestamps (reports arrived in order). Caller frees. */
__attribute__((unused)) static char *reference_text(RefReport *r, size_t n, int64_t gap_us) {
        size_t cap = 256 + n * 64, len = 0;
        char *out = malloc(cap);

        out[0] = '\0';
        qsort(r, n, sizeof(*r), ref_cmp);
        for (size_t i = 0; i < n;) {
                size_t j = i;
                int64_t start = r[i].t, end = r[i].t;
                int count = 0;
                char a[32], b[32];

                while (j < n && strcmp(r[j].key, r[i].key) == 0 && r[j].t - end <= gap_us) {
                        if (j == i || r[j].t != r[j - 1].t)
                                count++;
                        end = r[j].t;
                        j++;
                }
                fmt_minutes(a, sizeof(a), start);
                fmt_minutes(b, sizeof(b), end);
                len += (size_t) snprintf(out + len, cap - len, "%s%s %s %s %d", len ? ";" : "", r[i].key, a, b,
                                         count);
                i = j;
        }
        return out;
}
