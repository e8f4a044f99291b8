package flowstore

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Rows go as native blocks through PrepareBatch with the column list named:
// against 18.16 an INSERT ... VALUES through Exec hangs, and PrepareBatch
// without columns fails.
const insertFlows = `INSERT INTO flows (namespace, capture, capture_uid, node, pod, interface, record_id,
 start_time, start_ns, end_time, end_ns, ip_version, protocol, orig_addr, orig_port, resp_addr, resp_port,
 orig_packets, orig_bytes, orig_payload_bytes, resp_packets, resp_bytes, resp_payload_bytes,
 orig_tcp_flags, resp_tcp_flags, history, conn_state, community_id, dns_query, dns_rcode, tls_sni, http_host,
 end_reason, first_seq, last_seq)`

const insertLedger = `INSERT INTO flow_batches (capture_uid, node, interface, stream_seq, floor_ns)`

func splitNs(ns int64) (time.Time, uint32) {
	return time.Unix(ns/1e9, 0).UTC(), uint32(ns % 1e9)
}

// insertRecords inserts records in one block.
func insertRecords(ctx context.Context, conn driver.Conn, recs []Record) error {
	b, err := conn.PrepareBatch(ctx, insertFlows)
	if err != nil {
		return fmt.Errorf("prepare flows insert: %w", err)
	}
	for i := range recs {
		r := &recs[i]
		st, sns := splitNs(r.Start)
		et, ens := splitNs(r.End)
		if err := b.Append(r.Namespace, r.Capture, r.CaptureUID, r.Node, r.Pod, r.Interface, r.RecordID,
			st, sns, et, ens, r.IPVersion, r.Proto, string(r.OrigAddr[:]), r.OrigPort, string(r.RespAddr[:]), r.RespPort,
			r.OrigPackets, r.OrigBytes, r.OrigPayload, r.RespPackets, r.RespBytes, r.RespPayload,
			r.OrigFlags, r.RespFlags, r.History, r.ConnState, r.CommunityID, r.DNSQuery, r.DNSRcode, r.TLSSNI, r.HTTPHost,
			r.EndReason, r.FirstSeq, r.LastSeq); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append flow record: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d flow records: %w", len(recs), err)
	}
	return nil
}

// ledgerRow says: every packet of batch Seq captured before Floor is in an
// inserted record.
type ledgerRow struct {
	Stream StreamKey
	Seq    uint64
	Floor  int64
}

func insertLedgerRows(ctx context.Context, conn driver.Conn, rows []ledgerRow) error {
	b, err := conn.PrepareBatch(ctx, insertLedger)
	if err != nil {
		return fmt.Errorf("prepare ledger insert: %w", err)
	}
	for _, r := range rows {
		if err := b.Append(r.Stream.CaptureUID, r.Stream.Node, r.Stream.Interface, r.Seq, uint64(r.Floor)); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append ledger row: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d ledger rows: %w", len(rows), err)
	}
	return nil
}

// ledgerFloor returns what the ledger knows of a batch: 0 when nothing.
func ledgerFloor(ctx context.Context, conn driver.Conn, k StreamKey, seq uint64) (int64, error) {
	var floor uint64
	row := conn.QueryRow(ctx, "SELECT max(floor_ns) FROM flow_batches WHERE capture_uid = ? AND node = ? AND interface = ? AND stream_seq = ?",
		k.CaptureUID, k.Node, k.Interface, seq)
	if err := row.Scan(&floor); err != nil {
		return 0, fmt.Errorf("read ledger of batch %d: %w", seq, err)
	}
	return int64(floor), nil
}
