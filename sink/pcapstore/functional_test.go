package pcapstore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

type env struct {
	*sinktest.Env
	s3 *testenv.S3Bucket
}

func setup(t *testing.T) *env {
	e := &env{Env: sinktest.Setup(t, schemas.PcapSinkConsumer())}
	e.s3 = testenv.S3(t)
	return e
}

func (e *env) config() Config {
	cfg := DefaultConfig()
	cfg.S3 = e.s3.Config()
	cfg.Prefix = "pcaps"
	cfg.MaxObjectBytes = 64 << 10
	cfg.StopAfter = 500 * time.Millisecond
	cfg.Consumer, cfg.GracePeriod = sinktest.Consumer(), sinktest.GracePeriod
	return cfg
}

// instance is one running sink (see sinktest.Instance: stop, kill).
type instance = sinktest.Running[*Sink]

func start(t *testing.T, e *env, cfg Config) *instance {
	t.Helper()
	in := sinktest.Connect(t, e.Env, e.DB.Addr, slog.LevelWarn)
	s3, err := cfg.S3.Client()
	if err != nil {
		t.Fatal(err)
	}
	deps := in.Deps
	deps.S3 = s3
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	in.Run("pcap sink", s.Run)
	return &instance{Instance: in, Sink: s}
}

func waitDrained(t *testing.T, e *env, timeout time.Duration) {
	t.Helper()
	e.WaitDrained(t, schemas.ConsumerPcapSink, timeout, false)
}

func traffic(t *testing.T, rounds int) (string, []sinktest.Batch) { return sinktest.Traffic(t, rounds) }

// download fetches every object into dir and returns the local paths in
// key order, which is time order.
func download(t *testing.T, e *env, dir string) (keys []string, paths []string) {
	t.Helper()
	for info := range e.s3.Client.ListObjects(t.Context(), e.s3.Bucket, minio.ListObjectsOptions{Prefix: "pcaps/", Recursive: true}) {
		if info.Err != nil {
			t.Fatal(info.Err)
		}
		keys = append(keys, info.Key)
	}
	sort.Strings(keys)
	for i, k := range keys {
		obj, err := e.s3.Client.GetObject(t.Context(), e.s3.Bucket, k, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("%03d.pcap", i))
		f, _ := os.Create(p)
		if _, err := io.Copy(f, obj); err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		f.Close()
		obj.Close()
		paths = append(paths, p)
	}
	return keys, paths
}

func packetsOf(t *testing.T, paths ...string) []string {
	t.Helper()
	var all []string
	for _, p := range paths {
		pk, err := sinktest.TcpdumpPackets(p)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pk...)
	}
	return all
}

// samePackets checks that the objects at paths hold the packets of the
// pcap file in, each exactly once, in any order: a batch redelivered after
// a crash may land in a later object than its neighbours. It returns the
// number of packets in in.
func samePackets(t *testing.T, in string, paths []string, what string) int {
	t.Helper()
	want, got := packetsOf(t, in), packetsOf(t, paths...)
	sort.Strings(want)
	sort.Strings(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("packets %s (-input +objects):\n%s", what, diff)
	}
	return len(want)
}

type indexed struct {
	Key     string
	Packets uint64
	First   string
	Last    string
}

func index(t *testing.T, e *env) map[string]indexed {
	t.Helper()
	rows, err := e.DB.Conn.Query(t.Context(), `SELECT key, packets, first_time, first_ns, last_time, last_ns FROM pcap_objects FINAL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]indexed{}
	for rows.Next() {
		var r indexed
		var ft, lt time.Time
		var fns, lns uint32
		if err := rows.Scan(&r.Key, &r.Packets, &ft, &fns, &lt, &lns); err != nil {
			t.Fatal(err)
		}
		r.First = fmt.Sprintf("%d.%09d", ft.Unix(), fns)
		r.Last = fmt.Sprintf("%d.%09d", lt.Unix(), lns)
		if _, dup := out[r.Key]; dup {
			t.Errorf("pcap_objects has %s twice", r.Key)
		}
		out[r.Key] = r
	}
	return out
}

// capinfosIndex describes an object as capinfos sees it.
func capinfosIndex(t *testing.T, key, path string) indexed {
	t.Helper()
	out, err := exec.Command("capinfos", "-T", "-r", "-c", "-a", "-e", "-S", path).Output()
	if err != nil {
		t.Fatalf("capinfos %s: %v", path, err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), "\t")
	if len(f) != 4 {
		t.Fatalf("capinfos output %q", out)
	}
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return indexed{Key: key, Packets: n, First: f[2], Last: f[3]}
}

func TestFunctionalPcapRoundTrip(t *testing.T) {
	e := setup(t)
	in, batches := traffic(t, 40)
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches); err != nil {
		t.Fatal(err)
	}
	s := start(t, e, e.config())
	waitDrained(t, e, 30*time.Second)
	if err := s.Sink.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	s.Stop()
	keys, paths := download(t, e, t.TempDir())
	if len(keys) < 3 {
		t.Fatalf("%d objects, want several rolled at 64 KiB", len(keys))
	}
	if diff := cmp.Diff(packetsOf(t, in), packetsOf(t, paths...)); diff != "" {
		t.Errorf("packets (-input +objects):\n%s", diff)
	}
	want := map[string]indexed{}
	for i, k := range keys {
		want[k] = capinfosIndex(t, k, paths[i])
		st, err := e.s3.Client.StatObject(t.Context(), e.s3.Bucket, k, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if st.Size > 64<<10 {
			t.Errorf("%s: %d bytes, above the 64 KiB limit", k, st.Size)
		}
		if got := st.UserMetadata["Capstream-Packets"]; got != strconv.FormatUint(want[k].Packets, 10) {
			t.Errorf("%s: packets metadata %q, capinfos %d", k, got, want[k].Packets)
		}
		if !strings.HasPrefix(k, "pcaps/team-a/web.capture/0b1c2d3e-uid/node-1/web-0_cali1234567890a/20261127T1000") {
			t.Errorf("key %s does not follow the layout", k)
		}
	}
	if diff := cmp.Diff(want, index(t, e)); diff != "" {
		t.Errorf("pcap_objects (-capinfos +index):\n%s", diff)
	}
	// The last status report lists every object and the total.
	stream, err := e.NATS.JS.Stream(t.Context(), schemas.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := schemas.ReportSubject(&schemas.Status{Source: schemas.SourcePcapSink, Namespace: "team-a", Name: "web.capture", Node: "node-1"})
	raw, err := stream.GetLastMsgForSubject(t.Context(), subj)
	if err != nil {
		t.Fatal(err)
	}
	st, err := schemas.DecodeStatus(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, w := range want {
		total += w.Packets
	}
	if st.Source != schemas.SourcePcapSink || st.Packets != total || len(st.Objects) != len(keys) ||
		st.Directory != "s3://"+e.s3.Bucket+"/pcaps/team-a/web.capture/0b1c2d3e-uid/node-1/" || !cmp.Equal(st.Interfaces, []string{"cali1234567890a"}) {
		t.Errorf("status: %+v, want %d packets in %d objects", st, total, len(keys))
	}
}

func TestFunctionalPcapRollsOnAge(t *testing.T) {
	e := setup(t)
	_, batches := traffic(t, 4)
	cfg := e.config()
	cfg.MaxObjectBytes = 1 << 20
	cfg.MaxObjectAge = time.Second
	cfg.StopAfter = time.Minute
	s := start(t, e, cfg)
	for _, b := range batches {
		if err := sinktest.Publish(t.Context(), e.NATS.JS, []sinktest.Batch{b}); err != nil {
			t.Fatal(err)
		}
	}
	waitDrained(t, e, 20*time.Second)
	s.Stop()
	if n := len(index(t, e)); n != 1 {
		t.Errorf("%d objects, want 1 completed on age", n)
	}
}

func TestFunctionalPcapCrashRestart(t *testing.T) {
	e := setup(t)
	in, batches := traffic(t, 60)
	cfg := e.config()
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	s := start(t, e, cfg)
	next := 0
	for kill := 0; kill < 4; kill++ {
		n := min(len(batches)-next, 1+rnd.Intn(len(batches)/4))
		if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[next:next+n]); err != nil {
			t.Fatal(err)
		}
		next += n
		time.Sleep(time.Duration(rnd.Intn(600)) * time.Millisecond)
		s.Kill(rnd.Intn(2) == 0)
		s = start(t, e, cfg)
	}
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[next:]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 60*time.Second)
	s.Stop()
	if got := s.Metric("capstream_sink_pcap_lost_batches_total", nil); got != 0 {
		t.Errorf("the last sink counted %v lost batches among redeliveries, want 0", got)
	}
	keys, paths := download(t, e, t.TempDir())
	npackets := samePackets(t, in, paths, "after crashes")
	idx := index(t, e)
	if len(idx) != len(keys) {
		t.Errorf("pcap_objects has %d rows for %d objects", len(idx), len(keys))
	}
	var total uint64
	for _, r := range idx {
		total += r.Packets
	}
	if total != uint64(npackets) {
		t.Errorf("pcap_objects counts %d packets, input has %d", total, npackets)
	}
}

func TestFunctionalPcapS3Outage(t *testing.T) {
	outage, iterating := sinktest.Outage()
	e := setup(t)
	proxy, err := sinktest.NewProxy(e.s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	in, batches := traffic(t, 60)
	cfg := e.config()
	cfg.S3.Endpoint = proxy.Addr
	cfg.MaxBufferedBytes = 256 << 10
	s := start(t, e, cfg)
	third := len(batches) / 3
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[:third]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 30*time.Second)
	proxy.Down()
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[third:]); err != nil {
		t.Fatal(err)
	}
	// While S3 is away the sink holds at most its budget plus one batch
	// and one pcap header, and stops pulling.
	var peak float64
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, s.Metric("capstream_sink_pcap_buffered_bytes", nil))
		if iterating {
			t.Logf("buffered %.0f open %.0f pending %.0f", s.Metric("capstream_sink_pcap_buffered_bytes", nil), s.Metric("capstream_sink_pcap_open_objects", nil), s.Metric("capstream_sink_pcap_pending_batches", nil))
		}
	}
	if limit := float64(cfg.MaxBufferedBytes + 16<<10 + 24); peak > limit {
		t.Errorf("buffered %0.f bytes during the outage, budget %0.f", peak, limit)
	}
	if s.Sink.Ready() == nil {
		t.Error("Ready during the S3 outage")
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 90*time.Second)
	s.Stop()
	_, paths := download(t, e, t.TempDir())
	samePackets(t, in, paths, "after the outage")
	t.Logf("peak buffered during the outage: %.0f bytes", peak)
}

func TestFunctionalPcapReplicas(t *testing.T) {
	e := setup(t)
	in, batches := traffic(t, 60)
	cfg := e.config()
	a, b := start(t, e, cfg), start(t, e, cfg)
	both := []*instance{a, b}
	half := len(batches) / 2
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[:half]); err != nil {
		t.Fatal(err)
	}
	// Kill a replica while it holds batches, so they come back to the
	// other one.
	b = sinktest.KillHolder(t, a, b, func(x *instance) bool { return x.Metric("capstream_sink_pcap_pending_batches", nil) > 0 })
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches[half:]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 60*time.Second)
	b.Stop()
	_, paths := download(t, e, t.TempDir())
	samePackets(t, in, paths, "with two replicas")
	// Each replica saw a part of every run, and the redeliveries: no gap
	// is provable, none is counted.
	for _, x := range both {
		if got := x.Metric("capstream_sink_pcap_lost_batches_total", nil); got != 0 {
			t.Errorf("a replica counted %v lost batches, want 0", got)
		}
	}
}

func TestFunctionalPcapAbortsStaleUploads(t *testing.T) {
	e := setup(t)
	core := minio.Core{Client: e.s3.Client}
	stale, err := core.NewMultipartUpload(t.Context(), e.s3.Bucket, "pcaps/ns/cap/0b1c2d3e-uid/node/pod_cali0/20261127T100000.000000000Z-1.pcap", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := core.NewMultipartUpload(t.Context(), e.s3.Bucket, "elsewhere/x.pcap", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer core.AbortMultipartUpload(context.Background(), e.s3.Bucket, "elsewhere/x.pcap", other)
	cfg := e.config()
	cfg.GracePeriod = time.Second
	cfg.StaleUploadAge = 2 * time.Second
	start(t, e, cfg)
	testenv.Eventually(t, 15*time.Second, func() error {
		var left []string
		for u := range e.s3.Client.ListIncompleteUploads(t.Context(), e.s3.Bucket, "", true) {
			if u.Err != nil {
				return u.Err
			}
			left = append(left, u.UploadID)
		}
		if len(left) != 1 || left[0] != other {
			return fmt.Errorf("incomplete uploads %v, want only %s (not %s)", left, other, stale)
		}
		return nil
	})
}

// A last batch completes the interface's object at once, with StopAfter
// far away: with records in it, or empty (the capture stopped with nothing
// left to send), when it is held by the object and acked with it.
func TestFunctionalPcapLastBatch(t *testing.T) {
	for _, empty := range []bool{false, true} {
		t.Run(fmt.Sprintf("empty=%v", empty), func(t *testing.T) {
			e := setup(t)
			in, batches := traffic(t, 4)
			batches = sinktest.EndRun(batches, empty)
			cfg := e.config()
			cfg.MaxObjectBytes = 16 << 20
			cfg.StopAfter = time.Hour
			cfg.MaxObjectAge = time.Hour
			start(t, e, cfg)
			if err := sinktest.Publish(t.Context(), e.NATS.JS, batches); err != nil {
				t.Fatal(err)
			}
			waitDrained(t, e, 20*time.Second)
			keys, paths := download(t, e, t.TempDir())
			if len(keys) != 1 {
				t.Fatalf("%d objects, want 1 completed by the last batch", len(keys))
			}
			if diff := cmp.Diff(packetsOf(t, in), packetsOf(t, paths...)); diff != "" {
				t.Errorf("packets (-input +object):\n%s", diff)
			}
			st, err := e.s3.Client.StatObject(t.Context(), e.s3.Bucket, keys[0], minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := st.UserMetadata["Capstream-Batches"], fmt.Sprintf("1-%d", len(batches)); got != want {
				t.Errorf("batches metadata %q, want %q", got, want)
			}
			idx := index(t, e)
			if want := capinfosIndex(t, keys[0], paths[0]); idx[keys[0]] != want {
				t.Errorf("pcap_objects row %+v, capinfos %+v", idx[keys[0]], want)
			}
		})
	}
}

// An empty last batch for an interface with nothing open is acked and
// stores nothing.
func TestFunctionalPcapLastBatchAlone(t *testing.T) {
	e := setup(t)
	h := sinktest.Header("team-a", "web.capture", "0b1c2d3e-uid", "node-1", "web-0", "cali1234567890a")
	h.Seq, h.Last = 7, true
	cfg := e.config()
	cfg.StopAfter = time.Hour
	s := start(t, e, cfg)
	if err := sinktest.Publish(t.Context(), e.NATS.JS, []sinktest.Batch{{Header: h}}); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 10*time.Second)
	if keys, _ := download(t, e, t.TempDir()); len(keys) != 0 {
		t.Errorf("objects %v, want none", keys)
	}
	if n := testutil.ToFloat64(s.Sink.run.M.Batches.WithLabelValues("empty")); n != 1 {
		t.Errorf("empty batches counted %v, want 1", n)
	}
}

// A 253-byte pod name (the most Kubernetes allows) makes "<pod>_<iface>"
// longer than a file name may be; the object still lands, under a
// shortened segment, with the full names in its metadata and its row.
func TestFunctionalPcapLongPodName(t *testing.T) {
	e := setup(t)
	label := strings.Repeat("p", 63)
	pod := label + "." + label + "." + label + "." + label[:61] // 253 bytes
	h := sinktest.Header("team-a", "web.capture", "0b1c2d3e-uid", "node-1", pod, "cali1234567890a")
	g := sinktest.Mixed(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), 2, 5000)
	in, _ := sinktest.TrafficOf(t, g.Pkts)
	batches := sinktest.EndRun(sinktest.Batches(h, g.Pkts, 64<<10), false)
	cfg := e.config()
	cfg.MaxObjectBytes = 16 << 20
	start(t, e, cfg)
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 30*time.Second)
	keys, paths := download(t, e, t.TempDir())
	if len(keys) != 1 {
		t.Fatalf("%d objects, want 1", len(keys))
	}
	for _, seg := range strings.Split(keys[0], "/") {
		if len(seg) > schemas.MaxKeySegment {
			t.Errorf("key segment of %d bytes: %s", len(seg), seg)
		}
	}
	if !strings.Contains(keys[0], "/"+schemas.KeySegment(pod+"_cali1234567890a")+"/") {
		t.Errorf("key %s lacks the shortened pod segment", keys[0])
	}
	if diff := cmp.Diff(packetsOf(t, in), packetsOf(t, paths...)); diff != "" {
		t.Errorf("packets (-input +object):\n%s", diff)
	}
	st, err := e.s3.Client.StatObject(t.Context(), e.s3.Bucket, keys[0], minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.UserMetadata["Capstream-Pod"] != pod {
		t.Errorf("pod metadata %q, want the full name", st.UserMetadata["Capstream-Pod"])
	}
	var rowPod string
	if err := e.DB.Conn.QueryRow(t.Context(), "SELECT pod FROM pcap_objects FINAL WHERE key = ?", keys[0]).Scan(&rowPod); err != nil {
		t.Fatal(err)
	}
	if rowPod != pod {
		t.Errorf("pcap_objects pod %q, want the full name", rowPod)
	}
}

// A capture deleted and re-created under the same name has a new UID, and
// the same producer may number its batches from 1 again. Each capture's
// objects land under its own UID's directory, hold its packets only, and
// the status report of the new one points at its own directory.
func TestFunctionalPcapKeysByUID(t *testing.T) {
	e := setup(t)
	const oldUID, newUID = "0b1c2d3e-old", "9f8e7d6c-new"
	cfg := e.config()
	cfg.MaxObjectBytes = 16 << 20
	start(t, e, cfg)
	inputs := map[string]string{}
	for i, uid := range []string{oldUID, newUID} {
		h := sinktest.Header("team-a", "web.capture", uid, "node-1", "web-0", "cali1234567890a")
		g := sinktest.Mixed(time.Date(2026, 11, 27, 10, i, 0, 0, time.UTC), 2, 2000)
		in, _ := sinktest.TrafficOf(t, g.Pkts)
		inputs[uid] = in
		if err := sinktest.Publish(t.Context(), e.NATS.JS, sinktest.EndRun(sinktest.Batches(h, g.Pkts, 16<<10), false)); err != nil {
			t.Fatal(err)
		}
		waitDrained(t, e, 30*time.Second)
	}
	keys, paths := download(t, e, t.TempDir())
	byUID := map[string][]string{}
	for i, k := range keys {
		rest, ok := strings.CutPrefix(k, schemas.CaptureDir("pcaps", "team-a", "web.capture", ""))
		uid, _, _ := strings.Cut(rest, "/")
		if !ok || !strings.HasPrefix(k, schemas.CaptureDir("pcaps", "team-a", "web.capture", uid)+"node-1/web-0_cali1234567890a/") {
			t.Errorf("key %s does not follow <prefix>/<ns>/<capture>/<uid>/<node>/<pod>_<iface>/", k)
		}
		st, err := e.s3.Client.StatObject(t.Context(), e.s3.Bucket, k, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := st.UserMetadata["Capstream-Capture-Uid"]; got != uid {
			t.Errorf("%s: uid metadata %q, key says %q", k, got, uid)
		}
		byUID[uid] = append(byUID[uid], paths[i])
	}
	if len(byUID) != 2 {
		t.Fatalf("objects under %d UIDs (%v), want 2", len(byUID), keys)
	}
	for uid, in := range inputs {
		if diff := cmp.Diff(packetsOf(t, in), packetsOf(t, byUID[uid]...)); diff != "" {
			t.Errorf("packets of %s (-input +objects):\n%s", uid, diff)
		}
	}
	stream, err := e.NATS.JS.Stream(t.Context(), schemas.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := schemas.ReportSubject(&schemas.Status{Source: schemas.SourcePcapSink, Namespace: "team-a", Name: "web.capture", Node: "node-1"})
	raw, err := stream.GetLastMsgForSubject(t.Context(), subj)
	if err != nil {
		t.Fatal(err)
	}
	st, err := schemas.DecodeStatus(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	if want := "s3://" + e.s3.Bucket + "/pcaps/team-a/web.capture/" + newUID + "/node-1/"; st.UID != newUID || st.Directory != want || len(st.Objects) != len(byUID[newUID]) {
		t.Errorf("last status: uid %s directory %s, %d objects; want %s, %s, %d", st.UID, st.Directory, len(st.Objects), newUID, want, len(byUID[newUID]))
	}
}
