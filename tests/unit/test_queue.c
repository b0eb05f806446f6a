/* test_queue.c — the hand-off queue between paho's thread and the main loop: FIFO order,
 * the eventfd, the item and byte bounds that block the producer, and close. */
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "queue.h"

static QueueItem *item(uint64_t seq, const char *payload) {
        char topic[32];
        QueueItem *i;

        snprintf(topic, sizeof(topic), "outages/c%llu", (unsigned long long) seq);
        i = queue_item_new(seq, (usec_t) seq * 10, topic, strlen(topic), payload, strlen(payload));
        cr_assert_not_null(i);
        return i;
}

static bool readable(int fd) {
        struct pollfd p = { .fd = fd, .events = POLLIN };

        return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static size_t free_list(QueueItem *l) {
        size_t n = 0;

        for (QueueItem *next; l; l = next) {
                next = l->next;
                free(l);
                n++;
        }
        return n;
}

Test(queue, item_copies_topic_and_payload) {
        QueueItem *i = queue_item_new(7, 70, "a/b", 3, "xyz", 3);

        cr_assert_not_null(i);
        cr_assert_eq(i->seq, 7);
        cr_assert_eq(i->received_at, 70);
        cr_assert_eq(i->topic_len, 3);
        cr_assert_str_eq(i->topic, "a/b");
        cr_assert_eq(i->len, 3);
        cr_assert_str_eq(i->payload, "xyz");
        cr_assert_null(i->next);
        free(i);

        i = queue_item_new(8, 80, "t", 1, NULL, 0);
        cr_assert_not_null(i);
        cr_assert_eq(i->len, 0);
        cr_assert_str_eq(i->payload, "");
        free(i);
}

Test(queue, fifo_order_and_eventfd) {
        Queue *q = NULL;
        QueueItem *l;
        uint64_t want = 1;

        cr_assert_eq(queue_new(100, 1 << 20, &q), 0);
        cr_assert_not(readable(queue_fd(q)));
        cr_assert_null(queue_pop_all(q));

        for (uint64_t s = 1; s <= 10; s++)
                cr_assert_eq(queue_push(q, item(s, "p")), 0);
        cr_assert(readable(queue_fd(q)));
        cr_assert_eq(queue_length(q), 10);

        l = queue_pop_all(q);
        cr_assert_not(readable(queue_fd(q)), "pop_all clears the eventfd");
        cr_assert_eq(queue_length(q), 0);
        for (QueueItem *i = l; i; i = i->next)
                cr_assert_eq(i->seq, want++, "FIFO order");
        cr_assert_eq(want, 11);
        cr_assert_eq(free_list(l), 10);

        /* a push after a pop wakes the consumer again */
        cr_assert_eq(queue_push(q, item(11, "p")), 0);
        cr_assert(readable(queue_fd(q)));
        l = queue_pop_all(q);
        cr_assert_eq(l->seq, 11);
        cr_assert_null(l->next);
        free_list(l);
        queue_free(q);
}

typedef struct Producer {
        Queue *q;
        uint64_t from, to;
        const char *payload;
        _Atomic uint64_t pushed;
        int last;
} Producer;

static void *produce(void *p) {
        Producer *pr = p;

        for (uint64_t s = pr->from; s <= pr->to; s++) {
                pr->last = queue_push(pr->q, item(s, pr->payload));
                if (pr->last < 0)
                        break;
                atomic_fetch_add(&pr->pushed, 1);
        }
        return NULL;
}

static void wait_pushed(Producer *pr, uint64_t n) {
        for (int i = 0; i < 2000 && atomic_load(&pr->pushed) < n; i++)
                usleep(1000);
        cr_assert_eq(atomic_load(&pr->pushed), n);
}

Test(queue, item_bound_blocks_the_producer_until_pop) {
        Queue *q = NULL;
        Producer pr = { .from = 1, .to = 5, .payload = "p" };
        pthread_t th;
        QueueItem *l;
        uint64_t want = 1;
        size_t n = 0;

        cr_assert_eq(queue_new(3, 1 << 20, &q), 0);
        pr.q = q;
        pthread_create(&th, NULL, produce, &pr);
        wait_pushed(&pr, 3);
        usleep(50 * 1000);
        cr_assert_eq(atomic_load(&pr.pushed), 3, "a full queue blocks the producer");
        cr_assert_eq(queue_length(q), 3);

        /* popping makes room for the rest; order is kept across the two pops */
        l = queue_pop_all(q);
        pthread_join(th, NULL);
        cr_assert_eq(pr.last, 0);
        for (QueueItem *i = l; i; i = i->next, n++)
                cr_assert_eq(i->seq, want++);
        free_list(l);
        l = queue_pop_all(q);
        for (QueueItem *i = l; i; i = i->next, n++)
                cr_assert_eq(i->seq, want++);
        free_list(l);
        cr_assert_eq(n, 5);
        queue_free(q);
}

Test(queue, byte_bound_blocks_but_an_oversized_item_passes_alone) {
        char big[1000];
        Queue *q = NULL;
        Producer pr = { .from = 2, .to = 2 };
        pthread_t th;
        QueueItem *l;

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        cr_assert_eq(queue_new(100, 500, &q), 0);

        /* larger than max_bytes, but the queue is empty: let through */
        cr_assert_eq(queue_push(q, item(1, big)), 0);

        /* the next one waits for room */
        pr.q = q;
        pr.payload = "small";
        pthread_create(&th, NULL, produce, &pr);
        usleep(50 * 1000);
        cr_assert_eq(atomic_load(&pr.pushed), 0, "over max_bytes: the producer waits");
        l = queue_pop_all(q);
        cr_assert_eq(l->seq, 1);
        free_list(l);
        pthread_join(th, NULL);
        cr_assert_eq(pr.last, 0);
        l = queue_pop_all(q);
        cr_assert_eq(l->seq, 2);
        free_list(l);
        queue_free(q);
}

Test(queue, close_wakes_a_blocked_producer_and_refuses_pushes) {
        Queue *q = NULL;
        Producer pr = { .from = 1, .to = 3, .payload = "p" };
        pthread_t th;
        QueueItem *l;

        cr_assert_eq(queue_new(2, 1 << 20, &q), 0);
        pr.q = q;
        pthread_create(&th, NULL, produce, &pr);
        wait_pushed(&pr, 2);
        usleep(20 * 1000);
        queue_close(q);
        pthread_join(th, NULL);
        cr_assert_eq(pr.last, -EPIPE, "the blocked push fails once closed");
        cr_assert_eq(atomic_load(&pr.pushed), 2);

        cr_assert_eq(queue_push(q, item(9, "p")), -EPIPE);

        /* what was queued before the close can still be taken */
        l = queue_pop_all(q);
        cr_assert_eq(free_list(l), 2);
        queue_close(q);         /* twice is fine */
        queue_free(q);
}

Test(queue, free_releases_pending_items) {
        Queue *q = NULL;

        cr_assert_eq(queue_new(10, 1 << 20, &q), 0);
        cr_assert_eq(queue_push(q, item(1, "p")), 0);
        cr_assert_eq(queue_push(q, item(2, "p")), 0);
        cr_assert_null(queue_free(q));
        cr_assert_null(queue_free(NULL));
}

static bool readable_within(int fd, int ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };

        return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

Test(queue, coalescing_wakes_after_the_delay) {
        Queue *q = NULL;
        QueueItem *l;
        usec_t t0;

        cr_assert_eq(queue_new_coalescing(100, 1 << 20, 200 * USEC_PER_MSEC, &q), 0);
        cr_assert_not(readable(queue_fd(q)));
        t0 = now_monotonic();
        for (uint64_t s = 1; s <= 3; s++)
                cr_assert_eq(queue_push(q, item(s, "p")), 0);
        cr_assert_not(readable(queue_fd(q)), "not before the delay");
        cr_assert(readable_within(queue_fd(q), 5000));
        cr_assert_geq(now_monotonic() - t0, 190 * USEC_PER_MSEC);
        l = queue_pop_all(q);
        cr_assert_not(readable(queue_fd(q)), "pop_all clears the timer");
        cr_assert_eq(free_list(l), 3);
        queue_free(q);
}

Test(queue, coalescing_wakes_at_once_when_full) {
        Queue *q = NULL;
        Producer pr = { .from = 1, .to = 3, .payload = "p" };
        pthread_t th;

        cr_assert_eq(queue_new_coalescing(2, 1 << 20, 60 * USEC_PER_SEC, &q), 0);
        pr.q = q;
        pthread_create(&th, NULL, produce, &pr);
        cr_assert(readable_within(queue_fd(q), 5000), "a blocked producer does not wait out the delay");
        wait_pushed(&pr, 2);
        cr_assert_eq(free_list(queue_pop_all(q)), 2);
        pthread_join(th, NULL);
        cr_assert_eq(pr.last, 0);
        cr_assert_eq(free_list(queue_pop_all(q)), 1);
        queue_free(q);
}
