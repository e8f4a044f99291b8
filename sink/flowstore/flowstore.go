// Package flowstore is `capstream sink flows`: it aggregates packet batches
// from CAPSTREAM_PACKETS into bidirectional flow records and inserts them
// into ClickHouse's flows table.
//
// Lifecycle: New only checks the configuration. Run runs the sink on a
// sink.Runner, which migrates the schema, binds the durable consumer and
// owns every goroutine (the pull pump and the loop, in one group); it
// returns nil on a clean cancel after releasing and inserting every open
// record within GracePeriod.
//
// Delivery: a batch is acked only once every one of its packets is in a
// record published into flows. A flush is a redo log (migration 004): the
// records are staged in flow_staging under a random flush ID, one block of
// flow_commits rows commits the flush together with what it covers of
// each held batch, then INSERT ... SELECT publishes it into flows and the
// covered batches are acked. A sink may die at any point: before the
// commit nothing is visible and the redelivered batches are aggregated
// again; after it, a redelivered batch finds its commit rows, publishes
// their flushes again (identical rows collapse) and is aggregated without
// the packets they cover. No packet is therefore counted in two records;
// see DESIGN.md "Flow records" for the argument and its limits.
package flowstore

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// Sink is the flow sink. Its state lives on the runner's loop goroutine.
type Sink struct {
	cfg  Config
	deps sink.Deps
	run  *sink.Runner
	m    *metrics

	table   *Table
	pending map[StreamKey][]*pendingBatch
	bySeq   map[uint64]*pendingBatch
	unsent  []Record
	npend   int

	npendAtomic atomic.Int64
	retryAt     time.Time
	nextFlush   time.Time
	// drained is set once the pull ended, flushed once the final flush
	// after it succeeded.
	drained, flushed bool

	// flushID names the flush being staged (0: none yet); staged records
	// of s.unsent are in flow_staging under it.
	flushID uint64
	staged  int
	// committed is a flush whose commit rows are written but which is not
	// published yet; nothing else is staged until it is.
	committed *commit
	// republished holds flushes published again by recovery, so a burst
	// of redeliveries publishes each once.
	republished map[uint64]bool
	// hook, when set (tests only), is called at the points of a flush
	// where a crash matters: "staged" and "committed".
	hook func(point string)
	// handleHook, when set (tests only), is called with every batch
	// before it is handled, inside the runner's panic boundary.
	handleHook func(d *sink.Delivery)
}

// commit is a committed flush: its records are the first n of s.unsent,
// and publishing them makes floors durable for the batches it covers.
type commit struct {
	id      uint64
	n       int
	batches []coveredBatch
}

// coveredBatch is a batch held when a flush was committed and the floor of
// its interface then.
type coveredBatch struct {
	b     *pendingBatch
	floor int64
}

// pendingBatch is a batch held unacked until its packets are inserted.
type pendingBatch struct {
	seq          uint64
	reply        string
	minTs, maxTs int64
	ledgered     int64 // floor made durable: committed and published
}

// New checks cfg and allocates the sink; it does no I/O.
func New(cfg Config, deps sink.Deps) (*Sink, error) {
	s := &Sink{
		cfg:     cfg,
		deps:    deps,
		m:       &metrics{},
		table:   NewTable(TableConfig{Window: cfg.ActiveTimeout, Idle: cfg.IdleTimeout, MaxFlows: cfg.MaxFlows}),
		pending: map[StreamKey][]*pendingBatch{},
		bySeq:   map[uint64]*pendingBatch{},

		republished: map[uint64]bool{},
	}
	var err error
	s.run, err = sink.NewRunner(sink.RunnerConfig{
		Name: "flow sink", Config: cfg, NeedClickHouse: true, Component: "flows", Source: schemas.SourceFlowSink, Durable: schemas.FlowSinkConsumer(), RunConfig: cfg.RunConfig,
		BatchesHelp: "Packet batches handled, by result (aggregated, duplicate, empty: a last batch with no packets, terminated, retried).",
		PendingHelp: "Batches held unacked until their records are inserted.",
		Metrics:     s.m.register,
	}, deps)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Ready reports whether the consumer is bound, NATS connected and the last
// ClickHouse write succeeded.
func (s *Sink) Ready() error { return s.run.Ready() }

// pendingBatches is the number of batches held unacked, for tests.
func (s *Sink) pendingBatches() int { return int(s.npendAtomic.Load()) }

// Run consumes until ctx ends, then flushes within GracePeriod. It may be
// called once.
func (s *Sink) Run(ctx context.Context) error { return s.run.Run(ctx, (*handler)(s), s.reporter) }

// handler is the Sink as the runner sees it; its methods run on the
// runner's loop goroutine.
type handler Sink

// Accepting stops taking batches while records wait for ClickHouse, so
// memory stays bounded by what is already held; a draining pull is always
// taken.
func (h *handler) Accepting(draining bool) bool { return len(h.unsent) == 0 || draining }

// Wake is the next periodic flush, or the retry after a failed one.
func (h *handler) Wake() time.Time {
	if h.drained {
		return h.retryAt
	}
	return h.nextFlush
}

// Tick flushes the released records; after Drain it retries the final
// flush.
func (h *handler) Tick(ctx context.Context, now time.Time) {
	s := (*Sink)(h)
	if h.drained {
		if s.flush(ctx, true, ReasonShutdown) {
			h.flushed = true
			s.run.Logger().Info("flushed at shutdown")
		}
		return
	}
	h.nextFlush = now.Add(h.cfg.FlushInterval)
	s.flush(ctx, false, "")
}

// Drain releases and inserts every record under ctx, the grace context;
// a failure is retried by Tick until Idle or the grace period ends.
func (h *handler) Drain(ctx context.Context) {
	h.drained = true
	h.Tick(ctx, time.Now())
}

// Idle reports the final flush done.
func (h *handler) Idle() bool { return h.flushed }

// Held lists the batches that wait for their window to end.
func (h *handler) Held(fn func(reply string)) {
	for _, bs := range h.pending {
		for _, b := range bs {
			fn(b.reply)
		}
	}
}

// Handle aggregates one batch.
func (h *handler) Handle(ctx context.Context, d sink.Delivery) {
	s := (*Sink)(h)
	batches := s.run.M.Batches
	if s.handleHook != nil {
		s.handleHook(&d)
	}
	k := StreamKey{CaptureUID: d.Header.CaptureUID, Node: d.Header.Node, Interface: d.Header.Interface}
	var skip int64
	if d.Delivered > 1 {
		if b := s.bySeq[d.StreamSeq]; b != nil {
			// Still held here (an InProgress was lost): keep the newer
			// reply subject, the packets are already counted.
			b.reply = d.Reply
			batches.WithLabelValues("duplicate").Inc()
			return
		}
		var err error
		skip, err = s.recover(ctx, k, d.StreamSeq)
		if reason, ok := sink.Permanent(err); ok {
			// Its ledger cannot be read or its flushes published again,
			// ever: aggregating it again could count packets twice.
			s.m.insertErrs.WithLabelValues("flow_commits").Inc()
			s.run.Refused(&d.Header, reason, 1, err)
			s.run.Logger().Warn("terminating a redelivered batch: clickhouse refuses its recovery for good", "reason", reason,
				"namespace", d.Header.Namespace, "capture", d.Header.Capture, "stream_seq", d.StreamSeq, "error", err)
			s.run.Term(d.Reply)
			return
		}
		if err != nil {
			s.m.insertErrs.WithLabelValues("flow_commits").Inc()
			batches.WithLabelValues("retried").Inc()
			s.run.Nak(d.Reply, s.run.Failed(err))
			return
		}
	}
	if d.Header.Packets == 0 {
		// A last batch with nothing in it: release the interface's records
		// now rather than once it has been quiet for StopAfter. The next
		// periodic flush inserts them (a capture over thousands of
		// interfaces stops with one flush, not one per interface).
		batches.WithLabelValues("empty").Inc()
		s.run.Ack(d.Reply)
		s.table.Stop(k)
		return
	}
	if s.table.Full() {
		s.flush(ctx, true, ReasonEvict)
	}
	before := s.table.Stats()
	minTs, maxTs := s.table.Add(&d.Header, d.Body, d.StreamSeq, skip, time.Now())
	after := s.table.Stats()
	s.m.packets.WithLabelValues("flow").Add(float64(after.Packets - before.Packets - (after.Malformed - before.Malformed) - (after.NotIP - before.NotIP)))
	s.m.packets.WithLabelValues("malformed").Add(float64(after.Malformed - before.Malformed))
	s.m.packets.WithLabelValues("not_ip").Add(float64(after.NotIP - before.NotIP))
	s.m.packets.WithLabelValues("replayed").Add(float64(after.Skipped - before.Skipped))
	if skip > maxTs {
		batches.WithLabelValues("duplicate").Inc()
		s.run.Ack(d.Reply)
		return
	}
	batches.WithLabelValues("aggregated").Inc()
	b := &pendingBatch{seq: d.StreamSeq, reply: d.Reply, minTs: minTs, maxTs: maxTs, ledgered: skip}
	s.pending[k] = append(s.pending[k], b)
	s.bySeq[b.seq] = b
	s.npend++
	s.setPending()
	s.m.openFlows.Set(float64(s.table.Flows()))
	if d.Header.Last {
		s.table.Stop(k) // inserted by the next periodic flush
	}
}

func (s *Sink) setPending() {
	s.run.M.Pending.Set(float64(s.npend))
	s.npendAtomic.Store(int64(s.npend))
}

// recover returns the time before which a redelivered batch's packets are
// in published records. Every flush its commit rows name is published
// again first: the sink that committed it may have died before publishing.
func (s *Sink) recover(ctx context.Context, k StreamKey, seq uint64) (int64, error) {
	skip, err := legacyFloor(ctx, s.deps.ClickHouse, k, seq)
	if err != nil {
		return 0, err
	}
	rows, err := commitRows(ctx, s.deps.ClickHouse, k, seq)
	if err != nil {
		return 0, err
	}
	if len(s.republished) > 1<<16 {
		clear(s.republished) // only a bound: publishing again is harmless
	}
	for _, r := range rows {
		if r.FlushID != 0 && !s.republished[r.FlushID] {
			if err := publish(ctx, s.deps.ClickHouse, r.FlushID); err != nil {
				return 0, err
			}
			s.republished[r.FlushID] = true
		}
		skip = max(skip, r.Floor)
	}
	return skip, nil
}

// flush stages released records, commits them with the floors of the held
// batches, publishes them into flows and acks the batches that are fully
// covered. force releases every open record. It reports whether nothing
// is left to insert. A failed step leaves its state for the next call:
// a staged prefix is not staged again, a committed flush is published
// before anything else is staged.
func (s *Sink) flush(ctx context.Context, force bool, reason string) bool {
	now := time.Now()
	if !force && now.Before(s.retryAt) {
		return false
	}
	recs := s.table.Flush(force, reason, now.Add(-s.cfg.StopAfter))
	if s.unsent == nil {
		s.unsent = recs // no copy: an eviction releases every open record at once
	} else {
		s.unsent = append(s.unsent, recs...)
	}
	s.m.openFlows.Set(float64(s.table.Flows()))
	start := time.Now()
	if s.committed != nil && !s.publishCommitted(ctx) {
		return false
	}
	if !s.stageAndCommit(ctx) || !s.publishCommitted(ctx) {
		return false
	}
	if len(recs) > 0 {
		s.m.flushTime.Observe(time.Since(start).Seconds())
	}
	s.retryAt = time.Time{}
	s.run.Succeeded()
	return true
}

// stageAndCommit stages s.unsent and writes the commit rows: for each held
// batch whose covered time moved, the floor of its interface. Every
// record holding packets below a floor has been released by now, so it
// is in s.unsent or already published.
func (s *Sink) stageAndCommit(ctx context.Context) bool {
	if len(s.unsent) > 0 {
		if s.flushID == 0 {
			s.flushID, s.staged = rand.Uint64()|1, 0
		}
		for s.staged < len(s.unsent) {
			n := min(len(s.unsent)-s.staged, s.cfg.MaxInsertRows)
			if err := stageRecords(ctx, s.deps.ClickHouse, s.flushID, s.unsent[s.staged:s.staged+n]); err != nil {
				s.fail("flow_staging", err)
				return false
			}
			s.staged += n
		}
		s.at("staged")
	}
	c := &commit{id: s.flushID, n: len(s.unsent)}
	var rows []ledgerRow
	for k, bs := range s.pending {
		floor := s.table.Floor(k)
		for _, b := range bs {
			c.batches = append(c.batches, coveredBatch{b, floor})
			if floor > b.ledgered && floor > b.minTs {
				rows = append(rows, ledgerRow{Stream: k, Seq: b.seq, Floor: floor, FlushID: c.id})
			}
		}
	}
	// One block: the commit is all or nothing. A failed insert may still
	// have landed, so the flush is closed either way and what follows is
	// staged under a new ID: republishing a committed flush must never
	// bring records its commit rows do not account for.
	if len(rows) > 0 {
		if err := insertCommitRows(ctx, s.deps.ClickHouse, rows); err != nil {
			s.flushID, s.staged = 0, 0
			s.fail("flow_commits", err)
			return false
		}
	}
	if c.id != 0 {
		s.at("committed")
	}
	s.committed = c
	s.flushID, s.staged = 0, 0
	return true
}

// publishCommitted publishes the committed flush, if any, then acks the
// batches it covers entirely. Only the batches held at commit time are
// considered: a batch taken in since may have packets below the floor that
// are in records not committed yet.
func (s *Sink) publishCommitted(ctx context.Context) bool {
	c := s.committed
	if c == nil {
		return true
	}
	if c.id != 0 {
		if err := publish(ctx, s.deps.ClickHouse, c.id); err != nil {
			s.fail("flows", err)
			return false
		}
		s.m.records.Add(float64(c.n))
		s.m.recordsSize.Observe(float64(c.n))
	}
	s.unsent = s.unsent[c.n:]
	if len(s.unsent) == 0 {
		s.unsent = nil
	}
	s.committed = nil
	acked := map[*pendingBatch]bool{}
	for _, cb := range c.batches {
		b := cb.b
		b.ledgered = max(b.ledgered, cb.floor)
		if cb.floor > b.maxTs {
			s.run.Ack(b.reply)
			delete(s.bySeq, b.seq)
			s.npend--
			acked[b] = true
		}
	}
	if len(acked) > 0 {
		for k, bs := range s.pending {
			kept := bs[:0]
			for _, b := range bs {
				if !acked[b] {
					kept = append(kept, b)
				}
			}
			if len(kept) == 0 {
				delete(s.pending, k)
				s.table.Forget(k)
			} else {
				s.pending[k] = kept
			}
		}
	}
	s.setPending()
	return true
}

func (s *Sink) at(point string) {
	if s.hook != nil {
		s.hook(point)
	}
}

func (s *Sink) fail(table string, err error) {
	if reason, ok := sink.Permanent(err); ok {
		s.refuse(table, reason, err)
		return
	}
	s.m.insertErrs.WithLabelValues(table).Inc()
	wait := s.run.Failed(err)
	s.retryAt = time.Now().Add(wait)
	s.run.Logger().Warn("clickhouse insert failed; retrying", "table", table, "error", err, "wait", wait)
}
