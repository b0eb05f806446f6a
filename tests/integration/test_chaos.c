/* test_chaos.c — the central property under everything at once: two instances sharing the
 * subscription, reports shuffled, duplicated and batched, while instances are killed and
 * stopped, PostgreSQL and the broker restart. Stored spans must equal the reference
 * exactly; every count must be between 1 and the number of distinct timestamps. */
#include <pthread.h>
#include <signal.h>

#include "common.h"

static Daemon da, db_;

static void teardown(void) {
        daemon_dump_log(&da);
        daemon_dump_log(&db_);
        daemon_cleanup(&da);
        daemon_cleanup(&db_);
        servers_stop();
}

TestSuite(chaos, .init = servers_start, .fini = teardown, .timeout = 600);

typedef struct Msgs {
        size_t n;
        const char **topics, **payloads;
        volatile bool done;
        volatile bool failed;
} Msgs;

static void *publisher(void *p) {
        Msgs *m = p;

        for (size_t off = 0; off < m->n;) {
                size_t k = m->n - off < 50 ? m->n - off : 50;

                /* the broker may be down: retry the slice (duplicates are allowed) */
                int tries = 0;
                while (mqtt_publish_many(&broker, m->topics + off, m->payloads + off, k) < 0) {
                        if (++tries > 200) {
                                m->failed = true;
                                m->done = true;
                                return NULL;
                        }
                        harness_sleep_ms(250);
                }
                off += k;
                harness_sleep_ms(500);  /* spread over the faults below */
        }
        m->done = true;
        return NULL;
}

static void restart(Daemon *d, int sig) {
        int code = daemon_signal_wait(d, sig, 90000);

        if (sig == SIGTERM)
                cr_assert_eq(code, 0, "SIGTERM exit code %d", code);
        cr_assert_eq(daemon_start(d), 0);
        /* not waiting for READY: the broker or the database may be down right now */
}

/* "k/t s e c;..." into arrays; returns the number of events. */
static size_t parse_events(char *text, char keys[][96], int64_t *s, int64_t *e, long *c, size_t max) {
        size_t n = 0;

        for (char *tok = strtok(text, ";"); tok && n < max; tok = strtok(NULL, ";")) {
                char a[32], b[32];

                if (sscanf(tok, "%95s %31s %31s %ld", keys[n], a, b, &c[n]) != 4)
                        continue;
                s[n] = strstr(a, "us") ? atoll(a) : atoll(a) * 60000000LL;
                e[n] = strstr(b, "us") ? atoll(b) : atoll(b) * 60000000LL;
                n++;
        }
        return n;
}

Test(chaos, everything_at_once) {
        enum { KEYS = 40, PER = 50, MAXEV = KEYS * PER };
        char *dbci = new_database("chaos");
        DaemonOptions oa = { .mqtt_uri = broker.uri, .conninfo = dbci, .client_id = "chaos-a",
                             .topic = "chaos/+", .share_group = "g" };
        DaemonOptions ob = oa;
        RefReport *ref = calloc(KEYS * PER, sizeof(RefReport));
        size_t nref = 0, nmsg = 0, cap = KEYS * PER * 2;
        const char **topics = calloc(cap, sizeof(char *)), **payloads = calloc(cap, sizeof(char *));

        ob.client_id = "chaos-b";
        srandom(20261128);

        /* each key: timestamps with steps around the gap, some exactly 12 min, some 12 min
         * and 1 us; then messages of 1-4 of its reports, 20% published twice */
        for (int k = 0; k < KEYS; k++) {
                int64_t t = 0;
                size_t first = nref;

                for (int i = 0; i < PER; i++) {
                        long r = random() % 10;
                        t += r < 3 ? 12 * 60000000LL : r < 4 ? 12 * 60000000LL + 1 : (random() % 25) * 60000000LL;
                        snprintf(ref[nref].key, sizeof(ref[nref].key), "c%02d/panel_outage", k);
                        ref[nref].t = t;
                        nref++;
                }
                for (size_t i = first; i < nref;) {
                        size_t batch = 1 + (size_t) (random() % 4);
                        char *p = malloc(64 + batch * 96), *topic;
                        size_t len = 0;

                        if (i + batch > nref)
                                batch = nref - i;
                        len += (size_t) sprintf(p, "[");
                        for (size_t j = 0; j < batch; j++) {
                                char ts[64];
                                ts_string(ts, sizeof(ts), (double) ref[i + j].t / 60e6);
                                len += (size_t) sprintf(p + len, "%s{\"outage_type\":\"panel_outage\",\"timestamp\":\"%s\"}",
                                                        j ? "," : "", ts);
                        }
                        sprintf(p + len, "]");
                        cr_assert(asprintf(&topic, "chaos/c%02d", k) > 0);
                        topics[nmsg] = topic;
                        payloads[nmsg++] = p;
                        if (random() % 5 == 0) {
                                topics[nmsg] = topic;
                                payloads[nmsg++] = p;
                        }
                        i += batch;
                }
        }
        /* shuffle the messages: arrival order must not matter */
        for (size_t i = nmsg - 1; i > 0; i--) {
                size_t j = (size_t) random() % (i + 1);
                const char *t = topics[i], *p = payloads[i];
                topics[i] = topics[j];
                payloads[i] = payloads[j];
                topics[j] = t;
                payloads[j] = p;
        }

        cr_assert_eq(daemon_prepare(&da, &oa), 0);
        cr_assert_eq(daemon_prepare(&db_, &ob), 0);
        cr_assert_eq(daemon_start(&da), 0);
        cr_assert_eq(daemon_start(&db_), 0);
        cr_assert_eq(daemon_wait_ready(&da, 30000), 0);
        cr_assert_eq(daemon_wait_ready(&db_, 30000), 0);

        Msgs m = { .n = nmsg, .topics = topics, .payloads = payloads };
        pthread_t th;
        pthread_create(&th, NULL, publisher, &m);

        bool overlapped = false;
        for (int round = 0; round < 12; round++) {
                if (round == 4)
                        overlapped = !m.done;
                harness_sleep_ms(800);
                switch (round % 4) {
                case 0:
                        restart(&da, SIGKILL);
                        break;
                case 1:
                        cr_assert_eq(pg_server_pause(&pg), 0);
                        harness_sleep_ms(1500);
                        cr_assert_eq(pg_server_resume(&pg), 0);
                        break;
                case 2:
                        restart(&db_, SIGTERM);
                        break;
                case 3:
                        cr_assert_eq(mqtt_broker_pause(&broker), 0);
                        harness_sleep_ms(1000);
                        cr_assert_eq(mqtt_broker_resume(&broker), 0);
                        break;
                }
        }
        pthread_join(th, NULL);
        cr_assert(!m.failed, "publisher gave up");
        cr_assert(overlapped, "the publisher finished before the faults: nothing was tested");

        /* the reference: spans exact, counts at most the distinct timestamps */
        char *want = reference_text(ref, nref, 12 * 60000000LL);
        static char wkeys[MAXEV][96], gkeys[MAXEV][96];
        static int64_t ws[MAXEV], we[MAXEV], gs[MAXEV], ge[MAXEV];
        static long wc[MAXEV], gc[MAXEV];
        size_t nw = parse_events(strdup(want), wkeys, ws, we, wc, MAXEV), ng = 0;
        bool spans_equal = false;

        for (int waited = 0; waited < 150000 && !spans_equal; waited += 500) {
                char *got = events_text(dbci);

                ng = parse_events(got, gkeys, gs, ge, gc, MAXEV);
                spans_equal = ng == nw;
                for (size_t i = 0; spans_equal && i < nw; i++)
                        spans_equal = strcmp(wkeys[i], gkeys[i]) == 0 && ws[i] == gs[i] && we[i] == ge[i];
                free(got);
                if (!spans_equal)
                        harness_sleep_ms(500);
        }
        cr_assert(spans_equal, "spans differ from the reference (%zu events stored, %zu expected)", ng, nw);
        for (size_t i = 0; i < nw; i++)
                cr_assert(gc[i] >= 1 && gc[i] <= wc[i], "%s %" PRId64 ": count %ld, distinct %ld",
                          wkeys[i], ws[i], gc[i], wc[i]);
        free(want);
        free(dbci);
}
