/* metrics.h — the Prometheus text file (log.metrics_file), rewritten atomically
 * (temporary file + rename) so a node exporter's textfile collector never reads half. */
#pragma once

#include "common.h"

typedef struct Metrics {
        uint64_t messages_received;     /* MQTT messages handed over by paho */
        uint64_t reports_accepted;      /* valid reports applied to the aggregation */
        uint64_t reports_duplicate;     /* valid reports inside a span already held */
        uint64_t rejects[16];           /* by RejectReason */
        uint64_t flushes_ok;
        uint64_t flushes_failed;
        uint64_t fragments_flushed;
        uint64_t rejects_flushed;
        double last_flush_seconds;
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
        usec_t started_at;
} Metrics;

/* Writes m to path atomically. Returns 0 or a negative errno. */
int metrics_write(const char *path, const Metrics *m);
