/* journal.h — the local write-ahead journal of received MQTT messages. A message is
 * appended (write(2)) before the broker is acknowledged, so SIGKILL loses nothing;
 * fdatasync runs every sync interval (or after every write when it is 0). Segments whose
 * records are all committed to the database are deleted. */
#pragma once

#include "common.h"

typedef struct Journal Journal;

/* Opens (creating it mode 0700 if missing) the journal directory, scans the segments,
 * truncates a torn tail record, and positions for appending after the last good record.
 * Returns 0, or a negative errno (the directory cannot be created or read, -EBUSY if
 * another process holds its lock). Caller owns the result. */
int journal_open(const char *dir, usec_t sync_interval, Journal **ret);

/* Closes; syncs first. Accepts NULL, returns NULL. */
Journal *journal_free(Journal *j);

/* Appends one record. Thread-safe (the MQTT thread appends while the main thread trims).
 * Returns 0 and its sequence number (strictly increasing, never reused, starting at 1),
 * or a negative errno (the caller must not acknowledge the message). */
int journal_append(Journal *j, usec_t received_at, const char *topic, const void *payload,
                   size_t len, uint64_t *ret_seq);

/* Calls cb for every record with seq > after, in order. A negative return from cb stops
 * and is returned. */
typedef int (*journal_record_cb)(uint64_t seq, usec_t received_at, const char *topic,
                                 const void *payload, size_t len, void *userdata);
int journal_replay(Journal *j, uint64_t after, journal_record_cb cb, void *userdata);

/* Makes every appended record durable now (fdatasync). Called by the timer and on stop. */
int journal_sync(Journal *j);

/* True when the sync interval has passed since the last sync with writes pending. */
bool journal_sync_due(Journal *j, usec_t now_mono);

/* Deletes segments whose records all have seq <= committed. Never deletes the segment being
 * appended to. Returns the number of segments deleted, or a negative errno. */
int journal_trim(Journal *j, uint64_t committed);

/* Makes the next sequence number greater than at_least (the database's checkpoint may be
 * ahead of a journal directory that was wiped or replaced). */
void journal_bump_seq(Journal *j, uint64_t at_least);

/* Last sequence number appended (0 if none ever), and bytes on disk. */
uint64_t journal_last_seq(const Journal *j);
uint64_t journal_disk_bytes(const Journal *j);
