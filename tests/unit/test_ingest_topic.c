/* test_ingest_topic.c — ingest_topic_id(): the controller id is the topic level that the
 * filter's single '+' matches; a "$share/G/" prefix on the filter is ignored; anything
 * that does not match level by level is -EINVAL. Pure: no broker. */
#include <criterion/criterion.h>
#include <string.h>

#include "ingest.h"

/* Runs ingest_topic_id on a NUL-terminated topic with a 65-byte buffer. */
static int id_of(const char *filter, const char *topic, char *buf) {
        return ingest_topic_id(filter, topic, strlen(topic), buf, 65);
}

Test(ingest_topic, plus_at_the_end) {
        char id[65];

        cr_assert_eq(id_of("outages/+", "outages/ctrl_1", id), 6);
        cr_assert_str_eq(id, "ctrl_1");
}

Test(ingest_topic, plus_at_the_start_and_in_the_middle) {
        char id[65];

        cr_assert_eq(id_of("+/outages", "ctrl_2/outages", id), 6);
        cr_assert_str_eq(id, "ctrl_2");
        cr_assert_eq(id_of("site/a/+/outage", "site/a/lamp-7:x/outage", id), 8);
        cr_assert_str_eq(id, "lamp-7:x");
        cr_assert_eq(id_of("+", "solo", id), 4);
        cr_assert_str_eq(id, "solo");
}

Test(ingest_topic, share_prefix_is_ignored) {
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

Test(ingest_topic, mismatched_levels) {
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

Test(ingest_topic, empty_levels) {
        char id[65];

        /* the '+' level must not be empty */
        cr_assert_eq(id_of("outages/+", "outages/", id), -EINVAL);
        cr_assert_eq(id_of("+/x", "/x", id), -EINVAL);
        cr_assert_eq(id_of("+", "", id), -EINVAL);
        /* an empty literal level matches an empty level only */
        cr_assert_eq(id_of("a//+", "a//c1", id), 2);
        cr_assert_str_eq(id, "c1");
        cr_assert_eq(id_of("a//+", "a/b/c1", id), -EINVAL);
        /* a trailing slash is one more (empty) level */
        cr_assert_eq(id_of("outages/+", "outages/c1/", id), -EINVAL);
}

Test(ingest_topic, topic_length_is_respected) {
        char id[65];

        /* topic_len cuts the topic: the bytes after it are not part of it */
        cr_assert_eq(ingest_topic_id("outages/+", "outages/c1/more", 10, id, sizeof(id)), 2);
        cr_assert_str_eq(id, "c1");
        /* a NUL inside the matched level is refused */
        cr_assert_eq(ingest_topic_id("outages/+", "outages/c\0d", 11, id, sizeof(id)), -EINVAL);
}

Test(ingest_topic, level_too_long_for_the_buffer) {
        char topic[200], id[65], small[4];

        memcpy(topic, "outages/", 8);
        memset(topic + 8, 'a', 64);
        topic[72] = '\0';
        cr_assert_eq(id_of("outages/+", topic, id), 64);
        cr_assert_eq(strlen(id), 64);
        topic[72] = 'a';
        topic[73] = '\0';
        cr_assert_eq(id_of("outages/+", topic, id), -EINVAL);

        cr_assert_eq(ingest_topic_id("outages/+", "outages/abc", 11, small, sizeof(small)), 3);
        cr_assert_str_eq(small, "abc");
        cr_assert_eq(ingest_topic_id("outages/+", "outages/abcd", 12, small, sizeof(small)), -EINVAL);
        cr_assert_eq(ingest_topic_id("outages/+", "outages/a", 9, small, 0), -EINVAL);
}

Test(ingest_topic, failure_leaves_no_partial_id_claim) {
        char id[65];

        /* the '+' matched before the mismatch: still a failure as a whole */
        cr_assert_eq(id_of("+/outages", "c1/other", id), -EINVAL);
        cr_assert_eq(id_of("+/outages", "c1", id), -EINVAL);
}
