package flowstore

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// recordColumns are the flows columns a record fills, in Append order;
// flow_staging has the same columns plus flush_id.
const recordColumns = `namespace, capture, capture_uid, node, pod, interface, record_id,
 start_time, start_ns, end_time, end_ns, ip_version, protocol, orig_addr, orig_port, resp_addr, resp_port,
 orig_packets, orig_bytes, orig_payload_bytes, resp_packets, resp_bytes, resp_payload_bytes,
 orig_tcp_flags, resp_tcp_flags, history, conn_state, community_id, dns_query, dns_rcode, tls_sni, http_host,
 end_reason, first_seq, last_seq`

// Rows go as native blocks through PrepareBatch with the column list named:
// against 18.16 an INSERT ... VALUES through Exec hangs, and PrepareBatch
// without columns fails.
const (
	insertStaging = `INSERT INTO flow_staging (flush_id, ` + recordColumns + `)`
	insertCommits = `INSERT INTO flow_commits (capture_uid, node, interface, stream_seq, floor_ns, flush_id)`
	// publishFlush carries no data block, so Exec is safe on 18.16; the
	// flush ID is bound client side (18.16 has no server-side parameters).
	publishFlush = `INSERT INTO flows (` + recordColumns + `) SELECT ` + recordColumns + ` FROM flow_staging WHERE flush_id = ?`
)

func splitNs(ns int64) (time.Time, uint32) {
	return time.Unix(ns/1e9, 0).UTC(), uint32(ns % 1e9)
}

// stageRecords inserts records of flush id into flow_staging in one block.
// Nothing reads them until the flush is committed, so a sink that dies
// here leaves only unreachable rows.
func stageRecords(ctx context.Context, conn driver.Conn, id uint64, recs []Record) error {
	b, err := conn.PrepareBatch(ctx, insertStaging)
	if err != nil {
		return fmt.Errorf("prepare staging insert of flush %x: %w", id, err)
	}
	for i := range recs {
		r := &recs[i]
		st, sns := splitNs(r.Start)
		et, ens := splitNs(r.End)
		if err := b.Append(id, r.Namespace, r.Capture, r.CaptureUID, r.Node, r.Pod, r.Interface, r.RecordID,
			st, sns, et, ens, r.IPVersion, r.Proto, string(r.OrigAddr[:]), r.OrigPort, string(r.RespAddr[:]), r.RespPort,
			r.OrigPackets, r.OrigBytes, r.OrigPayload, r.RespPackets, r.RespBytes, r.RespPayload,
			r.OrigFlags, r.RespFlags, r.History, r.ConnState, r.CommunityID, r.DNSQuery, r.DNSRcode, r.TLSSNI, r.HTTPHost,
			r.EndReason, r.FirstSeq, r.LastSeq); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append flow record of flush %x: %w", id, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("stage %d flow records of flush %x: %w", len(recs), id, err)
	}
	return nil
}

// publish copies a committed flush from flow_staging into flows. Running
// it again re-inserts identical rows (same sort key), which
// ReplacingMergeTree collapses, so recovery may repeat it freely.
func publish(ctx context.Context, conn driver.Conn, id uint64) error {
	if err := conn.Exec(ctx, publishFlush, id); err != nil {
		return fmt.Errorf("publish flush %x: %w", id, err)
	}
	return nil
}

// ledgerRow says: every packet of batch Seq captured before Floor is in
// flush FlushID (0: none) or in an earlier committed flush.
type ledgerRow struct {
	Stream  StreamKey
	Seq     uint64
	Floor   int64
	FlushID uint64
}

// insertCommitRows writes the rows in one block: the block is what commits
// a flush, and a block reaches the table whole or not at all.
func insertCommitRows(ctx context.Context, conn driver.Conn, rows []ledgerRow) error {
	b, err := conn.PrepareBatch(ctx, insertCommits)
	if err != nil {
		return fmt.Errorf("prepare commit insert: %w", err)
	}
	for _, r := range rows {
		if err := b.Append(r.Stream.CaptureUID, r.Stream.Node, r.Stream.Interface, r.Seq, uint64(r.Floor), r.FlushID); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append commit row: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d commit rows: %w", len(rows), err)
	}
	return nil
}

// legacyFloor returns what flow_batches (written by sinks before migration
// 004, after their records) knows of a batch: 0 when nothing.
func legacyFloor(ctx context.Context, conn driver.Conn, k StreamKey, seq uint64) (int64, error) {
	var floor uint64
	row := conn.QueryRow(ctx, "SELECT max(floor_ns) FROM flow_batches WHERE capture_uid = ? AND node = ? AND interface = ? AND stream_seq = ?",
		k.CaptureUID, k.Node, k.Interface, seq)
	if err := row.Scan(&floor); err != nil {
		return 0, fmt.Errorf("read ledger of batch %d: %w", seq, err)
	}
	return int64(floor), nil
}

// commitRows returns the flow_commits rows of a batch.
func commitRows(ctx context.Context, conn driver.Conn, k StreamKey, seq uint64) ([]ledgerRow, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT floor_ns, flush_id FROM flow_commits WHERE capture_uid = ? AND node = ? AND interface = ? AND stream_seq = ?",
		k.CaptureUID, k.Node, k.Interface, seq)
	if err != nil {
		return nil, fmt.Errorf("read commits of batch %d: %w", seq, err)
	}
	defer rows.Close()
	var out []ledgerRow
	for rows.Next() {
		var floor, id uint64
		if err := rows.Scan(&floor, &id); err != nil {
			return nil, fmt.Errorf("read commits of batch %d: %w", seq, err)
		}
		out = append(out, ledgerRow{Stream: k, Seq: seq, Floor: int64(floor), FlushID: id})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read commits of batch %d: %w", seq, err)
	}
	return out, nil
}
