package testenv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"sync"
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
	// certificate (deps.sh's dev CA); empty with an older deps.sh. With
	// the current one, Addr is that TLS port too: the server has no
	// plain port.
	SecureAddr, CAFile string
	// Conn uses Database as its default database.
	Conn driver.Conn
}

var (
	clickhouseProbe probe
	clickhouseTLS   = sync.OnceValues(func() (*tls.Config, error) {
		if Getenv(EnvClickHouseSecure) != "1" {
			return nil, nil
		}
		return clients.TLSConfig{CAFile: Getenv(EnvTLSCA)}.Config("clickhouse.tls")
	})
)

// ClickHouseAddr is the native-protocol address of the test server.
func ClickHouseAddr() string {
	if a := Getenv(EnvClickHouseAddr); a != "" {
		return a
	}
	return defaultClickHouse
}

// ClickHousePassword is the test server's password for its default user.
func ClickHousePassword() string { return Getenv(EnvClickHousePassword) }

// ClickHouseConfig is how a component reaches database on the test
// server, as the default user with its password, over TLS verified
// against the dev CA (deps.sh's server has no plain port).
func ClickHouseConfig(database string) clients.ClickHouseConfig {
	c := clients.DefaultClickHouseConfig()
	c.Addr, c.Database, c.Password = ClickHouseAddr(), database, ClickHousePassword()
	if Getenv(EnvClickHouseSecure) == "1" {
		c.Secure, c.TLS.CAFile = true, Getenv(EnvTLSCA)
	}
	return c
}

// ClickHouseOptions are the client options tests use for the server at
// addr (the test server, or a proxy to it), as ClickHouseConfig. They send
// no settings: 18.16 and current servers disagree on several.
func ClickHouseOptions(addr, database string) *clickhouse.Options {
	// A CA that cannot be read leaves TLS off: the server then refuses
	// the connection, and the probe reports why.
	tc, _ := clickhouseTLS()
	return &clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Database: database, Username: "default", Password: ClickHousePassword()},
		DialTimeout: probeTimeout,
		TLS:         tc,
	}
}

// ClickHouse creates a database with a random name and drops it when the
// test ends.
func ClickHouse(t testing.TB) *ClickHouseDB {
	t.Helper()
	skipShort(t, "ClickHouse")
	addr := ClickHouseAddr()
	if err := clickhouseProbe.check(func() error {
		if _, err := clickhouseTLS(); err != nil {
			return err
		}
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
	c := ClickHouseConfig(db.Database)
	c.Addr, c.Secure, c.TLS.CAFile = db.SecureAddr, true, db.CAFile
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
