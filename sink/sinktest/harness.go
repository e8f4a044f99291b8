package sinktest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	chschema "github.com/capstream/capstream/schemas/clickhouse"
	"github.com/capstream/capstream/sink"
)

// Env is what a sink's functional test runs against: NATS with the
// schema's streams and the sink's durable bound, and a migrated ClickHouse
// database.
type Env struct {
	NATS *testenv.NATSServer
	DB   *testenv.ClickHouseDB
}

// AckWait is the ack wait of the sinks under test: short, so the batches
// a killed sink held come back within the test.
const AckWait = 3 * time.Second

// GracePeriod is the grace period of the sinks under test, long enough
// for their final flush against the local services.
const GracePeriod = 5 * time.Second

// LostAfter is how long a gap waits to fill in the sinks under test before
// it counts as lost: short, so tests see the count within seconds.
const LostAfter = time.Second

// RebalanceInterval is the rebalance round of the sinks under test: short,
// so replicas share the partitions within a second.
const RebalanceInterval = 200 * time.Millisecond

// Consumer is the pull configuration of a sink under test: the default,
// with AckWait, LostAfter and RebalanceInterval.
func Consumer() sink.ConsumerConfig {
	c := sink.DefaultConsumerConfig()
	c.AckWait, c.LostAfter, c.RebalanceInterval = AckWait, LostAfter, RebalanceInterval
	return c
}

// Setup starts the services and binds durable with AckWait before anything
// is published: the packets stream has interest retention and drops
// batches nobody is bound to.
func Setup(t *testing.T, durable jetstream.ConsumerConfig) *Env {
	t.Helper()
	e := &Env{NATS: testenv.NATS(t), DB: testenv.ClickHouse(t)}
	if err := schemas.EnsureStreams(t.Context(), e.NATS.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Bind(t.Context(), e.NATS.JS, durable, AckWait); err != nil {
		t.Fatal(err)
	}
	if _, err := chschema.Migrate(t.Context(), e.DB.Conn); err != nil {
		t.Fatal(err)
	}
	return e
}

// WaitDrained waits until the consumers of the durable (one per partition,
// schemas.SinkPartitionName) have nothing pending or unacked, and with
// noRedelivered, nothing redelivered either.
func (e *Env) WaitDrained(t *testing.T, durable string, timeout time.Duration, noRedelivered bool) {
	t.Helper()
	testenv.Eventually(t, timeout, func() error { return sink.Drained(t.Context(), e.NATS.JS, durable, noRedelivered) })
}

// Traffic is the mixed test traffic of rounds rounds as a pcap file (for
// the reference tools) and as the batches of one interface.
func Traffic(t *testing.T, rounds int) (string, []Batch) {
	t.Helper()
	g := Mixed(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), rounds, 5000)
	return TrafficOf(t, g.Pkts)
}

// TrafficOf writes pkts as a pcap file and cuts them into the batches of
// the test interface.
func TrafficOf(t *testing.T, pkts []Packet) (string, []Batch) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.pcap")
	if err := WritePcap(path, pkts); err != nil {
		t.Fatal(err)
	}
	h := Header("team-a", "web.capture", "0b1c2d3e-uid", "node-1", "web-0", "cali1234567890a")
	return path, Batches(h, pkts, 16<<10)
}

// Outage is how long a dependency is away in the outage tests, 30s;
// CAPSTREAM_TEST_OUTAGE (a duration) shortens it when iterating.
func Outage() (time.Duration, bool) {
	if d, err := time.ParseDuration(os.Getenv("CAPSTREAM_TEST_OUTAGE")); err == nil {
		return d, true
	}
	return 30 * time.Second, false
}

// Instance is one running sink with its own connections, so a test can
// kill it the way a crash would: connections gone, nothing flushed.
type Instance struct {
	// NC and CH are the instance's own connections.
	NC *nats.Conn
	CH driver.Conn
	// Reg holds the sink's metrics.
	Reg *prometheus.Registry
	// Deps are the collaborators to build the sink with (S3 unset).
	Deps sink.Deps

	t       *testing.T
	running *testenv.Running
	killed  atomic.Bool
}

// Running is a sink of type S running on its Instance.
type Running[S any] struct {
	*Instance
	Sink S
}

// KillHolder waits until a or b holds a batch, as holds tells, kills that
// one the way a crash would (ClickHouse left open) and returns the other.
func KillHolder[S any](t *testing.T, a, b *Running[S], holds func(*Running[S]) bool) *Running[S] {
	t.Helper()
	var victim, other *Running[S]
	testenv.Eventually(t, 10*time.Second, func() error {
		switch {
		case holds(a):
			victim, other = a, b
		case holds(b):
			victim, other = b, a
		default:
			return errors.New("no replica holds a batch yet")
		}
		return nil
	})
	victim.Kill(false)
	return other
}

// Connect opens the connections of one instance, ClickHouse through addr
// (a proxy in the outage tests), and logs at level.
func Connect(t *testing.T, e *Env, addr string, level slog.Level) *Instance {
	t.Helper()
	nc, err := nats.Connect(e.NATS.URL)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := clickhouse.Open(testenv.ClickHouseOptions(addr, e.DB.Database))
	if err != nil {
		t.Fatal(err)
	}
	in := &Instance{NC: nc, CH: ch, Reg: prometheus.NewRegistry(), t: t}
	in.Deps = sink.Deps{
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		Registerer: in.Reg, JetStream: js, ClickHouse: ch,
	}
	t.Cleanup(func() {
		nc.Close()
		ch.Close()
	})
	return in
}

// Run starts the sink's Run; Stop (or the end of the test) stops it.
func (in *Instance) Run(name string, run func(context.Context) error) {
	in.running = testenv.Start(in.t, name, func(ctx context.Context) error {
		err := run(ctx)
		if in.killed.Load() {
			return nil // a crash: whatever Run says is not the test's concern
		}
		return err
	})
}

// Stop is a graceful shutdown; Run must return nil.
func (in *Instance) Stop() {
	if err := in.running.Stop(); err != nil {
		in.t.Errorf("Run after a clean cancel: %v", err)
	}
	in.NC.Close()
	in.CH.Close()
}

// Kill simulates a crash: acks no longer get through, and with
// closeClickHouse the writes in progress fail too.
func (in *Instance) Kill(closeClickHouse bool) {
	in.killed.Store(true)
	if closeClickHouse {
		in.CH.Close()
	}
	in.NC.Close()
	_ = in.running.Stop()
	in.CH.Close()
}

// Metric reads a metric of the sink, summed over the series matching
// labels.
func (in *Instance) Metric(name string, labels map[string]string) float64 {
	return testenv.Metric(in.t, in.Reg, name, labels)
}

// ReportWatch reads the status reports published on one (capture, node)'s
// subject, for tests of what a sink reports.
type ReportWatch struct {
	sub *nats.Subscription
}

// WatchReports subscribes to the sinks' status subjects of h's capture
// and node until the test ends.
func WatchReports(t *testing.T, nc *nats.Conn, h schemas.BatchHeader) *ReportWatch {
	t.Helper()
	subj, err := schemas.StatusSubject(h.Namespace, h.Capture, h.Node)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync(subj + ".*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &ReportWatch{sub: sub}
}

// Wait returns the first report from source that ok accepts, failing the
// test after 15s.
func (w *ReportWatch) Wait(t *testing.T, source schemas.Source, ok func(*schemas.Status) error) *schemas.Status {
	t.Helper()
	var got *schemas.Status
	testenv.Eventually(t, 15*time.Second, func() error {
		msg, err := w.sub.NextMsg(100 * time.Millisecond)
		if err != nil {
			return fmt.Errorf("no matching report yet: %w", err)
		}
		st, err := schemas.DecodeStatus(msg.Data)
		if err != nil {
			return err
		}
		if st.Source != source {
			return fmt.Errorf("report from %s", st.Source)
		}
		if err := ok(st); err != nil {
			return err
		}
		got = st
		return nil
	})
	return got
}
