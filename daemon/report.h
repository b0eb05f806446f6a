/* report.h — payload bytes -> validated reports, or reject reasons (SPEC section 2).
 * The only module that uses json-c. Pure apart from allocation: the caller gives the time. */
#pragma once

#include "common.h"
#include "timestamp.h"

/* A reject's payload keeps this many bytes of its source (before escaping). */
#define REPORT_REJECT_PAYLOAD_MAX 1024
/* Deepest accepted nesting of JSON containers: 32 nested arrays/objects pass, 33 are
 * malformed_json ("[]" and {"a":1} are depth 1; scalars do not add a level). */
#define REPORT_MAX_DEPTH 32

typedef enum RejectReason {
        REJECT_NONE = 0,
        /* message level, in order of checking */
        REJECT_BAD_CONTROLLER_ID,
        REJECT_PAYLOAD_TOO_LARGE,
        REJECT_MALFORMED_JSON,
        REJECT_NOT_A_REPORT,
        REJECT_BATCH_TOO_LARGE,
        /* item level, in order of checking (REJECT_NOT_A_REPORT also applies to items) */
        REJECT_MISSING_FIELD,
        REJECT_BAD_FIELD_TYPE,
        REJECT_BAD_OUTAGE_TYPE,
        REJECT_UNKNOWN_OUTAGE_TYPE,
        REJECT_BAD_TIMESTAMP,
        REJECT_TIMESTAMP_OUT_OF_RANGE,
        REJECT_CONTROLLER_MISMATCH,
        _REJECT_REASON_MAX,
        _REJECT_REASON_INVALID = -EINVAL,
} RejectReason;

/* "bad_controller_id", ... as in SPEC section 2; NULL for REJECT_NONE or out of range. */
const char *reject_reason_to_string(RejectReason r);

/* Accepted instants, whatever the age and skew limits: 0001-01-01T00:00:00Z up to
 * 9999-12-31T23:59:59.999999Z, in Unix microseconds. */
#define REPORT_TIMESTAMP_MIN (INT64_C(-62135596800) * 1000000)
#define REPORT_TIMESTAMP_MAX (INT64_C(253402300800) * 1000000 - 1)

typedef struct ReportRules {
        uint64_t max_payload;           /* bytes; a payload of exactly this size is fine */
        uint64_t max_batch_items;
        usec_t max_future_skew;
        usec_t max_age;                 /* 0: no limit */
        char *const *outage_types;      /* NULL: any valid name; else sorted, n entries */
        size_t n_outage_types;
} ReportRules;

/* A reject's detail (SPEC section 4, outage.rejects.detail), with its NUL: which bound or
 * rule failed, e.g. "older than max_age 30d", then ", item 3 of 12" for an array item
 * (counted from 1). Well-formed UTF-8 without NUL; values from the payload in it are
 * escaped like payloads and cut to 28 bytes with "...". Byte offsets count from 0. */
#define REPORT_DETAIL_MAX 160

/* One item of a message: either a valid report or a reject. */
typedef struct ReportItem {
        RejectReason reason;            /* REJECT_NONE: a valid report */
        char outage_type[65];           /* valid reports only */
        usec_t timestamp;               /* valid reports only: Unix time in microseconds */
        char *payload;                  /* rejects only: the item as JSON, first 1 KiB, escaped */
        char detail[REPORT_DETAIL_MAX]; /* rejects only, else "" */
} ReportItem;

typedef struct ReportMessage {
        bool controller_valid;          /* false: the topic's id failed the pattern */
        char controller_id[65];         /* valid only if controller_valid */
        RejectReason reason;            /* message-level reject, or REJECT_NONE */
        char *payload;                  /* message-level rejects only: first 1 KiB, escaped */
        char detail[REPORT_DETAIL_MAX]; /* message-level rejects only, else "" */
        size_t n_items;
        ReportItem *items;              /* when reason == REJECT_NONE; may point to item */
        ReportItem item;                /* the storage of a message of one item */
} ReportMessage;

/* Validates one MQTT message. topic_id is the topic level matched by the filter's '+'
 * (borrowed; NULL when the topic does not match the filter, which is a bad_controller_id).
 * now is the daemon's clock for the skew and age checks. Returns 0 and a message (caller
 * owns, report_message_free) that carries either a message-level reject or one item per
 * array element (one for an object); -ENOMEM on allocation failure. Bad input is never an
 * error return: it is a reject inside the result.
 * JSON is RFC 8259 strictly: well-formed UTF-8 only, no BOM, no NUL or raw control bytes,
 * no comments, single quotes, NaN/Infinity, leading zeros or trailing commas, one value and
 * nothing after it but whitespace; nesting up to REPORT_MAX_DEPTH. A JSON null counts as
 * absent for all three fields (so "controller_id": null is no controller id); an integer
 * timestamp outside 0..253402300799 (including integers beyond 64 bits) is bad_timestamp.
 * Thread-safe: each thread keeps its own json-c tokener, freed when the thread exits. */
int report_parse_message(const char *topic_id, const void *payload, size_t len,
                         const ReportRules *rules, usec_t now, ReportMessage **ret);

/* As report_parse_message, from the MQTT topic itself: the controller id is found with
 * report_topic_id() under the subscription filter (mqtt.topic, with or without its
 * "$share/G/" prefix). A topic that does not match, or whose id fails the pattern, gives
 * a bad_controller_id message. Borrows everything; same returns as report_parse_message. */
int report_parse_topic(const char *filter, const char *topic, size_t topic_len,
                       const void *payload, size_t len, const ReportRules *rules, usec_t now,
                       ReportMessage **ret);

ReportMessage *report_message_free(ReportMessage *m);

/* How many messages the calling thread parsed on the flat path: one object of plain
 * members (strings without escapes, non-negative integers, each of outage_type, timestamp
 * and controller_id at most once) that passes every check, read without json-c. Every
 * other payload goes through json-c; the result is the same either way. */
uint64_t report_flat_count(void);

/* The controller id of an MQTT topic: the level that the filter's single '+' matches,
 * checked against the controller id pattern (SPEC section 2). A leading "$share/G/" on the
 * filter is ignored (topics never carry it). Reads exactly topic_len bytes of topic.
 * Returns the id's length and writes it NUL-terminated into buf; on failure buf is
 * untouched and the return is
 *   -EINVAL   the topic does not match the filter level by level, or the filter does not
 *             have exactly one '+' level;
 *   -EBADMSG  the level matched but is no valid controller id (empty, longer than 64
 *             bytes, a NUL or another byte outside ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$);
 *   -ENOBUFS  a valid id does not fit in buflen bytes (65 always suffice).
 * Pure. */
int report_topic_id(const char *filter, const char *topic, size_t topic_len, char *buf, size_t buflen);

/* Parses an RFC 3339-like timestamp as in SPEC section 2:
 * YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,6}][Z|z|+-HH:MM], no offset = UTC, offsets up to 23:59,
 * seconds 00-59, real calendar dates. Returns 0 and microseconds since the Unix epoch
 * (may be negative for dates before 1970), or -EINVAL. The parser lives in timestamp.c
 * (pure, no json-c): see timestamp_parse() for the full contract. */
static inline int report_parse_timestamp(const char *s, size_t len, usec_t *ret) {
        return timestamp_parse(s, len, ret);
}
