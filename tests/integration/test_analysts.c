/* test_analysts.c — the analysts' documents against a real PostgreSQL started by this
 * binary: every SQL block of docs/ANALYSTS.md runs on a known data set (recipes as
 * outage_reader, with their parameters bound) and must print the output the guide shows;
 * every query of docs/grafana-dashboard.json is a recipe of the guide and runs with Grafana's
 * macros replaced; the open-now recipe uses an index on 200k events; and
 * sql/examples/partition_by_controller.sql keeps the events, the analyst objects and the
 * exclusion constraint, with the gap-change procedure of docs/partitioning.md after it. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "store.h"

#define GAP (12 * USEC_PER_MINUTE)
#define ENV_CONNINFO "OUTAGED_TEST_PG_CONNINFO"     /* shared_pg.c */
#define MAX_BLOCKS 64
#define MAX_PARAMS 4

/* ---- the example data set of the guide ---- */

/* Committed once per database: four controllers, March 2026 (events crossing midnight and
 * both ends of the month, two with missed reports, one outside the month), rejects. */
static const char FIXTURE[] =
        "INSERT INTO outage.controllers (name) VALUES ('ctrl_1'), ('ctrl_2'), ('ctrl_3'), ('ctrl_4');"
        "INSERT INTO outage.outage_types (name) VALUES ('lamp_outage'), ('panel_outage');"
        "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count, updated_at)"
        " SELECT c.id, t.id, v.s::timestamptz, v.e::timestamptz, v.n, v.e::timestamptz FROM (VALUES"
        "  ('ctrl_3', 'lamp_outage',  '2026-02-28 23:00+00', '2026-03-01 01:00+00', 13),"
        "  ('ctrl_1', 'panel_outage', '2026-03-02 10:00+00', '2026-03-02 14:20+00', 27),"
        "  ('ctrl_2', 'lamp_outage',  '2026-03-02 18:00+00', '2026-03-03 06:00+00', 73),"
        "  ('ctrl_1', 'panel_outage', '2026-03-09 22:00+00', '2026-03-10 02:00+00', 25),"
        "  ('ctrl_1', 'lamp_outage',  '2026-03-15 08:00+00', '2026-03-15 09:00+00', 4),"
        "  ('ctrl_2', 'panel_outage', '2026-03-20 12:00+00', '2026-03-20 12:00+00', 1),"
        "  ('ctrl_2', 'lamp_outage',  '2026-03-21 06:00+00', '2026-03-21 07:30+00', 10),"
        "  ('ctrl_3', 'panel_outage', '2026-03-31 20:00+00', '2026-04-01 04:00+00', 40),"
        "  ('ctrl_1', 'panel_outage', '2026-04-03 09:00+00', '2026-04-03 09:40+00', 5)"
        " ) AS v(c, t, s, e, n)"
        " JOIN outage.controllers c ON c.name = v.c JOIN outage.outage_types t ON t.name = v.t"
        " ORDER BY v.s;"
        /* outage.rejects is a table in 001 and a simple (insertable) view from 002 on */
        "INSERT INTO outage.rejects (received_at, topic, controller_id, reason, payload) VALUES"
        " ('2026-03-02 10:05+00', 'outages/ctrl_2', 'ctrl_2', 'bad_timestamp', '{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-03-02 25:00:00\"}'),"
        " ('2026-03-02 10:15+00', 'outages/ctrl_2', 'ctrl_2', 'bad_timestamp', '{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-03-02 25:10:00\"}'),"
        " ('2026-03-05 08:00+00', 'outages/ctrl_2', 'ctrl_2', 'malformed_json', '{\"outage_type\":'),"
        " ('2026-03-07 12:00+00', 'outages/ctrl_3', 'ctrl_3', 'unknown_outage_type', '{\"outage_type\":\"door_open\",\"timestamp\":\"2026-03-07T12:00:00Z\"}'),"
        " ('2026-03-07 12:10+00', 'outages/ctrl_3', 'ctrl_3', 'unknown_outage_type', '{\"outage_type\":\"door_open\",\"timestamp\":\"2026-03-07T12:10:00Z\"}'),"
        " ('2026-03-07 12:20+00', 'outages/ctrl_3', 'ctrl_3', 'unknown_outage_type', '{\"outage_type\":\"door_open\",\"timestamp\":\"2026-03-07T12:20:00Z\"}'),"
        " ('2026-03-12 00:00+00', 'outages/bad id!', NULL, 'bad_controller_id', '{\"outage_type\":\"lamp_outage\",\"timestamp\":\"2026-03-12T00:00:00Z\"}'),"
        " ('2026-04-02 09:00+00', 'outages/ctrl_1', 'ctrl_1', 'bad_timestamp', '{\"outage_type\":\"lamp_outage\",\"timestamp\":\"yesterday\"}');";

/* Inserted in the transaction of each query, relative to its now(): three events open (one
 * exactly gap old, the boundary) and one closed a minute ago. */
static const char NOW_EVENTS[] =
        "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)"
        " SELECT c.id, t.id, now() - v.s::interval, now() - v.e::interval, v.n FROM (VALUES"
        "  ('ctrl_4', 'panel_outage', '2 h 30 min', '5 min', 16),"
        "  ('ctrl_1', 'lamp_outage',  '40 min', '10 min', 4),"
        "  ('ctrl_3', 'lamp_outage',  '12 min', '12 min', 1),"
        "  ('ctrl_2', 'lamp_outage',  '1 h', '13 min', 5)"
        " ) AS v(c, t, s, e, n)"
        " JOIN outage.controllers c ON c.name = v.c JOIN outage.outage_types t ON t.name = v.t";

/* ---- databases ---- */

/* A conninfo for a new empty database, its sessions in UTC (later keywords win in a
 * conninfo string, so a user= can be appended). */
static char *fresh_db(void) {
        static int counter;
        const char *base = getenv(ENV_CONNINFO);
        char sql[128], *admin = NULL, *ci = NULL;

        cr_assert(base, "no server");
        (void) snprintf(sql, sizeof(sql), "CREATE DATABASE a_%d_%d", (int) getpid(), ++counter);
        cr_assert(asprintf(&admin, "%s dbname=postgres", base) > 0);
        cr_assert_eq(pg_exec(admin, sql), 0);
        cr_assert(asprintf(&ci, "%s dbname=a_%d_%d options='-c TimeZone=UTC'", base, (int) getpid(), counter) > 0);
        free(admin);
        return ci;
}

static Store *migrated_with(const char *ci, usec_t gap) {
        char err[512];
        Store *s = NULL;
        int r = store_connect(ci, NULL, &s, err, sizeof(err));

        cr_assert_eq(r, 0, "store_connect: %d %s", r, err);
        r = store_migrate(s, gap);
        cr_assert_eq(r, 0, "store_migrate: %d %s", r, store_error(s));
        return s;
}

/* A migrated database holding the example data set. */
static char *example_db(void) {
        char *ci = fresh_db();

        store_free(migrated_with(ci, GAP));
        cr_assert_eq(pg_exec(ci, FIXTURE), 0);
        return ci;
}

static PGconn *connect_as(const char *ci, const char *user) {
        char *full = NULL;
        PGconn *c;

        cr_assert(asprintf(&full, "%s%s%s", ci, user ? " user=" : "", user ? user : "") > 0);
        c = PQconnectdb(full);
        cr_assert_eq(PQstatus(c), CONNECTION_OK, "connect %s: %s", full, PQerrorMessage(c));
        free(full);
        return c;
}

static void exec_ok(PGconn *c, const char *sql) {
        PGresult *r = PQexec(c, sql);
        ExecStatusType st = PQresultStatus(r);

        cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%.300s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
}

/* The first value of sql's first row (caller frees); fails the test on error or no row. */
static char *value(const char *ci, const char *sql) {
        char *v = pg_query_value(ci, sql);

        cr_assert(v, "no value: %.300s", sql);
        return v;
}

static void expect_value(const char *ci, const char *sql, const char *want) {
        char *v = value(ci, sql);

        cr_assert_str_eq(v, want, "%.300s\ngot:  %s\nwant: %s", sql, v, want);
        free(v);
}

/* Runs sql on its own connection; returns its SQLSTATE ("00000" on success) in state. */
static void exec_state(const char *ci, const char *sql, char state[6]) {
        PGconn *c = connect_as(ci, NULL);
        PGresult *r = PQexec(c, sql);
        const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);

        (void) snprintf(state, 6, "%s", s ? s : "00000");
        PQclear(r);
        PQfinish(c);
}

/* ---- files of the source tree ---- */

static char *slurp(const char *relpath) {
        char *path = NULL, *buf;
        FILE *f;
        long n;

        cr_assert(asprintf(&path, "%s/%s", harness_source_root(), relpath) > 0);
        f = fopen(path, "rb");
        cr_assert(f, "cannot open %s", path);
        cr_assert_eq(fseek(f, 0, SEEK_END), 0);
        n = ftell(f);
        cr_assert(n >= 0);
        rewind(f);
        buf = malloc((size_t) n + 1);
        cr_assert(buf);
        cr_assert_eq(fread(buf, 1, (size_t) n, f), (size_t) n);
        buf[n] = '\0';
        fclose(f);
        free(path);
        return buf;
}

/* psql: from pg_config --bindir, else the one on the usual path. */
static const char *psql_path(void) {
        static char path[1100];
        char dir[1024] = "";
        FILE *f = popen("pg_config --bindir 2>/dev/null", "r");

        if (f) {
                if (fgets(dir, sizeof(dir), f))
                        dir[strcspn(dir, "\n")] = '\0';
                (void) pclose(f);
        }
        (void) snprintf(path, sizeof(path), "%s/psql", dir);
        if (!dir[0] || access(path, X_OK) != 0)
                (void) snprintf(path, sizeof(path), "/usr/bin/psql");
        return path;
}

/* ---- the SQL blocks of a guide ----
 *
 * Every ```sql block is preceded by a marker on the line before it:
 *   <!-- sql recipe ID [$1='...' $2='...'] -->  run as outage_reader with the parameters bound
 *   <!-- sql alice ID -->                        run logged in as alice (created by an owner block)
 *   <!-- sql owner ID -->                        run as the database owner, must succeed
 * Recipes and alice blocks are followed (after any prose) by a ```text block: psql's aligned
 * output, or the first line of the error. */

typedef struct Block {
        char kind[16];
        char id[64];
        char *params[MAX_PARAMS];
        int n_params;
        char *sql;
        char *expected;
} Block;

typedef struct Guide {
        Block b[MAX_BLOCKS];
        size_t n;
        char *text;
} Guide;

/* The next line of *p (NUL-terminated in place), or NULL at the end. */
static char *next_line(char **p) {
        char *l = *p, *e;

        if (!l || !*l)
                return NULL;
        e = strchr(l, '\n');
        if (e) {
                *e = '\0';
                *p = e + 1;
        } else
                *p = l + strlen(l);
        return l;
}

/* The lines up to the closing ``` joined with '\n' (caller frees); fails at the end. */
static char *fence_body(char **p, const char *path, int *lineno) {
        size_t cap = 4096, len = 0;
        char *out = malloc(cap), *l;

        cr_assert(out);
        out[0] = '\0';
        while ((l = next_line(p))) {
                ++*lineno;
                if (strcmp(l, "```") == 0)
                        return out;
                while (len + strlen(l) + 2 > cap) {
                        char *bigger = realloc(out, cap *= 2);

                        cr_assert(bigger);
                        out = bigger;
                }
                len += (size_t) sprintf(out + len, "%s%s", len ? "\n" : "", l);
        }
        cr_assert_fail("%s: unterminated code block", path);
        return NULL;
}

static void parse_marker(Block *b, const char *m, const char *path, int lineno) {
        const char *p;

        cr_assert_eq(sscanf(m, "<!-- sql %15s %63s", b->kind, b->id), 2,
                     "%s:%d: a marker is <!-- sql KIND ID ... -->", path, lineno);
        cr_assert(strcmp(b->kind, "recipe") == 0 || strcmp(b->kind, "alice") == 0 ||
                  strcmp(b->kind, "owner") == 0, "%s:%d: unknown kind %s", path, lineno, b->kind);
        for (p = strchr(m, '$'); p; p = strchr(p + 1, '$')) {
                const char *v, *e;
                int k = p[1] - '0';

                if (p[2] != '=' || p[3] != '\'')
                        continue;
                v = p + 4;
                e = strchr(v, '\'');
                cr_assert(e && k == b->n_params + 1 && k <= MAX_PARAMS, "%s:%d: bad parameters", path, lineno);
                b->params[b->n_params++] = strndup(v, (size_t) (e - v));
        }
}

/* The expected ```text block after a recipe or alice block (prose may come between). */
static char *expected_block(char **p, const char *path, int *lineno) {
        char *l;

        while ((l = next_line(p))) {
                ++*lineno;
                if (strncmp(l, "```", 3) == 0) {
                        cr_assert_str_eq(l, "```text", "%s:%d: the block after a checked sql block must be ```text",
                                         path, *lineno);
                        return fence_body(p, path, lineno);
                }
        }
        cr_assert_fail("%s: no ```text block after the last sql block", path);
        return NULL;
}

static void guide_load(Guide *g, const char *path) {
        char *p, *l, *prev = NULL;
        int lineno = 0;

        memset(g, 0, sizeof(*g));
        g->text = slurp(path);
        p = g->text;
        while ((l = next_line(&p))) {
                ++lineno;
                if (strncmp(l, "```sql", 6) == 0) {
                        Block *b = &g->b[g->n];

                        cr_assert(g->n < MAX_BLOCKS);
                        cr_assert(prev && strncmp(prev, "<!-- sql ", 9) == 0,
                                  "%s:%d: a sql block without a <!-- sql ... --> marker", path, lineno);
                        parse_marker(b, prev, path, lineno - 1);
                        b->sql = fence_body(&p, path, &lineno);
                        if (strcmp(b->kind, "owner") != 0)
                                b->expected = expected_block(&p, path, &lineno);
                        g->n++;
                }
                if (*l)
                        prev = l;
        }
}

static void guide_free(Guide *g) {
        for (size_t i = 0; i < g->n; i++) {
                for (int k = 0; k < g->b[i].n_params; k++)
                        free(g->b[i].params[k]);
                free(g->b[i].sql);
                free(g->b[i].expected);
        }
        free(g->text);
}

static const Block *guide_find(const Guide *g, const char *id) {
        for (size_t i = 0; i < g->n; i++)
                if (strcmp(g->b[i].id, id) == 0)
                        return &g->b[i];
        cr_assert_fail("no block %s in the guide", id);
        return NULL;
}

/* ---- comparing a result with psql's output ---- */

/* s trimmed of spaces at both ends, in place. */
static char *trim(char *s) {
        char *e = s + strlen(s);

        while (*s == ' ')
                s++;
        while (e > s && e[-1] == ' ')
                *--e = '\0';
        return s;
}

/* Splits a psql row on '|' into at most max trimmed cells (in place); returns the count. */
static int split_cells(char *line, char **cells, int max) {
        int n = 0;
        char *p = line, *bar;

        for (;;) {
                bar = strchr(p, '|');
                if (bar)
                        *bar = '\0';
                cr_assert(n < max, "too many cells");
                cells[n++] = trim(p);
                if (!bar)
                        return n;
                p = bar + 1;
        }
}

/* The result as psql-like text, for failure messages (caller frees). */
static char *result_text(const PGresult *r) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        for (int j = 0; j < PQnfields(r); j++)
                fprintf(f, "%s%s", j ? " | " : " ", PQfname(r, j));
        for (int i = 0; i < PQntuples(r); i++) {
                fputc('\n', f);
                for (int j = 0; j < PQnfields(r); j++)
                        fprintf(f, "%s%s", j ? " | " : " ", PQgetvalue(r, i, j));
        }
        fprintf(f, "\n(%d rows)", PQntuples(r));
        fclose(f);
        return buf;
}

/* Whether the cells of line (header or row) equal row i of r, or its column names (i < 0). */
static bool line_matches(const PGresult *r, int i, char *line) {
        char *cells[64];
        int n = split_cells(line, cells, 64);

        if (n != PQnfields(r))
                return false;
        for (int j = 0; j < n; j++) {
                const char *got = i < 0 ? PQfname(r, j) : PQgetvalue(r, i, j);

                if (strcmp(cells[j], got) != 0)
                        return false;
        }
        return true;
}

/* Asserts that r is what psql printed in expected: the same columns, rows and row count,
 * or, for an expected "ERROR:  ...", that the statement failed with that message. */
static void expect_result(const PGresult *r, const char *expected, const char *what) {
        char *copy = strdup(expected), *p = copy, *l, *got = NULL;
        int rows = 0, n = -1;

        cr_assert(copy);
        if (strncmp(expected, "ERROR:", 6) == 0) {
                char *msg = strdup(PQresultErrorMessage(r));

                cr_assert(msg);
                msg[strcspn(msg, "\n")] = '\0';
                cr_assert_str_eq(msg, expected, "%s: the error differs", what);
                free(msg);
                free(copy);
                return;
        }
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", what, PQresultErrorMessage(r));
        got = result_text(r);
        l = next_line(&p);
        cr_assert(l && line_matches(r, -1, l), "%s: the columns differ; got\n%s", what, got);
        l = next_line(&p);
        cr_assert(l && l[0] == '-', "%s: no separator line in the guide", what);
        while ((l = next_line(&p)) && sscanf(l, "(%d row", &n) != 1) {
                cr_assert(rows < PQntuples(r) && line_matches(r, rows, l),
                          "%s: row %d differs; got\n%s", what, rows + 1, got);
                rows++;
        }
        cr_assert(n == rows && rows == PQntuples(r), "%s: %d rows in the guide, got\n%s", what, rows, got);
        free(got);
        free(copy);
}

/* ---- running the guide's blocks ---- */

/* Runs sql with params in a transaction that holds NOW_EVENTS, as outage_reader, in UTC;
 * rolled back. Returns the result (caller clears). */
static PGresult *run_as_reader(PGconn *c, const char *sql, const char *const *params, int n) {
        PGresult *r;

        exec_ok(c, "BEGIN");
        exec_ok(c, NOW_EVENTS);
        exec_ok(c, "SET LOCAL ROLE outage_reader; SET LOCAL TimeZone = 'UTC'");
        r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
        PQclear(PQexec(c, "ROLLBACK"));
        return r;
}

static void check_recipe(PGconn *c, const Block *b) {
        PGresult *r = run_as_reader(c, b->sql, (const char *const *) b->params, b->n_params);

        expect_result(r, b->expected, b->id);
        PQclear(r);
}

/* Every recipe of docs/ANALYSTS.md prints on ci what the guide shows. */
static void check_all_recipes(const char *ci) {
        Guide g;
        PGconn *c = connect_as(ci, NULL);
        int n = 0;

        guide_load(&g, "docs/ANALYSTS.md");
        for (size_t i = 0; i < g.n; i++)
                if (strcmp(g.b[i].kind, "recipe") == 0) {
                        check_recipe(c, &g.b[i]);
                        n++;
                }
        cr_assert_geq(n, 7);
        PQfinish(c);
        guide_free(&g);
}

Test(integration, guide_blocks_are_marked_and_the_required_recipes_exist) {
        static const char *const required[] = {
                "controller-events", "open-now", "daily-downtime", "worst-controllers",
                "missed-reports", "outages-by-type", "rejects-by-reason",
        };
        Guide g;

        guide_load(&g, "docs/ANALYSTS.md");
        for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
                cr_assert_str_eq(guide_find(&g, required[i])->kind, "recipe");
        for (size_t i = 0; i < g.n; i++)
                for (size_t j = 0; j < i; j++)
                        cr_assert_str_neq(g.b[i].id, g.b[j].id, "two blocks named %s", g.b[i].id);
        guide_free(&g);
}

Test(integration, recipes_print_what_the_guide_shows) {
        char *ci = example_db();

        check_all_recipes(ci);
        free(ci);
}

/* The open-now recipe returns exactly the events whose status is open. */
Test(integration, open_now_recipe_is_status_open) {
        char *ci = example_db();
        PGconn *c = connect_as(ci, NULL);
        Guide g;
        char *sql = NULL;
        PGresult *r;

        guide_load(&g, "docs/ANALYSTS.md");
        cr_assert(asprintf(&sql,
                "SELECT (SELECT count(*) FROM (%s) x),"
                " (SELECT count(*) FROM outage.events WHERE status = 'open'),"
                " (SELECT count(*) FROM ((SELECT controller_id, outage_type FROM (%s) x)"
                "  EXCEPT (SELECT controller_id, outage_type FROM outage.events WHERE status = 'open')) y)",
                guide_find(&g, "open-now")->sql, guide_find(&g, "open-now")->sql) > 0);
        /* a subquery does not take the recipe's final ';' */
        for (char *s; (s = strstr(sql, ";)"));)
                *s = ' ';
        r = run_as_reader(c, sql, NULL, 0);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "3");
        cr_assert_str_eq(PQgetvalue(r, 0, 1), "3");
        cr_assert_str_eq(PQgetvalue(r, 0, 2), "0");
        PQclear(r);
        free(sql);
        PQfinish(c);
        guide_free(&g);
        free(ci);
}

/* The login roles of the guide: created by its owner blocks; alice's blocks print what the
 * guide shows when logged in as alice; the grafana role is read-only. */
Test(integration, access_blocks_print_what_the_guide_shows) {
        char *ci = example_db();
        PGconn *owner = connect_as(ci, NULL), *c;
        const char *state;
        PGresult *r;
        Guide g;

        guide_load(&g, "docs/ANALYSTS.md");
        exec_ok(owner, "DROP ROLE IF EXISTS alice; DROP ROLE IF EXISTS grafana");
        for (size_t i = 0; i < g.n; i++)
                if (strcmp(g.b[i].kind, "owner") == 0)
                        exec_ok(owner, g.b[i].sql);
        c = connect_as(ci, "alice");
        exec_ok(c, "SET TimeZone = 'UTC'");
        for (size_t i = 0; i < g.n; i++)
                if (strcmp(g.b[i].kind, "alice") == 0) {
                        r = PQexec(c, g.b[i].sql);
                        expect_result(r, g.b[i].expected, g.b[i].id);
                        PQclear(r);
                }
        PQfinish(c);
        c = connect_as(ci, "grafana");
        r = PQexec(c, "CREATE TEMP TABLE t (x int)");
        state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        cr_assert_str_eq(state ? state : "00000", "25006", "the grafana role is not read-only");
        PQclear(r);
        r = PQexec(c, "SHOW statement_timeout");
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "30s");
        PQclear(r);
        PQfinish(c);
        exec_ok(owner, "DROP ROLE alice; DROP ROLE grafana");
        PQfinish(owner);
        guide_free(&g);
        free(ci);
}

/* ---- the Grafana dashboard ---- */

/* s with every from replaced by to (caller frees). */
static char *replace_all(const char *s, const char *from, const char *to) {
        char *buf = NULL;
        size_t len = 0, n = strlen(from);
        FILE *f = open_memstream(&buf, &len);

        for (const char *p; (p = strstr(s, from)); s = p + n) {
                fwrite(s, 1, (size_t) (p - s), f);
                fputs(to, f);
        }
        fputs(s, f);
        fclose(f);
        return buf;
}

/* sql without trailing spaces, newlines and one final ';' (caller frees). */
static char *statement(const char *sql) {
        char *s = strdup(sql);
        size_t n;

        cr_assert(s);
        n = strlen(s);
        while (n && isspace((unsigned char) s[n - 1]))
                s[--n] = '\0';
        if (n && s[n - 1] == ';')
                s[--n] = '\0';
        return s;
}

/* The recipe whose text is rawSql with $__timeFrom() and $__timeTo() read as $1 and $2. */
static const Block *recipe_of(const Guide *g, const char *raw) {
        char *a = replace_all(raw, "$__timeFrom()", "$1"), *b = replace_all(a, "$__timeTo()", "$2");
        char *want = statement(b);
        const Block *found = NULL;

        for (size_t i = 0; i < g->n && !found; i++) {
                char *have = statement(g->b[i].sql);

                if (strcmp(g->b[i].kind, "recipe") == 0 && strcmp(have, want) == 0)
                        found = &g->b[i];
                free(have);
        }
        cr_assert(found, "a dashboard query is not a recipe of docs/ANALYSTS.md:\n%s", raw);
        free(a);
        free(b);
        free(want);
        return found;
}

/* rawSql as Grafana sends it: the macros replaced by the recipe's bounds as quoted
 * literals, e.g. '2026-03-01T00:00:00Z' (caller frees). */
static char *grafana_expand(const char *raw, const Block *b) {
        char from[80], to[80], *a, *out;

        (void) snprintf(from, sizeof(from), "'%s'", b->n_params > 0 ? b->params[0] : "");
        (void) snprintf(to, sizeof(to), "'%s'", b->n_params > 1 ? b->params[1] : "");
        a = replace_all(raw, "$__timeFrom()", from);
        out = replace_all(a, "$__timeTo()", to);
        free(a);
        return out;
}

static const char *json_str(json_object *o, const char *key) {
        json_object *v = NULL;

        cr_assert(json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string),
                  "no string %s in %s", key, json_object_to_json_string(o));
        return json_object_get_string(v);
}

static json_object *json_get(json_object *o, const char *key, json_type type) {
        json_object *v = NULL;

        cr_assert(json_object_object_get_ex(o, key, &v) && json_object_is_type(v, type), "no %s", key);
        return v;
}

/* One panel target: a recipe, run as Grafana would with the recipe's own bounds, prints the
 * guide's output; a time series starts with its time column. Returns the recipe's id. */
static const char *check_target(PGconn *c, const Guide *g, json_object *target) {
        const char *raw = json_str(target, "rawSql"), *format = json_str(target, "format");
        const Block *b = recipe_of(g, raw);
        char *sql = grafana_expand(raw, b);
        PGresult *r = run_as_reader(c, sql, NULL, 0);

        cr_assert(strcmp(format, "table") == 0 || strcmp(format, "time_series") == 0, "format %s", format);
        expect_result(r, b->expected, b->id);
        if (strcmp(format, "time_series") == 0)
                cr_assert_str_eq(PQfname(r, 0), "time", "%s: a time series needs its time column first", b->id);
        cr_assert_str_eq(json_str(json_get(target, "datasource", json_type_object), "uid"), "${datasource}");
        PQclear(r);
        free(sql);
        return b->id;
}

Test(integration, dashboard_queries_are_guide_recipes_and_run) {
        static const char *const required[] = {
                "open-now", "daily-downtime", "outages-by-type", "worst-controllers", "rejects-by-reason",
        };
        char *ci = example_db(), *text = slurp("docs/grafana-dashboard.json");
        json_object *dash = json_tokener_parse(text), *panels, *vars, *v;
        PGconn *c = connect_as(ci, NULL);
        const char *seen[32];
        size_t n_seen = 0;
        Guide g;

        cr_assert(dash, "docs/grafana-dashboard.json is not JSON");
        guide_load(&g, "docs/ANALYSTS.md");
        vars = json_get(json_get(dash, "templating", json_type_object), "list", json_type_array);
        v = json_object_array_get_idx(vars, 0);
        cr_assert(v && strcmp(json_str(v, "name"), "datasource") == 0 && strcmp(json_str(v, "type"), "datasource") == 0,
                  "the first variable must be the data source");
        panels = json_get(dash, "panels", json_type_array);
        for (size_t i = 0; i < json_object_array_length(panels); i++) {
                json_object *targets = json_get(json_object_array_get_idx(panels, i), "targets", json_type_array);

                for (size_t j = 0; j < json_object_array_length(targets); j++) {
                        cr_assert(n_seen < 32);
                        seen[n_seen++] = check_target(c, &g, json_object_array_get_idx(targets, j));
                }
        }
        for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
                bool found = false;

                for (size_t j = 0; j < n_seen; j++)
                        found = found || strcmp(seen[j], required[i]) == 0;
                cr_assert(found, "no panel runs recipe %s", required[i]);
        }
        guide_free(&g);
        json_object_put(dash);
        PQfinish(c);
        free(text);
        free(ci);
}

/* ---- index use ---- */

/* 200k events: 1000 controllers x 2 types x 100 events of 30 min, every 47 hours over the
 * last 200 days, loaded without the table's indexes and exclusion constraint, which are then
 * built again from their own definitions (whatever the migrations installed): the
 * constraint's index answers the overlap queries. */
static const char BULK_LOAD[] =
        "INSERT INTO outage.controllers (name) SELECT 'c' || i FROM generate_series(1, 1000) i;"
        "INSERT INTO outage.outage_types (name) VALUES ('lamp_outage'), ('panel_outage');"
        "CREATE TEMP TABLE idx AS SELECT pg_get_indexdef(i.indexrelid) AS def FROM pg_index i"
        " WHERE i.indrelid = 'outage.stored_events'::regclass"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid);"
        "CREATE TEMP TABLE xcon AS SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
        " WHERE conrelid = 'outage.stored_events'::regclass AND contype = 'x';"
        "DO $$ DECLARE d text; BEGIN"
        " FOR d IN SELECT format('ALTER TABLE outage.stored_events DROP CONSTRAINT %I', conname) FROM pg_constraint"
        "  WHERE conrelid = 'outage.stored_events'::regclass AND contype IN ('p', 'x') LOOP EXECUTE d; END LOOP;"
        " FOR d IN SELECT format('DROP INDEX %s', i.indexrelid::regclass) FROM pg_index i"
        "  WHERE i.indrelid = 'outage.stored_events'::regclass LOOP EXECUTE d; END LOOP;"
        " END $$;"
        "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)"
        " SELECT c, t, s, s + interval '30 min', 4 FROM ("
        "  SELECT c, t, date_trunc('hour', now()) - interval '200 days' + k * interval '47 hours'"
        "   + ((c * 7 + t) % 600) * interval '1 min' AS s"
        "  FROM generate_series(1, 1000) c, generate_series(1, 2) t, generate_series(0, 99) k) x;"
        "ALTER TABLE outage.stored_events ADD PRIMARY KEY (event_id);"
        "DO $$ DECLARE d text; BEGIN FOR d IN SELECT def FROM idx LOOP EXECUTE d; END LOOP;"
        " FOR d IN SELECT format('ALTER TABLE outage.stored_events ADD CONSTRAINT %I %s', conname, def) FROM xcon"
        "  LOOP EXECUTE d; END LOOP; END $$;"
        "ANALYZE outage.stored_events; ANALYZE outage.controllers; ANALYZE outage.outage_types;";

/* The plan of sql as outage_reader, one line per row (caller frees). */
static char *plan_as_reader(const char *ci, const char *sql) {
        PGconn *c = connect_as(ci, NULL);
        char *explain = NULL, *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        PGresult *r;

        cr_assert(asprintf(&explain, "EXPLAIN (COSTS OFF) %s", sql) > 0);
        exec_ok(c, "BEGIN");
        exec_ok(c, "SET LOCAL ROLE outage_reader");
        r = PQexec(c, explain);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
        for (int i = 0; i < PQntuples(r); i++)
                fprintf(f, "%s\n", PQgetvalue(r, i, 0));
        fclose(f);
        PQclear(r);
        PQfinish(c);
        free(explain);
        return buf;
}

Test(integration, open_now_recipe_uses_an_index_on_200k_events) {
        char *ci = fresh_db(), *plan;
        Guide g;

        store_free(migrated_with(ci, GAP));
        cr_assert_eq(pg_exec(ci, BULK_LOAD), 0);
        expect_value(ci, "SELECT count(*) FROM outage.stored_events", "200000");
        guide_load(&g, "docs/ANALYSTS.md");
        plan = plan_as_reader(ci, guide_find(&g, "open-now")->sql);
        cr_assert_null(strstr(plan, "Seq Scan on stored_events"), "the open-now recipe reads the whole table:\n%s", plan);
        cr_assert(strstr(plan, "Index") && strstr(plan, "stored_events"), "no index scan:\n%s", plan);
        free(plan);
        guide_free(&g);
        free(ci);
}

/* ---- partitioning ---- */

#define SNAPSHOT_EVENTS "SELECT string_agg(e::text, E'\\n' ORDER BY event_id) FROM outage.events e"
#define SNAPSHOT_DOWNTIME \
        "SELECT string_agg(d::text, E'\\n' ORDER BY controller_id, outage_type) FROM outage.downtime(NULL, NULL) d"
#define INSERT_EVENT(c, t, s, e) \
        "INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)" \
        " SELECT c.id, t.id, '" s "', '" e "', 1 FROM outage.controllers c, outage.outage_types t" \
        " WHERE c.name = '" c "' AND t.name = '" t "'"

/* Runs the partitioning script with psql; returns its exit code, stderr in ret_err. */
static int run_partition_script(const char *ci, const char *partitions, char **ret_err) {
        char *script = NULL, *var = NULL, *out = NULL;
        char *argv[] = { (char *) psql_path(), "-X", "-q", "-v", NULL, "-f", NULL, (char *) ci, NULL };
        int code;

        cr_assert(asprintf(&script, "%s/sql/examples/partition_by_controller.sql", harness_source_root()) > 0);
        cr_assert(asprintf(&var, "partitions=%s", partitions) > 0);
        argv[4] = var;
        argv[6] = script;
        code = proc_run(argv, NULL, &out, ret_err, 65536, 120000);
        free(out);
        free(var);
        free(script);
        return code;
}

static void partition_ok(const char *ci, const char *partitions) {
        char *err = NULL;
        int code = run_partition_script(ci, partitions, &err);

        cr_assert_eq(code, 0, "partition_by_controller.sql exited %d: %s", code, err ? err : "");
        free(err);
}

static void expect_state(const char *ci, const char *sql, const char *want) {
        char state[6];

        exec_state(ci, sql, state);
        cr_assert_str_eq(state, want, "%s", sql);
}

/* The exclusion constraint of every partition holds for the whole table. */
static void expect_constraint_holds(const char *ci) {
        /* overlapping ctrl_1's 10:00-14:20, and 10 min after its end (within the gap) */
        expect_state(ci, INSERT_EVENT("ctrl_1", "panel_outage", "2026-03-02 13:00+00", "2026-03-02 15:00+00"), "23P01");
        expect_state(ci, INSERT_EVENT("ctrl_1", "panel_outage", "2026-03-02 14:30+00", "2026-03-02 14:30+00"), "23P01");
        /* other controllers, other partitions */
        expect_state(ci, INSERT_EVENT("ctrl_2", "lamp_outage", "2026-03-03 06:05+00", "2026-03-03 06:05+00"), "23P01");
        expect_state(ci, INSERT_EVENT("ctrl_3", "panel_outage", "2026-03-31 19:50+00", "2026-03-31 19:50+00"), "23P01");
        /* another type of the same controller is another key */
        expect_state(ci, INSERT_EVENT("ctrl_1", "lamp_outage", "2026-03-02 13:00+00", "2026-03-02 13:00+00"), "00000");
}

/* The daemon's merge, as store.c runs it (sql/flush_tables.sql, then sql/flush_merge.sql in
 * the flush transaction), of two fragments: a report that extends ctrl_1's event of March
 * 2nd, and the first report of a new controller. */
static void merge_as_the_daemon(const char *ci) {
        char *tables = slurp("sql/flush_tables.sql"), *merge = slurp("sql/flush_merge.sql");
        PGconn *c = connect_as(ci, NULL);
        PGresult *r;

        exec_ok(c, "BEGIN");
        exec_ok(c, tables);
        exec_ok(c, "INSERT INTO pg_temp.outaged_frag VALUES"
                " (0, 'ctrl_1', 'panel_outage', '2026-03-02 14:30Z', '2026-03-02 14:30Z', 1, NULL),"
                " (1, 'ctrl_9', 'panel_outage', '2026-03-02 14:30Z', '2026-03-02 14:30Z', 1, NULL)");
        r = PQexec(c, merge);
        cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "flush_merge.sql: %s", PQresultErrorMessage(r));
        cr_assert_str_eq(PQgetvalue(r, 0, 0), "t", "the merge is not complete");
        PQclear(r);
        exec_ok(c, "COMMIT");
        PQfinish(c);
        free(merge);
        free(tables);
        expect_value(ci, "SELECT string_agg(event_id || ' ' || start_time || ' ' || end_time || ' ' || report_count, ', ')"
                     " FROM outage.events WHERE controller_id = 'ctrl_1' AND start_time <= '2026-03-02 14:30Z'"
                     " AND end_time >= '2026-03-02 14:30Z'",
                     "2 2026-03-02 10:00:00+00 2026-03-02 14:30:00+00 28");
        expect_value(ci, "SELECT event_id > 9 FROM outage.events WHERE controller_id = 'ctrl_9'", "t");
}

static int count_event(const char *controller_id, const char *outage_type, usec_t start, usec_t end,
                       void *userdata) {
        ++*(int *) userdata;
        return 0;
}

/* What else the daemon does on a partitioned table: migrate (nothing to do), load the
 * recent events at start, prune. */
static void expect_daemon_works(const char *ci) {
        Store *s = migrated_with(ci, GAP);
        uint64_t events = 0, rejects = 0;
        int n = 0, r;

        merge_as_the_daemon(ci);
        /* ended on or after 2026-03-21: ctrl_2's lamp outage, ctrl_3's of the 31st, ctrl_1's of April */
        r = store_load_events(s, (usec_t) 1774051200 * USEC_PER_SEC, count_event, &n);
        cr_assert_eq(r, 0, "store_load_events: %d %s", r, store_error(s));
        cr_assert_eq(n, 3);
        /* closed events that ended before March 5th: the three first, ctrl_9's, and ctrl_1's
         * lamp outage of expect_constraint_holds */
        r = store_prune(s, (usec_t) 1772668800 * USEC_PER_SEC, 0, &events, &rejects);
        cr_assert_eq(r, 0, "store_prune: %d %s", r, store_error(s));
        cr_assert_eq(events, 5);
        expect_value(ci, "SELECT count(*) FROM outage.events WHERE end_time < '2026-03-05'", "0");
        store_free(s);
}

Test(integration, partition_script_keeps_events_views_and_constraint) {
        char *ci = example_db(), *before, *downtime, *err = NULL;

        before = value(ci, SNAPSHOT_EVENTS);
        downtime = value(ci, SNAPSHOT_DOWNTIME);
        partition_ok(ci, "4");
        expect_value(ci, "SELECT relkind FROM pg_class WHERE oid = 'outage.stored_events'::regclass", "p");
        expect_value(ci, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'outage.stored_events'::regclass", "4");
        expect_value(ci, "SELECT count(*) FROM pg_constraint c JOIN pg_inherits i ON i.inhrelid = c.conrelid"
                     " WHERE i.inhparent = 'outage.stored_events'::regclass AND c.contype = 'x'", "4");
        expect_value(ci, "SELECT to_regclass('outage.stored_events_old') IS NULL", "t");
        expect_value(ci, SNAPSHOT_EVENTS, before);
        expect_value(ci, SNAPSHOT_DOWNTIME, downtime);
        expect_value(ci, "SELECT has_table_privilege('outage_writer', 'outage.stored_events', 'SELECT, INSERT, UPDATE, DELETE')"
                     " AND NOT has_table_privilege('outage_reader', 'outage.stored_events', 'SELECT')", "t");
        expect_value(ci, "SELECT obj_description('outage.stored_events'::regclass, 'pg_class') IS NOT NULL", "t");
        check_all_recipes(ci);
        expect_constraint_holds(ci);
        /* the identity goes on after the moved rows: 9 events, 4 now-relative ones rolled back
         * by each recipe, the refused inserts above */
        expect_value(ci, "SELECT min(event_id) > 9 FROM outage.stored_events WHERE start_time = '2026-03-02 13:00+00'", "t");
        expect_daemon_works(ci);
        /* a second run refuses, and changes nothing */
        free(before);
        before = value(ci, SNAPSHOT_EVENTS);
        cr_assert_neq(run_partition_script(ci, "8", &err), 0);
        cr_assert(err && strstr(err, "partitioned already"), "%s", err ? err : "");
        expect_value(ci, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'outage.stored_events'::regclass", "4");
        expect_value(ci, SNAPSHOT_EVENTS, before);
        free(err);
        free(before);
        free(downtime);
        free(ci);
}

/* docs/partitioning.md's gap change: the gap recorded, the events it joins merged, the
 * function installed as install_gap installs it, the constraint on every partition. */
Test(integration, partitioned_gap_change_procedure) {
        char *ci = example_db(), *ref = fresh_db(), *want;
        PGconn *c = connect_as(ci, NULL);
        Store *s;
        Guide g;

        partition_ok(ci, "3");
        /* 14 min after ctrl_2's single report of 12:00: apart at 12 min, one event at 15 */
        exec_ok(c, INSERT_EVENT("ctrl_2", "panel_outage", "2026-03-20 12:14+00", "2026-03-20 12:30+00"));
        guide_load(&g, "docs/partitioning.md");
        exec_ok(c, guide_find(&g, "partitioned-gap-change")->sql);
        expect_value(ci, "SELECT gap FROM outage.settings", "00:15:00");
        expect_value(ci, "SELECT string_agg(start_time || ' ' || end_time || ' ' || report_count, ', ')"
                     " FROM outage.events WHERE controller_id = 'ctrl_2' AND outage_type = 'panel_outage'",
                     "2026-03-20 12:00:00+00 2026-03-20 12:30:00+00 2");
        store_free(migrated_with(ref, 15 * USEC_PER_MINUTE));
        want = value(ref, "SELECT prosrc FROM pg_proc WHERE proname = 'event_box'");
        expect_value(ci, "SELECT prosrc FROM pg_proc WHERE proname = 'event_box'", want);
        expect_value(ci, "SELECT relkind FROM pg_class WHERE oid = 'outage.stored_events'::regclass", "p");
        expect_value(ci, "SELECT count(*) FROM pg_constraint c JOIN pg_inherits i ON i.inhrelid = c.conrelid"
                     " WHERE i.inhparent = 'outage.stored_events'::regclass AND c.contype = 'x'", "3");
        /* 14 min after ctrl_1's 14:20: within the new gap */
        expect_state(ci, INSERT_EVENT("ctrl_1", "panel_outage", "2026-03-02 14:34+00", "2026-03-02 14:34+00"), "23P01");
        expect_state(ci, INSERT_EVENT("ctrl_1", "panel_outage", "2026-03-02 14:36+00", "2026-03-02 14:36+00"), "00000");
        s = migrated_with(ci, 15 * USEC_PER_MINUTE);
        cr_assert_eq(store_migrate(s, GAP), -ESTALE);
        store_free(s);
        guide_free(&g);
        PQfinish(c);
        free(want);
        free(ref);
        free(ci);
}
