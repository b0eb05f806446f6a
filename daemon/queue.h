/* queue.h — the bounded hand-off of received messages from paho's thread to the main
 * loop: a FIFO of owned records plus an eventfd that wakes the loop. Bounded in records
 * and bytes; a full queue blocks the producer (backpressure on the broker's in-flight
 * window) until the consumer makes room or the queue is closed. */
#pragma once

#include "common.h"

typedef struct QueueItem {
        struct QueueItem *next;
        uint64_t seq;                   /* journal sequence number */
        usec_t received_at;
        size_t topic_len;
        size_t len;
        char *topic;                    /* NUL-terminated, points into data */
        char *payload;                  /* points into data */
        char data[];
} QueueItem;

typedef struct Queue Queue;

/* Returns 0 and a queue with its eventfd (queue_fd), or a negative errno. */
int queue_new(size_t max_items, size_t max_bytes, Queue **ret);
Queue *queue_free(Queue *q);

/* As queue_new, but a push into an empty queue makes the fd readable only wake_delay later
 * (a timerfd), so that the consumer wakes once per batch rather than once per item while
 * items trickle in; a producer about to block on a full queue makes it readable at once.
 * wake_delay <= 0 is queue_new. */
int queue_new_coalescing(size_t max_items, size_t max_bytes, usec_t wake_delay, Queue **ret);

/* The fd to watch for readability (level: readable while items may be pending; with
 * queue_new_coalescing, from wake_delay after the first push into an empty queue). */
int queue_fd(const Queue *q);

/* Builds an item (caller owns until pushed). NULL on ENOMEM. */
QueueItem *queue_item_new(uint64_t seq, usec_t received_at, const char *topic, size_t topic_len,
                          const void *payload, size_t len);

/* Takes item. Blocks while the queue is full. Returns 0, or -EPIPE if the queue was closed
 * (the item is freed). */
int queue_push(Queue *q, QueueItem *item);

/* Takes the whole pending list (FIFO order) and clears the eventfd. NULL if empty. The
 * caller frees each item with free(). */
QueueItem *queue_pop_all(Queue *q);

/* Wakes blocked producers and makes further pushes fail. */
void queue_close(Queue *q);

size_t queue_length(Queue *q);
