/* timestamp.h — report timestamps (SPEC section 2) -> Unix microseconds, and Unix
 * microseconds -> RFC 3339 text. Pure: no allocation, no locale, no libc time functions,
 * no clock reads. */
#pragma once

#include "common.h"

/* The largest JSON integer timestamp: 9999-12-31T23:59:59Z in Unix seconds. */
#define TIMESTAMP_UNIX_SECONDS_MAX INT64_C(253402300799)

/* Parses exactly len bytes of s (no NUL terminator needed; an embedded NUL is a parse error):
 *   YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,6}][Z|z|+HH:MM|-HH:MM]
 * No offset means UTC. Offsets are 00:00 to 23:59 either way; seconds are 00-59 (no leap
 * second); the date must exist in the proleptic Gregorian calendar (years 0000-9999); the
 * fraction has 1 to 6 digits and is kept to the microsecond; the whole input must be
 * consumed. Returns 0 and sets *ret to microseconds since the Unix epoch (negative before
 * 1970, and possibly before year 0 once a positive offset is applied), or -EINVAL and leaves
 * *ret untouched. */
int timestamp_parse(const char *s, size_t len, usec_t *ret);

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" and its NUL. */
#define TIMESTAMP_FORMAT_MAX 28

/* The instants timestamp_format() can write: 0000-01-01T00:00:00Z up to
 * 9999-12-31T23:59:59.999999Z, in Unix microseconds. */
#define TIMESTAMP_FORMAT_MIN (INT64_C(-62167219200) * 1000000)
#define TIMESTAMP_FORMAT_LAST (INT64_C(253402300800) * 1000000 - 1)

/* Writes t as RFC 3339 in UTC: "2026-11-27T10:00:00Z", with ".ffffff" (always six digits)
 * before the Z when t is not a whole second. timestamp_parse() reads it back to t. Returns
 * the length written (20 or 27) or -ERANGE when t is outside TIMESTAMP_FORMAT_MIN ..
 * TIMESTAMP_FORMAT_LAST, leaving buf untouched. */
int timestamp_format(usec_t t, char buf[static TIMESTAMP_FORMAT_MAX]);

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1-12, day 1-31, no check). */
int64_t timestamp_days_from_civil(int64_t y, unsigned m, unsigned d);

/* The proleptic Gregorian date of a day count since 1970-01-01 (the inverse of
 * timestamp_days_from_civil). */
void timestamp_civil_from_days(int64_t days, int64_t *ret_y, unsigned *ret_m, unsigned *ret_d);
