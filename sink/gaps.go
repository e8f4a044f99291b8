package sink

import (
	"time"

	"github.com/capstream/capstream/schemas"
)

// runKey is one producer run on one interface: the unit of schemas.BatchHeader.Seq.
type runKey struct {
	uid, node, iface, producer string
}

// runState is the newest batch a sink has seen of a run.
type runState struct {
	seq uint64
	// end is the run's packets up to and including that batch, valid with
	// counts.Known.
	end    uint64
	counts struct {
		known                          bool
		droppedBatches, droppedPackets uint64
	}
	// chained: the batch was a first delivery and no delivery of the
	// consumer went elsewhere since (epoch), so a later gap is provable.
	first bool
	epoch uint64
	used  time.Time
}

// Bounds of the gap tracker: runs quiet for runIdle are forgotten, and at
// most maxRuns are kept (a run forgotten early only loses gap detection).
// When full, at least runsFreed are dropped at once, so a storm of new runs
// (forged producer IDs) costs one scan of the map per runsFreed batches,
// not one per batch.
const (
	runIdle   = time.Hour
	maxRuns   = 1 << 16
	runsFreed = maxRuns / 16
	// maxSuspects bounds the gaps waiting to fill (consumer.lostAfter);
	// beyond it a new gap is counted at once. fill scans them, so a storm
	// of forged gaps costs at most this many compares per batch.
	maxSuspects = 4096
)

// lost is a gap counted as lost: the batches and packets missing before
// the batch with header, delivered as stream sequence streamSeq on
// subject.
type lost struct {
	header           schemas.BatchHeader
	subject          string
	streamSeq        uint64
	batches, packets uint64
}

// suspect is a gap not counted yet: a producer publishes a batch again
// (same Nats-Msg-Id) after an ack timeout or while a stream leader is
// elected, and the retry lands in the stream after the batches published
// meanwhile, so the gap may still fill until due.
type suspect struct {
	lost
	run      runKey
	from, to uint64 // the missing Seqs, inclusive
	due      time.Time
}

// gaps finds batches the stream lost: gaps in the Seq of one run that the
// sink can prove were never delivered. It runs on the loop goroutine.
//
// The server delivers a consumer's batches for the first time in stream
// order, and a producer publishes a run's batches in order, so between two
// first deliveries of a run the batches in between were delivered first,
// to this process or, with several replicas sharing the durable, to
// another. The consumer sequence (one per delivery, over all replicas) says
// which: when every delivery between the two came to this process, the
// missing batches were never delivered: the stream removed them (MaxAge,
// MaxBytes, a delete). Otherwise the gap is not counted. Redeliveries and
// duplicates (Seq at most the newest seen) are never gaps.
//
// A producer's retries break "publishes in order": a retried batch lands
// after its successors. So a gap is a suspect first, and counted only if
// its batches do not arrive within wait (consumer.lostAfter, by default
// schemas.PublishRetryWindow; expire); each that does arrive takes itself
// off the count.
type gaps struct {
	runs     map[runKey]*runState
	suspects []suspect // in order of due
	// lastCons is the consumer sequence of the last delivery here; epoch
	// changes whenever a delivery did not follow it.
	lastCons, epoch uint64
	prevSeq         uint64 // set by gap: the first Seq of the gap it found
	// wait is how long a suspect may fill; 0 means
	// schemas.PublishRetryWindow.
	wait time.Duration
}

// see takes a decoded batch, notes a gap just before it as a suspect and
// takes the batch off any suspect it fills. It returns a gap to count at
// once (ok) only when too many suspects wait already. Packets are unknown
// (0) when either batch lacks the counts. Batches the producer dropped
// itself (its publish drops) are not counted.
func (g *gaps) see(d *Delivery, subject string, now time.Time) (_ lost, ok bool) {
	if g.runs == nil {
		g.runs = map[runKey]*runState{}
	}
	if d.ConsumerSeq != g.lastCons+1 {
		g.epoch++
	}
	g.lastCons = d.ConsumerSeq
	h := &d.Header
	k := runKey{uid: h.CaptureUID, node: h.Node, iface: h.Interface, producer: h.Producer}
	if len(g.suspects) > 0 {
		g.fill(k, d)
	}
	lostBatches, lostPackets := g.gap(k, d, now)
	if lostBatches == 0 {
		return lost{}, false
	}
	l := lost{header: *h, subject: subject, streamSeq: d.StreamSeq, batches: lostBatches, packets: lostPackets}
	if len(g.suspects) >= maxSuspects {
		return l, true
	}
	wait := g.wait
	if wait == 0 {
		wait = schemas.PublishRetryWindow
	}
	g.suspects = append(g.suspects, suspect{lost: l, run: k, from: g.prevSeq, to: h.Seq - 1, due: now.Add(wait)})
	return lost{}, false
}

// fill takes a batch that arrived late (a first delivery: a redelivery
// was counted when it came first) off the suspect gap it falls in. Seqs
// are not tracked one by one, so a batch the stream holds twice would
// count twice; the server's de-duplication keeps that from happening
// within its window, and at worst the count is low, as elsewhere.
func (g *gaps) fill(k runKey, d *Delivery) {
	h := &d.Header
	if d.Delivered != 1 {
		return
	}
	for i := range g.suspects {
		sp := &g.suspects[i]
		if sp.run != k || h.Seq < sp.from || h.Seq > sp.to {
			continue
		}
		sp.batches = sub(sp.batches, 1)
		sp.packets = sub(sp.packets, uint64(h.Packets))
		if sp.batches == 0 {
			g.suspects = append(g.suspects[:i], g.suspects[i+1:]...)
		}
		return
	}
}

// expire returns the suspects due by now: their gaps did not fill.
func (g *gaps) expire(now time.Time) []lost {
	n := 0
	for n < len(g.suspects) && !g.suspects[n].due.After(now) {
		n++
	}
	if n == 0 {
		return nil
	}
	out := make([]lost, n)
	for i := range n {
		out[i] = g.suspects[i].lost
		if out[i].batches == 0 {
			out[i].packets = 0
		}
	}
	g.suspects = append(g.suspects[:0], g.suspects[n:]...)
	return out
}

// gap returns the batches and packets missing just before d's batch in
// run k, and moves the run on; prevSeq is then the first missing Seq.
func (g *gaps) gap(k runKey, d *Delivery, now time.Time) (lostBatches, lostPackets uint64) {
	h := &d.Header
	st := g.runs[k]
	if st != nil && h.Seq <= st.seq {
		st.used = now
		return 0, 0 // a redelivery, a duplicate or an older batch
	}
	if st != nil && st.first && d.Delivered == 1 && st.epoch == g.epoch && h.Seq > st.seq+1 {
		g.prevSeq = st.seq + 1
		lostBatches = h.Seq - st.seq - 1
		c := h.Counts
		if c.Known && st.counts.known && c.PacketsBefore >= st.end &&
			c.DroppedBatches >= st.counts.droppedBatches && c.DroppedPackets >= st.counts.droppedPackets {
			// Batches and packets the producer dropped in between are its
			// publish drops, already counted.
			lostBatches = sub(lostBatches, c.DroppedBatches-st.counts.droppedBatches)
			lostPackets = sub(c.PacketsBefore-st.end, c.DroppedPackets-st.counts.droppedPackets)
			if lostBatches == 0 {
				lostPackets = 0
			}
		}
	}
	if h.Last {
		// The run may go on (the interface comes back), but nothing is
		// held for it: its next batch starts a new chain.
		delete(g.runs, k)
		return lostBatches, lostPackets
	}
	if st == nil {
		if len(g.runs) >= maxRuns {
			g.prune(now, true)
		}
		st = &runState{}
		g.runs[k] = st
	}
	st.seq, st.first, st.epoch, st.used = h.Seq, d.Delivered == 1, g.epoch, now
	st.counts.known = h.Counts.Known
	st.counts.droppedBatches, st.counts.droppedPackets = h.Counts.DroppedBatches, h.Counts.DroppedPackets
	st.end = h.Counts.PacketsBefore + uint64(h.Packets)
	return lostBatches, lostPackets
}

// prune forgets runs idle for runIdle, and with full, also every run idle
// for a minute, then any runs until runsFreed places are free.
func (g *gaps) prune(now time.Time, full bool) {
	for k, st := range g.runs {
		if now.Sub(st.used) >= runIdle || full && now.Sub(st.used) >= time.Minute {
			delete(g.runs, k)
		}
	}
	if !full {
		return
	}
	for k := range g.runs {
		if len(g.runs) <= maxRuns-runsFreed {
			break
		}
		delete(g.runs, k)
	}
}

func sub(a, b uint64) uint64 {
	if b >= a {
		return 0
	}
	return a - b
}
