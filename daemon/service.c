/* service.c — the running daemon: start-up order, the sd-event main loop, the drain on
 * stop. It wires the modules together and owns every policy decision (backoff, pressure,
 * logging); the modules themselves do not log.
 *
 *   paho thread: message -> journal_append (durable before PUBACK) -> queue
 *   main thread: queue -> report_parse_message -> agg_add / rejects
 *                flush timer -> agg_flush_begin -> flusher thread -> agg_flush_end
 *                -> journal_trim; eviction, status, metrics, watchdog timers
 *
 * Start-up: journal, database (migrate, checkpoint, warm start), journal replay, then the
 * broker; READY=1 once the subscription is acknowledged. */
#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <time.h>

#include <systemd/sd-event.h>

#include "agg.h"
#include "flusher.h"
#include "ingest.h"
#include "journal.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "queue.h"
#include "report.h"
#include "service.h"
#include "store.h"

#define STATUS_INTERVAL (1 * USEC_PER_SEC)
#define EVICT_INTERVAL (5 * USEC_PER_SEC)
#define BACKOFF_MIN (500 * USEC_PER_MSEC)
#define BACKOFF_MAX (30 * USEC_PER_SEC)
#define STOP_DRAIN_TIMEOUT (45 * USEC_PER_SEC)  /* under the unit's TimeoutStopSec=60s */
#define PENDING_PAUSE (20000)                   /* messages held before pausing the broker */
#define PENDING_RESUME (5000)
#define MAX_BUFFERED_REJECTS (100000)           /* about 0.5 GiB at worst (4 KiB escaped payloads) */

typedef struct Pending {
        QueueItem *head, *tail;
        size_t n;
} Pending;

typedef struct Service {
        Config *config;
        const char *config_path;
        ReportRules rules;

        sd_event *event;
        sd_event_source *flush_timer, *status_timer, *evict_timer, *sync_timer;
        sd_event_source *startup_timer, *reconnect_timer, *stop_timer, *watchdog_timer;
        usec_t watchdog_usec;

        Journal *journal;
        Queue *queue;
        Ingest *ingest;
        int ingest_wake_fd;
        Flusher *flusher;
        Agg *agg;

        Pending pending;
        ReportMessage *cur;             /* a message partly applied when memory filled */
        size_t cur_index;
        uint64_t cur_seq;
        usec_t cur_received;
        char cur_topic_id[65];
        const char *cur_topic;          /* borrowed from cur_item, or from the journal replay */
        QueueItem *cur_item;            /* owns the message being applied (NULL on replay) */

        RejectRow *rejects;             /* waiting for the next flush; strings owned */
        size_t n_rejects, cap_rejects;

        FlushJob job;
        bool job_outstanding;           /* a batch taken from agg and not ended */
        bool job_submitted;             /* with the flusher thread now */
        bool job_partial;               /* the batch was cut at flush_limit */
        uint64_t flush_limit;           /* events per flush: batch_max, less after refusals */
        bool flush_requested;
        usec_t flush_backoff;
        usec_t next_flush_mono;
        int db_failures;

        uint64_t next_flush_id;         /* see FlushJob.flush_id */
        uint64_t processed_seq;         /* last journal record applied to agg/rejects */
        uint64_t committed_seq;         /* last journal record covered by a commit */

        bool memory_full;
        bool ready;
        bool stopping;
        usec_t stop_deadline;
        usec_t reconnect_backoff;
        IngestState last_ingest_state;
        bool db_was_down;

        Metrics m;
        uint64_t last_accepted;
        usec_t last_status_mono;
        double reports_per_s;

        RateLimit reject_rl;
        RateLimit flush_rl;
        RateLimit refused_rl;
} Service;

/* ---- rejects ---- */

/* Frees the strings of n reject rows built by add_reject(), and the array. */
static void free_rejects(RejectRow *rows, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free((char *) rows[i].topic);
                free((char *) rows[i].controller_id);
                free((char *) rows[i].payload);
        }
        free(rows);
}

static void add_reject(Service *s, usec_t received, const char *topic, const char *controller_id,
                       RejectReason reason, const char *payload) {
        unsigned suppressed = 0;
        RejectRow *r;
        char *t, *c, *p;

        if ((size_t) reason < ELEMENTSOF(s->m.rejects))
                s->m.rejects[reason]++;
        if (ratelimit_below(&s->reject_rl, now_monotonic(), &suppressed)) {
                char f1[128], f2[64];
                const char *fields[] = { f1, f2, NULL };

                snprintf(f1, sizeof(f1), "CONTROLLER_ID=%s", controller_id ? controller_id : "");
                snprintf(f2, sizeof(f2), "REASON=%s", reject_reason_to_string(reason));
                log_full(LOG_LEVEL_WARNING, 0, fields, "Rejected report from topic %s: %s%s",
                         topic, reject_reason_to_string(reason),
                         suppressed ? " (more rejects suppressed)" : "");
        }

        if (s->n_rejects == s->cap_rejects) {
                size_t cap = s->cap_rejects ? s->cap_rejects * 2 : 64;
                RejectRow *n = realloc(s->rejects, cap * sizeof(*n));

                if (!n) {
                        log_error("Out of memory keeping a reject; it stays in the journal");
                        return;
                }
                s->rejects = n;
                s->cap_rejects = cap;
        }
        /* mosquitto only forwards valid UTF-8 topics, but a row the database refuses would
         * fail every flush after it: escape like the payload. */
        t = report_escape_payload(topic, strlen(topic), strlen(topic));
        c = controller_id ? strdup(controller_id) : NULL;
        p = strdup(payload ? payload : "");
        if (!t || !p || (controller_id && !c)) {
                free(t);
                free(c);
                free(p);
                log_error("Out of memory keeping a reject; it stays in the journal");
                return;
        }
        r = &s->rejects[s->n_rejects++];
        *r = (RejectRow) {
                .received_at = received,
                .topic = t,
                .controller_id = c,
                .reason = reject_reason_to_string(reason),
                .payload = p,
        };
}

/* ---- applying messages ---- */

/* Applies the items of s->cur from s->cur_index on. When the message is done, releases
 * it and records its journal position as processed. Returns 0 when done, -ENOSPC when
 * memory is full (s->cur keeps the position), or another negative errno. */
static int apply_current(Service *s) {
        ReportMessage *m = s->cur;

        for (; s->cur_index < m->n_items; s->cur_index++) {
                const ReportItem *it = &m->items[s->cur_index];
                int r;

                if (it->reason != REJECT_NONE) {
                        add_reject(s, s->cur_received, s->cur_topic, s->cur_topic_id, it->reason,
                                   it->payload);
                        continue;
                }
                r = agg_add(s->agg, s->cur_topic_id, it->outage_type, it->timestamp);
                if (r == -ENOSPC)
                        return r;
                if (r < 0) {
                        log_error_errno(r, "Cannot aggregate report: %s", strerror(-r));
                        return r;
                }
                if (r > 0)
                        s->m.reports_accepted++;
                else
                        s->m.reports_duplicate++;
        }
        s->cur = report_message_free(s->cur);
        s->cur_topic = NULL;
        s->cur_item = mfree(s->cur_item);
        s->processed_seq = s->cur_seq;
        return 0;
}

/* Parses one journaled message and applies it. Borrows topic until the message is done
 * (apply_current() returned 0): item, if not NULL, owns it and is freed then. The receive
 * time stands in for "now" in the skew and age checks, so a replay after a crash decides
 * exactly as the first time. */
static int process_message(Service *s, QueueItem *item, uint64_t seq, usec_t received,
                           const char *topic, size_t topic_len, const void *payload, size_t len) {
        char id[65];
        bool have_id;
        int r;

        assert(!s->cur);
        have_id = ingest_topic_id(s->config->mqtt_topic, topic, topic_len, id, sizeof(id)) >= 0;
        r = report_parse_message(have_id ? id : NULL, payload, len, &s->rules, received, &s->cur);
        if (r < 0) {
                free(item);
                return log_error_errno(r, "Cannot parse message: %s", strerror(-r));
        }

        s->cur_item = item;
        s->cur_seq = seq;
        s->cur_received = received;
        s->cur_index = 0;
        s->cur_topic = topic;
        snprintf(s->cur_topic_id, sizeof(s->cur_topic_id), "%s",
                 s->cur->controller_valid ? s->cur->controller_id : "");

        /* A message-level reject has no items: apply_current() only finishes it. */
        if (s->cur->reason != REJECT_NONE)
                add_reject(s, received, topic, s->cur->controller_valid ? s->cur->controller_id : NULL,
                           s->cur->reason, s->cur->payload);
        return apply_current(s);
}

static void request_flush(Service *s);
static void check_pause(Service *s);

/* Works through the messages handed over by the MQTT thread, in journal order. Stops
 * when memory is full; the next successful flush and eviction resume it. */
static void process_pending(Service *s) {
        int r;

        if (s->cur && apply_current(s) == -ENOSPC)
                goto full;
        while (s->pending.head) {
                QueueItem *i = s->pending.head;

                /* Rejects wait in memory for the next flush too: a flood of bad input
                 * while the database is down must not grow them without bound. */
                if (s->n_rejects >= MAX_BUFFERED_REJECTS)
                        goto full;

                s->pending.head = i->next;
                if (!s->pending.head)
                        s->pending.tail = NULL;
                s->pending.n--;
                r = process_message(s, i, i->seq, i->received_at, i->topic, i->topic_len,
                                    i->payload, i->len);
                if (r == -ENOSPC)
                        goto full;
        }
        s->memory_full = false;
        check_pause(s);
        return;
full:
        if (!s->memory_full && s->n_rejects >= MAX_BUFFERED_REJECTS)
                log_warning("%d rejects wait for the database: holding further messages until a flush succeeds",
                            MAX_BUFFERED_REJECTS);
        else if (!s->memory_full)
                log_warning("Memory limit of %llu events reached: flushing and evicting the oldest events early",
                            (unsigned long long) s->config->max_events_in_memory);
        s->memory_full = true;
        request_flush(s);
        check_pause(s);
}

/* Consumption pauses (the broker queues for our persistent session) while too many
 * messages wait in memory, which only happens when the memory limit is reached and the
 * database cannot take flushes. */
static void check_pause(Service *s) {
        if (!s->ingest || s->stopping)
                return;
        if (!ingest_paused(s->ingest) && s->pending.n >= PENDING_PAUSE) {
                log_warning("Pausing MQTT consumption: %zu messages wait for memory (database %s)",
                            s->pending.n, flusher_connected(s->flusher) ? "up" : "down");
                (void) ingest_pause(s->ingest);
        } else if (ingest_paused(s->ingest) && s->pending.n <= PENDING_RESUME && !s->memory_full) {
                log_notice("Resuming MQTT consumption");
                (void) ingest_resume(s->ingest);
        }
}

static int on_queue(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Service *s = userdata;
        QueueItem *list = queue_pop_all(s->queue), *last = list;
        size_t n = 0;

        if (!list)
                return 0;
        for (; last; last = last->next) {
                n++;
                if (!last->next)
                        break;
        }
        if (s->pending.tail)
                s->pending.tail->next = list;
        else
                s->pending.head = list;
        s->pending.tail = last;
        s->pending.n += n;

        process_pending(s);
        if (agg_dirty_count(s->agg) >= s->config->batch_max)
                request_flush(s);
        return 0;
}

/* paho's thread: make the message durable, then hand it over. The broker gets its PUBACK
 * when this returns, so this never gives up on a message: a journal that cannot be
 * written (disk full) blocks consumption until it can. */
static void on_message(const char *topic, size_t topic_len, const void *payload, size_t len,
                       void *userdata) {
        Service *s = userdata;
        usec_t received = now_realtime();
        char topic_buf[JOURNAL_TOPIC_MAX + 1];
        RateLimit rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 1);
        QueueItem *item;
        uint64_t seq;
        int r;

        if (topic_len > JOURNAL_TOPIC_MAX)
                topic_len = JOURNAL_TOPIC_MAX;
        memcpy(topic_buf, topic, topic_len);
        topic_buf[topic_len] = '\0';

        for (;;) {
                r = journal_append(s->journal, received, topic_buf, payload, len, &seq);
                if (r >= 0)
                        break;
                if (ratelimit_below(&rl, now_monotonic(), NULL))
                        log_error_errno(r, "Cannot write the journal (%s): holding the message and retrying",
                                        strerror(-r));
                usleep(200 * 1000);
        }
        for (;;) {
                item = queue_item_new(seq, received, topic_buf, topic_len, payload, len);
                if (item)
                        break;
                usleep(100 * 1000);
        }
        (void) queue_push(s->queue, item);
}

/* ---- flushing ---- */

static void arm(sd_event_source *src, usec_t after) {
        (void) sd_event_source_set_time_relative(src, (uint64_t) (after > 0 ? after : 1));
        (void) sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
}

static bool flush_needed(const Service *s) {
        return agg_dirty_count(s->agg) > 0 || s->n_rejects > 0 || s->processed_seq > s->committed_seq;
}

static void free_job_rejects(FlushJob *job) {
        free_rejects(job->rejects, job->n_rejects);
        job->rejects = NULL;
        job->n_rejects = 0;
}

/* Moves the buffered rejects into the job. */
static void take_rejects(Service *s, FlushJob *job) {
        job->rejects = TAKE_PTR(s->rejects);
        job->n_rejects = s->n_rejects;
        s->n_rejects = s->cap_rejects = 0;
}

/* Puts a failed job's rejects back in front of the buffered ones. */
static void give_back_rejects(Service *s, FlushJob *job) {
        size_t n = job->n_rejects + s->n_rejects;
        RejectRow *all;

        if (job->n_rejects == 0)
                return;
        if (s->n_rejects == 0) {
                s->rejects = TAKE_PTR(job->rejects);
                s->n_rejects = s->cap_rejects = job->n_rejects;
                job->n_rejects = 0;
                return;
        }
        all = realloc(job->rejects, n * sizeof(*all));
        if (!all) {
                free_job_rejects(job);
                log_error("Out of memory: rejects of a failed flush stay in the journal only");
                return;
        }
        memcpy(all + job->n_rejects, s->rejects, s->n_rejects * sizeof(*all));
        free(s->rejects);
        job->rejects = NULL;
        job->n_rejects = 0;
        s->rejects = all;
        s->n_rejects = s->cap_rejects = n;
}

/* Unique per flush job for this instance: a random start, then a counter. */
static uint64_t new_flush_id(Service *s) {
        if (s->next_flush_id == 0 || s->next_flush_id >= (uint64_t) INT64_MAX) {
                uint64_t r = 0;

                if (getentropy(&r, sizeof(r)) < 0)
                        r = (uint64_t) now_realtime() ^ ((uint64_t) getpid() << 40);
                s->next_flush_id = (r >> 2) | 1;
        }
        return s->next_flush_id++;
}

static void start_flush(Service *s) {
        int r;

        if (s->job_submitted || now_monotonic() < s->next_flush_mono)
                return;
        if (!s->job_outstanding) {
                if (!flush_needed(s))
                        return;
                memset(&s->job, 0, sizeof(s->job));
                /* At most batch_max events per transaction: a large backlog goes in several
                 * bounded transactions instead of one that holds everything up. */
                r = agg_flush_begin(s->agg, s->flush_limit, &s->job.batch);
                if (r < 0) {
                        log_error_errno(r, "Cannot prepare a flush: %s", strerror(-r));
                        return;
                }
                s->job_partial = !s->job.batch->complete;
                if (s->job_partial)
                        /* Not everything processed is in this batch: the checkpoint stays
                         * where it is, and so do the rejects (a replay after a crash
                         * would add them again). A replay re-applying reports whose
                         * spans this batch commits adds nothing: they fall inside them. */
                        s->job.seq = s->committed_seq;
                else {
                        take_rejects(s, &s->job);
                        s->job.seq = s->processed_seq;
                }
                s->job.flush_id = new_flush_id(s);
                s->job_outstanding = true;
        }
        r = flusher_submit(s->flusher, &s->job);
        if (r < 0)
                return;
        s->job_submitted = true;
        s->flush_requested = false;
}

static void request_flush(Service *s) {
        s->flush_requested = true;
        start_flush(s);
}

static void evict(Service *s) {
        int r;

        if (s->job_outstanding)
                return;
        r = agg_evict_closed(s->agg, now_realtime());
        if (r > 0)
                log_debug("Evicted %d closed events from memory", r);
        if (s->memory_full) {
                uint64_t target = s->config->max_events_in_memory / 10 * 9;
                uint64_t spans = agg_span_count(s->agg);

                if (spans > target) {
                        r = agg_evict_oldest(s->agg, spans - target);
                        if (r > 0)
                                log_info("Evicted the %d oldest events from memory early", r);
                }
        }
}

static void flush_succeeded(Service *s, FlushJob *job) {
        size_t nf = job->batch ? job->batch->n : 0;
        int r;

        s->m.flushes_ok++;
        s->m.fragments_flushed += nf;
        s->m.rejects_flushed += job->n_rejects;
        s->m.last_flush_seconds = (double) job->duration / (double) USEC_PER_SEC;
        agg_flush_end(s->agg, job->batch, true);
        job->batch = NULL;
        free_job_rejects(job);
        if (job->seq > s->committed_seq)
                s->committed_seq = job->seq;
        s->job_outstanding = false;
        s->flush_backoff = 0;
        if (s->flush_limit < s->config->batch_max)
                s->flush_limit = s->flush_limit * 2 < s->config->batch_max ? s->flush_limit * 2 : s->config->batch_max;
        s->next_flush_mono = 0;
        if (s->db_was_down) {
                log_notice("Database writes resumed after %d failed attempts", s->db_failures);
                s->db_was_down = false;
        }
        s->db_failures = 0;
        log_debug("Flushed %zu fragments in %.3f s", nf, s->m.last_flush_seconds);

        r = journal_trim(s->journal, s->committed_seq);
        if (r < 0)
                log_warning_errno(r, "Cannot trim the journal: %s", strerror(-r));
        evict(s);
}

static void flush_failed(Service *s, FlushJob *job) {
        unsigned suppressed = 0;

        s->m.flushes_failed++;
        s->db_failures++;
        s->db_was_down = true;
        if (job->result != -EAGAIN) {
                size_t n = job->batch ? job->batch->n : 0;

                /* The database refused the transaction itself, not the connection: one
                 * event it cannot take must not hold up the others. Smaller batches
                 * isolate it (a refused key goes to the back of the queue), and the
                 * limit grows back with every success. */
                if ((job->result == -EIO || job->result == -EINVAL) && n > 0) {
                        s->flush_limit = n > 1 ? n / 2 : 1;
                        if (ratelimit_below(&s->refused_rl, now_monotonic(), NULL))
                                log_error("The database refused a flush of %zu events (%s); retrying in batches of %llu: %s",
                                          n, strerror(-job->result), (unsigned long long) s->flush_limit,
                                          job->error[0] ? job->error : "no message");
                }
                agg_flush_end(s->agg, job->batch, false);
                job->batch = NULL;
                give_back_rejects(s, job);
                s->job_outstanding = false;
        }
        /* Capped exponential backoff with jitter. */
        s->flush_backoff = s->flush_backoff ? s->flush_backoff * 2 : BACKOFF_MIN;
        if (s->flush_backoff > BACKOFF_MAX)
                s->flush_backoff = BACKOFF_MAX;
        s->next_flush_mono = now_monotonic() + s->flush_backoff / 2 +
                             (usec_t) (random() % (s->flush_backoff / 2 + 1));
        if (ratelimit_below(&s->flush_rl, now_monotonic(), &suppressed))
                log_warning("Database flush failed (%s), retrying in %.1f s: %s",
                            job->result == -EAGAIN ? "outcome unknown" : strerror(-job->result),
                            (double) (s->next_flush_mono - now_monotonic()) / USEC_PER_SEC,
                            job->error[0] ? job->error : "no message");
        arm(s->flush_timer, s->next_flush_mono - now_monotonic());
}

static void maybe_finish_stop(Service *s);

static int on_flush_done(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Service *s = userdata;
        FlushJob *job = flusher_take(s->flusher);

        if (!job)
                return 0;
        s->job_submitted = false;
        if (job->result == 0)
                flush_succeeded(s, job);
        else
                flush_failed(s, job);

        /* Memory was full: eviction may have made room. */
        if (s->memory_full || s->pending.head)
                process_pending(s);
        if (job->result == 0 && (s->flush_requested || s->memory_full || s->job_partial ||
                                 agg_dirty_count(s->agg) >= s->config->batch_max || s->stopping))
                start_flush(s);
        maybe_finish_stop(s);
        return 0;
}

static int on_flush_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        start_flush(s);
        arm(src, s->config->flush_interval);
        return 0;
}

/* ---- periodic work ---- */

static int on_evict_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        evict(s);
        /* With nothing to flush (memory full of clean spans, as after a warm start) no
         * flush completes to resume the waiting messages: eviction made room, resume here. */
        if (s->memory_full)
                process_pending(s);
        arm(src, EVICT_INTERVAL);
        return 0;
}

static int on_sync_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;
        int r;

        if (journal_sync_due(s->journal, now_monotonic())) {
                r = journal_sync(s->journal);
                if (r < 0)
                        log_error_errno(r, "Cannot sync the journal: %s", strerror(-r));
        }
        arm(src, s->config->journal_sync > 0 ? s->config->journal_sync : USEC_PER_SEC);
        return 0;
}

static void update_metrics(Service *s) {
        AggStats st;

        agg_stats(s->agg, now_realtime(), &st);
        if (s->ingest) {        /* freed during the stop: keep the last values */
                s->m.messages_received = ingest_messages_received(s->ingest);
                s->m.mqtt_connects = ingest_connects(s->ingest);
        }
        s->m.events_in_memory = st.spans;
        s->m.events_open = st.open_spans;
        s->m.events_dirty = st.dirty_spans;
        s->m.keys_in_memory = st.keys;
        s->m.memory_bytes = st.bytes;
        s->m.queue_length = s->pending.n + (s->queue ? queue_length(s->queue) : 0);
        s->m.journal_bytes = journal_disk_bytes(s->journal);
        s->m.journal_uncommitted = journal_last_seq(s->journal) > s->committed_seq ?
                                   journal_last_seq(s->journal) - s->committed_seq : 0;
        s->m.mqtt_connected = s->ingest && ingest_state(s->ingest) == INGEST_SUBSCRIBED;
        s->m.db_connected = flusher_connected(s->flusher);
        s->m.paused = s->ingest && ingest_paused(s->ingest);
}

static uint64_t total_rejects(const Metrics *m) {
        uint64_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(m->rejects); i++)
                n += m->rejects[i];
        return n;
}

static int on_status_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;
        usec_t now = now_monotonic();
        int r;

        update_metrics(s);
        if (s->last_status_mono > 0 && now > s->last_status_mono)
                s->reports_per_s = (double) (s->m.reports_accepted + s->m.reports_duplicate - s->last_accepted) *
                                   USEC_PER_SEC / (double) (now - s->last_status_mono);
        s->last_accepted = s->m.reports_accepted + s->m.reports_duplicate;
        s->last_status_mono = now;

        notify_status("%s; mqtt %s; database %s; %llu open events; %.0f reports/s; %llu rejects%s",
                      s->stopping ? "stopping" : s->ready ? "running" : "starting",
                      s->ingest ? (ingest_paused(s->ingest) ? "paused" :
                                   ingest_state_to_string(ingest_state(s->ingest))) : "not started",
                      s->m.db_connected ? "connected" : "disconnected",
                      (unsigned long long) s->m.events_open, s->reports_per_s,
                      (unsigned long long) total_rejects(&s->m),
                      s->memory_full ? "; memory full" : "");
        if (s->config->metrics_file) {
                r = metrics_write(s->config->metrics_file, &s->m);
                if (r < 0)
                        log_warning_errno(r, "Cannot write %s: %s", s->config->metrics_file, strerror(-r));
        }
        arm(src, STATUS_INTERVAL);
        return 0;
}

/* The watchdog ping comes from the main loop itself, at half the interval systemd asked
 * for: if the loop wedges, the pings stop and systemd restarts the daemon. */
static int on_watchdog_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        notify_watchdog();
        arm(src, s->watchdog_usec / 2);
        return 0;
}

/* ---- broker connection ---- */

static int on_reconnect_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        if (s->ingest && !s->stopping && !ingest_paused(s->ingest) &&
            ingest_state(s->ingest) == INGEST_DISCONNECTED)
                (void) ingest_start(s->ingest);
        return 0;
}

static int on_ingest_state(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Service *s = userdata;
        IngestState st;
        char err[256];
        uint64_t v;

        (void) !read(fd, &v, sizeof(v));
        if (!s->ingest)
                return 0;
        st = ingest_state(s->ingest);
        /* An attempt can start and fail between two runs of this handler, so CONNECTING
         * goes unseen: a disconnected client with no retry armed always needs one. */
        if (st == s->last_ingest_state &&
            (st != INGEST_DISCONNECTED || sd_event_source_get_enabled(s->reconnect_timer, NULL) > 0))
                return 0;
        ingest_last_error(s->ingest, err, sizeof(err));
        switch (st) {
        case INGEST_SUBSCRIBED:
                log_info("Subscribed to %s%s%s on %s", s->config->mqtt_share_group ? "$share/" : "",
                         s->config->mqtt_share_group ? s->config->mqtt_share_group : "",
                         s->config->mqtt_share_group ? "/..." : s->config->mqtt_topic, s->config->mqtt_uri);
                s->reconnect_backoff = 0;
                if (!s->ready) {
                        s->ready = true;
                        (void) sd_event_source_set_enabled(s->startup_timer, SD_EVENT_OFF);
                        notify_ready();
                        log_notice("outaged ready");
                }
                break;
        case INGEST_DISCONNECTED:
                if (s->stopping || ingest_paused(s->ingest))
                        break;
                /* The only reconnect there is (ingest.h): capped exponential backoff. */
                s->reconnect_backoff = s->reconnect_backoff ? s->reconnect_backoff * 2 : BACKOFF_MIN;
                if (s->reconnect_backoff > BACKOFF_MAX)
                        s->reconnect_backoff = BACKOFF_MAX;
                if (s->last_ingest_state >= INGEST_CONNECTED)
                        log_warning("MQTT connection lost (%s); reconnecting", err);
                else
                        log_warning("MQTT broker %s unreachable, retrying in %.1f s: %s", s->config->mqtt_uri,
                                    (double) s->reconnect_backoff / USEC_PER_SEC, err);
                arm(s->reconnect_timer, s->reconnect_backoff);
                break;
        case INGEST_CONNECTING:
                break;
        case INGEST_CONNECTED:
                if (err[0] && s->last_ingest_state == INGEST_SUBSCRIBED)
                        log_error("MQTT subscription lost: %s", err);
                else if (err[0] && strstr(err, "subscribe"))
                        log_error("MQTT %s", err);
                break;
        default:
                break;
        }
        s->last_ingest_state = st;
        return 0;
}

static int on_startup_timeout(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;
        char err[256];

        ingest_last_error(s->ingest, err, sizeof(err));
        log_error("MQTT broker %s not reachable (or subscription refused) within %.0f s: %s",
                  s->config->mqtt_uri, (double) s->config->startup_timeout / USEC_PER_SEC,
                  err[0] ? err : "no answer");
        return sd_event_exit(sd_event_source_get_event(src), EXIT_UNAVAILABLE);
}

/* ---- stop and reload ---- */

static void maybe_finish_stop(Service *s) {
        if (!s->stopping)
                return;
        if (s->cur || s->pending.head || flush_needed(s) || s->job_outstanding) {
                if (now_monotonic() < s->stop_deadline)
                        return;
                log_warning("Stop timeout: %llu journal records are not yet in the database; they will be replayed at the next start",
                            (unsigned long long) (journal_last_seq(s->journal) - s->committed_seq));
        }
        (void) sd_event_exit(s->event, EXIT_OK);
}

static int on_stop_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        maybe_finish_stop(s);
        if (!s->job_submitted)
                start_flush(s);
        arm(src, 200 * USEC_PER_MSEC);
        return 0;
}

static int on_stop_signal(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata) {
        Service *s = userdata;
        int r;

        if (s->stopping)
                return 0;
        s->stopping = true;
        s->stop_deadline = now_monotonic() + STOP_DRAIN_TIMEOUT;
        /* A stop before the subscription was active is still a stop: the drain ends with
         * exit 0, not with the start-up timeout's 69. */
        (void) sd_event_source_set_enabled(s->startup_timer, SD_EVENT_OFF);
        notify_stopping();
        log_notice("Received %s: stopping consumption and flushing", strsignal((int) si->ssi_signo));

        if (s->ingest) {
                r = ingest_stop(s->ingest, 5 * USEC_PER_SEC);
                if (r < 0 && r != -ENOTCONN)
                        log_warning("Could not publish the offline status: %s", strerror(-r));
                /* No more consumption, not even by paho's automatic reconnect. A message
                 * paho could not hand over any more is in the journal already and is
                 * replayed at the next start. */
                queue_close(s->queue);
                s->ingest = ingest_free(s->ingest);
        }
        /* Whatever the MQTT thread handed over before the disconnect is journaled:
         * apply it and flush it. */
        on_queue(NULL, -1, 0, s);
        s->next_flush_mono = 0;
        start_flush(s);
        arm(s->stop_timer, 100 * USEC_PER_MSEC);
        maybe_finish_stop(s);
        return 0;
}

static int on_reload_signal(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata) {
        Service *s = userdata;
        Config *n = NULL;
        char err[512];
        bool announce;
        int r;

        /* READY=1 ends a reload, so the reload is announced only once the daemon is ready
         * (READY=1 promises an active subscription, SPEC section 7) and not while stopping. */
        announce = s->ready && !s->stopping;
        if (announce)
                notify_reloading();
        r = config_load(s->config_path, &n, err, sizeof(err));
        if (r < 0) {
                log_error("Reload failed, keeping the running configuration: %s", err);
                if (announce)
                        notify_ready();
                return 0;
        }
        /* Only what SPEC section 7 promises: the log level and the outage type allowlist. */
        log_set_level(n->log_level);
        s->config->log_level = n->log_level;
        for (size_t i = 0; i < s->config->n_outage_types; i++)
                free(s->config->outage_types[i]);
        free(s->config->outage_types);
        s->config->outage_types = TAKE_PTR(n->outage_types);
        s->config->n_outage_types = n->n_outage_types;
        n->n_outage_types = 0;
        s->rules.outage_types = s->config->outage_types;
        s->rules.n_outage_types = s->config->n_outage_types;
        config_free(n);
        log_notice("Reloaded: log level %s, %zu allowed outage types", log_level_to_string(s->config->log_level),
                   s->config->n_outage_types);
        if (announce)
                notify_ready();
        return 0;
}

/* ---- start-up ---- */

static bool stop_requested_early(void) {
        sigset_t set;

        return sigpending(&set) == 0 && (sigismember(&set, SIGTERM) || sigismember(&set, SIGINT));
}

/* Connects and migrates, retrying until the start-up deadline. Returns 0 or an exit code. */
static int open_database(const Config *c, Store **ret) {
        usec_t deadline = now_monotonic() + c->startup_timeout, backoff = BACKOFF_MIN;
        char err[512];
        int r;

        for (;;) {
                Store *st = NULL;

                r = store_connect(c->pg_conninfo, c->pg_password, &st, err, sizeof(err));
                if (r == -EINVAL || r == -EACCES) {
                        log_error("Database connection refused (check postgres.conninfo and the password): %s", err);
                        return EXIT_CONFIG;
                }
                if (r >= 0) {
                        r = store_migrate(st, c->gap);
                        if (r >= 0) {
                                *ret = st;
                                return 0;
                        }
                        snprintf(err, sizeof(err), "%s", store_error(st));
                        store_free(st);
                        if (r == -ESTALE) {
                                log_error("The database was set up with another aggregation.gap than the configured one: %s "
                                          "(changing the gap is a manual procedure, see docs/OPERATIONS.md)", err);
                                return EXIT_CONFIG;
                        }
                        if (r == -EPROTO) {
                                log_error("The database schema is newer than this outaged knows; upgrade outaged: %s", err);
                                return EXIT_GENERIC;
                        }
                        if (r != -ECONNRESET) {
                                log_error("Database migration failed: %s", err);
                                return EXIT_GENERIC;
                        }
                }
                if (now_monotonic() + backoff > deadline || stop_requested_early()) {
                        log_error("Database not reachable within %.0f s: %s",
                                  (double) c->startup_timeout / USEC_PER_SEC, err);
                        return stop_requested_early() ? EXIT_OK : EXIT_UNAVAILABLE;
                }
                log_warning("Database not reachable yet, retrying in %.1f s: %s",
                            (double) backoff / USEC_PER_SEC, err);
                usleep((useconds_t) backoff);
                backoff = backoff * 2 > 5 * USEC_PER_SEC ? 5 * USEC_PER_SEC : backoff * 2;
        }
}

static int load_event(const char *controller_id, const char *outage_type, usec_t start, usec_t end,
                      void *userdata) {
        Service *s = userdata;
        int r = agg_load(s->agg, controller_id, outage_type, start, end);

        return r == -ENOSPC ? 0 : r;    /* a warm start that does not fit is only slower */
}

/* Flushes synchronously on the start-up connection (journal replay). */
static int flush_sync(Service *s, Store *st) {
        FlushBatch *b = NULL;
        FlushJob job = {};
        int r;

        r = agg_flush_begin(s->agg, 0, &b);
        if (r < 0)
                return r;
        take_rejects(s, &job);
        r = store_flush(st, b->fragments, b->n, job.rejects, job.n_rejects, s->config->mqtt_client_id,
                        s->processed_seq, new_flush_id(s), NULL, NULL);
        agg_flush_end(s->agg, b, r == 0);
        if (r < 0) {
                give_back_rejects(s, &job);
                return log_error_errno(r, "Flush during journal replay failed: %s", store_error(st));
        }
        free_job_rejects(&job);
        s->committed_seq = s->processed_seq;
        (void) journal_trim(s->journal, s->committed_seq);
        evict(s);
        return 0;
}

typedef struct ReplayCtx {
        Service *s;
        Store *st;
        uint64_t n;
} ReplayCtx;

static int replay_record(uint64_t seq, usec_t received, const char *topic, const void *payload,
                         size_t len, void *userdata) {
        ReplayCtx *x = userdata;
        Service *s = x->s;
        int r;

        x->n++;
        /* topic and payload are valid only during this call: the message is finished
         * here, flushing as often as memory requires. */
        r = process_message(s, NULL, seq, received, topic, strlen(topic), payload, len);
        while (r == -ENOSPC) {
                s->memory_full = true;
                r = flush_sync(s, x->st);
                if (r < 0)
                        return r;
                r = apply_current(s);
        }
        return r < 0 ? r : 0;
}

static int replay_journal(Service *s, Store *st) {
        ReplayCtx x = { .s = s, .st = st };
        int r;

        r = journal_replay(s->journal, s->committed_seq, replay_record, &x);
        if (r < 0)
                return log_error_errno(r, "Journal replay failed: %s", strerror(-r));
        s->memory_full = false;
        if (x.n == 0)
                return 0;
        log_notice("Replayed %llu journal records not yet in the database", (unsigned long long) x.n);
        return flush_sync(s, st);
}

static int setup_loop(Service *s) {
        int r;

        r = sd_event_default(&s->event);
        if (r < 0)
                return r;
        s->watchdog_usec = notify_watchdog_usec();
        if (s->watchdog_usec > 0) {
                r = sd_event_add_time_relative(s->event, &s->watchdog_timer, CLOCK_MONOTONIC,
                                               s->watchdog_usec / 2, 0, on_watchdog_timer, s);
                if (r < 0)
                        return r;
        }
        r = sd_event_add_signal(s->event, NULL, SIGTERM, on_stop_signal, s);
        if (r >= 0)
                r = sd_event_add_signal(s->event, NULL, SIGINT, on_stop_signal, s);
        if (r >= 0)
                r = sd_event_add_signal(s->event, NULL, SIGHUP, on_reload_signal, s);
        if (r >= 0)
                r = sd_event_add_io(s->event, NULL, queue_fd(s->queue), EPOLLIN, on_queue, s);
        if (r >= 0)
                r = sd_event_add_io(s->event, NULL, flusher_fd(s->flusher), EPOLLIN, on_flush_done, s);
        if (r >= 0)
                r = sd_event_add_io(s->event, NULL, s->ingest_wake_fd, EPOLLIN, on_ingest_state, s);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->flush_timer, CLOCK_MONOTONIC,
                                               s->config->flush_interval, 0, on_flush_timer, s);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->status_timer, CLOCK_MONOTONIC, 1, 0,
                                               on_status_timer, s);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->evict_timer, CLOCK_MONOTONIC,
                                               EVICT_INTERVAL, 0, on_evict_timer, s);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->sync_timer, CLOCK_MONOTONIC,
                                               s->config->journal_sync > 0 ? s->config->journal_sync : USEC_PER_SEC,
                                               0, on_sync_timer, s);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->startup_timer, CLOCK_MONOTONIC,
                                               s->config->startup_timeout, 0, on_startup_timeout, s);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->reconnect_timer, CLOCK_MONOTONIC,
                                               USEC_PER_SEC, 0, on_reconnect_timer, s);
        if (r >= 0)
                r = sd_event_add_time_relative(s->event, &s->stop_timer, CLOCK_MONOTONIC,
                                               USEC_PER_SEC, 0, on_stop_timer, s);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(s->reconnect_timer, SD_EVENT_OFF);
        (void) sd_event_source_set_enabled(s->stop_timer, SD_EVENT_OFF);
        return 0;
}

static void service_done(Service *s) {
        s->ingest = ingest_free(s->ingest);
        if (s->queue)
                queue_close(s->queue);
        s->flusher = flusher_free(s->flusher);
        if (s->job_outstanding) {
                agg_flush_end(s->agg, s->job.batch, false);
                free_job_rejects(&s->job);
        }
        s->cur = report_message_free(s->cur);
        free(s->cur_item);
        for (QueueItem *i = s->pending.head, *n; i; i = n) {
                n = i->next;
                free(i);
        }
        free_rejects(s->rejects, s->n_rejects);
        s->queue = queue_free(s->queue);
        s->agg = agg_free(s->agg);
        if (s->journal) {
                (void) journal_sync(s->journal);
                s->journal = journal_free(s->journal);
        }
        if (s->ingest_wake_fd >= 0)
                close(s->ingest_wake_fd);
        s->event = sd_event_unref(s->event);
}

static int block_signals(void) {
        sigset_t set;

        /* Before any thread starts, so paho's and the flusher's threads inherit the mask
         * and the signals reach sd-event's signalfd. */
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGHUP);
        return -pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int service_run(Config *c, const char *config_path) {
        Service s = {
                .config = c,
                .config_path = config_path,
                .ingest_wake_fd = -1,
                .reject_rl = RATELIMIT_INIT(10 * USEC_PER_SEC, 20),
                .flush_rl = RATELIMIT_INIT(60 * USEC_PER_SEC, 5),
                .refused_rl = RATELIMIT_INIT(60 * USEC_PER_SEC, 5),
                .last_ingest_state = INGEST_DISCONNECTED,
        };
        AggConfig ac = { .gap = c->gap, .max_events = c->max_events_in_memory };
        uint64_t seed = 0;
        Store *st = NULL;
        int r, code = EXIT_GENERIC;

        s.rules = (ReportRules) {
                .max_payload = c->max_payload,
                .max_batch_items = c->max_batch_items,
                .max_future_skew = c->max_future_skew,
                .max_age = c->max_age,
                .outage_types = c->outage_types,
                .n_outage_types = c->n_outage_types,
        };
        s.m.started_at = now_realtime();
        s.flush_limit = c->batch_max;
        srandom((unsigned) (s.m.started_at ^ getpid()));

        r = block_signals();
        if (r < 0) {
                log_error_errno(r, "Cannot block signals: %s", strerror(-r));
                return EXIT_GENERIC;
        }

        r = journal_open(c->journal_dir, c->journal_sync, &s.journal);
        if (r == -EBUSY) {
                log_error("Journal directory %s is in use by another outaged", c->journal_dir);
                return EXIT_GENERIC;
        }
        if (r < 0) {
                log_error_errno(r, "Cannot open the journal directory %s: %s", c->journal_dir, strerror(-r));
                return EXIT_GENERIC;
        }
        if (journal_skipped_bytes(s.journal) > 0)
                log_warning("Journal: %llu damaged or torn bytes skipped (a crash while writing, or disk damage)",
                            (unsigned long long) journal_skipped_bytes(s.journal));

        code = open_database(c, &st);
        if (code != 0 || !st)
                goto finish;
        code = EXIT_GENERIC;

        r = store_get_checkpoint(st, c->mqtt_client_id, &s.committed_seq, NULL);
        if (r < 0) {
                log_error("Cannot read the journal checkpoint: %s", store_error(st));
                goto finish;
        }
        journal_bump_seq(s.journal, s.committed_seq);
        s.processed_seq = s.committed_seq;

        /* Warm start: events that may still be extended, so their duplicates are known. */
        usec_t horizon = now_realtime() - c->gap;
        if (getentropy(&seed, sizeof(seed)) < 0)
                seed = (uint64_t) now_realtime() ^ ((uint64_t) getpid() << 32);
        ac.hash_seed = seed;
        r = agg_new(&ac, horizon, &s.agg);
        if (r < 0) {
                log_error_errno(r, "Cannot set up aggregation: %s", strerror(-r));
                goto finish;
        }
        r = store_load_events(st, horizon, load_event, &s);
        if (r < 0) {
                log_error("Warm start failed: %s", store_error(st));
                goto finish;
        }

        r = replay_journal(&s, st);
        if (r < 0)
                goto finish;

        r = queue_new(1000000, 512u << 20, &s.queue);
        if (r >= 0)
                r = flusher_new(st, c->pg_conninfo, c->pg_password, c->mqtt_client_id, &s.flusher);
        if (r < 0) {
                log_error_errno(r, "Cannot start: %s", strerror(-r));
                goto finish;
        }
        st = NULL;      /* the flusher owns it now */

        s.ingest_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s.ingest_wake_fd < 0) {
                log_error_errno(-errno, "eventfd: %m");
                goto finish;
        }
        r = ingest_new(c, on_message, &s, s.ingest_wake_fd, &s.ingest);
        if (r < 0) {
                log_error("MQTT client refused mqtt.uri or options (%s)", c->mqtt_uri);
                code = EXIT_CONFIG;
                goto finish;
        }
        r = setup_loop(&s);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the event loop: %s", strerror(-r));
                goto finish;
        }
        log_info("Connecting to %s as %s", c->mqtt_uri, c->mqtt_client_id);
        (void) ingest_start(s.ingest);

        code = sd_event_loop(s.event);
        if (code < 0) {
                log_error_errno(code, "Event loop failed: %s", strerror(-code));
                code = EXIT_GENERIC;
        }
        if (code == EXIT_OK)
                log_notice("Stopped: all received reports are in the database");
finish:
        store_free(st);
        service_done(&s);
        return code;
}

int service_migrate(const Config *c) {
        Store *st = NULL;
        int stored = 0, known = 0, code;

        code = open_database(c, &st);
        if (code != 0 || !st)
                return code ? code : EXIT_GENERIC;
        (void) store_schema_version(st, &stored, &known);
        log_notice("Database schema is at version %d", stored);
        store_free(st);
        return EXIT_OK;
}
