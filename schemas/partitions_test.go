package schemas

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestPacketPartitionsRoundTrip(t *testing.T) {
	for n := 1; n <= MaxPacketPartitions; n++ {
		l := DefaultPacketsStreamLimits()
		l.Partitions = n
		if err := l.Validate(); err != nil {
			t.Fatalf("%d partitions: %v", n, err)
		}
		got, err := PacketPartitions(PacketsStream(l))
		if err != nil || got != n {
			t.Fatalf("PacketPartitions(PacketsStream(%d partitions)) = %d, %v", n, got, err)
		}
	}
	for _, n := range []int{0, -1, MaxPacketPartitions + 1} {
		l := DefaultPacketsStreamLimits()
		l.Partitions = n
		if err := l.Validate(); err == nil {
			t.Errorf("%d partitions: valid", n)
		}
	}
}

// A stream whose transform is not exactly PacketsTransform(n) is refused:
// a sink binding its consumers on a guess would miss or double batches.
func TestPacketPartitionsRefusesOtherTransforms(t *testing.T) {
	good := PacketsTransform(4)
	for name, tr := range map[string]*jetstream.SubjectTransformConfig{
		"none":         nil,
		"other source": {Source: "capstream.pkt.>", Destination: good.Destination},
		"other tokens": {Source: good.Source, Destination: strings.Replace(good.Destination, ",1,2,3)", ",1,2)", 1)},
		"order":        {Source: good.Source, Destination: "capstream.pkt.{{partition(4,1,2,3)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"},
		"too many":     {Source: good.Source, Destination: strings.Replace(good.Destination, "(4,", "(17,", 1)},
		"zero":         {Source: good.Source, Destination: strings.Replace(good.Destination, "(4,", "(0,", 1)},
		"not a number": {Source: good.Source, Destination: strings.Replace(good.Destination, "(4,", "(x,", 1)},
	} {
		cfg := PacketsStream(DefaultPacketsStreamLimits())
		cfg.SubjectTransform = tr
		if n, err := PacketPartitions(cfg); err == nil {
			t.Errorf("%s: accepted as %d partitions", name, n)
		}
	}
	if _, err := PacketPartitions(jetstream.StreamConfig{}); !errors.Is(err, ErrNotPartitioned) {
		t.Errorf("no transform: %v, want ErrNotPartitioned", err)
	}
}

func TestParsePacketSubjectPartition(t *testing.T) {
	want := Key{Namespace: "ns", Name: "web.capture", Node: "node-1"}
	subj, err := PacketSubject(want.Namespace, want.Name, want.Node)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{subj, subj + ".0", subj + ".15"} {
		if k, err := ParsePacketSubject(s); err != nil || k != want {
			t.Errorf("ParsePacketSubject(%q) = %+v, %v; want %+v", s, k, err, want)
		}
	}
	for _, suffix := range []string{".16", ".-1", ".01", ".x", ".", ".1.2", ".+1"} {
		if k, err := ParsePacketSubject(subj + suffix); err == nil {
			t.Errorf("ParsePacketSubject(%q) = %+v, want an error", subj+suffix, k)
		}
	}
}

func TestSinkPartitionConsumer(t *testing.T) {
	for _, tmpl := range []jetstream.ConsumerConfig{PcapSinkConsumer(), FlowSinkConsumer()} {
		c := SinkPartitionConsumer(tmpl, 3)
		if c.Durable != tmpl.Durable+"-p3" || c.Name != c.Durable {
			t.Errorf("durable %q name %q, want %s-p3", c.Durable, c.Name, tmpl.Durable)
		}
		if c.FilterSubject != "capstream.pkt.*.*.*.3" || len(c.FilterSubjects) != 0 {
			t.Errorf("filter %q %v", c.FilterSubject, c.FilterSubjects)
		}
		if c.PriorityPolicy != jetstream.PriorityPolicyPinned || len(c.PriorityGroups) != 1 || c.PinnedTTL != SinkPinnedTTL {
			t.Errorf("priority %v groups %v pinned TTL %s", c.PriorityPolicy, c.PriorityGroups, c.PinnedTTL)
		}
		if c.AckWait != tmpl.AckWait || c.MaxAckPending != tmpl.MaxAckPending || c.MaxDeliver != tmpl.MaxDeliver {
			t.Errorf("delivery rules differ from the template: %+v", c)
		}
	}
	// The pull must come often enough for an idle replica to stay pinned.
	if 3*SinkPullExpiry > SinkPinnedTTL {
		t.Errorf("pull expiry %s is over a third of the pinned TTL %s", SinkPullExpiry, SinkPinnedTTL)
	}
}

func TestSinkMemberValidate(t *testing.T) {
	if err := (SinkMember{ID: "abcDEF123", Held: 3}).Validate(); err != nil {
		t.Error(err)
	}
	for _, m := range []SinkMember{
		{}, {ID: "a.b"}, {ID: "a b"}, {ID: "*"}, {ID: ">"}, {ID: strings.Repeat("x", 65)},
		{ID: "a", Held: -1}, {ID: "a", Held: MaxPacketPartitions + 1},
	} {
		if m.Validate() == nil {
			t.Errorf("%+v: valid", m)
		}
	}
}
