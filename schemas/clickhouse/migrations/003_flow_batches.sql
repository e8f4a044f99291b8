-- Replay ledger of `capstream sink flows`: after inserting flow records the
-- sink notes, per packet batch (stream sequence of CAPSTREAM_PACKETS), the
-- capture time before which every packet of that batch is in an inserted
-- record, and only then acks the batch. A batch redelivered after a crash is
-- aggregated without the packets the ledger covers, so no packet is counted
-- in two records. Rows older than the packets stream's MaxAge are useless
-- (the batch can no longer be redelivered); drop old partitions by day.
CREATE TABLE IF NOT EXISTS flow_batches (
    date Date DEFAULT toDate(inserted_at),
    capture_uid String,
    node String,
    interface String,
    stream_seq UInt64,
    floor_ns UInt64,
    inserted_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY (capture_uid, node, interface, stream_seq, floor_ns);
