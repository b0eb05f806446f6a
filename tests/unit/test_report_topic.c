/* test_report_topic.c — report_topic_id(): the controller id is the topic level that the
 * filter's single '+' matches; a "$share/G/" prefix on the filter is ignored; anything
 * that does not match level by level is -EINVAL, a level that is no valid controller id
 * -EBADMSG; and report_parse_topic() makes both a bad_controller_id. Pure: no broker. */
#include <criterion/criterion.h>
#include <string.h>

#include "report.h"

/* Runs report_topic_id on a NUL-terminated topic with a 65-byte buffer. */
static int id_of(const char *filter, const char *topic, char *buf) {
        return report_topic_id(filter, topic, strlen(topic), buf, 65);
}

Test(report_topic, plus_at_the_end) {
        char id[65];

        cr_assert_eq(id_of("outages/+", "outages/ctrl_1", id), 6);
        cr_assert_str_eq(id, "ctrl_1");
}

Test(report_topic, plus_at_the_start_and_in_the_middle) {
        char id[65];

        cr_assert_eq(id_of("+/outages", "ctrl_2/outages", id), 6);
        cr_assert_str_eq(id, "ctrl_2");
        cr_assert_eq(id_of("site/a/+/outage", "site/a/lamp-7:x/outage", id), 8);
        cr_assert_str_eq(id, "lamp-7:x");
        cr_assert_eq(id_of("+", "solo", id), 4);
        cr_assert_str_eq(id, "solo");
}

Test(report_topic, share_prefix_is_ignored) {
        char id[65];

        cr_assert_eq(id_of("$share/grp/outages/+", "outages/c9", id), 2);
        cr_assert_str_eq(id, "c9");
        cr_assert_eq(id_of("$share/g/+/x", "c8/x", id), 2);
        cr_assert_str_eq(id, "c8");
        /* a share prefix without a filter after it matches nothing */
        cr_assert_eq(id_of("$share/grp", "grp", id), -EINVAL);
        /* the topic never carries the prefix */
        cr_assert_eq(id_of("$share/grp/outages/+", "$share/grp/outages/c9", id), -EINVAL);
}

Test(report_topic, mismatched_levels) {
        char id[65];

        cr_assert_eq(id_of("outages/+", "outage/c1", id), -EINVAL);
        cr_assert_eq(id_of("outages/+", "outagesx/c1", id), -EINVAL);
        cr_assert_eq(id_of("outages/+", "outages/c1/extra", id), -EINVAL);
        cr_assert_eq(id_of("outages/+", "outages", id), -EINVAL);
        cr_assert_eq(id_of("outages/+/x", "outages/c1", id), -EINVAL);
        cr_assert_eq(id_of("outages/+/x", "outages/c1/y", id), -EINVAL);
        cr_assert_eq(id_of("a/+", "", id), -EINVAL);
        /* case matters in literal levels */
        cr_assert_eq(id_of("outages/+", "Outages/c1", id), -EINVAL);
}

Test(report_topic, empty_levels) {
        char id[65];

        /* the '+' level matches an empty level, which is no valid controller id */
        cr_assert_eq(id_of("outages/+", "outages/", id), -EBADMSG);
        cr_assert_eq(id_of("+/x", "/x", id), -EBADMSG);
        cr_assert_eq(id_of("+", "", id), -EBADMSG);
        /* an empty literal level matches an empty level only */
        cr_assert_eq(id_of("a//+", "a//c1", id), 2);
        cr_assert_str_eq(id, "c1");
        cr_assert_eq(id_of("a//+", "a/b/c1", id), -EINVAL);
        /* a trailing slash is one more (empty) level */
        cr_assert_eq(id_of("outages/+", "outages/c1/", id), -EINVAL);
}

Test(report_topic, topic_length_is_respected) {
        char id[65];

        /* topic_len cuts the topic: the bytes after it are not part of it */
        cr_assert_eq(report_topic_id("outages/+", "outages/c1/more", 10, id, sizeof(id)), 2);
        cr_assert_str_eq(id, "c1");
        /* a NUL inside the matched level is refused */
        cr_assert_eq(report_topic_id("outages/+", "outages/c\0d", 11, id, sizeof(id)), -EBADMSG);
        /* a NUL in a literal level does not match */
        cr_assert_eq(report_topic_id("outages/+", "outa\0es/c1", 11, id, sizeof(id)), -EINVAL);
}

Test(report_topic, level_too_long_for_the_buffer) {
        char topic[200], id[65], small[4];

        memcpy(topic, "outages/", 8);
        memset(topic + 8, 'a', 64);
        topic[72] = '\0';
        cr_assert_eq(id_of("outages/+", topic, id), 64);
        cr_assert_eq(strlen(id), 64);
        topic[72] = 'a';
        topic[73] = '\0';
        cr_assert_eq(id_of("outages/+", topic, id), -EBADMSG, "65 bytes fail the pattern");

        cr_assert_eq(report_topic_id("outages/+", "outages/abc", 11, small, sizeof(small)), 3);
        cr_assert_str_eq(small, "abc");
        memcpy(small, "xyz", 4);
        cr_assert_eq(report_topic_id("outages/+", "outages/abcd", 12, small, sizeof(small)), -ENOBUFS);
        cr_assert_str_eq(small, "xyz", "untouched on failure");
        cr_assert_eq(report_topic_id("outages/+", "outages/a", 9, small, 0), -ENOBUFS);
}

Test(report_topic, failure_leaves_no_partial_id_claim) {
        char id[65];

        /* the '+' matched before the mismatch: still a failure as a whole */
        cr_assert_eq(id_of("+/outages", "c1/other", id), -EINVAL);
        cr_assert_eq(id_of("+/outages", "c1", id), -EINVAL);
}

Test(report_topic, id_must_match_the_pattern) {
        char id[65] = "untouched";

        cr_assert_eq(id_of("outages/+", "outages/ctrl_1", id), 6);
        cr_assert_eq(id_of("outages/+", "outages/9a.b:c-d_E", id), 10);
        cr_assert_str_eq(id, "9a.b:c-d_E");
        strcpy(id, "untouched");
        cr_assert_eq(id_of("outages/+", "outages/_ctrl", id), -EBADMSG);
        cr_assert_eq(id_of("outages/+", "outages/.ctrl", id), -EBADMSG);
        cr_assert_eq(id_of("outages/+", "outages/ctrl 1", id), -EBADMSG);
        cr_assert_eq(id_of("outages/+", "outages/ctrl+", id), -EBADMSG);
        cr_assert_eq(id_of("outages/+", "outages/ctrl#", id), -EBADMSG);
        cr_assert_eq(id_of("outages/+", "outages/ctrl\xc3\xa9", id), -EBADMSG);
        cr_assert_eq(id_of("+/x", "-a/x", id), -EBADMSG);
        cr_assert_str_eq(id, "untouched");
}

Test(report_topic, filter_needs_exactly_one_plus) {
        char id[65];

        cr_assert_eq(id_of("outages/x", "outages/x", id), -EINVAL, "no '+'");
        cr_assert_eq(id_of("+/+", "a/b", id), -EINVAL, "two '+'");
        cr_assert_eq(id_of("outages/a+", "outages/a+", id), -EINVAL, "'+' not a whole level");
        cr_assert_eq(report_topic_id(NULL, "a", 1, id, sizeof(id)), -EINVAL);
        cr_assert_eq(report_topic_id("+", NULL, 0, id, sizeof(id)), -EBADMSG, "NULL topic is empty");
}

static const ReportRules rules = {
        .max_payload = 4096,
        .max_batch_items = 10,
        .max_future_skew = 5 * USEC_PER_MINUTE,
        .max_age = 365 * USEC_PER_DAY,
};

#define NOW (INT64_C(1795773600) * USEC_PER_SEC)
#define GOOD "{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:00:00Z\"}"

static ReportMessage *parse_topic(const char *filter, const char *topic) {
        ReportMessage *m = NULL;

        cr_assert_eq(report_parse_topic(filter, topic, strlen(topic), GOOD, strlen(GOOD), &rules, NOW, &m), 0);
        cr_assert_not_null(m);
        return m;
}

Test(report_topic, parse_topic_finds_the_id) {
        ReportMessage *m = parse_topic("$share/g/outages/+", "outages/ctrl_1");

        cr_assert(m->controller_valid);
        cr_assert_str_eq(m->controller_id, "ctrl_1");
        cr_assert_eq(m->reason, REJECT_NONE);
        cr_assert_eq(m->n_items, 1);
        cr_assert_eq(m->items[0].reason, REJECT_NONE);
        report_message_free(m);
}

Test(report_topic, parse_topic_bad_ids_are_rejects) {
        static const char *const topics[] = { "elsewhere/ctrl_1", "outages/_bad", "outages/", "outages/a/b" };

        for (size_t i = 0; i < ELEMENTSOF(topics); i++) {
                ReportMessage *m = parse_topic("outages/+", topics[i]);

                cr_assert_not(m->controller_valid, "%s", topics[i]);
                cr_assert_eq(m->reason, REJECT_BAD_CONTROLLER_ID, "%s", topics[i]);
                cr_assert_str_eq(m->payload, GOOD);
                cr_assert_eq(m->n_items, 0);
                report_message_free(m);
        }
}
