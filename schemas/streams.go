package schemas

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Durable consumer names. They are part of the contract because the packets
// stream uses interest retention: a batch is kept until every durable
// consumer bound to it has acked, so a renamed consumer would hold data
// forever (until MaxAge) while its successor starts empty.
const (
	// ConsumerPcapSink is the pcap sink's durable on StreamPackets.
	ConsumerPcapSink = "capstream-sink-pcap"
	// ConsumerFlowSink is the flow sink's durable on StreamPackets.
	ConsumerFlowSink = "capstream-sink-flows"
	// ConsumerRouterStatus is the router's durable on StreamStatus.
	ConsumerRouterStatus = "capstream-router-status"
)

// Ack waits and in-flight bounds of the sink consumers, exported so the sinks
// can check their own settings against them.
const (
	// PcapSinkAckWait is how long the server waits for the pcap sink's ack
	// before redelivering. The sink acks a batch only once the object that
	// holds it is complete, which happens on size or age rotation, so this
	// must exceed the sink's maximum object age plus the upload time. A sink
	// configured with a longer age must extend the deadline with InProgress.
	PcapSinkAckWait = 2 * time.Minute
	// FlowSinkAckWait is the flow sink's ack wait: it acks after inserting the
	// rows a batch contributed to, which is bounded by its flush interval.
	FlowSinkAckWait = 2 * time.Minute
	// SinkMaxAckPending bounds the unacked batches per sink. Every batch in
	// an open pcap object stays unacked until the object completes, so with
	// many captures, interfaces and small (time-flushed) batches the number
	// is large; 20000 covers e.g. 200 open objects of 100 batches each.
	SinkMaxAckPending = 20000
	// RouterStatusAckWait is the router's ack wait: it acks after writing the
	// PacketCapture status, one API call.
	RouterStatusAckWait = 30 * time.Second
)

// PublishRetryWindow bounds how long after its first attempt a producer
// may publish a batch again (after an ack timeout, or no responders while
// a stream leader is elected). It lies within the packets stream's default
// duplicates window (2 min), so a retry of a batch that was stored after
// all is dropped by the server as a duplicate. Sinks wait as long before
// they count a gap in a run's batches as lost: a retried batch lands in
// the stream after batches published after it, so a gap can still fill.
const PublishRetryWindow = time.Minute

// Retention of the small streams.
const (
	// StatusMaxAge drops status reports of captures nobody is looking at.
	StatusMaxAge = 24 * time.Hour
	// StatusMaxMsgsPerSubject keeps a few reports per (capture, node); two
	// sources (producer, pcap sink) share a subject, so one would not do.
	StatusMaxMsgsPerSubject = 8
)

// Lifetime of stop commands in StreamCommands.
const (
	// DefaultStopTTL is how long a stop command stays in StreamCommands by
	// default: far longer than a producer is normally disconnected, so
	// every producer sees the stop from the stream; a producer away for
	// longer finds the subject empty when it resyncs and stops then.
	DefaultStopTTL = 24 * time.Hour
	// MinMsgTTL is the server's per-message TTL granularity: TTLs are
	// whole seconds and at least one.
	MinMsgTTL = time.Second
)

// CommandsStream returns the configuration of StreamCommands.
//
// It is a last-value store, like a KV bucket: one message per subject, i.e.
// per (node, capture), holding that capture's whole desired state on that
// node. Limits retention with no MaxAge keeps capture commands forever, so
// a producer that restarts replays one message per capture and is back in
// the desired state. Stop commands carry a per-message TTL (AllowMsgTTL,
// nats-server 2.11+), so the stops of deleted captures leave the stream
// once every producer can have seen them; a subject with no message means
// "nothing to capture", exactly like a stop. No subject delete markers are
// configured: producers detect an emptied subject by resyncing, and a
// marker would only be one more message to load. AllowMsgTTL can be turned
// on in place on a stream created without it (and never off again).
// Rollups are allowed so the router can reset a subject, and deletes and
// purges so it can clean up after a stopped capture.
func CommandsStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              StreamCommands,
		Description:       "capstream desired state: last command per (node, capture)",
		Subjects:          []string{CommandSubjectsAll},
		Retention:         jetstream.LimitsPolicy,
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		AllowRollup:       true,
		DenyDelete:        false,
		DenyPurge:         false,
		MaxMsgSize:        maxJSONBytes,
		AllowMsgTTL:       true,
	}
}

// MsgTTL returns the per-message TTL a stored message carries in its
// Nats-TTL header, and false when it has none ("never", absent or
// unparsable: the server then keeps the message). The server accepts a Go
// duration or a number of seconds.
func MsgTTL(h nats.Header) (time.Duration, bool) {
	v := h.Get(jetstream.MsgTTLHeader)
	if v == "" {
		return 0, false
	}
	if d, err := time.ParseDuration(v); err == nil {
		if d < MinMsgTTL {
			return 0, false
		}
		return d, true
	}
	n, ok := parseDecimal(v, 1<<33)
	if !ok || n == 0 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// IsDeleteMarker reports whether a message is a subject delete marker the
// server leaves when a subject's last message is removed by age or TTL (only
// on streams with SubjectDeleteMarkerTTL). It has no body; for
// StreamCommands it means the subject is empty, i.e. a stop.
func IsDeleteMarker(h nats.Header) bool {
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

// Replication of the streams in a JetStream cluster.
const (
	// DefaultReplicas is every stream's default replication factor: one
	// copy, which is all a single server can hold.
	DefaultReplicas = 1
	// MaxReplicas is the largest replication factor the server accepts.
	MaxReplicas = 5
	// jsErrReplicasNotSupported is the server's API error code for
	// Replicas above 1 on a server that is not in a cluster.
	jsErrReplicasNotSupported jetstream.ErrorCode = 10074
)

// CheckReplicas reports a replication factor the server would refuse. An
// even factor is accepted but buys nothing over the odd one below it: a
// raft group needs a majority, so R2 stops with one member gone, like R1,
// and R4 survives one loss, like R3. Above 1 the streams need a JetStream
// cluster of at least that many servers.
func CheckReplicas(n int) error {
	if n < 1 || n > MaxReplicas {
		return fmt.Errorf("replicas %d: must be 1 to %d (3 survives one server lost, 5 two)", n, MaxReplicas)
	}
	return nil
}

// Replicated returns cfg with n replicas, for the small streams whose
// configuration functions take no settings; n must pass CheckReplicas.
func Replicated(cfg jetstream.StreamConfig, n int) jetstream.StreamConfig {
	cfg.Replicas = n
	return cfg
}

// PacketsStreamLimits bounds StreamPackets. The values come from the
// deployment's configuration; schemas only provides defaults.
type PacketsStreamLimits struct {
	// MaxBytes bounds the stored batches, in bytes. When the sinks fall
	// behind by this much, publishes are refused and producers drop.
	MaxBytes int64
	// MaxAge drops batches that no sink acked in time, so a dead sink does
	// not wedge the stream forever.
	MaxAge time.Duration
	// Replicas is the stream's replication factor in a JetStream cluster:
	// 1 (the default) on a single server, 3 to survive the loss of one
	// server (a stream-leader change loses no stored batch), 5 for two.
	// Above 1 it needs a cluster of at least that many servers.
	Replicas int
	// Duplicates is the window in which a repeated Nats-Msg-Id is dropped.
	// It must cover a producer's publish retries.
	Duplicates time.Duration
	// Partitions is the number of partitions the stream's subject
	// transform spreads the batches over (see PacketsTransform): the most
	// sink replicas of one kind that share the work.
	Partitions int
}

// DefaultPacketsStreamLimits returns limits for one small node: 1 GiB or one
// hour of backlog, no replication, and the server's default 2-minute
// de-duplication window.
func DefaultPacketsStreamLimits() PacketsStreamLimits {
	return PacketsStreamLimits{
		MaxBytes:   1 << 30,
		MaxAge:     time.Hour,
		Replicas:   1,
		Duplicates: 2 * time.Minute,
		Partitions: DefaultPacketPartitions,
	}
}

// Validate reports limits the server would reject or that would make the
// stream unbounded. All problems are returned, joined.
func (l PacketsStreamLimits) Validate() error {
	var errs []error
	if l.MaxBytes < MaxBatchBytes {
		errs = append(errs, fmt.Errorf("packets stream max bytes %d: must hold at least one batch (%d)", l.MaxBytes, MaxBatchBytes))
	}
	if l.MaxAge <= 0 {
		errs = append(errs, fmt.Errorf("packets stream max age %s: must be positive", l.MaxAge))
	}
	if err := CheckReplicas(l.Replicas); err != nil {
		errs = append(errs, fmt.Errorf("packets stream %w", err))
	}
	if l.Duplicates <= 0 || l.Duplicates > l.MaxAge {
		errs = append(errs, fmt.Errorf("packets stream duplicates window %s: must be positive and at most max age", l.Duplicates))
	}
	if err := CheckPartitions(l.Partitions); err != nil {
		errs = append(errs, fmt.Errorf("packets stream %w", err))
	}
	return errors.Join(errs...)
}

// PacketsStream returns the configuration of StreamPackets.
//
// Interest retention deletes a batch as soon as every sink consumer has
// acked it, so the stream is a buffer, not an archive. Note that a batch
// published while no consumer exists is dropped at once: sinks create their
// durables before producers start sending.
//
// Discard is DiscardNew: when MaxBytes is reached the server refuses new
// batches, which the producer sees and counts as drops. DiscardOld would
// instead delete the oldest batches, which are unacked by definition and may
// sit in an open pcap object, silently losing packets that were already
// accepted. MaxAge still ages out batches of a sink that is gone for good.
// Batches held in open pcap objects count against MaxBytes, so the sum of
// the pcap sink's open object sizes must stay well below it.
//
// MaxMsgSize is MaxBatchBytes, headers included (the server counts both),
// so an oversized batch is refused instead of being stored.
func PacketsStream(l PacketsStreamLimits) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamPackets,
		Description: "capstream packet batches, kept until both sinks ack",
		Subjects:    []string{PacketSubjectsAll},
		// Stored subjects carry their partition (PacketsTransform).
		SubjectTransform: PacketsTransform(l.Partitions),
		Retention:        jetstream.InterestPolicy,
		MaxBytes:         l.MaxBytes,
		MaxAge:           l.MaxAge,
		Discard:          jetstream.DiscardNew,
		MaxMsgSize:       MaxBatchBytes,
		Storage:          jetstream.FileStorage,
		Replicas:         l.Replicas,
		Duplicates:       l.Duplicates,
		// Packet payloads compress poorly and the stream is on the hot path.
		Compression: jetstream.NoCompression,
	}
}

// StatusStream returns the configuration of StreamStatus: a few recent
// reports per (capture, node) for a day. Status is cumulative (every report
// carries totals), so old reports are worthless once a newer one is read.
func StatusStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              StreamStatus,
		Description:       "capstream status reports per (capture, node)",
		Subjects:          []string{StatusSubjectsAll},
		Retention:         jetstream.LimitsPolicy,
		MaxMsgsPerSubject: StatusMaxMsgsPerSubject,
		MaxAge:            StatusMaxAge,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		MaxMsgSize:        maxJSONBytes,
	}
}

// PcapSinkConsumer returns the pcap sink's durable pull consumer on
// StreamPackets. Acks are explicit and sent only once the object holding the
// batch is durable (see PcapSinkAckWait). MaxDeliver is unlimited because a
// batch must never be dropped by the server while the sink is merely slow or
// S3 is down; a payload that can never be stored is Termed by the sink.
func PcapSinkConsumer() jetstream.ConsumerConfig {
	return sinkConsumer(ConsumerPcapSink, "capstream pcap sink: rolling pcap objects", PcapSinkAckWait)
}

// FlowSinkConsumer returns the flow sink's durable pull consumer on
// StreamPackets, with the same delivery rules as PcapSinkConsumer.
func FlowSinkConsumer() jetstream.ConsumerConfig {
	return sinkConsumer(ConsumerFlowSink, "capstream flow sink: flow records", FlowSinkAckWait)
}

func sinkConsumer(name, desc string, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Name:          name,
		Durable:       name,
		Description:   desc,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: SinkMaxAckPending,
		FilterSubject: PacketSubjectsAll,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// ProducerConsumer returns the configuration of the ordered (ephemeral)
// consumer a producer reads its node's commands with.
//
// DeliverLastPerSubject replays the current command of every capture on the
// node, then follows new ones, so each (re)start rebuilds the full desired
// state from the stream alone. An ordered consumer fits because the producer
// needs no server-side ack state: a durable would resume after its ack floor
// and never show a restarted producer the captures it already acked, and the
// client recreates an ordered consumer on gaps, resuming where it left off.
func ProducerConsumer(node string) (jetstream.OrderedConsumerConfig, error) {
	filter, err := CommandFilterForNode(node)
	if err != nil {
		return jetstream.OrderedConsumerConfig{}, fmt.Errorf("producer consumer: %w", err)
	}
	return jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		ReplayPolicy:   jetstream.ReplayInstantPolicy,
	}, nil
}

// RouterStatusConsumer returns the router's durable pull consumer on
// StreamStatus.
//
// It delivers all retained reports rather than the last per subject: the
// producer and the pcap sink of one (capture, node) publish on the same
// subject, so "last per subject" would hide one of them, while "all" is
// bounded by StatusMaxMsgsPerSubject and StatusMaxAge and, since reports are
// cumulative, applying them in order ends at the latest state of each
// source. Being durable, a restarted router resumes after what it already
// wrote to the PacketCapture status instead of replaying a day of reports.
func RouterStatusConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Name:          ConsumerRouterStatus,
		Durable:       ConsumerRouterStatus,
		Description:   "capstream router: PacketCapture status write-back",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       RouterStatusAckWait,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
		FilterSubject: StatusSubjectsAll,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// EnsureStreams creates the three streams or updates them to the
// configurations above, all three with l.Replicas replicas (the router
// sets each stream's replicas on its own). It is idempotent, so every
// process may call it at start-up; it creates no consumer because each
// durable belongs to the process that acks on it. Changing Replicas of an
// existing stream is an update the server carries out in place.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, l PacketsStreamLimits) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("ensure streams: %w", err)
	}
	for _, cfg := range []jetstream.StreamConfig{Replicated(CommandsStream(), l.Replicas), PacketsStream(l), Replicated(StatusStream(), l.Replicas)} {
		if err := EnsureStream(ctx, js, cfg); err != nil {
			return err
		}
	}
	return nil
}

// EnsureStream creates one stream or updates it to cfg. A server that is
// not in a cluster refuses Replicas above 1; the error then says so.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrReplicasNotSupported:
		return fmt.Errorf("ensure stream %s: %d replicas need a JetStream cluster of at least %d servers: %w", cfg.Name, cfg.Replicas, cfg.Replicas, err)
	}
	return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
}
