package producer

// One interface's capture loop: waiting for the interface and for room in
// the ring budget, opening the source, and moving its packets into batches.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/schemas"
)

// runIface captures one interface until ctx ends: it opens the source
// (waiting for a missing interface), reads into a batcher, and goes back
// to waiting when the interface disappears. An interface of a Sharer is
// read once for every capture selecting it instead (runShared, shared.go).
//
// It reads only the parts of c that never change after newCapture (key,
// subject, filter, snap length, counters).
func (m *manager) runIface(ctx context.Context, c *capture, uid string, l *ifaceLoop, seq *uint64) {
	cfg := m.p.cfg
	log := m.p.logger.With("namespace", c.key.Namespace, "capture", c.key.Name, "interface", l.ep.Interface)
	bat := &batcher{
		pub: m.pub, ctr: c.ctr, m: m.p.m, subject: c.subject,
		maxBytes: cfg.BatchBytes, maxDelay: cfg.BatchDelay,
		hdr: schemas.BatchHeader{
			Namespace: c.key.Namespace, Capture: c.key.Name, CaptureUID: uid, Node: c.key.Node,
			Pod: l.ep.Pod, Interface: l.ep.Interface, SnapLength: uint32(c.snap), Producer: m.p.epoch,
			Seq: *seq,
		},
	}
	defer func() { *seq = bat.hdr.Seq }()
	if sh, ok := m.p.opener.(source.Sharer); ok {
		m.runShared(ctx, c, l, bat, sh.ShareKey(l.ep.Interface), log)
		return
	}
	// A source of its own (file replay: each capture replays from the
	// start).
	r := m.newReopen(log, func() { l.state.Store(ifWaiting) }, c.ctr.setError)
	for ctx.Err() == nil {
		if !r.reserve(ctx) {
			continue
		}
		src, err := m.p.opener.Open(source.Options{Interface: l.ep.Interface, Filter: c.filter, SnapLength: c.snap})
		if err != nil {
			if errors.Is(err, source.ErrFilter) {
				r.release()
				log.Warn("capture refused", "error", err)
				c.ctr.setError(err.Error())
				l.state.Store(ifError)
				m.notify()
				return
			}
			r.openFailed(ctx, err)
			continue
		}
		r.opened()
		log.Info("capturing")
		if l.state.Load() != ifCapturing {
			l.state.Store(ifOpen)
		}
		bat.hdr.LinkType = src.LinkType()
		err = m.readLoop(ctx, src, bat, c, l)
		_ = src.Close()
		r.release()
		switch {
		case err == nil:
			return
		case errors.Is(err, io.EOF):
			log.Info("replay ended")
			l.state.Store(ifEnded)
			m.notify()
			return
		case errors.Is(err, source.ErrGone):
			log.Info("interface gone, waiting for it")
		default:
			log.Warn("capture failed, reopening", "error", err)
			c.ctr.setError(err.Error())
		}
		l.state.Store(ifWaiting)
		m.notify()
	}
}

// reopen is what a reader (runIface, or a shared socket's run) keeps
// between opens of its source: the backoff, and which waits it has
// logged, so each reason is logged once.
type reopen struct {
	m   *manager
	log *slog.Logger
	b   *backoff.ExponentialBackOff
	// waiting marks the reader's interfaces waiting; setError records a
	// reason on its captures.
	waiting                     func()
	setError                    func(string)
	waitingLogged, budgetLogged bool
}

func (m *manager) newReopen(log *slog.Logger, waiting func(), setError func(string)) *reopen {
	return &reopen{m: m, log: log, waiting: waiting, setError: setError,
		b: backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond),
			backoff.WithMaxInterval(m.p.cfg.InterfaceRetry), backoff.WithMaxElapsedTime(0))}
}

// wait reports the interfaces waiting and backs off before the next try.
func (r *reopen) wait(ctx context.Context) {
	r.waiting()
	r.m.notify()
	select {
	case <-time.After(r.b.NextBackOff()):
	case <-ctx.Done():
	}
}

// reserve takes one ring from the budget. Without room it records and
// logs why, waits and returns false, for the caller to try again.
func (r *reopen) reserve(ctx context.Context) bool {
	rings := &r.m.p.rings
	if !rings.reserve(r.m.p.ringBytes) {
		why := rings.refusal(r.m.p.ringBytes)
		r.setError(why)
		if !r.budgetLogged {
			r.log.Warn("waiting for ring memory", "reason", why)
			r.budgetLogged = true
		}
		r.m.p.m.ringRefusals.Inc()
		r.wait(ctx)
		return false
	}
	r.budgetLogged = false
	return true
}

// release gives the ring back to the budget.
func (r *reopen) release() { r.m.p.rings.release(r.m.p.ringBytes) }

// openFailed handles a failed open: the ring goes back, the failure is
// recorded and logged (a missing interface only once), and it waits.
func (r *reopen) openFailed(ctx context.Context, err error) {
	r.release()
	if !errors.Is(err, source.ErrNoInterface) {
		r.setError(err.Error())
		r.log.Warn("open capture", "error", err)
	} else if !r.waitingLogged {
		r.log.Info("waiting for interface")
		r.waitingLogged = true
	}
	r.wait(ctx)
}

// opened resets the backoff and the waiting log after an open.
func (r *reopen) opened() {
	r.b.Reset()
	r.waitingLogged = false
}

// readLoop moves packets from src into bat until ctx ends (nil) or the
// source fails. It never logs per packet.
func (m *manager) readLoop(ctx context.Context, src source.Source, bat *batcher, c *capture, l *ifaceLoop) error {
	bat.wait = m.p.cfg.PublishWait
	if !src.Paced() {
		bat.wait = -1 // a file can wait for JetStream without losing anything
	}
	var drops uint64
	statsAt := time.Now()
	pollStats := func() {
		st, err := src.Stats()
		if err == nil && st.Drops > drops {
			d := st.Drops - drops
			drops = st.Drops
			c.ctr.kernelDrops.Add(d)
			m.p.m.kernelDrops.Add(float64(d))
		}
	}
	defer pollStats()
	for n := 0; ; n++ {
		// Checking the context costs a lock: every 64 packets, and on
		// every idle poll, is often enough.
		if n&63 == 0 && ctx.Err() != nil {
			bat.finish(m.flushCtx)
			return nil
		}
		data, info, err := src.Read()
		now := time.Now()
		switch {
		case err == nil:
			bat.add(m.flushCtx, data, info)
			if l.state.Load() != ifCapturing {
				l.state.Store(ifCapturing)
				m.notify()
			}
		case errors.Is(err, source.ErrTimeout):
			n = -1 // check the context next round
		case errors.Is(err, io.EOF):
			bat.finish(m.flushCtx)
			return err
		default:
			// The interface may come back (ErrGone) or the source reopen:
			// not the end of the run.
			bat.flush(m.flushCtx)
			return err
		}
		if bat.due(now) {
			bat.flush(m.flushCtx)
		}
		if now.Sub(statsAt) >= time.Second {
			statsAt = now
			pollStats()
		}
	}
}
