/* reference.h — the brute-force reference of SPEC section 3, shared by the property tests
 * of the core and the end-to-end tests: sort a key's distinct report timestamps, split
 * where two consecutive ones are more than gap apart. Tests only; no I/O. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct RefReport {
        char key[96];           /* names the (controller, outage type) pair, e.g. "ctrl/type" */
        int64_t t;              /* microseconds, any origin */
} RefReport;

typedef struct RefEvent {
        const char *key;        /* points into the reports given to reference_events() */
        int64_t start, end;
        uint64_t distinct;      /* distinct timestamps in the event */
} RefEvent;

/* Sorts r in place (key, then time) and returns the events the SPEC defines for the set of
 * reports, ordered by key (strcmp) then start: two consecutive distinct timestamps of a key
 * at most gap apart are one event. distinct is what report_count must be when the reports
 * arrive in time order (and at most that in any order). Returns the number of events and
 * stores them in *ret (caller frees; NULL when n is 0), or -ENOMEM. */
ssize_t reference_events(RefReport *r, size_t n, int64_t gap, RefEvent **ret);
