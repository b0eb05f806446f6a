/* test_report.c — payload validation (SPEC section 2): every reject reason, the order in which
 * they are checked, batches, limits, and how reject payloads are cut and escaped. */
#include <stdio.h>

#include <criterion/criterion.h>

#include "report.h"

#define S USEC_PER_SEC
#define T10 (INT64_C(1795773600) * USEC_PER_SEC)   /* 2026-11-27T10:00:00Z */
#define NOW T10
#define TS "\"2026-11-27T10:00:00Z\""

static const ReportRules rules = {
        .max_payload = 4096,
        .max_batch_items = 10,
        .max_future_skew = 5 * USEC_PER_MINUTE,
        .max_age = 365 * USEC_PER_DAY,
};

static ReportMessage *parse_rules(const char *topic, const void *buf, size_t len, const ReportRules *r) {
        ReportMessage *m = NULL;

        cr_assert_eq(report_parse_message(topic, buf, len, r, NOW, &m), 0);
        cr_assert_not_null(m);
        return m;
}

static ReportMessage *parse(const char *json) {
        return parse_rules("ctrl_1", json, strlen(json), &rules);
}

/* The message-level reason of json. */
static RejectReason msg_reason(const char *json) {
        ReportMessage *m = parse(json);
        RejectReason r = m->reason;

        if (r != REJECT_NONE) {
                cr_assert_not_null(m->payload);
                cr_assert_eq(m->n_items, 0);
        }
        report_message_free(m);
        return r;
}

/* The reason of the only item of json under rules r; the message itself must pass. */
static RejectReason item_reason_rules(const char *json, const ReportRules *r) {
        ReportMessage *m = parse_rules("ctrl_1", json, strlen(json), r);
        RejectReason reason;

        cr_assert_eq(m->reason, REJECT_NONE, "message rejected (%s): %s",
                     reject_reason_to_string(m->reason), json);
        cr_assert_eq(m->n_items, 1);
        reason = m->items[0].reason;
        cr_assert_eq(reason == REJECT_NONE, m->items[0].payload == NULL);
        report_message_free(m);
        return reason;
}

static RejectReason item_reason(const char *json) {
        return item_reason_rules(json, &rules);
}

#define assert_msg(json, reason) \
        cr_assert_eq(msg_reason(json), reason, "%s: got %s", json, reject_reason_to_string(msg_reason(json)))
#define assert_item(json, reason) \
        cr_assert_eq(item_reason(json), reason, "%s: got %s", json, reject_reason_to_string(item_reason(json)))

static char *repeat(const char *a, size_t n) {
        size_t k = strlen(a);
        char *s = malloc(k * n + 1);

        cr_assert_not_null(s);
        for (size_t i = 0; i < n; i++)
                memcpy(s + i * k, a, k);
        s[k * n] = '\0';
        return s;
}

/* ---- names ---------------------------------------------------------------------------- */

Test(report, reason_names) {
        static const char *const names[] = {
                NULL, "bad_controller_id", "payload_too_large", "malformed_json", "not_a_report",
                "batch_too_large", "missing_field", "bad_field_type", "bad_outage_type",
                "unknown_outage_type", "bad_timestamp", "timestamp_out_of_range", "controller_mismatch",
        };

        cr_assert_eq(ELEMENTSOF(names), _REJECT_REASON_MAX);
        for (int i = 1; i < _REJECT_REASON_MAX; i++)
                cr_assert_str_eq(reject_reason_to_string(i), names[i]);
        cr_assert_null(reject_reason_to_string(REJECT_NONE));
        cr_assert_null(reject_reason_to_string(_REJECT_REASON_MAX));
        cr_assert_null(reject_reason_to_string(_REJECT_REASON_INVALID));
}

/* ---- valid reports -------------------------------------------------------------------- */

Test(report, spec_object) {
        ReportMessage *m = parse("{\"outage_type\": \"panel_outage\", \"timestamp\": \"2026-11-27T10:00:00Z\"}");

        cr_assert(m->controller_valid);
        cr_assert_str_eq(m->controller_id, "ctrl_1");
        cr_assert_eq(m->reason, REJECT_NONE);
        cr_assert_null(m->payload);
        cr_assert_eq(m->n_items, 1);
        cr_assert_eq(m->items[0].reason, REJECT_NONE);
        cr_assert_str_eq(m->items[0].outage_type, "panel_outage");
        cr_assert_eq(m->items[0].timestamp, T10);
        cr_assert_null(m->items[0].payload);
        report_message_free(m);
}

Test(report, spec_batch) {
        ReportMessage *m = parse(
                "[{\"outage_type\": \"panel_outage\", \"timestamp\": \"2026-11-27T09:50:00.250+01:00\"},\n"
                " {\"outage_type\": \"lamp_outage\",  \"timestamp\": 1795773600, \"controller_id\": \"ctrl_1\"}]");

        cr_assert_eq(m->reason, REJECT_NONE);
        cr_assert_eq(m->n_items, 2);
        cr_assert_eq(m->items[0].reason, REJECT_NONE);
        cr_assert_str_eq(m->items[0].outage_type, "panel_outage");
        cr_assert_eq(m->items[0].timestamp, INT64_C(1795769400) * S + 250000);
        cr_assert_eq(m->items[1].reason, REJECT_NONE);
        cr_assert_str_eq(m->items[1].outage_type, "lamp_outage");
        cr_assert_eq(m->items[1].timestamp, T10);
        report_message_free(m);
}

Test(report, other_fields_ignored) {
        assert_item("{\"outage_type\":\"lamp_outage\",\"timestamp\":" TS ",\"fw\":\"1.2\",\"extra\":"
                    "{\"a\":[1,2.5,null,true,\"\\u0000\"]},\"timestamp2\":1.5}", REJECT_NONE);
        /* a duplicate key: the last one counts, as in json-c */
        assert_item("{\"outage_type\":\"Bad\",\"outage_type\":\"lamp_outage\",\"timestamp\":" TS "}",
                    REJECT_NONE);
        /* whitespace around the value is JSON */
        assert_item(" \r\n\t{\"outage_type\":\"a\",\"timestamp\":" TS "} \n", REJECT_NONE);
}

Test(report, controller_id_field) {
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_1\"}", REJECT_NONE);
        /* null is treated like an absent field, as for the required ones */
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":null}", REJECT_NONE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_2\"}",
                    REJECT_CONTROLLER_MISMATCH);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"CTRL_1\"}",
                    REJECT_CONTROLLER_MISMATCH);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_1\\u0000\"}",
                    REJECT_CONTROLLER_MISMATCH);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_\"}",
                    REJECT_CONTROLLER_MISMATCH);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"\"}",
                    REJECT_CONTROLLER_MISMATCH);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":1}", REJECT_BAD_FIELD_TYPE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":[\"ctrl_1\"]}",
                    REJECT_BAD_FIELD_TYPE);
}

/* ---- message level -------------------------------------------------------------------- */

Test(report, bad_controller_id) {
        static const char *const topics[] = { "", "_x", "a b", "ctrl/1", "+", "#", "ctrl\xff" };
        const char *json = "{\"outage_type\":\"a\",\"timestamp\":" TS "}";
        char *long_id = repeat("c", 65);
        ReportMessage *m;

        m = parse_rules(NULL, json, strlen(json), &rules);
        cr_assert_not(m->controller_valid);
        cr_assert_eq(m->reason, REJECT_BAD_CONTROLLER_ID);
        cr_assert_str_eq(m->payload, json);
        cr_assert_eq(m->n_items, 0);
        cr_assert_null(m->items);
        report_message_free(m);

        for (size_t i = 0; i < ELEMENTSOF(topics); i++) {
                m = parse_rules(topics[i], json, strlen(json), &rules);
                cr_assert_eq(m->reason, REJECT_BAD_CONTROLLER_ID, "%s", topics[i]);
                cr_assert_not(m->controller_valid);
                report_message_free(m);
        }
        m = parse_rules(long_id, json, strlen(json), &rules);
        cr_assert_eq(m->reason, REJECT_BAD_CONTROLLER_ID);
        report_message_free(m);

        long_id[64] = '\0';
        m = parse_rules(long_id, json, strlen(json), &rules);
        cr_assert_eq(m->reason, REJECT_NONE);
        cr_assert(m->controller_valid);
        cr_assert_str_eq(m->controller_id, long_id);
        report_message_free(m);
        free(long_id);
}

Test(report, bad_controller_id_comes_first) {
        char *big = repeat("x", 5000);
        ReportMessage *m = parse_rules("bad id", big, strlen(big), &rules);

        /* too large and malformed, but the topic is checked first */
        cr_assert_eq(m->reason, REJECT_BAD_CONTROLLER_ID);
        cr_assert_eq(strlen(m->payload), REPORT_REJECT_PAYLOAD_MAX);
        report_message_free(m);
        free(big);
}

Test(report, payload_too_large) {
        const char *json = "{\"outage_type\":\"a\",\"timestamp\":" TS "}";
        ReportRules r = rules;
        ReportMessage *m;

        r.max_payload = strlen(json);
        m = parse_rules("ctrl_1", json, strlen(json), &r);
        cr_assert_eq(m->reason, REJECT_NONE, "exactly max_payload is fine");
        report_message_free(m);

        r.max_payload = strlen(json) - 1;
        m = parse_rules("ctrl_1", json, strlen(json), &r);
        cr_assert_eq(m->reason, REJECT_PAYLOAD_TOO_LARGE);
        cr_assert(m->controller_valid);
        cr_assert_str_eq(m->controller_id, "ctrl_1");
        cr_assert_str_eq(m->payload, json);
        report_message_free(m);

        /* too large and malformed: the size is checked before parsing */
        m = parse_rules("ctrl_1", "{{{{ not json \xff", 15, &r);
        cr_assert_eq(m->reason, REJECT_MALFORMED_JSON, "15 bytes fit the default limit");
        report_message_free(m);
        r.max_payload = 10;
        m = parse_rules("ctrl_1", "{{{{ not json \xff", 15, &r);
        cr_assert_eq(m->reason, REJECT_PAYLOAD_TOO_LARGE);
        cr_assert_str_eq(m->payload, "{{{{ not json \\xff");
        report_message_free(m);
}

Test(report, malformed_json) {
        static const char *const cases[] = {
                "", " ", "\n", "{", "[", "}", "]", "{\"a\":1", "[{}", "{}}", "nope", "nul", "nulll",
                "{'outage_type':'a'}", "{\"a\":'b'}", "{\"a\":1,}", "[1,]", "[,1]", "{,}", "{\"a\"}",
                "{\"a\" 1}", "{a:1}", "[1 2]", "NaN", "[NaN]", "Infinity", "[-Infinity]", "[01]", "[-01]",
                "[00]", "[1.]", "[.5]", "[1e]", "[1e+]", "[+1]", "[0x10]", "[--1]", "[True]", "[FALSE]",
                "{\"a\":1} x", "{\"a\":1}{}", "{}[]", "1 2", "// c\n{}", "/* c */{}", "{\"a\":1}//",
                "\"unterminated", "[\"\\x\"]", "[\"\\u12\"]", "[\"\\u12g4\"]", "[\"\\\"]",
                "[\"tab\there\"]", "[\"nl\nhere\"]", "\xef\xbb\xbf{}", "[\xc3\xa9]",
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_msg(cases[i], REJECT_MALFORMED_JSON);
}

Test(report, valid_json_edge_cases_parse) {
        /* RFC 8259 forms that the strict scan must not refuse */
        assert_msg("[{\"outage_type\":\"a\",\"timestamp\":" TS ",\"n\":[0,-0,1.5e-3,2E+10,-1.25,10]}]", REJECT_NONE);
        assert_msg("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}",
                   REJECT_NONE);
        assert_msg("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
                   REJECT_NONE);
        assert_msg("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"k\":[true,false,null,{},[]]}", REJECT_NONE);
}

Test(report, invalid_utf8_in_string) {
        static const char *const cases[] = {
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":\"\xff\"}",
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":\"\xc0\xaf\"}",          /* overlong '/' */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":\"\xe0\x80\xaf\"}",      /* overlong */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":\"\xed\xa0\x80\"}",      /* surrogate */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":\"\xf4\x90\x80\x80\"}",  /* > U+10FFFF */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":\"\xe2\x82\"}",          /* truncated */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":\"\x80\"}",              /* lone continuation */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"\xfe\":1}",                  /* in a key */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ReportMessage *m = parse(cases[i]);
                cr_assert_eq(m->reason, REJECT_MALFORMED_JSON, "case %zu", i);
                cr_assert_not_null(strstr(m->payload, "\\x"), "case %zu: %s", i, m->payload);
                report_message_free(m);
        }
}

Test(report, nul_bytes) {
        /* json-c stops at a NUL: a valid object followed by NUL and garbage must not pass */
        static const char obj_then_nul[] = "{\"outage_type\":\"a\",\"timestamp\":" TS "}\0garbage";
        static const char nul_in_string[] = "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":\"a\0b\"}";
        static const char nul_first[] = "\0{}";
        ReportMessage *m;

        m = parse_rules("ctrl_1", obj_then_nul, sizeof(obj_then_nul) - 1, &rules);
        cr_assert_eq(m->reason, REJECT_MALFORMED_JSON);
        cr_assert_str_eq(m->payload, "{\"outage_type\":\"a\",\"timestamp\":" TS "}\\x00garbage");
        report_message_free(m);

        m = parse_rules("ctrl_1", nul_in_string, sizeof(nul_in_string) - 1, &rules);
        cr_assert_eq(m->reason, REJECT_MALFORMED_JSON);
        cr_assert_not_null(strstr(m->payload, "a\\x00b"));
        report_message_free(m);

        m = parse_rules("ctrl_1", nul_first, sizeof(nul_first) - 1, &rules);
        cr_assert_eq(m->reason, REJECT_MALFORMED_JSON);
        cr_assert_str_eq(m->payload, "\\x00{}");
        report_message_free(m);

        /* the escaped form \u0000 is JSON; in a report field it is simply not a valid name */
        assert_item("{\"outage_type\":\"a\\u0000b\",\"timestamp\":" TS "}", REJECT_BAD_OUTAGE_TYPE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:00:00Z\\u0000\"}", REJECT_BAD_TIMESTAMP);
}

/* A valid report whose "x" member holds `levels` nested containers: total depth levels + 1. */
static char *nested_report(unsigned levels, bool scalar_inside, bool objects) {
        char *open = repeat(objects ? "{\"k\":" : "[", levels);
        char *close = repeat(objects ? "}" : "]", levels);
        char *s = NULL;

        /* an object needs a member: use the scalar, or an empty array for "no scalar" */
        cr_assert_neq(asprintf(&s, "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":%s%s%s}", open,
                               scalar_inside ? "1" : (objects ? "[]" : ""), close), -1);
        free(open);
        free(close);
        return s;
}

Test(report, depth_32_passes_33_fails) {
        /* the report object is level 1: 31 more levels make 32 */
        for (int objects = 0; objects <= 1; objects++)
                for (int scalar = 0; scalar <= 1; scalar++) {
                        /* with objects and no scalar the innermost [] adds a level */
                        unsigned at32 = objects && !scalar ? 30 : 31;
                        char *ok = nested_report(at32, scalar, objects);
                        char *deep = nested_report(at32 + 1, scalar, objects);

                        assert_msg(ok, REJECT_NONE);
                        assert_item(ok, REJECT_NONE);
                        assert_msg(deep, REJECT_MALFORMED_JSON);
                        free(ok);
                        free(deep);
                }
}

Test(report, depth_bare_arrays) {
        char *open32 = repeat("[", 32), *close32 = repeat("]", 32);
        char *open33 = repeat("[", 33), *close33 = repeat("]", 33);
        char *s;

        cr_assert_neq(asprintf(&s, "%s%s", open32, close32), -1);
        assert_msg(s, REJECT_NONE);     /* a batch of one array: an item-level not_a_report */
        free(s);
        cr_assert_neq(asprintf(&s, "%s\"x\"%s", open32, close32), -1);
        assert_msg(s, REJECT_NONE);
        free(s);
        cr_assert_neq(asprintf(&s, "%s%s", open33, close33), -1);
        assert_msg(s, REJECT_MALFORMED_JSON);
        free(s);
        cr_assert_neq(asprintf(&s, "%s1%s", open33, close33), -1);
        assert_msg(s, REJECT_MALFORMED_JSON);
        free(s);
        /* depth, not count: many shallow containers are fine */
        s = repeat("[],", 100);
        s[strlen(s) - 1] = '\0';
        char *t;
        cr_assert_neq(asprintf(&t, "[%s]", s), -1);
        ReportRules r = rules;
        r.max_batch_items = 1000;
        ReportMessage *m = parse_rules("ctrl_1", t, strlen(t), &r);
        cr_assert_eq(m->reason, REJECT_NONE);
        report_message_free(m);
        free(s);
        free(t);
        free(open32);
        free(close32);
        free(open33);
        free(close33);
}

Test(report, not_a_report) {
        static const char *const cases[] = { "[]", " [ ] ", "null", "1", "-1.5", "\"report\"", "true", "false" };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_msg(cases[i], REJECT_NOT_A_REPORT);
}

static char *batch_of(size_t n) {
        char *items = repeat("{\"outage_type\":\"a\",\"timestamp\":" TS "},", n), *s;

        items[strlen(items) - 1] = '\0';
        cr_assert_neq(asprintf(&s, "[%s]", items), -1);
        free(items);
        return s;
}

Test(report, batch_too_large) {
        char *s = batch_of(11);
        ReportMessage *m;

        m = parse(s);
        cr_assert_eq(m->reason, REJECT_BATCH_TOO_LARGE);
        cr_assert_eq(m->n_items, 0);
        report_message_free(m);
        free(s);

        /* exactly max_batch_items is fine */
        s = batch_of(10);
        m = parse(s);
        cr_assert_eq(m->reason, REJECT_NONE);
        cr_assert_eq(m->n_items, 10);
        for (size_t i = 0; i < m->n_items; i++)
                cr_assert_eq(m->items[i].reason, REJECT_NONE);
        report_message_free(m);
        free(s);

        /* message checks come before item checks: 11 bad items are one batch_too_large */
        assert_msg("[1,2,3,4,5,6,7,8,9,10,11]", REJECT_BATCH_TOO_LARGE);
}

/* ---- item level ----------------------------------------------------------------------- */

Test(report, batch_with_bad_items) {
        ReportMessage *m = parse("[{\"outage_type\":\"a\",\"timestamp\":" TS "},"
                                 "1, null, \"x\", [], {\"outage_type\":\"b\",\"timestamp\":1795773601},"
                                 "{\"outage_type\":\"c\"},"
                                 "{\"outage_type\":\"d\",\"timestamp\":\"2026-11-27T10:00:02Z\"}]");

        cr_assert_eq(m->reason, REJECT_NONE);
        cr_assert_eq(m->n_items, 8);
        cr_assert_eq(m->items[0].reason, REJECT_NONE);
        cr_assert_str_eq(m->items[0].outage_type, "a");
        cr_assert_eq(m->items[0].timestamp, T10);
        cr_assert_eq(m->items[1].reason, REJECT_NOT_A_REPORT);
        cr_assert_str_eq(m->items[1].payload, "1");
        cr_assert_eq(m->items[2].reason, REJECT_NOT_A_REPORT);
        cr_assert_str_eq(m->items[2].payload, "null");
        cr_assert_eq(m->items[3].reason, REJECT_NOT_A_REPORT);
        cr_assert_str_eq(m->items[3].payload, "\"x\"");
        cr_assert_eq(m->items[4].reason, REJECT_NOT_A_REPORT);
        cr_assert_str_eq(m->items[4].payload, "[]");
        cr_assert_eq(m->items[5].reason, REJECT_NONE);
        cr_assert_str_eq(m->items[5].outage_type, "b");
        cr_assert_eq(m->items[5].timestamp, T10 + S);
        cr_assert_eq(m->items[6].reason, REJECT_MISSING_FIELD);
        cr_assert_str_eq(m->items[6].payload, "{\"outage_type\":\"c\"}");
        cr_assert_eq(m->items[7].reason, REJECT_NONE);
        cr_assert_str_eq(m->items[7].outage_type, "d");
        cr_assert_eq(m->items[7].timestamp, T10 + 2 * S);
        report_message_free(m);
}

Test(report, missing_field) {
        assert_item("{}", REJECT_MISSING_FIELD);
        assert_item("{\"timestamp\":" TS "}", REJECT_MISSING_FIELD);
        assert_item("{\"outage_type\":\"a\"}", REJECT_MISSING_FIELD);
        assert_item("{\"outage_type\":null,\"timestamp\":" TS "}", REJECT_MISSING_FIELD);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":null}", REJECT_MISSING_FIELD);
        assert_item("{\"Outage_type\":\"a\",\"timestamp\":" TS "}", REJECT_MISSING_FIELD);
        /* order: missing before any other item check */
        assert_item("{\"outage_type\":\"Bad Type\"}", REJECT_MISSING_FIELD);
        assert_item("{\"outage_type\":5}", REJECT_MISSING_FIELD);
        assert_item("{\"timestamp\":1.5,\"controller_id\":\"other\"}", REJECT_MISSING_FIELD);
}

Test(report, bad_field_type) {
        static const char *const cases[] = {
                "{\"outage_type\":5,\"timestamp\":" TS "}",
                "{\"outage_type\":true,\"timestamp\":" TS "}",
                "{\"outage_type\":[\"a\"],\"timestamp\":" TS "}",
                "{\"outage_type\":{\"a\":1},\"timestamp\":" TS "}",
                "{\"outage_type\":\"a\",\"timestamp\":1.5}",
                "{\"outage_type\":\"a\",\"timestamp\":1e9}",
                "{\"outage_type\":\"a\",\"timestamp\":1795773600.0}",
                "{\"outage_type\":\"a\",\"timestamp\":1.7957736E9}",
                "{\"outage_type\":\"a\",\"timestamp\":-0.0}",
                "{\"outage_type\":\"a\",\"timestamp\":true}",
                "{\"outage_type\":\"a\",\"timestamp\":[" TS "]}",
                "{\"outage_type\":\"a\",\"timestamp\":{}}",
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":7}",
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":false}",
                /* order: type checks before value checks */
                "{\"outage_type\":\"Bad\",\"timestamp\":1.5}",
                "{\"outage_type\":\"a\",\"timestamp\":\"never\",\"controller_id\":{}}",
                "{\"outage_type\":\"BAD\",\"timestamp\":-5,\"controller_id\":1}",
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_item(cases[i], REJECT_BAD_FIELD_TYPE);
}

Test(report, bad_outage_type) {
        char *max, *over, *s;

        static const char *const cases[] = {
                "{\"outage_type\":\"\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"Panel\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"1panel\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"_panel\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"panel-outage\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"panel outage\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"panel\\n\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"caf\xc3\xa9\",\"timestamp\":" TS "}",
                /* order: before the allowlist, the timestamp and the controller */
                "{\"outage_type\":\"Bad\",\"timestamp\":\"never\",\"controller_id\":\"other\"}",
                "{\"outage_type\":\"Bad\",\"timestamp\":-1}",
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_item(cases[i], REJECT_BAD_OUTAGE_TYPE);

        max = repeat("a", 64);
        over = repeat("a", 65);
        cr_assert_neq(asprintf(&s, "{\"outage_type\":\"%s\",\"timestamp\":" TS "}", max), -1);
        ReportMessage *m = parse(s);
        cr_assert_eq(m->items[0].reason, REJECT_NONE);
        cr_assert_str_eq(m->items[0].outage_type, max);
        report_message_free(m);
        free(s);
        cr_assert_neq(asprintf(&s, "{\"outage_type\":\"%s\",\"timestamp\":" TS "}", over), -1);
        assert_item(s, REJECT_BAD_OUTAGE_TYPE);
        free(s);
        free(max);
        free(over);
}

Test(report, unknown_outage_type) {
        static char *const allowed[] = { "lamp_outage", "panel_outage", "power_loss" };
        ReportRules r = rules;

        r.outage_types = allowed;
        r.n_outage_types = ELEMENTSOF(allowed);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"lamp_outage\",\"timestamp\":" TS "}", &r), REJECT_NONE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"panel_outage\",\"timestamp\":" TS "}", &r), REJECT_NONE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"power_loss\",\"timestamp\":" TS "}", &r), REJECT_NONE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"panel\",\"timestamp\":" TS "}", &r),
                     REJECT_UNKNOWN_OUTAGE_TYPE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":" TS "}", &r),
                     REJECT_UNKNOWN_OUTAGE_TYPE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"zzz\",\"timestamp\":" TS "}", &r),
                     REJECT_UNKNOWN_OUTAGE_TYPE);
        /* order: after the pattern, before the timestamp */
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"Lamp\",\"timestamp\":" TS "}", &r),
                     REJECT_BAD_OUTAGE_TYPE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"x\",\"timestamp\":\"never\"}", &r),
                     REJECT_UNKNOWN_OUTAGE_TYPE);
        /* an empty allowlist admits nothing */
        r.n_outage_types = 0;
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"lamp_outage\",\"timestamp\":" TS "}", &r),
                     REJECT_UNKNOWN_OUTAGE_TYPE);
}

Test(report, bad_timestamp) {
        static const char *const cases[] = {
                "{\"outage_type\":\"a\",\"timestamp\":\"never\"}",
                "{\"outage_type\":\"a\",\"timestamp\":\"\"}",
                "{\"outage_type\":\"a\",\"timestamp\":\"2023-02-29T00:00:00Z\"}",
                "{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:00:00+24:00\"}",
                "{\"outage_type\":\"a\",\"timestamp\":\"1795773600\"}",
                "{\"outage_type\":\"a\",\"timestamp\":-1}",
                "{\"outage_type\":\"a\",\"timestamp\":253402300800}",
                "{\"outage_type\":\"a\",\"timestamp\":9223372036854775807}",
                "{\"outage_type\":\"a\",\"timestamp\":9223372036854775808}",
                "{\"outage_type\":\"a\",\"timestamp\":18446744073709551615}",
                "{\"outage_type\":\"a\",\"timestamp\":99999999999999999999999999999}",
                "{\"outage_type\":\"a\",\"timestamp\":-9223372036854775809}",
                "{\"outage_type\":\"a\",\"timestamp\":-99999999999999999999999999999}",
                /* order: before the range and the controller */
                "{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:00:60Z\",\"controller_id\":\"x\"}",
        };
        ReportRules any = rules;

        any.max_future_skew = INT64_MAX;
        any.max_age = 0;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                cr_assert_eq(item_reason_rules(cases[i], &any), REJECT_BAD_TIMESTAMP, "%s", cases[i]);
                assert_item(cases[i], REJECT_BAD_TIMESTAMP);
        }
        /* the integer range itself, with no window */
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":0}", &any), REJECT_NONE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":-0}", &any), REJECT_NONE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":253402300799}", &any), REJECT_NONE);
        const char *max = "{\"outage_type\":\"a\",\"timestamp\":253402300799}";
        ReportMessage *m = parse_rules("c", max, strlen(max), &any);
        cr_assert_eq(m->items[0].timestamp, TIMESTAMP_UNIX_SECONDS_MAX * S);
        report_message_free(m);
}

Test(report, timestamp_window_boundaries) {
        /* now = 10:00:00, skew 5 min, age 365 d (2025-11-27T10:00:00Z is 365 days back) */
        assert_item("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:05:00Z\"}", REJECT_NONE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:05:00.000001Z\"}",
                    REJECT_TIMESTAMP_OUT_OF_RANGE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T11:05:00+01:00\"}", REJECT_NONE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":1795773900}", REJECT_NONE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":1795773901}", REJECT_TIMESTAMP_OUT_OF_RANGE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":\"2025-11-27T10:00:00Z\"}", REJECT_NONE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":\"2025-11-27T09:59:59.999999Z\"}",
                    REJECT_TIMESTAMP_OUT_OF_RANGE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":1764237600}", REJECT_NONE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":1764237599}", REJECT_TIMESTAMP_OUT_OF_RANGE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":0}", REJECT_TIMESTAMP_OUT_OF_RANGE);
        assert_item("{\"outage_type\":\"a\",\"timestamp\":\"9999-12-31T23:59:59Z\"}",
                    REJECT_TIMESTAMP_OUT_OF_RANGE);
        /* order: before controller_mismatch */
        assert_item("{\"outage_type\":\"a\",\"timestamp\":0,\"controller_id\":\"x\"}",
                    REJECT_TIMESTAMP_OUT_OF_RANGE);
}

Test(report, timestamp_window_limits) {
        ReportRules r = rules;

        /* max_age 0: no lower limit */
        r.max_age = 0;
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":0}", &r), REJECT_NONE);
        /* ... but never an instant the database cannot store (year 0 or 10000 UTC) */
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":\"0000-01-01T00:00:00+23:59\"}", &r),
                     REJECT_TIMESTAMP_OUT_OF_RANGE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":\"0000-12-31T23:59:59.999999Z\"}", &r),
                     REJECT_TIMESTAMP_OUT_OF_RANGE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":\"0001-01-01T00:00:00Z\"}", &r),
                     REJECT_NONE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":\"0001-01-01T00:30:00+01:00\"}", &r),
                     REJECT_TIMESTAMP_OUT_OF_RANGE);
        /* zero skew: exactly now is fine, 1 us later is not */
        r.max_future_skew = 0;
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:00:00Z\"}", &r),
                     REJECT_NONE);
        cr_assert_eq(item_reason_rules("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:00:00.000001Z\"}", &r),
                     REJECT_TIMESTAMP_OUT_OF_RANGE);
        /* extreme limits and clocks do not overflow */
        r.max_future_skew = INT64_MAX;
        r.max_age = INT64_MAX;
        ReportMessage *m = NULL;
        const char *json = "[{\"outage_type\":\"a\",\"timestamp\":\"0000-01-01T00:00:00+23:59\"},"
                           "{\"outage_type\":\"a\",\"timestamp\":253402300799}]";
        cr_assert_eq(report_parse_message("c", json, strlen(json), &r, INT64_MIN, &m), 0);
        cr_assert_eq(m->items[0].reason, REJECT_TIMESTAMP_OUT_OF_RANGE);  /* year 0 UTC */
        cr_assert_eq(m->items[1].reason, REJECT_NONE);
        report_message_free(m);
        const char *late = "[{\"outage_type\":\"a\",\"timestamp\":\"9999-12-31T23:59:59.999999Z\"},"
                           "{\"outage_type\":\"a\",\"timestamp\":\"9999-12-31T23:59:59-00:01\"}]";
        cr_assert_eq(report_parse_message("c", late, strlen(late), &r, INT64_MIN, &m), 0);
        cr_assert_eq(m->items[0].reason, REJECT_NONE);
        cr_assert_eq(m->items[1].reason, REJECT_TIMESTAMP_OUT_OF_RANGE);  /* year 10000 UTC */
        report_message_free(m);
        r.max_future_skew = 0;
        cr_assert_eq(report_parse_message("c", json, strlen(json), &r, INT64_MIN, &m), 0);
        cr_assert_eq(m->items[0].reason, REJECT_TIMESTAMP_OUT_OF_RANGE);
        cr_assert_eq(m->items[1].reason, REJECT_TIMESTAMP_OUT_OF_RANGE);
        report_message_free(m);
        /* year 0 is more than INT64_MAX us before INT64_MAX; 9999 is not */
        cr_assert_eq(report_parse_message("c", json, strlen(json), &r, INT64_MAX, &m), 0);
        cr_assert_eq(m->items[0].reason, REJECT_TIMESTAMP_OUT_OF_RANGE);
        cr_assert_eq(m->items[1].reason, REJECT_NONE);
        report_message_free(m);
}

Test(report, controller_mismatch_is_last) {
        ReportMessage *m = parse("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_9\"}");

        cr_assert_eq(m->items[0].reason, REJECT_CONTROLLER_MISMATCH);
        cr_assert_str_eq(m->items[0].payload,
                         "{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:00:00Z\",\"controller_id\":\"ctrl_9\"}");
        report_message_free(m);
}

/* ---- reject payloads ------------------------------------------------------------------ */

Test(report, item_payload_is_compact_json) {
        ReportMessage *m = parse("[ { \"outage_type\" : \"Bad\" ,\n \"timestamp\" : " TS
                                 " , \"url\" : \"http:\\/\\/x/y\", \"n\": [1, 2.50, -0] } ]");

        cr_assert_eq(m->items[0].reason, REJECT_BAD_OUTAGE_TYPE);
        cr_assert_str_eq(m->items[0].payload,
                         "{\"outage_type\":\"Bad\",\"timestamp\":\"2026-11-27T10:00:00Z\","
                         "\"url\":\"http://x/y\",\"n\":[1,2.50,0]}");
        report_message_free(m);
}

Test(report, item_payload_keeps_utf8_and_escapes_controls) {
        ReportMessage *m = parse("{\"outage_type\":\"caf\xc3\xa9\",\"timestamp\":" TS ",\"z\":\"a\\u0000b\"}");

        cr_assert_eq(m->items[0].reason, REJECT_BAD_OUTAGE_TYPE);
        cr_assert_str_eq(m->items[0].payload,
                         "{\"outage_type\":\"caf\xc3\xa9\",\"timestamp\":\"2026-11-27T10:00:00Z\",\"z\":\"a\\u0000b\"}");
        report_message_free(m);
}

Test(report, item_payload_truncated_to_1KiB) {
        char *pad = repeat("p", 3000), *s;
        ReportMessage *m;

        cr_assert_neq(asprintf(&s, "[{\"outage_type\":\"Bad\",\"timestamp\":1,\"pad\":\"%s\"},"
                                   "{\"outage_type\":\"a\",\"timestamp\":" TS "}]", pad), -1);
        m = parse(s);
        cr_assert_eq(m->reason, REJECT_NONE);
        cr_assert_eq(m->items[0].reason, REJECT_BAD_OUTAGE_TYPE);
        cr_assert_eq(strlen(m->items[0].payload), REPORT_REJECT_PAYLOAD_MAX);
        const char *prefix = "{\"outage_type\":\"Bad\",\"timestamp\":1,\"pad\":\"ppp";
        cr_assert_eq(strncmp(m->items[0].payload, prefix, strlen(prefix)), 0);
        cr_assert_eq(m->items[0].payload[REPORT_REJECT_PAYLOAD_MAX - 1], 'p');
        cr_assert_eq(m->items[1].reason, REJECT_NONE);
        report_message_free(m);
        free(s);
        free(pad);
}

Test(report, message_payload_truncated_to_1KiB) {
        char *big = repeat("a", 3000);
        ReportMessage *m;

        /* a 2-byte character straddling byte 1024: the cut half is escaped */
        big[1023] = '\xc3';
        big[1024] = '\xa9';
        m = parse_rules("ctrl_1", big, 3000, &rules);
        cr_assert_eq(m->reason, REJECT_MALFORMED_JSON);
        cr_assert_eq(strlen(m->payload), 1023 + 4);
        cr_assert_str_eq(m->payload + 1023, "\\xc3");
        report_message_free(m);

        /* one that ends exactly at byte 1024 is kept */
        big[1022] = '\xc3';
        big[1023] = '\xa9';
        big[1024] = 'a';
        m = parse_rules("ctrl_1", big, 3000, &rules);
        cr_assert_eq(strlen(m->payload), 1024);
        cr_assert_str_eq(m->payload + 1022, "\xc3\xa9");
        report_message_free(m);
        free(big);
}

/* ---- reject details (SPEC section 4) --------------------------------------------------- */

/* The message-level detail of json (len bytes) under rules r, checked to be a reject. */
static void assert_msg_detail_len(const char *json, size_t len, const ReportRules *r, RejectReason reason,
                                  const char *want) {
        ReportMessage *m = parse_rules("ctrl_1", json, len, r);

        cr_assert_eq(m->reason, reason, "%s: got %s", json, reject_reason_to_string(m->reason));
        cr_assert_str_eq(m->detail, want, "%s", json);
        report_message_free(m);
}

static void assert_msg_detail(const char *json, RejectReason reason, const char *want) {
        assert_msg_detail_len(json, strlen(json), &rules, reason, want);
}

/* The detail of item k (from 0) of json under rules r. */
static void assert_item_detail_rules(const char *json, const ReportRules *r, size_t k, RejectReason reason,
                                     const char *want) {
        ReportMessage *m = parse_rules("ctrl_1", json, strlen(json), r);

        cr_assert_eq(m->reason, REJECT_NONE, "%s: message rejected: %s", json, m->detail);
        cr_assert_gt(m->n_items, k);
        cr_assert_eq(m->items[k].reason, reason, "%s: got %s", json, reject_reason_to_string(m->items[k].reason));
        cr_assert_str_eq(m->items[k].detail, want, "%s", json);
        report_message_free(m);
}

static void assert_item_detail(const char *json, RejectReason reason, const char *want) {
        assert_item_detail_rules(json, &rules, 0, reason, want);
}

#define ID_PATTERN "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

Test(report, detail_empty_when_valid) {
        ReportMessage *m = parse("[{\"outage_type\":\"a\",\"timestamp\":" TS "},{\"outage_type\":\"b\",\"timestamp\":1}]");

        cr_assert_eq(m->reason, REJECT_NONE);
        cr_assert_str_eq(m->detail, "");
        cr_assert_eq(m->items[0].reason, REJECT_NONE);
        cr_assert_str_eq(m->items[0].detail, "");
        cr_assert_eq(m->items[1].reason, REJECT_TIMESTAMP_OUT_OF_RANGE);
        cr_assert_str_eq(m->items[1].detail, "older than max_age 365d, item 2 of 2");
        report_message_free(m);
}

Test(report, detail_bad_controller_id) {
        const char *json = "{\"outage_type\":\"a\",\"timestamp\":" TS "}";
        ReportMessage *m;

        m = parse_rules(NULL, json, strlen(json), &rules);
        cr_assert_str_eq(m->detail, "the topic does not match the filter");
        report_message_free(m);
        m = parse_rules("_x", json, strlen(json), &rules);
        cr_assert_str_eq(m->detail, "the controller id in the topic does not match " ID_PATTERN);
        report_message_free(m);

        m = NULL;
        cr_assert_eq(report_parse_topic("outages/+", "other/c1", 8, json, strlen(json), &rules, NOW, &m), 0);
        cr_assert_eq(m->reason, REJECT_BAD_CONTROLLER_ID);
        cr_assert_str_eq(m->detail, "the topic does not match the filter outages/+");
        report_message_free(m);
        cr_assert_eq(report_parse_topic("$share/g/outages/+", "outages/a b", 11, json, strlen(json), &rules, NOW, &m), 0);
        cr_assert_str_eq(m->detail, "the controller id in the topic does not match " ID_PATTERN);
        report_message_free(m);
        /* a long filter is cut, never a whole configuration value in each row */
        cr_assert_eq(report_parse_topic("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/+", "x/c1", 4, json, strlen(json),
                                        &rules, NOW, &m), 0);
        cr_assert_str_eq(m->detail, "the topic does not match the filter aaaaaaaaaaaaaaaaaaaaaaaaaaaa...");
        report_message_free(m);
}

Test(report, detail_payload_too_large) {
        char *big = repeat("x", 4097);

        assert_msg_detail(big, REJECT_PAYLOAD_TOO_LARGE, "4097 bytes, more than max_payload 4KiB");
        free(big);
}

Test(report, detail_malformed_json) {
        static const struct { const char *json; size_t len; const char *want; } cases[] = {
                { "{\"a\":\"\xff\"}", 0, "not UTF-8 at byte offset 6" },
                { "{\"a\":\"\xed\xa0\x80\"}", 0, "not UTF-8 at byte offset 6" },
                { "\xc3", 0, "not UTF-8 at byte offset 0" },
                { "{\"a\":\"x\0\"}", 10, "NUL byte at byte offset 7" },
                { "{\"a\":1}\0", 8, "NUL byte at byte offset 7" },
                { "\"a\nb\"", 0, "control byte 0x0a in a string at byte offset 2" },
                { "\"a\\\x01\"", 0, "control byte 0x01 in a string at byte offset 3" },
                { "[\"abc", 0, "unterminated string at byte offset 1" },
                { "[01]", 0, "not a JSON number at byte offset 1" },
                { "[1.]", 0, "not a JSON number at byte offset 1" },
                { "]", 0, "\"]\" closes nothing at byte offset 0" },
                { "{\"a\":1}}", 0, "\"}\" closes nothing at byte offset 7" },
                { "{'a':1}", 0, "unexpected \"'\" at byte offset 1" },
                { "[NaN]", 0, "unexpected \"N\" at byte offset 1" },
                { "\x01", 0, "unexpected byte 0x01 at byte offset 0" },
                { "\xc3\xa9", 0, "unexpected byte 0xc3 at byte offset 0" },
                /* json-c's own words for the grammar */
                { "{\"a\":1", 0, "unexpected end of data at byte offset 6" },
                { "[1 2]", 0, "array value separator ',' expected at byte offset 3" },
                { "{\"a\" 1}", 0, "object property name separator ':' expected at byte offset 5" },
                { "[1,]", 0, "unexpected character at byte offset 3" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_msg_detail_len(cases[i].json, cases[i].len ? cases[i].len : strlen(cases[i].json), &rules,
                                      REJECT_MALFORMED_JSON, cases[i].want);
}

Test(report, detail_too_deep) {
        char *deep = repeat("[", 40);

        assert_msg_detail(deep, REJECT_MALFORMED_JSON, "nested deeper than 32 at byte offset 32");
        free(deep);
}

Test(report, detail_not_a_report) {
        assert_msg_detail("\"x\"", REJECT_NOT_A_REPORT, "the payload is a string, not an object or a non-empty array");
        assert_msg_detail("[]", REJECT_NOT_A_REPORT, "the payload is an empty array, not an object or a non-empty array");
        assert_msg_detail("null", REJECT_NOT_A_REPORT, "the payload is null, not an object or a non-empty array");
        assert_msg_detail("1.5", REJECT_NOT_A_REPORT,
                          "the payload is a non-integer number, not an object or a non-empty array");
        assert_msg_detail("true", REJECT_NOT_A_REPORT, "the payload is a boolean, not an object or a non-empty array");
        assert_item_detail_rules("[1,{\"outage_type\":\"a\",\"timestamp\":" TS "}]", &rules, 0, REJECT_NOT_A_REPORT,
                                 "an integer, not an object, item 1 of 2");
        assert_item_detail_rules("[{\"outage_type\":\"a\",\"timestamp\":" TS "},[]]", &rules, 1, REJECT_NOT_A_REPORT,
                                 "an array, not an object, item 2 of 2");
        assert_item_detail_rules("[{\"outage_type\":\"a\",\"timestamp\":" TS "},\"s\",null]", &rules, 2,
                                 REJECT_NOT_A_REPORT, "null, not an object, item 3 of 3");
}

Test(report, detail_batch_too_large) {
        char *items = repeat("{},", 11), json[64];

        items[strlen(items) - 1] = '\0';
        cr_assert_lt(strlen(items) + 3, sizeof json);
        snprintf(json, sizeof json, "[%s]", items);
        assert_msg_detail(json, REJECT_BATCH_TOO_LARGE, "11 items, more than max_batch_items 10");
        free(items);
}

Test(report, detail_missing_field) {
        assert_item_detail("{\"timestamp\":" TS "}", REJECT_MISSING_FIELD, "outage_type is absent");
        assert_item_detail("{\"outage_type\":null,\"timestamp\":" TS "}", REJECT_MISSING_FIELD, "outage_type is null");
        assert_item_detail("{\"outage_type\":\"a\"}", REJECT_MISSING_FIELD, "timestamp is absent");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":null}", REJECT_MISSING_FIELD, "timestamp is null");
        assert_item_detail("{}", REJECT_MISSING_FIELD, "outage_type is absent");
}

Test(report, detail_bad_field_type) {
        assert_item_detail("{\"outage_type\":1,\"timestamp\":" TS "}", REJECT_BAD_FIELD_TYPE,
                           "outage_type is an integer, expected a string");
        assert_item_detail("{\"outage_type\":[],\"timestamp\":" TS "}", REJECT_BAD_FIELD_TYPE,
                           "outage_type is an array, expected a string");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":1.5}", REJECT_BAD_FIELD_TYPE,
                           "timestamp is a non-integer number, expected a string or an integer");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":true}", REJECT_BAD_FIELD_TYPE,
                           "timestamp is a boolean, expected a string or an integer");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":{}}", REJECT_BAD_FIELD_TYPE,
                           "timestamp is an object, expected a string or an integer");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":7}", REJECT_BAD_FIELD_TYPE,
                           "controller_id is an integer, expected a string");
}

Test(report, detail_bad_outage_type) {
        assert_item_detail("{\"outage_type\":\"Panel\",\"timestamp\":" TS "}", REJECT_BAD_OUTAGE_TYPE,
                           "outage_type \"Panel\" does not match ^[a-z][a-z0-9_]{0,63}$");
        assert_item_detail("{\"outage_type\":\"\",\"timestamp\":" TS "}", REJECT_BAD_OUTAGE_TYPE,
                           "outage_type \"\" does not match ^[a-z][a-z0-9_]{0,63}$");
        /* a NUL from a \u0000 escape is escaped; long values are cut with "..." */
        assert_item_detail("{\"outage_type\":\"a\\u0000b\",\"timestamp\":" TS "}", REJECT_BAD_OUTAGE_TYPE,
                           "outage_type \"a\\x00b\" does not match ^[a-z][a-z0-9_]{0,63}$");
        assert_item_detail("{\"outage_type\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
                           "\"timestamp\":" TS "}", REJECT_BAD_OUTAGE_TYPE,
                           "outage_type \"aaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" does not match ^[a-z][a-z0-9_]{0,63}$");
        /* the cut falls before a character that does not fit whole */
        assert_item_detail("{\"outage_type\":\"aaaaaaaaaaaaaaaaaaaaaaaaaa\xe2\x82\xac\",\"timestamp\":" TS "}",
                           REJECT_BAD_OUTAGE_TYPE,
                           "outage_type \"aaaaaaaaaaaaaaaaaaaaaaaaaa...\" does not match ^[a-z][a-z0-9_]{0,63}$");
}

Test(report, detail_unknown_outage_type) {
        static char *const allowed[] = { "lamp_outage", "panel_outage" };
        ReportRules r = rules;

        r.outage_types = allowed;
        r.n_outage_types = ELEMENTSOF(allowed);
        assert_item_detail_rules("{\"outage_type\":\"door_open\",\"timestamp\":" TS "}", &r, 0,
                                 REJECT_UNKNOWN_OUTAGE_TYPE, "outage_type door_open is not in aggregation.outage_types");
}

Test(report, detail_bad_timestamp) {
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":\"2026-02-30T00:00:00Z\"}", REJECT_BAD_TIMESTAMP,
                           "timestamp \"2026-02-30T00:00:00Z\" is not YYYY-MM-DDTHH:MM:SS[.ffffff][Z|±HH:MM] "
                           "with a real date and time");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":-1}", REJECT_BAD_TIMESTAMP,
                           "integer timestamp outside 0..253402300799");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":99999999999999999999999}", REJECT_BAD_TIMESTAMP,
                           "integer timestamp outside 0..253402300799");
}

Test(report, detail_timestamp_out_of_range) {
        ReportRules r = rules;

        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:05:01Z\"}",
                           REJECT_TIMESTAMP_OUT_OF_RANGE, "more than max_future_skew 5min ahead");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":\"2025-11-27T09:59:59Z\"}",
                           REJECT_TIMESTAMP_OUT_OF_RANGE, "older than max_age 365d");
        r.max_age = 30 * USEC_PER_DAY;
        r.max_future_skew = 90 * USEC_PER_MINUTE;
        assert_item_detail_rules("{\"outage_type\":\"a\",\"timestamp\":\"2026-10-01T00:00:00Z\"}", &r, 0,
                                 REJECT_TIMESTAMP_OUT_OF_RANGE, "older than max_age 30d");
        assert_item_detail_rules("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T12:00:00Z\"}", &r, 0,
                                 REJECT_TIMESTAMP_OUT_OF_RANGE, "more than max_future_skew 1h30min ahead");
        r.max_age = 0;
        r.max_future_skew = INT64_MAX;
        assert_item_detail_rules("{\"outage_type\":\"a\",\"timestamp\":\"0000-12-31T23:59:59.999999Z\"}", &r, 0,
                                 REJECT_TIMESTAMP_OUT_OF_RANGE, "before 0001-01-01T00:00:00Z");
        assert_item_detail_rules("{\"outage_type\":\"a\",\"timestamp\":\"9999-12-31T23:59:59-00:01\"}", &r, 0,
                                 REJECT_TIMESTAMP_OUT_OF_RANGE, "after 9999-12-31T23:59:59.999999Z");
}

Test(report, detail_controller_mismatch) {
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_2\"}",
                           REJECT_CONTROLLER_MISMATCH, "controller_id \"ctrl_2\" is not the topic's ctrl_1");
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"x\\u0000\xc3\xa9\"}",
                           REJECT_CONTROLLER_MISMATCH, "controller_id \"x\\x00\xc3\xa9\" is not the topic's ctrl_1");
}

Test(report, detail_item_index_only_in_arrays) {
        ReportRules r = rules;
        char json[4096];
        size_t o = 0;

        r.max_batch_items = 12;
        /* 12 items, the third too old: "item 3 of 12" */
        o += (size_t) snprintf(json + o, sizeof json - o, "[");
        for (int i = 1; i <= 12; i++)
                o += (size_t) snprintf(json + o, sizeof json - o, "%s{\"outage_type\":\"a\",\"timestamp\":%s}",
                                       i > 1 ? "," : "", i == 3 ? "\"2020-01-01T00:00:00Z\"" : TS);
        snprintf(json + o, sizeof json - o, "]");
        assert_item_detail_rules(json, &r, 2, REJECT_TIMESTAMP_OUT_OF_RANGE, "older than max_age 365d, item 3 of 12");
        /* a lone object is no batch */
        assert_item_detail("{\"outage_type\":\"a\",\"timestamp\":\"2020-01-01T00:00:00Z\"}",
                           REJECT_TIMESTAMP_OUT_OF_RANGE, "older than max_age 365d");
        /* an array of one is */
        assert_item_detail("[{\"outage_type\":\"a\",\"timestamp\":\"2020-01-01T00:00:00Z\"}]",
                           REJECT_TIMESTAMP_OUT_OF_RANGE, "older than max_age 365d, item 1 of 1");
}

/* The longest detail fits whole, suffix included: measured on a batch of 1000, it leaves
 * room for the longer suffix of the largest batch the configuration allows (1000000). */
Test(report, detail_longest_fits) {
        ReportRules r = rules;
        char *id = repeat("c", 64), *json, *items;
        const char *item = "{\"outage_type\":\"a\",\"timestamp\":" TS
                           ",\"controller_id\":\"\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
                           "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\"},";
        ReportMessage *m = NULL;
        size_t n = 1000, len;

        r.max_batch_items = n;
        r.max_payload = UINT64_MAX;
        items = repeat(item, n);
        len = strlen(items);
        items[len - 1] = ']';
        json = malloc(len + 2);
        json[0] = '[';
        memcpy(json + 1, items, len + 1);
        cr_assert_eq(report_parse_message(id, json, len + 1, &r, NOW, &m), 0);
        cr_assert_eq(m->n_items, n);
        for (size_t i = n - 1; i < n; i++) {
                const char *d = m->items[i].detail;
                cr_assert_eq(m->items[i].reason, REJECT_CONTROLLER_MISMATCH);
                cr_assert_str_eq(d, "controller_id \"\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
                                    "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac...\" is not the topic's "
                                    "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc, "
                                    "item 1000 of 1000");
                cr_assert_lt(strlen(d) + strlen("000000 of 1000000") - strlen(" of 1000"), REPORT_DETAIL_MAX);
        }
        report_message_free(m);
        free(json);
        free(items);
        free(id);
}

Test(report, free_accepts_null) {
        cr_assert_null(report_message_free(NULL));
}

Test(report, many_messages_one_thread) {
        /* the tokener is reused: a failed parse must not affect the next one */
        for (int i = 0; i < 1000; i++) {
                assert_msg(i % 3 == 0 ? "{\"a\":" : i % 3 == 1 ? "[[[[1" : "123", i % 3 == 2 ? REJECT_NOT_A_REPORT
                                                                                              : REJECT_MALFORMED_JSON);
                assert_item("{\"outage_type\":\"a\",\"timestamp\":" TS "}", REJECT_NONE);
        }
}

/* ---- the flat path ---------------------------------------------------------------------- */

/* A one-element array always goes through json-c: its item must come out exactly as the
 * same object alone, whichever path that took. */
static void assert_same_as_array(const char *obj, const ReportRules *r) {
        size_t len = strlen(obj);
        char *arr = malloc(len + 3);
        ReportMessage *a, *b;

        cr_assert_not_null(arr);
        arr[0] = '[';
        memcpy(arr + 1, obj, len);
        memcpy(arr + 1 + len, "]", 2);
        a = parse_rules("ctrl_1", obj, len, r);
        b = parse_rules("ctrl_1", arr, len + 2, r);
        cr_assert_eq(a->reason, b->reason, "%s", obj);
        cr_assert_eq(a->n_items, b->n_items, "%s", obj);
        if (a->n_items == 1) {
                const ReportItem *x = &a->items[0], *y = &b->items[0];

                cr_assert_eq(x->reason, y->reason, "%s: %s against %s", obj, reject_reason_to_string(x->reason),
                             reject_reason_to_string(y->reason));
                if (x->reason == REJECT_NONE) {
                        cr_assert_str_eq(x->outage_type, y->outage_type, "%s", obj);
                        cr_assert_eq(x->timestamp, y->timestamp, "%s", obj);
                        cr_assert_null(x->payload);
                        cr_assert_str_eq(x->detail, "");
                } else
                        cr_assert_not_null(x->payload, "%s", obj);
        }
        report_message_free(a);
        report_message_free(b);
        free(arr);
}

static uint64_t flat_delta(const char *json, const ReportRules *r) {
        uint64_t before = report_flat_count();

        report_message_free(parse_rules("ctrl_1", json, strlen(json), r));
        return report_flat_count() - before;
}

Test(report, flat_path_takes_plain_objects) {
        static const char *const flat[] = {
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T10:00:00Z\"}",
                " {\r\n\t\"timestamp\" : 1795773600 , \"outage_type\" : \"a\" } \n",
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_1\",\"seq\":12,\"x\":\"\"}",
                "{\"\":\"\",\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:00:00.123456+01:00\"}",
        };
        static const char *const not_flat[] = {
                "[{\"outage_type\":\"a\",\"timestamp\":" TS "}]",                 /* an array */
                "{\"outage_type\":\"a\\u0062\",\"timestamp\":" TS "}",            /* an escape */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":true}",         /* a literal */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":-1}",           /* a negative number */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":1.5}",          /* a fraction */
                "{\"outage_type\":\"a\",\"timestamp\":" TS ",\"x\":{}}",           /* a nested object */
                "{\"outage_type\":\"b\",\"outage_type\":\"a\",\"timestamp\":" TS "}", /* a duplicate */
                "{\"outage_type\":\"a\",\"timestamp\":1795773600000000000000}",   /* beyond 18 digits */
        };

        for (size_t i = 0; i < ELEMENTSOF(flat); i++) {
                cr_assert_eq(flat_delta(flat[i], &rules), 1, "%s", flat[i]);
                assert_item(flat[i], REJECT_NONE);
        }
        for (size_t i = 0; i < ELEMENTSOF(not_flat); i++)
                cr_assert_eq(flat_delta(not_flat[i], &rules), 0, "%s", not_flat[i]);
        /* rejects are never the flat path's: json-c writes their details */
        cr_assert_eq(flat_delta("{\"outage_type\":\"A\",\"timestamp\":" TS "}", &rules), 0);
        cr_assert_eq(flat_delta("{\"outage_type\":\"a\",\"timestamp\":\"2026-11-27T10:06:00Z\"}", &rules), 0);
}

Test(report, flat_path_agrees_with_json_c) {
        static char *const types[] = { "lamp_outage", "panel_outage" };
        const ReportRules known = { .max_payload = 4096, .max_batch_items = 10, .max_future_skew = 5 * USEC_PER_MINUTE,
                                    .max_age = 365 * USEC_PER_DAY, .outage_types = types, .n_outage_types = 2 };
        static const char *const cases[] = {
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T10:00:00Z\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T10:05:00Z\"}",      /* skew, inclusive */
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T10:05:00.000001Z\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2025-11-27T10:00:00Z\"}",      /* max_age */
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2025-11-27T09:59:59Z\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27T11:00:00+01:00\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-11-27 10:00:00.5z\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"2026-02-30T10:00:00Z\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":\"\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":1795773600}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":1795773900}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":1795773901}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":0}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":253402300799}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":253402300800}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":999999999999999999}",
                "{\"outage_type\":\"lamp_outage\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"other_outage\",\"timestamp\":" TS "}",                       /* unknown */
                "{\"outage_type\":\"Panel\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"a234567890123456789012345678901234567890123456789012345678901234\",\"timestamp\":" TS "}",
                "{\"outage_type\":\"a2345678901234567890123456789012345678901234567890123456789012345\",\"timestamp\":" TS "}",
                "{\"outage_type\":12,\"timestamp\":" TS "}",
                "{\"outage_type\":\"panel_outage\"}",
                "{\"timestamp\":" TS "}",
                "{}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_1\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_2\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_10\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"controller_id\":1}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"controller_id\":\"\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"timestamp\":1}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"controller_id\":\"ctrl_1\",\"controller_id\":\"x\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"note\":\"caf\xc3\xa9\"}",
                "{\"outage_type\":\"panel_outage\",\"timestamp\":" TS ",\"n\":0,\"m\":123}",
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                assert_same_as_array(cases[i], &rules);
                assert_same_as_array(cases[i], &known);
        }
}
