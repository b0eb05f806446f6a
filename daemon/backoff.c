/* backoff.c — capped exponential backoff with jitter (backoff.h). */
#include "backoff.h"

usec_t backoff_next(Backoff *b) {
        usec_t half;

        b->cur = b->cur ? b->cur * 2 : b->min;
        if (b->cur > b->max)
                b->cur = b->max;
        half = b->cur / 2;
        return half + (usec_t) ((uint64_t) random() % (uint64_t) (half + 1));
}

void backoff_reset(Backoff *b) {
        b->cur = 0;
}
