-- 002_counts_rejects_prune.sql — gap arithmetic in UTC (outage.utc_add) in the analyst
-- view; report_count becomes bigint.
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

-- ---- privileges ----

-- Function privileges are checked as the querying user, also for a function in a view.
REVOKE ALL ON FUNCTION outage.utc_add(timestamptz, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outage.utc_add(timestamptz, interval) TO outage_writer, outage_reader;

GRANT SELECT ON outage.events TO outage_reader;
REVOKE ALL ON FUNCTION outage.events_between(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outage.events_between(timestamptz, timestamptz) TO outage_reader, outage_writer;

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
