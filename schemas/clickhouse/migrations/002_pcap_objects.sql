-- One row per completed pcap object written by `capstream sink pcap`. The
-- row is written only after the object is complete, so every key here can
-- be downloaded. first_seq is part of the object key, so a re-completed
-- object after a crash has the same key and the same row.
CREATE TABLE IF NOT EXISTS pcap_objects (
    date Date DEFAULT toDate(first_time),
    namespace String,
    capture String,
    capture_uid String,
    node String,
    pod String,
    interface String,
    bucket String,
    key String,
    size UInt64,
    packets UInt64,
    first_time DateTime,
    first_ns UInt32,
    last_time DateTime,
    last_ns UInt32,
    first_seq UInt64,
    last_seq UInt64,
    link_type UInt32,
    sha256 String,
    completed_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY (namespace, capture, node, first_time, key);
