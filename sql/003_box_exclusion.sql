-- 003_box_exclusion.sql — one GiST index on the events instead of two, on a fixed-width
-- key: the exclusion constraint becomes an R-tree of boxes (padded span x key), which also
-- answers the overlap queries of outage.events_between and outage.open_events.
-- Applied by the daemon (store_migrate) in one transaction under the migration lock, like
-- 001 and 002. On a database with a gap installed it builds the new constraint over every
-- stored event (about 30 s per million events on a small machine) and holds the table
-- meanwhile.
--
-- Why: every extension of an event changes its indexed columns, so each one inserted into
-- the exclusion GiST (controller, otype, padded tstzrange: three columns, two through
-- btree_gist, ranges detoasted and deserialised at every comparison) and into the overlap
-- GiST (otype, tstzrange). One single-column GiST on boxes (32 bytes, compared in place by
-- the built-in R-tree code) halves the cost of a flush's UPDATE (measured: 10,000
-- extensions against 1M events, 1.3-2.4 s before, 0.6-0.8 s after).
--
-- The box of an event: x from its start to its end plus the gap, in microseconds since the
-- epoch (UTC; exact in float8 up to 2^53 us, the year 2255); y a single value for its key,
-- controller * 2^21 + otype (exact while otype < 2^21, which a check keeps). Two boxes
-- overlap (&&, bounds included) exactly when the keys are equal and the padded spans
-- meet: the constraint of 001, without the range types. The geometric operators compare
-- with a tolerance of 1e-6, far below one microsecond.

-- t as microseconds since 1970-01-01 UTC, exactly (extract is numeric; the cast is exact
-- below 2^53).
CREATE FUNCTION outage.epoch_us(t timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
        SELECT (extract(epoch FROM $1 AT TIME ZONE 'UTC') * 1000000)::double precision
$fn$;

-- The y coordinate of a key.
CREATE FUNCTION outage.key_y(c integer, t integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
        SELECT $1::double precision * 2097152 + $2
$fn$;

ALTER TABLE outage.stored_events
        ADD CONSTRAINT stored_events_key_box CHECK (controller > 0 AND otype > 0 AND otype < 2097152);

-- (Re)creates outage.event_box(c, t, s, e) for gap g (as a literal in its body, so that it
-- is IMMUTABLE) and the exclusion constraint on it, which checks every stored event. Called
-- by install_gap, and by this migration. CREATE OR REPLACE: the views and functions below
-- use event_box.
CREATE FUNCTION outage.apply_gap(g interval) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
        gap_us bigint := (extract(epoch FROM g) * 1000000)::bigint;
BEGIN
        IF EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'outage.stored_events'::regclass AND conname = 'stored_events_no_overlap') THEN
                ALTER TABLE outage.stored_events DROP CONSTRAINT stored_events_no_overlap;
        END IF;
        EXECUTE format('CREATE OR REPLACE FUNCTION outage.event_box(c integer, t integer, s timestamptz, e timestamptz) '
                       'RETURNS box LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L',
                       format('SELECT box(point(outage.epoch_us($3), outage.key_y($1, $2)), '
                              'point(outage.epoch_us($4) + %s, outage.key_y($1, $2)))', gap_us));
        COMMENT ON FUNCTION outage.event_box(integer, integer, timestamptz, timestamptz) IS
                'The box of an event of key (c, t) spanning [s, e]: x from s to e + gap in microseconds since the epoch, y the key (installed by outage.install_gap).';
        REVOKE ALL ON FUNCTION outage.event_box(integer, integer, timestamptz, timestamptz) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION outage.event_box(integer, integer, timestamptz, timestamptz)
                TO outage_writer, outage_reader;
        ALTER TABLE outage.stored_events ADD CONSTRAINT stored_events_no_overlap
                EXCLUDE USING gist (outage.event_box(controller, otype, start_time, end_time) WITH &&);
END
$fn$;
REVOKE ALL ON FUNCTION outage.apply_gap(interval) FROM PUBLIC;

CREATE OR REPLACE FUNCTION outage.install_gap(new_gap interval) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
        IF EXISTS (SELECT 1 FROM outage.settings) THEN
                RAISE EXCEPTION 'outage.settings already holds a gap'
                        USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        INSERT INTO outage.settings (gap) VALUES (new_gap);
        PERFORM outage.apply_gap(new_gap);
END
$fn$;

-- The old constraint goes in apply_gap, before its function.
DROP INDEX outage.stored_events_type_span;
-- A database without a gap yet (a new one: the daemon installs it right after the
-- migrations) gets a stand-in of gap 0, replaced by install_gap.
SELECT outage.apply_gap(COALESCE((SELECT gap FROM outage.settings), interval '0'));
DO $drop$
BEGIN
        IF to_regprocedure('outage.padded_span(timestamptz, timestamptz)') IS NOT NULL THEN
                DROP FUNCTION outage.padded_span(timestamptz, timestamptz);
        END IF;
END
$drop$;

-- outage.events with the key's ids, so that a query on it can name the box of the index.
-- The one definition of an event's columns: outage.events is this view without the ids
-- (CREATE OR REPLACE: same columns, so nothing built on outage.events has to go).
CREATE VIEW outage.events_keyed AS
SELECT e.event_id,
       c.name AS controller_id,
       t.name AS outage_type,
       e.start_time,
       e.end_time,
       e.end_time - e.start_time AS duration,
       e.report_count,
       CASE WHEN outage.utc_add(e.end_time, (SELECT s.gap FROM outage.settings s)) >= now()
            THEN 'open' ELSE 'closed' END AS status,
       e.updated_at,
       e.controller,
       e.otype
FROM outage.stored_events e
JOIN outage.controllers c ON c.id = e.controller
JOIN outage.outage_types t ON t.id = e.otype;

CREATE OR REPLACE VIEW outage.events AS
SELECT event_id, controller_id, outage_type, start_time, end_time, duration, report_count,
       status, updated_at
FROM outage.events_keyed;

-- events_between and open_events: the box test reaches the constraint's index and is a
-- superset of the exact condition (the box is padded by the gap), which follows it. As in
-- 001: single SELECT, STABLE, not STRICT, so the planner inlines it.
CREATE OR REPLACE FUNCTION outage.events_between("from" timestamptz, "to" timestamptz)
RETURNS SETOF outage.events
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
        SELECT ev.event_id, ev.controller_id, ev.outage_type, ev.start_time, ev.end_time,
               ev.duration, ev.report_count, ev.status, ev.updated_at
        FROM outage.events_keyed ev
        WHERE outage.event_box(ev.controller, ev.otype, ev.start_time, ev.end_time)
              && box(point(COALESCE(outage.epoch_us($1), '-infinity'), 0),
                     point(COALESCE(outage.epoch_us($2), 'infinity'), 9007199254740992))
          AND tstzrange(ev.start_time, ev.end_time, '[]')
              && tstzrange($1, CASE WHEN $2 < $1 THEN $1 ELSE $2 END, '[)')
$fn$;

-- Open: end + gap >= now(), which is the box's right edge against now.
CREATE OR REPLACE VIEW outage.open_events AS
SELECT ev.event_id, ev.controller_id, ev.outage_type, ev.start_time, ev.end_time,
       ev.duration, ev.report_count, ev.status, ev.updated_at
FROM outage.events_keyed ev
WHERE outage.event_box(ev.controller, ev.otype, ev.start_time, ev.end_time)
      && box(point(outage.epoch_us(now()), 0), point('infinity', 9007199254740992))
  AND ev.status = 'open';

REVOKE ALL ON FUNCTION outage.epoch_us(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION outage.key_y(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outage.epoch_us(timestamptz) TO outage_writer, outage_reader;
GRANT EXECUTE ON FUNCTION outage.key_y(integer, integer) TO outage_writer, outage_reader;

COMMENT ON FUNCTION outage.epoch_us(timestamptz) IS 'Microseconds since 1970-01-01 UTC, exact (as float8, below 2^53).';
COMMENT ON FUNCTION outage.key_y(integer, integer) IS 'The y coordinate of key (controller, outage type) in outage.event_box.';
COMMENT ON FUNCTION outage.apply_gap(interval) IS 'Creates outage.event_box for the gap and the exclusion constraint on it (called by outage.install_gap).';
GRANT SELECT ON outage.events_keyed TO outage_reader;

COMMENT ON VIEW outage.events_keyed IS 'outage.events with the key''s internal ids (controller, otype), for queries that reach the index on outage.event_box; analysts use outage.events.';
COMMENT ON VIEW outage.open_events IS 'The rows of outage.events that are open now (end_time + gap >= now()), found through an index: prefer it to a filter on status or end_time.';
