package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/capstream/capstream/internal/clients"
)

// ClickHouseDB is a private database on the real ClickHouse server.
type ClickHouseDB struct {
	Addr     string
	Database string
	// SecureAddr is the server's TLS port and CAFile the CA of its
	// certificate (deps.sh's dev CA); empty with an older deps.sh.
	SecureAddr, CAFile string
	// Conn uses Database as its default database.
	Conn driver.Conn
}

var clickhouseProbe probe

// ClickHouseAddr is the native-protocol address of the test server.
func ClickHouseAddr() string {
	if a := Getenv(EnvClickHouseAddr); a != "" {
		return a
	}
	return defaultClickHouse
}

// ClickHouseOptions are the client options tests and the dev pipeline use.
// They send no settings: 18.16 and current servers disagree on several.
func ClickHouseOptions(addr, database string) *clickhouse.Options {
	return &clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout: probeTimeout,
	}
}

// ClickHouse creates a database with a random name and drops it when the
// test ends.
func ClickHouse(t testing.TB) *ClickHouseDB {
	t.Helper()
	skipShort(t, "ClickHouse")
	addr := ClickHouseAddr()
	if err := clickhouseProbe.check(func() error {
		conn, err := clickhouse.Open(ClickHouseOptions(addr, "default"))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		defer cancel()
		return conn.Ping(ctx)
	}); err != nil {
		unavailable(t, "ClickHouse at "+addr, err)
	}
	admin, err := clickhouse.Open(ClickHouseOptions(addr, "default"))
	if err != nil {
		t.Fatalf("open clickhouse: %v", err)
	}
	db := "test_" + randomHex(6)
	if err := admin.Exec(t.Context(), "CREATE DATABASE "+db); err != nil {
		admin.Close()
		t.Fatalf("create database %s: %v", db, err)
	}
	conn, err := clickhouse.Open(ClickHouseOptions(addr, db))
	if err != nil {
		t.Fatalf("open clickhouse database %s: %v", db, err)
	}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+db); err != nil {
			t.Errorf("drop database %s: %v", db, err)
		}
		admin.Close()
	})
	return &ClickHouseDB{Addr: addr, Database: db, Conn: conn, SecureAddr: Getenv(EnvClickHouseSecureAddr), CAFile: Getenv(EnvTLSCA)}
}

// SecureConfig is how a component reaches the test database over TLS,
// verifying the server against the dev CA. The test fails when the
// services were started without the secure port (restart them with
// deploy/dev/deps.sh up).
func (db *ClickHouseDB) SecureConfig(t testing.TB) clients.ClickHouseConfig {
	t.Helper()
	if db.SecureAddr == "" || db.CAFile == "" {
		t.Fatalf("ClickHouse has no secure port in %s (%s, %s): run deploy/dev/deps.sh up", EnvFilePath(), EnvClickHouseSecureAddr, EnvTLSCA)
	}
	c := clients.DefaultClickHouseConfig()
	c.Addr, c.Database, c.Secure, c.TLS.CAFile = db.SecureAddr, db.Database, true, db.CAFile
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}

// ctxTimeout is a fresh context for cleanup work.
func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
