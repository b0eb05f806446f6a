-- flush_tables.sql — the staging tables of a flush (store.c, once per connection). Not a
-- migration: temporary tables, private to the session, emptied at every commit and gone
-- with the connection. sql/flush_merge.sql documents how they are used.

-- The batch: one row per fragment (a key's reports merged in memory since the last flush).
CREATE TEMP TABLE IF NOT EXISTS outaged_frag (
        fid   integer,          -- position in the batch
        ctrl  text,             -- controller id
        otype text,             -- outage type
        s     timestamptz,      -- first report of the fragment
        e     timestamptz,      -- last report (s <= e)
        cnt   integer,          -- reports counted for sure (delta since the last flush)
        unc   timestamptz[]     -- uncertain reports: counted when no stored event holds them
) ON COMMIT DELETE ROWS;

-- The merge plan: one row per island (an event after the merge), see flush_merge.sql.
CREATE TEMP TABLE IF NOT EXISTS outaged_plan (
        c    integer,           -- outage.controllers.id
        t    integer,           -- outage.outage_types.id
        keep bigint,            -- the stored event that becomes the island (null: a new one)
        ids  bigint[],          -- every stored event of the island, keep first
        s    timestamptz,       -- the island's span
        e    timestamptz,
        cnt  bigint,            -- its report_count
        kind text               -- created, merged, extended, or null: unchanged
) ON COMMIT DELETE ROWS;

-- The rejects of the batch, inserted into outage.stored_rejects by flush_rejects.sql.
CREATE TEMP TABLE IF NOT EXISTS outaged_reject (
        n             integer,  -- position in the batch: reject_id follows it
        received_at   timestamptz,
        topic         text,
        controller_id text,
        reason        text,
        detail        text,
        payload       text,
        src_instance  text,     -- the idempotency key (null: none)
        src_seq       bigint,
        src_item      integer
) ON COMMIT DELETE ROWS;
