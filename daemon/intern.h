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
