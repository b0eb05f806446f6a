/* text.c — one home for the text rules: UTF-8 well-formedness, \xNN escaping, the name
 * patterns, TLS URI schemes, and the duration and size notation. No I/O, no locale, no
 * allocation except text_escape(). */
#include <inttypes.h>
#include <stdio.h>

#include "text.h"

/* ---- UTF-8 ---------------------------------------------------------------------------- */

size_t text_utf8_seq_len(const void *buf, size_t n) {
        const unsigned char *p = buf;
        unsigned char c, lo = 0x80, hi = 0xbf;
        size_t k;

        if (n == 0)
                return 0;
        c = p[0];
        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                k = 2;
        else if (c >= 0xe0 && c <= 0xef) {
                k = 3;
                if (c == 0xe0)
                        lo = 0xa0;              /* overlong */
                else if (c == 0xed)
                        hi = 0x9f;              /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
                k = 4;
                if (c == 0xf0)
                        lo = 0x90;              /* overlong */
                else if (c == 0xf4)
                        hi = 0x8f;              /* above U+10FFFF */
        } else
                return 0;                       /* continuation byte, C0, C1, F5-FF */

        if (n < k || p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < k; i++)
                if (p[i] < 0x80 || p[i] > 0xbf)
                        return 0;
        return k;
}

size_t text_utf8_valid_prefix(const void *buf, size_t len) {
        const unsigned char *p = buf;
        size_t i = 0;

        while (i < len) {
                size_t k;

                if (p[i] < 0x80) {              /* the common case, without a call */
                        i++;
                        continue;
                }
                k = text_utf8_seq_len(p + i, len - i);
                if (k == 0)
                        break;
                i += k;
        }
        return i;
}

bool text_utf8_valid(const void *p, size_t len) {
        return text_utf8_valid_prefix(p, len) == len;
}

bool text_plain_valid(const char *s, size_t max) {
        const unsigned char *p = (const unsigned char *) s;
        size_t len;

        if (!s)
                return false;
        len = strnlen(s, max + 1);
        if (len > max)
                return false;
        for (size_t i = 0; i < len;) {
                size_t k = text_utf8_seq_len(p + i, len - i);

                if (k == 0 || p[i] < 0x20 || p[i] == 0x7f)
                        return false;
                /* U+0080-U+009F are C2 80 to C2 9F */
                if (k == 2 && p[i] == 0xc2 && p[i + 1] <= 0x9f)
                        return false;
                i += k;
        }
        return true;
}

/* ---- escaping ------------------------------------------------------------------------- */

/* The unit at p (of n bytes): the number of source bytes and the number of output bytes.
 * A well-formed sequence is copied; NUL and anything else is one byte as "\xNN". */
static size_t unit_at(const unsigned char *p, size_t n, size_t *ret_out) {
        size_t k = p[0] ? text_utf8_seq_len(p, n) : 0;

        *ret_out = k ? k : 4;
        return k ? k : 1;
}

size_t text_escaped_len(const void *src, size_t len) {
        const unsigned char *p = src;
        size_t out = 0;

        for (size_t i = 0; i < len;) {
                size_t o;

                i += unit_at(p + i, len - i, &o);
                out += o;
        }
        return out;
}

size_t text_escape_into(char *dst, size_t size, const void *src, size_t len) {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *p = src;
        size_t i = 0, o = 0;

        if (size == 0)
                return 0;
        while (i < len) {
                size_t w, k = unit_at(p + i, len - i, &w);

                if (w >= size - o)
                        break;                  /* keep room for the NUL */
                if (w == k)
                        memcpy(dst + o, p + i, k);
                else {
                        dst[o] = '\\';
                        dst[o + 1] = 'x';
                        dst[o + 2] = hex[p[i] >> 4];
                        dst[o + 3] = hex[p[i] & 0xf];
                }
                o += w;
                i += k;
        }
        dst[o] = '\0';
        return i;
}

char *text_escape(const void *buf, size_t len, size_t max) {
        size_t n = buf ? (len < max ? len : max) : 0;
        /* Two passes over at most max bytes: the exact size beats holding 4x the input. */
        size_t out_len = text_escaped_len(buf, n);
        char *out = malloc(out_len + 1);

        if (!out)
                return NULL;
        (void) text_escape_into(out, out_len + 1, buf, n);
        return out;
}

/* ---- names ---------------------------------------------------------------------------- */

static bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_alnum(char c) { return is_lower(c) || (c >= 'A' && c <= 'Z') || is_digit(c); }

bool text_controller_id_valid_len(const char *s, size_t len) {
        if (!s || len < 1 || len > TEXT_NAME_MAX || !is_alnum(s[0]))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '.' && s[i] != ':' && s[i] != '-')
                        return false;
        return true;
}

bool text_controller_id_valid(const char *s) {
        return s && text_controller_id_valid_len(s, strnlen(s, TEXT_NAME_MAX + 1));
}

bool text_outage_type_valid_len(const char *s, size_t len) {
        if (!s || len < 1 || len > TEXT_NAME_MAX || !is_lower(s[0]))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '_')
                        return false;
        return true;
}

bool text_outage_type_valid(const char *s) {
        return s && text_outage_type_valid_len(s, strnlen(s, TEXT_NAME_MAX + 1));
}

/* ---- MQTT URIs ------------------------------------------------------------------------ */

/* The schemes paho 1.3 MQTTAsync accepts, and which of them make it use TLS. */
static const struct { const char *prefix; bool tls; } uri_schemes[] = {
        { "tcp://",   false },
        { "mqtt://",  false },
        { "ws://",    false },
        { "ssl://",   true },
        { "mqtts://", true },
        { "wss://",   true },
};

size_t text_uri_scheme(const char *uri, bool *ret_tls) {
        if (!uri)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(uri_schemes); i++) {
                size_t n = strlen(uri_schemes[i].prefix);

                if (strncmp(uri, uri_schemes[i].prefix, n) == 0) {
                        if (ret_tls)
                                *ret_tls = uri_schemes[i].tls;
                        return n;
                }
        }
        return 0;
}

bool text_uri_is_tls(const char *uri) {
        bool tls = false;

        return text_uri_scheme(uri, &tls) > 0 && tls;
}

/* ---- durations and sizes -------------------------------------------------------------- */

/* Reads a run of decimal digits; -ERANGE on uint64 overflow, -EINVAL if there is none. */
static int parse_digits(const char **p, uint64_t *ret) {
        const char *s = *p;
        uint64_t v = 0;

        if (!is_digit(*s))
                return -EINVAL;
        for (; is_digit(*s); s++) {
                unsigned d = (unsigned) (*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *p = s;
        *ret = v;
        return 0;
}

int text_parse_uint(const char *s, uint64_t *ret) {
        const char *p = s;
        uint64_t n;
        int r;

        if (!s)
                return -EINVAL;
        r = parse_digits(&p, &n);
        if (r == -ERANGE && s[strspn(s, "0123456789")] == '\0')
                return -ERANGE;
        if (r < 0 || *p != '\0')
                return -EINVAL;
        *ret = n;
        return 0;
}

/* Smallest first; a unit is the whole run of letters after the digits, so "ms" and "s"
 * or "min" and "m" cannot be confused. */
static const struct { const char *name; uint64_t usec; } duration_units[] = {
        { "us",  1 },
        { "ms",  USEC_PER_MSEC },
        { "s",   USEC_PER_SEC },
        { "min", USEC_PER_MINUTE },
        { "h",   USEC_PER_HOUR },
        { "d",   USEC_PER_DAY },
};

static const struct { const char *name; uint64_t bytes; } size_units[] = {
        { "B",   1 },
        { "KiB", UINT64_C(1) << 10 },
        { "MiB", UINT64_C(1) << 20 },
        { "GiB", UINT64_C(1) << 30 },
};

static bool is_alpha(char c) { return is_lower(c) || (c >= 'A' && c <= 'Z'); }

/* The duration unit spelled by exactly the n bytes at p, or -1. */
static int duration_unit(const char *p, size_t n) {
        for (size_t i = 0; i < ELEMENTSOF(duration_units); i++)
                if (strlen(duration_units[i].name) == n && strncmp(p, duration_units[i].name, n) == 0)
                        return (int) i;
        return -1;
}

int text_parse_duration(const char *s, usec_t *ret) {
        const char *p = s;
        uint64_t total = 0;

        if (!s || !*s)
                return -EINVAL;
        if (streq(s, "0")) {
                *ret = 0;
                return 0;
        }
        while (*p) {
                uint64_t n, unit;
                size_t ulen = 0;
                int r, u;

                r = parse_digits(&p, &n);
                if (r < 0)
                        return r;
                while (is_alpha(p[ulen]))
                        ulen++;
                u = duration_unit(p, ulen);
                if (u < 0)
                        return -EINVAL;                 /* "5", "5 min", "5m" */
                p += ulen;
                unit = duration_units[u].usec;
                if (n > (uint64_t) INT64_MAX / unit || n * unit > (uint64_t) INT64_MAX - total)
                        return -ERANGE;
                total += n * unit;
        }
        *ret = (usec_t) total;
        return 0;
}

int text_parse_size(const char *s, uint64_t *ret) {
        const char *p = s;
        uint64_t n;
        int r;

        if (!s || !*s)
                return -EINVAL;
        if (streq(s, "0")) {
                *ret = 0;
                return 0;
        }
        r = parse_digits(&p, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ELEMENTSOF(size_units); i++)
                if (streq(p, size_units[i].name)) {
                        if (n > UINT64_MAX / size_units[i].bytes)
                                return -ERANGE;
                        *ret = n * size_units[i].bytes;
                        return 0;
                }
        return -EINVAL;
}

char *text_format_duration(usec_t d, char buf[static TEXT_DURATION_MAX]) {
        /* The magnitude as uint64: -INT64_MIN does not fit in int64. */
        uint64_t v = d < 0 ? (uint64_t) 0 - (uint64_t) d : (uint64_t) d;
        size_t o = 0;

        if (v == 0) {
                strcpy(buf, "0");
                return buf;
        }
        if (d < 0)
                buf[o++] = '-';
        for (size_t i = ELEMENTSOF(duration_units); i-- > 0 && v > 0;) {
                uint64_t n = v / duration_units[i].usec;

                if (n == 0)
                        continue;
                /* At most 26 bytes in all: the bound is in TEXT_DURATION_MAX. */
                o += (size_t) snprintf(buf + o, TEXT_DURATION_MAX - o, "%" PRIu64 "%s", n,
                                       duration_units[i].name);
                v -= n * duration_units[i].usec;
        }
        return buf;
}

char *text_format_size(uint64_t v, char buf[static TEXT_SIZE_MAX]) {
        size_t i = ELEMENTSOF(size_units) - 1;

        if (v == 0) {
                strcpy(buf, "0");
                return buf;
        }
        while (i > 0 && v % size_units[i].bytes != 0)
                i--;
        snprintf(buf, TEXT_SIZE_MAX, "%" PRIu64 "%s", v / size_units[i].bytes, size_units[i].name);
        return buf;
}
