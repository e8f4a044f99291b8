-- Flow records written by `capstream sink flows`: one row per bidirectional
-- flow per emission (active timeout, idle timeout, TCP close, capture stop).
-- Types are limited to what Debian's ClickHouse 18.16 and current servers
-- both accept: DateTime plus a nanosecond column instead of DateTime64,
-- FixedString(16) for addresses (IPv4 mapped into IPv6), no TTL or CODEC.
-- record_id is deterministic for a flow emission, so a redelivered batch
-- that re-emits a record produces the same row and ReplacingMergeTree
-- collapses it (queries that must not see a pending duplicate use FINAL).
CREATE TABLE IF NOT EXISTS flows (
    date Date DEFAULT toDate(start_time),
    namespace String,
    capture String,
    capture_uid String,
    node String,
    pod String,
    interface String,
    record_id UInt64,
    start_time DateTime,
    start_ns UInt32,
    end_time DateTime,
    end_ns UInt32,
    ip_version UInt8,
    protocol UInt8,
    orig_addr FixedString(16),
    orig_port UInt16,
    resp_addr FixedString(16),
    resp_port UInt16,
    orig_packets UInt64,
    orig_bytes UInt64,
    orig_payload_bytes UInt64,
    resp_packets UInt64,
    resp_bytes UInt64,
    resp_payload_bytes UInt64,
    orig_tcp_flags UInt8,
    resp_tcp_flags UInt8,
    history String,
    conn_state LowCardinality(String),
    community_id String,
    dns_query String,
    dns_rcode Int16,
    tls_sni String,
    http_host String,
    end_reason LowCardinality(String),
    first_seq UInt64,
    last_seq UInt64,
    inserted_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree()
PARTITION BY date
ORDER BY (namespace, capture, node, start_time, record_id);
