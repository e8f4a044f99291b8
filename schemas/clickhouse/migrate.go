// Package clickhouse holds capstream's ClickHouse schema as numbered,
// embedded SQL migrations and the runner that applies them.
//
// Each migration is idempotent on its own (CREATE ... IF NOT EXISTS), and
// the runner records every applied version in capstream_migrations, so
// running Migrate any number of times, concurrently from several sinks or
// after a partial failure, converges on the same schema. The SQL uses only
// what both Debian's ClickHouse 18.16 and current servers accept (no
// DateTime64, IP types, Map, Bool, TTL, CODEC or skip indexes; see
// DESIGN.md "ClickHouse").
package clickhouse

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// MigrationsTable records the applied migrations.
const MigrationsTable = "capstream_migrations"

// Migration is one numbered schema change.
type Migration struct {
	Version int
	Name    string
	// Statements are run one by one: the native protocol takes a single
	// statement per query.
	Statements []string
}

// Migrations returns the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var ms []Migration
	seen := map[int]string{}
	tables := map[string][]string{} // column lines of every table created so far
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || !strings.HasSuffix(rest, ".sql") {
			return nil, fmt.Errorf("migration %s: name must be NNN_name.sql", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migration %s: version %d already used by %s", name, v, prev)
		}
		seen[v] = name
		body, err := migrationFS.ReadFile("migrations/" + name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		sql, err := expandColumns(string(body), tables)
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", name, err)
		}
		ms = append(ms, Migration{Version: v, Name: strings.TrimSuffix(rest, ".sql"), Statements: splitStatements(sql)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}

// columnsDirective, on a line of its own inside a CREATE TABLE, stands for
// a run of another table's columns: `-- capstream:columns T A..B` is the
// column lines of T from A to B, as an earlier migration (or this one,
// above) created T. A table that must mirror another (flow_staging holds
// exactly what is published into flows) takes its columns from it, so the
// two can never drift apart.
const columnsDirective = "-- capstream:columns "

// expandColumns replaces the column directives of sql and records the
// column lines of every table sql creates into tables.
func expandColumns(sql string, tables map[string][]string) (string, error) {
	var out []string
	var table string // the CREATE TABLE being read, if any
	for _, line := range strings.Split(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if spec, ok := strings.CutPrefix(trimmed, strings.TrimSpace(columnsDirective)); ok {
			cols, err := columnRun(tables, spec)
			if err != nil {
				return "", err
			}
			out = append(out, cols...)
			if table != "" {
				tables[table] = append(tables[table], cols...)
			}
			continue
		}
		out = append(out, line)
		switch {
		case strings.HasPrefix(trimmed, "CREATE TABLE IF NOT EXISTS ") && strings.HasSuffix(trimmed, "("):
			table = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(trimmed, "CREATE TABLE IF NOT EXISTS "), "("))
			tables[table] = nil
		case strings.HasPrefix(trimmed, ")"):
			table = ""
		case table != "" && trimmed != "" && !strings.HasPrefix(trimmed, "--"):
			tables[table] = append(tables[table], line)
		}
	}
	return strings.Join(out, "\n"), nil
}

// columnRun is the column lines "T A..B" names, each ending in a comma.
func columnRun(tables map[string][]string, spec string) ([]string, error) {
	table, span, ok := strings.Cut(strings.TrimSpace(spec), " ")
	first, last, ok2 := strings.Cut(span, "..")
	cols, known := tables[table]
	if !ok || !ok2 || !known {
		return nil, fmt.Errorf("%s%s: want TABLE FIRST..LAST of a table created before", columnsDirective, spec)
	}
	start := -1
	for i, c := range cols {
		name, _, _ := strings.Cut(strings.TrimSpace(c), " ")
		if name == first {
			start = i
		}
		if name == last && start >= 0 {
			run := make([]string, 0, i-start+1)
			for _, c := range cols[start : i+1] {
				run = append(run, strings.TrimSuffix(c, ",")+",")
			}
			return run, nil
		}
	}
	return nil, fmt.Errorf("%s%s: no columns %s to %s in %s", columnsDirective, spec, first, last, table)
}

// splitStatements splits SQL on semicolons that end a line, dropping
// comment-only lines. Migrations keep string literals free of ";\n".
func splitStatements(sql string) []string {
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "--") || trimmed == "" {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			stmts = append(stmts, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS ` + MigrationsTable + ` (
    version UInt32,
    name String,
    applied_at DateTime DEFAULT now()
) ENGINE = ReplacingMergeTree() ORDER BY version`

// Applied returns the versions recorded in the migrations table.
func Applied(ctx context.Context, conn driver.Conn) (map[int]bool, error) {
	if err := conn.Exec(ctx, createMigrationsTable); err != nil {
		return nil, fmt.Errorf("create %s: %w", MigrationsTable, err)
	}
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+MigrationsTable)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read %s: %w", MigrationsTable, err)
		}
		done[int(v)] = true
	}
	return done, rows.Err()
}

// Apply runs one migration and records it.
func Apply(ctx context.Context, conn driver.Conn, m Migration) error {
	for i, stmt := range m.Statements {
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("migration %03d_%s statement %d: %w", m.Version, m.Name, i+1, err)
		}
	}
	// Rows go as native blocks: 18.16 waits for a data block after an
	// INSERT even when the query text carries VALUES.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+MigrationsTable+" (version, name)")
	if err != nil {
		return fmt.Errorf("record migration %03d_%s: %w", m.Version, m.Name, err)
	}
	if err := batch.Append(uint32(m.Version), m.Name); err != nil {
		_ = batch.Abort()
		return fmt.Errorf("record migration %03d_%s: %w", m.Version, m.Name, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record migration %03d_%s: %w", m.Version, m.Name, err)
	}
	return nil
}

// Migrate applies every migration not yet recorded, in order, and returns
// the versions it applied. The connection's default database is migrated.
func Migrate(ctx context.Context, conn driver.Conn) ([]int, error) {
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	done, err := Applied(ctx, conn)
	if err != nil {
		return nil, err
	}
	var applied []int
	for _, m := range ms {
		if done[m.Version] {
			continue
		}
		if err := Apply(ctx, conn, m); err != nil {
			return applied, err
		}
		applied = append(applied, m.Version)
	}
	return applied, nil
}
