/* bench_report.c — report_parse_message throughput on typical payloads, one thread, in CPU
 * time (so that other load on the machine distorts it less).
 * Usage: bench_report [seconds per case, default 2] */
#include <stdio.h>
#include <time.h>

#include "report.h"

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void bench(const char *name, const char *payload, const ReportRules *rules, double seconds) {
        const usec_t now = INT64_C(1795773600) * USEC_PER_SEC;
        size_t len = strlen(payload), n = 0;
        double start = now_s(), elapsed;

        do {
                for (int i = 0; i < 1000; i++) {
                        ReportMessage *m = NULL;
                        if (report_parse_message("ctrl_1", payload, len, rules, now, &m) < 0) {
                                fprintf(stderr, "out of memory\n");
                                exit(1);
                        }
                        report_message_free(m);
                }
                n += 1000;
                elapsed = now_s() - start;
        } while (elapsed < seconds);
        printf("%-28s %5zu B  %9.0f msg/s  %6.2f us/msg  %7.1f MB/s\n", name, len, n / elapsed,
               elapsed * 1e6 / n, n * len / elapsed / 1e6);
}

int main(int argc, char **argv) {
        static char *const allowlist[] = { "lamp_outage", "panel_outage", "power_loss" };
        double seconds = argc > 1 ? atof(argv[1]) : 2.0;
        ReportRules rules = {
                .max_payload = 64 * 1024,
                .max_batch_items = 1000,
                .max_future_skew = 5 * USEC_PER_MINUTE,
                .max_age = 365 * USEC_PER_DAY,
        };
        char *batch = NULL;
        size_t n = 0;
        FILE *f;

        if (seconds <= 0)
                seconds = 2.0;
        bench("object, string timestamp", "{\"outage_type\": \"panel_outage\", \"timestamp\": \"2026-11-27T10:00:00Z\"}",
              &rules, seconds);
        bench("object, integer timestamp",
              "{\"outage_type\": \"lamp_outage\", \"timestamp\": 1795773600, \"controller_id\": \"ctrl_1\"}", &rules,
              seconds);
        bench("object, rejected item", "{\"outage_type\": \"Panel\", \"timestamp\": \"2026-11-27T10:00:00Z\"}",
              &rules, seconds);
        bench("malformed", "{\"outage_type\": \"panel_outage\", \"timestamp\": ", &rules, seconds);

        /* a backlog upload: 100 reports in one array */
        f = open_memstream(&batch, &n);
        if (!f)
                return 1;
        fputc('[', f);
        for (int i = 0; i < 100; i++)
                fprintf(f, "%s{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T%02d:%02d:00Z\"}",
                        i ? "," : "", i / 6, i % 6 * 10);
        fputc(']', f);
        fclose(f);
        bench("array of 100", batch, &rules, seconds);
        free(batch);

        rules.outage_types = allowlist;
        rules.n_outage_types = ELEMENTSOF(allowlist);
        bench("object, with allowlist", "{\"outage_type\": \"panel_outage\", \"timestamp\": \"2026-11-27T10:00:00Z\"}",
              &rules, seconds);
        return 0;
}
