/* test_reliability.c — SPEC section 8 faults that must not stop the service or freeze
 * what it stores, with the real binary, mosquitto and PostgreSQL: one event the database
 * refuses for good, a journal disk that fills up, and a flood of late reports from one
 * controller while the watchdog is on. */
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include "common.h"

static Daemon d1;
static char *mnt;

static void teardown(void) {
        daemon_dump_log(&d1);
        daemon_cleanup(&d1);
        if (mnt) {
                (void) umount2(mnt, MNT_DETACH);
                harness_rm_rf(mnt);
                free(mnt);
                mnt = NULL;
        }
        servers_stop();
}

TestSuite(reliability, .init = servers_start, .fini = teardown, .timeout = 300);

/* A trigger a DBA might add refuses one controller for good. The other events, the
 * rejects and the journal checkpoint keep moving; the refused fragment becomes a
 * store_refused reject. Before the fix the refused key went to the back of the queue
 * forever and the checkpoint, the trim and the rejects never moved again. */
Test(reliability, one_refused_event_does_not_freeze_the_rest) {
        char *db = new_database("r_refused");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "r-refused",
                            .topic = "refused/+" };
        char *v;

        start_ready(&d1, &o);
        cr_assert_eq(pg_exec(db,
                "CREATE FUNCTION public.no_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.name = 'poison' THEN RAISE EXCEPTION 'controller poison is banned'; END IF; "
                "RETURN NEW; END $$;"
                "CREATE TRIGGER no_poison BEFORE INSERT ON outage.controllers "
                "FOR EACH ROW EXECUTE FUNCTION public.no_poison();"), 0);

        publish_report("refused/poison", "panel_outage", 600);
        publish_report("refused/good1", "panel_outage", 600);
        publish_report("refused/good2", "lamp_outage", 610);
        cr_assert_eq(mqtt_publish(&broker, "refused/good1", "not json", 8), 0);
        publish_report("refused/good1", "panel_outage", 610);

        v = wait_events(db, "good1/panel_outage 600 610 2;good2/lamp_outage 610 610 1", 30000);
        cr_assert_str_eq(v, "good1/panel_outage 600 610 2;good2/lamp_outage 610 610 1");
        free(v);
        expect_query(db, "SELECT count(*) FROM outage.rejects WHERE reason = 'malformed_json'", "1", 30000);
        expect_query(db, "SELECT count(*) FROM outage.rejects WHERE reason = 'store_refused' "
                         "AND controller_id = 'poison' AND payload LIKE '%\"controller_id\":\"poison\"%' "
                         "AND topic = 'refused/poison'", "1", 30000);
        /* Five messages, all covered by the checkpoint: the journal can be trimmed. */
        expect_query(db, "SELECT seq >= 5 FROM outage.checkpoints WHERE instance = 'r-refused'", "t", 30000);

        /* The daemon keeps working for the poisoned key's neighbours and stops cleanly. */
        publish_report("refused/good2", "lamp_outage", 615);
        v = wait_events(db, "good1/panel_outage 600 610 2;good2/lamp_outage 610 615 2", 30000);
        cr_assert_str_eq(v, "good1/panel_outage 600 610 2;good2/lamp_outage 610 615 2");
        free(v);
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        free(db);
}

/* Fills a file until the file system is full. */
static void fill(const char *path) {
        char buf[4096] = { 0 };
        FILE *f = fopen(path, "w");

        cr_assert_not_null(f);
        while (fwrite(buf, 1, sizeof(buf), f) == sizeof(buf) && fflush(f) == 0)
                ;
        fclose(f);
}

/* The journal's disk fills up: nothing unjournalled is acknowledged (the broker keeps
 * it), STATUS says so, and consumption resumes by itself once space returns. */
Test(reliability, journal_disk_full_holds_and_resumes) {
        char *db = new_database("r_diskfull"), journal[512], filler[512];
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "r-diskfull",
                            .topic = "full/+" };
        char *v;

        if (geteuid() != 0)
                cr_skip_test("mounting a small tmpfs needs root");
        mnt = harness_mkdtemp("outaged-tmpfs");
        cr_assert_eq(mount("tmpfs", mnt, "tmpfs", 0, "size=512k,mode=0755"), 0, "mount: %m");
        snprintf(journal, sizeof(journal), "%s/journal", mnt);
        snprintf(filler, sizeof(filler), "%s/filler", mnt);
        o.journal_dir = journal;
        start_ready(&d1, &o);

        fill(filler);
        for (int k = 0; k < 20; k++) {
                char topic[32];

                snprintf(topic, sizeof(topic), "full/c%02d", k);
                publish_report(topic, "panel_outage", 600 + k);
        }
        cr_assert_eq(daemon_wait_notify(&d1, "journal disk full", 20000), 0,
                     "STATUS should say the journal is full; last: %s", d1.last_status);
        v = query(db, "SELECT count(*) FROM outage.events");
        cr_assert_str_eq(v, "0", "nothing may be stored that was not journalled first");
        free(v);

        cr_assert_eq(unlink(filler), 0);
        expect_query(db, "SELECT count(*) FROM outage.events", "20", 30000);
        cr_assert_eq(daemon_wait_notify(&d1, "mqtt subscribed", 20000), 0, "last: %s", d1.last_status);
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);
        free(db);
}

static int64_t mono_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The longest time between two WATCHDOG=1 while waiting for sql to return want. */
static int64_t watch_pings_until(Daemon *d, const char *db, const char *sql, const char *want,
                                 int timeout_ms) {
        int64_t last = mono_ms(), worst = 0, deadline = last + timeout_ms, next_query = 0;

        while (mono_ms() < deadline) {
                struct pollfd p = { .fd = d->notify_fd, .events = POLLIN };
                char buf[1024];
                ssize_t n;

                (void) poll(&p, 1, 100);
                while ((n = recv(d->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
                        buf[n] = '\0';
                        if (strstr(buf, "WATCHDOG=1")) {
                                if (mono_ms() - last > worst)
                                        worst = mono_ms() - last;
                                last = mono_ms();
                        }
                }
                if (mono_ms() >= next_query) {
                        char *v = query(db, sql);
                        bool done = strcmp(v, want) == 0;

                        free(v);
                        if (done)
                                break;
                        next_query = mono_ms() + 500;
                }
        }
        if (mono_ms() - last > worst)
                worst = mono_ms() - last;
        return worst;
}

/* 200,000 late reports into one span: linear work, bounded memory, a main loop that
 * keeps pinging the watchdog, and another controller's report still stored promptly.
 * Before the fix each late report copied the span's uncertain timestamps: about 40 s of
 * a frozen loop for this flood, past any watchdog. */
Test(reliability, late_flood_from_one_controller_keeps_the_loop_alive, .timeout = 600) {
        char *db = new_database("r_flood");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "r-flood",
                            .topic = "flood/+", .max_age = "0", .flush_interval = "1s" };
        const int messages = 200, per = 1000;
        const char **topics = calloc(messages, sizeof(char *));
        char **payloads = calloc(messages, sizeof(char *));
        int64_t worst;
        char *v;

        /* Pings every 2.5 s; a loop that stalls for 5 s would be killed by systemd. */
        d1.extra_env = "WATCHDOG_USEC=5000000";
        start_ready(&d1, &o);
        /* The span exists and is flushed first, so the flood is behind the horizon. */
        publish_report("flood/f1", "panel_outage", -3000);
        publish_report("flood/f1", "panel_outage", -2990);
        v = wait_query(db, "SELECT count(*) FROM outage.events", "1", 30000);
        free(v);
        harness_sleep_ms(6000);         /* past the eviction timer: the span is closed */
        /* ... and evicted: the daemon must decide the flood's reports as uncertain. Each
         * message: 1,000 distinct timestamps inside the span, 420 us apart. */
        for (int m = 0; m < messages; m++) {
                size_t cap = (size_t) per * 128 + 16, len = 0;
                char *p = malloc(cap);

                len += (size_t) snprintf(p + len, cap - len, "[");
                for (int k = 0; k < per; k++) {
                        char ts[64];

                        ts_string(ts, sizeof(ts), -2999 + (double) (m * per + k) * 1e-6 * 7);
                        len += (size_t) snprintf(p + len, cap - len, "%s{\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\"}",
                                                 k ? "," : "", ts);
                }
                snprintf(p + len, cap - len, "]");
                topics[m] = "flood/f1";
                payloads[m] = p;
        }
        for (int off = 0; off < messages; off += 50)
                cr_assert_eq(mqtt_publish_many(&broker, topics + off, (const char *const *) payloads + off, 50), 0);
        publish_report("flood/other", "lamp_outage", 0);

        worst = watch_pings_until(&d1, db, "SELECT count(*) FROM outage.events WHERE controller_id = 'other'",
                                  "1", 240000);
        v = query(db, "SELECT count(*) FROM outage.events WHERE controller_id = 'other'");
        cr_assert_str_eq(v, "1", "the other controller's report must be stored during the flood");
        free(v);
        cr_assert_lt(worst, 5000, "the main loop went %" PRId64 " ms without a watchdog ping", worst);
        v = wait_events(db, "f1/panel_outage -3000 -2990 2;other/lamp_outage 0 0 1", 120000);
        cr_assert_str_eq(v, "f1/panel_outage -3000 -2990 2;other/lamp_outage 0 0 1");
        free(v);
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 60000), 0);
        for (int m = 0; m < messages; m++)
                free(payloads[m]);
        free(payloads);
        free(topics);
        free(db);
}

/* The same journal directory, database A then database B: B gets none of A's records;
 * the daemon exits 78 naming --discard-journal, which drops them, and then B starts.
 * Before journals recorded their database, B received every record left by A. */
Test(reliability, journal_of_another_database_is_refused_then_discarded) {
        char *a = new_database("r_ident_a"), *b = new_database("r_ident_b"), journal[512];
        char *dir = harness_mkdtemp("outaged-ident");
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = a, .client_id = "r-ident", .topic = "ident/+" };
        Daemon d2 = {}, d3 = {};
        char *out = NULL, *err = NULL, *v;
        int code;

        snprintf(journal, sizeof(journal), "%s/journal", dir);
        o.journal_dir = journal;
        start_ready(&d1, &o);
        publish_report("ident/c1", "panel_outage", 600);
        publish_report("ident/c1", "panel_outage", 610);
        v = wait_events(a, "c1/panel_outage 600 610 2", 30000);
        cr_assert_str_eq(v, "c1/panel_outage 600 610 2");
        free(v);
        cr_assert_eq(daemon_signal_wait(&d1, SIGTERM, 30000), 0);

        /* Database B, same journal: refused with 78, nothing replayed into B. */
        o.conninfo = b;
        cr_assert_eq(daemon_prepare(&d2, &o), 0);
        cr_assert_eq(daemon_start(&d2), 0);
        code = daemon_wait_exit(&d2, 60000);
        cr_assert_eq(code, 78, "exit %d", code);
        v = query(b, "SELECT count(*) FROM outage.events");
        cr_assert_str_eq(v, "0");
        free(v);
        {
                FILE *f = fopen(d2.log_path, "r");
                char line[2048];
                bool named = false;

                cr_assert_not_null(f);
                while (fgets(line, sizeof(line), f))
                        named |= strstr(line, "--discard-journal") != NULL && strstr(line, "another database") != NULL;
                fclose(f);
                cr_assert(named, "the log must say why and name --discard-journal");
        }

        /* --discard-journal drops them, says how many, and B starts clean. */
        {
                char *argv[] = { (char *) harness_binary(), "-c", d2.config_path, "--discard-journal", NULL };

                code = proc_run(argv, NULL, &out, &err, 65536, 60000);
        }
        cr_assert_eq(code, 0, "--discard-journal exited %d: %s", code, err);
        cr_assert(strstr(err, "Discarding 2 journal records"), "%s", err);
        free(out);
        free(err);
        cr_assert_eq(daemon_prepare(&d3, &o), 0);
        cr_assert_eq(daemon_start(&d3), 0);
        cr_assert_eq(daemon_wait_ready(&d3, 30000), 0);
        publish_report("ident/c2", "lamp_outage", 700);
        v = wait_events(b, "c2/lamp_outage 700 700 1", 30000);
        cr_assert_str_eq(v, "c2/lamp_outage 700 700 1");
        free(v);
        cr_assert_eq(daemon_signal_wait(&d3, SIGTERM, 30000), 0);
        v = events_text(a);
        cr_assert_str_eq(v, "c1/panel_outage 600 610 2", "database A is untouched");
        free(v);
        daemon_cleanup(&d2);
        daemon_cleanup(&d3);
        harness_rm_rf(dir);
        free(dir);
        free(a);
        free(b);
}

/* Counts the lines of the daemon's log that contain needle before the first line that
 * contains stop (all of them when stop is NULL or absent). */
static int count_log_lines(const Daemon *d, const char *needle, const char *stop) {
        FILE *f = fopen(d->log_path, "r");
        char line[4096];
        int n = 0;

        cr_assert_not_null(f);
        while (fgets(line, sizeof(line), f)) {
                if (stop && strstr(line, stop))
                        break;
                n += strstr(line, needle) != NULL;
        }
        fclose(f);
        return n;
}

/* Journal records left uncommitted (the database was down, then SIGKILL) are replayed at
 * the next start in bounded flush rounds that move the checkpoint, with
 * EXTEND_TIMEOUT_USEC= sent while the replay makes progress. Before, the replay flushed
 * only at its end and never extended the start timeout. */
Test(reliability, replay_flushes_in_rounds_and_extends_the_start_timeout) {
        char *db = new_database("r_replay"), journal[512], *dir = harness_mkdtemp("outaged-replay"), *v;
        DaemonOptions o = { .mqtt_uri = broker.uri, .conninfo = db, .client_id = "r-replay",
                            .topic = "replay/+", .max_events = "1000" };
        RefReport *ref = calloc(3000, sizeof(*ref));
        const char **topics = calloc(3000, sizeof(char *));
        char **payloads = calloc(3000, sizeof(char *));
        Daemon d2 = {};
        size_t n = 0;
        char *want;

        snprintf(journal, sizeof(journal), "%s/journal", dir);
        o.journal_dir = journal;
        start_ready(&d1, &o);
        cr_assert_eq(pg_server_pause(&pg), 0);
        for (int i = 0; i < 2; i++)
                for (int k = 0; k < 1500; k++) {
                        char *t;

                        cr_assert(asprintf(&t, "replay/k%04d", k) > 0);
                        topics[n] = t;
                        payloads[n] = report_json("panel_outage", 600 + i * 10);
                        snprintf(ref[n].key, sizeof(ref[n].key), "k%04d/panel_outage", k);
                        ref[n++].t = (int64_t) (600 + i * 10) * 60000000;
                }
        for (size_t off = 0; off < n; off += 500)
                cr_assert_eq(mqtt_publish_many(&broker, topics + off, (const char *const *) payloads + off, 500), 0);
        /* Every message acknowledged is in the journal: wait until the daemon has them. */
        for (int w = 0; w < 200; w++) {
                char path[600], line[256];
                bool all = false;
                FILE *m;

                snprintf(path, sizeof(path), "%s/metrics.prom", d1.dir);
                if ((m = fopen(path, "r"))) {
                        while (fgets(line, sizeof(line), m))
                                all |= strncmp(line, "outaged_messages_received_total 3000", 36) == 0;
                        fclose(m);
                }
                if (all)
                        break;
                harness_sleep_ms(100);
        }
        cr_assert_eq(daemon_signal_wait(&d1, SIGKILL, 10000), 128 + SIGKILL);
        cr_assert_eq(pg_server_resume(&pg), 0);

        cr_assert_eq(daemon_prepare(&d2, &o), 0);
        cr_assert_eq(daemon_start(&d2), 0);
        cr_assert_eq(daemon_wait_notify(&d2, "EXTEND_TIMEOUT_USEC=", 30000), 0, "the start timeout is extended");
        cr_assert_eq(daemon_wait_ready(&d2, 60000), 0);
        want = reference_text(ref, n, 12 * 60000000LL);
        v = wait_events(db, want, 60000);
        cr_assert_str_eq(v, want);
        free(v);
        free(want);
        cr_assert_geq(count_log_lines(&d2, "Flushed ", "Replayed "), 3,
                      "the replay flushes in rounds (here: memory holds 1,000 of 1,500 keys)");
        cr_assert_eq(daemon_signal_wait(&d2, SIGTERM, 30000), 0);
        daemon_cleanup(&d2);
        harness_rm_rf(dir);
        for (size_t i = 0; i < n; i++) {
                free((char *) topics[i]);
                free(payloads[i]);
        }
        free(topics);
        free(payloads);
        free(dir);
        free(ref);
        free(db);
}
