/* flushctl.c — the flush job state machine (flushctl.h).
 *
 *   idle --start--> outstanding (batch taken, job with the flusher) --collect-->
 *     committed: counts gone, checkpoint moves (complete batches only), journal trimmed
 *     failed:    counts and rejects given back, retried after a backoff; a refused
 *                transaction halves the batch limit until the refused fragment is alone,
 *                then that fragment is recorded as a store_refused reject and dropped
 *     unknown:   (COMMIT outcome lost) the same job is resubmitted as it is; the flusher
 *                resolves it by flush_id first
 */
#include <inttypes.h>
#include <stdio.h>

#include "backoff.h"
#include "flushctl.h"
#include "log.h"
#include "timestamp.h"

#define FLUSH_BACKOFF_MIN (500 * USEC_PER_MSEC)
#define FLUSH_BACKOFF_MAX (30 * USEC_PER_SEC)
#define NOTIFY_PAUSE (60 * USEC_PER_SEC)        /* without NOTIFY after the queue was full */
#define DEFER_CHECK (50 * USEC_PER_MSEC)        /* how often a deferred tick looks again */
#define DEFER_MAX_MIN (30 * USEC_PER_SEC)       /* deferral in a row: max(this, interval) */
#define BACKLOG_RATIO 2                         /* messages per newly dirty key: a backlog */
#define BACKLOG_KEYS 1000                       /* dirty keys, at least: not a flood of a few */

struct FlushCtl {
        Agg *agg;
        Apply *apply;
        Flusher *flusher;
        Journal *journal;
        const FlushCtlConfig *cfg;

        FlushJob job;
        RejectBatch job_rejects;        /* owned while the job is outstanding */
        bool outstanding;               /* a batch taken from agg and not ended */
        bool submitted;                 /* with the flusher thread now */
        bool partial;                   /* the batch was cut at limit */
        bool more;                      /* the last committed batch was partial */
        uint64_t limit;                 /* events per job: batch_max, less after refusals */
        uint64_t next_id;               /* see FlushJob.flush_id */
        uint64_t committed_seq;
        StoreFlushResult *changes;      /* of the last committed job, until taken */
        usec_t notify_paused_until;     /* monotonic */
        usec_t last_input;              /* monotonic: the last message */
        usec_t defer_since;             /* monotonic: ticks deferred since, 0: none */
        uint64_t seq_at_job;            /* apply_processed_seq() when the last job was taken */
        uint64_t dirty_at_job;          /* agg_dirty_count() left when it was taken */
        bool due;                       /* a start was asked for while one was submitted */
        usec_t started_at;              /* monotonic: the last submission */

        Backoff backoff;
        usec_t retry_at;
        FlushStats stats;
        RateLimit fail_rl, refused_rl;
};

int flushctl_new(Agg *agg, Apply *apply, Flusher *flusher, Journal *journal,
                 const FlushCtlConfig *cfg, uint64_t committed_seq, FlushCtl **ret) {
        FlushCtl *f = calloc(1, sizeof(*f));

        if (!f)
                return -ENOMEM;
        *f = (FlushCtl) {
                .agg = agg,
                .apply = apply,
                .flusher = flusher,
                .journal = journal,
                .cfg = cfg,
                .limit = cfg->batch_max,
                .committed_seq = committed_seq,
                .seq_at_job = committed_seq,
                .backoff = BACKOFF_INIT(FLUSH_BACKOFF_MIN, FLUSH_BACKOFF_MAX),
                .fail_rl = RATELIMIT_INIT(60 * USEC_PER_SEC, 5),
                .refused_rl = RATELIMIT_INIT(60 * USEC_PER_SEC, 5),
        };
        *ret = f;
        return 0;
}

FlushCtl *flushctl_free(FlushCtl *f) {
        if (!f)
                return NULL;
        if (f->outstanding) {
                agg_flush_end(f->agg, f->job.batch, false);
                apply_return_rejects(f->apply, &f->job_rejects);
        }
        store_flush_result_free(f->job.changes);
        store_flush_result_free(f->changes);
        free(f);
        return NULL;
}

bool flushctl_needed(const FlushCtl *f) {
        return agg_dirty_count(f->agg) > 0 || apply_has_rejects(f->apply) ||
               apply_processed_seq(f->apply) > f->committed_seq;
}

/* Unique per job of this instance (not per attempt): a random start, then a counter. */
static uint64_t new_flush_id(FlushCtl *f) {
        if (f->next_id == 0 || f->next_id >= (uint64_t) INT64_MAX) {
                uint64_t r = 0;

                if (getentropy(&r, sizeof(r)) < 0)
                        r = (uint64_t) now_realtime() ^ ((uint64_t) getpid() << 40);
                f->next_id = (r >> 2) | 1;
        }
        return f->next_id++;
}

/* Takes a batch and, when it is complete, the rejects: the job is ready to submit. */
static int prepare(FlushCtl *f) {
        FlushBatch *b = NULL;
        int r;

        /* At most limit events per transaction: a large backlog goes in several bounded
         * transactions instead of one that holds everything up. */
        r = agg_flush_begin(f->agg, f->limit, &b);
        if (r < 0)
                return r;
        f->job = (FlushJob) { .batch = b, .want_changes = f->cfg->want_changes };
        f->partial = !b->complete;
        if (f->partial)
                /* Not everything applied is in this batch: the checkpoint stays where it
                 * is, and so do the rejects (a replay after a crash adds them again). A
                 * replay re-applying reports whose spans this batch commits adds nothing:
                 * they fall inside them. */
                f->job.seq = f->committed_seq;
        else {
                r = apply_take_rejects(f->apply, &f->job_rejects);
                if (r < 0) {
                        agg_flush_end(f->agg, b, false);
                        return r;
                }
                f->job.rejects = f->job_rejects.rows;
                f->job.n_rejects = f->job_rejects.n;
                f->job.seq = apply_processed_seq(f->apply);
        }
        f->job.flush_id = new_flush_id(f);
        f->outstanding = true;
        f->seq_at_job = apply_processed_seq(f->apply);
        f->dirty_at_job = agg_dirty_count(f->agg);
        f->defer_since = 0;
        return 0;
}

int flushctl_start(FlushCtl *f, usec_t now) {
        int r;

        if (f->submitted) {
                f->due = true;
                return 0;
        }
        if (now < f->retry_at)
                return 0;
        f->due = false;
        if (!f->outstanding) {
                if (!flushctl_needed(f))
                        return 0;
                r = prepare(f);
                if (r < 0)
                        return r;
        }
        f->job.notify_channel = now >= f->notify_paused_until ? f->cfg->notify_channel : NULL;
        r = flusher_submit(f->flusher, &f->job);
        if (r < 0)
                return 0;
        f->submitted = true;
        f->started_at = now;
        return 1;
}

static void succeeded(FlushCtl *f) {
        size_t nf = f->job.batch->n;
        int r;

        f->stats.ok++;
        f->stats.fragments += nf;
        f->stats.rejects += f->job_rejects.n;
        f->stats.last_ok_realtime = now_realtime();
        agg_flush_end(f->agg, f->job.batch, true);
        reject_batch_clear(&f->job_rejects);
        store_flush_result_free(f->changes);
        f->changes = TAKE_PTR(f->job.changes);
        if (f->job.seq > f->committed_seq)
                f->committed_seq = f->job.seq;
        f->more = f->partial;
        if (f->stats.failures > 0)
                log_notice("Database writes resumed after %u failed attempts", f->stats.failures);
        f->stats.failures = 0;
        backoff_reset(&f->backoff);
        f->retry_at = 0;
        if (f->limit < f->cfg->batch_max)
                f->limit = f->limit * 2 < f->cfg->batch_max ? f->limit * 2 : f->cfg->batch_max;
        log_debug("Flushed %zu fragments in %.3f s", nf, f->stats.last_seconds);

        r = journal_trim(f->journal, f->committed_seq);
        if (r < 0)
                log_warning_errno(r, "Cannot trim the journal: %m");
}

/* The topic a refused fragment's controller publishes on: the filter with its '+'. */
static void fragment_topic(const FlushCtl *f, const Fragment *fr, char *buf, size_t len) {
        const char *plus = strchr(f->cfg->topic_filter, '+');

        if (!plus) {
                snprintf(buf, len, "%s", f->cfg->topic_filter);
                return;
        }
        snprintf(buf, len, "%.*s%s%s", (int) (plus - f->cfg->topic_filter), f->cfg->topic_filter,
                 fr->controller_id, plus + 1);
}

/* The batch is one fragment the database refuses for good: record it and drop it, so it
 * cannot hold up the checkpoint, the rejects and the journal trim (SPEC section 8). */
static void refuse_fragment(FlushCtl *f) {
        const Fragment *fr = &f->job.batch->fragments[0];
        char topic[256], payload[640], start[TIMESTAMP_FORMAT_MAX], end[TIMESTAMP_FORMAT_MAX];
        uint64_t lost;

        fragment_topic(f, fr, topic, sizeof(topic));
        if (timestamp_format(fr->start, start) < 0 || timestamp_format(fr->end, end) < 0)
                start[0] = end[0] = '\0';      /* outside years 0-9999: validation stops that */
        snprintf(payload, sizeof(payload),
                 "{\"controller_id\":\"%s\",\"outage_type\":\"%s\",\"start_time\":\"%s\","
                 "\"end_time\":\"%s\",\"report_count\":%" PRIu32 ",\"uncertain_reports\":%" PRIu32 "}",
                 fr->controller_id, fr->outage_type, start, end, fr->count, fr->n_uncertain);
        f->stats.refused++;
        log_error("The database refused the event %s %s %s..%s for good; it is recorded in outage.rejects (store_refused) and dropped: %s",
                  fr->controller_id, fr->outage_type, start, end, f->job.error[0] ? f->job.error : "no message");
        if (apply_add_reject(f->apply, now_realtime(), topic, fr->controller_id, "store_refused",
                             f->job.error, payload) < 0)
                log_error("Out of memory recording the refused event: only this log line keeps it");
        /* The reports that joined the refused spans while the job was out go with them:
         * they would only be refused again. The log says how many. */
        lost = agg_flush_refuse(f->agg, f->job.batch);
        if (lost > 0)
                log_error("%" PRIu64 " later reports of the refused event %s %s were dropped with it",
                          lost, fr->controller_id, fr->outage_type);
}

/* Ends the outstanding job as not committed: its counts and rejects go back. */
static void give_back(FlushCtl *f) {
        agg_flush_end(f->agg, f->job.batch, false);
        apply_return_rejects(f->apply, &f->job_rejects);
        f->outstanding = false;
}

static const char *job_error(const FlushCtl *f) {
        return f->job.error[0] ? f->job.error : "no message";
}

/* The database refused the transaction itself, not the connection: one event it cannot
 * take must not hold up the others. Halving batches isolates it (the limit grows back
 * with every success); alone, it is recorded and dropped. Returns true when the next job
 * may go at once. */
static bool refused(FlushCtl *f) {
        size_t n = f->job.batch->n;

        if (n == 1) {
                refuse_fragment(f);
                apply_return_rejects(f->apply, &f->job_rejects);
                f->outstanding = false;
                return true;
        }
        if (n == 0 && f->job_rejects.n > 0) {
                /* Only rejects and the checkpoint: rows escaped to valid text that the
                 * database still refuses cannot become acceptable by waiting. */
                f->stats.refused_rejects += f->job_rejects.n;
                log_error("The database refused %zu reject rows for good; they are dropped (their messages stay in the journal until the next checkpoint): %s",
                          f->job_rejects.n, job_error(f));
                agg_flush_end(f->agg, f->job.batch, false);
                reject_batch_clear(&f->job_rejects);
                f->outstanding = false;
                return true;
        }
        if (n > 1) {
                f->limit = n / 2;
                if (ratelimit_below(&f->refused_rl, now_monotonic(), NULL))
                        log_error("The database refused a flush of %zu events; retrying in batches of %" PRIu64 ": %s",
                                  n, f->limit, job_error(f));
        }
        give_back(f);
        return false;
}

/* A LISTEN session that never reads fills PostgreSQL's notification queue, and then every
 * transaction that notifies fails at COMMIT. The events matter more than the
 * notifications: the same batch goes again at once without them, and so do the next
 * ones for a while. */
static void notify_queue_full(FlushCtl *f) {
        f->notify_paused_until = now_monotonic() + NOTIFY_PAUSE;
        if (ratelimit_below(&f->fail_rl, now_monotonic(), NULL))
                log_warning("PostgreSQL's notification queue is full (a session LISTENs on \"%s\" and does not read): "
                            "flushing without NOTIFY for %.0f s",
                            f->cfg->notify_channel, (double) NOTIFY_PAUSE / USEC_PER_SEC);
        give_back(f);
}

static void failed(FlushCtl *f) {
        int res = f->job.result;
        usec_t delay;

        f->stats.failed++;
        if (res == -ENOBUFS && f->job.notify_channel) {
                notify_queue_full(f);
                f->retry_at = 0;
                return;
        }
        f->stats.failures++;
        if (res == -EIO || res == -EINVAL) {
                if (refused(f)) {
                        f->retry_at = 0;        /* nothing wrong with the others: go on */
                        return;
                }
        } else if (res != -EAGAIN)
                give_back(f);
        /* -EAGAIN: the COMMIT's outcome is unknown; the same job is resubmitted as it is. */
        delay = backoff_next(&f->backoff);
        f->retry_at = now_monotonic() + delay;
        if (!ratelimit_below(&f->fail_rl, now_monotonic(), NULL))
                return;
        if (res == -EAGAIN || res == -ECONNREFUSED || res == -ECONNRESET)
                log_warning("Database unreachable%s, retrying the flush in %.1f s: %s",
                            res == -EAGAIN ? " (the outcome of the last commit is checked first)" : "",
                            (double) delay / USEC_PER_SEC, job_error(f));
        else
                log_warning_errno(res, "Database flush failed (%m), retrying in %.1f s: %s",
                                  (double) delay / USEC_PER_SEC, job_error(f));
}

FlushOutcome flushctl_collect(FlushCtl *f, usec_t now) {
        FlushJob *job = flusher_take(f->flusher);

        if (!job)
                return FLUSH_NONE;
        f->submitted = false;
        f->stats.last_seconds = (double) job->duration / (double) USEC_PER_SEC;
        if (job->result == 0) {
                succeeded(f);
                f->outstanding = false;
                return FLUSH_COMMITTED;
        }
        failed(f);
        return FLUSH_FAILED;
}

void flushctl_note_input(FlushCtl *f, usec_t now) {
        f->last_input = now;
}

bool flushctl_input_busy(const FlushCtl *f, usec_t now) {
        return f->last_input > 0 && now < f->last_input + FLUSHCTL_INPUT_IDLE;
}

usec_t flushctl_defer(FlushCtl *f, usec_t now, usec_t interval) {
        uint64_t dirty = agg_dirty_count(f->agg);
        uint64_t applied = apply_processed_seq(f->apply) - f->seq_at_job;
        uint64_t fresh = dirty > f->dirty_at_job ? dirty - f->dirty_at_job : 0;
        usec_t limit = interval > DEFER_MAX_MIN ? interval : DEFER_MAX_MIN;

        /* A backlog: most messages since the last job found their key dirty already (the
         * rest made a key dirty), so waiting merges them in memory. */
        if (f->outstanding || dirty < BACKLOG_KEYS || !flushctl_input_busy(f, now) ||
            applied < BACKLOG_RATIO * fresh || applied == 0) {
                f->defer_since = 0;
                return 0;
        }
        if (f->defer_since == 0) {
                f->defer_since = now;
                log_debug("A backlog streams in (%" PRIu64 " messages for %" PRIu64 " dirty events): "
                          "flushing once it is consumed", applied, dirty);
        } else if (now >= f->defer_since + limit) {
                f->defer_since = 0;
                return 0;
        }
        return DEFER_CHECK;
}

usec_t flushctl_pace(const FlushCtl *f, usec_t now, usec_t interval) {
        usec_t spacing = interval / FLUSHCTL_PACE_DIVISOR;

        if (f->outstanding || agg_dirty_count(f->agg) == 0 || f->started_at == 0)
                return -1;
        return now >= f->started_at + spacing ? 0 : f->started_at + spacing - now;
}

bool flushctl_due(const FlushCtl *f) {
        return f->due;
}

StoreFlushResult *flushctl_take_changes(FlushCtl *f) {
        return TAKE_PTR(f->changes);
}

bool flushctl_busy(const FlushCtl *f) {
        return f->outstanding;
}

usec_t flushctl_retry_at(const FlushCtl *f) {
        return f->retry_at;
}

void flushctl_retry_now(FlushCtl *f) {
        f->retry_at = 0;
}

bool flushctl_more(const FlushCtl *f) {
        return f->more;
}

uint64_t flushctl_committed_seq(const FlushCtl *f) {
        return f->committed_seq;
}

const FlushStats *flushctl_stats(const FlushCtl *f) {
        return &f->stats;
}
