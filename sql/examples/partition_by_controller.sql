-- partition_by_controller.sql — converts outage.stored_events into N hash partitions of the
-- controller, keeping every column, constraint, index, privilege and comment, the event
-- identifiers and their sequence, and the views and functions built on the table.
-- Not a migration: the daemon never runs it. An example for sites that keep years of events;
-- docs/partitioning.md says when it helps, what it costs, and how the gap is changed after it.
--
-- A maintenance window procedure:
--   1. stop every daemon writing to the database (systemctl stop outaged on each host);
--   2. take a backup;
--   3. as the role that owns outage.stored_events (the one the daemon migrates with):
--        psql -X -v partitions=8 -f partition_by_controller.sql "dbname=outages"
--      (partitions: 2 to 1024, default 8);
--   4. start the daemons.
-- One transaction, holding the table exclusively (analysts' queries wait): on any error
-- nothing changes. Moving the rows takes about as long as a bulk load of the table and
-- needs as much free disk again. Refuses a table that is partitioned already, or that
-- carries what it does not know how to move (triggers, rules, policies, column privileges).
--
-- Why the controller: the exclusion constraint (no two events of one key that overlap or are
-- at most gap apart) compares only rows of one controller (the key is the y of its boxes),
-- so every pair it must check lives in one hash partition, and one constraint per partition
-- enforces it for the whole table. Partitions by
-- time could not carry it: two events of one key on either side of a boundary would escape.
--
-- What changes: the primary key becomes (event_id, controller) (a partitioned table's unique
-- constraints must contain the partition key); event_id stays unique because only the
-- identity generates it. outage.events, outage.events_between, outage.downtime and the
-- daemon's statements read the partitioned table by name as before.

\set ON_ERROR_STOP on
\if :{?partitions}
\else
\set partitions 8
\endif

BEGIN;

-- The daemons' migration lock: no daemon migrates (or starts) meanwhile.
SELECT pg_advisory_xact_lock(7959953402720174081);
LOCK TABLE outage.stored_events IN ACCESS EXCLUSIVE MODE;
-- Every name below printed and read fully qualified.
SET LOCAL search_path = pg_catalog;

CREATE FUNCTION pg_temp.partition_stored_events(n integer) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
        old constant regclass := 'outage.stored_events';
        pre_17 constant boolean := current_setting('server_version_num')::integer < 170000;
        t record;
        seq_old text;
        seq_new text;
        last bigint;
        called boolean;
        moved bigint;
        kept bigint;
BEGIN
        IF n IS NULL OR n < 2 OR n > 1024 THEN
                RAISE EXCEPTION 'partitions must be 2 to 1024, not %', n;
        END IF;
        SELECT c.relkind, c.relowner, c.relacl, c.reloptions,
               obj_description(c.oid, 'pg_class') AS comment
        INTO t FROM pg_class c WHERE c.oid = old;
        IF t.relkind <> 'r' THEN
                RAISE EXCEPTION 'outage.stored_events is not a plain table (relkind %): partitioned already?', t.relkind;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = old AND NOT tgisinternal)
           OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = old)
           OR EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = old)
           OR EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = old AND attacl IS NOT NULL)
           OR EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = old AND contype NOT IN ('c', 'f', 'n', 'p', 'u', 'x')) THEN
                RAISE EXCEPTION 'outage.stored_events has triggers, rules, policies, column privileges or constraints this script does not move';
        END IF;

        -- What must be built again on the new table, read before anything is renamed.
        CREATE TEMP TABLE pe_views ON COMMIT DROP AS
        SELECT DISTINCT r.ev_class::regclass AS view, pg_get_viewdef(r.ev_class) AS def
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjid = old AND r.ev_class <> old;
        CREATE TEMP TABLE pe_functions ON COMMIT DROP AS
        SELECT DISTINCT pg_get_functiondef(d.objid) AS def
        FROM pg_depend d
        WHERE d.classid = 'pg_proc'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = old;
        CREATE TEMP TABLE pe_indexes ON COMMIT DROP AS
        SELECT pg_get_indexdef(i.indexrelid) AS def, i.indexrelid::regclass::text AS name,
               obj_description(i.indexrelid, 'pg_class') AS comment
        FROM pg_index i
        WHERE i.indrelid = old
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = old AND k.conindid = i.indexrelid);
        CREATE TEMP TABLE pe_constraints ON COMMIT DROP AS
        SELECT k.conname, k.contype, pg_get_constraintdef(k.oid) AS def,
               obj_description(k.oid, 'pg_constraint') AS comment,
               (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY x.n)
                FROM unnest(k.conkey) WITH ORDINALITY x(attnum, n)
                JOIN pg_attribute a ON a.attrelid = old AND a.attnum = x.attnum) AS cols,
               'controller' = ANY (SELECT a.attname FROM pg_attribute a
                                   WHERE a.attrelid = old AND a.attnum = ANY (k.conkey)) AS has_key,
               -- outage.event_box's y is the key: rows it compares have one controller
               pg_get_constraintdef(k.oid) LIKE '%outage.event_box(controller, %' AS box_key
        FROM pg_constraint k
        WHERE k.conrelid = old AND k.contype IN ('f', 'p', 'u', 'x');
        seq_old := pg_get_serial_sequence('outage.stored_events', 'event_id');
        EXECUTE format('SELECT last_value, is_called FROM %s', seq_old) INTO last, called;

        -- Out of the way: the old table, its indexes (and so the constraints behind them), its
        -- identity sequence.
        ALTER TABLE outage.stored_events RENAME TO stored_events_old;
        FOR t IN SELECT i.indexrelid::regclass AS idx, c.relname FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = old LOOP
                EXECUTE format('ALTER INDEX %s RENAME TO %I', t.idx, t.relname || '_old');
        END LOOP;
        EXECUTE format('ALTER SEQUENCE %s RENAME TO %I', seq_old, 'stored_events_event_id_seq_old');

        -- The partitioned table: the same columns, defaults, identity, checks and comments.
        CREATE TABLE outage.stored_events (LIKE outage.stored_events_old
                INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING GENERATED
                INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS)
        PARTITION BY HASH (controller);
        FOR i IN 0 .. n - 1 LOOP
                EXECUTE format('CREATE TABLE outage.%I PARTITION OF outage.stored_events '
                               'FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
                               'stored_events_p' || i, n, i);
                IF (SELECT reloptions FROM pg_class WHERE oid = old) IS NOT NULL THEN
                        EXECUTE format('ALTER TABLE outage.%I SET (%s)', 'stored_events_p' || i,
                                       (SELECT array_to_string(reloptions, ', ') FROM pg_class WHERE oid = old));
                END IF;
        END LOOP;

        -- The rows, with their identifiers; indexes and constraints are built afterwards (one
        -- bulk build each, faster than maintaining them row by row).
        INSERT INTO outage.stored_events OVERRIDING SYSTEM VALUE
        SELECT * FROM outage.stored_events_old;
        GET DIAGNOSTICS moved = ROW_COUNT;
        SELECT count(*) INTO kept FROM outage.stored_events_old;
        IF moved <> kept THEN
                RAISE EXCEPTION 'moved % rows of %', moved, kept;
        END IF;
        seq_new := pg_get_serial_sequence('outage.stored_events', 'event_id');
        PERFORM setval(seq_new, last, called);

        FOR t IN SELECT * FROM pe_constraints ORDER BY contype DESC, conname LOOP
                IF t.contype IN ('p', 'u') THEN
                        -- A unique constraint of a partitioned table contains the partition key.
                        EXECUTE format('ALTER TABLE outage.stored_events ADD CONSTRAINT %I %s (%s)',
                                       t.conname, CASE t.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,
                                       t.cols || CASE WHEN t.has_key THEN '' ELSE ', controller' END);
                ELSIF t.contype = 'x' AND (pre_17 OR NOT t.has_key) THEN
                        -- One per partition: the constraint compares controller with = (or
                        -- through the key of its boxes), so no pair of rows it must check lies
                        -- in two partitions. PostgreSQL 17 takes one on the partitioned table
                        -- only when it names controller WITH =.
                        IF NOT (t.has_key OR t.box_key) THEN
                                RAISE EXCEPTION 'exclusion constraint % does not compare controller', t.conname;
                        END IF;
                        FOR i IN 0 .. n - 1 LOOP
                                EXECUTE format('ALTER TABLE outage.%I ADD CONSTRAINT %I %s',
                                               'stored_events_p' || i,
                                               'stored_events_p' || i || '_' || regexp_replace(t.conname, '^stored_events_', ''),
                                               t.def);
                        END LOOP;
                ELSE
                        EXECUTE format('ALTER TABLE outage.stored_events ADD CONSTRAINT %I %s', t.conname, t.def);
                END IF;
                IF t.comment IS NOT NULL AND (t.contype <> 'x' OR NOT (pre_17 OR NOT t.has_key)) THEN
                        EXECUTE format('COMMENT ON CONSTRAINT %I ON outage.stored_events IS %L', t.conname, t.comment);
                END IF;
        END LOOP;
        FOR t IN SELECT * FROM pe_indexes ORDER BY name LOOP
                EXECUTE t.def;
                IF t.comment IS NOT NULL THEN
                        EXECUTE format('COMMENT ON INDEX %s IS %L', t.name, t.comment);
                END IF;
        END LOOP;

        -- Owner, privileges and comment of the old table.
        SELECT c.relowner, c.relacl, obj_description(c.oid, 'pg_class') AS comment
        INTO t FROM pg_class c WHERE c.oid = old;
        EXECUTE format('ALTER TABLE outage.stored_events OWNER TO %I', pg_get_userbyid(t.relowner));
        FOR i IN 0 .. n - 1 LOOP
                EXECUTE format('ALTER TABLE outage.%I OWNER TO %I', 'stored_events_p' || i, pg_get_userbyid(t.relowner));
        END LOOP;
        IF t.comment IS NOT NULL THEN
                EXECUTE format('COMMENT ON TABLE outage.stored_events IS %L', t.comment);
        END IF;
        EXECUTE 'REVOKE ALL ON outage.stored_events FROM PUBLIC';
        FOR t IN SELECT a.grantee, a.privilege_type, a.is_grantable
                 FROM pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid = old AND a.grantee <> c.relowner LOOP
                EXECUTE format('GRANT %s ON outage.stored_events TO %s%s', t.privilege_type,
                               CASE WHEN t.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(t.grantee)) END,
                               CASE WHEN t.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;

        -- Views and functions bound to the old table now read the new one (CREATE OR REPLACE
        -- keeps their privileges, comments and dependents).
        FOR t IN SELECT * FROM pe_views LOOP
                EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', t.view, t.def);
        END LOOP;
        FOR t IN SELECT * FROM pe_functions LOOP
                EXECUTE t.def;
        END LOOP;

        -- Fails, and so undoes everything, if anything still depends on the old table.
        DROP TABLE outage.stored_events_old;
        RETURN format('outage.stored_events: %s rows in %s hash partitions of controller', moved, n);
END
$fn$;

SELECT pg_temp.partition_stored_events(:partitions) AS done;
ANALYZE outage.stored_events;
COMMIT;
