package main

import (
	"strings"
	"testing"
	"time"

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
	o.Out = t.TempDir()
	o.Database, o.Bucket = db.Database, bucket.Bucket
	o.Log = testWriter{t}
	var out strings.Builder
	res, err := run(t.Context(), o, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	if got := len(res.rows()); got != 8 {
		t.Errorf("%d table rows, want 8", got)
	}
	for _, scenario := range []string{"throughput bytes/s (copy limit)", "CPU/packet, in-process", "latency packet->flow row, max"} {
		if !strings.Contains(out.String(), scenario) {
			t.Errorf("report lacks %q", scenario)
		}
	}
	tr := res.Throughput
	if tr.ObjectPackets != 2000 || tr.FlowPackets != 2000 || tr.Drops != 0 {
		t.Errorf("stored %d packets in objects and %d in flows with %d drops, want 2000, 2000, 0", tr.ObjectPackets, tr.FlowPackets, tr.Drops)
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
