-- 001_schema.sql — the outage schema: stored events, lookups, settings, checkpoints,
-- rejects, the analyst view and functions, and the two group roles.
-- Applied by the daemon (store_migrate) in one transaction under an advisory lock, after
-- it has created schema "outage". The gap-dependent part (outage.padded_span and the
-- exclusion constraint) is installed by outage.install_gap() in that same transaction,
-- because the gap is only known to the daemon that migrates first.

CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE outage.schema_migrations (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
);

-- Lookups: the events table holds small integer keys (GiST on integers is about twice as
-- fast to maintain as on text); names are joined back in the view.
CREATE TABLE outage.controllers (
        id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE
);

CREATE TABLE outage.outage_types (
        id   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE
);

-- The daemon's table. Analysts read outage.events instead.
CREATE TABLE outage.stored_events (
        event_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        controller   integer NOT NULL REFERENCES outage.controllers (id),
        otype        integer NOT NULL REFERENCES outage.outage_types (id),
        start_time   timestamptz NOT NULL,
        end_time     timestamptz NOT NULL,
        report_count integer NOT NULL CHECK (report_count >= 0),
        updated_at   timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT stored_events_span CHECK (start_time <= end_time)
);

-- A controller's events in a time range (the merge uses it too: equality on the key,
-- range on end_time, start_time checked from the index tuple).
CREATE INDEX stored_events_key_end ON outage.stored_events
        (controller, otype, end_time) INCLUDE (start_time);

-- Overlap queries (events_between, downtime, warm start), alone or by outage type.
CREATE INDEX stored_events_type_span ON outage.stored_events
        USING gist (otype, tstzrange(start_time, end_time, '[]'));

-- One row: the gap in force (see install_gap).
CREATE TABLE outage.settings (
        gap          interval NOT NULL CHECK (gap > interval '0'),
        installed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX settings_one_row ON outage.settings ((true));

CREATE TABLE outage.checkpoints (
        instance   text PRIMARY KEY,
        seq        bigint NOT NULL,
        -- identifies the flush transaction that wrote the row: after a connection lost
        -- during COMMIT, the daemon reads it back to learn whether that flush landed
        flush_id   bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outage.rejects (
        received_at   timestamptz NOT NULL,
        topic         text NOT NULL,
        controller_id text,
        reason        text NOT NULL,
        payload       text NOT NULL
);
CREATE INDEX rejects_received_at ON outage.rejects (received_at);

-- Records the gap and installs what depends on it: outage.padded_span (the span padded by
-- the gap, IMMUTABLE because the gap is a literal in its body and the arithmetic is done on
-- UTC timestamps) and the exclusion constraint that makes two events of one key that
-- overlap, or are at most gap apart, impossible to store. Called once, by the first daemon
-- that migrates; docs/OPERATIONS.md describes how to change the gap afterwards.
CREATE FUNCTION outage.install_gap(new_gap interval) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
        body text;
BEGIN
        IF EXISTS (SELECT 1 FROM outage.settings) THEN
                RAISE EXCEPTION 'outage.settings already holds a gap'
                        USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        INSERT INTO outage.settings (gap) VALUES (new_gap);
        body := format('SELECT tstzrange(s, (e AT TIME ZONE %L + %L::interval) AT TIME ZONE %L, %L)',
                       'UTC', new_gap, 'UTC', '[]');
        EXECUTE format('CREATE FUNCTION outage.padded_span(s timestamptz, e timestamptz) '
                       'RETURNS tstzrange LANGUAGE sql IMMUTABLE PARALLEL SAFE AS %L', body);
        EXECUTE 'COMMENT ON FUNCTION outage.padded_span(timestamptz, timestamptz) IS '
                '''[s, e + gap]: an event''''s span padded by the gap in force (installed by outage.install_gap).''';
        EXECUTE 'REVOKE ALL ON FUNCTION outage.padded_span(timestamptz, timestamptz) FROM PUBLIC';
        EXECUTE 'GRANT EXECUTE ON FUNCTION outage.padded_span(timestamptz, timestamptz) TO outage_writer';
        EXECUTE 'ALTER TABLE outage.stored_events ADD CONSTRAINT stored_events_no_overlap '
                'EXCLUDE USING gist (controller WITH =, otype WITH =, '
                'outage.padded_span(start_time, end_time) WITH &&)';
END
$fn$;
REVOKE ALL ON FUNCTION outage.install_gap(interval) FROM PUBLIC;

-- The analyst view. status compares with the querying transaction's now().
CREATE VIEW outage.events AS
SELECT e.event_id,
       c.name AS controller_id,
       t.name AS outage_type,
       e.start_time,
       e.end_time,
       e.end_time - e.start_time AS duration,
       e.report_count,
       CASE WHEN e.end_time + (SELECT s.gap FROM outage.settings s) >= now()
            THEN 'open' ELSE 'closed' END AS status,
       e.updated_at
FROM outage.stored_events e
JOIN outage.controllers c ON c.id = e.controller
JOIN outage.outage_types t ON t.id = e.otype;

-- Single SELECT, STABLE, not STRICT: the planner inlines it, so a filter on outage_type
-- and the overlap test both reach stored_events_type_span. [start, end] overlaps
-- [from, to) exactly when start < to and end >= from; a null bound is unbounded, and a
-- window with to < from is empty.
CREATE FUNCTION outage.events_between("from" timestamptz, "to" timestamptz)
RETURNS SETOF outage.events
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
        SELECT ev.*
        FROM outage.events ev
        WHERE tstzrange(ev.start_time, ev.end_time, '[]')
              && tstzrange($1, CASE WHEN $2 < $1 THEN $1 ELSE $2 END, '[)')
$fn$;

CREATE FUNCTION outage.downtime("from" timestamptz, "to" timestamptz)
RETURNS TABLE (controller_id text, outage_type text, events bigint, downtime interval)
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
        SELECT ev.controller_id, ev.outage_type, count(*)::bigint,
               sum(LEAST(ev.end_time, COALESCE($2, ev.end_time))
                   - GREATEST(ev.start_time, COALESCE($1, ev.start_time)))
        FROM outage.events_between($1, $2) ev
        GROUP BY ev.controller_id, ev.outage_type
$fn$;

-- Roles are cluster-wide: create them only when missing (another database of the cluster,
-- or a concurrent migration of one, may have created them), grant in every database.
DO $roles$
BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outage_writer') THEN
                BEGIN
                        CREATE ROLE outage_writer NOLOGIN;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN
                        NULL;
                END;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outage_reader') THEN
                BEGIN
                        CREATE ROLE outage_reader NOLOGIN;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN
                        NULL;
                END;
        END IF;
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO outage_writer', current_database());
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO outage_reader', current_database());
END
$roles$;

GRANT USAGE ON SCHEMA outage TO outage_writer, outage_reader;

-- The writer: exactly what store.c does.
GRANT SELECT ON outage.schema_migrations, outage.settings TO outage_writer;
GRANT SELECT, INSERT ON outage.controllers, outage.outage_types TO outage_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON outage.stored_events TO outage_writer;
GRANT SELECT, INSERT, UPDATE ON outage.checkpoints TO outage_writer;
GRANT INSERT ON outage.rejects TO outage_writer;

-- The reader: the analyst objects only.
GRANT SELECT ON outage.events, outage.rejects, outage.settings TO outage_reader;
REVOKE ALL ON FUNCTION outage.events_between(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION outage.downtime(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION outage.events_between(timestamptz, timestamptz) TO outage_reader, outage_writer;
GRANT EXECUTE ON FUNCTION outage.downtime(timestamptz, timestamptz) TO outage_reader, outage_writer;

COMMENT ON SCHEMA outage IS 'Street-light outage events aggregated by outaged from MQTT reports.';

COMMENT ON VIEW outage.events IS 'One row per outage event: consecutive reports of one controller and outage type at most the gap in force (outage.settings) apart.';
COMMENT ON COLUMN outage.events.event_id IS 'Event identifier; when events merge, the smallest identifier survives.';
COMMENT ON COLUMN outage.events.controller_id IS 'Controller that reported (the topic level of outages/<controller_id>).';
COMMENT ON COLUMN outage.events.outage_type IS 'Kind of outage reported, e.g. panel_outage.';
COMMENT ON COLUMN outage.events.start_time IS 'Timestamp of the first report of the event.';
COMMENT ON COLUMN outage.events.end_time IS 'Timestamp of the last report of the event.';
COMMENT ON COLUMN outage.events.duration IS 'end_time - start_time (zero for a single report).';
COMMENT ON COLUMN outage.events.report_count IS 'Reports that created, extended or joined the event; duplicates and reports inside its span are not counted.';
COMMENT ON COLUMN outage.events.status IS 'open while end_time + gap >= now() (a further report could still extend it), else closed.';
COMMENT ON COLUMN outage.events.updated_at IS 'When the daemon last changed the event.';

COMMENT ON FUNCTION outage.events_between(timestamptz, timestamptz) IS 'Events (rows of outage.events) overlapping the half-open window [from, to); a null bound is unbounded. Filter on outage_type or controller_id in the calling query.';
COMMENT ON FUNCTION outage.downtime(timestamptz, timestamptz) IS 'Per controller and outage type with an event overlapping [from, to): the number of such events and their total time clipped to the window.';

COMMENT ON TABLE outage.rejects IS 'Reports the daemon rejected, one row per message or item, with the first reason that applied; re-publish after fixing.';
COMMENT ON COLUMN outage.rejects.received_at IS 'When the daemon received the message.';
COMMENT ON COLUMN outage.rejects.topic IS 'MQTT topic the message arrived on.';
COMMENT ON COLUMN outage.rejects.controller_id IS 'Controller id from the topic; null when it is not a valid id.';
COMMENT ON COLUMN outage.rejects.reason IS 'First failed check: bad_controller_id, payload_too_large, malformed_json, not_a_report, batch_too_large, missing_field, bad_field_type, bad_outage_type, unknown_outage_type, bad_timestamp, timestamp_out_of_range, controller_mismatch.';
COMMENT ON COLUMN outage.rejects.payload IS 'The message (or the rejected item as JSON), first 1 KiB; invalid UTF-8 and NUL bytes written as \xNN.';

COMMENT ON TABLE outage.settings IS 'One row: the gap in force, written by the first daemon that migrated this database. Changing it is a manual procedure (docs/OPERATIONS.md).';
COMMENT ON COLUMN outage.settings.gap IS 'Two consecutive reports at most this far apart belong to the same event.';
COMMENT ON COLUMN outage.settings.installed_at IS 'When the gap was recorded.';

COMMENT ON TABLE outage.schema_migrations IS 'Migrations applied by the daemon (sql/NNN_*.sql).';
COMMENT ON TABLE outage.checkpoints IS 'Journal position committed by each daemon instance together with its last flush.';
COMMENT ON TABLE outage.stored_events IS 'The daemon''s event table (integer keys); read outage.events instead.';
COMMENT ON TABLE outage.controllers IS 'Controller ids, keyed by integer for the events table.';
COMMENT ON TABLE outage.outage_types IS 'Outage types, keyed by integer for the events table.';
COMMENT ON FUNCTION outage.install_gap(interval) IS 'Records the gap and installs outage.padded_span and the exclusion constraint; called by the first daemon that migrates.';
