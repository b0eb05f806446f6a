/* metrics.c — Prometheus text exposition of the daemon's counters and gauges, written
 * to a file atomically. Names follow Prometheus conventions (outaged_*_total counters). */
#include <fcntl.h>
#include <stdio.h>

#include "metrics.h"
#include "report.h"

static void counter(FILE *f, const char *name, const char *help, uint64_t v) {
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                (unsigned long long) v);
}

static void gauge(FILE *f, const char *name, const char *help, double v) {
        fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

static void write_all(FILE *f, const Metrics *m) {
        counter(f, "outaged_messages_received_total", "MQTT messages received.", m->messages_received);
        counter(f, "outaged_reports_accepted_total", "Valid reports that changed an event in memory.",
                m->reports_accepted);
        counter(f, "outaged_reports_duplicate_total", "Valid reports inside an event span already held.",
                m->reports_duplicate);
        fprintf(f, "# HELP outaged_rejects_total Rejected messages and items, by reason.\n"
                   "# TYPE outaged_rejects_total counter\n");
        for (int r = REJECT_NONE + 1; r < _REJECT_REASON_MAX && r < (int) ELEMENTSOF(m->rejects); r++)
                fprintf(f, "outaged_rejects_total{reason=\"%s\"} %llu\n",
                        reject_reason_to_string((RejectReason) r), (unsigned long long) m->rejects[r]);
        counter(f, "outaged_flushes_total", "Flush transactions committed.", m->flushes_ok);
        counter(f, "outaged_flush_failures_total", "Flush transactions that failed.", m->flushes_failed);
        counter(f, "outaged_fragments_flushed_total", "Event fragments merged into the database.",
                m->fragments_flushed);
        counter(f, "outaged_rejects_flushed_total", "Reject rows written to the database.",
                m->rejects_flushed);
        counter(f, "outaged_mqtt_connects_total", "Successful MQTT connections.", m->mqtt_connects);
        gauge(f, "outaged_last_flush_seconds", "Duration of the last flush.", m->last_flush_seconds);
        gauge(f, "outaged_events_in_memory", "Events held in memory.", (double) m->events_in_memory);
        gauge(f, "outaged_events_open", "Open events held in memory.", (double) m->events_open);
        gauge(f, "outaged_events_dirty", "Events with changes not yet flushed.", (double) m->events_dirty);
        gauge(f, "outaged_keys_in_memory", "Controller and outage type pairs held.", (double) m->keys_in_memory);
        gauge(f, "outaged_memory_bytes", "Memory held by the aggregation.", (double) m->memory_bytes);
        gauge(f, "outaged_queue_length", "Messages waiting between MQTT and aggregation.", (double) m->queue_length);
        gauge(f, "outaged_journal_bytes", "Bytes in the local journal.", (double) m->journal_bytes);
        gauge(f, "outaged_journal_uncommitted_records", "Journal records not yet covered by a flush.",
              (double) m->journal_uncommitted);
        gauge(f, "outaged_mqtt_connected", "1 when subscribed to the broker.", m->mqtt_connected);
        gauge(f, "outaged_database_connected", "1 when the database connection is up.", m->db_connected);
        gauge(f, "outaged_consumption_paused", "1 while consumption is paused (memory full).", m->paused);
        gauge(f, "outaged_start_time_seconds", "Start time of the daemon, Unix seconds.",
              (double) m->started_at / (double) USEC_PER_SEC);
}

int metrics_write(const char *path, const Metrics *m) {
        _cleanup_free_ char *tmp = NULL;
        FILE *f;
        int fd, r = 0;

        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                close(fd);
                unlink(tmp);
                return r;
        }
        write_all(f, m);
        if (fflush(f) != 0 || ferror(f))
                r = -EIO;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
        return r;
}
