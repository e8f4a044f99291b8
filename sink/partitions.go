package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/capstream/capstream/schemas"
)

// pulled is one message a partition's pump handed to the loop.
type pulled struct {
	msg  jetstream.Msg
	part int
}

// pumpState is a running pump: one partition's pull.
type pumpState struct {
	// drain asks the pump to stop pulling and hand over what the client
	// has buffered.
	drain context.CancelFunc
	// held: the pump delivered a batch, so this replica is (or was) the
	// partition's pinned client.
	held bool
	// draining: drain was called.
	draining bool
}

// share is one sink replica's part of the packet partitions (see
// schemas.PacketsTransform). Each partition has its own durable consumer
// with a pinned-client priority group: the server delivers a partition to
// one replica at a time, which keeps each interface's batches in stream
// order in one replica. share decides which partitions this replica pulls
// on: the replicas announce themselves on schemas.SinkGroupSubject every
// round, and with the live ones sorted by ID, partition p is the
// (p mod replicas)-th one's. A replica pulls on its own partitions and
// releases the others: it stops pulling, hands what the client had
// buffered to the sink, and unpins the consumer so that the partition's
// replica takes it at once. The server's pin is what makes a partition
// one replica's at a time; the assignment only spreads them, so replicas
// that briefly disagree on who is live cost a wait, never an overlap.
//
// Everything but heard (the NATS subscription's goroutine) runs on the
// runner's loop goroutine.
type share struct {
	log    *slog.Logger
	m      *Metrics
	nc     *nats.Conn
	stream jetstream.Stream
	cons   []jetstream.Consumer
	pumps  []*pumpState
	gaps   []gaps
	// settle is when the first round's announcements are in: no pump
	// starts before, so a replica that joins does not take partitions
	// for the moment it knows of no other. next is when the loop runs
	// the next round.
	settle, next time.Time
	id           string
	subject      string
	interval     time.Duration
	maxBytes     int

	out   chan pulled
	ended chan int
	stop  chan struct{}
	// joined tells the loop that a replica it did not know announced
	// itself, so it answers at once rather than at its next round: a
	// replica that starts knows the others within its settle time.
	joined chan struct{}
	wg     sync.WaitGroup

	mu sync.Mutex
	// members are the fellow replicas, with when each was last heard.
	members map[string]time.Time
}

// assigned reports whether partition p is the me-th of n live replicas'.
func assigned(p, me, n int) bool { return p%n == me }

// maxMembers bounds the replicas a share remembers.
const maxMembers = 1024

func newShare(log *slog.Logger, m *Metrics, nc *nats.Conn, b *bound, source schemas.Source, cfg ConsumerConfig) *share {
	n := len(b.cons)
	s := &share{
		log: log, m: m, nc: nc, stream: b.stream, cons: b.cons,
		pumps:    make([]*pumpState, n),
		gaps:     make([]gaps, n),
		id:       nuid.Next(),
		subject:  schemas.SinkGroupSubject(source),
		interval: cfg.RebalanceInterval,
		// The client buffers up to maxBytes per pump: together they stay
		// within pullMaxBytes.
		maxBytes: max(cfg.PullMaxBytes/n, 1<<20),
		out:      make(chan pulled, 4),
		ended:    make(chan int, n),
		stop:     make(chan struct{}),
		joined:   make(chan struct{}, 1),
		members:  map[string]time.Time{},
	}
	for i := range s.gaps {
		s.gaps[i].wait = cfg.LostAfter
	}
	m.Partitions.Set(float64(n))
	return s
}

// heard takes a fellow replica's announcement. The subject is the sink's
// own (only its identity may publish there), but the body is checked all
// the same, and only a replica it starts to remember (at most maxMembers)
// makes it answer, so a flood of new IDs costs no flood of announcements.
func (s *share) heard(msg *nats.Msg) {
	if len(msg.Data) > schemas.MaxSinkMemberBytes {
		return
	}
	var sm schemas.SinkMember
	if json.Unmarshal(msg.Data, &sm) != nil || sm.Validate() != nil || sm.ID == s.id {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, known := s.members[sm.ID]
	if !known && len(s.members) >= maxMembers {
		return
	}
	s.members[sm.ID] = time.Now()
	if !known {
		select {
		case s.joined <- struct{}{}:
		default:
		}
	}
}

// live returns the IDs of the replicas heard from in the last three
// rounds and this one's, sorted, forgetting the others.
func (s *share) live(now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := []string{s.id}
	for id, at := range s.members {
		if now.Sub(at) > 3*s.interval {
			delete(s.members, id)
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *share) held() int {
	n := 0
	for _, p := range s.pumps {
		if p != nil && p.held && !p.draining {
			n++
		}
	}
	return n
}

func (s *share) running() int {
	n := 0
	for _, p := range s.pumps {
		if p != nil {
			n++
		}
	}
	return n
}

// announce tells the other replicas of this one.
func (s *share) announce() {
	if b, err := json.Marshal(schemas.SinkMember{ID: s.id, Held: s.held()}); err == nil {
		if err := s.nc.Publish(s.subject, b); err != nil {
			s.log.Debug("announce to the other replicas", "error", err)
		}
	}
}

// rebalance is one round: announce this replica, then pull on the
// partitions assigned to it and release the others. The first round only
// announces: the others answer (joined) within the settle time, the
// interval but at most a second, and the partitions are shared out after.
func (s *share) rebalance(now time.Time) {
	s.announce()
	ids := s.live(now)
	s.m.Members.Set(float64(len(ids)))
	if s.settle.IsZero() {
		s.settle = now.Add(min(s.interval, time.Second))
	}
	if now.Before(s.settle) {
		s.next = s.settle
		return
	}
	s.next = now.Add(s.interval)
	me := slices.Index(ids, s.id)
	for p, ps := range s.pumps {
		mine := assigned(p, me, len(ids))
		switch {
		case mine && ps == nil:
			s.start(p)
		case !mine && ps != nil && !ps.draining:
			if ps.held {
				s.log.Info("releasing a partition to another replica", "partition", p, "replicas", len(ids))
				s.m.Released.Inc()
			}
			s.drain(p)
		}
	}
	s.m.PartitionsHeld.Set(float64(s.held()))
}

// start runs a pump on partition p.
func (s *share) start(p int) {
	ctx, cancel := context.WithCancel(context.Background())
	s.pumps[p] = &pumpState{drain: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := pump(ctx, s.cons[p], s.maxBytes, p, s.out, s.stop); err != nil {
			s.log.Warn("pull from partition", "partition", p, "error", err)
		}
		select {
		case s.ended <- p:
		case <-s.stop:
		}
	}()
}

// drain asks partition p's pump to stop; ended follows.
func (s *share) drain(p int) {
	if ps := s.pumps[p]; ps != nil && !ps.draining {
		ps.draining = true
		ps.drain()
	}
}

// drainAll asks every pump to stop, at shutdown.
func (s *share) drainAll() {
	for p := range s.pumps {
		s.drain(p)
	}
}

// delivered marks partition p held, since its pump delivered a batch.
func (s *share) delivered(p int) {
	if ps := s.pumps[p]; ps != nil {
		ps.held = true
	}
}

// onEnded takes the end of partition p's pump. It reports whether the
// pump ended on its own (the connection closed) rather than by drain.
// A partition this replica held is unpinned, so that another takes it
// now rather than after schemas.SinkPinnedTTL, and its gap tracking starts
// over: the deliveries of the partition go elsewhere from now on.
func (s *share) onEnded(p int) (unasked bool) {
	ps := s.pumps[p]
	s.pumps[p] = nil
	if ps == nil {
		return false
	}
	if ps.held {
		s.gaps[p] = gaps{wait: s.gaps[p].wait}
		name := s.cons[p].CachedInfo().Name
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.stream.UnpinConsumer(ctx, name, schemas.SinkPriorityGroup); err != nil {
				s.log.Debug("unpin partition", "partition", p, "error", err)
			}
		}()
	}
	return !ps.draining
}

// close stops the pumps for good and waits for them.
func (s *share) close() {
	close(s.stop)
	for _, ps := range s.pumps {
		if ps != nil {
			ps.drain()
		}
	}
	s.wg.Wait()
}

// pump reads partition part of the consumer into out until ctx ends, then
// drains what the client already buffered into out. maxBytes bounds the
// client's buffer. It returns when the iterator is closed, or at once when
// stop is closed.
func pump(ctx context.Context, c jetstream.Consumer, maxBytes, part int, out chan<- pulled, stop <-chan struct{}) error {
	// A pinned replica pulls at least three times per pinned TTL, so an
	// idle one keeps its partition.
	// (The client wants a heartbeat of at least 500ms and at most half
	// the expiry.)
	expiry := min(schemas.SinkPullExpiry, max(c.CachedInfo().Config.PinnedTTL/3, time.Second))
	it, err := c.Messages(jetstream.PullMaxBytes(maxBytes), jetstream.PullExpiry(expiry),
		jetstream.PullHeartbeat(max(expiry/4, 500*time.Millisecond)), jetstream.PullPriorityGroup(schemas.SinkPriorityGroup))
	if err != nil {
		return fmt.Errorf("pull messages: %w", err)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			it.Drain()
		case <-done:
		}
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			// Missing heartbeats, a pin taken over: the iterator goes on.
			continue
		}
		select {
		case out <- pulled{msg: msg, part: part}:
		case <-stop:
			it.Stop()
			return nil
		}
	}
}

// bound is a sink's consumers, one per partition of the packets stream.
type bound struct {
	stream jetstream.Stream
	cons   []jetstream.Consumer
}

// bindPartitions reads the number of partitions from the packets stream,
// creates or updates one consumer per partition from the template cc, and
// deletes the template's unpartitioned durable of an older capstream when
// it holds nothing (its filter would take every batch a second time); when
// it still holds batches it is an error: drain it with the older sink
// first.
func bindPartitions(ctx context.Context, js jetstream.JetStream, cc jetstream.ConsumerConfig, ackWait time.Duration) (*bound, error) {
	st, err := js.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		return nil, fmt.Errorf("packets stream: %w", err)
	}
	n, err := schemas.PacketPartitions(st.CachedInfo().Config)
	if err != nil {
		return nil, fmt.Errorf("%w (is the router older than the sink?)", err)
	}
	if old, err := st.Consumer(ctx, cc.Durable); err == nil {
		info := old.CachedInfo()
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return nil, fmt.Errorf("the unpartitioned consumer %s of an older capstream still holds %d batches (%d unacked): let an older sink drain it, or delete it with `nats consumer rm %s %s`, losing them",
				cc.Durable, info.NumPending+uint64(info.NumAckPending), info.NumAckPending, schemas.StreamPackets, cc.Durable)
		}
		if err := st.DeleteConsumer(ctx, cc.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("delete the unpartitioned consumer %s: %w", cc.Durable, err)
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("look up the unpartitioned consumer %s: %w", cc.Durable, err)
	}
	b := &bound{stream: st}
	for p := range n {
		c, err := bindOne(ctx, js, schemas.SinkPartitionConsumer(cc, p), ackWait)
		if err != nil {
			return nil, err
		}
		b.cons = append(b.cons, c)
	}
	return b, nil
}

// Backlog is what a sink's consumers (one per partition) have left,
// summed.
type Backlog struct {
	Pending, AckPending, Redelivered uint64
}

// BacklogOf reads the backlog of the sink's durable: the consumers of every
// partition of the packets stream.
func BacklogOf(ctx context.Context, js jetstream.JetStream, durable string) (Backlog, error) {
	var b Backlog
	st, err := js.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		return b, err
	}
	n, err := schemas.PacketPartitions(st.CachedInfo().Config)
	if err != nil {
		return b, err
	}
	for p := range n {
		c, err := st.Consumer(ctx, schemas.SinkPartitionName(durable, p))
		if err != nil {
			return b, err
		}
		info := c.CachedInfo()
		b.Pending += info.NumPending
		b.AckPending += uint64(info.NumAckPending)
		b.Redelivered += uint64(info.NumRedelivered)
	}
	return b, nil
}

// Drained returns nil once the sink's consumers have nothing pending or
// unacked (with noRedelivered, nothing redelivered either), else what is
// left. Tests and the bench use it to wait until a sink has stored
// everything.
func Drained(ctx context.Context, js jetstream.JetStream, durable string, noRedelivered bool) error {
	b, err := BacklogOf(ctx, js, durable)
	if err != nil {
		return err
	}
	if b.Pending != 0 || b.AckPending != 0 || (noRedelivered && b.Redelivered != 0) {
		return fmt.Errorf("%s: %d pending, %d unacked, %d redelivered", durable, b.Pending, b.AckPending, b.Redelivered)
	}
	return nil
}
