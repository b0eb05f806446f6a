/* bench_agg.c — throughput and memory of the aggregation core (daemon/agg.c), no I/O:
 * steady state (N keys each reporting every 10 minutes of simulated time, one flush and one
 * eviction pass per simulated second, some outages ending and new ones starting), a backlog
 * (controllers uploading a day of reports at once), and bytes per open event.
 * Usage: bench_agg [keys (default 1000000)] [simulated minutes (default 60)]
 *        bench_agg late [reports (default 200000)]: late reports into one span
 *        bench_agg memory [keys (default 1000000)]: RSS per open event, one key per event
 *        bench_agg memory-late [keys]: the same with one report per key, older than the
 *          knowledge horizon (a backlog drained after a restart), added before any flush
 * Run one mode per process: RSS only grows, so each figure needs a fresh process. */

#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <time.h>

#include "agg.h"

#define GAP (12 * USEC_PER_MINUTE)
#define PERIOD (10 * USEC_PER_MINUTE)
#define T0 ((usec_t) 20784 * USEC_PER_DAY)

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long rss_bytes(void) {
        long size = 0, resident = 0;
        FILE *f = fopen("/proc/self/statm", "re");

        if (!f)
                return 0;
        if (fscanf(f, "%ld %ld", &size, &resident) != 2)
                resident = 0;
        fclose(f);
        return resident * sysconf(_SC_PAGESIZE);
}

static char **make_ids(size_t n) {
        char **ids = calloc(n, sizeof(char *));

        for (size_t i = 0; ids && i < n; i++) {
                ids[i] = malloc(32);
                if (!ids[i])
                        abort();
                snprintf(ids[i], 32, "ctrl_%07zu", i);
        }
        if (!ids)
                abort();
        return ids;
}

static Agg *new_agg(usec_t horizon) {
        AggConfig cfg = { .gap = GAP, .max_events = 0, .hash_seed = 0x5eed };
        Agg *a = NULL;

        if (agg_new(&cfg, horizon, &a) < 0)
                abort();
        return a;
}

static void flush(Agg *a) {
        FlushBatch *b = NULL;

        if (agg_flush_begin(a, 0, &b) < 0)
                abort();
        agg_flush_end(a, b, true);
}

/* Flushes everything in batches of at most BATCH_MAX fragments, as the daemon does
 * (aggregation.batch_max, default 10,000). */
#define BATCH_MAX 10000
static void flush_batched(Agg *a) {
        for (;;) {
                FlushBatch *b = NULL;
                bool complete;

                if (agg_flush_begin(a, BATCH_MAX, &b) < 0)
                        abort();
                complete = b->complete;
                agg_flush_end(a, b, true);
                if (complete)
                        return;
        }
}

/* Key k reports at T0 + phase(k) + i * PERIOD, except in every 7th cycle (shifted per key),
 * so that its event ends, is evicted, and a new one starts 20 minutes later. */
static void steady_state(size_t n, int minutes) {
        char **ids = make_ids(n);
        Agg *a = new_agg(T0 - GAP);
        double t_add = 0, t_flush = 0, t_evict = 0, t_evict_max = 0, t_all;
        uint64_t adds = 0, adds_measured = 0, evictions = 0;
        usec_t end = T0 + minutes * USEC_PER_MINUTE;
        size_t cursor = 0;
        AggStats st;
        double t0 = now_s();

        for (usec_t now = T0 + USEC_PER_SEC; now <= end; now += USEC_PER_SEC) {
                /* keys whose next report falls in (now - 1s, now] */
                size_t per_second = n / (PERIOD / USEC_PER_SEC) + 1;
                bool warm = now > T0 + PERIOD;
                double t1 = now_s(), t2, t3, t4;

                for (size_t j = 0; j < per_second; j++, cursor++) {
                        size_t k = cursor % n;
                        uint64_t cycle = cursor / n;

                        if ((cycle + k) % 7 == 0)
                                continue;
                        if (agg_add(a, ids[k], "panel_outage", now) < 0)
                                abort();
                        adds++;
                        adds_measured += warm;
                }
                t2 = now_s();
                flush(a);
                t3 = now_s();
                int r = agg_evict_closed(a, now);
                t4 = now_s();
                if (r < 0)
                        abort();
                evictions += r;
                if (warm) {
                        t_add += t2 - t1;
                        t_flush += t3 - t2;
                        t_evict += t4 - t3;
                        if (t4 - t3 > t_evict_max)
                                t_evict_max = t4 - t3;
                }
        }
        t_all = now_s() - t0;
        agg_stats(a, end, &st);

        printf("steady state: %zu keys, %d simulated minutes, %" PRIu64 " reports, %" PRIu64 " evictions\n",
               n, minutes, adds, evictions);
        printf("  agg_add:                  %.0f reports/s (%.0f ns/report)\n",
               adds_measured / t_add, t_add / adds_measured * 1e9);
        printf("  add+flush+evict:          %.0f reports/s (flush %.0f ns/report, evict pass %.1f us avg, %.1f us max)\n",
               adds_measured / (t_add + t_flush + t_evict), t_flush / adds_measured * 1e9,
               t_evict / ((minutes - 10) * 60) * 1e6, t_evict_max * 1e6);
        printf("  whole run:                %.2f s\n", t_all);
        printf("  held: %" PRIu64 " keys, %" PRIu64 " spans, %" PRIu64 " open, %" PRIu64 " strings\n",
               st.keys, st.spans, st.open_spans, st.strings);
        printf("  bytes/open event:         %.1f total, %.1f beyond interned strings (agg_stats)\n",
               (double) st.bytes / st.open_spans, (double) (st.bytes - st.string_bytes) / st.open_spans);
        double t5 = now_s();
        for (int i = 0; i < 10; i++)
                agg_stats(a, end, &st);
        printf("  agg_stats:                %.2f ms per call\n", (now_s() - t5) / 10 * 1e3);

        agg_free(a);
        for (size_t i = 0; i < n; i++)
                free(ids[i]);
        free(ids);
}

/* Memory at n open events, each a new controller with one span: every key reports twice
 * (one event each, extended once), with a flush after each round in batches of BATCH_MAX,
 * as in steady state. With late, each key reports once, before the horizon (its timestamp
 * goes to the store as uncertain), all keys before the first flush, as a daemon draining a
 * backlog after a restart applies them while its flushes lag behind. RSS growth is measured from /proc/self/statm around it (the ids to report are made before);
 * "beyond the ids" takes off the ids' own characters (strlen + 1 each), which any layout
 * must hold. */
static void memory(size_t n, bool late) {
        char **ids = make_ids(n);
        size_t id_chars = 0;
        long rss0, rss;
        AggStats st;
        Agg *a;

        for (size_t k = 0; k < n; k++)
                id_chars += strlen(ids[k]) + 1;
        rss0 = rss_bytes();
        a = new_agg(late ? T0 + PERIOD : T0 - GAP);
        for (int round = 0; round < (late ? 1 : 2); round++) {
                for (size_t k = 0; k < n; k++)
                        if (agg_add(a, ids[k], "panel_outage", T0 + round * PERIOD) < 0)
                                abort();
                flush_batched(a);
        }
        agg_stats(a, T0 + PERIOD, &st);
        rss = rss_bytes() - rss0;
        printf("memory at %" PRIu64 " open events (one new controller each, one span each%s):\n", st.open_spans,
               late ? ", one report each older than the horizon" : "");
        printf("  RSS growth:   %.1f MiB, %.1f bytes/event, %.1f beyond the ids' characters (%.1f bytes/id)\n",
               rss / 1048576.0, (double) rss / n, (double) (rss - (long) id_chars) / n, (double) id_chars / n);
        printf("  agg_stats:    %.1f MiB, %.1f bytes/event, %.1f beyond the ids' characters; "
               "strings and their table %.1f bytes/event\n",
               st.bytes / 1048576.0, (double) st.bytes / n, (double) (st.bytes - id_chars) / n,
               (double) st.string_bytes / n);
        agg_free(a);
        for (size_t i = 0; i < n; i++)
                free(ids[i]);
        free(ids);
}

/* n_keys controllers each upload a day of reports (144, every 10 min) in one go, in time
 * order; the main loop flushes every 10,000 reports (batch_max). */
static void backlog(size_t n_keys) {
        char **ids = make_ids(n_keys);
        Agg *a = new_agg(T0 - GAP);
        uint64_t adds = 0;
        double t0 = now_s(), t;

        for (size_t k = 0; k < n_keys; k++)
                for (int i = 0; i < 144; i++) {
                        if (agg_add(a, ids[k], "lamp_outage", T0 + i * PERIOD) < 0)
                                abort();
                        if (++adds % 10000 == 0)
                                flush(a);
                }
        flush(a);
        t = now_s() - t0;
        printf("backlog: %zu keys x 144 reports: %.0f reports/s (flushes included)\n", n_keys, adds / t);
        agg_free(a);
        for (size_t i = 0; i < n_keys; i++)
                free(ids[i]);
        free(ids);
}

/* n reports of one controller, all older than the knowledge horizon (a backlog uploaded
 * long after the events were evicted, or a warm start that did not fit), each 10 min after
 * the previous one, so that they form one span; ascending or descending in time. Flushes
 * (committed at once) whenever the Agg asks for one, as the main loop does. */
static void late_one(size_t n, bool descending) {
        Agg *a = new_agg(T0 + (usec_t) n * PERIOD + USEC_PER_DAY);
        long rss0 = rss_bytes(), rss;
        uint64_t max_bytes = 0, flushes = 0;
        double t0 = now_s(), t;
        AggStats st;

        for (size_t i = 0; i < n; i++) {
                usec_t ts = T0 + (usec_t) (descending ? n - 1 - i : i) * PERIOD;

                if (agg_add(a, "ctrl_1", "panel_outage", ts) != 1)
                        abort();
                if (agg_flush_wanted(a)) {
                        agg_stats(a, ts, &st);
                        if (st.bytes > max_bytes)
                                max_bytes = st.bytes;
                        flush(a);
                        flushes++;
                }
                if (i % 1024 == 0 || i == n - 1) {
                        agg_stats(a, ts, &st);
                        if (st.bytes > max_bytes)
                                max_bytes = st.bytes;
                }
        }
        t = now_s() - t0;
        rss = rss_bytes() - rss0;
        agg_stats(a, T0, &st);
        printf("late, %s: %zu reports into one span: %.3f s (%.0f reports/s); %" PRIu64 " spans; "
               "%" PRIu64 " flushes asked for; agg_stats bytes max %.1f MiB; RSS growth %.1f MiB\n",
               descending ? "descending" : "ascending", n, t, n / t, st.spans, flushes,
               max_bytes / 1048576.0, rss / 1048576.0);
        t0 = now_s();
        flush(a);
        printf("  last flush of the span: %.3f s\n", now_s() - t0);
        agg_free(a);
}

int main(int argc, char *argv[]) {
        size_t n;
        int minutes;

        (void) mallopt(M_MMAP_THRESHOLD, 128 * 1024);   /* as the daemon (main.c) */
        if (argc > 1 && streq(argv[1], "late")) {
                n = argc > 2 ? strtoull(argv[2], NULL, 10) : 200000;
                if (n == 0)
                        return 64;
                late_one(n, false);
                late_one(n, true);
                return 0;
        }
        if (argc > 1 && (streq(argv[1], "memory") || streq(argv[1], "memory-late"))) {
                n = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
                if (n == 0)
                        return 64;
                memory(n, streq(argv[1], "memory-late"));
                return 0;
        }
        n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
        minutes = argc > 2 ? atoi(argv[2]) : 60;

        if (n == 0 || minutes <= 10) {
                fprintf(stderr, "usage: %s [keys] [simulated minutes > 10]\n", argv[0]);
                return 64;
        }
        memory(n, false);
        steady_state(n, minutes);
        backlog(n / 10 ? n / 10 : 1);
        return 0;
}
