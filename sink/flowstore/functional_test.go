package flowstore

import (
	"fmt"
	"log/slog"
	"math/rand"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.StopAfter = 300 * time.Millisecond
	cfg.FlushInterval = 100 * time.Millisecond
	cfg.Consumer, cfg.GracePeriod = sinktest.Consumer(), sinktest.GracePeriod
	return cfg
}

// instance is one running sink (see sinktest.Instance: stop, kill).
type instance = sinktest.Running[*Sink]

func start(t *testing.T, srv *testenv.NATSServer, db *testenv.ClickHouseDB, cfg Config) *instance {
	t.Helper()
	return startVia(t, srv, db.Addr, db, cfg, nil)
}

// startVia starts a sink whose ClickHouse connection goes to addr (a
// proxy in the outage test). hook, if set, is the sink's flush hook.
func startVia(t *testing.T, srv *testenv.NATSServer, addr string, db *testenv.ClickHouseDB, cfg Config, hook func(in *instance, point string)) *instance {
	t.Helper()
	c := sinktest.Connect(t, &sinktest.Env{NATS: srv, DB: db}, addr, slog.LevelError)
	s, err := New(cfg, c.Deps)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{Instance: c, Sink: s}
	if hook != nil {
		s.hook = func(point string) { hook(in, point) }
	}
	c.Run("flow sink", s.Run)
	return in
}

func setup(t *testing.T) (*testenv.NATSServer, *testenv.ClickHouseDB) {
	e := sinktest.Setup(t, schemas.FlowSinkConsumer())
	return e.NATS, e.DB
}

func waitDrained(t *testing.T, srv *testenv.NATSServer, timeout time.Duration) {
	t.Helper()
	(&sinktest.Env{NATS: srv}).WaitDrained(t, schemas.ConsumerFlowSink, timeout, true)
}

// distinct returns the distinct values of the string expression expr over
// the flows, sorted.
func distinct(t *testing.T, db *testenv.ClickHouseDB, expr string) []string {
	t.Helper()
	rows, err := db.Conn.Query(t.Context(), "SELECT DISTINCT "+expr+" FROM flows FINAL")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func replayPcap(t *testing.T, rounds int) (string, []sinktest.Batch) {
	return sinktest.Traffic(t, rounds)
}

func TestFunctionalFlowsMatchTshark(t *testing.T) {
	srv, db := setup(t)
	path, batches := replayPcap(t, 20)
	if err := sinktest.Publish(t.Context(), srv.JS, batches); err != nil {
		t.Fatal(err)
	}
	in := start(t, srv, db, testConfig())
	waitDrained(t, srv, 30*time.Second)
	if err := in.Sink.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	in.Stop()
	want := sinktest.TsharkSums(t, path)
	if diff := cmp.Diff(want, sinktest.FlowSums(t, db.Conn)); diff != "" {
		t.Errorf("flows (-tshark +sink):\n%s", diff)
	}
	// Hints where the traffic has them.
	var dns, nx, sni, host uint64
	row := db.Conn.QueryRow(t.Context(), `SELECT countIf(dns_query != '' AND dns_rcode = 0), countIf(dns_rcode = 3),
		countIf(tls_sni = 'secure.example.com'), countIf(http_host = 'web.example.com') FROM flows FINAL`)
	if err := row.Scan(&dns, &nx, &sni, &host); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([4]uint64{14, 6, 20, 20}, [4]uint64{dns, nx, sni, host}); diff != "" {
		t.Errorf("hints dns/nxdomain/sni/host (-want +got):\n%s", diff)
	}
	states := distinct(t, db, "concat(toString(protocol), ' ', conn_state, ' ', history)")
	if diff := cmp.Diff([]string{"17 SF ", "6 SF ShADadFf"}, states); diff != "" {
		t.Errorf("conn states (-want +got):\n%s", diff)
	}
}

func TestFunctionalFlowsCrashRestart(t *testing.T) {
	srv, db := setup(t)
	path, batches := replayPcap(t, 40)
	cfg := testConfig()
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	in := start(t, srv, db, cfg)
	next := 0
	for kill := 0; kill < 4; kill++ {
		n := min(len(batches)-next, 1+rnd.Intn(len(batches)/4))
		if err := sinktest.Publish(t.Context(), srv.JS, batches[next:next+n]); err != nil {
			t.Fatal(err)
		}
		next += n
		time.Sleep(time.Duration(rnd.Intn(400)) * time.Millisecond) // a random point in the replay
		in.Kill(rnd.Intn(2) == 0)
		in = start(t, srv, db, cfg)
	}
	if err := sinktest.Publish(t.Context(), srv.JS, batches[next:]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, srv, 60*time.Second)
	in.Stop()
	if got := in.Metric("capstream_sink_flows_lost_batches_total", nil); got != 0 {
		t.Errorf("the last sink counted %v lost batches among redeliveries, want 0", got)
	}
	if diff := cmp.Diff(sinktest.TsharkSums(t, path), sinktest.FlowSums(t, db.Conn)); diff != "" {
		t.Errorf("flows after crashes (-tshark +sink):\n%s", diff)
	}
}

// longFlowPcap is a UDP flow that lasts the whole replay, with short TCP
// connections along it. Every conversation stays under 10 kB, above which
// tshark prints sizes with units.
func longFlowPcap(t *testing.T) (string, []sinktest.Batch) {
	g := sinktest.NewGen(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), time.Millisecond)
	cli, srv := net.IPv4(10, 65, 0, 2), net.IPv4(10, 96, 0, 10)
	resp := make([]byte, 2000)
	for i := range 100 {
		g.UDP(cli, srv, 30000, 5000, []byte("ping"))
		g.UDP(srv, cli, 5000, 30000, []byte("pong!"))
		g.Conn(cli, srv, uint16(20000+i), 80, []byte("GET /x HTTP/1.1\r\nHost: web.example.com\r\n\r\n"), resp, 1400)
	}
	return sinktest.TrafficOf(t, g.Pkts)
}

// TestFunctionalFlowsCrashInFlush kills the sink inside a flush, at each
// point where part of its writes are in ClickHouse: records staged but not
// committed, and committed but not published. Before migration 004 both
// points were one: records inserted, ledger not written. The first half of
// the replay is flushed (stop) when the crash comes; then the second half
// is published and a new sink started that keeps its records open (long
// StopAfter) while the dead sink's batches come back after AckWait. Their
// packets join the open record of the long UDP flow, whose ID comes from
// its first packet in the second half: if the crashed flush's records are
// visible without a commit covering them, the first half of that flow is
// counted twice.
func TestFunctionalFlowsCrashInFlush(t *testing.T) {
	for _, point := range []string{"staged", "committed"} {
		t.Run(point, func(t *testing.T) {
			srv, db := setup(t)
			path, batches := longFlowPcap(t)
			half := len(batches) / 2
			if err := sinktest.Publish(t.Context(), srv.JS, batches[:half]); err != nil {
				t.Fatal(err)
			}
			crashed := make(chan struct{})
			var once sync.Once
			in := startVia(t, srv, db.Addr, db, testConfig(), func(in *instance, p string) {
				if p != point {
					return
				}
				// The process dies here: no write and no ack gets out.
				once.Do(func() {
					in.CH.Close()
					in.NC.Close()
					close(crashed)
				})
			})
			select {
			case <-crashed:
			case <-time.After(30 * time.Second):
				t.Fatalf("no flush reached %q", point)
			}
			in.Kill(false)
			var staged, committed, visible uint64
			if err := db.Conn.QueryRow(t.Context(), `SELECT (SELECT count() FROM flow_staging), (SELECT count() FROM flow_commits),
				(SELECT count() FROM flows)`).Scan(&staged, &committed, &visible); err != nil {
				t.Fatal(err)
			}
			t.Logf("at the crash: %d staged records, %d commit rows, %d records in flows", staged, committed, visible)
			if staged == 0 || (point == "committed") != (committed > 0) || visible != 0 {
				t.Fatalf("crash at %q left %d staged records, %d commit rows, %d records in flows", point, staged, committed, visible)
			}
			if err := sinktest.Publish(t.Context(), srv.JS, batches[half:]); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			cfg.StopAfter = 2 * sinktest.AckWait
			in = start(t, srv, db, cfg)
			waitDrained(t, srv, 60*time.Second)
			in.Stop()
			if diff := cmp.Diff(sinktest.TsharkSums(t, path), sinktest.FlowSums(t, db.Conn)); diff != "" {
				t.Errorf("flows after a crash at %q (-tshark +sink):\n%s", point, diff)
			}
		})
	}
}

func TestFunctionalFlowsClickHouseOutage(t *testing.T) {
	outage, _ := sinktest.Outage()
	srv, db := setup(t)
	proxy, err := sinktest.NewProxy(db.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	path, batches := replayPcap(t, 40)
	cfg := testConfig()
	in := startVia(t, srv, proxy.Addr, db, cfg, nil)
	third := len(batches) / 3
	if err := sinktest.Publish(t.Context(), srv.JS, batches[:third]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, srv, 30*time.Second)
	proxy.Down()
	if err := sinktest.Publish(t.Context(), srv.JS, batches[third:]); err != nil {
		t.Fatal(err)
	}
	// While ClickHouse is away, the sink stops pulling once an insert
	// failed: the batches it holds stay few.
	var peak int
	for end := time.Now().Add(outage); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, in.Sink.pendingBatches())
	}
	proxy.EndOutage(t, "ClickHouse", in.Sink.Ready)
	waitDrained(t, srv, 90*time.Second)
	in.Stop()
	if diff := cmp.Diff(sinktest.TsharkSums(t, path), sinktest.FlowSums(t, db.Conn)); diff != "" {
		t.Errorf("flows after the outage (-tshark +sink):\n%s", diff)
	}
	t.Logf("at most %d batches held during the outage, of %d published", peak, len(batches)-third)
}

func TestFunctionalFlowsTermMalformed(t *testing.T) {
	srv, db := setup(t)
	_, batches := replayPcap(t, 1)
	bad := batches[0]
	bad.Header.Packets++ // the body holds one record less than the header says
	bad.Header.Seq = 1000
	wrongSubject := batches[0]
	wrongSubject.Header.Seq = 1001
	m := wrongSubject.Msg()
	m.Subject = "capstream.pkt.other.web_capture.node-1"
	if err := sinktest.Publish(t.Context(), srv.JS, append([]sinktest.Batch{bad}, batches...)); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.JS.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	in := start(t, srv, db, testConfig())
	waitDrained(t, srv, 30*time.Second)
	if terminated := in.Metric("capstream_sink_flows_batches_total", map[string]string{"result": "terminated"}); terminated != 2 {
		t.Errorf("%v batches terminated, want 2", terminated)
	}
}

func TestFunctionalFlowsReplicas(t *testing.T) {
	srv, db := setup(t)
	path, batches := replayPcap(t, 40)
	a, b := start(t, srv, db, testConfig()), start(t, srv, db, testConfig())
	both := []*instance{a, b}
	half := len(batches) / 2
	if err := sinktest.Publish(t.Context(), srv.JS, batches[:half]); err != nil {
		t.Fatal(err)
	}
	// Kill a replica while it holds batches, so they come back to the
	// other one.
	b = sinktest.KillHolder(t, a, b, func(x *instance) bool { return x.Sink.pendingBatches() > 0 })
	if err := sinktest.Publish(t.Context(), srv.JS, batches[half:]); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, srv, 60*time.Second)
	b.Stop()
	if diff := cmp.Diff(sinktest.TsharkSums(t, path), sinktest.FlowSums(t, db.Conn)); diff != "" {
		t.Errorf("flows with two replicas (-tshark +sink):\n%s", diff)
	}
	// The killed replica's partition moved to the other, whose first
	// deliveries of it came before the redeliveries: no gap is provable,
	// none is counted.
	for _, x := range both {
		if got := x.Metric("capstream_sink_flows_lost_batches_total", nil); got != 0 {
			t.Errorf("a replica counted %v lost batches, want 0", got)
		}
	}
}

// A last batch releases the interface's records at once (end reason
// "stop"), with StopAfter far away: with packets in it or empty.
func TestFunctionalFlowsLastBatch(t *testing.T) {
	for _, empty := range []bool{false, true} {
		t.Run(fmt.Sprintf("empty=%v", empty), func(t *testing.T) {
			srv, db := setup(t)
			path, batches := replayPcap(t, 4)
			batches = sinktest.EndRun(batches, empty)
			cfg := testConfig()
			cfg.StopAfter = time.Hour
			in := start(t, srv, db, cfg)
			if err := sinktest.Publish(t.Context(), srv.JS, batches); err != nil {
				t.Fatal(err)
			}
			waitDrained(t, srv, 20*time.Second)
			if diff := cmp.Diff(sinktest.TsharkSums(t, path), sinktest.FlowSums(t, db.Conn)); diff != "" {
				t.Errorf("flows (-tshark +sink):\n%s", diff)
			}
			if reasons := distinct(t, db, "end_reason"); !cmp.Equal(reasons, []string{ReasonStop}) {
				t.Errorf("end reasons %q, want only %q", reasons, ReasonStop)
			}
			in.Stop()
		})
	}
}
