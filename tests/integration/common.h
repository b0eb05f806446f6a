/* common.h — shared helpers of the end-to-end tests (common.c): one PostgreSQL and one
 * mosquitto per test binary or per test, a database per test, report timestamps relative
 * to today, the stored events as text, and the reference of SPEC section 3 in that text. */
#pragma once

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "reference.h"

/* The servers of the running test binary. */
extern PgServer pg;
extern MqttBroker broker;

/* Servers shared by every test of a binary: link shared_servers.c into it, which starts
 * them once before the first test (PRE_ALL) and stops them after the last. Criterion runs
 * each test in a fresh process, so they are described to the tests through the
 * environment: each test calls servers_from_env() first. */
void servers_start_shared(void);
void servers_stop_shared(void);
void servers_from_env(void);
/* PostgreSQL alone, shared the same way: link shared_pg.c. Its conninfo is
 * $OUTAGED_TEST_PG_CONNINFO, which names a server of the caller's if set beforehand (then
 * none is started). */
void pg_start_shared(void);
void pg_stop_shared(void);

/* Servers of one test: started (and maybe stopped and restarted) by the test itself. */
void servers_start(void);
void servers_stop(void);

/* Drops and creates database name on pg; returns its conninfo (caller frees). */
char *new_database(const char *name);

/* Midnight UTC of yesterday, in Unix seconds: report times stay within max_age. */
int64_t base_seconds(void);

/* "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" for base + minutes (+ fractions as microseconds). */
void ts_string(char *buf, size_t len, double minutes);

/* A report object as JSON (caller frees), and the same published QoS 1 to broker. */
char *report_json(const char *type, double minutes);
void publish_report(const char *topic, const char *type, double minutes);

/* The stored events as "ctrl/type start end count" items joined by ';', start and end in
 * minutes after base ("620"), or in microseconds when not a whole minute
 * ("37800250000us"), ordered by key then start. Caller frees. */
char *events_text(const char *conninfo);

/* Polls until the stored events equal want (or timeout); returns the last text seen
 * (caller frees). */
char *wait_events(const char *conninfo, const char *want, int timeout_ms);

/* The first value of sql's first row, "<null>" when none (caller frees). */
char *query(const char *conninfo, const char *sql);

/* Polls sql until its value is want, or timeout; returns the last value (caller frees). */
char *wait_query(const char *conninfo, const char *sql, const char *want, int timeout_ms);
/* wait_query, asserting the value is want in the end. */
void expect_query(const char *conninfo, const char *sql, const char *want, int timeout_ms);

/* daemon_prepare + daemon_start + daemon_wait_ready, asserting each (the log is printed
 * when the daemon does not become ready). */
void start_ready(Daemon *d, const DaemonOptions *o);

/* What events_text must show for the reports r (key "ctrl/type", t in microseconds after
 * base) with gap_us, counts as for reports in time order. Sorts r. Caller frees. */
char *reference_text(RefReport *r, size_t n, int64_t gap_us);
