package access

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	chschema "github.com/capstream/capstream/schemas/clickhouse"
)

// apiEnv is the access API running against the real kube-apiserver, S3
// and ClickHouse, and a client that trusts its certificate.
type apiEnv struct {
	kube   *testenv.KubeEnv
	bucket *testenv.S3Bucket
	db     *testenv.ClickHouseDB
	reg    *prometheus.Registry
	url    string
	client *http.Client
	cfg    Config

	mu      sync.Mutex
	queries []string
}

func (e *apiEnv) sent() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.queries...)
}

// serverTLS is the dev CA's server certificate (deps.sh), or fresh
// material when the services predate it.
func serverTLS(t *testing.T) (ca, cert, key string) {
	if ca := testenv.Getenv(testenv.EnvTLSCA); ca != "" {
		dir := filepath.Dir(ca)
		if _, err := os.Stat(filepath.Join(dir, "server.pem")); err == nil {
			return ca, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
		}
	}
	f := testenv.TLS(t)
	return f.CA, f.ServerCert, f.ServerKey
}

func startAPI(t *testing.T, mutate func(*Config)) *apiEnv {
	t.Helper()
	k := testenv.Kube(t)
	b := testenv.S3(t)
	db := testenv.ClickHouse(t)
	if _, err := chschema.Migrate(t.Context(), db.Conn); err != nil {
		t.Fatal(err)
	}
	chCfg, reader := testenv.ClickHouseReaderConfig(db.Database)
	if !reader {
		t.Logf("%s is not set (services from an older deps.sh): flows are queried as the default user with readonly=1", testenv.EnvClickHouseReaderPassword)
	}
	ch, err := chCfg.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	s3, err := b.Config().Client()
	if err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key := serverTLS(t)
	cfg := DefaultConfig()
	cfg.Listen, cfg.CertFile, cfg.KeyFile = "127.0.0.1:0", cert, key
	if mutate != nil {
		mutate(&cfg)
	}
	e := &apiEnv{kube: k, bucket: b, db: db, reg: prometheus.NewRegistry(), cfg: cfg}
	srv, err := New(cfg, Deps{Logger: testenv.Logger(t), Registerer: e.reg, Kube: kube, Dynamic: dyn, S3: s3, Bucket: b.Bucket, ClickHouse: ch,
		OnQuery: func(q string, args []any) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.queries = append(e.queries, q+fmt.Sprintf(" -- values %q", args))
		}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Start(t, "access", srv.Run)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	addr, err := srv.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	_, port, _ := net.SplitHostPort(addr.String())
	e.url = "https://127.0.0.1:" + port
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Minute}
	return e
}

// do makes one request with token (none when empty) and returns the
// status and body.
func (e *apiEnv) do(t *testing.T, method, path, token string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, body, resp.Header
}

func capturePrefix(ns, name string) string {
	return "/v1/namespaces/" + ns + "/packetcaptures/" + name + "/"
}

// fixture is one capture in a namespace with three objects of its live
// UID, flows, and a neighbour capture's data the user must never see.
type fixture struct {
	ns, name, uid string
	objects       map[string][]byte // relative key -> bytes
	t0            time.Time
}

func (e *apiEnv) fixture(t *testing.T) fixture {
	t.Helper()
	ns := e.kube.Namespace(t, nil)
	created := e.kube.CreateCapture(t, ns, "web", `app == "web"`)
	f := fixture{ns: ns, name: "web", uid: string(created.GetUID()), objects: map[string][]byte{},
		t0: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	dir := schemas.CaptureDir("capstream", ns, "web", f.uid)
	put := func(node, pod, ifc string, secs ...int) {
		var recs []testenv.PcapRecord
		for _, s := range secs {
			ts := f.t0.Add(time.Duration(s) * time.Second)
			recs = append(recs, testenv.Record(ts, []byte(fmt.Sprintf("%s packet at %d", ns, s))))
		}
		rel := fmt.Sprintf("%s/%s_%s/%s-%d.pcap", node, pod, ifc, recs[0].Info.Timestamp.Format("20060102T150405.000000000Z"), secs[0])
		f.objects[rel] = e.bucket.PutPcap(t, testenv.PcapObject{Key: dir + rel, Node: node, Pod: pod, Ifc: ifc, Records: recs})
	}
	put("node-a", "web-1", "cali0123456789a", 0, 2)
	put("node-a", "web-1", "cali0123456789a", 4, 5)
	put("node-b", "web-2", "cali0123456789b", 1, 3)
	// An earlier capture with the same name, which no default request
	// may take.
	e.bucket.PutPcap(t, testenv.PcapObject{Key: schemas.CaptureDir("capstream", ns, "web", "old-uid") + "node-a/x_cali1/old.pcap",
		Records: []testenv.PcapRecord{testenv.Record(f.t0, []byte("old"))}})
	e.insertFlows(t, ns, "web", f.t0, 3)
	return f
}

// insertFlows writes n flows of ns/name, the i-th to port 1000+i.
func (e *apiEnv) insertFlows(t *testing.T, ns, name string, t0 time.Time, n int) {
	t.Helper()
	batch, err := e.db.Conn.PrepareBatch(t.Context(), `INSERT INTO flows (namespace, capture, node, pod, record_id, start_time, start_ns, end_time,
		protocol, orig_addr, orig_port, resp_addr, resp_port, orig_packets, resp_packets, orig_bytes, resp_bytes, conn_state, history, dns_query)`)
	if err != nil {
		t.Fatal(err)
	}
	a, b := string(net.ParseIP("10.65.0.2").To16()), string(net.ParseIP("10.65.0.3").To16())
	for i := range n {
		if err := batch.Append(ns, name, "node-a", "web-1", uint64(i+1), t0.Add(time.Duration(i)*time.Second), uint32(7), t0.Add(time.Minute),
			uint8(6), a, uint16(40000+i), b, uint16(1000+i), uint64(3), uint64(2), uint64(300), uint64(200), "SF", "ShADadFf", ns+".example"); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, body, err)
	}
	return v
}

// TestAllowedUserReadsTheirNamespace: a user holding get on
// packetcaptures/files in a namespace lists the capture's objects,
// downloads each (the bytes stored), the merge in time order, and queries
// the capture's flows, and nothing of another capture.
func TestAllowedUserReadsTheirNamespace(t *testing.T) {
	e := startAPI(t, nil)
	user := e.kube.User(t)
	a := e.fixture(t)
	e.kube.GrantCaptureFiles(t, a.ns, user.Name, "get")
	e.insertFlows(t, a.ns, "other-capture", a.t0, 2)

	code, body, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"files", user.Token)
	if code != http.StatusOK {
		t.Fatalf("list = %d %s", code, body)
	}
	list := decode[FileList](t, body)
	if list.UID != a.uid || len(list.Objects) != len(a.objects) {
		t.Fatalf("list uid %s with %d objects, want %s with %d: %s", list.UID, len(list.Objects), a.uid, len(a.objects), body)
	}
	for i, o := range list.Objects {
		if i > 0 && o.First.Before(list.Objects[i-1].First) {
			t.Errorf("objects not oldest first: %v", list.Objects)
		}
		sum := sha256.Sum256(a.objects[o.Key])
		if o.Size != int64(len(a.objects[o.Key])) || o.SHA256 != hex.EncodeToString(sum[:]) || o.Node == "" || o.Pod == "" || o.Interface == "" {
			t.Errorf("object %+v does not describe what was stored", o)
		}
		code, got, h := e.do(t, "GET", capturePrefix(a.ns, a.name)+"files/"+o.Key, user.Token)
		if code != http.StatusOK || !bytes.Equal(got, a.objects[o.Key]) {
			t.Errorf("download %s = %d, %d bytes; want the %d bytes stored", o.Key, code, len(got), len(a.objects[o.Key]))
		}
		if h.Get(SHA256Header) != o.SHA256 || h.Get("Content-Length") != fmt.Sprint(o.Size) {
			t.Errorf("download %s headers %v", o.Key, h)
		}
	}

	code, merged, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"merged", user.Token)
	if code != http.StatusOK {
		t.Fatalf("merged = %d %s", code, merged)
	}
	var secs []int
	for _, r := range testenv.ReadPcapBytes(t, merged) {
		secs = append(secs, int(r.Info.Timestamp.Sub(a.t0)/time.Second))
	}
	if diff := cmp.Diff([]int{0, 1, 2, 3, 4, 5}, secs); diff != "" {
		t.Errorf("merged packets (seconds after t0) -want +got:\n%s", diff)
	}

	code, body, _ = e.do(t, "GET", capturePrefix(a.ns, a.name)+"flows?limit=10", user.Token)
	if code != http.StatusOK {
		t.Fatalf("flows = %d %s", code, body)
	}
	flows := decode[FlowList](t, body)
	var ports []uint16
	for _, f := range flows.Flows {
		ports = append(ports, f.RespPort)
		if f.OrigAddr != "10.65.0.2" || f.DNSQuery != a.ns+".example" {
			t.Errorf("flow %+v", f)
		}
	}
	if diff := cmp.Diff([]uint16{1000, 1001, 1002}, ports); diff != "" {
		t.Errorf("flows of the capture (resp ports) -want +got:\n%s", diff)
	}
	code, body, _ = e.do(t, "GET", capturePrefix(a.ns, a.name)+"flows?where="+url.QueryEscape("resp_port >= 1001")+"&limit=1", user.Token)
	if got := decode[FlowList](t, body); code != http.StatusOK || len(got.Flows) != 1 || got.Flows[0].RespPort != 1001 {
		t.Errorf("flows where resp_port >= 1001 limit 1 = %d %s", code, body)
	}
	if v := testenv.Metric(t, e.reg, "capstream_access_streamed_bytes_total", map[string]string{"endpoint": "download"}); v <= 0 {
		t.Errorf("streamed bytes metric %v", v)
	}
}

// TestOtherNamespaceForbidden: the same user gets 403 for a namespace
// where it holds nothing, on every endpoint.
func TestOtherNamespaceForbidden(t *testing.T) {
	e := startAPI(t, nil)
	user := e.kube.User(t)
	a, b := e.fixture(t), e.fixture(t)
	e.kube.GrantCaptureFiles(t, a.ns, user.Name, "get", "delete")
	for _, p := range []string{"files", "files/" + firstKey(b), "merged", "flows", "flows?where=" + url.QueryEscape("resp_port = 1000")} {
		code, body, _ := e.do(t, "GET", capturePrefix(b.ns, b.name)+p, user.Token)
		if code != http.StatusForbidden || !strings.Contains(string(body), "may not get") {
			t.Errorf("GET %s of namespace b = %d %s, want 403", p, code, body)
		}
	}
	if code, body, _ := e.do(t, "DELETE", capturePrefix(b.ns, b.name)+"files", user.Token); code != http.StatusForbidden {
		t.Errorf("DELETE files of namespace b = %d %s, want 403", code, body)
	}
	if code, _, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"files", user.Token); code != http.StatusOK {
		t.Errorf("list of namespace a = %d, want 200 (the grant works)", code)
	}
	if n := countObjects(t, e, b); n != len(b.objects)+1 {
		t.Errorf("namespace b has %d objects left, want %d", n, len(b.objects)+1)
	}
}

func firstKey(f fixture) string {
	for k := range f.objects {
		return k
	}
	return ""
}

func countObjects(t *testing.T, e *apiEnv, f fixture) int {
	n := 0
	for info := range e.bucket.Client.ListObjects(t.Context(), e.bucket.Bucket, minio.ListObjectsOptions{Prefix: schemas.CaptureDir("capstream", f.ns, f.name, ""), Recursive: true}) {
		if info.Err != nil {
			t.Fatal(info.Err)
		}
		n++
	}
	return n
}

// TestCleanNeedsDelete: get alone does not clean (403, nothing deleted);
// with delete the live UID's objects go and the earlier UID's stay.
func TestCleanNeedsDelete(t *testing.T) {
	e := startAPI(t, nil)
	user := e.kube.User(t)
	a := e.fixture(t)
	e.kube.GrantCaptureFiles(t, a.ns, user.Name, "get")
	code, body, _ := e.do(t, "DELETE", capturePrefix(a.ns, a.name)+"files", user.Token)
	if code != http.StatusForbidden || !strings.Contains(string(body), "may not delete") {
		t.Fatalf("clean without delete = %d %s, want 403", code, body)
	}
	if n := countObjects(t, e, a); n != len(a.objects)+1 {
		t.Fatalf("%d objects after a refused clean, want %d", n, len(a.objects)+1)
	}
	e.kube.GrantCaptureFiles(t, a.ns, user.Name, "delete")
	code, body, _ = e.do(t, "DELETE", capturePrefix(a.ns, a.name)+"files", user.Token)
	if got := decode[Deleted](t, body); code != http.StatusOK || got.Deleted != len(a.objects) || got.UID != a.uid {
		t.Fatalf("clean with delete = %d %s", code, body)
	}
	if n := countObjects(t, e, a); n != 1 {
		t.Errorf("%d objects after clean, want the earlier capture's 1", n)
	}
}

// TestNoTokenUnauthorized: no token, a malformed header or a token the
// API server rejects is 401, and the answer never holds the token.
func TestNoTokenUnauthorized(t *testing.T) {
	e := startAPI(t, nil)
	a := e.fixture(t)
	path := capturePrefix(a.ns, a.name) + "files"
	code, body, h := e.do(t, "GET", path, "")
	if code != http.StatusUnauthorized || decode[Error](t, body).Error == "" || h.Get("WWW-Authenticate") == "" {
		t.Errorf("no token = %d %s %v, want 401 with a JSON error", code, body, h)
	}
	const forged = "forged-token-0123456789abcdef"
	for _, p := range []string{path, capturePrefix(a.ns, a.name) + "flows", "/v1/anything", "/"} {
		code, body, _ := e.do(t, "GET", p, forged)
		if code != http.StatusUnauthorized || strings.Contains(string(body), forged) {
			t.Errorf("GET %s with a forged token = %d %s, want 401 without the token", p, code, body)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", e.url+path, nil)
	req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("basic auth = %d, want 401", resp.StatusCode)
	}
}

// TestReviewCache: a download's requests after the first are answered
// from the cache; a refused token is reviewed each time.
func TestReviewCache(t *testing.T) {
	e := startAPI(t, nil)
	user := e.kube.User(t)
	a := e.fixture(t)
	e.kube.GrantCaptureFiles(t, a.ns, user.Name, "get")
	for range 3 {
		if code, body, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"files/"+firstKey(a), user.Token); code != http.StatusOK {
			t.Fatalf("download = %d %s", code, body)
		}
	}
	if got := testenv.Metric(t, e.reg, "capstream_access_reviews_total", map[string]string{"review": "token"}); got != 1 {
		t.Errorf("%v token reviews for three requests, want 1", got)
	}
	if got := testenv.Metric(t, e.reg, "capstream_access_review_cache_hits_total", nil); got != 4 {
		t.Errorf("%v cache hits, want 4 (2 token, 2 access)", got)
	}
}

// TestHostileFilters sends filters meant to escape the capture's scope
// through the API. Each is refused with 400 and flowfilter's message, or
// returns this capture's rows only; the SQL sent never holds the
// filter's text.
func TestHostileFilters(t *testing.T) {
	e := startAPI(t, nil)
	user := e.kube.User(t)
	a := e.fixture(t)
	e.kube.GrantCaptureFiles(t, a.ns, user.Name, "get")
	b := e.kube.Namespace(t, nil)
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
			code, body, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"flows?limit=1000&where="+url.QueryEscape(tc.where), user.Token)
			sent := e.sent()[before:]
			if tc.want != "" {
				msg := decode[Error](t, body).Error
				if code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
					t.Errorf("= %d %q, want 400 saying %q", code, msg, tc.want)
				}
				if len(sent) != 0 {
					t.Errorf("a refused filter reached ClickHouse: %q", sent)
				}
				t.Logf("refused: %s", clip(msg))
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
			for _, f := range decode[FlowList](t, body).Flows {
				if f.DNSQuery != a.ns+".example" {
					t.Errorf("row of another capture returned: %+v", f)
				}
			}
			t.Logf("sent: %s; rows: %d", strings.Join(strings.Fields(sent[0]), " "), len(decode[FlowList](t, body).Flows))
		})
	}
	// The limit is capped by the server's maxFlowRows.
	code, body, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"flows?limit=99999999", user.Token)
	if got := decode[FlowList](t, body); code != http.StatusOK || got.Limit != e.cfg.MaxFlowRows {
		t.Errorf("limit 99999999 = %d, applied %d, want %d", code, got.Limit, e.cfg.MaxFlowRows)
	}
	for _, q := range []string{"limit=-1", "limit=1e9", "since=yesterday", "where=a&where=b", "format=TSV"} {
		if code, body, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"flows?"+q, user.Token); code != http.StatusBadRequest {
			t.Errorf("flows?%s = %d %s, want 400", q, code, body)
		}
	}
}

// TestHostileKeys: a download key that tries to leave the capture's
// directory is refused, and never returns another capture's object.
func TestHostileKeys(t *testing.T) {
	e := startAPI(t, nil)
	user := e.kube.User(t)
	a, b := e.fixture(t), e.fixture(t)
	e.kube.GrantCaptureFiles(t, a.ns, user.Name, "get")
	bKey := firstKey(b)
	noRedirect := *e.client
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	e.client = &noRedirect
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
		code, body, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"files/"+k, user.Token)
		if bytes.Equal(body, b.objects[bKey]) {
			t.Fatalf("key %q returned namespace b's object", clip(k))
		}
		// 400 from the key check itself, not a miss in S3; or the
		// mux's redirect (307) to the cleaned path (followed, it lands on
		// another authorized route): the key never reaches the store.
		if code != http.StatusBadRequest && code != http.StatusTemporaryRedirect {
			t.Errorf("key %q = %d (%d bytes), want 400 or the mux's 307", clip(k), code, len(body))
		}
	}
	for _, u := range []string{"?uid=../x", "?uid=" + strings.Repeat("a", 200), "?uid=a&uid=b"} {
		if code, _, _ := e.do(t, "GET", capturePrefix(a.ns, a.name)+"files"+u, user.Token); code != http.StatusBadRequest {
			t.Errorf("files%s = %d, want 400", u, code)
		}
	}
	for _, p := range []string{"/v1/namespaces/A_B/packetcaptures/web/files", "/v1/namespaces/" + a.ns + "/packetcaptures/Bad_Name/files"} {
		if code, _, _ := e.do(t, "GET", p, user.Token); code != http.StatusBadRequest {
			t.Errorf("%s = %d, want 400", p, code)
		}
	}
}
