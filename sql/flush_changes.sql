-- flush_changes.sql — the events a flush created or changed, as they are after
-- sql/flush_merge.sql, and their NOTIFY (SPEC section 2, live events). Not a migration:
-- store.c runs it in the flush transaction right after the merge, and only when the caller
-- asked for the events or for a channel.
--
-- Expects pg_temp.outaged_plan as flush_merge.sql leaves it. One parameter:
--   $1 text: the NOTIFY channel, or null for none. For every created or merged event (not
--   for a plain extension) the transaction notifies $1 with the JSON of SPEC section 2,
--   compact, keys in the SPEC's order, times in RFC 3339 UTC (YYYY-MM-DDTHH:MM:SS[.ffffff]Z)
--   and status as outage.events computes it (open, unless a late report created or merged
--   an event that is closed already). A payload of 8000 bytes or more (PostgreSQL's limit;
--   only names of kilobytes could reach it) is not sent.
-- Returns one row per created or changed event, in key and time order: event_id,
-- controller_id, outage_type, start_us, end_us (microseconds since the epoch),
-- report_count, latest (no event of the key ends later), kind (created, merged,
-- extended), notified.
--
-- By hand in psql, after running flush_merge.sql in the same transaction:
--   PREPARE changes(text) AS <the statement below>;
--   EXECUTE changes(NULL);
SELECT ev.event_id,
       c.name AS controller_id,
       t.name AS outage_type,
       (extract(epoch FROM ev.start_time) * 1000000)::bigint AS start_us,
       (extract(epoch FROM ev.end_time) * 1000000)::bigint AS end_us,
       ev.report_count,
       NOT EXISTS (SELECT 1 FROM outage.stored_events x
                   WHERE x.controller = p.c AND x.otype = p.t AND x.end_time > ev.end_time) AS latest,
       p.kind,
       CASE WHEN $1::text IS NOT NULL AND p.kind IN ('created', 'merged') AND octet_length(j.payload) < 8000
            THEN pg_notify($1, j.payload)::text IS NOT NULL
            ELSE false END AS notified
FROM pg_temp.outaged_plan p
JOIN outage.stored_events ev ON ev.controller = p.c AND ev.otype = p.t AND ev.end_time = p.e
JOIN outage.controllers c ON c.id = p.c
JOIN outage.outage_types t ON t.id = p.t
CROSS JOIN LATERAL (
        SELECT format('{"event_id":%s,"controller_id":%s,"outage_type":%s,"start_time":"%s",'
                      '"end_time":"%s","report_count":%s,"status":"%s"}',
                      ev.event_id, to_json(c.name), to_json(t.name),
                      to_char(ev.start_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                      || CASE WHEN to_char(ev.start_time AT TIME ZONE 'UTC', 'US') <> '000000'
                              THEN to_char(ev.start_time AT TIME ZONE 'UTC', '.US') ELSE '' END || 'Z',
                      to_char(ev.end_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                      || CASE WHEN to_char(ev.end_time AT TIME ZONE 'UTC', 'US') <> '000000'
                              THEN to_char(ev.end_time AT TIME ZONE 'UTC', '.US') ELSE '' END || 'Z',
                      ev.report_count,
                      CASE WHEN outage.utc_add(ev.end_time, (SELECT s.gap FROM outage.settings s)) >= now()
                           THEN 'open' ELSE 'closed' END) AS payload) j
WHERE p.kind IS NOT NULL
ORDER BY c.name, t.name, ev.start_time;
