package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/capstream/capstream/schemas"
	"github.com/nats-io/nats.go/jetstream"
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
type publisher struct {
	js      jetstream.JetStream
	metrics *metrics

	mu sync.Mutex
	// last holds the last known command per subject.
	last map[string]published
	// nodes indexes last by capture: capture -> node -> subject.
	nodes map[captureKey]map[string]string
}

func newPublisher(js jetstream.JetStream, m *metrics) *publisher {
	return &publisher{js: js, metrics: m, last: map[string]published{}, nodes: map[captureKey]map[string]string{}}
}

// load reads the last command of every subject. It must complete before
// the first sync, because sync takes a missing subject for one that was
// never published. Called again later, it catches up with changes made
// behind the router's back (a purged stream, another writer) and returns
// the captures whose commands differ from what it remembered.
func (p *publisher) load(ctx context.Context) ([]captureKey, error) {
	last := map[string]published{}
	nodes := map[captureKey]map[string]string{}
	if err := p.read(ctx, func(subject string, data []byte, seq uint64) {
		k, node, v, ok := p.decode(subject, data, seq)
		if ok {
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
	for subject := range p.last {
		if _, ok := last[subject]; !ok {
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

// read hands fn the last message of every command subject.
func (p *publisher) read(ctx context.Context, fn func(subject string, data []byte, seq uint64)) error {
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
			fn(msg.Subject(), msg.Data(), md.Sequence.Stream)
			// The server's count is authoritative: commands published
			// since the consumer was created may add to it.
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("fetch: %w", err)
		}
		if n == 0 {
			return errors.New("stream returned fewer commands than it holds")
		}
	}
	return nil
}

// decode turns a stored command into what the publisher remembers. A body
// this build cannot decode is remembered as unknown (nil), so the subject
// is rewritten with the current desired state rather than left alone.
func (p *publisher) decode(subject string, data []byte, seq uint64) (captureKey, string, published, bool) {
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
	return captureKey{key.Namespace, key.Name}, key.Node, published{cmd: cmd, seq: seq}, true
}

// remember records one command read from the stream.
func (p *publisher) remember(subject string, data []byte, seq uint64) {
	k, node, v, ok := p.decode(subject, data, seq)
	if !ok {
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
		if prev.cmd != nil && prev.cmd.Action == schemas.ActionStop {
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
	if known && SameCommand(prev.cmd, cmd) {
		return nil
	}
	data, err := schemas.EncodeCommand(cmd)
	if err != nil {
		return fmt.Errorf("publish command %s: %w", subject, err)
	}
	var opts []jetstream.PublishOpt
	if known {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(prev.seq))
	}
	ack, err := p.js.Publish(ctx, subject, data, opts...)
	if err != nil {
		p.metrics.publishErrors.Inc()
		if isWrongLastSequence(err) {
			// Someone else wrote the subject: learn what it holds now and
			// let the retry decide again.
			if rerr := p.refresh(ctx, k, cmd.Node, subject); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return fmt.Errorf("publish command %s: %w", subject, err)
	}
	p.metrics.published.WithLabelValues(string(cmd.Action)).Inc()
	p.mu.Lock()
	p.setLocked(k, cmd.Node, subject, published{cmd: cmd, seq: ack.Sequence})
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
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		p.mu.Lock()
		delete(p.last, subject)
		delete(p.nodes[k], node)
		p.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	p.remember(subject, msg.Data, msg.Sequence)
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
