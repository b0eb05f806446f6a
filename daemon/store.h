/* store.h — PostgreSQL: migrations, the batched set-based merge of fragments, rejects, the
 * journal checkpoint, warm start. The only module that uses libpq. Synchronous: the caller
 * runs it on a thread of its own. Does not log; errors are returned with a message. */
#pragma once

#include "agg.h"
#include "common.h"

typedef struct Store Store;

/* Connects with a libpq conninfo string or URI (PG* environment variables apply); password
 * (may be NULL) is used when the conninfo has none. Returns 0, -ECONNREFUSED when the
 * server cannot be reached (retry later), -EACCES for authentication failures, -EINVAL for
 * a bad conninfo, -ENOMEM. On failure the message is copied into err. */
int store_connect(const char *conninfo, const char *password, Store **ret, char *err, size_t errlen);
Store *store_free(Store *s);

/* The last error message of this connection (valid until the next call). */
const char *store_error(const Store *s);

/* True when the connection is usable; false after a connection-level failure (the caller
 * then frees the store and connects again). */
bool store_connected(const Store *s);

/* Applies pending migrations (sql/NNN_*.sql, embedded) in one transaction under an advisory
 * lock, and records the gap in outage.settings if none is recorded yet. Returns 0;
 * -ESTALE if the stored gap differs from gap (configuration error, exit 78); -EPROTO if
 * the database schema is newer than this binary; -ECONNRESET if the connection was lost;
 * -EIO for any other failure. Idempotent. */
int store_migrate(Store *s, usec_t gap);

/* Highest migration version this binary knows, and the version stored (0: none). */
int store_schema_version(Store *s, int *ret_stored, int *ret_known);

/* Calls cb for every stored event with end_time >= since (warm start). Returns 0, a
 * negative errno from cb (which stops the scan), -ECONNRESET or -EIO. */
typedef int (*store_event_cb)(const char *controller_id, const char *outage_type,
                              usec_t start, usec_t end, void *userdata);
int store_load_events(Store *s, usec_t since, store_event_cb cb, void *userdata);

/* The journal position committed by instance (0 if none), and the flush_id of the
 * transaction that wrote it (0 if none; ret_flush_id may be NULL). */
int store_get_checkpoint(Store *s, const char *instance, uint64_t *ret_seq, uint64_t *ret_flush_id);

/* One row of outage.rejects. The caller escapes and truncates topic and payload (first
 * 1 KiB); bytes that are still not valid UTF-8 are written as \xNN. (instance, seq, item)
 * identifies the reject: inserting it again, from a replay of the same journal record, is a
 * no-op. Without an instance or with seq 0 it has no identity and is always inserted. */
typedef struct RejectRow {
        usec_t received_at;
        const char *topic;
        const char *controller_id;      /* NULL when the topic's id is invalid */
        const char *reason;
        const char *payload;            /* already escaped and truncated */
        const char *detail;             /* which bound or rule failed; may be NULL */
        uint64_t seq;                   /* journal record of the message, 1..INT64_MAX; 0: none */
        uint32_t item;                  /* index of the item in the message, 0..INT32_MAX
                                         * (0 for a whole message) */
} RejectRow;

/* In one transaction: merges the fragments (SPEC section 3: each fragment is merged with
 * every stored event of its key within gap; union of spans, counts added; a fragment inside
 * one stored event adds nothing; each uncertain timestamp counts only if no stored event
 * contains it), inserts the rejects (in order; one already stored under the same (instance,
 * seq, item) is skipped: see RejectRow), and records (instance, seq, flush_id) as the committed
 * journal position when instance is not NULL. flush_id identifies this flush (1 to
 * INT64_MAX). Safe with concurrent writers: striped advisory locks in sorted order, retried
 * on serialization, deadlock and exclusion failures. Returns 0 (committed); -ECONNRESET
 * (connection lost: if that happened during COMMIT, whether it landed is unknown — read
 * the checkpoint on a new connection: its flush_id equals this one exactly when it did);
 * -EIO (the database refused the transaction; rolled back); -EINVAL (a fragment is
 * malformed, nothing sent). */
int store_flush(Store *s, const Fragment *f, size_t n, const RejectRow *r, size_t nr,
                const char *instance, uint64_t seq, uint64_t flush_id);
