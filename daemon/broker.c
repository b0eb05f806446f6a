/* broker.c — the MQTT connection as the main loop sees it: state changes reported by
 * ingest (through its eventfd), reconnects with backoff (the only reconnect there is),
 * READY=1 once the subscription is active, the start-up timeout, and journal append
 * failures reported from paho's thread. Main thread only. */
#include <stdio.h>

#include "service_internal.h"

int service_on_reconnect_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        if (s->ingest && !s->stopping && !ingest_paused(s->ingest) &&
            ingest_state(s->ingest) == INGEST_DISCONNECTED)
                (void) ingest_start(s->ingest);
        return 0;
}

static void became_ready(Service *s) {
        if (s->ready)
                return;
        s->ready = true;
        (void) sd_event_source_set_enabled(s->startup_timer, SD_EVENT_OFF);
        notify_ready();
        log_notice("outaged ready");
}

static void journal_state_changed(Service *s) {
        int e = ingest_journal_error(s->ingest);

        if (e == s->journal_error)
                return;
        if (e < 0)
                log_error_errno(e, "Cannot write the journal (%m): holding new messages unacknowledged until it can");
        else
                log_notice("Journal writes resumed");
        s->journal_error = e;
}

int service_on_ingest_state(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Service *s = userdata;
        IngestState st;
        char err[256];
        uint64_t v;
        usec_t delay;

        (void) !read(fd, &v, sizeof(v));
        if (!s->ingest)
                return 0;
        journal_state_changed(s);
        st = ingest_state(s->ingest);
        /* An attempt can start and fail between two runs of this handler, so CONNECTING
         * goes unseen: a disconnected client with no retry armed always needs one. */
        if (st == s->last_ingest_state &&
            (st != INGEST_DISCONNECTED || sd_event_source_get_enabled(s->reconnect_timer, NULL) > 0))
                return 0;
        ingest_last_error(s->ingest, err, sizeof(err));
        if (st == INGEST_SUBSCRIBED) {
                if (s->config->mqtt_share_group)
                        log_info("Subscribed to %s in shared group %s on %s", s->config->mqtt_topic,
                                 s->config->mqtt_share_group, s->config->mqtt_uri);
                else
                        log_info("Subscribed to %s on %s", s->config->mqtt_topic, s->config->mqtt_uri);
                backoff_reset(&s->reconnect);
                became_ready(s);
                if (s->live)
                        (void) live_send(s->live, s->ingest);   /* what waited for the broker */
        } else if (st == INGEST_DISCONNECTED && !s->stopping && !ingest_paused(s->ingest)) {
                /* The only reconnect there is (ingest.h). */
                delay = backoff_next(&s->reconnect);
                if (s->last_ingest_state >= INGEST_CONNECTED)
                        log_warning("MQTT connection lost (%s); reconnecting", err);
                else
                        log_warning("MQTT broker %s unreachable, retrying in %.1f s: %s", s->config->mqtt_uri,
                                    (double) delay / USEC_PER_SEC, err);
                service_arm(s->reconnect_timer, delay);
        } else if (st == INGEST_CONNECTED && err[0]) {
                if (s->last_ingest_state == INGEST_SUBSCRIBED)
                        log_error("MQTT subscription lost: %s", err);
                else if (strstr(err, "subscribe"))
                        log_error("MQTT %s", err);
        }
        s->last_ingest_state = st;
        return 0;
}

int service_on_startup_timeout(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;
        char err[256];

        ingest_last_error(s->ingest, err, sizeof(err));
        log_error("MQTT broker %s not reachable (or subscription refused) within %.0f s: %s",
                  s->config->mqtt_uri, (double) s->config->startup_timeout / USEC_PER_SEC,
                  err[0] ? err : "no answer");
        return sd_event_exit(sd_event_source_get_event(src), EXIT_UNAVAILABLE);
}
