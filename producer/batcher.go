package producer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/schemas"
)

// counters are a capture's totals on this node, shared by its interface
// loops (which add) and the status reporter (which reads).
//
// An interface's batches are published with a counters of their own
// (runOf), whose publish drops and errors also go to the capture's: that is
// how a batcher learns which of its own batches the publisher dropped,
// without the publisher knowing of interfaces.
type counters struct {
	packets      atomic.Uint64
	bytes        atomic.Uint64
	kernelDrops  atomic.Uint64
	publishDrops dropCounter

	mu      sync.Mutex
	lastErr string
	// parent is the capture's counters, for an interface's.
	parent *counters
	// runs are the interfaces' counters, by interface like the batch
	// sequences they go with, kept for the capture's life.
	runs map[string]*runCounters
}

// dropCounter counts dropped packets (Load, Add) and the batches they came
// in, in itself and its parent.
type dropCounter struct {
	packets, batches atomic.Uint64
	parent           *dropCounter
}

// Add counts one dropped batch of n packets.
func (d *dropCounter) Add(n uint64) uint64 {
	if d.parent != nil {
		d.parent.Add(n)
	}
	d.batches.Add(1)
	return d.packets.Add(n)
}

// Load returns the dropped packets.
func (d *dropCounter) Load() uint64 { return d.packets.Load() }

// runCounters are what the batch headers of one interface count
// (schemas.RunCounts): the packets of the batches published so far, and
// the drops of those, through ctr.
type runCounters struct {
	ctr           *counters
	packetsBefore uint64 // only the interface's loop touches it
}

// runOf returns the counters of interface iface. The batch sequence of an
// interface goes on across restarts of its loop within the capture, and so
// do these. (Should the sequence outlive them, a capture restarted with the
// same UID, the counts start over: a sink then sees them go back and counts
// the next gap's batches only.)
func (c *counters) runOf(iface string) *runCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := iface
	r := c.runs[k]
	if r == nil {
		if c.runs == nil {
			c.runs = map[string]*runCounters{}
		}
		r = &runCounters{ctr: &counters{parent: c}}
		r.ctr.publishDrops.parent = &c.publishDrops
		c.runs[k] = r
	}
	return r
}

func (c *counters) setError(s string) {
	if c.parent != nil {
		c.parent.setError(s)
		return
	}
	s = schemas.ClipText(s, schemas.MaxErrorLength)
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
	// run counts the interface's batches for their headers, from the
	// first publish.
	run *runCounters
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
	if b.run == nil {
		b.run = b.ctr.runOf(b.hdr.Interface)
	}
	b.hdr.Seq++
	b.hdr.Packets = b.packets
	b.hdr.Last = last
	// The drops known now: a batch whose publish fails later (an ack that
	// times out) is not in the counts of the batches sent meanwhile.
	rc := b.run.ctr
	b.hdr.Counts = schemas.RunCounts{
		Known: true, PacketsBefore: b.run.packetsBefore,
		DroppedBatches: rc.publishDrops.batches.Load(), DroppedPackets: rc.publishDrops.Load(),
	}
	b.run.packetsBefore += uint64(b.packets)
	msg := &nats.Msg{Subject: b.subject, Header: make(nats.Header, 17), Data: *b.buf}
	b.hdr.Encode(msg.Header)
	b.pub.publish(ctx, msg, b.buf, uint64(b.packets), rc, b.wait)
	b.buf, b.packets, b.sent = nil, 0, !last
}
