package access_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/schemas"
)

// TestHostileFilters sends filters meant to escape the capture's scope
// through the API. Each is refused with 400 and flowfilter's message, or
// returns this capture's rows only; the SQL sent never holds the
// filter's text.
func TestHostileFilters(t *testing.T) {
	e, user, a := startGranted(t, "get")
	b := e.Kube.Namespace(t, nil)
	e.insertFlows(t, b, "web", a.t0, 5)
	e.insertFlows(t, a.ns, "other", a.t0, 5)

	cases := []struct {
		where string
		want  string // "" means accepted
	}{
		{"1) OR (1=1) OR (1", `"1" is not a column`},
		{"resp_port = 1000) OR (1 = 1", "after a complete filter"},
		{"(resp_port = 1000", "never closed"},
		{"resp_port = 1000 or namespace = 'x'", `"namespace" is not a column`},
		{"resp_port = (SELECT 1)", "want a value"},
		{"resp_port IN (SELECT resp_port FROM flows)", "want an operator"},
		{"resp_port = 1000 UNION ALL SELECT * FROM system.users", "'*' is not part of the filter language"},
		{"resp_port = 1000 UNION ALL SELECT 1", `unexpected "UNION"`},
		{"resp_port = 1000 SETTINGS readonly = 0", "after a complete filter"},
		{"dns_query = file('/etc/passwd')", "after a complete filter"},
		{"http_host = url('http://example.com', CSV, 'a String')", "',' is not part of the filter language"},
		{"resp_port = 1000 -- comment", "after a complete filter"},
		{"resp_port = 1000 /* comment */", "not part of the filter language"},
		{"resp_port = 1000; DROP TABLE flows", "not part of the filter language"},
		{"dns_query = 'x' or 'a' = 'a'", "want a column"},
		{strings.Repeat("(", 40) + "resp_port = 1" + strings.Repeat(")", 40), "nested deeper"},
		{"resp_port = 1000 or " + strings.Repeat("resp_port = 1 or ", 6000) + "resp_port = 2", "longer than 1024"},
		// Accepted: quotes and SQL inside a value are data, bound as a
		// parameter.
		{`dns_query = "x' OR '1'='1"`, ""},
		{`dns_query contains "') OR 1=1 --"`, ""},
		{"not (resp_port = 1000)", ""},
	}
	for _, tc := range cases {
		name := tc.where
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			before := len(e.sent())
			code, body, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"flows?limit=1000&where="+url.QueryEscape(tc.where), user.Token)
			sent := e.sent()[before:]
			if tc.want != "" {
				msg := decode[access.Error](t, body).Error
				if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
					t.Errorf("= %d %q, want 400 saying %q", code, msg, tc.want)
				}
				if len(sent) != 0 {
					t.Errorf("a refused filter reached ClickHouse: %q", sent)
				}
				t.Logf("refused: %.64s", msg)
				return
			}
			if code != http.StatusOK || len(sent) != 1 {
				t.Fatalf("= %d %s, %d queries sent", code, body, len(sent))
			}
			sql, _, _ := strings.Cut(sent[0], " -- values ")
			for _, bad := range []string{"'", "\"", "--", "OR 1", "file(", "SETTINGS", "UNION", "system."} {
				if strings.Contains(sql, bad) {
					t.Errorf("the SQL sent holds %q from the filter:\n%s", bad, sent[0])
				}
			}
			for _, f := range decode[access.FlowList](t, body).Flows {
				if f.DNSQuery != a.ns+".example" {
					t.Errorf("row of another capture returned: %+v", f)
				}
			}
			t.Logf("sent: %s; rows: %d", strings.Join(strings.Fields(sent[0]), " "), len(decode[access.FlowList](t, body).Flows))
		})
	}
	// The limit is capped by the server's maxFlowRows.
	code, body, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"flows?limit=99999999", user.Token)
	if got := decode[access.FlowList](t, body); code != http.StatusOK || got.Limit != e.cfg.MaxFlowRows {
		t.Errorf("limit 99999999 = %d, applied %d, want %d", code, got.Limit, e.cfg.MaxFlowRows)
	}
	for _, q := range []string{"limit=-1", "limit=1e9", "since=yesterday", "where=a&where=b", "format=TSV"} {
		if code, body, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"flows?"+q, user.Token); code != http.StatusBadRequest {
			t.Errorf("flows?%s = %d %s, want 400", q, code, body)
		}
	}
}

// TestHostileKeys: a download key that tries to leave the capture's
// directory is refused, and never returns another capture's object.
func TestHostileKeys(t *testing.T) {
	e, user, a := startGranted(t, "get")
	b := e.fixture(t)
	bKey := firstKey(b)
	noRedirect := *e.Client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	e.Client = &noRedirect
	bFull := schemas.CaptureDir("capstream", b.ns, b.name, b.uid) + bKey
	for _, k := range []string{
		"../../../../" + b.ns + "/" + b.name + "/" + b.uid + "/" + bKey,
		"..%2F..%2F..%2F..%2F" + strings.ReplaceAll(b.ns+"/"+b.name+"/"+b.uid+"/"+bKey, "/", "%2F"),
		"%2E%2E/%2E%2E/x.pcap",
		"/" + bFull,
		"%2F" + strings.ReplaceAll(bFull, "/", "%2F"),
		"node-a/./x.pcap",
		"node-a//x.pcap",
		"node-a/x.pcap%00.txt",
		"node-a/x\\..\\y.pcap",
		"node-a/" + strings.Repeat("a", 2000) + ".pcap",
		"node-a/x.txt",
	} {
		code, body, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"files/"+k, user.Token)
		if bytes.Equal(body, b.objects[bKey]) {
			t.Fatalf("key %.64q returned namespace b's object", k)
		}
		// 400 from the key check itself, not a miss in S3; or the
		// mux's redirect (307) to the cleaned path (followed, it lands on
		// another authorized route): the key never reaches the store.
		if code != http.StatusBadRequest && code != http.StatusTemporaryRedirect {
			t.Errorf("key %.64q = %d (%d bytes), want 400 or the mux's 307", k, code, len(body))
		}
	}
	for _, u := range []string{"?uid=../x", "?uid=" + strings.Repeat("a", 200), "?uid=a&uid=b"} {
		if code, _, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"files"+u, user.Token); code != http.StatusBadRequest {
			t.Errorf("files%s = %d, want 400", u, code)
		}
	}
	for _, p := range []string{"/v1/namespaces/A_B/packetcaptures/web/files", "/v1/namespaces/" + a.ns + "/packetcaptures/Bad_Name/files"} {
		if code, _, _ := e.Do(t, "GET", p, user.Token); code != http.StatusBadRequest {
			t.Errorf("%s = %d, want 400", p, code)
		}
	}
}
