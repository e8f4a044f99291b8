package producer

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/schemas"
)

// TestBatcherRunCounts: each batch header counts the run's packets before
// it and the batches (and packets) of the interface the publisher dropped,
// which also count on the capture; a new loop on the same interface goes
// on counting.
func TestBatcherRunCounts(t *testing.T) {
	srv := testenv.NATS(t)
	if _, err := srv.JS.CreateStream(t.Context(), jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(srv.JS, cfg, m, testenv.Logger(t))
	go pub.run(t.Context())
	ctr := &counters{}
	newBatcher := func(seq uint64) *batcher {
		return &batcher{pub: pub, ctr: ctr, m: m, subject: "t.x", maxBytes: cfg.BatchBytes, maxDelay: time.Hour, wait: 0,
			hdr: schemas.BatchHeader{Namespace: "ns", Capture: "c", CaptureUID: "uid", Node: "n", Pod: "p", Interface: "eth0",
				LinkType: schemas.LinkTypeEthernet, SnapLength: schemas.MaxSnapLength, Producer: "p1", Seq: seq}}
	}
	send := func(b *batcher, packets int) {
		for range packets {
			b.add(t.Context(), make([]byte, 60), source.Info{Timestamp: time.Now(), Length: 60})
		}
		b.flush(t.Context())
	}
	b := newBatcher(0)
	send(b, 3) // Seq 1
	// Seq 2 finds no room in flight and is dropped at once.
	testenv.Eventually(t, 5*time.Second, func() error {
		if !pub.batches.TryAcquire(int64(cfg.MaxInFlightBatches)) {
			return errors.New("seq 1 still in flight")
		}
		return nil
	})
	send(b, 5)
	pub.batches.Release(int64(cfg.MaxInFlightBatches))
	send(b, 2) // Seq 3
	b = newBatcher(b.hdr.Seq)
	send(b, 4) // Seq 4, a new loop on the interface
	var got []schemas.RunCounts
	cons, err := srv.JS.OrderedConsumer(t.Context(), "T", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		msg, err := cons.Next()
		if err != nil {
			t.Fatal(err)
		}
		h, err := schemas.DecodeBatchHeader(msg.Headers())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Counts)
	}
	want := []schemas.RunCounts{
		{Known: true},
		{Known: true, PacketsBefore: 8, DroppedBatches: 1, DroppedPackets: 5},
		{Known: true, PacketsBefore: 10, DroppedBatches: 1, DroppedPackets: 5},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("run counts (-want +got):\n%s", diff)
	}
	if got := ctr.publishDrops.Load(); got != 5 {
		t.Errorf("capture publish drops %d, want 5", got)
	}
	if ctr.lastError() == "" {
		t.Error("the interface's drop left no error on the capture")
	}
}

// TestSetErrorKeepsReportValid: an error longer than a report allows is cut
// on a rune boundary, so the producer's next report still encodes (a byte
// cut split a multi-byte rune and made every later report invalid).
func TestSetErrorKeepsReportValid(t *testing.T) {
	var c counters
	c.setError("open: " + strings.Repeat("€", 2000))
	got := c.lastError()
	if len(got) > schemas.MaxErrorLength || !utf8.ValidString(got) {
		t.Fatalf("last error: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
	st := schemas.Status{Source: schemas.SourceProducer, Namespace: "ns", Name: "cap", UID: "u", Node: testNode,
		State: schemas.StateError, LastError: got, Time: time.Now()}
	if _, err := schemas.EncodeStatus(&st); err != nil {
		t.Errorf("report with the last error: %v", err)
	}
}
