package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// machine describes where the figures were measured; figures from
// different machines are not comparable.
type machine struct {
	CPUs    int
	Model   string
	MemMiB  int64
	Kernel  string
	Go      string
	Date    time.Time
	Servers string
}

func readMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC()}
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemMiB = kb >> 10
			}
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	return m
}

// row is one line of the table. Every ratio reads "higher is better":
// candidate/baseline for rates, baseline/candidate for costs.
type row struct {
	scenario, baseline, candidate string
	ratio                         float64 // NaN: not measured
}

// newRow is a row whose ratio is candV/baseV for a rate (higherBetter)
// and baseV/candV for a cost.
func newRow(scenario, base string, baseV float64, cand string, candV float64, higherBetter bool) row {
	ratio := candV / baseV
	if !higherBetter {
		ratio = baseV / candV
	}
	return row{scenario, base, cand, ratio}
}

func (r *result) copyRatio() float64 {
	return r.pipelineBytesPerSec() / r.copyBytesPerSec()
}

func (r *result) copyBytesPerSec() float64 {
	return rate(float64(r.Workload.FileBytes), r.Copy.Wall)
}

func (r *result) pipelineBytesPerSec() float64 {
	return rate(float64(r.Workload.FileBytes), r.Throughput.Wall)
}

func (r *result) pipelinePktPerSec() float64 {
	return rate(float64(r.Workload.Packets), r.Throughput.Wall)
}

func rate(n float64, d time.Duration) float64 {
	if d <= 0 {
		return math.NaN()
	}
	return n / d.Seconds()
}

// perPacket is d per workload packet, in microseconds.
func (r *result) perPacket(d time.Duration) float64 {
	return float64(d.Nanoseconds()) / 1e3 / float64(r.Workload.Packets)
}

func (r *result) serversCPU() time.Duration {
	var d time.Duration
	for _, v := range r.Throughput.CPUServers {
		d += v
	}
	return d
}

func (r *result) rows() []row {
	n := float64(r.Workload.Packets)
	mbs := func(d time.Duration) float64 { return rate(float64(r.Workload.FileBytes), d) / 1e6 }
	kpps := func(d time.Duration) float64 { return rate(n, d) / 1e3 }
	tool := func(t toolRun, v func(time.Duration) float64, format string) (string, float64) {
		if t.Err != nil {
			return "n/a", math.NaN()
		}
		x := v(t.Wall)
		return fmt.Sprintf(format, x), x
	}
	pipeMB, pipeKpps := mbs(r.Throughput.Wall), kpps(r.Throughput.Wall)
	var rows []row
	add := func(scenario, base string, baseV float64, cand string, candV float64, higherBetter bool) {
		rows = append(rows, newRow(scenario, base, baseV, cand, candV, higherBetter))
	}
	b, bv := tool(r.Copy, mbs, "%.1f MB/s tcpdump -r -w")
	add("throughput bytes/s (copy limit)", b, bv, fmt.Sprintf("%.1f MB/s pipeline", pipeMB), pipeMB, true)
	b, bv = tool(r.Copy, kpps, "%.0f kpkt/s tcpdump -r -w")
	add("throughput packets/s (copy limit)", b, bv, fmt.Sprintf("%.0f kpkt/s pipeline", pipeKpps), pipeKpps, true)
	b, bv = tool(r.Argus, kpps, "%.0f kpkt/s argus")
	add("flow extraction packets/s (argus)", b, bv, fmt.Sprintf("%.0f kpkt/s pipeline", pipeKpps), pipeKpps, true)
	b, bv = tool(r.Tshark, kpps, "%.0f kpkt/s tshark conv")
	add("flow extraction packets/s (tshark)", b, bv, fmt.Sprintf("%.0f kpkt/s pipeline", pipeKpps), pipeKpps, true)

	// The references that do the pipeline's two jobs, a pcap copy and flow
	// records, cost this much CPU together.
	refCPU, refName := math.NaN(), "n/a"
	if r.Copy.Err == nil && r.Argus.Err == nil {
		refCPU, refName = r.perPacket(r.Copy.CPU+r.Argus.CPU), "tcpdump + argus"
	}
	self := r.perPacket(r.Throughput.CPUSelf)
	all := r.perPacket(r.Throughput.CPUSelf + r.serversCPU())
	add("CPU/packet, in-process", fmt.Sprintf("%.2f µs %s", refCPU, refName), refCPU, fmt.Sprintf("%.2f µs pipeline", self), self, false)
	add("CPU/packet, incl. ClickHouse + S3", fmt.Sprintf("%.2f µs %s", refCPU, refName), refCPU, fmt.Sprintf("%.2f µs pipeline", all), all, false)

	if f := r.Floor; !f.Skipped && f.Wall > 0 {
		// The broker alone, against the copy limit and against the
		// pipeline: what capstream adds on top of JetStream.
		fMB, fCPU := mbs(f.Wall), r.perPacket(f.CPU)
		b, bv = tool(r.Copy, mbs, "%.1f MB/s tcpdump -r -w")
		add("JetStream alone bytes/s (copy limit)", b, bv, fmt.Sprintf("%.1f MB/s JetStream alone", fMB), fMB, true)
		if m := r.FloorMem; m.Wall > 0 {
			mMB := mbs(m.Wall)
			add("JetStream alone, memory storage", b, bv, fmt.Sprintf("%.1f MB/s JetStream in memory", mMB), mMB, true)
		}
		add("pipeline bytes/s vs JetStream alone", fmt.Sprintf("%.1f MB/s JetStream alone", fMB), fMB, fmt.Sprintf("%.1f MB/s pipeline", pipeMB), pipeMB, true)
		add("CPU/packet vs JetStream alone", fmt.Sprintf("%.2f µs JetStream alone", fCPU), fCPU, fmt.Sprintf("%.2f µs pipeline", self), self, false)
		if m := r.FloorMem; m.Wall > 0 {
			mCPU := r.perPacket(m.CPU)
			add("CPU/packet, JetStream in memory", "2.00 µs target", 2, fmt.Sprintf("%.2f µs JetStream in memory", mCPU), mCPU, false)
		}
	}

	budget := r.Latency.Budget.Seconds()
	p50, pmax := quantile(r.Latency.Latencies, 0.5).Seconds(), quantile(r.Latency.Latencies, 1).Seconds()
	add("latency packet->flow row, p50", fmt.Sprintf("%.2f s active timeout + 2 s", budget), budget, fmt.Sprintf("%.2f s", p50), p50, false)
	add("latency packet->flow row, max", fmt.Sprintf("%.2f s active timeout + 2 s", budget), budget, fmt.Sprintf("%.2f s", pmax), pmax, false)

	// Peak RSS of each sink process against the 256 MiB budget, per input.
	target := float64(memoryTarget) / mib
	for _, m := range r.Memory.Runs {
		for _, sm := range []sinkMemory{m.PcapSink, m.FlowSink} {
			v := float64(sm.PeakRSS) / mib
			add(fmt.Sprintf("peak RSS, %s sink, %s input", sm.Sink, m.Input), fmt.Sprintf("%.0f MiB target", target), target, fmt.Sprintf("%.1f MiB", v), v, false)
		}
	}
	return rows
}

const mib = 1 << 20

// formatTable prints rows as the `scenario | baseline | candidate | ratio`
// table, then the line saying how the ratios read.
func formatTable(rows []row) string {
	var sb strings.Builder
	w := [3]int{len("scenario"), len("baseline"), len("candidate")}
	for _, x := range rows {
		w[0], w[1], w[2] = max(w[0], len([]rune(x.scenario))), max(w[1], len([]rune(x.baseline))), max(w[2], len([]rune(x.candidate)))
	}
	pad := func(s string, n int) string { return s + strings.Repeat(" ", n-len([]rune(s))) }
	fmt.Fprintf(&sb, "%s | %s | %s | ratio\n", pad("scenario", w[0]), pad("baseline", w[1]), pad("candidate", w[2]))
	fmt.Fprintf(&sb, "%s-|-%s-|-%s-|------\n", strings.Repeat("-", w[0]), strings.Repeat("-", w[1]), strings.Repeat("-", w[2]))
	for _, x := range rows {
		ratio := "n/a"
		if !math.IsNaN(x.ratio) && !math.IsInf(x.ratio, 0) {
			ratio = fmt.Sprintf("%.3f", x.ratio)
		}
		fmt.Fprintf(&sb, "%s | %s | %s | %s\n", pad(x.scenario, w[0]), pad(x.baseline, w[1]), pad(x.candidate, w[2]), ratio)
	}
	fmt.Fprintln(&sb, "\nratios: higher is better (candidate/baseline for rates, baseline/candidate for costs)")
	return sb.String()
}

// report is the printed and saved text: the table, the absolute figures,
// the targets.
func (r *result) report() string {
	var sb strings.Builder
	sb.WriteString(formatTable(r.rows()))

	t, wl, m := r.Throughput, r.Workload, r.Machine
	fmt.Fprintf(&sb, "\nmachine: %d CPUs, %s, %d MiB, Linux %s, %s, %s\n", m.CPUs, m.Model, m.MemMiB, m.Kernel, m.Go, m.Date.Format(time.RFC3339))
	fmt.Fprintf(&sb, "workload: %d packets, %d flows started, %.1f MB file, %.1f MB frames, %.0f B/packet mean\n",
		wl.Packets, wl.Flows, float64(wl.FileBytes)/1e6, float64(wl.FrameBytes)/1e6, float64(wl.FrameBytes)/float64(wl.Packets))
	fmt.Fprintf(&sb, "config: producer defaults (512 KiB batches), pcap sink defaults (64 MiB objects) but stopAfter %s, flow sink active timeout %s, idle %s, stopAfter %s\n",
		sinkStopAfter, r.Options.ActiveTimeout, r.Options.ActiveTimeout/2, sinkStopAfter)
	fmt.Fprintf(&sb, "pipeline: wall %s, %.1f MB/s, %.0f packets/s, %d batches, %d drops; the replay was all in JetStream after %s (%.1f MB/s), the rest is the sinks catching up and finishing (the replay's last batch completes the last object and flow window at once, then the last upload and insert)\n",
		t.Wall.Round(time.Millisecond), r.pipelineBytesPerSec()/1e6, r.pipelinePktPerSec(), t.Batches, t.Drops,
		t.Replay.Round(time.Millisecond), rate(float64(wl.FileBytes), t.Replay)/1e6)
	names := make([]string, 0, len(t.CPUServers))
	for n := range t.CPUServers {
		names = append(names, n)
	}
	slices.Sort(names)
	var servers []string
	for _, n := range names {
		servers = append(servers, fmt.Sprintf("%s %s (%.2f µs/packet)", n, t.CPUServers[n].Round(time.Millisecond), r.perPacket(t.CPUServers[n])))
	}
	if len(servers) == 0 {
		servers = []string{"not sampled (no pid files)"}
	}
	fmt.Fprintf(&sb, "cpu: in-process %s (%.2f µs/packet, %.2f cores over the wall time); servers: %s\n",
		t.CPUSelf.Round(time.Millisecond), r.perPacket(t.CPUSelf), t.CPUSelf.Seconds()/t.Wall.Seconds(), strings.Join(servers, ", "))
	fmt.Fprintf(&sb, "stored: %d objects, %d bytes, %d packets in pcap_objects (S3 lists %d objects, %d bytes); %d flow records with %d packets\n",
		t.Objects, t.ObjectBytes, t.ObjectPackets, t.S3Objects, t.S3Bytes, t.FlowRecords, t.FlowPackets)
	for _, tr := range []toolRun{r.Copy, r.Argus, r.Tshark} {
		if tr.Err != nil {
			fmt.Fprintf(&sb, "reference %s: n/a (%v)\n", tr.Name, tr.Err)
			continue
		}
		flows := ""
		if tr.Flows > 0 {
			flows = fmt.Sprintf(", %d flows", tr.Flows)
		}
		if tr.Fixed > 0 {
			flows += fmt.Sprintf("; %s wall on a pcap with no packets (it never exits sooner, so small inputs understate its rate)", tr.Fixed.Round(time.Millisecond))
		}
		fmt.Fprintf(&sb, "reference %s: wall %s, cpu %s (%.2f µs/packet)%s\n", tr.Name, tr.Wall.Round(time.Millisecond), tr.CPU.Round(time.Millisecond), r.perPacket(tr.CPU), flows)
	}
	if f := r.Floor; f.Skipped {
		fmt.Fprintln(&sb, "jetstream floor: skipped (-floor=false)")
	} else {
		fmt.Fprintf(&sb, "jetstream floor (embedded server, same streams and durables, the workload as %d producer-sized batches published async on one connection, two connections pulling and acking every batch, no capstream code): wall %s, %.1f MB/s, cpu %s (%.2f µs/packet); capstream adds %.2f µs/packet on top\n",
			f.Batches, f.Wall.Round(time.Millisecond), rate(float64(wl.FileBytes), f.Wall)/1e6, f.CPU.Round(time.Millisecond), r.perPacket(f.CPU), r.perPacket(t.CPUSelf)-r.perPacket(f.CPU))
		m := r.FloorMem
		fmt.Fprintf(&sb, "jetstream floor with the packets stream in memory (capstream never does this: a server restart would lose the batches): wall %s, %.1f MB/s, cpu %s (%.2f µs/packet)\n",
			m.Wall.Round(time.Millisecond), rate(float64(wl.FileBytes), m.Wall)/1e6, m.CPU.Round(time.Millisecond), r.perPacket(m.CPU))
	}
	var lats []string
	for _, d := range r.Latency.Latencies {
		lats = append(lats, fmt.Sprintf("%.2f", d.Seconds()))
	}
	fmt.Fprintf(&sb, "latency (paced replay, pipeline otherwise idle, polled every %s): %d markers, %d missing, seconds: %s\n",
		pollEvery, len(r.Latency.Latencies), r.Latency.Missing, strings.Join(lats, " "))

	if mr := r.Memory; mr.Skipped {
		fmt.Fprintln(&sb, "memory: skipped (-memory=false)")
	} else {
		config := "every sink setting at its default"
		if mr.StopAfter > 0 {
			config = fmt.Sprintf("sink defaults but stopAfter %s", mr.StopAfter)
		}
		fmt.Fprintf(&sb, "memory (each sink a process of its own, %s, the whole input in JetStream before it starts; peak RSS is VmHWM, RSS also sampled every %s): phase %s (build %s)\n",
			config, rssEvery, mr.Wall.Round(time.Millisecond), mr.Build.Round(time.Millisecond))
		for _, m := range mr.Runs {
			fmt.Fprintf(&sb, "  %s input: %d packets, %d batches, %.1f MB of records, %d interfaces, %d flows; published in %s, stored %s after the sinks started; %d objects, %d packets in pcap_objects; %d flow records, %d packets\n",
				m.Input, m.Packets, m.Batches, float64(m.Bytes)/1e6, m.Interfaces, m.Flows, m.Publish.Round(time.Millisecond), m.Wall.Round(time.Millisecond),
				m.Objects, m.ObjectPackets, m.FlowRecords, m.FlowPackets)
			for _, sm := range []sinkMemory{m.PcapSink, m.FlowSink} {
				gauge := "open objects"
				if sm.Sink == "flows" {
					gauge = "open flows"
				}
				exit := "clean exit"
				if sm.Exit != "" {
					exit = "exit: " + sm.Exit
				}
				fmt.Fprintf(&sb, "    sink %-5s peak RSS %.1f MiB (max sampled %.1f MiB over %d samples, shutdown included), Go heap in use at most %.1f MiB (scraped every %s), at most %.0f %s; %s\n",
					sm.Sink, float64(sm.PeakRSS)/mib, float64(sm.MaxSampledRSS)/mib, sm.Samples, float64(sm.PeakHeap)/mib, gaugeEvery, sm.PeakGauge, gauge, exit)
			}
		}
	}

	fmt.Fprintln(&sb, "\ntargets:")
	target := func(ok bool, text string) { sb.WriteString(targetLine(ok, text)) }
	floorNote := func(v string) string {
		if r.Floor.Skipped || r.Floor.Wall == 0 {
			return ""
		}
		return "; JetStream alone: " + v
	}
	target(r.copyRatio() >= 0.5, fmt.Sprintf("pipeline bytes/s >= 0.5x the copy limit: %.3fx%s", r.copyRatio(),
		floorNote(fmt.Sprintf("%.3fx (%.3fx in memory)", rate(float64(wl.FileBytes), r.Floor.Wall)/r.copyBytesPerSec(), rate(float64(wl.FileBytes), r.FloorMem.Wall)/r.copyBytesPerSec()))))
	target(r.perPacket(t.CPUSelf) <= 2, fmt.Sprintf("<= 2 µs CPU/packet across producer, JetStream and both sinks: %.2f µs in-process (%.2f µs with ClickHouse and S3)%s",
		r.perPacket(t.CPUSelf), r.perPacket(t.CPUSelf+r.serversCPU()), floorNote(fmt.Sprintf("%.2f µs (%.2f µs in memory)", r.perPacket(r.Floor.CPU), r.perPacket(r.FloorMem.CPU)))))
	pmax := quantile(r.Latency.Latencies, 1)
	target(r.Latency.Missing == 0 && len(r.Latency.Latencies) > 0 && pmax <= r.Latency.Budget,
		fmt.Sprintf("packet queryable as a flow within active timeout + 2 s (%s): max %s", r.Latency.Budget, pmax.Round(time.Millisecond)))
	if r.Memory.Skipped {
		fmt.Fprintf(&sb, "  %-6s %s\n", "n/a", "each sink's peak RSS < 256 MiB whatever the input: memory phase skipped")
	} else {
		pcap, flows := r.Memory.worst()
		target(len(r.Memory.Runs) > 0 && pcap > 0 && flows > 0 && pcap < memoryTarget && flows < memoryTarget,
			fmt.Sprintf("each sink's peak RSS < 256 MiB whatever the input: pcap %.1f MiB, flows %.1f MiB (worst of both inputs)", float64(pcap)/mib, float64(flows)/mib))
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&sb, "PROBLEM: %s\n", p)
	}
	return sb.String()
}

// targetLine is one line of a report's targets: met or MISSED, then text.
func targetLine(ok bool, text string) string {
	mark := "MISSED"
	if ok {
		mark = "met"
	}
	return fmt.Sprintf("  %-6s %s\n", mark, text)
}

// runAlone runs one phase and nothing else (-churn-only, -router-scale)
// in a temporary directory: run returns the phase's lines of the report
// and sets res.Problems; the report, after the machine line, goes to
// stdout and under -out as <time>-<phase>.txt (spaces as dashes).
func runAlone(ctx context.Context, o options, stdout io.Writer, phase string, run func(dir string, res *result) (string, error)) (*result, error) {
	res := &result{Machine: readMachine(), Options: o}
	dir, err := os.MkdirTemp("", "capstream-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(o.Log, "bench: %s phase\n", phase)
	lines, err := run(dir, res)
	if err != nil {
		return nil, fmt.Errorf("%s phase: %w", phase, err)
	}
	m := res.Machine
	report := fmt.Sprintf("machine: %d CPUs (%s), %d MiB, Linux %s, %s, %s\n", m.CPUs, m.Model, m.MemMiB, m.Kernel, m.Go, m.Date.Format(time.RFC3339)) +
		lines
	fmt.Fprint(stdout, report)
	if err := writeReport(o, "-"+strings.ReplaceAll(phase, " ", "-"), report); err != nil {
		return res, err
	}
	if len(res.Problems) > 0 {
		return res, fmt.Errorf("%s: %v", phase, res.Problems)
	}
	return res, nil
}

// writeReport writes report under -out, if set, as <time><suffix>.txt.
func writeReport(o options, suffix, report string) error {
	if o.Out == "" {
		return nil
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}
	name := filepath.Join(o.Out, time.Now().UTC().Format("20060102T150405Z")+suffix+".txt")
	if err := os.WriteFile(name, []byte(report), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(o.Log, "bench: results written to", name)
	return nil
}
