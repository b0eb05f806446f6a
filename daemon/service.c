/* service.c — the running daemon: start-up and stop order, the sd-event main loop and its
 * timers, signals and reload. It wires the modules together and decides when things
 * happen; what happens is in the modules (see docs/ARCHITECTURE.md):
 *
 *   paho thread:  ingest: journal_append, queue_push (before the PUBACK)
 *   main thread:  queue -> apply (report_parse_message, agg_add, rejects)
 *                 flush timer -> flushctl -> flusher thread (store) -> flushctl
 *                 eviction, journal sync, status, watchdog timers
 *
 * Start-up: journal, database (migrate, checkpoint, warm start), the flusher, journal
 * replay through apply and flushctl, then the broker; READY=1 once the subscription is
 * acknowledged. Only main thread code lives here. */
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>

#include <systemd/sd-event.h>

#include "service_internal.h"

#define EVICT_INTERVAL (5 * USEC_PER_SEC)
#define WORK_BUDGET (20 * USEC_PER_MSEC)        /* per wake-up, so timers always run */
#define RETRY_INTERVAL (100 * USEC_PER_MSEC)   /* after an allocation failure */
#define STOP_DRAIN_TIMEOUT (45 * USEC_PER_SEC)  /* under the unit's TimeoutStopSec=60s */
#define RETENTION_FIRST (10 * USEC_PER_SEC)     /* the first prune, soon after the start */
#define RETENTION_INTERVAL (1 * USEC_PER_HOUR)

void service_arm(sd_event_source *src, usec_t after) {
        (void) sd_event_source_set_time_relative(src, (uint64_t) (after > 0 ? after : 1));
        (void) sd_event_source_set_enabled(src, SD_EVENT_ONESHOT);
}

static void maybe_finish_stop(Service *s);

/* Arms src to fire after `after`, unless it fires sooner already. */
static void arm_sooner(sd_event_source *src, usec_t after) {
        uint64_t at = 0, now = 0;
        int enabled = SD_EVENT_OFF;

        if (sd_event_source_get_enabled(src, &enabled) >= 0 && enabled != SD_EVENT_OFF &&
            sd_event_source_get_time(src, &at) >= 0 &&
            sd_event_now(sd_event_source_get_event(src), CLOCK_MONOTONIC, &now) >= 0 &&
            at <= now + (uint64_t) after)
                return;
        service_arm(src, after);
}

/* ---- flushing and memory ---- */

void service_evict(Service *s) {
        int r;

        if (flushctl_busy(s->flush))
                return;
        r = agg_evict_closed(s->agg, now_realtime());
        if (r > 0)
                log_debug("Evicted %d closed events from memory", r);
        if (s->memory_full) {
                uint64_t target = s->config->max_events_in_memory / 10 * 9;
                uint64_t held = agg_event_count(s->agg);        /* what max_events bounds */

                if (held > target) {
                        r = agg_evict_oldest(s->agg, held - target);
                        if (r > 0)
                                log_info("Evicted the %d oldest events from memory early", r);
                }
        }
}

/* After a commit: live event messages for what it changed, and eviction. */
void service_flush_committed(Service *s) {
        StoreFlushResult *ch = flushctl_take_changes(s->flush);

        metrics_observe_flush(&s->m, flushctl_stats(s->flush)->last_seconds);
        if (ch && s->live) {
                if (live_committed(s->live, ch->events, ch->n, now_realtime()) < 0)
                        log_warning("Live events: out of memory, some changes are announced only with the next one");
                (void) live_send(s->live, s->ingest);
        }
        store_flush_result_free(ch);
        service_evict(s);
}

/* Starts a flush now when waiting for the timer would be wrong: memory is full, a span
 * holds many uncertain timestamps, the daemon is stopping, a batch is ready and the input
 * is idle; or the last batch was cut short or a tick fell during the last flush, unless a
 * backlog streams in (flushctl_defer: then the ticks decide). */
static void flush_if_urgent(Service *s) {
        usec_t now = now_monotonic();

        if (s->memory_full || s->stopping || agg_flush_wanted(s->agg) ||
            (agg_dirty_count(s->agg) >= s->config->batch_max && !flushctl_input_busy(s->flush, now)))
                (void) flushctl_start(s->flush, now);
        else if ((flushctl_more(s->flush) || flushctl_due(s->flush)) &&
                 flushctl_defer(s->flush, now, s->config->flush_interval) == 0)
                /* while a backlog streams in, the next tick decides */
                (void) flushctl_start(s->flush, now);
}

/* Consumption pauses (the broker queues for our persistent session) while too many
 * messages wait in memory, which only happens when memory is full and the database
 * cannot take flushes. */
static void check_pause(Service *s) {
        uint64_t bytes = apply_pending_bytes(s->apply);

        if (!s->ingest || s->stopping)
                return;
        if (!ingest_paused(s->ingest) && bytes >= s->limits.pause_bytes) {
                log_warning("Pausing MQTT consumption: %zu messages (%" PRIu64 " bytes) wait for memory (database %s)",
                            apply_pending(s->apply), bytes, flusher_connected(s->flusher) ? "up" : "down");
                (void) ingest_pause(s->ingest);
        } else if (ingest_paused(s->ingest) && bytes <= s->limits.resume_bytes && !s->memory_full) {
                log_notice("Resuming MQTT consumption");
                (void) ingest_resume(s->ingest);
        }
}

/* Applies pending messages for at most one budget, then yields to the loop. */
static void work(Service *s) {
        int r = apply_run(s->apply, now_monotonic() + WORK_BUDGET);

        switch (r) {
        case 0:
                s->memory_full = false;
                break;
        case -EAGAIN:
                (void) sd_event_source_set_enabled(s->work_source, SD_EVENT_ONESHOT);
                break;
        case -ENOSPC:
                if (!s->memory_full) {
                        if (apply_rejects_full(s->apply))
                                log_warning("The rejects waiting for the database fill their memory: holding further messages until a flush succeeds");
                        else
                                log_warning("Memory limit of %" PRIu64 " events reached: flushing and evicting the oldest events early",
                                            s->config->max_events_in_memory);
                }
                s->memory_full = true;
                break;
        default:
                log_error_errno(r, "Cannot apply a message (%m); retrying");
                service_arm(s->retry_timer, RETRY_INTERVAL);
                break;
        }
        check_pause(s);
        flush_if_urgent(s);
}

static int on_work(sd_event_source *src, void *userdata) {
        work(userdata);
        return 0;
}

static int on_retry_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        work(userdata);
        return 0;
}

static int on_queue(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Service *s = userdata;

        flushctl_note_input(s->flush, now_monotonic());
        apply_push(s->apply, queue_pop_all(s->queue));
        work(s);
        return 0;
}

static int on_flush_done(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Service *s = userdata;
        FlushOutcome o = flushctl_collect(s->flush, now_monotonic());

        if (o == FLUSH_NONE)
                return 0;
        if (o == FLUSH_COMMITTED) {
                usec_t pace;

                service_flush_committed(s);
                work(s);        /* eviction may have made room */
                pace = flushctl_pace(s->flush, now_monotonic(), s->config->flush_interval);
                if (pace >= 0)
                        arm_sooner(s->flush_timer, pace);
        } else if (flushctl_retry_at(s->flush) > 0)
                service_arm(s->flush_timer, flushctl_retry_at(s->flush) - now_monotonic());
        else
                flush_if_urgent(s);
        maybe_finish_stop(s);
        return 0;
}

static int on_flush_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;
        usec_t now = now_monotonic();
        usec_t wait = s->stopping || s->memory_full ? 0 : flushctl_defer(s->flush, now, s->config->flush_interval);

        if (wait > 0) {
                /* a backlog streams in: look again shortly, flush once it is consumed */
                service_arm(src, wait);
                return 0;
        }
        (void) flushctl_start(s->flush, now);
        service_arm(src, s->config->flush_interval);
        return 0;
}

static int on_evict_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        service_evict(s);
        if (s->live) {
                live_tick(s->live, now_realtime());
                (void) live_send(s->live, s->ingest);
        }
        /* With nothing to flush (memory full of clean spans, as after a warm start) no
         * flush completes to resume the waiting messages: eviction made room, resume here. */
        if (s->memory_full)
                work(s);
        service_arm(src, EVICT_INTERVAL);
        return 0;
}

static int on_sync_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;
        int r;

        if (journal_sync_due(s->journal, now_monotonic())) {
                r = journal_sync(s->journal);
                if (r < 0)
                        log_error_errno(r, "Cannot sync the journal: %m");
        }
        service_arm(src, s->config->journal_sync > 0 ? s->config->journal_sync : USEC_PER_SEC);
        return 0;
}

static int on_status_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        service_report_status(s);
        if (s->live)
                (void) live_send(s->live, s->ingest);
        service_arm(src, STATUS_INTERVAL);
        return 0;
}

/* The watchdog ping comes from the main loop itself, at half the interval systemd asked
 * for: if the loop wedges, the pings stop and systemd restarts the daemon. */
static int on_watchdog_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        notify_watchdog();
        service_arm(src, s->watchdog_usec / 2);
        return 0;
}

/* SPEC section 5 [retention]: hourly, on a connection of its own. */
static int on_retention_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;
        const Config *c = s->config;
        usec_t now = now_realtime();
        int r;

        r = retention_start(s->retention, c->retention_events > 0 ? now - c->retention_events : 0,
                            c->retention_rejects > 0 ? now - c->retention_rejects : 0);
        if (r < 0 && r != -EBUSY)
                log_warning_errno(r, "Cannot start pruning: %m");
        service_arm(src, RETENTION_INTERVAL);
        return 0;
}

static int on_retention_done(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        Service *s = userdata;
        RetentionResult res;

        if (retention_collect(s->retention, &res) <= 0)
                return 0;
        if (res.result < 0)
                log_warning("Pruning failed, retrying in an hour: %s", res.error[0] ? res.error : "no message");
        else if (res.events + res.rejects > 0)
                log_info("Pruned %" PRIu64 " closed events and %" PRIu64 " rejects past their retention",
                         res.events, res.rejects);
        return 0;
}

/* ---- stop and reload ---- */

static void maybe_finish_stop(Service *s) {
        if (!s->stopping)
                return;
        s->drained = apply_idle(s->apply) && !flushctl_needed(s->flush) && !flushctl_busy(s->flush);
        if (!s->drained) {
                if (now_monotonic() < s->stop_deadline)
                        return;
                log_warning("Stop timeout: %" PRIu64 " journal records are not yet in the database; they will be replayed at the next start",
                            journal_last_seq(s->journal) - flushctl_committed_seq(s->flush));
        }
        (void) sd_event_exit(s->event, EXIT_OK);
}

static int on_stop_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        Service *s = userdata;

        maybe_finish_stop(s);
        (void) flushctl_start(s->flush, now_monotonic());
        service_arm(src, 200 * USEC_PER_MSEC);
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
                        log_warning_errno(r, "Could not publish the offline status: %m");
                /* No more consumption. A message paho could not hand over any more is in
                 * the journal already and is replayed at the next start. */
                queue_close(s->queue);
                s->ingest = ingest_free(s->ingest);
        }
        /* Whatever the MQTT thread handed over before the disconnect is journaled:
         * apply it and flush it. */
        apply_push(s->apply, queue_pop_all(s->queue));
        flushctl_retry_now(s->flush);
        work(s);
        service_arm(s->stop_timer, 100 * USEC_PER_MSEC);
        maybe_finish_stop(s);
        return 0;
}

static int on_reload_signal(sd_event_source *src, const struct signalfd_siginfo *si, void *userdata) {
        Service *s = userdata;
        /* READY=1 ends a reload, so the reload is announced only once the daemon is ready
         * (READY=1 promises an active subscription, SPEC section 7) and not while stopping. */
        bool announce = s->ready && !s->stopping;

        if (announce)
                notify_reloading();
        service_reload(s);
        if (announce)
                notify_ready();
        return 0;
}

/* Only what SPEC section 7 promises (the keys the configuration table marks reloadable:
 * the log level and the outage type allowlist). A bad file keeps the running
 * configuration; a changed key that is not reloadable is named in the log. */
void service_reload(Service *s) {
        Config *n = NULL;
        char err[512], restart[256];
        int r;

        r = config_load(s->config_path, &n, err, sizeof(err));
        if (r < 0) {
                log_error("Reload failed, keeping the running configuration: %s", err);
                return;
        }
        r = config_reload_apply(s->config, n, restart, sizeof(restart));
        if (r < 0) {
                log_error_errno(r, "Reload failed, keeping the running configuration: %m");
                config_free(n);
                return;
        }
        log_set_level(s->config->log_level);
        s->rules.outage_types = s->config->outage_types;
        s->rules.n_outage_types = s->config->n_outage_types;
        config_free(n);
        log_notice("Reloaded: log level %s, %zu allowed outage types", log_level_to_string(s->config->log_level),
                   s->config->n_outage_types);
        if (restart[0])
                log_warning("Changed settings that take effect only after a restart: %s", restart);
}

/* ---- start-up and the loop ---- */

/* The loop's timers: armed (or off, to be armed when needed) at setup. */
static int add_timers(Service *s) {
        const Config *c = s->config;
        const struct {
                sd_event_source **src;
                usec_t after;                   /* 0: created off */
                sd_event_time_handler_t cb;
                bool wanted;
        } timers[] = {
                { &s->watchdog_timer, s->watchdog_usec / 2, on_watchdog_timer, s->watchdog_usec > 0 },
                { &s->flush_timer, c->flush_interval, on_flush_timer, true },
                { &s->status_timer, 1, on_status_timer, true },
                { &s->evict_timer, EVICT_INTERVAL, on_evict_timer, true },
                { &s->sync_timer, c->journal_sync > 0 ? c->journal_sync : USEC_PER_SEC, on_sync_timer, true },
                { &s->startup_timer, c->startup_timeout, service_on_startup_timeout, true },
                { &s->retention_timer, RETENTION_FIRST, on_retention_timer, s->retention != NULL },
                { &s->reconnect_timer, 0, service_on_reconnect_timer, true },
                { &s->stop_timer, 0, on_stop_timer, true },
                { &s->retry_timer, 0, on_retry_timer, true },
        };
        int r;

        for (size_t i = 0; i < ELEMENTSOF(timers); i++) {
                if (!timers[i].wanted)
                        continue;
                r = sd_event_add_time_relative(s->event, timers[i].src, CLOCK_MONOTONIC,
                                               timers[i].after ? timers[i].after : USEC_PER_SEC, 0,
                                               timers[i].cb, s);
                if (r < 0)
                        return r;
                if (timers[i].after == 0)
                        (void) sd_event_source_set_enabled(*timers[i].src, SD_EVENT_OFF);
        }
        return 0;
}

static int setup_loop(Service *s) {
        int r;

        r = sd_event_default(&s->event);
        if (r < 0)
                return r;
        s->watchdog_usec = notify_watchdog_usec();
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
                r = sd_event_add_io(s->event, NULL, s->ingest_wake_fd, EPOLLIN, service_on_ingest_state, s);
        if (r >= 0 && s->retention)
                r = sd_event_add_io(s->event, NULL, retention_fd(s->retention), EPOLLIN, on_retention_done, s);
        /* Applying a backlog yields after each budget; timers and I/O come first. */
        if (r >= 0)
                r = sd_event_add_defer(s->event, &s->work_source, on_work, s);
        if (r >= 0)
                r = sd_event_source_set_priority(s->work_source, SD_EVENT_PRIORITY_IDLE);
        if (r >= 0)
                r = sd_event_source_set_enabled(s->work_source, SD_EVENT_OFF);
        return r < 0 ? r : add_timers(s);
}

static void service_done(Service *s) {
        s->ingest = ingest_free(s->ingest);
        if (s->queue)
                queue_close(s->queue);
        s->flusher = flusher_free(s->flusher);
        s->flush = flushctl_free(s->flush);
        s->live = live_free(s->live);
        s->retention = retention_free(s->retention);
        s->apply = apply_free(s->apply);
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

/* The broker side: the hand-off queue, the MQTT client and the loop. */
static int start_consuming(Service *s) {
        int r;

        /* one wake-up per millisecond of messages, not one per message */
        r = queue_new_coalescing(SIZE_MAX, s->limits.queue_bytes, USEC_PER_MSEC, &s->queue);
        if (r < 0)
                return log_error_errno(r, "Cannot start: %m");
        s->ingest_wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->ingest_wake_fd < 0)
                return log_error_errno(-errno, "eventfd: %m");
        r = ingest_new(s->config, s->journal, s->queue, s->ingest_wake_fd, &s->ingest);
        if (r < 0) {
                log_error("MQTT client refused mqtt.uri or options (%s)", s->config->mqtt_uri);
                return EXIT_CONFIG;
        }
        r = setup_loop(s);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the event loop: %m");
        log_info("Connecting to %s as %s", s->config->mqtt_uri, s->config->mqtt_client_id);
        (void) ingest_start(s->ingest);
        return 0;
}

int service_run(Config *c, const char *config_path) {
        Service s = {
                .config = c,
                .config_path = config_path,
                .ingest_wake_fd = -1,
                .last_ingest_state = INGEST_DISCONNECTED,
                .reconnect = BACKOFF_INIT(500 * USEC_PER_MSEC, 30 * USEC_PER_SEC),
        };
        int r, code;

        service_init_config(&s);
        s.m.started_at = now_realtime();
        srandom((unsigned) (s.m.started_at ^ getpid()));

        r = block_signals();
        if (r < 0) {
                log_error_errno(r, "Cannot block signals: %m");
                return EXIT_GENERIC;
        }
        code = service_start_storage(&s);
        if (code == 0)
                code = service_replay(&s);
        if (code == 0 && s.stopping)
                log_notice("Stopped during the journal replay; it goes on at the next start");
        else if (code == 0)
                code = start_consuming(&s);
        if (code == 0 && !s.stopping) {
                code = sd_event_loop(s.event);
                if (code < 0) {
                        log_error_errno(code, "Event loop failed: %m");
                        code = EXIT_GENERIC;
                }
                if (code == EXIT_OK && s.drained)
                        log_notice("Stopped: all received reports are in the database");
        } else if (code < 0)
                code = EXIT_GENERIC;
        service_done(&s);
        return code;
}
