-- flush_rejects.sql — the rejects of one flush, from pg_temp.outaged_reject (sql/flush_tables.sql)
-- into outage.stored_rejects, in batch order. Not a migration: store.c runs it inside the
-- flush transaction after copying the rejects. No parameters.
-- A reject whose source (instance, journal record, item) is stored already is the same
-- reject inserted again by a journal replay: skipped. Rows without a source never conflict.
INSERT INTO outage.stored_rejects (received_at, topic, controller_id, reason, detail, payload,
                                   src_instance, src_seq, src_item)
SELECT received_at, topic, controller_id, reason, detail, payload, src_instance, src_seq, src_item
FROM pg_temp.outaged_reject
ORDER BY n
ON CONFLICT (src_instance, src_seq, src_item) DO NOTHING;
