/* test_timestamp.c — the SPEC section 2 timestamp grammar: every accepted form, the
 * calendar and offset limits, and what must be refused. */
#include <inttypes.h>
#include <stdio.h>

#include <criterion/criterion.h>

#include "report.h"
#include "timestamp.h"

#define S USEC_PER_SEC

/* 2026-11-27T10:00:00Z */
static const usec_t T10 = INT64_C(1795773600) * USEC_PER_SEC;

static usec_t ok(const char *s) {
        usec_t t = INT64_MIN;

        cr_assert_eq(timestamp_parse(s, strlen(s), &t), 0, "should parse: \"%s\"", s);
        return t;
}

static void bad(const char *s) {
        usec_t t = 42;

        cr_assert_eq(timestamp_parse(s, strlen(s), &t), -EINVAL, "should not parse: \"%s\"", s);
        cr_assert_eq(t, 42, "ret clobbered on failure: \"%s\"", s);
}

Test(timestamp, spec_examples) {
        cr_assert_eq(ok("2026-11-27T10:00:00Z"), T10);
        /* 09:50:00.250 at +01:00 is 08:50:00.250 UTC */
        cr_assert_eq(ok("2026-11-27T09:50:00.250+01:00"), INT64_C(1795769400) * S + 250000);
}

Test(timestamp, report_alias_matches) {
        usec_t t = 0;
        const char *s = "2026-11-27T10:00:00Z";

        cr_assert_eq(report_parse_timestamp(s, strlen(s), &t), 0);
        cr_assert_eq(t, T10);
}

Test(timestamp, separators_and_zone_letters) {
        cr_assert_eq(ok("2026-11-27t10:00:00Z"), T10);
        cr_assert_eq(ok("2026-11-27 10:00:00Z"), T10);
        cr_assert_eq(ok("2026-11-27T10:00:00z"), T10);
        cr_assert_eq(ok("2026-11-27t10:00:00z"), T10);
        cr_assert_eq(ok("2026-11-27T10:00:00"), T10, "no offset means UTC");
        cr_assert_eq(ok("2026-11-27T10:00:00+00:00"), T10);
        cr_assert_eq(ok("2026-11-27T10:00:00-00:00"), T10);
        bad("2026-11-27_10:00:00Z");
        bad("2026-11-27T10:00:00Zz");
        bad("2026-11-27T10:00:00UTC");
        bad("2026-11-27T10:00:00 Z");
}

Test(timestamp, offsets) {
        cr_assert_eq(ok("2026-11-27T11:00:00+01:00"), T10);
        cr_assert_eq(ok("2026-11-27T04:30:00-05:30"), T10);
        cr_assert_eq(ok("2026-11-28T09:59:00+23:59"), T10);
        cr_assert_eq(ok("2026-11-26T10:01:00-23:59"), T10);
        bad("2026-11-27T10:00:00+24:00");
        bad("2026-11-27T10:00:00-24:00");
        bad("2026-11-27T10:00:00+01:60");
        bad("2026-11-27T10:00:00+0100");
        bad("2026-11-27T10:00:00+01");
        bad("2026-11-27T10:00:00+1:00");
        bad("2026-11-27T10:00:00+01:00:00");
        bad("2026-11-27T10:00:00+01:0a");
        bad("2026-11-27T10:00:00 +01:00");
        bad("2026-11-27T10:00:00+");
}

Test(timestamp, fractions) {
        cr_assert_eq(ok("2026-11-27T10:00:00.1Z"), T10 + 100000);
        cr_assert_eq(ok("2026-11-27T10:00:00.25Z"), T10 + 250000);
        cr_assert_eq(ok("2026-11-27T10:00:00.000001Z"), T10 + 1);
        cr_assert_eq(ok("2026-11-27T10:00:00.999999Z"), T10 + 999999);
        cr_assert_eq(ok("2026-11-27T10:00:00.123456"), T10 + 123456);
        cr_assert_eq(ok("2026-11-27T11:00:00.5+01:00"), T10 + 500000);
        bad("2026-11-27T10:00:00.1234567Z");
        bad("2026-11-27T10:00:00.Z");
        bad("2026-11-27T10:00:00.");
        bad("2026-11-27T10:00:00,5Z");
        bad("2026-11-27T10:00:00.5.5Z");
}

Test(timestamp, calendar) {
        cr_assert_eq(ok("2024-02-29T12:00:00Z"), INT64_C(1709208000) * S, "leap year");
        cr_assert_eq(ok("2000-02-29T00:00:00Z"), INT64_C(951782400) * S, "400-year leap");
        bad("2023-02-29T00:00:00Z");
        bad("2023-02-30T00:00:00Z");
        bad("2024-02-30T00:00:00Z");
        bad("1900-02-29T00:00:00Z");            /* 100-year rule: not a leap year */
        bad("2026-04-31T00:00:00Z");
        bad("2026-13-01T00:00:00Z");
        bad("2026-00-01T00:00:00Z");
        bad("2026-01-00T00:00:00Z");
        bad("2026-01-32T00:00:00Z");
        cr_assert_eq(ok("2026-12-31T23:59:59Z"), ok("2027-01-01T00:00:00Z") - S);
}

Test(timestamp, clock_fields) {
        cr_assert_eq(ok("2026-11-27T23:59:59Z"), T10 + (13 * 3600 + 59 * 60 + 59) * S);
        bad("2026-11-27T24:00:00Z");
        bad("2026-11-27T10:60:00Z");
        bad("2026-11-27T10:00:60Z");            /* no leap second */
        bad("2026-11-27T10:00:61Z");
}

Test(timestamp, range_of_years) {
        cr_assert_eq(ok("1970-01-01T00:00:00Z"), 0);
        cr_assert_eq(ok("1969-12-31T23:59:59Z"), -S);
        cr_assert_eq(ok("1970-01-01T00:00:00+01:00"), -3600 * S);
        cr_assert_eq(ok("9999-12-31T23:59:59Z"), TIMESTAMP_UNIX_SECONDS_MAX * S);
        cr_assert_eq(ok("9999-12-31T23:59:59.999999-23:59"),
                     (TIMESTAMP_UNIX_SECONDS_MAX + 23 * 3600 + 59 * 60) * S + 999999);
        cr_assert_eq(ok("0001-01-01T00:00:00Z"), INT64_C(-62135596800) * S);
        cr_assert_eq(ok("0000-01-01T00:00:00Z"), INT64_C(-62167219200) * S);
        cr_assert_eq(ok("0000-02-29T00:00:00Z"), (INT64_C(-62167219200) + 59 * 86400) * S,
                     "year 0 is a leap year");
}

Test(timestamp, days_from_civil) {
        cr_assert_eq(timestamp_days_from_civil(1970, 1, 1), 0);
        cr_assert_eq(timestamp_days_from_civil(1969, 12, 31), -1);
        cr_assert_eq(timestamp_days_from_civil(2000, 3, 1), 11017);
        /* consecutive days across 400 years, including every month end and leap day */
        int64_t prev = timestamp_days_from_civil(1899, 12, 31);
        for (unsigned y = 1900; y < 2300; y++)
                for (unsigned m = 1; m <= 12; m++)
                        for (unsigned d = 1; d <= 31; d++) {
                                char buf[32];
                                usec_t t;
                                snprintf(buf, sizeof buf, "%04u-%02u-%02uT00:00:00Z", y, m, d);
                                if (timestamp_parse(buf, strlen(buf), &t) < 0)
                                        continue;
                                cr_assert_eq(t, timestamp_days_from_civil(y, m, d) * USEC_PER_DAY);
                                cr_assert_eq(timestamp_days_from_civil(y, m, d), prev + 1, "%s", buf);
                                prev++;
                        }
        cr_assert_eq(prev, timestamp_days_from_civil(2299, 12, 31));
}

Test(timestamp, shape) {
        bad("");
        bad("2026-11-27");
        bad("2026-11-27T10:00");
        bad("2026-11-27T10:00Z");
        bad("26-11-27T10:00:00Z");
        bad("+2026-11-27T10:00:00Z");
        bad("02026-11-27T10:00:00Z");
        bad("2026-1-27T10:00:00Z");
        bad("2026/11/27T10:00:00Z");
        bad("2026-11-27T10:0:00Z");
        bad("2026-11-27T1:00:00Z");
        bad("2026-11-27T10:00:00Z ");
        bad(" 2026-11-27T10:00:00Z");
        bad("2026-11-27T10:00:00\n");
        bad("2026-11-27T-1:00:00Z");
        bad("2026-11-27T10:00: 0Z");
        bad("1795773600");
}

Test(timestamp, length_is_exact) {
        usec_t t = 0;
        const char s[] = "2026-11-27T10:00:00Zjunk";

        /* only len bytes are read: a prefix is fine, an embedded NUL is not */
        cr_assert_eq(timestamp_parse(s, 20, &t), 0);
        cr_assert_eq(t, T10);
        cr_assert_eq(timestamp_parse(s, 19, &t), 0);
        cr_assert_eq(timestamp_parse(s, 18, &t), -EINVAL);
        cr_assert_eq(timestamp_parse("2026-11-27T10:00:00\0", 20, &t), -EINVAL);
        cr_assert_eq(timestamp_parse("2026-11-27T10:00:00Z\0", 21, &t), -EINVAL);
        cr_assert_eq(timestamp_parse(NULL, 0, &t), -EINVAL);
}

/* ---- formatting ---- */

static void fmt(usec_t t, const char *want) {
        char buf[TIMESTAMP_FORMAT_MAX];
        usec_t back = INT64_MIN;

        cr_assert_eq(timestamp_format(t, buf), (int) strlen(want), "%s", want);
        cr_assert_str_eq(buf, want);
        cr_assert_eq(timestamp_parse(buf, strlen(buf), &back), 0, "%s", buf);
        cr_assert_eq(back, t, "%s", buf);
}

Test(timestamp, format_examples) {
        fmt(T10, "2026-11-27T10:00:00Z");
        fmt(T10 + 250000, "2026-11-27T10:00:00.250000Z");
        fmt(T10 + 1, "2026-11-27T10:00:00.000001Z");
        fmt(T10 - 1, "2026-11-27T09:59:59.999999Z");
        fmt(0, "1970-01-01T00:00:00Z");
        fmt(-1, "1969-12-31T23:59:59.999999Z");
        fmt(-S, "1969-12-31T23:59:59Z");
        fmt(-USEC_PER_DAY, "1969-12-31T00:00:00Z");
        fmt(INT64_C(951782400) * S, "2000-02-29T00:00:00Z");
        fmt(INT64_C(-62135596800) * S, "0001-01-01T00:00:00Z");
        fmt(INT64_C(-62135596800) * S - 1, "0000-12-31T23:59:59.999999Z");
        fmt(INT64_C(-62167219200) * S, "0000-01-01T00:00:00Z");
        fmt(TIMESTAMP_UNIX_SECONDS_MAX * S, "9999-12-31T23:59:59Z");
        fmt(TIMESTAMP_FORMAT_LAST, "9999-12-31T23:59:59.999999Z");
}

Test(timestamp, format_out_of_range) {
        char buf[TIMESTAMP_FORMAT_MAX] = "untouched";

        cr_assert_eq(timestamp_format(TIMESTAMP_FORMAT_MIN - 1, buf), -ERANGE);
        cr_assert_eq(timestamp_format(TIMESTAMP_FORMAT_LAST + 1, buf), -ERANGE);
        cr_assert_eq(timestamp_format(INT64_MIN, buf), -ERANGE);
        cr_assert_eq(timestamp_format(INT64_MAX, buf), -ERANGE);
        cr_assert_str_eq(buf, "untouched");
        cr_assert_eq(TIMESTAMP_FORMAT_MAX, sizeof("9999-12-31T23:59:59.999999Z"));
}

/* Every day of years 1 to 9999 (and year 0), at a time of day and a fraction that vary
 * with the day: format, parse, compare; the dates must follow each other. */
Test(timestamp, format_round_trips_every_day_of_years_1_to_9999) {
        int64_t first = timestamp_days_from_civil(0, 1, 1), last = timestamp_days_from_civil(9999, 12, 31);
        char buf[TIMESTAMP_FORMAT_MAX], prev[TIMESTAMP_FORMAT_MAX] = "";

        for (int64_t day = first; day <= last; day++) {
                int64_t k = day - first;                /* >= 0, for the modulo */
                usec_t tod = (k * 7919 % 86400) * S + (k % 3 == 0 ? 0 : k * 104729 % S);
                usec_t t = day * USEC_PER_DAY + tod, back = INT64_MIN;
                int64_t y;
                unsigned m, d;
                int n = timestamp_format(t, buf);

                if (n < 0 || timestamp_parse(buf, (size_t) n, &back) < 0 || back != t)
                        cr_assert_fail("day %" PRId64 ": %s -> %" PRId64, day, buf, back);
                timestamp_civil_from_days(day, &y, &m, &d);
                if (timestamp_days_from_civil(y, m, d) != day)
                        cr_assert_fail("civil_from_days(%" PRId64 ")", day);
                if (strncmp(prev, buf, 10) >= 0)
                        cr_assert_fail("%s after %s", buf, prev);
                memcpy(prev, buf, sizeof buf);
        }
        cr_assert_eq(strncmp(prev, "9999-12-31", 10), 0);
}

Test(timestamp, format_round_trips_the_edges_of_every_second) {
        /* the microseconds around midnight, a leap day, and the epoch */
        static const usec_t bases[] = { 0, INT64_C(951782400) * S, INT64_C(-62135596800) * S, T10 };

        for (size_t i = 0; i < ELEMENTSOF(bases); i++)
                for (usec_t dt = -2 * S; dt <= 2 * S; dt += 999) {
                        char buf[TIMESTAMP_FORMAT_MAX];
                        usec_t back;
                        int n = timestamp_format(bases[i] + dt, buf);

                        cr_assert_eq(n, (bases[i] + dt) % S == 0 ? 20 : 27, "%s", buf);
                        cr_assert_eq(timestamp_parse(buf, (size_t) n, &back), 0, "%s", buf);
                        cr_assert_eq(back, bases[i] + dt, "%s", buf);
                }
}
