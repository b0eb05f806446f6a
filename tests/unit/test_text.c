/* test_text.c — the text rules: UTF-8 well-formedness against a reference decoder (every
 * boundary code point, every length, cut sequences), the \xNN escaping (NUL, lowercase hex,
 * the max cut, bounded buffers), the name patterns byte by byte, TLS URI schemes, and the
 * duration and size notation both ways. */
#include <inttypes.h>
#include <stdio.h>

#include <criterion/criterion.h>

#include "text.h"

/* ---- a reference decoder, written the other way round -------------------------------- */

/* Decodes by the bit patterns, then applies the range rules; returns the length of a
 * well-formed sequence at p (n bytes), or 0. */
static size_t ref_seq_len(const unsigned char *p, size_t n) {
        uint32_t cp;
        size_t k;

        if (n == 0)
                return 0;
        if ((p[0] & 0x80) == 0)
                return 1;
        if ((p[0] & 0xe0) == 0xc0)
                k = 2, cp = p[0] & 0x1f;
        else if ((p[0] & 0xf0) == 0xe0)
                k = 3, cp = p[0] & 0x0f;
        else if ((p[0] & 0xf8) == 0xf0)
                k = 4, cp = p[0] & 0x07;
        else
                return 0;
        if (n < k)
                return 0;
        for (size_t i = 1; i < k; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000))
                return 0;                       /* overlong */
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                return 0;
        return k;
}

/* Encodes cp (no checks) and returns the length. */
static size_t encode(uint32_t cp, unsigned char *out) {
        if (cp < 0x80) {
                out[0] = (unsigned char) cp;
                return 1;
        }
        if (cp < 0x800) {
                out[0] = (unsigned char) (0xc0 | cp >> 6);
                out[1] = (unsigned char) (0x80 | (cp & 0x3f));
                return 2;
        }
        if (cp < 0x10000) {
                out[0] = (unsigned char) (0xe0 | cp >> 12);
                out[1] = (unsigned char) (0x80 | (cp >> 6 & 0x3f));
                out[2] = (unsigned char) (0x80 | (cp & 0x3f));
                return 3;
        }
        out[0] = (unsigned char) (0xf0 | cp >> 18);
        out[1] = (unsigned char) (0x80 | (cp >> 12 & 0x3f));
        out[2] = (unsigned char) (0x80 | (cp >> 6 & 0x3f));
        out[3] = (unsigned char) (0x80 | (cp & 0x3f));
        return 4;
}

/* ---- UTF-8 ---------------------------------------------------------------------------- */

Test(text, utf8_every_code_point_is_accepted_whole_and_refused_cut) {
        for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
                unsigned char b[4];
                size_t k;

                if (cp >= 0xd800 && cp <= 0xdfff)
                        continue;
                k = encode(cp, b);
                cr_assert_eq(text_utf8_seq_len(b, k), k, "U+%04" PRIX32, cp);
                /* more bytes available do not change the length */
                for (size_t j = 1; j < k; j++)
                        cr_assert_eq(text_utf8_seq_len(b, j), 0, "U+%04" PRIX32 " cut to %zu", cp, j);
        }
}

Test(text, utf8_surrogates_and_beyond_are_refused) {
        unsigned char b[4];

        for (uint32_t cp = 0xd800; cp <= 0xdfff; cp++) {
                cr_assert_eq(encode(cp, b), 3);
                cr_assert_eq(text_utf8_seq_len(b, 3), 0, "U+%04" PRIX32, cp);
        }
        for (uint32_t cp = 0x110000; cp <= 0x1fffff; cp += 0x1111) {
                cr_assert_eq(encode(cp, b), 4);
                cr_assert_eq(text_utf8_seq_len(b, 4), 0, "U+%04" PRIX32, cp);
        }
}

Test(text, utf8_boundary_code_points) {
        static const struct { const char *s; size_t len; } cases[] = {
                { "\x00", 1 }, { "\x7f", 1 },                              /* U+0000, U+007F */
                { "\xc2\x80", 2 }, { "\xdf\xbf", 2 },                      /* U+0080, U+07FF */
                { "\xe0\xa0\x80", 3 }, { "\xed\x9f\xbf", 3 },              /* U+0800, U+D7FF */
                { "\xee\x80\x80", 3 }, { "\xef\xbf\xbf", 3 },              /* U+E000, U+FFFF */
                { "\xf0\x90\x80\x80", 4 }, { "\xf4\x8f\xbf\xbf", 4 },      /* U+10000, U+10FFFF */
                { "\xc0\x80", 0 }, { "\xc1\xbf", 0 },                      /* overlong 2-byte */
                { "\xe0\x80\x80", 0 }, { "\xe0\x9f\xbf", 0 },              /* overlong 3-byte */
                { "\xf0\x80\x80\x80", 0 }, { "\xf0\x8f\xbf\xbf", 0 },      /* overlong 4-byte */
                { "\xed\xa0\x80", 0 }, { "\xed\xbf\xbf", 0 },              /* U+D800, U+DFFF */
                { "\xf4\x90\x80\x80", 0 }, { "\xf7\xbf\xbf\xbf", 0 },      /* U+110000, U+1FFFFF */
                { "\xf8\x88\x80\x80\x80", 0 }, { "\xfc\x84\x80\x80\x80\x80", 0 },  /* 5 and 6 bytes */
                { "\x80", 0 }, { "\xbf", 0 }, { "\xfe", 0 }, { "\xff", 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                size_t n = cases[i].s[0] ? strlen(cases[i].s) : 1;
                cr_assert_eq(text_utf8_seq_len(cases[i].s, n), cases[i].len, "case %zu", i);
        }
        cr_assert_eq(text_utf8_seq_len("a", 0), 0, "no bytes, no sequence");
}

Test(text, utf8_every_two_byte_combination_matches_the_reference) {
        for (unsigned a = 0; a < 256; a++)
                for (unsigned b = 0; b < 256; b++) {
                        unsigned char s[2] = { (unsigned char) a, (unsigned char) b };
                        cr_assert_eq(text_utf8_seq_len(s, 2), ref_seq_len(s, 2), "%02x %02x", a, b);
                }
}

Test(text, utf8_every_three_byte_lead_combination_matches_the_reference) {
        for (unsigned a = 0xe0; a <= 0xef; a++)
                for (unsigned b = 0; b < 256; b++)
                        for (unsigned c = 0; c < 256; c++) {
                                unsigned char s[3] = { (unsigned char) a, (unsigned char) b, (unsigned char) c };
                                if (text_utf8_seq_len(s, 3) != ref_seq_len(s, 3))
                                        cr_assert_fail("%02x %02x %02x", a, b, c);
                        }
}

Test(text, utf8_four_byte_leads_match_the_reference) {
        static const unsigned char tails[] = { 0x00, 0x7f, 0x80, 0x9f, 0xa0, 0xbf, 0xc0, 0xff };

        for (unsigned a = 0xf0; a <= 0xff; a++)
                for (unsigned b = 0; b < 256; b++)
                        for (size_t c = 0; c < ELEMENTSOF(tails); c++)
                                for (size_t d = 0; d < ELEMENTSOF(tails); d++) {
                                        unsigned char s[4] = { (unsigned char) a, (unsigned char) b, tails[c], tails[d] };
                                        if (text_utf8_seq_len(s, 4) != ref_seq_len(s, 4))
                                                cr_assert_fail("%02x %02x %02x %02x", a, b, tails[c], tails[d]);
                                }
}

Test(text, utf8_bad_continuation_at_every_position) {
        static const char *const seqs[] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };

        for (size_t i = 0; i < ELEMENTSOF(seqs); i++) {
                size_t k = strlen(seqs[i]);
                for (size_t j = 1; j < k; j++) {
                        unsigned char b[4];
                        memcpy(b, seqs[i], k);
                        b[j] = 'A';
                        cr_assert_eq(text_utf8_seq_len(b, k), 0);
                        b[j] = 0xc0;
                        cr_assert_eq(text_utf8_seq_len(b, k), 0);
                }
        }
}

Test(text, utf8_valid_prefix_and_valid) {
        cr_assert_eq(text_utf8_valid_prefix("", 0), 0);
        cr_assert_eq(text_utf8_valid_prefix("abc", 3), 3);
        cr_assert_eq(text_utf8_valid_prefix("a\0b", 3), 3, "NUL is valid UTF-8");
        cr_assert_eq(text_utf8_valid_prefix("ab\xff", 3), 2);
        cr_assert_eq(text_utf8_valid_prefix("\xc3\xa9x\xc3", 4), 3, "a cut sequence at the end");
        cr_assert_eq(text_utf8_valid_prefix("\xe2\x82\xac\xed\xa0\x80", 6), 3);
        cr_assert_eq(text_utf8_valid_prefix("\xf0\x9f\x98\x80", 4), 4);
        cr_assert(text_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
        cr_assert_not(text_utf8_valid("\xc0\xaf", 2));
        cr_assert(text_utf8_valid(NULL, 0));
}

Test(text, plain_text) {
        char max[9], over[10];

        cr_assert(text_plain_valid("", 10));
        cr_assert(text_plain_valid("/etc/outaged/ca.pem", 100));
        cr_assert(text_plain_valid("\xc2\xa0\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 100), "U+00A0 and above");
        cr_assert(text_plain_valid(" ~", 2));
        for (unsigned c = 1; c < 0x20; c++) {
                char s[] = { 'a', (char) c, 'b', 0 };
                cr_assert_not(text_plain_valid(s, 10), "0x%02x", c);
        }
        cr_assert_not(text_plain_valid("a\x7f", 10), "DEL");
        cr_assert_not(text_plain_valid("a\xc2\x80", 10), "U+0080");
        cr_assert_not(text_plain_valid("a\xc2\x9f", 10), "U+009F");
        cr_assert_not(text_plain_valid("\xc0\xaf", 10), "overlong");
        cr_assert_not(text_plain_valid("\xed\xa0\x80", 10), "surrogate");
        cr_assert_not(text_plain_valid("a\xc3", 10), "cut");
        cr_assert_not(text_plain_valid(NULL, 10));
        memset(max, 'x', 8);
        max[8] = '\0';
        memset(over, 'x', 9);
        over[9] = '\0';
        cr_assert(text_plain_valid(max, 8));
        cr_assert_not(text_plain_valid(over, 8));
        cr_assert_not(text_plain_valid("\xc3\xa9", 1), "max counts bytes");
}

/* ---- escaping ------------------------------------------------------------------------- */

Test(text, escape_rules) {
        char *s;
#define ESC(in, max, want)                                                          \
        do {                                                                        \
                s = text_escape(in, sizeof(in) - 1, max);                           \
                cr_assert_not_null(s);                                              \
                cr_assert_str_eq(s, want, "%s", #in);                               \
                cr_assert_eq(text_escaped_len(in, sizeof(in) - 1 < (size_t) (max) ? sizeof(in) - 1 : (size_t) (max)), \
                             strlen(want));                                         \
                free(s);                                                            \
        } while (0)

        ESC("plain ascii {}", 1024, "plain ascii {}");
        ESC("", 1024, "");
        ESC("abc", 0, "");
        ESC("abcdef", 3, "abc");
        ESC("a\0b", 1024, "a\\x00b");
        ESC("\0\0", 1024, "\\x00\\x00");
        ESC("\x01\x1f\x7f", 1024, "\x01\x1f\x7f");                      /* valid UTF-8, kept */
        ESC("\\x41", 1024, "\\x41");                                    /* not an escape of ours */
        ESC("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 1024, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
        ESC("\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 1024,
            "\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf");   /* range ends */
        ESC("\xed\x9f\xbf\xee\x80\x80", 1024, "\xed\x9f\xbf\xee\x80\x80");              /* around surrogates */
        ESC("\xff", 1024, "\\xff");
        ESC("\xab\xcd\xef", 1024, "\\xab\\xcd\\xef");                   /* lowercase hex */
        ESC("\xfe\xf5\xf8", 1024, "\\xfe\\xf5\\xf8");
        ESC("\x80\xbf", 1024, "\\x80\\xbf");                            /* lone continuations */
        ESC("\xc0\xaf", 1024, "\\xc0\\xaf");                            /* overlong '/' */
        ESC("\xc1\xbf", 1024, "\\xc1\\xbf");
        ESC("\xe0\x80\xaf", 1024, "\\xe0\\x80\\xaf");                   /* overlong 3-byte */
        ESC("\xe0\x9f\xbf", 1024, "\\xe0\\x9f\\xbf");
        ESC("\xf0\x80\x80\xaf", 1024, "\\xf0\\x80\\x80\\xaf");          /* overlong 4-byte */
        ESC("\xf0\x8f\xbf\xbf", 1024, "\\xf0\\x8f\\xbf\\xbf");
        ESC("\xed\xa0\x80", 1024, "\\xed\\xa0\\x80");                   /* U+D800 */
        ESC("\xed\xbf\xbf", 1024, "\\xed\\xbf\\xbf");                   /* U+DFFF */
        ESC("\xf4\x90\x80\x80", 1024, "\\xf4\\x90\\x80\\x80");          /* U+110000 */
        ESC("\xe2\x82", 1024, "\\xe2\\x82");                            /* truncated at the end */
        ESC("\xe2\x82" "A", 1024, "\\xe2\\x82A");                       /* truncated in the middle */
        ESC("\xf0\x9f\x98" "\xc3\xa9", 1024, "\\xf0\\x9f\\x98\xc3\xa9");
        ESC("\xc3\xa9", 1, "\\xc3");                                    /* cut by max */
        ESC("\xe2\x82\xac", 2, "\\xe2\\x82");
        ESC("\xf0\x9f\x98\x80", 3, "\\xf0\\x9f\\x98");
        ESC("a\xc3\xa9", 3, "a\xc3\xa9");
        ESC("a\xc3\xa9", 2, "a\\xc3");
#undef ESC
        s = text_escape(NULL, 0, 1024);
        cr_assert_str_eq(s, "");
        free(s);
        s = text_escape(NULL, 5, 1024);
        cr_assert_str_eq(s, "", "NULL is empty whatever len says");
        free(s);
}

Test(text, escape_every_byte) {
        /* each single byte: ASCII except NUL is kept, everything else is one \xNN */
        for (unsigned b = 0; b < 256; b++) {
                unsigned char in = (unsigned char) b;
                char *s = text_escape(&in, 1, 1024), want[8];

                cr_assert_not_null(s);
                if (b > 0 && b < 0x80)
                        snprintf(want, sizeof want, "%c", b);
                else
                        snprintf(want, sizeof want, "\\x%02x", b);
                cr_assert_str_eq(s, want);
                free(s);
        }
}

Test(text, escape_every_code_point_is_kept) {
        for (uint32_t cp = 1; cp <= 0x10ffff; cp += (cp < 0x10000 ? 1 : 0x101)) {
                unsigned char b[5];
                size_t k;
                char *s;

                if (cp >= 0xd800 && cp <= 0xdfff)
                        continue;
                k = encode(cp, b);
                s = text_escape(b, k, k);
                cr_assert_eq(strlen(s), k);
                cr_assert_eq(memcmp(s, b, k), 0, "U+%04" PRIX32, cp);
                free(s);
                /* cut by max one byte short: every byte is escaped */
                if (k > 1) {
                        s = text_escape(b, k, k - 1);
                        cr_assert_eq(strlen(s), 4 * (k - 1), "U+%04" PRIX32, cp);
                        free(s);
                }
        }
}

Test(text, escape_is_idempotent) {
        static const char in[] = "a\0\xff\xc3\xa9\xed\xa0\x80\xf0\x9f\x98";
        char *once = text_escape(in, sizeof in - 1, SIZE_MAX);
        char *twice = text_escape(once, strlen(once), SIZE_MAX);

        cr_assert_str_eq(once, "a\\x00\\xff\xc3\xa9\\xed\\xa0\\x80\\xf0\\x9f\\x98");
        cr_assert_str_eq(twice, once);
        cr_assert(text_utf8_valid(once, strlen(once)));
        free(once);
        free(twice);
}

Test(text, escape_into_never_cuts_a_unit) {
        static const char in[] = "ab\xc3\xa9\xff" "c\xf0\x9f\x98\x80";
        /* units: a b é \xff c 😀 -> output lengths 1 1 2 4 1 4 */
        static const size_t ends[] = { 0, 1, 2, 4, 8, 9, 13 };
        static const size_t consumed[] = { 0, 1, 2, 4, 5, 6, 10 };
        char out[32];

        for (size_t size = 0; size <= 20; size++) {
                size_t want_i = 0, got;

                for (size_t u = 0; u < ELEMENTSOF(ends); u++)
                        if (ends[u] < size)
                                want_i = u;
                memset(out, '#', sizeof out);
                got = text_escape_into(out, size, in, sizeof in - 1);
                if (size == 0) {
                        cr_assert_eq(got, 0);
                        cr_assert_eq(out[0], '#', "nothing written with size 0");
                        continue;
                }
                cr_assert_eq(got, consumed[want_i], "size %zu", size);
                cr_assert_eq(strlen(out), ends[want_i], "size %zu", size);
                cr_assert_eq(strncmp(out, "ab\xc3\xa9\\xff" "c\xf0\x9f\x98\x80", ends[want_i]), 0);
        }
        cr_assert_eq(text_escape_into(out, sizeof out, NULL, 0), 0);
        cr_assert_str_eq(out, "");
}

/* ---- names ---------------------------------------------------------------------------- */

static char *repeat(char c, size_t n) {
        char *s = malloc(n + 1);

        memset(s, c, n);
        s[n] = '\0';
        return s;
}

static bool is_id_first(unsigned c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

Test(text, controller_id_every_byte_in_every_position) {
        for (unsigned c = 0; c < 256; c++) {
                char first[] = { (char) c, 'a', 0 }, later[] = { 'a', (char) c, 'b', 0 };
                bool later_ok = is_id_first(c) || c == '_' || c == '.' || c == ':' || c == '-';

                cr_assert_eq(text_controller_id_valid_len(first, 2), is_id_first(c), "0x%02x first", c);
                cr_assert_eq(text_controller_id_valid_len(later, 3), later_ok, "0x%02x later", c);
                if (c == 0)
                        continue;
                cr_assert_eq(text_controller_id_valid(first), is_id_first(c), "0x%02x first", c);
                cr_assert_eq(text_controller_id_valid(later), later_ok, "0x%02x later", c);
        }
}

Test(text, controller_id_every_length) {
        for (size_t n = 0; n <= 70; n++) {
                char *s = repeat('a', n);
                cr_assert_eq(text_controller_id_valid(s), n >= 1 && n <= 64, "length %zu", n);
                cr_assert_eq(text_controller_id_valid_len(s, n), n >= 1 && n <= 64, "length %zu", n);
                free(s);
        }
        cr_assert(text_controller_id_valid("ctrl_1"));
        cr_assert(text_controller_id_valid("9a.b:c-d_E"));
        cr_assert_not(text_controller_id_valid(NULL));
        cr_assert_not(text_controller_id_valid_len(NULL, 3));
        cr_assert_not(text_controller_id_valid("ctrl\xc3\xa9"));
        cr_assert_not(text_controller_id_valid_len("ab\0c", 4), "an embedded NUL");
        cr_assert(text_controller_id_valid_len("abXX", 2), "only len bytes count");
}

Test(text, outage_type_every_byte_in_every_position) {
        for (unsigned c = 0; c < 256; c++) {
                char first[] = { (char) c, 'a', 0 }, later[] = { 'a', (char) c, 'b', 0 };
                bool first_ok = c >= 'a' && c <= 'z';
                bool later_ok = first_ok || (c >= '0' && c <= '9') || c == '_';

                cr_assert_eq(text_outage_type_valid_len(first, 2), first_ok, "0x%02x first", c);
                cr_assert_eq(text_outage_type_valid_len(later, 3), later_ok, "0x%02x later", c);
                if (c == 0)
                        continue;
                cr_assert_eq(text_outage_type_valid(first), first_ok, "0x%02x first", c);
                cr_assert_eq(text_outage_type_valid(later), later_ok, "0x%02x later", c);
        }
}

Test(text, outage_type_every_length) {
        for (size_t n = 0; n <= 70; n++) {
                char *s = repeat('a', n);
                cr_assert_eq(text_outage_type_valid(s), n >= 1 && n <= 64, "length %zu", n);
                cr_assert_eq(text_outage_type_valid_len(s, n), n >= 1 && n <= 64, "length %zu", n);
                free(s);
        }
        cr_assert(text_outage_type_valid("panel_outage"));
        cr_assert(text_outage_type_valid("a_1_"));
        cr_assert_not(text_outage_type_valid(NULL));
        cr_assert_not(text_outage_type_valid("Panel"));
        cr_assert_not(text_outage_type_valid("1panel"));
        cr_assert_not(text_outage_type_valid("_panel"));
        cr_assert_not(text_outage_type_valid("panel-outage"));
        cr_assert_not(text_outage_type_valid_len("ab\0c", 4));
}

/* ---- URIs ----------------------------------------------------------------------------- */

Test(text, uri_schemes_and_tls) {
        static const struct { const char *uri; size_t len; bool tls; } cases[] = {
                { "tcp://h:1883", 6, false }, { "mqtt://h", 7, false }, { "ws://h/mqtt", 5, false },
                { "ssl://h:8883", 6, true }, { "mqtts://h", 8, true }, { "wss://h:443/mqtt", 6, true },
                { "tcp://", 6, false },
                { "TCP://h", 0, false }, { "SSL://h", 0, false }, { "http://h", 0, false },
                { "https://h", 0, false }, { "ssl:/h", 0, false }, { "tls://h", 0, false },
                { "h:1883", 0, false }, { "", 0, false }, { " ssl://h", 0, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                bool tls = !cases[i].tls;
                size_t n = text_uri_scheme(cases[i].uri, &tls);

                cr_assert_eq(n, cases[i].len, "%s", cases[i].uri);
                if (n > 0)
                        cr_assert_eq(tls, cases[i].tls, "%s", cases[i].uri);
                cr_assert_eq(text_uri_is_tls(cases[i].uri), cases[i].tls, "%s", cases[i].uri);
        }
        cr_assert_eq(text_uri_scheme("tcp://h", NULL), 6);
        cr_assert_eq(text_uri_scheme(NULL, NULL), 0);
        cr_assert_not(text_uri_is_tls(NULL));
}

/* ---- durations and sizes -------------------------------------------------------------- */

Test(text, parse_durations) {
        static const struct { const char *s; usec_t v; } ok[] = {
                { "0", 0 }, { "0s", 0 }, { "1us", 1 }, { "1ms", 1000 }, { "1s", USEC_PER_SEC },
                { "1min", USEC_PER_MINUTE }, { "1h", USEC_PER_HOUR }, { "1d", USEC_PER_DAY },
                { "1h30min", 90 * USEC_PER_MINUTE }, { "2d12h", 60 * USEC_PER_HOUR },
                { "1s500ms", 1500 * USEC_PER_MSEC }, { "1d1h1min1s1ms1us", USEC_PER_DAY + USEC_PER_HOUR +
                  USEC_PER_MINUTE + USEC_PER_SEC + USEC_PER_MSEC + 1 },
                { "90s", 90 * USEC_PER_SEC }, { "007min", 7 * USEC_PER_MINUTE },
                { "9223372036854775807us", INT64_MAX }, { "106751991d4h54s775ms807us", INT64_MAX },
        };
        static const char *const invalid[] = {
                "", "5", "5 min", " 5min", "5min ", "-1s", "+1s", "1.5s", "1m", "1sec", "1S", "min",
                "1h30", "1h 30min", "0x10s", "1e3s", "00", "1s-",
        };
        static const char *const overflow[] = {
                "9223372036854775808us", "106751992d", "99999999999999999999s",
                "9223372036854775807us1us", "106751991d4h54s775ms808us",
        };
        usec_t v;

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                v = -1;
                cr_assert_eq(text_parse_duration(ok[i].s, &v), 0, "%s", ok[i].s);
                cr_assert_eq(v, ok[i].v, "%s", ok[i].s);
        }
        for (size_t i = 0; i < ELEMENTSOF(invalid); i++) {
                v = 42;
                cr_assert_eq(text_parse_duration(invalid[i], &v), -EINVAL, "%s", invalid[i]);
                cr_assert_eq(v, 42);
        }
        for (size_t i = 0; i < ELEMENTSOF(overflow); i++) {
                v = 42;
                cr_assert_eq(text_parse_duration(overflow[i], &v), -ERANGE, "%s", overflow[i]);
                cr_assert_eq(v, 42);
        }
        cr_assert_eq(text_parse_duration(NULL, &v), -EINVAL);
}

Test(text, parse_sizes) {
        static const struct { const char *s; uint64_t v; } ok[] = {
                { "0", 0 }, { "16B", 16 }, { "1KiB", 1024 }, { "64KiB", 65536 },
                { "3MiB", 3 << 20 }, { "2GiB", UINT64_C(2) << 30 }, { "18446744073709551615B", UINT64_MAX },
        };
        static const char *const invalid[] = {
                "", "64", "64 KiB", "64KB", "64k", "1.5MiB", "-1B", "KiB", "1MiB1KiB", "1B ",
        };
        static const char *const overflow[] = { "18446744073709551616B", "17179869184GiB" };
        uint64_t v;

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                cr_assert_eq(text_parse_size(ok[i].s, &v), 0, "%s", ok[i].s);
                cr_assert_eq(v, ok[i].v, "%s", ok[i].s);
        }
        for (size_t i = 0; i < ELEMENTSOF(invalid); i++) {
                v = 42;
                cr_assert_eq(text_parse_size(invalid[i], &v), -EINVAL, "%s", invalid[i]);
                cr_assert_eq(v, 42);
        }
        for (size_t i = 0; i < ELEMENTSOF(overflow); i++) {
                v = 42;
                cr_assert_eq(text_parse_size(overflow[i], &v), -ERANGE, "%s", overflow[i]);
                cr_assert_eq(v, 42);
        }
        cr_assert_eq(text_parse_size(NULL, &v), -EINVAL);
}

Test(text, parse_uint) {
        uint64_t v = 42;

        cr_assert_eq(text_parse_uint("0", &v), 0);
        cr_assert_eq(v, 0);
        cr_assert_eq(text_parse_uint("007", &v), 0);
        cr_assert_eq(v, 7);
        cr_assert_eq(text_parse_uint("18446744073709551615", &v), 0);
        cr_assert_eq(v, UINT64_MAX);
        v = 42;
        cr_assert_eq(text_parse_uint("18446744073709551616", &v), -ERANGE);
        cr_assert_eq(text_parse_uint("99999999999999999999999", &v), -ERANGE);
        cr_assert_eq(text_parse_uint("99999999999999999999999x", &v), -EINVAL);
        cr_assert_eq(text_parse_uint("", &v), -EINVAL);
        cr_assert_eq(text_parse_uint("-1", &v), -EINVAL);
        cr_assert_eq(text_parse_uint("+1", &v), -EINVAL);
        cr_assert_eq(text_parse_uint(" 1", &v), -EINVAL);
        cr_assert_eq(text_parse_uint("1 ", &v), -EINVAL);
        cr_assert_eq(text_parse_uint("10k", &v), -EINVAL);
        cr_assert_eq(text_parse_uint(NULL, &v), -EINVAL);
        cr_assert_eq(v, 42, "untouched on failure");
}

Test(text, format_durations) {
        static const struct { usec_t v; const char *s; } cases[] = {
                { 0, "0" }, { 1, "1us" }, { 1000, "1ms" }, { USEC_PER_SEC, "1s" },
                { 30 * USEC_PER_DAY, "30d" }, { 365 * USEC_PER_DAY, "365d" },
                { 90 * USEC_PER_MINUTE, "1h30min" }, { 5 * USEC_PER_MINUTE, "5min" },
                { 1500 * USEC_PER_MSEC, "1s500ms" }, { USEC_PER_DAY + 1, "1d1us" },
                { INT64_MAX, "106751991d4h54s775ms807us" },
                { -90 * USEC_PER_SEC, "-1min30s" }, { INT64_MIN, "-106751991d4h54s775ms808us" },
        };
        char buf[TEXT_DURATION_MAX];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                cr_assert_eq(text_format_duration(cases[i].v, buf), buf);
                cr_assert_str_eq(buf, cases[i].s);
                cr_assert_lt(strlen(buf), TEXT_DURATION_MAX);
        }
}

Test(text, format_duration_round_trips) {
        char buf[TEXT_DURATION_MAX];
        uint64_t x = 0x9e3779b97f4a7c15u;

        for (int i = 0; i < 100000; i++) {
                usec_t d, back = -1;

                /* xorshift: values of every magnitude, and some round ones */
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                d = (usec_t) (x >> (i % 63 + 1));
                if (i % 3 == 0)
                        d -= d % USEC_PER_SEC;
                text_format_duration(d, buf);
                cr_assert_eq(text_parse_duration(buf, &back), 0, "%s", buf);
                cr_assert_eq(back, d, "%s", buf);
        }
}

Test(text, format_sizes) {
        static const struct { uint64_t v; const char *s; } cases[] = {
                { 0, "0" }, { 1, "1B" }, { 1023, "1023B" }, { 1024, "1KiB" }, { 1025, "1025B" },
                { 65536, "64KiB" }, { UINT64_C(1) << 20, "1MiB" },
                { UINT64_C(256) << 20, "256MiB" }, { UINT64_C(3) << 30, "3GiB" },
                { UINT64_C(1) << 40, "1024GiB" }, { UINT64_MAX, "18446744073709551615B" },
        };
        char buf[TEXT_SIZE_MAX];
        uint64_t back;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                cr_assert_str_eq(text_format_size(cases[i].v, buf), cases[i].s);
                cr_assert_eq(text_parse_size(buf, &back), 0);
                cr_assert_eq(back, cases[i].v);
        }
        cr_assert_str_eq(text_format_size(1536, buf), "1536B", "3/2 KiB: no exact larger unit");
}
