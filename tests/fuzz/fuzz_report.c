/* fuzz_report.c — libFuzzer target for report.c: any bytes as a payload (fixed rules and
 * clock) and as a timestamp string. Checks the contract, not just the absence of crashes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"
#include "text.h"

#define NOW (INT64_C(1795773600) * USEC_PER_SEC)       /* 2026-11-27T10:00:00Z */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *const outage_types[] = { "a", "lamp_outage", "panel_outage" };

static const ReportRules rules_any = {
        .max_payload = 64 * 1024,
        .max_batch_items = 1000,
        .max_future_skew = 5 * USEC_PER_MINUTE,
        .max_age = 365 * USEC_PER_DAY,
};

static const ReportRules rules_allowlist = {
        .max_payload = 512,
        .max_batch_items = 4,
        .max_future_skew = 0,
        .max_age = 0,
        .outage_types = outage_types,
        .n_outage_types = ELEMENTSOF(outage_types),
};

static void check_escaped(const char *s) {
        /* at most 1 KiB of input, each byte growing to at most 4 */
        if (!s || strlen(s) > 4 * REPORT_REJECT_PAYLOAD_MAX)
                abort();
}

/* A reject says why; a valid report or message has no detail. Either way the detail is
 * UTF-8 without NUL inside its array. */
static void check_detail(const char *detail, bool reject) {
        size_t len = strnlen(detail, REPORT_DETAIL_MAX);

        if (len >= REPORT_DETAIL_MAX || (len > 0) != reject || !text_utf8_valid(detail, len))
                abort();
}

/* The flat path (a plain object read without json-c) only ever accepts, and accepts what
 * json-c accepts: the same object as the one item of an array (which always goes through
 * json-c) gives the same report. */
static void check_flat(const uint8_t *data, size_t size, const ReportRules *rules, const ReportMessage *m) {
        ReportMessage *w = NULL;
        char *wrapped;

        if (m->reason != REJECT_NONE || m->n_items != 1 || m->items[0].reason != REJECT_NONE)
                abort();
        if (size + 2 > rules->max_payload)
                return;
        wrapped = malloc(size + 2);
        if (!wrapped)
                return;
        wrapped[0] = '[';
        memcpy(wrapped + 1, data, size);
        wrapped[size + 1] = ']';
        if (report_parse_message("ctrl_1", wrapped, size + 2, rules, NOW, &w) >= 0) {
                if (w->reason != REJECT_NONE || w->n_items != 1 || w->items[0].reason != REJECT_NONE ||
                    !streq(w->items[0].outage_type, m->items[0].outage_type) ||
                    w->items[0].timestamp != m->items[0].timestamp)
                        abort();
                report_message_free(w);
        }
        free(wrapped);
}

static void check(const uint8_t *data, size_t size, const ReportRules *rules) {
        ReportMessage *m = NULL;
        uint64_t flat = report_flat_count();

        if (report_parse_message("ctrl_1", data, size, rules, NOW, &m) < 0)
                return;         /* ENOMEM only */
        if (report_flat_count() != flat)
                check_flat(data, size, rules, m);
        if (!m || !m->controller_valid || !streq(m->controller_id, "ctrl_1"))
                abort();
        check_detail(m->detail, m->reason != REJECT_NONE);
        if (m->reason != REJECT_NONE) {
                if (m->n_items != 0 || m->reason > REJECT_BATCH_TOO_LARGE)
                        abort();
                check_escaped(m->payload);
        } else {
                if (m->n_items == 0 || m->n_items > rules->max_batch_items || m->payload)
                        abort();
        }
        for (size_t i = 0; i < m->n_items; i++) {
                const ReportItem *it = &m->items[i];
                check_detail(it->detail, it->reason != REJECT_NONE);
                if (it->reason == REJECT_NONE) {
                        if (it->payload || !text_outage_type_valid(it->outage_type) ||
                            it->timestamp > NOW + rules->max_future_skew ||
                            (rules->max_age > 0 && it->timestamp < NOW - rules->max_age))
                                abort();
                } else {
                        if (it->reason < REJECT_NOT_A_REPORT || it->reason == REJECT_BATCH_TOO_LARGE ||
                            it->reason >= _REJECT_REASON_MAX)
                                abort();
                        check_escaped(it->payload);
                }
        }
        report_message_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        usec_t t;
        char *s;

        check(data, size, &rules_any);
        check(data, size, &rules_allowlist);

        if (report_parse_timestamp((const char *) data, size, &t) == 0) {
                /* every accepted timestamp lies in years 0000-9999, give or take a day */
                if (t < INT64_C(-62167219200) * USEC_PER_SEC - USEC_PER_DAY ||
                    t > (TIMESTAMP_UNIX_SECONDS_MAX + 1) * USEC_PER_SEC + USEC_PER_DAY)
                        abort();
        }

        s = text_escape(data, size, size);
        if (s) {
                /* escaping is idempotent: the output is valid UTF-8 without NUL */
                char *again = text_escape(s, strlen(s), SIZE_MAX);
                if (again && !streq(again, s))
                        abort();
                free(again);
                free(s);
        }
        return 0;
}
