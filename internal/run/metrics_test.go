package run

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestRegistrar: every declared metric is registered under the prefix, and
// declaring one twice is an error that Err reports.
func TestRegistrar(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := NewRegistrar(reg, "capstream_test_")
	r.Counter("things_total", "Things.").Add(2)
	r.CounterVec("drops_total", "Drops by reason.", "reason").WithLabelValues("full").Inc()
	r.Gauge("open", "Open things.").Set(3)
	r.GaugeVec("states", "Things by state.", "state").WithLabelValues("up").Set(1)
	r.Histogram("seconds", "Durations.", []float64{1, 2}).Observe(1.5)
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if got, want := strings.Join(names, " "), "capstream_test_drops_total capstream_test_open capstream_test_seconds capstream_test_states capstream_test_things_total"; got != want {
		t.Errorf("registered %q, want %q", got, want)
	}
	r.Counter("things_total", "Things again.")
	if err := r.Err(); err == nil {
		t.Error("a second declaration of things_total was not reported")
	}
}
