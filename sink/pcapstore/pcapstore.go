// Package pcapstore is `capstream sink pcap`: it appends packet batches from
// CAPSTREAM_PACKETS to one open pcap object per (capture, node, interface),
// uploads the object to S3 when it is complete (size, age, capture stop,
// memory pressure or shutdown), indexes it in ClickHouse's pcap_objects,
// and only then acks the batches it holds.
//
// Lifecycle: New only checks the configuration. Run runs the sink on a
// sink.Runner, which migrates the schema, binds the durable consumer and
// owns every goroutine (the pull pump, the loop, and the sink's uploaders,
// indexer and status reporter, in one group); the first tick aborts stale
// multipart uploads under the prefix. The decisions (which object takes a
// batch, what to seal and when) are the pure core in core.go. On cancel
// the runner drains the pull, the sink completes every open object within
// GracePeriod, and Run returns nil.
//
// Exactly once: an object's metadata lists the producer batch sequences it
// holds. A redelivered batch is checked against the objects completed for
// its interface (read back from S3 once per interface) and acked without
// being written again when it is already in one. See DESIGN.md "Pcap objects".
package pcapstore

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// Sink is the pcap sink. Its state lives on the runner's loop goroutine;
// the uploaders and the reporter hand their results back with Runner.Do.
type Sink struct {
	cfg  Config
	deps sink.Deps
	log  *slog.Logger
	run  *sink.Runner
	m    *metrics

	core *core
	done map[ifaceKey]*completed

	// Sealed objects wait in queue for an idle uploader; a failed upload
	// waits in retryQ until its own retryAt.
	queue    []*object
	retryQ   []*object
	idle     []chan *object
	inflight int

	// Uploaders hand uploaded objects to the indexer, which inserts all
	// the rows waiting in one INSERT: ClickHouse takes milliseconds of
	// CPU per insert, whatever its size.
	indexQ  chan uploaded
	putting atomic.Int32 // uploads in progress, for the indexer's linger

	// Status reports run in their own goroutine, after the acks: they are
	// not part of making a batch durable, so they stay off that path. A
	// report reads its totals from pcap_objects, so while one runs, the
	// objects completed meanwhile wait in reportQ as one entry per
	// capture and node, and a single report then covers them all. Reports
	// wait while uploads are in progress (their index inserts go first),
	// at most reportDelay.
	reportC    chan schemas.BatchHeader // the idle reporter's, nil while it reports
	reportQ    []schemas.BatchHeader    // not objects: their buffers are freed once acked
	reportedAt time.Time                // when reportQ became non-empty
	reporting  bool

	// nextTick is the next check of ages and retries, nextSweep the next
	// sweep of stale uploads.
	nextTick, nextSweep time.Time
}

// New checks cfg and allocates the sink; it does no I/O.
func New(cfg Config, deps sink.Deps) (*Sink, error) {
	m := &metrics{}
	run, err := sink.NewRunner(sink.RunnerConfig{
		Name: "pcap sink", Config: cfg, NeedClickHouse: true, NeedS3: true, Component: "pcap", Source: schemas.SourcePcapSink, Durable: schemas.PcapSinkConsumer(), RunConfig: cfg.RunConfig,
		BatchesHelp: "Packet batches handled, by result (buffered, duplicate, empty: a last batch with nothing to complete, terminated, retried).",
		PendingHelp: "Batches held unacked in open objects.",
		Metrics:     m.register,
	}, deps)
	if err != nil {
		return nil, err
	}
	return &Sink{
		cfg:    cfg,
		deps:   deps,
		log:    run.Logger(),
		run:    run,
		m:      m,
		core:   newCore(cfg.core()),
		done:   map[ifaceKey]*completed{},
		indexQ: make(chan uploaded, maxIndexRows),
	}, nil
}

// Ready reports whether the consumer is bound, NATS connected and the last
// upload and index insert succeeded.
func (s *Sink) Ready() error { return s.run.Ready() }

// Run consumes until ctx ends, then completes the open objects within
// GracePeriod. It may be called once.
func (s *Sink) Run(ctx context.Context) error {
	var workers []func(context.Context) error
	for range s.cfg.Uploaders {
		workers = append(workers, s.uploader)
	}
	workers = append(workers, s.indexer)
	workers = append(workers, s.reporter)
	return s.run.Run(ctx, (*handler)(s), workers...)
}

// handler is the Sink as the runner sees it; its methods run on the
// runner's loop goroutine.
type handler Sink

// tickEvery is how often ages, retries and reports are looked at; quiet
// interfaces (a stopped capture) have their own deadline (core.wake), so
// a stopped capture's last object completes right at StopAfter.
func (s *Sink) tickEvery() time.Duration { return min(time.Second, s.cfg.StopAfter/2) }

// Handle puts a batch in its interface's open object, or acks it at once
// when it is already in a completed object or there is nothing to hold.
func (h *handler) Handle(ctx context.Context, d sink.Delivery) {
	s := (*Sink)(h)
	batches := s.run.M.Batches
	if d.Delivered > 1 {
		if s.core.holds(&d) {
			batches.WithLabelValues("duplicate").Inc()
			return
		}
		dup, err := s.isDuplicate(ctx, keyOf(&d.Header), &d.Header)
		if reason, ok := sink.Permanent(err); ok {
			// The bucket is gone or closed to the sink: the lookup will
			// never succeed, and neither would the upload.
			s.m.errs.WithLabelValues("dedup").Inc()
			s.run.Refused(&d.Header, reason, 1, err)
			s.log.Warn("terminating a redelivered batch: the object store refuses its lookup for good", "reason", reason,
				"namespace", d.Header.Namespace, "capture", d.Header.Capture, "stream_seq", d.StreamSeq, "error", err)
			s.run.Term(d.Reply)
			s.queueReport(d.Header)
			s.dispatch()
			return
		}
		if err != nil {
			s.m.errs.WithLabelValues("dedup").Inc()
			batches.WithLabelValues("retried").Inc()
			s.run.Nak(d.Reply, s.run.Failed(err))
			return
		}
		if dup {
			batches.WithLabelValues("duplicate").Inc()
			s.run.Ack(d.Reply)
			return
		}
	}
	sealed, held := s.core.add(&d, time.Now())
	if !held {
		// An empty last batch with nothing to complete or store.
		batches.WithLabelValues("empty").Inc()
		s.run.Ack(d.Reply)
		return
	}
	batches.WithLabelValues("buffered").Inc()
	s.queue = append(s.queue, sealed...)
	s.dispatch()
	s.gauges()
}

// Tick seals old and quiet objects, requeues failed uploads whose backoff
// is over, forgets old dedup state and sweeps stale uploads.
func (h *handler) Tick(ctx context.Context, now time.Time) {
	s := (*Sink)(h)
	s.queue = append(s.queue, s.core.tick(now)...)
	kept := s.retryQ[:0]
	for _, o := range s.retryQ {
		if now.Before(o.retryAt) {
			kept = append(kept, o)
		} else {
			s.queue = append(s.queue, o)
		}
	}
	clear(s.retryQ[len(kept):])
	s.retryQ = kept
	if !now.Before(s.nextTick) {
		s.nextTick = now.Add(s.tickEvery())
		s.prune()
	}
	if !now.Before(s.nextSweep) {
		// Best effort: with S3 away the sink can still take batches (up
		// to its memory budget), and the next sweep tries again.
		s.nextSweep = now.Add(s.cfg.StaleUploadAge / 3)
		if err := s.sweep(ctx); err != nil {
			s.m.errs.WithLabelValues("sweep").Inc()
			s.log.Warn("sweep failed", "error", err)
		}
	}
	s.dispatch()
	s.gauges()
}

// Wake is the next tick, sweep, retry or quiet interface's deadline.
func (h *handler) Wake() time.Time {
	at := h.nextTick
	if h.nextSweep.Before(at) {
		at = h.nextSweep
	}
	for _, o := range h.retryQ {
		if o.retryAt.Before(at) {
			at = o.retryAt
		}
	}
	if stop := h.core.wake(time.Now()); !stop.IsZero() && stop.Before(at) {
		at = stop
	}
	return at
}

// Accepting: while memory is full, take no new batches: memory stays
// bounded by what the objects already hold. Objects waiting for a retry
// count against it, so an object store that is away for everything fills
// the budget and stops the pulls, while one capture whose writes fail
// leaves the others flowing.
func (h *handler) Accepting(bool) bool { return !h.core.overBudget() }

// Held lists the batches in objects that are still filling or uploading.
func (h *handler) Held(fn func(reply string)) {
	for o := range h.core.live {
		for _, b := range o.batches {
			fn(b.reply)
		}
	}
}

// Drain completes every open object.
func (h *handler) Drain(context.Context) {
	s := (*Sink)(h)
	s.queue = append(s.queue, s.core.sealAll("shutdown", time.Now())...)
	s.dispatch()
}

// Idle reports every object completed and reported.
func (h *handler) Idle() bool {
	return len(h.core.open) == 0 && len(h.queue) == 0 && len(h.retryQ) == 0 && h.inflight == 0 &&
		len(h.reportQ) == 0 && !h.reporting
}

// dispatch hands sealed objects to idle uploaders and the next status
// report to the reporter when it is idle.
func (s *Sink) dispatch() {
	for len(s.queue) > 0 && len(s.idle) > 0 {
		w := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		w <- s.queue[0] // w has room: its uploader waits for this
		s.queue = s.queue[1:]
		s.inflight++
	}
	if s.reportC != nil && len(s.reportQ) > 0 &&
		(s.inflight == 0 && len(s.queue) == 0 || time.Since(s.reportedAt) >= reportDelay) {
		s.reportC <- s.reportQ[0]
		s.reportQ = s.reportQ[1:]
		s.reportC, s.reporting = nil, true
	}
}

func (s *Sink) gauges() {
	s.m.open.Set(float64(len(s.core.open)))
	s.m.buffered.Set(float64(s.core.buffered))
	s.run.M.Pending.Set(float64(len(s.core.bySeq)))
}

// refuse drops an object that the object store or the index refused for
// good: its batches are terminated and counted, its memory released, and
// the capture's report carries the failure. The other objects go on.
func (s *Sink) refuse(o *object, reason string, err error) {
	s.run.Refused(&o.hdr, reason, len(o.batches), err)
	s.log.Warn("dropping an object refused for good; terminating its batches", "reason", reason, "key", o.name,
		"namespace", o.hdr.Namespace, "capture", o.hdr.Capture, "node", o.hdr.Node, "first_stream_seq", o.firstSeq,
		"batches", len(o.batches), "packets", o.packets, "error", err)
	for _, b := range o.batches {
		s.run.Term(b.reply)
	}
	s.core.release(o)
	s.queueReport(o.hdr)
	s.gauges()
}

// Report asks for a report of the capture and node of h: the runner
// recorded a failure or a loss for it.
func (h *handler) Report(b *schemas.BatchHeader) {
	s := (*Sink)(h)
	s.queueReport(*b)
	s.dispatch()
}

// queueReport asks for a status report of the capture and node of h,
// unless one is queued already: every report is complete, so one covers
// all the objects completed before it starts.
func (s *Sink) queueReport(h schemas.BatchHeader) {
	for _, q := range s.reportQ {
		if q.CaptureUID == h.CaptureUID && q.Node == h.Node && q.Namespace == h.Namespace && q.Capture == h.Capture {
			return
		}
	}
	if len(s.reportQ) == 0 {
		s.reportedAt = time.Now()
	}
	s.reportQ = append(s.reportQ, h)
}

// retryWait is how long an object waits after its attempt-th failure:
// 250ms doubling to 10s.
func retryWait(attempt int) time.Duration {
	return min(250*time.Millisecond<<min(attempt, 6), 10*time.Second)
}

// reportDelay bounds how long status reports wait for uploads in progress.
// The tick (at most 1s) wakes the loop to send them. Each report reads
// pcap_objects FINAL twice: at 1000 interfaces, with uploads always in
// progress, reports every second cost the sink and ClickHouse more than
// the objects did (the 1000-interface scale run went from 37 to 61 kpkt/s
// without them); every 5 s they cost a fifth of that, and a capture that
// goes quiet still reports at once.
const reportDelay = 5 * time.Second

// finish acks the batches of an uploaded object, drops an object refused
// for good, or schedules a retry.
func (s *Sink) finish(o *object, err error) {
	s.inflight--
	defer s.dispatch()
	if reason, ok := sink.Permanent(err); ok {
		s.refuse(o, reason, err)
		return
	}
	k := sink.KeyOf(&o.hdr)
	if err != nil {
		s.run.Failed(err) // for Ready; the backoff is the object's own
		wait := retryWait(o.retries)
		o.retries++
		o.retryAt = time.Now().Add(wait)
		s.retryQ = append(s.retryQ, o)
		if s.run.Ledger.Retrying(k, "storing pcap objects fails, retrying: "+err.Error()) {
			s.queueReport(o.hdr) // the capture shows it while it lasts
		}
		s.log.Warn("completing object failed; retrying", "key", o.name, "error", err, "wait", wait, "attempt", o.retries)
		return
	}
	s.run.Ledger.Retrying(k, "") // the report queued below says so
	c := s.done[o.key]
	if c == nil {
		c = &completed{seen: map[string]bool{}}
		s.done[o.key] = c
	}
	c.add(doneObject{key: o.name, at: time.Now(), producer: o.hdr.Producer, seqs: o.seqs})
	c.used = time.Now()
	for _, b := range o.batches {
		s.run.Ack(b.reply)
	}
	s.core.release(o)
	s.queueReport(o.hdr)
	s.m.objects.WithLabelValues(o.reason).Inc()
	s.m.packets.Add(float64(o.packets))
	s.m.objectBytes.Observe(float64(o.buf.Len()))
	s.m.putTime.Observe(time.Since(o.sealed).Seconds())
	s.run.Succeeded()
	s.gauges()
}
