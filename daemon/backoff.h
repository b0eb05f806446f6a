/* backoff.h — capped exponential backoff with jitter, the one backoff of the daemon
 * (database flushes, broker reconnects, the database at start-up; store_flush's own
 * immediate retries of a transaction that lost a race with another writer aside). No I/O,
 * no clock. */
#pragma once

#include "common.h"

typedef struct Backoff {
        usec_t min, max;
        usec_t cur;                     /* the last base delay, 0: none yet */
} Backoff;

#define BACKOFF_INIT(lo, hi) { .min = (lo), .max = (hi) }

/* The delay before the next attempt: the base delay doubles from min up to max with each
 * call, and the result is drawn uniformly from [base / 2, base] so that instances that
 * failed together do not retry together. */
usec_t backoff_next(Backoff *b);

/* After a success: the next failure starts again at min. */
void backoff_reset(Backoff *b);

/* The base delay of the last backoff_next() (0 after a reset). */
static inline usec_t backoff_base(const Backoff *b) {
        return b->cur;
}
