package schemas

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Partitions of StreamPackets. The stream's subject transform appends a
// partition number to every batch subject as it is stored, computed by the
// server from the (namespace, capture, node) tokens:
//
//	capstream.pkt.<ns>.<name>.<node>  ->  capstream.pkt.<ns>.<name>.<node>.<p>
//
// so all the batches of one capture on one node, and hence of each of its
// interfaces, land in one partition. Each sink has one durable consumer per
// partition (SinkPartitionConsumer), filtered on it, with a pinned-client
// priority group: of the sink replicas pulling from a partition the server
// delivers to one at a time, which keeps each interface's batches in stream
// order in one replica. The producers publish to the untransformed subject
// and need not know the number of partitions.
const (
	// DefaultPacketPartitions is the number of partitions of a stream the
	// router creates when none is configured: enough to spread the work of
	// a handful of sink replicas. It is prime on purpose: the server's
	// partition is FNV-1a modulo the count, and modulo a power of two that
	// depends only on the low bits of each character, so names that
	// differ in one digit (node-1, node-9) would share a partition.
	DefaultPacketPartitions = 7
	// MaxPacketPartitions bounds the partitions: every partition is one
	// durable consumer per sink (a Raft group each in a JetStream
	// cluster), and the sinks' NATS permissions list them one by one.
	MaxPacketPartitions = 16
	// SinkPriorityGroup is the priority group of every partition consumer.
	SinkPriorityGroup = "sinks"
	// SinkPinnedTTL is how long a partition stays pinned to a sink replica
	// that sends no pull request: the failover time when a replica dies.
	// Replicas pull at least every SinkPullExpiry.
	SinkPinnedTTL = 30 * time.Second
	// SinkPullExpiry is the longest a sink's pull request waits; it must
	// stay well under SinkPinnedTTL so an idle but live replica keeps its
	// partitions.
	SinkPullExpiry = 10 * time.Second
)

// CheckPartitions validates a number of packet partitions.
func CheckPartitions(n int) error {
	if n < 1 || n > MaxPacketPartitions {
		return fmt.Errorf("partitions %d: want 1 to %d", n, MaxPacketPartitions)
	}
	return nil
}

// PacketsTransform returns the subject transform of StreamPackets with n
// partitions.
func PacketsTransform(n int) *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{
		Source:      packetPrefix + "*.*.*",
		Destination: packetPrefix + "{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{partition(" + strconv.Itoa(n) + ",1,2,3)}}",
	}
}

// ErrNotPartitioned says StreamPackets has no partition transform (a
// stream created by an older router, or by hand without it).
var ErrNotPartitioned = errors.New("the packets stream has no partition transform")

// PacketPartitions returns the number of partitions of a packets stream
// from its configuration: the n of PacketsTransform(n), which is the only
// transform the sinks accept, so a stream configured by hand must use it
// exactly.
func PacketPartitions(cfg jetstream.StreamConfig) (int, error) {
	t := cfg.SubjectTransform
	if t == nil {
		return 0, ErrNotPartitioned
	}
	const open, closing = "{{partition(", ",1,2,3)}}"
	i := strings.Index(t.Destination, open)
	j := strings.LastIndex(t.Destination, closing)
	if i < 0 || j < i {
		return 0, fmt.Errorf("%w: transform %q -> %q", ErrNotPartitioned, t.Source, t.Destination)
	}
	n, err := strconv.Atoi(t.Destination[i+len(open) : j])
	if err != nil || CheckPartitions(n) != nil {
		return 0, fmt.Errorf("packets stream transform %q: partition count out of range 1 to %d", t.Destination, MaxPacketPartitions)
	}
	if want := PacketsTransform(n); *t != *want {
		return 0, fmt.Errorf("packets stream transform %q -> %q: want %q -> %q", t.Source, t.Destination, want.Source, want.Destination)
	}
	return n, nil
}

// PartitionFilter is the subject filter of partition p.
func PartitionFilter(p int) string { return packetPrefix + "*.*.*." + strconv.Itoa(p) }

// SinkPartitionName is the durable name of a sink's consumer of partition
// p: the sink's durable name (ConsumerPcapSink, ConsumerFlowSink) and -p<p>.
func SinkPartitionName(durable string, p int) string { return durable + "-p" + strconv.Itoa(p) }

// SinkPartitionConsumer returns the consumer of partition p built from a
// sink's consumer template (PcapSinkConsumer, FlowSinkConsumer): filtered on
// the partition, with the pinned-client priority group.
func SinkPartitionConsumer(template jetstream.ConsumerConfig, p int) jetstream.ConsumerConfig {
	c := template
	c.Name = SinkPartitionName(template.Durable, p)
	c.Durable = c.Name
	c.Description = fmt.Sprintf("%s, partition %d", template.Description, p)
	c.FilterSubject = PartitionFilter(p)
	c.FilterSubjects = nil
	c.PriorityGroups = []string{SinkPriorityGroup}
	c.PriorityPolicy = jetstream.PriorityPolicyPinned
	c.PinnedTTL = SinkPinnedTTL
	return c
}

// SinkGroupSubject is where the replicas of one sink announce themselves to
// each other, so each knows how many share the partitions (core NATS, not
// stored).
func SinkGroupSubject(source Source) string { return "capstream.sinkgroup." + string(source) }

// SinkMember is a sink replica's announcement on SinkGroupSubject.
type SinkMember struct {
	// ID identifies the replica's process: a random token chosen at start.
	ID string `json:"id"`
	// Held is the number of partitions the replica holds.
	Held int `json:"held"`
}

// MaxSinkMemberBytes bounds an announcement; a longer one is ignored.
const MaxSinkMemberBytes = 256

// Validate checks an announcement received from the bus.
func (m SinkMember) Validate() error {
	if m.ID == "" || len(m.ID) > 64 || strings.ContainsAny(m.ID, " .*>\t\r\n") {
		return fmt.Errorf("sink member id %q: want 1 to 64 characters with no space, dot or wildcard", m.ID)
	}
	if m.Held < 0 || m.Held > MaxPacketPartitions {
		return fmt.Errorf("sink member held %d: want 0 to %d", m.Held, MaxPacketPartitions)
	}
	return nil
}
