package flowfilter

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseValid(t *testing.T) {
	cases := map[string]struct {
		in   string
		sql  string
		args []any
	}{
		"empty":    {"", "1", nil},
		"port":     {"resp_port = 443", "(resp_port = ?)", []any{uint64(443)}},
		"proto":    {"protocol = tcp", "(protocol = ?)", []any{uint64(6)}},
		"text":     {"dns_query != ''", "(dns_query != ?)", []any{""}},
		"contains": {`tls_sni contains "example"`, "(position(tls_sni, ?) > 0)", []any{"example"}},
		"word":     {"conn_state = SF", "(conn_state = ?)", []any{"SF"}},
		"ipv4":     {"orig_addr = 10.0.0.1", "(orig_addr = toFixedString(unhex(?), 16))", []any{"00000000000000000000ffff0a000001"}},
		"ipv6":     {"resp_addr != fd00::1", "(resp_addr != toFixedString(unhex(?), 16))", []any{"fd000000000000000000000000000001"}},
		"rcode":    {"dns_rcode >= -1", "(dns_rcode >= ?)", []any{int64(-1)}},
		"and or not": {"resp_port = 443 and not (conn_state = 'REJ' or orig_bytes > 1000)",
			"((resp_port = ?) AND (NOT ((conn_state = ?) OR (orig_bytes > ?))))", []any{uint64(443), "REJ", uint64(1000)}},
		"keywords any case": {"RESP_PORT = 53 AND protocol = UDP", "((resp_port = ?) AND (protocol = ?))", []any{uint64(53), uint64(17)}},
		// Whatever the text holds, it is a bound value, not SQL.
		"quote inside": {`http_host = "a' OR 1=1 --"`, "(http_host = ?)", []any{"a' OR 1=1 --"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f, err := Parse(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			sql, args := f.SQL()
			if diff := cmp.Diff(tc.sql, sql); diff != "" {
				t.Errorf("SQL (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.args, args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseHostile: what was once pasted into the SQL, and the other ways
// out of a WHERE clause, are refused with a message naming the problem.
func TestParseHostile(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"escape the scope":   {"1) OR (1=1) OR (1", "at byte 0"},
		"unbalanced open":    {"(resp_port = 1", "never closed"},
		"unbalanced close":   {"resp_port = 1)", "')' too many"},
		"subquery":           {"resp_port in (select 1)", `want an operator (= != < <= > >= contains) after resp_port, have "in"`},
		"subquery value":     {"resp_port = (SELECT 1)", "want a value"},
		"union":              {"resp_port = 1 UNION SELECT 2", `unexpected "UNION"`},
		"union star":         {"resp_port = 1 UNION SELECT * FROM system.users", `'*' is not part`},
		"settings":           {"resp_port = 1 SETTINGS max_threads=1", `unexpected "SETTINGS"`},
		"table function":     {"file('/etc/passwd') = 1", `"file" is not a column`},
		"url":                {"url('http://x') = 1", `"url" is not a column`},
		"line comment":       {"resp_port = 1 -- x", `unexpected "--"`},
		"block comment":      {"resp_port = 1 /* x */", `'/' is not part`},
		"semicolon":          {"resp_port = 1; DROP TABLE flows", `';' is not part`},
		"other namespace":    {"namespace = 'b'", `"namespace" is not a column`},
		"system":             {"system.tables = 1", "not a column"},
		"too long":           {strings.Repeat("resp_port = 1 or ", 100), "longer than"},
		"too deep":           {strings.Repeat("(", 40) + "resp_port = 1" + strings.Repeat(")", 40), "deeper than"},
		"port out of range":  {"resp_port = 70000", "0 to 65535"},
		"quoted number":      {"resp_port = '443'", "whole number"},
		"text ordering":      {"dns_query < 'a'", "text compares with"},
		"bad address":        {"orig_addr = 10.0.0", "IPv4 or IPv6"},
		"address ordering":   {"orig_addr > 10.0.0.1", "= or !="},
		"dangling operator":  {"resp_port =", "want a value"},
		"dangling and":       {"resp_port = 1 and", "ends where a condition"},
		"unterminated text":  {"http_host = 'abc", "never closed"},
		"bang":               {"resp_port ! 1", "must be '!='"},
		"double equals":      {"resp_port == 1", "'==' is not an operator"}, // found by FuzzParse
		"function on column": {"lower(http_host) = 'a'", `"lower" is not a column`},
		"backslash":          {`http_host = \'x`, `'\\' is not part`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f, err := Parse(tc.in)
			if err == nil {
				sql, args := f.SQL()
				t.Fatalf("accepted: %s %v", sql, args)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one containing %q", err, tc.want)
			}
		})
	}
}

// FuzzParse: any input is refused or becomes SQL made only of whitelisted
// columns, operators, keywords and placeholders.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"resp_port = 443", "1) OR (1=1) OR (1", `http_host = "x" and not (protocol = udp)`, "orig_addr = ::1",
		"resp_port==0", // once rendered "==" into the SQL
	} {
		f.Add(s)
	}
	allowed := map[string]bool{"AND": true, "OR": true, "NOT": true, "?": true, "=": true, "!=": true, "<": true, "<=": true,
		">": true, ">=": true, "1": true, "POSITION": true, "FIXED": true, "0": true}
	for _, c := range Columns() {
		allowed[c] = true
	}
	f.Fuzz(func(t *testing.T, in string) {
		fl, err := Parse(in)
		if err != nil {
			return
		}
		sql, args := fl.SQL()
		if n := strings.Count(sql, "?"); n != len(args) {
			t.Fatalf("%d placeholders, %d values: %s", n, len(args), sql)
		}
		clean := strings.NewReplacer("toFixedString(unhex(?), 16)", " FIXED ", "position(", " POSITION ", ", ?)", " ? ", "(", " ( ", ")", " ) ").Replace(sql)
		for _, w := range strings.Fields(clean) {
			if w != "(" && w != ")" && !allowed[w] {
				t.Fatalf("SQL %q holds %q", sql, w)
			}
		}
	})
}
