/* reference.c — the brute-force reference of SPEC section 3: deliberately the simplest
 * code that states the rule (sort, deduplicate, split on gaps), nothing shared with the
 * aggregation core it checks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

static int ref_cmp(const void *a, const void *b) {
        const RefReport *x = a, *y = b;
        int c = strcmp(x->key, y->key);

        if (c)
                return c;
        return x->t < y->t ? -1 : x->t > y->t;
}

ssize_t reference_events(RefReport *r, size_t n, int64_t gap, RefEvent **ret) {
        RefEvent *ev = NULL;
        size_t m = 0;

        if (n > 0) {
                ev = calloc(n, sizeof(*ev));    /* at most one event per report */
                if (!ev)
                        return -ENOMEM;
                qsort(r, n, sizeof(*r), ref_cmp);
        }
        for (size_t i = 0; i < n;) {
                RefEvent e = { .key = r[i].key, .start = r[i].t, .end = r[i].t, .distinct = 1 };
                size_t j = i + 1;

                for (; j < n && strcmp(r[j].key, e.key) == 0 && r[j].t - e.end <= gap; j++)
                        if (r[j].t != e.end) {
                                e.distinct++;
                                e.end = r[j].t;
                        }
                ev[m++] = e;
                i = j;
        }
        *ret = ev;
        return (ssize_t) m;
}
