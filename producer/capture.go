package producer

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/net/bpf"

	"github.com/capstream/capstream/producer/filter"
	"github.com/capstream/capstream/schemas"
)

var errSubjectMismatch = fmt.Errorf("%w: command does not match its subject or node", schemas.ErrMalformed)

// Interface loop states.
const (
	ifWaiting   int32 = iota // interface missing or not opened yet
	ifOpen                   // capturing, no packet yet
	ifCapturing              // packets seen
	ifError                  // failed for good (filter refused)
	ifEnded                  // replay reached its end
)

// manager owns the captures. Only its run goroutine touches the map; the
// interface loops report through atomics and the changed channel.
type manager struct {
	p        *Producer
	js       jetstream.JetStream
	pub      *publisher
	flushCtx context.Context // lives until the grace period ends

	// captures holds every capture whose subject holds a command: running,
	// scheduled, failed, or finished by a stop still in the stream (kept so
	// the same UID resumes its totals). A capture leaves (expire) when a
	// resync finds its subject empty: the stop expired, nothing can follow.
	captures map[schemas.Key]*capture
	// seqs keeps each capture UID's batch sequence per interface across
	// restarts of its loops, so Msg-IDs never repeat; it is dropped with
	// the capture.
	seqs    map[string]map[string]*uint64
	changed chan struct{}
	// hub holds the interfaces shared between captures (shared.go).
	hub     hub
	timers  chan schemas.Key
	resyncs chan liveCommands
	done    chan struct{}
	wg      sync.WaitGroup
	// held is len(captures), for tests and the memory bound.
	held atomic.Int64
}

// capture is one capture on this node.
type capture struct {
	key       schemas.Key
	cmd       *schemas.Command
	seq       uint64 // stream sequence of the last command applied
	cmdSub    string // the command subject
	filter    []bpf.RawInstruction
	rules     []schemas.Filter // cmd.Filters, which filter compiles
	snap      int
	subject   string
	statusSub string
	ctr       *counters
	ifaces    map[string]*ifaceLoop
	failed    string // the command cannot be captured (filter refused)
	scheduled bool   // start time ahead
	finished  bool
	ran       bool // started in this process, so Finished is worth reporting
	reported  schemas.State
	timer     *time.Timer
}

// ifaceLoop is the goroutine capturing one interface of a capture.
type ifaceLoop struct {
	ep     schemas.Endpoint
	cancel context.CancelFunc
	done   chan struct{}
	state  atomic.Int32
}

func newManager(p *Producer, js jetstream.JetStream, pub *publisher, flushCtx context.Context) *manager {
	return &manager{
		p: p, js: js, pub: pub, flushCtx: flushCtx,
		captures: map[schemas.Key]*capture{},
		seqs:     map[string]map[string]*uint64{},
		changed:  make(chan struct{}, 1),
		timers:   make(chan schemas.Key, 16),
		resyncs:  make(chan liveCommands, 1),
		done:     make(chan struct{}),
	}
}

// notify tells the manager that some interface changed state.
func (m *manager) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// run applies commands and reports status until ctx ends.
func (m *manager) run(ctx context.Context, cmds <-chan jetstream.Msg) {
	defer close(m.done)
	tick := time.NewTicker(m.p.cfg.StatusInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-cmds:
			m.handle(msg)
		case live := <-m.resyncs:
			m.resync(live)
		case k := <-m.timers:
			if c := m.captures[k]; c != nil {
				m.evaluate(c)
				m.report(c, false)
			}
		case <-m.changed:
			for _, c := range m.captures {
				m.report(c, false)
			}
			m.gauges()
		case <-tick.C:
			for _, c := range m.captures {
				m.report(c, true)
			}
			m.gauges()
		}
	}
}

func (m *manager) handle(msg jetstream.Msg) {
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	if schemas.IsDeleteMarker(msg.Headers()) {
		// The server removed the subject's last message (only on a stream
		// with subject delete markers): the subject is empty, a stop.
		if key, err := schemas.ParseCommandSubject(msg.Subject()); err == nil && key.Node == m.p.cfg.Node {
			if c := m.captures[key]; c != nil {
				m.expire(c, "subject delete marker")
			}
		}
		return
	}
	cmd, err := m.p.decodeCommand(msg)
	if err != nil {
		m.p.m.commands.WithLabelValues("invalid").Inc()
		m.p.logger.Warn("ignoring invalid command", "subject", msg.Subject(), "error", err)
		return
	}
	key := schemas.Key{Namespace: cmd.Namespace, Name: cmd.Name, Node: cmd.Node}
	old := m.captures[key]
	log := m.p.logger.With("namespace", cmd.Namespace, "capture", cmd.Name, "uid", cmd.UID, "generation", cmd.Generation)
	if cmd.Action == schemas.ActionStop {
		m.p.m.commands.WithLabelValues("stop").Inc()
		if old != nil {
			old.seq = seq
			if !old.finished {
				log.Info("stopping capture")
				m.finish(old)
				m.report(old, false)
				m.gauges()
			}
		}
		// A stop of a capture this process never ran leaves no state.
		return
	}
	// A refused command becomes a capture in Error (newCapture).
	refused := m.p.checkEndpoints(cmd)
	if refused != nil {
		m.p.m.commands.WithLabelValues("refused").Inc()
	} else {
		m.p.m.commands.WithLabelValues("capture").Inc()
	}
	if refused == nil && old != nil && old.cmd.UID == cmd.UID && sameSpec(old.cmd, cmd) && old.failed == "" && !old.finished {
		log.Info("updating capture endpoints", "endpoints", len(cmd.Endpoints))
		old.cmd, old.seq = cmd, seq
		if !old.scheduled {
			m.syncIfaces(old)
		}
		m.report(old, false)
		return
	}
	var ctr *counters
	if old != nil {
		m.stop(old)
		if old.cmd.UID == cmd.UID {
			ctr = old.ctr // same capture, new spec: totals carry on
		} else {
			if old.ran && !old.finished {
				old.finished = true
				m.report(old, false)
			}
			delete(m.seqs, old.cmd.UID) // a UID never comes back
		}
	}
	log.Info("starting capture", "endpoints", len(cmd.Endpoints), "filters", len(cmd.Filters))
	c := m.newCapture(key, cmd, ctr, refused)
	c.seq, c.cmdSub = seq, msg.Subject()
	m.captures[key] = c
	m.evaluate(c)
	m.gauges()
	m.report(c, false)
}

// sameSpec reports whether b differs from a only in endpoints, which can
// change without restarting the other interfaces.
func sameSpec(a, b *schemas.Command) bool {
	return reflect.DeepEqual(a.Filters, b.Filters) && a.SnapLength == b.SnapLength &&
		reflect.DeepEqual(a.StartTime, b.StartTime) && reflect.DeepEqual(a.EndTime, b.EndTime)
}

// newCapture builds the capture of cmd; refused, when set, is why the
// producer will not carry it out, and the capture is in Error from the start.
func (m *manager) newCapture(key schemas.Key, cmd *schemas.Command, ctr *counters, refused error) *capture {
	if ctr == nil {
		ctr = &counters{}
	}
	c := &capture{key: key, cmd: cmd, ctr: ctr, ifaces: map[string]*ifaceLoop{}, rules: cmd.Filters}
	c.snap = cmd.SnapLength
	if c.snap == 0 {
		c.snap = m.p.cfg.DefaultSnapLength
	}
	var err error
	if c.subject, err = schemas.PacketSubject(key.Namespace, key.Name, key.Node); err == nil {
		c.statusSub, err = schemas.StatusSubject(key.Namespace, key.Name, key.Node)
	}
	if err == nil {
		err = refused // the subjects are needed to report it
	}
	if err == nil {
		c.filter, err = filter.Assemble(cmd.Filters, uint32(c.snap))
	}
	if err != nil {
		c.failed = err.Error()
		c.ctr.setError(c.failed)
		m.p.logger.Warn("capture refused", "namespace", key.Namespace, "capture", key.Name, "error", err)
	}
	return c
}

// evaluate starts or finishes c according to its times.
func (m *manager) evaluate(c *capture) {
	if c.failed != "" || c.finished {
		return
	}
	now := time.Now()
	if c.cmd.EndTime != nil && !c.cmd.EndTime.After(now) {
		m.finish(c)
		return
	}
	if c.cmd.StartTime != nil && c.cmd.StartTime.After(now) {
		c.scheduled = true
		m.arm(c, c.cmd.StartTime.Sub(now))
		return
	}
	c.scheduled = false
	c.ran = true
	m.syncIfaces(c)
	if c.cmd.EndTime != nil {
		m.arm(c, c.cmd.EndTime.Sub(now))
	}
}

// arm schedules a re-evaluation of c after d.
func (m *manager) arm(c *capture, d time.Duration) {
	if c.timer != nil {
		c.timer.Stop()
	}
	key := c.key
	c.timer = time.AfterFunc(d, func() {
		select {
		case m.timers <- key:
		case <-m.done:
		}
	})
}

// syncIfaces starts loops for new endpoints and stops those no longer
// listed.
func (m *manager) syncIfaces(c *capture) {
	want := map[string]schemas.Endpoint{}
	for _, ep := range c.cmd.Endpoints {
		want[ep.Interface] = ep
	}
	for name, l := range c.ifaces {
		if ep, ok := want[name]; !ok || ep.Pod != l.ep.Pod || ep.Namespace != l.ep.Namespace {
			l.cancel()
			<-l.done
			delete(c.ifaces, name)
		}
	}
	for name, ep := range want {
		if _, ok := c.ifaces[name]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		l := &ifaceLoop{ep: ep, cancel: cancel, done: make(chan struct{})}
		c.ifaces[name] = l
		uid := c.cmd.UID // c.cmd is the manager's to replace; loops get a copy
		bySeq := m.seqs[uid]
		if bySeq == nil {
			bySeq = map[string]*uint64{}
			m.seqs[uid] = bySeq
		}
		seq := bySeq[name]
		if seq == nil {
			seq = new(uint64)
			bySeq[name] = seq
		}
		m.wg.Go(func() {
			defer close(l.done)
			m.runIface(ctx, c, uid, l, seq)
		})
	}
}

// stop ends every interface loop of c and waits for them (each flushes).
func (m *manager) stop(c *capture) {
	if c.timer != nil {
		c.timer.Stop()
	}
	for _, l := range c.ifaces {
		l.cancel()
	}
	for name, l := range c.ifaces {
		<-l.done
		delete(c.ifaces, name)
	}
}

// finish stops c for good: a stop command or its end time.
func (m *manager) finish(c *capture) {
	m.stop(c)
	c.finished = true
	c.scheduled = false
}

// resync applies what a resync found: every capture whose command is at or
// below the sequence the resync read and whose subject no longer holds a
// message gets no more commands, so it is stopped and forgotten. Captures
// applied after that sequence are left to the next resync.
func (m *manager) resync(live liveCommands) {
	for _, c := range m.captures {
		if _, ok := live.subjects[c.cmdSub]; ok || c.seq > live.lastSeq {
			continue
		}
		m.expire(c, "command gone from the stream")
	}
}

// expire handles a capture whose subject is empty: one still running
// missed its stop (it expired while the producer was away) and is
// finished now, counted as commands_total{result="expired"}; then its
// state is dropped, counters and batch sequences included.
func (m *manager) expire(c *capture, why string) {
	if !c.finished && c.failed == "" {
		m.p.m.commands.WithLabelValues("expired").Inc()
		m.p.logger.Warn("stopping capture: its stop expired before this producer saw it",
			"namespace", c.key.Namespace, "capture", c.key.Name, "uid", c.cmd.UID, "reason", why)
		m.finish(c)
		m.report(c, false)
	}
	m.stop(c) // timers and loops of a failed capture
	delete(m.captures, c.key)
	delete(m.seqs, c.cmd.UID)
	m.gauges()
}

// stopAll stops every capture at shutdown, without marking them finished
// (the next producer run picks them up again) and keeping their loops'
// last states for the final report.
func (m *manager) stopAll() {
	for _, c := range m.captures {
		if c.timer != nil {
			c.timer.Stop()
		}
		for _, l := range c.ifaces {
			l.cancel()
		}
	}
	m.wg.Wait()
}

// ifStateNames label the interfaces gauge.
var ifStateNames = [...]string{ifWaiting: "waiting", ifOpen: "open", ifCapturing: "capturing", ifError: "error", ifEnded: "ended"}

// gauges refreshes the capture and interface gauges.
func (m *manager) gauges() {
	var n [len(ifStateNames)]int
	active := 0
	for _, c := range m.captures {
		if !c.finished && c.failed == "" {
			active++
		}
		for _, l := range c.ifaces {
			n[l.state.Load()]++
		}
	}
	m.p.m.captures.Set(float64(active))
	m.held.Store(int64(len(m.captures)))
	for i, name := range ifStateNames {
		m.p.m.interfaces.WithLabelValues(name).Set(float64(n[i]))
	}
}

// state is the capture's state for status.
func (m *manager) state(c *capture) schemas.State {
	switch {
	case c.failed != "":
		return schemas.StateError
	case c.finished:
		return schemas.StateFinished
	case c.scheduled:
		return schemas.StateScheduled
	}
	ended, capturing := 0, false
	for _, l := range c.ifaces {
		switch l.state.Load() {
		case ifError:
			return schemas.StateError
		case ifEnded:
			ended++
		case ifCapturing:
			capturing = true
		}
	}
	switch {
	case len(c.ifaces) > 0 && ended == len(c.ifaces):
		return schemas.StateFinished
	case capturing:
		return schemas.StateCapturing
	}
	return schemas.StateWaitingForTraffic
}

// report publishes c's status when its state changed, or always when
// periodic (except for captures at rest: finished or failed).
func (m *manager) report(c *capture, periodic bool) {
	st := m.state(c)
	if st == c.reported && (!periodic || st == schemas.StateFinished || st == schemas.StateError) {
		return
	}
	if st == schemas.StateFinished && !c.ran && c.reported == "" {
		// Replayed stop of a capture this process never ran: nothing
		// to add to what an earlier run reported.
		c.reported = st
		return
	}
	c.reported = st
	m.publishStatus(c, st)
}

// reportAll publishes every capture's status once, at shutdown.
func (m *manager) reportAll() {
	for _, c := range m.captures {
		if c.ran || c.failed != "" {
			m.publishStatus(c, m.state(c))
		}
	}
}

func (m *manager) publishStatus(c *capture, st schemas.State) {
	s := &schemas.Status{
		Source:       schemas.SourceProducer,
		Namespace:    c.key.Namespace,
		Name:         c.key.Name,
		UID:          c.cmd.UID,
		Generation:   c.cmd.Generation,
		Node:         c.key.Node,
		State:        st,
		Packets:      c.ctr.packets.Load(),
		Bytes:        c.ctr.bytes.Load(),
		KernelDrops:  c.ctr.kernelDrops.Load(),
		PublishDrops: c.ctr.publishDrops.Load(),
		LastError:    c.ctr.lastError(),
		Time:         time.Now().UTC(),
	}
	for _, ep := range c.cmd.Endpoints {
		s.Interfaces = append(s.Interfaces, ep.Interface)
	}
	slices.Sort(s.Interfaces)
	data, err := schemas.EncodeStatus(s)
	if err == nil {
		// Fire and forget: status is cumulative, the next report
		// repairs a lost one.
		_, err = m.js.PublishAsync(c.statusSub, data)
	}
	if err != nil {
		m.p.m.statusErrors.Inc()
		m.p.logger.Debug("publish status", "subject", c.statusSub, "error", err)
	}
}
