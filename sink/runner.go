package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v4"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/capstream/capstream/internal/run"
	"github.com/capstream/capstream/schemas"
)

// Deps are a sink's collaborators, the same for both sinks.
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
	// S3 holds the objects; only the pcap sink uses it.
	S3 *minio.Client
}

// Handler is what a sink supplies to its Runner: its decisions. Every
// method runs on the runner's loop goroutine, one at a time, so a sink's
// state needs no lock.
type Handler interface {
	// Handle takes one decoded batch. It acks, naks or holds it; a panic
	// is recovered by the runner, which terminates the batch.
	Handle(ctx context.Context, d Delivery)
	// Tick does the sink's periodic work (flushes, rotation, retries);
	// the runner calls it once before pulling and then at Wake.
	Tick(ctx context.Context, now time.Time)
	// Wake is when the sink next wants Tick, the zero time for never. It
	// must move past a time once Tick has run for it.
	Wake() time.Time
	// Held calls fn with the reply subject of every batch the sink holds
	// unacked, so the runner can keep the server from redelivering them.
	Held(fn func(reply string))
	// Accepting reports whether the runner may hand over another batch;
	// draining is set once the sink was asked to stop (the pull then
	// delivers what the client had buffered, and closes).
	Accepting(draining bool) bool
	// Drain is called once the pull has ended: the sink completes what it
	// holds, under ctx, the grace context.
	Drain(ctx context.Context)
	// Idle reports, after Drain, that nothing is left to complete.
	Idle() bool
}

// Reporter is what a Handler implements to hear of a failure or a loss
// the runner recorded in its Ledger for the capture and node of h (a
// panic, a gap), so that it reports them. It runs on the loop goroutine.
type Reporter interface {
	Report(h *schemas.BatchHeader)
}

// RunnerConfig is what a Runner needs to know of its sink.
type RunnerConfig struct {
	// Name names the sink in errors ("pcap sink").
	Name string
	// Config is the sink's whole configuration, checked by NewRunner.
	Config interface{ Validate() error }
	// NeedClickHouse and NeedS3 say the sink writes there, so Deps.ClickHouse
	// and Deps.S3 are required.
	NeedClickHouse, NeedS3 bool
	// Component is "pcap" or "flows": metric names are
	// capstream_sink_<component>_*, the logger's component sink-<component>.
	Component string
	// Source is the sink's schemas.Source: its replicas announce themselves
	// on schemas.SinkGroupSubject(Source).
	Source schemas.Source
	// Durable is the template of the consumers to bind, one per partition
	// (schemas.SinkPartitionConsumer).
	Durable jetstream.ConsumerConfig
	// RunConfig is the pull, the grace period and whether to migrate.
	RunConfig
	// BatchesHelp and PendingHelp describe the batches and pending
	// metrics, whose results and meaning differ per sink.
	BatchesHelp, PendingHelp string
	// Metrics, when set, registers the sink's own metrics with the
	// runner's registrar (names get the capstream_sink_<component>_
	// prefix); NewRunner fails if any registration does.
	Metrics func(*run.Registrar)
}

// Runner is the consumer loop both sinks share: it binds the durable
// consumer, pulls, decodes and classifies each batch, hands it to the
// Handler, keeps held batches in progress, runs the sink's goroutines and
// the closures they hand back (Do), and shuts down: drain the pull, then
// let the sink complete under a fresh GracePeriod context.
type Runner struct {
	cfg   RunnerConfig
	deps  Deps
	log   *slog.Logger
	acker Acker
	// M holds the counters both sinks share; the sink updates Batches and
	// Pending itself.
	M      *Metrics
	health Health
	// retry spaces the sink's tries after a failed write; it lives on the
	// loop goroutine, like the sink's state.
	retry *backoff.ExponentialBackOff
	// Ledger holds the failures and losses of each capture and node, for
	// the sink's status reports.
	Ledger Ledger

	do       chan func()
	finished chan struct{}
}

// NewRunner allocates a runner and registers its metrics; it does no I/O.
func NewRunner(cfg RunnerConfig, deps Deps) (*Runner, error) {
	if cfg.Config != nil {
		if err := cfg.Config.Validate(); err != nil {
			return nil, fmt.Errorf("%s config: %w", cfg.Name, err)
		}
	}
	if _, err := schemas.Token(string(cfg.Source)); err != nil || cfg.Source == "" {
		return nil, fmt.Errorf("%s: source %q: want the sink's schemas.Source", cfg.Name, cfg.Source)
	}
	if deps.Logger == nil || deps.Registerer == nil || deps.JetStream == nil ||
		((cfg.NeedClickHouse || cfg.Migrate) && deps.ClickHouse == nil) || (cfg.NeedS3 && deps.S3 == nil) {
		need := "logger, registerer and jetstream"
		switch {
		case cfg.NeedS3:
			need = "logger, registerer, jetstream, clickhouse and s3"
		case cfg.NeedClickHouse || cfg.Migrate:
			need = "logger, registerer, jetstream and clickhouse"
		}
		return nil, fmt.Errorf("%s: %s are required", cfg.Name, need)
	}
	m, err := newMetrics(deps.Registerer, cfg.Component, cfg.BatchesHelp, cfg.PendingHelp, cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("%s sink metrics: %w", cfg.Component, err)
	}
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval, retry.MaxInterval, retry.MaxElapsedTime = 100*time.Millisecond, 10*time.Second, 0
	return &Runner{
		cfg:      cfg,
		deps:     deps,
		log:      deps.Logger.With("component", "sink-"+cfg.Component),
		acker:    Acker{Conn: deps.JetStream.Conn()},
		M:        m,
		retry:    retry,
		do:       make(chan func()),
		finished: make(chan struct{}),
	}, nil
}

// Logger is the sink's logger, with its component set.
func (r *Runner) Logger() *slog.Logger { return r.log }

// Ready reports whether the consumer is bound, NATS connected and the last
// write succeeded.
func (r *Runner) Ready() error { return r.health.Ready(r.deps.JetStream.Conn()) }

// Failed records that a write of the sink failed with err, which Ready
// reports until the next success, and returns how long to wait before
// trying again: a backoff from 100ms to 10s that grows with each failure
// in a row. Call it on the loop goroutine.
func (r *Runner) Failed(err error) time.Duration {
	r.health.SetErr(err)
	return r.retry.NextBackOff()
}

// Succeeded records that a write of the sink succeeded: Ready no longer
// reports the last failure and the backoff starts over. Call it on the
// loop goroutine.
func (r *Runner) Succeeded() {
	r.retry.Reset()
	r.health.SetErr(nil)
}

// Ack acks a durable batch, counting a failure.
func (r *Runner) Ack(reply string) { r.count(r.acker.Ack(reply), "ack") }

// Nak asks for a redelivery after delay, counting a failure.
func (r *Runner) Nak(reply string, delay time.Duration) { r.count(r.acker.Nak(reply, delay), "nak") }

// Term terminates a batch that can never be stored, counting a failure.
func (r *Runner) Term(reply string) { r.count(r.acker.Term(reply), "term") }

// Refused records that batches of the capture and node of h were
// terminated for a permanent failure of reason (a schemas.Failure*
// constant): in capstream_sink_<component>_failures_total, in the batches
// metric and in the Ledger, with err as the message. The caller terminates
// them, logs the occurrence and asks for a report. Ready reports err until
// the next success, but the backoff is not raised: the sink goes on.
func (r *Runner) Refused(h *schemas.BatchHeader, reason string, batches int, err error) {
	r.M.Failures.WithLabelValues(reason).Add(float64(batches))
	r.M.Batches.WithLabelValues("terminated").Add(float64(batches))
	r.Ledger.Fail(KeyOf(h), reason, uint64(batches), err.Error())
	r.health.SetErr(err)
}

func (r *Runner) count(err error, reason string) {
	if err != nil {
		r.M.AckErrs.WithLabelValues(reason).Inc()
	}
}

// Do runs fn on the loop goroutine, where the Handler's state lives; the
// sink's own goroutines hand their results back this way. It reports
// false, without running fn, once the loop has ended.
func (r *Runner) Do(fn func()) bool {
	select {
	case r.do <- fn:
		return true
	case <-r.finished:
		return false
	}
}

// Run binds the consumers and runs the loop with h until ctx ends and the
// sink has completed (or GracePeriod is over), with workers, the sink's
// goroutines, in the same group. A worker's context ends when the loop
// does, which is at most GracePeriod after ctx. A clean cancel returns
// nil. Run may be called once.
func (r *Runner) Run(ctx context.Context, h Handler, workers ...func(context.Context) error) error {
	b, ackWait, err := start(ctx, r.log, r.deps.ClickHouse, r.cfg.Migrate, r.deps.JetStream, r.cfg.Durable, r.cfg.Consumer.AckWait)
	if err != nil {
		return NilIfDone(ctx, err)
	}
	nc := r.deps.JetStream.Conn()
	s := newShare(r.log, r.M, nc, b, r.cfg.Source, r.cfg.Consumer)
	sub, err := nc.Subscribe(s.subject, s.heard)
	if err != nil {
		return NilIfDone(ctx, fmt.Errorf("hear the other replicas on %s: %w", s.subject, err))
	}
	defer func() { _ = sub.Unsubscribe() }()
	r.health.SetBound(true)
	defer r.health.SetBound(false)
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	g, _ := errgroup.WithContext(ctx)
	for _, w := range workers {
		g.Go(func() error { return w(wctx) })
	}
	g.Go(func() error {
		defer s.close()
		defer wcancel()
		defer close(r.finished)
		return r.loop(ctx, h, s, ackWait)
	})
	return g.Wait()
}

func (r *Runner) loop(ctx context.Context, h Handler, s *share, ackWait time.Duration) error {
	progress := time.NewTicker(ackWait / 4)
	defer progress.Stop()
	rebalance := time.NewTimer(time.Hour)
	defer rebalance.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	var armed time.Time
	// hctx is the sink's context: ctx, then the grace context once ctx
	// ended or the pull did, so the final work never runs on a cancelled
	// context.
	hctx, done := ctx, ctx.Done()
	var grace <-chan struct{}
	cancelGrace := func() {}
	defer func() { cancelGrace() }()
	startGrace := func() {
		if grace == nil {
			hctx, cancelGrace = context.WithTimeout(context.WithoutCancel(ctx), r.cfg.GracePeriod)
			grace = hctx.Done()
		}
	}
	var closedErr error
	// src is the pumps' output until they have all ended at shutdown.
	src, shutting := s.out, false
	// complete runs the sink's Drain once shutting down and every pump
	// has handed over what the client had buffered.
	complete := func() {
		if shutting && src != nil && s.running() == 0 {
			src = nil
			h.Drain(hctx)
		}
	}
	shutdown := func() {
		shutting = true
		startGrace()
		s.drainAll()
		complete()
	}
	h.Tick(hctx, time.Now())
	s.rebalance(time.Now())
	rebalance.Reset(time.Until(s.next))
	for {
		if src == nil && h.Idle() {
			return closedErr
		}
		pull := src
		if pull != nil && !h.Accepting(shutting) {
			pull = nil
		}
		if at := h.Wake(); !at.Equal(armed) {
			armed = at
			wake.Reset(time.Until(at))
		}
		select {
		case p := <-pull:
			s.delivered(p.part)
			r.handle(hctx, h, s, p)
		case p := <-s.ended:
			if s.onEnded(p) && !shutting {
				// The iterator closed by itself: the connection is
				// gone. Complete everything.
				if ctx.Err() == nil {
					closedErr = errors.New("packet consumer closed")
				}
				shutdown()
			} else {
				complete()
			}
		case now := <-rebalance.C:
			if !shutting {
				s.rebalance(now)
			}
			rebalance.Reset(time.Until(s.next))
		case <-s.joined:
			s.announce()
		case fn := <-r.do:
			fn()
		case now := <-wake.C:
			armed = time.Time{}
			h.Tick(hctx, now)
		case now := <-progress.C:
			h.Held(func(reply string) { r.count(r.acker.Progress(reply), "progress") })
			rep, _ := h.(Reporter)
			for i := range s.gaps {
				s.gaps[i].prune(now, false)
				for _, l := range s.gaps[i].expire(now) {
					r.lose(rep, l)
				}
			}
		case <-done:
			done = nil
			if !shutting {
				shutdown()
			}
		case <-grace:
			r.log.Warn("grace period over before the sink completed; the batches it holds will be redelivered")
			return closedErr
		}
	}
}

// handle decodes and classifies one message and hands it to h inside the
// per-message panic boundary.
func (r *Runner) handle(ctx context.Context, h Handler, s *share, p pulled) {
	msg := p.msg
	d, err := Decode(msg)
	if err != nil {
		if IsPermanent(err) {
			r.M.Failures.WithLabelValues(schemas.FailureMalformed).Inc()
			r.M.Batches.WithLabelValues("terminated").Inc()
			r.log.Warn("terminating malformed batch", "subject", msg.Subject(), "stream_seq", streamSeq(msg), "error", err)
			r.Term(msg.Reply())
			return
		}
		r.M.Batches.WithLabelValues("retried").Inc()
		r.Nak(msg.Reply(), time.Second)
		return
	}
	rep, _ := h.(Reporter)
	if l, ok := s.gaps[p.part].see(&d, msg.Subject(), time.Now()); ok {
		r.lose(rep, l)
	}
	defer func() {
		if p := recover(); p != nil {
			r.M.Panics.Inc()
			r.log.Error("terminating a batch whose handling panicked", "subject", msg.Subject(), "stream_seq", d.StreamSeq, "panic", p)
			r.M.Failures.WithLabelValues(schemas.FailurePanic).Inc()
			r.M.Batches.WithLabelValues("terminated").Inc()
			r.Ledger.Fail(KeyOf(&d.Header), schemas.FailurePanic, 1, fmt.Sprintf("handling batch %d panicked: %v", d.StreamSeq, p))
			r.Term(d.Reply)
			if rep != nil {
				rep.Report(&d.Header)
			}
		}
	}()
	h.Handle(ctx, d)
}

// lose counts a gap that did not fill (gaps) and reports it.
func (r *Runner) lose(rep Reporter, l lost) {
	r.M.LostBatches.Add(float64(l.batches))
	r.M.LostPackets.Add(float64(l.packets))
	r.Ledger.Lose(KeyOf(&l.header), l.batches, l.packets)
	r.log.Warn("batches lost before the sink got them (stream limits)", "subject", l.subject, "stream_seq", l.streamSeq,
		"interface", l.header.Interface, "seq", l.header.Seq, "lost_batches", l.batches, "lost_packets", l.packets)
	if rep != nil {
		rep.Report(&l.header)
	}
}

func streamSeq(msg jetstream.Msg) uint64 {
	md, err := msg.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}
