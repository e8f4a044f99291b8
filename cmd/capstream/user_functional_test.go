package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/capstream/capstream/internal/testenv"
	chschema "github.com/capstream/capstream/schemas/clickhouse"
	v3 "github.com/capstream/capstream/schemas/v3"
)

func TestGetPacketCaptures(t *testing.T) {
	k := testenv.Kube(t)
	ns := k.Namespace(t, nil)
	created := k.CreateCapture(t, ns, "sample-capture", `k8s-app == "sample-app"`)
	state := v3.StateCapturing
	status := v3.PacketCaptureStatus{Packets: 1234, Bytes: 5 << 20, Drops: 7, Objects: 3,
		Files:      []v3.PacketCaptureFile{{Node: "node-a", State: &state}},
		Conditions: []metav1.Condition{{Type: v3.ConditionReady, Status: metav1.ConditionTrue, Reason: "Capturing", Message: "ok", LastTransitionTime: metav1.Now()}}}
	su, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
	created.Object["status"] = su
	if _, err := k.Dynamic.Resource(v3.Resource).Namespace(ns).UpdateStatus(t.Context(), created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"packetcaptures", "packetcapture.p"} {
		code, out, errOut := runCmd(t, "get", name, "-n", ns, "--kubeconfig", k.Kubeconfig)
		if code != exitOK {
			t.Fatalf("get %s = %d %q", name, code, errOut)
		}
		for _, want := range []string{"sample-capture", "Capturing", "1234", "5.0MiB", "True"} {
			if !strings.Contains(out, want) {
				t.Errorf("get %s output lacks %q:\n%s", name, want, out)
			}
		}
	}
	code, out, _ := runCmd(t, "get", "packetcaptures", "sample-capture", "-n", ns, "--kubeconfig", k.Kubeconfig, "-o", "json")
	if code != exitOK || !strings.Contains(out, `"packets": 1234`) {
		t.Errorf("get -o json = %d %s", code, out)
	}
	cases := map[string]struct {
		args []string
		code int
		msg  string
	}{
		"missing capture": {[]string{"get", "packetcaptures", "nope", "-n", ns, "--kubeconfig", k.Kubeconfig}, exitNotFound, "not found"},
		"bad name":        {[]string{"get", "packetcaptures", "Bad_Name", "-n", ns, "--kubeconfig", k.Kubeconfig}, exitUsage, "invalid capture name"},
		"wrong resource":  {[]string{"get", "pods", "--kubeconfig", k.Kubeconfig}, exitUsage, "unknown resource"},
		"unreachable":     {[]string{"get", "packetcaptures", "--kubeconfig", unreachableKubeconfig(t)}, exitUnavailable, "unavailable"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("exit %d stderr %q, want %d and %q", code, errOut, tc.code, tc.msg)
			}
		})
	}
}

func unreachableKubeconfig(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n" +
		"users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFlowsCommand(t *testing.T) {
	db := testenv.ClickHouse(t)
	if _, err := chschema.Migrate(t.Context(), db.Conn); err != nil {
		t.Fatal(err)
	}
	batch, err := db.Conn.PrepareBatch(t.Context(), `INSERT INTO flows (namespace, capture, node, record_id, start_time, start_ns,
		protocol, orig_addr, orig_port, resp_addr, resp_port, orig_packets, resp_packets, orig_bytes, resp_bytes, conn_state, history, dns_query, tls_sni)`)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	a, b := string(net.ParseIP("10.65.0.2").To16()), string(net.ParseIP("10.65.0.3").To16())
	rows := []struct {
		id         uint64
		proto      uint8
		port       uint16
		state, dns string
		sni        string
	}{{1, 17, 53, "SF", "example.internal", ""}, {2, 6, 443, "SF", "", "api.example.internal"}}
	for i, r := range rows {
		if err := batch.Append("sample-namespace", "sample-capture", "node-a", r.id, start.Add(time.Duration(i)*time.Second), uint32(5),
			r.proto, a, uint16(40000+i), b, r.port, uint64(3), uint64(2), uint64(300), uint64(200), r.state, "Dd", r.dns, r.sni); err != nil {
			t.Fatal(err)
		}
	}
	// Another namespace's flow, which no filter may reach.
	if err := batch.Append("other-namespace", "sample-capture", "node-a", uint64(9), start, uint32(5),
		uint8(17), a, uint16(41000), b, uint16(53), uint64(1), uint64(1), uint64(99), uint64(99), "SF", "Dd", "secret.other", ""); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	base := append(clickhouseArgs(t, db), "--clickhouse-database", db.Database)
	code, out, errOut := runCmd(t, append([]string{"flows", "--direct", "sample-capture", "-n", "sample-namespace"}, base...)...)
	if code != exitOK {
		t.Fatalf("flows = %d %q", code, errOut)
	}
	for _, want := range []string{"POD", "10.65.0.2:40000", "10.65.0.3:53", "udp", "dns example.internal", "tcp", "sni api.example.internal", "3/2", "300/200"} {
		if !strings.Contains(out, want) {
			t.Errorf("flows output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCmd(t, append([]string{"flows", "--direct", "sample-capture", "-n", "sample-namespace", "--where", "resp_port = 443"}, base...)...)
	if code != exitOK || strings.Contains(out, ":53") || !strings.Contains(out, ":443") {
		t.Errorf("flows --where = %d:\n%s", code, out)
	}
	// The filter language against the real server: typed values, and/or,
	// addresses; the rows are this capture's only.
	for where, want := range map[string]struct{ has, hasNot []string }{
		"protocol = udp and dns_query contains 'example'":           {[]string{":53"}, []string{":443"}},
		"orig_addr = 10.65.0.2 and not (resp_port = 53)":            {[]string{":443"}, []string{":53"}},
		"resp_port = 53 or tls_sni = 'api.example.internal'":        {[]string{":53", ":443"}, nil},
		"dns_query = 'secret.other' or orig_bytes = 99":             {nil, []string{":53", ":443"}},
		"http_host = \"x' OR 1=1 OR namespace = 'other-namespace\"": {nil, []string{":53", ":443"}},
	} {
		code, out, errOut := runCmd(t, append([]string{"flows", "--direct", "sample-capture", "-n", "sample-namespace", "--where", where}, base...)...)
		if code != exitOK || strings.Contains(out, "secret.other") || strings.Contains(out, "41000") {
			t.Errorf("--where %q = %d %q:\n%s", where, code, errOut, out)
		}
		for _, w := range want.has {
			if !strings.Contains(out, w) {
				t.Errorf("--where %q: output lacks %s:\n%s", where, w, out)
			}
		}
		for _, w := range want.hasNot {
			if strings.Contains(out, w) {
				t.Errorf("--where %q: output has %s:\n%s", where, w, out)
			}
		}
	}
	// What used to be pasted into the SQL, and the other ways out of the
	// capture's scope, are refused as usage errors before any query.
	for _, where := range []string{"1) OR (1=1) OR (1", "(resp_port = 1", "resp_port = 1 UNION SELECT 1", "resp_port = 1 SETTINGS readonly=0",
		"file('/etc/passwd') = 1", "url('http://127.0.0.1/') = 1", "resp_port = 1 -- x", "namespace = 'other-namespace'",
		"resp_port = (SELECT 1)", strings.Repeat("resp_port = 1 or ", 100)} {
		code, out, errOut := runCmd(t, append([]string{"flows", "--direct", "sample-capture", "-n", "sample-namespace", "--where", where}, base...)...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, "invalid flow filter") {
			t.Errorf("--where %q = %d, stdout %q, stderr %q; want exit 2 and a message", where, code, out, errOut)
		}
	}
	cases := map[string]struct {
		args []string
		code int
	}{
		"missing capture": {append([]string{"flows", "--direct", "nope", "-n", "sample-namespace"}, base...), exitNotFound},
		"bad name":        {append([]string{"flows", "--direct", "../x", "-n", "sample-namespace"}, base...), exitUsage},
		"unreachable":     {[]string{"flows", "--direct", "sample-capture", "--clickhouse-addr", "127.0.0.1:1"}, exitUnavailable},
		"bad where":       {append([]string{"flows", "--direct", "sample-capture", "-n", "sample-namespace", "--where", "no_such_column = 1"}, base...), exitUsage},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tc.args...)
			if code != tc.code || errOut == "" {
				t.Errorf("exit %d stderr %q, want %d", code, errOut, tc.code)
			}
		})
	}
}
