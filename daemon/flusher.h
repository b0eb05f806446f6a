/* flusher.h — the database writer thread. It owns one store connection, takes one flush
 * job at a time from the main loop and hands the result back through an eventfd, so a
 * flush never stalls consumption. It reconnects on demand and resolves a flush whose
 * COMMIT outcome was lost by reading back the checkpoint row: it carries the flush_id of
 * the last transaction that committed for this instance. */
#pragma once

#include "agg.h"
#include "common.h"
#include "store.h"

typedef struct FlushJob {
        /* input: owned by the main loop, borrowed by the thread while submitted */
        FlushBatch *batch;
        RejectRow *rejects;
        size_t n_rejects;
        uint64_t seq;                   /* journal position covered by this job */
        uint64_t flush_id;              /* unique per job (not per attempt), 1..INT64_MAX */
        bool ambiguous;                 /* a previous attempt lost its COMMIT outcome */
        const char *notify_channel;     /* NOTIFY created and merged events here; NULL: none */
        bool want_changes;              /* fill changes (live event messages) */

        /* output */
        int result;                     /* 0 committed; -EAGAIN outcome unknown (resubmit
                                         * as is); other negative: rolled back */
        char error[512];
        usec_t duration;
        StoreFlushResult *changes;      /* committed with want_changes: the events the flush
                                         * created or changed (NULL when the commit was only
                                         * learnt by resolution); the job's owner frees it */
} FlushJob;

typedef struct Flusher Flusher;

/* Starts the thread. Takes store (may be NULL: connect on first job). conninfo and
 * password are copied for reconnects. instance names this daemon's checkpoint row. */
int flusher_new(Store *store, const char *conninfo, const char *password, const char *instance,
                Flusher **ret);

/* Stops the thread after the job in progress and frees. */
Flusher *flusher_free(Flusher *f);

/* Readable when a job has completed. */
int flusher_fd(const Flusher *f);

/* Submits a job. Returns 0, or -EBUSY while another job is outstanding. */
int flusher_submit(Flusher *f, FlushJob *job);

/* Returns the completed job (and clears the eventfd), or NULL if none completed. */
FlushJob *flusher_take(Flusher *f);

bool flusher_connected(const Flusher *f);
