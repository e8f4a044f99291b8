package main

// The producer scale phase's checks and its lines of the report
// (producer_scale.go).

import (
	"fmt"
	"strings"
	"time"
)

// check returns every way the phase went wrong.
func (r *scaleResult) check() []string {
	var probs []string
	if r.RingInUse > float64(r.MaxRingBytes) {
		probs = append(probs, fmt.Sprintf("producer scale: %.0f ring bytes in use, over maxRingBytes %d", r.RingInUse, r.MaxRingBytes))
	}
	if want := float64(min(int64(r.Interfaces), r.MaxRingBytes/r.RingBytes) * r.RingBytes); r.RingInUse != want {
		probs = append(probs, fmt.Sprintf("producer scale: %.0f ring bytes in use, want one ring per open interface: %.0f", r.RingInUse, want))
	}
	if r.Packets != r.Expected || r.KernelDrops != 0 || r.PublishDrops != 0 {
		probs = append(probs, fmt.Sprintf("producer scale: captures reported %d packets (kernel drops %d, publish drops %d), want %d",
			r.Packets, r.KernelDrops, r.PublishDrops, r.Expected))
	}
	if r.Exit != "" {
		probs = append(probs, "producer scale: the producer did not exit cleanly on SIGTERM: "+r.Exit)
	}
	return probs
}

// report is the phase's lines of the bench report.
func (r *scaleResult) report() string {
	if r == nil || r.Skipped {
		return "producer scale: skipped (-producer-scale=false)\n"
	}
	var sb strings.Builder
	const mib = 1 << 20
	open := int(r.Sockets)
	fmt.Fprintf(&sb, "producer scale (one producer process, %d interfaces in a node namespace, %d captures each selecting all of them, every other one filtering UDP/%d; afpacket.ringBytes %d MiB, maxRingBytes %d MiB; phase %s, %d veths made in %s):\n",
		r.Interfaces, r.Captures, scalePort, r.RingBytes/mib, r.MaxRingBytes/mib, r.Wall.Round(time.Millisecond), r.Interfaces, r.Setup.Round(time.Millisecond))
	fmt.Fprintf(&sb, "  rings: %.0f MiB in use of the %d MiB budget = %d open interfaces x %d MiB (%d interfaces wait for the budget, %v budget waits counted); %v sockets carry %v subscriptions, opened %s after the commands; without sharing the %d x %d selections would ask for %d MiB\n",
		r.RingInUse/mib, r.MaxRingBytes/mib, open, r.RingBytes/mib, r.Waiting, r.BudgetWaits, r.Sockets, r.Subscribers, r.Open.Round(time.Millisecond),
		r.Captures, r.Interfaces, int64(r.Captures*r.Interfaces)*r.RingBytes/mib)
	fmt.Fprintf(&sb, "  producer peak RSS (VmHWM of the producer process, its mapped rings included) %.1f MiB, of which anonymous (heap, stacks) at most %.1f MiB, file-backed (the binary) %.1f MiB, shared (the rings) %.1f MiB (RssAnon, RssFile, RssShmem sampled every %s)\n",
		float64(r.PeakRSS)/mib, float64(r.PeakAnon)/mib, float64(r.PeakFile)/mib, float64(r.PeakShmem)/mib, rssEvery)
	fmt.Fprintf(&sb, "  producer CPU: idle with every socket open %.3f cores (%s over %s); %d packets sent (%d per interface) stored %d times in %s with %s CPU (%.2f µs per packet stored); whole phase %s\n",
		r.CPUIdle.Seconds()/r.Idle.Seconds(), r.CPUIdle.Round(time.Millisecond), r.Idle, r.Interfaces*r.PacketsPerIface, r.PacketsPerIface,
		r.Packets, r.Traffic.Round(time.Millisecond), r.CPUTraffic.Round(time.Millisecond), float64(r.CPUTraffic.Microseconds())/float64(max(r.Packets, 1)), r.CPU.Round(time.Millisecond))
	mark := "met"
	if r.RingInUse > float64(r.MaxRingBytes) || len(r.Problems) > 0 {
		mark = "MISSED"
	}
	fmt.Fprintf(&sb, "  %-6s ring memory within the node budget, every capture got every selected packet: %.0f of %d MiB, %d of %d packets\n",
		mark, r.RingInUse/mib, r.MaxRingBytes/mib, r.Packets, r.Expected)
	return sb.String()
}

// scaleDefaults are the phase's flag defaults: 2 MiB rings fit 500
// interfaces in the producer's default 1 GiB budget only because the ten
// captures share each interface's ring.
var scaleDefaults = struct {
	ifaces, captures, packets int
	ring, budget              int64
	idle                      time.Duration
}{500, 10, 20, 2 << 20, 1 << 30, 5 * time.Second}
