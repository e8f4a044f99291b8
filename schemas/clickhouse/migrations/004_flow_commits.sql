-- Crash-safe flushes of `capstream sink flows`. Writing flow records and
-- then, in a second insert, the flow_batches ledger left a window: a sink
-- that died between the two had its batches re-aggregated and their
-- records counted twice. A flush is now a small redo log:
--  1. its records go into flow_staging, tagged with a random flush_id
--     (any number of inserts; nothing reads a flush that is not committed);
--  2. one block of flow_commits rows commits it, one row per held packet
--     batch whose covered time moved: "every packet of stream sequence
--     stream_seq captured before floor_ns is in flush flush_id (0: none)
--     or in an earlier committed flush";
--  3. the flush is published into flows by INSERT ... SELECT from
--     flow_staging, and only then are batches acked.
-- A batch redelivered after a crash finds its commit rows, publishes their
-- flushes again (identical rows, which ReplacingMergeTree collapses) and is
-- aggregated without the covered packets. flow_batches rows written by
-- older sinks stay valid and are still read. Rows of both tables are
-- useless once the packets stream's MaxAge has passed; drop old partitions
-- by day.

-- flow_staging holds exactly the columns published into flows (from 001,
-- by the column directive the migration runner expands), under a flush ID.
CREATE TABLE IF NOT EXISTS flow_staging (
    date Date DEFAULT toDate(staged_at),
    flush_id UInt64,
    -- capstream:columns flows namespace..last_seq
    staged_at DateTime DEFAULT now()
) ENGINE = MergeTree()
PARTITION BY date
ORDER BY flush_id;

-- flow_commits is flow_batches (003) with the flush that covers each row.
CREATE TABLE IF NOT EXISTS flow_commits (
    date Date DEFAULT toDate(inserted_at),
    -- capstream:columns flow_batches capture_uid..floor_ns
    flush_id UInt64,
    inserted_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY (capture_uid, node, interface, stream_seq, floor_ns, flush_id);
