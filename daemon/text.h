/* text.h — text rules shared by the modules: UTF-8 well-formedness, the \xNN escaping of
 * reject rows, the controller id and outage type patterns (SPEC section 2), which MQTT URI
 * schemes mean TLS, and the duration and size notation of the configuration (SPEC
 * section 5). Pure: no I/O, no locale, no allocation except text_escape(). */
#pragma once

#include "common.h"

/* ---- UTF-8 ---------------------------------------------------------------------------- */

/* Length (1 to 4) of the well-formed UTF-8 sequence at the start of the n bytes at p, or 0
 * when they do not start one: a continuation byte, C0/C1/F5-FF leads, an overlong form, a
 * surrogate (U+D800-U+DFFF), a code point above U+10FFFF, or a sequence cut short by n
 * (Unicode 15, table 3-7). NUL is a valid one-byte sequence here; n == 0 gives 0. */
size_t text_utf8_seq_len(const void *p, size_t n);

/* Number of leading bytes of the len bytes at p that are well-formed UTF-8: len when all
 * of them are, else the offset of the first byte that does not start a well-formed
 * sequence. NUL counts as valid. */
size_t text_utf8_valid_prefix(const void *p, size_t len);

/* True if all len bytes at p are well-formed UTF-8 (NUL counts as valid). */
bool text_utf8_valid(const void *p, size_t len);

/* True if the NUL-terminated s has at most max bytes, is well-formed UTF-8 and contains no
 * control character: none of U+0001-U+001F, U+007F, U+0080-U+009F. The rule for the free
 * text of the configuration (paths, user names, URIs, topics). s NULL: false. */
bool text_plain_valid(const char *s, size_t max);

/* ---- escaping ------------------------------------------------------------------------- */

/* Escaping as the reject rows spell text (SPEC section 2): well-formed UTF-8 sequences
 * are copied, every other byte and every NUL byte becomes the four characters "\xNN" with
 * lowercase hex digits, one escape per byte. */

/* Writes the escaped form of the len bytes at src into dst (size bytes, NUL-terminated
 * when size > 0). Stops before the first unit (a sequence or an escape) that does not fit
 * whole, so the output is never cut inside a character or an escape. Returns how many
 * source bytes were written; len means all of them. src may be NULL when len is 0. */
size_t text_escape_into(char *dst, size_t size, const void *src, size_t len);

/* Length of the escaped form of the len bytes at src, without the terminating NUL. */
size_t text_escaped_len(const void *src, size_t len);

/* Escapes at most the first max bytes of buf. A sequence cut by max is not well-formed
 * within the bytes taken and is escaped byte by byte. buf may be NULL (empty). Returns a
 * NUL-terminated string (caller owns, free()) or NULL on ENOMEM. */
char *text_escape(const void *buf, size_t len, size_t max);

/* ---- names ---------------------------------------------------------------------------- */

/* Longest controller id and outage type, in bytes (both are ASCII). */
#define TEXT_NAME_MAX 64

/* ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$ over exactly len bytes (an embedded NUL fails). */
bool text_controller_id_valid_len(const char *s, size_t len);
/* The same on a NUL-terminated string; NULL: false. */
bool text_controller_id_valid(const char *s);

/* ^[a-z][a-z0-9_]{0,63}$ over exactly len bytes (an embedded NUL fails). */
bool text_outage_type_valid_len(const char *s, size_t len);
/* The same on a NUL-terminated string; NULL: false. */
bool text_outage_type_valid(const char *s);

/* ---- MQTT URIs ------------------------------------------------------------------------ */

/* Length of the scheme prefix of uri when it is one paho understands ("tcp://",
 * "mqtt://", "ws://", "ssl://", "mqtts://", "wss://"; case-sensitive), else 0. With a
 * known scheme and ret_tls not NULL, *ret_tls says whether it means TLS. */
size_t text_uri_scheme(const char *uri, bool *ret_tls);

/* True if uri starts with a scheme that makes paho use TLS: ssl://, mqtts:// or wss://.
 * NULL: false. */
bool text_uri_is_tls(const char *uri);

/* ---- durations and sizes -------------------------------------------------------------- */

/* Durations are integers with a unit, us, ms, s, min, h or d, optionally combined
 * ("1h30min"); a bare "0" is zero. Sizes are an integer with B, KiB, MiB or GiB, or "0". */

/* Parses a non-negative decimal integer: digits only, no sign, no blanks. Returns 0,
 * -EINVAL (empty or not all digits) or -ERANGE (all digits, beyond UINT64_MAX); *ret is
 * untouched on failure. s NULL: -EINVAL. */
int text_parse_uint(const char *s, uint64_t *ret);

/* Parses a duration. Returns 0, -EINVAL (not the notation) or -ERANGE (beyond INT64_MAX
 * microseconds); *ret is untouched on failure. s NULL: -EINVAL. */
int text_parse_duration(const char *s, usec_t *ret);

/* Parses a size. Returns 0, -EINVAL or -ERANGE (beyond UINT64_MAX bytes); *ret is
 * untouched on failure. s NULL: -EINVAL. */
int text_parse_size(const char *s, uint64_t *ret);

/* Longest formatted duration ("-106751991d4h54s775ms808us") and size, with the NUL. */
#define TEXT_DURATION_MAX 32
#define TEXT_SIZE_MAX 32

/* Writes d with the largest units first and no zero parts ("1h30min", "1s500ms"); "0" for
 * zero; negative durations get a leading '-'. The output parses back to d (for d >= 0).
 * Returns buf. */
char *text_format_duration(usec_t d, char buf[static TEXT_DURATION_MAX]);

/* Writes v in the largest unit that divides it exactly ("64KiB", "1025B"); "0" for zero.
 * The output parses back to v. Returns buf. */
char *text_format_size(uint64_t v, char buf[static TEXT_SIZE_MAX]);
