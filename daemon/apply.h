/* apply.h — journaled messages -> the aggregation core and the reject buffer, in journal
 * order. One entry point for live traffic and for journal replay: messages are pushed in,
 * apply_run() works through them within a time budget, and the journal position it
 * reached is what a flush may checkpoint. Owns the pending list, the cursor of a message
 * applied in part (memory filled in the middle of it) and the rejects that wait for the
 * database. Main thread only. */
#pragma once

#include "agg.h"
#include "common.h"
#include "queue.h"
#include "report.h"
#include "store.h"

typedef struct Apply Apply;

typedef struct ApplyConfig {
        const char *topic_filter;       /* mqtt.topic; borrowed */
        const ReportRules *rules;       /* borrowed; may change between calls (reload) */
        uint64_t max_reject_bytes;      /* rejects held for the database, in bytes */
} ApplyConfig;

typedef struct ApplyStats {
        uint64_t accepted;              /* valid reports that changed the aggregation */
        uint64_t duplicate;             /* valid reports inside a span already held */
        uint64_t rejects[_REJECT_REASON_MAX];
} ApplyStats;

/* Rejects moved out for one flush: the rows and the strings they own. */
typedef struct RejectBatch {
        RejectRow *rows;
        size_t n, cap;
        uint64_t bytes;
} RejectBatch;

void reject_batch_clear(RejectBatch *b);

/* Borrows agg and cfg (cfg's pointers too) for the Apply's lifetime. Returns 0 or
 * -ENOMEM. Caller owns the result. */
int apply_new(Agg *agg, const ApplyConfig *cfg, Apply **ret);
/* Frees the pending messages and the rejects not taken. Accepts NULL, returns NULL. */
Apply *apply_free(Apply *a);

/* Appends list (FIFO, linked by next, in journal order) to the pending messages. Takes
 * the items. */
void apply_push(Apply *a, QueueItem *list);

/* Works through the pending messages until none is left or deadline (monotonic; 0: no
 * limit) has passed. Returns 0 when everything pending is applied; -EAGAIN at the
 * deadline; -ENOSPC when the aggregation's memory or the reject buffer is full (flush and
 * evict, then call again: the cursor keeps the position inside a message); -ENOMEM when an
 * allocation failed (nothing is lost: the cursor keeps the position, call again later).
 * A report is never skipped: the processed position only moves past a message once all of
 * its items are applied. */
int apply_run(Apply *a, usec_t deadline);

/* Every journal record with seq <= this is applied in full. */
uint64_t apply_processed_seq(const Apply *a);
/* Sets the processed position (start-up: the committed checkpoint). */
void apply_set_processed_seq(Apply *a, uint64_t seq);

/* Messages waiting (the one applied in part included), and their bytes. */
size_t apply_pending(const Apply *a);
uint64_t apply_pending_bytes(const Apply *a);
bool apply_idle(const Apply *a);
/* True when the reject buffer is at its limit. */
bool apply_rejects_full(const Apply *a);
bool apply_has_rejects(const Apply *a);

/* Adds a reject that does not come from a journal record (seq 0), such as a fragment the
 * database refused. Copies the strings. Returns 0 or -ENOMEM. */
int apply_add_reject(Apply *a, usec_t received_at, const char *topic, const char *controller_id,
                     const char *reason, const char *detail, const char *payload);

/* Moves every buffered reject, oldest first, into ret (overwritten). Returns 0, or
 * -ENOMEM (nothing moved: try again later). */
int apply_take_rejects(Apply *a, RejectBatch *ret);
/* Puts the rejects of a failed flush back, in front of those buffered since. Takes b's
 * rows (b is empty afterwards). Cannot fail. At most one batch is out at a time. */
void apply_return_rejects(Apply *a, RejectBatch *b);

const ApplyStats *apply_stats(const Apply *a);
