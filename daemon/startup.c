/* startup.c — the daemon's start-up before the broker: limits derived from the
 * configuration, the journal, the database (connect and migrate within
 * limits.startup_timeout), the checkpoint, the warm start, the flusher, and the replay of
 * the journal through the same apply and flush paths as live traffic. Also --migrate. */
#include <poll.h>
#include <stdio.h>

#include "service_internal.h"
#include "store.h"

#define MIB ((uint64_t) 1 << 20)
#define DB_BACKOFF_MIN (500 * USEC_PER_MSEC)
#define DB_BACKOFF_MAX (5 * USEC_PER_SEC)
#define REPLAY_ROUND (1 * USEC_PER_SEC)         /* a flush round during replay at least this often */
#define REPLAY_EXTEND (30 * USEC_PER_SEC)       /* EXTEND_TIMEOUT_USEC while replay progresses */

void service_init_config(Service *s) {
        const Config *c = s->config;
        /* Room for 256 of the largest messages between paho's thread and the main loop,
         * and never less than 16 MiB; four times that may wait to be applied (memory
         * full, database down) before consumption pauses; as much again for rejects. */
        uint64_t q = 256 * (c->max_payload + 1024);

        if (q < 16 * MIB)
                q = 16 * MIB;
        s->limits = (ServiceLimits) {
                .queue_bytes = q,
                .pause_bytes = 4 * q,
                .resume_bytes = q,
        };
        s->rules = (ReportRules) {
                .max_payload = c->max_payload,
                .max_batch_items = c->max_batch_items,
                .max_future_skew = c->max_future_skew,
                .max_age = c->max_age,
                .outage_types = c->outage_types,
                .n_outage_types = c->n_outage_types,
        };
        s->apply_cfg = (ApplyConfig) {
                .topic_filter = c->mqtt_topic,
                .rules = &s->rules,
                .max_reject_bytes = 4 * q,
        };
        s->flush_cfg = (FlushCtlConfig) {
                .batch_max = c->batch_max,
                .topic_filter = c->mqtt_topic,
                .notify_channel = c->events_notify_channel,
                .want_changes = c->events_topic_prefix != NULL,
        };
}

static bool stop_requested_early(void) {
        sigset_t set;

        return sigpending(&set) == 0 && (sigismember(&set, SIGTERM) || sigismember(&set, SIGINT));
}

/* Classifies a failed migration; returns an exit code, or 0 to retry. */
static int migrate_failed(int r, const char *err) {
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
        return 0;
}

int service_open_database(const Config *c, Store **ret) {
        usec_t deadline = now_monotonic() + c->startup_timeout, now, delay;
        Backoff b = BACKOFF_INIT(DB_BACKOFF_MIN, DB_BACKOFF_MAX);
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
                        r = migrate_failed(r, err);
                        if (r != 0)
                                return r;
                }
                now = now_monotonic();
                if (now >= deadline || stop_requested_early()) {
                        log_error("Database not reachable within %.0f s: %s",
                                  (double) c->startup_timeout / USEC_PER_SEC, err);
                        return stop_requested_early() ? EXIT_OK : EXIT_UNAVAILABLE;
                }
                /* The last attempt is made at the deadline, not a backoff before it. */
                delay = backoff_next(&b);
                if (delay > deadline - now)
                        delay = deadline - now;
                log_warning("Database not reachable yet, retrying in %.1f s: %s",
                            (double) delay / USEC_PER_SEC, err);
                usleep((useconds_t) delay);
        }
}

static int load_event(const char *controller_id, const char *outage_type, usec_t start, usec_t end,
                      void *userdata) {
        Service *s = userdata;
        int r = agg_load(s->agg, controller_id, outage_type, start, end);

        /* A warm start that does not fit is only slower: reports near the events left out
         * go to the store as uncertain, so their duplicates are still not counted twice. */
        if (r == -ENOSPC) {
                agg_skip_stored(s->agg, end);
                return 0;
        }
        return r;
}

/* Reads the checkpoint and loads the events that may still be extended, so their
 * duplicates are known. */
static int warm_start(Service *s, Store *st, uint64_t *ret_committed) {
        const Config *c = s->config;
        AggConfig ac = { .gap = c->gap, .max_events = c->max_events_in_memory };
        usec_t horizon = now_realtime() - c->gap;
        int r;

        r = store_get_checkpoint(st, c->mqtt_client_id, ret_committed, NULL);
        if (r < 0) {
                log_error("Cannot read the journal checkpoint: %s", store_error(st));
                return EXIT_GENERIC;
        }
        if (getentropy(&ac.hash_seed, sizeof(ac.hash_seed)) < 0)
                ac.hash_seed = (uint64_t) now_realtime() ^ ((uint64_t) getpid() << 32);
        r = agg_new(&ac, horizon, &s->agg);
        if (r < 0)
                return log_error_errno(r, "Cannot set up aggregation: %m"), EXIT_GENERIC;
        r = store_load_events(st, horizon, load_event, s);
        if (r < 0) {
                log_error("Warm start failed: %s", store_error(st));
                return EXIT_GENERIC;
        }
        return 0;
}

static int open_journal(const Config *c, Journal **ret) {
        int r = journal_open(c->journal_dir, c->journal_sync, ret);

        if (r == -EBUSY) {
                log_error("Journal directory %s is in use by another outaged", c->journal_dir);
                return EXIT_GENERIC;
        }
        if (r < 0) {
                log_error_errno(r, "Cannot open the journal directory %s: %m", c->journal_dir);
                return EXIT_GENERIC;
        }
        if (journal_skipped_bytes(*ret) > 0)
                log_warning("Journal: %" PRIu64 " damaged or torn bytes skipped (a crash while writing, or disk damage)",
                            journal_skipped_bytes(*ret));
        return 0;
}

/* Does the journal belong to the database at st? 1 yes (or it holds nothing), 0 no; a
 * negative errno when either cannot say. ret_db gets the database's identity. */
static int journal_is_ours(Journal *j, Store *st, const char *instance, char ret_db[static 37],
                           char ret_journal[static 37]) {
        uint64_t seq = 0;
        int r;

        r = store_database_id(st, ret_db);
        if (r < 0)
                return r;
        r = journal_identity(j, ret_journal);
        if (r == 0)
                return streq(ret_db, ret_journal) || journal_record_count(j) == 0;
        snprintf(ret_journal, 37, "%s", r == -ENOENT ? "none recorded" : "unreadable");
        if (journal_record_count(j) == 0)
                return 1;
        if (r != -ENOENT)
                return 0;       /* damaged: whose records they are is unknown */
        /* Written before journals recorded their database: ours if this database has a
         * checkpoint of this instance, as after an upgrade in place. */
        r = store_get_checkpoint(st, instance, &seq, NULL);
        if (r < 0)
                return r;
        return seq > 0;
}

/* SPEC section 8: records of another database are neither replayed into this one nor
 * deleted. Returns 0 (and records this database as the journal's) or an exit code. */
static int check_journal_identity(Service *s, Store *st) {
        char db[37], jr[37];
        int r;

        r = journal_is_ours(s->journal, st, s->config->mqtt_client_id, db, jr);
        if (r < 0) {
                log_error("Cannot tell which database the journal belongs to: %s", store_error(st));
                return EXIT_GENERIC;
        }
        if (r == 0) {
                log_error("The journal in %s holds %" PRIu64 " records of another database (journal: %s, this database: %s); "
                          "they are not replayed here. Start with that database's postgres.conninfo, or drop them with "
                          "'outaged --discard-journal -c FILE'",
                          s->config->journal_dir, journal_record_count(s->journal), jr, db);
                return EXIT_CONFIG;
        }
        if (!streq(db, jr)) {
                r = journal_set_identity(s->journal, db);
                if (r < 0)
                        return log_error_errno(r, "Cannot record the database in the journal: %m"), EXIT_GENERIC;
        }
        return 0;
}

static int announce_latest(const StoreEvent *ev, void *userdata) {
        Service *s = userdata;

        (void) live_committed(s->live, ev, 1, now_realtime());
        return 0;
}

/* Live events: the daemon holds the events still open from the warm start, so it
 * announces them again (their retained state may predate a crash or the last drain) and
 * announces their close in time. */
static int live_start(Service *s, Store *st) {
        const Config *c = s->config;
        int r;

        /* Each remembered key costs about 100 bytes: at most 1M of them. */
        r = live_new(c->events_topic_prefix, c->gap,
                     c->max_events_in_memory < 1000000 ? c->max_events_in_memory : 1000000, &s->live);
        if (r < 0)
                return log_error_errno(r, "Cannot start: %m"), EXIT_GENERIC;
        r = store_load_latest(st, now_realtime() - c->gap, announce_latest, s);
        if (r < 0)
                log_warning("Live events: cannot load the open events (their close is announced with their next change): %s",
                            store_error(st));
        return 0;
}

int service_start_storage(Service *s) {
        const Config *c = s->config;
        uint64_t committed = 0;
        Store *st = NULL;
        int r, code;

        code = open_journal(c, &s->journal);
        if (code != 0)
                return code;
        code = service_open_database(c, &st);
        if (code != 0)
                return code;
        code = check_journal_identity(s, st);
        if (code == 0)
                code = warm_start(s, st, &committed);
        if (code == 0 && c->events_topic_prefix)
                code = live_start(s, st);
        if (code != 0) {
                store_free(st);
                return code;
        }
        journal_bump_seq(s->journal, committed);

        r = flusher_new(st, c->pg_conninfo, c->pg_password, c->mqtt_client_id, &s->flusher);
        if (r < 0) {
                store_free(st);
                return log_error_errno(r, "Cannot start the database writer: %m"), EXIT_GENERIC;
        }
        r = apply_new(s->agg, &s->apply_cfg, &s->apply);
        if (r >= 0)
                r = flushctl_new(s->agg, s->apply, s->flusher, s->journal, &s->flush_cfg, committed, &s->flush);
        if (r < 0)
                return log_error_errno(r, "Cannot start: %m"), EXIT_GENERIC;
        apply_set_processed_seq(s->apply, committed);
        if (c->retention_events > 0 || c->retention_rejects > 0) {
                r = retention_new(c->pg_conninfo, c->pg_password, &s->retention);
                if (r < 0)
                        return log_error_errno(r, "Cannot start: %m"), EXIT_GENERIC;
        }
        return 0;
}

/* ---- replay ---- */

typedef struct Replay {
        Service *s;
        uint64_t n;
        usec_t next_round, next_ping;
        usec_t failing_since;           /* first failed flush since the last commit, 0: none */
        int code;                       /* the exit code that stopped the replay */
} Replay;

/* During replay the loop is not running yet: tell systemd the start-up progresses, and
 * see whether it asked for a stop (checked once a second: a replay is fast). */
static void replay_ping(Replay *x, usec_t now) {
        if (now < x->next_ping)
                return;
        x->next_ping = now + USEC_PER_SEC;
        notify_extend_timeout(REPLAY_EXTEND);
        notify_watchdog();
        notify_status("starting; replaying the journal: %" PRIu64 " records", x->n);
        if (stop_requested_early())
                x->s->stopping = true;
}

/* Collects a completed flush, if any, and waits up to timeout for it. Returns 0, or an
 * exit code when the database stayed unreachable for limits.startup_timeout. */
static int replay_collect(Replay *x, int timeout_ms) {
        Service *s = x->s;
        struct pollfd p = { .fd = flusher_fd(s->flusher), .events = POLLIN };
        FlushOutcome o;

        if (timeout_ms > 0)
                (void) poll(&p, 1, timeout_ms);
        o = flushctl_collect(s->flush, now_monotonic());
        if (o == FLUSH_COMMITTED) {
                x->failing_since = 0;
                service_flush_committed(s);
        } else if (o == FLUSH_FAILED) {
                if (x->failing_since == 0)
                        x->failing_since = now_monotonic();
                if (now_monotonic() - x->failing_since > s->config->startup_timeout) {
                        log_error("Database not writable within %.0f s during the journal replay",
                                  (double) s->config->startup_timeout / USEC_PER_SEC);
                        return EXIT_UNAVAILABLE;
                }
        }
        return 0;
}

/* Applies what was pushed; when memory is full, evicts, flushes and waits until apply can
 * go on. */
static int replay_apply(Replay *x) {
        Service *s = x->s;
        bool evicted = false;
        int r, code;

        for (;;) {
                r = apply_run(s->apply, 0);
                if (r == 0) {
                        s->memory_full = false;
                        return 0;
                }
                if (r != -ENOSPC && r != -ENOMEM)
                        return log_error_errno(r, "Journal replay failed: %m"), EXIT_GENERIC;
                s->memory_full = true;
                if (!evicted) {
                        /* Clean spans may make room without a flush (a warm start that
                         * filled memory): try that first. */
                        service_evict(s);
                        evicted = true;
                        continue;
                }
                if (stop_requested_early()) {
                        s->stopping = true;
                        return EXIT_OK;
                }
                (void) flushctl_start(s->flush, now_monotonic());
                code = replay_collect(x, 100);  /* a commit evicts */
                if (code != 0)
                        return code;
                evicted = false;
                replay_ping(x, now_monotonic());
        }
}

static int replay_record(uint64_t seq, usec_t received, const char *topic, const void *payload,
                         size_t len, void *userdata) {
        Replay *x = userdata;
        Service *s = x->s;
        QueueItem *item = queue_item_new(seq, received, topic, strlen(topic), payload, len);
        usec_t now;
        int code;

        if (!item)
                return -ENOMEM;
        x->n++;
        apply_push(s->apply, item);
        code = replay_apply(x);
        if (code != 0 || s->stopping) {
                x->code = code;
                return -ECANCELED;
        }

        /* Bounded rounds: the checkpoint moves during a long replay, so a crash or a
         * start-up timeout in the middle of it does not start over. A round holds at most
         * half a batch of events, so its batch is complete and may move the checkpoint. */
        now = now_monotonic();
        if (now >= x->next_round || agg_dirty_count(s->agg) >= s->config->batch_max / 2) {
                if (flushctl_start(s->flush, now) > 0)
                        x->next_round = now + REPLAY_ROUND;
        }
        x->code = replay_collect(x, 0);
        if (x->code != 0)
                return -ECANCELED;
        replay_ping(x, now);
        return s->stopping ? -ECANCELED : 0;
}

int service_replay(Service *s) {
        Replay x = { .s = s };
        int r;

        r = journal_replay(s->journal, flushctl_committed_seq(s->flush), replay_record, &x);
        if (r == -ECANCELED)
                return x.code;  /* or 0 with s->stopping: stopped before the loop ran */
        if (r < 0)
                return log_error_errno(r, "Journal replay failed: %m"), EXIT_GENERIC;
        if (x.n > 0)
                log_notice("Replayed %" PRIu64 " journal records not yet in the database", x.n);
        /* A round still with the flusher ends in the loop. */
        return replay_collect(&x, 0);
}

int service_discard_journal(const Config *c) {
        char db[37], jr[37];
        Journal *j = NULL;
        Store *st = NULL;
        uint64_t n = 0;
        int r, code;

        code = open_journal(c, &j);
        if (code == 0)
                code = service_open_database(c, &st);
        if (code != 0)
                goto out;
        r = journal_is_ours(j, st, c->mqtt_client_id, db, jr);
        if (r < 0) {
                log_error("Cannot tell which database the journal belongs to: %s", store_error(st));
                code = EXIT_GENERIC;
        } else if (r > 0) {
                log_notice("The journal in %s belongs to this database (%s): nothing to discard", c->journal_dir, db);
                if (!streq(db, jr))
                        (void) journal_set_identity(j, db);
        } else {
                log_notice("Discarding %" PRIu64 " journal records of another database (%s) from %s",
                           journal_record_count(j), jr, c->journal_dir);
                r = journal_discard(j, &n);
                if (r >= 0)
                        r = journal_set_identity(j, db);
                if (r < 0) {
                        log_error_errno(r, "Cannot discard the journal: %m");
                        code = EXIT_GENERIC;
                } else
                        log_notice("Discarded %" PRIu64 " records; the journal now belongs to database %s", n, db);
        }
out:
        store_free(st);
        journal_free(j);
        return code;
}

int service_migrate(const Config *c) {
        Store *st = NULL;
        int stored = 0, known = 0, code;

        code = service_open_database(c, &st);
        if (code != 0 || !st)
                return code ? code : EXIT_GENERIC;
        (void) store_schema_version(st, &stored, &known);
        log_notice("Database schema is at version %d", stored);
        store_free(st);
        return EXIT_OK;
}
