package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/access/accesstest"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// kubeconfigFile writes a kubeconfig of one context, cluster and user,
// the YAML flow mappings given, and returns its path.
func kubeconfigFile(t *testing.T, cluster, user string) string {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: " + cluster + "}]\n" +
		"users: [{name: u, user: " + user + "}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// userKubeconfig is a kubeconfig for the API server k uses, as user.
func userKubeconfig(t *testing.T, k *testenv.KubeEnv, user testenv.KubeUser) string {
	return kubeconfigFile(t, fmt.Sprintf("{server: '%s', insecure-skip-tls-verify: true}", k.Config.Host), fmt.Sprintf("{token: '%s'}", user.Token))
}

// TestCLIThroughAccessAPI runs copy, copy --merge, flows and clean in
// their default mode, through a running access API, as a user granted
// get (and later delete) on packetcaptures/files in one namespace; the
// S3 and ClickHouse credentials are nowhere in the CLI's environment.
func TestCLIThroughAccessAPI(t *testing.T) {
	st := accesstest.NewStores(t)
	k, b, db := st.Kube, st.Bucket, st.DB
	files := testenv.TLS(t)
	cfg := access.DefaultConfig()
	cfg.Listen, cfg.CertFile, cfg.KeyFile = "127.0.0.1:0", files.ServerCert, files.ServerKey
	port := accesstest.Start(t, cfg, st.Deps, files.CA).Port
	t.Setenv(envAccessURL, "https://127.0.0.1:"+port)
	t.Setenv(envAccessCA, files.CA)
	for _, v := range []string{"CAPSTREAM_S3_ENDPOINT", "CAPSTREAM_S3_ACCESSKEY", "CAPSTREAM_S3_SECRETKEY", "CAPSTREAM_CLICKHOUSE_PASSWORD"} {
		t.Setenv(v, "")
	}

	user := k.User(t)
	kc := userKubeconfig(t, k, user)
	ns, other := k.Namespace(t, nil), k.Namespace(t, nil)
	uid := string(k.CreateCapture(t, ns, "web", `app == "web"`).GetUID())
	k.GrantCaptureFiles(t, ns, user.Name, "get")
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	dir := schemas.CaptureDir("capstream", ns, "web", uid)
	stored := map[string][]byte{}
	for i, rel := range []string{"node-a/web-1_cali0123456789a/20261127T100000.000000000Z-1.pcap", "node-b/web-2_cali0123456789b/20261127T100001.000000000Z-1.pcap"} {
		recs := []testenv.PcapRecord{testenv.Record(t0.Add(time.Duration(i)*time.Second), []byte("a")), testenv.Record(t0.Add(time.Duration(i+2)*time.Second), []byte("b"))}
		stored[rel] = b.PutPcap(t, testenv.PcapObject{Key: dir + rel, Node: "n", Pod: "p", Ifc: "i", Records: recs})
	}
	batch, err := db.Conn.PrepareBatch(t.Context(), `INSERT INTO flows (namespace, capture, node, record_id, start_time, protocol, orig_addr, orig_port, resp_addr, resp_port, dns_query)`)
	if err != nil {
		t.Fatal(err)
	}
	a4 := string(net.ParseIP("10.65.0.2").To16())
	for i, nsName := range []string{ns, other} {
		if err := batch.Append(nsName, "web", "node-a", uint64(i+1), t0, uint8(17), a4, uint16(40000), a4, uint16(53), nsName+".example"); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}

	out := t.TempDir()
	code, stdout, stderr := runCmd(t, "captured-packets", "copy", "web", "-n", ns, "--kubeconfig", kc, "-d", out)
	if code != exitOK || !strings.Contains(stdout, "downloaded 2 objects") || !strings.Contains(stderr, "download:") {
		t.Fatalf("copy = %d %q %q", code, stdout, stderr)
	}
	for rel, want := range stored {
		if got, err := os.ReadFile(filepath.Join(out, rel)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: downloaded bytes differ from those stored (%v)", rel, err)
		}
	}
	code, stdout, stderr = runCmd(t, "captured-packets", "copy", "web", "-n", ns, "--kubeconfig", kc, "--merge", "-q", "-d", t.TempDir())
	if code != exitOK || !strings.Contains(stdout, "merged 2 objects, 4 packets") {
		t.Errorf("copy --merge = %d %q %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCmd(t, "flows", "web", "-n", ns, "--kubeconfig", kc, "--where", "resp_port = 53")
	if code != exitOK || !strings.Contains(stdout, "dns "+ns+".example") || strings.Contains(stdout, other) {
		t.Errorf("flows = %d %q %q", code, stdout, stderr)
	}
	code, _, stderr = runCmd(t, "flows", "web", "-n", ns, "--kubeconfig", kc, "--where", "1) OR (1=1) OR (1")
	if code != exitUsage || !strings.Contains(stderr, "is not a column") {
		t.Errorf("hostile flows = %d %q, want exit 2", code, stderr)
	}
	code, _, stderr = runCmd(t, "flows", "web", "-n", other, "--kubeconfig", kc)
	if code != exitError || !strings.Contains(stderr, "may not get") {
		t.Errorf("flows of another namespace = %d %q, want exit 1 and 403's message", code, stderr)
	}
	code, _, stderr = runCmd(t, "captured-packets", "clean", "web", "-n", ns, "--kubeconfig", kc)
	if code != exitError || !strings.Contains(stderr, "may not delete") {
		t.Errorf("clean without delete = %d %q", code, stderr)
	}
	k.GrantCaptureFiles(t, ns, user.Name, "delete")
	code, stdout, stderr = runCmd(t, "captured-packets", "clean", "web", "-n", ns, "--kubeconfig", kc)
	if code != exitOK || !strings.Contains(stdout, "deleted 2 objects of capture uid "+uid) {
		t.Errorf("clean = %d %q %q", code, stdout, stderr)
	}
	for name, args := range map[string][]string{
		"no server": {"flows", "web", "-n", ns, "--kubeconfig", kc, "--server", ""},
		"http":      {"flows", "web", "-n", ns, "--kubeconfig", kc, "--server", "http://127.0.0.1:" + port},
		"no token":  {"flows", "web", "-n", ns, "--kubeconfig", unreachableKubeconfigNoToken(t)},
	} {
		if code, _, stderr := runCmd(t, args...); code != exitUsage {
			t.Errorf("%s: exit %d %q, want 2", name, code, stderr)
		}
	}
}

// unreachableKubeconfigNoToken is a kubeconfig of a server nothing
// listens on and a user without credentials.
func unreachableKubeconfigNoToken(t *testing.T) string {
	return kubeconfigFile(t, "{server: 'https://127.0.0.1:1'}", "{}")
}
