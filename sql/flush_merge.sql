-- flush_merge.sql — the set-based merge of one flush (SPEC section 3). Not a migration: the
-- daemon (store.c) runs this file as written, as one multi-statement query, inside the
-- flush transaction after it has copied the batch into pg_temp.outaged_frag.
--
-- Expects:
--   * schema outage at the current migration, with the gap in outage.settings;
--   * an open transaction (every statement here must commit or roll back together);
--   * the temporary tables of sql/flush_tables.sql: pg_temp.outaged_frag holding the batch
--     (fid, ctrl, otype, s, e, cnt, unc: one row per fragment, any order, keys may repeat)
--     and pg_temp.outaged_plan empty.
-- No parameters. Leaves the plan (one row per resulting event) in pg_temp.outaged_plan, and
-- returns one row: complete (boolean, see the last statement).
--
-- Each fragment is merged with every stored event of its key within the gap: the union of
-- the spans, counts added; a fragment inside one stored event adds nothing; each uncertain
-- timestamp counts only when no stored event contains it. The gap is added in UTC
-- (outage.utc_add), as the exclusion constraint does: the result does not depend on the
-- session's time zone, even for a gap in days across a daylight saving time change.
--
-- By hand, in psql (prefix EXPLAIN or EXPLAIN ANALYZE to any statement to see its plan):
--   BEGIN;
--   \i sql/flush_tables.sql
--   INSERT INTO pg_temp.outaged_frag VALUES
--           (0, 'ctrl_1', 'panel_outage', '2026-11-27 10:00Z', '2026-11-27 10:20Z', 3, NULL);
--   \i sql/flush_merge.sql
--   TABLE pg_temp.outaged_plan;
--   ROLLBACK;

-- Every join below is "for each row of the batch, probe the big table by index"; the
-- planner, costing random I/O at 4x and unaware that the batch is small next to the table,
-- otherwise picks hash joins over full scans of stored_events (measured: 10x slower at 10k
-- fragments against 1M events). JIT compilation, triggered by those high estimates, costs
-- more than the whole merge. The settings end with the transaction.
SET LOCAL jit = off;
SET LOCAL enable_hashjoin = off;
SET LOCAL enable_mergejoin = off;

-- Temporary tables are never analysed automatically.
ANALYZE pg_temp.outaged_frag;

-- 1. The stripe locks of the batch's keys (1024 stripes of class 1869968481, "outa"), in
-- sorted order, so two flushes never deadlock; concurrent writers of one key serialise
-- here. One lock per key would exhaust max_locks_per_transaction on large batches.
SELECT count(pg_advisory_xact_lock(1869968481, h))
FROM (SELECT DISTINCT hashtext(ctrl || '/' || otype) & 1023 AS h
      FROM pg_temp.outaged_frag
      ORDER BY 1) l;

-- 2. Missing lookup names, in name order. NOT EXISTS first: ON CONFLICT alone would burn an
-- identity value per existing name.
INSERT INTO outage.controllers (name)
SELECT DISTINCT f.ctrl
FROM pg_temp.outaged_frag f
WHERE NOT EXISTS (SELECT 1 FROM outage.controllers c WHERE c.name = f.ctrl)
ORDER BY 1
ON CONFLICT (name) DO NOTHING;

INSERT INTO outage.outage_types (name)
SELECT DISTINCT f.otype
FROM pg_temp.outaged_frag f
WHERE NOT EXISTS (SELECT 1 FROM outage.outage_types t WHERE t.name = f.otype)
ORDER BY 1
ON CONFLICT (name) DO NOTHING;

-- 3. The plan.
--   cand:    the stored events of a fragment's key within gap of it (the box test reaches
--            the exclusion index; the end_time bound the btree when the constraint is
--            absent).
--   contrib: what each fragment adds to report_count: nothing when one stored event
--            contains it, else its count plus its uncertain timestamps that no stored event
--            contains (only one stored event of a key can contain a point or a span: the
--            first that ends at or after it).
--   marked, isl: fragments and candidates of one key, sorted by start, split into islands
--            where a start is more than gap after every earlier end: each island is one
--            event, keeping the smallest event_id of its stored events.
--   kind:    what the flush does to the island's event: created (no stored event), merged
--            (two or more), extended (its span or count grows), or null (nothing).
INSERT INTO pg_temp.outaged_plan (c, t, keep, ids, s, e, cnt, kind)
WITH g AS MATERIALIZED (SELECT gap FROM outage.settings),
fk AS MATERIALIZED (
        SELECT f.fid, c.id AS c, t.id AS t, f.s, f.e, f.cnt, f.unc
        FROM pg_temp.outaged_frag f
        JOIN outage.controllers c ON c.name = f.ctrl
        JOIN outage.outage_types t ON t.name = f.otype),
cand AS (
        SELECT DISTINCT ev.event_id, ev.controller AS c, ev.otype AS t,
               ev.start_time AS s, ev.end_time AS e, ev.report_count AS cnt
        FROM fk
        JOIN outage.stored_events ev
          ON ev.controller = fk.c AND ev.otype = fk.t
         AND outage.event_box(ev.controller, ev.otype, ev.start_time, ev.end_time)
             && outage.event_box(fk.c, fk.t, fk.s, fk.e)
         AND ev.end_time >= outage.utc_add(fk.s, -(SELECT gap FROM g))
         AND ev.start_time <= outage.utc_add(fk.e, (SELECT gap FROM g))),
contrib AS (
        SELECT fk.fid, fk.c, fk.t, fk.s, fk.e,
               CASE WHEN COALESCE((SELECT ev.start_time <= fk.s
                                   FROM outage.stored_events ev
                                   WHERE ev.controller = fk.c AND ev.otype = fk.t AND ev.end_time >= fk.e
                                   ORDER BY ev.end_time LIMIT 1), false)
                    THEN 0
                    ELSE fk.cnt + (SELECT count(*)
                                   FROM unnest(fk.unc) u(ts)
                                   WHERE NOT COALESCE((SELECT ev.start_time <= u.ts
                                                       FROM outage.stored_events ev
                                                       WHERE ev.controller = fk.c AND ev.otype = fk.t
                                                         AND ev.end_time >= u.ts
                                                       ORDER BY ev.end_time LIMIT 1), false))
               END AS add
        FROM fk),
items AS (
        SELECT c, t, s, e, NULL::bigint AS event_id, fid, add::bigint AS cnt FROM contrib
        UNION ALL
        SELECT c, t, s, e, event_id, NULL::integer, cnt::bigint FROM cand),
marked AS (
        SELECT *, CASE WHEN s > outage.utc_add(max(e) OVER w, (SELECT gap FROM g)) THEN 1 ELSE 0 END AS b
        FROM items
        WINDOW w AS (PARTITION BY c, t ORDER BY s, e, event_id, fid
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
isl AS (
        SELECT *, sum(b) OVER (PARTITION BY c, t ORDER BY s, e, event_id, fid ROWS UNBOUNDED PRECEDING) AS n
        FROM marked)
SELECT c, t, min(event_id),
       array_agg(event_id ORDER BY event_id) FILTER (WHERE event_id IS NOT NULL),
       min(s), max(e), sum(cnt)::bigint,
       CASE WHEN count(event_id) = 0 THEN 'created'
            WHEN count(event_id) > 1 THEN 'merged'
            WHEN min(s) < min(s) FILTER (WHERE event_id IS NOT NULL)
              OR max(e) > max(e) FILTER (WHERE event_id IS NOT NULL)
              OR sum(cnt) FILTER (WHERE event_id IS NULL) > 0 THEN 'extended'
       END
FROM isl
GROUP BY c, t, n;

ANALYZE pg_temp.outaged_plan;

-- 4. Apply: delete the merged-away events before updating the kept ones (the exclusion
-- constraint is checked row by row), insert the islands that had no stored event (apart
-- from every other island by more than the gap: the order does not matter), update the
-- kept events that change.
DELETE FROM outage.stored_events ev
USING (SELECT unnest(ids[2:]) AS id FROM pg_temp.outaged_plan WHERE cardinality(ids) > 1) d
WHERE ev.event_id = d.id;

INSERT INTO outage.stored_events (controller, otype, start_time, end_time, report_count)
SELECT c, t, s, e, cnt
FROM pg_temp.outaged_plan
WHERE keep IS NULL
ORDER BY c, t, s;

-- The stripe locks keep other flushes away from these events, but not outage.prune or an
-- operator: a kept event deleted since the plan was computed is not updated, and its
-- island would be lost. So the last statement returns whether every kept event that
-- changes was updated (complete = false: roll back and run the flush again).
WITH upd AS (
        UPDATE outage.stored_events ev
        SET start_time = p.s, end_time = p.e, report_count = p.cnt, updated_at = now()
        FROM pg_temp.outaged_plan p
        WHERE ev.event_id = p.keep
          AND (ev.start_time, ev.end_time, ev.report_count) IS DISTINCT FROM (p.s, p.e, p.cnt)
        RETURNING 1)
SELECT (SELECT count(*) FROM upd)
       = (SELECT count(*) FROM pg_temp.outaged_plan WHERE keep IS NOT NULL AND kind IS NOT NULL)
       AS complete;
