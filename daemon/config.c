/* config.c — INI file -> struct Config. Every key of SPEC section 5 is one row of a table
 * (type, field offset, bounds, default, reloadable); each type is one row of another (parse,
 * format, free, swap). Errors name file:line and section.key. Also loads the two secrets
 * and writes the effective settings with secrets masked. Does not log and does not open
 * any connection. */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "text.h"

/* Bounds on the file itself: a configuration is a few kilobytes; anything far larger is a
 * mistake (or the wrong file) and must not be slurped into memory. */
#define CONFIG_FILE_MAX   (1024 * 1024)
#define CONFIG_LINE_MAX   8192
#define SECRET_MAX        (64 * 1024)
#define TEXT_MAX          1024          /* uri, topic, username */
#define PATH_VALUE_MAX    4095
#define CONNINFO_MAX      4096
#define OUTAGE_TYPES_MAX  1024
#define NAME_MAX_LEN      64            /* client_id, share_group, outage type names */

typedef struct ConfigKey ConfigKey;

/* What a key's type knows about its field. */
typedef struct ConfigType {
        const char *name;               /* for the docs: "duration", "size", "path", ... */
        /* Parses value into the field of c at k->offset. Returns 0, -EINVAL (sets *ret_why
         * to what was expected), -ERANGE (outside k->min..k->max) or -ENOMEM. Never
         * touches the field on failure. */
        int (*parse)(Config *c, const ConfigKey *k, const char *value, const char **ret_why);
        /* Writes the field as the file would spell it (nothing when unset). */
        void (*format)(const Config *c, const ConfigKey *k, FILE *f);
        /* Writes a bound (k->min or k->max) in the type's unit; NULL: the type has none. */
        void (*format_bound)(uint64_t v, char buf[static TEXT_DURATION_MAX]);
        /* Releases what the field owns; NULL: nothing. */
        void (*free)(Config *c, const ConfigKey *k);
        /* Exchanges the field (and what belongs to it) between a and b. */
        void (*swap)(Config *a, Config *b, const ConfigKey *k);
        /* The formatted value with its secrets masked, for the dump (caller owns, NULL on
         * ENOMEM); NULL: the type holds no secret. */
        char *(*mask)(const char *value);
} ConfigType;

struct ConfigKey {
        const char *section;
        const char *key;
        const ConfigType *type;
        size_t offset;
        uint64_t min, max;
        const char *def;                /* default as the file spells it, fed through parse; "" = unset */
        bool reloadable;                /* SIGHUP applies it: see config_reload_apply() */
};

#define FIELD(c, k, type) ((type *) ((uint8_t *) (c) + (k)->offset))

/* ---------------------------------------------------------------------------------------
 * Text validation. */

static bool is_name_char(char ch) {
        return isascii((unsigned char) ch) &&
               (isalnum((unsigned char) ch) || ch == '_' || ch == '.' || ch == ':' || ch == '-');
}

/* ---------------------------------------------------------------------------------------
 * Key parsers. */

static int set_string(Config *c, const ConfigKey *k, const char *value) {
        char **field = FIELD(c, k, char *);
        char *copy = NULL;

        if (*value) {
                copy = strdup(value);
                if (!copy)
                        return -ENOMEM;
        }
        free(*field);
        *field = copy;
        return 0;
}

static int parse_path(Config *c, const ConfigKey *k, const char *v, const char **why) {
        if (!text_plain_valid(v, PATH_VALUE_MAX)) {
                *why = "a file name of at most 4095 bytes without control characters";
                return -EINVAL;
        }
        return set_string(c, k, v);
}

static int parse_text(Config *c, const ConfigKey *k, const char *v, const char **why) {
        if (!text_plain_valid(v, TEXT_MAX)) {
                *why = "UTF-8 text of at most 1024 bytes without control characters";
                return -EINVAL;
        }
        return set_string(c, k, v);
}

static int parse_conninfo(Config *c, const ConfigKey *k, const char *v, const char **why) {
        if (!text_plain_valid(v, CONNINFO_MAX)) {
                *why = "a libpq conninfo string or URI of at most 4096 bytes";
                return -EINVAL;
        }
        return set_string(c, k, v);
}

static int parse_uri(Config *c, const ConfigKey *k, const char *v, const char **why) {
        size_t n;

        *why = "tcp://, ssl://, mqtt://, mqtts://, ws:// or wss:// followed by host[:port], "
               "at most 1024 bytes";
        if (strlen(v) > TEXT_MAX)
                return -EINVAL;
        for (const char *p = v; *p; p++)
                if (*p <= ' ' || *p >= 0x7f)
                        return -EINVAL;
        n = text_uri_scheme(v, NULL);
        if (n == 0 || v[n] == '\0' || v[n] == '/' || v[n] == ':')
                return -EINVAL;
        return set_string(c, k, v);
}

static int parse_client_id(Config *c, const ConfigKey *k, const char *v, const char **why) {
        size_t len = strlen(v);

        *why = "1 to 64 characters from A-Z a-z 0-9 _ . : -";
        if (len < 1 || len > NAME_MAX_LEN)
                return -EINVAL;
        for (size_t i = 0; i < len; i++)
                if (!is_name_char(v[i]))
                        return -EINVAL;
        return set_string(c, k, v);
}

/* A subscription filter with exactly one '+' level (the controller id) and no '#'. A
 * leading '$' is refused: such topics are the broker's ($SYS) or a shared subscription,
 * which share_group expresses. */
static int parse_topic(Config *c, const ConfigKey *k, const char *v, const char **why) {
        unsigned plus = 0;

        *why = "an MQTT topic filter with exactly one '+' as a whole level, no '#', not "
               "starting with '$', at most 1024 bytes";
        if (!*v || v[0] == '$' || !text_plain_valid(v, TEXT_MAX) || strchr(v, '#'))
                return -EINVAL;
        for (const char *p = v; *p; p++) {
                if (*p != '+')
                        continue;
                if ((p != v && p[-1] != '/') || (p[1] != '\0' && p[1] != '/'))
                        return -EINVAL;
                plus++;
        }
        return plus == 1 ? set_string(c, k, v) : -EINVAL;
}

static int parse_share_group(Config *c, const ConfigKey *k, const char *v, const char **why) {
        *why = "empty, or at most 64 bytes of UTF-8 without whitespace, '/', '+' or '#'";
        if (!text_plain_valid(v, NAME_MAX_LEN) || strpbrk(v, "/+# "))
                return -EINVAL;
        return set_string(c, k, v);
}

/* A topic to publish under: a valid MQTT topic name (UTF-8 without control characters),
 * no wildcards, no trailing '/' (the daemon appends "/<controller_id>/<outage_type>"), and
 * not starting with '$' (the broker's own topics). */
static int parse_topic_prefix(Config *c, const ConfigKey *k, const char *v, const char **why) {
        size_t len = strlen(v);

        *why = "empty, or an MQTT topic without '+' or '#', not starting with '$' and not ending "
               "with '/', at most 1024 bytes";
        if (*v && (v[0] == '$' || v[len - 1] == '/' || strpbrk(v, "+#") || !text_plain_valid(v, TEXT_MAX)))
                return -EINVAL;
        return set_string(c, k, v);
}

/* A PostgreSQL identifier that needs no quoting: ^[a-z_][a-z0-9_]{0,62}$ (63 bytes is
 * NAMEDATALEN - 1). */
static int parse_channel(Config *c, const ConfigKey *k, const char *v, const char **why) {
        size_t len = strlen(v);

        *why = "empty, or a name matching [a-z_][a-z0-9_]{0,62}";
        if (len > 63 || (*v && !((v[0] >= 'a' && v[0] <= 'z') || v[0] == '_')))
                return -EINVAL;
        for (size_t i = 1; i < len; i++)
                if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '0' && v[i] <= '9') || v[i] == '_'))
                        return -EINVAL;
        return set_string(c, k, v);
}

static int parse_uint_common(const ConfigKey *k, const char *v, uint64_t *ret, const char **why) {
        uint64_t n;
        int r;

        *why = "a non-negative integer";
        r = text_parse_uint(v, &n);
        if (r < 0)
                return r;
        if (n < k->min || n > k->max)
                return -ERANGE;
        *ret = n;
        return 0;
}

static int parse_uint(Config *c, const ConfigKey *k, const char *v, const char **why) {
        uint64_t n;
        int r = parse_uint_common(k, v, &n, why);

        if (r < 0)
                return r;
        *FIELD(c, k, uint64_t) = n;
        return 0;
}

static int parse_int(Config *c, const ConfigKey *k, const char *v, const char **why) {
        uint64_t n;
        int r = parse_uint_common(k, v, &n, why);

        if (r < 0)
                return r;
        *FIELD(c, k, int) = (int) n;            /* bounded by the table, far below INT_MAX */
        return 0;
}

static int parse_duration(Config *c, const ConfigKey *k, const char *v, const char **why) {
        usec_t d;
        int r;

        *why = "a duration: integers with us, ms, s, min, h or d, e.g. 90s or 1h30min";
        r = text_parse_duration(v, &d);
        if (r < 0)
                return r;
        if ((uint64_t) d < k->min || (uint64_t) d > k->max)
                return -ERANGE;
        *FIELD(c, k, usec_t) = d;
        return 0;
}

/* MQTT carries the session expiry in whole seconds. */
static int parse_duration_sec(Config *c, const ConfigKey *k, const char *v, const char **why) {
        usec_t d;
        int r;

        r = text_parse_duration(v, &d);
        if (r == 0 && d % USEC_PER_SEC != 0) {
                *why = "a whole number of seconds, e.g. 1d or 3600s";
                return -EINVAL;
        }
        return parse_duration(c, k, v, why);
}

static int parse_size(Config *c, const ConfigKey *k, const char *v, const char **why) {
        uint64_t n;
        int r;

        *why = "a size: an integer with B, KiB, MiB or GiB, e.g. 64KiB";
        r = text_parse_size(v, &n);
        if (r < 0)
                return r;
        if (n < k->min || n > k->max)
                return -ERANGE;
        *FIELD(c, k, uint64_t) = n;
        return 0;
}

static int parse_level(Config *c, const ConfigKey *k, const char *v, const char **why) {
        *why = "one of debug, info, notice, warning, err";
        return log_level_from_string(v, FIELD(c, k, LogLevel));
}

static void strv_free(char **v) {
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Space-separated names, stored sorted and without duplicates. */
static int parse_outage_types(Config *c, const ConfigKey *k, const char *v, const char **why) {
        char **types;
        size_t n = 0, u = 0;
        const char *p = v;

        *why = "space-separated names matching [a-z][a-z0-9_]{0,63}, at most 1024 of them";
        if (!*v) {
                strv_free(c->outage_types);
                c->outage_types = NULL;
                c->n_outage_types = 0;
                return 0;
        }
        types = calloc(OUTAGE_TYPES_MAX + 1, sizeof(char *));
        if (!types)
                return -ENOMEM;
        while (*p) {
                size_t len;

                p += strspn(p, " \t");
                len = strcspn(p, " \t");
                if (len == 0)
                        break;
                if (!text_outage_type_valid_len(p, len) || n == OUTAGE_TYPES_MAX) {
                        strv_free(types);
                        return -EINVAL;
                }
                types[n] = strndup(p, len);
                if (!types[n]) {
                        strv_free(types);
                        return -ENOMEM;
                }
                n++;
                p += len;
        }
        qsort(types, n, sizeof(char *), cmp_str);
        for (size_t i = 0; i < n; i++) {
                if (u > 0 && streq(types[u - 1], types[i])) {
                        free(types[i]);
                        types[i] = NULL;
                        continue;
                }
                types[u] = types[i];
                if (u != i)
                        types[i] = NULL;
                u++;
        }
        strv_free(c->outage_types);
        c->outage_types = types;
        c->n_outage_types = u;
        return 0;
}

/* ---------------------------------------------------------------------------------------
 * Masking secrets for the dump. Every byte of a secret is marked in hide[], one flag per
 * byte of the value; the output replaces each run of marked bytes with "********". Marks
 * may overlap, and a value whose syntax is unclear is hidden whole: a dump may hide too
 * much, never too little. */

#define MASK "********"
#define MASK_DEPTH 2            /* a conninfo inside dbname, and one more for safety */

static bool is_conn_space(char ch) {
        return isspace((unsigned char) ch);     /* libpq's own test, in the C locale */
}

static bool is_password_key(const char *s, size_t len) {
        return (len == 8 && memcmp(s, "password", 8) == 0) || (len == 11 && memcmp(s, "sslpassword", 11) == 0);
}

static void mark(bool *hide, size_t from, size_t to) {
        for (size_t i = from; i < to; i++)
                hide[i] = true;
}

/* The length of libpq's URI prefix at s, or 0. */
static size_t pg_uri_prefix(const char *s, size_t len) {
        if (len >= 13 && memcmp(s, "postgresql://", 13) == 0)
                return 13;
        if (len >= 11 && memcmp(s, "postgres://", 11) == 0)
                return 11;
        return 0;
}

/* scheme://user:password@host...: the password is between the first ':' and the last '@'
 * before the first '/' (a '@' in a password should be percent-encoded; taking the last
 * one hides more if it is not). start is the offset after "://". */
static void mark_userinfo(const char *s, size_t len, size_t start, bool *hide) {
        const char *end = memchr(s + start, '/', len - start);
        size_t aend = end ? (size_t) (end - s) : len, at = SIZE_MAX;

        for (size_t i = start; i < aend; i++)
                if (s[i] == '@')
                        at = i;
        if (at == SIZE_MAX)
                return;
        for (size_t i = start; i < at; i++)
                if (s[i] == ':') {
                        mark(hide, i + 1, at);
                        return;
                }
}

/* Percent-decodes the n bytes at s into out (at least n + 1 bytes); invalid escapes stay. */
static void percent_decode(const char *s, size_t n, char *out) {
        size_t o = 0;

        for (size_t i = 0; i < n; i++) {
                if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char) s[i + 1]) &&
                    isxdigit((unsigned char) s[i + 2])) {
                        char hex[3] = { s[i + 1], s[i + 2], 0 };
                        out[o++] = (char) strtol(hex, NULL, 16);
                        i += 2;
                } else
                        out[o++] = s[i];
        }
        out[o] = '\0';
}

/* postgresql://user:password@host/db?password=...&sslpassword=...: the user information
 * and the query parameters whose percent-decoded name is a password. */
static int mark_pg_uri(const char *s, size_t len, size_t prefix, bool *hide) {
        const char *q = memchr(s + prefix, '?', len - prefix);
        _cleanup_free_ char *name = NULL;

        mark_userinfo(s, len, prefix, hide);
        if (!q)
                return 0;
        name = malloc(len + 1);
        if (!name)
                return -ENOMEM;
        for (size_t i = (size_t) (q - s) + 1; i < len;) {
                const char *amp = memchr(s + i, '&', len - i);
                size_t end = amp ? (size_t) (amp - s) : len;
                const char *eq = memchr(s + i, '=', end - i);

                if (eq) {
                        percent_decode(s + i, (size_t) (eq - s) - i, name);
                        if (is_password_key(name, strlen(name)))
                                mark(hide, (size_t) (eq - s) + 1, end);
                }
                i = end + 1;
        }
        return 0;
}

static int mark_conninfo(const char *s, size_t len, bool *hide, unsigned depth);

/* A nested conninfo in the decoded dbname value dec (map[j]: the raw offset where dec[j]
 * starts, its escape included; map[n]: the raw end): marks the raw bytes of its secrets. */
static int mark_nested(const char *dec, const size_t *map, size_t n, bool *hide, unsigned depth) {
        _cleanup_free_ bool *sub = calloc(n ? n : 1, sizeof(bool));
        int r;

        if (!sub)
                return -ENOMEM;
        r = mark_conninfo(dec, n, sub, depth + 1);
        if (r < 0)
                return r;
        for (size_t j = 0; j < n; j++) {
                size_t k = j;
                if (!sub[j])
                        continue;
                while (k + 1 < n && sub[k + 1])
                        k++;
                mark(hide, map[j], map[k + 1]);
                j = k;
        }
        return 0;
}

/* One value of the keyword form at s[*i], as libpq reads it: single-quoted with backslash
 * escapes, or up to the next blank with backslash escapes. Decodes into dec (n bytes and
 * a NUL) and map (n + 1 raw offsets, see mark_nested), sets *ret_len = n and *i past the
 * value. -EINVAL for an unterminated quote. */
static int read_conn_value(const char *s, size_t len, size_t *i, char *dec, size_t *map, size_t *ret_len) {
        bool quoted = *i < len && s[*i] == '\'';
        size_t p = *i + quoted, n = 0;

        for (; p < len; p++) {
                if (quoted && s[p] == '\'')
                        break;
                if (!quoted && is_conn_space(s[p]))
                        break;
                map[n] = p;
                if (s[p] == '\\' && p + 1 < len)
                        p++;
                dec[n++] = s[p];
        }
        if (quoted && p == len)
                return -EINVAL;
        map[n] = p;
        dec[n] = '\0';
        *ret_len = n;
        *i = p + quoted;        /* past the closing quote */
        return 0;
}

/* keyword = value ...: password and sslpassword values, and the secrets of a conninfo
 * given as the dbname value. -EINVAL when libpq would not parse it. */
static int mark_keywords(const char *s, size_t len, bool *hide, unsigned depth) {
        _cleanup_free_ char *dec = malloc(len + 1);
        _cleanup_free_ size_t *map = malloc((len + 1) * sizeof(size_t));
        size_t i = 0;

        if (!dec || !map)
                return -ENOMEM;
        for (;;) {
                size_t name, name_len, value, n;
                int r;

                while (i < len && is_conn_space(s[i]))
                        i++;
                if (i == len)
                        return 0;
                name = i;
                while (i < len && s[i] != '=' && !is_conn_space(s[i]))
                        i++;
                name_len = i - name;
                while (i < len && is_conn_space(s[i]))
                        i++;
                if (i == len || s[i] != '=')
                        return -EINVAL;
                i++;
                while (i < len && is_conn_space(s[i]))
                        i++;
                value = i;
                r = read_conn_value(s, len, &i, dec, map, &n);
                if (r < 0)
                        return r;
                if (is_password_key(s + name, name_len))
                        mark(hide, value, i);
                else if (name_len == 6 && memcmp(s + name, "dbname", 6) == 0 &&
                         (memchr(dec, '=', n) || pg_uri_prefix(dec, n) > 0)) {
                        r = mark_nested(dec, map, n, hide, depth);
                        if (r < 0)
                                return r;
                }
        }
}

static int mark_conninfo(const char *s, size_t len, bool *hide, unsigned depth) {
        size_t prefix = pg_uri_prefix(s, len);
        int r;

        if (depth > MASK_DEPTH)
                r = -EINVAL;
        else if (prefix > 0)
                r = mark_pg_uri(s, len, prefix, hide);
        else
                r = mark_keywords(s, len, hide, depth);
        if (r == -EINVAL)
                mark(hide, 0, len);             /* unclear: hide it all */
        return r == -EINVAL ? 0 : r;
}

/* s with each run of hidden bytes replaced by MASK; caller owns. */
static char *apply_mask(const char *s, size_t len, const bool *hide) {
        char *out = malloc(len * strlen(MASK) + 1), *o = out;

        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i++) {
                if (!hide[i])
                        *o++ = s[i];
                else if (i == 0 || !hide[i - 1])
                        o = stpcpy(o, MASK);
        }
        *o = '\0';
        return out;
}

char *config_mask_conninfo(const char *s) {
        size_t len = strlen(s);
        _cleanup_free_ bool *hide = calloc(len ? len : 1, sizeof(bool));

        if (!hide || mark_conninfo(s, len, hide, 0) < 0)
                return NULL;
        return apply_mask(s, len, hide);
}

char *config_mask_uri(const char *s) {
        size_t len = strlen(s);
        const char *scheme = strstr(s, "://");
        _cleanup_free_ bool *hide = calloc(len ? len : 1, sizeof(bool));

        if (!hide)
                return NULL;
        if (scheme)
                mark_userinfo(s, len, (size_t) (scheme - s) + 3, hide);
        return apply_mask(s, len, hide);
}

/* ---------------------------------------------------------------------------------------
 * Formatting, freeing and swapping, one function per field representation. */

static void format_string(const Config *c, const ConfigKey *k, FILE *f) {
        const char *s = *FIELD(c, k, char *);

        if (s)
                fputs(s, f);
}

static void format_uint(const Config *c, const ConfigKey *k, FILE *f) {
        fprintf(f, "%" PRIu64, *FIELD(c, k, uint64_t));
}

static void format_int(const Config *c, const ConfigKey *k, FILE *f) {
        fprintf(f, "%d", *FIELD(c, k, int));
}

static void format_duration(const Config *c, const ConfigKey *k, FILE *f) {
        char buf[TEXT_DURATION_MAX];

        fputs(text_format_duration(*FIELD(c, k, usec_t), buf), f);
}

static void format_size(const Config *c, const ConfigKey *k, FILE *f) {
        char buf[TEXT_SIZE_MAX];

        fputs(text_format_size(*FIELD(c, k, uint64_t), buf), f);
}

static void format_level(const Config *c, const ConfigKey *k, FILE *f) {
        fputs(log_level_to_string(*FIELD(c, k, LogLevel)) ?: "info", f);
}

static void format_outage_types(const Config *c, const ConfigKey *k, FILE *f) {
        for (size_t i = 0; i < c->n_outage_types; i++)
                fprintf(f, "%s%s", i ? " " : "", c->outage_types[i]);
}

static void bound_number(uint64_t v, char buf[static TEXT_DURATION_MAX]) {
        snprintf(buf, TEXT_DURATION_MAX, "%" PRIu64, v);
}

static void bound_duration(uint64_t v, char buf[static TEXT_DURATION_MAX]) {
        text_format_duration((usec_t) v, buf);
}

static void bound_size(uint64_t v, char buf[static TEXT_DURATION_MAX]) {
        text_format_size(v, buf);
}

static void free_string(Config *c, const ConfigKey *k) {
        char **p = FIELD(c, k, char *);

        *p = mfree(*p);
}

static void free_outage_types(Config *c, const ConfigKey *k) {
        strv_free(c->outage_types);
        c->outage_types = NULL;
        c->n_outage_types = 0;
}

#define DEFINE_SWAP(name, type)                                                 \
        static void name(Config *a, Config *b, const ConfigKey *k) {           \
                type t = *FIELD(a, k, type);                                    \
                *FIELD(a, k, type) = *FIELD(b, k, type);                        \
                *FIELD(b, k, type) = t;                                         \
        }
DEFINE_SWAP(swap_ptr, char *)
DEFINE_SWAP(swap_u64, uint64_t)
DEFINE_SWAP(swap_int, int)
DEFINE_SWAP(swap_usec, usec_t)
DEFINE_SWAP(swap_level, LogLevel)

static void swap_outage_types(Config *a, Config *b, const ConfigKey *k) {
        char **t = a->outage_types;
        size_t n = a->n_outage_types;

        a->outage_types = b->outage_types;
        a->n_outage_types = b->n_outage_types;
        b->outage_types = t;
        b->n_outage_types = n;
}

#define STRING_TYPE(n, p) { .name = (n), .parse = (p), .format = format_string, .free = free_string, .swap = swap_ptr }

static const ConfigType
        type_path         = STRING_TYPE("path", parse_path),
        type_text         = STRING_TYPE("text", parse_text),
        type_conninfo     = { "conninfo", parse_conninfo, format_string, NULL, free_string, swap_ptr,
                              config_mask_conninfo },
        type_uri          = { "mqtt-uri", parse_uri, format_string, NULL, free_string, swap_ptr, config_mask_uri },
        type_client_id    = STRING_TYPE("client-id", parse_client_id),
        type_topic        = STRING_TYPE("topic-filter", parse_topic),
        type_share_group  = STRING_TYPE("share-group", parse_share_group),
        type_topic_prefix = STRING_TYPE("topic", parse_topic_prefix),
        type_channel      = STRING_TYPE("identifier", parse_channel),
        type_uint         = { "integer", parse_uint, format_uint, bound_number, NULL, swap_u64 },
        type_int          = { "integer", parse_int, format_int, bound_number, NULL, swap_int },
        type_duration     = { "duration", parse_duration, format_duration, bound_duration, NULL, swap_usec },
        type_duration_sec = { "duration", parse_duration_sec, format_duration, bound_duration, NULL, swap_usec },
        type_size         = { "size", parse_size, format_size, bound_size, NULL, swap_u64 },
        type_level        = { "log-level", parse_level, format_level, NULL, NULL, swap_level },
        type_outage_types = { "outage-types", parse_outage_types, format_outage_types, NULL, free_outage_types,
                              swap_outage_types };

/* ---------------------------------------------------------------------------------------
 * The table: one row per key of SPEC section 5, in the order config_dump writes them. */

#define US(x) ((uint64_t) (x))
#define NOMAX UINT64_MAX

static const ConfigKey config_keys[] = {
        /* section      key                     type                field                                     min, max                                                       default                  reloadable */
        { "mqtt",        "uri",                  &type_uri,          offsetof(Config, mqtt_uri),               0, 0,                                                          "tcp://localhost:1883",  false },
        { "mqtt",        "client_id",            &type_client_id,    offsetof(Config, mqtt_client_id),         0, 0,                                                          "outaged",               false },
        { "mqtt",        "topic",                &type_topic,        offsetof(Config, mqtt_topic),             0, 0,                                                          "outages/+",             false },
        { "mqtt",        "share_group",          &type_share_group,  offsetof(Config, mqtt_share_group),       0, 0,                                                          "",                      false },
        { "mqtt",        "qos",                  &type_int,          offsetof(Config, mqtt_qos),               0, 2,                                                          "1",                     false },
        { "mqtt",        "session_expiry",       &type_duration_sec, offsetof(Config, mqtt_session_expiry),    0, US(UINT32_MAX) * USEC_PER_SEC,                              "1d",                    false },
        { "mqtt",        "username",             &type_text,         offsetof(Config, mqtt_username),          0, 0,                                                          "",                      false },
        { "mqtt",        "password_file",        &type_path,         offsetof(Config, mqtt_password_file),     0, 0,                                                          "",                      false },
        { "mqtt",        "ca_file",              &type_path,         offsetof(Config, mqtt_ca_file),           0, 0,                                                          "",                      false },
        { "mqtt",        "cert_file",            &type_path,         offsetof(Config, mqtt_cert_file),         0, 0,                                                          "",                      false },
        { "mqtt",        "key_file",             &type_path,         offsetof(Config, mqtt_key_file),          0, 0,                                                          "",                      false },
        { "postgres",    "conninfo",             &type_conninfo,     offsetof(Config, pg_conninfo),            0, 0,                                                          "dbname=outages",        false },
        { "postgres",    "password_file",        &type_path,         offsetof(Config, pg_password_file),       0, 0,                                                          "",                      false },
        { "aggregation", "gap",                  &type_duration,     offsetof(Config, gap),                    US(USEC_PER_SEC), US(USEC_PER_DAY),                            "12min",                 false },
        { "aggregation", "outage_types",         &type_outage_types, offsetof(Config, outage_types),           0, 0,                                                          "",                      true },
        { "aggregation", "max_future_skew",      &type_duration,     offsetof(Config, max_future_skew),        0, US(USEC_PER_DAY),                                           "5min",                  false },
        { "aggregation", "max_age",              &type_duration,     offsetof(Config, max_age),                0, US(36500 * USEC_PER_DAY),                                   "365d",                  false },
        { "aggregation", "flush_interval",       &type_duration,     offsetof(Config, flush_interval),         US(10 * USEC_PER_MSEC), US(USEC_PER_HOUR),                     "1s",                    false },
        { "aggregation", "batch_max",            &type_uint,         offsetof(Config, batch_max),              1, 1000000,                                                    "10000",                 false },
        { "storage",     "journal_dir",          &type_path,         offsetof(Config, journal_dir),            0, 0,                                                          "",                      false },
        { "storage",     "journal_sync",         &type_duration,     offsetof(Config, journal_sync),           0, US(USEC_PER_HOUR),                                          "1s",                    false },
        { "limits",      "max_payload",          &type_size,         offsetof(Config, max_payload),            16, US(256) << 20,                                             "64KiB",                 false },
        { "limits",      "max_batch_items",      &type_uint,         offsetof(Config, max_batch_items),        1, 1000000,                                                    "1000",                  false },
        { "limits",      "max_events_in_memory", &type_uint,         offsetof(Config, max_events_in_memory),   1000, 1000000000,                                              "5000000",               false },
        { "limits",      "startup_timeout",      &type_duration,     offsetof(Config, startup_timeout),        US(USEC_PER_SEC), US(USEC_PER_DAY),                            "1min",                  false },
        { "events",      "topic_prefix",         &type_topic_prefix, offsetof(Config, events_topic_prefix),    0, 0,                                                          "",                      false },
        { "events",      "notify_channel",       &type_channel,      offsetof(Config, events_notify_channel),  0, 0,                                                          "",                      false },
        { "retention",   "events",               &type_duration,     offsetof(Config, retention_events),       0, US(36500 * USEC_PER_DAY),                                   "0",                     false },
        { "retention",   "rejects",              &type_duration,     offsetof(Config, retention_rejects),      0, US(36500 * USEC_PER_DAY),                                   "90d",                   false },
        { "log",         "level",                &type_level,        offsetof(Config, log_level),              0, 0,                                                          "info",                  true },
        { "log",         "metrics_file",         &type_path,         offsetof(Config, metrics_file),           0, 0,                                                          "",                      false },
};

#define N_KEYS ELEMENTSOF(config_keys)

static const char *const sections[] = {
        "mqtt", "postgres", "aggregation", "storage", "limits", "events", "retention", "log",
};
#define SECTION_LIST "mqtt, postgres, aggregation, storage, limits, events, retention, log"

static const ConfigKey *key_find(const char *section, const char *key, size_t *ret_index) {
        for (size_t i = 0; i < N_KEYS; i++)
                if (streq(config_keys[i].section, section) && streq(config_keys[i].key, key)) {
                        *ret_index = i;
                        return &config_keys[i];
                }
        return NULL;
}

static bool section_known(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(sections); i++)
                if (streq(sections[i], s))
                        return true;
        return false;
}

/* "min..max" in the key's own unit, for out-of-range messages. */
static void format_bounds(const ConfigKey *k, char *buf, size_t len) {
        char a[TEXT_DURATION_MAX] = "", b[TEXT_DURATION_MAX] = "";

        if (k->type->format_bound) {
                k->type->format_bound(k->min, a);
                k->type->format_bound(k->max, b);
        }
        snprintf(buf, len, "%s..%s", a, b);
}

/* ---------------------------------------------------------------------------------------
 * Error messages. */

typedef struct ParseCtx {
        const char *file;
        unsigned line;
        unsigned key_lines[N_KEYS];     /* where each key was set; 0: default */
        char *err;
        size_t errlen;
} ParseCtx;

/* Writes "file:line: what: message" (":line" omitted when 0) and returns -EINVAL. */
static int fail(const ParseCtx *x, unsigned line, const char *what, const char *fmt, ...) _printf_(4, 5);
static int fail(const ParseCtx *x, unsigned line, const char *what, const char *fmt, ...) {
        char msg[1024];
        va_list ap;

        if (!x->err || x->errlen == 0)
                return -EINVAL;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (line > 0)
                snprintf(x->err, x->errlen, "%s:%u: %s: %s", x->file, line, what, msg);
        else
                snprintf(x->err, x->errlen, "%s: %s: %s", x->file, what, msg);
        return -EINVAL;
}

/* A value quoted for a message: at most 80 bytes, non-printable bytes as \xNN. */
static const char *quote(const char *s, char *buf, size_t len) {
        size_t o = 0;

        for (size_t i = 0; s[i] && o + 8 < len; i++) {
                unsigned char ch = (unsigned char) s[i];
                if (i == 80) {
                        o += (size_t) snprintf(buf + o, len - o, "...");
                        break;
                }
                if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
                        o += (size_t) snprintf(buf + o, len - o, "\\x%02x", ch);
                else
                        buf[o++] = (char) ch;
        }
        buf[o] = '\0';
        return buf;
}

/* ---------------------------------------------------------------------------------------
 * The line parser. */

static bool is_space(char ch) {
        return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

static char *trim(char *s) {
        size_t len;

        while (is_space(*s))
                s++;
        len = strlen(s);
        while (len > 0 && is_space(s[len - 1]))
                s[--len] = '\0';
        return s;
}

static int apply_key(Config *c, ParseCtx *x, const char *section, char *key, char *value) {
        char what[160], q[400], bounds[160];
        const char *why = "a valid value";
        const ConfigKey *k;
        size_t idx = 0;
        int r;

        snprintf(what, sizeof what, "%s.%s", section, quote(key, q, 64));
        k = key_find(section, key, &idx);
        if (!k)
                return fail(x, x->line, what, "unknown key");
        if (x->key_lines[idx] > 0)
                return fail(x, x->line, what, "duplicate key (first set on line %u)", x->key_lines[idx]);
        x->key_lines[idx] = x->line;

        r = k->type->parse(c, k, *value ? value : k->def, &why);
        if (r == -ENOMEM)
                return r;               /* reported by config_load_buffer() */
        if (r == -ERANGE) {
                format_bounds(k, bounds, sizeof bounds);
                return fail(x, x->line, what, "\"%s\" is out of range (expected %s)",
                            quote(value, q, sizeof q), bounds);
        }
        if (r < 0)
                return fail(x, x->line, what, "invalid value \"%s\" (expected %s)",
                            quote(value, q, sizeof q), why);
        return 0;
}

static int parse_line(Config *c, ParseCtx *x, char *raw, char *section, size_t seclen) {
        char *s = trim(raw), *eq, q[400];

        if (*s == '\0' || *s == '#' || *s == ';')
                return 0;
        if (*s == '[') {
                char *end = strchr(s, ']');
                char *name;

                if (!end || end[1] != '\0')
                        return fail(x, x->line, "syntax", "malformed section header \"%s\" "
                                    "(expected [section])", quote(s, q, sizeof q));
                *end = '\0';
                name = trim(s + 1);
                if (!section_known(name) || strlen(name) >= seclen) {
                        char what[80];
                        snprintf(what, sizeof what, "[%s]", quote(name, q, 64));
                        return fail(x, x->line, what, "unknown section (expected one of " SECTION_LIST ")");
                }
                strcpy(section, name);
                return 0;
        }
        eq = strchr(s, '=');
        if (!eq || eq == s)
                return fail(x, x->line, "syntax", "malformed line \"%s\" (expected [section], "
                            "key = value, or a comment starting with # or ;)", quote(s, q, sizeof q));
        *eq = '\0';
        if (!*section)
                return fail(x, x->line, quote(trim(s), q, 64), "key outside a section "
                            "(expected a [section] line first)");
        return apply_key(c, x, section, trim(s), trim(eq + 1));
}

static int parse_buffer(Config *c, ParseCtx *x, const char *buf, size_t len) {
        char line[CONFIG_LINE_MAX + 1];
        char section[32] = "";
        size_t pos = 0;

        /* A UTF-8 byte order mark, as some editors write, is not content. */
        if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
                pos = 3;
        for (x->line = 1; pos < len; x->line++) {
                const char *nl = memchr(buf + pos, '\n', len - pos);
                size_t n = nl ? (size_t) (nl - (buf + pos)) : len - pos;
                int r;

                if (n > CONFIG_LINE_MAX)
                        return fail(x, x->line, "syntax", "line too long (expected at most %d bytes)",
                                    CONFIG_LINE_MAX);
                if (memchr(buf + pos, '\0', n))
                        return fail(x, x->line, "syntax", "NUL byte in line (expected text)");
                memcpy(line, buf + pos, n);
                line[n] = '\0';
                r = parse_line(c, x, line, section, sizeof section);
                if (r < 0)
                        return r;
                pos += n + 1;
        }
        return 0;
}

/* ---------------------------------------------------------------------------------------
 * After parsing: derived values, cross-field rules, secrets. */

static unsigned key_line(const ParseCtx *x, const char *section, const char *key) {
        size_t idx = 0;

        return key_find(section, key, &idx) ? x->key_lines[idx] : 0;
}

static int resolve_journal_dir(Config *c) {
        const char *state = getenv("STATE_DIRECTORY");
        size_t len;

        if (c->journal_dir)
                return 0;
        if (!state || !*state) {
                c->journal_dir = strdup("/var/lib/outaged/journal");
                return c->journal_dir ? 0 : -ENOMEM;
        }
        /* systemd joins several StateDirectory= entries with ':'; the first is ours. */
        len = strcspn(state, ":");
        if (asprintf(&c->journal_dir, "%.*s/journal", (int) len, state) < 0) {
                c->journal_dir = NULL;
                return -ENOMEM;
        }
        return 0;
}

static int check_cross_fields(const Config *c, const ParseCtx *x) {
        if (c->mqtt_cert_file && !c->mqtt_key_file)
                return fail(x, key_line(x, "mqtt", "cert_file"), "mqtt.cert_file",
                            "set without mqtt.key_file (expected both or neither)");
        if (c->mqtt_key_file && !c->mqtt_cert_file)
                return fail(x, key_line(x, "mqtt", "key_file"), "mqtt.key_file",
                            "set without mqtt.cert_file (expected both or neither)");

        /* TLS files with a plain-text URI would be ignored silently: the operator believes
         * the connection is encrypted when it is not. */
        if (!text_uri_is_tls(c->mqtt_uri)) {
                static const char *const tls_keys[] = { "ca_file", "cert_file", "key_file" };
                const char *const vals[] = { c->mqtt_ca_file, c->mqtt_cert_file, c->mqtt_key_file };

                for (size_t i = 0; i < ELEMENTSOF(tls_keys); i++) {
                        char what[32];
                        if (!vals[i])
                                continue;
                        snprintf(what, sizeof what, "mqtt.%s", tls_keys[i]);
                        return fail(x, key_line(x, "mqtt", tls_keys[i]), what,
                                    "set but mqtt.uri is not a TLS URI (expected ssl://, "
                                    "mqtts:// or wss:// in mqtt.uri)");
                }
        }
        return 0;
}

/* Reads a secret: at most SECRET_MAX bytes, one trailing newline (LF or CRLF) removed,
 * neither empty nor containing NUL or line breaks. Returns 0, -errno (unreadable),
 * -EFBIG, -ENODATA (empty) or -EBADMSG (NUL or line break). Caller owns *ret. */
static int read_secret(const char *path, char **ret) {
        _cleanup_close_ int fd = -1;
        char *buf;
        size_t len = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        buf = malloc(SECRET_MAX + 2);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n = read(fd, buf + len, SECRET_MAX + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int e = errno;
                        explicit_bzero(buf, SECRET_MAX + 2);
                        free(buf);
                        return -e;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > SECRET_MAX)
                        break;
        }
        buf[len] = '\0';
        int r = 0;
        if (len > SECRET_MAX)
                r = -EFBIG;
        else {
                if (len > 0 && buf[len - 1] == '\n')
                        buf[--len] = '\0';
                if (len > 0 && buf[len - 1] == '\r')
                        buf[--len] = '\0';
                if (len == 0)
                        r = -ENODATA;
                else if (strlen(buf) != len || strpbrk(buf, "\r\n"))
                        r = -EBADMSG;
        }
        if (r < 0) {
                explicit_bzero(buf, SECRET_MAX + 2);
                free(buf);
                return r;
        }
        *ret = buf;
        return 0;
}

static const char *secret_error(int r) {
        switch (r) {
        case -EFBIG:   return "larger than 64 KiB (expected a password)";
        case -ENODATA: return "empty (expected a password)";
        case -EBADMSG: return "contains a NUL byte or a line break inside (expected a password on one line)";
        default:       return strerror(-r);
        }
}

/* password_file if set (must be readable), else $CREDENTIALS_DIRECTORY/credential if it
 * exists. */
static int load_secret(const ParseCtx *x, const char *section, const char *file,
                       const char *credential, char **ret) {
        const char *creds = getenv("CREDENTIALS_DIRECTORY");
        _cleanup_free_ char *path = NULL;
        char what[64];
        int r;

        snprintf(what, sizeof what, "%s.password_file", section);
        if (file) {
                r = read_secret(file, ret);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return fail(x, key_line(x, section, "password_file"), what,
                                    "cannot read %s: %s", file, secret_error(r));
                return 0;
        }
        if (!creds || !*creds)
                return 0;
        if (asprintf(&path, "%s/%s", creds, credential) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        r = read_secret(path, ret);
        if (r == -ENOENT)
                return 0;
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail(x, 0, what, "cannot read credential %s: %s", path, secret_error(r));
        return 0;
}

static int finish(Config *c, ParseCtx *x) {
        int r;

        r = resolve_journal_dir(c);
        if (r < 0)
                return r;
        r = check_cross_fields(c, x);
        if (r < 0)
                return r;
        r = load_secret(x, "mqtt", c->mqtt_password_file, "mqtt-password", &c->mqtt_password);
        if (r < 0)
                return r;
        return load_secret(x, "postgres", c->pg_password_file, "pg-password", &c->pg_password);
}

/* ---------------------------------------------------------------------------------------
 * Public entry points. */

static int defaults_unresolved(Config **ret) {
        Config *c = calloc(1, sizeof(Config));

        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < N_KEYS; i++) {
                const char *why = NULL;
                int r = config_keys[i].type->parse(c, &config_keys[i], config_keys[i].def, &why);
                if (r < 0) {
                        /* Only ENOMEM can get here: every default is valid by construction. */
                        config_free(c);
                        return r;
                }
        }
        *ret = c;
        return 0;
}

int config_defaults(Config **ret) {
        Config *c = NULL;
        int r;

        r = defaults_unresolved(&c);
        if (r < 0)
                return r;
        r = resolve_journal_dir(c);
        if (r < 0) {
                config_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

int config_load_buffer(const char *name, const char *buf, size_t len, Config **ret,
                       char *err, size_t errlen) {
        ParseCtx x = { .file = name ? name : "(defaults)", .err = err, .errlen = errlen };
        Config *c = NULL;
        int r;

        if (err && errlen > 0)
                err[0] = '\0';
        r = defaults_unresolved(&c);
        if (r < 0)
                goto oom;
        r = parse_buffer(c, &x, buf ? buf : "", buf ? len : 0);
        if (r == 0)
                r = finish(c, &x);
        if (r == -ENOMEM)
                goto oom;
        if (r < 0) {
                config_free(c);
                return r;
        }
        *ret = c;
        return 0;
oom:
        config_free(c);
        if (err && errlen > 0)
                snprintf(err, errlen, "%s: out of memory", x.file);
        return -ENOMEM;
}

int config_load(const char *path, Config **ret, char *err, size_t errlen) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;
        size_t len = 0;

        if (!path)
                return config_load_buffer(NULL, NULL, 0, ret, err, errlen);

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &st) < 0)
                goto fail_errno;
        if (S_ISDIR(st.st_mode)) {
                errno = EISDIR;
                goto fail_errno;
        }
        buf = malloc(CONFIG_FILE_MAX + 1);
        if (!buf) {
                errno = ENOMEM;
                goto fail_errno;
        }
        for (;;) {
                ssize_t n = read(fd, buf + len, CONFIG_FILE_MAX + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        goto fail_errno;
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > CONFIG_FILE_MAX) {
                        if (err && errlen > 0)
                                snprintf(err, errlen, "%s: file larger than 1 MiB (expected "
                                         "a configuration file)", path);
                        return -EFBIG;
                }
        }
        return config_load_buffer(path, buf, len, ret, err, errlen);

fail_errno:;
        int e = errno;
        if (err && errlen > 0)
                snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
        return -e;
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < N_KEYS; i++)
                if (config_keys[i].type->free)
                        config_keys[i].type->free(c, &config_keys[i]);
        if (c->mqtt_password) {
                explicit_bzero(c->mqtt_password, strlen(c->mqtt_password));
                free(c->mqtt_password);
        }
        if (c->pg_password) {
                explicit_bzero(c->pg_password, strlen(c->pg_password));
                free(c->pg_password);
        }
        free(c);
        return NULL;
}

/* The value of one key as the file would spell it, NUL-terminated (caller owns), or NULL on
 * ENOMEM. */
static char *format_key(const Config *c, const ConfigKey *k) {
        char *val = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&val, &len);

        if (!m)
                return NULL;
        k->type->format(c, k, m);
        if (fclose(m) != 0) {
                free(val);
                return NULL;
        }
        return val;
}

/* "key = value", or "key =" when unset (no trailing blank). Secrets in the value are
 * masked; when masking fails, the whole value is. */
static void dump_key(const Config *c, const ConfigKey *k, FILE *f) {
        _cleanup_free_ char *val = format_key(c, k), *masked = NULL;
        const char *out = val;

        if (val && *val && k->type->mask) {
                masked = k->type->mask(val);
                out = masked ? masked : MASK;
        }
        fprintf(f, "%s =%s%s\n", k->key, out && *out ? " " : "", out ? out : "");
}

void config_dump(const Config *c, FILE *f) {
        const char *section = NULL;

        for (size_t i = 0; i < N_KEYS; i++) {
                const ConfigKey *k = &config_keys[i];
                const char *secret = NULL, *cred = NULL;

                if (!section || !streq(section, k->section)) {
                        fprintf(f, "%s[%s]\n", section ? "\n" : "", k->section);
                        section = k->section;
                }
                dump_key(c, k, f);

                if (streq(k->key, "password_file")) {
                        bool mqtt = streq(k->section, "mqtt");
                        secret = mqtt ? c->mqtt_password : c->pg_password;
                        cred = mqtt ? "mqtt-password" : "pg-password";
                }
                if (secret)
                        fprintf(f, "# password: ******** (from %s%s)\n",
                                *FIELD(c, k, char *) ? "password_file" : "$CREDENTIALS_DIRECTORY/",
                                *FIELD(c, k, char *) ? "" : cred);
        }
}

/* ---------------------------------------------------------------------------------------
 * Reload and the read-only key table. */

/* Appends ", name" (or "name" first) to buf if it fits whole. */
static void list_append(char *buf, size_t len, const ConfigKey *k) {
        size_t o = strnlen(buf, len);
        int w;

        if (o >= len)
                return;
        w = snprintf(buf + o, len - o, "%s%s.%s", o ? ", " : "", k->section, k->key);
        if (w < 0 || (size_t) w >= len - o)
                buf[o] = '\0';
}

/* 1 if key k has the same value in a and b, 0 if not, -ENOMEM. */
static int key_equal(const Config *a, const Config *b, const ConfigKey *k) {
        _cleanup_free_ char *x = format_key(a, k), *y = format_key(b, k);

        if (!x || !y)
                return -ENOMEM;
        return streq(x, y);
}

int config_reload_apply(Config *running, Config *next, char *restart, size_t restartlen) {
        bool differ[N_KEYS];
        int changed = 0;

        /* Compare everything first, so that ENOMEM changes nothing. */
        for (size_t i = 0; i < N_KEYS; i++) {
                int r = key_equal(running, next, &config_keys[i]);
                if (r < 0)
                        return r;
                differ[i] = r == 0;
        }
        if (restart && restartlen > 0)
                restart[0] = '\0';
        for (size_t i = 0; i < N_KEYS; i++) {
                const ConfigKey *k = &config_keys[i];

                if (!k->reloadable) {
                        if (differ[i] && restart && restartlen > 0)
                                list_append(restart, restartlen, k);
                        continue;
                }
                k->type->swap(running, next, k);
                changed += differ[i];
        }
        return changed;
}

size_t config_key_count(void) {
        return N_KEYS;
}

_Static_assert(sizeof(((ConfigKeyInfo *) 0)->min) >= TEXT_DURATION_MAX, "bounds fit ConfigKeyInfo");

int config_key_info(size_t i, ConfigKeyInfo *ret) {
        const ConfigKey *k;

        if (i >= N_KEYS)
                return -ERANGE;
        k = &config_keys[i];
        *ret = (ConfigKeyInfo) {
                .section = k->section,
                .key = k->key,
                .type = k->type->name,
                .default_value = k->def,
                .reloadable = k->reloadable,
        };
        snprintf(ret->name, sizeof ret->name, "%s.%s", k->section, k->key);
        if (k->type->format_bound) {
                k->type->format_bound(k->min, ret->min);
                k->type->format_bound(k->max, ret->max);
        }
        return 0;
}
