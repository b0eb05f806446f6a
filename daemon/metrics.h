/* metrics.h — the Prometheus text file (log.metrics_file), rewritten atomically
 * (temporary file + rename) so a node exporter's textfile collector never reads half. */
#pragma once

#include "common.h"

/* Upper bounds of the flush duration histogram, in seconds; a last bucket is +Inf. */
#define METRICS_FLUSH_BUCKETS_SECONDS \
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
#define METRICS_FLUSH_BUCKETS 12

/* Counters and gauges as the main loop last saw them. All fields are plain values the main
 * loop writes; metrics_write() only reads them. A zeroed struct is valid. */
typedef struct Metrics {
        uint64_t messages_received;     /* MQTT messages handed over by paho */
        uint64_t reports_accepted;      /* valid reports applied to the aggregation */
        uint64_t reports_duplicate;     /* valid reports inside a span already held */
        uint64_t rejects[16];           /* by RejectReason */
        uint64_t flushes_ok;
        uint64_t flushes_failed;
        uint64_t fragments_flushed;
        uint64_t rejects_flushed;
        double last_flush_seconds;      /* set by metrics_observe_flush() */
        uint64_t events_in_memory;
        uint64_t events_open;
        uint64_t events_dirty;
        uint64_t keys_in_memory;
        uint64_t memory_bytes;
        uint64_t queue_length;
        uint64_t journal_bytes;
        uint64_t journal_uncommitted;   /* records not yet covered by a flush */
        bool mqtt_connected;
        bool db_connected;
        bool paused;
        uint64_t mqtt_connects;
        usec_t started_at;              /* wall clock */

        usec_t last_flush_success;      /* wall clock when the last flush committed; 0: none yet */
        uint64_t store_refused;         /* fragments the database refused for good and that were
                                         * dropped (SPEC section 8: store_refused) */
        uint64_t journal_write_failures; /* journal_append failures: messages not acknowledged */

        /* The flush duration histogram, kept by metrics_observe_flush(): observations per
         * bucket (not cumulative; the last one is above every bound; the count is their
         * total), and the sum of the observed seconds. */
        uint64_t flush_duration_buckets[METRICS_FLUSH_BUCKETS + 1];
        double flush_duration_sum;
} Metrics;

/* Records the duration of one committed flush: the histogram and last_flush_seconds. A
 * negative duration counts as 0; NaN and infinities are ignored. */
void metrics_observe_flush(Metrics *m, double seconds);

/* Writes m to path: a temporary file path + ".tmp" beside it (any file or symlink by that
 * name is removed first, then it is created exclusively and never followed), mode 0644
 * whatever the umask (the textfile collector runs as another user), renamed over path.
 * Returns 0 or a negative errno; on failure path is untouched and no temporary file stays
 * behind. */
int metrics_write(const char *path, const Metrics *m);
