/* journal.h — the local write-ahead journal of received MQTT messages. A message is
 * appended (write(2)) before the broker is acknowledged, so SIGKILL loses nothing;
 * fdatasync runs every sync interval (or after every write when it is 0). Segments whose
 * records are all committed to the database are deleted. The journal also records which
 * database its records belong to (journal_identity), and can drop them all (journal_discard). */
#pragma once

#include "common.h"

typedef struct Journal Journal;

#define JOURNAL_TOPIC_MAX   ((size_t) UINT16_MAX)       /* bytes, without the NUL */
#define JOURNAL_PAYLOAD_MAX ((size_t) 256 << 20)        /* 256 MiB */
#define JOURNAL_SEGMENT_SIZE_DEFAULT ((uint64_t) 64 << 20)

/* Opens (creating it mode 0700 if missing, parents included) the journal directory, takes
 * its lock, scans the segments, truncates a torn or corrupt tail of the last segment, and
 * positions for appending after the last good record. A bad record in an older segment
 * ends that segment (the rest of it is skipped and counted, see journal_skipped_bytes())
 * but later segments still replay. Returns 0, or a negative errno (the directory cannot be
 * created or read, -EBUSY if another process or another Journal holds its lock,
 * -EPROTONOSUPPORT if a newer version wrote records this one cannot read: nothing is cut
 * then). Caller owns the result. */
int journal_open(const char *dir, usec_t sync_interval, Journal **ret);

/* Closes; syncs first. Accepts NULL, returns NULL. */
Journal *journal_free(Journal *j);

/* Appends one record with a single write in the normal case. Thread-safe (the MQTT thread
 * appends while the main thread trims). Borrows topic (NUL-terminated, at most
 * JOURNAL_TOPIC_MAX bytes) and payload (len at most JOURNAL_PAYLOAD_MAX; may be NULL when
 * len is 0). Returns 0 and its sequence number (strictly increasing, starting at 1), or a
 * negative errno (the caller must not acknowledge the message): -EMSGSIZE over a limit,
 * -ENOSPC/-EIO from the disk (a partial record is cut off again, so a later append never
 * follows half a record). With a sync interval of 0 it also runs fdatasync; if that fails
 * the record is on disk but not known durable, and the error is returned. */
int journal_append(Journal *j, usec_t received_at, const char *topic, const void *payload,
                   size_t len, uint64_t *ret_seq);

/* Calls cb for every record with seq > after, in order, including records appended by this
 * process up to the moment of the call. topic is NUL-terminated; both pointers are valid
 * only during the call. A negative return from cb stops and is returned. Returns the number
 * of records passed to cb, or a negative errno. No lock is held while cb runs: it may
 * append, sync and trim (a segment trimmed meanwhile was committed, and is skipped). */
typedef int (*journal_record_cb)(uint64_t seq, usec_t received_at, const char *topic,
                                 const void *payload, size_t len, void *userdata);
int journal_replay(Journal *j, uint64_t after, journal_record_cb cb, void *userdata);

/* Makes every appended record durable now (fdatasync, and fsync of the directory when a
 * segment was created or renamed). Called by the timer and on stop. Does not block appends
 * while the disk works. Returns 0 or a negative errno. */
int journal_sync(Journal *j);

/* True when the sync interval has passed since the last sync with writes pending. Always
 * false with a sync interval of 0 (journal_append syncs). */
bool journal_sync_due(Journal *j, usec_t now_mono);

/* Deletes segments whose records all have seq <= committed. Never deletes the segment being
 * appended to. Returns the number of segments deleted, or a negative errno. */
int journal_trim(Journal *j, uint64_t committed);

/* Makes the next sequence number greater than at_least (the database's checkpoint may be
 * ahead of a journal directory that was wiped or replaced). The next append then starts a
 * segment named at_least + 1. Does no I/O and cannot fail. */
void journal_bump_seq(Journal *j, uint64_t at_least);

/* Last sequence number appended (0 if none ever), and bytes on disk. */
uint64_t journal_last_seq(const Journal *j);
uint64_t journal_disk_bytes(const Journal *j);

/* Bytes found unreadable in older segments by journal_open, plus bytes it cut from the tail
 * of the last segment. Nonzero means a crash (tail) or damage (older segments): the caller
 * logs it. */
uint64_t journal_skipped_bytes(const Journal *j);

/* Records in the journal: those journal_replay(j, 0, ...) would pass on (readable records of
 * the listed segments, committed or not). */
uint64_t journal_record_count(Journal *j);

/* ---- which database the journal belongs to (SPEC section 8) ----
 *
 * The identity is the database's uuid, in the canonical lowercase text form
 * (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, as PostgreSQL prints a uuid), kept in the file
 * "identity" in the journal directory. A journal without it is fresh, or was written by
 * a version before identities; a damaged one (-EBADMSG) cannot say whose records it
 * holds, so it is to be treated like a foreign one: not replayed, not deleted, until the
 * operator settles it (--discard-journal: journal_discard(), then journal_set_identity()).
 * With no records (journal_record_count() is 0) there is nothing to protect, and the
 * caller can just set the identity, whatever the file said. */

/* Copies the recorded identity into ret (36 characters and a NUL). Returns 0, -ENOENT if
 * none is recorded, -EBADMSG if the file does not hold a well-formed identity, or another
 * negative errno if it cannot be read (-ELOOP: a symlink, never followed). */
int journal_identity(Journal *j, char ret[static 37]);

/* Records id (borrowed) durably: written to "identity.tmp", fsync'ed, renamed over
 * "identity", and the directory fsync'ed, so after a crash the file holds either the old
 * identity or the new one, never a mix. Returns 0, -EINVAL if id is not a canonical
 * lowercase uuid, or a negative errno (the old identity, if any, stays). Does not touch
 * the records. Not to be called concurrently with itself. */
int journal_set_identity(Journal *j, const char *id);

/* Drops every record: deletes every segment file of the directory (those listed, damaged
 * ones and stray ones a failed trim left) and leaves one empty segment named by the next
 * sequence number, so later appends keep numbering upwards, across a reopen too. Stores
 * the number of records dropped (as journal_record_count() counted them) in
 * *ret_records (may be NULL). The identity is kept: set the new one afterwards. Durable
 * (the directory is fsync'ed) when it returns 0. On failure some segments may be gone
 * already; calling it again finishes the job. Appends wait while it runs; a concurrent
 * replay sees the dropped segments as trimmed. */
int journal_discard(Journal *j, uint64_t *ret_records);

/* Sets the size at which a new segment is started (default 64 MiB; a record larger than it
 * gets a segment of its own). For tests and benchmarks. */
void journal_set_segment_size(Journal *j, uint64_t bytes);
