/* timestamp.c — the SPEC section 2 timestamp grammar, parsed by hand into Unix microseconds,
 * and the RFC 3339 UTC form written back. No strptime/timegm/gmtime: they depend on the
 * locale and TZ, accept more than the grammar, and gmtime's range depends on time_t. */
#include <stdio.h>

#include "timestamp.h"

/* Howard Hinnant's days_from_civil: exact for every proleptic Gregorian date, branch-light,
 * no tables. Eras are 400-year cycles of 146097 days. */
int64_t timestamp_days_from_civil(int64_t y, unsigned m, unsigned d) {
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned) (y - era * 400);                       /* [0, 399] */
        unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;  /* [0, 365] */
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;            /* [0, 146096] */
        return era * 146097 + (int64_t) doe - 719468;
}

/* Hinnant's civil_from_days, the inverse of the above. */
void timestamp_civil_from_days(int64_t days, int64_t *ret_y, unsigned *ret_m, unsigned *ret_d) {
        int64_t z = days + 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        unsigned doe = (unsigned) (z - era * 146097);                          /* [0, 146096] */
        unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  /* [0, 399] */
        unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                /* [0, 365] */
        unsigned mp = (5 * doy + 2) / 153;                                     /* [0, 11] */
        unsigned d = doy - (153 * mp + 2) / 5 + 1;                             /* [1, 31] */
        unsigned m = mp < 10 ? mp + 3 : mp - 9;                                /* [1, 12] */

        *ret_y = (int64_t) yoe + era * 400 + (m <= 2);
        *ret_m = m;
        *ret_d = d;
}

static bool is_leap_year(unsigned y) {
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m) {
        static const unsigned char days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

        return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

/* Reads exactly n ASCII digits at s; false if any is not a digit. */
static bool digits(const char *s, unsigned n, unsigned *ret) {
        unsigned v = 0;

        for (unsigned i = 0; i < n; i++) {
                unsigned c = (unsigned char) s[i] - '0';
                if (c > 9)
                        return false;
                v = v * 10 + c;
        }
        *ret = v;
        return true;
}

/* "[.f{1,6}]" at s[*pos]: microseconds, 0 when absent. */
static bool parse_fraction(const char *s, size_t len, size_t *pos, usec_t *ret) {
        size_t i = *pos, n = 0;
        usec_t us = 0;

        if (i >= len || s[i] != '.') {
                *ret = 0;
                return true;
        }
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
                if (++n > 6)
                        return false;
                us = us * 10 + (s[i] - '0');
        }
        if (n == 0)
                return false;
        for (size_t k = n; k < 6; k++)
                us *= 10;
        *pos = i;
        *ret = us;
        return true;
}

/* "[Z|z|+HH:MM|-HH:MM]" at s[*pos], which must end the input: seconds east of UTC. */
static bool parse_offset(const char *s, size_t len, size_t pos, int64_t *ret) {
        unsigned hh, mm;

        if (pos == len) {
                *ret = 0;
                return true;
        }
        if (s[pos] == 'Z' || s[pos] == 'z') {
                *ret = 0;
                return pos + 1 == len;
        }
        if ((s[pos] != '+' && s[pos] != '-') || len - pos != 6 || s[pos + 3] != ':' ||
            !digits(s + pos + 1, 2, &hh) || !digits(s + pos + 4, 2, &mm) || hh > 23 || mm > 59)
                return false;
        *ret = (s[pos] == '-' ? -1 : 1) * (int64_t) (hh * 3600 + mm * 60);
        return true;
}

int timestamp_parse(const char *s, size_t len, usec_t *ret) {
        unsigned y, mo, d, h, mi, sec;
        usec_t frac;
        int64_t offset;
        size_t pos = 19;

        if (!s || len < 19)
                return -EINVAL;
        if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
            !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
            !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
            !digits(s + 17, 2, &sec))
                return -EINVAL;
        if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59)
                return -EINVAL;
        if (!parse_fraction(s, len, &pos, &frac) || !parse_offset(s, len, pos, &offset))
                return -EINVAL;

        /* |result| < 2^58: years 0-9999 and offsets under a day cannot overflow int64. */
        int64_t t = timestamp_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
        *ret = t * USEC_PER_SEC + frac;
        return 0;
}

int timestamp_format(usec_t t, char buf[static TIMESTAMP_FORMAT_MAX]) {
        int64_t secs = t / USEC_PER_SEC, us = t % USEC_PER_SEC, days, sod, y;
        unsigned m, d;
        int n;

        if (t < TIMESTAMP_FORMAT_MIN || t > TIMESTAMP_FORMAT_LAST)
                return -ERANGE;
        /* C division truncates toward zero: floor it for the instants before 1970. */
        if (us < 0) {
                us += USEC_PER_SEC;
                secs--;
        }
        days = secs / 86400;
        sod = secs % 86400;
        if (sod < 0) {
                sod += 86400;
                days--;
        }
        timestamp_civil_from_days(days, &y, &m, &d);

        n = snprintf(buf, TIMESTAMP_FORMAT_MAX, "%04u-%02u-%02uT%02u:%02u:%02u", (unsigned) y, m, d,
                     (unsigned) (sod / 3600), (unsigned) (sod / 60 % 60), (unsigned) (sod % 60));
        if (us != 0)
                n += snprintf(buf + n, TIMESTAMP_FORMAT_MAX - (size_t) n, ".%06u", (unsigned) us);
        buf[n++] = 'Z';
        buf[n] = '\0';
        return n;
}
