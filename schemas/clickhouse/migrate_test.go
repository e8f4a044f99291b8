package clickhouse

import (
	"os"
	"strings"
	"testing"
)

// TestColumnsDirective: migration 004 takes flow_staging's and
// flow_commits' columns from flows (001) and flow_batches (003); what it
// runs is exactly the statements it ran when it spelled them out, kept in
// testdata, so databases that applied it then and now agree.
func TestColumnsDirective(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/004_flow_commits.statements.golden")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Version != 4 {
			continue
		}
		if got := strings.Join(m.Statements, "\n;\n") + "\n"; got != string(want) {
			t.Errorf("migration 004 statements differ from testdata:\n%s", got)
		}
		return
	}
	t.Fatal("no migration 004")
}

func TestColumnsDirectiveErrors(t *testing.T) {
	tables := map[string][]string{}
	base := "CREATE TABLE IF NOT EXISTS t (\n    a UInt8,\n    b String,\n    c UInt64\n) ENGINE = Memory;\n"
	if _, err := expandColumns(base, tables); err != nil {
		t.Fatal(err)
	}
	got, err := expandColumns("CREATE TABLE IF NOT EXISTS u (\n    x UInt8,\n    -- capstream:columns t a..b\n    y UInt8\n) ENGINE = Memory;\n", tables)
	if err != nil {
		t.Fatal(err)
	}
	if want := "CREATE TABLE IF NOT EXISTS u (\n    x UInt8,\n    a UInt8,\n    b String,\n    y UInt8\n) ENGINE = Memory;\n"; got != want {
		t.Errorf("expanded:\n%s\nwant:\n%s", got, want)
	}
	for _, bad := range []string{"nope a..b", "t a..z", "t b..a", "t a", ""} {
		if _, err := expandColumns("    -- capstream:columns "+bad+"\n", tables); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}
