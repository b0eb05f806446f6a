/* report.c — payload bytes -> validated reports or reject reasons (SPEC section 2).
 * The only module that uses json-c. No logging, no clock reads: the caller logs and gives
 * the time.
 *
 * A payload goes through three stages:
 *  1. a byte scan (json_prescan) that json-c cannot do for us: strict UTF-8 (json-c 0.16
 *     accepts overlongs, surrogates and code points above U+10FFFF), no NUL or raw control
 *     bytes (json-c treats NUL as end of input and accepts raw controls in strings), nothing
 *     outside strings that JSON does not allow (json-c's strict mode still accepts 'single'
 *     quoted keys, NaN and Infinity), RFC 8259 numbers (json-c accepts "1.", "00", "-01"),
 *     and the container depth limit;
 *  2. json-c in strict mode for the grammar, the tree and the trailing-garbage check;
 *  3. the item checks, in SPEC order, on the tree.
 * Every stage is linear in the payload; json-c's own depth limit is set one above ours as
 * a safety net (it counts scalars as a level, see tokener_get). */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include <json-c/json.h>

#include "report.h"
#include "text.h"

/* The two bad_controller_id details of report_parse_message. */
#define BAD_ID_TOPIC "the topic does not match the filter"
#define BAD_ID_PATTERN "the controller id in the topic does not match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

static const char *const reason_names[_REJECT_REASON_MAX] = {
        [REJECT_BAD_CONTROLLER_ID] = "bad_controller_id",
        [REJECT_PAYLOAD_TOO_LARGE] = "payload_too_large",
        [REJECT_MALFORMED_JSON] = "malformed_json",
        [REJECT_NOT_A_REPORT] = "not_a_report",
        [REJECT_BATCH_TOO_LARGE] = "batch_too_large",
        [REJECT_MISSING_FIELD] = "missing_field",
        [REJECT_BAD_FIELD_TYPE] = "bad_field_type",
        [REJECT_BAD_OUTAGE_TYPE] = "bad_outage_type",
        [REJECT_UNKNOWN_OUTAGE_TYPE] = "unknown_outage_type",
        [REJECT_BAD_TIMESTAMP] = "bad_timestamp",
        [REJECT_TIMESTAMP_OUT_OF_RANGE] = "timestamp_out_of_range",
        [REJECT_CONTROLLER_MISMATCH] = "controller_mismatch",
};

const char *reject_reason_to_string(RejectReason r) {
        if (r <= REJECT_NONE || r >= _REJECT_REASON_MAX)
                return NULL;
        return reason_names[r];
}

/* ---- topics ------------------------------------------------------------------------- */

/* Matches topic against filter level by level; on a match returns 0 and the span of the
 * level under the filter's '+'. */
static int topic_match(const char *f, const char *t, const char *tend, const char **ret_id, size_t *ret_len) {
        const char *id = NULL;
        size_t id_len = 0;

        for (;;) {
                const char *fe = strchrnul(f, '/');
                const char *te = memchr(t, '/', (size_t) (tend - t));

                if (!te)
                        te = tend;
                if (fe - f == 1 && *f == '+') {
                        if (id)
                                return -EINVAL;         /* a second '+' level */
                        id = t;
                        id_len = (size_t) (te - t);
                } else if (fe - f != te - t || memcmp(f, t, (size_t) (fe - f)) != 0)
                        return -EINVAL;

                if (*fe == '\0' && te == tend)
                        break;
                if (*fe == '\0' || te == tend)
                        return -EINVAL;                 /* different number of levels */
                f = fe + 1;
                t = te + 1;
        }
        if (!id)
                return -EINVAL;
        *ret_id = id;
        *ret_len = id_len;
        return 0;
}

int report_topic_id(const char *filter, const char *topic, size_t topic_len, char *buf, size_t buflen) {
        const char *f = filter, *id = NULL;
        size_t n = 0;
        int r;

        if (!filter || (!topic && topic_len > 0))
                return -EINVAL;
        if (strncmp(f, "$share/", 7) == 0) {
                f = strchr(f + 7, '/');
                if (!f)
                        return -EINVAL;
                f++;
        }
        r = topic_match(f, topic ? topic : "", (topic ? topic : "") + topic_len, &id, &n);
        if (r < 0)
                return r;
        if (!text_controller_id_valid_len(id, n))
                return -EBADMSG;
        if (n >= buflen)
                return -ENOBUFS;
        memcpy(buf, id, n);
        buf[n] = '\0';
        return (int) n;
}

/* ---- details -------------------------------------------------------------------------- */

/* Writes the detail text. Every caller keeps its text short of REPORT_DETAIL_MAX minus
 * the item suffix by construction (quoted values are bounded by detail_quote); should it
 * be cut anyway, the cut never leaves half a UTF-8 sequence. */
static void detail_set(char detail[static REPORT_DETAIL_MAX], const char *fmt, ...) _printf_(2, 3);
static void detail_set(char detail[static REPORT_DETAIL_MAX], const char *fmt, ...) {
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(detail, REPORT_DETAIL_MAX, fmt, ap);
        va_end(ap);
        if (n < 0)
                detail[0] = '\0';
        else if ((size_t) n >= REPORT_DETAIL_MAX)
                detail[text_utf8_valid_prefix(detail, REPORT_DETAIL_MAX - 1)] = '\0';
}

/* A JSON string value for a detail, escaped like a payload: at most 28 bytes of output,
 * then "..." when cut. buf holds DETAIL_QUOTE_MAX bytes. The longest detail, a
 * controller_mismatch with a 64-byte topic id in item 1000000 of 1000000, then takes
 * 156 bytes: below REPORT_DETAIL_MAX. */
#define DETAIL_QUOTE_MAX 32
static const char *detail_quote(char buf[static DETAIL_QUOTE_MAX], const char *s, size_t len) {
        size_t used = text_escape_into(buf, DETAIL_QUOTE_MAX - 3, s, len);

        if (used < len)
                strcat(buf, "...");
        return buf;
}

/* ", item K of N" after the rule, for the items of an array (K counts from 1). */
static void detail_append_index(char detail[static REPORT_DETAIL_MAX], size_t k, size_t n) {
        char suffix[64];
        size_t len = strlen(detail), slen;

        slen = (size_t) snprintf(suffix, sizeof suffix, "%sitem %zu of %zu", len ? ", " : "", k, n);
        if (len + slen >= REPORT_DETAIL_MAX)
                len = text_utf8_valid_prefix(detail, REPORT_DETAIL_MAX - 1 - slen);
        memcpy(detail + len, suffix, slen + 1);
}

/* ---- byte scan ------------------------------------------------------------------------ */

/* What the byte scan found wrong, and where. */
typedef enum ScanError {
        SCAN_OK,
        SCAN_NOT_UTF8,
        SCAN_NUL,
        SCAN_CONTROL,           /* a raw control byte inside a string */
        SCAN_UNTERMINATED,      /* a string still open at the end */
        SCAN_NUMBER,            /* not an RFC 8259 number */
        SCAN_DEPTH,
        SCAN_UNBALANCED,        /* a closing bracket with nothing open */
        SCAN_UNEXPECTED,        /* a byte JSON does not allow outside strings */
} ScanError;

typedef struct Scan {
        const unsigned char *p;
        size_t n;
        ScanError error;
        size_t at;              /* offset of the offending byte */
} Scan;

#define SCAN_FAIL SIZE_MAX

static size_t scan_fail(Scan *s, ScanError e, size_t at) {
        s->error = e;
        s->at = at;
        return SCAN_FAIL;
}

/* The error for a byte below 0x20 at i. */
static size_t scan_fail_control(Scan *s, size_t i) {
        return scan_fail(s, s->p[i] ? SCAN_CONTROL : SCAN_NUL, i);
}

/* A string body after its opening quote at start: returns the index after the closing
 * quote. Escape sequences are skipped here and checked by json-c. */
static size_t scan_string(Scan *s, size_t start) {
        const unsigned char *p = s->p;
        size_t i = start + 1, n = s->n;

        while (i < n) {
                unsigned char c = p[i];
                if (c == '"')
                        return i + 1;
                if (c == '\\') {
                        if (i + 1 >= n)
                                break;
                        if (p[i + 1] < 0x20)
                                return scan_fail_control(s, i + 1);
                        i += 2;
                } else if (c < 0x20)
                        return scan_fail_control(s, i);
                else if (c < 0x80)
                        i++;
                else {
                        size_t k = text_utf8_seq_len(p + i, n - i);
                        if (!k)
                                return scan_fail(s, SCAN_NOT_UTF8, i);
                        i += k;
                }
        }
        return scan_fail(s, SCAN_UNTERMINATED, start);
}

static size_t scan_digits(const unsigned char *p, size_t n, size_t i) {
        while (i < n && p[i] >= '0' && p[i] <= '9')
                i++;
        return i;
}

/* RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static size_t scan_number(Scan *s, size_t start) {
        const unsigned char *p = s->p;
        size_t i = start, n = s->n, j;

        if (p[i] == '-')
                i++;
        if (i < n && p[i] == '0') {
                if (++i < n && p[i] >= '0' && p[i] <= '9')
                        return scan_fail(s, SCAN_NUMBER, start);        /* leading zero */
        } else if (i < n && p[i] >= '1' && p[i] <= '9')
                i = scan_digits(p, n, i + 1);
        else
                return scan_fail(s, SCAN_NUMBER, start);
        if (i < n && p[i] == '.') {
                j = scan_digits(p, n, i + 1);
                if (j == i + 1)
                        return scan_fail(s, SCAN_NUMBER, start);
                i = j;
        }
        if (i < n && (p[i] == 'e' || p[i] == 'E')) {
                i++;
                if (i < n && (p[i] == '+' || p[i] == '-'))
                        i++;
                j = scan_digits(p, n, i);
                if (j == i)
                        return scan_fail(s, SCAN_NUMBER, start);
                i = j;
        }
        return i;
}

/* A byte outside strings that is none of JSON's. */
static size_t scan_unexpected(Scan *s, size_t i) {
        unsigned char c = s->p[i];

        if (c == 0)
                return scan_fail(s, SCAN_NUL, i);
        if (c >= 0x80 && text_utf8_seq_len(s->p + i, s->n - i) == 0)
                return scan_fail(s, SCAN_NOT_UTF8, i);
        return scan_fail(s, SCAN_UNEXPECTED, i);
}

/* False (with s->error and s->at) if the payload cannot be strict JSON within
 * REPORT_MAX_DEPTH; true does not mean it is JSON (json-c checks the grammar). Outside
 * strings only structural characters, whitespace, numbers and the letters of
 * true/false/null may appear. */
static bool json_prescan(Scan *s) {
        unsigned depth = 0;
        size_t i = 0;

        while (i < s->n) {
                switch (s->p[i]) {
                case '{':
                case '[':
                        i = ++depth > REPORT_MAX_DEPTH ? scan_fail(s, SCAN_DEPTH, i) : i + 1;
                        break;
                case '}':
                case ']':
                        i = depth-- == 0 ? scan_fail(s, SCAN_UNBALANCED, i) : i + 1;
                        break;
                case '"':
                        i = scan_string(s, i);
                        break;
                case '-':
                case '0' ... '9':
                        i = scan_number(s, i);
                        break;
                case ' ': case '\t': case '\n': case '\r': case ',': case ':':
                case 't': case 'r': case 'u': case 'e': case 'f': case 'a': case 'l': case 's':
                case 'n':
                        i++;
                        break;
                default:
                        i = scan_unexpected(s, i);
                }
                if (i == SCAN_FAIL)
                        return false;
        }
        return true;
}

/* The malformed_json detail of a failed scan. */
static void scan_detail(const Scan *s, char detail[static REPORT_DETAIL_MAX]) {
        static const char *const what[] = {
                [SCAN_NOT_UTF8] = "not UTF-8",
                [SCAN_NUL] = "NUL byte",
                [SCAN_UNTERMINATED] = "unterminated string",
                [SCAN_NUMBER] = "not a JSON number",
        };
        unsigned char c = s->p[s->at];

        if (s->error == SCAN_CONTROL)
                detail_set(detail, "control byte 0x%02x in a string at byte offset %zu", c, s->at);
        else if (s->error == SCAN_DEPTH)
                detail_set(detail, "nested deeper than %d at byte offset %zu", REPORT_MAX_DEPTH, s->at);
        else if (s->error == SCAN_UNBALANCED)
                detail_set(detail, "\"%c\" closes nothing at byte offset %zu", c, s->at);
        else if (s->error < ELEMENTSOF(what) && what[s->error])
                detail_set(detail, "%s at byte offset %zu", what[s->error], s->at);
        else if (c > ' ' && c < 0x7f)
                detail_set(detail, "unexpected \"%c\" at byte offset %zu", c, s->at);
        else
                detail_set(detail, "unexpected byte 0x%02x at byte offset %zu", c, s->at);
}

/* ---- json-c tokener, one per thread ------------------------------------------------------ */

static pthread_key_t tokener_key;
static pthread_once_t tokener_once = PTHREAD_ONCE_INIT;
static int tokener_key_error;

static void tokener_destroy(void *p) {
        json_tokener_free(p);
}

static void tokener_key_init(void) {
        tokener_key_error = -pthread_key_create(&tokener_key, tokener_destroy);
}

/* The calling thread's tokener, created on first use and freed when the thread exits: a new
 * tokener per message costs three allocations. json-c's depth counts every value, scalars
 * included, with the top level at 0, so it admits REPORT_MAX_DEPTH containers holding a
 * scalar only with a limit of REPORT_MAX_DEPTH + 1; the byte scan enforces the exact limit. */
static struct json_tokener *tokener_get(void) {
        struct json_tokener *tok;

        if (pthread_once(&tokener_once, tokener_key_init) != 0 || tokener_key_error < 0)
                return NULL;
        tok = pthread_getspecific(tokener_key);
        if (tok) {
                json_tokener_reset(tok);
                return tok;
        }
        tok = json_tokener_new_ex(REPORT_MAX_DEPTH + 1);
        if (!tok)
                return NULL;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        if (pthread_setspecific(tokener_key, tok) != 0) {
                json_tokener_free(tok);
                return NULL;
        }
        return tok;
}

/* Parses the payload (already scanned). Returns 1 and the root (caller owns; NULL for a JSON
 * null), 0 if it is not a single JSON value, -ENOMEM. */

/* Parses the payload (already scanned). Returns 1 and the root (caller owns; NULL for a JSON
 * null), 0 if it is not a single JSON value (with json-c's reason in detail), -ENOMEM. */
static int json_parse(const char *buf, size_t len, json_object **ret, char detail[static REPORT_DETAIL_MAX]) {
        struct json_tokener *tok;
        json_object *root;
        enum json_tokener_error err;
        size_t i, at;

        if (len > INT32_MAX) {
                detail_set(detail, "larger than json-c can parse");
                return 0;
        }
        tok = tokener_get();
        if (!tok)
                return -ENOMEM;
        root = json_tokener_parse_ex(tok, buf, (int) len);
        err = json_tokener_get_error(tok);
        at = json_tokener_get_parse_end(tok);
        if (err == json_tokener_continue) {
                /* json-c needs a terminator after a top-level number ("123"): a NUL byte
                 * is its end of input. Anything else unfinished is an error then. */
                root = json_tokener_parse_ex(tok, "", 1);
                err = json_tokener_get_error(tok);
                at = len;
        } else if (err == json_tokener_success && at != len)
                err = json_tokener_error_parse_unexpected;      /* cannot happen in strict mode */
        if (err != json_tokener_success) {
                json_object_put(root);
                detail_set(detail, "%s at byte offset %zu", json_tokener_error_desc(err), at);
                return 0;
        }
        if (!root) {
                /* json-c 0.16 reports an allocation failure as success with no object, like
                 * a literal null: tell them apart by the first byte of the value. */
                for (i = 0; i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'); i++)
                        ;
                if (i == len || buf[i] != 'n')
                        return -ENOMEM;
        }
        *ret = root;
        return 1;
}

/* "a string", "an integer", ... for details; NULL stands for JSON null. */
static const char *json_type_phrase(json_object *o) {
        switch (json_object_get_type(o)) {
        case json_type_null:    return "null";
        case json_type_boolean: return "a boolean";
        case json_type_double:  return "a non-integer number";
        case json_type_int:     return "an integer";
        case json_type_object:  return "an object";
        case json_type_array:   return "an array";
        case json_type_string:  return "a string";
        default:                return "an unknown JSON type";
        }
}

/* ---- items ---------------------------------------------------------------------------- */

typedef struct ItemContext {
        const ReportRules *rules;
        const char *controller_id;      /* valid here: message checks passed */
        size_t controller_id_len;
        usec_t now;
} ItemContext;

/* A present, non-null member, or NULL (json-c gives JSON null as a NULL object); *ret_null
 * tells a null member from an absent one. */
static json_object *member(json_object *o, const char *key, bool *ret_null) {
        json_object *v = NULL;

        *ret_null = json_object_object_get_ex(o, key, &v) && !v;
        return v;
}

static int cmp_outage_type(const void *key, const void *elem) {
        return strcmp(key, *(char *const *) elem);
}

/* An item's members as either parser found them: strings as spans (not NUL-terminated),
 * the timestamp as a string or as whole seconds. Presence and JSON types are checked. */
typedef struct ItemFields {
        const char *type;
        size_t type_len;
        const char *ts;                 /* NULL: an integer timestamp, ts_secs */
        size_t ts_len;
        int64_t ts_secs;
        const char *cid;                /* NULL: absent (or null) */
        size_t cid_len;
} ItemFields;

/* Integer or string timestamp -> microseconds; false: bad_timestamp, with the detail. */
static bool item_timestamp(const ItemFields *f, usec_t *ret, char detail[static REPORT_DETAIL_MAX]) {
        char q[DETAIL_QUOTE_MAX];

        if (!f->ts) {
                if (f->ts_secs < 0 || f->ts_secs > TIMESTAMP_UNIX_SECONDS_MAX) {
                        detail_set(detail, "integer timestamp outside 0..%" PRId64, TIMESTAMP_UNIX_SECONDS_MAX);
                        return false;
                }
                *ret = f->ts_secs * USEC_PER_SEC;
                return true;
        }
        if (timestamp_parse(f->ts, f->ts_len, ret) == 0)
                return true;
        detail_set(detail, "timestamp \"%s\" is not YYYY-MM-DDTHH:MM:SS[.ffffff][Z|±HH:MM] with a real date and time",
                   detail_quote(q, f->ts, f->ts_len));
        return false;
}

/* Accepted: ts no more than max_future_skew ahead of now and, with max_age > 0, no more
 * than max_age behind it. Both boundaries are inclusive. False: the detail says which. */
static bool item_in_window(usec_t ts, const ReportRules *r, usec_t now, char detail[static REPORT_DETAIL_MAX]) {
        char d[TEXT_DURATION_MAX];
        usec_t ahead;

        /* Whatever the limits, only instants from 0001-01-01 to 9999-12-31 UTC: a string
         * with an offset can name an instant in year 0 or 10000 (0000-01-01T00:00:00+01:00),
         * which the database would refuse, and one such report would fail every flush. */
        if (ts < REPORT_TIMESTAMP_MIN || ts > REPORT_TIMESTAMP_MAX) {
                detail_set(detail, ts < REPORT_TIMESTAMP_MIN ? "before 0001-01-01T00:00:00Z"
                                                             : "after 9999-12-31T23:59:59.999999Z");
                return false;
        }

        /* Saturate: with extreme clocks or limits the difference may not fit in int64. */
        if (__builtin_sub_overflow(ts, now, &ahead))
                ahead = ts > now ? INT64_MAX : INT64_MIN;
        if (ahead > r->max_future_skew) {
                detail_set(detail, "more than max_future_skew %s ahead", text_format_duration(r->max_future_skew, d));
                return false;
        }
        if (r->max_age > 0 && ahead < -r->max_age) {
                detail_set(detail, "older than max_age %s", text_format_duration(r->max_age, d));
                return false;
        }
        return true;
}

/* The presence and JSON type checks: missing_field, then bad_field_type. */
static RejectReason item_check_fields(json_object *o, ItemFields *f, char detail[static REPORT_DETAIL_MAX]) {
        bool type_null, ts_null, cid_null;
        json_object *type = member(o, "outage_type", &type_null);
        json_object *ts = member(o, "timestamp", &ts_null);
        json_object *cid = member(o, "controller_id", &cid_null);     /* null counts as absent */

        if (!type || !ts) {
                const char *name = !type ? "outage_type" : "timestamp";
                detail_set(detail, "%s is %s", name, (!type ? type_null : ts_null) ? "null" : "absent");
                return REJECT_MISSING_FIELD;
        }
        if (!json_object_is_type(type, json_type_string)) {
                detail_set(detail, "outage_type is %s, expected a string", json_type_phrase(type));
                return REJECT_BAD_FIELD_TYPE;
        }
        if (!json_object_is_type(ts, json_type_string) && !json_object_is_type(ts, json_type_int)) {
                detail_set(detail, "timestamp is %s, expected a string or an integer", json_type_phrase(ts));
                return REJECT_BAD_FIELD_TYPE;
        }
        if (cid && !json_object_is_type(cid, json_type_string)) {
                detail_set(detail, "controller_id is %s, expected a string", json_type_phrase(cid));
                return REJECT_BAD_FIELD_TYPE;
        }
        *f = (ItemFields) {
                .type = json_object_get_string(type),
                .type_len = (size_t) json_object_get_string_len(type),
                .cid = cid ? json_object_get_string(cid) : NULL,
                .cid_len = cid ? (size_t) json_object_get_string_len(cid) : 0,
        };
        if (json_object_is_type(ts, json_type_int))
                /* json-c clamps integers beyond int64/uint64 to the limits, which are out of
                 * range here too; get_int64 clamps uint64 above INT64_MAX to INT64_MAX. */
                f->ts_secs = json_object_get_int64(ts);
        else {
                f->ts = json_object_get_string(ts);
                f->ts_len = (size_t) json_object_get_string_len(ts);
        }
        return REJECT_NONE;
}

/* The checks after presence and JSON types, in SPEC order (bad_outage_type,
 * unknown_outage_type, bad_timestamp, timestamp_out_of_range, controller_mismatch), for
 * either parser: fills it->outage_type and it->timestamp when valid, else it->detail. */
static RejectReason item_check_values(const ItemFields *f, const ItemContext *c, ReportItem *it) {
        char q[DETAIL_QUOTE_MAX];
        usec_t t;

        if (!text_outage_type_valid_len(f->type, f->type_len)) {
                detail_set(it->detail, "outage_type \"%s\" does not match ^[a-z][a-z0-9_]{0,63}$",
                           detail_quote(q, f->type, f->type_len));
                return REJECT_BAD_OUTAGE_TYPE;
        }
        memcpy(it->outage_type, f->type, f->type_len);
        it->outage_type[f->type_len] = '\0';
        if (c->rules->outage_types &&
            !bsearch(it->outage_type, c->rules->outage_types, c->rules->n_outage_types, sizeof(char *),
                     cmp_outage_type)) {
                detail_set(it->detail, "outage_type %s is not in aggregation.outage_types", it->outage_type);
                return REJECT_UNKNOWN_OUTAGE_TYPE;
        }
        if (!item_timestamp(f, &t, it->detail))
                return REJECT_BAD_TIMESTAMP;
        if (!item_in_window(t, c->rules, c->now, it->detail))
                return REJECT_TIMESTAMP_OUT_OF_RANGE;
        if (f->cid && (f->cid_len != c->controller_id_len || memcmp(f->cid, c->controller_id, f->cid_len) != 0)) {
                detail_set(it->detail, "controller_id \"%s\" is not the topic's %s",
                           detail_quote(q, f->cid, f->cid_len), c->controller_id);
                return REJECT_CONTROLLER_MISMATCH;
        }
        it->timestamp = t;
        return REJECT_NONE;
}

/* The item checks in SPEC order; fills it->outage_type and it->timestamp when valid, else
 * it->detail. */
static RejectReason item_check(json_object *o, const ItemContext *c, ReportItem *it) {
        ItemFields f;
        RejectReason reason;

        if (!json_object_is_type(o, json_type_object)) {
                detail_set(it->detail, "%s, not an object", json_type_phrase(o));
                return REJECT_NOT_A_REPORT;
        }
        reason = item_check_fields(o, &f, it->detail);
        return reason != REJECT_NONE ? reason : item_check_values(&f, c, it);
}

/* Checks item k of n (n == 0: the message is one object, not an array). */
static int item_parse(json_object *o, const ItemContext *c, ReportItem *it, size_t k, size_t n) {
        const char *json;
        size_t json_len;

        it->reason = item_check(o, c, it);
        if (it->reason == REJECT_NONE)
                return 0;
        if (n > 0)
                detail_append_index(it->detail, k, n);

        json = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                 &json_len);
        if (!json)
                return -ENOMEM;
        it->payload = text_escape(json, json_len, REPORT_REJECT_PAYLOAD_MAX);
        return it->payload ? 0 : -ENOMEM;
}

/* ---- the flat path: one object of plain members, without json-c ----------------------- */

/* Most reports are one object of a few members whose values are strings without escapes
 * or non-negative integers. Parsing those with json-c costs a tokener pass, a locale
 * switch and half a dozen allocations per message; this path reads them in place. It
 * only ever accepts: anything it does not recognise, and any item that fails a check,
 * goes the json-c way, which alone writes details and reject payloads. The payload has
 * passed the byte scan (UTF-8, no NUL or raw control bytes, RFC 8259 numbers). */

typedef struct FlatValue {
        const char *s;
        size_t len;
        bool integer;           /* a non-negative integer of at most 18 digits, else a string */
        bool present;
} FlatValue;

static _Thread_local uint64_t flat_count;

uint64_t report_flat_count(void) {
        return flat_count;
}

static size_t flat_ws(const char *p, size_t n, size_t i) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
                i++;
        return i;
}

/* A string at p[i] without backslashes, or an integer: its span, and the index after it;
 * SIZE_MAX for anything else. */
static size_t flat_value(const char *p, size_t n, size_t i, FlatValue *v) {
        const char *end;
        size_t j = i;

        if (i >= n)
                return SIZE_MAX;
        if (p[i] == '"') {
                end = memchr(p + i + 1, '"', n - i - 1);
                if (!end || memchr(p + i + 1, '\\', (size_t) (end - p - i - 1)))
                        return SIZE_MAX;
                *v = (FlatValue) { .s = p + i + 1, .len = (size_t) (end - p - i - 1) };
                return (size_t) (end - p) + 1;
        }
        while (j < n && p[j] >= '0' && p[j] <= '9')
                j++;
        if (j == i || j - i > 18 || (j < n && (p[j] == '.' || p[j] == 'e' || p[j] == 'E')))
                return SIZE_MAX;
        *v = (FlatValue) { .s = p + i, .len = j - i, .integer = true };
        return j;
}

/* Stores a member's value under its key if it is one of the three; false for a second
 * occurrence of one (json-c keeps the last: leave that to it). */
static bool flat_store(const FlatValue *key, const FlatValue *v, FlatValue f[static 3]) {
        static const char *const names[3] = { "outage_type", "timestamp", "controller_id" };

        if (key->integer)
                return false;
        for (int k = 0; k < 3; k++)
                if (key->len == strlen(names[k]) && memcmp(key->s, names[k], key->len) == 0) {
                        if (f[k].present)
                                return false;
                        f[k] = *v;
                        f[k].present = true;
                }
        return true;
}

/* Splits a flat object into its three members (f[0] outage_type, f[1] timestamp,
 * f[2] controller_id). False if the payload is anything else. */
static bool flat_split(const char *p, size_t n, FlatValue f[static 3]) {
        size_t i = flat_ws(p, n, 0);
        FlatValue key, v;

        if (i >= n || p[i] != '{')
                return false;
        for (;;) {
                i = flat_value(p, n, flat_ws(p, n, i + 1), &key);
                if (i == SIZE_MAX || key.integer)
                        return false;
                i = flat_ws(p, n, i);
                if (i >= n || p[i] != ':')
                        return false;
                i = flat_value(p, n, flat_ws(p, n, i + 1), &v);
                if (i == SIZE_MAX || !flat_store(&key, &v, f))
                        return false;
                i = flat_ws(p, n, i);
                if (i < n && p[i] == '}')
                        break;
                if (i >= n || p[i] != ',')
                        return false;
        }
        return flat_ws(p, n, i + 1) == n;
}

/* The checks of item_check for a flat object: true and it filled when every one passes
 * (a reject goes the json-c way, which also writes its payload). */
static bool flat_item(const FlatValue f[static 3], const ItemContext *c, ReportItem *it) {
        const FlatValue *type = &f[0], *ts = &f[1], *cid = &f[2];
        ItemFields v = { .type = type->s, .type_len = type->len };

        if (!type->present || !ts->present || type->integer || (cid->present && cid->integer))
                return false;
        if (ts->integer)
                for (size_t k = 0; k < ts->len; k++)    /* at most 18 digits: no overflow */
                        v.ts_secs = v.ts_secs * 10 + (ts->s[k] - '0');
        else {
                v.ts = ts->s;
                v.ts_len = ts->len;
        }
        if (cid->present) {
                v.cid = cid->s;
                v.cid_len = cid->len;
        }
        if (item_check_values(&v, c, it) == REJECT_NONE)
                return true;
        it->detail[0] = '\0';
        return false;
}

/* A payload that passed the byte scan as one valid report: true and m's one item set. */
static bool flat_parse(ReportMessage *m, const ItemContext *c, const char *payload, size_t len) {
        FlatValue f[3] = {};

        if (!flat_split(payload, len, f) || !flat_item(f, c, &m->item))
                return false;
        m->item.reason = REJECT_NONE;
        m->item.payload = NULL;
        m->item.detail[0] = '\0';
        m->items = &m->item;
        m->n_items = 1;
        flat_count++;
        return true;
}

/* ---- messages ------------------------------------------------------------------------- */

ReportMessage *report_message_free(ReportMessage *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_items; i++)
                free(m->items[i].payload);
        if (m->items != &m->item)
                free(m->items);
        free(m->payload);
        free(m);
        return NULL;
}

static void json_object_putp(json_object **o) {
        json_object_put(*o);
}

static void report_message_freep(ReportMessage **m) {
        report_message_free(*m);
}

/* Sets a message-level reject; the detail is written by the caller (before or after). */
static int message_reject(ReportMessage *m, RejectReason reason, const void *payload, size_t len) {
        m->reason = reason;
        m->payload = text_escape(payload, len, REPORT_REJECT_PAYLOAD_MAX);
        return m->payload ? 0 : -ENOMEM;
}

/* not_a_report or batch_too_large for a parsed root; returns its item count when fine. */
static size_t message_check_root(ReportMessage *m, json_object *root, const ReportRules *rules) {
        char limit[32];
        size_t n;

        if (json_object_is_type(root, json_type_object))
                return 1;
        if (!json_object_is_type(root, json_type_array) || json_object_array_length(root) == 0) {
                m->reason = REJECT_NOT_A_REPORT;
                detail_set(m->detail, "the payload is %s, not an object or a non-empty array",
                           json_object_is_type(root, json_type_array) ? "an empty array" : json_type_phrase(root));
                return 0;
        }
        n = json_object_array_length(root);
        if (n > rules->max_batch_items) {
                m->reason = REJECT_BATCH_TOO_LARGE;
                snprintf(limit, sizeof limit, "%" PRIu64, rules->max_batch_items);
                detail_set(m->detail, "%zu items, more than max_batch_items %s", n, limit);
                return 0;
        }
        return n;
}

/* The message-level checks after the controller id: returns 1 with the root and its item
 * count, 0 with m->reason and m->detail set, 2 when the flat path filled m's one valid
 * item (no root), or -ENOMEM. */
static int message_check(ReportMessage *m, const ItemContext *c, const void *payload, size_t len,
                         const ReportRules *rules, json_object **ret_root, size_t *ret_n) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        Scan scan = { .p = payload, .n = len };
        char size[TEXT_SIZE_MAX];
        size_t n;
        int r;

        if (len > rules->max_payload) {
                detail_set(m->detail, "%zu bytes, more than max_payload %s", len,
                           text_format_size(rules->max_payload, size));
                return message_reject(m, REJECT_PAYLOAD_TOO_LARGE, payload, len);
        }
        if (!json_prescan(&scan)) {
                scan_detail(&scan, m->detail);
                return message_reject(m, REJECT_MALFORMED_JSON, payload, len);
        }
        if (flat_parse(m, c, payload, len))
                return 2;
        r = json_parse(payload, len, &root, m->detail);
        if (r < 0)
                return r;
        if (r == 0)
                return message_reject(m, REJECT_MALFORMED_JSON, payload, len);

        n = message_check_root(m, root, rules);
        if (n == 0)
                return message_reject(m, m->reason, payload, len);

        *ret_root = TAKE_PTR(root);
        *ret_n = n;
        return 1;
}

/* report_parse_message, with the detail of a bad_controller_id given by the caller (NULL:
 * topic_id is valid or the detail follows from it). */
static int parse_message(const char *topic_id, const char *bad_id_detail, const void *payload, size_t len,
                         const ReportRules *rules, usec_t now, ReportMessage **ret) {
        _cleanup_(report_message_freep) ReportMessage *m = NULL;
        _cleanup_(json_object_putp) json_object *root = NULL;
        ItemContext c;
        size_t n = 0;
        int r;

        if (!payload)
                len = 0;
        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;

        if (!text_controller_id_valid(topic_id)) {
                detail_set(m->detail, "%s", bad_id_detail ? bad_id_detail : topic_id ? BAD_ID_PATTERN : BAD_ID_TOPIC);
                r = message_reject(m, REJECT_BAD_CONTROLLER_ID, payload, len);
                if (r < 0)
                        return r;
                *ret = TAKE_PTR(m);
                return 0;
        }
        m->controller_valid = true;
        c = (ItemContext) {
                .rules = rules,
                .controller_id = m->controller_id,
                .controller_id_len = strlen(topic_id),
                .now = now,
        };
        memcpy(m->controller_id, topic_id, c.controller_id_len + 1);

        r = message_check(m, &c, payload, len, rules, &root, &n);
        if (r < 0)
                return r;
        if (r == 1) {
                bool array = json_object_is_type(root, json_type_array);

                m->items = n == 1 ? &m->item : calloc(n, sizeof(ReportItem));
                if (!m->items)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++) {
                        json_object *o = array ? json_object_array_get_idx(root, i) : root;
                        m->n_items = i + 1;     /* so that a failure frees what was made */
                        r = item_parse(o, &c, &m->items[i], i + 1, array ? n : 0);
                        if (r < 0)
                                return r;
                }
        }
        *ret = TAKE_PTR(m);
        return 0;
}

int report_parse_message(const char *topic_id, const void *payload, size_t len,
                         const ReportRules *rules, usec_t now, ReportMessage **ret) {
        return parse_message(topic_id, NULL, payload, len, rules, now, ret);
}

int report_parse_topic(const char *filter, const char *topic, size_t topic_len,
                       const void *payload, size_t len, const ReportRules *rules, usec_t now,
                       ReportMessage **ret) {
        char id[TEXT_NAME_MAX + 1], why[REPORT_DETAIL_MAX], q[DETAIL_QUOTE_MAX];
        int r = report_topic_id(filter, topic, topic_len, id, sizeof id);

        if (r >= 0)
                return parse_message(id, NULL, payload, len, rules, now, ret);
        if (r == -EBADMSG)
                return parse_message(NULL, BAD_ID_PATTERN, payload, len, rules, now, ret);
        /* The filter is configuration (UTF-8 without controls), quoted only to bound it. */
        detail_set(why, "%s %s", BAD_ID_TOPIC, detail_quote(q, filter ? filter : "", filter ? strlen(filter) : 0));
        return parse_message(NULL, why, payload, len, rules, now, ret);
}
