package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// stopTimeout bounds how long Stop waits for a component's Run to return
// once its context is cancelled: past it the test fails instead of hanging.
const stopTimeout = 2 * time.Minute

// Running is one component's Run started by Start for one test.
type Running struct {
	t      testing.TB
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	once   sync.Once
}

// Start runs run(ctx) in its own goroutine until Stop, which t.Cleanup also
// calls. It is the one way tests start a component (router, producer,
// sink, pipeline): the component's lifecycle is New builds, Run runs until
// its context ends, and a clean cancel returns nil.
func Start(t testing.TB, name string, run func(context.Context) error) *Running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{t: t, name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = run(ctx)
	}()
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("%s: Run after a clean cancel: %v", name, err)
		}
	})
	return r
}

// Stop cancels the component's context and waits for Run to return, at
// most stopTimeout; it returns Run's error. Calling it again returns the
// same error without waiting.
func (r *Running) Stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(stopTimeout):
			r.err = fmt.Errorf("%s: Run did not return within %s of cancel", r.name, stopTimeout)
		}
	})
	return r.err
}

// Done is closed once Run has returned.
func (r *Running) Done() <-chan struct{} { return r.done }

// Err is Run's error once Done is closed, nil before.
func (r *Running) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Metric sums the values of the metric family name in g over the series
// whose labels match every entry of labels (nil: all series). Counters and
// gauges give their value, histograms and summaries their sample count. A
// family that does not exist yet reads 0.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	v, err := MetricSum(g, name, labels)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// MetricSum is Metric for callers without a testing.TB (the bench).
func MetricSum(g prometheus.Gatherer, name string, labels map[string]string) (float64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, fmt.Errorf("gather metrics: %w", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matches(m, labels) {
				sum += value(m)
			}
		}
	}
	return sum, nil
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := labels[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Summary != nil:
		return float64(m.Summary.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// RequireRoot skips a test that builds network namespaces or captures
// live unless it runs as root with iproute2 installed; under
// CAPSTREAM_TEST_REQUIRE_DEPS=1 (make test) it fails instead. -short skips.
func RequireRoot(t testing.TB) {
	t.Helper()
	skipShort(t, "root and network namespaces")
	_, err := exec.LookPath("ip")
	if os.Geteuid() == 0 && err == nil {
		return
	}
	msg := fmt.Sprintf("needs root and iproute2 (euid %d, ip: %v)", os.Geteuid(), err)
	if RequireDeps() {
		t.Fatalf("%s; %s=1 makes this a failure", msg, EnvRequireDeps)
	}
	t.Skip(msg)
}

// File writes body to a file called name in a directory of its own that
// the test removes, and returns its path.
func File(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
