package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/internal/testenv"
)

// TestHarness runs the whole harness on a tiny workload against the
// testenv services, so `make test` notices when the harness itself breaks:
// the table must have its rows and the stored packets must match the
// workload (run fails otherwise).
func TestHarness(t *testing.T) {
	db, bucket := testenv.ClickHouse(t), testenv.S3(t)
	o := defaultOptions()
	o.Packets, o.Markers, o.Reps = 2000, 2, 1
	o.ActiveTimeout = time.Second
	o.Tshark = false
	o.Timeout = time.Minute
	// The hostile memory input sends no Last batch: its interfaces end
	// when quiet for stopAfter, 15s and 30s by default.
	o.MemoryStopAfter = time.Second
	o.Out = t.TempDir()
	o.Database, o.Bucket = db.Database, bucket.Bucket
	o.Log = testWriter{t}
	var out strings.Builder
	res, err := run(t.Context(), o, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	if got := len(res.rows()); got != 17 {
		t.Errorf("%d table rows, want 17", got)
	}
	for _, scenario := range []string{"throughput bytes/s (copy limit)", "CPU/packet, in-process", "latency packet->flow row, max",
		"JetStream alone bytes/s (copy limit)", "CPU/packet vs JetStream alone", "jetstream floor (",
		"peak RSS, pcap sink, hostile input", "each sink's peak RSS < 256 MiB whatever the input"} {
		if !strings.Contains(out.String(), scenario) {
			t.Errorf("report lacks %q", scenario)
		}
	}
	// The floor carried every batch of the workload to both consumers.
	for _, f := range []floorResult{res.Floor, res.FloorMem} {
		if f.Batches < 1 || f.Wall <= 0 || f.CPU <= 0 {
			t.Errorf("jetstream floor: %+v, want batches carried with wall and CPU time", f)
		}
	}
	if res.Floor.Storage != jetstream.FileStorage || res.FloorMem.Storage != jetstream.MemoryStorage {
		t.Errorf("floors with storage %v and %v, want file and memory", res.Floor.Storage, res.FloorMem.Storage)
	}
	tr := res.Throughput
	if tr.ObjectPackets != 2000 || tr.FlowPackets != 2000 || tr.Drops != 0 {
		t.Errorf("stored %d packets in objects and %d in flows with %d drops, want 2000, 2000, 0", tr.ObjectPackets, tr.FlowPackets, tr.Drops)
	}
	// The memory phase ran both inputs through two real processes each:
	// every packet stored, a peak RSS read and sampled, a clean exit.
	if got := len(res.Memory.Runs); got != 2 {
		t.Fatalf("memory phase: %d inputs, want 2", got)
	}
	for _, m := range res.Memory.Runs {
		want := 2000
		if m.Input == memInputHostile {
			flows, ifaces := hostileSize(o.Packets)
			want = hostilePackets * flows
			if m.Interfaces != ifaces || m.Flows != flows {
				t.Errorf("memory hostile: %d interfaces, %d flows, want %d and %d", m.Interfaces, m.Flows, ifaces, flows)
			}
		}
		if m.Input == memInputHostile && m.LongNames != m.Flows {
			t.Errorf("memory hostile: %d flow records hold their three long names, want %d", m.LongNames, m.Flows)
		}
		if m.Packets != want || m.ObjectPackets != uint64(want) || m.FlowPackets != uint64(want) {
			t.Errorf("memory %s: published %d packets, stored %d in objects and %d in flows, want %d", m.Input, m.Packets, m.ObjectPackets, m.FlowPackets, want)
		}
		for _, sm := range []sinkMemory{m.PcapSink, m.FlowSink} {
			if sm.PeakRSS <= 0 || sm.MaxSampledRSS <= 0 || sm.Samples == 0 || sm.Exit != "" {
				t.Errorf("memory %s, sink %s: peak RSS %d, max sampled %d over %d samples, exit %q", m.Input, sm.Sink, sm.PeakRSS, sm.MaxSampledRSS, sm.Samples, sm.Exit)
			}
		}
		// The hostile input's interfaces stay open for stopAfter: its
		// objects and flows must have been seen open at once.
		if flows, ifaces := hostileSize(o.Packets); m.Input == memInputHostile && (m.PcapSink.PeakGauge != float64(ifaces) || m.FlowSink.PeakGauge != float64(flows)) {
			t.Errorf("memory hostile: at most %v open objects and %v open flows seen, want %d and %d", m.PcapSink.PeakGauge, m.FlowSink.PeakGauge, ifaces, flows)
		}
	}
	if res.Latency.Missing != 0 || len(res.Latency.Latencies) != o.Markers {
		t.Errorf("latency: %d markers timed, %d missing, want %d and 0", len(res.Latency.Latencies), res.Latency.Missing, o.Markers)
	}
}

// testWriter sends the harness's progress and the components' warnings to
// the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// phaseOptions are a phase test's options: the defaults, each wait
// bounded by timeout, the progress in the test log.
func phaseOptions(t *testing.T, timeout time.Duration) options {
	o := defaultOptions()
	o.Timeout = timeout
	o.Log = testWriter{t}
	return o
}

// kubePhaseOptions are phaseOptions for a phase against the
// kube-apiserver, 30 s a wait; the test skips without the API server (or
// fails with CAPSTREAM_TEST_REQUIRE_DEPS).
func kubePhaseOptions(t *testing.T) options {
	testenv.Kube(t)
	return phaseOptions(t, 30*time.Second)
}

// runPhase runs a phase with o in a temporary directory, fails the test
// if it returns an error and logs its report.
func runPhase[R interface{ report() string }](t *testing.T, o options, run func(context.Context, options, string) (R, error)) R {
	t.Helper()
	r, err := run(t.Context(), o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.report())
	return r
}
