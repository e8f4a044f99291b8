package pcapstore

import (
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/capstream/capstream/sink/sinktest"
)

// Objects completing together share pcap_objects inserts: 60 interfaces'
// last batches complete 60 objects at once, and their rows go in a few
// INSERTs (ClickHouse's cost is per insert), not one each, while every
// object is still indexed before its batches are acked.
func TestFunctionalPcapIndexRowsShareInserts(t *testing.T) {
	const ifaces = 60
	e := setup(t)
	g := sinktest.Mixed(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC), 1, 5000)
	var batches []sinktest.Batch
	for i := range ifaces {
		h := sinktest.Header("team-a", "web.capture", "0b1c2d3e-uid", "node-1", "web-0", fmt.Sprintf("cali%011d", i))
		batches = append(batches, sinktest.EndRun(sinktest.Batches(h, g.Pkts, 1<<20), false)...)
	}
	cfg := e.config()
	cfg.MaxObjectBytes, cfg.StopAfter, cfg.MaxObjectAge = 16<<20, time.Hour, time.Hour
	s := start(t, e, cfg)
	if err := sinktest.Publish(t.Context(), e.NATS.JS, batches); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e, 60*time.Second)
	if rows := len(index(t, e)); rows != ifaces {
		t.Fatalf("pcap_objects rows %d, want %d", rows, ifaces)
	}
	var m dto.Metric
	if err := s.Sink.m.indexRows.Write(&m); err != nil {
		t.Fatal(err)
	}
	inserts, rows := m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
	t.Logf("%v rows in %d inserts", rows, inserts)
	if rows != ifaces || inserts > ifaces/4 {
		t.Errorf("%v rows in %d inserts, want %d rows in at most %d", rows, inserts, ifaces, ifaces/4)
	}
}
