/* test_live.c — unit tests of daemon/live.c with a fake ingest_publish defined here: only
 * the latest event of a key is announced, the newest state replaces one still waiting, a
 * close follows once end + gap has passed, and nothing is lost while the broker is away. */
#include <criterion/criterion.h>
#include <stdio.h>

#include "live.h"

#define GAP (12 * USEC_PER_MINUTE)
#define T0 ((usec_t) 1795773600 * USEC_PER_SEC)         /* 2026-11-27T10:00:00Z */

static char sent_topic[16][256], sent_msg[16][512];
static int n_sent;
static int publish_result;

int ingest_publish(Ingest *i, const char *topic, const char *payload, bool retained) {
        cr_assert(retained, "live event messages are retained");
        if (publish_result < 0)
                return publish_result;
        cr_assert_lt(n_sent, 16);
        snprintf(sent_topic[n_sent], sizeof(sent_topic[0]), "%s", topic);
        snprintf(sent_msg[n_sent], sizeof(sent_msg[0]), "%s", payload);
        n_sent++;
        return 0;
}

static Ingest *const fake = (Ingest *) 1;
static Live *l;

static void setup(void) {
        n_sent = 0;
        publish_result = 0;
        cr_assert_eq(live_new("outaged/events", GAP, 100, &l), 0);
}

static void teardown(void) {
        l = live_free(l);
}

TestSuite(live, .init = setup, .fini = teardown);

static StoreEvent ev(int64_t id, const char *c, usec_t start, usec_t end, uint64_t n, bool latest) {
        return (StoreEvent) {
                .event_id = id, .controller_id = c, .outage_type = "panel_outage",
                .start = start, .end = end, .report_count = n, .latest = latest,
        };
}

Test(live, format_is_the_spec_message) {
        StoreEvent e = ev(7, "ctrl_1", T0, T0 + 20 * USEC_PER_MINUTE + 250000, 3, true);
        char buf[512];

        cr_assert_gt(live_format(&e, false, buf, sizeof(buf)), 0);
        cr_assert_str_eq(buf, "{\"event_id\":7,\"controller_id\":\"ctrl_1\",\"outage_type\":\"panel_outage\","
                              "\"start_time\":\"2026-11-27T10:00:00Z\",\"end_time\":\"2026-11-27T10:20:00.250000Z\","
                              "\"report_count\":3,\"status\":\"open\"}");
        cr_assert_gt(live_format(&e, true, buf, sizeof(buf)), 0);
        cr_assert(strstr(buf, "\"status\":\"closed\"}"));
        cr_assert_eq(live_format(&e, true, buf, 20), -ENOBUFS);
}

Test(live, only_the_latest_event_of_a_key_is_announced) {
        StoreEvent e[2] = { ev(1, "c1", T0, T0, 1, false), ev(2, "c1", T0 + USEC_PER_HOUR, T0 + USEC_PER_HOUR, 1, true) };

        cr_assert_eq(live_committed(l, e, 2, T0), 0);
        cr_assert_eq(live_pending(l), 1);
        cr_assert_eq(live_send(l, fake), 1);
        cr_assert_str_eq(sent_topic[0], "outaged/events/c1/panel_outage");
        cr_assert(strstr(sent_msg[0], "\"event_id\":2,"));
        cr_assert_eq(live_pending(l), 0);
        cr_assert_eq(live_tracked(l), 1);
}

Test(live, newest_state_replaces_one_waiting_and_older_states_are_ignored) {
        StoreEvent a = ev(1, "c1", T0, T0 + 10 * USEC_PER_MINUTE, 2, true);
        StoreEvent b = ev(1, "c1", T0, T0 + 20 * USEC_PER_MINUTE, 3, true);

        cr_assert_eq(live_committed(l, &a, 1, T0), 0);
        cr_assert_eq(live_committed(l, &b, 1, T0), 0);
        cr_assert_eq(live_committed(l, &a, 1, T0), 0);       /* late, from another flush result */
        cr_assert_eq(live_pending(l), 1);
        cr_assert_eq(live_send(l, fake), 1);
        cr_assert(strstr(sent_msg[0], "\"report_count\":3,"), "%s", sent_msg[0]);
}

Test(live, the_broker_away_keeps_the_messages) {
        StoreEvent a = ev(1, "c1", T0, T0, 1, true), b = ev(2, "c2", T0, T0, 1, true);

        cr_assert_eq(live_committed(l, &a, 1, T0), 0);
        cr_assert_eq(live_committed(l, &b, 1, T0), 0);
        publish_result = -ENOTCONN;
        cr_assert_eq(live_send(l, fake), 0);
        cr_assert_eq(live_pending(l), 2);
        publish_result = 0;
        cr_assert_eq(live_send(l, fake), 2);
        cr_assert_str_eq(sent_topic[0], "outaged/events/c1/panel_outage");
        cr_assert_str_eq(sent_topic[1], "outaged/events/c2/panel_outage");
}

Test(live, a_close_is_announced_once_the_gap_has_passed) {
        StoreEvent a = ev(1, "c1", T0, T0 + 10 * USEC_PER_MINUTE, 2, true);

        cr_assert_eq(live_committed(l, &a, 1, T0), 0);
        cr_assert_eq(live_send(l, fake), 1);
        live_tick(l, T0 + 10 * USEC_PER_MINUTE + GAP);  /* end + gap == now: still open */
        cr_assert_eq(live_pending(l), 0);
        live_tick(l, T0 + 10 * USEC_PER_MINUTE + GAP + 1);
        cr_assert_eq(live_pending(l), 1);
        cr_assert_eq(live_send(l, fake), 1);
        cr_assert(strstr(sent_msg[1], "\"status\":\"closed\""), "%s", sent_msg[1]);
        cr_assert(strstr(sent_msg[1], "\"end_time\":\"2026-11-27T10:10:00Z\""), "%s", sent_msg[1]);
        cr_assert_eq(live_tracked(l), 0, "a closed event is forgotten once announced");
        live_tick(l, T0 + USEC_PER_DAY);
        cr_assert_eq(live_pending(l), 0, "announced once");
}

Test(live, a_change_already_closed_is_announced_closed) {
        StoreEvent a = ev(1, "c1", T0 - USEC_PER_DAY, T0 - USEC_PER_DAY, 1, true);

        cr_assert_eq(live_committed(l, &a, 1, T0), 0);
        cr_assert_eq(live_send(l, fake), 1);
        cr_assert(strstr(sent_msg[0], "\"status\":\"closed\""), "%s", sent_msg[0]);
        cr_assert_eq(live_tracked(l), 0);
}

Test(live, bounded_keys) {
        Live *small = NULL;
        StoreEvent a = ev(1, "c1", T0, T0, 1, true), b = ev(2, "c2", T0, T0, 1, true);

        cr_assert_eq(live_new("p", GAP, 1, &small), 0);
        cr_assert_eq(live_committed(small, &a, 1, T0), 0);
        cr_assert_eq(live_committed(small, &b, 1, T0), -ENOMEM);
        cr_assert_eq(live_tracked(small), 1);
        live_free(small);
}

Test(live, many_keys_grow_the_table) {
        Live *big = NULL;
        char id[32];

        cr_assert_eq(live_new("p", GAP, 100000, &big), 0);
        for (int k = 0; k < 5000; k++) {
                StoreEvent e;

                snprintf(id, sizeof(id), "c%d", k);
                e = ev(k, id, T0, T0, 1, true);
                cr_assert_eq(live_committed(big, &e, 1, T0), 0);
        }
        cr_assert_eq(live_tracked(big), 5000);
        cr_assert_eq(live_pending(big), 5000);
        live_tick(big, T0 + USEC_PER_DAY);
        cr_assert_eq(live_pending(big), 5000, "queued once whatever it says");
        live_free(big);
}
