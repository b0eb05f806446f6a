/* timestamp.h — report timestamps (SPEC section 2) -> Unix microseconds.
 * Pure: no allocation, no locale, no libc time functions, no clock reads. */
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

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1-12, day 1-31, no check). */
int64_t timestamp_days_from_civil(int64_t y, unsigned m, unsigned d);
