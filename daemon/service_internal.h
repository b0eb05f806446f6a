/* service_internal.h — the state the main loop shares between service.c (loop, timers,
 * signals, stop), startup.c (storage, replay) and status.c (STATUS= and metrics). Not an
 * interface for other modules. */
#pragma once

#include <inttypes.h>
#include <pthread.h>

#include <systemd/sd-event.h>

#include "agg.h"
#include "apply.h"
#include "backoff.h"
#include "flushctl.h"
#include "flusher.h"
#include "ingest.h"
#include "journal.h"
#include "live.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "queue.h"
#include "report.h"
#include "retention.h"
#include "service.h"
#include "store.h"

#define STATUS_INTERVAL (1 * USEC_PER_SEC)

/* Memory bounds derived from the configuration (service_init_config). */
typedef struct ServiceLimits {
        uint64_t queue_bytes;           /* the hand-off queue from paho's thread */
        uint64_t pause_bytes;           /* messages waiting to be applied: pause consumption */
        uint64_t resume_bytes;          /* ... and resume below this */
} ServiceLimits;

typedef struct Service {
        Config *config;
        const char *config_path;
        ReportRules rules;
        ApplyConfig apply_cfg;
        FlushCtlConfig flush_cfg;
        ServiceLimits limits;

        sd_event *event;
        sd_event_source *flush_timer, *status_timer, *evict_timer, *sync_timer, *retry_timer;
        sd_event_source *startup_timer, *reconnect_timer, *stop_timer, *watchdog_timer;
        sd_event_source *work_source, *retention_timer;
        usec_t watchdog_usec;

        Journal *journal;
        Queue *queue;
        Ingest *ingest;
        int ingest_wake_fd;
        Flusher *flusher;
        Agg *agg;
        Apply *apply;
        FlushCtl *flush;
        Live *live;                     /* events.topic_prefix set, else NULL */
        Retention *retention;           /* a [retention] bound set, else NULL */

        bool memory_full;
        bool ready;
        bool stopping;
        usec_t stop_deadline;
        bool drained;                   /* the stop ended with everything in the database */
        Backoff reconnect;
        IngestState last_ingest_state;
        int journal_error;

        Metrics m;
        uint64_t last_reports;
        usec_t last_status_mono;
        double reports_per_s;
} Service;

/* service.c */
void service_arm(sd_event_source *src, usec_t after);
void service_evict(Service *s);
void service_flush_committed(Service *s);
void service_reload(Service *s);

/* broker.c: sd-event handlers of the MQTT connection. */
int service_on_ingest_state(sd_event_source *src, int fd, uint32_t revents, void *userdata);
int service_on_reconnect_timer(sd_event_source *src, uint64_t usec, void *userdata);
int service_on_startup_timeout(sd_event_source *src, uint64_t usec, void *userdata);

/* startup.c: each returns 0 or an exit code, and logs. */
/* Connects and migrates, retrying until limits.startup_timeout. */
int service_open_database(const Config *c, Store **ret);
void service_init_config(Service *s);
int service_start_storage(Service *s);
int service_replay(Service *s);

/* status.c */
void service_report_status(Service *s);
