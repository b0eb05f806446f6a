/* test_store.c — store.c against a real PostgreSQL started by this binary: migrations, the
 * set-based merge (SPEC section 3), rejects and checkpoints, concurrent writers, the
 * constraint, roles, comments, and index use on a million events. Each test gets a fresh
 * database of the one server. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "migrations.h"
#include "store.h"

#define GAP (12 * USEC_PER_MINUTE)
/* 2026-11-27T00:00:00Z */
#define DAY0 ((usec_t) 1795737600 * USEC_PER_SEC)
#define AT(h, m) (DAY0 + (usec_t) (h) * USEC_PER_HOUR + (usec_t) (m) * USEC_PER_MINUTE)
#define ENV_CONNINFO "OUTAGED_TEST_PG_CONNINFO"     /* shared_pg.c */

/* ---- helpers ---- */

/* A conninfo for a new empty database (later keywords win in a conninfo string). */
static char *fresh_db(void) {
        static int counter;
        const char *base = getenv(ENV_CONNINFO);
        char sql[128], *admin = NULL, *ci = NULL;

        cr_assert(base, "no server");
        (void) snprintf(sql, sizeof(sql), "CREATE DATABASE t_%d_%d", (int) getpid(), ++counter);
        cr_assert(asprintf(&admin, "%s dbname=postgres", base) > 0);
        cr_assert_eq(pg_exec(admin, sql), 0);
        cr_assert(asprintf(&ci, "%s dbname=t_%d_%d", base, (int) getpid(), counter) > 0);
        free(admin);
        return ci;
}

static Store *connect_ok(const char *ci) {
        char err[512];
        Store *s = NULL;
        int r = store_connect(ci, NULL, &s, err, sizeof(err));

        cr_assert_eq(r, 0, "store_connect: %d %s", r, err);
        return s;
}

static Store *migrated(const char *ci) {
        Store *s = connect_ok(ci);
        int r = store_migrate(s, GAP);

        cr_assert_eq(r, 0, "store_migrate: %d %s", r, store_error(s));
        return s;
}

static Fragment frag(const char *c, const char *t, usec_t start, usec_t end, uint32_t count) {
        return (Fragment) { .controller_id = c, .outage_type = t, .start = start, .end = end, .count = count };
}

static void flush_ok(Store *s, const Fragment *f, size_t n) {
        int r = store_flush(s, f, n, NULL, 0, NULL, 0, 0, NULL, NULL);

        cr_assert_eq(r, 0, "store_flush: %d %s", r, store_error(s));
}

static void flush1(Store *s, Fragment f) {
        flush_ok(s, &f, 1);
}

/* One report at t: certain (count 1) or uncertain (count 0, t in the list). */
static void report(Store *s, const char *c, const char *t, usec_t ts, bool uncertain) {
        usec_t u[1] = { ts };
        Fragment f = frag(c, t, ts, ts, uncertain ? 0 : 1);

        if (uncertain) {
                f.n_uncertain = 1;
                f.uncertain = u;
        }
        flush1(s, f);
}

#define FMT_T(col) \
        "CASE WHEN date_trunc('minute', " col ") = " col \
        " THEN to_char(" col " AT TIME ZONE 'UTC', 'HH24:MI')" \
        " ELSE to_char(" col " AT TIME ZONE 'UTC', 'HH24:MI:SS.US') END"

/* "ctrl/type HH:MM-HH:MM count; ..." in key and time order. */
static char *events_str(const char *ci) {
        char *v = pg_query_value(ci,
                "SELECT COALESCE(string_agg(format('%s/%s %s-%s %s', controller_id, outage_type, "
                FMT_T("start_time") ", " FMT_T("end_time") ", report_count), '; '"
                " ORDER BY controller_id, outage_type, start_time), '') FROM outage.events");

        cr_assert(v, "reading events failed");
        return v;
}

static void expect_events(const char *ci, const char *want) {
        char *got = events_str(ci);

        cr_assert_str_eq(got, want);
        free(got);
}

static long query_long(const char *ci, const char *sql) {
        char *v = pg_query_value(ci, sql);
        long r;

        cr_assert(v, "%s returned nothing", sql);
        r = strtol(v, NULL, 10);
        free(v);
        return r;
}

/* Runs sql, returns its SQLSTATE ("00000" on success) in state. */
static void exec_state(const char *ci, const char *sql, char state[6]) {
        PGconn *c = PQconnectdb(ci);
        PGresult *r;

        cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
        r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK)
                strcpy(state, "00000");
        else
                snprintf(state, 6, "%s", PQresultErrorField(r, PG_DIAG_SQLSTATE));
        PQclear(r);
        PQfinish(c);
}

static usec_t wall_now(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

static int known_version(void) {
        return migrations[n_migrations - 1].version;
}

/* ---- migrations ---- */

Test(integration, migrate_from_empty) {
        char *ci = fresh_db();
        Store *s = connect_ok(ci);
        int stored = -1, known = -1;

        cr_assert_eq(store_schema_version(s, &stored, &known), 0);
        cr_assert_eq(stored, 0);
        cr_assert_eq(known, known_version());
        cr_assert_eq(store_migrate(s, GAP), 0, "%s", store_error(s));
        cr_assert_eq(store_schema_version(s, &stored, &known), 0);
        cr_assert_eq(stored, known);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.schema_migrations"), (long) n_migrations);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.settings WHERE gap = interval '12 min'"), 1);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM pg_constraint WHERE conname = 'stored_events_no_overlap' AND contype = 'x'"), 1);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM pg_proc WHERE proname = 'event_box' AND provolatile = 'i'"), 1);
        /* One GiST index on the events: the constraint's, on the boxes. */
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'outage'"
                                " AND tablename = 'stored_events' AND indexdef LIKE '%USING gist%'"), 1);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM pg_roles WHERE rolname IN ('outage_writer', 'outage_reader') AND NOT rolcanlogin"), 2);
        /* The view has exactly the SPEC columns and types. */
        {
                char *cols = pg_query_value(ci,
                        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)"
                        " FROM pg_attribute WHERE attrelid = 'outage.events'::regclass AND attnum > 0");

                cr_assert_str_eq(cols, "event_id bigint, controller_id text, outage_type text, "
                                 "start_time timestamp with time zone, end_time timestamp with time zone, "
                                 "duration interval, report_count bigint, status text, "
                                 "updated_at timestamp with time zone");
                free(cols);
                cols = pg_query_value(ci,
                        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)"
                        " FROM pg_attribute WHERE attrelid = 'outage.rejects'::regclass AND attnum > 0");
                cr_assert_str_eq(cols, "reject_id bigint, received_at timestamp with time zone, topic text, "
                                 "controller_id text, reason text, detail text, payload text");
                free(cols);
        }
        store_free(s);
        free(ci);
}

#define SNAPSHOT_SQL \
        "SELECT (SELECT string_agg(version || name || applied_at, ',') FROM outage.schema_migrations)" \
        " || (SELECT gap || ' ' || installed_at FROM outage.settings)" \
        " || (SELECT count(*) FROM pg_class WHERE relnamespace = 'outage'::regnamespace)" \
        " || (SELECT count(*) FROM pg_constraint WHERE connamespace = 'outage'::regnamespace)" \
        " || (SELECT count(*) FROM pg_proc WHERE pronamespace = 'outage'::regnamespace)"

Test(integration, migrate_twice_is_a_noop) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        char *before = pg_query_value(ci, SNAPSHOT_SQL), *after;

        cr_assert_eq(store_migrate(s, GAP), 0, "%s", store_error(s));
        store_free(s);
        s = migrated(ci);
        after = pg_query_value(ci, SNAPSHOT_SQL);
        cr_assert(before && after);
        cr_assert_str_eq(before, after);
        free(before);
        free(after);
        store_free(s);
        free(ci);
}

/* A database at migration 001 as a daemon of that version left it, with a 12 min gap. */
static void migrate_to_001(const char *ci) {
        char *sql = NULL;

        cr_assert_eq(migrations[0].version, 1);
        cr_assert(asprintf(&sql, "CREATE SCHEMA outage; %s;"
                           " INSERT INTO outage.schema_migrations VALUES (1, '%s', now());"
                           " SELECT outage.install_gap('00:12:00')",
                           migrations[0].sql, migrations[0].name) > 0);
        cr_assert_eq(pg_exec(ci, sql), 0);
        free(sql);
}

/* Upgrading a database at 001 that holds data keeps the data. */
Test(integration, migrate_from_001_keeps_the_data) {
        char *ci = fresh_db();
        Store *s;
        int stored = -1, known = -1;
        char *v;

        migrate_to_001(ci);
        cr_assert_eq(pg_exec(ci,
                "INSERT INTO outage.controllers (name) VALUES ('c1'), ('c2');"
                "INSERT INTO outage.outage_types (name) VALUES ('panel_outage');"
                "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count) VALUES"
                " (1, 1, '2026-11-27 10:00Z', '2026-11-27 10:20Z', 3),"
                " (1, 1, '2026-11-27 11:00Z', '2026-11-27 11:00Z', 2147483600),"
                " (2, 1, '2026-11-27 09:00Z', '2026-11-27 09:30Z', 4);"
                "INSERT INTO outage.checkpoints (instance, seq, flush_id) VALUES ('inst', 41, 4141);"
                "INSERT INTO outage.rejects VALUES ('2026-11-27 10:05Z', 'outages/c1', 'c1', 'malformed_json', 'x'),"
                " ('2026-11-27 10:01Z', 'outages/bad id', NULL, 'bad_controller_id', '{}');"), 0);
        s = connect_ok(ci);
        cr_assert_eq(store_schema_version(s, &stored, &known), 0);
        cr_assert_eq(stored, 1);
        cr_assert_eq(store_migrate(s, GAP), 0, "%s", store_error(s));
        cr_assert_eq(store_schema_version(s, &stored, &known), 0);
        cr_assert_eq(stored, known);
        expect_events(ci, "c1/panel_outage 10:00-10:20 3; c1/panel_outage 11:00-11:00 2147483600; "
                      "c2/panel_outage 09:00-09:30 4");
        v = pg_query_value(ci, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                           " WHERE attrelid = 'outage.stored_events'::regclass AND attname = 'report_count'");
        cr_assert_str_eq(v, "bigint");
        free(v);
        /* The constraint survived the rewrite, on the boxes of 003, and holds for the old rows. */
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM pg_constraint WHERE conname = 'stored_events_no_overlap'"
                                " AND pg_get_constraintdef(oid) LIKE '%event_box%'"), 1);
        cr_assert_eq(query_long(ci, "SELECT (to_regprocedure('outage.padded_span(timestamptz, timestamptz)') IS NULL)::int"), 1);
        {
                char st[6];

                exec_state(ci, "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)"
                           " VALUES (2, 1, '2026-11-27 09:42Z', '2026-11-27 09:50Z', 1)", st);
                cr_assert_str_eq(st, "23P01", "12 min after an event stored before the migration");
        }
        /* Counts now pass 2^31 - 1. */
        flush1(s, frag("c1", "panel_outage", AT(10, 50), AT(11, 10), 100));
        expect_events(ci, "c1/panel_outage 10:00-10:20 3; c1/panel_outage 10:50-11:10 2147483700; "
                      "c2/panel_outage 09:00-09:30 4");
        {
                uint64_t seq = 0, id = 0;

                cr_assert_eq(store_get_checkpoint(s, "inst", &seq, &id), 0);
                cr_assert_eq(seq, 41);
                cr_assert_eq(id, 4141);
        }
        /* The rejects got identifiers in the order they were received, and no detail. */
        v = pg_query_value(ci, "SELECT string_agg(format('%s %s %s %s %s %s', reject_id, received_at AT TIME ZONE 'UTC',"
                           " topic, coalesce(controller_id, '-'), reason, coalesce(detail, '-')), '; ' ORDER BY reject_id)"
                           " FROM outage.rejects");
        cr_assert_str_eq(v, "1 2026-11-27 10:01:00 outages/bad id - bad_controller_id -; "
                         "2 2026-11-27 10:05:00 outages/c1 c1 malformed_json -");
        free(v);
        cr_assert_eq(query_long(ci, "SELECT (to_regclass('outage.rejects_received_at') IS NULL"
                                " AND to_regclass('outage.stored_rejects_received_at') IS NOT NULL)::int"), 1);
        store_free(s);
        free(ci);
}

Test(integration, report_count_passes_2_to_the_31) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        char *v;

        flush1(s, frag("c", "t", AT(10, 0), AT(10, 10), 2));
        flush1(s, frag("c", "t", AT(11, 0), AT(11, 0), 1));
        cr_assert_eq(pg_exec(ci, "UPDATE outage.stored_events SET report_count = 2147483640"), 0);
        /* Extends one, then merges both: 2147483640 * 2 + 10 + 1. */
        flush1(s, frag("c", "t", AT(10, 10), AT(10, 20), 10));
        flush1(s, frag("c", "t", AT(10, 30), AT(10, 50), 1));
        expect_events(ci, "c/t 10:00-11:00 4294967291");
        v = pg_query_value(ci, "SELECT pg_typeof(report_count)::text FROM outage.events");
        cr_assert_str_eq(v, "bigint");
        free(v);
        store_free(s);
        free(ci);
}

Test(integration, newer_schema_is_refused) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        char sql[128];

        (void) snprintf(sql, sizeof(sql), "INSERT INTO outage.schema_migrations VALUES (%d, '%03d_future.sql', now())",
                        known_version() + 1, known_version() + 1);
        cr_assert_eq(pg_exec(ci, sql), 0);
        cr_assert_eq(store_migrate(s, GAP), -EPROTO);
        cr_assert(strstr(store_error(s), "newer"), "%s", store_error(s));
        cr_assert(store_connected(s));
        store_free(s);
        free(ci);
}

Test(integration, different_gap_is_refused) {
        char *ci = fresh_db();
        Store *s = migrated(ci);

        cr_assert_eq(store_migrate(s, 13 * USEC_PER_MINUTE), -ESTALE);
        cr_assert(strstr(store_error(s), "00:12:00"), "%s", store_error(s));
        cr_assert_eq(store_migrate(s, GAP + 1), -ESTALE);
        cr_assert_eq(store_migrate(s, GAP), 0, "%s", store_error(s));
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.settings"), 1);
        store_free(s);
        free(ci);
}

Test(integration, second_database_in_cluster) {
        char *ci1 = fresh_db(), *ci2 = fresh_db();
        Store *s1 = migrated(ci1), *s2;

        /* The roles exist already: the second migration must cope and grant again. */
        s2 = migrated(ci2);
        cr_assert_eq(query_long(ci2, "SELECT has_table_privilege('outage_reader', 'outage.events', 'SELECT')::int"), 1);
        cr_assert_eq(query_long(ci2, "SELECT has_table_privilege('outage_writer', 'outage.stored_events', 'INSERT')::int"), 1);
        store_free(s1);
        store_free(s2);
        free(ci1);
        free(ci2);
}

Test(integration, database_identity) {
        char *ci1 = fresh_db(), *ci2 = fresh_db(), *ci3 = fresh_db();
        Store *s1 = connect_ok(ci1), *s2, *s3;
        char id1[37], id1b[37], id2[37], id3[37];

        cr_assert_eq(store_database_id(s1, id1), -ENOENT);
        cr_assert(store_connected(s1));
        cr_assert_eq(store_migrate(s1, GAP), 0, "%s", store_error(s1));
        cr_assert_eq(store_database_id(s1, id1), 0, "%s", store_error(s1));
        cr_assert_eq(strlen(id1), 36);
        cr_assert_eq(query_long(ci1, "SELECT count(*) FROM outage.database_identity"), 1);
        /* Stable: the same on another connection and after another migrate. */
        store_free(s1);
        s1 = migrated(ci1);
        cr_assert_eq(store_database_id(s1, id1b), 0, "%s", store_error(s1));
        cr_assert_str_eq(id1, id1b);
        /* Another database of the cluster has another one. */
        s2 = migrated(ci2);
        cr_assert_eq(store_database_id(s2, id2), 0, "%s", store_error(s2));
        cr_assert_str_neq(id1, id2);
        /* A database at 001 gets one when it is upgraded. */
        migrate_to_001(ci3);
        s3 = connect_ok(ci3);
        cr_assert_eq(store_database_id(s3, id3), -ENOENT);
        cr_assert_eq(store_migrate(s3, GAP), 0, "%s", store_error(s3));
        cr_assert_eq(store_database_id(s3, id3), 0, "%s", store_error(s3));
        cr_assert_str_neq(id3, id1);
        cr_assert_str_neq(id3, id2);
        store_free(s1);
        store_free(s2);
        store_free(s3);
        free(ci1);
        free(ci2);
        free(ci3);
}

Test(integration, connect_errors) {
        char err[512];
        Store *s = NULL;
        const char *base = getenv(ENV_CONNINFO);
        char *ci = NULL;

        cr_assert_eq(store_connect("host=/nonexistent-dir port=1 dbname=x connect_timeout=2", NULL, &s, err, sizeof(err)),
                     -ECONNREFUSED);
        cr_assert_null(s);
        cr_assert_eq(store_connect("dbname='unterminated", NULL, &s, err, sizeof(err)), -EINVAL);
        cr_assert_eq(store_connect("nosuchkey=1", NULL, &s, err, sizeof(err)), -EINVAL);
        cr_assert_eq(store_connect("postgresql://[bad", NULL, &s, err, sizeof(err)), -EINVAL);
        cr_assert(asprintf(&ci, "%s dbname=postgres user=no_such_role_x", base) > 0);
        cr_assert_eq(store_connect(ci, NULL, &s, err, sizeof(err)), -EACCES, "%s", err);
        free(ci);
        /* URIs work; application_name is set. */
        {
                char *host = strstr(base, "host=") + 5, dir[256], *uri = NULL;
                int port = 0;

                cr_assert_eq(sscanf(host, "%255s port=%d", dir, &port), 2);
                cr_assert(asprintf(&uri, "postgresql:///postgres?host=%s&port=%d&user=postgres", dir, port) > 0);
                cr_assert_eq(store_connect(uri, "unused", &s, err, sizeof(err)), 0, "%s", err);
                free(uri);
        }
        cr_assert(store_connected(s));
        store_free(s);
}

/* ---- the merge (SPEC section 3) ---- */

static void spec_table(bool uncertain) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        const char *c = "ctrl_1", *p = "panel_outage";
        long id;

        report(s, c, p, AT(10, 0), uncertain);
        report(s, c, p, AT(10, 10), uncertain);
        report(s, c, p, AT(10, 20), uncertain);
        expect_events(ci, "ctrl_1/panel_outage 10:00-10:20 3");
        id = query_long(ci, "SELECT event_id FROM outage.events");
        report(s, c, p, AT(10, 45), uncertain);
        expect_events(ci, "ctrl_1/panel_outage 10:00-10:20 3; ctrl_1/panel_outage 10:45-10:45 1");
        report(s, c, p, AT(10, 32), uncertain);
        expect_events(ci, "ctrl_1/panel_outage 10:00-10:32 4; ctrl_1/panel_outage 10:45-10:45 1");
        report(s, c, p, AT(10, 33), uncertain);
        expect_events(ci, "ctrl_1/panel_outage 10:00-10:45 6");
        cr_assert_eq(query_long(ci, "SELECT event_id FROM outage.events"), id, "the smallest event_id survives");
        report(s, c, p, AT(10, 10), uncertain);
        expect_events(ci, "ctrl_1/panel_outage 10:00-10:45 6");
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.stored_events"), 1);
        store_free(s);
        free(ci);
}

Test(integration, spec_example_certain) {
        spec_table(false);
}

Test(integration, spec_example_uncertain) {
        spec_table(true);
}

Test(integration, spec_example_one_batch) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        Fragment f[] = {
                frag("ctrl_1", "panel_outage", AT(10, 0), AT(10, 20), 3),
                frag("ctrl_1", "panel_outage", AT(10, 45), AT(10, 45), 1),
                frag("ctrl_1", "lamp_outage", AT(10, 45), AT(10, 45), 1),
        };
        Fragment g[] = {
                frag("ctrl_1", "panel_outage", AT(10, 32), AT(10, 33), 2),
                frag("ctrl_1", "panel_outage", AT(10, 10), AT(10, 10), 1),
        };

        flush_ok(s, f, 3);
        expect_events(ci, "ctrl_1/lamp_outage 10:45-10:45 1; ctrl_1/panel_outage 10:00-10:20 3; "
                      "ctrl_1/panel_outage 10:45-10:45 1");
        flush_ok(s, g, 2);
        expect_events(ci, "ctrl_1/lamp_outage 10:45-10:45 1; ctrl_1/panel_outage 10:00-10:45 6");
        store_free(s);
        free(ci);
}

Test(integration, one_fragment_merges_three_events) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        long first;

        report(s, "c", "t", AT(10, 0), false);
        first = query_long(ci, "SELECT min(event_id) FROM outage.events");
        report(s, "c", "t", AT(10, 20), false);
        report(s, "c", "t", AT(10, 40), false);
        report(s, "c", "t", AT(11, 40), false);
        expect_events(ci, "c/t 10:00-10:00 1; c/t 10:20-10:20 1; c/t 10:40-10:40 1; c/t 11:40-11:40 1");
        flush1(s, frag("c", "t", AT(10, 10), AT(10, 30), 2));
        expect_events(ci, "c/t 10:00-10:40 5; c/t 11:40-11:40 1");
        cr_assert_eq(query_long(ci, "SELECT min(event_id) FROM outage.events"), first);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.stored_events"), 2);
        store_free(s);
        free(ci);
}

Test(integration, one_event_joins_two_fragments) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        Fragment f[] = {
                frag("c", "t", AT(10, 30), AT(10, 30), 1),
                frag("c", "t", AT(9, 50), AT(9, 50), 1),
                /* two fragments of one batch that join each other only */
                frag("c", "t", AT(13, 0), AT(13, 0), 1),
                frag("c", "t", AT(13, 12), AT(13, 20), 2),
        };

        flush1(s, frag("c", "t", AT(10, 0), AT(10, 20), 3));
        flush_ok(s, f, 4);
        expect_events(ci, "c/t 09:50-10:30 5; c/t 13:00-13:20 3");
        store_free(s);
        free(ci);
}

Test(integration, replaying_a_batch_changes_nothing) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        usec_t u[] = { AT(8, 0), AT(8, 5) };
        Fragment f[] = {
                frag("a", "x", AT(10, 0), AT(10, 20), 3),
                frag("a", "x", AT(10, 30), AT(10, 40), 2),
                frag("a", "y", AT(10, 0), AT(10, 0), 1),
                frag("b", "x", AT(8, 0), AT(8, 5), 0),
        };
        char *once, *twice;

        f[3].n_uncertain = 2;
        f[3].uncertain = u;
        flush1(s, frag("a", "x", AT(9, 0), AT(9, 50), 6));
        flush_ok(s, f, 4);
        once = events_str(ci);
        cr_assert_str_eq(once, "a/x 09:00-10:40 11; a/y 10:00-10:00 1; b/x 08:00-08:05 2");
        flush_ok(s, f, 4);
        flush_ok(s, f, 4);
        twice = events_str(ci);
        cr_assert_str_eq(once, twice);
        free(once);
        free(twice);
        store_free(s);
        free(ci);
}

Test(integration, uncertain_counted_only_outside_stored_events) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        usec_t u1[] = { AT(10, 15), AT(10, 30) };
        usec_t u2[] = { AT(10, 5), AT(10, 10) };
        usec_t u3[] = { AT(9, 55), AT(10, 0) };
        Fragment f;

        flush1(s, frag("c", "t", AT(10, 0), AT(10, 20), 3));
        /* 10:15 is inside the stored event, 10:30 is not. */
        f = frag("c", "t", AT(10, 15), AT(10, 30), 0);
        f.n_uncertain = 2, f.uncertain = u1;
        flush1(s, f);
        expect_events(ci, "c/t 10:00-10:30 4");
        /* Inside one stored event: nothing, whatever the certain count says. */
        f = frag("c", "t", AT(10, 5), AT(10, 10), 1);
        f.n_uncertain = 2, f.uncertain = u2;
        flush1(s, f);
        expect_events(ci, "c/t 10:00-10:30 4");
        /* Certain count plus the uncertain timestamps outside: 1 + 1 (09:55). */
        f = frag("c", "t", AT(9, 55), AT(10, 0), 1);
        f.n_uncertain = 2, f.uncertain = u3;
        flush1(s, f);
        expect_events(ci, "c/t 09:55-10:30 6");
        store_free(s);
        free(ci);
}

Test(integration, gap_boundaries_to_the_microsecond) {
        char *ci = fresh_db();
        Store *s = migrated(ci);

        report(s, "j", "t", AT(10, 0), false);
        report(s, "j", "t", AT(10, 12), false);                 /* exactly gap after: joins */
        report(s, "j", "t", AT(9, 48), false);                  /* exactly gap before: joins */
        report(s, "s", "t", AT(10, 0), false);
        report(s, "s", "t", AT(10, 12) + 1, false);             /* gap + 1 us: splits */
        report(s, "s", "t", AT(9, 48) - 1, false);
        expect_events(ci, "j/t 09:48-10:12 3; "
                      "s/t 09:47:59.999999-09:47:59.999999 1; s/t 10:00-10:00 1; "
                      "s/t 10:12:00.000001-10:12:00.000001 1");
        /* A report exactly gap from both neighbours bridges them. */
        report(s, "b", "t", AT(10, 0), false);
        report(s, "b", "t", AT(10, 24), false);
        report(s, "b", "t", AT(10, 12), false);
        expect_events(ci, "b/t 10:00-10:24 3; j/t 09:48-10:12 3; "
                      "s/t 09:47:59.999999-09:47:59.999999 1; s/t 10:00-10:00 1; "
                      "s/t 10:12:00.000001-10:12:00.000001 1");
        store_free(s);
        free(ci);
}

/* A gap of one day in a database whose time zone has daylight saving time: in Europe/Berlin
 * '1 day' after 2026-03-28 12:00Z is 23 h later, after 2026-10-24 12:00Z 25 h later. The
 * gap is 24 h in UTC whatever the session's time zone, as the exclusion constraint says. */
Test(integration, gap_of_days_in_utc_across_dst_changes) {
        char *ci = fresh_db();
        const usec_t spring = DAY0 - 244 * USEC_PER_DAY + 12 * USEC_PER_HOUR;   /* 2026-03-28 12:00Z */
        const usec_t autumn = DAY0 - 34 * USEC_PER_DAY + 12 * USEC_PER_HOUR;    /* 2026-10-24 12:00Z */
        const usec_t half = 30 * USEC_PER_MINUTE;
        Store *s;
        char *v;
        int r;

        cr_assert_eq(pg_exec(ci, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L',"
                                 " current_database(), 'Europe/Berlin'); END $$"), 0);
        s = connect_ok(ci);
        r = store_migrate(s, USEC_PER_DAY);
        cr_assert_eq(r, 0, "store_migrate: %d %s", r, store_error(s));
        /* The daemon records '24:00:00'; an operator changing the gap writes '1 day'. */
        cr_assert_eq(pg_exec(ci, "ALTER TABLE outage.stored_events DROP CONSTRAINT stored_events_no_overlap;"
                                 "DELETE FROM outage.settings;"
                                 "SELECT outage.install_gap(interval '1 day')"), 0);
        cr_assert_eq(store_migrate(s, USEC_PER_DAY), 0, "%s", store_error(s));
        v = pg_query_value(ci, "SELECT current_setting('TimeZone') || ' ' || gap FROM outage.settings");
        cr_assert_str_eq(v, "Europe/Berlin 1 day");
        free(v);

        /* 23.5 h apart: one event, across the spring change as anywhere else. */
        report(s, "c", "t", spring, false);
        report(s, "c", "t", spring + USEC_PER_DAY - half, false);
        /* 24.5 h apart: two events, across the autumn change as anywhere else. */
        report(s, "c", "t", autumn, false);
        report(s, "c", "t", autumn + USEC_PER_DAY + half, false);
        /* Exactly 24 h joins, 24 h + 1 us splits. */
        report(s, "d", "t", spring, false);
        report(s, "d", "t", spring + USEC_PER_DAY, false);
        report(s, "d", "t", autumn, false);
        report(s, "d", "t", autumn + USEC_PER_DAY + 1, false);
        v = pg_query_value(ci, "SELECT string_agg(format('%s %s %s %s', controller_id, start_time AT TIME ZONE 'UTC',"
                           " end_time AT TIME ZONE 'UTC', report_count), '; ' ORDER BY controller_id, start_time)"
                           " FROM outage.events");
        cr_assert_str_eq(v, "c 2026-03-28 12:00:00 2026-03-29 11:30:00 2; "
                         "c 2026-10-24 12:00:00 2026-10-24 12:00:00 1; c 2026-10-25 12:30:00 2026-10-25 12:30:00 1; "
                         "d 2026-03-28 12:00:00 2026-03-29 12:00:00 2; "
                         "d 2026-10-24 12:00:00 2026-10-24 12:00:00 1; "
                         "d 2026-10-25 12:00:00.000001 2026-10-25 12:00:00.000001 1");
        free(v);
        /* The status of outage.events adds the gap the same way. */
        cr_assert_eq(query_long(ci, "SELECT (outage.utc_add('2026-03-28 12:00Z', interval '1 day')"
                                " = '2026-03-29 12:00Z')::int"), 1);
        v = pg_query_value(ci, "SELECT pg_get_viewdef('outage.events_keyed')");
        cr_assert(v && strstr(v, "utc_add(e.end_time"), "%s", v);
        free(v);
        store_free(s);
        free(ci);
}

struct loaded {
        usec_t start[8], end[8];
        char names[8][64];
        int n;
};

static int collect(const char *c, const char *t, usec_t start, usec_t end, void *userdata) {
        struct loaded *l = userdata;

        if (l->n >= 8)
                return -E2BIG;
        snprintf(l->names[l->n], sizeof(l->names[0]), "%s/%s", c, t);
        l->start[l->n] = start;
        l->end[l->n++] = end;
        return 0;
}

Test(integration, microsecond_precision_and_limits) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        const usec_t max = (usec_t) 253402300799 * USEC_PER_SEC + 999999;    /* 9999-12-31T23:59:59.999999Z */
        struct loaded l = { 0 };
        char *v;

        flush1(s, frag("p", "t", AT(10, 0) + 1, AT(10, 5) + 999999, 2));
        flush1(s, frag("z", "t", 0, 1, 2));
        flush1(s, frag("m", "t", max - GAP, max - GAP, 1));
        flush1(s, frag("m", "t", max, max, 1));
        expect_events(ci, "m/t 23:47:59.999999-23:59:59.999999 2; p/t 10:00:00.000001-10:05:00.999999 2; "
                      "z/t 00:00-00:00:00.000001 2");
        v = pg_query_value(ci, "SELECT end_time FROM outage.events WHERE controller_id = 'm'");
        cr_assert_str_eq(v, "9999-12-31 23:59:59.999999+00");
        free(v);
        cr_assert_eq(store_load_events(s, AT(10, 5) + 999999, collect, &l), 0, "%s", store_error(s));
        cr_assert_eq(l.n, 2);
        for (int i = 0; i < l.n; i++) {
                if (streq(l.names[i], "p/t")) {
                        cr_assert_eq(l.start[i], AT(10, 0) + 1);
                        cr_assert_eq(l.end[i], AT(10, 5) + 999999);
                } else {
                        cr_assert_str_eq(l.names[i], "m/t");
                        cr_assert_eq(l.start[i], max - GAP);
                        cr_assert_eq(l.end[i], max);
                }
        }
        l.n = 0;
        cr_assert_eq(store_load_events(s, AT(10, 5) + 1000000, collect, &l), 0);
        cr_assert_eq(l.n, 1);
        l.n = 0;
        cr_assert_eq(store_load_events(s, 0, collect, &l), 0);
        cr_assert_eq(l.n, 3);
        store_free(s);
        free(ci);
}

/* ---- rejects and checkpoint ---- */

Test(integration, rejects_and_checkpoint_commit_together) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        RejectRow rj[] = {
                { AT(10, 0), "outages/bad id", NULL, "bad_controller_id", "{}" },
                { AT(10, 1), "outages/c1", "c1", "malformed_json", "a\tb\nc\\d \xff\xfe end" },
        };
        Fragment f = frag("c1", "panel_outage", AT(10, 0), AT(10, 0), 1);
        uint64_t seq = 99;
        char *v;

        cr_assert_eq(store_get_checkpoint(s, "inst-a", &seq, NULL), 0);
        cr_assert_eq(seq, 0);
        uint64_t id = 0;
        cr_assert_eq(store_flush(s, &f, 1, rj, 2, "inst-a", 42, 4242, NULL, NULL), 0, "%s", store_error(s));
        cr_assert_eq(store_get_checkpoint(s, "inst-a", &seq, &id), 0);
        cr_assert_eq(seq, 42);
        cr_assert_eq(id, 4242);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects WHERE controller_id IS NULL AND topic = 'outages/bad id'"), 1);
        v = pg_query_value(ci, "SELECT payload FROM outage.rejects WHERE reason = 'malformed_json'");
        cr_assert_str_eq(v, "a\tb\nc\\d \\xff\\xfe end");
        free(v);

        /* A flush that fails late leaves neither its rejects, nor its checkpoint, nor events. */
        cr_assert_eq(pg_exec(ci,
                "CREATE FUNCTION public.fail666() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.seq = 666 THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;"
                "CREATE TRIGGER fail666 BEFORE INSERT OR UPDATE ON outage.checkpoints"
                " FOR EACH ROW EXECUTE FUNCTION public.fail666()"), 0);
        f = frag("c2", "panel_outage", AT(11, 0), AT(11, 0), 1);
        cr_assert_eq(store_flush(s, &f, 1, rj, 2, "inst-a", 666, 6666, NULL, NULL), -EIO);
        cr_assert(strstr(store_error(s), "refused"), "%s", store_error(s));
        cr_assert(store_connected(s));
        cr_assert_eq(store_get_checkpoint(s, "inst-a", &seq, &id), 0);
        cr_assert_eq(seq, 42);
        cr_assert_eq(id, 4242, "the flush_id of a rolled-back flush must not be visible");
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects"), 2);
        expect_events(ci, "c1/panel_outage 10:00-10:00 1");
        /* The connection stays usable. */
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "inst-a", 43, 0, NULL, NULL), 0, "%s", store_error(s));
        cr_assert_eq(store_get_checkpoint(s, "inst-a", &seq, NULL), 0);
        cr_assert_eq(seq, 43);
        store_free(s);
        free(ci);
}

Test(integration, rejects_inserted_twice_are_one_row) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        RejectRow rj[] = {
                { .received_at = AT(10, 0), .topic = "outages/c1", .controller_id = "c1", .reason = "bad_timestamp",
                  .payload = "{\"timestamp\":1}", .detail = "item 1 of 3", .seq = 7, .item = 1 },
                { .received_at = AT(10, 0), .topic = "outages/c1", .controller_id = "c1", .reason = "missing_field",
                  .payload = "{}", .detail = "item 3 of 3", .seq = 7, .item = 3 },
                { .received_at = AT(10, 1), .topic = "outages/c1", .controller_id = "c1", .reason = "malformed_json",
                  .payload = "[", .seq = 8 },
        };
        RejectRow unkeyed = { .received_at = AT(10, 2), .topic = "outages/c2", .controller_id = "c2",
                              .reason = "store_refused", .payload = "c2/t" };
        char *v;

        cr_assert_eq(store_flush(s, NULL, 0, rj, 3, "inst-a", 8, 1, NULL, NULL), 0, "%s", store_error(s));
        /* A replay re-adds the rejects of message 8, and of 7 (half applied), plus new ones. */
        cr_assert_eq(store_flush(s, NULL, 0, &rj[2], 1, "inst-a", 8, 2, NULL, NULL), 0, "%s", store_error(s));
        cr_assert_eq(store_flush(s, NULL, 0, rj, 3, "inst-a", 9, 3, NULL, NULL), 0, "%s", store_error(s));
        v = pg_query_value(ci, "SELECT string_agg(format('%s %s %s', reason, coalesce(detail, '-'), payload), '; '"
                           " ORDER BY reject_id) FROM outage.rejects");
        cr_assert_str_eq(v, "bad_timestamp item 1 of 3 {\"timestamp\":1}; missing_field item 3 of 3 {}; malformed_json - [");
        free(v);
        /* Another instance's journal record 7 is another message. */
        cr_assert_eq(store_flush(s, NULL, 0, rj, 1, "inst-b", 7, 1, NULL, NULL), 0, "%s", store_error(s));
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects"), 4);
        /* Twice in one batch: one row. */
        {
                RejectRow twice[2] = { rj[0], rj[0] };

                twice[0].seq = twice[1].seq = 10;
                cr_assert_eq(store_flush(s, NULL, 0, twice, 2, "inst-a", 10, 4, NULL, NULL), 0, "%s", store_error(s));
                cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects"), 5);
        }
        /* Without a journal record or an instance there is no identity: every insert counts. */
        cr_assert_eq(store_flush(s, NULL, 0, &unkeyed, 1, "inst-a", 10, 5, NULL, NULL), 0, "%s", store_error(s));
        cr_assert_eq(store_flush(s, NULL, 0, &unkeyed, 1, "inst-a", 10, 6, NULL, NULL), 0, "%s", store_error(s));
        cr_assert_eq(store_flush(s, NULL, 0, rj, 1, NULL, 0, 0, NULL, NULL), 0, "%s", store_error(s));
        cr_assert_eq(store_flush(s, NULL, 0, rj, 1, NULL, 0, 0, NULL, NULL), 0, "%s", store_error(s));
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects"), 9);
        /* reject_id increases with insertion order, within a batch too. */
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM (SELECT reject_id, lag(reject_id) OVER (ORDER BY reject_id) p,"
                                " received_at, lag(received_at) OVER (ORDER BY reject_id) pr FROM outage.rejects) x"
                                " WHERE p IS NOT NULL AND reject_id <= p"), 0);
        v = pg_query_value(ci, "SELECT string_agg(reason, ',' ORDER BY reject_id) FROM outage.rejects");
        cr_assert_str_eq(v, "bad_timestamp,missing_field,malformed_json,bad_timestamp,bad_timestamp,"
                         "store_refused,store_refused,bad_timestamp,bad_timestamp");
        free(v);
        store_free(s);
        free(ci);
}

/* ---- a fragment the database refuses ---- */

static void expect_refused(Store *s, const Fragment *f, size_t n) {
        RejectRow rj = { AT(10, 0), "outages/x", "x", "missing_field", "{}" };
        int r = store_flush(s, f, n, &rj, 1, "inst", 9, 99, NULL, NULL);

        cr_assert_eq(r, -EIO, "store_flush: %d %s", r, store_error(s));
        cr_assert(store_connected(s), "a refusal is not a connection failure");
}

/* A trigger or a CHECK an operator added, raising on one controller: the batch that holds it
 * is refused and rolled back (-EIO) on a connection that stays usable, so the caller can
 * split the batch until it isolates the fragment. Whatever SQLSTATE the trigger raises. */
Test(integration, one_refused_fragment_is_eio_not_a_connection_failure) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        Fragment batch[] = {
                frag("good1", "t", AT(10, 0), AT(10, 0), 1),
                frag("evil", "t", AT(10, 0), AT(10, 0), 1),
                frag("good2", "t", AT(10, 0), AT(10, 0), 1),
        };
        static const char *const codes[] = { "P0001", "22023", "57P01", "08006", "40001", "23P01" };
        uint64_t seq = 1, id = 1;
        char sql[1024];

        for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
                (void) snprintf(sql, sizeof(sql),
                        "CREATE OR REPLACE FUNCTION public.no_evil() RETURNS trigger LANGUAGE plpgsql AS $$"
                        " BEGIN IF NEW.controller = (SELECT id FROM outage.controllers WHERE name = 'evil') THEN"
                        "  RAISE EXCEPTION 'no evil here' USING ERRCODE = '%s'; END IF; RETURN NEW; END $$;"
                        "CREATE OR REPLACE TRIGGER no_evil BEFORE INSERT OR UPDATE ON outage.stored_events"
                        " FOR EACH ROW EXECUTE FUNCTION public.no_evil()", codes[i]);
                cr_assert_eq(pg_exec(ci, sql), 0);
                expect_refused(s, batch, 3);
                cr_assert(strstr(store_error(s), "no evil here"), "%s: %s", codes[i], store_error(s));
                expect_refused(s, &batch[1], 1);
        }
        /* Nothing of the refused flushes was stored. */
        expect_events(ci, "");
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects"), 0);
        cr_assert_eq(store_get_checkpoint(s, "inst", &seq, &id), 0);
        cr_assert_eq(seq, 0);
        /* Halving isolates it: the others go through. */
        flush1(s, batch[0]);
        flush1(s, batch[2]);
        expect_events(ci, "good1/t 10:00-10:00 1; good2/t 10:00-10:00 1");
        /* A CHECK on the names refuses the same way. */
        cr_assert_eq(pg_exec(ci, "DROP TRIGGER no_evil ON outage.stored_events;"
                                 "ALTER TABLE outage.controllers ADD CONSTRAINT no_evil CHECK (name <> 'evil')"), 0);
        expect_refused(s, batch, 3);
        cr_assert(strstr(store_error(s), "no_evil"), "%s", store_error(s));
        flush1(s, batch[2]);
        store_free(s);
        free(ci);
}

/* ---- live events ---- */

static StoreFlushResult *flush_changes_ok(Store *s, const Fragment *f, size_t n, const char *channel) {
        StoreFlushResult *res = NULL;
        int r = store_flush(s, f, n, NULL, 0, NULL, 0, 0, channel, &res);

        cr_assert_eq(r, 0, "store_flush: %d %s", r, store_error(s));
        cr_assert_not_null(res);
        return res;
}

static void fmt_at(char *buf, size_t len, usec_t t) {
        usec_t m = (t - DAY0) / USEC_PER_MINUTE;

        if ((t - DAY0) % USEC_PER_MINUTE == 0 && m >= 0 && m < 24 * 60)
                snprintf(buf, len, "%02d:%02d", (int) (m / 60), (int) (m % 60));
        else
                snprintf(buf, len, "%lldus", (long long) t);
}

/* "ctrl/type HH:MM-HH:MM count kind[ latest]; ..." */
static void expect_changes(StoreFlushResult *res, const char *want) {
        static const char *const kinds[_STORE_CHANGE_MAX] = {
                [STORE_CHANGE_EXTENDED] = "extended",
                [STORE_CHANGE_CREATED] = "created",
                [STORE_CHANGE_MERGED] = "merged",
        };
        char got[4096] = "", a[32], b[32];
        size_t len = 0;

        for (size_t i = 0; i < res->n; i++) {
                const StoreEvent *e = &res->events[i];

                cr_assert(e->change >= 0 && e->change < _STORE_CHANGE_MAX);
                fmt_at(a, sizeof(a), e->start);
                fmt_at(b, sizeof(b), e->end);
                len += (size_t) snprintf(got + len, sizeof(got) - len, "%s%s/%s %s-%s %" PRIu64 " %s%s",
                                         i ? "; " : "", e->controller_id, e->outage_type, a, b,
                                         e->report_count, kinds[e->change], e->latest ? " latest" : "");
        }
        cr_assert_str_eq(got, want);
        store_flush_result_free(res);
}

static StoreFlushResult *report_changes(Store *s, const char *c, const char *t, usec_t ts) {
        Fragment f = frag(c, t, ts, ts, 1);

        return flush_changes_ok(s, &f, 1, NULL);
}

Test(integration, flush_reports_the_events_it_changed) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        StoreFlushResult *res;
        int64_t first;
        Fragment batch[] = {
                frag("d", "t", AT(10, 0), AT(10, 0), 1),
                frag("c", "t", AT(9, 5), AT(9, 5), 1),
                frag("e", "x", AT(10, 10), AT(10, 20), 1),
                frag("e", "x", AT(10, 0), AT(10, 0), 1),
                frag("c", "t", AT(10, 40), AT(10, 40), 1),      /* inside: nothing */
        };

        res = report_changes(s, "c", "t", AT(10, 0));
        cr_assert_eq(res->n, 1);
        first = res->events[0].event_id;
        cr_assert_eq(first, query_long(ci, "SELECT event_id FROM outage.events"));
        expect_changes(res, "c/t 10:00-10:00 1 created latest");
        expect_changes(report_changes(s, "c", "t", AT(10, 10)), "c/t 10:00-10:10 2 extended latest");
        expect_changes(report_changes(s, "c", "t", AT(10, 10)), "");
        res = report_changes(s, "c", "t", AT(10, 45));
        cr_assert_eq(res->events[0].event_id, query_long(ci, "SELECT max(event_id) FROM outage.events"));
        expect_changes(res, "c/t 10:45-10:45 1 created latest");
        /* A change to an older event of the key is not its latest. */
        expect_changes(report_changes(s, "c", "t", AT(9, 0)), "c/t 09:00-09:00 1 created");
        expect_changes(report_changes(s, "c", "t", AT(10, 22)), "c/t 10:00-10:22 3 extended");
        /* The surviving event of a merge, with the smallest id. */
        res = report_changes(s, "c", "t", AT(10, 33));
        cr_assert_eq(res->events[0].event_id, first);
        expect_changes(res, "c/t 10:00-10:45 5 merged latest");
        /* Several keys in one batch, in key and time order. */
        expect_changes(flush_changes_ok(s, batch, ELEMENTSOF(batch), NULL),
                       "c/t 09:00-09:05 2 extended; d/t 10:00-10:00 1 created latest; "
                       "e/x 10:00-10:20 2 created latest");
        /* Nothing asked, nothing returned; an empty batch returns an empty result. */
        flush1(s, frag("c", "t", AT(11, 0), AT(11, 0), 1));
        expect_changes(flush_changes_ok(s, NULL, 0, NULL), "");
        expect_events(ci, "c/t 09:00-09:05 2; c/t 10:00-10:45 5; c/t 11:00-11:00 1; d/t 10:00-10:00 1; e/x 10:00-10:20 2");
        store_free(s);
        free(ci);
}

/* The next notification on c within timeout_ms, or NULL (caller frees). */
static char *next_notification(PGconn *c, int timeout_ms) {
        for (int waited = 0; waited <= timeout_ms; waited += 10) {
                PGnotify *n;

                cr_assert(PQconsumeInput(c), "%s", PQerrorMessage(c));
                n = PQnotifies(c);
                if (n) {
                        char *p = strdup(n->extra);

                        cr_assert_str_eq(n->relname, "Outage_Events");
                        PQfreemem(n);
                        return p;
                }
                harness_sleep_ms(10);
        }
        return NULL;
}

static void expect_notification(PGconn *c, const char *want) {
        char *got = next_notification(c, 5000);

        cr_assert_not_null(got, "no notification, expected %s", want);
        cr_assert_str_eq(got, want);
        free(got);
}

Test(integration, flush_notifies_created_and_merged_events) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        PGconn *l = PQconnectdb(ci);
        const char *ch = "Outage_Events";
        const usec_t now = wall_now();
        StoreFlushResult *res;
        Fragment f;
        char *got;

        cr_assert_eq(PQstatus(l), CONNECTION_OK);
        PQclear(PQexec(l, "LISTEN \"Outage_Events\""));
        f = frag("c", "t", AT(10, 0), AT(10, 0), 1);
        expect_changes(flush_changes_ok(s, &f, 1, ch), "c/t 10:00-10:00 1 created latest");
        expect_notification(l, "{\"event_id\":1,\"controller_id\":\"c\",\"outage_type\":\"t\","
                            "\"start_time\":\"2026-11-27T10:00:00Z\",\"end_time\":\"2026-11-27T10:00:00Z\","
                            "\"report_count\":1,\"status\":\"closed\"}");
        /* Plain extensions are not notified: the next notification is the next creation. */
        f = frag("c", "t", AT(10, 5), AT(10, 10), 2);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, NULL, 0, 0, ch, NULL), 0, "%s", store_error(s));
        f = frag("c", "t", AT(10, 30), AT(10, 30) + 250000, 2);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, NULL, 0, 0, ch, NULL), 0, "%s", store_error(s));
        expect_notification(l, "{\"event_id\":2,\"controller_id\":\"c\",\"outage_type\":\"t\","
                            "\"start_time\":\"2026-11-27T10:30:00Z\",\"end_time\":\"2026-11-27T10:30:00.250000Z\","
                            "\"report_count\":2,\"status\":\"closed\"}");
        /* A merge is announced through the surviving event. */
        f = frag("c", "t", AT(10, 20), AT(10, 20), 1);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, NULL, 0, 0, ch, NULL), 0, "%s", store_error(s));
        expect_notification(l, "{\"event_id\":1,\"controller_id\":\"c\",\"outage_type\":\"t\","
                            "\"start_time\":\"2026-11-27T10:00:00Z\",\"end_time\":\"2026-11-27T10:30:00.250000Z\","
                            "\"report_count\":6,\"status\":\"closed\"}");
        /* Names are JSON-escaped; an event open now says so. */
        f = frag("q\"\\", "t", now - USEC_PER_MINUTE, now - USEC_PER_MINUTE, 1);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, NULL, 0, 0, ch, NULL), 0, "%s", store_error(s));
        got = next_notification(l, 5000);
        cr_assert(got && strstr(got, "\"controller_id\":\"q\\\"\\\\\",") && strstr(got, "\"status\":\"open\"}"),
                  "%s", got);
        free(got);
        /* A flush that rolls back notifies nothing; one without a channel neither. */
        cr_assert_eq(pg_exec(ci,
                "CREATE FUNCTION public.fail666() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.seq = 666 THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;"
                "CREATE TRIGGER fail666 BEFORE INSERT OR UPDATE ON outage.checkpoints"
                " FOR EACH ROW EXECUTE FUNCTION public.fail666()"), 0);
        f = frag("r", "t", AT(10, 0), AT(10, 0), 1);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "i", 666, 1, ch, NULL), -EIO);
        f = frag("n", "t", AT(10, 0), AT(10, 0), 1);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, NULL, 0, 0, NULL, NULL), 0, "%s", store_error(s));
        f = frag("z", "t", AT(10, 0), AT(10, 0), 1);
        res = flush_changes_ok(s, &f, 1, ch);
        cr_assert_eq(res->n, 1);
        cr_assert_eq(res->events[0].event_id, query_long(ci, "SELECT event_id FROM outage.events WHERE controller_id = 'z'"));
        {
                char want[512];

                snprintf(want, sizeof(want), "{\"event_id\":%lld,\"controller_id\":\"z\",\"outage_type\":\"t\","
                         "\"start_time\":\"2026-11-27T10:00:00Z\",\"end_time\":\"2026-11-27T10:00:00Z\","
                         "\"report_count\":1,\"status\":\"closed\"}", (long long) res->events[0].event_id);
                expect_notification(l, want);
        }
        store_flush_result_free(res);
        cr_assert_null(next_notification(l, 200));
        /* Bad channels. */
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, NULL, 0, 0, "", NULL), -EINVAL);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, NULL, 0, 0,
                                 "a123456789b123456789c123456789d123456789e123456789f123456789g123", NULL), -EINVAL);
        PQfinish(l);
        store_free(s);
        free(ci);
}

/* PostgreSQL fails the COMMIT with 54000 "too many notifications in the NOTIFY queue" when
 * its queue (8 GB in 15, not configurable) is full. Filling it takes too long for a test:
 * a deferred trigger raises the same error at COMMIT instead. */
Test(integration, full_notify_queue_is_enobufs) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        StoreFlushResult *res = (StoreFlushResult *) 0x1;
        Fragment f = frag("c", "t", AT(10, 0), AT(10, 0), 1);

        cr_assert_eq(pg_exec(ci,
                "CREATE FUNCTION public.queue_full() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN RAISE EXCEPTION 'too many notifications in the NOTIFY queue'"
                " USING ERRCODE = 'program_limit_exceeded'; END $$;"
                "CREATE CONSTRAINT TRIGGER queue_full AFTER INSERT OR UPDATE ON outage.checkpoints"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.queue_full()"), 0);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "i", 1, 1, "ch", &res), -ENOBUFS, "%s", store_error(s));
        cr_assert_eq(res, (StoreFlushResult *) 0x1, "untouched on failure");
        cr_assert(strstr(store_error(s), "NOTIFY queue"), "%s", store_error(s));
        cr_assert(store_connected(s));
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.stored_events"), 0);
        /* The same failure without notifications is an ordinary refusal. */
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "i", 1, 1, NULL, NULL), -EIO);
        /* Nor is a flush that notified nothing (a plain extension) told to drop its channel. */
        cr_assert_eq(pg_exec(ci, "DROP TRIGGER queue_full ON outage.checkpoints"), 0);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "i", 1, 1, "ch", NULL), 0, "%s", store_error(s));
        cr_assert_eq(pg_exec(ci,
                "CREATE CONSTRAINT TRIGGER queue_full AFTER INSERT OR UPDATE ON outage.checkpoints"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.queue_full()"), 0);
        f = frag("c", "t", AT(10, 0), AT(10, 5), 1);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "i", 2, 2, "ch", NULL), -EIO);
        store_free(s);
        free(ci);
}

/* ---- resolving a lost COMMIT ---- */

typedef struct Later {
        PGconn *conn;           /* COMMIT on it after delay_ms */
        int delay_ms;
} Later;

static void *commit_later(void *arg) {
        Later *l = arg;

        harness_sleep_ms(l->delay_ms);
        PQclear(PQexec(l->conn, "COMMIT"));
        return NULL;
}

static PGconn *holding_instance_lock(const char *ci, const char *more_sql) {
        PGconn *c = PQconnectdb(ci);
        char sql[512];
        PGresult *r;

        cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
        (void) snprintf(sql, sizeof(sql), "BEGIN; SELECT pg_advisory_xact_lock(1869968489, hashtext('inst')); %s",
                        more_sql);
        r = PQexec(c, sql);
        cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s", PQresultErrorMessage(r));
        PQclear(r);
        return c;
}

/* The backend of a flush whose connection was lost may still be committing: resolution
 * waits for it, where a plain read would see the old checkpoint and retry the flush. */
Test(integration, resolution_waits_for_the_old_transaction) {
        char *ci = fresh_db();
        Store *s = migrated(ci), *s2 = connect_ok(ci);
        Fragment f = frag("c", "t", AT(10, 0), AT(10, 0), 1);
        uint64_t seq = 0, id = 0;
        Later l;
        pthread_t th;
        usec_t t0, took;

        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "inst", 1, 11, NULL, NULL), 0, "%s", store_error(s));
        l.conn = holding_instance_lock(ci, "UPDATE outage.checkpoints SET seq = 2, flush_id = 22 WHERE instance = 'inst'");
        l.delay_ms = 1000;
        cr_assert_eq(store_get_checkpoint(s2, "inst", &seq, &id), 0, "%s", store_error(s2));
        cr_assert_eq(id, 11, "without the lock, the old checkpoint");
        cr_assert_eq(pthread_create(&th, NULL, commit_later, &l), 0);
        t0 = wall_now();
        cr_assert_eq(store_resolve_checkpoint(s2, "inst", &seq, &id), 0, "%s", store_error(s2));
        took = wall_now() - t0;
        pthread_join(th, NULL);
        cr_assert_geq(took, 800 * USEC_PER_MSEC, "returned after %lld us", (long long) took);
        cr_assert_eq(seq, 2);
        cr_assert_eq(id, 22);
        /* Another instance's lock is another lock. */
        cr_assert_eq(store_resolve_checkpoint(s2, "other", &seq, &id), 0, "%s", store_error(s2));
        cr_assert_eq(seq, 0);
        PQfinish(l.conn);
        store_free(s);
        store_free(s2);
        free(ci);
}

typedef struct Flushing {
        Store *s;
        int r;
} Flushing;

static void *flush_slow(void *arg) {
        Flushing *fl = arg;
        Fragment f = frag("c", "t", AT(11, 0), AT(11, 0), 1);

        fl->r = store_flush(fl->s, &f, 1, NULL, 0, "inst", 5, 55, NULL, NULL);
        return NULL;
}

/* store_flush holds the instance lock from its start to its end. */
Test(integration, flush_holds_the_instance_lock) {
        char *ci = fresh_db();
        Store *s = migrated(ci), *s2 = connect_ok(ci);
        Flushing fl = { .s = s };
        uint64_t seq = 0, id = 0;
        pthread_t th;
        PGconn *holder;

        cr_assert_eq(pg_exec(ci,
                "CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;"
                "CREATE TRIGGER slow BEFORE INSERT OR UPDATE ON outage.checkpoints"
                " FOR EACH ROW EXECUTE FUNCTION public.slow()"), 0);
        cr_assert_eq(pthread_create(&th, NULL, flush_slow, &fl), 0);
        /* Wait until the flush holds the lock (class 1869968489, hashtext of the instance). */
        for (int i = 0;; i++) {
                cr_assert_lt(i, 200, "the flush never took the instance lock");
                if (query_long(ci, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                               " AND classid = 1869968489 AND objid = hashtext('inst')::oid AND objsubid = 2") == 1)
                        break;
                harness_sleep_ms(10);
        }
        cr_assert_eq(store_resolve_checkpoint(s2, "inst", &seq, &id), 0, "%s", store_error(s2));
        pthread_join(th, NULL);
        cr_assert_eq(fl.r, 0, "%s", store_error(s));
        cr_assert_eq(seq, 5);
        cr_assert_eq(id, 55);
        /* And a flush waits for a transaction holding it. */
        cr_assert_eq(pg_exec(ci, "DROP TRIGGER slow ON outage.checkpoints"), 0);
        holder = holding_instance_lock(ci, "SELECT 1");
        {
                Later l = { .conn = holder, .delay_ms = 1000 };
                Fragment f = frag("c", "t", AT(12, 0), AT(12, 0), 1);
                usec_t t0 = wall_now();

                cr_assert_eq(pthread_create(&th, NULL, commit_later, &l), 0);
                cr_assert_eq(store_flush(s2, &f, 1, NULL, 0, "inst", 6, 66, NULL, NULL), 0, "%s", store_error(s2));
                cr_assert_geq(wall_now() - t0, 800 * USEC_PER_MSEC);
                pthread_join(th, NULL);
        }
        PQfinish(holder);
        store_free(s);
        store_free(s2);
        free(ci);
}

Test(integration, resolution_gives_up_after_a_while, .timeout = 60) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        PGconn *holder = holding_instance_lock(ci, "SELECT 1");
        uint64_t seq = 7, id = 7;

        cr_assert_eq(store_resolve_checkpoint(s, "inst", &seq, &id), -EAGAIN, "%s", store_error(s));
        cr_assert_eq(seq, 7, "untouched on failure");
        cr_assert(store_connected(s));
        PQfinish(holder);
        cr_assert_eq(store_resolve_checkpoint(s, "inst", &seq, &id), 0, "%s", store_error(s));
        cr_assert_eq(seq, 0);
        store_free(s);
        free(ci);
}

Test(integration, connection_loss_is_reported) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        Fragment f = frag("c", "t", AT(10, 0), AT(10, 0), 1);

        flush_ok(s, &f, 1);
        cr_assert_eq(pg_exec(ci, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                 " WHERE datname = current_database() AND pid <> pg_backend_pid()"), 0);
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "i", 1, 0, NULL, NULL), -ECONNRESET);
        cr_assert_not(store_connected(s));
        cr_assert_eq(store_flush(s, &f, 1, NULL, 0, "i", 1, 0, NULL, NULL), -ECONNRESET);
        store_free(s);
        free(ci);
}

/* ---- retention ---- */

/* n closed events of key (ctrl, "t"), one an hour, the last ending days_ago days ago, and n
 * rejects received days_ago days ago. */
static void load_old(const char *ci, const char *ctrl, int n, int days_ago) {
        char sql[1024];

        (void) snprintf(sql, sizeof(sql),
                "INSERT INTO outage.controllers (name) VALUES ('%s') ON CONFLICT DO NOTHING;"
                "INSERT INTO outage.outage_types (name) VALUES ('t') ON CONFLICT DO NOTHING;"
                "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)"
                " SELECT c.id, t.id, x, x + interval '10 min', 2"
                " FROM outage.controllers c, outage.outage_types t,"
                "  generate_series(1, %d) i, LATERAL (SELECT now() - interval '%d days' - i * interval '1 hour') v(x)"
                " WHERE c.name = '%s' AND t.name = 't';"
                "INSERT INTO outage.stored_rejects (received_at, topic, controller_id, reason, payload)"
                " SELECT now() - interval '%d days', 'outages/%s', '%s', 'malformed_json', i::text"
                " FROM generate_series(1, %d) i",
                ctrl, n, days_ago, ctrl, days_ago, ctrl, ctrl, n);
        cr_assert_eq(pg_exec(ci, sql), 0);
}

Test(integration, prune_deletes_closed_events_and_old_rejects, .timeout = 120) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        const usec_t now = wall_now();
        uint64_t ne = 99, nr = 99;

        load_old(ci, "old", 25000, 100);
        load_old(ci, "mid", 3, 10);
        /* Open: within gap of now (the view says so), and one in the future. */
        flush1(s, frag("open", "t", now - 2 * USEC_PER_HOUR, now - 5 * USEC_PER_MINUTE, 12));
        flush1(s, frag("future", "t", now + USEC_PER_HOUR, now + USEC_PER_HOUR, 1));
        /* Closed a minute ago: end + gap < now. */
        flush1(s, frag("closed", "t", now - GAP - 2 * USEC_PER_MINUTE, now - GAP - USEC_PER_MINUTE, 1));
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.events WHERE status = 'open'"), 2);

        /* No bound: nothing. */
        cr_assert_eq(store_prune(s, 0, 0, &ne, &nr), 0, "%s", store_error(s));
        cr_assert_eq(ne, 0);
        cr_assert_eq(nr, 0);
        /* Events that ended more than 30 days ago, in three batches; rejects untouched. */
        cr_assert_eq(store_prune(s, now - 30 * USEC_PER_DAY, 0, &ne, &nr), 0, "%s", store_error(s));
        cr_assert_eq(ne, 25000);
        cr_assert_eq(nr, 0);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.events WHERE controller_id = 'old'"), 0);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.events"), 6);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects"), 25003);
        /* Rejects older than 30 days. */
        cr_assert_eq(store_prune(s, 0, now - 30 * USEC_PER_DAY, &ne, &nr), 0, "%s", store_error(s));
        cr_assert_eq(ne, 0);
        cr_assert_eq(nr, 25000);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects WHERE controller_id = 'mid'"), 3);
        /* A bound in the future deletes every closed event, never an open one. */
        cr_assert_eq(store_prune(s, now + USEC_PER_DAY, now + USEC_PER_DAY, &ne, &nr), 0, "%s", store_error(s));
        cr_assert_eq(ne, 4);
        cr_assert_eq(nr, 3);
        {
                char *v = pg_query_value(ci, "SELECT string_agg(controller_id || ' ' || report_count || ' ' || status, ', '"
                                         " ORDER BY controller_id) FROM outage.events");

                cr_assert_str_eq(v, "future 1 open, open 12 open");
                free(v);
        }
        store_free(s);
        free(ci);
}
Test(integration, open_events_are_the_open_ones) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        const usec_t now = wall_now();
        char *v;

        flush1(s, frag("a", "t", now - USEC_PER_HOUR, now - GAP + USEC_PER_MINUTE, 3));       /* open */
        flush1(s, frag("b", "t", now - USEC_PER_HOUR, now - GAP - USEC_PER_MINUTE, 3));       /* closed */
        flush1(s, frag("c", "t", now + USEC_PER_MINUTE, now + USEC_PER_MINUTE, 1));           /* open */
        flush1(s, frag("d", "t", AT(10, 0), AT(10, 0), 1));                                   /* closed */
        v = pg_query_value(ci, "SELECT string_agg(controller_id || ' ' || status, ', ' ORDER BY controller_id)"
                           " FROM outage.open_events");
        cr_assert_str_eq(v, "a open, c open");
        free(v);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM ((TABLE outage.open_events) EXCEPT ALL"
                                " (SELECT * FROM outage.events WHERE status = 'open')) x"), 0);
        store_free(s);
        free(ci);
}

typedef struct Pruner {
        const char *ci;
        usec_t before;
        uint64_t events, rejects;
        int r;
        char error[512];
} Pruner;

static void *pruner_run(void *arg) {
        Pruner *p = arg;
        Store *s = NULL;
        char err[256];

        p->r = store_connect(p->ci, NULL, &s, err, sizeof(err));
        if (p->r == 0)
                p->r = store_prune(s, p->before, p->before, &p->events, &p->rejects);
        snprintf(p->error, sizeof(p->error), "%s", p->r == 0 ? "" : s ? store_error(s) : err);
        store_free(s);
        return NULL;
}

Test(integration, prune_twice_at_once_is_harmless, .timeout = 120) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        const usec_t now = wall_now();
        Pruner p[2];
        pthread_t th[2];

        for (int i = 0; i < 4; i++) {
                char name[16];

                snprintf(name, sizeof(name), "c%d", i);
                load_old(ci, name, 10000, 40);
        }
        flush1(s, frag("open", "t", now - 5 * USEC_PER_MINUTE, now - 5 * USEC_PER_MINUTE, 1));
        for (int i = 0; i < 2; i++) {
                p[i] = (Pruner) { .ci = ci, .before = now + USEC_PER_DAY };
                cr_assert_eq(pthread_create(&th[i], NULL, pruner_run, &p[i]), 0);
        }
        for (int i = 0; i < 2; i++) {
                pthread_join(th[i], NULL);
                cr_assert_eq(p[i].r, 0, "pruner %d: %s", i, p[i].error);
        }
        cr_assert_eq(p[0].events + p[1].events, 40000, "%" PRIu64 " + %" PRIu64, p[0].events, p[1].events);
        cr_assert_eq(p[0].rejects + p[1].rejects, 40000, "%" PRIu64 " + %" PRIu64, p[0].rejects, p[1].rejects);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.rejects"), 0);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.events WHERE controller_id = 'open' AND status = 'open'"), 1);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.events"), 1);
        store_free(s);
        free(ci);
}

/* An event the plan keeps, deleted by another transaction before the update (outage.prune
 * or an operator), must not take the flush's data with it: the flush runs again. Here a
 * trigger deletes it, on the first attempt only, between the plan and the update. */
Test(integration, kept_event_deleted_under_the_flush) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        Fragment f[] = {
                frag("c", "t", AT(10, 5), AT(10, 10), 2),      /* extends the 10:00 event */
                frag("c", "t", AT(12, 0), AT(12, 0), 1),       /* a new event: the insert fires the trigger */
        };

        flush1(s, frag("c", "t", AT(10, 0), AT(10, 0), 1));
        cr_assert_eq(pg_exec(ci,
                "CREATE SEQUENCE public.once;"
                "CREATE FUNCTION public.delete_first() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF nextval('public.once') = 1 THEN"
                "  DELETE FROM outage.stored_events WHERE start_time = '2026-11-27 10:00Z'; END IF;"
                " RETURN NEW; END $$;"
                "CREATE TRIGGER delete_first BEFORE INSERT ON outage.stored_events"
                " FOR EACH ROW EXECUTE FUNCTION public.delete_first()"), 0);
        flush_ok(s, f, 2);
        expect_events(ci, "c/t 10:00-10:10 3; c/t 12:00-12:00 1");
        cr_assert_eq(query_long(ci, "SELECT last_value FROM public.once"), 2, "the flush ran once more");
        store_free(s);
        free(ci);
}

/* ---- concurrency ---- */

#define CC_CTRL 8
#define CC_TYPES 2
#define CC_N 60
#define CC_KEYS (CC_CTRL * CC_TYPES)

typedef struct Item {
        int key;
        usec_t ts;
} Item;

typedef struct Worker {
        const char *ci;
        unsigned seed;
        Item *items;
        size_t n;
        int failures;
        char error[512];
} Worker;

static const char *const cc_types[CC_TYPES] = { "lamp_outage", "panel_outage" };
static char cc_names[CC_CTRL][16];

static usec_t cc_ts(int key, int i) {
        /* Every 10 min, with a 20 min hole wherever (i + key) % 7 == 3; a few at the exact gap. */
        usec_t t = AT(6, 0) + (usec_t) i * 10 * USEC_PER_MINUTE;
        int holes = 0;

        for (int j = 0; j <= i; j++)
                if ((j + key) % 7 == 3)
                        holes++;
        t += (usec_t) holes * 10 * USEC_PER_MINUTE;
        if ((i + key) % 5 == 0)
                t += 2 * USEC_PER_MINUTE;      /* 12 min after its predecessor: still joins */
        return t;
}

static void *worker_run(void *arg) {
        Worker *w = arg;
        Store *s = NULL;
        char err[256];
        Fragment f[32];

        if (store_connect(w->ci, NULL, &s, err, sizeof(err)) < 0) {
                w->failures++;
                snprintf(w->error, sizeof(w->error), "%s", err);
                return NULL;
        }
        /* Shuffle, then flush in batches of 1..32 fragments of one or two reports. */
        for (size_t i = w->n - 1; i > 0; i--) {
                size_t j = (size_t) rand_r(&w->seed) % (i + 1);
                Item t = w->items[i];

                w->items[i] = w->items[j];
                w->items[j] = t;
        }
        for (size_t i = 0; i < w->n;) {
                size_t batch = 1 + (size_t) rand_r(&w->seed) % 32, k = 0;

                for (; k < batch && i < w->n; k++, i++) {
                        const Item *it = &w->items[i];

                        f[k] = frag(cc_names[it->key / CC_TYPES], cc_types[it->key % CC_TYPES], it->ts, it->ts, 1);
                }
                if (store_flush(s, f, k, NULL, 0, NULL, 0, 0, NULL, NULL) < 0) {
                        w->failures++;
                        snprintf(w->error, sizeof(w->error), "%s", store_error(s));
                }
        }
        store_free(s);
        return NULL;
}

Test(integration, concurrent_writers_exact_spans, .timeout = 120) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        Item all[CC_KEYS * CC_N];
        Worker w[3];
        pthread_t th[3];
        char *want, *got, *p;
        size_t n = 0, cap = 1 << 16;

        for (int c = 0; c < CC_CTRL; c++)
                snprintf(cc_names[c], sizeof(cc_names[c]), "cc_%d", c);
        for (int k = 0; k < CC_KEYS; k++)
                for (int i = 0; i < CC_N; i++)
                        all[n++] = (Item) { k, cc_ts(k, i) };
        for (int round = 0; round < 4; round++) {
                if (round > 0)
                        cr_assert_eq(pg_exec(ci, "DELETE FROM outage.stored_events"), 0);
                for (int t = 0; t < 3; t++) {
                        w[t] = (Worker) { .ci = ci, .seed = (unsigned) (round * 7 + t + 1), .n = n };
                        w[t].items = malloc(sizeof(all));
                        memcpy(w[t].items, all, sizeof(all));
                        cr_assert_eq(pthread_create(&th[t], NULL, worker_run, &w[t]), 0);
                }
                for (int t = 0; t < 3; t++) {
                        pthread_join(th[t], NULL);
                        cr_assert_eq(w[t].failures, 0, "worker %d: %s", t, w[t].error);
                        free(w[t].items);
                }
                /* Expected: per key, the timestamps split where consecutive ones are > gap apart. */
                want = p = malloc(cap);
                for (int c = 0; c < CC_CTRL; c++)
                        for (int ty = 0; ty < CC_TYPES; ty++) {
                                int k = c * CC_TYPES + ty;
                                usec_t start = cc_ts(k, 0), prev = start;

                                for (int i = 1; i <= CC_N; i++) {
                                        usec_t t = i < CC_N ? cc_ts(k, i) : INT64_MAX;

                                        if (i == CC_N || t - prev > GAP) {
                                                p += sprintf(p, "%s/%s %lld-%lld;", cc_names[c], cc_types[ty],
                                                             (long long) start, (long long) prev);
                                                start = t;
                                        }
                                        prev = t;
                                }
                        }
                got = pg_query_value(ci,
                        "SELECT string_agg(format('%s/%s %s-%s;', controller_id, outage_type,"
                        " (extract(epoch FROM start_time) * 1000000)::bigint,"
                        " (extract(epoch FROM end_time) * 1000000)::bigint), ''"
                        " ORDER BY controller_id, outage_type, start_time) FROM outage.events");
                cr_assert_str_eq(got, want, "round %d", round);
                free(got);
                free(want);
                /* Each writer counts a report at most once. */
                cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.events WHERE report_count < 1"
                                        " OR report_count > 3 * (1 + extract(epoch FROM duration) / 600)"), 0);
        }
        store_free(s);
        free(ci);
}

/* ---- schema guarantees ---- */

Test(integration, constraint_rejects_overlap_and_closeness) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        char st[6];

        flush1(s, frag("c", "t", AT(10, 0), AT(10, 20), 3));
#define INS(a, b) \
        "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)" \
        " SELECT controller, otype, '2026-11-27 " a "+00', '2026-11-27 " b "+00', 1 FROM outage.stored_events LIMIT 1"
        exec_state(ci, INS("10:10", "10:30"), st);
        cr_assert_str_eq(st, "23P01", "overlapping insert");
        exec_state(ci, INS("10:31", "10:40"), st);
        cr_assert_str_eq(st, "23P01", "closer than gap");
        exec_state(ci, INS("10:32", "10:40"), st);
        cr_assert_str_eq(st, "23P01", "exactly gap apart is one event");
        exec_state(ci, INS("10:32:00.000001", "10:40"), st);
        cr_assert_str_eq(st, "00000");
        exec_state(ci, INS("09:00", "09:47:59.999999"), st);
        cr_assert_str_eq(st, "00000");
        exec_state(ci, INS("09:50", "09:40"), st);
        cr_assert_str_eq(st, "23514", "start after end");
#undef INS
        /* Other keys at the same time do not conflict: the box's y is the key. */
        cr_assert_eq(pg_exec(ci, "INSERT INTO outage.controllers (name) VALUES ('d');"
                                 "INSERT INTO outage.outage_types (name) VALUES ('u');"
                                 "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)"
                                 " SELECT c.id, t.id, '2026-11-27 10:00+00', '2026-11-27 10:20+00', 1"
                                 " FROM outage.controllers c, outage.outage_types t WHERE (c.name, t.name) <> ('c', 't')"), 0);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.stored_events WHERE start_time = '2026-11-27 10:00+00'"), 4);
        /* Microseconds stay exact far ahead (the boxes are float8 microseconds). */
#define INS(a, b) \
        "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)" \
        " SELECT controller, otype, '2199-12-31 " a "+00', '2199-12-31 " b "+00', 1 FROM outage.stored_events LIMIT 1"
        exec_state(ci, INS("23:00:00.000007", "23:00:00.000007"), st);
        cr_assert_str_eq(st, "00000");
        exec_state(ci, INS("23:12:00.000007", "23:20"), st);
        cr_assert_str_eq(st, "23P01", "exactly gap apart, in 2199");
        exec_state(ci, INS("23:12:00.000008", "23:20"), st);
        cr_assert_str_eq(st, "00000", "gap + 1 us apart, in 2199");
#undef INS
        store_free(s);
        free(ci);
}

Test(integration, roles_reader_and_writer) {
        char *ci = fresh_db();
        Store *s = migrated(ci), *w = NULL;
        char sql[512], *rci = NULL, *wci = NULL, st[6], err[256];
        Fragment f = frag("c", "t", AT(10, 0), AT(10, 10), 2);
        RejectRow rj = { AT(10, 0), "outages/c", "c", "missing_field", "{}" };
        int pid = (int) getpid();

        flush1(s, f);
        (void) snprintf(sql, sizeof(sql),
                        "CREATE ROLE rdr_%d LOGIN IN ROLE outage_reader; CREATE ROLE wrt_%d LOGIN IN ROLE outage_writer",
                        pid, pid);
        cr_assert_eq(pg_exec(ci, sql), 0);
        cr_assert(asprintf(&rci, "%s user=rdr_%d", ci, pid) > 0);
        cr_assert(asprintf(&wci, "%s user=wrt_%d", ci, pid) > 0);

        exec_state(rci, "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)"
                   " VALUES (1, 1, now(), now(), 1)", st);
        cr_assert_str_eq(st, "42501");
        exec_state(rci, "INSERT INTO outage.rejects (received_at, topic, controller_id, reason, payload)"
                   " VALUES (now(), 'x', NULL, 'y', 'z')", st);
        cr_assert_str_eq(st, "42501");
        exec_state(rci, "INSERT INTO outage.stored_rejects (received_at, topic, controller_id, reason, payload)"
                   " VALUES (now(), 'x', NULL, 'y', 'z')", st);
        cr_assert_str_eq(st, "42501");
        exec_state(rci, "SELECT * FROM outage.stored_rejects", st);
        cr_assert_str_eq(st, "42501");
        exec_state(rci, "SELECT * FROM outage.stored_events", st);
        cr_assert_str_eq(st, "42501");
        exec_state(rci, "SELECT * FROM outage.checkpoints", st);
        cr_assert_str_eq(st, "42501");
        exec_state(rci, "SELECT outage.install_gap('1 min')", st);
        cr_assert_str_eq(st, "42501");
        exec_state(rci, "CALL outage.prune(now(), now())", st);
        cr_assert_str_eq(st, "42501");
        cr_assert_eq(query_long(rci, "SELECT count(*) FROM outage.events"), 1);
        cr_assert_eq(query_long(rci, "SELECT count(*) FROM outage.events_between('2026-11-27', '2026-11-28')"), 1);
        cr_assert_eq(query_long(rci, "SELECT events FROM outage.downtime('2026-11-27', '2026-11-28')"), 1);
        cr_assert_eq(query_long(rci, "SELECT count(*) FROM outage.rejects"), 0);
        cr_assert_eq(query_long(rci, "SELECT extract(epoch FROM gap) FROM outage.settings"), 720);

        /* The writer can do everything the daemon does, and nothing to the schema. */
        cr_assert_eq(store_connect(wci, NULL, &w, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(store_migrate(w, GAP), 0, "%s", store_error(w));
        f = frag("d", "t", AT(10, 0), AT(10, 0), 1);
        cr_assert_eq(store_flush(w, &f, 1, &rj, 1, "w", 7, 0, NULL, NULL), 0, "%s", store_error(w));
        f = frag("d", "t", AT(10, 5), AT(10, 12), 2);
        cr_assert_eq(store_flush(w, &f, 1, NULL, 0, "w", 8, 0, NULL, NULL), 0, "%s", store_error(w));
        expect_events(ci, "c/t 10:00-10:10 2; d/t 10:00-10:12 3");
        {
                uint64_t ne = 0, nr = 0;
                char id[37];

                cr_assert_eq(store_prune(w, AT(10, 11), AT(10, 1), &ne, &nr), 0, "%s", store_error(w));
                cr_assert_eq(ne, 1);
                cr_assert_eq(nr, 1);
                expect_events(ci, "d/t 10:00-10:12 3");
                cr_assert_eq(store_database_id(w, id), 0, "%s", store_error(w));
        }
        exec_state(wci, "DROP VIEW outage.rejects", st);
        cr_assert_str_eq(st, "42501");
        exec_state(wci, "DROP TABLE outage.stored_rejects", st);
        cr_assert_str_eq(st, "42501");
        exec_state(wci, "DELETE FROM outage.rejects", st);
        cr_assert_str_eq(st, "42501");
        exec_state(wci, "UPDATE outage.stored_rejects SET reason = 'x'", st);
        cr_assert_str_eq(st, "42501");
        store_free(w);
        free(rci);
        free(wci);
        store_free(s);
        free(ci);
}

Test(integration, analyst_objects_have_comments) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        char *missing;

        missing = pg_query_value(ci,
                "SELECT COALESCE(string_agg(what, ', '), 'none') FROM ("
                " SELECT 'schema' AS what WHERE obj_description('outage'::regnamespace, 'pg_namespace') IS NULL"
                " UNION ALL SELECT c.relname FROM pg_class c"
                "  WHERE c.oid IN ('outage.events'::regclass, 'outage.rejects'::regclass, 'outage.settings'::regclass,"
                "   'outage.open_events'::regclass)"
                "  AND obj_description(c.oid, 'pg_class') IS NULL"
                " UNION ALL SELECT c.relname || '.' || a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                "  WHERE c.oid IN ('outage.events'::regclass, 'outage.rejects'::regclass, 'outage.settings'::regclass,"
                "   'outage.open_events'::regclass)"
                "  AND a.attnum > 0 AND NOT a.attisdropped AND col_description(c.oid, a.attnum) IS NULL"
                " UNION ALL SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'outage'::regnamespace"
                "  AND obj_description(p.oid, 'pg_proc') IS NULL) m");
        cr_assert_str_eq(missing, "none");
        free(missing);
        store_free(s);
        free(ci);
}

Test(integration, analyst_functions) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        char *v;
        Fragment f[] = {
                frag("c1", "panel_outage", AT(10, 0), AT(10, 20), 3),
                frag("c1", "panel_outage", AT(11, 0), AT(11, 0), 1),
                frag("c2", "lamp_outage", AT(9, 0), AT(12, 0), 19),
                frag("c3", "lamp_outage", (usec_t) 253402300000 * USEC_PER_SEC, (usec_t) 253402300000 * USEC_PER_SEC, 1),
        };

        flush_ok(s, f, 4);
        /* [10:20, 11:00): the event ending at 10:20 overlaps, the one starting at 11:00 does not. */
        v = pg_query_value(ci, "SELECT string_agg(controller_id || ' ' || to_char(start_time AT TIME ZONE 'UTC', 'HH24:MI'), ',' ORDER BY controller_id)"
                           " FROM outage.events_between('2026-11-27 10:20+00', '2026-11-27 11:00+00')");
        cr_assert_str_eq(v, "c1 10:00,c2 09:00");
        free(v);
        v = pg_query_value(ci, "SELECT string_agg(controller_id, ',') FROM outage.events_between('2026-11-27 10:20+00', '2026-11-27 11:00+00')"
                           " WHERE outage_type = 'lamp_outage'");
        cr_assert_str_eq(v, "c2");
        free(v);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.events_between('2026-11-27 12:00+00', '2026-11-27 10:00+00')"), 0);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.events_between(NULL, NULL)"), 4);
        v = pg_query_value(ci, "SELECT string_agg(format('%s %s %s %s', controller_id, outage_type, events, downtime), ',' ORDER BY 1)"
                           " FROM outage.downtime('2026-11-27 10:10+00', '2026-11-27 11:30+00')");
        cr_assert_str_eq(v, "c1 panel_outage 2 00:10:00,c2 lamp_outage 1 01:20:00");
        free(v);
        v = pg_query_value(ci, "SELECT string_agg(status || ' ' || duration, ',' ORDER BY start_time) FROM outage.events");
        cr_assert_str_eq(v, "closed 03:00:00,closed 00:20:00,closed 00:00:00,open 00:00:00");
        free(v);
        store_free(s);
        free(ci);
}

/* The procedure of docs/OPERATIONS.md ("Changing the gap"), run as documented. */
Test(integration, changing_the_gap_as_documented) {
        char *ci = fresh_db(), path[4096], *doc, *start, *end;
        Store *s = migrated(ci);
        FILE *f;
        long len;

        (void) snprintf(path, sizeof(path), "%s/docs/OPERATIONS.md", harness_source_root());
        f = fopen(path, "re");
        if (!f)
                cr_skip_test("%s not found (set OUTAGED_SOURCE_ROOT)", path);
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        rewind(f);
        doc = calloc(1, (size_t) len + 1);
        cr_assert(doc && fread(doc, 1, (size_t) len, f) == (size_t) len);
        fclose(f);
        start = strstr(doc, "```sql\n");
        cr_assert(start, "no SQL block in %s", path);
        start += 7;
        end = strstr(start, "```");
        cr_assert(end);
        *end = '\0';

        report(s, "c", "t", AT(10, 0), false);
        report(s, "c", "t", AT(10, 13), false);         /* 13 min: joins with a 15 min gap */
        report(s, "c", "t", AT(10, 33), false);         /* 20 min: stays apart */
        report(s, "d", "t", AT(10, 0), false);
        expect_events(ci, "c/t 10:00-10:00 1; c/t 10:13-10:13 1; c/t 10:33-10:33 1; d/t 10:00-10:00 1");
        cr_assert_eq(pg_exec(ci, start), 0);
        expect_events(ci, "c/t 10:00-10:13 2; c/t 10:33-10:33 1; d/t 10:00-10:00 1");
        cr_assert_eq(store_migrate(s, GAP), -ESTALE);
        cr_assert_eq(store_migrate(s, 15 * USEC_PER_MINUTE), 0, "%s", store_error(s));
        report(s, "c", "t", AT(10, 48), false);         /* 15 min after 10:33: joins */
        expect_events(ci, "c/t 10:00-10:13 2; c/t 10:33-10:48 2; d/t 10:00-10:00 1");
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM pg_constraint WHERE conname = 'stored_events_no_overlap'"), 1);
        free(doc);
        store_free(s);
        free(ci);
}

/* ---- index use on a million events ---- */

static void expect_index_plan(const char *ci, const char *query) {
        char *sql = NULL, *plan;

        cr_assert(asprintf(&sql,
                "SELECT string_agg(line, E'\\n') FROM public.explain_text($q$%s$q$) line", query) > 0);
        plan = pg_query_value(ci, sql);
        cr_assert(plan, "EXPLAIN failed: %s", query);
        cr_assert_null(strstr(plan, "Seq Scan on stored_events"), "%s\n%s", query, plan);
        cr_assert(strstr(plan, "Index") && strstr(plan, "stored_events"), "%s\n%s", query, plan);
        free(plan);
        free(sql);
}

Test(integration, explain_uses_indexes_on_a_million_events, .timeout = 240) {
        char *ci = fresh_db();
        Store *s = migrated(ci);
        const char *rows = getenv("OUTAGED_TEST_EXPLAIN_ROWS");
        long n = rows ? atol(rows) : 1000000, ctrls = n / 200;
        char sql[2048];

        if (ctrls < 1)
                ctrls = 1;
        /* ctrls controllers x 2 types x 100 events of 30 min, every ~1.8 days over 6 months.
         * Bulk load: indexes and the constraint (whose index answers the overlap queries) built
         * after the data. */
        (void) snprintf(sql, sizeof(sql),
                "INSERT INTO outage.controllers (name) SELECT 'c' || i FROM generate_series(1, %ld) i;"
                "INSERT INTO outage.outage_types (name) VALUES ('lamp_outage'), ('panel_outage');"
                "ALTER TABLE outage.stored_events DROP CONSTRAINT stored_events_no_overlap;"
                "DROP INDEX outage.stored_events_key_end;"
                "ALTER TABLE outage.stored_events DROP CONSTRAINT stored_events_pkey;"
                "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)"
                " SELECT c, t, s, s + interval '30 min', 4 FROM ("
                "  SELECT c, t, timestamptz '2026-05-01 00:00+00' + k * interval '43 hours' + ((c * 7 + t) %% 600) * interval '1 min' AS s"
                "  FROM generate_series(1, %ld) c, generate_series(1, 2) t, generate_series(0, 99) k) x;"
                "ALTER TABLE outage.stored_events ADD PRIMARY KEY (event_id);"
                "CREATE INDEX stored_events_key_end ON outage.stored_events (controller, otype, end_time) INCLUDE (start_time);"
                "ALTER TABLE outage.stored_events ADD CONSTRAINT stored_events_no_overlap EXCLUDE USING gist"
                " (outage.event_box(controller, otype, start_time, end_time) WITH &&);"
                "ANALYZE outage.stored_events; ANALYZE outage.controllers; ANALYZE outage.outage_types;"
                "CREATE FUNCTION public.explain_text(q text) RETURNS SETOF text LANGUAGE plpgsql AS"
                " $f$ BEGIN RETURN QUERY EXECUTE 'EXPLAIN ' || q; END $f$;",
                ctrls, ctrls);
        cr_assert_eq(pg_exec(ci, sql), 0);
        cr_assert_eq(query_long(ci, "SELECT count(*) FROM outage.stored_events"), ctrls * 200);

        expect_index_plan(ci, "SELECT * FROM outage.events WHERE controller_id = 'c42'"
                          " AND end_time >= '2026-07-01' AND start_time < '2026-07-08'");
        expect_index_plan(ci, "SELECT * FROM outage.events WHERE controller_id = 'c42'"
                          " AND end_time >= '2026-07-01' AND start_time < '2026-07-08' AND outage_type = 'lamp_outage'");
        expect_index_plan(ci, "SELECT * FROM outage.events_between('2026-07-01 10:00+00', '2026-07-01 11:00+00')");
        expect_index_plan(ci, "SELECT * FROM outage.events_between('2026-07-01 10:00+00', '2026-07-01 11:00+00')"
                          " WHERE outage_type = 'lamp_outage'");
        expect_index_plan(ci, "SELECT * FROM outage.downtime('2026-07-01 10:00+00', '2026-07-01 11:00+00')");
        /* The outages open now (none in this data). */
        expect_index_plan(ci, "SELECT * FROM outage.open_events");
        expect_index_plan(ci, "SELECT * FROM outage.open_events WHERE outage_type = 'lamp_outage'");
        store_free(s);
        free(ci);
}
