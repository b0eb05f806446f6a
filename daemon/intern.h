/* intern.h — refcounted string interning with 32-bit ids, for the aggregation core.
 * Pure: no I/O, no logging. Not thread-safe. Ids start at 1; 0 means "none". */
#pragma once

#include "common.h"

typedef struct Intern Intern;

/* Creates an empty table. seed keys the string hash (SipHash-1-3), so that a remote party
 * that chooses controller ids cannot aim them at one bucket. Caller owns the result.
 * Returns 0 or -ENOMEM. */
int intern_new(uint64_t seed, Intern **ret);
Intern *intern_free(Intern *t);

/* Returns the id of s, or 0 if s is not interned. Does not take a reference. */
uint32_t intern_find(const Intern *t, const char *s);

/* Takes a reference to s, copying it in if absent. Returns 0 and the id, or -ENOMEM (table
 * unchanged). At most UINT32_MAX - 1 strings: -E2BIG beyond. */
int intern_ref(Intern *t, const char *s, uint32_t *ret);

/* Drops a reference taken by intern_ref; the string is freed with its last reference. */
void intern_unref(Intern *t, uint32_t id);

/* The string of a live id. Valid until its last reference is dropped. */
const char *intern_str(const Intern *t, uint32_t id);

size_t intern_count(const Intern *t);
/* Bytes held: the table, the records and the strings (as requested from malloc). */
size_t intern_bytes(const Intern *t);
/* Bytes of the strings themselves (headers and characters), a part of intern_bytes(). */
size_t intern_string_bytes(const Intern *t);

/* Checks the table's invariants (every id findable from its string, counts and byte totals
 * right). Returns NULL, or the first one broken. O(strings); for tests and debugging. */
const char *intern_check(const Intern *t);

/* Allocation failure injection for the aggregation core (intern.c, agg.c), for tests only:
 * when set, it is asked before every allocation they make, and true makes that allocation
 * fail as if memory were exhausted. NULL by default, where it costs one well-predicted
 * branch per allocation (none is on the per-report steady-state path). Not thread-safe. */
extern bool (*core_alloc_fail)(void);

static inline bool core_alloc_failing(void) {
        return _unlikely_(core_alloc_fail != NULL) && core_alloc_fail();
}

static inline void *core_malloc(size_t n) {
        return core_alloc_failing() ? NULL : malloc(n);
}

static inline void *core_calloc(size_t n, size_t size) {
        return core_alloc_failing() ? NULL : calloc(n, size);
}

/* Like realloc(): on failure p is left as it was. */
static inline void *core_realloc(void *p, size_t n) {
        return core_alloc_failing() ? NULL : realloc(p, n);
}
