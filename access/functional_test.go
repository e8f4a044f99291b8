package access_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
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

	"github.com/capstream/capstream/access"
	"github.com/capstream/capstream/access/accesstest"
	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
)

// apiEnv is the access API running against the real kube-apiserver, S3
// and ClickHouse, and a client that trusts its certificate.
type apiEnv struct {
	*accesstest.Stores
	*accesstest.API
	cfg access.Config

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

// startAPI runs the API with DefaultConfig changed by mutate (if not
// nil), recording every query it sends.
func startAPI(t *testing.T, mutate func(*access.Config)) *apiEnv {
	t.Helper()
	st := accesstest.NewStores(t)
	ca, cert, key := serverTLS(t)
	cfg := access.DefaultConfig()
	cfg.Listen, cfg.CertFile, cfg.KeyFile = "127.0.0.1:0", cert, key
	if mutate != nil {
		mutate(&cfg)
	}
	e := &apiEnv{Stores: st, cfg: cfg}
	deps := st.Deps
	deps.OnQuery = func(q string, args []any) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.queries = append(e.queries, q+fmt.Sprintf(" -- values %q", args))
	}
	e.API = accesstest.Start(t, cfg, deps, ca)
	return e
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
	ns := e.Kube.Namespace(t, nil)
	created := e.Kube.CreateCapture(t, ns, "web", `app == "web"`)
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
		f.objects[rel] = e.Bucket.PutPcap(t, testenv.PcapObject{Key: dir + rel, Node: node, Pod: pod, Ifc: ifc, Records: recs})
	}
	put("node-a", "web-1", "cali0123456789a", 0, 2)
	put("node-a", "web-1", "cali0123456789a", 4, 5)
	put("node-b", "web-2", "cali0123456789b", 1, 3)
	// An earlier capture with the same name, which no default request
	// may take.
	e.Bucket.PutPcap(t, testenv.PcapObject{Key: schemas.CaptureDir("capstream", ns, "web", "old-uid") + "node-a/x_cali1/old.pcap",
		Records: []testenv.PcapRecord{testenv.Record(f.t0, []byte("old"))}})
	e.insertFlows(t, ns, "web", f.t0, 3)
	return f
}

// startGranted runs the API (DefaultConfig), makes a fixture and a user
// granted verbs on packetcaptures/files in the fixture's namespace.
func startGranted(t *testing.T, verbs ...string) (*apiEnv, testenv.KubeUser, fixture) {
	t.Helper()
	e := startAPI(t, nil)
	user := e.Kube.User(t)
	a := e.fixture(t)
	e.Kube.GrantCaptureFiles(t, a.ns, user.Name, verbs...)
	return e, user, a
}

// insertFlows writes n flows of ns/name, the i-th to port 1000+i.
func (e *apiEnv) insertFlows(t *testing.T, ns, name string, t0 time.Time, n int) {
	t.Helper()
	batch, err := e.DB.Conn.PrepareBatch(t.Context(), `INSERT INTO flows (namespace, capture, node, pod, record_id, start_time, start_ns, end_time,
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
	e, user, a := startGranted(t, "get")
	e.insertFlows(t, a.ns, "other-capture", a.t0, 2)

	code, body, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"files", user.Token)
	if code != http.StatusOK {
		t.Fatalf("list = %d %s", code, body)
	}
	list := decode[access.FileList](t, body)
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
		code, got, h := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"files/"+o.Key, user.Token)
		if code != http.StatusOK || !bytes.Equal(got, a.objects[o.Key]) {
			t.Errorf("download %s = %d, %d bytes; want the %d bytes stored", o.Key, code, len(got), len(a.objects[o.Key]))
		}
		if h.Get(access.SHA256Header) != o.SHA256 || h.Get("Content-Length") != fmt.Sprint(o.Size) {
			t.Errorf("download %s headers %v", o.Key, h)
		}
	}

	code, merged, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"merged", user.Token)
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

	code, body, _ = e.Do(t, "GET", capturePrefix(a.ns, a.name)+"flows?limit=10", user.Token)
	if code != http.StatusOK {
		t.Fatalf("flows = %d %s", code, body)
	}
	flows := decode[access.FlowList](t, body)
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
	code, body, _ = e.Do(t, "GET", capturePrefix(a.ns, a.name)+"flows?where="+url.QueryEscape("resp_port >= 1001")+"&limit=1", user.Token)
	if got := decode[access.FlowList](t, body); code != http.StatusOK || len(got.Flows) != 1 || got.Flows[0].RespPort != 1001 {
		t.Errorf("flows where resp_port >= 1001 limit 1 = %d %s", code, body)
	}
	if v := testenv.Metric(t, e.Registry, "capstream_access_streamed_bytes_total", map[string]string{"endpoint": "download"}); v <= 0 {
		t.Errorf("streamed bytes metric %v", v)
	}
}

// TestOtherNamespaceForbidden: the same user gets 403 for a namespace
// where it holds nothing, on every endpoint.
func TestOtherNamespaceForbidden(t *testing.T) {
	e, user, a := startGranted(t, "get", "delete")
	b := e.fixture(t)
	for _, p := range []string{"files", "files/" + firstKey(b), "merged", "flows", "flows?where=" + url.QueryEscape("resp_port = 1000")} {
		code, body, _ := e.Do(t, "GET", capturePrefix(b.ns, b.name)+p, user.Token)
		if code != http.StatusForbidden || !strings.Contains(string(body), "may not get") {
			t.Errorf("GET %s of namespace b = %d %s, want 403", p, code, body)
		}
	}
	if code, body, _ := e.Do(t, "DELETE", capturePrefix(b.ns, b.name)+"files", user.Token); code != http.StatusForbidden {
		t.Errorf("DELETE files of namespace b = %d %s, want 403", code, body)
	}
	if code, _, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"files", user.Token); code != http.StatusOK {
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
	for info := range e.Bucket.Client.ListObjects(t.Context(), e.Bucket.Bucket, minio.ListObjectsOptions{Prefix: schemas.CaptureDir("capstream", f.ns, f.name, ""), Recursive: true}) {
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
	e, user, a := startGranted(t, "get")
	code, body, _ := e.Do(t, "DELETE", capturePrefix(a.ns, a.name)+"files", user.Token)
	if code != http.StatusForbidden || !strings.Contains(string(body), "may not delete") {
		t.Fatalf("clean without delete = %d %s, want 403", code, body)
	}
	if n := countObjects(t, e, a); n != len(a.objects)+1 {
		t.Fatalf("%d objects after a refused clean, want %d", n, len(a.objects)+1)
	}
	e.Kube.GrantCaptureFiles(t, a.ns, user.Name, "delete")
	code, body, _ = e.Do(t, "DELETE", capturePrefix(a.ns, a.name)+"files", user.Token)
	if got := decode[access.Deleted](t, body); code != http.StatusOK || got.Deleted != len(a.objects) || got.UID != a.uid {
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
	code, body, h := e.Do(t, "GET", path, "")
	if code != http.StatusUnauthorized || decode[access.Error](t, body).Error == "" || h.Get("WWW-Authenticate") == "" {
		t.Errorf("no token = %d %s %v, want 401 with a JSON error", code, body, h)
	}
	const forged = "forged-token-0123456789abcdef"
	for _, p := range []string{path, capturePrefix(a.ns, a.name) + "flows", "/v1/anything", "/"} {
		code, body, _ := e.Do(t, "GET", p, forged)
		if code != http.StatusUnauthorized || strings.Contains(string(body), forged) {
			t.Errorf("GET %s with a forged token = %d %s, want 401 without the token", p, code, body)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), "GET", e.URL+path, nil)
	req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	resp, err := e.Client.Do(req)
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
	e, user, a := startGranted(t, "get")
	for range 3 {
		if code, body, _ := e.Do(t, "GET", capturePrefix(a.ns, a.name)+"files/"+firstKey(a), user.Token); code != http.StatusOK {
			t.Fatalf("download = %d %s", code, body)
		}
	}
	if got := testenv.Metric(t, e.Registry, "capstream_access_reviews_total", map[string]string{"review": "token"}); got != 1 {
		t.Errorf("%v token reviews for three requests, want 1", got)
	}
	if got := testenv.Metric(t, e.Registry, "capstream_access_review_cache_hits_total", nil); got != 4 {
		t.Errorf("%v cache hits, want 4 (2 token, 2 access)", got)
	}
}
