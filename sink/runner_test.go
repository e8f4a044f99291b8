package sink_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/sinktest"
)

// panicky panics on the batch of producer sequence 1 and acks the others.
type panicky struct {
	run     *sink.Runner
	handled atomic.Int64
	drained atomic.Bool
}

func (p *panicky) Handle(_ context.Context, d sink.Delivery) {
	if d.Header.Seq == 1 {
		var m map[string]int
		m["boom"]++ // a programmer error: assignment to a nil map
	}
	p.handled.Add(1)
	p.run.Ack(d.Reply)
}
func (p *panicky) Tick(context.Context, time.Time) {}
func (p *panicky) Wake() time.Time                 { return time.Time{} }
func (p *panicky) Held(func(string))               {}
func (p *panicky) Accepting(bool) bool             { return true }
func (p *panicky) Drain(context.Context)           { p.drained.Store(true) }
func (p *panicky) Idle() bool                      { return true }

// A panic while handling one batch terminates that batch, is counted, and
// the runner goes on with the next ones; a malformed batch is terminated
// too; shutdown drains and returns nil.
func TestFunctionalRunnerPanicBoundary(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: real NATS server")
	}
	srv := testenv.NATS(t)
	if err := schemas.EnsureStreams(t.Context(), srv.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		t.Fatal(err)
	}
	durable := schemas.FlowSinkConsumer()
	if _, err := sink.Bind(t.Context(), srv.JS, durable, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	h := sinktest.Header("team-a", "web.capture", "uid-1", "node-1", "web-0", "cali0")
	g := sinktest.NewGen(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), time.Millisecond)
	for range 30 {
		g.UDP([]byte{10, 0, 0, 1}, []byte{10, 0, 0, 2}, 1000, 53, []byte("x"))
	}
	batches := sinktest.Batches(h, g.Pkts, 256)
	bad := batches[len(batches)-1]
	bad.Header.Packets++
	bad.Header.Seq = 1000
	if err := sinktest.Publish(t.Context(), srv.JS, append(batches, bad)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rc := sink.DefaultRunConfig(5 * time.Second)
	rc.Migrate = false // no ClickHouse here
	run, err := sink.NewRunner(sink.RunnerConfig{
		Component: "test", Source: schemas.SourceFlowSink, Durable: durable, RunConfig: rc,
		BatchesHelp: "batches", PendingHelp: "pending",
	}, sink.Deps{
		Logger: testenv.Logger(t), Registerer: reg,
		JetStream: srv.JS,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &panicky{run: run}
	r := testenv.Start(t, "runner", func(ctx context.Context) error { return run.Run(ctx, p) })
	(&sinktest.Env{NATS: srv}).WaitDrained(t, durable.Durable, 20*time.Second, true)
	if err := r.Stop(); err != nil {
		t.Fatalf("Run after a clean cancel: %v", err)
	}
	got := map[string]float64{
		"panics":     testenv.Metric(t, reg, "capstream_sink_test_panics_total", nil),
		"terminated": testenv.Metric(t, reg, "capstream_sink_test_batches_total", map[string]string{"result": "terminated"}),
		"handled":    float64(p.handled.Load()),
	}
	want := map[string]float64{"panics": 1, "terminated": 2, "handled": float64(len(batches) - 1)}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %v, want %v", k, got[k], w)
		}
	}
	if !p.drained.Load() {
		t.Error("Drain not called at shutdown")
	}
}
