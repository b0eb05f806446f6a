/* queue.c — bounded FIFO hand-off from paho's thread to the main loop, with an eventfd,
 * or a timerfd when wakes are coalesced (queue_new_coalescing).
 * A mutex and a condition variable: the producer is one thread and pushes are tiny, so
 * a lock-free ring would buy nothing measurable next to the journal write(2). */
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include "queue.h"

struct Queue {
        pthread_mutex_t lock;
        pthread_cond_t room;
        QueueItem *head, *tail;
        size_t n, bytes;
        size_t max_items, max_bytes;
        bool closed;
        int efd;                /* an eventfd, or with wake_delay > 0 a timerfd */
        usec_t wake_delay;
};

int queue_new(size_t max_items, size_t max_bytes, Queue **ret) {
        return queue_new_coalescing(max_items, max_bytes, 0, ret);
}

int queue_new_coalescing(size_t max_items, size_t max_bytes, usec_t wake_delay, Queue **ret) {
        Queue *q = calloc(1, sizeof(*q));

        if (!q)
                return -ENOMEM;
        q->wake_delay = wake_delay > 0 ? wake_delay : 0;
        q->efd = q->wake_delay > 0 ? timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)
                                   : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (q->efd < 0) {
                int r = -errno;
                free(q);
                return r;
        }
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->room, NULL);
        q->max_items = max_items;
        q->max_bytes = max_bytes;
        *ret = q;
        return 0;
}

Queue *queue_free(Queue *q) {
        if (!q)
                return NULL;
        for (QueueItem *i = q->head, *next; i; i = next) {
                next = i->next;
                free(i);
        }
        close(q->efd);
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->room);
        free(q);
        return NULL;
}

int queue_fd(const Queue *q) {
        return q->efd;
}

QueueItem *queue_item_new(uint64_t seq, usec_t received_at, const char *topic, size_t topic_len,
                          const void *payload, size_t len) {
        QueueItem *i = malloc(sizeof(QueueItem) + topic_len + 1 + len + 1);

        if (!i)
                return NULL;
        i->next = NULL;
        i->seq = seq;
        i->received_at = received_at;
        i->topic_len = topic_len;
        i->len = len;
        i->topic = i->data;
        memcpy(i->topic, topic, topic_len);
        i->topic[topic_len] = '\0';
        i->payload = i->data + topic_len + 1;
        if (len > 0)
                memcpy(i->payload, payload, len);
        i->payload[len] = '\0';
        return i;
}

static size_t item_bytes(const QueueItem *i) {
        return sizeof(*i) + i->topic_len + i->len + 2;
}

/* Makes the fd readable after delay (0: now). */
static void wake(Queue *q, usec_t delay) {
        uint64_t one = 1;
        struct itimerspec t = {
                .it_value.tv_sec = delay / USEC_PER_SEC,
                .it_value.tv_nsec = delay % USEC_PER_SEC * 1000 + (delay == 0),   /* 0 would disarm */
        };

        if (q->wake_delay == 0)
                (void) !write(q->efd, &one, sizeof(one));
        else
                (void) timerfd_settime(q->efd, 0, &t, NULL);
}

int queue_push(Queue *q, QueueItem *item) {
        bool was_empty;

        pthread_mutex_lock(&q->lock);
        /* An item larger than max_bytes alone is let through when the queue is empty. */
        while (!q->closed && q->n > 0 &&
               (q->n >= q->max_items || q->bytes + item_bytes(item) > q->max_bytes)) {
                if (q->wake_delay > 0)
                        wake(q, 0);     /* full: the consumer need not wait out the delay */
                pthread_cond_wait(&q->room, &q->lock);
        }
        if (q->closed) {
                pthread_mutex_unlock(&q->lock);
                free(item);
                return -EPIPE;
        }
        was_empty = q->n == 0;
        if (q->tail)
                q->tail->next = item;
        else
                q->head = item;
        q->tail = item;
        q->n++;
        q->bytes += item_bytes(item);
        pthread_mutex_unlock(&q->lock);

        if (was_empty)
                wake(q, q->wake_delay);
        return 0;
}

QueueItem *queue_pop_all(Queue *q) {
        uint64_t v;
        QueueItem *head;

        (void) !read(q->efd, &v, sizeof(v));
        pthread_mutex_lock(&q->lock);
        head = q->head;
        q->head = q->tail = NULL;
        q->n = 0;
        q->bytes = 0;
        pthread_cond_broadcast(&q->room);
        pthread_mutex_unlock(&q->lock);
        return head;
}

void queue_close(Queue *q) {
        pthread_mutex_lock(&q->lock);
        q->closed = true;
        pthread_cond_broadcast(&q->room);
        pthread_mutex_unlock(&q->lock);
}

size_t queue_length(Queue *q) {
        size_t n;

        pthread_mutex_lock(&q->lock);
        n = q->n;
        pthread_mutex_unlock(&q->lock);
        return n;
}
