/* flushctl.h — the flush controller: when to flush, what goes into a flush job, what a
 * result means. It takes a batch from the aggregation core and the buffered rejects from
 * apply, hands the job to the flusher thread, and on the result commits or gives back,
 * moves the journal checkpoint and trims the journal, backs off after failures, shrinks
 * the batch limit when the database refuses a transaction and isolates a fragment it
 * refuses for good (recorded as a store_refused reject, then dropped). Main thread only;
 * logs failures (rate-limited). */
#pragma once

#include "agg.h"
#include "apply.h"
#include "common.h"
#include "flusher.h"
#include "journal.h"

typedef struct FlushCtl FlushCtl;

typedef struct FlushCtlConfig {
        uint64_t batch_max;             /* events per transaction, at most */
        const char *topic_filter;       /* to name the topic of a refused fragment's reject */
        const char *notify_channel;     /* events.notify_channel; NULL: none */
        bool want_changes;              /* events.topic_prefix is set: keep flush results */
} FlushCtlConfig;

typedef struct FlushStats {
        uint64_t ok, failed;            /* jobs */
        uint64_t fragments, rejects;    /* committed */
        uint64_t refused;               /* fragments the database refused for good */
        uint64_t refused_rejects;       /* reject rows it refused for good (dropped) */
        double last_seconds;            /* duration of the last job */
        usec_t last_ok_realtime;        /* when the last job committed, 0: never */
        unsigned failures;              /* consecutive failed jobs */
} FlushStats;

typedef enum FlushOutcome {
        FLUSH_NONE,                     /* no job completed */
        FLUSH_COMMITTED,
        FLUSH_FAILED,                   /* retried after a backoff (flushctl_retry_at) */
        _FLUSH_OUTCOME_MAX,
        _FLUSH_OUTCOME_INVALID = -EINVAL,
} FlushOutcome;

/* Borrows every module and cfg for its lifetime. committed_seq: the checkpoint read at
 * start-up. Returns 0 or -ENOMEM. */
int flushctl_new(Agg *agg, Apply *apply, Flusher *flusher, Journal *journal,
                 const FlushCtlConfig *cfg, uint64_t committed_seq, FlushCtl **ret);
/* Ends an outstanding job as not committed (the flusher must be stopped first). */
FlushCtl *flushctl_free(FlushCtl *f);

/* Something to flush: dirty events, buffered rejects, or applied records past the
 * checkpoint. */
bool flushctl_needed(const FlushCtl *f);

/* Starts a job if one is needed, none is outstanding and no backoff is pending at now
 * (monotonic). Returns 1 if a job went to the flusher, 0 if not, or a negative errno
 * (-ENOMEM: try again later). */
int flushctl_start(FlushCtl *f, usec_t now);

/* Ends the job the flusher completed, if any (call when flusher_fd() is readable). */
FlushOutcome flushctl_collect(FlushCtl *f, usec_t now);

/* A job is outstanding (its batch is taken from the aggregation core). */
bool flushctl_busy(const FlushCtl *f);
/* When the next attempt may start after a failure (monotonic), 0 when it may now. */
usec_t flushctl_retry_at(const FlushCtl *f);
/* Drops a pending backoff: the next flushctl_start() may go at once (stop, memory). */
void flushctl_retry_now(FlushCtl *f);
/* The last committed job was cut at the batch limit: more is waiting, flush again. */
bool flushctl_more(const FlushCtl *f);

/* ---- the flush policy while input streams in ----
 *
 * A backlog (the broker delivering what it queued for our session) brings several reports
 * per key between two flush ticks. Flushing then writes one fragment per key and tick,
 * and the database's merge competes with consumption for the CPU; waiting until the
 * backlog is consumed writes one per key. So a tick defers while the input is busy (a
 * message within the last FLUSHCTL_INPUT_IDLE: the broker's persistence and a loaded
 * machine pause deliveries for 100 ms and more) and the messages applied since the last
 * job number at least twice the keys they made dirty (most found theirs dirty already), with
 * 1000 or more dirty keys (a flood from a few
 * controllers must not hold the others' reports back: SPEC section 8), for at most
 * max(30 s, interval) in a row; the
 * deferral ends, and the flush starts, as soon as the input goes idle. The rest of a cut
 * batch, and a tick that fell during a job, wait the same way (else a backlog keeps one
 * flush after the other going, each re-flushing every key). Memory limits and stopping
 * are urgent regardless (service.c). */
#define FLUSHCTL_INPUT_IDLE (250 * USEC_PER_MSEC)

/* A message arrived at now (monotonic). */
void flushctl_note_input(FlushCtl *f, usec_t now);
/* The input is busy: a message within FLUSHCTL_INPUT_IDLE of now. */
bool flushctl_input_busy(const FlushCtl *f, usec_t now);
/* For a flush due at now (the tick, the rest of a cut batch; interval: the tick's period):
 * 0 to flush now, or how long to wait before asking again (a backlog streams in). */
usec_t flushctl_defer(FlushCtl *f, usec_t now, usec_t interval);
/* After a commit, events that arrived during the job wait for the next one. They go as
 * soon as interval / FLUSHCTL_PACE_DIVISOR has passed since the last job started (one job
 * after the other while reports keep coming, so a report waits for at most the job running
 * when it arrives and its own, not for the next tick), subject to flushctl_defer. */
#define FLUSHCTL_PACE_DIVISOR 10
/* How long after now (monotonic) the next job should start: 0 at once, -1 when
 * no event is dirty or a job is outstanding (the tick decides). */
usec_t flushctl_pace(const FlushCtl *f, usec_t now, usec_t interval);
/* A start was asked for while a job was with the flusher (a tick fell in a long flush):
 * start again as soon as it commits, not a whole interval later. */
bool flushctl_due(const FlushCtl *f);

/* The events the last committed job created or changed (with want_changes), or NULL;
 * the caller frees it with store_flush_result_free(). */
StoreFlushResult *flushctl_take_changes(FlushCtl *f);

/* The journal position the database has committed. */
uint64_t flushctl_committed_seq(const FlushCtl *f);
const FlushStats *flushctl_stats(const FlushCtl *f);
