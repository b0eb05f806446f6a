/* status.c — what the running daemon reports about itself: the counters of every module
 * gathered into Metrics, the STATUS= line for systemctl status, and the metrics file. */
#include <stdio.h>

#include "service_internal.h"

static void gather(Service *s) {
        const ApplyStats *as = apply_stats(s->apply);
        const FlushStats *fs = flushctl_stats(s->flush);
        Metrics *m = &s->m;
        AggStats st;

        agg_stats(s->agg, now_realtime(), &st);
        if (s->ingest) {        /* freed during the stop: keep the last values */
                m->messages_received = ingest_messages_received(s->ingest);
                m->mqtt_connects = ingest_connects(s->ingest);
                m->journal_write_failures = ingest_journal_failures(s->ingest);
        }
        m->reports_accepted = as->accepted;
        m->reports_duplicate = as->duplicate;
        _Static_assert(ELEMENTSOF(m->rejects) >= _REJECT_REASON_MAX, "Metrics.rejects too small");
        for (size_t i = 0; i < _REJECT_REASON_MAX; i++)
                m->rejects[i] = as->rejects[i];
        m->flushes_ok = fs->ok;
        m->flushes_failed = fs->failed;
        m->fragments_flushed = fs->fragments;
        m->rejects_flushed = fs->rejects;
        m->last_flush_success = fs->last_ok_realtime;
        m->store_refused = fs->refused;
        m->events_in_memory = st.spans;
        m->events_open = st.open_spans;
        m->events_dirty = st.dirty_spans;
        m->keys_in_memory = st.keys;
        m->memory_bytes = st.bytes;
        m->queue_length = apply_pending(s->apply) + (s->queue ? queue_length(s->queue) : 0);
        m->journal_bytes = journal_disk_bytes(s->journal);
        m->journal_uncommitted = journal_last_seq(s->journal) > flushctl_committed_seq(s->flush) ?
                                 journal_last_seq(s->journal) - flushctl_committed_seq(s->flush) : 0;
        m->mqtt_connected = s->ingest && ingest_state(s->ingest) == INGEST_SUBSCRIBED;
        m->db_connected = flusher_connected(s->flusher);
        m->paused = s->ingest && ingest_paused(s->ingest);
}

static uint64_t total_rejects(const Metrics *m) {
        uint64_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(m->rejects); i++)
                n += m->rejects[i];
        return n;
}

static const char *mqtt_state(const Service *s) {
        if (!s->ingest)
                return "not started";
        if (s->journal_error < 0)
                return "held: journal not writable";
        if (ingest_paused(s->ingest))
                return "paused";
        return ingest_state_to_string(ingest_state(s->ingest));
}

void service_report_status(Service *s) {
        usec_t now = now_monotonic();
        uint64_t reports;
        int r;

        gather(s);
        reports = s->m.reports_accepted + s->m.reports_duplicate;
        if (s->last_status_mono > 0 && now > s->last_status_mono)
                s->reports_per_s = (double) (reports - s->last_reports) * USEC_PER_SEC /
                                   (double) (now - s->last_status_mono);
        s->last_reports = reports;
        s->last_status_mono = now;

        notify_status("%s; mqtt %s; database %s; %" PRIu64 " open events; %.0f reports/s; %" PRIu64 " rejects%s%s",
                      s->stopping ? "stopping" : s->ready ? "running" : "starting", mqtt_state(s),
                      s->m.db_connected ? "connected" : "disconnected", s->m.events_open, s->reports_per_s,
                      total_rejects(&s->m), s->memory_full ? "; memory full" : "",
                      s->journal_error < 0 ? "; journal disk full or failing" : "");
        if (s->config->metrics_file) {
                r = metrics_write(s->config->metrics_file, &s->m);
                if (r < 0)
                        log_warning_errno(r, "Cannot write %s: %m", s->config->metrics_file);
        }
}
