/* agg.h — the aggregation core: open events in memory, keyed by (controller_id,
 * outage_type), turned into fragments for the store to merge (SPEC section 3).
 * Pure: no I/O, no threads, no clock reads, no logging. Not thread-safe. */
#pragma once

#include "common.h"

typedef struct Agg Agg;

/* Uncertain timestamps (see Fragment) count against AggConfig.max_events at this rate: 8 of
 * them (8 bytes each, twice that at most while their vector grows) weigh one event (a
 * single-span key costs 53-60 bytes beyond its strings, see agg_stats()); their total share
 * is rounded down. */
#define AGG_UNCERTAIN_PER_EVENT 8
/* A span holding this many uncertain timestamps to flush makes agg_flush_wanted() true. */
#define AGG_UNCERTAIN_FLUSH_AT 4096
/* A span holds at most this many uncertain timestamps to flush: a report that would add one
 * more gets -ENOSPC until a flush takes them. With as many in an outstanding batch (and
 * given back if it fails), one span holds at most twice this. */
#define AGG_UNCERTAIN_MAX 16384

typedef struct AggConfig {
        usec_t gap;                     /* two timestamps at most gap apart join */
        uint64_t max_events;            /* spans held in memory, open or waiting to flush, plus
                                         * uncertain timestamps at AGG_UNCERTAIN_PER_EVENT per
                                         * event; 0: no limit */
        uint64_t hash_seed;             /* keys the string hash; pass random bits so that a remote
                                         * party cannot choose colliding controller ids (0 is fine
                                         * in tests) */
} AggConfig;

/* One span to merge into the store. Strings are interned by the Agg and stay valid until the
 * batch is ended. count: reports whose effect was decided with full knowledge of the stored
 * events near them. uncertain: timestamps of reports older than the Agg's knowledge horizon
 * (see agg_new); the store counts each one that is not inside a stored event. */
typedef struct Fragment {
        const char *controller_id;
        const char *outage_type;
        usec_t start, end;
        uint32_t count;
        uint32_t n_uncertain;
        const usec_t *uncertain;        /* sorted, distinct */
} Fragment;

typedef struct FlushBatch {
        size_t n;
        Fragment *fragments;
        /* The batch took everything there was to flush (max did not cut it short). Only then
         * does committing it make every report added before agg_flush_begin() durable in the
         * store, so only then may a journal checkpoint advance to that position. */
        bool complete;
        /* private to agg.c below */
        void *priv;
} FlushBatch;

/* Creates an empty Agg. horizon: the Agg knows every stored event whose end is >= horizon
 * (typically: the warm-start query loaded all events ending at or after it). Reports at or
 * after horizon + gap are counted in memory; older ones go to the store as uncertain.
 * Caller owns the result (agg_free). Returns -EINVAL for gap <= 0, -ENOMEM. */
int agg_new(const AggConfig *cfg, usec_t horizon, Agg **ret);
/* Frees the Agg, and the outstanding batch if any (its pointer must not be used after). */
Agg *agg_free(Agg *a);

/* Adds one validated report. Borrows the strings. Timestamps must lie within +-2^62 us.
 * Returns 1 if it changed memory state (it will be flushed), 0 if it was inside a span held
 * in memory (a duplicate), -ENOSPC (state unchanged: flush, evict, and retry) if max_events
 * is reached and the report would need a new span or an uncertain timestamp, or if it is
 * uncertain and the span it joins already holds AGG_UNCERTAIN_MAX uncertain timestamps to
 * flush (only a flush helps then), -ENOMEM. On any failure the state is unchanged. */
int agg_add(Agg *a, const char *controller_id, const char *outage_type, usec_t ts);

/* Warm start: adds a stored event as a clean span (nothing to flush). Spans it touches in
 * memory are merged. Returns 0, -ENOSPC (max_events reached), -ENOMEM, -EINVAL if start >
 * end; on failure the state is unchanged. An event that is not loaded must be skipped with
 * agg_skip_stored() before reports are added, or a duplicate of it would be counted twice. */
int agg_load(Agg *a, const char *controller_id, const char *outage_type, usec_t start, usec_t end);

/* Raises the horizon to at least end + 1, for a stored event ending at end that memory does
 * not hold (agg_load() failed, e.g. -ENOSPC for a warm start that does not fit, or the
 * caller chose not to load it): reports before end + 1 + gap then go to the store as
 * uncertain, which counts each only if no stored event contains it, so a duplicate of the
 * event is not counted twice. Call it before adding reports that could touch the event.
 * Never lowers the horizon; never fails. */
void agg_skip_stored(Agg *a, usec_t end);

/* Takes up to max fragments (0: no limit) from dirty spans: their counts and uncertain
 * timestamps move into the batch. Only one batch may be outstanding, until
 * agg_flush_end() or agg_flush_refuse() ends it. Returns 0 and the batch (possibly empty),
 * -EBUSY if a batch is outstanding, -ENOMEM (state unchanged). */
int agg_flush_begin(Agg *a, size_t max, FlushBatch **ret);

/* Ends the outstanding batch and frees it. committed: the store applied it, so its counts
 * are gone for good (and vectors of uncertain timestamps shrink to what they still hold);
 * else they are given back to the spans now holding them, so a retry sends them again and
 * nothing is counted twice. Never fails: giving back allocates nothing (agg_add reserves the
 * room), and a shrink that fails keeps the bigger buffer. Reports added while the batch was
 * outstanding stay dirty in either case. */
void agg_flush_end(Agg *a, FlushBatch *b, bool committed);

/* Ends the outstanding batch b when the store refused its fragments for good (the caller
 * isolated a fragment the database will never take by retrying smaller batches, down to
 * one), so that they can never block later flushes. Nothing of b is given back: the spans its
 * fragments covered are dropped from memory as they are now, that is grown by the reports
 * added while b was outstanding and merged with any span those reports bridged to, together
 * with everything those spans held; keys left without spans go too. The horizon rises past
 * every dropped span, as for an eviction, because what the store already holds of them is no
 * longer known here: later reports near them go to the store as uncertain. Frees b.
 * Returns how many reports not in b were dropped with the spans (counted or uncertain; they
 * were never stored, so the caller may count them as lost). Never fails. Cost O(fragments)
 * plus O(dirty keys) for each key that still had something to flush and loses it. */
uint64_t agg_flush_refuse(Agg *a, FlushBatch *b);

/* Drops clean spans closed by time (end + gap < now) and raises the knowledge horizon past
 * them. Returns how many were dropped, or -EBUSY while a batch is outstanding.
 * Only keys whose spans are all clean are considered: a key with something to flush keeps
 * all its spans until the flush commits. Cost: O(dropped log n) (a heap of the clean keys by
 * oldest end). */
int agg_evict_closed(Agg *a, usec_t now);

/* Under memory pressure: drops up to n clean spans with the oldest ends, open or not,
 * raising the horizon likewise. Returns how many were dropped, or -EBUSY. Same rule as
 * agg_evict_closed(): keys with something to flush are skipped; flush first. */
int agg_evict_oldest(Agg *a, uint64_t n);

typedef struct AggStats {
        uint64_t keys;                  /* (controller, type) pairs held */
        uint64_t spans;                 /* events held (open or waiting) */
        uint64_t dirty_spans;           /* spans with something to flush */
        uint64_t uncertain;             /* uncertain timestamps held (to flush or in the batch) */
        uint64_t open_spans;            /* spans with end + gap >= now */
        uint64_t strings;               /* interned strings */
        uint64_t bytes;                 /* memory the Agg holds, strings included: what it
                                         * asked malloc for (the bulk in blocks of 24 KiB or
                                         * more, so malloc's own overhead is small) */
        uint64_t string_bytes;          /* part of bytes: interned strings and their table */
        usec_t horizon;
} AggStats;

/* Fills ret. O(keys) for open_spans (a sequential scan of the key records, a few ms per
 * million keys): call it at a status interval, not per report. */
void agg_stats(const Agg *a, usec_t now, AggStats *ret);

/* One span of a key, as held in memory: count and n_uncertain are what is still to flush
 * (not in an outstanding batch). */
typedef struct AggSpan {
        usec_t start, end;
        uint32_t count;
        uint32_t n_uncertain;
} AggSpan;

/* Copies up to max spans of one key into ret, sorted by start. Returns how many spans the
 * key has (possibly more than max), 0 if the key is not held. For tests and debugging. */
size_t agg_key_spans(const Agg *a, const char *controller_id, const char *outage_type,
                     AggSpan *ret, size_t max);

/* Keys with something to flush (each holds one or more dirty spans); O(1), for the main
 * loop's batch trigger. */
uint64_t agg_dirty_count(const Agg *a);

/* Spans held (AggStats.spans without the scan agg_stats() makes); O(1). */
uint64_t agg_span_count(const Agg *a);

/* What max_events bounds: spans held plus uncertain timestamps held at
 * AGG_UNCERTAIN_PER_EVENT per event, rounded down; O(1). Compare this, not agg_span_count(),
 * with max_events. */
uint64_t agg_event_count(const Agg *a);

/* True while some span holds AGG_UNCERTAIN_FLUSH_AT or more uncertain timestamps to flush:
 * flush now (the main loop's batch trigger, besides agg_dirty_count()), before agg_add
 * reaches AGG_UNCERTAIN_MAX for that span and returns -ENOSPC. O(1). */
bool agg_flush_wanted(const Agg *a);

/* Checks the Agg's internal invariants (indexes, lists, heap, counts and byte accounting).
 * Returns NULL, or the first one broken. O(keys + spans + uncertain timestamps); for tests
 * and debugging, like core_alloc_fail (intern.h), which makes chosen allocations fail. */
const char *agg_check(const Agg *a);
