/* live.c — live event messages (live.h): one entry per key with the last state the
 * database committed, a FIFO of entries waiting to be sent, and a chained hash (seeded
 * FNV-1a: keys are controller ids a remote party chooses) to find a key's entry. */
#include <inttypes.h>
#include <stdio.h>

#include "live.h"
#include "timestamp.h"

#define LIVE_MESSAGE_MAX 512

typedef struct Entry {
        struct Entry *next;             /* hash chain */
        int64_t event_id;
        usec_t start, end;
        uint64_t report_count;
        bool queued;                    /* in the send FIFO */
        bool closed;                    /* what to send is the close */
        uint32_t hash;
        char *outage_type;              /* points into key */
        char key[];                     /* controller_id NUL outage_type NUL */
} Entry;

struct Live {
        char *prefix;
        usec_t gap;
        size_t max_keys;
        uint32_t seed;

        Entry **buckets;
        size_t n_buckets, n_entries;

        Entry **fifo;                   /* ring of queued entries */
        size_t fifo_cap, fifo_head, fifo_len;
};

static uint32_t hash_key(uint32_t seed, const char *c, const char *t) {
        uint32_t h = 2166136261u ^ seed;

        for (; *c; c++)
                h = (h ^ (uint8_t) *c) * 16777619u;
        h = (h ^ 0x1f) * 16777619u;
        for (; *t; t++)
                h = (h ^ (uint8_t) *t) * 16777619u;
        return h;
}

int live_new(const char *prefix, usec_t gap, size_t max_keys, Live **ret) {
        Live *l = calloc(1, sizeof(*l));

        if (!l)
                return -ENOMEM;
        l->prefix = strdup(prefix);
        l->n_buckets = 1024;
        l->buckets = calloc(l->n_buckets, sizeof(*l->buckets));
        if (!l->prefix || !l->buckets)
                return live_free(l), -ENOMEM;
        l->gap = gap;
        l->max_keys = max_keys;
        if (getentropy(&l->seed, sizeof(l->seed)) < 0)
                l->seed = (uint32_t) now_realtime();
        *ret = l;
        return 0;
}

Live *live_free(Live *l) {
        if (!l)
                return NULL;
        for (size_t b = 0; l->buckets && b < l->n_buckets; b++)
                for (Entry *e = l->buckets[b], *n; e; e = n) {
                        n = e->next;
                        free(e);
                }
        free(l->buckets);
        free(l->fifo);
        free(l->prefix);
        free(l);
        return NULL;
}

static Entry **find(Live *l, const char *c, const char *t, uint32_t h) {
        Entry **p = &l->buckets[h & (l->n_buckets - 1)];

        for (; *p; p = &(*p)->next)
                if ((*p)->hash == h && streq((*p)->key, c) && streq((*p)->outage_type, t))
                        return p;
        return p;
}

static void grow(Live *l) {
        size_t n = l->n_buckets * 2;
        Entry **b = calloc(n, sizeof(*b));

        if (!b)
                return;         /* longer chains, still correct */
        for (size_t i = 0; i < l->n_buckets; i++)
                for (Entry *e = l->buckets[i], *next; e; e = next) {
                        next = e->next;
                        e->next = b[e->hash & (n - 1)];
                        b[e->hash & (n - 1)] = e;
                }
        free(l->buckets);
        l->buckets = b;
        l->n_buckets = n;
}

static int enqueue(Live *l, Entry *e) {
        if (e->queued)
                return 0;
        if (l->fifo_len == l->fifo_cap) {
                size_t cap = l->fifo_cap ? l->fifo_cap * 2 : 256;
                Entry **f = malloc(cap * sizeof(*f));

                if (!f)
                        return -ENOMEM;
                for (size_t i = 0; i < l->fifo_len; i++)
                        f[i] = l->fifo[(l->fifo_head + i) % l->fifo_cap];
                free(l->fifo);
                l->fifo = f;
                l->fifo_cap = cap;
                l->fifo_head = 0;
        }
        l->fifo[(l->fifo_head + l->fifo_len++) % l->fifo_cap] = e;
        e->queued = true;
        return 0;
}

static Entry *new_entry(const StoreEvent *ev, uint32_t h) {
        size_t lc = strlen(ev->controller_id) + 1, lt = strlen(ev->outage_type) + 1;
        Entry *e = calloc(1, sizeof(*e) + lc + lt);

        if (!e)
                return NULL;
        memcpy(e->key, ev->controller_id, lc);
        e->outage_type = e->key + lc;
        memcpy(e->outage_type, ev->outage_type, lt);
        e->hash = h;
        return e;
}

int live_committed(Live *l, const StoreEvent *ev, size_t n, usec_t now) {
        int ret = 0;

        for (size_t i = 0; i < n; i++) {
                uint32_t h;
                Entry **p, *e;

                /* A change to an older event of the key is not published on the key's
                 * topic: the retained message describes the latest event (SPEC 2). */
                if (!ev[i].latest)
                        continue;
                h = hash_key(l->seed, ev[i].controller_id, ev[i].outage_type);
                p = find(l, ev[i].controller_id, ev[i].outage_type, h);
                e = *p;
                if (!e) {
                        if (l->n_entries >= l->max_keys || !(e = new_entry(&ev[i], h))) {
                                ret = -ENOMEM;
                                continue;
                        }
                        *p = e;
                        if (++l->n_entries > l->n_buckets)
                                grow(l);
                } else if (ev[i].end < e->end)
                        continue;       /* an older state than one already known */
                e->event_id = ev[i].event_id;
                e->start = ev[i].start;
                e->end = ev[i].end;
                e->report_count = ev[i].report_count;
                e->closed = ev[i].end + l->gap < now;
                if (enqueue(l, e) < 0)
                        ret = -ENOMEM;
        }
        return ret;
}

void live_tick(Live *l, usec_t now) {
        for (size_t b = 0; b < l->n_buckets; b++)
                for (Entry *e = l->buckets[b]; e; e = e->next)
                        if (!e->closed && e->end + l->gap < now) {
                                e->closed = true;
                                (void) enqueue(l, e);   /* -ENOMEM: the next tick tries again */
                                if (!e->queued)
                                        e->closed = false;
                        }
}

static void unlink_entry(Live *l, Entry *e) {
        Entry **p = find(l, e->key, e->outage_type, e->hash);

        if (*p == e) {
                *p = e->next;
                l->n_entries--;
                free(e);
        }
}

int live_format(const StoreEvent *ev, bool closed, char *buf, size_t len) {
        char start[TIMESTAMP_FORMAT_MAX], end[TIMESTAMP_FORMAT_MAX];
        int n;

        if (timestamp_format(ev->start, start) < 0 || timestamp_format(ev->end, end) < 0)
                return -ERANGE;
        /* Controller ids and outage types are checked against their patterns: no
         * character in them needs escaping in JSON. */
        n = snprintf(buf, len,
                     "{\"event_id\":%" PRId64 ",\"controller_id\":\"%s\",\"outage_type\":\"%s\","
                     "\"start_time\":\"%s\",\"end_time\":\"%s\",\"report_count\":%" PRIu64 ",\"status\":\"%s\"}",
                     ev->event_id, ev->controller_id, ev->outage_type, start, end, ev->report_count,
                     closed ? "closed" : "open");
        return n < 0 || (size_t) n >= len ? -ENOBUFS : n;
}

static int send_entry(Live *l, Ingest *i, Entry *e) {
        char topic[1024], msg[LIVE_MESSAGE_MAX];
        StoreEvent ev = {
                .event_id = e->event_id,
                .controller_id = e->key,
                .outage_type = e->outage_type,
                .start = e->start,
                .end = e->end,
                .report_count = e->report_count,
        };

        snprintf(topic, sizeof(topic), "%s/%s/%s", l->prefix, e->key, e->outage_type);
        if (live_format(&ev, e->closed, msg, sizeof(msg)) < 0)
                return 0;       /* cannot happen for a stored event; drop it */
        return ingest_publish(i, topic, msg, true);
}

size_t live_send(Live *l, Ingest *i) {
        size_t sent = 0;

        while (l->fifo_len > 0 && i) {
                Entry *e = l->fifo[l->fifo_head];

                if (send_entry(l, i, e) < 0)
                        break;          /* not connected or busy: the FIFO keeps it */
                l->fifo_head = (l->fifo_head + 1) % l->fifo_cap;
                l->fifo_len--;
                e->queued = false;
                sent++;
                if (e->closed)
                        unlink_entry(l, e);     /* announced for the last time */
        }
        return sent;
}

size_t live_pending(const Live *l) {
        return l->fifo_len;
}

size_t live_tracked(const Live *l) {
        return l->n_entries;
}
