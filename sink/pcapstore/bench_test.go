package pcapstore

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/schemas"
	chschema "github.com/capstream/capstream/schemas/clickhouse"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/sinktest"
)

const benchRounds = 10000 // ~500k packets, ~260 MB

// BenchmarkPcapSink measures the sink end to end: batches already in
// JetStream, consumed, written as objects (default settings: 64 MiB, one
// PUT each, two uploaders) to the real S3 server and
// indexed in ClickHouse, until every batch is acked. After each round, on
// the same packets (a large pcap, about 260 MB), the reference
// `tcpdump -r FILE -w OUT` copy, untimed: x-tcpdump is the sink's rate over
// the copy's (target 0.5). peak-heap-MiB is the largest
// heap in use while the sink ran, above what the benchmark itself held
// before starting it; it includes the embedded nats-server's block caches,
// so it overstates the sink's own memory (go run ./bench measures that as
// a separate process).
func BenchmarkPcapSink(b *testing.B) {
	pkts, path, err := sinktest.Large(benchRounds)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sinktest.CleanupLarge)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	srv, db, bucket := benchServices(b)
	h := sinktest.Header("ns", "cap", "uid", "node", "pod", "cali0")
	batches := sinktest.Batches(h, pkts, schemas.DefaultBatchBytes)
	// The producer marks the interface's last batch when a capture
	// stops or a replay ends; the sink completes the object on it.
	batches = sinktest.EndRun(batches, false)
	b.SetBytes(fi.Size())
	var peak float64
	var ref time.Duration // tcpdump copies
	out := filepath.Join(b.TempDir(), "copy.pcap")
	iter := 0
	for b.Loop() {
		b.StopTimer()
		iter++
		s := benchSink(b, srv, db, bucket, batches, iter)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		var maxHeap atomic.Uint64
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		t0 := time.Now()
		var delivered time.Time
		go func() { done <- s.Run(ctx) }()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > maxHeap.Load() {
				maxHeap.Store(ms.HeapInuse)
			}
			bl, err := sink.BacklogOf(b.Context(), srv.JS, schemas.ConsumerPcapSink)
			if err == nil && bl.Pending == 0 && delivered.IsZero() {
				delivered = time.Now()
			}
			if err == nil && bl.Pending == 0 && bl.AckPending == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		b.StopTimer()
		took := time.Since(t0)
		b.Logf("all delivered after %s, all acked after %s", delivered.Sub(t0), took)
		cancel()
		<-done
		peak = max(peak, float64(maxHeap.Load()-min(base, maxHeap.Load()))/(1<<20))
		// The reference right after, on the same pcap, so both see the
		// same machine: the ratio is what the target is about.
		t1 := time.Now()
		if o, err := exec.Command("tcpdump", "-r", path, "-w", out).CombinedOutput(); err != nil {
			b.Fatalf("tcpdump: %v: %s", err, o)
		}
		ref += time.Since(t1)
		b.StartTimer() // b.Loop must not be called with the timer stopped
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(pkts)), "ns/pkt")
	b.ReportMetric(peak, "peak-heap-MiB")
	b.ReportMetric(float64(fi.Size())*float64(b.N)/ref.Seconds()/1e6, "tcpdump-MB/s")
	b.ReportMetric(ref.Seconds()/b.Elapsed().Seconds(), "x-tcpdump")
}

// benchSink publishes batches as producer bench<iter> and returns a pcap
// sink, not started, with the default settings but its prefix bench<iter>
// and no migration.
func benchSink(b *testing.B, srv *testenv.NATSServer, db *testenv.ClickHouseDB, bucket *testenv.S3Bucket, batches []sinktest.Batch, iter int) *Sink {
	b.Helper()
	for i := range batches {
		batches[i].Header.Producer = fmt.Sprintf("bench%d", iter)
	}
	if err := sinktest.Publish(b.Context(), srv.JS, batches); err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.S3 = bucket.Config()
	cfg.Prefix = fmt.Sprintf("bench%d", iter)
	cfg.StopAfter = 100 * time.Millisecond // unused: the last batch completes the last object
	cfg.Migrate = false                    // every other setting is the default
	s3, _ := cfg.S3.Client()
	s, err := New(cfg, sink.Deps{Logger: testenv.Logger(b), Registerer: prometheus.NewRegistry(), JetStream: srv.JS, ClickHouse: db.Conn, S3: s3})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchServices starts the services of a sink benchmark: a stream that
// holds 4 GiB, the pcap sink's consumers bound, a migrated database and a
// bucket.
func benchServices(b *testing.B) (*testenv.NATSServer, *testenv.ClickHouseDB, *testenv.S3Bucket) {
	b.Helper()
	srv, db, bucket := testenv.NATS(b), testenv.ClickHouse(b), testenv.S3(b)
	limits := schemas.DefaultPacketsStreamLimits()
	limits.MaxBytes = 4 << 30
	if err := schemas.EnsureStreams(b.Context(), srv.JS, limits); err != nil {
		b.Fatal(err)
	}
	if _, err := sink.Bind(b.Context(), srv.JS, schemas.PcapSinkConsumer(), 0); err != nil {
		b.Fatal(err)
	}
	if _, err := chschema.Migrate(b.Context(), db.Conn); err != nil {
		b.Fatal(err)
	}
	return srv, db, bucket
}
