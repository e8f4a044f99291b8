package main

import (
	"strings"
	"testing"

	"github.com/capstream/capstream/internal/testenv"
)

// TestMigrateCommand runs `capstream migrate` twice against the real
// ClickHouse: the first run applies every migration, the second none.
func TestMigrateCommand(t *testing.T) {
	db := testenv.ClickHouse(t)
	args := append([]string{"migrate", "--database", db.Database}, clickhouseArgs(t, db)...)
	code, out, errOut := runCmd(t, args...)
	if code != exitOK || !strings.Contains(out, "applied migration 001") || !strings.Contains(out, "applied migration 002") {
		t.Fatalf("first migrate = %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCmd(t, args...)
	if code != exitOK || !strings.Contains(out, "up to date") {
		t.Fatalf("second migrate = %d %q %q", code, out, errOut)
	}
	var n uint64
	if err := db.Conn.QueryRow(t.Context(), "SELECT count() FROM system.tables WHERE database = ? AND name IN ('flows', 'pcap_objects')", db.Database).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("tables after migrate = %d, want 2", n)
	}
}

func TestMigrateUnreachable(t *testing.T) {
	code, _, errOut := runCmd(t, "migrate", "--clickhouse-addr", "127.0.0.1:1", "--timeout", "3s")
	if code != exitUnavailable || !strings.Contains(errOut, "127.0.0.1:1") {
		t.Errorf("unreachable migrate = %d %q", code, errOut)
	}
}
