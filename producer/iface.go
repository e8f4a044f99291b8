package producer

// One interface's capture loop: waiting for the interface and for room in
// the ring budget, opening the source, and moving its packets into batches.

import (
	"context"
	"errors"
	"io"
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
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(cfg.InterfaceRetry), backoff.WithMaxElapsedTime(0))
	// wait reports the interface waiting and backs off before the next try.
	wait := func() {
		l.state.Store(ifWaiting)
		m.notify()
		select {
		case <-time.After(b.NextBackOff()):
		case <-ctx.Done():
		}
	}
	waitingLogged, budgetLogged := false, false
	ring := m.p.ringBytes
	for ctx.Err() == nil {
		if !m.p.rings.reserve(ring) {
			why := m.p.rings.refusal(ring)
			c.ctr.setError(why)
			if !budgetLogged {
				log.Warn("waiting for ring memory", "reason", why)
				budgetLogged = true
			}
			m.p.m.ringRefusals.Inc()
			wait()
			continue
		}
		budgetLogged = false
		src, err := m.p.opener.Open(source.Options{Interface: l.ep.Interface, Filter: c.filter, SnapLength: c.snap})
		if err != nil {
			m.p.rings.release(ring)
			if errors.Is(err, source.ErrFilter) {
				log.Warn("capture refused", "error", err)
				c.ctr.setError(err.Error())
				l.state.Store(ifError)
				m.notify()
				return
			}
			if !errors.Is(err, source.ErrNoInterface) {
				c.ctr.setError(err.Error())
				log.Warn("open capture", "error", err)
			} else if !waitingLogged {
				log.Info("waiting for interface")
				waitingLogged = true
			}
			wait()
			continue
		}
		b.Reset()
		waitingLogged = false
		log.Info("capturing")
		if l.state.Load() != ifCapturing {
			l.state.Store(ifOpen)
		}
		bat.hdr.LinkType = src.LinkType()
		err = m.readLoop(ctx, src, bat, c, l)
		_ = src.Close()
		m.p.rings.release(ring)
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
