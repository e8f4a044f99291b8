package flowstore

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink/sinktest"
)

// benchRounds sizes the benchmark capture: ~50 packets per round.
const benchRounds = 4000

// BenchmarkFlowExtraction measures decode + aggregate (no ClickHouse) over
// a large capture cut into 512 KiB batches and, after each round untimed,
// the reference `argus -r FILE -w OUT` on the same packets as a pcap file.
// x-argus is capstream's packets/s over argus's by CPU time (target 2).
func BenchmarkFlowExtraction(b *testing.B) {
	pkts, path, err := sinktest.Large(benchRounds)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sinktest.CleanupLarge)
	h := sinktest.Header("ns", "cap", "uid", "node", "pod", "cali0")
	batches := sinktest.Batches(h, pkts, schemas.DefaultBatchBytes)
	var size int64
	for _, bt := range batches {
		size += int64(len(bt.Body))
	}
	argus, err := exec.LookPath("argus")
	if err != nil {
		b.Skip("argus not installed (apt-get install -y argus-server)")
	}
	out := filepath.Join(b.TempDir(), "out.argus")
	b.ReportAllocs()
	b.SetBytes(size)
	var recs, flows int
	var ref time.Duration // argus CPU
	for b.Loop() {
		tb := NewTable(TableConfig{Window: time.Minute, Idle: 30 * time.Second, MaxFlows: 1 << 20})
		for i := range batches {
			tb.Add(&batches[i].Header, batches[i].Body, uint64(i+1), 0, time.Time{})
		}
		recs = len(tb.Flush(true, ReasonShutdown, time.Time{}))
		b.StopTimer()
		os.Remove(out)
		cmd := exec.Command(argus, "-r", path, "-w", out)
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("argus: %v: %s", err, o)
		}
		// argus idles about a second before it exits whatever the input,
		// so its CPU time, not its wall time, is the fair figure.
		ref += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		flows = countFlows(b, out)
		b.StartTimer()
	}
	n := float64(b.N) * float64(len(pkts))
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/pkt")
	b.ReportMetric(float64(recs), "records")
	b.ReportMetric(float64(ref.Nanoseconds())/n, "argus-cpu-ns/pkt")
	b.ReportMetric(float64(flows), "argus-flows")
	b.ReportMetric(ref.Seconds()/b.Elapsed().Seconds(), "x-argus")
}

// countFlows counts the flow records in an argus output file with ra:
// one line each, without the header (-L -1) or argus's management records.
func countFlows(b *testing.B, path string) int {
	o, err := exec.Command("ra", "-n", "-L", "-1", "-r", path, "-s", "proto", "-", "not", "man").Output()
	if err != nil {
		b.Fatalf("ra -r %s: %v", path, err)
	}
	return strings.Count(string(o), "\n")
}

// BenchmarkFlowTableMemory fills the table to MaxFlows (the default,
// 65536) with distinct UDP flows and reports the heap it holds: the flow
// sink's memory bound, whatever the input, is this plus the pull buffer.
func BenchmarkFlowTableMemory(b *testing.B) {
	maxFlows := DefaultConfig().MaxFlows
	g := sinktest.NewGen(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), time.Microsecond)
	for i := range maxFlows {
		src := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
		g.UDP(src, net.IPv4(10, 96, 0, 10), uint16(1024+i%60000), 53, []byte("0123456789abcdef"))
	}
	h := sinktest.Header("ns", "cap", "uid", "node", "pod", "cali0")
	batches := sinktest.Batches(h, g.Pkts, schemas.DefaultBatchBytes)
	g = nil
	var heap float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tb := NewTable(TableConfig{Window: time.Minute, Idle: 30 * time.Second, MaxFlows: maxFlows})
		for i := range batches {
			tb.Add(&batches[i].Header, batches[i].Body, uint64(i+1), 0, time.Time{})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if tb.Flows() != maxFlows {
			b.Fatalf("%d flows, want %d", tb.Flows(), maxFlows)
		}
		heap = float64(after.HeapInuse-before.HeapInuse) / (1 << 20)
		runtime.KeepAlive(tb)
	}
	b.ReportMetric(heap, "table-MiB")
	b.ReportMetric(heap*(1<<20)/float64(maxFlows), "B/flow")
}
