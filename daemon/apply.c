/* apply.c — journaled messages -> agg_add() and reject rows, in journal order, with a
 * cursor that survives a full memory or a failed allocation in the middle of a message.
 * Logs rejects (rate-limited); does no I/O of its own. */
#include <assert.h>
#include <stdio.h>

#include "apply.h"
#include "log.h"
#include "text.h"

/* A reject row's topic keeps this many bytes of the topic (SPEC section 4). */
#define REJECT_TOPIC_MAX 1024

struct Apply {
        Agg *agg;
        const ApplyConfig *cfg;

        QueueItem *head, *tail;         /* pending, in journal order; head may be the cursor's */
        size_t n_pending;
        uint64_t pending_bytes;

        /* The message at the head, parsed and applied up to index. */
        ReportMessage *cur;
        size_t cur_index;
        bool cur_head_done;             /* its message-level reject is buffered */
        char cur_id[65];                /* the topic's controller id, "" if invalid */

        uint64_t processed_seq;
        RejectBatch rejects;            /* buffered since the last flush was taken */
        RejectBatch returned;           /* given back by a failed flush, older than rejects */
        ApplyStats stats;
        RateLimit reject_rl;
};

static uint64_t item_bytes(const QueueItem *i) {
        return sizeof(*i) + i->topic_len + i->len + 2;
}

static void free_row(RejectRow *r) {
        free((char *) r->topic);
        free((char *) r->controller_id);
        free((char *) r->detail);
        free((char *) r->payload);
}

void reject_batch_clear(RejectBatch *b) {
        for (size_t i = 0; i < b->n; i++)
                free_row(&b->rows[i]);
        free(b->rows);
        *b = (RejectBatch) {};
}

int apply_new(Agg *agg, const ApplyConfig *cfg, Apply **ret) {
        Apply *a = calloc(1, sizeof(*a));

        if (!a)
                return -ENOMEM;
        a->agg = agg;
        a->cfg = cfg;
        a->reject_rl = (RateLimit) RATELIMIT_INIT(10 * USEC_PER_SEC, 20);
        *ret = a;
        return 0;
}

Apply *apply_free(Apply *a) {
        if (!a)
                return NULL;
        report_message_free(a->cur);
        for (QueueItem *i = a->head, *n; i; i = n) {
                n = i->next;
                free(i);
        }
        reject_batch_clear(&a->rejects);
        reject_batch_clear(&a->returned);
        free(a);
        return NULL;
}

void apply_push(Apply *a, QueueItem *list) {
        QueueItem *last = NULL;

        if (!list)
                return;
        for (QueueItem *i = list; i; i = i->next) {
                a->n_pending++;
                a->pending_bytes += item_bytes(i);
                last = i;
        }
        if (a->tail)
                a->tail->next = list;
        else
                a->head = list;
        a->tail = last;
}

static uint64_t row_bytes(const RejectRow *r) {
        return sizeof(*r) + strlen(r->topic) + strlen(r->payload) + 3 +
               (r->controller_id ? strlen(r->controller_id) + 1 : 0) +
               (r->detail ? strlen(r->detail) + 1 : 0);
}

/* Appends a row whose strings it takes; all or nothing. */
static int push_row(RejectBatch *b, RejectRow *row) {
        if (b->n == b->cap) {
                size_t cap = b->cap ? b->cap * 2 : 64;
                RejectRow *n = realloc(b->rows, cap * sizeof(*n));

                if (!n)
                        return -ENOMEM;
                b->rows = n;
                b->cap = cap;
        }
        b->bytes += row_bytes(row);
        b->rows[b->n++] = *row;
        return 0;
}

static int add_row(Apply *a, uint64_t seq, uint32_t item, usec_t received_at, const char *topic,
                   size_t topic_len, const char *controller_id, const char *reason,
                   const char *detail, const char *payload) {
        RejectRow row = {
                .seq = seq,
                .item = item,
                .received_at = received_at,
                .topic = text_escape(topic, topic_len, REJECT_TOPIC_MAX),
                .controller_id = controller_id ? strdup(controller_id) : NULL,
                .reason = reason,
                .detail = detail ? strdup(detail) : NULL,
                .payload = strdup(payload ? payload : ""),
        };

        if (!row.topic || !row.payload || (controller_id && !row.controller_id) ||
            (detail && !row.detail) || push_row(&a->rejects, &row) < 0) {
                free_row(&row);
                return -ENOMEM;
        }
        return 0;
}

static void log_reject(Apply *a, const char *topic, const char *controller_id, RejectReason reason,
                       const char *detail) {
        unsigned suppressed = 0;
        char f1[128], f2[64], f3[REPORT_DETAIL_MAX + 16];
        const char *fields[] = { f1, f2, f3, NULL };

        if (!ratelimit_below(&a->reject_rl, now_monotonic(), &suppressed))
                return;
        snprintf(f1, sizeof(f1), "CONTROLLER_ID=%s", controller_id ? controller_id : "");
        snprintf(f2, sizeof(f2), "REASON=%s", reject_reason_to_string(reason));
        snprintf(f3, sizeof(f3), "DETAIL=%s", detail ? detail : "");
        log_full(LOG_LEVEL_WARNING, 0, fields, "Rejected report from topic %.200s: %s%s%s%s", topic,
                 reject_reason_to_string(reason), detail ? ": " : "", detail ? detail : "",
                 suppressed ? " (more rejects suppressed)" : "");
}

/* item: the index in the message, 0 for a message-level reject. With the journal record,
 * it makes the row idempotent: a replay adding it again stores it once. */
static int reject(Apply *a, const QueueItem *msg, uint32_t item, const char *controller_id,
                  RejectReason reason, const char *detail, const char *payload) {
        int r = add_row(a, msg->seq, item, msg->received_at, msg->topic, msg->topic_len, controller_id,
                        reject_reason_to_string(reason), detail, payload);

        if (r < 0)
                return r;
        a->stats.rejects[reason]++;
        log_reject(a, msg->topic, controller_id, reason, detail);
        return 0;
}

int apply_add_reject(Apply *a, usec_t received_at, const char *topic, const char *controller_id,
                     const char *reason, const char *detail, const char *payload) {
        return add_row(a, 0, 0, received_at, topic, strlen(topic), controller_id, reason, detail, payload);
}

/* Parses the message at the head into the cursor. The receive time stands in for "now"
 * in the skew and age checks, so a replay after a crash decides exactly as the first time. */
static int open_cursor(Apply *a) {
        const QueueItem *i = a->head;
        int r;

        r = report_parse_topic(a->cfg->topic_filter, i->topic, i->topic_len, i->payload, i->len,
                               a->cfg->rules, i->received_at, &a->cur);
        if (r < 0)
                return r;
        a->cur_index = 0;
        a->cur_head_done = false;
        snprintf(a->cur_id, sizeof(a->cur_id), "%s", a->cur->controller_valid ? a->cur->controller_id : "");
        return 0;
}

/* Pops the head once the cursor's message is done. */
static void close_cursor(Apply *a) {
        QueueItem *i = a->head;

        a->cur = report_message_free(a->cur);
        a->head = i->next;
        if (!a->head)
                a->tail = NULL;
        a->n_pending--;
        a->pending_bytes -= item_bytes(i);
        a->processed_seq = i->seq;
        free(i);
}

/* Applies the cursor's message from where it stopped. Returns 0 when it is done. */
static int apply_cursor(Apply *a) {
        const QueueItem *msg = a->head;
        ReportMessage *m = a->cur;
        int r;

        if (!a->cur_head_done) {
                if (m->reason != REJECT_NONE) {
                        r = reject(a, msg, 0, m->controller_valid ? m->controller_id : NULL, m->reason,
                                   m->detail[0] ? m->detail : NULL, m->payload);
                        if (r < 0)
                                return r;
                }
                a->cur_head_done = true;
        }
        for (; a->cur_index < m->n_items; a->cur_index++) {
                const ReportItem *it = &m->items[a->cur_index];

                if (it->reason != REJECT_NONE) {
                        r = reject(a, msg, (uint32_t) a->cur_index, a->cur_id, it->reason,
                                   it->detail[0] ? it->detail : NULL,
                                   it->payload);
                        if (r < 0)
                                return r;
                        continue;
                }
                r = agg_add(a->agg, a->cur_id, it->outage_type, it->timestamp);
                if (r < 0)
                        return r;       /* -ENOSPC or -ENOMEM: state unchanged, retry here */
                if (r > 0)
                        a->stats.accepted++;
                else
                        a->stats.duplicate++;
        }
        return 0;
}

int apply_run(Apply *a, usec_t deadline) {
        unsigned n = 0;
        int r;

        while (a->head) {
                /* Rejects wait in memory for the next flush too: a flood of bad input
                 * while the database is down must not grow them without bound. */
                if (apply_rejects_full(a))
                        return -ENOSPC;
                if (!a->cur) {
                        /* The clock is read every 64 messages: a message costs microseconds. */
                        if (deadline > 0 && (++n & 63) == 0 && now_monotonic() >= deadline)
                                return -EAGAIN;
                        r = open_cursor(a);
                        if (r < 0)
                                return r;
                }
                r = apply_cursor(a);
                if (r < 0)
                        return r;
                close_cursor(a);
        }
        return 0;
}

uint64_t apply_processed_seq(const Apply *a) {
        return a->processed_seq;
}

void apply_set_processed_seq(Apply *a, uint64_t seq) {
        a->processed_seq = seq;
}

size_t apply_pending(const Apply *a) {
        return a->n_pending;
}

uint64_t apply_pending_bytes(const Apply *a) {
        return a->pending_bytes;
}

bool apply_idle(const Apply *a) {
        return !a->head;
}

bool apply_rejects_full(const Apply *a) {
        return a->rejects.bytes + a->returned.bytes >= a->cfg->max_reject_bytes;
}

bool apply_has_rejects(const Apply *a) {
        return a->rejects.n + a->returned.n > 0;
}

int apply_take_rejects(Apply *a, RejectBatch *ret) {
        RejectBatch *old = &a->returned, *now = &a->rejects;
        RejectRow *all;

        if (old->n > 0 && now->n > 0) {
                all = realloc(old->rows, (old->n + now->n) * sizeof(*all));
                if (!all)
                        return -ENOMEM;
                memcpy(all + old->n, now->rows, now->n * sizeof(*all));
                free(now->rows);
                old->rows = all;
                old->cap = old->n = old->n + now->n;
                old->bytes += now->bytes;
                *now = (RejectBatch) {};
        }
        *ret = old->n > 0 ? *old : *now;
        *old = *now = (RejectBatch) {};
        return 0;
}

void apply_return_rejects(Apply *a, RejectBatch *b) {
        /* Only one flush is outstanding at a time, so the slot is free: no allocation
         * here, nothing can be lost on the way back. */
        assert(a->returned.n == 0);
        reject_batch_clear(&a->returned);
        a->returned = *b;
        *b = (RejectBatch) {};
}

const ApplyStats *apply_stats(const Apply *a) {
        return &a->stats;
}
