package producer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstream/capstream/internal/testenv"
	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/schemas"
)

func TestClassify(t *testing.T) {
	cases := map[string]struct {
		err  error
		want string
	}{
		"ack timeout":     {jetstream.ErrAsyncPublishTimeout, reasonTimeout},
		"no stream":       {jetstream.ErrNoStreamResponse, reasonNoStream},
		"no responders":   {fmt.Errorf("publish: %w", nats.ErrNoResponders), reasonNoStream},
		"reconnecting":    {nats.ErrReconnectBufExceeded, reasonDisconnected},
		"closed":          {fmt.Errorf("x: %w", nats.ErrConnectionClosed), reasonDisconnected},
		"stalled":         {jetstream.ErrTooManyStalledMsgs, reasonDisconnected},
		"stream full":     {&jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}, reasonRefused},
		"something else":  {fmt.Errorf("boom"), reasonOther},
		"context timeout": {context.DeadlineExceeded, reasonTimeout},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if got := classify(c.err); got != c.want {
				t.Errorf("classify(%v) = %s, want %s", c.err, got, c.want)
			}
		})
	}
}

// TestPublishBudget: with no room in flight, a live capture drops at once
// and counts; the buffer goes back to the pool.
func TestPublishBudget(t *testing.T) {
	srv := testenv.NATS(t)
	cfg := DefaultConfig()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(srv.JS, cfg, m, testenv.Logger(t))
	if !pub.bytes.TryAcquire(int64(cfg.MaxInFlightBytes)) {
		t.Fatal("budget not free")
	}
	ctr := &counters{}
	buf := pub.getBuf()
	*buf = append(*buf, make([]byte, 100)...)
	start := time.Now()
	pub.publish(t.Context(), &nats.Msg{Subject: "x"}, buf, 7, ctr, cfg.PublishWait)
	if d := time.Since(start); d > cfg.PublishWait+50*time.Millisecond {
		t.Errorf("publish blocked %v", d)
	}
	if got := ctr.publishDrops.Load(); got != 7 {
		t.Errorf("publish drops %d, want 7", got)
	}
}

// BenchmarkBatcherAdd measures the per-packet cost of batching 200-byte
// packets and publishing the batches to an embedded JetStream.
func BenchmarkBatcherAdd(b *testing.B) {
	srv := testenv.NATS(b)
	ctx := context.Background()
	if err := schemas.EnsureStreams(ctx, srv.JS, schemas.DefaultPacketsStreamLimits()); err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(srv.Conn, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	m, _ := newMetrics(prometheus.NewRegistry())
	pub := newPublisher(js, cfg, m, testenv.Logger(b))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { pub.run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	subj, _ := schemas.PacketSubject("default", "bench", testNode)
	bat := &batcher{pub: pub, ctr: &counters{}, m: m, subject: subj, maxBytes: cfg.BatchBytes, maxDelay: time.Hour, wait: -1,
		hdr: schemas.BatchHeader{Namespace: "default", Capture: "bench", CaptureUID: "u", Node: testNode, Pod: "p", Interface: "eth0",
			LinkType: schemas.LinkTypeEthernet, SnapLength: schemas.MaxSnapLength, Producer: "bench"}}
	data := make([]byte, 200)
	info := source.Info{Timestamp: time.Now(), Length: 200}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		bat.add(ctx, data, info)
	}
	bat.flush(ctx)
}

// TestPublishRetryNoStream: a batch no stream answers (as while a stream
// leader is elected in a cluster) is published again with its Msg-ID and
// stored once the stream answers; nothing counts as dropped. Without
// retries, its packets would be publish drops (no_stream).
func TestPublishRetryNoStream(t *testing.T) {
	srv := testenv.NATS(t)
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(srv.JS, DefaultConfig(), m, testenv.Logger(t))
	runCtx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { pub.run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()

	subj, _ := schemas.PacketSubject("default", "retry", testNode)
	msg := nats.NewMsg(subj)
	msg.Header.Set(jetstream.MsgIDHeader, "uid:"+testNode+":eth0:p:1")
	buf := pub.getBuf()
	*buf = append(*buf, "batch"...)
	msg.Data = *buf
	ctr := &counters{}
	pub.publish(t.Context(), msg, buf, 3, ctr, -1)
	// The first attempt fails (the client's own retries included) and is
	// published again; the stream appears while the retries go on.
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := testenv.Metric(t, reg, "capstream_producer_publish_retries_total", map[string]string{"reason": reasonNoStream}); n < 1 {
			return fmt.Errorf("%v retries", n)
		}
		return nil
	})
	cons := ensureStreams(t, srv)
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := testenv.Metric(t, reg, "capstream_producer_batches_acked_total", nil); n != 1 {
			return fmt.Errorf("%v batches acked, drops %d", n, ctr.publishDrops.Load())
		}
		return nil
	})
	if got := ctr.publishDrops.Load(); got != 0 {
		t.Errorf("publish drops %d, want 0", got)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 1 {
		t.Errorf("%d batches stored, want 1", info.NumPending)
	}
}
