/* metrics.c — Prometheus text exposition (format 0.0.4) of the daemon's counters, gauges
 * and the flush duration histogram, written to a file atomically. Names follow Prometheus
 * conventions (outaged_*_total counters, *_seconds units). Reads no clock, keeps no state.
 *
 * The temporary file has a fixed name beside the target, removed first and then created
 * with O_EXCL|O_NOFOLLOW: a symlink planted there is never written through, and a crash
 * between create and rename leaves at most one stale file, which the next write replaces
 * (random names would pile up instead). It is made 0644 with fchmod, not through the
 * umask, because node_exporter's textfile collector reads it as another user. */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

#include "metrics.h"
#include "report.h"
#include "version.h"

static const double flush_bounds[METRICS_FLUSH_BUCKETS] = { METRICS_FLUSH_BUCKETS_SECONDS };

void metrics_observe_flush(Metrics *m, double seconds) {
        size_t b = 0;

        if (!m || !isfinite(seconds))
                return;
        if (seconds < 0)
                seconds = 0;
        while (b < METRICS_FLUSH_BUCKETS && seconds > flush_bounds[b])
                b++;
        m->flush_duration_buckets[b]++;
        m->flush_duration_sum += seconds;
        m->last_flush_seconds = seconds;
}

/* A sample value: Prometheus spells the non-finite ones +Inf, -Inf and NaN. */
static void put_double(FILE *f, double v) {
        if (isnan(v))
                fputs("NaN", f);
        else if (isinf(v))
                fputs(v > 0 ? "+Inf" : "-Inf", f);
        else
                fprintf(f, "%.17g", v);
}

/* A label value, escaped as the format wants (backslash, double quote, newline). */
static void put_label_value(FILE *f, const char *s) {
        for (; *s; s++) {
                if (*s == '\\' || *s == '"')
                        fputc('\\', f);
                if (*s == '\n')
                        fputs("\\n", f);
                else
                        fputc(*s, f);
        }
}

static void family(FILE *f, const char *name, const char *type, const char *help) {
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v) {
        family(f, name, "counter", help);
        fprintf(f, "%s %llu\n", name, (unsigned long long) v);
}

static void gauge(FILE *f, const char *name, const char *help, double v) {
        family(f, name, "gauge", help);
        fprintf(f, "%s ", name);
        put_double(f, v);
        fputc('\n', f);
}

static void write_build_info(FILE *f) {
        family(f, "outaged_build_info", "gauge", "Always 1; the version of the running daemon.");
        fputs("outaged_build_info{version=\"", f);
        put_label_value(f, OUTAGED_VERSION);
        fputs("\"} 1\n", f);
}

static void write_rejects(FILE *f, const Metrics *m) {
        family(f, "outaged_rejects_total", "counter", "Rejected messages and items, by reason.");
        for (int r = REJECT_NONE + 1; r < _REJECT_REASON_MAX && r < (int) ELEMENTSOF(m->rejects); r++)
                fprintf(f, "outaged_rejects_total{reason=\"%s\"} %llu\n",
                        reject_reason_to_string((RejectReason) r), (unsigned long long) m->rejects[r]);
}

static void write_flush_histogram(FILE *f, const Metrics *m) {
        uint64_t cumulative = 0;

        family(f, "outaged_flush_duration_seconds", "histogram", "Duration of committed flushes.");
        for (size_t b = 0; b <= METRICS_FLUSH_BUCKETS; b++) {
                cumulative += m->flush_duration_buckets[b];
                fputs("outaged_flush_duration_seconds_bucket{le=\"", f);
                if (b < METRICS_FLUSH_BUCKETS)
                        fprintf(f, "%g", flush_bounds[b]);
                else
                        fputs("+Inf", f);
                fprintf(f, "\"} %llu\n", (unsigned long long) cumulative);
        }
        fputs("outaged_flush_duration_seconds_sum ", f);
        put_double(f, m->flush_duration_sum);
        fprintf(f, "\noutaged_flush_duration_seconds_count %llu\n", (unsigned long long) cumulative);
}

static void write_counters(FILE *f, const Metrics *m) {
        counter(f, "outaged_messages_received_total", "MQTT messages received.", m->messages_received);
        counter(f, "outaged_reports_accepted_total", "Valid reports that changed an event in memory.",
                m->reports_accepted);
        counter(f, "outaged_reports_duplicate_total", "Valid reports inside an event span already held.",
                m->reports_duplicate);
        write_rejects(f, m);
        counter(f, "outaged_flushes_total", "Flush transactions committed.", m->flushes_ok);
        counter(f, "outaged_flush_failures_total", "Flush transactions that failed.", m->flushes_failed);
        counter(f, "outaged_fragments_flushed_total", "Event fragments merged into the database.",
                m->fragments_flushed);
        counter(f, "outaged_rejects_flushed_total", "Reject rows written to the database.",
                m->rejects_flushed);
        counter(f, "outaged_store_refused_total", "Event fragments the database refused for good, dropped.",
                m->store_refused);
        counter(f, "outaged_journal_write_failures_total",
                "Messages that could not be journalled, so were not acknowledged.", m->journal_write_failures);
        counter(f, "outaged_mqtt_connects_total", "Successful MQTT connections.", m->mqtt_connects);
}

static void write_gauges(FILE *f, const Metrics *m) {
        gauge(f, "outaged_last_flush_seconds", "Duration of the last committed flush.", m->last_flush_seconds);
        gauge(f, "outaged_last_flush_success_timestamp_seconds",
              "When the last flush committed, Unix seconds; 0 before the first.",
              (double) m->last_flush_success / (double) USEC_PER_SEC);
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

static void write_all(FILE *f, const Metrics *m) {
        write_build_info(f);
        write_counters(f, m);
        write_gauges(f, m);
        write_flush_histogram(f, m);
}

/* Creates tmp afresh: whatever has that name (a stale file, a planted symlink) goes first,
 * and the exclusive create refuses anything that appears in between. */
static int create_temporary(const char *tmp) {
        int fd;

        if (unlink(tmp) < 0 && errno != ENOENT)
                return -errno;
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, 0644) < 0) {
                int r = -errno;

                (void) close(fd);
                (void) unlink(tmp);
                return r;
        }
        return fd;
}

int metrics_write(const char *path, const Metrics *m) {
        _cleanup_free_ char *tmp = NULL;
        FILE *f;
        int fd, r = 0;

        if (!path || !*path || !m)
                return -EINVAL;
        if (asprintf(&tmp, "%s.tmp", path) < 0)
                return -ENOMEM;
        fd = create_temporary(tmp);
        if (fd < 0)
                return fd;
        f = fdopen(fd, "w");
        if (!f) {
                r = -errno;
                (void) close(fd);
                (void) unlink(tmp);
                return r;
        }
        errno = 0;
        write_all(f, m);
        if (fflush(f) != 0 || ferror(f))
                r = errno > 0 ? -errno : -EIO;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(tmp);
        return r;
}
