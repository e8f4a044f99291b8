package producer

// Interfaces shared between captures: one source (one AF_PACKET socket, one
// ring of the node budget) per interface, whatever the number of captures
// that select it. A reader goroutine per interface fans each packet out to
// the batchers of the captures subscribed to it; each capture runs its own
// program in user space and cuts to its own snap length, while the kernel
// filter is the union of theirs.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/bpf"

	"github.com/capstream/capstream/producer/filter"
	"github.com/capstream/capstream/producer/source"
	"github.com/capstream/capstream/schemas"
)

// refilterMargin covers the gap between the kernel running a socket's
// filter and stamping the packet: packets stamped up to this long after a
// filter change may have passed the previous program.
const refilterMargin = 10 * time.Millisecond

// hub holds the shared interfaces of a producer, by source.Sharer key.
type hub struct {
	mu     sync.Mutex
	ifaces map[string]*shared
	// closing are interfaces whose last capture left and whose reader is
	// closing the socket: a new reader on the same key waits for it, so one
	// interface never holds two rings.
	closing map[string]*shared
}

// shared is one interface read for every capture that selects it. Its
// reader goroutine (run) owns the source; subscribers join and leave under
// mu, which the reader holds while it hands a packet to the batchers, so a
// subscriber that left is never touched again.
type shared struct {
	key, iface string
	m          *manager
	log        *slog.Logger
	cancel     context.CancelFunc
	done       chan struct{}
	prev       *shared // the closing reader of the same key, if any

	mu   sync.Mutex
	subs []*subscriber
	src  source.Source // nil while not open
	// prog is the program in the kernel; packets stamped from exactFrom on
	// passed it (before, they may have passed an earlier one).
	prog      []bpf.RawInstruction
	exactFrom time.Time
	// unfiltered: the union did not fit one kernel program (or the kernel
	// refused it), so the kernel accepts every packet and only the
	// captures' own programs filter.
	unfiltered bool
	drops      uint64 // the source's kernel drops counted so far
}

// subscriber is one capture's interface loop on a shared interface.
type subscriber struct {
	c     *capture
	l     *ifaceLoop
	bat   *batcher
	vm    *bpf.VM
	prog  []bpf.RawInstruction
	rules []schemas.Filter
	snap  int
	// exact: the kernel's program is this capture's own, so a packet
	// stamped from exactFrom on needs no second run in the VM.
	exact bool
}

// runShared is runIface for a Sharer's interface: it subscribes the
// capture to the interface's shared source until ctx ends.
func (m *manager) runShared(ctx context.Context, c *capture, l *ifaceLoop, bat *batcher, key string, log *slog.Logger) {
	sub := &subscriber{c: c, l: l, bat: bat, prog: c.filter, rules: c.rules, snap: c.snap}
	// The capture's own program, run on every packet of the shared
	// socket: one that the VM refuses fails this capture alone.
	prog, ok := bpf.Disassemble(c.filter)
	var err error
	if !ok {
		err = errors.New("program does not disassemble")
	} else {
		sub.vm, err = bpf.NewVM(prog)
	}
	if err != nil {
		log.Warn("capture refused", "error", err)
		c.ctr.setError(source.ErrFilter.Error() + ": " + err.Error())
		l.state.Store(ifError)
		m.notify()
		return
	}
	s := m.join(key, l.ep.Interface, sub, log)
	<-ctx.Done()
	m.leave(s, sub)
	// The reader no longer touches the batcher.
	bat.finish(m.flushCtx)
}

// join subscribes sub to the interface of key, starting its reader when it
// is the first, and widens the kernel filter to take sub's packets in.
func (m *manager) join(key, iface string, sub *subscriber, log *slog.Logger) *shared {
	h := &m.hub
	h.mu.Lock()
	s := h.ifaces[key]
	if s == nil {
		ctx, cancel := context.WithCancel(context.Background())
		s = &shared{key: key, iface: iface, m: m, cancel: cancel, done: make(chan struct{}), prev: h.closing[key],
			log: m.p.logger.With("interface", iface)}
		if h.ifaces == nil {
			h.ifaces = map[string]*shared{}
		}
		h.ifaces[key] = s
		// The calling interface loop is in m.wg, so the group cannot be
		// waited to zero meanwhile.
		m.wg.Go(func() { s.run(ctx) })
	}
	s.mu.Lock()
	h.mu.Unlock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, sub)
	m.p.m.sharedSubscribers.Inc()
	if s.src != nil {
		s.attach(sub)
		s.refilter()
		log.Info("capturing", "shared_with", len(s.subs)-1)
		sub.setOpen(m)
	}
	return s
}

// leave unsubscribes sub; the last subscriber stops the reader and waits
// until it has closed the socket and released its ring.
func (m *manager) leave(s *shared, sub *subscriber) {
	h := &m.hub
	h.mu.Lock()
	s.mu.Lock()
	// Drops since the last poll are this capture's too.
	s.pollStats()
	s.subs = slices.DeleteFunc(s.subs, func(x *subscriber) bool { return x == sub })
	m.p.m.sharedSubscribers.Dec()
	last := len(s.subs) == 0
	if last {
		delete(h.ifaces, s.key)
		if h.closing == nil {
			h.closing = map[string]*shared{}
		}
		h.closing[s.key] = s
		s.cancel()
	} else if s.src != nil {
		s.refilter()
	}
	s.mu.Unlock()
	h.mu.Unlock()
	if !last {
		return
	}
	<-s.done
	h.mu.Lock()
	if h.closing[s.key] == s {
		delete(h.closing, s.key)
	}
	h.mu.Unlock()
}

// attach prepares sub's batcher for the open source; s.mu is held.
func (s *shared) attach(sub *subscriber) {
	sub.bat.hdr.LinkType = s.src.LinkType()
	sub.bat.wait = s.m.p.cfg.PublishWait
	if !s.src.Paced() {
		sub.bat.wait = -1
	}
}

// setOpen reports sub's interface open, unless it already captures.
func (sub *subscriber) setOpen(m *manager) {
	if sub.l.state.Load() != ifCapturing {
		sub.l.state.Store(ifOpen)
		m.notify()
	}
}

// union returns the kernel program that accepts what any subscriber's
// accepts, cut to snap, the largest snap length: rules are OR'ed, so it is
// the rules of all (none if one accepts everything). A subscriber with
// rules re-runs its program on what the ring holds, so the cut keeps at
// least the headers a program reads. ok is false when the union does not
// fit a program (why says why); prog then accepts everything. s.mu is held.
func (s *shared) union() (prog []bpf.RawInstruction, snap uint32, ok bool, why error) {
	n, all, filtered := 1, false, false
	var rules []schemas.Filter
	for _, sub := range s.subs {
		n = max(n, sub.snap)
		if len(sub.rules) == 0 {
			all = true
			continue
		}
		filtered = true
		for _, r := range sub.rules {
			if !slices.ContainsFunc(rules, func(x schemas.Filter) bool {
				return x.Protocol == r.Protocol && slices.Equal(x.Ports, r.Ports)
			}) {
				rules = append(rules, r)
			}
		}
	}
	if filtered {
		n = max(n, filter.HeaderBytes)
	}
	snap = uint32(min(n, schemas.MaxSnapLength))
	if all {
		rules = nil
	}
	if prog, why = filter.Assemble(rules, snap); why == nil {
		return prog, snap, true, nil
	}
	return acceptAll(snap), snap, false, why
}

// acceptAll is the kernel program of an unfiltered shared socket: every
// packet, cut to snap.
func acceptAll(snap uint32) []bpf.RawInstruction {
	ri, _ := bpf.RetConstant{Val: snap}.Assemble() // never fails
	return []bpf.RawInstruction{ri}
}

// refilter puts the union of the subscribers' programs in the kernel when
// it changed, falling back to accepting everything when it is too complex
// or refused; s.mu is held and the source open.
func (s *shared) refilter() {
	prog, snap, ok, why := s.union()
	if !slices.Equal(prog, s.prog) {
		rf, can := s.src.(source.Refilterer)
		var err error
		if !can {
			err = errors.New("source cannot change its filter")
		} else if err = rf.SetFilter(prog); err != nil && ok {
			// The kernel refused the union (e.g. net.core.optmem_max):
			// accept everything there, the captures' programs still
			// filter.
			ok, why = false, err
			prog = acceptAll(snap)
			err = rf.SetFilter(prog)
		}
		if err != nil {
			// Detach: nothing is filtered or cut in the kernel, which
			// loses nothing for any capture.
			prog, ok, why = nil, false, err
			if can {
				_ = rf.SetFilter(nil)
			}
		}
		s.prog = prog
		s.exactFrom = time.Now().Add(refilterMargin)
	}
	s.setUnfiltered(!ok, why)
	for _, sub := range s.subs {
		sub.exact = slices.Equal(sub.prog, s.prog)
	}
}

// setUnfiltered records whether the kernel filters for s, in the gauge and
// in one log line per change.
func (s *shared) setUnfiltered(v bool, why error) {
	if v == s.unfiltered {
		return
	}
	s.unfiltered = v
	if v {
		s.m.p.m.sharedUnfiltered.Inc()
		s.log.Warn("shared socket: the union of the captures' filters does not fit the kernel, accepting every packet there; each capture still filters in user space",
			"captures", len(s.subs), "reason", why)
	} else {
		s.m.p.m.sharedUnfiltered.Dec()
		s.log.Info("shared socket: the kernel filters again", "captures", len(s.subs))
	}
}

// each calls fn for every subscriber under s.mu.
func (s *shared) each(fn func(*subscriber)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.subs {
		fn(sub)
	}
}

// run is the interface's reader: it waits for ring room and the interface,
// opens the source with the union filter, and reads until ctx ends (the
// last subscriber left), reopening when the interface comes back.
func (s *shared) run(ctx context.Context) {
	defer close(s.done)
	if s.prev != nil {
		<-s.prev.done
	}
	m := s.m
	r := m.newReopen(s.log, func() { s.each(func(sub *subscriber) { sub.l.state.Store(ifWaiting) }) },
		func(why string) { s.each(func(sub *subscriber) { sub.c.ctr.setError(why) }) })
	for ctx.Err() == nil {
		if !r.reserve(ctx) {
			continue
		}
		s.mu.Lock()
		prog, snap, ok, why := s.union()
		s.mu.Unlock()
		// The source cuts nothing itself: the program's return value
		// does, in the kernel, and each capture cuts to its own.
		opts := source.Options{Interface: s.iface, Filter: prog, SnapLength: schemas.MaxSnapLength}
		src, err := m.p.opener.Open(opts)
		if err != nil && errors.Is(err, source.ErrFilter) {
			// Refused union: open accepting everything instead.
			ok, why = false, err
			opts.Filter = acceptAll(snap)
			src, err = m.p.opener.Open(opts)
		}
		if err != nil {
			r.openFailed(ctx, err)
			continue
		}
		r.opened()
		m.p.m.sharedSockets.Inc()
		s.mu.Lock()
		s.src, s.prog, s.exactFrom, s.drops = src, opts.Filter, time.Time{}, 0
		s.setUnfiltered(!ok, why)
		// Captures that joined while the source opened need their
		// program in the union.
		s.refilter()
		for _, sub := range s.subs {
			s.attach(sub)
			sub.setOpen(m)
		}
		n := len(s.subs)
		s.mu.Unlock()
		s.log.Info("capturing", "captures", n)
		err = s.readLoop(ctx)
		s.mu.Lock()
		s.pollStats()
		s.src = nil
		s.mu.Unlock()
		_ = src.Close()
		r.release()
		m.p.m.sharedSockets.Dec()
		switch {
		case err == nil:
			return
		case errors.Is(err, io.EOF):
			s.log.Info("replay ended")
			s.each(func(sub *subscriber) { sub.l.state.Store(ifEnded) })
			m.notify()
			<-ctx.Done()
			return
		case errors.Is(err, source.ErrGone):
			s.log.Info("interface gone, waiting for it")
		default:
			s.log.Warn("capture failed, reopening", "error", err)
			s.each(func(sub *subscriber) { sub.c.ctr.setError(err.Error()) })
		}
		s.each(func(sub *subscriber) { sub.l.state.Store(ifWaiting) })
		m.notify()
	}
}

// readLoop hands each packet of the source to every subscriber whose
// program accepts it, until ctx ends (nil) or the source fails. It never
// logs per packet.
func (s *shared) readLoop(ctx context.Context) error {
	m := s.m
	statsAt := time.Now()
	for n := 0; ; n++ {
		// As readLoop: the context every 64 packets and on idle polls.
		if n&63 == 0 && ctx.Err() != nil {
			return nil
		}
		data, info, err := s.src.Read()
		now := time.Now()
		s.mu.Lock()
		switch {
		case err == nil:
			s.dispatch(data, info)
		case errors.Is(err, source.ErrTimeout):
			n = -1
		default:
			// Gone or failed: what is open goes out now, the run goes
			// on when the interface is back (finish at EOF: it ended).
			for _, sub := range s.subs {
				if errors.Is(err, io.EOF) {
					sub.bat.finish(m.flushCtx)
				} else {
					sub.bat.flush(m.flushCtx)
				}
			}
			s.mu.Unlock()
			return err
		}
		for _, sub := range s.subs {
			if sub.bat.due(now) {
				sub.bat.flush(m.flushCtx)
			}
		}
		if now.Sub(statsAt) >= time.Second {
			statsAt = now
			s.pollStats()
		}
		s.mu.Unlock()
	}
}

// dispatch adds one packet to the batch of every subscriber that accepts
// it, cut to that subscriber's snap length; s.mu is held.
func (s *shared) dispatch(data []byte, info source.Info) {
	m := s.m
	for _, sub := range s.subs {
		d := data
		if !sub.exact || info.Timestamp.Before(s.exactFrom) {
			n, err := sub.vm.Run(data)
			if err != nil || n == 0 {
				continue
			}
			d = data[:min(n, len(data))]
		}
		if len(d) > sub.snap {
			d = d[:sub.snap]
		}
		sub.bat.add(m.flushCtx, d, info)
		if sub.l.state.Load() != ifCapturing {
			sub.l.state.Store(ifCapturing)
			m.notify()
		}
	}
}

// pollStats counts the kernel drops since the last poll: once for the node,
// and for every capture subscribed, since a full ring loses packets of all
// of them. s.mu is held.
func (s *shared) pollStats() {
	if s.src == nil {
		return
	}
	st, err := s.src.Stats()
	if err != nil || st.Drops <= s.drops {
		return
	}
	d := st.Drops - s.drops
	s.drops = st.Drops
	s.m.p.m.kernelDrops.Add(float64(d))
	for _, sub := range s.subs {
		sub.c.ctr.kernelDrops.Add(d)
	}
}
