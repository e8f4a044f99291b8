package clickhouse_test

import (
	"net"
	"testing"
	"time"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas/clickhouse"
	"github.com/google/go-cmp/cmp"
)

func TestMigrationsRunTwice(t *testing.T) {
	db := testenv.ClickHouse(t)
	ms, err := clickhouse.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for round := 1; round <= 2; round++ {
			for i, stmt := range m.Statements {
				if err := db.Conn.Exec(t.Context(), stmt); err != nil {
					t.Fatalf("migration %03d_%s statement %d, round %d: %v", m.Version, m.Name, i+1, round, err)
				}
			}
		}
	}
}

func TestMigrateIsIdempotentAndRecorded(t *testing.T) {
	db := testenv.ClickHouse(t)
	ms, err := clickhouse.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var all []int
	for _, m := range ms {
		all = append(all, m.Version)
	}
	applied, err := clickhouse.Migrate(t.Context(), db.Conn)
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	if diff := cmp.Diff(all, applied); diff != "" {
		t.Errorf("first migrate applied (-want +got):\n%s", diff)
	}
	applied, err = clickhouse.Migrate(t.Context(), db.Conn)
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(applied) != 0 {
		t.Errorf("second migrate applied %v, want none", applied)
	}
	done, err := clickhouse.Applied(t.Context(), db.Conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range all {
		if !done[v] {
			t.Errorf("version %d not recorded in %s", v, clickhouse.MigrationsTable)
		}
	}
}

// TestMigrateFromEachOlderState applies the first k migrations by hand and
// checks Migrate brings the database to the full schema from there.
func TestMigrateFromEachOlderState(t *testing.T) {
	ms, err := clickhouse.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < len(ms); k++ {
		t.Run(ms[k].Name, func(t *testing.T) {
			db := testenv.ClickHouse(t)
			if _, err := clickhouse.Applied(t.Context(), db.Conn); err != nil {
				t.Fatal(err)
			}
			for _, m := range ms[:k] {
				if err := clickhouse.Apply(t.Context(), db.Conn, m); err != nil {
					t.Fatal(err)
				}
			}
			applied, err := clickhouse.Migrate(t.Context(), db.Conn)
			if err != nil {
				t.Fatal(err)
			}
			if len(applied) != len(ms)-k {
				t.Errorf("applied %v from state %d, want %d migrations", applied, k, len(ms)-k)
			}
		})
	}
}

// TestTablesAcceptRows writes a flow and an object row with named columns
// and reads them back, so a column type the server mishandles shows up here
// rather than in a sink.
func TestTablesAcceptRows(t *testing.T) {
	db := testenv.ClickHouse(t)
	if _, err := clickhouse.Migrate(t.Context(), db.Conn); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	orig := string(net.ParseIP("10.65.0.2").To16())
	resp := string(net.ParseIP("10.65.0.3").To16())
	for range 2 { // the same record twice, as a redelivery would write it
		batch, err := db.Conn.PrepareBatch(t.Context(), `INSERT INTO flows (namespace, capture, capture_uid, node, pod, interface,
			record_id, start_time, start_ns, end_time, end_ns, ip_version, protocol, orig_addr, orig_port, resp_addr, resp_port,
			orig_packets, orig_bytes, resp_packets, resp_bytes, history, conn_state, community_id, dns_query, dns_rcode, end_reason)`)
		if err != nil {
			t.Fatalf("prepare flow insert: %v", err)
		}
		err = batch.Append("sample-namespace", "sample-capture", "uid-1", "node-a", "pod-a", "cali0123456789a",
			uint64(42), start, uint32(123456789), start.Add(time.Second), uint32(0), uint8(4), uint8(6), orig, uint16(40000), resp, uint16(80),
			uint64(5), uint64(600), uint64(4), uint64(3000), "ShADadFf", "SF", "1:abc=", "", int16(-1), "tcp_close")
		if err != nil {
			t.Fatalf("append flow: %v", err)
		}
		if err := batch.Send(); err != nil {
			t.Fatalf("insert flow: %v", err)
		}
	}
	if err := db.Conn.Exec(t.Context(), "OPTIMIZE TABLE flows FINAL"); err != nil {
		t.Fatalf("optimize: %v", err)
	}
	var (
		n          uint64
		state      string
		startNs    uint32
		gotOrig    string
		origPkts   uint64
		recordDate time.Time
	)
	row := db.Conn.QueryRow(t.Context(), "SELECT count(), any(conn_state), any(start_ns), any(orig_addr), sum(orig_packets), any(date) FROM flows")
	if err := row.Scan(&n, &state, &startNs, &gotOrig, &origPkts, &recordDate); err != nil {
		t.Fatalf("read flows: %v", err)
	}
	if n != 1 || state != "SF" || startNs != 123456789 || gotOrig != orig || origPkts != 5 || !recordDate.Equal(start.Truncate(24*time.Hour)) {
		t.Errorf("flows row = count %d state %q start_ns %d orig %x packets %d date %s", n, state, startNs, gotOrig, origPkts, recordDate)
	}

	batch, err := db.Conn.PrepareBatch(t.Context(), `INSERT INTO pcap_objects (namespace, capture, capture_uid, node, pod, interface, bucket, key,
		size, packets, first_time, first_ns, last_time, last_ns, first_seq, last_seq, link_type, sha256)`)
	if err != nil {
		t.Fatalf("prepare pcap object insert: %v", err)
	}
	err = batch.Append("sample-namespace", "sample-capture", "uid-1", "node-a", "pod-a", "cali0123456789a", "captures",
		"sample-namespace/sample-capture/node-a/pod-a_cali0123456789a/20261127T100000Z-1.pcap",
		uint64(1<<20), uint64(900), start, uint32(1), start.Add(time.Minute), uint32(2), uint64(1), uint64(77), uint32(1), "00")
	if err == nil {
		err = batch.Send()
	}
	if err != nil {
		t.Fatalf("insert pcap object: %v", err)
	}
	var key string
	var packets uint64
	if err := db.Conn.QueryRow(t.Context(), "SELECT key, packets FROM pcap_objects").Scan(&key, &packets); err != nil {
		t.Fatalf("read pcap_objects: %v", err)
	}
	if packets != 900 || key == "" {
		t.Errorf("pcap_objects row = %q %d", key, packets)
	}
}
