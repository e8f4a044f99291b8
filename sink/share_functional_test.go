package sink_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/sinktest"
)

// delivery is one batch as a replica handled it.
type delivery struct {
	replica   string
	key       string
	seq       uint64
	delivered uint64
}

// journal records the deliveries of every replica in the order they were
// handled, across replicas.
type journal struct {
	mu  sync.Mutex
	all []delivery
}

func (j *journal) add(d delivery) {
	j.mu.Lock()
	j.all = append(j.all, d)
	j.mu.Unlock()
}

func (j *journal) snapshot() []delivery {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]delivery(nil), j.all...)
}

// acking is a sink that records each batch and acks it at once.
type acking struct {
	name string
	run  *sink.Runner
	j    *journal
}

func (a *acking) Handle(_ context.Context, d sink.Delivery) {
	a.j.add(delivery{replica: a.name, key: d.Header.Capture + "/" + d.Header.Interface, seq: d.Header.Seq, delivered: d.Delivered})
	a.run.Ack(d.Reply)
}
func (a *acking) Tick(context.Context, time.Time) {}
func (a *acking) Wake() time.Time                 { return time.Time{} }
func (a *acking) Held(func(string))               {}
func (a *acking) Accepting(bool) bool             { return true }
func (a *acking) Drain(context.Context)           {}
func (a *acking) Idle() bool                      { return true }

// replica is one running sink replica with its own connection.
type replica struct {
	name    string
	nc      *nats.Conn
	reg     *prometheus.Registry
	running *testenv.Running
	// crashed: the connection was closed under it, so Run's error is
	// not the test's concern.
	crashed atomic.Bool
}

func (r *replica) held(t *testing.T) float64 {
	return testenv.Metric(t, r.reg, "capstream_sink_test_partitions_held", nil)
}

// Replicas of one sink share the partitions of the packets stream: each
// (capture, node) is delivered to one replica at a time, in stream order;
// a replica that joins gets its share, a replica stopped or killed hands
// its partitions to the others, and no batch is lost.
func TestFunctionalSinkReplicasSharePartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: real NATS server")
	}
	srv := testenv.NATS(t)
	limits := schemas.DefaultPacketsStreamLimits()
	limits.Partitions = 4
	if err := schemas.EnsureStreams(t.Context(), srv.JS, limits); err != nil {
		t.Fatal(err)
	}
	durable := schemas.FlowSinkConsumer()
	const ackWait = sinktest.AckWait // and the pinned TTL
	cons, err := sink.Bind(t.Context(), srv.JS, durable, ackWait)
	if err != nil {
		t.Fatal(err)
	}
	if len(cons) != 4 {
		t.Fatalf("%d consumers bound, want one per partition (4)", len(cons))
	}
	j := &journal{}
	start := func(name string) *replica {
		nc, js := srv.Connect(t, "sink-"+name)
		rc := sink.DefaultRunConfig(5 * time.Second)
		rc.Migrate = false // no ClickHouse here
		rc.Consumer.AckWait, rc.Consumer.RebalanceInterval = ackWait, 200*time.Millisecond
		reg := prometheus.NewRegistry()
		run, err := sink.NewRunner(sink.RunnerConfig{
			Component: "test", Source: schemas.SourceFlowSink, Durable: durable, RunConfig: rc,
			BatchesHelp: "batches", PendingHelp: "pending",
		}, sink.Deps{Logger: testenv.Logger(t), Registerer: reg, JetStream: js})
		if err != nil {
			t.Fatal(err)
		}
		h := &acking{name: name, run: run, j: j}
		r := &replica{name: name, nc: nc, reg: reg}
		r.running = testenv.Start(t, name, func(ctx context.Context) error {
			if err := run.Run(ctx, h); !r.crashed.Load() {
				return err
			}
			return nil
		})
		return r
	}

	// Twelve captures on one node, one batch each every 20 ms.
	const keys = 12
	published := map[string]uint64{}
	var pubMu sync.Mutex
	pctx, stopPublishing := context.WithCancel(t.Context())
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- func() error {
			g := sinktest.NewGen(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), time.Millisecond)
			g.UDP([]byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, 1000, 53, []byte("x"))
			for seq := uint64(1); ; seq++ {
				for k := range keys {
					h := sinktest.Header("team-a", fmt.Sprintf("cap-%d", k), fmt.Sprintf("uid-%d", k), "node-1", "web-0", "cali0")
					h.Seq = seq - 1
					b := sinktest.Batches(h, g.Pkts, 1<<10)
					if err := sinktest.Publish(pctx, srv.JS, b); err != nil {
						if pctx.Err() != nil {
							return nil
						}
						return err
					}
					pubMu.Lock()
					published[h.Capture+"/"+h.Interface] = seq
					pubMu.Unlock()
				}
				select {
				case <-pctx.Done():
					return nil
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	}()

	// One replica takes every partition.
	a := start("a")
	testenv.Eventually(t, 10*time.Second, func() error {
		if h := a.held(t); h != 4 {
			return fmt.Errorf("a holds %v partitions, want 4", h)
		}
		return nil
	})
	// Two more join: a releases partitions until each holds 1 or 2.
	b, c := start("b"), start("c")
	balanced := func(rs ...*replica) error {
		total := 0.0
		for _, r := range rs {
			h := r.held(t)
			fair := float64((4 + len(rs) - 1) / len(rs))
			if h < 1 || h > fair {
				return fmt.Errorf("%s holds %v partitions, want 1 to %v", r.name, h, fair)
			}
			total += h
		}
		if total != 4 {
			return fmt.Errorf("%v partitions held in all, want 4", total)
		}
		return nil
	}
	testenv.Eventually(t, 20*time.Second, func() error { return balanced(a, b, c) })
	// b stops cleanly: its partitions go to a and c at once.
	if err := b.running.Stop(); err != nil {
		t.Fatalf("b: Run after a clean cancel: %v", err)
	}
	testenv.Eventually(t, 20*time.Second, func() error { return balanced(a, c) })
	// c crashes: its pins expire (pinned TTL = ack wait) and a takes all.
	c.crashed.Store(true)
	c.nc.Close()
	_ = c.running.Stop()
	testenv.Eventually(t, 20*time.Second, func() error { return balanced(a) })

	stopPublishing()
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	(&sinktest.Env{NATS: srv}).WaitDrained(t, durable.Durable, 20*time.Second, false)

	// Every batch was handled, a first delivery only once, and per
	// capture the first deliveries came in stream order, whichever
	// replica had them.
	all := j.snapshot()
	last := map[string]uint64{}
	seen := map[string]bool{}
	firsts := map[string]string{}
	for _, d := range all {
		id := fmt.Sprintf("%s#%d", d.key, d.seq)
		seen[id] = true
		if d.delivered != 1 {
			continue
		}
		if prev, dup := firsts[id]; dup {
			t.Errorf("%s: first delivery handled twice (%s, %s)", id, prev, d.replica)
		}
		firsts[id] = d.replica
		if d.seq <= last[d.key] {
			t.Errorf("%s: batch %d delivered to %s after batch %d", d.key, d.seq, d.replica, last[d.key])
		}
		last[d.key] = d.seq
	}
	pubMu.Lock()
	defer pubMu.Unlock()
	if len(published) != keys {
		t.Fatalf("published %d captures, want %d", len(published), keys)
	}
	missing := 0
	for key, n := range published {
		for seq := uint64(1); seq <= n; seq++ {
			if !seen[fmt.Sprintf("%s#%d", key, seq)] {
				missing++
				t.Logf("never handled: %s#%d (published up to %d, last first delivery %d)", key, seq, n, last[key])
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d published batches never handled", missing)
	}
	by := map[string]int{}
	for _, d := range all {
		by[d.replica]++
	}
	t.Logf("%d deliveries: %v; %v redelivered after the crash", len(all), by, len(all)-len(firsts))
	for _, r := range []string{"a", "b", "c"} {
		if by[r] == 0 {
			t.Errorf("replica %s handled no batch", r)
		}
	}
}
