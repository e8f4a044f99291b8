package flowstore

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/sinktest"
)

func failure(st *schemas.Status, reason string) (schemas.Failure, bool) {
	for _, f := range st.Failures {
		if f.Reason == reason {
			return f, true
		}
	}
	return schemas.Failure{}, false
}

func countRows(t *testing.T, db *testenv.ClickHouseDB, table, uid string) uint64 {
	t.Helper()
	var n uint64
	if err := db.Conn.QueryRow(t.Context(), "SELECT count() FROM "+table+" WHERE capture_uid = ?", uid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A flows table that no longer has a column the sink writes refuses every
// insert for good: the sink terminates the batches of the refused flush,
// counts and reports them instead of retrying forever, and once the
// schema is restored goes on storing the next capture.
func TestFunctionalFlowsDatabaseRefused(t *testing.T) {
	srv, db := setup(t)
	if err := db.Conn.Exec(t.Context(), "ALTER TABLE flows DROP COLUMN http_host"); err != nil {
		t.Fatal(err)
	}
	_, pkts := sinktest.Traffic(t, 20)
	a := pkts[:3]
	for i := range a {
		a[i].Header.Capture, a[i].Header.CaptureUID = "refused", "uid-refused"
	}
	a = sinktest.EndRun(a, false)
	w := sinktest.WatchReports(t, srv.Conn, a[0].Header)
	in := start(t, srv, db, testConfig())
	if err := sinktest.Publish(t.Context(), srv.JS, a); err != nil {
		t.Fatal(err)
	}
	st := w.Wait(t, schemas.SourceFlowSink, func(st *schemas.Status) error {
		if f, ok := failure(st, schemas.FailureDatabaseRefused); !ok || f.Batches != uint64(len(a)) {
			return fmt.Errorf("failures %+v, want %s for %d batches", st.Failures, schemas.FailureDatabaseRefused, len(a))
		}
		return nil
	})
	if err := st.Validate(); err != nil || st.UID != "uid-refused" || st.State != schemas.StateCapturing {
		t.Errorf("report %+v: %v", st, err)
	}
	if f, _ := failure(st, schemas.FailureDatabaseRefused); f.Message == "" {
		t.Errorf("failure without a message: %+v", f)
	}
	waitDrainedFlows(t, srv)
	if got := in.Metric("capstream_sink_flows_failures_total", map[string]string{"reason": schemas.FailureDatabaseRefused}); got != float64(len(a)) {
		t.Errorf("failures metric = %v, want %d", got, len(a))
	}
	if got := in.Metric("capstream_sink_flows_batches_total", map[string]string{"result": "terminated"}); got != float64(len(a)) {
		t.Errorf("terminated batches = %v, want %d", got, len(a))
	}

	// Restored, the same sink stores the next capture.
	if err := db.Conn.Exec(t.Context(), "ALTER TABLE flows ADD COLUMN http_host String AFTER tls_sni"); err != nil {
		t.Fatal(err)
	}
	b := sinktest.EndRun(pkts[3:6], false)
	for i := range b {
		b[i].Header.Capture, b[i].Header.CaptureUID = "restored", "uid-restored"
	}
	if err := sinktest.Publish(t.Context(), srv.JS, b); err != nil {
		t.Fatal(err)
	}
	waitDrainedFlows(t, srv)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := countRows(t, db, "flows", "uid-restored"); n == 0 {
			return errors.New("no flow rows of the restored capture yet")
		}
		return nil
	})
	if n := countRows(t, db, "flows", "uid-refused"); n != 0 {
		t.Errorf("%d flow rows of the refused capture, want 0", n)
	}
	if got := in.Metric("capstream_sink_flows_failures_total", nil); got != float64(len(a)) {
		t.Errorf("failures after the restore = %v, want still %d", got, len(a))
	}
	in.Stop()
}

func waitDrainedFlows(t *testing.T, srv *testenv.NATSServer) {
	t.Helper()
	(&sinktest.Env{NATS: srv}).WaitDrained(t, schemas.ConsumerFlowSink, 20*time.Second, false)
}

// A batch whose handling panics is terminated, counted and reported on its
// capture (HandlerPanic); the sink goes on with the others.
func TestFunctionalFlowsPanicReported(t *testing.T) {
	srv, db := setup(t)
	_, pkts := sinktest.Traffic(t, 20)
	bad := pkts[:1]
	bad[0].Header.Capture, bad[0].Header.CaptureUID = "boom", "uid-boom"
	good := sinktest.EndRun(pkts[1:4], false)
	w := sinktest.WatchReports(t, srv.Conn, bad[0].Header)
	c := sinktest.Connect(t, &sinktest.Env{NATS: srv, DB: db}, db.Addr, slog.LevelError)
	s, err := New(testConfig(), c.Deps)
	if err != nil {
		t.Fatal(err)
	}
	s.handleHook = func(d *sink.Delivery) {
		if d.Header.Capture == "boom" {
			panic("test panic")
		}
	}
	in := &instance{Instance: c, Sink: s}
	c.Run("flow sink", s.Run)
	if err := sinktest.Publish(t.Context(), srv.JS, append(bad, good...)); err != nil {
		t.Fatal(err)
	}
	st := w.Wait(t, schemas.SourceFlowSink, func(st *schemas.Status) error {
		if f, ok := failure(st, schemas.FailurePanic); !ok || f.Batches != 1 {
			return fmt.Errorf("failures %+v, want one %s", st.Failures, schemas.FailurePanic)
		}
		return nil
	})
	if st.UID != "uid-boom" {
		t.Errorf("report of %s, want uid-boom", st.UID)
	}
	waitDrainedFlows(t, srv)
	if got := in.Metric("capstream_sink_flows_failures_total", map[string]string{"reason": schemas.FailurePanic}); got != 1 {
		t.Errorf("panic failures = %v, want 1", got)
	}
	if got := in.Metric("capstream_sink_flows_panics_total", nil); got != 1 {
		t.Errorf("panics = %v, want 1", got)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := countRows(t, db, "flows", good[0].Header.CaptureUID); n == 0 {
			return errors.New("no flow rows of the other batches yet")
		}
		return nil
	})
	in.Stop()
}

// Batches the stream removed before the sink got them (here deleted by
// sequence, which is what MaxAge does to the oldest) are counted as lost,
// batches and packets, in the metrics and the capture's report; a stored
// duplicate counts nothing, and neither does a producer's own publish
// drop (a sequence the producer counted as dropped).
func TestFunctionalFlowsLostBatches(t *testing.T) {
	srv, db := setup(t)
	_, pkts := sinktest.Traffic(t, 20)
	if len(pkts) < 10 {
		t.Fatalf("%d batches of traffic, want 10", len(pkts))
	}
	run := pkts[:10]
	// Batch 9 (index 8) the producer dropped itself: it never reached
	// the stream, and the next batch's counts say so.
	dropped := run[8]
	run = append(run[:8:8], run[9])
	run[8].Header.Counts.DroppedBatches, run[8].Header.Counts.DroppedPackets = 1, uint64(dropped.Header.Packets)
	run = sinktest.EndRun(run, false)
	w := sinktest.WatchReports(t, srv.Conn, run[0].Header)
	// Stream sequences 1 to 8 are Seq 1 to 8; 9 is Seq 3 again, stored
	// past the de-duplication window; 10 is Seq 10, the last.
	if err := sinktest.Publish(t.Context(), srv.JS, run[:8]); err != nil {
		t.Fatal(err)
	}
	stream, err := srv.JS.Stream(t.Context(), schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	publishDuplicate(t, srv.JS, stream, run[2])
	if err := sinktest.Publish(t.Context(), srv.JS, run[8:]); err != nil {
		t.Fatal(err)
	}
	// Remove Seq 4 and 5 before the sink starts.
	var lostPackets uint64
	for _, i := range []int{3, 4} {
		if err := stream.DeleteMsg(t.Context(), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
		lostPackets += uint64(run[i].Header.Packets)
	}
	in := start(t, srv, db, testConfig())
	st := w.Wait(t, schemas.SourceFlowSink, func(st *schemas.Status) error {
		if st.LostBatches != 2 || st.LostPackets != lostPackets {
			return fmt.Errorf("lost %d batches, %d packets, want 2, %d", st.LostBatches, st.LostPackets, lostPackets)
		}
		return nil
	})
	if len(st.Failures) != 0 {
		t.Errorf("failures %+v, want none", st.Failures)
	}
	waitDrainedFlows(t, srv)
	if got := in.Metric("capstream_sink_flows_lost_batches_total", nil); got != 2 {
		t.Errorf("lost batches metric = %v, want 2", got)
	}
	if got := in.Metric("capstream_sink_flows_lost_packets_total", nil); got != float64(lostPackets) {
		t.Errorf("lost packets metric = %v, want %d", got, lostPackets)
	}
	if got := in.Metric("capstream_sink_flows_batches_total", map[string]string{"result": "terminated"}); got != 0 {
		t.Errorf("terminated = %v, want 0", got)
	}
	in.Stop()
}

// publishDuplicate publishes b again, stored as a second message: the
// packets stream's de-duplication window is shortened to its minimum, as
// if b came again after the window.
func publishDuplicate(t *testing.T, js jetstream.JetStream, stream jetstream.Stream, b sinktest.Batch) {
	t.Helper()
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	// The server forgets IDs on its own timer, later on a loaded machine.
	testenv.Eventually(t, 20*time.Second, func() error {
		ack, err := js.PublishMsg(t.Context(), b.Msg())
		if err != nil {
			return err
		}
		if ack.Duplicate {
			return errors.New("still within the de-duplication window")
		}
		return nil
	})
}
