package main

import (
	"testing"

	"github.com/capstream/capstream/internal/testenv"
)

// clickhouseArgs points the user commands at db as a user would: the
// address as a flag, TLS (the test server has no plain port), its CA and
// the password through the environment. It uses t.Setenv, so its test
// cannot run in parallel.
func clickhouseArgs(t *testing.T, db *testenv.ClickHouseDB) []string {
	t.Helper()
	c := testenv.ClickHouseConfig(db.Database)
	if c.Secure {
		t.Setenv("CAPSTREAM_CLICKHOUSE_SECURE", "true")
		t.Setenv("CAPSTREAM_CLICKHOUSE_TLS_CAFILE", c.TLS.CAFile)
	}
	t.Setenv("CAPSTREAM_CLICKHOUSE_PASSWORD", c.Password)
	return []string{"--clickhouse-addr", c.Addr}
}
