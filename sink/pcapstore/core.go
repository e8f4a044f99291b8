package pcapstore

import (
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// coreConfig is the part of Config the core decides with.
type coreConfig struct {
	prefix           string
	maxObjectBytes   int64
	maxBufferedBytes int64
	maxObjectAge     time.Duration
	stopAfter        time.Duration
}

func (c Config) core() coreConfig {
	return coreConfig{
		prefix: c.Prefix, maxObjectBytes: c.MaxObjectBytes, maxBufferedBytes: c.MaxBufferedBytes,
		maxObjectAge: c.MaxObjectAge, stopAfter: c.StopAfter,
	}
}

// core is the pcap sink's decisions, pure: no I/O, no goroutines, no clock
// but the times it is given. It holds the open object of each interface,
// the memory they and the sealed ones hold (the budget), and which object
// holds each stream sequence. It says which objects to seal on each batch
// and tick; the sink uploads what was sealed and calls release once an
// object's batches are acked.
type core struct {
	cfg      coreConfig
	open     map[ifaceKey]*object
	bySeq    map[uint64]*object   // stream sequence -> object holding it, open or sealed
	live     map[*object]struct{} // open and sealed objects
	buffered int64                // memory held by open and sealed objects (buffer.Cap)
	// stopAt is when the open object that went quiet first reaches
	// StopAfter, zero while it is not computed.
	stopAt time.Time
}

func newCore(cfg coreConfig) *core {
	return &core{cfg: cfg, open: map[ifaceKey]*object{}, bySeq: map[uint64]*object{}, live: map[*object]struct{}{}}
}

func keyOf(h *schemas.BatchHeader) ifaceKey {
	return ifaceKey{uid: h.CaptureUID, node: h.Node, iface: h.Interface}
}

// holds reports whether a redelivered batch is still in an object here,
// and then keeps its newest reply subject.
func (c *core) holds(d *sink.Delivery) bool {
	o := c.bySeq[d.StreamSeq]
	if o == nil {
		return false
	}
	for i := range o.batches {
		if o.batches[i].streamSeq == d.StreamSeq {
			o.batches[i].reply = d.Reply
		}
	}
	return true
}

// overBudget reports that objects hold more memory than the budget: the
// sink then takes no batch until uploads free some.
func (c *core) overBudget() bool { return c.buffered > c.cfg.maxBufferedBytes }

// add appends a batch to its interface's open object, opening one if need
// be, and returns the objects it sealed, in order. A last batch with no
// records is held by the open object of the same producer, which it
// completes; with none, there is nothing to hold and add reports false:
// the batch is acked at once.
func (c *core) add(d *sink.Delivery, now time.Time) (sealed []*object, ok bool) {
	h := &d.Header
	k := keyOf(h)
	if h.Packets == 0 {
		o := c.open[k]
		if o == nil || o.hdr.Producer != h.Producer {
			return nil, false
		}
		o.seqs = o.seqs.add(h.Seq)
		o.batches = append(o.batches, held{streamSeq: d.StreamSeq, reply: d.Reply})
		c.bySeq[d.StreamSeq] = o
		return c.seal(nil, o, "stop", now), true
	}
	if o := c.open[k]; o != nil {
		switch {
		case o.hdr.Producer != h.Producer || o.hdr.LinkType != h.LinkType || o.hdr.SnapLength != h.SnapLength || o.hdr.Pod != h.Pod:
			sealed = c.seal(sealed, o, "rotate", now) // a new producer or format starts a new object
		case o.buf.Len()+int64(len(d.Body)) > c.cfg.maxObjectBytes:
			sealed = c.seal(sealed, o, "size", now)
		case len(o.seqs) >= maxRanges && !o.seqs.has(h.Seq-1) && !o.seqs.has(h.Seq+1):
			sealed = c.seal(sealed, o, "rotate", now)
		}
	}
	first, last := bodyTimes(d.Body)
	o := c.open[k]
	if o == nil {
		o = &object{
			key: k, hdr: *h, firstSeq: d.StreamSeq, firstTs: first, opened: now,
			name: objectName(c.cfg.prefix, h, first, d.StreamSeq),
			buf:  newBuffer(),
		}
		_, _ = o.buf.Write(schemas.AppendPcapHeader(nil, h.LinkType, h.SnapLength))
		c.buffered += o.buf.Cap()
		c.open[k] = o
		c.live[o] = struct{}{}
	}
	// The budget counts memory held, chunk room included, so thousands of
	// nearly empty objects count for what they cost.
	before := o.buf.Cap()
	o.buf.Append(d.Body)
	c.buffered += o.buf.Cap() - before
	o.packets += uint64(h.Packets)
	o.lastSeq = max(o.lastSeq, d.StreamSeq)
	o.firstTs, o.lastTs = min(o.firstTs, first), max(o.lastTs, last)
	o.seqs = o.seqs.add(h.Seq)
	o.batches = append(o.batches, held{streamSeq: d.StreamSeq, reply: d.Reply})
	o.touched = now
	c.bySeq[d.StreamSeq] = o
	switch {
	case h.Last:
		sealed = c.seal(sealed, o, "stop", now)
	case o.buf.Len() >= c.cfg.maxObjectBytes:
		sealed = c.seal(sealed, o, "size", now)
	}
	// Over the memory budget, complete the largest open object early; if
	// everything is already uploading, the sink stops pulling instead.
	for c.overBudget() && len(c.open) > 0 {
		var big *object
		for _, x := range c.open {
			if big == nil || x.buf.Len() > big.buf.Len() {
				big = x
			}
		}
		sealed = c.seal(sealed, big, "memory", now)
	}
	return sealed, true
}

// tick seals the objects that are too old or whose interface went quiet
// (the capture stopped).
func (c *core) tick(now time.Time) (sealed []*object) {
	if !c.stopAt.IsZero() && !now.Before(c.stopAt) {
		c.stopAt = time.Time{}
	}
	for _, o := range c.open {
		switch {
		case now.Sub(o.opened) >= c.cfg.maxObjectAge:
			sealed = c.seal(sealed, o, "age", now)
		case now.Sub(o.touched) >= c.cfg.stopAfter:
			sealed = c.seal(sealed, o, "stop", now)
		}
	}
	return sealed
}

// sealAll seals every open object, at shutdown.
func (c *core) sealAll(reason string, now time.Time) (sealed []*object) {
	for _, o := range c.open {
		sealed = c.seal(sealed, o, reason, now)
	}
	return sealed
}

// wake is when tick should next run for a quiet interface: StopAfter
// after the open object that went quiet first, but at most 32 times per
// StopAfter, so thousands of quiet interfaces with scattered deadlines cost
// few passes over the open objects. Zero when nothing is open.
func (c *core) wake(now time.Time) time.Time {
	if !c.stopAt.IsZero() || len(c.open) == 0 {
		return c.stopAt
	}
	var first time.Time
	for _, o := range c.open {
		if first.IsZero() || o.touched.Before(first) {
			first = o.touched
		}
	}
	at := first.Add(c.cfg.stopAfter)
	if soonest := now.Add(c.cfg.stopAfter / 32); at.Before(soonest) {
		at = soonest
	}
	c.stopAt = at
	return at
}

// release forgets an object whose batches are acked.
func (c *core) release(o *object) {
	for _, b := range o.batches {
		delete(c.bySeq, b.streamSeq)
	}
	delete(c.live, o)
	c.buffered -= o.buf.Cap()
}

// seal closes an object to new batches and appends it to sealed.
func (c *core) seal(sealed []*object, o *object, reason string, now time.Time) []*object {
	delete(c.open, o.key)
	o.reason, o.sealed = reason, now
	return append(sealed, o)
}

// bodyTimes returns the first and last packet times of a valid body.
func bodyTimes(body []byte) (first, last int64) {
	r := schemas.NewRecordReader(body, 0)
	first = -1
	for {
		rec, err := r.Next()
		if err != nil {
			return max(first, 0), last
		}
		ts := int64(rec.Sec)*1e9 + int64(rec.Nsec)
		if first < 0 || ts < first {
			first = ts
		}
		last = max(last, ts)
	}
}
