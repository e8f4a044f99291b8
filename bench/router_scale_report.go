package main

// The router scale phase's lines of the report (router_scale.go).

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// report prints the figures and the targets.
func (r *routerScaleResult) report() string {
	const mib = 1 << 20
	var sb strings.Builder
	fmt.Fprintf(&sb, "router scale (router as a process on the real kube-apiserver and an embedded JetStream server; %d pods on %d nodes and %d PacketCaptures in one namespace, no kubelet):\n",
		r.Pods, r.Nodes, r.Captures)
	fmt.Fprintf(&sb, "  setup: %d pods created and set Running in %s (%.0f pods/s), %d captures in %s; %d expected commands, %d endpoints\n",
		r.Pods, r.Create.Round(time.Millisecond), float64(r.Pods)/r.Create.Seconds(), r.Captures, r.CreateCaptures.Round(time.Millisecond), r.Expected, r.Endpoints)
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(&sb, "  %-44s | %s\n", "figure", "value")
	row := func(name, v string) { fmt.Fprintf(&sb, "  %-44s | %s\n", name, v) }
	row("router start -> ready (informers synced)", r.Ready.Round(time.Millisecond).String())
	row("router start -> first full set of commands", r.FirstFull.Round(time.Millisecond).String())
	rate := 0.0
	if r.Publish > 0 {
		rate = float64(r.Msgs) / r.Publish.Seconds()
	}
	row("commands/s (first message -> full set)", fmt.Sprintf("%.0f (%d messages in %s)", rate, r.Msgs, r.Publish.Round(time.Millisecond)))
	row("label change -> command, p50", r.Latency.P50.Round(time.Millisecond).String())
	row("label change -> command, p99 (target < 1s)", fmt.Sprintf("%s, max %s: %s", r.Latency.P99.Round(time.Millisecond), r.Latency.Max.Round(time.Millisecond),
		met(r.Changes > 0 && r.Missed == 0 && r.Latency.P99 < routerScaleP99Target)))
	row("label changes missed", fmt.Sprintf("%d of %d", r.Missed, r.Changes))
	row("router mean reconcile (its histogram)", fmt.Sprintf("%s over %.0f reconciles", r.ReconcileMean.Round(time.Microsecond), r.Reconciles))
	row("router VmRSS after the first full set", fmt.Sprintf("%.1f MiB", float64(r.RSS)/mib))
	row("router VmHWM (peak, target < 512 MiB)", fmt.Sprintf("%.1f MiB: %s", float64(r.HWM)/mib, met(r.HWM > 0 && r.HWM < routerScaleRSSTarget)))
	row("router live heap after GC / heap in use", fmt.Sprintf("%.0f MiB / %.1f MiB", float64(r.Live)/mib, float64(r.HeapInuse)/mib))
	row("commands equal the model after the changes", fmt.Sprintf("%v", r.Settled))
	fmt.Fprintf(&sb, "  phase %s (build %s, cleanup %s); router exit: %s\n", r.Wall.Round(time.Millisecond), r.Build.Round(time.Millisecond),
		r.Cleanup.Round(time.Millisecond), cmpOr(r.RouterExit, "clean"))
	for _, p := range r.Problems {
		fmt.Fprintf(&sb, "  PROBLEM: %s\n", p)
	}
	return sb.String()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// runRouterScaleOnly is -router-scale: the phase and nothing else.
func runRouterScaleOnly(ctx context.Context, o options, stdout io.Writer) (*result, error) {
	return runAlone(ctx, o, stdout, "router scale", func(dir string, res *result) (string, error) {
		rs, err := runRouterScale(ctx, o, dir)
		if err != nil {
			return "", err
		}
		res.Problems = rs.Problems
		return rs.report(), nil
	})
}
