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
#include <pthread.h>

#include <json-c/json.h>

#include "report.h"
#include "text.h"

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

/* ---- names and escaping: the rules live in text.c ------------------------------------ */

bool report_controller_id_valid(const char *s) {
        return text_controller_id_valid(s);
}

bool report_outage_type_valid(const char *s) {
        return text_outage_type_valid(s);
}

char *report_escape_payload(const void *buf, size_t len, size_t max) {
        return text_escape(buf, len, max);
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

/* ---- byte scan ------------------------------------------------------------------------ */

#define SCAN_FAIL SIZE_MAX

/* A string body after its opening quote: returns the index after the closing quote. Escape
 * sequences are skipped here and checked by json-c. */
static size_t scan_string(const unsigned char *p, size_t n, size_t i) {
        while (i < n) {
                unsigned char c = p[i];
                if (c == '"')
                        return i + 1;
                if (c == '\\') {
                        if (i + 1 >= n || p[i + 1] < 0x20)
                                return SCAN_FAIL;
                        i += 2;
                } else if (c < 0x20)
                        return SCAN_FAIL;
                else if (c < 0x80)
                        i++;
                else {
                        size_t k = text_utf8_seq_len(p + i, n - i);
                        if (!k)
                                return SCAN_FAIL;
                        i += k;
                }
        }
        return SCAN_FAIL;
}

static size_t scan_digits(const unsigned char *p, size_t n, size_t i) {
        while (i < n && p[i] >= '0' && p[i] <= '9')
                i++;
        return i;
}

/* RFC 8259 number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static size_t scan_number(const unsigned char *p, size_t n, size_t i) {
        size_t j;

        if (p[i] == '-')
                i++;
        if (i < n && p[i] == '0') {
                if (++i < n && p[i] >= '0' && p[i] <= '9')
                        return SCAN_FAIL;               /* leading zero */
        } else if (i < n && p[i] >= '1' && p[i] <= '9')
                i = scan_digits(p, n, i + 1);
        else
                return SCAN_FAIL;
        if (i < n && p[i] == '.') {
                j = scan_digits(p, n, i + 1);
                if (j == i + 1)
                        return SCAN_FAIL;
                i = j;
        }
        if (i < n && (p[i] == 'e' || p[i] == 'E')) {
                i++;
                if (i < n && (p[i] == '+' || p[i] == '-'))
                        i++;
                j = scan_digits(p, n, i);
                if (j == i)
                        return SCAN_FAIL;
                i = j;
        }
        return i;
}

/* False if the payload cannot be strict JSON within REPORT_MAX_DEPTH; true does not mean it
 * is JSON (json-c checks the grammar). Outside strings only structural characters,
 * whitespace, numbers and the letters of true/false/null may appear. */
static bool json_prescan(const unsigned char *p, size_t n) {
        unsigned depth = 0;
        size_t i = 0;

        while (i < n) {
                switch (p[i]) {
                case '{':
                case '[':
                        if (++depth > REPORT_MAX_DEPTH)
                                return false;
                        i++;
                        break;
                case '}':
                case ']':
                        if (depth == 0)
                                return false;
                        depth--;
                        i++;
                        break;
                case '"':
                        i = scan_string(p, n, i + 1);
                        break;
                case '-':
                case '0' ... '9':
                        i = scan_number(p, n, i);
                        break;
                case ' ': case '\t': case '\n': case '\r': case ',': case ':':
                case 't': case 'r': case 'u': case 'e': case 'f': case 'a': case 'l': case 's':
                case 'n':
                        i++;
                        break;
                default:
                        return false;
                }
                if (i == SCAN_FAIL)
                        return false;
        }
        return true;
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
static int json_parse(const char *buf, size_t len, json_object **ret) {
        struct json_tokener *tok;
        json_object *root;
        enum json_tokener_error err;
        size_t i;

        if (len > INT32_MAX)
                return 0;
        tok = tokener_get();
        if (!tok)
                return -ENOMEM;
        root = json_tokener_parse_ex(tok, buf, (int) len);
        err = json_tokener_get_error(tok);
        if (err == json_tokener_continue) {
                /* json-c needs a terminator after a top-level number ("123"): a NUL byte
                 * is its end of input. Anything else unfinished is an error then. */
                root = json_tokener_parse_ex(tok, "", 1);
                err = json_tokener_get_error(tok);
        } else if (err == json_tokener_success && json_tokener_get_parse_end(tok) != len)
                err = json_tokener_error_parse_unexpected;      /* cannot happen in strict mode */
        if (err != json_tokener_success) {
                json_object_put(root);
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

/* ---- items ---------------------------------------------------------------------------- */

typedef struct ItemContext {
        const ReportRules *rules;
        const char *controller_id;      /* valid here: message checks passed */
        size_t controller_id_len;
        usec_t now;
} ItemContext;

/* A present, non-null member, or NULL (json-c gives JSON null as a NULL object). */
static json_object *member(json_object *o, const char *key) {
        json_object *v = NULL;

        (void) json_object_object_get_ex(o, key, &v);
        return v;
}

static int cmp_outage_type(const void *key, const void *elem) {
        return strcmp(key, *(char *const *) elem);
}

/* Integer or string timestamp -> microseconds; false: bad_timestamp. */
static bool item_timestamp(json_object *ts, usec_t *ret) {
        if (json_object_is_type(ts, json_type_int)) {
                /* json-c clamps integers beyond int64/uint64 to the limits, which are out of
                 * range here too; get_int64 clamps uint64 above INT64_MAX to INT64_MAX. */
                int64_t s = json_object_get_int64(ts);
                if (s < 0 || s > TIMESTAMP_UNIX_SECONDS_MAX)
                        return false;
                *ret = s * USEC_PER_SEC;
                return true;
        }
        return timestamp_parse(json_object_get_string(ts), (size_t) json_object_get_string_len(ts), ret) == 0;
}

/* Accepted: ts no more than max_future_skew ahead of now and, with max_age > 0, no more
 * than max_age behind it. Both boundaries are inclusive. */
static bool item_in_window(usec_t ts, const ReportRules *r, usec_t now) {
        usec_t ahead;

        /* Whatever the limits, only instants from 0001-01-01 to 9999-12-31 UTC: a string
         * with an offset can name an instant in year 0 or 10000 (0000-01-01T00:00:00+01:00),
         * which the database would refuse, and one such report would fail every flush. */
        if (ts < REPORT_TIMESTAMP_MIN || ts > REPORT_TIMESTAMP_MAX)
                return false;

        /* Saturate: with extreme clocks or limits the difference may not fit in int64. */
        if (__builtin_sub_overflow(ts, now, &ahead))
                ahead = ts > now ? INT64_MAX : INT64_MIN;
        if (ahead > r->max_future_skew)
                return false;
        if (r->max_age > 0 && ahead < -r->max_age)
                return false;
        return true;
}

/* The item checks in SPEC order; fills it->outage_type and it->timestamp when valid. */
static RejectReason item_check(json_object *o, const ItemContext *c, ReportItem *it) {
        json_object *type, *ts, *cid;
        const char *type_s;
        size_t type_len;
        usec_t t;

        if (!json_object_is_type(o, json_type_object))
                return REJECT_NOT_A_REPORT;

        type = member(o, "outage_type");
        ts = member(o, "timestamp");
        cid = member(o, "controller_id");     /* null counts as absent, as for the others */
        if (!type || !ts)
                return REJECT_MISSING_FIELD;
        if (!json_object_is_type(type, json_type_string) ||
            (!json_object_is_type(ts, json_type_string) && !json_object_is_type(ts, json_type_int)) ||
            (cid && !json_object_is_type(cid, json_type_string)))
                return REJECT_BAD_FIELD_TYPE;

        type_s = json_object_get_string(type);
        type_len = (size_t) json_object_get_string_len(type);
        if (!text_outage_type_valid_len(type_s, type_len))
                return REJECT_BAD_OUTAGE_TYPE;
        if (c->rules->outage_types &&
            !bsearch(type_s, c->rules->outage_types, c->rules->n_outage_types,
                     sizeof(char *), cmp_outage_type))
                return REJECT_UNKNOWN_OUTAGE_TYPE;

        if (!item_timestamp(ts, &t))
                return REJECT_BAD_TIMESTAMP;
        if (!item_in_window(t, c->rules, c->now))
                return REJECT_TIMESTAMP_OUT_OF_RANGE;

        if (cid && ((size_t) json_object_get_string_len(cid) != c->controller_id_len ||
                    memcmp(json_object_get_string(cid), c->controller_id, c->controller_id_len) != 0))
                return REJECT_CONTROLLER_MISMATCH;

        memcpy(it->outage_type, type_s, type_len);
        it->outage_type[type_len] = '\0';
        it->timestamp = t;
        return REJECT_NONE;
}

static int item_parse(json_object *o, const ItemContext *c, ReportItem *it) {
        const char *json;
        size_t json_len;

        it->reason = item_check(o, c, it);
        if (it->reason == REJECT_NONE)
                return 0;

        json = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                 &json_len);
        if (!json)
                return -ENOMEM;
        it->payload = text_escape(json, json_len, REPORT_REJECT_PAYLOAD_MAX);
        return it->payload ? 0 : -ENOMEM;
}

/* ---- messages ------------------------------------------------------------------------- */

ReportMessage *report_message_free(ReportMessage *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_items; i++)
                free(m->items[i].payload);
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

static int message_reject(ReportMessage *m, RejectReason reason, const void *payload, size_t len) {
        m->reason = reason;
        m->payload = text_escape(payload, len, REPORT_REJECT_PAYLOAD_MAX);
        return m->payload ? 0 : -ENOMEM;
}

/* The message-level checks after the controller id: returns 1 with the root and its item
 * count, 0 with m->reason set, or -ENOMEM. */
static int message_check(ReportMessage *m, const void *payload, size_t len, const ReportRules *rules,
                         json_object **ret_root, size_t *ret_n) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        size_t n;
        int r;

        if (len > rules->max_payload)
                return message_reject(m, REJECT_PAYLOAD_TOO_LARGE, payload, len);
        if (!json_prescan(payload, len))
                return message_reject(m, REJECT_MALFORMED_JSON, payload, len);
        r = json_parse(payload, len, &root);
        if (r < 0)
                return r;
        if (r == 0)
                return message_reject(m, REJECT_MALFORMED_JSON, payload, len);

        if (json_object_is_type(root, json_type_object))
                n = 1;
        else if (json_object_is_type(root, json_type_array) && json_object_array_length(root) > 0)
                n = json_object_array_length(root);
        else
                return message_reject(m, REJECT_NOT_A_REPORT, payload, len);
        if (n > rules->max_batch_items)
                return message_reject(m, REJECT_BATCH_TOO_LARGE, payload, len);

        *ret_root = TAKE_PTR(root);
        *ret_n = n;
        return 1;
}

int report_parse_topic(const char *filter, const char *topic, size_t topic_len,
                       const void *payload, size_t len, const ReportRules *rules, usec_t now,
                       ReportMessage **ret) {
        char id[TEXT_NAME_MAX + 1];
        int r = report_topic_id(filter, topic, topic_len, id, sizeof id);

        return report_parse_message(r >= 0 ? id : NULL, payload, len, rules, now, ret);
}

int report_parse_message(const char *topic_id, const void *payload, size_t len,
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

        r = message_check(m, payload, len, rules, &root, &n);
        if (r < 0)
                return r;
        if (r > 0) {
                m->items = calloc(n, sizeof(ReportItem));
                if (!m->items)
                        return -ENOMEM;
                for (size_t i = 0; i < n; i++) {
                        json_object *o = json_object_is_type(root, json_type_array)
                                                 ? json_object_array_get_idx(root, i) : root;
                        m->n_items = i + 1;     /* so that a failure frees what was made */
                        r = item_parse(o, &c, &m->items[i]);
                        if (r < 0)
                                return r;
                }
        }
        *ret = TAKE_PTR(m);
        return 0;
}
