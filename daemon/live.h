/* live.h — live event messages (SPEC section 2, "Live events"): after each committed
 * flush, a retained QoS 1 message per created or changed event that is its key's latest,
 * on <events.topic_prefix>/<controller_id>/<outage_type>; the same with "status":"closed"
 * once an announced event closes. A bounded outbox between the flush results and the
 * broker: publishing never blocks the main loop, the newest state of a key replaces an
 * older one still waiting, and a message the broker could not take is sent again when it
 * returns, unless the key's next change or close replaced it. Main thread only; no I/O
 * of its own (ingest_publish sends). */
#pragma once

#include "common.h"
#include "ingest.h"
#include "store.h"

typedef struct Live Live;

/* prefix: events.topic_prefix (copied); gap: aggregation.gap; max_keys: keys it tracks at
 * most (announced and not yet closed, or waiting to be sent): beyond it a change of a key
 * not tracked yet is not announced (live_committed() says so), so memory stays bounded.
 * Returns 0 or -ENOMEM. */
int live_new(const char *prefix, usec_t gap, size_t max_keys, Live **ret);
Live *live_free(Live *l);

/* Takes note of the events a committed flush created or changed (borrowed): each that is
 * its key's latest is queued, as open and remembered until it closes, or as closed at once
 * when end + gap < now already (a late report filling the past). Returns 0 or -ENOMEM
 * (some messages are not queued, the key table being full or memory short; the key's next
 * change announces it). */
int live_committed(Live *l, const StoreEvent *ev, size_t n, usec_t now);

/* Queues the close of every remembered event with end + gap < now. O(remembered keys). */
void live_tick(Live *l, usec_t now);

/* Sends queued messages while the broker takes them. Returns how many went out. */
size_t live_send(Live *l, Ingest *i);

/* Messages waiting to be sent, and keys remembered. */
size_t live_pending(const Live *l);
size_t live_tracked(const Live *l);

/* The message text for ev (status "open" or "closed"), NUL-terminated, into buf; returns
 * its length, or -ENOBUFS when len is too small (512 bytes always suffice). Pure. */
int live_format(const StoreEvent *ev, bool closed, char *buf, size_t len);
