// Package pcapstore is `capstream sink pcap`: it appends packet batches from
// CAPSTREAM_PACKETS to one open pcap object per (capture, node, interface),
// uploads the object to S3 when it is complete (size, age, capture stop,
// memory pressure or shutdown), indexes it in ClickHouse's pcap_objects,
// and only then acks the batches it holds.
//
// Lifecycle: New only checks the configuration. Run migrates the schema,
// aborts stale multipart uploads under the prefix, binds the durable
// consumer, and owns every goroutine (the pull pump, the processing loop,
// the uploaders, the indexers and the status reporter, in one group). On
// cancel it drains the pull, completes every open object within
// GracePeriod and returns nil.
//
// Exactly once: an object's metadata lists the producer batch sequences it
// holds. A redelivered batch is checked against the objects completed for
// its interface (read back from S3 once per interface) and acked without
// being written again when it is already in one. See sink/DESIGN-sink.md.
package pcapstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/textproto"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v4"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/capstream/capstream/schemas"
	"github.com/capstream/capstream/sink"
)

// Deps are the pcap sink's collaborators.
type Deps struct {
	// Logger is the process logger; the sink adds its component name.
	Logger *slog.Logger
	// Registerer receives the sink's metrics.
	Registerer prometheus.Registerer
	// JetStream is the client the consumer is bound with; its connection
	// carries the acks.
	JetStream jetstream.JetStream
	// ClickHouse is the database the tables live in.
	ClickHouse driver.Conn
	// S3 holds the objects.
	S3 *minio.Client
}

// Sink is the pcap sink.
type Sink struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	m     *metrics
	acker sink.Acker

	open     map[ifaceKey]*object
	bySeq    map[uint64]*object // stream sequence -> object holding it, open or sealed
	buffered int64              // memory held by open and sealed objects (buffer.Cap)
	done     map[ifaceKey]*completed

	// Sealed objects wait in queue for an uploader; a failed upload waits
	// in retryQ until retryAt.
	uploads  chan *object
	results  chan uploadResult
	queue    []*object
	retryQ   []*object
	inflight int
	live     map[*object]struct{} // open and sealed objects

	// Uploaders hand the index rows of uploaded objects to indexers, each
	// inserting all the rows waiting in one INSERT: ClickHouse takes tens
	// of milliseconds per insert, whatever its size. There are two, so the
	// row of an object that completes during an insert (the last one of a
	// stopped capture, typically) does not wait for it.
	indexReqs chan indexReq

	// Status reports run in their own goroutine, after the acks: they are
	// not part of making a batch durable, so they stay off that path. A
	// report reads its totals from pcap_objects, so while one runs, the
	// objects completed meanwhile wait in reportQ as one entry per
	// capture and node, and a single report then covers them all. Reports
	// wait while uploads are in progress (their index inserts go first),
	// at most reportDelay.
	reports    chan schemas.BatchHeader
	reported   chan struct{}
	reportQ    []schemas.BatchHeader // not objects: their buffers are freed once acked
	reportedAt time.Time             // when reportQ became non-empty
	reporting  bool

	// stopAt is when the stop timer fires, zero while it is not armed.
	stopAt time.Time

	health    sink.Health
	retryWait *backoff.ExponentialBackOff
	retryAt   time.Time
}

// completed is what is known of an interface's completed objects, for
// deduplicating redelivered batches.
type completed struct {
	seen    map[string]bool // keys of objects
	objects []doneObject
	used    time.Time
}

type doneObject struct {
	key      string
	at       time.Time
	producer string
	seqs     ranges
}

func (c *completed) add(o doneObject) {
	c.seen[o.key] = true
	c.objects = append(c.objects, o)
}

func (c *completed) has(producer string, seq uint64) bool {
	for _, o := range c.objects {
		if o.producer == producer && o.seqs.has(seq) {
			return true
		}
	}
	return false
}

// New checks cfg and allocates the sink; it does no I/O.
func New(cfg Config, deps Deps) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pcap sink config: %w", err)
	}
	if deps.Logger == nil || deps.Registerer == nil || deps.JetStream == nil || deps.ClickHouse == nil || deps.S3 == nil {
		return nil, errors.New("pcap sink: logger, registerer, jetstream, clickhouse and s3 are required")
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("pcap sink metrics: %w", err)
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = 100*time.Millisecond, 10*time.Second, 0
	return &Sink{
		cfg:       cfg,
		deps:      deps,
		log:       deps.Logger.With("component", "sink-pcap"),
		m:         m,
		acker:     sink.Acker{Conn: deps.JetStream.Conn()},
		open:      map[ifaceKey]*object{},
		bySeq:     map[uint64]*object{},
		done:      map[ifaceKey]*completed{},
		live:      map[*object]struct{}{},
		uploads:   make(chan *object),
		results:   make(chan uploadResult, cfg.Uploaders),
		indexReqs: make(chan indexReq, cfg.Uploaders),
		reports:   make(chan schemas.BatchHeader),
		reported:  make(chan struct{}, 1),
		retryWait: bo,
	}, nil
}

// Ready reports whether the consumer is bound, NATS connected and the last
// upload and index insert succeeded.
func (s *Sink) Ready() error { return s.health.Ready(s.deps.JetStream.Conn()) }

func (s *Sink) setErr(err error) { s.health.SetErr(err) }

// Run consumes until ctx ends, then completes the open objects within
// GracePeriod. It may be called once.
func (s *Sink) Run(ctx context.Context) error {
	cons, ackWait, err := sink.Start(ctx, s.log, s.deps.ClickHouse, s.cfg.Migrate, s.deps.JetStream,
		schemas.PcapSinkConsumer(), s.cfg.Consumer.AckWait)
	if err != nil {
		return sink.NilIfDone(ctx, err)
	}
	s.health.SetBound(true)
	defer s.health.SetBound(false)
	// Best effort: with S3 away the sink can still take batches (up to its
	// memory budget), and the loop sweeps again periodically.
	if err := s.sweep(ctx); err != nil {
		s.m.errs.WithLabelValues("sweep").Inc()
		s.log.Warn("sweep failed", "error", err)
	}
	// The client's pull buffer is the queue; this channel only hands over.
	in := make(chan jetstream.Msg, 4)
	stop := make(chan struct{})
	// Uploads outlive ctx by the grace period: the loop cancels them once
	// it is done, which is at most GracePeriod after ctx ends.
	upCtx, upCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer upCancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sink.Pump(gctx, cons, s.cfg.Consumer.PullMaxBytes, in, stop) })
	for range s.cfg.Uploaders {
		g.Go(func() error {
			for o := range s.uploads {
				s.results <- uploadResult{o: o, err: s.upload(upCtx, o)}
			}
			return nil
		})
	}
	for range min(2, s.cfg.Uploaders) {
		g.Go(func() error { s.indexer(upCtx); return nil })
	}
	g.Go(func() error {
		for h := range s.reports {
			if err := s.publishStatus(upCtx, &h); err != nil {
				s.m.errs.WithLabelValues("status").Inc()
				s.log.Warn("status report failed", "error", err)
			}
			s.reported <- struct{}{}
		}
		return nil
	})
	g.Go(func() error {
		defer close(stop)
		defer upCancel()
		defer close(s.reports)
		defer close(s.uploads)
		return s.loop(ctx, in, ackWait)
	})
	return g.Wait()
}

// uploadResult is an uploader's answer for one sealed object.
type uploadResult struct {
	o   *object
	err error
}

// sweep aborts multipart uploads under the prefix that are older than
// StaleUploadAge: they were left by a sink that died mid-upload. A live
// upload lasts one PutObject call, far shorter than that age, so a sweep by
// one replica never aborts another's upload.
func (s *Sink) sweep(ctx context.Context) error {
	cutoff := time.Now().Add(-s.cfg.StaleUploadAge)
	for u := range s.deps.S3.ListIncompleteUploads(ctx, s.cfg.S3.Bucket, s.cfg.Prefix+"/", true) {
		if u.Err != nil {
			return fmt.Errorf("list incomplete uploads: %w", u.Err)
		}
		if u.Initiated.After(cutoff) {
			continue
		}
		// Abort by upload ID: RemoveIncompleteUpload would abort every
		// upload of the key, including a live one rebuilding it.
		core := minio.Core{Client: s.deps.S3}
		if err := core.AbortMultipartUpload(ctx, s.cfg.S3.Bucket, u.Key, u.UploadID); err != nil {
			return fmt.Errorf("abort upload %s: %w", u.Key, err)
		}
		s.log.Info("aborted stale upload", "key", u.Key, "initiated", u.Initiated)
	}
	return nil
}

func (s *Sink) loop(ctx context.Context, in <-chan jetstream.Msg, ackWait time.Duration) error {
	// The tick checks age and retries; quiet interfaces (a stopped
	// capture) have their own timer, armed for the earliest one, so a
	// stopped capture's last object completes right at StopAfter.
	tick := time.NewTicker(min(time.Second, s.cfg.StopAfter/2))
	defer tick.Stop()
	stopTimer := time.NewTimer(time.Hour)
	stopTimer.Stop()
	defer stopTimer.Stop()
	progress := time.NewTicker(ackWait / 4)
	defer progress.Stop()
	sweep := time.NewTicker(s.cfg.StaleUploadAge / 3)
	defer sweep.Stop()
	done := ctx.Done()
	var grace <-chan time.Time
	var closedErr error
	src := in
	for {
		if src == nil && len(s.open) == 0 && len(s.queue) == 0 && len(s.retryQ) == 0 && s.inflight == 0 &&
			len(s.reportQ) == 0 && !s.reporting {
			// Pull drained, every object completed and reported: the end.
			return closedErr
		}
		if s.stopAt.IsZero() && len(s.open) > 0 {
			s.armStop(stopTimer, time.Now())
		}
		// While uploads fail or memory is full, take no new batches: memory
		// stays bounded by what the objects already hold.
		pull := src
		if len(s.retryQ) > 0 || s.buffered > s.cfg.MaxBufferedBytes {
			pull = nil
		}
		var up chan<- *object
		var head *object
		if len(s.queue) > 0 {
			up, head = s.uploads, s.queue[0]
		}
		var report chan<- schemas.BatchHeader
		var next schemas.BatchHeader
		if len(s.reportQ) > 0 && !s.reporting &&
			(s.inflight == 0 && len(s.queue) == 0 || time.Since(s.reportedAt) >= reportDelay) {
			report, next = s.reports, s.reportQ[0]
		}
		select {
		case msg, ok := <-pull:
			if !ok {
				// The pump drained the client's buffer (shutdown) or the
				// connection closed: complete everything.
				src = nil
				if ctx.Err() == nil {
					closedErr = errors.New("packet consumer closed")
				}
				for _, o := range s.open {
					s.seal(o, "shutdown")
				}
				continue
			}
			s.handle(ctx, msg)
		case up <- head:
			s.queue = s.queue[1:]
			s.inflight++
		case r := <-s.results:
			s.inflight--
			s.finish(r)
		case report <- next:
			s.reportQ = s.reportQ[1:]
			s.reporting = true
		case <-s.reported:
			s.reporting = false
		case now := <-stopTimer.C:
			s.stopAt = time.Time{}
			s.rotate(now)
		case <-tick.C:
			s.rotate(time.Now())
			s.prune()
		case <-progress.C:
			// Keep the server from redelivering batches held in objects
			// that are still filling or uploading.
			for o := range s.live {
				for _, b := range o.batches {
					s.ack(s.acker.Progress(b.reply), "progress")
				}
			}
		case <-sweep.C:
			if err := s.sweep(ctx); err != nil {
				s.m.errs.WithLabelValues("sweep").Inc()
				s.log.Warn("sweep failed", "error", err)
			}
		case <-done:
			done = nil
			t := time.NewTimer(s.cfg.GracePeriod)
			defer t.Stop()
			grace = t.C
		case <-grace:
			s.log.Warn("grace period over with objects not completed; their batches will be redelivered",
				"open", len(s.open), "queued", len(s.queue)+len(s.retryQ), "uploading", s.inflight)
			return closedErr
		}
	}
}

func (s *Sink) ack(err error, reason string) {
	if err != nil {
		s.m.ackErrs.WithLabelValues(reason).Inc()
	}
}

func (s *Sink) handle(ctx context.Context, msg jetstream.Msg) {
	d, err := sink.Decode(msg)
	if err != nil {
		if sink.IsPermanent(err) {
			s.m.batches.WithLabelValues("terminated").Inc()
			s.log.Warn("terminating malformed batch", "subject", msg.Subject(), "error", err)
			s.ack(s.acker.Term(msg.Reply()), "term")
			return
		}
		s.m.batches.WithLabelValues("retried").Inc()
		s.ack(s.acker.Nak(msg.Reply(), time.Second), "nak")
		return
	}
	h := &d.Header
	k := ifaceKey{uid: h.CaptureUID, node: h.Node, iface: h.Interface}
	if d.Delivered > 1 {
		if o := s.bySeq[d.StreamSeq]; o != nil {
			// Still in an object here: keep the newest reply subject.
			for i := range o.batches {
				if o.batches[i].streamSeq == d.StreamSeq {
					o.batches[i].reply = d.Reply
				}
			}
			s.m.batches.WithLabelValues("duplicate").Inc()
			return
		}
		dup, err := s.isDuplicate(ctx, k, h)
		if err != nil {
			s.m.errs.WithLabelValues("dedup").Inc()
			s.setErr(err)
			s.m.batches.WithLabelValues("retried").Inc()
			s.ack(s.acker.Nak(d.Reply, s.retryWait.NextBackOff()), "nak")
			return
		}
		if dup {
			s.m.batches.WithLabelValues("duplicate").Inc()
			s.ack(s.acker.Ack(d.Reply), "ack")
			return
		}
	}
	if h.Packets == 0 {
		s.handleEmptyLast(d)
		return
	}
	if o := s.open[k]; o != nil {
		switch {
		case o.hdr.Producer != h.Producer || o.hdr.LinkType != h.LinkType || o.hdr.SnapLength != h.SnapLength || o.hdr.Pod != h.Pod:
			s.seal(o, "rotate") // a new producer or format starts a new object
		case o.buf.Len()+int64(len(d.Body)) > s.cfg.MaxObjectBytes:
			s.seal(o, "size")
		case len(o.seqs) >= maxRanges && !o.seqs.has(h.Seq-1) && !o.seqs.has(h.Seq+1):
			s.seal(o, "rotate")
		}
	}
	first, last := bodyTimes(d.Body)
	o := s.open[k]
	if o == nil {
		now := time.Now()
		o = &object{
			key: k, hdr: *h, firstSeq: d.StreamSeq, firstTs: first, opened: now,
			name: objectName(s.cfg.Prefix, h, first, d.StreamSeq),
			buf:  newBuffer(),
		}
		_, _ = o.buf.Write(schemas.AppendPcapHeader(nil, h.LinkType, h.SnapLength))
		s.buffered += o.buf.Cap()
		s.open[k] = o
		s.live[o] = struct{}{}
	}
	// The budget counts memory held, chunk room included, so thousands of
	// nearly empty objects count for what they cost.
	before := o.buf.Cap()
	o.buf.Append(d.Body)
	s.buffered += o.buf.Cap() - before
	o.packets += uint64(h.Packets)
	o.lastSeq = max(o.lastSeq, d.StreamSeq)
	o.firstTs, o.lastTs = min(o.firstTs, first), max(o.lastTs, last)
	o.seqs = o.seqs.add(h.Seq)
	o.batches = append(o.batches, held{streamSeq: d.StreamSeq, reply: d.Reply})
	o.touched = time.Now()
	s.bySeq[d.StreamSeq] = o
	s.m.batches.WithLabelValues("buffered").Inc()
	switch {
	case h.Last:
		s.seal(o, "stop")
	case o.buf.Len() >= s.cfg.MaxObjectBytes:
		s.seal(o, "size")
	}
	// Over the memory budget, complete the largest open object early; if
	// everything is already uploading, the loop stops pulling instead.
	for s.buffered > s.cfg.MaxBufferedBytes && len(s.open) > 0 {
		var big *object
		for _, x := range s.open {
			if big == nil || x.buf.Len() > big.buf.Len() {
				big = x
			}
		}
		s.seal(big, "memory")
	}
	s.gauges()
}

// handleEmptyLast takes a last batch with no records: it completes the
// interface's open object of the same run, which then holds the batch (and
// acks it once complete). With no such object there is nothing to complete
// or store, and the batch is acked at once; a redelivery of it is handled
// the same way.
func (s *Sink) handleEmptyLast(d sink.Delivery) {
	h := &d.Header
	o := s.open[ifaceKey{uid: h.CaptureUID, node: h.Node, iface: h.Interface}]
	if o == nil || o.hdr.Producer != h.Producer {
		s.m.batches.WithLabelValues("empty").Inc()
		s.ack(s.acker.Ack(d.Reply), "ack")
		return
	}
	o.seqs = o.seqs.add(h.Seq)
	o.batches = append(o.batches, held{streamSeq: d.StreamSeq, reply: d.Reply})
	s.bySeq[d.StreamSeq] = o
	s.m.batches.WithLabelValues("buffered").Inc()
	s.seal(o, "stop")
	s.gauges()
}

func (s *Sink) gauges() {
	s.m.open.Set(float64(len(s.open)))
	s.m.buffered.Set(float64(s.buffered))
	s.m.pending.Set(float64(len(s.bySeq)))
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

// rotate seals objects that are too old or whose interface went quiet
// (the capture stopped), and requeues failed uploads whose backoff is over.
func (s *Sink) rotate(now time.Time) {
	for _, o := range s.open {
		switch {
		case now.Sub(o.opened) >= s.cfg.MaxObjectAge:
			s.seal(o, "age")
		case now.Sub(o.touched) >= s.cfg.StopAfter:
			s.seal(o, "stop")
		}
	}
	if len(s.retryQ) > 0 && !now.Before(s.retryAt) {
		s.queue = append(s.queue, s.retryQ...)
		s.retryQ = nil
	}
	s.gauges()
}

// seal closes an object to new batches and queues it for upload.
func (s *Sink) seal(o *object, reason string) {
	delete(s.open, o.key)
	o.reason, o.sealed = reason, time.Now()
	s.queue = append(s.queue, o)
}

// upload runs in an uploader goroutine: it writes the object and its index
// row. It reads only what the loop no longer changes once o is sealed.
func (s *Sink) upload(ctx context.Context, o *object) error {
	sum := o.buf.Sum()
	// One PutObject with the full metadata: user metadata is fixed when an
	// upload starts, and it must describe the whole object. minio-go
	// streams it straight from the buffer, in one PUT up to PartSize and
	// in parallel multipart parts of PartSize beyond.
	_, err := s.deps.S3.PutObject(ctx, s.cfg.S3.Bucket, o.name, io.NewSectionReader(o.buf, 0, o.buf.Len()), o.buf.Len(), minio.PutObjectOptions{
		ContentType:  "application/vnd.tcpdump.pcap",
		UserMetadata: o.metadata(sum),
		PartSize:     s.cfg.PartSize,
		// The body's SHA-256 is in the metadata already; skipping the
		// payload hash of the signature saves a pass over every byte.
		// S3 servers accept UNSIGNED-PAYLOAD.
		DisableContentSha256: true,
	})
	if err != nil {
		s.m.errs.WithLabelValues("put").Inc()
		return fmt.Errorf("put object %s: %w", o.name, err)
	}
	req := indexReq{row: o.row(sum), done: make(chan error, 1)}
	select {
	case s.indexReqs <- req:
	case <-ctx.Done():
		return fmt.Errorf("index %s: %w", o.name, ctx.Err())
	}
	select {
	case err = <-req.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("index %s: %w", o.name, err)
	}
	return nil
}

// indexReq asks the indexer for one pcap_objects row; the answer comes on
// done, which has room for it.
type indexReq struct {
	row  indexRow
	done chan error
}

// indexer inserts the rows of uploaded objects, each INSERT holding every
// row waiting at that time (uploads that finished during inserts in
// progress), until ctx ends. The uploaders wait for its answer, so a row is
// still written only after its object is complete, and acked after that.
func (s *Sink) indexer(ctx context.Context) {
	for {
		var reqs []indexReq
		select {
		case r := <-s.indexReqs:
			reqs = append(reqs, r)
		case <-ctx.Done():
			return
		}
	more:
		for {
			select {
			case r := <-s.indexReqs:
				reqs = append(reqs, r)
			default:
				break more
			}
		}
		rows := make([]indexRow, len(reqs))
		for i, r := range reqs {
			rows[i] = r.row
		}
		err := insertIndexRows(ctx, s.deps.ClickHouse, s.cfg.S3.Bucket, rows)
		if err != nil {
			s.m.errs.WithLabelValues("index").Inc()
		}
		for _, r := range reqs {
			r.done <- err
		}
	}
}

// armStop sets the stop timer for the open object that went quiet first.
// The timer fires at most 32 times per StopAfter, so thousands of quiet
// interfaces with scattered deadlines cost few passes over the open
// objects.
func (s *Sink) armStop(t *time.Timer, now time.Time) {
	var first time.Time
	for _, o := range s.open {
		if first.IsZero() || o.touched.Before(first) {
			first = o.touched
		}
	}
	at := first.Add(s.cfg.StopAfter)
	if soonest := now.Add(s.cfg.StopAfter / 32); at.Before(soonest) {
		at = soonest
	}
	s.stopAt = at
	t.Reset(at.Sub(now))
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

// reportDelay bounds how long status reports wait for uploads in progress.
// The loop's tick (at most 1s) wakes it to send them.
const reportDelay = time.Second

// finish acks the batches of an uploaded object, or schedules a retry.
func (s *Sink) finish(r uploadResult) {
	o := r.o
	if r.err != nil {
		s.setErr(r.err)
		wait := s.retryWait.NextBackOff()
		s.retryAt = time.Now().Add(wait)
		s.retryQ = append(s.retryQ, o)
		s.log.Warn("completing object failed; retrying", "key", o.name, "error", r.err, "wait", wait)
		return
	}
	c := s.done[o.key]
	if c == nil {
		c = &completed{seen: map[string]bool{}}
		s.done[o.key] = c
	}
	c.add(doneObject{key: o.name, at: time.Now(), producer: o.hdr.Producer, seqs: o.seqs})
	c.used = time.Now()
	for _, b := range o.batches {
		s.ack(s.acker.Ack(b.reply), "ack")
		delete(s.bySeq, b.streamSeq)
	}
	delete(s.live, o)
	s.queueReport(o.hdr)
	s.buffered -= o.buf.Cap()
	s.m.objects.WithLabelValues(o.reason).Inc()
	s.m.packets.Add(float64(o.packets))
	s.m.objectBytes.Observe(float64(o.buf.Len()))
	s.m.putTime.Observe(time.Since(o.sealed).Seconds())
	s.retryWait.Reset()
	s.setErr(nil)
	s.gauges()
}

// isDuplicate reports whether a redelivered batch is already in a
// completed object. What this process completed is known; otherwise the
// interface's recent objects are listed in S3 and the ones not seen yet are
// read (their metadata lists the batches they hold). Listing again on every
// miss, rather than once, is what makes this hold with several replicas:
// another replica may have completed an object since the last look.
// Objects found are re-indexed, which repairs a crash between upload and
// index insert; the table collapses the identical rows.
func (s *Sink) isDuplicate(ctx context.Context, k ifaceKey, h *schemas.BatchHeader) (bool, error) {
	c := s.done[k]
	if c == nil {
		c = &completed{seen: map[string]bool{}}
		s.done[k] = c
	}
	c.used = time.Now()
	if c.has(h.Producer, h.Seq) {
		return true, nil
	}
	cutoff := time.Now().Add(-s.cfg.DedupWindow)
	var rows []indexRow
	for info := range s.deps.S3.ListObjects(ctx, s.cfg.S3.Bucket, minio.ListObjectsOptions{Prefix: ifaceDir(s.cfg.Prefix, h), Recursive: true}) {
		if info.Err != nil {
			return false, fmt.Errorf("list objects of %s: %w", ifaceDir(s.cfg.Prefix, h), info.Err)
		}
		if c.seen[info.Key] || info.LastModified.Before(cutoff) || !strings.HasSuffix(info.Key, ".pcap") {
			continue
		}
		st, err := s.deps.S3.StatObject(ctx, s.cfg.S3.Bucket, info.Key, minio.StatObjectOptions{})
		if err != nil {
			return false, fmt.Errorf("stat object %s: %w", info.Key, err)
		}
		meta := make(map[string]string, len(st.UserMetadata))
		for mk, v := range st.UserMetadata {
			meta[textproto.CanonicalMIMEHeaderKey(mk)] = v
		}
		row, err := rowFromMetadata(info.Key, st.Size, meta)
		if err != nil {
			s.log.Warn("ignoring object without capstream metadata", "key", info.Key, "error", err)
			continue
		}
		if row.UID != k.uid {
			continue // an earlier capture with the same name
		}
		rows = append(rows, row)
		c.add(doneObject{key: info.Key, at: st.LastModified, producer: row.Producer, seqs: row.Batches})
	}
	if len(rows) > 0 {
		if err := insertIndexRows(ctx, s.deps.ClickHouse, s.cfg.S3.Bucket, rows); err != nil {
			return false, err
		}
	}
	return c.has(h.Producer, h.Seq), nil
}

// prune forgets completed objects older than the dedup window: their
// batches can no longer be redelivered.
func (s *Sink) prune() {
	cutoff := time.Now().Add(-s.cfg.DedupWindow)
	for k, c := range s.done {
		kept := c.objects[:0]
		for _, o := range c.objects {
			if o.at.After(cutoff) {
				kept = append(kept, o)
			} else {
				delete(c.seen, o.key)
			}
		}
		c.objects = kept
		if c.used.Before(cutoff) {
			delete(s.done, k)
		}
	}
}

const insertObject = `INSERT INTO pcap_objects (namespace, capture, capture_uid, node, pod, interface, bucket, key,
 size, packets, first_time, first_ns, last_time, last_ns, first_seq, last_seq, link_type, sha256)`

// insertIndexRows writes pcap_objects rows through PrepareBatch with the
// columns named (an INSERT ... VALUES through Exec hangs on 18.16).
func insertIndexRows(ctx context.Context, conn driver.Conn, bucket string, rows []indexRow) error {
	b, err := conn.PrepareBatch(ctx, insertObject)
	if err != nil {
		return fmt.Errorf("prepare pcap_objects insert: %w", err)
	}
	for _, r := range rows {
		ft, fns := time.Unix(r.FirstTs/1e9, 0).UTC(), uint32(r.FirstTs%1e9)
		lt, lns := time.Unix(r.LastTs/1e9, 0).UTC(), uint32(r.LastTs%1e9)
		if err := b.Append(r.Namespace, r.Capture, r.UID, r.Node, r.Pod, r.Interface, bucket, r.Key,
			r.Size, r.Packets, ft, fns, lt, lns, r.FirstSeq, r.LastSeq, r.LinkType, r.SHA256); err != nil {
			_ = b.Abort()
			return fmt.Errorf("append pcap_objects row %s: %w", r.Key, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert %d pcap_objects rows: %w", len(rows), err)
	}
	return nil
}
