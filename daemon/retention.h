/* retention.h — the hourly pruning of SPEC section 5 [retention]: outage.prune runs on a
 * thread and a database connection of its own, so a long prune never delays a flush.
 * Any instance may prune; two at once are harmless (the procedure deletes in bounded
 * batches). The caller decides when; this module only runs one prune at a time. */
#pragma once

#include "common.h"

typedef struct Retention Retention;

typedef struct RetentionResult {
        int result;                     /* 0, or the negative errno of store_prune/connect */
        uint64_t events, rejects;       /* deleted */
        char error[256];
} RetentionResult;

/* conninfo and password (may be NULL) are copied. Returns 0 or -ENOMEM. */
int retention_new(const char *conninfo, const char *password, Retention **ret);
/* Waits for a prune in progress, then frees. */
Retention *retention_free(Retention *r);

/* Starts a prune of closed events that ended before events_before and of rejects received
 * before rejects_before (0: none of that kind). Returns 0, -EBUSY while one runs, or a
 * negative errno from pthread_create. */
int retention_start(Retention *r, usec_t events_before, usec_t rejects_before);

/* Readable when a prune has finished. */
int retention_fd(const Retention *r);

/* Takes the result of a finished prune: returns 1 and fills ret, or 0 when none finished. */
int retention_collect(Retention *r, RetentionResult *ret);
