package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capstream/capstream/schemas"
)

// captureKey names a PacketCapture; it is also the workqueue item.
type captureKey struct {
	Namespace, Name string
}

func (k captureKey) String() string { return k.Namespace + "/" + k.Name }

// published is what the router knows is the last value of one command
// subject.
type published struct {
	cmd *schemas.Command
	seq uint64
	// expires is when the server removes the message: a stop's TTL from
	// when it was stored. Zero for capture commands, which never expire,
	// and for stops published before stops had a TTL.
	expires time.Time
}

// expired reports whether the server has removed the message by now. The
// router's estimate is never later than the server's removal (it counts
// from before the publish, or from the stored timestamp), so a subject it
// still believes in is still in the stream, up to clock skew.
func (v published) expired(now time.Time) bool {
	return !v.expires.IsZero() && !now.Before(v.expires)
}

// isStop reports whether the subject holds a stop.
func (v published) isStop() bool {
	return v.cmd != nil && v.cmd.Action == schemas.ActionStop
}

// publisher owns the router's view of CAPSTREAM_COMMANDS: the last command
// per subject. It is rebuilt from the stream every time the router becomes
// leader, so that a restarted or newly elected router publishes only what
// differs from what producers already see. That is what keeps restarts and
// failovers free of duplicate and spurious stop commands.
//
// Publishes carry the expected last sequence of their subject, so if another
// router wrote in between (a deposed leader still finishing), the write is
// refused, the subject re-read and the capture reconciled again.
//
// Stops are published with a TTL (stopTTL). The publisher forgets a stop
// once its TTL has passed (expire, and load, which skips what is about to
// go), so its maps hold the stream's live subjects only and shrink back
// after captures are deleted; a deleted capture whose stops expired has
// nothing left here, so nothing republishes them.
type publisher struct {
	js      jetstream.JetStream
	metrics *metrics
	stopTTL time.Duration
	// clock is the wall clock of TTL bookkeeping: the server's, not the
	// router's injectable reconcile clock.
	clock func() time.Time

	mu sync.Mutex
	// last holds the last known command per subject.
	last map[string]published
	// nodes indexes last by capture: capture -> node -> subject.
	nodes map[captureKey]map[string]string
}

// newPublisher returns a publisher with the default stop TTL; the router
// sets its configured one before the first term.
func newPublisher(js jetstream.JetStream, m *metrics) *publisher {
	return &publisher{js: js, metrics: m, stopTTL: schemas.DefaultStopTTL, clock: time.Now,
		last: map[string]published{}, nodes: map[captureKey]map[string]string{}}
}

// load reads the last command of every subject. It must complete before
// the first sync, because sync takes a missing subject for one that was
// never published. Called again later, it catches up with changes made
// behind the router's back (a purged stream, another writer) and returns
// the captures whose commands differ from what it remembered. Stops whose
// TTL has passed are left out (the server is removing them), and a stop
// that vanished is no change: it expired, as stops do.
func (p *publisher) load(ctx context.Context) ([]captureKey, error) {
	last := map[string]published{}
	nodes := map[captureKey]map[string]string{}
	now := p.clock()
	if err := p.read(ctx, func(subject string, data []byte, seq uint64, expires time.Time) {
		k, node, v, ok := p.decode(subject, data, seq, expires)
		if ok && !v.expired(now) {
			put(last, nodes, k, node, subject, v)
		}
	}); err != nil {
		return nil, fmt.Errorf("load commands: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := map[captureKey]bool{}
	for subject, v := range last {
		if old, ok := p.last[subject]; !ok || !SameCommand(old.cmd, v.cmd) {
			if k, err := schemas.ParseCommandSubject(subject); err == nil {
				changed[captureKey{k.Namespace, k.Name}] = true
			}
		}
	}
	for subject, old := range p.last {
		if _, ok := last[subject]; !ok && !old.isStop() {
			if k, err := schemas.ParseCommandSubject(subject); err == nil {
				changed[captureKey{k.Namespace, k.Name}] = true
			}
		}
	}
	p.last, p.nodes = last, nodes
	keys := make([]captureKey, 0, len(changed))
	for k := range changed {
		keys = append(keys, k)
	}
	return keys, nil
}

// read hands fn the last message of every command subject, with when the
// server removes it (zero: never). Subject delete markers are skipped: the
// subject is empty.
func (p *publisher) read(ctx context.Context, fn func(subject string, data []byte, seq uint64, expires time.Time)) error {
	stream, err := p.js.Stream(ctx, schemas.StreamCommands)
	if err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs == 0 {
		return nil
	}
	// An ephemeral consumer with DeliverLastPerSubject hands out exactly
	// the current value of each subject; its pending count at creation
	// says when all have been seen.
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Description:       "capstream router: load last commands",
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubject:     schemas.CommandSubjectsAll,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	defer func() {
		// Best effort: the server drops it after InactiveThreshold anyway.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stream.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("fetch: %w", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			// The server's count is authoritative: commands published
			// since the consumer was created may add to it.
			pending = md.NumPending
			if schemas.IsDeleteMarker(msg.Headers()) {
				continue
			}
			fn(msg.Subject(), msg.Data(), md.Sequence.Stream, expiresAt(msg.Headers(), md.Timestamp))
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("fetch: %w", err)
		}
		if n == 0 {
			// Stops counted as pending may have expired since.
			ci, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("consumer info: %w", err)
			}
			if pending = ci.NumPending; pending > 0 {
				return errors.New("stream returned fewer commands than it holds")
			}
		}
	}
	return nil
}

// decode turns a stored command into what the publisher remembers. A body
// this build cannot decode is remembered as unknown (nil), so the subject
// is rewritten with the current desired state rather than left alone.
func (p *publisher) decode(subject string, data []byte, seq uint64, expires time.Time) (captureKey, string, published, bool) {
	key, err := schemas.ParseCommandSubject(subject)
	if err != nil {
		p.metrics.loadErrors.Inc()
		return captureKey{}, "", published{}, false
	}
	cmd, err := schemas.DecodeCommand(data)
	if err != nil {
		p.metrics.loadErrors.Inc()
		cmd = nil
	}
	return captureKey{key.Namespace, key.Name}, key.Node, published{cmd: cmd, seq: seq, expires: expires}, true
}

// expiresAt is when the server removes a message stored at ts with the
// headers h: zero when it carries no TTL.
func expiresAt(h nats.Header, ts time.Time) time.Time {
	if ttl, ok := schemas.MsgTTL(h); ok {
		return ts.Add(ttl)
	}
	return time.Time{}
}

// remember records one command read from the stream.
func (p *publisher) remember(subject string, data []byte, seq uint64, expires time.Time) {
	k, node, v, ok := p.decode(subject, data, seq, expires)
	if !ok || v.expired(p.clock()) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(k, node, subject, v)
}

func (p *publisher) setLocked(k captureKey, node, subject string, v published) {
	put(p.last, p.nodes, k, node, subject, v)
}

func put(last map[string]published, nodes map[captureKey]map[string]string, k captureKey, node, subject string, v published) {
	last[subject] = v
	m := nodes[k]
	if m == nil {
		m = map[string]string{}
		nodes[k] = m
	}
	m[node] = subject
}

// dropLocked forgets one subject, and the capture once it has none left.
func (p *publisher) dropLocked(k captureKey, node, subject string) {
	delete(p.last, subject)
	if m := p.nodes[k]; m != nil {
		delete(m, node)
		if len(m) == 0 {
			delete(p.nodes, k)
		}
	}
}

// expire forgets the stops whose TTL has passed and returns how many: the
// server has removed them, so the subjects are empty.
func (p *publisher) expire(now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for subject, v := range p.last {
		if !v.expired(now) {
			continue
		}
		if key, err := schemas.ParseCommandSubject(subject); err == nil {
			p.dropLocked(captureKey{key.Namespace, key.Name}, key.Node, subject)
			n++
		}
	}
	return n
}

// size returns the number of subjects and captures the publisher holds.
func (p *publisher) size() (subjects, captures int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.last), len(p.nodes)
}

// captures lists every capture that has a command in the stream, so the
// router can reconcile those deleted while it was not leading.
func (p *publisher) captures() []captureKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]captureKey, 0, len(p.nodes))
	for k := range p.nodes {
		keys = append(keys, k)
	}
	return keys
}

// nodesOf returns the nodes a capture has commands for, sorted.
func (p *publisher) nodesOf(k captureKey) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	nodes := make([]string, 0, len(p.nodes[k]))
	for n := range p.nodes[k] {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	return nodes
}

// sync makes the stream hold desired for capture k: a command for each
// listed node, and a stop for every other node k was told to capture on.
// Only subjects whose value differs (ignoring IssuedAt) are published. It
// returns the first error, after trying every node.
func (p *publisher) sync(ctx context.Context, k captureKey, desired map[string]*schemas.Command, now time.Time) error {
	var errs []error
	nodes := make([]string, 0, len(desired))
	for n := range desired {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, node := range nodes {
		if err := p.put(ctx, k, desired[node]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, node := range p.nodesOf(k) {
		if _, ok := desired[node]; ok {
			continue
		}
		subject, err := schemas.CommandSubject(node, k.Namespace, k.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.mu.Lock()
		prev := p.last[subject]
		p.mu.Unlock()
		if prev.isStop() {
			if prev.expires.IsZero() {
				// A stop stored before stops had a TTL: publish it again
				// with one, once, so it leaves the stream too.
				if err := p.publish(ctx, k, node, subject, StopCommand(k.Namespace, k.Name, prev.cmd.UID, prev.cmd.Generation, node, now), prev, true); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		}
		// The stop names what the node was told to run, so it cannot be
		// mistaken for a stop of a newer capture with the same name.
		uid, gen := "", int64(0)
		if prev.cmd != nil {
			uid, gen = prev.cmd.UID, prev.cmd.Generation
		} else if len(desired) > 0 {
			for _, c := range desired {
				uid, gen = c.UID, c.Generation
				break
			}
		}
		if uid == "" {
			// An undecodable command of a deleted capture: the UID of
			// what runs is unknown, so name none the producer could match.
			uid = "unknown"
		}
		if err := p.put(ctx, k, StopCommand(k.Namespace, k.Name, uid, gen, node, now)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// put publishes cmd unless the subject already holds the same state.
func (p *publisher) put(ctx context.Context, k captureKey, cmd *schemas.Command) error {
	subject, err := schemas.CommandSubject(cmd.Node, cmd.Namespace, cmd.Name)
	if err != nil {
		return fmt.Errorf("publish command: %w", err)
	}
	p.mu.Lock()
	prev, known := p.last[subject]
	p.mu.Unlock()
	if known && prev.expired(p.clock()) {
		// The server removed it (or is about to): the subject is empty.
		known = false
	}
	if known && SameCommand(prev.cmd, cmd) {
		return nil
	}
	return p.publish(ctx, k, cmd.Node, subject, cmd, prev, known)
}

// publish writes cmd to subject, expecting prev there when known. A stop
// gets the stop TTL.
func (p *publisher) publish(ctx context.Context, k captureKey, node, subject string, cmd *schemas.Command, prev published, known bool) error {
	data, err := schemas.EncodeCommand(cmd)
	if err != nil {
		return fmt.Errorf("publish command %s: %w", subject, err)
	}
	var opts []jetstream.PublishOpt
	if known {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(prev.seq))
	}
	var expires time.Time
	if cmd.Action == schemas.ActionStop {
		// Counted from before the publish, so never after the server's
		// own expiry of the stored message.
		expires = p.clock().Add(p.stopTTL)
		opts = append(opts, jetstream.WithMsgTTL(p.stopTTL))
	}
	ack, err := p.js.Publish(ctx, subject, data, opts...)
	if err != nil {
		p.metrics.publishErrors.Inc()
		if isWrongLastSequence(err) {
			// Someone else wrote the subject: learn what it holds now and
			// let the retry decide again.
			if rerr := p.refresh(ctx, k, node, subject); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return fmt.Errorf("publish command %s: %w", subject, err)
	}
	p.metrics.published.WithLabelValues(string(cmd.Action)).Inc()
	p.mu.Lock()
	p.setLocked(k, node, subject, published{cmd: cmd, seq: ack.Sequence, expires: expires})
	p.mu.Unlock()
	return nil
}

// refresh re-reads one subject's last value after a conflicting write.
func (p *publisher) refresh(ctx context.Context, k captureKey, node, subject string) error {
	stream, err := p.js.Stream(ctx, schemas.StreamCommands)
	if err != nil {
		return err
	}
	msg, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && schemas.IsDeleteMarker(msg.Header)) {
		p.mu.Lock()
		p.dropLocked(k, node, subject)
		p.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.dropLocked(k, node, subject) // remember puts it back unless it expired
	p.mu.Unlock()
	p.remember(subject, msg.Data, msg.Sequence, expiresAt(msg.Header, msg.Time))
	return nil
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
