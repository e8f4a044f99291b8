package main

// The churn phase's checks and its lines of the report (churn.go).

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// check returns every way the phase went wrong: the stream not back at
// its start, cycles the producer did not report, unclean exits. Memory
// that did not return is reported, not a failure of the run.
func (r *churnResult) check() []string {
	var probs []string
	if !r.StartDrained {
		probs = append(probs, fmt.Sprintf("churn: CAPSTREAM_COMMANDS holds %d messages once the warm-up's stops should have expired, want 1 (the kept capture's)", r.Start.Msgs))
	}
	if !r.Drained || r.End.Msgs != r.Start.Msgs || r.End.Bytes != r.Start.Bytes {
		probs = append(probs, fmt.Sprintf("churn: CAPSTREAM_COMMANDS holds %d messages (%d bytes) after the stops expired, %d (%d bytes) at the start",
			r.End.Msgs, r.End.Bytes, r.Start.Msgs, r.Start.Bytes))
	}
	if r.StartMissed > 0 || r.StopMissed > 0 {
		probs = append(probs, fmt.Sprintf("churn: the producer did not report %d of %d captures started and %d finished within %s",
			r.StartMissed, r.Cycles, r.StopMissed, churnCycleWait))
	}
	if r.RouterExit != "" || r.ProducerExit != "" {
		probs = append(probs, fmt.Sprintf("churn: unclean exit on SIGTERM: router %q, producer %q", r.RouterExit, r.ProducerExit))
	}
	return probs
}

// returned says whether end is back at start: within ratio of it or slack
// above it.
func returned(start, end, ratio, slack float64) bool {
	return end <= start*ratio || end-start <= slack
}

// report is the phase's lines of the bench report.
func (r *churnResult) report() string {
	if r == nil || r.Skipped {
		return "churn: skipped (-churn=false)\n"
	}
	const mib = 1 << 20
	var sb strings.Builder
	fmt.Fprintf(&sb, "churn (router and producer as processes of their own on the real kube-apiserver and an embedded JetStream server; %d PacketCaptures created and deleted, %d at a time, each waited for until the producer reported it started and finished; stopTTL %s, producer resyncPeriod %s; starting level after %d warm-up cycles):\n",
		r.Cycles, r.Concurrency, r.StopTTL, r.Resync, r.Warmup)
	fmt.Fprintf(&sb, "  %d cycles in %s = %.1f cycles/s; end level %s after the last cycle; phase %s (build %s)\n",
		r.Cycles, r.Churn.Round(time.Millisecond), float64(r.Cycles)/r.Churn.Seconds(), r.Settle.Round(time.Millisecond),
		r.Wall.Round(time.Millisecond), r.Build.Round(time.Millisecond))
	fmt.Fprintf(&sb, "  create -> producer reports started: %s; delete -> producer reports finished: %s\n", r.StartLatency, r.StopLatency)
	fmt.Fprintf(&sb, "  %-38s | %10s | %10s | %10s | %9s | %s\n", "figure", "start", "peak", "end", "end/start", "returned to start")
	all := true
	line := func(name string, start, peak, end, scale float64, unit string, ok bool, rule string) {
		f := func(v float64) string {
			if scale == 1 {
				return strconv.FormatFloat(v, 'f', 0, 64) + unit
			}
			return strconv.FormatFloat(v/scale, 'f', 1, 64) + unit
		}
		ratio := "-"
		if start > 0 {
			ratio = fmt.Sprintf("%.2f", end/start)
		}
		yes := "yes"
		if !ok {
			yes, all = "NO", false
		}
		fmt.Fprintf(&sb, "  %-38s | %10s | %10s | %10s | %9s | %s (%s)\n", name, f(start), f(peak), f(end), ratio, yes, rule)
	}
	s, p, e := r.Start, r.Peak, r.End
	line("CAPSTREAM_COMMANDS messages", float64(s.Msgs), float64(p.Msgs), float64(e.Msgs), 1, "", e.Msgs == s.Msgs, "exact")
	line("CAPSTREAM_COMMANDS bytes", float64(s.Bytes), float64(p.Bytes), float64(e.Bytes), 1, "", e.Bytes == s.Bytes, "exact")
	heapRule := fmt.Sprintf("within %.0f%% or %d MiB", (churnHeapRatio-1)*100, churnHeapSlack/mib)
	rssRule := fmt.Sprintf("within %.0f%% or %d MiB", (churnRSSRatio-1)*100, churnRSSSlack/mib)
	grRule := fmt.Sprintf("within %d", churnGoroutineAdd)
	for _, c := range []struct {
		name          string
		s, p, e       churnProc
		gcsAtS, gcsAt int
	}{{"router", s.Router, p.Router, e.Router, s.Router.GCs, e.Router.GCs}, {"producer", s.Producer, p.Producer, e.Producer, s.Producer.GCs, e.Producer.GCs}} {
		line(c.name+" heap live after GC", float64(c.s.Live), float64(c.p.Live), float64(c.e.Live), mib, " MiB",
			returned(float64(c.s.Live), float64(c.e.Live), churnHeapRatio, churnHeapSlack), heapRule)
		line(c.name+" heap in use (go_memstats)", float64(c.s.HeapInuse), float64(c.p.HeapInuse), float64(c.e.HeapInuse), mib, " MiB",
			returned(float64(c.s.HeapInuse), float64(c.e.HeapInuse), churnHeapRatio, churnHeapSlack), heapRule)
		line(c.name+" RSS (peak: VmHWM)", float64(c.s.RSS), float64(c.p.RSS), float64(c.e.RSS), mib, " MiB",
			returned(float64(c.s.RSS), float64(c.e.RSS), churnRSSRatio, churnRSSSlack), rssRule)
		line(c.name+" goroutines", c.s.Goroutines, c.p.Goroutines, c.e.Goroutines, 1, "",
			c.e.Goroutines <= c.s.Goroutines+churnGoroutineAdd, grRule)
	}
	fmt.Fprintf(&sb, "  RSS at end is the lowest VmRSS sampled once the heap was read, until none lower for %s (%s here; at the heap's reading: router %.1f MiB, producer %.1f MiB)\n",
		churnRSSQuiet, r.RSSSettle.Round(time.Second), float64(r.RouterRSSAtHeap)/mib, float64(r.ProducerRSSAtHeap)/mib)
	fmt.Fprintf(&sb, "  collections during the phase: router %d, producer %d (heap live is the last one's mark, whole MiB, read after two collections past each level)\n",
		e.Router.GCs-s.Router.GCs, e.Producer.GCs-s.Producer.GCs)
	fmt.Fprintf(&sb, "  producer: commands received %s; captures running at the end %.0f; router published %s; cycles the producer was not seen to start %d, to finish %d\n",
		fmtCounts(r.ProducerCommands), r.ProducerCaptures, fmtCounts(r.RouterPublished), r.StartMissed, r.StopMissed)
	mark := "met"
	if !all || len(r.Problems) > 0 {
		mark = "MISSED"
	}
	fmt.Fprintf(&sb, "  %-6s after %d create/delete cycles the commands stream and the router's and producer's memory are back at their starting level\n", mark, r.Cycles)
	return sb.String()
}

func fmtCounts(m map[string]float64) string {
	if len(m) == 0 {
		return "(none read)"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// runChurnOnly is -churn-only: the churn phase and nothing else.
func runChurnOnly(ctx context.Context, o options, stdout io.Writer) (*result, error) {
	return runAlone(ctx, o, stdout, "churn", func(dir string, res *result) (string, error) {
		var err error
		if res.Churn, err = runChurn(ctx, o, dir); err != nil {
			return "", err
		}
		res.Problems = res.Churn.Problems
		return res.Churn.report(), nil
	})
}
