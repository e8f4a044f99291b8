package sink

import "time"

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
)

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
type gaps struct {
	runs map[runKey]*runState
	// lastCons is the consumer sequence of the last delivery here; epoch
	// changes whenever a delivery did not follow it.
	lastCons, epoch uint64
}

// see takes a decoded batch and returns the batches and packets lost just
// before it; packets are unknown (0) when either batch lacks the counts.
// Batches the producer dropped itself (its publish drops) are not counted.
func (g *gaps) see(d *Delivery, now time.Time) (lostBatches, lostPackets uint64) {
	if g.runs == nil {
		g.runs = map[runKey]*runState{}
	}
	if d.ConsumerSeq != g.lastCons+1 {
		g.epoch++
	}
	g.lastCons = d.ConsumerSeq
	h := &d.Header
	k := runKey{uid: h.CaptureUID, node: h.Node, iface: h.Interface, producer: h.Producer}
	st := g.runs[k]
	if st != nil && h.Seq <= st.seq {
		st.used = now
		return 0, 0 // a redelivery, a duplicate or an older batch
	}
	if st != nil && st.first && d.Delivered == 1 && st.epoch == g.epoch && h.Seq > st.seq+1 {
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
