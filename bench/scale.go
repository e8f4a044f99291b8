package main

// -scale: cost as the work grows, in one run and nothing else. Three
// parts, each reusing a phase:
//   - the router scale phase as it is (router_scale.go; 1000 nodes,
//     20,000 pods, 500 captures by default);
//   - the producer scale phase (producer_scale.go) at a node's worth of
//     pods, 110 (kubelet's default maximum), one interface each, under 4
//     captures, with the producer's default rings (afpacket.ringBytes 32
//     MiB in maxRingBytes 1 GiB), unless the -producer-scale-* flags say
//     otherwise; its peak RSS is set beside the README's formula, 64 MiB
//     + min(maxRingBytes, interfaces x ringBytes);
//   - the sinks at each of -scale-sizes interfaces (1, 10, 100, 1000),
//     beside the JetStream floor at the same size (scale_sinks.go).
// It prints one table, the parts' figures and the targets of issue 14
// (met or MISSED; only wrong or lost data fails the run).

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/capstream/capstream/producer"
	"github.com/capstream/capstream/producer/source/afpacket"
)

// Targets of issue 14 for -scale; the router's are routerScaleP99Target
// and routerScaleRSSTarget.
const (
	// scaleAboveFloorTarget is capstream's CPU above the JetStream floor,
	// per packet.
	scaleAboveFloorTarget = time.Microsecond
	// scaleRateTarget: the sinks' packets/s at the most interfaces over
	// their packets/s at the fewest.
	scaleRateTarget = 0.5
	// scaleProcessBytes is the formula's allowance for the producer
	// process besides its rings.
	scaleProcessBytes = 64 << 20
)

// scaleRun is what -scale measured.
type scaleRun struct {
	Router   *routerScaleResult
	Producer *scaleResult
	Sinks    []*sinkScaleRun
	// Formula is the README's producer memory at the producer part's
	// size: scaleProcessBytes + min(maxRingBytes, interfaces x
	// ringBytes).
	Formula     int64
	Build, Wall time.Duration
	Problems    []string
}

// runScale runs the three parts in dir, the binary built once.
func runScale(ctx context.Context, o options, dir string) (*scaleRun, error) {
	r := &scaleRun{Formula: scaleProcessBytes + min(o.ScaleMaxRingBytes, int64(o.ScaleInterfaces)*o.ScaleRingBytes)}
	t0 := time.Now()
	defer func() { r.Wall = time.Since(t0) }()
	bin := filepath.Join(dir, "capstream")
	if err := buildBinary(ctx, bin); err != nil {
		return r, err
	}
	r.Build = time.Since(t0)
	var err error
	fmt.Fprintln(o.Log, "bench: scale: the sinks and the JetStream floor")
	if r.Sinks, err = runSinkScale(ctx, o, dir, bin); err != nil {
		return r, fmt.Errorf("sinks: %w", err)
	}
	for _, s := range r.Sinks {
		r.Problems = append(r.Problems, s.check()...)
	}
	fmt.Fprintln(o.Log, "bench: scale: the producer")
	if r.Producer, err = runProducerScale(ctx, o, dir); err != nil {
		return r, fmt.Errorf("producer: %w", err)
	}
	r.Problems = append(r.Problems, r.Producer.Problems...)
	fmt.Fprintln(o.Log, "bench: scale: the router")
	if r.Router, err = runRouterScale(ctx, o, dir); err != nil {
		return r, fmt.Errorf("router: %w", err)
	}
	r.Problems = append(r.Problems, r.Router.Problems...)
	return r, nil
}

// runScaleOnly is -scale.
func runScaleOnly(ctx context.Context, o options, stdout io.Writer) (*result, error) {
	return runAlone(ctx, o, stdout, "scale", func(dir string, res *result) (string, error) {
		r, err := runScale(ctx, o, dir)
		if err != nil {
			return "", err
		}
		res.Problems = r.Problems
		return r.report(), nil
	})
}

// rateRatio is the sinks' packets/s at the most interfaces over that at
// the fewest, with both runs.
func (r *scaleRun) rateRatio() (ratio float64, fewest, most *sinkScaleRun) {
	if len(r.Sinks) == 0 {
		return math.NaN(), nil, nil
	}
	fewest, most = r.Sinks[0], r.Sinks[0]
	for _, s := range r.Sinks {
		if s.Size < fewest.Size {
			fewest = s
		}
		if s.Size > most.Size {
			most = s
		}
	}
	return fewest.Sinks.Wall.Seconds() / most.Sinks.Wall.Seconds(), fewest, most
}

func (r *scaleRun) rows() []row {
	var rows []row
	add := func(scenario, base string, baseV float64, cand string, candV float64, higherBetter bool) {
		rows = append(rows, newRow(scenario, base, baseV, cand, candV, higherBetter))
	}
	none := func(scenario, cand string) { rows = append(rows, row{scenario, "-", cand, math.NaN()}) }
	if rt := r.Router; rt != nil {
		size := fmt.Sprintf("%d pods, %d captures", rt.Pods, rt.Captures)
		none("router: label change -> command p50, "+size, rt.Latency.P50.Round(time.Millisecond).String())
		add("router: label change -> command p99, "+size, "1s target", routerScaleP99Target.Seconds(), rt.Latency.P99.Round(time.Millisecond).String(), rt.Latency.P99.Seconds(), false)
		add("router: peak RSS (VmHWM)", "512 MiB target", routerScaleRSSTarget/mib, fmt.Sprintf("%.1f MiB", float64(rt.HWM)/mib), float64(rt.HWM)/mib, false)
		none("router: commands/s to the first full set", fmt.Sprintf("%.0f/s", rate(float64(rt.Msgs), rt.Publish)))
	}
	if p := r.Producer; p != nil {
		size := fmt.Sprintf("%d pods x %d captures", p.Interfaces, p.Captures)
		add("producer: peak RSS with rings, "+size, fmt.Sprintf("%.0f MiB formula", float64(r.Formula)/mib), float64(r.Formula)/mib,
			fmt.Sprintf("%.1f MiB", float64(p.PeakRSS)/mib), float64(p.PeakRSS)/mib, false)
		none("producer: CPU/packet captured, "+size, fmt.Sprintf("%.2f µs", p.perSent()))
	}
	for _, s := range r.Sinks {
		n := fmt.Sprintf("%d interfaces", s.Size)
		fp, sp := rate(float64(s.Packets), s.Floor.Wall), rate(float64(s.Packets), s.Sinks.Wall)
		add("sinks packets/s, "+n, fmt.Sprintf("%.0f kpkt/s JetStream floor", fp/1e3), fp, fmt.Sprintf("%.0f kpkt/s both sinks", sp/1e3), sp, true)
		fc, sc := s.perPacket(s.Floor.cpu()), s.perPacket(s.Sinks.cpu())
		add("sinks CPU/packet, "+n, fmt.Sprintf("%.2f µs floor consumers", fc), fc, fmt.Sprintf("%.2f µs both sinks", sc), sc, false)
		add("capstream CPU above the floor, "+n, "1.00 µs target", scaleAboveFloorTarget.Seconds()*1e6, fmt.Sprintf("%.2f µs", s.above()), s.above(), false)
	}
	if ratio, fewest, most := r.rateRatio(); fewest != nil && fewest != most {
		add(fmt.Sprintf("sinks packets/s, %d vs %d interfaces", most.Size, fewest.Size), fmt.Sprintf("%.0f kpkt/s at %d", rate(float64(fewest.Packets), fewest.Sinks.Wall)/1e3, fewest.Size),
			1, fmt.Sprintf("%.0f kpkt/s at %d", rate(float64(most.Packets), most.Sinks.Wall)/1e3, most.Size), ratio, true)
	}
	return rows
}

// perSent is the producer's CPU under traffic per packet on the wire of
// an open interface, in microseconds.
func (r *scaleResult) perSent() float64 {
	return float64(r.CPUTraffic.Nanoseconds()) / 1e3 / float64(max(int(r.Sockets)*r.PacketsPerIface, 1))
}

// report is the table, each part's figures and the targets.
func (r *scaleRun) report() string {
	var sb strings.Builder
	sb.WriteString(formatTable(r.rows()))
	fmt.Fprintf(&sb, "\nscale run: %s (build %s)\n", r.Wall.Round(time.Millisecond), r.Build.Round(time.Millisecond))
	if len(r.Sinks) > 0 {
		fmt.Fprintf(&sb, "sinks (the bench workload's %d packets spread by flow over N interfaces of %d (capture, node) pairs at most (4 captures on 8 nodes), producer-sized batches, the last of each interface marked Last, published async into a fresh stream while `capstream sink pcap` and `sink flows` run with default settings, each a process; then the same batches to two floor consumers, processes that only pull and ack; CPU from /proc over first publish -> both drained; PUTs from the S3 listing, one per object under the 64 MiB partSize):\n",
			r.Sinks[0].Packets, sinkScaleCaptures*sinkScaleNodes)
	}
	for _, s := range r.Sinks {
		sv := func(name string) float64 { return s.perPacket(s.Sinks.Servers[name]) }
		fmt.Fprintf(&sb, "  %d interfaces (%d with packets, %d pairs, %d of %d partitions): %d batches, %.1f MB; both sinks: %s (published in %s), %.0f packets/s, %d objects (%.1f/s), %d S3 PUTs (%.1f/s), %d flow records; CPU pcap %s + flows %s = %.2f µs/packet; this process %.2f µs/packet, s3 %.2f, clickhouse %.2f\n",
			s.Size, s.Interfaces, s.Pairs, s.Partitions, s.PartitionsOf, s.Batches, float64(s.Bytes)/1e6, s.Sinks.Wall.Round(time.Millisecond), s.Sinks.Publish.Round(time.Millisecond),
			rate(float64(s.Packets), s.Sinks.Wall), s.Objects, rate(float64(s.Objects), s.Sinks.Wall), s.PUTs, rate(float64(s.PUTs), s.Sinks.Wall), s.FlowRecords,
			s.Sinks.CPU[0].Round(time.Millisecond), s.Sinks.CPU[1].Round(time.Millisecond), s.perPacket(s.Sinks.cpu()), s.perPacket(s.Sinks.Harness), sv("s3"), sv("clickhouse"))
		fmt.Fprintf(&sb, "    floor: %s (published in %s), %.0f packets/s; CPU %s + %s = %.2f µs/packet; this process %.2f µs/packet; capstream above the floor %.2f µs/packet\n",
			s.Floor.Wall.Round(time.Millisecond), s.Floor.Publish.Round(time.Millisecond), rate(float64(s.Packets), s.Floor.Wall),
			s.Floor.CPU[0].Round(time.Millisecond), s.Floor.CPU[1].Round(time.Millisecond), s.perPacket(s.Floor.cpu()), s.perPacket(s.Floor.Harness), s.above())
	}
	if r.Producer != nil {
		sb.WriteString(r.Producer.report())
	}
	if r.Router != nil {
		sb.WriteString(r.Router.report())
	}

	sb.WriteString("\ntargets:\n")
	if rt := r.Router; rt != nil {
		note := ""
		if rt.Pods < routerScaleDefaults.pods || rt.Captures < routerScaleDefaults.captures {
			note = " (a smaller cluster than the target's)"
		}
		sb.WriteString(targetLine(rt.Changes > 0 && rt.Missed == 0 && rt.Latency.P99 < routerScaleP99Target,
			fmt.Sprintf("reconcile p99 < 1 s at 20,000 pods and 500 captures: %s at %d pods and %d captures%s", rt.Latency.P99.Round(time.Millisecond), rt.Pods, rt.Captures, note)))
		sb.WriteString(targetLine(rt.HWM > 0 && rt.HWM < routerScaleRSSTarget, fmt.Sprintf("router RSS < 512 MiB: VmHWM %.1f MiB", float64(rt.HWM)/mib)))
	}
	if p := r.Producer; p != nil {
		sb.WriteString(targetLine(p.PeakRSS > 0 && p.PeakRSS <= r.Formula, fmt.Sprintf("producer RSS within 64 MiB + min(maxRingBytes, interfaces x ringBytes) at %d pods: %.1f of %.0f MiB (%v of %d interfaces open)",
			p.Interfaces, float64(p.PeakRSS)/mib, float64(r.Formula)/mib, p.Sockets, p.Interfaces)))
	}
	if ratio, fewest, most := r.rateRatio(); fewest != nil {
		sb.WriteString(targetLine(ratio >= scaleRateTarget, fmt.Sprintf("sink packets/s at %d interfaces >= %.1fx the rate at %d: %.3fx", most.Size, scaleRateTarget, fewest.Size, ratio)))
		worst := slices.MaxFunc(r.Sinks, func(a, b *sinkScaleRun) int { return cmp.Compare(a.above(), b.above()) })
		var each []string
		for _, s := range r.Sinks {
			each = append(each, fmt.Sprintf("%.2f at %d", s.above(), s.Size))
		}
		sb.WriteString(targetLine(worst.above() <= scaleAboveFloorTarget.Seconds()*1e6, fmt.Sprintf("capstream CPU above the JetStream floor <= 1.0 µs/packet at every size: worst %.2f µs (%s interfaces: µs)",
			worst.above(), strings.Join(each, ", "))))
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&sb, "PROBLEM: %s\n", p)
	}
	return sb.String()
}

// scaleFlagDefaults gives -scale its producer part: 110 pods under 4
// captures, the producer's default rings and 2000 packets an interface,
// unless the -producer-scale-* flags were given.
func scaleFlagDefaults(o *options) {
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	pc := producer.DefaultConfig()
	defaults := []struct {
		name string
		set  func()
	}{
		{"producer-scale-ifaces", func() { o.ScaleInterfaces = 110 }},
		{"producer-scale-captures", func() { o.ScaleCaptures = 4 }},
		{"producer-scale-packets", func() { o.ScalePacketsPerIface = 2000 }},
		{"producer-scale-ring", func() { o.ScaleRingBytes = int64(afpacket.DefaultConfig().RingBytes) }},
		{"producer-scale-budget", func() { o.ScaleMaxRingBytes = pc.MaxRingBytes }},
	}
	for _, d := range defaults {
		if !set[d.name] {
			d.set()
		}
	}
}

// sizesFlag is -scale-sizes: positive integers, comma-separated.
type sizesFlag struct{ p *[]int }

func (f sizesFlag) String() string {
	if f.p == nil {
		return ""
	}
	var s []string
	for _, n := range *f.p {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

func (f sizesFlag) Set(v string) error {
	var sizes []int
	for _, part := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return fmt.Errorf("%q: want positive integers, comma-separated", v)
		}
		sizes = append(sizes, n)
	}
	*f.p = sizes
	return nil
}
