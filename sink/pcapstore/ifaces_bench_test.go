package pcapstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
	"github.com/capstream/capstream/sink/sinktest"
)

// BenchmarkPcapSinkInterfaces measures the sink on the same packets spread
// over 1, 100 and 1000 interfaces (batches already in JetStream, default
// settings, the real S3 server and ClickHouse), until every batch is acked:
// ns/pkt should not grow much with the interfaces (go run ./bench -scale
// measures the same as separate processes, against the JetStream floor).
func BenchmarkPcapSinkInterfaces(b *testing.B) {
	pkts, _, err := sinktest.Large(2000) // ~100k packets
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sinktest.CleanupLarge)
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("interfaces=%d", n), func(b *testing.B) {
			srv, db, bucket := benchServices(b)
			// Each interface gets its share of the packets, in batches as
			// a producer cuts them, interleaved as they arrive.
			per := make([][]sinktest.Batch, n)
			for i := range n {
				var mine []sinktest.Packet
				for j := i; j < len(pkts); j += n {
					mine = append(mine, pkts[j])
				}
				h := sinktest.Header("ns", fmt.Sprintf("cap-%d", i%16), fmt.Sprintf("uid-%d", i%16), fmt.Sprintf("node-%d", i%7), "pod", fmt.Sprintf("cali%011d", i))
				per[i] = sinktest.EndRun(sinktest.Batches(h, mine, 64<<10), false)
			}
			var batches []sinktest.Batch
			for k := 0; ; k++ {
				more := false
				for i := range per {
					if k < len(per[i]) {
						batches, more = append(batches, per[i][k]), true
					}
				}
				if !more {
					break
				}
			}
			iter := 0
			for b.Loop() {
				b.StopTimer()
				iter++
				s := benchSink(b, srv, db, bucket, batches, iter)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				go func() { done <- s.Run(ctx) }()
				for sink.Drained(b.Context(), srv.JS, schemas.ConsumerPcapSink, false) != nil {
					time.Sleep(20 * time.Millisecond)
				}
				b.StopTimer()
				cancel()
				<-done
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(pkts)), "ns/pkt")
		})
	}
}
