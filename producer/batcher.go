package producer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/schemas"
	"github.com/nats-io/nats.go"
)

// counters are a capture's totals on this node, shared by its interface
// loops (which add) and the status reporter (which reads).
type counters struct {
	packets      atomic.Uint64
	bytes        atomic.Uint64
	kernelDrops  atomic.Uint64
	publishDrops atomic.Uint64

	mu      sync.Mutex
	lastErr string
}

func (c *counters) setError(s string) {
	if len(s) > schemas.MaxErrorLength {
		s = s[:schemas.MaxErrorLength]
	}
	c.mu.Lock()
	c.lastErr = s
	c.mu.Unlock()
}

func (c *counters) lastError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// batcher accumulates the records of one (capture, interface) and hands
// full or old batches to the publisher. It is owned by that interface's
// capture loop.
type batcher struct {
	pub      *publisher
	ctr      *counters
	m        *metrics
	subject  string
	hdr      schemas.BatchHeader
	maxBytes int
	maxDelay time.Duration
	// wait is how long a flush may wait for in-flight room: bounded for
	// live sources, unbounded (-1) for unpaced replays.
	wait time.Duration

	buf     *[]byte
	packets uint32
	first   time.Time // wall clock of the batch's first record
	// sent is set once a batch is published and cleared by a last batch:
	// whether the sinks may hold something that a last batch completes.
	sent bool
}

// add appends one record, publishing the open batch first if the record
// would not fit.
func (b *batcher) add(ctx context.Context, data []byte, info source.Info) {
	if b.buf != nil && b.packets > 0 && len(*b.buf)+schemas.RecordHeaderLen+len(data) > b.maxBytes {
		b.flush(ctx)
	}
	if b.buf == nil {
		b.buf = b.pub.getBuf()
	}
	if b.packets == 0 {
		b.first = time.Now()
	}
	*b.buf = schemas.AppendRecord(*b.buf, info.Timestamp, data, info.Length)
	b.packets++
	b.ctr.packets.Add(1)
	b.ctr.bytes.Add(uint64(len(data)))
	b.m.packets.Inc()
	b.m.bytes.Add(float64(len(data)))
}

// due reports whether the open batch has waited its maximum delay.
func (b *batcher) due(now time.Time) bool {
	return b.packets > 0 && now.Sub(b.first) >= b.maxDelay
}

// flush publishes the open batch, if any.
func (b *batcher) flush(ctx context.Context) {
	if b.packets > 0 {
		b.publish(ctx, false)
	}
}

// finish publishes the open batch marked last, so the sinks complete what
// they hold for the interface at once instead of waiting for it to go
// quiet. With nothing open, the last batch is empty; with nothing sent
// since the previous last batch, there is nothing to mark.
func (b *batcher) finish(ctx context.Context) {
	if b.packets > 0 || b.sent {
		b.publish(ctx, true)
	}
}

func (b *batcher) publish(ctx context.Context, last bool) {
	if b.buf == nil {
		b.buf = b.pub.getBuf()
	}
	b.hdr.Seq++
	b.hdr.Packets = b.packets
	b.hdr.Last = last
	msg := &nats.Msg{Subject: b.subject, Header: make(nats.Header, 14), Data: *b.buf}
	b.hdr.Encode(msg.Header)
	b.pub.publish(ctx, msg, b.buf, uint64(b.packets), b.ctr, b.wait)
	b.buf, b.packets, b.sent = nil, 0, !last
}
