package main

import (
	"strings"
	"testing"
	"time"
)

// TestChurn runs the churn phase small (200 cycles): once every stop has
// expired, CAPSTREAM_COMMANDS must hold what it held at the start, every
// cycle must have reached the producer and both processes must have been
// measured and exit cleanly. The memory figures are only reported here;
// `go run ./bench -churn-only` measures them over 10000 cycles.
func TestChurn(t *testing.T) {
	o := kubePhaseOptions(t)
	o.ChurnCycles, o.ChurnConcurrency = 200, 16
	churnRSSQuiet = 2 * time.Second // no RSS figure is asserted here
	r := runPhase(t, o, runChurn)
	if r.End.Msgs != r.Start.Msgs || r.End.Bytes != r.Start.Bytes || !r.Drained {
		t.Errorf("CAPSTREAM_COMMANDS: %d messages, %d bytes after the churn, %d and %d at the start", r.End.Msgs, r.End.Bytes, r.Start.Msgs, r.Start.Bytes)
	}
	if r.Peak.Msgs <= r.Start.Msgs {
		t.Errorf("CAPSTREAM_COMMANDS peaked at %d messages, the start's %d: the churn never reached the stream", r.Peak.Msgs, r.Start.Msgs)
	}
	if len(r.Problems) > 0 {
		t.Errorf("problems: %v", r.Problems)
	}
	// One capture command and one stop per cycle, the kept capture's
	// command and the warm-up's.
	cycles := float64(r.Cycles + r.Warmup)
	if got := r.RouterPublished; got["capture"] != cycles+1 || got["stop"] != cycles {
		t.Errorf("router published %v, want capture %v, stop %v", got, cycles+1, cycles)
	}
	for _, p := range []churnProc{r.Start.Router, r.Start.Producer, r.End.Router, r.End.Producer} {
		if p.RSS <= 0 || p.Live <= 0 || p.HeapInuse <= 0 || p.Goroutines <= 0 {
			t.Errorf("a level not measured: %+v", p)
		}
	}
}

// TestGCTraceWriter: gctrace lines set the collection count and the live
// heap (the third figure); every other line passes through whole.
func TestGCTraceWriter(t *testing.T) {
	c := &proc{}
	var rest strings.Builder
	w := &gcTraceWriter{c: c, rest: &rest}
	in := "gc 1 @0.012s 2%: 0.011+1.2+0.003 ms clock, 0.022+0.5/1.0/0+0.006 ms cpu, 4->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P\n" +
		"time=x level=WARN msg=\"not ready\"\n" +
		"gc 2 @2.5s 1%: 0.02+2+0.01 ms clock, 0.04+0.1/2/0+0.02 ms cpu, 9->10->7 MB, 10 MB goal, 0 MB stacks, 0 MB globals, 2 P (forced)\n" +
		"gc 3 @3"
	for _, chunk := range []string{in[:50], in[50:130], in[130:]} { // lines split across writes
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	live, gcs := c.lastLive()
	peak, _ := c.peakLive()
	if live != 7<<20 || gcs != 2 || peak != 7<<20 {
		t.Errorf("live %d, %d collections, peak %d; want %d, 2, %d", live, gcs, peak, 7<<20, 7<<20)
	}
	if got, want := rest.String(), "time=x level=WARN msg=\"not ready\"\n"; got != want {
		t.Errorf("passed through %q, want %q", got, want)
	}
}

func TestReturned(t *testing.T) {
	const mib = 1 << 20
	for name, c := range map[string]struct {
		start, end float64
		want       bool
	}{
		"same":              {10 * mib, 10 * mib, true},
		"lower":             {10 * mib, 8 * mib, true},
		"within the ratio":  {100 * mib, 109 * mib, true},
		"within the slack":  {10 * mib, 14 * mib, true},
		"above both":        {10 * mib, 15 * mib, false},
		"above the ratio":   {100 * mib, 111 * mib, false},
		"from zero, slack":  {0, 3 * mib, true},
		"from zero, beyond": {0, 5 * mib, false},
	} {
		if got := returned(c.start, c.end, churnHeapRatio, churnHeapSlack); got != c.want {
			t.Errorf("%s: returned(%v, %v) = %v, want %v", name, c.start, c.end, got, c.want)
		}
	}
}
