-- 002_counts_rejects_prune.sql — gap arithmetic in UTC (outage.utc_add) in the analyst
-- view; report_count becomes bigint; outage.open_events; rejects get an identifier, a detail and an idempotency
-- key (behind the outage.rejects view); the database identity; outage.prune.
-- Applied by the daemon (store_migrate) in one transaction under the migration lock, like
-- 001. The type change rewrites outage.stored_events and rebuilds its indexes: on a large
-- table the migration takes a while, and holds the table meanwhile. outage.events is dropped and created again together with outage.events_between
-- (whose result type is the view's row type): a view an analyst built on either makes this
-- migration fail; drop it first and create it again afterwards.

-- timestamptz + interval in the session time zone is 23 or 25 h for '1 day' across a
-- daylight saving time change; outage.padded_span, hence the exclusion constraint, does its
-- arithmetic in UTC. Every gap computation goes through this function so that the merge,
-- the status of an event and the constraint agree in any time zone. A single-expression
-- IMMUTABLE SQL function: the planner inlines it.
CREATE FUNCTION outage.utc_add(t timestamptz, d interval) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
        SELECT ($1 AT TIME ZONE 'UTC' + $2) AT TIME ZONE 'UTC'
$fn$;

-- ---- outage.events ----

DROP FUNCTION outage.events_between(timestamptz, timestamptz);
DROP VIEW outage.events;

-- SPEC section 4: bigint. An event of a controller reporting every 10 minutes would need
-- 40,000 years to pass 2^31, but the counts of merged events add up, and nothing else
-- bounds them.
ALTER TABLE outage.stored_events ALTER COLUMN report_count TYPE bigint;

CREATE VIEW outage.events AS
SELECT e.event_id,
       c.name AS controller_id,
       t.name AS outage_type,
       e.start_time,
       e.end_time,
       e.end_time - e.start_time AS duration,
       e.report_count,
       CASE WHEN outage.utc_add(e.end_time, (SELECT s.gap FROM outage.settings s)) >= now()
            THEN 'open' ELSE 'closed' END AS status,
       e.updated_at
FROM outage.stored_events e
JOIN outage.controllers c ON c.id = e.controller
JOIN outage.outage_types t ON t.id = e.otype;

-- As in 001: single SELECT, STABLE, not STRICT, so the planner inlines it and reaches
-- stored_events_type_span.
CREATE FUNCTION outage.events_between("from" timestamptz, "to" timestamptz)
RETURNS SETOF outage.events
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
        SELECT ev.*
        FROM outage.events ev
        WHERE tstzrange(ev.start_time, ev.end_time, '[]')
              && tstzrange($1, CASE WHEN $2 < $1 THEN $1 ELSE $2 END, '[)')
$fn$;

-- The events open now. "end_time + gap >= now()" written as an overlap with
-- [now() - gap, infinity) reaches the GiST index stored_events_type_span, where a filter on
-- status, or on end_time alone, scans the whole table: no index leads with end_time, and
-- one more index on the events table would slow every flush.
CREATE VIEW outage.open_events AS
SELECT ev.*
FROM outage.events ev
WHERE tstzrange(ev.start_time, ev.end_time, '[]')
      && tstzrange(outage.utc_add(now(), -(SELECT s.gap FROM outage.settings s)), NULL, '[]');

-- ---- rejects: identifier, detail, idempotency key ----

-- The daemon's table; analysts read outage.rejects (the SPEC columns) instead. The source
-- (instance, journal record, item index) identifies a reject: replaying the journal record
-- of a message whose rejects were already stored inserts nothing (ON CONFLICT DO NOTHING).
-- Rows without a source (null columns) are never duplicates of one another.
CREATE TABLE outage.stored_rejects (
        reject_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_at   timestamptz NOT NULL,
        topic         text NOT NULL,
        controller_id text,
        reason        text NOT NULL,
        detail        text,
        payload       text NOT NULL,
        src_instance  text,
        src_seq       bigint,
        src_item      integer,
        CONSTRAINT stored_rejects_source UNIQUE (src_instance, src_seq, src_item)
);

-- The rejects of 001 get identifiers in the order they were received.
INSERT INTO outage.stored_rejects (received_at, topic, controller_id, reason, payload)
SELECT received_at, topic, controller_id, reason, payload
FROM outage.rejects
ORDER BY received_at;

DROP TABLE outage.rejects;

-- Retention deletes by age.
CREATE INDEX stored_rejects_received_at ON outage.stored_rejects (received_at);

CREATE VIEW outage.rejects AS
SELECT reject_id, received_at, topic, controller_id, reason, detail, payload
FROM outage.stored_rejects;

-- ---- the database identity ----

-- Generated once, by this migration: the daemon's journal records it, so that a journal is
-- never replayed into another database. Not in outage.settings, whose row the gap-change
-- procedure deletes. A copy of the database (CREATE DATABASE ... TEMPLATE, a restored
-- dump) carries the same identity.
CREATE TABLE outage.database_identity (
        database_id uuid NOT NULL DEFAULT gen_random_uuid(),
        created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX database_identity_one_row ON outage.database_identity ((true));
INSERT INTO outage.database_identity DEFAULT VALUES;

-- ---- retention ----

-- A procedure, not a function, so that it can COMMIT after every batch: each batch of at
-- most 10,000 rows is its own transaction. The row locks of deleted events are then held
-- for one batch only, so a flush that touches one of them (a late report within the gap of
-- an old event) waits one batch, not the whole prune; vacuum can reclaim the rows of
-- earlier batches while later ones run, and an interrupted prune keeps what it deleted.
-- The table lock a DELETE takes (ROW EXCLUSIVE) never conflicts with the daemon's writes.
-- A batch is chosen as an array of identifiers, then deleted through the primary key
-- (= ANY): an IN (subquery) would let the planner hash-join the whole table per batch.
-- Events: FOR UPDATE SKIP LOCKED leaves rows that a flush (or a concurrent prune) holds to
-- that transaction; the condition is repeated on the DELETE itself, so a row a flush
-- extended meanwhile (its end_time moved) is re-checked on its new version and kept. A
-- flush whose kept event was deleted under it sees that and retries (sql/flush_merge.sql).
-- Rejects are never updated (and the writer may not lock them FOR UPDATE): of two prunes
-- that pick the same batch, the second waits for the first, deletes nothing and stops,
-- the first goes on; the numbers they return add up to what was deleted.
-- Transaction control requires CALL outside an explicit transaction block (as psql does by
-- default, and as the daemon does); inside one, the first COMMIT fails.
CREATE PROCEDURE outage.prune(events_before timestamptz, rejects_before timestamptz,
                              INOUT events bigint DEFAULT NULL, INOUT rejects bigint DEFAULT NULL)
LANGUAGE plpgsql AS $fn$
DECLARE
        cutoff timestamptz;
        n bigint;
BEGIN
        events := 0;
        rejects := 0;
        -- Closed: end_time + gap < now(). now() only grows, so an event closed at the first
        -- batch stays closed in the later ones unless a flush extends it (re-checked).
        SELECT CASE WHEN events_before IS NOT NULL
                    THEN least(events_before, outage.utc_add(now(), -s.gap)) END
        INTO cutoff
        FROM outage.settings s;
        WHILE cutoff IS NOT NULL LOOP
                DELETE FROM outage.stored_events ev
                WHERE ev.event_id = ANY (ARRAY(
                        SELECT x.event_id FROM outage.stored_events x
                        WHERE tstzrange(x.start_time, x.end_time, '[]') << tstzrange(cutoff, NULL, '[]')
                        LIMIT 10000
                        FOR UPDATE SKIP LOCKED))
                  AND ev.end_time < cutoff;
                GET DIAGNOSTICS n = ROW_COUNT;
                EXIT WHEN n = 0;
                events := events + n;
                COMMIT;
        END LOOP;
        WHILE rejects_before IS NOT NULL LOOP
                DELETE FROM outage.stored_rejects r
                WHERE r.reject_id = ANY (ARRAY(
                        SELECT x.reject_id FROM outage.stored_rejects x
                        WHERE x.received_at < rejects_before
                        ORDER BY x.received_at
                        LIMIT 10000));
                GET DIAGNOSTICS n = ROW_COUNT;
                EXIT WHEN n = 0;
                rejects := rejects + n;
                COMMIT;
        END LOOP;
END
$fn$;

-- ---- privileges ----

-- Function privileges are checked as the querying user, also for a function in a view.
REVOKE ALL ON FUNCTION outage.utc_add(timestamptz, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outage.utc_add(timestamptz, interval) TO outage_writer, outage_reader;

GRANT SELECT ON outage.events, outage.open_events TO outage_reader;
REVOKE ALL ON FUNCTION outage.events_between(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outage.events_between(timestamptz, timestamptz) TO outage_reader, outage_writer;

-- The writer inserts rejects (SELECT: ON CONFLICT reads the arbiter columns) and deletes
-- them through outage.prune, which runs with the caller's rights: a SECURITY DEFINER
-- procedure cannot COMMIT.
GRANT SELECT ON outage.rejects TO outage_reader;
GRANT SELECT, INSERT, DELETE ON outage.stored_rejects TO outage_writer;
GRANT SELECT ON outage.database_identity TO outage_writer, outage_reader;
REVOKE ALL ON PROCEDURE outage.prune(timestamptz, timestamptz, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE outage.prune(timestamptz, timestamptz, bigint, bigint) TO outage_writer;

-- ---- comments ----

COMMENT ON FUNCTION outage.utc_add(timestamptz, interval) IS 't + d computed in UTC (a day is always 24 hours), as outage.padded_span does: the gap arithmetic of the schema and the daemon.';

COMMENT ON VIEW outage.events IS 'One row per outage event: consecutive reports of one controller and outage type at most the gap in force (outage.settings) apart.';
COMMENT ON COLUMN outage.events.event_id IS 'Event identifier; when events merge, the smallest identifier survives.';
COMMENT ON COLUMN outage.events.controller_id IS 'Controller that reported (the topic level of outages/<controller_id>).';
COMMENT ON COLUMN outage.events.outage_type IS 'Kind of outage reported, e.g. panel_outage.';
COMMENT ON COLUMN outage.events.start_time IS 'Timestamp of the first report of the event.';
COMMENT ON COLUMN outage.events.end_time IS 'Timestamp of the last report of the event.';
COMMENT ON COLUMN outage.events.duration IS 'end_time - start_time (zero for a single report).';
COMMENT ON COLUMN outage.events.report_count IS 'Reports that created, extended or joined the event; duplicates and reports inside its span are not counted.';
COMMENT ON COLUMN outage.events.status IS 'open while end_time + gap >= now() (a further report could still extend it), else closed; computed in UTC, like the gap between reports.';
COMMENT ON COLUMN outage.events.updated_at IS 'When the daemon last changed the event.';
COMMENT ON FUNCTION outage.events_between(timestamptz, timestamptz) IS 'Events (rows of outage.events) overlapping the half-open window [from, to); a null bound is unbounded. Filter on outage_type or controller_id in the calling query.';

COMMENT ON VIEW outage.open_events IS 'The rows of outage.events that are open now (end_time + gap >= now()), found through an index: prefer it to a filter on status or end_time.';
COMMENT ON COLUMN outage.open_events.event_id IS 'As in outage.events.';
COMMENT ON COLUMN outage.open_events.controller_id IS 'As in outage.events.';
COMMENT ON COLUMN outage.open_events.outage_type IS 'As in outage.events.';
COMMENT ON COLUMN outage.open_events.start_time IS 'As in outage.events.';
COMMENT ON COLUMN outage.open_events.end_time IS 'As in outage.events.';
COMMENT ON COLUMN outage.open_events.duration IS 'As in outage.events.';
COMMENT ON COLUMN outage.open_events.report_count IS 'As in outage.events.';
COMMENT ON COLUMN outage.open_events.status IS 'open.';
COMMENT ON COLUMN outage.open_events.updated_at IS 'As in outage.events.';

COMMENT ON TABLE outage.stored_rejects IS 'The daemon''s rejects table, with the idempotency key of each row; read outage.rejects instead.';
COMMENT ON COLUMN outage.stored_rejects.src_instance IS 'Daemon instance (MQTT client id) that journalled the message; with src_seq and src_item the idempotency key (null: none).';
COMMENT ON COLUMN outage.stored_rejects.src_seq IS 'Journal record of the message in that instance''s journal.';
COMMENT ON COLUMN outage.stored_rejects.src_item IS 'Index of the rejected item in the message (0 for a whole message).';
COMMENT ON VIEW outage.rejects IS 'Reports the daemon rejected, one row per message or item, with the first reason that applied; re-publish after fixing.';
COMMENT ON COLUMN outage.rejects.reject_id IS 'Reject identifier, unique and increasing in insertion order.';
COMMENT ON COLUMN outage.rejects.received_at IS 'When the daemon received the message.';
COMMENT ON COLUMN outage.rejects.topic IS 'MQTT topic the message arrived on (first 1 KiB, escaped like payload).';
COMMENT ON COLUMN outage.rejects.controller_id IS 'Controller id from the topic; null when it is not a valid id.';
COMMENT ON COLUMN outage.rejects.reason IS 'First failed check: bad_controller_id, payload_too_large, malformed_json, not_a_report, batch_too_large, missing_field, bad_field_type, bad_outage_type, unknown_outage_type, bad_timestamp, timestamp_out_of_range, controller_mismatch; store_refused for an event the database refused.';
COMMENT ON COLUMN outage.rejects.detail IS 'Which bound or rule failed, and the item''s index in a batch (e.g. older than max_age 30d, item 3 of 12); may be null.';
COMMENT ON COLUMN outage.rejects.payload IS 'The message (or the rejected item as JSON), first 1 KiB; invalid UTF-8 and NUL bytes written as \xNN.';

COMMENT ON TABLE outage.database_identity IS 'One row: the identity of this database, generated by migration 002; a daemon''s journal records the database it belongs to by it.';
COMMENT ON COLUMN outage.database_identity.database_id IS 'Random identifier of this database (a copy made from it has the same).';
COMMENT ON COLUMN outage.database_identity.created_at IS 'When it was generated.';

COMMENT ON PROCEDURE outage.prune(timestamptz, timestamptz, bigint, bigint) IS 'CALL outage.prune(events_before, rejects_before): deletes the closed events that ended before events_before and the rejects received before rejects_before (a null bound deletes nothing of that kind), committing every 10,000 rows; returns the numbers deleted (events, rejects). Call it outside a transaction block.';
