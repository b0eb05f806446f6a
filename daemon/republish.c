/* republish.c — --republish-rejects: rows of outage.rejects, fixed at the source or let
 * through by a changed configuration, published again on their topics with QoS 1 so that
 * they take the normal path (validation, journal, aggregation). Only rows whose stored
 * payload and topic are the original bytes: a reject keeps the first 1 KiB, with bytes
 * that are not UTF-8 written as \xNN, and such rows are refused, by id. */
#include <stdio.h>

#include "ingest.h"
#include "log.h"
#include "service_internal.h"
#include "store.h"

#define CONNECT_TIMEOUT (10 * USEC_PER_SEC)
#define DRAIN_TIMEOUT (30 * USEC_PER_SEC)
#define REJECT_TEXT_MAX 1024            /* what a reject keeps of a payload or topic */

typedef struct Republish {
        Ingest *pub;
        uint64_t sent, refused, failed;
} Republish;

/* Not byte for byte the original: cut at 1 KiB, or escaped. (A JSON text never holds a
 * backslash followed by x, so an escape cannot be told from the original only in a
 * payload that was not JSON either: refused too.) */
static bool stored_whole(const char *s) {
        return strlen(s) < REJECT_TEXT_MAX && !strstr(s, "\\x");
}

static int one(int64_t id, const char *topic, const char *payload, void *userdata) {
        Republish *x = userdata;
        usec_t deadline = now_monotonic() + DRAIN_TIMEOUT;
        int r;

        if (!stored_whole(topic) || !stored_whole(payload)) {
                log_warning("Reject %" PRId64 " not republished: its stored %s is not the original (cut at 1 KiB, or bytes that were not UTF-8)",
                            id, stored_whole(topic) ? "payload" : "topic");
                x->refused++;
                return 0;
        }
        while ((r = ingest_publish(x->pub, topic, payload, false)) == -ENOBUFS && now_monotonic() < deadline)
                usleep(1000);
        if (r < 0) {
                log_error_errno(r, "Reject %" PRId64 " not republished: %m", id);
                x->failed++;
                return r == -ENOTCONN ? r : 0;
        }
        x->sent++;
        return 0;
}

static int connect_publisher(const Config *c, Ingest **ret) {
        _cleanup_free_ char *id = NULL;
        usec_t deadline = now_monotonic() + CONNECT_TIMEOUT;
        char err[256];
        int r;

        /* Its own client id: the daemon's persistent session must stay untouched. */
        if (asprintf(&id, "%s-republish", c->mqtt_client_id) < 0)
                return -ENOMEM;
        r = ingest_new_publisher(c, id, ret);
        if (r < 0)
                return r;
        (void) ingest_start(*ret);
        while (ingest_state(*ret) < INGEST_CONNECTED && now_monotonic() < deadline) {
                if (ingest_state(*ret) == INGEST_DISCONNECTED)
                        break;
                usleep(10000);
        }
        if (ingest_state(*ret) >= INGEST_CONNECTED)
                return 0;
        ingest_last_error(*ret, err, sizeof(err));
        log_error("MQTT broker %s not reachable as %s: %s", c->mqtt_uri, id, err[0] ? err : "no answer");
        *ret = ingest_free(*ret);
        return -EHOSTUNREACH;
}

int service_republish_rejects(const Config *c, const char *condition) {
        Republish x = {};
        usec_t deadline;
        uint64_t async_failed = 0, lost;
        Store *st = NULL;
        int r, code;

        code = service_open_database(c, &st);
        if (code != 0)
                return code;
        r = connect_publisher(c, &x.pub);
        if (r < 0) {
                store_free(st);
                return r == -EHOSTUNREACH ? EXIT_UNAVAILABLE : EXIT_GENERIC;
        }
        r = store_read_rejects(st, condition, one, &x);
        if (r == -EIO)
                log_error("Cannot read the rejects: %s", store_error(st));
        deadline = now_monotonic() + DRAIN_TIMEOUT;
        while (ingest_publish_pending(x.pub, &async_failed) > 0 && now_monotonic() < deadline)
                usleep(10000);
        /* Sent but not acknowledged by the broker: failed, or still waiting at the end. */
        lost = async_failed + (uint64_t) ingest_publish_pending(x.pub, NULL);
        x.sent -= lost < x.sent ? lost : x.sent;
        x.failed += lost;
        log_notice("Republished %" PRIu64 " rejects with QoS 1; %" PRIu64 " refused (not stored whole); %" PRIu64 " failed",
                   x.sent, x.refused, x.failed);
        (void) ingest_stop(x.pub, USEC_PER_SEC);
        ingest_free(x.pub);
        store_free(st);
        if (r < 0)
                return EXIT_GENERIC;
        return x.refused + x.failed > 0 ? EXIT_GENERIC : EXIT_OK;
}
