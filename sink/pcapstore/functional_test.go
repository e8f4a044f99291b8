package pcapstore

import (
	"fmt"
	"log/slog"
	"os/exec"
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

// download fetches every object into a temporary directory and returns
// the keys and the local paths in key order, which is time order.
func (e *env) download(t *testing.T) (keys []string, paths []string) {
	t.Helper()
	return sinktest.Download(t, e.s3, "pcaps/")
}

// lastReport is the last status report of the test interface's capture
// and node that the pcap sink published.
func lastReport(t *testing.T, e *env) *schemas.Status {
	t.Helper()
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
	return st
}

// stat returns the object's size and metadata.
func (e *env) stat(t *testing.T, key string) minio.ObjectInfo {
	t.Helper()
	st, err := e.s3.Client.StatObject(t.Context(), e.s3.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// oneObject starts a sink with cfg, publishes batches (a whole run of the
// pcap file in) and waits up to timeout for their acks. They must have
// made one object holding the packets of in, in order: it returns its key
// and the path of its copy.
func oneObject(t *testing.T, e *env, cfg Config, in string, batches []sinktest.Batch, timeout time.Duration) (key, path string) {
	t.Helper()
	start(t, e, cfg)
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, timeout)
	keys, paths := e.download(t)
	if len(keys) != 1 {
		t.Fatalf("%d objects, want 1", len(keys))
	}
	if diff := cmp.Diff(sinktest.Packets(t, in), sinktest.Packets(t, paths...)); diff != "" {
		t.Errorf("packets (-input +object):\n%s", diff)
	}
	return keys[0], paths[0]
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
	keys, paths := e.download(t)
	if len(keys) < 3 {
		t.Fatalf("%d objects, want several rolled at 64 KiB", len(keys))
	}
	if diff := cmp.Diff(sinktest.Packets(t, in), sinktest.Packets(t, paths...)); diff != "" {
		t.Errorf("packets (-input +objects):\n%s", diff)
	}
	want := map[string]indexed{}
	for i, k := range keys {
		want[k] = capinfosIndex(t, k, paths[i])
		st := e.stat(t, k)
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
	st := lastReport(t, e)
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
			key, path := oneObject(t, e, cfg, in, batches, 20*time.Second)
			if got, want := e.stat(t, key).UserMetadata["Capstream-Batches"], fmt.Sprintf("1-%d", len(batches)); got != want {
				t.Errorf("batches metadata %q, want %q", got, want)
			}
			idx := index(t, e)
			if want := capinfosIndex(t, key, path); idx[key] != want {
				t.Errorf("pcap_objects row %+v, capinfos %+v", idx[key], want)
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
	if keys, _ := e.download(t); len(keys) != 0 {
		t.Errorf("objects %v, want none", keys)
	}
	if n := testutil.ToFloat64(s.Sink.run.M.Batches.WithLabelValues("empty")); n != 1 {
		t.Errorf("empty batches counted %v, want 1", n)
	}
}
